//! What a master accepts from a build machine, with
//! bundles crafted by hand and signed by the machine's authorized key:
//! only the wanted outputs of the derivation sent, references a build of it
//! could make, a fixed output's declared hash; one bad item and nothing of
//! the bundle remains. And what a build machine accepts from a master: only
//! the paths the import named.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::Arc;

use ferry_daemon::offload::accept::{all_outputs_valid, Told, WantedOutputs};
use ferry_formats::derivation::{self, Derivation, Output};
use ferry_formats::export::{ExportWriter, ItemMeta};
use ferry_formats::{nar, Sha256Hash, StorePath};
use ferry_store::Store;
use ferry_test_support::store::temp_store;
use ferry_trust::{Acl, AclCheck, SecretKey};

/// A /bin/sh derivation with outputs `outputs` (`(name, hashAlgo, hash)`:
/// fixed when hashAlgo is set) reading the sources `srcs`, added to `s`.
fn add_drv(
    s: &Store,
    name: &str,
    outputs: &[(&str, &str, &str)],
    srcs: &[&StorePath],
) -> (StorePath, Derivation) {
    let mut drv = Derivation {
        system: "x86_64-linux".into(),
        builder: "/bin/sh".into(),
        args: vec!["-c".into(), "true".into()],
        ..Default::default()
    };
    for src in srcs {
        drv.input_srcs.insert(s.display(src));
    }
    for (k, v) in [
        ("name", name),
        ("builder", "/bin/sh"),
        ("system", "x86_64-linux"),
    ] {
        drv.env.insert(k.into(), v.into());
    }
    for (o, algo, hash) in outputs {
        drv.env.insert((*o).into(), String::new());
        drv.outputs.insert(
            (*o).into(),
            Output {
                path: String::new(),
                hash_algo: (*algo).into(),
                hash: (*hash).into(),
            },
        );
    }
    let mut cache = derivation::DrvHashCache::new();
    let mut load = s.derivation_loader();
    drv.fill_output_paths(s.store_dir(), &mut cache.lookup(&mut load))
        .unwrap();
    let p = s
        .add_derivation_text(&format!("{name}.drv"), &drv.to_aterm())
        .unwrap();
    (p, drv)
}

/// One item of a crafted bundle: a file of `contents` at `path`.
#[derive(Clone)]
struct Item<'a> {
    path: String,
    contents: &'a str,
    refs: Vec<String>,
}

fn item<'a>(path: &str, contents: &'a str, refs: &[&StorePath], s: &Store) -> Item<'a> {
    Item {
        path: path.to_string(),
        contents,
        refs: refs.iter().map(|r| s.display(r)).collect(),
    }
}

fn bundle(items: &[Item], key: Option<&SecretKey>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ExportWriter::new(Vec::new());
    for (i, it) in items.iter().enumerate() {
        let f = dir.path().join(i.to_string());
        fs::write(&f, it.contents).unwrap();
        let meta = ItemMeta {
            path: it.path.clone(),
            references: it.refs.clone(),
            deriver: None,
        };
        let sign = |d: &Sha256Hash| Ok(ferry_trust::signature::sign(key.unwrap(), d));
        w.write_item(
            &meta,
            |out| nar::dump(&f, out).map(|_| ()),
            key.map(|_| &sign as ferry_store::Signer),
        )
        .unwrap();
    }
    w.finish().unwrap()
}

struct Master {
    _dir: tempfile::TempDir,
    s: Arc<Store>,
    key: SecretKey,
    acl: Acl,
    lib: StorePath,
}

fn master() -> Master {
    let dir = tempfile::tempdir().unwrap();
    let s = temp_store(dir.path());
    let key = SecretKey::generate().unwrap();
    let mut acl = Acl::default();
    acl.authorize(key.public());
    let lib = s.add_text("lib", b"a library", &[]).unwrap();
    Master {
        _dir: dir,
        s,
        key,
        acl,
        lib,
    }
}

impl Master {
    /// Import `data` as the outputs of `(drv_path, drv)` from a machine.
    fn fetch(&self, drv: &(StorePath, Derivation), data: &[u8]) -> Result<(), String> {
        let outputs = outputs_of(&self.s, &drv.1);
        let closure = self.s.closure(std::slice::from_ref(&self.lib)).unwrap();
        let check = WantedOutputs {
            store: &self.s,
            drv_path: &drv.0,
            drv: &drv.1,
            outputs: &outputs,
            input_closure: &closure,
        };
        let acl = AclCheck {
            acl: self.acl.clone(),
        };
        let sent = self
            .s
            .import_expected(&mut &data[..], &acl, &check)
            .map_err(|e| e.to_string())?;
        all_outputs_valid(&self.s, "m1", &self.s.display(&drv.0), &outputs, &sent)
    }

