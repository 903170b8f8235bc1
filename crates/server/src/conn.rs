//! One WebSocket connection: a single task that reads and checks the
//! peer's messages, writes what its room's shard queued for it, and pings.
//!
//! One task rather than a reader and a writer: it keeps an idle connection
//! small, and everything it waits on is in one `select!`, so a blocked send
//! to a busy shard never stops it from draining its own outbound queue.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use room::{Admission, MediaState, PasswordChange, PeerId, Role, RoomId};
use signal::ws::{self, Event};
use signal::{ClientMsg, ErrorCode, ProtocolError, ServerMsg, close, encode, encode_relay};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tracing::Instrument;
use tungstenite::Utf8Bytes;

use crate::App;
use crate::hub::{ConnId, HostCmd, PeerTx, ShardCmd};
use crate::limits::{ConnectionPermit, TokenBucket};
use crate::metrics::CloseKind;
use crate::queue::{Kick, KickReason, Outbound, PushError, QueueRx, QueueTx, Route, Seat, outbound_queue};
use crate::sfu_io::SfuCmd;
use crate::socket::Socket;

/// Most queued messages written per flush: bounds one write's size while
/// still turning bursts into few system calls.
const WRITE_BATCH: usize = 64;

/// After handling this many frames in one turn, the task lets the others
/// run before reading on: the peers it relayed to write them out while
/// more arrive, rather than after the whole burst.
const READ_BATCH: usize = 32;

/// How long a closing connection waits for the peer's close reply, so the
/// close frame is not lost to a reset.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Where a connection stands in the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for `hello`.
    Greeting,
    /// Said `hello`, in no room.
    Lobby,
    /// Asked to join this room; the shard has not answered yet. The
    /// connection reads nothing meanwhile, so it always knows which room
    /// (and so which shard) its next message concerns.
    Joining(RoomId),
    /// A member of this room.
    Joined(RoomId),
    /// Waiting in this room's lobby for a host to answer; only `leave`
    /// and `ping` are allowed meanwhile.
    Waiting(RoomId),
    /// Said `leave`; the shard has not answered `left` yet. Reads nothing
    /// meanwhile either: until the shard has let it go, its seat is held,
    /// and a `join` elsewhere would hold two.
    Leaving(RoomId),
}

/// How a connection ended, for the log.
#[derive(Debug)]
pub(crate) enum End {
    ClosedByPeer,
    Shutdown,
    TooSlow,
    Replaced,
    TooBig,
    /// Bytes that break the WebSocket framing.
    BadFrame(ws::Error),
    Timeout,
    /// No `hello` within [`crate::Limits::hello_timeout`].
    NoHello,
    WriteFailed,
    ReadFailed,
    /// Cluster mode: its room lives on this other node; the connection is
    /// forwarded there from here on ([`crate::cluster::edge`]), starting
    /// with this message.
    Forward(cluster::NodeId, String),
    /// Cluster mode: its room moved to another node, or a message between
    /// nodes was lost: the browser should reconnect.
    Moved,
    /// Cluster mode: the room's home node closed the browser's connection.
    ClosedByHome(u16, String),
}

/// A `join` or `peek` waiting to learn where its room lives (cluster mode).
struct Handoff {
    room: RoomId,
    /// The message, handled again once the room is known to live here.
    frame: String,
    /// Whether a room nobody holds is claimed (a join) or not (a peek).
    claim: bool,
}

/// Serves one upgraded WebSocket until it ends. `_permit` holds its place
/// under the connection limits until then. `reached` is the address of this
/// machine the connection came in on, when that is the one its browser
/// reaches us at (not behind a proxy).
pub(crate) async fn run(
    socket: Socket,
    app: Arc<App>,
    addr: SocketAddr,
    reached: Option<std::net::IpAddr>,
    permit: ConnectionPermit,
) {
    serve_connection(socket, app, addr, reached, permit, false).await;
}

/// Serves a remote member (cluster mode): a connection whose WebSocket is
/// on node `edge`, in a room that lives here, reached over the bus.
pub(crate) async fn run_remote(
    socket: Socket,
    app: Arc<App>,
    (edge, edge_conn): (cluster::NodeId, u64),
    client: Option<std::net::IpAddr>,
    permit: ConnectionPermit,
) {
    // The browser's address as its edge saw it: bars and the password
    // limit count it as they would here.
    let addr = SocketAddr::new(client.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])), 0);
    let span = tracing::info_span!("remote", %edge, edge_conn);
    serve_connection(socket, app, addr, None, permit, true).instrument(span).await;
}

