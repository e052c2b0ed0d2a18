//! The `.drv` format against Nix's own files (fixtures), round trips,
//! `hashDerivationModulo` and output-path checks, and property tests.

use super::*;
use crate::hash::Sha256Hash;
use crate::store_path::StoreDir;
use proptest::prelude::*;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/derivations");

fn nix() -> StoreDir {
    StoreDir::new("/nix/store").unwrap()
}

fn fixture(base: &str) -> String {
    std::fs::read_to_string(format!("{FIX}/{base}")).unwrap()
}

/// Loads `.drv` files of the fixtures dir by their /nix/store path.
fn load(p: &str) -> Result<Derivation, DerivationError> {
    let base = p.strip_prefix("/nix/store/").unwrap();
    Ok(parse(&fixture(base)).unwrap())
}

fn all_fixtures() -> Vec<(String, String)> {
    let mut v: Vec<_> = std::fs::read_dir(FIX)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".drv"))
        .map(|n| {
            let text = fixture(&n);
            (n, text)
        })
        .collect();
    v.sort();
    assert!(v.len() >= 8);
    v
}

const HASH: &str = "08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba";

/// The chain vector of formats.md, as the ATerm Nix 2.8 writes for
/// `derivation { name = "bar"; builder = ":"; system = ":";
///   outputHash = HASH; outputHashAlgo = "sha256"; outputHashMode = "recursive"; }`
/// and `derivation { name = "foo"; builder = ":"; system = ":"; inherit bar; }`.
const BAR: &str = concat!(
    r#"Derive([("out","/nix/store/4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar","r:sha256","08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba")],"#,
    r#"[],[],":",":",[],[("builder",":"),("name","bar"),("out","/nix/store/4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar"),"#,
    r#"("outputHash","08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba"),("outputHashAlgo","sha256"),"#,
    r#"("outputHashMode","recursive"),("system",":")])"#
);
const FOO: &str = concat!(
    r#"Derive([("out","/nix/store/5vyvcwah9l9kf07d52rcgdk70g2f4y13-foo","","")],"#,
    r#"[("/nix/store/0hm2f1psjpcwg8fijsmr4wwxrx59s092-bar.drv",["out"])],[],":",":",[],"#,
    r#"[("bar","/nix/store/4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar"),("builder",":"),("name","foo"),"#,
    r#"("out","/nix/store/5vyvcwah9l9kf07d52rcgdk70g2f4y13-foo"),("system",":")])"#
);

fn no_inputs(p: &str) -> Result<Sha256Hash, DerivationError> {
    panic!("unexpected lookup of {p}")
}

#[test]
fn chain_vector_from_scratch() {
    let d = nix();
    // bar, built as derivationStrict would: outputs unknown.
    let mut bar = Derivation {
        system: ":".into(),
        builder: ":".into(),
        ..Default::default()
    };
    bar.outputs.insert(
        "out".into(),
        Output {
            path: String::new(),
            hash_algo: "r:sha256".into(),
            hash: HASH.into(),
        },
    );
    for (k, v) in [
        ("builder", ":"),
        ("name", "bar"),
        ("out", ""),
        ("outputHash", HASH),
        ("outputHashAlgo", "sha256"),
        ("outputHashMode", "recursive"),
        ("system", ":"),
    ] {
        bar.env.insert(k.into(), v.into());
    }
    assert!(bar.is_fixed_output());
    bar.fill_output_paths(&nix(), &mut no_inputs).unwrap();
    assert_eq!(bar.to_aterm(), BAR);
    assert_eq!(fixture("0hm2f1psjpcwg8fijsmr4wwxrx59s092-bar.drv"), BAR);
    let bar_drv = bar.drv_path(&d, "bar").unwrap();
    assert_eq!(
        bar_drv.base_name(),
        "0hm2f1psjpcwg8fijsmr4wwxrx59s092-bar.drv"
    );
    let bar_out = d.display(&d.parse(&bar.outputs["out"].path).unwrap());
    let bar_hash = bar.hash_modulo(&mut no_inputs).unwrap();

    let mut foo = Derivation {
        system: ":".into(),
        builder: ":".into(),
        ..Default::default()
    };
    foo.outputs.insert("out".into(), Output::default());
    foo.input_drvs
        .insert(d.display(&bar_drv), BTreeSet::from(["out".to_string()]));
    for (k, v) in [
        ("bar", bar_out.as_str()),
        ("builder", ":"),
        ("name", "foo"),
        ("out", ""),
        ("system", ":"),
    ] {
        foo.env.insert(k.into(), v.into());
    }
    let bar_path = d.display(&bar_drv);
    let mut lookup = |p: &str| -> Result<Sha256Hash, DerivationError> {
        assert_eq!(p, bar_path);
        Ok(bar_hash)
    };
    foo.fill_output_paths(&d, &mut lookup).unwrap();
    assert_eq!(
        foo.outputs["out"].path,
        "/nix/store/5vyvcwah9l9kf07d52rcgdk70g2f4y13-foo"
    );
    assert_eq!(foo.env["out"], foo.outputs["out"].path);
    assert_eq!(foo.to_aterm(), FOO);
    assert_eq!(
        foo.drv_path(&d, "foo").unwrap().base_name(),
        "4wvvbi4jwn0prsdxb7vs673qa5h9gr7x-foo.drv"
    );
    foo.check_outputs(&d, &mut lookup).unwrap();
}

