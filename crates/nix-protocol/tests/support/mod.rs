//! What the Nix interop tests share: their prerequisites and a private
//! nix-daemon (`--stdio`, its store, state, logs and nix.conf in a
//! temporary directory, so /nix is never touched).

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::Stdio;

use ferry_formats::store_path::StoreDir;
use tokio::process::{ChildStdin, ChildStdout, Command};

/// Root and `nix-daemon` in PATH, by the one rule every test follows
/// (`ferry_test_support::prerequisites`: never skipped when CI is set).
pub fn prerequisites() -> bool {
    ferry_test_support::prerequisites(&["root", "nix-daemon"])
}

/// A private Nix installation: store, state, logs and nix.conf under one
/// temporary directory, for nix-daemon and Nix's commands alike.
pub struct NixEnv {
    pub dir: tempfile::TempDir,
    pub store: StoreDir,
}

impl NixEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("etc")).unwrap();
        // Root builds as root without a sandbox; no substituters; imports
        // of unsigned paths allowed (the tests add their own).
        std::fs::write(
            d.join("etc/nix.conf"),
            "build-users-group =\nsandbox = false\nsubstituters =\nrequire-sigs = false\n\
             experimental-features = nix-command\n",
        )
        .unwrap();
        let store = StoreDir::new(d.join("store").to_str().unwrap()).unwrap();
        NixEnv { dir, store }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A Nix command (`nix-daemon`, `nix-store`...) in this installation.
    pub fn command(&self, program: &str) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new(program);
        for v in [
            "NIX_REMOTE",
            "NIX_CONFIG",
            "NIX_PATH",
            "NIX_STORE",
            "NIX_USER_CONF_FILES",
            "XDG_CONFIG_HOME",
            "XDG_CONFIG_DIRS",
            "XDG_CACHE_HOME",
            "XDG_DATA_HOME",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("NIX_STORE_DIR", self.store.as_str())
            .env("NIX_STATE_DIR", d.join("state"))
            .env("NIX_LOG_DIR", d.join("log"))
            .env("NIX_CONF_DIR", d.join("etc"))
            .env("HOME", d)
            .kill_on_drop(true);
        cmd
    }

    /// `nix-daemon --stdio`: its stdout and stdin.
    pub fn daemon(&self) -> (tokio::process::Child, ChildStdout, ChildStdin) {
        let mut child = self
            .command("nix-daemon")
            .arg("--stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nix-daemon --stdio");
        let out = child.stdout.take().unwrap();
        let inp = child.stdin.take().unwrap();
        (child, out, inp)
    }
}

/// Where a test keeps files of its own.
pub fn scratch(env: &NixEnv, name: &str) -> PathBuf {
    let p = env.path().join("scratch").join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// The NAR of a file tree, as `ferry-formats` writes it.
pub fn nar_of(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    ferry_formats::nar::dump(path, &mut v).unwrap();
    v
}
