//! `ferry offload ...`: the machines file (`machines`), `test` (is every
//! machine set up?) and `status` (how is every machine doing?).

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
        /// Print a JSON array, one object per machine: its machines.scm
        /// fields with camelCase keys (hostKey, parallelBuilds...), every
        /// default filled in, and "error": why the machine is not used, or
        /// null
        #[arg(long)]
        json: bool,
    },
    /// Check every machine: SSH and host key, ferry in PATH, the daemon and
    /// store directory, an item sent there and one fetched back
    Test {
        /// The machines file [default: machines.scm in the configuration directory]
        file: Option<PathBuf>,
        /// Only the machines whose name matches this regular expression
        regex: Option<String>,
    },
    /// Show every machine's state: reachable, load, free space, slots, clock
    Status {
        /// The machines file [default: machines.scm in the configuration directory]
        file: Option<PathBuf>,
        /// Only the machines whose name matches this regular expression
        regex: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Redraw every N seconds on a terminal (q or Ctrl-C to quit); not on
        /// a terminal, print a table every N seconds
        #[arg(long, value_name = "SECONDS")]
        watch: Option<u64>,
    },
}

fn machines_file(cli: &Cli, file: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match file {
        Some(f) => f.clone(),
        None => cli.locations()?.config_dir.join("machines.scm"),
    })
}

/// The machines of `file` whose name matches `regex`.
fn selected(file: &std::path::Path, regex: &Option<String>) -> anyhow::Result<Vec<BuildMachine>> {
    let loaded =
        load_machines_file(file, EvalContext::from_process()).map_err(|e| anyhow!("{e}"))?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let re = regex
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| anyhow!("bad regular expression: {e}"))?;
    Ok(loaded
        .machines
        .into_iter()
        .filter(|m| re.as_ref().is_none_or(|r| r.is_match(&m.name)))
        .collect())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn test(cli: &Cli, file: &std::path::Path, regex: &Option<String>) -> anyhow::Result<ExitCode> {
    let machines = selected(file, regex)?;
    let store = std::sync::Arc::new(cli.open_store()?);
    let key = std::sync::Arc::new(ferry_trust::keys::load_secret_key(
        &store.locations().config_dir,
    )?);
    let reports = runtime()?.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, m) in machines.into_iter().enumerate() {
            let (store, key) = (store.clone(), key.clone());
            tasks.spawn(async move {
                let r = match m.error_line() {
                    // Its machines.scm entry is unusable: not connected to.
                    Some(e) => ferry_daemon::offload::check::TestReport {
                        machine: m.name.clone(),
                        passed: Vec::new(),
                        failed: Some(format!(
                            "not tested, its machines.scm entry is unusable: {e}"
                        )),
                        ferry_version: None,
                        seconds: 0.0,
                    },
                    None => ferry_daemon::offload::check::test_machine(&m, &store, &key).await,
                };
                match &r.failed {
                    None => eprintln!("{}: ok ({:.2} s)", r.machine, r.seconds),
                    Some(e) if r.passed.is_empty() => eprintln!("{}: FAILED: {e}", r.machine),
                    Some(e) => {
                        eprintln!("{}: FAILED after {}: {e}", r.machine, r.passed.join(", "))
                    }
                }
                (i, r)
            });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r.expect("test task panicked"));
        }
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
    });
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.machine.clone(),
                if r.ok() { "ok".into() } else { "FAILED".into() },
                format!("{}/5", r.passed.len()),
                r.ferry_version.clone().unwrap_or_else(|| "-".into()),
                format!("{:.2}", r.seconds),
            ]
        })
        .collect();
    let mut out = io::stdout().lock();
    print_table(
        &mut out,
        &["MACHINE", "RESULT", "STEPS", "FERRY", "SECONDS"],
        &rows,
    )?;
    let failed = reports.iter().filter(|r| !r.ok()).count();
    writeln!(out, "{} machine(s) tested, {failed} failed", reports.len())?;
    Ok(if failed == 0 || reports.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
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
        OffloadCommand::Test { file, regex } => test(cli, &machines_file(cli, file)?, regex),
        OffloadCommand::Status {
            file,
            regex,
            json,
            watch,
        } => crate::offload_status::status(cli, &machines_file(cli, file)?, regex, *json, *watch),
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
    for (r, m) in rows.iter().zip(machines) {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
        for e in m.error.iter().flat_map(|e| e.lines()) {
            writeln!(out, "  error: {e}")?;
        }
    }
    match machines.iter().filter(|m| m.error.is_some()).count() {
        0 => writeln!(out, "{} machine(s)", machines.len()),
        n => writeln!(
            out,
            "{} machine(s), {n} with an error: not used until it is fixed",
            machines.len()
        ),
    }
}
