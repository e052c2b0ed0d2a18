//! Nix signatures on a Ferry daemon: with a key of
//! `nix-store --generate-binary-cache-key` in ferry.conf's
//! `trusted-public-keys`, a path signed with it (`nix store sign` through
//! the daemon, AddSignatures) is accepted from a user who is not trusted
//! (`nix copy` from a binary cache, AddMultipleToStore with the
//! signature), as nix-daemon accepts it; the same path unsigned is not.

use ferry_test_support as support;

use ferry_test_support::nix_clients::{text, FerryNix};
use support::attacker::User;
use support::run;

const DRV: &str = r#"derivation { name = "signed"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo sign me > $out" ]; }"#;
const DRV2: &str = r#"derivation { name = "unsigned"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo leave me > $out" ]; }"#;

#[test]
fn a_path_signed_by_a_trusted_key_is_accepted_from_an_untrusted_user() {
    if !support::prerequisites(&["root", "nix", "nix-store", "nix-build"]) {
        return;
    }
    // The key pair, as Nix makes it.
    let keys = tempfile::tempdir().unwrap();
    let (sk, pk) = (keys.path().join("sk"), keys.path().join("pk"));
    let o = run(
        std::process::Command::new("nix-store").args([
            "--generate-binary-cache-key",
            "ferry-test-1",
            sk.to_str().unwrap(),
            pk.to_str().unwrap(),
        ]),
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let public = std::fs::read_to_string(&pk).unwrap();
    let f = FerryNix::start_with_conf(&format!("trusted-public-keys = {}\n", public.trim()), &[]);
    let user = User::ensure("ferry-nix-user");

    // Root builds two paths and signs one (AddSignatures), then puts
    // both in a binary cache every user can read, and deletes them.
    let signed = f.ok("nix-build", &["-E", DRV, "--no-out-link"]);
    let unsigned = f.ok("nix-build", &["-E", DRV2, "--no-out-link"]);
    f.ok(
        "nix",
        &["store", "sign", "--key-file", sk.to_str().unwrap(), &signed],
    );
    let info = f.ok("nix", &["path-info", "--json", &signed]);
    assert!(info.contains("ferry-test-1:"), "{info}");
    let cache = f.root.join("cache");
    let cache_uri = format!("file://{}", cache.display());
    f.ok("nix", &["copy", "--to", &cache_uri, &signed, &unsigned]);
    run(
        std::process::Command::new("chmod").args(["-R", "a+rX", cache.to_str().unwrap()]),
        None,
    );
    f.ok("nix-store", &["--delete", &signed, &unsigned]);

    // The user copies them in.
    let copy = |path: &str| {
        let mut c = user.command("nix");
        f.nix_env(&mut c);
        c.env("NIX_STATE_DIR", user.home.join("nix-state")).args([
            "copy",
            "--from",
            &cache_uri,
            "--to",
            &format!("unix://{}", f.nix_socket.display()),
            path,
        ]);
        run(&mut c, None)
    };
    let o = copy(&unsigned);
    assert!(!o.status.success(), "unsigned: {}", text(&o));
    assert!(text(&o).contains("lacks a valid signature"), "{}", text(&o));
    let o = copy(&signed);
    assert!(
        o.status.success(),
        "signed by a trusted key: {}{}",
        text(&o),
        f.log()
    );
    assert_eq!(std::fs::read_to_string(&signed).unwrap(), "sign me\n");
    let info = f.ok("nix", &["path-info", "--json", &signed]);
    assert!(
        info.contains("ferry-test-1:"),
        "the signature is kept: {info}"
    );
}
