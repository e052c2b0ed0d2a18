//! The plan of a build: the derivations below the requested ones whose
//! outputs are not all valid, each one's place in the farm's queue (its
//! longest remaining path), and the loop that starts each derivation once
//! its inputs are built and marks what depends on a failure as not built.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ferry_formats::derivation::Derivation;
use ferry_formats::StorePath;
use ferry_protocol::{BuildOptions, BuildResult, BuildStatus};
use ferry_store::StoreError;
use tokio::task::JoinSet;

use super::outcome::result;
use super::{history_name, Engine, Events};
use crate::offload::scheduler::Needs;

/// Where a derivation stands in the farm's queue (see
/// [`crate::offload::farm`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Priority {
    /// Estimated seconds from its start to the end of the longest chain of
    /// builds waiting for it, at the fastest speed that can build each.
    pub(super) remaining: f64,
    /// Its own estimated seconds at speed 1, when its history is known.
    pub(super) estimate: Option<f64>,
}

/// The estimate of a derivation never built before, when nothing of the
/// plan has a history either (with some history, the mean of the known
/// estimates stands in). Only the order of the queue depends on it, and
/// a derivation without history is never held for a faster machine.
const UNKNOWN_ESTIMATE_SECS: f64 = 60.0;
/// A node of the plan: a derivation whose outputs are not all valid.
pub(super) struct Node {
    drv: Derivation,
    /// Input derivations that need building first.
    deps: Vec<StorePath>,
}
impl Engine {
    /// Read the derivation graph below `drvs` and keep the derivations whose
    /// outputs are not all valid. Derivations already complete get their
    /// result right away. Every `.drv` read is checked first
    /// ([`crate::drv_check`]): a bad one fails the whole plan.
    #[allow(clippy::type_complexity)]
    pub(super) fn plan(
        &self,
        drvs: &[StorePath],
    ) -> Result<(BTreeMap<StorePath, Node>, HashMap<StorePath, BuildResult>), StoreError> {
        let mut nodes = BTreeMap::new();
        let mut done = HashMap::new();
        let mut complete = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<StorePath> = drvs.to_vec();
        while let Some(p) = todo.pop() {
            if !seen.insert(p.clone()) {
                continue;
            }
            let drv = self.store.read_derivation_checked(&p)?;
            let outputs = self.output_paths(&drv)?;
            if self.store.are_valid(outputs.values())? {
                done.insert(
                    p.clone(),
                    BuildResult {
                        outputs: outputs
                            .iter()
                            .map(|(n, o)| (n.clone(), self.store.display(o)))
                            .collect(),
                        ..result(&self.store.display(&p), BuildStatus::AlreadyValid)
                    },
                );
                complete.insert(p, drv);
                continue;
            }
            for src in &drv.input_srcs {
                let sp = self.store.parse_path(src)?;
                if !self.store.is_valid(&sp)? {
                    return Err(StoreError::NotValid {
                        path: src.clone(),
                        store: self.store.store_dir().to_string(),
                    });
                }
            }
            let mut deps = Vec::new();
            for (input, wanted) in &drv.input_drvs {
                let ip = self.store.parse_path(input)?;
                // Only the outputs it uses need to be valid, as in Nix: a
                // build machine is sent those, not the input's others.
                if !seen.contains(&ip) && !wanted.is_empty() {
                    let idrv = self.store.read_derivation_checked(&ip)?;
                    let outs = self.output_paths(&idrv)?;
                    let used: Vec<_> = outs
                        .iter()
                        .filter(|(n, _)| wanted.contains(*n))
                        .map(|(_, o)| o)
                        .collect();
                    if used.len() == wanted.len() && self.store.are_valid(used)? {
                        complete.insert(ip, idrv);
                        continue;
                    }
                }
                deps.push(ip.clone());
                todo.push(ip);
            }
            nodes.insert(p, Node { drv, deps });
        }
        crate::drv_check::check_outputs(
            &self.store,
            nodes.iter().map(|(p, n)| (p, &n.drv)).chain(&complete),
        )?;
        // Inputs found complete are not dependencies to wait for.
        for node in nodes.values_mut() {
            node.deps.retain(|d| !done.contains_key(d));
        }
        Ok((nodes, done))
    }

