//! The daemon's garbage collection: the one entry point that requests
//! (`ferry gc`) and automatic collection call.
//!
//! Every operation in progress holds its paths in a temporary roots file
//! of the store (`ferry_store::TempRoots`): a connection holds what its
//! client added, imported, asked to root or is building; each
//! `Engine::build` holds the derivations it builds (and through them their
//! inputs and outputs), on the master as on a build machine; an embedded
//! `ferry build` in another process does the same. The store's collector
//! lock serialises a collection with the adds that root a path, across
//! processes. So `collect` only moves the blocking collection off the
//! async threads.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use ferry_formats::StorePath;
use ferry_protocol::{GcRequest, Request, Response};
use ferry_store::{GcAction, GcOptions, GcResult, Store, StoreError, TempRoots};

use crate::access::Peer;
use crate::engine::Engine;
use crate::session::Daemon;

/// Collect garbage in `engine`'s store with `opts` (its `extra_roots` are
/// added to the temporary roots of every connection and build). Waits for
/// a collection already running, and for adds that hold the collector
/// lock shared.
pub async fn collect(engine: &Arc<Engine>, opts: GcOptions) -> Result<GcResult, StoreError> {
    let store = engine.store().clone();
    let started = std::time::Instant::now();
    let res = tokio::task::spawn_blocking(move || store.collect_garbage(&opts))
        .await
        .map_err(|e| StoreError::Corrupt(format!("the collection panicked: {e}")))?;
    if let Ok(r) = &res {
        tracing::info!(
            paths = r.deleted,
            bytes = r.bytes_freed,
            ms = started.elapsed().as_millis() as u64,
            "garbage collection done"
        );
    }
    res
}

/// The options of a collection with this engine's settings
/// (`keep-outputs`, `keep-derivations`).
pub fn options(engine: &Engine, action: GcAction) -> GcOptions {
    GcOptions {
        keep_outputs: engine.config().keep_outputs,
        keep_derivations: engine.config().keep_derivations,
        ..GcOptions::new(action)
    }
}

/// Each connection's temporary roots file, made on its first need and
/// removed when the connection ends.
#[derive(Default)]
pub struct SessionRoots(Mutex<HashMap<u64, Arc<TempRoots>>>);

impl SessionRoots {
    /// Connection `id`'s roots (made now if it has none).
    pub fn of(&self, store: &Store, id: u64) -> Result<Arc<TempRoots>, StoreError> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = map.get(&id) {
            return Ok(r.clone());
        }
        let r = Arc::new(store.temp_roots()?);
        map.insert(id, r.clone());
        Ok(r)
    }

    /// Root `paths` for connection `id` (waits while a collection runs).
    pub async fn hold(
        &self,
        store: &Arc<Store>,
        id: u64,
        paths: Vec<StorePath>,
    ) -> Result<(), StoreError> {
        let roots = self.of(store, id)?;
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let _gc = store.gc_shared()?;
            paths.iter().try_for_each(|p| roots.add_locked(p))
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("rooting panicked: {e}")))?
    }

    pub fn end(&self, id: u64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

fn refused(what: &str, peer: &Peer) -> Response {
    Response::Error {
        message: format!(
            "{what} is for trusted users: user '{}' is not in the daemon's trusted users (--trusted-users); ask an administrator, or run `ferry gc` without it to collect what is dead",
            peer.user
        ),
    }
}

/// Answer the collector's requests, with the trust rules: any allowed
/// user collects and lists dead or live paths; deleting given paths,
/// overriding the keep settings and listing every root are for trusted
/// users (others see the roots whose link they own).
pub(crate) async fn handle(daemon: &Arc<Daemon>, peer: &Peer, req: Request) -> Response {
    let engine = &daemon.engine;
    let store = engine.store().clone();
    let fail = |e: StoreError| Response::Error {
        message: e.to_string(),
    };
    match req {
        Request::CollectGarbage {
            action,
            keep_outputs,
            keep_derivations,
        } => {
            let action = match action {
                GcRequest::DeleteDead { max_freed } => GcAction::DeleteDead { max_freed },
                GcRequest::ListDead => GcAction::ReturnDead,
                GcRequest::ListLive => GcAction::ReturnLive,
                GcRequest::DeleteSpecific { paths } => {
                    if !peer.trusted {
                        return refused("deleting given paths (--delete)", peer);
                    }
                    match paths.iter().map(|p| store.parse_path(p)).collect() {
                        Ok(p) => GcAction::DeleteSpecific(p),
                        Err(e) => return fail(e),
                    }
                }
            };
            let mut opts = options(engine, action);
            if peer.trusted {
                opts.keep_outputs = keep_outputs.unwrap_or(opts.keep_outputs);
                opts.keep_derivations = keep_derivations.unwrap_or(opts.keep_derivations);
            }
            match collect(engine, opts).await {
                Ok(r) => Response::Collected {
                    paths: r.paths.iter().map(|p| store.display(p)).collect(),
                    deleted: r.deleted,
                    bytes_freed: r.bytes_freed,
                },
                Err(e) => fail(e),
            }
        }
        Request::FindRoots => {
            let trusted = peer.trusted;
            let uid = peer.uid;
            let res = tokio::task::spawn_blocking(move || {
                let roots = store.find_roots()?;
                Ok::<_, StoreError>(
                    roots
                        .into_iter()
                        .filter(|(link, _)| {
                            trusted || std::fs::symlink_metadata(link).is_ok_and(|m| m.uid() == uid)
                        })
                        .map(|(link, p)| (link.display().to_string(), store.display(&p)))
                        .collect(),
                )
            })
            .await;
            match res {
                Ok(Ok(roots)) => Response::Roots { roots },
                Ok(Err(e)) => fail(e),
                Err(e) => Response::Error {
                    message: format!("internal error: {e}"),
                },
            }
        }
        Request::AddIndirectRoot { link } => {
            let res = tokio::task::spawn_blocking(move || {
                let path = std::path::PathBuf::from(&link);
                let target = std::fs::read_link(&path).map_err(|e| StoreError::Io {
                    context: format!(
                        "{link} is not a symlink (make it point into the store first)"
                    ),
                    source: e,
                })?;
                store
                    .store_dir()
                    .parse_inside(&target.to_string_lossy())
                    .map_err(StoreError::from)?;
                store.add_indirect_root(&path)
            })
            .await;
            match res {
                Ok(Ok(())) => Response::Ok,
                Ok(Err(e)) => fail(e),
                Err(e) => Response::Error {
                    message: format!("internal error: {e}"),
                },
            }
        }
        Request::QueryReferrers { path } => {
            let res = tokio::task::spawn_blocking(move || {
                let p = store.parse_path(&path)?;
                Ok::<_, StoreError>(
                    store
                        .referrers(&p)?
                        .iter()
                        .map(|r| store.display(r))
                        .collect(),
                )
            })
            .await;
            match res {
                Ok(Ok(paths)) => Response::Valid { paths },
                Ok(Err(e)) => fail(e),
                Err(e) => Response::Error {
                    message: format!("internal error: {e}"),
                },
            }
        }
        _ => Response::Error {
            message: "not a collector request".into(),
        },
    }
}