static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn serve_connection(
    mut socket: Socket,
    app: Arc<App>,
    addr: SocketAddr,
    reached: Option<std::net::IpAddr>,
    _permit: ConnectionPermit,
    remote: bool,
) {
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let id = PeerId(crate::random_u64());
    let span = tracing::info_span!("conn", conn, %addr);
    async move {
        tracing::debug!(peer = %id, "connected");
        let metrics = app.metrics.clone();
        // A remote member is not a WebSocket here: it has its own gauge
        // (its WebSocket counts on its edge).
        let open = if remote { &metrics.cluster_remote_members } else { &metrics.connections_open };
        if !remote {
            metrics.connections_opened.fetch_add(1, Ordering::Relaxed);
        }
        open.fetch_add(1, Ordering::Relaxed);
        // Served by reference: moving the socket and the state into the
        // inner futures would store them twice in every connection's task.
        let mut state = Conn::new(app, conn, id, reached, addr.ip());
        if remote {
            // The edge answered `hello` already.
            state.state = State::Lobby;
            state.remote = true;
        }
        let end = state.serve(&mut socket).await;
        open.fetch_sub(1, Ordering::Relaxed);
        metrics.closed(match end {
            End::ClosedByPeer | End::ReadFailed | End::WriteFailed => CloseKind::Peer,
            End::BadFrame(_) => CloseKind::BadFrame,
            End::Shutdown => CloseKind::Shutdown,
            End::TooSlow => CloseKind::TooSlow,
            End::Replaced => CloseKind::Replaced,
            End::TooBig => CloseKind::TooBig,
            End::Timeout | End::NoHello => CloseKind::Timeout,
            End::Forward(..) | End::Moved | End::ClosedByHome(..) => CloseKind::Moved,
        });
        tracing::debug!(?end, "disconnected");
    }
    .instrument(span)
    .await
}

struct Conn {
    app: Arc<App>,
    conn: ConnId,
    /// The peer id this connection speaks for: random, or an old one a
    /// resume token gave back.
    id: PeerId,
    /// The id this connection was given when it opened, before any resume
    /// token: what it goes back to when a resumed join is refused.
    fresh_id: PeerId,
    state: State,
    /// What this peer last said of its microphone, camera and screen.
    media: MediaState,
    /// `None` when rate limiting is off.
    bucket: Option<TokenBucket>,
    last_rate_error: Option<Instant>,
    /// Whether anything came in since the last ping tick.
    heard: bool,
    /// When something last came in, as of the last ping tick.
    heard_at: Instant,
    /// A sender of our own outbound queue, handed to each shard we join.
    queue: QueueTx,
    outbound: QueueRx,
    /// Taken from `outbound` and being written; kept to reuse its memory.
    batch: Vec<Outbound>,
    kick: Arc<Kick>,
    /// Our seat in the room we are in (or asked to join), which its shard
    /// takes and vacates; what we hand the SFU to answer us through.
    seat: Option<Arc<Seat>>,
    /// How to reach each other member of our room, as the shard told us.
    /// Matches exactly the peers our client was told about: routes come
    /// and go with the `joined`, `peer-joined` and `peer-left` we write.
    /// (Whether a relay along one is delivered is still the shard's call:
    /// see [`Route::relay`].)
    routes: Routes,
    /// A command the shard's inbox had no room for; sent before reading on.
    pending: Option<ShardCmd>,
    pending_to: Option<mpsc::Sender<ShardCmd>>,
    /// Whether this connection may have a session with the SFU.
    in_sfu: bool,
    /// The address of this machine the connection came in on, if known.
    reached: Option<std::net::IpAddr>,
    /// The client's address (behind a trusted proxy, the one it reported).
    client_ip: std::net::IpAddr,
    /// This peer's role in its room, for the resume tokens `pong` hands out.
    role: Role,
    /// Cluster mode: a `join` or `peek` waiting to learn where its room
    /// lives; nothing more is read meanwhile.
    /// Boxed, like `home`: most connections never have one, and every
    /// idle connection would carry the room name's room.
    handoff: Option<Box<Handoff>>,
    /// Cluster mode: the message being handled again was found to concern
    /// a room that lives here.
    routed: bool,
    /// Cluster mode: keeps the claim on this node's room while this
    /// connection is in it.
    home: Option<Box<crate::cluster::HomeGuard>>,
    /// A remote member: its WebSocket is on another node.
    remote: bool,
    /// Cluster mode: the chat and access state Redis keeps for the room
    /// this `join` found homed here, for the room core to continue it with
    /// if it is new here.
    carried: (Vec<room::ChatEntry>, room::RoomAccess),
}

