//! `ferry archive`: what `guix archive` does for the offload facility:
//! signing keys, the ACL, and signed export bundles.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args};
use ferry_formats::Sha256Hash;
use ferry_trust::{keys, signature, Acl, AclCheck, PublicKey};

use crate::Cli;

#[derive(Args)]
#[command(group(ArgGroup::new("action").required(true).args([
    "generate_key", "authorize", "deauthorize", "export", "import", "missing", "list_keys"
])))]
pub struct ArchiveArgs {
    /// Create signing-key.pub and signing-key.sec in the configuration directory
    #[arg(long)]
    generate_key: bool,
    /// With --generate-key: replace an existing key pair
    #[arg(long, requires = "generate_key")]
    force: bool,
    /// Add the public key read on standard input to the ACL
    #[arg(long)]
    authorize: bool,
    /// Remove the public key read on standard input from the ACL
    #[arg(long)]
    deauthorize: bool,
    /// List the keys of the ACL with their fingerprints
    #[arg(long)]
    list_keys: bool,
    /// Write a signed export bundle of PATHS to standard output
    #[arg(long)]
    export: bool,
    /// With --export: the whole closure of PATHS, dependencies first
    #[arg(short = 'r', long, requires = "export")]
    recursive: bool,
    /// Import a signed export bundle from standard input (through the
    /// daemon when one listens)
    #[arg(long)]
    import: bool,
    /// With --import: accept items not signed by a key in the ACL (through
    /// a daemon: trusted users only)
    #[arg(long, requires = "import")]
    no_check_sigs: bool,
    /// Read store paths on standard input; print those not valid here
    #[arg(long)]
    missing: bool,
    /// Store paths to export
    paths: Vec<String>,
}

fn read_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    io::stdin()
        .read_to_string(&mut s)
        .context("reading standard input")?;
    Ok(s)
}

