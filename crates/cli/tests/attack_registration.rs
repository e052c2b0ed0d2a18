//! Attacks on what happens after a builder exits, as an unprivileged local
//! user through a root daemon:
//!
//! - a fixed-output derivation whose builder writes something else than its
//!   declared hash (flat and recursive, several algorithms and spellings of
//!   the hash) is refused with Nix's message and leaves nothing; the honest
//!   derivation of the same output then builds, with Nix's `ca` field;
//! - a build whose output cannot be registered (a tree 1500 levels deep, a
//!   full state disk) leaves nothing behind, and the same output builds
//!   afterwards;
//! - `ferry store verify` reports entries of the store directory that are
//!   not valid paths and `--repair` removes them.

use ferry_test_support as support;

use std::fs;

use ferry_build::current_system;
use ferry_formats::content_hash::{Hash, HashAlgo};
use ferry_formats::derivation::{Derivation, DerivationError, Output};
use ferry_formats::{nar, StoreDir};
use ferry_protocol::{BuildOptions, BuildResult};
use support::attacker::{SharedDaemon, User};
use support::prerequisites;
use support::run_timeout;

/// The `.drv` text of a fixed-output derivation `name` with builder
/// `/bin/sh -c script`, declaring `hash_algo` (`[r:]ALGO`) and `hash` as
/// spelled; and its output path.
fn fixed_drv(
    d: &SharedDaemon,
    name: &str,
    script: &str,
    hash_algo: &str,
    hash: &str,
) -> (String, String) {
    let store_dir = StoreDir::new(d.store.to_str().unwrap()).unwrap();
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
    for (k, v) in [
        ("name", name),
        ("out", ""),
        ("PATH", "/bin:/usr/bin"),
        ("builder", "/bin/sh"),
        ("system", &current_system()),
    ] {
        drv.env.insert(k.into(), v.into());
    }
    let mut no_inputs = |p: &str| -> Result<ferry_formats::Sha256Hash, DerivationError> {
        panic!("no inputs expected, asked for {p}")
    };
    drv.fill_output_paths(&store_dir, &mut no_inputs).unwrap();
    let out = drv.outputs["out"].path.clone();
    (drv.to_aterm(), out)
}

/// Add `text` as `name.drv` and build it, both as `user`, through the daemon.
fn add_and_build(d: &SharedDaemon, user: &User, name: &str, text: &str) -> (String, BuildResult) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = d.client_as(user).await.expect("handshake");
        let drv = c
            .add_text(&format!("{name}.drv"), text, vec![])
            .await
            .unwrap_or_else(|e| panic!("adding {name}.drv: {e}{}", d.log()));
        let mut results = c
            .build(vec![drv.clone()], BuildOptions::default(), |_| {})
            .await
            .unwrap_or_else(|e| panic!("building {drv}: {e}{}", d.log()));
        (drv, results.remove(0))
    })
}

