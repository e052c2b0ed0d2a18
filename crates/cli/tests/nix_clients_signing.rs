//! Ferry signs what it builds in Nix's form: with a key
//! of `nix-store --generate-binary-cache-key` in ferry.conf's
//! `secret-key-files`, a path built through the daemon's Nix socket
//! carries a Nix signature by it; `nix path-info --sigs` shows it and `nix
//! store verify` accepts the path with the public key as its only trusted
//! key (and not with another key), and a Nix store that requires
//! signatures takes it by `nix copy` on that key alone.

use ferry_test_support as support;

use ferry_test_support::nix_clients::{text, FerryNix};
use support::run;

const DRV: &str = r#"derivation { name = "ferry-signed"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo signed by ferry > $out" ]; }"#;

/// A key pair as Nix makes it: (secret key file, public key).
fn key_pair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let (sk, pk) = (
        dir.join(format!("{name}.sk")),
        dir.join(format!("{name}.pk")),
    );
    let o = run(
        std::process::Command::new("nix-store").args([
            "--generate-binary-cache-key",
            name,
            sk.to_str().unwrap(),
            pk.to_str().unwrap(),
        ]),
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let public = std::fs::read_to_string(&pk).unwrap().trim().to_string();
    (sk, public)
}

#[test]
fn what_ferry_builds_carries_a_nix_signature_nix_verifies() {
    if !support::prerequisites(&["root", "nix", "nix-store", "nix-build"]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (sk, public) = key_pair(keys.path(), "ferry-builder-1");
    let (_, other) = key_pair(keys.path(), "ferry-builder-2");
    let f = FerryNix::start_with_conf(&format!("secret-key-files = {}\n", sk.display()), &[]);

    let out = f.ok("nix-build", &["-E", DRV, "--no-out-link"]);
    let out = out.trim();
    let sigs = f.ok("nix", &["path-info", "--sigs", out]);
    assert!(sigs.contains("ferry-builder-1:"), "{sigs}{}", f.log());

    let verify = |key: &str| {
        run(
            &mut f.nix(
                "nix",
                &[
                    "store",
                    "verify",
                    "--no-contents",
                    "--trusted-public-keys",
                    key,
                    out,
                ],
            ),
            None,
        )
    };
    let o = verify(&public);
    assert!(o.status.success(), "{}{}", text(&o), f.log());
    let o = verify(&other);
    assert!(!o.status.success(), "another key: {}", text(&o));
    assert!(text(&o).contains("untrusted"), "{}", text(&o));

    // A Nix store of its own (a chroot store at the same store directory)
    // that requires signatures takes the path on Ferry's key, not another.
    let copy = |key: &str, root: &str| {
        let mut c = f.nix(
            "nix",
            &[
                "copy",
                "--from",
                &format!("unix://{}", f.nix_socket.display()),
                "--to",
                &format!("local?root={}", f.root.join(root).display()),
                "--option",
                "require-sigs",
                "true",
                "--trusted-public-keys",
                key,
                out,
            ],
        );
        c.env_remove("NIX_REMOTE");
        run(&mut c, None)
    };
    let o = copy(&other, "nix-other");
    assert!(!o.status.success(), "another key: {}", text(&o));
    assert!(text(&o).contains("lacks a valid signature"), "{}", text(&o));
    let o = copy(&public, "nix-machine");
    assert!(o.status.success(), "{}{}", text(&o), f.log());
    let name = out.rsplit('/').next().unwrap();
    assert_eq!(
        std::fs::read_to_string(f.root.join("nix-machine/nix/store").join(name)).unwrap(),
        "signed by ferry\n"
    );
}
