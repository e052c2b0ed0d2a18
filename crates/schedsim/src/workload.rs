//! The simulated work: a DAG of derivations shaped like a distribution
//! rebuild. Fixed once (the same for every rule and seed, only the random
//! draws change with the seed); it was not tuned to the results.
//!
//! Per system (88 % of the derivations are `x86_64-linux`, 12 %
//! `aarch64-linux`; no edge crosses systems), in this order, every edge
//! pointing to an earlier derivation:
//!
//! 1. a bootstrap chain of 40 derivations (Guix's `commencement.scm`: each
//!    needs the previous; ~150 s each at speed 1, three compiler stages of
//!    2400 s); its last derivation is the toolchain everything needs;
//! 2. 3 % core libraries: toolchain + 0-3 earlier core libraries;
//! 3. 12 ecosystems (language package sets, sizes 1, 1/2, 1/3...): each has
//!    a base (interpreter or compiler: toolchain + 1-3 core libraries; one
//!    in three is huge, 3000-9000 s, half of those needing `big-parallel`);
//! 4. one long chain per ~8000 derivations (bootstrapping compilers,
//!    versioned series): 20-50 links of ~200 s after an ecosystem base;
//!    a quarter of that ecosystem's packages need the end of one of its
//!    chains;
//! 5. packages, the bulk: in an ecosystem, need its base, 0-2 core
//!    libraries and 0-4 earlier packages of the ecosystem, popular (early)
//!    ones more often. Work log-normal, median 40 s, sigma 1.3 (mean ~93 s,
//!    1 % over 800 s), capped at 3000 s. 0.2 % are huge (2000-12000 s, half
//!    need `big-parallel`: browsers, office suites), 1 % are system tests
//!    needing `kvm` (3-10 earlier packages, ~300 s).
//!
//! Work is in seconds of one core of a speed-1 machine. Output sizes are
//! log-normal (median 3 MB, sigma 1.5, at most 2 GB); the toolchain's is
//! 250 MB and huge builds' 200 MB-1.5 GB. Sources and fixed-output
//! downloads are not modelled (the same for every rule).

use crate::farm::{class_of, SYSTEMS};
use crate::rng::Rng;

const MB: f64 = 1e6;

/// A fixed shape of work: how heavy the packages are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    pub name: &'static str,
    /// Factor on the packages' and tests' work.
    pub bulk: f64,
}

/// The scenarios, fixed before any rule was compared on them:
/// - `rebuild`: the work as described above. On 1000 machines the farm is
///   mostly idle after the bootstrap and the critical path dominates the
///   bound: placement decides whether the long chains and huge builds land
///   on fast machines.
/// - `heavy`: the same graph with ten times the work per package and test
///   (builds with long test suites, or a farm smaller for its work): the
///   farm is saturated for hours, so placement also decides who waits.
pub const SCENARIOS: [Scenario; 2] = [
    Scenario {
        name: "rebuild",
        bulk: 1.0,
    },
    Scenario {
        name: "heavy",
        bulk: 10.0,
    },
];

/// What a derivation is, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bootstrap,
    Core,
    Base,
    Chain,
    Package,
    Huge,
    Test,
}

/// One derivation.
#[derive(Debug, Clone)]
pub struct Drv {
    /// Index into [`SYSTEMS`].
    pub system: u8,
    /// Bits of [`crate::farm::FEATURES`] it requires.
    pub features: u8,
    /// Seconds on one core of a speed-1 machine.
    pub work: f64,
    /// Bytes of its output.
    pub out_bytes: f64,
    pub kind: Kind,
}

impl Drv {
    pub fn class(&self) -> usize {
        class_of(self.system, self.features)
    }
}

/// The DAG, in topological order (every dependency has a smaller index),
/// with edges both ways in compressed rows.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    pub drvs: Vec<Drv>,
    dep_start: Vec<u32>,
    deps: Vec<u32>,
    rdep_start: Vec<u32>,
    rdeps: Vec<u32>,
}

