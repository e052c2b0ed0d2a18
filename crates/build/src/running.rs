//! A running builder, however it was started: by std/tokio (`--no-sandbox`,
//! an unprivileged daemon's user-namespace sandbox) or cloned straight into
//! a root daemon's sandbox (`sandbox/spawn.rs`). The build loop waits for
//! it, kills it and asks its pid the same way in both cases.

use std::collections::BTreeMap;
use std::io::{self, PipeWriter};
use std::process::{Command, ExitStatus, Stdio};

use crate::sandbox::SandboxedChild;

/// The builder's command for std: `program` with `args`, only `env`, stdin
/// `/dev/null`, stdout and stderr on `output`.
pub(crate) fn command(
    program: &str,
    args: &[String],
    env: BTreeMap<String, String>,
    output: PipeWriter,
) -> io::Result<Command> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output);
    Ok(cmd)
}

/// Starts a configured command; dropped, it is killed.
pub(crate) fn spawn(cmd: Command) -> io::Result<Running> {
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map(Running::Std)
}

pub(crate) enum Running {
    Std(tokio::process::Child),
    Sandboxed(SandboxedChild),
}

impl Running {
    pub(crate) fn id(&self) -> Option<u32> {
        match self {
            Running::Std(c) => c.id(),
            Running::Sandboxed(c) => Some(c.id()),
        }
    }

    /// Cancel-safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Running::Std(c) => c.wait().await,
            Running::Sandboxed(c) => c.wait().await,
        }
    }

    pub(crate) fn start_kill(&mut self) -> io::Result<()> {
        match self {
            Running::Std(c) => c.start_kill(),
            Running::Sandboxed(c) => c.start_kill(),
        }
    }
}
