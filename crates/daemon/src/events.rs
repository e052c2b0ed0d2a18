//! A build's progress on its way from the engine to one client, bounded.
//!
//! Builders never wait for a client: [`Events::send`] does not block. Log
//! lines queue up to [`MAX_QUEUED_LOG_BYTES`] (and [`MAX_QUEUED_LOGS`]
//! lines); past that, a line for a client that reads too slowly is dropped
//! (it is still in the build's log file) and counted, and once a later
//! event of that derivation fits, a line "N log lines dropped" goes first.
//! `Started`, `Finished` and warnings are never dropped: there are a few
//! per derivation of the plan, which is in memory anyway. Warnings about
//! the farm (a machine skipped, machines.scm broken, a fallback to a local
//! build) go through [`Events::warn_once`]: said once per subject (a
//! machine, the file) to the client of one build request, however many of
//! its derivations meet the same problem. Progress events (`Phase`,
//! `Transfer`: rate-limited where they are made) are dropped without a
//! word once [`MAX_QUEUED_PROGRESS`] wait or the log lines' bound is
//! reached: the next one says the same, newer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_protocol::BuildEvent;
use tokio::sync::Notify;

/// Bytes of log lines waiting for one client, at most.
pub const MAX_QUEUED_LOG_BYTES: usize = 1 << 20;
/// Log lines waiting for one client, at most.
pub const MAX_QUEUED_LOGS: usize = 4096;
/// Subjects of [`Events::warn_once`] remembered per channel, at most (one
/// per build machine and a few more): past that, new ones are not said.
pub const MAX_WARNED_SUBJECTS: usize = 1024;
/// Progress events waiting for one client, at most.
pub const MAX_QUEUED_PROGRESS: usize = 256;

#[derive(Default)]
struct State {
    queue: VecDeque<BuildEvent>,
    log_bytes: usize,
    logs: usize,
    progress: usize,
    /// Lines dropped per derivation, not yet reported.
    dropped: BTreeMap<String, u64>,
    senders: usize,
    receiver_gone: bool,
    /// What [`Events::warn_once`] already said.
    warned: std::collections::BTreeSet<String>,
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where progress is sent; a client gone is not an error. Cloned per task.
pub struct Events {
    shared: Arc<Shared>,
}

/// The receiving end, read by the session (or the CLI in embedded mode).
pub struct EventReceiver {
    shared: Arc<Shared>,
}

/// A new channel.
pub fn channel() -> (Events, EventReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            senders: 1,
            ..State::default()
        }),
        notify: Notify::new(),
    });
    (
        Events {
            shared: shared.clone(),
        },
        EventReceiver { shared },
    )
}

fn cost(drv: &str, line: &str) -> usize {
    drv.len() + line.len() + 64
}

fn drv_of(ev: &BuildEvent) -> Option<&str> {
    match ev {
        BuildEvent::Started { drv, .. }
        | BuildEvent::Log { drv, .. }
        | BuildEvent::Finished { drv, .. } => Some(drv),
        BuildEvent::Warning { .. }
        | BuildEvent::KeepAlive
        | BuildEvent::Phase { .. }
        | BuildEvent::Transfer { .. } => None,
    }
}

impl State {
    fn push(&mut self, ev: BuildEvent) {
        if let BuildEvent::Log { drv, line } = &ev {
            self.log_bytes += cost(drv, line);
            self.logs += 1;
        }
        if ev.is_progress() {
            self.progress += 1;
        }
        self.queue.push_back(ev);
    }

    /// Report the lines of `drv` dropped so far, before its next event.
    fn report_dropped(&mut self, drv: &str) {
        if let Some(n) = self.dropped.remove(drv) {
            self.push(BuildEvent::Log {
                drv: drv.to_string(),
                line: format!(
                    "ferry: {n} log line(s) of {drv} dropped here because this client read too slowly; the whole log: ferry log {drv}"
                ),
            });
        }
    }
}

