//! `ferry offload status`: every build machine's state as the last real
//! attempt on it left it (a connection, a probe or a build), with the age
//! of that attempt. A machine whose last attempt failed is not `up`; one
//! with less free space than the scheduler needs is `full`.
//!
//! Whose view: when a daemon answers, its view is authoritative for every
//! machine it knows (it holds the pooled connections, the back-off and the
//! slots in use, and it can read the SSH key when the user running this
//! cannot). A machine is probed directly only when no daemon answers, or
//! when the daemon has no data about it and the key is readable here;
//! otherwise it is `unknown`. The terminal view of `--watch` is in
//! [`crate::offload_watch`].

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use ferry_daemon::offload::scheduler::MIN_FREE_BYTES;
use ferry_daemon::offload::{Backoff, OffloadError, SshConnection, SshTarget};
use ferry_protocol::{FarmMachine, MachineInfo};
use ferry_scheme::{load_machines_file, BuildMachine, EvalContext};

use crate::offload_table::{render, width};
use crate::Cli;

/// How long a direct probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the data comes from, and how to get more.
pub(crate) struct Ctx {
    store_dir: String,
    socket: PathBuf,
    pub(crate) rt: tokio::runtime::Runtime,
}

/// One gathering of every machine's state.
pub(crate) struct Frame {
    pub rows: Vec<Row>,
    /// When it was gathered.
    pub at: SystemTime,
    /// Why the daemon could not be asked (it is there but refused us).
    pub daemon_error: Option<String>,
}

/// A machine's state, as shown (a table row, a JSON object).
pub(crate) struct Row {
    pub machine: BuildMachine,
    pub state: &'static str,
    /// The error kind of the last attempt ([`OffloadError::kind`]).
    pub kind: Option<String>,
    /// Why it is not `up`, in full.
    pub reason: Option<String>,
    pub checked_secs_ago: Option<f64>,
    /// "daemon", "probe", or "none" (unknown).
    pub source: &'static str,
    pub in_use: Option<u32>,
    /// The last successful measurement, and its age.
    pub info: Option<MachineInfo>,
    pub measured_secs_ago: Option<f64>,
    pub clock_difference: Option<f64>,
    /// Seconds since the epoch until which the daemon does not use it.
    pub backed_off_until: Option<u64>,
    pub until_changed: bool,
    pub failures: u32,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |t| t.as_secs_f64())
}

/// A failure of this kind keeps the machine out until a person acts.
fn persistent(kind: &str) -> bool {
    matches!(
        kind,
        "host-key"
            | "authentication"
            | "config"
            | "our-key-refused"
            | "their-key-not-trusted"
            | "misbehaved"
    )
}

/// "full" when less is free than the scheduler needs, else "up".
fn up_or_full(info: &MachineInfo) -> (&'static str, Option<String>) {
    if info.free_bytes <= MIN_FREE_BYTES {
        (
            "full",
            Some(format!(
                "only {} MiB free in its store (more than {} MiB needed)",
                info.free_bytes >> 20,
                MIN_FREE_BYTES >> 20
            )),
        )
    } else {
        ("up", None)
    }
}

impl Row {
    fn new(m: &BuildMachine, state: &'static str, source: &'static str) -> Row {
        Row {
            machine: m.clone(),
            state,
            kind: None,
            reason: None,
            checked_secs_ago: None,
            source,
            in_use: None,
            info: None,
            measured_secs_ago: None,
            clock_difference: None,
            backed_off_until: None,
            until_changed: false,
            failures: 0,
        }
    }

    /// The daemon's view of `m`; `None` when it has no data about it.
    fn from_daemon(m: &BuildMachine, d: &FarmMachine) -> Option<Row> {
        if d.attempted_secs_ago.is_none() && d.info.is_none() && d.last_error.is_none() {
            return None;
        }
        let now = unix_now();
        let mut row = Row::new(m, "up", "daemon");
        row.in_use = Some(d.in_use);
        row.failures = d.failures;
        row.until_changed = d.until_changed;
        row.checked_secs_ago = d.attempted_secs_ago.or(d.measured_secs_ago);
        row.measured_secs_ago = d.measured_secs_ago;
        row.backed_off_until = d.backed_off_for.map(|s| (now + s).ceil() as u64);
        row.clock_difference = d
            .info
            .as_ref()
            .map(|i| i.time + d.measured_secs_ago.unwrap_or(0.0) - now);
        row.info = d.info.clone();
        // A daemon older than the attempt fields: its last error, if any,
        // is the last word.
        let failed = d.attempt_error.clone().or_else(|| {
            (d.attempted_secs_ago.is_none() && d.last_error.is_some()).then(|| "unknown".into())
        });
        match failed {
            Some(kind) => {
                row.state = if d.until_changed || persistent(&kind) {
                    "unusable"
                } else if kind == "disk-full" {
                    "full"
                } else if matches!(kind.as_str(), "connect" | "silent" | "protocol")
                    || d.backed_off_for.is_none()
                {
                    "down"
                } else {
                    "backed-off"
                };
                row.reason = Some(d.last_error.clone().unwrap_or_else(|| kind.clone()));
                row.kind = Some(kind);
            }
            None => match &d.info {
                Some(info) => (row.state, row.reason) = up_or_full(info),
                None => row.state = "up",
            },
        }
        Some(row)
    }

