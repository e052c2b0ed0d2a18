//! The three placement rules, each seeing what its tool sees.
//!
//! - Guix (`guix offload`, anchors.md): the candidates with a free slot,
//!   shuffled, sorted by speed (stable, so equal speeds stay shuffled); the
//!   first whose normalized load (the 1-minute load average over the
//!   cores, at most 1) is under its `overload-threshold` wins (free disk is
//!   always ample here). The load is probed at the moment of the decision,
//!   but it is the kernel's 1-minute average: it lags, which is why a burst
//!   lands on the fastest machine.
//! - Nix (Nix 2.8 build hook): the candidates with a free slot; lowest
//!   `in use / speed`, ties to the higher speed, then fewer in use, then
//!   file order. No load, no locality.
//! - Ferry: the daemon's own [`ferry_daemon::scheduler::choose`] on
//!   [`ferry_daemon::scheduler::MachineState`]s kept the way the daemon's
//!   `Farm` keeps them: slots in use counted live, the load as last
//!   measured (every 10 s), and the share of the input closure the master
//!   knows the machine holds (what `Farm::record_present` recorded).
//!
//! All three wait (the derivation stays queued) when no candidate is
//! usable; the simulator asks again when a machine may have become usable.

use std::collections::BTreeSet;
use std::time::Instant;

use ferry_daemon::scheduler::{self, Choice, MachineState, Needs};

use crate::farm::{Farm, CLASSES, FEATURES, OVERLOAD_THRESHOLD, SYSTEMS};
use crate::rng::Rng;
use crate::sim::{Bitset, MachineView};

/// What a rule may look at when it decides.
pub struct Cx<'a> {
    pub farm: &'a Farm,
    pub views: &'a [MachineView],
    /// Per derivation output, the machines the master knows hold it.
    pub known: &'a Bitset,
    pub now: f64,
}

/// A placement rule.
pub trait Rule {
    fn name(&self) -> String;
    /// Where to build a derivation of `class` whose input closure is
    /// `inputs` (derivation outputs); `None`: wait.
    fn choose(&mut self, cx: &Cx, class: usize, inputs: &[u32]) -> Option<usize>;
    /// Could machine `m` take a build it is a candidate for, now? (Used to
    /// wake waiting derivations; must be exact: a machine that becomes
    /// usable without this saying so would leave them waiting.)
    fn usable(&self, cx: &Cx, m: usize) -> bool;
    /// Machine `m`'s slots or measurement changed.
    fn update(&mut self, _cx: &Cx, _m: usize) {}
    /// Does the rule read the live (probed) load average? Then the
    /// simulator tells it when a machine's load falls under its threshold.
    fn live_load(&self) -> bool {
        false
    }
    /// Does the rule read periodic measurements?
    fn measured_load(&self) -> bool {
        false
    }
}

/// Guix's rule.
pub struct Guix {
    rng: Rng,
}

impl Guix {
    pub fn new(seed: u64) -> Guix {
        Guix {
            rng: Rng::stream(seed, "guix", 0),
        }
    }
}

impl Rule for Guix {
    fn name(&self) -> String {
        "guix".into()
    }

    fn choose(&mut self, cx: &Cx, class: usize, _inputs: &[u32]) -> Option<usize> {
        // Shuffle + stable sort by speed + first passing = the fastest
        // passing machine, uniformly at random among equal speeds
        // (reservoir sampling over the ties).
        let mut best: Option<(usize, f64)> = None;
        let mut ties = 0u64;
        for (i, m) in cx.farm.machines.iter().enumerate() {
            let v = &cx.views[i];
            if !m.can_build(class) || v.in_use >= m.slots {
                continue;
            }
            if best.is_some_and(|(_, s)| m.speed < s) {
                continue;
            }
            if v.normalized_load_at(cx.now, m.cores) >= OVERLOAD_THRESHOLD {
                continue;
            }
            match best {
                Some((_, s)) if s == m.speed => {
                    ties += 1;
                    if self.rng.below(ties as usize) == 0 {
                        best = Some((i, s));
                    }
                }
                _ => {
                    best = Some((i, m.speed));
                    ties = 1;
                }
            }
        }
        best.map(|(i, _)| i)
    }

