//! The live display of a build's progress on a terminal (see the parent
//! module): an `indicatif` spinner line per running build, a bar per copy
//! to or from a build machine under it, log lines printed above them.

use std::collections::HashMap;
use std::time::Duration;

use ferry_protocol::{BuildEvent, BuildPhase, Direction};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{label, phase_text, sanitize, started_text};

/// The live display on a terminal.
pub(super) struct Terminal {
    multi: MultiProgress,
    /// Per derivation: its spinner line and its copy's bar, if any.
    lines: HashMap<String, TermDrv>,
    spinner: ProgressStyle,
    bar: ProgressStyle,
}

struct TermDrv {
    line: ProgressBar,
    machine: String,
    copy: Option<(Direction, ProgressBar)>,
}

impl Terminal {
    pub(super) fn new(target: ProgressDrawTarget) -> Terminal {
        let spinner =
            ProgressStyle::with_template("{spinner:.green} {prefix:.bold} {wide_msg} {elapsed:>4}")
                .expect("a valid template")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
        let bar = ProgressStyle::with_template(
            "    {prefix} [{bar:24.cyan/blue}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        Terminal {
            multi: MultiProgress::with_draw_target(target),
            lines: HashMap::new(),
            spinner,
            bar,
        }
    }

    fn println(&self, s: &str) {
        let _ = self.multi.println(s);
    }

    /// The line of `drv`, made when first needed.
    fn line(&mut self, drv: &str) -> &mut TermDrv {
        if !self.lines.contains_key(drv) {
            let line = self.multi.add(ProgressBar::new_spinner());
            line.set_style(self.spinner.clone());
            line.set_prefix(label(drv));
            line.enable_steady_tick(Duration::from_millis(120));
            self.lines.insert(
                drv.to_string(),
                TermDrv {
                    line,
                    machine: String::new(),
                    copy: None,
                },
            );
        }
        self.lines.get_mut(drv).expect("just made")
    }

    pub(super) fn event(&mut self, ev: BuildEvent) {
        match ev {
            BuildEvent::Started { drv, machine } => {
                self.println(&started_text(&drv, &machine));
                let l = self.line(&drv);
                l.machine = machine.clone();
                l.line.set_message(if machine == "localhost" {
                    "building".to_string()
                } else {
                    format!("starting on {machine}")
                });
            }
            BuildEvent::Log { drv, line } => {
                let l = format!("\x1b[2m{}>\x1b[0m {}", label(&drv), sanitize(&line, true));
                self.println(&l);
            }
            BuildEvent::Finished { drv, .. } => {
                if let Some(l) = self.lines.remove(&drv) {
                    if let Some((_, b)) = l.copy {
                        b.finish_and_clear();
                        self.multi.remove(&b);
                    }
                    l.line.finish_and_clear();
                    self.multi.remove(&l.line);
                }
            }
            BuildEvent::Warning { message } => {
                self.println(&format!("ferry: warning: {}", sanitize(&message, false)))
            }
            BuildEvent::KeepAlive => {}
            BuildEvent::Phase {
                drv,
                machine,
                phase,
                detail,
            } => {
                let multi = self.multi.clone();
                let l = self.line(&drv);
                if !machine.is_empty() {
                    l.machine = machine.clone();
                }
                let text = phase_text(phase, &machine, detail.as_deref());
                l.line.set_message(sanitize(&text, false));
                if !matches!(phase, BuildPhase::Sending | BuildPhase::Fetching) {
                    if let Some((_, b)) = l.copy.take() {
                        b.finish_and_clear();
                        multi.remove(&b);
                    }
                }
            }
            BuildEvent::Transfer {
                drv,
                machine,
                direction,
                done,
                total,
            } => {
                let multi = self.multi.clone();
                let style = self.bar.clone();
                let l = self.line(&drv);
                if l.copy.as_ref().is_none_or(|(d, _)| *d != direction) {
                    if let Some((_, b)) = l.copy.take() {
                        b.finish_and_clear();
                        multi.remove(&b);
                    }
                    let b = multi.insert_after(&l.line, ProgressBar::new(total));
                    b.set_style(style);
                    let machine = sanitize(&machine, false);
                    b.set_prefix(match direction {
                        Direction::Send => format!("to {machine}"),
                        Direction::Fetch => format!("from {machine}"),
                    });
                    l.copy = Some((direction, b));
                }
                let (_, b) = l.copy.as_ref().expect("just made");
                b.set_length(total.max(done));
                b.set_position(done);
            }
        }
    }

    pub(super) fn finish(&mut self) {
        for (_, l) in self.lines.drain() {
            if let Some((_, b)) = l.copy {
                b.finish_and_clear();
            }
            l.line.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.finish();
    }
}
