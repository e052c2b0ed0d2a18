//! Hashes of any algorithm Nix accepts for content addresses (md5, sha1,
//! sha256, sha512), their spellings, and fixed-output hashes.
//!
//! A fixed-output derivation promises its output's hash; the builder must
//! hash the output the same way and compare. This module parses every
//! spelling Nix 2.8 accepts (`src/libutil/hash.cc`): base16 (either case),
//! nix32 and base64 told apart by length, typed `ALGO:DIGEST`, and SRI
//! `ALGO-BASE64`; it renders them back (SRI in error messages, typed nix32
//! in the `ca` field, base16 in `.drv` files), and hashes streams with any
//! of the four algorithms. [`crate::hash::Sha256Hash`] stays the type of
//! NAR hashes and store path digests; this is for content addresses.

use std::fmt;
use std::io::{self, Write};

// md5, sha1 and sha2 share one `Digest` trait (digest 0.11).
use sha2::Digest as _;
use thiserror::Error;

use crate::nix32;
use crate::store_path::FileIngestion;

/// A hash algorithm Nix accepts for content addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    /// Nix's `parseHashTypeOpt`: exactly `md5`, `sha1`, `sha256`, `sha512`.
    pub fn parse(s: &str) -> Option<HashAlgo> {
        match s {
            "md5" => Some(HashAlgo::Md5),
            "sha1" => Some(HashAlgo::Sha1),
            "sha256" => Some(HashAlgo::Sha256),
            "sha512" => Some(HashAlgo::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            HashAlgo::Md5 => 16,
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }

    pub fn base16_len(self) -> usize {
        self.size() * 2
    }

    pub fn nix32_len(self) -> usize {
        nix32::encoded_len(self.size())
    }

    /// Padded base64 length, as Nix computes it.
    pub fn base64_len(self) -> usize {
        ((4 * self.size() / 3) + 3) & !3
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A digest with its algorithm.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash {
    algo: HashAlgo,
    bytes: Vec<u8>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ContentHashError {
    #[error("unknown hash algorithm {0:?}: use md5, sha1, sha256 or sha512")]
    UnknownAlgo(String),
    #[error("hash {0:?} does not say its algorithm (write it as ALGO:DIGEST or in SRI form ALGO-BASE64)")]
    NoAlgo(String),
    #[error("hash {hash:?} should have type {expected}")]
    WrongAlgo { hash: String, expected: HashAlgo },
    #[error("hash {hash:?} has the wrong length for {algo} ({} base16, {} nix32 or {} base64 digits)", .algo.base16_len(), .algo.nix32_len(), .algo.base64_len())]
    Length { hash: String, algo: HashAlgo },
    #[error("invalid {form} {algo} hash {hash:?}")]
    Digits {
        form: &'static str,
        algo: HashAlgo,
        hash: String,
    },
}

impl Hash {
    /// The digest of `data`.
    pub fn digest(algo: HashAlgo, data: impl AsRef<[u8]>) -> Hash {
        let mut h = Hasher::new(algo);
        h.update(data.as_ref());
        h.finish()
    }

    /// From raw digest bytes, which must have the algorithm's size.
    pub fn from_bytes(algo: HashAlgo, bytes: &[u8]) -> Option<Hash> {
        (bytes.len() == algo.size()).then(|| Hash {
            algo,
            bytes: bytes.to_vec(),
        })
    }

    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Nix's `Hash::parseAny`: `ALGO:DIGEST`, `ALGO-BASE64` (SRI) or a bare
    /// digest when `algo` is known from context; a prefix and `algo` must agree.
    pub fn parse_any(s: &str, algo: Option<HashAlgo>) -> Result<Hash, ContentHashError> {
        let (prefix, rest, sri) = split_prefix(s)?;
        let algo = match (prefix, algo) {
            (Some(p), Some(a)) if p != a => {
                return Err(ContentHashError::WrongAlgo {
                    hash: s.to_string(),
                    expected: a,
                })
            }
            (Some(p), _) => p,
            (None, Some(a)) => a,
            (None, None) => return Err(ContentHashError::NoAlgo(s.to_string())),
        };
        Hash::parse_body(rest, algo, sri)
    }

    /// Nix's `Hash::parseAnyPrefixed`: the string must name its algorithm.
    pub fn parse_any_prefixed(s: &str) -> Result<Hash, ContentHashError> {
        Hash::parse_any(s, None)
    }

    /// Nix's `Hash::parseSRI`: `ALGO-BASE64` only.
    pub fn parse_sri(s: &str) -> Result<Hash, ContentHashError> {
        let Some((algo, rest)) = s.split_once('-') else {
            return Err(ContentHashError::NoAlgo(s.to_string()));
        };
        let algo = HashAlgo::parse(algo).ok_or(ContentHashError::UnknownAlgo(algo.to_string()))?;
        Hash::parse_body(rest, algo, true)
    }

    /// Nix's `Hash::parseNonSRIUnprefixed`: a bare base16, nix32 or base64
    /// digest (told apart by length), as in a `.drv`'s output hash field.
    pub fn parse_non_sri_unprefixed(s: &str, algo: HashAlgo) -> Result<Hash, ContentHashError> {
        Hash::parse_body(s, algo, false)
    }

    fn parse_body(rest: &str, algo: HashAlgo, sri: bool) -> Result<Hash, ContentHashError> {
        let digits = |form| ContentHashError::Digits {
            form,
            algo,
            hash: rest.to_string(),
        };
        let bytes = if !sri && rest.len() == algo.base16_len() {
            // Nix accepts upper case base16 too.
            hex::decode(rest).map_err(|_| digits("base16"))?
        } else if !sri && rest.len() == algo.nix32_len() {
            nix32::decode_len(rest, algo.size()).map_err(|_| digits("nix32"))?
        } else if sri || rest.len() == algo.base64_len() {
            let d = base64_decode(rest).ok_or_else(|| digits("base64"))?;
            if d.len() != algo.size() {
                return Err(digits(if sri { "SRI" } else { "base64" }));
            }
            d
        } else {
            return Err(ContentHashError::Length {
                hash: rest.to_string(),
                algo,
            });
        };
        Ok(Hash { algo, bytes })
    }

    pub fn to_base16(&self) -> String {
        hex::encode(&self.bytes)
    }

    pub fn to_nix32(&self) -> String {
        nix32::encode(&self.bytes)
    }

    pub fn to_base64(&self) -> String {
        base64_encode(&self.bytes)
    }

    /// `ALGO-BASE64`, how Nix shows hashes in messages.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo, self.to_base64())
    }

    /// `ALGO:NIX32`, how Nix records content addresses.
    pub fn to_typed_nix32(&self) -> String {
        format!("{}:{}", self.algo, self.to_nix32())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sri())
    }
}

impl fmt::Display for Hash {
    /// SRI, as Nix's error messages show hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sri())
    }
}

/// `ALGO:` or `ALGO-` (SRI) before the digest, as Nix's
/// `getParsedTypeAndSRI` splits it: a ':' is looked for first.
fn split_prefix(s: &str) -> Result<(Option<HashAlgo>, &str, bool), ContentHashError> {
    let (prefix, rest, sri) = match s.split_once(':') {
        Some((p, r)) => (Some(p), r, false),
        None => match s.split_once('-') {
            Some((p, r)) => (Some(p), r, true),
            None => (None, s, false),
        },
    };
    let algo = match prefix {
        Some(p) => Some(HashAlgo::parse(p).ok_or(ContentHashError::UnknownAlgo(p.to_string()))?),
        None => None,
    };
    Ok((algo, rest, sri))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Nix's `base64Decode`: stops at the first '=', skips newlines, refuses
/// other characters outside the alphabet.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    let (mut d, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        if c == b'\n' {
            continue;
        }
        let digit = BASE64.iter().position(|&a| a == c)? as u32;
        bits += 6;
        d = (d << 6 | digit) & 0xffff;
        if bits >= 8 {
            out.push((d >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

/// A fixed-output derivation's promise: how the output is hashed and the
/// hash it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedOutputHash {
    pub method: FileIngestion,
    pub hash: Hash,
}

impl FixedOutputHash {
    /// From a `.drv` output's `hashAlgo` (`[r:]ALGO`) and `hash` fields, as
    /// Nix's `parseDerivationOutput` reads them.
    pub fn from_drv_output(hash_algo: &str, hash: &str) -> Result<Self, ContentHashError> {
        let (method, algo) = match hash_algo.strip_prefix("r:") {
            Some(a) => (FileIngestion::Recursive, a),
            None => (FileIngestion::Flat, hash_algo),
        };
        let algo =
            HashAlgo::parse(algo).ok_or_else(|| ContentHashError::UnknownAlgo(algo.to_string()))?;
        Ok(FixedOutputHash {
            method,
            hash: Hash::parse_non_sri_unprefixed(hash, algo)?,
        })
    }

    /// `r:ALGO` or `ALGO`: the `.drv`'s `hashAlgo` field.
    pub fn method_algo(&self) -> String {
        format!("{}{}", method_prefix(self.method), self.hash.algo)
    }

    /// The `ca` field Nix records: `fixed:[r:]ALGO:NIX32`.
    pub fn to_ca(&self) -> String {
        format!(
            "fixed:{}{}",
            method_prefix(self.method),
            self.hash.to_typed_nix32()
        )
    }
}

fn method_prefix(m: FileIngestion) -> &'static str {
    match m {
        FileIngestion::Recursive => "r:",
        FileIngestion::Flat => "",
    }
}

/// Hashes a stream with any [`HashAlgo`].
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: HashAlgo) -> Hasher {
        match algo {
            HashAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
            HashAlgo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Hash {
        let (algo, bytes) = match self {
            Hasher::Md5(h) => (HashAlgo::Md5, h.finalize().to_vec()),
            Hasher::Sha1(h) => (HashAlgo::Sha1, h.finalize().to_vec()),
            Hasher::Sha256(h) => (HashAlgo::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (HashAlgo::Sha512, h.finalize().to_vec()),
        };
        Hash { algo, bytes }
    }
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Digests of "abc" (FIPS / RFC 1321 vectors), with the nix32 forms that
    // `nix-hash --type ALGO --to-base32` prints.
    const ABC: [(HashAlgo, &str, &str); 4] = [
        (
            HashAlgo::Md5,
            "900150983cd24fb0d6963f7d28e17f72",
            "3jgzhjhz9zjvbb0kyj7jc500ch",
        ),
        (
            HashAlgo::Sha1,
            "a9993e364706816aba3e25717850c26c9cd0d89d",
            "kpcd173cq987hw957sx6m0868wv3x6d9",
        ),
        (
            HashAlgo::Sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
        ),
        (
            HashAlgo::Sha512,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            "2gs8k559z4rlahfx0y688s49m2vvszylcikrfinm30ly9rak69236nkam5ydvly1ai7xac99vxfc4ii84hawjbk876blyk1jfhkbbyx",
        ),
    ];

    #[test]
    fn every_algorithm_hashes_and_renders_like_nix() {
        for (algo, hex, n32) in ABC {
            let h = Hash::digest(algo, b"abc");
            assert_eq!(h.to_base16(), hex, "{algo}");
            assert_eq!(h.to_nix32(), n32, "{algo}");
            assert_eq!(h.to_base64().len(), algo.base64_len(), "{algo}");
            assert_eq!(h.to_typed_nix32(), format!("{algo}:{n32}"));
        }
        // The SRI value nix_conformance.rs's fixedSha512Sri uses.
        assert_eq!(
            Hash::digest(HashAlgo::Sha512, b"abc").to_sri(),
            "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw=="
        );
        assert_eq!(
            Hash::digest(HashAlgo::Sha256, b"abc").to_sri(),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn every_spelling_parses_to_the_same_hash() {
        for (algo, hex, _) in ABC {
            let h = Hash::digest(algo, b"abc");
            let bare = [
                hex.to_string(),
                hex.to_uppercase(),
                h.to_nix32(),
                h.to_base64(),
            ];
            for form in &bare {
                assert_eq!(Hash::parse_non_sri_unprefixed(form, algo).unwrap(), h);
                assert_eq!(Hash::parse_any(form, Some(algo)).unwrap(), h);
                let typed = format!("{algo}:{form}");
                assert_eq!(Hash::parse_any_prefixed(&typed).unwrap(), h, "{typed}");
                assert_eq!(Hash::parse_any(&typed, Some(algo)).unwrap(), h);
            }
            assert_eq!(Hash::parse_any_prefixed(&h.to_sri()).unwrap(), h);
            assert_eq!(Hash::parse_sri(&h.to_sri()).unwrap(), h);
            // SRI without its padding, as Nix accepts it.
            let unpadded = h.to_sri().trim_end_matches('=').to_string();
            assert_eq!(Hash::parse_sri(&unpadded).unwrap(), h);
        }
    }

    #[test]
    fn bad_spellings_are_refused_with_the_reason() {
        let hex = ABC[2].1;
        assert!(matches!(
            Hash::parse_any(hex, None),
            Err(ContentHashError::NoAlgo(_))
        ));
        assert!(matches!(
            Hash::parse_any(&format!("sha1:{hex}"), Some(HashAlgo::Sha256)),
            Err(ContentHashError::WrongAlgo { .. })
        ));
        assert!(matches!(
            Hash::parse_any_prefixed(&format!("sha3:{hex}")),
            Err(ContentHashError::UnknownAlgo(_))
        ));
        assert!(matches!(
            Hash::parse_non_sri_unprefixed(&hex[1..], HashAlgo::Sha256),
            Err(ContentHashError::Length { .. })
        ));
        let bad_hex = format!("g{}", &hex[1..]);
        assert!(matches!(
            Hash::parse_non_sri_unprefixed(&bad_hex, HashAlgo::Sha256),
            Err(ContentHashError::Digits { form: "base16", .. })
        ));
        // nix32 with the forbidden letter 'e', and with overflowing high bits.
        let n32 = ABC[2].2;
        for bad in [format!("e{}", &n32[1..]), format!("z{}", &n32[1..])] {
            assert!(matches!(
                Hash::parse_non_sri_unprefixed(&bad, HashAlgo::Sha256),
                Err(ContentHashError::Digits { form: "nix32", .. })
            ));
        }
        // An SRI body is never read as base16 or nix32; a short one is refused.
        assert!(Hash::parse_sri(&format!("sha256-{hex}")).is_err());
        assert!(Hash::parse_sri("sha256-AAAA").is_err());
        assert!(Hash::parse_sri("sha256-#").is_err());
        // A `.drv` field holds no prefix: an SRI there is the wrong length.
        let sri = Hash::digest(HashAlgo::Sha256, b"abc").to_sri();
        assert!(Hash::parse_non_sri_unprefixed(&sri, HashAlgo::Sha256).is_err());
    }

    #[test]
    fn fixed_output_hashes_read_drv_fields_and_render_ca_as_nix() {
        let f = FixedOutputHash::from_drv_output("r:sha256", ABC[2].1).unwrap();
        assert_eq!(f.method, FileIngestion::Recursive);
        assert_eq!(f.method_algo(), "r:sha256");
        assert_eq!(
            f.to_ca(),
            "fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
        let flat = FixedOutputHash::from_drv_output("sha1", ABC[1].2).unwrap();
        assert_eq!(flat.method, FileIngestion::Flat);
        assert_eq!(flat.to_ca(), format!("fixed:sha1:{}", ABC[1].2));
        assert_eq!(
            FixedOutputHash::from_drv_output("md5", ABC[0].1)
                .unwrap()
                .to_ca(),
            format!("fixed:md5:{}", ABC[0].2)
        );
        assert!(matches!(
            FixedOutputHash::from_drv_output("r:sha3", ABC[2].1),
            Err(ContentHashError::UnknownAlgo(_))
        ));
        assert!(FixedOutputHash::from_drv_output("sha256", "").is_err());
    }

    #[test]
    fn hasher_streams() {
        for (algo, hex, _) in ABC {
            let mut h = Hasher::new(algo);
            h.write_all(b"a").unwrap();
            h.write_all(b"bc").unwrap();
            assert_eq!(h.finish().to_base16(), hex);
        }
    }
}
