//! `ferry daemon --nix-socket PATH` and `ferry daemon --stdio`: Nix clients
//! on a Ferry daemon (the protocol is served by `ferry_daemon::nix_daemon`).
//!
//! `--stdio` is `nix-daemon --stdio`, the remote program of Nix's
//! `ssh-ng://` stores: when a daemon listens on the Nix socket, the bytes
//! are forwarded to it, so that it sees the real peer (its uid, hence its
//! trust) and builds with its engine; otherwise the connection is served
//! in this process on the store, as the daemon's own user (trusted: it
//! could write the store anyway), as `ferry build` works without a daemon.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use ferry_daemon::Daemon;

/// The Nix socket `--stdio` forwards to: `--nix-socket`, else
/// `nix-socket` beside the Ferry socket.
pub fn socket(given: Option<&Path>, ferry_socket: &Path) -> PathBuf {
    given.map_or_else(
        || ferry_socket.with_file_name("nix-socket"),
        Path::to_path_buf,
    )
}

/// Forward stdin and stdout to the daemon on `socket`; `None` when no
/// daemon listens there.
pub fn forward(socket: &Path) -> anyhow::Result<Option<ExitCode>> {
    let Ok(conn) = std::os::unix::net::UnixStream::connect(socket) else {
        return Ok(None);
    };
    let mut to_daemon = conn.try_clone().context("cloning the daemon connection")?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let _ = copy_flushing(&mut stdin, &mut to_daemon);
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
    });
    let mut from_daemon = conn;
    let mut stdout = std::io::stdout().lock();
    copy_flushing(&mut from_daemon, &mut stdout).context("forwarding to stdout")?;
    Ok(Some(ExitCode::SUCCESS))
}

/// Copy until EOF, flushing after every read (the protocol is a dialogue).
fn copy_flushing(r: &mut dyn Read, w: &mut dyn Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        w.flush()?;
    }
}

/// Serve one Nix client on stdin and stdout, in this process.
pub async fn serve(daemon: Arc<Daemon>) -> anyhow::Result<()> {
    use std::os::fd::AsFd;
    // Copies of the descriptors, as files (reads and writes on tokio's
    // blocking threads).
    let open = |fd: std::os::fd::BorrowedFd<'_>| -> anyhow::Result<tokio::fs::File> {
        let owned = fd
            .try_clone_to_owned()
            .context("duplicating stdin/stdout")?;
        Ok(tokio::fs::File::from_std(std::fs::File::from(owned)))
    };
    let stdin = open(std::io::stdin().as_fd())?;
    let stdout = open(std::io::stdout().as_fd())?;
    ferry_daemon::nix_daemon::serve_split(
        stdin,
        stdout,
        daemon,
        Ok(ferry_daemon::access::Peer::owner()),
    )
    .await;
    Ok(())
}

/// Listen for Nix clients on `path` (served until the daemon stops).
pub async fn listen(path: &Path, daemon: &Arc<Daemon>) -> anyhow::Result<()> {
    let listener = ferry_daemon::server::bind(path)
        .await
        .with_context(|| format!("listening for Nix clients on {}", path.display()))?;
    tracing::info!("listening for Nix clients on {}", path.display());
    tokio::spawn(ferry_daemon::nix_daemon::listener::run(
        listener,
        daemon.clone(),
    ));
    Ok(())
}

/// Make `nix_log_dir/drvs` a link to Ferry's log directory `logs`: Nix's
/// clients read build logs themselves, from `LOGDIR/drvs/NAME.drv` (one of
/// the two places Nix 2.8 looks), and Ferry keeps each derivation's last
/// log as `STATE/log/NAME.drv`. Something else already there (a Nix
/// installation's own logs) is left alone, and said.
pub fn link_logs(nix_log_dir: &Path, logs: &Path) {
    let drvs = nix_log_dir.join("drvs");
    let said = |what: String| {
        tracing::warn!(
            "{what}: `nix log` will not find Ferry's build logs (move it aside, or give --nix-log-dir another directory and set NIX_LOG_DIR to it for Nix clients)"
        )
    };
    match std::fs::symlink_metadata(&drvs) {
        Ok(m)
            if m.file_type().is_symlink()
                && std::fs::read_link(&drvs).ok().as_deref() == Some(logs) => {}
        Ok(_) => said(format!(
            "{} exists and is not a link to {}",
            drvs.display(),
            logs.display()
        )),
        Err(_) => {
            let made = std::fs::create_dir_all(nix_log_dir)
                .and_then(|()| std::fs::create_dir_all(logs))
                .and_then(|()| std::os::unix::fs::symlink(logs, &drvs));
            match made {
                Ok(()) => tracing::info!("Nix clients find build logs in {}", drvs.display()),
                Err(e) => said(format!(
                    "linking {} to {}: {e}",
                    drvs.display(),
                    logs.display()
                )),
            }
        }
    }
}

/// `secret-key-files`: each file's Nix secret key, as Nix reads them (a
/// file that is missing or holds no key is an error: the daemon would
/// sign nothing).
pub fn secret_keys(
    files: &[String],
) -> anyhow::Result<Vec<std::sync::Arc<ferry_trust::nix_signature::NixSecretKey>>> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("secret-key-files: reading {f}: {e}"))?;
            let key = ferry_trust::nix_signature::NixSecretKey::parse(&text)
                .map_err(|e| anyhow::anyhow!("secret-key-files: {f}: {e}"))?;
            Ok(std::sync::Arc::new(key))
        })
        .collect()
}

/// `trusted-public-keys`, parsed; a key that is not one is said and left
/// out (it could not verify anything).
pub fn public_keys(words: &[String]) -> Vec<ferry_trust::nix_signature::NixPublicKey> {
    words
        .iter()
        .filter_map(
            |w| match ferry_trust::nix_signature::NixPublicKey::parse(w) {
                Ok(k) => Some(k),
                Err(e) => {
                    eprintln!("ferry: warning: trusted-public-keys: {e}");
                    None
                }
            },
        )
        .collect()
}
