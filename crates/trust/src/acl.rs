//! The ACL: the public keys whose signed items this store accepts, in
//! Guix's shape `(acl (entry (public-key ...) (tag (guix import))) ...)`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::keys::{write_atomically, PublicKey};
use crate::sexp::{self, Sexp};
use crate::TrustError;

pub const ACL_FILE: &str = "acl";

/// The authorized keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    keys: Vec<PublicKey>,
}

impl Acl {
    pub fn path(config_dir: &Path) -> PathBuf {
        config_dir.join(ACL_FILE)
    }

    /// Load the ACL; a missing file is an empty ACL.
    pub fn load(config_dir: &Path) -> Result<Acl, TrustError> {
        let path = Self::path(config_dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Acl::default()),
            Err(e) => {
                return Err(TrustError::Io {
                    context: format!("reading {}", path.display()),
                    source: e,
                })
            }
        };
        let bad = |why: String| TrustError::BadAcl {
            path: path.clone(),
            why,
        };
        let s = sexp::parse(&text).map_err(|e| bad(e.to_string()))?;
        if s.tag() != Some("acl") {
            return Err(bad("expected (acl (entry ...) ...)".into()));
        }
        let mut keys = Vec::new();
        for entry in s.rest() {
            let key = entry
                .find("public-key")
                .ok_or_else(|| bad("an entry without (public-key ...)".into()))?;
            keys.push(PublicKey::from_sexp(key).map_err(|e| bad(e.to_string()))?);
        }
        Ok(Acl { keys })
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    /// Add a key; returns false if it was there already.
    pub fn authorize(&mut self, key: PublicKey) -> bool {
        if self.contains(&key) {
            return false;
        }
        self.keys.push(key);
        true
    }

    /// Remove a key; returns false if it was not there.
    pub fn deauthorize(&mut self, key: &PublicKey) -> bool {
        let before = self.keys.len();
        self.keys.retain(|k| k != key);
        before != self.keys.len()
    }

    pub fn to_sexp(&self) -> Sexp {
        Sexp::tagged(
            "acl",
            self.keys.iter().map(|k| {
                Sexp::tagged(
                    "entry",
                    [
                        k.to_sexp(),
                        Sexp::tagged(
                            "tag",
                            [Sexp::list([Sexp::atom("guix"), Sexp::atom("import")])],
                        ),
                    ],
                )
            }),
        )
    }

    /// Write the ACL atomically.
    pub fn save(&self, config_dir: &Path) -> Result<(), TrustError> {
        fs::create_dir_all(config_dir).map_err(|e| TrustError::Io {
            context: format!("creating {}", config_dir.display()),
            source: e,
        })?;
        write_atomically(
            &Self::path(config_dir),
            format!("{}\n", self.to_sexp()).as_bytes(),
            0o644,
        )
    }
}
