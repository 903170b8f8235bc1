//! A node's record and placement by load.

use std::fmt;

/// A node's name in the cluster: 1–32 characters, ASCII lower-case
/// letters, digits and `-` (random hex unless configured), so it can sit
/// in Redis keys, channel names and the bus's space-separated messages.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeId(String);

impl NodeId {
    /// Checks a node id.
    pub fn parse(raw: &str) -> Option<NodeId> {
        let ok = (1..=32).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ok.then(|| NodeId(raw.to_owned()))
    }

    /// A node id from 64 random bits.
    pub fn from_random(bits: u64) -> NodeId {
        NodeId(format!("{bits:016x}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How busy a node is, as it last said.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Load {
    /// WebSocket connections open (edges and remote members alike).
    pub connections: u32,
    /// Rooms homed on the node.
    pub rooms: u32,
    /// SFU sessions it holds.
    pub sfu_sessions: u32,
    /// CPU the process used over the last lease period, in thousandths of
    /// one core.
    pub cpu_permille: u32,
}

impl Load {
    /// One number to compare nodes by. The weights are rough costs: an SFU
    /// session (media both ways, decryption, encryption) costs about as
    /// much as ten signaling connections; a room a little more than a
    /// connection (its core state and chat); CPU counts most, since it is
    /// what runs out first (1% of a core is worth 2 connections).
    pub fn score(&self) -> u64 {
        u64::from(self.connections)
            + 2 * u64::from(self.rooms)
            + 10 * u64::from(self.sfu_sessions)
            + 2 * u64::from(self.cpu_permille) / 10
    }
}

/// What a node tells the others about itself, renewed with its lease.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NodeRecord {
    /// Its id.
    pub id: NodeId,
    /// Where it serves HTTP and WebSockets (`host:port`), for people
    /// reading the records; nodes talk over Redis only.
    pub http: String,
    /// The address its SFU and TURN server announce to browsers.
    pub media: String,
    /// How busy it is.
    pub load: Load,
    /// Draining: it takes no new rooms and is moving its rooms away.
    pub draining: bool,
}

impl NodeRecord {
    /// The record as stored in Redis: `v1` and the fields, separated by
    /// spaces (none of them holds one).
    pub fn encode(&self) -> String {
        let l = &self.load;
        format!(
            "v1 {} {} {} {} {} {} {} {}",
            self.id,
            self.http,
            self.media,
            l.connections,
            l.rooms,
            l.sfu_sessions,
            l.cpu_permille,
            u8::from(self.draining)
        )
    }

    /// A stored record, or `None` for anything else (another version,
    /// garbage): such a node is not placed on.
    pub fn decode(text: &str) -> Option<NodeRecord> {
        let mut f = text.split(' ');
        if f.next()? != "v1" {
            return None;
        }
        let id = NodeId::parse(f.next()?)?;
        let http = f.next()?.to_owned();
        let media = f.next()?.to_owned();
        let mut num = || f.next()?.parse::<u32>().ok();
        let load = Load { connections: num()?, rooms: num()?, sfu_sessions: num()?, cpu_permille: num()? };
        let draining = match f.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        if f.next().is_some() || http.is_empty() || media.is_empty() {
            return None;
        }
        Some(NodeRecord { id, http, media, load, draining })
    }
}

/// The node a new room goes to: the least loaded of the live nodes that
/// are not draining (ties go to the smaller id, so every node decides the
/// same from the same records). `None` when there is none.
pub fn place(live: &[NodeRecord]) -> Option<&NodeRecord> {
    live.iter().filter(|n| !n.draining).min_by(|a, b| (a.load.score(), &a.id).cmp(&(b.load.score(), &b.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, connections: u32, rooms: u32, sfu: u32, cpu: u32, draining: bool) -> NodeRecord {
        NodeRecord {
            id: NodeId::parse(id).expect("id"),
            http: "127.0.0.1:8080".into(),
            media: "127.0.0.1".into(),
            load: Load { connections, rooms, sfu_sessions: sfu, cpu_permille: cpu },
            draining,
        }
    }

    #[test]
    fn node_ids() {
        for ok in ["a", "node-1", "0123456789abcdef", &"x".repeat(32)] {
            assert!(NodeId::parse(ok).is_some(), "{ok}");
        }
        for bad in ["", "A", "a b", "a:b", "ü", &"x".repeat(33)] {
            assert!(NodeId::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(NodeId::from_random(0xab).as_str(), "00000000000000ab");
    }

    #[test]
    fn records_round_trip_and_garbage_is_none() {
        let n = node("n1", 5, 2, 3, 450, true);
        assert_eq!(n.encode(), "v1 n1 127.0.0.1:8080 127.0.0.1 5 2 3 450 1");
        assert_eq!(NodeRecord::decode(&n.encode()), Some(n));
        for bad in [
            "",
            "v2 n1 a b 1 2 3 4 0",
            "v1 N1 a b 1 2 3 4 0",
            "v1 n1 a b 1 2 3 4",
            "v1 n1 a b 1 2 3 4 2",
            "v1 n1 a b -1 2 3 4 0",
            "v1 n1 a b 1 2 3 4 0 extra",
            "v1 n1  b 1 2 3 4 0",
        ] {
            assert_eq!(NodeRecord::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn placement_takes_the_least_loaded_live_node_that_is_not_draining() {
        // (nodes, expected)
        let table: Vec<(Vec<NodeRecord>, Option<&str>)> = vec![
            (vec![], None),
            (vec![node("a", 0, 0, 0, 0, true)], None),
            (vec![node("a", 10, 1, 0, 0, false), node("b", 2, 1, 0, 0, false)], Some("b")),
            // SFU sessions weigh more than connections.
            (vec![node("a", 20, 1, 0, 0, false), node("b", 2, 1, 3, 0, false)], Some("a")),
            // CPU counts: 30% of a core is worth 60 connections.
            (vec![node("a", 40, 1, 0, 0, false), node("b", 0, 0, 0, 300, false)], Some("a")),
            // A draining node takes nothing, however idle.
            (vec![node("a", 40, 9, 0, 0, false), node("b", 0, 0, 0, 0, true)], Some("a")),
            // Ties go to the smaller id, whoever decides.
            (vec![node("b", 1, 0, 0, 0, false), node("a", 1, 0, 0, 0, false)], Some("a")),
        ];
        for (nodes, want) in table {
            assert_eq!(place(&nodes).map(|n| n.id.as_str()), want, "{nodes:?}");
        }
    }
}
