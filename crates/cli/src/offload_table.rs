//! The text of `ferry offload status`: a table fitted to a width (the
//! terminal's): optional columns left out when they do not fit, the NOTE
//! (why a machine is not up) beside the row when there is room, else on a
//! line of its own under it, cut with "…" (the full text is in --json).

use std::io;

use ferry_protocol::MachineInfo;

use crate::offload_status::Row;

/// An error kind in words, for the table.
pub(crate) fn kind_words(kind: &str) -> &str {
    match kind {
        "connect" => "unreachable",
        "host-key" => "host key mismatch",
        "authentication" => "key refused",
        "config" => "bad machines.scm entry",
        "protocol" => "protocol error",
        "our-key-refused" => "our signing key not authorized there",
        "their-key-not-trusted" => "its signing key not trusted here",
        "disk-full" => "disk full",
        "misbehaved" => "misbehaved",
        "silent" => "not answering",
        "build-failed" => "build failed there",
        other => other,
    }
}

/// "3 s ago", "4 min ago".
pub(crate) fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=99 => format!("{s} s ago"),
        100..=5999 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// "HH:MM:SS UTC" of seconds since the epoch.
pub(crate) fn clock(unix: u64) -> String {
    let d = unix % 86400;
    format!("{:02}:{:02}:{:02} UTC", d / 3600, d / 60 % 60, d % 60)
}

/// `s` cut to `width` characters, with "…" when cut.
pub(crate) fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

