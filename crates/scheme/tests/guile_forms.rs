//! The Guile forms Guix's house style uses: `(ice-9 match)`, SRFI-26
//! `cut`, multiple values, `do`, the SRFI-1 extras and host facts.

use ferry_scheme::{EvalContext, Interpreter, SchemeError, Value};

fn eval(src: &str) -> Result<Value, SchemeError> {
    Interpreter::new(
        EvalContext::hermetic("/home/t")
            .with_var("HOME", "/home/t")
            .with_host_name("build1.lan")
            .with_processors(8),
    )
    .eval_file(src, "g.scm")
}

fn show(src: &str) -> String {
    eval(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .to_string()
}

fn check(cases: &[(&str, &str)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(src, want)| match eval(src) {
            Ok(v) if v.to_string() == *want => None,
            Ok(v) => Some(format!("{src}\n  want {want}\n  got  {v}")),
            Err(e) => Some(format!("{src}\n  want {want}\n  err  {e}")),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn match_patterns() {
    check(&[
        ("(match 1 (1 'one) (_ 'other))", "one"),
        ("(match 2 (1 'one) (_ 'other))", "other"),
        ("(match \"a\" (\"a\" 'str) (_ 'no))", "str"),
        ("(match #\\x (#\\x 'ch) (_ 'no))", "ch"),
        ("(match #f (#t 'yes) (#f 'no))", "no"),
        ("(match '() (() 'empty) (_ 'no))", "empty"),
        ("(match '(1) (() 'empty) (_ 'no))", "no"),
        ("(match 'x ('x 'sym) (_ 'no))", "sym"),
        ("(match '(a b) ('(a b) 'quoted) (_ 'no))", "quoted"),
        ("(match '(1 2 3) ((a b c) (+ a b c)))", "6"),
        ("(match '(1 2) ((a b c) 'three) ((a b) 'two))", "two"),
        ("(match '(1 2 3) ((a . rest) rest))", "(2 3)"),
        ("(match '(1 . 2) ((a . b) (list b a)))", "(2 1)"),
        ("(match '(1 2 3) ((xs ...) xs))", "(1 2 3)"),
        ("(match '(k 1 2 3) (('k xs ...) xs))", "(1 2 3)"),
        ("(match '(k) (('k xs ...) xs))", "()"),
        ("(match '(k) (('k xs ..1) xs) (_ 'none))", "none"),
        (
            "(match '((a . 1) (b . 2)) (((names . values) ...) (list names values)))",
            "((a b) (1 2))",
        ),
        ("(match '((a 1) (b 2)) (((n v) ...) v))", "(1 2)"),
        ("(match '((a 1) (b)) (((n v) ...) v) (_ 'bad))", "bad"),
        ("(match '(1 2 . 3) ((xs ...) xs) (_ 'improper))", "improper"),
        ("(match 5 ((? string? s) s) ((? number? n) (* n 2)))", "10"),
        (
            "(match 5 ((? number? (? odd?)) 'odd-number) (_ 'no))",
            "odd-number",
        ),
        ("(match '(1 2) ((= length n) n))", "2"),
        ("(match 3 ((and n (? odd?)) (list n)))", "(3)"),
        ("(match 'b ((or 'a 'b) 'ab) (_ 'no))", "ab"),
        ("(match '(2 x) ((or (1 v) (2 v)) v))", "x"),
        ("(match 1 ((not 2) 'not-two))", "not-two"),
        ("(match 2 ((not 2) 'not-two) (_ 'two))", "two"),
        (
            "(define (car x) (quote oops)) (define (pair? x) #f) (match (list 1 2) ((a b) a))",
            "1",
        ),
        ("(match (list 1 2) (((not 3) ...) (quote ok)))", "ok"),
        ("(match #(1 2) (#(a b) (+ a b)))", "3"),
        ("(match '(1 1) ((a a) 'same) (_ 'different))", "same"),
        ("(match '(1 2) ((a a) 'same) (_ 'different))", "different"),
        ("(match '(1 \"x\" #:k) ((1 s #:k) s))", "\"x\""),
        ("(match '(1 2 3) ((_ _ x) x))", "3"),
        (
            "(map (match-lambda ((a b) (+ a b)) (x x)) '((1 2) 5))",
            "(3 5)",
        ),
        ("((match-lambda* ((a) a) ((a b) b)) 1 2)", "2"),
        ("(match-let (((a b) '(1 2)) (c 3)) (list a b c))", "(1 2 3)"),
        ("(match-let* (((a b) '(1 2)) ((c) (list (+ a b)))) c)", "3"),
        (
            "(define (f l) (match l (() 0) ((_ . r) (+ 1 (f r))))) (f '(a b c))",
            "3",
        ),
        // Tail calls in a match body: a loop of 100000 iterations runs.
        (
            "(let loop ((n 100000)) (match n (0 'done) (_ (loop (- n 1)))))",
            "done",
        ),
    ]);
}

#[test]
fn match_errors() {
    let e = eval("(define x 1)\n(match '(1 2)\n  ((a) a))").unwrap_err();
    assert_eq!(
        e.headline(),
        "g.scm:2:1: error: no matching pattern for (1 2)"
    );
    assert!(e.hint.unwrap().contains("(_ ...)"));
    let e = eval("((match-lambda ((? string? s) s)) 42)").unwrap_err();
    assert!(e.headline().contains("no matching pattern for 42"), "{e}");
    let e = eval("(match-let (((a b) '(1))) a)").unwrap_err();
    assert!(e.headline().contains("no matching pattern for (1)"), "{e}");
    for (src, msg) in [
        ("(match 1 (($ rec a) a))", "is not supported"),
        (
            "(match '(1) ((a ... b) a))",
            "only at the end of a list pattern",
        ),
        ("(match 1 (x (=> fail) x))", "(=> FAIL)"),
        ("(match 1 (x))", "a match clause must be (PATTERN BODY ...)"),
        ("(match '(1 2) ((or (a) (a b)) a))", "the same variables"),
        ("(match)", "malformed match"),
    ] {
        let e = eval(src).unwrap_err();
        assert!(e.headline().contains(msg), "{src}: {e}");
    }
}

#[test]
fn cut_and_procedures() {
    check(&[
        ("(map (cut + 1 <>) '(1 2))", "(2 3)"),
        ("((cut list <> 'b <>) 'a 'c)", "(a b c)"),
        ("((cut list 1 <...>) 2 3)", "(1 2 3)"),
        ("((cut <> 2) -)", "-2"),
        (
            "(let ((n 0)) (let ((f (cute list (begin (set! n (+ n 1)) n) <>))) (f 'a) (f 'b)))",
            "(1 b)",
        ),
        (
            "(and=> (getenv \"HOME\") (cut string-append <> \"/.ssh/id_ed25519\"))",
            "\"/home/t/.ssh/id_ed25519\"",
        ),
        ("(and=> (getenv \"NOPE\") string-length)", "#f"),
        ("((const 7) 1 2)", "7"),
        ("(identity 'x)", "x"),
        ("((compose car cdr) '(1 2 3))", "2"),
        ("((compose (cut * 2 <>) +) 1 2)", "6"),
        ("(filter (negate odd?) (iota 5))", "(0 2 4)"),
        ("(gethostname)", "\"build1.lan\""),
        ("(current-processor-count)", "8"),
    ]);
}

#[test]
fn multiple_values_and_do() {
    check(&[
        ("(call-with-values (lambda () (values 1 2)) +)", "3"),
        ("(receive (a b) (values 1 2) (list a b))", "(1 2)"),
        ("(receive (a . rest) (values 1 2 3) rest)", "(2 3)"),
        ("(receive all (values) all)", "()"),
        (
            "(receive (evens odds) (partition even? (iota 6)) (list evens odds))",
            "((0 2 4) (1 3 5))",
        ),
        (
            "(let-values (((a b) (values 1 2)) ((c) (values 3))) (list a b c))",
            "(1 2 3)",
        ),
        (
            "(let ((a 'outer)) (let-values (((a) (values 1)) ((b) (values a))) (list a b)))",
            "(1 outer)",
        ),
        (
            "(let*-values (((a b) (values 1 2)) ((c) (values (+ a b)))) c)",
            "3",
        ),
        (
            "(do ((i 0 (+ i 1)) (acc '() (cons i acc))) ((= i 3) acc))",
            "(2 1 0)",
        ),
        (
            "(let ((n 0)) (do ((i 0 (+ i 1))) ((= i 4)) (set! n (+ n i))) n)",
            "6",
        ),
        ("(do ((i 0 (+ i 1))) ((= i 100000) 'done))", "done"),
        ("(values 5)", "5"),
    ]);
}

#[test]
fn srfi1_strings_chars() {
    check(&[
        ("(take '(1 2 3) 2)", "(1 2)"),
        ("(drop '(1 2 3) 2)", "(3)"),
        ("(list-head '(1 2 3) 1)", "(1)"),
        (
            "(receive (h t) (split-at '(1 2 3) 1) (list h t))",
            "((1) (2 3))",
        ),
        ("(take-while odd? '(1 3 4 5))", "(1 3)"),
        ("(drop-while odd? '(1 3 4 5))", "(4 5)"),
        ("(last-pair '(1 2 3))", "(3)"),
        ("(list-index even? '(1 3 4))", "2"),
        ("(list-index even? '(1 3))", "#f"),
        ("(append-reverse '(2 1) '(3))", "(1 2 3)"),
        ("(concatenate '((1) (2 3) ()))", "(1 2 3)"),
        ("(assq-ref '((a . 1) (b . 2)) 'b)", "2"),
        ("(assv-ref '((1 . one)) 2)", "#f"),
        ("(char-upcase #\\a)", "#\\A"),
        ("(char-downcase #\\A)", "#\\a"),
        ("(char-alphabetic? #\\a)", "#t"),
        ("(string-index \"a.b.c\" #\\.)", "1"),
        ("(string-rindex \"a.b.c\" #\\.)", "3"),
        ("(string-index \"abc\" char-numeric?)", "#f"),
        ("(string-pad \"7\" 3 #\\0)", "\"007\""),
        ("(string-pad \"12345\" 3)", "\"345\""),
        ("(string-pad-right \"ab\" 4)", "\"ab  \""),
    ]);
    let e = eval("(take '(1) 2)").unwrap_err();
    assert!(e.headline().contains("fewer than 2 elements"), "{e}");
    assert_eq!(
        show("(use-modules (ice-9 match) (srfi srfi-1) (srfi srfi-26)) 1"),
        "1"
    );
}

#[test]
fn big_patterns_fit_a_default_stack() {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let list = |n: usize| {
                (0..n)
                    .map(|i| format!("v{i}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            assert_eq!(
                show(&format!("(match (iota 90) (({}) v89))", list(90))),
                "89"
            );
            let e = eval(&format!("(match (iota 1000) (({}) 'yes))", list(1000))).unwrap_err();
            assert!(e.headline().contains("more than 100 parts"), "{e}");
            for form in ["match-let", "match-let*"] {
                let binds: Vec<String> = (0..1000).map(|i| format!("((v{i}) '({i}))")).collect();
                let src = format!("({form} ({}) (list v0 v999))", binds.join(" "));
                assert_eq!(show(&src), "(0 999)");
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
