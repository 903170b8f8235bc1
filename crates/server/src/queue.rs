//! A connection's outbound queue; seats, a connection's membership of one
//! room; and routes: how one connection puts a signal straight into
//! another's queue, only while both hold their seats.
//!
//! The queue is bounded by the bytes waiting in it, not by a count: a burst
//! of thousands of small signals fits, a stalled reader cannot hold more
//! than its budget, and whoever finds it full has the reader dropped as
//! too slow. All queues together are bounded too, by one process-wide
//! budget ([`crate::Limits::outbound_bytes_total`]): past it, only queues
//! holding less than [`FLOOR`] take more, so when memory runs short the
//! slow readers holding much are dropped, not the readers that keep up. It is a `VecDeque` under a mutex with a `Notify`, rather than
//! a channel, because an idle connection's empty queue then costs a few
//! dozen bytes instead of a channel's first block of slots; the lock is
//! held only to push or pop, never across an await.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use room::{PeerId, RoomId};
use tokio::sync::Notify;
use tungstenite::Utf8Bytes;

use crate::limits::ByteBudget;

/// Something a connection must write.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A message, encoded, to write as it is.
    Text(Utf8Bytes),
    /// The answer to this connection's `join`.
    JoinAnswer(Box<JoinAnswer>),
    /// The connection is out of its room (or lobby): the answer to its
    /// `leave` (`left`), or `removed` (a host removed it, or ended the
    /// call). Its seat is vacated, and nothing more of that room follows.
    Left(Utf8Bytes),
    /// Someone joined this connection's room: write `text`, add the route.
    PeerJoined(Box<(Utf8Bytes, PeerId, Route)>),
    /// Someone left this connection's room: write `text`, drop the route.
    PeerLeft { text: Utf8Bytes, peer: PeerId },
    /// This connection's peer has a new role: write `text`, and sign later
    /// resume tokens with it.
    Role { text: Utf8Bytes, role: room::Role },
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
    /// The connection waits in `room`'s lobby rather than being in it.
    pub(crate) waiting: bool,
    /// Its role, if it joined.
    pub(crate) role: room::Role,
}

impl JoinAnswer {
    /// A refused join: `text` is the error.
    pub(crate) fn refused(text: Utf8Bytes) -> JoinAnswer {
        JoinAnswer { text, room: None, routes: Vec::new(), waiting: false, role: room::Role::Guest }
    }
}

impl Outbound {
    fn len(&self) -> usize {
        match self {
            Outbound::Text(t)
            | Outbound::Left(t)
            | Outbound::PeerLeft { text: t, .. }
            | Outbound::Role { text: t, .. } => t.len(),
            Outbound::JoinAnswer(a) => a.text.len(),
            Outbound::PeerJoined(j) => j.0.len(),
        }
    }
}

/// One connection's membership of one room: what routes lead to, and
/// what makes them lead nowhere once it ends.
///
/// The connection makes a seat for each `join` it sends; from then on only
/// the shard that owns the room changes its state: it takes the seat when
/// the room core admits the peer (before telling anyone), and vacates it
/// when the core lets the peer go (before telling anyone, and before the
/// peer's own `left`), never to take it again. So "is this peer a member
/// of that room" has one answer, the room's shard's, and
/// [`Route::relay`] asks exactly that.
#[derive(Debug)]
pub(crate) struct Seat {
    queue: QueueTx,
    kick: Arc<Kick>,
    /// [`WAITING`], [`SEATED`] or [`VACATED`].
    state: AtomicU8,
}

const WAITING: u8 = 0;
const SEATED: u8 = 1;
const VACATED: u8 = 2;

impl Seat {
    /// A seat for a `join` not yet decided, leading to `queue`.
    pub(crate) fn new(queue: QueueTx, kick: Arc<Kick>) -> Arc<Seat> {
        Arc::new(Seat { queue, kick, state: AtomicU8::new(WAITING) })
    }

