//! Requests as Nix 2.8's `RemoteStore` writes them (byte vectors built
//! from remote-store.cc's `<<` sequences), decoded as `performOp` reads
//! them, for the current protocol and the older minors it still serves.

use super::*;
use crate::build::BuildMode;
use crate::content_address::ContentAddressMethod;
use crate::op::Op;
use crate::wire::{encode, NixWrite};
use crate::{Limits, PROTOCOL_VERSION};
use ferry_formats::content_hash::HashAlgo;
use ferry_formats::store_path::FileIngestion;

const P: &str = "/nix/store/00000000000000000000000000000000-a";
const D: &str = "/nix/store/11111111111111111111111111111111-b.drv";

async fn decode_v(version: u64, f: impl FnOnce(&mut NixWrite<()>)) -> Result<Request> {
    let b = encode(f);
    let mut r = NixRead::new(&b[..], Limits::default());
    let op = read_op(&mut r).await?.expect("an op");
    let req = read_request(&mut r, op, version).await?;
    assert!(r.get_mut().is_empty(), "every byte of the request read");
    Ok(req)
}

async fn decode(f: impl FnOnce(&mut NixWrite<()>)) -> Request {
    decode_v(PROTOCOL_VERSION, f).await.unwrap()
}

fn set() -> BTreeSet<String> {
    [P.to_string()].into()
}

#[tokio::test]
async fn path_queries() {
    for (op, want) in [
        (Op::IsValidPath, Request::IsValidPath(P.into())),
        (Op::QueryPathInfo, Request::QueryPathInfo(P.into())),
        (Op::QueryReferrers, Request::QueryReferrers(P.into())),
        (
            Op::QueryValidDerivers,
            Request::QueryValidDerivers(P.into()),
        ),
        (
            Op::QueryDerivationOutputMap,
            Request::QueryDerivationOutputMap(P.into()),
        ),
        (Op::NarFromPath, Request::NarFromPath(P.into())),
        (Op::AddTempRoot, Request::AddTempRoot(P.into())),
        (Op::EnsurePath, Request::EnsurePath(P.into())),
    ] {
        assert_eq!(
            decode(|w| {
                w.u64(op.number()).bytes(P);
            })
            .await,
            want
        );
    }
    let got = decode(|w| {
        w.u64(31).strings([P]).u64(1);
    })
    .await;
    assert_eq!(
        got,
        Request::QueryValidPaths {
            paths: set(),
            substitute: true
        }
    );
    // Before 1.27 there is no substitute flag.
    let got = decode_v(0x11a, |w| {
        w.u64(31).strings([P]);
    })
    .await
    .unwrap();
    assert_eq!(
        got,
        Request::QueryValidPaths {
            paths: set(),
            substitute: false
        }
    );
}

