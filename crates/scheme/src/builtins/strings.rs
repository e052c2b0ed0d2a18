//! Strings, characters, symbols, keywords and `format`.

use super::{arity, bad_arg, def, index_arg, list_arg, str_arg, Globals};
use crate::error::{type_error, SchemeError};
use crate::span::Span;
use crate::value::Value;
use std::rc::Rc;

fn char_arg(name: &str, index: usize, v: &Value, span: &Span) -> Result<char, SchemeError> {
    match v {
        Value::Char(c) => Ok(*c),
        _ => Err(bad_arg(name, index, "a character", v, span)),
    }
}

/// Guile's `format` with destination `#f` (return a string); `#t` (the
/// current output port) is accepted but the text is discarded, since the
/// library never prints. Directives: ~a ~s ~d ~b ~o ~x ~% ~~.
fn format(args: &[Value], span: &Span) -> Result<Value, SchemeError> {
    arity("format", args, span, 1, None)?;
    let (dest, template, rest) = match &args[0] {
        Value::Str(t) => (Value::Bool(false), t.clone(), &args[1..]),
        dest => match args.get(1) {
            Some(Value::Str(t)) => (dest.clone(), t.clone(), &args[2..]),
            Some(other) => return Err(bad_arg("format", 1, "a format string", other, span)),
            None => {
                return Err(type_error(
                    span,
                    "format needs a destination (#f) and a format string",
                ))
            }
        },
    };
    if !matches!(dest, Value::Bool(_)) {
        return Err(
            bad_arg("format", 0, "#f (return a string) or #t", &dest, span)
                .with_hint("write (format #f \"...\" ...) to build a string"),
        );
    }
    let mut out = String::new();
    let mut next = rest.iter();
    let mut chars = template.chars();
    let mut take = |directive: char| {
        next.next().ok_or_else(|| {
            type_error(span, format!("format string {template:?} has more directives than arguments (at ~{directive})"))
        })
    };
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('a' | 'A') => out.push_str(&take('a')?.display_string()),
            Some('s' | 'S') => out.push_str(&take('s')?.to_string()),
            Some(d @ ('d' | 'D' | 'b' | 'B' | 'o' | 'O' | 'x' | 'X')) => {
                let v = take(d)?;
                let radix = match d.to_ascii_lowercase() {
                    'b' => 2,
                    'o' => 8,
                    'x' => 16,
                    _ => 10,
                };
                match v {
                    Value::Int(i) if radix != 10 => out.push_str(&match radix {
                        2 => format!("{}{:b}", if *i < 0 { "-" } else { "" }, i.unsigned_abs()),
                        8 => format!("{}{:o}", if *i < 0 { "-" } else { "" }, i.unsigned_abs()),
                        _ => format!("{}{:x}", if *i < 0 { "-" } else { "" }, i.unsigned_abs()),
                    }),
                    Value::Int(_) | Value::Float(_) => out.push_str(&v.display_string()),
                    other => {
                        return Err(type_error(
                            span,
                            format!("format: ~{d} needs a number, got {}", other.describe()),
                        ))
                    }
                }
            }
            Some('%' | 'n') => out.push('\n'),
            Some('~') => out.push('~'),
            Some(other) => {
                return Err(
                    type_error(span, format!("format: unsupported directive ~{other}"))
                        .with_hint("supported: ~a ~s ~d ~b ~o ~x ~% ~~"),
                )
            }
            None => return Err(type_error(span, "format string ends with a lone ~")),
        }
    }
    if next.next().is_some() {
        return Err(type_error(
            span,
            format!("format string {template:?} has fewer directives than arguments"),
        ));
    }
    Ok(if dest.is_true() {
        Value::Unspecified
    } else {
        Value::string(&out)
    })
}

