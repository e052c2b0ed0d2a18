//! Export bundles to and from the store: dependencies first on the way out;
//! on the way in, each item restored under a temporary name, checked, and
//! only then committed, so a bad or truncated bundle leaves nothing behind.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use ferry_formats::export::{ExportReader, ExportWriter, ItemMeta, Signer};
use ferry_formats::{nar, Sha256Hash, StorePath};

use crate::db::PathInfo;
use crate::store::{Store, StoreError};

/// What an import checks before it commits an item: signatures and trust,
/// supplied by the caller (`ferry-trust`). The store itself checks the NAR,
/// the paths and the references.
pub trait ImportCheck {
    /// `signed_digest` covers the NAR through the deriver; `signature` is
    /// the raw signature slot. Return the reason to refuse, if any.
    fn check(
        &self,
        path: &str,
        signed_digest: &Sha256Hash,
        signature: Option<&[u8]>,
    ) -> Result<(), String>;
}

/// Accepts every item, signed or not: for trusted local transfers and tests.
pub struct AcceptAll;

impl ImportCheck for AcceptAll {
    fn check(&self, _: &str, _: &Sha256Hash, _: Option<&[u8]>) -> Result<(), String> {
        Ok(())
    }
}

/// One item an import went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedItem {
    pub path: StorePath,
    /// False when the path was already valid here (its bytes were read and
    /// checked but not written).
    pub added: bool,
}

impl Store {
    /// Write a bundle of `paths` (with `recursive`, their whole closure),
    /// dependencies first. Each NAR is checked against the database as it
    /// streams out.
    pub fn export(
        &self,
        paths: &[StorePath],
        recursive: bool,
        w: &mut dyn Write,
        sign: Option<Signer>,
    ) -> Result<Vec<StorePath>, StoreError> {
        let set: BTreeSet<StorePath> = if recursive {
            self.closure(paths)?
        } else {
            paths.iter().cloned().collect()
        };
        let order = self.topo_sort(&set)?;
        let mut writer = ExportWriter::new(w);
        for p in &order {
            let info = self.valid_info(p)?;
            let meta = ItemMeta {
                path: self.display(p),
                references: info.references.iter().map(|r| self.display(r)).collect(),
                deriver: info.deriver.as_ref().map(|d| self.display(d)),
            };
            // The NAR is checked against the database before its metadata
            // goes out (as `dump_path` does), with the hash the writer
            // computes anyway for the signature: one SHA-256 pass, not two.
            let real = self.real_path(p);
            let (mut dump_failure, mut check_failure) = (None, None);
            let written = writer.write_item_checked(
                &meta,
                |out| {
                    nar::dump(&real, out).map(|_| ()).map_err(|e| {
                        let err = StoreError::io(format!("reading {}", self.display(p)))(e);
                        let msg = err.to_string();
                        dump_failure = Some(err);
                        std::io::Error::other(msg)
                    })
                },
                |hash, size| {
                    if *hash == info.nar_hash && size == info.nar_size {
                        return Ok(());
                    }
                    let err = StoreError::HashMismatch {
                        path: self.display(p),
                        expected: format!("{} ({} bytes)", info.nar_hash, info.nar_size),
                        found: format!("{hash} ({size} bytes)"),
                    };
                    let msg = err.to_string();
                    check_failure = Some(err);
                    Err(std::io::Error::other(msg))
                },
                sign,
            );
            if let Some(e) = dump_failure.or(check_failure) {
                return Err(e);
            }
            written.map_err(StoreError::io("writing the bundle"))?;
        }
        writer
            .finish()
            .map_err(StoreError::io("writing the bundle"))?;
        Ok(order)
    }

