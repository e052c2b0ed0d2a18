//! The build engine: turns "build these derivations" into builder runs, in
//! dependency order, at most `max_jobs` at once, each derivation once.
//!
//! The same engine serves the daemon's clients and `ferry build` without a
//! daemon (embedded mode): "built once" holds within a process through an
//! in-memory lock per derivation, and across processes through the store's
//! file lock on the `.drv` path. Whoever gets the lock second finds the
//! outputs valid and reports them as such.
//!
//! Here: the engine, its settings and one derivation's build (here or on a
//! build machine); `engine/plan.rs` is the plan of a build (what needs
//! building, in which order) and the loop that runs it; `engine/outcome.rs`
//! turns a build's end into its result; `engine/guards.rs` is what a
//! running build gives back however it ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use ferry_build::{BuildJob, BuildSettings, Outcome};
use ferry_formats::derivation::Derivation;
use ferry_formats::StorePath;
use ferry_protocol::{BuildEvent, BuildOptions, BuildResult, BuildStatus};
use ferry_store::{Store, StoreError};
use tokio::sync::Semaphore;

use crate::history::BuildTimes;
use crate::offload::scheduler::Needs;
use crate::offload::{Job, Offloader, Placed};

mod guards;
mod outcome;
mod plan;
mod sent;
mod sign;

use guards::{BuilderGuard, ForgetWhenDone, Running};
pub(crate) use outcome::outcome_word;
use outcome::result;
use plan::Priority;

/// How this machine builds.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Builders running at once here; 0: none (build machines only).
    pub max_jobs: usize,
    pub build: BuildSettings,
    /// Systems this machine builds for.
    pub systems: Vec<String>,
    /// Features its builders have.
    pub features: Vec<String>,
    /// First uid (and gid) of the builders when running as root, sandbox
    /// or not; builder i uses base + i, one build at a time.
    pub build_uid_base: u32,
    /// Offload to the machines of this file (`None`: build everything here).
    pub machines_file: Option<std::path::PathBuf>,
    /// How long every matching build machine may stay unusable (down,
    /// overloaded, full) before the derivation is built here (or fails,
    /// when this machine cannot build it). Machines merely busy with this
    /// daemon's builds are waited for without limit.
    pub offload_max_wait: std::time::Duration,
    /// How long a build machine may go without progress in any step before
    /// it is backed off and the derivation placed again (`None`: no bound).
    pub offload_silence: Option<std::time::Duration>,
    /// The collector keeps the outputs of live derivations (Nix's
    /// `keep-outputs`, default false).
    pub keep_outputs: bool,
    /// The collector keeps the derivers of live paths (Nix's
    /// `keep-derivations`, default true).
    pub keep_derivations: bool,
    /// Collect automatically when free space on the store's file system
    /// drops under this many bytes during builds and imports (Nix's
    /// `min-free`; `None`: never, the default). See [`crate::auto_gc`].
    pub min_free: Option<u64>,
    /// ... until this many bytes are free (Nix's `max-free`; `None`: until
    /// nothing dead is left).
    pub max_free: Option<u64>,
    /// Nix's `secret-key-files`: what is built here is signed with each
    /// in Nix's form too (see `engine/sign.rs`).
    pub nix_secret_keys: Vec<Arc<ferry_trust::nix_signature::NixSecretKey>>,
}

impl EngineConfig {
    pub fn new(max_jobs: usize, build: BuildSettings) -> Self {
        EngineConfig {
            max_jobs,
            build,
            systems: ferry_build::systems::native_systems(),
            features: Vec::new(),
            build_uid_base: 30000,
            machines_file: None,
            offload_max_wait: std::time::Duration::from_secs(60),
            keep_outputs: false,
            keep_derivations: true,
            min_free: None,
            max_free: None,
            offload_silence: Some(crate::offload::ssh::DEFAULT_SILENCE),
            nix_secret_keys: Vec::new(),
        }
    }
}

