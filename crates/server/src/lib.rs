//! The webconf IO shell: everything that touches sockets, tasks and clocks.
//!
//! - [`http`]: the axum router: pages, embedded assets, security headers, and
//!   the WebSocket upgrade with its origin check ([`origin`]).
//! - [`conn`]: one task per WebSocket: reads, rate-limits and parses peer
//!   messages, writes what the room shard queued for it, pings.
//! - [`hub`]: room shards. Each shard is one task owning a sans-IO
//!   [`room::Rooms`] core; connections talk to it by closed enums over
//!   bounded channels, and it never waits on a connection.
//! - [`limits`]: the token bucket behind per-connection rate limits.
//!
//! [`serve`] wires them together; the `webconf` binary only parses the
//! command line and calls it.

mod accept;
pub mod assets;
pub mod cluster;
mod conn;
mod http;
mod hub;
pub mod interfaces;
pub mod jointoken;
mod kept;
pub mod limits;
mod metrics;
pub mod origin;
mod queue;
pub mod resume;
pub mod sfu_io;
mod sfu_tcp;
mod socket;
pub mod tls;
pub mod turn_io;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use signal::IceServer;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything the server can be told.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most peers in one room.
    pub room_capacity: usize,
    /// Extra origins allowed to open the WebSocket, besides the server's own
    /// (and loopback ones on a loopback listener; see
    /// [`origin::OriginPolicy`]).
    pub allowed_origins: Vec<String>,
    /// What peers get in `joined.ice_servers`.
    pub ice: IceConfig,
    /// The built-in STUN/TURN server, if on.
    pub turn: Option<turn_io::TurnIo>,
    /// The SFU for group calls, if on. Without it rooms never leave
    /// browser-to-browser mode.
    pub sfu: Option<sfu_io::SfuConfig>,
    /// Per-connection limits.
    pub limits: Limits,
    /// Number of room shards (tasks owning rooms); 0 means one per core.
    pub shards: usize,
    /// Signs resume tokens; keep it across restarts so peers can come back.
    pub resume_key: resume::ResumeKey,
    /// How long a resume token stays valid after it was issued.
    pub resume_ttl: Duration,
    /// Chat messages a room keeps for newcomers.
    pub chat_history: usize,
    /// Oldest chat message a room keeps for newcomers.
    pub chat_max_age: Duration,
    /// Serve HTTPS and WSS with this certificate; plain HTTP when `None`.
    pub tls: Option<tls::Tls>,
    /// Behind a reverse proxy: take the client's address from
    /// `X-Forwarded-For` and the public host from `X-Forwarded-Host`.
    pub trust_proxy: bool,
    /// Checks join tokens (docs/tokens.md); `None`: tokens are refused.
    pub join_key: Option<jointoken::JoinKey>,
    /// Only holders of a valid join token may join.
    pub require_token: bool,
    /// Names requests may call this server by (`Host`), besides IP
    /// addresses, this machine's host name and loopback names on a
    /// loopback listener; `*` allows any. See [`origin::HostPolicy`].
    pub allowed_hosts: Vec<String>,
    /// Cluster mode (`--redis`): this node, and the cluster's shared
    /// secret. `None`: a single node, no Redis.
    pub cluster: Option<(cluster::ClusterConfig, [u8; 32])>,
    /// A single node: where rooms' locks, passwords, bars and holds are
    /// kept across a restart (`--state-dir`'s `rooms.json`). `None`: in
    /// memory only. Cluster mode keeps them in Redis instead.
    pub rooms_file: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            room_capacity: 2,
            allowed_origins: Vec::new(),
            ice: IceConfig::default(),
            turn: None,
            sfu: None,
            limits: Limits::default(),
            shards: 0,
            resume_key: resume::ResumeKey::new(random_secret()),
            resume_ttl: Duration::from_secs(600),
            chat_history: 100,
            chat_max_age: Duration::from_secs(3600),
            tls: None,
            trust_proxy: false,
            join_key: None,
            require_token: false,
            allowed_hosts: Vec::new(),
            cluster: None,
            rooms_file: None,
        }
    }
}

