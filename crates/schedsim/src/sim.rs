//! The discrete-event simulator: one master, the farm, the work, a rule.
//!
//! A build of derivation `d` placed on machine `M`:
//!
//! 1. takes one of M's slots (held until step 4);
//! 2. uploads the outputs of `d`'s inputs that M does not hold, at M's link
//!    bandwidth (outputs live where they were built, where they were sent
//!    and on the master; a transfer does not slow others: the master's
//!    uplink is not a bottleneck in this model);
//! 3. runs: it is one runnable thread; M's cores are shared fairly among
//!    its running builds and its background threads, so the build advances
//!    at `speed * min(1, cores / (builds + background))` work units a
//!    second (see [`crate::farm::Machine::rate`]);
//! 4. sends its output back to the master at M's bandwidth, frees the slot;
//!    the derivations waiting for it may start.
//!
//! No per-build overhead (SSH, bookkeeping): the rules are compared, not
//! the tools' implementations. The master builds nothing itself.
//!
//! Load: each machine's 1-minute load average is an exponentially smoothed
//! count of its runnable threads (builds running step 3 plus background),
//! time constant 60 s, exact between events. Guix reads it live at each
//! decision; Ferry reads it as last measured, every 10 s per machine (the
//! daemon re-measures a machine whose measurement is over 10 s old); Nix
//! does not read it.
//!
//! Queue: ready derivations wait in one queue per class of needs (system
//! and features), as in the daemon's `Farm`, served in the order of the
//! [`Discipline`]: Ferry's engine is [`Discipline::CriticalPathHold`],
//! Guix's and Nix's daemons [`Discipline::Fifo`]. A derivation for which
//! no machine is usable waits; the classes behind it that other machines
//! could take go ahead.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use ferry_daemon::scheduler;

use crate::farm::{Background, Farm, CLASSES};
use crate::rules::Rule;
use crate::workload::Workload;

mod steps;

/// Time constant of the 1-minute load average, seconds.
pub const LOAD_TAU: f64 = 60.0;
/// How often Ferry's daemon re-measures a machine, seconds.
pub const MEASURE_EVERY: f64 = 10.0;

/// A bit per (derivation, machine).
#[derive(Debug, Clone)]
pub struct Bitset {
    words: usize,
    bits: Vec<u64>,
}

impl Bitset {
    pub fn new(rows: usize, cols: usize) -> Bitset {
        let words = cols.div_ceil(64).max(1);
        Bitset {
            words,
            bits: vec![0; rows * words],
        }
    }

    pub fn get(&self, row: usize, col: usize) -> bool {
        self.bits[row * self.words + col / 64] & (1 << (col % 64)) != 0
    }

    pub fn set(&mut self, row: usize, col: usize) {
        self.bits[row * self.words + col / 64] |= 1 << (col % 64);
    }
}

/// What rules may read about a machine.
#[derive(Debug, Clone, Default)]
pub struct MachineView {
    /// Slots this master holds there (uploading, building, downloading).
    pub in_use: u32,
    /// Smoothed runnable threads at `load_t`.
    pub load: f64,
    pub load_t: f64,
    /// Runnable threads now (builds running + background).
    pub runnable: f64,
    /// Normalized load as last measured (what Ferry's daemon knows).
    pub measured: f64,
}

impl MachineView {
    /// The 1-minute load average at `now` (>= `load_t`).
    pub fn load_at(&self, now: f64) -> f64 {
        self.runnable + (self.load - self.runnable) * (-(now - self.load_t) / LOAD_TAU).exp()
    }

    /// `load_at(now) / cores`, capped at 1.
    pub fn normalized_load_at(&self, now: f64, cores: u32) -> f64 {
        (self.load_at(now) / cores as f64).min(1.0)
    }
}

