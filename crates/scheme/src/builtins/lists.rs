//! Pairs, lists, vectors and the higher-order list procedures (SRFI-1's
//! common ones); the latter call back into Scheme through [`NativeCtx::call`].

use super::{arity, bad_arg, def, index_arg, int_arg, list_arg, proc_arg, Globals};
use crate::error::{type_error, SchemeError};
use crate::eval::NativeCtx;
use crate::span::Span;
use crate::value::{equal, eqv, Value};

fn car_cdr(name: &str, path: &str, v: &Value, span: &Span) -> Result<Value, SchemeError> {
    // "cadr": apply d, then a (right to left).
    let mut cur = v.clone();
    for op in path.chars().rev() {
        cur = match &cur {
            Value::Pair(p) => {
                if op == 'a' {
                    p.car.clone()
                } else {
                    p.cdr.clone()
                }
            }
            _ => {
                return Err(type_error(
                    span,
                    format!("{name} needs a list long enough, but got {}", v.describe()),
                )
                .with_hint("check the list's length with length, or its shape with pair?"))
            }
        };
    }
    Ok(cur)
}

/// Calls `f` with the i-th elements of `lists` while every list has one.
fn map_over(
    ctx: &mut NativeCtx<'_>,
    name: &str,
    args: &[Value],
    span: &Span,
    mut each: impl FnMut(&mut NativeCtx<'_>, Value, &[Value]) -> Result<bool, SchemeError>,
) -> Result<(), SchemeError> {
    arity(name, args, span, 2, None)?;
    proc_arg(name, 0, &args[0], span)?;
    let lists = args[1..]
        .iter()
        .enumerate()
        .map(|(i, l)| list_arg(name, i + 1, l, span))
        .collect::<Result<Vec<_>, _>>()?;
    let n = lists.iter().map(Vec::len).min().unwrap_or(0);
    for i in 0..n {
        let row: Vec<Value> = lists.iter().map(|l| l[i].clone()).collect();
        let result = ctx.call(&args[0], row.clone(), span)?;
        if !each(ctx, result, &row)? {
            break;
        }
    }
    Ok(())
}

fn member_with(
    ctx: &mut NativeCtx<'_>,
    name: &str,
    args: &[Value],
    span: &Span,
    default: fn(&Value, &Value) -> bool,
    assoc: bool,
) -> Result<Value, SchemeError> {
    arity(name, args, span, 2, Some(3))?;
    let mut cur = args[1].clone();
    loop {
        let next = match &cur {
            Value::Nil => return Ok(Value::Bool(false)),
            Value::Pair(p) => {
                let candidate = if assoc {
                    match &p.car {
                        Value::Pair(entry) => entry.car.clone(),
                        other => return Err(bad_arg(name, 1, "a list of pairs", other, span)),
                    }
                } else {
                    p.car.clone()
                };
                let same = match args.get(2) {
                    Some(f) => ctx
                        .call(f, vec![args[0].clone(), candidate], span)?
                        .is_true(),
                    None => default(&args[0], &candidate),
                };
                if same {
                    return Ok(if assoc { p.car.clone() } else { cur.clone() });
                }
                p.cdr.clone()
            }
            other => return Err(bad_arg(name, 1, "a list", other, span)),
        };
        cur = next;
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        _ => None,
    }
}

pub(super) fn install(g: &mut Globals) {
    def(g, "list", |_, args, _| Ok(Value::list(args.to_vec())));
    def(g, "cons", |_, args, span| {
        arity("cons", args, span, 2, Some(2))?;
        Ok(Value::cons(args[0].clone(), args[1].clone()))
    });
    def(g, "cons*", |_, args, span| {
        arity("cons*", args, span, 1, None)?;
        let (last, init) = args
            .split_last()
            .map_or((Value::Nil, &[][..]), |(l, i)| (l.clone(), i));
        Ok(Value::list_with_tail(init.to_vec(), last))
    });
    for path in [
        "a", "d", "aa", "ad", "da", "dd", "aaa", "aad", "ada", "add", "daa", "dad", "dda", "ddd",
    ] {
        let name = format!("c{path}r");
        let n = name.clone();
        def(g, &name, move |_, args, span| {
            arity(&n, args, span, 1, Some(1))?;
            car_cdr(&n, path, &args[0], span)
        });
    }
    for (name, index) in [
        ("first", 0usize),
        ("second", 1),
        ("third", 2),
        ("fourth", 3),
        ("fifth", 4),
    ] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, Some(1))?;
            let items = list_arg(name, 0, &args[0], span)?;
            items.get(index).cloned().ok_or_else(|| {
                type_error(
                    span,
                    format!(
                        "{name} needs a list of at least {} elements, got {}",
                        index + 1,
                        args[0].describe()
                    ),
                )
            })
        });
    }
    def(g, "last", |_, args, span| {
        arity("last", args, span, 1, Some(1))?;
        let items = list_arg("last", 0, &args[0], span)?;
        items
            .last()
            .cloned()
            .ok_or_else(|| type_error(span, "last needs a non-empty list"))
    });
    def(g, "append", |_, args, span| {
        let Some((last, init)) = args.split_last() else {
            return Ok(Value::Nil);
        };
        let mut items = Vec::new();
        for (i, l) in init.iter().enumerate() {
            items.extend(list_arg("append", i, l, span)?);
        }
        Ok(Value::list_with_tail(items, last.clone()))
    });
    def(g, "length", |_, args, span| {
        arity("length", args, span, 1, Some(1))?;
        Ok(Value::Int(
            list_arg("length", 0, &args[0], span)?.len() as i64
        ))
    });
    def(g, "reverse", |_, args, span| {
        arity("reverse", args, span, 1, Some(1))?;
        let mut items = list_arg("reverse", 0, &args[0], span)?;
        items.reverse();
        Ok(Value::list(items))
    });
    def(g, "list-copy", |_, args, span| {
        arity("list-copy", args, span, 1, Some(1))?;
        Ok(Value::list(list_arg("list-copy", 0, &args[0], span)?))
    });
    def(g, "list-ref", |_, args, span| {
        arity("list-ref", args, span, 2, Some(2))?;
        let items = list_arg("list-ref", 0, &args[0], span)?;
        let k = index_arg("list-ref", 1, &args[1], span)?;
        items.get(k).cloned().ok_or_else(|| {
            type_error(
                span,
                format!(
                    "list-ref: index {k} is out of range for a list of {} elements",
                    items.len()
                ),
            )
        })
    });
    def(g, "list-tail", |_, args, span| {
        arity("list-tail", args, span, 2, Some(2))?;
        let k = index_arg("list-tail", 1, &args[1], span)?;
        let mut cur = args[0].clone();
        for _ in 0..k {
            cur = match &cur {
                Value::Pair(p) => p.cdr.clone(),
                _ => {
                    return Err(type_error(
                        span,
                        format!("list-tail: index {k} is out of range"),
                    ))
                }
            };
        }
        Ok(cur)
    });
    def(g, "make-list", |_, args, span| {
        arity("make-list", args, span, 1, Some(2))?;
        let n = index_arg("make-list", 0, &args[0], span)?;
        if n > 10_000_000 {
            return Err(type_error(span, "make-list: the list would be too long"));
        }
        let fill = args.get(1).cloned().unwrap_or(Value::Unspecified);
        Ok(Value::list(vec![fill; n]))
    });
    def(g, "iota", |_, args, span| {
        arity("iota", args, span, 1, Some(3))?;
        let n = index_arg("iota", 0, &args[0], span)?;
        if n > 10_000_000 {
            return Err(type_error(span, format!("iota: {n} elements is too many")));
        }
        let start = args.get(1).cloned().unwrap_or(Value::Int(0));
        let step = args.get(2).cloned().unwrap_or(Value::Int(1));
        let items: Vec<Value> = match (&start, &step) {
            (Value::Int(s), Value::Int(d)) => (0..n as i64)
                .map(|i| {
                    i.checked_mul(*d)
                        .and_then(|x| x.checked_add(*s))
                        .map(Value::Int)
                })
                .collect::<Option<_>>()
                .ok_or_else(|| type_error(span, "iota: integer overflow"))?,
            _ => {
                let s =
                    number(&start).ok_or_else(|| bad_arg("iota", 1, "a number", &start, span))?;
                let d = number(&step).ok_or_else(|| bad_arg("iota", 2, "a number", &step, span))?;
                (0..n).map(|i| Value::Float(s + d * i as f64)).collect()
            }
        };
        Ok(Value::list(items))
    });
    def(g, "memq", |ctx, args, span| {
        member_with(ctx, "memq", args, span, eqv, false)
    });
    def(g, "memv", |ctx, args, span| {
        member_with(ctx, "memv", args, span, eqv, false)
    });
    def(g, "member", |ctx, args, span| {
        member_with(ctx, "member", args, span, equal, false)
    });
    def(g, "assq", |ctx, args, span| {
        member_with(ctx, "assq", args, span, eqv, true)
    });
    def(g, "assv", |ctx, args, span| {
        member_with(ctx, "assv", args, span, eqv, true)
    });
    def(g, "assoc", |ctx, args, span| {
        member_with(ctx, "assoc", args, span, equal, true)
    });
    def(g, "assoc-ref", |ctx, args, span| {
        arity("assoc-ref", args, span, 2, Some(2))?;
        let found = member_with(
            ctx,
            "assoc-ref",
            &[args[1].clone(), args[0].clone()],
            span,
            equal,
            true,
        )?;
        Ok(match found {
            Value::Pair(p) => p.cdr.clone(),
            other => other,
        })
    });
    def(g, "delete", |_, args, span| {
        arity("delete", args, span, 2, Some(2))?;
        let items = list_arg("delete", 1, &args[1], span)?;
        Ok(Value::list(
            items
                .into_iter()
                .filter(|v| !equal(&args[0], v))
                .collect::<Vec<_>>(),
        ))
    });
    def(g, "delete-duplicates", |_, args, span| {
        arity("delete-duplicates", args, span, 1, Some(1))?;
        let mut out: Vec<Value> = Vec::new();
        for v in list_arg("delete-duplicates", 0, &args[0], span)? {
            if !out.iter().any(|o| equal(o, &v)) {
                out.push(v);
            }
        }
        Ok(Value::list(out))
    });

    // Higher-order procedures.
    def(g, "map", |ctx, args, span| {
        let mut out = Vec::new();
        map_over(ctx, "map", args, span, |_, r, _| {
            out.push(r);
            Ok(true)
        })?;
        Ok(Value::list(out))
    });
    def(g, "for-each", |ctx, args, span| {
        map_over(ctx, "for-each", args, span, |_, _, _| Ok(true))?;
        Ok(Value::Unspecified)
    });
    def(g, "append-map", |ctx, args, span| {
        let mut out = Vec::new();
        map_over(ctx, "append-map", args, span, |_, r, _| {
            out.extend(r.list_to_vec().ok_or_else(|| {
                type_error(
                    span,
                    format!(
                        "the procedure given to append-map must return lists, but it returned {}",
                        r.describe()
                    ),
                )
            })?);
            Ok(true)
        })?;
        Ok(Value::list(out))
    });
    def(g, "filter-map", |ctx, args, span| {
        let mut out = Vec::new();
        map_over(ctx, "filter-map", args, span, |_, r, _| {
            if r.is_true() {
                out.push(r);
            }
            Ok(true)
        })?;
        Ok(Value::list(out))
    });
    for (name, keep) in [("filter", true), ("remove", false)] {
        def(g, name, move |ctx, args, span| {
            arity(name, args, span, 2, Some(2))?;
            let mut out = Vec::new();
            map_over(ctx, name, args, span, |_, r, row| {
                if r.is_true() == keep {
                    out.push(row[0].clone());
                }
                Ok(true)
            })?;
            Ok(Value::list(out))
        });
    }
    def(g, "find", |ctx, args, span| {
        arity("find", args, span, 2, Some(2))?;
        let mut found = Value::Bool(false);
        map_over(ctx, "find", args, span, |_, r, row| {
            if r.is_true() {
                found = row[0].clone();
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    });
    def(g, "any", |ctx, args, span| {
        let mut found = Value::Bool(false);
        map_over(ctx, "any", args, span, |_, r, _| {
            if r.is_true() {
                found = r;
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    });
    def(g, "every", |ctx, args, span| {
        let mut last = Value::Bool(true);
        map_over(ctx, "every", args, span, |_, r, _| {
            let go_on = r.is_true();
            last = r;
            Ok(go_on)
        })?;
        Ok(last)
    });
    def(g, "count", |ctx, args, span| {
        let mut n = 0;
        map_over(ctx, "count", args, span, |_, r, _| {
            n += i64::from(r.is_true());
            Ok(true)
        })?;
        Ok(Value::Int(n))
    });
    for (name, right) in [("fold", false), ("fold-right", true)] {
        def(g, name, move |ctx, args, span| {
            arity(name, args, span, 3, Some(3))?;
            proc_arg(name, 0, &args[0], span)?;
            let mut items = list_arg(name, 2, &args[2], span)?;
            if right {
                items.reverse();
            }
            let mut acc = args[1].clone();
            for item in items {
                acc = ctx.call(&args[0], vec![item, acc], span)?;
            }
            Ok(acc)
        });
    }
    def(g, "reduce", |ctx, args, span| {
        arity("reduce", args, span, 3, Some(3))?;
        proc_arg("reduce", 0, &args[0], span)?;
        let mut items = list_arg("reduce", 2, &args[2], span)?.into_iter();
        let Some(mut acc) = items.next() else {
            return Ok(args[1].clone());
        };
        for item in items {
            acc = ctx.call(&args[0], vec![item, acc], span)?;
        }
        Ok(acc)
    });
    def(g, "sort", |ctx, args, span| {
        arity("sort", args, span, 2, Some(2))?;
        proc_arg("sort", 1, &args[1], span)?;
        let items = list_arg("sort", 0, &args[0], span)?;
        // Stable merge sort; the comparison may fail, so no slice::sort_by.
        let mut runs: Vec<Vec<Value>> = items.into_iter().map(|v| vec![v]).collect();
        while runs.len() > 1 {
            let mut merged = Vec::with_capacity(runs.len() / 2 + 1);
            let mut it = runs.into_iter();
            while let Some(a) = it.next() {
                let Some(b) = it.next() else {
                    merged.push(a);
                    break;
                };
                let mut out = Vec::with_capacity(a.len() + b.len());
                let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
                while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
                    if ctx
                        .call(&args[1], vec![y.clone(), x.clone()], span)?
                        .is_true()
                    {
                        out.extend(b.next());
                    } else {
                        out.extend(a.next());
                    }
                }
                out.extend(a);
                out.extend(b);
                merged.push(out);
            }
            runs = merged;
        }
        Ok(Value::list(runs.pop().unwrap_or_default()))
    });

    // Vectors.
    def(g, "vector", |_, args, _| Ok(Value::Vector(args.into())));
    def(g, "list->vector", |_, args, span| {
        arity("list->vector", args, span, 1, Some(1))?;
        Ok(Value::Vector(
            list_arg("list->vector", 0, &args[0], span)?.into(),
        ))
    });
    def(g, "vector->list", |_, args, span| {
        arity("vector->list", args, span, 1, Some(1))?;
        match &args[0] {
            Value::Vector(items) => Ok(Value::list(items.to_vec())),
            other => Err(bad_arg("vector->list", 0, "a vector", other, span)),
        }
    });
    def(g, "vector-length", |_, args, span| {
        arity("vector-length", args, span, 1, Some(1))?;
        match &args[0] {
            Value::Vector(items) => Ok(Value::Int(items.len() as i64)),
            other => Err(bad_arg("vector-length", 0, "a vector", other, span)),
        }
    });
    def(g, "vector-ref", |_, args, span| {
        arity("vector-ref", args, span, 2, Some(2))?;
        let k = int_arg("vector-ref", 1, &args[1], span)?;
        match &args[0] {
            Value::Vector(items) => usize::try_from(k)
                .ok()
                .and_then(|k| items.get(k).cloned())
                .ok_or_else(|| type_error(span, format!("vector-ref: index {k} is out of range"))),
            other => Err(bad_arg("vector-ref", 0, "a vector", other, span)),
        }
    });
}
