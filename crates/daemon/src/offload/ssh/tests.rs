//! Unit tests of the parts that need no server: the target of a machine,
//! the compression field, host-key preferences and private-key checks
//! (connections are tested against a real sshd in `tests/ssh.rs`).

use std::time::Duration;

use russh::keys::{Algorithm, PublicKey};
use russh::Preferred;

use super::algorithms::compression_names;
use super::keys::{host_key_preference, load_private_key, parse_host_key};
use super::*;

fn machine() -> ferry_scheme::BuildMachine {
    ferry_scheme::BuildMachine {
        name: "b1.example.org".into(),
        systems: vec!["x86_64-linux".into()],
        user: "bob".into(),
        host_key:
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOfqfp4mQyQRpxMHbsVt7JNRw+TtbJfzEyyj6Wv5Yj6t host"
                .into(),
        port: 2222,
        private_key: "/root/.ssh/id_rsa".into(),
        compression: "zlib@openssh.com,zlib".into(),
        compression_level: 3,
        daemon_socket: "/var/ferry/daemon-socket/socket".into(),
        overload_threshold: Some(0.8),
        parallel_builds: 1,
        speed: 1.0,
        features: vec![],
        error: None,
    }
}

#[test]
fn target_of_a_machine() {
    let t = SshTarget::from_machine(&machine());
    assert_eq!(
        (t.host.as_str(), t.port, t.user.as_str()),
        ("b1.example.org", 2222, "bob")
    );
    assert_eq!(t.connect_timeout, Duration::from_secs(10));
    assert_eq!(t.keepalive_interval, Duration::from_secs(3));
    assert_eq!(t.addr(), "b1.example.org:2222");
    let key = parse_host_key(&t.host, &t.host_key).unwrap();
    assert_eq!(key.algorithm(), Algorithm::Ed25519);
}

#[test]
fn compression_field() {
    let mut t = SshTarget::from_machine(&machine());
    let names = compression_names(&t).unwrap();
    assert_eq!(
        names,
        vec![russh::compression::ZLIB_LEGACY, russh::compression::ZLIB]
    );
    t.compression = " none , zlib@openssh.com".into();
    let names = compression_names(&t).unwrap();
    assert_eq!(
        names,
        vec![russh::compression::NONE, russh::compression::ZLIB_LEGACY]
    );
    t.compression = "zstd,zlib,lz4".into();
    let e = compression_names(&t).unwrap_err().to_string();
    assert!(
        e.contains("zstd, lz4") && e.contains("zlib@openssh.com"),
        "{e}"
    );
    t.compression = ",".into();
    assert!(compression_names(&t).is_err());
}

#[test]
fn host_key_algorithm_asked_first() {
    let rsa = PublicKey::from_openssh(
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDL9peL6wSVzO1UjzSe863Q1czl6fTAZcB1D3CzK8l9GCO+54LAFOtluD9ZNRVTMw3+GVT30/ohmlzmYFDEpz+oUPYcwo+pE9ghXKhKE8nS4lRcmah22obWQiT0sot6DBmIGLOhCZ9GrhuZdT8plSUPmFDs716YbUV5l3Dm7PRHPQ== x",
    )
    .unwrap();
    let prefs = host_key_preference(&rsa);
    assert!(matches!(prefs[0], Algorithm::Rsa { .. }));
    assert!(matches!(prefs[2], Algorithm::Rsa { .. }));
    assert_eq!(prefs.len(), Preferred::default().key.len());
    for bad in [
        "ssh-ed25519 AAAAC3Nza…",
        "",
        "AAAAC3NzaC1lZDI1NTE5",
        "ssh-ed25519 !!!",
    ] {
        assert!(
            matches!(parse_host_key("h", bad), Err(SshError::BadHostKey { .. })),
            "{bad}"
        );
    }
}

#[test]
fn a_private_key_others_may_read_is_refused_with_the_chmod_to_run() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id_ed25519");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = load_private_key(&key).unwrap_err().to_string();
        assert!(
            e.contains(&format!("(mode {mode:04o})"))
                && e.contains(&format!("chmod 600 {}", key.display())),
            "{e}"
        );
    }
    // Owner only: the permissions pass (the content is what is wrong).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = load_private_key(&key).unwrap_err().to_string();
    assert!(!e.contains("chmod"), "{e}");
}

