//! The build farm as this daemon sees it: the machines of `machines.scm`
//! (re-read when the file changes, the last good list kept when it breaks),
//! their live state (slots in use across all clients, last measured load
//! and free space, back-off after failures), the persistent SSH
//! connections to them, and the queue of derivations waiting for a
//! machine.
//!
//! # The queue
//!
//! Every derivation that wants a build machine files a [`Request`] and
//! gets a [`Ticket`]. One dispatcher (`Farm::dispatch`, run under the
//! farm's lock whenever a request arrives, a slot frees or a machine is
//! measured) serves the waiting requests in order of their estimated
//! remaining path, longest first, across every client of the daemon:
//! the derivation with the longest chain of work after it is the one that
//! makes the whole build late. Requests are grouped by what they need
//! (system and features); once no machine can take the head of a group,
//! the rest of that group is not asked (one decision per group, not one
//! per waiting derivation), and the other groups go on.
//!
//! A request whose build history is known may be held back for a faster
//! machine ([`scheduler::hold_for_faster`]): it is offered again when a
//! slot frees on a machine fast enough for it
//! ([`scheduler::slowest_acceptable`]), and takes the machine it refused
//! once it has waited as long as that machine would lose.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ferry_protocol::MachineInfo;
use ferry_scheme::{load_machines_file, BuildMachine, EvalContext};

use super::error::{Backoff, OffloadError};
use super::scheduler::{self, Choice, MachineState, Needs};
use super::ssh::{Connections, SshConnection, SshError, SshTarget};

/// How long a measured load and free space are trusted.
const INFO_MAX_AGE: Duration = Duration::from_secs(10);
/// First back-off after a failure; doubled per failure, capped.
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(120);

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

/// A file as it was: its path and (modified, changed, mode), `None` when
/// missing.
type FileStamp = (PathBuf, Option<(SystemTime, i64, u32)>);

fn stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok();
    (
        path.to_path_buf(),
        meta.and_then(|m| Some((m.modified().ok()?, m.ctime(), m.mode()))),
    )
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

/// `(longest remaining path first, first come)`; the second part is the
/// request's id. Remaining paths are >= 0, so their bits order like them.
type QueueKey = (Reverse<u64>, u64);

/// A derivation that wants a build machine.
#[derive(Debug, Clone)]
pub struct Request {
    pub needs: Needs,
    /// Its input closure: machines holding more of it are preferred.
    pub closure: Arc<BTreeSet<ferry_formats::StorePath>>,
    /// Estimated seconds from its start to the end of the longest chain of
    /// builds that wait for it (itself included): the queue's order.
    pub remaining: f64,
    /// Its own estimated seconds on a speed-1 machine, when its build
    /// history is known; without it, it is never held for a faster machine.
    pub estimate: Option<f64>,
}

/// What the dispatcher decided for a request.
enum Decided {
    Machine(Box<BuildMachine>),
    Local,
}

struct Waiter {
    request: Request,
    key: QueueKey,
    wake: Arc<tokio::sync::Notify>,
    decided: Option<Decided>,
    held: Option<Held>,
}

/// A request held back for a faster machine.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Speed of the machine it refused.
    offered: f64,
    since: Instant,
    /// What it would lose there: once held that long, it takes it.
    limit: f64,
    /// What [`scheduler::slowest_acceptable`] needs: its estimate, the
    /// fastest candidate's speed, and the room it had when held.
    estimate: f64,
    fastest: f64,
    room: f64,
    /// A faster machine freed a slot since: ask again.
    reoffer: bool,
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

/// A reserved slot on a machine; released on drop.
pub struct Slot<'a> {
    farm: &'a Farm,
    pub machine: BuildMachine,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut st = self.farm.lock();
        release(&mut st, &self.machine);
        self.farm.dispatch(&mut st);
    }
}

/// A slot on `machine` is free again: what was held back for a machine
/// this fast is offered again.
fn release(st: &mut State, machine: &BuildMachine) {
    if let Some(l) = st.live.get_mut(&machine.name) {
        l.in_use = l.in_use.saturating_sub(1);
    }
    for id in &st.held {
        let Some(w) = st.waiters.get_mut(id) else {
            continue;
        };
        if let Some(h) = &mut w.held {
            let held_for = h.since.elapsed().as_secs_f64();
            if machine.speed > h.offered
                && machine.speed
                    >= scheduler::slowest_acceptable(h.estimate, h.fastest, h.room, held_for)
                && matches(machine, &w.request.needs)
            {
                h.reoffer = true;
            }
        }
    }
}

/// A place in the queue ([`Farm::request`]); leaving it (drop) withdraws
/// the request, and frees the slot if one was granted and not taken.
pub struct Ticket<'a> {
    farm: &'a Farm,
    id: u64,
    wake: Arc<tokio::sync::Notify>,
}

