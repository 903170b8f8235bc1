//! Cluster mode: several webconf nodes sharing one Redis (`--redis`).
//!
//! The decisions are the sans-IO [`cluster`] crate's; this is their IO:
//!
//! - **Leases** ([`Cluster::run_leases`]): every `renew_every` this node
//!   writes its record (id, addresses, load) with a lease, reads everyone
//!   else's, and renews the claims on the rooms it is home to, all in a
//!   few pipelined round trips. A node whose record has lapsed is dead to
//!   the others: connections forwarded to it or from it are closed, and
//!   the browsers reconnect (with their resume tokens) to a live home.
//! - **Homes** ([`Cluster::home_of`]): a connection about to join (or
//!   peek into) a room asks where the room lives. A room nobody holds is
//!   claimed, atomically by a Lua script, for the least loaded live node;
//!   the answer is this node ([`Home::Here`], with a guard that keeps the
//!   claim while the connection is in the room) or another.
//! - **The bus**: for a room homed elsewhere, the connection's node (the
//!   edge) shuttles the browser's text messages to the home and the
//!   home's messages back ([`edge`]); on the home a *remote member* runs
//!   the ordinary connection logic ([`crate::conn`]) over
//!   [`remote::RemoteIo`] instead of a socket. Messages travel over Redis
//!   pub/sub, one channel per node, published in order by one task
//!   ([`Cluster::run_publisher`]) and read by another
//!   ([`Cluster::run_subscriber`]).
//!
//! Why pub/sub rather than streams: signaling is live or worthless (an
//! offer replayed a minute late is harmful), pub/sub keeps nothing in
//! Redis's memory for a node that died, and it costs one `PUBLISH` per
//! message. Its at-most-once delivery is made safe by numbering each
//! connection's messages: a gap, a message no subscriber took, a bus
//! connection that dropped, all close the affected browser connections,
//! which reconnect and resume (the same path as any dropped WebSocket).
//!
//! Shared state is behind one `std::sync::Mutex`, held only for map
//! updates and never across an `.await`: the lease task, the subscriber
//! and connections all touch it briefly, and a task owning it would add a
//! round trip through a channel to every join.
//!
//! Every Redis call has a deadline ([`ClusterConfig::redis_timeout`]):
//! with Redis gone, rooms already homed here go on; a join that needs
//! Redis gets `error cluster-unavailable` instead of waiting.

pub(crate) mod edge;
pub(crate) mod remote;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use cluster::bus::{self, Body, Dir, SeqIn};
use cluster::claims::{Change, Claims, Renewal, View};
use cluster::{Load, NodeId, NodeRecord, script};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use room::RoomId;
use tokio::sync::mpsc;

pub(crate) use remote::RemoteIo;

use crate::App;
use crate::limits::{ByteBudget, ConnectionLimiter};
use crate::metrics::Metrics;
use crate::queue::{Kick, KickReason};

/// Bus messages waiting to be published, in all. Past this, the
/// connection that could not queue its message is closed (it reconnects):
/// Redis is not keeping up, and queueing more would only delay everyone.
const BUS_OUT: usize = 16 * 1024;

/// The bytes of bus messages waiting to be published, in all (with
/// [`BUS_OUT`], so a burst of large messages cannot hold a gigabyte).
const BUS_OUT_BYTES: usize = 32 * 1024 * 1024;

/// Bus messages waiting for one edge connection or remote member, and
/// their bytes: as much as a connection's outbound queue. A full one is
/// closed as too slow (the browser reconnects).
const LINK_INBOX: usize = 256;
const LINK_INBOX_BYTES: usize = 4 * 1024 * 1024;

/// Most bus messages published in one pipelined round trip.
const PUBLISH_BATCH: usize = 256;

/// How long a room's claim lives without renewal. Claims of a dead node
/// are taken over as soon as its record lapses (the claim script checks),
/// so this only bounds how long a forgotten claim lingers.
const ROOM_LEASE: Duration = Duration::from_secs(10);

/// How often each room claim is renewed.
const ROOM_RENEW: Duration = Duration::from_secs(3);

/// Chat messages waiting to be written to Redis; past this, a message is
/// not kept there (it was delivered; only a later home would miss it).
const CHAT_OUT: usize = 1024;

/// How many of a room's last chat messages Redis keeps, and for how long
/// after the last one: as much as a room's history holds anyway (the
/// room core bounds it by bytes and age again when it takes it back).
const CHAT_KEEP: isize = 100;
const CHAT_TTL: Duration = Duration::from_secs(3600);

/// Where a room's chat is kept.
fn chat_key(room: &str) -> String {
    format!("webconf:chat:{room}")
}

/// Where a room's access state (lock, lobby, password hash, bars, holds)
/// is kept while it has any: as long as a room is likely to live without a
/// host changing it (each change writes it again).
fn access_key(room: &str) -> String {
    format!("webconf:access:{room}")
}
const ACCESS_TTL: Duration = Duration::from_secs(24 * 3600);

/// Adds to `pipe` the write of `room`'s access state, as stored.
fn set_access(pipe: &mut redis::Pipeline, room: &str, stored: &str) {
    pipe.cmd("SET").arg(access_key(room)).arg(stored).arg("PX").arg(ACCESS_TTL.as_millis() as u64).ignore();
}

