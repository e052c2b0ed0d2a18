//! `ferry store verify`: recompute every valid path's NAR hash and size and
//! compare them with the database.

use std::io;

use ferry_formats::hash::HashingWriter;
use ferry_formats::{nar, StorePath};

use crate::store::{Store, StoreError};

/// One disagreement between the database and the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyProblem {
    pub path: StorePath,
    pub problem: String,
}

impl Store {
    /// Check every valid path; returns the problems found (empty when clean).
    pub fn verify(&self) -> Result<Vec<VerifyProblem>, StoreError> {
        let mut problems = Vec::new();
        for p in self.all_valid()? {
            let info = self.valid_info(&p)?;
            let mut hw = HashingWriter::new(io::sink());
            let problem = match nar::dump(&self.real_path(&p), &mut hw) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Some("missing from the store directory".to_string())
                }
                Err(e) => Some(format!("unreadable: {e}")),
                Ok(_) => {
                    let (hash, size, _) = hw.finish();
                    (hash != info.nar_hash || size != info.nar_size).then(|| {
                        format!(
                            "NAR hash {hash} and size {size} differ from the database's {} and {}",
                            info.nar_hash, info.nar_size
                        )
                    })
                }
            };
            if let Some(problem) = problem {
                problems.push(VerifyProblem { path: p, problem });
            }
        }
        let seen: std::collections::BTreeSet<StorePath> =
            problems.iter().map(|p| p.path.clone()).collect();
        problems.extend(self.verify_derivations(&seen)?);
        Ok(problems)
    }
}
