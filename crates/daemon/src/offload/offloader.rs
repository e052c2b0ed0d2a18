//! The one owner of offloading: the farm (machines, their live state and
//! SSH connections), this store's signing key, and the background refresh
//! of the machines' measurements. The engine asks it one thing per
//! derivation, [`Offloader::build`]: build this on a machine, or say that
//! it should be built here (or cannot be built at all); it never reaches
//! into the farm.
//!
//! The flow of one derivation: start a probe of each candidate whose
//! measurement is missing or old (in the background: placement never waits
//! for a probe; a machine never measured is not given builds until its
//! first probe answers, one measured before is used with what is known);
//! file a [`Request`] in the farm's queue (ordered by remaining path, see
//! [`super::farm`]); once a machine is granted, take its connection and run
//! [`build_remote`] there; on a failure back the machine off by its kind
//! ([`OffloadError::backoff`]) and ask again; when every candidate stays
//! unusable for `--offload-max-wait`, or a local job permit is free while
//! the candidates are busy, give the derivation back to the engine.
//!
//! Every step on a machine is bounded by the liveness bound
//! (`--offload-silence-timeout`, 30 s without progress by default): a
//! machine that stops answering (its daemon stopped while sshd still
//! answers keep-alives) is backed off within it and the derivation placed
//! again.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_build::Outcome;
use ferry_formats::derivation::Derivation;
use ferry_formats::StorePath;
use ferry_protocol::{BuildEvent, BuildOptions};
use ferry_scheme::BuildMachine;
use ferry_store::Store;
use tokio::task::JoinSet;

use super::error::{Backoff, OffloadError};
use super::remote::{build_remote, RemoteContext};
use super::scheduler::Needs;
use super::{Farm, Placement, Request};
use crate::events::Events;

/// Longest a placement waits for the first measurement of machines never
/// measured before placing on the others.
const FIRST_CONTACT_GRACE: Duration = Duration::from_secs(2);

/// How often the background refresh looks for stale measurements.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Offloading: the farm, the key that signs what is sent, the refresher.
pub struct Offloader {
    farm: Arc<Farm>,
    key: Arc<ferry_trust::SecretKey>,
    store: Arc<Store>,
    /// How long every candidate may stay unusable before the derivation is
    /// given back (`--offload-max-wait`).
    max_wait: Duration,
    /// Starts the background refresh of machines' load and free space
    /// (once, from the first offload, inside the async runtime).
    refresher: std::sync::Once,
}

/// One derivation to place.
pub struct Job<'a> {
    pub drv_path: &'a StorePath,
    pub drv: &'a Derivation,
    /// The closure of its inputs, all valid here.
    pub closure: BTreeSet<StorePath>,
    /// Its place in the farm's queue (see [`Request`]).
    pub remaining: f64,
    pub estimate: Option<f64>,
    pub opts: &'a BuildOptions,
    pub events: &'a Events,
    /// This machine can build it (else it waits for a machine, or fails).
    pub local_ok: bool,
    /// A local job permit is free now: taken rather than waiting for a
    /// busy farm.
    pub local_free: &'a (dyn Fn() -> bool + Send + Sync),
}

/// What became of a job.
pub enum Placed {
    /// Build it here.
    Local,
    /// Built (or failed) on `machine`.
    Remote {
        outcome: Outcome,
        /// The machine's `speed`, and how long it took to build there when
        /// it did (for the build-time history).
        speed: f64,
        build_time: Option<Duration>,
    },
    /// No machine could take it in time and this machine cannot build it
    /// (why, per candidate), or this store failed while offloading it.
    Failed(String),
}

impl Offloader {
    /// Offload to the machines of `machines_file`, signing with this
    /// store's key (made on first use).
    pub fn new(
        store: Arc<Store>,
        machines_file: PathBuf,
        max_wait: Duration,
        silence: Option<Duration>,
    ) -> Result<Offloader, ferry_trust::TrustError> {
        let config_dir = &store.locations().config_dir;
        let (key, _) = ferry_trust::keys::load_or_generate_secret_key(config_dir)?;
        let mut farm = Farm::new(machines_file);
        farm.set_silence(silence);
        farm.watch(ferry_trust::Acl::path(config_dir));
        Ok(Offloader {
            farm: Arc::new(farm),
            key: Arc::new(key),
            store,
            max_wait,
            refresher: std::sync::Once::new(),
        })
    }

