//! The reader: Guile's lexical syntax as machines files and build files use
//! it, turned into [`Datum`]s that remember their file, line and column.
//!
//! Recursive descent with a nesting limit ([`MAX_NESTING`]): everything
//! downstream (compiler, quoting) recurses over datums too, and the limit is
//! what keeps all of them off the end of the stack on hostile input.

use crate::datum::{Datum, DatumKind};
use crate::error::{ErrorKind, SchemeError};
use crate::span::Span;
use std::sync::Arc;

/// How deeply lists, vectors and quotes may nest.
pub const MAX_NESTING: usize = 128;

mod number;

pub(crate) use number::{parse_number, Number};

/// Reads every datum of `source`; `file` names it in spans and errors.
pub fn read_all(source: &str, file: &str) -> Result<Vec<Datum>, SchemeError> {
    let mut reader = Reader::new(source, file);
    let mut out = Vec::new();
    loop {
        reader.skip_atmosphere()?;
        match reader.peek() {
            None => return Ok(out),
            Some(c @ (')' | ']')) => {
                return Err(reader
                    .error_here(format!(
                        "unexpected '{c}' with no matching opening parenthesis"
                    ))
                    .with_hint("remove it, or add the missing '(' before it"));
            }
            Some(_) => out.push(reader.read_datum(0)?),
        }
    }
}

struct Reader {
    chars: Vec<char>,
    pos: usize,
    line: u32,
    col: u32,
    file: Arc<str>,
    /// The first list with an element on a later line at or left of its
    /// own '(' column: a likely place for a missing ')'.
    suspect: Option<Span>,
}

fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '"' | ';')
}

