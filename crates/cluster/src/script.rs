//! Room home claims in Redis: the Lua scripts, and the same decisions as
//! pure functions.
//!
//! A claim is the key [`crate::room_key`] holding the home node's id, with
//! a lease (`PX`). Redis runs a script atomically, so two nodes claiming
//! one room at once are ordered: the first writes, the second finds the
//! first's live claim and returns it. A claim whose node's record is gone
//! (its lease lapsed: the node died, or drained and deleted it) counts as
//! no claim. Scripts touch keys they are not given in `KEYS` (the owner's
//! node record), which a single Redis allows; Redis Cluster would need the
//! node key in the same hash slot (see ARCHITECTURE.md, capacity).

use crate::NodeId;

/// Claims `KEYS[1]` (a room) for `ARGV[1]` (a node) with a lease of
/// `ARGV[2]` ms unless a live node (one whose record `ARGV[3]..id`
/// exists) holds it; returns the home. If `ARGV[1]` is not live itself
/// (the asking node's view of the cluster is a moment old: the node just
/// drained or died), the room goes to `ARGV[4]`, the asking node, when
/// given. See [`decide_claim`].
pub const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', ARGV[3] .. cur) == 1 then return cur end
local home = ARGV[1]
if ARGV[4] and redis.call('EXISTS', ARGV[3] .. home) == 0 then home = ARGV[4] end
redis.call('SET', KEYS[1], home, 'PX', ARGV[2])
return home
";

/// The live home of `KEYS[1]`, or nil; claims nothing (a `peek`).
pub const LOOKUP: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and redis.call('EXISTS', ARGV[1] .. cur) == 1 then return cur end
return false
";

/// Renews `ARGV[1]`'s claim on `KEYS[1]` for `ARGV[2]` ms; takes it back
/// if nobody holds it (Redis restarted empty, or was away longer than the
/// lease and nobody took the room meanwhile). 1: held; 0: another node
/// holds it now. See [`decide_renewal`].
pub const RENEW: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
";

/// Deletes `KEYS[1]` if `ARGV[1]` holds it (a room emptied, or a node
/// drains); another node's claim is left alone.
pub const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Forgets what a room kept (its chat and access state, `KEYS[2..]`)
/// after it ended on node `ARGV[1]`, unless another node holds the room
/// (`KEYS[1]`) by now: `ARGV[2]` is `0` to delete them, or how many more
/// milliseconds to keep them (for members who may come back). 1: done.
pub const FORGET: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
for i = 2, #KEYS do
  if ARGV[2] == '0' then redis.call('DEL', KEYS[i]) else redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
return 1
";

/// What [`CLAIM`] decides: the home of a room currently claimed by
/// `current` (if anyone), when node `asker` asks for it for `candidate`.
/// `live` says whether a node's record exists. Returns the home and
/// whether the claim was written.
pub fn decide_claim(
    current: Option<&NodeId>,
    live: impl Fn(&NodeId) -> bool,
    candidate: &NodeId,
    asker: &NodeId,
) -> (NodeId, bool) {
    match current {
        Some(cur) if live(cur) => (cur.clone(), false),
        _ if live(candidate) => (candidate.clone(), true),
        _ => (asker.clone(), true),
    }
}

/// What [`RENEW`] decides for `me`: whether it still holds the room, and
/// whether it (re)writes the claim.
pub fn decide_renewal(current: Option<&NodeId>, me: &NodeId) -> bool {
    current.is_none_or(|cur| cur == me)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn id(s: &str) -> NodeId {
        NodeId::parse(s).expect("id")
    }

    /// A store that runs each claim as one step, as Redis runs a script.
    #[derive(Default)]
    struct Store {
        claims: HashMap<String, NodeId>,
        live: HashSet<NodeId>,
    }

    impl Store {
        fn claim(&mut self, room: &str, node: &NodeId) -> NodeId {
            let live = self.live.clone();
            let (home, write) = decide_claim(self.claims.get(room), |n| live.contains(n), node, node);
            if write {
                self.claims.insert(room.to_owned(), home.clone());
            }
            home
        }
    }

    #[test]
    fn two_nodes_racing_for_one_room_agree_on_exactly_one_winner() {
        let (a, b) = (id("a"), id("b"));
        // Every order the two scripts can run in, from every state of the
        // room: free, held by a dead node, held by a live third node.
        for start in [None, Some(("dead", false)), Some(("c", true))] {
            for a_first in [true, false] {
                let mut store = Store::default();
                store.live.extend([a.clone(), b.clone()]);
                if let Some((holder, live)) = start {
                    store.claims.insert("r".into(), id(holder));
                    if live {
                        store.live.insert(id(holder));
                    }
                }
                let order = if a_first { [&a, &b] } else { [&b, &a] };
                let got: Vec<NodeId> = order.iter().map(|n| store.claim("r", n)).collect();
                assert_eq!(got[0], got[1], "both learn the same home ({start:?}, a first: {a_first})");
                let want = match start {
                    Some(("c", true)) => id("c"),
                    _ => order[0].clone(),
                };
                assert_eq!(got[0], want, "the first to run wins a free room ({start:?})");
                assert_eq!(store.claims.get("r"), Some(&want));
            }
        }
    }

    #[test]
    fn a_dead_home_is_replaced_and_renewal_takes_back_only_a_free_room() {
        let (a, b) = (id("a"), id("b"));
        let only_b = |n: &NodeId| n == &b;
        assert_eq!(decide_claim(Some(&a), only_b, &b, &b), (b.clone(), true), "a's lease lapsed");
        assert_eq!(decide_claim(Some(&b), only_b, &a, &a), (b.clone(), false));
        // b placed a new room on a, which has just drained (b's view of
        // the records is a moment old): b takes it rather than send its
        // members to a node that will not have them.
        assert_eq!(decide_claim(None, only_b, &a, &b), (b.clone(), true), "placed on a node gone");
        assert_eq!(decide_claim(Some(&a), only_b, &a, &b), (b.clone(), true));
        assert!(decide_renewal(Some(&a), &a));
        assert!(decide_renewal(None, &a), "Redis restarted empty: claim again");
        assert!(!decide_renewal(Some(&b), &a), "b took it: a lost it");
    }
}
