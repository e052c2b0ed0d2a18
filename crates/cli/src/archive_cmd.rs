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
    /// Import a signed export bundle from standard input
    #[arg(long)]
    import: bool,
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
        for k in Acl::load(config)?.keys() {
            println!("{}  {}", k.fingerprint(), k.to_sexp());
        }
        return Ok(ExitCode::SUCCESS);
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
    // --import
    let check = AclCheck {
        acl: Acl::load(config)?,
    };
    let mut input = BufReader::with_capacity(1 << 20, io::stdin().lock());
    let imported = store.import(&mut input, &check)?;
    let added = imported.iter().filter(|i| i.added).count();
    let mut out = io::stdout().lock();
    for i in &imported {
        writeln!(out, "{}", store.display(&i.path))?;
    }
    eprintln!(
        "imported {} paths ({added} new), each signed by an authorized key",
        imported.len()
    );
    // Anything after the end mark is not ours to read; say so if present.
    if input.fill_buf().map(|b| !b.is_empty()).unwrap_or(false) {
        eprintln!("ferry: warning: data after the end of the bundle was ignored");
    }
    Ok(ExitCode::SUCCESS)
}

/// Standard output as a plain file: Rust's `Stdout` is line-buffered and
/// splits binary writes at every newline byte.
pub fn stdout_file() -> io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::fs::File::from(
        io::stdout().as_fd().try_clone_to_owned()?,
    ))
}
