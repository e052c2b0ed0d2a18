//! The daemon's side of a connection, as `processConnection` and
//! `TunnelLogger` in daemon.cc run it: greet, then for each request read
//! its arguments, open the stderr stream (logs, activities, data requests),
//! close it with STDERR_LAST and the reply, or with STDERR_ERROR.
//!
//! Stderr messages may only be sent between a request and its
//! [`Server::last`] or [`Server::fail`] (nix-daemon queues what its logger
//! says outside that window until the next request); activity ids are the
//! daemon's to choose (Nix uses its pid << 32 plus a counter).
//!
//! A request that cannot be read (an unknown operation, bad arguments) is
//! answered with its error and ends the connection, as in nix-daemon: its
//! arguments cannot be skipped, so the stream is out of step.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::framed::FramedReader;
use crate::handshake::{server_accept, server_hello, ClientHello};
use crate::request::{read_op, read_request, Request};
use crate::stderr::{Field, NixError, StderrMsg};
use crate::wire::{NixRead, NixWrite};
use crate::{Error, Limits, Result};

/// One client's connection, after the greeting.
pub struct Server<R, W> {
    r: NixRead<R>,
    w: NixWrite<W>,
    hello: ClientHello,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Server<R, W> {
    /// Greet a client (sending `nix_version`, e.g. "2.8.0", to 1.33+
    /// clients); `refuse` is asked, with the client's greeting, whether to
    /// refuse it (Nix's `authHook`), and its error is sent as Nix sends it.
    pub async fn accept(
        r: R,
        w: W,
        limits: Limits,
        nix_version: &str,
        refuse: impl FnOnce(&ClientHello) -> Option<NixError>,
    ) -> Result<Self> {
        let mut r = NixRead::new(r, limits);
        let mut w = NixWrite::new(w);
        let hello = server_hello(&mut r, &mut w, nix_version).await?;
        let refusal = refuse(&hello);
        server_accept(&mut w, hello.version, refusal.as_ref()).await?;
        if let Some(e) = refusal {
            return Err(Error::Remote(e));
        }
        Ok(Server { r, w, hello })
    }

    /// The client's protocol version: every encoding is keyed on it.
    pub fn client_version(&self) -> u64 {
        self.hello.version
    }

    pub fn hello(&self) -> &ClientHello {
        &self.hello
    }

    /// The next request, or None when the client hung up between requests.
    /// An unreadable request is answered with its error (Nix's words for an
    /// unknown operation) and returned as an error: close the connection.
    pub async fn next_request(&mut self) -> Result<Option<Request>> {
        let Some(op) = read_op(&mut self.r).await? else {
            return Ok(None);
        };
        match read_request(&mut self.r, op, self.hello.version).await {
            Ok(req) => Ok(Some(req)),
            Err(e) => {
                let nix = match &e {
                    Error::Remote(n) => n.clone(),
                    other => NixError::new(other.to_string()),
                };
                // The client may be gone already; its error is the news.
                let _ = self.fail(&nix).await;
                Err(e)
            }
        }
    }

    /// Send one stderr message now (the client reads them as they come).
    pub async fn send(&mut self, msg: &StderrMsg) -> Result<()> {
        if msg.write(&mut self.w, self.hello.version) {
            self.w.flush().await?;
        }
        Ok(())
    }

    /// A log line (`STDERR_NEXT`); Nix adds the newline.
    pub async fn log(&mut self, line: &str) -> Result<()> {
        self.send(&StderrMsg::Next(format!("{line}\n"))).await
    }

    /// A build's log line, as Nix's `resBuildLogLine` result of the build
    /// activity `id`.
    pub async fn build_log_line(&mut self, id: u64, line: &str) -> Result<()> {
        self.send(&StderrMsg::Result {
            id,
            kind: crate::stderr::result_type::BUILD_LOG_LINE,
            fields: vec![Field::String(line.to_string())],
        })
        .await
    }

    /// Close the stderr stream: the reply follows, encoded with
    /// [`Server::reply`] and sent by [`Server::flush`].
    pub fn last(&mut self) -> &mut NixWrite<W> {
        StderrMsg::Last.write(&mut self.w, self.hello.version);
        &mut self.w
    }

    /// Encode more of the reply.
    pub fn reply(&mut self) -> &mut NixWrite<W> {
        &mut self.w
    }

    pub async fn flush(&mut self) -> Result<()> {
        self.w.flush().await
    }

    /// Close the stderr stream with an error; no reply follows.
    pub async fn fail(&mut self, e: &NixError) -> Result<()> {
        StderrMsg::Error(e.clone()).write(&mut self.w, self.hello.version);
        self.w.flush().await
    }

    /// The request's framed data (AddToStore 1.25+, AddToStoreNar 1.23+,
    /// AddMultipleToStore, AddBuildLog). Drain it on error, as Nix does.
    pub fn framed(&mut self) -> FramedReader<'_, R> {
        FramedReader::new(self.r.get_mut())
    }

    /// The raw stream, for an unframed NAR (`nar_copy::copy_nar`).
    pub fn reader(&mut self) -> &mut R {
        self.r.get_mut()
    }

    /// The raw stream, for NarFromPath's NAR after STDERR_LAST (flush
    /// [`Server::last`] first).
    pub fn writer(&mut self) -> &mut W {
        self.w.get_mut()
    }

    /// Ask the client for up to `buf.len()` bytes of its source
    /// (`TunnelSource`: STDERR_READ, then a string); 0 never happens, an
    /// empty answer is an error as in Nix.
    pub async fn tunnel_read(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.send(&StderrMsg::Read(buf.len() as u64)).await?;
        self.r.reset_budget();
        let data = self.r.bytes_max(buf.len() as u64).await?;
        if data.is_empty() {
            return Err(Error::protocol("unexpected end-of-file"));
        }
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }

    /// Data for the client's sink (`TunnelSink`: STDERR_WRITE).
    pub async fn tunnel_write(&mut self, data: &[u8]) -> Result<()> {
        self.send(&StderrMsg::Write(data.to_vec())).await
    }
}

#[cfg(test)]
mod tests;
