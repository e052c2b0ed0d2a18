//! `nix-build --max-jobs 0` through the master's Ferry daemon
//! (`--nix-socket`) offloads every derivation of the 32-derivation DAG to
//! the testbed's hosts, and the outputs (paths, NAR hashes, sizes,
//! references) are those Nix's own local store builds from the same
//! expression at the same store directory. The store directory is the
//! testbed's (DIR/store, NIX_STORE_DIR set to it): the testbed puts every
//! host's store at DIR/store, so it cannot be /nix/store unless DIR were
//! /nix (nix_clients_nixstore.rs in cli shows the /nix/store case without
//! offload).

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_test_support::nix_clients::{text, NIX_CONF};
use ferry_test_support::nix_dag::{infos, DAG, DAG_DERIVATIONS};
use ferry_test_support::testbed::{self as common, master_var, placements, MasterDaemon};
use ferry_test_support::{command, prerequisites, run};

/// A Nix command on the master's store: through `socket` when given, else
/// Nix's own local store with its own state under `root`.
fn nix(root: &Path, store: &str, socket: Option<&Path>, program: &str, args: &[&str]) -> Command {
    let mut c = command(program, &root.join("home"));
    c.env("NIX_STORE_DIR", store)
        .env("NIX_LOG_DIR", root.join("nix-log"))
        .env("NIX_CONF_DIR", root.join("etc"))
        .args(args);
    match socket {
        Some(s) => c
            .env("NIX_STATE_DIR", root.join("nix-state"))
            .env("NIX_REMOTE", format!("unix://{}", s.display())),
        None => c
            .env("NIX_STATE_DIR", root.join("reference-state"))
            .env("NIX_REMOTE", "local"),
    };
    c
}

#[test]
fn nix_build_max_jobs_0_offloads_every_build_to_testbed_hosts() {
    if !common::prerequisites() || !prerequisites(&["root", "nix-build", "nix"]) {
        return;
    }
    let (tmp, tb) = common::testbed(2, 2, "256M");
    let root = tmp.path().join("nix");
    for d in ["home", "etc", "expr/tree"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/nix.conf"), NIX_CONF).unwrap();
    std::fs::write(root.join("expr/tree/inner"), "inside a tree\n").unwrap();
    let expr = root.join("expr/dag.nix");
    std::fs::write(&expr, DAG).unwrap();
    let expr = expr.to_str().unwrap();
    let store = master_var(&tb, "FERRY_STORE_DIR");
    let nix_socket = tmp.path().join("nix-socket");

    let daemon = MasterDaemon::start_with(
        &tb,
        &["--nix-socket", nix_socket.to_str().unwrap(), "--no-sandbox"],
    );
    let sock = Some(nix_socket.as_path());
    let o = run(
        &mut nix(
            &root,
            &store,
            sock,
            "nix-build",
            &[expr, "-A", "top", "--no-out-link", "--max-jobs", "0"],
        ),
        None,
    );
    let log = text(&o);
    let master_log = std::fs::read_to_string(tb.dir().parent().unwrap().join("master-daemon.log"))
        .unwrap_or_default();
    assert!(
        o.status.success(),
        "nix-build --max-jobs 0: {log}\n--- master daemon ---\n{master_log}"
    );
    let top = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(top.starts_with(&store) && top.ends_with("-top"), "{top}");

    // Every derivation was built on a testbed host (the fixed-output one
    // too): Ferry's "building 'DRV' on 'HOST'" lines, to the Nix client or
    // in the master's log.
    let mut on: Vec<(String, String)> = placements(&log);
    on.extend(placements(&master_log));
    on.sort();
    on.dedup();
    let remote: Vec<_> = on
        .iter()
        .filter(|(_, m)| m.starts_with("10.213."))
        .collect();
    assert_eq!(
        remote.len(),
        DAG_DERIVATIONS,
        "builds offloaded: {on:#?}\n--- client ---\n{log}\n--- master ---\n{master_log}"
    );
    let hosts: std::collections::BTreeSet<_> = remote.iter().map(|(_, m)| m).collect();
    assert_eq!(hosts.len(), 2, "both hosts build: {on:?}");

    let info = infos(&String::from_utf8_lossy(
        &run(
            &mut nix(
                &root,
                &store,
                sock,
                "nix",
                &["path-info", "--json", "-r", &top],
            ),
            None,
        )
        .stdout,
    ));
    assert_eq!(info.len(), 1 + 6 + 12 + 12 + 12 + 1 + 2, "{info:#?}");
    drop(daemon);

    // The reference: Nix's local store at the same directory (the master's
    // store set aside meanwhile).
    let aside = tmp.path().join("master-store");
    std::fs::rename(&store, &aside).unwrap();
    let o = run(
        &mut nix(
            &root,
            &store,
            None,
            "nix-build",
            &[expr, "-A", "top", "--no-out-link"],
        ),
        None,
    );
    assert!(o.status.success(), "the reference build: {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), top);
    let want = infos(&String::from_utf8_lossy(
        &run(
            &mut nix(
                &root,
                &store,
                None,
                "nix",
                &["path-info", "--json", "-r", &top],
            ),
            None,
        )
        .stdout,
    ));
    assert_eq!(
        info.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (p, w) in &want {
        let g = &info[p];
        assert_eq!((&g.0, g.1, &g.2), (&w.0, w.1, &w.2), "{p}");
    }
    let _ = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&store)
        .status();
    std::fs::remove_dir_all(&store).unwrap();
    std::fs::rename(&aside, PathBuf::from(&store)).unwrap();
}
