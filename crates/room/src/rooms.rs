//! The state machine: rooms, their members, who may send to whom, and what
//! a newcomer is told (members, media state, recent chat).

use std::collections::{HashMap, VecDeque};

use crate::access::{
    Action, Admission, Grants, KnockEnd, NOTHING_HELD, PasswordChange, PasswordHash, PasswordLimiter,
    RemoveReason, Role, RoomAccess, Settings,
};
use crate::ids::{ChatId, ChatText, DisplayName, MediaState, PeerId, PeerMap, RoomId};

/// Most people waiting in one room's lobby.
pub const LOBBY_MAX: usize = 20;
/// Most ids and addresses one room bars (the oldest bar goes first).
pub const BARRED_MAX: usize = 256;

/// Settings of a [`Rooms`] core.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Most peers one room holds; a join beyond it is refused.
    pub capacity: usize,
    /// Most chat messages a room remembers for newcomers.
    pub chat_history: usize,
    /// Most bytes of chat a room remembers (text, name and id of each
    /// message, plus [`CHAT_ENTRY_OVERHEAD`]); older messages go first.
    pub chat_history_bytes: usize,
    /// Most bytes of chat all rooms of this core remember together: past
    /// it, a room's oldest messages go first, and a message that does not
    /// fit is delivered but not remembered.
    pub chat_bytes_total: usize,
    /// Oldest chat message a room remembers, in milliseconds.
    pub chat_max_age_ms: u64,
    /// A room with more members than this moves to the SFU ([`Mode::Sfu`])
    /// and stays there until it empties; `None`: rooms never do (no SFU).
    pub p2p_max: Option<usize>,
    /// Chat messages one member may send a second, and in a burst: each
    /// goes to the whole room, so one flooder costs every member.
    pub chat_member: Rate,
    /// Chat messages a whole room may send a second, and in a burst: many
    /// flooders in one room cost no more than this.
    pub chat_room: Rate,
}

/// A sustained rate per second and a burst, for [`Bucket`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Per second, sustained.
    pub per_sec: u32,
    /// At once, after a quiet while.
    pub burst: u32,
}

/// A token bucket on the shell's clock (milliseconds), in thousandths of
/// a token; full when made.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli: u64,
    at_ms: u64,
}

impl Bucket {
    fn full(rate: Rate, now_ms: u64) -> Bucket {
        Bucket { milli: u64::from(rate.burst) * 1000, at_ms: now_ms }
    }

    /// Takes one token if there is one.
    fn take(&mut self, rate: Rate, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.at_ms = self.at_ms.max(now_ms);
        let cap = u64::from(rate.burst) * 1000;
        self.milli = self.milli.saturating_add(elapsed.saturating_mul(u64::from(rate.per_sec))).min(cap);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: 2,
            chat_history: 100,
            chat_history_bytes: 64 * 1024,
            chat_bytes_total: 16 * 1024 * 1024,
            chat_max_age_ms: 60 * 60 * 1000,
            p2p_max: None,
            // A person types far slower; a reconnecting page resends what
            // it wrote offline (at most 50 messages, the web client's
            // outbox) at once.
            chat_member: Rate { per_sec: 5, burst: 50 },
            chat_room: Rate { per_sec: 50, burst: 100 },
        }
    }
}

/// How a room's media travels.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Mode {
    /// Browser to browser.
    #[default]
    P2p,
    /// Through the server's SFU. One-way: a room in this mode stays in it
    /// until it empties, so people coming and going in a group call never
    /// cause a second switch (and a second gap in everyone's media).
    Sfu,
}

/// A peer as others see it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerInfo {
    /// Its identity.
    pub id: PeerId,
    /// Its display name.
    pub name: DisplayName,
    /// Its microphone, camera and screen share, as it last said.
    pub media: MediaState,
    /// Host or guest.
    pub role: Role,
}

/// One chat message, as delivered and as kept in a room's history.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChatEntry {
    /// The sender.
    pub from: PeerId,
    /// The sender's name when it sent this.
    pub name: DisplayName,
    /// What it said.
    pub text: ChatText,
    /// When the server got it, in milliseconds since 1970 (the shell's
    /// clock, passed in).
    pub ts_ms: u64,
    /// The sender's name for it, if it gave one (see [`ChatId`]).
    pub id: Option<ChatId>,
}

/// How a room ended (see [`Rooms::poll_closed`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Closing {
    /// On purpose: a host ended the call, or its last member left. What
    /// the room kept (chat, access) may go with it.
    Ended,
    /// Its last member's connection ended (or the last one waiting gave
    /// up): its members may still come back with their resume tokens.
    Emptied,
}

/// Why a peer is no longer in a room.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LeaveReason {
    /// The peer asked to leave.
    Left,
    /// Its connection ended (closed, timed out, dropped by the server, or
    /// replaced by a newer connection with the same id).
    Disconnected,
    /// A host removed it.
    Removed,
}

/// What a peer asked for, as far as the core is concerned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Request {
    /// `join`
    Join,
    /// `signal`
    Signal,
    /// `chat`
    Chat,
    /// `media`
    Media,
    /// `leave`
    Leave,
    /// `admit`
    Admit,
    /// `deny`
    Deny,
    /// `room-settings`
    Settings,
    /// `moderate`
    Moderate,
    /// `end-call`
    EndCall,
}

/// Why the core refused a request. These are expected states, not bugs: the
/// shell turns them into wire errors.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rejection {
    /// The room already holds `capacity` peers.
    RoomFull {
        /// The room's capacity.
        capacity: usize,
    },
    /// The peer is in no room.
    NotJoined,
    /// The addressee is not another peer of the sender's room.
    UnknownPeer,
    /// A host action from a guest.
    NotHost,
    /// A host locked the room.
    Locked,
    /// The room has a password and the join gave none.
    PasswordRequired,
    /// The join's password is wrong.
    BadPassword,
    /// Too many wrong passwords from this address lately.
    TooManyAttempts,
    /// The room's lobby holds as many as it may.
    LobbyFull,
    /// A host did not admit the peer (or ended the call while it waited).
    Denied,
    /// A host removed the peer and barred it.
    Barred,
    /// The peer's grants do not allow this.
    NotAllowed,
    /// A host holds this source off.
    Held,
    /// Too many chat messages from this member, or in its room, just now.
    RateLimited,
}

