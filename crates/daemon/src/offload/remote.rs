//! One derivation built on a build machine.
//!
//! Over the machine's persistent SSH connection, on a channel to its daemon:
//! one batched query for which paths of the input closure it lacks; those
//! sent as one signed export stream, dependencies first (the remote daemon
//! checks the signature against its ACL); the build run there with its log
//! streamed back live (and kept here for `ferry log`); the outputs fetched
//! as a signed stream, checked against the local ACL and registered.
//!
//! A build that fails there is reported like a local failure, unless the
//! machine's store is full by then (the failure is likely the machine's,
//! not the derivation's: it is placed again, elsewhere). Anything
//! else that goes wrong (connection, protocol, a refused import) is a
//! transport failure: the caller backs the machine off and places the
//! derivation again; nothing half-imported stays on either side, because
//! imports only make complete, verified items valid.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ferry_build::log::BuildLog;
use ferry_build::Outcome;
use ferry_formats::derivation::Derivation;
use ferry_formats::StorePath;
use ferry_protocol::{BuildEvent, BuildOptions, BuildStatus, Client};
use ferry_scheme::BuildMachine;
use ferry_store::Store;
use ferry_trust::{Acl, AclCheck, SecretKey};
use tokio_util::io::SyncIoBridge;

use crate::offload::ssh::{SshConnection, SshStream};

/// Buffer between the network and the store on each side of a transfer.
const PIPE: usize = 1 << 20;

/// What a remote build needs from the daemon.
pub struct RemoteContext<'a> {
    pub store: &'a Arc<Store>,
    pub signing_key: &'a Arc<SecretKey>,
    pub machine: &'a BuildMachine,
    pub conn: Arc<SshConnection>,
}

