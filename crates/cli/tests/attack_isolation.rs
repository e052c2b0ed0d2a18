//! Attacks on the builder's isolation, run
//! against a real root daemon on a shared store, with and without the
//! sandbox:
//!
//! - no window: while builders chmod 6755 and write large outputs, nothing
//!   under the store directory is ever setuid/setgid, owned by a build user
//!   or group/world-writable, and an unprivileged user cannot run a running
//!   build's setuid output (by its store path or through the chroot);
//! - build users always: a root daemon's builder runs as a build uid, and
//!   nothing it starts (double-forked, `setsid`) outlives its build;
//! - limits: a fork bomb or a disk filler fails its own build, the daemon
//!   keeps serving and the file system keeps its reserve.
//!
//! Each asserts the invariant, not a message.

use ferry_test_support as support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::attacker::{SharedDaemon, User};
use support::{marker, run_timeout};

/// The daemon's build uids: 30000 + slot (EngineConfig's default base).
const BUILD_UIDS: std::ops::Range<u32> = 30000..31000;

/// The daemon variants every test runs against.
const MODES: &[(&str, &[&str])] = &[("sandbox", &[]), ("no-sandbox", &["--no-sandbox"])];

fn ready() -> bool {
    support::prerequisites(&["root"])
}

/// Everything wrong under `dir` right now: entries that are setuid/setgid,
/// owned by a build user, or writable by group or others. A directory that
/// is root's and 0700 is the daemon's own (a chroot or private store): no
/// other user reaches below it, so it is checked but not entered.
fn violations(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return; // removed meanwhile
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let mode = m.mode();
        let link = m.file_type().is_symlink();
        if BUILD_UIDS.contains(&m.uid()) || BUILD_UIDS.contains(&m.gid()) {
            out.push(format!("{} owned by {}:{}", p.display(), m.uid(), m.gid()));
        }
        if !link && mode & 0o6000 != 0 {
            out.push(format!("{} is setuid/setgid ({:o})", p.display(), mode));
        }
        if !link && mode & 0o022 != 0 {
            out.push(format!(
                "{} is group/world-writable ({:o})",
                p.display(),
                mode
            ));
        }
        if m.is_dir() {
            let private = m.uid() == 0 && mode & 0o077 == 0;
            if !private {
                violations(&p, out);
            }
        }
    }
}

/// Polls `store` every few ms until stopped; returns what it saw wrong.
struct Poller {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<String>, u64)>,
}

impl Poller {
    fn start(store: &Path) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, store) = (stop.clone(), store.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut rounds = 0;
            while !s.load(Ordering::Relaxed) {
                violations(&store, &mut seen);
                rounds += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            seen.sort();
            seen.dedup();
            (seen, rounds)
        });
        Poller { stop, thread }
    }

    fn finish(self) -> (Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn build(d: &SharedDaemon, args: &[&str]) -> std::process::Output {
    run_timeout(&mut d.ferry(args), 600)
}

fn out_path(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn assert_built(d: &SharedDaemon, o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "build failed: {}{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    out_path(o)
}

#[test]
fn the_store_never_holds_setuid_build_user_or_writable_entries() {
    if !ready() {
        return;
    }
    for (mode, args) in MODES {
        let d = SharedDaemon::start(args);
        let m = marker();
        // A directory output with setuid files, a world-writable directory
        // and 200 MiB, plus a single-file output made setuid; the builder
        // also tries to leave setuid files in its build directory.
        let script = format!(
            "echo {m}; mkdir -p $out/sub; cp /bin/sh $out/sh; chmod 6755 $out/sh; \
             chmod 777 $out/sub; echo x > $out/sub/w; chmod 6777 $out/sub/w; \
             dd if=/dev/zero of=$out/big bs=1M count=200 2>/dev/null; chmod 4755 $out/big; \
             cp /bin/sh ./sh; chmod 6755 ./sh; chmod 755 .; chmod 777 $out"
        );
        let drv = d.add_drv(None, &format!("suid-{mode}"), &script);
        let poller = Poller::start(&d.store);
        let o = build(&d, &["build", &drv]);
        let (seen, rounds) = poller.finish();
        let out = assert_built(&d, &o);
        assert!(rounds > 10, "{mode}: the poller ran {rounds} rounds only");
        assert!(
            seen.is_empty(),
            "{mode}: seen under the store:\n{}",
            seen.join("\n")
        );
        let meta = fs::metadata(Path::new(&out).join("sh")).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o555), "{mode}");
        assert_eq!(
            fs::metadata(Path::new(&out).join("big")).unwrap().len(),
            200 << 20
        );
        let mut after = Vec::new();
        violations(&d.store, &mut after);
        assert!(
            after.is_empty(),
            "{mode}: after the build:\n{}",
            after.join("\n")
        );
        d.assert_verify_clean();
    }
}

