//! Attacked as an unprivileged local user: who may use
//! a daemon (a personal daemon's owner only, by the socket's mode and by
//! `SO_PEERCRED`; a root daemon's `--allowed-users` and `--trusted-users`
//! with names and groups) and what an untrusted user may not do (import
//! unsigned items, turn the sandbox off, ask for `offloaded`). The bounds
//! of point 6 are attacked in `attack_bounds.rs`.

use ferry_test_support as support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_protocol::{BuildEvent, BuildOptions, ProtocolError, Request, Response};
use support::attacker::{runtime, tokio_stream, SharedDaemon, User};
use support::run_timeout;
use support::{ferry_bin, prerequisites};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The handshake over `stream`: Ok, or the daemon's refusal.
async fn handshake(stream: UnixStream, store: &Path) -> Result<(), String> {
    match ferry_protocol::Client::handshake(tokio_stream(stream), store.to_str().unwrap()).await {
        Ok(_) => Ok(()),
        Err(ProtocolError::Handshake(reason)) => Err(reason),
        Err(e) => Err(format!("not a refusal: {e}")),
    }
}

/// The output path `out` of a .drv (read from its ATerm).
fn drv_out(drv: &str) -> String {
    let t = fs::read_to_string(drv).unwrap();
    let i = t.find("(\"out\",\"").unwrap() + 8;
    t[i..i + t[i..].find('"').unwrap()].to_string()
}

// ---------------------------------------------------------------------------
// Point 5: who may use the daemon
// ---------------------------------------------------------------------------

/// A daemon run by `user` (not root) on a store in `dir`.
struct PersonalDaemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl PersonalDaemon {
    fn start(user: &User, dir: &Path) -> PersonalDaemon {
        let state = dir.join("state");
        let socket = state.join("daemon-socket/socket");
        let log = fs::File::create(dir.join("daemon.log")).unwrap();
        let child = user
            .command(ferry_bin())
            .args(["daemon", "--no-sandbox", "-j", "1"])
            .env("FERRY_STORE_DIR", dir.join("store"))
            .env("FERRY_STATE_DIR", &state)
            .env("FERRY_CONFIG_DIR", dir.join("config"))
            .env_remove("FERRY_DAEMON_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut d = PersonalDaemon {
            child,
            dir: dir.to_path_buf(),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d.socket.exists() {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("the personal daemon exited ({st}){}", d.log());
            }
            assert!(Instant::now() < deadline, "no socket{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        d
    }

    fn log(&self) -> String {
        format!(
            "\n--- personal daemon log ---\n{}",
            fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
        )
    }
}

impl Drop for PersonalDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
    }
}

