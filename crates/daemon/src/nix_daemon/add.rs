//! Every way a Nix client puts a path in the store, and the trust rules on
//! them (daemon.cc's `performOp`): text files (`AddTextToStore`, and
//! `AddToStore` with `text:sha256`, how `nix-instantiate` writes `.drv`s),
//! content-addressed trees and files (`AddToStore`, both forms: what
//! `nix-store --add` and `builtins.path` send), and paths with a given
//! record (`AddToStoreNar`: `nix-store --import`, `nix copy --to`;
//! `AddMultipleToStore`). Every add goes through the store's one door
//! (`Store::commit`, or `add_text`/`add_nar`/`add_derivation_text` which
//! use it): a `.drv` is checked as any other, references must be valid.
//!
//! A path with a record is accepted from an untrusted client only when it
//! proves itself: content-addressed and matching its address (as Nix's
//! `checkSignatures` counts), or signed by a key of `trusted-public-keys`
//! (ferry.conf; [`signed_by_trusted_key`]). `dontCheckSigs`
//! counts for trusted users only.

use std::io::Read;

use ferry_formats::content_hash::{Hash, HashAlgo, Hasher};
use ferry_formats::store_path::FileIngestion;
use ferry_formats::{nar, Sha256Hash, StorePath};
use ferry_nix_protocol::content_address::{ContentAddress, ContentAddressMethod};
use ferry_nix_protocol::nar_copy::copy_nar;
use ferry_nix_protocol::path_info::{read_multiple_count, read_multiple_info, ValidPathInfo};
use ferry_nix_protocol::request::{AddToStore, DataFollows, Request};
use ferry_nix_protocol::{Limits, NixError, NixRead, Server};
use ferry_store::{PathInfo, Store, StoreError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::stream::{drain, to_store};
use super::{blocking, nix_err, Conn, Handled};

pub async fn handle<R, W>(server: &mut Server<R, W>, conn: &mut Conn, req: Request) -> Handled
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let v = server.client_version();
    match req {
        Request::AddTextToStore {
            name,
            text,
            references,
        } => {
            let refs = references.into_iter().collect();
            match add_text(conn, name, text, refs).await {
                Ok(p) => {
                    server.last().bytes(p);
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Request::AddToStore(AddToStore::Framed {
            name,
            method,
            references,
            ..
        }) => {
            let res = match method {
                ContentAddressMethod::Text => {
                    let mut text = Vec::new();
                    let limit = Limits::default().text;
                    let mut fr = server.framed();
                    (&mut fr).take(limit + 1).read_to_end(&mut text).await?;
                    fr.drain().await?;
                    if text.len() as u64 > limit {
                        Err(nix_err(format!("text of over {limit} bytes refused")))
                    } else {
                        add_text(conn, name, text, references.into_iter().collect()).await
                    }
                }
                ContentAddressMethod::Fixed { method, algo } => {
                    let roots = match conn.roots() {
                        Ok(r) => r,
                        Err(e) => {
                            server.framed().drain().await?;
                            return Ok(Err(e));
                        }
                    };
                    let store = conn.store().clone();
                    let mut ts = to_store(move |r| {
                        if !references.is_empty() {
                            drain(r)?;
                            return Err(StoreError::Derivation(
                                "a content-addressed path with references is not supported by Ferry yet".into(),
                            ));
                        }
                        let data = if method == FileIngestion::Flat {
                            Data::Flat
                        } else {
                            Data::Nar
                        };
                        roots.scope(|| add_fixed(&store, &name, method, algo, data, r))
                    });
                    let mut fr = server.framed();
                    let copied = tokio::io::copy(&mut fr, ts.writer()).await;
                    let res = ts.finish().await;
                    copied?;
                    res.map(|p| conn.store().display(&p.path))
                }
            };
            match res {
                Ok(path) => {
                    let store = conn.store().clone();
                    let info = blocking(move || {
                        let sp = store.parse_path(&path)?;
                        Ok(super::query::to_nix(&store, &store.valid_info(&sp)?))
                    })
                    .await;
                    match info {
                        Ok(i) => i.write(server.last(), v, true),
                        Err(e) => return Ok(Err(e)),
                    }
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Request::AddToStore(legacy @ AddToStore::Legacy { .. }) => {
            let AddToStore::Legacy {
                name,
                fixed,
                recursive,
                hash_algo,
            } = &legacy
            else {
                unreachable!()
            };
            let follows = Request::AddToStore(legacy.clone()).data_follows(v);
            let method = match AddToStore::legacy_method(*fixed, *recursive, hash_algo) {
                Ok(ContentAddressMethod::Fixed { method, algo }) => (method, algo),
                Ok(ContentAddressMethod::Text) | Err(_) => {
                    return Err(ferry_nix_protocol::Error::Protocol(
                        "bad AddToStore method".into(),
                    ))
                }
            };
            let data = if follows == DataFollows::FlatNar {
                Data::FlatNar
            } else {
                Data::Nar
            };
            let roots = conn.roots();
            let store = conn.store().clone();
            let name = name.clone();
            let mut ts = to_store(move |r| {
                let roots = roots.map_err(|e| StoreError::Derivation(e.plain_msg()))?;
                roots.scope(|| add_fixed(&store, &name, method.0, method.1, data, r))
            });
            let copied = copy_nar(server.reader(), ts.writer()).await;
            let res = ts.finish().await;
            copied?;
            match res {
                Ok(info) => {
                    server.last().bytes(conn.store().display(&info.path));
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Request::AddToStoreNar(a) => {
            let follows = Request::AddToStoreNar(a.clone()).data_follows(v);
            if follows == DataFollows::Tunnel {
                return Ok(Err(NixError::new(
                    "AddToStoreNar from clients of protocol 1.21 and 1.22 is not supported by the Ferry daemon; use Nix 2.3 or later",
                )));
            }
            let verdict = admit(conn, &a.info, a.dont_check_sigs);
            let store = conn.store().clone();
            let roots = conn.roots();
            let info = a.info.clone();
            let mut ts = to_store(move |r| {
                if let Err(why) = verdict {
                    drain(r)?;
                    return Err(StoreError::Refused {
                        path: info.path.clone(),
                        reason: why,
                    });
                }
                let roots = roots.map_err(|e| StoreError::Derivation(e.plain_msg()))?;
                roots.scope(|| add_with_info(&store, &info, r))
            });
            let copied = if follows == DataFollows::Framed {
                let mut fr = server.framed();
                tokio::io::copy(&mut fr, ts.writer()).await.map(|_| ())
            } else {
                copy_nar(server.reader(), ts.writer())
                    .await
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string()))
            };
            let res = ts.finish().await;
            copied?;
            if let Err(e) = res {
                return Ok(Err(e));
            }
            server.last();
        }
        Request::AddMultipleToStore {
            dont_check_sigs, ..
        } => {
            let res = add_multiple(server, conn, dont_check_sigs).await?;
            if let Err(e) = res {
                return Ok(Err(e));
            }
            server.last();
        }
        Request::ImportPaths => return super::import::handle(server, conn).await,
        Request::AddSignatures { path, sigs } => {
            if !conn.peer.trusted {
                return Ok(Err(NixError::new(
                    "you are not privileged to add signatures",
                )));
            }
            let store = conn.store().clone();
            let sigs: Vec<String> = sigs.into_iter().collect();
            let res =
                blocking(move || store.add_signatures(&store.parse_path(&path)?, &sigs)).await;
            if let Err(e) = res {
                return Ok(Err(e));
            }
            server.last().u64(1);
        }
        _ => unreachable!("dispatched here by mod.rs"),
    }
    server.flush().await?;
    Ok(Ok(()))
}

/// `AddMultipleToStore`: a count, then records and NARs, all framed. Each
/// path is judged and added in turn; after a refusal the rest is read and
/// dropped (the stream stays in step) and the refusal is the answer.
async fn add_multiple<R, W>(
    server: &mut Server<R, W>,
    conn: &mut Conn,
    dont_check_sigs: bool,
) -> Result<Result<(), NixError>, ferry_nix_protocol::Error>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut nr = NixRead::new(server.framed(), Limits::default());
    let mut failed = None;
    let n = read_multiple_count(&mut nr).await?;
    for _ in 0..n {
        let info = read_multiple_info(&mut nr).await?;
        let verdict = if failed.is_some() {
            Err(String::new())
        } else {
            admit(conn, &info, dont_check_sigs)
        };
        let store = conn.store().clone();
        let roots = conn.roots();
        let shown = info.path.clone();
        let mut ts = to_store(move |r| {
            if let Err(why) = verdict {
                drain(r)?;
                return Err(StoreError::Refused {
                    path: info.path.clone(),
                    reason: why,
                });
            }
            let roots = roots.map_err(|e| StoreError::Derivation(e.plain_msg()))?;
            roots.scope(|| add_with_info(&store, &info, r))
        });
        let copied = copy_nar(nr.get_mut(), ts.writer()).await;
        let res = ts.finish().await;
        copied?;
        if let (Err(e), None) = (res, &failed) {
            tracing::debug!("AddMultipleToStore: {shown}: {}", e.plain_msg());
            failed = Some(e);
        }
    }
    nr.get_mut().drain().await?;
    Ok(match failed {
        Some(e) => Err(e),
        None => Ok(()),
    })
}

/// May this client add `info` with this `dontCheckSigs`? Trusted users
/// may skip the checks; otherwise the path must prove itself.
fn admit(conn: &Conn, info: &ValidPathInfo, dont_check_sigs: bool) -> Result<(), String> {
    if dont_check_sigs && conn.peer.trusted {
        return Ok(());
    }
    let store = conn.store();
    if ca_matches(store, info)
        || signed_by_trusted_key(&conn.daemon.config.trusted_public_keys, info)
    {
        return Ok(());
    }
    let why = if conn.peer.trusted {
        "the client asked for signatures to be checked (`nix copy --no-check-sigs` skips that for trusted users)".to_string()
    } else {
        format!(
            "user '{}' is not in the daemon's trusted users",
            conn.peer.user
        )
    };
    Err(format!(
        "cannot add path '{}' because it lacks a valid signature ({why})",
        info.path
    ))
}

/// Is `info` signed (Nix's `NAME:BASE64` over `info.fingerprint()`) by a
/// key of `trusted-public-keys`?
fn signed_by_trusted_key(
    keys: &[ferry_trust::nix_signature::NixPublicKey],
    info: &ValidPathInfo,
) -> bool {
    let Ok(fingerprint) = info.fingerprint() else {
        return false;
    };
    info.sigs
        .iter()
        .any(|s| ferry_trust::nix_signature::verify(keys, &fingerprint, s))
}

fn sha256_of(h: &Hash) -> Option<Sha256Hash> {
    (h.algo() == HashAlgo::Sha256).then(|| Sha256Hash(h.as_bytes().try_into().expect("32 bytes")))
}

/// Is `info.path` the path its content address and references imply
/// (Nix's `isContentAddressed`)?
pub(crate) fn ca_matches(store: &Store, info: &ValidPathInfo) -> bool {
    let Ok(path) = store.parse_path(&info.path) else {
        return false;
    };
    let name = path.name();
    let mut refs = Vec::new();
    let mut self_ref = false;
    for r in &info.references {
        match store.parse_path(r) {
            Ok(p) if p == path => self_ref = true,
            Ok(p) => refs.push(p),
            Err(_) => return false,
        }
    }
    let dir = store.store_dir();
    let computed = match &info.ca {
        None => return false,
        Some(ContentAddress::Text(h)) => match sha256_of(h) {
            Some(h) if !self_ref => dir.text_path(name, &h, &refs),
            _ => return false,
        },
        Some(ContentAddress::Fixed { method, hash }) => match (method, sha256_of(hash)) {
            (FileIngestion::Recursive, Some(h)) => dir.source_path(name, &h, &refs, self_ref),
            _ if refs.is_empty() && !self_ref => {
                dir.fixed_output_path_any(name, *method, hash.algo().name(), &hash.to_base16())
            }
            _ => return false,
        },
    };
    computed.is_ok_and(|p| p == path)
}

/// A text file, or a `.drv` (checked by the store as any other).
async fn add_text(
    conn: &Conn,
    name: String,
    text: Vec<u8>,
    refs: Vec<String>,
) -> Result<String, NixError> {
    let roots = conn.roots()?;
    let store = conn.store().clone();
    blocking(move || {
        let p = roots.scope(|| {
            if name.ends_with(".drv") {
                let text = String::from_utf8(text)
                    .map_err(|_| StoreError::Derivation(format!("{name} is not UTF-8")))?;
                return store.add_derivation_text(&name, &text);
            }
            let refs = refs
                .iter()
                .map(|p| store.parse_path(p))
                .collect::<Result<Vec<_>, _>>()?;
            store.add_text(&name, &text, &refs)
        })?;
        Ok(store.display(&p))
    })
    .await
}

/// How an `AddToStore`'s data comes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Data {
    /// A NAR (recursive ingestion).
    Nar,
    /// The NAR of one regular file, whose contents are hashed (legacy flat).
    FlatNar,
    /// The file's bytes (1.25+ flat).
    Flat,
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        context: context.to_string(),
        source,
    }
}

/// A content-addressed path (`addToStoreFromDump`): restored into a
/// temporary entry, hashed with `algo` as `method` says, then committed
/// at the path its hash implies. Recursive sha256 is `Store::add_nar`.
fn add_fixed(
    store: &Store,
    name: &str,
    method: FileIngestion,
    algo: HashAlgo,
    data: Data,
    r: &mut dyn Read,
) -> Result<PathInfo, StoreError> {
    if method == FileIngestion::Recursive && algo == HashAlgo::Sha256 && data == Data::Nar {
        let p = store.add_nar(name, r)?;
        return store.valid_info(&p);
    }
    let temp = store.temp_path();
    match data {
        Data::Nar | Data::FlatNar => {
            nar::restore(r, temp.path())?;
            drain(r)?;
        }
        Data::Flat => {
            let mut f = std::fs::File::create(temp.path()).map_err(io("creating a file"))?;
            std::io::copy(r, &mut f).map_err(io("receiving a file"))?;
        }
    }
    let meta = std::fs::symlink_metadata(temp.path()).map_err(io("reading what was sent"))?;
    if method == FileIngestion::Flat && !meta.is_file() {
        return Err(StoreError::Derivation("regular file expected".into()));
    }
    let mut h = Hasher::new(algo);
    if method == FileIngestion::Flat {
        let mut f = std::fs::File::open(temp.path()).map_err(io("reading the file"))?;
        std::io::copy(&mut f, &mut h).map_err(io("hashing the file"))?;
    } else {
        nar::dump(temp.path(), &mut h).map_err(io("hashing the tree"))?;
    }
    let hash = h.finish();
    let path =
        store
            .store_dir()
            .fixed_output_path_any(name, method, algo.name(), &hash.to_base16())?;
    let ca = ContentAddress::Fixed { method, hash }.render();
    let (nar_hash, nar_size, _) = store.hash_and_scan(temp.path(), &[])?;
    let info = PathInfo {
        path: path.clone(),
        nar_hash,
        nar_size,
        references: Vec::new(),
        deriver: None,
        registration_time: now(),
        signatures: Vec::new(),
        ca: Some(ca),
    };
    let _rooted = store.root_in_scope(&[&path])?;
    let lock = store.lock_path(&path)?;
    if !store.is_valid(&path)? {
        store.commit(temp, &info, &lock)?;
    }
    store.valid_info(&path)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Add a path with the record the client gives (`addToStore(info,
/// source)`): the NAR is restored and its hash and size checked against
/// the record before the store's door; a path already valid is kept.
fn add_with_info(store: &Store, info: &ValidPathInfo, r: &mut dyn Read) -> Result<(), StoreError> {
    let path = store.parse_path(&info.path)?;
    let parse = |p: &String| store.parse_path(p);
    let mut references: Vec<StorePath> = info
        .references
        .iter()
        .map(parse)
        .collect::<Result<_, _>>()?;
    references.sort();
    references.dedup();
    let deriver = info.deriver.as_ref().map(parse).transpose()?;
    let _rooted = store.root_in_scope(&[&path])?;
    if store.is_valid(&path)? {
        return drain(r);
    }
    let temp = store.temp_path();
    let mut hr = ferry_formats::hash::HashingReader::new(r);
    nar::restore(&mut hr, temp.path())?;
    let (nar_hash, nar_size, r) = hr.finish();
    drain(r)?;
    let want = sha256_of(&info.nar_hash);
    if want != Some(nar_hash) || (info.nar_size != 0 && info.nar_size != nar_size) {
        return Err(StoreError::Refused {
            path: info.path.clone(),
            reason: format!(
                "hash mismatch importing path '{}';\n  specified: {} ({} bytes)\n  got:       {} ({nar_size} bytes)",
                info.path,
                info.nar_hash.to_typed_nix32(),
                info.nar_size,
                nar_hash.to_typed_nix32()
            ),
        });
    }
    let record = PathInfo {
        path: path.clone(),
        nar_hash,
        nar_size,
        references,
        deriver,
        registration_time: now(),
        signatures: info.sigs.iter().cloned().collect(),
        ca: info.ca.as_ref().map(ContentAddress::render),
    };
    let lock = store.lock_path(&path)?;
    if !store.is_valid(&path)? {
        store.commit(temp, &record, &lock)?;
    }
    Ok(())
}
