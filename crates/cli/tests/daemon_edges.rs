//! `ferry daemon` and `ferry build` as real processes, at the edges:
//! malformed frames on the socket, embedded mode (for a fresh user, and
//! beside a daemon on one store), a build filling the disk. The builds
//! themselves are in daemon.rs; the harness is ferry-test-support's
//! `daemon` module.
//!
//! Every wait is bounded; every daemon is killed by a guard (its log is
//! printed when the test fails); every store lives in a temp dir.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use ferry_test_support::daemon::*;
use ferry_test_support::{
    command, ferry_bin, is_root, prerequisites, private_mount_sh, run_timeout,
};

// ---------------------------------------------------------------------------
// 7. Protocol robustness
// ---------------------------------------------------------------------------

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend((payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn read_frame(s: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).ok()?;
    let len = u32::from_le_bytes(head[1..].try_into().unwrap()) as usize;
    assert!(len < 1 << 20, "a {len}-byte frame from the daemon");
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).ok()?;
    Some((head[0], p))
}

/// Read until EOF (bounded): the daemon closed the connection.
fn assert_closed(s: &mut UnixStream, what: &str, d: &Daemon) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!(
            "{what}: the daemon did not close the connection ({e}){}",
            d.log_text()
        ),
    }
}

fn hello(store: &str) -> Vec<u8> {
    frame(
        1,
        serde_json::json!({"protocol": 1, "version": "test", "store_dir": store})
            .to_string()
            .as_bytes(),
    )
}

#[test]
fn malformed_frames_close_one_connection_and_the_daemon_keeps_serving() {
    let env = Env::new();
    let mut d = env.daemon(&["--no-sandbox"]);
    let store = env.store.to_str().unwrap();
    let connect = || {
        let s = UnixStream::connect(&env.socket).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    // An idle connection must not hold anyone up.
    let _idle = connect();

    let mut big = vec![1u8];
    big.extend(u32::MAX.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ("oversized frame header", big.clone()),
        (
            "malformed JSON hello",
            frame(1, b"{\"protocol\": 1, \"store_dir\": "),
        ),
        ("a data frame instead of a hello", frame(2, b"data")),
        ("truncated frame", vec![1, 100, 0, 0, 0, b'{']),
    ];
    for (what, bytes) in &cases {
        let mut s = connect();
        let _ = s.write_all(bytes);
        if *what == "truncated frame" {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        assert_closed(&mut s, what, &d);
        d.assert_alive();
    }
    // After a good handshake: malformed requests close that session, with
    // an error message first.
    for (what, bytes) in [
        ("malformed JSON request", frame(1, b"{\"op\": \"build\", ")),
        ("unknown request", frame(1, b"{\"op\": \"format-disk\"}")),
        ("oversized request header", big.clone()),
    ] {
        let mut s = connect();
        s.write_all(&hello(store)).unwrap();
        let (kind, reply) = read_frame(&mut s).expect("handshake reply");
        assert_eq!(kind, 1);
        let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(v["handshake"], "welcome", "{v}");
        s.write_all(&bytes).unwrap();
        let rest = assert_closed(&mut s, what, &d);
        if !rest.is_empty() {
            let mut c = std::io::Cursor::new(rest);
            let mut head = [0u8; 5];
            c.read_exact(&mut head).unwrap();
            let mut p = Vec::new();
            c.read_to_end(&mut p).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v["reply"], "error", "{what}: {v}");
        }
        d.assert_alive();
    }
    // Another store directory is refused, naming both.
    let mut s = connect();
    s.write_all(&hello("/other/store")).unwrap();
    let (_, reply) = read_frame(&mut s).expect("a refusal");
    let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(v["handshake"], "refused", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("/other/store") && reason.contains(store),
        "{reason}"
    );
    assert_closed(&mut s, "refused hello", &d);
    // The same through the command line.
    let other = env.path("other-store");
    let mut c = env.ferry(&["build", "/nonexistent.scm"]);
    c.env("FERRY_STORE_DIR", &other);
    let o = run_timeout(&mut c, 30);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(other.to_str().unwrap()) && err.contains(store),
        "the refusal must name both stores:\n{err}"
    );

    // And the daemon still builds.
    let file = env.write("ok.scm", &sh_drv("still-ok", "echo ok > $out", &[]));
    let o = ok(
        run_timeout(&mut env.ferry(&["build", file.to_str().unwrap()]), 60),
        "build after the bad clients",
    );
    let out = lines(&o.stdout).pop().unwrap();
    assert_eq!(fs::read_to_string(out).unwrap(), "ok\n");
    d.assert_alive();
}

