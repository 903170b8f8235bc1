//! WebSocket framing (RFC 6455, section 5) for the server side, sans IO.
//!
//! The layer under the JSON messages: [`Decoder`] turns bytes a client sent
//! into whole messages, unmasking them in place and checking every rule a
//! server must (masked, no extensions, known opcodes, control frames short
//! and unfragmented, fragments in order, size limits, UTF-8 text, valid
//! close codes). Text is checked as it arrives, fragment by fragment and
//! read by read, so a message that cannot become UTF-8 is refused at its
//! first bad byte rather than when it ends (RFC 6455 8.1 "fail fast"). The
//! `encode_*` functions append server frames (unmasked) to an output buffer.
//!
//! `server`'s conformance suite (`socket::conformance`, modelled on the
//! Autobahn test suite's case catalogue) runs every rule here over real
//! sockets.
//!
//! The server's own framing rather than a WebSocket library's: a frame is
//! read where it lies in the connection's buffer, with no allocation or
//! copy per message, and replies are appended to one buffer that is
//! written with one system call. No extensions are negotiated, so the RSV
//! bits are always zero.

use std::fmt;

/// Most payload bytes of a control frame (close, ping, pong).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close code for a frame that breaks the protocol.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code for text that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code for a normal close.
pub const CLOSE_NORMAL: u16 = 1000;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// One whole message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A text message, checked to be UTF-8.
    Text(&'a str),
    /// A binary message (the signaling protocol has no use for one; the
    /// conformance suite's echo endpoint sends it back).
    Binary(&'a [u8]),
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong,
    /// A close: its code and reason, if it gave any.
    Close(Option<u16>, &'a str),
}

/// Why a client's bytes cannot be a WebSocket stream: the connection is
/// closed with [`Error::close_code`] and [`Error::reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A rule of the framing broken; says which.
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8.
    NotUtf8,
    /// A message over the size limit.
    TooBig,
}

impl Error {
    /// The close code to send: 1002, 1007 or 1009.
    pub fn close_code(self) -> u16 {
        match self {
            Error::Protocol(_) => CLOSE_PROTOCOL_ERROR,
            Error::NotUtf8 => CLOSE_INVALID_DATA,
            Error::TooBig => crate::close::TOO_BIG,
        }
    }

    /// The close reason to send (short enough for a close frame).
    pub fn reason(self) -> &'static str {
        match self {
            Error::Protocol(why) => why,
            Error::NotUtf8 => "text is not UTF-8",
            Error::TooBig => crate::close::REASON_TOO_BIG,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Error {}

/// Turns a client's bytes into messages. Holds only what a fragmented
/// message has gathered so far; whole frames are decoded where they lie.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// The message being gathered from fragments: whether it is text, and
    /// its bytes so far (at most `max_message`).
    partial: Option<(bool, Vec<u8>)>,
    /// `partial` was handed out whole by the last call; clear it next.
    partial_done: bool,
    /// Payload bytes of the frame at the front of the buffer that were
    /// already checked as text while the frame was incomplete.
    frame_checked: usize,
    /// The UTF-8 check of the text message under way.
    utf8: Utf8Check,
}

/// Checks text that arrives in pieces: keeps only the bytes of a character
/// not yet complete (at most three), so each byte is looked at once.
#[derive(Debug, Default)]
struct Utf8Check {
    tail: [u8; 4],
    tail_len: usize,
}

impl Utf8Check {
    /// Takes the next bytes of the text; an error as soon as they cannot
    /// be followed by anything that makes them UTF-8.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        // First finish the character the previous bytes began.
        while self.tail_len > 0 {
            let Some((&byte, rest)) = bytes.split_first() else { return Ok(()) };
            bytes = rest;
            self.tail[self.tail_len] = byte;
            self.tail_len += 1;
            match std::str::from_utf8(&self.tail[..self.tail_len]) {
                Ok(_) => self.tail_len = 0,
                // Still a valid beginning (never more than 3 bytes).
                Err(e) if e.error_len().is_none() => {}
                Err(_) => return Err(Error::NotUtf8),
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &bytes[e.valid_up_to()..];
                self.tail[..tail.len()].copy_from_slice(tail);
                self.tail_len = tail.len();
                Ok(())
            }
            Err(_) => Err(Error::NotUtf8),
        }
    }

    /// The text has ended: it must not end inside a character.
    fn finish(&mut self) -> Result<(), Error> {
        let whole = self.tail_len == 0;
        self.tail_len = 0;
        if whole { Ok(()) } else { Err(Error::NotUtf8) }
    }
}

/// A frame's header, parsed.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Where the payload starts in the buffer.
    start: usize,
    len: usize,
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            partial: None,
            partial_done: false,
            frame_checked: 0,
            utf8: Utf8Check::default(),
        }
    }

    /// Decodes the first frame in `buf`, unmasking it in place.
    ///
    /// - `Ok(None)`: `buf` does not hold a whole frame yet.
    /// - `Ok(Some((used, event)))`: the frame took `used` bytes from the
    ///   front of `buf`; `event` is `None` for a fragment that does not end
    ///   its message.
    /// - `Err`: the stream is broken; close the connection.
    ///
    /// A frame over the size limit is refused from its header alone, before
    /// its payload arrives.
    pub fn decode<'a>(&'a mut self, buf: &'a mut [u8]) -> Result<Option<(usize, Option<Event<'a>>)>, Error> {
        if self.partial_done {
            self.partial_done = false;
            self.partial = None;
        }
        let Some(h) = self.header(buf)? else { return Ok(None) };
        // Text: a message is text if it began with a text frame.
        let text = match h.opcode {
            OP_TEXT => true,
            OP_CONTINUATION => self.partial.as_ref().is_some_and(|(text, _)| *text),
            _ => false,
        };
        if text && self.frame_checked == 0 && h.opcode == OP_TEXT {
            self.utf8 = Utf8Check::default();
        }
        let end = h.start + h.len;
        if buf.len() < end {
            if text {
                self.check_arrived(&h, buf)?;
            }
            return Ok(None);
        }
        let payload = &mut buf[h.start..end];
        unmask(payload, h.mask);
        let payload = &*payload;
        // A text frame that arrived in pieces, or one fragment of many, is
        // checked as it comes; a whole unfragmented one, once, below.
        let checked = std::mem::take(&mut self.frame_checked);
        if text && !(h.fin && h.opcode == OP_TEXT && checked == 0) {
            self.utf8.feed(&payload[checked..])?;
            if h.fin {
                self.utf8.finish()?;
            }
        }
        let event = match h.opcode {
            OP_PING => Some(Event::Ping(payload)),
            OP_PONG => Some(Event::Pong),
            OP_CLOSE => Some(close_event(payload)?),
            OP_TEXT | OP_BINARY if h.fin => Some(whole(h.opcode == OP_TEXT, payload)?),
            OP_TEXT | OP_BINARY => {
                self.partial = Some((h.opcode == OP_TEXT, payload.to_vec()));
                None
            }
            // A continuation: `header` made sure a message is under way.
            _ => {
                let Some((text, data)) = &mut self.partial else {
                    return Err(Error::Protocol("continuation without a message"));
                };
                data.extend_from_slice(payload);
                if h.fin {
                    self.partial_done = true;
                    Some(whole(*text, data)?)
                } else {
                    None
                }
            }
        };
        Ok(Some((end, event)))
    }

    /// Checks the part of an incomplete text frame that has arrived and was
    /// not checked yet, unmasking a copy (the frame is unmasked in place
    /// only once whole). Fails fast on text that cannot become UTF-8.
    fn check_arrived(&mut self, h: &Header, buf: &[u8]) -> Result<(), Error> {
        let arrived = buf.len().saturating_sub(h.start).min(h.len);
        let mut at = self.frame_checked;
        let mut chunk = [0u8; 256];
        while at < arrived {
            let n = (arrived - at).min(chunk.len());
            for (i, byte) in chunk[..n].iter_mut().enumerate() {
                *byte = buf[h.start + at + i] ^ h.mask[(at + i) % 4];
            }
            self.utf8.feed(&chunk[..n])?;
            at += n;
        }
        self.frame_checked = at;
        Ok(())
    }

    /// Parses and checks a frame header; `None` while it is incomplete.
    fn header(&self, buf: &[u8]) -> Result<Option<Header>, Error> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(Error::Protocol("reserved bits set"));
        }
        let opcode = b0 & 0x0F;
        if b1 & 0x80 == 0 {
            return Err(Error::Protocol("client frames must be masked"));
        }
        let (len, at) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
                _ => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                // RFC 6455 5.2: the most significant bit must be 0.
                Some(b) if b[0] & 0x80 != 0 => return Err(Error::Protocol("length over 63 bits")),
                Some(b) => (u64::from_be_bytes(b), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(Error::Protocol("fragmented control frame"));
                }
                if len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(Error::Protocol("control frame over 125 bytes"));
                }
            }
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(Error::Protocol("new message inside a fragmented one"));
                }
                if len > self.max_message as u64 {
                    return Err(Error::TooBig);
                }
            }
            OP_CONTINUATION => {
                let gathered = match &self.partial {
                    Some((_, data)) => data.len() as u64,
                    _ => return Err(Error::Protocol("continuation without a message")),
                };
                if gathered.saturating_add(len) > self.max_message as u64 {
                    return Err(Error::TooBig);
                }
            }
            _ => return Err(Error::Protocol("unknown opcode")),
        }
        let Some(&[m0, m1, m2, m3]) = buf.get(at..at + 4) else { return Ok(None) };
        // Fits: checked against `max_message` or 125 above.
        let len = usize::try_from(len).map_err(|_| Error::TooBig)?;
        Ok(Some(Header { fin, opcode, mask: [m0, m1, m2, m3], start: at + 4, len }))
    }
}

