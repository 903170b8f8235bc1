//! ICE-TCP for the SFU (RFC 6544, passive): browsers on networks that
//! block UDP reach the SFU over TCP on the same port number. Each
//! connection carries RFC 4571 frames (a 16-bit length, then one STUN,
//! DTLS, RTP or RTCP packet); this module only frames and unframes them,
//! the SFU task does the rest, as for UDP.
//!
//! Nobody has authenticated a new connection, so connections are capped per
//! address and in all at accept time, one that stays silent is closed, and
//! the SFU task closes one that no session has taken (by an ICE check)
//! within its connect deadline.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Frames waiting to be written to one connection; more are dropped, as a
/// congested network would.
const OUT_QUEUE: usize = 256;

/// A connection that sends nothing for this long is closed (browsers send a
/// consent check every few seconds, besides media).
const SILENCE: Duration = Duration::from_secs(30);

/// The longest one write may take.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// What connections tell the SFU task.
#[derive(Debug)]
pub(crate) enum TcpEvent {
    /// A connection from `remote` opened; frames for it go to `out`.
    Opened { remote: SocketAddr, out: mpsc::Sender<Vec<u8>> },
    /// One frame from `remote`.
    Frame { remote: SocketAddr, data: Vec<u8> },
    /// The connection from `remote` ended.
    Closed { remote: SocketAddr },
}

/// Accepts connections until `shutdown`, as many as `gate` lets in (per
/// address and in all; refused and counted beyond, and when the process is
/// out of file descriptors).
pub(crate) async fn accept(
    listener: TcpListener,
    mut gate: crate::accept::Gate,
    events: mpsc::Sender<TcpEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, remote, permit) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = gate.accept(&listener) => accepted,
        };
        let events = events.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection(stream, remote, events, shutdown).await;
            drop(permit);
        });
    }
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    events: mpsc::Sender<TcpEvent>,
    shutdown: CancellationToken,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (out, mut frames) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    if events.send(TcpEvent::Opened { remote, out }).await.is_err() {
        return;
    }
    let write = async move {
        while let Some(frame) = frames.recv().await {
            let Ok(len) = u16::try_from(frame.len()) else { continue };
            let mut framed = Vec::with_capacity(frame.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&frame);
            match tokio::time::timeout(WRITE_DEADLINE, writer.write_all(&framed)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    };
    let read = async {
        let mut len = [0u8; 2];
        loop {
            match tokio::time::timeout(SILENCE, reader.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let mut data = vec![0u8; usize::from(u16::from_be_bytes(len))];
            match tokio::time::timeout(SILENCE, reader.read_exact(&mut data)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            if data.is_empty() {
                continue;
            }
            // Waits only while the SFU task's inbox is full: this
            // connection then stops reading, and TCP pushes back on it.
            if events.send(TcpEvent::Frame { remote, data }).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = write => {}
        () = read => {}
    }
    let _ = events.send(TcpEvent::Closed { remote }).await;
}
