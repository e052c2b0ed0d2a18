//! `(ice-9 match)`: `match`, `match-lambda`, `match-lambda*`, `match-let`
//! and `match-let*`, the way Guix's own code and machines files take data
//! apart. Patterns are expanded here into the core language (`if`, local
//! bindings, calls of the built-in `car`/`cdr`/`pair?`/`equal?`...), so
//! matching is ordinary evaluation: it counts against the step budget and
//! keeps every node's span.
//!
//! Supported patterns: literals (numbers, strings, booleans, characters,
//! keywords, `()`), `_`, pattern variables (a variable seen twice must match
//! `equal?` values), `'DATUM`, lists `(p ...)`, dotted `(p . rest)`, a
//! trailing ellipsis `(p q ...)` / `___` / `..1` (each variable of `q` is
//! bound to the list of its matches), `#(p ...)`, `(? pred p ...)`,
//! `(= proc p)`, `(and p ...)`, `(or p ...)` and `(not p)`. Anything else
//! (`$` records, `(=> fail)`, quasi-patterns) is a clear syntax error. A
//! value no clause matches is the error "no matching pattern for VALUE" at
//! the `match` form, as Guile's `match-error`.
//!
//! Each clause after the first is a thunk that the previous clause calls
//! when it fails, so failing is a call (a step), never backtracking in Rust.

use super::{constant, datum_to_value, lambda_node, node, Compiler, Node, NodeKind};
use crate::datum::{Datum, DatumKind};
use crate::error::{syntax_error, SchemeError};
use crate::span::Span;
use crate::value::{Sym, Value};
use std::rc::Rc;

/// What to compile once a pattern has matched; it sees the variables bound
/// so far.
type Cont<'d> =
    Box<dyn FnOnce(&mut Compiler<'_>, &mut Vec<Sym>) -> Result<Rc<Node>, SchemeError> + 'd>;

type Res = Result<Rc<Node>, SchemeError>;

fn var(s: &Sym, span: &Span) -> Rc<Node> {
    node(NodeKind::Var(s.clone()), span)
}

fn is_ellipsis(d: &Datum) -> bool {
    matches!(d.as_symbol(), Some("..." | "___" | "..1"))
}

/// The most parts (datums) one pattern may have: patterns are compiled
/// recursively, and real ones are small.
const MAX_PATTERN_PARTS: usize = 100;

fn pattern_parts(p: &Datum) -> usize {
    match &p.kind {
        DatumKind::List(items, tail) => {
            1 + items.iter().map(pattern_parts).sum::<usize>()
                + tail.as_deref().map_or(0, pattern_parts)
        }
        DatumKind::Vector(items) => 1 + items.iter().map(pattern_parts).sum::<usize>(),
        _ => 1,
    }
}

/// Refuses patterns too big to compile safely.
fn check_size(p: &Datum) -> Result<(), SchemeError> {
    if pattern_parts(p) > MAX_PATTERN_PARTS {
        return Err(syntax_error(
            &p.span,
            format!("this match pattern has more than {MAX_PATTERN_PARTS} parts, more than Ferry's Scheme subset compiles"),
        )
        .with_hint("match a long list with an ellipsis, (x ...), or split the pattern"));
    }
    Ok(())
}

/// The head symbols that make a list pattern something other than a list.
fn special_head(items: &[Datum]) -> Option<&str> {
    let head = items.first()?.as_symbol()?;
    matches!(
        head,
        "quote"
            | "?"
            | "="
            | "and"
            | "or"
            | "not"
            | "quasiquote"
            | "$"
            | "struct"
            | "object"
            | "get!"
            | "set!"
            | "=>"
    )
    .then_some(head)
}

/// The pattern variables of `p`, in order of first appearance.
fn pattern_vars(p: &Datum, out: &mut Vec<Sym>) {
    match &p.kind {
        DatumKind::Symbol(s)
            if !matches!(s.as_str(), "_" | "..." | "___" | "..1")
                && !out.iter().any(|o| **o == **s) =>
        {
            out.push(Rc::from(s.as_str()));
        }
        DatumKind::List(items, tail) => {
            let sub = match special_head(items) {
                Some("quote" | "not") => &[][..],
                Some("?" | "=") => items.get(2..).unwrap_or(&[]),
                Some(_) => &items[1..],
                None => &items[..],
            };
            for item in sub {
                pattern_vars(item, out);
            }
            if let (None, Some(t)) = (special_head(items), tail) {
                pattern_vars(t, out);
            }
        }
        DatumKind::Vector(items) => items.iter().for_each(|i| pattern_vars(i, out)),
        _ => {}
    }
}

/// `(match EXPR (PATTERN BODY ...) ...)`'s clauses.
fn parse_clauses<'d>(
    clauses: &'d [Datum],
    form: &str,
) -> Result<Vec<(&'d Datum, &'d [Datum])>, SchemeError> {
    clauses
        .iter()
        .map(|c| match c.as_list() {
            Some([pat, body @ ..]) if !body.is_empty() => {
                check_size(pat)?;
                if let Some([arrow, _]) = body[0].as_list() {
                    if arrow.as_symbol() == Some("=>") {
                        return Err(syntax_error(
                            &body[0].span,
                            "(=> FAIL) in a match clause is not supported by Ferry's Scheme subset",
                        )
                        .with_hint("write the test as a (? PREDICATE) pattern instead"));
                    }
                }
                Ok((pat, body))
            }
            _ => Err(syntax_error(
                &c.span,
                format!("a {form} clause must be (PATTERN BODY ...), got {c}"),
            )),
        })
        .collect()
}

