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

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use thiserror::Error;

use crate::content_hash::{ContentHashError, FixedOutputHash};
use crate::hash::Sha256Hash;
use crate::store_path::{StoreDir, StorePath, StorePathError};

/// Largest `.drv` text [`parse`] accepts. Real derivations are kilobytes, the
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

/// Parse a `.drv` file's text.
pub fn parse(s: &str) -> Result<Derivation, DrvParseError> {
    if s.len() > MAX_DRV_SIZE {
        return Err(DrvParseError {
            offset: 0,
            kind: DrvParseErrorKind::TooLarge(s.len()),
        });
    }
    Parser { src: s, pos: 0 }.derivation()
}

/// Parse a `.drv` file's bytes. ATerm strings could hold any bytes, but every
/// writer produces UTF-8 and [`Derivation`] holds `String`s, so other bytes
/// are refused (at the offset of the first bad byte) rather than mangled.
pub fn parse_bytes(b: &[u8]) -> Result<Derivation, DrvParseError> {
    if b.len() > MAX_DRV_SIZE {
        return Err(DrvParseError {
            offset: 0,
            kind: DrvParseErrorKind::TooLarge(b.len()),
        });
    }
    let s = std::str::from_utf8(b).map_err(|e| DrvParseError {
        offset: e.valid_up_to(),
        kind: DrvParseErrorKind::InvalidUtf8,
    })?;
    parse(s)
}

/// Like [`parse`], but also refuses text that does not print back to itself
/// byte for byte: escapes Nix does not write (`\a` for `a`) and raw newlines,
/// CRs or tabs inside strings. Use it where the file's hash must be
/// reproducible from the parsed value.
pub fn parse_canonical(s: &str) -> Result<Derivation, DrvParseError> {
    let drv = parse(s)?;
    let printed = drv.to_aterm();
    if printed != s {
        let offset = printed
            .bytes()
            .zip(s.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| printed.len().min(s.len()));
        return Err(DrvParseError {
            offset,
            kind: DrvParseErrorKind::NonCanonical,
        });
    }
    Ok(drv)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

type PResult<T> = Result<T, DrvParseError>;

impl<'a> Parser<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn err_at(&self, offset: usize, kind: DrvParseErrorKind) -> DrvParseError {
        DrvParseError { offset, kind }
    }

    /// What is at the current position, for error messages.
    fn found(&self) -> String {
        match self.src.get(self.pos..).and_then(|r| r.chars().next()) {
            Some(c) => format!("{c:?}"),
            None => match self.peek() {
                Some(b) => format!("byte {b:#04x}"),
                None => "end of input".to_string(),
            },
        }
    }

    fn expected(&self, expected: impl Into<String>) -> DrvParseError {
        self.err_at(
            self.pos,
            DrvParseErrorKind::Expected {
                expected: expected.into(),
                found: self.found(),
            },
        )
    }

    /// Consume `lit` (ASCII) or fail saying it was expected.
    fn expect(&mut self, lit: &'static str) -> PResult<()> {
        if self.bytes()[self.pos..].starts_with(lit.as_bytes()) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(self.expected(format!("{lit:?}")))
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A quoted string. Escapes: `\n` `\r` `\t`, and `\X` is X for any other
    /// X, as in Nix's parser.
    fn string(&mut self) -> PResult<String> {
        if !self.eat(b'"') {
            return Err(self.expected("'\"' (a string)"));
        }
        let start = self.pos - 1;
        let bytes = self.bytes();
        let mut out = Vec::new();
        loop {
            let run_end = bytes[self.pos..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\')
                .map(|i| self.pos + i)
                .ok_or_else(|| self.err_at(start, DrvParseErrorKind::UnterminatedString))?;
            out.extend_from_slice(&bytes[self.pos..run_end]);
            self.pos = run_end + 1;
            if bytes[run_end] == b'"' {
                break;
            }
            let escaped = *bytes
                .get(self.pos)
                .ok_or_else(|| self.err_at(run_end, DrvParseErrorKind::EscapeAtEnd))?;
            out.push(match escaped {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                // Any other byte stands for itself; if it starts a multi-byte
                // character the rest follows in the next run, so the result
                // stays valid UTF-8.
                other => other,
            });
            self.pos += 1;
        }
        // Only ASCII backslashes were removed from valid UTF-8, so this cannot
        // fail; map rather than unwrap all the same.
        String::from_utf8(out).map_err(|_| self.err_at(start, DrvParseErrorKind::InvalidUtf8))
    }

    /// `[ITEM,ITEM,...]`.
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> PResult<T>) -> PResult<Vec<T>> {
        self.expect("[")?;
        let mut v = Vec::new();
        if self.eat(b']') {
            return Ok(v);
        }
        loop {
            v.push(item(self)?);
            if self.eat(b']') {
                return Ok(v);
            }
            if !self.eat(b',') {
                return Err(self.expected("',' or ']'"));
            }
        }
    }

    /// A list of `(key, value)` items whose keys must be strictly increasing.
    fn sorted_map<V>(
        &mut self,
        list: &'static str,
        mut item: impl FnMut(&mut Self) -> PResult<(String, V)>,
    ) -> PResult<BTreeMap<String, V>> {
        let mut map = BTreeMap::new();
        let mut prev: Option<String> = None;
        self.list(|p| {
            let at = p.pos;
            let (k, v) = item(p)?;
            check_order(p, at, list, prev.as_deref(), &k)?;
            prev = Some(k.clone());
            map.insert(k, v);
            Ok(())
        })?;
        Ok(map)
    }

    /// A list of strings that must be strictly increasing.
    fn sorted_strings(&mut self, list: &'static str) -> PResult<BTreeSet<String>> {
        let mut set = BTreeSet::new();
        let mut prev: Option<String> = None;
        self.list(|p| {
            let at = p.pos;
            let k = p.string()?;
            check_order(p, at, list, prev.as_deref(), &k)?;
            prev = Some(k.clone());
            set.insert(k);
            Ok(())
        })?;
        Ok(set)
    }

    fn derivation(mut self) -> PResult<Derivation> {
        self.expect("Derive(")?;
        let outputs = self.sorted_map("outputs", |p| {
            p.expect("(")?;
            let name = p.string()?;
            p.expect(",")?;
            let path = p.string()?;
            p.expect(",")?;
            let hash_algo = p.string()?;
            p.expect(",")?;
            let hash = p.string()?;
            p.expect(")")?;
            Ok((
                name,
                Output {
                    path,
                    hash_algo,
                    hash,
                },
            ))
        })?;
        self.expect(",")?;
        let input_drvs = self.sorted_map("input derivations", |p| {
            p.expect("(")?;
            let path = p.string()?;
            p.expect(",")?;
            let outs = p.sorted_strings("output names of an input derivation")?;
            p.expect(")")?;
            Ok((path, outs))
        })?;
        self.expect(",")?;
        let input_srcs = self.sorted_strings("input sources")?;
        self.expect(",")?;
        let system = self.string()?;
        self.expect(",")?;
        let builder = self.string()?;
        self.expect(",")?;
        let args = self.list(|p| p.string())?;
        self.expect(",")?;
        let env = self.sorted_map("environment variables", |p| {
            p.expect("(")?;
            let k = p.string()?;
            p.expect(",")?;
            let v = p.string()?;
            p.expect(")")?;
            Ok((k, v))
        })?;
        self.expect(")")?;
        if self.pos != self.src.len() {
            return Err(self.err_at(self.pos, DrvParseErrorKind::TrailingData));
        }
        Ok(Derivation {
            outputs,
            input_drvs,
            input_srcs,
            system,
            builder,
            args,
            env,
        })
    }
}

