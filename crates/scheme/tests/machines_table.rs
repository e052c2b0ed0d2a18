//! Table-driven machines files: every `tests/machines/NAME.scm` is loaded
//! with a hermetic context, and compared with its sibling
//!
//! - `NAME.expected`: a JSON array with one object per expected record; each
//!   object's keys are compared with the record's (list them all to pin
//!   every default), and the number of records must match; `"error"` is
//!   compared as a substring of the machine's error, and a record whose
//!   object has no `"error"` must have none;
//! - `NAME.error`: the expected first line of the error, exactly, or a
//!   substring of it when it does not start with `NAME.scm:`;
//! - optionally `NAME.warnings` (one expected prefix per line, all warnings
//!   accounted for) and `NAME.hint` (a substring of the error's hint).
//!
//! Files whose name starts with `home-unset` are evaluated without a home
//! directory (HOME unset). `KEYS` in the environment the files see is a
//! temporary directory holding `ed25519.pub` (a host key) and `big` (just
//! over the size limit), for
//! `call-with-input-file` cases; files may also read the committed
//! `tests/machines/keys/...` through a relative name: `cargo test` runs in
//! the crate's directory, and relative names are relative to the current
//! directory, as in Guile.
//!
//! All mismatches are reported together.

use ferry_scheme::{load_machines, EvalContext, Limits};
use std::fs;
use std::path::Path;
use std::time::Duration;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDF2Yb9pZ93InDDHqQXYsm3JUpM8XDVpWegXg0zuoFoB root@childhurd";

fn context(keys: &Path) -> EvalContext {
    EvalContext::hermetic("/home/tester")
        .with_var("KEYS", &keys.display().to_string())
        .with_var("FERRY_USER", "builder")
        .with_var("FERRY_COUNT", "3")
        .with_limits(Limits {
            max_steps: 2_000_000,
            timeout: Duration::from_secs(20),
            max_depth: 100_000,
        })
}

fn check(dir: &Path, keys: &Path, stem: &str) -> Result<(), String> {
    let file = format!("{stem}.scm");
    let source = fs::read_to_string(dir.join(&file)).map_err(|e| e.to_string())?;
    let read = |ext: &str| fs::read_to_string(dir.join(format!("{stem}.{ext}"))).ok();
    let ctx = context(keys);
    let ctx = if stem.starts_with("home-unset") {
        ctx.without_home()
    } else {
        ctx
    };
    let result = load_machines(&source, &file, ctx);
    match (read("expected"), read("error")) {
        (Some(expected), None) => {
            let loaded = result.map_err(|e| format!("expected success, got:\n{e}"))?;
            let expected: serde_json::Value =
                serde_json::from_str(&expected).map_err(|e| format!("bad .expected: {e}"))?;
            let actual = serde_json::to_value(&loaded.machines).map_err(|e| e.to_string())?;
            let (Some(want), Some(got)) = (expected.as_array(), actual.as_array()) else {
                return Err(".expected must be a JSON array".into());
            };
            if want.len() != got.len() {
                return Err(format!(
                    "expected {} records, got {}:\n{actual:#}",
                    want.len(),
                    got.len()
                ));
            }
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                let w = w.as_object().ok_or("records must be objects")?;
                let got_error = g.get("error").and_then(|e| e.as_str());
                match (w.get("error").and_then(|e| e.as_str()), got_error) {
                    (Some(want), Some(got)) if got.contains(want) => {}
                    (None, None) => {}
                    (want, got) => {
                        return Err(format!(
                            "record {}: error: expected {want:?}, got {got:?}",
                            i + 1
                        ))
                    }
                }
                for (key, value) in w.iter().filter(|(k, _)| *k != "error") {
                    if g.get(key) != Some(value) {
                        return Err(format!(
                            "record {}: {key}: expected {value}, got {:?}",
                            i + 1,
                            g.get(key)
                        ));
                    }
                }
            }
            let want_warnings: Vec<String> = read("warnings")
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect();
            let got_warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
            if want_warnings.len() != got_warnings.len()
                || !want_warnings
                    .iter()
                    .zip(&got_warnings)
                    .all(|(w, g)| g.starts_with(w.as_str()))
            {
                return Err(format!(
                    "warnings: expected {want_warnings:#?}, got {got_warnings:#?}"
                ));
            }
            Ok(())
        }
        (None, Some(expected)) => {
            let expected = expected.trim_end_matches('\n');
            let err = match result {
                Ok(m) => {
                    return Err(format!(
                        "expected an error, got {} machines",
                        m.machines.len()
                    ))
                }
                Err(e) => e,
            };
            let headline = err.headline();
            let ok = if expected.starts_with(&format!("{file}:")) {
                headline == expected
            } else {
                headline.contains(expected)
            };
            if !ok {
                return Err(format!("expected error\n  {expected}\ngot\n  {err}"));
            }
            if let Some(hint) = read("hint") {
                let hint = hint.trim();
                if !err.hint.as_deref().unwrap_or("").contains(hint) {
                    return Err(format!(
                        "expected hint containing {hint:?}, got {:?}",
                        err.hint
                    ));
                }
            }
            Ok(())
        }
        _ => Err("needs exactly one of .expected and .error".into()),
    }
}

#[test]
fn machines_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/machines");
    let keys = tempfile::tempdir().unwrap();
    fs::write(keys.path().join("ed25519.pub"), format!("{KEY}\n")).unwrap();
    fs::write(keys.path().join("big"), vec![b'x'; (1 << 20) + 1]).unwrap();
    let mut stems: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".scm")
                .map(String::from)
        })
        .collect();
    stems.sort();
    assert!(stems.len() >= 40, "only {} files", stems.len());
    let failures: Vec<String> = stems
        .iter()
        .filter_map(|stem| {
            check(&dir, keys.path(), stem)
                .err()
                .map(|e| format!("--- {stem}.scm: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        stems.len(),
        failures.join("\n")
    );
    eprintln!("{} machines files checked", stems.len());
}