    /// The room's shard admitted the peer. (Only the shard calls this.)
    pub(crate) fn take(&self) {
        let _ = self.state.compare_exchange(WAITING, SEATED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The room's shard let the peer go, or refused it. (Only the shard
    /// calls this, before it pushes anything that says so.)
    pub(crate) fn vacate(&self) {
        self.state.store(VACATED, Ordering::Release);
    }

    fn is_seated(&self) -> bool {
        self.state.load(Ordering::Acquire) == SEATED
    }

    /// Puts `msg` in the connection's queue whatever the seat's state: for
    /// the room's shard, which decides membership itself.
    pub(crate) fn push(&self, msg: Outbound) -> Result<(), PushError> {
        self.queue.push(msg)
    }

    /// Puts `msg` in the connection's queue if the seat is still held
    /// (for the SFU, answering for the membership a connection offered
    /// in); a full queue drops the connection as too slow.
    pub(crate) fn push_while_seated(&self, msg: Outbound) -> Result<(), PushError> {
        let pushed = self.queue.push_if(msg, || self.is_seated());
        if pushed == Err(PushError::Full) {
            self.kick(KickReason::TooSlow);
        }
        pushed
    }

    /// Locks the connection's queue while the shard that takes this seat
    /// tells the room of its peer: no member's signal can reach the
    /// newcomer before its `joined`, and the newcomer, which cannot read
    /// its `joined` until then, cannot signal a member before that member's
    /// `peer-joined`.
    ///
    /// The shard pushes into the other members' queues meanwhile, the one
    /// place a queue's lock is held while another is taken. That cannot
    /// deadlock: only a shard seating a newcomer does it, always newcomer
    /// first, and the newcomer is a member of no room (it joins only from
    /// the lobby, after its last room's shard removed it), so no other
    /// shard holds its lock while reaching for a member's.
    pub(crate) fn hold(&self) -> Hold<'_> {
        self.queue.hold()
    }

    /// Tells the connection to close.
    pub(crate) fn kick(&self, reason: KickReason) {
        self.kick.kick(reason);
    }
}

/// How one member reaches another: the sender's seat and the addressee's.
/// Handed out by the room's shard with `joined` and `peer-joined`, dropped
/// with `peer-left`; but a route kept too long (a `peer-left` not yet read,
/// a `peer-joined` from a shard that had not yet seen its reader leave)
/// still carries nothing once either seat is vacated.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) from: Arc<Seat>,
    pub(crate) to: Arc<Seat>,
}

impl Route {
    /// Relays a signal: pushed into the addressee's queue only if both
    /// seats are held, checked under that queue's lock. A shard vacates a
    /// seat before it pushes the `peer-left` (or `left`) that says so, so
    /// a relay either lands before those in the addressee's queue or finds
    /// the seat vacated and is dropped (`NotSeated`). A full queue drops
    /// the addressee as too slow.
    pub(crate) fn relay(&self, text: Utf8Bytes) -> Result<(), PushError> {
        let pushed =
            self.to.queue.push_if(Outbound::Text(text), || self.from.is_seated() && self.to.is_seated());
        if pushed == Err(PushError::Full) {
            self.to.kick(KickReason::TooSlow);
        }
        pushed
    }
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
            // Every waiter: the connection's loop, and a write it is in.
            self.flipped.notify_waiters();
        }
    }

    /// Why it was kicked, if it was.
    #[cfg(test)]
    pub(crate) fn reason(&self) -> Option<KickReason> {
        match self.reason.load(Ordering::Acquire) {
            0 => None,
            2 => Some(KickReason::Replaced),
            _ => Some(KickReason::TooSlow),
        }
    }

    /// Completes once [`Kick::kick`] was called, with its reason.
    pub(crate) async fn kicked(&self) -> KickReason {
        loop {
            // Registered before the flag is read: `notify_waiters` keeps no
            // permit for a waiter that comes later.
            let notified = self.flipped.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            match self.reason.load(Ordering::Acquire) {
                0 => notified.await,
                2 => return KickReason::Replaced,
                3 => return KickReason::Moved,
                _ => return KickReason::TooSlow,
            }
        }
    }
}

/// What any queue may hold whatever all of them hold together: one largest
/// message (64 KiB). A reader that keeps up never holds more, so it is
/// never the one dropped when the process-wide budget runs out. With the
/// caps on connections, all queues hold at most that budget plus this
/// much per connection.
pub(crate) const FLOOR: usize = signal::MAX_MESSAGE_BYTES;

/// A queue whose items wait to be written, bounded by their bytes (its own
/// `budget`) and by the bytes of all queues together (`total`).
pub(crate) fn outbound_queue(budget: usize, total: ByteBudget) -> (QueueTx, QueueRx) {
    let state = Mutex::new(State::default());
    let shared = Arc::new(Shared { state, ready: Notify::new(), budget, total });
    (QueueTx { shared: shared.clone() }, QueueRx { shared })
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    ready: Notify,
    budget: usize,
    /// Shared by every connection's queue.
    total: ByteBudget,
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
    /// A seat the push needed is not held (see [`Route::relay`]).
    NotSeated,
}

