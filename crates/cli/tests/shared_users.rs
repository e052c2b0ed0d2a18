//! A user of a shared machine (issue 17, point 5): an unprivileged user,
//! pointed at a root daemon's store, does everything through the daemon:
//! build, add a file, add a derivation, read path-info and a build's log,
//! export and import a signed archive, collect garbage. No command says
//! "not valid" for a valid path or fails on permissions.

mod support;

use std::fs;
use std::process::Stdio;

use support::attacker::{run_bounded, SharedDaemon, User};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(d: &SharedDaemon, user: &User, args: &[&str]) -> String {
    let o = run_bounded(&mut d.ferry_as(user, args), 120);
    assert!(
        o.status.success(),
        "ferry {args:?} as {}: {}{}",
        user.name,
        text(&o.stderr),
        d.log()
    );
    text(&o.stdout)
}

#[test]
fn an_unprivileged_user_works_through_the_daemon() {
    if !support::prerequisites(&["root", "namespaces"]) {
        return;
    }
    let d = SharedDaemon::start(&[]);
    let user = User::ensure("ferry-shared-user");
    let work = d.root.join("user-work");
    fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(user.uid), Some(user.gid)).unwrap();

    // store add
    let file = work.join("greeting.txt");
    fs::write(&file, "hello\n").unwrap();
    std::os::unix::fs::chown(&file, Some(user.uid), Some(user.gid)).unwrap();
    let added = ok(&d, &user, &["store", "add", file.to_str().unwrap()]);
    let added = added.trim();
    assert!(added.ends_with("-greeting.txt"), "{added}");
    assert_eq!(fs::read_to_string(added).unwrap(), "hello\n");

    // derivation add, build, path-info, log
    let scm = work.join("b.scm");
    fs::write(
        &scm,
        "(derivation \"shared-b\" #:builder \"/bin/sh\" #:args (list \"-c\" \"echo building; echo b > $out\"))",
    )
    .unwrap();
    std::os::unix::fs::chown(&scm, Some(user.uid), Some(user.gid)).unwrap();
    let drv = ok(&d, &user, &["derivation", "add", scm.to_str().unwrap()]);
    let drv = drv.trim();
    let out = ok(&d, &user, &["build", drv]);
    let out = out.trim();
    let info = ok(&d, &user, &["store", "path-info", out]);
    assert!(info.contains("nar hash:    sha256:"), "{info}");
    let info = ok(&d, &user, &["store", "path-info", "--json", added]);
    assert!(info.contains("\"narHash\""), "{info}");
    let log = ok(&d, &user, &["log", drv]);
    assert!(log.contains("building"), "{log}");

    // archive export (signed by the daemon) and import (checked against its
    // ACL, which trusts its own key here).
    let key = fs::read(d.config.join("signing-key.pub")).unwrap();
    let mut auth = d.ferry(&["archive", "--authorize"]);
    let mut child = auth.stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &key).unwrap();
    assert!(child.wait().unwrap().success());
    let o = run_bounded(&mut d.ferry_as(&user, &["archive", "--export", out]), 60);
    assert!(o.status.success(), "{}{}", text(&o.stderr), d.log());
    assert!(!o.stdout.is_empty(), "an empty export: {}", text(&o.stderr));
    let bundle = work.join("b.nar");
    fs::write(&bundle, &o.stdout).unwrap();
    let o = d
        .ferry_as(&user, &["archive", "--import"])
        .stdin(fs::File::open(&bundle).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", text(&o.stderr), d.log());
    assert!(text(&o.stdout).contains(out), "{}", text(&o.stdout));

    // store verify: asks the daemon; --repair is for trusted users.
    let report = run_bounded(&mut d.ferry_as(&user, &["store", "verify"]), 120);
    assert!(report.status.success(), "{}", text(&report.stderr));
    assert!(
        text(&report.stderr).contains("all match the database"),
        "{}",
        text(&report.stderr)
    );
    let o = run_bounded(&mut d.ferry_as(&user, &["store", "verify", "--repair"]), 60);
    assert!(
        !o.status.success() && text(&o.stderr).contains("trusted"),
        "{}",
        text(&o.stderr)
    );

    // store ping says which store and daemon.
    let ping = ok(&d, &user, &["store", "ping"]);
    assert!(
        ping.contains(d.store.to_str().unwrap())
            && ping.contains("daemon: ")
            && ping.contains("ferry "),
        "{ping}"
    );

    // gc through the daemon: what a root keeps stays.
    ok(&d, &user, &["gc"]);
    d.assert_verify_clean();
}