/// What a room homed here kept, carried to Redis in order by one task.
enum Keep {
    /// A chat message, as stored.
    Chat(String, String),
    /// Its access state, as stored.
    Access(String, String),
    /// It continues here after living elsewhere: its access state as
    /// stored (if a host restricted anything), and its chat kept longer.
    Continued(String, Option<String>),
    /// It ended (see [`room::Closing`]).
    Closed(String, room::Closing),
}

/// One chat message as kept in Redis.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredChat {
    from: String,
    name: String,
    text: String,
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

impl StoredChat {
    fn of(entry: &room::ChatEntry) -> StoredChat {
        StoredChat {
            from: entry.from.to_string(),
            name: entry.name.as_str().to_owned(),
            text: entry.text.as_str().to_owned(),
            ts: entry.ts_ms,
            id: entry.id.as_ref().map(|id| id.as_str().to_owned()),
        }
    }

    /// Back to an entry, checked like anything a peer sent (Redis is
    /// shared; what is in it is not taken on trust).
    fn entry(&self) -> Option<room::ChatEntry> {
        Some(room::ChatEntry {
            from: room::PeerId::parse(&self.from)?,
            name: room::DisplayName::parse(&self.name).ok()?,
            text: room::ChatText::parse(&self.text).ok()?,
            ts_ms: self.ts,
            id: match &self.id {
                Some(id) => Some(room::ChatId::parse(id).ok()?),
                None => None,
            },
        })
    }
}

/// The close code and reason telling a browser its room moved (its home
/// died, drained, or a message between nodes was lost): reconnect.
pub(crate) const CLOSE_MOVED: (u16, &str) = (signal::close::SERVICE_RESTART, signal::close::REASON_MOVED);

/// How cluster mode is set up.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `redis://host:port/db`.
    pub redis_url: String,
    /// This node's id.
    pub node: NodeId,
    /// Where this node serves HTTP, for the records (`host:port`).
    pub http: String,
    /// The address this node's SFU and TURN server announce.
    pub media: IpAddr,
    /// How long a node's record lives without renewal: a node is taken
    /// for dead this long (plus one renewal period) after it stops.
    pub lease: Duration,
    /// How often a node renews its record and reads the others'.
    pub renew_every: Duration,
    /// The longest any Redis call may take.
    pub redis_timeout: Duration,
}

impl ClusterConfig {
    /// Defaults for a node: leases of 1.5 s renewed every 400 ms (a dead
    /// node is noticed within about 2.3 s), Redis calls within 1 s.
    pub fn new(redis_url: String, node: NodeId, http: String, media: IpAddr) -> ClusterConfig {
        ClusterConfig {
            redis_url,
            node,
            http,
            media,
            lease: Duration::from_millis(1500),
            renew_every: Duration::from_millis(400),
            redis_timeout: Duration::from_secs(1),
        }
    }
}

/// Why cluster work failed.
#[derive(Debug)]
pub(crate) enum ClusterError {
    /// Redis did not answer in time, or refused.
    Redis(String),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Redis(e) => write!(f, "Redis: {e}"),
        }
    }
}

/// Reads the cluster's shared secret (resume tokens, TURN credentials)
/// from Redis, storing `mine` first if there is none yet: the first node
/// to start sets it, every other uses it. Fails when Redis cannot be
/// reached within `timeout`.
pub async fn shared_secret(redis_url: &str, mine: [u8; 32], timeout: Duration) -> Result<[u8; 32], String> {
    let client = redis::Client::open(redis_url).map_err(|e| format!("--redis {redis_url:?}: {e}"))?;
    let hex: String = mine.iter().map(|b| format!("{b:02x}")).collect();
    let work = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let (stored,): (String,) = redis::pipe()
            .cmd("SET")
            .arg(cluster::SECRET_KEY)
            .arg(&hex)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(cluster::SECRET_KEY)
            .query_async(&mut conn)
            .await?;
        Ok::<String, redis::RedisError>(stored)
    };
    let stored = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("Redis at {redis_url} did not answer within {timeout:?}"))?
        .map_err(|e| format!("Redis at {redis_url}: {e}"))?;
    let bytes: Option<Vec<u8>> =
        (0..stored.len()).step_by(2).map(|i| u8::from_str_radix(stored.get(i..i + 2)?, 16).ok()).collect();
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| format!("{} in Redis is not 64 hex digits; delete it", cluster::SECRET_KEY))
}

/// Where a room lives.
pub(crate) enum Home {
    /// Here: the guard keeps the claim while the connection is in the room.
    Here(HomeGuard),
    /// On another live node.
    There(NodeId),
    /// Handled here without a claim: a lookup that claims nothing (a
    /// `peek`) found the room held here, or held by no one.
    Unclaimed,
}

/// An edge connection's link: where its home is, how to reach its task.
struct EdgeLink {
    home: NodeId,
    tx: mpsc::Sender<edge::FromHome>,
    /// The bytes waiting in `tx`; the edge gives them back as it takes them.
    bytes: ByteBudget,
    seq: SeqIn,
}

/// A remote member's link: how to reach its task.
struct RemoteLink {
    tx: mpsc::Sender<remote::FromEdge>,
    /// The bytes waiting in `tx`; the member gives them back as it reads.
    bytes: ByteBudget,
    seq: SeqIn,
}

