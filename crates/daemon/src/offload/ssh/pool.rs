//! The pool of connections: one persistent SSH connection per machine,
//! shared by every build and client of the daemon ([`Connections`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{lock, SshConnection, SshError, SshTarget};

/// The pool's entry for one machine: its connection, or how its last
/// attempt failed.
#[derive(Default)]
struct PoolEntry {
    /// Connection attempts finished (read without the lock).
    finished: AtomicU64,
    state: tokio::sync::Mutex<PoolEntryState>,
}

#[derive(Default)]
struct PoolEntryState {
    conn: Option<(SshTarget, Arc<SshConnection>)>,
    /// The last attempt's failure, with its number in `finished`.
    failure: Option<(u64, SshError)>,
}

/// One persistent connection per machine, shared by all builds and clients.
///
/// [`get`](Connections::get) returns the machine's open connection, or
/// connects: on first use, when the connection closed (keep-alives, the
/// server went away), after [`invalidate`](Connections::invalidate), or
/// when the machine's target changed (machines.scm edited). Connecting is
/// serialized per machine, so concurrent callers never open two
/// connections; callers that waited on an attempt that failed get its error
/// rather than each trying again (and waiting out the timeout again).
#[derive(Default)]
pub struct Connections {
    entries: Mutex<HashMap<String, Arc<PoolEntry>>>,
}

impl Connections {
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&self, name: &str) -> Arc<PoolEntry> {
        lock(&self.entries)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The connection to machine `name`, connecting to `t` if needed.
    pub async fn get(&self, name: &str, t: &SshTarget) -> Result<Arc<SshConnection>, SshError> {
        let entry = self.entry(name);
        let seen = entry.finished.load(Ordering::Acquire);
        let mut s = entry.state.lock().await;
        if let Some((target, conn)) = &s.conn {
            if !conn.is_closed() && target == t {
                return Ok(conn.clone());
            }
        }
        if let Some((n, e)) = &s.failure {
            // An attempt that ended while we waited failed: share its error.
            if *n > seen {
                return Err(e.duplicate());
            }
        }
        s.conn = None;
        let result = SshConnection::connect(t).await;
        let n = entry.finished.fetch_add(1, Ordering::AcqRel) + 1;
        match result {
            Ok(c) => {
                let c = Arc::new(c);
                s.conn = Some((t.clone(), c.clone()));
                s.failure = None;
                Ok(c)
            }
            Err(e) => {
                s.failure = Some((n, e.duplicate()));
                Err(e)
            }
        }
    }

    /// Forget machine `name`'s connection (after an error on it): the next
    /// [`get`](Connections::get) connects anew. Operations running on the
    /// old connection go on; it closes when the last of them is done.
    pub async fn invalidate(&self, name: &str) {
        let entry = lock(&self.entries).get(name).cloned();
        if let Some(entry) = entry {
            let mut s = entry.state.lock().await;
            s.conn = None;
            s.failure = None;
        }
    }

    /// Like [`invalidate`](Connections::invalidate), but only if `conn` is
    /// still the machine's connection: a caller reporting an error on an old
    /// connection does not throw away a new one that another caller already
    /// opened.
    pub async fn invalidate_if(&self, name: &str, conn: &Arc<SshConnection>) {
        let entry = lock(&self.entries).get(name).cloned();
        if let Some(entry) = entry {
            let mut s = entry.state.lock().await;
            if s.conn.as_ref().is_some_and(|(_, c)| Arc::ptr_eq(c, conn)) {
                s.conn = None;
            }
        }
    }

    /// The machine's current connection, if one is open (without
    /// connecting or waiting), e.g. for `ferry offload status`.
    pub fn current(&self, name: &str) -> Option<Arc<SshConnection>> {
        let entry = lock(&self.entries).get(name).cloned()?;
        let s = entry.state.try_lock().ok()?;
        s.conn
            .as_ref()
            .filter(|(_, c)| !c.is_closed())
            .map(|(_, c)| c.clone())
    }
}
