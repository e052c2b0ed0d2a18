//! A Ferry machine as a builder of Nix: `nix-build --max-jobs 0
//! --builders 'ssh-ng://HOST?remote-program=ferry daemon'` on Nix's own
//! local store. Nix's build hook copies each derivation's inputs to the
//! Ferry daemon and sends it by BuildDerivation (a `BasicDerivation` whose
//! `.drv` is not in Ferry's store); Ferry builds it through its engine and
//! the hook copies the outputs back. `ssh` is a stand-in that runs the
//! command here (as in `nix_clients_stdio.rs`); the client's store is a
//! Nix chroot store (`local?root=`) at the same logical store directory as
//! Ferry's, so the two stores are apart.

use ferry_test_support as support;

use ferry_test_support::nix_clients::{text, FerryNix};
use support::attacker::User;
use support::run;

/// Two derivations, the second using the first's output and a source.
const DRVS: &str = r#"
let
  dep = derivation { name = "on-ferry-dep"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo built dep on ferry; echo dep > $out" ]; };
  src = builtins.toFile "greeting" "hello from a source\n";
in derivation { name = "on-ferry"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo building top on ferry; for f in ${dep} ${src}; do while read -r l; do echo $l; done < $f; done > $out" ]; }
"#;

/// A Nix command on the client's own chroot store at `root` (as `user`
/// when given: the store is then made the user's).
fn client(
    f: &FerryNix,
    user: Option<&User>,
    root: &std::path::Path,
    path: &str,
    program: &str,
    args: &[&str],
) -> std::process::Command {
    let mut c = match user {
        None => f.nix(program, args),
        Some(u) => {
            std::fs::create_dir_all(root).unwrap();
            std::os::unix::fs::chown(root, Some(u.uid), Some(u.gid)).unwrap();
            let mut c = u.command(program);
            f.nix_env(&mut c);
            c.args(args);
            c
        }
    };
    c.env_remove("NIX_REMOTE")
        .env("PATH", path)
        .arg("--store")
        .arg(format!("local?root={}", root.display()));
    c
}

#[test]
fn nix_build_with_a_ferry_daemon_as_its_builder() {
    if !support::prerequisites(&["root", "nix-store", "nix-build"]) {
        return;
    }
    let f = FerryNix::start(&[]);
    let (builders, path) = f.ssh_ng_remote();
    let client_root = f.root.join("client");
    let client =
        |program: &str, args: &[&str]| client(&f, None, &client_root, &path, program, args);
    let o = run(
        &mut client(
            "nix-build",
            &[
                "-E",
                DRVS,
                "--no-out-link",
                "--max-jobs",
                "0",
                "--builders",
                &builders,
            ],
        ),
        None,
    );
    assert!(o.status.success(), "{}{}", text(&o), f.log());
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(out.ends_with("-on-ferry"), "{out}");
    assert!(
        f.log().contains("op=BuildDerivation"),
        "the Ferry daemon was sent the builds{}",
        f.log()
    );
    assert!(
        text(&o).contains("building top on ferry"),
        "the build's log reached nix-build: {}",
        text(&o)
    );
    // Built on the Ferry side, registered there...
    let ferry_side = f.ok("nix-store", &["-q", "--hash", &out]);
    assert!(ferry_side.starts_with("sha256:"), "{ferry_side}");
    // ...and arrived in the client's store.
    // (A chroot store keeps its files in ROOT/nix/store.)
    let in_client = client_root
        .join("nix/store")
        .join(out.rsplit('/').next().unwrap());
    assert_eq!(
        std::fs::read_to_string(&in_client).unwrap(),
        "dep\nhello from a source\n"
    );
    let o = run(&mut client("nix-store", &["-q", "--hash", &out]), None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), ferry_side);
    let o = run(&mut client("nix-store", &["--verify-path", &out]), None);
    assert!(o.status.success(), "{}", text(&o));
}

/// nix-daemon 2.8's rule: a user who is not trusted may only have a
/// content-addressed derivation built by BuildDerivation.
#[test]
fn an_untrusted_user_may_only_send_content_addressed_derivations() {
    if !support::prerequisites(&["root", "nix-store", "nix-build"]) {
        return;
    }
    let f = FerryNix::start(&[]);
    let (builders, path) = f.ssh_ng_remote();
    let user = User::ensure("ferry-nix-user");
    let root = f.root.join("user-client");
    let build = |expr: &str| {
        let args = [
            "-E",
            expr,
            "--no-out-link",
            "--max-jobs",
            "0",
            "--builders",
            &builders,
        ];
        run(
            &mut client(&f, Some(&user), &root, &path, "nix-build", &args),
            None,
        )
    };
    let o = build(
        r#"derivation { name = "input-addressed"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo no > $out" ]; }"#,
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("you are not privileged to build input-addressed derivations"),
        "{}{}",
        text(&o),
        f.log()
    );
    let o = build(
        r#"derivation { name = "fixed"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo fixed by ferry > $out" ];
             outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = builtins.hashString "sha256" "fixed by ferry\n"; }"#,
    );
    assert!(o.status.success(), "{}{}", text(&o), f.log());
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let name = out.rsplit('/').next().unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("nix/store").join(name)).unwrap(),
        "fixed by ferry\n"
    );
    assert!(
        f.log().contains("op=BuildDerivation") && f.log().contains("trusted=false"),
        "{}",
        f.log()
    );
}
