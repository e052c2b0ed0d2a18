//! What the farm tells about its machines: each one's state for `ferry
//! offload status`, why a build passes a candidate over, why no machine of
//! the file can build a derivation.

use std::time::Instant;

use super::scheduler::{self, Needs};
use super::{matches, Farm};

impl Farm {
    /// The candidates for `needs` that cannot take a build now for a
    /// reason other than being busy or measured for the first time, and
    /// why (their last error, or their load or free space): what a build
    /// that skips them says to its client.
    pub fn skipped(&self, needs: &Needs) -> Vec<(String, String)> {
        let st = self.lock();
        let now = Instant::now();
        let states = Self::states(&st.machines, &st.live);
        let mut out = Vec::new();
        for (m, state) in st.machines.iter().zip(&states) {
            if !matches(m, needs) {
                continue;
            }
            // Its machines.scm entry is unusable: never tried, said as is.
            if let Some(e) = m.error_line() {
                out.push((m.name.clone(), format!("not used: {e}")));
                continue;
            }
            let live = st.live.get(&m.name);
            let why = match scheduler::unusable(state, now) {
                None | Some(scheduler::PassedOver::NoFreeSlot { .. }) => continue,
                Some(scheduler::PassedOver::BackedOff) => {
                    let Some(l) = live else { continue };
                    if l.probing && l.info.is_none() {
                        continue;
                    }
                    let error = l.last_error.as_deref().unwrap_or("a recent failure");
                    if l.until_changed.is_some() {
                        format!(
                            "{error}; not used until machines.scm, the ACL or its private key changes"
                        )
                    } else {
                        let secs = l
                            .backed_off_until
                            .map_or(0, |t| t.saturating_duration_since(now).as_secs());
                        format!("{error}; backed off for {secs} s")
                    }
                }
                Some(other) => other.to_string(),
            };
            out.push((m.name.clone(), why));
        }
        out
    }

    /// Why no machine of the file matches `needs`, machine by machine, for
    /// the error of a derivation nothing can build (starts with ":").
    pub fn why_not_candidates(&self, needs: &Needs) -> String {
        let machines = self.machines();
        if let Some((e, _)) = self.load_error().filter(|_| machines.is_empty()) {
            return format!("; there are no build machines: {e}");
        }
        if machines.is_empty() {
            return format!("; {} lists no build machine", self.file.display());
        }
        let mut out = format!("; the machines of {}:", self.file.display());
        for m in &machines {
            let mut why = Vec::new();
            if !m.systems.contains(&needs.system) {
                why.push(format!("builds for {} only", m.systems.join(", ")));
            }
            let lacking = needs.lacking(&m.features);
            if !lacking.is_empty() {
                why.push(format!("lacks feature {}", lacking.join(", ")));
            }
            if let Some(e) = m.error_line() {
                why.push(format!("not used: {e}"));
            }
            if why.is_empty() {
                why.push("matches (but was not usable)".into());
            }
            out.push_str(&format!("\n  {}: {}", m.name, why.join("; ")));
        }
        out
    }

    /// Slots in use per machine (for `offload status`).
    pub fn in_use(&self, name: &str) -> u32 {
        self.lock().live.get(name).map_or(0, |l| l.in_use)
    }

    /// Every machine as this daemon sees it (for `ferry offload status`).
    pub fn status(&self) -> Vec<ferry_protocol::FarmMachine> {
        self.reload_if_changed();
        let st = self.lock();
        let now = Instant::now();
        st.machines
            .iter()
            .map(|m| {
                let live = st.live.get(&m.name).cloned().unwrap_or_default();
                ferry_protocol::FarmMachine {
                    name: m.name.clone(),
                    in_use: live.in_use,
                    until_changed: live.until_changed.is_some(),
                    backed_off_for: live
                        .backed_off_until
                        .filter(|t| *t > now && live.until_changed.is_none())
                        .map(|t| t.duration_since(now).as_secs_f64()),
                    failures: live.failures,
                    last_error: live.last_error,
                    measured_secs_ago: live
                        .info
                        .as_ref()
                        .map(|(at, _)| now.duration_since(*at).as_secs_f64()),
                    info: live.info.map(|(_, i)| i),
                    attempted_secs_ago: live
                        .last_attempt
                        .map(|(at, _)| now.duration_since(at).as_secs_f64()),
                    attempt_error: live.last_attempt.and_then(|(_, k)| k.map(str::to_string)),
                }
            })
            .collect()
    }
}