/// Something that happened, fed in by the IO shell.
#[derive(Debug)]
pub enum Input<P> {
    /// `peer` asks to enter `room`. If `peer` is a member already (it came
    /// back with its old id while its old connection lingers), the old
    /// membership ends first: the others hear it left, then that it joined.
    Join {
        /// Who asks.
        peer: PeerId,
        /// Which room.
        room: RoomId,
        /// The name the others will see.
        name: DisplayName,
        /// Its media state to start with.
        media: MediaState,
        /// The shell's clock, in milliseconds since 1970 (for chat history
        /// and the password limit).
        now_ms: u64,
        /// What the join proves (tokens checked by the shell).
        admission: Admission,
    },
    /// `from` asks to relay `payload` to `to`.
    Signal {
        /// The sender.
        from: PeerId,
        /// The addressee.
        to: PeerId,
        /// Opaque to the core.
        payload: P,
    },
    /// `peer` says something to its room.
    Chat {
        /// Who.
        peer: PeerId,
        /// What.
        text: ChatText,
        /// The sender's name for the message, if it gave one, so that
        /// receivers can show it once if it is sent again (see [`ChatId`]).
        /// The core keeps it with the message and checks nothing about it.
        id: Option<ChatId>,
        /// The shell's clock, in milliseconds since 1970.
        now_ms: u64,
    },
    /// `peer` turned its microphone, camera or screen share on or off.
    Media {
        /// Who.
        peer: PeerId,
        /// Its new state.
        media: MediaState,
    },
    /// `peer` asks to leave its room.
    Leave {
        /// Who asks.
        peer: PeerId,
    },
    /// `peer`'s connection is gone. Unlike [`Input::Leave`], this is not a
    /// request: nobody is left to refuse, so it never yields a rejection.
    Disconnect {
        /// Whose connection.
        peer: PeerId,
    },
    /// Host `host` lets `peer` in from the lobby.
    Admit {
        /// Who asks.
        host: PeerId,
        /// Who waits.
        peer: PeerId,
    },
    /// Host `host` turns `peer` away from the lobby.
    Deny {
        /// Who asks.
        host: PeerId,
        /// Who waits.
        peer: PeerId,
    },
    /// Host `host` changes its room's settings (`None`: unchanged).
    Settings {
        /// Who asks.
        host: PeerId,
        /// Lock or unlock.
        locked: Option<bool>,
        /// Lobby on or off.
        lobby: Option<bool>,
        /// A new password, or none.
        password: Option<PasswordChange>,
    },
    /// Host `host` acts on `peer`.
    Moderate {
        /// Who asks.
        host: PeerId,
        /// On whom.
        peer: PeerId,
        /// What.
        action: Action,
    },
    /// Host `host` ends the call for everyone.
    EndCall {
        /// Who asks.
        host: PeerId,
    },
}

