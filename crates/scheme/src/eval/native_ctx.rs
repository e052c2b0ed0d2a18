//! What a native procedure can do besides computing: warn, see the
//! evaluation context, and call back into Scheme (nesting bounded by
//! [`MAX_NATIVE_NESTING`] so natives cannot exhaust the Rust stack).

use super::{Interpreter, State, MAX_NATIVE_NESTING};
use crate::env::EvalContext;
use crate::error::{ErrorKind, SchemeError, Warning};
use crate::span::Span;
use crate::value::Value;
use std::path::Path;

/// What a native procedure can do besides computing: warn, see the context,
/// and call Scheme procedures.
pub struct NativeCtx<'a> {
    pub(super) interp: &'a mut Interpreter,
}

impl NativeCtx<'_> {
    /// Records a warning (returned to the caller, never printed).
    pub fn warn(&mut self, span: &Span, message: impl Into<String>) {
        self.interp.warnings.push(Warning {
            span: span.clone(),
            message: message.into(),
        });
    }

    pub fn context(&self) -> &EvalContext {
        &self.interp.ctx
    }

    /// The home directory, if known (HOME may be unset).
    pub fn home(&self) -> Option<&Path> {
        self.interp.ctx.home.as_deref()
    }

    pub fn getenv(&self, name: &str) -> Option<String> {
        self.interp.ctx.env.get(name)
    }

    /// Calls `f` (a Scheme or native procedure) with `args`; `span` is the
    /// call site reported by errors.
    pub fn call(&mut self, f: &Value, args: Vec<Value>, span: &Span) -> Result<Value, SchemeError> {
        if self.interp.native_nesting >= MAX_NATIVE_NESTING {
            return Err(SchemeError::new(
                ErrorKind::Limit,
                span,
                format!("procedures called through map, for-each, filter and the like nest more than {MAX_NATIVE_NESTING} levels deep"),
            )
            .with_hint("use a named let loop instead of recursing through map"));
        }
        self.interp.native_nesting += 1;
        let result = self.interp.run(State::Apply(f.clone(), args, span.clone()));
        self.interp.native_nesting -= 1;
        result
    }
}
