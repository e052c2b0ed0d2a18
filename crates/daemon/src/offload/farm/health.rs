//! What each attempt on a machine teaches the farm: fresh measurements
//! (load, free space), probes under way, failures and the back-off they
//! earn by kind (timed and doubling, or until a file changes), successes
//! that reset it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use ferry_protocol::MachineInfo;
use ferry_scheme::BuildMachine;

use super::super::error::{Backoff, OffloadError};
use super::scheduler::Needs;
use super::{matches, Farm, UNTIL_CHANGED};

/// How long a measured load and free space are trusted.
const INFO_MAX_AGE: Duration = Duration::from_secs(10);
/// First back-off after a failure; doubled per failure, capped.
pub(super) const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(120);
/// A file as it was: its path and (modified, changed, mode), `None` when
/// missing.
pub(super) type FileStamp = (PathBuf, Option<(SystemTime, i64, u32)>);

fn stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok();
    (
        path.to_path_buf(),
        meta.and_then(|m| Some((m.modified().ok()?, m.ctime(), m.mode()))),
    )
}
impl Farm {
    /// Whether every candidate for `needs` is out until a person acts (its
    /// machines.scm entry is unusable, or it is kept out until
    /// machines.scm, the ACL or its key changes): waiting cannot help.
    pub fn all_out_until_changed(&self, needs: &Needs) -> bool {
        let st = self.lock();
        let mut candidates = st.machines.iter().filter(|m| matches(m, needs)).peekable();
        candidates.peek().is_some()
            && candidates.all(|m| {
                m.error.is_some()
                    || st
                        .live
                        .get(&m.name)
                        .is_some_and(|l| l.until_changed.is_some())
            })
    }

    /// Machines whose measurement is missing or old, among the candidates
    /// for `needs`.
    pub fn stale_candidates(&self, needs: &Needs) -> Vec<BuildMachine> {
        self.stale_where(|m| matches(m, needs))
    }

    /// Every machine whose measurement is missing or old (and that is not
    /// backed off): what the background refresh measures.
    pub fn stale(&self) -> Vec<BuildMachine> {
        self.stale_where(|_| true)
    }

    fn stale_where(&self, keep: impl Fn(&BuildMachine) -> bool) -> Vec<BuildMachine> {
        self.reload_if_changed();
        let st = self.lock();
        let now = Instant::now();
        st.machines
            .iter()
            .filter(|m| keep(m) && m.error.is_none())
            .filter(|m| {
                let live = st.live.get(&m.name);
                let backed_off = live
                    .and_then(|l| l.backed_off_until)
                    .is_some_and(|t| t > now);
                let fresh = live
                    .and_then(|l| l.info.as_ref())
                    .is_some_and(|(at, _)| now.duration_since(*at) < INFO_MAX_AGE);
                !backed_off && !fresh
            })
            .cloned()
            .collect()
    }

    /// Record a fresh measurement (and a success: the back-off resets).
    pub fn measured(&self, name: &str, info: MachineInfo) {
        let mut st = self.lock();
        let l = st.live.entry(name.to_string()).or_default();
        match (&l.info, &l.last_error) {
            (None, _) => tracing::info!(
                "build machine {name}: up ({} MiB free, load {:.2})",
                info.free_bytes >> 20,
                info.load_1m
            ),
            (Some(_), Some(was)) => tracing::info!("build machine {name}: back (it was: {was})"),
            (Some(_), None) => {}
        }
        l.info = Some((Instant::now(), info));
        l.last_attempt = Some((Instant::now(), None));
        l.failures = 0;
        l.backed_off_until = None;
        l.last_error = None;
        l.probing = false;
        l.until_changed = None;
        self.dispatch(&mut st);
    }

    /// Until when placement for `needs` gives candidates being measured
    /// for the first time a chance to answer: `grace` after the start of
    /// the latest such probe, if that is still ahead (counted from the
    /// probe, not the request: a silent machine delays placement by
    /// `grace` once, not every derivation placed while it is probed).
    pub fn first_contact_until(&self, needs: &Needs, grace: Duration) -> Option<Instant> {
        let st = self.lock();
        let now = Instant::now();
        st.machines
            .iter()
            .filter(|m| matches(m, needs))
            .filter_map(|m| st.live.get(&m.name))
            .filter(|l| l.probing && l.info.is_none())
            .filter_map(|l| l.probe_since.map(|t| t + grace))
            .filter(|t| *t > now)
            .max()
    }

