//! The `build-machine` record as Guix's `define-record-type*` makes it: the
//! form itself only checks its shape (known fields, each once, the required
//! ones present) and keeps the values; they are checked when the file's
//! returned list is turned into [`BuildMachine`]s, so a machine that is
//! defined but not returned is never checked.
//!
//! Two kinds of bad values (the choice, since Guix checks no field at all):
//! - a value of the wrong *type* (a port that is a string, systems that are
//!   not a list of strings) is an error of the whole file, at the field's
//!   line:col: the program is wrong, and Guix would fail too as soon as it
//!   uses the field;
//! - a string of the right type whose *content* is unusable for this one
//!   machine (a host key that is not an OpenSSH key or is a `…` placeholder,
//!   an empty or malformed name or user) is that machine's
//!   [`BuildMachine::error`]: the file loads, the machine is listed with
//!   the error, and it is never connected to (Guix fails when it connects).

use crate::error::{ErrorKind, SchemeError, Warning};
use crate::eval::NativeCtx;
use crate::span::Span;
use crate::value::{HostValue, Native, Value};
use serde::{Serialize, Serializer};
use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// One machine builds may be offloaded to. Serializes with camelCase keys
/// (`hostKey`, `parallelBuilds`...); `overloadThreshold` is `null` when
/// disabled with `#f`, `privateKey` is `null` when there is none, `error`
/// is `null` for a usable machine.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMachine {
    pub name: String,
    pub systems: Vec<String>,
    pub user: String,
    pub host_key: String,
    pub port: u16,
    /// Empty when there is none: `(private-key #f)`, or HOME unset and no
    /// `private-key` field (Guix's default is then `#f`).
    #[serde(serialize_with = "path_or_null")]
    pub private_key: PathBuf,
    pub compression: String,
    pub compression_level: i64,
    pub daemon_socket: String,
    pub overload_threshold: Option<f64>,
    pub parallel_builds: u32,
    pub speed: f64,
    pub features: Vec<String>,
    /// Why this machine cannot be used (`FILE:LINE:COL: what; what to do`,
    /// one line per wrong field), or `None`. A machine with an error is
    /// never connected to.
    pub error: Option<String>,
}

fn path_or_null<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    if p.as_os_str().is_empty() {
        s.serialize_none()
    } else {
        s.serialize_some(&p.to_string_lossy())
    }
}

impl BuildMachine {
    /// Whether the host key is a placeholder cut short with `…` (as in the
    /// manual's example): connecting to this machine must be refused.
    pub fn host_key_is_placeholder(&self) -> bool {
        crate::hostkey::is_placeholder_host_key(&self.host_key)
    }

    /// The error on one line (its lines joined by "; and "), for logs and
    /// one-line reasons.
    pub fn error_line(&self) -> Option<String> {
        self.error.as_ref().map(|e| e.replace('\n', "; and "))
    }

    /// The private key file, if there is one.
    pub fn private_key(&self) -> Option<&Path> {
        Some(self.private_key.as_path()).filter(|p| !p.as_os_str().is_empty())
    }
}

/// The fields, in the manual's order.
pub const FIELD_NAMES: &[&str] = &[
    "name",
    "systems",
    "user",
    "host-key",
    "port",
    "private-key",
    "compression",
    "compression-level",
    "daemon-socket",
    "overload-threshold",
    "parallel-builds",
    "speed",
    "features",
];

const REQUIRED: &[&str] = &["name", "systems", "user", "host-key"];

/// The static name of a field (including the deprecated `system`).
pub(crate) fn field_name(name: &str) -> Option<&'static str> {
    if name == "system" {
        return Some("system");
    }
    FIELD_NAMES.iter().copied().find(|f| *f == name)
}

/// A record value in Scheme: its fields as given (inherited ones included),
/// unchecked, and where its form was.
pub struct MachineRecord {
    fields: Vec<(&'static str, Value, Span)>,
    pub span: Span,
}

impl MachineRecord {
    fn get(&self, field: &str) -> Option<&(&'static str, Value, Span)> {
        self.fields.iter().find(|(f, _, _)| *f == field)
    }

