//! Build: running one builder for one derivation on this machine.
//!
//! Owns: the builder environment (as Nix and Guix set it), the sandbox
//! (mount, PID, network, IPC and UTS namespaces; a chroot holding the input
//! closure), logs, timeouts, and registering outputs with scanned
//! references. Must never: choose machines or speak the daemon protocol.
//!
//! Status: arrives with step 3.
