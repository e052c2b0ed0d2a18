//! The queue of derivations waiting for a build machine.
//!
//! Every derivation that wants a build machine files a [`Request`] and
//! gets a [`Ticket`]. One dispatcher (`Farm::dispatch`, run under the
//! farm's lock whenever a request arrives, a slot frees or a machine is
//! measured) serves the waiting requests in order of their estimated
//! remaining path, longest first, across every client of the daemon:
//! the derivation with the longest chain of work after it is the one that
//! makes the whole build late. Requests are grouped by what they need
//! (system and features); once no machine can take the head of a group,
//! the rest of that group is not asked (one decision per group, not one
//! per waiting derivation), and the other groups go on.
//!
//! A request whose build history is known may be held back for a faster
//! machine ([`scheduler::hold_for_faster`]): it is offered again when a
//! slot frees on a machine fast enough for it
//! ([`scheduler::slowest_acceptable`]), and takes the machine it refused
//! once it has waited as long as that machine would lose.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_scheme::BuildMachine;

use super::scheduler::{self, Choice, Needs};
use super::{fastest_speed, matches, share, Farm, State};

/// `(longest remaining path first, first come)`; the second part is the
/// request's id. Remaining paths are >= 0, so their bits order like them.
pub(super) type QueueKey = (Reverse<u64>, u64);

/// A derivation that wants a build machine.
#[derive(Debug, Clone)]
pub struct Request {
    pub needs: Needs,
    /// Its input closure: machines holding more of it are preferred.
    pub closure: Arc<BTreeSet<ferry_formats::StorePath>>,
    /// Estimated seconds from its start to the end of the longest chain of
    /// builds that wait for it (itself included): the queue's order.
    pub remaining: f64,
    /// Its own estimated seconds on a speed-1 machine, when its build
    /// history is known; without it, it is never held for a faster machine.
    pub estimate: Option<f64>,
}

/// What the dispatcher decided for a request.
enum Decided {
    Machine(Box<BuildMachine>),
    Local,
}

pub(super) struct Waiter {
    request: Request,
    key: QueueKey,
    wake: Arc<tokio::sync::Notify>,
    decided: Option<Decided>,
    held: Option<Held>,
}

/// A request held back for a faster machine.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Speed of the machine it refused.
    offered: f64,
    since: Instant,
    /// What it would lose there: once held that long, it takes it.
    limit: f64,
    /// What [`scheduler::slowest_acceptable`] needs: its estimate, the
    /// fastest candidate's speed, and the room it had when held.
    estimate: f64,
    fastest: f64,
    room: f64,
    /// A faster machine freed a slot since: ask again.
    reoffer: bool,
}
/// A reserved slot on a machine; released on drop.
pub struct Slot<'a> {
    farm: &'a Farm,
    pub machine: BuildMachine,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut st = self.farm.lock();
        release(&mut st, &self.machine);
        self.farm.dispatch(&mut st);
    }
}

/// A slot on `machine` is free again: what was held back for a machine
/// this fast is offered again.
fn release(st: &mut State, machine: &BuildMachine) {
    if let Some(l) = st.live.get_mut(&machine.name) {
        l.in_use = l.in_use.saturating_sub(1);
    }
    for id in &st.held {
        let Some(w) = st.waiters.get_mut(id) else {
            continue;
        };
        if let Some(h) = &mut w.held {
            let held_for = h.since.elapsed().as_secs_f64();
            if machine.speed > h.offered
                && machine.speed
                    >= scheduler::slowest_acceptable(h.estimate, h.fastest, h.room, held_for)
                && matches(machine, &w.request.needs)
            {
                h.reoffer = true;
            }
        }
    }
}

/// A place in the queue ([`Farm::request`]); leaving it (drop) withdraws
/// the request, and frees the slot if one was granted and not taken.
pub struct Ticket<'a> {
    farm: &'a Farm,
    id: u64,
    wake: Arc<tokio::sync::Notify>,
}

