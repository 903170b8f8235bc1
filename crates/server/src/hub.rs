//! Room shards: the tasks that own the rooms.
//!
//! Rooms are split over a fixed number of shards by a hash of their name;
//! each shard is one task owning a [`Rooms`] core for its rooms and the
//! outbound queue of each of their members. Connections send it
//! [`ShardCmd`]s over a bounded channel (a full channel makes the *sending
//! connection* wait, nobody else). The shard answers by pushing encoded
//! messages into member queues with `try_send`: it never waits on a
//! connection, so one stalled browser cannot hold up its room, let alone
//! the shard. A member whose queue is full is dropped from its room and its
//! connection is told to close ("too slow").

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use room::{ChatText, DisplayName, Input, MediaState, Output, PeerId, Rejection, Request, RoomId, Rooms};
use signal::{ErrorCode, ServerMsg, encode, encode_relay};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::sync::atomic::Ordering;

use crate::Config;
use crate::metrics::Metrics;
use crate::resume::ResumeKey;

/// Commands a shard takes. Each shard's inbox holds at most this many;
/// senders wait for room beyond that.
const SHARD_INBOX: usize = 4096;

/// The most commands a shard takes from its inbox at once; bounds how long
/// it works before yielding to the runtime.
const SHARD_BATCH: usize = 128;

/// Something a connection must write, queued by its room's shard.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A message, encoded, to write as it is.
    Text(Utf8Bytes),
    /// The answer to this connection's `join` (`joined`, or an `error`): to
    /// write as it is, and the room the connection is now in, if any.
    JoinAnswer { text: Utf8Bytes, room: Option<RoomId> },
}

/// Identifies one WebSocket connection, as opposed to the peer id it
/// speaks for: after a resume, a new connection speaks for an old id, and
/// commands still in flight from the old connection must not count.
pub(crate) type ConnId = u64;

/// Why a shard tells a connection to close.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum KickReason {
    /// Its outbound queue was full.
    TooSlow,
    /// A newer connection resumed its peer id.
    Replaced,
}

/// The shard's way to make a connection close, with a reason.
#[derive(Debug, Default)]
pub(crate) struct Kick {
    token: CancellationToken,
    reason: OnceLock<KickReason>,
}

impl Kick {
    /// Tells the connection to close; the first reason given wins.
    pub(crate) fn kick(&self, reason: KickReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Completes once [`Kick::kick`] was called, with its reason.
    pub(crate) async fn kicked(&self) -> KickReason {
        self.token.cancelled().await;
        self.reason.get().copied().unwrap_or(KickReason::TooSlow)
    }
}

impl Outbound {
    fn len(&self) -> usize {
        match self {
            Outbound::Text(t) | Outbound::JoinAnswer { text: t, .. } => t.len(),
        }
    }
}

/// A connection's outbound queue, bounded by the bytes waiting in it rather
/// than a count: a burst of small signals fits, a stalled reader does not
/// hold more than the budget. (The channel itself has no count bound; the
/// byte budget, checked before every push, is the bound.)
pub(crate) fn outbound_queue(budget: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (QueueTx { tx, bytes: bytes.clone(), budget }, QueueRx { rx, bytes })
}

/// Why a push into an outbound queue failed.
#[derive(Debug)]
pub(crate) enum PushError {
    /// The budget would be exceeded: the reader is too slow.
    Full,
    /// The connection is gone.
    Closed,
}

/// The sending side of an outbound queue (shards hold clones).
#[derive(Clone, Debug)]
pub(crate) struct QueueTx {
    tx: mpsc::UnboundedSender<Outbound>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
    budget: usize,
}

impl QueueTx {
    pub(crate) fn push(&self, msg: Outbound) -> Result<(), PushError> {
        let len = msg.len();
        // Only shards push, one at a time per connection in practice; a
        // race between two could overshoot by one message, never more.
        if self.bytes.load(Ordering::Relaxed) + len > self.budget {
            return Err(PushError::Full);
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.tx.send(msg).map_err(|_| PushError::Closed)
    }
}

/// The connection's side of its outbound queue.
#[derive(Debug)]
pub(crate) struct QueueRx {
    rx: mpsc::UnboundedReceiver<Outbound>,
    bytes: Arc<std::sync::atomic::AtomicUsize>,
}

impl QueueRx {
    /// The next message, once there is one.
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        let msg = self.rx.recv().await?;
        self.bytes.fetch_sub(msg.len(), Ordering::Relaxed);
        Some(msg)
    }

    /// The next message if one is waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Outbound> {
        let msg = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(msg.len(), Ordering::Relaxed);
        Some(msg)
    }
}

