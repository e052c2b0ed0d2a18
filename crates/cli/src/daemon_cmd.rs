//! `ferry daemon`: its flags, its settings (ferry.conf and the flags given,
//! see `settings.rs`), serving clients until SIGTERM or SIGINT, and a clean
//! stop (no new clients, running builds given `--shutdown-grace`, then
//! cancelled; the socket and spare directories removed).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use ferry_daemon::{Daemon, Engine};

use crate::build_cmd::{daemon_socket, runtime, BuilderArgs};
use crate::Cli;

#[derive(Args)]
pub struct DaemonArgs {
    /// Socket to listen on [env: FERRY_DAEMON_SOCKET; default: STATE/daemon-socket/socket]
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// Also serve Nix clients (the Nix worker protocol, as nix-daemon 2.8)
    /// on this socket: NIX_REMOTE=unix://PATH
    #[arg(long, value_name = "PATH")]
    nix_socket: Option<PathBuf>,
    /// Where Nix clients look for build logs (their NIX_LOG_DIR, Nix's
    /// log-dir): DIR/drvs becomes a link to Ferry's log directory, so that
    /// `nix log` finds Ferry's logs [default: /nix/var/log/nix when the
    /// store is /nix/store, else none]
    #[arg(long, value_name = "DIR", requires = "nix_socket")]
    nix_log_dir: Option<PathBuf>,
    /// Serve one Nix client on stdin and stdout (as `nix-daemon --stdio`,
    /// for ssh-ng://): forwarded to the daemon listening on --nix-socket
    /// [default: STATE/daemon-socket/nix-socket] if any, else served here
    #[arg(long)]
    stdio: bool,
    #[command(flatten)]
    builder: BuilderArgs,
    /// Users allowed to connect (a root daemon): names, @group, or *;
    /// whitespace-separated, repeatable; trusted users are always allowed
    /// [default: *]
    #[arg(long, value_name = "USERS")]
    allowed_users: Vec<String>,
    /// Users trusted to import unsigned items and turn the sandbox off
    /// for their builds (a root daemon): names, @group, or * [default: root]
    #[arg(long, value_name = "USERS")]
    trusted_users: Vec<String>,
    /// Clients served at once; more wait until one leaves
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections: usize,
    /// Connections one user (not root) may hold at once; more are refused
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_connections_per_user: usize,
    /// Seconds a client has to say hello before it is disconnected
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    handshake_timeout: u64,
    /// Kill a builder silent for this many seconds (0: never); a client
    /// may ask for less, not more
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    max_silent_time: u64,
    /// Kill a builder running longer than this many seconds (0: never); a
    /// client may ask for less, not more
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    timeout: u64,
    /// Print the effective settings (ferry.conf, then these flags) with
    /// where each came from, and exit
    #[arg(long)]
    print_config: bool,
    /// On SIGTERM or SIGINT: seconds running builds get to finish before
    /// they are cancelled (new clients are refused meanwhile)
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    shutdown_grace: u64,
    /// Garbage collection keeps the outputs of live derivations (Nix's keep-outputs)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    keep_outputs: bool,
    /// Garbage collection keeps the derivations of live paths (Nix's keep-derivations)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    keep_derivations: bool,
    /// Collect garbage when free space on the store's file system drops
    /// under SIZE during builds and imports (Nix's min-free; sizes as
    /// `ferry gc` reads them: 100MiB, 1G...) [default: off]
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    min_free: Option<u64>,
    /// ... until SIZE is free (Nix's max-free) [default: until nothing dead is left]
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg, requires = "min_free")]
    max_free: Option<u64>,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    crate::gc_cmd::parse_size(s).map_err(|e| e.to_string())
}

impl DaemonArgs {
    /// Who may connect and how many, from the effective settings.
    fn daemon_config(
        &self,
        settings: &ferry_config::Settings,
    ) -> ferry_daemon::access::DaemonConfig {
        let number = |name: &str| settings.number(name).unwrap_or(1).max(1);
        let access = ferry_daemon::access::AccessConfig {
            allowed_users: settings.words("allowed-users"),
            trusted_users: settings.words("trusted-users"),
        };
        ferry_daemon::access::DaemonConfig {
            access,
            max_connections: number("max-connections") as usize,
            max_connections_per_user: number("max-connections-per-user") as usize,
            handshake_timeout: std::time::Duration::from_secs(number("handshake-timeout")),
            trusted_public_keys: crate::nix_stdio::public_keys(
                &settings.words("trusted-public-keys"),
            ),
        }
    }
}

