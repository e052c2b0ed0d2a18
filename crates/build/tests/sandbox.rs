//! Sandbox tests: they run builders for real, so they need root or
//! unprivileged user namespaces. Without either they print a skip notice,
//! except under CI (env `CI` set), where they fail. The fixture is
//! ferry-test-support's `sandbox` module.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_build::sandbox::{self, HostPath, Sandbox, SandboxSpec, SETUP_FAILED_EXIT_CODE};
use ferry_test_support::process::cmdline;
use ferry_test_support::sandbox::*;
use ferry_test_support::{self as support, is_root};

fn mountinfo_mentions(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.contains(path.to_str().unwrap())
}

/// Live `sleep` processes whose command line contains `marker`.
fn sleeps_with(marker: &str) -> usize {
    processes_with(marker)
        .iter()
        .filter(|p| p.contains(": sleep "))
        .count()
}

/// Live processes whose command line contains `marker`, as "PID: CMDLINE".
fn processes_with(marker: &str) -> Vec<String> {
    support::processes_with(marker)
        .into_iter()
        .map(|p| format!("{p}: {}", cmdline(p)))
        .collect()
}

/// Waits up to 5 s for no process to carry `marker`.
fn assert_no_process_with(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "build processes survived: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unique_marker() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("1000.{}{:03}", std::process::id(), n)
}

#[test]
fn sandbox_builds_an_output_from_an_input() {
    if !can_sandbox() {
        return;
    }
    let f = Fixture::new();
    let sb = Sandbox::prepare(f.spec()).unwrap();
    let script =
        format!("mkdir $out && cat {STORE}/{IN1}/data > $out/copy && echo built > $out/flag && chmod 555 $out");
    let r = run(&sb, &script, &[]);
    assert!(r.status.success(), "{} / {}", r.stdout, r.stderr);
    let staged = sb.staged_outputs().unwrap();
    assert_eq!(staged.len(), 1);
    assert_eq!(staged[0].1, f.store().join(OUT));
    assert!(staged[0].0.starts_with(sb.root()), "staged in the chroot");
    let copy = std::fs::read_to_string(staged[0].0.join("copy")).unwrap();
    assert_eq!(copy, format!("contents of {IN1}\n"));
    let root = sb.root().to_path_buf();
    sb.destroy().unwrap();
    assert!(!root.exists(), "chroot left behind");
    assert!(f.chroots().is_empty());
    assert!(!mountinfo_mentions(&root));
}

#[test]
fn sandbox_missing_output_is_not_collected() {
    if !can_sandbox() {
        return;
    }
    let f = Fixture::new();
    let sb = Sandbox::prepare(f.spec()).unwrap();
    assert!(run(&sb, "true", &[]).status.success());
    assert!(sb.staged_outputs().unwrap().is_empty());
    sb.destroy().unwrap();
}

