//! The simulator against the properties the benchmark relies on: the lower
//! bound is a lower bound, a chain on an idle fast machine takes exactly its
//! critical path, every derivation is built exactly once, and every rule
//! keeps to slots, systems and features.

use ferry_schedsim::bound::lower_bound;
use ferry_schedsim::farm::{Farm, Machine, Profile, CLASSES};
use ferry_schedsim::rng::Rng;
use ferry_schedsim::rules;
use ferry_schedsim::sim::{simulate, Discipline, SimConfig, SimResult};
use ferry_schedsim::workload::{Drv, Kind, Workload};

const RULES: [&str; 3] = ["guix", "nix", "ferry"];
const DISCIPLINES: [Discipline; 4] = [
    Discipline::Fifo,
    Discipline::Height,
    Discipline::CriticalPath,
    Discipline::CriticalPathHold,
];

/// A generated farm plus one machine that can build every class, so any
/// work has a candidate.
fn small_farm(seed: u64, n: usize) -> Farm {
    let mut farm = Farm::generate(n, seed);
    farm.machines.push(Machine::new(
        "universal".into(),
        0b11,
        0b11,
        1.0,
        2,
        4,
        125e6,
        Profile::Shared,
    ));
    farm
}

/// A random DAG: each derivation needs up to 3 earlier ones; mixed
/// classes, heavy-tailed work, outputs of 0-500 MB.
fn random_work(seed: u64, n: usize) -> Workload {
    let mut rng = Rng::new(seed);
    let mut drvs = Vec::new();
    let mut deps = Vec::new();
    for i in 0..n {
        let class = rng.below(CLASSES);
        drvs.push(Drv {
            system: (class >> 2) as u8,
            features: (class & 3) as u8,
            work: rng.log_normal(60.0, 1.5),
            out_bytes: rng.uniform(0.0, 500e6),
            kind: Kind::Package,
        });
        let mut ds = Vec::new();
        if i > 0 {
            for _ in 0..rng.int(0, 3) {
                ds.push(rng.below(i) as u32);
            }
        }
        deps.push(ds);
    }
    Workload::from_parts(drvs, deps)
}

fn run(farm: &Farm, work: &Workload, rule: &str, d: Discipline, seed: u64) -> SimResult {
    let mut r = rules::by_name(rule, farm, seed).expect("known rule");
    let cfg = SimConfig {
        discipline: d,
        seed,
        ..Default::default()
    };
    simulate(farm, work, r.as_mut(), &cfg)
}

/// Every derivation finished once, after its inputs, on a machine that can
/// build it, with never more builds on a machine than its slots.
fn check_run(farm: &Farm, work: &Workload, res: &SimResult) {
    let n = work.len();
    assert_eq!(res.placements as usize, n, "{}", res.rule);
    let mut intervals: Vec<Vec<(f64, f64)>> = vec![Vec::new(); farm.machines.len()];
    for d in 0..n {
        assert!(res.finished[d].is_finite(), "{} never built {d}", res.rule);
        assert!(res.started[d] <= res.running[d]);
        assert!(res.running[d] <= res.built[d]);
        assert!(res.built[d] <= res.finished[d]);
        for &p in work.deps(d) {
            assert!(
                res.finished[p as usize] <= res.started[d],
                "{d} started before {p}"
            );
        }
        let m = res.machine[d] as usize;
        assert!(
            farm.machines[m].can_build(work.drvs[d].class()),
            "{} put {d} on a machine that cannot build it",
            res.rule
        );
        intervals[m].push((res.started[d], res.finished[d]));
    }
    for (m, iv) in intervals.iter().enumerate() {
        let mut events: Vec<(f64, i32)> = iv.iter().flat_map(|&(a, b)| [(a, 1), (b, -1)]).collect();
        // Ends before starts at the same instant: a freed slot is reused.
        events.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        let mut held = 0;
        for (_, e) in events {
            held += e;
            assert!(
                held <= farm.machines[m].slots as i32,
                "{} held {held} slots of {} on machine {m}",
                res.rule,
                farm.machines[m].slots
            );
        }
    }
}

#[test]
fn lower_bound_holds_and_every_run_is_valid_on_small_random_cases() {
    for seed in 0..12u64 {
        let farm = small_farm(seed, 3 + seed as usize % 6);
        let work = if seed % 2 == 0 {
            random_work(seed, 150)
        } else {
            Workload::generate(200 + 40 * seed as usize, seed)
        };
        let lb = lower_bound(&farm, &work);
        assert!(lb.bound > 0.0);
        for rule in RULES {
            for d in DISCIPLINES {
                let res = run(&farm, &work, rule, d, seed);
                check_run(&farm, &work, &res);
                assert!(
                    res.makespan >= lb.bound * (1.0 - 1e-9),
                    "seed {seed} {rule} {d:?}: makespan {} under the bound {lb:?}",
                    res.makespan
                );
            }
        }
    }
}

