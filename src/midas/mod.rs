//! The typed client for the Midas Server 3 web API (`/api/json`). Knows nothing of FUSE.

pub mod text;
pub mod types;
