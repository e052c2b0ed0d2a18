//! The evaluator: forms, procedures, limits, and the extension API.

use ferry_scheme::{
    load_machines, split_keywords, ErrorKind, EvalContext, HostValue, Interpreter, Limits,
    SchemeError, Value,
};
use std::any::Any;
use std::time::{Duration, Instant};

fn eval(src: &str) -> Result<Value, SchemeError> {
    Interpreter::new(EvalContext::hermetic("/home/t").with_var("HOST", "h1"))
        .eval_file(src, "e.scm")
}

fn show(src: &str) -> String {
    eval(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .to_string()
}

fn fails(src: &str) -> SchemeError {
    eval(src).expect_err(src)
}

#[test]
fn special_forms() {
    let cases = [
        ("(define x 2) (* x 21)", "42"),
        ("(define (f a . rest) (list a rest)) (f 1 2 3)", "(1 (2 3))"),
        ("((lambda args args) 1 2)", "(1 2)"),
        ("((lambda (a . b) b) 1)", "()"),
        ("(define (f) (define a 1) (define (g) (+ a 1)) (g)) (f)", "2"),
        ("(let ((a 1) (b 2)) (+ a b))", "3"),
        ("(let* ((a 1) (b (+ a 1))) (list a b))", "(1 2)"),
        ("(letrec ((ev? (lambda (n) (if (= n 0) #t (od? (- n 1))))) (od? (lambda (n) (if (= n 0) #f (ev? (- n 1)))))) (ev? 10))", "#t"),
        ("(letrec* ((a 1) (b (+ a 1))) b)", "2"),
        ("(let loop ((i 0) (acc '())) (if (= i 3) (reverse acc) (loop (+ i 1) (cons i acc))))", "(0 1 2)"),
        ("(if #f 1)", "#<unspecified>"),
        ("(cond ((assv 2 '((1 . a) (2 . b))) => cdr) (else 'no))", "b"),
        ("(cond (#f 1) ((+ 1 1)) (else 3))", "2"),
        ("(cond (#f 1))", "#<unspecified>"),
        ("(case (* 2 3) ((2 3 5 7) 'prime) ((1 4 6 8 9) 'composite))", "composite"),
        ("(case 'x ((a) 1) (else => (lambda (v) v)))", "x"),
        ("(when (> 1 0) 'a 'b)", "b"),
        ("(unless (> 1 0) 'a)", "#<unspecified>"),
        ("(and)", "#t"),
        ("(and 1 2 #f 3)", "#f"),
        ("(and 1 2)", "2"),
        ("(or)", "#f"),
        ("(or #f 2 (error \"not evaluated\"))", "2"),
        ("(begin 1 2 3)", "3"),
        ("(define x 1) (set! x (+ x 1)) x", "2"),
        ("`(1 ,(+ 1 1) ,@(list 3 4) . 5)", "(1 2 3 4 . 5)"),
        ("`#(1 ,(+ 1 1))", "#(1 2)"),
        ("`(a `(b ,(c ,(+ 1 2))))", "(a `(b ,(c 3)))"),
        ("'(quote x)", "'x"),
        ("(use-modules (srfi srfi-1)) ((@ (srfi srfi-1) append-map) (lambda (x) (list x x)) '(1 2))", "(1 1 2 2)"),
        ("#:key", "#:key"),
    ];
    for (src, want) in cases {
        assert_eq!(show(src), want, "{src}");
    }
}

#[test]
fn procedures() {
    let cases = [
        ("(map + '(1 2 3) '(10 20 30 40))", "(11 22 33)"),
        ("(let ((n 0)) (for-each (lambda (x) (set! n (+ n x))) '(1 2 3)) n)", "6"),
        ("(filter odd? (iota 6))", "(1 3 5)"),
        ("(apply + 1 2 '(3 4))", "10"),
        ("(apply max '(3 9 2))", "9"),
        ("(length '(1 2 3))", "3"),
        ("(list-ref '(a b c) 2)", "c"),
        ("(assoc \"b\" '((\"a\" . 1) (\"b\" . 2)))", "(\"b\" . 2)"),
        ("(assq 'b '((a 1) (b 2)))", "(b 2)"),
        ("(member \"x\" '(\"y\" \"x\" \"z\"))", "(\"x\" \"z\")"),
        ("(memq 'z '(a b))", "#f"),
        ("(iota 3)", "(0 1 2)"),
        ("(iota 3 1)", "(1 2 3)"),
        ("(iota 3 0 .5)", "(0.0 0.5 1.0)"),
        ("(append '(1) '() '(2 3) 4)", "(1 2 3 . 4)"),
        ("(caddr '(1 2 3))", "3"),
        ("(cdddr '(1 2 3 4))", "(4)"),
        ("(string-append \"a\" \"b\" \"c\")", "\"abc\""),
        ("(string=? \"a\" \"a\" \"a\")", "#t"),
        ("(string-prefix? \"bu\" \"build\")", "#t"),
        ("(number->string 2.)", "\"2.0\""),
        ("(number->string 255 16)", "\"ff\""),
        ("(string->number \"1e2\")", "100.0"),
        ("(string->number \"nope\")", "#f"),
        ("(symbol->string 'abc)", "\"abc\""),
        ("(getenv \"HOST\")", "\"h1\""),
        ("(getenv \"HOME\")", "#f"),
        ("(equal? '(1 (2 #(3))) (list 1 (list 2 (vector 3))))", "#t"),
        ("(eq? 'a 'a)", "#t"),
        ("(eqv? 1.5 1.5)", "#t"),
        ("(eq? '(1) '(1))", "#f"),
        ("(list (null? '()) (pair? '()) (list? '(1 . 2)) (string? \"s\") (number? 1.) (symbol? 'a) (procedure? car) (boolean? #f) (zero? 0))", "(#t #f #f #t #t #t #t #t #t)"),
        ("(list (+) (+ 1 2.5) (- 5) (- 10 1 2) (* 2 3) (/ 1 2) (/ 6 3) (/ 1. 4))", "(0 3.5 -5 7 6 0.5 2 0.25)"),
        ("(list (= 1 1.0) (< 1 2 3) (< 1 3 2) (>= 3 3 1) (<= 1 1))", "(#t #t #f #t #t)"),
        ("(list (quotient 7 2) (remainder -7 2) (modulo -7 2) (abs -3) (min 1 2.) (expt 2 10) (exact->inexact 1))", "(3 -1 1 3 1.0 1024 1.0)"),
        ("(format #f \"~a|~s|~d|~%|~~\" \"x\" \"y\" 3)", "\"x|\\\"y\\\"|3|\\n|~\""),
        ("(format #f \"build~a.example.org\" 7)", "\"build7.example.org\""),
        ("(string-join '(\"a\" \"b\") \",\")", "\"a,b\""),
        ("(string-split \"a:b:c\" #\\:)", "(\"a\" \"b\" \"c\")"),
        ("(list->vector '(1 2))", "#(1 2)"),
        ("(sort '(3 1 2) <)", "(1 2 3)"),
        ("(fold + 0 '(1 2 3))", "6"),
        ("(reduce max 0 '(1 5 2))", "5"),
        ("(delete-duplicates '(1 2 1 3 2))", "(1 2 3)"),
        ("(last '(1 2 3))", "3"),
        ("(not 1)", "#f"),
        ("(reverse '(1 2 3))", "(3 2 1)"),
    ];
    for (src, want) in cases {
        assert_eq!(show(src), want, "{src}");
    }
}

#[test]
fn tail_calls_run_in_constant_space() {
    // Space is what this test is about: a loaded machine running a debug
    // build may take longer than the default deadline.
    let ctx = EvalContext::hermetic("/").with_limits(Limits {
        max_depth: 100,
        timeout: std::time::Duration::from_secs(120),
        ..Limits::default()
    });
    let mut interp = Interpreter::new(ctx);
    let v = interp
        .eval_file(
            "(let loop ((i 0)) (if (< i 1000000) (loop (+ i 1)) i))",
            "loop.scm",
        )
        .unwrap();
    assert_eq!(v.to_string(), "1000000");
    // Mutual recursion, cond and and/or in tail position too.
    let v = interp
        .eval_file(
            "(define (a n) (cond ((= n 0) 'done) (else (and #t (b (- n 1))))))
             (define (b n) (or #f (a n)))
             (a 100000)",
            "mutual.scm",
        )
        .unwrap();
    assert_eq!(v.to_string(), "done");
}

#[test]
fn deep_recursion_is_an_error_not_a_crash() {
    // Run on a small stack to show the evaluator does not use it.
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let e =
                eval("(define (f n) (if (= n 0) 0 (+ 1 (f (- n 1))))) (f 10000000)").unwrap_err();
            (e.kind, e.to_string())
        })
        .unwrap();
    let (kind, message) = handle.join().unwrap();
    assert_eq!(kind, ErrorKind::Limit);
    assert!(message.contains("nested calls are pending"), "{message}");
    // Within the limit, deep non-tail recursion works.
    assert_eq!(
        show("(define (f n) (if (= n 0) 0 (+ 1 (f (- n 1))))) (f 50000)"),
        "50000"
    );
    // Recursion through map is limited too.
    let e = fails("(define (g n) (map (lambda (x) (g x)) (list n))) (g 1)");
    assert_eq!(e.kind, ErrorKind::Limit);
}

#[test]
fn step_budget_and_deadline() {
    let ctx = EvalContext::hermetic("/").with_limits(Limits {
        max_steps: 10_000,
        ..Limits::default()
    });
    let e = Interpreter::new(ctx)
        .eval_file(
            "(define x 0)\n(let loop ()\n  (set! x (+ x 1))\n  (loop))",
            "spin.scm",
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    assert!(e.headline().starts_with("spin.scm:"), "{e}");
    assert!(e.headline().contains("after 10000 steps"), "{e}");

    let ctx = EvalContext::hermetic("/").with_limits(Limits {
        max_steps: u64::MAX,
        timeout: Duration::from_millis(100),
        ..Limits::default()
    });
    let started = Instant::now();
    let e = Interpreter::new(ctx)
        .eval_file("(let loop () (loop))", "forever.scm")
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(e.kind, ErrorKind::Limit);
    assert!(e.headline().starts_with("forever.scm:1:"), "{e}");
    assert!(e.headline().contains("the time limit"), "{e}");
}

#[test]
fn error_messages() {
    let e = fails("(define lst '(1))\n(car lts)");
    assert_eq!(e.headline(), "e.scm:2:6: error: unbound variable lts");
    assert_eq!(e.hint.as_deref(), Some("did you mean lst?"));
    assert_eq!(
        fails("(car '())").headline(),
        "e.scm:1:1: error: car needs a list long enough, but got the empty list '()"
    );
    assert_eq!(
        fails("(+ 1 \"2\")").headline(),
        "e.scm:1:1: error: argument 2 of + must be a number, got the string \"2\""
    );
    assert_eq!(
        fails("(/ 1 0)").headline(),
        "e.scm:1:1: error: division by zero"
    );
    assert!(fails("(* 9223372036854775807 2)")
        .headline()
        .contains("integer overflow"));
    assert_eq!(
        fails("(error \"boom:\" 42)").headline(),
        "e.scm:1:1: error: boom: 42"
    );
    assert!(fails("(define-syntax x 1)")
        .hint
        .unwrap()
        .contains("does not support"));
    assert!(fails("(let ((x)) x)")
        .headline()
        .contains("a let binding must be (NAME VALUE)"));
    assert!(fails("(lambda (x x) x)")
        .headline()
        .contains("parameter x appears twice"));
    let shown = fails("(f)").to_string();
    assert!(
        shown.starts_with("e.scm:1:2: error: unbound variable f\nhint: "),
        "{shown}"
    );
}

#[derive(Debug)]
struct Derivation {
    builder: String,
}

impl HostValue for Derivation {
    fn type_name(&self) -> &str {
        "derivation"
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[test]
fn natives_keywords_and_host_values() {
    let mut interp = Interpreter::new(EvalContext::hermetic("/"));
    interp.define_native("derivation", |ctx, args, span| {
        let (positional, keywords) = split_keywords(args, span)?;
        assert!(positional.is_empty());
        let builder = keywords
            .iter()
            .find(|(k, _)| &**k == "builder")
            .and_then(|(_, v)| v.as_str().map(String::from))
            .ok_or_else(|| SchemeError::new(ErrorKind::Type, span, "derivation needs #:builder"))?;
        ctx.warn(span, "made a derivation");
        Ok(Value::Host(std::rc::Rc::new(Derivation { builder })))
    });
    interp.define_native("call-twice", |ctx, args, span| {
        let once = ctx.call(&args[0], vec![Value::Int(1)], span)?;
        ctx.call(&args[0], vec![once], span)
    });
    let v = interp
        .eval_file("(call-twice (lambda (n) (* n 10)))", "n.scm")
        .unwrap();
    assert_eq!(v.to_string(), "100");
    let v = interp
        .eval_file(
            "(derivation #:name \"hello\" #:builder \"/bin/sh\")",
            "d.scm",
        )
        .unwrap();
    assert_eq!(v.downcast_host::<Derivation>().unwrap().builder, "/bin/sh");
    assert_eq!(v.to_string(), "#<derivation>");
    assert_eq!(
        interp.warnings()[0].to_string(),
        "d.scm:1:1: warning: made a derivation"
    );
    let e = interp
        .eval_file("(derivation #:name)", "d.scm")
        .unwrap_err();
    assert!(e.headline().contains("keyword #:name has no value"), "{e}");
}

#[test]
fn a_thousand_machines_load() {
    let mut src = String::from("(list\n");
    for i in 0..1000 {
        src.push_str(&format!(
            " (build-machine (name \"build{i}.example.org\") (systems (list \"x86_64-linux\" \"i686-linux\")) (user \"offload\") (host-key \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{i:0>43}\") (parallel-builds {}) (speed {}.5))\n",
            i % 8 + 1,
            i % 4 + 1
        ));
    }
    src.push(')');
    let loaded = load_machines(&src, "many.scm", EvalContext::hermetic("/root")).unwrap();
    assert_eq!(loaded.machines.len(), 1000);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings.first());
    assert_eq!(loaded.machines[999].name, "build999.example.org");
    assert_eq!(loaded.machines[999].parallel_builds, 8);
    assert_eq!(loaded.machines[3].speed, 4.5);
}
