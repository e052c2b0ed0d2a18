//! Table-driven machines files: every `tests/machines/NAME.scm` is loaded
//! with a hermetic context, and compared with its sibling
//!
//! - `NAME.expected`: a JSON array with one object per expected record; each
//!   object's keys are compared with the record's (list them all to pin
//!   every default), and the number of records must match;
//! - `NAME.error`: the expected first line of the error, exactly, or a
//!   substring of it when it does not start with `NAME.scm:`;
//! - optionally `NAME.warnings` (one expected prefix per line, all warnings
//!   accounted for) and `NAME.hint` (a substring of the error's hint).
//!
//! All mismatches are reported together.

use ferry_scheme::{load_machines, EvalContext, Limits};
use std::fs;
use std::path::Path;
use std::time::Duration;

fn context() -> EvalContext {
    EvalContext::hermetic("/home/tester")
        .with_var("FERRY_USER", "builder")
        .with_var("FERRY_COUNT", "3")
        .with_limits(Limits {
            max_steps: 2_000_000,
            timeout: Duration::from_secs(20),
            max_depth: 100_000,
        })
}

fn check(dir: &Path, stem: &str) -> Result<(), String> {
    let file = format!("{stem}.scm");
    let source = fs::read_to_string(dir.join(&file)).map_err(|e| e.to_string())?;
    let read = |ext: &str| fs::read_to_string(dir.join(format!("{stem}.{ext}"))).ok();
    let result = load_machines(&source, &file, context());
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
                for (key, value) in w.as_object().ok_or("records must be objects")? {
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
            let placeholder_only = want_warnings.is_empty()
                && got_warnings.iter().all(|w| w.contains("is a placeholder"))
                && !got_warnings.is_empty();
            if placeholder_only {
                return Err(format!("unexpected warnings: {got_warnings:#?}"));
            }
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
            check(&dir, stem)
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
