//! The messages of the protocol. Store paths travel as absolute strings; the
//! handshake guarantees both sides use the same store directory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// First message of a connection, client to daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub version: String,
    pub store_dir: String,
}

/// The daemon's answer to a [`Hello`] it accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u32,
    pub version: String,
    pub store_dir: String,
    /// Systems this daemon builds for, e.g. `x86_64-linux`.
    pub systems: Vec<String>,
    /// Features its builders have, e.g. `kvm`.
    pub features: Vec<String>,
    /// It sends [`BuildEvent::KeepAlive`] during a build when asked
    /// ([`BuildOptions::keep_alive`]); older daemons say nothing (false).
    #[serde(default)]
    pub keep_alive: bool,
}

/// The handshake's outcome as sent by the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "handshake", rename_all = "kebab-case")]
pub enum HandshakeReply {
    Welcome(Welcome),
    Refused { reason: String },
}

/// What a build request may tune.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildOptions {
    /// Cores each builder may use (`NIX_BUILD_CORES`); 0 = all.
    #[serde(default)]
    pub cores: u32,
    /// Kill a builder silent for this many seconds (0 = never).
    #[serde(default)]
    pub max_silent_time: u64,
    /// Kill a builder running this many seconds (0 = never).
    #[serde(default)]
    pub timeout: u64,
    /// Go on building what does not depend on a failure.
    #[serde(default)]
    pub keep_going: bool,
    /// Set by an offloading master: it chose this machine by its
    /// machines.scm entry (`systems`, `features`), which vouches for it, so
    /// build whatever the derivation's system and required features (as a
    /// Guix build machine does) and do not offload it further.
    #[serde(default)]
    pub offloaded: bool,
    /// Build everything on the daemon's machine (`ferry build --no-offload`).
    #[serde(default)]
    pub no_offload: bool,
    /// The client's wish about the sandbox (`Some(false)`: `--no-sandbox`);
    /// `None` leaves it to the daemon. Only trusted users may turn it off:
    /// for others the daemon ignores it and says so.
    #[serde(default)]
    pub sandbox: Option<bool>,
    /// Send a [`BuildEvent::KeepAlive`] every this many seconds while the
    /// build runs (0 = never): how an offloading master tells a silent
    /// build from a stopped daemon. Only for daemons whose [`Welcome`]
    /// says `keep_alive` (older clients never ask, so never receive one).
    #[serde(default)]
    pub keep_alive: u64,
    /// Build nothing on the daemon's machine for this request, only on
    /// build machines (`ferry build -j 0`, Nix's `--max-jobs 0`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_local: bool,
    /// Keep the build directory of a failed build and say where it is in
    /// the failure's message (`ferry build -K`, Nix's `--keep-failed`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_failed: bool,
    /// Send [`BuildEvent::Phase`] and [`BuildEvent::Transfer`] (for a
    /// progress display). Older clients never ask, so never receive one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub progress: bool,
}

/// A request, client to daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Which of these paths are valid (one round trip for many paths).
    QueryValid {
        paths: Vec<String>,
    },
    PathInfo {
        path: String,
    },
    /// Followed by a stream: the NAR of the file or tree to add as `name`.
    AddToStore {
        name: String,
    },
    /// Add a text file (a `.drv`, whose output paths the daemon checks).
    AddText {
        name: String,
        text: String,
        references: Vec<String>,
    },
    /// Answered by a stream: an export bundle, dependencies first.
    Export {
        paths: Vec<String>,
        recursive: bool,
    },
    /// Followed by a stream: an export bundle to import. Its items must be
    /// signed by a key in the daemon's ACL unless `no_check_sigs`, which
    /// only trusted users may ask for. With `expected` (an offloading
    /// master's import), every item must also be one of those paths.
    Import {
        #[serde(default)]
        no_check_sigs: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected: Option<Vec<String>>,
    },
    /// Build these `.drv` paths (and what they need). Answered by
    /// [`Response::Build`] events, then [`Response::BuildDone`].
    Build {
        drvs: Vec<String>,
        #[serde(default)]
        options: BuildOptions,
    },
    MachineInfo,
    /// How the daemon sees its build machines (for `ferry offload status`).
    FarmStatus,
    /// Keep this path from garbage collection while the connection lasts.
    AddTempRoot {
        path: String,
    },
    /// The stored log of a derivation's last build. Answered by a stream
    /// (the log's bytes), then [`Response::Ok`]; an aborted stream and
    /// [`Response::Error`] when there is no log.
    Log {
        drv: String,
    },
    /// Check every valid path and list stray entries (`ferry store
    /// verify`); `repair` (trusted users only) removes the strays.
    /// Answered by [`Response::Verified`].
    Verify {
        #[serde(default)]
        repair: bool,
    },
    /// Collect garbage (`ferry gc`). Answered by [`Response::Collected`].
    /// `keep_outputs`/`keep_derivations` override the daemon's settings
    /// for trusted users only.
    CollectGarbage {
        action: GcRequest,
        #[serde(default)]
        keep_outputs: Option<bool>,
        #[serde(default)]
        keep_derivations: Option<bool>,
    },
    /// The permanent roots (`ferry gc --list-roots`): every one for trusted
    /// users, a user's own (links it owns) for others. Answered by
    /// [`Response::Roots`].
    FindRoots,
    /// Register `link` (a symlink into the store the client made) as an
    /// indirect root (`ferry build --root`).
    AddIndirectRoot {
        link: String,
    },
    /// The valid paths that refer to `path` (`ferry gc --referrers`).
    /// Answered by [`Response::Valid`].
    QueryReferrers {
        path: String,
    },
}

