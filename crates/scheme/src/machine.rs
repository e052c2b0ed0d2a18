//! The `build-machine` record: the seed's fields, types and defaults, the
//! constructor the compiler calls for `(build-machine (FIELD VALUE) ...)`,
//! and turning a machines file's value into [`BuildMachine`]s.

use crate::error::{ErrorKind, SchemeError};
use crate::eval::NativeCtx;
use crate::hostkey::{check_host_key, HostKeyStatus};
use crate::span::Span;
use crate::value::{HostValue, Native, Value};
use serde::Serialize;
use std::any::Any;
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;

/// One machine builds may be offloaded to. Serializes with the seed's field
/// names (`host-key`, `parallel-builds`...; `overload-threshold` is `null`
/// when disabled with `#f`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BuildMachine {
    pub name: String,
    pub systems: Vec<String>,
    pub user: String,
    pub host_key: String,
    pub port: u16,
    pub private_key: PathBuf,
    pub compression: String,
    pub compression_level: i64,
    pub daemon_socket: String,
    pub overload_threshold: Option<f64>,
    pub parallel_builds: u32,
    pub speed: f64,
    pub features: Vec<String>,
}

impl BuildMachine {
    /// Whether the host key is a placeholder cut short with `…` (as in the
    /// manual's example): connecting to this machine must be refused.
    pub fn host_key_is_placeholder(&self) -> bool {
        crate::hostkey::is_placeholder_host_key(&self.host_key)
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

/// A record value in Scheme: the machine and where its form was.
pub struct MachineRecord {
    pub machine: BuildMachine,
    pub span: Span,
}

impl HostValue for MachineRecord {
    fn type_name(&self) -> &str {
        "build-machine"
    }
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#<build-machine {}>", self.machine.name)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn host_equal(&self, other: &dyn HostValue) -> bool {
        other
            .as_any()
            .downcast_ref::<MachineRecord>()
            .is_some_and(|o| o.machine == self.machine)
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
        move |ctx, args, _| build(ctx, &fields, has_inherit, &span, args),
    )))
}

fn field_error(
    span: &Span,
    field: &str,
    expected: &str,
    got: &Value,
    example: &str,
) -> SchemeError {
    SchemeError::new(
        ErrorKind::Machine,
        span,
        format!(
            "field {field} of build-machine must be {expected}, got {}",
            got.describe()
        ),
    )
    .with_hint(format!("for example ({field} {example})"))
}

fn string_field(span: &Span, field: &str, v: &Value, example: &str) -> Result<String, SchemeError> {
    match v {
        Value::Str(s) if !s.trim().is_empty() => Ok(s.to_string()),
        _ => Err(field_error(span, field, "a non-empty string", v, example)),
    }
}

fn strings_field(
    span: &Span,
    field: &str,
    v: &Value,
    example: &str,
) -> Result<Vec<String>, SchemeError> {
    let items = v
        .list_to_vec()
        .ok_or_else(|| field_error(span, field, "a list of strings", v, example))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Str(s) => Ok(s.to_string()),
            _ => Err(SchemeError::new(
                ErrorKind::Machine,
                span,
                format!("field {field} of build-machine must be a list of strings, but element {} is {}", i + 1, item.describe()),
            )
            .with_hint(format!("for example ({field} {example})"))),
        })
        .collect()
}

fn positive_number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) if *i > 0 => Some(*i as f64),
        Value::Float(x) if x.is_finite() && *x > 0.0 => Some(*x),
        _ => None,
    }
}

/// The fields being assembled; `None` means not given (yet).
#[derive(Default)]
struct Partial {
    name: Option<String>,
    systems: Option<Vec<String>>,
    user: Option<String>,
    host_key: Option<String>,
    port: Option<u16>,
    private_key: Option<PathBuf>,
    compression: Option<String>,
    compression_level: Option<i64>,
    daemon_socket: Option<String>,
    overload_threshold: Option<Option<f64>>,
    parallel_builds: Option<u32>,
    speed: Option<f64>,
    features: Option<Vec<String>>,
}

impl From<&BuildMachine> for Partial {
    fn from(m: &BuildMachine) -> Self {
        let m = m.clone();
        Partial {
            name: Some(m.name),
            systems: Some(m.systems),
            user: Some(m.user),
            host_key: Some(m.host_key),
            port: Some(m.port),
            private_key: Some(m.private_key),
            compression: Some(m.compression),
            compression_level: Some(m.compression_level),
            daemon_socket: Some(m.daemon_socket),
            overload_threshold: Some(m.overload_threshold),
            parallel_builds: Some(m.parallel_builds),
            speed: Some(m.speed),
            features: Some(m.features),
        }
    }
}

