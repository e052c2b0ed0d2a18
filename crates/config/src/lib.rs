//! `ferry.conf`: Ferry's configuration file, in nix.conf's syntax and with
//! Nix's names wherever a setting exists there, so that a Nix or Guix
//! administrator reads and writes it without a manual.
//!
//! [`Settings::load`] reads the file (and what it includes) over the
//! defaults; command-line flags then override single settings
//! ([`Settings::set_from_command_line`]); every value remembers where it
//! came from, for `--print-config` ([`Settings::show`]). An unknown name or
//! a bad value is an error naming file, line and setting, with a
//! did-you-mean.
#![forbid(unsafe_code)]

mod parse;
mod registry;

use std::path::{Path, PathBuf};

pub use parse::{parse_str, read_file, Line, Origin};
pub use registry::{did_you_mean, lookup, parse_size, Kind, SandboxMode, Setting, Value, SETTINGS};

/// The file's name in the configuration directory.
pub const FILE_NAME: &str = "ferry.conf";

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read it: {why}", file.display())]
    Read { file: PathBuf, why: String },
    #[error("{origin}: `{line}`: {why}")]
    Syntax {
        origin: Origin,
        line: String,
        why: String,
    },
    #[error("{origin}: cannot include {}: {why}", target.display())]
    Include {
        origin: Origin,
        target: PathBuf,
        why: String,
    },
    #[error("{where_}: unknown setting `{name}`{}", suggestion(.did_you_mean))]
    Unknown {
        /// `FILE:LINE`, or "command line".
        where_: String,
        name: String,
        did_you_mean: Option<&'static str>,
    },
    #[error("{where_}: setting `{name}`: invalid value {value:?}: {why}")]
    Invalid {
        where_: String,
        name: String,
        value: String,
        why: String,
    },
}

fn suggestion(s: &Option<&'static str>) -> String {
    match s {
        Some(name) => format!("; did you mean `{name}`?"),
        None => "; `ferry daemon --print-config` lists every setting".into(),
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(Origin),
    CommandLine,
}

/// One setting's effective value.
#[derive(Debug, Clone)]
pub struct Entry {
    pub setting: &'static Setting,
    pub value: Value,
    pub source: Source,
}

/// Every known setting's effective value.
#[derive(Debug, Clone)]
pub struct Settings {
    entries: Vec<Entry>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::defaults()
    }
}

impl Settings {
    /// Every setting at its default.
    pub fn defaults() -> Settings {
        let entries = SETTINGS
            .iter()
            .map(|s| Entry {
                setting: s,
                value: registry::parse_value(s.kind, s.default).expect("defaults parse"),
                source: Source::Default,
            })
            .collect();
        Settings { entries }
    }

