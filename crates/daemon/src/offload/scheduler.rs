//! Where to build a derivation: locally or on which build machine.
//!
//! Candidates are the machines whose `systems` include the derivation's
//! system and whose `features` include every feature it requires. A
//! candidate is usable now when it has a free slot (counted across every
//! client of this daemon), the load of other work there is under its
//! `overload-threshold`, more than 100 MiB are free in its store, and it is
//! not backed off after a failure. Other work is the measured load average
//! minus the builds this daemon runs there: `parallel-builds` already
//! bounds those, and the threshold is there to keep off machines that
//! other users keep busy.
//!
//! Among usable candidates, the rule is, in this order:
//! 1. fewest features the derivation does not need: a `kvm` or
//!    `big-parallel` machine takes other work only when no plainer
//!    candidate is usable;
//! 2. highest `speed × min(1, cores / (builds here + 1 + other load)) ×
//!    (1 + 0.1 × share of the input closure it already holds)`: the speed
//!    the new build would get there, each build being counted as one
//!    runnable thread, with a small preference for holding its inputs;
//! 3. fewest slots in use (as a share of its slots), then file order.
//!
//! Why (measured with `ferry-schedsim`, `crates/schedsim`: 1000 simulated
//! machines, a 100,000-derivation rebuild, against Guix's and Nix's rules
//! and a lower bound on the makespan):
//! - The previous rule, `speed × (1 − max(load, slots in use / slots)) ×
//!   (1 + ½ × share)`, took a fast machine with some slots busy for a slow
//!   one, although a build there still gets a whole core while cores are
//!   free: long builds went to slower idle machines. It also counted this
//!   daemon's own builds in the load it compared with the threshold, so a
//!   machine with as many slots as cores lost its last slots (a minute
//!   late, as the average caught up).
//! - Guix takes the fastest machine whose 1-minute load average is under
//!   the threshold: the average lags, so a burst piles onto the fastest
//!   machine, and it refuses a machine that only this daemon keeps busy.
//!   Nix takes the lowest `slots in use / speed`: it spreads builds onto
//!   slow idle machines and ignores real load.
//! - The few `big-parallel` machines are the only ones the biggest builds
//!   may use; filled with ordinary builds in a burst, they were busy when
//!   the big builds became ready, which then ran for hours on slow ones.
//! - The transfer that a machine already holding the inputs saves is
//!   seconds, while a slower machine costs a share of the whole build, whose
//!   length the scheduler does not know: the locality bonus breaks
//!   near-ties (10 %), it does not pick a slower machine (it was ½).
//!
//! The share of the input closure costs a hash look-up per path of the
//! closure per machine: it is looked up for at most [`PRESENT_LOOKUPS`]
//! machines, best first, so a decision among a thousand machines stays far
//! under a millisecond.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::time::Instant;

/// Free space a machine must have to be given a build (as in the seed).
pub const MIN_FREE_BYTES: u64 = 100 << 20;

/// What the scheduler knows about a build machine at one moment. The
/// machine's record is borrowed: a decision looks at every machine, and
/// copying a thousand names and system lists per decision would cost more
/// than the decision.
#[derive(Debug, Clone)]
pub struct MachineState<'a> {
    pub name: &'a str,
    pub systems: &'a [String],
    pub features: &'a [String],
    /// `parallel-builds`.
    pub slots: u32,
    /// Builds this daemon runs there now.
    pub in_use: u32,
    pub speed: f64,
    /// `overload-threshold`; `None` disables the check.
    pub overload_threshold: Option<f64>,
    /// Last measured 1-minute load average / cores, capped at 1.
    pub normalized_load: f64,
    /// Last measured free bytes in its store.
    pub free_bytes: u64,
    /// Skipped until then after a failure.
    pub backed_off_until: Option<Instant>,
    /// Cores, as last measured; 0 when not measured yet (then `slots`
    /// stands in for it).
    pub cores: u32,
}

