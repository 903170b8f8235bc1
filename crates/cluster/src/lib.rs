//! Sans-IO cluster decisions for webconf: several nodes behind one load
//! balancer, sharing one Redis.
//!
//! Each room has one **home node**, which runs its room logic (and its SFU
//! session); a browser may connect its WebSocket to any node, and the node
//! it reached (the **edge**) shuttles its frames to the home and back over
//! the bus (Redis pub/sub, one channel per node). This crate holds what
//! the nodes decide, without Redis, sockets, tasks or clocks (`now_ms` is
//! passed in), so every decision is tested as a table:
//!
//! - [`node`]: a node's record (its id, addresses, load, whether it
//!   drains), how it is written into Redis, and [`node::place`]: which
//!   live node takes a new room (the least loaded).
//! - [`claims`]: the rooms a node holds and when each claim's lease must
//!   be renewed ([`claims::Claims`], deadlines in one ordered set), and
//!   the live-node view that turns a lapsed lease into "node down".
//! - [`script`]: the Lua scripts that claim, renew and release a room in
//!   Redis atomically, and [`script::decide_claim`], the same decision as
//!   a pure function (tested here; the scripts are tested against a real
//!   `redis-server` in the integration tests).
//! - [`bus`]: the messages between an edge and a home, their text form,
//!   and the per-connection sequence numbers that detect a lost one.

pub mod bus;
pub mod claims;
pub mod node;
pub mod script;

pub use node::{Load, NodeId, NodeRecord};

/// Redis key prefix of everything webconf stores.
pub const PREFIX: &str = "webconf:";

/// The key of a node's record (it expires with the node's lease).
pub fn node_key(node: &NodeId) -> String {
    format!("{PREFIX}node:{node}")
}

/// The key of a room's home claim.
pub fn room_key(room: &str) -> String {
    format!("{PREFIX}room:{room}")
}

/// The set naming every node that registered (dead ones are removed by
/// whoever finds their record gone).
pub const NODES_KEY: &str = "webconf:nodes";

/// The key of the cluster's shared secret (resume tokens, TURN
/// credentials), set once by the first node.
pub const SECRET_KEY: &str = "webconf:secret";

/// The pub/sub channel a node listens on for bus messages.
pub fn bus_channel(node: &NodeId) -> String {
    format!("{PREFIX}bus:{node}")
}