fn check_order(
    p: &Parser<'_>,
    at: usize,
    list: &'static str,
    prev: Option<&str>,
    key: &str,
) -> PResult<()> {
    match prev {
        Some(prev) if prev == key => Err(p.err_at(
            at,
            DrvParseErrorKind::Duplicate {
                list,
                key: key.into(),
            },
        )),
        Some(prev) if prev > key => Err(p.err_at(
            at,
            DrvParseErrorKind::Unsorted {
                list,
                prev: prev.into(),
                key: key.into(),
            },
        )),
        _ => Ok(()),
    }
}

/// Append `s` quoted, escaping exactly what Nix escapes.
fn print_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn print_list<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut f: impl FnMut(&mut String, T),
) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        f(out, item);
    }
    out.push(']');
}

fn print_strings<'s>(out: &mut String, items: impl IntoIterator<Item = &'s String>) {
    print_list(out, items, |o, s| print_string(o, s));
}

/// Input derivations after replacing paths by hashes (see
/// [`Derivation::to_aterm_with`]).
pub type InputDrvs = BTreeMap<String, BTreeSet<String>>;

/// The system this machine builds for natively, e.g. `x86_64-linux`: the
/// value a derivation's `system` must have to build here.
pub fn current_system() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

impl Derivation {
    /// The ATerm text, exactly as Nix writes it.
    pub fn to_aterm(&self) -> String {
        self.to_aterm_with(&self.input_drvs, false)
    }

    /// The ATerm with `input_drvs` in place of the real input derivations and,
    /// if `mask_outputs`, every output path and every env variable named after
    /// an output printed as "". This is what `hashDerivationModulo` hashes:
    /// inputs are replaced by their own modulo hashes so that a change which
    /// does not alter an input's outputs (e.g. a fixed-output fetcher's URL)
    /// does not ripple into every dependent's paths; outputs are masked while
    /// they are being computed, since they depend on this very hash.
    pub fn to_aterm_with(&self, input_drvs: &InputDrvs, mask_outputs: bool) -> String {
        let mut s = String::with_capacity(1024);
        s.push_str("Derive(");
        print_list(&mut s, &self.outputs, |o, (name, out)| {
            o.push('(');
            print_string(o, name);
            o.push(',');
            print_string(o, if mask_outputs { "" } else { &out.path });
            o.push(',');
            print_string(o, &out.hash_algo);
            o.push(',');
            print_string(o, &out.hash);
            o.push(')');
        });
        s.push(',');
        print_list(&mut s, input_drvs, |o, (path, outs)| {
            o.push('(');
            print_string(o, path);
            o.push(',');
            print_strings(o, outs);
            o.push(')');
        });
        s.push(',');
        print_strings(&mut s, &self.input_srcs);
        s.push(',');
        print_string(&mut s, &self.system);
        s.push(',');
        print_string(&mut s, &self.builder);
        s.push(',');
        print_strings(&mut s, &self.args);
        s.push(',');
        print_list(&mut s, &self.env, |o, (k, v)| {
            o.push('(');
            print_string(o, k);
            o.push(',');
            let masked = mask_outputs && self.outputs.contains_key(k);
            print_string(o, if masked { "" } else { v });
            o.push(')');
        });
        s.push(')');
        s
    }

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