    /// The build machines as this daemon sees them (`ferry offload status`).
    /// Asking starts the background refresh and measures what is stale:
    /// a daemon that has not offloaded yet learns its machines' state.
    pub fn status(&self) -> Vec<ferry_protocol::FarmMachine> {
        if tokio::runtime::Handle::try_current().is_ok() {
            let store_dir = self.store.store_dir().as_str().to_string();
            self.refresher
                .call_once(|| start_refresher(&self.farm, store_dir.clone()));
            for m in self.farm.stale() {
                spawn_probe(&self.farm, m, &store_dir);
            }
        }
        self.farm.status()
    }

    /// The fastest machine that can build what `needs` (its `speed`).
    pub fn fastest(&self, needs: &Needs) -> Option<f64> {
        self.farm.fastest(needs)
    }

    /// Why no machine matches `needs`, machine by machine (for the error of
    /// a derivation nothing can build; starts with ";").
    pub fn why_not_candidates(&self, needs: &Needs) -> String {
        self.farm.why_not_candidates(needs)
    }

    /// Build `job` on a build machine, or say it is to be built here.
    pub async fn build(&self, job: Job<'_>) -> Placed {
        let shown = self.store.display(job.drv_path);
        let request = Request {
            needs: Needs::of(job.drv),
            closure: Arc::new(job.closure),
            remaining: job.remaining,
            estimate: job.estimate,
        };
        let mut deadline = Instant::now() + self.max_wait;
        let mut ticket = None;
        let mut first = true;
        self.tell_load_error(job.events, job.local_ok);
        let mut wait = WaitTeller::default();
        loop {
            self.refresher.call_once(|| {
                start_refresher(&self.farm, self.store.store_dir().as_str().to_string())
            });
            self.farm.recheck_changed();
            // Measure the stale candidates, in the background: placement
            // goes on with what is known, and a probe's answer wakes the
            // queue.
            for m in self.farm.stale_candidates(&request.needs) {
                spawn_probe(&self.farm, m, self.store.store_dir().as_str());
            }
            // Machines never measured (the daemon just started, or
            // machines.scm changed) get a short grace to answer, so that
            // the first placement is not a race between probes; a machine
            // that does not answer costs that grace once (from the start
            // of its probe), not its bound.
            if std::mem::take(&mut first) {
                while self
                    .farm
                    .first_contact_until(&request.needs, FIRST_CONTACT_GRACE)
                    .is_some()
                {
                    wait.tell(job.events, &shown, || {
                        "for build machines to answer their first probe".into()
                    });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            // In the farm's queue until a machine is granted (the place is
            // kept while waiting: it is ordered by the remaining path).
            let waiting = ticket.get_or_insert_with(|| self.farm.request(request.clone()));
            let placement = waiting.poll();
            // The machines passed over, and why: said to this build's
            // client once per machine.
            for (name, why) in self.farm.skipped(&request.needs) {
                job.events
                    .warn_once(&name, || format!("build machine {name} skipped: {why}"));
            }
            let slot = match placement {
                Placement::Local => return Placed::Local,
                Placement::Remote(slot) => {
                    ticket = None;
                    wait = WaitTeller::default();
                    slot
                }
                Placement::Wait {
                    busy,
                    held,
                    measuring,
                } => {
                    // This machine is a build machine too: when every
                    // candidate is busy and a local job permit is free, use
                    // it rather than wait (Nix treats the local machine as
                    // speed 0 once builders exist; Guix only waits). Not
                    // when held for a faster machine than those free, nor
                    // while a machine's first probe is out (it answers
                    // within the liveness bound).
                    if !held && !measuring && job.local_ok && (job.local_free)() {
                        if !busy {
                            // Not one candidate usable: a fallback the
                            // user did not ask for, said (once).
                            job.events.warn_once(&fallback_subject(&request.needs), || {
                                format!(
                                    "no build machine can take {} builds now, so {shown} (and any other of this build while none can) is built here{}",
                                    request.needs.system,
                                    unsaid(job.events, waiting.reasons())
                                )
                            });
                        }
                        return Placed::Local;
                    }
                    // --offload-max-wait bounds how long the candidates
                    // are all unusable (down, overloaded, full), not how
                    // long a busy farm takes to free a slot.
                    let hopeless = !busy
                        && !measuring
                        && !held
                        && self.farm.all_out_until_changed(&request.needs);
                    if busy || measuring {
                        deadline = Instant::now() + self.max_wait;
                    } else if hopeless {
                        // Only a person can make one usable (a host key,
                        // a refused key, a machines.scm entry): no wait.
                        deadline = Instant::now();
                    }
                    let within = if hopeless {
                        "now (each is out until machines.scm, the ACL or its key changes)"
                            .to_string()
                    } else {
                        format!("within {} s", self.max_wait.as_secs())
                    };
                    if Instant::now() < deadline {
                        wait.tell(job.events, &shown, || {
                            format!("for a build machine: {}", waiting.summary())
                        });
                        // Until granted; at most a second, to re-measure
                        // stale machines.
                        waiting.changed(Duration::from_secs(1)).await;
                        continue;
                    }
                    if job.local_ok {
                        // A fallback the user did not ask for: said (once
                        // per build and kind of machine).
                        let why = format!(
                            "no build machine could take {shown} {within}, so it (and any other of this build while none can) is built here{}",
                            unsaid(job.events, waiting.reasons())
                        );
                        tracing::info!("{why}");
                        job.events
                            .warn_once(&fallback_subject(&request.needs), || why);
                        return Placed::Local;
                    }
                    return Placed::Failed(format!(
                        "no build machine could take {shown} {within}:\n  {}",
                        waiting.reasons().join("\n  ")
                    ));
                }
            };
            let machine = &slot.machine;
            let name = machine.name.clone();
            let conn = match self.farm.connection(machine).await {
                Ok(c) => c,
                Err(e) => {
                    let e = OffloadError::ssh(&name, e);
                    job.events.warn_once(&name, || {
                        format!("build machine {name} skipped: {e}; {shown} is placed again")
                    });
                    self.farm.failed(&name, &e);
                    continue;
                }
            };
            let _ = job.events.send(BuildEvent::Started {
                drv: shown.clone(),
                machine: name.clone(),
            });
            tracing::info!(drv = %shown, on = %name, "build started");
            let started = std::time::Instant::now();
            let mut on_line = |line: &str| {
                let _ = job.events.send(BuildEvent::Log {
                    drv: shown.clone(),
                    line: line.to_string(),
                });
            };
            let cx = RemoteContext {
                store: &self.store,
                signing_key: &self.key,
                machine,
                conn: conn.clone(),
                events: Some(job.events),
            };
            match build_remote(
                &cx,
                job.drv_path,
                job.drv,
                &request.closure,
                job.opts,
                &mut on_line,
            )
            .await
            {
                Ok(remote) => {
                    tracing::info!(
                        drv = %shown,
                        on = %name,
                        secs = %format!("{:.2}", started.elapsed().as_secs_f64()),
                        result = %crate::engine::outcome_word(&remote.outcome),
                        "build finished"
                    );
                    self.farm.succeeded(&name);
                    // What the machine now holds: the inputs sent and the
                    // outputs built there.
                    let mut present: Vec<StorePath> = request.closure.iter().cloned().collect();
                    if let Outcome::Built { outputs, .. } = &remote.outcome {
                        present.extend(outputs.values().cloned());
                    }
                    self.farm.record_present(&name, present);
                    let build_time = match &remote.outcome {
                        Outcome::Built {
                            already_valid: false,
                            ..
                        } => remote.build_time,
                        _ => None,
                    };
                    return Placed::Remote {
                        outcome: remote.outcome,
                        speed: machine.speed,
                        build_time,
                    };
                }
                Err(e) if e.backoff() == Backoff::None => {
                    return Placed::Failed(format!("offloading {shown} to {name}: {e}"));
                }
                Err(e) => {
                    tracing::warn!(drv = %shown, on = %name, kind = e.kind(), "build moved elsewhere: {e}");
                    job.events.warn_once(&name, || {
                        format!("build machine {name} skipped: {e}; building elsewhere: {shown}")
                    });
                    self.farm.failed(&name, &e);
                    self.farm.drop_connection(&name, &conn).await;
                }
            }
        }
    }
}

impl Offloader {
    /// machines.scm could not be used: said to the client of every build
    /// that would offload (once per build), with what happens instead.
    fn tell_load_error(&self, events: &Events, local_ok: bool) {
        let Some((e, kept)) = self.farm.load_error() else {
            return;
        };
        events.warn_once(LOAD_ERROR_SUBJECT, || {
            if kept > 0 {
                format!("{e}\n(using its last good version meanwhile: {kept} build machine(s))")
            } else if local_ok {
                format!("no build machines, building here: {e}")
            } else {
                format!("no build machines: {e}")
            }
        });
    }
}

/// The reasons (`NAME: why`, one per machine) not already said to this
/// client in a warning about that machine, as lines after a ":"; or a
/// pointer to those warnings.
fn unsaid(events: &Events, reasons: Vec<String>) -> String {
    let new: Vec<String> = reasons
        .into_iter()
        .filter(|r| {
            !r.split_once(": ")
                .is_some_and(|(name, _)| events.warned(name))
        })
        .collect();
    if new.is_empty() {
        "; see the machines skipped above".into()
    } else {
        format!(":\n  {}", new.join("\n  "))
    }
}

/// The subject of the warning about machines.scm ([`Events::warn_once`]).
const LOAD_ERROR_SUBJECT: &str = " machines.scm";

/// The subject of the warning that builds of `needs` fall back to this
/// machine (not a machine's name: those have no spaces).
fn fallback_subject(needs: &Needs) -> String {
    format!(" local {}{}", needs.system, needs.features_text())
}

/// Tells a client what a derivation waits for once the wait is longer than
/// a second, at most once a second.
#[derive(Default)]
struct WaitTeller {
    since: Option<Instant>,
    told: Option<Instant>,
}

impl WaitTeller {
    fn tell(&mut self, events: &Events, drv: &str, detail: impl FnOnce() -> String) {
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= Duration::from_secs(1)
            && self
                .told
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.told = Some(Instant::now());
            let _ = events.send(BuildEvent::Phase {
                drv: drv.to_string(),
                machine: String::new(),
                phase: ferry_protocol::BuildPhase::Waiting,
                detail: Some(detail()),
            });
        }
    }
}

/// Keep the machines' measurements fresh between builds, so placement
/// rarely waits for a probe; stops when the farm is gone.
fn start_refresher(farm: &Arc<Farm>, store_dir: String) {
    let farm = Arc::downgrade(farm);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH_EVERY).await;
            let Some(farm) = farm.upgrade() else { break };
            farm.recheck_changed();
            let mut probes = JoinSet::new();
            for m in farm.stale() {
                if farm.start_probe(&m.name) {
                    let farm = farm.clone();
                    let store_dir = store_dir.clone();
                    probes.spawn(async move { measure(&farm, &m, &store_dir).await });
                }
            }
            while probes.join_next().await.is_some() {}
        }
    });
}