pub fn daemon(cli: &Cli, args: &DaemonArgs) -> anyhow::Result<ExitCode> {
    ferry_daemon::memory::limit_arenas();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| if args.stdio { "warn" } else { "info" }.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let socket = match &args.listen {
        Some(p) => p.clone(),
        None => daemon_socket(cli)?,
    };
    if args.stdio {
        let nix_socket = crate::nix_stdio::socket(args.nix_socket.as_deref(), &socket);
        if let Some(code) = crate::nix_stdio::forward(&nix_socket)? {
            return Ok(code);
        }
    }
    let fd_limit = ferry_daemon::server::prepare_process();
    // Not `open_store`: the daemon roots per connection and per build,
    // never for its whole life.
    let store = Arc::new(ferry_store::Store::open(cli.locations()?)?);
    // What a collection killed halfway (or a crash) left.
    match store.remove_gc_leftovers() {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} unregistered store entries left by a crash"),
        Err(e) => tracing::warn!("removing unregistered store entries: {e}"),
    }
    let loc = cli.locations()?;
    let settings = crate::settings::effective(&loc.config_dir, true)?;
    let mut config = args.builder.engine_config(&loc, &settings)?;
    if args.print_config {
        let mut out = std::io::stdout().lock();
        write!(out, "{}", settings.show())?;
        writeln!(
            out,
            "# this machine builds for: {} (with features: {})",
            config.systems.join(" "),
            if config.features.is_empty() {
                "none".to_string()
            } else {
                config.features.join(" ")
            }
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    // A daemon that cannot read its key refuses to start; `--stdio` in
    // process (the store's owner, maybe not the key's) builds unsigned.
    config.nix_secret_keys =
        match crate::nix_stdio::secret_keys(&settings.words("secret-key-files")) {
            Ok(keys) => keys,
            Err(e) if args.stdio => {
                tracing::warn!("{e}: what is built here is not signed in Nix's form");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
    config.min_free = settings.number("min-free").filter(|&n| n > 0);
    config.max_free = settings.number("max-free").filter(|&n| n > 0);
    if config.max_free.is_some() && config.min_free.is_none() {
        bail!("max-free is set without min-free: set min-free too (collection starts under min-free and stops at max-free)");
    }
    // A long-lived daemon keeps finished builds' directories for the next
    // ones; a one-shot `ferry build` leaves nothing behind.
    config.build.reuse_dirs = true;
    let daemon_config = args.daemon_config(&settings);
    if !ferry_daemon::server::running_as_root()
        && (!args.allowed_users.is_empty() || !args.trusted_users.is_empty())
    {
        eprintln!("ferry: note: --allowed-users and --trusted-users apply to a root daemon; this personal daemon serves its owner (and root) only");
    }
    tracing::info!(
        max_connections = daemon_config.max_connections,
        open_files = fd_limit,
        allowed_users = %daemon_config.access.allowed_users.join(" "),
        trusted_users = %daemon_config.access.trusted_users.join(" "),
        "access"
    );
    tracing::info!(
        store = %store.store_dir(),
        socket = %socket.display(),
        max_jobs = config.max_jobs,
        sandbox = config.build.sandbox,
        max_build_processes = config.build.max_processes,
        min_free_space_mib = config.build.min_free_space.map(|b| b >> 20),
        auto_gc_min_free_mib = config.min_free.map(|b| b >> 20),
        auto_gc_max_free_mib = config.max_free.map(|b| b >> 20),
        "ferry daemon {} starting",
        ferry_protocol::FERRY_VERSION
    );
    let daemon = Daemon::with_config(Engine::new(store, config), daemon_config)?;
    let grace = std::time::Duration::from_secs(args.shutdown_grace);
    let rt = runtime()?;
    let served = rt.block_on(async {
        if args.stdio {
            return crate::nix_stdio::serve(daemon).await;
        }
        if let Some(p) = &args.nix_socket {
            crate::nix_stdio::listen(p, &daemon).await?;
            let dir = args.nix_log_dir.clone().or_else(|| {
                (daemon.engine.store().store_dir().as_str() == "/nix/store")
                    .then(|| PathBuf::from("/nix/var/log/nix"))
            });
            if let Some(dir) = dir {
                crate::nix_stdio::link_logs(&dir, &loc.state_dir.join("log"));
            }
        }
        let listener = ferry_daemon::server::bind(&socket)
            .await
            .with_context(|| format!("listening on {}", socket.display()))?;
        tracing::info!("listening on {}", socket.display());
        ferry_daemon::memory::start_idle_trimmer(&daemon.engine);
        ferry_daemon::auto_gc::start(&daemon.engine);
        let stop = stop_signal()?;
        ferry_daemon::server::run_until(listener, daemon, stop, grace).await?;
        anyhow::Ok(())
    });
    // Whatever still runs is cancelled here: builders killed, their
    // outputs and directories removed (as for a client that went away).
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    let spares = ferry_build::spares::remove_all();
    if !args.stdio {
        let _ = std::fs::remove_file(&socket);
    }
    if let (Some(p), false) = (&args.nix_socket, args.stdio) {
        let _ = std::fs::remove_file(p);
    }
    served?;
    tracing::info!(spares, "stopped");
    Ok(ExitCode::SUCCESS)
}

/// Completes on the first SIGTERM or SIGINT.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = String>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{name}: stopping");
        name.to_string()
    })
}