impl Conn {
    fn new(
        app: Arc<App>,
        conn: ConnId,
        id: PeerId,
        reached: Option<std::net::IpAddr>,
        client_ip: std::net::IpAddr,
    ) -> Conn {
        let fresh_id = id;
        let limits = app.config.limits;
        // Bounded by bytes: a shard that finds it full drops this peer as
        // too slow.
        let (queue, outbound) =
            outbound_queue(limits.outbound_queue_bytes.max(1), app.outbound_total.clone());
        let now = Instant::now();
        let bucket = (limits.rate_per_sec > 0)
            .then(|| TokenBucket::new(limits.rate_per_sec, limits.rate_burst, now.into_std()));
        Conn {
            bucket,
            app,
            conn,
            id,
            fresh_id,
            state: State::Greeting,
            media: MediaState::default(),
            last_rate_error: None,
            heard: false,
            heard_at: now,
            queue,
            outbound,
            batch: Vec::new(),
            kick: Arc::new(Kick::default()),
            seat: None,
            routes: Routes::default(),
            pending: None,
            pending_to: None,
            in_sfu: false,
            reached,
            client_ip,
            role: Role::Guest,
            handoff: None,
            routed: false,
            home: None,
            remote: false,
            carried: Default::default(),
        }
    }

    async fn serve(&mut self, socket: &mut Socket) -> End {
        let mut end = match self.serve_loop(socket).await {
            Err(end) => end,
            Ok(never) => match never {},
        };
        if let End::Forward(home, first) = end {
            end = match self.app.cluster.clone() {
                // Boxed: once per forwarded connection, and not worth a
                // place in every connection's task.
                Some(cluster) => {
                    Box::pin(crate::cluster::edge::shuttle(
                        &cluster,
                        &self.app,
                        socket,
                        (self.conn, self.client_ip),
                        home,
                        &first,
                    ))
                    .await
                }
                None => End::Moved,
            };
        }
        let code_reason = match end {
            End::Shutdown => Some((close::GOING_AWAY, close::REASON_SHUTDOWN)),
            End::Timeout => Some((close::GOING_AWAY, close::REASON_TIMEOUT)),
            End::NoHello => Some((close::POLICY, close::REASON_NO_HELLO)),
            End::TooSlow => Some((close::POLICY, close::REASON_TOO_SLOW)),
            End::Replaced => Some((close::REPLACED, close::REASON_REPLACED)),
            End::TooBig => Some((close::TOO_BIG, close::REASON_TOO_BIG)),
            End::BadFrame(e) => Some((e.close_code(), e.reason())),
            End::Moved | End::Forward(..) => Some(crate::cluster::CLOSE_MOVED),
            End::ClosedByHome(code, ref reason) => Some((code, reason.as_str())),
            End::ClosedByPeer | End::WriteFailed | End::ReadFailed => None,
        };
        // Leave the room first, so the others hear of it without waiting for
        // this peer's close handshake.
        if let State::Joining(room) | State::Joined(room) | State::Waiting(room) | State::Leaving(room) =
            &self.state
        {
            let shard = self.app.hub.shard(room).clone();
            // Blocks only while the shard's inbox is full; the shard never
            // waits on us, so this always completes.
            // Boxed, like the close below: once per connection, and not worth
            // a place in every idle connection's task.
            let _ = Box::pin(shard.send(ShardCmd::Disconnect { peer: self.id, conn: self.conn })).await;
            self.leave_sfu();
        }
        if let Some(close) = code_reason {
            // Boxed: once per connection.
            Box::pin(socket.close(Some(close), CLOSE_LINGER)).await;
        } else if socket.has_output() {
            // The answer to the peer's close, and anything before it.
            let _ = Box::pin(timeout(CLOSE_LINGER, socket.flush())).await;
        }
        end
    }

