//! The build farm as this daemon sees it: the machines of `machines.scm`
//! (re-read when the file changes, the last good list kept when it breaks),
//! their live state (slots in use across all clients, last measured load
//! and free space, back-off after failures), the persistent SSH
//! connections to them, and the queue of derivations waiting for a
//! machine.
//!
//! The queue is in `queue.rs` (its rule is told there); `load.rs` reads
//! machines.scm again when it changes; `health.rs` records what each
//! attempt on a machine taught (measurements, probes, failures and their
//! back-off); `status.rs` says it (`ferry offload status`, why a build
//! passes a machine over, why no machine matches).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ferry_protocol::MachineInfo;
use ferry_scheme::BuildMachine;

use super::scheduler::{self, MachineState, Needs};
use super::ssh::{Connections, SshConnection, SshError, SshTarget};

mod health;
mod load;
mod queue;
mod status;

#[cfg(test)]
mod tests;

use health::FileStamp;
pub use queue::{Placement, Request, Slot, Ticket};
use queue::{QueueKey, Waiter};

/// Does the machine match the derivation's system and features?
fn matches(m: &BuildMachine, needs: &Needs) -> bool {
    needs.met_by(&m.systems, &m.features)
}

/// The `speed` of the fastest of `machines` that matches `needs`, if any.
fn fastest_speed(machines: &[BuildMachine], needs: &Needs) -> Option<f64> {
    machines
        .iter()
        .filter(|m| matches(m, needs))
        .map(|m| m.speed)
        .reduce(f64::max)
}

/// The share of `closure` among the paths known to be on a machine.
fn share(
    known: Option<&std::collections::HashSet<ferry_formats::StorePath>>,
    closure: &BTreeSet<ferry_formats::StorePath>,
) -> f64 {
    match known {
        Some(known) if !closure.is_empty() => {
            closure.iter().filter(|p| known.contains(*p)).count() as f64 / closure.len() as f64
        }
        _ => 0.0,
    }
}

/// What the farm tracks per machine besides its record.
#[derive(Debug, Clone, Default)]
struct Live {
    in_use: u32,
    info: Option<(Instant, MachineInfo)>,
    failures: u32,
    backed_off_until: Option<Instant>,
    last_error: Option<String>,
    /// A probe of its load and free space is under way: never measured, it
    /// is not given builds until the probe ends (placement does not wait
    /// for it: other machines are used meanwhile).
    probing: bool,
    /// When the probe under way started.
    probe_since: Option<Instant>,
    /// Out after an error only a person can fix, until one of these files
    /// (the ACL, its private key) is not as it was then (or machines.scm
    /// changes).
    until_changed: Option<Vec<FileStamp>>,
    /// The last real attempt on it (a probe, a connection, a build): when,
    /// and its error's kind ([`OffloadError::kind`]; `None`: it worked).
    last_attempt: Option<(Instant, Option<&'static str>)>,
}
/// Back-off of a machine kept out until its configuration changes: long
/// enough to be "never", short enough not to overflow an `Instant`.
const UNTIL_CHANGED: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

struct State {
    machines: Vec<BuildMachine>,
    live: HashMap<String, Live>,
    /// Paths known to be valid on each machine (sent there or built there).
    present: HashMap<String, std::collections::HashSet<ferry_formats::StorePath>>,
    /// Modification time of the file the list came from.
    loaded_mtime: Option<SystemTime>,
    /// Why the file's current version could not be used (kept until it
    /// loads again): every build that would offload is told.
    load_error: Option<String>,
    /// The waiting requests, by id.
    waiters: HashMap<u64, Waiter>,
    /// The ids of those held for a faster machine (a freed slot looks at
    /// these only).
    held: BTreeSet<u64>,
    /// Their order, per group of needs: longest remaining path first, then
    /// first come.
    queues: BTreeMap<Needs, BTreeSet<QueueKey>>,
    /// Why the head of each group could not be placed, when last asked.
    group_waits: HashMap<Needs, Vec<(String, scheduler::PassedOver)>>,
    next_id: u64,
    last_dispatch: Option<Instant>,
}
/// The machines and their state, shared by every build of the daemon.
pub struct Farm {
    file: PathBuf,
    state: Mutex<State>,
    connections: Connections,
    /// The liveness bound of every step on a machine ([`SshTarget::silence`]).
    silence: Option<Duration>,
    /// Files besides machines.scm whose change lifts a back-off "until
    /// changed" (this store's ACL).
    watched: Vec<PathBuf>,
}
impl Farm {
    /// A farm whose machines come from `file` (read now and when it changes).
    pub fn new(file: PathBuf) -> Farm {
        let farm = Farm {
            file,
            state: Mutex::new(State {
                machines: Vec::new(),
                live: HashMap::new(),
                present: HashMap::new(),
                loaded_mtime: None,
                load_error: None,
                waiters: HashMap::new(),
                held: BTreeSet::new(),
                queues: BTreeMap::new(),
                group_waits: HashMap::new(),
                next_id: 0,
                last_dispatch: None,
            }),
            connections: Connections::new(),
            silence: Some(super::ssh::DEFAULT_SILENCE),
            watched: Vec::new(),
        };
        farm.reload_if_changed();
        farm
    }

