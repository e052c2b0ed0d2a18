//! `ferry gc`: garbage collection and queries about liveness, as `guix gc`
//! (options, size syntax, what it prints). Through the daemon when one
//! listens (it applies its trust rules), on the store directly otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use ferry_protocol::{BuildResult, BuildStatus, Client, GcRequest};
use ferry_store::{GcAction, GcOptions, Store};
use tokio::net::UnixStream;

use crate::build_cmd::{connect, daemon_socket, runtime};
use crate::Cli;

#[derive(Args)]
pub struct GcArgs {
    /// Collect garbage: at least MIN bytes if given (units as --free-space), else all
    #[arg(short = 'C', long, value_name = "MIN", num_args = 0..=1, default_missing_value = "")]
    collect_garbage: Option<String>,
    /// Collect until SIZE is free on the store's file system (e.g. 500MiB, 2G)
    #[arg(short = 'F', long, value_name = "SIZE")]
    free_space: Option<String>,
    /// Delete PATHS if they are dead; refuse (naming the root) if alive (trusted users)
    #[arg(short = 'd', long)]
    delete: bool,
    /// List the permanent roots (every one for trusted users, your own otherwise)
    #[arg(long)]
    list_roots: bool,
    /// List the live store paths
    #[arg(long)]
    list_live: bool,
    /// List the dead store paths
    #[arg(long)]
    list_dead: bool,
    /// List the references of PATHS
    #[arg(long)]
    references: bool,
    /// List the requisites (closure) of PATHS
    #[arg(short = 'R', long)]
    requisites: bool,
    /// List the referrers of PATHS
    #[arg(long)]
    referrers: bool,
    /// Keep the outputs of live derivations [default: the daemon's, else false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    keep_outputs: Option<bool>,
    /// Keep the derivations of live paths [default: the daemon's, else true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    keep_derivations: Option<bool>,
    /// Store paths, for --delete, --references, --requisites, --referrers
    paths: Vec<String>,
}

/// Bytes from a size as `guix gc` reads it: a number (decimals allowed)
/// and a unit, KiB/K/k, MiB/M, GiB/G, TiB/T (powers of 1024), kB, MB,
/// GB, TB (powers of 1000), or none (bytes).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    ferry_config::parse_size(s).map_err(|e| anyhow::anyhow!(e))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn free_bytes(dir: &str) -> u64 {
    ferry_daemon::machine_info::free_bytes(Path::new(dir))
}

