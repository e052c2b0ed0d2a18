//! The syntax of `ferry.conf`, which is nix.conf's (Nix 2.8,
//! `AbstractConfig::applyConfig`): one setting per line as
//! `name = value` (the `=` a word of its own), `#` starts a comment
//! anywhere, a value is the rest of the line's words joined by one space
//! (lists are space-separated), and `include PATH` / `!include PATH`
//! read another file, relative to the including file's directory (a
//! missing `!include` is skipped, a missing `include` is an error).
//!
//! Parsing only yields the lines in order, each with its origin; what a
//! name means is `registry.rs`'s business.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::ConfigError;

/// Where a value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One `name = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub name: String,
    pub value: String,
    pub origin: Origin,
}

/// Includes nest at most this deep (a file including itself is refused
/// before that).
const MAX_DEPTH: usize = 16;

/// Reads `path` and the files it includes, in order.
pub fn read_file(path: &Path) -> Result<Vec<Line>, ConfigError> {
    let mut lines = Vec::new();
    let mut stack = Vec::new();
    read_into(path, &mut stack, &mut lines)?;
    Ok(lines)
}

/// Parses `text` as if read from `path` (includes are read from disk).
pub fn parse_str(text: &str, path: &Path) -> Result<Vec<Line>, ConfigError> {
    let mut lines = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    parse_into(text, path, &mut stack, &mut lines)?;
    Ok(lines)
}

fn read_into(
    path: &Path,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<Line>,
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: path.to_path_buf(),
        why: e.to_string(),
    })?;
    stack.push(path.to_path_buf());
    let r = parse_into(&text, path, stack, out);
    stack.pop();
    r
}

fn parse_into(
    text: &str,
    path: &Path,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<Line>,
) -> Result<(), ConfigError> {
    for (i, raw) in text.lines().enumerate() {
        let origin = Origin {
            file: path.to_path_buf(),
            line: i + 1,
        };
        let line = raw.split('#').next().unwrap_or("");
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let illegal = |why: &str| ConfigError::Syntax {
            origin: origin.clone(),
            line: raw.trim().to_string(),
            why: why.to_string(),
        };
        if let Some(ignore_missing) = match words[0] {
            "include" => Some(false),
            "!include" => Some(true),
            _ => None,
        } {
            if words.len() != 2 {
                return Err(illegal("`include` takes exactly one path"));
            }
            let target = path.parent().unwrap_or(Path::new("/")).join(words[1]);
            if !target.exists() {
                if ignore_missing {
                    continue;
                }
                return Err(ConfigError::Include {
                    origin,
                    target,
                    why: "not found (use `!include` for an optional file)".into(),
                });
            }
            if stack.len() >= MAX_DEPTH || stack.iter().any(|p| same_file(p, &target)) {
                return Err(ConfigError::Include {
                    origin,
                    target,
                    why: "includes itself, or nests too deep".into(),
                });
            }
            read_into(&target, stack, out).map_err(|e| match e {
                ConfigError::Read { file, why } => ConfigError::Include {
                    origin: origin.clone(),
                    target: file,
                    why,
                },
                e => e,
            })?;
            continue;
        }
        if words.len() < 2 || words[1] != "=" {
            let why = if words[0].contains('=') {
                "write `name = value`, with spaces around `=` (as nix.conf)"
            } else {
                "expected `name = value`, `include PATH` or `!include PATH`"
            };
            return Err(illegal(why));
        }
        out.push(Line {
            name: words[0].to_string(),
            value: words[2..].join(" "),
            origin,
        });
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(String, String, usize)>, ConfigError> {
        let lines = parse_str(text, Path::new("/nonexistent/ferry.conf"))?;
        Ok(lines
            .into_iter()
            .map(|l| (l.name, l.value, l.origin.line))
            .collect())
    }

    #[test]
    fn lines_comments_and_lists_as_nix_reads_them() {
        let got = parse(
            "# a comment\n\nmax-jobs = 4\n  cores   =   2  # trailing\n\
             trusted-users = root  @wheel   alice\nkeep-outputs =\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("max-jobs".into(), "4".into(), 3),
                ("cores".into(), "2".into(), 4),
                ("trusted-users".into(), "root @wheel alice".into(), 5),
                ("keep-outputs".into(), "".into(), 6),
            ]
        );
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        for (text, needle) in [
            ("max-jobs=4\n", "spaces around `=`"),
            ("\nmax-jobs 4\n", "expected `name = value`"),
            ("max-jobs\n", "expected `name = value`"),
            ("include a b\n", "exactly one path"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("/nonexistent/ferry.conf:"), "{e}");
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        let e = parse("\nmax-jobs 4\n").unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/ferry.conf:2:"), "{e}");
    }

    #[test]
    fn includes_relative_optional_and_not_circular() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("ferry.conf");
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/more.conf"), "cores = 3\n").unwrap();
        std::fs::write(
            &main,
            "max-jobs = 1\ninclude conf.d/more.conf\n!include absent.conf\nmax-jobs = 2\n",
        )
        .unwrap();
        let lines = read_file(&main).unwrap();
        let got: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(got, [("max-jobs", "1"), ("cores", "3"), ("max-jobs", "2")]);
        assert!(lines[1].origin.file.ends_with("conf.d/more.conf"));

        std::fs::write(&main, "include absent.conf\n").unwrap();
        let e = read_file(&main).unwrap_err().to_string();
        assert!(e.contains("absent.conf") && e.contains("!include"), "{e}");

        std::fs::write(&main, "include ferry.conf\n").unwrap();
        let e = read_file(&main).unwrap_err().to_string();
        assert!(e.contains("includes itself"), "{e}");
    }
}
