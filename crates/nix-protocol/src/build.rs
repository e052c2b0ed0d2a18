//! Building: `BuildMode`, `BuildResult` (as BuildDerivation answers it for
//! each minor 2.8 handles, and as BuildPathsWithResults lists them), the
//! realisations a result names (JSON, as realisation.cc writes it), and
//! BuildDerivation's `BasicDerivation` (derivations.cc's
//! `readDerivation`/`writeDerivation`) on `ferry-formats`' `Derivation`.

use std::collections::BTreeMap;

use ferry_formats::derivation::{Derivation, Output};
use tokio::io::AsyncRead;

use crate::derived_path::DerivedPath;
use crate::wire::{NixRead, NixWrite};
use crate::{minor, Error, Result};

/// `BuildMode`: `bmNormal`, `bmRepair`, `bmCheck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMode {
    Normal = 0,
    Repair = 1,
    Check = 2,
}

impl BuildMode {
    pub fn from_u64(n: u64) -> Result<Self> {
        match n {
            0 => Ok(BuildMode::Normal),
            1 => Ok(BuildMode::Repair),
            2 => Ok(BuildMode::Check),
            _ => Err(Error::protocol(format!("invalid build mode {n}"))),
        }
    }
}

/// `BuildResult::Status`; numbers are fixed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStatus {
    Built = 0,
    Substituted,
    AlreadyValid,
    PermanentFailure,
    InputRejected,
    OutputRejected,
    TransientFailure,
    CachedFailure,
    TimedOut,
    MiscFailure,
    DependencyFailed,
    LogLimitExceeded,
    NotDeterministic,
    ResolvesToAlreadyValid,
    NoSubstituters,
}

impl BuildStatus {
    const ALL: [BuildStatus; 15] = [
        BuildStatus::Built,
        BuildStatus::Substituted,
        BuildStatus::AlreadyValid,
        BuildStatus::PermanentFailure,
        BuildStatus::InputRejected,
        BuildStatus::OutputRejected,
        BuildStatus::TransientFailure,
        BuildStatus::CachedFailure,
        BuildStatus::TimedOut,
        BuildStatus::MiscFailure,
        BuildStatus::DependencyFailed,
        BuildStatus::LogLimitExceeded,
        BuildStatus::NotDeterministic,
        BuildStatus::ResolvesToAlreadyValid,
        BuildStatus::NoSubstituters,
    ];

    pub fn from_u64(n: u64) -> Result<Self> {
        Self::ALL
            .get(n as usize)
            .copied()
            .ok_or_else(|| Error::protocol(format!("invalid build status {n}")))
    }

    /// Built, substituted or already there.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            BuildStatus::Built
                | BuildStatus::Substituted
                | BuildStatus::AlreadyValid
                | BuildStatus::ResolvesToAlreadyValid
        )
    }
}

/// A realisation: which path an output of a derivation (by its hash
/// modulo) became. `out_path` is a base name, as Nix writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realisation {
    /// `sha256:HASH!OUTPUT`.
    pub id: String,
    pub out_path: String,
    pub signatures: Vec<String>,
    pub dependent_realisations: BTreeMap<String, String>,
}

impl Realisation {
    /// `Realisation::toJSON().dump()`: keys in nlohmann's sorted order.
    pub fn to_json(&self) -> String {
        let mut m = serde_json::Map::new();
        let deps: serde_json::Map<String, serde_json::Value> = self
            .dependent_realisations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        m.insert("dependentRealisations".into(), deps.into());
        m.insert("id".into(), self.id.clone().into());
        m.insert("outPath".into(), self.out_path.clone().into());
        m.insert("signatures".into(), self.signatures.clone().into());
        serde_json::Value::Object(m).to_string()
    }

    pub fn from_json(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::protocol(format!("realisation {s:?}: {why}"));
        let v: serde_json::Value = serde_json::from_str(s).map_err(|e| bad(&e.to_string()))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("missing field {k}")))
        };
        let strings = |x: Option<&serde_json::Value>| -> Vec<String> {
            x.and_then(|x| x.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let deps = v
            .get("dependentRealisations")
            .and_then(|d| d.as_object())
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Realisation {
            id: field("id")?,
            out_path: field("outPath")?,
            signatures: strings(v.get("signatures")),
            dependent_realisations: deps,
        })
    }
}

/// `BuildResult`: its fields beyond status and message exist from 1.29
/// (times) and 1.28 (outputs) in BuildDerivation's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    pub status: BuildStatus,
    pub error_msg: String,
    pub times_built: u64,
    pub is_non_deterministic: bool,
    pub start_time: u64,
    pub stop_time: u64,
    /// DrvOutput id (`sha256:HASH!out`) -> realisation.
    pub built_outputs: BTreeMap<String, Realisation>,
}

