//! Starting a builder and the running builder, however it was started: by
//! std/tokio (an unprivileged daemon's builders, a build user without
//! namespaces) or cloned straight into a root daemon's sandbox or private
//! overlay store (`spawn.rs`). The build loop waits for it, kills it and
//! asks its pid the same way in every case.

use std::collections::BTreeMap;
use std::io::{self, PipeWriter};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use crate::sandbox::Sandbox;
use crate::spawn::{ClonedChild, Exec};
use crate::unsandboxed::{self, PrivateStore};

/// How a builder runs.
pub(crate) enum How<'a> {
    /// In this sandbox.
    Sandbox(&'a Sandbox),
    /// As a root daemon's build user without the sandbox: with `private` =
    /// (the overlay store, the build dir, its parent) in its own mount and
    /// PID namespaces ([`crate::unsandboxed::Mode::Overlay`]), else
    /// directly in the store.
    BuildUser {
        store_dir: &'a Path,
        private: Option<(&'a PrivateStore, &'a Path, &'a Path)>,
        cwd: &'a Path,
        ids: (u32, u32),
        max_processes: u64,
    },
    /// As this (unprivileged) process's user, in `cwd`.
    Plain { cwd: &'a Path },
}

/// Starts `program`: cloned without copying the daemon where it can be
/// (a root daemon's sandbox or overlay store, `spawn.rs`), else through std.
pub(crate) async fn start(
    program: &str,
    args: &[String],
    env: BTreeMap<String, String>,
    output: PipeWriter,
    how: How<'_>,
    linux32: bool,
) -> io::Result<Running> {
    let direct = crate::spawn::supported();
    match how {
        How::Sandbox(sb) if sb.spawns_directly() => {
            let exec = Exec::new(program, args, &env, output)?;
            Ok(Running::Cloned(sb.spawn(exec).await?))
        }
        How::BuildUser {
            store_dir,
            private: Some(private),
            ids,
            max_processes,
            ..
        } if direct => {
            let exec = Exec::new(program, args, &env, output)?;
            let child = unsandboxed::spawn(exec, store_dir, private, ids, max_processes, linux32);
            Ok(Running::Cloned(child.await?))
        }
        How::Sandbox(sb) => {
            let mut cmd = command(program, args, env, output)?;
            sb.configure(&mut cmd);
            spawn(cmd)
        }
        How::BuildUser {
            store_dir,
            private,
            cwd,
            ids,
            max_processes,
        } => {
            let mut cmd = command(program, args, env, output)?;
            cmd.current_dir(cwd);
            unsandboxed::configure(
                &mut cmd,
                store_dir,
                private,
                Some(ids),
                max_processes,
                linux32,
            )?;
            // Its own process group, so a timeout can kill all it started.
            cmd.process_group(0);
            spawn(cmd)
        }
        How::Plain { cwd } => {
            let mut cmd = command(program, args, env, output)?;
            cmd.current_dir(cwd);
            if linux32 {
                // SAFETY: one raw system call between fork and exec.
                unsafe {
                    cmd.pre_exec(|| match crate::systems::raw_set_linux32() {
                        -1 => Err(io::Error::last_os_error()),
                        _ => Ok(()),
                    });
                }
            }
            // Unlike a `pre_exec` hook (setsid), this lets std use
            // posix_spawn (vfork) instead of fork: no copy of the daemon's
            // page tables and no copy-on-write faults per build.
            cmd.process_group(0);
            spawn(cmd)
        }
    }
}

/// The builder's command for std: `program` with `args`, only `env`, stdin
/// `/dev/null`, stdout and stderr on `output`.
fn command(
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
fn spawn(cmd: Command) -> io::Result<Running> {
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map(Running::Std)
}

pub(crate) enum Running {
    Std(tokio::process::Child),
    Cloned(ClonedChild),
}

impl Running {
    pub(crate) fn id(&self) -> Option<u32> {
        match self {
            Running::Std(c) => c.id(),
            Running::Cloned(c) => Some(c.id()),
        }
    }

    /// Cancel-safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Running::Std(c) => c.wait().await,
            Running::Cloned(c) => c.wait().await,
        }
    }

    pub(crate) fn start_kill(&mut self) -> io::Result<()> {
        match self {
            Running::Std(c) => c.start_kill(),
            Running::Cloned(c) => c.start_kill(),
        }
    }
}
