//! Interop with real Nix 2.8: this crate's client drives `nix-daemon
//! --stdio` on a private store (NIX_STORE_DIR, NIX_STATE_DIR... in a
//! temporary directory, so /nix is never touched) through every operation
//! Ferry's offload and daemon will need, and compares what Nix answers with
//! what `ferry-formats` computes (paths, NAR hashes and sizes, NAR bytes).
//!
//! Needs `nix-daemon` in PATH and root (a root nix-daemon with an empty
//! `build-users-group` builds as root, without a sandbox); missing
//! prerequisites fail the test when CI is set, as every Nix test does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use ferry_formats::content_hash::{Hash, HashAlgo};
use ferry_formats::derivation::{Derivation, Output};
use ferry_formats::nar;
use ferry_formats::store_path::{FileIngestion, StorePath};
use ferry_formats::Sha256Hash;
use ferry_nix_protocol::build::{BuildMode, BuildStatus};
use ferry_nix_protocol::content_address::{ContentAddress, ContentAddressMethod};
use ferry_nix_protocol::derived_path::DerivedPath;
use ferry_nix_protocol::path_info::{multiple_header, AddToStoreNar, ValidPathInfo};
use ferry_nix_protocol::settings::ClientSettings;
use ferry_nix_protocol::stderr::{result_type, Field, StderrMsg};
use ferry_nix_protocol::{Client, Error, Limits, PROTOCOL_VERSION};
use tokio::process::{ChildStdin, ChildStdout};

mod support;

use support::{nar_of, prerequisites, scratch, NixEnv};

/// The bytes of a Nix key or signature `NAME:BASE64` (base64 decoded by
/// reading it as an SRI hash of the same size).
fn key_bytes<const N: usize>(text: &str, name: &str) -> [u8; N] {
    let b64 = text
        .trim()
        .strip_prefix(&format!("{name}:"))
        .expect("named");
    let algo = if N == 32 { "sha256" } else { "sha512" };
    let h = Hash::parse_sri(&format!("{algo}-{b64}")).unwrap();
    h.as_bytes().try_into().unwrap()
}

fn sha256(b: &[u8]) -> Hash {
    Hash::digest(HashAlgo::Sha256, b)
}

type Logs = Arc<Mutex<Vec<StderrMsg>>>;

async fn connect(out: ChildStdout, inp: ChildStdin) -> (Client<ChildStdout, ChildStdin>, Logs) {
    let mut c = Client::connect(out, inp, Limits::default()).await.unwrap();
    assert_eq!(c.hello().daemon_version, PROTOCOL_VERSION);
    assert_eq!(c.hello().nix_version.as_deref(), Some("2.8.0"));
    let logs: Logs = Arc::default();
    let l = logs.clone();
    c.set_logger(Box::new(move |m| l.lock().unwrap().push(m.clone())));
    let mut s = ClientSettings {
        verbosity: 3,
        ..Default::default()
    };
    s.overrides.insert("sandbox".into(), "false".into());
    s.overrides.insert("substituters".into(), String::new());
    c.set_options(&s).await.unwrap();
    (c, logs)
}

