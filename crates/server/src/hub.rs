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
//! room, and the shard alone carries its decisions out to the [`Seat`]s
//! that routes check at every relay: a seat is taken when the core admits
//! its peer and vacated before anyone, the peer included, is told it left.
//!
//! Which peer id is seated where is kept once for all shards
//! ([`Seating`]): an id sits in one room at a time, and a resume token
//! takes it back only in that room.

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
use crate::queue::{JoinAnswer, KickReason, Outbound, PushError, QueueTx, Route, Seat};
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
    /// Its seat in the room it asks to join: its queue and kick switch,
    /// and whether it is still a member (which only this shard changes).
    pub(crate) seat: Arc<Seat>,
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

/// Which connection holds each peer id's seat, and in which room, for all
/// shards together: the one owner of "where does this id sit". A shard
/// claims an id here before seating it and releases it when the id leaves;
/// a claim for an id another connection holds succeeds only with a resume
/// token for the very room it sits in (and that room's shard then replaces
/// the older connection). Locked only for one map operation per join and
/// leave, never across an await.
///
/// It is also what the built-in TURN server asks before accepting a
/// credential ([`Seating::is_seated_user`]): credentials are handed to a
/// peer with `joined` and good only while it holds a seat. When it leaves,
/// the TURN server is told to end its allocations: at once after `leave`,
/// after [`RESUME_GRACE`] when the connection was lost (the page comes back
/// with its resume token and the same id, and its relayed call goes on).
#[derive(Debug, Default)]
pub(crate) struct Seating {
    held: std::sync::Mutex<PeerMap<Held>>,
    revoker: std::sync::OnceLock<crate::turn_io::Revoker>,
}

/// How long a peer whose connection was lost keeps its TURN allocations,
/// waiting for it to come back with its resume token.
pub(crate) const RESUME_GRACE: Duration = Duration::from_secs(30);

/// Who holds a peer id's seat: the connection, the room, and the seat
/// itself (each `join` makes a new one, so a late release of an older seat
/// never frees a newer claim).
#[derive(Debug)]
struct Held {
    conn: ConnId,
    room: RoomId,
    seat: Arc<Seat>,
}

impl Seating {
    fn lock(&self) -> std::sync::MutexGuard<'_, PeerMap<Held>> {
        // Nothing panics while holding it; the map stays consistent.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Claims `peer`'s seat in `room` for `conn`; false if another
    /// connection holds it and this one may not take it over.
    fn claim(&self, peer: PeerId, room: &RoomId, tx: &PeerTx) -> bool {
        let mut held = self.lock();
        if let Some(h) = held.get(&peer)
            && h.conn != tx.conn
            && !(tx.resumed && h.room == *room)
        {
            return false;
        }
        held.insert(peer, Held { conn: tx.conn, room: room.clone(), seat: tx.seat.clone() });
        true
    }

    /// `seat` no longer holds `peer`'s id (if it still did); its TURN
    /// credentials are revoked, after `grace`.
    fn release(&self, peer: PeerId, seat: &Arc<Seat>, grace: Duration) {
        let mut held = self.lock();
        if held.get(&peer).is_some_and(|h| Arc::ptr_eq(&h.seat, seat)) {
            held.remove(&peer);
            drop(held);
            if let Some(revoker) = self.revoker.get() {
                revoker.revoke(peer.to_string(), grace);
            }
        }
    }

    /// Whether `user` (a peer id, as TURN credentials name it) holds a seat.
    pub(crate) fn is_seated_user(&self, user: &str) -> bool {
        PeerId::parse(user).is_some_and(|peer| self.lock().contains_key(&peer))
    }

    /// Where revocations go: the built-in TURN server, once it runs.
    pub(crate) fn revoke_through(&self, revoker: crate::turn_io::Revoker) {
        let _ = self.revoker.set(revoker);
    }
}

