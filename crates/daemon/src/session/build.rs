//! A build request on a session: the build runs in its own task while its
//! events go to the client (progress only to those who asked, keep-alives
//! to an offloading master, the daemon's stop notice once); a client that
//! goes away cancels its builds.

use std::sync::Arc;

use ferry_formats::StorePath;
use ferry_protocol::{BuildEvent, ProtocolError, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{err, Daemon, Reader, Writer};
use crate::access::Peer;

/// Aborts the build task when the session ends (the client went away).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn run_build<S>(
    r: &mut Reader<S>,
    w: &mut Writer<S>,
    daemon: &Arc<Daemon>,
    drvs: Vec<StorePath>,
    mut options: ferry_protocol::BuildOptions,
    peer: &Peer,
) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let daemon_sandbox = daemon.engine.config().build.sandbox;
    for message in crate::access::restrict_build_options(&mut options, peer, daemon_sandbox) {
        w.send(&Response::Build(BuildEvent::Warning { message }))
            .await?;
    }
    // The build runs in its own task, so a client that does not read (a
    // writer blocked on a full socket) never stops it: its events queue
    // in a bounded channel (crate::events) that drops log lines.
    let (etx, mut erx) = crate::events::channel();
    let engine = daemon.engine.clone();
    // An offloading master asks for keep-alives: a silent builder is then
    // told from a stopped daemon (at least 1 s apart).
    let keep_alive = (options.keep_alive > 0).then(|| {
        let every = std::time::Duration::from_secs(options.keep_alive);
        tokio::time::interval_at(tokio::time::Instant::now() + every, every)
    });
    let mut keep_alive = keep_alive;
    // Progress events go to clients that asked for them only.
    let progress = options.progress;
    let mut task = tokio::spawn(async move { engine.build(drvs, options, etx).await });
    // The daemon stopping is told, once.
    let mut stopping = daemon.stopping.subscribe();
    let mut told = stopping.borrow().is_some();
    // A client that goes away (an error below) cancels its builds.
    let _abort = AbortOnDrop(task.abort_handle());
    let mut events_open = true;
    let joined = loop {
        tokio::select! {
            ev = erx.recv(), if events_open => match ev {
                Some(ev) if ev.is_progress() && !progress => {}
                Some(ev) => w.send(&Response::Build(ev)).await?,
                None => events_open = false,
            },
            joined = &mut task => break joined,
            _ = async { keep_alive.as_mut().expect("checked").tick().await }, if keep_alive.is_some() => {
                w.send(&Response::Build(BuildEvent::KeepAlive)).await?
            }
            changed = stopping.changed(), if !told => {
                told = true;
                let why = changed.ok().and_then(|()| stopping.borrow().clone());
                if let Some(message) = why {
                    w.send(&Response::Build(BuildEvent::Warning { message })).await?;
                }
            }
            // The client sends nothing while its build runs: EOF (it went
            // away, even silently) or anything else ends the session, and
            // the task is aborted.
            frame = r.frame() => {
                return Err(match frame {
                    Err(e) => e,
                    Ok(_) => ProtocolError::BadFrame("a frame sent during a build".into()),
                });
            }
        }
    };
    let results = match joined {
        Ok(results) => results,
        Err(e) => return w.send(&err(format!("internal error: {e}"))).await,
    };
    while let Some(ev) = erx.try_recv() {
        if ev.is_progress() {
            continue; // stale now
        }
        w.message(&Response::Build(ev)).await?;
    }
    w.send(&Response::BuildDone { results }).await
}
