//! Where to build a derivation: locally or on which build machine.
//!
//! Candidates are the machines whose `systems` include the derivation's
//! system and whose `features` include every feature it requires. A
//! candidate is usable now when it has a free slot (counted across every
//! client of this daemon), its load is under its `overload-threshold`, more
//! than 100 MiB are free in its store, and it is not backed off after a
//! failure.
//!
//! Among usable candidates, the rule is: highest
//! `speed × (1 − load) × (1 + ½ × share of the input closure it already holds)`,
//! where `load` is the larger of the machine's normalized load average and
//! the share of its slots in use right now.
//!
//! Why this rule:
//! - Guix takes the first machine by speed: a burst of builds all lands on
//!   the fastest machine until its slots run out, because the 1-minute load
//!   average lags, and slower idle machines wait.
//! - Nix takes the lowest `slots in use / speed`: it ignores the machine's
//!   real load (other users, other daemons) and what it already holds.
//! - Ferry counts its own slots live (no lag), still sees outside load
//!   through the load average, and prefers a machine that already has most
//!   of the inputs, which saves the transfer Guix and Nix pay again.

use std::collections::BTreeSet;
use std::time::Instant;

/// Free space a machine must have to be given a build (as in the seed).
pub const MIN_FREE_BYTES: u64 = 100 << 20;

/// What the scheduler knows about a build machine at one moment.
#[derive(Debug, Clone)]
pub struct MachineState {
    pub name: String,
    pub systems: Vec<String>,
    pub features: Vec<String>,
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
}

/// What a derivation needs.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    pub system: String,
    pub features: BTreeSet<String>,
}

/// Why a candidate was passed over (for the "no machine" error).
#[derive(Debug, Clone, PartialEq)]
pub enum PassedOver {
    NoFreeSlot { in_use: u32, slots: u32 },
    Overloaded { load: f64, threshold: f64 },
    LowDisk { free_bytes: u64 },
    BackedOff,
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
    m.systems.contains(&needs.system) && needs.features.iter().all(|f| m.features.contains(f))
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
        if m.normalized_load >= threshold {
            return Some(PassedOver::Overloaded {
                load: m.normalized_load,
                threshold,
            });
        }
    }
    if m.free_bytes <= MIN_FREE_BYTES {
        return Some(PassedOver::LowDisk {
            free_bytes: m.free_bytes,
        });
    }
    None
}

/// The rule of the module documentation. `present` is the share (0..=1)
/// of the input closure's bytes the machine already holds.
pub fn score(m: &MachineState, present: f64) -> f64 {
    let busy = if m.slots == 0 {
        1.0
    } else {
        m.in_use as f64 / m.slots as f64
    };
    let load = m.normalized_load.max(busy).min(1.0);
    m.speed * (1.0 - load + 1e-3) * (1.0 + 0.5 * present.clamp(0.0, 1.0))
}

/// Choose where to build: `present(i)` is the share of the input closure
/// machine `i` already holds (0 when unknown).
pub fn choose(
    machines: &[MachineState],
    needs: &Needs,
    now: Instant,
    present: impl Fn(usize) -> f64,
) -> Choice {
    let mut waits = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    let mut any_candidate = false;
    for (i, m) in machines.iter().enumerate() {
        if !is_candidate(m, needs) {
            continue;
        }
        any_candidate = true;
        if let Some(why) = unusable(m, now) {
            waits.push((m.name.clone(), why));
            continue;
        }
        let s = score(m, present(i));
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    match best {
        Some((i, _)) => Choice::Machine(i),
        None if !any_candidate => Choice::Local,
        None => Choice::Wait(waits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, speed: f64, slots: u32) -> MachineState {
        MachineState {
            name: name.into(),
            systems: vec!["x86_64-linux".into()],
            features: vec![],
            slots,
            in_use: 0,
            speed,
            overload_threshold: Some(0.8),
            normalized_load: 0.0,
            free_bytes: 10 << 30,
            backed_off_until: None,
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
        kvm.features = vec!["kvm".into()];
        let plain = m("plain", 2.0, 1);
        let mut arm = m("arm", 5.0, 1);
        arm.systems = vec!["aarch64-linux".into()];
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
    fn live_slots_spread_a_burst_and_locality_breaks_ties() {
        let now = Instant::now();
        // Guix would send a burst to `fast` until its slots run out; with
        // slots counted live, the second build goes to the idle machine.
        let mut fast = m("fast", 2.0, 2);
        let slow = m("slow", 1.5, 2);
        assert_eq!(
            choose(&[fast.clone(), slow.clone()], &x86(), now, |_| 0.0),
            Choice::Machine(0)
        );
        fast.in_use = 1;
        assert_eq!(
            choose(&[fast.clone(), slow.clone()], &x86(), now, |_| 0.0),
            Choice::Machine(1)
        );
        // Equal machines: the one holding the inputs wins.
        let a = m("a", 1.0, 1);
        let b = m("b", 1.0, 1);
        assert_eq!(
            choose(&[a, b], &x86(), now, |i| if i == 1 { 0.9 } else { 0.0 }),
            Choice::Machine(1)
        );
    }
}
