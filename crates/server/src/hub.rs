//! Room shards: the tasks that own the rooms.
//!
//! Rooms are split over a fixed number of shards by a hash of their name;
//! each shard is one task owning a [`Rooms`] core for its rooms and the
//! outbound queue of each of their members. Connections send it
//! [`ShardCmd`]s over a bounded channel (a full channel makes the *sending
//! connection* wait, nobody else). The shard answers by pushing encoded
//! messages into member queues without waiting: one stalled browser cannot
//! hold up its room, let alone the shard. A member whose queue is full is
//! dropped from its room and its connection is told to close ("too slow").
//!
//! Signals do not pass through here. With each `joined` and `peer-joined`
//! the shard hands the member's connection a [`Route`] to every other
//! member, and takes it back with `peer-left`; connections relay signals
//! along those routes themselves. The core still decides who is in which
//! room; routes are only its decisions, delivered.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use room::{
    Action, Admission, ChatId, ChatText, DisplayName, Input, MediaState, Output, PasswordChange, PeerId,
    PeerMap, Rejection, Request, Role, RoomId, Rooms,
};
use signal::{ErrorCode, ServerMsg, encode};
use tokio::sync::mpsc;
use tungstenite::Utf8Bytes;

use crate::Config;
use crate::metrics::Metrics;
use crate::queue::{JoinAnswer, KickReason, Outbound, PushError, QueueTx, Route};
use crate::resume::ResumeKey;
use crate::sfu_io::{SfuCmd, SfuHandle};

/// Commands a shard takes. Each shard's inbox holds at most this many;
/// senders wait for room beyond that.
const SHARD_INBOX: usize = 4096;

/// The most commands a shard takes from its inbox at once; bounds how long
/// it works before yielding to the runtime.
const SHARD_BATCH: usize = 128;

/// Identifies one WebSocket connection, as opposed to the peer id it
/// speaks for: after a resume, a new connection speaks for an old id, and
/// commands still in flight from the old connection must not count.
pub(crate) type ConnId = u64;

/// How a shard reaches one member's connection.
#[derive(Debug)]
pub(crate) struct PeerTx {
    /// Which connection this is.
    pub(crate) conn: ConnId,
    /// Its queue, kick switch and membership number, as others get them.
    pub(crate) route: Route,
    /// Whether this connection got its peer id from a resume token.
    pub(crate) resumed: bool,
    /// The address of this machine the connection came in on, if known: the
    /// one its browser can reach us at (see `IceConfig::per_connection_port`).
    pub(crate) reached: Option<std::net::IpAddr>,
}

/// What connections ask of a shard. Every command but `Join` names the
/// connection it comes from, and is ignored unless that connection is the
/// one the shard has for the peer.
#[derive(Debug)]
pub(crate) enum ShardCmd {
    /// Enter `room`; answers go to `tx`, which the shard keeps while the
    /// peer is a member. A connection already there for the same peer id is
    /// replaced.
    Join {
        peer: PeerId,
        room: RoomId,
        name: DisplayName,
        media: MediaState,
        tx: PeerTx,
        admission: Admission,
    },
    /// A host action: admit or deny someone waiting, change the room's
    /// settings, act on a member, end the call (checked by the core).
    Host { peer: PeerId, conn: ConnId, action: HostCmd },
    /// Say something to the room (`id`: the sender's name for the message).
    Chat { peer: PeerId, conn: ConnId, text: ChatText, id: Option<ChatId> },
    /// Tell the room about a media change.
    Media { peer: PeerId, conn: ConnId, media: MediaState },
    /// Leave the room.
    Leave { peer: PeerId, conn: ConnId },
    /// The connection is gone.
    Disconnect { peer: PeerId, conn: ConnId },
    /// How full `room` is, answered with `room-state` into `queue` (a
    /// connection outside any room: `peek`).
    Peek { room: RoomId, queue: QueueTx },
}

/// What a host asks of its room.
#[derive(Debug)]
pub(crate) enum HostCmd {
    Admit(PeerId),
    Deny(PeerId),
    Settings { locked: Option<bool>, lobby: Option<bool>, password: Option<PasswordChange> },
    Moderate(PeerId, Action),
    EndCall,
}

