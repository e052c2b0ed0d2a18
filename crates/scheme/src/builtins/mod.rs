//! Built-in procedures, grouped by what they work on. Each is a
//! [`Native`]; argument checks say which argument of which procedure is
//! wrong and what it got.

mod control;
mod lists;
mod numbers;
mod ports;
mod srfi;
mod strings;

use crate::error::{type_error, SchemeError};
use crate::eval::NativeCtx;
use crate::span::Span;
use crate::value::{equal, eqv, Native, NativeKind, Sym, Value};
use std::collections::HashMap;
use std::rc::Rc;

pub(crate) type Globals = HashMap<Sym, Value>;

/// Defines a native procedure in `globals`.
pub(crate) fn def(
    globals: &mut Globals,
    name: &str,
    f: impl Fn(&mut NativeCtx<'_>, &[Value], &Span) -> Result<Value, SchemeError> + 'static,
) {
    globals.insert(Rc::from(name), Value::Native(Rc::new(Native::new(name, f))));
}

/// Checks the number of arguments.
pub(crate) fn arity(
    name: &str,
    args: &[Value],
    span: &Span,
    min: usize,
    max: Option<usize>,
) -> Result<(), SchemeError> {
    let n = args.len();
    if n >= min && max.is_none_or(|m| n <= m) {
        return Ok(());
    }
    let plural = |k: usize| if k == 1 { "" } else { "s" };
    let expected = match max {
        Some(m) if m == min => format!("{min} argument{}", plural(min)),
        Some(m) => format!("{min} to {m} arguments"),
        None => format!("at least {min} argument{}", plural(min)),
    };
    Err(type_error(
        span,
        format!("procedure {name} expects {expected}, got {n}"),
    ))
}

/// "argument 2 of string-append must be a string, got the integer 5".
pub(crate) fn bad_arg(
    name: &str,
    index: usize,
    expected: &str,
    got: &Value,
    span: &Span,
) -> SchemeError {
    type_error(
        span,
        format!(
            "argument {} of {name} must be {expected}, got {}",
            index + 1,
            got.describe()
        ),
    )
}

pub(crate) fn list_arg(
    name: &str,
    index: usize,
    v: &Value,
    span: &Span,
) -> Result<Vec<Value>, SchemeError> {
    v.list_to_vec()
        .ok_or_else(|| bad_arg(name, index, "a list", v, span))
}

pub(crate) fn str_arg<'v>(
    name: &str,
    index: usize,
    v: &'v Value,
    span: &Span,
) -> Result<&'v str, SchemeError> {
    v.as_str()
        .ok_or_else(|| bad_arg(name, index, "a string", v, span))
}

pub(crate) fn int_arg(
    name: &str,
    index: usize,
    v: &Value,
    span: &Span,
) -> Result<i64, SchemeError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e18 => Ok(*x as i64),
        _ => Err(bad_arg(name, index, "an integer", v, span)),
    }
}

pub(crate) fn index_arg(
    name: &str,
    index: usize,
    v: &Value,
    span: &Span,
) -> Result<usize, SchemeError> {
    match v {
        Value::Int(i) if *i >= 0 => {
            usize::try_from(*i).map_err(|_| bad_arg(name, index, "a valid index", v, span))
        }
        _ => Err(bad_arg(name, index, "a non-negative integer", v, span)),
    }
}

pub(crate) fn proc_arg(
    name: &str,
    index: usize,
    v: &Value,
    span: &Span,
) -> Result<(), SchemeError> {
    if v.is_procedure() {
        Ok(())
    } else {
        Err(bad_arg(name, index, "a procedure", v, span))
    }
}

fn predicate(globals: &mut Globals, name: &str, test: fn(&Value) -> bool) {
    let owned = name.to_string();
    def(globals, name, move |_, args, span| {
        arity(&owned, args, span, 1, Some(1))?;
        Ok(Value::Bool(test(&args[0])))
    });
}

/// Installs every built-in procedure into `globals`.
pub(crate) fn install(globals: &mut Globals) {
    lists::install(globals);
    numbers::install(globals);
    strings::install(globals);
    ports::install(globals);
    control::install(globals);
    srfi::install(globals);
    crate::machine::install(globals);
    globals.insert(
        Rc::from("apply"),
        Value::Native(Rc::new(Native {
            name: "apply".into(),
            kind: NativeKind::Apply,
        })),
    );

    predicate(globals, "not", |v| matches!(v, Value::Bool(false)));
    predicate(globals, "null?", |v| matches!(v, Value::Nil));
    predicate(globals, "pair?", |v| matches!(v, Value::Pair(_)));
    predicate(globals, "list?", Value::is_list);
    predicate(globals, "string?", |v| matches!(v, Value::Str(_)));
    predicate(globals, "symbol?", |v| matches!(v, Value::Symbol(_)));
    predicate(globals, "keyword?", |v| matches!(v, Value::Keyword(_)));
    predicate(globals, "char?", |v| matches!(v, Value::Char(_)));
    predicate(globals, "boolean?", |v| matches!(v, Value::Bool(_)));
    predicate(globals, "vector?", |v| matches!(v, Value::Vector(_)));
    predicate(globals, "procedure?", Value::is_procedure);
    for (name, f) in [
        ("eq?", eqv as fn(&Value, &Value) -> bool),
        ("eqv?", eqv),
        ("equal?", equal),
    ] {
        def(globals, name, move |_, args, span| {
            arity(name, args, span, 2, Some(2))?;
            Ok(Value::Bool(f(&args[0], &args[1])))
        });
    }
    def(globals, "getenv", |ctx, args, span| {
        arity("getenv", args, span, 1, Some(1))?;
        let name = str_arg("getenv", 0, &args[0], span)?;
        Ok(ctx
            .getenv(name)
            .map_or(Value::Bool(false), |v| Value::string(&v)))
    });
    def(globals, "error", |_, args, span| {
        let mut message = match args.first() {
            Some(Value::Str(s)) => s.to_string(),
            Some(v) => v.to_string(),
            None => "error".to_string(),
        };
        for irritant in args.iter().skip(1) {
            message.push(' ');
            message.push_str(&irritant.to_string());
        }
        Err(crate::error::runtime_error(span, message))
    });
    // Output is discarded: evaluating a machines file must not write
    // anywhere, but a stray (display ...) should not make it fail.
    for name in ["display", "write", "newline"] {
        def(globals, name, |_, _, _| Ok(Value::Unspecified));
    }
}