    async fn serve_loop(&mut self, socket: &mut Socket) -> Result<std::convert::Infallible, End> {
        let every = self.app.config.limits.ping_interval;
        // Made once, not per turn of the loop: each is a waiter in a list.
        let shutdown = self.app.shutdown.clone();
        let shutdown = shutdown.cancelled();
        tokio::pin!(shutdown);
        let kick = self.kick.clone();
        let kicked = kick.kicked();
        tokio::pin!(kicked);
        // A socket that never says hello holds a place for nothing.
        let no_hello = tokio::time::sleep(self.app.config.limits.hello_timeout);
        tokio::pin!(no_hello);
        let mut ping = tokio::time::interval_at(Instant::now() + every, every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // What was read: just now, or while reading was paused (a join
            // waiting for its answer, a command for a full shard), which is
            // handled as soon as it resumes, not when more bytes come.
            if self.reading() && socket.has_input() {
                let handled = self.on_frames(socket)?;
                if socket.has_output() {
                    self.flush(socket).await?;
                }
                if handled >= READ_BATCH {
                    tokio::task::yield_now().await;
                }
            }
            if let Some(handoff) = self.handoff.take() {
                // Boxed: Redis round trips hold a large future, needed once
                // per join, not for the life of every connection's task.
                Box::pin(self.route(socket, handoff)).await?;
                continue;
            }
            let pending_to = self.pending_to.clone();
            tokio::select! {
                biased;
                () = &mut shutdown => return Err(End::Shutdown),
                reason = &mut kicked => return Err(match reason {
                    KickReason::TooSlow => End::TooSlow,
                    KickReason::Replaced => End::Replaced,
                    KickReason::Moved => End::Moved,
                }),
                () = &mut no_hello, if self.state == State::Greeting => return Err(End::NoHello),
                () = self.outbound.recv_many(&mut self.batch, WRITE_BATCH) => {
                    self.write_batch(socket);
                    self.flush(socket).await?;
                }
                permit = async { pending_to?.reserve_owned().await.ok() }, if self.pending.is_some() => {
                    match (permit, self.pending.take()) {
                        (Some(permit), Some(cmd)) => { permit.send(cmd); }
                        // The shard is gone: the server is shutting down.
                        _ => return Err(End::Shutdown),
                    }
                }
                // Handled at the top of the loop.
                read = socket.fill(), if self.reading() => match read {
                    Ok(0) => return Err(End::ClosedByPeer),
                    Ok(_) => {}
                    Err(_) => return Err(End::ReadFailed),
                },
                _ = ping.tick() => {
                    let now = Instant::now();
                    if std::mem::take(&mut self.heard) {
                        self.heard_at = now;
                    } else if now.duration_since(self.heard_at) > self.app.config.limits.idle_timeout {
                        return Err(End::Timeout);
                    } else {
                        // Quiet for a whole interval: give back buffers.
                        socket.release_idle();
                    }
                    socket.ping();
                    self.flush(socket).await?;
                }
            }
        }
    }

    /// Whether to read the next frame: not while a command waits for room
    /// in a shard's inbox, nor while a join or leave waits for its answer
    /// (or a join to learn where its room lives).
    fn reading(&self) -> bool {
        self.pending.is_none()
            && self.handoff.is_none()
            && !matches!(self.state, State::Joining(_) | State::Leaving(_))
    }

    /// Cluster mode: finds where a `join`'s or `peek`'s room lives. Here:
    /// the message is handled as on a single node. Elsewhere: the
    /// connection is forwarded there (a remote member, already forwarded
    /// once, is told to reconnect instead). Redis unreachable: the client
    /// gets `cluster-unavailable`, and may try again.
    async fn route(&mut self, socket: &mut Socket, handoff: Box<Handoff>) -> Result<(), End> {
        let Some(cluster) = self.app.cluster.clone() else { return Ok(()) };
        let kind = if handoff.claim { "join" } else { "peek" };
        let reply = match cluster.home_of(&handoff.room, handoff.claim, &self.kick).await {
            Ok(home @ (crate::cluster::Home::Here(_) | crate::cluster::Home::Unclaimed)) => {
                if let crate::cluster::Home::Here(guard) = home {
                    // Its chat, if the room may have lived on another node
                    // until now (a room already homed here has its own).
                    if handoff.claim && guard.claimed_now {
                        self.carried = cluster.carried(&handoff.room).await;
                    }
                    self.home = Some(Box::new(guard));
                }
                self.routed = true;
                let reply = self.on_text(&handoff.frame);
                self.routed = false;
                reply
            }
            Ok(crate::cluster::Home::There(node)) if self.remote => {
                tracing::info!(%node, room = %handoff.room, "a remote member's room lives elsewhere");
                return Err(End::Moved);
            }
            Ok(crate::cluster::Home::There(node)) => return Err(End::Forward(node, handoff.frame)),
            Err(e) => {
                tracing::info!(room = %handoff.room, "cannot find where a room lives: {e}");
                Some(self.error_reply(&ProtocolError::new(
                    ErrorCode::ClusterUnavailable,
                    Some(kind),
                    "the servers cannot reach each other just now; try again",
                )))
            }
        };
        if let Some(reply) = reply {
            self.app.metrics.messages_sent.fetch_add(1, Ordering::Relaxed);
            socket.text(&reply);
            self.flush(socket).await?;
        }
        Ok(())
    }

