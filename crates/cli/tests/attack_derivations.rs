//! Attacks on the promise "a store path is used as a derivation only if it
//! is a valid text path named *.drv whose recorded outputs are the ones its
//! contents imply", run as an unprivileged local user through a root
//! daemon: forged `.drv`s by every request that can carry one (add-text
//! under .drv and other names, add-to-store of a file or tree named .drv,
//! import of a signed bundle), and builds of paths that are not
//! derivations. Each test asserts the invariant, not a message: the
//! victim's output path stays free until root builds the victim, which then
//! yields what its builder writes, and `ferry store verify` is clean.
//! Also: add-to-store refuses trailing bytes after the NAR and adds nothing.

use ferry_test_support as support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use ferry_formats::derivation::{self, Derivation};
use ferry_formats::export::{ExportWriter, ItemMeta};
use ferry_formats::{nar, Sha256Hash, StoreDir};
use ferry_protocol::{BuildOptions, BuildStatus};
use support::attacker::{SharedDaemon, User};
use support::prerequisites;

fn nar_of_file(data: &[u8], executable: bool) -> Vec<u8> {
    let mut v = Vec::new();
    nar::dump_bytes(data, executable, &mut v).unwrap();
    v
}

fn nar_of_tree(dir: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    nar::dump(dir, &mut v).unwrap();
    v
}

/// Everything in the store directory, valid or not.
fn store_entries(d: &SharedDaemon) -> BTreeSet<String> {
    fs::read_dir(&d.store)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// A bundle of hand-made items, each signed with `key`.
fn signed_bundle(key: &ferry_trust::SecretKey, items: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = ExportWriter::new(&mut out);
    let sign = |d: &Sha256Hash| Ok(ferry_trust::signature::sign(key, d));
    for (path, nar_bytes) in items {
        let meta = ItemMeta {
            path: path.clone(),
            references: vec![],
            deriver: None,
        };
        w.write_item(&meta, |o| o.write_all(nar_bytes), Some(&sign))
            .unwrap();
    }
    w.finish().unwrap();
    out
}

/// The victim's derivation, written by root, and a forgery of it: another
/// builder recording the victim's output paths.
fn victim_and_forgery(d: &SharedDaemon) -> (String, Derivation, String) {
    let victim_drv = d.add_drv(None, "victim", "echo victim > $out");
    let victim = derivation::parse(&fs::read_to_string(&victim_drv).unwrap()).unwrap();
    let mut forged = victim.clone();
    *forged.args.last_mut().unwrap() = "echo evil > $out".into();
    assert_ne!(forged.to_aterm(), victim.to_aterm());
    (victim_drv, victim, forged.to_aterm())
}

#[test]
fn forged_derivations_never_take_the_victims_outputs() {
    if !prerequisites(&["root"]) {
        return;
    }
    let attacker = User::attacker();
    let d = SharedDaemon::start(&[]);
    let store_dir = StoreDir::new(d.store.to_str().unwrap()).unwrap();
    let (victim_drv, victim, forged) = victim_and_forgery(&d);
    let victim_out = victim.outputs["out"].path.clone();

    // A master whose key the daemon trusts (as a build machine trusts its
    // master), whose signature the attacker got on a forged bundle.
    let master = ferry_trust::SecretKey::generate().unwrap();
    let mut acl = ferry_trust::Acl::load(&d.config).unwrap();
    acl.authorize(master.public());
    acl.save(&d.config).unwrap();

    let text_path = |name: &str, text: &str| {
        store_dir.display(
            &store_dir
                .text_path(name, &Sha256Hash::digest(text), &[])
                .unwrap(),
        )
    };
    let source_path = |name: &str, nar_bytes: &[u8]| {
        store_dir.display(
            &store_dir
                .source_path(name, &Sha256Hash::digest(nar_bytes), &[], false)
                .unwrap(),
        )
    };
    let tree = d.dir().join("attacker-tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("victim.drv"), &forged).unwrap();
    let as_file = nar_of_file(forged.as_bytes(), false);
    let as_exe = nar_of_file(forged.as_bytes(), true);
    let as_tree = nar_of_tree(&tree);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut targets: Vec<String> = Vec::new();
    rt.block_on(async {
        let mut c = d.client_as(&attacker).await.unwrap();
        // add-text of the forgery as a .drv, with and without references.
        for refs in [vec![], vec![victim_drv.clone()]] {
            match c.add_text("victim.drv", &forged, refs).await {
                Ok(p) => targets.push(p),
                Err(e) => eprintln!("add-text victim.drv: {e}"),
            }
        }
        targets.push(text_path("victim.drv", &forged));
        // add-text under names that are not .drv.
        for name in ["victim", "victim.drv.txt", "victim-drv", "drv"] {
            if let Ok(p) = c.add_text(name, &forged, vec![]).await {
                targets.push(p);
            }
            targets.push(text_path(name, &forged));
        }
        // add-to-store of a file, an executable and a tree named .drv.
        for (name, nar_bytes) in [
            ("victim.drv", &as_file),
            ("victim.drv", &as_exe),
            ("attacker.drv", &as_tree),
        ] {
            match c.add_to_store(name, &mut nar_bytes.as_slice()).await {
                Ok(p) => targets.push(p),
                Err(e) => eprintln!("add-to-store {name}: {e}"),
            }
            targets.push(source_path(name, nar_bytes));
        }
        // import of a signed bundle holding the forgery as a text path, as
        // a source path, as an executable, and as a tree.
        for (path, nar_bytes) in [
            (text_path("victim.drv", &forged), &as_file),
            (source_path("victim.drv", &as_file), &as_file),
            (text_path("victim.drv", &forged), &as_exe),
            (source_path("attacker.drv", &as_tree), &as_tree),
        ] {
            let mut c = d.client_as(&attacker).await.unwrap();
            let bundle = signed_bundle(&master, &[(path.clone(), nar_bytes.clone())]);
            match c.import(&mut bundle.as_slice()).await {
                Ok(paths) => targets.extend(paths),
                Err(e) => eprintln!("import {path}: {e}"),
            }
            targets.push(path);
        }
        // Paths that are not derivations: the victim's output, its
        // derivation's text under another name, a source.
        targets.push(victim_out.clone());
        // Build each, on a fresh connection (a refusal may close one).
        for t in &targets {
            let mut c = d.client_as(&attacker).await.unwrap();
            if let Ok(results) = c
                .build(vec![t.clone()], BuildOptions::default(), |_| {})
                .await
            {
                for r in results {
                    eprintln!(
                        "build {t}: {:?} {}",
                        r.status,
                        r.error.as_deref().unwrap_or("")
                    );
                    assert!(
                        !matches!(r.status, BuildStatus::Built | BuildStatus::AlreadyValid),
                        "{t} was built: {r:?}{}",
                        d.log()
                    );
                }
            }
            assert!(
                !Path::new(&victim_out).exists(),
                "building {t} wrote the victim's output{}",
                d.log()
            );
        }
    });
    // No valid path named *.drv but the victim's.
    let out = support::run_timeout(&mut d.ferry(&["store", "verify"]), 120);
    assert!(out.status.success());
    for e in store_entries(&d) {
        if e.ends_with(".drv") {
            assert_eq!(
                d.store.join(&e).to_str().unwrap(),
                victim_drv,
                "a .drv other than the victim's is in the store{}",
                d.log()
            );
        }
    }
    // Root builds the victim and gets what its builder writes.
    let out = d.build_as_root(&victim_drv);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), victim_out);
    assert_eq!(fs::read_to_string(&victim_out).unwrap(), "victim\n");
    d.assert_verify_clean();
}

