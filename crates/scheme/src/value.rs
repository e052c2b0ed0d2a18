//! Runtime values. Pairs, strings and vectors are immutable (no `set-car!`,
//! no `string-set!`): machines files never need mutation of data, and
//! without it data cannot form cycles.

use crate::compile::LambdaDef;
use crate::env::Env;
use crate::error::SchemeError;
use crate::eval::NativeCtx;
use crate::span::Span;
use std::any::Any;
use std::fmt;
use std::rc::Rc;

/// An interned-enough symbol or variable name.
pub type Sym = Rc<str>;

/// A Scheme value.
#[derive(Clone, Default)]
pub enum Value {
    /// What `define`, `for-each`, a one-armed `if` and the like return.
    #[default]
    Unspecified,
    /// The empty list `'()`.
    Nil,
    Bool(bool),
    /// Exact integers are 64-bit; overflow is an error (no bignums).
    Int(i64),
    /// Inexact numbers.
    Float(f64),
    Char(char),
    Str(Rc<str>),
    Symbol(Sym),
    /// `#:name`, stored without `#:`; self-evaluating, so natives can take
    /// keyword arguments.
    Keyword(Sym),
    Pair(Rc<Pair>),
    Vector(Rc<[Value]>),
    /// A procedure written in Scheme.
    Procedure(Rc<Closure>),
    /// A procedure written in Rust.
    Native(Rc<Native>),
    /// An opaque value owned by a native (a build-machine, a derivation).
    Host(Rc<dyn HostValue>),
}

/// A cons cell.
pub struct Pair {
    pub car: Value,
    pub cdr: Value,
}

/// Dropping a long list (or a deeply nested one) recursively would overflow
/// the stack; unlink uniquely owned pairs iteratively instead.
impl Drop for Pair {
    fn drop(&mut self) {
        let mut pending: Vec<Rc<Pair>> = Vec::new();
        for v in [std::mem::take(&mut self.car), std::mem::take(&mut self.cdr)] {
            if let Value::Pair(p) = v {
                pending.push(p);
            }
        }
        while let Some(p) = pending.pop() {
            if let Ok(mut pair) = Rc::try_unwrap(p) {
                for v in [std::mem::take(&mut pair.car), std::mem::take(&mut pair.cdr)] {
                    if let Value::Pair(p) = v {
                        pending.push(p);
                    }
                }
            }
        }
    }
}

/// A Scheme procedure: its code and the environment it closes over.
pub struct Closure {
    pub(crate) def: Rc<LambdaDef>,
    pub(crate) env: Option<Rc<Env>>,
}

impl Closure {
    pub fn name(&self) -> Option<&str> {
        self.def.name.as_deref()
    }
}

