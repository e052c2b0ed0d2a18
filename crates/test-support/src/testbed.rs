//! The harness of the tests that bring a testbed up (crates/testbed/tests):
//! whether one can be brought up here, testbeds of N hosts, machines.scm
//! edits, the master's daemon, builds through it, and waits on processes.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferry_testbed::{Host, Options, Testbed};

use crate::prereq::gate;
use crate::process::ferry_bin;
pub use crate::process::{output_within, output_within_or, spawn, stderr, wait_for, Reap};

/// True when a testbed can be brought up here. When not: panics if the
/// environment variable CI is set, else prints a skip notice and returns
/// false (the test should return early).
pub fn prerequisites() -> bool {
    gate(
        "the testbed needs",
        &ferry_testbed::support::missing(),
        ".ci/run installs openssh-server, iproute2, nftables and util-linux and runs tests as root",
    )
}

/// Run with no standard input; the output whatever the status.
pub fn run(cmd: &mut Command) -> Output {
    crate::process::run(cmd, None)
}

/// Run and insist on success.
pub fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A testbed of `hosts` hosts with `slots` slots each and stores of
/// `store_size`, under a temporary directory (kept as long as the guard).
pub fn testbed(hosts: usize, slots: usize, store_size: &str) -> (tempfile::TempDir, Testbed) {
    testbed_with(hosts, |opts| {
        opts.slots = slots;
        opts.store_size = store_size.into();
    })
}

/// A testbed of `hosts` hosts under a temporary directory (kept as long as
/// the guard), its options (the ferry binary already set) changed by `set`
/// before it comes up.
pub fn testbed_with(hosts: usize, set: impl FnOnce(&mut Options)) -> (tempfile::TempDir, Testbed) {
    let tmp = tempfile::Builder::new()
        .prefix("ferry-offload-test-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut opts = Options::new(tmp.path().join("tb"), hosts);
    opts.ferry = Some(ferry_bin().to_path_buf());
    set(&mut opts);
    let tb = Testbed::up(opts).unwrap();
    (tmp, tb)
}

/// The master's configuration directory (machines.scm, keys, ACL).
pub fn master_config(tb: &Testbed) -> PathBuf {
    let env = tb.master_env();
    PathBuf::from(&env.iter().find(|(k, _)| k == "FERRY_CONFIG_DIR").unwrap().1)
}

/// machines.scm with the first machine given the second one's host key (a
/// host key mismatch for the first).
pub fn swap_first_host_key(tb: &Testbed) {
    let file = tb.machines_file();
    let good = std::fs::read_to_string(&file).unwrap();
    let keys: Vec<&str> = good
        .lines()
        .filter_map(|l| l.trim().strip_prefix("(host-key \""))
        .map(|k| k.trim_end_matches("\")"))
        .collect();
    std::fs::write(&file, good.replacen(keys[0], keys[1], 1)).unwrap();
}

/// Rewrite one host's entry of machines.scm.
pub fn edit_machine(tb: &Testbed, host: &Host, f: impl FnOnce(&str) -> String) {
    let file = tb.machines_file();
    let text = std::fs::read_to_string(&file).unwrap();
    let start = text
        .find(&format!("(name \"{}\")", host.address()))
        .unwrap_or_else(|| panic!("{} not in {text}", host.address()));
    let start = text[..start].rfind("(build-machine").unwrap();
    let end = start
        + text[start..]
            .find("\n (build-machine")
            .unwrap_or(text.len() - start - 2);
    let new = format!("{}{}{}", &text[..start], f(&text[start..end]), &text[end..]);
    std::fs::write(&file, new).unwrap();
}

/// `ferry build FILE ARGS` (embedded master) with `scm` as the build file.
pub fn build_cmd(tb: &Testbed, name: &str, scm: &str, args: &[&str]) -> Command {
    // Beside the testbed directory (`down` removes only what it made).
    let file = tb.dir().parent().unwrap().join(format!("{name}.scm"));
    std::fs::write(&file, scm).unwrap();
    let mut c = tb.master_command(ferry_bin().to_str().unwrap());
    c.arg("build").args(args).arg(&file);
    c
}

/// (derivation name, machine) of every "building '…' on '…'" line.
pub fn placements(stderr: &str) -> Vec<(String, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("building '")?;
            // A local build is "building 'DRV'...".
            if let Some(drv) = rest.strip_suffix("'...") {
                if !drv.contains('\'') {
                    return Some((drv.to_string(), "localhost".to_string()));
                }
            }
            let (drv, rest) = rest.split_once("' on '")?;
            let (machine, _) = rest.split_once('\'')?;
            Some((drv.to_string(), machine.to_string()))
        })
        .collect()
}

pub fn machines_used(stderr: &str) -> Vec<String> {
    placements(stderr).into_iter().map(|(_, m)| m).collect()
}

