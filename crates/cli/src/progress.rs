//! What a build shows while it runs, the same through a daemon and
//! embedded: the build events ([`BuildEvent`]) drawn as live lines on a
//! terminal, or written as plain lines elsewhere.
//!
//! On a terminal (stderr is one, `TERM` is not `dumb`, no `--quiet`), an
//! `indicatif` display: a spinner line per running build (its short name,
//! machine, phase: waiting, sending, building, fetching; elapsed), a bar
//! per copy to or from a build machine (bytes / total, rate, ETA), and log
//! lines printed above them. Anywhere else, plain lines without control
//! characters: one per phase change, what a wait longer than a second
//! waits for (again when that changes, other than its numbers, or after
//! [`PLAIN_WAIT_EVERY`]), and a line per
//! long copy at most every [`PLAIN_TRANSFER_EVERY`]. `--quiet` keeps only
//! the build logs, warnings and errors.
//!
//! Build log lines always carry the derivation's short name (`name> line`,
//! as `nix build -L`; Nix shows the name without its version, Ferry the
//! whole derivation name so that two versions built at once are told
//! apart); so do Ferry's own lines about a derivation (copies, moves). A
//! builder's escape sequences and control characters are removed (colours
//! are kept on a terminal), so a build cannot redraw the screen.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use ferry_protocol::{BuildEvent, BuildPhase, Direction};
use indicatif::ProgressDrawTarget;

mod terminal;
use terminal::Terminal;

/// Plain output: a copy's progress line at most this often.
pub const PLAIN_TRANSFER_EVERY: Duration = Duration::from_secs(3);
/// Plain output: what a derivation waits for, again at most this often.
pub const PLAIN_WAIT_EVERY: Duration = Duration::from_secs(10);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live lines redrawn in place (a terminal).
    Terminal,
    /// One line per change, no control characters.
    Plain,
    /// Build logs, warnings and errors only.
    Quiet,
}

impl Mode {
    /// Terminal when stderr is one (and not `dumb`), unless `quiet`.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal()
            && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
        {
            Mode::Terminal
        } else {
            Mode::Plain
        }
    }
}

/// The derivation's name without store directory, hash and `.drv`:
/// `/gnu/store/<hash>-hello-2.10.drv` is `hello-2.10`.
pub fn short_name(drv: &str) -> &str {
    let base = drv.rsplit('/').next().unwrap_or(drv);
    let base = base.strip_suffix(".drv").unwrap_or(base);
    match base.split_once('-') {
        Some((hash, name)) if hash.len() == 32 && !name.is_empty() => name,
        _ => base,
    }
}

/// [`short_name`], safe to print (a daemon's words are checked too).
fn label(drv: &str) -> String {
    sanitize(short_name(drv), false)
}

