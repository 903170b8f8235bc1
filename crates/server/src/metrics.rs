//! Counters for `/metrics`, in the Prometheus text format.
//!
//! Plain atomics, bumped where things happen and read only when scraped:
//! no locks, no allocation on the hot path.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use signal::ErrorCode;

/// Why a connection ended, as counted.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CloseKind {
    /// The peer closed it (or the socket failed).
    Peer,
    /// The server shut down.
    Shutdown,
    /// Its outbound queue filled up.
    TooSlow,
    /// It sent a message over the size limit.
    TooBig,
    /// It stopped answering pings.
    Timeout,
    /// Another connection resumed its peer id.
    Replaced,
    /// It broke the WebSocket framing.
    BadFrame,
    /// Cluster mode: forwarded to, or moved to, another node.
    Moved,
}

const CLOSE_KINDS: [(CloseKind, &str); 8] = [
    (CloseKind::Peer, "peer"),
    (CloseKind::Shutdown, "shutdown"),
    (CloseKind::TooSlow, "too_slow"),
    (CloseKind::TooBig, "too_big"),
    (CloseKind::Timeout, "timeout"),
    (CloseKind::Replaced, "replaced"),
    (CloseKind::BadFrame, "bad_frame"),
    (CloseKind::Moved, "moved"),
];

/// Why a WebSocket was refused before it started.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    /// Its Origin is not allowed (HTTP 403).
    Origin,
    /// The server holds `max_connections` already.
    ServerFull,
    /// Its address holds `max_connections_per_ip` already.
    AddressFull,
}

const REFUSALS: [(Refusal, &str); 3] = [
    (Refusal::Origin, "origin"),
    (Refusal::ServerFull, "server_full"),
    (Refusal::AddressFull, "address_full"),
];

/// A listener whose raw TCP connections are capped and timed before anyone
/// is known on them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Listener {
    /// HTTP and HTTPS (and the WebSocket upgrade).
    Http,
    /// TURN over TCP.
    Turn,
    /// The SFU's ICE-TCP.
    Sfu,
}

const LISTENERS: [(Listener, &str); 3] =
    [(Listener::Http, "http"), (Listener::Turn, "turn"), (Listener::Sfu, "sfu")];

/// Why a raw TCP connection was closed before it was served.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shed {
    /// Its address holds its maximum of such connections.
    AddressFull,
    /// The listener holds its maximum in all.
    ServerFull,
    /// The process was out of file descriptors.
    FdLimit,
    /// It missed a deadline: request headers, TLS handshake, first TURN
    /// message.
    Deadline,
}

const SHEDS: [(Shed, &str); 4] = [
    (Shed::AddressFull, "address_full"),
    (Shed::ServerFull, "server_full"),
    (Shed::FdLimit, "fd_limit"),
    (Shed::Deadline, "deadline"),
];

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_open: AtomicI64,
    closes: [AtomicU64; CLOSE_KINDS.len()],
    refusals: [AtomicU64; REFUSALS.len()],
    sheds: [[AtomicU64; SHEDS.len()]; LISTENERS.len()],
    pub(crate) messages_received: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) signals_relayed: AtomicU64,
    pub(crate) chat_messages: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    pub(crate) rooms: AtomicI64,
    pub(crate) members: AtomicI64,
    pub(crate) turn_allocations: AtomicI64,
    pub(crate) turn_relayed: AtomicU64,
    pub(crate) turn_refused: AtomicU64,
    pub(crate) turn_dropped: AtomicU64,
    pub(crate) sfu_sessions: AtomicI64,
    pub(crate) sfu_rooms: AtomicI64,
    pub(crate) sfu_frames_forwarded: AtomicU64,
    pub(crate) sfu_bytes_forwarded: AtomicU64,
    pub(crate) sfu_keyframe_requests: AtomicU64,
    pub(crate) sfu_keyframe_requests_received: AtomicU64,
    pub(crate) sfu_packets_sent: AtomicU64,
    pub(crate) sfu_packets_received: AtomicU64,
    pub(crate) sfu_ingress_dropped: AtomicU64,
    /// Media frames the SFU dropped because a host holds that source off
    /// (or a join token does not grant it).
    pub(crate) sfu_held_dropped: AtomicU64,
    pub(crate) sfu_nacks_received: AtomicU64,
    pub(crate) sfu_nacks_sent: AtomicU64,
    pub(crate) sfu_bwe_last: AtomicU64,
    pub(crate) cluster_messages_sent: AtomicU64,
    pub(crate) cluster_messages_received: AtomicU64,
    pub(crate) redis_round_trips: AtomicU64,
    /// Chat messages not kept in Redis: its writer was too far behind.
    pub(crate) cluster_chat_dropped: AtomicU64,
    pub(crate) redis_errors: AtomicU64,
    pub(crate) cluster_rooms_homed: AtomicI64,
    pub(crate) cluster_leases_renewed: AtomicU64,
    pub(crate) cluster_leases_lost: AtomicU64,
    pub(crate) cluster_redis_up: AtomicI64,
    pub(crate) cluster_remote_members: AtomicI64,
}