    /// The valid paths, by name.
    fn valid(&self) -> BTreeSet<String> {
        self.s
            .all_valid()
            .unwrap()
            .iter()
            .map(|p| p.base_name().to_string())
            .collect()
    }

    /// The store holds exactly the paths of `before` and `added`: nothing
    /// else valid, no other entry on disk (no temporary one), and verifies.
    fn holds(&self, before: &BTreeSet<String>, added: &[&StorePath]) {
        let mut want = before.clone();
        want.extend(added.iter().map(|p| p.base_name().to_string()));
        assert_eq!(self.valid(), want);
        let on_disk: BTreeSet<String> = fs::read_dir(self.s.real_store_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(on_disk, want);
        assert!(self.s.verify().unwrap().is_empty());
    }
}

fn outputs_of(s: &Store, drv: &Derivation) -> BTreeMap<String, StorePath> {
    drv.outputs
        .iter()
        .map(|(n, o)| (n.clone(), s.parse_path(&o.path).unwrap()))
        .collect()
}

#[test]
fn only_the_wanted_outputs_signed_and_closed_are_imported() {
    let m = master();
    let s = &m.s;
    let d = add_drv(s, "two", &[("out", "", ""), ("dev", "", "")], &[&m.lib]);
    let outs = outputs_of(s, &d.1);
    let (out, dev) = (&outs["out"], &outs["dev"]);
    let (out_s, dev_s) = (s.display(out), s.display(dev));
    let elsewhere = s.add_text("unrelated", b"not an input", &[]).unwrap();
    let planted = format!("{}/{}-planted", s.store_dir().as_str(), "1".repeat(32));
    // The output's name, another hash part: not the path asked for.
    let moved = format!(
        "{}/{}{}",
        s.store_dir().as_str(),
        "2".repeat(32),
        &out_s[out_s.rfind('-').unwrap()..]
    );
    let good = |contents| {
        vec![
            item(&dev_s, "dev", &[], s),
            item(&out_s, contents, &[&m.lib, dev, out], s),
        ]
    };
    let key = Some(&m.key);
    let outs_only = add_drv(s, "one", &[("out", "", "")], &[]);
    let uses_lib = format!("#!/bin/sh\nexec {}/bin/lib\n", s.display(&m.lib));
    let before = m.valid();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // (i) an extra item after the wanted ones.
        (
            bundle(
                &[good("out"), vec![item(&planted, "evil", &[], s)]].concat(),
                key,
            ),
            "not an output of",
        ),
        // (ii) an output under another path.
        (
            bundle(
                &[item(&dev_s, "dev", &[], s), item(&moved, "out", &[], s)],
                key,
            ),
            "not an output of",
        ),
        // A reference no build of it could make.
        (
            bundle(&[item(&out_s, "out", &[&elsewhere], s)], key),
            "cannot refer to",
        ),
        // A reference held but not declared.
        (
            bundle(&[item(&out_s, &uses_lib, &[], s)], key),
            "does not declare",
        ),
        // Not signed, or signed by a key not in the ACL, on the last item.
        (
            {
                // The first bundle without its end mark, then the second.
                let first = bundle(&[item(&dev_s, "dev", &[], s)], key);
                let second = bundle(&[item(&out_s, "out", &[], s)], None);
                [&first[..first.len() - 8], &second[..]].concat()
            },
            "not signed",
        ),
        (
            bundle(&good("out"), Some(&SecretKey::generate().unwrap())),
            "not authorized",
        ),
        // (iv) claims success and sends one output of two.
        (bundle(&[item(&dev_s, "dev", &[], s)], key), "reported"),
    ];
    for (i, (data, why)) in cases.into_iter().enumerate() {
        let err = m.fetch(&d, &data).unwrap_err();
        assert!(err.contains(why), "case {i}: {err}");
        if why == "reported" {
            // What it sent was right, and is kept; what it did not send is
            // named.
            assert!(err.contains(&format!("sent {dev_s}")), "{err}");
            assert!(
                err.contains(&format!("output(s) {out_s} are missing")),
                "{err}"
            );
            m.holds(&before, &[dev]);
        } else {
            m.holds(&before, &[]);
        }
    }
    // Nothing sent at all.
    let err = m.fetch(&outs_only, &bundle(&[], key)).unwrap_err();
    assert!(
        err.contains("reported") && err.contains("sent nothing"),
        "{err}"
    );

    // The honest answer: both outputs, referring to the input and to each
    // other, recorded as made by this derivation.
    m.fetch(&d, &bundle(&good("out"), key)).unwrap();
    m.holds(&before, &[out, dev]);
    let info = s.valid_info(out).unwrap();
    assert_eq!(info.deriver.as_ref(), Some(&d.0));
    assert_eq!(info.ca, None);
    assert_eq!(info.references.len(), 3);
    // A valid output is never overwritten: a second answer is checked and
    // dropped.
    m.fetch(&d, &bundle(&good("forged"), key)).unwrap();
    assert_eq!(fs::read_to_string(s.real_path(out)).unwrap(), "out");
}