impl Workload {
    /// Build from derivations and their dependencies (each `< index`).
    pub fn from_parts(drvs: Vec<Drv>, deps: Vec<Vec<u32>>) -> Workload {
        assert_eq!(drvs.len(), deps.len());
        let mut w = Workload {
            drvs,
            dep_start: Vec::with_capacity(deps.len() + 1),
            ..Default::default()
        };
        let mut counts = vec![0u32; w.drvs.len()];
        w.dep_start.push(0);
        for (i, ds) in deps.iter().enumerate() {
            let mut ds = ds.clone();
            ds.sort_unstable();
            ds.dedup();
            for &d in &ds {
                assert!((d as usize) < i, "dependency {d} of {i} is not earlier");
                counts[d as usize] += 1;
            }
            w.deps.extend_from_slice(&ds);
            w.dep_start.push(w.deps.len() as u32);
        }
        w.rdep_start.push(0);
        for c in &counts {
            let last = *w.rdep_start.last().expect("pushed");
            w.rdep_start.push(last + c);
        }
        w.rdeps = vec![0; w.deps.len()];
        let mut fill: Vec<u32> = w.rdep_start[..w.drvs.len()].to_vec();
        for i in 0..w.drvs.len() {
            for k in w.dep_start[i]..w.dep_start[i + 1] {
                let d = w.deps[k as usize] as usize;
                w.rdeps[fill[d] as usize] = i as u32;
                fill[d] += 1;
            }
        }
        w
    }

    pub fn len(&self) -> usize {
        self.drvs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.drvs.is_empty()
    }

    pub fn deps(&self, i: usize) -> &[u32] {
        &self.deps[self.dep_start[i] as usize..self.dep_start[i + 1] as usize]
    }

    pub fn dependents(&self, i: usize) -> &[u32] {
        &self.rdeps[self.rdep_start[i] as usize..self.rdep_start[i + 1] as usize]
    }

    pub fn edges(&self) -> usize {
        self.deps.len()
    }

    pub fn total_work(&self) -> f64 {
        self.drvs.iter().map(|d| d.work).sum()
    }

    /// Longest chain of derivations below each one, itself included,
    /// counted in derivations: what an engine knows from the graph alone.
    pub fn heights(&self) -> Vec<u32> {
        let mut h = vec![1u32; self.len()];
        for i in (0..self.len()).rev() {
            let below = self
                .dependents(i)
                .iter()
                .map(|&j| h[j as usize])
                .max()
                .unwrap_or(0);
            h[i] = 1 + below;
        }
        h
    }

    /// The rebuild of the module documentation, `n` derivations.
    pub fn generate(n: usize, seed: u64) -> Workload {
        Self::generate_scaled(n, seed, 1.0)
    }

    /// As [`Workload::generate`], with the packages' and tests' work
    /// multiplied by `bulk` (the same draws otherwise).
    pub fn generate_scaled(n: usize, seed: u64, bulk: f64) -> Workload {
        let mut g = Gen {
            bulk,
            rng: Rng::stream(seed, "work", 0),
            drvs: Vec::with_capacity(n),
            deps: Vec::with_capacity(n),
        };
        let x86 = ((n as f64) * 0.88).round() as usize;
        g.subgraph(0, x86);
        g.subgraph(1, n - x86);
        Workload::from_parts(g.drvs, g.deps)
    }
}

struct Gen {
    bulk: f64,
    rng: Rng,
    drvs: Vec<Drv>,
    deps: Vec<Vec<u32>>,
}

impl Gen {
    fn push(&mut self, drv: Drv, deps: Vec<u32>) -> u32 {
        self.drvs.push(drv);
        self.deps.push(deps);
        (self.drvs.len() - 1) as u32
    }

    fn drv(&self, system: u8, kind: Kind, work: f64, out_bytes: f64) -> Drv {
        Drv {
            system,
            features: 0,
            work,
            out_bytes,
            kind,
        }
    }

    fn pick(&mut self, from: &[u32]) -> Option<u32> {
        (!from.is_empty()).then(|| from[self.rng.below(from.len())])
    }

    /// A level in 1..=max: 1 with probability p, each next one less likely
    /// (geometric, capped).
    fn level(&mut self, p: f64, max: usize) -> usize {
        let mut l = 1;
        while l < max && !self.rng.chance(p) {
            l += 1;
        }
        l
    }