/// What a [`Request::CollectGarbage`] does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GcRequest {
    /// Delete dead paths until `max_freed` bytes are freed (all if none).
    DeleteDead {
        #[serde(default)]
        max_freed: Option<u64>,
    },
    /// Delete these paths if dead, else refuse (trusted users only).
    DeleteSpecific {
        paths: Vec<String>,
    },
    ListDead,
    ListLive,
}

/// What the daemon knows about a valid path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathInfo {
    pub path: String,
    /// `sha256:<nix32>`.
    pub nar_hash: String,
    pub nar_size: u64,
    pub references: Vec<String>,
    pub deriver: Option<String>,
    pub registration_time: i64,
    pub signatures: Vec<String>,
    pub ca: Option<String>,
}

/// A machine's capacity and load, for the scheduler and `offload status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub version: String,
    pub store_dir: String,
    pub systems: Vec<String>,
    pub features: Vec<String>,
    pub cores: u32,
    /// 1-minute load average.
    pub load_1m: f64,
    /// 1-minute load average divided by cores, capped at 1.
    pub normalized_load: f64,
    /// Bytes available on the store's file system.
    pub free_bytes: u64,
    pub builds_running: u32,
    pub max_jobs: u32,
    pub kernel: String,
    pub arch: String,
    /// Seconds since the epoch, for clock comparisons.
    pub time: f64,
}

/// One build machine as an offloading daemon sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FarmMachine {
    pub name: String,
    /// Builds this daemon runs there now.
    pub in_use: u32,
    /// Seconds until it is tried again after failures, if backed off.
    pub backed_off_for: Option<f64>,
    pub failures: u32,
    pub last_error: Option<String>,
    /// Kept out after an error only a person can fix (host key, refused
    /// key, ACL) until machines.scm, the ACL or its private key changes.
    #[serde(default)]
    pub until_changed: bool,
    /// The daemon's last measurement of the machine, and its age.
    #[serde(default)]
    pub info: Option<MachineInfo>,
    #[serde(default)]
    pub measured_secs_ago: Option<f64>,
    /// Seconds since its last real attempt (a probe, a connection, a
    /// build), if any: what `ferry offload status` states and ages.
    #[serde(default)]
    pub attempted_secs_ago: Option<f64>,
    /// The kind of that attempt's error (`host-key`, `connect`, `silent`,
    /// `disk-full`, ...); `None`: it worked.
    #[serde(default)]
    pub attempt_error: Option<String>,
}

