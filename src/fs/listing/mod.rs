//! Directory listings: the cache of listings, and listing ahead of a program walking a tree.

mod listings;
pub mod walk;

pub use listings::Listings;
