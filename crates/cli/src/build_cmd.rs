//! `ferry build` and `ferry log` (and the builder flags `ferry daemon` shares).
//!
//! `ferry build` talks to the daemon when one listens on the socket, and
//! otherwise does the same work in-process on the same store with the same
//! locks (embedded mode), so a first build needs no set-up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use ferry_build::current_system;
use ferry_build::sandbox::{self, HostPath};
use ferry_build::BuildSettings;
use ferry_daemon::{Engine, EngineConfig};
use ferry_protocol::{BuildOptions, BuildResult, BuildStatus, Client, FailureKind};
use ferry_scheme::{load_build_file, DrvObject, EvalContext};
use tokio::net::UnixStream;

use crate::Cli;

#[derive(Args, Clone)]
pub struct BuilderArgs {
    /// Builders run at once [default: the number of cores]; 0: none here,
    /// every derivation goes to a build machine (also through a daemon)
    #[arg(long, short = 'j')]
    pub(crate) max_jobs: Option<usize>,
    /// Cores each builder may use (NIX_BUILD_CORES) [default: all]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    cores: u32,
    /// Run builders without namespaces and chroot
    #[arg(long)]
    no_sandbox: bool,
    /// Build everything on this machine, ignoring machines.scm
    #[arg(long)]
    pub(crate) no_offload: bool,
    /// Seconds to wait while every matching build machine is unusable
    /// (down, overloaded, full) before building here (or failing when this
    /// machine cannot); machines merely busy with our builds are waited for
    /// without limit
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    offload_max_wait: u64,
    /// Seconds a build machine may go without progress in any phase
    /// (connect, handshake, machine info, sending inputs, the build,
    /// fetching outputs) before it is backed off and the derivation placed
    /// again or built here; 0: no bound
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    offload_silence_timeout: u64,
    /// More systems this machine builds for, through emulation (Nix's
    /// extra-platforms: QEMU registered with binfmt_misc), e.g.
    /// aarch64-linux; repeatable or space-separated
    #[arg(long, value_name = "SYSTEMS")]
    extra_platforms: Vec<String>,
    /// Host path visible read-only in the sandbox, as PATH or INSIDE=HOST;
    /// repeatable; replaces the default list (/bin, /usr, /lib, /lib64 ...)
    #[arg(long = "sandbox-path", value_name = "PATH")]
    sandbox_paths: Vec<String>,
    /// Processes a build user may run at once (RLIMIT_NPROC; a root
    /// daemon's builders, sandbox or not); 0: no limit
    #[arg(long, value_name = "N", default_value_t = ferry_build::builder::DEFAULT_MAX_PROCESSES)]
    max_build_processes: u64,
    /// Kill a build when free space on the store's or the build
    /// directory's file system falls below this many MiB; 0: no check
    /// [default: 100, at most 5% of the file system]
    #[arg(long, value_name = "MIB")]
    min_free_space: Option<u64>,
    /// Kill a builder that writes more than this many bytes of log; the
    /// build fails with "log limit exceeded" (0: no limit, as Nix's
    /// max-build-log-size)
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    max_log_size: u64,
}