/// What to do, from the flags.
enum Op {
    Collect(Option<u64>),
    Delete,
    List(GcRequest),
    Roots,
    Query(&'static str),
}

fn op(args: &GcArgs, store_dir: &str) -> anyhow::Result<Option<Op>> {
    let chosen = [
        args.collect_garbage.is_some(),
        args.free_space.is_some(),
        args.delete,
        args.list_roots,
        args.list_live,
        args.list_dead,
        args.references,
        args.requisites,
        args.referrers,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen > 1 {
        bail!("choose one of -C, -F, --delete, --list-roots, --list-live, --list-dead, --references, --requisites, --referrers");
    }
    let needs_paths = args.delete || args.references || args.requisites || args.referrers;
    if needs_paths && args.paths.is_empty() {
        bail!("name the store paths to work on, e.g. `ferry gc --delete /ferry/store/...-name`");
    }
    if !needs_paths && !args.paths.is_empty() {
        bail!("store paths are for --delete, --references, --requisites and --referrers; `ferry gc` alone collects every dead path");
    }
    Ok(Some(if let Some(size) = &args.free_space {
        let want = parse_size(size)?;
        let free = free_bytes(store_dir);
        if free >= want {
            eprintln!(
                "already {} available on {store_dir}, nothing to do",
                mib(free)
            );
            return Ok(None);
        }
        Op::Collect(Some(want - free))
    } else if let Some(min) = &args.collect_garbage {
        Op::Collect(if min.is_empty() {
            None
        } else {
            Some(parse_size(min)?)
        })
    } else if args.delete {
        Op::Delete
    } else if args.list_roots {
        Op::Roots
    } else if args.list_live {
        Op::List(GcRequest::ListLive)
    } else if args.list_dead {
        Op::List(GcRequest::ListDead)
    } else if args.references {
        Op::Query("references")
    } else if args.requisites {
        Op::Query("requisites")
    } else if args.referrers {
        Op::Query("referrers")
    } else {
        Op::Collect(None)
    }))
}

pub fn run(cli: &Cli, args: &GcArgs) -> anyhow::Result<ExitCode> {
    let loc = cli.locations()?;
    let Some(op) = op(args, loc.store_dir.as_str())? else {
        return Ok(ExitCode::SUCCESS);
    };
    let socket = daemon_socket(cli)?;
    let lines = runtime()?.block_on(async {
        match connect(&socket, loc.store_dir.as_str()).await? {
            Some(client) => with_daemon(client, args, op).await,
            None => embedded(&cli.open_store()?, args, op),
        }
    })?;
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn report_freed(paths: u64, bytes: u64) {
    eprintln!("freed {} ({paths} store paths deleted)", mib(bytes));
}

async fn with_daemon(
    mut c: Client<UnixStream>,
    args: &GcArgs,
    op: Op,
) -> anyhow::Result<Vec<String>> {
    let (ko, kd) = (args.keep_outputs, args.keep_derivations);
    Ok(match op {
        Op::Collect(max_freed) => {
            let (_, deleted, bytes) = c
                .collect_garbage(GcRequest::DeleteDead { max_freed }, ko, kd)
                .await?;
            report_freed(deleted, bytes);
            Vec::new()
        }
        Op::Delete => {
            let req = GcRequest::DeleteSpecific {
                paths: args.paths.clone(),
            };
            let (_, deleted, bytes) = c.collect_garbage(req, ko, kd).await?;
            report_freed(deleted, bytes);
            Vec::new()
        }
        Op::List(req) => c.collect_garbage(req, ko, kd).await?.0,
        Op::Roots => c.find_roots().await?.into_iter().map(|(l, _)| l).collect(),
        Op::Query(what) => {
            let mut out = std::collections::BTreeSet::new();
            let mut todo: Vec<String> = args.paths.clone();
            while let Some(p) = todo.pop() {
                match what {
                    "referrers" => out.extend(c.query_referrers(&p).await?),
                    _ => {
                        let info = c
                            .path_info(&p)
                            .await?
                            .with_context(|| format!("{p} is not a valid store path"))?;
                        if what == "requisites" {
                            if out.insert(p) {
                                todo.extend(info.references);
                            }
                        } else {
                            out.extend(info.references);
                        }
                    }
                }
            }
            out.into_iter().collect()
        }
    })
}

fn embedded(store: &Store, args: &GcArgs, op: Op) -> anyhow::Result<Vec<String>> {
    let opts = |action| GcOptions {
        keep_outputs: args.keep_outputs.unwrap_or(false),
        keep_derivations: args.keep_derivations.unwrap_or(true),
        ..GcOptions::new(action)
    };
    let show = |v: Vec<ferry_formats::StorePath>| v.iter().map(|p| store.display(p)).collect();
    let parsed = || -> anyhow::Result<Vec<_>> {
        args.paths
            .iter()
            .map(|p| {
                store
                    .parse_path(p)
                    .with_context(|| format!("{p}: not a store path"))
            })
            .collect()
    };
    Ok(match op {
        Op::Collect(max_freed) => {
            let r = store.collect_garbage(&opts(GcAction::DeleteDead { max_freed }))?;
            report_freed(r.deleted, r.bytes_freed);
            Vec::new()
        }
        Op::Delete => {
            let r = store.collect_garbage(&opts(GcAction::DeleteSpecific(parsed()?)))?;
            report_freed(r.deleted, r.bytes_freed);
            Vec::new()
        }
        Op::List(req) => {
            let action = match req {
                GcRequest::ListLive => GcAction::ReturnLive,
                _ => GcAction::ReturnDead,
            };
            show(store.collect_garbage(&opts(action))?.paths)
        }
        Op::Roots => store
            .find_roots()?
            .into_keys()
            .map(|l| l.display().to_string())
            .collect(),
        Op::Query(what) => {
            let paths = parsed()?;
            let mut out = std::collections::BTreeSet::new();
            for p in &paths {
                match what {
                    "referrers" => out.extend(store.referrers(p)?),
                    "requisites" => out.extend(store.closure(std::slice::from_ref(p))?),
                    _ => out.extend(store.valid_info(p)?.references),
                }
            }
            show(out.into_iter().collect())
        }
    })
}

/// `--root FILE`: FILE -> the output, or FILE-0, FILE-1, ... for several
/// (as `guix build --root`), absolute. An existing symlink is replaced;
/// anything else there is refused.
pub fn make_root_links(root: &Path, results: &[BuildResult]) -> anyhow::Result<Vec<PathBuf>> {
    let outputs: Vec<&String> = results
        .iter()
        .filter(|r| matches!(r.status, BuildStatus::Built | BuildStatus::AlreadyValid))
        .flat_map(|r| r.outputs.values())
        .collect();
    let root = std::path::absolute(root)
        .with_context(|| format!("--root {}: cannot make it absolute", root.display()))?;
    let mut links = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        let link = match outputs.len() {
            1 => root.clone(),
            _ => PathBuf::from(format!("{}-{i}", root.display())),
        };
        match std::fs::symlink_metadata(&link) {
            Ok(m) if !m.file_type().is_symlink() => bail!(
                "--root: {} exists and is not a symlink; remove it or choose another name",
                link.display()
            ),
            _ => {}
        }
        let tmp = PathBuf::from(format!("{}.tmp-{}", link.display(), std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(out, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &link))
            .with_context(|| format!("--root: creating the symlink {}", link.display()))?;
        links.push(link);
    }
    Ok(links)
}

/// `--root` through a daemon: the links made here, registered there.
pub async fn register_roots_with_daemon(
    client: &mut Client<UnixStream>,
    root: &Path,
    results: &[BuildResult],
) -> anyhow::Result<()> {
    for link in make_root_links(root, results)? {
        client
            .add_indirect_root(&link.to_string_lossy())
            .await
            .with_context(|| format!("registering {} as a root", link.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{make_root_links, parse_size};
    use ferry_protocol::{BuildResult, BuildStatus};

    fn result(outputs: &[(&str, &str)]) -> BuildResult {
        BuildResult {
            drv: "/s/x.drv".into(),
            status: BuildStatus::Built,
            outputs: outputs
                .iter()
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .collect(),
            error: None,
            exit_code: None,
            log_tail: Vec::new(),
            failure: Default::default(),
        }
    }

    #[test]
    fn root_links_are_named_as_guix_build_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("result");
        let one = make_root_links(&root, &[result(&[("out", "/s/a")])]).unwrap();
        assert_eq!(one, vec![root.clone()]);
        assert_eq!(std::fs::read_link(&root).unwrap().to_str(), Some("/s/a"));
        // Again: the symlink is replaced.
        make_root_links(&root, &[result(&[("out", "/s/b")])]).unwrap();
        assert_eq!(std::fs::read_link(&root).unwrap().to_str(), Some("/s/b"));
        let two = make_root_links(
            &root,
            &[
                result(&[("dev", "/s/d"), ("out", "/s/o")]),
                result(&[("out", "/s/p")]),
            ],
        )
        .unwrap();
        let names: Vec<_> = two
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["result-0", "result-1", "result-2"]);
        assert_eq!(std::fs::read_link(&two[2]).unwrap().to_str(), Some("/s/p"));
        // Not a symlink: refused.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(make_root_links(&file, &[result(&[("out", "/s/a")])]).is_err());
    }

    #[test]
    fn sizes_read_as_guix_gc_reads_them() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size("2K").unwrap(), 2048);
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("3GiB").unwrap(), 3 << 30);
        assert_eq!(parse_size("2MB").unwrap(), 2_000_000);
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("-1M").is_err());
    }
}
