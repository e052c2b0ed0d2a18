//! The effective settings of `ferry daemon` and `ferry build`: `ferry.conf`
//! in the configuration directory (see `ferry-config`), overridden by the
//! flags the command line actually gave (clap's value sources, remembered
//! by [`remember`]), so that a flag at its default value still beats the
//! file.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::ArgMatches;
use ferry_config::Settings;

/// The flags given on the command line: (argument id, its raw values).
static GIVEN: OnceLock<Vec<(String, Vec<String>)>> = OnceLock::new();

/// Records which flags the command line gave (call once, from `main`).
pub fn remember(matches: &ArgMatches) {
    let mut given = Vec::new();
    let mut m = Some(matches);
    while let Some(cur) = m {
        for id in cur.ids() {
            let id = id.as_str();
            if cur.value_source(id) == Some(ValueSource::CommandLine) {
                let values = cur
                    .get_raw(id)
                    .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default();
                given.push((id.to_string(), values));
            }
        }
        m = cur.subcommand().map(|(_, sub)| sub);
    }
    let _ = GIVEN.set(given);
}

/// The values of flag `id` if the command line gave it.
pub fn given(id: &str) -> Option<Vec<String>> {
    GIVEN
        .get()?
        .iter()
        .find(|(i, _)| i == id)
        .map(|(_, v)| v.clone())
}

/// Setting names and the flags (argument ids) that override them.
const FLAGS: &[(&str, &str)] = &[
    ("max-jobs", "max_jobs"),
    ("cores", "cores"),
    ("sandbox-paths", "sandbox_paths"),
    ("allowed-users", "allowed_users"),
    ("trusted-users", "trusted_users"),
    ("max-log-size", "max_log_size"),
    ("max-build-processes", "max_build_processes"),
    ("keep-outputs", "keep_outputs"),
    ("keep-derivations", "keep_derivations"),
    ("min-free", "min_free"),
    ("max-free", "max_free"),
    ("extra-platforms", "extra_platforms"),
    ("system-features", "system_features"),
    ("offload-max-wait", "offload_max_wait"),
    ("offload-silence-timeout", "offload_silence_timeout"),
    ("max-connections", "max_connections"),
    ("max-connections-per-user", "max_connections_per_user"),
    ("handshake-timeout", "handshake_timeout"),
];

/// Of `ferry daemon` only: on `ferry build` the same flags are the
/// request's, not the machine's.
const DAEMON_FLAGS: &[(&str, &str)] = &[
    ("max-silent-time", "max_silent_time"),
    ("timeout", "timeout"),
];

/// `CONFIG/ferry.conf` over the defaults, then the flags given.
pub fn effective(config_dir: &Path, daemon: bool) -> anyhow::Result<Settings> {
    let file = config_dir.join(ferry_config::FILE_NAME);
    let mut s = Settings::load(&file).with_context(|| "reading the configuration file")?;
    let daemon_flags = if daemon { DAEMON_FLAGS } else { &[] };
    for (name, id) in FLAGS.iter().chain(daemon_flags) {
        if let Some(values) = given(id) {
            let value = values
                .iter()
                .flat_map(|v| v.split_whitespace())
                .collect::<Vec<_>>()
                .join(" ");
            s.set_from_command_line(name, &value)
                .with_context(|| format!("--{}", id.replace('_', "-")))?;
        }
    }
    if given("no_sandbox").is_some() {
        s.set_from_command_line("sandbox", "false")?;
    }
    if given("no_offload").is_some() {
        s.set_from_command_line("offload", "false")?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapped_setting_exists() {
        for (name, _) in FLAGS.iter().chain(DAEMON_FLAGS) {
            assert!(ferry_config::lookup(name).is_some(), "{name}");
        }
    }
}
