//! The pure rules of the Nix side: how a client's settings become Ferry's
//! build options, and when a path proves itself by its content address.

use std::collections::BTreeSet;

use ferry_formats::content_hash::{Hash, HashAlgo};
use ferry_formats::store_path::FileIngestion;
use ferry_formats::StoreDir;
use ferry_nix_protocol::content_address::ContentAddress;
use ferry_nix_protocol::path_info::ValidPathInfo;
use ferry_nix_protocol::settings::ClientSettings;

use super::add::ca_matches;
use super::build::build_options;

#[test]
fn settings_map_to_build_options() {
    let mut s = ClientSettings {
        max_build_jobs: 0,
        keep_failed: true,
        keep_going: true,
        max_silent_time: 30,
        build_cores: 4,
        ..Default::default()
    };
    s.overrides.insert("sandbox".into(), "false".into());
    s.overrides.insert("timeout".into(), "600".into());
    s.overrides
        .insert("substituters".into(), "https://x".into());
    let o = build_options(&s);
    assert!(o.no_local, "max-jobs 0 is build machines only");
    assert!(o.keep_failed && o.keep_going);
    assert_eq!((o.max_silent_time, o.timeout, o.cores), (30, 600, 4));
    assert_eq!(o.sandbox, Some(false));
    let d = build_options(&ClientSettings::default());
    assert!(!d.no_local && d.sandbox.is_none() && d.timeout == 0);
}

fn store() -> (tempfile::TempDir, ferry_store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = ferry_store::Store::open(ferry_store::Locations {
        store_dir: StoreDir::new(dir.path().join("store").to_str().unwrap()).unwrap(),
        state_dir: dir.path().join("state"),
        config_dir: dir.path().join("config"),
    })
    .unwrap();
    (dir, s)
}

#[test]
fn a_path_proves_itself_by_its_content_address_only() {
    let (_d, s) = store();
    let p = s.add_text("t.txt", b"text", &[]).unwrap();
    let i = s.valid_info(&p).unwrap();
    let mut info = ValidPathInfo {
        path: s.display(&p),
        deriver: None,
        nar_hash: Hash::from_bytes(HashAlgo::Sha256, i.nar_hash.as_bytes()).unwrap(),
        references: BTreeSet::new(),
        registration_time: 0,
        nar_size: i.nar_size,
        ultimate: false,
        sigs: BTreeSet::new(),
        ca: ContentAddress::parse_opt(i.ca.as_deref().unwrap()).unwrap(),
    };
    assert!(ca_matches(&s, &info));
    // Another reference, another path: no longer its address.
    info.references.insert(s.display(&p));
    assert!(!ca_matches(&s, &info));
    info.references.clear();
    // No address: nothing to prove.
    info.ca = None;
    assert!(!ca_matches(&s, &info));
    // A flat fixed-output address of the right name and hash.
    let h = Hash::digest(HashAlgo::Sha1, b"x");
    let fixed = s
        .store_dir()
        .fixed_output_path_any("f", FileIngestion::Flat, "sha1", &h.to_base16())
        .unwrap();
    info.path = s.display(&fixed);
    info.ca = Some(ContentAddress::Fixed {
        method: FileIngestion::Flat,
        hash: h,
    });
    assert!(ca_matches(&s, &info));
}

#[test]
fn content_addressed_derivations_are_those_with_hashed_outputs_only() {
    use super::sent::is_content_addressed;
    use ferry_formats::derivation::{Derivation, Output};
    let out = |algo: &str| Output {
        path: "/nix/store/x-o".into(),
        hash_algo: algo.into(),
        hash: String::new(),
    };
    let mut d = Derivation::default();
    assert!(
        !is_content_addressed(&d),
        "no outputs: nothing proves itself"
    );
    d.outputs.insert("out".into(), out("r:sha256"));
    assert!(is_content_addressed(&d));
    d.outputs.insert("dev".into(), out(""));
    assert!(!is_content_addressed(&d), "one input-addressed output");
}
