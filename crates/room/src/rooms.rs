//! The state machine: rooms, their members, who may send to whom, and what
//! a newcomer is told (members, media state, recent chat).

use std::collections::{HashMap, VecDeque};

use crate::ids::{ChatId, ChatText, DisplayName, MediaState, PeerId, PeerMap, RoomId};

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

/// Why a peer is no longer in a room.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LeaveReason {
    /// The peer asked to leave.
    Left,
    /// Its connection ended (closed, timed out, dropped by the server, or
    /// replaced by a newer connection with the same id).
    Disconnected,
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
        /// The shell's clock, in milliseconds since 1970 (for chat history).
        now_ms: u64,
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
}

#[derive(Debug, Default)]
struct Room {
    /// Members, in join order.
    peers: Vec<PeerId>,
    /// At most `Config::chat_history` entries, oldest first.
    chat: VecDeque<ChatEntry>,
    /// What `chat` holds, counted by [`chat_bytes`].
    chat_bytes: usize,
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
/// every entry of `members` is listed in exactly its room; no room is empty;
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
    /// Grows by at most one room's worth of outputs per input (plus a
    /// newcomer's history), and the shell drains it after every input.
    outputs: VecDeque<Output<P>>,
}

impl<P> Rooms<P> {
    /// An empty core.
    pub fn new(config: Config) -> Self {
        Rooms {
            config,
            rooms: HashMap::new(),
            chat_bytes: 0,
            members: PeerMap::default(),
            outputs: VecDeque::new(),
        }
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

    /// Applies one input; its effects are then available from
    /// [`Rooms::poll_output`].
    pub fn handle_input(&mut self, input: Input<P>) {
        match input {
            Input::Join { peer, room, name, media, now_ms } => self.join(peer, room, name, media, now_ms),
            Input::Signal { from, to, payload } => self.signal(from, to, payload),
            Input::Chat { peer, text, id, now_ms } => self.chat(peer, text, id, now_ms),
            Input::Media { peer, media } => self.media(peer, media),
            Input::Leave { peer } => {
                if !self.remove(peer, LeaveReason::Left) {
                    self.reject(peer, Request::Leave, Rejection::NotJoined);
                }
            }
            Input::Disconnect { peer } => {
                self.remove(peer, LeaveReason::Disconnected);
            }
        }
    }

    /// The next thing to deliver, in the order it happened.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    fn reject(&mut self, to: PeerId, request: Request, reason: Rejection) {
        self.outputs.push_back(Output::Rejected { to, request, reason });
    }

    fn join(&mut self, peer: PeerId, room: RoomId, name: DisplayName, media: MediaState, now_ms: u64) {
        // A member joining again is a peer back with its old id: its old
        // membership ends first, so it never counts twice.
        self.remove(peer, LeaveReason::Disconnected);
        let capacity = self.config.capacity;
        let (others, chat, mode) = match self.rooms.get_mut(&room) {
            Some(r) => {
                self.chat_bytes -= r.expire_chat(now_ms, self.config.chat_max_age_ms);
                (r.peers.as_slice(), r.chat.iter().cloned().collect(), r.mode)
            }
            None => (&[][..], Vec::new(), Mode::P2p),
        };
        if others.len() >= capacity {
            return self.reject(peer, Request::Join, Rejection::RoomFull { capacity });
        }
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
                Some((PeerInfo { id: *id, name: m.name.clone(), media: m.media }, polite(peer, *id)))
            })
            .collect();
        for (other, _) in &peers {
            let info = PeerInfo { id: peer, name: name.clone(), media };
            let polite = polite(other.id, peer);
            self.outputs.push_back(Output::PeerJoined { to: other.id, peer: info, polite });
        }
        self.outputs.push_back(Output::Joined {
            to: peer,
            room: room.clone(),
            name: name.clone(),
            capacity,
            peers,
            chat,
            mode,
        });
        let r = self.rooms.entry(room.clone()).or_default();
        r.peers.push(peer);
        r.mode = mode;
        self.members.insert(peer, Member { room, name, media });
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
        let Some(room) = self.rooms.get_mut(&member.room) else { return };
        let entry = ChatEntry { from: peer, name: member.name.clone(), text, ts_ms: now_ms, id };
        for to in &room.peers {
            self.outputs.push_back(Output::Chat { to: *to, entry: entry.clone() });
        }
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
        member.media = media;
        let Some(room) = self.rooms.get(&member.room) else { return };
        for to in room.peers.iter().filter(|id| **id != peer) {
            self.outputs.push_back(Output::PeerMedia { to: *to, peer, media });
        }
    }

    /// Takes `peer` out of its room, telling the others. Returns whether it
    /// was in one.
    fn remove(&mut self, peer: PeerId, reason: LeaveReason) -> bool {
        let Some(member) = self.members.remove(&peer) else {
            return false;
        };
        if let Some(room) = self.rooms.get_mut(&member.room) {
            room.peers.retain(|id| *id != peer);
            for other in room.peers.iter() {
                self.outputs.push_back(Output::PeerLeft { to: *other, peer, reason });
            }
            if room.peers.is_empty() {
                // The history goes with the room: nobody is left to read it.
                self.chat_bytes -= room.chat_bytes;
                self.rooms.remove(&member.room);
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
        for (id, room) in &self.rooms {
            assert!(!room.peers.is_empty(), "no empty room {id}");
            assert!(room.chat.len() <= self.config.chat_history);
            assert_eq!(room.chat_bytes, room.chat.iter().map(chat_bytes).sum::<usize>());
            assert!(room.chat_bytes <= self.config.chat_history_bytes);
            for peer in &room.peers {
                assert_eq!(self.room_of(*peer), Some(id));
            }
        }
    }
}