/// The shards' inboxes. Cloning is cheap; the shard tasks end when the last
/// clone (and every connection's sender) is gone.
#[derive(Clone, Debug)]
pub(crate) struct Hub {
    shards: std::sync::Arc<[mpsc::Sender<ShardCmd>]>,
}

impl Hub {
    /// Spawns `count` shard tasks on the current runtime.
    /// Rooms with more than `p2p_max` members move to the SFU (`None`:
    /// there is none).
    pub(crate) fn start(
        count: usize,
        config: &Config,
        p2p_max: Option<usize>,
        metrics: Arc<Metrics>,
        sfu: Option<SfuHandle>,
    ) -> Hub {
        let shards = (0..count.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(SHARD_INBOX);
                let shard = Shard {
                    core: Rooms::new(room::Config {
                        capacity: config.room_capacity,
                        chat_history: config.chat_history,
                        chat_max_age_ms: u64::try_from(config.chat_max_age.as_millis()).unwrap_or(u64::MAX),
                        p2p_max,
                        // 64 KiB a room, 16 MiB a shard.
                        ..room::Config::default()
                    }),
                    peers: PeerMap::default(),
                    ice: config.ice.clone(),
                    resume_key: config.resume_key.clone(),
                    resume_ttl: config.resume_ttl,
                    kicked: Vec::new(),
                    departed: Vec::new(),
                    sfu: sfu.clone(),
                    metrics: metrics.clone(),
                    counted: (0, 0),
                };
                tokio::spawn(shard.run(rx));
                tx
            })
            .collect();
        Hub { shards }
    }

    /// The inbox of the shard that owns `room`.
    pub(crate) fn shard(&self, room: &RoomId) -> &mpsc::Sender<ShardCmd> {
        // DefaultHasher::new() has fixed keys: the same room always lands on
        // the same shard for the life of the process, which is all we need.
        let mut h = DefaultHasher::new();
        room.hash(&mut h);
        let i = usize::try_from(h.finish() % self.shards.len() as u64).unwrap_or(0);
        &self.shards[i]
    }
}

struct Shard {
    /// The core's `Signal` input is not used here: signals travel along
    /// routes (see the module documentation).
    core: Rooms<()>,
    /// Members' connections. A peer is here exactly while it is a member of
    /// one of this shard's rooms (or its join is being decided).
    peers: PeerMap<PeerTx>,
    ice: crate::IceConfig,
    resume_key: ResumeKey,
    resume_ttl: Duration,
    /// Members whose queue was full or closed, to drop after this command.
    kicked: Vec<PeerId>,
    /// Peers a command may have taken out of every room (removed, denied):
    /// their connections are forgotten after it if so.
    departed: Vec<PeerId>,
    /// Where to tell what a member may send (see `Output::Allowed`).
    sfu: Option<SfuHandle>,
    metrics: Arc<Metrics>,
    /// Rooms and members this shard last added to the metrics' gauges.
    counted: (usize, usize),
}

impl Shard {
    async fn run(mut self, mut inbox: mpsc::Receiver<ShardCmd>) {
        let mut batch = Vec::with_capacity(SHARD_BATCH);
        while inbox.recv_many(&mut batch, SHARD_BATCH).await > 0 {
            for cmd in batch.drain(..) {
                self.handle(cmd);
            }
        }
    }

