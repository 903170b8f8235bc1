//! WebSocket conformance: the server's framing against a suite modelled on
//! the Autobahn test suite's fuzzing client (its Python 2 code cannot run
//! here). The cases follow Autobahn's catalogue, section by section, with
//! the behaviour each expects and Autobahn's verdicts: OK, NON-STRICT (the
//! server did the right thing, later than it could have), FAILED, and
//! INFORMATIONAL where the RFC leaves the outcome open.
//!
//! The server side is an echo endpoint that exists only in this test: the
//! real handshake check ([`crate::http::handshake`]), hyper's upgrade, the
//! real [`WsSocket`] and [`signal::ws`] decoder and encoders, production's
//! [`Limits`] (the 64 KiB message cap, write and idle deadlines) and
//! production's answers to a close and to a broken stream (`conn.rs`).
//! Text and binary messages are sent back as they came.
//!
//! Where webconf differs from Autobahn's expectations on purpose, the case
//! expects what webconf does and says why: section 9 sends messages of up
//! to 16 MiB, and webconf closes with 1009 above its 64 KiB cap (cases on
//! both sides of the cap are added); section 7.7 adds the close codes IANA
//! registered after RFC 6455. Sections 12 and 13 (permessage-deflate) do
//! not apply: webconf negotiates no extension, which every handshake here
//! checks by offering it.
//!
//! Autobahn waits a second where a case needs a pause; this suite waits a
//! half of one, and runs its cases side by side, so it takes seconds.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha1::{Digest, Sha1};
use signal::ws::{self, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, timeout};

use super::WsSocket;
use crate::Limits;
use crate::conn::CLOSE_LINGER;

// ---------------------------------------------------------------------------
// The echo endpoint (test build only).

/// Serves the echo endpoint at `/ws` on 127.0.0.1 until the runtime ends.
async fn echo_server(limits: Limits) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback has a free port");
    let addr = listener.local_addr().expect("a bound listener has an address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(serve_http(tcp, limits));
        }
    });
    addr
}

/// One HTTP connection, as production serves it: HTTP/1.1 with upgrades
/// and the request-header deadline.
async fn serve_http(tcp: TcpStream, limits: Limits) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
        Ok::<_, std::convert::Infallible>(upgrade(req, limits))
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades()
        .await;
}

