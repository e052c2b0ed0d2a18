//! What a running build holds and gives back however it ends (built,
//! failed, or cancelled with its client gone): its derivation's
//! in-process lock entry, its builder number, its place in the count of
//! builds running.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use ferry_formats::StorePath;

use super::Engine;

/// Drops a derivation's in-process lock from `Engine::building` once no
/// other task holds or waits for it (declared before the lock's `Arc`, so
/// it runs after that is dropped): otherwise the map would keep an entry
/// for every derivation the daemon ever built.
pub(super) struct ForgetWhenDone<'a> {
    pub(super) engine: &'a Engine,
    pub(super) p: &'a StorePath,
}

impl Drop for ForgetWhenDone<'_> {
    fn drop(&mut self) {
        let mut building = self
            .engine
            .building
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if building
            .get(self.p)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            building.remove(self.p);
        }
    }
}

/// Returns a builder number to the free ones.
pub(super) struct BuilderGuard<'a> {
    pub(super) engine: &'a Engine,
    pub(super) builder: u32,
}

impl Drop for BuilderGuard<'_> {
    fn drop(&mut self) {
        self.engine
            .free_builders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.builder);
    }
}

/// One builder counted in [`Engine::builds_running`] while it lives: the
/// count goes down however the build ends, a cancelled one (its client
/// gone) included.
pub(super) struct Running<'a>(&'a AtomicU32);

impl<'a> Running<'a> {
    pub(super) fn new(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Running(count)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