/// Runs `path -c 'id -u'` as `user`; the uid it printed, if it ran (a
/// refused exec is `None`).
fn run_as(user: &User, path: &Path) -> Option<String> {
    let o = user
        .command(path)
        .args(["-c", "id -u"])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Every `sh` at depth 1 to 3 below `dir`, as root sees them.
fn find_sh(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "sh") {
            out.push(p.clone());
        }
        if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
            find_sh(&p, depth - 1, out);
        }
    }
}

#[test]
fn an_unprivileged_user_cannot_run_a_running_builds_setuid_output() {
    if !ready() {
        return;
    }
    let attacker = User::attacker();
    for (mode, args) in MODES {
        let d = SharedDaemon::start(args);
        let name = format!("suid-wait-{mode}");
        let script = "mkdir $out; cp /bin/sh $out/sh; chmod 6755 $out/sh; \
                      cp /bin/sh ./sh; chmod 6755 ./sh; chmod 755 .; sleep 4";
        let drv = d.add_drv(None, &name, script);
        let store = d.store.clone();
        let builder = std::thread::spawn({
            let drv = drv.clone();
            let d_args: Vec<String> = vec!["build".into(), drv];
            let cmd = d.ferry(&d_args.iter().map(String::as_str).collect::<Vec<_>>());
            move || {
                let mut cmd = cmd;
                run_timeout(&mut cmd, 300)
            }
        });
        // While it runs: every `sh` root can find in the store (in chroots,
        // private stores, the outputs' final places) and the build dirs.
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut tried = Vec::new();
        let mut ran = Vec::new();
        while Instant::now() < deadline {
            let mut candidates = Vec::new();
            find_sh(&store, 3, &mut candidates);
            for e in fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
                if e.file_name().to_string_lossy().starts_with("ferry-build-") {
                    find_sh(&e.path(), 1, &mut candidates);
                }
            }
            for c in candidates {
                if let Some(uid) = run_as(&attacker, &c) {
                    if uid != attacker.uid.to_string() {
                        ran.push(format!("{} ran as uid {uid}", c.display()));
                    }
                }
                tried.push(c);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = builder.join().unwrap();
        let out = assert_built(&d, &o);
        assert!(
            tried.iter().any(|p| p.to_string_lossy().contains(&name)),
            "{mode}: never found the running build's output to try: {tried:?}"
        );
        assert!(ran.is_empty(), "{mode}: {}", ran.join("\n"));
        // Done: runnable by anyone, as themselves.
        let sh = Path::new(&out).join("sh");
        assert_eq!(run_as(&attacker, &sh), Some(attacker.uid.to_string()));
    }
}

#[test]
fn a_root_daemons_builder_runs_as_a_build_user() {
    if !ready() {
        return;
    }
    for (mode, args) in MODES {
        let d = SharedDaemon::start(args);
        let drv = d.add_drv(
            None,
            &format!("whoami-{mode}"),
            "{ id -u; id -g; id -G; } > $out",
        );
        let out = assert_built(&d, &build(&d, &["build", &drv]));
        let text = fs::read_to_string(&out).unwrap();
        let ids: Vec<u32> = text
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        assert!(ids.len() >= 3, "{mode}: {text}");
        assert!(
            BUILD_UIDS.contains(&ids[0]),
            "{mode}: builder uid {}",
            ids[0]
        );
        assert!(ids.iter().all(|&i| i != 0), "{mode}: root among {text}");
    }
}

/// Processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            found.push(format!("{}: {text}", e.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn nothing_a_builder_starts_outlives_its_build() {
    if !ready() {
        return;
    }
    for (mode, args) in MODES {
        let d = SharedDaemon::start(args);
        // A unique duration marks the sleeps.
        let secs = format!("1000.{}", marker());
        let script = format!(
            "setsid sleep {secs} </dev/null >/dev/null 2>&1 & \
             ( ( sleep {secs} </dev/null >/dev/null 2>&1 & ) & ) ; \
             nohup setsid sh -c 'sleep {secs}' </dev/null >/dev/null 2>&1 & \
             sleep 0.5; echo done > $out"
        );
        let drv = d.add_drv(None, &format!("daemonize-{mode}"), &script);
        assert_built(&d, &build(&d, &["build", &drv]));
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut left = processes_with(&secs);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = processes_with(&secs);
        }
        assert!(left.is_empty(), "{mode}: left running: {left:?}");
    }
}

