//! Roots, collection and verification for Nix clients, with the rules
//! of Ferry's own socket (`crate::gc::handle`): any allowed user adds
//! temporary and indirect roots (`nix-build`'s `result` link), collects
//! and lists dead or live paths; deleting given paths (`nix-store
//! --delete`) and seeing every root are for trusted users (others see the
//! roots whose link they own); `ignore-liveness` is refused to everyone,
//! as nix-daemon does; repairing (`--verify --repair`) is for trusted
//! users.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use ferry_nix_protocol::reply;
use ferry_nix_protocol::request::Request;
use ferry_nix_protocol::{NixError, Server};
use ferry_store::{GcAction, StoreError};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{blocking, nix_err, Conn, Handled};

pub async fn handle<R, W>(server: &mut Server<R, W>, conn: &mut Conn, req: Request) -> Handled
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let store = conn.store().clone();
    match req {
        Request::AddTempRoot(p) => {
            let sp = match store.parse_path(&p) {
                Ok(sp) => sp,
                Err(e) => return Ok(Err(nix_err(e))),
            };
            conn.daemon
                .temp_roots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(conn.id)
                .or_default()
                .insert(sp.clone());
            if let Err(e) = conn
                .daemon
                .session_roots
                .hold(&store, conn.id, vec![sp])
                .await
            {
                return Ok(Err(nix_err(e)));
            }
            server.last().u64(1);
        }
        Request::AddIndirectRoot(link) => {
            let res = blocking(move || {
                let path = std::path::PathBuf::from(&link);
                let target = std::fs::read_link(&path).map_err(|e| StoreError::Io {
                    context: format!("{link} is not a symlink into the store"),
                    source: e,
                })?;
                store
                    .store_dir()
                    .parse_inside(&target.to_string_lossy())
                    .map_err(StoreError::from)?;
                store.add_indirect_root(&path)
            })
            .await;
            if let Err(e) = res {
                return Ok(Err(e));
            }
            server.last().u64(1);
        }
        Request::SyncWithGC => {
            server.last().u64(1);
        }
        Request::FindRoots => {
            let trusted = conn.peer.trusted;
            let uid = conn.peer.uid;
            let res = blocking(move || {
                Ok(store
                    .find_roots()?
                    .into_iter()
                    .filter(|(link, _)| {
                        trusted || std::fs::symlink_metadata(link).is_ok_and(|m| m.uid() == uid)
                    })
                    .map(|(link, p)| (link.display().to_string(), store.display(&p)))
                    .collect::<Vec<_>>())
            })
            .await;
            match res {
                Ok(roots) => reply::find_roots(server.last(), &roots),
                Err(e) => return Ok(Err(e)),
            }
        }
        Request::CollectGarbage {
            action,
            paths,
            ignore_liveness,
            max_freed,
        } => {
            if ignore_liveness {
                return Ok(Err(NixError::new("you are not allowed to ignore liveness")));
            }
            let action = match action {
                0 => GcAction::ReturnLive,
                1 => GcAction::ReturnDead,
                2 => GcAction::DeleteDead {
                    max_freed: (max_freed != u64::MAX && max_freed != 0).then_some(max_freed),
                },
                3 if !conn.peer.trusted => {
                    return Ok(Err(NixError::new(format!(
                        "deleting given paths (--delete) is for trusted users: user '{}' is not in the daemon's trusted users",
                        conn.peer.user
                    ))))
                }
                3 => match paths.iter().map(|p| store.parse_path(p)).collect() {
                    Ok(p) => GcAction::DeleteSpecific(p),
                    Err(e) => return Ok(Err(nix_err(e))),
                },
                n => return Ok(Err(NixError::new(format!("unknown garbage collector action {n}")))),
            };
            let engine = &conn.daemon.engine;
            match crate::gc::collect(engine, crate::gc::options(engine, action)).await {
                Ok(r) => {
                    let listed: BTreeSet<String> =
                        r.paths.iter().map(|p| store.display(p)).collect();
                    reply::collect_garbage(server.last(), &listed, r.bytes_freed);
                }
                Err(e) => return Ok(Err(nix_err(e))),
            }
        }
        Request::VerifyStore { repair, .. } => {
            if repair && !conn.peer.trusted {
                return Ok(Err(NixError::new("you are not privileged to repair paths")));
            }
            match blocking(move || store.verify_report(repair)).await {
                Ok(report) => {
                    for l in report.lines.iter().chain(&report.summary) {
                        server.log(l).await?;
                    }
                    server.last().bool(!report.ok);
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        _ => unreachable!("dispatched here by mod.rs"),
    }
    server.flush().await?;
    Ok(Ok(()))
}