#[tokio::test]
async fn add_to_store_both_forms() {
    let got = decode(|w| {
        w.u64(7)
            .bytes("x")
            .bytes("fixed:r:sha256")
            .strings([P])
            .u64(0);
    })
    .await;
    let method = ContentAddressMethod::Fixed {
        method: FileIngestion::Recursive,
        algo: HashAlgo::Sha256,
    };
    assert_eq!(
        got,
        Request::AddToStore(AddToStore::Framed {
            name: "x".into(),
            method,
            references: set(),
            repair: false
        })
    );
    assert_eq!(got.data_follows(PROTOCOL_VERSION), DataFollows::Framed);
    // 1.24: name, fixed, recursive, algo; a flat sha1 file.
    let got = decode_v(0x118, |w| {
        w.u64(7).bytes("x").u64(1).u64(0).bytes("sha1");
    })
    .await
    .unwrap();
    assert_eq!(got.data_follows(0x118), DataFollows::FlatNar);
    // "not fixed" means recursive sha256 whatever follows.
    assert_eq!(
        AddToStore::legacy_method(false, false, "md5").unwrap(),
        method
    );
    let e = decode_v(0x118, |w| {
        w.u64(7).bytes("x").u64(1).u64(2).bytes("sha1");
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("FileIngestionMethod"), "{e}");
    let got = decode(|w| {
        w.u64(8).bytes("t.txt").bytes("hello").strings([P]);
    })
    .await;
    assert_eq!(
        got,
        Request::AddTextToStore {
            name: "t.txt".into(),
            text: b"hello".to_vec(),
            references: set()
        }
    );
}

#[tokio::test]
async fn builds_per_minor() {
    let built = DerivedPath::Built {
        drv_path: D.into(),
        outputs: ["out".to_string()].into(),
    };
    let got = decode(|w| {
        w.u64(9).strings([format!("{D}!out")]).u64(2);
    })
    .await;
    assert_eq!(
        got,
        Request::BuildPaths {
            paths: vec![built.clone()],
            mode: BuildMode::Check
        }
    );
    // 1.14: no mode.
    let got = decode_v(0x10e, |w| {
        w.u64(9).strings([D]);
    })
    .await
    .unwrap();
    let all = DerivedPath::Built {
        drv_path: D.into(),
        outputs: BTreeSet::new(),
    };
    assert_eq!(
        got,
        Request::BuildPaths {
            paths: vec![all],
            mode: BuildMode::Normal
        }
    );
    let got = decode(|w| {
        w.u64(46).strings([format!("{D}!out")]).u64(0);
    })
    .await;
    assert_eq!(
        got,
        Request::BuildPathsWithResults {
            paths: vec![built.clone()],
            mode: BuildMode::Normal
        }
    );
    assert_eq!(
        decode(|w| {
            w.u64(40).strings([P]);
        })
        .await,
        Request::QueryMissing(vec![DerivedPath::Opaque(P.into())])
    );
    let e = decode_v(PROTOCOL_VERSION, |w| {
        w.u64(9).strings([P]).u64(7);
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("build mode 7"), "{e}");
}

#[tokio::test]
async fn gc_options_signatures_verify() {
    let got = decode(|w| {
        w.u64(20)
            .u64(3)
            .strings([P])
            .u64(0)
            .u64(1000)
            .u64(0)
            .u64(0)
            .u64(0);
    })
    .await;
    assert_eq!(
        got,
        Request::CollectGarbage {
            action: 3,
            paths: set(),
            ignore_liveness: false,
            max_freed: 1000
        }
    );
    assert_eq!(
        decode(|w| {
            w.u64(14);
        })
        .await,
        Request::FindRoots
    );
    assert_eq!(
        decode(|w| {
            w.u64(13);
        })
        .await,
        Request::SyncWithGC
    );
    let got = decode(|w| {
        w.u64(37).bytes(P).strings(["k:sig"]);
    })
    .await;
    assert_eq!(
        got,
        Request::AddSignatures {
            path: P.into(),
            sigs: ["k:sig".to_string()].into()
        }
    );
    let got = decode(|w| {
        w.u64(35).u64(1).u64(0);
    })
    .await;
    assert_eq!(
        got,
        Request::VerifyStore {
            check_contents: true,
            repair: false
        }
    );
    let got = decode(|w| {
        w.u64(16).bytes(P).u64(0);
    })
    .await;
    assert_eq!(got, Request::ExportPath(P.into()));
    assert_eq!(
        decode(|w| {
            w.u64(27);
        })
        .await
        .data_follows(PROTOCOL_VERSION),
        DataFollows::Tunnel
    );
}

#[tokio::test]
async fn substitutes_and_realisations_per_minor() {
    let got = decode(|w| {
        w.u64(30).u64(1).bytes(P).bytes("");
    })
    .await;
    assert_eq!(
        got,
        Request::QuerySubstitutablePathInfos([(P.to_string(), String::new())].into())
    );
    let got = decode_v(0x115, |w| {
        w.u64(30).strings([P]);
    })
    .await
    .unwrap();
    assert_eq!(
        got,
        Request::QuerySubstitutablePathInfos([(P.to_string(), String::new())].into())
    );
    let got = decode_v(0x11e, |w| {
        w.u64(42).bytes("sha256:abc!out").bytes("xyz-a");
    })
    .await
    .unwrap();
    match got {
        Request::RegisterDrvOutput(r) => assert_eq!(
            (r.id.as_str(), r.out_path.as_str()),
            ("sha256:abc!out", "xyz-a")
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unknown_and_removed_ops_get_nix_words() {
    for n in [99, 24, 25, 0, 2] {
        match decode_v(PROTOCOL_VERSION, |w| {
            w.u64(n);
        })
        .await
        {
            Err(Error::Remote(e)) => assert_eq!(e.msg, invalid_operation(n)),
            other => panic!("{n}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_request_is_bounded_by_its_budget() {
    let b = encode(|w| {
        w.u64(31).u64(1 << 19);
        for _ in 0..(1 << 19) {
            w.bytes(P);
        }
        w.u64(0);
    });
    let limits = Limits {
        message: 1 << 20,
        ..Limits::default()
    };
    let mut r = NixRead::new(&b[..], limits);
    let op = read_op(&mut r).await.unwrap().unwrap();
    let e = read_request(&mut r, op, PROTOCOL_VERSION)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("message limit"), "{e}");
    // A clean hang-up between requests is not an error.
    let mut r = NixRead::new(&[][..], Limits::default());
    assert_eq!(read_op(&mut r).await.unwrap(), None);
}
