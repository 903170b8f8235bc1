//! The HTTP face of the server: pages, assets, security headers, and the
//! WebSocket upgrade.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::upgrade::OnUpgrade;
use room::RoomId;
use sha1::{Digest, Sha1};
use signal::close;

use crate::App;
use crate::assets::{self, Asset};
use crate::limits::LimitExceeded;
use crate::metrics::Refusal;
use crate::socket::Socket;

/// The page's Content-Security-Policy: only our own scripts, styles and
/// connections; no inline code, no plugins, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    media-src 'self' blob: mediastream:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

pub(crate) fn router(app: Arc<App>) -> Router {
    let tls = app.config.tls.is_some();
    Router::new()
        .route("/", get(|| async { page(&assets::HOME_PAGE, StatusCode::OK) }))
        .route("/r/{room}", get(room_page))
        .route("/diagnose", get(|| async { page(&assets::DIAGNOSE_PAGE, StatusCode::OK) }))
        .route("/assets/{name}", get(asset))
        .route("/ws", get(websocket))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { page(&assets::NOT_FOUND_PAGE, StatusCode::NOT_FOUND) })
        .layer(axum::middleware::from_fn_with_state(app.clone(), check_host))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::map_response(move |res: Response| strict_transport(tls, res)))
        .with_state(app)
}

/// Refuses requests that call us by a name that is not ours (DNS
/// rebinding: see [`crate::origin::HostPolicy`]) with 421, but for
/// `/healthz`, which says nothing and which load balancers ask by any name.
async fn check_host(State(app): State<Arc<App>>, req: Request, next: axum::middleware::Next) -> Response {
    let host = req.headers().get(header::HOST).map(|h| h.to_str().unwrap_or(""));
    if req.uri().path() == "/healthz" || app.hosts.allows(host) {
        return next.run(req).await;
    }
    tracing::debug!(?host, "refused a request for a host that is not ours");
    (StatusCode::MISDIRECTED_REQUEST, "this server does not answer to that name\n").into_response()
}

/// Every path redirects to HTTPS on `https_port`, same host and path.
pub(crate) fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |headers: HeaderMap, uri: axum::http::Uri| async move {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        redirect_to_https(host, uri.path_and_query().map_or("/", |p| p.as_str()), https_port)
    })
}

/// A permanent redirect to `path` on `host` (the request's `Host`, whose
/// port is replaced) over HTTPS on `https_port`.
pub(crate) fn redirect_to_https(host: Option<&str>, path: &str, https_port: u16) -> Response {
    let host = host.unwrap_or("localhost");
    // The host without its port (IPv6 literals keep their brackets).
    let name = match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(']') =>
        {
            name
        }
        _ => host,
    };
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let location = format!("https://{name}{port}{path}");
    match HeaderValue::from_str(&location) {
        Ok(value) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, value)]).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad Host header\n").into_response(),
    }
}

/// Served over TLS, tell browsers to come back only over TLS for a year
/// (they ignore it from a certificate they had to be told to accept, and
/// for IP addresses, so a LAN with a self-signed certificate is not bound).
async fn strict_transport(tls: bool, mut res: Response) -> Response {
    if tls {
        res.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    res
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Room names in URLs are the only secret a call has: never leak them.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(self), microphone=(self), display-capture=(self)"),
    );
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    res
}

fn page(asset: &'static Asset, status: StatusCode) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, asset.mime), (header::CACHE_CONTROL, "no-store")],
        Body::from(asset.body),
    )
        .into_response()
}

async fn room_page(Path(room): Path<String>) -> Response {
    match RoomId::parse(&room) {
        Ok(_) => page(&assets::ROOM_PAGE, StatusCode::OK),
        Err(_) => page(&assets::NOT_FOUND_PAGE, StatusCode::NOT_FOUND),
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    match assets::asset(&name) {
        Some(a) => {
            ([(header::CONTENT_TYPE, a.mime), (header::CACHE_CONTROL, "no-cache")], Body::from(a.body))
                .into_response()
        }
        None => page(&assets::NOT_FOUND_PAGE, StatusCode::NOT_FOUND),
    }
}

/// Ready while serving; 503 once shutting down, so a load balancer stops
/// sending new calls here while the old ones are closed.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if app.cluster.as_ref().is_some_and(|c| !c.healthy()) {
        (StatusCode::SERVICE_UNAVAILABLE, "Redis unreachable\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let body = app.metrics.render(app.connections.len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// Both ends of an accepted connection: who connected, and which of this
/// machine's addresses it reached (on a wildcard listener, that says which
/// network the client is on, and so the address it can reach us at).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Endpoints {
    /// The client.
    pub(crate) remote: SocketAddr,
    /// Our end.
    pub(crate) local: SocketAddr,
}

/// The address in one `X-Forwarded-For` entry: an IP address, or one with
/// a port as some proxies write it (`203.0.113.9:4711`, `[2001:db8::1]:443`,
/// `[2001:db8::1]`). Anything else is no address.
fn forwarded_ip(entry: &str) -> Option<std::net::IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<std::net::IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry.strip_prefix('[')?.strip_suffix(']')?.parse::<std::net::Ipv6Addr>().ok().map(Into::into)
        })
}