/// 32 bytes from the OS's random source, for a secret nobody gave us.
pub fn random_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    // Without an OS random source there is no safe secret to make; this
    // happens only on a broken system, at start-up, before serving anyone.
    getrandom::fill(&mut secret).expect("the OS random source works");
    secret
}

/// A key for one purpose (`label`) derived from the server's secret, so one
/// secret kept in the state directory can sign several kinds of things.
pub fn derive_key(secret: &[u8; 32], label: &str) -> [u8; 32] {
    use hmac::Mac;
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

/// A random 64-bit number, for ids that only need to be distinct.
pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // The OS random source failing is not something to serve through; but
    // ids only need to be distinct, so fall back to a process-wide counter
    // mixed with the time rather than refusing connections.
    if getrandom::fill(&mut bytes).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static FALLBACK: AtomicU64 = AtomicU64::new(1);
        let nanos = unix_now().as_nanos() as u64;
        return nanos ^ FALLBACK.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    }
    u64::from_le_bytes(bytes)
}

/// Seconds since 1970 by the system clock (0 if it is set before 1970).
pub(crate) fn unix_now() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

/// The STUN and TURN servers peers are told about.
#[derive(Clone, Debug, Default)]
pub struct IceConfig {
    /// Given to every peer as they are (STUN servers, say).
    pub servers: Vec<IceServer>,
    /// TURN servers that check time-limited credentials: each peer gets
    /// its own.
    pub turn: Option<TurnCredentials>,
    /// The built-in STUN/TURN server's port, when its URLs should name the
    /// address each peer's own connection reached this machine at: the
    /// server listens on every interface and was given no public address,
    /// so no one address works for everybody (a LAN address is useless to
    /// a browser on this machine's other network, `127.0.0.1` to any other
    /// machine). `turn.urls` then serve only peers whose address is unknown.
    pub per_connection_port: Option<u16>,
}

/// The built-in STUN/TURN server's URLs at `host` (a name, or an IP
/// address; IPv6 gets its brackets here).
pub fn builtin_ice_urls(host: &str, port: u16) -> Vec<String> {
    let host = match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => host.to_owned(),
    };
    vec![
        format!("stun:{host}:{port}"),
        format!("turn:{host}:{port}?transport=udp"),
        format!("turn:{host}:{port}?transport=tcp"),
    ]
}

