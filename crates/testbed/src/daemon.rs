//! Each host's `ferry daemon`: started inside the host (namespaces, cgroup,
//! its FERRY_* environment), ready once its socket accepts connections (the
//! probe shows in daemon.log as one "handshake failed" line: it connects and
//! closes without speaking the protocol, which would need a client here).

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::procs::{self, Enter, Proc};
use crate::util::{tail, wait_until};

pub fn start(
    ferry: &Path,
    env: &[(String, String)],
    socket: &Path,
    slots: usize,
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
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    enter.apply(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} daemon", ferry.display()))?;
    let proc_ = Proc::of(child.id() as i32).context("the daemon exited at once")?;
    let mut exited = None;
    let ready = wait_until(Duration::from_secs(10), || {
        if let Ok(Some(st)) = child.try_wait() {
            exited = Some(st);
            return true;
        }
        UnixStream::connect(socket).is_ok()
    });
    if let Some(st) = exited {
        bail!(
            "`ferry daemon --listen {}` exited with {st}; {}:\n{}",
            socket.display(),
            log.display(),
            tail(log, 15)
        );
    }
    procs::adopt(child);
    if !ready {
        bail!(
            "`ferry daemon` did not accept connections on {} within 10 s; {}:\n{}",
            socket.display(),
            log.display(),
            tail(log, 15)
        );
    }
    Ok(proc_)
}