/// Which ready derivation goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discipline {
    /// First ready, first served (Guix's and Nix's daemons; Ferry's engine
    /// before its queue).
    Fifo,
    /// Longest chain of derivations after it first (a variant).
    Height,
    /// Longest remaining critical path in seconds at the fastest speed
    /// first, from estimated durations (a variant: Ferry without holding).
    CriticalPath,
    /// [`Discipline::CriticalPath`], and a derivation whose placement on
    /// the machine the rule chose could lengthen the estimated critical
    /// path is held back (`scheduler::hold_for_faster`: the time it loses
    /// there against the fastest machine that can build it exceeds an
    /// eighth of its slack), offered again when a slot frees on a machine
    /// fast enough for it, and takes the machine it refused once held as
    /// long as that machine would lose. Ferry's engine (`Farm::dispatch`).
    CriticalPathHold,
}

impl Discipline {
    pub fn name(self) -> &'static str {
        match self {
            Discipline::Fifo => "fifo",
            Discipline::Height => "height",
            Discipline::CriticalPath => "critical-path",
            Discipline::CriticalPathHold => "critical-path+hold",
        }
    }
}

/// Knobs of one run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub discipline: Discipline,
    /// Also record a derivation's output as present on the machine that
    /// built it, as the engine does (earlier engines recorded only the
    /// input closure they sent).
    pub record_outputs: bool,
    /// Give up (a rule that never places something) after this time.
    pub horizon: f64,
    /// For [`Discipline::CriticalPath`]: each derivation's duration is
    /// known only as an estimate, its true work times `exp(sigma * N(0,1))`
    /// (a build-time history is never exact). 0: exact.
    pub estimate_noise: f64,
    /// Seed of the estimates' errors.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            discipline: Discipline::Fifo,
            record_outputs: true,
            horizon: 1e8,
            estimate_noise: 0.5,
            seed: 0,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SimResult {
    pub rule: String,
    pub discipline: String,
    pub makespan: f64,
    /// Placements made.
    pub placements: u64,
    /// Times the rule was asked and said wait.
    pub waits: u64,
    /// Bytes sent to machines (missing inputs).
    pub uploaded_bytes: f64,
    /// Mean seconds from ready to placed.
    pub mean_queue_wait: f64,
    /// Work-weighted mean speed factor of the machines that built.
    pub mean_speed: f64,
    /// Work-weighted mean of rate / speed (1: no slowdown from sharing).
    pub mean_share: f64,
    /// The longest 1 % of the derivations (by work): mean speed factor of
    /// the machines they ran on, and mean time they took over their best
    /// (work / fastest speed that can build them).
    pub longest_speed: f64,
    pub longest_slowdown: f64,
    /// Seconds of wall clock the simulation took.
    pub wall_secs: f64,
    /// When each derivation's output reached the master.
    #[serde(skip)]
    pub finished: Vec<f64>,
    /// Where each derivation was built.
    #[serde(skip)]
    pub machine: Vec<u32>,
    /// When each derivation was placed (started uploading).
    #[serde(skip)]
    pub started: Vec<f64>,
    /// When each derivation started running (uploads done).
    #[serde(skip)]
    pub running: Vec<f64>,
    /// When each derivation stopped running (its output on the machine).
    #[serde(skip)]
    pub built: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    UploadDone { d: u32, m: u32 },
    Tick { m: u32, version: u64 },
    DownloadDone { d: u32, m: u32 },
    Background { m: u32 },
    Measure { m: u32 },
    LoadFalls { m: u32, version: u64 },
    HoldExpires { d: u32 },
}

