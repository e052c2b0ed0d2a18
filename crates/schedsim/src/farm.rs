//! The simulated build farm: machines with a speed, slots, cores, systems,
//! features, a link and a background load that changes over time.
//!
//! Every number below is a modelling choice, made once and kept fixed for
//! every rule and every seed (the rules are compared on the same farm):
//!
//! - systems: 85 % of machines build `x86_64-linux` only, 10 %
//!   `aarch64-linux` only, 5 % both (large servers); a farm is mostly x86
//!   with an ARM pool, as Guix's and Nix's are.
//! - cores: 4, 8, 16, 32 or 64 (15/30/30/18/7 %).
//! - `parallel-builds` (slots): uniform between cores/4 (at least 1) and
//!   cores (at most 16): operators give a machine between a quarter of its
//!   cores and all of them as build slots.
//! - `speed`: the usual hand-written factors 0.5, 0.75, 1, 1.25, 1.5, 2,
//!   2.5, 3, 4 (weights 5/10/25/15/15/12/8/6/4): many ordinary machines, a
//!   few fast ones. Discrete values, as people write them, so ties exist
//!   (Guix breaks them by shuffling, Nix by file order).
//! - features: `kvm` on 15 % of machines; `big-parallel` on half of the
//!   machines with 32 or more cores.
//! - link: 100 Mbit/s (10 %), 1 Gbit/s (70 %) or 10 Gbit/s (20 %).
//! - `overload-threshold`: the default 0.8 everywhere; free disk is always
//!   ample (disk is not modelled).
//! - background load (other users' work, in runnable threads): 60 % of
//!   machines are quiet (0-10 % of their cores, changing every ~10 min);
//!   30 % are shared (idle ~20 min, then busy ~10 min at 30-100 % of their
//!   cores); 10 % are hot (idle ~5 min, busy ~20 min at 60-150 %). Period
//!   lengths are exponential. The schedule of each machine is drawn from
//!   its own random stream, so it is the same whatever the rule does.

use crate::rng::Rng;

/// System types, by bit in [`Machine::systems`] and index in a derivation.
pub const SYSTEMS: [&str; 2] = ["x86_64-linux", "aarch64-linux"];
/// Features, by bit in [`Machine::features`] and in a derivation's needs.
pub const FEATURES: [&str; 2] = ["kvm", "big-parallel"];
/// Number of (system, feature set) classes: a class is `system * 4 + features`.
pub const CLASSES: usize = SYSTEMS.len() << FEATURES.len();
/// The `overload-threshold` of every simulated machine (the seed's default).
pub const OVERLOAD_THRESHOLD: f64 = 0.8;

/// The class of a derivation: its system and required features.
pub fn class_of(system: u8, features: u8) -> usize {
    ((system as usize) << FEATURES.len()) | features as usize
}

/// How a machine's background load behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Profile {
    /// No background load ever (tests).
    Idle,
    /// 0-10 % of the cores, re-drawn every ~10 minutes.
    Quiet,
    /// Idle ~20 min, busy ~10 min at 30-100 % of the cores.
    Shared,
    /// Idle ~5 min, busy ~20 min at 60-150 % of the cores.
    Hot,
}

/// One build machine.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    /// Bit `i` set: builds for `SYSTEMS[i]`.
    pub systems: u8,
    /// Bit `i` set: has `FEATURES[i]`.
    pub features: u8,
    pub speed: f64,
    /// `parallel-builds`.
    pub slots: u32,
    pub cores: u32,
    /// Link bandwidth to the master, bytes per second.
    pub bandwidth: f64,
    pub profile: Profile,
    /// `systems` and `features` as the machine's record spells them.
    system_list: Vec<String>,
    feature_list: Vec<String>,
}

