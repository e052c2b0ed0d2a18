//! Numbers: 64-bit exact integers and floats. No rationals or bignums:
//! `(/ 1 2)` is the float 0.5 (Guile would give the exact 1/2), and integer
//! overflow is an error rather than a silent wrap.

use super::{arity, bad_arg, def, int_arg, str_arg, Globals};
use crate::error::{runtime_error, SchemeError};
use crate::reader::{parse_number, Number};
use crate::span::Span;
use crate::value::{format_float, Value};

#[derive(Clone, Copy)]
enum Num {
    I(i64),
    F(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(x) => x,
        }
    }
    fn value(self) -> Value {
        match self {
            Num::I(i) => Value::Int(i),
            Num::F(x) => Value::Float(x),
        }
    }
}

fn num(name: &str, index: usize, v: &Value, span: &Span) -> Result<Num, SchemeError> {
    match v {
        Value::Int(i) => Ok(Num::I(*i)),
        Value::Float(x) => Ok(Num::F(*x)),
        _ => Err(bad_arg(name, index, "a number", v, span)),
    }
}

fn overflow(name: &str, span: &Span) -> SchemeError {
    runtime_error(
        span,
        format!("integer overflow in {name}: the result does not fit in 64 bits"),
    )
    .with_hint("Ferry's Scheme has no bignums; use a float (e.g. 1.0) if precision does not matter")
}

fn arith(
    name: &'static str,
    args: &[Value],
    span: &Span,
    identity: i64,
    int_op: fn(i64, i64) -> Option<i64>,
    float_op: fn(f64, f64) -> f64,
) -> Result<Value, SchemeError> {
    let mut acc = Num::I(identity);
    let nums = args
        .iter()
        .enumerate()
        .map(|(i, a)| num(name, i, a, span))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rest = &nums[..];
    if let (true, Some((first, tail))) = (name == "-" || name == "/", nums.split_first()) {
        if !tail.is_empty() {
            acc = *first;
            rest = tail;
        }
    }
    for n in rest {
        acc = match (acc, *n) {
            (Num::I(a), Num::I(b)) => Num::I(int_op(a, b).ok_or_else(|| overflow(name, span))?),
            (a, b) => Num::F(float_op(a.f(), b.f())),
        };
    }
    Ok(acc.value())
}

fn divide(args: &[Value], span: &Span) -> Result<Value, SchemeError> {
    arity("/", args, span, 1, None)?;
    let nums = args
        .iter()
        .enumerate()
        .map(|(i, a)| num("/", i, a, span))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut acc, rest) = match nums.as_slice() {
        [only] => (Num::I(1), std::slice::from_ref(only)),
        [first, rest @ ..] => (*first, rest),
        [] => return Ok(Value::Int(1)),
    };
    for n in rest {
        acc = match (acc, *n) {
            (_, Num::I(0)) => return Err(runtime_error(span, "division by zero")),
            (Num::I(a), Num::I(b)) if a.checked_rem(b) == Some(0) => Num::I(a / b),
            (a, b) => Num::F(a.f() / b.f()),
        };
    }
    Ok(acc.value())
}

fn compare(
    name: &'static str,
    args: &[Value],
    span: &Span,
    test: fn(std::cmp::Ordering) -> bool,
) -> Result<Value, SchemeError> {
    arity(name, args, span, 1, None)?;
    let nums = args
        .iter()
        .enumerate()
        .map(|(i, a)| num(name, i, a, span))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Value::Bool(nums.windows(2).all(|w| {
        let ord = match (w[0], w[1]) {
            (Num::I(a), Num::I(b)) => Some(a.cmp(&b)),
            (a, b) => a.f().partial_cmp(&b.f()),
        };
        ord.is_some_and(test)
    })))
}

/// Number syntax with Guile's radix prefixes, for `string->number`.
pub(crate) fn parse_scheme_number(text: &str, radix: u32) -> Option<Value> {
    let (text, radix) = match text.get(..2) {
        Some("#x" | "#X") => (&text[2..], 16),
        Some("#o" | "#O") => (&text[2..], 8),
        Some("#b" | "#B") => (&text[2..], 2),
        Some("#d" | "#D") => (&text[2..], 10),
        _ => (text, radix),
    };
    match parse_number(text, radix)? {
        Number::Int(i) => Some(Value::Int(i)),
        Number::Float(x) => Some(Value::Float(x)),
    }
}

