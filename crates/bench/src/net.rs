//! Client connections, the three servers' ways of pairing clients, and the
//! small message helpers every scenario shares.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A client WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Which server is under test; decides how clients find their partner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// webconf: hello, join a room of two, signal by peer id.
    Webconf,
    /// The bare relay: pairs connections in order, forwards raw text.
    Bare,
    /// The seed relay: forwards every text message to every other client.
    Seed,
}

/// Read buffer for scenarios with one or two busy connections: big reads
/// keep the generator from being the bottleneck.
pub const BUSY_READ_BUFFER: usize = 64 * 1024;
/// Read buffer for scenarios with thousands of connections (webconf's own
/// size), so the generator's memory stays small at 50k connections.
pub const SMALL_READ_BUFFER: usize = 4096;

/// How many 127.1.x.y source addresses client sockets rotate over. One
/// source address has only ~28k ephemeral ports towards one server port,
/// and closed connections hold theirs in TIME_WAIT for a minute; 1,000
/// addresses leave room for every scenario in a run, back to back.
const SOURCES: u32 = 1000;
static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

/// Starts this process's rotation of source addresses somewhere else than
/// the previous run's, so its TIME_WAIT ports are not the first ones tried.
pub fn init_sources() {
    NEXT_SOURCE.store(std::process::id().wrapping_mul(7919) % SOURCES, Ordering::Relaxed);
}

fn next_source() -> Ipv4Addr {
    let k = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % SOURCES;
    // All of 127.0.0.0/8 is this host's loopback on Linux: no set-up needed.
    Ipv4Addr::new(127, 1, (k / 200) as u8, (k % 200 + 1) as u8)
}

/// Nanoseconds since the first call, on the monotonic clock: the generator
/// owns both ends of every message, so one clock stamps send and receive.
pub fn now_ns() -> u64 {
    instant_ns(Instant::now())
}

/// `t` on the [`now_ns`] clock (0 for anything before its first use).
pub fn instant_ns(t: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    t.saturating_duration_since(*EPOCH.get_or_init(Instant::now)).as_nanos() as u64
}

/// Opens a WebSocket to `addr` from the next source address.
pub async fn connect(addr: SocketAddr, read_buffer: usize) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    // Lets bind() take a port still in TIME_WAIT from an earlier run when
    // the address has no free one left; the kernel prefers free ports.
    socket.set_reuseaddr(true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    let source = SocketAddr::V4(SocketAddrV4::new(next_source(), 0));
    socket.bind(source).map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket.connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    // The same write buffering as webconf's server side.
    let config = WebSocketConfig::default().read_buffer_size(read_buffer).write_buffer_size(16 * 1024);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(format!("ws://{addr}/ws"), stream, Some(config))
            .await
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
    Ok(ws)
}

/// The number after `key` (e.g. `"t":`) in `text`.
pub fn num_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The string after `key` (e.g. `"k":"`) in `text`, up to the next quote.
pub fn str_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = &text[text.find(key)? + key.len()..];
    Some(&rest[..rest.find('"')?])
}

/// A `signal` message carrying `data` (JSON) to `to`.
pub fn signal(to: &str, data: &str) -> String {
    let mut s = String::with_capacity(data.len() + to.len() + 32);
    s.push_str(r#"{"type":"signal","to":""#);
    s.push_str(to);
    s.push_str(r#"","data":"#);
    s.push_str(data);
    s.push('}');
    s
}

/// The size of every timed payload (`data`), as the scenarios ask.
pub const PAYLOAD_BYTES: usize = 200;

/// A timed `signal` from client `from` to `to`: its `data` is exactly
/// [`PAYLOAD_BYTES`] of JSON holding the send time `t` and the sender `c`.
pub fn timed_signal(to: &str, from: usize, t: u64) -> String {
    const PAD: &str = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\
                       0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\
                       0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz";
    let head = format!(r#"{{"t":{t},"c":{from},"p":""#);
    let pad = PAYLOAD_BYTES.saturating_sub(head.len() + 2).min(PAD.len());
    let mut data = head;
    data.push_str(&PAD[..pad]);
    data.push_str("\"}");
    signal(to, &data)
}

/// Why a read ended without a text message.
pub fn describe_close(msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> String {
    match msg {
        None => "connection ended".to_owned(),
        Some(Err(e)) => format!("read error: {e}"),
        Some(Ok(Message::Close(Some(frame)))) => {
            format!("closed by the server: {} {}", u16::from(frame.code), frame.reason)
        }
        Some(Ok(Message::Close(None))) => "closed by the server".to_owned(),
        Some(Ok(other)) => format!("unexpected {other:?}"),
    }
}

/// Reads until a text message arrives, skipping control frames.
pub async fn next_text<S>(ws: &mut S, wait: Duration) -> Result<String, String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.map_err(|_| "timed out".to_owned())?;
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Binary(_))) => {}
            other => return Err(describe_close(other)),
        }
    }
}

