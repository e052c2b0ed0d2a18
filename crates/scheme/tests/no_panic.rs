//! No input makes the reader or the evaluator panic or overflow the stack:
//! every prefix of every test file, and arbitrary strings.

use ferry_scheme::{load_machines, read_all, EvalContext, Limits};
use proptest::prelude::*;
use std::time::Duration;

fn context() -> EvalContext {
    EvalContext::hermetic("/home/t").with_limits(Limits {
        max_steps: 20_000,
        timeout: Duration::from_secs(2),
        max_depth: 10_000,
    })
}

/// Runs on a thread with Rust's default 2 MiB stack, like any test thread.
fn on_default_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn every_truncation_of_every_test_file() {
    on_default_stack(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/machines");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "scm") {
                let text = std::fs::read_to_string(&path).unwrap();
                let cuts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
                for &cut in &cuts {
                    let _ = load_machines(&text[..cut], "cut.scm", context());
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000);
    });
}

#[test]
fn deepest_allowed_nesting_fits_a_default_stack() {
    on_default_stack(|| {
        let n = ferry_scheme::MAX_NESTING;
        let src = format!("{}1{}", "(list ".repeat(n), ")".repeat(n));
        let mut interp = ferry_scheme::Interpreter::new(context());
        interp.eval_file(&src, "deep.scm").unwrap();
        let quoted = format!("'{}{}", "(".repeat(n - 1), ")".repeat(n - 1));
        interp.eval_file(&quoted, "deep.scm").unwrap();
        let too_deep = format!("{}1{}", "(list ".repeat(n + 1), ")".repeat(n + 1));
        assert!(interp.eval_file(&too_deep, "deep.scm").is_err());
        // A very long list, dropped without recursion.
        interp
            .eval_file("(define big (iota 1000000)) (set! big #f)", "big.scm")
            .unwrap();
        // A deeply nested value built at run time: printing and dropping it.
        let e = interp
            .eval_file("(let loop ((i 0) (acc '())) (if (< i 5000) (loop (+ i 1) (list acc)) (car acc 1)))", "nest.scm")
            .unwrap_err();
        assert!(e.to_string().len() < 2000);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn reader_never_panics(src in "\\PC{0,200}") {
        let _ = read_all(&src, "p.scm");
    }

    #[test]
    fn evaluator_never_panics(src in "[()#;'`,@ \\n\"\\\\a-z0-9.|:+*/<>=?!-]{0,120}") {
        let _ = load_machines(&src, "p.scm", context());
    }

    #[test]
    fn evaluator_never_panics_on_scheme_like_input(
        parts in proptest::collection::vec(proptest::sample::select(vec![
            "(", ")", "'", "`", ",", ",@", "#(", "\"s\"", "1", "2.", ".5", "#t", "#:k", "#\\a",
            "define", "lambda", "let", "let*", "letrec", "if", "cond", "case", "else", "=>", "and", "or",
            "begin", "set!", "when", "quasiquote", "x", "f", "list", "car", "cdr", "map", "apply", "iota",
            "append", "format", "#f", "build-machine", "name", "systems", "inherit", "(@ (srfi srfi-1) map)",
            "string-append", "+", "-", "/", "loop", ".", " ",
        ]), 0..60)
    ) {
        let src = parts.join(" ");
        let _ = load_machines(&src, "p.scm", context());
    }
}
