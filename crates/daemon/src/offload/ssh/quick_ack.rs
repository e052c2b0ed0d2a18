//! The byte stream over one SSH channel to a Unix socket on the machine
//! ([`QuickAckStream`]): writes that fail when the channel or connection
//! is gone, TCP quick-ACKs on reads, and a bound on time without progress
//! ([`Liveness`]).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::Msg;

use super::{lock, SILENCE_MARK};

/// A byte stream to a Unix socket on the remote machine (an SSH channel).
pub type SshStream = QuickAckStream;

/// A byte stream over an SSH channel (to a Unix socket on the machine).
///
/// Writes fail once the channel or the connection is gone. russh parks a
/// write that waits for the peer's window on a notification that only a
/// window adjustment sends: when the peer closes the channel (its daemon
/// died) or the connection dies (keep-alives unanswered, a reset), nothing
/// wakes it and an upload would hang forever. So the channel is split: a
/// task reads its messages, hands their data to [`AsyncRead`] as received
/// (no copy), and marks the channel over when the peer closes it; a
/// pending write also waits on that mark, and on the connection's end.
///
/// Reads keep the connection's TCP socket in quick-ACK mode. OpenSSH's sshd
/// only sets TCP_NODELAY for interactive sessions, not for stream-local
/// forwarding, so when the remote daemon writes two small messages in a row
/// (a log event, then the build result) Nagle holds the second until our
/// ACK of the first, which Linux delays by up to 40 ms: every
/// request/response exchange paid that stall. Re-arming TCP_QUICKACK after
/// each read makes our ACKs immediate, whatever the server's setting.
///
/// [`AsyncRead`]: tokio::io::AsyncRead
pub struct QuickAckStream {
    /// The channel's data, as the reading task receives it.
    incoming: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    /// What is left of the last piece received.
    current: bytes::Bytes,
    writer: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send + Sync>>,
    socket: Arc<std::os::fd::OwnedFd>,
    /// The channel closed by the peer, or the connection ended.
    over: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    /// Tells the reading task to close the channel when this is dropped.
    _close: tokio_util::sync::DropGuard,
    /// The bound on time without progress, and when progress was last made.
    liveness: Liveness,
    last_progress: tokio::time::Instant,
    silence_timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// How long a stream may go without progress (bytes read or written, or
/// the peer's end) before its reads and writes fail; shared with its owner,
/// who may lift the bound (a step whose silence is legitimate) and set it
/// again (progress is then counted from that moment).
#[derive(Clone, Debug)]
pub struct Liveness(Arc<Mutex<(Option<Duration>, tokio::time::Instant)>>);

impl Liveness {
    pub fn new(bound: Option<Duration>) -> Liveness {
        Liveness(Arc::new(Mutex::new((bound, tokio::time::Instant::now()))))
    }

    /// A new bound, counted from now.
    pub fn set(&self, bound: Option<Duration>) {
        *lock(&self.0) = (bound, tokio::time::Instant::now());
    }

    pub fn bound(&self) -> Option<Duration> {
        lock(&self.0).0
    }
}

/// Pieces (SSH packets of up to 32 KiB) read ahead from a channel.
const READ_AHEAD: usize = 64;

impl QuickAckStream {
    pub(super) fn new(
        channel: russh::Channel<Msg>,
        socket: Arc<std::os::fd::OwnedFd>,
        connection_gone: &tokio_util::sync::CancellationToken,
        liveness: Liveness,
    ) -> QuickAckStream {
        let (mut read_half, write_half) = channel.split();
        let writer = Box::pin(write_half.make_writer());
        let over = connection_gone.child_token();
        let close = tokio_util::sync::CancellationToken::new();
        let (tx, incoming) = tokio::sync::mpsc::channel(READ_AHEAD);
        let (over2, close2) = (over.clone(), close.clone());
        tokio::spawn(async move {
            // Dropped at the peer's EOF: reads end, writes may go on.
            let mut tx = Some(tx);
            loop {
                let msg = tokio::select! {
                    _ = close2.cancelled() => break,
                    msg = read_half.wait() => msg,
                };
                match msg {
                    Some(russh::ChannelMsg::Data { data }) => {
                        if let Some(t) = &tx {
                            if t.send(data).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(russh::ChannelMsg::Eof) => tx = None,
                    Some(russh::ChannelMsg::Close) | None => break,
                    Some(_) => {}
                }
            }
            over2.cancel();
            drop(tx);
            let _ = write_half.close().await;
        });
        QuickAckStream {
            incoming,
            current: bytes::Bytes::new(),
            writer,
            socket,
            over: Box::pin(over.cancelled_owned()),
            _close: close.drop_guard(),
            liveness,
            last_progress: tokio::time::Instant::now(),
            silence_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// The stream's liveness bound (see [`Liveness`]).
    pub fn liveness(&self) -> Liveness {
        self.liveness.clone()
    }

    /// Bytes moved (or the peer's end): the silence is counted from now.
    fn progressed(&mut self) {
        self.last_progress = tokio::time::Instant::now();
    }

    /// `Pending` from the channel, unless it has been so for longer than
    /// the liveness bound.
    fn unless_silent<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        res: std::task::Poll<io::Result<T>>,
    ) -> std::task::Poll<io::Result<T>> {
        if !res.is_pending() {
            return res;
        }
        let (bound, since) = *lock(&self.liveness.0);
        let Some(bound) = bound else { return res };
        let due = self.last_progress.max(since) + bound;
        if self.silence_timer.deadline() != due {
            self.silence_timer.as_mut().reset(due);
        }
        if std::future::Future::poll(self.silence_timer.as_mut(), cx).is_ready() {
            return std::task::Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{SILENCE_MARK} {} s", bound.as_secs_f64()),
            )));
        }
        res
    }

    /// `Pending` from the channel, unless the channel or connection is over.
    fn unless_over<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        res: std::task::Poll<io::Result<T>>,
    ) -> std::task::Poll<io::Result<T>> {
        if res.is_pending() && std::future::Future::poll(self.over.as_mut(), cx).is_ready() {
            return std::task::Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the SSH channel was closed (the remote daemon or the connection is gone)",
            )));
        }
        res
    }
}

impl tokio::io::AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if self.current.is_empty() {
            match self.incoming.poll_recv(cx) {
                std::task::Poll::Ready(Some(data)) => self.current = data,
                // The peer's EOF, or the channel is over.
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(Ok(())),
                std::task::Poll::Pending => {
                    return self.unless_silent(cx, std::task::Poll::Pending)
                }
            }
            self.progressed();
            let _ = rustix::net::sockopt::set_tcp_quickack(&*self.socket, true);
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current.split_to(n));
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let res = self.writer.as_mut().poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &res {
            if *n > 0 {
                self.progressed();
            }
        }
        let res = self.unless_over(cx, res);
        self.unless_silent(cx, res)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let res = self.writer.as_mut().poll_flush(cx);
        let res = self.unless_over(cx, res);
        self.unless_silent(cx, res)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let res = self.writer.as_mut().poll_shutdown(cx);
        self.unless_over(cx, res)
    }
}