/// Something the IO shell must deliver. Every output names exactly one
/// recipient: the core never broadcasts beyond a room's member list.
#[derive(Debug, PartialEq)]
pub enum Output<P> {
    /// `to` is now in `room`.
    Joined {
        /// The new member.
        to: PeerId,
        /// The room, canonical name.
        room: RoomId,
        /// Its own name, as accepted.
        name: DisplayName,
        /// The room's capacity.
        capacity: usize,
        /// The others already there, oldest first, each with `to`'s role
        /// towards it (perfect negotiation).
        peers: Vec<(PeerInfo, bool)>,
        /// The room's recent chat, oldest first.
        chat: Vec<ChatEntry>,
        /// How the room's media travels.
        mode: Mode,
        /// Its role.
        role: Role,
        /// What it may send.
        grants: Grants,
        /// The room's settings.
        settings: Settings,
        /// Who waits in the lobby, oldest first (for hosts; empty for
        /// guests).
        lobby: Vec<(PeerId, DisplayName)>,
    },
    /// `to`'s room switched to `mode`. Comes before the `PeerJoined` of
    /// the newcomer that caused it.
    RoomMode {
        /// A member from before the switch.
        to: PeerId,
        /// The room's new mode.
        mode: Mode,
    },
    /// `peer` entered `to`'s room.
    PeerJoined {
        /// An older member.
        to: PeerId,
        /// The newcomer.
        peer: PeerInfo,
        /// `to`'s role towards the newcomer.
        polite: bool,
    },
    /// `peer` left `to`'s room.
    PeerLeft {
        /// A remaining member.
        to: PeerId,
        /// Who left.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// `peer` in `to`'s room changed its media state.
    PeerMedia {
        /// Another member.
        to: PeerId,
        /// Who changed.
        peer: PeerId,
        /// Its new state.
        media: MediaState,
    },
    /// A chat message in `to`'s room (its own included).
    Chat {
        /// A member.
        to: PeerId,
        /// The message.
        entry: ChatEntry,
    },
    /// `to` left `room`, as it asked.
    Left {
        /// Who left.
        to: PeerId,
        /// Which room.
        room: RoomId,
    },
    /// Deliver `payload` from `from` to `to`; both are in the same room.
    Relay {
        /// The addressee.
        to: PeerId,
        /// The sender.
        from: PeerId,
        /// As the sender gave it.
        payload: P,
    },
    /// `to` waits in `room`'s lobby.
    Waiting {
        /// Who waits.
        to: PeerId,
        /// Where.
        room: RoomId,
    },
    /// `peer` waits in the lobby of `to`'s room (`to` is a host).
    Knock {
        /// A host.
        to: PeerId,
        /// Who waits.
        peer: PeerId,
        /// Its name.
        name: DisplayName,
    },
    /// `peer` no longer waits in the lobby of `to`'s room.
    KnockGone {
        /// A host.
        to: PeerId,
        /// Who waited.
        peer: PeerId,
        /// Why it stopped.
        reason: KnockEnd,
    },
    /// The settings of `to`'s room changed.
    Settings {
        /// A member.
        to: PeerId,
        /// The new settings.
        settings: Settings,
    },
    /// `peer` in `to`'s room has a new role.
    PeerRole {
        /// A member (`peer` itself included).
        to: PeerId,
        /// Whose role.
        peer: PeerId,
        /// The role.
        role: Role,
    },
    /// Host `by` acted on `to`.
    Moderated {
        /// The member acted on.
        to: PeerId,
        /// The action.
        action: Action,
        /// The host.
        by: PeerId,
        /// What `to` may not turn on now.
        held: MediaState,
    },
    /// `to` was taken out of `room`.
    Removed {
        /// The member removed.
        to: PeerId,
        /// Its room.
        room: RoomId,
        /// Why.
        reason: RemoveReason,
        /// The host who did it.
        by: PeerId,
    },
    /// What `to`'s connection may send the SFU from now on: the shell
    /// enforces it there. Given whenever it changes, and everything when
    /// `to` leaves (so the shell can forget it).
    Allowed {
        /// A member.
        to: PeerId,
        /// What it may send.
        allowed: MediaState,
    },
    /// `to`'s request was refused; nothing else changed.
    Rejected {
        /// Who asked.
        to: PeerId,
        /// What it asked for.
        request: Request,
        /// Why not.
        reason: Rejection,
    },
}

/// Everything on: what a peer without limits may send.
const ALL: MediaState = MediaState { audio: true, video: true, screen: true };

/// What is on in both.
fn and(a: MediaState, b: MediaState) -> MediaState {
    MediaState { audio: a.audio && b.audio, video: a.video && b.video, screen: a.screen && b.screen }
}

/// The hosts among `peers`.
fn hosts<'a>(members: &'a PeerMap<Member>, peers: &'a [PeerId]) -> impl Iterator<Item = PeerId> + 'a {
    peers.iter().copied().filter(|p| members.get(p).is_some_and(|m| m.role == Role::Host))
}

/// Appends `item`, forgetting the oldest beyond [`BARRED_MAX`].
fn push_capped<T: PartialEq>(list: &mut VecDeque<T>, item: T) {
    if !list.contains(&item) {
        if list.len() >= BARRED_MAX {
            list.pop_front();
        }
        list.push_back(item);
    }
}

/// In each pair, the peer whose id sorts later is polite. A rule on ids
/// rather than join order, so roles stay the same when peers come back.
fn polite(me: PeerId, other: PeerId) -> bool {
    me > other
}

#[derive(Debug)]
struct Member {
    room: RoomId,
    name: DisplayName,
    media: MediaState,
    role: Role,
    grants: Grants,
    /// Sources a host turned off and holds off.
    held: MediaState,
    /// The client's address, for a bar.
    addr: std::net::IpAddr,
    /// Its chat budget.
    chat: Bucket,
}

impl Member {
    fn allowed(&self) -> MediaState {
        self.grants.allowed(self.held)
    }
}

/// Someone asking to come in: waiting in a lobby, or entering.
#[derive(Debug)]
struct Knock {
    peer: PeerId,
    name: DisplayName,
    media: MediaState,
    grants: Grants,
    addr: std::net::IpAddr,
}

#[derive(Debug, Default)]
struct Room {
    /// Members, in join order.
    peers: Vec<PeerId>,
    /// Waiting in the lobby, oldest first; at most [`LOBBY_MAX`].
    lobby: Vec<Knock>,
    locked: bool,
    lobby_on: bool,
    password: Option<PasswordHash>,
    /// Removed and barred: ids and addresses, at most [`BARRED_MAX`] each.
    barred_ids: VecDeque<PeerId>,
    barred_addrs: VecDeque<std::net::IpAddr>,
    /// Removed (barred or not): their resume tokens no longer walk in.
    removed: VecDeque<PeerId>,
    /// Sources hosts hold off, by peer, kept while the room lasts so that a
    /// reconnect does not lift a hold (at most [`BARRED_MAX`]).
    holds: VecDeque<(PeerId, MediaState)>,
    /// At most `Config::chat_history` entries, oldest first.
    chat: VecDeque<ChatEntry>,
    /// What `chat` holds, counted by [`chat_bytes`].
    chat_bytes: usize,
    /// The room's chat budget (`None`: full).
    chat_budget: Option<Bucket>,
    mode: Mode,
}

/// At most this many names answer a `peek` (`room-state.names`), however
/// big the room: the answer stays small (8 names of at most 40 characters).
pub const PEEK_NAMES: usize = 8;

/// What a remembered chat message costs beyond its strings (the entry, its
/// place in the queue, the allocations' headers), for the byte bounds.
pub const CHAT_ENTRY_OVERHEAD: usize = 96;

/// The bytes a remembered chat message counts for.
fn chat_bytes(e: &ChatEntry) -> usize {
    e.text.as_str().len()
        + e.name.as_str().len()
        + e.id.as_ref().map_or(0, |id| id.as_str().len())
        + CHAT_ENTRY_OVERHEAD
}

impl Room {
    /// A room that continues with `access`, as kept by a previous home
    /// (checked again: what comes from outside is not taken on trust).
    fn restored(access: &RoomAccess) -> Room {
        let mut r = Room {
            locked: access.locked,
            lobby_on: access.lobby,
            password: access.password.clone(),
            ..Room::default()
        };
        for id in &access.barred_ids {
            push_capped(&mut r.barred_ids, *id);
        }
        for addr in &access.barred_addrs {
            push_capped(&mut r.barred_addrs, *addr);
        }
        for id in &access.removed {
            push_capped(&mut r.removed, *id);
        }
        for (peer, held) in &access.holds {
            if *held != NOTHING_HELD && !r.holds.iter().any(|(p, _)| p == peer) {
                if r.holds.len() >= BARRED_MAX {
                    r.holds.pop_front();
                }
                r.holds.push_back((*peer, *held));
            }
        }
        r
    }

