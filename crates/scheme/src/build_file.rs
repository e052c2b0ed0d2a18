//! Build files: Scheme files that describe derivations.
//!
//! ```scheme
//! (define hello
//!   (derivation "hello"
//!     #:builder "/bin/sh"
//!     #:args '("-c" "echo hello > $out")))
//! (derivation "greeting"
//!   #:builder "/bin/sh"
//!   #:args (list "-c" (string-append "cat " (derivation-output hello) " > $out")))
//! ```
//!
//! Evaluation is pure: `derivation` computes the `.drv` and its output paths
//! (hashing local input files, which it reads but never writes) and returns
//! a [`DrvObject`]; the caller writes the sources and `.drv` files to the
//! store afterwards ([`DrvObject::closure`] gives the order).
//!
//! Inputs are found two ways, as in Nix: listed in `#:inputs`
//! (derivations, `(drv "output" ...)`, local files, store paths), and found in
//! the strings of the builder, args and env (an output path of a derivation
//! made in this file, or a `local-file`, is an input when its path appears),
//! so `(string-append (derivation-output gcc) "/bin/gcc")` just works.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ferry_formats::derivation::Derivation;
use ferry_formats::hash::HashingWriter;
use ferry_formats::{nar, Sha256Hash, StoreDir, StorePath};

use crate::error::{ErrorKind, SchemeError, Warning};
use crate::eval::{Interpreter, NativeCtx};
use crate::span::Span;
use crate::value::{HostValue, Value};
use crate::{split_keywords, EvalContext};

/// A derivation made by a build file, with what writing it needs.
pub struct DrvObject {
    /// Complete: output paths filled in.
    pub drv: Derivation,
    pub drv_path: StorePath,
    /// Local files and directories to add to the store, with the path each
    /// must get.
    pub sources: Vec<(PathBuf, StorePath)>,
    /// Input derivations made in the same file.
    pub inputs: Vec<Rc<DrvObject>>,
}

impl DrvObject {
    /// The absolute path of an output.
    pub fn output_path(&self, output: &str) -> Option<&str> {
        self.drv.outputs.get(output).map(|o| o.path.as_str())
    }

    /// These derivations and their inputs, each once, inputs first: the
    /// order in which to write them to the store.
    pub fn closure(roots: &[Rc<DrvObject>]) -> Vec<Rc<DrvObject>> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for root in roots {
            let mut stack = vec![(root.clone(), 0usize)];
            while let Some((obj, next)) = stack.pop() {
                if seen.contains(obj.drv_path.base_name()) {
                    continue;
                }
                if let Some(input) = obj.inputs.get(next).cloned() {
                    stack.push((obj, next + 1));
                    stack.push((input, 0));
                } else {
                    seen.insert(obj.drv_path.base_name().to_string());
                    out.push(obj);
                }
            }
        }
        out
    }
}

impl HostValue for DrvObject {
    fn type_name(&self) -> &str {
        "derivation"
    }
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#<derivation {}>", self.drv_path)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn host_equal(&self, other: &dyn HostValue) -> bool {
        other
            .as_any()
            .downcast_ref::<DrvObject>()
            .is_some_and(|o| o.drv_path == self.drv_path)
    }
}

/// What evaluating a build file gives.
pub struct BuildFile {
    /// The derivations the file returned, in order.
    pub roots: Vec<Rc<DrvObject>>,
    pub warnings: Vec<Warning>,
}

/// Where a store path seen in a string comes from.
enum Known {
    Output { drv: Rc<DrvObject>, output: String },
    Source(PathBuf),
}

/// State shared by the build-file primitives during one evaluation.
struct BuildState {
    store_dir: StoreDir,
    base_dir: PathBuf,
    system: String,
    /// hashDerivationModulo of each derivation made so far, by .drv path.
    drv_hashes: HashMap<String, Sha256Hash>,
    /// Output and source paths made so far, by absolute path.
    known: HashMap<String, Known>,
    /// Source paths of local files already hashed.
    local_files: HashMap<PathBuf, StorePath>,
}

/// Evaluate a build file: its value must be a derivation or a list of them.
pub fn load_build_file(
    path: &Path,
    ctx: EvalContext,
    store_dir: &StoreDir,
    system: &str,
) -> Result<BuildFile, SchemeError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        SchemeError::file_error(
            ErrorKind::Io,
            &file,
            format!("cannot read the build file: {e}"),
        )
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    eval_build_file(&source, &file, ctx, store_dir, system, &base_dir)
}

