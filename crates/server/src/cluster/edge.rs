//! The edge of a connection whose room lives on another node: this node
//! holds the browser's WebSocket and shuttles its text messages to the
//! home node and the home's back, unread. The room logic (joins, routes,
//! chat, the SFU) runs on the home, in a remote member; this side keeps
//! only what belongs to the socket: the WebSocket framing, pings and the
//! silence deadline, the rate limit, and the close.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cluster::NodeId;
use cluster::bus::{Body, Dir, SeqOut};
use signal::ws::Event;
use signal::{ErrorCode, ProtocolError, ServerMsg, encode};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::Cluster;
use crate::App;
use crate::conn::End;
use crate::limits::{ByteBudget, TokenBucket};
use crate::socket::Socket;

/// Most messages from the home written in one go.
const BURST: usize = 64;

/// What a home sends an edge connection.
#[derive(Debug)]
pub(crate) enum FromHome {
    /// A message for the browser.
    Text(String),
    /// Close the browser's WebSocket so.
    Close(u16, String),
    /// Is the connection still there?
    Ping,
}

/// Forwards one connection from `client` to `home`, starting with `first`
/// (the `join` or `peek` that found the room there), until either side
/// ends it.
pub(crate) async fn shuttle(
    cluster: &Arc<Cluster>,
    app: &App,
    socket: &mut Socket,
    (conn, client): (u64, std::net::IpAddr),
    home: NodeId,
    first: &str,
) -> End {
    // Numbered on the bus from a base random to this process: a node
    // restarted under the same id must not reuse a number that a home
    // still knows from its previous life.
    let conn = conn.wrapping_add(cluster.incarnation);
    let (mut rx, bytes) = cluster.add_edge(conn, home.clone());
    let mut link = Link { cluster, home, conn, seq: SeqOut::default(), open: true };
    if !link.send(Body::Open(Some(client))) || !link.send(Body::Text(first)) {
        return End::Moved;
    }
    let end = run(app, socket, &mut link, &mut rx, &bytes).await;
    // The home learns the browser is gone, unless it closed it itself.
    if !matches!(end, End::ClosedByHome(..) | End::Moved) {
        link.send(Body::Closed);
    }
    cluster.remove_edge(conn);
    end
}

struct Link<'a> {
    cluster: &'a Arc<Cluster>,
    home: NodeId,
    conn: u64,
    seq: SeqOut,
    open: bool,
}

impl Link<'_> {
    fn send(&mut self, body: Body<'_>) -> bool {
        if !self.open {
            return false;
        }
        let seq = self.seq.take();
        self.open = self.cluster.publish(&self.home, Dir::ToHome, self.conn, body, seq);
        self.open
    }
}

async fn run(
    app: &App,
    socket: &mut Socket,
    link: &mut Link<'_>,
    rx: &mut mpsc::Receiver<FromHome>,
    bytes: &ByteBudget,
) -> End {
    let limits = app.config.limits;
    let mut bucket = (limits.rate_per_sec > 0)
        .then(|| TokenBucket::new(limits.rate_per_sec, limits.rate_burst, std::time::Instant::now()));
    let mut last_rate_error: Option<Instant> = None;
    let shutdown = app.shutdown.clone();
    let mut ping = tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heard = false;
    let mut heard_at = Instant::now();
    let flush = async |socket: &mut Socket| {
        tokio::time::timeout(limits.write_timeout, socket.flush()).await.ok().and_then(Result::ok).is_some()
    };
    loop {
        // What was read: forward every text message, answer the rest.
        while socket.has_input() {
            let forward = match socket.next() {
                Ok(None) => break,
                Ok(Some(None)) => continue,
                Err(e) => {
                    return if e == signal::ws::Error::TooBig { End::TooBig } else { End::BadFrame(e) };
                }
                Ok(Some(Some(event))) => match event {
                    Event::Text(text) => {
                        heard = true;
                        app.metrics.messages_received.fetch_add(1, Ordering::Relaxed);
                        if bucket.as_mut().is_none_or(|b| b.try_take(std::time::Instant::now())) {
                            Some(text.to_owned())
                        } else {
                            app.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
                            let now = Instant::now();
                            if last_rate_error.is_none_or(|t| now.duration_since(t).as_secs() >= 1) {
                                last_rate_error = Some(now);
                                socket.text(&error(app, ErrorCode::RateLimited, None, "too many messages"));
                            }
                            None
                        }
                    }
                    Event::Binary(_) => {
                        heard = true;
                        let text = "binary frames are not part of the protocol";
                        socket.text(&error(app, ErrorCode::BadMessage, None, text));
                        None
                    }
                    Event::Ping(_) | Event::Pong => {
                        heard = true;
                        None
                    }
                    Event::Close(code, _) => {
                        socket.close_frame(Some((code.unwrap_or(signal::ws::CLOSE_NORMAL), "")));
                        return End::ClosedByPeer;
                    }
                },
            };
            if let Some(text) = forward
                && !link.send(Body::Text(&text))
            {
                // The bus is full: this browser reconnects later.
                return End::Moved;
            }
        }
        if socket.has_output() && !flush(socket).await {
            return End::WriteFailed;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return End::Shutdown,
            from_home = rx.recv() => {
                // Take what else came too, so one write carries a burst.
                let mut next = from_home;
                for taken in 1.. {
                    match next {
                        Some(FromHome::Text(text)) => {
                            bytes.give(text.len());
                            socket.text(&text);
                            app.metrics.messages_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        // Written after what came before it (see conn).
                        Some(FromHome::Close(code, reason)) => return End::ClosedByHome(code, reason),
                        Some(FromHome::Ping) => {
                            link.send(Body::Pong);
                        }
                        // Our link was dropped: a message was lost, or the
                        // home died.
                        None => return End::Moved,
                    }
                    if taken == BURST {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(m) => next = Some(m),
                        Err(_) => break,
                    }
                }
                if socket.has_output() && !flush(socket).await {
                    return End::WriteFailed;
                }
            }
            read = socket.fill() => match read {
                Ok(0) => return End::ClosedByPeer,
                Ok(_) => {}
                Err(_) => return End::ReadFailed,
            },
            _ = ping.tick() => {
                let now = Instant::now();
                if std::mem::take(&mut heard) {
                    heard_at = now;
                } else if now.duration_since(heard_at) > limits.idle_timeout {
                    return End::Timeout;
                } else {
                    socket.release_idle();
                }
                socket.ping();
                if !flush(socket).await {
                    return End::WriteFailed;
                }
            }
        }
    }
}

fn error(app: &App, code: ErrorCode, request: Option<&'static str>, message: &str) -> String {
    app.metrics.error(code);
    let err = ProtocolError::new(code, request, message);
    encode(&ServerMsg::Error { code: err.code, message: &err.message, request: err.request })
}