impl Machine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        systems: u8,
        features: u8,
        speed: f64,
        slots: u32,
        cores: u32,
        bandwidth: f64,
        profile: Profile,
    ) -> Machine {
        Machine {
            name,
            systems,
            features,
            speed,
            slots,
            cores,
            bandwidth,
            profile,
            system_list: names(systems, &SYSTEMS),
            feature_list: names(features, &FEATURES),
        }
    }

    /// Can it build derivations of `class`?
    pub fn can_build(&self, class: usize) -> bool {
        let system = class >> FEATURES.len();
        let features = (class & ((1 << FEATURES.len()) - 1)) as u8;
        self.systems & (1 << system) != 0 && self.features & features == features
    }

    /// Bit `c` set for each class it can build.
    pub fn class_mask(&self) -> u32 {
        (0..CLASSES)
            .filter(|c| self.can_build(*c))
            .fold(0, |m, c| m | 1 << c)
    }

    pub fn system_names(&self) -> &[String] {
        &self.system_list
    }

    pub fn feature_names(&self) -> &[String] {
        &self.feature_list
    }

    /// The daemon scheduler's view of this machine, idle, healthy, with
    /// this load and free space.
    pub fn state(
        &self,
        normalized_load: f64,
        free_bytes: u64,
    ) -> ferry_daemon::scheduler::MachineState<'_> {
        ferry_daemon::scheduler::MachineState {
            name: &self.name,
            systems: self.system_names(),
            features: self.feature_names(),
            slots: self.slots,
            in_use: 0,
            speed: self.speed,
            overload_threshold: Some(OVERLOAD_THRESHOLD),
            normalized_load,
            free_bytes,
            backed_off_until: None,
            cores: self.cores,
        }
    }

    /// The rate of one build on this machine, in work units per second,
    /// when `builds` builds run and the background runs `bg` threads: each
    /// build is one runnable thread and the kernel shares the cores fairly
    /// among all runnable threads (processor sharing), so a build gets a
    /// whole core while there are enough, and `cores / runnable` of one
    /// otherwise.
    pub fn rate(&self, builds: usize, bg: f64) -> f64 {
        let runnable = builds as f64 + bg;
        if runnable <= self.cores as f64 {
            self.speed
        } else {
            self.speed * self.cores as f64 / runnable
        }
    }

    /// The most work per second the machine can do for us with background
    /// `bg`: all slots busy (the total rate `k * rate(k, bg)` grows with k).
    pub fn capacity(&self, bg: f64) -> f64 {
        self.slots as f64 * self.rate(self.slots as usize, bg)
    }
}

