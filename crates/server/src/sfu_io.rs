//! The SFU's IO shell: one UDP socket for every participant, one
//! `str0m::Rtc` per participant's session, and the sans-IO
//! [`sfu::Forwarder`] deciding who receives what.
//!
//! One task owns all of it. Connections send it [`SfuCmd`]s over a bounded
//! channel (a full channel answers `sfu-unavailable`: nobody waits), and it
//! answers through each connection's outbound queue, as a shard does, while
//! the connection holds the seat it offered from, so an answer meant for a
//! room the connection has left is dropped.
//!
//! Incoming datagrams are matched to a session by their source address,
//! learnt the first time a session's ICE agent accepts one of its STUN
//! checks (`Rtc::accepts`, which knows the session's ICE credentials).
//! Every session is ICE-lite with one host candidate, so the browser does
//! the checking and the server never sends to an address that has not
//! proven it holds the session's credentials.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use room::{PeerId, RoomId};
use sfu::{Forwarder, Layer, ParticipantId, Source, TrackKey};
use signal::{ErrorCode, SdpKind, ServerMsg, SfuSource, SfuTrack, encode};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;

use crate::hub::ConnId;
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::queue::{Outbound, Seat};
use crate::sfu_tcp::{self, TcpEvent};

/// Commands the SFU task takes at once; beyond that, connections are told
/// `sfu-unavailable` rather than made to wait.
const SFU_INBOX: usize = 1024;

/// How soon after its answer a session must have ICE and DTLS connected,
/// unless [`SfuConfig::connect_deadline`] says otherwise.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(20);

/// How often the forwarder's clock moves (the loudest participant of each
/// room is decided, silent tracks noticed) and bandwidth targets are set.
const SPEAKER_WINDOW: Duration = Duration::from_millis(300);

/// The longest the task sleeps when no session has a timer sooner.
/// Packets a second one session may send (bursts of `INGRESS_BURST`);
/// more are dropped before decryption. A browser's three camera layers, a
/// screen share and audio send a few hundred; this leaves room for
/// keyframes and resends, not for a flood that would starve the one task
/// every call shares.
const INGRESS_PPS: u32 = 2_500;
const INGRESS_BURST: u32 = 1_000;

/// ICE checks a second from addresses no session knows yet, in all: each
/// is tried against every session's credentials, so a spray of them must
/// not cost the task more than this. Browsers send a handful per session.
const INTRODUCTIONS_PER_SEC: u32 = 2_000;
const INTRODUCTIONS_BURST: u32 = 500;

const IDLE_TICK: Duration = Duration::from_millis(100);

/// The bandwidth estimate a subscriber starts with, before TWCC feedback.
const INITIAL_BWE: Bitrate = Bitrate::kbps(2_500);

/// How often sessions report their streams' counters (for `/metrics`).
const STATS_INTERVAL: Duration = Duration::from_secs(2);

/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;

/// ICE-TCP events the SFU task takes at once; connections wait beyond that.
const TCP_INBOX: usize = 1024;

/// ICE-TCP connections in all (also bounded by twice the session limit)
/// and from one address.
const TCP_PER_ADDRESS: usize = 16;

/// How the SFU is set up.
#[derive(Clone, Debug)]
pub struct SfuConfig {
    /// The UDP address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The address put in sessions' candidates, when not the listening
    /// one (behind a 1:1 NAT, or listening on a wildcard).
    pub public_ip: IpAddr,
    /// Most sessions at once, in all.
    pub max_participants: usize,
    /// A room with more people than this moves to the SFU.
    pub p2p_max: usize,
    /// The forwarding core's settings.
    pub forwarding: sfu::Config,
    /// A session not connected (ICE and DTLS) this soon after its answer
    /// ends with `sfu-failed` (normally [`CONNECT_DEADLINE`]).
    pub connect_deadline: Duration,
}

/// What connections ask of the SFU.
#[derive(Debug)]
pub(crate) enum SfuCmd {
    /// The client's offer: starts (or restarts) the connection's session.
    Offer {
        room: RoomId,
        peer: PeerId,
        conn: ConnId,
        seat: Arc<Seat>,
        sdp: String,
        sources: Vec<(String, SfuSource)>,
    },
    /// The client's answer to the server's latest offer.
    Answer { conn: ConnId, seat: Arc<Seat>, sdp: String },
    /// The heights at which the client shows each peer's video.
    Layout { conn: ConnId, tiles: Vec<(PeerId, u32)> },
    /// The connection left its room or closed: its session ends.
    Leave { conn: ConnId },
    /// What the connection's peer may send from now on (a host holds a
    /// source off, or its join token does not grant it): the rest of its
    /// media is dropped here, unread. From the room's shard, which sends
    /// everything-allowed when the peer leaves.
    Allow { conn: ConnId, allowed: room::MediaState },
}