#[test]
fn sandbox_hides_the_host() {
    if !can_sandbox() {
        return;
    }
    let f = Fixture::new();
    let sb = Sandbox::prepare(f.spec()).unwrap();
    let script = "
        ls /; echo ---; ls {STORE}; echo ---
        for p in \"$secret\" \"$real_store\" /root /home /var /sys /etc/shadow {STORE}/{OTHER}; do
            test -e \"$p\" && echo \"VISIBLE $p\"
        done
        cat /etc/passwd; readlink /bin; echo cwd=$(pwd)
        true";
    let script = script.replace("{STORE}", STORE).replace("{OTHER}", OTHER);
    let env = [
        ("secret", f.secret().display().to_string()),
        ("real_store", f.store().display().to_string()),
    ];
    let r = run(&sb, &script, &env);
    assert!(r.status.success(), "{} / {}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("VISIBLE"), "{}", r.stdout);
    let mut sections = r.stdout.split("---\n");
    let root: Vec<&str> = sections.next().unwrap().lines().collect();
    for entry in &root {
        let allowed = [
            "bin", "build", "dev", "etc", "ferry", "lib", "lib64", "proc", "tmp", "usr",
        ];
        assert!(allowed.contains(entry), "unexpected /{entry} in {root:?}");
    }
    let store: Vec<&str> = sections.next().unwrap().lines().collect();
    assert_eq!(store, vec![IN1, IN2]);
    assert!(r.stdout.contains(":30001:30001:"), "{}", r.stdout);
    assert!(r.stdout.contains("cwd=/build"), "{}", r.stdout);
    if std::fs::symlink_metadata("/bin")
        .unwrap()
        .file_type()
        .is_symlink()
    {
        let target = std::fs::read_link("/bin").unwrap();
        assert!(
            r.stdout.contains(&format!("\n{}\n", target.display())),
            "{}",
            r.stdout
        );
    }
    sb.destroy().unwrap();
}

#[test]
fn sandbox_contains_writes() {
    if !can_sandbox() {
        return;
    }
    let f = Fixture::new();
    let sb = Sandbox::prepare(f.spec()).unwrap();
    let marker = format!("ferry-sandbox-evil-{}", std::process::id());
    let must_fail = [
        format!("{STORE}/{IN1}/{marker}"),
        format!("/usr/bin/{marker}"),
        format!("/usr/lib/{marker}"),
        format!("/{marker}"),
        format!("/etc/{marker}"),
        format!("/dev/{marker}"),
    ];
    // Allowed inside, but nothing may reach the host.
    let contained = [format!("/tmp/{marker}"), format!("{STORE}/{marker}")];
    let mut script = String::new();
    for p in must_fail.iter().chain(&contained) {
        script += &format!(
            "if echo x > {p} 2>/dev/null; then echo WROTE {p}; else echo DENIED {p}; fi\n"
        );
    }
    script += &format!(
        "rm -rf {STORE}/{IN1} 2>/dev/null; test -e {STORE}/{IN1}/data && echo INPUT-INTACT\n"
    );
    let r = run(&sb, &script, &[]);
    for p in &must_fail {
        assert!(r.stdout.contains(&format!("DENIED {p}\n")), "{}", r.stdout);
    }
    for p in &contained {
        assert!(r.stdout.contains(&format!("WROTE {p}\n")), "{}", r.stdout);
    }
    assert!(r.stdout.contains("INPUT-INTACT"), "{}", r.stdout);
    assert!(sb.staged_outputs().unwrap().is_empty());
    sb.destroy().unwrap();
    let host = [
        f.store().join(IN1).join(&marker),
        PathBuf::from("/usr/bin").join(&marker),
        PathBuf::from("/usr/lib").join(&marker),
        PathBuf::from("/").join(&marker),
        PathBuf::from("/etc").join(&marker),
        PathBuf::from("/dev").join(&marker),
        PathBuf::from("/tmp").join(&marker),
        f.store().join(&marker),
        PathBuf::from(STORE).join(&marker),
    ];
    for p in host {
        assert!(!p.exists(), "{} appeared on the host", p.display());
    }
    assert!(f.store().join(IN1).join("data").exists());
    assert!(f.chroots().is_empty());
}

#[test]
fn sandbox_has_no_network() {
    if !can_sandbox() {
        return;
    }
    let f = Fixture::new();
    let sb = Sandbox::prepare(f.spec()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let perl = Path::new("/usr/bin/perl").exists();
    let mut script = String::from("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; echo ---\n");
    if perl {
        script += r#"perl -MIO::Socket::INET -e '
            for my $a ("127.0.0.1:$ENV{port}", "1.1.1.1:53", "8.8.8.8:443") {
                my $s = IO::Socket::INET->new(PeerAddr => $a, Timeout => 2);
                print $s ? "CONNECTED $a\n" : "FAILED $a: $!\n";
            }'"#;
    }
    let r = run(&sb, &script, &[("port", port)]);
    assert!(r.status.success(), "{} / {}", r.stdout, r.stderr);
    let interfaces: Vec<&str> = r.stdout.split("---\n").next().unwrap().lines().collect();
    assert_eq!(interfaces, vec!["lo"]);
    if perl {
        assert!(!r.stdout.contains("CONNECTED"), "{}", r.stdout);
        assert_eq!(
            r.stdout.matches("FAILED").count(),
            3,
            "{} / {}",
            r.stdout,
            r.stderr
        );
    } else {
        eprintln!("note: no /usr/bin/perl; connection attempts not tested");
    }
    let accepted = listener.accept();
    assert!(
        accepted.is_err(),
        "the host listener received a connection from the sandbox"
    );
    sb.destroy().unwrap();
}

#[test]
fn sandbox_has_own_pids_hostname_and_uid() {
    if !can_sandbox() {
        return;
    }
    let f = Fixture::new();
    let sb = Sandbox::prepare(f.spec()).unwrap();
    let script = "echo pid=$$; cat /proc/sys/kernel/hostname; id -u; id -g; ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '";
    let r = run(&sb, script, &[]);
    assert!(r.status.success(), "{} / {}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[..4],
        ["pid=1", "localhost", "30001", "30001"],
        "{}",
        r.stdout
    );
    let pids: Vec<u32> = lines[4]
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        pids.iter().all(|&p| p < 10),
        "host processes visible: {pids:?}"
    );
    sb.destroy().unwrap();
}

#[test]
fn sandbox_kill_takes_the_whole_build() {
    if !can_sandbox() {
        return;
    }
    let f = Fixture::new();
    let sb = Sandbox::prepare(f.spec()).unwrap();
    let marker = unique_marker();
    let script = format!("sleep {marker} & sleep {marker} & echo started; wait");
    let mut child = sh(&sb, &script, &[])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sleeps_with(&marker), 2);
    assert!(
        !mountinfo_mentions(sb.root()),
        "sandbox mounts visible on the host"
    );
    child.kill().unwrap(); // SIGKILL to the pid the caller sees
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_no_process_with(&marker);
    sb.destroy().unwrap();
    assert!(f.chroots().is_empty());
}