/// A whole text or binary message.
fn whole(text: bool, payload: &[u8]) -> Result<Event<'_>, Error> {
    if text {
        std::str::from_utf8(payload).map(Event::Text).map_err(|_| Error::NotUtf8)
    } else {
        Ok(Event::Binary(payload))
    }
}

/// A close frame's payload: nothing, or a code and a UTF-8 reason.
fn close_event(payload: &[u8]) -> Result<Event<'_>, Error> {
    match payload {
        [] => Ok(Event::Close(None, "")),
        [_] => Err(Error::Protocol("close payload of one byte")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !valid_close_code(code) {
                return Err(Error::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Error::NotUtf8)?;
            Ok(Event::Close(Some(code), reason))
        }
    }
}

/// Codes a peer may send (RFC 6455 7.4): the defined ones, those IANA
/// registered since (1012 service restart, 1013 try again later, 1014 bad
/// gateway: webconf sends the first two itself), and those for libraries
/// (3000-3999) and applications (4000-4999). Never 1004-1006 or 1015, which
/// mean "no code" or are reserved for what a close frame cannot say.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `payload` with the repeating `mask`, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the mask lines up again.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Appends a server frame (final, unmasked) with this opcode and payload.
fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        // Casts fit: each arm bounds the length.
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a text frame.
pub fn encode_text(out: &mut Vec<u8>, text: &str) {
    encode(out, OP_TEXT, text.as_bytes());
}