/// Measure `m` in the background, unless a probe of it is already out.
fn spawn_probe(farm: &Arc<Farm>, m: BuildMachine, store_dir: &str) {
    if !farm.start_probe(&m.name) {
        return;
    }
    let farm = farm.clone();
    let store_dir = store_dir.to_string();
    tokio::spawn(async move { measure(&farm, &m, &store_dir).await });
}

/// Refresh a machine's load and free space (or back it off); the probe
/// started with [`Farm::start_probe`] ends here, however it ends.
async fn measure(farm: &Farm, m: &BuildMachine, store_dir: &str) {
    struct Over<'a>(&'a Farm, &'a str);
    impl Drop for Over<'_> {
        fn drop(&mut self) {
            self.0.probe_over(self.1);
        }
    }
    let _over = Over(farm, &m.name);
    let attempt = async {
        let conn = farm.connection(m).await?;
        conn.machine_info(&m.daemon_socket, store_dir).await
    };
    // The streams are bounded by the liveness bound; without one, a probe
    // still ends.
    let bound = farm.silence().unwrap_or(PROBE_MAX) + super::ssh::DEFAULT_CONNECT_TIMEOUT;
    match tokio::time::timeout(bound, attempt).await {
        Ok(Ok(info)) => farm.measured(&m.name, info),
        Ok(Err(e)) => farm.failed(&m.name, &OffloadError::ssh(&m.name, e)),
        Err(_) => farm.failed(
            &m.name,
            &OffloadError::Silent {
                machine: m.name.clone(),
                step: "measuring its load and free space".into(),
                after: bound,
            },
        ),
    }
}

/// Longest a probe may take when steps have no liveness bound.
const PROBE_MAX: Duration = Duration::from_secs(60);
