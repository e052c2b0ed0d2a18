//! Byte vectors for build results and basic derivations.

use super::*;
use crate::wire::encode;
use crate::{Limits, PROTOCOL_VERSION};

fn result() -> BuildResult {
    let mut r = BuildResult::new(BuildStatus::Built, "");
    r.times_built = 1;
    r.start_time = 10;
    r.stop_time = 12;
    let id = "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0!out".to_string();
    r.built_outputs.insert(
        id.clone(),
        Realisation {
            id,
            out_path: "00000000000000000000000000000000-x".into(),
            signatures: vec![],
            dependent_realisations: BTreeMap::new(),
        },
    );
    r
}

#[test]
fn realisation_json_as_nlohmann_dumps_it() {
    let r = result();
    let real = r.built_outputs.values().next().unwrap();
    assert_eq!(
        real.to_json(),
        format!(
            r#"{{"dependentRealisations":{{}},"id":"{}","outPath":"00000000000000000000000000000000-x","signatures":[]}}"#,
            real.id
        )
    );
    assert_eq!(&Realisation::from_json(&real.to_json()).unwrap(), real);
    assert!(Realisation::from_json("{}").is_err());
}

#[tokio::test]
async fn build_derivation_reply_per_minor() {
    let r = result();
    for (v, len) in [
        (PROTOCOL_VERSION, None),
        (0x11c, None),
        (0x11b, Some(8 + 8)),
    ] {
        let b = encode(|w| r.write_for_build_derivation(w, v));
        if let Some(len) = len {
            assert_eq!(b.len(), len, "minor 27: status and message only");
        }
        let mut rd = NixRead::new(&b[..], Limits::default());
        let back = BuildResult::read_for_build_derivation(&mut rd, v)
            .await
            .unwrap();
        if v == PROTOCOL_VERSION {
            assert_eq!(back, r);
        }
        assert_eq!(back.status, BuildStatus::Built);
    }
    let b = encode(|w| r.write_for_build_derivation(w, PROTOCOL_VERSION));
    let want = encode(|w| {
        w.u64(0).bytes("").u64(1).u64(0).u64(10).u64(12).u64(1);
        let (id, real) = r.built_outputs.iter().next().unwrap();
        w.bytes(id).bytes(real.to_json());
    });
    assert_eq!(b, want);
}

#[tokio::test]
async fn with_path_round_trips() {
    let p = DerivedPath::parse("/nix/store/a.drv!out").unwrap();
    let b = encode(|w| result().write_with_path(w, &p));
    let mut rd = NixRead::new(&b[..], Limits::default());
    assert_eq!(
        BuildResult::read_with_path(&mut rd).await.unwrap(),
        (p, result())
    );
    assert!(BuildStatus::from_u64(15).is_err());
    assert!(BuildStatus::from_u64(14).is_ok());
}

#[tokio::test]
async fn basic_derivation_bytes() {
    let mut drv = Derivation {
        system: "x86_64-linux".into(),
        builder: "/bin/sh".into(),
        args: vec!["-c".into(), "echo > $out".into()],
        ..Default::default()
    };
    drv.outputs.insert(
        "out".into(),
        Output {
            path: "/s/o".into(),
            ..Default::default()
        },
    );
    drv.input_srcs.insert("/s/src".into());
    drv.env.insert("out".into(), "/s/o".into());
    let b = encode(|w| write_basic_derivation(w, &drv));
    let want = encode(|w| {
        w.u64(1).bytes("out").bytes("/s/o").bytes("").bytes("");
        w.strings(["/s/src"]).bytes("x86_64-linux").bytes("/bin/sh");
        w.strings(["-c", "echo > $out"])
            .u64(1)
            .bytes("out")
            .bytes("/s/o");
    });
    assert_eq!(b, want);
    let mut rd = NixRead::new(&b[..], Limits::default());
    assert_eq!(read_basic_derivation(&mut rd).await.unwrap(), drv);
}