#[test]
fn sandbox_dropped_while_running_kills_the_build() {
    if !can_sandbox() {
        return;
    }
    let f = Fixture::new();
    let sb = Sandbox::prepare(f.spec()).unwrap();
    let marker = unique_marker();
    let mut child = sh(&sb, &format!("sleep {marker}"), &[]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sleeps_with(&marker), 1);
    drop(sb);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    assert_no_process_with(&marker);
    assert!(f.chroots().is_empty());
}

/// Not a test by itself: the "daemon" of `sandbox_daemon_kill_9_*`, run in
/// a child process of the test binary.
#[test]
fn sandbox_fake_daemon() {
    let Some(dir) = std::env::var_os("FERRY_SANDBOX_FAKE_DAEMON") else {
        return;
    };
    let marker = std::env::var("FERRY_SANDBOX_MARKER").unwrap();
    let sb = Sandbox::prepare(spec_in(Path::new(&dir))).unwrap();
    let mut cmd = sh(&sb, &format!("sleep {marker} & wait"), &[]);
    let mut child = cmd.stdout(Stdio::null()).spawn().unwrap();
    println!("ready {}", child.id());
    // The test kills us with SIGKILL long before this returns.
    std::thread::sleep(Duration::from_secs(600));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sandbox_daemon_kill_9_leaves_no_build_and_stale_tree_is_removed() {
    if !can_sandbox() {
        return;
    }
    let f = Fixture::new();
    let marker = unique_marker();
    let mut daemon = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sandbox_fake_daemon",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FERRY_SANDBOX_FAKE_DAEMON", f.tmp.path())
        .env("FERRY_SANDBOX_MARKER", &marker)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(daemon.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "fake daemon exited early"
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sleeps_with(&marker), 1);
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    assert_no_process_with(&marker);
    assert_eq!(f.chroots().len(), 1, "the killed daemon's tree is stale");
    assert_eq!(sandbox::remove_stale_chroots(&f.store()).unwrap(), 1);
    assert!(f.chroots().is_empty());
    assert!(
        f.store().join(IN1).join("data").exists(),
        "stale cleanup touched an input"
    );
}

