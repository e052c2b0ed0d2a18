//! One derivation built on a build machine.
//!
//! Over the machine's persistent SSH connection, on a channel to its daemon:
//! one batched query for which paths of the input closure it lacks; those
//! sent as one signed export stream, dependencies first (the remote daemon
//! checks the signature against its ACL and takes only the paths named);
//! the build run there with its log streamed back live (and kept here for
//! `ferry log`); the outputs fetched as a signed stream and accepted only
//! as the wanted outputs of this derivation (`accept.rs`), all or nothing.
//!
//! A build that fails there is reported like a local failure, unless the
//! machine's store is full by then (the failure is likely the machine's,
//! not the derivation's: it is placed again, elsewhere). Anything
//! else that goes wrong (connection, protocol, a refused import) is a
//! transport failure: the caller backs the machine off and places the
//! derivation again; nothing half-imported stays on either side, because
//! imports only make complete, verified items valid.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferry_build::log::BuildLog;
use ferry_build::Outcome;
use ferry_formats::derivation::Derivation;
use ferry_formats::StorePath;
use ferry_protocol::{
    BuildEvent, BuildOptions, BuildPhase, BuildStatus, Client, Direction, ProtocolError,
};
use ferry_scheme::BuildMachine;
use ferry_store::{ImportedItem, Store, StoreError};
use ferry_trust::{Acl, AclCheck, SecretKey};

use super::accept;
use super::error::OffloadError;
use super::progress::{reporting, Counting};
use super::ssh::{SshConnection, SshStream};
use crate::bridge;

/// What a remote build needs from the daemon.
pub struct RemoteContext<'a> {
    pub store: &'a Arc<Store>,
    pub signing_key: &'a Arc<SecretKey>,
    pub machine: &'a BuildMachine,
    pub conn: Arc<SshConnection>,
    /// Where this derivation's phases and copies are told (for a progress
    /// display), if anywhere.
    pub events: Option<&'a crate::events::Events>,
}

impl RemoteContext<'_> {
    fn phase(&self, drv: &str, phase: BuildPhase) {
        if let Some(ev) = self.events {
            ev.send(BuildEvent::Phase {
                drv: drv.to_string(),
                machine: self.machine.name.clone(),
                phase,
                detail: None,
            });
        }
    }

    /// Reports of a copy's bytes so far, against `total`.
    fn transfer(&self, drv: &str, direction: Direction, total: u64) -> impl FnMut(u64) + '_ {
        let drv = drv.to_string();
        move |done| {
            if let Some(ev) = self.events {
                ev.send(BuildEvent::Transfer {
                    drv: drv.clone(),
                    machine: self.machine.name.clone(),
                    direction,
                    done,
                    total,
                });
            }
        }
    }
}

/// Why a transfer failed (made an [`OffloadError`] by its caller).
pub type TransportError = String;

/// What a remote build gave.
pub struct RemoteBuild {
    pub outcome: Outcome,
    /// How long the machine took to build it (not counting the copies),
    /// when it did build it: what the build-time history records.
    pub build_time: Option<std::time::Duration>,
}

