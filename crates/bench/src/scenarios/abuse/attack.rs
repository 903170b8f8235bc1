//! The attacker: one address (or many in 127.0.0.0/8) opening as many of
//! each hostile kind of connection as the server lets it, and opening them
//! again whenever the server closes them, until the attack ends.
//!
//! Every hostile connection is a task that loops: connect from its source
//! address, misbehave, and when the server closes it, count whether that
//! was at once (refused or shed) or later (a deadline), wait, and start
//! again. Counts are bounded by the plan; nothing here runs past `stop`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::turnc::{Credential, TurnClient, TurnError};

/// A connection the server ends within this long of its opening was
/// refused or shed; later, it hit a deadline.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);
/// Connects in flight per kind, so the attack is a flood of connections
/// held, not a SYN flood.
const CONNECTS_IN_FLIGHT: usize = 128;

/// The attacker's source addresses: 127.66.x.y, one or many.
#[derive(Debug)]
pub struct Sources {
    addrs: Vec<Ipv4Addr>,
    next: AtomicUsize,
}

impl Sources {
    /// `n` addresses (at least one), none of them the legitimate clients'
    /// (127.1.x.y) or the server's (127.0.0.1).
    pub fn new(n: usize) -> Sources {
        let addrs =
            (0..n.max(1)).map(|i| Ipv4Addr::new(127, 66, (i / 250) as u8, (i % 250 + 1) as u8)).collect();
        Sources { addrs, next: AtomicUsize::new(0) }
    }

    /// The next address, round robin.
    pub fn next(&self) -> IpAddr {
        IpAddr::V4(self.addrs[self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len()])
    }
}

/// What one hostile kind achieved, counted by the attacker.
#[derive(Debug, Default)]
pub struct Tally {
    open: AtomicI64,
    peak: AtomicI64,
    opened: AtomicU64,
    connect_failed: AtomicU64,
    refused: AtomicU64,
    deadline: AtomicU64,
}

