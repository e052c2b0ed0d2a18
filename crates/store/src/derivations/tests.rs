//! The derivation rule of the store: what it accepts and what it refuses.

use super::*;
use crate::store::tests::test_store;
use std::collections::{BTreeMap, BTreeSet};

fn drv(name: &str, input_drvs: &[(&str, &str)], srcs: &[String]) -> Derivation {
    Derivation {
        outputs: BTreeMap::from([("out".to_string(), Default::default())]),
        input_drvs: input_drvs
            .iter()
            .map(|(p, o)| (p.to_string(), BTreeSet::from([o.to_string()])))
            .collect(),
        input_srcs: srcs.iter().cloned().collect(),
        system: "x86_64-linux".into(),
        builder: "/bin/sh".into(),
        args: vec!["-c".into(), "echo hi > $out".into()],
        env: BTreeMap::from([
            ("name".to_string(), name.to_string()),
            ("out".to_string(), String::new()),
        ]),
    }
}

#[test]
fn add_derivation_chain_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let src = s.add_text("script", b"echo", &[]).unwrap();
    let mut cache = DrvHashCache::new();
    let mut a = drv("a", &[], &[s.display(&src)]);
    let pa = s.add_derivation(&mut a, &mut cache).unwrap();
    assert!(pa.base_name().ends_with("-a.drv"));
    let out_a = a.outputs["out"].path.clone();
    assert_eq!(a.env["out"], out_a);
    assert!(out_a.ends_with("-a"));

    let mut b = drv("b", &[(&s.display(&pa), "out")], &[]);
    let pb = s.add_derivation(&mut b, &mut cache).unwrap();
    assert_eq!(s.read_derivation(&pb).unwrap(), b);
    assert_eq!(s.valid_info(&pb).unwrap().references, vec![pa.clone()]);
    // What we wrote passes the same checks `ferry derivation show` makes.
    let mut load = s.derivation_loader();
    b.check_outputs(s.store_dir(), &mut DrvHashCache::new().lookup(&mut load))
        .unwrap();
}

use crate::bundle::AcceptAll;
use ferry_formats::export::{ExportWriter, ItemMeta};
use std::fs;

