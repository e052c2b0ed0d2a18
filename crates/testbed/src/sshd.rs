//! OpenSSH: key pairs (ssh-keygen), each host's sshd_config, starting sshd
//! in the host's namespaces and cgroup, and the ssh client options that pin
//! host keys.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::procs::{Enter, Proc};
use crate::util::{run, wait_ready, write_file};

pub const SSHD: &str = "/usr/sbin/sshd";

/// A new ed25519 key pair at `key` and `key`.pub; returns the public line.
pub fn keygen(key: &Path, comment: &str) -> Result<String> {
    let _ = fs::remove_file(key);
    let _ = fs::remove_file(key.with_extension("pub"));
    run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(key),
        None,
    )?;
    let pub_path = PathBuf::from(format!("{}.pub", key.display()));
    Ok(fs::read_to_string(&pub_path)
        .with_context(|| format!("reading {}", pub_path.display()))?
        .trim()
        .to_string())
}

/// What sshd needs to know about a host.
pub struct SshdConfig<'a> {
    pub address: &'a str,
    pub host_key: &'a Path,
    pub authorized_keys: &'a Path,
    pub pid_file: &'a Path,
    /// Environment of every session (SetEnv overrides sshd's defaults, HOME
    /// and PATH included): the host's FERRY_* and a home without dotfiles.
    pub env: &'a [(String, String)],
}

pub fn write_config(path: &Path, c: &SshdConfig) -> Result<()> {
    let env: Vec<String> = c.env.iter().map(|(k, v)| format!("\"{k}={v}\"")).collect();
    let text = format!(
        "# Written by ferry-testbed.\n\
         ListenAddress {addr}:22\n\
         HostKey {key}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {auth}\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         MaxStartups 100:30:200\n\
         MaxSessions 100\n\
         LogLevel VERBOSE\n\
         SetEnv {env}\n",
        addr = c.address,
        key = c.host_key.display(),
        pid = c.pid_file.display(),
        auth = c.authorized_keys.display(),
        env = env.join(" "),
    );
    write_file(path, text.as_bytes(), 0o644)
}

/// Start `sshd -D -e -f CONFIG` inside the host (its namespaces, cgroup and
/// a session of its own), logging to `log`; return once it accepts TCP
/// connections on `address`:22.
pub fn start(config: &Path, log: &Path, enter: Enter, address: &str) -> Result<Proc> {
    // the privilege separation directory, normally made by the init script
    fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = Command::new(SSHD);
    cmd.args(["-D", "-e", "-f"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    enter.apply(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {SSHD} -f {}", config.display()))?;
    let pid = child.id() as i32;
    let proc_ = Proc::of(pid).context("sshd exited at once")?;
    let addr: SocketAddr = format!("{address}:22").parse()?;
    wait_ready(
        child,
        &format!("sshd ({}) on {addr}", config.display()),
        log,
        || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
    )?;
    Ok(proc_)
}

/// ssh client options: the testbed's key only, host keys pinned to the
/// testbed's known_hosts file (no other file, no prompt), no agent or
/// user configuration, and a connect timeout.
pub fn client_args(key: &Path, known_hosts: &Path) -> Vec<String> {
    let mut v: Vec<String> = vec!["-F".into(), "/dev/null".into(), "-i".into()];
    v.push(key.display().to_string());
    for o in [
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".into(),
        "StrictHostKeyChecking=yes".into(),
        "IdentitiesOnly=yes".into(),
        "IdentityAgent=none".into(),
        "BatchMode=yes".into(),
        "ConnectTimeout=5".into(),
        "LogLevel=ERROR".into(),
    ] {
        v.push("-o".into());
        v.push(o);
    }
    v
}
