//! Ed25519 signing keys in Guix's (libgcrypt's) s-expression shapes, and
//! their files in the configuration directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::sexp::{self, Sexp};
use crate::TrustError;

pub const PUBLIC_KEY_FILE: &str = "signing-key.pub";
pub const SECRET_KEY_FILE: &str = "signing-key.sec";

/// A public key: `(public-key (ecc (curve Ed25519) (flags eddsa) (q #HEX#)))`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

fn ecc(items: Vec<Sexp>) -> Sexp {
    let mut v = vec![
        Sexp::tagged("curve", [Sexp::atom("Ed25519")]),
        Sexp::tagged("flags", [Sexp::atom("eddsa")]),
    ];
    v.extend(items);
    Sexp::tagged("ecc", v)
}

impl PublicKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    pub fn to_sexp(&self) -> Sexp {
        Sexp::tagged(
            "public-key",
            [ecc(vec![Sexp::tagged(
                "q",
                [Sexp::Bytes(self.0.as_bytes().to_vec())],
            )])],
        )
    }

    /// Read `(public-key (ecc (curve Ed25519) ... (q #HEX#)))`.
    pub fn from_sexp(s: &Sexp) -> Result<Self, TrustError> {
        let bad = |why: &str| TrustError::NotAKey(why.to_string());
        if s.tag() != Some("public-key") {
            return Err(bad("expected (public-key (ecc ...))"));
        }
        let ecc = s
            .find("ecc")
            .ok_or_else(|| bad("no (ecc ...) inside (public-key ...)"))?;
        match ecc.atom_of("curve") {
            Some("Ed25519") => {}
            other => return Err(bad(&format!("curve {other:?} is not Ed25519"))),
        }
        let q = ecc.bytes_of("q").ok_or_else(|| bad("no (q #HEX#)"))?;
        let q: [u8; 32] = q.try_into().map_err(|_| bad("q is not 32 bytes"))?;
        VerifyingKey::from_bytes(&q)
            .map(PublicKey)
            .map_err(|_| bad("q is not a point of the Ed25519 curve"))
    }

    pub fn parse(text: &str) -> Result<Self, TrustError> {
        let s = sexp::parse(text).map_err(|e| TrustError::NotAKey(e.to_string()))?;
        Self::from_sexp(&s)
    }

    /// A short fingerprint to name the key by: 16 hex digits of SHA-256 of
    /// the key, in groups of four.
    pub fn fingerprint(&self) -> String {
        let h = Sha256::digest(self.0.as_bytes());
        let hexed = hex::encode_upper(&h[..8]);
        hexed
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub(crate) fn verify(&self, message: &[u8], sig: &ed25519_dalek::Signature) -> bool {
        self.0.verify(message, sig).is_ok()
    }
}

/// A secret key: `(private-key (ecc (curve Ed25519) (flags eddsa) (q #PUB#) (d #SECRET#)))`.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SecretKey, TrustError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| TrustError::Io {
            context: "reading random bytes for a new key".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn to_sexp(&self) -> Sexp {
        Sexp::tagged(
            "private-key",
            [ecc(vec![
                Sexp::tagged(
                    "q",
                    [Sexp::Bytes(self.0.verifying_key().as_bytes().to_vec())],
                ),
                Sexp::tagged("d", [Sexp::Bytes(self.0.to_bytes().to_vec())]),
            ])],
        )
    }

    pub fn parse(text: &str) -> Result<Self, TrustError> {
        let bad = |why: &str| TrustError::NotAKey(format!("secret key: {why}"));
        let s = sexp::parse(text).map_err(|e| bad(&e.to_string()))?;
        if s.tag() != Some("private-key") {
            return Err(bad("expected (private-key (ecc ...))"));
        }
        let ecc = s.find("ecc").ok_or_else(|| bad("no (ecc ...)"))?;
        let d: [u8; 32] = ecc
            .bytes_of("d")
            .ok_or_else(|| bad("no (d #HEX#)"))?
            .try_into()
            .map_err(|_| bad("d is not 32 bytes"))?;
        let key = SigningKey::from_bytes(&d);
        if let Some(q) = ecc.bytes_of("q") {
            if q != key.verifying_key().as_bytes() {
                return Err(bad("q does not match d"));
            }
        }
        Ok(SecretKey(key))
    }

    pub(crate) fn sign(&self, message: &[u8]) -> ed25519_dalek::Signature {
        self.0.sign(message)
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> TrustError {
    move |source| TrustError::Io { context, source }
}

/// The key pair's files in `config_dir`.
pub fn key_files(config_dir: &Path) -> (PathBuf, PathBuf) {
    (
        config_dir.join(PUBLIC_KEY_FILE),
        config_dir.join(SECRET_KEY_FILE),
    )
}

/// Write a new key pair; an existing pair is kept unless `force`.
pub fn generate_key_files(config_dir: &Path, force: bool) -> Result<PublicKey, TrustError> {
    let (pub_path, sec_path) = key_files(config_dir);
    if !force && (pub_path.exists() || sec_path.exists()) {
        return Err(TrustError::KeyExists(sec_path));
    }
    fs::create_dir_all(config_dir).map_err(io(format!("creating {}", config_dir.display())))?;
    let key = SecretKey::generate()?;
    write_atomically(&sec_path, format!("{}\n", key.to_sexp()).as_bytes(), 0o600)?;
    write_atomically(
        &pub_path,
        format!("{}\n", key.public().to_sexp()).as_bytes(),
        0o644,
    )?;
    Ok(key.public())
}

/// Load the secret key, refusing one that others could read.
pub fn load_secret_key(config_dir: &Path) -> Result<SecretKey, TrustError> {
    let (_, sec_path) = key_files(config_dir);
    let meta = fs::metadata(&sec_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TrustError::NoKey(sec_path.clone())
        } else {
            TrustError::Io {
                context: format!("reading {}", sec_path.display()),
                source: e,
            }
        }
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(TrustError::KeyTooOpen {
            path: sec_path,
            mode: mode & 0o777,
        });
    }
    let text =
        fs::read_to_string(&sec_path).map_err(io(format!("reading {}", sec_path.display())))?;
    SecretKey::parse(&text)
}

/// Load the secret key, generating a pair first if there is none. Returns
/// whether one was generated.
pub fn load_or_generate_secret_key(config_dir: &Path) -> Result<(SecretKey, bool), TrustError> {
    match load_secret_key(config_dir) {
        Ok(k) => Ok((k, false)),
        Err(TrustError::NoKey(_)) => {
            generate_key_files(config_dir, false)?;
            Ok((load_secret_key(config_dir)?, true))
        }
        Err(e) => Err(e),
    }
}

/// Write `path` so that readers see the old or the new contents, never a
/// part: a temporary file, synced, renamed over it.
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<(), TrustError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io(format!("writing {}", path.display())))
}
