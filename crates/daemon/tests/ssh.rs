//! The SSH transport of offload against a real OpenSSH server on loopback:
//! each test starts its own `sshd` (ephemeral port, its own host keys, an
//! authorized client key) and an in-process `ferry daemon` on a temporary
//! store and socket, and reaches the daemon through sshd with
//! direct-streamlocal channels, as offload does. The sshd and the machine
//! behind it are ferry-test-support's `sshd` module.
//!
//! Needs root (sshd's privilege separation) and /usr/sbin/sshd: without
//! them the tests say they are skipped, except under CI=true where they
//! fail.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_daemon::offload::{Connections, SshConnection, SshError, SshTarget};
use ferry_test_support::nar::NarGen;
use ferry_test_support::sshd::{fingerprint, free_port, keygen, machine, prerequisites};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------- fixtures

fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The error of an operation that must fail.
fn failure<T>(r: Result<T, SshError>) -> SshError {
    match r {
        Ok(_) => panic!("succeeded, but should have failed"),
        Err(e) => e,
    }
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

// ------------------------------------------------------------------- tests

/// 1: host key checked, key auth, the daemon protocol through a
/// direct-streamlocal channel; wrong store directory and wrong socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_over_ssh() {
    let Some(m) = machine().await else { return };
    let conn = SshConnection::connect(&m.target()).await.unwrap();
    assert!(!conn.is_closed());
    let mut c = conn.connect_daemon(&m.socket, &m.store_dir).await.unwrap();
    assert_eq!(c.welcome().store_dir, m.store_dir);

    let src = m.dir().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"hello over ssh\n").unwrap();
    let mut nar = Vec::new();
    ferry_formats::nar::dump(&src, &mut nar).unwrap();
    let added = c.add_to_store("src", &mut nar.as_slice()).await.unwrap();
    assert_eq!(
        added,
        m.store.display(&m.store.add_tree(&src, "src").unwrap())
    );
    let missing = format!("{}/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo", m.store_dir);
    let valid = c.query_valid(vec![added.clone(), missing]).await.unwrap();
    assert_eq!(valid, vec![added.clone()]);
    let info = c.path_info(&added).await.unwrap().unwrap();
    assert_eq!(info.nar_size, nar.len() as u64);
    let mi = c.machine_info().await.unwrap();
    assert_eq!(mi.store_dir, m.store_dir);

    // The daemon refuses another store directory, and says why.
    let e = failure(conn.connect_daemon(&m.socket, "/nix/store").await);
    assert!(matches!(e, SshError::Protocol { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("same store directory") && msg.contains(&m.store_dir),
        "{msg}"
    );

    // No daemon at that socket: sshd refuses the channel.
    let e = failure(
        conn.connect_daemon("/nonexistent/socket", &m.store_dir)
            .await,
    );
    assert!(matches!(e, SshError::Channel { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("/nonexistent/socket") && msg.contains("daemon-socket"),
        "{msg}"
    );
    // The connection survives a refused channel.
    c.query_valid(vec![added]).await.unwrap();
    assert!(!conn.is_closed());
}

/// 2: a host key other than the expected one is refused, with both
/// fingerprints as ssh-keygen -l shows them; placeholders never connect;
/// an RSA host key is asked for (and accepted) when that is the one pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_is_checked() {
    let Some(m) = machine().await else { return };
    let (other, other_pub) = keygen(m.dir(), "other_host", "ed25519", "");
    let mut t = m.target();
    t.host_key = other_pub;
    let e = SshConnection::connect(&t).await.unwrap_err();
    let SshError::HostKeyMismatch {
        expected, received, ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(*expected, fingerprint(&other));
    assert_eq!(*received, fingerprint(&m.dir().join("host_ed25519")));
    let msg = e.to_string();
    assert!(
        msg.contains(expected)
            && msg.contains(received)
            && msg.contains("update its host-key")
            && msg.contains("ssh-keyscan"),
        "{msg}"
    );
    println!("{msg}");
    // No session was authenticated with the wrong key.
    let log = std::fs::read_to_string(&m.sshd.log).unwrap();
    assert!(!log.contains("Accepted publickey"), "{log}");

    // The manual's placeholder: refused before connecting.
    t.host_key = "ssh-ed25519 AAAAC3Nza…".into();
    let e = SshConnection::connect(&t).await.unwrap_err();
    assert!(matches!(e, SshError::BadHostKey { .. }), "{e:?}");
    assert!(e.to_string().contains("placeholder"), "{e}");
    t.host_key = "ssh-ed25519 not-base64!".into();
    let e = SshConnection::connect(&t).await.unwrap_err();
    assert!(matches!(e, SshError::BadHostKey { .. }), "{e:?}");

    // The server has an ed25519 and an RSA host key: pinning the RSA one
    // works (the client asks for RSA first), with the comment ignored.
    t.host_key = format!("{} some comment", m.sshd.rsa_pub);
    let conn = SshConnection::connect(&t).await.unwrap();
    let out = conn.exec("true").await.unwrap();
    assert_eq!(out.status, Some(0));
}

/// 3: an unauthorized client key, a passphrase-protected one, a missing
/// one; and an RSA client key that is authorized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_key_auth() {
    let Some(m) = machine().await else { return };
    let (stranger, _) = keygen(m.dir(), "stranger", "ed25519", "");
    let mut t = m.target();
    t.private_key = stranger.clone();
    let e = SshConnection::connect(&t).await.unwrap_err();
    assert!(matches!(e, SshError::AuthRejected { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "add {}.pub to ~root/.ssh/authorized_keys",
            stranger.display()
        )),
        "{msg}"
    );
    println!("{msg}");

    let (locked, _) = keygen(m.dir(), "locked", "ed25519", "secret phrase");
    t.private_key = locked;
    let e = SshConnection::connect(&t).await.unwrap_err();
    assert!(matches!(e, SshError::KeyFile { .. }), "{e:?}");
    assert!(e.to_string().contains("passphrase"), "{e}");
    println!("{e}");

    t.private_key = m.dir().join("no-such-key");
    let e = SshConnection::connect(&t).await.unwrap_err();
    assert!(matches!(e, SshError::KeyFile { .. }), "{e:?}");
    assert!(e.to_string().contains("ssh-keygen"), "{e}");

    t.private_key = m.dir().join("id_ed25519.pub");
    let e = SshConnection::connect(&t).await.unwrap_err();
    assert!(matches!(e, SshError::KeyFile { .. }), "{e:?}");

    // The authorized RSA key, as OpenSSH writes it and converted to PEM
    // (PKCS#1) and PKCS#8: each logs in, signed by ring with rsa-sha2-512
    // (the best hash the server announces).
    for format in ["OpenSSH", "PEM", "PKCS8"] {
        t.private_key = m.dir().join(format!("id_rsa_{format}"));
        std::fs::copy(&m.rsa_key, &t.private_key).unwrap();
        if format != "OpenSSH" {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-p", "-N", "", "-P", "", "-m", format, "-f"])
                .arg(&t.private_key)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "{format}");
        }
        let conn = SshConnection::connect(&t).await.unwrap();
        assert_eq!(conn.exec("echo rsa").await.unwrap().stdout, b"rsa\n");
    }
    let log = std::fs::read_to_string(&m.sshd.log).unwrap();
    let rsa = "Accepted publickey for root from 127.0.0.1";
    assert_eq!(log.matches(rsa).count(), 3, "{log}");
    assert_eq!(log.matches("ssh2: RSA SHA256:").count(), 3, "{log}");
}

/// 4: a server that accepts TCP but never speaks SSH times out within the
/// connect timeout; a closed port fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_and_refusal() {
    if !prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (key, _) = keygen(tmp.path(), "id", "ed25519", "");
    let (_, host_pub) = keygen(tmp.path(), "host", "ed25519", "");
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = silent.accept().await.unwrap();
            held.push(s);
        }
    });
    let mut t = SshTarget {
        host: "127.0.0.1".into(),
        port,
        user: "root".into(),
        private_key: key,
        host_key: host_pub,
        compression: "zlib@openssh.com,zlib".into(),
        compression_level: 3,
        connect_timeout: Duration::from_secs(1),
        silence: Some(ferry_daemon::offload::ssh::DEFAULT_SILENCE),
        keepalive_interval: Duration::from_secs(15),
    };
    let start = Instant::now();
    let e = SshConnection::connect(&t).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(
            e,
            SshError::Timeout {
                during: "the SSH handshake",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    println!("{e} (after {took:?})");
    hold.abort();

    t.port = free_port(); // nothing listens there
    let start = Instant::now();
    let e = SshConnection::connect(&t).await.unwrap_err();
    assert!(matches!(e, SshError::Connect { .. }), "{e:?}");
    assert!(start.elapsed() < Duration::from_millis(500));
    println!("{e}");

    t.compression = "lz4,zlib".into();
    let e = SshConnection::connect(&t).await.unwrap_err();
    assert!(matches!(e, SshError::Compression { .. }), "{e:?}");
    assert!(e.to_string().contains("lz4"), "{e}");
}

/// 5: one SSH connection, 20 concurrent daemon sessions on it, one TCP
/// connection at sshd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexing() {
    let Some(m) = machine().await else { return };
    let conn = Arc::new(SshConnection::connect(&m.target()).await.unwrap());
    let src = m.dir().join("one");
    std::fs::write(&src, b"one\n").unwrap();
    let path = m.store.display(&m.store.add_tree(&src, "one").unwrap());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (conn, socket, store_dir, path) = (
            conn.clone(),
            m.socket.clone(),
            m.store_dir.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut c = conn.connect_daemon(&socket, &store_dir).await?;
            for _ in 0..5 {
                let valid = c.query_valid(vec![path.clone()]).await.unwrap();
                assert_eq!(valid, vec![path.clone()]);
            }
            let info = c.path_info(&path).await.unwrap().unwrap();
            let mut nar = Vec::new();
            std::fs::write(format!("{store_dir}/../f{i}"), format!("{i}\n")).unwrap();
            ferry_formats::nar::dump(Path::new(&format!("{store_dir}/../f{i}")), &mut nar).unwrap();
            let added = c
                .add_to_store(&format!("f{i}"), &mut nar.as_slice())
                .await
                .unwrap();
            Ok::<_, SshError>((info.nar_size, added))
        }));
    }
    let mut added = Vec::new();
    for t in tasks {
        let (size, p) = t.await.unwrap().unwrap();
        assert!(size > 0);
        added.push(p);
    }
    added.sort();
    added.dedup();
    assert_eq!(added.len(), 20);
    assert_eq!(
        m.sshd.connections(),
        1,
        "sshd accepted more than one connection"
    );
}