impl MachineState<'_> {
    fn cores_or_slots(&self) -> f64 {
        if self.cores > 0 {
            self.cores as f64
        } else {
            self.slots.max(1) as f64
        }
    }

    /// Runnable threads of other work there: the measured load average
    /// minus the builds this daemon runs there (which the average counts
    /// too, late: it is a 1-minute average measured up to 10 s ago).
    pub fn outside_load(&self) -> f64 {
        (self.normalized_load * self.cores_or_slots() - self.in_use as f64).max(0.0)
    }

    /// [`MachineState::outside_load`] per core, capped at 1: what the
    /// `overload-threshold` is compared with.
    pub fn outside_normalized_load(&self) -> f64 {
        (self.outside_load() / self.cores_or_slots()).min(1.0)
    }
}

/// A machine holding the whole input closure counts as this much faster
/// (a share `p` of it: `1 + LOCALITY_BONUS * p`).
pub const LOCALITY_BONUS: f64 = 0.1;

/// At most this many machines have their share of the input closure
/// looked up per decision (the best by score without it): the look-up
/// costs a hash per path of the closure, and among dozens of equally good
/// idle machines the first few are as good a bet as any.
pub const PRESENT_LOOKUPS: usize = 16;

/// What a derivation needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Needs {
    pub system: String,
    pub features: BTreeSet<String>,
}

impl Needs {
    /// What `drv` asks of a machine: its system and required features.
    pub fn of(drv: &ferry_formats::derivation::Derivation) -> Needs {
        Needs {
            system: drv.system.clone(),
            features: drv
                .required_system_features()
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }

    /// The one system and feature match, for build machines (their
    /// machines.scm record or the scheduler's state) and this machine
    /// alike: the system is one of `systems` and every required feature is
    /// among `features`.
    pub fn met_by(&self, systems: &[String], features: &[String]) -> bool {
        systems.contains(&self.system) && self.features.iter().all(|f| features.contains(f))
    }

    /// The required features missing from `features`.
    pub fn lacking<'a>(&'a self, features: &[String]) -> Vec<&'a str> {
        self.features
            .iter()
            .filter(|f| !features.contains(f))
            .map(String::as_str)
            .collect()
    }

    /// ` with features a, b` for messages (empty without features).
    pub fn features_text(&self) -> String {
        if self.features.is_empty() {
            String::new()
        } else {
            let f: Vec<&str> = self.features.iter().map(String::as_str).collect();
            format!(" with {}", f.join(", "))
        }
    }
}

/// Why a candidate was passed over (for the "no machine" error).
#[derive(Debug, Clone, PartialEq)]
pub enum PassedOver {
    NoFreeSlot {
        in_use: u32,
        slots: u32,
    },
    Overloaded {
        load: f64,
        threshold: f64,
    },
    LowDisk {
        free_bytes: u64,
    },
    BackedOff,
    /// Never measured, its first probe under way (set by the farm).
    Measuring,
}

impl std::fmt::Display for PassedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PassedOver::NoFreeSlot { in_use, slots } => {
                write!(f, "all {slots} build slots in use ({in_use} running)")
            }
            PassedOver::Overloaded { load, threshold } => {
                write!(
                    f,
                    "normalized load {load:.2} is not under its overload-threshold {threshold}"
                )
            }
            PassedOver::LowDisk { free_bytes } => write!(
                f,
                "only {} MiB free in its store (more than 100 MiB needed)",
                free_bytes >> 20
            ),
            PassedOver::BackedOff => write!(f, "backed off after a recent failure"),
            PassedOver::Measuring => write!(f, "being measured for the first time"),
        }
    }
}

/// The scheduler's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Build on this machine (index into the slice given).
    Machine(usize),
    /// No machine can ever take it (system or features): build here.
    Local,
    /// Candidates exist but none is usable now; why, per candidate.
    Wait(Vec<(String, PassedOver)>),
}

/// Does `m` match the derivation's system and features?
pub fn is_candidate(m: &MachineState, needs: &Needs) -> bool {
    needs.met_by(m.systems, m.features)
}

/// Why `m` cannot take a build now, if it cannot.
pub fn unusable(m: &MachineState, now: Instant) -> Option<PassedOver> {
    if m.backed_off_until.is_some_and(|t| t > now) {
        return Some(PassedOver::BackedOff);
    }
    if m.in_use >= m.slots {
        return Some(PassedOver::NoFreeSlot {
            in_use: m.in_use,
            slots: m.slots,
        });
    }
    if let Some(threshold) = m.overload_threshold {
        let load = m.outside_normalized_load();
        if load >= threshold {
            return Some(PassedOver::Overloaded { load, threshold });
        }
    }
    if m.free_bytes <= MIN_FREE_BYTES {
        return Some(PassedOver::LowDisk {
            free_bytes: m.free_bytes,
        });
    }
    None
}

