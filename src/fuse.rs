//! The thin `fuser::Filesystem` adapter over [`crate::fs`].
