//! Security tests: the cluster boundary.