impl BuilderArgs {
    /// The engine's configuration from the effective `settings` (ferry.conf
    /// and the flags given, see `settings.rs`) and the flags that have no
    /// setting.
    pub(crate) fn engine_config(
        &self,
        loc: &ferry_store::Locations,
        settings: &ferry_config::Settings,
    ) -> anyhow::Result<EngineConfig> {
        use ferry_config::{SandboxMode, Value};
        let sandbox = match settings.entry("sandbox").value {
            Value::Sandbox(SandboxMode::Off) => false,
            _ => match sandbox::available() {
                Ok(()) => true,
                Err(why) => {
                    eprintln!("ferry: note: building without a sandbox: {why}");
                    false
                }
            },
        };
        let paths = settings.words("sandbox-paths");
        let host_paths = if paths.is_empty() {
            sandbox::default_host_paths()
        } else {
            paths.iter().map(|s| parse_host_path(s)).collect()
        };
        let secs = |name: &str| {
            settings
                .number(name)
                .filter(|&s| s > 0)
                .map(std::time::Duration::from_secs)
        };
        let build = BuildSettings {
            sandbox,
            host_paths,
            cores: settings.number("cores").unwrap_or(0) as u32,
            max_processes: settings.number("max-build-processes").unwrap_or(0),
            min_free_space: self.min_free_space.map(|m| m.saturating_mul(1 << 20)),
            max_log_size: settings.number("max-log-size").filter(|&n| n > 0),
            max_silent_time: secs("max-silent-time"),
            timeout: secs("timeout"),
            ..BuildSettings::default()
        };
        let jobs = match settings.number("max-jobs") {
            Some(n) => n as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let mut config = EngineConfig::new(jobs, build);
        for s in settings.words("extra-platforms") {
            if !config.systems.contains(&s) {
                config.systems.push(s);
            }
        }
        config.features = settings.words("system-features");
        let system = settings.words("system");
        if let Some(s) = system.first() {
            config.systems[0] = s.clone();
        }
        if let Some(group) = settings.words("build-users-group").first() {
            let e = settings.entry("build-users-group");
            anyhow::bail!(
                "{}: build-users-group = {group}: Ferry's build users are not a group's members but \
                 the uids from build-uid-base ({}) on, one per local job (max-jobs); remove the line (and set \
                 build-uid-base to move the range)",
                match &e.source {
                    ferry_config::Source::File(o) => o.to_string(),
                    _ => "the command line".into(),
                },
                settings.number("build-uid-base").unwrap_or(30000)
            );
        }
        config.build_uid_base = settings.number("build-uid-base").unwrap_or(30000) as u32;
        if settings.bool("offload") {
            config.machines_file = Some(loc.config_dir.join("machines.scm"));
        }
        config.offload_max_wait =
            std::time::Duration::from_secs(settings.number("offload-max-wait").unwrap_or(60));
        config.offload_silence = secs("offload-silence-timeout");
        config.keep_outputs = settings.bool("keep-outputs");
        config.keep_derivations = settings.bool("keep-derivations");
        Ok(config)
    }

    /// The flags given that set the daemon's own settings, which a client
    /// of a running daemon cannot change.
    fn daemon_wide_flags(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.max_jobs.is_some_and(|j| j > 0) {
            v.push("--max-jobs");
        }
        if !self.sandbox_paths.is_empty() {
            v.push("--sandbox-path");
        }
        if self.max_log_size != 0 {
            v.push("--max-log-size");
        }
        if self.max_build_processes != ferry_build::builder::DEFAULT_MAX_PROCESSES {
            v.push("--max-build-processes");
        }
        if self.min_free_space.is_some() {
            v.push("--min-free-space");
        }
        if self.offload_max_wait != 60 {
            v.push("--offload-max-wait");
        }
        if self.offload_silence_timeout != 30 {
            v.push("--offload-silence-timeout");
        }
        v
    }
}

fn parse_host_path(s: &str) -> HostPath {
    let (inside, host) = s.split_once('=').unwrap_or((s, s));
    HostPath {
        inside: PathBuf::from(inside),
        host: PathBuf::from(host),
        optional: false,
    }
}

#[derive(Args)]
pub struct BuildArgs {
    /// Build files (.scm) or .drv store paths
    #[arg(required = true)]
    targets: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) builder: BuilderArgs,
    /// Kill a builder silent for this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    max_silent_time: u64,
    /// Kill a builder running longer than this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    timeout: u64,
    /// Go on building what does not depend on a failed build
    #[arg(long, short = 'k')]
    keep_going: bool,
    /// Make FILE a symlink to the output and register it as a garbage
    /// collector root (several outputs: FILE-0, FILE-1, ... as `guix build`)
    #[arg(long, short = 'r', value_name = "FILE")]
    root: Option<PathBuf>,
    /// Keep the build directory of a failed build and say where it is (as
    /// `nix-build -K`); through a root daemon it stays root's, so read it
    /// as root; remove it when done
    #[arg(long, short = 'K')]
    keep_failed: bool,
    /// Evaluate build files for SYSTEM (e.g. aarch64-linux) instead of
    /// this machine's: derivations that do not name their system are
    /// built for it (by a build machine of that system, or here through
    /// emulation), as `guix build --system`
    #[arg(long, short = 's', value_name = "SYSTEM")]
    system: Option<String>,
    /// Show what would be built (and where: here or which build machines),
    /// what is already valid and what would be sent to build machines;
    /// build nothing (build files are still evaluated and their .drv
    /// files added to the store)
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Show only build logs, warnings and errors: no progress
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Where clients find the daemon.
pub fn daemon_socket(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("FERRY_DAEMON_SOCKET").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    Ok(cli.locations()?.state_dir.join("daemon-socket/socket"))
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Connect to the daemon if one listens; `None` means "do it in-process".
pub(crate) async fn connect(
    socket: &Path,
    store_dir: &str,
) -> anyhow::Result<Option<Client<UnixStream>>> {
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("connecting to the daemon at {}", socket.display()))
        }
    };
    let client = Client::handshake(stream, store_dir)
        .await
        .with_context(|| format!("talking to the daemon at {}", socket.display()))?;
    Ok(Some(client))
}

/// What to build: `.drv` paths, and build files evaluated to `.drv`s.
enum Target {
    Drv(String),
    File(PathBuf),
}

