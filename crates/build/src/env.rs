//! The builder's environment, as Nix and Guix set it: nothing inherited
//! from the daemon, so a build cannot depend on who started it.

use std::collections::BTreeMap;

use ferry_formats::derivation::Derivation;
use ferry_formats::StoreDir;

/// The variables a builder starts with (see formats.md, "Builder
/// environment"): placeholders for PATH and HOME, the store, the core
/// count, the derivation's env, each output's path, and the build
/// directory under every temporary-directory name tools look for.
pub fn builder_env(
    drv: &Derivation,
    store_dir: &StoreDir,
    build_top: &str,
    cores: u32,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_string(), v.to_string());
    };
    set("PATH", "/path-not-set");
    set("HOME", "/homeless-shelter");
    set("NIX_STORE", store_dir.as_str());
    set("NIX_BUILD_CORES", &cores.to_string());
    for (k, v) in &drv.env {
        set(k, v);
    }
    for (name, out) in &drv.outputs {
        set(name, &out.path);
    }
    for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"] {
        set(k, build_top);
    }
    set("NIX_LOG_FD", "2");
    set("TERM", "xterm-256color");
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_has_the_documented_variables_and_derivation_env_wins_over_placeholders() {
        let mut drv = Derivation::default();
        drv.outputs.insert(
            "out".into(),
            ferry_formats::derivation::Output {
                path: "/ferry/store/x-a".into(),
                ..Default::default()
            },
        );
        drv.env.insert("name".into(), "a".into());
        drv.env.insert("PATH".into(), "/custom".into());
        let env = builder_env(&drv, &StoreDir::new("/ferry/store").unwrap(), "/build", 4);
        assert_eq!(env["out"], "/ferry/store/x-a");
        assert_eq!(env["PATH"], "/custom");
        assert_eq!(env["HOME"], "/homeless-shelter");
        assert_eq!(env["NIX_STORE"], "/ferry/store");
        assert_eq!(env["NIX_BUILD_CORES"], "4");
        for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP"] {
            assert_eq!(env[k], "/build");
        }
    }
}
