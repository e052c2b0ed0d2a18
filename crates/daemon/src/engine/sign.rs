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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_formats::StoreDir;

    #[test]
    fn a_signed_path_verifies_over_nix_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(ferry_store::Locations {
            store_dir: StoreDir::new(dir.path().join("store").to_str().unwrap()).unwrap(),
            state_dir: dir.path().join("state"),
            config_dir: dir.path().join("config"),
        })
        .unwrap();
        let dep = store.add_text("dep", b"dep", &[]).unwrap();
        let p = store
            .add_text("t", b"text", std::slice::from_ref(&dep))
            .unwrap();
        let key = Arc::new(NixSecretKey::from_seed("k-1", &[3; 32]));
        sign_paths(&store, std::slice::from_ref(&key), &[store.display(&p)]).unwrap();
        let info = store.path_info(&p).unwrap().unwrap();
        let sig = info
            .signatures
            .iter()
            .find(|s| s.starts_with("k-1:"))
            .unwrap();
        let fingerprint = format!(
            "1;{};{};{};{}",
            store.display(&p),
            crate::nix_daemon::query::to_nix(&store, &info)
                .nar_hash
                .to_typed_nix32(),
            info.nar_size,
            store.display(&dep)
        );
        let public = [key.public()];
        assert!(ferry_trust::nix_signature::verify(
            &public,
            &fingerprint,
            sig
        ));
        // Its Debug form shows the public half only.
        assert_eq!(
            format!("{key:?}"),
            format!("NixSecretKey {{ public: {:?}, .. }}", key.public().render())
        );
    }
}
