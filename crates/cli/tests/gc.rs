//! Garbage collection through a root daemon. Each kind of root
//! keeps its closure and the rest goes; `--delete` refuses a live path and
//! names its root; an unprivileged user cannot delete, list others' roots
//! or make the daemon delete what another client holds; a daemon killed
//! during a collection leaves a store that verifies clean once restarted;
//! builds (through the daemon and embedded), adds and collections in a
//! loop together never lose a path anyone holds.

use ferry_test_support as support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::attacker::{runtime, SharedDaemon, User};
use support::prerequisites;
use support::run_timeout;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `ferry build ARGS` through the daemon as root; the output paths.
fn build(d: &SharedDaemon, args: &[&str]) -> Vec<String> {
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    let out = run_timeout(&mut d.ferry(&a), 300);
    assert!(
        out.status.success(),
        "ferry {a:?}: {}{}",
        text(&out.stderr),
        d.log()
    );
    text(&out.stdout).lines().map(String::from).collect()
}

/// `ferry gc ARGS` as root: (success, stdout, stderr).
fn gc(d: &SharedDaemon, args: &[&str]) -> (bool, String, String) {
    let mut a = vec!["gc"];
    a.extend_from_slice(args);
    let out = run_timeout(&mut d.ferry(&a), 300);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Root, to connect as (the daemon's own user: trusted).
fn root_user() -> User {
    User {
        name: "root".into(),
        uid: 0,
        gid: 0,
        home: "/root".into(),
    }
}

fn exists(p: &str) -> bool {
    fs::symlink_metadata(p).is_ok()
}

#[test]
fn each_kind_of_root_keeps_its_closure_and_the_rest_goes() {
    if !prerequisites(&["root"]) {
        return;
    }
    let d = SharedDaemon::start(&["--no-sandbox"]);
    let drv = |n: &str| d.add_drv(None, n, &format!("echo {n} > $out"));
    let (da, db, dc, dd, de) = (drv("a"), drv("b"), drv("c"), drv("d"), drv("e"));
    let result = d.root.join("result-a");
    let a = build(&d, &["--root", result.to_str().unwrap(), &da]).remove(0);
    assert_eq!(fs::read_link(&result).unwrap().to_str().unwrap(), a);
    let b = build(&d, &[&db]).remove(0);
    let c = build(&d, &[&dc]).remove(0);
    let dout = build(&d, &[&dd]).remove(0);
    let e = build(&d, &[&de]).remove(0);
    let per_user = d.state.join("gcroots/per-user/alice");
    fs::create_dir_all(&per_user).unwrap();
    symlink(&c, per_user.join("profile")).unwrap();
    symlink(&dout, d.state.join("gcroots/direct")).unwrap();

    let rt = runtime();
    let mut holder = rt.block_on(d.client_as(&root_user())).unwrap();
    rt.block_on(holder.add_temp_root(&e)).unwrap();

    let (ok, _, err) = gc(&d, &["--list-dead"]);
    assert!(ok, "{err}");
    let (ok, _, err) = gc(&d, &[]);
    assert!(ok, "{err}{}", d.log());
    assert!(err.contains("freed"), "{err}");
    for (what, p) in [
        ("indirect (--root)", &a),
        ("per-user", &c),
        ("direct", &dout),
        ("temporary", &e),
    ] {
        assert!(exists(p), "the {what} root's path {p} was collected");
    }
    assert!(!exists(&b), "{b} has no root and was kept");
    assert!(!exists(&db), "{db} has no root and was kept");
    // keep-derivations (the default): the derivers of live paths stay.
    assert!(exists(&da), "{da} (deriver of a live path) was collected");

    let (ok, roots, err) = gc(&d, &["--list-roots"]);
    assert!(ok, "{err}");
    for r in [
        result.clone(),
        per_user.join("profile"),
        d.state.join("gcroots/direct"),
    ] {
        assert!(roots.contains(r.to_str().unwrap()), "{r:?} not in {roots}");
    }
    let (ok, live, _) = gc(&d, &["--list-live"]);
    assert!(ok && live.contains(&a) && live.contains(&e) && !live.contains(&b));
    let (ok, reqs, _) = gc(&d, &["--requisites", &da]);
    assert!(ok && reqs.contains(&da), "{reqs}");
    let (ok, refs, _) = gc(&d, &["--referrers", &da]);
    assert!(ok && refs.trim().is_empty(), "{refs}");

    // --delete refuses a live path and names the root that keeps it.
    let (ok, _, err) = gc(&d, &["--delete", &a]);
    assert!(!ok, "deleted a live path");
    assert!(err.contains(result.to_str().unwrap()), "{err}");
    assert!(exists(&a));
    // Once the connection holding it is gone, it is dead and goes.
    drop(holder);
    std::thread::sleep(Duration::from_millis(200));
    let (ok, _, err) = gc(&d, &["--delete", &e]);
    assert!(ok, "{err}");
    assert!(!exists(&e));
    // Removing the --root link frees its path.
    fs::remove_file(&result).unwrap();
    let (ok, _, err) = gc(&d, &["-C", "1KiB"]);
    assert!(ok, "{err}");
    let (ok, _, _) = gc(&d, &[]);
    assert!(ok);
    assert!(!exists(&a), "{a} outlived its --root link");
    d.assert_verify_clean();
}

#[test]
fn an_unprivileged_user_cannot_delete_list_others_roots_or_collect_what_a_client_holds() {
    if !prerequisites(&["root"]) {
        return;
    }
    let d = SharedDaemon::start(&["--no-sandbox"]);
    let attacker = User::attacker();
    let kept = build(&d, &[&d.add_drv(None, "kept", "echo kept > $out")]).remove(0);
    let held = build(&d, &[&d.add_drv(None, "held", "echo held > $out")]).remove(0);
    fs::create_dir_all(d.state.join("gcroots")).unwrap();
    symlink(&kept, d.state.join("gcroots/secret-root")).unwrap();
    let rt = runtime();
    let mut holder = rt.block_on(d.client_as(&root_user())).unwrap();
    rt.block_on(holder.add_temp_root(&held)).unwrap();

    let out = run_timeout(&mut d.ferry_as(&attacker, &["gc", "--delete", &held]), 60);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("trusted"),
        "{}",
        text(&out.stderr)
    );
    let out = run_timeout(&mut d.ferry_as(&attacker, &["gc", "--list-roots"]), 60);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("secret-root"),
        "{}",
        text(&out.stdout)
    );
    // Any allowed user may collect: what is held or rooted stays.
    let out = run_timeout(&mut d.ferry_as(&attacker, &["gc"]), 120);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(exists(&held) && exists(&kept));
    // Nor by raw requests, nor by overriding keep settings.
    let mut c = rt.block_on(d.client_as(&attacker)).unwrap();
    let r = rt.block_on(c.collect_garbage(
        ferry_protocol::GcRequest::DeleteSpecific {
            paths: vec![held.clone()],
        },
        None,
        None,
    ));
    assert!(r.is_err(), "{r:?}");
    assert!(exists(&held));
    drop(holder);
    d.assert_verify_clean();
}

