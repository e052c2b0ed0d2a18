//! A lower bound on the makespan of any placement rule, under the model.
//!
//! `max(critical path, work bound)`:
//!
//! - critical path: the longest chain of the DAG where each derivation
//!   takes `work / speed` on the fastest machine that can build it, with
//!   no transfer and no sharing. A build never runs faster than its
//!   machine's speed ([`crate::farm::Machine::rate`] <= speed), transfers
//!   take time >= 0 and a derivation starts after its inputs are done, so
//!   no schedule beats it.
//! - work bound: the first time T at which the farm's cumulative capacity
//!   reaches the total work. A machine's capacity at time t is the most
//!   work a second it can do for us: every slot busy, sharing the cores
//!   with the background of that moment,
//!   `slots * speed * min(1, cores / (slots + background(t)))`. The total
//!   rate of k builds, `k * rate(k)`, grows with k, and k <= slots, so no
//!   schedule does more work by T. Background loads are the same schedules
//!   the simulator replays. This capacity counts every machine for every
//!   derivation (ignoring systems and features), which only lowers the
//!   bound.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::farm::{Farm, CLASSES};
use crate::workload::Workload;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LowerBound {
    pub critical_path: f64,
    pub work_bound: f64,
    pub total_work: f64,
    /// Capacity at time 0 (work units a second), for the report.
    pub capacity_at_start: f64,
    pub bound: f64,
}

/// Fastest speed among the machines that can build each class (0: none).
pub fn fastest_by_class(farm: &Farm) -> [f64; CLASSES] {
    let mut best = [0.0f64; CLASSES];
    for m in &farm.machines {
        for (c, b) in best.iter_mut().enumerate() {
            if m.can_build(c) {
                *b = b.max(m.speed);
            }
        }
    }
    best
}

/// Longest chain ending at each derivation (its end time at best).
pub fn earliest_finish(farm: &Farm, work: &Workload) -> Vec<f64> {
    let fastest = fastest_by_class(farm);
    let mut f = vec![0.0f64; work.len()];
    for i in 0..work.len() {
        let d = &work.drvs[i];
        let s = fastest[d.class()];
        assert!(s > 0.0, "no machine can build derivation {i}");
        let start = work
            .deps(i)
            .iter()
            .map(|&p| f[p as usize])
            .fold(0.0, f64::max);
        f[i] = start + d.work / s;
    }
    f
}

pub fn lower_bound(farm: &Farm, work: &Workload) -> LowerBound {
    let critical_path = earliest_finish(farm, work).into_iter().fold(0.0, f64::max);
    let total_work = work.total_work();
    // Sweep the background changes in time order.
    let mut bgs: Vec<_> = (0..farm.machines.len())
        .map(|i| farm.background(i))
        .collect();
    let mut cap: Vec<f64> = farm
        .machines
        .iter()
        .zip(&bgs)
        .map(|(m, b)| m.capacity(b.level))
        .collect();
    let mut total: f64 = cap.iter().sum();
    let capacity_at_start = total;
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = bgs
        .iter()
        .enumerate()
        .filter(|(_, b)| b.next_change.is_finite())
        .map(|(i, b)| Reverse((b.next_change.to_bits(), i)))
        .collect();
    let (mut t, mut done) = (0.0f64, 0.0f64);
    let work_bound = loop {
        let next = heap
            .peek()
            .map_or(f64::INFINITY, |Reverse((bits, _))| f64::from_bits(*bits));
        if total > 0.0 && done + total * (next - t) >= total_work {
            break t + (total_work - done) / total;
        }
        assert!(next.is_finite(), "the farm has no capacity");
        done += total * (next - t);
        t = next;
        let Reverse((_, i)) = heap.pop().expect("peeked");
        bgs[i].advance();
        let c = farm.machines[i].capacity(bgs[i].level);
        total += c - cap[i];
        cap[i] = c;
        heap.push(Reverse((bgs[i].next_change.to_bits(), i)));
    };
    LowerBound {
        critical_path,
        work_bound,
        total_work,
        capacity_at_start,
        bound: critical_path.max(work_bound),
    }
}
