//! `ferry daemon --stdio` as the remote program of Nix's `ssh-ng://` store
//!: Nix 2.8 runs `ssh HOST -- PROGRAM --stdio` and speaks the
//! worker protocol over it. Here `ssh` is a stand-in in PATH that runs the
//! command locally (no sshd needed: what is tested is Nix's ssh-ng client
//! and Ferry's `--stdio`), and the remote program is `ferry daemon` pointed
//! at the test's store. With a daemon on the Nix socket, `--stdio`
//! forwards to it (the daemon sees the real peer); without one, it serves
//! in-process on the store.

use ferry_test_support as support;

use ferry_test_support::nix_clients::{text, FerryNix};
use support::run;

#[test]
fn nix_ssh_ng_store_through_ferry_daemon_stdio() {
    if !support::prerequisites(&["root", "nix-store", "nix-build"]) {
        return;
    }
    let mut f = FerryNix::start(&[]);
    let (uri, path) = f.ssh_ng_remote();
    let ssh_ng = |f: &FerryNix, program: &str, args: &[&str]| {
        let mut c = f.nix(program, args);
        c.env_remove("NIX_REMOTE")
            .env("PATH", &path)
            .arg("--store")
            .arg(&uri);
        c
    };

    // Forwarded to the running daemon: it serves the connection.
    let file = f.write("over-ssh.txt", "over ssh-ng\n");
    let o = run(
        &mut ssh_ng(&f, "nix-store", &["--add", file.to_str().unwrap()]),
        None,
    );
    assert!(o.status.success(), "{}{}", text(&o), f.log());
    let added = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(added.ends_with("-over-ssh.txt"), "{added}");
    assert!(
        f.log().contains("op=AddToStore"),
        "the daemon served it{}",
        f.log()
    );
    let o = run(
        &mut ssh_ng(
            &f,
            "nix-build",
            &[
                "-E",
                r#"derivation { name = "remote"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo building remotely; echo remote > $out" ]; }"#,
                "--no-out-link",
            ],
        ),
        None,
    );
    assert!(o.status.success(), "{}{}", text(&o), f.log());
    assert!(text(&o).contains("building remotely"), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "remote\n");

    // No daemon: served in-process on the same store.
    f.stop();
    let hash = run(
        &mut ssh_ng(&f, "nix-store", &["-q", "--hash", &added]),
        None,
    );
    assert!(hash.status.success(), "{}", text(&hash));
    assert!(String::from_utf8_lossy(&hash.stdout).starts_with("sha256:"));
    let o = run(&mut ssh_ng(&f, "nix-store", &["--verify-path", &out]), None);
    assert!(o.status.success(), "{}", text(&o));
}
