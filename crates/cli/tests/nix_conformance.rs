//! Conformance of `ferry` against real Nix (2.8), the oracle of record.
//!
//! - NAR dump/restore/hash of a generated corpus of trees, byte for byte
//!   against `nix-store --dump`, `nix-store --restore` and `nix-hash`.
//! - `ferry store add` paths against `nix-store --add`, plus path-info and
//!   verify.
//! - `ferry derivation show` against `nix show-derivation` on derivations
//!   made by `nix-instantiate`, and refusal of tampered derivations.
//! - The formats.md vectors through the CLI (no Nix needed).
//!
//! Nix always works on a chroot store (`--store local?root=DIR`), and ferry
//! only ever sees /nix/store inside a private mount namespace (see
//! `support::in_nix_namespace`): the host's /nix is never written.
//! Tests needing Nix, root or namespaces call `prerequisites`, which panics
//! when they are missing under CI=true and skips loudly otherwise.

mod support;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use support::*;

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

/// Named roots (each name is a valid store path name, so the same corpus
/// serves `store add`).
fn corpus() -> Vec<(String, Node)> {
    let mut c: Vec<(String, Node)> = Vec::new();

    // Every odd name, each holding a small file, in one directory; plus the
    // same names as directories and symlinks one level down.
    let names = odd_names();
    let mut entries: Vec<(Vec<u8>, Node)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), file(format!("{i}\n"))))
        .collect();
    entries.push((
        b"as-dirs".to_vec(),
        Node::Dir(
            names
                .iter()
                .map(|n| (n.clone(), Node::Dir(vec![])))
                .collect(),
        ),
    ));
    entries.push((
        b"as-links".to_vec(),
        Node::Dir(names.iter().map(|n| (n.clone(), link(n.clone()))).collect()),
    ));
    c.push(("edge-names".into(), Node::Dir(entries)));

    // Sizes around the 8-byte padding and common buffer sizes, and one big
    // file (3 MiB + 5) that crosses every buffer boundary.
    let mut rng = Rng::new(42);
    let sizes = [
        0usize, 1, 7, 8, 9, 15, 16, 17, 4095, 4096, 4097, 65535, 65536, 65537,
    ];
    let mut entries: Vec<(Vec<u8>, Node)> = Vec::new();
    for s in sizes {
        entries.push((format!("size-{s:07}").into_bytes(), file(rng.bytes(s))));
        entries.push((format!("exec-{s:07}").into_bytes(), exe(rng.bytes(s))));
    }
    entries.push((b"big-3MiB+5".to_vec(), file(rng.bytes(3 * 1024 * 1024 + 5))));
    entries.push((b"zeros-4096".to_vec(), file(vec![0u8; 4096])));
    c.push(("edge-sizes".into(), Node::Dir(entries)));

    // Symlinks: dangling, absolute, to directories, odd and long targets.
    c.push((
        "edge-links".into(),
        dir(vec![
            (b"dangling", link("does-not-exist")),
            (
                b"abs-dangling",
                link("/nix/store/00000000000000000000000000000000-absent"),
            ),
            (b"abs-etc", link("/etc")),
            (b"abs-passwd", link("/etc/passwd")),
            (b"dot", link(".")),
            (b"dotdot", link("..")),
            (b"self-loop", link("self-loop")),
            (b"to-dir", link("sub")),
            (b"to-file", link("sub/f")),
            (b"odd-target", link(&b"../a b/\xc3\xa9/new\nline/\xff"[..])),
            (b"trailing-slash", link("sub/")),
            (b"long-target", link(vec![b'x'; 4000])),
            (
                b"sub",
                dir(vec![(b"f", file("f\n")), (b"up", link("../to-dir"))]),
            ),
        ]),
    ));

    // Directories: empty, nested empty, deep.
    let mut deep = file("bottom\n");
    for i in (0..40).rev() {
        deep = Node::Dir(vec![(format!("d{i}").into_bytes(), deep)]);
    }
    c.push((
        "edge-dirs".into(),
        dir(vec![
            (b"empty", dir(vec![])),
            (
                b"nested",
                dir(vec![(b"e1", dir(vec![(b"e2", dir(vec![]))]))]),
            ),
            (b"deep", deep),
            (b"read-only", Node::Dir(vec![(b"f".to_vec(), file("ro\n"))])),
        ]),
    ));

    // Modes: only the owner's x bit matters to NAR.
    c.push((
        "edge-modes".into(),
        Node::Dir(
            [
                0o644u32, 0o755, 0o700, 0o744, 0o654, 0o601, 0o611, 0o444, 0o555, 0o4755, 0o2755,
                0o1755, 0o600,
            ]
            .iter()
            .map(|m| {
                (
                    format!("mode-{m:04o}").into_bytes(),
                    Node::File(b"m\n".to_vec(), *m),
                )
            })
            .collect(),
        ),
    ));

    // Hard links: the NAR repeats the contents.
    c.push((
        "edge-hardlinks".into(),
        dir(vec![
            (b"a", exe("shared contents\n")),
            (b"b", Node::HardLink(b"a".to_vec())),
            (b"c", Node::HardLink(b"a".to_vec())),
        ]),
    ));

    for seed in 1..=8u64 {
        let mut rng = Rng::new(seed);
        c.push((format!("random-{seed}"), random_tree(&mut rng, 4)));
    }

    // Single-node roots.
    c.push(("file-empty".into(), file("")));
    c.push(("file-x".into(), file("x")));
    c.push(("file-exec".into(), exe("#!/bin/sh\necho hi\n")));
    c.push(("file-binary".into(), file(Rng::new(7).bytes(70_001))));
    c.push(("link-dangling".into(), link("does-not-exist")));
    c.push(("link-absolute".into(), link("/etc/passwd")));
    c.push(("link-odd".into(), link(&b" spaced \xc3\xa9 \n"[..])));
    c.push(("dir-empty".into(), dir(vec![])));
    c
}