fn path_info_json(d: &SharedDaemon, path: &str) -> serde_json::Value {
    let out = run_timeout(&mut d.ferry(&["store", "path-info", "--json", path]), 60);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

#[test]
fn a_fixed_output_with_the_wrong_contents_is_never_registered() {
    if !prerequisites(&["root"]) {
        return;
    }
    let attacker = User::attacker();
    let d = SharedDaemon::start(&[]);
    let good = b"the real tarball\n";
    let mut good_tree_nar = Vec::new();
    {
        let t = d.dir().join("good-tree");
        fs::create_dir(&t).unwrap();
        fs::write(t.join("file"), good).unwrap();
        nar::dump(&t, &mut good_tree_nar).unwrap();
    }
    let good_flat = "printf 'the real tarball\\n' > $out";
    let good_rec = "mkdir $out && printf 'the real tarball\\n' > $out/file";
    // (name, hashAlgo, hash as spelled in the .drv, evil builder, honest builder)
    let flat256 = Hash::digest(HashAlgo::Sha256, good);
    let rec512 = Hash::digest(HashAlgo::Sha512, &good_tree_nar);
    let flat1 = Hash::digest(HashAlgo::Sha1, good);
    let rec256 = Hash::digest(HashAlgo::Sha256, &good_tree_nar);
    let cases = [
        (
            "src-flat-sha256",
            "sha256",
            flat256.to_base16(),
            "echo evil > $out",
            good_flat,
        ),
        // A builder that writes the right bytes as an executable: flat
        // outputs must be non-executable regular files.
        (
            "src-flat-exec",
            "sha256",
            flat256.to_nix32(),
            "printf 'the real tarball\\n' > $out; chmod +x $out",
            good_flat,
        ),
        (
            "src-flat-sha1",
            "sha1",
            flat1.to_nix32(),
            "mkdir $out && echo evil > $out/file",
            good_flat,
        ),
        (
            "src-rec-sha512",
            "r:sha512",
            rec512.to_base64(),
            "mkdir $out && echo evil > $out/file",
            good_rec,
        ),
        // The right file contents, but flat where a tree was declared.
        (
            "src-rec-sha256",
            "r:sha256",
            rec256.to_base16(),
            "printf 'the real tarball\\n' > $out",
            good_rec,
        ),
    ];
    for (name, algo, hash, evil, honest) in cases {
        let (evil_text, out) = fixed_drv(&d, name, evil, algo, &hash);
        let (drv, result) = add_and_build(&d, &attacker, name, &evil_text);
        let error = result.error.clone().unwrap_or_default();
        assert!(
            error.contains("hash mismatch in fixed-output derivation")
                || error.contains("should be a non-executable regular file"),
            "{name}: {result:?}{}",
            d.log()
        );
        if error.contains("hash mismatch") {
            let declared = Hash::parse_non_sri_unprefixed(
                &hash,
                HashAlgo::parse(algo.trim_start_matches("r:")).unwrap(),
            )
            .unwrap();
            assert!(error.contains(&format!("'{drv}'")), "{error}");
            assert!(
                error.contains(&format!("specified: {}", declared.to_sri())),
                "{error}"
            );
            assert!(
                error.contains(&format!("got:    {}-", declared.algo())),
                "{error}"
            );
        }
        assert!(
            fs::symlink_metadata(&out).is_err(),
            "{name}: the refused output {out} was left in the store"
        );
        // Root builds the same evil derivation: refused too.
        let o = d.build_as_root(&drv);
        assert!(
            !o.status.success(),
            "{name}: root's build of the evil drv succeeded"
        );
        assert!(fs::symlink_metadata(&out).is_err());
        d.assert_verify_clean();

        // The honest derivation of the same output path builds, as root.
        let (honest_text, honest_out) = fixed_drv(&d, name, honest, algo, &hash);
        assert_eq!(honest_out, out);
        let (_, result) = add_and_build(&d, &attacker, name, &honest_text);
        assert!(result.error.is_none(), "{name}: {result:?}{}", d.log());
        let info = path_info_json(&d, &out);
        let declared = Hash::parse_non_sri_unprefixed(
            &hash,
            HashAlgo::parse(algo.trim_start_matches("r:")).unwrap(),
        )
        .unwrap();
        let prefix = if algo.starts_with("r:") { "r:" } else { "" };
        assert_eq!(
            info["ca"].as_str(),
            Some(format!("fixed:{prefix}{}", declared.to_typed_nix32()).as_str()),
            "{info}"
        );
    }
    d.assert_verify_clean();
}

/// 1500 nested directories under $out: more than any store accepts.
const DEEP: &str = "mkdir $out && cd $out && i=0; while [ $i -lt 1500 ]; do mkdir d && cd d && i=$((i+1)); done; echo bottom > f";

#[test]
fn an_output_too_deep_to_register_leaves_nothing_and_the_path_builds_after() {
    if !prerequisites(&["root"]) {
        return;
    }
    let attacker = User::attacker();
    let d = SharedDaemon::start(&[]);
    // Input-addressed: the attacker's own derivation fails cleanly.
    let drv = d.add_drv(Some(&attacker), "deep", DEEP);
    let o = d.build_as_root(&drv);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("deeper than 1024 levels"), "{err}{}", d.log());
    d.assert_verify_clean();
    let names: Vec<String> = fs::read_dir(&d.store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".drv"))
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with('.')),
        "left in the store: {names:?}"
    );

    // Fixed-output: the attacker's deep build of a fixed path fails and
    // leaves the path free; the honest build of it (root's) then works.
    let mut file_nar = Vec::new();
    nar::dump_bytes(b"ok\n", false, &mut file_nar).unwrap();
    let h = Hash::digest(HashAlgo::Sha256, &file_nar).to_base16();
    let (evil, out) = fixed_drv(&d, "deep-fixed", DEEP, "r:sha256", &h);
    let (_, result) = add_and_build(&d, &attacker, "deep-fixed", &evil);
    assert!(
        result
            .error
            .as_deref()
            .unwrap_or("")
            .contains("deeper than"),
        "{result:?}{}",
        d.log()
    );
    assert!(fs::symlink_metadata(&out).is_err(), "{out} left behind");
    d.assert_verify_clean();
    let (honest, _) = fixed_drv(&d, "deep-fixed", "echo ok > $out", "r:sha256", &h);
    let (_, result) = add_and_build(&d, &User::ensure("ferry-victim"), "deep-fixed", &honest);
    assert!(result.error.is_none(), "{result:?}{}", d.log());
    assert_eq!(fs::read_to_string(&out).unwrap(), "ok\n");
    d.assert_verify_clean();
}

