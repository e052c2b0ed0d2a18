//! Each host's `ferry daemon`: started inside the host (namespaces, cgroup,
//! its FERRY_* environment), ready once its socket accepts connections (the
//! probe shows in daemon.log as one "handshake failed" line: it connects and
//! closes without speaking the protocol, which would need a client here).

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::procs::{Enter, Proc};
use crate::util::wait_ready;

pub fn start(
    ferry: &Path,
    env: &[(String, String)],
    socket: &Path,
    slots: usize,
    extra: &[String],
    log: &Path,
    enter: Enter,
) -> Result<Proc> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = Command::new(ferry);
    cmd.arg("daemon")
        .arg("--listen")
        .arg(socket)
        .args(["--max-jobs", &slots.to_string()])
        .args(extra)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    enter.apply(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} daemon", ferry.display()))?;
    let proc_ = Proc::of(child.id() as i32).context("the daemon exited at once")?;
    wait_ready(
        child,
        &format!("`ferry daemon --listen {}`", socket.display()),
        log,
        || UnixStream::connect(socket).is_ok(),
    )?;
    Ok(proc_)
}