#[test]
fn the_work_bound_holds_when_the_farm_is_saturated() {
    // Many independent derivations on two machines: the work bound, not
    // the critical path, is the bound.
    let farm = Farm {
        machines: vec![
            Machine::new("a".into(), 1, 0, 2.0, 4, 2, 1e9, Profile::Hot),
            Machine::new("b".into(), 1, 0, 1.0, 2, 8, 1e9, Profile::Shared),
        ],
        seed: 3,
    };
    let mut rng = Rng::new(9);
    let drvs: Vec<Drv> = (0..400)
        .map(|_| Drv {
            system: 0,
            features: 0,
            work: rng.log_normal(30.0, 1.0),
            out_bytes: 0.0,
            kind: Kind::Package,
        })
        .collect();
    let work = Workload::from_parts(drvs, vec![Vec::new(); 400]);
    let lb = lower_bound(&farm, &work);
    assert!(lb.work_bound > lb.critical_path);
    for rule in RULES {
        let res = run(&farm, &work, rule, Discipline::Fifo, 3);
        check_run(&farm, &work, &res);
        assert!(
            res.makespan >= lb.work_bound,
            "{rule}: {} < {lb:?}",
            res.makespan
        );
    }
}

#[test]
fn a_chain_takes_its_critical_path_on_an_idle_fast_machine() {
    let farm = Farm {
        machines: vec![
            Machine::new("slow".into(), 1, 0, 1.0, 2, 4, 1e8, Profile::Idle),
            Machine::new("fast".into(), 1, 0, 4.0, 2, 4, 1e8, Profile::Idle),
            Machine::new("mid".into(), 1, 0, 2.0, 2, 4, 1e8, Profile::Idle),
        ],
        seed: 1,
    };
    let works = [100.0, 40.0, 3000.0, 8.0, 500.0];
    let drvs: Vec<Drv> = works
        .iter()
        .map(|&w| Drv {
            system: 0,
            features: 0,
            work: w,
            out_bytes: 0.0,
            kind: Kind::Chain,
        })
        .collect();
    let deps: Vec<Vec<u32>> = (0..works.len())
        .map(|i| if i == 0 { vec![] } else { vec![i as u32 - 1] })
        .collect();
    let work = Workload::from_parts(drvs, deps);
    let cp: f64 = works.iter().sum::<f64>() / 4.0;
    let lb = lower_bound(&farm, &work);
    assert!((lb.critical_path - cp).abs() < 1e-9);
    for rule in RULES {
        for d in DISCIPLINES {
            let res = run(&farm, &work, rule, d, 1);
            check_run(&farm, &work, &res);
            assert!(
                (res.makespan - cp).abs() < 1e-6,
                "{rule} {d:?}: {} != {cp}",
                res.makespan
            );
            assert!(
                res.machine.iter().all(|&m| m == 1),
                "{rule}: not all on the fast machine"
            );
        }
    }
}

#[test]
fn transfers_are_paid_once_per_machine() {
    // Two derivations need the same 1 GB input on a 100 MB/s machine: the
    // first pays 10 s for it, the second (later, same machine) nothing.
    let farm = Farm {
        machines: vec![Machine::new(
            "m".into(),
            1,
            0,
            1.0,
            1,
            1,
            1e8,
            Profile::Idle,
        )],
        seed: 1,
    };
    let drv = |work, out| Drv {
        system: 0,
        features: 0,
        work,
        out_bytes: out,
        kind: Kind::Package,
    };
    let work = Workload::from_parts(
        vec![drv(10.0, 1e9), drv(5.0, 0.0), drv(5.0, 0.0)],
        vec![vec![], vec![0], vec![0]],
    );
    for rule in RULES {
        let res = run(&farm, &work, rule, Discipline::Fifo, 1);
        // 10 s build + 10 s download of the 1 GB output, then two 5 s
        // builds one after the other (one slot); the input was built there.
        assert!(
            (res.makespan - 30.0).abs() < 1e-6,
            "{rule}: {}",
            res.makespan
        );
        assert_eq!(res.uploaded_bytes, 0.0);
    }
    let farm2 = Farm {
        machines: vec![
            Machine::new("a".into(), 1, 0, 1.0, 1, 1, 1e8, Profile::Idle),
            Machine::new("b".into(), 1, 0, 1.0, 1, 1, 1e8, Profile::Idle),
        ],
        seed: 1,
    };
    let res = run(&farm2, &work, "nix", Discipline::Fifo, 1);
    // Nix spreads the two builds: the second machine fetches the input.
    assert_eq!(res.uploaded_bytes, 1e9);
    assert!((res.makespan - 35.0).abs() < 1e-6, "{}", res.makespan);
}