    fn usable(&self, cx: &Cx, m: usize) -> bool {
        let mach = &cx.farm.machines[m];
        let v = &cx.views[m];
        v.in_use < mach.slots && v.normalized_load_at(cx.now, mach.cores) < OVERLOAD_THRESHOLD
    }

    fn live_load(&self) -> bool {
        true
    }
}

/// Nix's rule.
pub struct Nix;

impl Rule for Nix {
    fn name(&self) -> String {
        "nix".into()
    }

    fn choose(&mut self, cx: &Cx, class: usize, _inputs: &[u32]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, m) in cx.farm.machines.iter().enumerate() {
            let v = &cx.views[i];
            if !m.can_build(class) || v.in_use >= m.slots {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => {
                    let bm = &cx.farm.machines[b];
                    let bl = cx.views[b].in_use as f64;
                    let l = v.in_use as f64;
                    let (x, y) = (l / m.speed, bl / bm.speed);
                    x < y || (x == y && (m.speed > bm.speed || (m.speed == bm.speed && l < bl)))
                }
            };
            if better {
                best = Some(i);
            }
        }
        best
    }

    fn usable(&self, cx: &Cx, m: usize) -> bool {
        cx.views[m].in_use < cx.farm.machines[m].slots
    }
}

/// Ferry's rule: the daemon's `scheduler::choose`.
pub struct Ferry<'a> {
    states: Vec<MachineState<'a>>,
    needs: Vec<Needs>,
    now: Instant,
}

impl<'a> Ferry<'a> {
    pub fn new(farm: &'a Farm) -> Ferry<'a> {
        let states = farm
            .machines
            .iter()
            .map(|m| m.state(0.0, 1 << 40))
            .collect();
        let needs = (0..CLASSES)
            .map(|c| Needs {
                system: SYSTEMS[c >> FEATURES.len()].to_string(),
                features: FEATURES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| c & (1 << i) != 0)
                    .map(|(_, f)| f.to_string())
                    .collect::<BTreeSet<String>>(),
            })
            .collect();
        Ferry {
            states,
            needs,
            now: Instant::now(),
        }
    }
}

impl Rule for Ferry<'_> {
    fn name(&self) -> String {
        "ferry".into()
    }

    fn choose(&mut self, cx: &Cx, class: usize, inputs: &[u32]) -> Option<usize> {
        let needs = &self.needs[class];
        // `choose` answers Wait exactly when no candidate is usable; check
        // that first with the scheduler's own predicates, to spare the
        // simulation the Wait answer's list of reasons (it is built for
        // the user, and costs an allocation per machine).
        let any = self.states.iter().any(|m| {
            scheduler::is_candidate(m, needs) && scheduler::unusable(m, self.now).is_none()
        });
        if !any {
            return None;
        }
        let n = inputs.len();
        let present = |i: usize| {
            if n == 0 {
                0.0
            } else {
                inputs
                    .iter()
                    .filter(|&&p| cx.known.get(p as usize, i))
                    .count() as f64
                    / n as f64
            }
        };
        match scheduler::choose(&self.states, needs, self.now, present) {
            Choice::Machine(i) => Some(i),
            Choice::Wait(_) => None,
            Choice::Local => panic!("no machine can build class {class}"),
        }
    }

    fn usable(&self, _cx: &Cx, m: usize) -> bool {
        scheduler::unusable(&self.states[m], self.now).is_none()
    }

    fn update(&mut self, cx: &Cx, m: usize) {
        let s = &mut self.states[m];
        s.in_use = cx.views[m].in_use;
        s.normalized_load = cx.views[m].measured;
    }

    fn measured_load(&self) -> bool {
        true
    }
}

/// The rule called `name` (guix, nix, ferry).
pub fn by_name<'a>(name: &str, farm: &'a Farm, seed: u64) -> Option<Box<dyn Rule + 'a>> {
    Some(match name {
        "guix" => Box::new(Guix::new(seed)),
        "nix" => Box::new(Nix),
        "ferry" => Box::new(Ferry::new(farm)),
        _ => return None,
    })
}