#[test]
fn a_fork_bomb_fails_its_own_build_and_the_daemon_keeps_serving() {
    if !ready() {
        return;
    }
    for (mode, args) in MODES {
        let mut all = vec!["--max-build-processes", "64"];
        all.extend_from_slice(args);
        let mut d = SharedDaemon::start(&all);
        let m = marker();
        // Forks until the limit stops it (a shell exits when fork fails).
        let bounded = format!("while true; do sleep 1{m} & done");
        let drv = d.add_drv(None, &format!("forks-{mode}"), &bounded);
        let o = build(&d, &["build", &drv]);
        assert!(!o.status.success(), "{mode}: the fork loop succeeded");
        // The classic bomb never exits by itself: the timeout ends it.
        let bomb = "b() { b | b & }; b; wait";
        let drv = d.add_drv(None, &format!("bomb-{mode}"), bomb);
        let t = Instant::now();
        let o = build(&d, &["build", "--timeout", "5", &drv]);
        assert!(!o.status.success(), "{mode}: the bomb succeeded");
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{mode}: {:?}",
            t.elapsed()
        );
        d.assert_alive();
        assert!(
            processes_with(&format!("sleep 1{m}")).is_empty(),
            "{mode}: forks left"
        );
        let drv = d.add_drv(None, &format!("after-bomb-{mode}"), "echo fine > $out");
        let out = assert_built(&d, &build(&d, &["build", &drv]));
        assert_eq!(fs::read_to_string(out).unwrap(), "fine\n");
    }
}

/// A tmpfs of `mib` MiB mounted on `dir` until dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Tmpfs {
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={mib}m,mode=0755"))
            .arg("ferry-test")
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: an all-zero statvfs is valid for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and output buffer.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail * st.f_frsize
}

