//! Derivations in the store: writing a new `.drv` (its output paths
//! computed from its inputs, which are read from the store), reading one,
//! and the rule every registration of a path named `*.drv` goes through.
//!
//! The rule (Nix's `registerValidPaths` with `checkDerivationOutputs`, and
//! stricter): a valid path named `*.drv` is the text path of its contents
//! and references, its contents are a canonical derivation named as the
//! file, its references are exactly its inputs, and its recorded outputs
//! are the ones `hashDerivationModulo` over its input derivations implies.
//! So no request (add-text, add-to-store, import, a build output) can make
//! a path that claims another derivation's outputs.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use ferry_formats::derivation::{self, Derivation, DerivationError, DrvHashCache, MAX_DRV_SIZE};
use ferry_formats::hash::HashingWriter;
use ferry_formats::{nar, Sha256Hash, StorePath};

use crate::db::PathInfo;
use crate::store::{Store, StoreError};

/// Hashes kept for checking new derivations; past this the cache starts
/// over (a daemon's memory stays bounded, under 1 MiB; a miss only costs
/// a read).
const MAX_CACHED_DRV_HASHES: usize = 1 << 12;

/// What checking a new `.drv` found: what registering it records.
pub(crate) struct CheckedDrv {
    pub(crate) outputs: Vec<(String, String)>,
    /// Its own `hashDerivationModulo` (for its dependents' checks).
    pub(crate) hash: Sha256Hash,
}

impl Store {
    /// Read and parse a `.drv` file of this store.
    pub fn read_derivation(&self, p: &StorePath) -> Result<Derivation, StoreError> {
        let shown = self.display(p);
        let bytes = std::fs::read(self.real_path(p))
            .map_err(StoreError::io(format!("reading the derivation {shown}")))?;
        derivation::parse_bytes(&bytes).map_err(|e| StoreError::Derivation(format!("{shown}: {e}")))
    }