// ---------------------------------------------------------------------------
// 8. Embedded mode
// ---------------------------------------------------------------------------

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn embedded_build_works_for_a_fresh_user() {
    let env = Env::new();
    let hello = examples().join("hello.scm");
    let root = is_root();
    let mut c = env.ferry(&["build", hello.to_str().unwrap()]);
    for v in [
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "XDG_RUNTIME_DIR",
        "FERRY_DAEMON_SOCKET",
    ] {
        c.env_remove(v);
    }
    let o = ok(
        run_timeout(&mut c, 60),
        "embedded ferry build (FERRY_* set)",
    );
    let out = lines(&o.stdout);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].starts_with(env.store.to_str().unwrap()) && out[0].ends_with("-hello"));
    assert_eq!(fs::read_to_string(&out[0]).unwrap(), "Hello from Ferry!\n");
    assert!(
        !env.state.join("daemon-socket/socket").exists(),
        "no daemon socket expected"
    );
    env.verify_clean(None);

    if !root {
        // Nothing set at all but HOME: the per-user defaults.
        let mut c = command(ferry_bin(), &env.home);
        for v in [
            "XDG_DATA_HOME",
            "XDG_STATE_HOME",
            "XDG_CONFIG_HOME",
            "XDG_CACHE_HOME",
            "FERRY_DAEMON_SOCKET",
        ] {
            c.env_remove(v);
        }
        c.args(["build", hello.to_str().unwrap()]);
        let o = ok(run_timeout(&mut c, 60), "embedded ferry build (defaults)");
        let out = lines(&o.stdout);
        let store = env.home.join(".local/share/ferry/store");
        assert!(out[0].starts_with(store.to_str().unwrap()), "{out:?}");
        assert_eq!(fs::read_to_string(&out[0]).unwrap(), "Hello from Ferry!\n");
    }
}

#[test]
fn embedded_and_daemon_builds_on_one_store_build_each_derivation_once() {
    let env = Env::new();
    let counter = counter_file(&env);
    let c = counter.to_str().unwrap();
    let d = env.daemon(&["--no-sandbox", "--max-jobs", "3"]);
    let names: Vec<String> = (0..6).map(|i| format!("race{i}")).collect();
    let defs: String = names
        .iter()
        .map(|n| {
            format!(
                "(define {n} {})\n",
                sh_drv(
                    n,
                    &format!("echo {n} >> \"$COUNTER\"; sleep 0.5; echo {n} > $out"),
                    &[("COUNTER", c)]
                )
            )
        })
        .collect();
    let mut rev = names.clone();
    rev.reverse();
    let fwd = env.write("fwd.scm", &format!("{defs}(list {})\n", names.join(" ")));
    let bwd = env.write("bwd.scm", &format!("{defs}(list {})\n", rev.join(" ")));
    // Embedded clients: no daemon at their socket.
    let nowhere = env.path("no-daemon-here.sock");
    let mut clients = Vec::new();
    for (file, embedded) in [(&fwd, false), (&bwd, true), (&fwd, true), (&bwd, false)] {
        let mut cmd = env.ferry(&["build", "--no-sandbox", "-j", "3", file.to_str().unwrap()]);
        if embedded {
            cmd.env("FERRY_DAEMON_SOCKET", &nowhere);
        }
        clients.push(thread::spawn(move || {
            (embedded, run_timeout(&mut cmd, 120))
        }));
    }
    let mut outputs: BTreeMap<String, String> = BTreeMap::new();
    // All finish before anything is checked (none outlives the test).
    let done: Vec<_> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, (embedded, o)) in done.into_iter().enumerate() {
        if !o.status.success() {
            panic!(
                "client {i} (embedded: {embedded}) failed ({}):\n{}{}",
                o.status,
                text(&o.stderr),
                d.log_text()
            );
        }
        for p in lines(&o.stdout) {
            let name = fs::read_to_string(&p).unwrap().trim().to_string();
            assert!(p.ends_with(&format!("-{name}")), "{p} holds {name}");
            if let Some(prev) = outputs.insert(name.clone(), p.clone()) {
                assert_eq!(prev, p);
            }
        }
    }
    assert_eq!(outputs.len(), names.len(), "{outputs:?}");
    let built = counts(&counter);
    for n in &names {
        assert_eq!(
            built.get(n),
            Some(&1),
            "{n} must be built exactly once by the daemon and the embedded builds together: {built:?}"
        );
    }
    env.verify_clean(Some(&d));
}