/// Build `drv_path` on the machine. `input_closure` is the closure of the
/// derivation's inputs (sources and input outputs), all valid here.
///
/// Every step is bounded by the connection's liveness bound (no progress
/// for that long fails the step with [`OffloadError::Silent`]); during the
/// build, the machine's daemon sends keep-alives when it can (its welcome
/// says so), else the bound is lifted for the build and only the client's
/// `--timeout` and `--max-silent-time`, measured here, apply.
pub async fn build_remote(
    cx: &RemoteContext<'_>,
    drv_path: &StorePath,
    drv: &Derivation,
    input_closure: &BTreeSet<StorePath>,
    opts: &BuildOptions,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<RemoteBuild, OffloadError> {
    let store = cx.store;
    let name = &cx.machine.name;
    let t0 = std::time::Instant::now();
    let step = |what: &str| tracing::debug!(machine = %cx.machine.name, "{what} at {} ms", t0.elapsed().as_millis());
    let proto = |step: &'static str| move |e: ProtocolError| OffloadError::protocol(name, step, e);
    let local = |e: &dyn std::fmt::Display| OffloadError::LocalStore { why: e.to_string() };
    let (mut client, liveness) = cx
        .conn
        .connect_daemon_live(&cx.machine.daemon_socket, store.store_dir().as_str())
        .await
        .map_err(|e| OffloadError::ssh(name, e))?;

    // What the machine lacks: the .drv closure and the input closure.
    let needed = {
        let store = store.clone();
        let drv_path = drv_path.clone();
        let inputs = input_closure.clone();
        tokio::task::spawn_blocking(move || -> Result<BTreeSet<StorePath>, String> {
            let mut all = store.closure(&[drv_path]).map_err(|e| e.to_string())?;
            all.extend(inputs);
            Ok(all)
        })
        .await
        .map_err(|e| local(&e))?
        .map_err(|e| local(&e))?
    };
    let shown: Vec<String> = needed.iter().map(|p| store.display(p)).collect();
    step("connected");
    let there: BTreeSet<String> = client
        .query_valid(shown.clone())
        .await
        .map_err(proto("asking which inputs it lacks"))?
        .into_iter()
        .collect();
    let missing: Vec<StorePath> = needed
        .iter()
        .filter(|p| !there.contains(&store.display(p)))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let bytes: u64 = missing
            .iter()
            .filter_map(|p| store.path_info(p).ok().flatten())
            .map(|i| i.nar_size)
            .sum();
        on_line(&format!(
            "ferry: copying {} path(s), {} to {name}",
            missing.len(),
            human(bytes)
        ));
        step("queried");
        let started = std::time::Instant::now();
        let drv_shown = store.display(drv_path);
        cx.phase(&drv_shown, BuildPhase::Sending);
        let count = Arc::new(AtomicU64::new(0));
        reporting(
            send(&mut client, store, cx.signing_key, missing, &count),
            &count,
            cx.transfer(&drv_shown, Direction::Send, bytes),
        )
        .await
        .map_err(|why| OffloadError::sending(name, why))?;
        step("sent");
        if bytes >= 1 << 20 {
            on_line(&format!("ferry: copied to {name} {}", rate(bytes, started)));
        }
    }
    client
        .add_temp_root(&store.display(drv_path))
        .await
        .map_err(proto("adding a temporary root"))?;

    // Build there; keep the log here too.
    let mut log = BuildLog::create(&store.locations().state_dir, drv_path.base_name())
        .map_err(|e| local(&format!("creating the local log: {e}")))?;
    let drv_shown = store.display(drv_path);
    // Keep-alives three times per bound, when the machine sends them; an
    // older daemon does not: the bound is lifted for its build.
    let bound = liveness.bound();
    let keep_alive = match bound {
        Some(b) if client.welcome().keep_alive => (b.as_secs() / 3).max(1),
        _ => 0,
    };
    let opts = BuildOptions {
        offloaded: true,
        keep_alive,
        // `-j 0` asks that nothing be built on the client's machine; the
        // build machine is where it is built.
        no_local: false,
        // Its phases are not shown here.
        progress: false,
        ..opts.clone()
    };
    if keep_alive == 0 {
        liveness.set(None);
    }
    step("temp root");
    cx.phase(&drv_shown, BuildPhase::Building);
    let building = std::time::Instant::now();
    let limits = BuildLimits::of(&opts);
    // Milliseconds from `building` to the last log line.
    let last_output = AtomicU64::new(0);
    let raced = {
        let build = client.build(vec![drv_shown.clone()], opts, |ev| {
            let line = match ev {
                BuildEvent::Log { line, .. } => line,
                // An option the machine ignored (e.g. `offloaded` from an
                // SSH user it does not trust) is said, not dropped.
                BuildEvent::Warning { message } => {
                    format!("ferry: warning from {name}: {message}")
                }
                _ => return,
            };
            last_output.store(building.elapsed().as_millis() as u64, Ordering::Relaxed);
            let _ = log.line(&line);
            on_line(&line);
        });
        tokio::select! {
            r = build => Ok(r),
            why = limits.exceeded(building, &last_output) => Err(why),
        }
    };
    liveness.set(bound);
    let results = match raced {
        Ok(r) => r.map_err(proto("the build"))?,
        // The client's limits, measured here: a build failure (the
        // machine's daemon, its session gone, kills the builder).
        Err(why) => {
            return Ok(RemoteBuild {
                outcome: Outcome::Failed {
                    message: format!("building {drv_shown} on {name}: {why}"),
                    exit_code: None,
                    log_tail: log.finish().unwrap_or_default(),
                    kind: ferry_build::FailureKind::TimedOut,
                },
                build_time: None,
            })
        }
    };
    let took = building.elapsed();
    let log_tail = log.finish().unwrap_or_default();
    let result = results
        .into_iter()
        .next()
        .ok_or_else(|| OffloadError::Protocol {
            machine: name.clone(),
            why: format!("{name}: no result for {drv_shown}"),
        })?;
    let build_time = (result.status == BuildStatus::Built).then_some(took);
    match result.status {
        BuildStatus::Built | BuildStatus::AlreadyValid => {}
        BuildStatus::Failed | BuildStatus::DependencyFailed => {
            if let Ok(info) = client.machine_info().await {
                if info.free_bytes <= super::scheduler::MIN_FREE_BYTES {
                    return Err(OffloadError::DiskFull {
                        machine: name.clone(),
                        why: format!(
                            "{name}: the build failed there with only {} MiB free in its store \
                             (a full disk, not the derivation's fault)",
                            info.free_bytes >> 20
                        ),
                    });
                }
            }
            let failed = Outcome::Failed {
                message: format!(
                    "{} (on {name})",
                    result.error.unwrap_or_else(|| "build failed".into())
                ),
                exit_code: result.exit_code,
                log_tail: if result.log_tail.is_empty() {
                    log_tail
                } else {
                    result.log_tail
                },
                kind: match result.failure {
                    ferry_protocol::FailureKind::Other => ferry_build::FailureKind::Other,
                    ferry_protocol::FailureKind::TimedOut => ferry_build::FailureKind::TimedOut,
                    ferry_protocol::FailureKind::HashMismatch => {
                        ferry_build::FailureKind::HashMismatch
                    }
                },
            };
            return Ok(RemoteBuild {
                outcome: failed,
                build_time: None,
            });
        }
    }

    // Fetch the outputs this store lacks.
    let mut outputs = BTreeMap::new();
    for (o, out) in &drv.outputs {
        outputs.insert(
            o.clone(),
            store.parse_path(&out.path).map_err(|e| local(&e))?,
        );
    }
    let lacking: Vec<String> = {
        let valid = store
            .query_valid(&outputs.values().cloned().collect::<Vec<_>>())
            .map_err(|e| local(&e))?;
        outputs
            .values()
            .filter(|p| !valid.contains(p))
            .map(|p| store.display(p))
            .collect()
    };
    let mut sent = Vec::new();
    if !lacking.is_empty() {
        step("built");
        on_line(&format!(
            "ferry: fetching {} output(s) from {name}",
            lacking.len()
        ));
        cx.phase(&drv_shown, BuildPhase::Fetching);
        // What the outputs weigh, as the machine says (shown only).
        let mut total = 0u64;
        for p in &lacking {
            if let Ok(Some(info)) = client.path_info(p).await {
                total = total.saturating_add(info.nar_size);
            }
        }
        let started = std::time::Instant::now();
        let wanted = Wanted {
            drv_path: drv_path.clone(),
            drv: drv.clone(),
            outputs: outputs.clone(),
            input_closure: input_closure.clone(),
        };
        let bytes;
        let count = Arc::new(AtomicU64::new(0));
        (bytes, sent) = reporting(
            fetch(&mut client, store, name, lacking, wanted, &count),
            &count,
            cx.transfer(&drv_shown, Direction::Fetch, total),
        )
        .await?;
        step("fetched");
        if bytes >= 1 << 20 {
            on_line(&format!(
                "ferry: fetched from {name} {}",
                rate(bytes, started)
            ));
        }
    }
    // `Built` only once every output is valid here, whatever the machine
    // said.
    accept::outputs_arrived(store, name, &drv_shown, &outputs, sent)
        .await
        .map_err(|why| OffloadError::Misbehaved {
            machine: name.clone(),
            why,
        })?;
    Ok(RemoteBuild {
        outcome: Outcome::Built {
            outputs,
            already_valid: false,
        },
        build_time,
    })
}

