//! The testbed as offload's tests will use it: three hosts with real sshd,
//! separate stores and daemons; faults with their observed effects; and
//! nothing left behind by `down`. Needs root, iproute2, nftables, OpenSSH
//! and util-linux: skipped with a notice without them, never in CI.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_test_support::ferry_bin;
use ferry_test_support::testbed::{self as common, prerequisites};
use ferry_testbed::{Options, Testbed};

fn options(tmp: &tempfile::TempDir, hosts: usize) -> Options {
    let mut o = Options::new(tmp.path().join("tb"), hosts);
    o.ferry = Some(ferry_bin().to_path_buf());
    o.store_size = "64M".into();
    o
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ferry-testbed-test-")
        .tempdir_in("/tmp")
        .unwrap()
}

/// Run and insist on success; stdout, trimmed.
fn ok(cmd: &mut Command) -> String {
    let out = common::ok(cmd);
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Run and return (stdout, stderr), or None if it was still running after
/// `limit` (then it is killed): a hung connection.
fn run_within(cmd: &mut Command, limit: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

/// A file in the host's home (visible inside it), added to its store.
fn add_to_store(host: &ferry_testbed::Host, name: &str, contents: &str) -> Output {
    let file = host.state_dir().parent().unwrap().join("home").join(name);
    std::fs::write(&file, contents).unwrap();
    common::run(
        host.exec("ferry")
            .unwrap()
            .args(["store", "add"])
            .arg(&file),
    )
}

struct Leftovers {
    dir: PathBuf,
    tag: String,
    pids: Vec<i32>,
    netns: Vec<String>,
    veths: Vec<String>,
    cgroup: Option<PathBuf>,
}

impl Leftovers {
    fn of(tb: &Testbed) -> Leftovers {
        let st = tb.state();
        Leftovers {
            dir: tb.dir().to_path_buf(),
            tag: st.tag.clone(),
            pids: tb.recorded_pids(),
            netns: st.hosts.iter().map(|h| h.netns.clone()).collect(),
            veths: st.hosts.iter().map(|h| h.veth.clone()).collect(),
            cgroup: st.cgroup.clone(),
        }
    }

    /// After `down`: no process, mount, namespace, veth, cgroup or file.
    fn assert_none(&self) {
        let dir = self.dir.to_string_lossy().into_owned();
        for pid in &self.pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(&dir),
                "recorded process {pid} is still running"
            );
        }
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.parse::<i32>().is_err() {
                continue;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(
                !cmdline.contains(&dir),
                "process {name} of the testbed is left: {cmdline}"
            );
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(&dir),
            "mounts of the testbed are left:\n{}",
            mountinfo
                .lines()
                .filter(|l| l.contains(&dir))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let netns = ok(Command::new("ip").args(["netns", "list"]));
        for n in &self.netns {
            assert!(!netns.contains(n.as_str()), "network namespace {n} is left");
        }
        assert!(!netns.contains(&format!("ferry-tb-{}-", self.tag)));
        let links = ok(Command::new("ip").args(["-o", "link", "show"]));
        for v in &self.veths {
            assert!(!links.contains(v.as_str()), "veth {v} is left");
        }
        if let Some(cg) = &self.cgroup {
            assert!(!cg.exists(), "cgroup {} is left", cg.display());
        }
        assert!(!self.dir.exists(), "{} is left", self.dir.display());
    }
}

#[test]
fn three_hosts_ssh_separate_stores_pinned_keys_and_clean_down() {
    if !prerequisites() {
        return;
    }
    let tmp = tmp();
    let mut opts = options(&tmp, 3);
    opts.slots = 2;
    opts.speeds = vec![1.0, 2.0, 1.5];
    let tb = Testbed::up(opts).unwrap();
    let dir = tb.dir().to_path_buf();
    let store = dir.join("store");

    // ssh with the client key and pinned host keys reaches each host, where
    // ferry runs with that host's store and state
    for h in tb.hosts() {
        let out = ok(&mut h.ssh_command(
            "ferry --version && echo $FERRY_TESTBED_HOST $FERRY_STORE_DIR $FERRY_STATE_DIR",
        ));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ferry "), "{out}");
        assert_eq!(
            lines[1],
            format!(
                "{} {} {}",
                h.name(),
                store.display(),
                h.state_dir().display()
            )
        );
        // the daemon listens
        UnixStream::connect(h.daemon_socket()).unwrap();
    }

    // machines.scm loads, with the real host keys, slots and speeds
    let json = ok(tb
        .master_command("ferry")
        .args(["offload", "machines", "--json"])
        .arg(dir.join("machines.scm")));
    let machines: serde_json::Value = serde_json::from_str(&json).unwrap();
    let machines = machines.as_array().unwrap();
    assert_eq!(machines.len(), 3);
    for (m, (h, speed)) in machines.iter().zip(tb.hosts().iter().zip([1.0, 2.0, 1.5])) {
        assert_eq!(m["name"], h.address());
        assert_eq!(m["hostKey"].as_str().unwrap(), h.host_key());
        assert_eq!(m["parallelBuilds"], 2);
        assert_eq!(m["speed"].as_f64().unwrap(), speed);
        assert_eq!(m["user"], "root");
        assert_eq!(
            m["daemonSocket"].as_str().unwrap(),
            h.daemon_socket().to_str().unwrap()
        );
        let host_key_file = std::fs::read_to_string(
            h.state_dir()
                .parent()
                .unwrap()
                .join("ssh/ssh_host_ed25519_key.pub"),
        )
        .unwrap();
        assert_eq!(host_key_file.trim(), h.host_key());
    }
    // the default machines file of the master's configuration is the same
    ok(tb.master_command("ferry").args(["offload", "machines"]));

    // keys authorized both ways
    let master_key = std::fs::read_to_string(dir.join("master/config/signing-key.pub")).unwrap();
    let master_key = ferry_trust::PublicKey::parse(&master_key).unwrap();
    let master_acl = ferry_trust::Acl::load(&dir.join("master/config")).unwrap();
    for h in tb.hosts() {
        let key = std::fs::read_to_string(h.config_dir().join("signing-key.pub")).unwrap();
        assert!(master_acl.contains(&ferry_trust::PublicKey::parse(&key).unwrap()));
        assert!(ferry_trust::Acl::load(&h.config_dir())
            .unwrap()
            .contains(&master_key));
    }

    // a path added to h1's store is in h1's store only
    let h1 = &tb.hosts()[0];
    let out = add_to_store(h1, "only-on-h1", "h1's own file\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(path.starts_with(&format!("{}/", store.display())), "{path}");
    ok(h1.exec("test").unwrap().args(["-f", &path]));
    ok(h1
        .exec("ferry")
        .unwrap()
        .args(["store", "path-info", &path]));
    assert!(h1
        .store_view()
        .join(Path::new(&path).file_name().unwrap())
        .exists());
    for h in &tb.hosts()[1..] {
        assert!(!common::run(h.exec("test").unwrap().args(["-e", &path]))
            .status
            .success());
        let info = common::run(h.exec("ferry").unwrap().args(["store", "path-info", &path]));
        assert!(!info.status.success(), "{} has {path}", h.name());
        assert!(!h
            .store_view()
            .join(Path::new(&path).file_name().unwrap())
            .exists());
    }
    assert!(!Path::new(&path).exists(), "the master's store has {path}");
    let info = common::run(
        tb.master_command("ferry")
            .args(["store", "path-info", &path]),
    );
    assert!(!info.status.success(), "the master's database has {path}");

    // pinning: a known_hosts file with another host's key for h1 is refused
    let h2 = &tb.hosts()[1];
    let wrong = dir.join("master/ssh/wrong_known_hosts");
    std::fs::write(&wrong, format!("{} {}\n", h1.address(), h2.host_key())).unwrap();
    let mut cmd = h1.ssh_command("true");
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .map(|a| {
            if a.starts_with("UserKnownHostsFile=") {
                format!("UserKnownHostsFile={}", wrong.display())
            } else {
                a
            }
        })
        .collect();
    cmd = Command::new("ssh");
    cmd.args(&args);
    let out = common::run(&mut cmd);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Host key verification failed") || err.contains("IDENTIFICATION HAS CHANGED"),
        "{err}"
    );

    let left = Leftovers::of(&tb);
    assert_eq!(left.pids.len(), 6);
    tb.down().unwrap();
    left.assert_none();
    // down again: nothing to do, no error
    assert!(!Testbed::down_dir(&dir).unwrap());
}

#[test]
fn faults_stop_cut_fill_kill_have_their_effects() {
    if !prerequisites() {
        return;
    }
    let tmp = tmp();
    let tb = Testbed::up(options(&tmp, 3)).unwrap();
    let [h1, h2, h3] = [&tb.hosts()[0], &tb.hosts()[1], &tb.hosts()[2]];

    // stop: an ssh connection hangs; the other hosts still answer; cont
    let stopped = h1.stop().unwrap();
    assert!(stopped.len() >= 2, "{stopped:?}");
    assert!(
        run_within(&mut h1.ssh_command("true"), Duration::from_secs(2)).is_none(),
        "ssh to a stopped host finished"
    );
    ok(&mut h3.ssh_command("true"));
    h1.cont().unwrap();
    ok(&mut h1.ssh_command("true"));

    // cut: new connections time out, an established one hangs; heal
    let addr: SocketAddr = format!("{}:22", h2.address()).parse().unwrap();
    let mut established = TcpStream::connect(addr).unwrap();
    established
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut banner = [0u8; 4];
    established.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-");
    h2.cut().unwrap();
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    established.write_all(b"SSH-2.0-test\r\n").unwrap();
    let mut buf = [0u8; 64];
    established
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    loop {
        // anything sent before the cut may still arrive; then it hangs
        match established.read(&mut buf) {
            Ok(n) if n > 0 => continue,
            Ok(_) => panic!("the connection was closed, not hung"),
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "{e}"
                );
                break;
            }
        }
    }
    if let Some(out) = run_within(&mut h2.ssh_command("true"), Duration::from_millis(1500)) {
        panic!("ssh to a cut host finished: {out:?}");
    }
    h2.heal().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap();
    ok(&mut h2.ssh_command("true"));

    // fill: writes in h3's store fail with ENOSPC; others are unaffected
    let filled = h3.fill().unwrap();
    assert!(filled > 60 << 20, "filler of {filled} bytes in a 64M store");
    let out = add_to_store(h3, "small", "a small file\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left"), "{err}");
    let out = add_to_store(h1, "small", "a small file\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h3.unfill().unwrap();
    let out = add_to_store(h3, "small", "a small file\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap().trim().to_string();

    // kill-daemon: the socket refuses; start-daemon: same store and state
    let old = h3.current().unwrap().daemon.unwrap();
    h3.kill_daemon().unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", old.pid)).exists()
            || !old.is_ours(&tb.dir().to_string_lossy())
    );
    assert!(UnixStream::connect(h3.daemon_socket()).is_err());
    assert!(
        h3.kill_daemon().is_err(),
        "killing a dead daemon must say so"
    );
    let pid = h3.start_daemon().unwrap();
    assert_ne!(pid, old.pid);
    UnixStream::connect(h3.daemon_socket()).unwrap();
    ok(h3
        .exec("ferry")
        .unwrap()
        .args(["store", "path-info", &path]));

    let left = Leftovers::of(&tb);
    assert!(left.pids.contains(&pid));
    // down with a host stopped and another cut still works
    h1.stop().unwrap();
    h2.cut().unwrap();
    tb.down().unwrap();
    left.assert_none();
}