#[test]
fn fixtures_round_trip_and_check() {
    let d = nix();
    let mut cache = DrvHashCache::new();
    for (base, text) in all_fixtures() {
        let drv = parse(&text).unwrap_or_else(|e| panic!("{base}: {e}"));
        assert_eq!(drv.to_aterm(), text, "{base}");
        assert_eq!(parse_canonical(&text).unwrap(), drv);
        assert_eq!(parse_bytes(text.as_bytes()).unwrap(), drv);
        let name = drv.name().unwrap();
        assert_eq!(
            drv.drv_path(&d, &name).unwrap().base_name(),
            base,
            "drv path"
        );
        drv.check_outputs(&d, &mut cache.lookup(&mut load))
            .unwrap_or_else(|e| panic!("{base}: {e}"));
        // Filling a masked copy reproduces the file.
        let mut blank = drv.clone();
        for (k, o) in blank.outputs.iter_mut() {
            o.path.clear();
            blank.env.insert(k.clone(), String::new());
        }
        blank
            .fill_output_paths(&d, &mut cache.lookup(&mut load))
            .unwrap();
        assert_eq!(blank.to_aterm(), text, "{base}");
    }
}

#[test]
fn fixture_contents() {
    let esc = parse(&fixture("9216b2v5l53v1nfmk27nyai5x4d1z7jx-esc.drv")).unwrap();
    assert_eq!(
        esc.args,
        ["a\"b", "c\\d", "e\nf", "g\rh", "i\tj", "ünï€😀", ""]
    );
    assert_eq!(
        esc.env["weird"],
        "quote\" back\\ nl\n cr\r tab\t bellx07 end"
    );
    assert_eq!(
        esc.required_system_features(),
        BTreeSet::from(["big-parallel", "kvm"])
    );
    assert_eq!(esc.input_drvs.len(), 2);
    assert_eq!(
        esc.input_drvs["/nix/store/gnmhznkfamq76vlffv12237x6myqlzzf-multi.drv"],
        BTreeSet::from(["dev".to_string(), "out".to_string()])
    );
    assert!(!esc.is_fixed_output());
    let multi = parse(&fixture("gnmhznkfamq76vlffv12237x6myqlzzf-multi.drv")).unwrap();
    assert_eq!(
        multi.outputs.keys().collect::<Vec<_>>(),
        ["dev", "lib", "out"]
    );
    let user = parse(&fixture("4sdcfc662j69m30h5bxr7gwlz6c9q974-user.drv")).unwrap();
    assert_eq!(user.env["ctl"], "bell\u{7} nul-free \u{1b} esc");
    let flat = parse(&fixture("62f41jprbim191wr118f4alq06wf3yn4-flat.drv")).unwrap();
    assert!(flat.is_fixed_output());
    assert_eq!(flat.outputs["out"].hash_algo, "sha256");
}