struct State {
    claims: Claims,
    /// The kick switches of this node's connections in each room it is
    /// home to: pulled when the room is lost to another node.
    members: HashMap<String, Vec<Arc<Kick>>>,
    view: View,
    /// This node's connections whose room lives elsewhere, by connection.
    edges: HashMap<u64, EdgeLink>,
    /// Members here whose connection is on another node, by (node, its
    /// connection number).
    remotes: HashMap<(NodeId, u64), RemoteLink>,
}

/// A running cluster node.
pub(crate) struct Cluster {
    pub(crate) me: NodeId,
    /// Random at start: the base of this process's connection numbers on
    /// the bus (see [`edge::shuttle`]).
    pub(crate) incarnation: u64,
    config: ClusterConfig,
    client: redis::Client,
    redis: ConnectionManager,
    state: Mutex<State>,
    bus_out: mpsc::Sender<Outgoing>,
    bus_bytes: ByteBudget,
    /// Whether the last lease renewal succeeded within the lease.
    healthy: AtomicBool,
    draining: AtomicBool,
    /// When the last lease renewal succeeded (ms since `started`).
    renewed_at: AtomicU64,
    started: Instant,
    pub(crate) metrics: Arc<Metrics>,
    /// Caps members whose connection is on another node (they hold no
    /// socket here, so the per-address cap would be meaningless).
    pub(crate) remote_limiter: Arc<ConnectionLimiter>,
    secret_hex: String,
    app: OnceLock<Weak<App>>,
    /// What rooms kept, for the writer task.
    keep_out: mpsc::Sender<Keep>,
}

/// A bus message waiting to be published, and whose it is (to close the
/// right link if it cannot be delivered).
struct Outgoing {
    to: NodeId,
    dir: Dir,
    conn: u64,
    text: String,
}

impl Cluster {
    /// Connects to Redis and starts the cluster's tasks (leases, publisher,
    /// subscriber) on the current runtime. `secret` is the cluster's shared
    /// secret (see [`shared_secret`]).
    pub(crate) async fn start(
        config: ClusterConfig,
        secret: [u8; 32],
        metrics: Arc<Metrics>,
        max_remote: usize,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Arc<Cluster>, String> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| format!("--redis {:?}: {e}", config.redis_url))?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(config.redis_timeout)
            .set_response_timeout(config.redis_timeout)
            .set_number_of_retries(1)
            .set_max_delay(200);
        let redis = tokio::time::timeout(
            config.redis_timeout * 3,
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        .map_err(|_| format!("Redis at {} did not answer", config.redis_url))?
        .map_err(|e| format!("Redis at {}: {e}", config.redis_url))?;
        let (bus_out, bus_rx) = mpsc::channel(BUS_OUT);
        let (keep_out, keep_rx) = mpsc::channel(CHAT_OUT);
        let renew_ms = u64::try_from(config.renew_every.as_millis()).unwrap_or(400);
        let cluster = Arc::new(Cluster {
            me: config.node.clone(),
            incarnation: crate::random_u64(),
            state: Mutex::new(State {
                claims: Claims::new(u64::try_from(ROOM_RENEW.as_millis()).unwrap_or(3000)),
                members: HashMap::new(),
                view: View::new(config.node.clone(), renew_ms),
                edges: HashMap::new(),
                remotes: HashMap::new(),
            }),
            config,
            client,
            redis,
            bus_out,
            bus_bytes: ByteBudget::new(BUS_OUT_BYTES),
            healthy: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            renewed_at: AtomicU64::new(0),
            started: Instant::now(),
            metrics,
            remote_limiter: ConnectionLimiter::new(max_remote, 0),
            secret_hex: secret.iter().map(|b| format!("{b:02x}")).collect(),
            app: OnceLock::new(),
            keep_out,
        });
        // The first renewal before serving anyone: the node is in the view
        // and registered by the time its first connection asks for a home.
        cluster.renew_leases().await;
        tokio::spawn(cluster.clone().run_leases(shutdown.clone()));
        tokio::spawn(cluster.clone().run_publisher(bus_rx));
        tokio::spawn(cluster.clone().run_keeper(keep_rx));
        tokio::spawn(cluster.clone().run_subscriber(shutdown));
        Ok(cluster)
    }