impl<'a> Ticket<'a> {
    /// The decision, if the dispatcher made one (the ticket is then used
    /// up: poll again only after a `Wait`); else why the request waits.
    pub fn poll(&mut self) -> Placement<'a> {
        let mut st = self.farm.lock();
        // A hold that ran out, or a machine that came back from its
        // back-off, is noticed here: at most one dispatch a second.
        if st
            .last_dispatch
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.farm.dispatch(&mut st);
        }
        let State {
            waiters,
            group_waits,
            ..
        } = &mut *st;
        let Some(w) = waiters.get_mut(&self.id) else {
            // Already served: a caller bug, answered as a wait.
            return Placement::Wait {
                busy: true,
                held: false,
                measuring: false,
            };
        };
        match w.decided.take() {
            Some(Decided::Machine(machine)) => {
                waiters.remove(&self.id);
                Placement::Remote(Box::new(Slot {
                    farm: self.farm,
                    machine: *machine,
                }))
            }
            Some(Decided::Local) => {
                waiters.remove(&self.id);
                Placement::Local
            }
            None => {
                if w.held.is_some() {
                    return Placement::Wait {
                        busy: true,
                        held: true,
                        measuring: false,
                    };
                }
                // Cheap: a waiting build polls every second, and the
                // reasons (one line per candidate) are for its error only.
                let why = group_waits.get(&w.request.needs);
                let busy = why.is_none_or(|why| {
                    why.iter()
                        .any(|(_, w)| matches!(w, scheduler::PassedOver::NoFreeSlot { .. }))
                });
                let measuring = why.is_some_and(|why| {
                    why.iter()
                        .any(|(_, w)| *w == scheduler::PassedOver::Measuring)
                });
                Placement::Wait {
                    busy,
                    held: false,
                    measuring,
                }
            }
        }
    }

    /// Why the request waits, one line per candidate machine, with its
    /// last error.
    pub fn reasons(&self) -> Vec<String> {
        let st = self.farm.lock();
        let Some(w) = st.waiters.get(&self.id) else {
            return Vec::new();
        };
        if let Some(h) = w.held {
            return vec![format!(
                "held for a machine faster than speed {} (at most {:.0} s more)",
                h.offered,
                (h.limit - h.since.elapsed().as_secs_f64()).max(0.0)
            )];
        }
        let Some(why) = st.group_waits.get(&w.request.needs) else {
            return Vec::new();
        };
        why.iter()
            .map(|(name, w)| {
                let unusable = st.machines.iter().find(|m| &m.name == name);
                if let Some(e) = unusable.and_then(|m| m.error_line()) {
                    return format!("{name}: not used: {e}");
                }
                let last = st
                    .live
                    .get(name)
                    .and_then(|l| l.last_error.as_deref())
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                format!("{name}: {w}{last}")
            })
            .collect()
    }

    /// Why the request waits, short, for a progress line: "h1 busy 1/1,
    /// h2 backed off 12 s" (the full text is [`Ticket::reasons`]).
    pub fn summary(&self) -> String {
        use scheduler::PassedOver as P;
        let st = self.farm.lock();
        let Some(w) = st.waiters.get(&self.id) else {
            return String::new();
        };
        if let Some(h) = w.held {
            return format!(
                "held for a machine faster than speed {} ({:.0} s more at most)",
                h.offered,
                (h.limit - h.since.elapsed().as_secs_f64()).max(0.0)
            );
        }
        let Some(why) = st.group_waits.get(&w.request.needs) else {
            return "the farm's queue".into();
        };
        let now = Instant::now();
        why.iter()
            .map(|(name, w)| match w {
                P::NoFreeSlot { in_use, slots } => format!("{name} busy {in_use}/{slots}"),
                P::Overloaded { load, .. } => format!("{name} overloaded (load {load:.2})"),
                P::LowDisk { free_bytes } => format!("{name} full ({} MiB free)", free_bytes >> 20),
                P::BackedOff => match st.live.get(name).and_then(|l| l.backed_off_until) {
                    Some(t) if t.saturating_duration_since(now) > Duration::from_secs(3600) => {
                        format!("{name} out until its configuration changes")
                    }
                    Some(t) => format!(
                        "{name} backed off {} s",
                        t.saturating_duration_since(now).as_secs_f64().ceil()
                    ),
                    None => format!("{name} backed off"),
                },
                P::Measuring => format!("{name} not answered yet"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Until the dispatcher decides, or `timeout`.
    pub async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut st = self.farm.lock();
        let Some(w) = st.waiters.remove(&self.id) else {
            return;
        };
        st.held.remove(&self.id);
        if let Some(q) = st.queues.get_mut(&w.request.needs) {
            q.remove(&w.key);
            if q.is_empty() {
                st.queues.remove(&w.request.needs);
            }
        }
        if let Some(Decided::Machine(m)) = w.decided {
            // Granted, never taken: give it to the next in line.
            release(&mut st, &m);
            self.farm.dispatch(&mut st);
        }
    }
}

/// The result of asking for a machine.
pub enum Placement<'a> {
    Remote(Box<Slot<'a>>),
    /// No machine matches the derivation: build here.
    Local,
    /// Machines match but none can take it now ([`Ticket::reasons`] says
    /// why, per machine).
    Wait {
        /// A candidate is only busy (every slot running our builds): the
        /// farm is working, so the wait is not a failure to reach it.
        busy: bool,
        /// Held back for a faster machine (see [`Ticket`]).
        held: bool,
        /// A candidate is being measured for the first time: its answer
        /// is awaited (bounded by the liveness bound), while any other
        /// machine that frees up is used.
        measuring: bool,
    },
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

    /// Re-read the machines file when its modification time changed; a
    /// missing file means no machines; a broken one keeps the last good
    /// list, if any (and says why in the log, and to every build that
    /// would offload: [`Farm::load_error`]).
    pub fn reload_if_changed(&self) {
        let mtime = std::fs::metadata(&self.file)
            .and_then(|m| m.modified())
            .ok();
        if mtime == self.lock().loaded_mtime && mtime.is_some() {
            return;
        }
        let loaded = match mtime {
            None => Ok(Vec::new()),
            Some(_) => load_machines_file(&self.file, EvalContext::from_process()).map(|m| {
                for w in &m.warnings {
                    tracing::warn!("{w}");
                }
                for (name, e) in m
                    .machines
                    .iter()
                    .filter_map(|m| Some((&m.name, m.error_line()?)))
                {
                    tracing::warn!("build machine {name} is not used: {e}");
                }
                m.machines
            }),
        };
        let mut st = self.lock();
        st.loaded_mtime = mtime;
        st.load_error = None;
        match loaded {
            Ok(machines) => {
                if mtime.is_some() {
                    tracing::info!(
                        "{}: {} build machine(s)",
                        self.file.display(),
                        machines.len()
                    );
                }
                st.machines = machines;
                // A new machines.scm: those kept out until it changed are
                // tried again.
                for l in st.live.values_mut() {
                    if l.until_changed.take().is_some() {
                        l.backed_off_until = None;
                        l.failures = 0;
                    }
                }
            }
            Err(e) => {
                if st.machines.is_empty() {
                    tracing::error!("no build machines: {e}");
                } else {
                    tracing::warn!(
                        "keeping the previous {} build machine(s): {e}",
                        st.machines.len()
                    );
                }
                st.load_error = Some(e.to_string());
            }
        }
    }

    /// The machines file's current version could not be used: why (its
    /// `FILE:LINE:COL: error: ...`), and how many machines of an earlier
    /// version are kept (0 for a daemon that never loaded it).
    pub fn load_error(&self) -> Option<(String, usize)> {
        self.reload_if_changed();
        let st = self.lock();
        st.load_error.clone().map(|e| (e, st.machines.len()))
    }

    /// Whether every candidate for `needs` is out until a person acts (its
    /// machines.scm entry is unusable, or it is kept out until
    /// machines.scm, the ACL or its key changes): waiting cannot help.
    pub fn all_out_until_changed(&self, needs: &Needs) -> bool {
        let st = self.lock();
        let mut candidates = st.machines.iter().filter(|m| matches(m, needs)).peekable();
        candidates.peek().is_some()
            && candidates.all(|m| {
                m.error.is_some()
                    || st
                        .live
                        .get(&m.name)
                        .is_some_and(|l| l.until_changed.is_some())
            })
    }

    /// The candidates for `needs` that cannot take a build now for a
    /// reason other than being busy or measured for the first time, and
    /// why (their last error, or their load or free space): what a build
    /// that skips them says to its client.
    pub fn skipped(&self, needs: &Needs) -> Vec<(String, String)> {
        let st = self.lock();
        let now = Instant::now();
        let states = Self::states(&st.machines, &st.live);
        let mut out = Vec::new();
        for (m, state) in st.machines.iter().zip(&states) {
            if !matches(m, needs) {
                continue;
            }
            // Its machines.scm entry is unusable: never tried, said as is.
            if let Some(e) = m.error_line() {
                out.push((m.name.clone(), format!("not used: {e}")));
                continue;
            }
            let live = st.live.get(&m.name);
            let why = match scheduler::unusable(state, now) {
                None | Some(scheduler::PassedOver::NoFreeSlot { .. }) => continue,
                Some(scheduler::PassedOver::BackedOff) => {
                    let Some(l) = live else { continue };
                    if l.probing && l.info.is_none() {
                        continue;
                    }
                    let error = l.last_error.as_deref().unwrap_or("a recent failure");
                    if l.until_changed.is_some() {
                        format!(
                            "{error}; not used until machines.scm, the ACL or its private key changes"
                        )
                    } else {
                        let secs = l
                            .backed_off_until
                            .map_or(0, |t| t.saturating_duration_since(now).as_secs());
                        format!("{error}; backed off for {secs} s")
                    }
                }
                Some(other) => other.to_string(),
            };
            out.push((m.name.clone(), why));
        }
        out
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

    /// Machines whose measurement is missing or old, among the candidates
    /// for `needs`.
    pub fn stale_candidates(&self, needs: &Needs) -> Vec<BuildMachine> {
        self.stale_where(|m| matches(m, needs))
    }

    /// Every machine whose measurement is missing or old (and that is not
    /// backed off): what the background refresh measures.
    pub fn stale(&self) -> Vec<BuildMachine> {
        self.stale_where(|_| true)
    }

    fn stale_where(&self, keep: impl Fn(&BuildMachine) -> bool) -> Vec<BuildMachine> {
        self.reload_if_changed();
        let st = self.lock();
        let now = Instant::now();
        st.machines
            .iter()
            .filter(|m| keep(m) && m.error.is_none())
            .filter(|m| {
                let live = st.live.get(&m.name);
                let backed_off = live
                    .and_then(|l| l.backed_off_until)
                    .is_some_and(|t| t > now);
                let fresh = live
                    .and_then(|l| l.info.as_ref())
                    .is_some_and(|(at, _)| now.duration_since(*at) < INFO_MAX_AGE);
                !backed_off && !fresh
            })
            .cloned()
            .collect()
    }

    /// Record a fresh measurement (and a success: the back-off resets).
    pub fn measured(&self, name: &str, info: MachineInfo) {
        let mut st = self.lock();
        let l = st.live.entry(name.to_string()).or_default();
        match (&l.info, &l.last_error) {
            (None, _) => tracing::info!(
                "build machine {name}: up ({} MiB free, load {:.2})",
                info.free_bytes >> 20,
                info.load_1m
            ),
            (Some(_), Some(was)) => tracing::info!("build machine {name}: back (it was: {was})"),
            (Some(_), None) => {}
        }
        l.info = Some((Instant::now(), info));
        l.last_attempt = Some((Instant::now(), None));
        l.failures = 0;
        l.backed_off_until = None;
        l.last_error = None;
        l.probing = false;
        l.until_changed = None;
        self.dispatch(&mut st);
    }

    /// Until when placement for `needs` gives candidates being measured
    /// for the first time a chance to answer: `grace` after the start of
    /// the latest such probe, if that is still ahead (counted from the
    /// probe, not the request: a silent machine delays placement by
    /// `grace` once, not every derivation placed while it is probed).
    pub fn first_contact_until(&self, needs: &Needs, grace: Duration) -> Option<Instant> {
        let st = self.lock();
        let now = Instant::now();
        st.machines
            .iter()
            .filter(|m| matches(m, needs))
            .filter_map(|m| st.live.get(&m.name))
            .filter(|l| l.probing && l.info.is_none())
            .filter_map(|l| l.probe_since.map(|t| t + grace))
            .filter(|t| *t > now)
            .max()
    }

    /// Mark a probe of `name` under way; false when one already is (one
    /// probe per machine at a time).
    pub fn start_probe(&self, name: &str) -> bool {
        let mut st = self.lock();
        let l = st.live.entry(name.to_string()).or_default();
        if l.probing {
            return false;
        }
        l.probing = true;
        l.probe_since = Some(Instant::now());
        true
    }

    /// A probe ended without a measurement (its error is reported with
    /// [`Farm::failed`]).
    pub fn probe_over(&self, name: &str) {
        let mut st = self.lock();
        if let Some(l) = st.live.get_mut(name) {
            if std::mem::take(&mut l.probing) {
                self.dispatch(&mut st);
            }
        }
    }

    /// Machines kept out until their configuration changed whose ACL or
    /// private key did change: tried again.
    pub fn recheck_changed(&self) {
        let mut st = self.lock();
        let mut any = false;
        for l in st.live.values_mut() {
            let changed = l
                .until_changed
                .as_ref()
                .is_some_and(|stamps| stamps.iter().any(|s| stamp(&s.0) != *s));
            if changed {
                l.until_changed = None;
                l.backed_off_until = None;
                l.failures = 0;
                any = true;
            }
        }
        if any {
            self.dispatch(&mut st);
        }
    }

    /// A step on a machine failed: back it off by the kind of error
    /// ([`OffloadError::backoff`]).
    pub fn failed(&self, name: &str, e: &OffloadError) {
        if e.backoff() != Backoff::None {
            let mut st = self.lock();
            st.live.entry(name.to_string()).or_default().last_attempt =
                Some((Instant::now(), Some(e.kind())));
        }
        match e.backoff() {
            Backoff::Transient => self.failed_transient(name, &e.to_string()),
            Backoff::None => tracing::warn!("build machine {name}: {e}"),
            Backoff::UntilChanged => {
                let mut files = self.watched.clone();
                if let Some(m) = self.lock().machines.iter().find(|m| m.name == name) {
                    files.push(m.private_key.clone());
                }
                let stamps = files.iter().map(|f| stamp(f)).collect();
                let mut st = self.lock();
                let l = st.live.entry(name.to_string()).or_default();
                if l.until_changed.is_none() {
                    l.failures += 1;
                    tracing::warn!(
                        "build machine {name}: {e}; not used until machines.scm, the ACL or its private key changes"
                    );
                }
                l.until_changed = Some(stamps);
                l.backed_off_until = Some(Instant::now() + UNTIL_CHANGED);
                l.last_error = Some(e.to_string());
                l.probing = false;
                self.dispatch(&mut st);
            }
        }
    }

    /// A transient failure (connection, silence, protocol): back it off,
    /// exponentially, capped. Reports while it is backed off are the same
    /// incident (every build and probe that was using the machine fails
    /// at once when it goes down): they do not lengthen the back-off.
    fn failed_transient(&self, name: &str, why: &str) {
        let mut st = self.lock();
        let l = st.live.entry(name.to_string()).or_default();
        l.probing = false;
        if l.backed_off_until.is_some_and(|t| t > Instant::now()) {
            tracing::debug!("build machine {name}: {why} (already backed off)");
            l.last_error = Some(why.to_string());
            return;
        }
        l.failures += 1;
        let wait = BACKOFF_FIRST
            .saturating_mul(1 << (l.failures - 1).min(16))
            .min(BACKOFF_MAX);
        l.backed_off_until = Some(Instant::now() + wait);
        l.last_error = Some(why.to_string());
        tracing::warn!(
            "build machine {name}: {why}; skipping it for {} s",
            wait.as_secs()
        );
        // Requests waiting for its first measurement look elsewhere.
        self.dispatch(&mut st);
    }

    /// A build on the machine succeeded: reset its back-off.
    pub fn succeeded(&self, name: &str) {
        let mut st = self.lock();
        let l = st.live.entry(name.to_string()).or_default();
        let was_backed_off = l.backed_off_until.take().is_some();
        l.last_attempt = Some((Instant::now(), None));
        l.failures = 0;
        if was_backed_off {
            self.dispatch(&mut st);
        }
    }

    /// Join the queue for a machine. The dispatcher runs at once: a free
    /// machine is granted before this returns (see [`Ticket::poll`]).
    pub fn request(&self, request: Request) -> Ticket<'_> {
        self.reload_if_changed();
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        let key = (Reverse(request.remaining.max(0.0).to_bits()), id);
        let wake = Arc::new(tokio::sync::Notify::new());
        st.queues
            .entry(request.needs.clone())
            .or_default()
            .insert(key);
        st.waiters.insert(
            id,
            Waiter {
                request,
                key,
                wake: wake.clone(),
                decided: None,
                held: None,
            },
        );
        self.dispatch(&mut st);
        Ticket {
            farm: self,
            id,
            wake,
        }
    }

    /// Serve the queue (see the module documentation); called with the
    /// farm's lock held, by whatever changed it.
    fn dispatch(&self, st: &mut State) {
        let now = Instant::now();
        st.last_dispatch = Some(now);
        if st.queues.is_empty() {
            return;
        }
        let State {
            machines,
            live,
            present,
            waiters,
            held,
            queues,
            group_waits,
            ..
        } = st;
        let mut states = Self::states(machines, live);
        let groups: Vec<Needs> = queues.keys().cloned().collect();
        // Fastest candidate per group: what a held request waits for.
        let fastest: Vec<f64> = groups
            .iter()
            .map(|needs| fastest_speed(machines, needs).unwrap_or(0.0))
            .collect();
        let mut after: Vec<Option<QueueKey>> = vec![None; groups.len()];
        let mut blocked = vec![false; groups.len()];
        let mut granted: Vec<usize> = Vec::new();
        loop {
            // The longest remaining path still waiting (held ones included).
            let longest = groups
                .iter()
                .filter_map(|needs| queues[needs].first().map(|k| f64::from_bits(k.0 .0)))
                .fold(0.0, f64::max);
            // The next request: the best head among the groups not blocked.
            let mut next: Option<(usize, QueueKey)> = None;
            for (g, needs) in groups.iter().enumerate() {
                if blocked[g] {
                    continue;
                }
                let head = match after[g] {
                    None => queues[needs].iter().next(),
                    Some(k) => queues[needs]
                        .range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
                        .next(),
                };
                if let Some(&k) = head {
                    if next.is_none_or(|(_, best)| k < best) {
                        next = Some((g, k));
                    }
                }
            }
            let Some((g, key)) = next else { break };
            after[g] = Some(key);
            let w = waiters.get_mut(&key.1).expect("queued requests wait");
            if let Some(h) = &w.held {
                let expired = h.since.elapsed().as_secs_f64() >= h.limit;
                if !h.reoffer && !expired {
                    continue;
                }
            }
            let choice = scheduler::choose(&states, &groups[g], now, |i| {
                share(present.get(states[i].name), &w.request.closure)
            });
            match choice {
                Choice::Machine(i) => {
                    if let Some(estimate) = w.request.estimate {
                        let lost = scheduler::time_lost(estimate, states[i].speed, fastest[g]);
                        let since = w.held.map_or(now, |h| h.since);
                        let held_for = now.saturating_duration_since(since).as_secs_f64();
                        if scheduler::hold_for_faster(w.request.remaining, lost, longest, held_for)
                        {
                            w.held = Some(Held {
                                offered: states[i].speed,
                                since,
                                limit: lost,
                                estimate,
                                fastest: fastest[g],
                                room: scheduler::HOLD_SLACK * longest - w.request.remaining,
                                reoffer: false,
                            });
                            held.insert(key.1);
                            continue;
                        }
                    }
                    states[i].in_use += 1;
                    granted.push(i);
                    w.decided = Some(Decided::Machine(Box::new(machines[i].clone())));
                    w.held = None;
                    held.remove(&key.1);
                    w.wake.notify_one();
                    queues.get_mut(&groups[g]).expect("group").remove(&key);
                }
                Choice::Local => {
                    w.decided = Some(Decided::Local);
                    w.wake.notify_one();
                    queues.get_mut(&groups[g]).expect("group").remove(&key);
                }
                Choice::Wait(mut why) => {
                    // Backed off for its first probe, not for a failure.
                    for (name, w) in &mut why {
                        let first_probe = live
                            .get(name.as_str())
                            .is_some_and(|l| l.probing && l.info.is_none());
                        if first_probe && *w == scheduler::PassedOver::BackedOff {
                            *w = scheduler::PassedOver::Measuring;
                        }
                    }
                    group_waits.insert(groups[g].clone(), why);
                    blocked[g] = true;
                }
            }
        }
        drop(states);
        for i in granted {
            live.entry(machines[i].name.clone()).or_default().in_use += 1;
        }
        for needs in &groups {
            if queues[needs].is_empty() {
                queues.remove(needs);
                group_waits.remove(needs);
            }
        }
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

    /// Why no machine of the file matches `needs`, machine by machine, for
    /// the error of a derivation nothing can build (starts with ":").
    pub fn why_not_candidates(&self, needs: &Needs) -> String {
        let machines = self.machines();
        if let Some((e, _)) = self.load_error().filter(|_| machines.is_empty()) {
            return format!("; there are no build machines: {e}");
        }
        if machines.is_empty() {
            return format!("; {} lists no build machine", self.file.display());
        }
        let mut out = format!("; the machines of {}:", self.file.display());
        for m in &machines {
            let mut why = Vec::new();
            if !m.systems.contains(&needs.system) {
                why.push(format!("builds for {} only", m.systems.join(", ")));
            }
            let lacking = needs.lacking(&m.features);
            if !lacking.is_empty() {
                why.push(format!("lacks feature {}", lacking.join(", ")));
            }
            if let Some(e) = m.error_line() {
                why.push(format!("not used: {e}"));
            }
            if why.is_empty() {
                why.push("matches (but was not usable)".into());
            }
            out.push_str(&format!("\n  {}: {}", m.name, why.join("; ")));
        }
        out
    }

    /// Slots in use per machine (for `offload status`).
    pub fn in_use(&self, name: &str) -> u32 {
        self.lock().live.get(name).map_or(0, |l| l.in_use)
    }

    /// Every machine as this daemon sees it (for `ferry offload status`).
    pub fn status(&self) -> Vec<ferry_protocol::FarmMachine> {
        self.reload_if_changed();
        let st = self.lock();
        let now = Instant::now();
        st.machines
            .iter()
            .map(|m| {
                let live = st.live.get(&m.name).cloned().unwrap_or_default();
                ferry_protocol::FarmMachine {
                    name: m.name.clone(),
                    in_use: live.in_use,
                    until_changed: live.until_changed.is_some(),
                    backed_off_for: live
                        .backed_off_until
                        .filter(|t| *t > now && live.until_changed.is_none())
                        .map(|t| t.duration_since(now).as_secs_f64()),
                    failures: live.failures,
                    last_error: live.last_error,
                    measured_secs_ago: live
                        .info
                        .as_ref()
                        .map(|(at, _)| now.duration_since(*at).as_secs_f64()),
                    info: live.info.map(|(_, i)| i),
                    attempted_secs_ago: live
                        .last_attempt
                        .map(|(at, _)| now.duration_since(at).as_secs_f64()),
                    attempt_error: live.last_attempt.and_then(|(_, k)| k.map(str::to_string)),
                }
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lost() -> OffloadError {
        OffloadError::Connect {
            machine: "a".into(),
            why: "connection lost".into(),
        }
    }

    #[test]
    fn the_failures_of_one_incident_count_once() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("machines.scm");
        std::fs::write(
            &file,
            r#"(list (build-machine (name "a") (systems (list "x86_64-linux"))
                 (user "u") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")))"#,
        )
        .unwrap();
        let farm = Farm::new(file);
        let backed_off = |farm: &Farm| {
            let st = farm.status();
            (st[0].failures, st[0].backed_off_for.unwrap_or(0.0))
        };
        // Thirty builds using the machine fail at once: one incident.
        for _ in 0..30 {
            farm.failed("a", &lost());
        }
        let (failures, secs) = backed_off(&farm);
        assert_eq!(failures, 1);
        assert!(secs <= BACKOFF_FIRST.as_secs_f64(), "{secs}");
        // Once the back-off is over, a new failure doubles it.
        farm.lock().live.get_mut("a").unwrap().backed_off_until = Some(Instant::now());
        farm.failed("a", &lost());
        let (failures, secs) = backed_off(&farm);
        assert_eq!(failures, 2);
        assert!(secs > BACKOFF_FIRST.as_secs_f64(), "{secs}");
    }

    /// `offload status` states a machine by its last real attempt: a
    /// failure after a measurement is not hidden by that measurement.
    #[test]
    fn the_last_attempt_and_its_kind_are_reported() {
        let (_tmp, farm) = farm_of(&[("a", "x86_64-linux", 1.0, 1)]);
        assert_eq!(farm.status()[0].attempted_secs_ago, None);
        farm.succeeded("a");
        let st = &farm.status()[0];
        assert!(st.attempted_secs_ago.is_some_and(|s| s < 1.0));
        assert_eq!(st.attempt_error, None);
        farm.failed("a", &lost());
        assert_eq!(farm.status()[0].attempt_error.as_deref(), Some("connect"));
        farm.succeeded("a");
        assert_eq!(farm.status()[0].attempt_error, None);
        // Not the machine's fault: not an attempt on it.
        farm.failed(
            "a",
            &OffloadError::LocalStore {
                why: "disk full here".into(),
            },
        );
        assert_eq!(farm.status()[0].attempt_error, None);
    }

    #[test]
    fn a_refused_key_keeps_the_machine_out_until_a_watched_file_changes() {
        let (tmp, mut farm) = farm_of(&[("a", "x86_64-linux", 1.0, 1)]);
        let acl = tmp.path().join("acl");
        std::fs::write(&acl, "(acl)").unwrap();
        farm.watch(acl.clone());
        let refused = OffloadError::OurKeyRefused {
            machine: "a".into(),
            why: "a refuses items signed by this machine's key".into(),
        };
        farm.failed("a", &refused);
        let st = &farm.status()[0];
        assert!(st.until_changed && st.backed_off_for.is_none(), "{st:?}");
        assert!(st.last_error.as_deref().unwrap().contains("refuses"));
        // Not a timed back-off: still out long after, and no probe.
        assert!(farm.stale().is_empty());
        assert!(matches!(
            farm.request(request("x86_64-linux", 1.0, None)).poll(),
            Placement::Wait { .. }
        ));
        farm.recheck_changed();
        assert!(farm.status()[0].until_changed);
        // The ACL changes: tried again.
        std::fs::write(&acl, "(acl (entry))").unwrap();
        farm.recheck_changed();
        assert!(!farm.status()[0].until_changed);
        assert_eq!(
            granted(farm.request(request("x86_64-linux", 1.0, None)).poll()).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn a_machine_in_its_first_probe_gets_no_build_and_others_are_used() {
        let (_tmp, farm) = farm_of(&[
            ("fast", "x86_64-linux", 4.0, 1),
            ("slow", "x86_64-linux", 1.0, 1),
        ]);
        assert!(farm.start_probe("fast") && !farm.start_probe("fast"));
        let needs = request("x86_64-linux", 1.0, None).needs;
        let grace = Duration::from_secs(2);
        assert!(farm.first_contact_until(&needs, grace).is_some());
        let Placement::Remote(slow) = farm.request(request("x86_64-linux", 1.0, None)).poll()
        else {
            panic!("slow is free")
        };
        assert_eq!(slow.machine.name, "slow");
        // Only "fast" left, being measured: the request waits for it.
        let mut t = farm.request(request("x86_64-linux", 1.0, None));
        match t.poll() {
            Placement::Wait { measuring, .. } => assert!(measuring, "{:?}", t.reasons()),
            _ => panic!("fast is being measured"),
        }
        assert!(
            t.reasons()[0].contains("being measured"),
            "{:?}",
            t.reasons()
        );
        farm.probe_over("fast");
        assert!(farm.first_contact_until(&needs, grace).is_none());
        assert_eq!(granted(t.poll()).as_deref(), Some("fast"));
    }

    #[test]
    fn a_machine_with_an_error_is_never_given_a_build_and_its_reason_is_said() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("machines.scm");
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        std::fs::write(
            &file,
            format!(
                "(list (build-machine (name \"bad\") (systems (list \"x86_64-linux\")) (user \"u\") \
                 (speed 9.0) (host-key \"some-key\"))\n\
                 (build-machine (name \"good\") (systems (list \"x86_64-linux\")) (user \"u\") \
                 (host-key {key:?})))"
            ),
        )
        .unwrap();
        let farm = Farm::new(file);
        assert_eq!(farm.machines().len(), 2);
        // Never probed: only the good one is measured.
        let stale: Vec<String> = farm.stale().into_iter().map(|m| m.name).collect();
        assert_eq!(stale, ["good"]);
        // The faster machine is unusable: the build goes to the good one.
        let mut first = farm.request(request("x86_64-linux", 1.0, None));
        let slot = first.poll();
        assert!(
            matches!(&slot, Placement::Remote(s) if s.machine.name == "good"),
            "the good machine gets the build"
        );
        // The good one is full: the next waits, and says why bad is not used.
        let mut second = farm.request(request("x86_64-linux", 1.0, None));
        assert!(matches!(second.poll(), Placement::Wait { .. }));
        let reasons = second.reasons().join("\n");
        assert!(
            reasons.contains("bad: not used: ") && reasons.contains("host-key \"some-key\""),
            "{reasons}"
        );
        let why = farm.why_not_candidates(&request("x86_64-linux", 1.0, None).needs);
        assert!(
            why.contains("bad: not used: ") && why.contains(":1:"),
            "{why}"
        );
        // And a build that passes it over tells its client why.
        let skipped = farm.skipped(&request("x86_64-linux", 1.0, None).needs);
        assert!(
            skipped
                .iter()
                .any(|(n, w)| n == "bad" && w.contains("not used: ")),
            "{skipped:?}"
        );
        drop(slot);
    }

    #[test]
    fn a_broken_file_is_an_error_kept_until_it_loads() {
        let (tmp, farm) = farm_of(&[("a", "x86_64-linux", 1.0, 1)]);
        let file = tmp.path().join("machines.scm");
        let good = std::fs::read_to_string(&file).unwrap();
        assert!(farm.load_error().is_none());
        let needs = request("x86_64-linux", 1.0, None).needs;
        // Broken after a good load: the machine is kept, the error told.
        // (Each write a few ticks after the last: an mtime is coarse.)
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, good.replace("(parallel-builds", "(paralel-builds")).unwrap();
        let (e, kept) = farm.load_error().expect("the file is broken");
        assert_eq!(kept, 1);
        assert!(
            e.contains("machines.scm:2:") && e.contains("paralel-builds"),
            "{e}"
        );
        // A fresh farm on the broken file has none, and says why.
        let fresh = Farm::new(file.clone());
        assert_eq!(fresh.load_error().map(|(_, n)| n), Some(0));
        let why = fresh.why_not_candidates(&needs);
        assert!(why.contains("there are no build machines: "), "{why}");
        assert!(matches!(
            fresh.request(request("x86_64-linux", 1.0, None)).poll(),
            Placement::Local
        ));
        // Fixed: the error is gone.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, &good).unwrap();
        assert!(fresh.load_error().is_none() && farm.load_error().is_none());
        assert_eq!(fresh.machines().len(), 1);
    }

    #[test]
    fn skipped_says_why_a_candidate_is_out_but_not_when_only_busy() {
        let (_tmp, farm) = farm_of(&[
            ("a", "x86_64-linux", 1.0, 1),
            ("b", "x86_64-linux", 1.0, 1),
            ("arm", "aarch64-linux", 1.0, 1),
        ]);
        let needs = request("x86_64-linux", 1.0, None).needs;
        assert!(farm.skipped(&needs).is_empty());
        farm.failed(
            "a",
            &OffloadError::HostKey {
                machine: "a".into(),
                why: "the host key of a is X but machines.scm says Y".into(),
            },
        );
        farm.failed("arm", &lost());
        let Placement::Remote(_busy) = farm.request(request("x86_64-linux", 1.0, None)).poll()
        else {
            panic!("b is free")
        };
        let skipped = farm.skipped(&needs);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].0, "a");
        assert!(
            skipped[0].1.contains("host key") && skipped[0].1.contains("until machines.scm"),
            "{skipped:?}"
        );
    }

    /// A farm of `(name, system, speed, slots)` (never measured: usable).
    fn farm_of(machines: &[(&str, &str, f64, u32)]) -> (tempfile::TempDir, Farm) {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("machines.scm");
        let mut text = String::from("(list\n");
        for (name, system, speed, slots) in machines {
            text.push_str(&format!(
                "(build-machine (name {name:?}) (systems (list {system:?})) (user \"u\") \
                 (speed {speed:?}) (parallel-builds {slots}) \
                 (host-key \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"))\n"
            ));
        }
        text.push(')');
        std::fs::write(&file, text).unwrap();
        let farm = Farm::new(file);
        (tmp, farm)
    }

    fn request(system: &str, remaining: f64, estimate: Option<f64>) -> Request {
        Request {
            needs: Needs {
                system: system.into(),
                features: BTreeSet::new(),
            },
            closure: Arc::new(BTreeSet::new()),
            remaining,
            estimate,
        }
    }

    fn granted(p: Placement<'_>) -> Option<String> {
        match p {
            Placement::Remote(slot) => Some(slot.machine.name.clone()),
            _ => None,
        }
    }

    #[test]
    fn the_longest_remaining_path_gets_the_next_free_slot() {
        let (_tmp, farm) = farm_of(&[("a", "x86_64-linux", 1.0, 1)]);
        let Placement::Remote(first) = farm.request(request("x86_64-linux", 0.0, None)).poll()
        else {
            panic!("the free slot is granted at once")
        };
        let mut short = farm.request(request("x86_64-linux", 10.0, None));
        let mut long = farm.request(request("x86_64-linux", 100.0, None));
        let mut middle = farm.request(request("x86_64-linux", 50.0, None));
        for t in [&mut short, &mut long, &mut middle] {
            assert!(matches!(
                t.poll(),
                Placement::Wait {
                    busy: true,
                    held: false,
                    ..
                }
            ));
        }
        drop(first);
        let Placement::Remote(slot) = long.poll() else {
            panic!("the longest goes first")
        };
        assert!(matches!(middle.poll(), Placement::Wait { .. }));
        drop(slot);
        let Placement::Remote(slot) = middle.poll() else {
            panic!("then the middle one")
        };
        drop(slot);
        assert_eq!(granted(short.poll()).as_deref(), Some("a"));
        assert_eq!(farm.in_use("a"), 0);
    }

    #[test]
    fn a_full_group_does_not_hold_up_the_others() {
        let (_tmp, farm) = farm_of(&[
            ("x", "x86_64-linux", 1.0, 1),
            ("arm", "aarch64-linux", 1.0, 1),
        ]);
        let Placement::Remote(x) = farm.request(request("x86_64-linux", 0.0, None)).poll() else {
            panic!()
        };
        let mut waiting = farm.request(request("x86_64-linux", 1e6, None));
        match waiting.poll() {
            Placement::Wait { busy, .. } => {
                assert!(busy);
                let reasons = waiting.reasons();
                assert!(reasons[0].contains("slots in use"), "{reasons:?}");
            }
            _ => panic!("x is full"),
        }
        assert_eq!(
            granted(farm.request(request("aarch64-linux", 1.0, None)).poll()).as_deref(),
            Some("arm")
        );
        drop(x);
        assert_eq!(granted(waiting.poll()).as_deref(), Some("x"));
    }

    #[test]
    fn a_ticket_dropped_after_its_grant_frees_the_slot_for_the_next() {
        let (_tmp, farm) = farm_of(&[("a", "x86_64-linux", 1.0, 1)]);
        let Placement::Remote(first) = farm.request(request("x86_64-linux", 0.0, None)).poll()
        else {
            panic!()
        };
        let gone = farm.request(request("x86_64-linux", 100.0, None));
        let mut next = farm.request(request("x86_64-linux", 10.0, None));
        drop(first);
        // Granted to `gone`, whose client left before taking it.
        assert_eq!(farm.in_use("a"), 1);
        drop(gone);
        assert_eq!(granted(next.poll()).as_deref(), Some("a"));
    }

    #[test]
    fn a_long_build_on_the_critical_path_waits_for_a_faster_machine() {
        let (_tmp, farm) = farm_of(&[
            ("slow", "x86_64-linux", 0.5, 1),
            ("fast", "x86_64-linux", 4.0, 1),
        ]);
        let Placement::Remote(fast) = farm.request(request("x86_64-linux", 0.0, None)).poll()
        else {
            panic!()
        };
        assert_eq!(fast.machine.name, "fast");
        // An hour at speed 1: 2 h on slow, 15 min on fast. Its remaining
        // path is the longest waiting: held rather than sent to slow.
        let mut long = farm.request(request("x86_64-linux", 3600.0 / 4.0, Some(3600.0)));
        match long.poll() {
            Placement::Wait { held, busy, .. } => {
                let reasons = long.reasons();
                assert!(held && busy, "{reasons:?}");
                assert!(reasons[0].contains("faster"), "{reasons:?}");
            }
            _ => panic!("held for the fast machine"),
        }
        // A short one off the critical path takes the slow machine.
        assert_eq!(
            granted(
                farm.request(request("x86_64-linux", 10.0, Some(5.0)))
                    .poll()
            )
            .as_deref(),
            Some("slow")
        );
        // Without a history, nothing is held.
        let (_tmp2, farm2) = farm_of(&[
            ("slow", "x86_64-linux", 0.5, 1),
            ("fast", "x86_64-linux", 4.0, 1),
        ]);
        let _busy = farm2.request(request("x86_64-linux", 0.0, None)).poll();
        assert_eq!(
            granted(farm2.request(request("x86_64-linux", 900.0, None)).poll()).as_deref(),
            Some("slow")
        );
        // The fast machine frees its slot: the held one gets it.
        drop(fast);
        assert_eq!(granted(long.poll()).as_deref(), Some("fast"));
    }
}
