//! Reading machines.scm: again whenever its modification time changes, a
//! missing file meaning no machines, a broken one keeping the last good
//! list (and its error told to every build that would offload).

use ferry_scheme::{load_machines_file, EvalContext};

use super::Farm;

impl Farm {
    /// Re-read the machines file when its modification time changed; a
    /// missing file means no machines; a broken one keeps the last good
    /// list, if any (and says why in the log, and to every build that
    /// would offload: [`Farm::load_error`]).
    pub fn reload_if_changed(&self) {
        let mtime = std::fs::metadata(&self.file)
            .and_then(|m| m.modified())
            .ok();
        if mtime == self.lock().loaded_mtime && mtime.is_some() {
            return;
        }
        let loaded = match mtime {
            None => Ok(Vec::new()),
            Some(_) => load_machines_file(&self.file, EvalContext::from_process()).map(|m| {
                for w in &m.warnings {
                    tracing::warn!("{w}");
                }
                for (name, e) in m
                    .machines
                    .iter()
                    .filter_map(|m| Some((&m.name, m.error_line()?)))
                {
                    tracing::warn!("build machine {name} is not used: {e}");
                }
                m.machines
            }),
        };
        let mut st = self.lock();
        st.loaded_mtime = mtime;
        st.load_error = None;
        match loaded {
            Ok(machines) => {
                if mtime.is_some() {
                    tracing::info!(
                        "{}: {} build machine(s)",
                        self.file.display(),
                        machines.len()
                    );
                }
                st.machines = machines;
                // A new machines.scm: those kept out until it changed are
                // tried again.
                for l in st.live.values_mut() {
                    if l.until_changed.take().is_some() {
                        l.backed_off_until = None;
                        l.failures = 0;
                    }
                }
            }
            Err(e) => {
                if st.machines.is_empty() {
                    tracing::error!("no build machines: {e}");
                } else {
                    tracing::warn!(
                        "keeping the previous {} build machine(s): {e}",
                        st.machines.len()
                    );
                }
                st.load_error = Some(e.to_string());
            }
        }
    }

    /// The machines file's current version could not be used: why (its
    /// `FILE:LINE:COL: error: ...`), and how many machines of an earlier
    /// version are kept (0 for a daemon that never loaded it).
    pub fn load_error(&self) -> Option<(String, usize)> {
        self.reload_if_changed();
        let st = self.lock();
        st.load_error.clone().map(|e| (e, st.machines.len()))
    }
}
