//! `ferry derivation show`: a .drv as JSON, in the shape of
//! `nix show-derivation`, after checking that its recorded output paths are
//! the ones its contents imply.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Subcommand;
use ferry_formats::derivation::{self, Derivation, DerivationError, DrvHashCache};
use ferry_formats::StoreDir;
use serde_json::{json, Map, Value};

use crate::Cli;

#[derive(Subcommand)]
pub enum DerivationCommand {
    /// Print a derivation (.drv file, anywhere) as JSON keyed by its store path
    Show { file: PathBuf },
}

pub fn run(cli: &Cli, cmd: &DerivationCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DerivationCommand::Show { file } => show(&cli.locations()?.store_dir, file),
    }
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
    println!("{}", serde_json::to_string_pretty(&out)?);
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
                v.insert("hash".into(), json!(o.hash));
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
