//! Stores and build settings for the tests that open a store in-process
//! (build, daemon): a fresh store under a temp directory, and the settings
//! of a daemon that builds without the sandbox (plain `/bin/sh` on this
//! machine).

use std::path::Path;
use std::sync::Arc;

use ferry_build::BuildSettings;
use ferry_formats::StoreDir;
use ferry_store::{Locations, Store};

/// A store under `root`: the store directory `root/store`, its state in
/// `root/state`, its configuration in `root/config`.
pub fn temp_store(root: &Path) -> Arc<Store> {
    temp_store_with_state(root, "state")
}

/// [`temp_store`] with the state directory `root/STATE` (two stores on one
/// store directory, as two daemons would have).
pub fn temp_store_with_state(root: &Path, state: &str) -> Arc<Store> {
    Arc::new(
        Store::open(Locations {
            store_dir: StoreDir::new(root.join("store").to_str().unwrap()).unwrap(),
            state_dir: root.join(state),
            config_dir: root.join("config"),
        })
        .unwrap(),
    )
}

/// The default build settings without the sandbox.
pub fn unsandboxed() -> BuildSettings {
    BuildSettings {
        sandbox: false,
        ..BuildSettings::default()
    }
}
