//! The reader's output: data as written, each with its span.

use crate::span::Span;
use std::fmt;

/// One datum as read, with the position of its first character.
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    pub kind: DatumKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DatumKind {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Char(char),
    Symbol(String),
    /// `#:name`, stored without the `#:`.
    Keyword(String),
    /// `(a b c)` has `tail: None`; `(a b . c)` has `tail: Some(c)`.
    /// `'x` is read as `(quote x)`, and likewise for the other quote marks.
    List(Vec<Datum>, Option<Box<Datum>>),
    Vector(Vec<Datum>),
}

impl Datum {
    pub fn as_symbol(&self) -> Option<&str> {
        match &self.kind {
            DatumKind::Symbol(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of a proper list, if this is one.
    pub fn as_list(&self) -> Option<&[Datum]> {
        match &self.kind {
            DatumKind::List(items, None) => Some(items),
            _ => None,
        }
    }
}

impl fmt::Display for Datum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DatumKind::Bool(b) => f.write_str(if *b { "#t" } else { "#f" }),
            DatumKind::Int(i) => write!(f, "{i}"),
            DatumKind::Float(x) => f.write_str(&crate::value::format_float(*x)),
            DatumKind::Str(s) => crate::value::write_string(f, s),
            DatumKind::Char(c) => crate::value::write_char(f, *c),
            DatumKind::Symbol(s) => f.write_str(s),
            DatumKind::Keyword(k) => write!(f, "#:{k}"),
            DatumKind::List(items, tail) => {
                f.write_str("(")?;
                for (i, d) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{d}")?;
                }
                if let Some(t) = tail {
                    write!(f, " . {t}")?;
                }
                f.write_str(")")
            }
            DatumKind::Vector(items) => {
                f.write_str("#(")?;
                for (i, d) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{d}")?;
                }
                f.write_str(")")
            }
        }
    }
}