/// 6: the pool: one connection per machine, shared by concurrent callers;
/// a new one after the old one died, and after invalidate().
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_reuses_and_reconnects() {
    let Some(m) = machine().await else { return };
    let pool = Arc::new(Connections::new());
    let t = m.target();
    let mut gets = Vec::new();
    for _ in 0..8 {
        let (pool, t) = (pool.clone(), t.clone());
        gets.push(tokio::spawn(
            async move { pool.get("h1", &t).await.unwrap() },
        ));
    }
    let mut conns = Vec::new();
    for g in gets {
        conns.push(g.await.unwrap());
    }
    let first = pool.get("h1", &t).await.unwrap();
    assert!(conns.iter().all(|c| Arc::ptr_eq(c, &first)));
    assert_eq!(m.sshd.connections(), 1);
    assert!(Arc::ptr_eq(&pool.current("h1").unwrap(), &first));
    drop(conns);

    // Kill the server side of the connection: the client notices, and the
    // next get() reconnects without being told.
    m.sshd.signal_sessions(rustix::process::Signal::KILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !first.is_closed() {
        assert!(
            Instant::now() < deadline,
            "the dead connection was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = failure(first.connect_daemon(&m.socket, &m.store_dir).await);
    assert!(matches!(e, SshError::Closed { .. }), "{e:?}");
    println!("{e}");
    let second = pool.get("h1", &t).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &second));
    second
        .connect_daemon(&m.socket, &m.store_dir)
        .await
        .unwrap()
        .query_valid(vec![])
        .await
        .unwrap();
    assert_eq!(m.sshd.connections(), 2);

    // A caller reporting an error on the old connection does not throw
    // away the new one; invalidate() does.
    pool.invalidate_if("h1", &first).await;
    assert!(Arc::ptr_eq(&pool.get("h1", &t).await.unwrap(), &second));
    pool.invalidate("h1").await;
    let third = pool.get("h1", &t).await.unwrap();
    assert!(!Arc::ptr_eq(&second, &third));
    let mut c = third.connect_daemon(&m.socket, &m.store_dir).await.unwrap();
    c.query_valid(vec![]).await.unwrap();
    assert_eq!(m.sshd.connections(), 3);
    // The old connection still works for whoever holds it.
    second.exec("true").await.unwrap();

    // Concurrent callers of a machine that cannot be reached share one
    // failed attempt instead of each waiting out the timeout.
    let mut bad = t.clone();
    bad.port = free_port();
    let mut gets = Vec::new();
    for _ in 0..4 {
        let (pool, bad) = (pool.clone(), bad.clone());
        gets.push(tokio::spawn(async move { pool.get("h2", &bad).await }));
    }
    for g in gets {
        assert!(matches!(g.await.unwrap(), Err(SshError::Connect { .. })));
    }
}

/// Keep-alives: a server that stops answering is noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_notices_a_hung_server() {
    let Some(m) = machine().await else { return };
    let mut t = m.target();
    t.keepalive_interval = Duration::from_millis(300);
    let conn = SshConnection::connect(&t).await.unwrap();
    conn.exec("true").await.unwrap();
    // Idle but alive: keep-alives are answered.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!conn.is_closed());
    m.sshd.signal_sessions(rustix::process::Signal::STOP);
    let start = Instant::now();
    while !conn.is_closed() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "hung server not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("hung server noticed after {:?}", start.elapsed());
    m.sshd.signal_sessions(rustix::process::Signal::CONT);
}