/// What lies in the store directory (valid or not).
fn entries(s: &Store) -> BTreeSet<String> {
    fs::read_dir(s.real_store_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn valid_names(s: &Store) -> BTreeSet<String> {
    s.all_valid()
        .unwrap()
        .iter()
        .map(|p| p.base_name().to_string())
        .collect()
}

/// The victim's derivation (added properly) and a forgery: another
/// builder that records the victim's output paths.
fn victim_and_forgery(s: &Store) -> (StorePath, Derivation, Derivation) {
    let mut victim = drv("victim", &[], &[]);
    let p = s
        .add_derivation(&mut victim, &mut DrvHashCache::new())
        .unwrap();
    let mut forged = victim.clone();
    forged.args = vec!["-c".into(), "echo evil > $out".into()];
    (p, victim, forged)
}

fn assert_refused(r: Result<StorePath, StoreError>, what: &str) {
    match r {
        Err(e @ StoreError::BadDerivation { .. }) => eprintln!("{what}: {e}"),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn add_nar_and_add_tree_refuse_names_ending_in_drv() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let (_, _, forged) = victim_and_forgery(&s);
    let before = entries(&s);
    let src = dir.path().join("victim.drv");
    fs::write(&src, forged.to_aterm()).unwrap();
    assert_refused(s.add_tree(&src, "victim.drv"), "add_tree");
    let mut nar_bytes = Vec::new();
    nar::dump(&src, &mut nar_bytes).unwrap();
    assert_refused(
        s.add_nar("victim.drv", &mut nar_bytes.as_slice()),
        "add_nar",
    );
    assert_eq!(entries(&s), before);
    // Under another name it is a source, as any file.
    let p = s.add_nar("victim.txt", &mut nar_bytes.as_slice()).unwrap();
    assert!(s.is_valid(&p).unwrap());
}

#[test]
fn add_text_of_a_drv_checks_its_outputs_name_and_references() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let (victim_path, victim, forged) = victim_and_forgery(&s);
    let before = entries(&s);
    let text = forged.to_aterm();
    assert_refused(
        s.add_text("victim.drv", text.as_bytes(), &[]),
        "add_text forged",
    );
    assert_refused(
        s.add_derivation_text("victim.drv", &text),
        "add_derivation_text forged",
    );
    // The forgery under another file name, and the victim under another.
    assert_refused(s.add_text("other.drv", text.as_bytes(), &[]), "other name");
    let good = victim.to_aterm();
    assert_refused(
        s.add_text("other.drv", good.as_bytes(), &[]),
        "renamed victim",
    );
    // References that are not its inputs.
    let extra = s.add_text("extra", b"x", &[]).unwrap();
    let before_extra = entries(&s);
    assert_refused(
        s.add_text("victim.drv", good.as_bytes(), std::slice::from_ref(&extra)),
        "extra reference",
    );
    assert_eq!(entries(&s), before_extra);
    assert!(before_extra.is_superset(&before));
    // A derivation whose output would be named *.drv.
    let mut dotdrv = drv("x.drv", &[], &[]);
    let mut none =
        |p: &str| -> Result<Sha256Hash, DerivationError> { Err(DerivationError::Cycle(p.into())) };
    dotdrv.fill_output_paths(s.store_dir(), &mut none).unwrap();
    assert_refused(
        s.add_text("x.drv.drv", dotdrv.to_aterm().as_bytes(), &[]),
        "output named .drv",
    );
    assert_refused(
        s.add_derivation(&mut dotdrv, &mut DrvHashCache::new()),
        "output named .drv, add_derivation",
    );
    // Not a derivation at all, or not canonical.
    assert_refused(s.add_text("junk.drv", b"hello", &[]), "junk");
    assert_refused(
        s.add_text("victim.drv", format!("{good}\n").as_bytes(), &[]),
        "trailing newline",
    );
    // The real one, as text, is the same path as add_derivation made.
    assert_eq!(
        s.add_text("victim.drv", good.as_bytes(), &[]).unwrap(),
        victim_path
    );
    assert_eq!(
        valid_names(&s),
        BTreeSet::from([
            victim_path.base_name().to_string(),
            extra.base_name().to_string()
        ])
    );
}

#[test]
fn a_drv_with_inputs_is_checked_through_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let (victim_path, _, _) = victim_and_forgery(&s);
    let victim_abs = s.display(&victim_path);
    let mut user = drv("user", &[(&victim_abs, "out")], &[]);
    let mut cache = DrvHashCache::new();
    let mut load = s.derivation_loader();
    user.fill_output_paths(s.store_dir(), &mut cache.lookup(&mut load))
        .unwrap();
    // Right outputs: accepted as text, references computed by the caller.
    let text = user.to_aterm();
    let p = s
        .add_text(
            "user.drv",
            text.as_bytes(),
            std::slice::from_ref(&victim_path),
        )
        .unwrap();
    assert_eq!(s.read_derivation(&p).unwrap(), user);
    // The same with an output path from before the input changed.
    let mut stale = user.clone();
    stale.args.push("x".into());
    assert_refused(
        s.add_text(
            "user.drv",
            stale.to_aterm().as_bytes(),
            std::slice::from_ref(&victim_path),
        ),
        "stale outputs",
    );
    // An input derivation that is not valid here.
    let missing = s
        .store_dir()
        .text_path("gone.drv", &Sha256Hash::digest(b"gone"), &[])
        .unwrap();
    let mut orphan = drv("orphan", &[(&s.display(&missing), "out")], &[]);
    for o in orphan.outputs.values_mut() {
        o.path = victim_abs.clone();
    }
    assert!(s
        .add_text("orphan.drv", orphan.to_aterm().as_bytes(), &[missing])
        .is_err());
}

/// One bundle item, written by hand as an attacker would.
fn bundle_of(items: &[(String, Vec<String>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = ExportWriter::new(&mut out);
    let sign = |_: &Sha256Hash| Ok(b"a signature the check accepts".to_vec());
    for (path, references, nar_bytes) in items {
        let meta = ItemMeta {
            path: path.clone(),
            references: references.clone(),
            deriver: None,
        };
        w.write_item(&meta, |o| o.write_all(nar_bytes), Some(&sign))
            .unwrap();
    }
    w.finish().unwrap();
    out
}

#[test]
fn import_refuses_a_forged_drv_and_keeps_nothing_of_it() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let (_, _, forged) = victim_and_forgery(&s);
    let text = forged.to_aterm();
    let mut as_file = Vec::new();
    nar::dump_bytes(text.as_bytes(), false, &mut as_file).unwrap();
    let text_path = s
        .store_dir()
        .text_path("victim.drv", &Sha256Hash::digest(&text), &[])
        .unwrap();
    let source_path = s
        .store_dir()
        .source_path("victim.drv", &Sha256Hash::digest(&as_file), &[], false)
        .unwrap();
    let mut as_exe = Vec::new();
    nar::dump_bytes(text.as_bytes(), true, &mut as_exe).unwrap();
    let before = entries(&s);
    let cases = [
        ("a forged text path", s.display(&text_path), as_file.clone()),
        (
            "a source path named .drv",
            s.display(&source_path),
            as_file.clone(),
        ),
        ("an executable", s.display(&text_path), as_exe),
    ];
    for (what, path, nar_bytes) in cases {
        let bundle = bundle_of(&[(path, vec![], nar_bytes)]);
        let err = s.import(&mut bundle.as_slice(), &AcceptAll).unwrap_err();
        assert!(
            matches!(err, StoreError::BadDerivation { .. }),
            "{what}: {err}"
        );
        assert_eq!(entries(&s), before, "{what}");
    }
    // A directory named .drv.
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::File::create(tree.join("f"))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let mut tree_nar = Vec::new();
    nar::dump(&tree, &mut tree_nar).unwrap();
    let p = s
        .store_dir()
        .source_path("t.drv", &Sha256Hash::digest(&tree_nar), &[], false)
        .unwrap();
    let bundle = bundle_of(&[(s.display(&p), vec![], tree_nar)]);
    let err = s.import(&mut bundle.as_slice(), &AcceptAll).unwrap_err();
    assert!(matches!(err, StoreError::BadDerivation { .. }), "{err}");
    assert_eq!(entries(&s), before);
}

#[test]
fn a_real_derivation_closure_imports_with_its_outputs_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let a = test_store(dir.path(), "store");
    let (victim_path, _, _) = victim_and_forgery(&a);
    let mut user = drv("user", &[(&a.display(&victim_path), "out")], &[]);
    let p = a
        .add_derivation(&mut user, &mut DrvHashCache::new())
        .unwrap();
    let mut bundle = Vec::new();
    a.export(std::slice::from_ref(&p), true, &mut bundle, None)
        .unwrap();
    fs::rename(dir.path().join("store"), dir.path().join("store-a")).unwrap();
    let b = crate::store::tests::test_store_with_state(dir.path(), "store", "state-b");
    let imported = b.import(&mut bundle.as_slice(), &AcceptAll).unwrap();
    assert_eq!(imported.len(), 2);
    assert_eq!(b.read_derivation(&p).unwrap(), user);
}

#[test]
fn add_nar_refuses_trailing_bytes_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let mut nar_bytes = Vec::new();
    nar::dump_bytes(b"data", false, &mut nar_bytes).unwrap();
    for extra in [&b"x"[..], &[0u8; 8][..], &vec![7u8; 100_000][..]] {
        let mut sent = nar_bytes.clone();
        sent.extend_from_slice(extra);
        let err = s.add_nar("f", &mut sent.as_slice()).unwrap_err();
        assert!(matches!(err, StoreError::TrailingData { .. }), "{err}");
        assert!(
            err.to_string().contains("trailing data after the NAR"),
            "{err}"
        );
        assert!(entries(&s).is_empty(), "{:?}", entries(&s));
        assert!(s.all_valid().unwrap().is_empty());
    }
    let p = s.add_nar("f", &mut nar_bytes.as_slice()).unwrap();
    assert_eq!(fs::read(s.real_path(&p)).unwrap(), b"data");
}

