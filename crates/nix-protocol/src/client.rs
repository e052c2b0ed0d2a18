//! A client of a Nix daemon, as `RemoteStore` in remote-store.cc talks:
//! one request at a time, each followed by the daemon's stderr stream
//! (logs and activities go to the client's logger) and then its reply.
//!
//! Data goes as it does in Nix 2.8: framed while the daemon's stderr
//! stream is read at the same time (`withFramedSink`, here two futures of
//! one task, so an error from the daemon stops the data at a chunk boundary
//! and the frames are still terminated); NARs come back unframed and are
//! copied to the caller's sink as they arrive.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_formats::derivation::Derivation;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::build::{write_basic_derivation, BuildMode, BuildResult};
use crate::content_address::ContentAddressMethod;
use crate::derived_path::{write_derived_paths, DerivedPath};
use crate::framed::{FramedWriter, CHUNK};
use crate::handshake::{client_hello, DaemonHello};
use crate::nar_copy::copy_nar;
use crate::op::Op;
use crate::path_info::{opt, AddToStoreNar, ValidPathInfo};
use crate::reply::Missing;
use crate::settings::ClientSettings;
use crate::stderr::StderrMsg;
use crate::wire::{NixRead, NixWrite};
use crate::{minor, Error, Limits, Result};

/// Receives the daemon's log lines, activities and results.
pub type Logger = Box<dyn FnMut(&StderrMsg) + Send>;

/// A connection to a Nix daemon after a successful handshake.
pub struct Client<R, W> {
    r: NixRead<R>,
    w: NixWrite<W>,
    hello: DaemonHello,
    logger: Logger,
}