    fn handle(&mut self, cmd: ShardCmd) {
        let now_ms = || u64::try_from(crate::unix_now().as_millis()).unwrap_or(u64::MAX);
        let peer = match cmd {
            ShardCmd::Join { peer, room, name, media, tx, admission } => {
                let conn = tx.conn;
                // A seat is taken over only by a resume token for that very
                // room: a peer id seated in another room keeps its seat, and
                // so does one seated by a connection that did not resume.
                if let Some(held) = self.peers.get(&peer)
                    && held.conn != conn
                    && !(tx.resumed && self.core.place_of(peer) == Some(&room))
                {
                    tracing::info!(%peer, %room, "refused a join that would take a seat held elsewhere");
                    self.metrics.error(ErrorCode::BadResume);
                    let err = ServerMsg::Error {
                        code: ErrorCode::BadResume,
                        message: crate::resume::ResumeError::Invalid.message(),
                        request: Some("join"),
                    };
                    let answer = JoinAnswer::refused(Utf8Bytes::from(encode(&err)));
                    let _ = tx.route.queue.push(Outbound::JoinAnswer(Box::new(answer)));
                    return;
                }
                if let Some(old) = self.peers.insert(peer, tx) {
                    if old.conn != conn {
                        tracing::info!(%peer, "a newer connection resumed this peer; closing the old one");
                        old.route.kick.kick(KickReason::Replaced);
                    }
                }
                self.core.handle_input(Input::Join { peer, room, name, media, now_ms: now_ms(), admission });
                peer
            }
            ShardCmd::Host { peer, conn, action } => {
                if !self.is_current(peer, conn) {
                    return;
                }
                let host = peer;
                self.core.handle_input(match action {
                    HostCmd::Admit(peer) => Input::Admit { host, peer },
                    HostCmd::Deny(peer) => Input::Deny { host, peer },
                    HostCmd::Settings { locked, lobby, password } => {
                        Input::Settings { host, locked, lobby, password }
                    }
                    HostCmd::Moderate(peer, action) => Input::Moderate { host, peer, action },
                    HostCmd::EndCall => Input::EndCall { host },
                });
                peer
            }
            ShardCmd::Chat { peer, conn, text, id } => {
                if !self.is_current(peer, conn) {
                    return;
                }
                self.metrics.chat_messages.fetch_add(1, Ordering::Relaxed);
                let now_ms = now_ms();
                self.core.handle_input(Input::Chat { peer, text, id, now_ms });
                peer
            }
            ShardCmd::Media { peer, conn, media } => {
                if !self.is_current(peer, conn) {
                    return;
                }
                self.core.handle_input(Input::Media { peer, media });
                peer
            }
            ShardCmd::Leave { peer, conn } => {
                if !self.is_current(peer, conn) {
                    return;
                }
                self.core.handle_input(Input::Leave { peer });
                peer
            }
            ShardCmd::Peek { room, queue } => {
                let (peers, capacity) = self.core.occupancy(&room);
                let names = self.core.names_in(&room);
                let msg =
                    encode(&ServerMsg::RoomState { room: room.as_str(), peers, capacity, names: &names });
                // A full or closed queue: the connection is too slow or
                // gone; it is not a member, so there is nobody to drop.
                let _ = queue.push(Outbound::Text(Utf8Bytes::from(msg)));
                return;
            }
            ShardCmd::Disconnect { peer, conn } => {
                if !self.is_current(peer, conn) {
                    return;
                }
                self.core.handle_input(Input::Disconnect { peer });
                peer
            }
        };
        self.flush();
        self.departed.push(peer);
        while let Some(peer) = self.departed.pop() {
            if self.core.place_of(peer).is_none() {
                self.peers.remove(&peer);
            }
        }
        self.update_gauges();
    }

    /// Moves the shared room and member gauges by this shard's change.
    fn update_gauges(&mut self) {
        let now = (self.core.room_count(), self.core.member_count());
        let delta = |new: usize, old: usize| new as i64 - old as i64;
        if now != self.counted {
            self.metrics.rooms.fetch_add(delta(now.0, self.counted.0), Ordering::Relaxed);
            self.metrics.members.fetch_add(delta(now.1, self.counted.1), Ordering::Relaxed);
            self.counted = now;
        }
    }

    /// Whether `conn` is the connection this shard has for `peer`: commands
    /// from a replaced or dropped connection are stale and ignored.
    fn is_current(&self, peer: PeerId, conn: ConnId) -> bool {
        self.peers.get(&peer).is_some_and(|tx| tx.conn == conn)
    }

    /// Delivers everything the core produced, then drops members that could
    /// not take their messages, which produces `peer-left`s to deliver too.
    fn flush(&mut self) {
        loop {
            while let Some(out) = self.core.poll_output() {
                if let Output::Rejected { reason, .. } = &out {
                    self.metrics.error(rejection_code(*reason));
                }
                if let Some((to, msg)) = self.encode(out) {
                    self.deliver(to, msg);
                }
            }
            let Some(peer) = self.kicked.pop() else { break };
            if let Some(tx) = self.peers.remove(&peer) {
                tracing::info!(%peer, "dropping a peer whose outbound queue is full");
                tx.route.kick.kick(KickReason::TooSlow);
            }
            self.core.handle_input(Input::Disconnect { peer });
        }
    }

