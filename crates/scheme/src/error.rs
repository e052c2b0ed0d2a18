//! Errors and warnings. Both name the file, line and column; the library
//! never prints them, callers decide.

use crate::span::Span;
use std::fmt;

/// What kind of failure, for callers that want to react differently (the
/// message is for people).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// Lexical or parenthesis error.
    Read,
    /// A malformed special form (`let` without bindings, unknown field...).
    Syntax,
    /// A variable with no binding.
    Unbound,
    /// A value of the wrong type, or a wrong number of arguments.
    Type,
    /// A `build-machine` record (or the machines list) is invalid.
    Machine,
    /// The step budget, the deadline or the depth limit was exceeded.
    Limit,
    /// Raised by Scheme code with `error`, or any other runtime failure.
    Runtime,
}

/// An error with its location. Displays as `FILE:LINE:COL: error: MESSAGE`
/// followed, when there is one, by a `hint: ...` line.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemeError {
    pub kind: ErrorKind,
    /// Where; `None` only for errors about a whole file (unreadable).
    pub span: Option<Span>,
    /// The file, kept separately so file-level errors can still name it.
    pub file: String,
    pub message: String,
    pub hint: Option<String>,
}

impl SchemeError {
    pub fn new(kind: ErrorKind, span: &Span, message: impl Into<String>) -> Self {
        SchemeError {
            kind,
            span: Some(span.clone()),
            file: span.file.to_string(),
            message: message.into(),
            hint: None,
        }
    }

    /// An error about a whole file, without a line and column.
    pub fn file_error(kind: ErrorKind, file: &str, message: impl Into<String>) -> Self {
        SchemeError {
            kind,
            span: None,
            file: file.to_string(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The first line alone (`FILE:LINE:COL: error: MESSAGE`).
    pub fn headline(&self) -> String {
        match &self.span {
            Some(span) => format!("{span}: error: {}", self.message),
            None => format!("{}: error: {}", self.file, self.message),
        }
    }
}

impl fmt::Display for SchemeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.headline())?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemeError {}

/// Something suspicious but accepted (a deprecated field, a placeholder host
/// key). Displays as `FILE:LINE:COL: warning: MESSAGE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub span: Span,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.span, self.message)
    }
}

/// Shorthands used throughout the crate.
pub(crate) fn type_error(span: &Span, message: impl Into<String>) -> SchemeError {
    SchemeError::new(ErrorKind::Type, span, message)
}

pub(crate) fn runtime_error(span: &Span, message: impl Into<String>) -> SchemeError {
    SchemeError::new(ErrorKind::Runtime, span, message)
}

pub(crate) fn syntax_error(span: &Span, message: impl Into<String>) -> SchemeError {
    SchemeError::new(ErrorKind::Syntax, span, message)
}