// ---------------------------------------------------------------------------
// 9. A full disk
// ---------------------------------------------------------------------------

#[test]
fn build_filling_the_disk_fails_cleanly_and_the_store_stays_usable() {
    if !prerequisites(&["root", "namespaces"]) {
        return;
    }
    let env = Env::new();
    fs::create_dir_all(&env.store).unwrap();
    let big = env.write(
        "big.scm",
        &sh_drv(
            "big",
            "echo writing; head -c 10485760 /dev/zero > $out",
            &[],
        ),
    );
    let small = env.write("small.scm", &sh_drv("small", "echo small > $out", &[]));
    let ferry = ferry_bin();
    // In a private mount namespace: the store is a 4 MiB tmpfs (the state
    // directory, with the database and logs, stays on the disk).
    let script = r#"
set -u
mount -t tmpfs -o size=4m ferry-test-full "$FERRY_STORE_DIR" || exit 90
"$FERRY" build "$BIG" > "$T/big.out" 2> "$T/big.err"; echo $? > "$T/big.rc"
"$FERRY" store verify > "$T/verify.out" 2>&1; echo $? > "$T/verify.rc"
"$FERRY" build "$SMALL" > "$T/small.out" 2> "$T/small.err"; echo $? > "$T/small.rc"
cat "$(cat "$T/small.out")" > "$T/small.content" 2>&1
ls -a "$FERRY_STORE_DIR" > "$T/store.ls"
df -k "$FERRY_STORE_DIR" > "$T/df.out"
"#;
    let mut cmd = private_mount_sh(script);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &env.home)
        .env("FERRY_STORE_DIR", &env.store)
        .env("FERRY_STATE_DIR", &env.state)
        .env("FERRY_CONFIG_DIR", &env.config)
        .env("FERRY_DAEMON_SOCKET", env.path("no-daemon.sock"))
        .env("FERRY", ferry)
        .env("BIG", &big)
        .env("SMALL", &small)
        .env("T", env.dir());
    let o = run_timeout(&mut cmd, 120);
    let read = |n: &str| fs::read_to_string(env.path(n)).unwrap_or_default();
    let report = format!(
        "unshare: {} {}\nbig ({}): {}{}\nverify ({}): {}\nsmall ({}): {}{}\nstore: {}\ndf: {}",
        o.status,
        text(&o.stderr),
        read("big.rc").trim(),
        read("big.out"),
        read("big.err"),
        read("verify.rc").trim(),
        read("verify.out"),
        read("small.rc").trim(),
        read("small.out"),
        read("small.err"),
        read("store.ls"),
        read("df.out"),
    );
    eprintln!("{report}");
    assert!(o.status.success(), "{report}");
    let big_rc = read("big.rc").trim().to_string();
    assert!(
        big_rc != "0" && !big_rc.is_empty(),
        "the 10 MiB build on a 4 MiB store must fail\n{report}"
    );
    assert!(
        read("big.err").contains("error"),
        "no error message\n{report}"
    );
    assert_eq!(read("verify.rc").trim(), "0", "{report}");
    assert_eq!(read("small.rc").trim(), "0", "{report}");
    assert_eq!(read("small.content"), "small\n", "{report}");
    assert!(
        !read("store.ls").contains("-big\n"),
        "the big output is left in the store\n{report}"
    );
    // The tmpfs went with the namespace; the host's store dir is untouched.
    assert_eq!(fs::read_dir(&env.store).unwrap().count(), 0, "{report}");
}
