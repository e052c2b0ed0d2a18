//! `ferry store path-info` (as `nix path-info`: `-r` the closure, `-s` the
//! NAR size, `-S` the closure size, `--json`) and the one rule by which
//! `path-info` and `ferry log` turn what a user typed into a store path: a
//! store path, a path inside one (`STORE/HASH-name/bin/x`), or a symlink to
//! either (`./result`), as Nix's `followLinksToStorePath`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use ferry_formats::StoreDir;
use ferry_protocol::{Client, PathInfo};
use ferry_store::Store;
use serde_json::json;
use tokio::net::UnixStream;

#[derive(Args)]
pub struct PathInfoArgs {
    /// Store paths, paths inside them (STORE/HASH-NAME/bin/x) or symlinks
    /// to them (./result)
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// Print JSON (an array of objects, camelCase keys as `nix path-info
    /// --json`) instead of text
    #[arg(long)]
    pub json: bool,
    /// Show the closure of the paths: every path they reference,
    /// transitively, one a line
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// Show each path's NAR size in bytes (a column, or "narSize")
    #[arg(long, short = 's')]
    pub size: bool,
    /// Show the sum of the NAR sizes of each path's closure (a column, or
    /// "closureSize")
    #[arg(long, short = 'S')]
    pub closure_size: bool,
}

/// The store path a user means by `arg`: `arg` itself, the store path it
/// lies in, or (for a path outside the store, such as a `./result` link)
/// the store path its real location lies in.
pub fn resolve(store_dir: &StoreDir, arg: &str) -> anyhow::Result<String> {
    if let Ok((p, _)) = store_dir.parse_inside(arg) {
        return Ok(store_dir.display(&p));
    }
    // Follow symlinks outside the store to where they lead.
    let not_in = format!("{arg} is not in the store directory {}", store_dir.as_str());
    let real = match Path::new(arg).canonicalize() {
        Ok(r) => r,
        Err(e) => bail!("{not_in} ({e}); give a store path, a path inside one or a link to one"),
    };
    match real.to_str().map(|r| store_dir.parse_inside(r)) {
        Some(Ok((p, _))) => Ok(store_dir.display(&p)),
        _ if real == Path::new(arg) => {
            bail!("{not_in}; give a store path, a path inside one or a link to one")
        }
        _ => bail!(
            "{not_in} (it leads to {}); give a store path, a path inside one or a link to one",
            real.display()
        ),
    }
}

/// Where path information comes from: the store, or the daemon that owns it.
pub enum Source<'a> {
    Local(&'a Store),
    Daemon(&'a mut Client<UnixStream>),
}

impl Source<'_> {
    /// The subset of `paths` that is valid.
    pub async fn valid(&mut self, paths: &[String]) -> anyhow::Result<Vec<String>> {
        match self {
            Source::Local(store) => {
                let parsed = paths
                    .iter()
                    .map(|p| store.parse_path(p))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(store
                    .query_valid(&parsed)?
                    .iter()
                    .map(|p| store.display(p))
                    .collect())
            }
            Source::Daemon(client) => Ok(client.query_valid(paths.to_vec()).await?),
        }
    }

    /// The information on a valid path; an error names an invalid one.
    pub async fn info(&mut self, path: &str) -> anyhow::Result<PathInfo> {
        match self {
            Source::Local(store) => {
                let sp = store.parse_path(path)?;
                match store.path_info(&sp)? {
                    Some(i) => Ok(ferry_daemon::session::wire_info(store, i)),
                    None => bail!("{path} is not valid in the store"),
                }
            }
            Source::Daemon(client) => match client.path_info(path).await? {
                Some(i) => Ok(i),
                None => bail!("{path} is not valid in the store"),
            },
        }
    }
}

/// Infos of `roots` and (when asked) of their closure, by path.
pub(crate) async fn gather(
    src: &mut Source<'_>,
    roots: &[String],
    closure: bool,
) -> anyhow::Result<BTreeMap<String, PathInfo>> {
    let mut infos = BTreeMap::new();
    let mut todo: Vec<String> = roots.to_vec();
    while let Some(p) = todo.pop() {
        if infos.contains_key(&p) {
            continue;
        }
        let i = src.info(&p).await?;
        if closure {
            todo.extend(
                i.references
                    .iter()
                    .filter(|r| !infos.contains_key(*r))
                    .cloned(),
            );
        }
        infos.insert(p, i);
    }
    Ok(infos)
}

