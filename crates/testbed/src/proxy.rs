//! A TCP proxy for fault tests: the master reaches a host through it, so a
//! test can stop the stream at an exact point (to inject a fault in a known
//! phase: while connecting, at byte N of an upload or of a download) or flip
//! a byte there (bytes corrupted in transit, which SSH must detect).
//!
//! Plain threads and blocking sockets: one thread accepts, two per
//! connection copy (one each way). Byte counts are per direction, summed
//! over every connection since the proxy started.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A direction through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting side (the master) to the target (the host).
    Up = 0,
    /// From the target back to the connecting side.
    Down = 1,
}

/// What happens when a trigger's byte is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Hold that direction (bytes before the point are delivered) until
    /// [`Proxy::resume`].
    Pause,
    /// Flip the bits of that one byte and go on.
    Corrupt,
}

#[derive(Clone, Copy, Debug)]
struct Trigger {
    direction: Direction,
    /// Absolute offset in that direction's byte count.
    at: u64,
    action: Action,
}

#[derive(Default)]
struct State {
    bytes: [u64; 2],
    trigger: Option<Trigger>,
    /// Hold the next accepted connection before connecting to the target.
    hold_connect: bool,
    /// A trigger (or a held connect) fired.
    hit: bool,
    paused: bool,
    connections: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    closing: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Block while paused (or until the proxy closes).
    fn wait_resumed(&self, mut st: MutexGuard<'_, State>) {
        while st.paused && !self.closing.load(Ordering::SeqCst) {
            st = self
                .changed
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A running proxy; stopped (listener and every connection closed) when
/// dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listen on 127.0.0.1 (a free port) and forward to `target`.
    pub fn start(target: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            closing: AtomicBool::new(false),
        });
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (sh, ss) = (shared.clone(), streams.clone());
        thread::spawn(move || accept_loop(listener, target, sh, ss));
        Ok(Proxy {
            addr,
            shared,
            streams,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes forwarded so far in `direction`.
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.shared.lock().bytes[direction as usize]
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }

    /// Act on the byte `after` bytes from now in `direction` (replaces any
    /// armed trigger).
    pub fn arm(&self, direction: Direction, after: u64, action: Action) {
        let mut st = self.shared.lock();
        let at = st.bytes[direction as usize] + after;
        st.trigger = Some(Trigger {
            direction,
            at,
            action,
        });
        st.hit = false;
    }

    /// Hold the next connection accepted, before the target is dialled.
    pub fn hold_next_connect(&self) {
        let mut st = self.shared.lock();
        st.hold_connect = true;
        st.hit = false;
    }

    /// Wait until the armed trigger (or held connect) fired.
    pub fn wait_hit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        while !st.hit {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Let a paused direction (or held connect) go on.
    pub fn resume(&self) {
        let mut st = self.shared.lock();
        st.paused = false;
        self.shared.changed.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.resume();
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for s in self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    shared: Arc<Shared>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
) {
    for conn in listener.incoming() {
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        {
            let mut st = shared.lock();
            st.connections += 1;
            if st.hold_connect {
                st.hold_connect = false;
                st.hit = true;
                st.paused = true;
                shared.changed.notify_all();
                shared.wait_resumed(st);
            }
        }
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(10)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        {
            let mut v = streams.lock().unwrap_or_else(|e| e.into_inner());
            v.extend(client.try_clone().ok());
            v.extend(server.try_clone().ok());
        }
        let sh = shared.clone();
        thread::spawn(move || copy(client, s2, Direction::Up, sh));
        let sh = shared.clone();
        thread::spawn(move || copy(server, c2, Direction::Down, sh));
    }
}

/// Copy `from` to `to`, counting and applying the trigger; at the end shut
/// down the write side (EOF) or both sides (an error).
fn copy(mut from: TcpStream, mut to: TcpStream, direction: Direction, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut clean = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                clean = true;
                break;
            }
            Ok(n) => n,
            Err(_) => break,
        };
        let chunk = &mut buf[..n];
        let mut st = shared.lock();
        let start = st.bytes[direction as usize];
        st.bytes[direction as usize] += n as u64;
        let fire = st
            .trigger
            .filter(|t| t.direction == direction && t.at >= start && t.at < start + n as u64);
        let Some(t) = fire else {
            drop(st);
            if to.write_all(chunk).is_err() {
                break;
            }
            continue;
        };
        st.trigger = None;
        let off = (t.at - start) as usize;
        match t.action {
            Action::Corrupt => {
                chunk[off] ^= 0xff;
                st.hit = true;
                shared.changed.notify_all();
                drop(st);
                if to.write_all(chunk).is_err() {
                    break;
                }
            }
            Action::Pause => {
                drop(st);
                if to.write_all(&chunk[..off]).is_err() {
                    break;
                }
                let mut st = shared.lock();
                st.hit = true;
                st.paused = true;
                shared.changed.notify_all();
                shared.wait_resumed(st);
                if to.write_all(&chunk[off..]).is_err() {
                    break;
                }
            }
        }
    }
    if clean {
        let _ = to.shutdown(Shutdown::Write);
    } else {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        thread::spawn(move || {
            for c in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut r = c.try_clone().unwrap();
                    let mut w = c;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        a
    }

    #[test]
    fn forwards_counts_corrupts_and_pauses() {
        let p = Proxy::start(echo()).unwrap();
        let mut c = TcpStream::connect(p.addr()).unwrap();
        c.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!(p.bytes(Direction::Up), 5);

        p.arm(Direction::Down, 2, Action::Corrupt);
        c.write_all(b"world").unwrap();
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, &[b'w', b'o', b'r' ^ 0xff, b'l', b'd']);
        assert!(p.wait_hit(Duration::from_secs(1)));

        p.arm(Direction::Up, 3, Action::Pause);
        c.write_all(b"abcdef").unwrap();
        assert!(p.wait_hit(Duration::from_secs(5)));
        let mut first = [0u8; 3];
        c.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"abc");
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(c.read(&mut first).is_err(), "paused: nothing more");
        p.resume();
        c.set_read_timeout(None).unwrap();
        c.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"def");
    }

    #[test]
    fn holds_a_connect() {
        let p = Proxy::start(echo()).unwrap();
        p.hold_next_connect();
        let mut c = TcpStream::connect(p.addr()).unwrap();
        assert!(p.wait_hit(Duration::from_secs(5)));
        c.write_all(b"x").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = [0u8; 1];
        assert!(c.read(&mut b).is_err(), "held: not connected yet");
        p.resume();
        c.set_read_timeout(None).unwrap();
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }
}
