//! `(build-machine (field value) ...)`: fields checked against the known
//! ones (with "did you mean" hints) at compile time, compiled into a call
//! of the machine constructor.

use super::{constant, node, Compiler, LambdaDef, Node, NodeKind};
use crate::datum::Datum;
use crate::error::{syntax_error, SchemeError};
use crate::machine;
use crate::span::Span;
use crate::value::Sym;
use std::rc::Rc;

impl Compiler<'_> {
    pub(super) fn compile_build_machine(
        &mut self,
        clauses: &[Datum],
        span: &Span,
    ) -> Result<Rc<Node>, SchemeError> {
        let mut fields: Vec<(&'static str, Span)> = Vec::new();
        let mut args = Vec::new();
        let mut inherit = None;
        for clause in clauses {
            let cs = &clause.span;
            let parts = clause.as_list().unwrap_or(&[]);
            let Some(field) = parts.first().and_then(|p| p.as_symbol()) else {
                return Err(syntax_error(
                    cs,
                    format!("a build-machine field must be written (FIELD VALUE), got {clause}"),
                )
                .with_hint(format!(
                    "the fields are: {}",
                    machine::FIELD_NAMES.join(", ")
                )));
            };
            if parts.len() != 2 {
                return Err(syntax_error(cs, format!("field {field} of build-machine must have exactly one value, as in ({field} VALUE)")));
            }
            if field == "inherit" {
                if inherit.is_some() {
                    return Err(syntax_error(
                        cs,
                        "build-machine has more than one (inherit ...) clause",
                    ));
                }
                inherit = Some(self.compile(&parts[1])?);
                continue;
            }
            let Some(known) = machine::field_name(field) else {
                let mut err = syntax_error(
                    &parts[0].span,
                    format!("unknown field {field} in build-machine"),
                );
                let candidates = machine::FIELD_NAMES
                    .iter()
                    .copied()
                    .chain(["inherit", "system"]);
                let fields = machine::FIELD_NAMES.join(", ");
                err =
                    match crate::suggest::did_you_mean(&crate::suggest::closest(field, candidates))
                    {
                        Some(s) => err.with_hint(format!("{s} The fields are: {fields}")),
                        None => err.with_hint(format!("the fields are: {fields}")),
                    };
                return Err(err);
            };
            if fields.iter().any(|(f, _)| *f == known) {
                return Err(syntax_error(
                    cs,
                    format!("field {field} of build-machine is given twice"),
                ));
            }
            fields.push((known, cs.clone()));
            args.push(self.compile(&parts[1])?);
        }
        // As Guix's define-record-type*: the values are bound in order, as
        // by let*, so a field's value may use the fields written before it
        // (`(private-key (string-append "/k/" name))`).
        let has_inherit = inherit.is_some();
        let inherit_var = self.temp("inherit");
        let mut call_args: Vec<Rc<Node>> = Vec::new();
        if has_inherit {
            call_args.push(node(NodeKind::Var(inherit_var.clone()), span));
        }
        let names: Vec<Sym> = fields.iter().map(|(f, _)| Rc::from(*f)).collect();
        call_args.extend(names.iter().map(|n| node(NodeKind::Var(n.clone()), span)));
        let ctor = machine::constructor(fields, has_inherit, span.clone());
        let mut body = node(NodeKind::Call(constant(ctor, span), call_args), span);
        let bindings = inherit.map(|i| (inherit_var, i));
        for (name, value) in bindings
            .into_iter()
            .chain(names.into_iter().zip(args))
            .rev()
        {
            let def = LambdaDef {
                name: None,
                params: vec![name],
                rest: None,
                body,
                span: span.clone(),
            };
            body = node(
                NodeKind::Call(node(NodeKind::Lambda(Rc::new(def)), span), vec![value]),
                span,
            );
        }
        Ok(body)
    }
}
