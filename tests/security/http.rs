//! Security tests: the http boundary.
