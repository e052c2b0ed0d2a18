//! Source positions: every datum, compiled node, error and warning carries one.

use std::fmt;
use std::sync::Arc;

/// A position in a source file: 1-based line and column (columns count
/// Unicode scalar values, so a `…` is one column).
///
/// The file name is an `Arc<str>` so that spans are cheap to clone and errors
/// stay `Send + Sync` (callers put them in `anyhow::Error`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl Span {
    pub fn new(file: Arc<str>, line: u32, col: u32) -> Self {
        Span { file, line, col }
    }

    /// A span for things that have no source (built-in procedures).
    pub fn builtin() -> Self {
        Span::new(Arc::from("<builtin>"), 0, 0)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}