#[test]
fn add_to_store_refuses_trailing_bytes_and_adds_nothing() {
    if !prerequisites(&["root"]) {
        return;
    }
    let attacker = User::attacker();
    let d = SharedDaemon::start(&[]);
    let store_dir = StoreDir::new(d.store.to_str().unwrap()).unwrap();
    let payload = nar_of_file(b"payload\n", false);
    let want = store_dir.display(
        &store_dir
            .source_path("payload", &Sha256Hash::digest(&payload), &[], false)
            .unwrap(),
    );
    let before = store_entries(&d);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let second = nar_of_file(b"second", true);
        for extra in [
            &b"x"[..],
            &[0u8; 8][..],
            &second[..],
            &vec![1u8; 1 << 20][..],
        ] {
            let mut c = d.client_as(&attacker).await.unwrap();
            let mut sent = payload.clone();
            sent.extend_from_slice(extra);
            let res = c.add_to_store("payload", &mut sent.as_slice()).await;
            assert!(res.is_err(), "accepted with {} trailing bytes", extra.len());
            // The connection stays usable, and nothing was added.
            assert!(c.query_valid(vec![want.clone()]).await.unwrap().is_empty());
            assert_eq!(store_entries(&d), before);
        }
        // The same NAR alone is added.
        let mut c = d.client_as(&attacker).await.unwrap();
        let p = c
            .add_to_store("payload", &mut payload.as_slice())
            .await
            .unwrap();
        assert_eq!(p, want);
    });
    assert_eq!(fs::read_to_string(&want).unwrap(), "payload\n");
    d.assert_verify_clean();
}
