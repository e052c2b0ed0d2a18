//! What can go wrong on the offload path, by kind: one enum for every step
//! (connect, handshake, machine info, sending inputs, the build there,
//! fetching outputs), so that the farm backs a machine off by what
//! happened, not by the words of a message.
//!
//! Two kinds of back-off ([`Backoff`]): a transient failure (the machine
//! unreachable or silent, its disk full, a broken stream) is retried after
//! an exponential back-off; a failure only a person can fix (the host key
//! is not the one in machines.scm, the SSH key or user is refused, this
//! store's signing key is not authorized there, theirs is not authorized
//! here, a bad field of machines.scm) keeps the machine out until
//! machines.scm, this store's ACL or the machine's private key changes,
//! and `ferry offload status` says so.

use std::time::Duration;

use ferry_protocol::ProtocolError;
use thiserror::Error;

use super::ssh::{SshError, SILENCE_MARK};

/// Why a step on a build machine failed (not a build failure: a build that
/// fails there is an outcome like a local one).
#[derive(Debug, Clone, Error)]
pub enum OffloadError {
    /// The machine could not be reached, or the connection broke.
    #[error("{why}")]
    Connect { machine: String, why: String },
    /// Its host key is not the one machines.scm pins (or that field is bad).
    #[error("{why}")]
    HostKey { machine: String, why: String },
    /// Its sshd refused our user or key, or the key file is unusable here
    /// (missing, readable by others, passphrase).
    #[error("{why}")]
    Authentication { machine: String, why: String },
    /// A field of its machines.scm entry cannot work (compression).
    #[error("{why}")]
    Config { machine: String, why: String },
    /// Its daemon said something unexpected, or a stream broke or was
    /// corrupted on the way.
    #[error("{why}")]
    Protocol { machine: String, why: String },
    /// It refused what we sent: our signing key is not in its ACL.
    #[error("{why}")]
    OurKeyRefused { machine: String, why: String },
    /// What it sent is signed by a key not in our ACL.
    #[error("{why}")]
    TheirKeyNotTrusted { machine: String, why: String },
    /// Its store is full.
    #[error("{why}")]
    DiskFull { machine: String, why: String },
    /// It returned what was not asked for (extra items, an output under
    /// another path or with other contents) or claimed a build whose
    /// outputs it did not send: kept out until an administrator acts.
    #[error("{why}")]
    Misbehaved { machine: String, why: String },
    /// It sent nothing for the liveness bound during a step.
    #[error("{machine} sent nothing for {} ({step}): alive but silent (its daemon may be stopped or hung; the bound is --offload-silence-timeout); it is backed off", fmt_secs(*after))]
    Silent {
        machine: String,
        step: String,
        after: Duration,
    },
    /// The build failed there in a way that is the machine's, not the
    /// derivation's.
    #[error("{why}")]
    BuildFailed { machine: String, why: String },
    /// This machine's store (or state) failed: not the build machine's
    /// fault, not backed off.
    #[error("{why}")]
    LocalStore { why: String },
}

/// How the farm treats a machine after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Retried after an exponential back-off.
    Transient,
    /// Kept out until machines.scm, the ACL or the private key changes.
    UntilChanged,
    /// Not the machine's fault.
    None,
}

fn fmt_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

impl OffloadError {
    pub fn backoff(&self) -> Backoff {
        match self {
            OffloadError::HostKey { .. }
            | OffloadError::Authentication { .. }
            | OffloadError::Config { .. }
            | OffloadError::OurKeyRefused { .. }
            | OffloadError::TheirKeyNotTrusted { .. }
            | OffloadError::Misbehaved { .. } => Backoff::UntilChanged,
            OffloadError::LocalStore { .. } => Backoff::None,
            _ => Backoff::Transient,
        }
    }

