//! Unit tests of the farm on real machines.scm files (never connected:
//! placement, the queue's order, holds, back-off and what is reported).

use super::super::error::OffloadError;
use super::health::BACKOFF_FIRST;
use super::*;

fn lost() -> OffloadError {
    OffloadError::Connect {
        machine: "a".into(),
        why: "connection lost".into(),
    }
}

#[test]
fn the_failures_of_one_incident_count_once() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("machines.scm");
    std::fs::write(
        &file,
        r#"(list (build-machine (name "a") (systems (list "x86_64-linux"))
             (user "u") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")))"#,
    )
    .unwrap();
    let farm = Farm::new(file);
    let backed_off = |farm: &Farm| {
        let st = farm.status();
        (st[0].failures, st[0].backed_off_for.unwrap_or(0.0))
    };
    // Thirty builds using the machine fail at once: one incident.
    for _ in 0..30 {
        farm.failed("a", &lost());
    }
    let (failures, secs) = backed_off(&farm);
    assert_eq!(failures, 1);
    assert!(secs <= BACKOFF_FIRST.as_secs_f64(), "{secs}");
    // Once the back-off is over, a new failure doubles it.
    farm.lock().live.get_mut("a").unwrap().backed_off_until = Some(Instant::now());
    farm.failed("a", &lost());
    let (failures, secs) = backed_off(&farm);
    assert_eq!(failures, 2);
    assert!(secs > BACKOFF_FIRST.as_secs_f64(), "{secs}");
}

/// `offload status` states a machine by its last real attempt: a
/// failure after a measurement is not hidden by that measurement.
#[test]
fn the_last_attempt_and_its_kind_are_reported() {
    let (_tmp, farm) = farm_of(&[("a", "x86_64-linux", 1.0, 1)]);
    assert_eq!(farm.status()[0].attempted_secs_ago, None);
    farm.succeeded("a");
    let st = &farm.status()[0];
    assert!(st.attempted_secs_ago.is_some_and(|s| s < 1.0));
    assert_eq!(st.attempt_error, None);
    farm.failed("a", &lost());
    assert_eq!(farm.status()[0].attempt_error.as_deref(), Some("connect"));
    farm.succeeded("a");
    assert_eq!(farm.status()[0].attempt_error, None);
    // Not the machine's fault: not an attempt on it.
    farm.failed(
        "a",
        &OffloadError::LocalStore {
            why: "disk full here".into(),
        },
    );
    assert_eq!(farm.status()[0].attempt_error, None);
}

#[test]
fn a_refused_key_keeps_the_machine_out_until_a_watched_file_changes() {
    let (tmp, mut farm) = farm_of(&[("a", "x86_64-linux", 1.0, 1)]);
    let acl = tmp.path().join("acl");
    std::fs::write(&acl, "(acl)").unwrap();
    farm.watch(acl.clone());
    let refused = OffloadError::OurKeyRefused {
        machine: "a".into(),
        why: "a refuses items signed by this machine's key".into(),
    };
    farm.failed("a", &refused);
    let st = &farm.status()[0];
    assert!(st.until_changed && st.backed_off_for.is_none(), "{st:?}");
    assert!(st.last_error.as_deref().unwrap().contains("refuses"));
    // Not a timed back-off: still out long after, and no probe.
    assert!(farm.stale().is_empty());
    assert!(matches!(
        farm.request(request("x86_64-linux", 1.0, None)).poll(),
        Placement::Wait { .. }
    ));
    farm.recheck_changed();
    assert!(farm.status()[0].until_changed);
    // The ACL changes: tried again.
    std::fs::write(&acl, "(acl (entry))").unwrap();
    farm.recheck_changed();
    assert!(!farm.status()[0].until_changed);
    assert_eq!(
        granted(farm.request(request("x86_64-linux", 1.0, None)).poll()).as_deref(),
        Some("a")
    );
}

#[test]
fn a_machine_in_its_first_probe_gets_no_build_and_others_are_used() {
    let (_tmp, farm) = farm_of(&[
        ("fast", "x86_64-linux", 4.0, 1),
        ("slow", "x86_64-linux", 1.0, 1),
    ]);
    assert!(farm.start_probe("fast") && !farm.start_probe("fast"));
    let needs = request("x86_64-linux", 1.0, None).needs;
    let grace = Duration::from_secs(2);
    assert!(farm.first_contact_until(&needs, grace).is_some());
    let Placement::Remote(slow) = farm.request(request("x86_64-linux", 1.0, None)).poll() else {
        panic!("slow is free")
    };
    assert_eq!(slow.machine.name, "slow");
    // Only "fast" left, being measured: the request waits for it.
    let mut t = farm.request(request("x86_64-linux", 1.0, None));
    match t.poll() {
        Placement::Wait { measuring, .. } => assert!(measuring, "{:?}", t.reasons()),
        _ => panic!("fast is being measured"),
    }
    assert!(
        t.reasons()[0].contains("being measured"),
        "{:?}",
        t.reasons()
    );
    farm.probe_over("fast");
    assert!(farm.first_contact_until(&needs, grace).is_none());
    assert_eq!(granted(t.poll()).as_deref(), Some("fast"));
}

