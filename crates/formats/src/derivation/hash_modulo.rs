//! Nix's `hashDerivationModulo`: the hash of a derivation with its input
//! derivations replaced by their own such hashes, and [`DrvHashCache`],
//! its memo over a store's `.drv` files (iterative: deep graphs cannot
//! overflow a stack).

use std::collections::{HashMap, HashSet};

use super::{Derivation, DerivationError, InputDrvs};
use crate::hash::Sha256Hash;

impl Derivation {
    /// Nix's `hashDerivationModulo` of this derivation as it stands (as read
    /// from a `.drv` file; outputs are not masked). `lookup` gives the same
    /// hash for an input `.drv` path; callers read and memoize (see
    /// [`DrvHashCache`]). It is not called for fixed-output derivations.
    ///
    /// A fixed-output derivation hashes to
    /// `sha256("fixed:out:" ALGO ":" HASH ":" PATH)` from the recorded strings,
    /// which is what Nix computes for any file it wrote (Nix recomputes the
    /// path from the hash; [`Derivation::check_outputs`] verifies the two
    /// agree). Using the recorded strings keeps this infallible and working
    /// for every hash algorithm (old fetchers use sha1 and sha512).
    pub fn hash_modulo<E>(
        &self,
        lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
    ) -> Result<Sha256Hash, E> {
        self.hash_modulo_inner(lookup, false)
    }

    pub(super) fn hash_modulo_inner<E>(
        &self,
        lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
        mask_outputs: bool,
    ) -> Result<Sha256Hash, E> {
        if let Some(out) = self.fixed_output() {
            // Nix hashes the parsed hash in base16, whatever the spelling in
            // the file; an unparsable one never gets paths (see
            // `expected_output_paths`), so its recorded text will do.
            let hash = match self.fixed_output_hash() {
                Some(Ok(f)) => f.hash.to_base16(),
                _ => out.hash.clone(),
            };
            return Ok(Sha256Hash::digest(format!(
                "fixed:out:{}:{}:{}",
                out.hash_algo, hash, out.path
            )));
        }
        let mut inputs = InputDrvs::new();
        for (path, outs) in &self.input_drvs {
            // Inputs whose hashes coincide (e.g. two fetchers of the same
            // fixed output) merge into one entry, as in Nix's map.
            inputs
                .entry(lookup(path)?.to_base16())
                .or_default()
                .extend(outs.iter().cloned());
        }
        Ok(Sha256Hash::digest(
            self.to_aterm_with(&inputs, mask_outputs),
        ))
    }
}

/// Memoized `hashDerivationModulo` over `.drv` files in a store.
///
/// Derivation graphs share most inputs, so without memoization hashing is
/// exponential; and the walk is iterative so that deep graphs (bootstrap
/// chains are hundreds deep) cannot overflow a thread's stack.
#[derive(Debug, Default, Clone)]
pub struct DrvHashCache {
    memo: HashMap<String, Sha256Hash>,
}

impl DrvHashCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached hash of an absolute `.drv` path, if known.
    pub fn get(&self, drv_path: &str) -> Option<Sha256Hash> {
        self.memo.get(drv_path).copied()
    }

    /// Record the hash of a `.drv` computed elsewhere (one just written).
    pub fn insert(&mut self, drv_path: String, hash: Sha256Hash) {
        self.memo.insert(drv_path, hash);
    }

    /// How many hashes are cached.
    pub fn len(&self) -> usize {
        self.memo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.memo.is_empty()
    }

    /// The modulo hash of the `.drv` at `drv_path`, loading it and any inputs
    /// not yet cached with `load` (which reads and parses a `.drv` file).
    pub fn hash_path<E: From<DerivationError>>(
        &mut self,
        drv_path: &str,
        load: &mut dyn FnMut(&str) -> Result<Derivation, E>,
    ) -> Result<Sha256Hash, E> {
        if let Some(h) = self.get(drv_path) {
            return Ok(h);
        }
        let drv = load(drv_path)?;
        self.walk(Some(drv_path.to_string()), drv, load)
    }

    /// The modulo hash of a derivation held in memory (not cached itself).
    pub fn hash_drv<E: From<DerivationError>>(
        &mut self,
        drv: &Derivation,
        load: &mut dyn FnMut(&str) -> Result<Derivation, E>,
    ) -> Result<Sha256Hash, E> {
        self.walk(None, drv.clone(), load)
    }

    /// Look up (loading as needed) an input's hash; for use as the `lookup`
    /// argument of [`Derivation`]'s methods.
    pub fn lookup<'c, E: From<DerivationError>>(
        &'c mut self,
        load: &'c mut dyn FnMut(&str) -> Result<Derivation, E>,
    ) -> impl FnMut(&str) -> Result<Sha256Hash, E> + 'c {
        move |p| self.hash_path(p, load)
    }

    fn walk<E: From<DerivationError>>(
        &mut self,
        root_path: Option<String>,
        root: Derivation,
        load: &mut dyn FnMut(&str) -> Result<Derivation, E>,
    ) -> Result<Sha256Hash, E> {
        let mut on_stack: HashSet<String> = root_path.iter().cloned().collect();
        let mut stack = vec![(root_path, root)];
        loop {
            let Some((path, drv)) = stack.last() else {
                unreachable!("the loop returns when the root is popped")
            };
            // Fixed-output derivations do not depend on their inputs' hashes.
            let pending = if drv.is_fixed_output() {
                None
            } else {
                drv.input_drvs
                    .keys()
                    .find(|p| !self.memo.contains_key(p.as_str()))
                    .cloned()
            };
            match pending {
                Some(input) => {
                    if !on_stack.insert(input.clone()) {
                        return Err(DerivationError::Cycle(input).into());
                    }
                    let d = load(&input)?;
                    stack.push((Some(input), d));
                }
                None => {
                    let memo = &self.memo;
                    let h = drv.hash_modulo(&mut |p: &str| {
                        memo.get(p)
                            .copied()
                            .ok_or_else(|| DerivationError::Cycle(p.to_string()))
                    });
                    let h = h.map_err(E::from)?;
                    if let Some(p) = path {
                        on_stack.remove(p);
                        self.memo.insert(p.clone(), h);
                    }
                    stack.pop();
                    if stack.is_empty() {
                        return Ok(h);
                    }
                }
            }
        }
    }
}

/// Convenience: `hashDerivationModulo` of `drv` with `lookup` for its inputs.
/// Same as [`Derivation::hash_modulo`].
pub fn hash_derivation_modulo<E>(
    drv: &Derivation,
    lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
) -> Result<Sha256Hash, E> {
    drv.hash_modulo(lookup)
}
