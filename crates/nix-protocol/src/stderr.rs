//! The stderr stream: what a daemon sends between a request and its reply
//! (log lines, activities and their results, requests for data, data for
//! the client) and how it ends (`STDERR_LAST`, or `STDERR_ERROR` with Nix's
//! serialised `Error`). Written by a server (`TunnelLogger` in daemon.cc),
//! read by a client (`processStderr` in remote-store.cc).

use tokio::io::AsyncRead;

use crate::wire::{NixRead, NixWrite};
use crate::{minor, Error, Result};

pub const STDERR_NEXT: u64 = 0x6f6c_6d67;
pub const STDERR_READ: u64 = 0x6461_7461;
pub const STDERR_WRITE: u64 = 0x6461_7416;
pub const STDERR_LAST: u64 = 0x616c_7473;
pub const STDERR_ERROR: u64 = 0x6378_7470;
pub const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
pub const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
pub const STDERR_RESULT: u64 = 0x5253_4c54;

/// Nix's `Verbosity` (`lvlError` = 0 .. `lvlVomit` = 7).
pub mod verbosity {
    pub const ERROR: u64 = 0;
    pub const WARN: u64 = 1;
    pub const NOTICE: u64 = 2;
    pub const INFO: u64 = 3;
    pub const TALKATIVE: u64 = 4;
    pub const CHATTY: u64 = 5;
    pub const DEBUG: u64 = 6;
    pub const VOMIT: u64 = 7;
}

/// Nix's `ActivityType` (logging.hh).
pub mod activity {
    pub const UNKNOWN: u64 = 0;
    pub const COPY_PATH: u64 = 100;
    pub const FILE_TRANSFER: u64 = 101;
    pub const REALISE: u64 = 102;
    pub const COPY_PATHS: u64 = 103;
    pub const BUILDS: u64 = 104;
    pub const BUILD: u64 = 105;
    pub const OPTIMISE_STORE: u64 = 106;
    pub const VERIFY_PATHS: u64 = 107;
    pub const SUBSTITUTE: u64 = 108;
    pub const QUERY_PATH_INFO: u64 = 109;
    pub const POST_BUILD_HOOK: u64 = 110;
    pub const BUILD_WAITING: u64 = 111;
}

/// Nix's `ResultType` (logging.hh).
pub mod result_type {
    pub const FILE_LINKED: u64 = 100;
    pub const BUILD_LOG_LINE: u64 = 101;
    pub const UNTRUSTED_PATH: u64 = 102;
    pub const CORRUPTED_PATH: u64 = 103;
    pub const SET_PHASE: u64 = 104;
    pub const PROGRESS: u64 = 105;
    pub const SET_EXPECTED: u64 = 106;
    pub const POST_BUILD_LOG_LINE: u64 = 107;
}

/// An argument of a Nix error message as Nix 2.8's `hintfmt` shows it:
/// in bold magenta (`ANSI_MAGENTA ... ANSI_NORMAL`), escapes that travel
/// in the message itself (Nix clients filter them when not on a terminal).
pub fn hint_arg(arg: impl std::fmt::Display) -> String {
    format!("\x1b[35;1m{arg}\x1b[0m")
}

/// One field of an activity or result (`Logger::Field`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Int(u64),
    String(String),
}

/// Nix's `Error` as the protocol carries it: since 1.26 its level, message
/// and traces (positions are always absent); before, its message and exit
/// status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixError {
    pub level: u64,
    pub msg: String,
    pub traces: Vec<String>,
    /// Only carried for clients older than 1.26.
    pub exit_status: u64,
}

impl NixError {
    /// An error as `throw Error(msg)` makes it: level error, status 1.
    pub fn new(msg: impl Into<String>) -> Self {
        NixError {
            level: verbosity::ERROR,
            msg: msg.into(),
            traces: Vec::new(),
            exit_status: 1,
        }
    }
}

/// Text without ANSI escape sequences (`ESC [ ... letter`), as Nix's
/// `filterANSIEscapes` shows messages when not on a terminal.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl NixError {
    /// The message without Nix's highlighting, for logs and terminals
    /// that are not Nix's.
    pub fn plain_msg(&self) -> String {
        strip_ansi(&self.msg)
    }
}

impl std::fmt::Display for NixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// One message of the stderr stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StderrMsg {
    /// A log line (Nix appends the newline).
    Next(String),
    /// The daemon wants up to this many bytes of the client's source.
    Read(u64),
    /// Data for the client's sink.
    Write(Vec<u8>),
    /// The end: the reply follows.
    Last,
    /// The request failed; no reply follows.
    Error(NixError),
    StartActivity {
        id: u64,
        level: u64,
        kind: u64,
        text: String,
        fields: Vec<Field>,
        parent: u64,
    },
    StopActivity(u64),
    Result {
        id: u64,
        kind: u64,
        fields: Vec<Field>,
    },
}

fn write_fields<W>(w: &mut NixWrite<W>, fields: &[Field]) {
    w.u64(fields.len() as u64);
    for f in fields {
        match f {
            Field::Int(i) => w.u64(0).u64(*i),
            Field::String(s) => w.u64(1).bytes(s),
        };
    }
}

async fn read_fields<R: AsyncRead + Unpin>(r: &mut NixRead<R>) -> Result<Vec<Field>> {
    let n = r.count("activity fields").await?;
    let mut v = Vec::new();
    for _ in 0..n {
        match r.u64().await? {
            0 => v.push(Field::Int(r.u64().await?)),
            1 => v.push(Field::String(text(r).await?)),
            t => {
                return Err(Error::protocol(format!(
                    "got unsupported field type {t:x} from Nix daemon"
                )))
            }
        }
    }
    Ok(v)
}

