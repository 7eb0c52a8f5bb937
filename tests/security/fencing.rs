//! Security tests: the fencing boundary.
