//! What happens after a builder exits: fixed outputs checked against their
//! hash (flat and recursive, every algorithm, good and bad), and any failure
//! of registration leaving nothing behind so that a retry works. The
//! builders run without the sandbox (plain `/bin/sh` on this machine).

use std::collections::BTreeSet;
use std::sync::Arc;

use ferry_build::current_system;
use ferry_build::{build, BuildJob, BuildSettings, Outcome};
use ferry_formats::content_hash::{Hash, HashAlgo};
use ferry_formats::derivation::{Derivation, DrvHashCache, Output};
use ferry_formats::nar;
use ferry_store::Store;
use ferry_test_support::store::temp_store;

/// A derivation `name` whose builder runs `script` in /bin/sh; fixed-output
/// when `fixed` is `Some((hashAlgo, hash))`.
fn job(store: &Store, name: &str, script: &str, fixed: Option<(&str, &str)>) -> BuildJob {
    let (hash_algo, hash) = fixed.unwrap_or(("", ""));
    let mut drv = Derivation {
        system: current_system(),
        builder: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    };
    drv.outputs.insert(
        "out".into(),
        Output {
            path: String::new(),
            hash_algo: hash_algo.into(),
            hash: hash.into(),
        },
    );
    drv.env.insert("name".into(), name.into());
    drv.env.insert("out".into(), String::new());
    drv.env.insert("PATH".into(), "/usr/bin:/bin".into());
    let drv_path = store
        .add_derivation(&mut drv, &mut DrvHashCache::new())
        .unwrap();
    BuildJob {
        drv_path,
        drv,
        input_closure: BTreeSet::new(),
        // A build user's ids: a root daemon never runs builders as root.
        uid: 30321,
        gid: 30321,
    }
}

async fn run(store: &Arc<Store>, job: &BuildJob) -> Outcome {
    build(store, job, &BuildSettings::default(), &mut |_| {})
        .await
        .unwrap()
}

fn out_path(store: &Store, job: &BuildJob) -> ferry_formats::StorePath {
    store.parse_path(&job.drv.outputs["out"].path).unwrap()
}

/// The store directory holds only the valid paths (no output, no temporary).
/// A finished build's chroot is removed off its critical path: wait (bounded)
/// for that first.
fn assert_only_valid_paths(store: &Store) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(store.real_store_dir()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".ferry-chroot-")
    }) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let valid: BTreeSet<String> = store
        .all_valid()
        .unwrap()
        .iter()
        .map(|p| p.base_name().to_string())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(store.real_store_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".links")
        .collect();
    assert_eq!(on_disk, valid);
    assert!(store.verify().unwrap().is_empty());
}

