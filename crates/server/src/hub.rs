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

use axum::extract::ws::Utf8Bytes;
use room::{DisplayName, Input, Output, PeerId, Rejection, Request, RoomId, Rooms};
use signal::{ErrorCode, IceServer, ServerMsg, encode, encode_relay};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::Config;

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

/// How a shard reaches one member's connection.
#[derive(Debug)]
pub(crate) struct PeerTx {
    /// The connection's outbound queue.
    pub(crate) queue: mpsc::Sender<Outbound>,
    /// Cancelled by the shard to make the connection close as too slow.
    pub(crate) kick: CancellationToken,
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

/// What connections ask of a shard.
#[derive(Debug)]
pub(crate) enum ShardCmd {
    /// Enter `room`; answers go to `tx`, which the shard keeps while the
    /// peer is a member.
    Join { peer: PeerId, room: RoomId, name: DisplayName, tx: PeerTx },
    /// Relay a payload to another member of the sender's room.
    Signal { from: PeerId, to: PeerId, payload: Payload },
    /// Leave the room.
    Leave { peer: PeerId },
    /// The connection is gone.
    Disconnect { peer: PeerId },
}

/// The shards' inboxes. Cloning is cheap; the shard tasks end when the last
/// clone (and every connection's sender) is gone.
#[derive(Clone, Debug)]
pub(crate) struct Hub {
    shards: std::sync::Arc<[mpsc::Sender<ShardCmd>]>,
}

impl Hub {
    /// Spawns `count` shard tasks on the current runtime.
    pub(crate) fn start(count: usize, config: &Config) -> Hub {
        let shards = (0..count.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(SHARD_INBOX);
                let shard = Shard {
                    core: Rooms::new(room::Config { capacity: config.room_capacity }),
                    peers: HashMap::new(),
                    ice_servers: config.ice_servers.clone(),
                    kicked: Vec::new(),
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
    ice_servers: Vec<IceServer>,
    /// Members whose queue was full or closed, to drop after this command.
    kicked: Vec<PeerId>,
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
        let peer = match cmd {
            ShardCmd::Join { peer, room, name, tx } => {
                self.peers.insert(peer, tx);
                self.core.handle_input(Input::Join { peer, room, name });
                peer
            }
            ShardCmd::Signal { from, to, payload } => {
                self.core.handle_input(Input::Signal { from, to, payload });
                from
            }
            ShardCmd::Leave { peer } => {
                self.core.handle_input(Input::Leave { peer });
                peer
            }
            ShardCmd::Disconnect { peer } => {
                self.core.handle_input(Input::Disconnect { peer });
                peer
            }
        };
        self.flush();
        if self.core.room_of(peer).is_none() {
            self.peers.remove(&peer);
        }
    }

    /// Delivers everything the core produced, then drops members that could
    /// not take their messages, which produces `peer-left`s to deliver too.
    fn flush(&mut self) {
        loop {
            while let Some(out) = self.core.poll_output() {
                let (to, msg) = self.encode(out);
                self.deliver(to, msg);
            }
            let Some(peer) = self.kicked.pop() else { break };
            if let Some(tx) = self.peers.remove(&peer) {
                tracing::info!(%peer, "dropping a peer whose outbound queue is full");
                tx.kick.cancel();
            }
            self.core.handle_input(Input::Disconnect { peer });
        }
    }

    fn deliver(&mut self, to: PeerId, msg: Outbound) {
        let Some(tx) = self.peers.get(&to) else { return };
        match tx.queue.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                if !self.kicked.contains(&to) {
                    self.kicked.push(to);
                }
            }
        }
    }

    fn encode(&self, out: Output<Payload>) -> (PeerId, Outbound) {
        let text = |s: String| Utf8Bytes::from(s);
        match out {
            Output::Joined { to, room, name, capacity, polite, peers } => {
                let msg = ServerMsg::Joined {
                    room: room.as_str(),
                    you: to,
                    name: name.as_str(),
                    capacity,
                    polite,
                    peers: &peers,
                    ice_servers: &self.ice_servers,
                };
                (to, Outbound::JoinAnswer { text: text(encode(&msg)), room: Some(room) })
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
                    Rejection::AlreadyJoined => {
                        (ErrorCode::AlreadyJoined, "you are in a room already: leave it first".to_owned())
                    }
                    Rejection::NotJoined => (ErrorCode::NotJoined, "join a room first".to_owned()),
                    Rejection::UnknownPeer => {
                        (ErrorCode::UnknownPeer, "no such peer in your room".to_owned())
                    }
                };
                let request_name = match request {
                    Request::Join => "join",
                    Request::Signal => "signal",
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
