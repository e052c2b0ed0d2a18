//! Trust: Ed25519 signing keys, the ACL of authorized keys, and signing and
//! verifying export-bundle items, in Guix's s-expression shapes.
//!
//! "All the fuss with keys is here to express pairwise mutual trust
//! relations between the master and the build machines": a store accepts
//! an item from another machine only when it is signed by a key in its ACL.
//!
//! Owns: key files in the configuration directory (`signing-key.pub`,
//! `signing-key.sec`, mode 0600), the `acl` file, and the decision "is this
//! item signed by a key we trust". Must never: touch the store database or
//! write store paths; it answers [`ferry_store::ImportCheck`] and signs
//! digests handed to it.
#![forbid(unsafe_code)]

pub mod acl;
pub mod keys;
pub mod nix_signature;
pub mod sexp;
pub mod signature;

use std::path::PathBuf;

pub use acl::Acl;
pub use keys::{PublicKey, SecretKey};

use ferry_formats::Sha256Hash;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrustError {
    #[error("not a public key: {0} (a key looks like (public-key (ecc (curve Ed25519) (flags eddsa) (q #HEX#))); get one with `ferry archive --generate-key`, then the file signing-key.pub)")]
    NotAKey(String),
    #[error("a key pair already exists ({0}); use --force to replace it (machines that authorized the old public key will refuse the new one)")]
    KeyExists(PathBuf),
    #[error("no signing key at {0}; create one with `ferry archive --generate-key`")]
    NoKey(PathBuf),
    #[error("the secret key {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`", path = path.display())]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error("the ACL {path}: {why}")]
    BadAcl { path: PathBuf, why: String },
    #[error("it is not signed; this store only accepts items signed by an authorized key")]
    Unsigned,
    #[error("it is signed by key {fingerprint}, which is not authorized here; if you trust that machine, run `ferry archive --authorize` on this machine with its signing-key.pub on standard input:\n  echo '{key}' | ferry archive --authorize")]
    UnknownKey { fingerprint: String, key: String },
    #[error("its contents changed after signing: the signed hash is {expected}, the hash of what arrived is {found}")]
    HashMismatch { expected: String, found: String },
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Accepts bundle items signed by a key of the ACL.
pub struct AclCheck {
    pub acl: Acl,
}

impl ferry_store::ImportCheck for AclCheck {
    fn check(
        &self,
        _path: &str,
        digest: &Sha256Hash,
        signature: Option<&[u8]>,
    ) -> Result<(), String> {
        signature::verify(&self.acl, digest, signature)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_and_each_refusal() {
        let k = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let mut acl = Acl::default();
        assert!(acl.authorize(k.public()));
        assert!(!acl.authorize(k.public()));
        let d = Sha256Hash::digest(b"item");
        let sig = signature::sign(&k, &d);
        assert_eq!(signature::verify(&acl, &d, Some(&sig)).unwrap(), k.public());
        assert!(matches!(
            signature::verify(&acl, &d, None),
            Err(TrustError::Unsigned)
        ));
        let foreign = signature::sign(&other, &d);
        let e = signature::verify(&acl, &d, Some(&foreign)).unwrap_err();
        assert!(
            matches!(&e, TrustError::UnknownKey { fingerprint, .. } if *fingerprint == other.public().fingerprint())
        );
        assert!(e.to_string().contains("ferry archive --authorize"));
        let changed = Sha256Hash::digest(b"changed");
        let e = signature::verify(&acl, &changed, Some(&sig)).unwrap_err();
        assert!(matches!(e, TrustError::HashMismatch { .. }), "{e}");
        // A signature whose hash was edited to match no longer verifies.
        let forged = String::from_utf8(sig.clone()).unwrap().replace(
            &d.to_base16().to_uppercase(),
            &changed.to_base16().to_uppercase(),
        );
        let e = signature::verify(&acl, &changed, Some(forged.as_bytes())).unwrap_err();
        assert!(matches!(e, TrustError::BadSignature(_)), "{e}");
        assert!(acl.deauthorize(&k.public()));
        assert!(matches!(
            signature::verify(&acl, &d, Some(&sig)),
            Err(TrustError::UnknownKey { .. })
        ));
    }

    #[test]
    fn key_files_acl_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let public = keys::generate_key_files(dir.path(), false).unwrap();
        assert!(matches!(
            keys::generate_key_files(dir.path(), false),
            Err(TrustError::KeyExists(_))
        ));
        let (pub_path, sec_path) = keys::key_files(dir.path());
        let mode = std::fs::metadata(&sec_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&pub_path).unwrap();
        assert!(
            text.starts_with("(public-key (ecc (curve Ed25519) (flags eddsa) (q #"),
            "{text}"
        );
        assert_eq!(PublicKey::parse(&text).unwrap(), public);
        assert_eq!(keys::load_secret_key(dir.path()).unwrap().public(), public);
        std::fs::set_permissions(&sec_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            keys::load_secret_key(dir.path()),
            Err(TrustError::KeyTooOpen { .. })
        ));
        assert!(keys::generate_key_files(dir.path(), true).unwrap() != public);

        let mut acl = Acl::load(dir.path()).unwrap();
        assert!(acl.keys().is_empty());
        acl.authorize(public);
        acl.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(Acl::path(dir.path())).unwrap();
        assert!(text.starts_with("(acl (entry (public-key (ecc"), "{text}");
        assert!(text.contains("(tag (guix import))"), "{text}");
        assert_eq!(Acl::load(dir.path()).unwrap(), acl);
        for bad in [
            "hello",
            "(public-key (ecc (curve NIST) (q #00#)))",
            "(public-key (ecc (curve Ed25519) (q #0011#)))",
        ] {
            assert!(
                matches!(PublicKey::parse(bad), Err(TrustError::NotAKey(_))),
                "{bad}"
            );
        }
    }

    /// Known answers: Ed25519 is deterministic, so a fixed key signs to
    /// fixed bytes. RFC 8032's test 1 for the signature itself; for the
    /// signature slot and the fingerprint, the bytes Ferry wrote with
    /// ed25519-dalek 2 and sha2 0.10 (signatures made before the move to
    /// ed25519-dalek 3 and sha2 0.11 must stay what they were).
    #[test]
    fn a_fixed_key_signs_to_fixed_bytes() {
        let d = "9D61B19DEFFD5A60BA844AF492EC2CC44449C5697B326919703BAC031CAE7F60";
        let q = "D75A980182B10AB7D54BFED3C964073A0EE172F3DAA62325AF021A68F707511A";
        let k = SecretKey::parse(&format!(
            "(private-key (ecc (curve Ed25519) (flags eddsa) (q #{q}#) (d #{d}#)))"
        ))
        .unwrap();
        assert_eq!(hex::encode_upper(k.public().as_bytes()), q);
        assert_eq!(
            hex::encode(k.sign(b"").to_bytes()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        let slot = signature::sign(&k, &Sha256Hash::digest(b"item"));
        assert_eq!(
            String::from_utf8(slot).unwrap(),
            "(signature (data (flags eddsa) (hash sha256 #4A33EACD5FA65F2B2E2871CD131286B53C415B131666D71173BB6E3FE59361B3#)) \
             (sig-val (eddsa (r #C5E1276121BC134C7400BBF06C81EE0B6DBD40B0226F85707737E8960797CCCF#) \
             (s #EE6AB5B934EB63F2B02D11DCB60856BDABC8189465170D61F948361A0A99C202#))) \
             (public-key (ecc (curve Ed25519) (flags eddsa) \
             (q #D75A980182B10AB7D54BFED3C964073A0EE172F3DAA62325AF021A68F707511A#))))"
        );
        assert_eq!(k.public().fingerprint(), "21FE 31DF A154 A261");
    }
}