fn build(
    ctx: &mut NativeCtx<'_>,
    fields: &[(&'static str, Span)],
    has_inherit: bool,
    form: &Span,
    args: &[Value],
) -> Result<Value, SchemeError> {
    let (mut p, values) = match (has_inherit, args.split_first()) {
        (true, Some((base, rest))) => match base.downcast_host::<MachineRecord>() {
            Some(record) => (Partial::from(&record.machine), rest),
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
        _ => (Partial::default(), args),
    };
    let has_systems = fields.iter().any(|(f, _)| *f == "systems");
    for ((field, span), v) in fields.iter().zip(values) {
        match *field {
            "name" => p.name = Some(string_field(span, field, v, "\"build1.example.org\"")?),
            "user" => p.user = Some(string_field(span, field, v, "\"offload\"")?),
            "systems" => {
                let systems =
                    strings_field(span, field, v, "(list \"x86_64-linux\" \"i686-linux\")")?;
                if systems.is_empty() {
                    ctx.warn(span, "this build-machine has no systems, so no build will ever be offloaded to it");
                }
                p.systems = Some(systems);
            }
            "system" => {
                if has_systems {
                    return Err(SchemeError::new(
                        ErrorKind::Machine,
                        span,
                        "build-machine has both system and systems",
                    )
                    .with_hint("remove the deprecated system field"));
                }
                let s = string_field(span, field, v, "\"x86_64-linux\"")?;
                ctx.warn(span, format!("field system of build-machine is deprecated; write (systems (list {s:?})) instead"));
                p.systems = Some(vec![s]);
            }
            "host-key" => {
                let key = match v {
                    Value::Str(s) => s.trim().to_string(),
                    _ => {
                        return Err(field_error(
                            span,
                            field,
                            "a string",
                            v,
                            "\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA...\"",
                        ))
                    }
                };
                match check_host_key(&key) {
                    Ok(HostKeyStatus::Valid) => {}
                    Ok(HostKeyStatus::Placeholder) => ctx.warn(
                        span,
                        format!(
                            "host-key {key:?} is a placeholder (its key data is cut short with an ellipsis); replace it with the machine's real public host key, from /etc/ssh/ssh_host_ed25519_key.pub on that machine: Ferry refuses to connect until then"
                        ),
                    ),
                    Err(why) => {
                        return Err(SchemeError::new(
                            ErrorKind::Machine,
                            span,
                            format!("field host-key of build-machine must be an OpenSSH public key \"TYPE BASE64 [COMMENT]\", but {key:?} {why}"),
                        )
                        .with_hint("copy the machine's /etc/ssh/ssh_host_ed25519_key.pub (one line) into the string"))
                    }
                }
                p.host_key = Some(key);
            }
            "port" => {
                p.port = Some(
                    match v {
                        Value::Int(i) => u16::try_from(*i).ok().filter(|port| *port > 0),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        field_error(span, field, "an integer between 1 and 65535", v, "22")
                    })?,
                )
            }
            "private-key" => {
                p.private_key = Some(PathBuf::from(string_field(
                    span,
                    field,
                    v,
                    "\"/root/.ssh/id_ed25519\"",
                )?))
            }
            "compression" => {
                p.compression = Some(string_field(span, field, v, "\"zlib@openssh.com,zlib\"")?)
            }
            "compression-level" => {
                p.compression_level = Some(match v {
                    Value::Int(i) => *i,
                    _ => return Err(field_error(span, field, "an integer", v, "3")),
                })
            }
            "daemon-socket" => {
                p.daemon_socket = Some(string_field(
                    span,
                    field,
                    v,
                    "\"/var/ferry/daemon-socket/socket\"",
                )?)
            }
            "overload-threshold" => {
                p.overload_threshold = Some(match v {
                    Value::Bool(false) => None,
                    Value::Int(i) if *i >= 0 => Some(*i as f64),
                    Value::Float(x) if x.is_finite() && *x >= 0.0 => Some(*x),
                    _ => {
                        return Err(field_error(
                            span,
                            field,
                            "a non-negative number, or #f to disable it",
                            v,
                            "0.8",
                        ))
                    }
                })
            }
            "parallel-builds" => {
                p.parallel_builds = Some(
                    match v {
                        Value::Int(i) => u32::try_from(*i).ok().filter(|n| *n > 0),
                        _ => None,
                    }
                    .ok_or_else(|| field_error(span, field, "a positive integer", v, "4"))?,
                )
            }
            "speed" => {
                p.speed = Some(
                    positive_number(v)
                        .ok_or_else(|| field_error(span, field, "a positive number", v, "2.0"))?,
                )
            }
            "features" => p.features = Some(strings_field(span, field, v, "(list \"kvm\")")?),
            _ => {
                return Err(SchemeError::new(
                    ErrorKind::Syntax,
                    span,
                    format!("unknown field {field} in build-machine"),
                ))
            }
        }
    }
    let given = [
        p.name.is_some(),
        p.systems.is_some(),
        p.user.is_some(),
        p.host_key.is_some(),
    ];
    let missing: Vec<&str> = REQUIRED
        .iter()
        .zip(given)
        .filter(|(_, g)| !g)
        .map(|(f, _)| *f)
        .collect();
    let (Some(name), Some(systems), Some(user), Some(host_key)) =
        (p.name, p.systems, p.user, p.host_key)
    else {
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
    };
    let machine = BuildMachine {
        name,
        systems,
        user,
        host_key,
        port: p.port.unwrap_or(22),
        private_key: p
            .private_key
            .unwrap_or_else(|| ctx.home().join(".ssh/id_rsa")),
        compression: p
            .compression
            .unwrap_or_else(|| "zlib@openssh.com,zlib".into()),
        compression_level: p.compression_level.unwrap_or(3),
        daemon_socket: p
            .daemon_socket
            .unwrap_or_else(|| "/var/ferry/daemon-socket/socket".into()),
        overload_threshold: p.overload_threshold.unwrap_or(Some(0.8)),
        parallel_builds: p.parallel_builds.unwrap_or(1),
        speed: p.speed.unwrap_or(1.0),
        features: p.features.unwrap_or_default(),
    };
    Ok(Value::Host(Rc::new(MachineRecord {
        machine,
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

/// The records of a machines file's value. `span` is where the value came
/// from (the last top-level form), for errors.
pub(crate) fn machines_from_value(
    value: &Value,
    span: &Span,
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
            Some(r) => Ok(r.machine.clone()),
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
