//! Who may use the daemon, and who is trusted.
//!
//! The peer's uid and gid come from the socket (`SO_PEERCRED`) when the
//! connection is accepted; nothing the client says changes them.
//!
//! - A personal daemon (not run by root) serves its owner, and root, only:
//!   its store is its owner's, so another user building into it is an
//!   attack, whatever the socket's mode says.
//! - A root daemon follows Nix 2.8's `allowed-users` (default `*`) and
//!   `trusted-users` (default `root`): names, `@group` (the peer's primary
//!   group, or a group listing the user as a member in the group
//!   database), `*`. Trusted users are always allowed. Build users (the
//!   builders' uids) are never allowed, as Nix refuses its build group.
//!
//! Allowed users build, add sources and derivations, and import bundles
//! signed by a key in the ACL. Only trusted users import unsigned items,
//! turn the sandbox off or have a build placed by an offloading master
//! (`offloaded`): see [`crate::session`]. Root and the daemon's own user
//! are always trusted (they can write the store anyway; Nix trusts root
//! only through the default list).

use std::time::Duration;

/// `--allowed-users` and `--trusted-users`, as given (on the command
/// line or in ferry.conf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    pub allowed_users: Vec<String>,
    pub trusted_users: Vec<String>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            allowed_users: vec!["*".into()],
            trusted_users: vec!["root".into()],
        }
    }
}

/// How the daemon serves connections.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub access: AccessConfig,
    /// Connections served at once (`--max-connections`); over it new
    /// clients wait in the socket's backlog until one leaves.
    pub max_connections: usize,
    /// Connections one user (other than root and the daemon's own) may
    /// hold at once (`--max-connections-per-user`); over it the new one is
    /// refused, so one user cannot take every connection.
    pub max_connections_per_user: usize,
    /// A client must send its hello within this time.
    pub handshake_timeout: Duration,
    /// Nix's `trusted-public-keys`: a path a Nix client that is not
    /// trusted adds is accepted when signed by one of them (see
    /// `nix_daemon::add`).
    pub trusted_public_keys: Vec<ferry_trust::nix_signature::NixPublicKey>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            access: AccessConfig::default(),
            max_connections: 256,
            max_connections_per_user: 64,
            handshake_timeout: Duration::from_secs(10),
            trusted_public_keys: Vec::new(),
        }
    }
}

/// A connected client, as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// The user's name, or its uid when the user database has none.
    pub user: String,
    pub trusted: bool,
}

impl Peer {
    /// The daemon's own user: in-process connections (tests, a stream
    /// handed over by the daemon itself).
    pub fn owner() -> Peer {
        let uid = rustix::process::geteuid().as_raw();
        Peer {
            uid,
            gid: rustix::process::getegid().as_raw(),
            user: user_name(uid),
            trusted: true,
        }
    }
}

/// The policy, with what it needs to know about this daemon.
#[derive(Debug, Clone)]
pub struct Access {
    config: AccessConfig,
    daemon_uid: u32,
    /// The builders' uids (never allowed to connect).
    build_uids: std::ops::Range<u32>,
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(gid.into()) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// Nix's `matchUser`: `*`, the user's name, or `@group` with the user's
/// primary group or a group that lists the user as a member.
pub fn match_user(user: &str, group: &str, list: &[String]) -> bool {
    list.iter().any(|entry| {
        if entry == "*" || entry == user {
            return true;
        }
        let Some(g) = entry.strip_prefix('@') else {
            return false;
        };
        if g == group {
            return true;
        }
        matches!(nix::unistd::Group::from_name(g), Ok(Some(gr)) if gr.mem.iter().any(|m| m == user))
    })
}

impl Access {
    pub fn new(config: AccessConfig, build_uids: std::ops::Range<u32>) -> Access {
        Access {
            config,
            daemon_uid: rustix::process::geteuid().as_raw(),
            build_uids,
        }
    }

    pub fn config(&self) -> &AccessConfig {
        &self.config
    }

    /// Is this a personal daemon (not root's)?
    pub fn personal(&self) -> bool {
        self.daemon_uid != 0
    }