#[test]
fn an_output_named_drv_is_not_registered() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_store(dir.path(), "store");
    let out = s
        .store_dir()
        .output_path("x.drv", "out", &Sha256Hash::digest(b"h"))
        .unwrap();
    let real = s.real_path(&out);
    fs::write(&real, "Derive([],[],[],\"\",\"\",[],[])").unwrap();
    let (nar_hash, nar_size, _) = s.hash_and_scan(&real, &[]).unwrap();
    let info = PathInfo {
        path: out.clone(),
        nar_hash,
        nar_size,
        references: vec![],
        deriver: None,
        registration_time: 1,
        signatures: vec![],
        ca: None,
    };
    let err = s.register_in_place(&[info]).unwrap_err();
    assert!(matches!(err, StoreError::BadDerivation { .. }), "{err}");
    assert!(!s.is_valid(&out).unwrap());
}

/// Derivations added from many threads at once, each on inputs the others
/// add: the check's cache and the database are taken in one order.
#[test]
fn concurrent_derivation_adds_do_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    // Inputs added before the store was opened: their hashes are read
    // (under the cache's lock, from the database) while others commit.
    let base = {
        let s = test_store(dir.path(), "store");
        let (base, _, _) = victim_and_forgery(&s);
        s.display(&base)
    };
    let s = std::sync::Arc::new(test_store(dir.path(), "store"));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            let base = base.clone();
            std::thread::spawn(move || {
                let mut prev = base;
                for i in 0..20 {
                    // Threads share the first links of their chains.
                    let name = format!("n{}-{i}", if i < 5 { 0 } else { t });
                    let mut d = drv(&name, &[(&prev, "out")], &[]);
                    let p = s.add_derivation(&mut d, &mut DrvHashCache::new()).unwrap();
                    // The same as text, as a client would send it.
                    assert_eq!(
                        s.add_derivation_text(&format!("{name}.drv"), &d.to_aterm())
                            .unwrap(),
                        p
                    );
                    prev = s.display(&p);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(s.all_valid().unwrap().len(), 1 + 5 + 8 * 15);
    assert!(s.verify().unwrap().is_empty());
}
