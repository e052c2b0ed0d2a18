//! The evaluator: an explicit-stack machine over compiled nodes.
//!
//! Pending work lives in a heap `Vec<Frame>`, not on the Rust stack, so deep
//! recursion in Scheme is bounded by [`Limits::max_depth`] and reported as an
//! error; calls in tail position push nothing, so loops run in constant
//! space. Every procedure application is a step counted against
//! [`Limits::max_steps`] (any loop or recursion goes through applications),
//! and the clock is checked every few thousand steps against
//! [`Limits::timeout`].
//!
//! Natives that call back into Scheme (`map`, `filter`...) re-enter the
//! machine through [`NativeCtx::call`]; that nesting is limited to
//! [`MAX_NATIVE_NESTING`] levels so it cannot exhaust the Rust stack either.

use crate::builtins;
use crate::compile::{Compiler, LambdaDef, Node, NodeKind, Prims};
use crate::env::{Env, EvalContext, Limits};
use crate::error::{type_error, ErrorKind, SchemeError, Warning};
use crate::reader::read_all;
use crate::span::Span;
use crate::suggest::{closest, did_you_mean};
use crate::value::{Closure, Native, NativeKind, Sym, Value};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Instant;

/// How many times natives may re-enter the evaluator inside one another
/// (a `map` whose procedure calls `map` ... ).
pub const MAX_NATIVE_NESTING: usize = 100;

mod native_ctx;

pub use native_ctx::NativeCtx;

/// How often (in steps) the wall clock is read; a power of two.
const CLOCK_EVERY: u64 = 4096;

enum Frame {
    /// Waiting for the test of an `If` node.
    If(Rc<Node>, Option<Rc<Env>>),
    Define(Rc<Node>, Option<Rc<Env>>),
    Set(Rc<Node>, Option<Rc<Env>>),
    /// Waiting for element `idx - 1` of a `Seq` node; `idx` is next.
    Seq(Rc<Node>, usize, Option<Rc<Env>>),
    /// Evaluating operator and operands of a `Call` node; `vals` holds those
    /// done so far (operator first), `idx` the next operand.
    Call {
        node: Rc<Node>,
        idx: usize,
        vals: Vec<Value>,
        env: Option<Rc<Env>>,
    },
}

enum State {
    Eval(Rc<Node>, Option<Rc<Env>>),
    Return(Value),
    Apply(Value, Vec<Value>, Span),
}

/// A Scheme interpreter: global definitions, the evaluation context and the
/// warnings collected so far. Not `Send` (values use `Rc`): create one per
/// evaluation, on the thread that uses the result.
pub struct Interpreter {
    globals: HashMap<Sym, Value>,
    ctx: EvalContext,
    warnings: Vec<Warning>,
    stack: Vec<Frame>,
    steps: u64,
    deadline: Instant,
    started: Instant,
    native_nesting: usize,
    prims: Prims,
    gensym: u64,
    /// Local frames that hold procedures, which close over the frame: a
    /// reference cycle. They are emptied on drop so nothing leaks.
    closure_frames: Vec<Weak<Env>>,
    closure_frames_pruned: usize,
    /// The last top-level form evaluated, for errors about the file's value.
    last_form: Option<Span>,
}

impl Interpreter {
    /// An interpreter with the built-in procedures and `build-machine`.
    pub fn new(ctx: EvalContext) -> Self {
        let mut globals = HashMap::new();
        builtins::install(&mut globals);
        let prims = Prims::from_globals(&globals);
        let now = Instant::now();
        Interpreter {
            globals,
            ctx,
            warnings: Vec::new(),
            stack: Vec::new(),
            steps: 0,
            deadline: now,
            started: now,
            native_nesting: 0,
            prims,
            gensym: 0,
            closure_frames: Vec::new(),
            closure_frames_pruned: 0,
            last_form: None,
        }
    }

    /// Defines (or replaces) a global procedure written in Rust. Arguments
    /// arrive evaluated; keywords (`#:builder`) arrive as [`Value::Keyword`]
    /// (see [`crate::split_keywords`]).
    pub fn define_native(
        &mut self,
        name: &str,
        f: impl Fn(&mut NativeCtx<'_>, &[Value], &Span) -> Result<Value, SchemeError> + 'static,
    ) {
        self.define(name, Value::Native(Rc::new(Native::new(name, f))));
    }

    /// Defines (or replaces) a global variable.
    pub fn define(&mut self, name: &str, value: Value) {
        self.globals.insert(Rc::from(name), value);
    }

    /// The value of a global variable.
    pub fn global(&self, name: &str) -> Option<Value> {
        self.globals.get(name).cloned()
    }

    pub fn context(&self) -> &EvalContext {
        &self.ctx
    }

    /// Warnings collected so far, oldest first.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    pub fn take_warnings(&mut self) -> Vec<Warning> {
        std::mem::take(&mut self.warnings)
    }

