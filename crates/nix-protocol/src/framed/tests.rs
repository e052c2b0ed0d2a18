//! Framed streams: Nix's byte layout, chunk bounds, drains.

use super::*;

#[tokio::test]
async fn writes_chunks_and_terminator() {
    let mut out = Vec::new();
    let data = vec![7u8; CHUNK + 3];
    let n = write_framed(&mut out, &mut &data[..]).await.unwrap();
    assert_eq!(n, data.len() as u64);
    let mut want = Vec::new();
    want.extend_from_slice(&(CHUNK as u64).to_le_bytes());
    want.extend_from_slice(&data[..CHUNK]);
    want.extend_from_slice(&3u64.to_le_bytes());
    want.extend_from_slice(&data[CHUNK..]);
    want.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(out, want);
}

#[tokio::test]
async fn reads_back_and_stops_at_terminator() {
    let mut wire = Vec::new();
    for c in [&b"hello "[..], b"", b"world"] {
        if c.is_empty() {
            continue;
        }
        wire.extend_from_slice(&(c.len() as u64).to_le_bytes());
        wire.extend_from_slice(c);
    }
    wire.extend_from_slice(&0u64.to_le_bytes());
    wire.extend_from_slice(b"after");
    let mut src = &wire[..];
    let mut got = Vec::new();
    let mut fr = FramedReader::new(&mut src);
    fr.read_to_end(&mut got).await.unwrap();
    assert!(fr.is_done());
    assert_eq!(got, b"hello world");
    assert_eq!(src, b"after");
}

#[tokio::test]
async fn a_huge_announced_chunk_costs_only_what_arrives() {
    let mut wire = Vec::new();
    wire.extend_from_slice(&u64::MAX.to_le_bytes());
    wire.extend_from_slice(b"abc");
    let mut src = &wire[..];
    let mut got = Vec::new();
    let e = FramedReader::new(&mut src)
        .read_to_end(&mut got)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(got, b"abc");
}

#[tokio::test]
async fn drain_skips_the_rest() {
    let mut wire = Vec::new();
    write_framed(&mut wire, &mut &[1u8; 100][..]).await.unwrap();
    wire.push(42);
    let mut src = &wire[..];
    let mut fr = FramedReader::new(&mut src);
    let mut first = [0u8; 10];
    fr.read_exact(&mut first).await.unwrap();
    assert_eq!(fr.drain().await.unwrap(), 90);
    assert_eq!(src, [42]);
}
