//! Scheme: a Guile-compatible subset to evaluate `/etc/ferry/machines.scm`
//! and build files, without Guile.
//!
//! Owns: the reader (datums with file:line:column), a bounded evaluator, the
//! `build-machine` record with the seed's fields and defaults, and the
//! derivation API for build files. Must never: open network connections or
//! write files; evaluation is bounded in steps and time.
//!
//! Status: arrives with step 2.
