//! The rest of SRFI-1 that machines files reach for (`take`, `drop`,
//! `take-while`, `partition`, `list-index`...), Guile's `assq-ref` and
//! `assv-ref`, and character and string helpers (`char-upcase`,
//! `string-index`, `string-pad`...).

use super::{arity, bad_arg, def, index_arg, list_arg, proc_arg, str_arg, Globals};
use crate::error::{type_error, SchemeError};
use crate::span::Span;
use crate::value::{eqv, Value};

fn char_arg(name: &str, index: usize, v: &Value, span: &Span) -> Result<char, SchemeError> {
    match v {
        Value::Char(c) => Ok(*c),
        _ => Err(bad_arg(name, index, "a character", v, span)),
    }
}

/// `(take LIST K)` needs K elements.
fn split(name: &str, args: &[Value], span: &Span) -> Result<(Vec<Value>, Value), SchemeError> {
    arity(name, args, span, 2, Some(2))?;
    let k = index_arg(name, 1, &args[1], span)?;
    let mut head = Vec::new();
    let mut cur = args[0].clone();
    for _ in 0..k {
        cur = match &cur {
            Value::Pair(p) => {
                head.push(p.car.clone());
                p.cdr.clone()
            }
            _ => {
                return Err(type_error(
                    span,
                    format!(
                        "{name}: the list {} has fewer than {k} elements",
                        args[0].describe()
                    ),
                ))
            }
        };
    }
    Ok((head, cur))
}

/// `(values a b)`.
fn values2(a: Value, b: Value) -> Value {
    super::control::multiple_values(vec![a, b])
}

