//! `let` (plain and named) compiled into lambdas and calls, and the
//! naming of a bound lambda after its variable (for messages).

use super::{node, parse_bindings, Compiler, LambdaDef, Node, NodeKind};
use crate::datum::{Datum, DatumKind};
use crate::error::{syntax_error, SchemeError};
use crate::span::Span;
use crate::value::Sym;
use std::rc::Rc;

impl Compiler<'_> {
    /// Compiles `init`, naming it `var` if it is a lambda.
    pub(super) fn named_value(&mut self, var: &Sym, init: &Datum) -> Result<Rc<Node>, SchemeError> {
        match init.as_list() {
            Some([h, formals, body @ ..])
                if h.as_symbol() == Some("lambda") && !body.is_empty() =>
            {
                self.lambda(Some(var.to_string()), formals, body, &init.span)
            }
            _ => self.compile(init),
        }
    }

    pub(super) fn compile_let(
        &mut self,
        args: &[Datum],
        span: &Span,
    ) -> Result<Rc<Node>, SchemeError> {
        if let Some(Datum {
            kind: DatumKind::Symbol(loop_name),
            ..
        }) = args.first()
        {
            // Named let: ((letrec ((NAME (lambda (VAR ...) BODY ...))) NAME) INIT ...)
            if args.len() < 3 {
                return Err(syntax_error(
                    span,
                    "malformed named let: expected (let NAME ((VAR INIT) ...) BODY ...)",
                ));
            }
            let bindings = parse_bindings(&args[1], "let")?;
            let mut params = Vec::new();
            let mut inits = Vec::new();
            for (var, init) in &bindings {
                params.push(var.clone());
                inits.push(self.compile(init)?);
            }
            let body = self.body(&args[2..], span, "named let")?;
            let name: Sym = Rc::from(loop_name.as_str());
            let proc = LambdaDef {
                name: Some(loop_name.clone()),
                params,
                rest: None,
                body,
                span: span.clone(),
            };
            let define = node(
                NodeKind::Define(name.clone(), node(NodeKind::Lambda(Rc::new(proc)), span)),
                span,
            );
            let scope_body = node(
                NodeKind::Seq(vec![define, node(NodeKind::Var(name), span)]),
                span,
            );
            let scope = LambdaDef {
                name: None,
                params: vec![],
                rest: None,
                body: scope_body,
                span: span.clone(),
            };
            let make = node(
                NodeKind::Call(node(NodeKind::Lambda(Rc::new(scope)), span), vec![]),
                span,
            );
            return Ok(node(NodeKind::Call(make, inits), span));
        }
        if args.len() < 2 {
            return Err(syntax_error(
                span,
                "malformed let: expected (let ((NAME VALUE) ...) BODY ...)",
            ));
        }
        let bindings = parse_bindings(&args[0], "let")?;
        let mut params: Vec<Sym> = Vec::new();
        let mut inits = Vec::new();
        for (var, init) in &bindings {
            if params.contains(var) {
                return Err(syntax_error(&init.span, format!("let binds {var} twice")));
            }
            params.push(var.clone());
            inits.push(self.named_value(var, init)?);
        }
        let body = self.body(&args[1..], span, "let")?;
        let def = LambdaDef {
            name: None,
            params,
            rest: None,
            body,
            span: span.clone(),
        };
        Ok(node(
            NodeKind::Call(node(NodeKind::Lambda(Rc::new(def)), span), inits),
            span,
        ))
    }
}