/// 7: compression as the field lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_negotiation() {
    let Some(m) = machine().await else { return };
    let mut t = m.target();
    let conn = SshConnection::connect(&t).await.unwrap();
    assert_eq!(
        conn.negotiated_compression().as_deref(),
        Some("zlib@openssh.com")
    );
    // Data flows with compression on (it starts after authentication).
    let mut c = conn.connect_daemon(&m.socket, &m.store_dir).await.unwrap();
    let mut gen = NarGen::new(4 << 20, true);
    let len = gen.len();
    let p = c.add_to_store("zipped", &mut gen).await.unwrap();
    assert_eq!(c.path_info(&p).await.unwrap().unwrap().nar_size, len);
    println!("default compression: {:?}", conn.negotiated_compression());

    t.compression = "none".into();
    let conn = SshConnection::connect(&t).await.unwrap();
    assert_eq!(conn.negotiated_compression().as_deref(), Some("none"));
    conn.exec("true").await.unwrap();

    t.compression = "none,zlib@openssh.com".into();
    let conn = SshConnection::connect(&t).await.unwrap();
    assert_eq!(conn.negotiated_compression().as_deref(), Some("none"));

    // OpenSSH's sshd no longer offers pre-authentication "zlib".
    t.compression = "zlib".into();
    let e = SshConnection::connect(&t).await.unwrap_err();
    assert!(matches!(e, SshError::Compression { .. }), "{e:?}");
    assert!(e.to_string().contains("zlib@openssh.com"), "{e}");
    println!("{e}");
}

