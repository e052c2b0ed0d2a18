//! Running the comparison and printing it: markdown tables for people,
//! one JSON document for scripts.

use serde::Serialize;

use crate::bound::{lower_bound, LowerBound};
use crate::farm::Farm;
use crate::latency::{LatencyResult, Stats};
use crate::rules;
use crate::sim::{simulate, Discipline, SimConfig, SimResult};
use crate::workload::{Scenario, Workload};

/// One (scenario, seed): the farm, the work, the bound and every run.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub scenario: String,
    pub seed: u64,
    pub machines: usize,
    pub slots: u64,
    pub derivations: usize,
    pub edges: usize,
    /// Heap of the generated DAG (derivations, edges both ways), bytes,
    /// when the counting allocator is installed.
    pub work_heap_bytes: Option<usize>,
    pub lower_bound: LowerBound,
    pub runs: Vec<SimResult>,
}

impl Case {
    pub fn run(&self, rule: &str, discipline: &str) -> Option<&SimResult> {
        self.runs
            .iter()
            .find(|r| r.rule == rule && r.discipline == discipline)
    }
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cases: Vec<Case>,
    pub latency: Option<LatencyResult>,
    pub sim_wall_secs: f64,
}

/// Simulate every rule under every discipline on one scenario and seed.
#[allow(clippy::too_many_arguments)]
pub fn run_case(
    machines: usize,
    derivations: usize,
    scenario: Scenario,
    seed: u64,
    rule_names: &[String],
    disciplines: &[Discipline],
    base: &SimConfig,
    mut progress: impl FnMut(&SimResult),
) -> Case {
    let farm = Farm::generate(machines, seed);
    let before = crate::alloc::live_bytes();
    let work = Workload::generate_scaled(derivations, seed, scenario.bulk);
    let work_heap_bytes = before
        .zip(crate::alloc::live_bytes())
        .map(|(a, b)| b.saturating_sub(a));
    let lb = lower_bound(&farm, &work);
    let mut runs = Vec::new();
    for &discipline in disciplines {
        for name in rule_names {
            let mut rule =
                rules::by_name(name, &farm, seed).unwrap_or_else(|| panic!("no rule {name:?}"));
            let cfg = SimConfig {
                discipline,
                seed,
                ..base.clone()
            };
            let res = simulate(&farm, &work, rule.as_mut(), &cfg);
            progress(&res);
            runs.push(res);
        }
    }
    Case {
        scenario: scenario.name.into(),
        seed,
        machines,
        slots: farm.machines.iter().map(|m| m.slots as u64).sum(),
        derivations,
        edges: work.edges(),
        work_heap_bytes,
        lower_bound: lb,
        runs,
    }
}