    /// Bound every step on a machine to `silence` without progress.
    pub fn set_silence(&mut self, silence: Option<Duration>) {
        self.silence = silence;
    }

    /// A machine kept out until its configuration changes comes back when
    /// `path` changes too (this store's ACL).
    pub fn watch(&mut self, path: PathBuf) {
        self.watched.push(path);
    }

    /// The liveness bound of the steps on a machine.
    pub fn silence(&self) -> Option<Duration> {
        self.silence
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The current machines.
    pub fn machines(&self) -> Vec<BuildMachine> {
        self.reload_if_changed();
        self.lock().machines.clone()
    }

    fn states<'a>(
        machines: &'a [BuildMachine],
        live: &'a HashMap<String, Live>,
    ) -> Vec<MachineState<'a>> {
        machines
            .iter()
            .map(|m| {
                // Borrowed, not cloned: a clone copies the last
                // measurement's strings, per machine, per decision.
                let live = live.get(&m.name);
                let (load, free, cores) = match live.and_then(|l| l.info.as_ref()) {
                    Some((_, i)) => (i.normalized_load, i.free_bytes, i.cores),
                    // Not measured yet: assume usable; measured before use.
                    None => (0.0, u64::MAX, 0),
                };
                MachineState {
                    name: &m.name,
                    systems: &m.systems,
                    features: &m.features,
                    slots: m.parallel_builds,
                    in_use: live.map_or(0, |l| l.in_use),
                    speed: m.speed,
                    overload_threshold: m.overload_threshold,
                    normalized_load: load,
                    free_bytes: free,
                    // Its first probe under way: not given builds before
                    // it answers (reported as being measured).
                    // A machine whose machines.scm entry is unusable (its
                    // error says why) is never given a build either.
                    backed_off_until: live
                        .and_then(|l| {
                            if l.probing && l.info.is_none() {
                                Some(Instant::now() + UNTIL_CHANGED)
                            } else {
                                l.backed_off_until
                            }
                        })
                        .or(m.error.as_ref().map(|_| Instant::now() + UNTIL_CHANGED)),
                    cores,
                }
            })
            .collect()
    }

    /// The fastest machine that can build what `needs` (its `speed`), if
    /// any: the unit of the remaining paths that order the queue.
    pub fn fastest(&self, needs: &Needs) -> Option<f64> {
        self.reload_if_changed();
        fastest_speed(&self.lock().machines, needs)
    }

    /// Remember paths now valid on a machine (for the locality preference).
    pub fn record_present(
        &self,
        name: &str,
        paths: impl IntoIterator<Item = ferry_formats::StorePath>,
    ) {
        self.lock()
            .present
            .entry(name.to_string())
            .or_default()
            .extend(paths);
    }

    /// How to reach `m`: its machines.scm entry, every step bounded by the
    /// liveness bound (the connect too, when shorter than its default).
    fn target(&self, m: &BuildMachine) -> SshTarget {
        let mut t = SshTarget::from_machine(m);
        t.silence = self.silence;
        if let Some(s) = self.silence {
            t.connect_timeout = t.connect_timeout.min(s);
        }
        t
    }

    /// The persistent SSH connection to `m` (opened if needed; see
    /// [`Connections::get`]).
    pub async fn connection(&self, m: &BuildMachine) -> Result<Arc<SshConnection>, SshError> {
        self.connections.get(&m.name, &self.target(m)).await
    }

    /// Forget `conn` as `name`'s connection after an error on it (unless
    /// another caller already replaced it).
    pub async fn drop_connection(&self, name: &str, conn: &Arc<SshConnection>) {
        self.connections.invalidate_if(name, conn).await;
    }

    /// Every system some machine builds for.
    pub fn systems(&self) -> BTreeSet<String> {
        self.lock()
            .machines
            .iter()
            .flat_map(|m| m.systems.iter().cloned())
            .collect()
    }
}
