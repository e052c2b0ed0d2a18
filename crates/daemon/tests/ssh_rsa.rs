//! An RSA client key against a real OpenSSH server, which says (at
//! `LogLevel DEBUG2`) which signature algorithm the client used: ring signs
//! the user authentication with the best SHA-2 hash the server announces
//! in `server-sig-algs`, rsa-sha2-512 for OpenSSH. (The key file formats
//! are in `ssh.rs`, `client_key_auth`; both hashes' signatures are checked
//! in the unit tests of `offload::ssh`. OpenSSH announces every algorithm
//! it knows whatever `PubkeyAcceptedAlgorithms` says, so no OpenSSH server
//! makes the client fall back to rsa-sha2-256.)
//!
//! Needs root (sshd's privilege separation), /usr/sbin/sshd and
//! /usr/bin/ssh-keygen: see ferry-test-support's `sshd` module.

use std::time::Duration;

use ferry_daemon::offload::{SshConnection, SshTarget};
use ferry_test_support::sshd::{keygen, prerequisites, Sshd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_signs_rsa_sha2_512() {
    if !prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (key, rsa_pub) = keygen(tmp.path(), "id_rsa", "rsa", "");
    let sshd = Sshd::start_with(tmp.path(), &[&rsa_pub], "LogLevel DEBUG2\n");
    let t = SshTarget {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: "root".into(),
        private_key: key,
        host_key: sshd.ed25519_pub.clone(),
        compression: "none".into(),
        compression_level: 0,
        connect_timeout: Duration::from_secs(5),
        silence: None,
        keepalive_interval: Duration::from_secs(15),
    };
    let conn = SshConnection::connect(&t).await.unwrap();
    assert_eq!(conn.exec("echo rsa").await.unwrap().stdout, b"rsa\n");
    let log = std::fs::read_to_string(&sshd.log).unwrap();
    let accepted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Accepted publickey for root") || l.contains("authenticated 1"))
        .collect();
    println!("{}", accepted.join("\n"));
    assert!(
        accepted
            .iter()
            .any(|l| l.contains("authenticated 1 pkalg rsa-sha2-512"))
            && accepted.iter().any(|l| l.contains("ssh2: RSA SHA256:")),
        "{log}"
    );
}