    fn deliver(&mut self, to: PeerId, msg: Outbound) {
        let Some(tx) = self.peers.get(&to) else { return };
        if let Err(PushError::Full | PushError::Closed) = tx.route.queue.push(msg)
            && !self.kicked.contains(&to)
        {
            self.kicked.push(to);
        }
    }

    /// The membership number of `peer`'s connection (0 if unknown).
    fn membership(&self, peer: PeerId) -> u64 {
        self.peers.get(&peer).map_or(0, |tx| tx.route.membership)
    }

    fn route(&self, peer: PeerId) -> Option<Route> {
        self.peers.get(&peer).map(|tx| tx.route.clone())
    }

    /// The message for an output, and whom to give it.
    fn encode(&mut self, out: Output<()>) -> Option<(PeerId, Outbound)> {
        let text = |s: String| Utf8Bytes::from(s);
        Some(match out {
            Output::Joined { to, room, name, capacity, peers, chat, mode, role, grants, settings, lobby } => {
                let unix = crate::unix_now();
                let expires = (unix + self.resume_ttl).as_secs();
                let resume = self.resume_key.issue_with_role(&room, to, expires, role);
                let reached = self.peers.get(&to).and_then(|tx| tx.reached);
                let ice_servers = self.ice.for_peer(to, unix.as_secs(), reached);
                let msg = ServerMsg::Joined {
                    room: room.as_str(),
                    you: to,
                    name: name.as_str(),
                    capacity,
                    resumed: self.peers.get(&to).is_some_and(|tx| tx.resumed),
                    peers: &peers,
                    chat: &chat,
                    ice_servers: &ice_servers,
                    resume: &resume,
                    mode,
                    role,
                    grants,
                    settings,
                    lobby: &lobby,
                };
                let routes = peers.iter().filter_map(|(p, _)| Some((p.id, self.route(p.id)?))).collect();
                (
                    to,
                    Outbound::JoinAnswer(Box::new(JoinAnswer {
                        text: text(encode(&msg)),
                        room: Some(room),
                        routes,
                        waiting: false,
                        role,
                    })),
                )
            }
            Output::RoomMode { to, mode } => {
                (to, Outbound::Text(text(encode(&ServerMsg::RoomMode { mode }))))
            }
            Output::PeerMedia { to, peer, media } => {
                (to, Outbound::Text(text(encode(&ServerMsg::PeerMedia { peer, media }))))
            }
            Output::Chat { to, entry } => {
                let msg = ServerMsg::Chat {
                    from: entry.from,
                    name: entry.name.as_str(),
                    text: entry.text.as_str(),
                    ts: entry.ts_ms,
                    id: entry.id.as_ref().map(ChatId::as_str),
                };
                (to, Outbound::Text(text(encode(&msg))))
            }
            Output::PeerJoined { to, peer, polite } => {
                let body = text(encode(&ServerMsg::PeerJoined { peer: &peer, polite }));
                match self.route(peer.id) {
                    Some(route) => (to, Outbound::PeerJoined(Box::new((body, peer.id, route)))),
                    None => (to, Outbound::Text(body)),
                }
            }
            Output::PeerLeft { to, peer, reason } => {
                (to, Outbound::PeerLeft { text: text(encode(&ServerMsg::PeerLeft { peer, reason })), peer })
            }
            Output::Left { to, room } => {
                let text = text(encode(&ServerMsg::Left { room: room.as_str() }));
                (to, Outbound::Exit { text, membership: self.membership(to) })
            }
            Output::Waiting { to, room } => {
                let msg = text(encode(&ServerMsg::Waiting { room: room.as_str() }));
                let answer = JoinAnswer {
                    text: msg,
                    room: Some(room),
                    routes: Vec::new(),
                    waiting: true,
                    role: Role::Guest,
                };
                (to, Outbound::JoinAnswer(Box::new(answer)))
            }
            Output::Knock { to, peer, name } => {
                (to, Outbound::Text(text(encode(&ServerMsg::Knock { peer, name: name.as_str() }))))
            }
            Output::KnockGone { to, peer, reason } => {
                (to, Outbound::Text(text(encode(&ServerMsg::KnockGone { peer, reason }))))
            }
            Output::Settings { to, settings } => {
                let msg = ServerMsg::RoomSettings {
                    locked: settings.locked,
                    lobby: settings.lobby,
                    password: settings.password,
                };
                (to, Outbound::Text(text(encode(&msg))))
            }
            Output::PeerRole { to, peer, role } => {
                let msg = text(encode(&ServerMsg::PeerRole { peer, role }));
                if to == peer { (to, Outbound::Role { text: msg, role }) } else { (to, Outbound::Text(msg)) }
            }
            Output::Moderated { to, action, by, held } => {
                (to, Outbound::Text(text(encode(&ServerMsg::Moderated { action, by, held }))))
            }
            Output::Removed { to, room, reason, by } => {
                self.departed.push(to);
                let msg = text(encode(&ServerMsg::Removed { room: room.as_str(), reason, by }));
                (to, Outbound::Exit { text: msg, membership: self.membership(to) })
            }
            Output::Allowed { to, allowed } => {
                // For the SFU, which drops what may not be sent; a lost
                // command (full inbox) is retried by nobody, so say so.
                if let (Some(sfu), Some(tx)) = (&self.sfu, self.peers.get(&to))
                    && !sfu.send(SfuCmd::Allow { conn: tx.conn, allowed })
                {
                    tracing::warn!(peer = %to, "SFU inbox full: a hold on this peer's media was not applied");
                }
                return None;
            }
            // Signals travel along routes; the shard never feeds the core one.
            Output::Relay { .. } => return None,
            Output::Rejected { to, request, reason } => {
                let code = rejection_code(reason);
                let message = match reason {
                    Rejection::RoomFull { capacity } => {
                        format!("this call is full ({capacity} of {capacity})")
                    }
                    Rejection::NotJoined => "join a room first".to_owned(),
                    Rejection::UnknownPeer => "no such peer in your room".to_owned(),
                    Rejection::NotHost => "only a host can do that".to_owned(),
                    Rejection::Locked => "this call is locked: no new people may join".to_owned(),
                    Rejection::PasswordRequired => "this call needs a password".to_owned(),
                    Rejection::BadPassword => "wrong password".to_owned(),
                    Rejection::TooManyAttempts => "too many wrong passwords: wait a minute".to_owned(),
                    Rejection::LobbyFull => "too many people are waiting to join this call".to_owned(),
                    Rejection::Denied => "a host did not let you in".to_owned(),
                    Rejection::Barred => "you were removed from this call".to_owned(),
                    Rejection::NotAllowed => "your invitation does not allow this".to_owned(),
                    Rejection::Held => "a host turned this off for you".to_owned(),
                };
                let request_name = match request {
                    Request::Join => "join",
                    Request::Signal => "signal",
                    Request::Chat => "chat",
                    Request::Media => "media",
                    Request::Leave => "leave",
                    Request::Admit => "admit",
                    Request::Deny => "deny",
                    Request::Settings => "room-settings",
                    Request::Moderate => "moderate",
                    Request::EndCall => "end-call",
                };
                let body =
                    text(encode(&ServerMsg::Error { code, message: &message, request: Some(request_name) }));
                if request == Request::Join {
                    self.departed.push(to);
                    let answer = JoinAnswer::refused(body);
                    (to, Outbound::JoinAnswer(Box::new(answer)))
                } else {
                    (to, Outbound::Text(body))
                }
            }
        })
    }
}

fn rejection_code(reason: Rejection) -> ErrorCode {
    match reason {
        Rejection::RoomFull { .. } => ErrorCode::RoomFull,
        Rejection::NotJoined => ErrorCode::NotJoined,
        Rejection::UnknownPeer => ErrorCode::UnknownPeer,
        Rejection::NotHost => ErrorCode::NotHost,
        Rejection::Locked => ErrorCode::RoomLocked,
        Rejection::PasswordRequired => ErrorCode::PasswordRequired,
        Rejection::BadPassword => ErrorCode::BadPassword,
        Rejection::TooManyAttempts => ErrorCode::TooManyAttempts,
        Rejection::LobbyFull => ErrorCode::LobbyFull,
        Rejection::Denied => ErrorCode::Denied,
        Rejection::Barred => ErrorCode::Barred,
        Rejection::NotAllowed => ErrorCode::NotAllowed,
        Rejection::Held => ErrorCode::Held,
    }
}
