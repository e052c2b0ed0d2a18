//! Questions about the store, answered as nix-daemon answers them:
//! validity, path information (the record `nix path-info` and
//! `nix-store -q` read), referrers, a path's derivers, a derivation's
//! outputs. A Ferry store has no substituters: every "substitutable"
//! question is answered with nothing.

use std::collections::{BTreeMap, BTreeSet};

use ferry_formats::content_hash::{Hash, HashAlgo};
use ferry_nix_protocol::content_address::ContentAddress;
use ferry_nix_protocol::path_info::ValidPathInfo;
use ferry_nix_protocol::reply;
use ferry_nix_protocol::request::Request;
use ferry_nix_protocol::Server;
use ferry_store::Store;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{blocking, Conn, Handled};

/// A Ferry path's information in Nix's shape.
pub fn to_nix(store: &Store, i: &ferry_store::PathInfo) -> ValidPathInfo {
    ValidPathInfo {
        path: store.display(&i.path),
        deriver: i.deriver.as_ref().map(|d| store.display(d)),
        nar_hash: Hash::from_bytes(HashAlgo::Sha256, i.nar_hash.as_bytes())
            .expect("a sha256 digest is 32 bytes"),
        references: i.references.iter().map(|r| store.display(r)).collect(),
        registration_time: i.registration_time.max(0) as u64,
        nar_size: i.nar_size,
        ultimate: false,
        sigs: i.signatures.iter().cloned().collect(),
        ca: i
            .ca
            .as_deref()
            .and_then(|c| ContentAddress::parse_opt(c).ok().flatten()),
    }
}

pub async fn handle<R, W>(server: &mut Server<R, W>, conn: &mut Conn, req: Request) -> Handled
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let store = conn.store().clone();
    let v = server.client_version();
    match req {
        Request::IsValidPath(p) => {
            let valid = match blocking(move || store.is_valid(&store.parse_path(&p)?)).await {
                Ok(b) => b,
                Err(e) => return Ok(Err(e)),
            };
            server.last().bool(valid);
        }
        Request::QueryValidPaths { paths, .. } => {
            let roots = match conn.roots() {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            let res = blocking(move || {
                let parsed = paths
                    .iter()
                    .map(|p| store.parse_path(p))
                    .collect::<Result<Vec<_>, _>>()?;
                // What is valid now stays so while the client lasts.
                let _rooted =
                    roots.scope(|| store.root_in_scope(&parsed.iter().collect::<Vec<_>>()))?;
                Ok(store
                    .query_valid(&parsed)?
                    .iter()
                    .map(|p| store.display(p))
                    .collect::<BTreeSet<_>>())
            })
            .await;
            match res {
                Ok(valid) => {
                    server.last().strings(&valid);
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Request::QueryPathInfo(p) => {
            let res = blocking(move || {
                let sp = store.parse_path(&p)?;
                Ok(store.path_info(&sp)?.map(|i| to_nix(&store, &i)))
            })
            .await;
            match res {
                Ok(info) => reply::query_path_info(server.last(), info.as_ref(), v),
                Err(e) => return Ok(Err(e)),
            }
        }
        Request::QueryReferrers(p) => {
            let res = blocking(move || {
                let sp = store.parse_path(&p)?;
                Ok(store
                    .referrers(&sp)?
                    .iter()
                    .map(|r| store.display(r))
                    .collect::<BTreeSet<_>>())
            })
            .await;
            match res {
                Ok(refs) => {
                    server.last().strings(&refs);
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Request::QueryValidDerivers(p) => {
            // The deriver the store recorded, when it is valid.
            let res = blocking(move || {
                let sp = store.parse_path(&p)?;
                let mut out = BTreeSet::new();
                if let Some(d) = store.path_info(&sp)?.and_then(|i| i.deriver) {
                    if store.is_valid(&d)? {
                        out.insert(store.display(&d));
                    }
                }
                Ok(out)
            })
            .await;
            match res {
                Ok(d) => {
                    server.last().strings(&d);
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Request::QueryDerivationOutputMap(p) => {
            let res = blocking(move || {
                let drv = store.read_derivation(&store.parse_path(&p)?)?;
                Ok(drv
                    .outputs
                    .iter()
                    .map(|(name, o)| (name.clone(), (!o.path.is_empty()).then(|| o.path.clone())))
                    .collect::<BTreeMap<_, _>>())
            })
            .await;
            match res {
                Ok(m) => reply::derivation_output_map(server.last(), &m),
                Err(e) => return Ok(Err(e)),
            }
        }
        Request::QuerySubstitutablePathInfos(_) => {
            reply::query_substitutable_path_infos(server.last(), &BTreeMap::new());
        }
        Request::QuerySubstitutablePathInfo(_) => {
            reply::query_substitutable_path_info(server.last(), None);
        }
        Request::QuerySubstitutablePaths(_) => {
            server.last().strings(Vec::<String>::new());
        }
        Request::HasSubstitutes(_) => {
            server.last().bool(false);
        }
        _ => unreachable!("dispatched here by mod.rs"),
    }
    server.flush().await?;
    Ok(Ok(()))
}