/// Evaluate build-file text; relative local files are taken from `base_dir`.
pub fn eval_build_file(
    source: &str,
    file: &str,
    ctx: EvalContext,
    store_dir: &StoreDir,
    system: &str,
    base_dir: &Path,
) -> Result<BuildFile, SchemeError> {
    let mut interp = Interpreter::new(ctx);
    install(&mut interp, store_dir, system, base_dir);
    let value = interp.eval_file(source, file)?;
    let span = interp
        .last_form_span()
        .cloned()
        .unwrap_or_else(|| Span::new(file.into(), 1, 1));
    let not_drv = |v: &Value| {
        SchemeError::new(
            ErrorKind::Type,
            &span,
            format!(
                "a build file must return a derivation or a list of derivations, not {}",
                v.describe()
            ),
        )
        .with_hint("end the file with the derivation to build, or (list drv1 drv2 ...)")
    };
    let as_drv = |v: &Value| match v {
        Value::Host(h) => as_drv_object(h),
        _ => None,
    };
    let roots = match (as_drv(&value), value.list_to_vec()) {
        (Some(d), _) => vec![d],
        (None, Some(items)) if !items.is_empty() => items
            .iter()
            .map(|v| as_drv(v).ok_or_else(|| not_drv(v)))
            .collect::<Result<_, _>>()?,
        _ => return Err(not_drv(&value)),
    };
    Ok(BuildFile {
        roots,
        warnings: interp.take_warnings(),
    })
}

/// The derivation inside a host value, if it holds one.
fn as_drv_object(h: &Rc<dyn HostValue>) -> Option<Rc<DrvObject>> {
    let any: Rc<dyn std::any::Any> = h.clone();
    any.downcast::<DrvObject>().ok()
}

