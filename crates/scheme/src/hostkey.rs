//! Checking that a `host-key` looks like an OpenSSH public key:
//! `TYPE BASE64 [COMMENT]`, where the base64 blob starts with TYPE again.
//!
//! Placeholders: the manual's own example writes `"ssh-ed25519 AAAAC3Nza…"`,
//! cut short with an ellipsis. Such a key (base64 that ends in `…` or `...`)
//! is accepted as a *placeholder* so that the example loads verbatim, with a
//! warning; [`is_placeholder_host_key`] lets the offload code refuse to
//! connect to a machine whose key was never filled in.

/// The key types OpenSSH writes in `.pub` files.
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-dss",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKeyStatus {
    Valid,
    /// Key data cut short with an ellipsis: the real key is still to be filled in.
    Placeholder,
}

/// Whether `key`'s data is cut short with `…` or `...`.
pub fn is_placeholder_host_key(key: &str) -> bool {
    key.split_whitespace()
        .nth(1)
        .is_some_and(|data| ellipsis_prefix(data).is_some())
}

fn ellipsis_prefix(data: &str) -> Option<&str> {
    data.find('…')
        .or_else(|| data.find("..."))
        .map(|i| &data[..i])
}

/// Checks `key`; the error explains what is wrong.
pub fn check_host_key(key: &str) -> Result<HostKeyStatus, String> {
    let mut parts = key.split_whitespace();
    let Some(key_type) = parts.next() else {
        return Err("is empty".into());
    };
    if !KEY_TYPES.contains(&key_type) {
        if key_type.starts_with("AAAA") {
            return Err(
                "lacks the key type before the key data (for example \"ssh-ed25519 AAAA...\")"
                    .into(),
            );
        }
        return Err(format!(
            "has key type {key_type:?}, which is not an OpenSSH key type ({})",
            KEY_TYPES.join(", ")
        ));
    }
    let Some(data) = parts.next() else {
        return Err(format!("has no key data after {key_type:?}"));
    };
    let expected = blob_prefix(key_type);
    if let Some(prefix) = ellipsis_prefix(data) {
        if let Some(c) = prefix.chars().find(|c| base64_value(*c).is_none()) {
            return Err(format!(
                "has a character {c:?} that is not base64 in its key data"
            ));
        }
        let whole = &prefix[..prefix.len() / 4 * 4];
        let decoded = decode_base64(whole)
            .map_err(|e| format!("has key data that is not valid base64: {e}"))?;
        let n = decoded.len().min(expected.len());
        if decoded[..n] != expected[..n] {
            return Err(format!(
                "has key data that does not start like a {key_type} key (a key of another type?)"
            ));
        }
        return Ok(HostKeyStatus::Placeholder);
    }
    let decoded =
        decode_base64(data).map_err(|e| format!("has key data that is not valid base64: {e}"))?;
    if !decoded.starts_with(&expected) {
        let inner = decoded
            .get(4..)
            .and_then(|rest| {
                let len = u32::from_be_bytes(decoded.get(..4)?.try_into().ok()?) as usize;
                std::str::from_utf8(rest.get(..len)?).ok()
            })
            .unwrap_or("something else");
        return Err(format!("says {key_type} but its key data is for {inner:?}"));
    }
    if decoded.len() == expected.len() {
        return Err("has key data with a type but no key".into());
    }
    Ok(HostKeyStatus::Valid)
}

/// The start of an OpenSSH key blob: the type as an SSH string.
fn blob_prefix(key_type: &str) -> Vec<u8> {
    let mut out = (key_type.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(key_type.as_bytes());
    out
}

fn base64_value(c: char) -> Option<u8> {
    Some(match c {
        'A'..='Z' => c as u8 - b'A',
        'a'..='z' => c as u8 - b'a' + 26,
        '0'..='9' => c as u8 - b'0' + 52,
        '+' => 62,
        '/' => 63,
        _ => return None,
    })
}

/// Standard base64 with padding, strictly (as OpenSSH writes it).
pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    if s.len() & 3 != 0 {
        return Err(format!(
            "its length {} is not a multiple of 4 (truncated?)",
            s.len()
        ));
    }
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 {
        return Err("too much '=' padding".into());
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for (i, c) in body.chars().enumerate() {
        let v = base64_value(c)
            .ok_or_else(|| format!("{c:?} at position {} is not a base64 character", i + 1))?;
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert!(decode_base64("aGk").is_err());
        assert!(decode_base64("a*k=").is_err());
    }

    #[test]
    fn placeholders() {
        assert_eq!(
            check_host_key("ssh-ed25519 AAAAC3Nza…"),
            Ok(HostKeyStatus::Placeholder)
        );
        assert_eq!(
            check_host_key("ssh-rsa AAAAB3Nza…"),
            Ok(HostKeyStatus::Placeholder)
        );
        assert_eq!(
            check_host_key("ssh-rsa AAAAB3NzaC1yc2EAAAAEOp8FoQAAAQEAs1eB46LV…"),
            Ok(HostKeyStatus::Placeholder)
        );
        assert!(check_host_key("ssh-rsa AAAAC3Nza…").is_err());
        assert!(is_placeholder_host_key(
            "ssh-ed25519 AAAAC3NzaC...mde+UhL hint@example.org"
        ));
    }
}
