//! The systems this machine builds for: an
//! x86_64-linux machine builds i686-linux natively, its builder under the
//! 32-bit personality (`uname -m` says i686), with the sandbox, without it,
//! and without a daemon.

use ferry_test_support as support;

use std::fs;

use support::attacker::SharedDaemon;
use support::run_timeout;

fn i686_build_file(d: &SharedDaemon, tag: &str) -> String {
    let file = d.root.join(format!("i686-{tag}.scm"));
    fs::write(
        &file,
        format!(
            "(derivation \"uname-{tag}\" #:system \"i686-linux\" #:builder \"/bin/sh\" \
             #:env '((\"PATH\" . \"/bin:/usr/bin\")) \
             #:args (list \"-c\" \"uname -m > $out; getconf LONG_BIT >> $out\"))"
        ),
    )
    .unwrap();
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    file.to_string_lossy().into_owned()
}

fn built(o: &std::process::Output, d: &SharedDaemon) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    let out = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    fs::read_to_string(out).unwrap()
}

#[test]
fn an_x86_64_machine_builds_i686_under_the_32_bit_personality() {
    if !support::prerequisites(&["root", "namespaces"]) {
        return;
    }
    if ferry_build::systems::this_system() != "x86_64-linux" {
        eprintln!("skipped: not an x86_64-linux machine");
        return;
    }
    for (mode, args) in [("sandbox", &[][..]), ("no-sandbox", &["--no-sandbox"][..])] {
        let d = SharedDaemon::start(args);
        let file = i686_build_file(&d, mode);
        let o = run_timeout(&mut d.ferry(&["build", &file]), 120);
        // `getconf LONG_BIT` reads the binary's word size (64 here), so
        // only `uname -m` is asserted.
        let seen = built(&o, &d);
        assert!(
            seen.starts_with("i686\n"),
            "{mode}: the builder saw {seen:?}"
        );
        d.assert_verify_clean();

        // Without a daemon: the same, embedded.
        let file = i686_build_file(&d, &format!("{mode}-embedded"));
        let mut c = d.ferry(&["build", &file]);
        c.env("FERRY_DAEMON_SOCKET", d.root.join("no-daemon.sock"));
        if mode == "no-sandbox" {
            c.arg("--no-sandbox");
        }
        let o = run_timeout(&mut c, 120);
        let seen = built(&o, &d);
        assert!(
            seen.starts_with("i686\n"),
            "{mode}, embedded: the builder saw {seen:?}"
        );
    }
}

/// Registers `/usr/lib/binfmt.d/qemu-aarch64.conf` with binfmt_misc
/// (mounting it first) unless done; the reason when it cannot be.
fn aarch64_emulation() -> Result<(), String> {
    let dir = std::path::Path::new("/proc/sys/fs/binfmt_misc");
    if !dir.join("register").exists() {
        let st = std::process::Command::new("mount")
            .args(["-t", "binfmt_misc", "binfmt_misc"])
            .arg(dir)
            .status()
            .map_err(|e| format!("mount: {e}"))?;
        if !st.success() {
            return Err("cannot mount binfmt_misc".into());
        }
    }
    if dir.join("qemu-aarch64").exists() {
        return Ok(());
    }
    let conf = fs::read_to_string("/usr/lib/binfmt.d/qemu-aarch64.conf")
        .map_err(|e| format!("qemu-user-static's qemu-aarch64.conf: {e}"))?;
    let line = conf.lines().find(|l| l.starts_with(':')).ok_or("no rule")?;
    fs::write(dir.join("register"), line).map_err(|e| format!("registering qemu-aarch64: {e}"))
}

#[test]
fn an_emulated_system_builds_through_binfmt_misc_with_extra_platforms() {
    if !support::prerequisites(&["root", "namespaces"]) {
        return;
    }
    // .ci/run provides a static arm64 busybox (Debian's busybox-static)
    // and qemu-user-static.
    let Some(busybox) = std::env::var_os("FERRY_TEST_AARCH64_BUSYBOX") else {
        eprintln!("skipped: FERRY_TEST_AARCH64_BUSYBOX (a static arm64 busybox) is not set; .ci/run sets it");
        return;
    };
    if let Err(why) = aarch64_emulation() {
        eprintln!("cannot run here: aarch64 emulation unavailable: {why}");
        return;
    }
    for (mode, extra) in [("sandbox", None), ("no-sandbox", Some("--no-sandbox"))] {
        let mut args = vec!["--extra-platforms", "aarch64-linux"];
        args.extend(extra);
        let d = SharedDaemon::start(&args);
        // The builder is busybox itself, reached as `.../busybox` so that it
        // runs as the multi-call binary.
        let bb = d.root.join(format!("bb-{mode}"));
        fs::create_dir(&bb).unwrap();
        fs::copy(&busybox, bb.join("busybox")).unwrap();
        fs::set_permissions(
            bb.join("busybox"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let text = format!(
            "(derivation \"arm-{mode}\" #:system \"aarch64-linux\" \
             #:builder (string-append (local-file \"bb-{mode}\") \"/busybox\") \
             #:args '(\"sh\" \"-c\" \"uname -m > $out\"))"
        );
        let file = d.root.join(format!("arm-{mode}.scm"));
        fs::write(&file, &text).unwrap();
        let o = run_timeout(&mut d.ferry(&["build", file.to_str().unwrap()]), 120);
        let seen = built(&o, &d);
        assert_eq!(seen, "aarch64\n", "{mode}");
        d.assert_verify_clean();
        // Without the setting, the same machine refuses such a build.
        drop(d);
        let d = SharedDaemon::start(extra.as_slice());
        fs::create_dir(d.root.join(format!("bb-{mode}"))).unwrap();
        fs::copy(&busybox, d.root.join(format!("bb-{mode}/busybox"))).unwrap();
        let file2 = d.root.join(format!("arm-{mode}.scm"));
        fs::write(&file2, &text).unwrap();
        let o = run_timeout(&mut d.ferry(&["build", file2.to_str().unwrap()]), 120);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("aarch64-linux"),
            "{mode}: {err}"
        );
    }
}
