//! What the client proposes in the key exchange besides the host key:
//! compression from the `compression` field (in its order, unknown names
//! refused) and ciphers by what the CPU accelerates.

use russh::compression::Compression;
use russh::Preferred;

use super::{SshError, SshTarget};

pub(super) fn compression_name(c: &Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Zlib => "zlib",
        Compression::ZlibOpenSSH => "zlib@openssh.com",
    }
}

/// The compression field as russh names, in order.
pub(super) fn compression_names(t: &SshTarget) -> Result<Vec<russh::compression::Name>, SshError> {
    let mut names = Vec::new();
    let mut unknown = Vec::new();
    for n in t
        .compression
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        match n {
            "zlib@openssh.com" => names.push(russh::compression::ZLIB_LEGACY),
            "zlib" => names.push(russh::compression::ZLIB),
            "none" => names.push(russh::compression::NONE),
            other => unknown.push(other.to_string()),
        }
    }
    let err = |why: String| SshError::Compression {
        host: t.host.clone(),
        why,
    };
    if !unknown.is_empty() {
        return Err(err(format!(
            "unknown algorithm {} in {:?}; use zlib@openssh.com, zlib or none, most preferred first",
            unknown.join(", "),
            t.compression
        )));
    }
    if names.is_empty() {
        return Err(err(
            "the compression field is empty; use \"zlib@openssh.com,zlib\" (the default) or \"none\""
                .into(),
        ));
    }
    names.dedup();
    Ok(names)
}

/// russh's ciphers, with AES-256-GCM first when this CPU has AES
/// instructions (ring then uses them: about twice the throughput of
/// chacha20-poly1305, russh's first choice, on loopback), else russh's order.
pub(super) fn cipher_preference() -> Vec<russh::cipher::Name> {
    #[cfg(target_arch = "x86_64")]
    let aes = std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let aes = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let aes = false;
    let mut ciphers = Preferred::default().cipher.into_owned();
    if aes {
        if let Some(i) = ciphers
            .iter()
            .position(|c| *c == russh::cipher::AES_256_GCM)
        {
            let gcm = ciphers.remove(i);
            ciphers.insert(0, gcm);
        }
    }
    ciphers
}
