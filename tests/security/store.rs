//! Security tests: the store boundary.
