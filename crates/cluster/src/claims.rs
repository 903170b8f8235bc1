//! The rooms this node is home to, when each claim is due for renewal,
//! and which other nodes are alive.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::NodeId;
use crate::node::{self, NodeRecord};

/// How a renewal went.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Renewal {
    /// Still ours (or taken back after Redis forgot it).
    Held,
    /// Another node holds it now: this node must let the room go.
    Taken,
    /// Redis did not answer: nothing is known, the room stays.
    Unknown,
}

/// The rooms this node holds claims on. Each claim is renewed every
/// `renew_every_ms` from when it was made; deadlines sit in one ordered
/// set, so a tick costs the claims due, not all of them.
#[derive(Debug)]
pub struct Claims {
    renew_every_ms: u64,
    /// Room → how many connections here are in it (or joining it), and
    /// the deadline it is filed under.
    held: HashMap<String, (u32, u64)>,
    deadlines: BTreeSet<(u64, String)>,
}

impl Claims {
    /// No claims yet.
    pub fn new(renew_every_ms: u64) -> Claims {
        Claims { renew_every_ms: renew_every_ms.max(1), held: HashMap::new(), deadlines: BTreeSet::new() }
    }

    /// A connection here enters `room`, which the caller has claimed for
    /// this node. Returns whether the room is new here.
    pub fn enter(&mut self, room: &str, now_ms: u64) -> bool {
        if let Some((members, _)) = self.held.get_mut(room) {
            *members += 1;
            return false;
        }
        let due = now_ms + self.renew_every_ms;
        self.held.insert(room.to_owned(), (1, due));
        self.deadlines.insert((due, room.to_owned()));
        true
    }

    /// A connection here left `room`. Returns whether it was the last:
    /// then the claim is dropped here and the caller releases it in Redis.
    pub fn exit(&mut self, room: &str) -> bool {
        let Some((members, due)) = self.held.get_mut(room) else { return false };
        *members = members.saturating_sub(1);
        if *members > 0 {
            return false;
        }
        let due = *due;
        self.held.remove(room);
        self.deadlines.remove(&(due, room.to_owned()));
        true
    }

    /// Whether this node holds `room`.
    pub fn holds(&self, room: &str) -> bool {
        self.held.contains_key(room)
    }

    /// How many rooms this node holds.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Every room held (to release them all when draining).
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.held.keys().map(String::as_str)
    }

    /// The rooms whose renewal is due at `now_ms`; each is filed again one
    /// period later.
    pub fn due(&mut self, now_ms: u64) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.deadlines.first()
            && *at <= now_ms
        {
            let Some((_, room)) = self.deadlines.pop_first() else { break };
            let next = now_ms + self.renew_every_ms;
            if let Some(entry) = self.held.get_mut(&room) {
                entry.1 = next;
                self.deadlines.insert((next, room.clone()));
            }
            out.push(room);
        }
        out
    }

    /// When the next renewal is due.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Takes in how renewing `room` went. Returns whether the room was
    /// lost: then it is no longer held, and its members must go (they
    /// reconnect and reach the new home).
    pub fn renewed(&mut self, room: &str, how: Renewal) -> bool {
        if how != Renewal::Taken {
            return false;
        }
        let Some((_, due)) = self.held.remove(room) else { return false };
        self.deadlines.remove(&(due, room.to_owned()));
        true
    }
}

/// A change in which nodes are alive.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Change {
    /// A node's record appeared.
    Up(NodeId),
    /// A node's record has been gone for two observations at least one
    /// renewal period apart (its lease lapsed: it died or drained).
    Down(NodeId),
}

/// The live nodes as this node last read them from Redis.
///
/// A node is declared down only once its record was missing from two
/// reads at least one renewal period apart: every live node writes its
/// record once a period, so after Redis restarted empty a live node
/// reappears before the second read, and is not taken for dead.
#[derive(Debug)]
pub struct View {
    me: NodeId,
    renew_every_ms: u64,
    live: BTreeMap<NodeId, NodeRecord>,
    /// Nodes live before whose record went missing, and when first missed.
    missing: BTreeMap<NodeId, u64>,
    /// Nobody is declared down before this (see [`View::hold_off`]).
    hold_until: u64,
}

impl View {
    /// A view for node `me`, knowing nobody yet.
    pub fn new(me: NodeId, renew_every_ms: u64) -> View {
        View { me, renew_every_ms, live: BTreeMap::new(), missing: BTreeMap::new(), hold_until: 0 }
    }

    /// Declares nobody down before `until_ms`: Redis just came back (this
    /// node was cut off from it, or found it emptied), and every other
    /// node may need up to its own Redis deadline to register again.
    pub fn hold_off(&mut self, until_ms: u64) {
        self.hold_until = self.hold_until.max(until_ms);
        self.missing.clear();
    }

