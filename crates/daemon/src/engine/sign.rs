//! Ferry's outputs signed in Nix's form, so that Nix machines can trust
//! them: with a Nix secret key configured (`secret-key-files`, Nix's
//! `NAME:BASE64` form), each path built (here or on a build machine) gets
//! a Nix signature over its fingerprint `1;PATH;NARHASH;NARSIZE;REFS`, as
//! nix-daemon signs what it builds; QueryPathInfo then returns it.

use std::sync::Arc;

use ferry_protocol::{BuildResult, BuildStatus};
use ferry_store::{Store, StoreError};
use ferry_trust::nix_signature::NixSecretKey;

use super::Engine;

impl Engine {
    /// Sign the outputs of `res` when it built them and a key is set. A
    /// signature that cannot be added is logged; the build stands.
    pub(super) async fn sign_built(self: &Arc<Self>, res: BuildResult) -> BuildResult {
        let keys = self.config.nix_secret_keys.clone();
        if keys.is_empty() || res.status != BuildStatus::Built {
            return res;
        }
        let store = self.store.clone();
        let outputs: Vec<String> = res.outputs.values().cloned().collect();
        let signed = tokio::task::spawn_blocking(move || sign_paths(&store, &keys, &outputs)).await;
        match signed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(drv = %res.drv, "signing its outputs: {e}"),
            Err(e) => tracing::warn!(drv = %res.drv, "signing its outputs: {e}"),
        }
        res
    }
}

/// Add each key's Nix signature to each of `paths` (valid store paths).
pub fn sign_paths(
    store: &Store,
    keys: &[Arc<NixSecretKey>],
    paths: &[String],
) -> Result<(), StoreError> {
    for shown in paths {
        let p = store.parse_path(shown)?;
        let Some(info) = store.path_info(&p)? else {
            continue;
        };
        let nix = crate::nix_daemon::query::to_nix(store, &info);
        let fingerprint = nix
            .fingerprint()
            .map_err(|e| StoreError::Derivation(e.to_string()))?;
        let sigs: Vec<String> = keys.iter().map(|k| k.sign(&fingerprint)).collect();
        store.add_signatures(&p, &sigs)?;
    }
    Ok(())
}
