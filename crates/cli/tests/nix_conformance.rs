//! Conformance of `ferry` against real Nix (2.8), the oracle of record, for
//! NARs and the store:
//!
//! - NAR dump/restore/hash of a generated corpus of trees (ferry-test-
//!   support's `corpus`), byte for byte against `nix-store --dump`,
//!   `nix-store --restore` and `nix-hash`; malformed NARs refused alike.
//! - `ferry store add` paths against `nix-store --add`, plus path-info and
//!   verify.
//! - The formats.md vectors through the CLI (no Nix needed).
//!
//! Derivations (`ferry derivation show`) are in nix_conformance_drv.rs.
//! Nix always works on a chroot store (`--store local?root=DIR`), and ferry
//! only ever sees /nix/store inside a private mount namespace (see
//! `ferry_test_support::in_nix_namespace`): the host's /nix is never
//! written. Tests needing Nix, root or namespaces call `prerequisites`,
//! which panics when they are missing under CI=true and skips loudly
//! otherwise.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ferry_test_support::*;
use serde_json::Value;

fn ferry(home: &Path) -> std::process::Command {
    command(ferry_bin(), home)
}

fn nix_store(home: &Path, nixroot: &Path) -> std::process::Command {
    let mut c = command("nix-store", home);
    c.arg("--store").arg(nix_store_uri(nixroot));
    c
}

// ---------------------------------------------------------------------------
// 1. NAR dump / restore / hash against nix-store and nix-hash
// ---------------------------------------------------------------------------

#[test]
fn nar_dump_restore_hash_match_nix() {
    if !prerequisites(&["nix-store", "nix-hash"]) {
        return;
    }
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let nixroot = tmp.path().join("nixroot");
    let trees = make_corpus(tmp.path());
    let restored = tmp.path().join("restored");
    fs::create_dir(&restored).unwrap();

    for (i, (name, path)) in trees.iter().enumerate() {
        let shown = path.display().to_string();

        let nix_nar = run_ok(
            nix_store(&home, &nixroot).arg("--dump").arg(path),
            None,
            &format!("nix-store --dump {shown}"),
        );
        let ferry_nar = run_ok(
            ferry(&home).args(["store", "dump"]).arg(path),
            None,
            &format!("ferry store dump {shown}"),
        );
        assert_same_bytes(
            &format!("NAR of tree {shown}"),
            "ferry store dump",
            &ferry_nar,
            "nix-store --dump",
            &nix_nar,
        );

        for (ferry_flag, nix_flags) in [
            ("--base32", &["--type", "sha256", "--base32"][..]),
            ("--base16", &["--type", "sha256"][..]),
        ] {
            let nix_h = stdout_line(run_ok(
                command("nix-hash", &home).args(nix_flags).arg(path),
                None,
                &format!("nix-hash {nix_flags:?} {shown}"),
            ));
            let ferry_h = stdout_line(run_ok(
                ferry(&home).args(["store", "hash", ferry_flag]).arg(path),
                None,
                &format!("ferry store hash {ferry_flag} {shown}"),
            ));
            assert_eq!(
                ferry_h, nix_h,
                "hash of {shown}: ferry store hash {ferry_flag} vs nix-hash {nix_flags:?}"
            );
        }
        // No flag means base16, as nix-hash.
        let plain = stdout_line(run_ok(
            ferry(&home).args(["store", "hash"]).arg(path),
            None,
            "ferry store hash",
        ));
        let nix_h = stdout_line(run_ok(
            command("nix-hash", &home)
                .args(["--type", "sha256"])
                .arg(path),
            None,
            "nix-hash",
        ));
        assert_eq!(plain, nix_h, "ferry store hash (default base16) of {shown}");

        // ferry dump | ferry restore | ferry dump
        let by_ferry = restored.join(format!("{i}-ferry-{name}"));
        run_ok(
            ferry(&home).args(["store", "restore"]).arg(&by_ferry),
            Some(&ferry_nar),
            &format!("ferry store restore of the NAR of {shown}"),
        );
        let again = run_ok(
            ferry(&home).args(["store", "dump"]).arg(&by_ferry),
            None,
            "ferry store dump of the ferry-restored tree",
        );
        assert_same_bytes(
            &format!("round trip of {shown} through ferry store restore"),
            "dump after restore",
            &again,
            "original dump",
            &ferry_nar,
        );
        // And Nix agrees on what ferry restored.
        let nix_of_ferry = run_ok(
            nix_store(&home, &nixroot).arg("--dump").arg(&by_ferry),
            None,
            "nix-store --dump of the ferry-restored tree",
        );
        assert_same_bytes(
            &format!("tree {shown} restored by ferry, dumped by Nix"),
            "nix-store --dump",
            &nix_of_ferry,
            "original dump",
            &ferry_nar,
        );

        // nix-store --restore of ferry's dump, dumped again by ferry
        let by_nix = restored.join(format!("{i}-nix-{name}"));
        run_ok(
            nix_store(&home, &nixroot).arg("--restore").arg(&by_nix),
            Some(&ferry_nar),
            &format!("nix-store --restore of ferry's NAR of {shown}"),
        );
        let again = run_ok(
            ferry(&home).args(["store", "dump"]).arg(&by_nix),
            None,
            "ferry store dump of the Nix-restored tree",
        );
        assert_same_bytes(
            &format!("tree {shown} restored by nix-store --restore, dumped by ferry"),
            "ferry store dump",
            &again,
            "original dump",
            &ferry_nar,
        );
    }
    make_writable(tmp.path());
}

