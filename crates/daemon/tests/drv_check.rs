//! The engine re-checks every `.drv` before it plans a build, also one the
//! store's own rule never saw (a row written before that rule, a file
//! changed on disk): a forgery claiming another derivation's outputs is
//! never built, and the victim still builds what its builder writes.

use std::fs;
use std::sync::Arc;

use ferry_daemon::{Engine, EngineConfig};
use ferry_formats::derivation::{self, Derivation, DerivationError};
use ferry_formats::{nar, Sha256Hash, StorePath};
use ferry_protocol::{BuildOptions, BuildResult, BuildStatus};
use ferry_store::Store;
use ferry_test_support::store::{temp_store, unsandboxed};

fn engine(s: &Arc<Store>) -> Arc<Engine> {
    let settings = unsandboxed();
    Engine::new(s.clone(), EngineConfig::new(2, settings))
}

/// A /bin/sh derivation with its outputs computed (inputs: `inputs`).
fn sh_drv(s: &Store, name: &str, script: &str, inputs: &[&StorePath]) -> Derivation {
    let mut drv = Derivation {
        system: ferry_build::current_system(),
        builder: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    };
    for i in inputs {
        drv.input_drvs
            .insert(s.display(i), ["out".to_string()].into());
    }
    drv.env.insert("name".into(), name.into());
    drv.env.insert("builder".into(), "/bin/sh".into());
    drv.env.insert("system".into(), drv.system.clone());
    drv.env.insert("out".into(), String::new());
    drv.outputs.insert("out".into(), Default::default());
    let mut cache = derivation::DrvHashCache::new();
    let mut load = s.derivation_loader();
    drv.fill_output_paths(s.store_dir(), &mut cache.lookup(&mut load))
        .unwrap();
    drv
}

/// Write `text` as the text path `name` and register it straight in the
/// database, as a row written before the store checked derivations.
fn plant(s: &Store, name: &str, text: &str, refs: &[StorePath]) -> StorePath {
    let p = s
        .store_dir()
        .text_path(name, &Sha256Hash::digest(text), refs)
        .unwrap();
    fs::write(s.real_path(&p), text).unwrap();
    let mut nar_bytes = Vec::new();
    nar::dump_bytes(text.as_bytes(), false, &mut nar_bytes).unwrap();
    let db = rusqlite::Connection::open(s.locations().state_dir.join("db/db.sqlite")).unwrap();
    db.execute(
        "INSERT INTO ValidPaths (path, hash, registrationTime, narSize) VALUES (?1, ?2, 1, ?3)",
        rusqlite::params![
            s.display(&p),
            Sha256Hash::digest(&nar_bytes).to_typed_base16(),
            nar_bytes.len() as i64
        ],
    )
    .unwrap();
    for r in refs {
        db.execute(
            "INSERT INTO Refs (referrer, reference) SELECT a.id, b.id FROM ValidPaths a, ValidPaths b WHERE a.path = ?1 AND b.path = ?2",
            [s.display(&p), s.display(r)],
        )
        .unwrap();
    }
    p
}

async fn build(e: &Arc<Engine>, p: &StorePath) -> BuildResult {
    let (tx, _rx) = ferry_daemon::events::channel();
    e.build(vec![p.clone()], BuildOptions::default(), tx)
        .await
        .remove(0)
}