    /// Reads and evaluates every top-level form of `source` in order and
    /// returns the value of the last one (unspecified if there is none).
    /// The step budget and the deadline apply to the whole call.
    pub fn eval_file(&mut self, source: &str, file: &str) -> Result<Value, SchemeError> {
        let data = read_all(source, file)?;
        self.steps = 0;
        self.started = Instant::now();
        self.deadline = self.started + self.ctx.limits.timeout;
        let mut last = Value::Unspecified;
        self.last_form = None;
        for datum in &data {
            self.last_form = Some(datum.span.clone());
            let node = Compiler {
                prims: &self.prims,
                gensym: &mut self.gensym,
            }
            .compile(datum)?;
            last = self.run(State::Eval(node, None))?;
        }
        Ok(last)
    }

    /// Where the last top-level form of the last `eval_file` starts.
    pub(crate) fn last_form_span(&self) -> Option<&Span> {
        self.last_form.as_ref()
    }

    fn run(&mut self, state: State) -> Result<Value, SchemeError> {
        let base = self.stack.len();
        let result = self.run_from(state, base);
        if result.is_err() {
            self.stack.truncate(base);
        }
        result
    }

    fn tick(&mut self, span: &Span) -> Result<(), SchemeError> {
        self.steps += 1;
        let limits: &Limits = &self.ctx.limits;
        if self.steps > limits.max_steps {
            return Err(SchemeError::new(
                ErrorKind::Limit,
                span,
                format!("evaluation stopped here after {} steps, the step budget: the file runs too long or never ends", limits.max_steps),
            )
            .with_hint("look for a loop without an end or a recursion without a base case around here"));
        }
        if self.steps & (CLOCK_EVERY - 1) == 0 && Instant::now() >= self.deadline {
            return Err(SchemeError::new(
                ErrorKind::Limit,
                span,
                format!("evaluation stopped here after {:?}, the time limit: the file runs too long or never ends", self.ctx.limits.timeout),
            )
            .with_hint("look for a loop without an end around here"));
        }
        Ok(())
    }

