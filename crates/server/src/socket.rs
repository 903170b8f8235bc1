//! A WebSocket's bytes: reads into a buffer that [`signal::ws::Decoder`]
//! decodes in place, and collects outgoing frames in one buffer that is
//! written with one system call.
//!
//! Idle connections keep neither buffer for long: reads land in a scratch
//! buffer owned by the thread, and only what is not yet decoded (usually
//! nothing, or part of one frame) is kept by the connection;
//! [`WsSocket::release_idle`] hands back the rest.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use signal::ws::{self, Decoder, Event};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// Most bytes taken from the socket per read: about 80 signals of 200 B.
const READ_CHUNK: usize = 16 * 1024;

/// Above this, the output buffer is shrunk back after a write, so one
/// burst of large messages does not keep its memory.
const OUT_KEEP: usize = 64 * 1024;

thread_local! {
    /// Where reads land before their bytes are decoded; one per thread of
    /// the runtime, so a waiting connection holds no read buffer.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// One connection's transport: a WebSocket here, or (cluster mode) a
/// browser's WebSocket on another node whose room is homed here, reached
/// over the bus ([`crate::cluster::RemoteIo`]). The connection's logic is
/// the same for both.
pub(crate) enum Socket {
    /// A WebSocket on this node.
    Ws(WsSocket),
    /// A member whose WebSocket is on another node.
    Remote(Box<crate::cluster::RemoteIo>),
}

/// Calls the same method on whichever transport it is.
macro_rules! either {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Socket::Ws($s) => $e,
            Socket::Remote($s) => $e,
        }
    };
}

impl Socket {
    /// Takes over a connection hyper upgraded to a WebSocket.
    pub(crate) fn new(upgraded: Upgraded, max_message: usize) -> Socket {
        Socket::Ws(WsSocket::new(upgraded, max_message))
    }

    /// See [`WsSocket::fill`].
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        either!(self, s => s.fill().await)
    }

    /// See [`WsSocket::next`].
    pub(crate) fn next(&mut self) -> Result<Option<Option<Event<'_>>>, ws::Error> {
        either!(self, s => s.next())
    }

    /// See [`WsSocket::text`].
    pub(crate) fn text(&mut self, text: &str) {
        either!(self, s => s.text(text))
    }

    /// See [`WsSocket::ping`].
    pub(crate) fn ping(&mut self) {
        either!(self, s => s.ping())
    }

    /// See [`WsSocket::close_frame`].
    pub(crate) fn close_frame(&mut self, close: Option<(u16, &str)>) {
        either!(self, s => s.close_frame(close))
    }

    /// See [`WsSocket::has_input`].
    pub(crate) fn has_input(&self) -> bool {
        either!(self, s => s.has_input())
    }

    /// See [`WsSocket::has_output`].
    pub(crate) fn has_output(&self) -> bool {
        either!(self, s => s.has_output())
    }

    /// See [`WsSocket::flush`].
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        either!(self, s => s.flush().await)
    }

    /// See [`WsSocket::close`].
    pub(crate) async fn close(&mut self, close: Option<(u16, &str)>, linger: Duration) {
        either!(self, s => s.close(close, linger).await)
    }

    /// See [`WsSocket::release_idle`].
    pub(crate) fn release_idle(&mut self) {
        either!(self, s => s.release_idle())
    }
}

/// One WebSocket connection's transport and buffers.
pub(crate) struct WsSocket {
    /// What hyper upgraded: TCP or TLS, behind one indirection per read
    /// or write (not per message).
    io: TokioIo<Upgraded>,
    /// Bytes read and not yet decoded start at `decoded`. Bounded: a read
    /// adds at most [`READ_CHUNK`] to what is left undecoded, which is
    /// less than one frame, and the decoder refuses frames over the
    /// message limit from their header.
    inbuf: Vec<u8>,
    decoded: usize,
    /// Frames waiting for [`WsSocket::flush`]. Bounded: the connection
    /// flushes after each batch from its queue (at most `WRITE_BATCH`
    /// messages) and after answering what one read brought in.
    out: Vec<u8>,
    decoder: Decoder,
}