    /// Each node's place in the farm's queue: its longest remaining path,
    /// from the build times of its history (or a stand-in), each at the
    /// fastest speed a machine that can build it has.
    pub(super) fn priorities(
        &self,
        nodes: &BTreeMap<StorePath, Node>,
    ) -> HashMap<StorePath, Priority> {
        let keys: Vec<&StorePath> = nodes.keys().collect();
        let index: HashMap<&StorePath, usize> =
            keys.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        let names: Vec<String> = nodes.iter().map(|(p, n)| history_name(p, &n.drv)).collect();
        let estimates = self
            .history
            .estimates(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let known: Vec<f64> = estimates.iter().flatten().copied().collect();
        let stand_in = if known.is_empty() {
            UNKNOWN_ESTIMATE_SECS
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let mut fastest: HashMap<Needs, f64> = HashMap::new();
        let mut durations = Vec::with_capacity(keys.len());
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); keys.len()];
        for (i, node) in nodes.values().enumerate() {
            let speed = match &self.offload {
                Some(off) => *fastest
                    .entry(Needs::of(&node.drv))
                    .or_insert_with_key(|needs| off.fastest(needs).unwrap_or(1.0)),
                None => 1.0,
            };
            durations.push(estimates[i].unwrap_or(stand_in) / speed);
            for dep in &node.deps {
                if let Some(&j) = index.get(dep) {
                    dependents[j].push(i);
                }
            }
        }
        let remaining = crate::offload::scheduler::remaining_paths(&durations, &dependents);
        keys.into_iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.clone(),
                    Priority {
                        remaining: remaining[i],
                        estimate: estimates[i],
                    },
                )
            })
            .collect()
    }

    /// Run the plan: start each node when its dependencies are built.
    pub(super) async fn run_plan(
        self: &Arc<Self>,
        mut nodes: BTreeMap<StorePath, Node>,
        priorities: &HashMap<StorePath, Priority>,
        done: &mut HashMap<StorePath, BuildResult>,
        opts: &BuildOptions,
        events: &Events,
    ) {
        let mut waiting: HashMap<StorePath, usize> = HashMap::new();
        let mut dependents: HashMap<StorePath, Vec<StorePath>> = HashMap::new();
        for (p, node) in &nodes {
            waiting.insert(p.clone(), node.deps.len());
            for d in &node.deps {
                dependents.entry(d.clone()).or_default().push(p.clone());
            }
        }
        let mut tasks = JoinSet::new();
        let mut stopped = false;
        let ready: Vec<StorePath> = waiting
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(p, _)| p.clone())
            .collect();
        for p in ready {
            let node = nodes.remove(&p).expect("planned");
            let prio = priorities.get(&p).copied().unwrap_or_default();
            self.spawn(&mut tasks, p, node, prio, opts, events);
        }
        while let Some(joined) = tasks.join_next().await {
            let (p, res) = joined.expect("build task panicked");
            let ok = matches!(res.status, BuildStatus::Built | BuildStatus::AlreadyValid);
            if ok {
                for dep in dependents.get(&p).cloned().unwrap_or_default() {
                    let n = waiting.get_mut(&dep).expect("planned");
                    *n -= 1;
                    if *n == 0 && !stopped {
                        if let Some(node) = nodes.remove(&dep) {
                            let prio = priorities.get(&dep).copied().unwrap_or_default();
                            self.spawn(&mut tasks, dep, node, prio, opts, events);
                        }
                    }
                }
            } else {
                self.fail_dependents(&p, &res, &dependents, &mut nodes, done);
                if !opts.keep_going {
                    stopped = true;
                }
            }
            done.insert(p, res);
        }
    }

    /// Mark everything that depends on a failed derivation as not built.
    fn fail_dependents(
        &self,
        failed: &StorePath,
        res: &BuildResult,
        dependents: &HashMap<StorePath, Vec<StorePath>>,
        nodes: &mut BTreeMap<StorePath, Node>,
        done: &mut HashMap<StorePath, BuildResult>,
    ) {
        let mut todo = dependents.get(failed).cloned().unwrap_or_default();
        while let Some(d) = todo.pop() {
            if nodes.remove(&d).is_none() {
                continue;
            }
            done.insert(
                d.clone(),
                BuildResult {
                    error: Some(format!(
                        "dependency {} failed: {}",
                        res.drv,
                        res.error.as_deref().unwrap_or("failed")
                    )),
                    log_tail: res.log_tail.clone(),
                    failure: res.failure,
                    ..result(&self.store.display(&d), BuildStatus::DependencyFailed)
                },
            );
            todo.extend(dependents.get(&d).cloned().unwrap_or_default());
        }
    }

    fn spawn(
        self: &Arc<Self>,
        tasks: &mut JoinSet<(StorePath, BuildResult)>,
        p: StorePath,
        node: Node,
        prio: Priority,
        opts: &BuildOptions,
        events: &Events,
    ) {
        let engine = self.clone();
        let opts = opts.clone();
        let events = events.clone();
        tasks.spawn(async move {
            let res = engine.build_one(&p, node.drv, prio, &opts, &events).await;
            (p, res)
        });
    }
}
