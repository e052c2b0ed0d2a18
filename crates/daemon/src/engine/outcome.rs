//! How a build's end becomes the [`BuildResult`] its client gets (and the
//! one word the daemon's log says about it).

use std::collections::BTreeMap;

use ferry_build::Outcome;
use ferry_protocol::{BuildResult, BuildStatus};

use super::Engine;

pub(super) fn result(drv: &str, status: BuildStatus) -> BuildResult {
    BuildResult {
        drv: drv.to_string(),
        status,
        outputs: BTreeMap::new(),
        error: None,
        exit_code: None,
        log_tail: Vec::new(),
        failure: Default::default(),
    }
}
impl Engine {
    pub(super) fn outcome_result(&self, shown: &str, outcome: Outcome) -> BuildResult {
        match outcome {
            Outcome::Built {
                outputs,
                already_valid,
            } => BuildResult {
                outputs: outputs
                    .iter()
                    .map(|(n, o)| (n.clone(), self.store.display(o)))
                    .collect(),
                ..result(
                    shown,
                    if already_valid {
                        BuildStatus::AlreadyValid
                    } else {
                        BuildStatus::Built
                    },
                )
            },
            Outcome::Failed {
                message,
                exit_code,
                log_tail,
                kind,
            } => BuildResult {
                error: Some(message),
                exit_code,
                log_tail,
                failure: match kind {
                    ferry_build::FailureKind::Other => ferry_protocol::FailureKind::Other,
                    ferry_build::FailureKind::TimedOut => ferry_protocol::FailureKind::TimedOut,
                    ferry_build::FailureKind::HashMismatch => {
                        ferry_protocol::FailureKind::HashMismatch
                    }
                },
                ..result(shown, BuildStatus::Failed)
            },
        }
    }
}

/// One word for how a build ended, for the daemon's log.
pub(crate) fn outcome_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Built {
            already_valid: true,
            ..
        } => "already-valid",
        Outcome::Built { .. } => "built",
        Outcome::Failed { .. } => "failed",
    }
}
