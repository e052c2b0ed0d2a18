//! `ferry offload ...`: the machines file (`machines`); `test` and `status`
//! arrive with step 7.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::Subcommand;
use ferry_scheme::{load_machines_file, BuildMachine, EvalContext};

use crate::Cli;

#[derive(Subcommand)]
pub enum OffloadCommand {
    /// Evaluate the machines file and print its build machines
    Machines {
        /// The machines file [default: machines.scm in the configuration directory]
        file: Option<PathBuf>,
        /// Print a JSON array of objects keyed by the seed's field names
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: &Cli, cmd: &OffloadCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OffloadCommand::Machines { file, json } => {
            let file = match file {
                Some(f) => f.clone(),
                None => cli.locations()?.config_dir.join("machines.scm"),
            };
            machines(file, *json)
        }
    }
}

fn machines(file: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let loaded =
        load_machines_file(&file, EvalContext::from_process()).map_err(|e| anyhow!("{e}"))?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &loaded.machines)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &loaded.machines)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_table(out: &mut impl Write, machines: &[BuildMachine]) -> io::Result<()> {
    let header = [
        "NAME", "SYSTEMS", "USER", "PORT", "SLOTS", "SPEED", "MAX-LOAD", "FEATURES", "HOST-KEY",
    ];
    let rows: Vec<[String; 9]> = machines
        .iter()
        .map(|m| {
            let key_type = m
                .host_key
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            [
                m.name.clone(),
                m.systems.join(","),
                m.user.clone(),
                m.port.to_string(),
                m.parallel_builds.to_string(),
                m.speed.to_string(),
                m.overload_threshold
                    .map_or("off".to_string(), |t| t.to_string()),
                if m.features.is_empty() {
                    "-".into()
                } else {
                    m.features.join(",")
                },
                if m.host_key_is_placeholder() {
                    format!("{key_type} (placeholder!)")
                } else {
                    key_type
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in &rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    writeln!(out, "{} machine(s)", machines.len())
}