    /// Nix's `hashDerivationModulo` of this derivation as it stands (as read
    /// from a `.drv` file; outputs are not masked). `lookup` gives the same
    /// hash for an input `.drv` path; callers read and memoize (see
    /// [`DrvHashCache`]). It is not called for fixed-output derivations.
    ///
    /// A fixed-output derivation hashes to
    /// `sha256("fixed:out:" ALGO ":" HASH ":" PATH)` from the recorded strings,
    /// which is what Nix computes for any file it wrote (Nix recomputes the
    /// path from the hash; [`Derivation::check_outputs`] verifies the two
    /// agree). Using the recorded strings keeps this infallible and working
    /// for every hash algorithm (old fetchers use sha1 and sha512).
    pub fn hash_modulo<E>(
        &self,
        lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
    ) -> Result<Sha256Hash, E> {
        self.hash_modulo_inner(lookup, false)
    }

    fn hash_modulo_inner<E>(
        &self,
        lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
        mask_outputs: bool,
    ) -> Result<Sha256Hash, E> {
        if let Some(out) = self.fixed_output() {
            // Nix hashes the parsed hash in base16, whatever the spelling in
            // the file; an unparsable one never gets paths (see
            // `expected_output_paths`), so its recorded text will do.
            let hash = match self.fixed_output_hash() {
                Some(Ok(f)) => f.hash.to_base16(),
                _ => out.hash.clone(),
            };
            return Ok(Sha256Hash::digest(format!(
                "fixed:out:{}:{}:{}",
                out.hash_algo, hash, out.path
            )));
        }
        let mut inputs = InputDrvs::new();
        for (path, outs) in &self.input_drvs {
            // Inputs whose hashes coincide (e.g. two fetchers of the same
            // fixed output) merge into one entry, as in Nix's map.
            inputs
                .entry(lookup(path)?.to_base16())
                .or_default()
                .extend(outs.iter().cloned());
        }
        Ok(Sha256Hash::digest(
            self.to_aterm_with(&inputs, mask_outputs),
        ))
    }

    /// The output paths this derivation's contents imply, as Nix computes them
    /// when it creates the derivation (`derivationStrict`): from the hash of
    /// the ATerm with outputs masked, or for a fixed output from its hash.
    pub fn expected_output_paths<E: From<DerivationError>>(
        &self,
        store_dir: &StoreDir,
        lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
    ) -> Result<BTreeMap<String, StorePath>, E> {
        let name = self.name_or_err()?;
        if let Some(fixed) = self.fixed_output_hash() {
            let fixed = fixed?;
            let path = store_dir
                .fixed_output_path_any(
                    &name,
                    fixed.method,
                    fixed.hash.algo().name(),
                    &fixed.hash.to_base16(),
                )
                .map_err(DerivationError::from)?;
            return Ok(BTreeMap::from([("out".to_string(), path)]));
        }
        if let Some((output, _)) = self.outputs.iter().find(|(_, o)| !o.hash_algo.is_empty()) {
            return Err(DerivationError::NotFixedOutput {
                output: output.clone(),
            }
            .into());
        }
        let hash = self.hash_modulo_inner(lookup, true)?;
        self.outputs
            .keys()
            .map(|o| {
                store_dir
                    .output_path(&name, o, &hash)
                    .map(|p| (o.clone(), p))
                    .map_err(|e| DerivationError::from(e).into())
            })
            .collect()
    }

    /// Compute the output paths (see [`Self::expected_output_paths`]) and
    /// write them into `outputs` and into the env variables named after
    /// outputs that exist (structured-attrs derivations have none).
    pub fn fill_output_paths<E: From<DerivationError>>(
        &mut self,
        store_dir: &StoreDir,
        lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
    ) -> Result<(), E> {
        let paths = self.expected_output_paths(store_dir, lookup)?;
        for (name, path) in paths {
            let abs = store_dir.display(&path);
            if let Some(v) = self.env.get_mut(&name) {
                v.clone_from(&abs);
            }
            if let Some(o) = self.outputs.get_mut(&name) {
                o.path = abs;
            }
        }
        Ok(())
    }

    /// Verify that the recorded output paths (and env variables named after
    /// outputs, where present) are the ones the contents imply, reporting every
    /// mismatch. A daemon must do this before trusting a client's `.drv`:
    /// otherwise a derivation could claim anyone's output path.
    pub fn check_outputs<E: From<DerivationError>>(
        &self,
        store_dir: &StoreDir,
        lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
    ) -> Result<(), E> {
        let expected = self.expected_output_paths(store_dir, lookup)?;
        let mut mismatches = Vec::new();
        for (name, path) in &expected {
            let want = store_dir.display(path);
            let recorded = self.outputs.get(name).map(|o| &o.path);
            if let Some(rec) = recorded.filter(|r| **r != want) {
                mismatches.push(OutputMismatch {
                    output: name.clone(),
                    place: MismatchPlace::OutputPath,
                    recorded: rec.clone(),
                    expected: want.clone(),
                });
            }
            if let Some(rec) = self.env.get(name).filter(|r| **r != want) {
                mismatches.push(OutputMismatch {
                    output: name.clone(),
                    place: MismatchPlace::EnvVar,
                    recorded: rec.clone(),
                    expected: want,
                });
            }
        }
        if mismatches.is_empty() {
            Ok(())
        } else {
            Err(DerivationError::OutputMismatch {
                name: self.name().unwrap_or_default().into_owned(),
                mismatches,
            }
            .into())
        }
    }

