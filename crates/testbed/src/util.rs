//! Running commands with errors that name the command and quote its
//! stderr, and small file helpers.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// `program arg...` as a shell would show it (for messages).
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run to completion with stdin empty (or `input`); fail unless it exits 0,
/// naming the command and quoting its stderr.
pub fn run(cmd: &mut Command, input: Option<&[u8]>) -> Result<Output> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running `{}`", describe(cmd)))?;
    if let Some(data) = input {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(data)
            .with_context(|| format!("writing to `{}`", describe(cmd)))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `run` for a program and arguments.
pub fn run_args<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    run(Command::new(program).args(args), None)
}

/// Write a file with `mode`, replacing any earlier one.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn mkdirs(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Find a program in PATH, or in the sbin directories root's PATH has.
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Poll `ready` every 5 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: std::time::Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if ready() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Wait up to 10 s for a server just started to accept connections
/// (`probe`), handing the child to [`crate::procs::adopt`] either way. Fails,
/// with the tail of its log, if it exits first or never gets ready.
pub fn wait_ready(
    mut child: std::process::Child,
    what: &str,
    log: &Path,
    mut probe: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let mut exited = None;
    let ready = wait_until(std::time::Duration::from_secs(10), || {
        if let Ok(Some(st)) = child.try_wait() {
            exited = Some(st);
            return true;
        }
        probe()
    });
    if let Some(st) = exited {
        anyhow::bail!(
            "{what} exited with {st} before accepting connections; {}:\n{}",
            log.display(),
            tail(log, 15)
        );
    }
    crate::procs::adopt(child);
    if !ready {
        anyhow::bail!(
            "{what} did not accept connections within 10 s; {}:\n{}",
            log.display(),
            tail(log, 15)
        );
    }
    Ok(())
}