    /// What the room keeps about access, to continue elsewhere.
    fn access(&self) -> RoomAccess {
        RoomAccess {
            locked: self.locked,
            lobby: self.lobby_on,
            password: self.password.clone(),
            barred_ids: self.barred_ids.iter().copied().collect(),
            barred_addrs: self.barred_addrs.iter().copied().collect(),
            removed: self.removed.iter().copied().collect(),
            holds: self.holds.iter().copied().collect(),
        }
    }

    fn settings(&self) -> Settings {
        Settings { locked: self.locked, lobby: self.lobby_on, password: self.password.is_some() }
    }

    /// Forgets the oldest message; returns its bytes.
    fn forget_oldest(&mut self) -> usize {
        let bytes = self.chat.pop_front().map_or(0, |e| chat_bytes(&e));
        self.chat_bytes -= bytes;
        bytes
    }

    /// Forgets messages older than `max_age_ms`; returns their bytes.
    fn expire_chat(&mut self, now_ms: u64, max_age_ms: u64) -> usize {
        let mut freed = 0;
        while self.chat.front().is_some_and(|e| now_ms.saturating_sub(e.ts_ms) > max_age_ms) {
            freed += self.forget_oldest();
        }
        freed
    }
}

/// All rooms of one shard and their members. Feed it with
/// [`Rooms::handle_input`], then drain [`Rooms::poll_output`] until `None`.
///
/// Invariants: every member of a room is in `members` with that room, and
/// every entry of `members` is listed in exactly its room; no room is
/// without both members and people waiting in its lobby (a lobby without
/// members happens only in a room that continues from elsewhere, until a
/// host comes back);
/// no room remembers more than `chat_history` messages or
/// `chat_history_bytes` bytes of them, and all together no more than
/// `chat_bytes_total`.
#[derive(Debug)]
pub struct Rooms<P> {
    config: Config,
    rooms: HashMap<RoomId, Room>,
    /// Bytes of chat all rooms remember.
    chat_bytes: usize,
    members: PeerMap<Member>,
    /// Peers waiting in a lobby, and which.
    waiting: PeerMap<RoomId>,
    /// Wrong room passwords per address.
    passwords: PasswordLimiter,
    /// Grows by at most one room's worth of outputs per input (plus a
    /// newcomer's history), and the shell drains it after every input.
    outputs: VecDeque<Output<P>>,
    /// Rooms that ended, for the shell's own bookkeeping (not deliveries):
    /// at most one per input, drained by the shell after every input.
    closed: VecDeque<(RoomId, Closing)>,
}

impl<P> Rooms<P> {
    /// An empty core.
    pub fn new(config: Config) -> Self {
        Rooms {
            config,
            rooms: HashMap::new(),
            chat_bytes: 0,
            members: PeerMap::default(),
            waiting: PeerMap::default(),
            passwords: PasswordLimiter::default(),
            outputs: VecDeque::new(),
            closed: VecDeque::new(),
        }
    }

    /// The next room that ended, and how. Not a delivery: the shell may
    /// forget what it kept for the room (in cluster mode, in Redis).
    pub fn poll_closed(&mut self) -> Option<(RoomId, Closing)> {
        self.closed.pop_front()
    }

    /// What `room` keeps about access (`None` if it does not exist), for
    /// the shell to keep elsewhere after a host changed it.
    pub fn access(&self, room: &RoomId) -> Option<RoomAccess> {
        self.rooms.get(room).map(Room::access)
    }

    /// Number of rooms with at least one member.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Number of peers in any room.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// How many peers are in `room` now, and how many it may hold (a
    /// room nobody is in has none).
    pub fn occupancy(&self, room: &RoomId) -> (usize, usize) {
        (self.rooms.get(room).map_or(0, |r| r.peers.len()), self.config.capacity)
    }

    /// The names of the first [`PEEK_NAMES`] peers in `room`, in join
    /// order: who a lobby says is in the call (`room-state.names`).
    pub fn names_in(&self, room: &RoomId) -> Vec<&str> {
        let peers = self.rooms.get(room).map_or(&[][..], |r| &r.peers[..]);
        peers.iter().take(PEEK_NAMES).filter_map(|p| self.members.get(p)).map(|m| m.name.as_str()).collect()
    }

    /// The room `peer` is in, if any.
    pub fn room_of(&self, peer: PeerId) -> Option<&RoomId> {
        self.members.get(&peer).map(|m| &m.room)
    }

    /// The room `peer` is in or waits to enter, if any.
    pub fn place_of(&self, peer: PeerId) -> Option<&RoomId> {
        self.room_of(peer).or_else(|| self.waiting.get(&peer))
    }

    /// Who waits in `room`'s lobby, oldest first (at most [`LOBBY_MAX`]).
    pub fn lobby_of(&self, room: &RoomId) -> Vec<PeerId> {
        self.rooms.get(room).map_or_else(Vec::new, |r| r.lobby.iter().map(|k| k.peer).collect())
    }

    /// What `room`'s hosts set, if it exists (a `peek` says it, so that a
    /// lobby can ask for the password, or say the room is locked, before
    /// any camera starts).
    pub fn settings_of(&self, room: &RoomId) -> Option<Settings> {
        self.rooms.get(room).map(Room::settings)
    }

    /// `peer`'s role, if it is a member.
    pub fn role_of(&self, peer: PeerId) -> Option<Role> {
        self.members.get(&peer).map(|m| m.role)
    }