fn string_compare(name: &'static str, test: fn(&str, &str) -> bool, g: &mut Globals) {
    def(g, name, move |_, args, span| {
        arity(name, args, span, 1, None)?;
        let strs = args
            .iter()
            .enumerate()
            .map(|(i, a)| str_arg(name, i, a, span))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Value::Bool(strs.windows(2).all(|w| test(w[0], w[1]))))
    });
}

pub(super) fn install(g: &mut Globals) {
    def(g, "string-append", |_, args, span| {
        let mut out = String::new();
        for (i, a) in args.iter().enumerate() {
            out.push_str(str_arg("string-append", i, a, span)?);
        }
        Ok(Value::string(&out))
    });
    def(g, "format", |_, args, span| format(args, span));
    def(g, "simple-format", |_, args, span| format(args, span));
    string_compare("string=?", |a, b| a == b, g);
    string_compare("string<?", |a, b| a < b, g);
    string_compare("string>?", |a, b| a > b, g);
    string_compare("string<=?", |a, b| a <= b, g);
    string_compare("string>=?", |a, b| a >= b, g);
    string_compare(
        "string-ci=?",
        |a, b| a.to_lowercase() == b.to_lowercase(),
        g,
    );
    string_compare("string-prefix?", |p, s| s.starts_with(p), g);
    string_compare("string-suffix?", |p, s| s.ends_with(p), g);
    def(g, "string-contains", |_, args, span| {
        arity("string-contains", args, span, 2, Some(2))?;
        let hay = str_arg("string-contains", 0, &args[0], span)?;
        let needle = str_arg("string-contains", 1, &args[1], span)?;
        Ok(hay.find(needle).map_or(Value::Bool(false), |i| {
            Value::Int(hay[..i].chars().count() as i64)
        }))
    });
    def(g, "string-null?", |_, args, span| {
        arity("string-null?", args, span, 1, Some(1))?;
        Ok(Value::Bool(
            str_arg("string-null?", 0, &args[0], span)?.is_empty(),
        ))
    });
    def(g, "string-length", |_, args, span| {
        arity("string-length", args, span, 1, Some(1))?;
        Ok(Value::Int(
            str_arg("string-length", 0, &args[0], span)?.chars().count() as i64,
        ))
    });
    def(g, "substring", |_, args, span| {
        arity("substring", args, span, 2, Some(3))?;
        let chars: Vec<char> = str_arg("substring", 0, &args[0], span)?.chars().collect();
        let start = index_arg("substring", 1, &args[1], span)?;
        let end = match args.get(2) {
            Some(e) => index_arg("substring", 2, e, span)?,
            None => chars.len(),
        };
        if start > end || end > chars.len() {
            return Err(type_error(span, format!("substring: range {start}..{end} is out of bounds for a string of {} characters", chars.len())));
        }
        Ok(Value::string(&chars[start..end].iter().collect::<String>()))
    });
    def(g, "string-join", |_, args, span| {
        arity("string-join", args, span, 1, Some(3))?;
        let items = list_arg("string-join", 0, &args[0], span)?;
        let parts = items
            .iter()
            .map(|v| str_arg("string-join", 0, v, span))
            .collect::<Result<Vec<_>, _>>()?;
        let sep = match args.get(1) {
            Some(s) => str_arg("string-join", 1, s, span)?,
            None => " ",
        };
        let grammar = match args.get(2) {
            None => "infix".to_string(),
            Some(Value::Symbol(s)) => s.to_string(),
            Some(other) => {
                return Err(bad_arg(
                    "string-join",
                    2,
                    "a symbol (infix, suffix, prefix)",
                    other,
                    span,
                ))
            }
        };
        let joined = parts.join(sep);
        Ok(Value::string(&match grammar.as_str() {
            "infix" | "strict-infix" => joined,
            "suffix" if !parts.is_empty() => joined + sep,
            "prefix" if !parts.is_empty() => format!("{sep}{joined}"),
            _ => joined,
        }))
    });
    def(g, "string-split", |_, args, span| {
        arity("string-split", args, span, 2, Some(2))?;
        let s = str_arg("string-split", 0, &args[0], span)?;
        let c = char_arg("string-split", 1, &args[1], span)?;
        Ok(Value::list(
            s.split(c).map(Value::string).collect::<Vec<_>>(),
        ))
    });
    for (name, op) in [
        (
            "string-upcase",
            (|s: &str| s.to_uppercase()) as fn(&str) -> String,
        ),
        ("string-downcase", |s| s.to_lowercase()),
        ("string-trim", |s| s.trim_start().to_string()),
        ("string-trim-right", |s| s.trim_end().to_string()),
        ("string-trim-both", |s| s.trim().to_string()),
        ("string-copy", |s| s.to_string()),
    ] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, Some(1))?;
            Ok(Value::string(&op(str_arg(name, 0, &args[0], span)?)))
        });
    }
    def(g, "string", |_, args, span| {
        let chars = args
            .iter()
            .enumerate()
            .map(|(i, a)| char_arg("string", i, a, span))
            .collect::<Result<String, _>>()?;
        Ok(Value::string(&chars))
    });
    def(g, "string->list", |_, args, span| {
        arity("string->list", args, span, 1, Some(1))?;
        Ok(Value::list(
            str_arg("string->list", 0, &args[0], span)?
                .chars()
                .map(Value::Char)
                .collect::<Vec<_>>(),
        ))
    });
    def(g, "list->string", |_, args, span| {
        arity("list->string", args, span, 1, Some(1))?;
        let items = list_arg("list->string", 0, &args[0], span)?;
        let s = items
            .iter()
            .map(|v| char_arg("list->string", 0, v, span))
            .collect::<Result<String, _>>()?;
        Ok(Value::string(&s))
    });
    def(g, "string-ref", |_, args, span| {
        arity("string-ref", args, span, 2, Some(2))?;
        let s = str_arg("string-ref", 0, &args[0], span)?;
        let k = index_arg("string-ref", 1, &args[1], span)?;
        s.chars()
            .nth(k)
            .map(Value::Char)
            .ok_or_else(|| type_error(span, format!("string-ref: index {k} is out of range")))
    });
    def(g, "symbol->string", |_, args, span| {
        arity("symbol->string", args, span, 1, Some(1))?;
        match &args[0] {
            Value::Symbol(s) => Ok(Value::Str(Rc::from(&**s))),
            other => Err(bad_arg("symbol->string", 0, "a symbol", other, span)),
        }
    });
    def(g, "string->symbol", |_, args, span| {
        arity("string->symbol", args, span, 1, Some(1))?;
        Ok(Value::symbol(str_arg("string->symbol", 0, &args[0], span)?))
    });
    def(g, "keyword->symbol", |_, args, span| {
        arity("keyword->symbol", args, span, 1, Some(1))?;
        match &args[0] {
            Value::Keyword(k) => Ok(Value::Symbol(k.clone())),
            other => Err(bad_arg("keyword->symbol", 0, "a keyword", other, span)),
        }
    });
    def(g, "symbol->keyword", |_, args, span| {
        arity("symbol->keyword", args, span, 1, Some(1))?;
        match &args[0] {
            Value::Symbol(s) => Ok(Value::Keyword(s.clone())),
            other => Err(bad_arg("symbol->keyword", 0, "a symbol", other, span)),
        }
    });
    def(g, "char->integer", |_, args, span| {
        arity("char->integer", args, span, 1, Some(1))?;
        Ok(Value::Int(i64::from(u32::from(char_arg(
            "char->integer",
            0,
            &args[0],
            span,
        )?))))
    });
    def(g, "integer->char", |_, args, span| {
        arity("integer->char", args, span, 1, Some(1))?;
        let i = super::int_arg("integer->char", 0, &args[0], span)?;
        u32::try_from(i)
            .ok()
            .and_then(char::from_u32)
            .map(Value::Char)
            .ok_or_else(|| bad_arg("integer->char", 0, "a Unicode scalar value", &args[0], span))
    });
}