#[test]
fn a_fixed_output_must_hold_its_declared_hash() {
    let m = master();
    let s = &m.s;
    let hash = Sha256Hash::digest(b"hello\n").to_base16();
    let d = add_drv(s, "fixed", &[("out", "sha256", &hash)], &[]);
    let out = outputs_of(s, &d.1)["out"].clone();
    let out_s = s.display(&out);
    let before = m.valid();
    // (iii) the wrong contents, signed by the machine's authorized key.
    let err = m
        .fetch(&d, &bundle(&[item(&out_s, "evil\n", &[], s)], Some(&m.key)))
        .unwrap_err();
    assert!(
        err.contains("hash mismatch in fixed-output derivation"),
        "{err}"
    );
    m.holds(&before, &[]);
    // The right contents but a reference: a fixed output has none.
    let err = m
        .fetch(
            &d,
            &bundle(&[item(&out_s, "hello\n", &[&m.lib], s)], Some(&m.key)),
        )
        .unwrap_err();
    assert!(err.contains("cannot refer to other store paths"), "{err}");
    m.holds(&before, &[]);
    m.fetch(
        &d,
        &bundle(&[item(&out_s, "hello\n", &[], s)], Some(&m.key)),
    )
    .unwrap();
    m.holds(&before, &[&out]);
    let ca = s.valid_info(&out).unwrap().ca.unwrap();
    assert!(ca.starts_with("fixed:sha256:"), "{ca}");
}

#[test]
fn a_build_machine_imports_only_the_paths_the_master_named() {
    let m = master();
    let s = &m.s;
    let named = format!("{}/{}-named", s.store_dir().as_str(), "3".repeat(32));
    let smuggled = format!("{}/{}-smuggled", s.store_dir().as_str(), "4".repeat(32));
    let acl = AclCheck { acl: m.acl.clone() };
    let told = Told {
        inner: &acl,
        told: [named.clone()].into(),
    };
    let before = m.valid();
    let data = bundle(
        &[item(&smuggled, "x", &[], s), item(&named, "y", &[], s)],
        Some(&m.key),
    );
    let err = s.import(&mut data.as_slice(), &told).unwrap_err();
    assert!(err.to_string().contains("not one of them"), "{err}");
    m.holds(&before, &[]);
    let data = bundle(&[item(&named, "y", &[], s)], Some(&m.key));
    s.import(&mut data.as_slice(), &told).unwrap();
    // Named but unsigned: the ACL still applies.
    let other = format!("{}/{}-other", s.store_dir().as_str(), "5".repeat(32));
    let told = Told {
        inner: &acl,
        told: [other.clone()].into(),
    };
    let data = bundle(&[item(&other, "z", &[], s)], None);
    let err = s.import(&mut data.as_slice(), &told).unwrap_err();
    assert!(err.to_string().contains("not signed"), "{err}");
}

#[test]
fn offload_test_fetches_back_only_the_item_it_asked_for() {
    use ferry_daemon::offload::accept::TextItem;
    let m = master();
    let s = &m.s;
    let text = "made by m1 for the master (1)\n";
    let want = TextItem::new(s, "ferry-offload-test", text.as_bytes()).unwrap();
    let shown = s.display(&want.path);
    let acl = AclCheck { acl: m.acl.clone() };
    let before = m.valid();
    for (data, why) in [
        (
            bundle(&[item(&shown, "other contents\n", &[], s)], Some(&m.key)),
            "not the contents",
        ),
        (
            bundle(&[item(&shown, text, &[&m.lib], s)], Some(&m.key)),
            "not the contents",
        ),
        (
            bundle(
                &[
                    item(&shown, text, &[], s),
                    item(&s.display(&m.lib).replace("lib", "evil"), "x", &[], s),
                ],
                Some(&m.key),
            ),
            "not the test item",
        ),
    ] {
        let err = s
            .import_expected(&mut data.as_slice(), &acl, &want)
            .unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        m.holds(&before, &[]);
    }
    let data = bundle(&[item(&shown, text, &[], s)], Some(&m.key));
    s.import_expected(&mut data.as_slice(), &acl, &want)
        .unwrap();
    m.holds(&before, &[&want.path]);
    // The same as adding it here.
    assert_eq!(
        s.add_text("ferry-offload-test", text.as_bytes(), &[])
            .unwrap(),
        want.path
    );
    assert!(s
        .valid_info(&want.path)
        .unwrap()
        .ca
        .unwrap()
        .starts_with("text:sha256:"));
}
