//! Derivations are checked wherever they come from: before the engine
//! plans a build (of a client's request, in embedded mode, or on a build
//! machine that received the `.drv` by import), every `.drv` of the graph
//! is re-read and re-checked, so that no build starts from one whose
//! recorded outputs are not the ones its contents imply.
//!
//! The store refuses such a `.drv` when it is registered; this re-check
//! also covers rows written before that rule, or by another program on the
//! same database. The file checks (a text path of its contents and
//! references, named after the derivation) are
//! [`Store::read_derivation_checked`]; the outputs are checked here, over
//! the whole graph with one memo of `hashDerivationModulo` per plan.

use std::collections::HashMap;

use ferry_formats::derivation::{Derivation, DrvHashCache};
use ferry_formats::StorePath;
use ferry_store::{Store, StoreError};

/// Check the recorded outputs of every derivation in `drvs` (parsed by
/// [`Store::read_derivation_checked`]). Their inputs are taken from `drvs`
/// when there, else read from the store (registered, so checked then);
/// each is hashed once.
pub fn check_outputs<'a>(
    store: &Store,
    drvs: impl IntoIterator<Item = (&'a StorePath, &'a Derivation)>,
) -> Result<(), StoreError> {
    let drvs: Vec<(&StorePath, &Derivation)> = drvs.into_iter().collect();
    let by_path: HashMap<String, &Derivation> =
        drvs.iter().map(|(p, d)| (store.display(p), *d)).collect();
    let mut cache = DrvHashCache::new();
    let mut load = |abs: &str| -> Result<Derivation, StoreError> {
        match by_path.get(abs) {
            Some(d) => Ok((*d).clone()),
            // Below a derivation whose outputs are valid (nothing of this
            // plan builds from it): only its hash is needed.
            None => store.read_derivation(&store.parse_path(abs)?),
        }
    };
    for (p, drv) in &drvs {
        drv.check_outputs(store.store_dir(), &mut cache.lookup(&mut load))
            .map_err(|e: StoreError| StoreError::BadDerivation {
                path: store.display(p),
                reason: format!(
                    "{e}; it was registered without the store's checks (by an older Ferry or \
                     another program) and is never built: build the derivation as \
                     `ferry derivation add` writes it"
                ),
            })?;
    }
    Ok(())
}