#[test]
fn a_machine_with_an_error_is_never_given_a_build_and_its_reason_is_said() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("machines.scm");
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    std::fs::write(
        &file,
        format!(
            "(list (build-machine (name \"bad\") (systems (list \"x86_64-linux\")) (user \"u\") \
             (speed 9.0) (host-key \"some-key\"))\n\
             (build-machine (name \"good\") (systems (list \"x86_64-linux\")) (user \"u\") \
             (host-key {key:?})))"
        ),
    )
    .unwrap();
    let farm = Farm::new(file);
    assert_eq!(farm.machines().len(), 2);
    // Never probed: only the good one is measured.
    let stale: Vec<String> = farm.stale().into_iter().map(|m| m.name).collect();
    assert_eq!(stale, ["good"]);
    // The faster machine is unusable: the build goes to the good one.
    let mut first = farm.request(request("x86_64-linux", 1.0, None));
    let slot = first.poll();
    assert!(
        matches!(&slot, Placement::Remote(s) if s.machine.name == "good"),
        "the good machine gets the build"
    );
    // The good one is full: the next waits, and says why bad is not used.
    let mut second = farm.request(request("x86_64-linux", 1.0, None));
    assert!(matches!(second.poll(), Placement::Wait { .. }));
    let reasons = second.reasons().join("\n");
    assert!(
        reasons.contains("bad: not used: ") && reasons.contains("host-key \"some-key\""),
        "{reasons}"
    );
    let why = farm.why_not_candidates(&request("x86_64-linux", 1.0, None).needs);
    assert!(
        why.contains("bad: not used: ") && why.contains(":1:"),
        "{why}"
    );
    // And a build that passes it over tells its client why.
    let skipped = farm.skipped(&request("x86_64-linux", 1.0, None).needs);
    assert!(
        skipped
            .iter()
            .any(|(n, w)| n == "bad" && w.contains("not used: ")),
        "{skipped:?}"
    );
    drop(slot);
}

#[test]
fn a_broken_file_is_an_error_kept_until_it_loads() {
    let (tmp, farm) = farm_of(&[("a", "x86_64-linux", 1.0, 1)]);
    let file = tmp.path().join("machines.scm");
    let good = std::fs::read_to_string(&file).unwrap();
    assert!(farm.load_error().is_none());
    let needs = request("x86_64-linux", 1.0, None).needs;
    // Broken after a good load: the machine is kept, the error told.
    // (Each write a few ticks after the last: an mtime is coarse.)
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&file, good.replace("(parallel-builds", "(paralel-builds")).unwrap();
    let (e, kept) = farm.load_error().expect("the file is broken");
    assert_eq!(kept, 1);
    assert!(
        e.contains("machines.scm:2:") && e.contains("paralel-builds"),
        "{e}"
    );
    // A fresh farm on the broken file has none, and says why.
    let fresh = Farm::new(file.clone());
    assert_eq!(fresh.load_error().map(|(_, n)| n), Some(0));
    let why = fresh.why_not_candidates(&needs);
    assert!(why.contains("there are no build machines: "), "{why}");
    assert!(matches!(
        fresh.request(request("x86_64-linux", 1.0, None)).poll(),
        Placement::Local
    ));
    // Fixed: the error is gone.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&file, &good).unwrap();
    assert!(fresh.load_error().is_none() && farm.load_error().is_none());
    assert_eq!(fresh.machines().len(), 1);
}

#[test]
fn skipped_says_why_a_candidate_is_out_but_not_when_only_busy() {
    let (_tmp, farm) = farm_of(&[
        ("a", "x86_64-linux", 1.0, 1),
        ("b", "x86_64-linux", 1.0, 1),
        ("arm", "aarch64-linux", 1.0, 1),
    ]);
    let needs = request("x86_64-linux", 1.0, None).needs;
    assert!(farm.skipped(&needs).is_empty());
    farm.failed(
        "a",
        &OffloadError::HostKey {
            machine: "a".into(),
            why: "the host key of a is X but machines.scm says Y".into(),
        },
    );
    farm.failed("arm", &lost());
    let Placement::Remote(_busy) = farm.request(request("x86_64-linux", 1.0, None)).poll() else {
        panic!("b is free")
    };
    let skipped = farm.skipped(&needs);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].0, "a");
    assert!(
        skipped[0].1.contains("host key") && skipped[0].1.contains("until machines.scm"),
        "{skipped:?}"
    );
}

/// A farm of `(name, system, speed, slots)` (never measured: usable).
fn farm_of(machines: &[(&str, &str, f64, u32)]) -> (tempfile::TempDir, Farm) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("machines.scm");
    let mut text = String::from("(list\n");
    for (name, system, speed, slots) in machines {
        text.push_str(&format!(
            "(build-machine (name {name:?}) (systems (list {system:?})) (user \"u\") \
             (speed {speed:?}) (parallel-builds {slots}) \
             (host-key \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"))\n"
        ));
    }
    text.push(')');
    std::fs::write(&file, text).unwrap();
    let farm = Farm::new(file);
    (tmp, farm)
}