impl WsSocket {
    /// Takes over a connection hyper upgraded to a WebSocket.
    /// (Bytes hyper read past the request are handed back by `Upgraded`
    /// itself, before anything from the socket.)
    pub(crate) fn new(upgraded: Upgraded, max_message: usize) -> WsSocket {
        WsSocket {
            io: TokioIo::new(upgraded),
            inbuf: Vec::new(),
            decoded: 0,
            out: Vec::new(),
            decoder: Decoder::new(max_message),
        }
    }

    /// Waits for the peer's next bytes and keeps them for [`WsSocket::next`].
    /// `Ok(0)` means the peer closed its side.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(scratch);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            let got = buf.filled();
            // Drop what was decoded before adding more.
            if self.decoded == self.inbuf.len() {
                self.inbuf.clear();
            } else {
                self.inbuf.drain(..self.decoded);
            }
            self.decoded = 0;
            self.inbuf.extend_from_slice(got);
            Poll::Ready(Ok(got.len()))
        })
    }

    /// The next frame among the bytes read so far: `Ok(None)` when they
    /// hold no whole frame, `Ok(Some(None))` for a fragment that does not
    /// end its message (call again). A ping is answered here, with a pong
    /// queued for the next [`WsSocket::flush`], and still returned: it shows
    /// the peer is alive.
    pub(crate) fn next(&mut self) -> Result<Option<Option<Event<'_>>>, ws::Error> {
        let rest = &mut self.inbuf[self.decoded..];
        match self.decoder.decode(rest)? {
            None => Ok(None),
            Some((used, event)) => {
                self.decoded += used;
                if let Some(Event::Ping(payload)) = event {
                    ws::encode_pong(&mut self.out, payload);
                }
                Ok(Some(event))
            }
        }
    }

    /// Queues a text frame for the next [`WsSocket::flush`].
    pub(crate) fn text(&mut self, text: &str) {
        ws::encode_text(&mut self.out, text);
    }

    /// Queues a ping.
    pub(crate) fn ping(&mut self) {
        ws::encode_ping(&mut self.out);
    }

    /// Queues a close frame.
    pub(crate) fn close_frame(&mut self, close: Option<(u16, &str)>) {
        ws::encode_close(&mut self.out, close);
    }

    /// Whether bytes were read that are not decoded yet (possibly only
    /// part of a frame).
    pub(crate) fn has_input(&self) -> bool {
        self.decoded < self.inbuf.len()
    }

    /// Whether frames wait to be written.
    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes every queued frame.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
            if self.out.capacity() > OUT_KEEP {
                self.out.shrink_to(OUT_KEEP);
            }
        }
        // Pushes out what TLS still holds; nothing to do for plain TCP.
        self.io.flush().await
    }

    /// Sends a close frame and waits up to `linger` for the peer's close
    /// (or end of stream), so the peer reads our close before the
    /// connection is reset.
    pub(crate) async fn close(&mut self, close: Option<(u16, &str)>, linger: Duration) {
        self.close_frame(close);
        let closing = async {
            self.flush().await?;
            loop {
                loop {
                    match self.next() {
                        Ok(Some(Some(Event::Close(..)))) | Err(_) => return Ok(()),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                    }
                }
                if self.fill().await? == 0 {
                    return Ok::<(), io::Error>(());
                }
            }
        };
        let _ = tokio::time::timeout(linger, closing).await;
    }

    /// Lets go of buffer memory an idle connection does not need.
    pub(crate) fn release_idle(&mut self) {
        if self.decoded == self.inbuf.len() {
            self.inbuf = Vec::new();
            self.decoded = 0;
        }
        if self.out.is_empty() {
            self.out = Vec::new();
        }
    }
}

#[cfg(test)]
mod conformance;