fn names(mask: u8, all: &[&str]) -> Vec<String> {
    all.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// The farm and the seed its background loads are drawn from.
#[derive(Debug, Clone)]
pub struct Farm {
    pub machines: Vec<Machine>,
    pub seed: u64,
}

impl Farm {
    /// The farm of the module documentation, `n` machines.
    pub fn generate(n: usize, seed: u64) -> Farm {
        let mut rng = Rng::stream(seed, "farm", 0);
        let machines = (0..n)
            .map(|i| {
                let systems = rng.weighted(&[(0b01u8, 0.85), (0b10, 0.10), (0b11, 0.05)]);
                let cores =
                    rng.weighted(&[(4u32, 0.15), (8, 0.30), (16, 0.30), (32, 0.18), (64, 0.07)]);
                let slots = rng.int((cores / 4).max(1) as u64, cores.min(16) as u64) as u32;
                let speed = rng.weighted(&[
                    (0.5, 5.0),
                    (0.75, 10.0),
                    (1.0, 25.0),
                    (1.25, 15.0),
                    (1.5, 15.0),
                    (2.0, 12.0),
                    (2.5, 8.0),
                    (3.0, 6.0),
                    (4.0, 4.0),
                ]);
                let mut features = 0u8;
                if rng.chance(0.15) {
                    features |= 1;
                }
                if cores >= 32 && rng.chance(0.5) {
                    features |= 2;
                }
                let bandwidth = rng.weighted(&[(12.5e6, 0.10), (125e6, 0.70), (1.25e9, 0.20)]);
                let profile = rng.weighted(&[
                    (Profile::Quiet, 0.6),
                    (Profile::Shared, 0.3),
                    (Profile::Hot, 0.1),
                ]);
                Machine::new(
                    format!("m{i:04}.farm.example.org"),
                    systems,
                    features,
                    speed,
                    slots,
                    cores,
                    bandwidth,
                    profile,
                )
            })
            .collect();
        Farm { machines, seed }
    }

    /// The background load schedule of machine `i`.
    pub fn background(&self, i: usize) -> Background {
        Background::new(
            Rng::stream(self.seed, "background", i as u64),
            &self.machines[i],
        )
    }
}

/// One machine's background load over time: a piecewise constant number of
/// runnable threads, changing at `next_change`.
#[derive(Debug, Clone)]
pub struct Background {
    rng: Rng,
    profile: Profile,
    cores: f64,
    busy: bool,
    /// Runnable threads now.
    pub level: f64,
    /// When the level changes next (seconds).
    pub next_change: f64,
}

impl Background {
    fn new(mut rng: Rng, m: &Machine) -> Background {
        // Start in the stationary state: busy with probability
        // busy-mean / (idle-mean + busy-mean).
        let busy = match m.profile {
            Profile::Idle | Profile::Quiet => false,
            Profile::Shared => rng.chance(600.0 / 1800.0),
            Profile::Hot => rng.chance(1200.0 / 1500.0),
        };
        let mut b = Background {
            rng,
            profile: m.profile,
            cores: m.cores as f64,
            busy,
            level: 0.0,
            next_change: 0.0,
        };
        b.draw(0.0);
        b
    }

    fn draw(&mut self, now: f64) {
        let c = self.cores;
        let (level, period) = match (self.profile, self.busy) {
            (Profile::Idle, _) => (0.0, f64::INFINITY),
            (Profile::Quiet, _) => (c * self.rng.uniform(0.0, 0.1), self.rng.exp(600.0)),
            (Profile::Shared, false) => (c * self.rng.uniform(0.0, 0.05), self.rng.exp(1200.0)),
            (Profile::Shared, true) => (c * self.rng.uniform(0.3, 1.0), self.rng.exp(600.0)),
            (Profile::Hot, false) => (c * self.rng.uniform(0.0, 0.05), self.rng.exp(300.0)),
            (Profile::Hot, true) => (c * self.rng.uniform(0.6, 1.5), self.rng.exp(1200.0)),
        };
        self.level = level;
        self.next_change = now + period;
    }

    /// Move to the next period (call at `next_change`).
    pub fn advance(&mut self) {
        let now = self.next_change;
        if matches!(self.profile, Profile::Shared | Profile::Hot) {
            self.busy = !self.busy;
        }
        self.draw(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn farm_is_deterministic_and_mixed() {
        let a = Farm::generate(1000, 3);
        let b = Farm::generate(1000, 3);
        assert_eq!(a.machines.len(), 1000);
        for (x, y) in a.machines.iter().zip(&b.machines) {
            assert_eq!(
                (x.speed, x.slots, x.cores, x.systems),
                (y.speed, y.slots, y.cores, y.systems)
            );
        }
        let arm = a.machines.iter().filter(|m| m.systems & 2 != 0).count();
        assert!((100..200).contains(&arm), "{arm}");
        assert!(a.machines.iter().all(|m| m.slots >= 1 && m.slots <= 16));
        assert!(a.machines.iter().any(|m| m.speed == 4.0));
        assert!(a.machines.iter().any(|m| m.features & 2 != 0));
    }

    #[test]
    fn rate_is_processor_sharing() {
        let m = Machine::new("m".into(), 1, 0, 2.0, 8, 4, 1e8, Profile::Idle);
        assert_eq!(m.rate(4, 0.0), 2.0);
        assert_eq!(m.rate(6, 2.0), 1.0);
        assert_eq!(m.capacity(0.0), 8.0);
        assert!(m.can_build(class_of(0, 0)));
        assert!(!m.can_build(class_of(0, 1)));
        assert!(!m.can_build(class_of(1, 0)));
    }

    #[test]
    fn background_changes_over_time() {
        let farm = Farm::generate(50, 1);
        for i in 0..50 {
            let mut b = farm.background(i);
            let mut t = 0.0;
            for _ in 0..20 {
                assert!(b.next_change > t);
                assert!(b.level >= 0.0 && b.level <= 1.5 * farm.machines[i].cores as f64);
                t = b.next_change;
                b.advance();
            }
        }
    }
}