/// Each tool as it runs: Ferry's rule with its engine's queue
/// (`critical-path+hold`), Guix's and Nix's with theirs (`fifo`).
fn headline(r: &Report) -> String {
    const TOOLS: [(&str, &str); 3] = [
        ("ferry", "critical-path+hold"),
        ("guix", "fifo"),
        ("nix", "fifo"),
    ];
    let mut out = String::from(
        "## Each tool as it runs\n\nFerry: its rule and its queue (`critical-path+hold`); \
         Guix and Nix: their rules, first ready first served (`fifo`). Ratio = makespan / \
         lower bound.\n\n| scenario | seeds | ferry mean | ferry worst | guix mean | nix mean | \
         ferry within 10 % | ferry better than both |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut scenarios: Vec<&str> = r.cases.iter().map(|c| c.scenario.as_str()).collect();
    scenarios.dedup();
    let mut any = false;
    for s in scenarios {
        let cases: Vec<&Case> = r
            .cases
            .iter()
            .filter(|c| c.scenario == s)
            .filter(|c| TOOLS.iter().all(|(n, q)| c.run(n, q).is_some()))
            .collect();
        if cases.is_empty() {
            continue;
        }
        any = true;
        let ratio = |c: &Case, (n, q): (&str, &str)| {
            c.run(n, q).expect("filtered").makespan / c.lower_bound.bound
        };
        let mean =
            |t: (&str, &str)| cases.iter().map(|c| ratio(c, t)).sum::<f64>() / cases.len() as f64;
        let worst = cases.iter().map(|c| ratio(c, TOOLS[0])).fold(0.0, f64::max);
        let within = cases.iter().filter(|c| ratio(c, TOOLS[0]) <= 1.1).count();
        let better = cases
            .iter()
            .filter(|c| ratio(c, TOOLS[0]) < ratio(c, TOOLS[1]).min(ratio(c, TOOLS[2])))
            .count();
        out.push_str(&format!(
            "| {s} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {within}/{} | {better}/{} |\n",
            cases.len(),
            mean(TOOLS[0]),
            worst,
            mean(TOOLS[1]),
            mean(TOOLS[2]),
            cases.len(),
            cases.len(),
        ));
    }
    out.push('\n');
    if any {
        out
    } else {
        String::new()
    }
}

fn secs(s: f64) -> String {
    format!("{:.0}", s)
}

/// The markdown report.
pub fn markdown(r: &Report, rule_names: &[String], disciplines: &[Discipline]) -> String {
    let mut out = String::new();
    if !r.cases.is_empty() {
        out.push_str(
            "## Farm and work\n\n| scenario | seed | machines | slots | derivations | edges | \
             work (core-hours at speed 1) | capacity at start (speed-units) | critical path (s) | \
             work bound (s) | DAG heap (MiB) |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for c in &r.cases {
            let lb = &c.lower_bound;
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} |\n",
                c.scenario,
                c.seed,
                c.machines,
                c.slots,
                c.derivations,
                c.edges,
                lb.total_work / 3600.0,
                lb.capacity_at_start,
                secs(lb.critical_path),
                secs(lb.work_bound),
                c.work_heap_bytes.map_or("-".into(), |b| format!(
                    "{:.1}",
                    b as f64 / (1 << 20) as f64
                )),
            ));
        }
        out.push_str(
            "\nQueues: `critical-path+hold` is Ferry's engine (the farm's queue, ordered by \
             the remaining path estimated from build-time history, holding a long build on \
             the critical path for a faster machine); `fifo` is Guix's and Nix's daemons \
             (first ready, first served) and Ferry's engine before it had the queue; \
             `height` and `critical-path` are variants. The tables after the first run \
             every rule under every queue.\n\n",
        );
        out.push_str(&headline(r));
        out.push_str("## Makespan against the lower bound\n\n");
        out.push_str(
            "Lower bound = max(critical path at the fastest eligible speed, work bound); \
             ratio = makespan / lower bound (1.00 is unbeatable).\n\n",
        );
        out.push_str("| scenario | seed | critical path (s) | work bound (s) | queue |");
        for n in rule_names {
            out.push_str(&format!(" {n} (s) | {n} ratio |"));
        }
        out.push_str(" ferry within 10 % | ferry best |\n|---|---|---|---|---|");
        for _ in rule_names {
            out.push_str("---|---|");
        }
        out.push_str("---|---|\n");
        for d in disciplines {
            for c in &r.cases {
                let lb = &c.lower_bound;
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} |",
                    c.scenario,
                    c.seed,
                    secs(lb.critical_path),
                    secs(lb.work_bound),
                    d.name()
                ));
                for n in rule_names {
                    match c.run(n, d.name()) {
                        Some(x) => out.push_str(&format!(
                            " {} | {:.3} |",
                            secs(x.makespan),
                            x.makespan / lb.bound
                        )),
                        None => out.push_str(" | |"),
                    }
                }
                let ferry = c.run("ferry", d.name());
                let within = ferry.map(|f| f.makespan <= 1.1 * lb.bound);
                let best = ferry.map(|f| {
                    c.runs
                        .iter()
                        .filter(|o| o.discipline == d.name() && o.rule != "ferry")
                        .all(|o| f.makespan < o.makespan)
                });
                let yn = |b: Option<bool>| match b {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                };
                out.push_str(&format!(" {} | {} |\n", yn(within), yn(best)));
            }
        }
        out.push_str("\n### Mean ratio over seeds\n\n| scenario | queue |");
        for n in rule_names {
            out.push_str(&format!(" {n} |"));
        }
        out.push_str("\n|---|---|");
        for _ in rule_names {
            out.push_str("---|");
        }
        out.push('\n');
        let mut scenarios: Vec<&str> = r.cases.iter().map(|c| c.scenario.as_str()).collect();
        scenarios.dedup();
        for s in &scenarios {
            for d in disciplines {
                out.push_str(&format!("| {s} | {} |", d.name()));
                for n in rule_names {
                    let ratios: Vec<f64> = r
                        .cases
                        .iter()
                        .filter(|c| c.scenario == *s)
                        .filter_map(|c| {
                            c.run(n, d.name()).map(|x| x.makespan / c.lower_bound.bound)
                        })
                        .collect();
                    let mean = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
                    out.push_str(&format!(" {mean:.3} |"));
                }
                out.push('\n');
            }
        }
        out.push_str(
            "\n### Details\n\n| scenario | seed | queue | rule | makespan (s) | uploaded (GB) | \
             mean wait for a machine (s) | work-weighted speed | longest 1 %: speed | longest 1 %: time / best | waits | sim wall (s) |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for c in &r.cases {
            for x in &c.runs {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {:.1} |\n",
                    c.scenario,
                    c.seed,
                    x.discipline,
                    x.rule,
                    secs(x.makespan),
                    x.uploaded_bytes / 1e9,
                    x.mean_queue_wait,
                    x.mean_speed,
                    x.longest_speed,
                    x.longest_slowdown,
                    x.waits,
                    x.wall_secs
                ));
            }
        }
        out.push_str(&format!(
            "\nSimulation wall time: {:.1} s.\n",
            r.sim_wall_secs
        ));
    }
    if let Some(l) = &r.latency {
        out.push_str(&format!(
            "\n## Decision latency ({} machines, {} slots, input closures of {} paths)\n\n\
             machines.scm evaluated by `Farm::new` in {:.2} s. The farm's queue held up to {} \
             waiting requests.\n\n\
             | path | decisions | p50 (µs) | p99 (µs) | max (µs) | mean (µs) |\n|---|---|---|---|---|---|\n",
            l.machines, l.total_slots, l.closure_paths, l.load_secs, l.queued_max
        ));
        let row = |name: &str, s: &Stats| {
            format!(
                "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                s.count, s.p50_us, s.p99_us, s.max_us, s.mean_us
            )
        };
        out.push_str(&row("every decision", &l.place));
        out.push_str(&row("`Farm::request`, granted at once", &l.place_remote));
        out.push_str(&row("`Farm::request`, queued (farm full)", &l.place_wait));
        out.push_str(&row("slot freed, serving the queue", &l.release));
        out.push_str(&row("`scheduler::choose` alone", &l.choose));
        let mib = |b: Option<usize>| match b {
            Some(b) => format!("{:.0} MiB", b as f64 / (1 << 20) as f64),
            None => "not counted".into(),
        };
        out.push_str(&format!(
            "\n| memory | |\n|---|---|\n\
             | peak RSS of the process (VmHWM) | {:.0} MiB |\n\
             | heap of the `Farm` after the loop (records, present sets: {} paths recorded) | {} |\n\
             | heap of {} waiting derivations as the engine holds them (needs + input closure) | {} ({} each) |\n",
            l.peak_rss_kib as f64 / 1024.0,
            l.present_recorded,
            mib(l.farm_heap_bytes),
            l.queue_derivations,
            mib(l.queue_heap_bytes),
            l.queue_heap_bytes
                .map(|b| format!("{:.1} KiB", b as f64 / 1024.0 / l.queue_derivations.max(1) as f64))
                .unwrap_or_default(),
        ));
    }
    out
}