/// The rule of the module documentation: the speed a new build would get
/// there, times the locality bonus. `present` is the share (0..=1) of the
/// input closure the machine already holds.
pub fn score(m: &MachineState, present: f64) -> f64 {
    let cores = m.cores_or_slots();
    let runnable = m.in_use as f64 + 1.0 + m.outside_load();
    let share = (cores / runnable).min(1.0);
    m.speed * share * (1.0 + LOCALITY_BONUS * present.clamp(0.0, 1.0))
}

/// Features the machine has that the derivation does not need: machines
/// with fewer are preferred, whatever their score, so special machines
/// (`kvm`, `big-parallel`: few, and needed by long builds) stay free for
/// the work only they can do, and take other work only when no plainer
/// candidate is usable.
pub fn extra_features(m: &MachineState, needs: &Needs) -> usize {
    m.features
        .iter()
        .filter(|f| !needs.features.contains(*f))
        .count()
}

/// Share of its slots in use: the tie-break between equal scores (spread
/// builds over equal machines).
fn busy(m: &MachineState) -> f64 {
    if m.slots == 0 {
        1.0
    } else {
        m.in_use as f64 / m.slots as f64
    }
}

/// Choose where to build: `present(i)` is the share of the input closure
/// machine `i` already holds (0 when unknown).
///
/// `present` is called only for machines that could still win: with a
/// thousand machines and input closures of hundreds of paths, computing
/// the share for every usable machine is most of the cost of a decision.
/// Usable machines are visited by their best possible score (holding every
/// input), and the visit stops when that cannot beat the best so far.
pub fn choose(
    machines: &[MachineState],
    needs: &Needs,
    now: Instant,
    present: impl Fn(usize) -> f64,
) -> Choice {
    let mut waits = Vec::new();
    // (index, extra features, best possible score)
    let mut usable: Vec<(usize, usize, f64)> = Vec::new();
    let mut any_candidate = false;
    for (i, m) in machines.iter().enumerate() {
        if !is_candidate(m, needs) {
            continue;
        }
        any_candidate = true;
        match unusable(m, now) {
            Some(why) => waits.push((m.name.to_string(), why)),
            None => usable.push((i, extra_features(m, needs), score(m, 1.0))),
        }
    }
    // Visited in order: fewest extra features, best possible score, fewest
    // slots in use, file order; a heap pops only the few visited (scores
    // and shares are >= 0, so their bits order like them).
    let mut order: std::collections::BinaryHeap<_> = usable
        .into_iter()
        .map(|(i, extra, most)| {
            (
                Reverse(extra),
                most.to_bits(),
                Reverse(busy(&machines[i]).to_bits()),
                Reverse(i),
            )
        })
        .collect();
    // (index, extra features, score)
    let mut best: Option<(usize, usize, f64)> = None;
    let mut looked_up = 0;
    while let Some((Reverse(extra), most, _, Reverse(i))) = order.pop() {
        let most = f64::from_bits(most);
        if best.is_some_and(|(_, be, bs)| extra > be || most < bs || looked_up == PRESENT_LOOKUPS) {
            break;
        }
        looked_up += 1;
        let m = &machines[i];
        let s = score(m, present(i));
        let better = match best {
            None => true,
            Some((b, _, bs)) => s > bs || (s == bs && busy(m) < busy(&machines[b])),
        };
        if better {
            best = Some((i, extra, s));
        }
    }
    match best {
        Some((i, _, _)) => Choice::Machine(i),
        None if !any_candidate => Choice::Local,
        None => Choice::Wait(waits),
    }
}

/// A held derivation waits for a faster machine only when taking the one
/// offered would make it end this much later than the longest remaining
/// path among the waiting derivations (5 %): otherwise it is not on the
/// critical path, and any free machine will do.
pub const HOLD_SLACK: f64 = 1.05;