/// How a shard reaches one member's connection.
#[derive(Debug)]
pub(crate) struct PeerTx {
    /// Which connection this is.
    pub(crate) conn: ConnId,
    /// The connection's outbound queue.
    pub(crate) queue: QueueTx,
    /// Makes the connection close.
    pub(crate) kick: Arc<Kick>,
    /// Whether this connection got its peer id from a resume token.
    pub(crate) resumed: bool,
}

/// A signal's payload: the frame it came in and where `data` lies in it,
/// so relaying copies its bytes once, straight into the outgoing message.
#[derive(Debug)]
pub(crate) struct Payload {
    frame: Utf8Bytes,
    start: usize,
    end: usize,
}

impl Payload {
    /// The payload of `frame` whose `data` field is `data`, which must be
    /// borrowed from `frame` (as the parser's `RawValue`s are).
    pub(crate) fn new(frame: &Utf8Bytes, data: &str) -> Option<Payload> {
        let outer = frame.as_str();
        let start = (data.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
        let end = start.checked_add(data.len())?;
        outer.get(start..end)?;
        Some(Payload { frame: frame.clone(), start, end })
    }

    fn as_str(&self) -> &str {
        // `new` checked the range is in bounds and on char boundaries.
        self.frame.as_str().get(self.start..self.end).unwrap_or("null")
    }
}

/// What connections ask of a shard. Every command but `Join` names the
/// connection it comes from, and is ignored unless that connection is the
/// one the shard has for the peer.
#[derive(Debug)]
pub(crate) enum ShardCmd {
    /// Enter `room`; answers go to `tx`, which the shard keeps while the
    /// peer is a member. A connection already there for the same peer id is
    /// replaced.
    Join { peer: PeerId, room: RoomId, name: DisplayName, media: MediaState, tx: PeerTx },
    /// Relay a payload to another member of the sender's room.
    Signal { from: PeerId, conn: ConnId, to: PeerId, payload: Payload },
    /// Say something to the room.
    Chat { peer: PeerId, conn: ConnId, text: ChatText },
    /// Tell the room about a media change.
    Media { peer: PeerId, conn: ConnId, media: MediaState },
    /// Leave the room.
    Leave { peer: PeerId, conn: ConnId },
    /// The connection is gone.
    Disconnect { peer: PeerId, conn: ConnId },
}

/// The shards' inboxes. Cloning is cheap; the shard tasks end when the last
/// clone (and every connection's sender) is gone.
#[derive(Clone, Debug)]
pub(crate) struct Hub {
    shards: std::sync::Arc<[mpsc::Sender<ShardCmd>]>,
}

impl Hub {
    /// Spawns `count` shard tasks on the current runtime.
    pub(crate) fn start(count: usize, config: &Config, metrics: Arc<Metrics>) -> Hub {
        let shards = (0..count.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(SHARD_INBOX);
                let shard = Shard {
                    core: Rooms::new(room::Config {
                        capacity: config.room_capacity,
                        chat_history: config.chat_history,
                        chat_max_age_ms: u64::try_from(config.chat_max_age.as_millis()).unwrap_or(u64::MAX),
                    }),
                    peers: HashMap::new(),
                    ice: config.ice.clone(),
                    resume_key: config.resume_key.clone(),
                    resume_ttl: config.resume_ttl,
                    kicked: Vec::new(),
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
    core: Rooms<Payload>,
    /// Members' connections. A peer is here exactly while it is a member of
    /// one of this shard's rooms (or its join is being decided).
    peers: HashMap<PeerId, PeerTx>,
    ice: crate::IceConfig,
    resume_key: ResumeKey,
    resume_ttl: Duration,
    /// Members whose queue was full or closed, to drop after this command.
    kicked: Vec<PeerId>,
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
        let now_ms = u64::try_from(crate::unix_now().as_millis()).unwrap_or(u64::MAX);
        let peer = match cmd {
            ShardCmd::Join { peer, room, name, media, tx } => {
                let conn = tx.conn;
                if let Some(old) = self.peers.insert(peer, tx) {
                    if old.conn != conn {
                        tracing::info!(%peer, "a newer connection resumed this peer; closing the old one");
                        old.kick.kick(KickReason::Replaced);
                    }
                }
                self.core.handle_input(Input::Join { peer, room, name, media, now_ms });
                peer
            }
            ShardCmd::Signal { from, conn, to, payload } => {
                if !self.is_current(from, conn) {
                    return;
                }
                self.core.handle_input(Input::Signal { from, to, payload });
                from
            }
            ShardCmd::Chat { peer, conn, text } => {
                if !self.is_current(peer, conn) {
                    return;
                }
                self.metrics.chat_messages.fetch_add(1, Ordering::Relaxed);
                self.core.handle_input(Input::Chat { peer, text, now_ms });
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
            ShardCmd::Disconnect { peer, conn } => {
                if !self.is_current(peer, conn) {
                    return;
                }
                self.core.handle_input(Input::Disconnect { peer });
                peer
            }
        };
        self.flush();
        if self.core.room_of(peer).is_none() {
            self.peers.remove(&peer);
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
                if matches!(out, Output::Relay { .. }) {
                    self.metrics.signals_relayed.fetch_add(1, Ordering::Relaxed);
                }
                if let Output::Rejected { reason, .. } = &out {
                    self.metrics.error(rejection_code(*reason));
                }
                let (to, msg) = self.encode(out);
                self.deliver(to, msg);
            }
            let Some(peer) = self.kicked.pop() else { break };
            if let Some(tx) = self.peers.remove(&peer) {
                tracing::info!(%peer, "dropping a peer whose outbound queue is full");
                tx.kick.kick(KickReason::TooSlow);
            }
            self.core.handle_input(Input::Disconnect { peer });
        }
    }

    fn deliver(&mut self, to: PeerId, msg: Outbound) {
        let Some(tx) = self.peers.get(&to) else { return };
        if let Err(PushError::Full | PushError::Closed) = tx.queue.push(msg)
            && !self.kicked.contains(&to)
        {
            self.kicked.push(to);
        }
    }

    fn encode(&self, out: Output<Payload>) -> (PeerId, Outbound) {
        let text = |s: String| Utf8Bytes::from(s);
        match out {
            Output::Joined { to, room, name, capacity, peers, chat } => {
                let unix = crate::unix_now();
                let expires = (unix + self.resume_ttl).as_secs();
                let resume = self.resume_key.issue(&room, to, expires);
                let ice_servers = self.ice.for_peer(to, unix.as_secs());
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
                };
                (to, Outbound::JoinAnswer { text: text(encode(&msg)), room: Some(room) })
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
                };
                (to, Outbound::Text(text(encode(&msg))))
            }
            Output::PeerJoined { to, peer, polite } => {
                (to, Outbound::Text(text(encode(&ServerMsg::PeerJoined { peer: &peer, polite }))))
            }
            Output::PeerLeft { to, peer, reason } => {
                (to, Outbound::Text(text(encode(&ServerMsg::PeerLeft { peer, reason }))))
            }
            Output::Left { to, room } => {
                (to, Outbound::Text(text(encode(&ServerMsg::Left { room: room.as_str() }))))
            }
            Output::Relay { to, from, payload } => {
                (to, Outbound::Text(text(encode_relay(from, payload.as_str()))))
            }
            Output::Rejected { to, request, reason } => {
                let (code, message) = match reason {
                    Rejection::RoomFull { capacity } => {
                        (ErrorCode::RoomFull, format!("this call is full ({capacity} of {capacity})"))
                    }
                    Rejection::NotJoined => (ErrorCode::NotJoined, "join a room first".to_owned()),
                    Rejection::UnknownPeer => {
                        (ErrorCode::UnknownPeer, "no such peer in your room".to_owned())
                    }
                };
                let request_name = match request {
                    Request::Join => "join",
                    Request::Signal => "signal",
                    Request::Chat => "chat",
                    Request::Media => "media",
                    Request::Leave => "leave",
                };
                let body =
                    text(encode(&ServerMsg::Error { code, message: &message, request: Some(request_name) }));
                if request == Request::Join {
                    (to, Outbound::JoinAnswer { text: body, room: None })
                } else {
                    (to, Outbound::Text(body))
                }
            }
        }
    }
}

fn rejection_code(reason: Rejection) -> ErrorCode {
    match reason {
        Rejection::RoomFull { .. } => ErrorCode::RoomFull,
        Rejection::NotJoined => ErrorCode::NotJoined,
        Rejection::UnknownPeer => ErrorCode::UnknownPeer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_the_data_slice_of_its_frame() {
        let frame =
            Utf8Bytes::from(r#"{"type":"signal","to":"00000000000000ff","data":{"a":"é"}}"#.to_owned());
        let msg = signal::parse(frame.as_str()).expect("valid");
        let signal::ClientMsg::Signal { data, .. } = msg else { panic!("a signal") };
        let payload = Payload::new(&frame, data.get()).expect("inside the frame");
        assert_eq!(payload.as_str(), r#"{"a":"é"}"#);
        assert!(Payload::new(&frame, "elsewhere").is_none());
    }
}
