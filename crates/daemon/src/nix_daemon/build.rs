//! Builds asked by Nix clients, through the same engine as Ferry's own
//! (`Engine::build`: the `.drv` re-check, local job permits, offload to the
//! build machines of machines.scm), with the client's SetOptions mapped to
//! Ferry's build options: `max-jobs 0` builds on build machines only,
//! `keep-failed`, `keep-going`, `max-silent-time`, `build-cores`, and the
//! overrides `sandbox` and `timeout` (restricted for untrusted users as
//! for Ferry's clients, [`crate::access::restrict_build_options`]). What
//! Ferry has no notion of (substituters, `fallback`, verbosity) is ignored.
//!
//! The engine's events become Nix's: a build's start and end an
//! `actBuild` activity, its log lines `resBuildLogLine` results of it,
//! warnings log lines; `nix-build` shows them as nix-daemon's.

use std::collections::{BTreeSet, HashMap};

use ferry_formats::StorePath;
use ferry_nix_protocol::build::{BuildMode, BuildResult, BuildStatus};
use ferry_nix_protocol::derived_path::DerivedPath;
use ferry_nix_protocol::reply::{self, Missing};
use ferry_nix_protocol::request::Request;
use ferry_nix_protocol::settings::ClientSettings;
use ferry_nix_protocol::stderr::{activity, verbosity, Field, StderrMsg};
use ferry_nix_protocol::{NixError, Server};
use ferry_protocol::{BuildEvent, BuildOptions, FailureKind};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{blocking, nix_err, Conn, Handled};

/// Ferry's build options from a Nix client's settings.
pub fn build_options(s: &ClientSettings) -> BuildOptions {
    let flag = |name: &str| s.overrides.get(name).map(|v| v == "true");
    let number = |name: &str| s.overrides.get(name).and_then(|v| v.parse::<u64>().ok());
    BuildOptions {
        cores: s.build_cores.min(u32::MAX as u64) as u32,
        max_silent_time: number("max-silent-time").unwrap_or(s.max_silent_time),
        timeout: number("timeout").unwrap_or(0),
        keep_going: s.keep_going,
        keep_failed: s.keep_failed,
        no_local: s.max_build_jobs == 0,
        sandbox: flag("sandbox"),
        ..Default::default()
    }
}