#[test]
fn a_machine_without_a_private_key_gets_a_clear_error() {
    let mut m = machine();
    m.private_key = std::path::PathBuf::new();
    let t = SshTarget::from_machine(&m);
    let e = load_private_key(&t.private_key).unwrap_err().to_string();
    assert!(e.starts_with("no private key: set (private-key "), "{e}");
}

// ------------------------------------------- RSA client keys sign with ring

/// An RSA key pair from ssh-keygen (`format`: None for OpenSSH's own,
/// `PEM` or `PKCS8` converted with `ssh-keygen -p -m`).
fn rsa_key(dir: &std::path::Path, bits: u32, format: Option<&str>) -> std::path::PathBuf {
    let path = dir.join(format!("id_rsa_{bits}_{}", format.unwrap_or("openssh")));
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-N", "", "-b", &bits.to_string(), "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    if let Some(format) = format {
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-p", "-N", "", "-P", "", "-m", format, "-f"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
    }
    path
}

#[test]
fn an_rsa_key_signs_with_ring_and_the_signature_verifies() {
    use russh::keys::signature::Verifier;
    use russh::keys::ssh_key::Signature;
    use russh::keys::HashAlg;
    use russh::Signer;

    if !ferry_test_support::prereq::prerequisites(&["/usr/bin/ssh-keygen"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = b"session id and user-auth request".to_vec();
    for format in [None, Some("PEM"), Some("PKCS8")] {
        let path = rsa_key(tmp.path(), 2048, format);
        let text = std::fs::read_to_string(&path).unwrap();
        let header = match format {
            None => "-----BEGIN OPENSSH PRIVATE KEY-----",
            Some("PEM") => "-----BEGIN RSA PRIVATE KEY-----",
            _ => "-----BEGIN PRIVATE KEY-----",
        };
        assert!(text.starts_with(header), "{format:?}: {text}");
        let keys::ClientKey::Rsa { public, mut signer } = keys::client_key(&path).unwrap() else {
            panic!("{format:?}: not taken as an RSA key");
        };
        // The public key ring derived is the file's.
        let on_disk = PublicKey::read_openssh_file(path.with_extension("pub")).unwrap();
        assert_eq!(public.key_data(), on_disk.key_data(), "{format:?}");
        let ring_public = signer.public_components();
        for (hash, name, params) in [
            (
                HashAlg::Sha512,
                "rsa-sha2-512",
                &ring::signature::RSA_PKCS1_2048_8192_SHA512,
            ),
            (
                HashAlg::Sha256,
                "rsa-sha2-256",
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            ),
        ] {
            let identity = russh::keys::agent::AgentIdentity::PublicKey {
                key: public.clone(),
                comment: String::new(),
            };
            let signed = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(signer.auth_sign(&identity, Some(hash), data.clone()))
                .unwrap();
            // What was to be signed, then the signature blob as a string.
            assert_eq!(&signed[..data.len()], &data[..]);
            let rest = &signed[data.len()..];
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert_eq!(rest.len(), 4 + len);
            // ssh-key reads the blob and verifies it (a public-key operation).
            let sig = Signature::try_from(&rest[4..]).unwrap();
            assert_eq!(sig.algorithm().as_str(), name);
            Verifier::verify(&public, &data, &sig).unwrap();
            assert!(Verifier::verify(&public, b"something else", &sig).is_err());
            // And ring verifies the raw PKCS#1 v1.5 signature.
            ring_public.verify(params, &data, sig.as_bytes()).unwrap();
        }
        // No SHA-2 announced: no SHA-1 ssh-rsa signature is made.
        let e = signer.sign(None, &data).unwrap_err().to_string();
        assert!(e.contains("SHA-1") && e.contains("ed25519"), "{e}");
    }
}

#[test]
fn an_rsa_key_ring_refuses_gets_a_clear_error_and_others_stay_with_russh() {
    if !ferry_test_support::prereq::prerequisites(&["/usr/bin/ssh-keygen"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let small = rsa_key(tmp.path(), 1024, None);
    let e = keys::client_key(&small).unwrap_err();
    assert!(matches!(e, SshError::KeyFile { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("1024 bits") && msg.contains("2048 to 4096") && msg.contains("ed25519"),
        "{msg}"
    );
    let ed = tmp.path().join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&ed)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(matches!(
        keys::client_key(&ed).unwrap(),
        keys::ClientKey::Other(_)
    ));
}