impl<'a> Ticket<'a> {
    /// The decision, if the dispatcher made one (the ticket is then used
    /// up: poll again only after a `Wait`); else why the request waits.
    pub fn poll(&mut self) -> Placement<'a> {
        let mut st = self.farm.lock();
        // A hold that ran out, or a machine that came back from its
        // back-off, is noticed here: at most one dispatch a second.
        if st
            .last_dispatch
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.farm.dispatch(&mut st);
        }
        let State {
            waiters,
            group_waits,
            ..
        } = &mut *st;
        let Some(w) = waiters.get_mut(&self.id) else {
            // Already served: a caller bug, answered as a wait.
            return Placement::Wait {
                busy: true,
                held: false,
                measuring: false,
            };
        };
        match w.decided.take() {
            Some(Decided::Machine(machine)) => {
                waiters.remove(&self.id);
                Placement::Remote(Box::new(Slot {
                    farm: self.farm,
                    machine: *machine,
                }))
            }
            Some(Decided::Local) => {
                waiters.remove(&self.id);
                Placement::Local
            }
            None => {
                if w.held.is_some() {
                    return Placement::Wait {
                        busy: true,
                        held: true,
                        measuring: false,
                    };
                }
                // Cheap: a waiting build polls every second, and the
                // reasons (one line per candidate) are for its error only.
                let why = group_waits.get(&w.request.needs);
                let busy = why.is_none_or(|why| {
                    why.iter()
                        .any(|(_, w)| matches!(w, scheduler::PassedOver::NoFreeSlot { .. }))
                });
                let measuring = why.is_some_and(|why| {
                    why.iter()
                        .any(|(_, w)| *w == scheduler::PassedOver::Measuring)
                });
                Placement::Wait {
                    busy,
                    held: false,
                    measuring,
                }
            }
        }
    }

    /// Why the request waits, one line per candidate machine, with its
    /// last error.
    pub fn reasons(&self) -> Vec<String> {
        let st = self.farm.lock();
        let Some(w) = st.waiters.get(&self.id) else {
            return Vec::new();
        };
        if let Some(h) = w.held {
            return vec![format!(
                "held for a machine faster than speed {} (at most {:.0} s more)",
                h.offered,
                (h.limit - h.since.elapsed().as_secs_f64()).max(0.0)
            )];
        }
        let Some(why) = st.group_waits.get(&w.request.needs) else {
            return Vec::new();
        };
        why.iter()
            .map(|(name, w)| {
                let unusable = st.machines.iter().find(|m| &m.name == name);
                if let Some(e) = unusable.and_then(|m| m.error_line()) {
                    return format!("{name}: not used: {e}");
                }
                let last = st
                    .live
                    .get(name)
                    .and_then(|l| l.last_error.as_deref())
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                format!("{name}: {w}{last}")
            })
            .collect()
    }

    /// Why the request waits, short, for a progress line: "h1 busy 1/1,
    /// h2 backed off 12 s" (the full text is [`Ticket::reasons`]).
    pub fn summary(&self) -> String {
        use scheduler::PassedOver as P;
        let st = self.farm.lock();
        let Some(w) = st.waiters.get(&self.id) else {
            return String::new();
        };
        if let Some(h) = w.held {
            return format!(
                "held for a machine faster than speed {} ({:.0} s more at most)",
                h.offered,
                (h.limit - h.since.elapsed().as_secs_f64()).max(0.0)
            );
        }
        let Some(why) = st.group_waits.get(&w.request.needs) else {
            return "the farm's queue".into();
        };
        let now = Instant::now();
        why.iter()
            .map(|(name, w)| match w {
                P::NoFreeSlot { in_use, slots } => format!("{name} busy {in_use}/{slots}"),
                P::Overloaded { load, .. } => format!("{name} overloaded (load {load:.2})"),
                P::LowDisk { free_bytes } => format!("{name} full ({} MiB free)", free_bytes >> 20),
                P::BackedOff => match st.live.get(name).and_then(|l| l.backed_off_until) {
                    Some(t) if t.saturating_duration_since(now) > Duration::from_secs(3600) => {
                        format!("{name} out until its configuration changes")
                    }
                    Some(t) => format!(
                        "{name} backed off {} s",
                        t.saturating_duration_since(now).as_secs_f64().ceil()
                    ),
                    None => format!("{name} backed off"),
                },
                P::Measuring => format!("{name} not answered yet"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Until the dispatcher decides, or `timeout`.
    pub async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut st = self.farm.lock();
        let Some(w) = st.waiters.remove(&self.id) else {
            return;
        };
        st.held.remove(&self.id);
        if let Some(q) = st.queues.get_mut(&w.request.needs) {
            q.remove(&w.key);
            if q.is_empty() {
                st.queues.remove(&w.request.needs);
            }
        }
        if let Some(Decided::Machine(m)) = w.decided {
            // Granted, never taken: give it to the next in line.
            release(&mut st, &m);
            self.farm.dispatch(&mut st);
        }
    }
}

/// The result of asking for a machine.
pub enum Placement<'a> {
    Remote(Box<Slot<'a>>),
    /// No machine matches the derivation: build here.
    Local,
    /// Machines match but none can take it now ([`Ticket::reasons`] says
    /// why, per machine).
    Wait {
        /// A candidate is only busy (every slot running our builds): the
        /// farm is working, so the wait is not a failure to reach it.
        busy: bool,
        /// Held back for a faster machine (see [`Ticket`]).
        held: bool,
        /// A candidate is being measured for the first time: its answer
        /// is awaited (bounded by the liveness bound), while any other
        /// machine that frees up is used.
        measuring: bool,
    },
}
impl Farm {
    /// Join the queue for a machine. The dispatcher runs at once: a free
    /// machine is granted before this returns (see [`Ticket::poll`]).
    pub fn request(&self, request: Request) -> Ticket<'_> {
        self.reload_if_changed();
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        let key = (Reverse(request.remaining.max(0.0).to_bits()), id);
        let wake = Arc::new(tokio::sync::Notify::new());
        st.queues
            .entry(request.needs.clone())
            .or_default()
            .insert(key);
        st.waiters.insert(
            id,
            Waiter {
                request,
                key,
                wake: wake.clone(),
                decided: None,
                held: None,
            },
        );
        self.dispatch(&mut st);
        Ticket {
            farm: self,
            id,
            wake,
        }
    }

    /// Serve the queue (see the module documentation); called with the
    /// farm's lock held, by whatever changed it.
    pub(super) fn dispatch(&self, st: &mut State) {
        let now = Instant::now();
        st.last_dispatch = Some(now);
        if st.queues.is_empty() {
            return;
        }
        let State {
            machines,
            live,
            present,
            waiters,
            held,
            queues,
            group_waits,
            ..
        } = st;
        let mut states = Self::states(machines, live);
        let groups: Vec<Needs> = queues.keys().cloned().collect();
        // Fastest candidate per group: what a held request waits for.
        let fastest: Vec<f64> = groups
            .iter()
            .map(|needs| fastest_speed(machines, needs).unwrap_or(0.0))
            .collect();
        let mut after: Vec<Option<QueueKey>> = vec![None; groups.len()];
        let mut blocked = vec![false; groups.len()];
        let mut granted: Vec<usize> = Vec::new();
        loop {
            // The longest remaining path still waiting (held ones included).
            let longest = groups
                .iter()
                .filter_map(|needs| queues[needs].first().map(|k| f64::from_bits(k.0 .0)))
                .fold(0.0, f64::max);
            // The next request: the best head among the groups not blocked.
            let mut next: Option<(usize, QueueKey)> = None;
            for (g, needs) in groups.iter().enumerate() {
                if blocked[g] {
                    continue;
                }
                let head = match after[g] {
                    None => queues[needs].iter().next(),
                    Some(k) => queues[needs]
                        .range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
                        .next(),
                };
                if let Some(&k) = head {
                    if next.is_none_or(|(_, best)| k < best) {
                        next = Some((g, k));
                    }
                }
            }
            let Some((g, key)) = next else { break };
            after[g] = Some(key);
            let w = waiters.get_mut(&key.1).expect("queued requests wait");
            if let Some(h) = &w.held {
                let expired = h.since.elapsed().as_secs_f64() >= h.limit;
                if !h.reoffer && !expired {
                    continue;
                }
            }
            let choice = scheduler::choose(&states, &groups[g], now, |i| {
                share(present.get(states[i].name), &w.request.closure)
            });
            match choice {
                Choice::Machine(i) => {
                    if let Some(estimate) = w.request.estimate {
                        let lost = scheduler::time_lost(estimate, states[i].speed, fastest[g]);
                        let since = w.held.map_or(now, |h| h.since);
                        let held_for = now.saturating_duration_since(since).as_secs_f64();
                        if scheduler::hold_for_faster(w.request.remaining, lost, longest, held_for)
                        {
                            w.held = Some(Held {
                                offered: states[i].speed,
                                since,
                                limit: lost,
                                estimate,
                                fastest: fastest[g],
                                room: scheduler::HOLD_SLACK * longest - w.request.remaining,
                                reoffer: false,
                            });
                            held.insert(key.1);
                            continue;
                        }
                    }
                    states[i].in_use += 1;
                    granted.push(i);
                    w.decided = Some(Decided::Machine(Box::new(machines[i].clone())));
                    w.held = None;
                    held.remove(&key.1);
                    w.wake.notify_one();
                    queues.get_mut(&groups[g]).expect("group").remove(&key);
                }
                Choice::Local => {
                    w.decided = Some(Decided::Local);
                    w.wake.notify_one();
                    queues.get_mut(&groups[g]).expect("group").remove(&key);
                }
                Choice::Wait(mut why) => {
                    // Backed off for its first probe, not for a failure.
                    for (name, w) in &mut why {
                        let first_probe = live
                            .get(name.as_str())
                            .is_some_and(|l| l.probing && l.info.is_none());
                        if first_probe && *w == scheduler::PassedOver::BackedOff {
                            *w = scheduler::PassedOver::Measuring;
                        }
                    }
                    group_waits.insert(groups[g].clone(), why);
                    blocked[g] = true;
                }
            }
        }
        drop(states);
        for i in granted {
            live.entry(machines[i].name.clone()).or_default().in_use += 1;
        }
        for needs in &groups {
            if queues[needs].is_empty() {
                queues.remove(needs);
                group_waits.remove(needs);
            }
        }
    }
}
