//! Output paths: those a derivation's contents imply (computed, filled in,
//! or checked against what a `.drv` records, as a daemon must before
//! trusting a client's derivation), and the `.drv` file's own store path.

use std::collections::BTreeMap;

use super::{Derivation, DerivationError, MismatchPlace, OutputMismatch};
use crate::hash::Sha256Hash;
use crate::store_path::{StoreDir, StorePath};

impl Derivation {
    /// The output paths this derivation's contents imply, as Nix computes them
    /// when it creates the derivation (`derivationStrict`): from the hash of
    /// the ATerm with outputs masked, or for a fixed output from its hash.
    pub fn expected_output_paths<E: From<DerivationError>>(
        &self,
        store_dir: &StoreDir,
        lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
    ) -> Result<BTreeMap<String, StorePath>, E> {
        let name = self.name_or_err()?;
        if let Some(fixed) = self.fixed_output_hash() {
            let fixed = fixed?;
            let path = store_dir
                .fixed_output_path_any(
                    &name,
                    fixed.method,
                    fixed.hash.algo().name(),
                    &fixed.hash.to_base16(),
                )
                .map_err(DerivationError::from)?;
            return Ok(BTreeMap::from([("out".to_string(), path)]));
        }
        if let Some((output, _)) = self.outputs.iter().find(|(_, o)| !o.hash_algo.is_empty()) {
            return Err(DerivationError::NotFixedOutput {
                output: output.clone(),
            }
            .into());
        }
        let hash = self.hash_modulo_inner(lookup, true)?;
        self.outputs
            .keys()
            .map(|o| {
                store_dir
                    .output_path(&name, o, &hash)
                    .map(|p| (o.clone(), p))
                    .map_err(|e| DerivationError::from(e).into())
            })
            .collect()
    }

    /// Compute the output paths (see [`Self::expected_output_paths`]) and
    /// write them into `outputs` and into the env variables named after
    /// outputs that exist (structured-attrs derivations have none).
    pub fn fill_output_paths<E: From<DerivationError>>(
        &mut self,
        store_dir: &StoreDir,
        lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
    ) -> Result<(), E> {
        let paths = self.expected_output_paths(store_dir, lookup)?;
        for (name, path) in paths {
            let abs = store_dir.display(&path);
            if let Some(v) = self.env.get_mut(&name) {
                v.clone_from(&abs);
            }
            if let Some(o) = self.outputs.get_mut(&name) {
                o.path = abs;
            }
        }
        Ok(())
    }

    /// Verify that the recorded output paths (and env variables named after
    /// outputs, where present) are the ones the contents imply, reporting every
    /// mismatch. A daemon must do this before trusting a client's `.drv`:
    /// otherwise a derivation could claim anyone's output path.
    pub fn check_outputs<E: From<DerivationError>>(
        &self,
        store_dir: &StoreDir,
        lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
    ) -> Result<(), E> {
        let expected = self.expected_output_paths(store_dir, lookup)?;
        let mut mismatches = Vec::new();
        for (name, path) in &expected {
            let want = store_dir.display(path);
            let recorded = self.outputs.get(name).map(|o| &o.path);
            if let Some(rec) = recorded.filter(|r| **r != want) {
                mismatches.push(OutputMismatch {
                    output: name.clone(),
                    place: MismatchPlace::OutputPath,
                    recorded: rec.clone(),
                    expected: want.clone(),
                });
            }
            if let Some(rec) = self.env.get(name).filter(|r| **r != want) {
                mismatches.push(OutputMismatch {
                    output: name.clone(),
                    place: MismatchPlace::EnvVar,
                    recorded: rec.clone(),
                    expected: want,
                });
            }
        }
        if mismatches.is_empty() {
            Ok(())
        } else {
            Err(DerivationError::OutputMismatch {
                name: self.name().unwrap_or_default().into_owned(),
                mismatches,
            }
            .into())
        }
    }

    /// The `.drv` file's own store path: a text path named `NAME.drv` whose
    /// references are the input sources and input derivations.
    pub fn drv_path(&self, store_dir: &StoreDir, name: &str) -> Result<StorePath, DerivationError> {
        let refs = self
            .input_srcs
            .iter()
            .chain(self.input_drvs.keys())
            .map(|p| store_dir.parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let contents = Sha256Hash::digest(self.to_aterm());
        Ok(store_dir.text_path(&format!("{name}.drv"), &contents, &refs)?)
    }
}