/// The pushing side (shards and other connections hold clones).
#[derive(Clone, Debug)]
pub(crate) struct QueueTx {
    shared: Arc<Shared>,
}

impl QueueTx {
    pub(crate) fn push(&self, msg: Outbound) -> Result<(), PushError> {
        self.push_if(msg, || true)
    }

    /// Pushes `msg` if `allowed()` holds, asked under the queue's lock.
    fn push_if(&self, msg: Outbound, allowed: impl FnOnce() -> bool) -> Result<(), PushError> {
        {
            let mut state = self.shared.lock();
            if !allowed() && !state.closed {
                return Err(PushError::NotSeated);
            }
            state.push(msg, &self.shared)?;
        }
        // A stored permit if the reader is not waiting yet: no lost wake-up.
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Locks the queue until the [`Hold`] is dropped: nobody else can push
    /// into it or read from it meanwhile, the holder can. See
    /// [`Seat::hold`] for who may, and why it cannot deadlock.
    fn hold(&self) -> Hold<'_> {
        Hold { shared: &self.shared, state: self.shared.lock(), pushed: false }
    }
}

/// A queue locked by [`QueueTx::hold`].
pub(crate) struct Hold<'a> {
    shared: &'a Shared,
    state: MutexGuard<'a, State>,
    pushed: bool,
}

impl Hold<'_> {
    pub(crate) fn push(&mut self, msg: Outbound) -> Result<(), PushError> {
        self.state.push(msg, self.shared)?;
        self.pushed = true;
        Ok(())
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if self.pushed {
            // The reader wakes and then waits for the lock, released just
            // after this.
            self.shared.ready.notify_one();
        }
    }
}

impl State {
    fn push(&mut self, msg: Outbound, shared: &Shared) -> Result<(), PushError> {
        if self.closed {
            return Err(PushError::Closed);
        }
        let len = msg.len();
        if self.bytes + len > shared.budget {
            return Err(PushError::Full);
        }
        if self.bytes + len <= FLOOR {
            shared.total.take(len);
        } else if !shared.total.try_take(len) {
            return Err(PushError::Full);
        }
        self.bytes += len;
        self.items.push_back(msg);
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
        let mut taken = 0;
        for msg in state.items.drain(..n) {
            taken += msg.len();
            into.push(msg);
        }
        state.bytes -= taken;
        self.shared.total.give(taken);
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
        self.shared.total.give(std::mem::take(&mut state.bytes));
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
        let (tx, mut rx) = outbound_queue(100, ByteBudget::new(usize::MAX));
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

    /// Issue 10, finding 10: each queue was bounded, all of them together
    /// were not (10 000 slow readers could hold 40 GiB). Past the shared
    /// budget only a queue under the floor (one largest message) takes
    /// more, so a reader that keeps up is never the one refused.
    #[tokio::test]
    async fn all_queues_together_are_bounded_but_each_keeps_its_floor() {
        const K: usize = 1024;
        let total = ByteBudget::new(200 * K);
        let (slow, mut slow_rx) = outbound_queue(1024 * K, total.clone());
        let (fast, _fast_rx) = outbound_queue(1024 * K, total.clone());
        let (other, other_rx) = outbound_queue(1024 * K, total.clone());
        assert_eq!(slow.push(text(150 * K)), Ok(()));
        assert_eq!(fast.push(text(40 * K)), Ok(()));
        assert_eq!(slow.push(text(40 * K)), Err(PushError::Full), "over the total, and slow over its floor");
        assert_eq!(fast.push(text(24 * K)), Ok(()), "up to its floor whatever the total");
        assert_eq!(total.held(), 214 * K);
        assert_eq!(fast.push(text(1)), Err(PushError::Full), "past its floor, the total counts");
        assert_eq!(other.push(text(64 * K)), Ok(()), "an empty queue takes a largest message");
        // Read, the bytes are given back to all.
        let mut got = Vec::new();
        slow_rx.recv_many(&mut got, 10).await;
        assert_eq!(total.held(), 128 * K);
        assert_eq!(fast.push(text(40 * K)), Ok(()));
        drop(other_rx);
        assert_eq!(total.held(), 104 * K, "a closed queue gives back what it held");
    }
}
