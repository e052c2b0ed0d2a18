//! A real OpenSSH server on loopback for the tests of offload's SSH
//! transport: each test starts its own `sshd` (ephemeral port, its own host
//! keys, the authorized client keys it is given), and a [`Machine`] puts an
//! in-process `ferry daemon` on a temporary store behind it, reached with
//! direct-streamlocal channels as offload does.
//!
//! Needs root (sshd's privilege separation), /usr/sbin/sshd and
//! /usr/bin/ssh-keygen: see [`prerequisites`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_daemon::offload::SshTarget;
use ferry_daemon::{server, Daemon, Engine, EngineConfig};
use ferry_store::Store;

/// Whether the SSH tests can run here (root, sshd, ssh-keygen); in CI they
/// must (see [`crate::prereq::gate`]).
pub fn prerequisites() -> bool {
    crate::prereq::prerequisites(&["root", "/usr/sbin/sshd", "/usr/bin/ssh-keygen"])
}

/// `ssh-keygen` a key pair without passphrase (or with `passphrase`);
/// returns the private key's path and the public key line.
pub fn keygen(dir: &Path, name: &str, kind: &str, passphrase: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", name, "-f"])
        .arg(&path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    let st = cmd.status().unwrap();
    assert!(st.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

/// The SHA256 fingerprint of a public key file, as `ssh-keygen -lf` shows it.
pub fn fingerprint(private_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(private_key.with_extension("pub"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let fp = text.split_whitespace().nth(1).unwrap().to_string();
    assert!(fp.starts_with("SHA256:"), "{text}");
    fp
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real OpenSSH server on 127.0.0.1, killed (with its sessions) on drop.
pub struct Sshd {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub ed25519_pub: String,
    pub rsa_pub: String,
}

impl Sshd {
    pub fn start(dir: &Path, authorized: &[&str]) -> Sshd {
        Sshd::start_with(dir, authorized, "")
    }

    /// [`Sshd::start`] with `config` lines first in sshd_config (sshd
    /// keeps the first value of a keyword, so they override the defaults
    /// here, e.g. `LogLevel DEBUG2`).
    pub fn start_with(dir: &Path, authorized: &[&str], config_first: &str) -> Sshd {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let (host_ed, ed25519_pub) = keygen(dir, "host_ed25519", "ed25519", "");
        let (host_rsa, rsa_pub) = keygen(dir, "host_rsa", "rsa", "");
        let auth = dir.join("authorized_keys");
        std::fs::write(&auth, authorized.join("\n") + "\n").unwrap();
        let log = dir.join("sshd.log");
        let config = dir.join("sshd_config");
        for attempt in 0..5 {
            let port = free_port();
            std::fs::write(
                &config,
                format!(
                    "{config_first}Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nHostKey {}\n\
                     PidFile {}\nAuthorizedKeysFile {}\nUsePAM no\nStrictModes no\n\
                     PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                     AllowStreamLocalForwarding local\nAllowTcpForwarding local\n\
                     X11Forwarding no\nPrintMotd no\nLogLevel VERBOSE\n",
                    host_ed.display(),
                    host_rsa.display(),
                    dir.join("sshd.pid").display(),
                    auth.display(),
                ),
            )
            .unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-f"])
                .arg(&config)
                .arg("-E")
                .arg(&log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd {
                        child,
                        port,
                        log,
                        ed25519_pub,
                        rsa_pub,
                    };
                }
                if let Some(st) = child.try_wait().unwrap() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if attempt < 4 && text.contains("Address already in use") {
                        break; // another test took the port: try another
                    }
                    panic!("sshd exited ({st}):\n{text}");
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!(
                        "sshd did not listen within 5 s:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        unreachable!()
    }

    /// SSH connections sshd authenticated (each is one TCP connection;
    /// LogLevel VERBOSE logs each).
    pub fn connections(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Accepted publickey"))
            .count()
    }

    /// The per-connection sshd processes (all descendants of the listener).
    pub fn sessions(&self) -> Vec<i32> {
        let mut parents = vec![self.child.id() as i32];
        let mut found = Vec::new();
        loop {
            let mut more = Vec::new();
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                // pid (comm) state ppid ...
                let after = &stat[stat.rfind(')').unwrap() + 2..];
                let ppid: i32 = after.split(' ').nth(1).unwrap().parse().unwrap();
                if parents.contains(&ppid) && !found.contains(&pid) {
                    more.push(pid);
                }
            }
            if more.is_empty() {
                return found;
            }
            found.extend(&more);
            parents = more;
        }
    }

    pub fn signal_sessions(&self, sig: rustix::process::Signal) {
        for pid in self.sessions() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, sig);
            }
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.signal_sessions(rustix::process::Signal::CONT);
        self.signal_sessions(rustix::process::Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A machine to offload to: sshd plus a ferry daemon on a temporary store.
pub struct Machine {
    pub tmp: tempfile::TempDir,
    pub sshd: Sshd,
    /// Authorized client keys.
    pub key: PathBuf,
    pub rsa_key: PathBuf,
    pub socket: String,
    pub store_dir: String,
    pub store: Arc<Store>,
    pub daemon: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Machine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "sshd log:\n{}",
                std::fs::read_to_string(&self.sshd.log).unwrap_or_default()
            );
        }
        self.daemon.abort();
    }
}

/// A machine to offload to ([`Sshd`] and an in-process daemon), or `None`
/// when the test is skipped (see [`prerequisites`]).
pub async fn machine() -> Option<Machine> {
    if !prerequisites() {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, key_pub) = keygen(dir, "id_ed25519", "ed25519", "");
    let (rsa_key, rsa_pub) = keygen(dir, "id_rsa", "rsa", "");
    let sshd = Sshd::start(dir, &[&key_pub, &rsa_pub]);

    // The daemon, in-process, on a temporary store (so the test does not
    // depend on a built `ferry` binary).
    let store = crate::store::temp_store(dir);
    let d = Daemon::new(Engine::new(
        store.clone(),
        EngineConfig::new(2, crate::store::unsandboxed()),
    ))
    .unwrap();
    let socket = dir.join("state/daemon-socket/socket");
    let listener = server::bind(&socket).await.unwrap();
    let daemon = tokio::spawn(server::run(listener, d));
    Some(Machine {
        store_dir: store.store_dir().to_string(),
        socket: socket.to_str().unwrap().to_string(),
        store,
        daemon,
        sshd,
        key,
        rsa_key,
        tmp,
    })
}

impl Machine {
    pub fn target(&self) -> SshTarget {
        SshTarget {
            host: "127.0.0.1".into(),
            port: self.sshd.port,
            user: "root".into(),
            private_key: self.key.clone(),
            host_key: self.sshd.ed25519_pub.clone(),
            compression: "zlib@openssh.com,zlib".into(),
            compression_level: 3,
            connect_timeout: Duration::from_secs(5),
            silence: Some(ferry_daemon::offload::ssh::DEFAULT_SILENCE),
            keepalive_interval: Duration::from_secs(15),
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }
}
