//! Derivations: the ATerm `.drv` format, `hashDerivationModulo`, output paths.
//!
//! A `.drv` file is one ATerm:
//!
//! ```text
//! Derive([OUTPUTS],[INPUT-DRVS],[INPUT-SRCS],"SYSTEM","BUILDER",[ARGS],[ENV])
//! ```
//!
//! Its bytes are hashed (for its own store path) and, modulo input
//! derivations, for its outputs' paths, so [`Derivation`] keeps every field as
//! the raw string it was written with and [`Derivation::to_aterm`] prints
//! exactly what Nix prints: `to_aterm(parse(x)) == x` for every file Nix or
//! Guix writes. The parser is stricter than Nix's about order (lists must be
//! sorted without duplicates, as every writer produces them) because an
//! unsorted file would not survive a round trip.
//!
//! One file per concern: [`parse()`] reads the ATerm (`parse.rs`),
//! `print.rs` writes it back, `hash_modulo.rs` holds
//! `hashDerivationModulo` and its memo, `outputs.rs` the output paths a
//! derivation's contents imply and the `.drv` file's own path; this file
//! holds the types, their errors and the accessors.

mod hash_modulo;
mod outputs;
mod parse;
mod print;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use thiserror::Error;

use crate::content_hash::{ContentHashError, FixedOutputHash};
use crate::store_path::StorePathError;

pub use hash_modulo::{hash_derivation_modulo, DrvHashCache};
pub use parse::{parse, parse_bytes, parse_canonical};

/// Largest `.drv` text [`parse()`] accepts. Real derivations are kilobytes, the
/// largest in nixpkgs a few megabytes; anything near this is an attack or a
/// mistake, and refusing it bounds the memory a parse can take.
pub const MAX_DRV_SIZE: usize = 64 << 20;

/// A derivation as written in a `.drv` file.
///
/// Maps and sets are ordered bytewise, which is the order Nix writes lists in,
/// so printing needs no sorting and equal values print equal bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Derivation {
    /// Output name -> output.
    pub outputs: BTreeMap<String, Output>,
    /// Absolute `.drv` path -> the names of the outputs used.
    pub input_drvs: BTreeMap<String, BTreeSet<String>>,
    /// Absolute store paths of input sources.
    pub input_srcs: BTreeSet<String>,
    pub system: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// One output: `("name","path","hashAlgo","hash")` without the name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Absolute store path, or "" while it is not yet computed.
    pub path: String,
    /// "" for input-addressed outputs; `sha256`, `r:sha256` etc. for fixed ones
    /// (`r:` meaning the hash is of the NAR rather than of a flat file).
    pub hash_algo: String,
    /// "" or the fixed output's hash in base16.
    pub hash: String,
}

