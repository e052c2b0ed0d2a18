//! Testbed: `ferry-testbed` and the test-support library for multi-host
//! tests: hosts in network namespaces with their own sshd, store and daemon,
//! and faults on demand (stop, kill, cut, fill).
//!
//! Status: arrives with step 5.
