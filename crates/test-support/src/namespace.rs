//! A private mount namespace with a throwaway or bind-mounted /nix/store, so
//! that Nix itself can be run by conformance tests without touching the
//! host's store.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::process::command;

/// What to mount on /nix/store inside the namespace.
pub enum NsStore<'a> {
    /// A fresh empty tmpfs: whatever is written vanishes with the namespace.
    Tmpfs,
    /// A bind mount of this directory (e.g. a chroot store's DIR/nix/store).
    Bind(&'a Path),
}

/// The shell prologue run inside `unshare --mount --propagation private`.
///
/// Mounts made there are private to the namespace: nothing propagates to the
/// host, and everything is unmounted when the last process exits. The store
/// directory must literally be /nix/store (it is part of every path's hash),
/// so something has to be mounted there:
/// - /nix/store exists (the usual case once nix-bin is installed): mount the
///   tmpfs or the bind mount right over it; the host's store is hidden, not
///   touched.
/// - only /nix exists: mount a tmpfs on /nix first and create store/ inside
///   it (in the tmpfs, not on the host).
/// - no /nix at all: `ensure_nix_mountpoint` has created an empty /nix
///   directory on the host before (the only host change ever made, and only
///   when there was no /nix to touch), then as above.
const NS_PROLOGUE: &str = r#"set -e
if [ ! -d /nix/store ]; then
  mount -t tmpfs ferry-test-nix /nix
  mkdir /nix/store
fi
case "$FERRY_TEST_NS_STORE" in
  tmpfs) mount -t tmpfs ferry-test-store /nix/store ;;
  *) mount --bind "$FERRY_TEST_NS_STORE" /nix/store ;;
esac
unset FERRY_TEST_NS_STORE
exec "$@"
"#;

fn ensure_nix_mountpoint() {
    if !Path::new("/nix").exists() {
        // Racing tests may both try; either way /nix ends up a directory.
        let _ = fs::create_dir("/nix");
    }
    assert!(
        Path::new("/nix").is_dir(),
        "/nix exists but is not a directory"
    );
}

/// A command running `program args...` in a fresh private mount namespace
/// with `store` mounted at /nix/store.
pub fn in_nix_namespace(
    store: NsStore,
    home: &Path,
    program: impl AsRef<OsStr>,
    args: &[&OsStr],
) -> Command {
    ensure_nix_mountpoint();
    let mut c = command("unshare", home);
    c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(NS_PROLOGUE)
        .arg("sh")
        .arg(program)
        .args(args);
    match store {
        NsStore::Tmpfs => c.env("FERRY_TEST_NS_STORE", "tmpfs"),
        NsStore::Bind(p) => c.env("FERRY_TEST_NS_STORE", p),
    };
    c
}

/// `unshare --mount --propagation private -- sh -c SCRIPT`: a shell whose
/// mounts are private to it and vanish when it exits (the caller sets the
/// environment).
pub fn private_mount_sh(script: &str) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
    ]);
    c
}
