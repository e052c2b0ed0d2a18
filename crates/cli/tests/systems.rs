//! The systems this machine builds for (issue 17, point 4): an
//! x86_64-linux machine builds i686-linux natively, its builder under the
//! 32-bit personality (`uname -m` says i686), with the sandbox, without it,
//! and without a daemon.

mod support;

use std::fs;

use support::attacker::{run_bounded, SharedDaemon};

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
        let o = run_bounded(&mut d.ferry(&["build", &file]), 120);
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
        let o = run_bounded(&mut c, 120);
        let seen = built(&o, &d);
        assert!(
            seen.starts_with("i686\n"),
            "{mode}, embedded: the builder saw {seen:?}"
        );
    }
}
