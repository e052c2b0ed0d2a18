//! Store paths: `STOREDIR/HASH-NAME`, and how their hashes are computed.
//!
//! The hash part is nix32 of a 160-bit compression of
//! `sha256(TYPE ":sha256:" HEX(INNER) ":" STOREDIR ":" NAME)`. The store
//! directory is part of the fingerprint, so [`StoreDir`] is passed to every
//! computation instead of being a global: the same derivation has different
//! paths under /gnu/store, /nix/store and /ferry/store.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::hash::Sha256Hash;
use crate::nix32;

/// Length of the nix32 hash part of a store path (20 bytes).
pub const HASH_CHARS: usize = 32;
/// Longest name Nix accepts (leaves room for the hash and `.lock`/`.chroot`
/// suffixes within a 255-byte file name).
pub const MAX_NAME_LEN: usize = 211;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("store path {0:?} is not in the store directory {1}")]
    NotInStore(String, String),
    #[error("store path {0:?} is too short to hold a {HASH_CHARS}-character hash and a name")]
    TooShort(String),
    #[error("store path {0:?} has an invalid hash part: {1}")]
    BadHash(String, nix32::DecodeError),
    #[error("store path {0:?} lacks the '-' between hash and name")]
    NoDash(String),
    #[error("store path name {0:?} is empty")]
    EmptyName(String),
    #[error("store path name {0:?} is {1} bytes long; the limit is {MAX_NAME_LEN}")]
    NameTooLong(String, usize),
    #[error("store path name {0:?} contains {1:?}; allowed are letters, digits and + - . _ ? =")]
    BadNameChar(String, char),
    #[error("store directory {0:?} must be an absolute, normalized path without trailing '/'")]
    BadStoreDir(String),
}

/// Check a store path name as Nix 2.8 does: 1 to 211 bytes of letters,
/// digits and `+-._?=` (a leading period is allowed: the hash comes first).
pub fn validate_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName(name.into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong(name.into(), name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(c)))
    {
        return Err(StorePathError::BadNameChar(name.into(), c));
    }
    Ok(())
}

/// A store path relative to its store directory: `HASH-NAME`.
///
/// Ordered as Nix orders paths (bytewise on the string), which within one
/// store directory equals ordering by the full path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    base: String,
}

impl StorePath {
    /// Parse a base name `HASH-NAME`.
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        if base.len() < HASH_CHARS + 2 || !base.is_char_boundary(HASH_CHARS) {
            return Err(StorePathError::TooShort(base.into()));
        }
        let (hash, rest) = base.split_at(HASH_CHARS);
        nix32::decode_len(hash, 20).map_err(|e| StorePathError::BadHash(base.into(), e))?;
        let name = rest
            .strip_prefix('-')
            .ok_or_else(|| StorePathError::NoDash(base.into()))?;
        validate_name(name)?;
        Ok(StorePath { base: base.into() })
    }

    /// Build from a 20-byte digest and a name.
    pub fn from_parts(digest: &[u8; 20], name: &str) -> Result<Self, StorePathError> {
        validate_name(name)?;
        Ok(StorePath {
            base: format!("{}-{}", nix32::encode(digest), name),
        })
    }

    /// `HASH-NAME`.
    pub fn base_name(&self) -> &str {
        &self.base
    }

    /// The 32 nix32 characters.
    pub fn hash_part(&self) -> &str {
        &self.base[..HASH_CHARS]
    }

    pub fn name(&self) -> &str {
        &self.base[HASH_CHARS + 1..]
    }

    /// The 20-byte digest the hash part encodes.
    pub fn digest(&self) -> [u8; 20] {
        let v = nix32::decode_len(self.hash_part(), 20).expect("validated on construction");
        v.try_into().unwrap()
    }

    /// Is this a derivation file path?
    pub fn is_derivation(&self) -> bool {
        self.base.ends_with(".drv")
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({})", self.base)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

/// How a fixed-output hash was taken: of the file's bytes, or of its NAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileIngestion {
    Flat,
    Recursive,
}

/// A store directory such as `/nix/store`. Every path computation needs one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreDir(String);