impl Events {
    /// Queue `ev` for the client; never blocks (see the module's doc).
    /// False when it was dropped or nobody listens.
    pub fn send(&self, ev: BuildEvent) -> bool {
        let mut st = self.shared.lock();
        if st.receiver_gone {
            return false;
        }
        if let BuildEvent::Log { drv, line } = &ev {
            if st.log_bytes + cost(drv, line) > MAX_QUEUED_LOG_BYTES || st.logs >= MAX_QUEUED_LOGS {
                *st.dropped.entry(drv.clone()).or_default() += 1;
                return false;
            }
        }
        if ev.is_progress()
            && (st.progress >= MAX_QUEUED_PROGRESS
                || st.logs >= MAX_QUEUED_LOGS
                || st.log_bytes + 256 > MAX_QUEUED_LOG_BYTES)
        {
            return false;
        }
        if let Some(drv) = drv_of(&ev) {
            if st.dropped.contains_key(drv) {
                let drv = drv.to_string();
                st.report_dropped(&drv);
            }
        }
        st.push(ev);
        drop(st);
        self.shared.notify.notify_one();
        true
    }

    /// Send `message` as a warning unless one about `subject` (a machine's
    /// name, the machines file) was already sent on this channel: the
    /// client of a build hears of a problem once, not per derivation.
    /// False when not sent.
    pub fn warn_once(&self, subject: &str, message: impl FnOnce() -> String) -> bool {
        {
            let mut st = self.shared.lock();
            if st.receiver_gone
                || st.warned.contains(subject)
                || st.warned.len() >= MAX_WARNED_SUBJECTS
            {
                return false;
            }
            st.warned.insert(subject.to_string());
        }
        self.send(BuildEvent::Warning { message: message() })
    }

    /// Was a warning about `subject` sent on this channel?
    pub fn warned(&self, subject: &str) -> bool {
        self.shared.lock().warned.contains(subject)
    }
}

impl Events {
    /// Await `fut`; when it takes longer than a second, tell the client
    /// that `drv` waits (on this machine) and for what (`what()`).
    pub async fn waiting<F: std::future::Future>(
        &self,
        drv: &str,
        what: impl FnOnce() -> String,
        fut: F,
    ) -> F::Output {
        tokio::pin!(fut);
        match tokio::time::timeout(std::time::Duration::from_secs(1), &mut fut).await {
            Ok(out) => out,
            Err(_) => {
                self.send(BuildEvent::Phase {
                    drv: drv.to_string(),
                    machine: "localhost".into(),
                    phase: ferry_protocol::BuildPhase::Waiting,
                    detail: Some(what()),
                });
                fut.await
            }
        }
    }
}

impl Clone for Events {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Events {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.senders -= 1;
        if st.senders == 0 {
            // Whatever was dropped and never reported is said at the end.
            let drvs: Vec<String> = st.dropped.keys().cloned().collect();
            for d in drvs {
                st.report_dropped(&d);
            }
            drop(st);
            self.shared.notify.notify_one();
        }
    }
}

impl EventReceiver {
    fn pop(st: &mut State) -> Option<BuildEvent> {
        let ev = st.queue.pop_front()?;
        if let BuildEvent::Log { drv, line } = &ev {
            st.log_bytes -= cost(drv, line);
            st.logs -= 1;
        }
        if ev.is_progress() {
            st.progress -= 1;
        }
        Some(ev)
    }

