//! Reading a `.drv` file: the ATerm parser, strict about order (lists
//! sorted without duplicates, as every writer produces them) and size
//! ([`MAX_DRV_SIZE`]), with the byte offset of every error.

use std::collections::{BTreeMap, BTreeSet};

use super::{Derivation, DrvParseError, DrvParseErrorKind, Output, MAX_DRV_SIZE};

/// Parse a `.drv` file's text.
pub fn parse(s: &str) -> Result<Derivation, DrvParseError> {
    if s.len() > MAX_DRV_SIZE {
        return Err(DrvParseError {
            offset: 0,
            kind: DrvParseErrorKind::TooLarge(s.len()),
        });
    }
    Parser { src: s, pos: 0 }.derivation()
}

/// Parse a `.drv` file's bytes. ATerm strings could hold any bytes, but every
/// writer produces UTF-8 and [`Derivation`] holds `String`s, so other bytes
/// are refused (at the offset of the first bad byte) rather than mangled.
pub fn parse_bytes(b: &[u8]) -> Result<Derivation, DrvParseError> {
    if b.len() > MAX_DRV_SIZE {
        return Err(DrvParseError {
            offset: 0,
            kind: DrvParseErrorKind::TooLarge(b.len()),
        });
    }
    let s = std::str::from_utf8(b).map_err(|e| DrvParseError {
        offset: e.valid_up_to(),
        kind: DrvParseErrorKind::InvalidUtf8,
    })?;
    parse(s)
}

