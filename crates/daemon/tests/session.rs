//! The daemon's session layer over an in-memory byte stream: every
//! operation of the protocol against a real store, and archives that
//! stream through it both ways.

use std::fs;
use std::sync::Arc;

use ferry_daemon::{session, Daemon, Engine, EngineConfig};
use ferry_protocol::{BuildOptions, BuildStatus, Client};
use ferry_store::Store;
use ferry_test_support::store::{temp_store_with_state, unsandboxed};

fn daemon(store: Arc<Store>) -> Arc<Daemon> {
    let settings = unsandboxed();
    Daemon::new(Engine::new(store, EngineConfig::new(2, settings))).unwrap()
}

async fn connect(d: &Arc<Daemon>, store_dir: &str) -> Client<tokio::io::DuplexStream> {
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::spawn(session::serve(b, d.clone()));
    Client::handshake(a, store_dir).await.unwrap()
}

/// A derivation running `script`, as ATerm text for `add_text`.
fn drv_text(s: &Store, name: &str, script: &str) -> String {
    let mut drv = ferry_formats::derivation::Derivation {
        system: ferry_build::current_system(),
        builder: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    };
    drv.env.insert("name".into(), name.into());
    drv.env.insert("builder".into(), "/bin/sh".into());
    drv.env.insert("system".into(), drv.system.clone());
    drv.env.insert("out".into(), String::new());
    drv.outputs.insert("out".into(), Default::default());
    let mut none = |p: &str| -> Result<
        ferry_formats::Sha256Hash,
        ferry_formats::derivation::DerivationError,
    > { Err(ferry_formats::derivation::DerivationError::Cycle(p.into())) };
    drv.fill_output_paths(s.store_dir(), &mut none).unwrap();
    drv.to_aterm()
}

/// A daemon on a fresh store under `root`, a client of it, and the path of
/// a derivation `name` running `script`, added through the client.
async fn daemon_with_drv(
    root: &std::path::Path,
    name: &str,
    script: &str,
) -> (
    Arc<Store>,
    Arc<Daemon>,
    Client<tokio::io::DuplexStream>,
    String,
) {
    let s = temp_store_with_state(root, "state");
    let d = daemon(s.clone());
    let mut c = connect(&d, s.store_dir().as_str()).await;
    let drv = c
        .add_text(&format!("{name}.drv"), &drv_text(&s, name, script), vec![])
        .await
        .unwrap();
    (s, d, c, drv)
}