    /// A direct probe's outcome.
    pub(crate) fn from_probe(m: &BuildMachine, r: Result<MachineInfo, OffloadError>) -> Row {
        let mut row = Row::new(m, "up", "probe");
        row.checked_secs_ago = Some(0.0);
        match r {
            Ok(info) => {
                (row.state, row.reason) = up_or_full(&info);
                row.in_use = Some(info.builds_running);
                row.measured_secs_ago = Some(0.0);
                row.clock_difference = Some(info.time - unix_now());
                row.info = Some(info);
            }
            Err(e) => {
                row.state = match e.backoff() {
                    Backoff::UntilChanged => "unusable",
                    _ if e.kind() == "disk-full" => "full",
                    _ => "down",
                };
                row.kind = Some(e.kind().to_string());
                row.reason = Some(e.to_string());
            }
        }
        row
    }

    /// The row as JSON: one object, camelCase keys.
    pub fn json(&self) -> serde_json::Value {
        let m = &self.machine;
        let i = self.info.as_ref();
        serde_json::json!({
            "machine": m.name,
            "state": self.state,
            "kind": self.kind,
            "reason": self.reason,
            "checkedSecsAgo": self.checked_secs_ago.map(|s| (s * 10.0).round() / 10.0),
            "source": self.source,
            "inUse": self.in_use,
            "parallelBuilds": m.parallel_builds,
            "systems": m.systems,
            "features": m.features,
            "speed": m.speed,
            "load": i.map(|i| i.normalized_load),
            "freeBytes": i.map(|i| i.free_bytes),
            "measuredSecsAgo": self.measured_secs_ago.map(|s| (s * 10.0).round() / 10.0),
            "version": i.map(|i| &i.version),
            "kernel": i.map(|i| format!("{} {}", i.kernel, i.arch)),
            "storeDir": i.map(|i| &i.store_dir),
            "clockDifference": self.clock_difference,
            "backedOffUntil": self.backed_off_until,
            "untilChanged": self.until_changed,
            "failures": self.failures,
        })
    }
}

/// The machines of `file` whose name matches `regex`, and the file's
/// warnings; the error as one line of text.
pub(crate) fn load(
    file: &Path,
    regex: &Option<String>,
) -> Result<(Vec<BuildMachine>, Vec<String>), String> {
    let re = regex
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| format!("bad regular expression: {e}"))?;
    let loaded =
        load_machines_file(file, EvalContext::from_process()).map_err(|e| e.to_string())?;
    let machines = loaded
        .machines
        .into_iter()
        .filter(|m| re.as_ref().is_none_or(|r| r.is_match(&m.name)))
        .collect();
    Ok((
        machines,
        loaded.warnings.iter().map(|w| w.to_string()).collect(),
    ))
}

/// Reach `m` over SSH and read its machine info, bounded.
async fn probe(m: &BuildMachine, store_dir: &str) -> Result<MachineInfo, OffloadError> {
    let mut target = SshTarget::from_machine(m);
    target.connect_timeout = PROBE_TIMEOUT;
    target.silence = Some(PROBE_TIMEOUT);
    let attempt = async {
        let conn = SshConnection::connect(&target)
            .await
            .map_err(|e| OffloadError::ssh(&m.name, e))?;
        conn.machine_info(&m.daemon_socket, store_dir)
            .await
            .map_err(|e| OffloadError::ssh(&m.name, e))
    };
    tokio::time::timeout(PROBE_TIMEOUT * 3, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(OffloadError::Silent {
                machine: m.name.clone(),
                step: "reading its load and free space".into(),
                after: PROBE_TIMEOUT * 3,
            })
        })
}