/// Builds derivations in a store.
pub struct Engine {
    store: Arc<Store>,
    config: EngineConfig,
    /// Local job permits: at most `max_jobs` builders run here at once.
    job_permits: Arc<Semaphore>,
    /// Free builder numbers (builder i runs as uid and gid
    /// `build_uid_base + i`).
    free_builders: Mutex<Vec<u32>>,
    /// One lock per derivation being built in this process.
    building: Mutex<HashMap<StorePath, Arc<tokio::sync::Mutex<()>>>>,
    running: AtomicU32,
    offload: Option<Offloader>,
    /// Why offloading is off although machines.scm is configured (told to
    /// every build's client).
    offload_error: Option<String>,
    /// How long builds took: the estimates that order the farm's queue.
    history: BuildTimes,
    auto_gc: crate::auto_gc::AutoGc,
}

/// The name a derivation's build times are kept under: its `name`, as in
/// its file name.
fn history_name(p: &StorePath, drv: &Derivation) -> String {
    match drv.name() {
        Some(n) => n.into_owned(),
        None => p.name().trim_end_matches(".drv").to_string(),
    }
}

/// Progress is sent here (bounded, never blocking); a client gone is not an
/// error.
pub use crate::events::Events;

/// "a" or "an" before a system name, as it is read aloud ("an aarch64-linux",
/// "an x86_64-linux", "an i686-linux", "a riscv64-linux").
fn article(system: &str) -> &'static str {
    match system.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'x') => "an",
        _ => "a",
    }
}

