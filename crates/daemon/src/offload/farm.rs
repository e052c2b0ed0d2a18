//! The build farm as this daemon sees it: the machines of `machines.scm`
//! (re-read when the file changes, the last good list kept when it breaks),
//! their live state (slots in use across all clients, last measured load
//! and free space, back-off after failures), and the persistent SSH
//! connections to them.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use ferry_protocol::MachineInfo;
use ferry_scheme::{load_machines_file, BuildMachine, EvalContext};

use crate::offload::ssh::{Connections, SshTarget};
use crate::scheduler::{self, Choice, MachineState, Needs};

/// How long a measured load and free space are trusted.
const INFO_MAX_AGE: Duration = Duration::from_secs(10);
/// First back-off after a failure; doubled per failure, capped.
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(120);

/// Does the machine match the derivation's system and features?
fn matches(m: &BuildMachine, needs: &Needs) -> bool {
    m.systems.contains(&needs.system) && needs.features.iter().all(|f| m.features.contains(f))
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
}

struct State {
    machines: Vec<BuildMachine>,
    live: HashMap<String, Live>,
    /// Paths known to be valid on each machine (sent there or built there).
    present: HashMap<String, std::collections::HashSet<ferry_formats::StorePath>>,
    /// Modification time of the file the list came from.
    loaded_mtime: Option<SystemTime>,
}

/// The machines and their state, shared by every build of the daemon.
pub struct Farm {
    file: PathBuf,
    state: Mutex<State>,
    pub connections: Connections,
    /// Notified when a slot is freed or a machine's state changes, so
    /// derivations waiting for a machine retry at once.
    pub changed: tokio::sync::Notify,
}

/// A reserved slot on a machine; released on drop.
pub struct Slot<'a> {
    farm: &'a Farm,
    pub machine: BuildMachine,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut st = self.farm.lock();
        if let Some(l) = st.live.get_mut(&self.machine.name) {
            l.in_use = l.in_use.saturating_sub(1);
        }
        drop(st);
        self.farm.changed.notify_waiters();
    }
}

/// The result of asking for a machine.
pub enum Placement<'a> {
    Remote(Box<Slot<'a>>),
    /// No machine matches the derivation: build here.
    Local,
    /// Machines match but none can take it now; why, per machine.
    Wait {
        reasons: Vec<String>,
        /// A candidate is only busy (every slot running our builds): the
        /// farm is working, so the wait is not a failure to reach it.
        busy: bool,
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
            }),
            connections: Connections::new(),
            changed: tokio::sync::Notify::new(),
        };
        farm.reload_if_changed();
        farm
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
    /// list (and says why in the log).
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
                m.machines
            }),
        };
        let mut st = self.lock();
        st.loaded_mtime = mtime;
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
            }
            Err(e) => tracing::warn!("keeping the previous build machines: {e}"),
        }
    }

    fn states<'a>(&self, st: &'a State) -> Vec<MachineState<'a>> {
        st.machines
            .iter()
            .map(|m| {
                // Borrowed, not cloned: a clone copies the last
                // measurement's strings, per machine, per decision.
                let live = st.live.get(&m.name);
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
                    backed_off_until: live.and_then(|l| l.backed_off_until),
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
            .filter(|m| keep(m))
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
        l.info = Some((Instant::now(), info));
        l.failures = 0;
        l.backed_off_until = None;
        l.last_error = None;
        drop(st);
        self.changed.notify_waiters();
    }

    /// A machine failed (connection, timeout, protocol): back it off,
    /// exponentially, capped. Reports while it is backed off are the same
    /// incident (every build and probe that was using the machine fails
    /// at once when it goes down): they do not lengthen the back-off.
    pub fn failed(&self, name: &str, why: &str) {
        let mut st = self.lock();
        let l = st.live.entry(name.to_string()).or_default();
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
    }

    /// A build on the machine succeeded: reset its back-off.
    pub fn succeeded(&self, name: &str) {
        let mut st = self.lock();
        let l = st.live.entry(name.to_string()).or_default();
        l.failures = 0;
        l.backed_off_until = None;
    }

    /// Choose a machine for `needs` and reserve a slot on it, preferring
    /// (other things equal) machines known to hold more of `closure`.
    pub fn place(
        &self,
        needs: &Needs,
        closure: &BTreeSet<ferry_formats::StorePath>,
    ) -> Placement<'_> {
        self.reload_if_changed();
        let mut st = self.lock();
        let states = self.states(&st);
        let choice = scheduler::choose(&states, needs, Instant::now(), |i| {
            share(st.present.get(states[i].name), closure)
        });
        match choice {
            Choice::Machine(i) => {
                let machine = st.machines[i].clone();
                st.live.entry(machine.name.clone()).or_default().in_use += 1;
                Placement::Remote(Box::new(Slot {
                    farm: self,
                    machine,
                }))
            }
            Choice::Local => Placement::Local,
            Choice::Wait(why) => Placement::Wait {
                busy: why
                    .iter()
                    .any(|(_, w)| matches!(w, scheduler::PassedOver::NoFreeSlot { .. })),
                reasons: why
                    .into_iter()
                    .map(|(name, w)| {
                        let last = st
                            .live
                            .get(&name)
                            .and_then(|l| l.last_error.clone())
                            .map(|e| format!(" (last error: {e})"))
                            .unwrap_or_default();
                        format!("{name}: {w}{last}")
                    })
                    .collect(),
            },
        }
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
        if machines.is_empty() {
            return format!("; {} lists no build machine", self.file.display());
        }
        let mut out = format!("; the machines of {}:", self.file.display());
        for m in &machines {
            let mut why = Vec::new();
            if !m.systems.contains(&needs.system) {
                why.push(format!("builds for {} only", m.systems.join(", ")));
            }
            let lacking: Vec<&str> = needs
                .features
                .iter()
                .filter(|f| !m.features.contains(f))
                .map(String::as_str)
                .collect();
            if !lacking.is_empty() {
                why.push(format!("lacks feature {}", lacking.join(", ")));
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
                    backed_off_for: live
                        .backed_off_until
                        .filter(|t| *t > now)
                        .map(|t| t.duration_since(now).as_secs_f64()),
                    failures: live.failures,
                    last_error: live.last_error,
                    measured_secs_ago: live
                        .info
                        .as_ref()
                        .map(|(at, _)| now.duration_since(*at).as_secs_f64()),
                    info: live.info.map(|(_, i)| i),
                }
            })
            .collect()
    }

    pub fn target(m: &BuildMachine) -> SshTarget {
        SshTarget::from_machine(m)
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
            farm.failed("a", "connection lost");
        }
        let (failures, secs) = backed_off(&farm);
        assert_eq!(failures, 1);
        assert!(secs <= BACKOFF_FIRST.as_secs_f64(), "{secs}");
        // Once the back-off is over, a new failure doubles it.
        farm.lock().live.get_mut("a").unwrap().backed_off_until = Some(Instant::now());
        farm.failed("a", "connection lost");
        let (failures, secs) = backed_off(&farm);
        assert_eq!(failures, 2);
        assert!(secs > BACKOFF_FIRST.as_secs_f64(), "{secs}");
    }
}