/// `n` independent derivations `PREFIX-i`, each running `script` then
/// writing its name to $out; `env` adds entries to the environment alist,
/// `extra` keyword arguments.
pub fn independent(prefix: &str, n: usize, script: &str, env: &str, extra: &str) -> String {
    let mut out = String::from("(list\n");
    for i in 0..n {
        out.push_str(&format!(
            " (derivation \"{prefix}-{i}\" #:builder \"/bin/sh\" {extra}\n   #:env '((\"PATH\" . \"/bin:/usr/bin\") {env})\n   #:args '(\"-c\" \"{script} echo {prefix}-{i} > $out\"))\n"
        ));
    }
    out.push_str(")\n");
    out
}

pub fn verify_stores(tb: &Testbed) {
    ok(tb
        .master_command(ferry_bin().to_str().unwrap())
        .args(["store", "verify"]));
    for h in tb.hosts() {
        ok(h.exec("ferry").unwrap().args(["store", "verify"]));
    }
}

/// Processes of `host` whose command line contains `marker`.
/// Builders running on the host: processes whose command line holds
/// `marker`, not counting those whose parent holds it too (the builder's
/// shell forks before it execs `sleep`; for that instant the child still
/// has the shell's command line and is not a second build).
pub fn count_marked(host: &Host, marker: &str) -> usize {
    let marked = |p: i32| {
        std::fs::read(format!("/proc/{p}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
    };
    let parent = |p: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    host.pids()
        .into_iter()
        .filter(|&p| marked(p) && !parent(p).is_some_and(marked))
        .count()
}

/// The master's `ferry daemon` (-j 1 unless told otherwise), its log beside the testbed
/// directory; killed and reaped when dropped.
pub struct MasterDaemon {
    pub child: Reap,
    pub socket: PathBuf,
}

impl MasterDaemon {
    pub fn start(tb: &Testbed) -> MasterDaemon {
        Self::start_with(tb, &[])
    }

    /// With more `ferry daemon` flags.
    pub fn start_with(tb: &Testbed, args: &[&str]) -> MasterDaemon {
        let socket = PathBuf::from(master_var(tb, "FERRY_DAEMON_SOCKET"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(tb.dir().parent().unwrap().join("master-daemon.log"))
            .unwrap();
        let child = Reap(
            tb.master_command(ferry_bin().to_str().unwrap())
                .arg("daemon")
                .args(
                    (!args
                        .iter()
                        .any(|a| *a == "-j" || a.starts_with("--max-jobs")))
                    .then_some(["-j", "1"])
                    .into_iter()
                    .flatten(),
                )
                .args(args)
                .env(
                    "FERRY_LOG",
                    std::env::var("FERRY_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        wait_for("the master daemon", Duration::from_secs(10), || {
            UnixStream::connect(&socket).is_ok()
        });
        MasterDaemon { child, socket }
    }
}

/// One variable of the master's environment.
pub fn master_var(tb: &Testbed, name: &str) -> String {
    tb.master_env()
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("{name} not in the master's environment"))
        .1
}

/// Make `host` trust the master's signing key, or stop trusting it
/// (`ferry archive --authorize` / `--deauthorize` run there).
pub fn set_master_trusted(tb: &Testbed, host: &Host, trusted: bool) {
    let master_key = std::fs::read(master_config(tb).join("signing-key.pub")).unwrap();
    let mut cmd = host.exec("ferry").unwrap();
    cmd.args([
        "archive",
        if trusted {
            "--authorize"
        } else {
            "--deauthorize"
        },
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &master_key).unwrap();
    assert!(child.wait().unwrap().success());
}

/// Given to machines that only take derivations requiring feature
/// "remote" (so the master never builds them itself), with no SSH
/// compression (the data is random; the test binaries are unoptimized, and
/// zlib would be most of a test's time). Replaces `(parallel-builds`.
pub const REMOTE_ONLY: &str =
    "(features (list \"remote\"))\n  (compression \"none\")\n  (parallel-builds";

/// Two remote-only hosts; h1 reached through a byte proxy (faults on
/// demand) and twice as fast, so builds go there first.
pub fn proxied_pair(store_size: &str) -> (tempfile::TempDir, Testbed, ferry_testbed::proxy::Proxy) {
    let (tmp, tb) = testbed(2, 1, store_size);
    let h1 = &tb.hosts()[0];
    let proxy = ferry_testbed::proxy::Proxy::start(format!("{}:22", h1.address()).parse().unwrap())
        .unwrap();
    let port = proxy.addr().port();
    edit_machine(&tb, h1, |m| {
        m.replace(
            &format!("(name \"{}\")", h1.address()),
            "(name \"127.0.0.1\")",
        )
        .replace("(port 22)", &format!("(port {port})"))
        .replace("(speed 1.0)", "(speed 2.0)")
        .replace("(parallel-builds", REMOTE_ONLY)
    });
    edit_machine(&tb, &tb.hosts()[1], |m| {
        m.replace("(parallel-builds", REMOTE_ONLY)
    });
    (tmp, tb, proxy)
}

/// `bytes` of random data in a new file `path`.
pub fn random_file(path: &std::path::Path, bytes: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    std::io::copy(
        &mut std::io::Read::take(std::fs::File::open("/dev/urandom").unwrap(), bytes),
        &mut f,
    )
    .unwrap();
}