/// The signature of a procedure written in Rust: the context (to warn, read
/// the environment or call back into Scheme), the evaluated arguments
/// (keywords included, as [`Value::Keyword`]) and the span of the call.
pub type NativeFn = dyn Fn(&mut NativeCtx<'_>, &[Value], &Span) -> Result<Value, SchemeError>;

/// A procedure written in Rust.
pub struct Native {
    pub name: String,
    pub(crate) kind: NativeKind,
}

pub(crate) enum NativeKind {
    Fn(Box<NativeFn>),
    /// `apply` is handled by the evaluator so that it is a proper tail call.
    Apply,
}

impl Native {
    pub fn new(
        name: &str,
        f: impl Fn(&mut NativeCtx<'_>, &[Value], &Span) -> Result<Value, SchemeError> + 'static,
    ) -> Self {
        Native {
            name: name.to_string(),
            kind: NativeKind::Fn(Box::new(f)),
        }
    }
}

/// A value defined outside this crate and passed through Scheme untouched.
pub trait HostValue: Any {
    /// The type's name in messages ("derivation", "build-machine").
    fn type_name(&self) -> &str;
    /// How `write` and error messages show it.
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#<{}>", self.type_name())
    }
    /// For downcasting: `value.as_any().downcast_ref::<T>()`.
    fn as_any(&self) -> &dyn Any;
    /// `equal?` on two host values (`eq?` is pointer identity).
    fn host_equal(&self, _other: &dyn HostValue) -> bool {
        false
    }
}

impl Value {
    pub fn string(s: &str) -> Value {
        Value::Str(Rc::from(s))
    }

    pub fn symbol(s: &str) -> Value {
        Value::Symbol(Rc::from(s))
    }

    pub fn cons(car: Value, cdr: Value) -> Value {
        Value::Pair(Rc::new(Pair { car, cdr }))
    }

    /// A proper list of `items`.
    pub fn list(items: impl IntoIterator<Item = Value, IntoIter: DoubleEndedIterator>) -> Value {
        Self::list_with_tail(items, Value::Nil)
    }

    pub fn list_with_tail(
        items: impl IntoIterator<Item = Value, IntoIter: DoubleEndedIterator>,
        tail: Value,
    ) -> Value {
        items
            .into_iter()
            .rev()
            .fold(tail, |acc, v| Value::cons(v, acc))
    }

    /// Everything but `#f` is true.
    pub fn is_true(&self) -> bool {
        !matches!(self, Value::Bool(false))
    }

    /// The elements of a proper list; `None` for anything else.
    pub fn list_to_vec(&self) -> Option<Vec<Value>> {
        let mut out = Vec::new();
        let mut cur = self;
        loop {
            match cur {
                Value::Nil => return Some(out),
                Value::Pair(p) => {
                    out.push(p.car.clone());
                    cur = &p.cdr;
                }
                _ => return None,
            }
        }
    }

    pub fn is_list(&self) -> bool {
        let mut cur = self;
        loop {
            match cur {
                Value::Nil => return true,
                Value::Pair(p) => cur = &p.cdr,
                _ => return false,
            }
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The host value as `T`, if it is one.
    pub fn downcast_host<T: HostValue>(&self) -> Option<&T> {
        match self {
            Value::Host(h) => h.as_any().downcast_ref::<T>(),
            _ => None,
        }
    }

    pub fn is_procedure(&self) -> bool {
        matches!(self, Value::Procedure(_) | Value::Native(_))
    }

    /// The type's name as messages use it.
    pub fn type_name(&self) -> String {
        match self {
            Value::Unspecified => "unspecified value".into(),
            Value::Nil => "empty list".into(),
            Value::Bool(_) => "boolean".into(),
            Value::Int(_) => "integer".into(),
            Value::Float(_) => "number".into(),
            Value::Char(_) => "character".into(),
            Value::Str(_) => "string".into(),
            Value::Symbol(_) => "symbol".into(),
            Value::Keyword(_) => "keyword".into(),
            Value::Pair(_) => {
                if self.is_list() {
                    "list".into()
                } else {
                    "pair".into()
                }
            }
            Value::Vector(_) => "vector".into(),
            Value::Procedure(_) | Value::Native(_) => "procedure".into(),
            Value::Host(h) => h.type_name().to_string(),
        }
    }

    /// "the string \"fast\"", "the integer 3", "a build-machine record"...:
    /// what error messages say they got.
    pub fn describe(&self) -> String {
        let mut shown = self.to_string();
        if shown.chars().count() > 60 {
            shown = shown.chars().take(57).collect::<String>() + "...";
        }
        match self {
            Value::Unspecified => {
                "an unspecified value (such as what define or for-each return)".into()
            }
            Value::Nil => "the empty list '()".into(),
            Value::Bool(b) => format!("the boolean {}", if *b { "#t" } else { "#f" }),
            Value::Pair(_) => format!("the {} {shown}", self.type_name()),
            Value::Procedure(c) => match c.name() {
                Some(n) => format!("the procedure {n}"),
                None => "a procedure".into(),
            },
            Value::Native(n) => format!("the procedure {}", n.name),
            Value::Host(h) => format!("a {} record {shown}", h.type_name()),
            _ => format!("the {} {shown}", self.type_name()),
        }
    }

    /// `display` form: strings and characters without quotes.
    pub fn display_string(&self) -> String {
        match self {
            Value::Str(s) => s.to_string(),
            Value::Char(c) => c.to_string(),
            _ => {
                let mut out = String::new();
                let _ = write_value(&mut out, self, false, 0);
                out
            }
        }
    }
}

/// `eqv?`: identity for compound values, value equality for atoms.
pub fn eqv(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Unspecified, Value::Unspecified) | (Value::Nil, Value::Nil) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::Char(x), Value::Char(y)) => x == y,
        (Value::Symbol(x), Value::Symbol(y)) | (Value::Keyword(x), Value::Keyword(y)) => x == y,
        // Identity, as in Guile: use `equal?`/`member`/`assoc` for contents.
        (Value::Str(x), Value::Str(y)) => Rc::ptr_eq(x, y) || (x.is_empty() && y.is_empty()),
        (Value::Pair(x), Value::Pair(y)) => Rc::ptr_eq(x, y),
        (Value::Vector(x), Value::Vector(y)) => Rc::ptr_eq(x, y),
        (Value::Procedure(x), Value::Procedure(y)) => Rc::ptr_eq(x, y),
        (Value::Native(x), Value::Native(y)) => Rc::ptr_eq(x, y),
        (Value::Host(x), Value::Host(y)) => std::ptr::addr_eq(Rc::as_ptr(x), Rc::as_ptr(y)),
        _ => false,
    }
}