#[tokio::test]
async fn a_real_nix_daemon_answers_this_client() {
    if !prerequisites() {
        return;
    }
    let env = NixEnv::new();
    let (mut child, out, inp) = env.daemon();
    let (mut c, logs) = connect(out, inp).await;
    let sd = &env.store;
    let abs = |p: &StorePath| sd.display(p);

    // AddTextToStore (obsolete, still served) and the path Ferry computes.
    let text = b"hello from ferry\n";
    let t1 = c
        .add_text_to_store("t1.txt", text, &BTreeSet::new())
        .await
        .unwrap();
    let want = sd
        .text_path("t1.txt", &Sha256Hash::digest(text), &[])
        .unwrap();
    assert_eq!(t1, abs(&want));
    assert!(c.is_valid_path(&t1).await.unwrap());

    // AddToStore (1.25+, framed): text with a reference, then a fixed
    // recursive tree.
    let refs: BTreeSet<String> = [t1.clone()].into();
    let t2_text = format!("see {t1}\n");
    let info = c
        .add_to_store(
            "t2",
            ContentAddressMethod::Text,
            &refs,
            false,
            &mut t2_text.as_bytes(),
        )
        .await
        .unwrap();
    let t2 = sd
        .text_path(
            "t2",
            &Sha256Hash::digest(&t2_text),
            std::slice::from_ref(&want),
        )
        .unwrap();
    assert_eq!(info.path, abs(&t2));
    assert_eq!(info.references, refs);
    assert_eq!(
        info.ca,
        Some(ContentAddress::Text(sha256(t2_text.as_bytes())))
    );

    let tmp = tempfile::tempdir_in(env.path()).unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/big"), vec![b'x'; 300_000]).unwrap();
    std::fs::write(tree.join("run"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("sub/big", tree.join("link")).unwrap();
    let tree_nar = nar_of(&tree);
    let method = ContentAddressMethod::Fixed {
        method: FileIngestion::Recursive,
        algo: HashAlgo::Sha256,
    };
    let info = c
        .add_to_store("tree", method, &BTreeSet::new(), false, &mut &tree_nar[..])
        .await
        .unwrap();
    let tree_path = sd
        .fixed_output_path(
            "tree",
            FileIngestion::Recursive,
            &Sha256Hash::digest(&tree_nar),
        )
        .unwrap();
    assert_eq!(info.path, abs(&tree_path));
    assert_eq!(info.nar_hash, sha256(&tree_nar));
    assert_eq!(info.nar_size, tree_nar.len() as u64);

    // AddToStoreNar (framed): an input-addressed path with a reference and
    // a deriver, then everything QueryPathInfo says about it.
    let pkg = tmp.path().join("pkg");
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    std::fs::write(pkg.join("bin/tool"), format!("uses {t1}\n")).unwrap();
    let pkg_nar = nar_of(&pkg);
    let pkg_path = abs(&StorePath::from_parts(&[7u8; 20], "pkg-1.0").unwrap());
    let deriver = abs(&StorePath::from_parts(&[8u8; 20], "pkg-1.0.drv").unwrap());
    let req = AddToStoreNar {
        info: ValidPathInfo {
            path: pkg_path.clone(),
            deriver: Some(deriver.clone()),
            nar_hash: sha256(&pkg_nar),
            references: refs.clone(),
            registration_time: 0,
            nar_size: pkg_nar.len() as u64,
            ultimate: false,
            sigs: BTreeSet::new(),
            ca: None,
        },
        repair: false,
        dont_check_sigs: true,
    };
    c.add_to_store_nar(&req, &mut &pkg_nar[..]).await.unwrap();
    let got = c.query_path_info(&pkg_path).await.unwrap().expect("valid");
    assert_eq!(got.nar_hash, sha256(&pkg_nar));
    assert_eq!(got.nar_size, pkg_nar.len() as u64);
    assert_eq!(got.references, refs);
    assert_eq!(got.deriver.as_deref(), Some(deriver.as_str()));
    assert_eq!(got.ca, None);
    assert!(got.registration_time > 0);
    let absent = abs(&StorePath::from_parts(&[9u8; 20], "absent").unwrap());
    assert_eq!(c.query_path_info(&absent).await.unwrap(), None);
    assert!(!c.is_valid_path(&absent).await.unwrap());

    // A wrong NAR hash is refused with Nix's error, and the connection
    // stays usable (the daemon drains the frames).
    let mut bad = req.clone();
    bad.info.path = abs(&StorePath::from_parts(&[6u8; 20], "bad").unwrap());
    bad.info.nar_hash = sha256(b"not it");
    let e = c
        .add_to_store_nar(&bad, &mut &pkg_nar[..])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("hash mismatch"), "{e}");
    assert!(c.is_valid_path(&t1).await.unwrap());

    // AddMultipleToStore: two paths in one framed stream.
    let m1 = tmp.path().join("m1");
    std::fs::write(&m1, b"first").unwrap();
    let m2 = tmp.path().join("m2");
    std::fs::write(&m2, b"second").unwrap();
    let mut stream = Vec::new();
    let mut multi = Vec::new();
    for (i, f) in [&m1, &m2].into_iter().enumerate() {
        let n = nar_of(f);
        let info = ValidPathInfo {
            path: abs(&StorePath::from_parts(&[10 + i as u8; 20], "multi").unwrap()),
            deriver: None,
            nar_hash: sha256(&n),
            references: BTreeSet::new(),
            registration_time: 0,
            nar_size: n.len() as u64,
            ultimate: false,
            sigs: BTreeSet::new(),
            ca: None,
        };
        stream.extend(multiple_header((i == 0).then_some(2), &info));
        stream.extend(&n);
        multi.push(info.path);
    }
    c.add_multiple_to_store(false, true, &mut &stream[..])
        .await
        .unwrap();

    // QueryValidPaths, NarFromPath, QueryReferrers, AddTempRoot.
    let ask: BTreeSet<String> = [
        pkg_path.clone(),
        absent.clone(),
        multi[0].clone(),
        multi[1].clone(),
    ]
    .into();
    let valid = c.query_valid_paths(&ask, false).await.unwrap();
    let want_valid: BTreeSet<String> =
        [pkg_path.clone(), multi[0].clone(), multi[1].clone()].into();
    assert_eq!(valid, want_valid);
    let mut back = Vec::new();
    let n = c.nar_from_path(&pkg_path, &mut back).await.unwrap();
    assert_eq!(back, pkg_nar);
    assert_eq!(n, pkg_nar.len() as u64);
    let mut back = Vec::new();
    c.nar_from_path(&abs(&tree_path), &mut back).await.unwrap();
    assert_eq!(back, tree_nar);
    let referrers = c.query_referrers(&t1).await.unwrap();
    assert!(
        referrers.contains(&pkg_path) && referrers.contains(&abs(&t2)),
        "{referrers:?}"
    );
    c.add_temp_root(&pkg_path).await.unwrap();

    // BuildDerivation of a trivial derivation (builder /bin/sh, sandbox
    // off), its log reaching us as build log lines; then the output's info.
    let mut drv = Derivation {
        system: format!("{}-linux", std::env::consts::ARCH),
        builder: "/bin/sh".into(),
        args: vec![
            "-c".into(), // No PATH in a build: shell built-ins only.
            format!("echo building-now; IFS= read -r l < {t1}; printf '%s\\n' \"$l\" > $out"),
        ],
        ..Default::default()
    };
    drv.input_srcs.insert(t1.clone());
    drv.outputs.insert("out".into(), Output::default());
    drv.env.insert("out".into(), String::new());
    drv.env.insert("name".into(), "trivial".into());
    drv.env.insert("builder".into(), "/bin/sh".into());
    drv.env.insert("system".into(), drv.system.clone());
    drv.fill_output_paths::<ferry_formats::derivation::DerivationError>(sd, &mut |p| {
        panic!("no input derivations: {p}")
    })
    .unwrap();
    let drv_path = abs(&drv.drv_path(sd, "trivial").unwrap());
    let out_path = drv.outputs["out"].path.clone();
    let res = c
        .build_derivation(&drv_path, &drv, BuildMode::Normal)
        .await
        .unwrap();
    assert_eq!(res.status, BuildStatus::Built, "{}", res.error_msg);
    assert_eq!(res.times_built, 1);
    assert!(res.stop_time >= res.start_time && res.start_time > 0);
    let real = res.built_outputs.values().next().expect("a realisation");
    assert_eq!(sd.as_str().to_string() + "/" + &real.out_path, out_path);
    assert!(c.is_valid_path(&out_path).await.unwrap());
    let saw_log = logs.lock().unwrap().iter().any(|m| {
        matches!(m, StderrMsg::Result { kind, fields, .. }
            if *kind == result_type::BUILD_LOG_LINE
                && fields == &[Field::String("building-now".into())])
    });
    assert!(saw_log, "no build log line in {:?}", logs.lock().unwrap());
    let mut built = Vec::new();
    c.nar_from_path(&out_path, &mut built).await.unwrap();
    let mut want_nar = Vec::new();
    nar::dump_bytes(text, false, &mut want_nar).unwrap();
    assert_eq!(built, want_nar);

    // The .drv in the store: output map, missing, build with results.
    let drv_text = drv.to_aterm();
    let stored = c
        .add_text_to_store("trivial.drv", drv_text.as_bytes(), &[t1.clone()].into())
        .await
        .unwrap();
    assert_eq!(stored, drv_path);
    let map = c.query_derivation_output_map(&drv_path).await.unwrap();
    assert_eq!(
        map,
        BTreeMap::from([("out".to_string(), Some(out_path.clone()))])
    );
    let want = DerivedPath::Built {
        drv_path: drv_path.clone(),
        outputs: ["out".to_string()].into(),
    };
    let missing = c.query_missing(std::slice::from_ref(&want)).await.unwrap();
    assert!(
        missing.will_build.is_empty() && missing.unknown.is_empty(),
        "{missing:?}"
    );
    let results = c
        .build_paths_with_results(std::slice::from_ref(&want), BuildMode::Normal)
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].0, want);
    assert!(results[0].1.status.is_success(), "{:?}", results[0].1);
    c.build_paths(&[DerivedPath::Opaque(out_path.clone())], BuildMode::Normal)
        .await
        .unwrap();

    let mut exported = Vec::new();
    c.export_path(&multi[0], &mut exported).await.unwrap();

    // An unknown operation: Nix's words, then the daemon hangs up.
    match c.raw_op(99).await {
        Err(Error::Remote(e)) => assert_eq!(e.msg, ferry_nix_protocol::op::invalid_operation(99)),
        other => panic!("expected Nix's error, got {other:?}"),
    }
    // nix-daemon --stdio exits once the connection is closed.
    drop(c);
    tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("nix-daemon exits")
        .unwrap();

    // A second connection, once the first daemon (and its temporary roots)
    // is gone: CollectGarbage deleting the path exported above (as
    // STDERR_WRITE data), ImportPaths bringing it back (asked for with
    // STDERR_READ), FindRoots, VerifyStore.
    let (mut child, out, inp) = env.daemon();
    let (mut c, _) = connect(out, inp).await;
    let doomed: BTreeSet<String> = [multi[0].clone()].into();
    let (deleted, freed) = c.collect_garbage(3, &doomed, u64::MAX).await.unwrap();
    assert_eq!(deleted, doomed);
    assert!(freed > 0);
    assert!(!c.is_valid_path(&multi[0]).await.unwrap());
    // `nix-store --export`'s stream: 1 before each path's record, 0 after.
    let mut stream = 1u64.to_le_bytes().to_vec();
    stream.extend(&exported);
    stream.extend(0u64.to_le_bytes());
    let imported = c.import_paths(&mut &stream[..]).await.unwrap();
    assert_eq!(imported, [multi[0].clone()]);
    assert!(c.is_valid_path(&multi[0]).await.unwrap());
    c.add_temp_root(&pkg_path).await.unwrap();
    let roots = c.find_roots().await.unwrap();
    assert!(
        roots.iter().any(|(_, target)| target == &pkg_path),
        "the temporary root of {pkg_path} in {roots:?}"
    );
    assert!(!c.verify_store(false, false).await.unwrap(), "no errors");

    // Nix signatures: `nix store sign` signs `fingerprint()`, and a
    // signature made here with Nix's secret key goes in by AddSignatures.
    let keys = scratch(&env, "keys");
    let (sk, pk) = (keys.join("sk"), keys.join("pk"));
    let ok = env
        .command("nix-store")
        .arg("--generate-binary-cache-key")
        .arg("test-key-1")
        .args([&sk, &pk])
        .status()
        .await
        .unwrap();
    assert!(ok.success());
    let ok = env
        .command("nix")
        .args(["store", "sign", "--key-file"])
        .arg(&sk)
        .arg(&pkg_path)
        .status()
        .await
        .unwrap();
    assert!(ok.success());
    let info = c.query_path_info(&pkg_path).await.unwrap().unwrap();
    let sig = info.sigs.iter().next().expect("a signature");
    let public = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes::<32>(
        &std::fs::read_to_string(&pk).unwrap(),
        "test-key-1",
    ))
    .unwrap();
    let sig_bytes = key_bytes::<64>(sig, "test-key-1");
    public
        .verify_strict(
            info.fingerprint().unwrap().as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&sig_bytes),
        )
        .expect("Nix's signature is over fingerprint()");
    let secret = key_bytes::<64>(&std::fs::read_to_string(&sk).unwrap(), "test-key-1");
    let signer = ed25519_dalek::SigningKey::from_keypair_bytes(&secret).unwrap();
    let other = c.query_path_info(&multi[0]).await.unwrap().unwrap();
    use ed25519_dalek::Signer;
    let ours = signer
        .sign(other.fingerprint().unwrap().as_bytes())
        .to_bytes();
    let ours = format!(
        "test-key-1:{}",
        Hash::from_bytes(HashAlgo::Sha512, &ours)
            .unwrap()
            .to_base64()
    );
    c.add_signatures(&multi[0], &[ours.clone()].into())
        .await
        .unwrap();
    let other = c.query_path_info(&multi[0]).await.unwrap().unwrap();
    assert_eq!(other.sigs, BTreeSet::from([ours]));

    drop(c);
    child.wait().await.unwrap();
}