/// One connected client that knows its partner.
#[derive(Debug)]
pub struct Peer {
    /// The connection.
    pub ws: Ws,
    /// This client's number in the scenario.
    pub idx: usize,
    /// Its partner's number.
    pub partner: usize,
    /// What to put in a signal's `to` to reach the partner (webconf's peer
    /// id; for the relays, which ignore it, the partner's number).
    pub to: String,
    /// TCP connect plus WebSocket upgrade.
    pub connect_time: Duration,
}

/// Pairs connected, or why not all of them.
#[derive(Debug, Default)]
pub struct Pairs {
    /// Partners, each pair once.
    pub pairs: Vec<(Peer, Peer)>,
    /// Clients that failed to connect or to find their partner.
    pub failed: usize,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

/// Connects `2 * n` clients, at most `concurrency` of them connecting at a
/// time, and pairs them the way the server does:
///
/// - webconf: clients `2k` and `2k+1` say hello and join room `{room}{k}`;
///   their peer ids come from `joined` / `peer-joined`.
/// - bare relay: it pairs connections in the order it accepts them, which
///   concurrent connects do not control; so each client says
///   `{"type":"hello",...,"w":idx}` and learns its partner from the first
///   message it gets.
/// - seed relay: no set-up (anything sent goes to everyone); `2k` and
///   `2k+1` are partners by convention and filter what they receive.
pub async fn connect_pairs(
    kind: Kind,
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
    read_buffer: usize,
    room: &str,
) -> Pairs {
    connect_pairs_across(kind, [addr, addr], n, concurrency, read_buffer, room).await
}

/// As [`connect_pairs`], with each call's first client (`2k`) connecting
/// to `addrs[0]` and its second (`2k+1`) to `addrs[1]`: two nodes of a
/// cluster, say.
pub async fn connect_pairs_across(
    kind: Kind,
    addrs: [SocketAddr; 2],
    n: usize,
    concurrency: usize,
    read_buffer: usize,
    room: &str,
) -> Pairs {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for idx in 0..2 * n {
        let gate = gate.clone();
        let room = format!("{room}{}", idx / 2);
        let addr = addrs[idx % 2];
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await.map_err(|_| "semaphore closed".to_owned())?;
            let t0 = Instant::now();
            let mut ws = connect(addr, read_buffer).await?;
            let connect_time = t0.elapsed();
            // The gate bounds connects in flight only: a client waiting for
            // its partner must not keep that partner from connecting.
            drop(permit);
            let (partner, to) =
                tokio::time::timeout(Duration::from_secs(30), introduce(kind, &mut ws, idx, &room))
                    .await
                    .map_err(|_| "timed out finding the partner".to_owned())??;
            Ok::<_, String>(Peer { ws, idx, partner, to, connect_time })
        });
    }
    let mut out = Pairs::default();
    let mut slots: Vec<Option<Peer>> = (0..2 * n).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        match done.map_err(|e| format!("task: {e}")).and_then(|r| r) {
            Ok(peer) => {
                let i = peer.idx;
                slots[i] = Some(peer);
            }
            Err(e) => {
                out.failed += 1;
                out.first_error.get_or_insert(e);
            }
        }
    }
    // Keep the pairs whose members agree they are partners.
    for i in 0..slots.len() {
        let Some(j) = slots[i].as_ref().map(|p| p.partner) else { continue };
        if j <= i || j >= slots.len() {
            continue;
        }
        if slots[j].as_ref().map(|p| p.partner) == Some(i) {
            if let (Some(a), Some(b)) = (slots[i].take(), slots[j].take()) {
                out.pairs.push((a, b));
            }
        }
    }
    let unpaired = slots.iter().filter(|s| s.is_some()).count();
    if unpaired > 0 {
        out.failed += unpaired;
        out.first_error.get_or_insert_with(|| format!("{unpaired} clients found no partner"));
    }
    out
}

