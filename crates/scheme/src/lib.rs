//! Scheme: a Guile-compatible subset to evaluate `/etc/ferry/machines.scm`
//! and build files, without Guile.
//!
//! Owns: the reader (datums with file:line:column), a bounded evaluator, the
//! `build-machine` record with the seed's fields and defaults, and the
//! primitives other crates extend it with (the derivation API for build
//! files is added through [`Interpreter::define_native`]). Must never: open
//! network connections, write files or print; the only outside inputs are
//! the ones in [`EvalContext`] (home directory, environment variables) and
//! the text files the Scheme code reads (bounded in size), and
//! evaluation is bounded in steps, time and depth ([`Limits`]).
//!
//! # Using it
//!
//! ```
//! use ferry_scheme::{load_machines, EvalContext};
//! let src = r#"(list (build-machine (name "b1") (systems (list "x86_64-linux"))
//!                                   (user "bob") (host-key "ssh-ed25519 AAAAC3Nza…")))"#;
//! let loaded = load_machines(src, "machines.scm", EvalContext::hermetic("/home/bob")).unwrap();
//! assert_eq!(loaded.machines[0].port, 22);
//! assert_eq!(loaded.machines[0].private_key, std::path::Path::new("/home/bob/.ssh/id_rsa"));
//! // A placeholder key is an error of that machine only; the file loads.
//! assert!(loaded.machines[0].error.as_deref().unwrap().contains("placeholder"));
//! ```
//!
//! # Decisions
//!
//! - **Machines files as Guix evaluates them** (see `machine.rs`): the
//!   record form checks only its shape; the returned machines' values are
//!   checked when the list is returned. A wrong type is an error of the
//!   file; a host key that is not a complete OpenSSH public key (the
//!   manual's `"ssh-ed25519 AAAAC3Nza…"` placeholders, Guix's tests'
//!   `"some-key"`) or a malformed name or user is that machine's
//!   [`BuildMachine::error`]: the file loads, and the offload code never
//!   connects to that machine. Defined but unreturned machines are not
//!   checked. A field may use the fields written before it (`let*`, as
//!   Guix's `define-record-type*`); given `system` and `systems`,
//!   `systems` wins with a warning; with no home directory there is no
//!   default private key (Guix's default is then `#f`).
//! - **Files** may be read (`call-with-input-file`, `get-string-all`,
//!   `read-line`, `read-string`), at most 1 MiB each, relative to the
//!   current directory as in Guile, so the files Guix System generates
//!   load.
//! - **Numbers.** Exact integers are `i64`, inexact ones `f64`; there are no
//!   rationals or bignums. `(/ 1 2)` is `0.5`, `(/ 6 3)` is `2`, `1/2` reads
//!   as `0.5`, and integer overflow is an error.
//! - **Data is immutable** (no `set-car!`, `string-set!`); variables can be
//!   `set!`. `display`, `write` and `newline` accept anything and discard
//!   it; `(format #t ...)` likewise.
//! - **Modules.** `use-modules` and `define-module` are accepted and
//!   ignored; `(@ (any module) name)` and `@@` look `name` up among the
//!   globals.
//! - **Evaluation** runs on an explicit stack: tail calls take no space and
//!   deep recursion is an error, never a crash (see [`eval`]).
//! - **Guix's house style.** `(ice-9 match)` (`match`, `match-lambda`,
//!   `match-lambda*`, `match-let`, `match-let*`; see `compile/pattern.rs`
//!   for the patterns), SRFI-26 `cut`/`cute`, multiple values (`values`,
//!   `call-with-values`, `receive`, `let-values`, `let*-values`), `do`,
//!   `and=>`, `compose`, `negate`, `const`, the common SRFI-1 procedures,
//!   and `gethostname` and `current-processor-count` (from the
//!   [`EvalContext`]) are built in. A value no `match` clause takes is an
//!   error at the `match` form: "no matching pattern for VALUE".
//! - Special-form names (`if`, `let`, `match`, `build-machine`...) are
//!   reserved; there are no macros (`define-syntax`, records and
//!   continuations are clear "not supported" errors).
#![forbid(unsafe_code)]

pub mod build_file;
mod builtins;
mod compile;
mod datum;
mod env;
mod error;
pub mod eval;
mod hostkey;
mod machine;
mod machine_check;
mod reader;
mod span;
mod suggest;
mod value;

pub use build_file::{load_build_file, BuildFile, DrvObject};
pub use datum::{Datum, DatumKind};
pub use env::{Environment, EvalContext, Limits};
pub use error::{ErrorKind, SchemeError, Warning};
pub use eval::{Interpreter, NativeCtx};
pub use hostkey::{check_host_key, is_placeholder_host_key, HostKeyStatus, KEY_TYPES};
pub use machine::{BuildMachine, MachineRecord, FIELD_NAMES};
pub use reader::{read_all, MAX_NESTING};
pub use span::Span;
pub use value::{equal, eqv, HostValue, Native, NativeFn, Pair, Value};

use std::path::Path;
use std::rc::Rc;

/// What a machines file yields: its machines, in order, and the warnings.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Machines {
    pub machines: Vec<BuildMachine>,
    #[serde(skip)]
    pub warnings: Vec<Warning>,
}

/// Evaluates a machines file's text; `file` names it in messages.
pub fn load_machines(source: &str, file: &str, ctx: EvalContext) -> Result<Machines, SchemeError> {
    let mut interp = Interpreter::new(ctx);
    let value = interp.eval_file(source, file)?;
    let span = interp
        .last_form_span()
        .cloned()
        .unwrap_or_else(|| Span::new(file.into(), 1, 1));
    if interp.last_form_span().is_none() {
        return Err(SchemeError::new(ErrorKind::Machine, &span, "the machines file is empty")
            .with_hint("it must evaluate to a list of build-machine records: (list (build-machine ...) ...)"));
    }
    let mut warnings = interp.take_warnings();
    let home = interp.context().home.clone();
    let machines = machine::machines_from_value(&value, &span, home.as_deref(), &mut warnings)?;
    for (i, m) in machines.iter().enumerate() {
        if machines[..i].iter().any(|o| o.name == m.name) {
            warnings.push(Warning {
                span: span.clone(),
                message: format!("build-machine {:?} appears more than once", m.name),
            });
        }
    }
    Ok(Machines { machines, warnings })
}

/// Reads and evaluates the machines file at `path`.
pub fn load_machines_file(path: &Path, ctx: EvalContext) -> Result<Machines, SchemeError> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        SchemeError::file_error(
            ErrorKind::Io,
            &name,
            format!("cannot read the machines file: {e}"),
        )
    })?;
    load_machines(&source, &name, ctx)
}

/// `#:keyword value` pairs, in the order given (keywords without `#:`).
pub type KeywordArgs = Vec<(Rc<str>, Value)>;

/// Splits native arguments into positional ones and `#:keyword value`
/// pairs, in order. A keyword without a value is an error.
pub fn split_keywords(
    args: &[Value],
    span: &Span,
) -> Result<(Vec<Value>, KeywordArgs), SchemeError> {
    let mut positional = Vec::new();
    let mut keywords = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg {
            Value::Keyword(k) => match it.next() {
                Some(v) => keywords.push((k.clone(), v.clone())),
                None => {
                    return Err(SchemeError::new(
                        ErrorKind::Type,
                        span,
                        format!("keyword #:{k} has no value after it"),
                    ))
                }
            },
            other => positional.push(other.clone()),
        }
    }
    Ok((positional, keywords))
}
