//! Quasiquote at any nesting: unquoted parts compiled, the rest constant,
//! lists built with the built-in `list`/`append`.

use super::{constant, datum_to_value, node, Compiler, Node, NodeKind};
use crate::datum::{Datum, DatumKind};
use crate::error::SchemeError;
use crate::span::Span;
use crate::value::Value;
use std::rc::Rc;

impl Compiler<'_> {
    /// Quasiquote at nesting `level` (1 = outermost).
    pub(super) fn quasi(&mut self, d: &Datum, level: usize) -> Result<Rc<Node>, SchemeError> {
        let span = &d.span;
        if !has_unquote(d, level) {
            return Ok(constant(datum_to_value(d), span));
        }
        match &d.kind {
            DatumKind::List(items, tail) => {
                if let ([head, arg], None) = (items.as_slice(), tail) {
                    match head.as_symbol() {
                        Some("unquote") if level == 1 => return self.compile(arg),
                        Some(m @ ("unquote" | "unquote-splicing")) => {
                            let inner = self.quasi(arg, level - 1)?;
                            return Ok(
                                self.call_list(vec![constant(Value::symbol(m), span), inner], span)
                            );
                        }
                        Some("quasiquote") => {
                            let inner = self.quasi(arg, level + 1)?;
                            return Ok(self.call_list(
                                vec![constant(Value::symbol("quasiquote"), span), inner],
                                span,
                            ));
                        }
                        _ => {}
                    }
                }
                let mut segments = Vec::new();
                for item in items {
                    match item.as_list() {
                        Some([h, x]) if h.as_symbol() == Some("unquote-splicing") && level == 1 => {
                            segments.push(self.compile(x)?)
                        }
                        _ => {
                            let one = self.quasi(item, level)?;
                            segments.push(self.call_list(vec![one], &item.span));
                        }
                    }
                }
                segments.push(match tail {
                    Some(t) => self.quasi(t, level)?,
                    None => constant(Value::Nil, span),
                });
                Ok(node(
                    NodeKind::Call(constant(self.prims.append.clone(), span), segments),
                    span,
                ))
            }
            DatumKind::Vector(items) => {
                let as_list = Datum {
                    kind: DatumKind::List(items.clone(), None),
                    span: span.clone(),
                };
                let list = self.quasi(&as_list, level)?;
                Ok(node(
                    NodeKind::Call(
                        constant(self.prims.list_to_vector.clone(), span),
                        vec![list],
                    ),
                    span,
                ))
            }
            _ => Ok(constant(datum_to_value(d), span)),
        }
    }

    pub(super) fn call_list(&self, args: Vec<Rc<Node>>, span: &Span) -> Rc<Node> {
        node(
            NodeKind::Call(constant(self.prims.list.clone(), span), args),
            span,
        )
    }
}

/// Does `d` contain an unquote that belongs to the quasiquote at `level`?
pub(super) fn has_unquote(d: &Datum, level: usize) -> bool {
    match &d.kind {
        DatumKind::List(items, tail) => {
            if let ([head, arg], None) = (items.as_slice(), tail) {
                match head.as_symbol() {
                    Some("unquote" | "unquote-splicing") => {
                        return level == 1 || has_unquote(arg, level - 1)
                    }
                    Some("quasiquote") => return has_unquote(arg, level + 1),
                    _ => {}
                }
            }
            items.iter().any(|i| has_unquote(i, level))
                || tail.as_ref().is_some_and(|t| has_unquote(t, level))
        }
        DatumKind::Vector(items) => items.iter().any(|i| has_unquote(i, level)),
        _ => false,
    }
}
