//! `ferry`: the command line. It parses arguments, calls the library crates
//! and prints results; it holds no logic of its own beyond turning errors
//! into messages that say what to do.

mod archive_cmd;
mod build_cmd;
mod daemon_cmd;
mod derivation_cmd;
mod gc_cmd;
mod offload_cmd;
mod progress;
mod settings;
mod store_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use ferry_store::{Locations, Store};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "A build daemon that offloads derivation builds to other machines over SSH",
    propagate_version = true
)]
struct Cli {
    /// Store directory (part of every store path's hash) [env: FERRY_STORE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<String>,
    /// State directory: database, locks, logs [env: FERRY_STATE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Configuration directory: keys, ACL, machines.scm [env: FERRY_CONFIG_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build derivations (build files or .drv paths); print the output paths
    Build(build_cmd::BuildArgs),
    /// Run the build daemon
    Daemon(daemon_cmd::DaemonArgs),
    /// Print the log of a derivation's last build
    Log {
        /// The .drv store path
        drv: String,
    },
    /// Signing keys, the ACL, and signed export bundles (as `guix archive`)
    Archive(archive_cmd::ArchiveArgs),
    /// Work with the store: add, dump, restore, hash, path-info, verify
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
    /// Inspect derivations, or add them from build files
    #[command(subcommand)]
    Derivation(derivation_cmd::DerivationCommand),
    /// Build machines: the machines file
    #[command(subcommand)]
    Offload(offload_cmd::OffloadCommand),
    /// Collect garbage: delete store paths no root keeps (as `guix gc`)
    Gc(gc_cmd::GcArgs),
}

impl Cli {
    fn locations(&self) -> anyhow::Result<Locations> {
        Ok(Locations::resolve(
            self.store.clone(),
            self.state_dir.clone(),
            self.config_dir.clone(),
        )?)
    }

    /// The store, with every path this process adds or finds valid kept
    /// from collection until it exits (a daemon may collect meanwhile).
    fn open_store(&self) -> anyhow::Result<Store> {
        let store = Store::open(self.locations()?)?;
        if let Ok(roots) = store.temp_roots() {
            store.set_process_roots(std::sync::Arc::new(roots));
        }
        Ok(store)
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    settings::remember(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match &cli.command {
        Command::Archive(args) => archive_cmd::run(&cli, args),
        Command::Build(args) => build_cmd::build(&cli, args),
        Command::Daemon(args) => daemon_cmd::daemon(&cli, args),
        Command::Log { drv } => build_cmd::log(&cli, drv),
        Command::Store(cmd) => store_cmd::run(&cli, cmd),
        Command::Derivation(cmd) => derivation_cmd::run(&cli, cmd),
        Command::Offload(cmd) => offload_cmd::run(&cli, cmd),
        Command::Gc(args) => gc_cmd::run(&cli, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::from(141);
            }
            eprintln!("ferry: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A reader that went away (`ferry store dump | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
