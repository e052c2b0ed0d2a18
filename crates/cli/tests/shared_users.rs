//! A user of a shared machine: an unprivileged user,
//! pointed at a root daemon's store, does everything through the daemon:
//! build, add a file, add a derivation, read path-info and a build's log,
//! export and import a signed archive, collect garbage. No command says
//! "not valid" for a valid path or fails on permissions.

use ferry_test_support as support;

use std::fs;
use std::process::Stdio;

use support::attacker::{SharedDaemon, User};
use support::run_timeout;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(d: &SharedDaemon, user: &User, args: &[&str]) -> String {
    let o = run_timeout(&mut d.ferry_as(user, args), 120);
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
    let o = run_timeout(&mut d.ferry_as(&user, &["archive", "--export", out]), 60);
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
    let report = run_timeout(&mut d.ferry_as(&user, &["store", "verify"]), 120);
    assert!(report.status.success(), "{}", text(&report.stderr));
    assert!(
        text(&report.stderr).contains("all match the database"),
        "{}",
        text(&report.stderr)
    );
    let o = run_timeout(&mut d.ferry_as(&user, &["store", "verify", "--repair"]), 60);
    assert!(
        !o.status.success() && text(&o.stderr).contains("trusted"),
        "{}",
        text(&o.stderr)
    );

    // archive --missing asks the daemon.
    let o = d
        .ferry_as(&user, &["archive", "--missing"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let absent = format!("{}/{}-absent", d.store.display(), "0".repeat(32));
    let mut o = o;
    std::io::Write::write_all(
        &mut o.stdin.take().unwrap(),
        format!("{out}\n{absent}\n").as_bytes(),
    )
    .unwrap();
    let o = o.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(text(&o.stdout), format!("{absent}\n"));

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

/// The same with no FERRY_* variable at all: the system daemon at the
/// default socket, found by the user's `ferry` by itself. The daemon runs
/// with the default paths in a private mount namespace (tmpfs on /ferry,
/// /var/ferry and /etc/ferry), so the host's are untouched (an empty
/// directory is made for a mount point that does not exist, and removed).
#[test]
fn without_any_variable_a_user_finds_the_system_daemon() {
    if !support::prerequisites(&["root", "namespaces", "setpriv"]) {
        return;
    }
    let user = User::ensure("ferry-shared-user");
    let dir = tempfile::Builder::new()
        .prefix("ferry-default-")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(user.uid), Some(user.gid)).unwrap();
    fs::write(work.join("greeting.txt"), "hello\n").unwrap();
    fs::write(
        work.join("b.scm"),
        "(derivation \"default-b\" #:builder \"/bin/sh\" #:args (list \"-c\" \"echo building; echo b > $out\"))",
    )
    .unwrap();
    let mut made = Vec::new();
    for p in ["/ferry", "/var/ferry", "/etc/ferry"] {
        if fs::symlink_metadata(p).is_err() {
            fs::create_dir(p).unwrap();
            made.push(p);
        }
    }
    let ferry = support::ferry_bin().to_str().unwrap();
    let script = format!(
        r#"set -e
for d in /ferry /var/ferry /etc/ferry; do mount -t tmpfs -o mode=0755 none $d; done
FERRY_LOG=info {ferry} daemon > {dir}/daemon.log 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null' EXIT
i=0; while [ ! -S /var/ferry/daemon-socket/socket ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
as_user() {{ setpriv --reuid={uid} --regid={gid} --clear-groups env -i HOME={work} PATH=/usr/bin:/bin {ferry} "$@"; }}
cd {work}
as_user store ping
as_user store add {work}/greeting.txt
drv=$(as_user derivation add {work}/b.scm)
out=$(as_user build "$drv")
echo "out=$out"
as_user store path-info "$out"
as_user log "$drv"
{ferry} archive --authorize < /etc/ferry/signing-key.pub
as_user archive --export "$out" > {work}/b.nar
as_user archive --import < {work}/b.nar
as_user store verify
"#,
        ferry = ferry,
        dir = dir.path().display(),
        work = work.display(),
        uid = user.uid,
        gid = user.gid,
    );
    let o = support::private_mount_sh(&script).output().unwrap();
    for p in made {
        let _ = fs::remove_dir(p);
    }
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    let log = fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    assert!(o.status.success(), "{out}\n{err}\n--- daemon log\n{log}");
    assert!(
        out.contains("store:  /ferry/store")
            && out.contains("daemon: /var/ferry/daemon-socket/socket (ferry"),
        "{out}"
    );
    assert!(out.contains("-greeting.txt"), "{out}");
    assert!(
        out.contains("out=/ferry/store/") && out.contains("nar hash:    sha256:"),
        "{out}"
    );
    assert!(out.contains("building"), "the log: {out}");
    assert!(err.contains("all match the database"), "{err}");
}