fn lossy(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Text for people (log lines, messages, activity fields): any length on
/// the wire, kept up to [`crate::Limits::string`] bytes and marked when cut,
/// so a long build log line does not end the conversation.
async fn text<R: AsyncRead + Unpin>(r: &mut NixRead<R>) -> Result<String> {
    let (b, cut) = r.bytes_truncated(r.limits.string).await?;
    let mut s = lossy(b);
    if cut {
        s.push_str(" [truncated]");
    }
    Ok(s)
}

/// Write `Error` as `operator << (Sink &, const Error &)` does for
/// protocol minor >= 26, else as `ex->what() << ex->status`.
pub fn write_error<W>(w: &mut NixWrite<W>, e: &NixError, client_version: u64) {
    if minor(client_version) >= 26 {
        w.bytes("Error")
            .u64(e.level)
            .bytes("Error")
            .bytes(&e.msg)
            .u64(0)
            .u64(e.traces.len() as u64);
        for t in &e.traces {
            w.u64(0).bytes(t);
        }
    } else {
        w.bytes(&e.msg).u64(e.exit_status);
    }
}

/// Read an error as `readError` does (minor >= 26) or the old pair.
pub async fn read_error<R: AsyncRead + Unpin>(
    r: &mut NixRead<R>,
    daemon_version: u64,
) -> Result<NixError> {
    if minor(daemon_version) < 26 {
        let msg = text(r).await?;
        let exit_status = r.u64().await?;
        return Ok(NixError {
            level: verbosity::ERROR,
            msg,
            traces: Vec::new(),
            exit_status,
        });
    }
    let ty = r.bytes().await?;
    if ty != b"Error" {
        return Err(Error::protocol(format!(
            "error of type {:?}, expected \"Error\"",
            String::from_utf8_lossy(&ty)
        )));
    }
    let level = r.u64().await?;
    let _name = r.bytes().await?;
    let msg = text(r).await?;
    if r.u64().await? != 0 {
        return Err(Error::protocol("error with a position"));
    }
    let n = r.count("error traces").await?;
    let mut traces = Vec::new();
    for _ in 0..n {
        if r.u64().await? != 0 {
            return Err(Error::protocol("error trace with a position"));
        }
        traces.push(text(r).await?);
    }
    Ok(NixError {
        level,
        msg,
        traces,
        exit_status: 1,
    })
}

impl StderrMsg {
    /// Encode as the daemon does for a client of `client_version`.
    /// Activities and results go only to clients of 1.20 or later (older
    /// ones get an activity's text as a log line, as `TunnelLogger` does);
    /// returns false when nothing was written.
    pub fn write<W>(&self, w: &mut NixWrite<W>, client_version: u64) -> bool {
        let activities = minor(client_version) >= 20;
        match self {
            StderrMsg::Next(s) => {
                w.u64(STDERR_NEXT).bytes(s);
            }
            StderrMsg::Read(n) => {
                w.u64(STDERR_READ).u64(*n);
            }
            StderrMsg::Write(d) => {
                w.u64(STDERR_WRITE).bytes(d);
            }
            StderrMsg::Last => {
                w.u64(STDERR_LAST);
            }
            StderrMsg::Error(e) => {
                w.u64(STDERR_ERROR);
                write_error(w, e, client_version);
            }
            StderrMsg::StartActivity {
                id,
                level,
                kind,
                text,
                fields,
                parent,
            } => {
                if !activities {
                    if text.is_empty() {
                        return false;
                    }
                    w.u64(STDERR_NEXT).bytes(format!("{text}...\n"));
                    return true;
                }
                w.u64(STDERR_START_ACTIVITY)
                    .u64(*id)
                    .u64(*level)
                    .u64(*kind)
                    .bytes(text);
                write_fields(w, fields);
                w.u64(*parent);
            }
            StderrMsg::StopActivity(id) => {
                if !activities {
                    return false;
                }
                w.u64(STDERR_STOP_ACTIVITY).u64(*id);
            }
            StderrMsg::Result { id, kind, fields } => {
                if !activities {
                    return false;
                }
                w.u64(STDERR_RESULT).u64(*id).u64(*kind);
                write_fields(w, fields);
            }
        }
        true
    }

    /// Read one message as a client of a daemon of `daemon_version`.
    pub async fn read<R: AsyncRead + Unpin>(
        r: &mut NixRead<R>,
        daemon_version: u64,
    ) -> Result<StderrMsg> {
        r.reset_budget();
        let tag = r.u64().await?;
        Ok(match tag {
            STDERR_NEXT => StderrMsg::Next(text(r).await?),
            STDERR_READ => StderrMsg::Read(r.u64().await?),
            STDERR_WRITE => StderrMsg::Write(r.bytes().await?),
            STDERR_LAST => StderrMsg::Last,
            STDERR_ERROR => StderrMsg::Error(read_error(r, daemon_version).await?),
            STDERR_START_ACTIVITY => {
                let id = r.u64().await?;
                let level = r.u64().await?;
                let kind = r.u64().await?;
                let text = text(r).await?;
                let fields = read_fields(r).await?;
                let parent = r.u64().await?;
                StderrMsg::StartActivity {
                    id,
                    level,
                    kind,
                    text,
                    fields,
                    parent,
                }
            }
            STDERR_STOP_ACTIVITY => StderrMsg::StopActivity(r.u64().await?),
            STDERR_RESULT => {
                let id = r.u64().await?;
                let kind = r.u64().await?;
                let fields = read_fields(r).await?;
                StderrMsg::Result { id, kind, fields }
            }
            other => {
                return Err(Error::protocol(format!(
                    "got unknown message type {other:x} from Nix daemon"
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests;
