//! NAR round trips, Nix's own archives, and every malformed case refused.

use super::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::hash::Sha256Hash;
use crate::wire;

fn nar_of_bytes(data: &[u8], exec: bool) -> Vec<u8> {
    let mut v = Vec::new();
    dump_bytes(data, exec, &mut v).unwrap();
    v
}

#[test]
fn vector_x() {
    let v = nar_of_bytes(b"x", false);
    let want = hex::decode(
        concat!(
            "0d00000000000000 6e69782d61726368 6976652d31000000 0100000000000000",
            "2800000000000000 0400000000000000 7479706500000000 0700000000000000",
            "726567756c617200 0800000000000000 636f6e74656e7473 0100000000000000",
            "7800000000000000 0100000000000000 2900000000000000"
        )
        .replace(' ', ""),
    )
    .unwrap();
    assert_eq!(v.len(), 120);
    assert_eq!(v, want);
    assert_eq!(
        Sha256Hash::digest(&v).to_nix32(),
        "0rsv7kag23nvdpy4500mv2m0b4sm4c8fkgqrfsrmv1kgk77bi81c"
    );
}

#[test]
fn vector_hello_world_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hello");
    fs::write(&f, "Hello World!").unwrap();
    let mut v = Vec::new();
    assert_eq!(dump(&f, &mut v).unwrap(), 128);
    assert_eq!(v.len(), 128);
    assert_eq!(
        Sha256Hash::digest(&v).to_nix32(),
        "0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3"
    );
    assert_eq!(validate(&mut v.as_slice()).unwrap(), 128);
}

