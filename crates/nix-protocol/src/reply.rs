//! The daemon's replies, after STDERR_LAST, as `performOp` writes them.
//! Most are one value (`1` for "done", a bool, a path set) and are written
//! with `NixWrite` directly; the records with a shape of their own are here.
//! The client reads the same shapes in `client.rs`.

use std::collections::{BTreeMap, BTreeSet};

use crate::build::BuildResult;
use crate::derived_path::DerivedPath;
use crate::minor;
use crate::path_info::ValidPathInfo;
use crate::wire::NixWrite;

/// QueryPathInfo: from 1.17 a validity flag, then the record without its
/// path. (Before 1.17 an unknown path is an error instead.)
pub fn query_path_info<W>(w: &mut NixWrite<W>, info: Option<&ValidPathInfo>, client_version: u64) {
    match info {
        Some(i) => {
            if minor(client_version) >= 17 {
                w.u64(1);
            }
            i.write(w, client_version, false);
        }
        None => {
            w.u64(0);
        }
    }
}

/// What QueryMissing found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    pub will_build: BTreeSet<String>,
    pub will_substitute: BTreeSet<String>,
    pub unknown: BTreeSet<String>,
    pub download_size: u64,
    pub nar_size: u64,
}

pub fn query_missing<W>(w: &mut NixWrite<W>, m: &Missing) {
    w.strings(&m.will_build)
        .strings(&m.will_substitute)
        .strings(&m.unknown)
        .u64(m.download_size)
        .u64(m.nar_size);
}

/// QueryDerivationOutputMap: output name -> path ("" when unknown).
pub fn derivation_output_map<W>(w: &mut NixWrite<W>, m: &BTreeMap<String, Option<String>>) {
    w.u64(m.len() as u64);
    for (name, path) in m {
        w.bytes(name).bytes(path.as_deref().unwrap_or(""));
    }
}

/// FindRoots: (link, target) pairs.
pub fn find_roots<W>(w: &mut NixWrite<W>, roots: &[(String, String)]) {
    w.u64(roots.len() as u64);
    for (link, target) in roots {
        w.bytes(link).bytes(target);
    }
}

/// CollectGarbage: the paths deleted (or found), bytes freed, and an
/// obsolete zero.
pub fn collect_garbage<W>(w: &mut NixWrite<W>, paths: &BTreeSet<String>, bytes_freed: u64) {
    w.strings(paths).u64(bytes_freed).u64(0);
}

/// One substitutable path's information.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubstitutablePathInfo {
    pub deriver: Option<String>,
    pub references: BTreeSet<String>,
    pub download_size: u64,
    pub nar_size: u64,
}

fn substitutable<W>(w: &mut NixWrite<W>, i: &SubstitutablePathInfo) {
    w.bytes(i.deriver.as_deref().unwrap_or(""))
        .strings(&i.references)
        .u64(i.download_size)
        .u64(i.nar_size);
}

/// QuerySubstitutablePathInfo: 0, or 1 and the information.
pub fn query_substitutable_path_info<W>(w: &mut NixWrite<W>, i: Option<&SubstitutablePathInfo>) {
    match i {
        None => {
            w.u64(0);
        }
        Some(i) => {
            w.u64(1);
            substitutable(w, i);
        }
    }
}

/// QuerySubstitutablePathInfos: path -> information.
pub fn query_substitutable_path_infos<W>(
    w: &mut NixWrite<W>,
    infos: &BTreeMap<String, SubstitutablePathInfo>,
) {
    w.u64(infos.len() as u64);
    for (p, i) in infos {
        w.bytes(p);
        substitutable(w, i);
    }
}

/// BuildPathsWithResults: one result per derived path asked for.
pub fn build_paths_with_results<W>(w: &mut NixWrite<W>, results: &[(DerivedPath, BuildResult)]) {
    w.u64(results.len() as u64);
    for (p, r) in results {
        r.write_with_path(w, p);
    }
}
