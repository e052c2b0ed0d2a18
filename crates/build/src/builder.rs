//! Running one derivation's builder and registering its outputs.
//!
//! The outputs are locked, leftovers of a crashed or failed attempt removed,
//! the builder run (in the sandbox when enabled) with the environment of
//! [`crate::env`], its output (stdout and stderr, one pipe) logged line by
//! line, and on success the outputs are hashed, scanned for references to
//! the input closure and to each other, and registered together. A failed
//! or killed build leaves no output behind.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_formats::derivation::Derivation;
use ferry_formats::StorePath;
use ferry_store::{PathLock, Store, StoreError};
use thiserror::Error;
use tokio::io::BufReader;

use crate::build_dir::BuildParent;
pub use crate::build_dir::{remove_stale_build_dirs, BUILD_DIR_PREFIX};
use crate::cleanup::OutputsGuard;
use crate::env::builder_env;
use crate::limits::{check_space, FREE_SPACE_EVERY};
pub use crate::limits::{DEFAULT_MAX_PROCESSES, DEFAULT_MIN_FREE_SPACE};
use crate::log::{read_line_bounded, BuildLog, MAX_LINE};
use crate::running;
use crate::sandbox::{HostPath, Sandbox, SandboxSpec};

mod teardown;

use teardown::{discard, keep_if_asked, kill_build_user, kill_group, GroupGuard};

/// How builds run on this machine.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// Run builders in namespaces and a chroot (see [`crate::sandbox`]).
    pub sandbox: bool,
    /// Host paths visible (read-only) inside the sandbox.
    pub host_paths: Vec<HostPath>,
    /// `NIX_BUILD_CORES`; 0 means every core.
    pub cores: u32,
    pub max_silent_time: Option<Duration>,
    pub timeout: Option<Duration>,
    /// RLIMIT_NPROC of a build user (a root daemon's builders); 0: none.
    pub max_processes: u64,
    /// A build is killed when free space on the store's or the build
    /// directory's file system falls below this many bytes; 0: no check;
    /// `None`: [`DEFAULT_MIN_FREE_SPACE`], but at most 5% of the file
    /// system's size (a small store stays usable).
    pub min_free_space: Option<u64>,
    /// Kill a builder that writes more than this many bytes of log
    /// (`--max-log-size`, Nix's `max-build-log-size`; `None`: no limit).
    pub max_log_size: Option<u64>,
    /// Keep a finished sandboxed build's chroot and build directory, emptied,
    /// for the next build (`spares.rs`): for a long-lived daemon; a
    /// one-shot process would leave them behind.
    pub reuse_dirs: bool,
    /// Keep a failed build's directory (renamed `ferry-build-kept-...`,
    /// never reused nor removed as stale) and name it in the failure's
    /// message (`--keep-failed`).
    pub keep_failed: bool,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            sandbox: false,
            host_paths: crate::sandbox::default_host_paths(),
            cores: 0,
            max_silent_time: None,
            timeout: None,
            max_processes: DEFAULT_MAX_PROCESSES,
            min_free_space: None,
            max_log_size: None,
            reuse_dirs: false,
            keep_failed: false,
        }
    }
}

/// One derivation to build.
pub struct BuildJob {
    pub drv_path: StorePath,
    pub drv: Derivation,
    /// Every path the builder may read: the closure of the input sources
    /// and of the input derivations' outputs.
    pub input_closure: BTreeSet<StorePath>,
    /// Identity the builder runs as when the daemon is root (sandbox or
    /// not): a build user of its own for the build's duration.
    pub uid: u32,
    pub gid: u32,
}

/// How a build ended, when it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Outputs valid: built now, or already valid.
    Built {
        outputs: BTreeMap<String, StorePath>,
        already_valid: bool,
    },
    /// The builder failed (exit status, timeout, missing output).
    Failed {
        message: String,
        exit_code: Option<i32>,
        log_tail: Vec<String>,
        kind: FailureKind,
    },
}

