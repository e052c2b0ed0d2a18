//! The daemon's side of each operation: its arguments as `performOp` in
//! daemon.cc reads them for a client of a given version. Operations whose
//! data follows the arguments say how it comes ([`DataFollows`]); the
//! daemon reads it from the stream itself (with `framed::FramedReader`,
//! `nar_copy::copy_nar`, or STDERR_READ requests), so nothing is held whole.
//! Replies are in `reply.rs`.

use std::collections::{BTreeMap, BTreeSet};

use ferry_formats::derivation::Derivation;
use tokio::io::AsyncRead;

use crate::build::{read_basic_derivation, BuildMode, Realisation};
use crate::content_address::ContentAddressMethod;
use crate::derived_path::{read_derived_paths, DerivedPath};
use crate::op::{invalid_operation, Op};
use crate::path_info::AddToStoreNar;
use crate::settings::ClientSettings;
use crate::wire::NixRead;
use crate::{minor, Error, NixError, Result};

/// How an operation's data follows its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFollows {
    /// Nothing.
    None,
    /// Framed chunks (`framed::FramedReader`).
    Framed,
    /// One NAR, unframed (`nar_copy::copy_nar` finds its end).
    Nar,
    /// A flat file's contents as a NAR of one regular file, unframed.
    FlatNar,
    /// Asked for with STDERR_READ once the daemon's stderr stream is open.
    Tunnel,
}

/// AddToStore: the 1.25+ form names a content address method and sends
/// framed data; the older form names the ingestion and sends a NAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddToStore {
    Framed {
        name: String,
        method: ContentAddressMethod,
        references: BTreeSet<String>,
        repair: bool,
    },
    Legacy {
        name: String,
        /// False means "sha256, recursive" whatever the rest says (Nix's
        /// compatibility hack, applied by [`AddToStore::legacy_method`]).
        fixed: bool,
        recursive: bool,
        hash_algo: String,
    },
}

/// One request with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    IsValidPath(String),
    QueryValidPaths {
        paths: BTreeSet<String>,
        substitute: bool,
    },
    HasSubstitutes(String),
    QuerySubstitutablePaths(BTreeSet<String>),
    QueryPathHash(String),
    QueryReferences(String),
    QueryReferrers(String),
    QueryValidDerivers(String),
    QueryDerivationOutputs(String),
    QueryDerivationOutputNames(String),
    QueryDerivationOutputMap(String),
    QueryDeriver(String),
    QueryPathFromHashPart(String),
    AddToStore(AddToStore),
    AddMultipleToStore {
        repair: bool,
        dont_check_sigs: bool,
    },
    AddTextToStore {
        name: String,
        text: Vec<u8>,
        references: BTreeSet<String>,
    },
    ExportPath(String),
    ImportPaths,
    BuildPaths {
        paths: Vec<DerivedPath>,
        mode: BuildMode,
    },
    BuildPathsWithResults {
        paths: Vec<DerivedPath>,
        mode: BuildMode,
    },
    BuildDerivation {
        drv_path: String,
        drv: Box<Derivation>,
        mode: BuildMode,
    },
    EnsurePath(String),
    AddTempRoot(String),
    AddIndirectRoot(String),
    SyncWithGC,
    FindRoots,
    CollectGarbage {
        /// 0 return live, 1 return dead, 2 delete dead, 3 delete specific.
        action: u64,
        paths: BTreeSet<String>,
        ignore_liveness: bool,
        max_freed: u64,
    },
    SetOptions(ClientSettings),
    QuerySubstitutablePathInfo(String),
    /// Path -> its content address ("" for none); before 1.22 paths only.
    QuerySubstitutablePathInfos(BTreeMap<String, String>),
    QueryAllValidPaths,
    QueryPathInfo(String),
    OptimiseStore,
    VerifyStore {
        check_contents: bool,
        repair: bool,
    },
    AddSignatures {
        path: String,
        sigs: BTreeSet<String>,
    },
    NarFromPath(String),
    AddToStoreNar(AddToStoreNar),
    QueryMissing(Vec<DerivedPath>),
    RegisterDrvOutput(Realisation),
    QueryRealisation(String),
    AddBuildLog(String),
}

