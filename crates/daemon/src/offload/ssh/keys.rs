//! The keys of a connection: the client's private key (`private-key`,
//! read without a passphrase, refused when others may read it; an RSA one
//! handed to ring, see `rsa_signer.rs`) and the machine's host key
//! (`host-key`, pinned: parsed here, asked for first in the key exchange,
//! compared by the handler in `connection.rs`).

use std::path::Path;

use russh::keys::ssh_key::private::KeypairData;
use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::Preferred;

use super::rsa_signer::RingRsaSigner;
use super::SshError;

/// The client's key, ready to authenticate with.
#[derive(Debug)]
pub(super) enum ClientKey {
    /// An RSA key: ring signs (the `rsa` crate's private-key operations
    /// are never used); the private key itself is not kept.
    Rsa {
        public: PublicKey,
        signer: RingRsaSigner,
    },
    /// Any other key (ed25519, ecdsa): russh signs with it.
    Other(NotRsa),
}

/// A private key that is not RSA: only [`client_key`] makes one (the field
/// is private to this file), so an RSA key cannot reach russh's signing,
/// which would go through the `rsa` crate.
#[derive(Debug)]
pub(super) struct NotRsa(PrivateKey);

impl NotRsa {
    pub(super) fn into_key(self) -> PrivateKey {
        self.0
    }
}

/// Read the client's key file ([`load_private_key`]) and hand an RSA key
/// to ring.
pub(super) fn client_key(path: &Path) -> Result<ClientKey, SshError> {
    let key = load_private_key(path)?;
    match key.key_data() {
        KeypairData::Rsa(rsa) => {
            let signer = RingRsaSigner::new(rsa).map_err(|why| SshError::KeyFile {
                path: path.to_path_buf(),
                why,
            })?;
            Ok(ClientKey::Rsa {
                public: key.public_key().clone(),
                signer,
            })
        }
        _ => Ok(ClientKey::Other(NotRsa(key))),
    }
}

/// Parse the `host-key` field; placeholders and malformed keys are refused.
pub(super) fn parse_host_key(host: &str, key: &str) -> Result<PublicKey, SshError> {
    let bad = |why: String| SshError::BadHostKey {
        host: host.to_string(),
        why,
    };
    if ferry_scheme::is_placeholder_host_key(key) {
        return Err(bad(
            "is a placeholder cut short with an ellipsis (as in the manual's example)".into(),
        ));
    }
    if let Err(why) = ferry_scheme::check_host_key(key) {
        return Err(bad(why));
    }
    PublicKey::from_openssh(key.trim())
        .map_err(|e| bad(format!("is not a valid OpenSSH public key ({e})")))
}

/// Read the private key file (no passphrase).
pub(super) fn load_private_key(path: &Path) -> Result<PrivateKey, SshError> {
    let err = |why: String| SshError::KeyFile {
        path: path.to_path_buf(),
        why,
    };
    // No key: HOME was unset when machines.scm was evaluated and the
    // machine has no private-key field (Guix's default is then #f), or
    // (private-key #f). There is no SSH agent to fall back on.
    if path.as_os_str().is_empty() {
        return Err(err(
            "no private key: set (private-key \"/root/.ssh/id_ed25519\") in this machine's build-machine in machines.scm (there is no default key when HOME is unset)".into(),
        ));
    }
    let passphrase = || {
        err(format!(
            "is protected by a passphrase, but offload logs in without anyone to type it (the key must have no passphrase); remove it with ssh-keygen -p -N '' -f {} or make a new key with ssh-keygen -t ed25519 -N ''",
            path.display()
        ))
    };
    // OpenSSH's rule: a private key others may read is not used (it is no
    // longer private). Checked before reading it, on every connection.
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "is readable by group or others (mode {mode:04o}), and a private key must be readable by its owner only (OpenSSH refuses it too); run: chmod 600 {}",
                path.display()
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "cannot be read ({e}); create it with ssh-keygen -t ed25519 -N '' -f {} and authorize its .pub on the build machine, or set the private-key field",
            path.display()
        ))
    })?;
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        let key = PrivateKey::from_openssh(text.trim())
            .map_err(|e| err(format!("is not a valid OpenSSH private key ({e})")))?;
        if key.is_encrypted() {
            return Err(passphrase());
        }
        return Ok(key);
    }
    match russh::keys::decode_secret_key(&text, None) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(passphrase()),
        Err(e) => Err(err(format!(
            "is not a private key in OpenSSH format ({e}); it should start with -----BEGIN OPENSSH PRIVATE KEY----- (the .pub file is the public half)"
        ))),
    }
}

/// Host-key algorithms with those of `expected`'s type first, so that a
/// server with several host keys presents the one machines.scm pins.
pub(super) fn host_key_preference(expected: &PublicKey) -> Vec<Algorithm> {
    let want = expected.algorithm();
    let same = |a: &Algorithm| match (a, &want) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        (a, b) => a == b,
    };
    let default = Preferred::default().key.into_owned();
    let mut algos: Vec<Algorithm> = default.iter().filter(|a| same(a)).cloned().collect();
    if algos.is_empty() {
        algos.push(want.clone());
    }
    algos.extend(default.iter().filter(|a| !same(a)).cloned());
    algos
}

pub(super) fn key_type_hint(key: &PublicKey) -> String {
    match key.algorithm() {
        Algorithm::Ed25519 => "ed25519".into(),
        Algorithm::Rsa { .. } => "rsa".into(),
        Algorithm::Ecdsa { .. } => "ecdsa".into(),
        other => other.to_string(),
    }
}
