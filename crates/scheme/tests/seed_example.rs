//! The manual's example machines file, verbatim (ellipses included).

use ferry_scheme::{load_machines, EvalContext};
use std::path::Path;

/// The same file the table-driven suite checks, copied from the manual.
const SEED: &str = include_str!("machines/seed.scm");

#[test]
fn seed_example_loads_with_defaults() {
    let loaded = load_machines(SEED, "machines.scm", EvalContext::hermetic("/home/ferry")).unwrap();
    let [x86, arm] = loaded.machines.as_slice() else {
        panic!("expected two machines: {loaded:?}")
    };

    assert_eq!(x86.name, "eightysix.example.org");
    assert_eq!(x86.systems, ["x86_64-linux", "i686-linux"]);
    assert_eq!(x86.user, "bob");
    assert_eq!(x86.host_key, "ssh-ed25519 AAAAC3Nza…");
    assert_eq!(x86.port, 22);
    assert_eq!(x86.speed, 2.0);
    assert_eq!(x86.private_key, Path::new("/home/ferry/.ssh/id_rsa"));
    assert_eq!(x86.compression, "zlib@openssh.com,zlib");
    assert_eq!(x86.compression_level, 3);
    assert_eq!(x86.daemon_socket, "/var/ferry/daemon-socket/socket");
    assert_eq!(x86.overload_threshold, Some(0.8));
    assert_eq!(x86.parallel_builds, 1);
    assert!(x86.features.is_empty());
    assert!(x86.host_key_is_placeholder());

    assert_eq!(arm.name, "armeight.example.org");
    assert_eq!(arm.systems, ["aarch64-linux"]);
    assert_eq!(arm.user, "alice");
    assert_eq!(arm.private_key, Path::new("/root/.ssh/identity-for-guix"));
    assert_eq!(arm.speed, 1.0);
    assert_eq!(arm.port, 22);
    assert!(arm.host_key_is_placeholder());

    // The placeholder keys are errors of those machines only, at the
    // host-key clause; the file loads without warnings.
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let error = x86.error.as_deref().unwrap();
    assert!(
        error.starts_with("machines.scm:4:9: host-key \"ssh-ed25519 AAAAC3Nza…\" is a placeholder"),
        "{error}"
    );
    assert!(
        arm.error
            .as_deref()
            .unwrap()
            .starts_with("machines.scm:11:9: host-key"),
        "{:?}",
        arm.error
    );
}

#[test]
fn seed_example_serializes_with_camel_case_keys() {
    let loaded = load_machines(SEED, "machines.scm", EvalContext::hermetic("/home/ferry")).unwrap();
    let json = serde_json::to_value(&loaded.machines[0]).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "name",
            "systems",
            "user",
            "hostKey",
            "port",
            "privateKey",
            "compression",
            "compressionLevel",
            "daemonSocket",
            "overloadThreshold",
            "parallelBuilds",
            "speed",
            "features",
            "error"
        ]
    );
    assert_eq!(json["speed"], serde_json::json!(2.0));
}
