//! The multi-user rules of Ferry's socket hold for Nix clients: a user not trusted (a real unprivileged user, its uid read
//! from the socket) cannot add a path that does not prove itself (an
//! unsigned, input-addressed build output imported with `nix-store
//! --import`, whatever `dontCheckSigs` it sends), can add sources (the daemon
//! computes their paths) and build, and cannot delete given paths; root can do all
//! of it; a user not in `allowed-users` is refused at the greeting.

use ferry_test_support as support;

use ferry_test_support::nix_clients::{text, FerryNix};
use support::attacker::User;
use support::run;

const BUILT: &str = r#"derivation { name = "built"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo built > $out" ]; }"#;

const USER_BUILT: &str = r#"derivation { name = "user-built"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo built by a user; echo u > $out" ]; }"#;

#[test]
fn an_untrusted_nix_client_cannot_add_unsigned_paths() {
    if !support::prerequisites(&["root", "nix-store", "nix-build"]) {
        return;
    }
    let f = FerryNix::start(&[]);
    let user = User::ensure("ferry-nix-user");
    let as_user = |args: &[&str]| {
        let mut c = user.command("nix-store");
        f.nix_env(&mut c);
        c.env("NIX_STATE_DIR", user.home.join("nix-state"))
            .env("NIX_REMOTE", format!("unix://{}", f.nix_socket.display()))
            .args(args);
        c
    };

    // Root builds an input-addressed path and a content-addressed one,
    // exports both, and deletes them.
    let built = f.ok("nix-build", &["-E", BUILT, "--no-out-link"]);
    let file = f.write("ca.txt", "content-addressed\n");
    let added = f.ok("nix-store", &["--add", file.to_str().unwrap()]);
    let export_built = run(&mut f.nix("nix-store", &["--export", &built]), None);
    let export_added = run(&mut f.nix("nix-store", &["--export", &added]), None);
    assert!(export_built.status.success() && export_added.status.success());
    f.ok("nix-store", &["--delete", &built, &added]);

    // The user: the unsigned build output is refused, and not valid after.
    let o = run(&mut as_user(&["--import"]), Some(&export_built.stdout));
    assert!(!o.status.success(), "an untrusted import: {}", text(&o));
    assert!(
        text(&o).contains("lacks a valid signature"),
        "Nix's words: {}",
        text(&o)
    );
    let o = run(&mut f.nix("nix-store", &["--check-validity", &built]), None);
    assert!(!o.status.success(), "nothing was added");
    // An export does not carry a content address, so even the added
    // file is unproven (as with nix-daemon); added as a source, through
    // AddToStore, it is the daemon that computes its path: accepted.
    let o = run(&mut as_user(&["--import"]), Some(&export_added.stdout));
    assert!(!o.status.success(), "{}", text(&o));
    let user_file = user.home.join("ca.txt");
    std::fs::write(&user_file, "content-addressed\n").unwrap();
    std::os::unix::fs::chown(&user_file, Some(user.uid), Some(user.gid)).unwrap();
    let o = run(&mut as_user(&["--add", user_file.to_str().unwrap()]), None);
    assert!(o.status.success(), "{}{}", text(&o), f.log());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), added);
    // The user builds (its derivation checked as any other), and sees
    // the log.
    let mut c = user.command("nix-build");
    f.nix_env(&mut c);
    c.env("NIX_STATE_DIR", user.home.join("nix-state"))
        .env("NIX_REMOTE", format!("unix://{}", f.nix_socket.display()))
        .args(["--no-out-link", "-E", USER_BUILT]);
    let o = run(&mut c, None);
    assert!(o.status.success(), "{}{}", text(&o), f.log());
    assert!(text(&o).contains("built by a user"), "{}", text(&o));
    // Deleting given paths is for trusted users.
    let o = run(&mut as_user(&["--delete", &added]), None);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("trusted"), "{}", text(&o));

    // Root imports the unsigned path (trusted: dontCheckSigs honoured).
    let imported = f.ok_with(
        &mut f.nix("nix-store", &["--import"]),
        Some(&export_built.stdout),
    );
    assert_eq!(imported, built);
    assert_eq!(std::fs::read_to_string(&built).unwrap(), "built\n");

    // A user not in allowed-users is refused at the greeting.
    drop(f);
    let f = FerryNix::start(&["--allowed-users", "root"]);
    let mut c = user.command("nix");
    f.nix_env(&mut c);
    c.env("NIX_STATE_DIR", user.home.join("nix-state"))
        .env("NIX_REMOTE", format!("unix://{}", f.nix_socket.display()))
        .args(["store", "ping"]);
    let o = run(&mut c, None);
    assert!(!o.status.success());
    assert!(text(&o).contains("not allowed"), "{}", text(&o));
}

/// `max-connections-per-user` counts a user's clients on both sockets:
/// holding the one allowed on Ferry's socket, the user is refused on the
/// Nix socket, and let in again once it is closed.
#[test]
fn connection_limits_count_both_sockets() {
    if !support::prerequisites(&["root", "nix"]) {
        return;
    }
    let f = FerryNix::start(&["--max-connections-per-user", "1"]);
    let user = User::ensure("ferry-nix-user");
    let ping = || {
        let mut c = user.command("nix");
        f.nix_env(&mut c);
        c.env("NIX_STATE_DIR", user.home.join("nix-state"))
            .env("NIX_REMOTE", format!("unix://{}", f.nix_socket.display()))
            .args(["store", "ping"]);
        run(&mut c, None)
    };
    let o = ping();
    assert!(o.status.success(), "{}{}", text(&o), f.log());
    let held = user.connect(&f.socket).unwrap();
    // Counted when the daemon accepts it.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let o = ping();
    assert!(!o.status.success(), "a second connection of the user");
    assert!(text(&o).contains("too many connections"), "{}", text(&o));
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let o = ping();
        if o.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still refused after the first connection closed: {}",
            text(&o)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
