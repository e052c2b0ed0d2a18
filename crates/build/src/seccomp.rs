//! A seccomp filter that stops builders from making setuid or setgid
//! files, as Nix's `setupSeccomp` does: `chmod`, `fchmod`, `fchmodat` and
//! `fchmodat2` with `S_ISUID` or `S_ISGID` in the mode fail with `EPERM`.
//!
//! A setuid file owned by a build user is a foothold as that uid for anyone
//! who can run it (in the build directory of an unsandboxed build, in
//! `/tmp`, or in an output before it is canonical); with the filter no
//! builder can make one, sandbox or not. Outputs are still canonicalised
//! (`ferry_store::canonicalise_outputs`): a file can also arrive setuid by
//! other means (an archive extracted by a setuid-aware tool running as
//! root, which a builder never is).
//!
//! The filter covers x86-64 (with its x32 and i386 system call tables); on
//! other architectures none is installed.

/// Installs the filter on the calling process (and everything it starts).
/// Sets `PR_SET_NO_NEW_PRIVS` first (required without CAP_SYS_ADMIN, and
/// Nix's default for builders too). Async-signal-safe; returns -1 with
/// errno set on failure.
///
/// # Safety
///
/// Raw system calls on static data; safe between fork and exec.
pub(crate) unsafe fn install() -> libc::c_int {
    // SAFETY: plain system calls; the program is static and valid.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) < 0 {
            return -1;
        }
        filter::install()
    }
}

#[cfg(target_arch = "x86_64")]
mod filter {
    use libc::sock_filter;

    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K

    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    const DENY: u32 = 0x0005_0000 | libc::EPERM as u32; // SECCOMP_RET_ERRNO
    const ARCH_X86_64: u32 = 0xC000_003E;
    const ARCH_I386: u32 = 0x4000_0003;
    const X32_BIT: u32 = 0x4000_0000;
    const SET_ID_BITS: u32 = 0o6000;

    // struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (the
    // low 32 bits first on a little-endian machine).
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    const ARG1: u32 = 24;
    const ARG2: u32 = 32;

    const fn op(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
        sock_filter { code, jt, jf, k }
    }

    /// Jumps are relative to the next instruction; the comments number
    /// the instructions.
    static PROGRAM: [sock_filter; 22] = [
        /* 0 */ op(LD_W_ABS, 0, 0, ARCH),
        /* 1 */ op(JEQ_K, 0, 7, ARCH_X86_64), // else -> 9
        /* 2 */ op(LD_W_ABS, 0, 0, NR),
        /* 3 */ op(AND_K, 0, 0, !X32_BIT), // x32 uses the same numbers
        /* 4 */ op(JEQ_K, 11, 0, 90), // chmod -> 16
        /* 5 */ op(JEQ_K, 10, 0, 91), // fchmod -> 16
        /* 6 */ op(JEQ_K, 11, 0, 268), // fchmodat -> 18
        /* 7 */ op(JEQ_K, 10, 0, 452), // fchmodat2 -> 18
        /* 8 */ op(RET_K, 0, 0, ALLOW),
        /* 9 */ op(JEQ_K, 0, 10, ARCH_I386), // else -> 20
        /* 10 */ op(LD_W_ABS, 0, 0, NR),
        /* 11 */ op(JEQ_K, 4, 0, 15), // chmod -> 16
        /* 12 */ op(JEQ_K, 3, 0, 94), // fchmod -> 16
        /* 13 */ op(JEQ_K, 4, 0, 306), // fchmodat -> 18
        /* 14 */ op(JEQ_K, 3, 0, 452), // fchmodat2 -> 18
        /* 15 */ op(RET_K, 0, 0, ALLOW),
        /* 16 */ op(LD_W_ABS, 0, 0, ARG1),
        /* 17 */ op(JSET_K, 3, 2, SET_ID_BITS), // -> 21 : 20
        /* 18 */ op(LD_W_ABS, 0, 0, ARG2),
        /* 19 */ op(JSET_K, 1, 0, SET_ID_BITS), // -> 21 : 20
        /* 20 */ op(RET_K, 0, 0, ALLOW),
        /* 21 */ op(RET_K, 0, 0, DENY),
    ];

    pub(super) unsafe fn install() -> libc::c_int {
        let prog = libc::sock_fprog {
            len: PROGRAM.len() as u16,
            filter: PROGRAM.as_ptr() as *mut sock_filter,
        };
        // SAFETY: a valid program; the kernel copies it.
        unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog as libc::c_ulong,
                0,
                0,
            )
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod filter {
    pub(super) unsafe fn install() -> libc::c_int {
        0
    }
}
