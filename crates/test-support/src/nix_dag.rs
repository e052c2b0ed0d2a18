//! The DAG that Nix clients build through a Ferry daemon in the tests
//! (on /nix/store in a private namespace, cli's
//! nix_clients_nixstore.rs; offloaded to testbed hosts, testbed's
//! nix_clients_offload.rs), and the reading of `nix path-info --json` its
//! outputs are compared by.

use std::collections::BTreeMap;

/// The number of derivations in [`DAG`].
pub const DAG_DERIVATIONS: usize = 32;

/// 32 derivations: a fixed-output one, 12 leaves with outputs out and dev
/// (reading the toFile text and the builtins.path tree), 12 middles (each
/// a leaf, the next leaf's dev output and the fixed output), 6 uppers (two
/// middles each) and a top over the uppers. Each output names its inputs,
/// so all of them are in the closure of top. Builders have only /bin/sh and
/// its built-ins.
pub const DAG: &str = r#"
let
  sys = builtins.currentSystem;
  sh = name: script: attrs: derivation ({ inherit name; system = sys; builder = "/bin/sh"; args = [ "-c" script ]; } // attrs);
  cat = "cat() { for x in \"$@\"; do while IFS= read -r l; do echo \"$l\"; done < $x; done; };";
  at = builtins.elemAt;
  mod = a: b: a - b * (a / b);
  text = builtins.toFile "text.txt" "a source text\n";
  tree = builtins.path { path = ./tree; name = "tree"; };
  fixed = sh "fixed" "echo fixed > $out" {
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = builtins.hashString "sha256" "fixed\n";
  };
  leaf = i: sh "leaf-${toString i}"
    "${cat} echo building leaf ${toString i}; cat ${text} ${tree}/inner > $out; echo ${toString i} ${text} >> $out; echo dev ${toString i} > $dev"
    { outputs = [ "out" "dev" ]; };
  leaves = builtins.genList leaf 12;
  mid = i: sh "mid-${toString i}"
    "${cat} cat ${at leaves i} ${(at leaves (mod (i + 1) 12)).dev} ${fixed} > $out; echo ${at leaves i} ${(at leaves (mod (i + 1) 12)).dev} ${fixed} >> $out"
    {};
  mids = builtins.genList mid 12;
  upper = i: sh "upper-${toString i}"
    "${cat} cat ${at mids (2 * i)} ${at mids (2 * i + 1)} > $out; echo ${tree} ${at mids (2 * i)} ${at mids (2 * i + 1)} >> $out"
    {};
  uppers = builtins.genList upper 6;
  all = builtins.concatStringsSep " " (map toString uppers);
  top = sh "top" "${cat} echo building top; cat ${all} > $out; echo ${all} >> $out" {};
in { inherit top; }
"#;

/// path -> (narHash, narSize, references, deriver) from `nix path-info --json`.
pub type Infos = BTreeMap<String, (String, u64, Vec<String>, Option<String>)>;

pub fn infos(json: &str) -> Infos {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let refs = i["references"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            (
                i["path"].as_str().unwrap().to_string(),
                (
                    i["narHash"].as_str().unwrap().to_string(),
                    i["narSize"].as_u64().unwrap(),
                    refs,
                    i["deriver"].as_str().map(str::to_string),
                ),
            )
        })
        .collect()
}