/// Production's handshake check and answer, then [`echo`] on the upgraded
/// connection.
fn upgrade(mut req: Request<Incoming>, limits: Limits) -> Response<Body> {
    if req.uri().path() != "/ws" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let accept = match crate::http::handshake(req.headers()) {
        Ok(accept) => accept,
        Err(refusal) => return refusal.into_response(),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            echo(WsSocket::new(upgraded, limits.max_message_bytes), limits).await;
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

/// What to do with one decoded frame (owned, so the socket is free again).
enum Decoded {
    Nothing,
    Text(String),
    Binary(Vec<u8>),
    Closed(u16),
    Broken(ws::Error),
}

/// A connection of the echo endpoint, in production's order of work
/// (`conn.rs`): handle every whole frame read, write the answers within
/// the write deadline, read again within the idle deadline. A peer's close
/// is answered with its code (1000 for none) and the connection ends; a
/// broken stream is closed with the decoder's code and reason.
async fn echo(mut ws: WsSocket, limits: Limits) {
    loop {
        loop {
            let decoded = match ws.next() {
                Ok(None) => break,
                Ok(Some(None | Some(Event::Ping(_) | Event::Pong))) => Decoded::Nothing,
                Ok(Some(Some(Event::Text(text)))) => Decoded::Text(text.to_owned()),
                Ok(Some(Some(Event::Binary(data)))) => Decoded::Binary(data.to_vec()),
                Ok(Some(Some(Event::Close(code, _)))) => Decoded::Closed(code.unwrap_or(ws::CLOSE_NORMAL)),
                Err(e) => Decoded::Broken(e),
            };
            match decoded {
                Decoded::Nothing => {}
                Decoded::Text(text) => ws.text(&text),
                Decoded::Binary(data) => ws::encode_binary(&mut ws.out, &data),
                Decoded::Closed(code) => {
                    ws.close_frame(Some((code, "")));
                    let _ = timeout(CLOSE_LINGER, ws.flush()).await;
                    return;
                }
                Decoded::Broken(e) => {
                    ws.close(Some((e.close_code(), e.reason())), CLOSE_LINGER).await;
                    return;
                }
            }
        }
        if ws.has_output() && !matches!(timeout(limits.write_timeout, ws.flush()).await, Ok(Ok(()))) {
            return;
        }
        match timeout(limits.idle_timeout, ws.fill()).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

// ---------------------------------------------------------------------------
// The client: frames written byte for byte as a case says, and what the
// server sent, as Autobahn records it.

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A pause where Autobahn waits a second (long enough for a busy CI
/// machine to answer within it).
const WAIT: Duration = Duration::from_millis(500);
/// How long a case listens for what should not come, once what should has.
const SETTLE: Duration = Duration::from_millis(50);
/// How long the server has to send what a case expects, or to hang up.
const PATIENCE: Duration = Duration::from_secs(2);

/// What the client saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Message {
        binary: bool,
        data: Vec<u8>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// One of the case's waits ended with the connection still open.
    Waited(&'static str),
    /// Something no server may send, or an echo that differs.
    Bad(String),
}

/// A connection's state, shared by the reading task and the case.
#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    /// The server's close frame, with its code if it gave one.
    server_close: Option<Option<u16>>,
    /// The client sent a close frame (its own or the answer to the server's).
    sent_close: bool,
    /// The client began the closing: sent its close before the server's,
    /// or gave up on the server and dropped the connection.
    closed_by_me: bool,
    /// The client dropped the TCP connection because the server did not.
    dropped_by_me: bool,
    /// The server ended the TCP connection.
    eof: bool,
    /// A write failed: the server is gone.
    write_failed: bool,
}

struct Conn {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    reader: tokio::task::JoinHandle<()>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A masking key per frame, never the same twice in a row.
fn next_mask() -> [u8; 4] {
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (n.wrapping_mul(2_654_435_761) | 0x0101_0101).to_be_bytes()
}

/// A frame's header, masked by the client as it must be.
fn header(b0: u8, len: usize, mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![b0];
    match len {
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
    out
}

fn masked(payload: &[u8], mask: [u8; 4], offset: usize) -> impl Iterator<Item = u8> + '_ {
    payload.iter().enumerate().map(move |(i, b)| b ^ mask[(offset + i) % 4])
}

/// A whole client frame with these bits.
fn raw(opcode: u8, fin: bool, rsv: u8, payload: &[u8]) -> Vec<u8> {
    let mask = next_mask();
    let mut out = header(u8::from(fin) << 7 | rsv << 4 | opcode, payload.len(), mask);
    out.extend(masked(payload, mask, 0));
    out
}

fn fr(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    raw(opcode, fin, 0, payload)
}

fn text(payload: &[u8]) -> Vec<u8> {
    fr(OP_TEXT, true, payload)
}

fn close_frame(code: Option<u16>, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
    payload.extend_from_slice(reason);
    fr(OP_CLOSE, true, &payload)
}

fn msg(data: &[u8]) -> Seen {
    Seen::Message { binary: false, data: data.to_vec() }
}

fn bmsg(data: &[u8]) -> Seen {
    Seen::Message { binary: true, data: data.to_vec() }
}

fn pong(data: &[u8]) -> Seen {
    Seen::Pong(data.to_vec())
}

/// A close code a server may send (RFC 6455 7.4.1 and the IANA registry).
fn server_may_send(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

impl Conn {
    /// Connects, offers permessage-deflate as browsers do, and checks the
    /// server's answer: 101, the right accept key, no extension chosen.
    async fn open(addr: std::net::SocketAddr) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (mut rd, mut wr) = tcp.into_split();
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        );
        wr.write_all(request.as_bytes()).await.map_err(|e| format!("handshake write: {e}"))?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match timeout(PATIENCE, rd.read(&mut byte)).await {
                Ok(Ok(1)) if head.len() < 4096 => head.push(byte[0]),
                _ => return Err("no complete handshake answer".into()),
            }
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let mut sha = Sha1::new();
        sha.update(key.as_bytes());
        sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        let want = turn::auth::base64(&sha.finalize()).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101 ") || !head.contains(&format!("sec-websocket-accept: {want}\r\n"))
        {
            return Err(format!("handshake answer: {head:?}"));
        }
        if head.contains("sec-websocket-extensions") || head.contains("sec-websocket-protocol") {
            return Err(format!("the server chose an extension or subprotocol: {head:?}"));
        }
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let writer = Arc::new(tokio::sync::Mutex::new(wr));
        let reader = tokio::spawn(read_frames(rd, state.clone(), changed.clone(), writer.clone()));
        Ok(Conn { state, changed, writer, reader })
    }

    /// Whether the server closed (frame or TCP) or a write failed.
    fn server_gone(&self) -> bool {
        let s = lock(&self.state);
        s.server_close.is_some() || s.eof || s.write_failed
    }

    /// Writes bytes as one write, unless the server is gone.
    async fn write(&self, bytes: &[u8]) -> bool {
        if self.server_gone() {
            return false;
        }
        let ok = self.writer.lock().await.write_all(bytes).await.is_ok();
        if !ok {
            lock(&self.state).write_failed = true;
        }
        ok
    }

    /// Sends a close frame; the client began the closing if the server had not.
    async fn send_close(&self, frame: &[u8]) -> bool {
        {
            let mut s = lock(&self.state);
            if s.server_close.is_none() {
                s.closed_by_me = true;
            }
            s.sent_close = true;
        }
        self.write(frame).await
    }

    /// Waits until `done` holds or `deadline` passes.
    async fn until(&self, deadline: Instant, done: impl Fn(&State) -> bool) -> bool {
        loop {
            let notified = self.changed.notified();
            if done(&lock(&self.state)) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let _ = timeout((deadline - now).min(Duration::from_millis(20)), notified).await;
        }
    }

    /// Carries out one step; false once the server is gone.
    async fn step(&self, step: &Step) -> bool {
        match step {
            Step::Write(bytes) => self.write(bytes).await,
            Step::Chop(bytes, size, pause) => {
                for chunk in bytes.chunks(*size) {
                    if !self.write(chunk).await {
                        return false;
                    }
                    sleep(*pause).await;
                }
                true
            }
            Step::Close(frame) => self.send_close(frame).await,
            Step::Wait(label) => {
                sleep(WAIT).await;
                let mut s = lock(&self.state);
                if s.server_close.is_none() && !s.eof && !s.sent_close {
                    s.seen.push(Seen::Waited(label));
                }
                true
            }
            Step::Pause => {
                sleep(WAIT).await;
                true
            }
            Step::Stream { opcode, len, frag, fill, chop } => {
                self.stream(*opcode, *len, *frag, *fill, *chop).await
            }
            Step::RoundTrips { binary, len, count } => self.round_trips(*binary, *len, *count).await,
        }
    }

    /// A message of `len` bytes of `fill` in frames of `frag` payload
    /// bytes, written `chop` bytes at a time, made as it goes (up to 16
    /// MiB) and stopped once the server is gone.
    async fn stream(&self, opcode: u8, len: usize, frag: usize, fill: u8, chop: usize) -> bool {
        let mut out = Vec::with_capacity(chop + 16);
        let mut sent = 0;
        let mut first = true;
        while first || sent < len {
            let n = frag.min(len - sent);
            let fin = sent + n == len;
            let mask = next_mask();
            let op = if first { opcode } else { OP_CONT };
            out.extend(header(u8::from(fin) << 7 | op, n, mask));
            // The masked fill repeats every 4 bytes.
            let pattern: Vec<u8> = masked(&[fill; 4], mask, 0).collect();
            let mut left = n;
            while left > 0 {
                let take = left.min(64 * 1024);
                out.extend(pattern.iter().cycle().skip((n - left) % 4).take(take));
                left -= take;
                while out.len() >= chop {
                    let rest = out.split_off(chop);
                    if !self.write(&out).await {
                        return false;
                    }
                    out = rest;
                }
            }
            sent += n;
            first = false;
        }
        out.is_empty() || self.write(&out).await
    }

    /// `count` messages of `len` bytes, each sent when the last came back;
    /// a missing or different echo is recorded as bad.
    async fn round_trips(&self, binary: bool, len: usize, count: usize) -> bool {
        let (opcode, fill) = if binary { (OP_BINARY, 0xFE) } else { (OP_TEXT, b'*') };
        let payload = vec![fill; len];
        let want = Seen::Message { binary, data: payload.clone() };
        for i in 0..count {
            if !self.write(&fr(opcode, true, &payload)).await {
                return false;
            }
            let came = self.until(Instant::now() + PATIENCE, |s| !s.seen.is_empty() || s.eof).await;
            let mut s = lock(&self.state);
            match s.seen.pop() {
                Some(seen) if came && seen == want && s.seen.is_empty() => {}
                other => {
                    s.seen.push(Seen::Bad(format!("echo {i} of {count}: {:?}", other.map(short))));
                    return false;
                }
            }
        }
        true
    }

    /// Ends the connection as Autobahn's client does: waits for what the
    /// case expects (or the server's close), listens a little longer for
    /// what should not come, closes if the server has not, and waits for
    /// the server to hang up (dropping the connection itself if it does not).
    async fn finish(&self, case: &Case) {
        let deadline = Instant::now() + case.patience;
        self.until(deadline, |s| {
            s.server_close.is_some()
                || s.eof
                || (case.close.by_client && (s.seen == case.ok || case.non_strict.as_ref() == Some(&s.seen)))
        })
        .await;
        sleep(SETTLE).await;
        let (closed, sent) = {
            let s = lock(&self.state);
            (s.server_close.is_some() || s.eof, s.sent_close)
        };
        if !closed && !sent {
            self.send_close(&close_frame(Some(ws::CLOSE_NORMAL), b"")).await;
        }
        let hung_up = self.until(Instant::now() + PATIENCE, |s| s.eof).await;
        if !hung_up {
            let mut s = lock(&self.state);
            s.dropped_by_me = true;
            if s.server_close.is_none() {
                s.closed_by_me = true;
            }
        }
        self.reader.abort();
    }
}

/// A frame from the server, checked as a client must.
struct ServerFrame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

fn parse_server_frame(buf: &[u8]) -> Result<Option<(ServerFrame, usize)>, String> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(format!("reserved bits {:#x} in a server frame", b0 & 0x70));
    }
    if b1 & 0x80 != 0 {
        return Err("a masked server frame".into());
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (usize::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let len = u64::from_be_bytes(b.try_into().expect("eight bytes"));
                (usize::try_from(len).map_err(|_| "a huge server frame")?, 10)
            }
            None => return Ok(None),
        },
        n => (usize::from(n), 2),
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    let frame = ServerFrame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0F, payload: buf[at..at + len].to_vec() };
    Ok(Some((frame, at + len)))
}

/// Reads and checks the server's frames into the connection's state,
/// answering a close from the server with one of the client's.
async fn read_frames(
    mut rd: OwnedReadHalf,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut message: Option<(bool, Vec<u8>)> = None;
    loop {
        let mut at = 0;
        loop {
            let frame = match parse_server_frame(&buf[at..]) {
                Ok(Some((frame, used))) => {
                    at += used;
                    frame
                }
                Ok(None) => break,
                Err(bad) => {
                    let mut s = lock(&state);
                    s.seen.push(Seen::Bad(bad));
                    s.eof = true;
                    changed.notify_one();
                    return;
                }
            };
            let (seen, answer) = server_frame(frame, &mut message, &mut lock(&state));
            if let Some(seen) = seen {
                lock(&state).seen.push(seen);
            }
            if let Some(answer) = answer {
                let _ = writer.lock().await.write_all(&answer).await;
            }
            changed.notify_one();
        }
        buf.drain(..at);
        match rd.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => {
                lock(&state).eof = true;
                changed.notify_one();
                return;
            }
        }
    }
}