pub(super) fn install(g: &mut Globals) {
    def(g, "take", |_, args, span| {
        Ok(Value::list(split("take", args, span)?.0))
    });
    def(g, "list-head", |_, args, span| {
        Ok(Value::list(split("list-head", args, span)?.0))
    });
    def(g, "drop", |_, args, span| Ok(split("drop", args, span)?.1));
    def(g, "split-at", |_, args, span| {
        let (head, tail) = split("split-at", args, span)?;
        Ok(values2(Value::list(head), tail))
    });
    for (name, take) in [("take-while", true), ("drop-while", false)] {
        def(g, name, move |ctx, args, span| {
            arity(name, args, span, 2, Some(2))?;
            proc_arg(name, 0, &args[0], span)?;
            let items = list_arg(name, 1, &args[1], span)?;
            let mut n = 0;
            for item in &items {
                if !ctx.call(&args[0], vec![item.clone()], span)?.is_true() {
                    break;
                }
                n += 1;
            }
            let (head, tail) = items.split_at(n);
            Ok(Value::list(if take { head } else { tail }.to_vec()))
        });
    }
    def(g, "partition", |ctx, args, span| {
        arity("partition", args, span, 2, Some(2))?;
        proc_arg("partition", 0, &args[0], span)?;
        let (mut yes, mut no) = (Vec::new(), Vec::new());
        for item in list_arg("partition", 1, &args[1], span)? {
            if ctx.call(&args[0], vec![item.clone()], span)?.is_true() {
                yes.push(item);
            } else {
                no.push(item);
            }
        }
        Ok(values2(Value::list(yes), Value::list(no)))
    });
    def(g, "list-index", |ctx, args, span| {
        arity("list-index", args, span, 2, None)?;
        proc_arg("list-index", 0, &args[0], span)?;
        let lists = args[1..]
            .iter()
            .enumerate()
            .map(|(i, l)| list_arg("list-index", i + 1, l, span))
            .collect::<Result<Vec<_>, _>>()?;
        let n = lists.iter().map(Vec::len).min().unwrap_or(0);
        for i in 0..n {
            let row = lists.iter().map(|l| l[i].clone()).collect();
            if ctx.call(&args[0], row, span)?.is_true() {
                return Ok(Value::Int(i as i64));
            }
        }
        Ok(Value::Bool(false))
    });
    def(g, "last-pair", |_, args, span| {
        arity("last-pair", args, span, 1, Some(1))?;
        let mut cur = args[0].clone();
        loop {
            let next = match &cur {
                Value::Pair(p) if matches!(p.cdr, Value::Pair(_)) => p.cdr.clone(),
                Value::Pair(_) => return Ok(cur),
                other => return Err(bad_arg("last-pair", 0, "a pair", other, span)),
            };
            cur = next;
        }
    });
    def(g, "append-reverse", |_, args, span| {
        arity("append-reverse", args, span, 2, Some(2))?;
        let mut items = list_arg("append-reverse", 0, &args[0], span)?;
        items.reverse();
        Ok(Value::list_with_tail(items, args[1].clone()))
    });
    def(g, "concatenate", |_, args, span| {
        arity("concatenate", args, span, 1, Some(1))?;
        let lists = list_arg("concatenate", 0, &args[0], span)?;
        let Some((last, init)) = lists.split_last() else {
            return Ok(Value::Nil);
        };
        let mut items = Vec::new();
        for l in init {
            items.extend(list_arg("concatenate", 0, l, span)?);
        }
        Ok(Value::list_with_tail(items, last.clone()))
    });
    for name in ["assq-ref", "assv-ref"] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 2, Some(2))?;
            for entry in list_arg(name, 0, &args[0], span)? {
                match &entry {
                    Value::Pair(p) if eqv(&p.car, &args[1]) => return Ok(p.cdr.clone()),
                    Value::Pair(_) => {}
                    other => return Err(bad_arg(name, 0, "a list of pairs", other, span)),
                }
            }
            Ok(Value::Bool(false))
        });
    }

    // Characters.
    for (name, op) in [
        (
            "char-upcase",
            (|c: char| c.to_uppercase().next().unwrap_or(c)) as fn(char) -> char,
        ),
        ("char-downcase", |c| c.to_lowercase().next().unwrap_or(c)),
    ] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, Some(1))?;
            Ok(Value::Char(op(char_arg(name, 0, &args[0], span)?)))
        });
    }
    for (name, test) in [
        ("char-alphabetic?", char::is_alphabetic as fn(char) -> bool),
        ("char-numeric?", char::is_numeric),
        ("char-whitespace?", char::is_whitespace),
        ("char-upper-case?", char::is_uppercase),
        ("char-lower-case?", char::is_lowercase),
    ] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, Some(1))?;
            Ok(Value::Bool(test(char_arg(name, 0, &args[0], span)?)))
        });
    }
    for (name, cmp) in [
        (
            "char=?",
            (|a: char, b: char| a == b) as fn(char, char) -> bool,
        ),
        ("char<?", |a, b| a < b),
        ("char>?", |a, b| a > b),
    ] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, None)?;
            let cs = args
                .iter()
                .enumerate()
                .map(|(i, a)| char_arg(name, i, a, span))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Value::Bool(cs.windows(2).all(|w| cmp(w[0], w[1]))))
        });
    }

    // Strings: (string-index S PRED-OR-CHAR), from the left or the right.
    for (name, from_right) in [("string-index", false), ("string-rindex", true)] {
        def(g, name, move |ctx, args, span| {
            arity(name, args, span, 2, Some(2))?;
            let chars: Vec<char> = str_arg(name, 0, &args[0], span)?.chars().collect();
            let mut order: Vec<usize> = (0..chars.len()).collect();
            if from_right {
                order.reverse();
            }
            for i in order {
                let hit = match &args[1] {
                    Value::Char(c) => chars[i] == *c,
                    f if f.is_procedure() => {
                        ctx.call(f, vec![Value::Char(chars[i])], span)?.is_true()
                    }
                    other => {
                        return Err(bad_arg(name, 1, "a character or a predicate", other, span))
                    }
                };
                if hit {
                    return Ok(Value::Int(i as i64));
                }
            }
            Ok(Value::Bool(false))
        });
    }
    // (string-pad S LEN [CHAR]) keeps the right end; string-pad-right the left.
    for (name, right) in [("string-pad", false), ("string-pad-right", true)] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 2, Some(3))?;
            let chars: Vec<char> = str_arg(name, 0, &args[0], span)?.chars().collect();
            let len = index_arg(name, 1, &args[1], span)?;
            if len > 1 << 20 {
                return Err(type_error(
                    span,
                    format!("{name}: length {len} is too large"),
                ));
            }
            let fill = match args.get(2) {
                Some(c) => char_arg(name, 2, c, span)?,
                None => ' ',
            };
            let n = chars.len();
            let out: String = if right {
                chars
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(fill))
                    .take(len)
                    .collect()
            } else if n >= len {
                chars[n - len..].iter().collect()
            } else {
                std::iter::repeat_n(fill, len - n)
                    .chain(chars.iter().copied())
                    .collect()
            };
            Ok(Value::string(&out))
        });
    }
}
