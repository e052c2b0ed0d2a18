//! Progress of a copy to or from a build machine, for the client's display:
//! the bytes of a stream are counted as they pass ([`Counting`]), and
//! [`reporting`] reads the count a few times a second while the copy runs,
//! so a progress event is made at most [`PER_SECOND`] times per copy
//! whatever the stream's chunk size (the rate limit is at the source; the
//! event queue may still drop them for a slow client, see `events.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Progress events per copy and second, at most.
pub const PER_SECOND: u64 = 5;

/// A stream whose bytes read or written are added to a shared count.
pub struct Counting<T> {
    inner: T,
    count: Arc<AtomicU64>,
}

impl<T> Counting<T> {
    pub fn new(inner: T, count: Arc<AtomicU64>) -> Counting<T> {
        Counting { inner, count }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.count.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Run `copy`, calling `report` with the count so far every
/// 1/[`PER_SECOND`] s while it changes, and once more at the end.
pub async fn reporting<F: Future>(
    copy: F,
    count: &AtomicU64,
    mut report: impl FnMut(u64),
) -> F::Output {
    let every = Duration::from_millis(1000 / PER_SECOND);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(copy);
    let mut last = 0;
    loop {
        tokio::select! {
            out = &mut copy => {
                let done = count.load(Ordering::Relaxed);
                if done != last {
                    report(done);
                }
                return out;
            }
            _ = tick.tick() => {
                let done = count.load(Ordering::Relaxed);
                if done != last {
                    last = done;
                    report(done);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_copy_is_reported_a_few_times_a_second_and_at_its_end() {
        let count = Arc::new(AtomicU64::new(0));
        let (w, r) = tokio::io::duplex(1 << 10);
        let mut w = Counting::new(w, count.clone());
        let writer = async move {
            for _ in 0..100 {
                w.write_all(&[0u8; 1000]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let reader = async move {
            let mut r = r;
            let mut all = Vec::new();
            r.read_to_end(&mut all).await.unwrap();
            all.len()
        };
        let mut reports = Vec::new();
        let (_, n) = tokio::join!(reporting(writer, &count, |d| reports.push(d)), reader);
        assert_eq!(n, 100_000);
        // 2 s of copying: about 10 reports, never one per write.
        assert!(reports.len() <= 2 * PER_SECOND as usize + 2, "{reports:?}");
        assert!(reports.len() >= 5, "{reports:?}");
        assert_eq!(*reports.last().unwrap(), 100_000);
        assert!(reports.windows(2).all(|w| w[0] < w[1]));
    }
}