fn sample_tree(root: &Path) {
    fs::create_dir(root).unwrap();
    fs::write(root.join("b"), "bee").unwrap();
    fs::write(root.join("a"), "").unwrap();
    fs::create_dir_all(root.join("d/empty")).unwrap();
    fs::write(root.join("d/run"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("d/run"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../nowhere", root.join("d/dangling")).unwrap();
    std::os::unix::fs::symlink("b", root.join("link")).unwrap();
    fs::write(root.join("ünï cødé"), vec![7u8; 100_001]).unwrap();
}

#[test]
fn dump_restore_dump_is_identity() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_tree(&src);
    let mut a = Vec::new();
    dump(&src, &mut a).unwrap();
    let out = dir.path().join("out");
    assert_eq!(restore(&mut a.as_slice(), &out).unwrap(), a.len() as u64);
    let mut b = Vec::new();
    dump(&out, &mut b).unwrap();
    assert_eq!(a, b);
    assert!(fs::symlink_metadata(out.join("d/dangling"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_ne!(
        fs::metadata(out.join("d/run"))
            .unwrap()
            .permissions()
            .mode()
            & 0o100,
        0
    );
}

#[test]
fn restore_refuses_existing_target() {
    let dir = tempfile::tempdir().unwrap();
    let a = nar_of_bytes(b"x", false);
    let err = restore(&mut a.as_slice(), dir.path()).unwrap_err();
    assert!(matches!(err, NarParseError::Sink { .. }), "{err}");
}

/// Build a NAR by hand from a token list, for malformed cases.
fn tokens(ts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for t in ts {
        wire::write_bytes(&mut v, t).unwrap();
    }
    v
}

fn dir_nar(names: &[&[u8]]) -> Vec<u8> {
    let mut v = tokens(&[MAGIC, b"(", b"type", b"directory"]);
    for n in names {
        v.extend(tokens(&[
            b"entry", b"(", b"name", n, b"node", b"(", b"type", b"symlink", b"target", b"t", b")",
            b")",
        ]));
    }
    v.extend(tokens(&[b")"]));
    v
}

fn kind_of(nar: &[u8]) -> NarErrorKind {
    match validate(&mut &nar[..]) {
        Err(NarParseError::Invalid(e)) => e.kind,
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn rejects_malformed_archives_with_offsets() {
    assert!(validate(&mut dir_nar(&[b"a", b"b"]).as_slice()).is_ok());
    assert!(matches!(
        kind_of(&dir_nar(&[b"b", b"a"])),
        NarErrorKind::Unsorted { .. }
    ));
    assert!(matches!(
        kind_of(&dir_nar(&[b"a", b"a"])),
        NarErrorKind::Unsorted { .. }
    ));
    for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
        assert!(
            matches!(kind_of(&dir_nar(&[bad])), NarErrorKind::BadName(_)),
            "{bad:?}"
        );
    }
    assert!(matches!(
        kind_of(&dir_nar(&[&[b'n'; 256]])),
        NarErrorKind::BadName(_)
    ));
    assert_eq!(kind_of(b"nix"), NarErrorKind::Truncated);
    assert_eq!(
        kind_of(&tokens(&[b"nix-archive-2"])),
        NarErrorKind::BadMagic
    );
    // executable after contents
    let v = tokens(&[
        MAGIC,
        b"(",
        b"type",
        b"regular",
        b"contents",
        b"x",
        b"executable",
        b"",
        b")",
    ]);
    assert!(matches!(kind_of(&v), NarErrorKind::Unexpected { .. }));
    // executable with a value
    let v = tokens(&[MAGIC, b"(", b"type", b"regular", b"executable", b"1"]);
    assert!(matches!(kind_of(&v), NarErrorKind::BadExecutable(_)));
    // bad padding in contents
    let mut v = nar_of_bytes(b"x", false);
    v[97] = 1;
    let err = validate(&mut v.as_slice()).unwrap_err();
    assert_eq!(err.offset(), Some(97));
    assert!(err.to_string().contains("padding"), "{err}");
    // truncation at every length reports Truncated, never panics
    let full = nar_of_bytes(b"Hello World!", true);
    for cut in 0..full.len() {
        let err = validate(&mut &full[..cut]).unwrap_err();
        assert!(
            matches!(&err, NarParseError::Invalid(NarError { kind: NarErrorKind::Truncated, offset }) if *offset <= cut as u64),
            "cut {cut}: {err}"
        );
    }
    // trailing data
    let mut v = nar_of_bytes(b"x", false);
    v.extend([0u8; 8]);
    assert_eq!(kind_of(&v), NarErrorKind::TrailingData);
    // empty symlink target
    let v = tokens(&[MAGIC, b"(", b"type", b"symlink", b"target", b"", b")"]);
    assert!(matches!(kind_of(&v), NarErrorKind::BadTarget(_)));
    // an absurd token length is refused before allocating
    let mut v = tokens(&[MAGIC]);
    v.extend(u64::MAX.to_le_bytes());
    assert!(matches!(kind_of(&v), NarErrorKind::TooLong { .. }));
}

#[test]
fn restore_never_escapes_the_target() {
    let dir = tempfile::tempdir().unwrap();
    // A symlink named "a" pointing outside, then an entry "a" again would
    // be a duplicate: refused before anything is written through it.
    let mut v = tokens(&[MAGIC, b"(", b"type", b"directory"]);
    v.extend(tokens(&[
        b"entry", b"(", b"name", b"a", b"node", b"(", b"type", b"symlink", b"target",
    ]));
    v.extend(tokens(&[
        dir.path().to_str().unwrap().as_bytes(),
        b")",
        b")",
    ]));
    v.extend(tokens(&[
        b"entry",
        b"(",
        b"name",
        b"a",
        b"node",
        b"(",
        b"type",
        b"regular",
        b"contents",
        b"pwned",
        b")",
        b")",
        b")",
    ]));
    let out = dir.path().join("out");
    assert!(restore(&mut v.as_slice(), &out).is_err());
    assert!(fs::read_dir(dir.path())
        .unwrap()
        .all(|e| e.unwrap().file_name() == "out"));
}

#[test]
fn depth_is_bounded() {
    let mut v = tokens(&[MAGIC]);
    for _ in 0..=MAX_DEPTH {
        v.extend(tokens(&[
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"d",
            b"node",
        ]));
    }
    assert_eq!(kind_of(&v), NarErrorKind::TooDeep);
}

#[test]
fn dump_refuses_what_restore_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = dir.path().join("t");
    for _ in 1..MAX_DEPTH {
        p.push("d");
    }
    fs::create_dir_all(&p).unwrap();
    // The deepest directory restore accepts dumps and restores.
    let mut nar = Vec::new();
    dump(&dir.path().join("t"), &mut nar).unwrap();
    restore(&mut nar.as_slice(), &dir.path().join("copy")).unwrap();
    // One more level is refused by both.
    fs::create_dir(p.join("d")).unwrap();
    let err = dump(&dir.path().join("t"), &mut io::sink()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("deeper than"), "{err}");
}