/// A syntax error in a `.drv` file, with the byte offset where it was found.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid derivation at byte {offset}: {kind}")]
pub struct DrvParseError {
    pub offset: usize,
    pub kind: DrvParseErrorKind,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DrvParseErrorKind {
    #[error("expected {expected}, found {found}")]
    Expected { expected: String, found: String },
    #[error("unterminated string")]
    UnterminatedString,
    #[error("backslash at the end of the input")]
    EscapeAtEnd,
    #[error("{list} are not sorted: {key:?} comes after {prev:?}")]
    Unsorted {
        list: &'static str,
        prev: String,
        key: String,
    },
    #[error("{list} contain {key:?} twice")]
    Duplicate { list: &'static str, key: String },
    #[error("trailing data after the closing ')'")]
    TrailingData,
    #[error("invalid UTF-8")]
    InvalidUtf8,
    #[error("derivation is {0} bytes long; the limit is {MAX_DRV_SIZE}")]
    TooLarge(usize),
    #[error("not in canonical form: printing the parsed derivation differs from here on")]
    NonCanonical,
}

/// Errors computing paths of or checking a derivation.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DerivationError {
    #[error("derivation has no \"name\" in its environment")]
    NoName,
    #[error(transparent)]
    StorePath(#[from] StorePathError),
    #[error("output {output:?}: fixed-output hash algorithm {algo:?} is not supported; use md5, sha1, sha256 or sha512, optionally with \"r:\" for a recursive (NAR) hash")]
    UnsupportedHashAlgo { output: String, algo: String },
    #[error("output {output:?}: fixed-output hash {hash:?}: {reason}")]
    BadFixedHash {
        output: String,
        hash: String,
        reason: String,
    },
    #[error("output {output:?} has a hash algorithm but the derivation is not fixed-output (exactly one output \"out\" with algorithm and hash); content-addressed derivations are not supported")]
    NotFixedOutput { output: String },
    #[error("input derivations form a cycle through {0}")]
    Cycle(String),
    #[error("derivation {name:?} has wrong output paths: {}", list_mismatches(.mismatches))]
    OutputMismatch {
        name: String,
        mismatches: Vec<OutputMismatch>,
    },
}

/// One recorded output path (or environment variable) that differs from
/// what the derivation's contents imply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMismatch {
    pub output: String,
    /// Where the wrong value is: the outputs list or the environment.
    pub place: MismatchPlace,
    pub recorded: String,
    pub expected: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MismatchPlace {
    OutputPath,
    EnvVar,
}

impl fmt::Display for OutputMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = match self.place {
            MismatchPlace::OutputPath => "output",
            MismatchPlace::EnvVar => "environment variable",
        };
        write!(
            f,
            "{place} {:?} is {:?}, should be {:?}",
            self.output, self.recorded, self.expected
        )
    }
}

fn list_mismatches(m: &[OutputMismatch]) -> String {
    m.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Input derivations after replacing paths by hashes (see
/// [`Derivation::to_aterm_with`]).
pub type InputDrvs = BTreeMap<String, BTreeSet<String>>;

impl Derivation {
    /// The derivation's name, which names its outputs and file: env `name`,
    /// or for structured-attrs derivations the `name` inside env `__json`.
    pub fn name(&self) -> Option<Cow<'_, str>> {
        if let Some(n) = self.env.get("name") {
            return Some(Cow::Borrowed(n));
        }
        let json: serde_json::Value = serde_json::from_str(self.env.get("__json")?).ok()?;
        json.get("name")?
            .as_str()
            .map(|s| Cow::Owned(s.to_string()))
    }

    fn name_or_err(&self) -> Result<Cow<'_, str>, DerivationError> {
        self.name().ok_or(DerivationError::NoName)
    }

    /// Features a builder must have (env `requiredSystemFeatures`, separated
    /// by whitespace as Nix tokenizes it). Structured-attrs derivations keep
    /// this in `__json` instead and are not covered here.
    pub fn required_system_features(&self) -> BTreeSet<&str> {
        self.env
            .get("requiredSystemFeatures")
            .map(|v| {
                v.split([' ', '\t', '\n', '\r'])
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Exactly one output, `out`, with a hash algorithm and a hash: its path
    /// depends only on that hash, not on how it is built.
    pub fn is_fixed_output(&self) -> bool {
        self.fixed_output().is_some()
    }

    /// The fixed output's method and hash, read as Nix reads the `.drv`
    /// fields (`[r:]ALGO`; the hash in base16, nix32 or base64): `None` for
    /// a derivation that is not fixed-output.
    pub fn fixed_output_hash(&self) -> Option<Result<FixedOutputHash, DerivationError>> {
        let out = self.fixed_output()?;
        Some(
            FixedOutputHash::from_drv_output(&out.hash_algo, &out.hash).map_err(|e| match e {
                ContentHashError::UnknownAlgo(_) => DerivationError::UnsupportedHashAlgo {
                    output: "out".into(),
                    algo: out.hash_algo.clone(),
                },
                e => DerivationError::BadFixedHash {
                    output: "out".into(),
                    hash: out.hash.clone(),
                    reason: e.to_string(),
                },
            }),
        )
    }

    fn fixed_output(&self) -> Option<&Output> {
        match self.outputs.iter().next() {
            Some((name, out))
                if self.outputs.len() == 1
                    && name == "out"
                    && !out.hash_algo.is_empty()
                    && !out.hash.is_empty() =>
            {
                Some(out)
            }
            _ => None,
        }
    }
}