/// TURN servers using the coturn REST credential scheme: a username
/// `<expiry>:<peer id>` and its password `base64(HMAC-SHA1(secret, username))`.
#[derive(Clone)]
pub struct TurnCredentials {
    /// `turn:` and `turns:` URLs (and `stun:` ones, which need none).
    pub urls: Vec<String>,
    /// Shared with the TURN servers.
    pub secret: Vec<u8>,
    /// How long a username stays valid. Allocations need a valid one to be
    /// refreshed, so this bounds how long a relayed call can last without
    /// the page fetching new ones (it does on every reconnect).
    pub ttl: Duration,
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("urls", &self.urls)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl IceConfig {
    /// The servers for `peer`, with TURN credentials valid from `unix_now`.
    /// `reached` is the address of this machine the peer's connection came
    /// in on, if known (see [`IceConfig::per_connection_port`]).
    pub fn for_peer(&self, peer: room::PeerId, unix_now: u64, reached: Option<IpAddr>) -> Vec<IceServer> {
        let mut out = self.servers.clone();
        if let Some(turn) = &self.turn {
            let urls = match (self.per_connection_port, reached) {
                (Some(port), Some(ip)) => builtin_ice_urls(&ip.to_canonical().to_string(), port),
                _ => turn.urls.clone(),
            };
            let (stun, relay): (Vec<String>, Vec<String>) =
                urls.into_iter().partition(|u| u.starts_with("stun:"));
            if !stun.is_empty() {
                out.push(IceServer { urls: stun, username: None, credential: None });
            }
            if !relay.is_empty() {
                let username = ::turn::auth::rest_username(unix_now + turn.ttl.as_secs(), &peer.to_string());
                let credential = ::turn::auth::rest_password(&turn.secret, &username);
                out.push(IceServer { urls: relay, username: Some(username), credential: Some(credential) });
            }
        }
        out
    }
}

/// Per-connection limits; docs/protocol.md lists the defaults.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest message a peer may send; larger ones close with 1009.
    pub max_message_bytes: usize,
    /// Messages per second a connection may send, sustained; 0 disables.
    pub rate_per_sec: u32,
    /// Messages a connection may send in one burst.
    pub rate_burst: u32,
    /// Bytes waiting to be written to one connection before it is dropped
    /// as too slow.
    pub outbound_queue_bytes: usize,
    /// Bytes waiting to be written to all connections together. Past it a
    /// connection holding more than one largest message (64 KiB) is
    /// dropped as too slow when more comes for it; one holding less is
    /// not (see `queue::FLOOR`).
    pub outbound_bytes_total: usize,
    /// Longest one write (a batch of queued messages) may take.
    pub write_timeout: Duration,
    /// How often the server pings an otherwise quiet connection.
    pub ping_interval: Duration,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A WebSocket that has not said `hello` this long after its upgrade
    /// is closed (answering pings does not keep it). Once it has, it may
    /// stay in the lobby as long as it answers pings.
    pub hello_timeout: Duration,
    /// How long shutdown waits for connections to close.
    pub shutdown_grace: Duration,
    /// Most WebSocket connections open at once; 0 means no limit.
    pub max_connections: usize,
    /// Most WebSocket connections from one IPv4 address or IPv6 /64; 0
    /// means no limit.
    pub max_connections_per_ip: usize,
    /// Most TCP connections to the HTTP(S) port not (yet) WebSockets, in
    /// all: counted from accept, so idle sockets cannot take every file
    /// descriptor. Also at most an eighth of the open-files limit. 0 means
    /// only that.
    pub max_http_connections: usize,
    /// Most such connections from one IPv4 address or IPv6 /64; 0 means
    /// no limit.
    pub max_http_connections_per_ip: usize,
    /// A request's headers must have arrived this long after the
    /// connection opened or its previous response was sent.
    pub header_timeout: Duration,
    /// A TLS handshake must be done this long after the connection opened.
    pub tls_handshake_timeout: Duration,
    /// The longest an HTTP connection that is not a WebSocket lives; then
    /// it is asked to close after its current request (browsers simply
    /// open another), and dropped 10 s later if it has not.
    pub http_connection_max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: signal::MAX_MESSAGE_BYTES,
            rate_per_sec: 100,
            rate_burst: 200,
            outbound_queue_bytes: 4 * 1024 * 1024,
            outbound_bytes_total: 512 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            hello_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            max_connections: 10_000,
            max_connections_per_ip: 100,
            max_http_connections: 4096,
            max_http_connections_per_ip: 64,
            header_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(5),
            http_connection_max_age: Duration::from_secs(120),
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers every plain-HTTP request on `listener` with a permanent redirect
/// to the same host and path over HTTPS on `https_port`, until `shutdown`.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = Limits::default();
    let metrics = Arc::new(metrics::Metrics::default());
    serve_gated(listener, http::redirect_router(https_port), None, &limits, false, metrics, shutdown).await;
    Ok(())
}