/// Materialize the whole corpus under `dir`/corpus; returns (name, path).
fn make_corpus(dir: &Path) -> Vec<(String, PathBuf)> {
    let root = dir.join("corpus");
    fs::create_dir(&root).unwrap();
    let mut out = Vec::new();
    for (name, node) in corpus() {
        let p = root.join(&name);
        materialize(&p, &node);
        out.push((name, p));
    }
    // A read-only directory (the "read-only" one of edge-dirs).
    let ro = root.join("edge-dirs/read-only");
    fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    out
}

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
// 3. derivation show against nix show-derivation
// ---------------------------------------------------------------------------

const DRV_NIX: &str = r#"
let
  sys = "x86_64-linux";
  mk = attrs: derivation ({ system = sys; builder = "/bin/sh"; args = [ "-c" "exit 1" ]; } // attrs);

  multi = mk { name = "multi"; outputs = [ "out" "dev" "lib" ]; };

  escapes = mk {
    name = "escapes";
    quotes = "say \"hi\" \"\"";
    backslashes = "a\\b\\\\c\\n\\";
    controls = "line1\nline2\r\n\ttabbed\r";
    unicode = "@UNICODE@";
    dollar = "$HOME ${"$"}{x} $$ \${y} $";
    raw = builtins.fromJSON "\"\\u0001\\u001f\\u007f\"";
    empty = "";
    "key with spaces" = "v";
    "KEY=equals" = "w";
    args = [ "-c" "echo \"$out\"\n" "\t" "" "back\\slash" ];
  };

  fixedFlat = mk {
    name = "fixed-flat";
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  };
  fixedRec = mk {
    name = "fixed-rec";
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    outputHash = "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";
  };
  fixedBar = mk {
    name = "bar";
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    outputHash = "08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba";
  };
  fixedSha1 = mk {
    name = "fixed-sha1";
    outputHashAlgo = "sha1";
    outputHash = "a9993e364706816aba3e25717850c26c9cd0d89d";
  };
  fixedSha512Sri = mk {
    name = "fixed-sha512";
    outputHashMode = "recursive";
    outputHash = "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw==";
  };
  # Two fixed-output derivations that differ only in their builder: same
  # output path, same hashDerivationModulo, so their entries collide in a
  # dependent's input list.
  sameA = mk { name = "fixed-same"; outputHashAlgo = "sha256"; outputHash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; args = [ "-c" "variant a" ]; };
  sameB = mk { name = "fixed-same"; outputHashAlgo = "sha256"; outputHash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; args = [ "-c" "variant b" ]; };
  useFixed = mk { name = "use-fixed"; inherit fixedFlat fixedRec fixedSha1 fixedSha512Sri; a = sameA; b = sameB; bar = fixedBar; };

  chain0 = mk { name = "chain-0"; };
  chainStep = prev: i: mk { name = "chain-${toString i}"; inherit prev; };
  chainTop = builtins.foldl' chainStep chain0 (builtins.genList (i: i + 1) 10);

  base = mk { name = "diamond-base"; outputs = [ "out" "dev" ]; };
  left = mk { name = "diamond-left"; dep = base.dev; };
  right = mk { name = "diamond-right"; dep = base; };
  top = mk { name = "diamond-top"; inherit left right; alsoBase = "${base.dev}/include:${base}"; };

  withSources = derivation {
    name = "with-sources";
    system = sys;
    builder = ./script.sh;
    args = [ ./script.sh "${./srcdir}/inner" ];
    src = ./file.txt;
    dir = ./srcdir;
    inherit multi;
    libOnly = multi.lib;
  };

  structured = mk {
    name = "structured";
    __structuredAttrs = true;
    outputs = [ "out" "bin" ];
    list = [ 1 "two" true null ];
    nested = { a = 1; s = "q\"\n"; };
    dep = chain0;
  };

  passFile = mk { name = "pass-as-file"; passAsFile = [ "big" ]; big = "content\n"; };
in
  [ multi escapes fixedFlat fixedRec fixedBar fixedSha1 fixedSha512Sri sameA sameB useFixed
    chainTop base left right top withSources structured passFile ]
"#;

/// Instantiate DRV_NIX into a chroot store; returns (nixroot, drv paths as
/// printed, every .drv in the store).
fn instantiate(tmp: &Path, home: &Path) -> (PathBuf, Vec<String>, Vec<String>) {
    let src = tmp.join("expr");
    fs::create_dir(&src).unwrap();
    // NFC and NFD spellings of "é", and characters outside the BMP.
    let unicode = "\u{e9} e\u{301} \u{2713} \u{65e5}\u{672c}\u{8a9e} \u{1f980}";
    fs::write(
        src.join("default.nix"),
        DRV_NIX.replace("@UNICODE@", unicode),
    )
    .unwrap();
    fs::write(src.join("script.sh"), "#!/bin/sh\necho building\n").unwrap();
    fs::set_permissions(
        src.join("script.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::write(src.join("file.txt"), "a source file\n").unwrap();
    fs::create_dir(src.join("srcdir")).unwrap();
    fs::write(src.join("srcdir/inner"), "inner\n").unwrap();
    std::os::unix::fs::symlink("inner", src.join("srcdir/link")).unwrap();

    let nixroot = tmp.join("nixroot");
    let printed: Vec<String> = String::from_utf8(run_ok(
        command("nix-instantiate", home)
            .arg("--store")
            .arg(nix_store_uri(&nixroot))
            .arg(src.join("default.nix")),
        None,
        "nix-instantiate",
    ))
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect();
    assert_eq!(printed.len(), 18, "nix-instantiate printed {printed:?}");
    let mut all: Vec<String> = fs::read_dir(nixroot.join("nix/store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".drv"))
        .map(|n| format!("/nix/store/{n}"))
        .collect();
    all.sort();
    (nixroot, printed, all)
}

fn nix_show(home: &Path, nixroot: &Path, drvs: &[String]) -> Value {
    serde_json::from_slice(&run_ok(
        command("nix", home)
            .args([
                "--extra-experimental-features",
                "nix-command",
                "show-derivation",
            ])
            .arg("--store")
            .arg(nix_store_uri(nixroot))
            .args(drvs),
        None,
        "nix show-derivation",
    ))
    .expect("nix show-derivation prints JSON")
}

/// `ferry derivation show FILE` in a namespace where Nix's chroot store is
/// bind-mounted at /nix/store (so input .drvs resolve).
fn ferry_show(home: &Path, nixroot: &Path, file: &Path) -> std::process::Output {
    let store = nixroot.join("nix/store");
    let mut cmd = in_nix_namespace(
        NsStore::Bind(&store),
        home,
        ferry_bin(),
        &[
            OsStr::new("derivation"),
            OsStr::new("show"),
            file.as_os_str(),
        ],
    );
    cmd.env("FERRY_STORE_DIR", "/nix/store")
        .env("FERRY_STATE_DIR", home.join("ferry-state"))
        .env("FERRY_CONFIG_DIR", home.join("ferry-config"));
    run(&mut cmd, None)
}

/// Compare `ferry derivation show` with `nix show-derivation` on every
/// .drv file nix-instantiate made whose name `select` accepts; returns the
/// store's .drv paths and Nix's JSON for all of them.
fn compare_show(select: &dyn Fn(&str) -> bool) -> (Vec<String>, Value) {
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let (nixroot, printed, all) = instantiate(tmp.path(), &home);
    for p in &printed {
        assert!(
            all.contains(p),
            "{p} printed by nix-instantiate is not in the store"
        );
    }
    // 18 printed + chain-0 .. chain-9 below the printed chain-10.
    assert_eq!(all.len(), 28, ".drv files in the store: {all:?}");

    let nix_all = nix_show(&home, &nixroot, &all);
    let chosen: Vec<&String> = all.iter().filter(|d| select(d)).collect();
    assert!(!chosen.is_empty());
    let mut failures = Vec::new();
    for drv in &chosen {
        let drv: &String = drv;
        let out = ferry_show(&home, &nixroot, Path::new(drv));
        if !out.status.success() {
            failures.push(format!(
                "{drv}: ferry derivation show failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let ferry_v: Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{drv}: ferry's output is not JSON: {e}"));
                continue;
            }
        };
        // The key is the recomputed .drv path: it must be the file's own.
        let keys: Vec<&String> = ferry_v.as_object().unwrap().keys().collect();
        if keys != [drv] {
            failures.push(format!(
                "{drv}: ferry keyed its output by {keys:?}, not by the file's own store path"
            ));
        }
        let nix_v = serde_json::json!({ drv.clone(): nix_all[drv].clone() });
        if ferry_v != nix_v {
            failures.push(format!(
                "{drv}: ferry derivation show differs from nix show-derivation (left ferry, right Nix):\n    {}",
                json_diff(&ferry_v, &nix_v).join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} derivations differ:\n{}",
        failures.len(),
        chosen.len(),
        failures.join("\n")
    );
    (all, nix_all)
}

/// Derivation features that have their own tests below.
fn has_own_test(drv: &str) -> bool {
    ["-structured.drv", "-fixed-sha1.drv", "-fixed-sha512.drv"]
        .iter()
        .any(|s| drv.ends_with(s))
}

/// Multiple outputs, escapes, sha256 fixed outputs (flat and recursive,
/// colliding twins), a 10-deep chain, a diamond, input sources,
/// passAsFile; and dependents of every fixed output, sha1/sha512 included.
#[test]
fn derivation_show_matches_nix_show_derivation() {
    if !prerequisites(&["root", "namespaces", "nix-store", "nix-instantiate", "nix"]) {
        return;
    }
    let (all, nix_all) = compare_show(&|d| !has_own_test(d));
    // formats.md's fixed-output vector: the output path of a recursive
    // sha256 "bar" depends only on its name and hash.
    let bar = all.iter().find(|d| d.ends_with("-bar.drv")).unwrap();
    assert_eq!(
        nix_all[bar]["outputs"]["out"]["path"],
        Value::from("/nix/store/4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar"),
        "formats.md's bar vector"
    );
}

/// Fixed outputs hashed with sha1 (flat) and sha512 (recursive, given in
/// SRI form): Nix accepts md5, sha1, sha256 and sha512 (fetchurl with
/// sha1/sha512 hashes is common).
#[test]
fn derivation_show_fixed_outputs_sha1_sha512() {
    if !prerequisites(&["root", "namespaces", "nix-store", "nix-instantiate", "nix"]) {
        return;
    }
    compare_show(&|d| d.ends_with("-fixed-sha1.drv") || d.ends_with("-fixed-sha512.drv"));
}

/// `__structuredAttrs = true`: the env holds only `__json` and the output
/// paths (no `name`, `builder`, `system`...).
#[test]
fn derivation_show_structured_attrs() {
    if !prerequisites(&["root", "namespaces", "nix-store", "nix-instantiate", "nix"]) {
        return;
    }
    compare_show(&|d| d.ends_with("-structured.drv"));
}

/// Replace the first hash character of `path` (at /nix/store/<hash>) with a
/// different nix32 digit.
fn tamper_path(path: &str) -> String {
    let pos = "/nix/store/".len();
    let c = path.as_bytes()[pos];
    let new = if c == b'0' { '1' } else { '0' };
    format!("{}{}{}", &path[..pos], new, &path[pos + 1..])
}

#[test]
fn derivation_show_refuses_tampered_derivations() {
    if !prerequisites(&["root", "namespaces", "nix-store", "nix-instantiate", "nix"]) {
        return;
    }
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let (nixroot, printed, _) = instantiate(tmp.path(), &home);
    let find = |suffix: &str| {
        printed
            .iter()
            .find(|p| p.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in {printed:?}"))
            .clone()
    };
    let nix_v = nix_show(&home, &nixroot, &printed);
    let read_drv = |p: &str| fs::read_to_string(nixroot.join(p.trim_start_matches('/'))).unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();

    // An untouched copy outside the store is accepted and keyed by the
    // path its contents imply, whatever the copy is called.
    for name in ["-multi.drv", "-diamond-top.drv", "-with-sources.drv"] {
        let drv = find(name);
        let copy = outside.join(format!("copy{name}"));
        fs::write(&copy, read_drv(&drv)).unwrap();
        let out = ferry_show(&home, &nixroot, &copy);
        assert!(
            out.status.success(),
            "ferry derivation show of an exact copy of {drv} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ drv.clone(): nix_v[&drv].clone() }),
            "copy of {drv} outside the store"
        );
    }

    // (description, tampered text, the genuine path the message must name)
    let mut cases: Vec<(String, String, Option<String>)> = Vec::new();
    // (a) multi's dev output path changed everywhere it occurs (outputs and
    //     env agree with each other, but not with the contents).
    let multi = find("-multi.drv");
    let dev = nix_v[&multi]["outputs"]["dev"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    cases.push((
        format!("{multi} with its dev output path {dev} replaced everywhere"),
        read_drv(&multi).replace(&dev, &tamper_path(&dev)),
        Some(dev.clone()),
    ));
    // (b) diamond-top's out path changed in the outputs list only.
    let top = find("-diamond-top.drv");
    let out_path = nix_v[&top]["outputs"]["out"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let text = read_drv(&top);
    let tuple = format!("(\"out\",\"{out_path}\"");
    assert!(text.contains(&tuple), "{top}: no {tuple} in {text}");
    cases.push((
        format!("{top} with its out path changed in the outputs list only"),
        text.replacen(
            &tuple,
            &format!("(\"out\",\"{}\"", tamper_path(&out_path)),
            1,
        ),
        Some(out_path.clone()),
    ));
    // (c) a fixed-output derivation whose recorded path no longer matches.
    let flat = find("-fixed-flat.drv");
    let fp = nix_v[&flat]["outputs"]["out"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    cases.push((
        format!("{flat} with its out path {fp} replaced everywhere"),
        read_drv(&flat).replace(&fp, &tamper_path(&fp)),
        Some(fp.clone()),
    ));
    // (d) an env value changed, output paths untouched: the recorded paths
    //     no longer follow from the contents.
    let esc = find("-escapes.drv");
    let text = read_drv(&esc);
    assert!(text.contains("(\"empty\",\"\")"));
    cases.push((
        format!("{esc} with an env value changed"),
        text.replace("(\"empty\",\"\")", "(\"empty\",\"tampered\")"),
        None,
    ));

    for (i, (what, contents, genuine)) in cases.iter().enumerate() {
        let f = outside.join(format!("tampered-{i}.drv"));
        fs::write(&f, contents).unwrap();
        let out = ferry_show(&home, &nixroot, &f);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "ferry derivation show accepted {what}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains("match"),
            "ferry derivation show refused {what} but its message does not mention the mismatch: {stderr}"
        );
        if let Some(g) = genuine {
            assert!(
                stderr.contains(g.as_str()),
                "the refusal of {what} should name the path the contents imply ({g}): {stderr}"
            );
        }
        assert!(out.stdout.is_empty(), "nothing on stdout for {what}");
    }
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