impl AddToStore {
    /// The legacy form's method: `fixed == false` means recursive sha256.
    pub fn legacy_method(
        fixed: bool,
        recursive: bool,
        hash_algo: &str,
    ) -> Result<ContentAddressMethod> {
        use ferry_formats::store_path::FileIngestion;
        let (recursive, algo) = if fixed {
            (recursive, hash_algo)
        } else {
            (true, "sha256")
        };
        let algo = ferry_formats::content_hash::HashAlgo::parse(algo)
            .ok_or_else(|| Error::protocol(format!("unknown hash algorithm '{algo}'")))?;
        Ok(ContentAddressMethod::Fixed {
            method: if recursive {
                FileIngestion::Recursive
            } else {
                FileIngestion::Flat
            },
            algo,
        })
    }
}

impl Request {
    /// How this request's data follows it, for a client of `client_version`.
    pub fn data_follows(&self, client_version: u64) -> DataFollows {
        match self {
            Request::AddToStore(AddToStore::Framed { .. })
            | Request::AddMultipleToStore { .. }
            | Request::AddBuildLog(_) => DataFollows::Framed,
            Request::AddToStore(AddToStore::Legacy {
                fixed, recursive, ..
            }) => {
                if *recursive || !*fixed {
                    DataFollows::Nar
                } else {
                    DataFollows::FlatNar
                }
            }
            Request::AddToStoreNar(_) => match minor(client_version) {
                23.. => DataFollows::Framed,
                21 | 22 => DataFollows::Tunnel,
                _ => DataFollows::Nar,
            },
            Request::ImportPaths => DataFollows::Tunnel,
            _ => DataFollows::None,
        }
    }
}