/// A daemon on `d`'s directories, as `SharedDaemon` starts one.
fn start_again(d: &SharedDaemon) -> Child {
    let _ = fs::remove_file(&d.socket);
    let log = fs::OpenOptions::new()
        .append(true)
        .open(d.root.join("daemon.log"))
        .unwrap();
    let mut cmd = d.ferry(&[
        "daemon",
        "--no-sandbox",
        "--listen",
        d.socket.to_str().unwrap(),
    ]);
    cmd.env("FERRY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not restart{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn store_entries(store: &Path) -> usize {
    fs::read_dir(store).unwrap().count()
}

#[test]
fn a_daemon_killed_during_a_collection_restarts_clean_and_the_next_collection_finishes() {
    if !prerequisites(&["root"]) {
        return;
    }
    let d = SharedDaemon::start(&["--no-sandbox"]);
    let rt = runtime();
    let n = 3000;
    rt.block_on(async {
        let mut c = d.client_as(&root_user()).await.unwrap();
        for i in 0..n {
            let body = format!("dead path {i}\n").repeat(200);
            c.add_text(&format!("dead-{i}"), &body, vec![])
                .await
                .unwrap();
        }
    });
    let before = store_entries(&d.store);
    assert!(before >= n);
    let mut gc_child = d
        .ferry(&["gc"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as the collection has deleted something.
    let deadline = Instant::now() + Duration::from_secs(60);
    while store_entries(&d.store) == before {
        assert!(Instant::now() < deadline, "the collection deleted nothing");
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: kill of the daemon this test started.
    unsafe { libc::kill(d.pid() as i32, libc::SIGKILL) };
    let _ = gc_child.wait();
    let left = store_entries(&d.store);
    eprintln!("killed with {left} of {before} store entries left");
    let mut again = start_again(&d);
    d.assert_verify_clean();
    let (ok, _, err) = gc(&d, &[]);
    assert!(ok, "{err}{}", d.log());
    assert_eq!(
        store_entries(&d.store),
        0,
        "dead paths left after the second collection"
    );
    d.assert_verify_clean();
    let _ = again.kill();
    let _ = again.wait();
}

/// One build of a source and two derivations (b reads a's output, a reads
/// the source), through the daemon or embedded; its output is rooted by
/// `--root` and checked.
fn stress_build(d: &SharedDaemon, tag: &str, i: usize, embedded: bool) -> (String, String) {
    let dir = d.root.join(format!("stress-{tag}"));
    fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("src-{i}.txt"));
    fs::write(&src, format!("source {tag} {i}\n")).unwrap();
    let file = dir.join(format!("build-{i}.scm"));
    fs::write(
        &file,
        format!(
            r#"(define env '(("PATH" . "/bin:/usr/bin")))
(define src (local-file "src-{i}.txt"))
(define a (derivation "a-{tag}-{i}" #:builder "/bin/sh" #:env env
  #:args (list "-c" (string-append "cat " src " > $out"))))
(derivation "b-{tag}-{i}" #:builder "/bin/sh" #:env env
  #:args (list "-c" (string-append "cat " (derivation-output a) " > $out; echo b >> $out")))
"#
        ),
    )
    .unwrap();
    let root = dir.join(format!("result-{i}"));
    let mut cmd = d.ferry(&[
        "build",
        "--no-sandbox",
        "--root",
        root.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    if embedded {
        cmd.env("FERRY_DAEMON_SOCKET", d.root.join("no-daemon-here"));
    }
    let out = run_timeout(&mut cmd, 300);
    assert!(
        out.status.success(),
        "build {tag} {i} failed: {}{}",
        text(&out.stderr),
        d.log()
    );
    let path = text(&out.stdout).trim().to_string();
    let want = format!("source {tag} {i}\nb\n");
    assert_eq!(fs::read_to_string(&path).unwrap(), want, "{path}");
    (path, want)
}

#[test]
fn builds_adds_and_imports_never_lose_a_path_while_collections_run_in_a_loop() {
    if !prerequisites(&["root"]) {
        return;
    }
    let d = SharedDaemon::start(&["--no-sandbox"]);
    let secs: u64 = std::env::var("FERRY_GC_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let until = Instant::now() + Duration::from_secs(secs);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (built, collections, held) = std::thread::scope(|s| {
        let collector = s.spawn(|| {
            let mut n = 0;
            while Instant::now() < until {
                let (ok, _, err) = gc(&d, &[]);
                assert!(ok, "collection {n} failed: {err}{}", d.log());
                n += 1;
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            n
        });
        let builders: Vec<_> = [("daemon", false), ("embedded", true)]
            .into_iter()
            .map(|(tag, embedded)| {
                let (d, stop) = (&d, &stop);
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        out.push(stress_build(d, tag, i, embedded));
                        i += 1;
                    }
                    out
                })
            })
            .collect();
        // Adds and imports on connections that hold what they touch.
        let adder = s.spawn(|| {
            let rt = runtime();
            rt.block_on(async {
                let mut c = d.client_as(&root_user()).await.unwrap();
                let mut held: Vec<String> = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let refs: Vec<String> = held.last().cloned().into_iter().collect();
                    let p = c
                        .add_text(&format!("held-{i}"), &format!("held {i}\n"), refs)
                        .await
                        .unwrap();
                    held.push(p.clone());
                    // Exported, deleted (a second connection asks), imported.
                    let mut bundle = Vec::new();
                    {
                        let mut other = d.client_as(&root_user()).await.unwrap();
                        let q = other
                            .add_text(&format!("moved-{i}"), &format!("moved {i}\n"), vec![])
                            .await
                            .unwrap();
                        other
                            .export(vec![q.clone()], false, &mut bundle)
                            .await
                            .unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let imported = c.import_with(&mut bundle.as_slice(), true).await.unwrap();
                    held.extend(imported);
                    let valid = c.query_valid(held.clone()).await.unwrap();
                    assert_eq!(valid.len(), held.len(), "a held path was collected");
                    i += 1;
                }
                for p in &held {
                    assert!(exists(p), "held path {p} is gone");
                }
                held.len()
            })
        });
        let built: Vec<_> = builders
            .into_iter()
            .flat_map(|b| b.join().unwrap())
            .collect();
        (built, collector.join().unwrap(), adder.join().unwrap())
    });
    eprintln!(
        "{} builds, {held} held adds and imports, {collections} collections in {secs} s",
        built.len()
    );
    assert!(collections >= 3 && built.len() >= 4, "too little happened");
    let mut lost = Vec::new();
    for (path, want) in &built {
        if fs::read_to_string(path).ok().as_deref() != Some(want.as_str()) {
            lost.push(path.clone());
        }
    }
    if !lost.is_empty() {
        let auto: Vec<_> = fs::read_dir(d.state.join("gcroots/auto"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                format!("{} -> {:?}", p.display(), fs::read_link(&p))
            })
            .collect();
        let links: Vec<_> = ["daemon", "embedded"]
            .iter()
            .flat_map(|t| fs::read_dir(d.root.join(format!("stress-{t}"))).unwrap())
            .map(|e| e.unwrap().path())
            .filter_map(|p| {
                fs::read_link(&p)
                    .ok()
                    .map(|t| format!("{} -> {}", p.display(), t.display()))
            })
            .filter(|l| lost.iter().any(|x| l.ends_with(x.as_str())))
            .collect();
        panic!(
            "lost {lost:?}\nlinks to them: {links:?}\n{} auto links: {:?}",
            auto.len(),
            auto.iter()
                .filter(|a| links
                    .iter()
                    .any(|l| a.contains(l.split(" -> ").next().unwrap())))
                .collect::<Vec<_>>()
        );
    }
    for (path, want) in &built {
        assert_eq!(
            fs::read_to_string(path).ok().as_deref(),
            Some(want.as_str()),
            "{path} (rooted by --root) changed or went"
        );
    }
    d.assert_verify_clean();
    let (ok, _, err) = gc(&d, &[]);
    assert!(ok, "{err}");
    d.assert_verify_clean();
}

#[test]
fn each_user_of_a_shared_daemon_gets_a_roots_directory_that_keeps_paths() {
    if !prerequisites(&["root", "namespaces"]) {
        return;
    }
    let d = SharedDaemon::start(&[]);
    let attacker = User::attacker();
    // The user's first connection makes STATE/gcroots/per-user/USER, theirs.
    let drv = d.add_drv(Some(&attacker), "mine", "echo mine > $out");
    let out = run_timeout(&mut d.ferry_as(&attacker, &["build", &drv]), 120);
    assert!(out.status.success(), "{}{}", text(&out.stderr), d.log());
    let path = text(&out.stdout).trim().to_string();
    let dir = d.state.join("gcroots/per-user").join(&attacker.name);
    let meta = fs::symlink_metadata(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(meta.is_dir());
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), attacker.uid);
    // A link the user puts there keeps the path.
    let link = dir.join("keep");
    let o = run_timeout(attacker.command("ln").args(["-s", &path]).arg(&link), 30);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (ok, _, err) = gc(&d, &[]);
    assert!(ok, "{err}");
    assert!(exists(&path), "a per-user root did not keep {path}");
    fs::remove_file(&link).unwrap();
    let (ok, _, err) = gc(&d, &[]);
    assert!(ok, "{err}");
    assert!(!exists(&path), "{path} kept without its root");
}