    /// Handles every whole frame read so far (stopping early if reading
    /// must pause); replies wait in the socket's output. Returns how many
    /// frames it handled.
    fn on_frames(&mut self, socket: &mut Socket) -> Result<usize, End> {
        let mut handled = 0;
        while self.reading() {
            let reply = match socket.next() {
                Ok(None) => break,
                Ok(Some(None)) => continue, // A fragment; its message is not whole yet.
                Err(e) => return Err(if e == ws::Error::TooBig { End::TooBig } else { End::BadFrame(e) }),
                Ok(Some(Some(event))) => match event {
                    Event::Text(text) => {
                        self.app.metrics.messages_received.fetch_add(1, Ordering::Relaxed);
                        self.on_text(text)
                    }
                    Event::Binary(_) => {
                        self.app.metrics.messages_received.fetch_add(1, Ordering::Relaxed);
                        self.on_binary()
                    }
                    // The socket answered a ping already.
                    Event::Ping(_) | Event::Pong => None,
                    Event::Close(code, _) => {
                        // Answer with the same code, then end.
                        socket.close_frame(Some((code.unwrap_or(ws::CLOSE_NORMAL), "")));
                        return Err(End::ClosedByPeer);
                    }
                },
            };
            handled += 1;
            self.heard = true;
            if let Some(reply) = reply {
                self.app.metrics.messages_sent.fetch_add(1, Ordering::Relaxed);
                socket.text(&reply);
            }
        }
        Ok(handled)
    }

    /// Queues what was taken from the queue for one write. Membership
    /// changes the shard sent along are applied in the same order the
    /// client learns of them.
    fn write_batch(&mut self, socket: &mut Socket) {
        let mut written = 0u64;
        let mut batch = std::mem::take(&mut self.batch);
        for out in batch.drain(..) {
            let text = match out {
                Outbound::Text(text) => text,
                Outbound::JoinAnswer(answer) => {
                    let answer = *answer;
                    self.role = answer.role;
                    self.state = match answer.room {
                        Some(room) if answer.waiting => State::Waiting(room),
                        Some(room) => State::Joined(room),
                        None => {
                            // A resumed id is this connection's only once
                            // its join succeeded.
                            self.id = self.fresh_id;
                            self.seat = None;
                            self.home = None;
                            State::Lobby
                        }
                    };
                    self.routes = Routes(answer.routes);
                    answer.text
                }
                Outbound::Left(text) => {
                    // The shard has vacated our seat (we left, stopped
                    // waiting, were removed, or the call ended): nothing
                    // more of that room comes after this.
                    self.state = State::Lobby;
                    self.seat = None;
                    self.home = None;
                    self.routes.clear();
                    self.role = Role::Guest;
                    self.leave_sfu();
                    text
                }
                Outbound::PeerJoined(joined) => {
                    let (text, peer, route) = *joined;
                    self.routes.insert(peer, route);
                    text
                }
                Outbound::PeerLeft { text, peer } => {
                    self.routes.remove(&peer);
                    text
                }
                Outbound::Role { text, role } => {
                    self.role = role;
                    text
                }
            };
            socket.text(text.as_str());
            written += 1;
        }
        self.batch = batch;
        self.app.metrics.messages_sent.fetch_add(written, Ordering::Relaxed);
        // Keep the buffer while busy; an idle connection keeps none.
        if self.batch.capacity() <= 4 {
            self.batch = Vec::new();
        }
    }

    /// Writes what the socket holds, within the write deadline; a kick (too
    /// slow, replaced) ends a write that waits, rather than the deadline.
    async fn flush(&mut self, socket: &mut Socket) -> Result<(), End> {
        with_deadline(self.app.config.limits.write_timeout, socket.flush(), &self.kick).await
    }

    /// Handles a binary frame: not part of the protocol.
    fn on_binary(&mut self) -> Option<String> {
        if !self.admit() {
            return self.rate_limited();
        }
        let err =
            ProtocolError::new(ErrorCode::BadMessage, None, "binary frames are not part of the protocol");
        Some(self.error_reply(&err))
    }

