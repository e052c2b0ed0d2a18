//! README.md runs as written: a newcomer copies its commands, so a test
//! copies them too.
//!
//! Every fenced block of README.md is exercised, by its info string:
//! - ```` ```sh ````: all such blocks, in order, form one bash script (as a
//!   reader goes through the README in one shell), run from a checkout with
//!   `set -euo pipefail`; `cargo build --release` is the one line not run
//!   (the test's own binaries stand in `target/release`);
//! - ```` ```sh root ````: the testbed's commands, one script, as root;
//! - ```` ```sh ci ````: the test command, which `.ci/run` must run as
//!   written (this test would otherwise call itself);
//! - ```` ```sh systemd ````: needs systemd as PID 1: its files must exist and
//!   `systemd-analyze verify` accept the unit;
//! - ```` ```scheme ````: a build file, built, its last output checked;
//! - anything else (```` ```text ````, ...) is output, not run.
//!
//! Commands in indented blocks would escape all this: the test refuses them.

use ferry_test_support as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{ferry_bin, prerequisites};

struct Block {
    info: String,
    code: String,
    line: usize,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, l) in text.lines().enumerate() {
        match (&mut open, l.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    code: String::new(),
                    line: i + 1,
                })
            }
            (Some(_), Some(_)) => out.push(open.take().unwrap()),
            (Some(b), None) => {
                b.code.push_str(l);
                b.code.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md: a fenced block is not closed");
    out
}

fn script_of(blocks: &[&Block]) -> String {
    let mut s = String::from("set -euo pipefail\n");
    for b in blocks {
        s.push_str(&format!("echo '### README.md:{}' >&2\n", b.line));
        for l in b.code.lines() {
            if l.trim() == "cargo build --release" {
                s.push_str(
                    "# cargo build --release: this build's binaries stand in target/release\n",
                );
            } else {
                s.push_str(l);
                s.push('\n');
            }
        }
    }
    s
}

/// A checkout to run the README from: the repository's files, and this
/// build's binaries where `cargo build --release` puts them.
fn checkout(dir: &Path) -> PathBuf {
    let co = dir.join("checkout");
    std::fs::create_dir_all(co.join("target/release")).unwrap();
    for f in [
        "examples",
        "etc",
        "README.md",
        "Cargo.toml",
        "crates",
        "bench",
    ] {
        std::os::unix::fs::symlink(repo().join(f).canonicalize().unwrap(), co.join(f)).unwrap();
    }
    let bin = Path::new(ferry_bin());
    std::os::unix::fs::symlink(bin, co.join("target/release/ferry")).unwrap();
    let testbed = bin.with_file_name("ferry-testbed");
    std::os::unix::fs::symlink(&testbed, co.join("target/release/ferry-testbed")).unwrap();
    co
}

fn bash(script: &str, co: &Path, env: &[(&str, PathBuf)]) -> std::process::Output {
    let mut c = support::command("bash", &co.join("../home"));
    c.arg("-c").arg(script).current_dir(co);
    c.env_remove("FERRY_DAEMON_SOCKET");
    for (k, v) in env {
        c.env(k, v);
    }
    support::run(&mut c, None)
}

fn must_pass(what: &str, out: &std::process::Output, script: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- script ---\n{script}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn temp() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("ferry-readme-")
        .tempdir()
        .unwrap();
    // A root daemon's build users must reach a store under it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(t.path().join("home")).unwrap();
    t
}

/// The store, state, configuration and socket of a run, away from the
/// machine's own (the README names these variables as the way to move them).
fn private_store(t: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("FERRY_STORE_DIR", t.join("store")),
        ("FERRY_STATE_DIR", t.join("state")),
        ("FERRY_CONFIG_DIR", t.join("config")),
        ("FERRY_DAEMON_SOCKET", t.join("state/daemon-socket/socket")),
    ]
}

#[test]
fn every_block_has_a_known_kind_and_no_command_hides_in_an_indented_block() {
    let text = readme();
    for b in blocks(&text) {
        let kind = b.info.split_whitespace().next().unwrap_or("");
        if kind == "sh" {
            let tag = b.info.split_whitespace().nth(1);
            assert!(
                matches!(tag, None | Some("root" | "ci" | "systemd")),
                "README.md:{}: unknown block kind `{}`",
                b.line,
                b.info
            );
            assert!(
                !b.code.contains("sudo "),
                "README.md:{}: sudo is not on a minimal Debian; say 'as root' instead",
                b.line
            );
        }
    }
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_start();
        let indented = l.starts_with("    ") && !l.starts_with("    #:") && !l.starts_with("    (");
        let command = ["ferry", "cargo ", "sudo ", "./", ". ", "cp ", "systemctl "]
            .iter()
            .any(|p| t.starts_with(p));
        assert!(
            !(indented && command && !in_fence(&text, i)),
            "README.md:{}: a command in an indented block is not run by this test; fence it (```sh)",
            i + 1
        );
    }
}

