//! `ferry derivation show`: a .drv as JSON, in the shape of
//! `nix show-derivation`, after checking that its recorded output paths are
//! the ones its contents imply; `ferry derivation add`: a build file's
//! derivations written to the store (through the daemon when one listens).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use ferry_build::current_system;
use ferry_formats::derivation::{self, Derivation, DerivationError, DrvHashCache};
use ferry_formats::{StoreDir, StorePath};
use ferry_scheme::{load_build_file, DrvObject, EvalContext};
use ferry_store::Store;
use serde_json::{json, Map, Value};

use crate::Cli;

#[derive(Subcommand)]
pub enum DerivationCommand {
    /// Print a derivation as JSON, in the format of `nix show-derivation`
    Show {
        /// The .drv file (in the store or anywhere else)
        file: PathBuf,
    },
    /// Evaluate a Scheme build file, write its .drv files (and local inputs)
    /// to the store and print the .drv paths it returns
    Add {
        /// The Scheme build file
        file: PathBuf,
        /// System for derivations that do not say [default: this machine's]
        #[arg(long)]
        system: Option<String>,
    },
}

pub fn run(cli: &Cli, cmd: &DerivationCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DerivationCommand::Show { file } => show(&cli.locations()?.store_dir, file),
        DerivationCommand::Add { file, system } => {
            // Through the daemon when one listens, as `ferry build` does.
            let loc = cli.locations()?;
            let socket = crate::build_cmd::daemon_socket(cli)?;
            let via_daemon = crate::build_cmd::runtime()?.block_on(async {
                match crate::build_cmd::connect(&socket, loc.store_dir.as_str()).await? {
                    Some(mut client) => {
                        crate::build_cmd::add_build_file(&mut client, file, system.as_deref())
                            .await
                            .map(Some)
                    }
                    None => Ok::<_, anyhow::Error>(None),
                }
            })?;
            let paths = match via_daemon {
                Some(paths) => paths,
                None => {
                    let store = cli.open_store()?;
                    add_build_file(&store, file, system.as_deref())?
                        .iter()
                        .map(|p| store.display(p))
                        .collect()
                }
            };
            let mut out = std::io::stdout().lock();
            for p in paths {
                writeln!(out, "{p}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Evaluate a build file and write what it describes to the store: local
/// inputs, then each .drv after its inputs. Returns the .drv paths of the
/// derivations the file returned, in order.
pub fn add_build_file(
    store: &Store,
    file: &Path,
    system: Option<&str>,
) -> anyhow::Result<Vec<StorePath>> {
    let system = system.map_or_else(current_system, str::to_string);
    let loaded = load_build_file(
        file,
        EvalContext::from_process(),
        store.store_dir(),
        &system,
    )
    .map_err(|e| anyhow!("{e}"))?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let mut cache = DrvHashCache::new();
    for obj in DrvObject::closure(&loaded.roots) {
        for (local, want) in &obj.sources {
            let got = store
                .add_tree(local, want.name())
                .with_context(|| format!("adding the input {}", local.display()))?;
            if got != *want {
                bail!(
                    "{} changed while the build file was evaluated (now {}); run the command again",
                    local.display(),
                    store.display(&got)
                );
            }
        }
        let mut drv = obj.drv.clone();
        let path = store
            .add_derivation(&mut drv, &mut cache)
            .with_context(|| format!("writing {}", store.display(&obj.drv_path)))?;
        if path != obj.drv_path {
            bail!(
                "internal error: {} was written as {}",
                store.display(&obj.drv_path),
                store.display(&path)
            );
        }
    }
    Ok(loaded.roots.iter().map(|r| r.drv_path.clone()).collect())
}

/// Read and parse a .drv file.
fn load(path: &str) -> anyhow::Result<Derivation> {
    let bytes = fs::read(path).with_context(|| format!("reading the derivation {path}"))?;
    derivation::parse_bytes(&bytes).with_context(|| format!("parsing the derivation {path}"))
}

fn show(store_dir: &StoreDir, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let shown = file.display().to_string();
    let drv = load(&shown)?;
    let name = drv
        .name()
        .ok_or_else(|| anyhow!("{shown}: the derivation has no \"name\" in its environment"))?
        .to_string();
    let mut cache = DrvHashCache::new();
    let mut load_input = |p: &str| -> anyhow::Result<Derivation> {
        store_dir.parse(p).map_err(|e| {
            anyhow!("input derivation {p}: {e} (set FERRY_STORE_DIR to the store it was made for)")
        })?;
        load(p)
    };
    drv.check_outputs(store_dir, &mut cache.lookup(&mut load_input))
        .with_context(|| {
            format!("{shown}: refusing a derivation whose output paths do not match its contents")
        })?;
    let drv_path = drv
        .drv_path(store_dir, &name)
        .map_err(|e: DerivationError| anyhow!("{shown}: {e}"))?;
    let out = json!({ store_dir.display(&drv_path): to_json(&drv) });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?;
    Ok(ExitCode::SUCCESS)
}

fn to_json(d: &Derivation) -> Value {
    let outputs: Map<String, Value> = d
        .outputs
        .iter()
        .map(|(name, o)| {
            let mut v = Map::new();
            v.insert("path".into(), json!(o.path));
            if !o.hash_algo.is_empty() {
                v.insert("hashAlgo".into(), json!(o.hash_algo));
                // Nix shows the hash it parsed, in base16, whatever the
                // spelling in the file (checked by `check_outputs` above).
                let hash = match d.fixed_output_hash() {
                    Some(Ok(f)) => f.hash.to_base16(),
                    _ => o.hash.clone(),
                };
                v.insert("hash".into(), json!(hash));
            }
            (name.clone(), Value::Object(v))
        })
        .collect();
    let input_drvs: BTreeMap<_, _> = d.input_drvs.iter().collect();
    json!({
        "outputs": outputs,
        "inputSrcs": d.input_srcs,
        "inputDrvs": input_drvs,
        "system": d.system,
        "builder": d.builder,
        "args": d.args,
        "env": d.env,
    })
}
