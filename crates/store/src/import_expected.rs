//! Importing a bundle of build outputs from another machine, all or
//! nothing: what an offloading master receives from a build
//! machine. Unlike [`Store::import`], which commits item by item (right for
//! `ferry archive --import` of any signed closure), every item here is
//! restored under a temporary name and checked (signature, then the
//! caller's [`ItemCheck`]: is it a wanted output, are its references ones
//! a build could make, does a fixed output hold its declared hash), and
//! only once the whole bundle has passed are the new items moved into
//! place and registered in one transaction. A bundle with any refused item
//! leaves nothing: neither a valid path nor a temporary entry.
//!
//! A path already valid here is never overwritten: its item is checked
//! like the others, then dropped. `.drv` items are refused (a build output
//! is never a derivation's text path, as for local builds).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use ferry_formats::export::ExportReader;
use ferry_formats::{nar, StorePath};

use crate::bundle::{ImportCheck, ImportedItem};
use crate::db::{self, PathInfo};
use crate::fsops;
use crate::lock::PathLock;
use crate::references::RefScanner;
use crate::store::{Store, StoreError, TempPath};

/// The caller's judgement of one item, after its signature passed and
/// before anything is committed.
pub trait ItemCheck {
    /// Paths whose hash parts are searched for in each item's NAR as it
    /// streams in (no second read), as a build's outputs are scanned.
    fn reference_candidates(&self) -> Vec<StorePath> {
        Vec::new()
    }

    /// `info` holds the item's path, references and deriver as the bundle
    /// states them and the NAR hash and size of the bytes read; `tree` is
    /// its restored contents; `found` the candidates its NAR holds. Return
    /// why the item is refused, or adjust `info` (e.g. record `ca`, or the
    /// deriver this store knows).
    fn check_item(
        &self,
        info: &mut PathInfo,
        tree: &Path,
        found: &BTreeSet<StorePath>,
    ) -> Result<(), String>;
}

/// Feeds what is read to a reference scanner.
struct Scanned<'a> {
    r: &'a mut dyn Read,
    scanner: &'a mut RefScanner,
}

impl Read for Scanned<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        self.scanner.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl Store {
    /// Read a bundle and make its items valid together, or none of them:
    /// see the module documentation. The error names the first refused
    /// item and why.
    pub fn import_expected(
        &self,
        r: &mut dyn Read,
        sigs: &dyn ImportCheck,
        check: &dyn ItemCheck,
    ) -> Result<Vec<ImportedItem>, StoreError> {
        let mut reader = ExportReader::new(r);
        let mut staged: Vec<(TempPath, PathInfo)> = Vec::new();
        let candidates = check.reference_candidates();
        loop {
            let temp = self.temp_path();
            let mut scanner = RefScanner::new(&candidates);
            let item = reader.next_item(|nar_stream| {
                let mut scanned = Scanned {
                    r: nar_stream,
                    scanner: &mut scanner,
                };
                nar::restore(&mut scanned, temp.path())
            })?;
            let Some(item) = item else { break };
            let shown = item.meta.path.clone();
            let refuse = |reason: String| StoreError::Refused {
                path: shown.clone(),
                reason,
            };
            let (path, references, deriver) = self.parse_item_meta(&item.meta)?;
            if path.is_derivation() {
                return Err(refuse(
                    "a derivation is never a build output; the bundle is refused".into(),
                ));
            }
            if staged.iter().any(|(_, i)| i.path == path) {
                return Err(refuse("it appears twice in the bundle".into()));
            }
            sigs.check(&shown, &item.signed_digest, item.signature.as_deref())
                .map_err(refuse)?;
            let mut info = PathInfo {
                path,
                nar_hash: item.nar_hash,
                nar_size: item.nar_size,
                references,
                deriver,
                registration_time: Store::now(),
                signatures: Vec::new(),
                ca: None,
            };
            check
                .check_item(&mut info, temp.path(), scanner.found())
                .map_err(refuse)?;
            staged.push((temp, info));
        }
        let paths: Vec<_> = staged.iter().map(|(_, i)| i.path.clone()).collect();
        let _rooted = self.root_in_scope(&paths.iter().collect::<Vec<_>>())?;
        let _locks = self.lock_all(&paths)?;
        let mut done = Vec::new();
        let mut new = Vec::new();
        for (temp, info) in staged {
            let added = !self.is_valid(&info.path)?;
            done.push(ImportedItem {
                path: info.path.clone(),
                added,
            });
            if added {
                new.push((temp, info));
            }
        }
        // Every reference must be valid here or come in the bundle: checked
        // before anything moves (registration would refuse it too, but
        // only after the trees were in place).
        let incoming: BTreeSet<_> = new.iter().map(|(_, i)| i.path.clone()).collect();
        for (_, info) in &new {
            for r in &info.references {
                if !incoming.contains(r) && !self.is_valid(r)? {
                    return Err(StoreError::MissingReference {
                        path: self.display(&info.path),
                        reference: self.display(r),
                    });
                }
            }
        }
        self.commit_all(new)?;
        Ok(done)
    }

