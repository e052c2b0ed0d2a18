//! The s-expressions Guix (libgcrypt) writes keys, ACLs and signatures in,
//! in their "advanced" text form: lists, tokens, `"strings"` and `#HEX#`
//! byte strings. Only what those files use is supported.

use std::fmt;

/// An s-expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sexp {
    /// A bare token (`public-key`, `ecc`) or a quoted string.
    Atom(String),
    /// `#HEX#`.
    Bytes(Vec<u8>),
    List(Vec<Sexp>),
}

impl Sexp {
    pub fn atom(s: &str) -> Sexp {
        Sexp::Atom(s.to_string())
    }

    pub fn list(items: impl IntoIterator<Item = Sexp>) -> Sexp {
        Sexp::List(items.into_iter().collect())
    }

    /// `(name value...)`.
    pub fn tagged(name: &str, values: impl IntoIterator<Item = Sexp>) -> Sexp {
        let mut v = vec![Sexp::atom(name)];
        v.extend(values);
        Sexp::List(v)
    }

    /// The list's head token, if it is `(token ...)`.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Sexp::List(v) => match v.first() {
                Some(Sexp::Atom(a)) => Some(a),
                _ => None,
            },
            _ => None,
        }
    }

    /// The first sub-list `(name ...)` of this list.
    pub fn find(&self, name: &str) -> Option<&Sexp> {
        match self {
            Sexp::List(v) => v.iter().skip(1).find(|s| s.tag() == Some(name)),
            _ => None,
        }
    }

    /// The elements after the head.
    pub fn rest(&self) -> &[Sexp] {
        match self {
            Sexp::List(v) if !v.is_empty() => &v[1..],
            _ => &[],
        }
    }

    /// The bytes of `(name #HEX#)` inside this list.
    pub fn bytes_of(&self, name: &str) -> Option<&[u8]> {
        match self.find(name)?.rest() {
            [Sexp::Bytes(b)] => Some(b),
            _ => None,
        }
    }

    /// The token of `(name token)` inside this list.
    pub fn atom_of(&self, name: &str) -> Option<&str> {
        match self.find(name)?.rest() {
            [Sexp::Atom(a)] => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for Sexp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sexp::Atom(a)
                if !a.is_empty()
                    && a.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=*".contains(&b)) =>
            {
                f.write_str(a)
            }
            Sexp::Atom(a) => write!(f, "{a:?}"),
            Sexp::Bytes(b) => write!(f, "#{}#", hex::encode_upper(b)),
            Sexp::List(v) => {
                f.write_str("(")?;
                for (i, s) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{s}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Why text is not an s-expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an s-expression at byte {offset}: {reason}")]
pub struct SexpError {
    pub offset: usize,
    pub reason: String,
}

/// Parse exactly one s-expression (surrounding whitespace allowed).
pub fn parse(text: &str) -> Result<Sexp, SexpError> {
    let b = text.as_bytes();
    let mut pos = 0;
    let v = parse_at(b, &mut pos, 0)?;
    skip_ws(b, &mut pos);
    if pos != b.len() {
        return Err(SexpError {
            offset: pos,
            reason: "trailing data after the expression".into(),
        });
    }
    Ok(v)
}

fn skip_ws(b: &[u8], pos: &mut usize) {
    while *pos < b.len() && b[*pos].is_ascii_whitespace() {
        *pos += 1;
    }
}

fn err(offset: usize, reason: &str) -> SexpError {
    SexpError {
        offset,
        reason: reason.into(),
    }
}

fn parse_at(b: &[u8], pos: &mut usize, depth: usize) -> Result<Sexp, SexpError> {
    if depth > 64 {
        return Err(err(*pos, "nested too deeply"));
    }
    skip_ws(b, pos);
    match b.get(*pos) {
        None => Err(err(*pos, "unexpected end")),
        Some(b'(') => {
            *pos += 1;
            let mut items = Vec::new();
            loop {
                skip_ws(b, pos);
                match b.get(*pos) {
                    None => return Err(err(*pos, "unclosed '('")),
                    Some(b')') => {
                        *pos += 1;
                        return Ok(Sexp::List(items));
                    }
                    _ => items.push(parse_at(b, pos, depth + 1)?),
                }
            }
        }
        Some(b')') => Err(err(*pos, "unexpected ')'")),
        Some(b'#') => {
            let start = *pos + 1;
            let end = b[start..]
                .iter()
                .position(|&c| c == b'#')
                .map(|i| start + i)
                .ok_or_else(|| err(*pos, "unclosed #HEX#"))?;
            let bytes = hex::decode(&b[start..end]).map_err(|_| err(start, "bad hex digits"))?;
            *pos = end + 1;
            Ok(Sexp::Bytes(bytes))
        }
        Some(b'"') => {
            let start = *pos + 1;
            let mut s = String::new();
            let mut i = start;
            while let Some(&c) = b.get(i) {
                match c {
                    b'"' => {
                        *pos = i + 1;
                        return Ok(Sexp::Atom(s));
                    }
                    b'\\' => {
                        let e = *b.get(i + 1).ok_or_else(|| err(i, "unfinished escape"))?;
                        s.push(match e {
                            b'n' => '\n',
                            b't' => '\t',
                            other => other as char,
                        });
                        i += 2;
                    }
                    _ => {
                        s.push(c as char);
                        i += 1;
                    }
                }
            }
            Err(err(*pos, "unclosed string"))
        }
        Some(_) => {
            let start = *pos;
            while *pos < b.len() && !b[*pos].is_ascii_whitespace() && !b"()#\"".contains(&b[*pos]) {
                *pos += 1;
            }
            Ok(Sexp::Atom(
                String::from_utf8_lossy(&b[start..*pos]).into_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_guix_shapes() {
        let text = "(public-key (ecc (curve Ed25519) (flags eddsa) (q #0A0B#)))";
        let s = parse(text).unwrap();
        assert_eq!(s.to_string(), text);
        let ecc = s.find("ecc").unwrap();
        assert_eq!(ecc.atom_of("curve"), Some("Ed25519"));
        assert_eq!(ecc.bytes_of("q"), Some(&[10u8, 11][..]));
        for bad in ["(", ")", "(a #0G#)", "(a) b", "\"x", "(a #01"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("(tag \"x y\")").unwrap().to_string(), "(tag \"x y\")");
    }
}