/// `equal?`: structural. Iterative, so deep data cannot overflow the stack.
pub fn equal(a: &Value, b: &Value) -> bool {
    let mut pending = vec![(a.clone(), b.clone())];
    while let Some((x, y)) = pending.pop() {
        match (&x, &y) {
            (Value::Str(p), Value::Str(q)) => {
                if p != q {
                    return false;
                }
            }
            (Value::Pair(p), Value::Pair(q)) => {
                if !Rc::ptr_eq(p, q) {
                    pending.push((p.cdr.clone(), q.cdr.clone()));
                    pending.push((p.car.clone(), q.car.clone()));
                }
            }
            (Value::Vector(p), Value::Vector(q)) => {
                if p.len() != q.len() {
                    return false;
                }
                pending.extend(p.iter().cloned().zip(q.iter().cloned()).rev());
            }
            (Value::Host(p), Value::Host(q)) => {
                if !eqv(&x, &y) && !p.host_equal(q.as_ref()) {
                    return false;
                }
            }
            _ => {
                if !eqv(&x, &y) {
                    return false;
                }
            }
        }
    }
    true
}

/// Guile's float syntax: `2.0`, `0.5`, `+inf.0`.
pub fn format_float(x: f64) -> String {
    if x.is_nan() {
        return "+nan.0".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "+inf.0".into()
        } else {
            "-inf.0".into()
        };
    }
    let s = format!("{x}");
    if s.contains(['.', 'e']) {
        s
    } else {
        s + ".0"
    }
}

pub(crate) fn write_string(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

pub(crate) fn write_char(f: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        ' ' => f.write_str("#\\space"),
        '\n' => f.write_str("#\\newline"),
        '\t' => f.write_str("#\\tab"),
        '\r' => f.write_str("#\\return"),
        '\0' => f.write_str("#\\nul"),
        c if c.is_control() => write!(f, "#\\x{:x}", c as u32),
        c => write!(f, "#\\{c}"),
    }
}

/// How deep `write` descends before printing `...` (keeps it off the end of
/// the stack on deeply nested data).
const MAX_WRITE_DEPTH: usize = 200;

struct HostShow<'a>(&'a dyn HostValue);

impl fmt::Display for HostShow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write(f)
    }
}

fn write_value(f: &mut impl fmt::Write, v: &Value, quoted: bool, depth: usize) -> fmt::Result {
    if depth > MAX_WRITE_DEPTH {
        return f.write_str("...");
    }
    match v {
        Value::Unspecified => f.write_str("#<unspecified>"),
        Value::Nil => f.write_str("()"),
        Value::Bool(b) => f.write_str(if *b { "#t" } else { "#f" }),
        Value::Int(i) => write!(f, "{i}"),
        Value::Float(x) => f.write_str(&format_float(*x)),
        Value::Char(c) => {
            if quoted {
                write_char(f, *c)
            } else {
                f.write_char(*c)
            }
        }
        Value::Str(s) => {
            if quoted {
                write_string(f, s)
            } else {
                f.write_str(s)
            }
        }
        Value::Symbol(s) => f.write_str(s),
        Value::Keyword(k) => write!(f, "#:{k}"),
        Value::Pair(p) => {
            // 'x for (quote x), as Guile prints it.
            if let (Value::Symbol(s), Value::Pair(rest)) = (&p.car, &p.cdr) {
                if matches!(rest.cdr, Value::Nil) {
                    let mark = match &**s {
                        "quote" => Some("'"),
                        "quasiquote" => Some("`"),
                        "unquote" => Some(","),
                        "unquote-splicing" => Some(",@"),
                        _ => None,
                    };
                    if let Some(mark) = mark {
                        f.write_str(mark)?;
                        return write_value(f, &rest.car, quoted, depth + 1);
                    }
                }
            }
            f.write_char('(')?;
            write_value(f, &p.car, quoted, depth + 1)?;
            let mut cur = &p.cdr;
            loop {
                match cur {
                    Value::Nil => break,
                    Value::Pair(q) => {
                        f.write_char(' ')?;
                        write_value(f, &q.car, quoted, depth + 1)?;
                        cur = &q.cdr;
                    }
                    other => {
                        f.write_str(" . ")?;
                        write_value(f, other, quoted, depth + 1)?;
                        break;
                    }
                }
            }
            f.write_char(')')
        }
        Value::Vector(items) => {
            f.write_str("#(")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_char(' ')?;
                }
                write_value(f, item, quoted, depth + 1)?;
            }
            f.write_char(')')
        }
        Value::Procedure(c) => match c.name() {
            Some(n) => write!(f, "#<procedure {n}>"),
            None => f.write_str("#<procedure>"),
        },
        Value::Native(n) => write!(f, "#<procedure {}>", n.name),
        Value::Host(h) => write!(f, "{}", HostShow(h.as_ref())),
    }
}

/// `write` form: what Guile's `write` prints (strings quoted).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value(f, self, true, 0)
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value(f, self, true, 0)
    }
}