/// `line` without control characters and escape sequences (tabs become
/// spaces); with `keep_colours`, SGR sequences (`ESC [ ... m`) stay, and a
/// reset ends the line if any did.
pub fn sanitize(line: &str, keep_colours: bool) -> String {
    let mut out = String::with_capacity(line.len());
    let mut coloured = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final; other escapes: ESC and one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    let mut seq = String::new();
                    let mut fin = None;
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            fin = Some(c);
                            break;
                        }
                        seq.push(c);
                    }
                    let sgr =
                        fin == Some('m') && seq.chars().all(|c| c.is_ascii_digit() || c == ';');
                    if keep_colours && sgr {
                        out.push_str("\x1b[");
                        out.push_str(&seq);
                        out.push('m');
                        coloured = true;
                    }
                } else if chars.peek() == Some(&']') {
                    // OSC (a window title...): up to BEL or ESC \.
                    while let Some(c) = chars.next() {
                        if c == '\x07' || c == '\x1b' && chars.next_if_eq(&'\\').is_some() {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    if coloured {
        out.push_str("\x1b[0m");
    }
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// What a phase is called in a line: `sending inputs to h1`.
fn phase_text(phase: BuildPhase, machine: &str, detail: Option<&str>) -> String {
    let on = |prep: &str| {
        if machine.is_empty() || machine == "localhost" {
            String::new()
        } else {
            format!(" {prep} {machine}")
        }
    };
    match phase {
        BuildPhase::Waiting => format!("waiting {}", detail.unwrap_or(""))
            .trim_end()
            .to_string(),
        BuildPhase::Sending => format!("sending inputs{}", on("to")),
        BuildPhase::Building => format!("building{}", on("on")),
        BuildPhase::Fetching => format!("fetching outputs{}", on("from")),
    }
}

fn started_text(drv: &str, machine: &str) -> String {
    if machine == "localhost" {
        format!("building '{drv}'...")
    } else {
        format!("building '{drv}' on '{machine}'...")
    }
}

/// Shows one build request's events (see the module's doc).
pub struct Progress {
    inner: Inner,
}

enum Inner {
    Plain(Plain<Box<dyn Write + Send>>),
    Terminal(Box<Terminal>),
}

impl Progress {
    /// Progress on stderr, drawn as `mode` says.
    pub fn new(mode: Mode) -> Progress {
        let inner = match mode {
            Mode::Terminal => {
                Inner::Terminal(Box::new(Terminal::new(ProgressDrawTarget::stderr())))
            }
            Mode::Plain | Mode::Quiet => {
                Inner::Plain(Plain::new(Box::new(std::io::stderr()), mode == Mode::Quiet))
            }
        };
        Progress { inner }
    }

    pub fn event(&mut self, ev: BuildEvent) {
        match &mut self.inner {
            Inner::Plain(p) => p.event(ev, Instant::now()),
            Inner::Terminal(t) => t.event(ev),
        }
    }

    /// Clear the live lines (before the results are printed).
    pub fn finish(&mut self) {
        if let Inner::Terminal(t) = &mut self.inner {
            t.finish();
        }
    }
}

/// Plain lines (see the module's doc); `at` is the event's time.
pub struct Plain<W: Write> {
    out: W,
    quiet: bool,
    /// Per derivation: the last phase said, when its copy began and when
    /// its copy or wait was last said.
    drvs: HashMap<String, PlainDrv>,
}

#[derive(Default)]
struct PlainDrv {
    phase: Option<BuildPhase>,
    copy_since: Option<Instant>,
    said: Option<Instant>,
    /// What the last wait said, without its numbers.
    wait_said: String,
}

/// `s` without digits: a wait whose counts and seconds change only says
/// the same.
fn words(s: &str) -> String {
    s.chars().filter(|c| !c.is_ascii_digit()).collect()
}

impl<W: Write> Plain<W> {
    pub fn new(out: W, quiet: bool) -> Plain<W> {
        Plain {
            out,
            quiet,
            drvs: HashMap::new(),
        }
    }

    fn line(&mut self, s: &str) {
        // stderr gone: nothing to tell anyone.
        let _ = writeln!(self.out, "{s}");
    }

    pub fn event(&mut self, ev: BuildEvent, at: Instant) {
        match ev {
            BuildEvent::Started { drv, machine } => {
                let d = self.drvs.entry(drv.clone()).or_default();
                d.phase = (machine == "localhost").then_some(BuildPhase::Building);
                if !self.quiet {
                    self.line(&started_text(&drv, &machine));
                }
            }
            BuildEvent::Log { drv, line } => {
                let l = format!("{}> {}", label(&drv), sanitize(&line, false));
                self.line(&l)
            }
            BuildEvent::Finished { drv, .. } => {
                self.drvs.remove(&drv);
            }
            BuildEvent::Warning { message } => {
                let l = format!("ferry: warning: {}", sanitize(&message, false));
                self.line(&l)
            }
            BuildEvent::KeepAlive => {}
            _ if self.quiet => {}
            BuildEvent::Phase {
                drv,
                machine,
                phase,
                detail,
            } => {
                let d = self.drvs.entry(drv.clone()).or_default();
                let changed = d.phase != Some(phase);
                let wait = words(detail.as_deref().unwrap_or(""));
                let say = changed
                    || phase == BuildPhase::Waiting
                        && (wait != d.wait_said
                            || d.said
                                .is_none_or(|t| at.duration_since(t) >= PLAIN_WAIT_EVERY));
                if phase == BuildPhase::Waiting {
                    d.wait_said = wait;
                }
                d.phase = Some(phase);
                if changed {
                    d.copy_since =
                        matches!(phase, BuildPhase::Sending | BuildPhase::Fetching).then_some(at);
                }
                if say {
                    d.said = Some(at);
                    let text = phase_text(phase, &machine, detail.as_deref());
                    let l = format!("{}: {}", label(&drv), sanitize(&text, false));
                    self.line(&l);
                }
            }
            BuildEvent::Transfer {
                drv,
                machine,
                direction,
                done,
                total,
            } => {
                let d = self.drvs.entry(drv.clone()).or_default();
                let since = *d.copy_since.get_or_insert(at);
                let last = d.said.unwrap_or(since).max(since);
                if at.duration_since(last) < PLAIN_TRANSFER_EVERY {
                    return;
                }
                d.said = Some(at);
                let secs = at.duration_since(since).as_secs_f64().max(1e-3);
                let verb = match direction {
                    Direction::Send => "sending",
                    Direction::Fetch => "fetching",
                };
                let of = if total > 0 {
                    format!("{:.1}/{:.1} MiB", mib(done), mib(total.max(done)))
                } else {
                    format!("{:.1} MiB", mib(done))
                };
                let l = format!(
                    "{}: {verb} {}: {of}, {:.1} MiB/s",
                    sanitize(&machine, false),
                    label(&drv),
                    mib(done) / secs
                );
                self.line(&l);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRV: &str = "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-big-1.0.drv";

    fn run(events: Vec<(u64, BuildEvent)>, quiet: bool) -> String {
        let t0 = Instant::now();
        let mut p = Plain::new(Vec::new(), quiet);
        for (ms, ev) in events {
            p.event(ev, t0 + Duration::from_millis(ms));
        }
        String::from_utf8(p.out).unwrap()
    }

    fn phase(phase: BuildPhase, detail: Option<&str>) -> BuildEvent {
        BuildEvent::Phase {
            drv: DRV.into(),
            machine: if phase == BuildPhase::Waiting {
                ""
            } else {
                "h1"
            }
            .into(),
            phase,
            detail: detail.map(str::to_string),
        }
    }

    fn wait(detail: &str) -> BuildEvent {
        phase(BuildPhase::Waiting, Some(detail))
    }

    fn fetched(done: u64) -> BuildEvent {
        BuildEvent::Transfer {
            drv: DRV.into(),
            machine: "h1".into(),
            direction: Direction::Fetch,
            done: done << 20,
            total: 100 << 20,
        }
    }

    fn log(drv: &str, line: &str) -> BuildEvent {
        BuildEvent::Log {
            drv: drv.into(),
            line: line.into(),
        }
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name(DRV), "big-1.0");
        assert_eq!(
            short_name("/s/0123456789abcdfghijklmnpqrsvwxyz-a-b.drv"),
            "a-b"
        );
        assert_eq!(short_name("odd"), "odd");
    }

    #[test]
    fn plain_output_has_phases_copies_prefixes_and_no_control_characters() {
        let other = "/gnu/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-small.drv";
        let mut evs = vec![
            (
                0,
                phase(
                    BuildPhase::Waiting,
                    Some("for a build machine: h1 busy 1/1"),
                ),
            ),
            (
                1000,
                phase(
                    BuildPhase::Waiting,
                    Some("for a build machine: h1 busy 1/1"),
                ),
            ),
            (1100, wait("for a build machine: h1 backed off 9 s")),
            (1200, wait("for a build machine: h1 backed off 8 s")),
            (
                2000,
                BuildEvent::Started {
                    drv: DRV.into(),
                    machine: "h1".into(),
                },
            ),
            (2000, phase(BuildPhase::Building, None)),
            (2100, log(DRV, "\x1b[31mred\x1b[0m\tand\rback\x07")),
            (2100, log(other, "hello from the other")),
            (3000, phase(BuildPhase::Fetching, None)),
        ];
        // 10 s of fetching, 5 reports a second.
        for i in 1..=50u64 {
            evs.push((3000 + i * 200, fetched(i * 2)));
        }
        evs.push((
            13_500,
            BuildEvent::Finished {
                drv: DRV.into(),
                ok: true,
            },
        ));
        let out = run(evs, false);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[..7],
            [
                "big-1.0: waiting for a build machine: h1 busy 1/1",
                "big-1.0: waiting for a build machine: h1 backed off 9 s",
                &format!("building '{DRV}' on 'h1'..."),
                "big-1.0: building on h1",
                "big-1.0> red    andback",
                "small> hello from the other",
                "big-1.0: fetching outputs from h1",
            ],
            "{out}"
        );
        let copies: Vec<&&str> = lines[7..].iter().collect();
        // One line per 3 s of a 10 s copy.
        assert_eq!(copies.len(), 3, "{out}");
        assert_eq!(
            copies[0],
            &"h1: fetching big-1.0: 30.0/100.0 MiB, 10.0 MiB/s"
        );
    }

    #[test]
    fn quiet_keeps_logs_and_warnings_only() {
        let out = run(
            vec![
                (
                    0,
                    BuildEvent::Started {
                        drv: DRV.into(),
                        machine: "localhost".into(),
                    },
                ),
                (0, phase(BuildPhase::Sending, None)),
                (5000, fetched(5)),
                (0, log(DRV, "line")),
                (
                    0,
                    BuildEvent::Warning {
                        message: "w".into(),
                    },
                ),
            ],
            true,
        );
        assert_eq!(out, "big-1.0> line\nferry: warning: w\n");
    }

    #[test]
    fn colours_stay_on_a_terminal_other_sequences_never() {
        assert_eq!(
            sanitize("\x1b[1;31mred\x1b[2J\x1b]0;title\x07x", true),
            "\x1b[1;31mredx\x1b[0m"
        );
        assert_eq!(sanitize("\x1b[1;31mred", false), "red");
    }
}
