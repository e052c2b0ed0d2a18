//! The daemon's Nix side over an in-memory byte stream, with the Nix
//! client of `ferry-nix-protocol` (real Nix 2.8 clients are in
//! crates/cli/tests/nix_clients_*.rs): answers from a real store, the
//! trust rules on paths with a record (an untrusted peer's unsigned NAR
//! refused, the connection still in step after it), signatures, NARs
//! streamed back, the old ExportPath and ImportPaths, and operations Ferry does not serve refused by name.

use std::collections::BTreeSet;
use std::sync::Arc;

use ferry_build::BuildSettings;
use ferry_daemon::access::Peer;
use ferry_daemon::{nix_daemon, Daemon, Engine, EngineConfig};
use ferry_formats::content_hash::{Hash, HashAlgo};
use ferry_formats::StoreDir;
use ferry_nix_protocol::path_info::{AddToStoreNar, ValidPathInfo};
use ferry_nix_protocol::{Client, Error, Limits};
use ferry_store::{Locations, Store};
use ferry_trust::nix_signature::{NixPublicKey, NixSecretKey};
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

type NixClient = Client<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;

fn daemon(root: &std::path::Path) -> Arc<Daemon> {
    daemon_trusting(root, Vec::new())
}

fn daemon_trusting(root: &std::path::Path, keys: Vec<NixPublicKey>) -> Arc<Daemon> {
    let store = Arc::new(
        Store::open(Locations {
            store_dir: StoreDir::new(root.join("store").to_str().unwrap()).unwrap(),
            state_dir: root.join("state"),
            config_dir: root.join("config"),
        })
        .unwrap(),
    );
    let settings = BuildSettings {
        sandbox: false,
        ..BuildSettings::default()
    };
    let config = ferry_daemon::access::DaemonConfig {
        trusted_public_keys: keys,
        ..Default::default()
    };
    Daemon::with_config(Engine::new(store, EngineConfig::new(1, settings)), config).unwrap()
}

async fn connect(d: &Arc<Daemon>, trusted: bool) -> NixClient {
    let (a, b) = tokio::io::duplex(1 << 16);
    let peer = Peer {
        trusted,
        user: if trusted { "root" } else { "someone" }.into(),
        ..Peer::owner()
    };
    tokio::spawn(nix_daemon::serve(b, d.clone(), Ok(peer)));
    let (r, w) = tokio::io::split(a);
    Client::connect(r, w, Limits::default()).await.unwrap()
}

/// A path's record and NAR as another store would send them (a file).
fn foreign(store: &Store, name: &str, data: &[u8]) -> (ValidPathInfo, Vec<u8>) {
    let mut nar = Vec::new();
    ferry_formats::nar::dump_bytes(data, false, &mut nar).unwrap();
    let digest = ferry_formats::Sha256Hash::digest(name.as_bytes());
    let path = store.store_dir().output_path(name, "out", &digest).unwrap();
    let info = ValidPathInfo {
        path: store.display(&path),
        deriver: None,
        nar_hash: Hash::digest(HashAlgo::Sha256, &nar),
        references: BTreeSet::new(),
        registration_time: 0,
        nar_size: nar.len() as u64,
        ultimate: false,
        sigs: BTreeSet::new(),
        ca: None,
    };
    (info, nar)
}