    /// Lock every path, never holding some while waiting for another: try
    /// them all; if one is held, let go of all, wait for that one alone,
    /// and start again. (Lockers that take several paths do so in their own
    /// orders; this one never waits while holding, so it cannot deadlock.)
    fn lock_all(&self, paths: &[StorePath]) -> Result<Vec<PathLock>, StoreError> {
        'again: loop {
            let mut locks = Vec::with_capacity(paths.len());
            for p in paths {
                match self.try_lock_path(p)? {
                    Some(l) => locks.push(l),
                    None => {
                        drop(locks);
                        drop(self.lock_path(p)?);
                        continue 'again;
                    }
                }
            }
            return Ok(locks);
        }
    }

    /// Move the checked trees into place and register them in one
    /// transaction; whatever fails removes what was moved (never valid).
    /// The caller holds the paths' locks.
    fn commit_all(&self, new: Vec<(TempPath, PathInfo)>) -> Result<(), StoreError> {
        if new.is_empty() {
            return Ok(());
        }
        let mut new = new;
        let mut moved = Vec::new();
        let result = (|| -> Result<(), StoreError> {
            for (temp, info) in &mut new {
                let shown = self.display(&info.path);
                fsops::make_canonical(temp.path())
                    .map_err(StoreError::io(format!("making {shown} read-only")))?;
                let target = self.real_path(&info.path);
                // Left by a crash between rename and registration: never valid.
                fsops::remove_tree(&target).map_err(StoreError::io(format!(
                    "removing the stale, unregistered {shown}"
                )))?;
                fsops::move_canonical(temp.path(), &target)
                    .map_err(StoreError::io(format!("moving {shown} into place")))?;
                temp.armed = false;
                moved.push(target.clone());
                fsops::sync_tree(&target, &self.real_dir)
                    .map_err(StoreError::io(format!("syncing {shown}")))?;
            }
            fsops::sync_dir(&self.real_dir)
                .map_err(StoreError::io("syncing the store directory"))?;
            let infos: Vec<PathInfo> = new.iter().map(|(_, i)| i.clone()).collect();
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            db::register_all(&tx, &self.loc.store_dir, &infos)?;
            tx.commit()?;
            Ok(())
        })();
        if result.is_err() {
            for target in &moved {
                let _ = fsops::remove_tree(target);
            }
        }
        // The temporary names left (moved away, or never) are removed as
        // the guards drop.
        drop(new);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::AcceptAll;
    use crate::store::tests::test_store;
    use ferry_formats::export::{ExportWriter, ItemMeta};
    use ferry_formats::Sha256Hash;
    use std::fs;

    /// Accepts the paths in the set, records `ca` "checked".
    struct Wanted(BTreeSet<StorePath>);
    impl ItemCheck for Wanted {
        fn check_item(
            &self,
            info: &mut PathInfo,
            tree: &Path,
            _: &BTreeSet<StorePath>,
        ) -> Result<(), String> {
            assert!(tree.exists());
            if !self.0.contains(&info.path) {
                return Err("not wanted".into());
            }
            info.ca = Some("checked".into());
            Ok(())
        }
    }

    /// A bundle of items `(path, contents, references)`, written by hand
    /// (so it can say anything).
    fn bundle(s: &Store, items: &[(&StorePath, &str, &[&StorePath])]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ExportWriter::new(Vec::new());
        for (i, (p, text, refs)) in items.iter().enumerate() {
            let f = dir.path().join(i.to_string());
            fs::write(&f, text).unwrap();
            let meta = ItemMeta {
                path: s.display(p),
                references: refs.iter().map(|r| s.display(r)).collect(),
                deriver: None,
            };
            w.write_item(&meta, |out| nar::dump(&f, out).map(|_| ()), None)
                .unwrap();
        }
        w.finish().unwrap()
    }

    fn path(s: &Store, name: &str) -> StorePath {
        // Hash parts differ by name (its first letter, a nix32 digit).
        let h = name[..1].repeat(32);
        s.parse_path(&format!("{}/{h}-{name}", s.store_dir().as_str()))
            .unwrap()
    }

    /// Nothing but `keep` in the store directory: no temporary entry, no
    /// refused item.
    fn only(s: &Store, keep: &[&StorePath]) {
        let mut names: Vec<String> = fs::read_dir(s.real_store_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut want: Vec<String> = keep.iter().map(|p| p.base_name().to_string()).collect();
        want.sort();
        assert_eq!(names, want);
        assert!(s.verify().unwrap().is_empty());
    }

    #[test]
    fn wanted_items_are_committed_together_with_what_the_check_adds() {
        let dir = tempfile::tempdir().unwrap();
        let s = test_store(dir.path(), "store");
        let (a, b) = (path(&s, "a"), path(&s, "b"));
        // `a` refers to `b`, which comes after it: one transaction.
        let data = bundle(&s, &[(&a, "A", &[&b, &a]), (&b, "B", &[])]);
        let want = Wanted([a.clone(), b.clone()].into());
        let done = s
            .import_expected(&mut data.as_slice(), &AcceptAll, &want)
            .unwrap();
        assert!(done.iter().all(|i| i.added));
        let info = s.valid_info(&a).unwrap();
        assert_eq!(info.references, {
            let mut r = vec![a.clone(), b.clone()];
            r.sort();
            r
        });
        assert_eq!(info.ca.as_deref(), Some("checked"));
        only(&s, &[&a, &b]);
        // Again: already valid, checked, not written.
        let done = s
            .import_expected(&mut data.as_slice(), &AcceptAll, &want)
            .unwrap();
        assert!(done.iter().all(|i| !i.added));
    }

    #[test]
    fn the_candidates_an_item_holds_are_found_as_it_streams_in() {
        struct Scan(Vec<StorePath>, std::cell::RefCell<Vec<BTreeSet<StorePath>>>);
        impl ItemCheck for Scan {
            fn reference_candidates(&self) -> Vec<StorePath> {
                self.0.clone()
            }
            fn check_item(
                &self,
                _: &mut PathInfo,
                _: &Path,
                found: &BTreeSet<StorePath>,
            ) -> Result<(), String> {
                self.1.borrow_mut().push(found.clone());
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let s = test_store(dir.path(), "store");
        let (a, b, c) = (path(&s, "a"), path(&s, "b"), path(&s, "c"));
        // `a` holds b's path (without declaring it), `b` nothing.
        let text = format!("see {}/bin", s.display(&b));
        let data = bundle(&s, &[(&a, &text, &[&b]), (&b, "B", &[])]);
        let scan = Scan(vec![b.clone(), c.clone()], Default::default());
        s.import_expected(&mut data.as_slice(), &AcceptAll, &scan)
            .unwrap();
        assert_eq!(*scan.1.borrow(), vec![[b.clone()].into(), BTreeSet::new()]);
    }

    #[test]
    fn one_refused_item_leaves_nothing_of_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let s = test_store(dir.path(), "store");
        let (a, b, x) = (path(&s, "a"), path(&s, "b"), path(&s, "x"));
        let want = Wanted([a.clone(), b.clone()].into());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            // An extra item, last.
            (
                bundle(&s, &[(&a, "A", &[]), (&b, "B", &[]), (&x, "X", &[])]),
                "not wanted",
            ),
            // The same item twice.
            (bundle(&s, &[(&a, "A", &[]), (&a, "A2", &[])]), "twice"),
            // A reference neither valid here nor in the bundle.
            (bundle(&s, &[(&a, "A", &[]), (&b, "B", &[&x])]), "not valid"),
        ];
        for (data, why) in cases {
            let err = s
                .import_expected(&mut data.as_slice(), &AcceptAll, &want)
                .unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
            only(&s, &[]);
        }
        // Truncated anywhere, even after a whole item.
        let data = bundle(&s, &[(&a, "A", &[]), (&b, "B", &[])]);
        for cut in [20, data.len() / 2, data.len() - 9, data.len() - 1] {
            let err = s
                .import_expected(&mut &data[..cut], &AcceptAll, &want)
                .unwrap_err();
            assert!(err.to_string().contains("truncated"), "{cut}: {err}");
            only(&s, &[]);
        }
        // A refused signature on the second item.
        struct SecondUnsigned(std::cell::Cell<u32>);
        impl ImportCheck for SecondUnsigned {
            fn check(&self, _: &str, _: &Sha256Hash, _: Option<&[u8]>) -> Result<(), String> {
                self.0.set(self.0.get() + 1);
                match self.0.get() {
                    1 => Ok(()),
                    _ => Err("no signature by a key in the ACL".into()),
                }
            }
        }
        let err = s
            .import_expected(&mut data.as_slice(), &SecondUnsigned(0.into()), &want)
            .unwrap_err();
        assert!(err.to_string().contains("ACL"), "{err}");
        only(&s, &[]);
    }

    #[test]
    fn derivations_are_refused_and_valid_paths_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let s = test_store(dir.path(), "store");
        let d = path(&s, "x.drv");
        let data = bundle(&s, &[(&d, "Derive()", &[])]);
        let err = s
            .import_expected(
                &mut data.as_slice(),
                &AcceptAll,
                &Wanted([d.clone()].into()),
            )
            .unwrap_err();
        assert!(err.to_string().contains("never a build output"), "{err}");
        only(&s, &[]);

        let v = s.add_text("v", b"genuine", &[]).unwrap();
        let data = bundle(&s, &[(&v, "forged", &[])]);
        let done = s
            .import_expected(
                &mut data.as_slice(),
                &AcceptAll,
                &Wanted([v.clone()].into()),
            )
            .unwrap();
        assert_eq!(
            done,
            vec![ImportedItem {
                path: v.clone(),
                added: false
            }]
        );
        assert_eq!(fs::read(s.real_path(&v)).unwrap(), b"genuine");
        only(&s, &[&v]);
    }
}