#[test]
fn colliding_inputs_merge() {
    // user's two inputs are fixed-output drvs with the same output, so
    // their modulo hashes are equal and the ATerm hashed has one entry.
    let user = parse(&fixture("4sdcfc662j69m30h5bxr7gwlz6c9q974-user.drv")).unwrap();
    let mut cache = DrvHashCache::new();
    let mut hashes = BTreeSet::new();
    for p in user.input_drvs.keys() {
        hashes.insert(cache.hash_path(p, &mut load).unwrap());
    }
    assert_eq!(hashes.len(), 1);
    let h = hashes.into_iter().next().unwrap();
    assert_eq!(
        h,
        Sha256Hash::digest(format!(
            "fixed:out:r:sha256:{HASH}:/nix/store/h43a425dfyh0c3k95givig1k0fjfv69x-fetch"
        ))
    );
    let merged = InputDrvs::from([(h.to_base16(), BTreeSet::from(["out".to_string()]))]);
    let want = Sha256Hash::digest(user.to_aterm_with(&merged, false));
    assert_eq!(cache.hash_drv(&user, &mut load).unwrap(), want);
    assert_eq!(
        hash_derivation_modulo(&user, &mut cache.lookup(&mut load)).unwrap(),
        want
    );
}

#[test]
fn check_outputs_reports_each_mismatch() {
    let d = nix();
    let mut foo = parse(FOO).unwrap();
    let wrong = "/nix/store/00000000000000000000000000000000-foo".to_string();
    foo.outputs.get_mut("out").unwrap().path = wrong.clone();
    foo.env.insert("out".into(), wrong.clone());
    let mut cache = DrvHashCache::new();
    let err = foo
        .check_outputs(&d, &mut cache.lookup(&mut load))
        .unwrap_err();
    let DerivationError::OutputMismatch { name, mismatches } = &err else {
        panic!("{err}")
    };
    assert_eq!(name, "foo");
    assert_eq!(mismatches.len(), 2);
    assert_eq!(mismatches[0].place, MismatchPlace::OutputPath);
    assert_eq!(mismatches[1].place, MismatchPlace::EnvVar);
    for m in mismatches {
        assert_eq!(m.recorded, wrong);
        assert_eq!(
            m.expected,
            "/nix/store/5vyvcwah9l9kf07d52rcgdk70g2f4y13-foo"
        );
    }
    assert!(err.to_string().contains("should be"), "{err}");

    // A fixed output whose recorded path does not match its hash.
    let mut bar = parse(BAR).unwrap();
    bar.outputs.get_mut("out").unwrap().hash = "0".repeat(64);
    assert!(matches!(
        bar.check_outputs(&d, &mut no_inputs),
        Err(DerivationError::OutputMismatch { .. })
    ));
}

#[test]
fn every_spelling_of_a_fixed_hash_gives_nixs_path_and_modulo_hash() {
    // Nix reads a `.drv`'s output hash as base16 (either case), nix32 or
    // base64 and computes paths and hashDerivationModulo from the
    // digest (rendered in base16), never from the spelling.
    let d = nix();
    let bar = parse(BAR).unwrap();
    let want_paths = bar.expected_output_paths(&d, &mut no_inputs).unwrap();
    assert_eq!(
        want_paths["out"].base_name(),
        "4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar"
    );
    let want_modulo = bar.hash_modulo(&mut no_inputs).unwrap();
    let h = crate::content_hash::Hash::parse_non_sri_unprefixed(
        HASH,
        crate::content_hash::HashAlgo::Sha256,
    )
    .unwrap();
    for spelling in [HASH.to_uppercase(), h.to_nix32(), h.to_base64()] {
        let mut other = bar.clone();
        other.outputs.get_mut("out").unwrap().hash = spelling.clone();
        assert_eq!(
            other.expected_output_paths(&d, &mut no_inputs).unwrap(),
            want_paths,
            "{spelling}"
        );
        assert_eq!(other.hash_modulo(&mut no_inputs).unwrap(), want_modulo);
        assert!(other.check_outputs(&d, &mut no_inputs).is_ok());
    }
    // An SRI or typed hash is not what a `.drv` field holds (Nix refuses it).
    for spelling in [h.to_sri(), format!("sha256:{HASH}")] {
        let mut other = bar.clone();
        other.outputs.get_mut("out").unwrap().hash = spelling;
        assert!(matches!(
            other.expected_output_paths(&d, &mut no_inputs),
            Err(DerivationError::BadFixedHash { .. })
        ));
    }
}

