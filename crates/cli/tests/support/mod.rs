//! Shared helpers for the integration tests of the `ferry` command: the
//! prerequisite check, a deterministic tree generator, process helpers, a
//! private-mount-namespace runner and readable diffs of NARs and JSON; the
//! attacker module (`attacker.rs`) for the security tests.

#![allow(dead_code)]

pub mod attacker;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

// ---------------------------------------------------------------------------
// Prerequisites
// ---------------------------------------------------------------------------

/// Check what a test needs. Each item is `"root"` (effective uid 0),
/// `"namespaces"` (a private mount namespace can be made with `unshare`) or
/// the name of a program that must be in PATH (e.g. `"nix-store"`).
///
/// Missing prerequisites panic when the environment variable `CI` is set
/// (CI runs as root with nix-bin installed, and such tests must never be
/// skipped silently there); elsewhere they print a skip notice to stderr and
/// return false, and the test returns early.
pub fn prerequisites(what: &[&str]) -> bool {
    let mut missing = Vec::new();
    for &w in what {
        let ok = match w {
            "root" => effective_uid() == Some(0),
            "namespaces" => {
                effective_uid() == Some(0)
                    && in_path("unshare")
                    && Command::new("unshare")
                        .args(["--mount", "--propagation", "private", "--", "true"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false)
            }
            program => in_path(program),
        };
        if !ok {
            missing.push(match w {
                "root" => "running as root".to_string(),
                "namespaces" => {
                    "making a private mount namespace (`unshare --mount` as root)".to_string()
                }
                p => format!("`{p}` in PATH"),
            });
        }
    }
    if missing.is_empty() {
        return true;
    }
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let msg = format!(
        "this test needs {} (CI runs it as root with nix-bin installed)",
        missing.join(", ")
    );
    if ci {
        panic!(
            "CI is set but a prerequisite is missing, and tests must not be skipped in CI: {msg}"
        );
    }
    eprintln!("SKIPPED (CI is not set): {msg}");
    false
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            fs::metadata(d.join(program))
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
    })
}

// ---------------------------------------------------------------------------
// Deterministic pseudo-random numbers (xorshift64*, no extra crate)
// ---------------------------------------------------------------------------

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that small seeds give unrelated streams
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform-ish in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------
// Trees
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// Environment variables that would steer ferry or Nix elsewhere.
const SCRUB: &[&str] = &[
    "FERRY_STORE_DIR",
    "FERRY_STATE_DIR",
    "FERRY_CONFIG_DIR",
    "NIX_REMOTE",
    "NIX_STORE_DIR",
    "NIX_STORE",
    "NIX_STATE_DIR",
    "NIX_LOG_DIR",
    "NIX_CONF_DIR",
    "NIX_CONFIG",
    "NIX_PATH",
];

/// A command with a scrubbed environment; `home` (a temp dir) keeps Nix's
/// caches and ferry's per-user defaults away from the real home.
pub fn command(program: impl AsRef<OsStr>, home: &Path) -> Command {
    let mut c = Command::new(program);
    for v in SCRUB {
        c.env_remove(v);
    }
    c.env("HOME", home)
        .env("XDG_CACHE_HOME", home.join(".cache"));
    c
}

/// Run, feeding `stdin`, and return the output whatever the exit status.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let out = child.wait_with_output().unwrap();
    if let Some(w) = writer {
        w.join().unwrap();
    }
    out
}

/// Run and insist on success; returns stdout.
pub fn run_ok(cmd: &mut Command, stdin: Option<&[u8]>, what: &str) -> Vec<u8> {
    let out = run(cmd, stdin);
    if !out.status.success() {
        panic!(
            "{what}: {cmd:?} failed with {}\nstderr:\n{}\nstdout (first 2000 bytes):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(2000)])
        );
    }
    out.stdout
}

pub fn stdout_line(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap().trim_end().to_string()
}

/// `local?root=DIR`: a chroot store whose files land in DIR/nix/store while
/// its paths still read /nix/store/...; the host's /nix is never touched.
pub fn nix_store_uri(root: &Path) -> String {
    format!("local?root={}", root.display())
}

// ---------------------------------------------------------------------------
// Private mount namespaces
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Diffs
// ---------------------------------------------------------------------------

/// Panic with the first differing offset and hex context if `a != b`.
pub fn assert_same_bytes(what: &str, a_name: &str, a: &[u8], b_name: &str, b: &[u8]) {
    if a == b {
        return;
    }
    let off = a
        .iter()
        .zip(b.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let ctx = |v: &[u8]| {
        let start = off.saturating_sub(32) & !7;
        let end = (off + 48).min(v.len());
        let hex: Vec<String> = v[start.min(end)..end]
            .chunks(8)
            .map(|c| c.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        format!("from offset {start}: {}", hex.join(" "))
    };
    panic!(
        "{what}: {a_name} ({} bytes) and {b_name} ({} bytes) first differ at byte offset {off}\n  {a_name}: {}\n  {b_name}: {}",
        a.len(),
        b.len(),
        ctx(a),
        ctx(b)
    );
}

/// The JSON paths at which two values differ (up to 20).
pub fn json_diff(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, at: String, out: &mut Vec<String>) {
        use serde_json::Value::*;
        if out.len() >= 20 {
            return;
        }
        match (a, b) {
            (Object(x), Object(y)) => {
                for (k, v) in x {
                    match y.get(k) {
                        Some(w) => walk(v, w, format!("{at}.{k:?}"), out),
                        None => out.push(format!("{at}.{k:?}: only on the left: {v}")),
                    }
                }
                for (k, w) in y {
                    if !x.contains_key(k) {
                        out.push(format!("{at}.{k:?}: only on the right: {w}"));
                    }
                }
            }
            (Array(x), Array(y)) if x.len() == y.len() => {
                for (i, (v, w)) in x.iter().zip(y).enumerate() {
                    walk(v, w, format!("{at}[{i}]"), out);
                }
            }
            _ if a == b => {}
            _ => out.push(format!("{at}: left {a} / right {b}")),
        }
    }
    let mut out = Vec::new();
    walk(a, b, String::new(), &mut out);
    out
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
