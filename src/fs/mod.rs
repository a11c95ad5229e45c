//! The filesystem: inodes keyed by Midas ids, names, caches, readers and writes.
