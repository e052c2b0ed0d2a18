//! Questions about the store, answered as nix-daemon answers them:
//! validity, path information (the record `nix path-info` and
//! `nix-store -q` read), referrers, a path's derivers, a derivation's
//! outputs, and the older questions nix-daemon still answers (a path's
//! hash, references and deriver one by one, the path of a hash part,
//! every valid path). A Ferry store has no substituters: every "substitutable"
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

/// The answer of an older question: one string, or a list.
enum Older {
    One(String),
    Many(Vec<String>),
}

/// The questions Nix 2.8's clients no longer ask but nix-daemon still
/// answers (older clients, `nix-store -q --hash` of old, scripts).
fn older(store: &Store, req: Request) -> Result<Older, ferry_store::StoreError> {
    let info = |p: &str| store.valid_info(&store.parse_path(p)?);
    Ok(match req {
        Request::QueryPathHash(p) => Older::One(info(&p)?.nar_hash.to_base16()),
        Request::QueryReferences(p) => Older::Many(
            info(&p)?
                .references
                .iter()
                .map(|r| store.display(r))
                .collect(),
        ),
        Request::QueryDeriver(p) => Older::One(
            info(&p)?
                .deriver
                .map(|d| store.display(&d))
                .unwrap_or_default(),
        ),
        Request::QueryDerivationOutputs(p) => {
            let drv = store.read_derivation(&store.parse_path(&p)?)?;
            let paths: BTreeSet<String> = drv.outputs.values().map(|o| o.path.clone()).collect();
            Older::Many(paths.into_iter().filter(|p| !p.is_empty()).collect())
        }
        Request::QueryDerivationOutputNames(p) => {
            let drv = store.read_derivation(&store.parse_path(&p)?)?;
            Older::Many(drv.outputs.keys().cloned().collect())
        }
        Request::QueryPathFromHashPart(hash) => {
            // The store directory is read entry by entry (memory stays
            // flat); the entry must be valid.
            let prefix = format!("{hash}-");
            let dir = std::fs::read_dir(store.real_store_dir()).map_err(|e| {
                ferry_store::StoreError::Io {
                    context: "reading the store directory".into(),
                    source: e,
                }
            })?;
            let mut found = String::new();
            for entry in dir.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if hash.len() == 32 && name.starts_with(&prefix) {
                    let abs = format!("{}/{name}", store.store_dir());
                    if let Ok(p) = store.parse_path(&abs) {
                        if store.is_valid(&p)? {
                            found = abs;
                            break;
                        }
                    }
                }
            }
            Older::One(found)
        }
        Request::QueryAllValidPaths => Older::Many(
            store
                .all_valid()?
                .iter()
                .map(|p| store.display(p))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        ),
        _ => unreachable!("only the older questions come here"),
    })
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
        r @ (Request::QueryPathHash(_)
        | Request::QueryReferences(_)
        | Request::QueryDeriver(_)
        | Request::QueryDerivationOutputs(_)
        | Request::QueryDerivationOutputNames(_)
        | Request::QueryPathFromHashPart(_)
        | Request::QueryAllValidPaths) => match blocking(move || older(&store, r)).await {
            Ok(Older::One(s)) => {
                server.last().bytes(s);
            }
            Ok(Older::Many(v)) => {
                server.last().strings(&v);
            }
            Err(e) => return Ok(Err(e)),
        },
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