impl Reader {
    fn new(source: &str, file: &str) -> Self {
        Reader {
            chars: source.chars().collect(),
            pos: 0,
            line: 1,
            col: 1,
            file: Arc::from(file),
            suspect: None,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn advance(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn span(&self) -> Span {
        Span::new(self.file.clone(), self.line, self.col)
    }

    fn error_at(&self, span: &Span, message: impl Into<String>) -> SchemeError {
        SchemeError::new(ErrorKind::Read, span, message)
    }

    fn error_here(&self, message: impl Into<String>) -> SchemeError {
        self.error_at(&self.span(), message)
    }

    /// Skips whitespace and all three kinds of comments.
    fn skip_atmosphere(&mut self) -> Result<(), SchemeError> {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(c), _) if c.is_whitespace() => {
                    self.advance();
                }
                (Some(';'), _) => {
                    while let Some(c) = self.advance() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                (Some('#'), Some('|')) => self.skip_block_comment()?,
                (Some('#'), Some('!')) if self.pos == 0 => self.skip_hashbang()?,
                (Some('#'), Some(';')) => {
                    let start = self.span();
                    self.advance();
                    self.advance();
                    self.skip_atmosphere()?;
                    match self.peek() {
                        None | Some(')' | ']') => {
                            return Err(self
                                .error_at(
                                    &start,
                                    "'#;' comments out the next datum, but there is none",
                                )
                                .with_hint("remove the '#;' or put a datum after it"));
                        }
                        Some(_) => {
                            self.read_datum(0)?;
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// `#| ... |#`, nestable as in Guile.
    fn skip_block_comment(&mut self) -> Result<(), SchemeError> {
        let mut opened = vec![self.span()];
        self.advance();
        self.advance();
        while let Some(start) = opened.last().cloned() {
            match (self.peek(), self.peek_at(1)) {
                (None, _) => {
                    return Err(self
                        .error_at(&start, "this '#|' block comment is never closed")
                        .with_hint("add '|#' where the comment should end"));
                }
                (Some('|'), Some('#')) => {
                    self.advance();
                    self.advance();
                    opened.pop();
                }
                (Some('#'), Some('|')) => {
                    opened.push(self.span());
                    self.advance();
                    self.advance();
                }
                _ => {
                    self.advance();
                }
            }
        }
        Ok(())
    }

    /// `#!/usr/bin/guile ... !#` at the very start of a script.
    fn skip_hashbang(&mut self) -> Result<(), SchemeError> {
        let start = self.span();
        self.advance();
        self.advance();
        loop {
            match (self.peek(), self.peek_at(1)) {
                (None, _) => {
                    return Err(self.error_at(&start, "this '#!' comment is never closed by '!#'"))
                }
                (Some('!'), Some('#')) => {
                    self.advance();
                    self.advance();
                    return Ok(());
                }
                _ => {
                    self.advance();
                }
            }
        }
    }

    fn token(&mut self) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if is_delimiter(c) {
                break;
            }
            s.push(c);
            self.advance();
        }
        s
    }

    fn read_datum(&mut self, depth: usize) -> Result<Datum, SchemeError> {
        let span = self.span();
        if depth > MAX_NESTING {
            return Err(self.error_here(format!("data nested more than {MAX_NESTING} levels deep")));
        }
        let Some(c) = self.peek() else {
            return Err(self.error_here("unexpected end of file"));
        };
        let kind = match c {
            '(' | '[' => {
                self.advance();
                return self.read_list(if c == '(' { ')' } else { ']' }, span, depth + 1);
            }
            ')' | ']' => {
                return Err(self.error_here(format!("unexpected '{c}'")));
            }
            '\'' | '`' | ',' => {
                self.advance();
                let name = match c {
                    '\'' => "quote",
                    '`' => "quasiquote",
                    _ if self.peek() == Some('@') => {
                        self.advance();
                        "unquote-splicing"
                    }
                    _ => "unquote",
                };
                self.skip_atmosphere()?;
                if matches!(self.peek(), None | Some(')' | ']')) {
                    return Err(
                        self.error_at(&span, format!("'{c}' ({name}) must be followed by a datum"))
                    );
                }
                let inner = self.read_datum(depth + 1)?;
                let head = Datum {
                    kind: DatumKind::Symbol(name.to_string()),
                    span: span.clone(),
                };
                DatumKind::List(vec![head, inner], None)
            }
            '"' => self.read_string(&span)?,
            '#' => self.read_hash(&span, depth)?,
            _ => {
                let tok = self.token();
                match parse_number(&tok, 10) {
                    Some(Number::Int(i)) => DatumKind::Int(i),
                    Some(Number::Float(x)) => DatumKind::Float(x),
                    None => DatumKind::Symbol(tok),
                }
            }
        };
        Ok(Datum { kind, span })
    }

    fn read_list(&mut self, close: char, open: Span, depth: usize) -> Result<Datum, SchemeError> {
        if depth > MAX_NESTING {
            return Err(self.error_at(
                &open,
                format!("lists nested more than {MAX_NESTING} levels deep"),
            ));
        }
        let open_char = if close == ')' { '(' } else { '[' };
        let mut items = Vec::new();
        loop {
            self.skip_atmosphere()?;
            match self.peek() {
                None => {
                    let err = self.error_at(
                        &open,
                        format!("this '{open_char}' is never closed: the file ends first"),
                    );
                    return Err(match &self.suspect {
                        Some(s) => err.with_hint(format!(
                            "judging by the indentation, the '(' at line {}, column {} may be the one missing its ')'",
                            s.line, s.col
                        )),
                        None => err.with_hint(format!("add the missing '{close}' where this list should end")),
                    });
                }
                Some(c @ (')' | ']')) => {
                    if c != close {
                        return Err(self
                            .error_here(format!(
                                "'{c}' closes the '{open_char}' opened at line {}, column {}",
                                open.line, open.col
                            ))
                            .with_hint(format!(
                                "use '{close}' to close a list opened with '{open_char}'"
                            )));
                    }
                    self.advance();
                    return Ok(Datum {
                        kind: DatumKind::List(items, None),
                        span: open,
                    });
                }
                Some('.') if self.peek_at(1).is_none_or(is_delimiter) => {
                    let dot = self.span();
                    self.advance();
                    if items.is_empty() {
                        return Err(
                            self.error_at(&dot, "'.' must follow at least one datum in a list")
                        );
                    }
                    self.skip_atmosphere()?;
                    if matches!(self.peek(), None | Some(')' | ']')) {
                        return Err(
                            self.error_at(&dot, "'.' must be followed by exactly one datum")
                        );
                    }
                    let tail = self.read_datum(depth)?;
                    self.skip_atmosphere()?;
                    if self.peek() != Some(close) {
                        return Err(self
                            .error_here(
                                "expected the end of the list after the datum following '.'",
                            )
                            .with_hint(format!("add '{close}' here")));
                    }
                    self.advance();
                    return Ok(Datum {
                        kind: DatumKind::List(items, Some(Box::new(tail))),
                        span: open,
                    });
                }
                Some(_) => {
                    let (line, col) = (self.line, self.col);
                    if self.suspect.is_none() && line > open.line && col <= open.col {
                        self.suspect = Some(open.clone());
                    }
                    items.push(self.read_datum(depth)?)
                }
            }
        }
    }

    fn read_string(&mut self, start: &Span) -> Result<DatumKind, SchemeError> {
        self.advance();
        let mut s = String::new();
        loop {
            let Some(c) = self.advance() else {
                return Err(self
                    .error_at(start, "this string is never closed: the file ends first")
                    .with_hint("add the closing '\"'"));
            };
            match c {
                '"' => return Ok(DatumKind::Str(s)),
                '\\' => {
                    let esc_span =
                        Span::new(self.file.clone(), self.line, self.col.saturating_sub(1));
                    let Some(e) = self.advance() else { continue };
                    match e {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        'a' => s.push('\u{7}'),
                        'f' => s.push('\u{c}'),
                        'v' => s.push('\u{b}'),
                        'b' => s.push('\u{8}'),
                        '0' => s.push('\0'),
                        '\\' | '"' => s.push(e),
                        '\n' => {
                            // Line continuation: skip the next line's indentation.
                            while matches!(self.peek(), Some(' ' | '\t')) {
                                self.advance();
                            }
                        }
                        'x' | 'u' | 'U' => {
                            let width = match e {
                                'x' => 2,
                                'u' => 4,
                                _ => 6,
                            };
                            let mut hex = String::new();
                            while let Some(h) = self.peek() {
                                if !h.is_ascii_hexdigit() || (hex.len() == width && e != 'x') {
                                    break;
                                }
                                hex.push(h);
                                self.advance();
                            }
                            // R6RS style `\x41;` takes any number of digits.
                            let mut literal_rest = String::new();
                            if e == 'x' && self.peek() == Some(';') {
                                self.advance();
                            } else if e == 'x' && hex.len() > width {
                                // Guile's `\xHH` takes two digits; the rest is text.
                                literal_rest = hex.split_off(width);
                            } else if hex.len() != width {
                                return Err(self.error_at(
                                    &esc_span,
                                    format!("'\\{e}' in a string must be followed by {width} hexadecimal digits"),
                                ));
                            }
                            let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                            match ch {
                                Some(ch) => {
                                    s.push(ch);
                                    s.push_str(&literal_rest);
                                }
                                None => {
                                    return Err(self.error_at(
                                        &esc_span,
                                        format!("'\\{e}{hex}' is not a valid character"),
                                    ))
                                }
                            }
                        }
                        other => {
                            return Err(self
                                .error_at(
                                    &esc_span,
                                    format!("unknown escape '\\{other}' in a string"),
                                )
                                .with_hint("write '\\\\' for a backslash"));
                        }
                    }
                }
                _ => s.push(c),
            }
        }
    }

    fn read_hash(&mut self, span: &Span, depth: usize) -> Result<DatumKind, SchemeError> {
        self.advance();
        match self.peek() {
            Some('(') => {
                self.advance();
                let list = self.read_list(')', span.clone(), depth + 1)?;
                match list.kind {
                    DatumKind::List(items, None) => Ok(DatumKind::Vector(items)),
                    _ => Err(self.error_at(span, "a vector cannot contain '.'")),
                }
            }
            Some(':') => {
                self.advance();
                let name = self.token();
                if name.is_empty() {
                    return Err(self.error_at(span, "'#:' must be followed by a keyword name"));
                }
                Ok(DatumKind::Keyword(name))
            }
            Some('\\') => {
                self.advance();
                let Some(first) = self.advance() else {
                    return Err(self.error_at(span, "'#\\' must be followed by a character"));
                };
                let mut name = first.to_string();
                while let Some(c) = self.peek() {
                    if is_delimiter(c) {
                        break;
                    }
                    name.push(c);
                    self.advance();
                }
                char_from_name(&name).map(DatumKind::Char).ok_or_else(|| {
                    self.error_at(span, format!("unknown character name '#\\{name}'"))
                })
            }
            _ => {
                let tok = self.token();
                match tok.as_str() {
                    "t" | "true" => return Ok(DatumKind::Bool(true)),
                    "f" | "false" => return Ok(DatumKind::Bool(false)),
                    _ => {}
                }
                let mut chars = tok.chars();
                let prefix = chars.next();
                let rest = chars.as_str();
                let number = match prefix {
                    Some('x' | 'X') => parse_number(rest, 16),
                    Some('o' | 'O') => parse_number(rest, 8),
                    Some('b' | 'B') => parse_number(rest, 2),
                    Some('d' | 'D') => parse_number(rest, 10),
                    Some('i' | 'I') => parse_number(rest, 10).map(|n| match n {
                        Number::Int(i) => Number::Float(i as f64),
                        f => f,
                    }),
                    Some('e' | 'E') => parse_number(rest, 10).map(|n| match n {
                        Number::Float(x) if x.fract() == 0.0 && x.abs() < 9.0e18 => {
                            Number::Int(x as i64)
                        }
                        n => n,
                    }),
                    _ => None,
                };
                match number {
                    Some(Number::Int(i)) => Ok(DatumKind::Int(i)),
                    Some(Number::Float(x)) => Ok(DatumKind::Float(x)),
                    None => Err(self
                        .error_at(span, format!("unknown syntax '#{tok}'"))
                        .with_hint(
                        "booleans are #t and #f, keywords #:name, characters #\\a, vectors #(...)",
                    )),
                }
            }
        }
    }
}

/// `a`, `space`, `newline`, `x41`, `101` (octal) and Guile's other names.
pub(crate) fn char_from_name(name: &str) -> Option<char> {
    let mut chars = name.chars();
    let first = chars.next()?;
    if chars.next().is_none() {
        return Some(first);
    }
    let named = match name {
        "space" => ' ',
        "newline" | "linefeed" | "nl" => '\n',
        "tab" => '\t',
        "nul" | "null" => '\0',
        "alarm" => '\u{7}',
        "backspace" => '\u{8}',
        "delete" | "del" | "rubout" => '\u{7f}',
        "escape" | "esc" | "altmode" => '\u{1b}',
        "return" => '\r',
        "page" => '\u{c}',
        "vtab" => '\u{b}',
        _ => {
            if let Some(hex) = name.strip_prefix('x') {
                return u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
            }
            if name.chars().all(|c| ('0'..='7').contains(&c)) {
                return u32::from_str_radix(name, 8).ok().and_then(char::from_u32);
            }
            return None;
        }
    };
    Some(named)
}
