//! File-system trees for tests: a tree to materialize (names and symlink
//! targets are raw bytes), names chosen to catch sorting, quoting and
//! encoding mistakes, random trees, and temp directories that can be
//! removed even when a test made them read-only.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::rng::Rng;

/// A file-system tree to materialize. Names and symlink targets are raw
/// bytes: anything but '/' and NUL is allowed in a name.
#[derive(Clone, Debug)]
pub enum Node {
    /// Contents and permission bits (only the owner's x bit reaches the NAR).
    File(Vec<u8>, u32),
    Symlink(Vec<u8>),
    Dir(Vec<(Vec<u8>, Node)>),
    /// A hard link to an earlier sibling file of the same directory
    /// (by name); it must appear after that sibling in the list.
    HardLink(Vec<u8>),
}

pub fn file(data: impl Into<Vec<u8>>) -> Node {
    Node::File(data.into(), 0o644)
}
pub fn exe(data: impl Into<Vec<u8>>) -> Node {
    Node::File(data.into(), 0o755)
}
pub fn link(target: impl Into<Vec<u8>>) -> Node {
    Node::Symlink(target.into())
}
pub fn dir(entries: Vec<(&[u8], Node)>) -> Node {
    Node::Dir(entries.into_iter().map(|(n, e)| (n.to_vec(), e)).collect())
}

/// Create `node` at `path` (which must not exist). Directory permissions are
/// set last, bottom-up, so that read-only directories can be filled.
pub fn materialize(path: &Path, node: &Node) {
    match node {
        Node::File(data, mode) => {
            fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap();
        }
        Node::Symlink(target) => symlink(OsStr::from_bytes(target), path)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", path.display())),
        Node::Dir(entries) => {
            fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
            for (name, child) in entries {
                let p = path.join(OsStr::from_bytes(name));
                match child {
                    Node::HardLink(to) => fs::hard_link(path.join(OsStr::from_bytes(to)), &p)
                        .unwrap_or_else(|e| panic!("hard link {}: {e}", p.display())),
                    _ => materialize(&p, child),
                }
            }
        }
        Node::HardLink(_) => panic!("a hard link cannot be a root"),
    }
}

/// Names chosen to catch sorting, quoting and encoding mistakes: bytewise
/// order differs from locale order ("B" < "_" < "a"), leading dashes that
/// look like options, spaces, shell and ATerm metacharacters, control
/// characters, two spellings of "é" (NFC and NFD: distinct byte strings),
/// invalid UTF-8, and a 255-byte name.
pub fn odd_names() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        &b"B"[..],
        b"a",
        b"_",
        b"Z",
        b"z",
        b"0",
        b"10",
        b"9",
        b"-",
        b"--help",
        b"-n",
        b" ",
        b" leading space",
        b"trailing space ",
        b"a b",
        b"new\nline",
        b"tab\tname",
        b"cr\rname",
        b"quote\"name",
        b"single'quote",
        b"back\\slash",
        b"$HOME",
        b"*?[x]",
        b"...",
        b".hidden",
        b"..hidden",
        b"~",
        b"#comment",
        b"(paren)",
        "\u{e9}".as_bytes(),
        "e\u{301}".as_bytes(),
        "\u{65e5}\u{672c}\u{8a9e}".as_bytes(),
        "\u{1f980}".as_bytes(),
        b"\xff\xfe invalid utf8",
        b"\x01\x7f",
        b"\xc3",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    v.push(vec![b'L'; 255]);
    v
}

/// A random tree: up to `depth` levels, files of random sizes and modes,
/// symlinks (relative, absolute, dangling), empty directories.
pub fn random_tree(rng: &mut Rng, depth: usize) -> Node {
    let names = odd_names();
    let n = rng.below(if depth == 0 { 3 } else { 9 });
    let mut entries: Vec<(Vec<u8>, Node)> = Vec::new();
    for i in 0..n {
        let name = if rng.chance(40) {
            rng.pick(&names).clone()
        } else {
            let len = 1 + rng.below(12);
            let mut s: Vec<u8> = (0..len)
                .map(|_| *rng.pick(b"abcXYZ019_-. +=@%\xc3\xa9"))
                .collect();
            // keep it a valid name: no "." / ".." (avoided by a suffix)
            s.push(b'0' + (i % 10) as u8);
            s
        };
        if entries.iter().any(|(e, _)| *e == name) {
            continue;
        }
        let kind = rng.below(10);
        let node = if kind < 5 {
            let size = match rng.below(6) {
                0 => 0,
                1 => *rng.pick(&[1usize, 7, 8, 9, 15, 16, 17, 4095, 4096, 4097]),
                2 => rng.below(100_000),
                _ => rng.below(300),
            };
            let mode = *rng.pick(&[0o644, 0o755, 0o600, 0o700, 0o444, 0o555, 0o654, 0o601]);
            Node::File(rng.bytes(size), mode)
        } else if kind < 8 {
            let target: Vec<u8> = match rng.below(6) {
                0 => b"does-not-exist".to_vec(),
                1 => b"/nix/store/00000000000000000000000000000000-absent".to_vec(),
                2 => b"/etc".to_vec(),
                3 => b"..".to_vec(),
                4 => rng.pick(&names).clone(),
                _ => b"../sibling/with space/\xc3\xa9".to_vec(),
            };
            Node::Symlink(target)
        } else if depth == 0 {
            Node::Dir(vec![])
        } else {
            random_tree(rng, depth - 1)
        };
        entries.push((name, node));
    }
    Node::Dir(entries)
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferry-conformance-")
        .tempdir()
        .unwrap()
}

/// Make everything under `p` writable again so the temp dir can be removed
/// (trees with read-only directories, Nix-restored read-only files).
pub fn make_writable(p: &Path) {
    if let Ok(m) = fs::symlink_metadata(p) {
        if m.is_dir() {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
}

pub fn path_of(p: &Path, name: &[u8]) -> PathBuf {
    p.join(OsStr::from_bytes(name))
}
