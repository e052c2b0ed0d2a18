//! The settings Ferry knows: their names (Nix's wherever the setting
//! exists there), kinds, defaults and one line of documentation, and how a
//! value of each kind is read. An unknown name is an error with a
//! did-you-mean, not a warning as in Nix: a typo in a farm's master
//! configuration silently changing nothing is what this step removes.

use std::fmt;

/// What values a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true` or `false`.
    Bool,
    /// A non-negative integer.
    Count,
    /// A count, or `auto` (one per core).
    CountOrAuto,
    /// Bytes: an integer, optionally with K, M, G, T (or KiB, MiB, GiB,
    /// TiB; powers of 1024, as `guix gc`).
    Size,
    /// Seconds; 0 means none.
    Seconds,
    /// Words separated by spaces (`extra-NAME = ...` appends).
    Words,
    /// One word.
    Word,
    /// `true`, `false` or `relaxed` (Nix's `sandbox`).
    Sandbox,
}

/// A setting's value, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    Count(u64),
    /// `auto`.
    Auto,
    Size(u64),
    Seconds(u64),
    Words(Vec<String>),
    Word(String),
    Sandbox(SandboxMode),
}

/// Nix's `sandbox` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    On,
    Off,
    /// Derivations with `__noChroot` may build outside it (Nix's meaning).
    Relaxed,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Count(n) | Value::Size(n) | Value::Seconds(n) => write!(f, "{n}"),
            Value::Auto => f.write_str("auto"),
            Value::Words(w) => f.write_str(&w.join(" ")),
            Value::Word(w) => f.write_str(w),
            Value::Sandbox(SandboxMode::On) => f.write_str("true"),
            Value::Sandbox(SandboxMode::Off) => f.write_str("false"),
            Value::Sandbox(SandboxMode::Relaxed) => f.write_str("relaxed"),
        }
    }
}

/// One known setting.
#[derive(Debug)]
pub struct Setting {
    pub name: &'static str,
    pub kind: Kind,
    /// The default, as it would be written in the file.
    pub default: &'static str,
    pub doc: &'static str,
}

macro_rules! settings {
    ($( $name:literal $kind:ident $default:literal $doc:literal ;)*) => {
        /// Every setting, in the order `--print-config` shows them.
        pub static SETTINGS: &[Setting] = &[
            $( Setting { name: $name, kind: Kind::$kind, default: $default, doc: $doc }, )*
        ];
    };
}

settings! {
    "max-jobs" CountOrAuto "auto" "builds run here at once; 0: none here (build machines only); auto: one per core";
    "cores" Count "0" "NIX_BUILD_CORES given to each builder; 0: every core";
    "sandbox" Sandbox "true" "run builders in the sandbox (namespaces and a chroot)";
    "sandbox-paths" Words "" "host paths visible in the sandbox (PATH or INSIDE=HOST, `?` for optional); empty: the built-in list";
    "build-users-group" Word "" "Nix's group of build users: Ferry's are a uid range instead (build-uid-base); setting it is an error that says so";
    "build-uid-base" Count "30000" "a root daemon's builders run as uid and gid BASE + builder number (BASE .. BASE + max-jobs)";
    "allowed-users" Words "*" "users (and @groups) that may connect to a root daemon";
    "trusted-users" Words "root" "users (and @groups) that may change daemon-wide settings and import unsigned paths";
    "trusted-public-keys" Words "" "Nix public keys (NAME:BASE64) whose signatures let a Nix client that is not trusted add a path";
    "secret-key-files" Words "" "Files of Nix secret keys (NAME:BASE64, as nix-store --generate-binary-cache-key writes them); what the daemon builds is signed with each in Nix's form";
    "max-silent-time" Seconds "0" "kill a builder silent this long; 0: never (clients may ask for less)";
    "timeout" Seconds "0" "kill a builder running this long; 0: never (clients may ask for less)";
    "max-log-size" Size "0" "kill a builder whose log exceeds this; 0: no limit";
    "max-build-processes" Count "4096" "RLIMIT_NPROC of each build user";
    "keep-outputs" Bool "false" "the garbage collector keeps the outputs of live derivations";
    "keep-derivations" Bool "true" "the garbage collector keeps the derivations of live outputs";
    "min-free" Size "0" "collect garbage when free space falls below this; 0: never";
    "max-free" Size "0" "stop collecting once this much is free; 0: collect all garbage";
    "system" Word "" "this machine's system; empty: the one Ferry was built for";
    "extra-platforms" Words "" "more systems built here (i686-linux on x86_64, or through binfmt_misc emulation)";
    "system-features" Words "" "features of this machine (kvm, big-parallel...) that local builds may require";
    "offload" Bool "true" "offload builds to the machines of machines.scm";
    "offload-max-wait" Seconds "60" "how long to wait for a build machine before building here (or failing)";
    "offload-silence-timeout" Seconds "30" "a build machine silent this long in any step is backed off; 0: no bound";
    "max-connections" Count "256" "client connections served at once";
    "max-connections-per-user" Count "64" "client connections of one user at once";
    "handshake-timeout" Seconds "10" "close a connection that has not completed its handshake in this time";
}