fn targets(args: &BuildArgs) -> Vec<Target> {
    args.targets
        .iter()
        .map(|t| {
            let s = t.to_string_lossy();
            if s.ends_with(".drv") && t.is_absolute() {
                Target::Drv(s.into_owned())
            } else {
                Target::File(t.clone())
            }
        })
        .collect()
}

/// The `.drv`s to build, build files evaluated and added to the store.
pub(crate) async fn add_targets_embedded(
    store: &Arc<ferry_store::Store>,
    args: &BuildArgs,
) -> anyhow::Result<Vec<ferry_formats::StorePath>> {
    let mut drvs = Vec::new();
    for t in targets(args) {
        match t {
            Target::Drv(d) => drvs.push(store.parse_path(&d)?),
            Target::File(f) => {
                let s = store.clone();
                let system = args.system.clone();
                let added = tokio::task::spawn_blocking(move || {
                    crate::derivation_cmd::add_build_file(&s, &f, system.as_deref())
                })
                .await??;
                drvs.extend(added);
            }
        }
    }
    Ok(drvs)
}

/// The `.drv`s to build, build files evaluated and sent to the daemon.
pub(crate) async fn add_targets_daemon(
    client: &mut Client<UnixStream>,
    args: &BuildArgs,
) -> anyhow::Result<Vec<String>> {
    let mut drvs = Vec::new();
    for t in targets(args) {
        match t {
            Target::Drv(d) => drvs.push(d),
            Target::File(f) => {
                drvs.extend(add_build_file(client, &f, args.system.as_deref()).await?)
            }
        }
    }
    Ok(drvs)
}

pub fn build(cli: &Cli, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    if args.dry_run {
        return crate::dry_run::run(cli, args);
    }
    let loc = cli.locations()?;
    let socket = daemon_socket(cli)?;
    let options = BuildOptions {
        cores: args.builder.cores,
        max_silent_time: args.max_silent_time,
        timeout: args.timeout,
        keep_going: args.keep_going,
        offloaded: false,
        no_offload: args.builder.no_offload,
        // A daemon honours it for trusted users only, and says so.
        sandbox: args.builder.no_sandbox.then_some(false),
        keep_alive: 0,
        // -j 0: build machines only, as Nix's --max-jobs 0; the daemon
        // honours it for this request.
        no_local: args.builder.max_jobs == Some(0),
        keep_failed: args.keep_failed,
        progress: !args.quiet,
    };
    runtime()?.block_on(async move {
        let results = match connect(&socket, loc.store_dir.as_str()).await? {
            Some(client) => build_with_daemon(client, args, options).await?,
            None => build_embedded(cli, args, options).await?,
        };
        report(&results)
    })
}

/// How this build's events are shown (see `progress.rs`).
fn progress(args: &BuildArgs) -> crate::progress::Progress {
    crate::progress::Progress::new(crate::progress::Mode::detect(args.quiet))
}

async fn build_embedded(
    cli: &Cli,
    args: &BuildArgs,
    options: BuildOptions,
) -> anyhow::Result<Vec<BuildResult>> {
    let store = Arc::new(cli.open_store()?);
    let drvs = add_targets_embedded(&store, args).await?;
    // Kept by this process until it exits (after its roots are made).
    drop(store.root_in_scope(&drvs.iter().collect::<Vec<_>>())?);
    let loc = cli.locations()?;
    let settings = crate::settings::effective(&loc.config_dir, false)?;
    let config = args.builder.engine_config(&loc, &settings)?;
    let engine = Engine::new(store.clone(), config);
    let (tx, mut rx) = ferry_daemon::events::channel();
    let mut shown = progress(args);
    let printer = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            shown.event(ev);
        }
        shown.finish();
    });
    let results = engine.build(drvs, options, tx).await;
    let _ = printer.await;
    if let Some(root) = &args.root {
        for link in crate::gc_cmd::make_root_links(root, &results)? {
            store.add_indirect_root(&link)?;
        }
    }
    Ok(results)
}

async fn build_with_daemon(
    mut client: Client<UnixStream>,
    args: &BuildArgs,
    options: BuildOptions,
) -> anyhow::Result<Vec<BuildResult>> {
    let ignored = args.builder.daemon_wide_flags();
    if !ignored.is_empty() {
        eprintln!(
            "ferry: warning: the daemon uses its own {}: the flag applies to builds without a daemon (or to `ferry daemon`)",
            ignored.join(", ")
        );
    }
    let drvs = add_targets_daemon(&mut client, args).await?;
    let mut shown = progress(args);
    let results = client.build(drvs, options, |ev| shown.event(ev)).await;
    shown.finish();
    let results = results
        .map_err(|e| match e {
            ferry_protocol::ProtocolError::Closed | ferry_protocol::ProtocolError::Io(_) => anyhow!(
                "the daemon closed the connection during the build ({e}); did it crash or restart? its log says why"
            ),
            other => anyhow::Error::from(other),
        })?;
    // The connection holds the outputs until the roots are registered.
    if let Some(root) = &args.root {
        crate::gc_cmd::register_roots_with_daemon(&mut client, root, &results).await?;
    }
    Ok(results)
}