struct Timed {
    t: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> Ordering {
        // Earliest first in a max-heap.
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

/// Per machine, what only the simulator sees.
struct Run {
    /// Builds in step 3: (derivation, progress at which it is done).
    running: Vec<(u32, f64)>,
    /// Progress of each running build since the machine started (every
    /// running build advances at the same rate).
    progress: f64,
    /// Time `progress` and the load were last brought up to date.
    t: f64,
    rate: f64,
    background: Background,
    version: u64,
}

enum Queue {
    Fifo(VecDeque<(u64, u32)>),
    Prio(BinaryHeap<(u32, Reverse<u64>, u32)>),
}

impl Queue {
    /// Smaller is served first.
    fn head_key(&self) -> Option<(u32, u64)> {
        match self {
            Queue::Fifo(q) => q.front().map(|&(s, _)| (0, s)),
            Queue::Prio(q) => q.peek().map(|&(p, Reverse(s), _)| (u32::MAX - p, s)),
        }
    }
    fn head(&self) -> Option<u32> {
        match self {
            Queue::Fifo(q) => q.front().map(|&(_, d)| d),
            Queue::Prio(q) => q.peek().map(|&(_, _, d)| d),
        }
    }
    fn pop(&mut self) {
        match self {
            Queue::Fifo(q) => {
                q.pop_front();
            }
            Queue::Prio(q) => {
                q.pop();
            }
        }
    }
    fn is_empty(&self) -> bool {
        match self {
            Queue::Fifo(q) => q.is_empty(),
            Queue::Prio(q) => q.is_empty(),
        }
    }
}

struct Sim<'a> {
    farm: &'a Farm,
    work: &'a Workload,
    cfg: &'a SimConfig,
    views: Vec<MachineView>,
    runs: Vec<Run>,
    class_mask: Vec<u32>,
    /// Physically holds the output.
    holds: Bitset,
    /// The master knows it holds the output (Farm::record_present).
    known: Bitset,
    events: BinaryHeap<Timed>,
    seq: u64,
    queues: Vec<Queue>,
    /// Classes whose head derivation no machine can take until one changes.
    blocked: u32,
    priority: Vec<u32>,
    /// Estimated work and remaining path (critical-path queue only).
    estimate: Vec<f64>,
    remaining: Vec<f64>,
    fastest: [f64; CLASSES],
    /// Held back for a faster machine: (derivation, speed offered, since,
    /// time the machine offered would lose).
    held: Vec<(u32, f64, f64, f64)>,
    /// Per held derivation, its room when held (see
    /// `scheduler::slowest_acceptable`).
    held_room: Vec<f64>,
    pending: Vec<u32>,
    ready_at: Vec<f64>,
    completed: usize,
    now: f64,
    live_load: bool,
    res: SimResult,
    queue_wait_sum: f64,
    speed_work: f64,
    share_work: f64,
}

/// Run `rule` on `farm` and `work`.
pub fn simulate(farm: &Farm, work: &Workload, rule: &mut dyn Rule, cfg: &SimConfig) -> SimResult {
    let wall = std::time::Instant::now();
    let n = work.len();
    let nm = farm.machines.len();
    let fastest = crate::bound::fastest_by_class(farm);
    let (mut estimate, mut remaining) = (Vec::new(), Vec::new());
    let priority = match cfg.discipline {
        Discipline::Fifo => Vec::new(),
        Discipline::Height => work.heights(),
        Discipline::CriticalPath | Discipline::CriticalPathHold => {
            let mut rng = crate::rng::Rng::stream(cfg.seed, "estimates", 0);
            estimate = work
                .drvs
                .iter()
                .map(|d| d.work * (cfg.estimate_noise * rng.normal()).exp())
                .collect();
            // The daemon's own computation (`Engine::priorities`): each
            // estimate at the fastest speed that can build it.
            let durations: Vec<f64> = work
                .drvs
                .iter()
                .zip(&estimate)
                .map(|(d, e)| e / fastest[d.class()])
                .collect();
            let dependents: Vec<Vec<usize>> = (0..n)
                .map(|i| work.dependents(i).iter().map(|&j| j as usize).collect())
                .collect();
            remaining = scheduler::remaining_paths(&durations, &dependents);
            remaining
                .iter()
                .map(|t| (t * 100.0).min(u32::MAX as f64) as u32)
                .collect()
        }
    };
    let mut sim = Sim {
        farm,
        work,
        cfg,
        views: vec![MachineView::default(); nm],
        runs: (0..nm)
            .map(|i| Run {
                running: Vec::new(),
                progress: 0.0,
                t: 0.0,
                rate: 0.0,
                background: farm.background(i),
                version: 0,
            })
            .collect(),
        class_mask: farm.machines.iter().map(|m| m.class_mask()).collect(),
        holds: Bitset::new(n, nm),
        known: Bitset::new(n, nm),
        events: BinaryHeap::new(),
        seq: 0,
        queues: (0..CLASSES)
            .map(|_| match cfg.discipline {
                Discipline::Fifo => Queue::Fifo(VecDeque::new()),
                Discipline::Height | Discipline::CriticalPath | Discipline::CriticalPathHold => {
                    Queue::Prio(BinaryHeap::new())
                }
            })
            .collect(),
        blocked: 0,
        priority,
        estimate,
        remaining,
        fastest,
        held: Vec::new(),
        held_room: Vec::new(),
        pending: (0..n).map(|i| work.deps(i).len() as u32).collect(),
        ready_at: vec![0.0; n],
        completed: 0,
        now: 0.0,
        live_load: rule.live_load(),
        res: SimResult {
            rule: rule.name(),
            discipline: cfg.discipline.name().into(),
            finished: vec![f64::NAN; n],
            machine: vec![u32::MAX; n],
            started: vec![f64::NAN; n],
            running: vec![f64::NAN; n],
            built: vec![f64::NAN; n],
            ..Default::default()
        },
        queue_wait_sum: 0.0,
        speed_work: 0.0,
        share_work: 0.0,
    };
    let measured = rule.measured_load();
    for m in 0..nm {
        // The background has been at its level for a while.
        let bg = sim.runs[m].background.level;
        let v = &mut sim.views[m];
        v.load = bg;
        v.runnable = bg;
        v.measured = (bg / farm.machines[m].cores as f64).min(1.0);
        let next = sim.runs[m].background.next_change;
        if next.is_finite() {
            sim.push(next, Ev::Background { m: m as u32 });
        }
        if measured {
            // Measurements spread evenly over the period.
            let phase = MEASURE_EVERY * m as f64 / nm as f64;
            sim.push(phase, Ev::Measure { m: m as u32 });
        }
        sim.update_rule(rule, m);
    }
    for d in 0..n {
        if sim.pending[d] == 0 {
            sim.enqueue(d as u32);
        }
    }
    sim.dispatch(rule);
    while sim.completed < n {
        let Some(Timed { t, ev, .. }) = sim.events.pop() else {
            panic!(
                "{} {}: nothing left to happen, {} derivations never built",
                sim.res.rule,
                sim.res.discipline,
                n - sim.completed
            );
        };
        assert!(t >= sim.now - 1e-9, "time went back");
        assert!(
            t <= cfg.horizon,
            "{} {}: still {} derivations to build at t={t} ({} held)",
            sim.res.rule,
            sim.res.discipline,
            n - sim.completed,
            sim.held.len()
        );
        sim.now = t;
        sim.handle(rule, ev);
        sim.dispatch(rule);
    }
    let total_work = work.total_work();
    let mut res = sim.res;
    res.makespan = sim.now;
    res.mean_queue_wait = sim.queue_wait_sum / n.max(1) as f64;
    res.mean_speed = sim.speed_work / total_work;
    res.mean_share = sim.share_work / total_work;
    let fastest = crate::bound::fastest_by_class(farm);
    let mut by_work: Vec<usize> = (0..n).collect();
    by_work.sort_by(|&a, &b| work.drvs[b].work.total_cmp(&work.drvs[a].work));
    let top = &by_work[..n.div_ceil(100)];
    res.longest_speed = top
        .iter()
        .map(|&d| farm.machines[res.machine[d] as usize].speed)
        .sum::<f64>()
        / top.len() as f64;
    res.longest_slowdown = top
        .iter()
        .map(|&d| {
            let drv = &work.drvs[d];
            (res.built[d] - res.running[d]) / (drv.work / fastest[drv.class()])
        })
        .sum::<f64>()
        / top.len() as f64;
    res.wall_secs = wall.elapsed().as_secs_f64();
    res
}