/// Serves `router` on `listener` (HTTPS if `tls`) behind the accept-time
/// caps and deadlines of `limits`, until `shutdown`.
async fn serve_gated(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<&tls::Tls>,
    limits: &Limits,
    behind_proxy: bool,
    metrics: Arc<metrics::Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    // Behind a reverse proxy every connection comes from the proxy: a cap
    // per address would be one cap for everybody.
    let per_address = (!behind_proxy).then_some(limits.max_http_connections_per_ip);
    let gate = accept::Gate::new(metrics::Listener::Http, limits.max_http_connections, per_address, metrics);
    let deadlines = accept::Deadlines {
        tls_handshake: limits.tls_handshake_timeout,
        headers: limits.header_timeout,
        max_age: limits.http_connection_max_age,
    };
    accept::serve_http(listener, gate, router, tls, deadlines, limits.shutdown_grace, shutdown).await;
}

/// Binds a listener with a backlog fit for connection storms. (tokio's
/// `TcpListener::bind` listens with a backlog of 128, which makes bursts of
/// connections stall for a second on SYN retries.)
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// State shared by every request handler and connection task. Immutable but
/// for the hub's channels, so an `Arc` of it is all that is shared.
pub(crate) struct App {
    pub(crate) config: Config,
    pub(crate) origins: origin::OriginPolicy,
    /// Which `Host` names requests may use.
    pub(crate) hosts: origin::HostPolicy,
    /// The bytes all connections' outbound queues hold together.
    pub(crate) outbound_total: limits::ByteBudget,
    pub(crate) hub: hub::Hub,
    /// Cancelled when the server shuts down; every connection watches it.
    pub(crate) shutdown: CancellationToken,
    /// Tracks WebSocket connection tasks, which outlive their HTTP request.
    pub(crate) connections: TaskTracker,
    /// Caps on open connections.
    pub(crate) limiter: std::sync::Arc<limits::ConnectionLimiter>,
    /// What `/metrics` reports.
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// The SFU, if it is on and running.
    pub(crate) sfu: Option<sfu_io::SfuHandle>,
    /// Cluster mode's node, if on.
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
    /// A single node's kept room settings, if it has a state directory.
    pub(crate) kept: Option<Arc<kept::KeptRooms>>,
}