/// The client's `--timeout` and `--max-silent-time`, measured on this side
/// whatever the machine does.
struct BuildLimits {
    timeout: Option<std::time::Duration>,
    max_silent: Option<std::time::Duration>,
}

impl BuildLimits {
    fn of(opts: &BuildOptions) -> BuildLimits {
        let secs = |s: u64| (s > 0).then(|| std::time::Duration::from_secs(s));
        BuildLimits {
            timeout: secs(opts.timeout),
            max_silent: secs(opts.max_silent_time),
        }
    }

    /// Once a limit is exceeded, which (never without limits).
    async fn exceeded(&self, started: std::time::Instant, last_output: &AtomicU64) -> String {
        if self.timeout.is_none() && self.max_silent.is_none() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            if let Some(t) = self.timeout.filter(|t| started.elapsed() >= *t) {
                return format!(
                    "timed out after {} s (--timeout, measured here)",
                    t.as_secs()
                );
            }
            let last = std::time::Duration::from_millis(last_output.load(Ordering::Relaxed));
            let silent = started.elapsed().saturating_sub(last);
            if let Some(t) = self.max_silent.filter(|t| silent >= *t) {
                return format!(
                    "no output for {} s (--max-silent-time, measured here)",
                    t.as_secs()
                );
            }
        }
    }
}