/// Where shards keep what rooms hold beyond the process: cluster mode's
/// Redis (chat and access state, for a later home), or a single node's
/// state directory (access state, for after a restart).
#[derive(Default)]
pub(crate) struct Keepers {
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
    pub(crate) kept: Option<Arc<crate::kept::KeptRooms>>,
}

impl Hub {
    /// Spawns `count` shard tasks on the current runtime.
    /// `keepers` keep what rooms hold outside the process.
    /// Rooms with more than `p2p_max` members move to the SFU (`None`:
    /// there is none).
    pub(crate) fn start(
        count: usize,
        config: &Config,
        p2p_max: Option<usize>,
        metrics: Arc<Metrics>,
        seating: Arc<Seating>,
        sfu: Option<SfuHandle>,
        keepers: Keepers,
    ) -> Hub {
        let shards = (0..count.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(SHARD_INBOX);
                let mut shard = Shard::new(config, p2p_max, metrics.clone(), seating.clone(), sfu.clone());
                shard.cluster = keepers.cluster.clone();
                shard.kept = keepers.kept.clone();
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
    /// one of this shard's rooms (or its join is being decided), and its
    /// seat is taken exactly while the core has it in a room.
    peers: PeerMap<PeerTx>,
    /// Where every peer id sits, shared by all shards.
    seating: Arc<Seating>,
    ice: crate::IceConfig,
    resume_key: ResumeKey,
    resume_ttl: Duration,
    /// Members whose queue was full (true) or closed (false: the
    /// connection is gone), to drop after this command.
    kicked: Vec<(PeerId, bool)>,
    /// Peers a command may have taken out of every room (removed, denied):
    /// their connections are forgotten after it if so.
    departed: Vec<PeerId>,
    /// Where to tell what a member may send (see `Output::Allowed`).
    sfu: Option<SfuHandle>,
    /// Cluster mode: where the chat of rooms homed here is kept too, for
    /// the home that takes them over if this node goes.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// A single node's kept room settings (see `crate::kept`).
    kept: Option<Arc<crate::kept::KeptRooms>>,
    metrics: Arc<Metrics>,
    /// Rooms and members this shard last added to the metrics' gauges.
    counted: (usize, usize),
}

impl Shard {
    fn new(
        config: &Config,
        p2p_max: Option<usize>,
        metrics: Arc<Metrics>,
        seating: Arc<Seating>,
        sfu: Option<SfuHandle>,
    ) -> Shard {
        Shard {
            core: Rooms::new(room::Config {
                capacity: config.room_capacity,
                chat_history: config.chat_history,
                chat_max_age_ms: u64::try_from(config.chat_max_age.as_millis()).unwrap_or(u64::MAX),
                p2p_max,
                // 64 KiB a room, 16 MiB a shard.
                ..room::Config::default()
            }),
            peers: PeerMap::default(),
            seating,
            ice: config.ice.clone(),
            resume_key: config.resume_key.clone(),
            resume_ttl: config.resume_ttl,
            kicked: Vec::new(),
            departed: Vec::new(),
            sfu,
            cluster: None,
            kept: None,
            metrics,
            counted: (0, 0),
        }
    }

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
        let left = matches!(cmd, ShardCmd::Leave { .. });
        let peer = match cmd {
            ShardCmd::Join { peer, room, name, media, tx, admission } => {
                let conn = tx.conn;
                // A seat is taken over only by a resume token for that very
                // room: a peer id seated in another room (on any shard)
                // keeps its seat, and so does one seated by a connection
                // that did not resume.
                if !self.seating.claim(peer, &room, &tx) {
                    tracing::info!(%peer, %room, "refused a join that would take a seat held elsewhere");
                    self.metrics.error(ErrorCode::BadResume);
                    let err = ServerMsg::Error {
                        code: ErrorCode::BadResume,
                        message: crate::resume::ResumeError::Invalid.message(),
                        request: Some("join"),
                    };
                    let answer = JoinAnswer::refused(Utf8Bytes::from(encode(&err)));
                    tx.seat.vacate();
                    let _ = tx.seat.push(Outbound::JoinAnswer(Box::new(answer)));
                    return;
                }
                // A room that continues here from another node keeps what
                // was said and set there: kept again, as this node's now.
                let carried = !admission.access.is_open() || !admission.history.is_empty();
                if let Some(old) = self.peers.insert(peer, tx) {
                    // Vacated before the core tells the room it left.
                    old.seat.vacate();
                    if old.conn != conn {
                        tracing::info!(%peer, "a newer connection resumed this peer; closing the old one");
                        old.seat.kick(KickReason::Replaced);
                    }
                }
                self.core.handle_input(Input::Join {
                    peer,
                    room: room.clone(),
                    name,
                    media,
                    now_ms: now_ms(),
                    admission,
                });
                if carried
                    && self.core.room_of(peer) == Some(&room)
                    && let Some(access) = self.core.access(&room)
                {
                    if let Some(cluster) = &self.cluster {
                        cluster.continued(&room, &access);
                    }
                    if let Some(kept) = &self.kept {
                        kept.save(&room, &access);
                    }
                }
                // Taken before anyone gets a route to it, so the first
                // signal along one is delivered; and its queue held while
                // the room hears of it (see `Seat::hold`). One waiting in
                // the lobby keeps its seat untaken until a host admits it.
                if self.core.room_of(peer) == Some(&room)
                    && let Some(tx) = self.peers.get(&peer)
                {
                    tx.seat.take();
                    let seat = tx.seat.clone();
                    self.flush(&[(peer, seat)]);
                    if self.core.room_of(peer).is_none() {
                        self.unseat(peer, RESUME_GRACE);
                    }
                    self.update_gauges();
                    return;
                }
                peer
            }
            ShardCmd::Host { peer, conn, action } => {
                if !self.is_current(peer, conn) {
                    return;
                }
                let host = peer;
                // Those a host's answer may let in from the lobby (at most
                // `room::LOBBY_MAX`): their seats are taken before the room
                // hears of them, as a join's is.
                let waiting = self.core.room_of(host).map_or_else(Vec::new, |r| self.core.lobby_of(r));
                let access = matches!(action, HostCmd::Settings { .. } | HostCmd::Moderate(..));
                self.core.handle_input(match action {
                    HostCmd::Admit(peer) => Input::Admit { host, peer },
                    HostCmd::Deny(peer) => Input::Deny { host, peer },
                    HostCmd::Settings { locked, lobby, password } => {
                        Input::Settings { host, locked, lobby, password }
                    }
                    HostCmd::Moderate(peer, action) => Input::Moderate { host, peer, action },
                    HostCmd::EndCall => Input::EndCall { host },
                });
                if access {
                    self.keep_access(host);
                }
                // Everyone let in (one by a host's `admit`, all waiting when
                // the lobby is turned off) is seated, and each one's queue
                // held while the room hears of it, as for a join.
                let admitted: Vec<(PeerId, Arc<Seat>)> = waiting
                    .into_iter()
                    .filter(|p| self.core.room_of(*p).is_some())
                    .filter_map(|p| Some((p, self.peers.get(&p)?.seat.clone())))
                    .collect();
                for (_, seat) in &admitted {
                    seat.take();
                }
                self.flush(&admitted);
                self.unseat_departed(peer, false);
                self.update_gauges();
                return;
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
                self.vacate(peer);
                self.core.handle_input(Input::Leave { peer });
                peer
            }
            ShardCmd::Peek { room, queue } => {
                let (peers, capacity) = self.core.occupancy(&room);
                let names = self.core.names_in(&room);
                let settings = self.core.settings_of(&room).unwrap_or_default();
                let msg = encode(&ServerMsg::RoomState {
                    room: room.as_str(),
                    peers,
                    capacity,
                    names: &names,
                    settings,
                });
                // A full or closed queue: the connection is too slow or
                // gone; it is not a member, so there is nobody to drop.
                let _ = queue.push(Outbound::Text(Utf8Bytes::from(msg)));
                return;
            }
            ShardCmd::Disconnect { peer, conn } => {
                if !self.is_current(peer, conn) {
                    return;
                }
                self.vacate(peer);
                self.core.handle_input(Input::Disconnect { peer });
                peer
            }
        };
        self.flush(&[]);
        self.unseat_departed(peer, left);
        self.update_gauges();
    }

    /// Forgets the connections of `peer` (the one whose command this was)
    /// and of everyone the command took out of every room (removed,
    /// turned away from a lobby), once the core has let them go. `peer`
    /// said `leave` if `left`: its relays are of no more use. Otherwise (a
    /// lost connection, a refused join) it may come back, and its TURN
    /// allocations last a little. Those a host removed keep none.
    fn unseat_departed(&mut self, peer: PeerId, left: bool) {
        if self.core.place_of(peer).is_none() {
            let grace = if left { Duration::ZERO } else { RESUME_GRACE };
            self.unseat(peer, grace);
        }
        while let Some(gone) = self.departed.pop() {
            if self.core.place_of(gone).is_none() {
                self.unseat(gone, Duration::ZERO);
            }
        }
    }

    /// Vacates `peer`'s seat: from now on no relay reaches it and none
    /// leaves it. Called before the core is told, so before any `peer-left`
    /// or `left` saying so is pushed.
    fn vacate(&self, peer: PeerId) {
        if let Some(tx) = self.peers.get(&peer) {
            tx.seat.vacate();
        }
    }

    /// Forgets `peer`'s connection (its seat vacated) and gives up its id's
    /// claim, once the core has let it go; its TURN allocations end after
    /// `grace`.
    fn unseat(&mut self, peer: PeerId, grace: Duration) -> Option<PeerTx> {
        let tx = self.peers.remove(&peer)?;
        tx.seat.vacate();
        self.seating.release(peer, &tx.seat, grace);
        Some(tx)
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

    /// Cluster mode: keeps the access state of `peer`'s room in Redis, for
    /// a later home (each change a host makes is written whole; they are
    /// few, and the message limits bound them).
    fn keep_access(&self, peer: PeerId) {
        let Some(room) = self.core.room_of(peer) else { return };
        let Some(access) = self.core.access(room) else { return };
        if let Some(cluster) = &self.cluster {
            cluster.save_access(room, &access);
        }
        if let Some(kept) = &self.kept {
            kept.save(room, &access);
        }
    }

    /// Tells the cluster (if any) about rooms that ended, so that what
    /// Redis kept for them goes (a room that began again since keeps it).
    fn forget_closed(&mut self) {
        while let Some((room, how)) = self.core.poll_closed() {
            if self.core.access(&room).is_some() {
                continue; // It began again since.
            }
            if let Some(cluster) = &self.cluster {
                cluster.room_closed(&room, how);
            }
            if let Some(kept) = &self.kept {
                kept.closed(&room, how);
            }
        }
    }

    /// Delivers everything the core produced, then drops members that could
    /// not take their messages, which produces `peer-left`s to deliver too.
    /// Each of the `newcomers` (seated already) has its queue held from the
    /// first output that announces it until its `joined` is in (see
    /// [`Seat::hold`]): one at a time, in the order the core let them in.
    fn flush(&mut self, newcomers: &[(PeerId, Arc<Seat>)]) {
        let mut held: Option<(PeerId, crate::queue::Hold<'_>)> = None;
        loop {
            while let Some(out) = self.core.poll_output() {
                if let Output::Rejected { reason, .. } = &out {
                    self.metrics.error(rejection_code(*reason));
                }
                let (about, joined) = match &out {
                    Output::PeerJoined { peer, .. } => (Some(peer.id), false),
                    Output::Joined { to, .. } => (Some(*to), true),
                    _ => (None, false),
                };
                if let Some(p) = about
                    && held.as_ref().is_none_or(|(h, _)| *h != p)
                    && let Some((_, seat)) = newcomers.iter().find(|(n, _)| *n == p)
                {
                    // Never two newcomers' queues at once.
                    drop(held.take());
                    held = Some((p, seat.hold()));
                }
                let Some((to, msg)) = self.encode(out) else { continue };
                match &mut held {
                    Some((newcomer, hold)) if *newcomer == to => {
                        if let Err(e) = hold.push(msg) {
                            self.kick_later(to, e);
                        }
                        if joined {
                            held = None;
                        }
                    }
                    _ => self.deliver(to, msg),
                }
            }
            // Released before anyone is dropped: that pushes `peer-left`s,
            // perhaps to the newcomer.
            held = None;
            let Some((peer, full)) = self.kicked.pop() else { break };
            if let Some(tx) = self.unseat(peer, RESUME_GRACE)
                && full
            {
                tracing::info!(%peer, "dropping a peer whose outbound queue is full");
                tx.seat.kick(KickReason::TooSlow);
            }
            self.core.handle_input(Input::Disconnect { peer });
        }
        self.forget_closed();
    }

    fn deliver(&mut self, to: PeerId, msg: Outbound) {
        let Some(tx) = self.peers.get(&to) else { return };
        if let Err(e) = tx.seat.push(msg) {
            self.kick_later(to, e);
        }
    }

    /// Drops `to` once this command is done: its queue is full (too slow)
    /// or closed (its connection is gone, and its own disconnect may not
    /// have reached this shard yet).
    fn kick_later(&mut self, to: PeerId, e: PushError) {
        let full = match e {
            PushError::Full => true,
            PushError::Closed => false,
            // Not this queue's business (only the SFU's pushes check it).
            PushError::NotSeated => return,
        };
        if !self.kicked.iter().any(|(p, _)| *p == to) {
            self.kicked.push((to, full));
        }
    }

    /// The route from `from`'s seat to `to`'s.
    fn route(&self, from: PeerId, to: PeerId) -> Option<Route> {
        let seat = |p| self.peers.get(&p).map(|tx: &PeerTx| tx.seat.clone());
        Some(Route { from: seat(from)?, to: seat(to)? })
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
                let routes = peers.iter().filter_map(|(p, _)| Some((p.id, self.route(to, p.id)?))).collect();
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
                // Kept once per message: with the sender's own copy.
                if to == entry.from
                    && let (Some(cluster), Some(room)) = (&self.cluster, self.core.room_of(to))
                {
                    cluster.save_chat(room, &entry);
                }
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
                match self.route(to, peer.id) {
                    Some(route) => (to, Outbound::PeerJoined(Box::new((body, peer.id, route)))),
                    None => (to, Outbound::Text(body)),
                }
            }
            Output::PeerLeft { to, peer, reason } => {
                (to, Outbound::PeerLeft { text: text(encode(&ServerMsg::PeerLeft { peer, reason })), peer })
            }
            Output::Left { to, room } => {
                (to, Outbound::Left(text(encode(&ServerMsg::Left { room: room.as_str() }))))
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
                // Vacated before anyone hears of it (the core tells the
                // others after this), like a leave.
                self.vacate(to);
                self.departed.push(to);
                let msg = text(encode(&ServerMsg::Removed { room: room.as_str(), reason, by }));
                (to, Outbound::Left(msg))
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
                    Rejection::RateLimited => {
                        "too many chat messages just now: this one was not sent".to_owned()
                    }
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
        Rejection::RateLimited => ErrorCode::RateLimited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Kick, QueueRx, QueueTx, outbound_queue};

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).expect("room name")
    }

    /// A connection as the shards see it, driven by hand: what it sends
    /// them, and what they and others put in its queue.
    struct Peer {
        id: PeerId,
        conn: ConnId,
        queue: QueueTx,
        rx: QueueRx,
        kick: Arc<Kick>,
    }

    impl Peer {
        fn new(n: u64) -> Peer {
            let (queue, rx) = outbound_queue(1 << 20, crate::limits::ByteBudget::new(usize::MAX));
            Peer { id: PeerId(n), conn: n, queue, rx, kick: Arc::new(Kick::default()) }
        }

        /// A `join` as conn.rs sends it, with a new seat.
        fn join(&self, room_name: &str, resumed: bool) -> ShardCmd {
            let seat = Seat::new(self.queue.clone(), self.kick.clone());
            let tx = PeerTx { conn: self.conn, seat, resumed, reached: None };
            let name = DisplayName::parse("x").expect("name");
            ShardCmd::Join {
                peer: self.id,
                room: room(room_name),
                name,
                media: MediaState::default(),
                tx,
                admission: room::Admission { resumed, ..room::Admission::default() },
            }
        }

        fn leave(&self) -> ShardCmd {
            ShardCmd::Leave { peer: self.id, conn: self.conn }
        }

        /// Everything queued for this connection so far.
        fn take(&mut self) -> Vec<Outbound> {
            let mut out = Vec::new();
            self.rx.try_recv_many(&mut out, usize::MAX);
            out
        }

        /// The routes this connection was handed, in the order it got them.
        fn routes(&mut self) -> Vec<(PeerId, Route)> {
            let mut routes = Vec::new();
            for out in self.take() {
                match out {
                    Outbound::JoinAnswer(answer) => routes.extend(answer.routes),
                    Outbound::PeerJoined(j) => routes.push((j.1, j.2)),
                    _ => {}
                }
            }
            routes
        }
    }

    fn route_to(routes: &[(PeerId, Route)], to: &Peer) -> Route {
        routes.iter().find(|(p, _)| *p == to.id).map(|(_, r)| r.clone()).expect("a route")
    }

    fn text(out: &Outbound) -> &str {
        match out {
            Outbound::Text(t)
            | Outbound::Left(t)
            | Outbound::PeerLeft { text: t, .. }
            | Outbound::Role { text: t, .. } => t.as_str(),
            Outbound::JoinAnswer(a) => a.text.as_str(),
            Outbound::PeerJoined(j) => j.0.as_str(),
        }
    }

    fn shards(n: usize) -> Vec<Shard> {
        let seating = Arc::new(Seating::default());
        let metrics = Arc::new(Metrics::default());
        (0..n).map(|_| Shard::new(&Config::default(), None, metrics.clone(), seating.clone(), None)).collect()
    }

    /// Issue 10, finding 7, step by step. Shard 1 holds room X, shard 2
    /// room Y. C joins X after A, so shard 1 hands A a route to C; A leaves
    /// X and joins Y. On the old code A's connection could still hold that
    /// route (a `peer-joined` from shard 1 read after its `joined` from
    /// shard 2) and signal C through it: C heard from a peer outside its
    /// room. Now the route leads nowhere once A's seat in X is vacated,
    /// whatever A holds, and neither does C's route to A.
    #[test]
    fn a_peer_that_left_cannot_reach_a_member_of_its_old_room() {
        let mut s = shards(2);
        let (mut a, mut c, mut b) = (Peer::new(1), Peer::new(3), Peer::new(2));
        s[0].handle(a.join("x", false));
        s[1].handle(b.join("y", false));
        s[0].handle(c.join("x", false));
        let a_to_c = route_to(&a.routes(), &c);
        let c_to_a = route_to(&c.routes(), &a);
        assert_eq!(a_to_c.relay("while in X".into()), Ok(()));
        assert_eq!(text(&c.take()[0]), "while in X");

        s[0].handle(a.leave());
        let to_a = a.take();
        assert!(text(to_a.last().expect("left")).contains(r#""type":"left""#), "left comes last");
        s[1].handle(a.join("y", false));
        assert!(a.routes().iter().any(|(p, _)| *p == b.id), "A is in Y now");
        assert!(!c.take().is_empty(), "C heard A leave");

        assert_eq!(a_to_c.relay("from Y".into()), Err(PushError::NotSeated));
        assert_eq!(c_to_a.relay("to X".into()), Err(PushError::NotSeated));
        assert!(c.take().is_empty(), "nothing from A reaches C");
        assert!(a.take().is_empty(), "nothing from C reaches A");
        assert!(b.take().iter().all(|o| !text(o).contains("from Y")));
    }

    /// A route handed to the members already there is good at once, and
    /// what they send along it arrives after the newcomer's `joined`, never
    /// before; a route from before a peer left and came back is dead.
    #[test]
    fn a_newcomer_hears_joined_before_any_signal_and_old_routes_stay_dead() {
        let mut s = shards(1);
        let (mut a, mut c) = (Peer::new(1), Peer::new(3));
        s[0].handle(a.join("x", false));
        a.take();
        s[0].handle(c.join("x", false));
        let a_to_c = route_to(&a.routes(), &c);
        assert_eq!(a_to_c.relay("offer".into()), Ok(()));
        let to_c = c.take();
        assert!(text(&to_c[0]).contains(r#""type":"joined""#), "{}", text(&to_c[0]));
        assert_eq!(text(&to_c[1]), "offer");

        s[0].handle(c.leave());
        s[0].handle(c.join("x", false));
        c.take();
        assert_eq!(a_to_c.relay("stale".into()), Err(PushError::NotSeated));
        let fresh = route_to(&a.routes(), &c);
        assert_eq!(fresh.relay("fresh".into()), Ok(()));
        assert_eq!(c.take().iter().map(text).collect::<Vec<_>>(), ["fresh"]);
    }

    /// Issue 10, finding 8 across shards: where a peer id sits is known to
    /// every shard. A resumed join for that id in a room on another shard
    /// is refused and leaves the seated connection alone; one for its own
    /// room replaces the older connection.
    #[test]
    fn a_peer_id_sits_in_one_room_across_shards() {
        let mut s = shards(2);
        let (mut a, mut b) = (Peer::new(1), Peer::new(2));
        s[0].handle(a.join("x", false));
        s[0].handle(b.join("x", false));
        let b_to_a = route_to(&b.routes(), &a);
        a.take();

        // Another connection with a token for room Y, naming A's id.
        let mut thief = Peer::new(9);
        thief.id = a.id;
        s[1].handle(thief.join("y", true));
        let answer = thief.take();
        assert!(text(&answer[0]).contains("bad-resume"), "{}", text(&answer[0]));
        assert_eq!(s[1].core.room_of(a.id), None);
        assert_eq!(b_to_a.relay("still A".into()), Ok(()));
        assert_eq!(a.take().iter().map(text).collect::<Vec<_>>(), ["still A"]);

        // A fresh join naming the id (no token) is refused in X too.
        s[0].handle(thief.join("x", false));
        assert!(text(&thief.take()[0]).contains("bad-resume"));

        // The same id back in its own room with a token: the old
        // connection is replaced, and routes to it are dead.
        let mut back = Peer::new(10);
        back.id = a.id;
        s[0].handle(back.join("x", true));
        assert!(a.kick.reason() == Some(KickReason::Replaced));
        assert_eq!(b_to_a.relay("old A".into()), Err(PushError::NotSeated));
        assert!(text(&back.take()[0]).contains(r#""type":"joined""#));

        // Once it leaves, the id is free for a token of another room.
        s[0].handle(ShardCmd::Leave { peer: a.id, conn: back.conn });
        s[1].handle(thief.join("y", true));
        assert!(text(&thief.take()[0]).contains(r#""type":"joined""#));
    }
}
