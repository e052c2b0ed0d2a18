//! Property tests for NAR: write -> read -> write is the identity on
//! arbitrary trees, and malformed archives (truncated, mutated, unsorted,
//! bad padding, `..` names) are refused without panicking.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ferry_formats::nar::{self, NarErrorKind, NarParseError};
use ferry_formats::wire;
use ferry_test_support::nar::tokens;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Node {
    File { exec: bool, data: Vec<u8> },
    Symlink(String),
    Dir(BTreeMap<String, Node>),
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._ é-]{1,10}".prop_filter("not . or ..", |n| n != "." && n != "..")
}

fn tree() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(exec, data)| Node::File { exec, data }),
        "[a-z/.]{1,20}".prop_map(Node::Symlink),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        proptest::collection::btree_map(name(), inner, 0..6).prop_map(Node::Dir)
    })
}

fn materialize(node: &Node, at: &Path) {
    match node {
        Node::File { exec, data } => {
            fs::write(at, data).unwrap();
            let mode = if *exec { 0o755 } else { 0o644 };
            fs::set_permissions(at, fs::Permissions::from_mode(mode)).unwrap();
        }
        Node::Symlink(t) => std::os::unix::fs::symlink(t, at).unwrap(),
        Node::Dir(entries) => {
            fs::create_dir(at).unwrap();
            for (n, child) in entries {
                materialize(child, &at.join(n));
            }
        }
    }
}

fn dump(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    nar::dump(p, &mut v).unwrap();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn write_read_write_is_identity(t in tree()) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        materialize(&t, &src);
        let a = dump(&src);
        prop_assert_eq!(nar::validate(&mut a.as_slice()).unwrap(), a.len() as u64);
        let out = dir.path().join("out");
        nar::restore(&mut a.as_slice(), &out).unwrap();
        prop_assert_eq!(dump(&out), a);
    }

    #[test]
    fn truncated_archives_are_refused(t in tree(), frac in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        materialize(&t, &src);
        let a = dump(&src);
        let cut = ((a.len() as f64) * frac) as usize;
        let err = nar::validate(&mut &a[..cut]).unwrap_err();
        prop_assert!(matches!(err, NarParseError::Invalid(ref e) if e.kind == NarErrorKind::Truncated), "{}", err);
        // Restoring a truncated archive fails too, and never panics.
        prop_assert!(nar::restore(&mut &a[..cut], &dir.path().join("out")).is_err());
    }

    #[test]
    fn mutated_archives_never_panic(t in tree(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        materialize(&t, &src);
        let mut a = dump(&src);
        for (i, b) in edits {
            let i = i.index(a.len());
            a[i] = b;
        }
        let out = dir.path().join("out");
        // Either valid (the edit hit file contents) or an error with an
        // offset inside the archive; restoring stays inside `out`.
        if let Err(e) = nar::restore(&mut a.as_slice(), &out) {
            if let Some(off) = e.offset() { prop_assert!(off <= a.len() as u64); }
        }
        for entry in fs::read_dir(dir.path()).unwrap() {
            let n = entry.unwrap().file_name();
            prop_assert!(n == "src" || n == "out", "{:?} escaped", n);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut v = Vec::new();
        wire::write_bytes(&mut v, b"nix-archive-1").unwrap();
        v.extend(&bytes);
        let _ = nar::validate(&mut v.as_slice());
        let _ = nar::validate(&mut bytes.as_slice());
    }
}

#[test]
fn dot_dot_and_slash_names_are_refused_before_any_write() {
    for bad in [&b".."[..], b".", b"../../etc", b"a/b"] {
        let dir = tempfile::tempdir().unwrap();
        let mut v = tokens(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            bad,
            b"node",
        ]);
        v.extend(tokens(&[
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
        let err = nar::restore(&mut v.as_slice(), &out).unwrap_err();
        assert!(err.to_string().contains("invalid entry name"), "{err}");
        assert!(err.offset().is_some());
        assert_eq!(
            fs::read_dir(&out).unwrap().count(),
            0,
            "nothing written for {bad:?}"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

#[test]
fn bad_padding_is_refused_with_its_offset() {
    let mut v = Vec::new();
    nar::dump_bytes(b"abc", false, &mut v).unwrap();
    // contents "abc" at 96..99, padding 99..104
    v[101] = 0xff;
    let err = nar::validate(&mut v.as_slice()).unwrap_err();
    assert_eq!(err.offset(), Some(99));
    assert!(err.to_string().contains("byte 99"), "{err}");
}
