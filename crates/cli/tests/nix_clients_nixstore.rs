//! Real `nix-build` through a Ferry
//! daemon whose store is /nix/store itself, in a private mount namespace
//! (a tmpfs over /nix/store: the host's store is hidden, never touched),
//! builds a DAG of 32 derivations (several outputs, a `builtins.toFile`
//! source, a `builtins.path` source, a fixed-output derivation) to the
//! same output paths, NAR hashes, sizes and references as a real
//! `nix-daemon` building the same expression on /nix/store in another
//! private namespace. Unlike nix_clients_build.rs (which sets
//! NIX_STORE_DIR to a temporary store), the paths here are the very paths
//! Nix users have.

use ferry_test_support as support;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use support::nix_clients::{text, NIX_CONF};
use support::nix_dag::{infos, Infos, DAG};
use support::{ferry_bin, in_nix_namespace, run, NsStore};

/// Shell run inside the namespace by both sides: wait for the socket $1,
/// then nix-build the top and write its closure's `nix path-info --json`.
const BUILD: &str = r#"
i=0
while [ ! -S "$1" ]; do
  i=$((i+1)); [ $i -lt 600 ] || { echo "no socket $1" >&2; exit 9; }
  sleep 0.05
done
sleep 0.2
nix-build "$EXPR" -A top --no-out-link > "$OUT/out" 2> "$OUT/build.log" || { cat "$OUT/build.log" >&2; exit 1; }
nix path-info --json -r "$(cat "$OUT/out")" > "$OUT/info.json"
nix-store -q --deriver "$(cat "$OUT/out")" > "$OUT/deriver"
"#;

/// The Ferry side: `ferry daemon --nix-socket` on /nix/store, nix-build
/// with NIX_REMOTE=unix://SOCKET.
const FERRY_SIDE: &str = r#"set -e
"$FERRY" daemon --listen "$OUT/socket" --nix-socket "$OUT/nix-socket" --no-sandbox > "$OUT/daemon.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
export NIX_REMOTE="unix://$OUT/nix-socket"
"#;

/// The reference: Nix's own nix-daemon on /nix/store.
const NIX_SIDE: &str = r#"set -e
nix-daemon > "$OUT/daemon.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
export NIX_REMOTE=daemon
"#;

/// Run one side (`prologue` then [`BUILD`]) in a private namespace with a
/// fresh tmpfs on /nix/store; its files in `out`.
fn side(root: &Path, out: &Path, prologue: &str, socket: &Path) -> Infos {
    fs::create_dir_all(out).unwrap();
    let script = format!("{prologue}{BUILD}");
    let home = root.join("home");
    let mut c = in_nix_namespace(
        NsStore::Tmpfs,
        &home,
        "sh",
        &[
            OsStr::new("-c"),
            OsStr::new(&script),
            OsStr::new("sh"),
            socket.as_os_str(),
        ],
    );
    c.env_remove("NIX_STORE_DIR")
        .env_remove("NIX_REMOTE")
        .env("FERRY", ferry_bin())
        .env("OUT", out)
        .env("EXPR", root.join("expr/dag.nix"))
        .env("FERRY_STORE_DIR", "/nix/store")
        .env("FERRY_STATE_DIR", out.join("ferry-state"))
        .env("FERRY_CONFIG_DIR", out.join("ferry-config"))
        .env("FERRY_DAEMON_SOCKET", out.join("socket"))
        .env("NIX_STATE_DIR", out.join("nix-state"))
        .env("NIX_LOG_DIR", out.join("nix-log"))
        .env("NIX_CONF_DIR", root.join("etc"));
    let o = run(&mut c, None);
    assert!(
        o.status.success(),
        "{}: {}\n--- daemon log ---\n{}",
        out.display(),
        text(&o),
        fs::read_to_string(out.join("daemon.log")).unwrap_or_default()
    );
    infos(&fs::read_to_string(out.join("info.json")).unwrap())
}

#[test]
fn nix_build_on_nix_store_through_ferry_matches_nix_daemon() {
    if !support::prerequisites(&["root", "namespaces", "nix-build", "nix-daemon", "nix"]) {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("ferry-nixstore-")
        .tempdir_in("/tmp")
        .unwrap();
    let root = tmp.path();
    for d in ["home", "etc", "expr/tree"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/nix.conf"), NIX_CONF).unwrap();
    fs::write(root.join("expr/tree/inner"), "inside a tree\n").unwrap();
    fs::write(root.join("expr/dag.nix"), DAG).unwrap();

    let ferry_out = root.join("ferry");
    let ferry = side(root, &ferry_out, FERRY_SIDE, &ferry_out.join("nix-socket"));
    let nix_out = root.join("nix");
    let nix = side(
        root,
        &nix_out,
        NIX_SIDE,
        &nix_out.join("nix-state/daemon-socket/socket"),
    );

    let top = fs::read_to_string(ferry_out.join("out")).unwrap();
    assert!(
        top.starts_with("/nix/store/") && top.trim().ends_with("-top"),
        "{top}"
    );
    assert_eq!(top, fs::read_to_string(nix_out.join("out")).unwrap());
    assert_eq!(
        fs::read_to_string(ferry_out.join("deriver")).unwrap(),
        fs::read_to_string(nix_out.join("deriver")).unwrap()
    );
    let log = fs::read_to_string(ferry_out.join("build.log")).unwrap();
    assert!(
        log.contains("building top"),
        "the log reaches the client: {log}"
    );
    // 31 built outputs (top, 6 uppers, 12 middles, 12 leaves' out; the
    // dev outputs of the leaves; fixed) and two sources: the closure of top.
    let built = ferry
        .keys()
        .filter(|p| !p.ends_with(".txt") && !p.ends_with("-tree"));
    assert_eq!(built.count(), 1 + 6 + 12 + 12 + 12 + 1, "{ferry:#?}");
    assert_eq!(
        ferry.keys().collect::<Vec<_>>(),
        nix.keys().collect::<Vec<_>>(),
        "the same closure"
    );
    for (p, want) in &nix {
        let got = &ferry[p];
        assert_eq!(
            (&got.0, got.1, &got.2),
            (&want.0, want.1, &want.2),
            "{p}: Ferry's record differs from nix-daemon's"
        );
        // Sources have no deriver; built paths have the same one.
        assert_eq!(got.3, want.3, "{p}: deriver");
    }
}
