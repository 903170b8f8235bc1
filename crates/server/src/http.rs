//! The HTTP face of the server: pages, assets, security headers, and the
//! WebSocket upgrade.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use axum::extract::{ConnectInfo, Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use room::RoomId;
use signal::close;

use crate::App;
use crate::assets::{self, Asset};
use crate::limits::LimitExceeded;
use crate::metrics::Refusal;

/// The page's Content-Security-Policy: only our own scripts, styles and
/// connections; no inline code, no plugins, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    media-src 'self' blob: mediastream:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

pub(crate) fn router(app: Arc<App>) -> Router {
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
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// Every path redirects to HTTPS on `https_port`, same host and path.
pub(crate) fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |headers: HeaderMap, uri: axum::http::Uri| async move {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
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
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let location = format!("https://{name}{port}{path}");
        match HeaderValue::from_str(&location) {
            Ok(value) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, value)]).into_response(),
            Err(_) => (StatusCode::BAD_REQUEST, "bad Host header\n").into_response(),
        }
    })
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
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let body = app.metrics.render(app.connections.len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn websocket(
    State(app): State<Arc<App>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null"));
    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let trust = app.config.trust_proxy;
    let host = trust.then(|| header_str("x-forwarded-host")).flatten().or_else(|| header_str("host"));
    // Behind a trusted proxy the peer is the proxy; the client is the last
    // address the proxy appended.
    let client = trust
        .then(|| header_str("x-forwarded-for")?.rsplit(',').next()?.trim().parse::<std::net::IpAddr>().ok())
        .flatten()
        .map_or(addr, |ip| SocketAddr::new(ip, addr.port()));
    let addr = client;
    if !app.origins.allows(origin, host) {
        tracing::info!(%addr, ?origin, ?host, "refused a WebSocket from another origin");
        app.metrics.refused(Refusal::Origin);
        return (StatusCode::FORBIDDEN, "this origin may not open a WebSocket here (see --allow-origin)\n")
            .into_response();
    }
    let limits = app.config.limits;
    let tracker = app.connections.clone();
    let upgrade = upgrade
        // Small buffers keep idle connections cheap; 16 KiB of write
        // buffering still turns a burst into few system calls.
        .read_buffer_size(2048)
        .write_buffer_size(16 * 1024)
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes);
    match app.limiter.try_acquire(addr.ip()) {
        Ok(permit) => upgrade
            .on_upgrade(move |socket| tracker.track_future(crate::conn::run(socket, app, addr, permit))),
        Err(exceeded) => {
            // Upgraded only to be closed: a browser cannot read an HTTP
            // status from a failed WebSocket, but it can read a close reason.
            let (why, reason) = match exceeded {
                LimitExceeded::ServerFull => (Refusal::ServerFull, close::REASON_SERVER_FULL),
                LimitExceeded::AddressFull => (Refusal::AddressFull, close::REASON_ADDRESS_FULL),
            };
            tracing::info!(%addr, reason, "refused a WebSocket over the connection limit");
            app.metrics.refused(why);
            upgrade.on_upgrade(move |mut socket| async move {
                let frame =
                    CloseFrame { code: close::TRY_AGAIN_LATER, reason: Utf8Bytes::from_static(reason) };
                let _ = socket.send(Message::Close(Some(frame))).await;
            })
        }
    }
}