/// What a server frame means: something seen, and a close to send back.
fn server_frame(
    frame: ServerFrame,
    message: &mut Option<(bool, Vec<u8>)>,
    s: &mut State,
) -> (Option<Seen>, Option<Vec<u8>>) {
    let bad = |why: String| (Some(Seen::Bad(why)), None);
    if s.server_close.is_some() {
        return bad(format!("opcode {} after the close", frame.opcode));
    }
    let whole = |binary: bool, data: Vec<u8>| {
        if !binary && std::str::from_utf8(&data).is_err() {
            return Seen::Bad("text from the server is not UTF-8".into());
        }
        Seen::Message { binary, data }
    };
    match frame.opcode {
        OP_TEXT | OP_BINARY if message.is_some() => bad("a new message inside a fragmented one".into()),
        OP_TEXT | OP_BINARY if frame.fin => (Some(whole(frame.opcode == OP_BINARY, frame.payload)), None),
        OP_TEXT | OP_BINARY => {
            *message = Some((frame.opcode == OP_BINARY, frame.payload));
            (None, None)
        }
        OP_CONT => {
            let Some((binary, mut data)) = message.take() else {
                return bad("a continuation without a message".into());
            };
            data.extend_from_slice(&frame.payload);
            if frame.fin {
                (Some(whole(binary, data)), None)
            } else {
                *message = Some((binary, data));
                (None, None)
            }
        }
        OP_CLOSE | OP_PING | OP_PONG if !frame.fin || frame.payload.len() > 125 => {
            bad(format!("a fragmented or long control frame (opcode {})", frame.opcode))
        }
        OP_PING => (Some(Seen::Ping(frame.payload)), None),
        OP_PONG => (Some(Seen::Pong(frame.payload)), None),
        OP_CLOSE => {
            let code = match frame.payload.as_slice() {
                [] => None,
                [_] => return bad("a close payload of one byte".into()),
                [a, b, reason @ ..] => {
                    let code = u16::from_be_bytes([*a, *b]);
                    if !server_may_send(code) || std::str::from_utf8(reason).is_err() {
                        return bad(format!("close code {code} or its reason"));
                    }
                    Some(code)
                }
            };
            s.server_close = Some(code);
            if s.sent_close {
                return (None, None);
            }
            s.sent_close = true;
            (None, Some(close_frame(code, b"")))
        }
        op => bad(format!("opcode {op} from the server")),
    }
}

// ---------------------------------------------------------------------------
// Cases.

enum Step {
    /// Bytes written in one write.
    Write(Vec<u8>),
    /// Bytes written `size` at a time, pausing after each write so the
    /// server reads them apart.
    Chop(Vec<u8>, usize, Duration),
    /// A close frame: the client begins the closing handshake.
    Close(Vec<u8>),
    /// A pause; `Seen::Waited` records that the connection outlived it.
    Wait(&'static str),
    /// A pause that records nothing.
    Pause,
    /// See [`Conn::stream`].
    Stream { opcode: u8, len: usize, frag: usize, fill: u8, chop: usize },
    /// See [`Conn::round_trips`].
    RoundTrips { binary: bool, len: usize, count: usize },
}

/// How the connection should end (Autobahn's `expectedClose`).
#[derive(Clone)]
struct CloseExpect {
    /// The client closes (the case went well, or the client's close is the
    /// case); otherwise the server must fail the connection.
    by_client: bool,
    /// Close codes the server may send (none at all is also fine).
    codes: Vec<u16>,
    /// Both close frames must be exchanged.
    clean: bool,
    /// Closing from the wrong end fails the case outright (for UTF-8:
    /// the server did not notice the bad text at all).
    wrong_end_fatal: bool,
}

struct Case {
    id: String,
    what: String,
    steps: Vec<Step>,
    ok: Vec<Seen>,
    non_strict: Option<Vec<Seen>>,
    close: CloseExpect,
    informational: bool,
    patience: Duration,
}

impl Case {
    /// The server answers as `ok` says; then the client closes with 1000.
    fn echo(id: impl Into<String>, what: impl Into<String>, steps: Vec<Step>, ok: Vec<Seen>) -> Case {
        Case {
            id: id.into(),
            what: what.into(),
            steps,
            ok,
            non_strict: None,
            close: CloseExpect {
                by_client: true,
                codes: vec![ws::CLOSE_NORMAL],
                clean: true,
                wrong_end_fatal: false,
            },
            informational: false,
            patience: PATIENCE,
        }
    }

    /// The server answers as `ok` says, then fails the connection with
    /// one of `codes` (or drops it).
    fn fail(
        id: impl Into<String>,
        what: impl Into<String>,
        steps: Vec<Step>,
        ok: Vec<Seen>,
        codes: &[u16],
    ) -> Case {
        let mut case = Case::echo(id, what, steps, ok);
        case.close =
            CloseExpect { by_client: false, codes: codes.to_vec(), clean: false, wrong_end_fatal: false };
        case
    }

    /// The client closes in the case itself; the server answers with one
    /// of `codes`, cleanly if `clean`.
    fn closing(
        id: impl Into<String>,
        what: impl Into<String>,
        steps: Vec<Step>,
        codes: &[u16],
        clean: bool,
    ) -> Case {
        let mut case = Case::echo(id, what, steps, Vec::new());
        case.close = CloseExpect { by_client: true, codes: codes.to_vec(), clean, wrong_end_fatal: false };
        case
    }

    fn non_strict(mut self, seen: Vec<Seen>) -> Case {
        self.non_strict = Some(seen);
        self
    }

    fn fatal(mut self) -> Case {
        self.close.wrong_end_fatal = true;
        self
    }

