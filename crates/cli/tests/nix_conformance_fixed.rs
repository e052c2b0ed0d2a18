//! Conformance of fixed outputs against real Nix (2.8): for each hash
//! algorithm and mode, the output path and the `ca` field Ferry computes
//! for a fixed-output derivation are the ones `nix-store --add-fixed` gives
//! the same contents, and the path is the same whichever spelling of the
//! hash the expression (`nix-instantiate`) or the `.drv` uses.
//!
//! Nix works on a chroot store (`--store local?root=DIR`); Ferry's side is
//! computed in this process (the formats and the builder's check), so no
//! namespace is needed. The builds themselves are covered by
//! `attack_registration.rs`, which checks the same `ca` strings.

use ferry_test_support as support;

use std::fs;
use std::path::Path;

use ferry_formats::content_hash::{Hash, HashAlgo};
use ferry_formats::derivation::{self, DerivationError};
use ferry_formats::{nar, Sha256Hash, StoreDir};
use serde_json::Value;
use support::*;

fn no_inputs(p: &str) -> Result<Sha256Hash, DerivationError> {
    panic!("no input derivations expected, asked for {p}")
}

const ALGOS: [HashAlgo; 4] = [
    HashAlgo::Md5,
    HashAlgo::Sha1,
    HashAlgo::Sha256,
    HashAlgo::Sha512,
];