pub fn run(cli: &Cli, args: &ArchiveArgs) -> anyhow::Result<ExitCode> {
    let loc = cli.locations()?;
    let config = &loc.config_dir;
    if args.generate_key {
        let key = keys::generate_key_files(config, args.force)?;
        let (public, secret) = keys::key_files(config);
        eprintln!(
            "created the key pair {} (fingerprint {}) and {} (secret, mode 0600)",
            public.display(),
            key.fingerprint(),
            secret.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.authorize || args.deauthorize {
        let key = PublicKey::parse(read_stdin()?.trim())?;
        let mut acl = Acl::load(config)?;
        let fp = key.fingerprint();
        let changed = if args.authorize {
            acl.authorize(key)
        } else {
            acl.deauthorize(&key)
        };
        if changed {
            acl.save(config)?;
        }
        let what = match (args.authorize, changed) {
            (true, true) => "authorized",
            (true, false) => "was already authorized",
            (false, true) => "deauthorized",
            (false, false) => "was not authorized",
        };
        eprintln!("key {fp} {what} ({})", Acl::path(config).display());
        return Ok(ExitCode::SUCCESS);
    }
    if args.list_keys {
        let mut out = io::stdout().lock();
        for k in Acl::load(config)?.keys() {
            writeln!(out, "{}  {}", k.fingerprint(), k.to_sexp())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.import {
        if let Some(code) = import_through_daemon(cli, args.no_check_sigs)? {
            return Ok(code);
        }
    }
    if args.missing && !crate::store_cmd::store_writable(cli)? {
        // The daemon answers which paths it lacks.
        let wanted: Vec<String> = read_stdin()?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        return crate::build_cmd::runtime()?.block_on(async {
            let mut client = crate::store_cmd::store_daemon(cli).await?;
            let valid: std::collections::BTreeSet<String> = client
                .query_valid(wanted.clone())
                .await?
                .into_iter()
                .collect();
            let mut out = io::stdout().lock();
            for p in wanted.iter().filter(|p| !valid.contains(*p)) {
                writeln!(out, "{p}")?;
            }
            Ok(ExitCode::SUCCESS)
        });
    }
    if args.export && !args.paths.is_empty() && !crate::store_cmd::store_writable(cli)? {
        // The daemon exports, signed with its key (this user cannot read it).
        return crate::build_cmd::runtime()?.block_on(async {
            let mut client = crate::store_cmd::store_daemon(cli).await?;
            let out = tokio::fs::File::from_std(stdout_file()?);
            let mut out = tokio::io::BufWriter::with_capacity(1 << 16, out);
            client
                .export(args.paths.clone(), args.recursive, &mut out)
                .await?;
            tokio::io::AsyncWriteExt::flush(&mut out).await?;
            Ok(ExitCode::SUCCESS)
        });
    }
    let store = cli.open_store()?;
    if args.missing {
        let mut out = io::stdout().lock();
        for line in read_stdin()?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            let p = store.parse_path(line)?;
            if !store.is_valid(&p)? {
                writeln!(out, "{line}")?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.export {
        if args.paths.is_empty() {
            bail!("--export needs the store paths to export");
        }
        let key = keys::load_secret_key(config)?;
        let paths = args
            .paths
            .iter()
            .map(|p| store.parse_path(p))
            .collect::<Result<Vec<_>, _>>()?;
        let sign = |d: &Sha256Hash| Ok(signature::sign(&key, d));
        let mut out = BufWriter::with_capacity(1 << 16, stdout_file()?);
        store.export(&paths, args.recursive, &mut out, Some(&sign))?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    // --import, without a daemon
    let check = AclCheck {
        acl: Acl::load(config)?,
    };
    let mut input = BufReader::with_capacity(1 << 20, io::stdin().lock());
    let imported = if args.no_check_sigs {
        store.import(&mut input, &ferry_store::AcceptAll)?
    } else {
        store.import(&mut input, &check)?
    };
    let added = imported.iter().filter(|i| i.added).count();
    let mut out = io::stdout().lock();
    for i in &imported {
        writeln!(out, "{}", store.display(&i.path))?;
    }
    eprintln!(
        "imported {} paths ({added} new){}",
        imported.len(),
        if args.no_check_sigs {
            ", signatures not checked (--no-check-sigs)"
        } else {
            ", each signed by an authorized key"
        }
    );
    // Anything after the end mark is not ours to read; say so if present.
    if input.fill_buf().map(|b| !b.is_empty()).unwrap_or(false) {
        eprintln!("ferry: warning: data after the end of the bundle was ignored");
    }
    Ok(ExitCode::SUCCESS)
}

/// `--import` through the daemon if one listens (the way for a user who
/// cannot write the store); `None` when none does.
fn import_through_daemon(cli: &Cli, no_check_sigs: bool) -> anyhow::Result<Option<ExitCode>> {
    let loc = cli.locations()?;
    let socket = crate::build_cmd::daemon_socket(cli)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let Some(mut client) = crate::build_cmd::connect(&socket, loc.store_dir.as_str()).await?
        else {
            return Ok(None);
        };
        use std::os::fd::AsFd;
        let stdin = std::fs::File::from(io::stdin().as_fd().try_clone_to_owned()?);
        let mut input = tokio::fs::File::from_std(stdin);
        let paths = client
            .import_with(&mut input, no_check_sigs)
            .await
            .context("importing through the daemon")?;
        let mut out = io::stdout().lock();
        for p in &paths {
            writeln!(out, "{p}")?;
        }
        eprintln!("imported {} paths through the daemon", paths.len());
        Ok(Some(ExitCode::SUCCESS))
    })
}

/// Standard output as a plain file: Rust's `Stdout` is line-buffered and
/// splits binary writes at every newline byte.
pub fn stdout_file() -> io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::fs::File::from(
        io::stdout().as_fd().try_clone_to_owned()?,
    ))
}
