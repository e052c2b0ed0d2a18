//! Whether a test can run here, decided once for every crate's tests: root,
//! a private mount namespace, programs. Missing prerequisites fail the test
//! when `CI` is set (CI runs as root with everything installed, and nothing
//! may be skipped there); elsewhere the test says it is skipped and returns.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Check what a test needs. Each item is `"root"` (effective uid 0),
/// `"namespaces"` (a private mount namespace can be made with `unshare`),
/// an absolute path to an executable that must exist (e.g.
/// `"/usr/sbin/sshd"`, which sshd insists on) or the name of a program that
/// must be in PATH (e.g. `"nix-store"`).
///
/// Missing prerequisites panic when the environment variable `CI` is set
/// (CI runs as root with nix-bin installed, and such tests must never be
/// skipped silently there); elsewhere they print a skip notice to stderr and
/// return false, and the test returns early.
pub fn prerequisites(what: &[&str]) -> bool {
    let mut missing = Vec::new();
    for &w in what {
        let ok = match w {
            "root" => is_root(),
            "namespaces" => {
                is_root()
                    && in_path("unshare")
                    && Command::new("unshare")
                        .args(["--mount", "--propagation", "private", "--", "true"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false)
            }
            path if path.starts_with('/') => is_executable(Path::new(path)),
            program => in_path(program),
        };
        if !ok {
            missing.push(match w {
                "root" => "running as root".to_string(),
                "namespaces" => {
                    "making a private mount namespace (`unshare --mount` as root)".to_string()
                }
                p if p.starts_with('/') => format!("`{p}`"),
                p => format!("`{p}` in PATH"),
            });
        }
    }
    gate(
        "this test needs",
        &missing,
        "CI runs it as root with nix-bin installed",
    )
}

/// The one place that decides between running, failing and skipping: true
/// when nothing is `missing`; else a panic when `CI` is set to anything but
/// the empty string (nothing may be skipped there), or a skip notice on
/// stderr and false. The message is "`who` MISSING (`hint`)".
pub fn gate(who: &str, missing: &[String], hint: &str) -> bool {
    if missing.is_empty() {
        return true;
    }
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let msg = format!("{who} {} ({hint})", missing.join(", "));
    if ci {
        panic!(
            "CI is set but a prerequisite is missing, and tests must not be skipped in CI: {msg}"
        );
    }
    eprintln!("SKIPPED (CI is not set): {msg}");
    false
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

/// Whether `program` is an executable file in one of PATH's directories.
pub fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| is_executable(&d.join(program))))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