/// Appends a binary frame (the signaling protocol sends none; the
/// conformance suite's echo endpoint does).
pub fn encode_binary(out: &mut Vec<u8>, payload: &[u8]) {
    encode(out, OP_BINARY, payload);
}

/// Appends a ping frame with an empty payload.
pub fn encode_ping(out: &mut Vec<u8>) {
    encode(out, OP_PING, &[]);
}

/// Appends the pong answering a ping with `payload` (at most 125 bytes, as
/// [`Decoder`] makes sure of).
pub fn encode_pong(out: &mut Vec<u8>, payload: &[u8]) {
    encode(out, OP_PONG, &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)]);
}

/// Appends a close frame: with `code` and `reason` (cut at a character
/// boundary to fit 125 bytes), or empty for `None`.
pub fn encode_close(out: &mut Vec<u8>, close: Option<(u16, &str)>) {
    let Some((code, reason)) = close else { return encode(out, OP_CLOSE, &[]) };
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    encode(out, OP_CLOSE, &payload[..2 + cut]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with a fixed key.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![b0];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Decodes all of `bytes`, as owned events; stops at the first error.
    fn decode_all(max: usize, mut bytes: Vec<u8>) -> (Vec<String>, Option<Error>) {
        let mut d = Decoder::new(max);
        let mut at = 0;
        let mut events = Vec::new();
        loop {
            match d.decode(&mut bytes[at..]) {
                Ok(Some((used, event))) => {
                    if let Some(e) = event {
                        events.push(format!("{e:?}"));
                    }
                    at += used;
                }
                Ok(None) => return (events, None),
                Err(e) => return (events, Some(e)),
            }
        }
    }

    #[test]
    fn rfc_6455_examples() {
        // Section 5.7: a masked "Hello" from a client.
        let mut hello = vec![0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let mut d = Decoder::new(100);
        assert_eq!(d.decode(&mut hello), Ok(Some((11, Some(Event::Text("Hello"))))));
        // And the unmasked one a server sends.
        let mut out = Vec::new();
        encode_text(&mut out, "Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        // A fragmented "Hel" + "lo".
        let mut bytes = frame(0x01, b"Hel");
        bytes.extend(frame(0x80, b"lo"));
        assert_eq!(decode_all(100, bytes), (vec![r#"Text("Hello")"#.into()], None));
    }

    #[test]
    fn every_byte_boundary_waits_for_the_rest() {
        for len in [0, 5, 125, 126, 300, 70_000] {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let whole = frame(0x81, text.as_bytes());
            for cut in [0, 1, 2, 3, 5, 9, 13, whole.len() - 1] {
                let mut part = whole[..cut.min(whole.len() - 1)].to_vec();
                assert_eq!(Decoder::new(100_000).decode(&mut part), Ok(None), "len {len} cut {cut}");
            }
            let (events, err) = decode_all(100_000, whole);
            assert_eq!((events.len(), err), (1, None), "len {len}");
        }
    }

    #[test]
    fn control_frames_between_fragments() {
        let mut bytes = frame(0x01, b"a");
        bytes.extend(frame(0x89, b"are you there"));
        bytes.extend(frame(0x00, b"b"));
        bytes.extend(frame(0x8A, b""));
        bytes.extend(frame(0x80, b"c"));
        bytes.extend(frame(0x82, &[1, 2, 3]));
        bytes.extend(frame(0x88, b"\x03\xe8bye"));
        let (events, err) = decode_all(100, bytes);
        assert_eq!(err, None);
        assert_eq!(
            events,
            [
                r#"Ping([97, 114, 101, 32, 121, 111, 117, 32, 116, 104, 101, 114, 101])"#,
                "Pong",
                r#"Text("abc")"#,
                "Binary([1, 2, 3])",
                r#"Close(Some(1000), "bye")"#
            ]
        );
    }

    #[test]
    fn broken_streams_get_the_right_close_code() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            // Unmasked.
            (vec![0x81, 0x01, b'x'], 1002),
            // Reserved bits (no extension was negotiated).
            (frame(0xC1, b"x"), 1002),
            // Unknown opcodes.
            (frame(0x83, b"x"), 1002),
            (frame(0x8B, b"x"), 1002),
            // Fragmented and oversized control frames.
            (frame(0x09, b"x"), 1002),
            (frame(0x89, &[0; 126]), 1002),
            // A continuation out of nowhere; a new message inside one.
            (frame(0x80, b"x"), 1002),
            ([frame(0x01, b"x"), frame(0x81, b"y")].concat(), 1002),
            // Close payloads: one byte, a bad code, a reason not UTF-8.
            (frame(0x88, &[3]), 1002),
            (frame(0x88, &[0x03, 0xED]), 1002),
            (frame(0x88, &[0x03, 0xE8, 0xFF]), 1007),
            // Text not UTF-8, whole or split in the middle of a character.
            (frame(0x81, &[0xC3]), 1007),
            ([frame(0x01, &[0xC3]), frame(0x80, &[0x28])].concat(), 1007),
            // Over the limit: whole, gathered, or only announced.
            (frame(0x81, &[b'x'; 11]), 1009),
            ([frame(0x01, &[b'x'; 6]), frame(0x80, &[b'x'; 5])].concat(), 1009),
            (vec![0x81, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], 1009),
            // A 64-bit length with its top bit set breaks the framing.
            (vec![0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], 1002),
            // Close codes nobody may send.
            (frame(0x88, &[0x03, 0xF7]), 1002),
            (frame(0x88, &[0x03, 0xEE]), 1002),
        ];
        for (i, (bytes, code)) in cases.into_iter().enumerate() {
            let (_, err) = decode_all(10, bytes);
            assert_eq!(err.map(Error::close_code), Some(code), "case {i}: {err:?}");
        }
        // The limit itself is fine.
        assert_eq!(decode_all(10, frame(0x81, &[b'x'; 10])).1, None);
    }

    #[test]
    fn codes_registered_after_rfc_6455_are_valid() {
        for code in [1012u16, 1013, 1014] {
            let (events, err) = decode_all(10, frame(0x88, &code.to_be_bytes()));
            assert_eq!((events, err), (vec![format!(r#"Close(Some({code}), "")"#)], None));
        }
    }

    /// Text that cannot become UTF-8 is refused at its first bad byte: in
    /// a fragment before the last, and in a frame whose rest has not come.
    #[test]
    fn text_fails_fast() {
        // Autobahn's "kosme", with a three-byte character second.
        let kosme: &[u8] = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";
        let text = std::str::from_utf8(kosme).expect("valid UTF-8");
        // A fragment ending inside a character is fine; one that cannot
        // continue it is not, though the message is not over.
        let mut bytes = frame(0x01, &kosme[..3]);
        bytes.extend(frame(0x00, &kosme[3..]));
        bytes.extend(frame(0x00, b"\xf4"));
        assert_eq!(decode_all(100, bytes.clone()), (vec![], None));
        bytes.extend(frame(0x00, b"\x90"));
        assert_eq!(decode_all(100, bytes), (vec![], Some(Error::NotUtf8)));
        // One frame, arriving in pieces: refused once the bad byte is in.
        let whole = frame(0x81, &[kosme, b"\xed\xa0\x80edited"].concat());
        let head = whole.len() - kosme.len() - 9;
        let mut d = Decoder::new(100);
        for cut in head..=head + kosme.len() + 1 {
            let mut part = whole[..cut].to_vec();
            assert_eq!(d.decode(&mut part), Ok(None), "cut {cut}");
        }
        let mut part = whole[..head + kosme.len() + 2].to_vec();
        assert_eq!(d.decode(&mut part).map(|_| ()), Err(Error::NotUtf8));
        // A valid frame arriving in pieces still decodes, once.
        let good = frame(0x81, kosme);
        let mut d = Decoder::new(100);
        for cut in 0..good.len() {
            let mut part = good[..cut].to_vec();
            assert_eq!(d.decode(&mut part), Ok(None), "cut {cut}");
        }
        let mut good = good;
        assert_eq!(d.decode(&mut good), Ok(Some((good_len(kosme), Some(Event::Text(text))))));
        // Nor does a message that ends inside a character pass.
        let mut bytes = frame(0x01, &kosme[..3]);
        bytes.extend(frame(0x80, &kosme[3..4]));
        assert_eq!(decode_all(100, bytes), (vec![], Some(Error::NotUtf8)));
    }

    /// Decodes `bytes` read `step` bytes at a time (all at once for 0), as
    /// the server's socket does; as the fuzz target `ws_frames` does.
    fn decode_in_pieces(max: usize, bytes: &[u8], step: usize) -> (Vec<String>, Option<Error>) {
        let mut d = Decoder::new(max);
        let (mut buf, mut decoded, mut events) = (Vec::new(), 0, Vec::new());
        let pieces: Vec<&[u8]> = if step == 0 { vec![bytes] } else { bytes.chunks(step).collect() };
        for piece in pieces {
            buf.drain(..decoded);
            decoded = 0;
            buf.extend_from_slice(piece);
            loop {
                match d.decode(&mut buf[decoded..]) {
                    Ok(Some((used, event))) => {
                        events.extend(event.map(|e| format!("{e:?}")));
                        decoded += used;
                    }
                    Ok(None) => break,
                    Err(e) => return (events, Some(e)),
                }
            }
        }
        (events, None)
    }

    /// Text checked as it arrives decides exactly as text checked whole:
    /// random streams of fragments, some valid UTF-8 and some not, decode
    /// the same whatever the reads.
    #[test]
    fn text_checked_in_pieces_decides_as_whole() {
        let mut seed = 0x2545_f491_u32;
        let mut next = move |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed % n
        };
        let alphabet: [&[u8]; 8] =
            [b"a", b"\xce\xba", b"\xe1\xbd\xb9", b"\xf0\x90\x80\x80", b"\xed", b"\xa0", b"\xf4\x90", b"\xc3"];
        for _ in 0..3000 {
            let mut bytes = Vec::new();
            for _ in 0..1 + next(5) {
                let mut payload = Vec::new();
                for _ in 0..next(8) {
                    payload.extend_from_slice(alphabet[next(8) as usize]);
                }
                let cut = next(payload.len() as u32 + 1) as usize;
                let fin = next(3) != 0;
                let op = [0x1, 0x0, 0x0, 0x2, 0x9][next(5) as usize];
                bytes.extend(frame(u8::from(fin) << 7 | op, &payload[..cut]));
            }
            let whole = decode_in_pieces(40, &bytes, 0);
            for step in 1..8 {
                assert_eq!(decode_in_pieces(40, &bytes, step), whole, "step {step}, bytes {bytes:02x?}");
            }
        }
    }

    /// The length of a masked client frame with this short payload.
    fn good_len(payload: &[u8]) -> usize {
        2 + 4 + payload.len()
    }

    #[test]
    fn server_frames() {
        let mut out = Vec::new();
        encode_text(&mut out, &"x".repeat(126));
        assert_eq!(out[..4], [0x81, 126, 0, 126]);
        out.clear();
        encode_text(&mut out, &"x".repeat(70_000));
        assert_eq!(out[..10], [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        out.clear();
        encode_ping(&mut out);
        encode_pong(&mut out, b"hi");
        encode_close(&mut out, None);
        assert_eq!(out, [0x89, 0, 0x8A, 2, b'h', b'i', 0x88, 0]);
        // A long reason is cut at a character boundary to fit 125 bytes.
        out.clear();
        encode_close(&mut out, Some((1008, &"é".repeat(100))));
        assert_eq!(out[..4], [0x88, 124, 0x03, 0xF0]);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    fn unmask_matches_the_bytewise_xor() {
        let mask = [1, 2, 3, 4];
        for len in 0..40 {
            let mut data: Vec<u8> = (0..len as u8).collect();
            unmask(&mut data, mask);
            let want: Vec<u8> = (0..len as u8).map(|b| b ^ mask[usize::from(b) % 4]).collect();
            assert_eq!(data, want);
        }
    }
}
