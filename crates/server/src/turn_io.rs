//! The built-in STUN/TURN server's IO: a UDP socket and a TCP listener on
//! the TURN port, one UDP socket per allocation for relaying, and one task
//! that owns the sans-IO [`turn::Server`] and carries out what it says.
//!
//! Every queue here carries packets, and an IP network may drop packets:
//! when a queue is full the packet is dropped (and counted), so a flood can
//! cost bandwidth but never unbounded memory, and never blocks the others.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use turn::{Family, FiveTuple, Input, Output, Transport};

use crate::limits::ByteBudget;
use crate::metrics::Metrics;

/// Events waiting for the TURN task, and the bytes they may carry in all.
/// Beyond either, packets are dropped.
const INBOX: usize = 8192;
const INBOX_BYTES: usize = 4 * 1024 * 1024;
/// Frames waiting to be written to one TCP client, and their bytes (one
/// frame always fits, however big).
const TCP_QUEUE: usize = 256;
const TCP_QUEUE_BYTES: usize = 64 * 1024;
/// Largest datagram or frame handled (a UDP datagram's maximum).
const MAX_PACKET: usize = 65_535;
/// Attempts at finding a free relay port before giving up (508).
const PORT_TRIES: usize = 64;

/// How the built-in TURN server is set up.
#[derive(Clone, Debug)]
pub struct TurnIo {
    /// UDP and TCP address of the STUN/TURN service.
    pub listen: SocketAddr,
    /// Address relay sockets are bound to.
    pub relay_bind: IpAddr,
    /// Address clients and peers see for relays (a NAT's public address,
    /// or the same as `relay_bind`).
    pub public_ip: IpAddr,
    /// Ports relay sockets use.
    pub relay_ports: RangeInclusive<u16>,
    /// The state machine's settings.
    pub core: turn::Config,
    /// Most TCP connections to the TURN port in all (also at most an
    /// sixteenth of the open-files limit); 0 means only that.
    pub tcp_max_connections: usize,
    /// Most TCP connections to the TURN port from one IPv4 address or IPv6
    /// /64; 0 means no limit.
    pub tcp_max_connections_per_ip: usize,
    /// A TCP client whose first whole STUN message has not come this long
    /// after it connected is dropped.
    pub tcp_first_message_timeout: Duration,
}

impl TurnIo {
    /// Default caps on TCP clients: 1024 in all, 64 from one address (a
    /// browser opens one per allocation, and a user has at most 10), the
    /// first message within 5 s (a TURN client sends it at once).
    pub const TCP_DEFAULTS: (usize, usize, Duration) = (1024, 64, Duration::from_secs(5));
}

/// Revocations waiting to be carried out, sent and delayed: at most this
/// many (past it they are carried out at once).
const REVOCATIONS: usize = 16_384;

/// Tells the TURN task that a user's credentials are revoked (see
/// [`turn::Config::users`]), at once or after a grace period. Never waits:
/// a revocation lost to a full inbox still takes effect at the allocation's
/// next refresh, which the users check refuses.
#[derive(Clone, Debug)]
pub(crate) struct Revoker(mpsc::Sender<(Instant, String)>);

impl Revoker {
    pub(crate) fn revoke(&self, user: String, after: Duration) {
        let _ = self.0.try_send((Instant::now() + after, user));
    }
}

enum Event {
    FromClient { from: FiveTuple, data: Vec<u8> },
    FromPeer { relay: SocketAddr, peer: SocketAddr, data: Vec<u8> },
    TcpOpened { client: FiveTuple, frames: mpsc::Sender<Vec<u8>>, budget: ByteBudget },
    ClientGone { client: FiveTuple },
}