impl StoreDir {
    pub fn new(dir: impl Into<String>) -> Result<Self, StorePathError> {
        let dir = dir.into();
        let ok = dir.starts_with('/')
            && dir.len() > 1
            && !dir.ends_with('/')
            && !dir.contains("//")
            && !dir.split('/').any(|c| c == "." || c == "..")
            && !dir.contains('\0');
        if ok {
            Ok(StoreDir(dir))
        } else {
            Err(StorePathError::BadStoreDir(dir))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute path of a store path, as a string.
    pub fn display(&self, p: &StorePath) -> String {
        format!("{}/{}", self.0, p.base)
    }

    /// The absolute path of a store path.
    pub fn path_of(&self, p: &StorePath) -> PathBuf {
        PathBuf::from(self.display(p))
    }

    /// Parse an absolute store path `STOREDIR/HASH-NAME` (nothing after it).
    pub fn parse(&self, abs: &str) -> Result<StorePath, StorePathError> {
        let base = abs
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .filter(|b| !b.contains('/'))
            .ok_or_else(|| StorePathError::NotInStore(abs.into(), self.0.clone()))?;
        StorePath::from_base_name(base)
    }

    /// Parse a path inside the store, such as `STOREDIR/HASH-NAME/bin/sh`,
    /// into the store path and the rest (which may be empty).
    pub fn parse_inside<'a>(&self, abs: &'a str) -> Result<(StorePath, &'a str), StorePathError> {
        let rest = abs
            .strip_prefix(self.0.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(abs.into(), self.0.clone()))?;
        let (base, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        Ok((StorePath::from_base_name(base)?, tail))
    }

    /// Is `p` directly or deeply inside this store directory?
    pub fn contains(&self, p: &Path) -> bool {
        p.starts_with(&self.0)
    }

    /// The general rule: `TYPE:sha256:HEX(inner):STOREDIR:NAME`, hashed,
    /// compressed to 20 bytes.
    pub fn make_store_path(
        &self,
        path_type: &str,
        inner: &Sha256Hash,
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        validate_name(name)?;
        let fingerprint = format!("{path_type}:sha256:{}:{}:{name}", inner.to_base16(), self.0);
        let h = Sha256Hash::digest(fingerprint.as_bytes());
        StorePath::from_parts(&compress20(h.as_bytes()), name)
    }

    /// `TYPE` followed by `:REF` for each reference (given sorted or not).
    fn type_with_refs(&self, prefix: &str, refs: &[StorePath], self_ref: bool) -> String {
        let mut refs: Vec<&StorePath> = refs.iter().collect();
        refs.sort();
        refs.dedup();
        let mut t = prefix.to_string();
        for r in refs {
            t.push(':');
            t.push_str(&self.display(r));
        }
        if self_ref {
            t.push_str(":self");
        }
        t
    }

    /// A text file's path (e.g. a .drv): INNER is sha256 of the contents.
    pub fn text_path(
        &self,
        name: &str,
        contents_hash: &Sha256Hash,
        refs: &[StorePath],
    ) -> Result<StorePath, StorePathError> {
        self.make_store_path(
            &self.type_with_refs("text", refs, false),
            contents_hash,
            name,
        )
    }

    /// An added tree's path: INNER is sha256 of its NAR.
    pub fn source_path(
        &self,
        name: &str,
        nar_hash: &Sha256Hash,
        refs: &[StorePath],
        self_ref: bool,
    ) -> Result<StorePath, StorePathError> {
        self.make_store_path(
            &self.type_with_refs("source", refs, self_ref),
            nar_hash,
            name,
        )
    }

    /// An input-addressed derivation output: INNER is hashDerivationModulo.
    pub fn output_path(
        &self,
        drv_name: &str,
        output: &str,
        drv_hash: &Sha256Hash,
    ) -> Result<StorePath, StorePathError> {
        self.make_store_path(
            &format!("output:{output}"),
            drv_hash,
            &output_path_name(drv_name, output),
        )
    }

    /// A fixed-output path for a sha256 hash. Recursive sha256 is a `source`
    /// path of the NAR hash; anything else goes through `fixed:out:`.
    pub fn fixed_output_path(
        &self,
        name: &str,
        ingestion: FileIngestion,
        hash: &Sha256Hash,
    ) -> Result<StorePath, StorePathError> {
        self.fixed_output_path_any(name, ingestion, "sha256", &hash.to_base16())
    }

    /// A fixed-output path for any algorithm Nix accepts (md5, sha1, sha256,
    /// sha512), from the algorithm name and the digest in base16. The path
    /// only needs the digest's text, so no other hash function is computed.
    pub fn fixed_output_path_any(
        &self,
        name: &str,
        ingestion: FileIngestion,
        algo: &str,
        hex_digest: &str,
    ) -> Result<StorePath, StorePathError> {
        if ingestion == FileIngestion::Recursive && algo == "sha256" {
            if let Ok(h) = Sha256Hash::parse(hex_digest) {
                return self.source_path(name, &h, &[], false);
            }
        }
        let method = match ingestion {
            FileIngestion::Recursive => "r:",
            FileIngestion::Flat => "",
        };
        let inner = Sha256Hash::digest(format!("fixed:out:{method}{algo}:{hex_digest}:"));
        self.make_store_path("output:out", &inner, name)
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of output `output` of a derivation named `drv_name`.
pub fn output_path_name(drv_name: &str, output: &str) -> String {
    if output == "out" {
        drv_name.to_string()
    } else {
        format!("{drv_name}-{output}")
    }
}

/// Fold a 32-byte digest into 20 bytes: `out[i % 20] ^= h[i]`.
pub fn compress20(h: &[u8; 32]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, b) in h.iter().enumerate() {
        out[i % 20] ^= b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nix() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    #[test]
    fn text_path_vectors() {
        let d = nix();
        let foo = d
            .text_path("foo", &Sha256Hash::digest(b"bar"), &[])
            .unwrap();
        assert_eq!(
            d.display(&foo),
            "/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo"
        );
        let baz = d
            .text_path(
                "baz",
                &Sha256Hash::digest(d.display(&foo).as_bytes()),
                std::slice::from_ref(&foo),
            )
            .unwrap();
        assert_eq!(
            d.display(&baz),
            "/nix/store/5xd714cbfnkz02h2vbsj4fm03x3f15nf-baz"
        );
    }

    #[test]
    fn store_dir_is_part_of_the_hash() {
        let h = Sha256Hash::digest(b"bar");
        let a = nix().text_path("foo", &h, &[]).unwrap();
        let b = StoreDir::new("/ferry/store")
            .unwrap()
            .text_path("foo", &h, &[])
            .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn fixed_output_vector_from_formats_md() {
        // `bar` fixed-output r:sha256 08813c... -> 4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar
        let h =
            Sha256Hash::parse("08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba")
                .unwrap();
        let p = nix()
            .fixed_output_path("bar", FileIngestion::Recursive, &h)
            .unwrap();
        assert_eq!(p.base_name(), "4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar");
    }

    #[test]
    fn parse_and_validate() {
        let d = nix();
        let p = d
            .parse("/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo")
            .unwrap();
        assert_eq!(p.name(), "foo");
        assert_eq!(p.hash_part(), "vxjiwkjkn7x4079qvh1jkl5pn05j2aw0");
        let (q, rest) = d
            .parse_inside("/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo/bin/x")
            .unwrap();
        assert_eq!((q, rest), (p.clone(), "/bin/x"));
        assert_eq!(StorePath::from_parts(&p.digest(), "foo").unwrap(), p);

        assert!(matches!(
            d.parse("/gnu/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo"),
            Err(StorePathError::NotInStore(..))
        ));
        assert!(matches!(
            d.parse("/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0"),
            Err(StorePathError::TooShort(_))
        ));
        assert!(matches!(
            d.parse("/nix/store/exjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo"),
            Err(StorePathError::BadHash(..))
        ));
        assert!(matches!(
            d.parse("/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0_foo"),
            Err(StorePathError::NoDash(_))
        ));
        assert!(matches!(
            validate_name("a b"),
            Err(StorePathError::BadNameChar(_, ' '))
        ));
        // Nix 2.8 accepts a leading period (`nix-store --add .foo`).
        assert!(validate_name(".hidden").is_ok());
        assert!(validate_name(&"a".repeat(211)).is_ok());
        assert!(matches!(
            validate_name(&"a".repeat(212)),
            Err(StorePathError::NameTooLong(..))
        ));
        assert!(validate_name("foo-1.2+x_y?z=w").is_ok());
        for bad in ["store", "/nix/store/", "/a//b", "/a/../b", "/"] {
            assert!(StoreDir::new(bad).is_err(), "{bad}");
        }
    }
}