    /// Handles one text frame; returns a reply to write at once, if any.
    /// Room business goes to the shard, whose answers come through the queue.
    fn on_text(&mut self, frame: &str) -> Option<String> {
        // A message handled again after routing was counted the first time.
        if !self.routed && !self.admit() {
            return self.rate_limited();
        }
        let msg = match signal::parse(frame) {
            Ok(msg) => msg,
            Err(err) => return Some(self.error_reply(&err)),
        };
        let kind = msg.kind();
        match (&self.state, msg) {
            (State::Joined(room), ClientMsg::Ping) => {
                let expires = (crate::unix_now() + self.app.config.resume_ttl).as_secs();
                let token = self.app.config.resume_key.issue_with_role(room, self.id, expires, self.role);
                Some(encode(&ServerMsg::Pong { resume: Some(&token) }))
            }
            (_, ClientMsg::Ping) => Some(encode(&ServerMsg::Pong { resume: None })),
            (_, ClientMsg::Hello { version }) if version == signal::VERSION => {
                if self.state == State::Greeting {
                    self.state = State::Lobby;
                }
                Some(encode(&ServerMsg::Welcome {
                    version,
                    server: concat!("webconf ", env!("CARGO_PKG_VERSION")),
                }))
            }
            (_, ClientMsg::Hello { version }) => Some(self.error_reply(&ProtocolError::new(
                ErrorCode::UnsupportedVersion,
                Some(kind),
                format!(
                    "this server speaks version {} of the protocol, not {version}: reload the page",
                    signal::VERSION
                ),
            ))),
            (State::Greeting, _) => Some(self.error_reply(&ProtocolError::new(
                ErrorCode::HelloRequired,
                Some(kind),
                "say hello first",
            ))),
            (State::Lobby, ClientMsg::Join { room, .. }) if self.app.cluster.is_some() && !self.routed => {
                self.handoff = Some(Box::new(Handoff { room, frame: frame.to_owned(), claim: true }));
                None
            }
            (State::Lobby, ClientMsg::Peek { room }) if self.app.cluster.is_some() && !self.routed => {
                self.handoff = Some(Box::new(Handoff { room, frame: frame.to_owned(), claim: false }));
                None
            }
            (State::Lobby, ClientMsg::Join { room, name, media, resume, token, password, create }) => {
                let now = crate::unix_now().as_secs();
                let mut admission = Admission {
                    // An IPv4 address or an IPv6 /64: one customer's network, as
                    // the connection limits count it, so a bar or the password
                    // limit is not dodged by taking another address from it.
                    addr: turn::policy::client_key(self.client_ip),
                    create,
                    password: password.map(Cow::into_owned),
                    history: std::mem::take(&mut self.carried.0),
                    access: Box::new(match &self.app.kept {
                        Some(kept) => kept.carried(&room),
                        None => std::mem::take(&mut self.carried.1),
                    }),
                    ..Admission::default()
                };
                let mut name = name;
                match (token, &self.app.config.join_key) {
                    (Some(token), Some(key)) => match key.verify(&token, &room, now) {
                        Ok(grant) => {
                            name = grant.name;
                            admission.token_host = grant.host;
                            admission.grants = grant.grants;
                        }
                        Err(e) => {
                            let err = ProtocolError::new(ErrorCode::BadToken, Some(kind), e.message());
                            return Some(self.error_reply(&err));
                        }
                    },
                    (Some(_), None) => {
                        let err = ProtocolError::new(
                            ErrorCode::BadToken,
                            Some(kind),
                            "this server does not accept join tokens",
                        );
                        return Some(self.error_reply(&err));
                    }
                    (None, _) if self.app.config.require_token => {
                        let err = ProtocolError::new(
                            ErrorCode::TokenRequired,
                            Some(kind),
                            "this server admits only people invited with a join token",
                        );
                        return Some(self.error_reply(&err));
                    }
                    (None, _) => {}
                }
                let mut resumed = false;
                if let Some(token) = resume {
                    match self.app.config.resume_key.verify_with_role(&token, &room, now) {
                        Ok((id, role)) => {
                            tracing::debug!(peer = %id, "resuming an earlier peer id");
                            self.id = id;
                            resumed = true;
                            admission.resumed = true;
                            admission.resumed_host = role == Role::Host;
                        }
                        Err(e) => {
                            let err = ProtocolError::new(ErrorCode::BadResume, Some(kind), e.message());
                            self.home = None;
                            return Some(self.error_reply(&err));
                        }
                    }
                }
                self.media = media;
                self.routes.clear();
                let seat = Seat::new(self.queue.clone(), self.kick.clone());
                self.seat = Some(seat.clone());
                let tx = PeerTx { conn: self.conn, seat, resumed, reached: self.reached };
                self.state = State::Joining(room.clone());
                self.send_to_shard(
                    &room,
                    ShardCmd::Join { peer: self.id, room: room.clone(), name, media, tx, admission },
                );
                None
            }
            (State::Joined(room), ClientMsg::Admit { peer }) => self.host(room.clone(), HostCmd::Admit(peer)),
            (State::Joined(room), ClientMsg::Deny { peer }) => self.host(room.clone(), HostCmd::Deny(peer)),
            (State::Joined(room), ClientMsg::RoomSettings { locked, lobby, password }) => {
                let password = password.map(|p| {
                    if p.is_empty() {
                        PasswordChange::Clear
                    } else {
                        let mut salt = [0u8; 16];
                        salt.copy_from_slice(&crate::random_secret()[..16]);
                        PasswordChange::Set { password: p.into_owned(), salt }
                    }
                });
                self.host(room.clone(), HostCmd::Settings { locked, lobby, password })
            }
            (State::Joined(room), ClientMsg::Moderate { peer, action }) => {
                self.host(room.clone(), HostCmd::Moderate(peer, action))
            }
            (State::Joined(room), ClientMsg::EndCall) => self.host(room.clone(), HostCmd::EndCall),
            (State::Waiting(room), ClientMsg::Leave) => {
                // Stops waiting; `left` comes back from the shard and moves
                // this connection out (or, if a host let it in meanwhile,
                // it leaves the room like any member).
                let room = room.clone();
                self.send_to_shard(&room, ShardCmd::Leave { peer: self.id, conn: self.conn });
                self.state = State::Leaving(room);
                None
            }
            (State::Lobby, ClientMsg::Peek { room }) => {
                let cmd = ShardCmd::Peek { room: room.clone(), queue: self.queue.clone() };
                self.send_to_shard(&room, cmd);
                None
            }
            (
                State::Joined(_) | State::Joining(_) | State::Waiting(_) | State::Leaving(_),
                ClientMsg::Peek { .. },
            ) => Some(self.error_reply(&ProtocolError::new(
                ErrorCode::AlreadyJoined,
                Some(kind),
                "you are in a room already: joined and peer-joined say who is there",
            ))),
            (
                State::Joined(_) | State::Joining(_) | State::Waiting(_) | State::Leaving(_),
                ClientMsg::Join { .. },
            ) => Some(self.error_reply(&ProtocolError::new(
                ErrorCode::AlreadyJoined,
                Some(kind),
                "you are in a room already: leave it first",
            ))),
            (State::Joined(_), ClientMsg::Signal { to, data }) => {
                // Straight into the addressee's queue, if it is in our room
                // as far as our client was told.
                let Some(route) = self.routes.get(&to) else {
                    let err =
                        ProtocolError::new(ErrorCode::UnknownPeer, Some(kind), "no such peer in your room");
                    return Some(self.error_reply(&err));
                };
                let text = Utf8Bytes::from(encode_relay(self.id, data.get()));
                match route.relay(text) {
                    Ok(()) => {
                        self.app.metrics.signals_relayed.fetch_add(1, Ordering::Relaxed);
                    }
                    // It cannot keep up: `relay` dropped it, and its room
                    // hears of it. Or it is gone or has left already
                    // (`peer-left` is on its way to us), or we have.
                    Err(PushError::Full | PushError::Closed | PushError::NotSeated) => {}
                }
                None
            }
            (State::Joined(room), ClientMsg::Chat { text, id }) => {
                let room = room.clone();
                self.send_to_shard(&room, ShardCmd::Chat { peer: self.id, conn: self.conn, text, id });
                None
            }
            (State::Joined(room), ClientMsg::Media { audio, video, screen }) => {
                let room = room.clone();
                let m = &mut self.media;
                m.audio = audio.unwrap_or(m.audio);
                m.video = video.unwrap_or(m.video);
                m.screen = screen.unwrap_or(m.screen);
                let media = *m;
                self.send_to_shard(&room, ShardCmd::Media { peer: self.id, conn: self.conn, media });
                None
            }
            (State::Joined(room), ClientMsg::Sfu { kind: sdp_kind, sdp, sources }) => {
                let Some(sfu) = &self.app.sfu else {
                    let err = ProtocolError::new(
                        ErrorCode::SfuUnavailable,
                        Some(kind),
                        "this server runs no SFU for group calls",
                    );
                    return Some(self.error_reply(&err));
                };
                let sdp = sdp.into_owned();
                // Joined, so seated (or about to be vacated, and then unheard).
                let seat = self.seat.clone()?;
                let cmd = match sdp_kind {
                    signal::SdpKind::Offer => {
                        self.in_sfu = true;
                        SfuCmd::Offer {
                            room: room.clone(),
                            peer: self.id,
                            conn: self.conn,
                            seat,
                            sdp,
                            sources,
                        }
                    }
                    signal::SdpKind::Answer => SfuCmd::Answer { conn: self.conn, seat, sdp },
                };
                if sfu.send(cmd) {
                    return None;
                }
                let err =
                    ProtocolError::new(ErrorCode::SfuUnavailable, Some(kind), "the SFU is busy; try again");
                Some(self.error_reply(&err))
            }
            (State::Joined(_), ClientMsg::SfuLayout { tiles }) => {
                // Only meaningful with a session; without one there is
                // nothing to lay out, and nothing to answer.
                if self.in_sfu
                    && let Some(sfu) = &self.app.sfu
                {
                    // A layout lost to a full inbox is replaced by the next.
                    let _ = sfu.send(SfuCmd::Layout { conn: self.conn, tiles });
                }
                None
            }
            (State::Joined(room), ClientMsg::Leave) => {
                let room = room.clone();
                self.send_to_shard(&room, ShardCmd::Leave { peer: self.id, conn: self.conn });
                self.leave_sfu();
                self.home = None;
                // Signals stop here already; the shard's `left` ends the rest.
                self.routes.clear();
                self.state = State::Leaving(room);
                None
            }
            (State::Lobby | State::Joining(_) | State::Leaving(_), ClientMsg::Leave)
            | (
                State::Lobby | State::Joining(_) | State::Waiting(_) | State::Leaving(_),
                ClientMsg::Signal { .. }
                | ClientMsg::Chat { .. }
                | ClientMsg::Media { .. }
                | ClientMsg::Sfu { .. }
                | ClientMsg::SfuLayout { .. }
                | ClientMsg::Admit { .. }
                | ClientMsg::Deny { .. }
                | ClientMsg::RoomSettings { .. }
                | ClientMsg::Moderate { .. }
                | ClientMsg::EndCall,
            ) => Some(self.error_reply(&ProtocolError::new(
                ErrorCode::NotJoined,
                Some(kind),
                "join a room first",
            ))),
        }
    }

