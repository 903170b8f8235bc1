//! The bare relay: what relaying WebSocket text costs in Rust when built
//! the usual way (tokio + tokio-tungstenite) and doing nothing else.
//!
//! It pairs connections in the order it accepts them (1st with 2nd, 3rd with
//! 4th, ...) and forwards each text message to the partner, nothing else: no
//! protocol, no parsing, no rooms. It has a 4 KiB read buffer, a 16 KiB
//! write buffer, the same runtime as webconf, and batched writes (feed,
//! then one flush). webconf does more per message (its protocol, checks and
//! rooms) but has its own WebSocket framing (`signal::ws`), which decodes
//! frames where they lie and writes a batch with one system call; so it can
//! cost less than this relay.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Messages waiting to be written to one connection; webconf's default
/// outbound queue. A full queue makes the partner's reader wait (TCP
/// back-pressure), where webconf would drop the slow peer instead.
const QUEUE: usize = 1024;

/// Most queued messages written per flush, as in webconf.
const WRITE_BATCH: usize = 64;

/// A connection waiting for the next one to be its partner.
struct Waiting {
    /// Its outbound queue (closed once the connection is gone).
    inbox: mpsc::Sender<Utf8Bytes>,
    /// Where it will find its partner's outbound queue.
    partner: Arc<OnceLock<mpsc::Sender<Utf8Bytes>>>,
}

/// Serves on `listen` until the process is killed.
pub async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let socket = if listen.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    // webconf's backlog, so connection storms meet the same queue.
    let listener = socket.listen(4096)?;
    println!("bare relay listening on {}", listener.local_addr()?);
    let lobby: Arc<Mutex<Option<Waiting>>> = Arc::new(Mutex::new(None));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, lobby.clone()));
            }
            Err(e) => {
                // Out of descriptors, most likely: wait for some to close
                // rather than spin.
                eprintln!("bare relay: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, lobby: Arc<Mutex<Option<Waiting>>>) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else { return };
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let partner: Arc<OnceLock<mpsc::Sender<Utf8Bytes>>> = Arc::new(OnceLock::new());
    {
        let mut waiting = lobby.lock().unwrap_or_else(|e| e.into_inner());
        match waiting.take() {
            // The waiting one is still there: pair up.
            Some(other) if !other.inbox.is_closed() => {
                let _ = other.partner.set(tx.clone());
                let _ = partner.set(other.inbox);
            }
            // Nobody waits, or the one waiting has gone: wait ourselves.
            _ => *waiting = Some(Waiting { inbox: tx.clone(), partner: partner.clone() }),
        }
    }
    drop(tx);
    let (mut sink, mut stream) = ws.split();
    // Writer: drains our queue, a batch per flush.
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            sink.feed(Message::Text(first)).await?;
            for _ in 1..WRITE_BATCH {
                let Ok(next) = rx.try_recv() else { break };
                sink.feed(Message::Text(next)).await?;
            }
            sink.flush().await?;
        }
        Ok::<(), tokio_tungstenite::tungstenite::Error>(())
    });
    // Reader: forwards text to the partner, if it has one yet.
    while let Some(Ok(msg)) = stream.next().await {
        match msg {
            Message::Text(text) => {
                if let Some(to) = partner.get() {
                    // Err: the partner is gone; the message goes nowhere.
                    let _ = to.send(text).await;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    // Dropping the writer's half (and the queue's receiver) closes the
    // socket and tells a waiting lobby entry that we are gone.
    writer.abort();
}
