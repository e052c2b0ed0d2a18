//! `ferry build`'s exit status and --dry-run when the build is offloaded:
//! a build killed by --timeout or --max-silent-time on a build machine
//! exits 101 as a local one does (Nix's `Worker::exitStatus`), a failed one
//! 100; --dry-run names the machine and what would be sent to it.

use ferry_test_support::testbed::prerequisites;

use common::{build_cmd, ok, run, stderr};
use ferry_test_support::testbed as common;

#[test]
fn offloaded_timeouts_exit_101_and_dry_run_names_the_machine() {
    if !prerequisites() {
        return;
    }
    let (_tmp, tb) = common::testbed(1, 1, "256M");
    let host = tb.hosts()[0].address().to_string();
    let spin = "(derivation \"spin\" #:builder \"/bin/sh\" \
                #:args '(\"-c\" \"echo start; while :; do :; done\"))";
    let quiet = "(derivation \"quiet\" #:builder \"/bin/sh\" \
                 #:args '(\"-c\" \"echo start; exec /bin/sleep 60\"))";
    let fail = "(derivation \"fail\" #:builder \"/bin/sh\" #:args '(\"-c\" \"exit 3\"))";

    // -j 0: nothing is built here, so each goes to the one machine.
    let o = ok(&mut build_cmd(&tb, "spin", spin, &["-n", "-j", "0"]));
    let e = stderr(&o);
    assert!(e.contains(&format!("on build machine {host}")), "{e}");

    let o = run(&mut build_cmd(
        &tb,
        "spin",
        spin,
        &["-j", "0", "--timeout", "2"],
    ));
    let e = stderr(&o);
    assert!(e.contains(&format!("on '{host}'")), "{e}");
    assert_eq!(o.status.code(), Some(101), "{e}");

    let o = run(&mut build_cmd(
        &tb,
        "quiet",
        quiet,
        &["-j", "0", "--max-silent-time", "2"],
    ));
    assert_eq!(o.status.code(), Some(101), "{}", stderr(&o));

    let o = run(&mut build_cmd(&tb, "fail", fail, &["-j", "0"]));
    assert_eq!(o.status.code(), Some(100), "{}", stderr(&o));
}