/// Evaluate a build file and send what it describes to the daemon: local
/// inputs, then each .drv after its inputs. Returns the .drv paths of the
/// derivations the file returned, in order (`ferry derivation add` through
/// a daemon).
pub(crate) async fn add_build_file(
    client: &mut Client<UnixStream>,
    file: &Path,
    system: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let store_dir = ferry_formats::StoreDir::new(client.welcome().store_dir.clone())?;
    let system = system.map_or_else(current_system, str::to_string);
    let loaded = load_build_file(file, EvalContext::from_process(), &store_dir, &system)
        .map_err(|e| anyhow!("{e}"))?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    for obj in DrvObject::closure(&loaded.roots) {
        send_derivation(client, &store_dir, &obj).await?;
    }
    Ok(loaded
        .roots
        .iter()
        .map(|r| store_dir.display(&r.drv_path))
        .collect())
}

/// Send a build file's derivation and its local inputs to the daemon.
async fn send_derivation(
    client: &mut Client<UnixStream>,
    store_dir: &ferry_formats::StoreDir,
    obj: &DrvObject,
) -> anyhow::Result<()> {
    for (local, want) in &obj.sources {
        let path = stream_nar_to_daemon(client, local, want.name()).await?;
        if path != store_dir.display(want) {
            bail!(
                "{} changed while the build file was evaluated (now {path}); run the command again",
                local.display()
            );
        }
    }
    let refs = obj
        .drv
        .input_srcs
        .iter()
        .chain(obj.drv.input_drvs.keys())
        .cloned()
        .collect();
    let name = format!("{}.drv", obj.drv.name().unwrap_or_default());
    let got = client.add_text(&name, &obj.drv.to_aterm(), refs).await?;
    if got != store_dir.display(&obj.drv_path) {
        bail!(
            "the daemon stored {} as {got}",
            store_dir.display(&obj.drv_path)
        );
    }
    Ok(())
}

/// Stream the NAR of a local file to the daemon through the daemon's
/// bridge (never the whole archive in memory).
pub(crate) async fn stream_nar_to_daemon(
    client: &mut Client<UnixStream>,
    local: &Path,
    name: &str,
) -> anyhow::Result<String> {
    let src = local.to_path_buf();
    let (mut reader, dumper) = ferry_daemon::bridge::blocking_producer(move |w| {
        ferry_formats::nar::dump(&src, w)?;
        w.flush()
    });
    let added = client.add_to_store(name, &mut reader).await;
    drop(reader);
    dumper
        .await
        .map_err(|_| anyhow!("NAR dump thread panicked"))?
        .with_context(|| format!("reading {}", local.display()))?;
    Ok(added?)
}

/// Print the output paths, one a line; failures on stderr.
fn report(results: &[BuildResult]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    for r in results {
        match r.status {
            BuildStatus::Built | BuildStatus::AlreadyValid => {
                for p in r.outputs.values() {
                    writeln!(out, "{p}")?;
                }
            }
            BuildStatus::Failed | BuildStatus::DependencyFailed => {
                failed = true;
                let why = r.error.as_deref().unwrap_or("build failed");
                if r.status == BuildStatus::DependencyFailed {
                    // The message names the failed input: say which
                    // requested derivation was not built.
                    eprintln!("error: {} was not built: {why}", r.drv);
                } else {
                    eprintln!("error: {why}");
                }
                if !r.log_tail.is_empty() {
                    eprintln!("last {} log lines:", r.log_tail.len());
                    for l in &r.log_tail {
                        eprintln!("> {l}");
                    }
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(exit_status(results))
    } else {
        ExitCode::SUCCESS
    })
}

/// The exit status of builds that failed, as Nix's `Worker::exitStatus`
/// (2.8): 0x60 plus a bit each for a build failure (0x04: 100), a timeout
/// (0x01: 101, `--timeout` or `--max-silent-time`) and a fixed output's
/// hash mismatch (0x02: 102); a timed-out or mismatched build is also a
/// build failure, so 101 or 102, 103 when both happened.
pub(crate) fn exit_status(results: &[BuildResult]) -> u8 {
    let mut mask = 0u8;
    for r in results {
        if matches!(
            r.status,
            BuildStatus::Failed | BuildStatus::DependencyFailed
        ) {
            mask |= 0x04;
            match r.failure {
                FailureKind::TimedOut => mask |= 0x01,
                FailureKind::HashMismatch => mask |= 0x02,
                FailureKind::Other => {}
            }
        }
    }
    if mask == 0 {
        0
    } else {
        mask | 0x60
    }
}
