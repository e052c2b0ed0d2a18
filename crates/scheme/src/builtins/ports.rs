//! Reading text files, as Guix System's generated machines files do
//! (`(host-key (call-with-input-file FILE (@ (ice-9 textual-ports)
//! get-string-all)))`): `call-with-input-file`, `open-input-file`,
//! `with-input-from-file` (with `read-line`, `read-string` and
//! `current-input-port` reading it), `get-string-all`, `read-line`,
//! `read-string`, `file-exists?` and the end-of-file object. Only reading: a file is read whole when opened, at
//! most [`MAX_FILE_SIZE`] bytes, as UTF-8; relative names are relative to
//! the current directory, as in Guile.

use super::{arity, bad_arg, def, proc_arg, str_arg, Globals};
use crate::error::{runtime_error, SchemeError};
use crate::span::Span;
use crate::value::{HostValue, Value};
use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::io::Read;
use std::rc::Rc;

/// The largest file a machines file may read.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// An input port over a file's text, read when opened.
struct InputPort {
    file: String,
    text: String,
    pos: Cell<usize>,
}

impl HostValue for InputPort {
    fn type_name(&self) -> &str {
        "input-port"
    }
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#<input: {}>", self.file)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The end-of-file object.
struct Eof;

impl HostValue for Eof {
    fn type_name(&self) -> &str {
        "eof-object"
    }
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("#<eof>")
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn host_equal(&self, other: &dyn HostValue) -> bool {
        other.as_any().is::<Eof>()
    }
}

thread_local! {
    /// The ports `with-input-from-file` made current, innermost last.
    static CURRENT: std::cell::RefCell<Vec<Value>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Pops the current input port when `with-input-from-file` ends, even by
/// an error.
struct PopOnDrop;

impl Drop for PopOnDrop {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().pop());
    }
}

fn current_port(proc: &str, span: &Span) -> Result<Value, SchemeError> {
    CURRENT.with(|c| c.borrow().last().cloned()).ok_or_else(|| {
        runtime_error(span, format!("{proc}: there is no current input port to read (standard input is not readable here)"))
            .with_hint("read from a file: (call-with-input-file FILE read-line)")
    })
}

fn eof() -> Value {
    Value::Host(Rc::new(Eof))
}

fn read_text(proc: &str, file: &str, span: &Span) -> Result<String, SchemeError> {
    let fail = |why: String| {
        runtime_error(span, format!("{proc}: cannot read {file:?}: {why}"))
            .with_hint("the file is read when the machines file is evaluated; relative names are relative to the current directory, not to the machines file")
    };
    // Not a FIFO or a device: opening a FIFO blocks, past every limit.
    let meta = std::fs::metadata(file).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("it is not a regular file".into()));
    }
    let f = std::fs::File::open(file).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(fail(format!(
            "it is larger than {} KiB, the most a machines file may read",
            MAX_FILE_SIZE / 1024
        )));
    }
    String::from_utf8(bytes).map_err(|_| fail("it is not UTF-8 text".into()))
}

fn open(proc: &str, args: &[Value], span: &Span) -> Result<Value, SchemeError> {
    let file = str_arg(proc, 0, &args[0], span)?;
    Ok(Value::Host(Rc::new(InputPort {
        file: file.to_string(),
        text: read_text(proc, file, span)?,
        pos: Cell::new(0),
    })))
}

fn port_arg<'v>(
    proc: &str,
    i: usize,
    v: &'v Value,
    span: &Span,
) -> Result<&'v InputPort, SchemeError> {
    v.downcast_host::<InputPort>()
        .ok_or_else(|| bad_arg(proc, i, "an input port", v, span))
}

/// The rest of `port`'s text, or at most `limit` characters of it.
fn take(port: &InputPort, limit: Option<usize>) -> Option<&str> {
    let start = port.pos.get();
    let rest = &port.text[start..];
    if rest.is_empty() {
        return None;
    }
    let end = match limit {
        Some(n) => rest.char_indices().nth(n).map_or(rest.len(), |(i, _)| i),
        None => rest.len(),
    };
    port.pos.set(start + end);
    Some(&rest[..end])
}

