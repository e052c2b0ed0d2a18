//! The corpus of file trees that conformance tests hand to both ferry and
//! Nix: named roots (each name a valid store path name, so the same corpus
//! serves `store add`) covering odd names, modes, symlinks, hard links,
//! empty and read-only directories, large and random files.

use std::fs;
use std::path::{Path, PathBuf};

use crate::rng::Rng;
use crate::tree::*;

/// Named roots (each name is a valid store path name, so the same corpus
/// serves `store add`).
pub fn corpus() -> Vec<(String, Node)> {
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
pub fn make_corpus(dir: &Path) -> Vec<(String, PathBuf)> {
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
