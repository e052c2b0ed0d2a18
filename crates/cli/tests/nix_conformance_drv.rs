//! Conformance of `ferry derivation show` against real Nix (2.8): the JSON
//! of `nix show-derivation` on derivations made by `nix-instantiate`
//! (multiple outputs, fixed outputs of every algorithm, structured
//! attributes), and refusal of tampered derivations. NARs and the store are
//! in nix_conformance.rs.
//!
//! Nix always works on a chroot store (`--store local?root=DIR`), and ferry
//! only ever sees /nix/store inside a private mount namespace (see
//! `ferry_test_support::in_nix_namespace`): the host's /nix is never
//! written. These tests need Nix, root and namespaces: `prerequisites`
//! panics when they are missing under CI=true and skips loudly otherwise.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use ferry_test_support::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// 3. derivation show against nix show-derivation
// ---------------------------------------------------------------------------

const DRV_NIX: &str = r#"
let
  sys = "x86_64-linux";
  mk = attrs: derivation ({ system = sys; builder = "/bin/sh"; args = [ "-c" "exit 1" ]; } // attrs);

  multi = mk { name = "multi"; outputs = [ "out" "dev" "lib" ]; };

  escapes = mk {
    name = "escapes";
    quotes = "say \"hi\" \"\"";
    backslashes = "a\\b\\\\c\\n\\";
    controls = "line1\nline2\r\n\ttabbed\r";
    unicode = "@UNICODE@";
    dollar = "$HOME ${"$"}{x} $$ \${y} $";
    raw = builtins.fromJSON "\"\\u0001\\u001f\\u007f\"";
    empty = "";
    "key with spaces" = "v";
    "KEY=equals" = "w";
    args = [ "-c" "echo \"$out\"\n" "\t" "" "back\\slash" ];
  };

  fixedFlat = mk {
    name = "fixed-flat";
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  };
  fixedRec = mk {
    name = "fixed-rec";
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    outputHash = "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";
  };
  fixedBar = mk {
    name = "bar";
    outputHashMode = "recursive";
    outputHashAlgo = "sha256";
    outputHash = "08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba";
  };
  fixedSha1 = mk {
    name = "fixed-sha1";
    outputHashAlgo = "sha1";
    outputHash = "a9993e364706816aba3e25717850c26c9cd0d89d";
  };
  fixedSha512Sri = mk {
    name = "fixed-sha512";
    outputHashMode = "recursive";
    outputHash = "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw==";
  };
  # Two fixed-output derivations that differ only in their builder: same
  # output path, same hashDerivationModulo, so their entries collide in a
  # dependent's input list.
  sameA = mk { name = "fixed-same"; outputHashAlgo = "sha256"; outputHash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; args = [ "-c" "variant a" ]; };
  sameB = mk { name = "fixed-same"; outputHashAlgo = "sha256"; outputHash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; args = [ "-c" "variant b" ]; };
  useFixed = mk { name = "use-fixed"; inherit fixedFlat fixedRec fixedSha1 fixedSha512Sri; a = sameA; b = sameB; bar = fixedBar; };

  chain0 = mk { name = "chain-0"; };
  chainStep = prev: i: mk { name = "chain-${toString i}"; inherit prev; };
  chainTop = builtins.foldl' chainStep chain0 (builtins.genList (i: i + 1) 10);

  base = mk { name = "diamond-base"; outputs = [ "out" "dev" ]; };
  left = mk { name = "diamond-left"; dep = base.dev; };
  right = mk { name = "diamond-right"; dep = base; };
  top = mk { name = "diamond-top"; inherit left right; alsoBase = "${base.dev}/include:${base}"; };

  withSources = derivation {
    name = "with-sources";
    system = sys;
    builder = ./script.sh;
    args = [ ./script.sh "${./srcdir}/inner" ];
    src = ./file.txt;
    dir = ./srcdir;
    inherit multi;
    libOnly = multi.lib;
  };

  structured = mk {
    name = "structured";
    __structuredAttrs = true;
    outputs = [ "out" "bin" ];
    list = [ 1 "two" true null ];
    nested = { a = 1; s = "q\"\n"; };
    dep = chain0;
  };

  passFile = mk { name = "pass-as-file"; passAsFile = [ "big" ]; big = "content\n"; };
in
  [ multi escapes fixedFlat fixedRec fixedBar fixedSha1 fixedSha512Sri sameA sameB useFixed
    chainTop base left right top withSources structured passFile ]
"#;

/// Instantiate DRV_NIX into a chroot store; returns (nixroot, drv paths as
/// printed, every .drv in the store).
fn instantiate(tmp: &Path, home: &Path) -> (PathBuf, Vec<String>, Vec<String>) {
    let src = tmp.join("expr");
    fs::create_dir(&src).unwrap();
    // NFC and NFD spellings of "é", and characters outside the BMP.
    let unicode = "\u{e9} e\u{301} \u{2713} \u{65e5}\u{672c}\u{8a9e} \u{1f980}";
    fs::write(
        src.join("default.nix"),
        DRV_NIX.replace("@UNICODE@", unicode),
    )
    .unwrap();
    fs::write(src.join("script.sh"), "#!/bin/sh\necho building\n").unwrap();
    fs::set_permissions(
        src.join("script.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::write(src.join("file.txt"), "a source file\n").unwrap();
    fs::create_dir(src.join("srcdir")).unwrap();
    fs::write(src.join("srcdir/inner"), "inner\n").unwrap();
    std::os::unix::fs::symlink("inner", src.join("srcdir/link")).unwrap();

    let nixroot = tmp.join("nixroot");
    let printed: Vec<String> = String::from_utf8(run_ok(
        command("nix-instantiate", home)
            .arg("--store")
            .arg(nix_store_uri(&nixroot))
            .arg(src.join("default.nix")),
        None,
        "nix-instantiate",
    ))
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect();
    assert_eq!(printed.len(), 18, "nix-instantiate printed {printed:?}");
    let mut all: Vec<String> = fs::read_dir(nixroot.join("nix/store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".drv"))
        .map(|n| format!("/nix/store/{n}"))
        .collect();
    all.sort();
    (nixroot, printed, all)
}

fn nix_show(home: &Path, nixroot: &Path, drvs: &[String]) -> Value {
    serde_json::from_slice(&run_ok(
        command("nix", home)
            .args([
                "--extra-experimental-features",
                "nix-command",
                "show-derivation",
            ])
            .arg("--store")
            .arg(nix_store_uri(nixroot))
            .args(drvs),
        None,
        "nix show-derivation",
    ))
    .expect("nix show-derivation prints JSON")
}

/// `ferry derivation show FILE` in a namespace where Nix's chroot store is
/// bind-mounted at /nix/store (so input .drvs resolve).
fn ferry_show(home: &Path, nixroot: &Path, file: &Path) -> std::process::Output {
    let store = nixroot.join("nix/store");
    let mut cmd = in_nix_namespace(
        NsStore::Bind(&store),
        home,
        ferry_bin(),
        &[
            OsStr::new("derivation"),
            OsStr::new("show"),
            file.as_os_str(),
        ],
    );
    cmd.env("FERRY_STORE_DIR", "/nix/store")
        .env("FERRY_STATE_DIR", home.join("ferry-state"))
        .env("FERRY_CONFIG_DIR", home.join("ferry-config"));
    run(&mut cmd, None)
}

/// Compare `ferry derivation show` with `nix show-derivation` on every
/// .drv file nix-instantiate made whose name `select` accepts; returns the
/// store's .drv paths and Nix's JSON for all of them.
fn compare_show(select: &dyn Fn(&str) -> bool) -> (Vec<String>, Value) {
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let (nixroot, printed, all) = instantiate(tmp.path(), &home);
    for p in &printed {
        assert!(
            all.contains(p),
            "{p} printed by nix-instantiate is not in the store"
        );
    }
    // 18 printed + chain-0 .. chain-9 below the printed chain-10.
    assert_eq!(all.len(), 28, ".drv files in the store: {all:?}");

    let nix_all = nix_show(&home, &nixroot, &all);
    let chosen: Vec<&String> = all.iter().filter(|d| select(d)).collect();
    assert!(!chosen.is_empty());
    let mut failures = Vec::new();
    for drv in &chosen {
        let drv: &String = drv;
        let out = ferry_show(&home, &nixroot, Path::new(drv));
        if !out.status.success() {
            failures.push(format!(
                "{drv}: ferry derivation show failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let ferry_v: Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{drv}: ferry's output is not JSON: {e}"));
                continue;
            }
        };
        // The key is the recomputed .drv path: it must be the file's own.
        let keys: Vec<&String> = ferry_v.as_object().unwrap().keys().collect();
        if keys != [drv] {
            failures.push(format!(
                "{drv}: ferry keyed its output by {keys:?}, not by the file's own store path"
            ));
        }
        let nix_v = serde_json::json!({ drv.clone(): nix_all[drv].clone() });
        if ferry_v != nix_v {
            failures.push(format!(
                "{drv}: ferry derivation show differs from nix show-derivation (left ferry, right Nix):\n    {}",
                json_diff(&ferry_v, &nix_v).join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} derivations differ:\n{}",
        failures.len(),
        chosen.len(),
        failures.join("\n")
    );
    (all, nix_all)
}

/// Derivation features that have their own tests below.
fn has_own_test(drv: &str) -> bool {
    ["-structured.drv", "-fixed-sha1.drv", "-fixed-sha512.drv"]
        .iter()
        .any(|s| drv.ends_with(s))
}

/// Multiple outputs, escapes, sha256 fixed outputs (flat and recursive,
/// colliding twins), a 10-deep chain, a diamond, input sources,
/// passAsFile; and dependents of every fixed output, sha1/sha512 included.
#[test]
fn derivation_show_matches_nix_show_derivation() {
    if !prerequisites(&["root", "namespaces", "nix-store", "nix-instantiate", "nix"]) {
        return;
    }
    let (all, nix_all) = compare_show(&|d| !has_own_test(d));
    // formats.md's fixed-output vector: the output path of a recursive
    // sha256 "bar" depends only on its name and hash.
    let bar = all.iter().find(|d| d.ends_with("-bar.drv")).unwrap();
    assert_eq!(
        nix_all[bar]["outputs"]["out"]["path"],
        Value::from("/nix/store/4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar"),
        "formats.md's bar vector"
    );
}

/// Fixed outputs hashed with sha1 (flat) and sha512 (recursive, given in
/// SRI form): Nix accepts md5, sha1, sha256 and sha512 (fetchurl with
/// sha1/sha512 hashes is common).
#[test]
fn derivation_show_fixed_outputs_sha1_sha512() {
    if !prerequisites(&["root", "namespaces", "nix-store", "nix-instantiate", "nix"]) {
        return;
    }
    compare_show(&|d| d.ends_with("-fixed-sha1.drv") || d.ends_with("-fixed-sha512.drv"));
}

/// `__structuredAttrs = true`: the env holds only `__json` and the output
/// paths (no `name`, `builder`, `system`...).
#[test]
fn derivation_show_structured_attrs() {
    if !prerequisites(&["root", "namespaces", "nix-store", "nix-instantiate", "nix"]) {
        return;
    }
    compare_show(&|d| d.ends_with("-structured.drv"));
}

/// Replace the first hash character of `path` (at /nix/store/<hash>) with a
/// different nix32 digit.
fn tamper_path(path: &str) -> String {
    let pos = "/nix/store/".len();
    let c = path.as_bytes()[pos];
    let new = if c == b'0' { '1' } else { '0' };
    format!("{}{}{}", &path[..pos], new, &path[pos + 1..])
}

#[test]
fn derivation_show_refuses_tampered_derivations() {
    if !prerequisites(&["root", "namespaces", "nix-store", "nix-instantiate", "nix"]) {
        return;
    }
    let tmp = temp_dir();
    let home = tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let (nixroot, printed, _) = instantiate(tmp.path(), &home);
    let find = |suffix: &str| {
        printed
            .iter()
            .find(|p| p.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in {printed:?}"))
            .clone()
    };
    let nix_v = nix_show(&home, &nixroot, &printed);
    let read_drv = |p: &str| fs::read_to_string(nixroot.join(p.trim_start_matches('/'))).unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();

    // An untouched copy outside the store is accepted and keyed by the
    // path its contents imply, whatever the copy is called.
    for name in ["-multi.drv", "-diamond-top.drv", "-with-sources.drv"] {
        let drv = find(name);
        let copy = outside.join(format!("copy{name}"));
        fs::write(&copy, read_drv(&drv)).unwrap();
        let out = ferry_show(&home, &nixroot, &copy);
        assert!(
            out.status.success(),
            "ferry derivation show of an exact copy of {drv} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ drv.clone(): nix_v[&drv].clone() }),
            "copy of {drv} outside the store"
        );
    }

    // (description, tampered text, the genuine path the message must name)
    let mut cases: Vec<(String, String, Option<String>)> = Vec::new();
    // (a) multi's dev output path changed everywhere it occurs (outputs and
    //     env agree with each other, but not with the contents).
    let multi = find("-multi.drv");
    let dev = nix_v[&multi]["outputs"]["dev"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    cases.push((
        format!("{multi} with its dev output path {dev} replaced everywhere"),
        read_drv(&multi).replace(&dev, &tamper_path(&dev)),
        Some(dev.clone()),
    ));
    // (b) diamond-top's out path changed in the outputs list only.
    let top = find("-diamond-top.drv");
    let out_path = nix_v[&top]["outputs"]["out"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let text = read_drv(&top);
    let tuple = format!("(\"out\",\"{out_path}\"");
    assert!(text.contains(&tuple), "{top}: no {tuple} in {text}");
    cases.push((
        format!("{top} with its out path changed in the outputs list only"),
        text.replacen(
            &tuple,
            &format!("(\"out\",\"{}\"", tamper_path(&out_path)),
            1,
        ),
        Some(out_path.clone()),
    ));
    // (c) a fixed-output derivation whose recorded path no longer matches.
    let flat = find("-fixed-flat.drv");
    let fp = nix_v[&flat]["outputs"]["out"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    cases.push((
        format!("{flat} with its out path {fp} replaced everywhere"),
        read_drv(&flat).replace(&fp, &tamper_path(&fp)),
        Some(fp.clone()),
    ));
    // (d) an env value changed, output paths untouched: the recorded paths
    //     no longer follow from the contents.
    let esc = find("-escapes.drv");
    let text = read_drv(&esc);
    assert!(text.contains("(\"empty\",\"\")"));
    cases.push((
        format!("{esc} with an env value changed"),
        text.replace("(\"empty\",\"\")", "(\"empty\",\"tampered\")"),
        None,
    ));

    for (i, (what, contents, genuine)) in cases.iter().enumerate() {
        let f = outside.join(format!("tampered-{i}.drv"));
        fs::write(&f, contents).unwrap();
        let out = ferry_show(&home, &nixroot, &f);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "ferry derivation show accepted {what}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains("match"),
            "ferry derivation show refused {what} but its message does not mention the mismatch: {stderr}"
        );
        if let Some(g) = genuine {
            assert!(
                stderr.contains(g.as_str()),
                "the refusal of {what} should name the path the contents imply ({g}): {stderr}"
            );
        }
        assert!(out.stdout.is_empty(), "nothing on stdout for {what}");
    }
}
