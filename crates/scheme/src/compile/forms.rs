//! Guile's other common derived forms, expanded into the core: SRFI-26
//! `cut`/`cute`, multiple values (`receive` from SRFI-8, `let-values`,
//! `let*-values`) and `do` loops.
//!
//! Multiple values are a list in disguise: `values` (a built-in) returns
//! its single argument, or a host value holding several; the forms here
//! turn what an expression returned into a list (` values->list`) and
//! `apply` a lambda to it, which the evaluator runs as a tail call.

use super::{constant, lambda_node, node, parse_formals, Compiler, Node, NodeKind};
use crate::datum::Datum;
use crate::error::{syntax_error, SchemeError};
use crate::span::Span;
use crate::value::Sym;
use std::rc::Rc;

type Res = Result<Rc<Node>, SchemeError>;

fn var(s: &Sym, span: &Span) -> Rc<Node> {
    node(NodeKind::Var(s.clone()), span)
}

impl Compiler<'_> {
    /// `(apply (lambda FORMALS BODY...) (values->list values))`.
    fn apply_to_values(
        &mut self,
        formals: &Datum,
        values: Rc<Node>,
        body: Rc<Node>,
        span: &Span,
    ) -> Res {
        let (params, rest) = parse_formals(formals)?;
        let f = lambda_node(params, rest, body, span);
        Ok(node(
            NodeKind::Call(constant(self.prims.apply.clone(), span), vec![f, values]),
            span,
        ))
    }

    fn values_list(&self, expr: Rc<Node>, span: &Span) -> Rc<Node> {
        node(
            NodeKind::Call(constant(self.prims.values_list.clone(), span), vec![expr]),
            span,
        )
    }

    pub(super) fn compile_receive(&mut self, args: &[Datum], span: &Span) -> Res {
        let [formals, expr, body @ ..] = args else {
            return Err(syntax_error(
                span,
                "malformed receive: expected (receive (NAME ...) EXPR BODY ...)",
            ));
        };
        let body = self.body(body, span, "receive")?;
        let expr = self.compile(expr)?;
        let values = self.values_list(expr, span);
        self.apply_to_values(formals, values, body, span)
    }

    /// `let-values` (every EXPR first) and `let*-values` (in order).
    pub(super) fn compile_let_values(&mut self, name: &str, args: &[Datum], span: &Span) -> Res {
        let malformed = || {
            syntax_error(
                span,
                format!("malformed {name}: expected ({name} (((NAME ...) EXPR) ...) BODY ...)"),
            )
        };
        let (Some(bindings), true) = (args.first().and_then(Datum::as_list), args.len() > 1) else {
            return Err(malformed());
        };
        let mut pairs = Vec::new();
        for b in bindings {
            match b.as_list() {
                Some([formals, expr]) => pairs.push((formals, expr)),
                _ => return Err(malformed()),
            }
        }
        let mut acc = self.body(&args[1..], span, name)?;
        if name == "let*-values" {
            for (formals, expr) in pairs.iter().rev() {
                let expr = self.compile(expr)?;
                let values = self.values_list(expr, span);
                acc = self.apply_to_values(formals, values, acc, span)?;
            }
            return Ok(acc);
        }
        let temps: Vec<Sym> = pairs.iter().map(|_| self.temp("values")).collect();
        for ((formals, _), t) in pairs.iter().zip(&temps).rev() {
            acc = self.apply_to_values(formals, var(t, span), acc, span)?;
        }
        for ((_, expr), t) in pairs.iter().zip(&temps).rev() {
            let expr = self.compile(expr)?;
            let values = self.values_list(expr, span);
            acc = self.bind_temp(t, values, acc, span);
        }
        Ok(acc)
    }

    /// SRFI-26: `(cut f <> x <...>)` is `(lambda (a . rest) (apply f a x
    /// rest))`; `cute` evaluates the non-slot expressions once, first.
    pub(super) fn compile_cut(&mut self, name: &str, args: &[Datum], span: &Span) -> Res {
        if args.is_empty() {
            return Err(syntax_error(
                span,
                format!("malformed {name}: expected ({name} PROCEDURE ARG ...) with <> slots"),
            ));
        }
        let mut params = Vec::new();
        let mut rest = None;
        let mut parts = Vec::new();
        let mut once = Vec::new();
        for (i, a) in args.iter().enumerate() {
            match a.as_symbol() {
                Some("<>") => {
                    let p = self.temp("slot");
                    parts.push(var(&p, &a.span));
                    params.push(p);
                }
                Some("<...>") => {
                    if i + 1 != args.len() || i == 0 {
                        return Err(syntax_error(
                            &a.span,
                            format!("<...> must be the last argument of {name}"),
                        ));
                    }
                    rest = Some(self.temp("rest"));
                }
                _ => {
                    let e = self.compile(a)?;
                    if name == "cute" && !matches!(e.kind, NodeKind::Const(_)) {
                        let t = self.temp("cute");
                        parts.push(var(&t, &a.span));
                        once.push((t, e));
                    } else {
                        parts.push(e);
                    }
                }
            }
        }
        let f = parts.remove(0);
        let call = match &rest {
            Some(r) => {
                let mut all = vec![f];
                all.extend(parts);
                all.push(var(r, span));
                node(
                    NodeKind::Call(constant(self.prims.apply.clone(), span), all),
                    span,
                )
            }
            None => node(NodeKind::Call(f, parts), span),
        };
        let mut out = lambda_node(params, rest, call, span);
        for (t, e) in once.into_iter().rev() {
            out = self.bind_temp(&t, e, out, span);
        }
        Ok(out)
    }

    /// `(do ((VAR INIT [STEP]) ...) (TEST RESULT ...) BODY ...)`: a loop
    /// procedure called in tail position, as a named let.
    pub(super) fn compile_do(&mut self, args: &[Datum], span: &Span) -> Res {
        let malformed = || {
            syntax_error(
                span,
                "malformed do: expected (do ((VAR INIT [STEP]) ...) (TEST RESULT ...) BODY ...)",
            )
        };
        let (Some(specs), Some(end)) = (
            args.first().and_then(Datum::as_list),
            args.get(1).and_then(Datum::as_list),
        ) else {
            return Err(malformed());
        };
        let Some((test, results)) = end.split_first() else {
            return Err(malformed());
        };
        let mut params: Vec<Sym> = Vec::new();
        let mut inits = Vec::new();
        let mut steps = Vec::new();
        for s in specs {
            let (name, init, step) = match s.as_list() {
                Some([n, i]) => (n, i, None),
                Some([n, i, st]) => (n, i, Some(st)),
                _ => return Err(malformed()),
            };
            let Some(v) = name.as_symbol() else {
                return Err(malformed());
            };
            let v: Sym = Rc::from(v);
            inits.push(self.compile(init)?);
            steps.push(match step {
                Some(st) => self.compile(st)?,
                None => var(&v, span),
            });
            params.push(v);
        }
        let lp = self.temp("do");
        let test = self.compile(test)?;
        let done = self.sequence(results, span)?;
        let mut body = args[2..]
            .iter()
            .map(|b| self.compile(b))
            .collect::<Result<Vec<_>, _>>()?;
        body.push(node(NodeKind::Call(var(&lp, span), steps), span));
        let again = node(NodeKind::Seq(body), span);
        let proc = lambda_node(
            params,
            None,
            node(NodeKind::If(test, done, Some(again)), span),
            span,
        );
        let define = node(NodeKind::Define(lp.clone(), proc), span);
        let scope = lambda_node(
            vec![],
            None,
            node(NodeKind::Seq(vec![define, var(&lp, span)]), span),
            span,
        );
        let make = node(NodeKind::Call(scope, vec![]), span);
        Ok(node(NodeKind::Call(make, inits), span))
    }
}