/// 8: running a command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_command() {
    let Some(m) = machine().await else { return };
    let conn = SshConnection::connect(&m.target()).await.unwrap();
    let out = conn.exec("echo hi; echo oops >&2; exit 3").await.unwrap();
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"oops\n");
    assert_eq!(out.status, Some(3));
    let out = conn.exec("kill -KILL $$").await.unwrap();
    assert_eq!(out.status, None);
    assert_eq!(out.signal.as_deref(), Some("KILL"));
}

/// 9: a large NAR streamed through SSH into the remote store with flat
/// memory; throughput of the channel alone and of add_to_store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfer() {
    let Some(m) = machine().await else { return };
    let mib: u64 = std::env::var("FERRY_SSH_TEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // FERRY_SSH_TEST_COMPRESSION=zlib@openssh.com measures with
    // compression (and compressible data) instead.
    let mut t = m.target();
    t.compression = std::env::var("FERRY_SSH_TEST_COMPRESSION").unwrap_or("none".into());
    let compressible = t.compression != "none";
    let conn = SshConnection::connect(&t).await.unwrap();

    // The channel alone: into a socket that discards.
    let sink_path = m.dir().join("sink.sock");
    let sink = tokio::net::UnixListener::bind(&sink_path).unwrap();
    let sink_task = tokio::spawn(async move {
        let (mut s, _) = sink.accept().await.unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            let k = s.read(&mut buf).await.unwrap();
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        s.write_all(&n.to_le_bytes()).await.unwrap();
        n
    });
    let mut stream = conn.open_socket(sink_path.to_str().unwrap()).await.unwrap();
    let mut gen = NarGen::new(mib << 20, compressible);
    let total = gen.len();
    let rss0 = vm_kib("VmRSS:");
    let start = Instant::now();
    tokio::io::copy(&mut gen, &mut stream).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut echoed = [0u8; 8];
    stream.read_exact(&mut echoed).await.unwrap();
    let raw = start.elapsed();
    assert_eq!(u64::from_le_bytes(echoed), total);
    assert_eq!(sink_task.await.unwrap(), total);

    // add_to_store: the daemon hashes and writes it.
    let mut c = conn.connect_daemon(&m.socket, &m.store_dir).await.unwrap();
    let mut peak = 0u64;
    let mut gen = NarGen::new(mib << 20, compressible);
    let start = Instant::now();
    let path = {
        let add = c.add_to_store("big", &mut gen);
        tokio::pin!(add);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                r = &mut add => break r.unwrap(),
                _ = tick.tick() => peak = peak.max(vm_kib("VmRSS:")),
            }
        }
    };
    let stored = start.elapsed();
    let info = c.path_info(&path).await.unwrap().unwrap();
    assert_eq!(info.nar_size, total);
    let growth_mib = peak.saturating_sub(rss0) / 1024;
    println!(
        "SSH loopback, {mib} MiB, compression {}: channel {:.0} MiB/s, add_to_store {:.0} MiB/s; RSS grew by at most {growth_mib} MiB",
        t.compression,
        mib_per_s(total, raw),
        mib_per_s(total, stored),
    );
    // Streams, never whole: far less than the transfer (other tests run in
    // this process too, hence the margin).
    assert!(
        growth_mib < 120.min(mib / 2 + 60),
        "RSS grew by {growth_mib} MiB"
    );

    // OpenSSH's own client on the same server, for comparison.
    let ssh = Path::new("/usr/bin/ssh");
    if ssh.exists() {
        let known = m.dir().join("known_hosts");
        std::fs::write(
            &known,
            format!("[127.0.0.1]:{} {}\n", m.sshd.port, m.sshd.ed25519_pub),
        )
        .unwrap();
        let mut child = Command::new(ssh)
            .args(["-o", "BatchMode=yes", "-o", "Compression=no"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .arg("-i")
            .arg(&m.key)
            .args([
                "-p",
                &m.sshd.port.to_string(),
                "root@127.0.0.1",
                "cat > /dev/null",
            ])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let start = Instant::now();
        let chunk = vec![0x5au8; 1 << 20];
        let ok = (0..mib).all(|_| stdin.write_all(&chunk).is_ok());
        drop(stdin);
        let st = child.wait().unwrap();
        let took = start.elapsed();
        if ok && st.success() {
            println!(
                "OpenSSH client, {mib} MiB, ssh host 'cat > /dev/null': {:.0} MiB/s",
                mib_per_s(mib << 20, took)
            );
        } else {
            let mut err = String::new();
            for l in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
                err += &l.unwrap_or_default();
            }
            println!("(OpenSSH comparison failed: {st}: {err})");
        }
    }
}