    /// Applies one input; its effects are then available from
    /// [`Rooms::poll_output`].
    pub fn handle_input(&mut self, input: Input<P>) {
        match input {
            Input::Join { peer, room, name, media, now_ms, admission } => {
                self.join(peer, room, name, media, now_ms, admission)
            }
            Input::Signal { from, to, payload } => self.signal(from, to, payload),
            Input::Chat { peer, text, id, now_ms } => self.chat(peer, text, id, now_ms),
            Input::Media { peer, media } => self.media(peer, media),
            Input::Leave { peer } => {
                if let Some(room) = self.withdraw(peer, KnockEnd::Left) {
                    self.outputs.push_back(Output::Left { to: peer, room });
                } else if !self.remove(peer, LeaveReason::Left) {
                    self.reject(peer, Request::Leave, Rejection::NotJoined);
                }
            }
            Input::Disconnect { peer } => {
                if self.withdraw(peer, KnockEnd::Left).is_none() {
                    self.remove(peer, LeaveReason::Disconnected);
                }
            }
            Input::Admit { host, peer } => self.answer_knock(host, peer, true),
            Input::Deny { host, peer } => self.answer_knock(host, peer, false),
            Input::Settings { host, locked, lobby, password } => self.settings(host, locked, lobby, password),
            Input::Moderate { host, peer, action } => self.moderate(host, peer, action),
            Input::EndCall { host } => self.end_call(host),
        }
    }

    /// The next thing to deliver, in the order it happened.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    fn reject(&mut self, to: PeerId, request: Request, reason: Rejection) {
        self.outputs.push_back(Output::Rejected { to, request, reason });
    }

    fn join(
        &mut self,
        peer: PeerId,
        room: RoomId,
        name: DisplayName,
        media: MediaState,
        now_ms: u64,
        adm: Admission,
    ) {
        // A member (or someone waiting) joining again is a peer back with
        // its old id: its old place ends first, so it never counts twice.
        // Back in the same room, the room stays while it comes in again,
        // even if it was the only one there: what the room keeps (chat,
        // lock, bars, holds) is not lost to a reconnect.
        let again = self.members.get(&peer).is_some_and(|m| m.room == room);
        if self.withdraw(peer, KnockEnd::Left).is_none() {
            self.remove_keeping(peer, LeaveReason::Disconnected, again);
        }
        self.enter_if_allowed(peer, room.clone(), name, media, now_ms, adm);
        self.close_if_unused(&room, Closing::Emptied);
    }

    /// The checks of a join, after the peer's old place ended.
    fn enter_if_allowed(
        &mut self,
        peer: PeerId,
        room: RoomId,
        name: DisplayName,
        media: MediaState,
        now_ms: u64,
        adm: Admission,
    ) {
        let capacity = self.config.capacity;
        if !self.rooms.contains_key(&room)
            && (!adm.history.is_empty() || !adm.access.is_open())
            && capacity > 0
        {
            // A room that lived elsewhere before (cluster mode) continues
            // with what was said and set there: its bars, lock, password
            // and lobby apply to this join as to any other. (Dropped again
            // by `close_if_unused` if this join is refused.)
            self.rooms.insert(room.clone(), Room::restored(&adm.access));
            // `remember` drops what is too old or too much.
            for entry in &adm.history {
                self.remember(&room, entry.clone(), now_ms);
            }
        }
        let role = match self.rooms.get(&room) {
            None => {
                // A new room: whoever created it from the home page (or
                // holds a host token, or was its host before a restart)
                // runs it.
                if adm.create || adm.token_host || adm.resumed_host { Role::Host } else { Role::Guest }
            }
            Some(r) => {
                if r.barred_ids.contains(&peer) || r.barred_addrs.contains(&adm.addr) {
                    return self.reject(peer, Request::Join, Rejection::Barred);
                }
                // A removed peer's resume token no longer walks it in.
                let resumed = adm.resumed && !r.removed.contains(&peer);
                let host = adm.token_host || (adm.resumed_host && resumed);
                if !(host || resumed) {
                    if r.locked {
                        return self.reject(peer, Request::Join, Rejection::Locked);
                    }
                    if let Some(hash) = &r.password {
                        let Some(given) = &adm.password else {
                            return self.reject(peer, Request::Join, Rejection::PasswordRequired);
                        };
                        if !self.passwords.may_try(adm.addr, now_ms) {
                            return self.reject(peer, Request::Join, Rejection::TooManyAttempts);
                        }
                        if !hash.matches(given) {
                            self.passwords.failed(adm.addr, now_ms);
                            return self.reject(peer, Request::Join, Rejection::BadPassword);
                        }
                    }
                    if r.peers.len() >= capacity {
                        return self.reject(peer, Request::Join, Rejection::RoomFull { capacity });
                    }
                    if r.lobby_on {
                        return self.knock(peer, room, name, media, adm);
                    }
                }
                if host { Role::Host } else { Role::Guest }
            }
        };
        let who = Knock { peer, name, media, grants: adm.grants, addr: adm.addr };
        self.enter(room, who, now_ms, role);
    }

    /// Puts `peer` in `room`'s lobby and tells the hosts.
    fn knock(&mut self, peer: PeerId, room: RoomId, name: DisplayName, media: MediaState, adm: Admission) {
        let Some(r) = self.rooms.get_mut(&room) else { return };
        if r.lobby.len() >= LOBBY_MAX {
            return self.reject(peer, Request::Join, Rejection::LobbyFull);
        }
        r.lobby.push(Knock { peer, name: name.clone(), media, grants: adm.grants, addr: adm.addr });
        for host in hosts(&self.members, &r.peers) {
            self.outputs.push_back(Output::Knock { to: host, peer, name: name.clone() });
        }
        self.waiting.insert(peer, room.clone());
        self.outputs.push_back(Output::Waiting { to: peer, room });
    }

