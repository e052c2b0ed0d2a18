//! Automatic garbage collection keeps a farm building unattended: hosts
//! whose stores (300 MiB tmpfs) could not hold what they build, running
//! with `--min-free 100M`, build twenty derivations of 60 MiB outputs each
//! (1.2 GB in all) offloaded to them; every build succeeds on a host, and
//! each host collected and ends with more than the scheduler's 100 MiB
//! threshold free, as `ferry offload status` shows.

use ferry_test_support::ferry_bin;
use ferry_test_support::testbed::prerequisites;

use common::{build_cmd, ok, placements};
use ferry_test_support::testbed as common;

const N: usize = 20;
const OUTPUT_MIB: usize = 60;

#[test]
fn hosts_collect_automatically_and_keep_building() {
    if !prerequisites() {
        return;
    }
    // Stores of 300M: not on by default (see Options::min_free).
    let (_tmp, tb) = common::testbed_with(2, |opts| {
        opts.store_size = "300M".into();
        opts.min_free = Some("100M".into());
    });
    // Only the hosts have the feature: everything is built there.
    let file = tb.machines_file();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "  (parallel-builds",
            "  (features (list \"remote\"))\n  (parallel-builds",
        ),
    )
    .unwrap();
    let salt = std::process::id();
    let mut scm = String::from("(list\n");
    for i in 0..N {
        scm.push_str(&format!(
            " (derivation \"big-{i}\" #:builder \"/bin/sh\" \
             #:env '((\"PATH\" . \"/bin:/usr/bin\") (\"requiredSystemFeatures\" . \"remote\")) \
             #:args '(\"-c\" \"head -c {} /dev/zero > $out && echo {salt}-{i} >> $out\"))\n",
            OUTPUT_MIB << 20
        ));
    }
    scm.push(')');
    let out = ok(&mut build_cmd(&tb, "big", &scm, &["-j", "2"]));
    let log = String::from_utf8_lossy(&out.stderr);
    let placed = placements(&log);
    assert_eq!(placed.len(), N, "not {N} builds placed:\n{log}");
    for h in tb.hosts() {
        let n = placed
            .iter()
            .filter(|(_, m)| m.contains(h.address()))
            .count();
        // More than its store holds without collecting (300 MiB / 60 MiB
        // = 5 at most, less with the reserve): a host passed over for
        // lack of space for good would stop at 4.
        assert!(
            n * OUTPUT_MIB > 300,
            "{} built only {n} of {N} (skipped for lack of space?):\n{log}",
            h.address()
        );
        eprintln!("{}: {n} builds", h.address());
    }
    assert!(placed.iter().all(|(_, m)| m != "localhost"), "{log}");
    // Every output arrived whole on the master.
    let outputs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(outputs.len(), N, "{outputs:?}");
    for o in &outputs {
        let len = std::fs::metadata(o).unwrap().len() as usize;
        assert!(len > OUTPUT_MIB << 20, "{o}: {len} bytes");
    }
    // Each host collected (1.2 GB went through 2 x 300 MiB stores) and is
    // above the scheduler's threshold afterwards.
    for h in tb.hosts() {
        let dlog =
            std::fs::read_to_string(tb.dir().join("hosts").join(h.name()).join("daemon.log"))
                .unwrap_or_default();
        assert!(
            dlog.contains("automatic garbage collection done"),
            "{} never collected:\n{dlog}",
            h.name()
        );
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let status = ok(tb
        .master_command(ferry_bin().to_str().unwrap())
        .args(["offload", "status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    for r in v.as_array().unwrap() {
        let free = r["freeBytes"].as_u64().unwrap_or(0);
        eprintln!("{}: {} MiB free", r["machine"], free >> 20);
        assert!(
            free > 100 << 20,
            "a host is under the scheduler's threshold: {r}"
        );
    }
    for h in tb.hosts() {
        ok(h.exec("ferry").unwrap().args(["store", "verify"]));
    }
}