    /// Hands a host action to the room's shard, which checks it.
    fn host(&mut self, room: RoomId, action: HostCmd) -> Option<String> {
        self.send_to_shard(&room, ShardCmd::Host { peer: self.id, conn: self.conn, action });
        None
    }

    /// Ends this connection's SFU session, if it has one.
    fn leave_sfu(&mut self) {
        if std::mem::take(&mut self.in_sfu)
            && let Some(sfu) = &self.app.sfu
            && !sfu.send(SfuCmd::Leave { conn: self.conn })
        {
            // The SFU's inbox is full: the session's ICE and DTLS will time
            // out on their own once the browser is gone, and the SFU drops
            // it then.
            tracing::debug!("SFU busy; its session for this connection ends by timeout");
        }
    }

    /// Sends `cmd` to `room`'s shard now if its inbox has room, else keeps
    /// it pending: the loop then stops reading until it is sent.
    fn send_to_shard(&mut self, room: &RoomId, cmd: ShardCmd) {
        let shard = self.app.hub.shard(room);
        match shard.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(cmd) | mpsc::error::TrySendError::Closed(cmd)) => {
                self.pending = Some(cmd);
                self.pending_to = Some(shard.clone());
            }
        }
    }

    /// An `error` reply, counted for `/metrics`.
    fn error_reply(&self, err: &ProtocolError) -> String {
        self.app.metrics.error(err.code);
        encode(&ServerMsg::Error { code: err.code, message: &err.message, request: err.request })
    }

    /// Counts a message against the rate limit.
    fn admit(&mut self) -> bool {
        let Some(bucket) = &mut self.bucket else { return true };
        let ok = bucket.try_take(std::time::Instant::now());
        if !ok {
            self.app.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The reply to a message over the rate limit: an error at most once a
    /// second, so a flood cannot make us flood back.
    fn rate_limited(&mut self) -> Option<String> {
        let now = Instant::now();
        if self.last_rate_error.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return None;
        }
        self.last_rate_error = Some(now);
        tracing::debug!("rate limited");
        Some(self.error_reply(&ProtocolError::new(
            ErrorCode::RateLimited,
            None,
            "too many messages: this one and others were dropped",
        )))
    }
}