    /// Takes `peer` out of the lobby it waits in, telling the hosts why;
    /// returns the room, or `None` if it waited nowhere.
    fn withdraw(&mut self, peer: PeerId, reason: KnockEnd) -> Option<RoomId> {
        let room = self.waiting.remove(&peer)?;
        if let Some(r) = self.rooms.get_mut(&room) {
            r.lobby.retain(|k| k.peer != peer);
            for host in hosts(&self.members, &r.peers) {
                self.outputs.push_back(Output::KnockGone { to: host, peer, reason });
            }
        }
        self.close_if_unused(&room, Closing::Emptied);
        Some(room)
    }

    /// Makes `who` a member of `room` as `role` (checked already but for
    /// capacity).
    fn enter(&mut self, room: RoomId, who: Knock, now_ms: u64, role: Role) {
        let Knock { peer, name, media, grants, addr } = who;
        let capacity = self.config.capacity;
        // A hold outlives a reconnect.
        let held = self
            .rooms
            .get(&room)
            .and_then(|r| r.holds.iter().find(|(p, _)| *p == peer).map(|(_, h)| *h))
            .unwrap_or(NOTHING_HELD);
        let (others, chat, mode, settings) = match self.rooms.get_mut(&room) {
            Some(r) => {
                self.chat_bytes -= r.expire_chat(now_ms, self.config.chat_max_age_ms);
                (r.peers.as_slice(), r.chat.iter().cloned().collect(), r.mode, r.settings())
            }
            None => (&[][..], Vec::new(), Mode::P2p, Settings::default()),
        };
        if others.len() >= capacity {
            return self.reject(peer, Request::Join, Rejection::RoomFull { capacity });
        }
        let allowed = grants.allowed(held);
        let media = and(media, allowed);
        let switch = mode == Mode::P2p && self.config.p2p_max.is_some_and(|max| others.len() + 1 > max);
        let mode = if switch { Mode::Sfu } else { mode };
        if switch {
            for other in others {
                self.outputs.push_back(Output::RoomMode { to: *other, mode });
            }
        }
        let peers: Vec<(PeerInfo, bool)> = others
            .iter()
            .filter_map(|id| {
                let m = self.members.get(id)?;
                let info = PeerInfo { id: *id, name: m.name.clone(), media: m.media, role: m.role };
                Some((info, polite(peer, *id)))
            })
            .collect();
        for (other, _) in &peers {
            let info = PeerInfo { id: peer, name: name.clone(), media, role };
            let polite = polite(other.id, peer);
            self.outputs.push_back(Output::PeerJoined { to: other.id, peer: info, polite });
        }
        let lobby = match (role, self.rooms.get(&room)) {
            (Role::Host, Some(r)) => r.lobby.iter().map(|k| (k.peer, k.name.clone())).collect(),
            _ => Vec::new(),
        };
        self.outputs.push_back(Output::Joined {
            to: peer,
            room: room.clone(),
            name: name.clone(),
            capacity,
            peers,
            chat,
            mode,
            role,
            grants,
            settings,
            lobby,
        });
        if allowed != ALL {
            self.outputs.push_back(Output::Allowed { to: peer, allowed });
        }
        let r = self.rooms.entry(room.clone()).or_default();
        r.peers.push(peer);
        r.mode = mode;
        let chat = Bucket::full(self.config.chat_member, now_ms);
        self.members.insert(peer, Member { room, name, media, role, grants, held, addr, chat });
    }

    /// The room of `host` if it is a host; otherwise refuses `request`.
    fn host_room(&mut self, host: PeerId, request: Request) -> Option<RoomId> {
        match self.members.get(&host) {
            Some(m) if m.role == Role::Host => Some(m.room.clone()),
            Some(_) => {
                self.reject(host, request, Rejection::NotHost);
                None
            }
            None => {
                self.reject(host, request, Rejection::NotJoined);
                None
            }
        }
    }

    fn answer_knock(&mut self, host: PeerId, peer: PeerId, admit: bool) {
        let request = if admit { Request::Admit } else { Request::Deny };
        let Some(room) = self.host_room(host, request) else { return };
        let Some(r) = self.rooms.get(&room) else { return };
        let Some(knock) = r.lobby.iter().position(|k| k.peer == peer) else {
            return self.reject(host, request, Rejection::UnknownPeer);
        };
        if admit && r.peers.len() >= self.config.capacity {
            let capacity = self.config.capacity;
            return self.reject(host, request, Rejection::RoomFull { capacity });
        }
        let r = self.rooms.get_mut(&room).expect("looked up above");
        let knock = r.lobby.remove(knock);
        self.waiting.remove(&peer);
        let reason = if admit { KnockEnd::Admitted } else { KnockEnd::Denied };
        for to in hosts(&self.members, &r.peers) {
            self.outputs.push_back(Output::KnockGone { to, peer, reason });
        }
        if admit {
            self.admit(room, knock, 0);
        } else {
            self.reject(peer, Request::Join, Rejection::Denied);
        }
    }

    /// Lets someone in from the lobby. Its chat history is as of `now_ms`
    /// (0: whatever the room still has).
    fn admit(&mut self, room: RoomId, k: Knock, now_ms: u64) {
        self.enter(room, k, now_ms, Role::Guest);
    }

    fn settings(
        &mut self,
        host: PeerId,
        locked: Option<bool>,
        lobby: Option<bool>,
        password: Option<PasswordChange>,
    ) {
        let Some(room) = self.host_room(host, Request::Settings) else { return };
        let Some(r) = self.rooms.get_mut(&room) else { return };
        r.locked = locked.unwrap_or(r.locked);
        r.lobby_on = lobby.unwrap_or(r.lobby_on);
        match password {
            Some(PasswordChange::Set { password, salt }) => {
                r.password = Some(PasswordHash::new(&password, salt))
            }
            Some(PasswordChange::Clear) => r.password = None,
            None => {}
        }
        let settings = r.settings();
        // Without a lobby nobody waits: everyone there comes in (as many
        // as fit; the rest are told the call is full).
        let admitted = if r.lobby_on { Vec::new() } else { std::mem::take(&mut r.lobby) };
        for to in r.peers.clone() {
            self.outputs.push_back(Output::Settings { to, settings });
        }
        for knock in admitted {
            self.waiting.remove(&knock.peer);
            let peers = self.rooms.get(&room).map_or(&[][..], |r| r.peers.as_slice());
            for to in hosts(&self.members, peers) {
                self.outputs.push_back(Output::KnockGone {
                    to,
                    peer: knock.peer,
                    reason: KnockEnd::Admitted,
                });
            }
            self.admit(room.clone(), knock, 0);
        }
    }