impl Engine {
    pub fn new(store: Arc<Store>, config: EngineConfig) -> Arc<Engine> {
        // Sandbox trees (or private overlay stores of unsandboxed builds)
        // of builds whose process died (a crash, a kill -9).
        match ferry_build::sandbox::remove_stale_chroots(store.real_store_dir()) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!("removed {n} sandbox tree(s) left by builds that were killed")
            }
            Err(e) => tracing::warn!("removing sandbox trees left by killed builds: {e}"),
        }
        // Build directories of builds whose daemon died.
        match ferry_build::builder::remove_stale_build_dirs(&std::env::temp_dir()) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!("removed {n} build directory(ies) left by builds that were killed")
            }
            Err(e) => tracing::warn!("removing build directories left by killed builds: {e}"),
        }
        let mut offload_error = None;
        let offload = config.machines_file.as_ref().and_then(|file| {
            match Offloader::new(
                store.clone(),
                file.clone(),
                config.offload_max_wait,
                config.offload_silence,
            ) {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::warn!("not offloading: {e}");
                    offload_error = Some(format!("not offloading (building here): {e}"));
                    None
                }
            }
        });
        let history_file = store.locations().state_dir.join("db/build-times.sqlite");
        let history = BuildTimes::open(&history_file).unwrap_or_else(|e| {
            tracing::warn!("build times are kept in memory only: {e}");
            BuildTimes::in_memory()
        });
        Arc::new(Engine {
            history,
            offload,
            offload_error,
            store,
            job_permits: Arc::new(Semaphore::new(config.max_jobs)),
            free_builders: Mutex::new((0..config.max_jobs as u32).rev().collect()),
            config,
            building: Mutex::new(HashMap::new()),
            running: AtomicU32::new(0),
            auto_gc: Default::default(),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The build machines as this engine sees them (empty without offload).
    pub fn farm_status(&self) -> Vec<ferry_protocol::FarmMachine> {
        self.offload.as_ref().map_or_else(Vec::new, |o| o.status())
    }

    /// Automatic collection's state (see [`crate::auto_gc`]).
    pub fn auto_gc(&self) -> &crate::auto_gc::AutoGc {
        &self.auto_gc
    }

    /// Builders running now.
    pub fn builds_running(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    /// Build `drvs` and what they need; one result per requested
    /// derivation, in order.
    pub async fn build(
        self: &Arc<Self>,
        drvs: Vec<StorePath>,
        opts: BuildOptions,
        events: Events,
    ) -> Vec<BuildResult> {
        if let Some(e) = self.offload_error.as_ref().filter(|_| !opts.no_offload) {
            events.warn_once(" offload", || e.clone());
        }
        if let (Some(msg), Some(d)) = (crate::auto_gc::check(self), drvs.first()) {
            let _ = events.send(BuildEvent::Log {
                drv: self.store.display(d),
                line: msg,
            });
        }
        let plan = {
            let engine = self.clone();
            let drvs = drvs.clone();
            tokio::task::spawn_blocking(move || {
                // Held until the build ends: the derivations, hence their
                // inputs and outputs, are safe from collection (waits
                // while one runs).
                let roots = engine.store.temp_roots()?;
                let _gc = engine.store.gc_shared()?;
                for d in &drvs {
                    roots.add_locked(d)?;
                }
                engine.plan(&drvs).map(|(nodes, done)| {
                    // They order the farm's queue only: local job permits
                    // are taken first come, first served.
                    let priorities = match engine.offload {
                        Some(_) => engine.priorities(&nodes),
                        None => HashMap::new(),
                    };
                    (nodes, done, priorities, roots)
                })
            })
            .await
            .expect("planning task panicked")
        };
        let (nodes, mut done, priorities, _roots) = match plan {
            Ok(p) => p,
            Err(e) => {
                return drvs
                    .iter()
                    .map(|d| BuildResult {
                        error: Some(e.to_string()),
                        ..result(&self.store.display(d), BuildStatus::Failed)
                    })
                    .collect()
            }
        };
        self.run_plan(nodes, &priorities, &mut done, &opts, &events)
            .await;
        drvs.iter()
            .map(|d| {
                done.get(d).cloned().unwrap_or_else(|| BuildResult {
                    error: Some("not built because another build failed (use --keep-going to build what does not depend on it)".into()),
                    ..result(&self.store.display(d), BuildStatus::DependencyFailed)
                })
            })
            .collect()
    }

    fn output_paths(&self, drv: &Derivation) -> Result<BTreeMap<String, StorePath>, StoreError> {
        drv.outputs
            .iter()
            .map(|(n, o)| Ok((n.clone(), self.store.parse_path(&o.path)?)))
            .collect()
    }

    /// Build one derivation whose inputs are valid.
    async fn build_one(
        self: &Arc<Self>,
        p: &StorePath,
        drv: Derivation,
        prio: Priority,
        opts: &BuildOptions,
        events: &Events,
    ) -> BuildResult {
        let shown = self.store.display(p);
        match self.try_build_one(p, drv, prio, opts, events).await {
            Ok(res) => self.sign_built(res).await,
            Err(e) => BuildResult {
                error: Some(format!("building {shown}: {e}")),
                ..result(&shown, BuildStatus::Failed)
            },
        }
    }

    async fn try_build_one(
        self: &Arc<Self>,
        p: &StorePath,
        drv: Derivation,
        prio: Priority,
        opts: &BuildOptions,
        events: &Events,
    ) -> Result<BuildResult, Box<dyn std::error::Error + Send + Sync>> {
        let shown = self.store.display(p);
        // Once per derivation in this process...
        let _forget = ForgetWhenDone { engine: self, p };
        let mine = {
            let mut building = self.building.lock().unwrap_or_else(|e| e.into_inner());
            building.entry(p.clone()).or_default().clone()
        };
        let _in_process = events
            .waiting(
                &shown,
                || "for another build of it in this daemon".into(),
                mine.lock(),
            )
            .await;
        // ...and across processes. Usually free: take it without a
        // blocking thread (a build of many derivations would otherwise
        // start one per derivation at once); wait for it on one if not.
        let _drv_lock = match self.store.try_lock_path(p)? {
            Some(lock) => lock,
            None => {
                let store = self.store.clone();
                let p = p.clone();
                let locked = tokio::task::spawn_blocking(move || store.lock_path(&p));
                let what = || format!("for the lock on {shown} (another process builds it)");
                events.waiting(&shown, what, locked).await??
            }
        };
        let outputs = self.output_paths(&drv)?;
        if self.store.are_valid(outputs.values())? {
            return Ok(BuildResult {
                outputs: outputs
                    .iter()
                    .map(|(n, o)| (n.clone(), self.store.display(o)))
                    .collect(),
                ..result(&shown, BuildStatus::AlreadyValid)
            });
        }
        // A derivation offloaded here was placed by the master's
        // machines.scm, which vouches for this machine's systems and
        // features (the daemon has no setting of its own for them).
        // max-jobs 0 (the daemon's, or this request's): build machines only.
        let no_local = self.config.max_jobs == 0 || opts.no_local;
        let local_ok = !no_local && (opts.offloaded || self.can_build_locally(&drv));
        let prefer_local = drv.env.get("preferLocalBuild").is_some_and(|v| v == "1");
        if let Some(off) = &self.offload {
            if !(opts.offloaded || opts.no_offload || prefer_local && local_ok) {
                if let Some(res) = self
                    .offload_build(off, p, &drv, prio, opts, events, local_ok)
                    .await?
                {
                    return Ok(res);
                }
            }
        }
        if no_local {
            return Ok(BuildResult {
                error: Some(format!(
                    "{shown} must be built on a build machine (max-jobs = 0: nothing is built here){}",
                    match &self.offload {
                        Some(off) => off.why_not_candidates(&Needs::of(&drv)),
                        None => "; but no machines.scm lists build machines (or offloading is off)"
                            .into(),
                    },
                )),
                ..result(&shown, BuildStatus::Failed)
            });
        }
        if !local_ok {
            return Ok(BuildResult {
                error: Some(format!(
                    "{shown} needs {} {} machine{}, and this one builds for {}{}; add a build machine that has them to machines.scm{}",
                    article(&drv.system),
                    drv.system,
                    Needs::of(&drv).features_text(),
                    self.config.systems.join(", "),
                    if self.config.features.is_empty() {
                        String::new()
                    } else {
                        format!(" with {}", self.config.features.join(", "))
                    },
                    match &self.offload {
                        Some(off) => off.why_not_candidates(&Needs::of(&drv)),
                        None => " (offloading is off)".into(),
                    },
                )),
                ..result(&shown, BuildStatus::Failed)
            });
        }
        let what = || {
            format!(
                "for a local job permit ({} building here)",
                self.config
                    .max_jobs
                    .saturating_sub(self.job_permits.available_permits())
            )
        };
        let _permit = events
            .waiting(&shown, what, self.job_permits.clone().acquire_owned())
            .await?;
        let builder = self
            .free_builders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or(0);
        let _builder = BuilderGuard {
            engine: self,
            builder,
        };
        let input_closure = self.input_closure(&drv).await?;
        let name = history_name(p, &drv);
        let job = BuildJob {
            drv_path: p.clone(),
            drv,
            input_closure,
            uid: self.config.build_uid_base + builder,
            gid: self.config.build_uid_base + builder,
        };
        let mut settings = self.config.build.clone();
        if opts.cores > 0 {
            settings.cores = opts.cores;
        }
        // The daemon's limits are the most a client gets; it may ask for
        // less.
        let lower = |daemon: Option<std::time::Duration>, client: u64| match (daemon, client) {
            (d, 0) => d,
            (Some(d), c) => Some(d.min(std::time::Duration::from_secs(c))),
            (None, c) => Some(std::time::Duration::from_secs(c)),
        };
        settings.max_silent_time = lower(settings.max_silent_time, opts.max_silent_time);
        settings.timeout = lower(settings.timeout, opts.timeout);
        settings.keep_failed |= opts.keep_failed;
        // The session let only a trusted user's wish through.
        if opts.sandbox == Some(false) {
            settings.sandbox = false;
        }
        let _ = events.send(BuildEvent::Started {
            drv: shown.clone(),
            machine: "localhost".into(),
        });
        let counted = Running::new(&self.running);
        let mut on_line = |line: &str| {
            let _ = events.send(BuildEvent::Log {
                drv: shown.clone(),
                line: line.to_string(),
            });
        };
        tracing::info!(drv = %shown, on = %"localhost", "build started");
        let started = std::time::Instant::now();
        let outcome = ferry_build::build(&self.store, &job, &settings, &mut on_line).await;
        drop(counted);
        tracing::info!(
            drv = %shown,
            on = %"localhost",
            secs = %format!("{:.2}", started.elapsed().as_secs_f64()),
            result = %match &outcome {
                Ok(o) => outcome_word(o),
                Err(_) => "error",
            },
            "build finished"
        );
        if let Ok(Outcome::Built {
            already_valid: false,
            ..
        }) = &outcome
        {
            self.record_build_time(name, started.elapsed().as_secs_f64(), 1.0);
        }
        let res = self.outcome_result(&shown, outcome?);
        let _ = events.send(BuildEvent::Finished {
            drv: shown,
            ok: res.status != BuildStatus::Failed,
        });
        Ok(res)
    }

    /// Add a build's duration to the history, off the async threads (a
    /// SQLite write may wait for another process's lock).
    fn record_build_time(self: &Arc<Self>, name: String, secs: f64, speed: f64) {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.history.record(&name, secs, speed));
    }

    /// Can this machine build `drv` (system and required features)?
    fn can_build_locally(&self, drv: &Derivation) -> bool {
        let needs = Needs::of(drv);
        let builtin = ["builtin".to_string()];
        needs.met_by(&self.config.systems, &self.config.features)
            || needs.met_by(&builtin, &self.config.features)
    }

    /// Try to build `drv` on a build machine (see [`Offloader::build`]).
    /// `None`: build it here (no machine matches, or none became usable in
    /// time and this machine can build it).
    #[allow(clippy::too_many_arguments)]
    async fn offload_build(
        self: &Arc<Self>,
        off: &Offloader,
        p: &StorePath,
        drv: &Derivation,
        prio: Priority,
        opts: &BuildOptions,
        events: &Events,
        local_ok: bool,
    ) -> Result<Option<BuildResult>, StoreError> {
        let shown = self.store.display(p);
        let local_free = || self.job_permits.available_permits() > 0;
        let job = Job {
            drv_path: p,
            drv,
            closure: self.input_closure(drv).await?,
            remaining: prio.remaining,
            estimate: prio.estimate,
            opts,
            events,
            local_ok,
            local_free: &local_free,
        };
        match off.build(job).await {
            Placed::Local => Ok(None),
            Placed::Failed(why) => Ok(Some(BuildResult {
                error: Some(why),
                ..result(&shown, BuildStatus::Failed)
            })),
            Placed::Remote {
                outcome,
                speed,
                build_time,
            } => {
                if let Some(took) = build_time {
                    self.record_build_time(history_name(p, drv), took.as_secs_f64(), speed);
                }
                let res = self.outcome_result(&shown, outcome);
                let _ = events.send(BuildEvent::Finished {
                    drv: shown,
                    ok: res.status != BuildStatus::Failed,
                });
                Ok(Some(res))
            }
        }
    }

    /// Everything a builder may read: the closure of its input sources and
    /// of the outputs it takes from its input derivations.
    async fn input_closure(&self, drv: &Derivation) -> Result<BTreeSet<StorePath>, StoreError> {
        let mut roots = Vec::new();
        for src in &drv.input_srcs {
            roots.push(self.store.parse_path(src)?);
        }
        for (input, outs) in &drv.input_drvs {
            let input_drv = self.store.read_derivation(&self.store.parse_path(input)?)?;
            for o in outs {
                if let Some(out) = input_drv.outputs.get(o) {
                    roots.push(self.store.parse_path(&out.path)?);
                }
            }
        }
        self.store.closure(&roots)
    }
}