/// The setting called `name`.
pub fn lookup(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Reads `text` as a value of `kind`; the error says what was expected.
pub fn parse_value(kind: Kind, text: &str) -> Result<Value, String> {
    let word = || -> Result<&str, String> {
        match text.split_whitespace().count() {
            0 | 1 => Ok(text.trim()),
            _ => Err("expected one word".into()),
        }
    };
    let count = |t: &str| {
        t.parse::<u64>()
            .map_err(|_| "expected a non-negative integer".to_string())
    };
    Ok(match kind {
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err("expected `true` or `false`".into()),
        },
        Kind::Count => Value::Count(count(word()?)?),
        Kind::CountOrAuto => match word()? {
            "auto" => Value::Auto,
            t => Value::Count(count(t).map_err(|_| "expected a number or `auto`".to_string())?),
        },
        Kind::Seconds => {
            Value::Seconds(count(word()?).map_err(|_| "expected a number of seconds".to_string())?)
        }
        Kind::Size => Value::Size(parse_size(word()?)?),
        Kind::Words => Value::Words(text.split_whitespace().map(String::from).collect()),
        Kind::Word => Value::Word(word()?.to_string()),
        Kind::Sandbox => Value::Sandbox(match text {
            "true" => SandboxMode::On,
            "false" => SandboxMode::Off,
            "relaxed" => SandboxMode::Relaxed,
            _ => return Err("expected `true`, `false` or `relaxed`".into()),
        }),
    })
}

/// A size as `guix gc` reads it: a number (fractions allowed) and a unit,
/// KiB, MiB, GiB, TiB (or K, M, G, T: powers of 1024), kB, MB, GB, TB
/// (powers of 1000), or none (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .rfind(|c: char| c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let (num, unit) = text.split_at(split);
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| *n >= 0.0 && n.is_finite())
        .ok_or_else(|| {
            format!("invalid size {text:?}: write a number and a unit, as 500MiB, 1.5G or 1024")
        })?;
    let mult: f64 = match unit {
        "" | "B" => 1.0,
        "KiB" | "K" | "k" => 1024.0,
        "MiB" | "M" => 1024.0 * 1024.0,
        "GiB" | "G" => 1024.0 * 1024.0 * 1024.0,
        "TiB" | "T" => 1024f64.powi(4),
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use KiB, MiB, GiB, TiB (or K, M, G, T), kB, MB, GB or TB"
            ))
        }
    };
    let bytes = n * mult;
    if bytes >= u64::MAX as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// The known name closest to `name`, if it is close enough to be a typo.
pub fn did_you_mean(name: &str) -> Option<&'static str> {
    let name = name.strip_prefix("extra-").unwrap_or(name);
    SETTINGS
        .iter()
        .map(|s| (distance(name, s.name), s.name))
        .filter(|(d, s)| *d <= 2.max(s.len() / 4))
        .min()
        .map(|(_, s)| s)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = if ca == b[j] {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses() {
        for s in SETTINGS {
            parse_value(s.kind, s.default).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        }
    }

    #[test]
    fn values_of_each_kind() {
        assert_eq!(parse_value(Kind::Bool, "true"), Ok(Value::Bool(true)));
        assert!(parse_value(Kind::Bool, "yes").is_err());
        assert_eq!(parse_value(Kind::CountOrAuto, "0"), Ok(Value::Count(0)));
        assert_eq!(parse_value(Kind::CountOrAuto, "auto"), Ok(Value::Auto));
        assert!(parse_value(Kind::Count, "-1").is_err());
        assert!(parse_value(Kind::Count, "1 2").is_err());
        assert_eq!(parse_value(Kind::Size, "100M"), Ok(Value::Size(100 << 20)));
        assert_eq!(parse_value(Kind::Size, "2GiB"), Ok(Value::Size(2 << 30)));
        assert_eq!(parse_value(Kind::Size, "1234"), Ok(Value::Size(1234)));
        assert_eq!(parse_value(Kind::Size, "1.5G"), Ok(Value::Size(3 << 29)));
        assert_eq!(parse_value(Kind::Size, "2MB"), Ok(Value::Size(2_000_000)));
        assert!(parse_value(Kind::Size, "12 parsecs").is_err());
        assert!(parse_value(Kind::Size, "99999999999T").is_err());
        assert_eq!(
            parse_value(Kind::Words, "root  @wheel"),
            Ok(Value::Words(vec!["root".into(), "@wheel".into()]))
        );
        assert_eq!(
            parse_value(Kind::Sandbox, "relaxed"),
            Ok(Value::Sandbox(SandboxMode::Relaxed))
        );
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(did_you_mean("max-job"), Some("max-jobs"));
        assert_eq!(did_you_mean("trusted-user"), Some("trusted-users"));
        assert_eq!(did_you_mean("keep-output"), Some("keep-outputs"));
        assert_eq!(did_you_mean("sandbox-path"), Some("sandbox-paths"));
        assert_eq!(did_you_mean("offload-silence"), None);
        assert_eq!(did_you_mean("completely-unrelated"), None);
    }
}