/// Progress of a build request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum BuildEvent {
    Started {
        drv: String,
        machine: String,
    },
    Log {
        drv: String,
        line: String,
    },
    Finished {
        drv: String,
        ok: bool,
    },
    /// Something the daemon did other than asked (an ignored option), for
    /// the client to show as a warning.
    Warning {
        message: String,
    },
    /// Nothing else to say, but alive (see [`BuildOptions::keep_alive`]).
    KeepAlive,
    /// What a derivation's build is doing now, on `machine` (`localhost`
    /// for this one); `detail` says what a wait waits for. Sent only when
    /// asked ([`BuildOptions::progress`]); may be dropped for a slow client.
    Phase {
        drv: String,
        machine: String,
        phase: BuildPhase,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Bytes of a copy to or from a build machine so far (at most a few
    /// per second per copy); `total` is what the NAR sizes promise (0:
    /// unknown). Sent only when asked, as [`BuildEvent::Phase`].
    Transfer {
        drv: String,
        machine: String,
        direction: Direction,
        done: u64,
        total: u64,
    },
}

impl BuildEvent {
    /// A progress event ([`BuildEvent::Phase`], [`BuildEvent::Transfer`]):
    /// for those who asked, droppable.
    pub fn is_progress(&self) -> bool {
        matches!(self, BuildEvent::Phase { .. } | BuildEvent::Transfer { .. })
    }
}

/// A step of a derivation's build (see [`BuildEvent::Phase`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildPhase {
    /// For a build machine, a local job permit or a lock (`detail` says
    /// which).
    Waiting,
    /// Sending its inputs to the build machine.
    Sending,
    Building,
    /// Fetching its outputs from the build machine.
    Fetching,
}

/// Which way a [`BuildEvent::Transfer`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Inputs to the build machine.
    Send,
    /// Outputs from it.
    Fetch,
}

/// How one derivation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildStatus {
    /// Built now.
    Built,
    /// Its outputs were already valid.
    AlreadyValid,
    Failed,
    /// Not attempted: an input failed.
    DependencyFailed,
}

/// The result for one requested derivation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildResult {
    pub drv: String,
    pub status: BuildStatus,
    /// Output name to path.
    pub outputs: BTreeMap<String, String>,
    /// What went wrong, for people.
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    /// The last lines of the log of the failed build.
    pub log_tail: Vec<String>,
    /// Why a failed build failed, when the exit status tells it (Nix's
    /// `BuildResult::TimedOut`, a fixed output's hash mismatch).
    #[serde(default)]
    pub failure: FailureKind,
}

/// The kind of a build failure that `ferry build`'s exit status tells, as
/// Nix's (`Worker::exitStatus`: 100, 101 timed out, 102 hash mismatch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// Any other failure (or none).
    #[default]
    Other,
    /// Killed by `--timeout` or `--max-silent-time`.
    TimedOut,
    /// A fixed-output derivation's output had another hash.
    HashMismatch,
}

/// A response, daemon to client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Response {
    Ok,
    Error {
        message: String,
    },
    Valid {
        paths: Vec<String>,
    },
    PathInfo {
        info: Option<PathInfo>,
    },
    Added {
        path: String,
    },
    Imported {
        paths: Vec<String>,
    },
    MachineInfo(MachineInfo),
    Build(BuildEvent),
    BuildDone {
        results: Vec<BuildResult>,
    },
    FarmStatus {
        machines: Vec<FarmMachine>,
    },
    /// What `Verify` found: a line per problem or stray entry, a summary,
    /// and whether all is well.
    Verified {
        lines: Vec<String>,
        summary: Vec<String>,
        ok: bool,
    },
    /// What a collection deleted (or listed), and the bytes freed.
    Collected {
        /// The paths listed, or (at most 1000 of) those deleted.
        paths: Vec<String>,
        /// How many were deleted (older daemons: absent, see `paths`).
        #[serde(default)]
        deleted: u64,
        bytes_freed: u64,
    },
    /// Permanent roots: (link, store path).
    Roots {
        roots: Vec<(String, String)>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_events_are_kebab_case_and_asked_for_only() {
        let ev = BuildEvent::Transfer {
            drv: "/s/x.drv".into(),
            machine: "h1".into(),
            direction: Direction::Fetch,
            done: 1,
            total: 2,
        };
        let text = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            text,
            r#"{"event":"transfer","drv":"/s/x.drv","machine":"h1","direction":"fetch","done":1,"total":2}"#
        );
        let ev = BuildEvent::Phase {
            drv: "d".into(),
            machine: String::new(),
            phase: BuildPhase::Waiting,
            detail: Some("for a build machine".into()),
        };
        let text = serde_json::to_string(&ev).unwrap();
        assert!(text.contains(r#""event":"phase""#) && text.contains(r#""phase":"waiting""#));
        assert_eq!(serde_json::from_str::<BuildEvent>(&text).unwrap(), ev);
        // An older client's options: no progress; and not sent unless asked.
        let old: BuildOptions = serde_json::from_str("{}").unwrap();
        assert!(!old.progress);
        assert!(!serde_json::to_string(&old).unwrap().contains("progress"));
    }
}
