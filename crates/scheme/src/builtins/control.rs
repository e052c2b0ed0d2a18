//! Procedures about procedures and control: multiple values (`values`,
//! `call-with-values`), Guile's `and=>`, `const`, `identity`, `compose`,
//! `negate`, the hidden helpers the `match` and `receive` expansions call,
//! and two harmless facts about the host (`gethostname`,
//! `current-processor-count`), taken from the [`crate::EvalContext`].

use super::{arity, def, proc_arg, Globals};
use crate::error::{runtime_error, SchemeError};
use crate::eval::NativeCtx;
use crate::span::Span;
use crate::value::{HostValue, Native, Value};
use std::any::Any;
use std::fmt;
use std::rc::Rc;

/// What `(values a b ...)` returns when it has other than one value.
struct Values(Vec<Value>);

impl HostValue for Values {
    fn type_name(&self) -> &str {
        "multiple values"
    }
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("#<values")?;
        for v in &self.0 {
            write!(f, " {v}")?;
        }
        f.write_str(">")
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `(values ...)`: one value is itself, any other number a [`Values`].
pub(super) fn multiple_values(mut items: Vec<Value>) -> Value {
    if items.len() == 1 {
        return items.remove(0);
    }
    Value::Host(Rc::new(Values(items)))
}

/// The values an expression returned, as a vector.
fn values_of(v: &Value) -> Vec<Value> {
    match v.downcast_host::<Values>() {
        Some(Values(items)) => items.clone(),
        None => vec![v.clone()],
    }
}

fn native(
    name: &str,
    f: impl Fn(&mut NativeCtx<'_>, &[Value], &Span) -> Result<Value, SchemeError> + 'static,
) -> Value {
    Value::Native(Rc::new(Native::new(name, f)))
}

pub(super) fn install(g: &mut Globals) {
    def(g, "values", |_, args, _| Ok(multiple_values(args.to_vec())));
    def(g, "call-with-values", |ctx, args, span| {
        arity("call-with-values", args, span, 2, Some(2))?;
        proc_arg("call-with-values", 0, &args[0], span)?;
        proc_arg("call-with-values", 1, &args[1], span)?;
        let produced = ctx.call(&args[0], vec![], span)?;
        ctx.call(&args[1], values_of(&produced), span)
    });
    // Hidden (the space): called by the receive/let-values and match
    // expansions, which a user's definitions cannot change.
    def(g, " values->list", |_, args, span| {
        arity("values->list", args, span, 1, Some(1))?;
        Ok(Value::list(values_of(&args[0])))
    });
    def(g, " nonempty-list?", |_, args, span| {
        arity("nonempty-list?", args, span, 1, Some(1))?;
        Ok(Value::Bool(
            matches!(args[0], Value::Pair(_)) && args[0].is_list(),
        ))
    });
    def(g, " match-error", |_, args, span| {
        arity("match-error", args, span, 1, Some(1))?;
        let mut shown = args[0].to_string();
        if shown.chars().count() > 100 {
            shown = shown.chars().take(97).collect::<String>() + "...";
        }
        Err(
            runtime_error(span, format!("no matching pattern for {shown}"))
                .with_hint("add a clause for this value, or a catch-all clause (_ ...) at the end"),
        )
    });

    def(g, "and=>", |ctx, args, span| {
        arity("and=>", args, span, 2, Some(2))?;
        proc_arg("and=>", 1, &args[1], span)?;
        if args[0].is_true() {
            ctx.call(&args[1], vec![args[0].clone()], span)
        } else {
            Ok(Value::Bool(false))
        }
    });
    def(g, "identity", |_, args, span| {
        arity("identity", args, span, 1, Some(1))?;
        Ok(args[0].clone())
    });
    def(g, "const", |_, args, span| {
        arity("const", args, span, 1, Some(1))?;
        let v = args[0].clone();
        Ok(native("const", move |_, _, _| Ok(v.clone())))
    });
    def(g, "negate", |_, args, span| {
        arity("negate", args, span, 1, Some(1))?;
        proc_arg("negate", 0, &args[0], span)?;
        let f = args[0].clone();
        Ok(native("negate", move |ctx, args, span| {
            Ok(Value::Bool(!ctx.call(&f, args.to_vec(), span)?.is_true()))
        }))
    });
    def(g, "compose", |_, args, span| {
        for (i, f) in args.iter().enumerate() {
            proc_arg("compose", i, f, span)?;
        }
        let fs = args.to_vec();
        Ok(native("compose", move |ctx, args, span| {
            // ((compose f g) x) is (f (g x)); g may return several values.
            let Some((last, rest)) = fs.split_last() else {
                return Ok(multiple_values(args.to_vec()));
            };
            let mut v = ctx.call(last, args.to_vec(), span)?;
            for f in rest.iter().rev() {
                v = ctx.call(f, values_of(&v), span)?;
            }
            Ok(v)
        }))
    });

    def(g, "gethostname", |ctx, args, span| {
        arity("gethostname", args, span, 0, Some(0))?;
        Ok(Value::string(&ctx.context().host_name))
    });
    def(g, "current-processor-count", |ctx, args, span| {
        arity("current-processor-count", args, span, 0, Some(0))?;
        Ok(Value::Int(ctx.context().processors as i64))
    });
}