/// The time a slower machine would lose counts this many times over
/// against a derivation's slack when deciding to hold it: estimates come
/// from history and are often off by a factor of two or three, and the
/// two mistakes cost very differently. Holding without need costs the wait
/// for a faster slot, at most what the slower machine would lose (on a
/// busy farm, fast machines free slots every few minutes); taking a slow
/// machine for a build wrongly thought to have slack makes it end hours
/// late (`ferry-schedsim`'s saturated "heavy" work: 30,000 s builds
/// estimated at half that went to speed-0.75 machines, 40,000 s instead
/// of 7,500; mean makespan over the bound 1.64 with 1, 1.12 with 4, 1.09
/// with 8, on 10 seeds, while the lighter "rebuild" stayed at 1.01-1.02).
pub const HOLD_SAFETY: f64 = 8.0;

/// Seconds a build estimated at `estimate` seconds on a speed-1 machine
/// loses on a machine of `speed` against the fastest candidate
/// (`fastest`).
pub fn time_lost(estimate: f64, speed: f64, fastest: f64) -> f64 {
    if speed <= 0.0 || fastest <= 0.0 {
        return 0.0;
    }
    (estimate / speed - estimate / fastest).max(0.0)
}

/// Hold a derivation back rather than build it on the machine offered?
/// Yes while the time it would lose there exceeds both how long it has
/// been held and its slack (`HOLD_SLACK × longest − remaining`) divided by
/// [`HOLD_SAFETY`].
///
/// `remaining` is its estimated remaining path (itself and the longest
/// chain of builds after it, in seconds), `lost` what the machine offered
/// costs it ([`time_lost`]), `longest` the longest remaining path among
/// every derivation waiting for a machine (its own included), `held_for`
/// how long it has been held already (0 when not held).
///
/// Why: with critical-path order alone, the longest chain takes the first
/// free slot, however slow: a 5-hour compiler build started on a speed-0.5
/// machine ends hours after it would have on a speed-4 one that frees a
/// slot minutes later. Holding only what would then end after everything
/// else keeps the rest of the work flowing. A machine is taken once the
/// derivation has waited as long as that machine would lose: waiting
/// longer could not pay. (The limit is the loss of the machine offered
/// now, not of the first one refused: a build held 40 minutes for a
/// speed-4 machine must not then take a speed-0.5 one that loses hours.)
pub fn hold_for_faster(remaining: f64, lost: f64, longest: f64, held_for: f64) -> bool {
    lost > held_for && remaining + HOLD_SAFETY * lost > HOLD_SLACK * longest
}

/// The slowest machine a held derivation takes now: it refuses a machine
/// of speed `s` while [`hold_for_faster`] says so, that is while the time
/// lost there exceeds both `room / HOLD_SAFETY` (`room` is its slack,
/// `HOLD_SLACK × longest − remaining`, as when it was held) and
/// `held_for`. A freed slot re-offers it only when
/// the machine is at least this fast: re-asking every held derivation at
/// every freed slot would cost a decision each, most of them refused.
pub fn slowest_acceptable(estimate: f64, fastest: f64, room: f64, held_for: f64) -> f64 {
    let room = (room / HOLD_SAFETY).max(held_for);
    if estimate <= 0.0 || fastest <= 0.0 {
        return 0.0;
    }
    if room <= 0.0 {
        return fastest;
    }
    estimate / (room + estimate / fastest)
}

/// Longest remaining path from each derivation: its own `duration` plus
/// the longest remaining path among its `dependents` (the derivations
/// that take it as input). The priority of the ready queue: the derivation
/// with the longest one goes first. `dependents` must describe a DAG.
pub fn remaining_paths(durations: &[f64], dependents: &[Vec<usize>]) -> Vec<f64> {
    let n = durations.len();
    // Reverse topological order by an iterative depth-first walk (a
    // 40,000-long chain would overflow a recursive one).
    let mut remaining = vec![f64::NAN; n];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if !remaining[root].is_nan() {
            continue;
        }
        stack.push((root, 0));
        while let Some(&mut (d, ref mut next)) = stack.last_mut() {
            if let Some(&j) = dependents[d].get(*next) {
                *next += 1;
                if remaining[j].is_nan() {
                    stack.push((j, 0));
                }
                continue;
            }
            let after = dependents[d]
                .iter()
                .map(|&j| remaining[j])
                .fold(0.0, f64::max);
            remaining[d] = durations[d] + after;
            stack.pop();
        }
    }
    remaining
}

#[cfg(test)]
mod tests;
