//! The one home of the helpers that Ferry's tests share, a dev-only crate
//! (`publish = false`, used only as a `[dev-dependency]`): before it, each
//! test directory carried its own copy of the prerequisite check, the
//! `ferry` binary lookup, process runners and harnesses.
//!
//! Always there: [`prereq`] (run, fail in CI, or skip), [`process`]
//! (the `ferry` binary, scrubbed commands, bounded runs), [`rng`],
//! [`tree`] (file trees and temp dirs), [`corpus`] (the trees conformance
//! tests give ferry and Nix), [`nar`] (NAR tokens by hand),
//! [`namespace`] (Nix in a private mount namespace), [`diff`] (readable
//! byte and JSON differences), [`daemon`] (`ferry daemon` as a process)
//! and [`nix_clients`] (a Ferry daemon on its Nix socket and real Nix
//! clients pointed at it, with Nix's own store as the reference).
//! Behind features, so that a crate's tests build only what they use:
//! `store` ([`store`]: temp stores, build settings), `sandbox`
//! ([`sandbox`]: the build sandbox's fixture), `sshd` ([`sshd`]: a
//! real OpenSSH server and an in-process daemon behind it), `attacker`
//! ([`attacker`]: unprivileged users and a shared root daemon) and
//! `testbed` ([`testbed`]: the multi-host testbed's harness).
//!
//! The root re-exports the always-there helpers, so that a test writes
//! `use ferry_test_support::*;` or names them one by one.

// Fixtures make temp dirs and files: `Env::new()` says so where a `Default`
// would hide it.
#![allow(clippy::new_without_default)]

pub mod corpus;
pub mod daemon;
pub mod diff;
pub mod namespace;
pub mod nar;
pub mod nix_clients;
pub mod nix_dag;
pub mod prereq;
pub mod process;
pub mod rng;
pub mod tree;

#[cfg(feature = "attacker")]
pub mod attacker;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(feature = "sshd")]
pub mod sshd;
#[cfg(feature = "store")]
pub mod store;
#[cfg(feature = "testbed")]
pub mod testbed;

pub use corpus::{corpus, make_corpus};
pub use diff::{assert_same_bytes, json_diff};
pub use namespace::{in_nix_namespace, private_mount_sh, NsStore};
pub use prereq::{is_root, prerequisites};
pub use process::{
    cmdline, command, ferry_bin, marker, nix_store_uri, processes_with, run, run_ok, run_timeout,
    stdout_line, wait_for, wait_no_processes,
};
pub use rng::Rng;
pub use tree::{
    dir, exe, file, link, make_writable, materialize, odd_names, path_of, random_tree, temp_dir,
    Node,
};
