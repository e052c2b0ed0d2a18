//! `ferry offload machines`: the machines file as a user checks it.

mod support;

use std::fs;
use std::path::Path;

use support::*;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scheme/tests/machines")
        .join(name)
}

#[test]
fn the_seed_example_as_table_and_json() {
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let seed = fixture("seed.scm");
    let table = String::from_utf8(run_ok(
        command(ferry_bin(), &home)
            .args(["offload", "machines"])
            .arg(&seed),
        None,
        "offload machines",
    ))
    .unwrap();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("eightysix.example.org"), "{table}");
    assert!(table.contains("x86_64-linux,i686-linux"), "{table}");
    assert!(table.contains("(placeholder!)"), "{table}");
    assert!(table.contains("2 machine(s)"), "{table}");

    let out = run(
        command(ferry_bin(), &home)
            .args(["offload", "machines", "--json"])
            .arg(&seed),
        None,
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &v[0];
    assert_eq!(m["name"], "eightysix.example.org");
    assert_eq!(m["speed"], 2.0);
    assert_eq!(m["port"], 22);
    assert_eq!(m["parallel-builds"], 1);
    assert_eq!(m["overload-threshold"], 0.8);
    assert_eq!(m["compression"], "zlib@openssh.com,zlib");
    assert_eq!(m["daemon-socket"], "/var/ferry/daemon-socket/socket");
    assert_eq!(m["private-key"], home.join(".ssh/id_rsa").to_str().unwrap());
    assert_eq!(v[1]["private-key"], "/root/.ssh/identity-for-guix");
    // The placeholder host keys are called out on stderr with their place.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("placeholder"),
        "{err}"
    );
}

#[test]
fn default_file_and_errors() {
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    let config = tmp.path().join("config");
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&config).unwrap();
    // Missing default file: named in the error.
    let out = run(
        command(ferry_bin(), &home)
            .env("FERRY_CONFIG_DIR", &config)
            .args(["offload", "machines"]),
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("machines.scm") && err.contains("cannot read"),
        "{err}"
    );

    fs::copy(fixture("seed.scm"), config.join("machines.scm")).unwrap();
    let out = run(
        command(ferry_bin(), &home)
            .env("FERRY_CONFIG_DIR", &config)
            .args(["offload", "machines", "--json"]),
        None,
    );
    assert!(out.status.success());

    for bad in ["unknown-field", "wrong-type-speed"] {
        let file = fixture(&format!("{bad}.scm"));
        let want = fs::read_to_string(fixture(&format!("{bad}.error"))).unwrap();
        let out = run(
            command(ferry_bin(), &home)
                .args(["offload", "machines"])
                .arg(&file),
            None,
        );
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = want.trim().split(": error: ").last().unwrap();
        assert!(err.contains(want), "{bad}: wanted {want:?} in {err}");
        assert!(
            err.contains(&format!("{bad}.scm:")),
            "{bad}: file named in {err}"
        );
    }
}
