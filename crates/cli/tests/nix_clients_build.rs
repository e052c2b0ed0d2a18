//! Nix builds through a Ferry daemon: `nix-instantiate` and
//! `nix-store --realise`, and `nix-build` of a DAG with a
//! `builtins.toFile` source, a `builtins.path` source, a dependency chain,
//! a derivation with several outputs and a fixed-output derivation, built
//! by Ferry's engine: the build logs reach the Nix client (and `nix log`
//! finds them afterwards), a failure is
//! Nix's error with the log's last lines, `--max-jobs 0` is Ferry's
//! "build machines only", and the outputs (paths, NAR
//! hashes, sizes, references) are those Nix builds itself from the same
//! expression on its own store.

use ferry_test_support as support;

use ferry_test_support::nix_clients::{text, FerryNix};
use ferry_test_support::nix_dag::infos;
use support::run;

/// The DAG. Builders have only /bin/sh and its built-ins (no PATH).
const DAG: &str = r#"
let
  sys = builtins.currentSystem;
  sh = name: script: attrs: derivation ({ inherit name; system = sys; builder = "/bin/sh"; args = [ "-c" script ]; } // attrs);
  cat = "cat() { for x in \"$@\"; do while IFS= read -r l; do echo \"$l\"; done < $x; done; };";
  text = builtins.toFile "text.txt" "a source text\n";
  tree = builtins.path { path = ./tree; name = "tree"; };
  a = sh "a" "${cat} echo building a; cat ${text} ${tree}/inner > $out" {};
  b = sh "b" "echo building b; echo ${a} > $out; echo headers > $dev" { outputs = [ "out" "dev" ]; };
  fixed = sh "fixed" "echo fixed > $out" {
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = builtins.hashString "sha256" "fixed\n";
  };
  chain = n: if n == 0 then b else sh "chain-${toString n}" "${cat} echo building chain ${toString n}; cat ${chain (n - 1)} > $out; echo ${toString n} >> $out" {};
  top = sh "top" "${cat} echo building top; cat ${chain 5} ${b.dev} ${fixed} > $out" {};
in { inherit a b fixed top; fails = sh "fails" "echo about to fail; echo the reason >&2; exit 3" {}; }
"#;

#[test]
fn nix_build_through_a_ferry_daemon_builds_what_nix_builds() {
    if !support::prerequisites(&["root", "nix-build", "nix-instantiate", "nix"]) {
        return;
    }
    let mut f = FerryNix::start(&[]);
    let dir = f.root.join("expr");
    std::fs::create_dir_all(dir.join("tree")).unwrap();
    std::fs::write(dir.join("tree/inner"), "inside a tree\n").unwrap();
    let file = dir.join("dag.nix");
    std::fs::write(&file, DAG).unwrap();
    let file = file.to_str().unwrap();

    // nix-instantiate writes the .drvs through the daemon (AddTextToStore
    // and AddToStore for the sources); --realise builds one of them.
    let drv = f.ok("nix-instantiate", &[file, "-A", "a"]);
    assert!(drv.ends_with("-a.drv"), "{drv}");
    let o = run(&mut f.nix("nix-store", &["--realise", &drv]), None);
    assert!(o.status.success(), "{}{}", text(&o), f.log());
    let a_out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        text(&o).contains("building a"),
        "the log reaches the client: {}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&a_out).unwrap(),
        "a source text\ninside a tree\n"
    );
    // The deriver is recorded; the derivation's outputs are known.
    assert_eq!(f.ok("nix-store", &["-q", "--deriver", &a_out]), drv);
    assert_eq!(f.ok("nix-store", &["-q", "--outputs", &drv]), a_out);
    // `nix log` reads the log itself, from its NIX_LOG_DIR: Ferry's daemon
    // links LOGDIR/drvs to its own logs (--nix-log-dir), by derivation
    // and by output.
    for what in [&drv, &a_out] {
        let log = f.ok("nix", &["log", what]);
        assert!(log.contains("building a"), "nix log {what}: {log}");
    }
    let log = f.ok("nix-store", &["--read-log", &drv]);
    assert!(log.contains("building a"), "nix-store --read-log: {log}");

    // nix-build of the whole DAG, with its result link (an indirect root).
    let result = f.root.join("result");
    let o = run(
        &mut f.nix(
            "nix-build",
            &[file, "-A", "top", "-o", result.to_str().unwrap()],
        ),
        None,
    );
    assert!(o.status.success(), "{}{}", text(&o), f.log());
    let top = String::from_utf8_lossy(&o.stdout).trim().to_string();
    for line in ["building chain 5", "building top", "building b"] {
        assert!(text(&o).contains(line), "{line}: {}", text(&o));
    }
    assert_eq!(std::fs::read_link(&result).unwrap().to_str().unwrap(), top);
    let roots = f.ok("nix-store", &["--gc", "--print-roots"]);
    assert!(roots.contains(&top), "{roots}");
    let content = std::fs::read_to_string(&top).unwrap();
    assert!(content.ends_with("5\nheaders\nfixed\n"), "{content}");
    // Built again: nothing to do, same answer.
    let again = f.ok("nix-build", &[file, "-A", "top", "--no-out-link"]);
    assert_eq!(again, top);

    // A failing build: Nix's error, with the log's last lines.
    let o = run(
        &mut f.nix("nix-build", &[file, "-A", "fails", "--no-out-link"]),
        None,
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("about to fail") && t.contains("exit code 3"),
        "{t}"
    );

    // --max-jobs 0: build machines only (Ferry's offload); with none
    // configured, Ferry's reason.
    let o = run(
        &mut f.nix(
            "nix-build",
            &[file, "-A", "fails", "--no-out-link", "--max-jobs", "0"],
        ),
        None,
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("must be built on a build machine"),
        "{}",
        text(&o)
    );

    // The outputs and everything they need, as the Ferry daemon has them.
    let mut wanted: Vec<String> = vec![top.clone(), a_out.clone()];
    for attr in ["b", "b.dev", "fixed"] {
        let outs = f.ok("nix-build", &[file, "-A", attr, "--no-out-link"]);
        wanted.extend(outs.lines().map(str::to_string));
    }
    let mut args = vec!["path-info", "--json", "-r"];
    args.extend(wanted.iter().map(String::as_str));
    let ferry = infos(&f.ok("nix", &args));
    assert_eq!(ferry.len(), 5, "{ferry:?}");

    // The same expression built by Nix itself on its own store at the
    // same directory.
    f.stop_and_set_aside();
    let o = run(
        &mut f.reference("nix-build", &[file, "-A", "top", "--no-out-link"]),
        None,
    );
    assert!(o.status.success(), "the reference build: {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), top);
    for attr in ["a", "b", "b.dev", "fixed"] {
        let o = run(
            &mut f.reference("nix-build", &[file, "-A", attr, "--no-out-link"]),
            None,
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let mut c = f.reference("nix", &args);
    let nix = infos(&f.ok_with(&mut c, None));
    assert_eq!(
        ferry.keys().collect::<Vec<_>>(),
        nix.keys().collect::<Vec<_>>(),
        "the same closure"
    );
    for (p, want) in &nix {
        assert_eq!(&ferry[p], want, "{p}: Ferry's record differs from Nix's");
    }
}