pub async fn handle<R, W>(server: &mut Server<R, W>, conn: &mut Conn, req: Request) -> Handled
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let v = server.client_version();
    let with_results = matches!(req, Request::BuildPathsWithResults { .. });
    match req {
        Request::BuildPaths { paths, mode } | Request::BuildPathsWithResults { paths, mode } => {
            if let Err(e) = check_mode(conn, mode) {
                return Ok(Err(e));
            }
            let results = match build_derived(server, conn, &paths).await? {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            return finish_paths(server, paths, results, with_results).await;
        }
        Request::BuildDerivation {
            drv_path,
            drv,
            mode,
        } => {
            if let Err(e) = check_mode(conn, mode) {
                return Ok(Err(e));
            }
            let store = conn.store().clone();
            let p = drv_path.clone();
            let known = blocking(move || store.is_valid(&store.parse_path(&p)?)).await;
            match known {
                Ok(true) => {}
                Ok(false) => return super::sent::handle(server, conn, drv_path, *drv).await,
                Err(e) => return Ok(Err(e)),
            }
            let paths = vec![DerivedPath::Built {
                drv_path,
                outputs: BTreeSet::new(),
            }];
            let results = match build_derived(server, conn, &paths).await? {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            results[0].write_for_build_derivation(server.last(), v);
        }
        Request::QueryMissing(paths) => {
            let store = conn.store().clone();
            match blocking(move || missing(&store, &paths)).await {
                Ok(m) => reply::query_missing(server.last(), &m),
                Err(e) => return Ok(Err(e)),
            }
        }
        Request::EnsurePath(p) => {
            let store = conn.store().clone();
            let q = p.clone();
            match blocking(move || store.is_valid(&store.parse_path(&q)?)).await {
                Ok(true) => {
                    server.last().u64(1);
                }
                Ok(false) => {
                    return Ok(Err(NixError::new(format!(
                        "path '{p}' is required, but there is no substituter that can build it"
                    ))))
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        _ => unreachable!("dispatched here by mod.rs"),
    }
    server.flush().await?;
    Ok(Ok(()))
}

/// BuildPaths answers 1 or fails with the first failure; BuildPaths-
/// WithResults answers every result. Both requests share this ending.
async fn finish_paths<R, W>(
    server: &mut Server<R, W>,
    paths: Vec<DerivedPath>,
    results: Vec<BuildResult>,
    with_results: bool,
) -> Handled
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let pairs: Vec<(DerivedPath, BuildResult)> = paths.into_iter().zip(results).collect();
    if with_results {
        reply::build_paths_with_results(server.last(), &pairs);
    } else {
        if let Some((_, r)) = pairs.iter().find(|(_, r)| !r.status.is_success()) {
            return Ok(Err(NixError::new(r.error_msg.clone())));
        }
        server.last().u64(1);
    }
    server.flush().await?;
    Ok(Ok(()))
}

pub(super) fn check_mode(conn: &Conn, mode: BuildMode) -> Result<(), NixError> {
    match mode {
        BuildMode::Normal => Ok(()),
        BuildMode::Repair if !conn.peer.trusted => Err(NixError::new(
            "repairing is not allowed because you are not in 'trusted-users'",
        )),
        BuildMode::Repair => Err(NixError::new(
            "the Ferry daemon does not repair paths by building",
        )),
        BuildMode::Check => Err(NixError::new(
            "the Ferry daemon does not check builds (--check) yet",
        )),
    }
}

/// Build what `paths` name; one Nix result each, in order.
async fn build_derived<R, W>(
    server: &mut Server<R, W>,
    conn: &mut Conn,
    paths: &[DerivedPath],
) -> Result<Result<Vec<BuildResult>, NixError>, ferry_nix_protocol::Error>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let store = conn.store().clone();
    let mut drvs = Vec::new();
    let mut opaque = Vec::new();
    for p in paths {
        match p {
            DerivedPath::Built { drv_path, .. } => match store.parse_path(drv_path) {
                Ok(d) => drvs.push(d),
                Err(e) => return Ok(Err(nix_err(e))),
            },
            DerivedPath::Opaque(o) => match store.parse_path(o) {
                Ok(d) => opaque.push(d),
                Err(e) => return Ok(Err(nix_err(e))),
            },
        }
    }
    let s = store.clone();
    let check = opaque.clone();
    match blocking(move || s.query_valid(&check)).await {
        Ok(valid) => {
            if let Some(missing) = opaque.iter().find(|p| !valid.contains(p)) {
                return Ok(Err(NixError::new(format!(
                    "path '{}' is required, but there is no substituter that can build it",
                    store.display(missing)
                ))));
            }
        }
        Err(e) => return Ok(Err(e)),
    }
    if let Err(e) = conn
        .daemon
        .session_roots
        .hold(&store, conn.id, drvs.clone())
        .await
    {
        return Ok(Err(nix_err(e)));
    }
    let mut options = build_options(&conn.settings);
    let sandbox = conn.daemon.engine.config().build.sandbox;
    for w in crate::access::restrict_build_options(&mut options, &conn.peer, sandbox) {
        server.log(&format!("warning: {w}")).await?;
    }
    let ferry_results = if drvs.is_empty() {
        Vec::new()
    } else {
        run(server, conn, drvs.clone(), options).await?
    };
    let by_drv: HashMap<String, ferry_protocol::BuildResult> = ferry_results
        .into_iter()
        .map(|r| (r.drv.clone(), r))
        .collect();
    Ok(Ok(paths
        .iter()
        .map(|p| match p {
            DerivedPath::Opaque(_) => BuildResult::new(BuildStatus::AlreadyValid, ""),
            DerivedPath::Built { drv_path, .. } => match by_drv.get(drv_path) {
                Some(r) => to_nix(r),
                None => BuildResult::new(BuildStatus::MiscFailure, "not built"),
            },
        })
        .collect()))
}

/// A Ferry result as Nix's.
pub(super) fn to_nix(r: &ferry_protocol::BuildResult) -> BuildResult {
    use ferry_protocol::BuildStatus as F;
    let status = match (r.status, r.failure) {
        (F::Built, _) => BuildStatus::Built,
        (F::AlreadyValid, _) => BuildStatus::AlreadyValid,
        (F::DependencyFailed, _) => BuildStatus::DependencyFailed,
        (F::Failed, FailureKind::TimedOut) => BuildStatus::TimedOut,
        (F::Failed, FailureKind::HashMismatch) => BuildStatus::OutputRejected,
        (F::Failed, FailureKind::Other) => BuildStatus::PermanentFailure,
    };
    let mut msg = match (&r.error, status.is_success()) {
        (_, true) => String::new(),
        (Some(e), false) => format!("build of '{}' failed: {e}", r.drv),
        (None, false) => format!("build of '{}' failed", r.drv),
    };
    if !r.log_tail.is_empty() && !status.is_success() {
        msg.push_str(&format!("\nlast {} log lines:", r.log_tail.len()));
        for l in &r.log_tail {
            msg.push_str("\n> ");
            msg.push_str(l);
        }
    }
    let mut res = BuildResult::new(status, msg);
    res.times_built = u64::from(status == BuildStatus::Built);
    res
}

/// Run the engine on `drvs`, sending its events as Nix's stderr messages.
async fn run<R, W>(
    server: &mut Server<R, W>,
    conn: &mut Conn,
    drvs: Vec<StorePath>,
    options: BuildOptions,
) -> Result<Vec<ferry_protocol::BuildResult>, ferry_nix_protocol::Error>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let (etx, erx) = crate::events::channel();
    let engine = conn.daemon.engine.clone();
    let task = tokio::spawn(async move { engine.build(drvs, options, etx).await });
    follow(server, conn, task, erx).await
}

/// Send a running build's events as Nix's stderr messages until it ends;
/// its results.
pub(super) async fn follow<R, W, T>(
    server: &mut Server<R, W>,
    conn: &mut Conn,
    task: tokio::task::JoinHandle<T>,
    mut erx: crate::events::EventReceiver,
) -> Result<T, ferry_nix_protocol::Error>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    // A client gone (an error below) cancels the build.
    let abort = task.abort_handle();
    let _abort = scopeguard(move || abort.abort());
    let mut acts: HashMap<String, u64> = HashMap::new();
    let mut task = task;
    let mut events_open = true;
    let joined = loop {
        tokio::select! {
            ev = erx.recv(), if events_open => match ev {
                Some(ev) => send_event(server, conn, &mut acts, ev).await?,
                None => events_open = false,
            },
            joined = &mut task => break joined,
        }
    };
    while let Some(ev) = erx.try_recv() {
        send_event(server, conn, &mut acts, ev).await?;
    }
    for (_, id) in acts.drain() {
        server.send(&StderrMsg::StopActivity(id)).await?;
    }
    joined.map_err(|e| ferry_nix_protocol::Error::Protocol(format!("internal error: {e}")))
}

