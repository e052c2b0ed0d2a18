//! Keeping an idle daemon small.
//!
//! glibc's malloc gives each thread that allocates its own arena (up to
//! eight per core), and memory freed in an arena stays with it: after a few
//! thousand builds served by the async workers and the blocking pool, an
//! idle daemon held 35-38 MiB, of which about 13 MiB were such arenas
//! (measured with `MALLOC_ARENA_MAX=1`: 25 MiB). The daemon allocates little
//! per request and never in a hot loop across threads, so two arenas lose
//! nothing measurable, and freed memory is given back once the daemon is
//! idle. Other allocators (musl) ignore both calls.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;

/// Call first thing in `main` of a long-lived process, before threads.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; M_ARENA_MAX is valid.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // Large blocks (a 16 MiB protocol message) are mapped and given
        // back when freed: by default glibc raises this threshold after
        // the first such free and keeps later ones in the arenas (60
        // clients sending 16 MiB messages left the daemon at 115 MiB,
        // 67 MiB with this).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Every few seconds, when no build is running and the resident size grew
/// by over 1 MiB since the last trim, return freed heap memory to the
/// system (`malloc_trim`, off the async threads). Stops when the engine is
/// gone.
pub fn start_idle_trimmer(engine: &Arc<Engine>) {
    let engine = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut after_last_trim = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let Some(e) = engine.upgrade() else { break };
            let busy = e.builds_running() != 0;
            drop(e);
            let Some(now) = resident_bytes() else { break };
            if busy || now < after_last_trim + (1 << 20) {
                continue;
            }
            let _ = tokio::task::spawn_blocking(trim).await;
            after_last_trim = resident_bytes().unwrap_or(now);
        }
    });
}

/// The resident set size, from `/proc/self/statm` (pages).
fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Some(pages * page)
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}