/// Define `derivation`, `derivation-output` and `local-file`.
pub fn install(interp: &mut Interpreter, store_dir: &StoreDir, system: &str, base_dir: &Path) {
    let state = Rc::new(RefCell::new(BuildState {
        store_dir: store_dir.clone(),
        base_dir: base_dir.to_path_buf(),
        system: system.to_string(),
        drv_hashes: HashMap::new(),
        known: HashMap::new(),
        local_files: HashMap::new(),
    }));
    let st = state.clone();
    interp.define_native("derivation", move |ctx, args, span| {
        make_derivation(&mut st.borrow_mut(), ctx, args, span)
    });
    interp.define_native("derivation-output", |_, args, span| {
        let (drv, output) = match args {
            [d] => (d, "out".to_string()),
            [d, o] => (d, text(o, "output name", span)?),
            _ => {
                return Err(type_err(
                    span,
                    format!("derivation-output takes a derivation and an optional output name, got {} arguments", args.len()),
                ))
            }
        };
        let obj = drv_arg(drv, span)?;
        obj.output_path(&output)
            .map(Value::string)
            .ok_or_else(|| {
                type_err(
                    span,
                    format!(
                        "derivation {} has no output {output:?}; its outputs are {}",
                        obj.drv_path,
                        obj.drv.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
    });
    let st = state;
    interp.define_native("local-file", move |_, args, span| {
        let [p] = args else {
            return Err(type_err(span, "local-file takes one file name"));
        };
        let mut st = st.borrow_mut();
        let path = st.local_source(&text(p, "file name", span)?, span)?;
        Ok(Value::string(&st.store_dir.display(&path)))
    });
}

fn type_err(span: &Span, msg: impl Into<String>) -> SchemeError {
    SchemeError::new(ErrorKind::Type, span, msg)
}

fn text(v: &Value, what: &str, span: &Span) -> Result<String, SchemeError> {
    match v {
        Value::Str(s) => Ok(s.to_string()),
        Value::Symbol(s) => Ok(s.to_string()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(type_err(
            span,
            format!("{what} must be a string, got {}", other.describe()),
        )),
    }
}

fn strings(v: &Value, what: &str, span: &Span) -> Result<Vec<String>, SchemeError> {
    v.list_to_vec()
        .ok_or_else(|| type_err(span, format!("{what} must be a list, got {}", v.describe())))?
        .iter()
        .map(|x| text(x, &format!("each of {what}"), span))
        .collect()
}

fn drv_arg(v: &Value, span: &Span) -> Result<Rc<DrvObject>, SchemeError> {
    match v {
        Value::Host(h) => as_drv_object(h),
        _ => None,
    }
    .ok_or_else(|| type_err(span, format!("expected a derivation, got {}", v.describe())))
}

const KEYWORDS: &str = "#:builder #:args #:env #:system #:inputs #:outputs";

impl BuildState {
    /// The source path a local file or directory gets (hashing it once).
    fn local_source(&mut self, name: &str, span: &Span) -> Result<StorePath, SchemeError> {
        let full = self.base_dir.join(name);
        if let Some(p) = self.local_files.get(&full) {
            return Ok(p.clone());
        }
        let base = full
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                type_err(
                    span,
                    format!("{name:?}: cannot take a store name from this file name"),
                )
            })?
            .to_string();
        let mut hw = HashingWriter::new(io::sink());
        nar::dump(&full, &mut hw).map_err(|e| {
            SchemeError::new(
                ErrorKind::Io,
                span,
                format!("input file {}: {e}", full.display()),
            )
            .with_hint("local inputs are taken relative to the build file's directory")
        })?;
        let (hash, _, _) = hw.finish();
        let path = self
            .store_dir
            .source_path(&base, &hash, &[], false)
            .map_err(|e| type_err(span, format!("input file {}: {e}", full.display())))?;
        self.local_files.insert(full.clone(), path.clone());
        self.known
            .insert(self.store_dir.display(&path), Known::Source(full));
        Ok(path)
    }

    /// Store paths of this file's outputs and local files that `s` mentions.
    fn mentioned(&self, s: &str) -> Vec<&Known> {
        let prefix = format!("{}/", self.store_dir);
        let mut found = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find(&prefix) {
            let after = &rest[i + prefix.len()..];
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || "+-._?=".contains(c)))
                .unwrap_or(after.len());
            let abs = format!("{prefix}{}", &after[..end]);
            if let Some(k) = self.known.get(&abs) {
                found.push(k);
            }
            rest = &after[end..];
        }
        found
    }
}

fn make_derivation(
    st: &mut BuildState,
    _ctx: &mut NativeCtx<'_>,
    args: &[Value],
    span: &Span,
) -> Result<Value, SchemeError> {
    let (positional, keywords) = split_keywords(args, span)?;
    let [name] = positional.as_slice() else {
        return Err(type_err(
            span,
            format!("derivation takes one name and keyword arguments ({KEYWORDS}), got {} positional arguments", positional.len()),
        ));
    };
    let name = text(name, "the derivation name", span)?;
    ferry_formats::store_path::validate_name(&name)
        .map_err(|e| type_err(span, format!("derivation name: {e}")))?;
    let mut builder = None;
    let mut drv_args = Vec::new();
    let mut env = BTreeMap::new();
    let mut system = st.system.clone();
    let mut input_values = Vec::new();
    let mut outputs = vec!["out".to_string()];
    for (k, v) in &keywords {
        match &**k {
            "builder" => builder = Some(text(v, "#:builder", span)?),
            "args" => drv_args = strings(v, "#:args", span)?,
            "system" => system = text(v, "#:system", span)?,
            "outputs" => outputs = strings(v, "#:outputs", span)?,
            "inputs" => {
                input_values = v.list_to_vec().ok_or_else(|| {
                    type_err(
                        span,
                        format!("#:inputs must be a list, got {}", v.describe()),
                    )
                })?
            }
            "env" => {
                for entry in v.list_to_vec().ok_or_else(|| {
                    type_err(
                        span,
                        format!("#:env must be an association list, got {}", v.describe()),
                    )
                })? {
                    let Value::Pair(p) = &entry else {
                        return Err(type_err(
                            span,
                            format!(
                                "each #:env entry must be a pair (\"NAME\" . \"value\"), got {}",
                                entry.describe()
                            ),
                        ));
                    };
                    let value = match &p.cdr {
                        // Accept ("NAME" "value") as well as ("NAME" . "value").
                        Value::Pair(q) if matches!(q.cdr, Value::Nil) => &q.car,
                        other => other,
                    };
                    env.insert(
                        text(&p.car, "an #:env name", span)?,
                        text(value, "an #:env value", span)?,
                    );
                }
            }
            other => {
                return Err(
                    type_err(span, format!("derivation has no keyword #:{other}"))
                        .with_hint(format!("the keywords are {KEYWORDS}")),
                )
            }
        }
    }
    let builder = builder.ok_or_else(|| {
        type_err(span, format!("derivation {name:?} needs #:builder"))
            .with_hint("e.g. #:builder \"/bin/sh\" #:args '(\"-c\" \"echo hi > $out\")")
    })?;
    if outputs.is_empty() {
        return Err(type_err(span, "#:outputs must name at least one output"));
    }
    for reserved in ["name", "builder", "system", "outputs"]
        .into_iter()
        .chain(outputs.iter().map(String::as_str))
    {
        if env.contains_key(reserved) {
            return Err(type_err(
                span,
                format!("#:env may not set {reserved:?}: the derivation sets it itself"),
            ));
        }
    }

    let mut drv = Derivation {
        system,
        builder,
        args: drv_args,
        ..Default::default()
    };
    let mut inputs: Vec<Rc<DrvObject>> = Vec::new();
    let mut sources = Vec::new();
    let store_dir = st.store_dir.clone();
    let mut add_drv_input = |drv: &mut Derivation, obj: Rc<DrvObject>, outs: Vec<String>| {
        drv.input_drvs
            .entry(store_dir.display(&obj.drv_path))
            .or_default()
            .extend(outs);
        if !inputs.iter().any(|i| i.drv_path == obj.drv_path) {
            inputs.push(obj);
        }
    };
    for input in &input_values {
        match input {
            Value::Host(_) => {
                let obj = drv_arg(input, span)?;
                let outs = obj.drv.outputs.keys().cloned().collect();
                add_drv_input(&mut drv, obj, outs);
            }
            Value::Pair(p) if matches!(p.car, Value::Host(_)) => {
                let obj = drv_arg(&p.car, span)?;
                let outs = strings(&p.cdr, "the outputs of an input", span)?;
                for o in &outs {
                    if !obj.drv.outputs.contains_key(o) {
                        return Err(type_err(span, format!("input {} has no output {o:?}", obj.drv_path)));
                    }
                }
                add_drv_input(&mut drv, obj, outs);
            }
            Value::Str(s) if s.starts_with(&format!("{}/", st.store_dir)) => {
                let p = st
                    .store_dir
                    .parse(s)
                    .map_err(|e| type_err(span, format!("input {s:?}: {e}")))?;
                // A path made in this file (`local-file`, `derivation-output`)
                // is an input the way its maker says, so it gets written.
                match st.known.get(&**s) {
                    Some(Known::Output { drv: obj, output }) => {
                        let (obj, output) = (obj.clone(), output.clone());
                        add_drv_input(&mut drv, obj, vec![output]);
                    }
                    Some(Known::Source(local)) => {
                        if drv.input_srcs.insert(s.to_string()) {
                            sources.push((local.clone(), p));
                        }
                    }
                    None => {
                        drv.input_srcs.insert(s.to_string());
                    }
                }
            }
            Value::Str(s) => {
                let p = st.local_source(s, span)?;
                if drv.input_srcs.insert(st.store_dir.display(&p)) {
                    sources.push((st.base_dir.join(&**s), p));
                }
            }
            other => {
                return Err(type_err(
                    span,
                    format!("each input must be a derivation, (derivation \"output\" ...), a local file name or a store path; got {}", other.describe()),
                ))
            }
        }
    }
    // Inputs mentioned in strings, as Nix's string context would carry them.
    let mut texts: Vec<&str> = vec![drv.builder.as_str()];
    texts.extend(drv.args.iter().map(String::as_str));
    texts.extend(env.values().map(String::as_str));
    let mut mentioned_drvs = Vec::new();
    for t in texts {
        for k in st.mentioned(t) {
            match k {
                Known::Output { drv: obj, output } => {
                    mentioned_drvs.push((obj.clone(), output.clone()))
                }
                Known::Source(local) => {
                    let p = st.local_files[local].clone();
                    let abs = st.store_dir.display(&p);
                    if drv.input_srcs.insert(abs) {
                        sources.push((local.clone(), p));
                    }
                }
            }
        }
    }
    for (obj, output) in mentioned_drvs {
        add_drv_input(&mut drv, obj, vec![output]);
    }

    drv.env = env;
    drv.env.insert("name".into(), name.clone());
    drv.env.insert("builder".into(), drv.builder.clone());
    drv.env.insert("system".into(), drv.system.clone());
    if outputs != ["out"] {
        drv.env.insert("outputs".into(), outputs.join(" "));
    }
    for o in &outputs {
        drv.outputs.insert(o.clone(), Default::default());
        drv.env.insert(o.clone(), String::new());
    }
    let hashes = &st.drv_hashes;
    let mut lookup = |p: &str| {
        hashes
            .get(p)
            .copied()
            .ok_or_else(|| ferry_formats::derivation::DerivationError::Cycle(p.to_string()))
    };
    drv.fill_output_paths(&st.store_dir, &mut lookup)
        .map_err(|e| type_err(span, format!("derivation {name:?}: {e}")))?;
    let hash = drv
        .hash_modulo(&mut lookup)
        .map_err(|e| type_err(span, format!("derivation {name:?}: {e}")))?;
    let drv_path = drv
        .drv_path(&st.store_dir, &name)
        .map_err(|e| type_err(span, format!("derivation {name:?}: {e}")))?;
    st.drv_hashes.insert(st.store_dir.display(&drv_path), hash);
    let obj = Rc::new(DrvObject {
        drv,
        drv_path,
        sources,
        inputs,
    });
    for (o, out) in &obj.drv.outputs {
        st.known.insert(
            out.path.clone(),
            Known::Output {
                drv: obj.clone(),
                output: o.clone(),
            },
        );
    }
    Ok(Value::Host(obj))
}
