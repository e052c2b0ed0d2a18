//! `ferry`: the command line. It parses arguments, calls the library crates
//! and prints results; it holds no logic of its own beyond turning errors
//! into messages that say what to do.
#![forbid(unsafe_code)]

mod archive_cmd;
mod build_cmd;
mod daemon_cmd;
mod derivation_cmd;
mod dry_run;
mod gc_cmd;
mod generate_cmd;
mod log_cmd;
mod nix_stdio;
mod offload_cmd;
mod offload_status;
mod offload_table;
mod offload_watch;
mod path_info_cmd;
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
    /// Print the log of a derivation's last build (as `nix log`)
    Log {
        /// A .drv store path, an output path (the log of the derivation
        /// that built it) or a path inside one
        #[arg(value_name = "PATH")]
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
    /// Print a shell completion script for ferry to stdout
    Completions(generate_cmd::CompletionsArgs),
    /// Write man pages for ferry and each of its commands into a directory
    Man(generate_cmd::ManArgs),
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
    quiet_broken_pipe_panics();
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        // A usage error exits 1 as Nix's (clap's own is 2); --help and
        // --version print to stdout and exit 0.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    settings::remember(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match &cli.command {
        Command::Archive(args) => archive_cmd::run(&cli, args),
        Command::Build(args) => build_cmd::build(&cli, args),
        Command::Daemon(args) => daemon_cmd::daemon(&cli, args),
        Command::Log { drv } => log_cmd::log(&cli, drv),
        Command::Store(cmd) => store_cmd::run(&cli, cmd),
        Command::Derivation(cmd) => derivation_cmd::run(&cli, cmd),
        Command::Offload(cmd) => offload_cmd::run(&cli, cmd),
        Command::Gc(args) => gc_cmd::run(&cli, args),
        Command::Completions(args) => generate_cmd::completions(args),
        Command::Man(args) => generate_cmd::man(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::from(BROKEN_PIPE_EXIT);
            }
            eprintln!("{}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error as one line of text: each cause after its context, except a
/// cause whose text its context already says (an error type that prints
/// its source, `...: Permission denied (os error 13)`, would say it
/// twice), under `ferry: error: `, or as it is when it names its own place
/// and kind (`FILE:LINE:COL: error: ...` from a Scheme file, as compilers
/// and Guile print).
fn error_text(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if msg.contains(&s) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    let located = regex::Regex::new(r"^\S+:\d+:\d+: error: ").expect("a valid regex");
    if located.is_match(&msg) {
        msg
    } else {
        format!("ferry: error: {msg}")
    }
}

/// Exit status when stdout's reader went away: the one a shell shows for a
/// process killed by SIGPIPE (128 + 13), as coreutils' commands end.
const BROKEN_PIPE_EXIT: u8 = 141;

/// A reader that went away (`ferry store dump | head`) is not an error:
/// an `io::Error` of kind `BrokenPipe` anywhere in the chain, also inside
/// a JSON serializer's error. SIGPIPE stays ignored (Rust's default): the
/// engine of an embedded build writes to SSH pipes and sockets, where a
/// closed peer must be an error, not the end of the process.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// The last guard: a `print!` or `eprint!` somewhere (a library, a
/// progress line) that panics on a closed stdout or stderr (`ferry build
/// 2>&1 | head -1`) ends the process as a broken pipe does, without a
/// panic message.
fn quiet_broken_pipe_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let printing = msg.starts_with("failed printing to stdout")
            || msg.starts_with("failed printing to stderr");
        if printing && msg.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE_EXIT.into());
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source, under a context: the source's text
    /// once.
    #[test]
    fn a_cause_its_context_repeats_is_said_once() {
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "opening /x: {}", self.0)
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::from_raw_os_error(13);
        let e = anyhow::Error::from(Wrapped(io)).context("reading the store");
        assert_eq!(
            error_text(&e),
            "ferry: error: reading the store: opening /x: Permission denied (os error 13)"
        );
        let e = anyhow::anyhow!("f.scm:1:2: error: unbound variable x");
        assert_eq!(error_text(&e), "f.scm:1:2: error: unbound variable x");
    }

    /// Nix 2.8's `Worker::exitStatus`: 100, 101 timed out, 102 hash
    /// mismatch, 103 both.
    #[test]
    fn exit_status_bits_are_nix_s() {
        use ferry_protocol::{BuildResult, BuildStatus, FailureKind};
        let r = |status, failure| BuildResult {
            drv: "/s/x.drv".into(),
            status,
            outputs: Default::default(),
            error: None,
            exit_code: None,
            log_tail: Vec::new(),
            failure,
        };
        let st = |rs: &[BuildResult]| build_cmd::exit_status(rs);
        assert_eq!(st(&[r(BuildStatus::Built, FailureKind::Other)]), 0);
        assert_eq!(st(&[r(BuildStatus::Failed, FailureKind::Other)]), 100);
        assert_eq!(st(&[r(BuildStatus::Failed, FailureKind::TimedOut)]), 101);
        assert_eq!(
            st(&[r(BuildStatus::DependencyFailed, FailureKind::HashMismatch)]),
            102
        );
        assert_eq!(
            st(&[
                r(BuildStatus::Failed, FailureKind::TimedOut),
                r(BuildStatus::Failed, FailureKind::HashMismatch),
                r(BuildStatus::AlreadyValid, FailureKind::Other),
            ]),
            103
        );
    }

    /// Every command and argument says what it is for, in users' words.
    #[test]
    fn every_command_and_argument_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let here = format!("{path} {}", cmd.get_name());
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{here}: argument {id} has no help"));
                }
                check_words(&format!("{here} {id}"), &help, missing);
                if let Some(long) = a.get_long_help() {
                    check_words(&format!("{here} {id}"), &long.to_string(), missing);
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                let about = sub.get_about().map(|h| h.to_string()).unwrap_or_default();
                if about.trim().is_empty() {
                    missing.push(format!("{here} {}: no description", sub.get_name()));
                }
                check_words(&format!("{here} {}", sub.get_name()), &about, missing);
                walk(sub, &here, missing);
            }
        }
        fn check_words(what: &str, text: &str, missing: &mut Vec<String>) {
            let lower = text.to_lowercase();
            for word in ["seed", "step ", "issue", "keyed by"] {
                if lower.contains(word) {
                    missing.push(format!("{what}: internal word {word:?} in {text:?}"));
                }
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