    fn push(&mut self, frame: Frame, span: &Span) -> Result<(), SchemeError> {
        if self.stack.len() >= self.ctx.limits.max_depth {
            return Err(SchemeError::new(
                ErrorKind::Limit,
                span,
                format!("evaluation stopped here: more than {} nested calls are pending (a recursion that is too deep or never ends)", self.ctx.limits.max_depth),
            )
            .with_hint("make the recursive call a tail call (for example with a named let loop and an accumulator)"));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn lookup(&self, name: &Sym, env: &Option<Rc<Env>>, span: &Span) -> Result<Value, SchemeError> {
        if let Some(v) = Env::lookup(env, name) {
            return Ok(v);
        }
        if let Some(v) = self.globals.get(name) {
            return Ok(v.clone());
        }
        Err(self.unbound(name, env, span))
    }

    fn unbound(&self, name: &str, env: &Option<Rc<Env>>, span: &Span) -> SchemeError {
        let err = SchemeError::new(ErrorKind::Unbound, span, format!("unbound variable {name}"));
        if let Some(hint) = unsupported_hint(name) {
            return err.with_hint(hint);
        }
        let locals = Env::names(env);
        let candidates = locals
            .iter()
            .map(|s| &**s)
            .chain(self.globals.keys().map(|s| &**s))
            .chain(crate::compile::special_form_names().map(|s| -> &str { s }))
            .filter(|s| !s.starts_with(' '));
        match did_you_mean(&closest(name, candidates)) {
            Some(s) => err.with_hint(s),
            None => err.with_hint(format!(
                "define {name} before using it, or check its spelling"
            )),
        }
    }

    fn define_in(&mut self, env: &Option<Rc<Env>>, name: &Sym, value: Value) {
        match env {
            None => {
                self.globals.insert(name.clone(), value);
            }
            Some(frame) => {
                if matches!(value, Value::Procedure(_)) {
                    self.note_closure_frame(frame);
                }
                frame.define(name, value);
            }
        }
    }

    fn note_closure_frame(&mut self, frame: &Rc<Env>) {
        self.closure_frames.push(Rc::downgrade(frame));
        if self.closure_frames.len() > 2 * self.closure_frames_pruned + 1024 {
            self.closure_frames.retain(|w| w.strong_count() > 0);
            self.closure_frames_pruned = self.closure_frames.len();
        }
    }

    fn run_from(&mut self, mut state: State, base: usize) -> Result<Value, SchemeError> {
        loop {
            state = match state {
                State::Eval(node, env) => match &node.kind {
                    NodeKind::Const(v) => State::Return(v.clone()),
                    NodeKind::Var(name) => State::Return(self.lookup(name, &env, &node.span)?),
                    NodeKind::Global(name, module) => match self.globals.get(name) {
                        Some(v) => State::Return(v.clone()),
                        None => {
                            return Err(SchemeError::new(
                                ErrorKind::Unbound,
                                &node.span,
                                format!("unbound variable {name} in module {module}"),
                            )
                            .with_hint(
                                "Ferry's Scheme provides only a subset of Guile's procedures",
                            ))
                        }
                    },
                    NodeKind::If(test, _, _) => {
                        let test = test.clone();
                        self.push(Frame::If(node.clone(), env.clone()), &node.span)?;
                        State::Eval(test, env)
                    }
                    NodeKind::Define(_, value) => {
                        let value = value.clone();
                        self.push(Frame::Define(node.clone(), env.clone()), &node.span)?;
                        State::Eval(value, env)
                    }
                    NodeKind::Set(_, value) => {
                        let value = value.clone();
                        self.push(Frame::Set(node.clone(), env.clone()), &node.span)?;
                        State::Eval(value, env)
                    }
                    NodeKind::Lambda(def) => State::Return(Value::Procedure(Rc::new(Closure {
                        def: def.clone(),
                        env,
                    }))),
                    NodeKind::Seq(items) => match items.first() {
                        None => State::Return(Value::Unspecified),
                        Some(first) => {
                            let first = first.clone();
                            if items.len() > 1 {
                                self.push(Frame::Seq(node.clone(), 1, env.clone()), &node.span)?;
                            }
                            State::Eval(first, env)
                        }
                    },
                    NodeKind::Call(f, args) => {
                        let f = f.clone();
                        let vals = Vec::with_capacity(args.len() + 1);
                        self.push(
                            Frame::Call {
                                node: node.clone(),
                                idx: 0,
                                vals,
                                env: env.clone(),
                            },
                            &node.span,
                        )?;
                        State::Eval(f, env)
                    }
                },
                State::Return(value) => {
                    if self.stack.len() <= base {
                        return Ok(value);
                    }
                    let Some(frame) = self.stack.pop() else {
                        return Ok(value);
                    };
                    self.resume(frame, value)?
                }
                State::Apply(f, args, span) => self.apply(f, args, span)?,
            }
        }
    }

    /// Continues `frame` with the value just computed.
    fn resume(&mut self, frame: Frame, value: Value) -> Result<State, SchemeError> {
        Ok(match frame {
            Frame::If(node, env) => match &node.kind {
                NodeKind::If(_, then, els) => {
                    if value.is_true() {
                        State::Eval(then.clone(), env)
                    } else {
                        match els {
                            Some(e) => State::Eval(e.clone(), env),
                            None => State::Return(Value::Unspecified),
                        }
                    }
                }
                _ => return Err(internal(&node.span)),
            },
            Frame::Define(node, env) => match &node.kind {
                NodeKind::Define(name, _) => {
                    let value = name_procedure(value, name);
                    self.define_in(&env, name, value);
                    State::Return(Value::Unspecified)
                }
                _ => return Err(internal(&node.span)),
            },
            Frame::Set(node, env) => match &node.kind {
                NodeKind::Set(name, _) => {
                    if let (Some(frame), Value::Procedure(_)) = (&env, &value) {
                        let frame = frame.clone();
                        self.note_closure_frame(&frame);
                    }
                    if !Env::set(&env, name, &value) {
                        match self.globals.get_mut(name) {
                            Some(slot) => *slot = value,
                            None => {
                                return Err(self.unbound(name, &env, &node.span).with_hint(format!(
                                    "set! changes an existing variable; use (define {name} ...) to create it"
                                )))
                            }
                        }
                    }
                    State::Return(Value::Unspecified)
                }
                _ => return Err(internal(&node.span)),
            },
            Frame::Seq(node, idx, env) => match &node.kind {
                NodeKind::Seq(items) => {
                    let Some(next) = items.get(idx).cloned() else {
                        return Err(internal(&node.span));
                    };
                    if idx + 1 < items.len() {
                        self.push(Frame::Seq(node.clone(), idx + 1, env.clone()), &node.span)?;
                    }
                    State::Eval(next, env)
                }
                _ => return Err(internal(&node.span)),
            },
            Frame::Call {
                node,
                idx,
                mut vals,
                env,
            } => match &node.kind {
                NodeKind::Call(_, args) => {
                    vals.push(value);
                    match args.get(idx) {
                        Some(next) => {
                            let next = next.clone();
                            self.push(
                                Frame::Call {
                                    node: node.clone(),
                                    idx: idx + 1,
                                    vals,
                                    env: env.clone(),
                                },
                                &node.span,
                            )?;
                            State::Eval(next, env)
                        }
                        None => {
                            let f = vals.remove(0);
                            State::Apply(f, vals, node.span.clone())
                        }
                    }
                }
                _ => return Err(internal(&node.span)),
            },
        })
    }

    fn apply(&mut self, f: Value, mut args: Vec<Value>, span: Span) -> Result<State, SchemeError> {
        // Every loop goes through an application, so counting applications
        // bounds every evaluation.
        self.tick(&span)?;
        match f {
            Value::Procedure(closure) => {
                let env = bind_arguments(&closure.def, &closure.env, args, &span)?;
                Ok(State::Eval(closure.def.body.clone(), Some(env)))
            }
            Value::Native(native) => match &native.kind {
                NativeKind::Fn(func) => {
                    let mut ctx = NativeCtx { interp: self };
                    Ok(State::Return(func(&mut ctx, &args, &span)?))
                }
                NativeKind::Apply => {
                    // (apply f a b '(c d)) == (f a b c d)
                    if args.is_empty() {
                        return Err(type_error(&span, "apply needs a procedure and a list of arguments"));
                    }
                    let f = args.remove(0);
                    if let Some(last) = args.pop() {
                        match last.list_to_vec() {
                            Some(items) => args.extend(items),
                            None => {
                                return Err(type_error(
                                    &span,
                                    format!("the last argument of apply must be a list, got {}", last.describe()),
                                ))
                            }
                        }
                    }
                    Ok(State::Apply(f, args, span))
                }
            },
            other => Err(type_error(&span, format!("cannot call {}: it is not a procedure", other.describe()))
                .with_hint("the first element of a parenthesized expression is called; quote the list if it is data: '(...)")),
        }
    }
}

/// Gives an anonymous procedure the name it is defined under.
fn name_procedure(value: Value, name: &Sym) -> Value {
    if let Value::Procedure(c) = &value {
        if c.def.name.is_none() && !name.starts_with(' ') {
            let def = LambdaDef {
                name: Some(name.to_string()),
                params: c.def.params.clone(),
                rest: c.def.rest.clone(),
                body: c.def.body.clone(),
                span: c.def.span.clone(),
            };
            return Value::Procedure(Rc::new(Closure {
                def: Rc::new(def),
                env: c.env.clone(),
            }));
        }
    }
    value
}

fn bind_arguments(
    def: &LambdaDef,
    env: &Option<Rc<Env>>,
    mut args: Vec<Value>,
    span: &Span,
) -> Result<Rc<Env>, SchemeError> {
    let n = def.params.len();
    if args.len() < n || (def.rest.is_none() && args.len() > n) {
        let expected = match (&def.rest, n) {
            (Some(_), _) => format!("at least {n} argument{}", if n == 1 { "" } else { "s" }),
            (None, 1) => "1 argument".to_string(),
            (None, _) => format!("{n} arguments"),
        };
        let who = def
            .name
            .as_deref()
            .map_or("this procedure".to_string(), |n| format!("procedure {n}"));
        return Err(type_error(
            span,
            format!("{who} expects {expected}, got {}", args.len()),
        )
        .with_hint(format!("it is defined at {}", def.span)));
    }
    let rest = args.split_off(n);
    let mut vars: Vec<(Sym, Value)> = def.params.iter().cloned().zip(args).collect();
    if let Some(r) = &def.rest {
        vars.push((r.clone(), Value::list(rest)));
    }
    Ok(Env::new(vars, env.clone()))
}

fn internal(span: &Span) -> SchemeError {
    SchemeError::new(
        ErrorKind::Runtime,
        span,
        "internal error in the evaluator (please report it)",
    )
}

/// Guile features people may reach for that this subset does not have.
fn unsupported_hint(name: &str) -> Option<String> {
    const UNSUPPORTED: &[&str] = &[
        "define-syntax",
        "syntax-rules",
        "let-syntax",
        "define-record-type",
        "call/cc",
        "call-with-current-continuation",
        "dynamic-wind",
        "parameterize",
        "define*",
        "lambda*",
        "delay",
        "force",
        "with-exception-handler",
        "guard",
        "catch",
    ];
    UNSUPPORTED
        .contains(&name)
        .then(|| format!("{name} is a Guile feature that Ferry's Scheme subset does not support"))
}

impl Drop for Interpreter {
    /// Breaks the cycles between frames and the procedures defined in them.
    fn drop(&mut self) {
        for frame in self.closure_frames.drain(..) {
            if let Some(frame) = frame.upgrade() {
                if let Ok(mut vars) = frame.vars.try_borrow_mut() {
                    vars.clear();
                }
            }
        }
        self.globals.clear();
    }
}