fn number_to_string(v: &Value, radix: u32) -> String {
    match v {
        Value::Int(i) if radix != 10 => {
            let digits = {
                let mut n = i.unsigned_abs();
                let mut out = Vec::new();
                loop {
                    out.push(
                        std::char::from_digit((n % u64::from(radix)) as u32, radix).unwrap_or('?'),
                    );
                    n /= u64::from(radix);
                    if n == 0 {
                        break;
                    }
                }
                out.iter().rev().collect::<String>()
            };
            if *i < 0 {
                format!("-{digits}")
            } else {
                digits
            }
        }
        Value::Int(i) => i.to_string(),
        Value::Float(x) => format_float(*x),
        other => other.to_string(),
    }
}

pub(super) fn install(g: &mut Globals) {
    def(g, "+", |_, args, span| {
        arith("+", args, span, 0, i64::checked_add, |a, b| a + b)
    });
    def(g, "*", |_, args, span| {
        arith("*", args, span, 1, i64::checked_mul, |a, b| a * b)
    });
    def(g, "-", |_, args, span| {
        arity("-", args, span, 1, None)?;
        arith("-", args, span, 0, i64::checked_sub, |a, b| a - b)
    });
    def(g, "/", |_, args, span| divide(args, span));
    def(g, "=", |_, args, span| {
        compare("=", args, span, |o| o.is_eq())
    });
    def(g, "<", |_, args, span| {
        compare("<", args, span, |o| o.is_lt())
    });
    def(g, ">", |_, args, span| {
        compare(">", args, span, |o| o.is_gt())
    });
    def(g, "<=", |_, args, span| {
        compare("<=", args, span, |o| o.is_le())
    });
    def(g, ">=", |_, args, span| {
        compare(">=", args, span, |o| o.is_ge())
    });
    for (name, op) in [
        ("quotient", i64::checked_div as fn(i64, i64) -> Option<i64>),
        ("remainder", i64::checked_rem),
        ("modulo", |a: i64, b: i64| {
            a.checked_rem_euclid(b)
                .map(|r| if b < 0 && r != 0 { r + b } else { r })
        }),
    ] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 2, Some(2))?;
            let a = int_arg(name, 0, &args[0], span)?;
            let b = int_arg(name, 1, &args[1], span)?;
            if b == 0 {
                return Err(runtime_error(span, format!("{name}: division by zero")));
            }
            op(a, b).map(Value::Int).ok_or_else(|| overflow(name, span))
        });
    }
    for (name, test) in [
        ("zero?", (|x: f64| x == 0.0) as fn(f64) -> bool),
        ("positive?", |x| x > 0.0),
        ("negative?", |x| x < 0.0),
    ] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, Some(1))?;
            Ok(Value::Bool(test(num(name, 0, &args[0], span)?.f())))
        });
    }
    for (name, want) in [("even?", 0), ("odd?", 1)] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, Some(1))?;
            Ok(Value::Bool(
                int_arg(name, 0, &args[0], span)?.rem_euclid(2) == want,
            ))
        });
    }
    def(g, "number?", |_, args, span| {
        arity("number?", args, span, 1, Some(1))?;
        Ok(Value::Bool(matches!(
            args[0],
            Value::Int(_) | Value::Float(_)
        )))
    });
    def(g, "real?", |_, args, span| {
        arity("real?", args, span, 1, Some(1))?;
        Ok(Value::Bool(matches!(
            args[0],
            Value::Int(_) | Value::Float(_)
        )))
    });
    def(g, "integer?", |_, args, span| {
        arity("integer?", args, span, 1, Some(1))?;
        Ok(Value::Bool(match args[0] {
            Value::Int(_) => true,
            Value::Float(x) => x.is_finite() && x.fract() == 0.0,
            _ => false,
        }))
    });
    def(g, "exact?", |_, args, span| {
        arity("exact?", args, span, 1, Some(1))?;
        Ok(Value::Bool(matches!(
            num("exact?", 0, &args[0], span)?,
            Num::I(_)
        )))
    });
    def(g, "inexact?", |_, args, span| {
        arity("inexact?", args, span, 1, Some(1))?;
        Ok(Value::Bool(matches!(
            num("inexact?", 0, &args[0], span)?,
            Num::F(_)
        )))
    });
    for name in ["exact->inexact", "inexact"] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, Some(1))?;
            Ok(Value::Float(num(name, 0, &args[0], span)?.f()))
        });
    }
    for name in ["inexact->exact", "exact"] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, Some(1))?;
            match num(name, 0, &args[0], span)? {
                Num::I(i) => Ok(Value::Int(i)),
                Num::F(x) if x.fract() == 0.0 && x.abs() < 9.0e18 => Ok(Value::Int(x as i64)),
                Num::F(_) => Err(bad_arg(
                    name,
                    0,
                    "an integral number (no rationals here)",
                    &args[0],
                    span,
                )),
            }
        });
    }
    for (name, op) in [
        ("floor", f64::floor as fn(f64) -> f64),
        ("ceiling", f64::ceil),
        ("truncate", f64::trunc),
        ("round", f64::round_ties_even),
        ("abs", f64::abs),
        ("sqrt", f64::sqrt),
    ] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, Some(1))?;
            match num(name, 0, &args[0], span)? {
                Num::I(i) if name == "abs" => i
                    .checked_abs()
                    .map(Value::Int)
                    .ok_or_else(|| overflow(name, span)),
                Num::I(i) if name == "sqrt" => {
                    let r = (i as f64).sqrt();
                    Ok(if r.fract() == 0.0 {
                        Value::Int(r as i64)
                    } else {
                        Value::Float(r)
                    })
                }
                Num::I(i) => Ok(Value::Int(i)),
                Num::F(x) => Ok(Value::Float(op(x))),
            }
        });
    }
    for (name, pick_max) in [("max", true), ("min", false)] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, None)?;
            let nums = args
                .iter()
                .enumerate()
                .map(|(i, a)| num(name, i, a, span))
                .collect::<Result<Vec<_>, _>>()?;
            let inexact = nums.iter().any(|n| matches!(n, Num::F(_)));
            let mut best = nums[0];
            for n in &nums[1..] {
                if (n.f() > best.f()) == pick_max && n.f() != best.f() {
                    best = *n;
                }
            }
            Ok(if inexact {
                Value::Float(best.f())
            } else {
                best.value()
            })
        });
    }
    def(g, "expt", |_, args, span| {
        arity("expt", args, span, 2, Some(2))?;
        match (
            num("expt", 0, &args[0], span)?,
            num("expt", 1, &args[1], span)?,
        ) {
            (Num::I(a), Num::I(b)) if b >= 0 => u32::try_from(b)
                .ok()
                .and_then(|b| a.checked_pow(b))
                .map(Value::Int)
                .ok_or_else(|| overflow("expt", span)),
            (a, b) => Ok(Value::Float(a.f().powf(b.f()))),
        }
    });
    def(g, "1+", |_, args, span| {
        arith(
            "+",
            &[args.first().cloned().unwrap_or_default(), Value::Int(1)],
            span,
            0,
            i64::checked_add,
            |a, b| a + b,
        )
    });
    def(g, "1-", |_, args, span| {
        arith(
            "-",
            &[args.first().cloned().unwrap_or_default(), Value::Int(1)],
            span,
            0,
            i64::checked_sub,
            |a, b| a - b,
        )
    });
    def(g, "number->string", |_, args, span| {
        arity("number->string", args, span, 1, Some(2))?;
        num("number->string", 0, &args[0], span)?;
        let radix = radix_arg("number->string", args.get(1), span)?;
        Ok(Value::string(&number_to_string(&args[0], radix)))
    });
    def(g, "string->number", |_, args, span| {
        arity("string->number", args, span, 1, Some(2))?;
        let text = str_arg("string->number", 0, &args[0], span)?;
        let radix = radix_arg("string->number", args.get(1), span)?;
        Ok(parse_scheme_number(text, radix).unwrap_or(Value::Bool(false)))
    });
}

/// The optional radix argument (second) of `number->string` and
/// `string->number`: 10 when absent, else one of 2, 8, 10, 16.
fn radix_arg(proc_name: &str, arg: Option<&Value>, span: &Span) -> Result<u32, SchemeError> {
    match arg {
        None => Ok(10),
        Some(r) => match int_arg(proc_name, 1, r, span)? {
            r @ (2 | 8 | 10 | 16) => Ok(r as u32),
            _ => Err(bad_arg(proc_name, 1, "a radix of 2, 8, 10 or 16", r, span)),
        },
    }
}