fn failure(outcome: Outcome) -> String {
    match outcome {
        Outcome::Failed { message, .. } => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn fixed_outputs_are_registered_only_with_their_hash() {
    let dir = tempfile::tempdir().unwrap();
    let s = temp_store(dir.path());
    // The output a "good" builder writes: a file "abc", or a tree holding it.
    let mut tree_nar = Vec::new();
    {
        let t = dir.path().join("tree");
        std::fs::create_dir(&t).unwrap();
        std::fs::write(t.join("f"), "abc").unwrap();
        nar::dump(&t, &mut tree_nar).unwrap();
    }
    let flat_script = "printf abc > $out";
    let rec_script = "mkdir $out && printf abc > $out/f";
    for algo in [
        HashAlgo::Md5,
        HashAlgo::Sha1,
        HashAlgo::Sha256,
        HashAlgo::Sha512,
    ] {
        let flat = Hash::digest(algo, b"abc");
        let rec = Hash::digest(algo, &tree_nar);
        let other = Hash::digest(algo, b"something else");
        let cases = [
            // (mode, hash declared, script, expected ca or failure)
            (
                "",
                &flat,
                flat_script,
                Ok(format!("fixed:{algo}:{}", flat.to_nix32())),
            ),
            (
                "r:",
                &rec,
                rec_script,
                Ok(format!("fixed:r:{algo}:{}", rec.to_nix32())),
            ),
            ("", &other, flat_script, Err(("hash mismatch", &flat))),
            ("r:", &other, rec_script, Err(("hash mismatch", &rec))),
        ];
        for (i, (mode, declared, script, want)) in cases.into_iter().enumerate() {
            let name = format!("fixed-{algo}-{i}");
            // The nix32 spelling for a change; base16 is what Nix writes.
            let j = job(
                &s,
                &name,
                script,
                Some((&format!("{mode}{algo}"), &declared.to_nix32())),
            );
            let out = out_path(&s, &j);
            let outcome = run(&s, &j).await;
            match want {
                Ok(ca) => {
                    assert!(
                        matches!(outcome, Outcome::Built { .. }),
                        "{name}: {outcome:?}"
                    );
                    let info = s.valid_info(&out).unwrap();
                    assert_eq!(info.ca.as_deref(), Some(ca.as_str()), "{name}");
                    assert!(info.references.is_empty());
                }
                Err((what, got)) => {
                    let message = failure(outcome);
                    assert!(message.starts_with(what), "{name}: {message}");
                    assert!(
                        message.contains(&format!("specified: {}", declared.to_sri()))
                            && message.contains(&format!("got:    {}", got.to_sri())),
                        "{message}"
                    );
                    assert!(!s.is_valid(&out).unwrap());
                    assert!(!s.real_path(&out).exists(), "{name}: output left behind");
                }
            }
        }
    }
    assert_only_valid_paths(&s);
}

#[tokio::test]
async fn flat_mode_refuses_an_executable_file_or_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let s = temp_store(dir.path());
    let h = Hash::digest(HashAlgo::Sha256, b"abc").to_base16();
    for (name, script) in [
        ("exec", "printf abc > $out && chmod +x $out"),
        ("dir", "mkdir $out && printf abc > $out/f"),
        ("link", "printf abc > $TMPDIR/f && ln -s $TMPDIR/f $out"),
    ] {
        let j = job(&s, name, script, Some(("sha256", &h)));
        let out = out_path(&s, &j);
        let message = failure(run(&s, &j).await);
        assert_eq!(
            message,
            format!(
                "output path '{}' should be a non-executable regular file since recursive hashing is not enabled (outputHashMode=flat)",
                s.display(&out)
            )
        );
        assert!(!s.real_path(&out).exists());
    }
    assert_only_valid_paths(&s);
}

#[tokio::test]
async fn a_fixed_output_may_not_refer_to_store_paths() {
    let dir = tempfile::tempdir().unwrap();
    let s = temp_store(dir.path());
    let dep = s.add_text("dep", b"dep", &[]).unwrap();
    let text = format!("{}\n", s.display(&dep));
    let h = Hash::digest(HashAlgo::Sha256, text.as_bytes()).to_base16();
    let mut j = job(
        &s,
        "refers",
        &format!("printf '%s\\n' {} > $out", s.display(&dep)),
        Some(("sha256", &h)),
    );
    j.input_closure.insert(dep.clone());
    let out = out_path(&s, &j);
    let message = failure(run(&s, &j).await);
    assert!(
        message.contains("cannot refer to other store paths"),
        "{message}"
    );
    assert!(!s.real_path(&out).exists());
}

#[tokio::test]
async fn a_tree_too_deep_fails_cleanly_and_a_retry_works() {
    let dir = tempfile::tempdir().unwrap();
    let s = temp_store(dir.path());
    // 1500 levels: deeper than any store accepts. (Over-long paths are
    // `ferry_store::remove_tree`'s own test: sh's `cd` slows down there.)
    let deep = "mkdir $out && cd $out && i=0; while [ $i -lt 1500 ]; do \
                mkdir d && cd d && i=$((i+1)); done; echo bottom > f";
    let j = job(&s, "deep", deep, None);
    let out = out_path(&s, &j);
    let message = failure(run(&s, &j).await);
    assert!(message.contains("deeper than 1024 levels"), "{message}");
    assert!(
        !s.real_path(&out).exists(),
        "the deep output was left behind"
    );
    assert_only_valid_paths(&s);

    // The same fixed-output derivation: first its builder writes a deep
    // tree, then (a retry, the lock and the path free) the right contents.
    let mut ok_nar = Vec::new();
    nar::dump_bytes(b"ok", false, &mut ok_nar).unwrap();
    let h = Hash::digest(HashAlgo::Sha256, &ok_nar).to_base16();
    // Where the builder (a build user) may leave its flag.
    let flags = dir.path().join("flags");
    std::fs::create_dir(&flags).unwrap();
    std::fs::set_permissions(&flags, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let flag = flags.join("second-try");
    let script = format!(
        "if [ -e {flag} ]; then printf ok > $out; else touch {flag}; {deep}; fi",
        flag = flag.display()
    );
    let j = job(&s, "deep-fixed", &script, Some(("r:sha256", &h)));
    let out = out_path(&s, &j);
    let message = failure(run(&s, &j).await);
    assert!(message.contains("deeper than 1024 levels"), "{message}");
    assert!(!s.real_path(&out).exists());
    assert!(matches!(run(&s, &j).await, Outcome::Built { .. }));
    assert_eq!(std::fs::read(s.real_path(&out)).unwrap(), b"ok");
    assert_only_valid_paths(&s);
}