    /// A loader for [`DrvHashCache`] that reads input derivations from this
    /// store by absolute path.
    pub fn derivation_loader(&self) -> impl FnMut(&str) -> Result<Derivation, StoreError> + '_ {
        move |abs| self.read_derivation(&self.parse_path(abs)?)
    }

    /// Add a `.drv` received as text (from a client). Its output paths must
    /// be the ones its contents imply, or a derivation could claim
    /// another's outputs: the registration checks them.
    pub fn add_derivation_text(&self, name: &str, text: &str) -> Result<StorePath, StoreError> {
        // Canonical text only: the file written is the one parsed.
        let drv = derivation::parse_canonical(text)
            .map_err(|e| StoreError::Derivation(format!("{name}: {e}")))?;
        let refs = self.input_refs(&drv)?;
        self.add_text_checked(name, text.as_bytes(), &refs, Some(&drv))
    }

    /// Compute the output paths of `drv` (whose outputs may be blank), write
    /// it to the store as `NAME.drv` with its inputs as references, and
    /// record its outputs in `DerivationOutputs`. Every input must be valid.
    pub fn add_derivation(
        &self,
        drv: &mut Derivation,
        cache: &mut DrvHashCache,
    ) -> Result<StorePath, StoreError> {
        let mut load = self.derivation_loader();
        drv.fill_output_paths(self.store_dir(), &mut cache.lookup(&mut load))?;
        let name = drv.name().ok_or(DerivationError::NoName)?.into_owned();
        let refs = self.input_refs(drv)?;
        let text = drv.to_aterm();
        self.add_text_checked(&format!("{name}.drv"), text.as_bytes(), &refs, Some(drv))
    }

    /// A derivation's references: its input sources and derivations.
    fn input_refs(&self, drv: &Derivation) -> Result<Vec<StorePath>, StoreError> {
        let refs: BTreeSet<StorePath> = drv
            .input_srcs
            .iter()
            .chain(drv.input_drvs.keys())
            .map(|p| self.parse_path(p))
            .collect::<Result<_, _>>()?;
        Ok(refs.into_iter().collect())
    }

    /// A name `add_tree` and `add_nar` accept: a valid name not ending in
    /// `.drv` (that name is kept for derivations, which are text paths).
    pub(crate) fn check_source_name(&self, name: &str) -> Result<(), StoreError> {
        ferry_formats::store_path::validate_name(name)?;
        if name.ends_with(".drv") {
            return Err(StoreError::BadDerivation {
                path: name.to_string(),
                reason: "a tree or file added to the store is a source path, and names ending in \
                    .drv are kept for derivations; add a derivation as text (`ferry derivation add`, \
                    or AddText with its ATerm), or give the file another name"
                    .into(),
            });
        }
        Ok(())
    }

    /// The rule for registering `info.path`, a name ending in `.drv`, whose
    /// contents are at `at` (not yet in place). `parsed` is the derivation
    /// when the caller wrote `at` from it as the text path `info.path`.
    pub(crate) fn check_new_derivation(
        &self,
        info: &PathInfo,
        at: &Path,
        parsed: Option<&Derivation>,
    ) -> Result<CheckedDrv, StoreError> {
        let refuse = |reason: String| StoreError::BadDerivation {
            path: self.display(&info.path),
            reason,
        };
        let read;
        let drv = match parsed {
            Some(d) => d,
            None => {
                read = self.read_drv_file(info, at).map_err(refuse)?;
                &read
            }
        };
        self.check_drv_shape(info, drv).map_err(refuse)?;
        let mut cache = self.drv_hashes.lock().unwrap_or_else(|e| e.into_inner());
        let mut load = |abs: &str| -> Result<Derivation, StoreError> {
            let p = self.parse_path(abs)?;
            if !self.is_valid(&p)? {
                return Err(StoreError::NotValid {
                    path: abs.to_string(),
                    store: self.store_dir().to_string(),
                });
            }
            self.read_derivation(&p)
        };
        let mut lookup = cache.lookup(&mut load);
        drv.check_outputs(self.store_dir(), &mut lookup)
            .map_err(|e: StoreError| refuse(e.to_string()))?;
        let hash = drv.hash_modulo(&mut lookup)?;
        Ok(CheckedDrv {
            outputs: drv
                .outputs
                .iter()
                .map(|(n, o)| (n.clone(), o.path.clone()))
                .collect(),
            hash,
        })
    }

    /// Read a valid `.drv` to build it, re-checking what registering it
    /// checked, except its outputs: the caller checks those over the whole
    /// graph with one [`DrvHashCache`]. A path not named `*.drv`, or not
    /// the text path of a derivation, is refused.
    pub fn read_derivation_checked(&self, p: &StorePath) -> Result<Derivation, StoreError> {
        let refuse = |reason: String| StoreError::BadDerivation {
            path: self.display(p),
            reason,
        };
        if !p.is_derivation() {
            return Err(refuse(
                "it is not a derivation (its name does not end in .drv); build the .drv path \
                 `ferry derivation add` printed"
                    .into(),
            ));
        }
        let info = self.valid_info(p)?;
        let drv = self
            .read_drv_file(&info, &self.real_path(p))
            .map_err(refuse)?;
        self.check_drv_shape(&info, &drv).map_err(refuse)?;
        Ok(drv)
    }

    /// The derivation at `at`, if `info.path` is its text path.
    fn read_drv_file(&self, info: &PathInfo, at: &Path) -> Result<Derivation, String> {
        let contents = self.read_text_path(info, at)?;
        std::str::from_utf8(&contents)
            .map_err(|e| e.to_string())
            .and_then(|t| derivation::parse_canonical(t).map_err(|e| e.to_string()))
            .map_err(|e| format!("its contents are not a derivation as Nix writes it: {e}"))
    }

    /// A derivation's file is named after it and references its inputs.
    fn check_drv_shape(&self, info: &PathInfo, drv: &Derivation) -> Result<(), String> {
        let name = drv.name().unwrap_or_default();
        if info.path.name() != format!("{name}.drv") {
            return Err(format!(
                "its file name is {:?} but the derivation's name is {name:?}; a derivation is \
                 stored as NAME.drv",
                info.path.name()
            ));
        }
        if let Some((o, out)) = drv.outputs.iter().find(|(_, o)| o.path.ends_with(".drv")) {
            return Err(format!(
                "its output {o:?} would be {}, and names ending in .drv are kept for \
                 derivations; rename the derivation",
                out.path
            ));
        }
        let inputs = self.input_refs(drv).map_err(|e| e.to_string())?;
        let refs: Vec<StorePath> = info
            .references
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if refs != inputs {
            let list = |v: &[StorePath]| {
                v.iter()
                    .map(|p| self.display(p))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            return Err(format!(
                "its references ({}) are not its input sources and derivations ({})",
                list(&refs),
                list(&inputs)
            ));
        }
        Ok(())
    }

    /// The contents of the regular, non-executable file at `at`, if
    /// `info.path` is the text path of those contents and `info`'s
    /// references, and `info`'s NAR hash and size are those of that file.
    fn read_text_path(&self, info: &PathInfo, at: &Path) -> Result<Vec<u8>, String> {
        let meta = std::fs::symlink_metadata(at).map_err(|e| format!("reading it: {e}"))?;
        if !meta.is_file() || meta.len() > MAX_DRV_SIZE as u64 {
            return Err(format!(
                "it is not a text file of at most {MAX_DRV_SIZE} bytes (a {} of {} bytes); \
                 derivations are added as text (`ferry derivation add`, or AddText)",
                if meta.is_dir() {
                    "directory"
                } else if meta.is_file() {
                    "file"
                } else {
                    "symlink"
                },
                meta.len()
            ));
        }
        let contents = std::fs::read(at).map_err(|e| format!("reading it: {e}"))?;
        let mut hw = HashingWriter::new(std::io::sink());
        nar::dump_bytes(&contents, false, &mut hw).expect("writing to a sink");
        let (nar_hash, nar_size, _) = hw.finish();
        let text_path = self
            .store_dir()
            .text_path(
                info.path.name(),
                &Sha256Hash::digest(&contents),
                &info.references,
            )
            .map_err(|e| e.to_string())?;
        let how = "derivations are added as text (`ferry derivation add`, or AddText)";
        if meta.mode() & 0o111 != 0 {
            return Err(format!(
                "it is an executable file, and a derivation is a text file; {how}"
            ));
        }
        if (nar_hash, nar_size) != (info.nar_hash, info.nar_size) {
            return Err(format!(
                "its contents differ from what was registered (NAR hash {nar_hash}, the \
                 database says {}); run `ferry store verify`",
                info.nar_hash
            ));
        }
        if text_path != info.path {
            return Err(format!(
                "it is not the text path of its contents and references (that would be {}); \
                 {how}",
                self.display(&text_path)
            ));
        }
        Ok(contents)
    }

    /// Every valid path named `*.drv` that breaks the rule (registered
    /// before it, or by another program): for `ferry store verify`. Paths
    /// in `skip` already have a problem (their contents changed).
    pub(crate) fn verify_derivations(
        &self,
        skip: &BTreeSet<StorePath>,
    ) -> Result<Vec<crate::VerifyProblem>, StoreError> {
        let mut problems = Vec::new();
        let mut cache = DrvHashCache::new();
        let mut load = self.derivation_loader();
        for p in self.all_valid()? {
            if !p.is_derivation() || skip.contains(&p) {
                continue;
            }
            let checked = self
                .read_derivation_checked(&p)
                .and_then(|drv| drv.check_outputs(self.store_dir(), &mut cache.lookup(&mut load)));
            if let Err(e) = checked {
                let problem = match e {
                    StoreError::BadDerivation { reason, .. } => reason,
                    e => e.to_string(),
                };
                problems.push(crate::VerifyProblem {
                    path: p,
                    problem: format!(
                        "not a derivation the store would accept: {problem}; it is never built"
                    ),
                });
            }
        }
        Ok(problems)
    }

    /// Keep a newly valid derivation's hash for its dependents' checks.
    pub(crate) fn remember_drv_hash(&self, p: &StorePath, hash: Sha256Hash) {
        let mut cache = self.drv_hashes.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_DRV_HASHES {
            *cache = DrvHashCache::new();
        }
        cache.insert(self.display(p), hash);
    }
}

#[cfg(test)]
mod tests;
