//! The systems this machine builds for, as the seed says a machine can
//! have several: natively (an x86_64-linux machine also builds
//! i686-linux, its builders running under the 32-bit personality so that
//! `uname -m` says i686, as Nix and Guix do), or through emulation (Nix's
//! `extra-platforms`: QEMU registered with binfmt_misc, Guix's
//! "transparent emulation"). A registration with the `F` flag (Debian's
//! qemu-user-static) has the kernel hold its interpreter open, so it runs
//! in any sandbox; for one without it the interpreter is made visible in
//! the sandbox of an emulated build ([`binfmt_interpreters`]).

use crate::sandbox::HostPath;

/// The system this machine builds for natively, e.g. `x86_64-linux`: the
/// value a derivation's `system` must have to build here.
pub fn current_system() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// This machine's own system (`x86_64-linux`...).
pub fn this_system() -> String {
    current_system()
}

/// The systems built here without emulation: this one, and i686-linux on
/// x86_64-linux.
pub fn native_systems() -> Vec<String> {
    let this = this_system();
    let mut systems = vec![this.clone()];
    if this == "x86_64-linux" {
        systems.push("i686-linux".into());
    }
    systems
}

/// Whether a builder for `system` runs under the 32-bit personality here.
pub fn runs_as_linux32(system: &str) -> bool {
    system == "i686-linux" && this_system() == "x86_64-linux"
}

/// Sets the calling process's personality to `PER_LINUX32` (inherited
/// across exec). Returns -1 with errno set on failure.
///
/// # Safety
///
/// A raw system call; safe between fork (or clone) and exec.
pub(crate) unsafe fn raw_set_linux32() -> libc::c_int {
    const PER_LINUX32: libc::c_ulong = 0x0008;
    // SAFETY: a plain system call with an integer argument.
    unsafe { libc::personality(PER_LINUX32) }
}

/// The host paths of a sandbox for a build of `system`: `base`, and for an
/// emulated system the interpreters the kernel opens by path.
pub fn host_paths_for(system: &str, base: &[HostPath]) -> Vec<HostPath> {
    let mut paths = base.to_vec();
    if !native_systems().iter().any(|s| s == system) {
        paths.extend(
            binfmt_interpreters()
                .into_iter()
                .map(|p| HostPath::same(p, true)),
        );
    }
    paths
}

/// The interpreters of the enabled binfmt_misc registrations that lack the
/// `F` (fix binary) flag: the kernel opens them by path when a program
/// they handle starts, so an emulated build's sandbox must show them.
pub fn binfmt_interpreters() -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir("/proc/sys/fs/binfmt_misc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let mut lines = text.lines();
        if lines.next() != Some("enabled") {
            continue;
        }
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let fixed = field("flags:").is_some_and(|f| f.contains('F'));
        if let (false, Some(path)) = (fixed, field("interpreter ")) {
            found.push(std::path::PathBuf::from(path));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_x86_64_machine_builds_i686_too() {
        let systems = native_systems();
        assert_eq!(systems[0], this_system());
        if this_system() == "x86_64-linux" {
            assert_eq!(systems, ["x86_64-linux", "i686-linux"]);
            assert!(runs_as_linux32("i686-linux"));
            assert!(!runs_as_linux32("x86_64-linux"));
        }
    }
}