#[test]
fn two_testbeds_coexist_and_rate_limits_the_link() {
    if !prerequisites() {
        return;
    }
    let (t1, t2) = (tmp(), tmp());
    let mut o = options(&t1, 1);
    o.rate_mbit = Some(100);
    let a = Testbed::up(o).unwrap();
    let b = Testbed::up(options(&t2, 1)).unwrap();
    let (ha, hb) = (&a.hosts()[0], &b.hosts()[0]);
    assert_ne!(ha.address(), hb.address());
    assert_ne!(ha.netns(), hb.netns());
    ok(&mut ha.ssh_command("true"));
    ok(&mut hb.ssh_command("true"));
    let qdisc = ok(Command::new("tc").args(["qdisc", "show", "dev", ha.veth()]));
    assert!(
        qdisc.contains("tbf") && qdisc.contains("100Mbit"),
        "{qdisc}"
    );
    let inner = ok(Command::new("tc").args(["-n", ha.netns(), "qdisc", "show", "dev", "eth0"]));
    assert!(inner.contains("tbf"), "{inner}");
    let plain = ok(Command::new("tc").args(["qdisc", "show", "dev", hb.veth()]));
    assert!(!plain.contains("tbf"), "{plain}");
    // dropping a testbed brings it down
    let left = Leftovers::of(&b);
    drop(b);
    left.assert_none();
    let left = Leftovers::of(&a);
    drop(a);
    left.assert_none();
}

#[test]
fn cli_needs_root_and_says_so() {
    let bin = env!("CARGO_BIN_EXE_ferry-testbed");
    let mut cmd = if ferry_test_support::is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
        c
    } else {
        Command::new(bin)
    };
    let out = common::run(cmd.args(["up", "--dir", "/tmp/ferry-testbed-never", "--hosts", "1"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ferry-testbed needs root (it creates network namespaces, veth pairs and mounts); run it with sudo"),
        "{err}"
    );
    assert!(!Path::new("/tmp/ferry-testbed-never").exists());
}