#[test]
fn path_errors() {
    let d = nix();
    let mut bar = parse(BAR).unwrap();
    bar.outputs.get_mut("out").unwrap().hash_algo = "r:blake3".into();
    assert!(matches!(
        bar.fill_output_paths(&d, &mut no_inputs),
        Err(DerivationError::UnsupportedHashAlgo { .. })
    ));
    // hash_modulo still works from the recorded strings.
    assert!(bar.hash_modulo(&mut no_inputs).is_ok());
    bar.outputs.get_mut("out").unwrap().hash_algo = "sha256".into();
    bar.outputs.get_mut("out").unwrap().hash = "xyz".into();
    assert!(matches!(
        bar.fill_output_paths(&d, &mut no_inputs),
        Err(DerivationError::BadFixedHash { .. })
    ));
    bar.env.remove("name");
    assert_eq!(
        bar.fill_output_paths(&d, &mut no_inputs),
        Err(DerivationError::NoName)
    );
    let mut two = parse(BAR).unwrap();
    two.outputs.insert("dev".into(), Output::default());
    assert!(matches!(
        two.fill_output_paths(&d, &mut no_inputs),
        Err(DerivationError::NotFixedOutput { .. })
    ));
    let mut foo = parse(FOO).unwrap();
    foo.input_srcs.insert("/tmp/x".into());
    assert!(matches!(
        foo.drv_path(&d, "foo"),
        Err(DerivationError::StorePath(_))
    ));
}

#[test]
fn cycle_is_an_error_not_a_hang() {
    let a = "/nix/store/0hm2f1psjpcwg8fijsmr4wwxrx59s092-a.drv";
    let b = "/nix/store/4wvvbi4jwn0prsdxb7vs673qa5h9gr7x-b.drv";
    let mk = |input: &str| {
        let mut d = parse(FOO).unwrap();
        d.input_drvs = InputDrvs::from([(input.to_string(), BTreeSet::from(["out".into()]))]);
        d
    };
    let mut load =
        |p: &str| -> Result<Derivation, DerivationError> { Ok(if p == a { mk(b) } else { mk(a) }) };
    let err = DrvHashCache::new().hash_path(a, &mut load).unwrap_err();
    assert!(matches!(err, DerivationError::Cycle(_)), "{err}");
}

fn err_of(s: &str) -> DrvParseError {
    parse(s).expect_err(s)
}

