//! Isolation of a root daemon's builders, unit by unit: killing a build
//! user's processes, the process cap, the sandbox's chroot that no other
//! user reaches while outputs are setuid and the builder's, and the private
//! overlay store of unsandboxed builds. They need root: elsewhere they print
//! a skip notice, except under CI (env `CI` set), where they fail.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_build::sandbox::{default_host_paths, Sandbox, SandboxSpec};
use ferry_build::unsandboxed::{self, PrivateStore};
use ferry_build::users::kill_user;
use ferry_test_support::{marker, prerequisites, processes_with, wait_for};

#[test]
fn kill_user_takes_every_process_of_the_uid() {
    if !prerequisites(&["root"]) {
        return;
    }
    let secs = format!("777.{}", marker());
    // Daemonized twice over: its own session, parent gone.
    let script = format!("setsid sh -c 'sleep {secs} & sleep {secs} &' & sleep {secs} &");
    let st = Command::new("/bin/sh")
        .args(["-c", &script])
        .uid(30777)
        .gid(30777)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    wait_for("the sleeps", Duration::from_secs(5), || {
        processes_with(&secs).len() == 3
    });
    kill_user(30777).unwrap();
    wait_for("no sleep left", Duration::from_secs(5), || {
        processes_with(&secs).is_empty()
    });
    // Nothing to kill is fine; root and ourselves are refused.
    kill_user(30777).unwrap();
    assert!(kill_user(0).is_err());
}

fn sandbox_spec(base: &Path, store: &Path, max_processes: u64) -> SandboxSpec {
    fs::create_dir_all(base.join("build")).unwrap();
    SandboxSpec {
        store_dir: store.to_path_buf(),
        inputs: Vec::new(),
        outputs: vec![store.join("00000000000000000000000000000000-out")],
        build_dir: base.join("build"),
        sandbox_build_dir: PathBuf::from("/build"),
        host_paths: default_host_paths(),
        chroot_parent: store.to_path_buf(),
        uid: 30001,
        gid: 30001,
        max_processes,
        linux32: false,
    }
}

/// Setuid, group/world-writable or build-user-owned entries under `dir`
/// that a user other than root can reach.
fn reachable_violations(dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(m) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        let link = m.file_type().is_symlink();
        if (30000..31000).contains(&m.uid())
            || !link && m.mode() & 0o6022 != 0
            || (30000..31000).contains(&m.gid())
        {
            out.push(format!("{} {:o} {}", e.path().display(), m.mode(), m.uid()));
        }
        if m.is_dir() && !(m.uid() == 0 && m.mode() & 0o077 == 0) {
            reachable_violations(&e.path(), out);
        }
    }
}

#[test]
fn sandboxed_outputs_stay_where_only_the_daemon_reaches_them() {
    if !prerequisites(&["root"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    fs::create_dir(&store).unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let spec = sandbox_spec(tmp.path(), &store, 0);
    let out = spec.outputs[0].clone();
    let sb = Sandbox::prepare(spec).unwrap();
    let root = fs::metadata(sb.root()).unwrap();
    assert_eq!((root.uid(), root.mode() & 0o7777), (0, 0o700));
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        "mkdir $out; cp /bin/sh $out/sh; chmod 6755 $out/sh && echo SETUID-MADE; \
         chmod 2755 $out && echo SETGID-MADE; chmod 777 $out; \
         dd if=/dev/zero of=$out/big bs=1M count=20 2>/dev/null; sleep 1",
    ])
    .env_clear()
    .env("PATH", "/bin:/usr/bin")
    .env("out", &out)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    sb.configure(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut seen = Vec::new();
    while child.try_wait().unwrap().is_none() {
        reachable_violations(&store, &mut seen);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(seen.is_empty(), "{seen:?}");
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut said).unwrap();
    assert!(
        !said.contains("-MADE"),
        "the seccomp filter let through: {said}"
    );
    let staged = sb.staged_outputs().unwrap();
    assert_eq!(staged.len(), 1);
    assert!(staged[0].0.starts_with(sb.root()));
    // What the builder left is its own (and not setuid: the filter); made
    // canonical, it is root's and read-only.
    let sh = staged[0].0.join("sh");
    let m = fs::metadata(&sh).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o6000), (30001, 0));
    ferry_store::canonicalise_outputs(&[staged[0].0.clone()], 30001).unwrap();
    let m = fs::metadata(&sh).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o555));
    sb.destroy().unwrap();
}