/// The kinds of failure `ferry build`'s exit status tells apart (Nix's
/// `BuildResult::TimedOut` and hash mismatch: exit 101 and 102).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailureKind {
    #[default]
    Other,
    /// Killed by `--timeout` or `--max-silent-time`.
    TimedOut,
    /// A fixed output's hash is not the one the derivation names.
    HashMismatch,
}

/// Why a build could not even be attempted or finished by the daemon.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("derivation {drv}: {message}")]
    BadDerivation { drv: String, message: String },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// Build `job` with `store`, sending each log line to `on_line`.
pub async fn build(
    store: &Arc<Store>,
    job: &BuildJob,
    settings: &BuildSettings,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Outcome, BuildError> {
    let drv_shown = store.display(&job.drv_path);
    let outputs = job
        .drv
        .outputs
        .iter()
        .map(|(name, o)| {
            store
                .parse_path(&o.path)
                .map(|p| (name.clone(), p))
                .map_err(|e| BuildError::BadDerivation {
                    drv: drv_shown.clone(),
                    message: format!("output {name}: {e}"),
                })
        })
        .collect::<Result<BTreeMap<_, _>, _>>()?;

    // Lock the outputs, in order. Usually they are free: take them without
    // a blocking thread. If one is held, let go of all and wait for them in
    // order on a blocking thread (flock blocks), as every locker does.
    let paths: Vec<StorePath> = outputs.values().cloned().collect();
    let mut locks = Vec::with_capacity(paths.len());
    for p in &paths {
        match store.try_lock_path(p)? {
            Some(lock) => locks.push(lock),
            None => {
                locks.clear();
                break;
            }
        }
    }
    if locks.len() != paths.len() {
        let store = store.clone();
        locks = tokio::task::spawn_blocking(move || {
            paths
                .iter()
                .map(|p| store.lock_path(p))
                .collect::<Result<Vec<PathLock>, _>>()
        })
        .await
        .expect("lock task panicked")?;
    }
    // From here on the outputs are removed unless registered (see
    // `crate::cleanup`): on failure, on an error, or if this future is dropped.
    let guard = OutputsGuard::new(store.clone(), paths_of(&outputs), locks);
    if store.are_valid(outputs.values())? {
        guard.release();
        return Ok(Outcome::Built {
            outputs,
            already_valid: true,
        });
    }
    for p in outputs.values() {
        store.remove_invalid(p)?;
    }

    let name = job.drv.name().unwrap_or_default().into_owned();
    // SAFETY: geteuid cannot fail.
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root && (job.uid == 0 || job.gid == 0) {
        return Err(BuildError::Io {
            context: format!("building {drv_shown}"),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a root daemon never runs a builder as root: the job needs a build user's uid and gid",
            ),
        });
    }
    let store_real = store.real_store_dir().to_path_buf();
    let unsandboxed = (!settings.sandbox && as_root).then(|| crate::unsandboxed::mode(&store_real));
    // 0700, the daemon's: the builder's dir is `build/` inside, reached
    // through a bind mount (in the sandbox at /build, without it on the
    // parent's own path in the builder's mount namespace), so no other user
    // can reach a setuid file it leaves there. Without a mount namespace
    // the builder gets the directory itself, as with Nix.
    let wrapped = settings.sandbox || unsandboxed == Some(crate::unsandboxed::Mode::Overlay);
    let build_parent = BuildParent::create(&std::env::temp_dir(), &name, wrapped)
        .map_err(io_err("creating the build directory"))?;
    let build_dir = if wrapped {
        build_parent.build_dir()
    } else {
        build_parent.path().to_path_buf()
    };
    // Without the sandbox, as root: a build user, in a private overlay of
    // the store when there is one (see `crate::unsandboxed`).
    let (private, unsandboxed_gid) = match &unsandboxed {
        None => (None, job.gid),
        Some(mode) => {
            match crate::unsandboxed::setup(mode, &store_real, build_parent.path(), job.gid)
                .map_err(io_err(format!(
                    "preparing the private store for {drv_shown}"
                )))? {
                crate::unsandboxed::Setup::Ready { private, gid } => (private, gid),
                crate::unsandboxed::Setup::Refused(why) => {
                    return Ok(Outcome::Failed {
                        message: format!("cannot build {drv_shown} without the sandbox: {why}"),
                        exit_code: None,
                        log_tail: Vec::new(),
                        kind: FailureKind::Other,
                    })
                }
            }
        }
    };
    if !settings.sandbox && as_root {
        std::os::unix::fs::chown(&build_dir, Some(job.uid), Some(unsandboxed_gid))
            .map_err(io_err("handing the build directory to the build user"))?;
    }
    let mut log = BuildLog::create(&store.locations().state_dir, job.drv_path.base_name())
        .map_err(io_err(format!("creating the log of {drv_shown}")))?;

    let cores = if settings.cores == 0 {
        host_cores()
    } else {
        settings.cores
    };
    let sandbox = if settings.sandbox {
        let inside_build_dir = PathBuf::from("/build");
        let spec = SandboxSpec {
            store_dir: PathBuf::from(store.store_dir().as_str()),
            inputs: job
                .input_closure
                .iter()
                .map(|p| store.real_path(p))
                .collect(),
            outputs: outputs.values().map(|p| store.real_path(p)).collect(),
            build_dir: build_dir.clone(),
            sandbox_build_dir: inside_build_dir,
            host_paths: crate::systems::host_paths_for(&job.drv.system, &settings.host_paths),
            chroot_parent: store.real_store_dir().to_path_buf(),
            uid: job.uid,
            gid: job.gid,
            max_processes: if as_root { settings.max_processes } else { 0 },
            linux32: crate::systems::runs_as_linux32(&job.drv.system),
        };
        Some(
            Sandbox::prepare(spec)
                .map_err(io_err(format!("preparing the sandbox for {drv_shown}")))?,
        )
    } else {
        None
    };
    let build_top = if sandbox.is_some() {
        "/build".to_string()
    } else {
        build_parent.path().to_string_lossy().into_owned()
    };

    let (pipe_r, pipe_w) = std::io::pipe().map_err(io_err("creating the log pipe"))?;
    let env = builder_env(&job.drv, store.store_dir(), &build_top, cores);
    // Without namespaces, the build user's processes are killed before and
    // after the build (Nix's killUser); otherwise the build's PID namespace
    // takes them all when its first process exits, and nothing is killed by
    // uid (another root daemon on this machine, in other namespaces, may use
    // the same uids).
    let build_user =
        matches!(unsandboxed, Some(crate::unsandboxed::Mode::Direct { .. })).then_some(job.uid);
    let start_err = |e| BuildError::Io {
        context: format!("starting the builder {} of {drv_shown}", job.drv.builder),
        source: e,
    };
    let started = Instant::now();
    // Without namespaces the build user's leftovers go first (Nix's
    // killUser); with them there are none.
    kill_build_user(build_user);
    let how = match (&sandbox, &private) {
        (Some(sb), _) => running::How::Sandbox(sb),
        (None, _) if !as_root => running::How::Plain { cwd: &build_dir },
        (None, private) => running::How::BuildUser {
            store_dir: &store_real,
            private: private
                .as_ref()
                .map(|p| (p, build_dir.as_path(), build_parent.path())),
            cwd: &build_dir,
            ids: (job.uid, unsandboxed_gid),
            max_processes: settings.max_processes,
        },
    };
    let linux32 = crate::systems::runs_as_linux32(&job.drv.system);
    let mut child = running::start(&job.drv.builder, &job.drv.args, env, pipe_w, how, linux32)
        .await
        .map_err(start_err)?;
    let pid = child.id();
    // If this future is dropped (the client went away, the request was
    // cancelled), `kill_on_drop` kills only the builder itself: the guard
    // kills what it started too.
    let mut group_guard = GroupGuard {
        pid,
        sandboxed: sandbox.is_some(),
        build_user,
    };
    let free_dirs = [store_real.clone(), build_dir.clone()];
    let mut next_free_check = Instant::now() + FREE_SPACE_EVERY;
    // Our copies of the write end went with `cmd`; EOF comes when the
    // builder and everything it started are gone.
    let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(pipe_r))
        .map_err(io_err("reading the builder's output"))?;
    let mut lines = BufReader::new(reader);

    let deadline = settings.timeout.map(|t| started + t);
    // Silence counts from the last output (other branches, such as the
    // free-space check, also wake the loop).
    let mut last_output = started;
    let mut killed: Option<String> = None;
    let mut timed_out = false;
    let mut status: Option<ExitStatus> = None;
    let mut buf = Vec::new();
    let mut eof = false;
    let mut log_size = 0u64;
    while !eof || status.is_none() {
        let silence = settings
            .max_silent_time
            .unwrap_or(Duration::from_secs(u64::MAX / 4));
        let until_deadline = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(u64::MAX / 4));
        tokio::select! {
            // One line is at most MAX_LINE bytes: a newline-free stream
            // is logged in chunks, never held whole.
            read = read_line_bounded(&mut lines, &mut buf, MAX_LINE), if !eof => {
                let n = read.unwrap_or_default();
                log_size += buf.len() as u64;
                let over = settings.max_log_size.is_some_and(|max| log_size > max);
                if !buf.is_empty() && (killed.is_none() || !over) {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    let _ = log.line(line);
                    on_line(line);
                    last_output = Instant::now();
                }
                buf.clear();
                if n == 0 {
                    eof = true;
                }
                if over && killed.is_none() {
                    killed = Some(format!(
                        "log limit exceeded: it wrote more than {} bytes of log (--max-log-size)",
                        settings.max_log_size.unwrap_or_default()
                    ));
                    kill_group(pid, sandbox.is_some());
                    let _ = child.start_kill();
                }
            }
            st = child.wait(), if status.is_none() => {
                status = Some(st.map_err(io_err("waiting for the builder"))?);
                // Whatever the builder left running goes with it.
                kill_group(pid, sandbox.is_some());
                kill_build_user(build_user);
                group_guard.pid = None;
            }
            // The builder is gone but something it started still holds the
            // log pipe (a daemonized process outside the sandbox): stop
            // waiting for it.
            _ = tokio::time::sleep(Duration::from_secs(2)), if status.is_some() => {
                eof = true;
            }
            _ = tokio::time::sleep_until(last_output.checked_add(silence).unwrap_or(last_output).into()),
                if settings.max_silent_time.is_some() && killed.is_none() && status.is_none() => {
                killed = Some(format!("it printed nothing for {} s (--max-silent-time)", silence.as_secs()));
                timed_out = true;
                kill_group(pid, sandbox.is_some());
                let _ = child.start_kill();
            }
            _ = tokio::time::sleep(until_deadline), if killed.is_none() && status.is_none() => {
                killed = Some(format!("it ran longer than {} s (--timeout)", settings.timeout.unwrap_or_default().as_secs()));
                timed_out = true;
                kill_group(pid, sandbox.is_some());
                let _ = child.start_kill();
            }
            _ = tokio::time::sleep_until(next_free_check.into()), if settings.min_free_space != Some(0) && killed.is_none() && status.is_none() => {
                match check_space(&free_dirs, settings.min_free_space) {
                    Ok(next) => next_free_check = Instant::now() + next,
                    Err(why) => {
                        killed = Some(why);
                        kill_group(pid, sandbox.is_some());
                        let _ = child.start_kill();
                    }
                }
            }
        }
    }
    let status = status.expect("loop ends with a status");
    if let Some(sb) = &sandbox {
        sb.exited(&status);
    }

    // No process of the build is left (its PID namespace is gone, or its
    // build user's processes were killed): the outputs can be worked on.
    kill_build_user(build_user);
    group_guard.pid = None;
    // Where each output lies now (staged, unreachable by other users) and
    // its host path in the store. A failure to find them fails the build
    // (below).
    let mut collect_failure = None;
    let staged: Vec<(PathBuf, PathBuf)> = match (&sandbox, &private) {
        (Some(sb), _) => sb.staged_outputs().unwrap_or_else(|e| {
            collect_failure = Some(format!("collecting the outputs of {drv_shown}: {e}"));
            Vec::new()
        }),
        (None, Some(ps)) => outputs
            .values()
            .map(|p| store.real_path(p))
            .filter_map(|p| {
                let at = ps.staged(p.file_name()?);
                at.symlink_metadata().is_ok().then_some((at, p))
            })
            .collect(),
        (None, None) => outputs
            .values()
            .map(|p| store.real_path(p))
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|p| (p.clone(), p))
            .collect(),
    };
    let produced: Vec<PathBuf> = staged.iter().map(|(_, p)| p.clone()).collect();
    let setup_failure = sandbox.as_ref().and_then(|sb| {
        (status.code() == Some(crate::sandbox::SETUP_FAILED_EXIT_CODE))
            .then(|| sb.setup_failure())
            .flatten()
    });
    let log_tail = log.tail();
    let _ = log.finish();

    let failure = if let Some(why) = setup_failure {
        Some((
                format!("the sandbox for {drv_shown} could not be set up: {why} (run the daemon with --no-sandbox to build without it)"),
                None,
            ))
    } else if let Some(why) = killed {
        Some((format!("builder for {drv_shown} was killed: {why}"), None))
    } else if !status.success() {
        let (what, code) = match (status.code(), status.signal()) {
            (Some(c), _) => (format!("failed with exit code {c}"), Some(c)),
            (None, Some(s)) => (format!("was killed by signal {s}"), None),
            _ => ("failed".to_string(), None),
        };
        Some((format!("builder for {drv_shown} {what}"), code))
    } else if let Some(why) = collect_failure {
        Some((why, None))
    } else {
        let missing: Vec<&String> = outputs
            .iter()
            .filter(|(_, p)| !produced.contains(&store.real_path(p)))
            .map(|(n, _)| n)
            .collect();
        (!missing.is_empty()).then(|| {
            (
                format!(
                    "builder for {drv_shown} exited successfully but did not create output(s) {}",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some(0),
            )
        })
    };
    if let Some((mut message, exit_code)) = failure {
        let build_parent = keep_if_asked(settings, build_parent, &mut message);
        discard(sandbox, private, build_parent, settings.reuse_dirs, true).await;
        for p in outputs.values() {
            store.remove_invalid(p)?;
        }
        return Ok(Outcome::Failed {
            message,
            exit_code,
            log_tail,
            kind: if timed_out {
                FailureKind::TimedOut
            } else {
                FailureKind::Other
            },
        });
    }

    // Files of the builder are the build user's on the host, or in a user
    // namespace the daemon's own.
    // SAFETY: geteuid cannot fail.
    let builder_uid = if as_root {
        job.uid
    } else {
        unsafe { libc::geteuid() }
    };
    // Whatever fails from here on (a hash mismatch, a tree too deep, a full
    // disk, the database) fails the build: its outputs are removed under
    // the locks still held, so a retry starts clean.
    let mut registered =
        crate::register::register_outputs(store, job, &outputs, staged, builder_uid).await;
    let build_parent = match &mut registered {
        Err(message) => keep_if_asked(settings, build_parent, message),
        Ok(_) => Some(build_parent),
    };
    discard(
        sandbox,
        private,
        build_parent,
        settings.reuse_dirs,
        registered.is_err(),
    )
    .await;
    if let Err(message) = registered {
        let kind = if message.starts_with(crate::fixed_output::HASH_MISMATCH) {
            FailureKind::HashMismatch
        } else {
            FailureKind::Other
        };
        return Ok(Outcome::Failed {
            message,
            exit_code: None,
            log_tail,
            kind,
        });
    }
    guard.release();
    Ok(Outcome::Built {
        outputs,
        already_valid: false,
    })
}

fn paths_of(outputs: &BTreeMap<String, StorePath>) -> Vec<StorePath> {
    outputs.values().cloned().collect()
}

/// The number of cores, read once: `available_parallelism` reads the
/// cgroup's CPU quota files on every call (four `openat`s per build).
fn host_cores() -> u32 {
    static CORES: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}
