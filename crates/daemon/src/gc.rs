//! The daemon's garbage collection: the one entry point that requests
//! (`ferry gc`) and automatic collection call.
//!
//! Every operation in progress holds its paths in a temporary roots file
//! of the store (`ferry_store::TempRoots`): a connection holds what its
//! client added, imported, asked to root or is building; each
//! `Engine::build` holds the derivations it builds (and through them their
//! inputs and outputs), on the master as on a build machine; an embedded
//! `ferry build` in another process does the same. The store's collector
//! lock serialises a collection with the adds that root a path, across
//! processes. So `collect` only moves the blocking collection off the
//! async threads.

use std::sync::Arc;

use ferry_store::{GcOptions, GcResult, StoreError};

use crate::engine::Engine;

/// Collect garbage in `engine`'s store with `opts` (its `extra_roots` are
/// added to the temporary roots of every connection and build). Waits for
/// a collection already running, and for adds that hold the collector
/// lock shared.
pub async fn collect(engine: &Arc<Engine>, opts: GcOptions) -> Result<GcResult, StoreError> {
    let store = engine.store().clone();
    let started = std::time::Instant::now();
    let res = tokio::task::spawn_blocking(move || store.collect_garbage(&opts))
        .await
        .map_err(|e| StoreError::Corrupt(format!("the collection panicked: {e}")))?;
    if let Ok(r) = &res {
        tracing::info!(
            paths = r.paths.len(),
            bytes = r.bytes_freed,
            ms = started.elapsed().as_millis() as u64,
            "garbage collection done"
        );
    }
    res
}