/// Binds the TURN sockets now (so a busy port is reported at start-up), then
/// serves until `shutdown` is cancelled.
pub(crate) async fn start(
    config: TurnIo,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> io::Result<(tokio::task::JoinHandle<()>, Revoker)> {
    let udp = Arc::new(UdpSocket::bind(config.listen).await?);
    let tcp = crate::bind(config.listen)?;
    let (tx, rx) = mpsc::channel(INBOX);
    let tx = Inbox { tx, budget: ByteBudget::new(INBOX_BYTES) };
    let local = udp.local_addr()?;
    tokio::spawn(udp_reader(udp.clone(), local, tx.clone(), metrics.clone(), shutdown.clone()));
    let gate = crate::accept::Gate::new(
        crate::metrics::Listener::Turn,
        config.tcp_max_connections,
        Some(config.tcp_max_connections_per_ip),
        metrics.clone(),
    );
    let first_message = config.tcp_first_message_timeout;
    tokio::spawn(tcp_acceptor(tcp, gate, first_message, tx.clone(), metrics.clone(), shutdown.clone()));
    let mut core = config.core.clone();
    core.max_allocations =
        crate::accept::descriptor_share(crate::accept::Holder::Relays, core.max_allocations);
    core.own_ips.extend(own_ips(&config));
    core.own_ports.push(local.port()..=local.port());
    core.own_ports.push(config.relay_ports.clone());
    let (revoker, revocations) = mpsc::channel(REVOCATIONS);
    let task = Task {
        core: turn::Server::new(core),
        config,
        udp,
        relays: HashMap::new(),
        tcp: HashMap::new(),
        events: tx,
        revocations: std::collections::VecDeque::new(),
        metrics,
    };
    Ok((tokio::spawn(task.run(rx, revocations, shutdown)), Revoker(revoker)))
}

/// This machine's addresses the TURN server must not relay to besides the
/// ones its configuration names: where it listens and relays (every
/// interface's, loopback included, when that is the unspecified address),
/// and its public address.
fn own_ips(config: &TurnIo) -> Vec<IpAddr> {
    let mut ips = vec![config.public_ip, config.listen.ip(), config.relay_bind];
    if ips.iter().any(IpAddr::is_unspecified) {
        ips.extend(crate::interfaces::addresses());
        ips.extend([IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    }
    ips.retain(|ip| !ip.is_unspecified());
    ips.sort_unstable();
    ips.dedup();
    ips
}

async fn udp_reader(
    udp: Arc<UdpSocket>,
    local: SocketAddr,
    tx: Inbox,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let (n, from) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = udp.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors surface here on some systems: not fatal.
                Err(_) => continue,
            },
        };
        let from = FiveTuple { transport: Transport::Udp, client: from, server: local };
        tx.offer(Event::FromClient { from, data: buf[..n].to_vec() }, &metrics);
    }
}

/// The TURN task's inbox: bounded in events and in the bytes they carry.
#[derive(Clone)]
struct Inbox {
    tx: mpsc::Sender<Event>,
    /// Bytes of packets in `tx`; the task gives them back as it takes them.
    budget: ByteBudget,
}

impl Inbox {
    /// Queues a packet for the TURN task, or drops it (counted) when the
    /// inbox is full, by count or by bytes.
    fn offer(&self, event: Event, metrics: &Metrics) {
        let len = event.bytes();
        if !self.budget.try_take(len) {
            metrics.turn_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(e) = self.tx.try_send(event) {
            self.budget.give(len);
            if let TrySendError::Full(_) = e {
                metrics.turn_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues a control event (a TCP client came or went), waiting for room:
    /// these carry no packet and must not be lost.
    async fn send(&self, event: Event) -> Result<(), mpsc::error::SendError<Event>> {
        self.tx.send(event).await
    }
}

impl Event {
    /// The packet bytes this event holds in the inbox.
    fn bytes(&self) -> usize {
        match self {
            Event::FromClient { data, .. } | Event::FromPeer { data, .. } => data.len(),
            Event::TcpOpened { .. } | Event::ClientGone { .. } => 0,
        }
    }
}

async fn tcp_acceptor(
    tcp: TcpListener,
    mut gate: crate::accept::Gate,
    first_message: Duration,
    tx: Inbox,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, from, permit) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = gate.accept(&tcp) => accepted,
        };
        let Ok(local) = stream.local_addr() else { continue };
        let client = FiveTuple { transport: Transport::Tcp, client: from, server: local };
        let (tx, metrics, shutdown) = (tx.clone(), metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            tcp_client(stream, client, first_message, tx, metrics, shutdown).await;
        });
    }
}