impl Ctx {
    pub fn new(cli: &Cli) -> anyhow::Result<Ctx> {
        Ok(Ctx {
            store_dir: cli.locations()?.store_dir.to_string(),
            socket: crate::build_cmd::daemon_socket(cli)?,
            rt: crate::build_cmd::runtime()?,
        })
    }

    /// Every machine's state now.
    pub fn gather(&self, machines: &[BuildMachine]) -> Frame {
        let store_dir = self.store_dir.clone();
        let (daemon, daemon_error) = self.rt.block_on(async {
            match crate::build_cmd::connect(&self.socket, &store_dir).await {
                Ok(Some(mut c)) => match c.farm_status().await {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(format!("{e:#}"))),
                },
                Ok(None) => (None, None),
                Err(e) => (None, Some(format!("{e:#}"))),
            }
        });
        let answered = daemon.is_some();
        let view: HashMap<String, FarmMachine> = daemon
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect();
        let rows = self.rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, m) in machines.iter().cloned().enumerate() {
                // Its machines.scm entry is unusable: never tried, by the
                // daemon or here (as `offload test` and the farm).
                if let Some(e) = m.error_line() {
                    let mut row = Row::new(&m, "unusable", "none");
                    row.kind = Some("config".into());
                    row.reason = Some(e);
                    tasks.spawn(async move { (i, row) });
                    continue;
                }
                if let Some(row) = view.get(&m.name).and_then(|d| Row::from_daemon(&m, d)) {
                    tasks.spawn(async move { (i, row) });
                    continue;
                }
                // Probed here only without a daemon, or when the daemon has
                // no data and this user can read the key.
                if answered && std::fs::File::open(&m.private_key).is_err() {
                    let mut row = Row::new(&m, "unknown", "none");
                    row.reason = Some(if view.contains_key(&m.name) {
                        "the daemon has not tried it yet".into()
                    } else {
                        "not in the daemon's machines (is its machines.scm another file?)".into()
                    });
                    tasks.spawn(async move { (i, row) });
                    continue;
                }
                let store_dir = store_dir.clone();
                tasks.spawn(async move {
                    let r = probe(&m, &store_dir).await;
                    (i, Row::from_probe(&m, r))
                });
            }
            let mut out = Vec::new();
            while let Some(r) = tasks.join_next().await {
                out.push(r.expect("status task panicked"));
            }
            out.sort_by_key(|(i, _)| *i);
            out.into_iter().map(|(_, r)| r).collect()
        });
        Frame {
            rows,
            at: SystemTime::now(),
            daemon_error: daemon_error.map(|e| {
                format!(
                    "cannot ask the daemon at {} ({e}); machines probed directly",
                    self.socket.display()
                )
            }),
        }
    }
}

/// Print one frame: a table, or a JSON array.
fn print(out: &mut impl Write, frame: &Frame, json: bool) -> io::Result<()> {
    if let Some(e) = &frame.daemon_error {
        eprintln!("ferry: warning: {e}");
    }
    if json {
        let rows: Vec<_> = frame.rows.iter().map(Row::json).collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
    } else {
        for l in render(&frame.rows, width(io::stdout().is_terminal())) {
            writeln!(out, "{l}")?;
        }
    }
    out.flush()
}

pub fn status(
    cli: &Cli,
    file: &Path,
    regex: &Option<String>,
    json: bool,
    watch: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::new(cli)?;
    let Some(secs) = watch else {
        let (machines, warnings) = load(file, regex).map_err(|e| anyhow::anyhow!("{e}"))?;
        for w in warnings {
            eprintln!("{w}");
        }
        print(&mut io::stdout().lock(), &ctx.gather(&machines), json)?;
        return Ok(ExitCode::SUCCESS);
    };
    let every = Duration::from_secs(secs.max(1));
    if !json && io::stdout().is_terminal() {
        return crate::offload_watch::watch(ctx, file, regex, every);
    }
    // Not a terminal: a table (or JSON) per interval; a bad machines.scm
    // is said and the last good list kept.
    let mut last_good: Vec<BuildMachine> = Vec::new();
    loop {
        match load(file, regex) {
            Ok((machines, _)) => last_good = machines,
            Err(e) => eprintln!("ferry: {e} (showing the last good list of machines)"),
        }
        let frame = ctx.gather(&last_good);
        if !json {
            let at = frame
                .at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            println!("ferry offload status — {}", crate::offload_table::clock(at));
        }
        if let Err(e) = print(&mut io::stdout().lock(), &frame, json) {
            // A closed pipe ends the watch; nothing else does.
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e.into());
        }
        std::thread::sleep(every);
    }
}