    /// Decide on a peer from its credentials. Blocking: the user and group
    /// databases may be remote (NSS); call off the async threads.
    pub fn check(&self, uid: u32, gid: u32) -> Result<Peer, String> {
        let user = user_name(uid);
        if self.personal() {
            if uid == self.daemon_uid || uid == 0 {
                return Ok(Peer {
                    uid,
                    gid,
                    user,
                    trusted: true,
                });
            }
            return Err(format!(
                "this is the personal daemon of user '{}' (uid {}): user '{user}' (uid {uid}) may not use it; build with your own daemon or store (ferry build without a daemon builds in your own store)",
                user_name(self.daemon_uid),
                self.daemon_uid
            ));
        }
        let group = group_name(gid);
        let trusted = uid == 0 || match_user(&user, &group, &self.config.trusted_users);
        if self.build_uids.contains(&uid) && uid != 0 {
            return Err(format!(
                "user '{user}' (uid {uid}) is a build user of this daemon: builders may not connect to the daemon"
            ));
        }
        if !trusted && !match_user(&user, &group, &self.config.allowed_users) {
            return Err(format!(
                "user '{user}' is not allowed to connect to the Ferry daemon (allowed users: {}); ask its administrator to add the user or one of its groups (@group) to --allowed-users",
                self.config.allowed_users.join(" ")
            ));
        }
        Ok(Peer {
            uid,
            gid,
            user,
            trusted,
        })
    }
}

/// What an untrusted user may not ask of a build is taken out of its
/// options, each with the warning the client shows.
pub fn restrict_build_options(
    options: &mut ferry_protocol::BuildOptions,
    peer: &Peer,
    daemon_sandbox: bool,
) -> Vec<String> {
    let mut warnings = Vec::new();
    match options.sandbox {
        Some(false) if daemon_sandbox && !peer.trusted => {
            options.sandbox = None;
            warnings.push(format!(
                "the daemon ignored --no-sandbox: only trusted users may turn the sandbox off (user '{}' is not in --trusted-users)",
                peer.user
            ));
        }
        Some(true) if !daemon_sandbox => {
            options.sandbox = None;
            warnings.push(
                "the daemon builds without a sandbox (started with --no-sandbox, or namespaces are unavailable there)".into(),
            );
        }
        _ => {}
    }
    if options.offloaded && !peer.trusted {
        // "Placed by a master: build whatever the system and features":
        // the master's SSH user must be trusted to decide that.
        options.offloaded = false;
        warnings.push(format!(
            "the daemon ignored 'offloaded': only trusted users (an offloading master's SSH user) may have derivations built whatever their system and features; user '{}' is not in --trusted-users",
            peer.user
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn match_user_follows_nix() {
        assert!(match_user("alice", "users", &list(&["*"])));
        assert!(match_user("alice", "users", &list(&["bob", "alice"])));
        assert!(!match_user("alice", "users", &list(&["bob"])));
        // The primary group, by name.
        assert!(match_user("alice", "users", &list(&["@users"])));
        assert!(!match_user(
            "alice",
            "users",
            &list(&["@wheel-nonexistent-xyz"])
        ));
        assert!(!match_user("alice", "users", &list(&[])));
        // `root` is a member of no group listing it, but its primary group
        // is `root` on every Linux system.
        assert!(match_user("root", &group_name(0), &list(&["@root"])));
    }

    #[test]
    fn untrusted_build_options_are_restricted_and_said() {
        let mut peer = Peer {
            uid: 1000,
            gid: 1000,
            user: "alice".into(),
            trusted: false,
        };
        let wish = ferry_protocol::BuildOptions {
            sandbox: Some(false),
            offloaded: true,
            ..Default::default()
        };
        let mut o = wish.clone();
        let w = restrict_build_options(&mut o, &peer, true);
        assert_eq!((o.sandbox, o.offloaded, w.len()), (None, false, 2));
        assert!(w[0].starts_with("the daemon ignored --no-sandbox: only trusted users"));
        peer.trusted = true;
        let mut o = wish.clone();
        assert!(restrict_build_options(&mut o, &peer, true).is_empty());
        assert_eq!(o, wish);
    }

    #[test]
    fn root_daemon_applies_the_lists_and_refuses_build_users() {
        if rustix::process::geteuid().as_raw() != 0 {
            eprintln!("skipped: the root daemon's rules need root");
            return;
        }
        let a = Access::new(
            AccessConfig {
                allowed_users: list(&["nobody-such-user"]),
                trusted_users: list(&["root"]),
            },
            30000..30004,
        );
        let root = a.check(0, 0).unwrap();
        assert!(root.trusted);
        let e = a.check(12345, 12345).unwrap_err();
        assert!(
            e.contains("not allowed") && e.contains("--allowed-users"),
            "{e}"
        );
        let e = a.check(30001, 30001).unwrap_err();
        assert!(e.contains("build user"), "{e}");
        let everyone = Access::new(AccessConfig::default(), 30000..30004);
        let p = everyone.check(12345, 12345).unwrap();
        assert!(!p.trusted);
        assert_eq!(p.user, "12345");
    }
}
