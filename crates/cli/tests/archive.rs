//! `ferry archive`: keys, the ACL, and signed bundles between two stores
//! with separate FERRY_* directories, including every refusal.
//!
//! Both stores use the same store directory path (paths must be equal to
//! move between stores), so the test swaps the two stores' directories in
//! and out of that path; each keeps its own state and configuration.

use ferry_test_support as support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use support::*;

struct Stores {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    /// Which store's directory is at `root/store` now.
    current: char,
}

impl Stores {
    fn new() -> Stores {
        let tmp = temp_dir();
        let root = tmp.path().to_path_buf();
        let home = root.join("home");
        fs::create_dir_all(&home).unwrap();
        Stores {
            _tmp: tmp,
            root,
            home,
            current: 'a',
        }
    }

    fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Put store `which`'s directory at the shared store path.
    fn switch(&mut self, which: char) {
        if self.current == which {
            return;
        }
        let here = self.store_dir();
        if here.exists() {
            fs::rename(&here, self.root.join(format!("store-{}", self.current))).unwrap();
        }
        let there = self.root.join(format!("store-{which}"));
        if there.exists() {
            fs::rename(&there, &here).unwrap();
        }
        self.current = which;
    }

    fn ferry(&mut self, which: char, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.switch(which);
        let mut c = command(ferry_bin(), &self.home);
        c.env("FERRY_STORE_DIR", self.store_dir())
            .env("FERRY_STATE_DIR", self.root.join(format!("state-{which}")))
            .env(
                "FERRY_CONFIG_DIR",
                self.root.join(format!("config-{which}")),
            )
            .args(args);
        run(&mut c, stdin)
    }

