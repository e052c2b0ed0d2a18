//! The security tests' harness works: the daemon sees the attacker's own
//! uid through the socket, and commands run as the attacker really are
//! unprivileged. Every other `attack_*` test relies on both.

use ferry_test_support as support;

use support::attacker::{SharedDaemon, User};
use support::prerequisites;
use support::run_timeout;

#[test]
fn the_attacker_is_unprivileged_and_reaches_a_root_daemon() {
    if !prerequisites(&["root"]) {
        return;
    }
    let user = User::attacker();
    assert_ne!(user.uid, 0);
    let d = SharedDaemon::start(&[]);
    // A command as the user runs with its uid.
    let out = run_timeout(user.command("id").arg("-u"), 30);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        user.uid.to_string()
    );
    // It cannot write where root keeps the store.
    let probe = d.store.join("attacker-was-here");
    let out = run_timeout(user.command("touch").arg(&probe), 30);
    assert!(!out.status.success() && !probe.exists());
    // A protocol connection made as the user works (the daemon sees its
    // uid through SO_PEERCRED; the access tests check what it does with it).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = d.client_as(&user).await.expect("handshake as the attacker");
        assert!(c.query_valid(vec![]).await.unwrap().is_empty());
    });
    // A derivation written by the user builds for root.
    let drv = d.add_drv(Some(&user), "harness-smoke", "echo hello > $out");
    let out = d.build_as_root(&drv);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
    d.assert_verify_clean();
}
