//! `ferry offload test` and `ferry offload status`: each machine checked
//! step by step, every failure naming the set-up step that is missing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ferry_protocol::MachineInfo;
use ferry_scheme::BuildMachine;
use ferry_store::Store;
use ferry_trust::{Acl, AclCheck, SecretKey};
use serde::Serialize;

use crate::bridge;
use crate::offload::ssh::{SshConnection, SshTarget};

/// One machine's test: the steps that passed, and the first that failed.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    pub machine: String,
    pub passed: Vec<String>,
    pub failed: Option<String>,
    pub ferry_version: Option<String>,
    pub seconds: f64,
}

impl TestReport {
    pub fn ok(&self) -> bool {
        self.failed.is_none()
    }
}

/// Test `m` as the seed's `guix offload test` does, and more precisely:
/// SSH and the host key, `ferry` in the remote PATH, the remote daemon and
/// its store directory, an item sent there (the master's key authorized
/// there) and one fetched back (the machine's key authorized here).
pub async fn test_machine(
    m: &BuildMachine,
    store: &Arc<Store>,
    key: &Arc<SecretKey>,
) -> TestReport {
    let started = Instant::now();
    let mut report = TestReport {
        machine: m.name.clone(),
        passed: Vec::new(),
        failed: None,
        ferry_version: None,
        seconds: 0.0,
    };
    if let Err(e) = run_test(m, store, key, &mut report).await {
        report.failed = Some(e);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

async fn run_test(
    m: &BuildMachine,
    store: &Arc<Store>,
    key: &Arc<SecretKey>,
    report: &mut TestReport,
) -> Result<(), String> {
    let conn = SshConnection::connect(&SshTarget::from_machine(m))
        .await
        .map_err(|e| e.to_string())?;
    report.passed.push("ssh and host key".into());

    let out = conn
        .exec("ferry --version")
        .await
        .map_err(|e| e.to_string())?;
    match out.status {
        Some(0) => {
            report.ferry_version = Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
            report.passed.push("ferry in PATH".into());
        }
        Some(127) => {
            return Err(format!(
                "`ferry` is not in the PATH of {} on {}: install it there, or make the PATH of non-interactive SSH sessions include it (e.g. SetEnv PATH=... in sshd_config)",
                m.user, m.name
            ))
        }
        other => {
            return Err(format!(
                "`ferry --version` on {} exited with {other:?}: {}",
                m.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    let mut client = conn
        .connect_daemon(&m.daemon_socket, store.store_dir().as_str())
        .await
        .map_err(|e| e.to_string())?;
    report.passed.push("daemon and store directory".into());

    // An item of ours, sent there (signed with our key).
    let nonce = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let ours = store
        .add_text(
            "ferry-offload-test",
            format!("sent by the master to {} ({nonce})\n", m.name).as_bytes(),
            &[],
        )
        .map_err(|e| e.to_string())?;
    let (mut reader, exporter) = {
        let store = store.clone();
        let key = key.clone();
        let ours = ours.clone();
        bridge::blocking_producer(move |out| {
            let sign = |d: &ferry_formats::Sha256Hash| Ok(ferry_trust::signature::sign(&key, d));
            let r = store.export(&[ours], false, out, Some(&sign));
            r.map(|_| ()).map_err(|e| e.to_string())
        })
    };
    let imported = client
        .import_expected(&mut reader, vec![store.display(&ours)])
        .await;
    exporter.await.map_err(|e| e.to_string())??;
    imported.map_err(|e| {
        let e = e.to_string();
        if e.contains("not authorized") || e.contains("not signed") {
            format!(
                "{} refuses items signed by this machine's key {}: on {}, run\n  echo '{}' | ferry archive --authorize",
                m.name,
                key.public().fingerprint(),
                m.name,
                key.public().to_sexp()
            )
        } else {
            format!("sending a test item to {}: {e}", m.name)
        }
    })?;
    report.passed.push("send (our key authorized there)".into());

    // An item of theirs, fetched back (signed with their key): that one
    // exactly, as for build outputs (see `accept`).
    let text = format!("made by {} for the master ({nonce})\n", m.name);
    let expected =
        crate::offload::accept::TextItem::new(store, "ferry-offload-test", text.as_bytes())
            .map_err(|e| e.to_string())?;
    let theirs = client
        .add_text("ferry-offload-test", &text, vec![])
        .await
        .map_err(|e| format!("adding a test item on {}: {e}", m.name))?;
    if theirs != store.display(&expected.path) {
        return Err(format!(
            "{} added the test item as {theirs}, not {}",
            m.name,
            store.display(&expected.path)
        ));
    }
    let acl = Acl::load(&store.locations().config_dir).map_err(|e| e.to_string())?;
    let (mut writer, importer) = {
        let store = store.clone();
        bridge::blocking_consumer(move |bridge| {
            store
                .import_expected(bridge, &AclCheck { acl }, &expected)
                .map_err(|e| e.to_string())
        })
    };
    let exported = client.export(vec![theirs], false, &mut writer).await;
    drop(writer);
    let imported = importer.await.map_err(|e| e.to_string())?;
    exported.map_err(|e| format!("fetching a test item from {}: {e}", m.name))?;
    let imported = imported.map_err(|e| {
        if e.contains("not authorized") {
            format!(
                "this machine refuses items signed by {}'s key: run `ferry archive --authorize` here with {}'s signing-key.pub on standard input ({e})",
                m.name, m.name
            )
        } else {
            format!("importing a test item from {}: {e}", m.name)
        }
    })?;
    if imported.is_empty() {
        return Err(format!("{} sent nothing for its test item", m.name));
    }
    report.passed.push("fetch (its key authorized here)".into());
    Ok(())
}

/// One machine's state for `ferry offload status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub machine: String,
    pub reachable: bool,
    pub error: Option<String>,
    pub systems: Vec<String>,
    pub features: Vec<String>,
    pub parallel_builds: u32,
    pub speed: f64,
    pub info: Option<MachineInfo>,
    /// Remote clock minus ours, in seconds.
    pub clock_difference: Option<f64>,
}

/// Reach `m`'s daemon and read its machine info.
pub async fn status_machine(m: &BuildMachine, store_dir: &str, timeout: Duration) -> StatusReport {
    let mut target = SshTarget::from_machine(m);
    target.connect_timeout = timeout;
    target.silence = Some(timeout);
    let attempt = async {
        let conn = SshConnection::connect(&target)
            .await
            .map_err(|e| e.to_string())?;
        conn.machine_info(&m.daemon_socket, store_dir)
            .await
            .map_err(|e| super::OffloadError::ssh(&m.name, e).to_string())
    };
    let result = attempt.await;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    StatusReport {
        machine: m.name.clone(),
        reachable: result.is_ok(),
        clock_difference: result.as_ref().ok().map(|i| i.time - now),
        error: result.as_ref().err().cloned(),
        info: result.ok(),
        systems: m.systems.clone(),
        features: m.features.clone(),
        parallel_builds: m.parallel_builds,
        speed: m.speed,
    }
}
