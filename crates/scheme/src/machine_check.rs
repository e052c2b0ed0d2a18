//! Checking a returned `build-machine` record's values and turning it into
//! a [`BuildMachine`]: wrong types are errors of the file, unusable strings
//! (host key, name, user) are errors of that machine only (see
//! [`crate::machine`] for why), and the defaults are Guix's.

use crate::error::{ErrorKind, SchemeError, Warning};
use crate::hostkey::{check_host_key, HostKeyStatus};
use crate::machine::{BuildMachine, MachineRecord};
use crate::span::Span;
use crate::value::Value;
use std::path::{Path, PathBuf};

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
        Value::Str(s) => Ok(s.to_string()),
        _ => Err(field_error(span, field, "a string", v, example)),
    }
}

fn nonempty_string(
    span: &Span,
    field: &str,
    v: &Value,
    example: &str,
) -> Result<String, SchemeError> {
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
                format!(
                    "field {field} of build-machine must be a list of strings, but element {} is {}",
                    i + 1,
                    item.describe()
                ),
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

/// What is wrong with a host name or user name, if anything: both end up
/// on an ssh command line or in a file name, so only plain words pass.
fn bad_word(s: &str, what: &str) -> Option<String> {
    if s.trim().is_empty() {
        return Some(format!("is empty; write the machine's {what}"));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!(
            "contains {c:?}; write the {what} alone, without spaces"
        ));
    }
    if s.starts_with('-') {
        return Some("starts with '-', which ssh would take for an option".into());
    }
    if let Some(c) = s.chars().find(|c| matches!(c, '@' | '/' | '\\')) {
        return Some(match (c, what) {
            ('@', "host name") => {
                "contains '@': write the host name alone in (name ...) and the user in (user ...)"
                    .into()
            }
            _ => format!("contains {c:?}, which a {what} cannot contain"),
        });
    }
    None
}

/// Turns a returned record into a machine. `home` is the home directory
/// for the default private key (none: no key, as Guix with HOME unset).
pub(crate) fn check_record(
    record: &MachineRecord,
    home: Option<&Path>,
    warnings: &mut Vec<Warning>,
) -> Result<BuildMachine, SchemeError> {
    let mut errors: Vec<String> = Vec::new();
    let mut machine = BuildMachine {
        name: String::new(),
        systems: Vec::new(),
        user: String::new(),
        host_key: String::new(),
        port: 22,
        private_key: home
            .map(|h| PathBuf::from(format!("{}/.ssh/id_rsa", h.display())))
            .unwrap_or_default(),
        compression: "zlib@openssh.com,zlib".into(),
        compression_level: 3,
        daemon_socket: "/var/ferry/daemon-socket/socket".into(),
        overload_threshold: Some(0.8),
        parallel_builds: 1,
        speed: 1.0,
        features: Vec::new(),
        error: None,
    };
    let systems_given = record.fields().iter().any(|(f, _, _)| *f == "systems");
    for (field, v, span) in record.fields() {
        let field = *field;
        match field {
            "name" => {
                let name = string_field(span, field, v, "\"build1.example.org\"")?;
                if let Some(why) = bad_word(&name, "host name") {
                    errors.push(format!("{span}: name {name:?} {why}"));
                }
                machine.name = name;
            }
            "user" => {
                let user = string_field(span, field, v, "\"offload\"")?;
                if let Some(why) = bad_word(&user, "user name") {
                    errors.push(format!("{span}: user {user:?} {why}"));
                }
                machine.user = user;
            }
            "systems" => {
                let systems =
                    strings_field(span, field, v, "(list \"x86_64-linux\" \"i686-linux\")")?;
                if systems.is_empty() {
                    warnings.push(Warning {
                        span: span.clone(),
                        message: "this build-machine has no systems, so no build will ever be offloaded to it".into(),
                    });
                }
                machine.systems = systems;
            }
            "system" => {
                let s = nonempty_string(span, field, v, "\"x86_64-linux\"")?;
                if systems_given {
                    warnings.push(Warning {
                        span: span.clone(),
                        message: format!("build-machine has both system {s:?} and systems: systems is used, as Guix does; remove the deprecated system field"),
                    });
                } else {
                    warnings.push(Warning {
                        span: span.clone(),
                        message: format!("field system of build-machine is deprecated; write (systems (list {s:?})) instead"),
                    });
                    machine.systems = vec![s];
                }
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
                    Ok(HostKeyStatus::Placeholder) => errors.push(format!(
                        "{span}: host-key {key:?} is a placeholder (its key data is cut short with an ellipsis); replace it with the machine's public host key, the line in /etc/ssh/ssh_host_ed25519_key.pub on that machine"
                    )),
                    Err(why) => errors.push(format!(
                        "{span}: host-key {key:?} is not an OpenSSH public key \"TYPE BASE64 [COMMENT]\": it {why}; copy the line in the machine's /etc/ssh/ssh_host_ed25519_key.pub into the string"
                    )),
                }
                machine.host_key = key;
            }
            "port" => {
                machine.port = match v {
                    Value::Int(i) => u16::try_from(*i).ok().filter(|port| *port > 0),
                    _ => None,
                }
                .ok_or_else(|| {
                    field_error(span, field, "an integer between 1 and 65535", v, "22")
                })?
            }
            "private-key" => {
                machine.private_key = match v {
                    Value::Bool(false) => PathBuf::new(),
                    _ => PathBuf::from(nonempty_string(
                        span,
                        field,
                        v,
                        "\"/root/.ssh/id_ed25519\"",
                    )?),
                }
            }
            "compression" => {
                machine.compression = nonempty_string(span, field, v, "\"zlib@openssh.com,zlib\"")?
            }
            "compression-level" => {
                machine.compression_level = match v {
                    Value::Int(i) => *i,
                    _ => return Err(field_error(span, field, "an integer", v, "3")),
                }
            }
            "daemon-socket" => {
                machine.daemon_socket =
                    nonempty_string(span, field, v, "\"/var/ferry/daemon-socket/socket\"")?
            }
            "overload-threshold" => {
                machine.overload_threshold = match v {
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
                }
            }
            "parallel-builds" => {
                machine.parallel_builds = match v {
                    Value::Int(i) => u32::try_from(*i).ok().filter(|n| *n > 0),
                    _ => None,
                }
                .ok_or_else(|| field_error(span, field, "a positive integer", v, "4"))?
            }
            "speed" => {
                machine.speed = positive_number(v)
                    .ok_or_else(|| field_error(span, field, "a positive number", v, "2.0"))?
            }
            "features" => machine.features = strings_field(span, field, v, "(list \"kvm\")")?,
            _ => {
                return Err(SchemeError::new(
                    ErrorKind::Syntax,
                    span,
                    format!("unknown field {field} in build-machine"),
                ))
            }
        }
    }
    if !errors.is_empty() {
        machine.error = Some(errors.join("\n"));
    }
    Ok(machine)
}
