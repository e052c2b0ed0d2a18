//! `ferry store ...`: add, dump, restore, hash, path-info, verify.

use std::fs;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use ferry_formats::hash::HashingWriter;
use ferry_formats::nar;
use ferry_store::Store;

use crate::Cli;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Add files or trees to the store; print their store paths (as `nix-store --add`)
    Add {
        /// Files or directories; each store path is named after its file name
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Write the NAR of any file or tree to stdout (as `nix-store --dump`)
    Dump {
        /// The file or directory to archive (any path, in the store or not)
        path: PathBuf,
    },
    /// Restore a NAR read from stdin as the new tree DIR (as `nix-store --restore`)
    Restore {
        /// Where to create the tree; it must not exist yet
        dir: PathBuf,
    },
    /// Print the SHA-256 of the NAR of any file or tree (as `nix-hash --type sha256`)
    Hash(HashArgs),
    /// Show what the database knows about valid store paths (as `nix path-info`)
    PathInfo(crate::path_info_cmd::PathInfoArgs),
    /// Check every valid path's NAR hash and size against the database, and
    /// report entries of the store directory that are not valid paths
    Verify {
        /// Remove the entries that are not valid paths (leftovers of crashed
        /// or failed builds); entries being built now are left alone
        #[arg(long)]
        repair: bool,
    },
    /// Which store, state and configuration this command uses, and the
    /// daemon that serves them (as `nix store ping`)
    Ping,
}

#[derive(Args)]
pub struct HashArgs {
    /// The file or directory to hash (any path, in the store or not)
    path: PathBuf,
    /// Print 64 hex digits (the default, as nix-hash)
    #[arg(long, conflicts_with = "base32")]
    base16: bool,
    /// Print 52 nix32 digits (as nix-hash --base32)
    #[arg(long)]
    base32: bool,
}

pub fn run(cli: &Cli, cmd: &StoreCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StoreCommand::Add { .. } | StoreCommand::PathInfo(_) | StoreCommand::Verify { .. }
            if !store_writable(cli)? =>
        {
            through_daemon(cli, cmd)
        }
        StoreCommand::Ping => ping(cli),
        StoreCommand::Add { paths } => add(&cli.open_store()?, paths),
        StoreCommand::Dump { path } => dump(path),
        StoreCommand::Restore { dir } => restore(dir),
        StoreCommand::Hash(args) => hash(args),
        StoreCommand::PathInfo(args) => {
            let store = cli.open_store()?;
            let mut src = crate::path_info_cmd::Source::Local(&store);
            crate::build_cmd::runtime()?.block_on(crate::path_info_cmd::run(
                &mut src,
                store.store_dir(),
                args,
            ))
        }
        StoreCommand::Verify { repair } => verify(&cli.open_store()?, *repair),
    }
}

