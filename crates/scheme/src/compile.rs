//! The compiler: datums to a small core language (constants, variables,
//! `if`, `define`, `set!`, `lambda`, sequences and calls). Every derived form
//! (`let`, `cond`, `case`, `and`, quasiquote, `build-machine`...) is expanded
//! here once, so the evaluator stays small and every node keeps a span.
//!
//! Special-form names are reserved: binding a variable called `if` does not
//! turn `(if ...)` into a call. No macros.

use crate::datum::{Datum, DatumKind};
use crate::error::{syntax_error, SchemeError};
use crate::span::Span;
use crate::value::{Sym, Value};
use std::rc::Rc;

mod build_machine;
mod cond_case;
mod forms;
mod let_form;
mod pattern;
mod prims;
mod quasiquote;

pub(crate) use prims::Prims;

pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    pub(crate) span: Span,
}

pub(crate) enum NodeKind {
    Const(Value),
    /// A local, else a global.
    Var(Sym),
    /// `(@ (module ...) name)`: a global only; the module is for messages.
    Global(Sym, String),
    If(Rc<Node>, Rc<Node>, Option<Rc<Node>>),
    Define(Sym, Rc<Node>),
    Set(Sym, Rc<Node>),
    Lambda(Rc<LambdaDef>),
    Seq(Vec<Rc<Node>>),
    Call(Rc<Node>, Vec<Rc<Node>>),
}

pub(crate) struct LambdaDef {
    pub(crate) name: Option<String>,
    pub(crate) params: Vec<Sym>,
    pub(crate) rest: Option<Sym>,
    pub(crate) body: Rc<Node>,
    pub(crate) span: Span,
}

pub(crate) struct Compiler<'a> {
    pub(crate) prims: &'a Prims,
    pub(crate) gensym: &'a mut u64,
}

const SPECIAL_FORMS: &[&str] = &[
    "quote",
    "quasiquote",
    "unquote",
    "unquote-splicing",
    "lambda",
    "define",
    "define-public",
    "set!",
    "if",
    "let",
    "let*",
    "letrec",
    "letrec*",
    "cond",
    "case",
    "when",
    "unless",
    "and",
    "or",
    "begin",
    "build-machine",
    "@",
    "@@",
    "use-modules",
    "define-module",
    "match",
    "match-lambda",
    "match-lambda*",
    "match-let",
    "match-let*",
    "cut",
    "cute",
    "receive",
    "let-values",
    "let*-values",
    "do",
];

pub(crate) fn is_special_form(name: &str) -> bool {
    SPECIAL_FORMS.contains(&name)
}

fn node(kind: NodeKind, span: &Span) -> Rc<Node> {
    Rc::new(Node {
        kind,
        span: span.clone(),
    })
}

fn constant(v: Value, span: &Span) -> Rc<Node> {
    node(NodeKind::Const(v), span)
}

/// An anonymous procedure, as the derived forms (`compile/forms.rs`,
/// `compile/pattern.rs`) make them.
fn lambda_node(params: Vec<Sym>, rest: Option<Sym>, body: Rc<Node>, span: &Span) -> Rc<Node> {
    node(
        NodeKind::Lambda(Rc::new(LambdaDef {
            name: None,
            params,
            rest,
            body,
            span: span.clone(),
        })),
        span,
    )
}

/// The value a quoted datum denotes.
pub(crate) fn datum_to_value(d: &Datum) -> Value {
    match &d.kind {
        DatumKind::Bool(b) => Value::Bool(*b),
        DatumKind::Int(i) => Value::Int(*i),
        DatumKind::Float(x) => Value::Float(*x),
        DatumKind::Str(s) => Value::string(s),
        DatumKind::Char(c) => Value::Char(*c),
        DatumKind::Symbol(s) => Value::symbol(s),
        DatumKind::Keyword(k) => Value::Keyword(Rc::from(k.as_str())),
        DatumKind::List(items, tail) => {
            let tail = tail.as_ref().map_or(Value::Nil, |t| datum_to_value(t));
            Value::list_with_tail(items.iter().map(datum_to_value).collect::<Vec<_>>(), tail)
        }
        DatumKind::Vector(items) => Value::Vector(items.iter().map(datum_to_value).collect()),
    }
}