    /// Mark a probe of `name` under way; false when one already is (one
    /// probe per machine at a time).
    pub fn start_probe(&self, name: &str) -> bool {
        let mut st = self.lock();
        let l = st.live.entry(name.to_string()).or_default();
        if l.probing {
            return false;
        }
        l.probing = true;
        l.probe_since = Some(Instant::now());
        true
    }

    /// A probe ended without a measurement (its error is reported with
    /// [`Farm::failed`]).
    pub fn probe_over(&self, name: &str) {
        let mut st = self.lock();
        if let Some(l) = st.live.get_mut(name) {
            if std::mem::take(&mut l.probing) {
                self.dispatch(&mut st);
            }
        }
    }

    /// Machines kept out until their configuration changed whose ACL or
    /// private key did change: tried again.
    pub fn recheck_changed(&self) {
        let mut st = self.lock();
        let mut any = false;
        for l in st.live.values_mut() {
            let changed = l
                .until_changed
                .as_ref()
                .is_some_and(|stamps| stamps.iter().any(|s| stamp(&s.0) != *s));
            if changed {
                l.until_changed = None;
                l.backed_off_until = None;
                l.failures = 0;
                any = true;
            }
        }
        if any {
            self.dispatch(&mut st);
        }
    }

    /// A step on a machine failed: back it off by the kind of error
    /// ([`OffloadError::backoff`]).
    pub fn failed(&self, name: &str, e: &OffloadError) {
        if e.backoff() != Backoff::None {
            let mut st = self.lock();
            st.live.entry(name.to_string()).or_default().last_attempt =
                Some((Instant::now(), Some(e.kind())));
        }
        match e.backoff() {
            Backoff::Transient => self.failed_transient(name, &e.to_string()),
            Backoff::None => tracing::warn!("build machine {name}: {e}"),
            Backoff::UntilChanged => {
                let mut files = self.watched.clone();
                if let Some(m) = self.lock().machines.iter().find(|m| m.name == name) {
                    files.push(m.private_key.clone());
                }
                let stamps = files.iter().map(|f| stamp(f)).collect();
                let mut st = self.lock();
                let l = st.live.entry(name.to_string()).or_default();
                if l.until_changed.is_none() {
                    l.failures += 1;
                    tracing::warn!(
                        "build machine {name}: {e}; not used until machines.scm, the ACL or its private key changes"
                    );
                }
                l.until_changed = Some(stamps);
                l.backed_off_until = Some(Instant::now() + UNTIL_CHANGED);
                l.last_error = Some(e.to_string());
                l.probing = false;
                self.dispatch(&mut st);
            }
        }
    }

    /// A transient failure (connection, silence, protocol): back it off,
    /// exponentially, capped. Reports while it is backed off are the same
    /// incident (every build and probe that was using the machine fails
    /// at once when it goes down): they do not lengthen the back-off.
    fn failed_transient(&self, name: &str, why: &str) {
        let mut st = self.lock();
        let l = st.live.entry(name.to_string()).or_default();
        l.probing = false;
        if l.backed_off_until.is_some_and(|t| t > Instant::now()) {
            tracing::debug!("build machine {name}: {why} (already backed off)");
            l.last_error = Some(why.to_string());
            return;
        }
        l.failures += 1;
        let wait = BACKOFF_FIRST
            .saturating_mul(1 << (l.failures - 1).min(16))
            .min(BACKOFF_MAX);
        l.backed_off_until = Some(Instant::now() + wait);
        l.last_error = Some(why.to_string());
        tracing::warn!(
            "build machine {name}: {why}; skipping it for {} s",
            wait.as_secs()
        );
        // Requests waiting for its first measurement look elsewhere.
        self.dispatch(&mut st);
    }

    /// A build on the machine succeeded: reset its back-off.
    pub fn succeeded(&self, name: &str) {
        let mut st = self.lock();
        let l = st.live.entry(name.to_string()).or_default();
        let was_backed_off = l.backed_off_until.take().is_some();
        l.last_attempt = Some((Instant::now(), None));
        l.failures = 0;
        if was_backed_off {
            self.dispatch(&mut st);
        }
    }
}