impl Metrics {
    pub(crate) fn closed(&self, kind: CloseKind) {
        self.closes[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn shed(&self, listener: Listener, why: Shed) {
        self.sheds[listener as usize][why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, why: Refusal) {
        self.refusals[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self, tasks_alive: usize) -> String {
        let mut out = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |a: &AtomicI64| a.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, i128)]| {
            let _ = writeln!(out, "# HELP webconf_{name} {help}");
            let _ = writeln!(out, "# TYPE webconf_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "webconf_{name}{labels} {value}");
            }
        };
        let one = |v: i128| vec![(String::new(), v)];
        metric(
            "connections_opened_total",
            "counter",
            "WebSocket connections accepted.",
            &one(get(&self.connections_opened).into()),
        );
        metric(
            "connections_open",
            "gauge",
            "WebSocket connections open now.",
            &one(gauge(&self.connections_open).into()),
        );
        metric(
            "connection_tasks",
            "gauge",
            "Connection tasks alive (open or closing).",
            &one(tasks_alive as i128),
        );
        let closes: Vec<_> = CLOSE_KINDS
            .iter()
            .map(|(k, label)| (format!("{{reason=\"{label}\"}}"), get(&self.closes[*k as usize]).into()))
            .collect();
        metric("connections_closed_total", "counter", "WebSocket connections ended, by reason.", &closes);
        let refusals: Vec<_> = REFUSALS
            .iter()
            .map(|(k, label)| (format!("{{reason=\"{label}\"}}"), get(&self.refusals[*k as usize]).into()))
            .collect();
        metric("connections_refused_total", "counter", "WebSocket upgrades refused, by reason.", &refusals);
        let sheds: Vec<_> = LISTENERS
            .iter()
            .flat_map(|(l, listener)| {
                SHEDS.iter().map(move |(s, reason)| {
                    (format!("{{listener=\"{listener}\",reason=\"{reason}\"}}"), (*l as usize, *s as usize))
                })
            })
            .map(|(labels, (l, s))| (labels, get(&self.sheds[l][s]).into()))
            .collect();
        metric(
            "tcp_shed_total",
            "counter",
            "TCP connections closed before they were served: over a cap, out of file descriptors, past a deadline.",
            &sheds,
        );
        metric(
            "messages_received_total",
            "counter",
            "Messages received from peers.",
            &one(get(&self.messages_received).into()),
        );
        metric(
            "messages_sent_total",
            "counter",
            "Messages written to peers.",
            &one(get(&self.messages_sent).into()),
        );
        metric(
            "signals_relayed_total",
            "counter",
            "Signals relayed to their addressee.",
            &one(get(&self.signals_relayed).into()),
        );
        metric(
            "chat_messages_total",
            "counter",
            "Chat messages accepted.",
            &one(get(&self.chat_messages).into()),
        );
        metric(
            "rate_limited_total",
            "counter",
            "Messages dropped by the rate limit.",
            &one(get(&self.rate_limited).into()),
        );
        let errors: Vec<_> = ErrorCode::ALL
            .iter()
            .enumerate()
            .map(|(i, code)| (format!("{{code=\"{}\"}}", code.as_str()), get(&self.errors[i]).into()))
            .collect();
        metric("errors_total", "counter", "Error replies sent, by code.", &errors);
        metric("rooms", "gauge", "Rooms with at least one member.", &one(gauge(&self.rooms).into()));
        metric("members", "gauge", "Peers in a room.", &one(gauge(&self.members).into()));
        metric(
            "turn_allocations",
            "gauge",
            "TURN allocations now.",
            &one(gauge(&self.turn_allocations).into()),
        );
        metric(
            "turn_packets_relayed_total",
            "counter",
            "Packets the TURN server relayed.",
            &one(get(&self.turn_relayed).into()),
        );
        metric(
            "turn_refused_total",
            "counter",
            "TURN requests refused or left unanswered (over the challenge rate) and packets not relayed (no permission, over bandwidth).",
            &one(get(&self.turn_refused).into()),
        );
        metric(
            "turn_queue_dropped_total",
            "counter",
            "TURN packets dropped on a full queue.",
            &one(get(&self.turn_dropped).into()),
        );
        metric("sfu_sessions", "gauge", "Sessions with the SFU now.", &one(gauge(&self.sfu_sessions).into()));
        metric("sfu_rooms", "gauge", "Rooms with an SFU session now.", &one(gauge(&self.sfu_rooms).into()));
        metric(
            "sfu_frames_forwarded_total",
            "counter",
            "Audio and video frames the SFU sent to subscribers.",
            &one(get(&self.sfu_frames_forwarded).into()),
        );
        metric(
            "sfu_bytes_forwarded_total",
            "counter",
            "Media payload bytes the SFU sent to subscribers.",
            &one(get(&self.sfu_bytes_forwarded).into()),
        );
        metric(
            "sfu_keyframe_requests_total",
            "counter",
            "Keyframe requests (PLI) the SFU sent to publishers.",
            &one(get(&self.sfu_keyframe_requests).into()),
        );
        metric(
            "sfu_keyframe_requests_received_total",
            "counter",
            "Keyframe requests (PLI, FIR) subscribers sent the SFU.",
            &one(get(&self.sfu_keyframe_requests_received).into()),
        );
        metric(
            "sfu_packets_sent_total",
            "counter",
            "RTP packets the SFU sent to subscribers (counted every 2 s).",
            &one(get(&self.sfu_packets_sent).into()),
        );
        metric(
            "sfu_packets_received_total",
            "counter",
            "RTP packets the SFU received from publishers (counted every 2 s).",
            &one(get(&self.sfu_packets_received).into()),
        );
        metric(
            "sfu_ingress_dropped_total",
            "counter",
            "Packets the SFU dropped unread: over a session's packet rate, or over the rate of ICE checks from unknown addresses.",
            &one(get(&self.sfu_ingress_dropped).into()),
        );
        metric(
            "sfu_held_dropped_total",
            "counter",
            "Media frames the SFU did not forward because a host holds that source off or a join token does not grant it.",
            &one(get(&self.sfu_held_dropped).into()),
        );
        metric(
            "sfu_nacks_received_total",
            "counter",
            "Resend requests (NACK) subscribers sent the SFU.",
            &one(get(&self.sfu_nacks_received).into()),
        );
        metric(
            "sfu_nacks_sent_total",
            "counter",
            "Resend requests (NACK) the SFU sent publishers.",
            &one(get(&self.sfu_nacks_sent).into()),
        );
        metric(
            "sfu_bandwidth_estimate_bps",
            "gauge",
            "The latest bandwidth estimate (TWCC) towards any subscriber.",
            &one(get(&self.sfu_bwe_last).into()),
        );
        metric(
            "cluster_messages_sent_total",
            "counter",
            "Cluster mode: messages this node sent other nodes over the bus.",
            &one(get(&self.cluster_messages_sent).into()),
        );
        metric(
            "cluster_messages_received_total",
            "counter",
            "Cluster mode: messages this node received from other nodes over the bus.",
            &one(get(&self.cluster_messages_received).into()),
        );
        metric(
            "redis_round_trips_total",
            "counter",
            "Cluster mode: requests (single or pipelined) sent to Redis.",
            &one(get(&self.redis_round_trips).into()),
        );
        metric(
            "cluster_chat_dropped_total",
            "counter",
            "Cluster mode: chat messages not kept in Redis because its writer was too far behind.",
            &one(get(&self.cluster_chat_dropped).into()),
        );
        metric(
            "redis_errors_total",
            "counter",
            "Cluster mode: Redis requests that failed or timed out.",
            &one(get(&self.redis_errors).into()),
        );
        metric(
            "redis_up",
            "gauge",
            "Cluster mode: 1 while Redis answers lease renewals, else 0.",
            &one(gauge(&self.cluster_redis_up).into()),
        );
        metric(
            "cluster_remote_members",
            "gauge",
            "Cluster mode: members of rooms homed here whose WebSocket is on another node.",
            &one(gauge(&self.cluster_remote_members).into()),
        );
        metric(
            "cluster_rooms_homed",
            "gauge",
            "Cluster mode: rooms whose home is this node.",
            &one(gauge(&self.cluster_rooms_homed).into()),
        );
        metric(
            "cluster_leases_renewed_total",
            "counter",
            "Cluster mode: leases renewed (this node's record, and room claims).",
            &one(get(&self.cluster_leases_renewed).into()),
        );
        metric(
            "cluster_leases_lost_total",
            "counter",
            "Cluster mode: leases lost (Redis unreachable for a whole lease, or a room claim another node took).",
            &one(get(&self.cluster_leases_lost).into()),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_in_the_text_format() {
        let m = Metrics::default();
        m.connections_opened.fetch_add(3, Ordering::Relaxed);
        m.closed(CloseKind::TooSlow);
        m.refused(Refusal::AddressFull);
        m.error(ErrorCode::RoomFull);
        m.rooms.fetch_add(2, Ordering::Relaxed);
        let text = m.render(1);
        for line in [
            "webconf_connections_opened_total 3",
            "webconf_connections_closed_total{reason=\"too_slow\"} 1",
            "webconf_connections_refused_total{reason=\"address_full\"} 1",
            "webconf_errors_total{code=\"room-full\"} 1",
            "webconf_errors_total{code=\"bad-json\"} 0",
            "webconf_rooms 2",
            "# TYPE webconf_members gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').expect("name and value");
            assert!(name.starts_with("webconf_"), "{line}");
            assert!(value.parse::<i64>().is_ok(), "{line}");
        }
    }
}