#[test]
fn a_disk_filler_fails_its_own_build_and_the_reserve_is_kept() {
    if !ready() {
        return;
    }
    for (mode, args) in MODES {
        let mut all = vec!["--min-free-space", "128"];
        all.extend_from_slice(args);
        let mut d = SharedDaemon::start(&all);
        // The store on a small file system of its own, from now on.
        let _fs = Tmpfs::mount(&d.store, 512);
        let drv = d.add_drv(
            None,
            &format!("filler-{mode}"),
            "mkdir $out; i=0; while true; do head -c 1048576 /dev/zero > $out/f$i || exit 1; i=$((i+1)); done",
        );
        let min = Arc::new(Mutex::new(u64::MAX));
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = std::thread::spawn({
            let (min, stop, store) = (min.clone(), stop.clone(), d.store.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let f = free_bytes(&store);
                    let mut m = min.lock().unwrap();
                    *m = (*m).min(f);
                    drop(m);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let o = build(&d, &["build", &drv]);
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap();
        assert!(!o.status.success(), "{mode}: the filler succeeded");
        let min = *min.lock().unwrap();
        // Checked every 5 ms near the reserve: a writer may go past it by what it
        // writes in that time, never to a full file system.
        assert!(
            min > 64 << 20,
            "{mode}: free space fell to {} KiB",
            min >> 10
        );
        // The failed build's tree is removed off the build's critical path.
        let deadline = Instant::now() + Duration::from_secs(20);
        while free_bytes(&d.store) < 500 << 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            free_bytes(&d.store) > 500 << 20,
            "{mode}: the filler's output is left"
        );
        println!(
            "{mode}: lowest free space during the filler: {} MiB",
            min >> 20
        );
        d.assert_alive();
        let drv = d.add_drv(None, &format!("after-filler-{mode}"), "echo fine > $out");
        let out = assert_built(&d, &build(&d, &["build", &drv]));
        assert_eq!(fs::read_to_string(out).unwrap(), "fine\n");
    }
}

/// Spare sandbox directories of the daemon: chroots in the store and build
/// directories in TMPDIR that it keeps, emptied, for its next builds.
fn spares(d: &SharedDaemon) -> (Vec<String>, Vec<String>) {
    let names = |dir: &Path, prefix: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        v.sort();
        v
    };
    let pid = d.pid();
    (
        names(&d.store, &format!(".ferry-chroot-{pid}-")),
        names(&std::env::temp_dir(), &format!("ferry-build-{pid}-spare-")),
    )
}

#[test]
fn a_reused_sandbox_holds_nothing_of_the_previous_build() {
    if !ready() || !support::prerequisites(&["namespaces"]) {
        return;
    }
    let d = SharedDaemon::start(&["--max-jobs", "1"]);
    let attacker = User::attacker();
    let m = marker();
    let looker = d.add_drv(
        None,
        &format!("looker-{m}"),
        "{ echo build: $(ls -A /build); echo tmp: $(ls -A /tmp); stat -c '%n %a' /tmp /build; \
         echo store: $(ls -A $NIX_STORE); } > $out",
    );
    // The first build leaves what it can where it works, opens its
    // directories to everyone, and fails.
    let dirty = d.add_drv(
        Some(&attacker),
        &format!("dirty-{m}"),
        "for d in /tmp /build; do echo left > $d/left-behind; mkdir -p $d/sub/deeper; \
         echo x > $d/sub/deeper/f; chmod 000 $d/sub; mkfifo $d/fifo; done; \
         chmod 777 /build; mkdir -p $out; echo partial > $out/f; exit 1",
    );
    let o = build(&d, &["build", &dirty]);
    assert!(!o.status.success(), "the dirty build must fail");
    // Its directories were emptied and kept.
    let deadline = Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let s = spares(&d);
        if !s.0.is_empty() && !s.1.is_empty() {
            break s;
        }
        assert!(Instant::now() < deadline, "no spare kept: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The next build, of another user, gets them: it sees nothing.
    let o = build(&d, &["build", &looker]);
    let out = assert_built(&d, &o);
    let seen = fs::read_to_string(&out).unwrap();
    // The store dir's own mount point may lie under /tmp (the test's store
    // is in TMPDIR); nothing else may be there.
    let store_top = d
        .store
        .strip_prefix(std::env::temp_dir())
        .ok()
        .and_then(|rest| rest.iter().next())
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    let own = Path::new(&out).file_name().unwrap().to_string_lossy();
    let expected = format!("build:\ntmp: {store_top}\n/tmp 1777\n/build 700\nstore: {own}\n");
    assert_eq!(
        seen.replace("tmp: \n", &format!("tmp: {store_top}\n")),
        expected,
        "the second build saw the first's leftovers"
    );
    // The same chroot came back, and one build directory (renamed for each
    // build it serves).
    let deadline = Instant::now() + Duration::from_secs(20);
    while spares(&d).0 != kept.0 || spares(&d).1.len() != kept.1.len() {
        assert!(
            Instant::now() < deadline,
            "the second build did not reuse the spares {kept:?}: {:?}",
            spares(&d)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.assert_verify_clean();
    // An idle daemon does not keep them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while spares(&d) != (vec![], vec![]) {
        assert!(Instant::now() < deadline, "spares kept: {:?}", spares(&d));
        std::thread::sleep(Duration::from_millis(100));
    }
}
