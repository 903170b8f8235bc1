//! Raw TCP connections before anyone is known on them, on the HTTP(S) port
//! and TURN's TCP port: caps per address and in all, taken at accept time
//! (one address cannot hold every socket); refusing visibly when the
//! process is out of file descriptors; and the HTTP face's deadlines (TLS
//! handshake, request headers). What a connection becomes afterwards (a
//! WebSocket, a TURN client) has its own caps and deadlines.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::http::Endpoints;
use crate::limits::{ConnectionLimiter, ConnectionPermit, LimitExceeded};
use crate::metrics::{Listener, Metrics, Shed};

/// Caps and accounting for one listener's raw connections.
pub(crate) struct Gate {
    limiter: Arc<ConnectionLimiter>,
    metrics: Arc<Metrics>,
    listener: Listener,
    /// One descriptor held back, so that when the process runs out a
    /// waiting connection can still be accepted and closed (refused)
    /// rather than left unanswered in the backlog.
    reserve: Option<std::fs::File>,
    /// When running out of descriptors was last logged.
    warned: Option<Instant>,
}

impl Gate {
    /// A gate letting `max_total` connections in (clamped to a share of
    /// the process's descriptors, see [`descriptor_share`]), at most
    /// `max_per_address` from one IPv4 address or IPv6 /64 (and never more
    /// than a quarter of `max_total`; 0 means only that, `None` no cap per
    /// address).
    pub(crate) fn new(
        listener: Listener,
        max_total: usize,
        max_per_address: Option<usize>,
        metrics: Arc<Metrics>,
    ) -> Gate {
        let max_total = descriptor_share(Holder::Raw(listener), max_total);
        // One address never holds more than a quarter of the places; `None`
        // (behind a reverse proxy, every connection comes from it): no cap
        // per address at all.
        let max_per_address = match max_per_address {
            None => 0,
            Some(0) => (max_total / 4).max(1),
            Some(n) => n.min(max_total / 4).max(1),
        };
        Gate {
            // An eighth more for addresses that hold nothing yet (taken
            // from the descriptors' headroom): many addresses filling the
            // cap still leave room for a health check or a new person.
            limiter: ConnectionLimiter::with_newcomers(max_total, max_per_address, (max_total / 8).max(1)),
            metrics,
            listener,
            reserve: open_reserve(),
            warned: None,
        }
    }