    /// An item's path, references (sorted, once each) and deriver, parsed
    /// in this store's directory.
    pub(crate) fn parse_item_meta(
        &self,
        meta: &ItemMeta,
    ) -> Result<(StorePath, Vec<StorePath>, Option<StorePath>), StoreError> {
        let refuse = |reason: String| StoreError::Refused {
            path: meta.path.clone(),
            reason,
        };
        let path = self.parse_path(&meta.path).map_err(|e| {
            refuse(format!(
                "{e} (both stores must use the same store directory)"
            ))
        })?;
        let mut references = meta
            .references
            .iter()
            .map(|r| self.parse_path(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refuse(format!("bad reference: {e}")))?;
        references.sort();
        references.dedup();
        let deriver = meta
            .deriver
            .as_deref()
            .map(|d| self.parse_path(d))
            .transpose()
            .map_err(|e| refuse(format!("bad deriver: {e}")))?;
        Ok((path, references, deriver))
    }

    /// Read a bundle and make its items valid. Every item is restored under
    /// a temporary name, its metadata and references checked, `check`
    /// consulted, and only then committed; the first failure stops the
    /// import, removes the unfinished item and names it in the error.
    pub fn import(
        &self,
        r: &mut dyn Read,
        check: &dyn ImportCheck,
    ) -> Result<Vec<ImportedItem>, StoreError> {
        let mut reader = ExportReader::new(r);
        let mut done = Vec::new();
        loop {
            let temp = self.temp_path();
            let item = reader.next_item(|nar_stream| nar::restore(nar_stream, temp.path()))?;
            let Some(item) = item else { break };
            let refuse = |reason: String| StoreError::Refused {
                path: item.meta.path.clone(),
                reason,
            };
            let (path, references, deriver) = self.parse_item_meta(&item.meta)?;
            check
                .check(
                    &item.meta.path,
                    &item.signed_digest,
                    item.signature.as_deref(),
                )
                .map_err(refuse)?;
            let _rooted = self.root_in_scope(&[&path])?;
            let lock = self.lock_path(&path)?;
            if self.is_valid(&path)? {
                done.push(ImportedItem { path, added: false });
                continue;
            }
            let info = PathInfo {
                path: path.clone(),
                nar_hash: item.nar_hash,
                nar_size: item.nar_size,
                references,
                deriver,
                registration_time: Store::now(),
                signatures: Vec::new(),
                ca: None,
            };
            self.commit(temp, &info, &lock)?;
            done.push(ImportedItem { path, added: true });
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{test_store, test_store_with_state};
    use std::fs;

    #[test]
    fn export_import_between_stores_preserves_everything() {
        let dir = tempfile::tempdir().unwrap();
        let a = test_store(dir.path(), "store");
        let src = dir.path().join("tree");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), "contents").unwrap();
        let t = a.add_tree(&src, "tree").unwrap();
        let x = a
            .add_text("x", a.display(&t).as_bytes(), std::slice::from_ref(&t))
            .unwrap();
        let mut bundle = Vec::new();
        let order = a
            .export(std::slice::from_ref(&x), true, &mut bundle, None)
            .unwrap();
        assert_eq!(order, vec![t.clone(), x.clone()]);

        // Same store directory, separate database and state.
        fs::rename(dir.path().join("store"), dir.path().join("store-a")).unwrap();
        let b = test_store_with_state(dir.path(), "store", "state-b");
        let imported = b.import(&mut bundle.as_slice(), &AcceptAll).unwrap();
        assert_eq!(imported.len(), 2);
        for p in [&t, &x] {
            let (ia, ib) = (a.valid_info(p).unwrap(), b.valid_info(p).unwrap());
            assert_eq!(
                (ia.nar_hash, ia.nar_size, ia.references),
                (ib.nar_hash, ib.nar_size, ib.references)
            );
        }
        assert!(b.verify().unwrap().is_empty());
        // Importing again adds nothing.
        assert!(b
            .import(&mut bundle.as_slice(), &AcceptAll)
            .unwrap()
            .iter()
            .all(|i| !i.added));
    }

    #[test]
    fn exporting_a_path_changed_on_disk_fails_before_its_metadata() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = test_store(dir.path(), "store");
        let src = dir.path().join("tree");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), "contents").unwrap();
        let t = a.add_tree(&src, "tree").unwrap();
        let f = a.real_path(&t).join("f");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&f, "CONTENTS").unwrap();
        let mut bundle = Vec::new();
        let err = a
            .export(std::slice::from_ref(&t), false, &mut bundle, None)
            .unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { .. }), "{err}");
        // The mark and the NAR went out, nothing after it: no "NIXE", so an
        // importer sees a truncated item.
        let mut nar_bytes = Vec::new();
        nar::dump(&a.real_path(&t), &mut nar_bytes).unwrap();
        assert_eq!(bundle.len(), 8 + nar_bytes.len());
        assert_eq!(&bundle[8..], &nar_bytes[..]);
    }

    #[test]
    fn a_truncated_or_refused_bundle_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let a = test_store(dir.path(), "store");
        let p = a.add_text("big", &vec![b'x'; 100_000], &[]).unwrap();
        let mut bundle = Vec::new();
        a.export(std::slice::from_ref(&p), false, &mut bundle, None)
            .unwrap();
        fs::rename(dir.path().join("store"), dir.path().join("store-a")).unwrap();
        let b = test_store_with_state(dir.path(), "store", "state-b");
        for cut in [9, 1000, 50_000, bundle.len() - 9] {
            let err = b.import(&mut &bundle[..cut], &AcceptAll).unwrap_err();
            assert!(err.to_string().contains("truncated"), "{err}");
        }
        struct Refuse;
        impl ImportCheck for Refuse {
            fn check(&self, _: &str, _: &Sha256Hash, sig: Option<&[u8]>) -> Result<(), String> {
                assert!(sig.is_none());
                Err("unsigned".into())
            }
        }
        let err = b.import(&mut bundle.as_slice(), &Refuse).unwrap_err();
        assert!(err.to_string().contains("unsigned"), "{err}");
        assert!(b.all_valid().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("store")).unwrap().count(), 0);
    }
}