    /// Dependencies of a node of level `l` among `nodes` (sorted by level,
    /// level k starting at `start[k]`): one of level l-1, and up to `more`
    /// of lower levels, earlier (more popular) ones more often.
    fn lower(&mut self, nodes: &[u32], start: &[usize], l: usize, more: u64) -> Vec<u32> {
        let mut deps = Vec::new();
        if l <= 1 {
            return deps;
        }
        let (a, b) = (start[l - 1], start[l]);
        if a < b {
            deps.push(nodes[a + self.rng.below(b - a)]);
        }
        if b > 0 {
            for _ in 0..self.rng.int(0, more) {
                let u = self.rng.f64().powf(1.5);
                deps.push(nodes[((b as f64) * u) as usize]);
            }
        }
        deps
    }

    fn subgraph(&mut self, system: u8, size: usize) {
        if size == 0 {
            return;
        }
        debug_assert!((system as usize) < SYSTEMS.len());
        let start = self.drvs.len();
        // 1. Bootstrap chain.
        let boot = (size / 20).clamp(1, 40);
        let mut prev: Option<u32> = None;
        for i in 0..boot {
            let work = if boot == 40 && (i == 10 || i == 20 || i == 30) {
                2400.0
            } else {
                self.rng.log_normal(150.0, 0.7)
            };
            let out = if i + 1 == boot {
                250.0 * MB
            } else {
                self.rng.log_normal(30.0 * MB, 0.5)
            };
            let d = self.drv(system, Kind::Bootstrap, work, out);
            prev = Some(self.push(d, prev.into_iter().collect()));
        }
        let toolchain = prev.expect("boot >= 1");
        let mut left = size - boot;
        // 2. Core libraries, in levels: a library of level l needs one of
        //    level l-1 and up to two more of lower levels.
        let n_core = ((size as f64 * 0.03).round() as usize)
            .clamp(1, left.max(1))
            .min(left);
        let mut levels: Vec<usize> = (0..n_core).map(|_| self.level(0.4, 6)).collect();
        levels.sort_unstable();
        let mut core: Vec<u32> = Vec::with_capacity(n_core);
        let mut level_start = vec![0usize; 8];
        let mut level = 0;
        for (k, &l) in levels.iter().enumerate() {
            if l != level {
                level_start[level + 1..=l + 1].fill(k);
                level = l;
            }
            let mut deps = vec![toolchain];
            deps.extend(self.lower(&core, &level_start, l, 2));
            let work = self.rng.log_normal(90.0, 1.0);
            let out = self.rng.log_normal(5.0 * MB, 1.2);
            let d = self.drv(system, Kind::Core, work, out);
            core.push(self.push(d, deps));
        }
        left -= n_core;
        // 3. Ecosystem bases.
        let n_eco = (size / 200).clamp(1, 12).min(left);
        let mut bases = Vec::with_capacity(n_eco);
        for _ in 0..n_eco {
            let mut deps = vec![toolchain];
            for _ in 0..self.rng.int(1, 3) {
                deps.extend(self.pick(&core));
            }
            let mut d = self.drv(system, Kind::Base, 0.0, 0.0);
            if self.rng.chance(1.0 / 3.0) {
                d.work = self.rng.log_uniform(3000.0, 9000.0);
                d.kind = Kind::Huge;
                if self.rng.chance(0.5) {
                    d.features |= 2;
                }
            } else {
                d.work = self.rng.log_normal(600.0, 1.0);
            }
            d.out_bytes = self.rng.log_normal(100.0 * MB, 1.0);
            bases.push(self.push(d, deps));
        }
        left -= n_eco;
        if n_eco == 0 {
            return;
        }
        // Ecosystem shares 1, 1/2, 1/3...
        let shares: Vec<(usize, f64)> = (0..n_eco).map(|e| (e, 1.0 / (e + 1) as f64)).collect();
        // 4. Long chains.
        let mut chain_ends: Vec<Vec<u32>> = vec![Vec::new(); n_eco];
        for _ in 0..size / 8000 {
            let e = self.rng.below(n_eco);
            let len = self.rng.int(20, 50) as usize;
            let mut prev = bases[e];
            for _ in 0..len.min(left) {
                let work = self.rng.log_normal(200.0, 0.8);
                let out = self.rng.log_normal(20.0 * MB, 1.0);
                let d = self.drv(system, Kind::Chain, work, out);
                prev = self.push(d, vec![prev]);
                left -= 1;
            }
            chain_ends[e].push(prev);
        }
        // 5. Packages, in levels over their ecosystem's base (level l
        //    needs one package of level l-1 and up to three of lower
        //    levels, popular ones more often), then the system tests.
        let n_tests = ((left as f64) * 0.01).round() as usize;
        let n_pkgs = left - n_tests;
        let mut order: Vec<(usize, usize)> = (0..n_pkgs)
            .map(|_| {
                let l = self.level(0.3, 15);
                (l, self.rng.weighted(&shares))
            })
            .collect();
        order.sort_unstable();
        let mut eco_pkgs: Vec<Vec<u32>> = vec![Vec::new(); n_eco];
        let mut eco_level_start: Vec<Vec<usize>> = vec![vec![0; 17]; n_eco];
        let mut eco_level: Vec<usize> = vec![0; n_eco];
        let mut all_pkgs: Vec<u32> = Vec::with_capacity(n_pkgs);
        for (l, e) in order {
            if eco_level[e] != l {
                let len = eco_pkgs[e].len();
                eco_level_start[e][eco_level[e] + 1..=l + 1].fill(len);
                eco_level[e] = l;
            }
            let mut d = self.drv(system, Kind::Package, 0.0, 0.0);
            let mut deps = vec![bases[e]];
            if !chain_ends[e].is_empty() && self.rng.chance(0.25) {
                let ends = chain_ends[e].clone();
                deps.extend(self.pick(&ends));
            }
            if self.rng.chance(0.002 / 0.99) {
                d.kind = Kind::Huge;
                d.work = self.rng.log_uniform(2000.0, 12000.0);
                d.out_bytes = self.rng.log_uniform(200.0 * MB, 1500.0 * MB);
                if self.rng.chance(0.5) {
                    d.features |= 2;
                }
            } else {
                d.work = self.bulk * self.rng.log_normal(40.0, 1.3).min(3000.0);
                d.out_bytes = self.rng.log_normal(3.0 * MB, 1.5).min(2000.0 * MB);
            }
            for _ in 0..self.rng.int(0, 2) {
                deps.extend(self.pick(&core));
            }
            let pkgs = std::mem::take(&mut eco_pkgs[e]);
            deps.extend(self.lower(&pkgs, &eco_level_start[e], l, 3));
            eco_pkgs[e] = pkgs;
            let i = self.push(d, deps);
            eco_pkgs[e].push(i);
            all_pkgs.push(i);
        }
        for _ in 0..n_tests {
            // A system test: boots a VM with several packages.
            let mut d = self.drv(system, Kind::Test, 0.0, 0.0);
            d.features |= 1;
            d.work = self.bulk * self.rng.log_normal(300.0, 0.8);
            d.out_bytes = self.rng.log_normal(1.0 * MB, 1.0);
            let mut deps = vec![toolchain];
            for _ in 0..self.rng.int(3, 10) {
                deps.extend(self.pick(&all_pkgs));
            }
            self.push(d, deps);
        }
        debug_assert_eq!(self.drvs.len() - start, size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_n_derivations_in_topological_order() {
        for n in [1, 2, 7, 50, 300, 20_000] {
            let w = Workload::generate(n, 5);
            assert_eq!(w.len(), n);
            for i in 0..n {
                assert!(w.deps(i).iter().all(|&d| (d as usize) < i));
                for &j in w.dependents(i) {
                    assert!(w.deps(j as usize).contains(&(i as u32)));
                }
            }
        }
    }

    #[test]
    fn the_mix_is_there() {
        let w = Workload::generate(100_000, 1);
        let count = |k: Kind| w.drvs.iter().filter(|d| d.kind == k).count();
        assert_eq!(count(Kind::Bootstrap), 80);
        assert!(count(Kind::Huge) > 100);
        assert!(count(Kind::Test) > 500);
        assert!(count(Kind::Chain) > 200);
        let arm = w.drvs.iter().filter(|d| d.system == 1).count();
        assert_eq!(arm, 12_000);
        let mean = w.total_work() / w.len() as f64;
        assert!((80.0..160.0).contains(&mean), "{mean}");
        let h = w.heights();
        assert!(*h.iter().max().unwrap() > 60);
    }
}
