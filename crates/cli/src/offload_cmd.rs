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
        /// Print a JSON array of objects, one per machine, with its fields
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
        /// Refresh every N seconds
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
                let r = ferry_daemon::offload::check::test_machine(&m, &store, &key).await;
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

fn status(
    cli: &Cli,
    file: &std::path::Path,
    regex: &Option<String>,
    json: bool,
    watch: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let store_dir = cli.locations()?.store_dir.to_string();
    let socket = crate::build_cmd::daemon_socket(cli)?;
    let rt = runtime()?;
    loop {
        let machines = selected(file, regex)?;
        // The running daemon's view (its slots in use, back-off), if any.
        let daemon_view: std::collections::HashMap<String, ferry_protocol::FarmMachine> = rt
            .block_on(async {
                match crate::build_cmd::connect(&socket, &store_dir).await {
                    Ok(Some(mut c)) => c.farm_status().await.unwrap_or_default(),
                    _ => Vec::new(),
                }
            })
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect();
        let reports = rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, m) in machines.into_iter().enumerate() {
                let store_dir = store_dir.clone();
                // A running daemon's recent measurement (over its pooled
                // connection) spares a new SSH connection.
                if let Some(report) = daemon_view.get(&m.name).and_then(|d| from_daemon(&m, d)) {
                    tasks.spawn(async move { (i, report) });
                    continue;
                }
                tasks.spawn(async move {
                    (
                        i,
                        ferry_daemon::offload::check::status_machine(
                            &m,
                            &store_dir,
                            std::time::Duration::from_secs(5),
                        )
                        .await,
                    )
                });
            }
            let mut out = Vec::new();
            while let Some(r) = tasks.join_next().await {
                out.push(r.expect("status task panicked"));
            }
            out.sort_by_key(|(i, _)| *i);
            out.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
        });
        let mut out = io::stdout().lock();
        if json {
            let rows: Vec<serde_json::Value> = reports
                .iter()
                .map(|r| {
                    let mut v = serde_json::to_value(r).expect("serializable");
                    v["daemon"] =
                        serde_json::to_value(daemon_view.get(&r.machine)).expect("serializable");
                    v
                })
                .collect();
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        } else {
            let rows: Vec<Vec<String>> = reports
                .iter()
                .map(|r| match &r.info {
                    Some(i) => vec![
                        r.machine.clone(),
                        "up".into(),
                        r.systems.join(","),
                        if r.features.is_empty() {
                            "-".into()
                        } else {
                            r.features.join(",")
                        },
                        format!(
                            "{}/{}",
                            daemon_view
                                .get(&r.machine)
                                .map_or(i.builds_running, |d| d.in_use),
                            r.parallel_builds
                        ),
                        format!("{:.2}", i.normalized_load),
                        format!("{} MiB", i.free_bytes >> 20),
                        r.speed.to_string(),
                        i.version.clone(),
                        format!("{} {}", i.kernel, i.arch),
                        format!("{:+.1} s", r.clock_difference.unwrap_or(0.0)),
                        backoff(daemon_view.get(&r.machine)),
                    ],
                    None => vec![
                        r.machine.clone(),
                        format!(
                            "down: {}",
                            r.error
                                .as_deref()
                                .unwrap_or("?")
                                .lines()
                                .next()
                                .unwrap_or("")
                        ),
                        r.systems.join(","),
                        if r.features.is_empty() {
                            "-".into()
                        } else {
                            r.features.join(",")
                        },
                        format!("-/{}", r.parallel_builds),
                        "-".into(),
                        "-".into(),
                        r.speed.to_string(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        backoff(daemon_view.get(&r.machine)),
                    ],
                })
                .collect();
            print_table(
                &mut out,
                &[
                    "MACHINE", "STATE", "SYSTEMS", "FEATURES", "BUILDS", "LOAD", "FREE", "SPEED",
                    "FERRY", "KERNEL", "CLOCK", "BACK-OFF",
                ],
                &rows,
            )?;
        }
        match watch {
            Some(secs) => {
                out.flush()?;
                std::thread::sleep(std::time::Duration::from_secs(secs.max(1)));
            }
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// A status row from the daemon's measurement, if it is recent (the
/// background refresh keeps it under ~15 s old).
fn from_daemon(
    m: &BuildMachine,
    d: &ferry_protocol::FarmMachine,
) -> Option<ferry_daemon::offload::check::StatusReport> {
    let info = d.info.clone()?;
    if d.measured_secs_ago? > 15.0 || d.backed_off_for.is_some() || d.until_changed {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |t| t.as_secs_f64());
    Some(ferry_daemon::offload::check::StatusReport {
        machine: m.name.clone(),
        reachable: true,
        error: None,
        systems: m.systems.clone(),
        features: m.features.clone(),
        parallel_builds: m.parallel_builds,
        speed: m.speed,
        // The measurement's clock reading, moved forward by its age.
        clock_difference: Some(info.time + d.measured_secs_ago.unwrap_or(0.0) - now),
        info: Some(info),
    })
}

/// The daemon's back-off state of a machine, for the table.
fn backoff(m: Option<&ferry_protocol::FarmMachine>) -> String {
    if m.is_some_and(|m| m.until_changed) {
        return "until machines.scm, the ACL or its key changes".into();
    }
    match m.and_then(|m| m.backed_off_for.map(|s| (s, m.failures))) {
        Some((secs, n)) => format!("{secs:.0} s ({n} failure(s))"),
        None => "-".into(),
    }
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
        } => status(cli, &machines_file(cli, file)?, regex, *json, *watch),
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