/// `ferry store restore` refuses an existing target and malformed NARs that
/// Nix refuses too, and leaves nothing behind.
#[test]
fn malformed_nars_are_refused_like_nix() {
    if !prerequisites(&["nix-store"]) {
        return;
    }
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let nixroot = tmp.path().join("nixroot");

    fn s(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
        out.resize(out.len().div_ceil(8) * 8, 0);
    }
    fn nar_dir(names: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for t in [&b"nix-archive-1"[..], b"(", b"type", b"directory"] {
            s(&mut v, t);
        }
        for n in names {
            for t in [
                &b"entry"[..],
                b"(",
                b"name",
                n,
                b"node",
                b"(",
                b"type",
                b"regular",
            ] {
                s(&mut v, t);
            }
            for t in [&b"contents"[..], b"x", b")", b")"] {
                s(&mut v, t);
            }
        }
        s(&mut v, b")");
        v
    }
    let good = nar_dir(&[b"a", b"b"]);
    let mut bad_padding = {
        let mut v = Vec::new();
        for t in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"x",
        ] {
            s(&mut v, t);
        }
        v
    };
    *bad_padding.last_mut().unwrap() = 1;
    s(&mut bad_padding, b")");
    let mut bad_magic = good.clone();
    bad_magic[8] = b'N';
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unsorted entries", nar_dir(&[b"b", b"a"])),
        ("duplicate entries", nar_dir(&[b"a", b"a"])),
        ("entry named ..", nar_dir(&[b".."])),
        ("entry named .", nar_dir(&[b"."])),
        ("empty entry name", nar_dir(&[b""])),
        ("entry name with a slash", nar_dir(&[b"a/b"])),
        ("entry name with NUL", nar_dir(&[b"a\0b"])),
        ("non-zero padding", bad_padding),
        ("wrong magic", bad_magic),
        ("truncated", good[..good.len() - 16].to_vec()),
        ("empty input", Vec::new()),
    ];
    // The good one is accepted by both (so the cases really test the flaw).
    let ok_dir = tmp.path().join("good-ferry");
    run_ok(
        ferry(&home).args(["store", "restore"]).arg(&ok_dir),
        Some(&good),
        "ferry store restore of a well-formed NAR",
    );
    run_ok(
        nix_store(&home, &nixroot)
            .arg("--restore")
            .arg(tmp.path().join("good-nix")),
        Some(&good),
        "nix-store --restore of a well-formed NAR",
    );
    // An existing target is refused.
    let out = run(
        ferry(&home).args(["store", "restore"]).arg(&ok_dir),
        Some(&good),
    );
    assert!(
        !out.status.success(),
        "ferry store restore into an existing path must fail"
    );

    for (i, (what, nar)) in cases.iter().enumerate() {
        let nix_target = tmp.path().join(format!("bad-nix-{i}"));
        let nix_out = run(
            nix_store(&home, &nixroot).arg("--restore").arg(&nix_target),
            Some(nar),
        );
        // Nix 2.8 restores unsorted entries as they come (later Nix
        // versions refuse them); ferry must refuse them all the same, as
        // formats.md requires. Every other case Nix refuses too.
        if *what != "unsorted entries" {
            assert!(
                !nix_out.status.success(),
                "test premise: Nix should refuse a NAR with {what}"
            );
        }
        let target = tmp.path().join(format!("bad-ferry-{i}"));
        let out = run(
            ferry(&home).args(["store", "restore"]).arg(&target),
            Some(nar),
        );
        assert!(
            !out.status.success(),
            "ferry store restore accepted a NAR with {what} (nix-store --restore: {} {})",
            nix_out.status,
            String::from_utf8_lossy(&nix_out.stderr).trim()
        );
        assert!(
            fs::symlink_metadata(&target).is_err(),
            "ferry store restore left {} behind after refusing a NAR with {what}",
            target.display()
        );
    }
}

