//! `cond` (with `=>` and `else`) and `case`, compiled into chains of `if`.

use super::{constant, datum_to_value, node, Compiler, Node, NodeKind};
use crate::datum::Datum;
use crate::error::{syntax_error, SchemeError};
use crate::span::Span;
use crate::value::Value;
use std::rc::Rc;

impl Compiler<'_> {
    pub(super) fn compile_cond(
        &mut self,
        clauses: &[Datum],
        span: &Span,
    ) -> Result<Rc<Node>, SchemeError> {
        let mut acc: Option<Rc<Node>> = None;
        for (i, clause) in clauses.iter().enumerate().rev() {
            let Some(parts) = clause.as_list().filter(|p| !p.is_empty()) else {
                return Err(syntax_error(
                    &clause.span,
                    "a cond clause must be a list: (TEST EXPR ...)",
                ));
            };
            let cs = &clause.span;
            if parts[0].as_symbol() == Some("else") {
                if i + 1 != clauses.len() {
                    return Err(syntax_error(
                        cs,
                        "the else clause must be the last clause of cond",
                    ));
                }
                acc = Some(self.sequence(&parts[1..], cs)?);
                continue;
            }
            let test = self.compile(&parts[0])?;
            let next = acc.take();
            acc = Some(match &parts[1..] {
                [] => {
                    let t = self.temp("cond");
                    let var = node(NodeKind::Var(t.clone()), cs);
                    let choice = node(NodeKind::If(var.clone(), var, next), cs);
                    self.bind_temp(&t, test, choice, cs)
                }
                [arrow, f] if arrow.as_symbol() == Some("=>") => {
                    let f = self.compile(f)?;
                    let t = self.temp("cond");
                    let var = node(NodeKind::Var(t.clone()), cs);
                    let call = node(NodeKind::Call(f, vec![var.clone()]), cs);
                    let choice = node(NodeKind::If(var, call, next), cs);
                    self.bind_temp(&t, test, choice, cs)
                }
                body => {
                    let body = self.sequence(body, cs)?;
                    node(NodeKind::If(test, body, next), cs)
                }
            });
        }
        Ok(acc.unwrap_or_else(|| constant(Value::Unspecified, span)))
    }

    pub(super) fn compile_case(
        &mut self,
        args: &[Datum],
        span: &Span,
    ) -> Result<Rc<Node>, SchemeError> {
        let Some((key, clauses)) = args.split_first() else {
            return Err(syntax_error(
                span,
                "malformed case: expected (case KEY ((DATUM ...) EXPR ...) ...)",
            ));
        };
        let key = self.compile(key)?;
        let t = self.temp("case");
        let var = node(NodeKind::Var(t.clone()), span);
        let mut acc: Option<Rc<Node>> = None;
        for (i, clause) in clauses.iter().enumerate().rev() {
            let cs = &clause.span;
            let Some(parts) = clause.as_list().filter(|p| !p.is_empty()) else {
                return Err(syntax_error(
                    cs,
                    "a case clause must be ((DATUM ...) EXPR ...) or (else EXPR ...)",
                ));
            };
            let body = match &parts[1..] {
                [arrow, f] if arrow.as_symbol() == Some("=>") => {
                    let f = self.compile(f)?;
                    node(NodeKind::Call(f, vec![var.clone()]), cs)
                }
                body => self.sequence(body, cs)?,
            };
            if parts[0].as_symbol() == Some("else") {
                if i + 1 != clauses.len() {
                    return Err(syntax_error(
                        cs,
                        "the else clause must be the last clause of case",
                    ));
                }
                acc = Some(body);
                continue;
            }
            let Some(data) = parts[0].as_list() else {
                return Err(syntax_error(
                    &parts[0].span,
                    "case clause data must be a list: ((DATUM ...) EXPR ...)",
                ));
            };
            let data = Value::list(data.iter().map(datum_to_value).collect::<Vec<_>>());
            let memv = constant(self.prims.memv.clone(), cs);
            let test = node(
                NodeKind::Call(memv, vec![var.clone(), constant(data, cs)]),
                cs,
            );
            acc = Some(node(NodeKind::If(test, body, acc.take()), cs));
        }
        let chain = acc.unwrap_or_else(|| constant(Value::Unspecified, span));
        Ok(self.bind_temp(&t, key, chain, span))
    }
}