fn refused(r: &BuildResult, what: &str, wanted: &[&str]) {
    assert_eq!(r.status, BuildStatus::Failed, "{what}: {r:?}");
    let err = r.error.as_deref().unwrap_or_default();
    eprintln!("{what}: {err}");
    for w in wanted {
        assert!(err.contains(w), "{what}: wanted {w:?} in {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_derivations_are_refused_before_planning() {
    let tmp = tempfile::tempdir().unwrap();
    let s = temp_store(tmp.path());
    let e = engine(&s);
    let victim = sh_drv(&s, "victim", "echo victim > $out", &[]);
    let victim_path = s
        .add_derivation_text("victim.drv", &victim.to_aterm())
        .unwrap();
    let victim_out = victim.outputs["out"].path.clone();

    // A forgery registered behind the store's back, claiming the victim's
    // output; and a derivation that depends on it.
    let mut forged = victim.clone();
    forged.args[1] = "echo evil > $out".into();
    let forged_path = plant(&s, "victim.drv", &forged.to_aterm(), &[]);
    assert!(s.is_valid(&forged_path).unwrap());
    let expected = {
        let mut none = |p: &str| -> Result<Sha256Hash, DerivationError> {
            Err(DerivationError::Cycle(p.into()))
        };
        s.display(
            &forged
                .expected_output_paths(s.store_dir(), &mut none)
                .unwrap()["out"],
        )
    };
    // `ferry store verify` names it.
    let problems = s.verify().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, forged_path);
    assert!(problems[0].problem.contains(&victim_out), "{problems:?}");
    let r = build(&e, &forged_path).await;
    refused(
        &r,
        "forged",
        &[&s.display(&forged_path), &victim_out, &expected],
    );
    let user = sh_drv(&s, "user", "echo user > $out", &[&forged_path]);
    let user_path = plant(
        &s,
        "user.drv",
        &user.to_aterm(),
        std::slice::from_ref(&forged_path),
    );
    refused(
        &build(&e, &user_path).await,
        "user of the forgery",
        &[&s.display(&forged_path)],
    );

    // The victim's text under a name that is not a .drv: not a derivation.
    let plain = s
        .add_text("victim", victim.to_aterm().as_bytes(), &[])
        .unwrap();
    refused(&build(&e, &plain).await, "non-.drv", &["not a derivation"]);

    // A valid .drv whose file changed on disk.
    let other = sh_drv(&s, "other", "echo other > $out", &[]);
    let other_path = s
        .add_derivation_text("other.drv", &other.to_aterm())
        .unwrap();
    let real = s.real_path(&other_path);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&real, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&real, forged.to_aterm().replace("victim", "other")).unwrap();
    refused(
        &build(&e, &other_path).await,
        "changed on disk",
        &["ferry store verify"],
    );

    // Nothing took the victim's output; building the victim gives its own.
    assert!(!std::path::Path::new(&victim_out).exists());
    let r = build(&e, &victim_path).await;
    assert_eq!(r.status, BuildStatus::Built, "{r:?}");
    assert_eq!(fs::read_to_string(&victim_out).unwrap(), "victim\n");
    // Once the victim is built, the forgery is still refused (its outputs
    // are valid, so it would be "already valid" without the check).
    refused(
        &build(&e, &forged_path).await,
        "forged, outputs valid",
        &[&victim_out],
    );
}

/// As on a build machine: a derivation graph received by import from a
/// master (with the store's checks on the way in) is built there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_derivation_graph_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = {
        let master = temp_store(tmp.path());
        let base = sh_drv(&master, "base", "echo base > $out", &[]);
        let base_path = master
            .add_derivation_text("base.drv", &base.to_aterm())
            .unwrap();
        let user = sh_drv(
            &master,
            "user",
            &format!(
                "read l < {}; echo \"user $l\" > $out",
                base.outputs["out"].path
            ),
            &[&base_path],
        );
        let user_path = master
            .add_derivation_text("user.drv", &user.to_aterm())
            .unwrap();
        let mut bundle = Vec::new();
        master
            .export(std::slice::from_ref(&user_path), true, &mut bundle, None)
            .unwrap();
        bundle
    };
    // The build machine: the same store directory, its own state.
    fs::rename(tmp.path().join("store"), tmp.path().join("master-store")).unwrap();
    fs::rename(tmp.path().join("state"), tmp.path().join("master-state")).unwrap();
    let s = temp_store(tmp.path());
    let items = s
        .import(&mut bundle.as_slice(), &ferry_store::AcceptAll)
        .unwrap();
    assert_eq!(items.len(), 2);
    let user_path = items[1].path.clone();
    let r = build(&engine(&s), &user_path).await;
    assert_eq!(r.status, BuildStatus::Built, "{r:?}");
    assert_eq!(
        fs::read_to_string(&r.outputs["out"]).unwrap(),
        "user base\n"
    );
    assert!(s.verify().unwrap().is_empty());
}
