//! Lexical environments, and the evaluation context: the inputs an
//! evaluation may observe (home directory, environment variables, host
//! name and processor count) and its
//! limits. Making them explicit keeps tests hermetic and evaluation bounded.

use crate::value::{Sym, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// One frame of local variables (a procedure call, a `let`). Globals live in
/// the interpreter's table; `None` as a parent means "globals next".
pub(crate) struct Env {
    pub(crate) vars: RefCell<Vec<(Sym, Value)>>,
    pub(crate) parent: Option<Rc<Env>>,
}

impl Env {
    pub(crate) fn new(vars: Vec<(Sym, Value)>, parent: Option<Rc<Env>>) -> Rc<Env> {
        Rc::new(Env {
            vars: RefCell::new(vars),
            parent,
        })
    }

    /// The value of `name` in this frame or an enclosing one (not globals).
    pub(crate) fn lookup(env: &Option<Rc<Env>>, name: &str) -> Option<Value> {
        let mut cur = env.as_ref();
        while let Some(frame) = cur {
            if let Some((_, v)) = frame.vars.borrow().iter().rev().find(|(n, _)| &**n == name) {
                return Some(v.clone());
            }
            cur = frame.parent.as_ref();
        }
        None
    }

    /// Assigns an existing local; false if `name` is not local.
    pub(crate) fn set(env: &Option<Rc<Env>>, name: &str, value: &Value) -> bool {
        let mut cur = env.as_ref();
        while let Some(frame) = cur {
            if let Some(slot) = frame
                .vars
                .borrow_mut()
                .iter_mut()
                .rev()
                .find(|(n, _)| &**n == name)
            {
                slot.1 = value.clone();
                return true;
            }
            cur = frame.parent.as_ref();
        }
        false
    }

    /// Defines (or redefines) `name` in this very frame.
    pub(crate) fn define(&self, name: &Sym, value: Value) {
        let mut vars = self.vars.borrow_mut();
        match vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => vars.push((name.clone(), value)),
        }
    }

    /// Every local name in scope, for "did you mean" hints.
    pub(crate) fn names(env: &Option<Rc<Env>>) -> Vec<Sym> {
        let mut out = Vec::new();
        let mut cur = env.as_ref();
        while let Some(frame) = cur {
            out.extend(frame.vars.borrow().iter().map(|(n, _)| n.clone()));
            cur = frame.parent.as_ref();
        }
        out
    }
}

/// Where `getenv` looks.
#[derive(Clone, Debug)]
pub enum Environment {
    /// The real process environment.
    Process,
    /// A fixed set of variables (tests, or a daemon that wants to decide).
    Fixed(BTreeMap<String, String>),
}

impl Environment {
    pub fn get(&self, name: &str) -> Option<String> {
        match self {
            Environment::Process => std::env::var(name).ok(),
            Environment::Fixed(map) => map.get(name).cloned(),
        }
    }
}

/// Bounds on one evaluation (`Interpreter::eval_file` call).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Evaluation steps (procedure applications) before giving up.
    pub max_steps: u64,
    /// Wall-clock time before giving up.
    pub timeout: Duration,
    /// Pending non-tail calls (continuation frames) before giving up; this is
    /// heap, not Rust stack, so the limit is about memory and clear errors.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 10_000_000,
            timeout: Duration::from_secs(5),
            max_depth: 100_000,
        }
    }
}

/// Everything an evaluation may observe about the outside world.
#[derive(Clone, Debug)]
pub struct EvalContext {
    /// The home directory of the user running Ferry: the default
    /// `private-key` is `HOME/.ssh/id_rsa`; with none (HOME unset) there is
    /// no default key, as in Guix.
    pub home: Option<PathBuf>,
    /// What `getenv` sees.
    pub env: Environment,
    /// What `(gethostname)` returns.
    pub host_name: String,
    /// What `(current-processor-count)` returns.
    pub processors: usize,
    pub limits: Limits,
}

/// This machine's host name (Linux's `/proc/sys/kernel/hostname`, which is
/// what gethostname(2) returns), or `localhost` if it cannot be read.
fn process_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .unwrap_or_else(|| "localhost".to_string())
}

impl EvalContext {
    /// The running process's `$HOME` (none if unset or empty) and environment.
    pub fn from_process() -> Self {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        EvalContext {
            home,
            env: Environment::Process,
            host_name: process_host_name(),
            processors: std::thread::available_parallelism().map_or(1, |n| n.get()),
            limits: Limits::default(),
        }
    }

    /// A context that sees nothing of the process: the given home, an
    /// empty environment (add variables with [`EvalContext::with_var`]),
    /// host name `localhost` and one processor.
    pub fn hermetic(home: impl Into<PathBuf>) -> Self {
        EvalContext {
            home: Some(home.into()),
            env: Environment::Fixed(BTreeMap::new()),
            host_name: "localhost".to_string(),
            processors: 1,
            limits: Limits::default(),
        }
    }

    /// What `(gethostname)` returns.
    pub fn with_host_name(mut self, name: &str) -> Self {
        self.host_name = name.to_string();
        self
    }

    /// What `(current-processor-count)` returns (at least 1).
    pub fn with_processors(mut self, n: usize) -> Self {
        self.processors = n.max(1);
        self
    }

    /// Adds a variable to a fixed environment (switching to one if needed).
    pub fn with_var(mut self, name: &str, value: &str) -> Self {
        if let Environment::Process = self.env {
            self.env = Environment::Fixed(BTreeMap::new());
        }
        if let Environment::Fixed(map) = &mut self.env {
            map.insert(name.to_string(), value.to_string());
        }
        self
    }

    /// No home directory, as when HOME is unset: no default private key.
    pub fn without_home(mut self) -> Self {
        self.home = None;
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}