    /// The defaults overridden by `path` (and what it includes); a missing
    /// file leaves the defaults, as with Nix.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let mut settings = Settings::defaults();
        if path.exists() {
            settings.apply(&read_file(path)?)?;
        }
        Ok(settings)
    }

    /// Applies parsed lines in order (a later line wins; `extra-NAME`
    /// appends to a list).
    pub fn apply(&mut self, lines: &[Line]) -> Result<(), ConfigError> {
        for line in lines {
            self.set(
                &line.name,
                &line.value,
                Source::File(line.origin.clone()),
                &line.origin.to_string(),
            )?;
        }
        Ok(())
    }

    /// A flag's value, which overrides the file.
    pub fn set_from_command_line(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        self.set(name, value, Source::CommandLine, "command line")
    }

    fn set(
        &mut self,
        name: &str,
        text: &str,
        source: Source,
        where_: &str,
    ) -> Result<(), ConfigError> {
        let (base, append) = match name.strip_prefix("extra-") {
            Some(base) if lookup(base).is_some_and(|s| s.kind == Kind::Words) => (base, true),
            _ => (name, false),
        };
        let Some(entry) = self.entries.iter_mut().find(|e| e.setting.name == base) else {
            return Err(ConfigError::Unknown {
                where_: where_.to_string(),
                name: name.to_string(),
                did_you_mean: did_you_mean(name),
            });
        };
        let value = registry::parse_value(entry.setting.kind, text).map_err(|why| {
            ConfigError::Invalid {
                where_: where_.to_string(),
                name: name.to_string(),
                value: text.to_string(),
                why,
            }
        })?;
        entry.value = match (append, &entry.value, value) {
            (true, Value::Words(old), Value::Words(new)) => {
                Value::Words(old.iter().cloned().chain(new).collect())
            }
            (_, _, value) => value,
        };
        entry.source = source;
        Ok(())
    }

    /// The entry of a known setting. Panics on an unknown name: names in
    /// code are checked by the tests.
    pub fn entry(&self, name: &str) -> &Entry {
        self.entries
            .iter()
            .find(|e| e.setting.name == name)
            .unwrap_or_else(|| panic!("no setting named {name}"))
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.entry(name).value, Value::Bool(true))
    }

    /// A count, size or number of seconds; `auto` is `None`.
    pub fn number(&self, name: &str) -> Option<u64> {
        match self.entry(name).value {
            Value::Count(n) | Value::Size(n) | Value::Seconds(n) => Some(n),
            _ => None,
        }
    }

    pub fn words(&self, name: &str) -> Vec<String> {
        match &self.entry(name).value {
            Value::Words(w) => w.clone(),
            Value::Word(w) if !w.is_empty() => vec![w.clone()],
            _ => Vec::new(),
        }
    }

    /// Every entry, in the documented order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// `name = value` lines in nix.conf syntax, each with where it came
    /// from as a comment: what `--print-config` prints.
    pub fn show(&self) -> String {
        let width = self
            .entries
            .iter()
            .map(|e| e.setting.name.len() + 3 + e.value.to_string().len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for e in &self.entries {
            let line = format!("{} = {}", e.setting.name, e.value);
            let from = match &e.source {
                Source::Default => "default".to_string(),
                Source::File(o) => o.to_string(),
                Source::CommandLine => "command line".to_string(),
            };
            out.push_str(&format!("{line:width$}  # {from}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(text: &str) -> Result<Settings, ConfigError> {
        let mut s = Settings::defaults();
        s.apply(&parse_str(text, Path::new("/etc/ferry/ferry.conf"))?)?;
        Ok(s)
    }

    #[test]
    fn the_file_overrides_defaults_and_flags_override_the_file() {
        let mut s = with(
            "max-jobs = 0\nmax-log-size = 10M\nallowed-users = alice @builders\n\
             extra-allowed-users = bob\nsystem-features = kvm\nmin-free = 1G\n",
        )
        .unwrap();
        assert_eq!(s.number("max-jobs"), Some(0));
        assert_eq!(s.number("max-log-size"), Some(10 << 20));
        assert_eq!(s.words("allowed-users"), ["alice", "@builders", "bob"]);
        assert_eq!(s.words("system-features"), ["kvm"]);
        assert_eq!(s.number("min-free"), Some(1 << 30));
        assert!(s.bool("keep-derivations") && !s.bool("keep-outputs"));
        assert_eq!(
            s.entry("max-jobs").source,
            Source::File(Origin {
                file: "/etc/ferry/ferry.conf".into(),
                line: 1
            })
        );
        s.set_from_command_line("max-jobs", "4").unwrap();
        assert_eq!(s.number("max-jobs"), Some(4));
        assert_eq!(s.entry("max-jobs").source, Source::CommandLine);
        let shown = s.show();
        assert!(shown.contains("max-jobs = 4"), "{shown}");
        assert!(shown.contains("# command line"), "{shown}");
        assert!(shown.contains("# /etc/ferry/ferry.conf:2"), "{shown}");
        assert!(shown.contains("keep-derivations = true"), "{shown}");
    }

    #[test]
    fn unknown_names_and_bad_values_name_file_line_and_setting() {
        let e = with("\n\nmax-job = 4\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/ferry/ferry.conf:3: unknown setting `max-job`; did you mean `max-jobs`?"
        );
        let e = with("sandbox = yes\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/ferry/ferry.conf:1: setting `sandbox`: invalid value \"yes\": expected `true`, `false` or `relaxed`"
        );
        let e = with("frobnicate = 1\n").unwrap_err().to_string();
        assert!(e.contains("--print-config"), "{e}");
        // extra- only for lists.
        let e = with("extra-max-jobs = 1\n").unwrap_err().to_string();
        assert!(e.contains("did you mean `max-jobs`"), "{e}");
    }

    #[test]
    fn a_missing_file_is_the_defaults() {
        let s = Settings::load(Path::new("/nonexistent/ferry.conf")).unwrap();
        assert!(s.entries().iter().all(|e| e.source == Source::Default));
        assert_eq!(s.entry("max-jobs").value, Value::Auto);
    }
}