impl Compiler<'_> {
    fn temp(&mut self, what: &str) -> Sym {
        *self.gensym += 1;
        // The space makes it impossible to write in a source file.
        Rc::from(format!(" {what}{}", self.gensym).as_str())
    }

    /// `((lambda (tmp) body) init)`.
    fn bind_temp(&self, tmp: &Sym, init: Rc<Node>, body: Rc<Node>, span: &Span) -> Rc<Node> {
        let def = LambdaDef {
            name: None,
            params: vec![tmp.clone()],
            rest: None,
            body,
            span: span.clone(),
        };
        let lambda = node(NodeKind::Lambda(Rc::new(def)), span);
        node(NodeKind::Call(lambda, vec![init]), span)
    }

    pub(crate) fn compile(&mut self, d: &Datum) -> Result<Rc<Node>, SchemeError> {
        let span = &d.span;
        match &d.kind {
            DatumKind::Symbol(s) => Ok(node(NodeKind::Var(Rc::from(s.as_str())), span)),
            DatumKind::List(items, tail) => {
                if tail.is_some() {
                    return Err(syntax_error(
                        span,
                        "a dotted list like (f . x) cannot be evaluated",
                    )
                    .with_hint("quote it if it is data: '(a . b)"));
                }
                let Some(head) = items.first() else {
                    return Err(syntax_error(span, "() is not a valid expression")
                        .with_hint("write '() for the empty list"));
                };
                if let Some(name) = head.as_symbol() {
                    if is_special_form(name) {
                        return self.special(name, items, span);
                    }
                }
                let f = self.compile(head)?;
                let args = items[1..]
                    .iter()
                    .map(|a| self.compile(a))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(node(NodeKind::Call(f, args), span))
            }
            _ => Ok(constant(datum_to_value(d), span)),
        }
    }

    /// A body: definitions and expressions, evaluated in order.
    fn body(&mut self, forms: &[Datum], span: &Span, what: &str) -> Result<Rc<Node>, SchemeError> {
        if forms.is_empty() {
            return Err(syntax_error(span, format!("{what} has an empty body"))
                .with_hint("add at least one expression after the bindings or parameters"));
        }
        self.sequence(forms, span)
    }

    fn sequence(&mut self, forms: &[Datum], span: &Span) -> Result<Rc<Node>, SchemeError> {
        let mut nodes = forms
            .iter()
            .map(|f| self.compile(f))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match nodes.len() {
            0 => constant(Value::Unspecified, span),
            1 => nodes.remove(0),
            _ => node(NodeKind::Seq(nodes), span),
        })
    }

    fn lambda(
        &mut self,
        name: Option<String>,
        formals: &Datum,
        body: &[Datum],
        span: &Span,
    ) -> Result<Rc<Node>, SchemeError> {
        let (params, rest) = parse_formals(formals)?;
        let what = match &name {
            Some(n) => format!("procedure {n}"),
            None => "lambda".to_string(),
        };
        let body = self.body(body, span, &what)?;
        Ok(node(
            NodeKind::Lambda(Rc::new(LambdaDef {
                name,
                params,
                rest,
                body,
                span: span.clone(),
            })),
            span,
        ))
    }

    fn special(
        &mut self,
        name: &str,
        items: &[Datum],
        span: &Span,
    ) -> Result<Rc<Node>, SchemeError> {
        let args = &items[1..];
        let arity = |min: usize, max: Option<usize>, shape: &str| -> Result<(), SchemeError> {
            if args.len() < min || max.is_some_and(|m| args.len() > m) {
                Err(syntax_error(
                    span,
                    format!("malformed {name}: expected {shape}"),
                ))
            } else {
                Ok(())
            }
        };
        match name {
            "quote" => {
                arity(1, Some(1), "(quote DATUM)")?;
                Ok(constant(datum_to_value(&args[0]), span))
            }
            "quasiquote" => {
                arity(1, Some(1), "(quasiquote DATUM)")?;
                self.quasi(&args[0], 1)
            }
            "unquote" | "unquote-splicing" => Err(syntax_error(
                span,
                format!("{name} (',') outside of a quasiquote ('`')"),
            )),
            "lambda" => {
                arity(2, None, "(lambda (PARAM ...) BODY ...)")?;
                self.lambda(None, &args[0], &args[1..], span)
            }
            "define" | "define-public" => {
                arity(
                    1,
                    None,
                    "(define NAME VALUE) or (define (NAME PARAM ...) BODY ...)",
                )?;
                match &args[0].kind {
                    DatumKind::Symbol(var) => {
                        arity(1, Some(2), "(define NAME VALUE)")?;
                        let value = match args.get(1) {
                            Some(expr) => match expr.as_list() {
                                // Name lambdas after their variable, for messages.
                                Some([h, formals, body @ ..]) if h.as_symbol() == Some("lambda") && !body.is_empty() => {
                                    self.lambda(Some(var.clone()), formals, body, &expr.span)?
                                }
                                _ => self.compile(expr)?,
                            },
                            None => constant(Value::Unspecified, span),
                        };
                        Ok(node(NodeKind::Define(Rc::from(var.as_str()), value), span))
                    }
                    DatumKind::List(head, tail) if !head.is_empty() => {
                        let Some(fname) = head[0].as_symbol() else {
                            return Err(syntax_error(&head[0].span, "the procedure name in (define (NAME ...) ...) must be a symbol"));
                        };
                        let formals = Datum {
                            kind: DatumKind::List(head[1..].to_vec(), tail.clone()),
                            span: args[0].span.clone(),
                        };
                        let formals = if head.len() == 1 {
                            match tail {
                                Some(t) => (**t).clone(),
                                None => Datum { kind: DatumKind::List(vec![], None), span: args[0].span.clone() },
                            }
                        } else {
                            formals
                        };
                        let lambda = self.lambda(Some(fname.to_string()), &formals, &args[1..], span)?;
                        Ok(node(NodeKind::Define(Rc::from(fname), lambda), span))
                    }
                    _ => Err(syntax_error(span, "malformed define: expected (define NAME VALUE) or (define (NAME PARAM ...) BODY ...)")),
                }
            }
            "set!" => {
                arity(2, Some(2), "(set! NAME VALUE)")?;
                let Some(var) = args[0].as_symbol() else {
                    return Err(syntax_error(&args[0].span, "set! needs a variable name"));
                };
                let value = self.compile(&args[1])?;
                Ok(node(NodeKind::Set(Rc::from(var), value), span))
            }
            "if" => {
                arity(2, Some(3), "(if TEST THEN [ELSE])")?;
                let test = self.compile(&args[0])?;
                let then = self.compile(&args[1])?;
                let els = args.get(2).map(|e| self.compile(e)).transpose()?;
                Ok(node(NodeKind::If(test, then, els), span))
            }
            "begin" => self.sequence(args, span),
            "when" | "unless" => {
                arity(1, None, "(when TEST BODY ...)")?;
                let test = self.compile(&args[0])?;
                let body = self.sequence(&args[1..], span)?;
                let nothing = constant(Value::Unspecified, span);
                let (then, els) = if name == "when" {
                    (body, nothing)
                } else {
                    (nothing, body)
                };
                Ok(node(NodeKind::If(test, then, Some(els)), span))
            }
            "and" => {
                let Some((last, rest)) = args.split_last() else {
                    return Ok(constant(Value::Bool(true), span));
                };
                let mut acc = self.compile(last)?;
                for e in rest.iter().rev() {
                    let test = self.compile(e)?;
                    acc = node(
                        NodeKind::If(test, acc, Some(constant(Value::Bool(false), span))),
                        &e.span,
                    );
                }
                Ok(acc)
            }
            "or" => {
                let Some((last, rest)) = args.split_last() else {
                    return Ok(constant(Value::Bool(false), span));
                };
                let mut acc = self.compile(last)?;
                for e in rest.iter().rev() {
                    let test = self.compile(e)?;
                    let t = self.temp("or");
                    let var = node(NodeKind::Var(t.clone()), &e.span);
                    let choice = node(NodeKind::If(var.clone(), var, Some(acc)), &e.span);
                    acc = self.bind_temp(&t, test, choice, &e.span);
                }
                Ok(acc)
            }
            "let" => self.compile_let(args, span),
            "let*" => {
                arity(2, None, "(let* ((NAME VALUE) ...) BODY ...)")?;
                let bindings = parse_bindings(&args[0], "let*")?;
                let mut acc = self.body(&args[1..], span, "let*")?;
                if bindings.is_empty() {
                    let def = LambdaDef {
                        name: None,
                        params: vec![],
                        rest: None,
                        body: acc,
                        span: span.clone(),
                    };
                    return Ok(node(
                        NodeKind::Call(node(NodeKind::Lambda(Rc::new(def)), span), vec![]),
                        span,
                    ));
                }
                for (var, init) in bindings.iter().rev() {
                    let init = self.compile(init)?;
                    acc = self.bind_temp(var, init, acc, span);
                }
                Ok(acc)
            }
            "letrec" | "letrec*" => {
                arity(2, None, "(letrec ((NAME VALUE) ...) BODY ...)")?;
                let bindings = parse_bindings(&args[0], name)?;
                let mut nodes = Vec::new();
                for (var, init) in &bindings {
                    let value = self.named_value(var, init)?;
                    nodes.push(node(NodeKind::Define(var.clone(), value), &init.span));
                }
                nodes.push(self.body(&args[1..], span, name)?);
                let def = LambdaDef {
                    name: None,
                    params: vec![],
                    rest: None,
                    body: node(NodeKind::Seq(nodes), span),
                    span: span.clone(),
                };
                Ok(node(
                    NodeKind::Call(node(NodeKind::Lambda(Rc::new(def)), span), vec![]),
                    span,
                ))
            }
            "cond" => self.compile_cond(args, span),
            "case" => self.compile_case(args, span),
            "@" | "@@" => {
                let shape = format!("({name} (MODULE ...) NAME)");
                arity(2, Some(2), &shape)?;
                let (Some(_), Some(var)) = (args[0].as_list(), args[1].as_symbol()) else {
                    return Err(syntax_error(
                        span,
                        format!("malformed {name}: expected {shape}"),
                    ));
                };
                Ok(node(
                    NodeKind::Global(Rc::from(var), args[0].to_string()),
                    span,
                ))
            }
            // Modules: everything is already in scope.
            "use-modules" | "define-module" => Ok(constant(Value::Unspecified, span)),
            "build-machine" => self.compile_build_machine(args, span),
            "match" | "match-lambda" | "match-lambda*" | "match-let" | "match-let*" => {
                self.compile_match_form(name, args, span)
            }
            "cut" | "cute" => self.compile_cut(name, args, span),
            "receive" => self.compile_receive(args, span),
            "let-values" | "let*-values" => self.compile_let_values(name, args, span),
            "do" => self.compile_do(args, span),
            _ => Err(syntax_error(
                span,
                format!("unsupported special form {name}"),
            )),
        }
    }
}

