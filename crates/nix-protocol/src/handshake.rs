//! The greeting, both sides (`processConnection` in daemon.cc,
//! `RemoteStore::initConnection` in remote-store.cc):
//!
//! client: WORKER_MAGIC_1; daemon: WORKER_MAGIC_2, its version; client:
//! its version, then for a daemon of 1.14+ the obsolete CPU affinity flag
//! (0, or 1 and a CPU), for 1.11+ the obsolete reserveSpace flag; daemon,
//! for a client of 1.33+: its Nix version string ("2.8.0"). Then the daemon
//! opens its stderr stream and closes it with STDERR_LAST, or with
//! STDERR_ERROR to refuse the client (the client reads that stream with
//! the rest of the stderr handling, see `client.rs`).

use tokio::io::{AsyncRead, AsyncWrite};

use crate::stderr::{NixError, StderrMsg};
use crate::wire::{NixRead, NixWrite};
use crate::{
    major, minor, Error, Result, MIN_CLIENT_VERSION, PROTOCOL_VERSION, WORKER_MAGIC_1,
    WORKER_MAGIC_2,
};

/// What a client said in its greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The client's protocol version: the daemon keys its encodings on it.
    pub version: u64,
    /// The obsolete CPU affinity, if the client sent one.
    pub cpu_affinity: Option<u64>,
    /// The obsolete reserveSpace flag.
    pub reserve_space: bool,
}

/// The daemon's side up to (not including) its stderr stream: check the
/// magic, send ours and our version, read the client's greeting, and send
/// `nix_version` to clients of 1.33+. Errors are Nix's words; as nix-daemon
/// does, nothing more is sent to a client refused here.
pub async fn server_hello<R, W>(
    r: &mut NixRead<R>,
    w: &mut NixWrite<W>,
    nix_version: &str,
) -> Result<ClientHello>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    r.reset_budget();
    if r.u64().await? != WORKER_MAGIC_1 {
        return Err(Error::Handshake("protocol mismatch".into()));
    }
    w.u64(WORKER_MAGIC_2).u64(PROTOCOL_VERSION);
    w.flush().await?;
    let version = r.u64().await?;
    if version < MIN_CLIENT_VERSION {
        return Err(Error::Handshake("the Nix client version is too old".into()));
    }
    let mut hello = ClientHello {
        version,
        cpu_affinity: None,
        reserve_space: false,
    };
    if minor(version) >= 14 && r.bool().await? {
        hello.cpu_affinity = Some(r.u64().await?);
    }
    if minor(version) >= 11 {
        hello.reserve_space = r.bool().await?;
    }
    if minor(version) >= 33 {
        w.bytes(nix_version);
    }
    w.flush().await?;
    Ok(hello)
}

/// End the greeting: STDERR_LAST to accept the client, or its refusal
/// (Nix's `authHook` throwing) as STDERR_ERROR. Log lines sent before
/// (`StderrMsg::Next`) may precede this.
pub async fn server_accept<W: AsyncWrite + Unpin>(
    w: &mut NixWrite<W>,
    client_version: u64,
    refusal: Option<&NixError>,
) -> Result<()> {
    match refusal {
        None => StderrMsg::Last.write(w, client_version),
        Some(e) => StderrMsg::Error(e.clone()).write(w, client_version),
    };
    w.flush().await
}

/// What the daemon said in its greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonHello {
    /// The daemon's protocol version as it sent it.
    pub daemon_version: u64,
    /// The version both sides key on: the lower of the two.
    pub version: u64,
    /// The daemon's Nix version (1.33+), e.g. "2.8.0".
    pub nix_version: Option<String>,
}