async fn websocket(
    State(app): State<Arc<App>>,
    ConnectInfo(ends): ConnectInfo<Endpoints>,
    mut req: Request,
) -> Response {
    let addr = ends.remote;
    let on_upgrade = req.extensions_mut().remove::<OnUpgrade>();
    let headers = req.headers();
    let (accept, on_upgrade) = match (handshake(headers), on_upgrade) {
        (Ok(accept), Some(on_upgrade)) => (accept, on_upgrade),
        (Err(refusal), _) => return refusal.into_response(),
        (Ok(_), None) => {
            return (StatusCode::BAD_REQUEST, "this connection cannot be upgraded\n").into_response();
        }
    };
    let origin = headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null"));
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let trust = app.config.trust_proxy;
    let host = trust.then(|| header_str("x-forwarded-host")).flatten().or_else(|| header_str("host"));
    // Behind a trusted proxy the peer is the proxy; the client is the last
    // address the proxy appended.
    let client = trust
        .then(|| forwarded_ip(header_str("x-forwarded-for")?.rsplit(',').next()?))
        .flatten()
        .map_or(addr, |ip| SocketAddr::new(ip, addr.port()));
    let addr = client;
    // Behind a proxy our end faces the proxy, not the browser.
    let reached = (!trust).then_some(ends.local.ip());
    if !app.origins.allows(origin, host) {
        tracing::info!(%addr, ?origin, ?host, "refused a WebSocket from another origin");
        app.metrics.refused(Refusal::Origin);
        return (StatusCode::FORBIDDEN, "this origin may not open a WebSocket here (see --allow-origin)\n")
            .into_response();
    }
    let max_message = app.config.limits.max_message_bytes;
    let tracker = app.connections.clone();
    match app.limiter.try_acquire(addr.ip()) {
        Ok(permit) => {
            tokio::spawn(tracker.track_future(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    crate::conn::run(Socket::new(upgraded, max_message), app, addr, reached, permit).await;
                }
            }));
        }
        Err(exceeded) => {
            // Upgraded only to be closed: a browser cannot read an HTTP
            // status from a failed WebSocket, but it can read a close reason.
            let (why, reason) = match exceeded {
                LimitExceeded::ServerFull => (Refusal::ServerFull, close::REASON_SERVER_FULL),
                LimitExceeded::AddressFull => (Refusal::AddressFull, close::REASON_ADDRESS_FULL),
            };
            tracing::info!(%addr, reason, "refused a WebSocket over the connection limit");
            app.metrics.refused(why);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut socket = Socket::new(upgraded, max_message);
                    socket.close(Some((close::TRY_AGAIN_LATER, reason)), crate::conn::CLOSE_LINGER).await;
                }
            });
        }
    }
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
        ],
        [(header::SEC_WEBSOCKET_ACCEPT, accept)],
    )
        .into_response()
}

/// Checks a WebSocket opening handshake (RFC 6455, 4.2.1) and returns the
/// `Sec-WebSocket-Accept` value for it, or the response refusing it.
/// No subprotocol or extension is ever chosen.
pub(crate) fn handshake(headers: &HeaderMap) -> Result<HeaderValue, BadHandshake> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(BadHandshake::NotWebSocket);
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err(BadHandshake::Version);
    }
    // The key is 16 random bytes in base64: 24 characters.
    let key = headers.get(header::SEC_WEBSOCKET_KEY).map(HeaderValue::as_bytes).unwrap_or_default();
    if key.len() != 24 {
        return Err(BadHandshake::Key);
    }
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = turn::auth::base64(&sha.finalize());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&accept).map_err(|_| BadHandshake::Key)
}

/// Why a request to `/ws` is not a WebSocket handshake we take.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BadHandshake {
    /// Not an upgrade to WebSocket at all.
    NotWebSocket,
    /// A version other than 13.
    Version,
    /// No `Sec-WebSocket-Key`, or not 16 bytes of base64.
    Key,
}

impl IntoResponse for BadHandshake {
    fn into_response(self) -> Response {
        match self {
            BadHandshake::NotWebSocket => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::UPGRADE, "websocket"), (header::SEC_WEBSOCKET_VERSION, "13")],
                "this address takes WebSocket connections only\n",
            )
                .into_response(),
            BadHandshake::Version => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "only version 13 of the WebSocket protocol is spoken here\n",
            )
                .into_response(),
            BadHandshake::Key => {
                (StatusCode::BAD_REQUEST, "missing or malformed Sec-WebSocket-Key\n").into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10, finding 9: an `X-Forwarded-For` entry with a port was no
    /// address, so every client behind such a proxy counted as the proxy.
    #[test]
    fn forwarded_entries_with_ports_are_addresses() {
        let table: &[(&str, Option<&str>)] = &[
            ("203.0.113.9", Some("203.0.113.9")),
            (" 203.0.113.9 ", Some("203.0.113.9")),
            ("203.0.113.9:4711", Some("203.0.113.9")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("unknown", None),
            ("_hidden", None),
            ("", None),
            ("203.0.113.9:port", None),
        ];
        for (entry, want) in table {
            let want = want.map(|s| s.parse::<std::net::IpAddr>().expect("ip"));
            assert_eq!(forwarded_ip(entry), want, "{entry:?}");
        }
    }

    #[test]
    fn accept_key_of_rfc_6455() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(handshake(&headers).ok(), Some(HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")));
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(handshake(&headers).err(), Some(BadHandshake::Version));
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("short"));
        assert_eq!(handshake(&headers).err(), Some(BadHandshake::Key));
        headers.remove(header::UPGRADE);
        assert_eq!(handshake(&headers).err(), Some(BadHandshake::NotWebSocket));
    }
}