impl BuildResult {
    pub fn new(status: BuildStatus, error_msg: impl Into<String>) -> Self {
        BuildResult {
            status,
            error_msg: error_msg.into(),
            times_built: 0,
            is_non_deterministic: false,
            start_time: 0,
            stop_time: 0,
            built_outputs: BTreeMap::new(),
        }
    }

    fn write_outputs<W>(&self, w: &mut NixWrite<W>) {
        w.u64(self.built_outputs.len() as u64);
        for (id, r) in &self.built_outputs {
            w.bytes(id).bytes(r.to_json());
        }
    }

    async fn read_outputs<R: AsyncRead + Unpin>(&mut self, r: &mut NixRead<R>) -> Result<()> {
        let n = r.count("built outputs").await?;
        for _ in 0..n {
            let id = r.string().await?;
            let real = Realisation::from_json(&r.string().await?)?;
            self.built_outputs.insert(id, real);
        }
        Ok(())
    }

    /// BuildDerivation's reply to a client of `client_version`.
    pub fn write_for_build_derivation<W>(&self, w: &mut NixWrite<W>, client_version: u64) {
        w.u64(self.status as u64).bytes(&self.error_msg);
        if minor(client_version) >= 29 {
            w.u64(self.times_built)
                .bool(self.is_non_deterministic)
                .u64(self.start_time)
                .u64(self.stop_time);
        }
        if minor(client_version) >= 28 {
            self.write_outputs(w);
        }
    }

    pub async fn read_for_build_derivation<R: AsyncRead + Unpin>(
        r: &mut NixRead<R>,
        daemon_version: u64,
    ) -> Result<Self> {
        let status = BuildStatus::from_u64(r.u64().await?)?;
        let mut res = BuildResult::new(status, r.string().await?);
        if minor(daemon_version) >= 29 {
            res.times_built = r.u64().await?;
            res.is_non_deterministic = r.bool().await?;
            res.start_time = r.u64().await?;
            res.stop_time = r.u64().await?;
        }
        if minor(daemon_version) >= 28 {
            res.read_outputs(r).await?;
        }
        Ok(res)
    }

    /// One entry of BuildPathsWithResults' reply (1.34): the derived path
    /// first, then every field.
    pub fn write_with_path<W>(&self, w: &mut NixWrite<W>, path: &DerivedPath) {
        w.bytes(path.render())
            .u64(self.status as u64)
            .bytes(&self.error_msg)
            .u64(self.times_built)
            .bool(self.is_non_deterministic)
            .u64(self.start_time)
            .u64(self.stop_time);
        self.write_outputs(w);
    }

    pub async fn read_with_path<R: AsyncRead + Unpin>(
        r: &mut NixRead<R>,
    ) -> Result<(DerivedPath, Self)> {
        let path = DerivedPath::parse(&r.string().await?)?;
        let status = BuildStatus::from_u64(r.u64().await?)?;
        let mut res = BuildResult::new(status, r.string().await?);
        res.times_built = r.u64().await?;
        res.is_non_deterministic = r.bool().await?;
        res.start_time = r.u64().await?;
        res.stop_time = r.u64().await?;
        res.read_outputs(r).await?;
        Ok((path, res))
    }
}

/// Write a `BasicDerivation` as `writeDerivation(Sink&, ...)`: outputs
/// (name, path, hashAlgo, hash), input sources, system, builder, args, env.
/// Its `input_drvs` are not part of it (the builder has them already).
pub fn write_basic_derivation<W>(w: &mut NixWrite<W>, drv: &Derivation) {
    w.u64(drv.outputs.len() as u64);
    for (name, o) in &drv.outputs {
        w.bytes(name)
            .bytes(&o.path)
            .bytes(&o.hash_algo)
            .bytes(&o.hash);
    }
    w.strings(&drv.input_srcs)
        .bytes(&drv.system)
        .bytes(&drv.builder)
        .strings(&drv.args)
        .string_map(&drv.env);
}

/// Read a `BasicDerivation` (`readDerivation(Source&, ...)`); its
/// `input_drvs` stay empty.
pub async fn read_basic_derivation<R: AsyncRead + Unpin>(r: &mut NixRead<R>) -> Result<Derivation> {
    let mut drv = Derivation::default();
    let n = r.count("derivation outputs").await?;
    for _ in 0..n {
        let name = r.string().await?;
        let path = r.string().await?;
        let hash_algo = r.string().await?;
        let hash = r.string().await?;
        drv.outputs.insert(
            name,
            Output {
                path,
                hash_algo,
                hash,
            },
        );
    }
    drv.input_srcs = r.string_set().await?;
    drv.system = r.string().await?;
    drv.builder = r.string().await?;
    drv.args = r.strings().await?;
    drv.env = r.string_map().await?;
    Ok(drv)
}

#[cfg(test)]
mod tests;