impl Tally {
    fn up(&self) {
        let now = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn down(&self, held: bool, lived: Duration, by_server: bool) {
        if held {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        if by_server {
            let counter = if lived < REFUSED_WITHIN { &self.refused } else { &self.deadline };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (most held at once, opened, closed at once by the server, closed
    /// later by the server, connects that failed).
    pub fn read(&self) -> [u64; 5] {
        [
            self.peak.load(Ordering::Relaxed).max(0) as u64,
            self.opened.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.deadline.load(Ordering::Relaxed),
            self.connect_failed.load(Ordering::Relaxed),
        ]
    }
}

/// The hostile kinds of TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpKind {
    /// Connects to the HTTP port and sends nothing.
    IdleHttp,
    /// Sends half a request head, then a byte every 2 s (slowloris).
    HalfHttp,
    /// Upgrades to a WebSocket and never says `hello`.
    NoHelloWs,
    /// Connects to TURN's TCP port and sends nothing.
    IdleTurnTcp,
}

impl TcpKind {
    /// Its name in the results.
    pub fn key(self) -> &'static str {
        match self {
            TcpKind::IdleHttp => "idle_http",
            TcpKind::HalfHttp => "half_http",
            TcpKind::NoHelloWs => "nohello_ws",
            TcpKind::IdleTurnTcp => "idle_turn_tcp",
        }
    }
}

pub(super) async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

/// Keeps `count` connections of `kind` to `to` open until `stop`.
pub fn spawn_tcp(
    tasks: &mut JoinSet<()>,
    kind: TcpKind,
    to: SocketAddr,
    count: usize,
    sources: &Arc<Sources>,
    stop: &CancellationToken,
) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let gate = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    for _ in 0..count {
        let (tally, gate, sources, stop) = (tally.clone(), gate.clone(), sources.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.is_cancelled() {
                let source = sources.next();
                let permit = tokio::select! {
                    p = gate.acquire() => p,
                    () = stop.cancelled() => return,
                };
                let connected = tokio::select! {
                    c = connect_from(source, to) => c,
                    () = stop.cancelled() => return,
                };
                drop(permit);
                let pause = match connected {
                    Err(_) => {
                        tally.connect_failed.fetch_add(1, Ordering::Relaxed);
                        Duration::from_secs(1)
                    }
                    Ok(mut tcp) => {
                        tally.opened.fetch_add(1, Ordering::Relaxed);
                        let opened = Instant::now();
                        let fut = misbehave(kind, &mut tcp);
                        tokio::pin!(fut);
                        // Held: still open a second later (the kernel
                        // completes a connect the server then refuses).
                        let mut held = false;
                        let by_server = tokio::select! {
                            () = &mut fut => true,
                            () = tokio::time::sleep(REFUSED_WITHIN) => {
                                held = true;
                                tally.up();
                                tokio::select! {
                                    () = &mut fut => true,
                                    () = stop.cancelled() => false,
                                }
                            }
                            () = stop.cancelled() => false,
                        };
                        let lived = opened.elapsed();
                        tally.down(held, lived, by_server);
                        // Refused: try again a second later (a steady
                        // pressure on the cap, not a busy loop).
                        if lived < REFUSED_WITHIN {
                            Duration::from_secs(1)
                        } else {
                            Duration::from_millis(50)
                        }
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
    }
    tally
}

/// Does `kind`'s misbehaviour on `tcp` until the server closes it.
async fn misbehave(kind: TcpKind, tcp: &mut TcpStream) {
    let mut buf = [0u8; 512];
    match kind {
        TcpKind::IdleHttp | TcpKind::IdleTurnTcp => {}
        TcpKind::HalfHttp => {
            if tcp.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow").await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    r = tcp.read(&mut buf) => if !matches!(r, Ok(n) if n > 0) { return },
                    () = tokio::time::sleep(Duration::from_secs(2)) => {
                        if tcp.write_all(b"w").await.is_err() { return }
                    }
                }
            }
        }
        TcpKind::NoHelloWs => {
            let head = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
            if tcp.write_all(head.as_bytes()).await.is_err() {
                return;
            }
        }
    }
    // Read (and drop) whatever comes until the server closes.
    while let Ok(n) = tcp.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// A webconf client that joined a room from an attacker's address, kept
/// open (reading) until `stop`.
async fn join_from(
    source: IpAddr,
    http: SocketAddr,
    room: &str,
    name: &str,
) -> Result<(crate::net::Ws, serde_json::Value), String> {
    let tcp = connect_from(source, http).await.map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{http}/ws"), tcp)
        .await
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    ws.send(Message::text(r#"{"type":"hello","version":3}"#)).await.map_err(|e| format!("send: {e}"))?;
    let join = format!(r#"{{"type":"join","room":"{room}","name":"{name}"}}"#);
    ws.send(Message::text(join)).await.map_err(|e| format!("send: {e}"))?;
    loop {
        let text = crate::net::next_text(&mut ws, Duration::from_secs(10)).await?;
        let msg: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("bad JSON {e}"))?;
        match msg["type"].as_str() {
            Some("joined") => return Ok((ws, msg)),
            Some("welcome" | "peer-joined" | "chat" | "peer-media") => {}
            _ => return Err(format!("join refused: {text}")),
        }
    }
}

/// The TURN credential in a `joined` message's `ice_servers`.
pub fn credential_of(joined: &serde_json::Value) -> Option<Credential> {
    joined["ice_servers"].as_array()?.iter().find_map(|s| {
        Some(Credential {
            username: s["username"].as_str()?.to_owned(),
            password: s["credential"].as_str()?.to_owned(),
        })
    })
}

/// Joined clients from the attacker's addresses that hold their seats (so
/// the TURN credentials webconf gave them stay good) until `stop`.
pub async fn credential_holders(
    tasks: &mut JoinSet<()>,
    http: SocketAddr,
    count: usize,
    sources: &Sources,
    stop: &CancellationToken,
) -> (Vec<Credential>, Option<String>) {
    let mut creds = Vec::new();
    let mut error = None;
    for k in 0..count {
        match join_from(sources.next(), http, &format!("atk-turn-{}", k / 20), &format!("t{k}")).await {
            Ok((mut ws, joined)) => {
                if let Some(c) = credential_of(&joined) {
                    creds.push(c);
                }
                let stop = stop.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        () = async { while let Some(Ok(_)) = ws.next().await {} } => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    (creds, error)
}

/// What the TURN floods achieved.
#[derive(Debug, Default)]
pub struct TurnTally {
    /// Allocations made.
    pub allocations: AtomicU64,
    /// Allocations refused, by the answer (`code` → count), and unanswered.
    pub alloc_refused: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Permissions installed.
    pub permissions: AtomicU64,
    /// Channels bound.
    pub channels: AtomicU64,
    /// CreatePermission / ChannelBind requests refused, by answer.
    pub perm_refused: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

fn bump(map: &std::sync::Mutex<std::collections::BTreeMap<String, u64>>, e: &TurnError) {
    let key = match e {
        TurnError::Code(c) => c.to_string(),
        TurnError::NoAnswer => "no answer".to_owned(),
        TurnError::Other(_) => "other".to_owned(),
    };
    *map.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default() += 1;
}

/// `count` allocations (one UDP socket each, credentials shared ten to a
/// credential, as a peer's quota allows), each then filled with
/// permissions (`perms` addresses, eight to a request) and channels until
/// the server refuses more. Held until `stop`.
#[allow(clippy::too_many_arguments)]
pub fn spawn_turn(
    tasks: &mut JoinSet<()>,
    turn: SocketAddr,
    count: usize,
    perms: usize,
    channels: usize,
    creds: &[Credential],
    sources: &Arc<Sources>,
    stop: &CancellationToken,
) -> Arc<TurnTally> {
    let tally = Arc::new(TurnTally::default());
    if creds.is_empty() {
        return tally;
    }
    let gate = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    for k in 0..count {
        let cred = creds[(k / 10) % creds.len()].clone();
        let (tally, gate, source, stop) = (tally.clone(), gate.clone(), sources.next(), stop.clone());
        tasks.spawn(async move {
            let work = async {
                let permit = gate.acquire().await;
                let Ok(mut client) = TurnClient::bind(source, turn, cred).await else { return };
                match client.allocate().await {
                    Ok(_) => tally.allocations.fetch_add(1, Ordering::Relaxed),
                    Err(e) => return bump(&tally.alloc_refused, &e),
                };
                drop(permit);
                // Public addresses nobody answers from (nothing is sent to
                // them: a permission only opens the door).
                let peer =
                    |i: usize| SocketAddr::from(([1, (k % 250) as u8, (i / 250) as u8, (i % 250) as u8], 9));
                client.tries = 3;
                for batch in 0..perms.div_ceil(8) {
                    let addrs: Vec<SocketAddr> = (batch * 8..(batch * 8 + 8).min(perms)).map(peer).collect();
                    match client.create_permission(&addrs).await {
                        Ok(()) => tally.permissions.fetch_add(addrs.len() as u64, Ordering::Relaxed),
                        Err(e) => {
                            bump(&tally.perm_refused, &e);
                            break;
                        }
                    };
                }
                for c in 0..channels {
                    match client.channel_bind(0x4000 + c as u16, peer(c)).await {
                        Ok(()) => tally.channels.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            bump(&tally.perm_refused, &e);
                            break;
                        }
                    };
                }
                // Hold the allocation (and its socket) until the end.
                std::future::pending::<()>().await;
            };
            tokio::select! {
                () = work => {}
                () = stop.cancelled() => {}
            }
        });
    }
    tally
}

/// What the chat flood did.
#[derive(Debug, Default)]
pub struct ChatTally {
    /// Flooders that joined.
    pub joined: AtomicU64,
    /// Chat messages written.
    pub sent: AtomicU64,
    /// Bytes the flooders read back (every flooder's chat comes to all).
    pub read_bytes: AtomicU64,
    /// Flooders the server closed.
    pub closed: AtomicU64,
}

/// `count` joined clients in rooms of `room_size`, each writing
/// `per_sec` chat messages of 1,000 characters a second (above the rate
/// limit, so it is the limit that holds them) and reading what comes.
pub async fn spawn_chat(
    tasks: &mut JoinSet<()>,
    http: SocketAddr,
    count: usize,
    room_size: usize,
    per_sec: u32,
    sources: &Sources,
    stop: &CancellationToken,
) -> (Arc<ChatTally>, Option<String>) {
    let tally = Arc::new(ChatTally::default());
    let mut error = None;
    let text: String = "flood ".repeat(200).chars().take(1000).collect();
    for k in 0..count {
        let joined =
            join_from(sources.next(), http, &format!("atk-chat-{}", k / room_size.max(1)), &format!("f{k}"))
                .await;
        let ws = match joined {
            Ok((ws, _)) => ws,
            Err(e) => {
                error.get_or_insert(e);
                continue;
            }
        };
        tally.joined.fetch_add(1, Ordering::Relaxed);
        let frame = masked_text(&format!(r#"{{"type":"chat","text":"{text}"}}"#), k as u32 ^ 0x5a5a_1234);
        let (tally, stop) = (tally.clone(), stop.clone());
        let (mut rd, mut wr) = ws.into_inner().into_split();
        tasks.spawn(async move {
            let reader = async {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = rd.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tally.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            };
            let writer = async {
                let mut tick =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_sec.max(1))));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    if wr.write_all(&frame).await.is_err() {
                        break;
                    }
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                }
                // Stay open while the reader drains.
                std::future::pending::<()>().await;
            };
            tokio::select! {
                () = reader => { tally.closed.fetch_add(1, Ordering::Relaxed); }
                () = writer => {}
                () = stop.cancelled() => {}
            }
        });
    }
    (tally, error)
}

/// A masked client text frame (RFC 6455 section 5.2) holding `text`.
fn masked_text(text: &str, key: u32) -> Vec<u8> {
    let mask = key.to_be_bytes();
    let len = text.len();
    let mut out = Vec::with_capacity(len + 8);
    out.push(0x81);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}
