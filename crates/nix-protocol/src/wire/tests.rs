//! Byte vectors for the primitives, and the bounds.

use super::*;

fn reader(b: &[u8], limits: Limits) -> NixRead<&[u8]> {
    NixRead::new(b, limits)
}

#[test]
fn encodes_u64_and_padded_strings() {
    let b = encode(|w| {
        w.u64(0x1122).bool(true).bytes("abc");
    });
    assert_eq!(
        b,
        [
            &[0x22, 0x11, 0, 0, 0, 0, 0, 0][..],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            &[3, 0, 0, 0, 0, 0, 0, 0],
            b"abc\0\0\0\0\0",
        ]
        .concat()
    );
}

#[tokio::test]
async fn reads_back_what_it_writes() {
    let mut m = BTreeMap::new();
    m.insert("k".to_string(), "v".to_string());
    let b = encode(|w| {
        w.strings(["a", "bb"]).string_map(&m).bool(false);
    });
    let mut r = reader(&b, Limits::default());
    assert_eq!(r.strings().await.unwrap(), ["a", "bb"]);
    assert_eq!(r.string_map().await.unwrap(), m);
    assert!(!r.bool().await.unwrap());
}

#[tokio::test]
async fn refuses_long_strings_before_allocating() {
    let b = encode(|w| {
        w.u64(u64::MAX);
    });
    let limits = Limits::default();
    let e = reader(&b, limits).string().await.unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
}

#[tokio::test]
async fn refuses_non_zero_padding() {
    let mut b = encode(|w| {
        w.bytes("a");
    });
    b[9] = 1;
    let e = reader(&b, Limits::default()).bytes().await.unwrap_err();
    assert!(e.to_string().contains("padding"), "{e}");
}

#[tokio::test]
async fn counts_are_bounded_by_items_and_budget() {
    let b = encode(|w| {
        w.u64(1 << 40);
    });
    let e = reader(&b, Limits::default()).strings().await.unwrap_err();
    assert!(e.to_string().contains("items"), "{e}");

    // Many small strings: the message budget stops them.
    let limits = Limits {
        message: 10 * ITEM_COST,
        ..Limits::default()
    };
    let b = encode(|w| {
        w.strings(vec![""; 11]);
    });
    let e = reader(&b, limits).strings().await.unwrap_err();
    assert!(e.to_string().contains("message limit"), "{e}");
    let b = encode(|w| {
        w.strings(vec![""; 10]);
    });
    assert_eq!(reader(&b, limits).strings().await.unwrap().len(), 10);
}

#[tokio::test]
async fn refuses_non_utf8() {
    let b = encode(|w| {
        w.bytes([0xff]);
    });
    assert!(reader(&b, Limits::default()).string().await.is_err());
}