#[test]
fn parse_errors_have_offsets() {
    // Truncation anywhere is an error, never a panic.
    for i in 0..FOO.len() {
        let e = err_of(&FOO[..i]);
        assert!(e.offset <= i, "{i}: {e}");
    }
    let e = err_of(r#"Derive([("out",""#);
    assert_eq!(e.offset, 15);
    assert_eq!(e.kind, DrvParseErrorKind::UnterminatedString);
    let e = err_of("Derive([(\"out\\");
    assert_eq!((e.offset, e.kind), (13, DrvParseErrorKind::EscapeAtEnd));
    let e = err_of("Derive([(\"o\",\"\",\"\",\"\")],[],[],\"\",\"\",[],[]) ");
    assert_eq!((e.offset, e.kind), (42, DrvParseErrorKind::TrailingData));
    let e = err_of("Derive([],[],[],\"\",\"\",[],[])\n");
    assert_eq!(e.kind, DrvParseErrorKind::TrailingData);
    let e = err_of("Derivx(");
    assert_eq!(e.offset, 0);
    assert!(e.to_string().contains("expected \"Derive(\""), "{e}");
    let e = err_of("Derive([],[],[],\"\",\"\",[],[(\"a\",\"\")(");
    assert!(e.to_string().contains("',' or ']'"), "{e}");
    assert!(e.to_string().contains("at byte 34"), "{e}");

    let sorted = |env: &str| format!("Derive([],[],[],\"\",\"\",[],[{env}])");
    let e = err_of(&sorted(r#"("b",""),("a","")"#));
    assert_eq!(e.offset, 35);
    assert!(matches!(e.kind, DrvParseErrorKind::Unsorted { .. }), "{e}");
    let e = err_of(&sorted(r#"("a",""),("a","")"#));
    assert!(matches!(e.kind, DrvParseErrorKind::Duplicate { .. }), "{e}");
    let e = err_of(r#"Derive([("out","","",""),("dev","","","")],[],[],"","",[],[])"#);
    assert!(matches!(
        e.kind,
        DrvParseErrorKind::Unsorted {
            list: "outputs",
            ..
        }
    ));
    let e = err_of(r#"Derive([],[("/b",[]),("/a",[])],[],"","",[],[])"#);
    assert!(matches!(
        e.kind,
        DrvParseErrorKind::Unsorted {
            list: "input derivations",
            ..
        }
    ));
    let e = err_of(r#"Derive([],[("/a",["out","dev"])],[],"","",[],[])"#);
    assert!(matches!(e.kind, DrvParseErrorKind::Unsorted { .. }));
    let e = err_of(r#"Derive([],[],["/a","/a"],"","",[],[])"#);
    assert!(matches!(
        e.kind,
        DrvParseErrorKind::Duplicate {
            list: "input sources",
            ..
        }
    ));
    // Args keep their order: not sorted, duplicates allowed.
    assert!(parse(r#"Derive([],[],[],"","",["b","a","a"],[])"#).is_ok());

    let e = parse_bytes(b"Derive([],[],[],\"\xff\",\"\",[],[])").unwrap_err();
    assert_eq!((e.offset, e.kind), (17, DrvParseErrorKind::InvalidUtf8));
}

#[test]
fn lenient_escapes_and_canonical_check() {
    // Like Nix, `\X` means X and raw newlines are accepted...
    let d = parse("Derive([],[],[],\"\\a\\é\",\"x\ny\",[],[])").unwrap();
    assert_eq!(d.system, "aé");
    assert_eq!(d.builder, "x\ny");
    // ...but such text does not print back to itself.
    let e = parse_canonical("Derive([],[],[],\"\\a\",\"\",[],[])").unwrap_err();
    assert_eq!((e.offset, e.kind), (17, DrvParseErrorKind::NonCanonical));
}

fn arb_string() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        3 => prop::sample::select(vec!['"', '\\', '\n', '\r', '\t', ',', '(', ')', '[', ']', 'n']),
        3 => any::<char>(),
        4 => prop::char::range('a', 'z'),
    ];
    prop::collection::vec(c, 0..10).prop_map(String::from_iter)
}

fn arb_drv() -> impl Strategy<Value = Derivation> {
    let output =
        (arb_string(), arb_string(), arb_string()).prop_map(|(path, hash_algo, hash)| Output {
            path,
            hash_algo,
            hash,
        });
    (
        prop::collection::btree_map(arb_string(), output, 0..4),
        prop::collection::btree_map(
            arb_string(),
            prop::collection::btree_set(arb_string(), 0..3),
            0..4,
        ),
        prop::collection::btree_set(arb_string(), 0..4),
        arb_string(),
        arb_string(),
        prop::collection::vec(arb_string(), 0..4),
        prop::collection::btree_map(arb_string(), arb_string(), 0..6),
    )
        .prop_map(
            |(outputs, input_drvs, input_srcs, system, builder, args, env)| Derivation {
                outputs,
                input_drvs,
                input_srcs,
                system,
                builder,
                args,
                env,
            },
        )
}

proptest! {
    #[test]
    fn print_parse_round_trip(d in arb_drv()) {
        let text = d.to_aterm();
        let back = parse_canonical(&text).unwrap();
        prop_assert_eq!(back, d);
    }

    #[test]
    fn parse_never_panics_on_mutations(
        d in arb_drv(),
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        ins in prop::collection::vec(any::<u8>(), 0..4),
        del in 0usize..4,
    ) {
        let text = d.to_aterm().into_bytes();
        // Truncated.
        let t = &text[..cut.index(text.len() + 1)];
        if let Err(e) = parse_bytes(t) {
            prop_assert!(e.offset <= t.len());
        }
        // Bytes deleted and inserted.
        let mut m = text.clone();
        let i = at.index(m.len() + 1);
        let j = (i + del).min(m.len());
        m.splice(i..j, ins.iter().copied());
        if let Err(e) = parse_bytes(&m) {
            prop_assert!(e.offset <= m.len());
            let _ = e.to_string();
        }
    }

    #[test]
    fn parse_never_panics_on_garbage(s in "Derive\\(\\[[(\\[\\]\",\\\\a-z)]{0,40}") {
        let _ = parse(&s);
    }
}