// ---------------------------------------------------------------------------
// 2. store add against nix-store --add
// ---------------------------------------------------------------------------

#[test]
fn store_add_paths_match_nix_store_add() {
    if !prerequisites(&["root", "namespaces", "nix-store", "nix-hash", "nix"]) {
        return;
    }
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let nixroot = tmp.path().join("nixroot");
    let all = make_corpus(tmp.path());
    // Several trees and single files/symlinks; the 3 MiB one stays in test 1.
    let chosen: Vec<&(String, PathBuf)> = all.iter().filter(|(n, _)| n != "edge-sizes").collect();

    // Nix, on its chroot store.
    let mut nix_add = nix_store(&home, &nixroot);
    nix_add.arg("--add");
    for (_, p) in &chosen {
        nix_add.arg(p);
    }
    let nix_paths: Vec<String> = String::from_utf8(run_ok(&mut nix_add, None, "nix-store --add"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(nix_paths.len(), chosen.len(), "nix-store --add output");

    // Ferry, on a tmpfs at /nix/store in a private mount namespace, all
    // commands in one namespace; outputs go to files outside the store.
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let script = r#"set -e
"$FERRY" store add "$@" > "$OUT/add.out"
"$FERRY" store add "$@" > "$OUT/add-again.out"
paths=$(cat "$OUT/add.out")
"$FERRY" store path-info --json $paths > "$OUT/info.json"
i=0
for p in $paths; do "$FERRY" store dump "$p" > "$OUT/dump-$i"; i=$((i+1)); done
set +e
"$FERRY" store verify > "$OUT/verify.out" 2> "$OUT/verify.err"
echo $? > "$OUT/verify.rc"
"#;
    let mut args: Vec<&OsStr> = vec![OsStr::new("-c"), OsStr::new(script), OsStr::new("sh")];
    for (_, p) in &chosen {
        args.push(p.as_os_str());
    }
    let mut cmd = in_nix_namespace(NsStore::Tmpfs, &home, "sh", &args);
    cmd.env("FERRY", ferry_bin())
        .env("OUT", &out_dir)
        .env("FERRY_STORE_DIR", "/nix/store")
        .env("FERRY_STATE_DIR", tmp.path().join("ferry-state"))
        .env("FERRY_CONFIG_DIR", tmp.path().join("ferry-config"));
    run_ok(
        &mut cmd,
        None,
        "ferry store add/path-info/dump/verify in a namespace",
    );

    let read = |f: &str| fs::read_to_string(out_dir.join(f)).unwrap();
    let ferry_paths: Vec<String> = read("add.out").lines().map(str::to_string).collect();
    for (i, (_, p)) in chosen.iter().enumerate() {
        assert_eq!(
            ferry_paths.get(i),
            Some(&nix_paths[i]),
            "store path of {}: ferry store add vs nix-store --add",
            p.display()
        );
    }
    assert_eq!(
        ferry_paths.len(),
        nix_paths.len(),
        "ferry store add output lines"
    );
    assert_eq!(
        read("add-again.out"),
        read("add.out"),
        "adding again must print the same paths"
    );

    let info: Value = serde_json::from_str(&read("info.json")).expect("path-info --json is JSON");
    let info = info.as_array().expect("path-info --json is an array");
    assert_eq!(info.len(), chosen.len());
    let nix_info: Value = serde_json::from_slice(&run_ok(
        command("nix", &home)
            .args([
                "--extra-experimental-features",
                "nix-command",
                "path-info",
                "--json",
            ])
            .arg("--store")
            .arg(nix_store_uri(&nixroot))
            .args(&nix_paths),
        None,
        "nix path-info --json",
    ))
    .unwrap();
    for (i, (_, p)) in chosen.iter().enumerate() {
        let shown = p.display();
        let e = &info[i];
        assert_eq!(
            e["path"],
            Value::from(nix_paths[i].clone()),
            "path-info order/path"
        );
        let nix32 = stdout_line(run_ok(
            command("nix-hash", &home)
                .args(["--type", "sha256", "--base32"])
                .arg(p),
            None,
            "nix-hash",
        ));
        assert_eq!(
            e["narHash"],
            Value::from(format!("sha256:{nix32}")),
            "path-info narHash of {shown}"
        );
        // The NAR ferry stores is the one Nix stores.
        let base = nix_paths[i].strip_prefix("/nix/store/").unwrap();
        let nix_nar = run_ok(
            nix_store(&home, &nixroot)
                .arg("--dump")
                .arg(nixroot.join("nix/store").join(base)),
            None,
            "nix-store --dump of Nix's copy",
        );
        let ferry_nar = fs::read(out_dir.join(format!("dump-{i}"))).unwrap();
        assert_same_bytes(
            &format!("store copy of {shown} ({})", nix_paths[i]),
            "ferry's copy",
            &ferry_nar,
            "Nix's copy",
            &nix_nar,
        );
        assert_eq!(
            e["narSize"],
            Value::from(ferry_nar.len() as u64),
            "path-info narSize of {shown} vs its dump length"
        );
        let ni = nix_info
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["path"] == nix_paths[i].as_str())
            .expect("nix path-info lists the path");
        assert_eq!(
            e["narSize"], ni["narSize"],
            "narSize of {shown}: ferry vs nix path-info"
        );
        assert_eq!(
            e["ca"], ni["ca"],
            "content address of {shown}: ferry vs nix path-info"
        );
        assert_eq!(
            e["references"],
            Value::Array(vec![]),
            "references of the added {shown}"
        );
    }
    assert_eq!(
        read("verify.rc").trim(),
        "0",
        "ferry store verify failed:\n{}{}",
        read("verify.out"),
        read("verify.err")
    );
}

// ---------------------------------------------------------------------------
// 4. formats.md vectors through the CLI (no Nix needed)
// ---------------------------------------------------------------------------

#[test]
fn formats_md_nar_vectors_via_cli() {
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let x_nar_hex = "0d00000000000000 6e69782d61726368 6976652d31000000 0100000000000000 \
                     2800000000000000 0400000000000000 7479706500000000 0700000000000000 \
                     726567756c617200 0800000000000000 636f6e74656e7473 0100000000000000 \
                     7800000000000000 0100000000000000 2900000000000000";
    let x_nar: Vec<u8> = x_nar_hex
        .split_whitespace()
        .flat_map(|w| {
            (0..8)
                .map(|i| u8::from_str_radix(&w[2 * i..2 * i + 2], 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(x_nar.len(), 120);

    for (contents, nix32, size) in [
        (
            &b"x"[..],
            "0rsv7kag23nvdpy4500mv2m0b4sm4c8fkgqrfsrmv1kgk77bi81c",
            120usize,
        ),
        (
            b"Hello World!",
            "0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3",
            128,
        ),
    ] {
        let f = tmp.path().join(format!("f-{size}"));
        fs::write(&f, contents).unwrap();
        let h = stdout_line(run_ok(
            ferry(&home).args(["store", "hash", "--base32"]).arg(&f),
            None,
            "ferry store hash --base32",
        ));
        assert_eq!(
            h,
            nix32,
            "NAR hash of a file holding {:?}",
            OsStr::from_bytes(contents)
        );
        let nar = run_ok(
            ferry(&home).args(["store", "dump"]).arg(&f),
            None,
            "ferry store dump",
        );
        assert_eq!(nar.len(), size, "NAR size of a file holding {contents:?}");
        if contents == b"x" {
            assert_same_bytes(
                "NAR of a file holding \"x\"",
                "ferry",
                &nar,
                "formats.md",
                &x_nar,
            );
        }
        // The base16 form spells the same digest.
        let h16 = stdout_line(run_ok(
            ferry(&home).args(["store", "hash", "--base16"]).arg(&f),
            None,
            "ferry store hash --base16",
        ));
        assert_eq!(h16.len(), 64);
        assert_eq!(
            h16,
            nix32_to_hex(nix32),
            "base16 vs base32 of the same hash"
        );
    }
}

/// Decode nix32 (formats.md's algorithm, inverted) to lower-case hex.
fn nix32_to_hex(s: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let n = s.len() * 5 / 8;
    let mut out = vec![0u8; n];
    for (k, c) in s.bytes().rev().enumerate() {
        let digit = ALPHABET.iter().position(|&a| a == c).unwrap() as u16;
        let b = k * 5;
        let (i, j) = (b / 8, b % 8);
        out[i] |= (digit << j) as u8;
        if i + 1 < n {
            out[i + 1] |= (digit >> (8 - j)) as u8;
        }
    }
    out.iter().map(|b| format!("{b:02x}")).collect()
}
