//! The reader: each lexical feature, and positions.

use ferry_scheme::{read_all, Datum, DatumKind};

fn one(src: &str) -> Datum {
    let mut data = read_all(src, "t.scm").unwrap_or_else(|e| panic!("{src:?}: {e}"));
    assert_eq!(data.len(), 1, "{src:?}");
    data.remove(0)
}

fn kind(src: &str) -> DatumKind {
    one(src).kind
}

fn err(src: &str) -> String {
    read_all(src, "t.scm").expect_err(src).headline()
}

fn sym(s: &str) -> DatumKind {
    DatumKind::Symbol(s.into())
}

#[test]
fn comments() {
    assert_eq!(kind("; line\n42 ; trailing"), DatumKind::Int(42));
    assert_eq!(kind("#| block |# 1"), DatumKind::Int(1));
    assert_eq!(
        kind("#| outer #| nested |# still outer |# 2"),
        DatumKind::Int(2)
    );
    assert_eq!(kind("#;(ignored (datum)) 3"), DatumKind::Int(3));
    assert_eq!(kind("#; #;1 2 3"), DatumKind::Int(3));
    assert_eq!(kind("#!/usr/bin/guile \\\n-s\n!#\n4"), DatumKind::Int(4));
    let list = one("(a #;b c)");
    assert_eq!(list.as_list().unwrap().len(), 2);
    assert_eq!(
        err("#| never closed"),
        "t.scm:1:1: error: this '#|' block comment is never closed"
    );
    assert_eq!(
        err("#| a #| b |#"),
        "t.scm:1:1: error: this '#|' block comment is never closed"
    );
    assert!(err("(a #;)").contains("'#;' comments out the next datum, but there is none"));
}