    /// The next connection that fits under the caps, with its place.
    /// Others are closed at once (and counted).
    pub(crate) async fn accept(&mut self, tcp: &TcpListener) -> (TcpStream, SocketAddr, ConnectionPermit) {
        loop {
            match tcp.accept().await {
                Ok((stream, addr)) => match self.limiter.try_acquire(addr.ip()) {
                    Ok(permit) => {
                        let _ = stream.set_nodelay(true);
                        return (stream, addr, permit);
                    }
                    Err(why) => {
                        let why = match why {
                            LimitExceeded::AddressFull => Shed::AddressFull,
                            LimitExceeded::ServerFull => Shed::ServerFull,
                        };
                        self.metrics.shed(self.listener, why);
                        tracing::debug!(%addr, ?why, listener = ?self.listener, "connection refused");
                    }
                },
                Err(e) if out_of_descriptors(&e) => {
                    self.metrics.shed(self.listener, Shed::FdLimit);
                    let now = Instant::now();
                    if self.warned.is_none_or(|at| now.duration_since(at) > Duration::from_secs(60)) {
                        self.warned = Some(now);
                        tracing::warn!(
                            listener = ?self.listener,
                            "out of file descriptors: refusing new connections ({e}); \
                             raise the open-files limit (ulimit -n) or lower the connection caps"
                        );
                    }
                    self.reserve = None;
                    if let Some(Ok((refused, _))) = tcp.accept().now_or_never() {
                        drop(refused);
                    }
                    self.reserve = open_reserve();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => {
                    // Aborted handshakes and the like: nothing to hold on to.
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (this process) and ENFILE (the whole system), on Linux and BSDs.
    matches!(e.raw_os_error(), Some(23 | 24))
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// The process's open-files limit (the soft one, what `accept` runs into),
/// where it can be read (Linux); `None` elsewhere.
pub(crate) fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// What may hold file descriptors, and the share of the open-files limit
/// each gets at most, so that together they leave headroom (1/8) for
/// the listeners, the SFU, files, and `/healthz` from anyone: WebSockets
/// a half, TURN relay sockets an eighth, raw HTTP(S) connections an
/// eighth, TURN/TCP and ICE-TCP connections a sixteenth each (the SFU's
/// UDP sessions hold no descriptor).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Holder {
    /// WebSocket connections.
    WebSockets,
    /// TURN allocations (one relay socket each).
    Relays,
    /// Raw connections on a listener.
    Raw(Listener),
}

/// `configured` (0: none) clamped to `holder`'s share of the open-files
/// limit, never below 16.
pub(crate) fn descriptor_share(holder: Holder, configured: usize) -> usize {
    let Some(limit) = descriptor_limit() else { return configured };
    let share = match holder {
        Holder::WebSockets => limit / 2,
        Holder::Relays | Holder::Raw(Listener::Http) => limit / 8,
        Holder::Raw(Listener::Turn | Listener::Sfu) => limit / 16,
    }
    .max(16);
    let clamped = if configured == 0 { share } else { configured.min(share) };
    if clamped < configured {
        tracing::info!(
            ?holder,
            configured,
            clamped,
            limit,
            "capped by the open-files limit (raise it with ulimit -n to allow more)"
        );
    }
    clamped
}

/// Deadlines of the HTTP face.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    /// From accept to the end of the TLS handshake (HTTPS only).
    pub(crate) tls_handshake: Duration,
    /// From accept (or the end of the previous response) to the end of a
    /// request's headers.
    pub(crate) headers: Duration,
    /// The longest an HTTP connection (not upgraded) lives: then it is
    /// asked to finish, and dropped if it has not within [`LAST_WORDS`].
    /// Bounds a client that requests and never reads the answer, which
    /// the header deadline does not.
    pub(crate) max_age: Duration,
}

/// How long an HTTP connection past its age may take to finish.
const LAST_WORDS: Duration = Duration::from_secs(10);

/// Serves HTTP(S) on `tcp` until `stop`: every accepted connection passes
/// the gate, finishes its TLS handshake (if `tls`) and sends each request's
/// headers within `deadlines`, and is served by `router` (WebSockets are
/// upgraded and leave this loop's accounting). Once `stop` completes, no
/// more are accepted, and those open are asked to finish and waited for up
/// to `grace`.
pub(crate) async fn serve_http(
    tcp: TcpListener,
    mut gate: Gate,
    router: Router,
    tls: Option<&crate::tls::Tls>,
    deadlines: Deadlines,
    grace: Duration,
    stop: impl Future<Output = ()>,
) {
    let local_port = tcp.local_addr().map(|a| a.port()).unwrap_or(0);
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.server_config()));
    let closing = CancellationToken::new();
    let tasks = TaskTracker::new();
    tokio::pin!(stop);
    loop {
        let (stream, remote, permit) = tokio::select! {
            () = &mut stop => break,
            accepted = gate.accept(&tcp) => accepted,
        };
        let local = stream.local_addr().unwrap_or(remote);
        let ends = Endpoints { remote, local };
        let router = router.clone();
        let acceptor = acceptor.clone();
        let closing = closing.clone();
        let metrics = gate.metrics.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => serve_one(stream, ends, router, deadlines, closing, &metrics).await,
                Some(acceptor) => {
                    let deadline = tokio::time::Instant::now() + deadlines.tls_handshake;
                    match crate::tls::handshake(stream, &acceptor, local_port, deadline).await {
                        Ok(Some(tls)) => serve_one(tls, ends, router, deadlines, closing, &metrics).await,
                        Ok(None) => {}
                        Err(crate::tls::HandshakeError::TimedOut) => {
                            metrics.shed(Listener::Http, Shed::Deadline);
                            tracing::debug!(%remote, "TLS handshake timed out");
                        }
                        Err(crate::tls::HandshakeError::Failed(e)) => {
                            tracing::debug!(%remote, "TLS handshake failed: {e}");
                        }
                    }
                }
            }
        });
    }
    drop(tcp);
    closing.cancel();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::debug!(left = tasks.len(), "HTTP connections still open after {grace:?}");
    }
}

/// Serves HTTP/1.1 on one connection (with upgrades), with hyper's timer
/// so its request-header deadline is on.
async fn serve_one<Io>(
    io: Io,
    ends: Endpoints,
    router: Router,
    deadlines: Deadlines,
    closing: CancellationToken,
    metrics: &Metrics,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(ends));
        let mut router = router.clone();
        async move { Ok::<_, Infallible>(router.call(req).await.unwrap_or_else(|never| match never {})) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.headers)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = tokio::time::sleep(deadlines.max_age) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(LAST_WORDS, conn).await {
                Ok(r) => r,
                Err(_) => {
                    metrics.shed(Listener::Http, Shed::Deadline);
                    return tracing::debug!(remote = %ends.remote, "HTTP connection dropped past its age");
                }
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            metrics.shed(Listener::Http, Shed::Deadline);
        }
        tracing::debug!(remote = %ends.remote, "HTTP connection ended: {e}");
    }
}
