//! Signatures added to a valid path's record after the fact (Nix's
//! `addSignatures`, what `nix store sign` and the daemon's `AddSignatures`
//! do): merged with those it has, without duplicates, sorted, in one
//! update. The store records them and does not judge them (who may add
//! them is the daemon's rule; what they prove, the importer's).

use std::collections::BTreeSet;

use ferry_formats::StorePath;
use rusqlite::OptionalExtension;

use crate::store::{Store, StoreError};

impl Store {
    /// Add `sigs` to the signatures of the valid path `p`.
    pub fn add_signatures(&self, p: &StorePath, sigs: &[String]) -> Result<(), StoreError> {
        let shown = self.display(p);
        if let Some(bad) = sigs
            .iter()
            .find(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return Err(StoreError::Refused {
                path: shown,
                reason: format!("the signature {bad:?} is empty or holds white space"),
            });
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<Option<String>> = tx
            .query_row(
                "SELECT sigs FROM ValidPaths WHERE path = ?1",
                [&shown],
                |r| r.get(0),
            )
            .optional()?;
        let Some(current) = current else {
            return Err(StoreError::NotValid {
                path: shown,
                store: self.store_dir().to_string(),
            });
        };
        let mut all: BTreeSet<String> = current
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        all.extend(sigs.iter().cloned());
        let joined = all.into_iter().collect::<Vec<_>>().join(" ");
        tx.execute(
            "UPDATE ValidPaths SET sigs = ?1 WHERE path = ?2",
            [&joined, &shown],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Locations;
    use ferry_formats::StoreDir;

    #[test]
    fn signatures_merge_sorted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(Locations {
            store_dir: StoreDir::new(dir.path().join("store").to_str().unwrap()).unwrap(),
            state_dir: dir.path().join("state"),
            config_dir: dir.path().join("config"),
        })
        .unwrap();
        let p = store.add_text("t", b"x", &[]).unwrap();
        store
            .add_signatures(&p, &["k2:b".into(), "k1:a".into()])
            .unwrap();
        store.add_signatures(&p, &["k1:a".into()]).unwrap();
        assert_eq!(
            store.valid_info(&p).unwrap().signatures,
            vec!["k1:a", "k2:b"]
        );
        assert!(store.add_signatures(&p, &["a b".into()]).is_err());
        let missing = store
            .store_dir()
            .text_path("other", &ferry_formats::Sha256Hash::digest(b"y"), &[])
            .unwrap();
        assert!(matches!(
            store.add_signatures(&missing, &["k:c".into()]),
            Err(StoreError::NotValid { .. })
        ));
    }
}
