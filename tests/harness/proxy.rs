//! A TCP proxy in front of a broker or PostgreSQL that can cut every connection and refuse new
//! ones, freeze them (a peer that stops answering) or hold back only the peer's answers, then let
//! traffic through again; or that delays every answer (a broker farther away, for the bench).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy that can cut every connection and refuse new ones, or freeze them (a peer that stops
/// answering), then let traffic through again.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    open: bool,
    /// Bumped by `cut`; a connection ends when its generation is no longer current.
    generation: u64,
    /// Connections stay open and new ones are accepted, but nothing is forwarded.
    frozen: bool,
    /// Bytes that clients sent while frozen and that wait to be forwarded.
    held_bytes: usize,
    /// What clients send is forwarded, but not what the server sends back.
    answers_held: bool,
    /// How long each chunk the server sends waits before it is forwarded.
    answer_delay: Duration,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        Self::delaying(target, Duration::ZERO).await
    }

    /// A proxy whose every answer from `target` reaches the client `delay` after it left the
    /// server, in order: a round trip `delay` longer.
    pub async fn delaying(target: SocketAddr, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(ProxyState {
            open: true,
            answer_delay: delay,
            ..ProxyState::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (open, generation) = {
                    let s = shared.lock().expect("proxy state");
                    (s.open, s.generation)
                };
                if !open {
                    drop(client);
                    continue;
                }
                let state = shared.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    // Each chunk goes out as it is forwarded: Nagle's algorithm would hold a
                    // small one back until the peer's delayed acknowledgement (up to 40 ms).
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = forward(cr, sw, state.clone(), generation, true);
                    let delay = state.lock().map(|s| s.answer_delay).unwrap_or_default();
                    let down = async {
                        if delay.is_zero() {
                            forward(sr, cw, state.clone(), generation, false).await;
                        } else {
                            forward_late(sr, cw, delay).await;
                        }
                    };
                    let cut = async {
                        loop {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if state
                                .lock()
                                .map(|s| s.generation != generation)
                                .unwrap_or(true)
                            {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Proxy { addr, state }
    }

    /// Drops every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        let mut s = self.state.lock().expect("proxy state");
        s.open = false;
        s.generation += 1;
    }

    /// Keeps every connection open and accepts new ones, but forwards nothing until `restore`:
    /// a peer that stops answering. What was sent meanwhile is delivered after `restore`.
    pub fn freeze(&self) {
        self.state.lock().expect("proxy state").frozen = true;
    }

    /// Forwards what clients send but holds back what the server answers until `restore`: a
    /// broker that takes messages and is slow to confirm them.
    pub fn hold_answers(&self) {
        self.state.lock().expect("proxy state").answers_held = true;
    }

    pub fn restore(&self) {
        let mut s = self.state.lock().expect("proxy state");
        s.open = true;
        s.frozen = false;
        s.answers_held = false;
    }

    /// Bytes that clients sent while frozen and that wait to be forwarded.
    pub fn held_bytes(&self) -> usize {
        self.state.lock().expect("proxy state").held_bytes
    }
}

/// Copies `from` to `to` until the connection's `generation` is cut, holding data back while the
/// proxy is frozen; `from_client` data held back is counted in `held_bytes`.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<Mutex<ProxyState>>,
    generation: u64,
    from_client: bool,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let held = from_client && state.lock().map(|s| s.frozen).unwrap_or(false);
        if held && let Ok(mut s) = state.lock() {
            s.held_bytes += n;
        }
        while (state.lock())
            .map(|s| s.frozen || (s.answers_held && !from_client))
            .unwrap_or(false)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if held && let Ok(mut s) = state.lock() {
            s.held_bytes -= n;
        }
        // Cut: nothing read after `cut` returned gets through, even before the connection is
        // closed (a relay can publish within the moment that takes).
        if state
            .lock()
            .map(|s| s.generation != generation)
            .unwrap_or(true)
        {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order.
async fn forward_late(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (chunks, mut due) =
        tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buffer).await {
            if n == 0
                || chunks
                    .send((tokio::time::Instant::now() + delay, buffer[..n].to_vec()))
                    .is_err()
            {
                return;
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(read, write);
}