    fn moderate(&mut self, host: PeerId, peer: PeerId, action: Action) {
        let Some(room) = self.host_room(host, Request::Moderate) else { return };
        let Some(target) = self.members.get_mut(&peer).filter(|m| m.room == room && peer != host) else {
            return self.reject(host, Request::Moderate, Rejection::UnknownPeer);
        };
        let before = target.media;
        match action {
            Action::Mute => (target.held.audio, target.media.audio) = (true, false),
            Action::StopVideo => (target.held.video, target.media.video) = (true, false),
            Action::StopScreen => (target.held.screen, target.media.screen) = (true, false),
            Action::AskUnmute => target.held.audio = false,
            Action::MakeHost => {
                target.role = Role::Host;
                return self.promote(&room, peer);
            }
            Action::Remove { bar } => {
                let addr = target.addr;
                let Some(r) = self.rooms.get_mut(&room) else { return };
                push_capped(&mut r.removed, peer);
                if bar {
                    push_capped(&mut r.barred_ids, peer);
                    push_capped(&mut r.barred_addrs, addr);
                }
                self.outputs.push_back(Output::Removed {
                    to: peer,
                    room,
                    reason: RemoveReason::Removed,
                    by: host,
                });
                self.remove(peer, LeaveReason::Removed);
                return;
            }
        }
        let (media, held, allowed) = (target.media, target.held, target.allowed());
        if let Some(r) = self.rooms.get_mut(&room) {
            r.holds.retain(|(p, _)| *p != peer);
            if held != NOTHING_HELD {
                if r.holds.len() >= BARRED_MAX {
                    r.holds.pop_front();
                }
                r.holds.push_back((peer, held));
            }
        }
        self.outputs.push_back(Output::Moderated { to: peer, action, by: host, held });
        self.outputs.push_back(Output::Allowed { to: peer, allowed });
        if media != before
            && let Some(r) = self.rooms.get(&room)
        {
            for to in r.peers.iter().filter(|id| **id != peer) {
                self.outputs.push_back(Output::PeerMedia { to: *to, peer, media });
            }
        }
    }

    /// Tells `room` that `peer` is a host now, and shows it the lobby.
    fn promote(&mut self, room: &RoomId, peer: PeerId) {
        let Some(r) = self.rooms.get(room) else { return };
        for to in &r.peers {
            self.outputs.push_back(Output::PeerRole { to: *to, peer, role: Role::Host });
        }
        for k in &r.lobby {
            self.outputs.push_back(Output::Knock { to: peer, peer: k.peer, name: k.name.clone() });
        }
    }

    fn end_call(&mut self, host: PeerId) {
        let Some(room) = self.host_room(host, Request::EndCall) else { return };
        let Some(r) = self.rooms.remove(&room) else { return };
        for k in &r.lobby {
            self.waiting.remove(&k.peer);
            self.outputs.push_back(Output::Rejected {
                to: k.peer,
                request: Request::Join,
                reason: Rejection::Denied,
            });
        }
        for peer in &r.peers {
            let Some(m) = self.members.remove(peer) else { continue };
            self.outputs.push_back(Output::Removed {
                to: *peer,
                room: room.clone(),
                reason: RemoveReason::Ended,
                by: host,
            });
            if m.allowed() != ALL {
                self.outputs.push_back(Output::Allowed { to: *peer, allowed: ALL });
            }
        }
        self.chat_bytes -= r.chat_bytes;
        self.closed.push_back((room, Closing::Ended));
    }

    /// Ends `room` if nobody is in it or waits to enter it.
    fn close_if_unused(&mut self, room: &RoomId, how: Closing) {
        if let Some(r) = self.rooms.get(room)
            && r.peers.is_empty()
            && r.lobby.is_empty()
        {
            self.chat_bytes -= r.chat_bytes;
            self.rooms.remove(room);
            self.closed.push_back((room.clone(), how));
        }
    }

    fn signal(&mut self, from: PeerId, to: PeerId, payload: P) {
        let Some(member) = self.members.get(&from) else {
            return self.reject(from, Request::Signal, Rejection::NotJoined);
        };
        let same_room = self.members.get(&to).is_some_and(|m| m.room == member.room);
        if to == from || !same_room {
            return self.reject(from, Request::Signal, Rejection::UnknownPeer);
        }
        self.outputs.push_back(Output::Relay { to, from, payload });
    }

    fn chat(&mut self, peer: PeerId, text: ChatText, id: Option<ChatId>, now_ms: u64) {
        let Some(member) = self.members.get(&peer) else {
            return self.reject(peer, Request::Chat, Rejection::NotJoined);
        };
        if !member.grants.chat {
            return self.reject(peer, Request::Chat, Rejection::NotAllowed);
        }
        let (member_rate, room_rate) = (self.config.chat_member, self.config.chat_room);
        let room_id = member.room.clone();
        let Some(member) = self.members.get_mut(&peer) else { return };
        let Some(room) = self.rooms.get_mut(&room_id) else { return };
        let budget = room.chat_budget.get_or_insert_with(|| Bucket::full(room_rate, now_ms));
        if !(member.chat.take(member_rate, now_ms) && budget.take(room_rate, now_ms)) {
            return self.reject(peer, Request::Chat, Rejection::RateLimited);
        }
        let member = &self.members[&peer];
        let Some(room) = self.rooms.get(&room_id) else { return };
        let entry = ChatEntry { from: peer, name: member.name.clone(), text, ts_ms: now_ms, id };
        for to in &room.peers {
            self.outputs.push_back(Output::Chat { to: *to, entry: entry.clone() });
        }
        self.remember(&room_id, entry, now_ms);
    }

