//! `ferry offload status --watch N` on a terminal: the table redrawn in
//! place on the alternate screen (cursor home, each line cleared, the rest
//! of the screen cleared), with the time of the data, fitted to the
//! terminal's width and height; a machines.scm that fails to load is shown
//! above the last good list; `q` or Ctrl-C (a key read in non-canonical
//! mode, or SIGINT, SIGTERM, SIGHUP) ends it and restores the terminal.

use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use ferry_scheme::BuildMachine;
use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};

use crate::offload_status::{load, Ctx, Frame};
use crate::offload_table::{clock, fit, render, width};

/// The terminal while watching: alternate screen, cursor hidden, keys
/// unbuffered and unechoed; all restored when dropped.
struct Screen {
    saved: Option<Termios>,
}

impl Screen {
    fn enter() -> io::Result<Screen> {
        let stdin = io::stdin();
        let saved = if stdin.is_terminal() {
            let saved = termios::tcgetattr(&stdin)?;
            let mut raw = saved.clone();
            // Ctrl-C arrives as a key (ISIG off): the screen is restored
            // by the loop, not left to a signal.
            raw.local_modes
                .remove(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG);
            raw.special_codes[SpecialCodeIndex::VMIN] = 1;
            raw.special_codes[SpecialCodeIndex::VTIME] = 0;
            termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
            Some(saved)
        } else {
            None
        };
        let mut out = io::stdout().lock();
        out.write_all(b"\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J")?;
        out.flush()?;
        Ok(Screen { saved })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, saved);
        }
    }
}

/// Draw `lines` from the top left, each cleared to its end, the rest of
/// the screen cleared.
fn draw(lines: &[String]) -> io::Result<()> {
    let mut frame = String::from("\x1b[H");
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            frame.push('\n');
        }
        frame.push_str(l);
        frame.push_str("\x1b[K");
    }
    frame.push_str("\x1b[J");
    let mut out = io::stdout().lock();
    out.write_all(frame.as_bytes())?;
    out.flush()
}

fn rows() -> usize {
    termios::tcgetwinsize(io::stdout())
        .ok()
        .map(|w| usize::from(w.ws_row))
        .filter(|r| *r > 0)
        .unwrap_or(24)
}

/// What the loop waits for.
enum Event {
    Quit,
    /// A new gathering, and the machines file's error if it failed to load.
    Frame(Frame, Option<String>),
}

/// Watch until `q`, Ctrl-C or a signal. The gathering runs on its own
/// thread (a direct probe may take seconds): a key is answered at once.
pub fn watch(
    ctx: Ctx,
    file: &Path,
    regex: &Option<String>,
    every: Duration,
) -> anyhow::Result<ExitCode> {
    let ctx = Arc::new(ctx);
    // At most one frame waits to be drawn (the gatherer then waits).
    let (tx, events) = mpsc::sync_channel::<Event>(1);
    // Signals: handled (not fatal) from here on.
    {
        let quit = tx.clone();
        let _guard = ctx.rt.enter();
        let mut signals = Vec::new();
        for kind in [
            tokio::signal::unix::SignalKind::interrupt(),
            tokio::signal::unix::SignalKind::terminate(),
            tokio::signal::unix::SignalKind::hangup(),
        ] {
            signals.push(tokio::signal::unix::signal(kind)?);
        }
        ctx.rt.spawn(async move {
            let mut any = futures_any(signals);
            any.recv().await;
            // The channel may hold a frame being drawn: until it has room.
            while let Err(mpsc::TrySendError::Full(_)) = quit.try_send(Event::Quit) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let screen = Screen::enter()?;
    if screen.saved.is_some() {
        let quit = tx.clone();
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            let mut stdin = io::stdin();
            // q, Q, Ctrl-C, Ctrl-D, or the end of input.
            while let Ok(1) = stdin.read(&mut byte) {
                if matches!(byte[0], b'q' | b'Q' | 3 | 4) {
                    break;
                }
            }
            let _ = quit.send(Event::Quit);
        });
    }
    {
        let (ctx, file, regex) = (ctx.clone(), file.to_path_buf(), regex.clone());
        std::thread::spawn(move || {
            let mut last_good: Vec<BuildMachine> = Vec::new();
            loop {
                let file_error = match load(&file, &regex) {
                    Ok((machines, _)) => {
                        last_good = machines;
                        None
                    }
                    Err(e) => Some(e),
                };
                let frame = ctx.gather(&last_good);
                if tx.send(Event::Frame(frame, file_error)).is_err() {
                    break;
                }
                std::thread::sleep(every);
            }
        });
    }
    while let Ok(Event::Frame(frame, file_error)) = events.recv() {
        draw(&lines(&frame, file_error, file, every))?;
    }
    drop(screen);
    Ok(ExitCode::SUCCESS)
}

/// The screen's lines for `frame`, fitted to the terminal.
fn lines(frame: &Frame, file_error: Option<String>, file: &Path, every: Duration) -> Vec<String> {
    let width = width(true).unwrap_or(80);
    let at = frame
        .at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut lines = vec![fit(
        &format!(
            "ferry offload status — {}, every {} s, q to quit",
            clock(at),
            every.as_secs()
        ),
        width,
    )];
    if let Some(e) = file_error {
        let e = e.replace('\n', " ");
        lines.push(fit(&format!("{}: {e}", file.display()), width));
        lines.push(fit("(showing the last good list of machines)", width));
    }
    if let Some(e) = &frame.daemon_error {
        lines.push(fit(e, width));
    }
    lines.push(String::new());
    lines.extend(render(&frame.rows, Some(width)));
    let height = rows();
    if lines.len() > height {
        let more = lines.len() - (height - 1);
        lines.truncate(height - 1);
        lines.push(fit(
            &format!("… {more} more line(s): a taller terminal, or --json"),
            width,
        ));
    }
    lines
}

/// A receiver that yields once any of `signals` arrives.
fn futures_any(signals: Vec<tokio::signal::unix::Signal>) -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    for mut s in signals {
        let tx = tx.clone();
        tokio::spawn(async move {
            s.recv().await;
            let _ = tx.try_send(());
        });
    }
    rx
}