    fn ok(&mut self, which: char, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let o = self.ferry(which, args, stdin);
        assert!(
            o.status.success(),
            "ferry {args:?} on store {which} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    }

    fn public_key(&self, which: char) -> Vec<u8> {
        fs::read(self.root.join(format!("config-{which}/signing-key.pub"))).unwrap()
    }

    fn no_temporaries(&self) {
        for e in fs::read_dir(self.store_dir()).unwrap() {
            let n = e.unwrap().file_name();
            assert!(
                !n.to_string_lossy().starts_with('.'),
                "temporary entry {n:?} left in the store"
            );
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tree(at: &Path) {
    fs::create_dir_all(at.join("sub")).unwrap();
    for i in 0..20 {
        fs::write(at.join(format!("sub/f{i}")), vec![i as u8; 3000 * i]).unwrap();
    }
    std::os::unix::fs::symlink("sub/f1", at.join("link")).unwrap();
}

#[test]
fn keys_and_the_acl() {
    let mut s = Stores::new();
    s.ok('a', &["archive", "--generate-key"], None);
    let sec = s.root.join("config-a/signing-key.sec");
    assert_eq!(
        fs::metadata(&sec).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pubkey = s.public_key('a');
    assert!(String::from_utf8_lossy(&pubkey)
        .starts_with("(public-key (ecc (curve Ed25519) (flags eddsa) (q #"));
    let o = s.ferry('a', &["archive", "--generate-key"], None);
    assert!(
        !o.status.success() && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    s.ok('a', &["archive", "--generate-key", "--force"], None);
    assert_ne!(s.public_key('a'), pubkey);

    // Authorize: idempotent, fingerprint shown, garbage refused.
    let key = s.public_key('a');
    let o = s.ferry('b', &["archive", "--authorize"], Some(&key));
    assert!(
        o.status.success() && stderr(&o).contains("authorized"),
        "{}",
        stderr(&o)
    );
    let fingerprint = stderr(&o).split_whitespace().nth(1).unwrap().to_string();
    let o = s.ferry('b', &["archive", "--authorize"], Some(&key));
    assert!(stderr(&o).contains("already authorized"));
    let acl = fs::read_to_string(s.root.join("config-b/acl")).unwrap();
    assert_eq!(acl.matches("(entry").count(), 1, "{acl}");
    let listed = String::from_utf8(s.ok('b', &["archive", "--list-keys"], None)).unwrap();
    assert!(
        listed.contains(&fingerprint[..4]),
        "{listed} vs {fingerprint}"
    );
    for bad in [
        &b"hello"[..],
        b"(public-key (ecc (curve Ed25519) (q #00#)))",
        b"",
    ] {
        let o = s.ferry('b', &["archive", "--authorize"], Some(bad));
        assert!(
            !o.status.success() && stderr(&o).contains("not a public key"),
            "{}",
            stderr(&o)
        );
    }
    let o = s.ferry('b', &["archive", "--deauthorize"], Some(&key));
    assert!(stderr(&o).contains("deauthorized"));
    let acl = fs::read_to_string(s.root.join("config-b/acl")).unwrap();
    assert_eq!(acl.matches("(entry").count(), 0, "{acl}");
}

/// Set up: store a holds a small closure and a key; b authorizes a.
fn exported(s: &mut Stores) -> (Vec<u8>, Vec<String>) {
    s.ok('a', &["archive", "--generate-key"], None);
    let src = s.root.join("src");
    tree(&src);
    let added =
        String::from_utf8(s.ok('a', &["store", "add", src.to_str().unwrap()], None)).unwrap();
    let added = added.trim().to_string();
    let bundle = s.ok('a', &["archive", "--export", "-r", &added], None);
    (bundle, vec![added])
}

#[test]
fn export_import_between_two_stores() {
    let mut s = Stores::new();
    let (bundle, paths) = exported(&mut s);
    let key = s.public_key('a');
    s.ok('b', &["archive", "--authorize"], Some(&key));
    let missing = s.ok('b', &["archive", "--missing"], Some(paths[0].as_bytes()));
    assert_eq!(String::from_utf8(missing).unwrap().trim(), paths[0]);
    let out = String::from_utf8(s.ok('b', &["archive", "--import"], Some(&bundle))).unwrap();
    assert_eq!(out.lines().collect::<Vec<_>>(), vec![paths[0].as_str()]);
    assert!(s
        .ok('b', &["archive", "--missing"], Some(paths[0].as_bytes()))
        .is_empty());
    let info_b = s.ok('b', &["store", "path-info", "--json", &paths[0]], None);
    s.ok('b', &["store", "verify"], None);
    let info_a = s.ok('a', &["store", "path-info", "--json", &paths[0]], None);
    s.ok('a', &["store", "verify"], None);
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&info_a).unwrap(),
        serde_json::from_slice(&info_b).unwrap(),
    );
    for k in ["path", "narHash", "narSize", "references"] {
        assert_eq!(a[0][k], b[0][k], "{k}");
    }
}

#[test]
fn every_refusal_imports_nothing_and_leaves_nothing() {
    let mut s = Stores::new();
    let (bundle, paths) = exported(&mut s);
    let path = paths[0].clone();
    let check_nothing = |s: &mut Stores, what: &str| {
        let missing = s.ok('b', &["archive", "--missing"], Some(path.as_bytes()));
        assert_eq!(
            String::from_utf8(missing).unwrap().trim(),
            path,
            "{what}: imported anyway"
        );
        s.no_temporaries();
    };

    // Signed by a key b never authorized: the fingerprint and the command to run.
    let o = s.ferry('b', &["archive", "--import"], Some(&bundle));
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains(&path)
            && e.contains("not authorized")
            && e.contains("ferry archive --authorize"),
        "{e}"
    );
    check_nothing(&mut s, "unknown key");

    // Authorized, then deauthorized.
    let key = s.public_key('a');
    s.ok('b', &["archive", "--authorize"], Some(&key));
    s.ok('b', &["archive", "--deauthorize"], Some(&key));
    let o = s.ferry('b', &["archive", "--import"], Some(&bundle));
    assert!(stderr(&o).contains("not authorized"), "{}", stderr(&o));
    check_nothing(&mut s, "deauthorized key");
    s.ok('b', &["archive", "--authorize"], Some(&key));

    // Unsigned: the same bundle with its signature slot emptied.
    let unsigned = {
        let mut out = Vec::new();
        let mut w = ferry_formats::export::ExportWriter::new(&mut out);
        let mut r = ferry_formats::export::ExportReader::new(&bundle[..]);
        while let Some(item) = r
            .next_item(|nar| {
                // Keep exactly the NAR's bytes while the parser reads them.
                let mut tee = Tee {
                    inner: nar,
                    copy: Vec::new(),
                };
                ferry_formats::nar::parse(&mut tee, &mut ferry_formats::nar::ValidateSink)?;
                Ok(tee.copy)
            })
            .unwrap()
        {
            w.write_item(
                &item.meta,
                |o| std::io::Write::write_all(o, &item.nar_result),
                None,
            )
            .unwrap();
        }
        w.finish().unwrap();
        out
    };
    let o = s.ferry('b', &["archive", "--import"], Some(&unsigned));
    assert!(stderr(&o).contains("not signed"), "{}", stderr(&o));
    check_nothing(&mut s, "unsigned");

    // Tampered: one byte of file contents changed: both hashes named.
    let mut tampered = bundle.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x55;
    let o = s.ferry('b', &["archive", "--import"], Some(&tampered));
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("changed after signing") && e.contains("signed hash") && e.contains(&path),
        "{e}"
    );
    check_nothing(&mut s, "tampered");

    // Tampered in the metadata: the path's name.
    let name = path.rsplit('-').next().unwrap().to_string();
    let idx = find(&bundle, path.as_bytes()).unwrap() + path.len() - name.len();
    let mut renamed = bundle.clone();
    renamed[idx] = if renamed[idx] == b'x' { b'y' } else { b'x' };
    let o = s.ferry('b', &["archive", "--import"], Some(&renamed));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("changed after signing"),
        "{}",
        stderr(&o)
    );
    check_nothing(&mut s, "renamed");

    // Truncated anywhere: the byte offset is named.
    for cut in [8, 100, bundle.len() / 3, bundle.len() - 9] {
        let o = s.ferry('b', &["archive", "--import"], Some(&bundle[..cut]));
        let e = stderr(&o);
        assert!(!o.status.success());
        assert!(e.contains("truncated at byte"), "cut {cut}: {e}");
        check_nothing(&mut s, "truncated");
    }

    // And the genuine bundle still imports.
    s.ok('b', &["archive", "--import"], Some(&bundle));
    s.ok('b', &["store", "verify"], None);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Tee<'a> {
    inner: &'a mut dyn std::io::Read,
    copy: Vec<u8>,
}

impl std::io::Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}
