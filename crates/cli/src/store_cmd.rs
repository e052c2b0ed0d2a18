//! `ferry store ...`: add, dump, restore, hash, path-info, verify.

use std::fs;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use ferry_formats::hash::HashingWriter;
use ferry_formats::nar;
use ferry_store::{PathInfo, Store};
use serde_json::json;

use crate::Cli;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Add files or trees to the store; print their store paths (as `nix-store --add`)
    Add {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write the NAR of any file or tree to stdout (as `nix-store --dump`)
    Dump { path: PathBuf },
    /// Restore a NAR read from stdin as the new tree DIR (as `nix-store --restore`)
    Restore { dir: PathBuf },
    /// Print the SHA-256 of the NAR of any file or tree (as `nix-hash --type sha256`)
    Hash(HashArgs),
    /// Show what the database knows about valid store paths
    PathInfo {
        #[arg(required = true)]
        paths: Vec<String>,
        /// Print JSON (an array of objects) instead of text
        #[arg(long)]
        json: bool,
    },
    /// Check every valid path's NAR hash and size against the database, and
    /// report entries of the store directory that are not valid paths
    Verify {
        /// Remove the entries that are not valid paths (leftovers of crashed
        /// or failed builds); entries being built now are left alone
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Args)]
pub struct HashArgs {
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
        StoreCommand::Add { paths } => add(&cli.open_store()?, paths),
        StoreCommand::Dump { path } => dump(path),
        StoreCommand::Restore { dir } => restore(dir),
        StoreCommand::Hash(args) => hash(args),
        StoreCommand::PathInfo { paths, json } => path_info(&cli.open_store()?, paths, *json),
        StoreCommand::Verify { repair } => verify(&cli.open_store()?, *repair),
    }
}

fn add(store: &Store, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    for p in paths {
        let name = p.file_name().and_then(|n| n.to_str()).with_context(|| {
            format!(
                "{}: cannot take a store path name from this path",
                p.display()
            )
        })?;
        let sp = store
            .add_tree(p, name)
            .with_context(|| format!("adding {}", p.display()))?;
        writeln!(out, "{}", store.display(&sp))?;
    }
    Ok(ExitCode::SUCCESS)
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
    println!(
        "{}",
        if args.base32 {
            h.to_nix32()
        } else {
            h.to_base16()
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn info_json(store: &Store, i: &PathInfo) -> serde_json::Value {
    json!({
        "path": store.display(&i.path),
        "narHash": i.nar_hash.to_typed_nix32(),
        "narSize": i.nar_size,
        "references": i.references.iter().map(|r| store.display(r)).collect::<Vec<_>>(),
        "deriver": i.deriver.as_ref().map(|d| store.display(d)),
        "registrationTime": i.registration_time,
        "signatures": i.signatures,
        "ca": i.ca,
        "valid": true,
    })
}

fn path_info(store: &Store, paths: &[String], as_json: bool) -> anyhow::Result<ExitCode> {
    let mut infos = Vec::new();
    for p in paths {
        let sp = store.parse_path(p)?;
        infos.push(store.valid_info(&sp)?);
    }
    let mut out = io::stdout().lock();
    if as_json {
        let v: Vec<_> = infos.iter().map(|i| info_json(store, i)).collect();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        for i in &infos {
            writeln!(out, "{}", store.display(&i.path))?;
            writeln!(out, "  nar hash:    {}", i.nar_hash)?;
            writeln!(out, "  nar size:    {}", i.nar_size)?;
            writeln!(out, "  references:  {}", i.references.len())?;
            for r in &i.references {
                writeln!(out, "    {}", store.display(r))?;
            }
            if let Some(d) = &i.deriver {
                writeln!(out, "  deriver:     {}", store.display(d))?;
            }
            writeln!(
                out,
                "  registered:  {} (seconds since 1970)",
                i.registration_time
            )?;
            for s in &i.signatures {
                writeln!(out, "  signature:   {s}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(store: &Store, repair: bool) -> anyhow::Result<ExitCode> {
    let count = store.all_valid()?.len();
    let problems = store.verify()?;
    for p in &problems {
        println!("{}: {}", store.display(&p.path), p.problem);
    }
    let mut strays_left = 0;
    for stray in store.stray_entries()? {
        let shown = store.real_store_dir().join(&stray.name);
        if repair && store.remove_stray(&stray)? {
            println!("{}: {}: removed", shown.display(), stray.kind);
        } else {
            println!("{}: {}", shown.display(), stray.kind);
            strays_left += 1;
        }
    }
    if problems.is_empty() {
        eprintln!("checked {count} valid paths: all match the database");
    } else {
        eprintln!(
            "checked {count} valid paths: {} do not match the database",
            problems.len()
        );
    }
    if strays_left > 0 {
        eprintln!(
            "{strays_left} entries of the store directory are not valid paths; `ferry store verify --repair` removes them"
        );
    }
    Ok(if problems.is_empty() && strays_left == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