#[test]
fn verify_reports_entries_that_are_not_valid_paths_and_repair_removes_them() {
    if !prerequisites(&["root"]) {
        return;
    }
    let d = SharedDaemon::start(&[]);
    let drv = d.add_drv(None, "fine", "echo fine > $out");
    assert!(d.build_as_root(&drv).status.success());
    d.assert_verify_clean();
    // What a crash between a build's end and its registration leaves: an
    // output without a row (read-only inside), and a dead daemon's chroot
    // (a dead process's `.tmp-ferry-*` goes whenever the store is opened).
    let stray = d.store.join("0123456789abcdfghijklmnpqrsvwxyz-stray");
    fs::create_dir_all(stray.join("sub")).unwrap();
    fs::write(stray.join("sub/f"), "x").unwrap();
    fs::set_permissions(
        stray.join("sub"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    let temp = d.store.join(".ferry-chroot-999999999-0");
    fs::create_dir(&temp).unwrap();
    let o = run_timeout(&mut d.ferry(&["store", "verify"]), 60);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success());
    assert!(
        out.contains(&format!("{}: not a valid path", stray.display())),
        "{out}"
    );
    assert!(
        out.contains(".ferry-chroot-999999999-0: a temporary entry whose process is gone"),
        "{out}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--repair"));
    // Reporting does not remove.
    assert!(stray.exists() && temp.exists());
    let o = run_timeout(&mut d.ferry(&["store", "verify", "--repair"]), 60);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!stray.exists() && !temp.exists());
    d.assert_verify_clean();
    // The built path and the daemon's work are untouched.
    let o = d.build_as_root(&drv);
    assert!(o.status.success());
}

/// The disk fills between the builder's exit and the registration (the
/// builder fills the state file system, where the database is): the build
/// fails with the database's reason, its output is gone, and once space is
/// back the same derivation builds. Embedded mode in a private mount
/// namespace (the state directory is a 2 MiB tmpfs); the daemon path runs
/// the same `ferry_build::build`.
#[test]
fn a_full_disk_at_registration_leaves_nothing_and_a_retry_works() {
    if !prerequisites(&["root", "namespaces"]) {
        return;
    }
    let tmp = support::temp_dir();
    let t = tmp.path();
    let (store, state, config, home) = (
        t.join("store"),
        t.join("state"),
        t.join("config"),
        t.join("home"),
    );
    for d in [&store, &state, &config, &home] {
        fs::create_dir_all(d).unwrap();
    }
    let fill = state.join("fill");
    let build_file = t.join("fill.scm");
    fs::write(
        &build_file,
        format!(
            "(derivation \"fills-the-disk\" #:builder \"/bin/sh\" #:env '((\"PATH\" . \"/bin:/usr/bin\")) #:args (list \"-c\" {:?}))",
            format!(
                "echo built > $out; if [ -e {fill}/on ]; then head -c 8388608 /dev/zero > {fill}/zeros; fi; true",
                fill = fill.display()
            )
        ),
    )
    .unwrap();
    let script = r#"
set -u
mount -t tmpfs -o size=2m ferry-test-state "$FERRY_STATE_DIR" || exit 90
"$FERRY" derivation add "$FILE" > "$T/drv.out" 2> "$T/drv.err" || exit 91
DRV=$(tail -n 1 "$T/drv.out")
mkdir -m 1777 "$FILL" && touch "$FILL/on"
"$FERRY" build --no-sandbox "$DRV" > "$T/full.out" 2> "$T/full.err"; echo $? > "$T/full.rc"
ls -a "$FERRY_STORE_DIR" > "$T/store.ls"
rm -f "$FILL/on" "$FILL/zeros"
"$FERRY" store verify > "$T/verify.out" 2>&1; echo $? > "$T/verify.rc"
"$FERRY" build --no-sandbox "$DRV" > "$T/again.out" 2> "$T/again.err"; echo $? > "$T/again.rc"
cat "$(cat "$T/again.out")" > "$T/again.content" 2>&1
"#;
    let mut cmd = support::private_mount_sh(script);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("FERRY_STORE_DIR", &store)
        .env("FERRY_STATE_DIR", &state)
        .env("FERRY_CONFIG_DIR", &config)
        .env("FERRY_DAEMON_SOCKET", t.join("no-daemon.sock"))
        .env("FERRY", support::ferry_bin())
        .env("FILE", &build_file)
        .env("FILL", &fill)
        .env("T", t);
    let o = run_timeout(&mut cmd, 180);
    let read = |n: &str| fs::read_to_string(t.join(n)).unwrap_or_default();
    let report = format!(
        "unshare: {} {}\nadd: {}{}\nfull ({}): {}{}\nstore: {}\nverify ({}): {}\nagain ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        read("drv.out"),
        read("drv.err"),
        read("full.rc").trim(),
        read("full.out"),
        read("full.err"),
        read("store.ls"),
        read("verify.rc").trim(),
        read("verify.out"),
        read("again.rc").trim(),
        read("again.out"),
        read("again.err"),
    );
    eprintln!("{report}");
    assert!(o.status.success(), "{report}");
    assert_ne!(
        read("full.rc").trim(),
        "0",
        "the build on a full disk must fail\n{report}"
    );
    assert!(
        read("full.err").contains("registering the outputs"),
        "the failure must say it happened at registration\n{report}"
    );
    assert!(
        !read("store.ls").contains("-fills-the-disk\n"),
        "the output is left in the store\n{report}"
    );
    assert_eq!(read("verify.rc").trim(), "0", "{report}");
    assert_eq!(read("again.rc").trim(), "0", "{report}");
    assert_eq!(read("again.content"), "built\n", "{report}");
}