    fn informational(mut self) -> Case {
        self.informational = true;
        self
    }
}

const P: u16 = ws::CLOSE_PROTOCOL_ERROR;
const UTF8: u16 = ws::CLOSE_INVALID_DATA;
const TOO_BIG: u16 = signal::close::TOO_BIG;

/// A text and a ping around a bad frame: the text is echoed, then the
/// connection fails and the ping gets no pong.
fn around(bad: Vec<u8>) -> Vec<Vec<u8>> {
    vec![text(b"Hello, world!"), bad, fr(OP_PING, true, b"")]
}

fn writes(frames: Vec<Vec<u8>>) -> Vec<Step> {
    frames.into_iter().map(Step::Write).collect()
}

/// Frame-wise chops: each frame its own write, with a pause between.
fn frame_wise(frames: Vec<Vec<u8>>) -> Vec<Step> {
    frames.into_iter().map(|f| Step::Chop(f, usize::MAX, Duration::from_millis(10))).collect()
}

/// Octet-wise chops: every byte its own write.
fn octet_wise(frames: Vec<Vec<u8>>) -> Vec<Step> {
    vec![Step::Chop(frames.concat(), 1, Duration::from_micros(200))]
}

fn section_1(cases: &mut Vec<Case>) {
    for (sub, binary) in [(1, false), (2, true)] {
        let (opcode, fill, kind) = if binary { (OP_BINARY, 0xFE, "binary") } else { (OP_TEXT, b'*', "text") };
        let seen = |data: &[u8]| if binary { bmsg(data) } else { msg(data) };
        for (i, len) in [0, 125, 126, 127, 128, 65535, 65536].into_iter().enumerate() {
            let data = vec![fill; len];
            cases.push(Case::echo(
                format!("1.{sub}.{}", i + 1),
                format!("{kind} message of {len} bytes"),
                vec![Step::Write(fr(opcode, true, &data))],
                vec![seen(&data)],
            ));
        }
        let data = vec![fill; 65536];
        cases.push(Case::echo(
            format!("1.{sub}.8"),
            format!("{kind} message of 65536 bytes in writes of 997"),
            vec![Step::Chop(fr(opcode, true, &data), 997, Duration::from_millis(1))],
            vec![seen(&data)],
        ));
    }
}

fn section_2(cases: &mut Vec<Case>) {
    let ping = |p: &[u8]| fr(OP_PING, true, p);
    let binary = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff";
    cases.push(Case::echo("2.1", "ping without payload", writes(vec![ping(b"")]), vec![pong(b"")]));
    cases.push(Case::echo(
        "2.2",
        "ping with a text payload",
        writes(vec![ping(b"Hello, world!")]),
        vec![pong(b"Hello, world!")],
    ));
    cases.push(Case::echo(
        "2.3",
        "ping with a binary payload",
        writes(vec![ping(binary)]),
        vec![pong(binary)],
    ));
    cases.push(Case::echo(
        "2.4",
        "ping with 125 bytes",
        writes(vec![ping(&[0xFE; 125])]),
        vec![pong(&[0xFE; 125])],
    ));
    cases.push(Case::fail("2.5", "ping with 126 bytes", writes(vec![ping(&[0xFE; 126])]), vec![], &[P]));
    cases.push(Case::echo(
        "2.6",
        "ping with 125 bytes, octet-wise",
        octet_wise(vec![ping(&[0xFE; 125])]),
        vec![pong(&[0xFE; 125])],
    ));
    cases.push(Case::echo(
        "2.7",
        "unsolicited pong without payload",
        writes(vec![fr(OP_PONG, true, b"")]),
        vec![],
    ));
    let unsolicited = fr(OP_PONG, true, b"unsolicited pong payload");
    cases.push(Case::echo("2.8", "unsolicited pong with payload", writes(vec![unsolicited.clone()]), vec![]));
    cases.push(Case::echo(
        "2.9",
        "unsolicited pong, then a ping",
        writes(vec![unsolicited, ping(b"ping payload")]),
        vec![pong(b"ping payload")],
    ));
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| format!("payload-{i}").into_bytes()).collect();
    let pongs: Vec<Seen> = payloads.iter().map(|p| pong(p)).collect();
    cases.push(Case::echo(
        "2.10",
        "10 pings",
        writes(payloads.iter().map(|p| ping(p)).collect()),
        pongs.clone(),
    ));
    cases.push(Case::echo(
        "2.11",
        "10 pings, octet-wise",
        octet_wise(payloads.iter().map(|p| ping(p)).collect()),
        pongs,
    ));
}

fn section_3(cases: &mut Vec<Case>) {
    let hello = msg(b"Hello, world!");
    cases.push(Case::fail(
        "3.1",
        "text with RSV = 1",
        writes(vec![raw(OP_TEXT, true, 1, b"Hello, world!")]),
        vec![],
        &[P],
    ));
    for (id, rsv, chops) in [("3.2", 2, 0), ("3.3", 3, 1), ("3.4", 4, 2)] {
        let frames = around(raw(OP_TEXT, true, rsv, b"Hello, world!"));
        let (steps, how) = match chops {
            0 => (writes(frames), ""),
            1 => (frame_wise(frames), ", frame-wise"),
            _ => (octet_wise(frames), ", octet-wise"),
        };
        cases.push(
            Case::fail(
                id,
                format!("text, text with RSV = {rsv}, ping{how}"),
                steps,
                vec![hello.clone()],
                &[P],
            )
            .non_strict(vec![]),
        );
    }
    let binary = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff";
    cases.push(Case::fail(
        "3.5",
        "binary with RSV = 5",
        writes(vec![raw(OP_BINARY, true, 5, binary)]),
        vec![],
        &[P],
    ));
    cases.push(Case::fail(
        "3.6",
        "ping with RSV = 6",
        writes(vec![raw(OP_PING, true, 6, b"Hello, world!")]),
        vec![],
        &[P],
    ));
    let close = close_frame(Some(1000), b"");
    let mut rsv7 = close.clone();
    rsv7[0] |= 0x70;
    cases.push(Case::fail("3.7", "close with RSV = 7", writes(vec![rsv7]), vec![], &[P]));
    // webconf: RFC 6455 5.1, a server must close on an unmasked frame.
    cases.push(Case::fail(
        "3.8",
        "(webconf) unmasked text frame",
        writes(vec![vec![0x81, 0x05, b'H', b'e', b'l', b'l', b'o']]),
        vec![],
        &[P],
    ));
}

fn section_4(cases: &mut Vec<Case>) {
    for (sub, ops) in [(1, [3u8, 4, 5, 6, 7]), (2, [11, 12, 13, 14, 15])] {
        for (i, op) in ops.into_iter().enumerate() {
            let id = format!("4.{sub}.{}", i + 1);
            let payload: &[u8] = if i == 0 || i == 2 { b"" } else { b"reserved opcode payload" };
            if i < 2 {
                cases.push(Case::fail(
                    id,
                    format!("reserved opcode {op}"),
                    writes(vec![fr(op, true, payload)]),
                    vec![],
                    &[P],
                ));
            } else {
                cases.push(
                    Case::fail(
                        id,
                        format!("text, reserved opcode {op}, ping"),
                        writes(around(fr(op, true, payload))),
                        vec![msg(b"Hello, world!")],
                        &[P],
                    )
                    .non_strict(vec![]),
                );
            }
        }
    }
}

fn section_5(cases: &mut Vec<Case>) {
    let (f1, f2) = (b"fragment1".as_slice(), b"fragment2".as_slice());
    cases.push(Case::fail(
        "5.1",
        "ping in 2 fragments",
        writes(vec![fr(OP_PING, false, f1), fr(OP_CONT, true, f2)]),
        vec![],
        &[P],
    ));
    cases.push(Case::fail(
        "5.2",
        "pong in 2 fragments",
        writes(vec![fr(OP_PONG, false, f1), fr(OP_CONT, true, f2)]),
        vec![],
        &[P],
    ));
    let two = || vec![fr(OP_TEXT, false, f1), fr(OP_CONT, true, f2)];
    let joined = msg(b"fragment1fragment2");
    cases.push(Case::echo("5.3", "text in 2 fragments", writes(two()), vec![joined.clone()]));
    cases.push(Case::echo("5.4", "text in 2 fragments, frame-wise", frame_wise(two()), vec![joined.clone()]));
    cases.push(Case::echo("5.5", "text in 2 fragments, octet-wise", octet_wise(two()), vec![joined.clone()]));
    let with_ping =
        || vec![fr(OP_TEXT, false, f1), fr(OP_PING, true, b"ping payload"), fr(OP_CONT, true, f2)];
    let ok = vec![pong(b"ping payload"), joined.clone()];
    cases.push(Case::echo("5.6", "text in 2 fragments, a ping between", writes(with_ping()), ok.clone()));
    cases.push(Case::echo("5.7", "the same, frame-wise", frame_wise(with_ping()), ok.clone()));
    cases.push(Case::echo("5.8", "the same, octet-wise", octet_wise(with_ping()), ok));
    for (base, fin) in [(9, true), (12, false)] {
        let frames = || vec![fr(OP_CONT, fin, b"non-continuation payload"), text(b"Hello, world!")];
        let what = format!("continuation (FIN = {fin}) with nothing to continue, then text");
        cases.push(Case::fail(format!("5.{base}"), what.clone(), writes(frames()), vec![], &[P]));
        cases.push(Case::fail(
            format!("5.{}", base + 1),
            format!("{what}, frame-wise"),
            frame_wise(frames()),
            vec![],
            &[P],
        ));
        cases.push(Case::fail(
            format!("5.{}", base + 2),
            format!("{what}, octet-wise"),
            octet_wise(frames()),
            vec![],
            &[P],
        ));
    }
    cases.push(
        Case::fail(
            "5.15",
            "text in 2 fragments, a continuation with nothing to continue, text",
            writes(vec![
                fr(OP_TEXT, false, f1),
                fr(OP_CONT, true, f2),
                fr(OP_CONT, false, b"fragment3"),
                text(b"fragment4"),
            ]),
            vec![joined],
            &[P],
        )
        .non_strict(vec![]),
    );
    for (id, fin) in [("5.16", false), ("5.17", true)] {
        let once = [fr(OP_CONT, fin, f1), fr(OP_TEXT, false, f2), fr(OP_CONT, true, b"fragment3")];
        cases.push(Case::fail(
            id,
            format!("twice: continuation (FIN = {fin}) with nothing to continue, text in 2 fragments"),
            writes([once.clone(), once].concat()),
            vec![],
            &[P],
        ));
    }
    cases.push(Case::fail(
        "5.18",
        "text in 2 fragments, both with the text opcode",
        writes(vec![fr(OP_TEXT, false, f1), fr(OP_TEXT, true, f2)]),
        vec![],
        &[P],
    ));
    for (id, sync) in [("5.19", false), ("5.20", true)] {
        let part = |frames: Vec<Vec<u8>>| if sync { frame_wise(frames) } else { writes(frames) };
        let mut steps =
            part(vec![fr(OP_TEXT, false, f1), fr(OP_CONT, false, f2), fr(OP_PING, true, b"pongme 1!")]);
        steps.push(Step::Pause);
        steps.extend(part(vec![
            fr(OP_CONT, false, b"fragment3"),
            fr(OP_CONT, false, b"fragment4"),
            fr(OP_PING, true, b"pongme 2!"),
            fr(OP_CONT, true, b"fragment5"),
        ]));
        cases.push(Case::echo(
            id,
            format!("text in 5 fragments, pings between, a pause{}", if sync { ", frame-wise" } else { "" }),
            steps,
            vec![
                pong(b"pongme 1!"),
                pong(b"pongme 2!"),
                msg(b"fragment1fragment2fragment3fragment4fragment5"),
            ],
        ));
    }
}

