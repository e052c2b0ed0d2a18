//! Nix's signatures (`NAME:BASE64`, Ed25519 over a path's fingerprint
//! `1;PATH;NARHASH;NARSIZE;REFS`) and its key files' forms: a public key
//! `NAME:BASE64(32 bytes)` as in `trusted-public-keys`, a secret key
//! `NAME:BASE64(64 bytes)` as `nix-store --generate-binary-cache-key`
//! writes it. What is signed (the fingerprint) is the caller's: the
//! protocol crate computes it (`ValidPathInfo::fingerprint`).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::TrustError;

/// A public key of `trusted-public-keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixPublicKey {
    pub name: String,
    key: VerifyingKey,
}

/// A secret key (`nix-store --generate-binary-cache-key`'s file).
pub struct NixSecretKey {
    pub name: String,
    key: SigningKey,
}

/// Names the key and its public half, never the secret.
impl std::fmt::Debug for NixSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NixSecretKey")
            .field("public", &self.public().render())
            .finish_non_exhaustive()
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Padded base64, strict (Nix writes it so).
fn decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for chunk in b.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                b'=' if i >= 2 => {
                    pad += 1;
                    0
                }
                _ if pad > 0 => return None,
                _ => ALPHABET.iter().position(|&a| a == c)? as u32,
            };
            n = n << 6 | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

fn encode(data: &[u8]) -> String {
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let mut b = [0u8; 3];
        b[..chunk.len()].copy_from_slice(chunk);
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// `NAME:BASE64` split, the name non-empty.
fn split(s: &str) -> Option<(&str, Vec<u8>)> {
    let (name, b64) = s.trim().split_once(':')?;
    (!name.is_empty()).then_some(())?;
    Some((name, decode(b64)?))
}

impl NixPublicKey {
    pub fn parse(s: &str) -> Result<Self, TrustError> {
        let bad = || {
            TrustError::NotAKey(format!(
                "{s:?} is not a Nix public key (NAME:BASE64 of 32 bytes)"
            ))
        };
        let (name, bytes) = split(s).ok_or_else(bad)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        Ok(NixPublicKey {
            name: name.to_string(),
            key,
        })
    }

    /// `NAME:BASE64`, as Nix writes it.
    pub fn render(&self) -> String {
        format!("{}:{}", self.name, encode(self.key.as_bytes()))
    }
}

impl NixSecretKey {
    pub fn parse(s: &str) -> Result<Self, TrustError> {
        let bad = || TrustError::NotAKey("not a Nix secret key (NAME:BASE64 of 64 bytes)".into());
        let (name, bytes) = split(s).ok_or_else(bad)?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| bad())?;
        let key = SigningKey::from_keypair_bytes(&bytes).map_err(|_| bad())?;
        Ok(NixSecretKey {
            name: name.to_string(),
            key,
        })
    }

    /// The key of a 32-byte seed (tests; Nix's own keys come from files).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Self {
        NixSecretKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(seed),
        }
    }

    pub fn public(&self) -> NixPublicKey {
        NixPublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Nix's signature of `fingerprint`: `NAME:BASE64`.
    pub fn sign(&self, fingerprint: &str) -> String {
        let sig = self.key.sign(fingerprint.as_bytes());
        format!("{}:{}", self.name, encode(&sig.to_bytes()))
    }
}

/// Is `sig` a valid signature of `fingerprint` by one of `keys` (found by
/// name, as Nix's `verifyDetached`)?
pub fn verify(keys: &[NixPublicKey], fingerprint: &str, sig: &str) -> bool {
    let Some((name, bytes)) = split(sig) else {
        return false;
    };
    let Ok(bytes) = <[u8; 64]>::try_from(bytes) else {
        return false;
    };
    let sig = Signature::from_bytes(&bytes);
    keys.iter()
        .filter(|k| k.name == name)
        .any(|k| k.key.verify(fingerprint.as_bytes(), &sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for n in 0..70 {
            let data: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(decode(&encode(&data)).unwrap(), data);
        }
        assert!(decode("abc").is_none() && decode("a=bc").is_none());
    }

    #[test]
    fn sign_and_verify_as_nix() {
        let mut pair = [0u8; 64];
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        pair[..32].copy_from_slice(&sk.to_bytes());
        pair[32..].copy_from_slice(sk.verifying_key().as_bytes());
        let secret = NixSecretKey::parse(&format!("test-1:{}", encode(&pair))).unwrap();
        let public = secret.public();
        assert_eq!(NixPublicKey::parse(&public.render()).unwrap(), public);
        let sig = secret.sign("1;/nix/store/x;sha256:y;1;");
        assert!(sig.starts_with("test-1:"));
        assert!(verify(
            std::slice::from_ref(&public),
            "1;/nix/store/x;sha256:y;1;",
            &sig
        ));
        assert!(!verify(
            std::slice::from_ref(&public),
            "1;/nix/store/z;sha256:y;1;",
            &sig
        ));
        let other = NixPublicKey {
            name: "other".into(),
            ..public.clone()
        };
        assert!(
            !verify(&[other], "1;/nix/store/x;sha256:y;1;", &sig),
            "found by name"
        );
        assert!(NixPublicKey::parse("nocolon").is_err());
        assert!(NixPublicKey::parse("k:AAAA").is_err());
    }
}
