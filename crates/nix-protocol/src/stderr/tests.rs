//! Byte vectors for the stderr stream and Nix's `Error`.

use super::*;
use crate::wire::encode;
use crate::{Limits, PROTOCOL_VERSION};

const OLD: u64 = 0x119; // 1.25: before serialised errors

#[test]
fn error_bytes_as_nix_writes_them() {
    let e = NixError {
        level: 0,
        msg: "boom".into(),
        traces: vec!["t".into()],
        exit_status: 1,
    };
    let b = encode(|w| {
        StderrMsg::Error(e.clone()).write(w, PROTOCOL_VERSION);
    });
    let want = encode(|w| {
        w.u64(STDERR_ERROR)
            .bytes("Error")
            .u64(0)
            .bytes("Error")
            .bytes("boom")
            .u64(0)
            .u64(1)
            .u64(0)
            .bytes("t");
    });
    assert_eq!(b, want);
    assert_eq!(&b[..8], &0x6378_7470u64.to_le_bytes());
    let old = encode(|w| {
        StderrMsg::Error(e.clone()).write(w, OLD);
    });
    assert_eq!(
        old,
        encode(|w| {
            w.u64(STDERR_ERROR).bytes("boom").u64(1);
        })
    );
}

#[tokio::test]
async fn every_message_round_trips() {
    let msgs = vec![
        StderrMsg::Next("line\n".into()),
        StderrMsg::Read(4096),
        StderrMsg::Write(b"data".to_vec()),
        StderrMsg::StartActivity {
            id: 5,
            level: verbosity::INFO,
            kind: activity::BUILD,
            text: "building '/nix/store/x.drv'".into(),
            fields: vec![Field::String("/nix/store/x.drv".into()), Field::Int(1)],
            parent: 0,
        },
        StderrMsg::Result {
            id: 5,
            kind: result_type::BUILD_LOG_LINE,
            fields: vec![Field::String("hello".into())],
        },
        StderrMsg::StopActivity(5),
        StderrMsg::Error(NixError::new("no")),
        StderrMsg::Last,
    ];
    for v in [PROTOCOL_VERSION, 0x11a] {
        let b = encode(|w| {
            for m in &msgs {
                assert!(m.write(w, v));
            }
        });
        let mut r = NixRead::new(&b[..], Limits::default());
        for m in &msgs {
            assert_eq!(&StderrMsg::read(&mut r, v).await.unwrap(), m);
        }
    }
}

#[test]
fn old_clients_get_activities_as_log_lines() {
    let start = StderrMsg::StartActivity {
        id: 1,
        level: 3,
        kind: activity::BUILD,
        text: "building x".into(),
        fields: vec![],
        parent: 0,
    };
    let b = encode(|w| {
        assert!(start.write(w, 0x113));
        assert!(!StderrMsg::StopActivity(1).write(w, 0x113));
    });
    assert_eq!(
        b,
        encode(|w| {
            w.u64(STDERR_NEXT).bytes("building x...\n");
        })
    );
}

#[tokio::test]
async fn unknown_tags_and_field_types_are_refused() {
    let b = encode(|w| {
        w.u64(0x1234);
    });
    let e = StderrMsg::read(
        &mut NixRead::new(&b[..], Limits::default()),
        PROTOCOL_VERSION,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("unknown message type 1234"), "{e}");
    let b = encode(|w| {
        w.u64(STDERR_RESULT).u64(1).u64(101).u64(1).u64(9);
    });
    let e = StderrMsg::read(
        &mut NixRead::new(&b[..], Limits::default()),
        PROTOCOL_VERSION,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("field type 9"), "{e}");
}

#[tokio::test]
async fn long_log_lines_are_cut_not_fatal() {
    let long = "x".repeat(100);
    let b = encode(|w| {
        StderrMsg::Next(long.clone()).write(w, PROTOCOL_VERSION);
        StderrMsg::Last.write(w, PROTOCOL_VERSION);
    });
    let limits = Limits {
        string: 10,
        ..Limits::default()
    };
    let mut r = NixRead::new(&b[..], limits);
    assert_eq!(
        StderrMsg::read(&mut r, PROTOCOL_VERSION).await.unwrap(),
        StderrMsg::Next("xxxxxxxxxx [truncated]".into())
    );
    assert_eq!(
        StderrMsg::read(&mut r, PROTOCOL_VERSION).await.unwrap(),
        StderrMsg::Last
    );
}

#[test]
fn highlighting_comes_off() {
    let e = NixError::new(crate::op::invalid_operation(99));
    assert_eq!(e.plain_msg(), "invalid operation 99");
    assert_eq!(strip_ansi("a\x1b[35;1mb\x1b[0mc\x1b"), "abc\x1b");
}