/// Serves HTTP and WebSockets on `listener` until `shutdown` completes; then
/// closes every WebSocket with 1001 "server shutting down" and waits up to
/// [`Limits::shutdown_grace`] for them to finish.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let shards = match config.shards {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let metrics = Arc::new(metrics::Metrics::default());
    let shutdown_token = CancellationToken::new();
    let (sfu, _sfu_task) = match &config.sfu {
        Some(sfu) => match sfu_io::start(sfu.clone(), metrics.clone(), shutdown_token.clone()).await {
            Ok((handle, task)) => {
                tracing::info!(addr = %handle.addr, "SFU for group calls on UDP");
                (Some(handle), Some(AbortOnDrop(task)))
            }
            Err(e) => {
                tracing::warn!(
                    "the SFU is off (rooms stay browser to browser): cannot listen on {}: {e}",
                    sfu.listen
                );
                (None, None)
            }
        },
        None => (None, None),
    };
    // The TURN server relays to the SFU's exact address (on a LAN it is
    // private, and on our own address, both otherwise refused); known only
    // once the SFU has its port, when that was left to the system.
    // Who holds a seat where: the shards' one record, and what the built-in
    // TURN server asks before it accepts a credential handed to a peer.
    let seating = Arc::new(hub::Seating::default());
    let turn = config.turn.clone().map(|mut turn| {
        if let Some(sfu) = &sfu
            && !turn.core.local_peers.contains(&sfu.addr)
        {
            turn.core.local_peers.push(sfu.addr);
        }
        let seated = seating.clone();
        turn.core.users = Some(::turn::UserCheck(Arc::new(move |user| seated.is_seated_user(user))));
        turn
    });
    let _turn = match &turn {
        Some(turn) => match turn_io::start(turn.clone(), metrics.clone(), shutdown_token.clone()).await {
            Ok((task, revoker)) => {
                tracing::info!(listen = %turn.listen, public_ip = %turn.public_ip, "STUN/TURN on UDP and TCP");
                seating.revoke_through(revoker);
                Some(AbortOnDrop(task))
            }
            Err(e) => {
                tracing::warn!("STUN/TURN is off: cannot listen on {}: {e}", turn.listen);
                None
            }
        },
        None => None,
    };
    let p2p_max = sfu.as_ref().and(config.sfu.as_ref()).map(|s| s.p2p_max);
    let cluster = match &config.cluster {
        Some((cluster_config, secret)) => Some(
            cluster::Cluster::start(
                cluster_config.clone(),
                *secret,
                metrics.clone(),
                config.limits.max_connections,
                shutdown_token.clone(),
            )
            .await
            .map_err(io::Error::other)?,
        ),
        None => None,
    };
    // A single node keeps its rooms' settings in the state directory.
    let kept = match (&config.cluster, &config.rooms_file) {
        (None, Some(path)) => {
            let kept = kept::KeptRooms::open(path.clone(), config.resume_ttl);
            tokio::spawn(kept.clone().run_writer(shutdown_token.clone()));
            Some(kept)
        }
        _ => None,
    };
    // Loopback origins are a developer's pages only on a server listening
    // on loopback; elsewhere they are whatever runs on a visitor's machine.
    let local = listener.local_addr().map(|a| a.ip());
    let loopback = local.as_ref().is_ok_and(IpAddr::is_loopback);
    // This machine's host name (and its mDNS form) besides the names given.
    let hosts = tls::default_names(&config.allowed_hosts);
    let app = Arc::new(App {
        origins: origin::OriginPolicy::new(&config.allowed_origins, loopback),
        outbound_total: limits::ByteBudget::new(config.limits.outbound_bytes_total),
        hosts: origin::HostPolicy::new(&hosts, loopback || local.is_ok_and(|ip| ip.is_unspecified())),
        hub: hub::Hub::start(
            shards,
            &config,
            p2p_max,
            metrics.clone(),
            seating,
            sfu.clone(),
            hub::Keepers { cluster: cluster.clone(), kept: kept.clone() },
        ),
        sfu,
        cluster,
        kept,
        limiter: limits::ConnectionLimiter::new(
            accept::descriptor_share(accept::Holder::WebSockets, config.limits.max_connections),
            config.limits.max_connections_per_ip,
        ),
        metrics,
        config,
        shutdown: shutdown_token,
        connections: TaskTracker::new(),
    });
    if let Some(cluster) = &app.cluster {
        cluster.set_app(&app);
    }
    let token = app.shutdown.clone();
    let router = http::router(app.clone());
    let draining = app.cluster.clone();
    let stop = async move {
        shutdown.await;
        // A cluster node first gives its rooms away, so the browsers its
        // closing connections send elsewhere find new homes at once.
        if let Some(cluster) = draining {
            cluster.drain().await;
        }
        token.cancel();
    };
    let _reloader =
        app.config.tls.as_ref().map(|tls| AbortOnDrop(tls.spawn_reloader(Duration::from_secs(10))));
    let limits = app.config.limits;
    let behind_proxy = app.config.trust_proxy;
    serve_gated(listener, router, app.config.tls.as_ref(), &limits, behind_proxy, app.metrics.clone(), stop)
        .await;
    app.connections.close();
    let grace = app.config.limits.shutdown_grace;
    if tokio::time::timeout(grace, app.connections.wait()).await.is_err() {
        tracing::warn!(
            left = app.connections.len(),
            "connections still open after {grace:?}; exiting anyway"
        );
    }
    if let Some(cluster) = &app.cluster {
        cluster.settle(Duration::from_secs(1)).await;
    }
    if let Some(kept) = app.kept.clone() {
        let _ = tokio::task::spawn_blocking(move || kept.write()).await;
    }
    Ok(())
}