struct Guard<F: FnMut()>(F);
impl<F: FnMut()> Drop for Guard<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
fn scopeguard<F: FnMut()>(f: F) -> Guard<F> {
    Guard(f)
}

async fn send_event<R, W>(
    server: &mut Server<R, W>,
    conn: &mut Conn,
    acts: &mut HashMap<String, u64>,
    ev: BuildEvent,
) -> Result<(), ferry_nix_protocol::Error>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    match ev {
        BuildEvent::Started { drv, machine } => {
            let id = conn.activity_id();
            let here = machine.is_empty() || machine == "localhost";
            let text = if here {
                format!("building '{drv}'")
            } else {
                format!("building '{drv}' on '{machine}'")
            };
            server
                .send(&StderrMsg::StartActivity {
                    id,
                    level: verbosity::INFO,
                    kind: activity::BUILD,
                    text,
                    fields: vec![
                        Field::String(drv.clone()),
                        Field::String(if here { String::new() } else { machine }),
                        Field::Int(1),
                        Field::Int(1),
                    ],
                    parent: 0,
                })
                .await?;
            acts.insert(drv, id);
        }
        BuildEvent::Log { drv, line } => match acts.get(&drv) {
            Some(&id) => server.build_log_line(id, &line).await?,
            None => server.log(&line).await?,
        },
        BuildEvent::Finished { drv, .. } => {
            if let Some(id) = acts.remove(&drv) {
                server.send(&StderrMsg::StopActivity(id)).await?;
            }
        }
        BuildEvent::Warning { message } => server.log(&format!("warning: {message}")).await?,
        BuildEvent::KeepAlive | BuildEvent::Phase { .. } | BuildEvent::Transfer { .. } => {}
    }
    Ok(())
}

/// QueryMissing: the derivations that would be built (their outputs not
/// all valid, and the same below them), and the opaque paths unknown. A
/// Ferry store substitutes nothing, so sizes are 0.
fn missing(
    store: &ferry_store::Store,
    paths: &[DerivedPath],
) -> Result<Missing, ferry_store::StoreError> {
    let mut m = Missing::default();
    let mut todo: Vec<StorePath> = Vec::new();
    for p in paths {
        match p {
            DerivedPath::Opaque(o) => {
                let sp = store.parse_path(o)?;
                if !store.is_valid(&sp)? {
                    m.unknown.insert(o.clone());
                }
            }
            DerivedPath::Built { drv_path, .. } => todo.push(store.parse_path(drv_path)?),
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        if !store.is_valid(&d)? {
            m.unknown.insert(store.display(&d));
            continue;
        }
        let drv = store.read_derivation(&d)?;
        let outs = drv
            .outputs
            .values()
            .map(|o| store.parse_path(&o.path))
            .collect::<Result<Vec<_>, _>>()?;
        if store.are_valid(outs.iter())? {
            continue;
        }
        m.will_build.insert(store.display(&d));
        for input in drv.input_drvs.keys() {
            todo.push(store.parse_path(input)?);
        }
    }
    Ok(m)
}
