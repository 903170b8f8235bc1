//! The state machine: rooms, their members, and who may send to whom.

use std::collections::{HashMap, VecDeque};

use crate::ids::{DisplayName, PeerId, RoomId};

/// Settings of a [`Rooms`] core.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Most peers one room holds; a join beyond it is refused.
    pub capacity: usize,
}

/// A peer as others see it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerInfo {
    /// Its identity.
    pub id: PeerId,
    /// Its display name.
    pub name: DisplayName,
}

/// Why a peer is no longer in a room.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LeaveReason {
    /// The peer asked to leave.
    Left,
    /// Its connection ended (closed, timed out, or dropped by the server).
    Disconnected,
}

/// What a peer asked for, as far as the core is concerned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Request {
    /// `join`
    Join,
    /// `signal`
    Signal,
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
    /// The peer is in a room already.
    AlreadyJoined,
    /// The peer is in no room.
    NotJoined,
    /// The addressee is not another peer of the sender's room.
    UnknownPeer,
}

/// Something that happened, fed in by the IO shell.
#[derive(Debug)]
pub enum Input<P> {
    /// `peer` asks to enter `room`.
    Join {
        /// Who asks.
        peer: PeerId,
        /// Which room.
        room: RoomId,
        /// The name the others will see.
        name: DisplayName,
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
        /// Its role towards every peer in `peers` (perfect negotiation).
        polite: bool,
        /// The others already there, oldest first.
        peers: Vec<PeerInfo>,
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

#[derive(Debug)]
struct Member {
    room: RoomId,
    name: DisplayName,
}

/// All rooms of one shard and their members. Feed it with
/// [`Rooms::handle_input`], then drain [`Rooms::poll_output`] until `None`.
///
/// Invariants: every member of a room is in `members` with that room, and
/// every entry of `members` is listed in exactly its room; no room is empty.
#[derive(Debug)]
pub struct Rooms<P> {
    config: Config,
    /// Members of each room, in join order.
    rooms: HashMap<RoomId, Vec<PeerId>>,
    members: HashMap<PeerId, Member>,
    /// Grows by at most one room's worth of outputs per input, and the shell
    /// drains it after every input, so it stays small.
    outputs: VecDeque<Output<P>>,
}

impl<P> Rooms<P> {
    /// An empty core.
    pub fn new(config: Config) -> Self {
        Rooms { config, rooms: HashMap::new(), members: HashMap::new(), outputs: VecDeque::new() }
    }

    /// Number of rooms with at least one member.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Number of peers in any room.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The room `peer` is in, if any.
    pub fn room_of(&self, peer: PeerId) -> Option<&RoomId> {
        self.members.get(&peer).map(|m| &m.room)
    }

    /// Applies one input; its effects are then available from
    /// [`Rooms::poll_output`].
    pub fn handle_input(&mut self, input: Input<P>) {
        match input {
            Input::Join { peer, room, name } => self.join(peer, room, name),
            Input::Signal { from, to, payload } => self.signal(from, to, payload),
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

    fn join(&mut self, peer: PeerId, room: RoomId, name: DisplayName) {
        if self.members.contains_key(&peer) {
            return self.reject(peer, Request::Join, Rejection::AlreadyJoined);
        }
        let capacity = self.config.capacity;
        let others = self.rooms.get(&room).map(Vec::as_slice).unwrap_or_default();
        if others.len() >= capacity {
            return self.reject(peer, Request::Join, Rejection::RoomFull { capacity });
        }
        let peers: Vec<PeerInfo> = others
            .iter()
            .filter_map(|id| self.members.get(id).map(|m| PeerInfo { id: *id, name: m.name.clone() }))
            .collect();
        // The newcomer is the polite side of every pair it forms, and makes
        // the first offer (docs/protocol.md, `joined`).
        for other in &peers {
            let peer = PeerInfo { id: peer, name: name.clone() };
            self.outputs.push_back(Output::PeerJoined { to: other.id, peer, polite: false });
        }
        self.outputs.push_back(Output::Joined {
            to: peer,
            room: room.clone(),
            name: name.clone(),
            capacity,
            polite: true,
            peers,
        });
        self.rooms.entry(room.clone()).or_default().push(peer);
        self.members.insert(peer, Member { room, name });
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

    /// Takes `peer` out of its room, telling the others. Returns whether it
    /// was in one.
    fn remove(&mut self, peer: PeerId, reason: LeaveReason) -> bool {
        let Some(member) = self.members.remove(&peer) else {
            return false;
        };
        if let Some(list) = self.rooms.get_mut(&member.room) {
            list.retain(|id| *id != peer);
            for other in list.iter() {
                self.outputs.push_back(Output::PeerLeft { to: *other, peer, reason });
            }
            if list.is_empty() {
                self.rooms.remove(&member.room);
            }
        }
        if reason == LeaveReason::Left {
            self.outputs.push_back(Output::Left { to: peer, room: member.room });
        }
        true
    }

    /// Asserts the invariants stated on [`Rooms`].
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let listed: usize = self.rooms.values().map(Vec::len).sum();
        assert_eq!(listed, self.members.len(), "every member listed once");
        for (room, list) in &self.rooms {
            assert!(!list.is_empty(), "no empty room {room}");
            for id in list {
                assert_eq!(self.room_of(*id), Some(room));
            }
        }
    }
}
