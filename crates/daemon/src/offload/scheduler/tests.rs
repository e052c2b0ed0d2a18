//! Unit tests of the placement rule: candidates, scores, the hold for a
//! faster machine and the remaining paths that order the queue.

use super::*;
use std::cell::Cell;

fn list(v: &[&str]) -> &'static [String] {
    Box::leak(
        v.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

fn m(name: &'static str, speed: f64, slots: u32) -> MachineState<'static> {
    MachineState {
        name,
        systems: list(&["x86_64-linux"]),
        features: &[],
        slots,
        in_use: 0,
        speed,
        overload_threshold: Some(0.8),
        normalized_load: 0.0,
        free_bytes: 10 << 30,
        backed_off_until: None,
        cores: slots,
    }
}

fn x86() -> Needs {
    Needs {
        system: "x86_64-linux".into(),
        features: BTreeSet::new(),
    }
}

#[test]
fn system_and_features_pick_candidates() {
    let mut kvm = m("kvm", 1.0, 1);
    kvm.features = list(&["kvm"]);
    let plain = m("plain", 2.0, 1);
    let mut arm = m("arm", 5.0, 1);
    arm.systems = list(&["aarch64-linux"]);
    let ms = [kvm, plain, arm];
    let now = Instant::now();
    let needs_kvm = Needs {
        features: ["kvm".to_string()].into(),
        ..x86()
    };
    assert_eq!(choose(&ms, &needs_kvm, now, |_| 0.0), Choice::Machine(0));
    assert_eq!(choose(&ms, &x86(), now, |_| 0.0), Choice::Machine(1));
    let arm_needs = Needs {
        system: "aarch64-linux".into(),
        ..Default::default()
    };
    assert_eq!(choose(&ms, &arm_needs, now, |_| 0.0), Choice::Machine(2));
    let riscv = Needs {
        system: "riscv64-linux".into(),
        ..Default::default()
    };
    assert_eq!(choose(&ms, &riscv, now, |_| 0.0), Choice::Local);
}

#[test]
fn unusable_candidates_are_waited_for_with_reasons() {
    let now = Instant::now();
    let mut full = m("full", 1.0, 1);
    full.in_use = 1;
    let mut hot = m("hot", 1.0, 1);
    hot.normalized_load = 0.95;
    let mut disk = m("disk", 1.0, 1);
    disk.free_bytes = 50 << 20;
    let mut down = m("down", 1.0, 1);
    down.backed_off_until = Some(now + std::time::Duration::from_secs(30));
    let ms = [full, hot, disk, down];
    match choose(&ms, &x86(), now, |_| 0.0) {
        Choice::Wait(w) => {
            let text: Vec<String> = w.iter().map(|(n, why)| format!("{n}: {why}")).collect();
            assert_eq!(text.len(), 4);
            assert!(text[0].contains("slots"), "{text:?}");
            assert!(text[1].contains("overload-threshold"), "{text:?}");
            assert!(text[2].contains("MiB"), "{text:?}");
            assert!(text[3].contains("backed off"), "{text:?}");
        }
        other => panic!("{other:?}"),
    }
    // #f disables the load check.
    let mut hot = m("hot", 1.0, 1);
    hot.normalized_load = 1.0;
    hot.overload_threshold = None;
    assert_eq!(choose(&[hot], &x86(), now, |_| 0.0), Choice::Machine(0));
}

#[test]
fn this_daemons_own_builds_do_not_overload_a_machine() {
    let now = Instant::now();
    // 8 cores, 8 slots, 7 of them ours: a load of 7.2 is 0.2 of other
    // work, far under the threshold.
    let mut ours = m("ours", 1.0, 8);
    ours.in_use = 7;
    ours.normalized_load = 0.9;
    assert!(unusable(&ours, now).is_none());
    assert!((ours.outside_load() - 0.2).abs() < 1e-9);
    // The same load with none of ours is other users' work.
    ours.in_use = 0;
    assert!(matches!(
        unusable(&ours, now),
        Some(PassedOver::Overloaded { .. })
    ));
}

#[test]
fn a_fast_machine_with_free_cores_beats_a_slower_idle_one() {
    let now = Instant::now();
    // Half of `fast`'s slots are busy, but its cores are not all used:
    // a new build runs there at speed 1.6 (the old rule scored it 0.8).
    let mut fast = m("fast", 1.6, 8);
    fast.in_use = 4;
    let slow = m("slow", 1.5, 8);
    assert_eq!(
        choose(&[fast.clone(), slow.clone()], &x86(), now, |_| 0.0),
        Choice::Machine(0)
    );
    // With its cores shared (4 cores, 3 builds of ours, 1 thread of
    // other work), a new build would get 1.6 × 4/5 < 1.5: the idle one.
    fast.cores = 4;
    fast.in_use = 3;
    fast.normalized_load = 1.0;
    assert!(score(&fast, 0.0) < score(&slow, 0.0));
    assert_eq!(
        choose(&[fast, slow], &x86(), now, |_| 0.0),
        Choice::Machine(1)
    );
}

#[test]
fn special_machines_take_other_work_only_as_overflow() {
    let now = Instant::now();
    let mut big = m("big", 4.0, 16);
    big.features = list(&["big-parallel"]);
    let mut plain = m("plain", 1.0, 1);
    assert_eq!(
        choose(&[big.clone(), plain.clone()], &x86(), now, |_| 0.0),
        Choice::Machine(1)
    );
    plain.in_use = 1;
    assert_eq!(
        choose(&[big.clone(), plain.clone()], &x86(), now, |_| 0.0),
        Choice::Machine(0)
    );
    let needs_big = Needs {
        features: ["big-parallel".to_string()].into(),
        ..x86()
    };
    assert_eq!(
        choose(&[plain, big], &needs_big, now, |_| 0.0),
        Choice::Machine(1)
    );
}

#[test]
fn locality_breaks_near_ties_only_and_equal_machines_share_the_work() {
    let now = Instant::now();
    let a = m("a", 1.0, 4);
    let b = m("b", 1.0, 4);
    assert_eq!(
        choose(&[a.clone(), b.clone()], &x86(), now, |i| if i == 1 {
            0.9
        } else {
            0.0
        }),
        Choice::Machine(1)
    );
    // A machine 25 % faster wins over one holding every input.
    let faster = m("faster", 1.25, 4);
    assert_eq!(
        choose(&[a.clone(), faster], &x86(), now, |i| if i == 0 {
            1.0
        } else {
            0.0
        }),
        Choice::Machine(1)
    );
    // Equal scores: the one with fewer slots in use.
    let mut a1 = a.clone();
    a1.in_use = 1;
    a1.cores = 16;
    let mut b16 = b.clone();
    b16.cores = 16;
    assert_eq!(choose(&[a1, b16], &x86(), now, |_| 0.0), Choice::Machine(1));
}

#[test]
fn the_closure_share_is_looked_up_for_few_machines() {
    let now = Instant::now();
    let ms: Vec<MachineState> = (0..1000).map(|_| m("same", 1.0, 4)).collect();
    let calls = Cell::new(0);
    let choice = choose(&ms, &x86(), now, |i| {
        calls.set(calls.get() + 1);
        if i == 3 {
            0.5
        } else {
            0.0
        }
    });
    assert_eq!(choice, Choice::Machine(3));
    assert_eq!(calls.get(), PRESENT_LOOKUPS);
    // A clearly better machine is found without looking at the rest.
    let mut ms = ms;
    ms[700].speed = 3.0;
    calls.set(0);
    let counted = |_| {
        calls.set(calls.get() + 1);
        0.0
    };
    assert_eq!(choose(&ms, &x86(), now, counted), Choice::Machine(700));
    assert_eq!(calls.get(), 1);
}

#[test]
fn remaining_paths_follow_the_longest_chain() {
    // 0 -> 1 -> 3, 0 -> 2 -> 3: the chain through 2 is longer.
    let d = [1.0, 2.0, 5.0, 1.0];
    let deps = vec![vec![1, 2], vec![3], vec![3], vec![]];
    assert_eq!(remaining_paths(&d, &deps), vec![7.0, 3.0, 6.0, 1.0]);
    // A long chain does not overflow the stack.
    let n = 200_000;
    let deps: Vec<Vec<usize>> = (0..n)
        .map(|i| if i + 1 < n { vec![i + 1] } else { vec![] })
        .collect();
    let r = remaining_paths(&vec![1.0; n], &deps);
    assert_eq!(r[0], n as f64);
}

#[test]
fn only_a_build_that_would_end_last_waits_for_a_faster_machine() {
    // An hour at speed 1 on a speed-0.5 machine, when a speed-2 one
    // exists: 7200 - 1800 = 5400 s lost.
    let lost = time_lost(3600.0, 0.5, 2.0);
    assert_eq!(lost, 5400.0);
    assert_eq!(time_lost(3600.0, 2.0, 2.0), 0.0);
    // On the critical path (its remaining path is the longest): held.
    assert!(hold_for_faster(4000.0, lost, 4000.0, 0.0));
    assert!(hold_for_faster(4000.0, lost, 4000.0, 60.0));
    // Far off it, and a short build: built now, even slowly (a minute
    // at speed 1 loses 90 s on slow, against 9,500 s of slack).
    assert!(!hold_for_faster(
        1000.0,
        time_lost(60.0, 0.5, 2.0),
        10_000.0,
        0.0
    ));
    // A long build off the critical path is still held: its slack
    // counts for an eighth (HOLD_SAFETY), as estimates are rough.
    assert!(hold_for_faster(1000.0, lost, 10_000.0, 0.0));
    // Held as long as the machine offered would lose: it takes it.
    assert!(!hold_for_faster(4000.0, lost, 4000.0, lost));
    // Held 45 minutes: a speed-3 machine (lost 300 s) is taken, a
    // speed-0.5 one (lost 5400 s) is not.
    assert!(!hold_for_faster(
        4000.0,
        time_lost(3600.0, 3.0, 2.0),
        4000.0,
        2700.0
    ));
    assert!(hold_for_faster(4000.0, lost, 4000.0, 2700.0));
    // Nothing lost, nothing held.
    assert!(!hold_for_faster(4000.0, 0.0, 4000.0, 0.0));
    // The slowest machine it would take agrees with hold_for_faster.
    let (estimate, fastest, remaining, longest) = (3600.0, 2.0, 3000.0, 4000.0);
    let room = HOLD_SLACK * longest - remaining;
    for held_for in [0.0, 600.0, 2700.0, 6000.0] {
        let s = slowest_acceptable(estimate, fastest, room, held_for);
        for speed in [0.5, 0.75, 1.0, 1.5, 2.0] {
            let lost = time_lost(estimate, speed, fastest);
            let takes = !hold_for_faster(remaining, lost, longest, held_for);
            assert_eq!(takes, speed >= s - 1e-9, "{held_for} {speed} {s}");
        }
    }
}