#[tokio::test(flavor = "multi_thread")]
async fn nix_clients_are_answered_from_the_store_with_the_trust_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path());
    let store = d.engine.store().clone();

    // Text and queries.
    let mut c = connect(&d, false).await;
    let p = c
        .add_text_to_store("hello.txt", b"hello\n", &BTreeSet::new())
        .await
        .unwrap();
    assert!(c.is_valid_path(&p).await.unwrap());
    let info = c.query_path_info(&p).await.unwrap().unwrap();
    assert_eq!(info.nar_size, 120);
    assert!(info.ca.is_some(), "a text path has its content address");

    // An unsigned input-addressed path from an untrusted peer: refused in
    // Nix's words, whatever dontCheckSigs says; the connection goes on.
    let (finfo, nar) = foreign(&store, "foreign", b"from elsewhere\n");
    let req = AddToStoreNar {
        info: finfo.clone(),
        repair: false,
        dont_check_sigs: true,
    };
    let e = c.add_to_store_nar(&req, &mut &nar[..]).await.unwrap_err();
    assert!(
        matches!(&e, Error::Remote(n) if n.msg.contains("lacks a valid signature")),
        "{e}"
    );
    assert!(!c.is_valid_path(&finfo.path).await.unwrap());
    // Not privileged to add signatures either.
    let sigs: BTreeSet<String> = ["k:c2ln".to_string()].into();
    assert!(c.add_signatures(&p, &sigs).await.is_err());
    // An operation Ferry does not serve (OptimiseStore, 34): refused by
    // name, still in step.
    let e = c.raw_op(34).await.unwrap_err();
    assert!(e.to_string().contains("OptimiseStore"), "{e}");
    assert!(c.is_valid_path(&p).await.unwrap());
    // An older question: the path of a hash part.
    let hash_part = &p[p.rfind('/').unwrap() + 1..][..32];
    assert_eq!(
        c.query_path_from_hash_part(hash_part).await.unwrap(),
        Some(p.clone())
    );
    let none = "0".repeat(32);
    assert_eq!(c.query_path_from_hash_part(&none).await.unwrap(), None);

    // A trusted peer: the same NAR is accepted, a wrong hash is not.
    let mut t = connect(&d, true).await;
    let mut bad = req.clone();
    bad.info.nar_hash = Hash::digest(HashAlgo::Sha256, b"other");
    let e = t.add_to_store_nar(&bad, &mut &nar[..]).await.unwrap_err();
    assert!(e.to_string().contains("hash mismatch"), "{e}");
    t.add_to_store_nar(&req, &mut &nar[..]).await.unwrap();
    assert!(t.is_valid_path(&finfo.path).await.unwrap());
    t.add_signatures(&finfo.path, &sigs).await.unwrap();
    let got = t.query_path_info(&finfo.path).await.unwrap().unwrap();
    assert_eq!(got.sigs, sigs);
    assert_eq!(got.nar_hash, finfo.nar_hash);
    // The NAR comes back as it went.
    let mut back = Vec::new();
    t.nar_from_path(&finfo.path, &mut back).await.unwrap();
    assert_eq!(back, nar);

    // ExportPath, deletion (for trusted users only), then ImportPaths:
    // trusted only.
    let mut export = 1u64.to_le_bytes().to_vec();
    t.export_path(&finfo.path, &mut export).await.unwrap();
    export.extend(0u64.to_le_bytes());
    let victim: BTreeSet<String> = [finfo.path.clone()].into();
    let e = c.collect_garbage(3, &victim, 0).await.unwrap_err();
    assert!(e.to_string().contains("trusted users"), "{e}");
    // Once the connections that added it are gone, it is dead.
    drop((c, t));
    let mut t = connect(&d, true).await;
    let mut tries = 0;
    let deleted = loop {
        match t.collect_garbage(3, &victim, 0).await {
            Ok((deleted, _)) => break deleted,
            Err(e) if tries < 100 && e.to_string().contains("temporary root") => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(deleted, victim);
    let d2 = d;
    let mut u = connect(&d2, false).await;
    let e = u.import_paths(&mut &export[..]).await.unwrap_err();
    assert!(e.to_string().contains("trusted users"), "{e}");
    assert!(
        !u.is_valid_path(&finfo.path).await.unwrap(),
        "still in step"
    );
    let mut t2 = connect(&d2, true).await;
    let imported = t2.import_paths(&mut &export[..]).await.unwrap();
    assert_eq!(imported, vec![finfo.path.clone()]);
    let got = t2.query_path_info(&finfo.path).await.unwrap().unwrap();
    assert_eq!(
        (got.nar_hash, got.nar_size),
        (finfo.nar_hash, finfo.nar_size)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_signed_by_a_trusted_public_key_is_accepted_from_anyone() {
    let dir = tempfile::tempdir().unwrap();
    let key = NixSecretKey::from_seed("cache-1", &[9u8; 32]);
    let stranger = NixSecretKey::from_seed("cache-1", &[8u8; 32]);
    let d = daemon_trusting(dir.path(), vec![key.public()]);
    let store = d.engine.store().clone();
    let mut c = connect(&d, false).await;
    let (mut info, nar) = foreign(&store, "signed", b"signed elsewhere\n");
    // Signed by another key of the same name: refused.
    info.sigs = [stranger.sign(&info.fingerprint().unwrap())].into();
    let mut req = AddToStoreNar {
        info: info.clone(),
        repair: false,
        dont_check_sigs: false,
    };
    let e = c.add_to_store_nar(&req, &mut &nar[..]).await.unwrap_err();
    assert!(e.to_string().contains("lacks a valid signature"), "{e}");
    // Signed by the trusted key: accepted, the signature kept.
    let sig = key.sign(&info.fingerprint().unwrap());
    req.info.sigs = [sig.clone()].into();
    c.add_to_store_nar(&req, &mut &nar[..]).await.unwrap();
    let got = c.query_path_info(&info.path).await.unwrap().unwrap();
    assert!(got.sigs.contains(&sig));
}
