//! The built-in procedures the compiler's expansions call directly (taken
//! once, before any user code runs), so that a user's `(define (list . x)
//! ...)` cannot break quasiquote, `case`, `match` or `receive`.

use crate::value::{Sym, Value};
use std::collections::HashMap;

/// The procedures; ` name` (with a space) ones are hidden built-ins.
pub(crate) struct Prims {
    pub(crate) list: Value,
    pub(crate) append: Value,
    pub(crate) list_to_vector: Value,
    pub(crate) memv: Value,
    pub(crate) apply: Value,
    pub(crate) car: Value,
    pub(crate) cdr: Value,
    pub(crate) cons: Value,
    pub(crate) pair_p: Value,
    pub(crate) null_p: Value,
    pub(crate) list_p: Value,
    pub(crate) nonempty_list_p: Value,
    pub(crate) equal: Value,
    pub(crate) reverse: Value,
    pub(crate) vector_p: Value,
    pub(crate) vector_to_list: Value,
    pub(crate) values_list: Value,
    pub(crate) match_error: Value,
}

impl Prims {
    /// Taken from the built-ins before any user code runs.
    pub(crate) fn from_globals(globals: &HashMap<Sym, Value>) -> Prims {
        let get = |name: &str| globals.get(name).cloned().unwrap_or(Value::Unspecified);
        Prims {
            list: get("list"),
            append: get("append"),
            list_to_vector: get("list->vector"),
            memv: get("memv"),
            apply: get("apply"),
            car: get("car"),
            cdr: get("cdr"),
            cons: get("cons"),
            pair_p: get("pair?"),
            null_p: get("null?"),
            list_p: get("list?"),
            nonempty_list_p: get(" nonempty-list?"),
            equal: get("equal?"),
            reverse: get("reverse"),
            vector_p: get("vector?"),
            vector_to_list: get("vector->list"),
            values_list: get(" values->list"),
            match_error: get(" match-error"),
        }
    }
}
