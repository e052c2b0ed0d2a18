//! Daemon: the server behind `ferry daemon`.
//!
//! Owns: client sessions, the build queue and per-derivation locks, the
//! scheduler (local or which build machine), and offload: the machines file,
//! persistent SSH connections, the remote daemon client, back-off. Must
//! never: parse formats or touch store files directly (it goes through
//! `ferry-store` and `ferry-build`).
//!
//! Status: arrives with steps 3 (local) and 6 (offload).