pub(super) fn install(g: &mut Globals) {
    def(g, "call-with-input-file", |ctx, args, span| {
        arity("call-with-input-file", args, span, 2, Some(2))?;
        proc_arg("call-with-input-file", 1, &args[1], span)?;
        let port = open("call-with-input-file", args, span)?;
        ctx.call(&args[1], vec![port], span)
    });
    def(g, "with-input-from-file", |ctx, args, span| {
        arity("with-input-from-file", args, span, 2, Some(2))?;
        proc_arg("with-input-from-file", 1, &args[1], span)?;
        let port = open("with-input-from-file", args, span)?;
        CURRENT.with(|c| c.borrow_mut().push(port));
        let _pop = PopOnDrop;
        ctx.call(&args[1], vec![], span)
    });
    def(g, "current-input-port", |_, args, span| {
        arity("current-input-port", args, span, 0, Some(0))?;
        current_port("current-input-port", span)
    });
    def(g, "open-input-file", |_, args, span| {
        arity("open-input-file", args, span, 1, Some(1))?;
        open("open-input-file", args, span)
    });
    for name in ["close-port", "close-input-port", "close"] {
        def(g, name, move |_, args, span| {
            arity(name, args, span, 1, Some(1))?;
            port_arg(name, 0, &args[0], span)?;
            Ok(Value::Unspecified)
        });
    }
    def(g, "file-exists?", |_, args, span| {
        arity("file-exists?", args, span, 1, Some(1))?;
        let file = str_arg("file-exists?", 0, &args[0], span)?;
        Ok(Value::Bool(std::path::Path::new(file).exists()))
    });
    def(g, "get-string-all", |_, args, span| {
        arity("get-string-all", args, span, 1, Some(1))?;
        let port = port_arg("get-string-all", 0, &args[0], span)?;
        Ok(take(port, None).map_or_else(eof, Value::string))
    });
    // Guile's (read-string [port] [count]); also (read-string count port).
    def(g, "read-string", |_, args, span| {
        arity("read-string", args, span, 0, Some(2))?;
        let current;
        let (p, n) = match args {
            [Value::Int(n), p] => (p, Some(n)),
            [p, Value::Int(n)] => (p, Some(n)),
            [Value::Int(n)] => {
                current = current_port("read-string", span)?;
                (&current, Some(n))
            }
            [p] => (p, None),
            [] => {
                current = current_port("read-string", span)?;
                (&current, None)
            }
            [_, other] => return Err(bad_arg("read-string", 1, "an integer", other, span)),
            _ => unreachable!("arity checked"),
        };
        let port = port_arg("read-string", 0, p, span)?;
        let limit = match n {
            Some(n) if *n < 0 => {
                return Err(bad_arg(
                    "read-string",
                    1,
                    "a non-negative integer",
                    &Value::Int(*n),
                    span,
                ))
            }
            Some(n) => Some(usize::try_from(*n).unwrap_or(usize::MAX)),
            None => None,
        };
        if limit == Some(0) {
            return Ok(Value::string(""));
        }
        Ok(take(port, limit).map_or_else(eof, Value::string))
    });
    def(g, "read-line", |_, args, span| {
        arity("read-line", args, span, 0, Some(1))?;
        let current;
        let port = match args.first() {
            Some(p) => port_arg("read-line", 0, p, span)?,
            None => {
                current = current_port("read-line", span)?;
                port_arg("read-line", 0, &current, span)?
            }
        };
        let start = port.pos.get();
        let rest = &port.text[start..];
        if rest.is_empty() {
            return Ok(eof());
        }
        let (line, used) = match rest.find('\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        port.pos.set(start + used);
        Ok(Value::string(line))
    });
    def(g, "eof-object", |_, args, span| {
        arity("eof-object", args, span, 0, Some(0))?;
        Ok(eof())
    });
    def(g, "eof-object?", |_, args, span| {
        arity("eof-object?", args, span, 1, Some(1))?;
        Ok(Value::Bool(args[0].downcast_host::<Eof>().is_some()))
    });
}
