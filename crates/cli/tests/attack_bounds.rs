//! Attacked as an unprivileged local user: the bounds
//! that keep one client from exhausting the daemon or blocking others
//! (lock files, connections, the handshake timeout, log lines, a client
//! that never reads, `ferry log`, large messages), with the daemon's peak
//! memory (VmHWM) measured and printed. Who may connect at all is
//! `attack_access.rs`.

use ferry_test_support as support;

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_protocol::{BuildEvent, BuildOptions, ProtocolError, Request, Response};
use support::attacker::{runtime, tokio_stream, SharedDaemon, User};
use support::prerequisites;
use support::run_timeout;

/// The daemon's peak RSS must stay under this.
const MAX_RSS_KB: u64 = 64 << 10;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// The handshake over `stream`: Ok, or the daemon's refusal.
async fn handshake(stream: UnixStream, store: &Path) -> Result<(), String> {
    match ferry_protocol::Client::handshake(tokio_stream(stream), store.to_str().unwrap()).await {
        Ok(_) => Ok(()),
        Err(ProtocolError::Handshake(reason)) => Err(reason),
        Err(e) => Err(format!("not a refusal: {e}")),
    }
}

/// Run with stdout piped and stderr dropped (a build log may be huge),
/// killed past `secs`.
fn run_quiet(cmd: &mut Command, secs: u64) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: plain kill of our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{cmd:?} did not finish within {secs} s");
        }
    }
}

/// The output path `out` of a .drv (read from its ATerm).
fn drv_out(drv: &str) -> String {
    let t = fs::read_to_string(drv).unwrap();
    let i = t.find("(\"out\",\"").unwrap() + 8;
    t[i..i + t[i..].find('"').unwrap()].to_string()
}

// ---------------------------------------------------------------------------
// Point 6: bounded
// ---------------------------------------------------------------------------

#[test]
fn other_users_cannot_take_the_stores_locks() {
    if !prerequisites(&["root"]) {
        return;
    }
    let attacker = User::attacker();
    let d = SharedDaemon::start(&[]);
    let drv = d.add_drv(Some(&attacker), "locked", "echo ok > $out");
    let locks = d.state.join("locks");
    let mut files = 0;
    for e in fs::read_dir(&locks).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o600, 0));
        files += 1;
    }
    assert!(files > 0);
    let m = fs::metadata(&locks).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o755, 0));
    // The lock of the .drv and of its output: neither opened nor created.
    let drv_lock = locks.join(format!(
        "{}.lock",
        Path::new(&drv).file_name().unwrap().to_str().unwrap()
    ));
    let out_lock = locks.join(format!(
        "{}.lock",
        Path::new(&drv_out(&drv))
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
    ));
    for lock in [&drv_lock, &out_lock] {
        let out = run_timeout(
            attacker
                .command("flock")
                .args(["-n", lock.to_str().unwrap(), "true"]),
            30,
        );
        assert!(
            !out.status.success(),
            "the attacker took {}",
            lock.display()
        );
    }
    assert!(!out_lock.exists());
    // Other state: the database and logs are not writable by others.
    for sub in ["db", "log", "."] {
        let m = fs::metadata(d.state.join(sub)).unwrap();
        assert_eq!(m.mode() & 0o022, 0, "{sub}");
    }
    let out = d.build_as_root(&drv);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for e in fs::read_dir(d.state.join("log")).unwrap() {
        assert_eq!(e.unwrap().metadata().unwrap().mode() & 0o022, 0);
    }
    d.assert_verify_clean();
}