fn free(bytes: u64) -> String {
    if bytes >= 10 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// The text of a row's NOTE column: why it is not up, the back-off.
fn note(r: &Row) -> String {
    // What keeps it out, said first (a cut note keeps it).
    let out = if r.until_changed {
        Some("kept out until machines.scm, the ACL or its key changes".to_string())
    } else {
        r.backed_off_until
            .map(|t| format!("backed off until {}, {} failure(s)", clock(t), r.failures))
    };
    let Some(reason) = &r.reason else {
        return out.unwrap_or_else(|| "-".into());
    };
    // Its first line, without the machine's name (the row has it) or the
    // error's own "it is backed off" (said above, with until when).
    let first = reason.lines().next().unwrap_or("");
    let first = first.trim_end_matches("; it is backed off");
    let first = first
        .strip_prefix(r.machine.name.as_str())
        .map_or(first, |rest| rest.trim_start_matches(':').trim_start());
    let head = match r.kind.as_deref() {
        // sshd answers but no daemon listens on the socket.
        Some("connect") if first.contains("cannot open a channel to the socket") => {
            "daemon not answering"
        }
        Some(k) => kind_words(k),
        None => return first.to_string(),
    };
    match out {
        Some(out) => format!("{head} ({out}): {first}"),
        None => format!("{head}: {first}"),
    }
}

/// The table's lines, fitted to `width` columns when given: optional
/// columns are left out when they do not fit, NOTE goes under its row
/// when it has less than 40 columns beside it, and what is still too
/// long is cut with "…".
pub(crate) fn render(rows: &[Row], width: Option<usize>) -> Vec<String> {
    let up = |r: &Row| matches!(r.state, "up" | "full") && r.info.is_some();
    let info = |r: &Row, f: &dyn Fn(&MachineInfo) -> String| match (&r.info, up(r)) {
        (Some(i), true) => f(i),
        _ => "-".into(),
    };
    let dash = |v: &[String]| {
        if v.is_empty() {
            "-".into()
        } else {
            v.join(",")
        }
    };
    // (header, optional, cells)
    let columns: Vec<(&str, bool, Vec<String>)> = vec![
        (
            "MACHINE",
            false,
            rows.iter().map(|r| r.machine.name.clone()).collect(),
        ),
        (
            "STATE",
            false,
            rows.iter()
                .map(|r| match r.checked_secs_ago {
                    Some(s) => format!("{}, {}", r.state, age(s)),
                    None => r.state.to_string(),
                })
                .collect(),
        ),
        (
            "BUILDS",
            false,
            rows.iter()
                .map(|r| match r.in_use {
                    Some(n) => format!("{n}/{}", r.machine.parallel_builds),
                    None => format!("-/{}", r.machine.parallel_builds),
                })
                .collect(),
        ),
        (
            "LOAD",
            false,
            rows.iter()
                .map(|r| info(r, &|i| format!("{:.2}", i.normalized_load)))
                .collect(),
        ),
        (
            "FREE",
            false,
            rows.iter()
                .map(|r| info(r, &|i| free(i.free_bytes)))
                .collect(),
        ),
        (
            "SYSTEMS",
            true,
            rows.iter().map(|r| dash(&r.machine.systems)).collect(),
        ),
        (
            "FEATURES",
            true,
            rows.iter().map(|r| dash(&r.machine.features)).collect(),
        ),
        (
            "SPEED",
            true,
            rows.iter().map(|r| r.machine.speed.to_string()).collect(),
        ),
        (
            "FERRY",
            true,
            rows.iter()
                .map(|r| info(r, &|i| i.version.clone()))
                .collect(),
        ),
        (
            "KERNEL",
            true,
            rows.iter()
                .map(|r| info(r, &|i| format!("{} {}", i.kernel, i.arch)))
                .collect(),
        ),
        (
            "CLOCK",
            true,
            rows.iter()
                .map(|r| match (r.clock_difference, up(r)) {
                    (Some(c), true) if c.abs() < 0.05 => "0.0 s".into(),
                    (Some(c), true) => format!("{c:+.1} s"),
                    _ => "-".into(),
                })
                .collect(),
        ),
        ("NOTE", false, rows.iter().map(note).collect()),
    ];
    let col_width = |(h, _, cells): &(&str, bool, Vec<String>)| {
        cells
            .iter()
            .map(|c| c.chars().count())
            .fold(h.len(), usize::max)
    };
    let widths: Vec<usize> = columns.iter().map(col_width).collect();
    let last = columns.len() - 1;
    let mut shown = vec![true; columns.len()];
    if let Some(width) = width {
        let mandatory: usize = (0..last)
            .filter(|&i| !columns[i].1)
            .map(|i| widths[i] + 2)
            .sum();
        // NOTE beside the row when 40 columns (or all it needs) are left
        // for it, else under the row.
        let note_room = widths[last].min(40);
        shown[last] = mandatory + note_room <= width;
        let note_room = if shown[last] { note_room } else { 0 };
        let mut used = mandatory;
        // Optional columns by priority, while they fit.
        for name in ["SYSTEMS", "FERRY", "CLOCK", "SPEED", "FEATURES", "KERNEL"] {
            let i = columns.iter().position(|c| c.0 == name).expect("a column");
            shown[i] = used + widths[i] + 2 + note_room <= width;
            if shown[i] {
                used += widths[i] + 2;
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if !shown[i] {
                continue;
            }
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        let out = out.trim_end().to_string();
        match width {
            Some(w) => fit(&out, w),
            None => out,
        }
    };
    let mut out = vec![line(columns.iter().map(|c| c.0).collect())];
    for r in 0..rows.len() {
        out.push(line(columns.iter().map(|c| c.2[r].as_str()).collect()));
        let note = &columns[last].2[r];
        if !shown[last] && note != "-" {
            out.push(fit(&format!("  {note}"), width.unwrap_or(usize::MAX)));
        }
    }
    out
}

/// The width to fit a table printed to standard output: the terminal's,
/// else $COLUMNS, else none (a pipe gets the whole text).
pub(crate) fn width(tty: bool) -> Option<usize> {
    if tty {
        if let Ok(ws) = rustix::termios::tcgetwinsize(io::stdout()) {
            if ws.ws_col > 0 {
                return Some(ws.ws_col.into());
            }
        }
    }
    match std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        Some(c) if c > 0 => Some(c),
        _ if tty => Some(80),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_daemon::offload::OffloadError;

    #[test]
    fn a_long_reason_goes_under_its_row_and_every_line_fits() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("machines.scm");
        std::fs::write(
            &file,
            r#"(list (build-machine (name "builder-with-a-long-name.example.org")
                 (systems (list "x86_64-linux" "i686-linux")) (user "u")
                 (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")))"#,
        )
        .unwrap();
        let m = ferry_scheme::load_machines_file(&file, ferry_scheme::EvalContext::from_process())
            .unwrap()
            .machines
            .remove(0);
        let why = format!(
            "the host key of {} is SHA256:x but machines.scm says SHA256:y; {}",
            m.name,
            "z".repeat(300)
        );
        let row = Row::from_probe(
            &m,
            Err(OffloadError::HostKey {
                machine: m.name.clone(),
                why: why.clone(),
            }),
        );
        assert_eq!(
            (row.state, row.kind.as_deref()),
            ("unusable", Some("host-key"))
        );
        let lines = render(std::slice::from_ref(&row), Some(80));
        for l in &lines {
            assert!(l.chars().count() <= 80, "{l}");
        }
        assert!(lines[1].contains("unusable, 0 s ago"), "{lines:?}");
        assert!(
            lines[2].starts_with("  host key mismatch: the host key of"),
            "{lines:?}"
        );
        assert!(lines[2].ends_with('…'), "{lines:?}");
        // Not fitted (a pipe): the whole reason.
        let lines = render(&[row], None);
        assert!(lines[1].contains(&"z".repeat(300)), "{lines:?}");
    }
}
