//! `ferry-schedsim`: the scheduler benchmark. Simulates Ferry's,
//! Guix's and Nix's placement rules on the same farm and work, prints the
//! makespans against the lower bound, then times the daemon's real
//! placement path. See the library documentation for the model.

use std::time::Instant;

use clap::Parser;
use ferry_schedsim::farm::Farm;
use ferry_schedsim::latency::{self, LatencyConfig};
use ferry_schedsim::report::{self, Report};
use ferry_schedsim::sim::{Discipline, SimConfig, SimResult};
use ferry_schedsim::workload::{Workload, SCENARIOS};
use ferry_schedsim::{bound, trace};

#[global_allocator]
static ALLOC: ferry_schedsim::alloc::Counting = ferry_schedsim::alloc::Counting;

#[derive(Parser)]
#[command(
    name = "ferry-schedsim",
    about = "Scheduler benchmark: simulated farm (no SSH), Ferry's placement rule against Guix's and Nix's, and the decision latency of the daemon's placement path"
)]
struct Args {
    /// Build machines in the simulated farm.
    #[arg(long, default_value_t = 1000)]
    machines: usize,
    /// Derivations in the DAG.
    #[arg(long, default_value_t = 100_000)]
    derivations: usize,
    /// Seeds (farm, work, background loads, Guix's shuffles).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Placement rules: guix, nix, ferry.
    #[arg(long, value_delimiter = ',', default_value = "guix,nix,ferry")]
    rules: Vec<String>,
    /// Queue disciplines: fifo (Guix's and Nix's daemons: first ready,
    /// first served), height (longest chain of derivations first),
    /// critical-path (longest estimated remaining time first),
    /// critical-path+hold (Ferry's engine: that, and a derivation held
    /// back for a faster machine when the one chosen would lengthen the
    /// estimated critical path).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fifo,critical-path,critical-path+hold"
    )]
    queues: Vec<String>,
    /// Scenarios: rebuild, heavy.
    #[arg(long, value_delimiter = ',', default_value = "rebuild,heavy")]
    scenarios: Vec<String>,
    /// Error of the build-time estimates of the critical-path queue (sigma
    /// of a log-normal factor; 0 is exact).
    #[arg(long, default_value_t = 0.5)]
    estimate_noise: f64,
    /// Do not record the output of a build as present on its machine (the
    /// engine records it, with the input closure it sent; earlier engines
    /// recorded only the inputs).
    #[arg(long)]
    inputs_only: bool,
    /// `Farm::place` calls to time.
    #[arg(long, default_value_t = 100_000)]
    decisions: usize,
    /// Store paths in each input closure.
    #[arg(long, default_value_t = 150)]
    closure: usize,
    /// Waiting derivations whose memory is measured.
    #[arg(long, default_value_t = 100_000)]
    queue_memory: usize,
    /// Skip the latency measurement.
    #[arg(long)]
    no_latency: bool,
    /// Skip the simulation.
    #[arg(long)]
    no_sim: bool,
    /// Print JSON instead of markdown.
    #[arg(long)]
    json: bool,
    /// Print the critical chain of each run (where its time went).
    #[arg(long)]
    trace: bool,
    /// Write machines.scm of the first seed's farm to this file and exit.
    #[arg(long, value_name = "FILE")]
    write_machines: Option<std::path::PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Some(path) = &args.write_machines {
        let farm = Farm::generate(args.machines, args.seeds[0]);
        std::fs::write(path, latency::machines_scm(&farm)).expect("write machines.scm");
        return;
    }
    let disciplines: Vec<Discipline> = args
        .queues
        .iter()
        .map(|q| match q.as_str() {
            "fifo" => Discipline::Fifo,
            "height" => Discipline::Height,
            "critical-path" => Discipline::CriticalPath,
            "critical-path+hold" => Discipline::CriticalPathHold,
            other => panic!("unknown queue discipline {other:?}"),
        })
        .collect();
    let base = SimConfig {
        record_outputs: !args.inputs_only,
        estimate_noise: args.estimate_noise,
        ..Default::default()
    };
    let started = Instant::now();
    let mut cases = Vec::new();
    if !args.no_sim {
        for name in &args.scenarios {
            let scenario = *SCENARIOS
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("unknown scenario {name:?}"));
            for &seed in &args.seeds {
                let case = report::run_case(
                    args.machines,
                    args.derivations,
                    scenario,
                    seed,
                    &args.rules,
                    &disciplines,
                    &base,
                    |r: &SimResult| {
                        eprintln!(
                            "{} seed {seed}: {} {}: makespan {:.0} s ({:.1} s)",
                            scenario.name, r.discipline, r.rule, r.makespan, r.wall_secs
                        )
                    },
                );
                if args.trace {
                    let farm = Farm::generate(args.machines, seed);
                    let work = Workload::generate_scaled(args.derivations, seed, scenario.bulk);
                    let fastest = bound::fastest_by_class(&farm);
                    for r in &case.runs {
                        println!("{} seed {seed} {} {}:", scenario.name, r.discipline, r.rule);
                        print!("{}", trace::critical_chain(&farm, &work, r, &fastest));
                    }
                }
                cases.push(case);
            }
        }
    }
    let sim_wall_secs = started.elapsed().as_secs_f64();
    let latency = (!args.no_latency).then(|| {
        eprintln!("timing the farm's queue ({} requests)...", args.decisions);
        latency::measure(&LatencyConfig {
            machines: args.machines,
            decisions: args.decisions,
            closure: args.closure,
            common: 60.min(args.closure),
            universe: args.derivations.max(1000),
            queue: args.queue_memory,
            seed: args.seeds[0],
        })
    });
    let report = Report {
        cases,
        latency,
        sim_wall_secs,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
    } else {
        print!("{}", report::markdown(&report, &args.rules, &disciplines));
    }
}