#[test]
fn a_sandboxed_builder_cannot_exceed_its_process_cap() {
    if !prerequisites(&["root"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    fs::create_dir(&store).unwrap();
    let secs = format!("30.{}", marker());
    for (cap, ok) in [(20, false), (0, true)] {
        let sb = Sandbox::prepare(sandbox_spec(tmp.path(), &store, cap)).unwrap();
        let mut cmd = Command::new("/bin/sh");
        // 50 background sleeps: more than the cap allows.
        let script = format!("i=0; while [ $i -lt 50 ]; do sleep {secs} & i=$((i+1)); done");
        cmd.args(["-c", &script])
            .env_clear()
            .env("PATH", "/bin:/usr/bin")
            .stderr(Stdio::null());
        sb.configure(&mut cmd);
        assert_eq!(cmd.status().unwrap().success(), ok, "cap {cap}");
        sb.destroy().unwrap();
    }
}

#[test]
fn an_unsandboxed_builder_writes_to_a_private_overlay_as_a_build_user() {
    if !prerequisites(&["root"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let store = tmp.path().join("store");
    fs::create_dir(&store).unwrap();
    let input = store.join("11111111111111111111111111111111-in");
    fs::write(&input, "input\n").unwrap();
    assert_eq!(unsandboxed::mode(&store), unsandboxed::Mode::Overlay);
    let parent = tmp.path().join("ferry-build-x");
    let build = parent.join("build");
    fs::create_dir_all(&build).unwrap();
    fs::set_permissions(&parent, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&build, Some(30002), Some(30002)).unwrap();
    let ps = PrivateStore::prepare(&store, 30002).unwrap();
    let out = store.join("22222222222222222222222222222222-out");
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        "mkdir $out && cat $in > $out/copy && id -u > $out/uid && pwd > $out/pwd \
         && touch ./here && cat /etc/hostname >/dev/null && echo junk > $(dirname $out)/junk \
         && cp /bin/sh ./sh && ! chmod 4755 ./sh 2>/dev/null && ! chmod 2755 ./sh 2>/dev/null \
         && echo $$ > $out/pid",
    ])
    .env_clear()
    .env("PATH", "/bin:/usr/bin")
    .env("out", &out)
    .env("in", &input)
    .current_dir(&build);
    unsandboxed::configure(
        &mut cmd,
        &store,
        Some((&ps, &build, &parent)),
        Some((30002, 30002)),
        100,
        false,
    )
    .unwrap();
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Nothing in the real store; all in the private upper layer.
    assert!(!out.exists() && !store.join("junk").exists());
    let staged = ps.staged(out.file_name().unwrap());
    assert_eq!(fs::read_to_string(staged.join("copy")).unwrap(), "input\n");
    assert_eq!(fs::read_to_string(staged.join("uid")).unwrap(), "30002\n");
    let pwd = fs::read_to_string(staged.join("pwd")).unwrap();
    assert_eq!(pwd.trim(), parent.to_str().unwrap());
    assert!(build.join("here").exists());
    assert_eq!(fs::metadata(build.join("sh")).unwrap().mode() & 0o6000, 0);
    // PID 1 of its own PID namespace.
    assert_eq!(fs::read_to_string(staged.join("pid")).unwrap(), "1\n");
    assert_eq!(fs::metadata(&staged).unwrap().uid(), 30002);
}