impl Compiler<'_> {
    fn prim(&self, f: &Value, args: Vec<Rc<Node>>, span: &Span) -> Rc<Node> {
        node(NodeKind::Call(constant(f.clone(), span), args), span)
    }

    /// `match`, `match-lambda`, `match-lambda*`, `match-let`, `match-let*`.
    pub(super) fn compile_match_form(&mut self, name: &str, args: &[Datum], span: &Span) -> Res {
        match name {
            "match" => {
                let Some((expr, clauses)) = args.split_first() else {
                    return Err(syntax_error(
                        span,
                        "malformed match: expected (match EXPR (PATTERN BODY ...) ...)",
                    ));
                };
                let value = self.compile(expr)?;
                let clauses = parse_clauses(clauses, name)?;
                self.match_clauses(value, &clauses, span)
            }
            "match-lambda" | "match-lambda*" => {
                let clauses = parse_clauses(args, name)?;
                let x = self.temp("arg");
                let body = self.match_clauses(var(&x, span), &clauses, span)?;
                Ok(if name == "match-lambda" {
                    lambda_node(vec![x], None, body, span)
                } else {
                    lambda_node(vec![], Some(x), body, span)
                })
            }
            _ => {
                let malformed = || {
                    syntax_error(
                        span,
                        format!(
                            "malformed {name}: expected ({name} ((PATTERN EXPR) ...) BODY ...)"
                        ),
                    )
                };
                let (Some(bindings), true) =
                    (args.first().and_then(Datum::as_list), args.len() > 1)
                else {
                    return Err(malformed());
                };
                let mut pairs = Vec::new();
                for b in bindings {
                    match b.as_list() {
                        Some([pat, expr]) => {
                            check_size(pat)?;
                            pairs.push((pat, expr))
                        }
                        _ => return Err(malformed()),
                    }
                }
                // Each binding is matched on its own (its own variables),
                // built from the innermost out so that long binding lists
                // do not recurse: match-let* evaluates each EXPR after the
                // patterns before it; match-let evaluates every EXPR first.
                let star = name == "match-let*";
                let temps: Vec<Sym> = pairs.iter().map(|_| self.temp("mlet")).collect();
                let mut out = self.body(&args[1..], span, name)?;
                for ((pat, expr), t) in pairs.iter().zip(&temps).rev() {
                    let fail = self.prim(&self.prims.match_error, vec![var(t, span)], span);
                    let rest = out;
                    out = self.pat(
                        pat,
                        var(t, span),
                        &mut Vec::new(),
                        &fail,
                        Box::new(move |_, _| Ok(rest)),
                    )?;
                    if star {
                        let init = self.compile(expr)?;
                        out = self.bind_temp(t, init, out, span);
                    }
                }
                if !star {
                    for ((_, expr), t) in pairs.iter().zip(&temps).rev() {
                        let init = self.compile(expr)?;
                        out = self.bind_temp(t, init, out, span);
                    }
                }
                Ok(out)
            }
        }
    }

    /// Tries `clauses` in order on `value`; none matching is a match error
    /// at `span`.
    fn match_clauses(
        &mut self,
        value: Rc<Node>,
        clauses: &[(&Datum, &[Datum])],
        span: &Span,
    ) -> Res {
        let v = self.temp("match");
        let x = var(&v, span);
        let error = self.prim(&self.prims.match_error, vec![x.clone()], span);
        let body = self.first_success(clauses.len(), error, span, |c, i, fail| {
            let (pat, body) = clauses[i];
            let s = pat.span.clone();
            c.pat(
                pat,
                x.clone(),
                &mut Vec::new(),
                fail,
                Box::new(move |c, _| c.body(body, &s, "match clause")),
            )
        })?;
        Ok(self.bind_temp(&v, value, body, span))
    }

    /// The first of `n` alternatives that succeeds: alternative `i` is
    /// built with the node to evaluate when it fails (the next one, or
    /// `last_fail`).
    fn first_success(
        &mut self,
        n: usize,
        last_fail: Rc<Node>,
        span: &Span,
        mut build: impl FnMut(&mut Self, usize, &Rc<Node>) -> Res,
    ) -> Res {
        let mut fail = last_fail;
        let mut thunks = Vec::new();
        for i in (0..n).rev() {
            let alt = build(self, i, &fail)?;
            if i == 0 {
                fail = alt;
            } else {
                let t = self.temp("fail");
                thunks.push((t.clone(), lambda_node(vec![], None, alt, span)));
                fail = node(NodeKind::Call(var(&t, span), vec![]), span);
            }
        }
        let mut out = fail;
        for (t, thunk) in thunks.into_iter().rev() {
            out = self.bind_temp(&t, thunk, out, span);
        }
        Ok(out)
    }

    /// Matches `p` against `x` (a variable): on success `k`, else `fail`.
    fn pat<'d>(
        &mut self,
        p: &'d Datum,
        x: Rc<Node>,
        bound: &mut Vec<Sym>,
        fail: &Rc<Node>,
        k: Cont<'d>,
    ) -> Res {
        let span = &p.span;
        match &p.kind {
            DatumKind::Symbol(s) => match s.as_str() {
                "_" => k(self, bound),
                "..." | "___" | "..1" => Err(syntax_error(
                    span,
                    format!(
                        "{s} in a match pattern must follow a pattern inside a list, as in (x ...)"
                    ),
                )),
                _ => {
                    let name: Sym = Rc::from(s.as_str());
                    if bound.contains(&name) {
                        let same = self.prim(&self.prims.equal, vec![var(&name, span), x], span);
                        let then = k(self, bound)?;
                        return Ok(node(NodeKind::If(same, then, Some(fail.clone())), span));
                    }
                    bound.push(name.clone());
                    let body = k(self, bound)?;
                    Ok(self.bind_temp(&name, x, body, span))
                }
            },
            DatumKind::List(items, tail) => match (special_head(items), tail) {
                (Some(head), None) => self.special_pat(head, &items[1..], p, x, bound, fail, k),
                _ => self.pat_list(items, tail.as_deref(), x, bound, fail, k),
            },
            DatumKind::Vector(items) => {
                let is_vector = self.prim(&self.prims.vector_p, vec![x.clone()], span);
                let l = self.temp("vec");
                let inner = self.pat_list(items, None, var(&l, span), bound, fail, k)?;
                let as_list = self.prim(&self.prims.vector_to_list, vec![x], span);
                let then = self.bind_temp(&l, as_list, inner, span);
                Ok(node(
                    NodeKind::If(is_vector, then, Some(fail.clone())),
                    span,
                ))
            }
            _ => {
                let lit = constant(datum_to_value(p), span);
                self.test(self.prims.equal.clone(), vec![x, lit], fail, span, |c| {
                    k(c, bound)
                })
            }
        }
    }

    /// `(if (f args...) (k) fail)`.
    fn test(
        &mut self,
        f: Value,
        args: Vec<Rc<Node>>,
        fail: &Rc<Node>,
        span: &Span,
        then: impl FnOnce(&mut Self) -> Res,
    ) -> Res {
        let test = self.prim(&f, args, span);
        let then = then(self)?;
        Ok(node(NodeKind::If(test, then, Some(fail.clone())), span))
    }

    #[allow(clippy::too_many_arguments)]
    fn special_pat<'d>(
        &mut self,
        head: &str,
        args: &'d [Datum],
        p: &'d Datum,
        x: Rc<Node>,
        bound: &mut Vec<Sym>,
        fail: &Rc<Node>,
        k: Cont<'d>,
    ) -> Res {
        let span = &p.span;
        match (head, args) {
            ("quote", [d]) => {
                let lit = constant(datum_to_value(d), span);
                self.test(self.prims.equal.clone(), vec![x, lit], fail, span, |c| k(c, bound))
            }
            ("?", [pred, rest @ ..]) => {
                let pred = self.compile(pred)?;
                let test = node(NodeKind::Call(pred, vec![x.clone()]), span);
                let then = self.pat_all(rest, x, bound, fail, k)?;
                Ok(node(NodeKind::If(test, then, Some(fail.clone())), span))
            }
            ("=", [proc, sub]) => {
                let proc = self.compile(proc)?;
                let y = self.temp("view");
                let inner = self.pat(sub, var(&y, span), bound, fail, k)?;
                let init = node(NodeKind::Call(proc, vec![x]), span);
                Ok(self.bind_temp(&y, init, inner, span))
            }
            ("and", alts) => self.pat_all(alts, x, bound, fail, k),
            ("or", []) => Ok(fail.clone()),
            ("or", [one]) => self.pat(one, x, bound, fail, k),
            ("or", alts) => {
                let mut vars = Vec::new();
                pattern_vars(&alts[0], &mut vars);
                vars.retain(|v| !bound.contains(v));
                for alt in &alts[1..] {
                    let mut other = Vec::new();
                    pattern_vars(alt, &mut other);
                    other.retain(|v| !bound.contains(v));
                    if other.len() != vars.len() || other.iter().any(|v| !vars.contains(v)) {
                        return Err(syntax_error(
                            &alt.span,
                            "every alternative of an (or ...) pattern must bind the same variables",
                        ));
                    }
                }
                let kv = self.temp("or");
                let call_k = node(
                    NodeKind::Call(var(&kv, span), vars.iter().map(|v| var(v, span)).collect()),
                    span,
                );
                let outer = bound.clone();
                let choice = self.first_success(alts.len(), fail.clone(), span, |c, i, f| {
                    let call_k = call_k.clone();
                    c.pat(&alts[i], x.clone(), &mut outer.clone(), f, Box::new(move |_, _| Ok(call_k)))
                })?;
                bound.extend(vars.iter().cloned());
                let rest = k(self, bound)?;
                Ok(self.bind_temp(&kv, lambda_node(vars, None, rest, span), choice, span))
            }
            ("not", [sub]) => {
                let s = self.temp("not");
                let rest = k(self, bound)?;
                let go_on = node(NodeKind::Call(var(&s, span), vec![]), span);
                let failed = fail.clone();
                let inner =
                    self.pat(sub, x, &mut bound.clone(), &go_on, Box::new(move |_, _| Ok(failed)))?;
                Ok(self.bind_temp(&s, lambda_node(vec![], None, rest, span), inner, span))
            }
            _ => Err(syntax_error(
                span,
                format!("the match pattern {p} is not supported by Ferry's Scheme subset"),
            )
            .with_hint(
                "supported: literals, _, variables, 'datum, (p ...), (p . rest), (p ...) with a trailing ellipsis, #(p ...), (? pred p ...), (= proc p), (and p ...), (or p ...), (not p)",
            )),
        }
    }

    /// Every pattern of `ps` against the same `x`.
    fn pat_all<'d>(
        &mut self,
        ps: &'d [Datum],
        x: Rc<Node>,
        bound: &mut Vec<Sym>,
        fail: &Rc<Node>,
        k: Cont<'d>,
    ) -> Res {
        let Some((first, rest)) = ps.split_first() else {
            return k(self, bound);
        };
        let (x2, fail2) = (x.clone(), fail.clone());
        self.pat(
            first,
            x,
            bound,
            fail,
            Box::new(move |c, b| c.pat_all(rest, x2, b, &fail2, k)),
        )
    }

    /// The list pattern `(items ... . tail)` against `x`.
    fn pat_list<'d>(
        &mut self,
        items: &'d [Datum],
        tail: Option<&'d Datum>,
        x: Rc<Node>,
        bound: &mut Vec<Sym>,
        fail: &Rc<Node>,
        k: Cont<'d>,
    ) -> Res {
        let span = &x.span.clone();
        let Some((first, rest)) = items.split_first() else {
            return match tail {
                Some(t) => self.pat(t, x, bound, fail, k),
                None => self.test(self.prims.null_p.clone(), vec![x], fail, span, |c| {
                    k(c, bound)
                }),
            };
        };
        if let Some(dots) = rest.first().filter(|d| is_ellipsis(d)) {
            if rest.len() > 1 || tail.is_some() {
                return Err(syntax_error(
                    &dots.span,
                    format!("Ferry's match supports {dots} only at the end of a list pattern"),
                ));
            }
            let at_least_one = dots.as_symbol() == Some("..1");
            return self.ellipsis(first, at_least_one, x, bound, fail, k);
        }
        let (a, d) = (self.temp("car"), self.temp("cdr"));
        let fail2 = fail.clone();
        let d_var = var(&d, span);
        let inner = self.pat(
            first,
            var(&a, span),
            bound,
            fail,
            Box::new(move |c, b| c.pat_list(rest, tail, d_var, b, &fail2, k)),
        )?;
        let car = self.prim(&self.prims.car, vec![x.clone()], span);
        let cdr = self.prim(&self.prims.cdr, vec![x.clone()], span);
        let inner = self.bind_temp(&d, cdr, inner, span);
        let then = self.bind_temp(&a, car, inner, span);
        let is_pair = self.prim(&self.prims.pair_p, vec![x], span);
        Ok(node(NodeKind::If(is_pair, then, Some(fail.clone())), span))
    }

    /// `(q ...)`: `x` is a list whose every element matches `q`; each
    /// variable of `q` is bound to the list of its values.
    fn ellipsis<'d>(
        &mut self,
        q: &'d Datum,
        at_least_one: bool,
        x: Rc<Node>,
        bound: &mut Vec<Sym>,
        fail: &Rc<Node>,
        k: Cont<'d>,
    ) -> Res {
        let span = &q.span;
        let list_test = if at_least_one {
            self.prims.nonempty_list_p.clone()
        } else {
            self.prims.list_p.clone()
        };
        if let Some(s) = q.as_symbol() {
            // The common case, (x ...): a list test, no loop.
            return self.test(list_test, vec![x.clone()], fail, span, |c| {
                if s == "_" {
                    return k(c, bound);
                }
                let name: Sym = Rc::from(s);
                bound.push(name.clone());
                let body = k(c, bound)?;
                Ok(c.bind_temp(&name, x, body, span))
            });
        }
        let mut vars = Vec::new();
        pattern_vars(q, &mut vars);
        let (lp, l, e) = (self.temp("loop"), self.temp("l"), self.temp("elt"));
        let accs: Vec<Sym> = vars.iter().map(|_| self.temp("acc")).collect();
        // One element: match it, then loop on the rest with each variable
        // consed onto its accumulator.
        let mut next = vec![self.prim(&self.prims.cdr, vec![var(&l, span)], span)];
        for (v, acc) in vars.iter().zip(&accs) {
            next.push(self.prim(&self.prims.cons, vec![var(v, span), var(acc, span)], span));
        }
        let recur = node(NodeKind::Call(var(&lp, span), next), span);
        let one = self.pat(
            q,
            var(&e, span),
            &mut Vec::new(),
            fail,
            Box::new(move |_, _| Ok(recur)),
        )?;
        let car = self.prim(&self.prims.car, vec![var(&l, span)], span);
        let one = self.bind_temp(&e, car, one, span);
        let is_pair = self.prim(&self.prims.pair_p, vec![var(&l, span)], span);
        let step = node(NodeKind::If(is_pair, one, Some(fail.clone())), span);
        // The end: bind each variable to its matches, in order.
        bound.extend(vars.iter().cloned());
        let mut done = k(self, bound)?;
        for (v, acc) in vars.iter().zip(&accs).rev() {
            let values = self.prim(&self.prims.reverse, vec![var(acc, span)], span);
            done = self.bind_temp(v, values, done, span);
        }
        let is_null = self.prim(&self.prims.null_p, vec![var(&l, span)], span);
        let body = node(NodeKind::If(is_null, done, Some(step)), span);
        let mut params = vec![l];
        params.extend(accs);
        let define = node(
            NodeKind::Define(lp.clone(), lambda_node(params, None, body, span)),
            span,
        );
        let mut start = vec![x.clone()];
        start.extend(vars.iter().map(|_| constant(Value::Nil, span)));
        let call = node(NodeKind::Call(var(&lp, span), start), span);
        let scope = lambda_node(
            vec![],
            None,
            node(NodeKind::Seq(vec![define, call]), span),
            span,
        );
        let run = node(NodeKind::Call(scope, vec![]), span);
        if at_least_one {
            let is_pair = self.prim(&self.prims.pair_p, vec![x], span);
            return Ok(node(NodeKind::If(is_pair, run, Some(fail.clone())), span));
        }
        Ok(run)
    }
}