/// Read the operation number that starts a request. `Ok(None)` at a clean
/// end of the connection (EOF before a request), as nix-daemon stops.
pub async fn read_op<R: AsyncRead + Unpin>(r: &mut NixRead<R>) -> Result<Option<u64>> {
    r.reset_budget();
    match r.u64().await {
        Ok(n) => Ok(Some(n)),
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why a request could not be read: the operation is unknown (answer with
/// the error and close, as nix-daemon does) or its arguments are bad.
pub fn unknown_op(n: u64) -> NixError {
    NixError::new(invalid_operation(n))
}

/// Read the arguments of operation `n` from a client of `client_version`.
/// An unknown `n` is `Err(Error::Remote(..))` with Nix's message.
pub async fn read_request<R: AsyncRead + Unpin>(
    r: &mut NixRead<R>,
    n: u64,
    client_version: u64,
) -> Result<Request> {
    let v = minor(client_version);
    let op = match Op::from_u64(n) {
        Some(op) if !op.is_removed_in_2_8() => op,
        _ => return Err(Error::Remote(unknown_op(n))),
    };
    Ok(match op {
        Op::IsValidPath => Request::IsValidPath(r.string().await?),
        Op::QueryValidPaths => {
            let paths = r.string_set().await?;
            let substitute = v >= 27 && r.bool().await?;
            Request::QueryValidPaths { paths, substitute }
        }
        Op::HasSubstitutes => Request::HasSubstitutes(r.string().await?),
        Op::QuerySubstitutablePaths => Request::QuerySubstitutablePaths(r.string_set().await?),
        Op::QueryPathHash => Request::QueryPathHash(r.string().await?),
        Op::QueryReferences => Request::QueryReferences(r.string().await?),
        Op::QueryReferrers => Request::QueryReferrers(r.string().await?),
        Op::QueryValidDerivers => Request::QueryValidDerivers(r.string().await?),
        Op::QueryDerivationOutputs => Request::QueryDerivationOutputs(r.string().await?),
        Op::QueryDerivationOutputNames => Request::QueryDerivationOutputNames(r.string().await?),
        Op::QueryDerivationOutputMap => Request::QueryDerivationOutputMap(r.string().await?),
        Op::QueryDeriver => Request::QueryDeriver(r.string().await?),
        Op::QueryPathFromHashPart => Request::QueryPathFromHashPart(r.string().await?),
        Op::AddToStore if v >= 25 => {
            let name = r.string().await?;
            let method = ContentAddressMethod::parse(&r.string().await?)?;
            let references = r.string_set().await?;
            let repair = r.bool().await?;
            Request::AddToStore(AddToStore::Framed {
                name,
                method,
                references,
                repair,
            })
        }
        Op::AddToStore => {
            let name = r.string().await?;
            let fixed = r.bool().await?;
            let recursive = r.u64().await?;
            if recursive > 1 {
                return Err(Error::Remote(NixError::new(format!(
                    "unsupported FileIngestionMethod with value of {}; you may need to upgrade nix-daemon",
                    crate::stderr::hint_arg(recursive)
                ))));
            }
            let hash_algo = r.string().await?;
            Request::AddToStore(AddToStore::Legacy {
                name,
                fixed,
                recursive: recursive == 1,
                hash_algo,
            })
        }
        Op::AddMultipleToStore => Request::AddMultipleToStore {
            repair: r.bool().await?,
            dont_check_sigs: r.bool().await?,
        },
        Op::AddTextToStore => {
            let name = r.string().await?;
            let text = r.bytes_max(r.limits.text).await?;
            let references = r.string_set().await?;
            Request::AddTextToStore {
                name,
                text,
                references,
            }
        }
        Op::ExportPath => {
            let path = r.string().await?;
            r.u64().await?; // obsolete
            Request::ExportPath(path)
        }
        Op::ImportPaths => Request::ImportPaths,
        Op::BuildPaths => {
            let paths = read_derived_paths(r, client_version).await?;
            let mode = if v >= 15 {
                BuildMode::from_u64(r.u64().await?)?
            } else {
                BuildMode::Normal
            };
            Request::BuildPaths { paths, mode }
        }
        Op::BuildPathsWithResults => Request::BuildPathsWithResults {
            paths: read_derived_paths(r, client_version).await?,
            mode: BuildMode::from_u64(r.u64().await?)?,
        },
        Op::BuildDerivation => Request::BuildDerivation {
            drv_path: r.string().await?,
            drv: Box::new(read_basic_derivation(r).await?),
            mode: BuildMode::from_u64(r.u64().await?)?,
        },
        Op::EnsurePath => Request::EnsurePath(r.string().await?),
        Op::AddTempRoot => Request::AddTempRoot(r.string().await?),
        Op::AddIndirectRoot => Request::AddIndirectRoot(r.string().await?),
        Op::SyncWithGC => Request::SyncWithGC,
        Op::FindRoots => Request::FindRoots,
        Op::CollectGarbage => {
            let action = r.u64().await?;
            let paths = r.string_set().await?;
            let ignore_liveness = r.bool().await?;
            let max_freed = r.u64().await?;
            for _ in 0..3 {
                r.u64().await?; // obsolete
            }
            Request::CollectGarbage {
                action,
                paths,
                ignore_liveness,
                max_freed,
            }
        }
        Op::SetOptions => Request::SetOptions(ClientSettings::read(r, client_version).await?),
        Op::QuerySubstitutablePathInfo => Request::QuerySubstitutablePathInfo(r.string().await?),
        Op::QuerySubstitutablePathInfos => Request::QuerySubstitutablePathInfos(if v < 22 {
            r.string_set()
                .await?
                .into_iter()
                .map(|p| (p, String::new()))
                .collect()
        } else {
            r.string_map().await?
        }),
        Op::QueryAllValidPaths => Request::QueryAllValidPaths,
        Op::QueryPathInfo => Request::QueryPathInfo(r.string().await?),
        Op::OptimiseStore => Request::OptimiseStore,
        Op::VerifyStore => Request::VerifyStore {
            check_contents: r.bool().await?,
            repair: r.bool().await?,
        },
        Op::AddSignatures => Request::AddSignatures {
            path: r.string().await?,
            sigs: r.string_set().await?,
        },
        Op::NarFromPath => Request::NarFromPath(r.string().await?),
        Op::AddToStoreNar => Request::AddToStoreNar(AddToStoreNar::read(r).await?),
        Op::QueryMissing => Request::QueryMissing(read_derived_paths(r, client_version).await?),
        Op::RegisterDrvOutput if v < 31 => {
            let id = r.string().await?;
            let out_path = r.string().await?;
            Request::RegisterDrvOutput(Realisation {
                id,
                out_path,
                signatures: Vec::new(),
                dependent_realisations: BTreeMap::new(),
            })
        }
        Op::RegisterDrvOutput => {
            Request::RegisterDrvOutput(Realisation::from_json(&r.string().await?)?)
        }
        Op::QueryRealisation => Request::QueryRealisation(r.string().await?),
        Op::AddBuildLog => Request::AddBuildLog(r.string().await?),
        Op::QueryFailedPaths | Op::ClearFailedPaths => unreachable!("refused above"),
    })
}

#[cfg(test)]
mod tests;
