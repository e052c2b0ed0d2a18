//! Derived paths (derived-path.cc): what BuildPaths, BuildPathsWithResults
//! and QueryMissing ask for: a store path, or `DRV!OUT1,OUT2` (`DRV!*` for
//! every output). Before 1.30 they were path-with-outputs strings, which
//! use the same syntax for the cases a 2.8 client sends.

use std::collections::BTreeSet;

use tokio::io::AsyncRead;

use crate::wire::{NixRead, NixWrite};
use crate::{minor, Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DerivedPath {
    /// A store path wanted as it is.
    Opaque(String),
    /// Outputs of a derivation; empty means all (`*`).
    Built {
        drv_path: String,
        outputs: BTreeSet<String>,
    },
}

impl DerivedPath {
    /// `DerivedPath::parse`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once('!') {
            None => Ok(DerivedPath::Opaque(s.to_string())),
            Some((drv, outs)) => {
                if drv.is_empty() {
                    return Err(Error::protocol(format!("invalid derived path '{s}'")));
                }
                let outputs = if outs == "*" {
                    BTreeSet::new()
                } else {
                    outs.split(',')
                        .filter(|o| !o.is_empty())
                        .map(str::to_string)
                        .collect()
                };
                Ok(DerivedPath::Built {
                    drv_path: drv.to_string(),
                    outputs,
                })
            }
        }
    }

    /// `DerivedPath::to_string`.
    pub fn render(&self) -> String {
        match self {
            DerivedPath::Opaque(p) => p.clone(),
            DerivedPath::Built { drv_path, outputs } => {
                if outputs.is_empty() {
                    format!("{drv_path}!*")
                } else {
                    let o: Vec<&str> = outputs.iter().map(String::as_str).collect();
                    format!("{drv_path}!{}", o.join(","))
                }
            }
        }
    }
}

/// Read a list of derived paths (strings either way: 1.30 made them
/// `DerivedPath`s; before, they were `StorePathWithOutputs`, where a bare
/// `.drv` path means all its outputs, as `toDerivedPath` has it).
pub async fn read_derived_paths<R: AsyncRead + Unpin>(
    r: &mut NixRead<R>,
    client_version: u64,
) -> Result<Vec<DerivedPath>> {
    let old = minor(client_version) < 30;
    r.strings()
        .await?
        .iter()
        .map(|s| match DerivedPath::parse(s)? {
            DerivedPath::Opaque(p) if old && p.ends_with(".drv") => Ok(DerivedPath::Built {
                drv_path: p,
                outputs: BTreeSet::new(),
            }),
            d => Ok(d),
        })
        .collect()
}

/// Write derived paths for a daemon of `daemon_version`.
pub fn write_derived_paths<W>(w: &mut NixWrite<W>, paths: &[DerivedPath], daemon_version: u64) {
    let old = minor(daemon_version) < 30;
    w.strings(paths.iter().map(|p| match p {
        DerivedPath::Built { drv_path, outputs } if old && outputs.is_empty() => drv_path.clone(),
        p => p.render(),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_render() {
        for s in [
            "/nix/store/aaa-x",
            "/nix/store/bbb-y.drv!*",
            "/nix/store/bbb-y.drv!dev,out",
        ] {
            assert_eq!(DerivedPath::parse(s).unwrap().render(), s);
        }
        assert_eq!(
            DerivedPath::parse("/d.drv!out,dev").unwrap(),
            DerivedPath::Built {
                drv_path: "/d.drv".into(),
                outputs: ["dev".to_string(), "out".to_string()].into()
            }
        );
        assert!(DerivedPath::parse("!out").is_err());
    }

    #[tokio::test]
    async fn old_clients_name_all_outputs_by_the_bare_drv() {
        let all = DerivedPath::Built {
            drv_path: "/s/a.drv".into(),
            outputs: BTreeSet::new(),
        };
        for (v, s) in [(0x11d, "/s/a.drv"), (0x122, "/s/a.drv!*")] {
            let b = crate::wire::encode(|w| write_derived_paths(w, std::slice::from_ref(&all), v));
            assert_eq!(
                b,
                crate::wire::encode(|w| {
                    w.strings([s]);
                })
            );
            let mut r = NixRead::new(&b[..], crate::Limits::default());
            assert_eq!(
                read_derived_paths(&mut r, v).await.unwrap(),
                std::slice::from_ref(&all)
            );
        }
    }
}