/// Like [`parse`], but also refuses text that does not print back to itself
/// byte for byte: escapes Nix does not write (`\a` for `a`) and raw newlines,
/// CRs or tabs inside strings. Use it where the file's hash must be
/// reproducible from the parsed value.
pub fn parse_canonical(s: &str) -> Result<Derivation, DrvParseError> {
    let drv = parse(s)?;
    let printed = drv.to_aterm();
    if printed != s {
        let offset = printed
            .bytes()
            .zip(s.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| printed.len().min(s.len()));
        return Err(DrvParseError {
            offset,
            kind: DrvParseErrorKind::NonCanonical,
        });
    }
    Ok(drv)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

type PResult<T> = Result<T, DrvParseError>;

impl<'a> Parser<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn err_at(&self, offset: usize, kind: DrvParseErrorKind) -> DrvParseError {
        DrvParseError { offset, kind }
    }

    /// What is at the current position, for error messages.
    fn found(&self) -> String {
        match self.src.get(self.pos..).and_then(|r| r.chars().next()) {
            Some(c) => format!("{c:?}"),
            None => match self.peek() {
                Some(b) => format!("byte {b:#04x}"),
                None => "end of input".to_string(),
            },
        }
    }

    fn expected(&self, expected: impl Into<String>) -> DrvParseError {
        self.err_at(
            self.pos,
            DrvParseErrorKind::Expected {
                expected: expected.into(),
                found: self.found(),
            },
        )
    }

    /// Consume `lit` (ASCII) or fail saying it was expected.
    fn expect(&mut self, lit: &'static str) -> PResult<()> {
        if self.bytes()[self.pos..].starts_with(lit.as_bytes()) {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(self.expected(format!("{lit:?}")))
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A quoted string. Escapes: `\n` `\r` `\t`, and `\X` is X for any other
    /// X, as in Nix's parser.
    fn string(&mut self) -> PResult<String> {
        if !self.eat(b'"') {
            return Err(self.expected("'\"' (a string)"));
        }
        let start = self.pos - 1;
        let bytes = self.bytes();
        let mut out = Vec::new();
        loop {
            let run_end = bytes[self.pos..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\')
                .map(|i| self.pos + i)
                .ok_or_else(|| self.err_at(start, DrvParseErrorKind::UnterminatedString))?;
            out.extend_from_slice(&bytes[self.pos..run_end]);
            self.pos = run_end + 1;
            if bytes[run_end] == b'"' {
                break;
            }
            let escaped = *bytes
                .get(self.pos)
                .ok_or_else(|| self.err_at(run_end, DrvParseErrorKind::EscapeAtEnd))?;
            out.push(match escaped {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                // Any other byte stands for itself; if it starts a multi-byte
                // character the rest follows in the next run, so the result
                // stays valid UTF-8.
                other => other,
            });
            self.pos += 1;
        }
        // Only ASCII backslashes were removed from valid UTF-8, so this cannot
        // fail; map rather than unwrap all the same.
        String::from_utf8(out).map_err(|_| self.err_at(start, DrvParseErrorKind::InvalidUtf8))
    }

    /// `[ITEM,ITEM,...]`.
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> PResult<T>) -> PResult<Vec<T>> {
        self.expect("[")?;
        let mut v = Vec::new();
        if self.eat(b']') {
            return Ok(v);
        }
        loop {
            v.push(item(self)?);
            if self.eat(b']') {
                return Ok(v);
            }
            if !self.eat(b',') {
                return Err(self.expected("',' or ']'"));
            }
        }
    }

    /// A list of `(key, value)` items whose keys must be strictly increasing.
    fn sorted_map<V>(
        &mut self,
        list: &'static str,
        mut item: impl FnMut(&mut Self) -> PResult<(String, V)>,
    ) -> PResult<BTreeMap<String, V>> {
        let mut map = BTreeMap::new();
        let mut prev: Option<String> = None;
        self.list(|p| {
            let at = p.pos;
            let (k, v) = item(p)?;
            check_order(p, at, list, prev.as_deref(), &k)?;
            prev = Some(k.clone());
            map.insert(k, v);
            Ok(())
        })?;
        Ok(map)
    }

    /// A list of strings that must be strictly increasing.
    fn sorted_strings(&mut self, list: &'static str) -> PResult<BTreeSet<String>> {
        let mut set = BTreeSet::new();
        let mut prev: Option<String> = None;
        self.list(|p| {
            let at = p.pos;
            let k = p.string()?;
            check_order(p, at, list, prev.as_deref(), &k)?;
            prev = Some(k.clone());
            set.insert(k);
            Ok(())
        })?;
        Ok(set)
    }

    fn derivation(mut self) -> PResult<Derivation> {
        self.expect("Derive(")?;
        let outputs = self.sorted_map("outputs", |p| {
            p.expect("(")?;
            let name = p.string()?;
            p.expect(",")?;
            let path = p.string()?;
            p.expect(",")?;
            let hash_algo = p.string()?;
            p.expect(",")?;
            let hash = p.string()?;
            p.expect(")")?;
            Ok((
                name,
                Output {
                    path,
                    hash_algo,
                    hash,
                },
            ))
        })?;
        self.expect(",")?;
        let input_drvs = self.sorted_map("input derivations", |p| {
            p.expect("(")?;
            let path = p.string()?;
            p.expect(",")?;
            let outs = p.sorted_strings("output names of an input derivation")?;
            p.expect(")")?;
            Ok((path, outs))
        })?;
        self.expect(",")?;
        let input_srcs = self.sorted_strings("input sources")?;
        self.expect(",")?;
        let system = self.string()?;
        self.expect(",")?;
        let builder = self.string()?;
        self.expect(",")?;
        let args = self.list(|p| p.string())?;
        self.expect(",")?;
        let env = self.sorted_map("environment variables", |p| {
            p.expect("(")?;
            let k = p.string()?;
            p.expect(",")?;
            let v = p.string()?;
            p.expect(")")?;
            Ok((k, v))
        })?;
        self.expect(")")?;
        if self.pos != self.src.len() {
            return Err(self.err_at(self.pos, DrvParseErrorKind::TrailingData));
        }
        Ok(Derivation {
            outputs,
            input_drvs,
            input_srcs,
            system,
            builder,
            args,
            env,
        })
    }
}

fn check_order(
    p: &Parser<'_>,
    at: usize,
    list: &'static str,
    prev: Option<&str>,
    key: &str,
) -> PResult<()> {
    match prev {
        Some(prev) if prev == key => Err(p.err_at(
            at,
            DrvParseErrorKind::Duplicate {
                list,
                key: key.into(),
            },
        )),
        Some(prev) if prev > key => Err(p.err_at(
            at,
            DrvParseErrorKind::Unsorted {
                list,
                prev: prev.into(),
                key: key.into(),
            },
        )),
        _ => Ok(()),
    }
}
