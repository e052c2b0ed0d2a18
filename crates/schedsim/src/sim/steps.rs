//! The simulator's steps, one method each: queueing a ready derivation,
//! dispatching the queues to machines (holding a derivation back for a
//! better machine), starting, advancing and finishing builds, and the
//! handling of each event in time order.

use std::cmp::Reverse;

use ferry_daemon::scheduler;

use super::{Discipline, Ev, Queue, Sim, Timed, LOAD_TAU, MEASURE_EVERY};
use crate::farm::{CLASSES, OVERLOAD_THRESHOLD};
use crate::rules::{Cx, Rule};

impl Sim<'_> {
    pub(super) fn push(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.events.push(Timed {
            t,
            seq: self.seq,
            ev,
        });
    }

    pub(super) fn cx(&self) -> Cx<'_> {
        Cx {
            farm: self.farm,
            views: &self.views,
            known: &self.known,
            now: self.now,
        }
    }

    pub(super) fn update_rule(&mut self, rule: &mut dyn Rule, m: usize) {
        let cx = Cx {
            farm: self.farm,
            views: &self.views,
            known: &self.known,
            now: self.now,
        };
        rule.update(&cx, m);
    }

    /// Wake the derivations `m` could take, if it can take one now.
    pub(super) fn wake(&mut self, rule: &dyn Rule, m: usize) {
        if self.blocked & self.class_mask[m] != 0 && rule.usable(&self.cx(), m) {
            self.blocked &= !self.class_mask[m];
        }
    }

    pub(super) fn enqueue(&mut self, d: u32) {
        let c = self.work.drvs[d as usize].class();
        self.ready_at[d as usize] = self.now;
        self.seq += 1;
        let seq = self.seq;
        match &mut self.queues[c] {
            Queue::Fifo(q) => q.push_back((seq, d)),
            Queue::Prio(q) => q.push((self.priority[d as usize], Reverse(seq), d)),
        }
    }

    /// Place ready derivations, in queue order, until every non-empty
    /// queue's head must wait.
    pub(super) fn dispatch(&mut self, rule: &mut dyn Rule) {
        loop {
            let mut best: Option<(usize, (u32, u64))> = None;
            for c in 0..CLASSES {
                if self.blocked & (1 << c) != 0 {
                    continue;
                }
                if let Some(k) = self.queues[c].head_key() {
                    if best.is_none_or(|(_, b)| k < b) {
                        best = Some((c, k));
                    }
                }
            }
            let Some((c, _)) = best else { return };
            let d = self.queues[c].head().expect("non-empty");
            let work = self.work;
            let inputs = work.deps(d as usize);
            let choice = rule.choose(&self.cx(), c, inputs);
            match choice {
                Some(m) => {
                    assert!(
                        self.farm.machines[m].can_build(c),
                        "rule broke systems/features"
                    );
                    assert!(
                        self.views[m].in_use < self.farm.machines[m].slots,
                        "rule broke slots"
                    );
                    self.queues[c].pop();
                    if !self.hold_back(d, c, m) {
                        self.start(rule, d, m);
                    }
                }
                None => {
                    self.res.waits += 1;
                    self.blocked |= 1 << c;
                }
            }
            if self.queues.iter().all(Queue::is_empty) {
                return;
            }
        }
    }

    /// The hold-for-fast policy ([`Discipline::CriticalPathHold`]): hold
    /// `d` back rather than build it on `m`? (`d` is out of its queue.)
    pub(super) fn hold_back(&mut self, d: u32, c: usize, m: usize) -> bool {
        if self.cfg.discipline != Discipline::CriticalPathHold {
            return false;
        }
        let di = d as usize;
        let speed = self.farm.machines[m].speed;
        // The daemon's rule (`Farm::dispatch`): scheduler::time_lost and
        // scheduler::hold_for_faster.
        let lost = scheduler::time_lost(self.estimate[di], speed, self.fastest[c]);
        let was = self.held.iter().position(|h| h.0 == d);
        let since = was.map_or(self.now, |k| self.held[k].2);
        let longest = (0..CLASSES)
            .filter_map(|k| self.queues[k].head_key())
            .map(|(p, _)| (u32::MAX - p) as f64 / 100.0)
            .chain(self.held.iter().map(|h| self.remaining[h.0 as usize]))
            .fold(self.remaining[di], f64::max);
        let hold = scheduler::hold_for_faster(self.remaining[di], lost, longest, self.now - since);
        let room = scheduler::HOLD_SLACK * longest - self.remaining[di];
        match (hold, was) {
            (false, Some(k)) => {
                self.held.swap_remove(k);
                self.held_room.swap_remove(k);
            }
            (false, None) => {}
            (true, Some(k)) => {
                self.held[k].1 = speed;
                self.held[k].3 = lost;
                self.held_room[k] = room;
                // Just after: then it has waited longer than it loses.
                self.push(since + lost + 1e-6, Ev::HoldExpires { d });
            }
            (true, None) => {
                self.held.push((d, speed, self.now, lost));
                self.held_room.push(room);
                self.push(self.now + lost + 1e-6, Ev::HoldExpires { d });
            }
        }
        hold
    }

    /// Put a held derivation back in its queue.
    pub(super) fn requeue_held(&mut self, k: usize) {
        let d = self.held[k].0;
        let c = self.work.drvs[d as usize].class();
        self.seq += 1;
        let seq = self.seq;
        if let Queue::Prio(q) = &mut self.queues[c] {
            q.push((self.priority[d as usize], Reverse(seq), d));
        }
        // Not offered again until a faster machine frees a slot.
        self.held[k].1 = f64::INFINITY;
        self.blocked &= !(1 << c);
    }

    /// A slot freed on `m`: offer it again to what was held back for a
    /// machine faster than it was offered, when it would take a machine
    /// this fast now (the daemon's `release`).
    pub(super) fn unhold(&mut self, m: usize) {
        let speed = self.farm.machines[m].speed;
        for k in 0..self.held.len() {
            let (d, offered, since, _) = self.held[k];
            let (di, c) = (d as usize, self.work.drvs[d as usize].class());
            if speed > offered
                && speed
                    >= scheduler::slowest_acceptable(
                        self.estimate[di],
                        self.fastest[c],
                        self.held_room[k],
                        self.now - since,
                    )
                && self.farm.machines[m].can_build(c)
            {
                self.requeue_held(k);
            }
        }
    }

    pub(super) fn start(&mut self, rule: &mut dyn Rule, d: u32, m: usize) {
        let di = d as usize;
        self.res.placements += 1;
        self.res.machine[di] = m as u32;
        self.res.started[di] = self.now;
        self.queue_wait_sum += self.now - self.ready_at[di];
        self.views[m].in_use += 1;
        let missing: f64 = self
            .work
            .deps(di)
            .iter()
            .filter(|&&p| !self.holds.get(p as usize, m))
            .map(|&p| self.work.drvs[p as usize].out_bytes)
            .sum();
        self.res.uploaded_bytes += missing;
        self.update_rule(rule, m);
        if missing > 0.0 {
            let t = self.now + missing / self.farm.machines[m].bandwidth;
            self.push(t, Ev::UploadDone { d, m: m as u32 });
        } else {
            self.run(rule, d, m);
        }
    }

    /// Bring machine `m`'s progress and load up to now.
    pub(super) fn advance(&mut self, m: usize) {
        let now = self.now;
        let r = &mut self.runs[m];
        let dt = now - r.t;
        if dt > 0.0 {
            r.progress += r.rate * dt;
            let v = &mut self.views[m];
            v.load = v.load_at(now);
            v.load_t = now;
            r.t = now;
        }
    }

    /// After `m`'s running builds or background changed: new rate, next
    /// completion, and (for a rule reading the live load) when its load
    /// falls under the threshold.
    pub(super) fn changed(&mut self, rule: &mut dyn Rule, m: usize) {
        let mach = &self.farm.machines[m];
        let r = &mut self.runs[m];
        r.version += 1;
        r.rate = mach.rate(r.running.len(), r.background.level);
        let v = &mut self.views[m];
        v.runnable = r.running.len() as f64 + r.background.level;
        let version = r.version;
        let (l0, x) = (v.load, v.runnable);
        let next = r
            .running
            .iter()
            .map(|&(_, done)| done)
            .min_by(f64::total_cmp)
            .map(|next| self.now + ((next - r.progress) / r.rate).max(0.0));
        if let Some(t) = next {
            self.push(
                t,
                Ev::Tick {
                    m: m as u32,
                    version,
                },
            );
        }
        if self.live_load {
            let th = OVERLOAD_THRESHOLD * mach.cores as f64;
            if l0 >= th && x < th {
                let t = self.now + LOAD_TAU * ((l0 - x) / (th - x)).ln() + 1e-6;
                self.push(
                    t,
                    Ev::LoadFalls {
                        m: m as u32,
                        version,
                    },
                );
            }
        }
        self.update_rule(rule, m);
        self.wake(rule, m);
    }

    pub(super) fn run(&mut self, rule: &mut dyn Rule, d: u32, m: usize) {
        self.res.running[d as usize] = self.now;
        self.advance(m);
        for &p in self.work.deps(d as usize) {
            self.holds.set(p as usize, m);
        }
        let r = &mut self.runs[m];
        r.running
            .push((d, r.progress + self.work.drvs[d as usize].work));
        self.changed(rule, m);
    }

    pub(super) fn handle(&mut self, rule: &mut dyn Rule, ev: Ev) {
        match ev {
            Ev::UploadDone { d, m } => self.run(rule, d, m as usize),
            Ev::Tick { m, version } => {
                let m = m as usize;
                if self.runs[m].version != version {
                    return;
                }
                self.advance(m);
                let speed = self.farm.machines[m].speed;
                let bw = self.farm.machines[m].bandwidth;
                let r = &mut self.runs[m];
                let progress = r.progress;
                let rate = r.rate;
                let mut done = Vec::new();
                r.running.retain(|&(d, end)| {
                    let finished = end - progress <= 1e-6 * (1.0 + end.abs() * 1e-6);
                    if finished {
                        done.push(d);
                    }
                    !finished
                });
                for d in done {
                    let w = self.work.drvs[d as usize].work;
                    self.speed_work += speed * w;
                    // Rate at the end is a sample of the share; good enough
                    // for a report figure.
                    self.share_work += rate / speed * w;
                    self.holds.set(d as usize, m);
                    self.res.built[d as usize] = self.now;
                    let t = self.now + self.work.drvs[d as usize].out_bytes / bw;
                    self.push(t, Ev::DownloadDone { d, m: m as u32 });
                }
                self.changed(rule, m);
            }
            Ev::DownloadDone { d, m } => {
                let (di, m) = (d as usize, m as usize);
                self.views[m].in_use -= 1;
                for &p in self.work.deps(di) {
                    self.known.set(p as usize, m);
                }
                if self.cfg.record_outputs {
                    self.known.set(di, m);
                }
                assert!(self.res.finished[di].is_nan(), "derivation {d} built twice");
                self.res.finished[di] = self.now;
                self.completed += 1;
                for &j in self.work.dependents(di) {
                    let p = &mut self.pending[j as usize];
                    *p -= 1;
                    if *p == 0 {
                        self.enqueue(j);
                    }
                }
                self.update_rule(rule, m);
                if !self.held.is_empty() {
                    self.unhold(m);
                }
                self.wake(rule, m);
            }
            Ev::Background { m } => {
                let m = m as usize;
                self.advance(m);
                self.runs[m].background.advance();
                let next = self.runs[m].background.next_change;
                self.push(next, Ev::Background { m: m as u32 });
                self.changed(rule, m);
            }
            Ev::Measure { m } => {
                let m = m as usize;
                self.advance(m);
                let cores = self.farm.machines[m].cores;
                let v = &mut self.views[m];
                v.measured = v.normalized_load_at(self.now, cores);
                self.push(self.now + MEASURE_EVERY, Ev::Measure { m: m as u32 });
                self.update_rule(rule, m);
                self.wake(rule, m);
            }
            Ev::HoldExpires { d } => {
                if let Some(k) = self.held.iter().position(|h| h.0 == d) {
                    // Held as long as the machine it refused would lose:
                    // offered again (it takes that machine, or one as
                    // good, unless a faster one is free by now). Events of
                    // earlier offers are stale.
                    let (_, offered, since, limit) = self.held[k];
                    if offered.is_finite() && self.now > since + limit {
                        self.requeue_held(k);
                    }
                }
            }
            Ev::LoadFalls { m, version } => {
                let m = m as usize;
                if self.runs[m].version == version {
                    self.wake(rule, m);
                }
            }
        }
    }
}