/// Send `paths` (and nothing else) as one signed export stream.
async fn send(
    client: &mut Client<SshStream>,
    store: &Arc<Store>,
    key: &Arc<SecretKey>,
    paths: Vec<StorePath>,
    count: &Arc<AtomicU64>,
) -> Result<(), TransportError> {
    // The machine accepts these and nothing else (see `accept::Told`).
    let expected: Vec<String> = paths.iter().map(|p| store.display(p)).collect();
    let store2 = store.clone();
    let key = key.clone();
    let (reader, exporter) = bridge::blocking_producer(move |out| -> Result<(), String> {
        let sign = |d: &ferry_formats::Sha256Hash| Ok(ferry_trust::signature::sign(&key, d));
        let res = store2
            .export(&paths, false, out, Some(&sign))
            .map(|_| ())
            .map_err(|e| e.to_string());
        let _ = std::io::Write::flush(out);
        res
    });
    let mut reader = Counting::new(reader, count.clone());
    let imported = client.import_expected(&mut reader, expected).await;
    // Closed before waiting for the exporter: when the connection failed
    // mid-stream, the exporter is blocked on a full channel and only a
    // broken pipe ends it.
    drop(reader);
    let exported = exporter.await.map_err(|e| e.to_string())?;
    // The connection's error first: the exporter's is then a broken pipe.
    imported.map_err(|e| format!("sending the inputs: {e}"))?;
    exported
}

/// What [`fetch`] may accept: the wanted outputs of this derivation (see
/// [`accept::WantedOutputs`]).
struct Wanted {
    drv_path: StorePath,
    drv: Derivation,
    outputs: BTreeMap<String, StorePath>,
    input_closure: BTreeSet<StorePath>,
}

/// Fetch `paths` from the machine and import them, all or nothing, each
/// checked against `wanted` and its signature against this machine's ACL.
/// Returns the bytes read and the items the machine sent.
async fn fetch(
    client: &mut Client<SshStream>,
    store: &Arc<Store>,
    name: &str,
    paths: Vec<String>,
    wanted: Wanted,
    count: &Arc<AtomicU64>,
) -> Result<(u64, Vec<ImportedItem>), OffloadError> {
    let fetching = |why: String| OffloadError::fetching(name, why);
    let acl = Acl::load(&store.locations().config_dir).map_err(|e| OffloadError::LocalStore {
        why: format!("loading the ACL: {e}"),
    })?;
    let store2 = store.clone();
    let drv_shown = store.display(&wanted.drv_path);
    let (writer, importer) = bridge::blocking_consumer(move |bridge| {
        let check = accept::WantedOutputs {
            store: &store2,
            drv_path: &wanted.drv_path,
            drv: &wanted.drv,
            outputs: &wanted.outputs,
            input_closure: &wanted.input_closure,
        };
        store2.import_expected(bridge, &AclCheck { acl }, &check)
    });
    let mut writer = Counting::new(writer, count.clone());
    let exported = client.export(paths, false, &mut writer).await;
    drop(writer);
    let imported = importer.await.map_err(|e| fetching(e.to_string()))?;
    // A refusal first: the import stopped reading, so the export's error
    // is then a broken pipe. It is the machine's doing: unsigned items are
    // its key's, anything else unasked for is misbehaviour.
    if let Err(e @ (StoreError::Refused { .. } | StoreError::MissingReference { .. })) = &imported {
        let why = accept::refused(name, &drv_shown, e);
        return Err(match OffloadError::fetching(name, why.clone()) {
            e @ OffloadError::TheirKeyNotTrusted { .. } => e,
            _ => OffloadError::Misbehaved {
                machine: name.to_string(),
                why,
            },
        });
    }
    let bytes = exported.map_err(|e| fetching(format!("{name}: fetching the outputs: {e}")))?;
    let items = imported.map_err(|e| {
        fetching(format!(
            "fetching the outputs of {drv_shown} from {name}: {e}"
        ))
    })?;
    Ok((bytes, items))
}

/// `12.3 MiB`.
fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// `12.3 MiB in 0.4 s (30.2 MiB/s)`.
fn rate(bytes: u64, since: std::time::Instant) -> String {
    let secs = since.elapsed().as_secs_f64().max(1e-3);
    format!(
        "{} in {secs:.1} s ({:.1} MiB/s)",
        human(bytes),
        bytes as f64 / (1 << 20) as f64 / secs
    )
}