fn request(system: &str, remaining: f64, estimate: Option<f64>) -> Request {
    Request {
        needs: Needs {
            system: system.into(),
            features: BTreeSet::new(),
        },
        closure: Arc::new(BTreeSet::new()),
        remaining,
        estimate,
    }
}

fn granted(p: Placement<'_>) -> Option<String> {
    match p {
        Placement::Remote(slot) => Some(slot.machine.name.clone()),
        _ => None,
    }
}

#[test]
fn the_longest_remaining_path_gets_the_next_free_slot() {
    let (_tmp, farm) = farm_of(&[("a", "x86_64-linux", 1.0, 1)]);
    let Placement::Remote(first) = farm.request(request("x86_64-linux", 0.0, None)).poll() else {
        panic!("the free slot is granted at once")
    };
    let mut short = farm.request(request("x86_64-linux", 10.0, None));
    let mut long = farm.request(request("x86_64-linux", 100.0, None));
    let mut middle = farm.request(request("x86_64-linux", 50.0, None));
    for t in [&mut short, &mut long, &mut middle] {
        assert!(matches!(
            t.poll(),
            Placement::Wait {
                busy: true,
                held: false,
                ..
            }
        ));
    }
    drop(first);
    let Placement::Remote(slot) = long.poll() else {
        panic!("the longest goes first")
    };
    assert!(matches!(middle.poll(), Placement::Wait { .. }));
    drop(slot);
    let Placement::Remote(slot) = middle.poll() else {
        panic!("then the middle one")
    };
    drop(slot);
    assert_eq!(granted(short.poll()).as_deref(), Some("a"));
    assert_eq!(farm.in_use("a"), 0);
}

#[test]
fn a_full_group_does_not_hold_up_the_others() {
    let (_tmp, farm) = farm_of(&[
        ("x", "x86_64-linux", 1.0, 1),
        ("arm", "aarch64-linux", 1.0, 1),
    ]);
    let Placement::Remote(x) = farm.request(request("x86_64-linux", 0.0, None)).poll() else {
        panic!()
    };
    let mut waiting = farm.request(request("x86_64-linux", 1e6, None));
    match waiting.poll() {
        Placement::Wait { busy, .. } => {
            assert!(busy);
            let reasons = waiting.reasons();
            assert!(reasons[0].contains("slots in use"), "{reasons:?}");
        }
        _ => panic!("x is full"),
    }
    assert_eq!(
        granted(farm.request(request("aarch64-linux", 1.0, None)).poll()).as_deref(),
        Some("arm")
    );
    drop(x);
    assert_eq!(granted(waiting.poll()).as_deref(), Some("x"));
}

#[test]
fn a_ticket_dropped_after_its_grant_frees_the_slot_for_the_next() {
    let (_tmp, farm) = farm_of(&[("a", "x86_64-linux", 1.0, 1)]);
    let Placement::Remote(first) = farm.request(request("x86_64-linux", 0.0, None)).poll() else {
        panic!()
    };
    let gone = farm.request(request("x86_64-linux", 100.0, None));
    let mut next = farm.request(request("x86_64-linux", 10.0, None));
    drop(first);
    // Granted to `gone`, whose client left before taking it.
    assert_eq!(farm.in_use("a"), 1);
    drop(gone);
    assert_eq!(granted(next.poll()).as_deref(), Some("a"));
}

#[test]
fn a_long_build_on_the_critical_path_waits_for_a_faster_machine() {
    let (_tmp, farm) = farm_of(&[
        ("slow", "x86_64-linux", 0.5, 1),
        ("fast", "x86_64-linux", 4.0, 1),
    ]);
    let Placement::Remote(fast) = farm.request(request("x86_64-linux", 0.0, None)).poll() else {
        panic!()
    };
    assert_eq!(fast.machine.name, "fast");
    // An hour at speed 1: 2 h on slow, 15 min on fast. Its remaining
    // path is the longest waiting: held rather than sent to slow.
    let mut long = farm.request(request("x86_64-linux", 3600.0 / 4.0, Some(3600.0)));
    match long.poll() {
        Placement::Wait { held, busy, .. } => {
            let reasons = long.reasons();
            assert!(held && busy, "{reasons:?}");
            assert!(reasons[0].contains("faster"), "{reasons:?}");
        }
        _ => panic!("held for the fast machine"),
    }
    // A short one off the critical path takes the slow machine.
    assert_eq!(
        granted(
            farm.request(request("x86_64-linux", 10.0, Some(5.0)))
                .poll()
        )
        .as_deref(),
        Some("slow")
    );
    // Without a history, nothing is held.
    let (_tmp2, farm2) = farm_of(&[
        ("slow", "x86_64-linux", 0.5, 1),
        ("fast", "x86_64-linux", 4.0, 1),
    ]);
    let _busy = farm2.request(request("x86_64-linux", 0.0, None)).poll();
    assert_eq!(
        granted(farm2.request(request("x86_64-linux", 900.0, None)).poll()).as_deref(),
        Some("slow")
    );
    // The fast machine frees its slot: the held one gets it.
    drop(fast);
    assert_eq!(granted(long.poll()).as_deref(), Some("fast"));
}
