//! `ferry derivation add FILE.scm`: build files written to the store, and
//! the same derivations described in Nix give the same `.drv` paths.

use ferry_test_support as support;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use support::*;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Every example loads, its .drv files land in the store, and each passes
/// the checks of `ferry derivation show` (outputs recomputed from inputs).
#[test]
fn examples_are_added_and_consistent() {
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let ferry = |args: &[&OsStr]| {
        let mut c = command(ferry_bin(), &home);
        c.env("FERRY_STORE_DIR", tmp.path().join("store"))
            .env("FERRY_STATE_DIR", tmp.path().join("state"))
            .args(args);
        c
    };
    for (example, root_name, count) in [
        ("hello.scm", "-hello.drv", 1),
        ("dag.scm", "-dag-root.drv", 41),
        ("c-program/build.scm", "-greet.drv", 3),
    ] {
        let file = examples().join(example);
        let out = stdout_line(run_ok(
            &mut ferry(&["derivation".as_ref(), "add".as_ref(), file.as_os_str()]),
            None,
            example,
        ));
        assert!(out.ends_with(root_name), "{example}: {out}");
        // Adding again gives the same path (the store already has it).
        let again = stdout_line(run_ok(
            &mut ferry(&["derivation".as_ref(), "add".as_ref(), file.as_os_str()]),
            None,
            example,
        ));
        assert_eq!(out, again);
        let shown = run_ok(
            &mut ferry(&["derivation".as_ref(), "show".as_ref(), out.as_ref()]),
            None,
            "derivation show",
        );
        let v: serde_json::Value = serde_json::from_slice(&shown).unwrap();
        assert!(v.get(&out).is_some(), "{example}: show keyed by {out}");
        let drvs = fs::read_dir(tmp.path().join("store"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".drv")
            })
            .count();
        assert!(drvs >= count, "{example}: {drvs} .drv files in the store");
    }
    let o = run(&mut ferry(&["store".as_ref(), "verify".as_ref()]), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn build_file_errors_name_the_place() {
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let cases = [
        (
            "(derivation \"x\" #:builder \"/bin/sh\" #:colour \"red\")",
            "bad.scm:1:1: error: derivation has no keyword #:colour",
        ),
        ("(derivation \"x\")", "needs #:builder"),
        (
            "(derivation \"x\" #:builder \"/bin/sh\" #:inputs '(\"missing.txt\"))",
            "missing.txt",
        ),
        ("(list 1 2)", "must return a derivation"),
        ("(derivation \"a b\" #:builder \"/bin/sh\")", "contains ' '"),
        (
            "(derivation-output (derivation \"x\" #:builder \"/bin/sh\") \"dev\")",
            "has no output \"dev\"",
        ),
    ];
    for (text, want) in cases {
        let file = tmp.path().join("bad.scm");
        fs::write(&file, text).unwrap();
        let mut c = command(ferry_bin(), &home);
        c.env("FERRY_STORE_DIR", tmp.path().join("store"))
            .env("FERRY_STATE_DIR", tmp.path().join("state"))
            .args(["derivation", "add"])
            .arg(&file);
        let o = run(&mut c, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{text}");
        assert!(err.contains(want), "{text}: wanted {want:?} in {err}");
    }
}

const NIX_FILE: &str = r#"
let
  sys = "x86_64-linux";
  hello = derivation {
    name = "hello"; system = sys; builder = "/bin/sh";
    args = [ "-c" "echo hello > $out" ];
  };
  multi = derivation {
    name = "multi"; system = sys; builder = "/bin/sh";
    args = [ "-c" "echo > $out; echo > $dev" ];
    outputs = [ "out" "dev" ];
    GREETING = "hi \"there\"\n\tand $HOME";
  };
  user = derivation {
    name = "user"; system = sys; builder = "/bin/sh";
    args = [ "-c" "cat ${hello} ${multi.dev} ${./data.txt} > $out" ];
  };
  tree = derivation {
    name = "tree"; system = sys; builder = "/bin/sh";
    args = [ "-c" "ls ${./srcdir} > $out" ];
  };
in [ hello multi user tree ]
"#;

const SCHEME_FILE: &str = r#"
(define sys "x86_64-linux")
(define hello
  (derivation "hello" #:system sys #:builder "/bin/sh"
              #:args '("-c" "echo hello > $out")))
(define multi
  (derivation "multi" #:system sys #:builder "/bin/sh"
              #:args '("-c" "echo > $out; echo > $dev")
              #:outputs '("out" "dev")
              #:env '(("GREETING" . "hi \"there\"\n\tand $HOME"))))
(define user
  (derivation "user" #:system sys #:builder "/bin/sh"
              #:args (list "-c" (string-append "cat " (derivation-output hello) " "
                                               (derivation-output multi "dev") " "
                                               (local-file "data.txt") " > $out"))))
(define tree
  (derivation "tree" #:system sys #:builder "/bin/sh"
              #:args (list "-c" (string-append "ls " (local-file "srcdir") " > $out"))))
(list hello multi user tree)
"#;

/// The same four derivations written in Nix and in a Ferry build file get
/// the same .drv paths (so the same .drv bytes and output paths), with
/// store directory /nix/store.
#[test]
fn build_files_match_nix_instantiate() {
    if !prerequisites(&["root", "namespaces", "nix-instantiate"]) {
        return;
    }
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let work = tmp.path().join("work");
    fs::create_dir_all(work.join("srcdir/sub")).unwrap();
    fs::write(work.join("data.txt"), "data\n").unwrap();
    fs::write(work.join("srcdir/sub/a"), "a").unwrap();
    fs::write(work.join("srcdir/b"), "b").unwrap();
    fs::write(work.join("drvs.nix"), NIX_FILE).unwrap();
    fs::write(work.join("drvs.scm"), SCHEME_FILE).unwrap();

    let nixroot = tmp.path().join("nixroot");
    let nix_out = run_ok(
        command("nix-instantiate", &home)
            .arg("--store")
            .arg(nix_store_uri(&nixroot))
            .arg(work.join("drvs.nix")),
        None,
        "nix-instantiate",
    );
    let nix_paths: Vec<String> = String::from_utf8(nix_out)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .collect();

    let scm = work.join("drvs.scm");
    let state = tmp.path().join("state");
    let mut c = in_nix_namespace(
        NsStore::Tmpfs,
        &home,
        ferry_bin(),
        &["derivation".as_ref(), "add".as_ref(), scm.as_os_str()],
    );
    c.env("FERRY_STORE_DIR", "/nix/store")
        .env("FERRY_STATE_DIR", &state);
    let ferry_out = run_ok(&mut c, None, "ferry derivation add in a namespace");
    let ferry_paths: Vec<String> = String::from_utf8(ferry_out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        ferry_paths, nix_paths,
        "ferry vs nix-instantiate .drv paths"
    );
}

/// A build file whose derivations take local files and another
/// derivation's output as `#:inputs` (the form README documents).
const LOCAL_INPUTS_FILE: &str = r#"
(define first
  (derivation "first"
    #:builder "/bin/sh"
    #:inputs (list (local-file "in.txt"))
    #:env (list (cons "in" (local-file "in.txt")))
    #:args '("-c" "read line < $in; echo \"first:$line\" > $out")))
(define listed-only
  (derivation "listed-only"
    #:builder "/bin/sh"
    #:inputs (list (local-file "other.txt") (derivation-output first))
    #:args '("-c" "echo listed > $out")))
(derivation "second"
  #:builder "/bin/sh"
  #:inputs (list first listed-only (local-file "in.txt"))
  #:args (list "-c" (string-append "read a < " (derivation-output first)
                                   "; read b < " (local-file "in.txt")
                                   "; read c < " (derivation-output listed-only)
                                   "; echo \"$a $b $c\" > $out")))
"#;

/// A `ferry daemon` on a socket of its own, killed when dropped.
struct TestDaemon(std::process::Child);

impl Drop for TestDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `#:inputs (list (local-file "in.txt"))` builds, through a daemon and
/// embedded, and the builder reads the file.
#[test]
fn local_file_inputs_build_through_a_daemon_and_embedded() {
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    fs::write(work.join("in.txt"), "hello-in\n").unwrap();
    fs::write(work.join("other.txt"), "other\n").unwrap();
    let file = work.join("build.scm");
    fs::write(&file, LOCAL_INPUTS_FILE).unwrap();
    for mode in ["embedded", "daemon"] {
        let store = tmp.path().join(format!("store-{mode}"));
        let state = tmp.path().join(format!("state-{mode}"));
        let socket = tmp.path().join(format!("{mode}.sock"));
        let ferry = |args: &[&OsStr]| {
            let mut c = command(ferry_bin(), &home);
            c.env("FERRY_STORE_DIR", &store)
                .env("FERRY_STATE_DIR", &state)
                .env("FERRY_CONFIG_DIR", tmp.path().join("config"))
                .env("FERRY_DAEMON_SOCKET", &socket)
                .args(args);
            c
        };
        let _daemon = (mode == "daemon").then(|| {
            let child = ferry(&["daemon".as_ref(), "--no-offload".as_ref()])
                .env("FERRY_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while std::os::unix::net::UnixStream::connect(&socket).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the daemon did not listen"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            TestDaemon(child)
        });
        let out = stdout_line(run_ok(
            &mut ferry(&["build".as_ref(), "--no-offload".as_ref(), file.as_os_str()]),
            None,
            mode,
        ));
        assert!(out.ends_with("-second"), "{mode}: {out}");
        assert_eq!(
            fs::read_to_string(&out).unwrap(),
            "first:hello-in hello-in listed\n",
            "{mode}"
        );
        let o = run(&mut ferry(&["store".as_ref(), "verify".as_ref()]), None);
        assert!(
            o.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}
