//! The filesystem on the in-memory Midas (`midasfs::midas::fake`), without FUSE and without a
//! server process: its operations and errors, the fault matrix and the property test against a
//! reference model. One binary, beside `tests/integration/` (the tests of the real processes):
//! two binaries of about the same size build side by side on two cores, where one would leave a
//! core idle at the end of a build.

mod fs_support;

mod fs_faults;
mod fs_model;
mod fs_ops;