#[test]
fn strings() {
    assert_eq!(kind(r#""plain""#), DatumKind::Str("plain".into()));
    assert_eq!(
        kind(r#""a\nb\t\"q\"\\""#),
        DatumKind::Str("a\nb\t\"q\"\\".into())
    );
    assert_eq!(kind(r#""\x41;\x42C""#), DatumKind::Str("ABC".into()));
    assert_eq!(kind(r#""\u00e9""#), DatumKind::Str("é".into()));
    assert_eq!(
        kind("\"line \\\n     continued\""),
        DatumKind::Str("line continued".into())
    );
    assert_eq!(kind("\"…unicode…\""), DatumKind::Str("…unicode…".into()));
    assert_eq!(
        err("\"open"),
        "t.scm:1:1: error: this string is never closed: the file ends first"
    );
    assert_eq!(
        err(r#""bad \q""#),
        "t.scm:1:6: error: unknown escape '\\q' in a string"
    );
}

#[test]
fn numbers() {
    assert_eq!(kind("42"), DatumKind::Int(42));
    assert_eq!(kind("-7"), DatumKind::Int(-7));
    assert_eq!(kind("+7"), DatumKind::Int(7));
    assert_eq!(kind("2."), DatumKind::Float(2.0));
    assert_eq!(kind(".5"), DatumKind::Float(0.5));
    assert_eq!(kind("-.5"), DatumKind::Float(-0.5));
    assert_eq!(kind("1.25"), DatumKind::Float(1.25));
    assert_eq!(kind("1e3"), DatumKind::Float(1000.0));
    assert_eq!(kind("1/2"), DatumKind::Float(0.5));
    assert_eq!(kind("4/2"), DatumKind::Int(2));
    assert_eq!(kind("#xff"), DatumKind::Int(255));
    assert_eq!(kind("#b101"), DatumKind::Int(5));
    assert_eq!(kind("#o17"), DatumKind::Int(15));
    assert_eq!(kind("#i3"), DatumKind::Float(3.0));
    assert_eq!(kind("#e2.0"), DatumKind::Int(2));
    assert_eq!(kind("+inf.0"), DatumKind::Float(f64::INFINITY));
    // Not numbers: symbols.
    for s in ["+", "-", "...", ".x", "1+", "a1", "1.2.3", "->x"] {
        assert_eq!(kind(s), sym(s), "{s}");
    }
}

#[test]
fn booleans_keywords_characters() {
    assert_eq!(kind("#t"), DatumKind::Bool(true));
    assert_eq!(kind("#f"), DatumKind::Bool(false));
    assert_eq!(kind("#true"), DatumKind::Bool(true));
    assert_eq!(kind("#false"), DatumKind::Bool(false));
    assert_eq!(kind("#:builder"), DatumKind::Keyword("builder".into()));
    assert_eq!(kind("#\\a"), DatumKind::Char('a'));
    assert_eq!(kind("#\\space"), DatumKind::Char(' '));
    assert_eq!(kind("#\\newline"), DatumKind::Char('\n'));
    assert_eq!(kind("#\\tab"), DatumKind::Char('\t'));
    assert_eq!(kind("#\\nul"), DatumKind::Char('\0'));
    assert_eq!(kind("#\\x41"), DatumKind::Char('A'));
    assert_eq!(kind("#\\x"), DatumKind::Char('x'));
    assert_eq!(kind("#\\("), DatumKind::Char('('));
    assert_eq!(kind("#\\)"), DatumKind::Char(')'));
    assert_eq!(kind("#\\λ"), DatumKind::Char('λ'));
    assert!(err("#\\bogus").contains("unknown character name '#\\bogus'"));
    assert!(err("#q").contains("unknown syntax '#q'"));
}

#[test]
fn quotes_lists_vectors() {
    let q = |name: &str, inner: DatumKind| match kind(&format!(
        "{}x",
        match name {
            "quote" => "'",
            "quasiquote" => "`",
            "unquote" => ",",
            _ => ",@",
        }
    )) {
        DatumKind::List(items, None) => {
            assert_eq!(items[0].kind, sym(name));
            assert_eq!(items[1].kind, inner);
        }
        other => panic!("{other:?}"),
    };
    for name in ["quote", "quasiquote", "unquote", "unquote-splicing"] {
        q(name, sym("x"));
    }
    match kind("(a . b)") {
        DatumKind::List(items, Some(tail)) => {
            assert_eq!(items.len(), 1);
            assert_eq!(tail.kind, sym("b"));
        }
        other => panic!("{other:?}"),
    }
    match kind("#(1 \"two\" #\\3)") {
        DatumKind::Vector(items) => assert_eq!(items.len(), 3),
        other => panic!("{other:?}"),
    }
    match kind("[a (b)]") {
        DatumKind::List(items, None) => assert_eq!(items.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        one("'(1 . (2 3))").to_string(),
        "(quote (1 2 3))".replace("(1 2 3)", "(1 . (2 3))")
    );
    assert!(err("( . a)").contains("'.' must follow at least one datum"));
    assert!(err("(a . b c)").contains("expected the end of the list"));
    assert!(err("')").contains("must be followed by a datum"));
}

#[test]
fn parentheses_errors_point_at_the_culprit() {
    assert_eq!(
        err("(a\n  (b c)\n  (d"),
        "t.scm:3:3: error: this '(' is never closed: the file ends first"
    );
    assert_eq!(
        err("(a b))"),
        "t.scm:1:6: error: unexpected ')' with no matching opening parenthesis"
    );
    assert_eq!(
        err("\n\n   )"),
        "t.scm:3:4: error: unexpected ')' with no matching opening parenthesis"
    );
    assert_eq!(
        err("(a]"),
        "t.scm:1:3: error: ']' closes the '(' opened at line 1, column 1"
    );
    let deep = "(".repeat(10_000);
    assert!(err(&deep).contains("nested more than 128 levels"));
}

#[test]
fn every_datum_has_its_line_and_column() {
    let src = "; header\n(define x\n  '(1 \"two\" #\\3))\n  #:kw #(a b) `(,x ,@y)\n\t.5";
    let data = read_all(src, "pos.scm").unwrap();
    let mut seen = Vec::new();
    fn walk(d: &Datum, out: &mut Vec<(String, u32, u32)>) {
        out.push((d.to_string(), d.span.line, d.span.col));
        match &d.kind {
            DatumKind::List(items, tail) => {
                items.iter().for_each(|i| walk(i, out));
                if let Some(t) = tail {
                    walk(t, out);
                }
            }
            DatumKind::Vector(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    data.iter().for_each(|d| walk(d, &mut seen));
    let seen: Vec<(&str, u32, u32)> = seen.iter().map(|(s, l, c)| (s.as_str(), *l, *c)).collect();
    assert_eq!(
        seen,
        [
            ("(define x (quote (1 \"two\" #\\3)))", 2, 1),
            ("define", 2, 2),
            ("x", 2, 9),
            ("(quote (1 \"two\" #\\3))", 3, 3),
            ("quote", 3, 3),
            ("(1 \"two\" #\\3)", 3, 4),
            ("1", 3, 5),
            ("\"two\"", 3, 7),
            ("#\\3", 3, 13),
            ("#:kw", 4, 3),
            ("#(a b)", 4, 8),
            ("a", 4, 10),
            ("b", 4, 12),
            ("(quasiquote ((unquote x) (unquote-splicing y)))", 4, 15),
            ("quasiquote", 4, 15),
            ("((unquote x) (unquote-splicing y))", 4, 16),
            ("(unquote x)", 4, 17),
            ("unquote", 4, 17),
            ("x", 4, 18),
            ("(unquote-splicing y)", 4, 20),
            ("unquote-splicing", 4, 20),
            ("y", 4, 22),
            ("0.5", 5, 2),
        ]
    );
    assert!(data.iter().all(|d| &*d.span.file == "pos.scm"));
}