/// Read the stderr stream up to STDERR_LAST: logs to `logger`, data
/// requests served from `source`, data written to `sink`.
async fn stderr_loop<R, W>(
    r: &mut NixRead<R>,
    mut w: Option<&mut NixWrite<W>>,
    logger: &mut Logger,
    version: u64,
    mut sink: Option<&mut (dyn AsyncWrite + Unpin + Send)>,
    mut source: Option<&mut (dyn AsyncRead + Unpin + Send)>,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        match StderrMsg::read(r, version).await? {
            StderrMsg::Last => return Ok(()),
            StderrMsg::Error(e) => return Err(Error::Remote(e)),
            StderrMsg::Write(data) => match sink.as_mut() {
                Some(s) => s.write_all(&data).await?,
                None => return Err(Error::protocol("no sink")),
            },
            StderrMsg::Read(n) => {
                let (Some(src), Some(w)) = (source.as_mut(), w.as_mut()) else {
                    return Err(Error::protocol("no source"));
                };
                let mut buf = vec![0u8; n.min(CHUNK as u64) as usize];
                let k = src.read(&mut buf).await?;
                w.bytes(&buf[..k]);
                w.flush().await?;
            }
            msg => logger(&msg),
        }
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Client<R, W> {
    /// Greet the daemon and read its first stderr stream (where it would
    /// refuse us). Logs go nowhere until [`Client::set_logger`].
    pub async fn connect(r: R, w: W, limits: Limits) -> Result<Self> {
        let mut c = Client {
            r: NixRead::new(r, limits),
            w: NixWrite::new(w),
            hello: DaemonHello {
                daemon_version: 0,
                version: 0,
                nix_version: None,
            },
            logger: Box::new(|_| {}),
        };
        c.hello = client_hello(&mut c.r, &mut c.w).await?;
        c.stderr().await?;
        Ok(c)
    }

    pub fn set_logger(&mut self, logger: Logger) {
        self.logger = logger;
    }

    /// The version encodings are keyed on (the lower of both sides').
    pub fn version(&self) -> u64 {
        self.hello.version
    }

    pub fn hello(&self) -> &DaemonHello {
        &self.hello
    }

    async fn stderr(&mut self) -> Result<()> {
        self.w.flush().await?;
        stderr_loop(
            &mut self.r,
            Some(&mut self.w),
            &mut self.logger,
            self.hello.version,
            None,
            None,
        )
        .await
    }

    /// Start a request: the op number, then the caller encodes arguments.
    fn op(&mut self, op: Op) -> &mut NixWrite<W> {
        self.r.reset_budget();
        self.w.u64(op.number())
    }

    /// Send a bare operation number (any, even one the daemon lacks) and
    /// read its stderr stream: how an unknown operation's error is seen.
    pub async fn raw_op(&mut self, n: u64) -> Result<()> {
        self.w.u64(n);
        self.stderr().await
    }

    pub async fn set_options(&mut self, s: &ClientSettings) -> Result<()> {
        let v = self.version();
        s.write(self.op(Op::SetOptions), v);
        self.stderr().await
    }

    pub async fn is_valid_path(&mut self, path: &str) -> Result<bool> {
        self.op(Op::IsValidPath).bytes(path);
        self.stderr().await?;
        self.r.bool().await
    }

    pub async fn query_valid_paths(
        &mut self,
        paths: &BTreeSet<String>,
        substitute: bool,
    ) -> Result<BTreeSet<String>> {
        let v = self.version();
        let w = self.op(Op::QueryValidPaths).strings(paths);
        if minor(v) >= 27 {
            w.bool(substitute);
        }
        self.stderr().await?;
        self.r.string_set().await
    }

    /// None when the path is not valid.
    pub async fn query_path_info(&mut self, path: &str) -> Result<Option<ValidPathInfo>> {
        self.op(Op::QueryPathInfo).bytes(path);
        self.stderr().await?;
        let v = self.version();
        if minor(v) >= 17 && !self.r.bool().await? {
            return Ok(None);
        }
        ValidPathInfo::read_after_path(&mut self.r, v, path.to_string())
            .await
            .map(Some)
    }

    async fn path_query(&mut self, op: Op, path: &str) -> Result<BTreeSet<String>> {
        self.op(op).bytes(path);
        self.stderr().await?;
        self.r.string_set().await
    }

    pub async fn query_referrers(&mut self, path: &str) -> Result<BTreeSet<String>> {
        self.path_query(Op::QueryReferrers, path).await
    }

    pub async fn query_valid_derivers(&mut self, path: &str) -> Result<BTreeSet<String>> {
        self.path_query(Op::QueryValidDerivers, path).await
    }

    /// Output name -> path (None when unknown, for floating outputs).
    pub async fn query_derivation_output_map(
        &mut self,
        drv_path: &str,
    ) -> Result<BTreeMap<String, Option<String>>> {
        self.op(Op::QueryDerivationOutputMap).bytes(drv_path);
        self.stderr().await?;
        let n = self.r.count("an output map").await?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.r.string().await?;
            m.insert(k, opt(self.r.string().await?));
        }
        Ok(m)
    }

    pub async fn query_path_from_hash_part(&mut self, hash_part: &str) -> Result<Option<String>> {
        self.op(Op::QueryPathFromHashPart).bytes(hash_part);
        self.stderr().await?;
        Ok(opt(self.r.string().await?))
    }

    async fn unit(&mut self, op: Op, arg: &str) -> Result<()> {
        self.op(op).bytes(arg);
        self.stderr().await?;
        self.r.u64().await?;
        Ok(())
    }

    pub async fn add_temp_root(&mut self, path: &str) -> Result<()> {
        self.unit(Op::AddTempRoot, path).await
    }

    pub async fn add_indirect_root(&mut self, link: &str) -> Result<()> {
        self.unit(Op::AddIndirectRoot, link).await
    }

    pub async fn ensure_path(&mut self, path: &str) -> Result<()> {
        self.unit(Op::EnsurePath, path).await
    }

    pub async fn add_signatures(&mut self, path: &str, sigs: &BTreeSet<String>) -> Result<()> {
        self.op(Op::AddSignatures).bytes(path).strings(sigs);
        self.stderr().await?;
        self.r.u64().await?;
        Ok(())
    }

    /// Returns whether errors were found.
    pub async fn verify_store(&mut self, check_contents: bool, repair: bool) -> Result<bool> {
        self.op(Op::VerifyStore).bool(check_contents).bool(repair);
        self.stderr().await?;
        self.r.bool().await
    }

    /// The obsolete text form; returns the store path.
    pub async fn add_text_to_store(
        &mut self,
        name: &str,
        text: &[u8],
        refs: &BTreeSet<String>,
    ) -> Result<String> {
        self.op(Op::AddTextToStore)
            .bytes(name)
            .bytes(text)
            .strings(refs);
        self.stderr().await?;
        self.r.string().await
    }

    /// Send `src` framed while reading the stderr stream (`withFramedSink`).
    async fn framed(&mut self, src: &mut (dyn AsyncRead + Unpin + Send)) -> Result<()> {
        self.w.flush().await?;
        let version = self.hello.version;
        let Client { r, w, logger, .. } = self;
        let stop = AtomicBool::new(false);
        // Ok(Some(e)): our source failed. The frames are terminated all the
        // same (as Nix's `~FramedSink` does), so the daemon sees short data,
        // answers with its error, and the connection stays in step.
        let write = async {
            let mut fw = FramedWriter::new(w.get_mut());
            let mut buf = vec![0u8; CHUNK];
            let mut source_error = None;
            while !stop.load(Ordering::Relaxed) {
                match src.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => fw.write_all(&buf[..n]).await?,
                    Err(e) => {
                        source_error = Some(e);
                        break;
                    }
                }
            }
            fw.finish().await?;
            Ok::<_, Error>(source_error)
        };
        let read = stderr_loop::<R, W>(r, None, logger, version, None, None);
        tokio::pin!(write, read);
        let (mut wrote, mut got) = (None, None);
        while wrote.is_none() || got.is_none() {
            tokio::select! {
                res = &mut write, if wrote.is_none() => wrote = Some(res),
                res = &mut read, if got.is_none() => {
                    // Error or not, the daemon is done with our data.
                    stop.store(true, Ordering::Relaxed);
                    got = Some(res);
                }
            }
        }
        // Our source's failure is the cause; else the daemon's error says
        // more than the broken pipe it may have caused.
        let wrote = wrote.expect("written");
        if let Ok(Some(e)) = wrote {
            return Err(Error::Io(e));
        }
        got.expect("read")?;
        wrote.map(|_| ())
    }

    /// AddToStore, 1.25+ form: `src` is the NAR (recursive) or the file's
    /// bytes (flat, text); returns the new path's information.
    pub async fn add_to_store(
        &mut self,
        name: &str,
        method: ContentAddressMethod,
        refs: &BTreeSet<String>,
        repair: bool,
        src: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<ValidPathInfo> {
        if minor(self.version()) < 25 {
            return Err(Error::protocol(
                "AddToStore needs a daemon of protocol 1.25 or later",
            ));
        }
        self.op(Op::AddToStore)
            .bytes(name)
            .bytes(method.render())
            .strings(refs)
            .bool(repair);
        self.framed(src).await?;
        let v = self.version();
        ValidPathInfo::read(&mut self.r, v).await
    }

    /// AddToStoreNar (framed, 1.23+): `nar` is the path's NAR.
    pub async fn add_to_store_nar(
        &mut self,
        req: &AddToStoreNar,
        nar: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<()> {
        if minor(self.version()) < 23 {
            return Err(Error::protocol(
                "AddToStoreNar needs a daemon of protocol 1.23 or later",
            ));
        }
        req.write(self.op(Op::AddToStoreNar));
        self.framed(nar).await
    }

    /// AddMultipleToStore (1.32+): `src` is `count`, then for each path its
    /// record with its path (format 16) and its NAR; see
    /// [`crate::path_info::multiple_header`] for the records.
    pub async fn add_multiple_to_store(
        &mut self,
        repair: bool,
        dont_check_sigs: bool,
        src: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<()> {
        if minor(self.version()) < 32 {
            return Err(Error::protocol(
                "AddMultipleToStore needs a daemon of protocol 1.32 or later",
            ));
        }
        self.op(Op::AddMultipleToStore)
            .bool(repair)
            .bool(dont_check_sigs);
        self.framed(src).await
    }

    /// NarFromPath: the NAR is copied to `sink` as it arrives; returns
    /// its size.
    pub async fn nar_from_path(
        &mut self,
        path: &str,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<u64> {
        self.op(Op::NarFromPath).bytes(path);
        self.stderr().await?;
        copy_nar(self.r.get_mut(), sink).await
    }

    /// ExportPath: one path's export record (`Store::exportPath`: its NAR,
    /// the export magic, path, references, deriver, no signature) arrives
    /// as STDERR_WRITE data. `nix-store --export`'s stream puts a 1 before
    /// each record and a 0 after the last.
    pub async fn export_path(
        &mut self,
        path: &str,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<()> {
        self.op(Op::ExportPath).bytes(path).u64(0);
        self.w.flush().await?;
        let v = self.hello.version;
        stderr_loop(
            &mut self.r,
            Some(&mut self.w),
            &mut self.logger,
            v,
            Some(sink),
            None,
        )
        .await?;
        self.r.u64().await?;
        Ok(())
    }

    /// ImportPaths: the daemon asks for `source` (a `nix-store --export`
    /// stream) with STDERR_READ; returns the imported paths.
    pub async fn import_paths(
        &mut self,
        source: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<Vec<String>> {
        self.op(Op::ImportPaths);
        self.w.flush().await?;
        let v = self.hello.version;
        stderr_loop(
            &mut self.r,
            Some(&mut self.w),
            &mut self.logger,
            v,
            None,
            Some(source),
        )
        .await?;
        self.r.strings().await
    }

    pub async fn build_paths(&mut self, paths: &[DerivedPath], mode: BuildMode) -> Result<()> {
        let v = self.version();
        write_derived_paths(self.op(Op::BuildPaths), paths, v);
        if minor(v) >= 15 {
            self.w.u64(mode as u64);
        }
        self.stderr().await?;
        self.r.u64().await?;
        Ok(())
    }

    /// BuildPathsWithResults (1.34).
    pub async fn build_paths_with_results(
        &mut self,
        paths: &[DerivedPath],
        mode: BuildMode,
    ) -> Result<Vec<(DerivedPath, BuildResult)>> {
        let v = self.version();
        if minor(v) < 34 {
            return Err(Error::protocol(
                "BuildPathsWithResults needs a daemon of protocol 1.34",
            ));
        }
        write_derived_paths(self.op(Op::BuildPathsWithResults), paths, v);
        self.w.u64(mode as u64);
        self.stderr().await?;
        let n = self.r.count("build results").await?;
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(BuildResult::read_with_path(&mut self.r).await?);
        }
        Ok(v)
    }

    /// BuildDerivation: build `drv` (its inputs already in the daemon's
    /// store) under the name `drv_path`.
    pub async fn build_derivation(
        &mut self,
        drv_path: &str,
        drv: &Derivation,
        mode: BuildMode,
    ) -> Result<BuildResult> {
        let w = self.op(Op::BuildDerivation).bytes(drv_path);
        write_basic_derivation(w, drv);
        w.u64(mode as u64);
        self.stderr().await?;
        let v = self.version();
        BuildResult::read_for_build_derivation(&mut self.r, v).await
    }

    pub async fn query_missing(&mut self, paths: &[DerivedPath]) -> Result<Missing> {
        let v = self.version();
        write_derived_paths(self.op(Op::QueryMissing), paths, v);
        self.stderr().await?;
        Ok(Missing {
            will_build: self.r.string_set().await?,
            will_substitute: self.r.string_set().await?,
            unknown: self.r.string_set().await?,
            download_size: self.r.u64().await?,
            nar_size: self.r.u64().await?,
        })
    }

    /// FindRoots: (link, target) pairs.
    pub async fn find_roots(&mut self) -> Result<Vec<(String, String)>> {
        self.op(Op::FindRoots);
        self.stderr().await?;
        let n = self.r.count("roots").await?;
        let mut v = Vec::new();
        for _ in 0..n {
            v.push((self.r.string().await?, self.r.string().await?));
        }
        Ok(v)
    }

    /// CollectGarbage: returns the paths and the bytes freed.
    pub async fn collect_garbage(
        &mut self,
        action: u64,
        paths: &BTreeSet<String>,
        max_freed: u64,
    ) -> Result<(BTreeSet<String>, u64)> {
        self.op(Op::CollectGarbage)
            .u64(action)
            .strings(paths)
            .bool(false)
            .u64(max_freed)
            .u64(0)
            .u64(0)
            .u64(0);
        self.stderr().await?;
        let paths = self.r.string_set().await?;
        let freed = self.r.u64().await?;
        self.r.u64().await?;
        Ok((paths, freed))
    }
}
