//! The server against this crate's client in memory, and its bytes where
//! nix-daemon's are known: the refusal of an unknown operation, tunnelled
//! reads, activities for old and new clients.

use super::*;
use crate::stderr::{activity, STDERR_ERROR, STDERR_LAST, STDERR_READ};
use crate::wire::encode;
use crate::{Client, PROTOCOL_VERSION, WORKER_MAGIC_1};
use tokio::io::{duplex, split, AsyncReadExt, AsyncWriteExt};

fn greeting(version: u64) -> Vec<u8> {
    encode(|w| {
        w.u64(WORKER_MAGIC_1).u64(version).u64(0).u64(0);
    })
}

#[tokio::test]
async fn unknown_operation_bytes_as_nix_daemon_sends_them() {
    let (mut peer, ours) = duplex(1 << 16);
    let (r, w) = split(ours);
    let mut input = greeting(PROTOCOL_VERSION);
    input.extend(encode(|w| {
        w.u64(99);
    }));
    peer.write_all(&input).await.unwrap();
    let mut srv = Server::accept(r, w, Limits::default(), "2.8.0", |_| None)
        .await
        .unwrap();
    assert!(matches!(srv.next_request().await, Err(Error::Remote(_))));
    drop(srv);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    let want = encode(|w| {
        w.u64(0x6478_696f).u64(PROTOCOL_VERSION).bytes("2.8.0");
        w.u64(STDERR_LAST);
        w.u64(STDERR_ERROR)
            .bytes("Error")
            .u64(0)
            .bytes("Error")
            .bytes("invalid operation \x1b[35;1m99\x1b[0m")
            .u64(0)
            .u64(0);
    });
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_refused_client_reads_the_refusal() {
    let (c, s) = duplex(1 << 16);
    let (cr, cw) = split(c);
    let (sr, sw) = split(s);
    let server = Server::accept(sr, sw, Limits::default(), "2.8.0", |h| {
        assert_eq!(h.version, PROTOCOL_VERSION);
        Some(NixError::new(
            "user 'x' is not allowed to connect to the Nix daemon",
        ))
    });
    let client = Client::connect(cr, cw, Limits::default());
    let (s, c) = tokio::join!(server, client);
    assert!(s.is_err());
    match c {
        Err(Error::Remote(e)) => assert!(e.msg.contains("not allowed"), "{e}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("accepted"),
    }
}

#[tokio::test]
async fn tunnel_read_asks_and_takes_the_answer() {
    let (mut peer, ours) = duplex(1 << 16);
    let (r, w) = split(ours);
    peer.write_all(&greeting(PROTOCOL_VERSION)).await.unwrap();
    let mut srv = Server::accept(r, w, Limits::default(), "2.8.0", |_| None)
        .await
        .unwrap();
    let mut hello = vec![0u8; 8 + 8 + 16 + 8];
    peer.read_exact(&mut hello).await.unwrap();
    peer.write_all(&encode(|w| {
        w.bytes("abc");
    }))
    .await
    .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(srv.tunnel_read(&mut buf).await.unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");
    let mut ask = [0u8; 16];
    peer.read_exact(&mut ask).await.unwrap();
    assert_eq!(
        ask.to_vec(),
        encode(|w| {
            w.u64(STDERR_READ).u64(16);
        })
    );
    // More than asked for is refused.
    peer.write_all(&encode(|w| {
        w.bytes([0u8; 17]);
    }))
    .await
    .unwrap();
    assert!(srv.tunnel_read(&mut buf).await.is_err());
}

#[tokio::test]
async fn requests_and_replies_between_this_client_and_server() {
    let (c, s) = duplex(1 << 16);
    let (cr, cw) = split(c);
    let (sr, sw) = split(s);
    let server = async move {
        let mut srv = Server::accept(sr, sw, Limits::default(), "2.8.0", |_| None)
            .await
            .unwrap();
        while let Some(req) = srv.next_request().await.unwrap() {
            match req {
                Request::IsValidPath(p) => {
                    srv.send(&StderrMsg::StartActivity {
                        id: 1,
                        level: 3,
                        kind: activity::QUERY_PATH_INFO,
                        text: format!("querying {p}"),
                        fields: vec![],
                        parent: 0,
                    })
                    .await
                    .unwrap();
                    srv.log("a log line").await.unwrap();
                    srv.build_log_line(1, "built").await.unwrap();
                    srv.send(&StderrMsg::StopActivity(1)).await.unwrap();
                    srv.last().bool(p.ends_with("-a"));
                    srv.flush().await.unwrap();
                }
                Request::AddTempRoot(_) => {
                    srv.fail(&NixError::new("no roots here")).await.unwrap();
                }
                other => panic!("{other:?}"),
            }
        }
    };
    let client = async move {
        let mut c = Client::connect(cr, cw, Limits::default()).await.unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        c.set_logger(Box::new(move |m| s2.lock().unwrap().push(m.clone())));
        assert!(c.is_valid_path("/s/x-a").await.unwrap());
        assert!(!c.is_valid_path("/s/x-b").await.unwrap());
        let e = c.add_temp_root("/s/x-a").await.unwrap_err();
        assert_eq!(e.to_string(), "no roots here");
        // The connection is still in step after a failed request.
        assert!(c.is_valid_path("/s/x-a").await.unwrap());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 12);
        assert_eq!(seen[1], StderrMsg::Next("a log line\n".into()));
    };
    tokio::join!(server, client);
}

/// A source that gives some bytes, then fails.
struct Failing(usize);

impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("disk on fire")));
        }
        let n = self.0.min(buf.remaining()).min(1000);
        buf.put_slice(&vec![1u8; n]);
        self.0 -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_failing_source_ends_its_frames_and_the_connection_stays_in_step() {
    use crate::framed::FramedReader;
    let (c, s) = duplex(1 << 12);
    let (cr, cw) = split(c);
    let (sr, sw) = split(s);
    let server = async move {
        let mut srv = Server::accept(sr, sw, Limits::default(), "2.8.0", |_| None)
            .await
            .unwrap();
        while let Some(req) = srv.next_request().await.unwrap() {
            match req {
                Request::AddMultipleToStore { .. } => {
                    let mut got = Vec::new();
                    FramedReader::new(srv.reader())
                        .read_to_end(&mut got)
                        .await
                        .unwrap();
                    assert_eq!(got.len(), 50_000);
                    srv.fail(&NixError::new("short data")).await.unwrap();
                }
                Request::IsValidPath(_) => {
                    srv.last().bool(true);
                    srv.flush().await.unwrap();
                }
                other => panic!("{other:?}"),
            }
        }
    };
    let client = async move {
        let mut c = Client::connect(cr, cw, Limits::default()).await.unwrap();
        let e = c
            .add_multiple_to_store(false, false, &mut Failing(50_000))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("disk on fire"), "{e}");
        assert!(c.is_valid_path("/s/x").await.unwrap());
    };
    tokio::join!(server, client);
}
