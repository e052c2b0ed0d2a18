//! `nix copy` both ways between a Ferry daemon and a Nix store:
//! from the Ferry daemon (QueryPathInfo, NarFromPath) into Nix's own local
//! store at the same store directory (a chroot store, `local?root=DIR`),
//! and back into the Ferry daemon after deletion (AddMultipleToStore):
//! refused while the client asks for signatures to be checked (the path
//! is unsigned, as nix-daemon refuses it), accepted with `--no-check-sigs`
//! from a trusted user, with the same record.

use ferry_test_support as support;

use ferry_test_support::nix_clients::{text, FerryNix};
use support::run;

const DRV: &str = r#"derivation { name = "copied"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo copy me > $out" ]; }"#;

#[test]
fn nix_copy_to_and_from_a_ferry_daemon() {
    if !support::prerequisites(&["root", "nix", "nix-build"]) {
        return;
    }
    let f = FerryNix::start(&[]);
    let out = f.ok("nix-build", &["-E", DRV, "--no-out-link"]);
    let file = f.write("copied.txt", "a copied source\n");
    let src = f.ok("nix-store", &["--add", file.to_str().unwrap()]);
    let hash = f.ok("nix-store", &["-q", "--hash", &out]);
    let nix_store = format!("local?root={}", f.root.join("nix-root").display());
    let daemon = format!("unix://{}", f.nix_socket.display());

    // Ferry -> Nix.
    f.ok(
        "nix",
        &["copy", "--no-check-sigs", "--to", &nix_store, &out, &src],
    );
    let o = run(
        &mut f.nix("nix", &["path-info", "--store", &nix_store, "--json", &out]),
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&out), "{}", text(&o));

    // Nix -> Ferry, after deleting both there.
    f.ok("nix-store", &["--delete", &out, &src]);
    let o = run(
        &mut f.nix(
            "nix",
            &["copy", "--from", &nix_store, "--to", &daemon, &out],
        ),
        None,
    );
    assert!(!o.status.success(), "unsigned, checked: {}", text(&o));
    assert!(text(&o).contains("lacks a valid signature"), "{}", text(&o));
    let o = run(&mut f.nix("nix-store", &["--check-validity", &out]), None);
    assert!(!o.status.success(), "nothing added");
    // A content-addressed path proves itself, signatures checked or not.
    f.ok(
        "nix",
        &["copy", "--from", &nix_store, "--to", &daemon, &src],
    );
    f.ok(
        "nix",
        &[
            "copy",
            "--no-check-sigs",
            "--from",
            &nix_store,
            "--to",
            &daemon,
            &out,
        ],
    );
    assert_eq!(f.ok("nix-store", &["-q", "--hash", &out]), hash);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "copy me\n");
    f.ok("nix-store", &["--verify-path", &out]);
    f.ok("nix-store", &["--verify-path", &src]);
}
