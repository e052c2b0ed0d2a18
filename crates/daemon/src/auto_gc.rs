//! Automatic garbage collection, Nix's `min-free` / `max-free`: when free
//! space on the store's file system drops under `min-free`, the daemon
//! collects until `max-free` is free, so a build machine (or a master
//! fetching outputs) keeps working unattended.
//!
//! Checked when a build or an import starts ([`check`], which tells the
//! build's client) and every [`CHECK_EVERY`] ([`start`], idle or not: see
//! there); one collection at a time, through the daemon's one entry point
//! ([`crate::gc::collect`]), so what running operations hold stays rooted.
//! Off unless `min_free` is set.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_store::GcAction;

use crate::engine::Engine;

/// How often free space is read.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// After a collection that left free space under `min-free` (nothing more
/// was dead, or the store is smaller than `min-free`), the next automatic
/// one waits this long: no collection (and log line) every second for
/// nothing.
pub const RETRY_AFTER_SHORT: Duration = Duration::from_secs(30);

/// The engine's automatic collection state.
#[derive(Default)]
pub struct AutoGc {
    /// A collection started here is running.
    collecting: AtomicBool,
    /// Collections started here so far.
    runs: AtomicU32,
    /// No automatic collection before this (see [`RETRY_AFTER_SHORT`]).
    not_before: std::sync::Mutex<Option<Instant>>,
}

impl AutoGc {
    /// Automatic collections started since the daemon started.
    pub fn runs(&self) -> u32 {
        self.runs.load(Ordering::Relaxed)
    }

    /// An automatic collection is running.
    pub fn collecting(&self) -> bool {
        self.collecting.load(Ordering::Acquire)
    }
}

/// Free bytes on the store's file system.
fn free(engine: &Engine) -> u64 {
    crate::machine_info::free_bytes(engine.store().real_store_dir())
}

/// Start a collection if `min-free` is set, free space is under it and
/// none runs; returns what to tell the client whose operation triggered
/// it. The collection runs in the background until `max-free` is free (or
/// nothing dead is left).
pub fn check(engine: &Arc<Engine>) -> Option<String> {
    let min_free = engine.config().min_free?;
    let max_free = engine.config().max_free.unwrap_or(u64::MAX).max(min_free);
    let state = engine.auto_gc();
    let before = free(engine);
    if before >= min_free {
        return None;
    }
    let waiting = |s: &AutoGc| {
        s.not_before
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t)
    };
    if waiting(state) || state.collecting.swap(true, Ordering::AcqRel) {
        return None;
    }
    state.runs.fetch_add(1, Ordering::Relaxed);
    let msg = format!(
        "ferry: free space on the store's file system is {} MiB, under min-free {} MiB: collecting garbage until {} free",
        before >> 20,
        min_free >> 20,
        if max_free == u64::MAX { "nothing dead is left".to_string() } else { format!("{} MiB are", max_free >> 20) }
    );
    tracing::info!("{msg}");
    let engine = engine.clone();
    tokio::spawn(async move {
        // `None` (max-free unset): everything dead.
        let max_freed = (max_free != u64::MAX).then(|| max_free.saturating_sub(before));
        let opts = crate::gc::options(&engine, GcAction::DeleteDead { max_freed });
        match crate::gc::collect(&engine, opts).await {
            Ok(r) => tracing::info!(
                paths = r.deleted,
                freed_mib = r.bytes_freed >> 20,
                free_mib = free(&engine) >> 20,
                "automatic garbage collection done"
            ),
            Err(e) => tracing::warn!("automatic garbage collection failed: {e}"),
        }
        let after = free(&engine);
        if after < min_free {
            tracing::warn!(
                "free space is still {} MiB, under min-free {} MiB: nothing more is dead; next automatic collection in {} s at the earliest",
                after >> 20,
                min_free >> 20,
                RETRY_AFTER_SHORT.as_secs()
            );
            *engine
                .auto_gc()
                .not_before
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + RETRY_AFTER_SHORT);
        }
        engine.auto_gc().collecting.store(false, Ordering::Release);
    });
    Some(msg)
}

/// Check every [`CHECK_EVERY`] (no task when `min-free` is not set), idle
/// or not: unlike Nix, whose builds alone see free space, a Ferry master
/// passes over a build machine with too little free space, so an idle
/// machine under `min-free` would never be sent the build that makes it
/// collect.
pub fn start(engine: &Arc<Engine>) {
    if engine.config().min_free.is_none() {
        return;
    }
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(engine) = weak.upgrade() else { return };
            check(&engine);
        }
    });
}
