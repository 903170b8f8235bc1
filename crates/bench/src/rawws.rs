//! The generator's lean side of a WebSocket, for scenario 2: once a call is
//! set up (with tokio-tungstenite), its two clients write and read frames
//! by hand, so the generator spends less per message than any server under
//! test and the table measures the server, not the generator.
//!
//! Client frames are masked (RFC 6455 requires it) with one key per
//! connection; the sender masks a batch's message once and writes that
//! frame as many times as the batch holds. The reader decodes the server's
//! unmasked frames straight from its read buffer.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net::Ws;

/// One side of a WebSocket, spoken frame by frame.
pub struct RawWs {
    tcp: TcpStream,
    mask: [u8; 4],
    buf: Vec<u8>,
    /// Where the undecoded bytes in `buf` start.
    at: usize,
}

/// What [`RawWs::next`] found.
pub enum Frame<'a> {
    /// A text frame's payload.
    Text(&'a str),
    /// Any other frame (ping, pong, binary).
    Other,
    /// A close frame, or the end of the stream.
    Closed,
}

impl RawWs {
    /// Takes over a connection that tokio-tungstenite set up; whatever it
    /// had read and not yet handed out is lost, so call this only when
    /// nothing is in flight.
    pub fn new(ws: Ws, key: u32) -> RawWs {
        RawWs { tcp: ws.into_inner(), mask: key.to_be_bytes(), buf: Vec::with_capacity(64 * 1024), at: 0 }
    }

    /// Appends `text` as a masked client frame to `out`.
    pub fn frame(&self, text: &str, out: &mut Vec<u8>) {
        let len = text.len();
        out.push(0x81);
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&self.mask);
        out.extend(text.bytes().enumerate().map(|(i, b)| b ^ self.mask[i % 4]));
    }

    /// Writes `bytes` (whole frames) to the socket.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// The next whole frame already read, if any.
    pub fn next_buffered(&mut self) -> Result<Option<Frame<'_>>, String> {
        let rest = &self.buf[self.at..];
        let [b0, b1, ..] = *rest else { return Ok(None) };
        if b1 & 0x80 != 0 {
            return Err("a masked frame from the server".to_owned());
        }
        let (len, head) = match b1 & 0x7F {
            126 => match rest.get(2..4) {
                Some(&[a, b]) => (usize::from(u16::from_be_bytes([a, b])), 4),
                _ => return Ok(None),
            },
            127 => match rest.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(b) => (u64::from_be_bytes(b) as usize, 10),
                None => return Ok(None),
            },
            n => (usize::from(n), 2),
        };
        let Some(payload) = rest.get(head..head + len) else { return Ok(None) };
        self.at += head + len;
        Ok(Some(match b0 & 0x0F {
            0x1 => Frame::Text(std::str::from_utf8(payload).map_err(|_| "text not UTF-8".to_owned())?),
            0x8 => Frame::Closed,
            _ => Frame::Other,
        }))
    }

    /// Reads more bytes; `Ok(false)` at the end of the stream.
    pub async fn fill(&mut self) -> io::Result<bool> {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        Ok(self.tcp.read_buf(&mut self.buf).await? > 0)
    }
}