#[test]
fn a_personal_daemon_serves_its_owner_only() {
    if !prerequisites(&["root"]) {
        return;
    }
    let victim = User::ensure("ferry-victim");
    let attacker = User::attacker();
    let tmp = tempfile::Builder::new()
        .prefix("ferry-personal-")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tmp.path();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(dir, Some(victim.uid), Some(victim.gid)).unwrap();
    let d = PersonalDaemon::start(&victim, dir);

    // The socket is the owner's only, in a directory others cannot enter.
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&d.socket), 0o600, "{}", d.log());
    assert_eq!(mode(d.socket.parent().unwrap()), 0o700);
    let e = attacker.connect(&d.socket).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");

    // Even with the socket opened up by mistake, the daemon itself refuses
    // another user (SO_PEERCRED), and serves its owner and root.
    fs::set_permissions(
        d.socket.parent().unwrap(),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o666)).unwrap();
    let store = dir.join("store");
    runtime().block_on(async {
        let why = handshake(attacker.connect(&d.socket).unwrap(), &store)
            .await
            .unwrap_err();
        assert!(
            why.contains("personal daemon of user 'ferry-victim'")
                && why.contains("'ferry-attacker'"),
            "{why}"
        );
        handshake(victim.connect(&d.socket).unwrap(), &store)
            .await
            .unwrap_or_else(|e| panic!("the owner was refused: {e}{}", d.log()));
        handshake(UnixStream::connect(&d.socket).unwrap(), &store)
            .await
            .unwrap_or_else(|e| panic!("root was refused: {e}"));
    });
    // The CLI says why.
    let out = run_timeout(
        attacker
            .command(ferry_bin())
            .args(["build", "/nonexistent/x.drv"])
            .env("FERRY_STORE_DIR", &store)
            .env("FERRY_DAEMON_SOCKET", &d.socket),
        60,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("personal daemon"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_root_daemon_applies_allowed_and_trusted_users_with_groups() {
    if !prerequisites(&["root"]) {
        return;
    }
    let attacker = User::attacker();
    // A group listing the attacker as a member (its connections carry no
    // supplementary groups: membership comes from the group database, as
    // in Nix), and one that does not.
    for g in ["ferry-access-members", "ferry-access-others"] {
        let _ = Command::new("groupadd").args(["--system", g]).output();
    }
    let out = Command::new("gpasswd")
        .args(["-a", "ferry-attacker", "ferry-access-members"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let cases: &[(&[&str], bool)] = &[
        (&[], true),
        (&["--allowed-users", "root someone-else"], false),
        (&["--allowed-users", "ferry-attacker"], true),
        (&["--allowed-users", "@ferry-access-members"], true),
        (&["--allowed-users", "@ferry-access-others"], false),
        // Its primary group (useradd --user-group).
        (&["--allowed-users", "@ferry-attacker"], true),
        (&["--allowed-users", "@nonexistent-group-xyz"], false),
        // Trusted users are always allowed.
        (
            &[
                "--allowed-users",
                "root",
                "--trusted-users",
                "root @ferry-access-members",
            ],
            true,
        ),
    ];
    for (args, allowed) in cases {
        let d = SharedDaemon::start(args);
        let got = runtime().block_on(async { d.client_as(&attacker).await.map(|_| ()) });
        match (got, allowed) {
            (Ok(()), true) => {}
            (Err(ProtocolError::Handshake(why)), false) => assert!(
                why.contains("'ferry-attacker' is not allowed") && why.contains("--allowed-users"),
                "{args:?}: {why}"
            ),
            (got, _) => panic!("{args:?}: {got:?}{}", d.log()),
        }
        // Root is always served.
        runtime().block_on(async {
            handshake(UnixStream::connect(&d.socket).unwrap(), &d.store)
                .await
                .unwrap()
        });
    }
    // A refused user's CLI says why and what to do.
    let d = SharedDaemon::start(&["--allowed-users", "root"]);
    let out = run_timeout(&mut d.ferry_as(&attacker, &["build", "/x.drv"]), 60);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not allowed to connect"),
        "{}",
        text(&out.stderr)
    );
}

/// A bundle of one unsigned item claiming `path`, holding a file `data`.
fn unsigned_bundle(path: &str, data: &[u8]) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    fs::write(&f, data).unwrap();
    let mut w = ferry_formats::export::ExportWriter::new(Vec::new());
    let meta = ferry_formats::export::ItemMeta {
        path: path.to_string(),
        references: vec![],
        deriver: None,
    };
    w.write_item(
        &meta,
        |out| ferry_formats::nar::dump(&f, out).map(|_| ()),
        None,
    )
    .unwrap();
    w.finish().unwrap()
}

#[test]
fn untrusted_users_cannot_import_unsigned_items() {
    if !prerequisites(&["root"]) {
        return;
    }
    let attacker = User::attacker();
    let d = SharedDaemon::start(&[]);
    // The victim: a derivation root will build. The attacker forges its
    // output.
    let drv = d.add_drv(None, "import-victim", "echo genuine > $out");
    let out_path = drv_out(&drv);
    let bundle = unsigned_bundle(&out_path, b"poisoned\n");

    // Through the CLI, checked or not.
    for args in [
        &["archive", "--import", "--no-check-sigs"][..],
        &["archive", "--import"][..],
    ] {
        let out = support::run(&mut d.ferry_as(&attacker, args), Some(&bundle));
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = text(&out.stderr);
        if args.len() == 3 {
            assert!(err.contains("trusted users"), "{err}");
        }
    }
    // Crafted frames, twice on one connection (it stays in step).
    runtime().block_on(async {
        let (mut r, mut w) = d.raw_as(&attacker).await;
        for _ in 0..2 {
            w.message(&Request::Import {
                no_check_sigs: true,
                expected: None,
            })
            .await
            .unwrap();
            w.data(&bundle).await.unwrap();
            w.end().await.unwrap();
            w.flush().await.unwrap();
            match r.message::<Response>().await.unwrap() {
                Response::Error { message } => assert!(message.contains("trusted"), "{message}"),
                other => panic!("{other:?}"),
            }
        }
    });
    assert!(!Path::new(&out_path).exists());
    let built = d.build_as_root(&drv);
    assert!(built.status.success(), "{}", text(&built.stderr));
    assert_eq!(fs::read_to_string(&out_path).unwrap(), "genuine\n");

    // Root, trusted, may import unsigned items (of a path not yet here).
    let other = unsigned_bundle(
        &format!(
            "{}/0000000000000000000000000000000a-unsigned",
            d.store.display()
        ),
        b"x",
    );
    let out = support::run(
        &mut d.ferry(&["archive", "--import", "--no-check-sigs"]),
        Some(&other),
    );
    assert!(out.status.success(), "{}{}", text(&out.stderr), d.log());
    d.assert_verify_clean();
}

#[test]
fn an_untrusted_no_sandbox_is_told_and_ignored() {
    if !prerequisites(&["root", "namespaces"]) {
        return;
    }
    let attacker = User::attacker();
    let d = SharedDaemon::start(&[]);
    // A host file outside the sandbox's host paths, readable by all.
    let marker = d.dir().join("host-marker");
    fs::write(&marker, "on the host").unwrap();
    fs::set_permissions(&marker, fs::Permissions::from_mode(0o644)).unwrap();
    let script = format!(
        "if [ -e {} ]; then echo host > $out; else echo sandboxed > $out; fi",
        marker.display()
    );
    let drv = d.add_drv(Some(&attacker), "sandbox-wish", &script);
    let out = run_timeout(
        &mut d.ferry_as(&attacker, &["build", "--no-sandbox", &drv]),
        300,
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}{}", d.log());
    assert!(
        err.contains("ferry: warning: the daemon ignored --no-sandbox: only trusted users may turn the sandbox off"),
        "{err}"
    );
    let path = text(&out.stdout).trim().to_string();
    assert_eq!(fs::read_to_string(&path).unwrap(), "sandboxed\n");

    // Crafted options: the sandbox wish and `offloaded`, both told.
    let drv2 = d.add_drv(Some(&attacker), "sandbox-wish-2", &script);
    let warnings = runtime().block_on(async {
        let mut c = d.client_as(&attacker).await.unwrap();
        let mut warnings = Vec::new();
        let opts = BuildOptions {
            sandbox: Some(false),
            offloaded: true,
            ..Default::default()
        };
        let res = c
            .build(vec![drv2.clone()], opts, |ev| {
                if let BuildEvent::Warning { message } = ev {
                    warnings.push(message)
                }
            })
            .await
            .unwrap();
        assert_eq!(res[0].status, ferry_protocol::BuildStatus::Built);
        warnings
    });
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[1].contains("'offloaded'"), "{warnings:?}");
    assert_eq!(fs::read_to_string(drv_out(&drv2)).unwrap(), "sandboxed\n");

    // Root (trusted) may turn it off, and is not warned.
    let drv3 = d.add_drv(None, "sandbox-wish-3", &script);
    let out = d.ferry(&["build", "--no-sandbox", &drv3]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fs::read_to_string(drv_out(&drv3)).unwrap(), "host\n");
    d.assert_verify_clean();
}