/// How connections reach the SFU task.
#[derive(Clone, Debug)]
pub(crate) struct SfuHandle {
    tx: mpsc::Sender<SfuCmd>,
    /// The address sessions' candidates carry, for the log.
    pub(crate) addr: SocketAddr,
}

impl SfuHandle {
    /// Hands `cmd` to the SFU without waiting; `false` if its inbox is full
    /// or it is gone.
    pub(crate) fn send(&self, cmd: SfuCmd) -> bool {
        self.tx.try_send(cmd).is_ok()
    }
}

/// Binds the SFU's socket now (so a busy port is reported at start-up),
/// then serves until `shutdown` is cancelled.
pub(crate) async fn start(
    config: SfuConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> io::Result<(SfuHandle, tokio::task::JoinHandle<()>)> {
    // str0m's DTLS and SRTP need a crypto provider; installing one twice
    // (a second server in one process) is harmless.
    let provider = str0m::crypto::from_feature_flags();
    // One DTLS certificate for every session, made once: making one per
    // session cost each newcomer milliseconds before its answer. Every
    // handshake still agrees fresh keys (ECDHE); the certificate only
    // proves the fingerprint in the server's SDP.
    let dtls_cert = provider
        .dtls_provider
        .generate_certificate()
        .ok_or_else(|| io::Error::other("the crypto provider cannot make a DTLS certificate"))?;
    provider.install_process_default();
    let socket = UdpSocket::bind(config.listen).await?;
    let local = socket.local_addr()?;
    let addr = SocketAddr::new(config.public_ip, local.port());
    let (tx, rx) = mpsc::channel(SFU_INBOX);
    // ICE-TCP on the same port number, for networks that block UDP.
    let (tcp_tx, tcp_rx) = mpsc::channel(TCP_INBOX);
    let tcp = match crate::bind(local) {
        Ok(listener) => {
            let total = config.max_participants.saturating_mul(2).max(TCP_PER_ADDRESS);
            let gate = crate::accept::Gate::new(
                crate::metrics::Listener::Sfu,
                total,
                Some(TCP_PER_ADDRESS),
                metrics.clone(),
            );
            tokio::spawn(sfu_tcp::accept(listener, gate, tcp_tx, shutdown.clone()));
            true
        }
        Err(e) => {
            tracing::warn!("the SFU takes no TCP (ICE-TCP is off): cannot listen on TCP {local}: {e}");
            false
        }
    };
    let task = Task {
        dtls_cert,
        forwarder: Forwarder::new(config.forwarding.clone()),
        config,
        socket,
        addr,
        sessions: HashMap::new(),
        by_addr: HashMap::new(),
        tcp_on: tcp,
        tcp: HashMap::new(),
        metrics,
        started: Instant::now(),
        next_speaker_window: Instant::now() + SPEAKER_WINDOW,
        dirty: Vec::new(),
        introductions: TokenBucket::new(INTRODUCTIONS_PER_SEC, INTRODUCTIONS_BURST, Instant::now()),
        allowed: HashMap::new(),
    };
    let join = tokio::spawn(task.run(rx, tcp_rx, shutdown));
    Ok((SfuHandle { tx, addr }, join))
}

/// A track the server sends to a session, and where its m-line stands.
#[derive(Debug)]
struct OutTrack {
    track: TrackKey,
    state: OutState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Wanted; not offered yet.
    ToOpen,
    /// In the server's pending offer.
    Negotiating(Mid),
    /// Negotiated: frames may be written.
    Open(Mid),
    /// To stop in the next offer.
    ToStop(Mid),
    /// Stopped in the pending offer.
    Stopping(Mid),
}

impl OutTrack {
    fn mid(&self) -> Option<Mid> {
        match self.state {
            OutState::ToOpen => None,
            OutState::Negotiating(m) | OutState::Open(m) | OutState::ToStop(m) | OutState::Stopping(m) => {
                Some(m)
            }
        }
    }
}

/// A track the session publishes: its source and simulcast rids (lowest
/// first; empty without simulcast).
#[derive(Debug)]
struct InTrack {
    mid: Mid,
    source: Source,
    rids: Vec<Rid>,
}

struct Session {
    rtc: Rtc,
    peer: PeerId,
    /// The seat the connection offered from: answers go through it.
    route: Arc<Seat>,
    /// What the client said it sends on each of its m-lines.
    sources: Vec<(String, SfuSource)>,
    published: Vec<InTrack>,
    out: Vec<OutTrack>,
    /// The server's offer waiting for the client's answer.
    pending: Option<SdpPendingOffer>,
    created: Instant,
    connected: bool,
    /// When the session next needs `Input::Timeout`.
    timeout: Instant,
    /// Where this session's packets came from.
    addrs: Vec<(Protocol, SocketAddr)>,
    /// The bitrate its bandwidth estimator was last told to probe for.
    bwe_desired: u64,
    /// What it may still send (see [`INGRESS_PPS`]).
    ingress: TokenBucket,
    /// The streams' counters as last reported, to add only what is new to
    /// the metrics: (outgoing?, mid, rid) -> counters.
    counted: HashMap<(bool, Mid, Option<Rid>), StreamCounters>,
}

/// A stream's cumulative counters, as str0m reports them.
#[derive(Clone, Copy, Default, Debug)]
struct StreamCounters {
    packets: u64,
    nacks: u64,
    keyframe_requests: u64,
}

/// Something a session's `Rtc` reported, handled once polling is done
/// (handling it may touch other sessions). Lives only until then, in one
/// short list per poll, so frames are kept inline rather than boxed (which
/// would cost an allocation per frame).
#[allow(clippy::large_enum_variant)]
enum Happened {
    Added { mid: Mid, rids: Vec<Rid> },
    Media(MediaData),
    Keyframe(Mid),
    Bandwidth(u64),
    Connected,
    Failed(&'static str),
}

struct Task {
    config: SfuConfig,
    /// The certificate every session's DTLS presents.
    dtls_cert: DtlsCert,
    forwarder: Forwarder<RoomId>,
    socket: UdpSocket,
    /// The address in every session's candidate.
    addr: SocketAddr,
    sessions: HashMap<ParticipantId, Session>,
    /// Which session a remote address (UDP or TCP) belongs to.
    by_addr: HashMap<(Protocol, SocketAddr), ParticipantId>,
    /// Whether sessions get a passive TCP candidate.
    tcp_on: bool,
    /// Open ICE-TCP connections, by remote address: where their frames go,
    /// and when they opened.
    tcp: HashMap<SocketAddr, (mpsc::Sender<Vec<u8>>, Instant)>,
    metrics: Arc<Metrics>,
    started: Instant,
    next_speaker_window: Instant,
    /// Sessions given input since they were last polled.
    dirty: Vec<ParticipantId>,
    /// What unknown addresses may still try (see [`INTRODUCTIONS_PER_SEC`]).
    introductions: TokenBucket,
    /// Connections whose peers may not send everything, and what they
    /// may send (see [`SfuCmd::Allow`]); one entry per such room member.
    allowed: HashMap<ParticipantId, room::MediaState>,
}

impl Task {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<SfuCmd>,
        mut tcp: mpsc::Receiver<TcpEvent>,
        shutdown: CancellationToken,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                cmd = inbox.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd),
                    None => break,
                },
                read = self.socket.recv_from(&mut buf) => match read {
                    Ok((n, from)) => {
                        self.on_packet(Protocol::Udp, &buf[..n], from);
                        // Take whatever else is waiting before polling.
                        for _ in 0..64 {
                            match self.socket.try_recv_from(&mut buf) {
                                Ok((n, from)) => self.on_packet(Protocol::Udp, &buf[..n], from),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => tracing::debug!("SFU socket read failed: {e}"),
                },
                event = tcp.recv() => match event {
                    Some(TcpEvent::Opened { remote, out }) => {
                        self.tcp.insert(remote, (out, Instant::now()));
                    }
                    Some(TcpEvent::Frame { remote, data }) => self.on_packet(Protocol::Tcp, &data, remote),
                    Some(TcpEvent::Closed { remote }) => {
                        self.tcp.remove(&remote);
                        self.by_addr.remove(&(Protocol::Tcp, remote));
                    }
                    None => {}
                },
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            self.drive(Instant::now());
        }
        self.metrics.sfu_sessions.fetch_sub(self.sessions.len() as i64, Ordering::Relaxed);
    }

    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + IDLE_TICK;
        wake = wake.min(self.next_speaker_window);
        for s in self.sessions.values() {
            wake = wake.min(s.timeout);
        }
        wake
    }

    fn on_cmd(&mut self, cmd: SfuCmd) {
        let now = Instant::now();
        match cmd {
            SfuCmd::Offer { room, peer, conn, seat: route, sdp, sources } => {
                let id = ParticipantId(conn);
                self.end_session(id);
                if self.sessions.len() >= self.config.max_participants {
                    let msg = format!("the server holds {} group-call sessions already", self.sessions.len());
                    send_error(&self.metrics, &route, ErrorCode::SfuUnavailable, &msg);
                    return;
                }
                match self.new_session(now, peer, route.clone(), &sdp, sources) {
                    Ok((session, answer)) => {
                        tracing::debug!(peer = %peer, took_us = now.elapsed().as_micros(), "SFU session answered");
                        send(&route, &encode(&ServerMsg::sfu(SdpKind::Answer, &answer, None)));
                        self.sessions.insert(id, session);
                        self.metrics.sfu_sessions.fetch_add(1, Ordering::Relaxed);
                        self.dirty.push(id);
                        self.forwarder.join(self.now_ms(now), id, room);
                        self.update_rooms_gauge();
                    }
                    Err(e) => send_error(&self.metrics, &route, ErrorCode::BadSdp, &e),
                }
            }
            SfuCmd::Answer { conn, seat: route, sdp } => {
                let id = ParticipantId(conn);
                let Some(pending) = self.sessions.get_mut(&id).and_then(|s| s.pending.take()) else {
                    let msg = "no offer of the server's is waiting for an answer";
                    send_error(&self.metrics, &route, ErrorCode::BadSdp, msg);
                    return;
                };
                let Some(s) = self.sessions.get_mut(&id) else { return };
                let answer = match SdpAnswer::from_sdp_string(&sdp) {
                    Ok(a) => a,
                    Err(e) => {
                        s.pending = Some(pending);
                        send_error(
                            &self.metrics,
                            &s.route,
                            ErrorCode::BadSdp,
                            &format!("not an SDP answer: {e}"),
                        );
                        return;
                    }
                };
                if let Err(e) = s.rtc.sdp_api().accept_answer(pending, answer) {
                    // The session cannot go on from a half-applied change.
                    let msg = format!("the answer cannot be used: {e}");
                    send_error(&self.metrics, &s.route, ErrorCode::BadSdp, &msg);
                    self.end_session(id);
                    return;
                }
                for t in &mut s.out {
                    if let OutState::Negotiating(m) = t.state {
                        t.state = OutState::Open(m);
                    }
                }
                s.out.retain(|t| !matches!(t.state, OutState::Stopping(_)));
                self.dirty.push(id);
                // Frames flow on the new m-lines from the next keyframe.
                self.mark_ready(id, self.now_ms(now));
                self.apply_forwarder_outputs();
            }
            SfuCmd::Layout { conn, tiles } => {
                let id = ParticipantId(conn);
                let Some(room) = self.forwarder.room_of(id).cloned() else { return };
                let now_ms = self.now_ms(now);
                for (peer, height) in tiles {
                    let publisher = self
                        .forwarder
                        .members(&room)
                        .iter()
                        .copied()
                        .find(|m| self.sessions.get(m).is_some_and(|s| s.peer == peer));
                    if let Some(publisher) = publisher {
                        self.forwarder.set_tile(now_ms, id, publisher, height);
                    }
                }
                self.apply_forwarder_outputs();
            }
            SfuCmd::Leave { conn } => {
                // The connection is out of its room or gone: nothing of it
                // is left to hold.
                self.allowed.remove(&ParticipantId(conn));
                self.end_session(ParticipantId(conn));
            }
            SfuCmd::Allow { conn, allowed } => {
                let everything = room::MediaState { audio: true, video: true, screen: true };
                if allowed == everything {
                    self.allowed.remove(&ParticipantId(conn));
                } else {
                    self.allowed.insert(ParticipantId(conn), allowed);
                }
            }
        }
    }

    fn new_session(
        &self,
        now: Instant,
        peer: PeerId,
        route: Arc<Seat>,
        sdp: &str,
        sources: Vec<(String, SfuSource)>,
    ) -> Result<(Session, String), String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("not an SDP offer: {e}"))?;
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_dtls_cert(self.dtls_cert.clone())
            .enable_bwe(Some(INITIAL_BWE))
            .set_stats_interval(Some(STATS_INTERVAL))
            .build(now);
        let candidate = Candidate::host(self.addr, "udp").map_err(|e| format!("no candidate: {e}"))?;
        rtc.add_local_candidate(candidate);
        if self.tcp_on {
            let tcp = Candidate::builder()
                .tcp()
                .host(self.addr)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| format!("no TCP candidate: {e}"))?;
            rtc.add_local_candidate(tcp);
        }
        let answer =
            rtc.sdp_api().accept_offer(offer).map_err(|e| format!("the offer cannot be used: {e}"))?;
        let session = Session {
            rtc,
            peer,
            route,
            sources,
            published: Vec::new(),
            out: Vec::new(),
            pending: None,
            created: now,
            connected: false,
            timeout: now,
            addrs: Vec::new(),
            counted: HashMap::new(),
            bwe_desired: 0,
            ingress: TokenBucket::new(INGRESS_PPS, INGRESS_BURST, now),
        };
        Ok((session, answer.to_sdp_string()))
    }

    /// One packet from `from`, over UDP or one ICE-TCP frame.
    fn on_packet(&mut self, proto: Protocol, data: &[u8], from: SocketAddr) {
        let Ok(contents) = data.try_into() else { return };
        let now = Instant::now();
        let input = Input::Receive(now, Receive { proto, source: from, destination: self.addr, contents });
        let key = (proto, from);
        let id = match self.by_addr.get(&key) {
            Some(id) if self.sessions.get(id).is_some_and(|s| s.rtc.accepts(&input)) => *id,
            _ => {
                // An address nobody knows yet can only introduce itself
                // with an ICE check (STUN, RFC 7983: first byte 0-3) that a
                // session's credentials accept. Anything else from it is
                // dropped: a stray DTLS close from a browser's previous
                // connection must not reach, let alone end, a new session.
                if data.first().is_none_or(|b| *b > 3) {
                    return;
                }
                if !self.introductions.try_take(now) {
                    self.metrics.sfu_ingress_dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let Some((id, s)) = self.sessions.iter_mut().find(|(_, s)| s.rtc.accepts(&input)) else {
                    return;
                };
                if !s.addrs.contains(&key) {
                    s.addrs.push(key);
                }
                self.by_addr.insert(key, *id);
                *id
            }
        };
        if let Some(s) = self.sessions.get_mut(&id) {
            if !s.ingress.try_take(now) {
                self.metrics.sfu_ingress_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if let Err(e) = s.rtc.handle_input(input) {
                tracing::debug!(session = id.0, "SFU session input failed: {e}");
            }
            self.dirty.push(id);
        }
    }

    /// Advances timers, then polls every session that got input until each
    /// has nothing more to say, handling what they report (which may give
    /// other sessions input, so it repeats until all are quiet).
    fn drive(&mut self, now: Instant) {
        for (id, s) in &mut self.sessions {
            if s.timeout <= now {
                let _ = s.rtc.handle_input(Input::Timeout(now));
                self.dirty.push(*id);
            }
            if !s.connected && now.duration_since(s.created) > self.config.connect_deadline {
                self.dirty.push(*id);
            }
        }
        if now >= self.next_speaker_window {
            self.next_speaker_window = now + SPEAKER_WINDOW;
            self.forwarder.tick(self.now_ms(now));
            self.update_bandwidth_targets();
            // An ICE-TCP connection no session took (no ICE check of one
            // came over it, or its session ended) is closed once as old as
            // the connect deadline: dropping its sender ends it.
            let (by_addr, deadline) = (&self.by_addr, self.config.connect_deadline);
            self.tcp.retain(|remote, (_, opened)| {
                by_addr.contains_key(&(Protocol::Tcp, *remote)) || now.duration_since(*opened) < deadline
            });
        }
        self.apply_forwarder_outputs();
        let mut rounds = 0;
        while !self.dirty.is_empty() && rounds < 16 {
            rounds += 1;
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for id in dirty {
                let happened = self.poll(id, now);
                for h in happened {
                    self.on_happened(id, h, now);
                }
            }
            self.apply_forwarder_outputs();
            self.negotiate_all();
        }
    }

    /// Polls one session until its next timeout; sends what it transmits.
    fn poll(&mut self, id: ParticipantId, now: Instant) -> Vec<Happened> {
        let mut happened = Vec::new();
        let deadline = self.config.connect_deadline;
        let Some(s) = self.sessions.get_mut(&id) else { return happened };
        if !s.connected && now.duration_since(s.created) > deadline {
            happened.push(Happened::Failed("did not connect in time"));
            return happened;
        }
        loop {
            if !s.rtc.is_alive() {
                happened.push(Happened::Failed("closed"));
                break;
            }
            match s.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    s.timeout = t;
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    // Dropped when the socket buffer or the connection's
                    // queue is full, as a network would.
                    if t.proto == Protocol::Tcp {
                        if let Some((out, _)) = self.tcp.get(&t.destination) {
                            let _ = out.try_send(t.contents.to_vec());
                        }
                    } else {
                        let _ = self.socket.try_send_to(&t.contents, t.destination);
                    }
                }
                Ok(Output::Event(e)) => match e {
                    Event::Connected => happened.push(Happened::Connected),
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        happened.push(Happened::Failed("ICE disconnected"));
                    }
                    Event::MediaAdded(m)
                        if m.direction == Direction::RecvOnly || m.direction == Direction::SendRecv =>
                    {
                        let rids = m
                            .simulcast
                            .map(|s| s.recv.into_iter().map(|l| l.rid).collect())
                            .unwrap_or_default();
                        happened.push(Happened::Added { mid: m.mid, rids });
                    }
                    Event::MediaData(data) => happened.push(Happened::Media(data)),
                    Event::KeyframeRequest(req) => happened.push(Happened::Keyframe(req.mid)),
                    Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                        happened.push(Happened::Bandwidth(estimate.as_u64()));
                    }
                    Event::MediaEgressStats(st) => {
                        let now = StreamCounters {
                            packets: st.packets,
                            nacks: st.nacks,
                            keyframe_requests: st.plis + st.firs,
                        };
                        let was = s.counted.insert((true, st.mid, st.rid), now).unwrap_or_default();
                        let m = &self.metrics;
                        m.sfu_packets_sent
                            .fetch_add(now.packets.saturating_sub(was.packets), Ordering::Relaxed);
                        m.sfu_nacks_received
                            .fetch_add(now.nacks.saturating_sub(was.nacks), Ordering::Relaxed);
                        let plis = now.keyframe_requests.saturating_sub(was.keyframe_requests);
                        m.sfu_keyframe_requests_received.fetch_add(plis, Ordering::Relaxed);
                    }
                    Event::MediaIngressStats(st) => {
                        let now =
                            StreamCounters { packets: st.packets, nacks: st.nacks, keyframe_requests: 0 };
                        let was = s.counted.insert((false, st.mid, st.rid), now).unwrap_or_default();
                        let m = &self.metrics;
                        m.sfu_packets_received
                            .fetch_add(now.packets.saturating_sub(was.packets), Ordering::Relaxed);
                        m.sfu_nacks_sent.fetch_add(now.nacks.saturating_sub(was.nacks), Ordering::Relaxed);
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::debug!(session = id.0, "SFU session failed: {e}");
                    happened.push(Happened::Failed("error"));
                    break;
                }
            }
        }
        happened
    }

    fn on_happened(&mut self, id: ParticipantId, h: Happened, now: Instant) {
        let now_ms = self.now_ms(now);
        match h {
            Happened::Connected => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.connected = true;
                    tracing::debug!(peer = %s.peer, "SFU session connected");
                }
                self.mark_ready(id, now_ms);
            }
            Happened::Failed(why) => {
                if let Some(s) = self.sessions.get(&id) {
                    tracing::info!(peer = %s.peer, why, "SFU session failed");
                    let msg = format!("the group-call connection failed ({why}); start a new one");
                    send_error(&self.metrics, &s.route, ErrorCode::SfuFailed, &msg);
                }
                self.end_session(id);
            }
            Happened::Added { mid, rids } => {
                let Some(s) = self.sessions.get_mut(&id) else { return };
                let named = s.sources.iter().find(|(m, _)| m.as_str() == &*mid).map(|(_, src)| *src);
                let Some(source) = named.map(source_of) else {
                    tracing::debug!(peer = %s.peer, %mid, "an m-line the client did not name; not forwarded");
                    return;
                };
                if s.published.iter().any(|t| t.source == source) {
                    return;
                }
                let layers = u8::try_from(rids.len().clamp(1, usize::from(sfu::MAX_LAYERS))).unwrap_or(1);
                s.published.push(InTrack { mid, source, rids });
                self.forwarder.publish(now_ms, id, source, layers);
            }
            Happened::Media(data) => self.forward(id, data, now_ms),
            Happened::Keyframe(mid) => {
                let Some(track) = self
                    .sessions
                    .get(&id)
                    .and_then(|s| s.out.iter().find(|t| t.mid() == Some(mid)))
                    .map(|t| t.track)
                else {
                    return;
                };
                self.forwarder.keyframe_requested(now_ms, id, track);
            }
            Happened::Bandwidth(bps) => {
                tracing::debug!(session = id.0, bps, "bandwidth estimate");
                self.metrics.sfu_bwe_last.store(bps, Ordering::Relaxed);
                self.forwarder.set_bandwidth(now_ms, id, bps);
            }
        }
    }

    /// Sends one frame of `from`'s to everyone the forwarder names.
    fn forward(&mut self, from: ParticipantId, data: MediaData, now_ms: u64) {
        let Some(s) = self.sessions.get(&from) else { return };
        let Some(t) = s.published.iter().find(|t| t.mid == data.mid) else { return };
        let track = TrackKey { publisher: from, source: t.source };
        if let Some(allowed) = self.allowed.get(&from) {
            let may = match track.source {
                Source::Audio => allowed.audio,
                Source::Camera => allowed.video,
                Source::Screen => allowed.screen,
            };
            if !may {
                // Held off by a host (or not granted): nobody gets it,
                // whatever the browser still sends.
                self.metrics.sfu_held_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let layer = match data.rid {
            Some(rid) => Layer(u8::try_from(t.rids.iter().position(|r| *r == rid).unwrap_or(0)).unwrap_or(0)),
            None => Layer(0),
        };
        if track.source == Source::Audio
            && let Some(level) = data.ext_vals.audio_level
        {
            self.forwarder.audio_level(from, level.unsigned_abs());
        }
        if !data.contiguous && track.source.is_video() {
            // Frames were lost on the way in: ask for a fresh start.
            self.forwarder.request_keyframe(now_ms, track, layer);
        }
        let Task { forwarder, sessions, dirty, metrics, .. } = self;
        let receivers = forwarder.forward(now_ms, track, layer, data.is_keyframe(), data.data.len());
        if data.is_keyframe() {
            tracing::debug!(publisher = from.0, ?track.source, layer = layer.0, to = ?receivers, "keyframe in");
        }
        let mut sent = 0u64;
        for who in receivers {
            let Some(sub) = sessions.get_mut(who) else { continue };
            let Some(mid) = sub.out.iter().find_map(|o| match o.state {
                OutState::Open(m) if o.track == track => Some(m),
                _ => None,
            }) else {
                continue;
            };
            let Some(writer) = sub.rtc.writer(mid) else { continue };
            let Some(pt) = writer.match_params(data.params) else { continue };
            if writer.write(pt, data.network_time, data.time, data.data.clone()).is_ok() {
                sent += 1;
                dirty.push(*who);
            }
        }
        metrics.sfu_frames_forwarded.fetch_add(sent, Ordering::Relaxed);
        metrics.sfu_bytes_forwarded.fetch_add(sent * data.data.len() as u64, Ordering::Relaxed);
    }

    /// Tells the forwarder which of `id`'s subscriptions can take frames:
    /// those whose m-line is negotiated, once the session is connected.
    fn mark_ready(&mut self, id: ParticipantId, now_ms: u64) {
        let Some(s) = self.sessions.get(&id) else { return };
        if !s.connected {
            return;
        }
        let open: Vec<TrackKey> =
            s.out.iter().filter(|t| matches!(t.state, OutState::Open(_))).map(|t| t.track).collect();
        tracing::debug!(session = id.0, tracks = open.len(), "SFU subscriptions ready");
        for track in open {
            self.forwarder.set_ready(now_ms, id, track);
        }
    }

    /// Has each session's bandwidth estimator find out whether its link
    /// carries what its subscriber would want: it probes towards it, and
    /// pads what is sent up to it (capped by the estimate, so only as fast
    /// as the estimate grows). An estimate only grows with traffic; without
    /// the padding it would stay at what the lowered layers send, and the
    /// layers would stay low on a link that could carry more.
    fn update_bandwidth_targets(&mut self) {
        for (id, s) in &mut self.sessions {
            let Some((_, wanted)) = self.forwarder.bitrates(*id) else { continue };
            if s.bwe_desired != wanted && wanted > 0 {
                s.bwe_desired = wanted;
                s.rtc.bwe().set_bitrate(Bitrate::bps(wanted), Bitrate::bps(wanted));
                self.dirty.push(*id);
            }
        }
    }

    /// Carries out what the forwarder decided.
    fn apply_forwarder_outputs(&mut self) {
        while let Some(out) = self.forwarder.poll_output() {
            match out {
                sfu::Output::Subscribe { subscriber, track } => {
                    if let Some(s) = self.sessions.get_mut(&subscriber) {
                        s.out.push(OutTrack { track, state: OutState::ToOpen });
                    }
                }
                sfu::Output::Unsubscribe { subscriber, track } => {
                    if let Some(s) = self.sessions.get_mut(&subscriber) {
                        s.out.retain_mut(|t| {
                            if t.track != track {
                                return true;
                            }
                            match t.state {
                                OutState::ToOpen => false,
                                OutState::Negotiating(m) | OutState::Open(m) => {
                                    t.state = OutState::ToStop(m);
                                    true
                                }
                                OutState::ToStop(_) | OutState::Stopping(_) => true,
                            }
                        });
                    }
                }
                sfu::Output::RequestKeyframe { track, layer } => {
                    let Some(s) = self.sessions.get_mut(&track.publisher) else { continue };
                    let Some(t) = s.published.iter().find(|t| t.source == track.source) else { continue };
                    let rid = t.rids.get(usize::from(layer.0)).copied();
                    let mid = t.mid;
                    let sent = s.connected
                        && s.rtc
                            .writer(mid)
                            .is_some_and(|mut w| w.request_keyframe(rid, KeyframeRequestKind::Pli).is_ok());
                    tracing::debug!(publisher = track.publisher.0, ?track.source, layer = layer.0, sent, "keyframe request");
                    if sent {
                        self.metrics.sfu_keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        self.dirty.push(track.publisher);
                    } else {
                        self.forwarder.keyframe_request_failed(track, layer);
                    }
                }
                // Dynacast: the publisher stops encoding what nobody gets.
                sfu::Output::SetLayers { track, active } => {
                    let Some(s) = self.sessions.get(&track.publisher) else { continue };
                    let layers: Vec<u8> = (0..sfu::MAX_LAYERS).filter(|l| active & (1 << l) != 0).collect();
                    let msg = ServerMsg::SfuLayers { source: sfu_source(track.source), active: &layers };
                    send(&s.route, &encode(&msg));
                }
                sfu::Output::Speaker { room, speaker } => {
                    let Some(peer) = self.sessions.get(&speaker).map(|s| s.peer) else { continue };
                    let text = encode(&ServerMsg::Speaker { peer });
                    for member in self.forwarder.members(&room) {
                        if let Some(s) = self.sessions.get(member) {
                            send(&s.route, &text);
                        }
                    }
                }
            }
        }
    }

    /// Offers pending track changes to every session that has some and no
    /// offer of ours waiting.
    fn negotiate_all(&mut self) {
        let ids: Vec<ParticipantId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.pending.is_none()
                    && s.out.iter().any(|t| matches!(t.state, OutState::ToOpen | OutState::ToStop(_)))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.negotiate(id);
        }
    }

    fn negotiate(&mut self, id: ParticipantId) {
        let peers = self.sessions_peers();
        let Some(s) = self.sessions.get_mut(&id) else { return };
        let mut change = s.rtc.sdp_api();
        for t in &mut s.out {
            match t.state {
                OutState::ToOpen => {
                    let Some(peer) = peers.get(&t.track.publisher) else { continue };
                    let kind = if t.track.source.is_video() { MediaKind::Video } else { MediaKind::Audio };
                    let stream = peer.to_string();
                    let track_id = format!("{peer}-{}", source_name(t.track.source));
                    let mid = change.add_media(kind, Direction::SendOnly, Some(stream), Some(track_id), None);
                    t.state = OutState::Negotiating(mid);
                }
                OutState::ToStop(m) => {
                    change.stop_media(m);
                    t.state = OutState::Stopping(m);
                }
                _ => {}
            }
        }
        let Some((offer, pending)) = change.apply() else { return };
        s.pending = Some(pending);
        let tracks: Vec<SfuTrack> = s
            .out
            .iter()
            .filter_map(|t| match t.state {
                OutState::Negotiating(m) | OutState::Open(m) => Some(SfuTrack {
                    mid: m.to_string(),
                    peer: *peers.get(&t.track.publisher)?,
                    source: sfu_source(t.track.source),
                }),
                _ => None,
            })
            .collect();
        let sdp = offer.to_sdp_string();
        send(&s.route, &encode(&ServerMsg::sfu(SdpKind::Offer, &sdp, Some(&tracks))));
        self.dirty.push(id);
    }

    fn sessions_peers(&self) -> HashMap<ParticipantId, PeerId> {
        self.sessions.iter().map(|(id, s)| (*id, s.peer)).collect()
    }

    /// Ends a session (it failed, its connection left, or a new offer
    /// replaces it): the others stop receiving its tracks.
    fn end_session(&mut self, id: ParticipantId) {
        let Some(mut s) = self.sessions.remove(&id) else { return };
        s.rtc.disconnect();
        for a in &s.addrs {
            self.by_addr.remove(a);
        }
        self.metrics.sfu_sessions.fetch_sub(1, Ordering::Relaxed);
        self.forwarder.leave(id);
        self.update_rooms_gauge();
        self.apply_forwarder_outputs();
        self.negotiate_all();
    }

    fn update_rooms_gauge(&self) {
        self.metrics.sfu_rooms.store(self.forwarder.room_count() as i64, Ordering::Relaxed);
    }
}

fn source_of(s: SfuSource) -> Source {
    match s {
        SfuSource::Audio => Source::Audio,
        SfuSource::Camera => Source::Camera,
        SfuSource::Screen => Source::Screen,
    }
}

fn sfu_source(s: Source) -> SfuSource {
    match s {
        Source::Audio => SfuSource::Audio,
        Source::Camera => SfuSource::Camera,
        Source::Screen => SfuSource::Screen,
    }
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::Audio => "audio",
        Source::Camera => "camera",
        Source::Screen => "screen",
    }
}

/// Puts a message in a connection's queue while it holds the seat it spoke
/// to the SFU from; a full queue drops that connection, as a shard does.
fn send(route: &Seat, text: &str) {
    let _ = route.push_while_seated(Outbound::Text(Utf8Bytes::from(text.to_owned())));
}

fn send_error(metrics: &Metrics, route: &Seat, code: ErrorCode, message: &str) {
    metrics.error(code);
    send(route, &encode(&ServerMsg::Error { code, message, request: Some("sfu") }));
}
