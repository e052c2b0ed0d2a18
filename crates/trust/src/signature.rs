//! Signing export-bundle items and checking them against the ACL.
//!
//! A signature is Guix's shape of a signed hash:
//! `(signature (data (flags eddsa) (hash sha256 #DIGEST#)) (sig-val (eddsa (r #R#) (s #S#))) (public-key ...))`,
//! over the SHA-256 of the item from its NAR through its deriver. Carrying
//! the digest and the key lets an import say exactly what is wrong: an
//! unknown key (with its fingerprint), a changed item (the digest signed and
//! the one found), or a forged signature.

use ed25519_dalek::Signature;
use ferry_formats::Sha256Hash;

use crate::acl::Acl;
use crate::keys::{PublicKey, SecretKey};
use crate::sexp::{self, Sexp};
use crate::TrustError;

/// The signature slot's bytes for `digest`.
pub fn sign(key: &SecretKey, digest: &Sha256Hash) -> Vec<u8> {
    let sig = key.sign(digest.as_bytes()).to_bytes();
    let (r, s) = (sig[..32].to_vec(), sig[32..].to_vec());
    Sexp::tagged(
        "signature",
        [
            Sexp::tagged(
                "data",
                [
                    Sexp::tagged("flags", [Sexp::atom("eddsa")]),
                    Sexp::tagged(
                        "hash",
                        [
                            Sexp::atom("sha256"),
                            Sexp::Bytes(digest.as_bytes().to_vec()),
                        ],
                    ),
                ],
            ),
            Sexp::tagged(
                "sig-val",
                [Sexp::tagged(
                    "eddsa",
                    [
                        Sexp::tagged("r", [Sexp::Bytes(r)]),
                        Sexp::tagged("s", [Sexp::Bytes(s)]),
                    ],
                )],
            ),
            key.public().to_sexp(),
        ],
    )
    .to_string()
    .into_bytes()
}

/// Check a signature slot against the digest found and the ACL; returns the
/// signing key.
pub fn verify(
    acl: &Acl,
    found: &Sha256Hash,
    signature: Option<&[u8]>,
) -> Result<PublicKey, TrustError> {
    let bytes = signature.ok_or(TrustError::Unsigned)?;
    let bad = |why: &str| TrustError::BadSignature(why.to_string());
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not text"))?;
    let s = sexp::parse(text).map_err(|e| bad(&e.to_string()))?;
    if s.tag() != Some("signature") {
        return Err(bad("expected (signature ...)"));
    }
    let key = PublicKey::from_sexp(
        s.find("public-key")
            .ok_or_else(|| bad("no (public-key ...)"))?,
    )
    .map_err(|e| bad(&e.to_string()))?;
    if !acl.contains(&key) {
        return Err(TrustError::UnknownKey {
            fingerprint: key.fingerprint(),
            key: key.to_sexp().to_string(),
        });
    }
    let data = s.find("data").ok_or_else(|| bad("no (data ...)"))?;
    let signed = match data.find("hash").map(Sexp::rest) {
        Some([Sexp::Atom(algo), Sexp::Bytes(h)]) if algo == "sha256" && h.len() == 32 => {
            Sha256Hash(h.as_slice().try_into().unwrap())
        }
        _ => return Err(bad("no (hash sha256 #DIGEST#) in (data ...)")),
    };
    if signed != *found {
        return Err(TrustError::HashMismatch {
            expected: signed.to_base16(),
            found: found.to_base16(),
        });
    }
    let eddsa = s
        .find("sig-val")
        .and_then(|v| v.find("eddsa"))
        .ok_or_else(|| bad("no (sig-val (eddsa ...))"))?;
    let (r, sv) = match (eddsa.bytes_of("r"), eddsa.bytes_of("s")) {
        (Some(r), Some(sv)) if r.len() == 32 && sv.len() == 32 => (r, sv),
        _ => return Err(bad("r and s must be 32 bytes each")),
    };
    let mut raw = [0u8; 64];
    raw[..32].copy_from_slice(r);
    raw[32..].copy_from_slice(sv);
    if !key.verify(found.as_bytes(), &Signature::from_bytes(&raw)) {
        return Err(bad(&format!(
            "it does not verify with key {}",
            key.fingerprint()
        )));
    }
    Ok(key)
}