    /// Takes in the records read at `now_ms` (every one found; `me`'s own
    /// included or not), and says who came and went.
    pub fn update(&mut self, now_ms: u64, records: Vec<NodeRecord>) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut seen = BTreeMap::new();
        for r in records {
            seen.insert(r.id.clone(), r);
        }
        for (id, rec) in &seen {
            self.missing.remove(id);
            if !self.live.contains_key(id) && *id != self.me {
                changes.push(Change::Up(id.clone()));
            }
            self.live.insert(id.clone(), rec.clone());
        }
        if now_ms < self.hold_until {
            return changes;
        }
        let gone: Vec<NodeId> = self.live.keys().filter(|id| !seen.contains_key(*id)).cloned().collect();
        for id in gone {
            let since = *self.missing.entry(id.clone()).or_insert(now_ms);
            if now_ms >= since + self.renew_every_ms {
                self.missing.remove(&id);
                self.live.remove(&id);
                if id != self.me {
                    changes.push(Change::Down(id));
                }
            }
        }
        changes
    }

    /// Whether `node` is alive as far as this view knows.
    pub fn is_live(&self, node: &NodeId) -> bool {
        self.live.contains_key(node)
    }

    /// A live node's record.
    pub fn record(&self, node: &NodeId) -> Option<&NodeRecord> {
        self.live.get(node)
    }

    /// The node a new room should go to (see [`node::place`]). It counts
    /// one more room on it at once, so a burst of new rooms between two
    /// reads of the records spreads instead of piling on one node.
    pub fn place(&mut self) -> Option<NodeId> {
        let records: Vec<NodeRecord> = self.live.values().cloned().collect();
        let id = node::place(&records)?.id.clone();
        if let Some(r) = self.live.get_mut(&id) {
            r.load.rooms += 1;
        }
        Some(id)
    }

    /// Marks `node` down at once (it said it drains, or a message to it
    /// could not be delivered and its record is gone).
    pub fn forget(&mut self, node: &NodeId) {
        self.live.remove(node);
        self.missing.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Load;

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).expect("id")
    }

    fn rec(s: &str, rooms: u32) -> NodeRecord {
        NodeRecord {
            id: id(s),
            http: "h:1".into(),
            media: "m".into(),
            load: Load { rooms, ..Load::default() },
            draining: false,
        }
    }

    #[test]
    fn claims_are_renewed_on_their_own_schedule_and_released_with_the_last_member() {
        let mut c = Claims::new(500);
        assert!(c.enter("a", 0));
        assert!(c.enter("b", 200));
        assert!(!c.enter("a", 300), "a second member of a");
        assert_eq!(c.poll_timeout(), Some(500));
        assert_eq!(c.due(499), Vec::<String>::new());
        assert_eq!(c.due(500), ["a"]);
        assert_eq!(c.due(700), ["b"]);
        assert_eq!(c.poll_timeout(), Some(1000));
        assert!(!c.exit("a"), "one member of a is left");
        assert!(c.exit("a"), "the last one");
        assert!(!c.holds("a"));
        assert_eq!(c.due(10_000), ["b"], "a's deadline went with it");
        assert!(!c.exit("nothing"));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_renewal_another_node_won_loses_the_room_and_unknown_keeps_it() {
        let mut c = Claims::new(500);
        c.enter("a", 0);
        assert!(!c.renewed("a", Renewal::Unknown), "Redis away: rooms stay");
        assert!(!c.renewed("a", Renewal::Held));
        assert!(c.holds("a"));
        assert!(c.renewed("a", Renewal::Taken));
        assert!(!c.holds("a"));
        assert_eq!(c.poll_timeout(), None);
        assert!(!c.renewed("a", Renewal::Taken), "lost once");
    }

    #[test]
    fn a_node_is_down_only_after_missing_two_reads_a_period_apart() {
        let mut v = View::new(id("me"), 500);
        assert_eq!(
            v.update(0, vec![rec("me", 0), rec("a", 0), rec("b", 0)]),
            [Change::Up(id("a")), Change::Up(id("b"))]
        );
        // Redis restarted empty: nobody is there for one read...
        assert_eq!(v.update(400, vec![]), []);
        assert!(v.is_live(&id("a")));
        // ...and everyone alive is back by the next.
        assert_eq!(v.update(800, vec![rec("me", 0), rec("a", 0), rec("b", 0)]), []);
        // b dies: missing at 1200, still missing a period later.
        assert_eq!(v.update(1200, vec![rec("me", 0), rec("a", 0)]), []);
        assert_eq!(v.update(1600, vec![rec("me", 0), rec("a", 0)]), [], "only 400 ms");
        assert_eq!(v.update(1700, vec![rec("me", 0), rec("a", 0)]), [Change::Down(id("b"))]);
        assert!(!v.is_live(&id("b")));
        assert_eq!(v.update(1800, vec![rec("b", 0)])[0], Change::Up(id("b")), "b restarted");
    }

    #[test]
    fn after_redis_comes_back_nobody_is_declared_down_during_the_hold_off() {
        let mut v = View::new(id("me"), 500);
        v.update(0, vec![rec("me", 0), rec("a", 0)]);
        v.hold_off(3000);
        assert_eq!(v.update(1000, vec![rec("me", 0)]), []);
        assert_eq!(v.update(2000, vec![rec("me", 0)]), [], "a is slow to get back, not dead");
        assert_eq!(v.update(3000, vec![rec("me", 0)]), [], "missing counted from the end of the hold-off");
        assert_eq!(v.update(3500, vec![rec("me", 0)]), [Change::Down(id("a"))]);
    }

    #[test]
    fn placement_spreads_a_burst_of_new_rooms() {
        let mut v = View::new(id("me"), 500);
        v.update(0, vec![rec("me", 1), rec("a", 0), rec("b", 0)]);
        let placed: Vec<String> = (0..6).map(|_| v.place().expect("a node").to_string()).collect();
        assert_eq!(placed, ["a", "b", "a", "b", "me", "a"]);
        v.forget(&id("a"));
        assert_eq!(v.place().map(|n| n.to_string()).as_deref(), Some("b"));
    }
}