#[test]
fn idle_connections_do_not_starve_other_clients() {
    if !prerequisites(&["root"]) {
        return;
    }
    let attacker = User::attacker();
    let victim = User::ensure("ferry-victim");
    let d = SharedDaemon::start(&["--handshake-timeout", "3"]);
    let drv = d.add_drv(None, "after-the-flood", "echo ok > $out");
    // 1200 connections as the attacker that never say hello.
    let conns = attacker.connect_many(&d.socket, 1200);
    let held: Vec<UnixStream> = conns.into_iter().filter_map(Result::ok).collect();
    assert!(held.len() >= 1000, "only {} connected", held.len());
    // Another user and root are still served, quickly.
    let t = Instant::now();
    runtime().block_on(async {
        let mut c = d.client_as(&victim).await.unwrap();
        c.query_valid(vec![]).await.unwrap();
    });
    let out = d.build_as_root(&drv);
    assert!(out.status.success(), "{}{}", text(&out.stderr), d.log());
    let took = t.elapsed();
    assert!(took < Duration::from_secs(30), "{took:?}");
    let rss = peak_rss_kb(d.pid());
    eprintln!(
        "idle connections: {} held, another client served in {took:?}, daemon VmHWM {rss} kB",
        held.len()
    );
    assert!(rss < MAX_RSS_KB, "{rss} kB");
    // Those over the per-user limit were refused at once; the others are
    // closed once the handshake timeout passes.
    let t = Instant::now();
    let mut closed = 0;
    for mut s in held.into_iter().take(100) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        // A refusal (a frame), then EOF; or EOF at the timeout.
        if s.read_to_end(&mut buf).is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, 100, "connections left open");
    assert!(t.elapsed() < Duration::from_secs(15));

    // Connections that did their handshake and idle: at most 64 per user
    // (--max-connections-per-user); more are refused at once.
    let refused = runtime().block_on(async {
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        for _ in 0..80 {
            match d.client_as(&attacker).await {
                Ok(c) => kept.push(c),
                Err(ProtocolError::Handshake(why)) => refused.push(why),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(kept.len(), 64);
        // Root and another user still get in.
        handshake(UnixStream::connect(&d.socket).unwrap(), &d.store)
            .await
            .unwrap();
        handshake(victim.connect(&d.socket).unwrap(), &d.store)
            .await
            .unwrap();
        refused
    });
    assert_eq!(refused.len(), 16);
    assert!(
        refused[0].contains("too many connections")
            && refused[0].contains("--max-connections-per-user"),
        "{}",
        refused[0]
    );

    // With a small limit, a client over it waits for a slot (not refused).
    let d = SharedDaemon::start(&["--max-connections", "4", "--handshake-timeout", "2"]);
    let _idle = attacker.connect_many(&d.socket, 10);
    let t = Instant::now();
    runtime().block_on(async {
        handshake(UnixStream::connect(&d.socket).unwrap(), &d.store)
            .await
            .unwrap()
    });
    eprintln!(
        "max-connections 4, 10 idle: a client got in after {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_newline_free_log_and_ferry_log_keep_memory_bounded() {
    if !prerequisites(&["root"]) {
        return;
    }
    let d = SharedDaemon::start(&[]);
    let size: u64 = 256 << 20;
    let drv = d.add_drv(
        None,
        "no-newline",
        &format!("head -c {size} /dev/zero | tr -c x x; echo done > $out"),
    );
    let before = peak_rss_kb(d.pid());
    let out = run_quiet(&mut d.ferry(&["build", &drv]), 600);
    assert!(out.status.success(), "{}", d.log());
    let after_build = peak_rss_kb(d.pid());
    // The log file has it all, in lines of at most 64 KiB.
    let log = d
        .state
        .join("log")
        .join(Path::new(&drv).file_name().unwrap());
    let lines = size / (64 << 10);
    assert_eq!(fs::metadata(&log).unwrap().len(), size + lines);
    // `ferry log` streams it.
    let dest = d.dir().join("log-copy");
    let status = d
        .ferry(&["log", &drv])
        .stdout(fs::File::create(&dest).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fs::metadata(&dest).unwrap().len(), size + lines);
    fs::remove_file(&dest).unwrap();
    let after_log = peak_rss_kb(d.pid());
    eprintln!(
        "256 MiB newline-free log: daemon VmHWM {before} kB at start, {after_build} kB after the build, {after_log} kB after ferry log"
    );
    assert!(after_log < MAX_RSS_KB, "{after_log} kB");
}

#[test]
fn a_client_that_never_reads_does_not_stop_its_build_or_grow_the_daemon() {
    if !prerequisites(&["root"]) {
        return;
    }
    let attacker = User::attacker();
    let d = SharedDaemon::start(&[]);
    let n = 3_000_000;
    let drv = d.add_drv(
        Some(&attacker),
        "chatty",
        &format!(
            "yes 'a chatty line of build log, again and again' | head -n {n}; echo done > $out"
        ),
    );
    let before = peak_rss_kb(d.pid());
    // The attacker asks for the build and never reads a byte.
    let t = Instant::now();
    let rt = runtime();
    let raw = rt.block_on(async {
        let (r, mut w) = d.raw_as(&attacker).await;
        w.send(&Request::Build {
            drvs: vec![drv.clone()],
            options: BuildOptions::default(),
        })
        .await
        .unwrap();
        (r, w)
    });
    // The build goes on: root's build of it returns when it is done.
    let out = run_quiet(&mut d.ferry(&["build", &drv]), 600);
    assert!(out.status.success(), "{}", d.log());
    let took = t.elapsed();
    let log = d
        .state
        .join("log")
        .join(Path::new(&drv).file_name().unwrap());
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), n);
    let rss = peak_rss_kb(d.pid());
    eprintln!(
        "a client that never reads a {n}-line build: built in {took:?}, daemon VmHWM {before} kB at start, {rss} kB after"
    );
    assert!(rss < MAX_RSS_KB, "{rss} kB");
    // When the client reads at last, it gets the start, the lines that fit,
    // the count of those dropped, the end and the results: nothing else
    // was lost.
    let (mut r, _w) = raw;
    let (started, lines, notice, finished, done) = rt.block_on(async {
        let (mut started, mut lines, mut notice, mut finished) = (false, 0u64, None, false);
        loop {
            match r.message::<Response>().await.unwrap() {
                Response::Build(BuildEvent::Started { .. }) => started = true,
                Response::Build(BuildEvent::Log { line, .. }) if line.starts_with("ferry: ") => {
                    notice.get_or_insert_with(Vec::new).push(line)
                }
                Response::Build(BuildEvent::Log { .. }) => lines += 1,
                Response::Build(BuildEvent::Finished { ok, .. }) => finished = ok,
                Response::BuildDone { results } => {
                    break (started, lines, notice, finished, results)
                }
                other => panic!("{other:?}"),
            }
        }
    });
    // One count per stretch of lines dropped.
    let notices = notice.expect("a count of the dropped lines");
    let dropped: u64 = notices
        .iter()
        .map(|l| {
            l["ferry: ".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    eprintln!(
        "the slow client got {lines} lines and {} notice(s): {}",
        notices.len(),
        notices[0]
    );
    assert!(started && finished, "{notices:?}");
    assert_eq!(lines + dropped, n as u64);
    assert!(
        notices.iter().all(|l| l.contains("ferry log")),
        "{notices:?}"
    );
    assert_eq!(done[0].status, ferry_protocol::BuildStatus::Built);
    d.assert_verify_clean();
}

#[test]
fn max_log_size_kills_the_build() {
    if !prerequisites(&["root"]) {
        return;
    }
    let d = SharedDaemon::start(&["--max-log-size", "100000"]);
    let drv = d.add_drv(
        None,
        "too-loud",
        "yes 'too loud' | head -n 1000000; echo done > $out",
    );
    let out = d.build_as_root(&drv);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("log limit exceeded"), "{err}");
    assert!(!Path::new(&drv_out(&drv)).exists());
    let log = d
        .state
        .join("log")
        .join(Path::new(&drv).file_name().unwrap());
    assert!(fs::metadata(&log).unwrap().len() <= 100_000 + (64 << 10));
    d.assert_verify_clean();
}

#[test]
fn many_large_messages_at_once_wait_for_the_daemons_budget() {
    if !prerequisites(&["root"]) {
        return;
    }
    let attacker = User::attacker();
    let d = SharedDaemon::start(&[]);
    let before = peak_rss_kb(d.pid());
    // 12 connections each send a message of almost 16 MiB (the largest
    // accepted) at once.
    let text = "x".repeat((16 << 20) - 256);
    let rt = runtime();
    let n = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (mut r, mut w) = d.raw_as(&attacker).await;
            let text = text.clone();
            tasks.push(tokio::spawn(async move {
                w.send(&Request::AddText {
                    name: format!("big-{i}"),
                    text,
                    references: vec![],
                })
                .await
                .unwrap();
                matches!(r.message::<Response>().await, Ok(Response::Added { .. }))
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap() as usize;
        }
        ok
    });
    assert_eq!(n, 12);
    let rss = peak_rss_kb(d.pid());
    eprintln!("12 messages of 16 MiB at once: daemon VmHWM {before} kB at start, {rss} kB after");
    assert!(rss < 80 << 10, "{rss} kB");
}

#[test]
fn many_uploads_at_once_share_the_daemons_budget() {
    if !prerequisites(&["root"]) {
        return;
    }
    let attacker = User::attacker();
    let d = SharedDaemon::start(&[]);
    let before = peak_rss_kb(d.pid());
    // 24 connections each stream a 16 MiB NAR at once, in 1 MiB frames:
    // before the budget, 60 such uploads took the daemon to 740 MiB.
    let rt = runtime();
    let added = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..24u8 {
            let (mut r, mut w) = d.raw_as(&attacker).await;
            tasks.push(tokio::spawn(async move {
                let mut nar = Vec::new();
                ferry_formats::nar::dump_bytes(&vec![i; 16 << 20], false, &mut nar).unwrap();
                w.message(&Request::AddToStore {
                    name: format!("upload-{i}"),
                })
                .await
                .unwrap();
                w.data(&nar).await.unwrap();
                w.end().await.unwrap();
                w.flush().await.unwrap();
                matches!(r.message::<Response>().await, Ok(Response::Added { .. }))
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap() as usize;
        }
        ok
    });
    assert_eq!(added, 24);
    let rss = peak_rss_kb(d.pid());
    eprintln!("24 uploads of 16 MiB at once: daemon VmHWM {before} kB at start, {rss} kB after");
    assert!(rss < 160 << 10, "{rss} kB");
}