/// The client's side up to the daemon's stderr stream, as Nix 2.8 sends it
/// (no CPU affinity, reserveSpace false).
pub async fn client_hello<R, W>(r: &mut NixRead<R>, w: &mut NixWrite<W>) -> Result<DaemonHello>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    r.reset_budget();
    w.u64(WORKER_MAGIC_1);
    w.flush().await?;
    let magic = r.u64().await?;
    if magic != WORKER_MAGIC_2 {
        return Err(Error::Handshake(format!(
            "protocol mismatch, got '{}'",
            String::from_utf8_lossy(&magic.to_le_bytes()).trim_end_matches('\0')
        )));
    }
    let daemon_version = r.u64().await?;
    if major(daemon_version) != major(PROTOCOL_VERSION) {
        return Err(Error::Handshake(
            "Nix daemon protocol version not supported".into(),
        ));
    }
    if minor(daemon_version) < 10 {
        return Err(Error::Handshake("the Nix daemon version is too old".into()));
    }
    w.u64(PROTOCOL_VERSION);
    if minor(daemon_version) >= 14 {
        w.u64(0);
    }
    if minor(daemon_version) >= 11 {
        w.bool(false);
    }
    w.flush().await?;
    let nix_version = if minor(daemon_version) >= 33 {
        Some(r.string().await?)
    } else {
        None
    };
    Ok(DaemonHello {
        daemon_version,
        version: daemon_version.min(PROTOCOL_VERSION),
        nix_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode;
    use crate::Limits;

    #[tokio::test]
    async fn both_sides_meet_and_bytes_match_nix() {
        let (c, s) = tokio::io::duplex(4096);
        let (cr, cw) = tokio::io::split(c);
        let (sr, sw) = tokio::io::split(s);
        let server = async move {
            let mut r = NixRead::new(sr, Limits::default());
            let mut w = NixWrite::new(sw);
            let hello = server_hello(&mut r, &mut w, "2.8.0").await.unwrap();
            server_accept(&mut w, hello.version, None).await.unwrap();
            hello
        };
        let client = async move {
            let mut r = NixRead::new(cr, Limits::default());
            let mut w = NixWrite::new(cw);
            let d = client_hello(&mut r, &mut w).await.unwrap();
            assert_eq!(
                StderrMsg::read(&mut r, d.version).await.unwrap(),
                StderrMsg::Last
            );
            d
        };
        let (hello, d) = tokio::join!(server, client);
        assert_eq!(hello.version, PROTOCOL_VERSION);
        assert_eq!(hello.cpu_affinity, None);
        assert_eq!(d.nix_version.as_deref(), Some("2.8.0"));
        assert_eq!(d.version, PROTOCOL_VERSION);
    }

    #[tokio::test]
    async fn server_bytes_for_an_old_client_with_affinity() {
        // Client 1.14: magic, version, affinity 1 and CPU 3, reserveSpace.
        let input = encode(|w| {
            w.u64(WORKER_MAGIC_1).u64(0x10e).u64(1).u64(3).u64(0);
        });
        let mut r = NixRead::new(&input[..], Limits::default());
        let mut out = Vec::new();
        let mut w = NixWrite::new(&mut out);
        let hello = server_hello(&mut r, &mut w, "2.8.0").await.unwrap();
        assert_eq!(hello.cpu_affinity, Some(3));
        // No version string before 1.33.
        assert_eq!(
            out,
            encode(|w| {
                w.u64(0x6478_696f).u64(0x122);
            })
        );
    }

    #[tokio::test]
    async fn refusals_in_nix_words() {
        let bad = encode(|w| {
            w.u64(1);
        });
        let mut out = Vec::new();
        let e = server_hello(
            &mut NixRead::new(&bad[..], Limits::default()),
            &mut NixWrite::new(&mut out),
            "2.8.0",
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "Nix protocol handshake: protocol mismatch");
        let old = encode(|w| {
            w.u64(WORKER_MAGIC_1).u64(0x109);
        });
        let e = server_hello(
            &mut NixRead::new(&old[..], Limits::default()),
            &mut NixWrite::new(&mut out),
            "2.8.0",
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("client version is too old"));
        let daemon = encode(|w| {
            w.u64(WORKER_MAGIC_2).u64(0x200);
        });
        let e = client_hello(
            &mut NixRead::new(&daemon[..], Limits::default()),
            &mut NixWrite::new(&mut out),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("version not supported"));
    }
}