#[test]
fn sandbox_setup_failure_is_reported() {
    if !can_sandbox() {
        return;
    }
    let f = Fixture::new();
    let vanishing = f.tmp.path().join("vanishing");
    std::fs::create_dir(&vanishing).unwrap();
    let mut spec = f.spec();
    spec.host_paths.push(HostPath {
        inside: "/opt/thing".into(),
        host: vanishing.clone(),
        optional: false,
    });
    let sb = Sandbox::prepare(spec).unwrap();
    std::fs::remove_dir(&vanishing).unwrap();
    let out = sh(&sb, "echo should not run", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(SETUP_FAILED_EXIT_CODE));
    assert!(out.stdout.is_empty());
    let msg = sb.setup_failure().expect("a setup failure message");
    assert!(msg.contains("mount") && msg.contains("/opt/thing"), "{msg}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("setup failed"));
    sb.destroy().unwrap();
}

#[test]
fn sandbox_missing_required_host_path_fails_prepare() {
    let f = Fixture::new();
    let mut spec = f.spec();
    spec.host_paths = vec![
        HostPath::same("/nonexistent/ferry", false),
        HostPath::same("/nonexistent/opt", true),
    ];
    let err = Sandbox::prepare(spec).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ferry"), "{err}");
    assert!(f.chroots().is_empty(), "a failed prepare left its tree");
}

#[test]
fn sandbox_runs_the_host_c_compiler() {
    if !can_sandbox() {
        return;
    }
    if !Path::new("/usr/bin/cc").exists() {
        eprintln!("SKIPPED: no host cc");
        return;
    }
    let f = Fixture::new();
    let sb = Sandbox::prepare(f.spec()).unwrap();
    let script = "printf '#include <stdio.h>\\nint main(void){puts(\"hi\");return 0;}\\n' > t.c && cc -o t t.c && ./t";
    let r = run(&sb, script, &[]);
    assert!(r.status.success(), "{} / {}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "hi\n");
    sb.destroy().unwrap();
}

#[test]
fn sandbox_works_through_tokio() {
    if !can_sandbox() {
        return;
    }
    let f = Fixture::new();
    let sb = Sandbox::prepare(f.spec()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let cmd = tokio::process::Command::from(sh(&sb, "echo pid=$$", &[]));
        let mut cmd = cmd;
        cmd.output().await.unwrap()
    });
    assert!(out.status.success());
    assert_eq!(out.stdout, b"pid=1\n");
    sb.destroy().unwrap();
}

/// Per-build overhead: prepare + spawn + wait + collect + destroy of `true`,
/// against a plain spawn. Run with `--nocapture` to see the figures.
#[test]
fn sandbox_overhead() {
    if !can_sandbox() {
        return;
    }
    let runs = 100;
    let f = Fixture::new();
    let plain = time(runs, || {
        let st = Command::new("/bin/true").status().unwrap();
        assert!(st.success());
    });
    let avg = |d: Duration| d.as_secs_f64() * 1000.0 / runs as f64;
    let mode = if is_root() { "root" } else { "user namespace" };
    println!(
        "sandbox overhead ({mode}), {runs} runs of /bin/true: plain spawn {:.3} ms",
        avg(plain)
    );
    let mut big = f.spec();
    for i in 0..100 {
        let input = f.store().join(format!("{i:032}-extra-input"));
        std::fs::create_dir(&input).unwrap();
        big.inputs.push(input);
    }
    for (what, spec) in [("2 inputs", f.spec()), ("102 inputs", big)] {
        let phases = measure(runs, &spec);
        let total: Duration = phases.iter().sum();
        println!(
            "  {what}: sandboxed {:.3} ms = prepare {:.3} + spawn/setup/wait {:.3} + collect/destroy {:.3}; \
             overhead {:.3} ms",
            avg(total),
            avg(phases[0]),
            avg(phases[1]),
            avg(phases[2]),
            avg(total) - avg(plain),
        );
    }
}

/// Total time of each phase of `runs` sandboxed runs of `/bin/true`.
fn measure(runs: u32, spec: &SandboxSpec) -> [Duration; 3] {
    let mut phases = [Duration::ZERO; 3];
    for _ in 0..runs {
        let t = Instant::now();
        let sb = Sandbox::prepare(spec.clone()).unwrap();
        phases[0] += t.elapsed();
        let t = Instant::now();
        let mut cmd = Command::new("/bin/true");
        sb.configure(&mut cmd);
        assert!(cmd.status().unwrap().success());
        phases[1] += t.elapsed();
        let t = Instant::now();
        sb.staged_outputs().unwrap();
        sb.destroy().unwrap();
        phases[2] += t.elapsed();
    }
    phases
}

fn time(runs: u32, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..runs {
        f();
    }
    t.elapsed()
}