/// Why a remote build could not be carried out (not a build failure).
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
pub async fn build_remote(
    cx: &RemoteContext<'_>,
    drv_path: &StorePath,
    drv: &Derivation,
    input_closure: &BTreeSet<StorePath>,
    opts: &BuildOptions,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<RemoteBuild, TransportError> {
    let store = cx.store;
    let name = &cx.machine.name;
    let t0 = std::time::Instant::now();
    let step = |what: &str| tracing::debug!(machine = %cx.machine.name, "{what} at {} ms", t0.elapsed().as_millis());
    let mut client = cx
        .conn
        .connect_daemon(&cx.machine.daemon_socket, store.store_dir().as_str())
        .await
        .map_err(|e| e.to_string())?;

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
        .map_err(|e| e.to_string())??
    };
    let shown: Vec<String> = needed.iter().map(|p| store.display(p)).collect();
    step("connected");
    let there: BTreeSet<String> = client
        .query_valid(shown.clone())
        .await
        .map_err(|e| format!("{name}: {e}"))?
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
        send(&mut client, store, cx.signing_key, missing).await?;
        step("sent");
        if bytes >= 1 << 20 {
            on_line(&format!("ferry: copied to {name} {}", rate(bytes, started)));
        }
    }
    client
        .add_temp_root(&store.display(drv_path))
        .await
        .map_err(|e| format!("{name}: {e}"))?;

    // Build there; keep the log here too.
    let mut log = BuildLog::create(&store.locations().state_dir, drv_path.base_name())
        .map_err(|e| format!("creating the local log: {e}"))?;
    let drv_shown = store.display(drv_path);
    let opts = BuildOptions {
        offloaded: true,
        ..opts.clone()
    };
    step("temp root");
    let building = std::time::Instant::now();
    let results = client
        .build(vec![drv_shown.clone()], opts, |ev| {
            let line = match ev {
                BuildEvent::Log { line, .. } => line,
                // An option the machine ignored (e.g. `offloaded` from an
                // SSH user it does not trust) is said, not dropped.
                BuildEvent::Warning { message } => {
                    format!("ferry: warning from {name}: {message}")
                }
                _ => return,
            };
            let _ = log.line(&line);
            on_line(&line);
        })
        .await
        .map_err(|e| format!("{name}: the build's connection failed: {e}"))?;
    let took = building.elapsed();
    let log_tail = log.finish().unwrap_or_default();
    let result = results
        .into_iter()
        .next()
        .ok_or_else(|| format!("{name}: no result for {drv_shown}"))?;
    let build_time = (result.status == BuildStatus::Built).then_some(took);
    match result.status {
        BuildStatus::Built | BuildStatus::AlreadyValid => {}
        BuildStatus::Failed | BuildStatus::DependencyFailed => {
            if let Ok(info) = client.machine_info().await {
                if info.free_bytes <= super::scheduler::MIN_FREE_BYTES {
                    return Err(format!(
                        "{name}: the build failed there with only {} MiB free in its store \
                         (a full disk, not the derivation's fault)",
                        info.free_bytes >> 20
                    ));
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
            store.parse_path(&out.path).map_err(|e| e.to_string())?,
        );
    }
    let lacking: Vec<String> = {
        let valid = store
            .query_valid(&outputs.values().cloned().collect::<Vec<_>>())
            .map_err(|e| e.to_string())?;
        outputs
            .values()
            .filter(|p| !valid.contains(p))
            .map(|p| store.display(p))
            .collect()
    };
    if !lacking.is_empty() {
        step("built");
        on_line(&format!(
            "ferry: fetching {} output(s) from {name}",
            lacking.len()
        ));
        let started = std::time::Instant::now();
        let bytes = fetch(&mut client, store, name, lacking).await?;
        step("fetched");
        if bytes >= 1 << 20 {
            on_line(&format!(
                "ferry: fetched from {name} {}",
                rate(bytes, started)
            ));
        }
    }
    Ok(RemoteBuild {
        outcome: Outcome::Built {
            outputs,
            already_valid: false,
        },
        build_time,
    })
}

/// Send `paths` (and nothing else) as one signed export stream.
async fn send(
    client: &mut Client<SshStream>,
    store: &Arc<Store>,
    key: &Arc<SecretKey>,
    paths: Vec<StorePath>,
) -> Result<(), TransportError> {
    let (writer, mut reader) = tokio::io::duplex(PIPE);
    let mut bridge = SyncIoBridge::new(writer);
    let store2 = store.clone();
    let key = key.clone();
    let exporter = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let sign = |d: &ferry_formats::Sha256Hash| Ok(ferry_trust::signature::sign(&key, d));
        let res = store2
            .export(&paths, false, &mut bridge, Some(&sign))
            .map(|_| ())
            .map_err(|e| e.to_string());
        let _ = std::io::Write::flush(&mut bridge);
        drop(bridge);
        res
    });
    let imported = client.import(&mut reader).await;
    // Closed before waiting for the exporter: when the connection failed
    // mid-stream, the exporter is blocked on a full pipe and only a broken
    // pipe ends it.
    drop(reader);
    let exported = exporter.await.map_err(|e| e.to_string())?;
    // The connection's error first: the exporter's is then a broken pipe.
    imported.map_err(|e| format!("sending the inputs: {e}"))?;
    exported
}

/// Fetch `paths` from the machine and import them, checking signatures
/// against this machine's ACL.
async fn fetch(
    client: &mut Client<SshStream>,
    store: &Arc<Store>,
    name: &str,
    paths: Vec<String>,
) -> Result<u64, TransportError> {
    let acl = Acl::load(&store.locations().config_dir).map_err(|e| e.to_string())?;
    let (mut writer, reader) = tokio::io::duplex(PIPE);
    let bridge = SyncIoBridge::new(reader);
    let store2 = store.clone();
    let importer = tokio::task::spawn_blocking(move || {
        let mut bridge = bridge;
        store2
            .import(&mut bridge, &AclCheck { acl })
            .map_err(|e| e.to_string())
    });
    let exported = client.export(paths, false, &mut writer).await;
    drop(writer);
    let imported = importer.await.map_err(|e| e.to_string())?;
    let bytes = exported.map_err(|e| format!("{name}: fetching the outputs: {e}"))?;
    imported.map_err(|e| format!("fetching the outputs from {name}: {e}"))?;
    Ok(bytes)
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