/// A client that goes away mid-build: the build is cancelled and no longer
/// counted as running (machine info, which a master reads, says 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_build_is_not_counted_as_running() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, d, mut c, drv) =
        daemon_with_drv(tmp.path(), "slow", "/bin/sleep 30; echo > $out").await;
    let dir = s.store_dir().to_string();
    let build = tokio::spawn(async move {
        let _ = c.build(vec![drv], BuildOptions::default(), |_| {}).await;
    });
    let mut probe = connect(&d, &dir).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while probe.machine_info().await.unwrap().builds_running == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the build never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    build.abort(); // the client goes away
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while probe.machine_info().await.unwrap().builds_running != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "still counted as running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_over_the_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let s = temp_store_with_state(tmp.path(), "state");
    let dir = s.store_dir().to_string();
    let d = daemon(s.clone());
    let mut c = connect(&d, &dir).await;
    assert_eq!(c.welcome().store_dir, dir);

    // Add a tree as a NAR stream.
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), vec![42u8; 3 << 20]).unwrap();
    let mut nar = Vec::new();
    ferry_formats::nar::dump(&src, &mut nar).unwrap();
    let added = c.add_to_store("src", &mut nar.as_slice()).await.unwrap();
    assert_eq!(added, s.display(&s.add_tree(&src, "src").unwrap()));

    // Query, path info, machine info, temp roots.
    let missing = format!("{dir}/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo");
    let valid = c
        .query_valid(vec![added.clone(), missing.clone()])
        .await
        .unwrap();
    assert_eq!(valid, vec![added.clone()]);
    let info = c.path_info(&added).await.unwrap().unwrap();
    assert_eq!(info.nar_size, nar.len() as u64);
    assert!(c.path_info(&missing).await.unwrap().is_none());
    let mi = c.machine_info().await.unwrap();
    assert!(mi.cores >= 1 && mi.free_bytes > 0 && mi.store_dir == dir);
    c.add_temp_root(&added).await.unwrap();

    // A derivation sent as text, built, its log read back.
    let drv_text = drv_text(&s, "hi", "echo building; echo hi > $out");
    let drv_path = c.add_text("hi.drv", &drv_text, vec![]).await.unwrap();
    // A .drv whose outputs were tampered with is refused.
    let tampered = drv_text.replacen("-hi\"", "-ho\"", 1);
    assert!(c.add_text("hi.drv", &tampered, vec![]).await.is_err());
    let mut lines = Vec::new();
    let results = c
        .build(vec![drv_path.clone()], BuildOptions::default(), |ev| {
            if let ferry_protocol::BuildEvent::Log { line, .. } = ev {
                lines.push(line)
            }
        })
        .await
        .unwrap();
    assert_eq!(results[0].status, BuildStatus::Built, "{:?}", results[0]);
    assert_eq!(lines, vec!["building"]);
    assert_eq!(c.log(&drv_path).await.unwrap(), "building\n");
    let out = results[0].outputs["out"].clone();
    assert_eq!(fs::read_to_string(&out).unwrap(), "hi\n");
    // Asking again: already valid, nothing rebuilt.
    let again = c
        .build(vec![drv_path], BuildOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(again[0].status, BuildStatus::AlreadyValid);

    // Export the closure and import it into a second store with the same
    // store directory, through a second daemon.
    let mut bundle = Vec::new();
    c.export(vec![out.clone(), added.clone()], true, &mut bundle)
        .await
        .unwrap();
    fs::rename(tmp.path().join("store"), tmp.path().join("store-a")).unwrap();
    let s2 = temp_store_with_state(tmp.path(), "state2");
    let d2 = daemon(s2.clone());
    // The second store trusts the first daemon's key (they share a config
    // directory here, so its ACL is that directory's).
    let mut acl = ferry_trust::Acl::load(&s2.locations().config_dir).unwrap();
    acl.authorize(d.public_key());
    acl.save(&s2.locations().config_dir).unwrap();
    let mut c2 = connect(&d2, &dir).await;
    let imported = c2.import(&mut bundle.as_slice()).await.unwrap();
    assert_eq!(imported.len(), 2);
    assert_eq!(c2.query_valid(vec![out, added]).await.unwrap().len(), 2);
    assert!(s2.verify().unwrap().is_empty());
    // A truncated bundle is refused and the connection stays usable.
    let cut = &bundle[..bundle.len() / 2];
    assert!(c2.import(&mut &cut[..]).await.is_err());
    assert!(c2.machine_info().await.is_ok());
}

#[tokio::test]
async fn another_store_directory_is_refused_with_both_named() {
    let tmp = tempfile::tempdir().unwrap();
    let s = temp_store_with_state(tmp.path(), "state");
    let d = daemon(s.clone());
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::spawn(session::serve(b, d.clone()));
    let err = Client::handshake(a, "/nix/store")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("/nix/store") && err.contains(&s.store_dir().to_string()),
        "{err}"
    );
}

/// A build's duration goes into the build-time history under its name, and
/// estimates the next version of the same package (the farm's queue is
/// ordered by these estimates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_records_how_long_it_took() {
    let tmp = tempfile::tempdir().unwrap();
    let (_s, _d, mut c, drv) =
        daemon_with_drv(tmp.path(), "timed-1.0", "/bin/sleep 0.3; echo > $out").await;
    let res = c
        .build(vec![drv], BuildOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(res[0].status, BuildStatus::Built, "{res:?}");
    let history =
        ferry_daemon::history::BuildTimes::open(&tmp.path().join("state/db/build-times.sqlite"))
            .unwrap();
    // Recorded off the async threads, just after the result.
    let mut est = history.estimates(&["timed-1.0", "timed-1.1", "other-1.0"]);
    for _ in 0..50 {
        if est[0].is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        est = history.estimates(&["timed-1.0", "timed-1.1", "other-1.0"]);
    }
    let took = est[0].expect("recorded under its name");
    assert!((0.3..10.0).contains(&took), "{took}");
    assert_eq!(est[1], Some(took), "the package's next version");
    assert_eq!(est[2], None);
}