/// A connection's routes to the other members of its room. A list, not a
/// map: rooms hold a handful of peers, and an idle connection's one route
/// then costs a few dozen bytes instead of a hash table.
#[derive(Debug, Default)]
struct Routes(Vec<(PeerId, Route)>);

impl Routes {
    fn get(&self, peer: &PeerId) -> Option<&Route> {
        self.0.iter().find(|(p, _)| p == peer).map(|(_, r)| r)
    }

    fn insert(&mut self, peer: PeerId, route: Route) {
        self.remove(&peer);
        self.0.push((peer, route));
    }

    fn remove(&mut self, peer: &PeerId) {
        self.0.retain(|(p, _)| p != peer);
    }

    fn clear(&mut self) {
        self.0.clear();
        self.0.shrink_to_fit();
    }
}

/// Runs a write within `deadline`, or until `kick`. Most writes finish at
/// once (the socket buffer has room), so the timer is only set up for
/// those that do not.
async fn with_deadline<F>(deadline: Duration, write: F, kick: &Kick) -> Result<(), End>
where
    F: std::future::Future<Output = std::io::Result<()>>,
{
    let mut write = std::pin::pin!(write);
    let result = match (&mut write).now_or_never() {
        Some(r) => r,
        None => {
            // Boxed: a timer is large, and most connections never need one.
            let expired = Box::pin(tokio::time::sleep(deadline));
            let kicked = Box::pin(kick.kicked());
            tokio::select! {
                r = &mut write => r,
                () = expired => return Err(End::WriteFailed),
                reason = kicked => return Err(match reason {
                    KickReason::TooSlow => End::TooSlow,
                    KickReason::Replaced => End::Replaced,
                    KickReason::Moved => End::Moved,
                }),
            }
        }
    };
    result.map_err(|_| End::WriteFailed)
}