fn add(store: &Store, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    for p in paths {
        let name = store_name(p)?;
        let sp = store
            .add_tree(p, name)
            .with_context(|| format!("adding {}", p.display()))?;
        writeln!(out, "{}", store.display(&sp))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn ping(cli: &Cli) -> anyhow::Result<ExitCode> {
    let loc = cli.locations()?;
    let socket = crate::build_cmd::daemon_socket(cli)?;
    let mut out = io::stdout().lock();
    writeln!(out, "store:  {}", loc.store_dir.as_str())?;
    writeln!(out, "state:  {}", loc.state_dir.display())?;
    writeln!(out, "config: {}", loc.config_dir.display())?;
    let daemon = crate::build_cmd::runtime()?
        .block_on(crate::build_cmd::connect(&socket, loc.store_dir.as_str()));
    match daemon {
        Ok(Some(c)) => {
            let w = c.welcome();
            writeln!(
                out,
                "daemon: {} (ferry {}, builds for {})",
                socket.display(),
                w.version,
                w.systems.join(" ")
            )?;
        }
        Ok(None) => writeln!(
            out,
            "daemon: none listens on {} (commands work on the store in-process{})",
            socket.display(),
            if store_writable(cli)? {
                ""
            } else {
                "; this user cannot write it"
            }
        )?,
        Err(e) => writeln!(out, "daemon: {}: {e:#}", socket.display())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The store path name `store add` gives a local file or tree: its own.
fn store_name(p: &Path) -> anyhow::Result<&str> {
    p.file_name().and_then(|n| n.to_str()).with_context(|| {
        format!(
            "{}: cannot take a store path name from this path",
            p.display()
        )
    })
}

fn dump(path: &Path) -> anyhow::Result<ExitCode> {
    let mut out = BufWriter::with_capacity(1 << 16, crate::archive_cmd::stdout_file()?);
    nar::dump(path, &mut out).with_context(|| format!("dumping {}", path.display()))?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn restore(dir: &Path) -> anyhow::Result<ExitCode> {
    if fs::symlink_metadata(dir).is_ok() {
        bail!(
            "{} already exists; `ferry store restore` creates the tree itself: name a path that does not exist",
            dir.display()
        );
    }
    let mut input = BufReader::with_capacity(1 << 20, io::stdin().lock());
    if let Err(e) = nar::restore(&mut input, dir) {
        // Leave nothing half-restored behind.
        let _ = fs::remove_dir_all(dir).or_else(|_| fs::remove_file(dir));
        return Err(e).with_context(|| format!("restoring into {}", dir.display()));
    }
    Ok(ExitCode::SUCCESS)
}

fn hash(args: &HashArgs) -> anyhow::Result<ExitCode> {
    let mut hw = HashingWriter::new(io::sink());
    nar::dump(&args.path, &mut hw).with_context(|| format!("hashing {}", args.path.display()))?;
    let (h, _, _) = hw.finish();
    writeln!(
        io::stdout().lock(),
        "{}",
        if args.base32 {
            h.to_nix32()
        } else {
            h.to_base16()
        }
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Whether this user can write the store (its database and directory):
/// otherwise the daemon does the work, as it does for Nix's clients.
pub(crate) fn store_writable(cli: &Cli) -> anyhow::Result<bool> {
    let loc = cli.locations()?;
    let can = |p: &Path| !p.exists() || rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok();
    Ok(can(&loc.state_dir.join("db/db.sqlite"))
        && can(&loc.state_dir)
        && can(Path::new(loc.store_dir.as_str())))
}

/// The daemon that owns a store this user cannot write; the error says
/// what to do when none listens.
pub(crate) async fn store_daemon(
    cli: &Cli,
) -> anyhow::Result<ferry_protocol::Client<tokio::net::UnixStream>> {
    let loc = cli.locations()?;
    let socket = crate::build_cmd::daemon_socket(cli)?;
    match crate::build_cmd::connect(&socket, loc.store_dir.as_str()).await? {
        Some(c) => Ok(c),
        None => bail!(
            "the store {} is not writable by you and no daemon listens on {}: start `ferry daemon` \
             as the store's owner, or point FERRY_STORE_DIR and FERRY_STATE_DIR at a store of your own",
            loc.store_dir.as_str(),
            socket.display()
        ),
    }
}

/// `store add`, `store path-info` and `store verify` by the daemon.
fn through_daemon(cli: &Cli, cmd: &StoreCommand) -> anyhow::Result<ExitCode> {
    crate::build_cmd::runtime()?.block_on(async {
        let mut client = store_daemon(cli).await?;
        match cmd {
            StoreCommand::Add { paths } => {
                let mut out = io::stdout().lock();
                for p in paths {
                    let name = store_name(p)?;
                    let added = crate::build_cmd::stream_nar_to_daemon(&mut client, p, name)
                        .await
                        .with_context(|| format!("adding {}", p.display()))?;
                    writeln!(out, "{added}")?;
                }
                Ok(ExitCode::SUCCESS)
            }
            StoreCommand::PathInfo(args) => {
                let store_dir = cli.locations()?.store_dir;
                let mut src = crate::path_info_cmd::Source::Daemon(&mut client);
                crate::path_info_cmd::run(&mut src, &store_dir, args).await
            }
            StoreCommand::Verify { repair } => {
                let (lines, summary, ok) = client.verify(*repair).await?;
                print_report(&lines, &summary, ok)
            }
            _ => unreachable!("only add, path-info and verify go through the daemon"),
        }
    })
}

fn verify(store: &Store, repair: bool) -> anyhow::Result<ExitCode> {
    let r = store.verify_report(repair)?;
    print_report(&r.lines, &r.summary, r.ok)
}

fn print_report(lines: &[String], summary: &[String], ok: bool) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    for l in summary {
        eprintln!("{l}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
