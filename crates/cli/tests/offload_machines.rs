//! `ferry offload machines`: the machines file as a user checks it.

use ferry_test_support as support;

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
    assert_eq!(m["parallelBuilds"], 1);
    assert_eq!(m["overloadThreshold"], 0.8);
    assert_eq!(m["compression"], "zlib@openssh.com,zlib");
    assert_eq!(m["daemonSocket"], "/var/ferry/daemon-socket/socket");
    assert_eq!(m["privateKey"], home.join(".ssh/id_rsa").to_str().unwrap());
    assert_eq!(v[1]["privateKey"], "/root/.ssh/identity-for-guix");
    // The placeholder host keys are errors of those machines, with their
    // place in the file.
    let error = m["error"].as_str().unwrap();
    assert!(
        error.contains("seed.scm:4:9: host-key") && error.contains("placeholder"),
        "{error}"
    );
}

const GOOD_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICKR2M3DEEEefsJzeKZhyTUYfAfk1WNum8PEALJyRLjN root@b1";

/// Two good machines around a broken one (Guix's tests' "some-key").
fn one_broken_among_good(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("machines.scm");
    let machine = |name: &str, key: &str| {
        format!(
            "(build-machine (name {name:?}) (systems (list \"x86_64-linux\")) (user \"u\")\n  (port 1) (host-key {key:?}))\n"
        )
    };
    fs::write(
        &file,
        format!(
            "(list\n{}{}{})\n",
            machine("127.0.0.1", GOOD_KEY),
            machine("broken.example.org", "some-key"),
            machine("localhost", GOOD_KEY)
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_broken_machine_is_listed_with_its_error_among_good_ones() {
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let file = one_broken_among_good(tmp.path());
    let table = String::from_utf8(run_ok(
        command(ferry_bin(), &home)
            .args(["offload", "machines"])
            .arg(&file),
        None,
        "offload machines",
    ))
    .unwrap();
    let lines: Vec<&str> = table.lines().collect();
    let broken = lines
        .iter()
        .position(|l| l.starts_with("broken.example.org"))
        .expect("broken machine listed");
    assert!(
        lines[broken + 1].starts_with("  error: ")
            && lines[broken + 1]
                .contains("machines.scm:5:12: host-key \"some-key\" is not an OpenSSH public key"),
        "{table}"
    );
    assert!(
        table.contains("3 machine(s), 1 with an error: not used until it is fixed"),
        "{table}"
    );
    assert_eq!(table.matches("\n  error: ").count(), 1, "{table}");

    let out = run(
        command(ferry_bin(), &home)
            .args(["offload", "machines", "--json"])
            .arg(&file),
        None,
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert!(v[0]["error"].is_null() && v[2]["error"].is_null(), "{v:#}");
    assert!(
        v[1]["error"].as_str().unwrap().contains("some-key"),
        "{v:#}"
    );
    assert_eq!(v[1]["hostKey"], "some-key");
}

#[test]
fn offload_test_fails_the_broken_machine_without_connecting() {
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let file = one_broken_among_good(tmp.path());
    // A store and signing key of its own (offload test sends and fetches).
    let ferry = || {
        let mut c = command(ferry_bin(), &home);
        c.env("FERRY_STORE_DIR", tmp.path().join("store"))
            .env("FERRY_STATE_DIR", tmp.path().join("state"))
            .env("FERRY_CONFIG_DIR", tmp.path().join("config"));
        c
    };
    run_ok(
        ferry().args(["archive", "--generate-key"]),
        None,
        "generate-key",
    );
    let out = run(
        ferry().args(["offload", "test"]).arg(&file).arg("broken"),
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "broken.example.org: FAILED: not tested, its machines.scm entry is unusable: "
        ) && stderr.contains("host-key \"some-key\""),
        "{stderr}"
    );
    assert!(stdout.contains("1 machine(s) tested, 1 failed"), "{stdout}");
    // All three: the good ones are tried (they fail for want of a key),
    // the broken one is not, and each has its own line.
    let out = run(ferry().args(["offload", "test"]).arg(&file), None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("3 machine(s) tested, 3 failed"),
        "{stdout}{stderr}"
    );
    assert!(stderr.contains("127.0.0.1: FAILED"), "{stderr}");
    assert!(
        stderr.contains("localhost: FAILED: private key "),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("broken.example.org: FAILED: not tested, its machines.scm entry is unusable"),
        "{stderr}"
    );
    // `offload status` says the same of it, without trying it.
    let out = run(
        ferry()
            .args(["offload", "status", "--json"])
            .arg(&file)
            .arg("broken"),
        None,
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let row = &rows[0];
    assert_eq!(row["machine"], "broken.example.org", "{rows}");
    assert_eq!(row["state"], "unusable", "{rows}");
    assert_eq!(row["kind"], "config", "{rows}");
    assert!(
        row["reason"]
            .as_str()
            .is_some_and(|r| r.contains("host-key \"some-key\"")),
        "{rows}"
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
