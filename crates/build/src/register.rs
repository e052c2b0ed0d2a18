//! Registering a build's outputs, the last step of a build: each staged
//! output is made canonical where the builder wrote it (a place only the
//! daemon reaches), a fixed output's hash checked, every output hashed and
//! scanned for references there, then all are moved into the store and
//! registered together. Whatever fails removes them, so a retry starts
//! clean. Split from `builder.rs`, which runs the builder.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_formats::StorePath;
use ferry_store::{PathInfo, Store};

use crate::builder::BuildJob;

/// Canonicalise each staged output where it lies (a place only the daemon
/// reaches), check, hash and scan it there, then move them all into the
/// store and register them together. On any failure the outputs are
/// removed and the reason returned.
pub(crate) async fn register_outputs(
    store: &Arc<Store>,
    job: &BuildJob,
    outputs: &BTreeMap<String, StorePath>,
    staged: Vec<(PathBuf, PathBuf)>,
    builder_uid: u32,
) -> Result<(), String> {
    let store = store.clone();
    let mut candidates: Vec<StorePath> = job.input_closure.iter().cloned().collect();
    candidates.extend(outputs.values().cloned());
    let outputs: Vec<StorePath> = outputs.values().cloned().collect();
    let deriver = job.drv_path.clone();
    let drv = job.drv.clone();
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let drv_shown = store.display(&deriver);
        let registered = (|| -> Result<(), String> {
            let trees: Vec<PathBuf> = staged.iter().map(|(at, _)| at.clone()).collect();
            ferry_store::canonicalise_outputs(&trees, builder_uid)
                .map_err(|e| format!("canonicalising the outputs of {drv_shown}: {e}"))?;
            let mut infos = Vec::new();
            for p in &outputs {
                let (real, shown) = (store.real_path(p), store.display(p));
                let Some((at, _)) = staged.iter().find(|(_, to)| *to == real) else {
                    continue;
                };
                let ca = crate::fixed_output::check(&drv, &drv_shown, at, &shown)?;
                let (nar_hash, nar_size, refs) = store
                    .hash_and_scan(at, &candidates)
                    .map_err(|e| format!("output {shown} of {drv_shown}: {e}"))?;
                if ca.is_some() && !refs.is_empty() {
                    return Err(format!(
                        "fixed-output derivation '{drv_shown}': its output refers to {}; a fixed output's path depends on its hash alone, so it cannot refer to other store paths",
                        refs.iter().map(|r| store.display(r)).collect::<Vec<_>>().join(", ")
                    ));
                }
                infos.push((
                    at.clone(),
                    PathInfo {
                    path: p.clone(),
                    nar_hash,
                    nar_size,
                    references: refs.into_iter().collect(),
                    deriver: Some(deriver.clone()),
                    registration_time: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                    signatures: Vec::new(),
                        ca,
                    },
                ));
            }
            store
                .register_staged(&infos)
                .map_err(|e| format!("registering the outputs of {drv_shown}: {e}"))
        })();
        registered.map_err(|mut why| {
            for p in &outputs {
                if let Err(e) = store.remove_invalid(p) {
                    why.push_str(&format!(
                        "; removing {} failed too: {e} (run `ferry store verify --repair`)",
                        store.display(p)
                    ));
                }
            }
            why
        })
    })
    .await
    .expect("registration task panicked")
}