/// Finds `idx`'s partner on a fresh connection; returns its number and the
/// `to` that reaches it.
async fn introduce(kind: Kind, ws: &mut Ws, idx: usize, room: &str) -> Result<(usize, String), String> {
    let wait = Duration::from_secs(30);
    match kind {
        Kind::Seed => Ok((idx ^ 1, (idx ^ 1).to_string())),
        Kind::Bare => {
            // The relay drops what arrives before the partner does, so a
            // hello may be lost: whoever hears the other's hello answers
            // with an ack, and either tells us who the partner is. (An ack
            // may then arrive after we are done: scenarios ignore text that
            // is not a timed message.)
            let hello = format!(r#"{{"type":"hello","version":3,"w":{idx}}}"#);
            ws.send(Message::text(hello)).await.map_err(|e| format!("send: {e}"))?;
            let text = next_text(ws, wait).await?;
            let partner = num_after(&text, r#""w":"#).ok_or_else(|| format!("not a hello: {text}"))?;
            if text.contains(r#""type":"hello""#) {
                let ack = format!(r#"{{"type":"ack","w":{idx}}}"#);
                ws.send(Message::text(ack)).await.map_err(|e| format!("send: {e}"))?;
            }
            Ok((partner as usize, partner.to_string()))
        }
        Kind::Webconf => {
            ws.feed(Message::text(r#"{"type":"hello","version":3}"#))
                .await
                .map_err(|e| format!("send: {e}"))?;
            let join = format!(r#"{{"type":"join","room":"{room}","name":"c{idx}"}}"#);
            ws.feed(Message::text(join)).await.map_err(|e| format!("send: {e}"))?;
            ws.flush().await.map_err(|e| format!("send: {e}"))?;
            webconf_partner(ws, wait).await
        }
    }
}

/// Reads webconf's answers to hello and join until the partner is known:
/// from `joined.peers` if it was there first, else from `peer-joined`.
/// Clients are named `c{idx}`, which gives the partner's number.
pub async fn webconf_partner<S>(ws: &mut S, wait: Duration) -> Result<(usize, String), String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let text = next_text(ws, wait).await?;
        let msg: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("bad JSON {e}: {text}"))?;
        let peer = match msg["type"].as_str() {
            Some("welcome") => continue,
            Some("joined") => match msg["peers"].get(0) {
                Some(p) => p.clone(),
                None => continue,
            },
            Some("peer-joined") => msg["peer"].clone(),
            _ => return Err(format!("unexpected answer: {text}")),
        };
        let id = peer["id"].as_str().ok_or_else(|| format!("no peer id: {text}"))?;
        let name = peer["name"].as_str().unwrap_or_default();
        let partner =
            name.strip_prefix('c').and_then(|n| n.parse().ok()).ok_or_else(|| format!("name {name}"))?;
        return Ok((partner, id.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_payload_is_exactly_the_payload_size_and_parses_back() {
        let msg = timed_signal("00000000000000ff", 12, 123_456_789);
        let v: serde_json::Value = serde_json::from_str(&msg).expect("valid JSON");
        assert_eq!(v["data"].to_string().len(), PAYLOAD_BYTES);
        // The relayed form (webconf rewrites the envelope) still has them.
        let relayed = format!(r#"{{"type":"signal","from":"ab","data":{}}}"#, v["data"]);
        assert_eq!(num_after(&relayed, r#""t":"#), Some(123_456_789));
        assert_eq!(num_after(&relayed, r#""c":"#), Some(12));
        assert_eq!(str_after(r#"{"k":"offer","s":3}"#, r#""k":""#), Some("offer"));
        assert_eq!(num_after(r#"{"type":"signal","s":3}"#, r#""s":"#), Some(3));
    }
}