/// The sum of the NAR sizes of `path`'s closure (all of it in `infos`).
fn closure_size(infos: &BTreeMap<String, PathInfo>, path: &str) -> u64 {
    let mut seen = BTreeSet::new();
    let mut todo = vec![path];
    let mut total = 0u64;
    while let Some(p) = todo.pop() {
        if !seen.insert(p) {
            continue;
        }
        if let Some(i) = infos.get(p) {
            total = total.saturating_add(i.nar_size);
            todo.extend(i.references.iter().map(String::as_str));
        }
    }
    total
}

pub async fn run(
    src: &mut Source<'_>,
    store_dir: &StoreDir,
    args: &PathInfoArgs,
) -> anyhow::Result<ExitCode> {
    let mut roots = Vec::new();
    for a in &args.paths {
        let p = resolve(store_dir, a)?;
        if !roots.contains(&p) {
            roots.push(p);
        }
    }
    let infos = gather(src, &roots, args.recursive || args.closure_size).await?;
    // Nix prints the closure sorted (by store path); the paths given, in
    // the order given.
    let shown: Vec<&PathInfo> = if args.recursive {
        infos.values().collect()
    } else {
        roots.iter().filter_map(|p| infos.get(p)).collect()
    };
    let mut out = io::stdout().lock();
    if args.json {
        let v: Vec<_> = shown
            .iter()
            .map(|i| {
                let mut j = info_json(i);
                if args.closure_size {
                    j["closureSize"] = json!(closure_size(&infos, &i.path));
                }
                j
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else if args.recursive || args.size || args.closure_size {
        // `nix path-info`'s columns: the path, padded, then each size.
        let width = shown.iter().map(|i| i.path.len()).max().unwrap_or(0);
        for i in &shown {
            write!(out, "{}", i.path)?;
            if args.size || args.closure_size {
                write!(out, "{}", " ".repeat(width - i.path.len()))?;
            }
            if args.size {
                write!(out, "\t{:>11}", i.nar_size)?;
            }
            if args.closure_size {
                write!(out, "\t{:>11}", closure_size(&infos, &i.path))?;
            }
            writeln!(out)?;
        }
    } else {
        for i in &shown {
            print_long(&mut out, i)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn info_json(i: &PathInfo) -> serde_json::Value {
    json!({
        "path": i.path,
        "narHash": i.nar_hash,
        "narSize": i.nar_size,
        "references": i.references,
        "deriver": i.deriver,
        "registrationTime": i.registration_time,
        "signatures": i.signatures,
        "ca": i.ca,
        "valid": true,
    })
}

fn print_long(out: &mut impl Write, i: &PathInfo) -> io::Result<()> {
    writeln!(out, "{}", i.path)?;
    writeln!(out, "  nar hash:    {}", i.nar_hash)?;
    writeln!(out, "  nar size:    {}", i.nar_size)?;
    writeln!(out, "  references:  {}", i.references.len())?;
    for r in &i.references {
        writeln!(out, "    {r}")?;
    }
    if let Some(d) = &i.deriver {
        writeln!(out, "  deriver:     {d}")?;
    }
    writeln!(
        out,
        "  registered:  {} (seconds since 1970)",
        i.registration_time
    )?;
    for s in &i.signatures {
        writeln!(out, "  signature:   {s}")?;
    }
    Ok(())
}

/// The `.drv` whose log `ferry log ARG` shows: ARG's store path when it is
/// a `.drv`, else the deriver the store records for it (as `nix log`).
pub async fn log_target(
    src: &mut Source<'_>,
    store_dir: &StoreDir,
    arg: &str,
) -> anyhow::Result<String> {
    let p = resolve(store_dir, arg)?;
    if p.ends_with(".drv") {
        return Ok(p);
    }
    let info = src
        .info(&p)
        .await
        .with_context(|| format!("finding the derivation that built {p}"))?;
    match info.deriver {
        Some(d) => Ok(d),
        None => bail!(
            "{p} has no recorded deriver (it was added to the store, not built here), so it has no build log"
        ),
    }
}