    /// The kind, in a word, for logs and `offload status --json`.
    pub fn kind(&self) -> &'static str {
        match self {
            OffloadError::Connect { .. } => "connect",
            OffloadError::HostKey { .. } => "host-key",
            OffloadError::Authentication { .. } => "authentication",
            OffloadError::Config { .. } => "config",
            OffloadError::Protocol { .. } => "protocol",
            OffloadError::OurKeyRefused { .. } => "our-key-refused",
            OffloadError::TheirKeyNotTrusted { .. } => "their-key-not-trusted",
            OffloadError::DiskFull { .. } => "disk-full",
            OffloadError::Misbehaved { .. } => "misbehaved",
            OffloadError::Silent { .. } => "silent",
            OffloadError::BuildFailed { .. } => "build-failed",
            OffloadError::LocalStore { .. } => "local-store",
        }
    }

    /// An SSH error on `machine`, by kind.
    pub fn ssh(machine: &str, e: SshError) -> OffloadError {
        let machine = machine.to_string();
        let why = e.to_string();
        match e {
            SshError::HostKeyMismatch { .. } | SshError::BadHostKey { .. } => {
                OffloadError::HostKey { machine, why }
            }
            SshError::KeyFile { .. } | SshError::AuthRejected { .. } => {
                OffloadError::Authentication { machine, why }
            }
            SshError::Compression { .. } => OffloadError::Config { machine, why },
            SshError::Protocol { source, .. } => Self::protocol(&machine, "", source),
            SshError::Timeout {
                during: "the TCP connect",
                ..
            } => OffloadError::Connect { machine, why },
            SshError::Timeout { after, during, .. } => OffloadError::Silent {
                machine,
                step: during.to_string(),
                after,
            },
            SshError::Connect { .. }
            | SshError::Channel { .. }
            | SshError::Closed { .. }
            | SshError::Ssh { .. } => OffloadError::Connect { machine, why },
        }
    }

    /// A protocol error on `machine` during `step` ("" when the error says
    /// enough): a silent stream is [`OffloadError::Silent`].
    pub fn protocol(machine: &str, step: &str, e: ProtocolError) -> OffloadError {
        if let ProtocolError::Io(io) = &e {
            if let Some(after) = silence_of(&io.to_string()) {
                return OffloadError::Silent {
                    machine: machine.to_string(),
                    step: if step.is_empty() {
                        "talking to its daemon".into()
                    } else {
                        step.to_string()
                    },
                    after,
                };
            }
        }
        let why = if step.is_empty() {
            format!("{machine}: {e}")
        } else {
            format!("{machine}: {step}: {e}")
        };
        if is_disk_full(&why) {
            return OffloadError::DiskFull {
                machine: machine.to_string(),
                why,
            };
        }
        OffloadError::Protocol {
            machine: machine.to_string(),
            why,
        }
    }

    /// Sending the inputs to `machine` failed with `why`.
    pub fn sending(machine: &str, why: String) -> OffloadError {
        Self::classify(machine, "sending the inputs", why, true)
    }

    /// Fetching the outputs from `machine` failed with `why`.
    pub fn fetching(machine: &str, why: String) -> OffloadError {
        Self::classify(machine, "fetching the outputs", why, false)
    }

    fn classify(machine: &str, step: &str, why: String, sending: bool) -> OffloadError {
        let m = machine.to_string();
        if let Some(after) = silence_of(&why) {
            return OffloadError::Silent {
                machine: m,
                step: step.into(),
                after,
            };
        }
        let why = if why.contains(machine) {
            why
        } else {
            format!("{machine}: {why}")
        };
        let refused = why.contains("not authorized") || why.contains("not signed");
        match (refused, sending) {
            (true, true) => OffloadError::OurKeyRefused { machine: m, why },
            (true, false) => OffloadError::TheirKeyNotTrusted { machine: m, why },
            // Their store full (ours full while fetching is ours).
            _ if is_disk_full(&why) && sending => OffloadError::DiskFull { machine: m, why },
            _ if is_disk_full(&why) => OffloadError::LocalStore { why },
            _ => OffloadError::Protocol { machine: m, why },
        }
    }
}

/// The bound of a silence error's text ([`SILENCE_MARK`]), if it is one.
fn silence_of(text: &str) -> Option<Duration> {
    let rest = &text[text.find(SILENCE_MARK)? + SILENCE_MARK.len()..];
    let secs: f64 = rest.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}

fn is_disk_full(text: &str) -> bool {
    text.contains("No space left") || text.contains("no space left")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decide_the_back_off() {
        let silent = OffloadError::protocol(
            "h1",
            "the build",
            ProtocolError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{SILENCE_MARK} 3 s"),
            )),
        );
        assert_eq!(silent.kind(), "silent");
        assert_eq!(silent.backoff(), Backoff::Transient);
        assert!(silent
            .to_string()
            .contains("h1 sent nothing for 3 s (the build)"));
        let refused = OffloadError::sending(
            "h1",
            "sending the inputs: it is signed by key X, which is not authorized here".into(),
        );
        assert_eq!(refused.kind(), "our-key-refused");
        assert_eq!(refused.backoff(), Backoff::UntilChanged);
        let theirs = OffloadError::fetching("h1", "it is not signed; ...".into());
        assert_eq!(theirs.kind(), "their-key-not-trusted");
        let corrupt = OffloadError::fetching("h1", "NAR hash mismatch".into());
        assert_eq!(corrupt.backoff(), Backoff::Transient);
    }
}