    /// The `.drv` file's own store path: a text path named `NAME.drv` whose
    /// references are the input sources and input derivations.
    pub fn drv_path(&self, store_dir: &StoreDir, name: &str) -> Result<StorePath, DerivationError> {
        let refs = self
            .input_srcs
            .iter()
            .chain(self.input_drvs.keys())
            .map(|p| store_dir.parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let contents = Sha256Hash::digest(self.to_aterm());
        Ok(store_dir.text_path(&format!("{name}.drv"), &contents, &refs)?)
    }
}

/// Memoized `hashDerivationModulo` over `.drv` files in a store.
///
/// Derivation graphs share most inputs, so without memoization hashing is
/// exponential; and the walk is iterative so that deep graphs (bootstrap
/// chains are hundreds deep) cannot overflow a thread's stack.
#[derive(Debug, Default, Clone)]
pub struct DrvHashCache {
    memo: HashMap<String, Sha256Hash>,
}

impl DrvHashCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached hash of an absolute `.drv` path, if known.
    pub fn get(&self, drv_path: &str) -> Option<Sha256Hash> {
        self.memo.get(drv_path).copied()
    }

    /// Record the hash of a `.drv` computed elsewhere (one just written).
    pub fn insert(&mut self, drv_path: String, hash: Sha256Hash) {
        self.memo.insert(drv_path, hash);
    }

    /// How many hashes are cached.
    pub fn len(&self) -> usize {
        self.memo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.memo.is_empty()
    }

    /// The modulo hash of the `.drv` at `drv_path`, loading it and any inputs
    /// not yet cached with `load` (which reads and parses a `.drv` file).
    pub fn hash_path<E: From<DerivationError>>(
        &mut self,
        drv_path: &str,
        load: &mut dyn FnMut(&str) -> Result<Derivation, E>,
    ) -> Result<Sha256Hash, E> {
        if let Some(h) = self.get(drv_path) {
            return Ok(h);
        }
        let drv = load(drv_path)?;
        self.walk(Some(drv_path.to_string()), drv, load)
    }

    /// The modulo hash of a derivation held in memory (not cached itself).
    pub fn hash_drv<E: From<DerivationError>>(
        &mut self,
        drv: &Derivation,
        load: &mut dyn FnMut(&str) -> Result<Derivation, E>,
    ) -> Result<Sha256Hash, E> {
        self.walk(None, drv.clone(), load)
    }

    /// Look up (loading as needed) an input's hash; for use as the `lookup`
    /// argument of [`Derivation`]'s methods.
    pub fn lookup<'c, E: From<DerivationError>>(
        &'c mut self,
        load: &'c mut dyn FnMut(&str) -> Result<Derivation, E>,
    ) -> impl FnMut(&str) -> Result<Sha256Hash, E> + 'c {
        move |p| self.hash_path(p, load)
    }

    fn walk<E: From<DerivationError>>(
        &mut self,
        root_path: Option<String>,
        root: Derivation,
        load: &mut dyn FnMut(&str) -> Result<Derivation, E>,
    ) -> Result<Sha256Hash, E> {
        let mut on_stack: HashSet<String> = root_path.iter().cloned().collect();
        let mut stack = vec![(root_path, root)];
        loop {
            let Some((path, drv)) = stack.last() else {
                unreachable!("the loop returns when the root is popped")
            };
            // Fixed-output derivations do not depend on their inputs' hashes.
            let pending = if drv.is_fixed_output() {
                None
            } else {
                drv.input_drvs
                    .keys()
                    .find(|p| !self.memo.contains_key(p.as_str()))
                    .cloned()
            };
            match pending {
                Some(input) => {
                    if !on_stack.insert(input.clone()) {
                        return Err(DerivationError::Cycle(input).into());
                    }
                    let d = load(&input)?;
                    stack.push((Some(input), d));
                }
                None => {
                    let memo = &self.memo;
                    let h = drv.hash_modulo(&mut |p: &str| {
                        memo.get(p)
                            .copied()
                            .ok_or_else(|| DerivationError::Cycle(p.to_string()))
                    });
                    let h = h.map_err(E::from)?;
                    if let Some(p) = path {
                        on_stack.remove(p);
                        self.memo.insert(p.clone(), h);
                    }
                    stack.pop();
                    if stack.is_empty() {
                        return Ok(h);
                    }
                }
            }
        }
    }
}