    /// Keeps `entry` in `room`'s history, within its bounds and the core's.
    fn remember(&mut self, room: &RoomId, entry: ChatEntry, now_ms: u64) {
        let Some(room) = self.rooms.get_mut(room) else { return };
        let bytes = chat_bytes(&entry);
        room.chat.push_back(entry);
        room.chat_bytes += bytes;
        self.chat_bytes += bytes;
        self.chat_bytes -= room.expire_chat(now_ms, self.config.chat_max_age_ms);
        while room.chat.len() > self.config.chat_history
            || room.chat_bytes > self.config.chat_history_bytes
            || (self.chat_bytes > self.config.chat_bytes_total && !room.chat.is_empty())
        {
            self.chat_bytes -= room.forget_oldest();
        }
    }

    fn media(&mut self, peer: PeerId, media: MediaState) {
        let Some(member) = self.members.get_mut(&peer) else {
            return self.reject(peer, Request::Media, Rejection::NotJoined);
        };
        // What may not be on stays off, and the peer hears why.
        let allowed = member.allowed();
        let kept = and(media, allowed);
        let refused = (kept != media).then(|| {
            let held = and(media, member.held);
            if held.audio || held.video || held.screen { Rejection::Held } else { Rejection::NotAllowed }
        });
        let changed = member.media != kept;
        member.media = kept;
        let room = member.room.clone();
        if let Some(reason) = refused {
            self.reject(peer, Request::Media, reason);
            if !changed {
                return;
            }
        }
        let Some(room) = self.rooms.get(&room) else { return };
        for to in room.peers.iter().filter(|id| **id != peer) {
            self.outputs.push_back(Output::PeerMedia { to: *to, peer, media: kept });
        }
    }

    /// Takes `peer` out of its room, telling the others. Returns whether it
    /// was in one.
    fn remove(&mut self, peer: PeerId, reason: LeaveReason) -> bool {
        self.remove_keeping(peer, reason, false)
    }

    /// [`Rooms::remove`]; with `keep`, a room it leaves empty stays (its
    /// member is coming in again at once).
    fn remove_keeping(&mut self, peer: PeerId, reason: LeaveReason, keep: bool) -> bool {
        let Some(member) = self.members.remove(&peer) else {
            return false;
        };
        if member.allowed() != ALL {
            self.outputs.push_back(Output::Allowed { to: peer, allowed: ALL });
        }
        if let Some(room) = self.rooms.get_mut(&member.room) {
            room.peers.retain(|id| *id != peer);
            for other in room.peers.iter() {
                self.outputs.push_back(Output::PeerLeft { to: *other, peer, reason });
            }
            if room.peers.is_empty() && !keep {
                // The history goes with the room: nobody is left to read it,
                // and nobody is left to admit those waiting.
                self.chat_bytes -= room.chat_bytes;
                for k in std::mem::take(&mut room.lobby) {
                    self.waiting.remove(&k.peer);
                    self.outputs.push_back(Output::Rejected {
                        to: k.peer,
                        request: Request::Join,
                        reason: Rejection::Denied,
                    });
                }
                self.rooms.remove(&member.room);
                let how = if reason == LeaveReason::Left { Closing::Ended } else { Closing::Emptied };
                self.closed.push_back((member.room.clone(), how));
            } else if member.role == Role::Host
                && reason == LeaveReason::Left
                && hosts(&self.members, &room.peers).next().is_none()
            {
                // The last host left on purpose: the longest present takes
                // over, so nobody waits in a lobby nobody can open.
                let heir = room.peers[0];
                if let Some(m) = self.members.get_mut(&heir) {
                    m.role = Role::Host;
                }
                let room_id = member.room.clone();
                self.promote(&room_id, heir);
            }
        }
        if reason == LeaveReason::Left {
            self.outputs.push_back(Output::Left { to: peer, room: member.room });
        }
        true
    }

    /// Asserts the invariants stated on [`Rooms`] (for tests and fuzzing).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn check_invariants(&self) {
        let listed: usize = self.rooms.values().map(|r| r.peers.len()).sum();
        assert_eq!(self.chat_bytes, self.rooms.values().map(|r| r.chat_bytes).sum::<usize>());
        assert!(self.chat_bytes <= self.config.chat_bytes_total);
        assert_eq!(listed, self.members.len(), "every member listed once");
        let waiting: usize = self.rooms.values().map(|r| r.lobby.len()).sum();
        assert_eq!(waiting, self.waiting.len(), "everyone waiting is in a lobby");
        for (id, room) in &self.rooms {
            assert!(!room.peers.is_empty() || !room.lobby.is_empty(), "no empty room {id}");
            assert!(room.chat.len() <= self.config.chat_history);
            assert_eq!(room.chat_bytes, room.chat.iter().map(chat_bytes).sum::<usize>());
            assert!(room.chat_bytes <= self.config.chat_history_bytes);
            for peer in &room.peers {
                assert_eq!(self.room_of(*peer), Some(id));
                let m = &self.members[peer];
                assert_eq!(and(m.media, m.allowed()), m.media, "nothing on that may not be");
            }
            assert!(room.lobby.len() <= LOBBY_MAX);
            assert!(room.barred_ids.len() <= BARRED_MAX && room.barred_addrs.len() <= BARRED_MAX);
            assert!(room.removed.len() <= BARRED_MAX && room.holds.len() <= BARRED_MAX);
            for k in &room.lobby {
                assert_eq!(self.waiting.get(&k.peer), Some(id), "who waits is listed once");
                assert!(!self.members.contains_key(&k.peer), "nobody waits and sits at once");
            }
        }
    }
}
