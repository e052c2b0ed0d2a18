//! Content addresses as Nix 2.8 writes them (content-address.cc): a path's
//! `ca` (`text:sha256:NIX32`, `fixed:[r:]ALGO:NIX32`) and the method
//! AddToStore (1.25+) names (`text:sha256`, `fixed:[r:]ALGO`).

use ferry_formats::content_hash::{Hash, HashAlgo};
use ferry_formats::store_path::FileIngestion;

use crate::{Error, Result};

/// A path's content address (`ContentAddress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentAddress {
    /// `text:sha256:...`: a text file added with its references.
    Text(Hash),
    /// `fixed:[r:]ALGO:...`: a flat file or NAR with this hash.
    Fixed { method: FileIngestion, hash: Hash },
}

/// How AddToStore (1.25+) asks for content to be addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentAddressMethod {
    Text,
    Fixed {
        method: FileIngestion,
        algo: HashAlgo,
    },
}

fn prefix(m: FileIngestion) -> &'static str {
    match m {
        FileIngestion::Flat => "",
        FileIngestion::Recursive => "r:",
    }
}

fn algo(s: &str, whole: &str) -> Result<HashAlgo> {
    HashAlgo::parse(s).ok_or_else(|| {
        Error::protocol(format!(
            "unknown hash algorithm '{s}' in content address '{whole}'"
        ))
    })
}

/// Split `text:` / `fixed:[r:]` and the algorithm off `s`, returning the
/// method and what follows the algorithm's colon (if any).
fn parse_prefix(s: &str) -> Result<(ContentAddressMethod, Option<&str>)> {
    let bad = || Error::protocol(format!("'{s}' is not a content address"));
    let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
    let (method, rest) = match kind {
        "text" => (None, rest),
        "fixed" => match rest.strip_prefix("r:") {
            Some(r) => (Some(FileIngestion::Recursive), r),
            None => (Some(FileIngestion::Flat), rest),
        },
        _ => return Err(bad()),
    };
    let (a, tail) = match rest.split_once(':') {
        Some((a, t)) => (a, Some(t)),
        None => (rest, None),
    };
    let a = algo(a, s)?;
    let m = match method {
        None if a != HashAlgo::Sha256 => {
            return Err(Error::protocol(format!(
                "text content address hash should use sha256, but instead uses {a}"
            )))
        }
        None => ContentAddressMethod::Text,
        Some(method) => ContentAddressMethod::Fixed { method, algo: a },
    };
    Ok((m, tail))
}

impl ContentAddressMethod {
    /// `renderContentAddressMethod`.
    pub fn render(&self) -> String {
        match self {
            ContentAddressMethod::Text => "text:sha256".into(),
            ContentAddressMethod::Fixed { method, algo } => {
                format!("fixed:{}{algo}", prefix(*method))
            }
        }
    }

    /// `parseContentAddressMethod`.
    pub fn parse(s: &str) -> Result<Self> {
        match parse_prefix(s)? {
            (m, None) => Ok(m),
            (_, Some(_)) => Err(Error::protocol(format!(
                "'{s}' is not a content address method"
            ))),
        }
    }
}

impl ContentAddress {
    /// `renderContentAddress`: the hash in typed nix32.
    pub fn render(&self) -> String {
        match self {
            ContentAddress::Text(h) => format!("text:{}", h.to_typed_nix32()),
            ContentAddress::Fixed { method, hash } => {
                format!("fixed:{}{}", prefix(*method), hash.to_typed_nix32())
            }
        }
    }

    /// `parseContentAddress`: the hash in any non-SRI unprefixed form.
    pub fn parse(s: &str) -> Result<Self> {
        let (m, tail) = parse_prefix(s)?;
        let tail = tail.ok_or_else(|| {
            Error::protocol(format!(
                "content address hash must be in form '<algo>:<hash>', but found: {s}"
            ))
        })?;
        let hash = |a| {
            Hash::parse_non_sri_unprefixed(tail, a)
                .map_err(|e| Error::protocol(format!("content address '{s}': {e}")))
        };
        Ok(match m {
            ContentAddressMethod::Text => ContentAddress::Text(hash(HashAlgo::Sha256)?),
            ContentAddressMethod::Fixed { method, algo } => ContentAddress::Fixed {
                method,
                hash: hash(algo)?,
            },
        })
    }

    /// `parseContentAddressOpt`: the empty string is none.
    pub fn parse_opt(s: &str) -> Result<Option<Self>> {
        if s.is_empty() {
            Ok(None)
        } else {
            Self::parse(s).map(Some)
        }
    }

    /// The empty string for none, as the protocol writes it.
    pub fn render_opt(ca: &Option<Self>) -> String {
        ca.as_ref().map(Self::render).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_as_nix() {
        let h = Hash::digest(HashAlgo::Sha256, b"hello");
        let text = ContentAddress::Text(h.clone());
        let s = text.render();
        assert!(s.starts_with("text:sha256:") && s.len() == 12 + 52, "{s}");
        assert_eq!(ContentAddress::parse(&s).unwrap(), text);
        let fixed = ContentAddress::Fixed {
            method: FileIngestion::Recursive,
            hash: h.clone(),
        };
        assert!(fixed.render().starts_with("fixed:r:sha256:"));
        assert_eq!(ContentAddress::parse(&fixed.render()).unwrap(), fixed);
        // base16 is accepted too, as parseNonSRIUnprefixed does.
        let b16 = format!("fixed:sha256:{}", h.to_base16());
        assert_eq!(
            ContentAddress::parse(&b16).unwrap(),
            ContentAddress::Fixed {
                method: FileIngestion::Flat,
                hash: h
            }
        );
        assert_eq!(ContentAddress::parse_opt("").unwrap(), None);
        for bad in ["text:sha1:abc", "blob:sha256:x", "fixed:sha256", "nope"] {
            assert!(ContentAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods() {
        for s in ["text:sha256", "fixed:sha1", "fixed:r:sha256", "fixed:md5"] {
            assert_eq!(ContentAddressMethod::parse(s).unwrap().render(), s);
        }
        assert!(ContentAddressMethod::parse("text:sha512").is_err());
        assert!(ContentAddressMethod::parse("fixed:r:sha256:abc").is_err());
    }
}