fn in_fence(text: &str, line: usize) -> bool {
    text.lines()
        .take(line)
        .filter(|l| l.starts_with("```"))
        .count()
        % 2
        == 1
}

#[test]
fn shell_blocks_run_in_order_from_a_checkout() {
    let text = readme();
    let all = blocks(&text);
    let sh: Vec<&Block> = all.iter().filter(|b| b.info == "sh").collect();
    assert!(sh.len() >= 3, "README.md lost its shell blocks");
    let t = temp();
    let co = checkout(t.path());
    let script = script_of(&sh);
    let out = bash(&script, &co, &private_store(t.path()));
    must_pass("README.md's shell blocks", &out, &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Hello from Ferry!"), "{stdout}");
}

#[test]
fn build_file_examples_build() {
    let text = readme();
    let t = temp();
    let env = private_store(t.path());
    let mut n = 0;
    for b in blocks(&text).iter().filter(|b| b.info == "scheme") {
        n += 1;
        let file = t.path().join(format!("readme-{}.scm", b.line));
        std::fs::write(&file, &b.code).unwrap();
        let mut c = support::command(ferry_bin(), &t.path().join("home"));
        c.arg("build").arg(&file);
        for (k, v) in &env {
            c.env(k, v);
        }
        let out = support::run(&mut c, None);
        assert!(
            out.status.success(),
            "README.md:{}: the build file does not build:\n{}",
            b.line,
            String::from_utf8_lossy(&out.stderr)
        );
        let last = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("an output path")
            .to_string();
        let got = std::fs::read_to_string(&last).unwrap_or_default();
        assert!(
            !got.is_empty(),
            "README.md:{}: {last} is empty or not a file",
            b.line
        );
    }
    assert!(n >= 1, "README.md lost its build-file example");
}

#[test]
fn the_test_command_is_what_ci_runs() {
    let text = readme();
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    let blocks = blocks(&text);
    let cmds: Vec<&Block> = blocks.iter().filter(|b| b.info == "sh ci").collect();
    assert_eq!(cmds.len(), 1, "README.md gives one test command");
    for l in cmds[0].code.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            ci.lines().any(|c| c.trim() == l.trim()),
            ".ci/run does not run README.md's `{l}`"
        );
    }
}

#[test]
fn the_service_block_names_real_files() {
    let text = readme();
    for b in blocks(&text).iter().filter(|b| b.info == "sh systemd") {
        for l in b.code.lines().filter(|l| l.starts_with("cp ")) {
            let src = l.split_whitespace().nth(1).unwrap();
            let src = src.replace("target/release/ferry", ferry_bin().to_str().unwrap());
            let p = if Path::new(&src).is_absolute() {
                PathBuf::from(&src)
            } else {
                repo().join(&src)
            };
            assert!(p.exists(), "README.md:{}: {src} does not exist", b.line);
            if src.ends_with(".service") && prerequisites(&["systemd-analyze"]) {
                let out = Command::new("systemd-analyze")
                    .arg("verify")
                    .arg(&p)
                    .env("SYSTEMD_LOG_LEVEL", "err")
                    .output()
                    .unwrap();
                // The unit's ExecStart must exist for verify: service.rs
                // installs the binary there; here only the syntax counts.
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    !err.contains("Unknown key") && !err.contains("Failed to parse"),
                    "README.md:{}: {src}: {err}",
                    b.line
                );
            }
        }
    }
}

#[test]
fn testbed_blocks_run_as_root() {
    if !prerequisites(&["root", "namespaces", "ip", "nft", "sshd", "ssh"]) {
        return;
    }
    let text = readme();
    let all = blocks(&text);
    let root: Vec<&Block> = all.iter().filter(|b| b.info == "sh root").collect();
    assert!(!root.is_empty(), "README.md lost its testbed block");
    let t = temp();
    let co = checkout(t.path());
    let release = co.join("target/release");
    let path = format!(
        "{}:{}",
        release.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = script_of(&root);
    let out = bash(&script, &co, &[("PATH", PathBuf::from(path))]);
    // Whatever happened, leave no testbed behind.
    let _ = Command::new(release.join("ferry-testbed"))
        .args(["down", "--dir", "/tmp/tb"])
        .output();
    must_pass("README.md's testbed block", &out, &script);
}
