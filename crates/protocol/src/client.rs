//! The client side of the protocol, over any byte stream: a Unix socket to
//! the local daemon, or an SSH channel to a remote one.

use tokio::io::{split, AsyncRead, AsyncWrite, ReadHalf, WriteHalf};

use crate::frame::{FrameReader, FrameWriter};
use crate::messages::*;
use crate::{ProtocolError, Result, FERRY_VERSION, PROTOCOL_VERSION};

/// A connection to a daemon, after a successful handshake.
pub struct Client<S> {
    r: FrameReader<ReadHalf<S>>,
    w: FrameWriter<WriteHalf<S>>,
    welcome: Welcome,
}

fn unexpected(expected: &'static str, got: Response) -> ProtocolError {
    match got {
        Response::Error { message } => ProtocolError::Remote(message),
        other => ProtocolError::Unexpected {
            expected,
            got: format!("{other:?}"),
        },
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Say hello; fails if the daemon refuses (another store directory or
    /// protocol version), with its reason.
    pub async fn handshake(stream: S, store_dir: &str) -> Result<Self> {
        let (r, w) = split(stream);
        let mut r = FrameReader::new(r);
        let mut w = FrameWriter::new(w);
        w.send(&Hello {
            protocol: PROTOCOL_VERSION,
            version: FERRY_VERSION.into(),
            store_dir: store_dir.into(),
        })
        .await?;
        match r.message::<HandshakeReply>().await? {
            HandshakeReply::Welcome(welcome) => Ok(Client { r, w, welcome }),
            HandshakeReply::Refused { reason } => Err(ProtocolError::Handshake(reason)),
        }
    }

    /// What the daemon said about itself.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    async fn call(&mut self, req: &Request) -> Result<Response> {
        self.w.send(req).await?;
        self.r.message().await
    }

    pub async fn query_valid(&mut self, paths: Vec<String>) -> Result<Vec<String>> {
        match self.call(&Request::QueryValid { paths }).await? {
            Response::Valid { paths } => Ok(paths),
            other => Err(unexpected("valid paths", other)),
        }
    }

    pub async fn path_info(&mut self, path: &str) -> Result<Option<PathInfo>> {
        match self.call(&Request::PathInfo { path: path.into() }).await? {
            Response::PathInfo { info } => Ok(info),
            other => Err(unexpected("path info", other)),
        }
    }

    /// Add the NAR read from `nar` as a source path named `name`.
    pub async fn add_to_store(
        &mut self,
        name: &str,
        nar: &mut (impl AsyncRead + Unpin),
    ) -> Result<String> {
        self.w
            .message(&Request::AddToStore { name: name.into() })
            .await?;
        self.w.stream_from(nar).await?;
        self.w.flush().await?;
        match self.r.message().await? {
            Response::Added { path } => Ok(path),
            other => Err(unexpected("the added path", other)),
        }
    }

    /// Add a text file; for a `.drv` the daemon checks its output paths.
    pub async fn add_text(
        &mut self,
        name: &str,
        text: &str,
        references: Vec<String>,
    ) -> Result<String> {
        let req = Request::AddText {
            name: name.into(),
            text: text.into(),
            references,
        };
        match self.call(&req).await? {
            Response::Added { path } => Ok(path),
            other => Err(unexpected("the added path", other)),
        }
    }

    /// Write an export bundle of `paths` (and with `recursive` their
    /// closures) into `sink`.
    pub async fn export(
        &mut self,
        paths: Vec<String>,
        recursive: bool,
        sink: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64> {
        self.streamed(
            &Request::Export { paths, recursive },
            sink,
            "the end of the export",
        )
        .await
    }

    /// Send `req`, copy the stream that answers it into `sink`, then read
    /// the closing `Ok`; returns the stream's size. An aborted stream is
    /// the daemon's error (it says why after aborting).
    async fn streamed(
        &mut self,
        req: &Request,
        sink: &mut (impl AsyncWrite + Unpin),
        end: &'static str,
    ) -> Result<u64> {
        self.w.send(req).await?;
        let n = match self.r.stream_to(sink).await {
            Ok(n) => n,
            Err(ProtocolError::Aborted(reason)) => {
                let _ = self.r.message::<Response>().await;
                return Err(ProtocolError::Remote(reason));
            }
            Err(e) => return Err(e),
        };
        match self.r.message().await? {
            Response::Ok => Ok(n),
            other => Err(unexpected(end, other)),
        }
    }

    /// Import the export bundle read from `bundle`; returns the paths it held.
    pub async fn import(&mut self, bundle: &mut (impl AsyncRead + Unpin)) -> Result<Vec<String>> {
        self.import_with(bundle, false).await
    }

    /// [`Client::import`], optionally without signature checks
    /// (`no_check_sigs`: only trusted users may ask).
    pub async fn import_with(
        &mut self,
        bundle: &mut (impl AsyncRead + Unpin),
        no_check_sigs: bool,
    ) -> Result<Vec<String>> {
        self.import_request(bundle, no_check_sigs, None).await
    }

    /// [`Client::import`] of a bundle that may hold only `expected` (an
    /// offloading master's inputs): the daemon refuses any other item.
    pub async fn import_expected(
        &mut self,
        bundle: &mut (impl AsyncRead + Unpin),
        expected: Vec<String>,
    ) -> Result<Vec<String>> {
        self.import_request(bundle, false, Some(expected)).await
    }

    async fn import_request(
        &mut self,
        bundle: &mut (impl AsyncRead + Unpin),
        no_check_sigs: bool,
        expected: Option<Vec<String>>,
    ) -> Result<Vec<String>> {
        let req = Request::Import {
            no_check_sigs,
            expected,
        };
        self.w.message(&req).await?;
        self.w.stream_from(bundle).await?;
        self.w.flush().await?;
        match self.r.message().await? {
            Response::Imported { paths } => Ok(paths),
            other => Err(unexpected("the imported paths", other)),
        }
    }

    /// Build `drvs`, reporting progress to `on_event` as it happens.
    pub async fn build(
        &mut self,
        drvs: Vec<String>,
        options: BuildOptions,
        mut on_event: impl FnMut(BuildEvent),
    ) -> Result<Vec<BuildResult>> {
        self.w.send(&Request::Build { drvs, options }).await?;
        loop {
            match self.r.message().await? {
                Response::Build(ev) => on_event(ev),
                Response::BuildDone { results } => return Ok(results),
                other => return Err(unexpected("build progress", other)),
            }
        }
    }

    pub async fn machine_info(&mut self) -> Result<MachineInfo> {
        match self.call(&Request::MachineInfo).await? {
            Response::MachineInfo(info) => Ok(info),
            other => Err(unexpected("machine info", other)),
        }
    }

    pub async fn add_temp_root(&mut self, path: &str) -> Result<()> {
        match self
            .call(&Request::AddTempRoot { path: path.into() })
            .await?
        {
            Response::Ok => Ok(()),
            other => Err(unexpected("ok", other)),
        }
    }

    /// Collect garbage (or list dead or live paths): the paths and the
    /// bytes freed.
    pub async fn collect_garbage(
        &mut self,
        action: crate::GcRequest,
        keep_outputs: Option<bool>,
        keep_derivations: Option<bool>,
    ) -> Result<(Vec<String>, u64, u64)> {
        let req = Request::CollectGarbage {
            action,
            keep_outputs,
            keep_derivations,
        };
        match self.call(&req).await? {
            Response::Collected {
                paths,
                deleted,
                bytes_freed,
            } => {
                let deleted = deleted.max(paths.len() as u64);
                Ok((paths, deleted, bytes_freed))
            }
            other => Err(unexpected("the collection's result", other)),
        }
    }

    /// The permanent roots the daemon shows this user: (link, path).
    /// `ferry store verify` by the daemon: (lines, summary, ok).
    pub async fn verify(&mut self, repair: bool) -> Result<(Vec<String>, Vec<String>, bool)> {
        match self.call(&Request::Verify { repair }).await? {
            Response::Verified { lines, summary, ok } => Ok((lines, summary, ok)),
            other => Err(unexpected("the verification's result", other)),
        }
    }

    pub async fn find_roots(&mut self) -> Result<Vec<(String, String)>> {
        match self.call(&Request::FindRoots).await? {
            Response::Roots { roots } => Ok(roots),
            other => Err(unexpected("the roots", other)),
        }
    }

    pub async fn add_indirect_root(&mut self, link: &str) -> Result<()> {
        match self
            .call(&Request::AddIndirectRoot { link: link.into() })
            .await?
        {
            Response::Ok => Ok(()),
            other => Err(unexpected("ok", other)),
        }
    }

    /// The valid paths that refer to `path`.
    pub async fn query_referrers(&mut self, path: &str) -> Result<Vec<String>> {
        match self
            .call(&Request::QueryReferrers { path: path.into() })
            .await?
        {
            Response::Valid { paths } => Ok(paths),
            other => Err(unexpected("the referrers", other)),
        }
    }

    /// The daemon's view of its build machines (empty when it does not
    /// offload).
    pub async fn farm_status(&mut self) -> Result<Vec<FarmMachine>> {
        match self.call(&Request::FarmStatus).await? {
            Response::FarmStatus { machines } => Ok(machines),
            other => Err(unexpected("the build machines' status", other)),
        }
    }

    /// Stream the stored log of `drv`'s last build into `sink`; returns
    /// its size.
    pub async fn log_to(&mut self, drv: &str, sink: &mut (impl AsyncWrite + Unpin)) -> Result<u64> {
        self.streamed(
            &Request::Log { drv: drv.into() },
            sink,
            "the end of the log",
        )
        .await
    }

    /// The stored log of `drv`'s last build, whole (for small logs and
    /// tests; [`Client::log_to`] streams).
    pub async fn log(&mut self, drv: &str) -> Result<String> {
        let mut buf = Vec::new();
        self.log_to(drv, &mut buf).await?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// The daemon's side of the handshake: read the client's [`Hello`] and
/// accept it if protocol and store directory match, else refuse with a
/// reason the client shows its user.
pub async fn accept<R, W>(
    r: &mut FrameReader<R>,
    w: &mut FrameWriter<W>,
    welcome: &Welcome,
) -> Result<Hello>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    accept_or_refuse(r, w, welcome, None).await
}

/// [`accept`], but refuse with `refusal` (the daemon's own reason, e.g.
/// a user not allowed) whatever the client says.
pub async fn accept_or_refuse<R, W>(
    r: &mut FrameReader<R>,
    w: &mut FrameWriter<W>,
    welcome: &Welcome,
    refusal: Option<String>,
) -> Result<Hello>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello: Hello = r.message().await?;
    let refusal = if let Some(reason) = refusal {
        Some(reason)
    } else if hello.protocol != welcome.protocol {
        Some(format!(
            "protocol version {} (ferry {}) is not {} (ferry {} here); upgrade the older side",
            hello.protocol, hello.version, welcome.protocol, welcome.version
        ))
    } else if hello.store_dir != welcome.store_dir {
        Some(format!(
            "this daemon's store is {}, not {}: every machine must use the same store directory (it is part of every store path)",
            welcome.store_dir, hello.store_dir
        ))
    } else {
        None
    };
    match refusal {
        Some(reason) => {
            w.send(&HandshakeReply::Refused {
                reason: reason.clone(),
            })
            .await?;
            Err(ProtocolError::Handshake(reason))
        }
        None => {
            w.send(&HandshakeReply::Welcome(welcome.clone())).await?;
            Ok(hello)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcome(store: &str) -> Welcome {
        Welcome {
            protocol: PROTOCOL_VERSION,
            version: FERRY_VERSION.into(),
            store_dir: store.into(),
            systems: vec!["x86_64-linux".into()],
            features: vec![],
            keep_alive: true,
        }
    }

    /// An older daemon's welcome (no `keep_alive`) and an older client's
    /// build options still parse: keep-alives are then neither offered nor
    /// asked for.
    #[test]
    fn keep_alive_is_negotiated_and_absent_from_older_peers() {
        let old = r#"{"protocol":1,"version":"0.1.0","store_dir":"/gnu/store","systems":[],"features":[]}"#;
        let w: Welcome = serde_json::from_str(old).unwrap();
        assert!(!w.keep_alive);
        let o: crate::BuildOptions = serde_json::from_str(r#"{"timeout":5}"#).unwrap();
        assert_eq!((o.keep_alive, o.timeout), (0, 5));
        let ev = serde_json::to_string(&crate::BuildEvent::KeepAlive).unwrap();
        assert_eq!(ev, r#"{"event":"keep-alive"}"#);
    }

    #[tokio::test]
    async fn handshake_accepts_same_store_and_refuses_another() {
        for (client_store, ok) in [("/ferry/store", true), ("/nix/store", false)] {
            let (a, b) = tokio::io::duplex(4096);
            let server = tokio::spawn(async move {
                let (r, w) = split(b);
                let (mut r, mut w) = (FrameReader::new(r), FrameWriter::new(w));
                accept(&mut r, &mut w, &welcome("/ferry/store"))
                    .await
                    .is_ok()
            });
            let c = Client::handshake(a, client_store).await;
            assert_eq!(c.is_ok(), ok);
            if let Err(e) = c {
                let msg = e.to_string();
                assert!(
                    msg.contains("/ferry/store") && msg.contains("same store directory"),
                    "{msg}"
                );
            }
            assert_eq!(server.await.unwrap(), ok);
        }
    }
}