    /// The fields as given, inherited ones included, in order.
    pub(crate) fn fields(&self) -> &[(&'static str, Value, Span)] {
        &self.fields
    }

    /// The record's name if it is a string (for messages).
    pub fn name(&self) -> Option<String> {
        match self.get("name") {
            Some((_, Value::Str(s), _)) => Some(s.to_string()),
            _ => None,
        }
    }
}

impl HostValue for MachineRecord {
    fn type_name(&self) -> &str {
        "build-machine"
    }
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#<build-machine {}>", self.name().unwrap_or_default())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn host_equal(&self, other: &dyn HostValue) -> bool {
        other
            .as_any()
            .downcast_ref::<MachineRecord>()
            .is_some_and(|o| {
                o.fields.len() == self.fields.len()
                    && self.fields.iter().all(|(f, v, _)| {
                        o.get(f).is_some_and(|(_, w, _)| crate::value::equal(v, w))
                    })
            })
    }
}

/// The native the compiler calls for one `(build-machine ...)` form: its
/// arguments are the (optional) inherited record, then the field values in
/// the order of `fields`.
pub(crate) fn constructor(
    fields: Vec<(&'static str, Span)>,
    has_inherit: bool,
    span: Span,
) -> Value {
    Value::Native(Rc::new(Native::new(
        "build-machine",
        move |_ctx: &mut NativeCtx<'_>, args, _| build(&fields, has_inherit, &span, args),
    )))
}

fn build(
    fields: &[(&'static str, Span)],
    has_inherit: bool,
    form: &Span,
    args: &[Value],
) -> Result<Value, SchemeError> {
    let (mut record, values) = match (has_inherit, args.split_first()) {
        (true, Some((base, rest))) => match base.downcast_host::<MachineRecord>() {
            Some(r) => (r.fields.clone(), rest),
            None => {
                return Err(SchemeError::new(
                    ErrorKind::Machine,
                    form,
                    format!(
                        "(inherit ...) in build-machine needs a build-machine record, got {}",
                        base.describe()
                    ),
                ))
            }
        },
        _ => (Vec::new(), args),
    };
    for ((field, span), v) in fields.iter().zip(values) {
        record.retain(|(f, _, _)| f != field);
        record.push((*field, v.clone(), span.clone()));
    }
    let has = |f: &str| record.iter().any(|(g, _, _)| *g == f);
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|f| !(has(f) || (*f == "systems" && has("system"))))
        .collect();
    if !missing.is_empty() {
        let (noun, list) = match missing.as_slice() {
            [one] => ("field", one.to_string()),
            many => ("fields", many.join(", ")),
        };
        let examples: Vec<String> = missing.iter().map(|f| required_example(f)).collect();
        return Err(SchemeError::new(
            ErrorKind::Machine,
            form,
            format!("build-machine is missing the required {noun} {list}"),
        )
        .with_hint(format!("add {}", examples.join(" "))));
    }
    Ok(Value::Host(Rc::new(MachineRecord {
        fields: record,
        span: form.clone(),
    })))
}

fn required_example(field: &str) -> String {
    match field {
        "name" => "(name \"build1.example.org\")".into(),
        "systems" => "(systems (list \"x86_64-linux\"))".into(),
        "user" => "(user \"offload\")".into(),
        _ => "(host-key \"ssh-ed25519 AAAA...\") with the contents of /etc/ssh/ssh_host_ed25519_key.pub".into(),
    }
}

/// `build-machine?`.
pub(crate) fn install(globals: &mut crate::builtins::Globals) {
    crate::builtins::def(globals, "build-machine?", |_, args, span| {
        crate::builtins::arity("build-machine?", args, span, 1, Some(1))?;
        Ok(Value::Bool(
            args[0].downcast_host::<MachineRecord>().is_some(),
        ))
    });
}

/// The machines of a machines file's value, checked, and the warnings about
/// them. `span` is where the value came from (the last top-level form).
pub(crate) fn machines_from_value(
    value: &Value,
    span: &Span,
    home: Option<&Path>,
    warnings: &mut Vec<Warning>,
) -> Result<Vec<BuildMachine>, SchemeError> {
    let hint = "end the file with an expression returning the list, such as (list (build-machine ...) ...)";
    let Some(items) = value.list_to_vec() else {
        return Err(SchemeError::new(
            ErrorKind::Machine,
            span,
            format!(
                "the machines file must return a list of build-machine records, but it returns {}",
                value.describe()
            ),
        )
        .with_hint(hint));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.downcast_host::<MachineRecord>() {
            Some(r) => crate::machine_check::check_record(r, home, warnings),
            None => {
                let nested = item.list_to_vec().is_some_and(|l| l.iter().any(|v| v.downcast_host::<MachineRecord>().is_some()));
                let err = SchemeError::new(
                    ErrorKind::Machine,
                    span,
                    format!(
                        "the machines file must return a list of build-machine records, but element {} of the list is {}",
                        i + 1,
                        item.describe()
                    ),
                );
                Err(if nested {
                    err.with_hint("this element is a list of machines: flatten with (apply append ...) or append-map")
                } else {
                    err.with_hint(hint)
                })
            }
        })
        .collect()
}