#[test]
fn fixed_output_paths_and_ca_match_nix() {
    if !prerequisites(&["nix-store", "nix-instantiate", "nix"]) {
        return;
    }
    let tmp = temp_dir();
    let t = tmp.path();
    let home = t.join("home");
    fs::create_dir(&home).unwrap();
    let nixroot = t.join("nixroot");
    // The "fetched" contents: a file, and a tree holding it.
    let file = t.join("fetched");
    fs::write(&file, "the real tarball\n").unwrap();
    let tree = t.join("fetched-tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("file"), "the real tarball\n").unwrap();
    let mut tree_nar = Vec::new();
    nar::dump(&tree, &mut tree_nar).unwrap();

    let nix_dir = StoreDir::new("/nix/store").unwrap();
    let mut expr = String::from("[\n");
    let mut expected_drvs = Vec::new();
    for algo in ALGOS {
        for recursive in [false, true] {
            let (src, name, contents) = if recursive {
                (&tree, "fetched-tree", tree_nar.as_slice())
            } else {
                (&file, "fetched", &b"the real tarball\n"[..])
            };
            // Nix: the path and ca of the same contents added as fixed.
            let mut add = command("nix-store", &home);
            add.arg("--store")
                .arg(nix_store_uri(&nixroot))
                .arg("--add-fixed");
            if recursive {
                add.arg("--recursive");
            }
            add.arg(algo.name()).arg(src);
            let nix_path = stdout_line(run_ok(&mut add, None, "nix-store --add-fixed"));
            let info: Value = serde_json::from_slice(&run_ok(
                command("nix", &home)
                    .args(["--extra-experimental-features", "nix-command"])
                    .args(["path-info", "--json", "--store"])
                    .arg(nix_store_uri(&nixroot))
                    .arg(&nix_path),
                None,
                "nix path-info --json",
            ))
            .unwrap();
            let nix_ca = info[0]["ca"].as_str().expect("a ca field").to_string();

            // Ferry: the path from a .drv spelling the hash any way Nix
            // reads it, and the ca of the builder's check on the contents.
            let hash = Hash::digest(algo, contents);
            let mode = if recursive { "r:" } else { "" };
            for spelling in [hash.to_base16(), hash.to_nix32(), hash.to_base64()] {
                let mut drv = derivation::Derivation {
                    system: "x86_64-linux".into(),
                    builder: "/bin/sh".into(),
                    ..Default::default()
                };
                drv.outputs.insert(
                    "out".into(),
                    derivation::Output {
                        path: String::new(),
                        hash_algo: format!("{mode}{algo}"),
                        hash: spelling.clone(),
                    },
                );
                drv.env.insert("name".into(), name.into());
                let paths = drv.expected_output_paths(&nix_dir, &mut no_inputs).unwrap();
                assert_eq!(
                    nix_dir.display(&paths["out"]),
                    nix_path,
                    "{mode}{algo} spelled {spelling}: ferry's path vs nix-store --add-fixed"
                );
                drv.fill_output_paths(&nix_dir, &mut no_inputs).unwrap();
                let ca = ferry_build::fixed_output::check(&drv, "D", src, "O").unwrap();
                assert_eq!(ca.as_deref(), Some(nix_ca.as_str()), "{mode}{algo}: ca");
            }

            // nix-instantiate with outputHash in every form the expression
            // language takes: each .drv's output is Nix's add-fixed path.
            let mode_attr = if recursive { "recursive" } else { "flat" };
            let forms = [
                (hash.to_base16(), algo.name().to_string()),
                (hash.to_nix32(), algo.name().to_string()),
                (hash.to_base64(), algo.name().to_string()),
                (hash.to_sri(), String::new()),
                (format!("{algo}:{}", hash.to_nix32()), String::new()),
            ];
            for (h, a) in forms {
                let algo_attr = if a.is_empty() {
                    String::new()
                } else {
                    format!("outputHashAlgo = \"{a}\"; ")
                };
                expr.push_str(&format!(
                    "  (derivation {{ name = \"{name}\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
                     outputHashMode = \"{mode_attr}\"; {algo_attr}outputHash = \"{h}\"; }})\n"
                ));
                expected_drvs.push((format!("{mode}{algo} as {h}"), nix_path.clone()));
            }
        }
    }
    expr.push_str("]\n");
    let expr_file = t.join("fixed.nix");
    fs::write(&expr_file, &expr).unwrap();
    let printed = String::from_utf8(run_ok(
        command("nix-instantiate", &home)
            .arg("--store")
            .arg(nix_store_uri(&nixroot))
            .arg(&expr_file),
        None,
        "nix-instantiate",
    ))
    .unwrap();
    let drvs: Vec<&str> = printed.lines().collect();
    assert_eq!(drvs.len(), expected_drvs.len(), "{printed}");
    for (drv_path, (what, want)) in drvs.iter().zip(&expected_drvs) {
        let text = read_nix_store_file(&nixroot, drv_path);
        let drv = derivation::parse(&text).unwrap();
        assert_eq!(&drv.outputs["out"].path, want, "{what}: Nix's .drv output");
        // Ferry agrees with the .drv Nix wrote, and computes its path.
        drv.check_outputs(&nix_dir, &mut no_inputs)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let again = drv.drv_path(&nix_dir, &drv.name().unwrap()).unwrap();
        assert_eq!(&nix_dir.display(&again), drv_path, "{what}: .drv path");
    }

    // `ferry derivation show` of the .drv with its hash spelled in nix32
    // (as Nix also reads it) shows what `nix show-derivation` shows for
    // the original: the parsed hash in base16.
    let nix_show: Value = serde_json::from_slice(&run_ok(
        command("nix", &home)
            .args(["--extra-experimental-features", "nix-command"])
            .args(["show-derivation", "--store"])
            .arg(nix_store_uri(&nixroot))
            .args(&drvs),
        None,
        "nix show-derivation",
    ))
    .unwrap();
    for (i, drv_path) in drvs.iter().enumerate() {
        let mut drv = derivation::parse(&read_nix_store_file(&nixroot, drv_path)).unwrap();
        let out = drv.outputs.get_mut("out").unwrap();
        let algo = HashAlgo::parse(out.hash_algo.trim_start_matches("r:")).unwrap();
        out.hash = Hash::parse_non_sri_unprefixed(&out.hash, algo)
            .unwrap()
            .to_nix32();
        let file = t.join(format!("respelled-{i}.drv"));
        fs::write(&file, drv.to_aterm()).unwrap();
        let shown: Value = serde_json::from_slice(&run_ok(
            command(ferry_bin(), &home)
                .env("FERRY_STORE_DIR", "/nix/store")
                .args(["derivation", "show"])
                .arg(&file),
            None,
            "ferry derivation show",
        ))
        .unwrap();
        // The .drv path is computed from the file's bytes, which differ:
        // compare the bodies.
        let body = shown.as_object().unwrap().values().next().unwrap();
        assert_eq!(
            body["outputs"], nix_show[*drv_path]["outputs"],
            "{drv_path} respelled in nix32"
        );
    }
}

fn read_nix_store_file(nixroot: &Path, path: &str) -> String {
    fs::read_to_string(nixroot.join(path.trim_start_matches('/'))).unwrap()
}