/// Convenience: `hashDerivationModulo` of `drv` with `lookup` for its inputs.
/// Same as [`Derivation::hash_modulo`].
pub fn hash_derivation_modulo<E>(
    drv: &Derivation,
    lookup: &mut dyn FnMut(&str) -> Result<Sha256Hash, E>,
) -> Result<Sha256Hash, E> {
    drv.hash_modulo(lookup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/derivations");

    fn nix() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    fn fixture(base: &str) -> String {
        std::fs::read_to_string(format!("{FIX}/{base}")).unwrap()
    }

    /// Loads `.drv` files of the fixtures dir by their /nix/store path.
    fn load(p: &str) -> Result<Derivation, DerivationError> {
        let base = p.strip_prefix("/nix/store/").unwrap();
        Ok(parse(&fixture(base)).unwrap())
    }

    fn all_fixtures() -> Vec<(String, String)> {
        let mut v: Vec<_> = std::fs::read_dir(FIX)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".drv"))
            .map(|n| {
                let text = fixture(&n);
                (n, text)
            })
            .collect();
        v.sort();
        assert!(v.len() >= 8);
        v
    }

    const HASH: &str = "08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba";

    /// The chain vector of formats.md, as the ATerm Nix 2.8 writes for
    /// `derivation { name = "bar"; builder = ":"; system = ":";
    ///   outputHash = HASH; outputHashAlgo = "sha256"; outputHashMode = "recursive"; }`
    /// and `derivation { name = "foo"; builder = ":"; system = ":"; inherit bar; }`.
    const BAR: &str = concat!(
        r#"Derive([("out","/nix/store/4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar","r:sha256","08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba")],"#,
        r#"[],[],":",":",[],[("builder",":"),("name","bar"),("out","/nix/store/4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar"),"#,
        r#"("outputHash","08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba"),("outputHashAlgo","sha256"),"#,
        r#"("outputHashMode","recursive"),("system",":")])"#
    );
    const FOO: &str = concat!(
        r#"Derive([("out","/nix/store/5vyvcwah9l9kf07d52rcgdk70g2f4y13-foo","","")],"#,
        r#"[("/nix/store/0hm2f1psjpcwg8fijsmr4wwxrx59s092-bar.drv",["out"])],[],":",":",[],"#,
        r#"[("bar","/nix/store/4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar"),("builder",":"),("name","foo"),"#,
        r#"("out","/nix/store/5vyvcwah9l9kf07d52rcgdk70g2f4y13-foo"),("system",":")])"#
    );

    fn no_inputs(p: &str) -> Result<Sha256Hash, DerivationError> {
        panic!("unexpected lookup of {p}")
    }

    #[test]
    fn chain_vector_from_scratch() {
        let d = nix();
        // bar, built as derivationStrict would: outputs unknown.
        let mut bar = Derivation {
            system: ":".into(),
            builder: ":".into(),
            ..Default::default()
        };
        bar.outputs.insert(
            "out".into(),
            Output {
                path: String::new(),
                hash_algo: "r:sha256".into(),
                hash: HASH.into(),
            },
        );
        for (k, v) in [
            ("builder", ":"),
            ("name", "bar"),
            ("out", ""),
            ("outputHash", HASH),
            ("outputHashAlgo", "sha256"),
            ("outputHashMode", "recursive"),
            ("system", ":"),
        ] {
            bar.env.insert(k.into(), v.into());
        }
        assert!(bar.is_fixed_output());
        bar.fill_output_paths(&nix(), &mut no_inputs).unwrap();
        assert_eq!(bar.to_aterm(), BAR);
        assert_eq!(fixture("0hm2f1psjpcwg8fijsmr4wwxrx59s092-bar.drv"), BAR);
        let bar_drv = bar.drv_path(&d, "bar").unwrap();
        assert_eq!(
            bar_drv.base_name(),
            "0hm2f1psjpcwg8fijsmr4wwxrx59s092-bar.drv"
        );
        let bar_out = d.display(&d.parse(&bar.outputs["out"].path).unwrap());
        let bar_hash = bar.hash_modulo(&mut no_inputs).unwrap();

        let mut foo = Derivation {
            system: ":".into(),
            builder: ":".into(),
            ..Default::default()
        };
        foo.outputs.insert("out".into(), Output::default());
        foo.input_drvs
            .insert(d.display(&bar_drv), BTreeSet::from(["out".to_string()]));
        for (k, v) in [
            ("bar", bar_out.as_str()),
            ("builder", ":"),
            ("name", "foo"),
            ("out", ""),
            ("system", ":"),
        ] {
            foo.env.insert(k.into(), v.into());
        }
        let bar_path = d.display(&bar_drv);
        let mut lookup = |p: &str| -> Result<Sha256Hash, DerivationError> {
            assert_eq!(p, bar_path);
            Ok(bar_hash)
        };
        foo.fill_output_paths(&d, &mut lookup).unwrap();
        assert_eq!(
            foo.outputs["out"].path,
            "/nix/store/5vyvcwah9l9kf07d52rcgdk70g2f4y13-foo"
        );
        assert_eq!(foo.env["out"], foo.outputs["out"].path);
        assert_eq!(foo.to_aterm(), FOO);
        assert_eq!(
            foo.drv_path(&d, "foo").unwrap().base_name(),
            "4wvvbi4jwn0prsdxb7vs673qa5h9gr7x-foo.drv"
        );
        foo.check_outputs(&d, &mut lookup).unwrap();
    }

    #[test]
    fn fixtures_round_trip_and_check() {
        let d = nix();
        let mut cache = DrvHashCache::new();
        for (base, text) in all_fixtures() {
            let drv = parse(&text).unwrap_or_else(|e| panic!("{base}: {e}"));
            assert_eq!(drv.to_aterm(), text, "{base}");
            assert_eq!(parse_canonical(&text).unwrap(), drv);
            assert_eq!(parse_bytes(text.as_bytes()).unwrap(), drv);
            let name = drv.name().unwrap();
            assert_eq!(
                drv.drv_path(&d, &name).unwrap().base_name(),
                base,
                "drv path"
            );
            drv.check_outputs(&d, &mut cache.lookup(&mut load))
                .unwrap_or_else(|e| panic!("{base}: {e}"));
            // Filling a masked copy reproduces the file.
            let mut blank = drv.clone();
            for (k, o) in blank.outputs.iter_mut() {
                o.path.clear();
                blank.env.insert(k.clone(), String::new());
            }
            blank
                .fill_output_paths(&d, &mut cache.lookup(&mut load))
                .unwrap();
            assert_eq!(blank.to_aterm(), text, "{base}");
        }
    }

    #[test]
    fn fixture_contents() {
        let esc = parse(&fixture("9216b2v5l53v1nfmk27nyai5x4d1z7jx-esc.drv")).unwrap();
        assert_eq!(
            esc.args,
            ["a\"b", "c\\d", "e\nf", "g\rh", "i\tj", "ünï€😀", ""]
        );
        assert_eq!(
            esc.env["weird"],
            "quote\" back\\ nl\n cr\r tab\t bellx07 end"
        );
        assert_eq!(
            esc.required_system_features(),
            BTreeSet::from(["big-parallel", "kvm"])
        );
        assert_eq!(esc.input_drvs.len(), 2);
        assert_eq!(
            esc.input_drvs["/nix/store/gnmhznkfamq76vlffv12237x6myqlzzf-multi.drv"],
            BTreeSet::from(["dev".to_string(), "out".to_string()])
        );
        assert!(!esc.is_fixed_output());
        let multi = parse(&fixture("gnmhznkfamq76vlffv12237x6myqlzzf-multi.drv")).unwrap();
        assert_eq!(
            multi.outputs.keys().collect::<Vec<_>>(),
            ["dev", "lib", "out"]
        );
        let user = parse(&fixture("4sdcfc662j69m30h5bxr7gwlz6c9q974-user.drv")).unwrap();
        assert_eq!(user.env["ctl"], "bell\u{7} nul-free \u{1b} esc");
        let flat = parse(&fixture("62f41jprbim191wr118f4alq06wf3yn4-flat.drv")).unwrap();
        assert!(flat.is_fixed_output());
        assert_eq!(flat.outputs["out"].hash_algo, "sha256");
    }

    #[test]
    fn colliding_inputs_merge() {
        // user's two inputs are fixed-output drvs with the same output, so
        // their modulo hashes are equal and the ATerm hashed has one entry.
        let user = parse(&fixture("4sdcfc662j69m30h5bxr7gwlz6c9q974-user.drv")).unwrap();
        let mut cache = DrvHashCache::new();
        let mut hashes = BTreeSet::new();
        for p in user.input_drvs.keys() {
            hashes.insert(cache.hash_path(p, &mut load).unwrap());
        }
        assert_eq!(hashes.len(), 1);
        let h = hashes.into_iter().next().unwrap();
        assert_eq!(
            h,
            Sha256Hash::digest(format!(
                "fixed:out:r:sha256:{HASH}:/nix/store/h43a425dfyh0c3k95givig1k0fjfv69x-fetch"
            ))
        );
        let merged = InputDrvs::from([(h.to_base16(), BTreeSet::from(["out".to_string()]))]);
        let want = Sha256Hash::digest(user.to_aterm_with(&merged, false));
        assert_eq!(cache.hash_drv(&user, &mut load).unwrap(), want);
        assert_eq!(
            hash_derivation_modulo(&user, &mut cache.lookup(&mut load)).unwrap(),
            want
        );
    }

    #[test]
    fn check_outputs_reports_each_mismatch() {
        let d = nix();
        let mut foo = parse(FOO).unwrap();
        let wrong = "/nix/store/00000000000000000000000000000000-foo".to_string();
        foo.outputs.get_mut("out").unwrap().path = wrong.clone();
        foo.env.insert("out".into(), wrong.clone());
        let mut cache = DrvHashCache::new();
        let err = foo
            .check_outputs(&d, &mut cache.lookup(&mut load))
            .unwrap_err();
        let DerivationError::OutputMismatch { name, mismatches } = &err else {
            panic!("{err}")
        };
        assert_eq!(name, "foo");
        assert_eq!(mismatches.len(), 2);
        assert_eq!(mismatches[0].place, MismatchPlace::OutputPath);
        assert_eq!(mismatches[1].place, MismatchPlace::EnvVar);
        for m in mismatches {
            assert_eq!(m.recorded, wrong);
            assert_eq!(
                m.expected,
                "/nix/store/5vyvcwah9l9kf07d52rcgdk70g2f4y13-foo"
            );
        }
        assert!(err.to_string().contains("should be"), "{err}");

        // A fixed output whose recorded path does not match its hash.
        let mut bar = parse(BAR).unwrap();
        bar.outputs.get_mut("out").unwrap().hash = "0".repeat(64);
        assert!(matches!(
            bar.check_outputs(&d, &mut no_inputs),
            Err(DerivationError::OutputMismatch { .. })
        ));
    }

    #[test]
    fn every_spelling_of_a_fixed_hash_gives_nixs_path_and_modulo_hash() {
        // Nix reads a `.drv`'s output hash as base16 (either case), nix32 or
        // base64 and computes paths and hashDerivationModulo from the
        // digest (rendered in base16), never from the spelling.
        let d = nix();
        let bar = parse(BAR).unwrap();
        let want_paths = bar.expected_output_paths(&d, &mut no_inputs).unwrap();
        assert_eq!(
            want_paths["out"].base_name(),
            "4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar"
        );
        let want_modulo = bar.hash_modulo(&mut no_inputs).unwrap();
        let h = crate::content_hash::Hash::parse_non_sri_unprefixed(
            HASH,
            crate::content_hash::HashAlgo::Sha256,
        )
        .unwrap();
        for spelling in [HASH.to_uppercase(), h.to_nix32(), h.to_base64()] {
            let mut other = bar.clone();
            other.outputs.get_mut("out").unwrap().hash = spelling.clone();
            assert_eq!(
                other.expected_output_paths(&d, &mut no_inputs).unwrap(),
                want_paths,
                "{spelling}"
            );
            assert_eq!(other.hash_modulo(&mut no_inputs).unwrap(), want_modulo);
            assert!(other.check_outputs(&d, &mut no_inputs).is_ok());
        }
        // An SRI or typed hash is not what a `.drv` field holds (Nix refuses it).
        for spelling in [h.to_sri(), format!("sha256:{HASH}")] {
            let mut other = bar.clone();
            other.outputs.get_mut("out").unwrap().hash = spelling;
            assert!(matches!(
                other.expected_output_paths(&d, &mut no_inputs),
                Err(DerivationError::BadFixedHash { .. })
            ));
        }
    }

    #[test]
    fn path_errors() {
        let d = nix();
        let mut bar = parse(BAR).unwrap();
        bar.outputs.get_mut("out").unwrap().hash_algo = "r:blake3".into();
        assert!(matches!(
            bar.fill_output_paths(&d, &mut no_inputs),
            Err(DerivationError::UnsupportedHashAlgo { .. })
        ));
        // hash_modulo still works from the recorded strings.
        assert!(bar.hash_modulo(&mut no_inputs).is_ok());
        bar.outputs.get_mut("out").unwrap().hash_algo = "sha256".into();
        bar.outputs.get_mut("out").unwrap().hash = "xyz".into();
        assert!(matches!(
            bar.fill_output_paths(&d, &mut no_inputs),
            Err(DerivationError::BadFixedHash { .. })
        ));
        bar.env.remove("name");
        assert_eq!(
            bar.fill_output_paths(&d, &mut no_inputs),
            Err(DerivationError::NoName)
        );
        let mut two = parse(BAR).unwrap();
        two.outputs.insert("dev".into(), Output::default());
        assert!(matches!(
            two.fill_output_paths(&d, &mut no_inputs),
            Err(DerivationError::NotFixedOutput { .. })
        ));
        let mut foo = parse(FOO).unwrap();
        foo.input_srcs.insert("/tmp/x".into());
        assert!(matches!(
            foo.drv_path(&d, "foo"),
            Err(DerivationError::StorePath(_))
        ));
    }

    #[test]
    fn cycle_is_an_error_not_a_hang() {
        let a = "/nix/store/0hm2f1psjpcwg8fijsmr4wwxrx59s092-a.drv";
        let b = "/nix/store/4wvvbi4jwn0prsdxb7vs673qa5h9gr7x-b.drv";
        let mk = |input: &str| {
            let mut d = parse(FOO).unwrap();
            d.input_drvs = InputDrvs::from([(input.to_string(), BTreeSet::from(["out".into()]))]);
            d
        };
        let mut load = |p: &str| -> Result<Derivation, DerivationError> {
            Ok(if p == a { mk(b) } else { mk(a) })
        };
        let err = DrvHashCache::new().hash_path(a, &mut load).unwrap_err();
        assert!(matches!(err, DerivationError::Cycle(_)), "{err}");
    }

    fn err_of(s: &str) -> DrvParseError {
        parse(s).expect_err(s)
    }

    #[test]
    fn parse_errors_have_offsets() {
        // Truncation anywhere is an error, never a panic.
        for i in 0..FOO.len() {
            let e = err_of(&FOO[..i]);
            assert!(e.offset <= i, "{i}: {e}");
        }
        let e = err_of(r#"Derive([("out",""#);
        assert_eq!(e.offset, 15);
        assert_eq!(e.kind, DrvParseErrorKind::UnterminatedString);
        let e = err_of("Derive([(\"out\\");
        assert_eq!((e.offset, e.kind), (13, DrvParseErrorKind::EscapeAtEnd));
        let e = err_of("Derive([(\"o\",\"\",\"\",\"\")],[],[],\"\",\"\",[],[]) ");
        assert_eq!((e.offset, e.kind), (42, DrvParseErrorKind::TrailingData));
        let e = err_of("Derive([],[],[],\"\",\"\",[],[])\n");
        assert_eq!(e.kind, DrvParseErrorKind::TrailingData);
        let e = err_of("Derivx(");
        assert_eq!(e.offset, 0);
        assert!(e.to_string().contains("expected \"Derive(\""), "{e}");
        let e = err_of("Derive([],[],[],\"\",\"\",[],[(\"a\",\"\")(");
        assert!(e.to_string().contains("',' or ']'"), "{e}");
        assert!(e.to_string().contains("at byte 34"), "{e}");

        let sorted = |env: &str| format!("Derive([],[],[],\"\",\"\",[],[{env}])");
        let e = err_of(&sorted(r#"("b",""),("a","")"#));
        assert_eq!(e.offset, 35);
        assert!(matches!(e.kind, DrvParseErrorKind::Unsorted { .. }), "{e}");
        let e = err_of(&sorted(r#"("a",""),("a","")"#));
        assert!(matches!(e.kind, DrvParseErrorKind::Duplicate { .. }), "{e}");
        let e = err_of(r#"Derive([("out","","",""),("dev","","","")],[],[],"","",[],[])"#);
        assert!(matches!(
            e.kind,
            DrvParseErrorKind::Unsorted {
                list: "outputs",
                ..
            }
        ));
        let e = err_of(r#"Derive([],[("/b",[]),("/a",[])],[],"","",[],[])"#);
        assert!(matches!(
            e.kind,
            DrvParseErrorKind::Unsorted {
                list: "input derivations",
                ..
            }
        ));
        let e = err_of(r#"Derive([],[("/a",["out","dev"])],[],"","",[],[])"#);
        assert!(matches!(e.kind, DrvParseErrorKind::Unsorted { .. }));
        let e = err_of(r#"Derive([],[],["/a","/a"],"","",[],[])"#);
        assert!(matches!(
            e.kind,
            DrvParseErrorKind::Duplicate {
                list: "input sources",
                ..
            }
        ));
        // Args keep their order: not sorted, duplicates allowed.
        assert!(parse(r#"Derive([],[],[],"","",["b","a","a"],[])"#).is_ok());

        let e = parse_bytes(b"Derive([],[],[],\"\xff\",\"\",[],[])").unwrap_err();
        assert_eq!((e.offset, e.kind), (17, DrvParseErrorKind::InvalidUtf8));
    }

    #[test]
    fn lenient_escapes_and_canonical_check() {
        // Like Nix, `\X` means X and raw newlines are accepted...
        let d = parse("Derive([],[],[],\"\\a\\é\",\"x\ny\",[],[])").unwrap();
        assert_eq!(d.system, "aé");
        assert_eq!(d.builder, "x\ny");
        // ...but such text does not print back to itself.
        let e = parse_canonical("Derive([],[],[],\"\\a\",\"\",[],[])").unwrap_err();
        assert_eq!((e.offset, e.kind), (17, DrvParseErrorKind::NonCanonical));
    }

    fn arb_string() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            3 => prop::sample::select(vec!['"', '\\', '\n', '\r', '\t', ',', '(', ')', '[', ']', 'n']),
            3 => any::<char>(),
            4 => prop::char::range('a', 'z'),
        ];
        prop::collection::vec(c, 0..10).prop_map(String::from_iter)
    }

    fn arb_drv() -> impl Strategy<Value = Derivation> {
        let output =
            (arb_string(), arb_string(), arb_string()).prop_map(|(path, hash_algo, hash)| Output {
                path,
                hash_algo,
                hash,
            });
        (
            prop::collection::btree_map(arb_string(), output, 0..4),
            prop::collection::btree_map(
                arb_string(),
                prop::collection::btree_set(arb_string(), 0..3),
                0..4,
            ),
            prop::collection::btree_set(arb_string(), 0..4),
            arb_string(),
            arb_string(),
            prop::collection::vec(arb_string(), 0..4),
            prop::collection::btree_map(arb_string(), arb_string(), 0..6),
        )
            .prop_map(
                |(outputs, input_drvs, input_srcs, system, builder, args, env)| Derivation {
                    outputs,
                    input_drvs,
                    input_srcs,
                    system,
                    builder,
                    args,
                    env,
                },
            )
    }

    proptest! {
        #[test]
        fn print_parse_round_trip(d in arb_drv()) {
            let text = d.to_aterm();
            let back = parse_canonical(&text).unwrap();
            prop_assert_eq!(back, d);
        }

        #[test]
        fn parse_never_panics_on_mutations(
            d in arb_drv(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            ins in prop::collection::vec(any::<u8>(), 0..4),
            del in 0usize..4,
        ) {
            let text = d.to_aterm().into_bytes();
            // Truncated.
            let t = &text[..cut.index(text.len() + 1)];
            if let Err(e) = parse_bytes(t) {
                prop_assert!(e.offset <= t.len());
            }
            // Bytes deleted and inserted.
            let mut m = text.clone();
            let i = at.index(m.len() + 1);
            let j = (i + del).min(m.len());
            m.splice(i..j, ins.iter().copied());
            if let Err(e) = parse_bytes(&m) {
                prop_assert!(e.offset <= m.len());
                let _ = e.to_string();
            }
        }

        #[test]
        fn parse_never_panics_on_garbage(s in "Derive\\(\\[[(\\[\\]\",\\\\a-z)]{0,40}") {
            let _ = parse(&s);
        }
    }
}