/// A byte sequence, and whether it is valid UTF-8.
type Utf8Sample = (bool, Vec<u8>);

/// Autobahn's "kosme" (Greek), and its invalid variants.
const KOSME: &[u8] = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5";

/// The UTF-8 decoder stress test (after Markus Kuhn's) as Autobahn groups
/// it for sections 6.5 to 6.23: whether each sequence is valid, and the
/// sequence.
fn utf8_sequences() -> Vec<(&'static str, Vec<Utf8Sample>)> {
    let v = |s: &[u8]| (true, s.to_vec());
    let x = |s: &[u8]| (false, s.to_vec());
    let mut groups = vec![(
        "valid UTF-8",
        vec![
            v(b"hello\x24world"),
            v(b"hello\xc2\xa2world"),
            v(b"hello\xe2\x82\xacworld"),
            v(b"hello\xf0\xa4\xad\xa2world"),
            v(KOSME),
        ],
    )];
    let prefixes = (1..=KOSME.len()).map(|i| (std::str::from_utf8(&KOSME[..i]).is_ok(), KOSME[..i].to_vec()));
    groups.push(("all prefixes of a valid multi-byte string", prefixes.collect()));
    groups.push((
        "first possible sequence of each length",
        vec![v(b"\x00"), v(b"\xc2\x80"), v(b"\xe0\xa0\x80"), v(b"\xf0\x90\x80\x80")],
    ));
    groups.push((
        "first possible 5- and 6-byte sequences",
        vec![x(b"\xf8\x88\x80\x80\x80"), x(b"\xfc\x84\x80\x80\x80\x80")],
    ));
    groups.push((
        "last possible sequence of each length",
        vec![v(b"\x7f"), v(b"\xdf\xbf"), v(b"\xef\xbf\xbf"), v(b"\xf4\x8f\xbf\xbf")],
    ));
    groups.push((
        "last possible 4-, 5- and 6-byte sequences (above U+10FFFF)",
        vec![x(b"\xf7\xbf\xbf\xbf"), x(b"\xfb\xbf\xbf\xbf\xbf"), x(b"\xfd\xbf\xbf\xbf\xbf\xbf")],
    ));
    groups.push((
        "other boundaries",
        vec![
            v(b"\xed\x9f\xbf"),
            v(b"\xee\x80\x80"),
            v(b"\xef\xbf\xbd"),
            v(b"\xf4\x8f\xbf\xbf"),
            x(b"\xf4\x90\x80\x80"),
        ],
    ));
    let mut continuation: Vec<_> = [
        &b"\x80"[..],
        b"\xbf",
        b"\x80\xbf",
        b"\x80\xbf\x80",
        b"\x80\xbf\x80\xbf",
        b"\x80\xbf\x80\xbf\x80",
        b"\x80\xbf\x80\xbf\x80\xbf",
    ]
    .iter()
    .map(|s| x(s))
    .collect();
    continuation.push(x(&(0x80..0xbf).collect::<Vec<u8>>()));
    groups.push(("unexpected continuation bytes", continuation));
    let lonely = [(0xc0u8, 0xdfu8), (0xe0, 0xef), (0xf0, 0xf7), (0xf8, 0xfb), (0xfc, 0xfd)]
        .iter()
        .map(|&(from, to)| x(&(from..to).flat_map(|b| [b, 0x20]).collect::<Vec<u8>>()))
        .collect();
    groups.push(("lonely start bytes", lonely));
    let missing: [&[u8]; 10] = [
        b"\xc0",
        b"\xe0\x80",
        b"\xf0\x80\x80",
        b"\xf8\x80\x80\x80",
        b"\xfc\x80\x80\x80\x80",
        b"\xdf",
        b"\xef\xbf",
        b"\xf7\xbf\xbf",
        b"\xfb\xbf\xbf\xbf",
        b"\xfd\xbf\xbf\xbf\xbf",
    ];
    groups
        .push(("sequences with the last continuation byte missing", missing.iter().map(|s| x(s)).collect()));
    groups.push(("incomplete sequences one after another", vec![x(&missing.concat())]));
    groups.push(("impossible bytes", vec![x(b"\xfe"), x(b"\xff"), x(b"\xfe\xfe\xff\xff")]));
    groups.push((
        "overlong ASCII",
        vec![
            x(b"\xc0\xaf"),
            x(b"\xe0\x80\xaf"),
            x(b"\xf0\x80\x80\xaf"),
            x(b"\xf8\x80\x80\x80\xaf"),
            x(b"\xfc\x80\x80\x80\x80\xaf"),
        ],
    ));
    groups.push((
        "maximum overlong sequences",
        vec![
            x(b"\xc1\xbf"),
            x(b"\xe0\x9f\xbf"),
            x(b"\xf0\x8f\xbf\xbf"),
            x(b"\xf8\x87\xbf\xbf\xbf"),
            x(b"\xfc\x83\xbf\xbf\xbf\xbf"),
        ],
    ));
    groups.push((
        "overlong NUL",
        vec![
            x(b"\xc0\x80"),
            x(b"\xe0\x80\x80"),
            x(b"\xf0\x80\x80\x80"),
            x(b"\xf8\x80\x80\x80\x80"),
            x(b"\xfc\x80\x80\x80\x80\x80"),
        ],
    ));
    let single: [&[u8]; 7] = [
        b"\xed\xa0\x80",
        b"\xed\xad\xbf",
        b"\xed\xae\x80",
        b"\xed\xaf\xbf",
        b"\xed\xb0\x80",
        b"\xed\xbe\x80",
        b"\xed\xbf\xbf",
    ];
    groups.push(("single UTF-16 surrogates", single.iter().map(|s| x(s)).collect()));
    let high: [&[u8]; 4] = [b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf"];
    let low: [&[u8]; 2] = [b"\xed\xb0\x80", b"\xed\xbf\xbf"];
    let paired = high.iter().flat_map(|h| low.iter().map(move |l| x(&[*h, *l].concat()))).collect();
    groups.push(("paired UTF-16 surrogates", paired));
    let mut nonchars = vec![v(b"\xef\xbf\xbe"), v(b"\xef\xbf\xbf")];
    for z1 in [0xf0u8, 0xf1, 0xf2, 0xf3, 0xf4] {
        for z2 in [0x8fu8, 0x9f, 0xaf, 0xbf] {
            if z1 == 0xf4 && z2 != 0x8f {
                continue; // above U+10FFFF
            }
            for z3 in [0xbeu8, 0xbf] {
                if z1 == 0xf0 && z2 == 0x8f {
                    continue; // overlong
                }
                nonchars.push(v(&[z1, z2, 0xbf, z3]));
            }
        }
    }
    groups.push(("non-characters (valid UTF-8)", nonchars));
    groups.push((
        "specials (valid UTF-8)",
        [
            &b"\xef\xbf\xb9"[..],
            b"\xef\xbf\xba",
            b"\xef\xbf\xbb",
            b"\xef\xbf\xbc",
            b"\xef\xbf\xbd",
            b"\xef\xbf\xbe",
            b"\xef\xbf\xbf",
        ]
        .iter()
        .map(|s| v(s))
        .collect(),
    ));
    groups
}

fn section_6(cases: &mut Vec<Case>) {
    let frags = |data: &[u8], size: usize| -> Vec<Vec<u8>> {
        let pieces: Vec<&[u8]> = data.chunks(size).collect();
        pieces
            .iter()
            .enumerate()
            .map(|(i, p)| fr(if i == 0 { OP_TEXT } else { OP_CONT }, i + 1 == pieces.len(), p))
            .collect()
    };
    cases.push(Case::echo("6.1.1", "empty text", writes(vec![text(b"")]), vec![msg(b"")]));
    cases.push(Case::echo(
        "6.1.2",
        "empty text in 3 empty fragments",
        writes(vec![fr(OP_TEXT, false, b""), fr(OP_CONT, false, b""), fr(OP_CONT, true, b"")]),
        vec![msg(b"")],
    ));
    cases.push(Case::echo(
        "6.1.3",
        "text in 3 fragments, first and last empty",
        writes(vec![
            fr(OP_TEXT, false, b""),
            fr(OP_CONT, false, b"middle frame payload"),
            fr(OP_CONT, true, b""),
        ]),
        vec![msg(b"middle frame payload")],
    ));
    let hello = "Hello-µ@ßöäüàá-UTF-8!!".as_bytes();
    let (h1, h2) = ("Hello-µ@ßöä".as_bytes(), "üàá-UTF-8!!".as_bytes());
    cases.push(Case::echo("6.2.1", "valid UTF-8 in one frame", writes(vec![text(hello)]), vec![msg(hello)]));
    cases.push(Case::echo(
        "6.2.2",
        "valid UTF-8 in 2 fragments split between characters",
        writes(vec![fr(OP_TEXT, false, h1), fr(OP_CONT, true, h2)]),
        vec![msg(hello)],
    ));
    cases.push(Case::echo(
        "6.2.3",
        "valid UTF-8 in fragments of 1 byte",
        writes(frags(hello, 1)),
        vec![msg(hello)],
    ));
    cases.push(Case::echo(
        "6.2.4",
        "kosme in fragments of 1 byte",
        writes(frags(KOSME, 1)),
        vec![msg(KOSME)],
    ));
    let invalid = [KOSME, b"\xed\xa0\x80", b"edited"].concat();
    cases.push(
        Case::fail("6.3.1", "invalid UTF-8 in one frame", writes(vec![text(&invalid)]), vec![], &[UTF8])
            .fatal(),
    );
    cases.push(
        Case::fail(
            "6.3.2",
            "invalid UTF-8 in fragments of 1 byte",
            writes(frags(&invalid, 1)),
            vec![],
            &[UTF8],
        )
        .fatal(),
    );
    // 6.4: the server should fail at the first byte that cannot be UTF-8
    // (OK), at the latest when the message ends (NON-STRICT).
    let payload = [KOSME, b"\xf4\x90\x80\x80", b"edited"].concat();
    let fail_fast = |id: &str, what: &str, steps: Vec<Step>| {
        Case::fail(id, what, steps, vec![Seen::Waited("A")], &[UTF8])
            .non_strict(vec![Seen::Waited("A"), Seen::Waited("B")])
            .fatal()
    };
    for (id, cut, mode) in
        [("6.4.1", 11, "frames"), ("6.4.2", 12, "frames"), ("6.4.3", 11, "chops"), ("6.4.4", 12, "chops")]
    {
        let parts: [&[u8]; 3] = if cut == 11 {
            [&payload[..11], &payload[11..15], &payload[15..]]
        } else {
            [&payload[..12], &payload[12..13], &payload[13..]]
        };
        let steps = if mode == "frames" {
            vec![
                Step::Write(fr(OP_TEXT, false, parts[0])),
                Step::Wait("A"),
                Step::Write(fr(OP_CONT, false, parts[1])),
                Step::Wait("B"),
                Step::Write(fr(OP_CONT, true, parts[2])),
            ]
        } else {
            // One frame, its bytes written in three parts.
            let whole = text(&payload);
            let head = whole.len() - payload.len();
            let (a, b) = (head + parts[0].len(), head + parts[0].len() + parts[1].len());
            vec![
                Step::Write(whole[..a].to_vec()),
                Step::Wait("A"),
                Step::Write(whole[a..b].to_vec()),
                Step::Wait("B"),
                Step::Write(whole[b..].to_vec()),
            ]
        };
        cases.push(fail_fast(id, &format!("invalid UTF-8 in 3 {mode}, bad from the second"), steps));
    }
    for (g, (group, sequences)) in utf8_sequences().into_iter().enumerate() {
        for (i, (valid, data)) in sequences.into_iter().enumerate() {
            let id = format!("6.{}.{}", g + 5, i + 1);
            let what = format!("{group}: {}", hex(&data));
            cases.push(if valid {
                Case::echo(id, what, writes(vec![text(&data)]), vec![msg(&data)])
            } else {
                Case::fail(id, what, writes(vec![text(&data)]), vec![], &[UTF8]).fatal()
            });
        }
    }
}

fn hex(data: &[u8]) -> String {
    data.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn section_7(cases: &mut Vec<Case>) {
    let normal = || close_frame(Some(1000), b"");
    let n = &[ws::CLOSE_NORMAL][..];
    let mut c = Case::echo(
        "7.1.1",
        "text, then close",
        vec![Step::Write(text(b"Hello World!")), Step::Close(normal())],
        vec![msg(b"Hello World!")],
    );
    c.close.codes = n.to_vec();
    cases.push(c);
    cases.push(Case::closing(
        "7.1.2",
        "two closes",
        vec![Step::Close(normal()), Step::Write(fr(OP_CLOSE, true, b""))],
        n,
        true,
    ));
    cases.push(Case::closing(
        "7.1.3",
        "ping after close",
        vec![Step::Close(normal()), Step::Write(fr(OP_PING, true, b""))],
        n,
        true,
    ));
    cases.push(Case::closing(
        "7.1.4",
        "text after close",
        vec![Step::Close(normal()), Step::Write(text(b"Hello World!"))],
        n,
        true,
    ));
    cases.push(Case::closing(
        "7.1.5",
        "fragment, close, last fragment",
        vec![
            Step::Write(fr(OP_TEXT, false, b"fragment1")),
            Step::Close(normal()),
            Step::Write(fr(OP_CONT, true, b"fragment2")),
        ],
        n,
        true,
    ));
    // Informational in Autobahn; webconf refuses the 256 KiB frame (1009).
    let big = b"BAsd7&jh23".repeat(256 * 1024 / 10 + 1)[..256 * 1024].to_vec();
    cases.push(
        Case::echo(
            "7.1.6",
            "256 KiB text, text, close, ping",
            vec![
                Step::Write([text(&big), text(b"Hello World!")].concat()),
                Step::Close(normal()),
                Step::Write(fr(OP_PING, true, b"")),
            ],
            vec![msg(b"Hello World!")],
        )
        .informational(),
    );
    cases.push(Case::closing(
        "7.3.1",
        "close without payload",
        vec![Step::Close(fr(OP_CLOSE, true, b""))],
        n,
        true,
    ));
    cases.push(Case::closing(
        "7.3.2",
        "close with a 1-byte payload",
        vec![Step::Close(fr(OP_CLOSE, true, b"*"))],
        &[P],
        false,
    ));
    cases.push(Case::closing("7.3.3", "close with a code", vec![Step::Close(normal())], n, true));
    cases.push(Case::closing(
        "7.3.4",
        "close with a code and reason",
        vec![Step::Close(close_frame(Some(1000), b"Hello World!"))],
        n,
        true,
    ));
    cases.push(Case::closing(
        "7.3.5",
        "close with a 123-byte reason",
        vec![Step::Close(close_frame(Some(1000), &[b'*'; 123]))],
        n,
        true,
    ));
    cases.push(Case::closing(
        "7.3.6",
        "close with a 124-byte reason (payload of 126)",
        vec![Step::Close(close_frame(Some(1000), &[b'*'; 124]))],
        &[P],
        false,
    ));
    let bad_reason = [KOSME, b"\xed\xa0\x80", b"edited"].concat();
    cases.push(Case::closing(
        "7.5.1",
        "close with a reason not UTF-8",
        vec![Step::Close(close_frame(Some(1000), &bad_reason))],
        &[P, UTF8],
        false,
    ));
    // 1012-1014: registered with IANA after RFC 6455 (webconf sends
    // 1012 and 1013 itself); Autobahn calls neither valid nor invalid.
    let valid =
        [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999, 1012, 1013, 1014];
    for (i, code) in valid.into_iter().enumerate() {
        let what = if (1012..=1014).contains(&code) { " (webconf: IANA-registered)" } else { "" };
        cases.push(Case::closing(
            format!("7.7.{}", i + 1),
            format!("close with valid code {code}{what}"),
            vec![Step::Close(close_frame(Some(code), b""))],
            &[ws::CLOSE_NORMAL, code],
            true,
        ));
    }
    let invalid = [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 1015];
    for (i, code) in invalid.into_iter().enumerate() {
        let what = if code == 1015 { " (webconf: reserved for TLS failures)" } else { "" };
        cases.push(Case::closing(
            format!("7.9.{}", i + 1),
            format!("close with invalid code {code}{what}"),
            vec![Step::Close(close_frame(Some(code), b""))],
            &[P],
            false,
        ));
    }
    for (i, code) in [5000u16, 65535].into_iter().enumerate() {
        cases.push(
            Case::closing(
                format!("7.13.{}", i + 1),
                format!("close with code {code}"),
                vec![Step::Close(close_frame(Some(code), b""))],
                &[ws::CLOSE_NORMAL, code, P],
                false,
            )
            .informational(),
        );
    }
}

fn section_9(cases: &mut Vec<Case>, cap: usize) {
    const K: usize = 1024;
    const M: usize = 1024 * 1024;
    // Over the cap the server must close with 1009 (webconf's limit; Autobahn
    // expects these echoed by a server without one).
    let expect = |id: String, what: String, steps: Vec<Step>, len: usize, binary: bool| {
        if len <= cap {
            let data = vec![if binary { 0xFE } else { b'*' }; len];
            Case::echo(id, what, steps, vec![if binary { bmsg(&data) } else { msg(&data) }])
        } else {
            Case::fail(id, format!("{what}: over the {cap}-byte cap"), steps, vec![], &[TOO_BIG])
        }
    };
    for (sub, binary) in [(1, false), (2, true)] {
        let (opcode, fill) = if binary { (OP_BINARY, 0xFE) } else { (OP_TEXT, b'*') };
        for (i, len) in [64 * K, 256 * K, M, 4 * M, 8 * M, 16 * M].into_iter().enumerate() {
            let steps = vec![Step::Stream { opcode, len, frag: len, fill, chop: 64 * K }];
            cases.push(expect(
                format!("9.{sub}.{}", i + 1),
                format!("message of {} KiB", len / K),
                steps,
                len,
                binary,
            ));
        }
    }
    for (sub, binary) in [(3, false), (4, true)] {
        let (opcode, fill) = if binary { (OP_BINARY, 0xFE) } else { (OP_TEXT, b'*') };
        for (i, frag) in [64, 256, K, 4 * K, 16 * K, 64 * K, 256 * K, M, 4 * M].into_iter().enumerate() {
            let steps = vec![Step::Stream { opcode, len: 4 * M, frag, fill, chop: 64 * K }];
            let what = format!("4 MiB message in fragments of {frag} bytes");
            cases.push(expect(format!("9.{sub}.{}", i + 1), what, steps, 4 * M, binary));
        }
    }
    for (sub, binary) in [(5, false), (6, true)] {
        let (opcode, fill) = if binary { (OP_BINARY, 0xFE) } else { (OP_TEXT, b'*') };
        for (i, chop) in [64, 128, 256, 512, K, 2 * K].into_iter().enumerate() {
            let steps = vec![Step::Stream { opcode, len: M, frag: M, fill, chop }];
            let what = format!("1 MiB message in writes of {chop} bytes");
            cases.push(expect(format!("9.{sub}.{}", i + 1), what, steps, M, binary));
        }
    }
    for (sub, binary) in [(7, false), (8, true)] {
        for (i, len) in [0, 16, 64, 256, K, 4 * K].into_iter().enumerate() {
            cases.push(Case::echo(
                format!("9.{sub}.{}", i + 1),
                format!("1000 round trips of {len} bytes"),
                vec![Step::RoundTrips { binary, len, count: 1000 }],
                vec![],
            ));
        }
    }
    // webconf: both sides of the cap, whole and fragmented.
    let mut i = 0;
    let mut id = || {
        i += 1;
        format!("9.10.{i}")
    };
    for binary in [false, true] {
        let (opcode, fill) = if binary { (OP_BINARY, 0xFE) } else { (OP_TEXT, b'*') };
        for (len, frag) in [(cap, cap), (cap + 1, cap + 1), (cap, 1000), (cap + 1, 1000)] {
            let steps = vec![Step::Stream { opcode, len, frag, fill, chop: 64 * K }];
            let what = format!("(webconf) message of {len} bytes in fragments of {frag}");
            cases.push(expect(id(), what, steps, len, binary));
        }
    }
    // Refused from its header alone: the server does not wait for the payload.
    let head = header(0x80 | OP_TEXT, M, next_mask());
    cases.push(Case::fail(
        id(),
        "(webconf) only the header of a 1 MiB frame",
        vec![Step::Write(head), Step::Wait("A")],
        vec![],
        &[TOO_BIG],
    ));
    // RFC 6455 5.2: a 64-bit length must have its top bit clear.
    let mut huge = vec![0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
    huge.extend_from_slice(&next_mask());
    cases.push(Case::fail(
        id(),
        "(webconf) a length with its top bit set",
        vec![Step::Write(huge)],
        vec![],
        &[P],
    ));
}

fn section_10(cases: &mut Vec<Case>) {
    let data = vec![b'*'; 65536];
    let frames: Vec<Vec<u8>> = data
        .chunks(1300)
        .enumerate()
        .map(|(i, p)| fr(if i == 0 { OP_TEXT } else { OP_CONT }, (i + 1) * 1300 >= data.len(), p))
        .collect();
    assert_eq!(frames.len(), 51, "50 full fragments and one of 536 bytes, as Autobahn counts");
    cases.push(Case::echo(
        "10.1.1",
        "65536 bytes of text in fragments of 1300",
        writes(frames),
        vec![msg(&data)],
    ));
}

// ---------------------------------------------------------------------------
// Running and reporting.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Ok,
    NonStrict,
    Failed,
    Informational,
}

struct Outcome {
    verdict: Verdict,
    detail: String,
}

/// Shortens what was seen for a report.
fn short(seen: Seen) -> String {
    match seen {
        Seen::Message { binary, data } if data.len() > 24 => {
            format!("{} of {} bytes", if binary { "binary" } else { "text" }, data.len())
        }
        other => format!("{other:?}"),
    }
}

async fn run(addr: std::net::SocketAddr, case: &Case) -> Outcome {
    let conn = match Conn::open(addr).await {
        Ok(conn) => conn,
        Err(e) => return Outcome { verdict: Verdict::Failed, detail: e },
    };
    for step in &case.steps {
        if !conn.step(step).await {
            break;
        }
    }
    conn.finish(case).await;
    let s = lock(&conn.state);
    // Autobahn's comparison: the events, then how the connection closed.
    let mut behaviour = if s.seen == case.ok {
        Verdict::Ok
    } else if case.non_strict.as_ref() == Some(&s.seen) {
        Verdict::NonStrict
    } else {
        Verdict::Failed
    };
    let clean = s.sent_close && s.server_close.is_some() && s.eof && !s.dropped_by_me;
    let code = s.server_close.flatten();
    let (close, close_verdict) = if case.close.by_client != s.closed_by_me {
        if case.close.wrong_end_fatal {
            behaviour = Verdict::Failed;
        }
        ("closed by the wrong end", Verdict::Failed)
    } else if case.close.clean && !clean {
        ("not closed cleanly", Verdict::Failed)
    } else if code.is_some_and(|c| !case.close.codes.contains(&c)) {
        ("wrong close code", Verdict::Failed)
    } else if s.dropped_by_me {
        ("the client had to drop the connection", Verdict::NonStrict)
    } else {
        ("closed properly", Verdict::Ok)
    };
    let verdict = if case.informational {
        Verdict::Informational
    } else if behaviour == Verdict::Failed || close_verdict == Verdict::Failed {
        Verdict::Failed
    } else if behaviour == Verdict::NonStrict || close_verdict == Verdict::NonStrict {
        Verdict::NonStrict
    } else {
        Verdict::Ok
    };
    let seen: Vec<String> = s.seen.iter().cloned().map(short).collect();
    let detail = format!(
        "saw [{}]; {close} (server code {code:?}, closed by {}, clean {clean})",
        seen.join(", "),
        if s.closed_by_me { "client" } else { "server" }
    );
    Outcome { verdict, detail }
}

fn catalogue(cap: usize) -> Vec<Case> {
    let mut cases = Vec::new();
    section_1(&mut cases);
    section_2(&mut cases);
    section_3(&mut cases);
    section_4(&mut cases);
    section_5(&mut cases);
    section_6(&mut cases);
    section_7(&mut cases);
    section_9(&mut cases, cap);
    section_10(&mut cases);
    cases
}

/// Autobahn's permessage-deflate sections, which need the extension
/// negotiated: 12.x (90 cases) and 13.x (126).
const NOT_APPLICABLE: [(&str, usize); 2] = [("12", 90), ("13", 126)];

/// Runs `cases` against the endpoint at `addr`, `parallel` at a time.
/// Returns the report (a table of Autobahn's verdicts per section, with
/// rows for `not_applicable` sections, then every case not plainly OK)
/// and the totals: OK, NON-STRICT, FAILED, INFORMATIONAL, n.a.
async fn run_all(
    title: &str,
    addr: std::net::SocketAddr,
    cases: Vec<Case>,
    parallel: usize,
    not_applicable: &[(&str, usize)],
) -> (String, [usize; 5]) {
    let started = Instant::now();
    let cases = Arc::new(cases);
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut runs = Vec::new();
    for i in 0..cases.len() {
        let (cases, gate) = (cases.clone(), gate.clone());
        runs.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("never closed");
            run(addr, &cases[i]).await
        }));
    }
    let mut outcomes = Vec::new();
    for r in runs {
        outcomes.push(r.await.expect("a case does not panic"));
    }
    let elapsed = started.elapsed();

    let mut sections: Vec<(String, [usize; 5])> = Vec::new();
    for (case, outcome) in cases.iter().zip(&outcomes) {
        let section = case.id.split('.').next().expect("ids have a section").to_owned();
        if sections.last().is_none_or(|(s, _)| *s != section) {
            sections.push((section.clone(), [0; 5]));
        }
        let counts = &mut sections.last_mut().expect("just pushed").1;
        counts[outcome.verdict as usize] += 1;
    }
    for (section, n) in not_applicable {
        let mut counts = [0; 5];
        counts[4] = *n;
        sections.push(((*section).to_owned(), counts));
    }
    let mut table = format!("{title}\nsection | cases | OK | NON-STRICT | FAILED | INFORMATIONAL | n.a.\n");
    let mut total = [0; 5];
    let row = |name: &str, c: &[usize; 5]| {
        let n: usize = c.iter().sum();
        format!(
            "{name:>7} | {n:>5} | {:>3} | {:>10} | {:>6} | {:>13} | {:>4}\n",
            c[0], c[1], c[2], c[3], c[4]
        )
    };
    for (section, counts) in &sections {
        table += &row(section, counts);
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
    }
    table += &row("all", &total);
    table += &format!("(run in {:.1} s)\n", elapsed.as_secs_f64());
    for (case, outcome) in cases.iter().zip(&outcomes) {
        if outcome.verdict != Verdict::Ok {
            table += &format!("{:?} {} {}: {}\n", outcome.verdict, case.id, case.what, outcome.detail);
        }
    }
    (table, total)
}