    /// Tells the cluster the app it serves (for the remote members it
    /// starts).
    pub(crate) fn set_app(&self, app: &Arc<App>) {
        let _ = self.app.set(Arc::downgrade(app));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; the maps stay consistent anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether Redis answered the last lease renewal within the lease.
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Runs one Redis request within the deadline, counted.
    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, ClusterError> {
        let mut conn = self.redis.clone();
        self.metrics.redis_round_trips.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.config.redis_timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.metrics.redis_errors.fetch_add(1, Ordering::Relaxed);
                Err(ClusterError::Redis(e.to_string()))
            }
            Err(_) => {
                self.metrics.redis_errors.fetch_add(1, Ordering::Relaxed);
                Err(ClusterError::Redis("Redis did not answer in time".into()))
            }
        }
    }

    /// Keeps a chat message of a room homed here in Redis, so that a later
    /// home (after this node dies or drains) starts with it. Never waits:
    /// past [`CHAT_OUT`] waiting messages, this one is not kept.
    pub(crate) fn save_chat(&self, room: &RoomId, entry: &room::ChatEntry) {
        let Ok(stored) = serde_json::to_string(&StoredChat::of(entry)) else { return };
        if self.keep_out.try_send(Keep::Chat(room.as_str().to_owned(), stored)).is_err() {
            self.metrics.cluster_chat_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Keeps the access state of a room homed here in Redis (after a host
    /// changed it, or the room came here with it), so that a later home
    /// continues with it. Never waits: if the writer is that far behind,
    /// it is not kept (counted with the chat dropped).
    pub(crate) fn save_access(&self, room: &RoomId, access: &room::RoomAccess) {
        let Ok(stored) = serde_json::to_string(&crate::kept::StoredAccess::of(access)) else { return };
        if self.keep_out.try_send(Keep::Access(room.as_str().to_owned(), stored)).is_err() {
            self.metrics.cluster_chat_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A room continues here after living elsewhere (with what Redis kept
    /// for it, read when this node claimed it): what Redis keeps is now
    /// this node's to keep, for as long as for any room homed here.
    pub(crate) fn continued(&self, room: &RoomId, access: &room::RoomAccess) {
        let stored = if access.is_open() {
            None
        } else {
            serde_json::to_string(&crate::kept::StoredAccess::of(access)).ok()
        };
        if self.keep_out.try_send(Keep::Continued(room.as_str().to_owned(), stored)).is_err() {
            self.metrics.cluster_chat_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A room homed here ended: what Redis kept for it goes (ended on
    /// purpose), or stays only as long as its members may come back with
    /// their resume tokens (emptied by lost connections: its home is
    /// draining, or the network failed them all).
    pub(crate) fn room_closed(&self, room: &RoomId, how: room::Closing) {
        if self.keep_out.try_send(Keep::Closed(room.as_str().to_owned(), how)).is_err() {
            self.metrics.cluster_chat_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What `room` kept elsewhere, as Redis has it: its chat, oldest first,
    /// and its access state. Nothing if Redis does not answer in time (the
    /// room then starts afresh).
    pub(crate) async fn carried(&self, room: &RoomId) -> (Vec<room::ChatEntry>, room::RoomAccess) {
        let mut pipe = redis::pipe();
        pipe.cmd("LRANGE").arg(chat_key(room.as_str())).arg(0).arg(-1);
        pipe.cmd("GET").arg(access_key(room.as_str()));
        match self.query::<(Vec<String>, Option<String>)>(&pipe).await {
            Ok((items, access)) => {
                let chat = items
                    .iter()
                    .filter_map(|s| serde_json::from_str::<StoredChat>(s).ok()?.entry())
                    .collect();
                let access = access.map_or_else(room::RoomAccess::default, |s| {
                    // Garbage in Redis: the room stays locked rather than open.
                    serde_json::from_str::<crate::kept::StoredAccess>(&s).map_or_else(
                        |_| room::RoomAccess { locked: true, ..room::RoomAccess::default() },
                        |a| a.access(),
                    )
                });
                (chat, access)
            }
            Err(e) => {
                tracing::info!(%room, "nothing kept for the room from Redis: {e}");
                (Vec::new(), room::RoomAccess::default())
            }
        }
    }

    /// Writes what rooms kept to Redis, in order, a batch per round trip.
    async fn run_keeper(self: Arc<Self>, mut rx: mpsc::Receiver<Keep>) {
        let mut batch = Vec::with_capacity(64);
        let resume_ms = crate::hub::RESUME_GRACE.as_millis() as u64;
        while rx.recv_many(&mut batch, 64).await > 0 {
            let mut pipe = redis::pipe();
            for keep in batch.drain(..) {
                match keep {
                    Keep::Chat(room, stored) => {
                        let key = chat_key(&room);
                        pipe.cmd("RPUSH").arg(&key).arg(stored).ignore();
                        pipe.cmd("LTRIM").arg(&key).arg(-CHAT_KEEP).arg(-1).ignore();
                        pipe.cmd("PEXPIRE").arg(&key).arg(CHAT_TTL.as_millis() as u64).ignore();
                    }
                    Keep::Access(room, stored) => set_access(&mut pipe, &room, &stored),
                    Keep::Continued(room, access) => {
                        if let Some(stored) = access {
                            set_access(&mut pipe, &room, &stored);
                        }
                        pipe.cmd("PEXPIRE").arg(chat_key(&room)).arg(CHAT_TTL.as_millis() as u64).ignore();
                    }
                    Keep::Closed(room, how) => {
                        let keep_ms = match how {
                            room::Closing::Ended => 0,
                            room::Closing::Emptied => resume_ms,
                        };
                        pipe.cmd("EVAL")
                            .arg(script::FORGET)
                            .arg(3)
                            .arg(cluster::room_key(&room))
                            .arg(chat_key(&room))
                            .arg(access_key(&room))
                            .arg(self.me.as_str())
                            .arg(keep_ms)
                            .ignore();
                    }
                }
            }
            if let Err(e) = self.query::<()>(&pipe).await {
                tracing::debug!("rooms' chat and access not kept in Redis: {e}");
            }
        }
    }

    /// Where `room` lives. With `claim`, a room nobody holds is claimed
    /// for the least loaded live node (perhaps this one); without, it is
    /// [`Home::Nowhere`]. `kick` is the asking connection's, pulled if the
    /// room is later lost to another node while it is a member here.
    pub(crate) async fn home_of(
        self: &Arc<Self>,
        room: &RoomId,
        claim: bool,
        kick: &Arc<Kick>,
    ) -> Result<Home, ClusterError> {
        let name = room.as_str();
        if !claim && self.lock().claims.holds(name) {
            return Ok(Home::Unclaimed);
        }
        if claim && let Some(guard) = self.enter_if_held(name, kick) {
            return Ok(Home::Here(guard));
        }
        let key = cluster::room_key(name);
        let node_prefix = cluster::node_key(&self.me);
        let node_prefix = node_prefix.strip_suffix(self.me.as_str()).unwrap_or("webconf:node:");
        let home: Option<String> = if claim {
            let candidate = {
                let mut st = self.lock();
                let placed = st.view.place();
                placed.filter(|n| !(self.draining.load(Ordering::Relaxed) && *n == self.me))
            };
            let candidate = candidate.unwrap_or_else(|| self.me.clone());
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(script::CLAIM)
                .arg(1)
                .arg(&key)
                .arg(candidate.as_str())
                .arg(ROOM_LEASE.as_millis() as u64)
                .arg(node_prefix)
                .arg(self.me.as_str());
            let (home,): (String,) = self.query(&pipe).await?;
            Some(home)
        } else {
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL").arg(script::LOOKUP).arg(1).arg(&key).arg(node_prefix);
            let (home,): (Option<String>,) = self.query(&pipe).await?;
            home
        };
        let Some(home) = home else { return Ok(Home::Unclaimed) };
        let Some(home) = NodeId::parse(&home) else {
            return Err(ClusterError::Redis(format!("{key} names no node: {home:?}")));
        };
        if home == self.me && !claim {
            // A peek takes no part in the claim: entering and leaving it
            // here could release a claim made for a member on its way.
            return Ok(Home::Unclaimed);
        }
        if home == self.me {
            let mut st = self.lock();
            self.enter(&mut st, name, kick);
            return Ok(Home::Here(HomeGuard {
                cluster: self.clone(),
                room: name.to_owned(),
                kick: kick.clone(),
                claimed_now: true,
            }));
        }
        Ok(Home::There(home))
    }

    fn enter_if_held(self: &Arc<Self>, room: &str, kick: &Arc<Kick>) -> Option<HomeGuard> {
        let mut st = self.lock();
        if !st.claims.holds(room) {
            return None;
        }
        self.enter(&mut st, room, kick);
        Some(HomeGuard {
            cluster: self.clone(),
            room: room.to_owned(),
            kick: kick.clone(),
            claimed_now: false,
        })
    }

    fn enter(&self, st: &mut State, room: &str, kick: &Arc<Kick>) {
        st.claims.enter(room, self.now_ms());
        st.members.entry(room.to_owned()).or_default().push(kick.clone());
        self.metrics.cluster_rooms_homed.store(st.claims.len() as i64, Ordering::Relaxed);
    }

    /// A member's guard went: the last one out releases the claim.
    fn exit(self: &Arc<Self>, room: &str, kick: &Arc<Kick>) {
        let released = {
            let mut st = self.lock();
            if let Some(list) = st.members.get_mut(room) {
                if let Some(i) = list.iter().position(|k| Arc::ptr_eq(k, kick)) {
                    list.swap_remove(i);
                }
                if list.is_empty() {
                    st.members.remove(room);
                }
            }
            let last = st.claims.exit(room);
            self.metrics.cluster_rooms_homed.store(st.claims.len() as i64, Ordering::Relaxed);
            last
        };
        if released {
            let this = self.clone();
            let room = room.to_owned();
            tokio::spawn(async move {
                let mut pipe = redis::pipe();
                pipe.cmd("EVAL")
                    .arg(script::RELEASE)
                    .arg(1)
                    .arg(cluster::room_key(&room))
                    .arg(this.me.as_str());
                // Not released (Redis away): the claim lapses by itself,
                // and a claim whose node no longer holds the room is
                // harmless: joins go to that node, which claims afresh.
                let _ = this.query::<(i64,)>(&pipe).await;
            });
        }
    }

    /// Queues a bus message; false if the bus is full (the caller closes
    /// its connection).
    fn publish(&self, to: &NodeId, dir: Dir, conn: u64, body: Body<'_>, seq: u64) -> bool {
        let text = bus::Msg { dir, from: self.me.as_str(), conn, seq, body }.encode();
        let len = text.len();
        if !self.bus_bytes.try_take(len) {
            return false;
        }
        if self.bus_out.try_send(Outgoing { to: to.clone(), dir, conn, text }).is_err() {
            self.bus_bytes.give(len);
            return false;
        }
        self.metrics.cluster_messages_sent.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Publishes queued bus messages in order, in pipelined batches.
    async fn run_publisher(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>) {
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        while rx.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
            let mut pipe = redis::pipe();
            for out in &batch {
                pipe.cmd("PUBLISH").arg(cluster::bus_channel(&out.to)).arg(&out.text);
            }
            match self.query::<Vec<i64>>(&pipe).await {
                Ok(receivers) => {
                    // Nobody subscribed on that node's channel (it died, or
                    // is resubscribing): the message is lost.
                    for (out, n) in batch.iter().zip(receivers) {
                        if n == 0 {
                            self.lost(out);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("bus messages may be lost ({e}): closing the connections between nodes");
                    self.reset_links();
                }
            }
            self.bus_bytes.give(batch.iter().map(|o| o.text.len()).sum());
            batch.clear();
        }
    }

    /// A message for `out`'s link was lost: close that link.
    fn lost(&self, out: &Outgoing) {
        let mut st = self.lock();
        match out.dir {
            // Ours is the edge: dropping its link closes the browser's socket.
            Dir::ToHome => {
                st.edges.remove(&out.conn);
            }
            Dir::ToEdge => {
                st.remotes.remove(&(out.to.clone(), out.conn));
            }
        }
    }

    /// Drops every link between nodes: their connections close (the
    /// browsers reconnect and resume).
    fn reset_links(&self) {
        let mut st = self.lock();
        st.edges.clear();
        st.remotes.clear();
    }

    /// Reads this node's bus channel, reconnecting when Redis goes; a
    /// reconnect may have lost messages, so it resets every link.
    async fn run_subscriber(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let channel = cluster::bus_channel(&self.me);
        loop {
            let connect = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                () = shutdown.cancelled() => return,
                r = tokio::time::timeout(self.config.redis_timeout, connect) => r,
            };
            match pubsub {
                Ok(Ok(pubsub)) => {
                    let mut stream = pubsub.into_on_message();
                    loop {
                        let msg = tokio::select! {
                            () = shutdown.cancelled() => return,
                            m = stream.next() => m,
                        };
                        let Some(msg) = msg else { break };
                        self.metrics.cluster_messages_received.fetch_add(1, Ordering::Relaxed);
                        match std::str::from_utf8(msg.get_payload_bytes()) {
                            Ok(text) => self.on_bus(text),
                            Err(_) => tracing::debug!("a bus message that is not UTF-8"),
                        }
                    }
                    tracing::warn!("lost the bus subscription: closing the connections between nodes");
                    self.reset_links();
                }
                _ => {
                    self.metrics.redis_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Hands one bus message to the link it is for.
    fn on_bus(self: &Arc<Self>, text: &str) {
        let Ok(msg) = bus::decode(text) else {
            tracing::debug!("a bus message not understood");
            return;
        };
        let Some(from) = NodeId::parse(msg.from) else { return };
        match msg.dir {
            Dir::ToHome => self.to_remote(from, msg.conn, msg.seq, msg.body),
            Dir::ToEdge => self.to_edge(from, msg.conn, msg.seq, msg.body),
        }
    }

    /// A message from an edge for a remote member here.
    fn to_remote(self: &Arc<Self>, edge: NodeId, conn: u64, seq: u64, body: Body<'_>) {
        let key = (edge, conn);
        if let Body::Open(client) = body {
            self.open_remote(key, seq, client);
            return;
        }
        let mut st = self.lock();
        let Some(link) = st.remotes.get_mut(&key) else {
            drop(st);
            if matches!(body, Body::Text(_)) {
                // No member for it here (this process restarted under the
                // same node id, or the member ended): the edge must not
                // wait for answers that will never come. Whatever number
                // this carries, it is not the one the edge expects next,
                // so the edge drops the link and its browser reconnects.
                let (code, reason) = CLOSE_MOVED;
                self.publish(&key.0, Dir::ToEdge, key.1, Body::Close(code, reason), u64::MAX);
            }
            return;
        };
        let len = match body {
            Body::Text(t) => t.len(),
            _ => 0,
        };
        let item = match body {
            Body::Text(t) => remote::FromEdge::Text(t.to_owned()),
            Body::Pong => remote::FromEdge::Pong,
            _ => {
                // Closed, or something only an edge is sent: the member goes.
                st.remotes.remove(&key);
                return;
            }
        };
        if !link.seq.accept(seq) || !link.bytes.try_take(len) {
            // Lost a message, or the member cannot keep up: it goes, and
            // tells the edge to close (its RemoteIo does, when dropped).
            st.remotes.remove(&key);
        } else if link.tx.try_send(item).is_err() {
            link.bytes.give(len);
            st.remotes.remove(&key);
        }
    }

    /// An edge opens a connection for a room homed here: start its member.
    fn open_remote(self: &Arc<Self>, key: (NodeId, u64), seq: u64, client: Option<IpAddr>) {
        let refuse = |code: u16, reason: &str| {
            self.publish(&key.0, Dir::ToEdge, key.1, Body::Close(code, reason), 0);
        };
        if seq != 0 {
            return;
        }
        let Some(app) = self.app.get().and_then(Weak::upgrade) else { return };
        if self.draining.load(Ordering::Relaxed) || app.shutdown.is_cancelled() {
            refuse(signal::close::GOING_AWAY, signal::close::REASON_SHUTDOWN);
            return;
        }
        let Ok(permit) = self.remote_limiter.try_acquire(IpAddr::V4(Ipv4Addr::UNSPECIFIED)) else {
            refuse(signal::close::TRY_AGAIN_LATER, signal::close::REASON_SERVER_FULL);
            return;
        };
        let (tx, rx) = mpsc::channel(LINK_INBOX);
        let bytes = ByteBudget::new(LINK_INBOX_BYTES);
        let mut seq_in = SeqIn::default();
        seq_in.accept(0);
        {
            let mut st = self.lock();
            // A second open for the same connection replaces the first.
            st.remotes.insert(key.clone(), RemoteLink { tx, bytes: bytes.clone(), seq: seq_in });
        }
        let io = RemoteIo::new(self.clone(), key.0.clone(), key.1, rx, bytes);
        let socket = crate::socket::Socket::Remote(Box::new(io));
        let tracker = app.connections.clone();
        tokio::spawn(tracker.track_future(crate::conn::run_remote(socket, app, key, client, permit)));
    }

    /// A message from a home for an edge connection here.
    fn to_edge(&self, home: NodeId, conn: u64, seq: u64, body: Body<'_>) {
        let mut st = self.lock();
        let Some(link) = st.edges.get_mut(&conn) else {
            drop(st);
            if matches!(body, Body::Ping) {
                // The browser is gone from here: end the home's member now
                // rather than at its silence deadline (a number it does
                // not expect closes the link there).
                self.publish(&home, Dir::ToHome, conn, Body::Closed, u64::MAX);
            }
            return;
        };
        if link.home != home {
            return;
        }
        let len = match body {
            Body::Text(t) => t.len(),
            _ => 0,
        };
        let item = match body {
            Body::Text(t) => edge::FromHome::Text(t.to_owned()),
            Body::Close(code, reason) => edge::FromHome::Close(code, reason.to_owned()),
            Body::Ping => edge::FromHome::Ping,
            _ => return,
        };
        if !link.seq.accept(seq) || !link.bytes.try_take(len) {
            st.edges.remove(&conn);
        } else if link.tx.try_send(item).is_err() {
            link.bytes.give(len);
            st.edges.remove(&conn);
        }
    }

    /// Registers an edge connection forwarding to `home`.
    fn add_edge(&self, conn: u64, home: NodeId) -> (mpsc::Receiver<edge::FromHome>, ByteBudget) {
        let (tx, rx) = mpsc::channel(LINK_INBOX);
        let bytes = ByteBudget::new(LINK_INBOX_BYTES);
        self.lock().edges.insert(conn, EdgeLink { home, tx, bytes: bytes.clone(), seq: SeqIn::default() });
        (rx, bytes)
    }

    fn remove_edge(&self, conn: u64) {
        self.lock().edges.remove(&conn);
    }

    fn remove_remote(&self, edge: &NodeId, conn: u64) {
        self.lock().remotes.remove(&(edge.clone(), conn));
    }

    /// This node's load, for its record.
    fn load(&self, cpu_permille: u32) -> Load {
        let m = &self.metrics;
        let n = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        Load {
            // Members here whose WebSocket is elsewhere cost this node
            // their room logic (and SFU session) as much as local ones.
            connections: n(
                m.connections_open.load(Ordering::Relaxed) + m.cluster_remote_members.load(Ordering::Relaxed)
            ),
            rooms: n(m.cluster_rooms_homed.load(Ordering::Relaxed)),
            sfu_sessions: n(m.sfu_sessions.load(Ordering::Relaxed)),
            cpu_permille,
        }
    }

    /// Renews leases every `renew_every` until shutdown.
    async fn run_leases(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.config.renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.draining.load(Ordering::Relaxed) {
                return;
            }
            self.renew_leases().await;
        }
    }

    /// One round of lease work: write this node's record, read everyone's,
    /// renew the room claims that are due.
    async fn renew_leases(self: &Arc<Self>) {
        let record = NodeRecord {
            id: self.me.clone(),
            http: self.config.http.clone(),
            media: self.config.media.to_string(),
            load: self.load(cpu::permille()),
            draining: self.draining.load(Ordering::Relaxed),
        };
        let lease_ms = self.config.lease.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(cluster::node_key(&self.me))
            .arg(record.encode())
            .arg("PX")
            .arg(lease_ms)
            .ignore()
            .cmd("SADD")
            .arg(cluster::NODES_KEY)
            .arg(self.me.as_str())
            // Back after Redis restarted empty, for nodes that start later.
            .cmd("SET")
            .arg(cluster::SECRET_KEY)
            .arg(&self.secret_hex)
            .arg("NX")
            .ignore()
            .cmd("SMEMBERS")
            .arg(cluster::NODES_KEY);
        let now = self.now_ms();
        let (added, ids): (i64, Vec<String>) = match self.query(&pipe).await {
            Ok(r) => r,
            Err(e) => {
                self.unhealthy_since_last(now, &e);
                return;
            }
        };
        let was_healthy = self.healthy.load(Ordering::Relaxed);
        let first = self.renewed_at.load(Ordering::Relaxed) == 0 && !was_healthy;
        if !first && (added == 1 || !was_healthy) {
            // Redis was emptied, or this node was cut off from it: the
            // others may take a Redis deadline or two to register again.
            let hold = self.config.lease + self.config.redis_timeout * 2;
            self.lock().view.hold_off(now + hold.as_millis() as u64);
        }
        self.renewed_at.store(now, Ordering::Relaxed);
        self.healthy.store(true, Ordering::Relaxed);
        self.metrics.cluster_redis_up.store(1, Ordering::Relaxed);
        self.metrics.cluster_leases_renewed.fetch_add(1, Ordering::Relaxed);
        let ids: Vec<NodeId> = ids.iter().filter_map(|s| NodeId::parse(s)).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("MGET");
        for id in &ids {
            pipe.arg(cluster::node_key(id));
        }
        let Ok((values,)) = self.query::<(Vec<Option<String>>,)>(&pipe).await else { return };
        let mut records = Vec::new();
        let mut gone = Vec::new();
        for (id, value) in ids.iter().zip(values) {
            match value.as_deref().and_then(NodeRecord::decode) {
                Some(r) => records.push(r),
                None => gone.push(id.clone()),
            }
        }
        let changes = self.lock().view.update(now, records);
        for change in changes {
            match change {
                Change::Up(node) => tracing::info!(%node, "a node joined the cluster"),
                Change::Down(node) => {
                    tracing::warn!(%node, "a node's lease lapsed: closing connections to and from it");
                    self.node_down(&node);
                }
            }
        }
        if !gone.is_empty() {
            let mut pipe = redis::pipe();
            pipe.cmd("SREM").arg(cluster::NODES_KEY);
            for id in &gone {
                pipe.arg(id.as_str());
            }
            let _ = self.query::<(i64,)>(&pipe).await;
        }
        self.renew_claims(now).await;
    }

    /// Redis did not answer a renewal: after a whole lease without one,
    /// this node counts as unhealthy (`/readyz`) and its lease as lost.
    fn unhealthy_since_last(&self, now: u64, e: &ClusterError) {
        let last = self.renewed_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.config.lease.as_millis() as u64
            && self.healthy.swap(false, Ordering::Relaxed)
        {
            tracing::warn!("Redis is unreachable ({e}): rooms here go on, new cross-node work fails");
            self.metrics.cluster_redis_up.store(0, Ordering::Relaxed);
            self.metrics.cluster_leases_lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes every link to or from `node`.
    fn node_down(&self, node: &NodeId) {
        let mut st = self.lock();
        st.edges.retain(|_, link| link.home != *node);
        st.remotes.retain(|(edge, _), _| edge != node);
    }

    /// Renews the room claims that are due; a room another node took is
    /// let go (its members here are closed, and reconnect to it).
    async fn renew_claims(&self, now: u64) {
        let due = self.lock().claims.due(now);
        if due.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for room in &due {
            pipe.cmd("EVAL")
                .arg(script::RENEW)
                .arg(1)
                .arg(cluster::room_key(room))
                .arg(self.me.as_str())
                .arg(ROOM_LEASE.as_millis() as u64);
        }
        let results: Vec<i64> = match self.query(&pipe).await {
            Ok(r) => r,
            Err(_) => return,
        };
        let mut st = self.lock();
        for (room, held) in due.iter().zip(results) {
            let how = if held == 1 { Renewal::Held } else { Renewal::Taken };
            if how == Renewal::Held {
                self.metrics.cluster_leases_renewed.fetch_add(1, Ordering::Relaxed);
            }
            if st.claims.renewed(room, how) {
                tracing::warn!(%room, "another node holds this room now: moving its members there");
                self.metrics.cluster_leases_lost.fetch_add(1, Ordering::Relaxed);
                for kick in st.members.remove(room).unwrap_or_default() {
                    kick.kick(KickReason::Moved);
                }
            }
        }
        self.metrics.cluster_rooms_homed.store(st.claims.len() as i64, Ordering::Relaxed);
    }

    /// Waits (up to `limit`) until every bus message queued so far was
    /// published: the closes a stopping node sends its edges must leave
    /// before the process does.
    pub(crate) async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.bus_bytes.held() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Drains this node (SIGTERM): it takes no new rooms or members,
    /// deletes its record and releases its claims, so the browsers that
    /// reconnect when its connections close find new homes at once.
    pub(crate) async fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        let rooms: Vec<String> = self.lock().claims.rooms().map(str::to_owned).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(cluster::node_key(&self.me)).ignore();
        pipe.cmd("SREM").arg(cluster::NODES_KEY).arg(self.me.as_str()).ignore();
        for room in &rooms {
            pipe.cmd("EVAL")
                .arg(script::RELEASE)
                .arg(1)
                .arg(cluster::room_key(room))
                .arg(self.me.as_str())
                .ignore();
        }
        match self.query::<()>(&pipe).await {
            Ok(()) => tracing::info!(rooms = rooms.len(), "drained: released this node's rooms"),
            Err(e) => {
                tracing::warn!("could not release this node's rooms ({e}); they move when its lease lapses")
            }
        }
    }
}

/// Keeps a connection's place in a room homed here; dropped when it
/// leaves the room (or its join is refused, or it closes).
pub(crate) struct HomeGuard {
    cluster: Arc<Cluster>,
    room: String,
    kick: Arc<Kick>,
    /// This node took the room's claim for this connection (rather than
    /// holding it already for members here): the room may have lived on
    /// another node until now.
    pub(crate) claimed_now: bool,
}

impl Drop for HomeGuard {
    fn drop(&mut self) {
        self.cluster.exit(&self.room, &self.kick);
    }
}

impl std::fmt::Debug for HomeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeGuard").field("room", &self.room).finish_non_exhaustive()
    }
}

/// The CPU this process used since the last call, in thousandths of a
/// core, from `/proc/self/stat` (0 where there is none).
mod cpu {
    use std::sync::Mutex;
    use std::time::Instant;

    static LAST: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

    fn ticks() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces), from
        // field 3: utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let mut f = rest.split_whitespace().skip(11);
        Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
    }

    pub(super) fn permille() -> u32 {
        let Some(now_ticks) = ticks() else { return 0 };
        let now = Instant::now();
        let mut last = LAST.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = match *last {
            Some((at, t)) => {
                let ms = now.duration_since(at).as_millis().max(1) as u64;
                // Linux counts 100 ticks a second (USER_HZ) everywhere.
                let used_ms = now_ticks.saturating_sub(t) * 10;
                u32::try_from(used_ms * 1000 / ms).unwrap_or(u32::MAX)
            }
            None => 0,
        };
        *last = Some((now, now_ticks));
        out
    }
}
