//! A connection's outbound queue, and routes: how one connection puts a
//! signal straight into another's queue.
//!
//! The queue is bounded by the bytes waiting in it, not by a count: a burst
//! of thousands of small signals fits, a stalled reader cannot hold more
//! than its budget, and whoever finds it full has the reader dropped as
//! too slow. It is a `VecDeque` under a mutex with a `Notify`, rather than
//! a channel, because an idle connection's empty queue then costs a few
//! dozen bytes instead of a channel's first block of slots; the lock is
//! held only to push or pop, never across an await.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use room::{PeerId, RoomId};
use tokio::sync::Notify;
use tungstenite::Utf8Bytes;

/// Something a connection must write.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A message, encoded, to write as it is.
    Text(Utf8Bytes),
    /// A signal relayed by another member, meant for this connection's
    /// membership number `membership`: dropped if it has left since.
    Relay { text: Utf8Bytes, membership: u64 },
    /// The answer to this connection's `join`.
    JoinAnswer(Box<JoinAnswer>),
    /// Someone joined this connection's room: write `text`, add the route.
    PeerJoined(Box<(Utf8Bytes, PeerId, Route)>),
    /// Someone left this connection's room: write `text`, drop the route.
    PeerLeft { text: Utf8Bytes, peer: PeerId },
}

/// The answer to a `join`: `joined` or an `error`.
#[derive(Debug)]
pub(crate) struct JoinAnswer {
    /// To write as it is.
    pub(crate) text: Utf8Bytes,
    /// The room the connection is now in, if the join succeeded.
    pub(crate) room: Option<RoomId>,
    /// Routes to the others already there.
    pub(crate) routes: Vec<(PeerId, Route)>,
}

impl Outbound {
    fn len(&self) -> usize {
        match self {
            Outbound::Text(t) | Outbound::Relay { text: t, .. } | Outbound::PeerLeft { text: t, .. } => {
                t.len()
            }
            Outbound::JoinAnswer(a) => a.text.len(),
            Outbound::PeerJoined(j) => j.0.len(),
        }
    }
}

/// How to reach one member of a room: its queue, its kick switch, and the
/// membership number its relays must carry. Handed out by the room's shard
/// with `joined` and `peer-joined`, withdrawn with `peer-left`.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) queue: QueueTx,
    pub(crate) kick: Arc<Kick>,
    pub(crate) membership: u64,
}

/// Why a connection is told to close by someone else.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum KickReason {
    /// Its outbound queue was full.
    TooSlow,
    /// A newer connection resumed its peer id.
    Replaced,
    /// Cluster mode: its room now lives on another node.
    Moved,
}

/// A switch others flip to make a connection close, with a reason. (A
/// flag and a `Notify`: one per connection, so it is kept small.)
#[derive(Debug, Default)]
pub(crate) struct Kick {
    /// 0 until kicked, then 1 + the reason.
    reason: AtomicU8,
    flipped: Notify,
}

impl Kick {
    /// Tells the connection to close; the first reason given wins.
    pub(crate) fn kick(&self, reason: KickReason) {
        let code = match reason {
            KickReason::TooSlow => 1,
            KickReason::Replaced => 2,
            KickReason::Moved => 3,
        };
        if self.reason.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.flipped.notify_one();
        }
    }

    /// Completes once [`Kick::kick`] was called, with its reason.
    pub(crate) async fn kicked(&self) -> KickReason {
        loop {
            match self.reason.load(Ordering::Acquire) {
                0 => self.flipped.notified().await,
                2 => return KickReason::Replaced,
                3 => return KickReason::Moved,
                _ => return KickReason::TooSlow,
            }
        }
    }
}

/// A queue whose items wait to be written, bounded by their bytes.
pub(crate) fn outbound_queue(budget: usize) -> (QueueTx, QueueRx) {
    let shared = Arc::new(Shared { state: Mutex::new(State::default()), ready: Notify::new(), budget });
    (QueueTx { shared: shared.clone() }, QueueRx { shared })
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    ready: Notify,
    budget: usize,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outbound>,
    bytes: usize,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; if something ever did, the
        // queue's plain data is still consistent enough to go on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a push failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The budget would be exceeded: the reader is too slow.
    Full,
    /// The connection is gone.
    Closed,
}

/// The pushing side (shards and other connections hold clones).
#[derive(Clone, Debug)]
pub(crate) struct QueueTx {
    shared: Arc<Shared>,
}

impl QueueTx {
    pub(crate) fn push(&self, msg: Outbound) -> Result<(), PushError> {
        let len = msg.len();
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.bytes + len > self.shared.budget {
                return Err(PushError::Full);
            }
            state.bytes += len;
            state.items.push_back(msg);
        }
        // A stored permit if the reader is not waiting yet: no lost wake-up.
        self.shared.ready.notify_one();
        Ok(())
    }
}

/// The connection's side.
#[derive(Debug)]
pub(crate) struct QueueRx {
    shared: Arc<Shared>,
}

impl QueueRx {
    /// Waits until something is queued, then moves up to `max` items into
    /// `into` (one lock for the whole batch).
    pub(crate) async fn recv_many(&mut self, into: &mut Vec<Outbound>, max: usize) {
        loop {
            if self.try_recv_many(into, max) > 0 {
                return;
            }
            self.shared.ready.notified().await;
        }
    }

    /// Moves up to `max` waiting items into `into`; returns how many.
    pub(crate) fn try_recv_many(&mut self, into: &mut Vec<Outbound>, max: usize) -> usize {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let n = state.items.len().min(max);
        for msg in state.items.drain(..n) {
            state.bytes -= msg.len();
            into.push(msg);
        }
        // A burst can leave a large buffer behind; idle queues stay small.
        if state.items.is_empty() && state.items.capacity() > 64 {
            state.items = VecDeque::new();
        }
        drop(guard);
        n
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.items.clear();
        state.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Outbound {
        Outbound::Text(Utf8Bytes::from("x".repeat(n)))
    }

    #[tokio::test]
    async fn bounded_by_bytes_in_order_and_closed_when_the_reader_goes() {
        let (tx, mut rx) = outbound_queue(100);
        assert_eq!(tx.push(text(60)), Ok(()));
        assert_eq!(tx.push(text(60)), Err(PushError::Full), "60 + 60 is over 100 bytes");
        assert_eq!(tx.push(text(40)), Ok(()));
        let mut got = Vec::new();
        rx.recv_many(&mut got, 10).await;
        let lens: Vec<usize> = got.iter().map(Outbound::len).collect();
        assert_eq!(lens, [60, 40]);
        assert_eq!(tx.push(text(100)), Ok(()), "room again once read");
        // A push from another task wakes a waiting reader.
        let pusher = tx.clone();
        let waiter = tokio::spawn(async move {
            let mut got = Vec::new();
            rx.recv_many(&mut got, 10).await;
            rx.recv_many(&mut got, 10).await;
            got.len()
        });
        tokio::task::yield_now().await;
        pusher.push(text(1)).ok();
        assert_eq!(waiter.await.expect("joined"), 2);
        assert_eq!(tx.push(text(1)), Err(PushError::Closed));
    }
}