/// One TURN-over-TCP client: reads frames in, writes frames out. Its first
/// whole message must come within `first_message`; after that, silence
/// ends it after 10 minutes (the longest a refreshing client stays quiet).
async fn tcp_client(
    stream: TcpStream,
    client: FiveTuple,
    first_message: Duration,
    tx: Inbox,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let first_deadline = tokio::time::Instant::now() + first_message;
    let (mut reader, mut writer) = stream.into_split();
    let (frames_tx, mut frames) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
    let budget = ByteBudget::new(TCP_QUEUE_BYTES);
    if tx.send(Event::TcpOpened { client, frames: frames_tx, budget: budget.clone() }).await.is_err() {
        return;
    }
    let write = async move {
        while let Some(frame) = frames.recv().await {
            budget.give(frame.len());
            if tokio::time::timeout(Duration::from_secs(10), writer.write_all(&frame))
                .await
                .map_or(true, |r| r.is_err())
            {
                return;
            }
        }
    };
    let read = async {
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        let mut heard = false;
        loop {
            // Every frame this stream still holds, in order.
            while let Some(len) = buf.get(..4).and_then(turn::stun::stream_frame_len) {
                if len > MAX_PACKET {
                    return;
                }
                if buf.len() < len {
                    break;
                }
                let frame: Vec<u8> = buf.drain(..len).collect();
                heard = true;
                tx.offer(Event::FromClient { from: client, data: frame }, &metrics);
            }
            if buf.len() >= 4 && turn::stun::stream_frame_len(&buf[..4]).is_none() {
                return; // Not STUN/TURN: drop the connection.
            }
            // A client silent for 10 minutes has no allocation left to keep.
            let deadline =
                if heard { tokio::time::Instant::now() + Duration::from_secs(600) } else { first_deadline };
            match tokio::time::timeout_at(deadline, reader.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Err(_) => {
                    if !heard {
                        metrics.shed(crate::metrics::Listener::Turn, crate::metrics::Shed::Deadline);
                    }
                    return;
                }
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = read => {}
        () = write => {}
    }
    let _ = tx.send(Event::ClientGone { client }).await;
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: tokio::task::JoinHandle<()>,
}

struct Task {
    core: turn::Server,
    config: TurnIo,
    udp: Arc<UdpSocket>,
    /// Relay sockets by advertised address.
    relays: HashMap<SocketAddr, Relay>,
    /// TCP clients' outbound queues, and the bytes in each.
    tcp: HashMap<FiveTuple, (mpsc::Sender<Vec<u8>>, ByteBudget)>,
    events: Inbox,
    /// Revocations waiting for their time, earliest first (all wait the
    /// same grace), at most [`REVOCATIONS`].
    revocations: std::collections::VecDeque<(Instant, String)>,
    metrics: Arc<Metrics>,
}

impl Task {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        mut revoked: mpsc::Receiver<(Instant, String)>,
        shutdown: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(64);
        loop {
            // The core's next deadline (an allocation, permission or channel
            // ending) or a revocation's; with none, only events wake us.
            let deadline = match (self.core.poll_timeout(), self.revocations.front()) {
                (Some(a), Some((b, _))) => Some(a.min(*b)),
                (a, b) => a.or(b.map(|(at, _)| *at)),
            };
            let timeout = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = timeout => {
                    let now = Instant::now();
                    self.core.handle_timeout(now);
                    while self.revocations.front().is_some_and(|(at, _)| *at <= now) {
                        if let Some((_, user)) = self.revocations.pop_front() {
                            self.revoke(&user);
                        }
                    }
                    self.drain().await;
                }
                Some((at, user)) = revoked.recv() => {
                    if at <= Instant::now() || self.revocations.len() >= REVOCATIONS {
                        self.revoke(&user);
                        self.drain().await;
                    } else {
                        self.revocations.push_back((at, user));
                    }
                }
                n = rx.recv_many(&mut batch, 64) => {
                    if n == 0 {
                        break;
                    }
                    for event in batch.drain(..) {
                        self.handle(event).await;
                    }
                }
            }
        }
        for (_, relay) in self.relays.drain() {
            relay.reader.abort();
        }
    }

    async fn handle(&mut self, event: Event) {
        let now = Instant::now();
        let unix = crate::unix_now().as_secs();
        self.events.budget.give(event.bytes());
        match event {
            Event::FromClient { from, data } => {
                self.core.handle_input(now, unix, Input::FromClient { from, data: &data });
            }
            Event::FromPeer { relay, peer, data } => {
                self.core.handle_input(now, unix, Input::FromPeer { relay, peer, data: &data });
            }
            Event::TcpOpened { client, frames, budget } => {
                self.tcp.insert(client, (frames, budget));
            }
            Event::ClientGone { client } => {
                self.tcp.remove(&client);
                self.core.handle_input(now, unix, Input::ClientGone { client });
            }
        }
        self.drain().await;
    }

    fn revoke(&mut self, user: &str) {
        let unix = crate::unix_now().as_secs();
        self.core.handle_input(Instant::now(), unix, Input::Revoke { user });
    }

    /// Carries out everything the core asked for.
    async fn drain(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::ToClient { to, data } => match to.transport {
                    Transport::Udp => {
                        let _ = self.udp.try_send_to(&data, to.client);
                    }
                    Transport::Tcp => {
                        // A closed queue (the client just left) is not a full one.
                        if let Some((q, budget)) = self.tcp.get(&to) {
                            let len = data.len();
                            if !budget.try_take(len) {
                                self.metrics.turn_dropped.fetch_add(1, Ordering::Relaxed);
                            } else if let Err(e) = q.try_send(data) {
                                budget.give(len);
                                if let TrySendError::Full(_) = e {
                                    self.metrics.turn_dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                },
                Output::ToPeer { relay, peer, data } => {
                    if let Some(r) = self.relays.get(&relay) {
                        let _ = r.socket.try_send_to(&data, peer);
                    }
                }
                Output::OpenRelay { id, family } => {
                    let now = Instant::now();
                    let unix = crate::unix_now().as_secs();
                    match self.open_relay(family).await {
                        Ok(relay) => self.core.handle_input(now, unix, Input::RelayOpened { id, relay }),
                        Err(e) => {
                            tracing::warn!("cannot open a TURN relay socket: {e}");
                            self.core.handle_input(now, unix, Input::RelayFailed { id });
                        }
                    }
                }
                Output::CloseRelay { relay } => {
                    if let Some(r) = self.relays.remove(&relay) {
                        r.reader.abort();
                    }
                }
            }
        }
        let stats = self.core.stats();
        let m = &self.metrics;
        m.turn_allocations.store(stats.allocations as i64, Ordering::Relaxed);
        m.turn_relayed.store(stats.packets_to_peers + stats.packets_to_clients, Ordering::Relaxed);
        m.turn_refused.store(
            stats.requests_refused + stats.packets_dropped + stats.challenges_dropped,
            Ordering::Relaxed,
        );
    }

    /// Binds a relay socket on a free port of the range; returns its
    /// advertised address.
    async fn open_relay(&mut self, family: Family) -> io::Result<SocketAddr> {
        let bind_ip = match (family, self.config.relay_bind) {
            (Family::V4, ip @ IpAddr::V4(_)) => ip,
            (Family::V6, ip @ IpAddr::V6(_)) => ip,
            (Family::V4, _) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            (Family::V6, _) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let (lo, hi) = (*self.config.relay_ports.start(), *self.config.relay_ports.end());
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free relay port");
        for _ in 0..PORT_TRIES {
            let port = lo + (crate::random_u64() % u64::from(span)) as u16;
            match UdpSocket::bind(SocketAddr::new(bind_ip, port)).await {
                Ok(socket) => {
                    let socket = Arc::new(socket);
                    let relay = SocketAddr::new(self.config.public_ip, port);
                    let reader = tokio::spawn(relay_reader(
                        socket.clone(),
                        relay,
                        self.events.clone(),
                        self.metrics.clone(),
                    ));
                    self.relays.insert(relay, Relay { socket, reader });
                    return Ok(relay);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

async fn relay_reader(socket: Arc<UdpSocket>, relay: SocketAddr, tx: Inbox, metrics: Arc<Metrics>) {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => tx.offer(Event::FromPeer { relay, peer, data: buf[..n].to_vec() }, &metrics),
            Err(_) => continue,
        }
    }
}

/// The address of this machine's default route (without sending anything:
/// connecting a UDP socket only looks the route up), if it has one.
pub fn default_route_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    socket.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
}
