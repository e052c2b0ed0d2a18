//! Nix's store commands on a Ferry daemon: real Nix 2.8 clients
//! (`nix-store`, `nix path-info`) talk to `ferry daemon --nix-socket` as
//! to nix-daemon: `--add`, the queries (`-q --references --requisites
//! --referrers --deriver --hash --size`), `nix path-info --json`,
//! `--export | --import`, `--verify-path`, `--delete`, `--gc`. Operations
//! Ferry does not serve are refused by name, and the connection goes on.

use ferry_test_support as support;

use ferry_test_support::nix_clients::{text, FerryNix};
use support::run;

#[test]
fn nix_store_commands_on_a_ferry_daemon() {
    if !support::prerequisites(&["root", "nix-store", "nix"]) {
        return;
    }
    let f = FerryNix::start(&[]);
    let store = f.store.to_str().unwrap().to_string();

    // --add: the path is computed by the client and the daemon alike.
    let file = f.write("hello.txt", "hello from nix\n");
    let added = f.ok("nix-store", &["--add", file.to_str().unwrap()]);
    assert!(
        added.starts_with(&format!("{store}/")) && added.ends_with("-hello.txt"),
        "{added}"
    );
    assert_eq!(std::fs::read_to_string(&added).unwrap(), "hello from nix\n");
    // The same answer from Ferry's own view of its store.
    let info = f.ok_with(
        &mut f.ferry(&["store", "path-info", "--json", &added]),
        None,
    );
    let ferry_json: serde_json::Value = serde_json::from_str(&info).unwrap();

    // A text file referring to it, through nix-instantiate (AddTextToStore).
    let expr = format!("builtins.toFile \"ref.txt\" \"see ${{builtins.storePath {added}}}\"");
    let refer = f.ok(
        "nix-instantiate",
        &["--eval", "--read-write-mode", "-E", &expr],
    );
    let refer = refer.trim_matches('"').to_string();
    assert!(refer.ends_with("-ref.txt"), "{refer}");

    // Queries.
    assert_eq!(f.ok("nix-store", &["-q", "--references", &refer]), added);
    let reqs = f.ok("nix-store", &["-q", "--requisites", &refer]);
    assert_eq!(
        reqs.lines().collect::<Vec<_>>(),
        vec![added.as_str(), refer.as_str()]
    );
    assert_eq!(f.ok("nix-store", &["-q", "--referrers", &added]), refer);
    assert_eq!(
        f.ok("nix-store", &["-q", "--deriver", &added]),
        "unknown-deriver"
    );
    let hash = f.ok("nix-store", &["-q", "--hash", &added]);
    let size = f.ok("nix-store", &["-q", "--size", &added]);
    assert!(hash.starts_with("sha256:"), "{hash}");
    assert_eq!(size.parse::<u64>().unwrap(), 128);

    // nix path-info --json: the same record Ferry keeps.
    let j = f.ok("nix", &["path-info", "--json", &added]);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    let v = &v[0];
    assert_eq!(v["path"], added.as_str());
    assert_eq!(v["narSize"], 128);
    assert_eq!(v["references"], serde_json::json!([]));
    assert!(
        v["ca"].as_str().unwrap().starts_with("fixed:r:sha256:"),
        "{v}"
    );
    let narhash = v["narHash"].as_str().unwrap();
    let ferry_hash = ferry_json
        .get("narHash")
        .or_else(|| ferry_json[0].get("narHash"))
        .map(|h| h.as_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        ferry_hash.is_empty() || ferry_hash == hash || ferry_hash == narhash,
        "nix says {narhash} / {hash}, ferry says {ferry_hash}"
    );

    // --verify-path reads the NAR back (NarFromPath).
    f.ok("nix-store", &["--verify-path", &added]);

    // --export | --import: both paths back after deletion, same records.
    let export = run(&mut f.nix("nix-store", &["--export", &added, &refer]), None);
    assert!(export.status.success(), "{}", text(&export));
    assert!(export.stdout.len() > 200);
    // Deleting a path takes its dead referrers with it (as Nix's
    // collector does).
    f.ok("nix-store", &["--delete", &added]);
    for p in [&added, &refer] {
        let o = run(&mut f.nix("nix-store", &["--check-validity", p]), None);
        assert!(!o.status.success(), "deleted: {}", text(&o));
    }
    let imported = f.ok_with(&mut f.nix("nix-store", &["--import"]), Some(&export.stdout));
    assert_eq!(
        imported.lines().collect::<Vec<_>>(),
        vec![added.as_str(), refer.as_str()]
    );
    assert_eq!(f.ok("nix-store", &["-q", "--hash", &added]), hash);
    f.ok("nix-store", &["--verify-path", &refer]);

    // --gc: both are dead (no root); a root keeps them.
    let link = f.root.join("keep");
    f.ok(
        "nix-store",
        &["--add-root", link.to_str().unwrap(), "-r", &refer],
    );
    let roots = f.ok("nix-store", &["--gc", "--print-roots"]);
    assert!(roots.contains(&refer), "{roots}");
    let dead = f.ok("nix-store", &["--gc", "--print-dead"]);
    assert!(!dead.contains(&refer) && !dead.contains(&added), "{dead}");
    std::fs::remove_file(&link).unwrap();
    let o = run(&mut f.nix("nix-store", &["--gc"]), None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!std::path::Path::new(&added).exists(), "{}", text(&o));
    let o = run(&mut f.nix("nix-store", &["--check-validity", &refer]), None);
    assert!(!o.status.success());

    // An operation Ferry does not serve is refused by name; the client
    // goes on (optimise is OptimiseStore).
    let o = run(&mut f.nix("nix-store", &["--optimise"]), None);
    assert!(!o.status.success());
    assert!(text(&o).contains("OptimiseStore"), "{}", text(&o));
}