/// `(a b)`, `(a . rest)`, `args`.
fn parse_formals(formals: &Datum) -> Result<(Vec<Sym>, Option<Sym>), SchemeError> {
    let bad =
        |d: &Datum| syntax_error(&d.span, format!("parameter names must be symbols, got {d}"));
    let mut params: Vec<Sym> = Vec::new();
    let rest = match &formals.kind {
        DatumKind::Symbol(s) => return Ok((vec![], Some(Rc::from(s.as_str())))),
        DatumKind::List(items, tail) => {
            for item in items {
                let Some(s) = item.as_symbol() else {
                    return Err(bad(item));
                };
                if params.iter().any(|p| &**p == s) {
                    return Err(syntax_error(
                        &item.span,
                        format!("parameter {s} appears twice"),
                    ));
                }
                params.push(Rc::from(s));
            }
            match tail {
                None => None,
                Some(t) => Some(Rc::from(t.as_symbol().ok_or_else(|| bad(t))?)),
            }
        }
        _ => return Err(bad(formals)),
    };
    Ok((params, rest))
}

fn parse_bindings<'d>(d: &'d Datum, form: &str) -> Result<Vec<(Sym, &'d Datum)>, SchemeError> {
    let Some(items) = d.as_list() else {
        return Err(syntax_error(
            &d.span,
            format!("{form} bindings must be a list: ((NAME VALUE) ...)"),
        ));
    };
    items
        .iter()
        .map(|b| match b.as_list() {
            Some([name, init]) => match name.as_symbol() {
                Some(n) => Ok((Rc::from(n), init)),
                None => Err(syntax_error(
                    &name.span,
                    format!("{form} binds {name}, which is not a symbol"),
                )),
            },
            _ => Err(syntax_error(
                &b.span,
                format!("a {form} binding must be (NAME VALUE), got {b}"),
            )),
        })
        .collect()
}

/// The special forms' names, for "did you mean" hints.
pub(crate) fn special_form_names() -> impl Iterator<Item = &'static str> {
    SPECIAL_FORMS.iter().copied()
}
