//! The systems this machine builds for, as the seed says a machine can
//! have several: natively (an x86_64-linux machine also builds
//! i686-linux, its builders running under the 32-bit personality so that
//! `uname -m` says i686, as Nix and Guix do).

/// This machine's own system (`x86_64-linux`...).
pub fn this_system() -> String {
    ferry_formats::derivation::current_system()
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
