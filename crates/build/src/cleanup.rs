//! A build's outputs go unless the build registered them.
//!
//! Between taking the output locks and registering the outputs, a build
//! can end in many ways: the builder fails, registration fails, or the
//! build's future is dropped (the client went away, the daemon cancelled
//! it). [`OutputsGuard`] holds the locks and, unless the build released it
//! after registering, removes whatever lies at the output paths (never a
//! valid path) before letting the locks go, so that no unregistered output
//! stays in the store and a retry starts clean.

use std::sync::Arc;

use ferry_formats::StorePath;
use ferry_store::{PathLock, Store};

/// The output locks of one build and the duty to clean up its outputs.
pub struct OutputsGuard {
    store: Arc<Store>,
    outputs: Vec<StorePath>,
    locks: Vec<PathLock>,
    armed: bool,
}

impl OutputsGuard {
    pub fn new(store: Arc<Store>, outputs: Vec<StorePath>, locks: Vec<PathLock>) -> OutputsGuard {
        OutputsGuard {
            store,
            outputs,
            locks,
            armed: true,
        }
    }

    /// The outputs are valid (or the build never wrote them): keep them
    /// and release the locks.
    pub fn release(mut self) {
        self.armed = false;
    }
}

impl Drop for OutputsGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let store = self.store.clone();
        let outputs = std::mem::take(&mut self.outputs);
        let locks = std::mem::take(&mut self.locks);
        // Removing a tree blocks: off the async threads when there are any.
        // The locks go only once the outputs are gone.
        let work = move || {
            for p in &outputs {
                if let Err(e) = store.remove_invalid(p) {
                    tracing::warn!(
                        "removing the unfinished output {}: {e} (`ferry store verify --repair` removes it)",
                        store.display(p)
                    );
                }
            }
            drop(locks);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(work)),
            Err(_) => work(),
        }
    }
}