    /// The next event; `None` once every sender is gone and all is read.
    pub async fn recv(&mut self) -> Option<BuildEvent> {
        loop {
            let notified = self.shared.notify.notified();
            {
                let mut st = self.shared.lock();
                if let Some(ev) = Self::pop(&mut st) {
                    return Some(ev);
                }
                if st.senders == 0 {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<BuildEvent> {
        Self::pop(&mut self.shared.lock())
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.receiver_gone = true;
        st.queue.clear();
        st.dropped.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(drv: &str, line: &str) -> BuildEvent {
        BuildEvent::Log {
            drv: drv.into(),
            line: line.into(),
        }
    }

    #[tokio::test]
    async fn a_slow_reader_loses_log_lines_but_never_start_or_finish() {
        let (tx, mut rx) = channel();
        tx.send(BuildEvent::Started {
            drv: "a".into(),
            machine: "localhost".into(),
        });
        let line = "x".repeat(1000);
        for _ in 0..10_000 {
            tx.send(log("a", &line));
        }
        {
            let st = tx.shared.lock();
            assert!(st.log_bytes <= MAX_QUEUED_LOG_BYTES, "{}", st.log_bytes);
        }
        tx.send(BuildEvent::Finished {
            drv: "a".into(),
            ok: true,
        });
        drop(tx);
        let mut lines = 0;
        let mut notice = None;
        let mut last = None;
        while let Some(ev) = rx.recv().await {
            match &ev {
                BuildEvent::Log { line: l, .. } if l.starts_with("ferry: ") => {
                    notice = Some(l.clone())
                }
                BuildEvent::Log { .. } => lines += 1,
                _ => {}
            }
            last = Some(ev);
        }
        let notice = notice.expect("a notice of the dropped lines");
        let dropped: u64 = notice[7..].split(' ').next().unwrap().parse().unwrap();
        assert_eq!(lines + dropped, 10_000, "{notice}");
        assert!(lines > 0 && dropped > 0);
        assert!(matches!(last, Some(BuildEvent::Finished { ok: true, .. })));
    }

    #[tokio::test]
    async fn the_notice_comes_once_the_reader_catches_up() {
        let (tx, mut rx) = channel();
        for _ in 0..MAX_QUEUED_LOGS + 5 {
            tx.send(log("a", "l"));
        }
        while rx.try_recv().is_some() {}
        tx.send(log("a", "after"));
        match rx.try_recv() {
            Some(BuildEvent::Log { line, .. }) => {
                assert!(line.starts_with("ferry: 5 log line(s)"), "{line}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.try_recv(), Some(log("a", "after")));
        // A receiver gone: sending is a no-op.
        drop(rx);
        tx.send(log("a", "nobody"));
    }

    #[tokio::test]
    async fn a_warning_about_one_subject_is_said_once_per_channel() {
        let (tx, mut rx) = channel();
        let other = tx.clone();
        assert!(tx.warn_once("m1", || "m1 skipped".into()));
        assert!(!other.warn_once("m1", || "m1 skipped again".into()));
        assert!(other.warn_once("m2", || "m2 skipped".into()));
        assert!(tx.warned("m1") && !tx.warned("m3"));
        drop((tx, other));
        let mut said = Vec::new();
        while let Some(ev) = rx.recv().await {
            said.push(ev);
        }
        assert_eq!(
            said,
            vec![
                BuildEvent::Warning {
                    message: "m1 skipped".into()
                },
                BuildEvent::Warning {
                    message: "m2 skipped".into()
                }
            ]
        );
        // Another request (another channel) hears it again.
        let (tx, _rx) = channel();
        assert!(tx.warn_once("m1", || "m1 skipped".into()));
    }

    #[tokio::test]
    async fn progress_is_bounded_and_dropped_quietly() {
        let (tx, mut rx) = channel();
        let transfer = |done| BuildEvent::Transfer {
            drv: "a".into(),
            machine: "h1".into(),
            direction: ferry_protocol::Direction::Fetch,
            done,
            total: 100,
        };
        for i in 0..MAX_QUEUED_PROGRESS as u64 + 10 {
            tx.send(transfer(i));
        }
        assert!(!tx.send(transfer(1000)));
        // Finishing is never dropped, and no notice is made of progress.
        assert!(tx.send(BuildEvent::Finished {
            drv: "a".into(),
            ok: true,
        }));
        let mut n = 0;
        while let Some(ev) = rx.try_recv() {
            if ev.is_progress() {
                n += 1;
            } else {
                assert!(matches!(ev, BuildEvent::Finished { .. }), "{ev:?}");
            }
        }
        assert_eq!(n, MAX_QUEUED_PROGRESS);
        // Room again once read.
        assert!(tx.send(transfer(7)));
    }
}