/// Autobahn's catalogue against the echo endpoint: every applicable case
/// passes strictly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_conformance() {
    let limits = Limits::default();
    let addr = echo_server(limits).await;
    let cases = catalogue(limits.max_message_bytes);
    let title = "WebSocket conformance (Autobahn fuzzingclient catalogue), echo endpoint";
    let (table, total) = run_all(title, addr, cases, 48, &NOT_APPLICABLE).await;
    println!("{table}");
    assert_eq!((total[1], total[2]), (0, 0), "every case should pass strictly:\n{table}");
}

/// Whether a case expects nothing back but control frames: then the real
/// `/ws` must behave as the echo endpoint does (it answers messages with
/// its own JSON instead of echoing them).
fn answers_only_with_control_frames(case: &Case) -> bool {
    let echoes = |seen: &[Seen]| seen.iter().any(|s| matches!(s, Seen::Message { .. }));
    !echoes(&case.ok)
        && !case.non_strict.as_deref().is_some_and(echoes)
        && !case.informational
        && !case.steps.iter().any(|s| matches!(s, Step::RoundTrips { .. }))
}

/// The same cases against production's own `/ws` ([`crate::serve`] with
/// the default config, as `webconf` runs), where they need no echo: pings,
/// every broken stream (1002, 1007 failing fast, 1009 from the header),
/// every close. So the echo endpoint's copy of `conn.rs`'s close handling
/// cannot drift from the real one unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_endpoint_fails_and_closes_alike() {
    let listener = crate::bind("127.0.0.1:0".parse().expect("an address")).expect("loopback has a free port");
    let addr = listener.local_addr().expect("a bound listener has an address");
    let config = crate::Config::default();
    let cases: Vec<Case> = catalogue(config.limits.max_message_bytes)
        .into_iter()
        .filter(answers_only_with_control_frames)
        .collect();
    let count = cases.len();
    tokio::spawn(crate::serve(listener, config, std::future::pending()));
    // Under the per-address caps (64 HTTP connections, 100 WebSockets).
    let title = "WebSocket conformance, production /ws (cases with no echo)";
    let (table, total) = run_all(title, addr, cases, 16, &[]).await;
    println!("{table}");
    assert!(count > 150, "{count} cases");
    assert_eq!((total[1], total[2]), (0, 0), "every case should pass strictly:\n{table}");
}
