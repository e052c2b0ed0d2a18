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
mod tests {
    use super::*;
    use std::cell::Cell;

    fn list(v: &[&str]) -> &'static [String] {
        Box::leak(
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        )
    }

    fn m(name: &'static str, speed: f64, slots: u32) -> MachineState<'static> {
        MachineState {
            name,
            systems: list(&["x86_64-linux"]),
            features: &[],
            slots,
            in_use: 0,
            speed,
            overload_threshold: Some(0.8),
            normalized_load: 0.0,
            free_bytes: 10 << 30,
            backed_off_until: None,
            cores: slots,
        }
    }

    fn x86() -> Needs {
        Needs {
            system: "x86_64-linux".into(),
            features: BTreeSet::new(),
        }
    }

    #[test]
    fn system_and_features_pick_candidates() {
        let mut kvm = m("kvm", 1.0, 1);
        kvm.features = list(&["kvm"]);
        let plain = m("plain", 2.0, 1);
        let mut arm = m("arm", 5.0, 1);
        arm.systems = list(&["aarch64-linux"]);
        let ms = [kvm, plain, arm];
        let now = Instant::now();
        let needs_kvm = Needs {
            features: ["kvm".to_string()].into(),
            ..x86()
        };
        assert_eq!(choose(&ms, &needs_kvm, now, |_| 0.0), Choice::Machine(0));
        assert_eq!(choose(&ms, &x86(), now, |_| 0.0), Choice::Machine(1));
        let arm_needs = Needs {
            system: "aarch64-linux".into(),
            ..Default::default()
        };
        assert_eq!(choose(&ms, &arm_needs, now, |_| 0.0), Choice::Machine(2));
        let riscv = Needs {
            system: "riscv64-linux".into(),
            ..Default::default()
        };
        assert_eq!(choose(&ms, &riscv, now, |_| 0.0), Choice::Local);
    }

    #[test]
    fn unusable_candidates_are_waited_for_with_reasons() {
        let now = Instant::now();
        let mut full = m("full", 1.0, 1);
        full.in_use = 1;
        let mut hot = m("hot", 1.0, 1);
        hot.normalized_load = 0.95;
        let mut disk = m("disk", 1.0, 1);
        disk.free_bytes = 50 << 20;
        let mut down = m("down", 1.0, 1);
        down.backed_off_until = Some(now + std::time::Duration::from_secs(30));
        let ms = [full, hot, disk, down];
        match choose(&ms, &x86(), now, |_| 0.0) {
            Choice::Wait(w) => {
                let text: Vec<String> = w.iter().map(|(n, why)| format!("{n}: {why}")).collect();
                assert_eq!(text.len(), 4);
                assert!(text[0].contains("slots"), "{text:?}");
                assert!(text[1].contains("overload-threshold"), "{text:?}");
                assert!(text[2].contains("MiB"), "{text:?}");
                assert!(text[3].contains("backed off"), "{text:?}");
            }
            other => panic!("{other:?}"),
        }
        // #f disables the load check.
        let mut hot = m("hot", 1.0, 1);
        hot.normalized_load = 1.0;
        hot.overload_threshold = None;
        assert_eq!(choose(&[hot], &x86(), now, |_| 0.0), Choice::Machine(0));
    }

    #[test]
    fn this_daemons_own_builds_do_not_overload_a_machine() {
        let now = Instant::now();
        // 8 cores, 8 slots, 7 of them ours: a load of 7.2 is 0.2 of other
        // work, far under the threshold.
        let mut ours = m("ours", 1.0, 8);
        ours.in_use = 7;
        ours.normalized_load = 0.9;
        assert!(unusable(&ours, now).is_none());
        assert!((ours.outside_load() - 0.2).abs() < 1e-9);
        // The same load with none of ours is other users' work.
        ours.in_use = 0;
        assert!(matches!(
            unusable(&ours, now),
            Some(PassedOver::Overloaded { .. })
        ));
    }

    #[test]
    fn a_fast_machine_with_free_cores_beats_a_slower_idle_one() {
        let now = Instant::now();
        // Half of `fast`'s slots are busy, but its cores are not all used:
        // a new build runs there at speed 1.6 (the old rule scored it 0.8).
        let mut fast = m("fast", 1.6, 8);
        fast.in_use = 4;
        let slow = m("slow", 1.5, 8);
        assert_eq!(
            choose(&[fast.clone(), slow.clone()], &x86(), now, |_| 0.0),
            Choice::Machine(0)
        );
        // With its cores shared (4 cores, 3 builds of ours, 1 thread of
        // other work), a new build would get 1.6 × 4/5 < 1.5: the idle one.
        fast.cores = 4;
        fast.in_use = 3;
        fast.normalized_load = 1.0;
        assert!(score(&fast, 0.0) < score(&slow, 0.0));
        assert_eq!(
            choose(&[fast, slow], &x86(), now, |_| 0.0),
            Choice::Machine(1)
        );
    }

    #[test]
    fn special_machines_take_other_work_only_as_overflow() {
        let now = Instant::now();
        let mut big = m("big", 4.0, 16);
        big.features = list(&["big-parallel"]);
        let mut plain = m("plain", 1.0, 1);
        assert_eq!(
            choose(&[big.clone(), plain.clone()], &x86(), now, |_| 0.0),
            Choice::Machine(1)
        );
        plain.in_use = 1;
        assert_eq!(
            choose(&[big.clone(), plain.clone()], &x86(), now, |_| 0.0),
            Choice::Machine(0)
        );
        let needs_big = Needs {
            features: ["big-parallel".to_string()].into(),
            ..x86()
        };
        assert_eq!(
            choose(&[plain, big], &needs_big, now, |_| 0.0),
            Choice::Machine(1)
        );
    }

    #[test]
    fn locality_breaks_near_ties_only_and_equal_machines_share_the_work() {
        let now = Instant::now();
        let a = m("a", 1.0, 4);
        let b = m("b", 1.0, 4);
        assert_eq!(
            choose(&[a.clone(), b.clone()], &x86(), now, |i| if i == 1 {
                0.9
            } else {
                0.0
            }),
            Choice::Machine(1)
        );
        // A machine 25 % faster wins over one holding every input.
        let faster = m("faster", 1.25, 4);
        assert_eq!(
            choose(&[a.clone(), faster], &x86(), now, |i| if i == 0 {
                1.0
            } else {
                0.0
            }),
            Choice::Machine(1)
        );
        // Equal scores: the one with fewer slots in use.
        let mut a1 = a.clone();
        a1.in_use = 1;
        a1.cores = 16;
        let mut b16 = b.clone();
        b16.cores = 16;
        assert_eq!(choose(&[a1, b16], &x86(), now, |_| 0.0), Choice::Machine(1));
    }

    #[test]
    fn the_closure_share_is_looked_up_for_few_machines() {
        let now = Instant::now();
        let ms: Vec<MachineState> = (0..1000).map(|_| m("same", 1.0, 4)).collect();
        let calls = Cell::new(0);
        let choice = choose(&ms, &x86(), now, |i| {
            calls.set(calls.get() + 1);
            if i == 3 {
                0.5
            } else {
                0.0
            }
        });
        assert_eq!(choice, Choice::Machine(3));
        assert_eq!(calls.get(), PRESENT_LOOKUPS);
        // A clearly better machine is found without looking at the rest.
        let mut ms = ms;
        ms[700].speed = 3.0;
        calls.set(0);
        let counted = |_| {
            calls.set(calls.get() + 1);
            0.0
        };
        assert_eq!(choose(&ms, &x86(), now, counted), Choice::Machine(700));
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn remaining_paths_follow_the_longest_chain() {
        // 0 -> 1 -> 3, 0 -> 2 -> 3: the chain through 2 is longer.
        let d = [1.0, 2.0, 5.0, 1.0];
        let deps = vec![vec![1, 2], vec![3], vec![3], vec![]];
        assert_eq!(remaining_paths(&d, &deps), vec![7.0, 3.0, 6.0, 1.0]);
        // A long chain does not overflow the stack.
        let n = 200_000;
        let deps: Vec<Vec<usize>> = (0..n)
            .map(|i| if i + 1 < n { vec![i + 1] } else { vec![] })
            .collect();
        let r = remaining_paths(&vec![1.0; n], &deps);
        assert_eq!(r[0], n as f64);
    }

    #[test]
    fn only_a_build_that_would_end_last_waits_for_a_faster_machine() {
        // An hour at speed 1 on a speed-0.5 machine, when a speed-2 one
        // exists: 7200 - 1800 = 5400 s lost.
        let lost = time_lost(3600.0, 0.5, 2.0);
        assert_eq!(lost, 5400.0);
        assert_eq!(time_lost(3600.0, 2.0, 2.0), 0.0);
        // On the critical path (its remaining path is the longest): held.
        assert!(hold_for_faster(4000.0, lost, 4000.0, 0.0));
        assert!(hold_for_faster(4000.0, lost, 4000.0, 60.0));
        // Far off it, and a short build: built now, even slowly (a minute
        // at speed 1 loses 90 s on slow, against 9,500 s of slack).
        assert!(!hold_for_faster(
            1000.0,
            time_lost(60.0, 0.5, 2.0),
            10_000.0,
            0.0
        ));
        // A long build off the critical path is still held: its slack
        // counts for an eighth (HOLD_SAFETY), as estimates are rough.
        assert!(hold_for_faster(1000.0, lost, 10_000.0, 0.0));
        // Held as long as the machine offered would lose: it takes it.
        assert!(!hold_for_faster(4000.0, lost, 4000.0, lost));
        // Held 45 minutes: a speed-3 machine (lost 300 s) is taken, a
        // speed-0.5 one (lost 5400 s) is not.
        assert!(!hold_for_faster(
            4000.0,
            time_lost(3600.0, 3.0, 2.0),
            4000.0,
            2700.0
        ));
        assert!(hold_for_faster(4000.0, lost, 4000.0, 2700.0));
        // Nothing lost, nothing held.
        assert!(!hold_for_faster(4000.0, 0.0, 4000.0, 0.0));
        // The slowest machine it would take agrees with hold_for_faster.
        let (estimate, fastest, remaining, longest) = (3600.0, 2.0, 3000.0, 4000.0);
        let room = HOLD_SLACK * longest - remaining;
        for held_for in [0.0, 600.0, 2700.0, 6000.0] {
            let s = slowest_acceptable(estimate, fastest, room, held_for);
            for speed in [0.5, 0.75, 1.0, 1.5, 2.0] {
                let lost = time_lost(estimate, speed, fastest);
                let takes = !hold_for_faster(remaining, lost, longest, held_for);
                assert_eq!(takes, speed >= s - 1e-9, "{held_for} {speed} {s}");
            }
        }
    }
}
