//! The TURN server state machine (RFC 8656, with RFC 5766 clients in mind):
//! STUN Binding, and Allocate / Refresh / CreatePermission / ChannelBind
//! requests, Send and Data indications, ChannelData, lifetimes, quotas.
//!
//! It owns no socket and reads no clock. The shell feeds it what arrived
//! ([`Input`]) with the time, carries out what it says ([`Output`]):
//! packets to clients and peers, relay sockets to open and close, and
//! calls [`Server::handle_timeout`] when [`Server::poll_timeout`] says the
//! next deadline has come. Deadlines are kept in order (as str0m does),
//! so expiring one permission costs a look at one entry, never a sweep
//! over every allocation.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::auth::{self, NonceCheck, NonceKey};
use crate::policy;
use crate::stun::{self, Builder, Class, Message, Method, attr};

/// The transport between a client and the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// A TCP stream (STUN and padded ChannelData frames).
    Tcp,
}

/// A client as the server sees it (RFC 8656 section 2: the 5-tuple).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FiveTuple {
    /// UDP or TCP.
    pub transport: Transport,
    /// The client's address as seen by the server.
    pub client: SocketAddr,
    /// The server address it talks to.
    pub server: SocketAddr,
}

/// Identifies an allocation while its relay socket is being opened.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct AllocId(pub u64);

/// The address family of a relay.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Settings of a [`Server`].
#[derive(Clone, Debug)]
pub struct Config {
    /// REALM sent to clients.
    pub realm: String,
    /// The shared secret of the REST credential scheme.
    pub secret: Vec<u8>,
    /// Signs nonces.
    pub nonce_key: [u8; 32],
    /// SOFTWARE sent in responses.
    pub software: String,
    /// Allocation lifetime when the client asks for less (RFC: 10 min).
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted.
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC: 5 min).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC: 10 min).
    pub channel_lifetime: Duration,
    /// How long a nonce stays valid.
    pub nonce_lifetime: Duration,
    /// Most allocations in all.
    pub max_allocations: usize,
    /// Most allocations per user: the peer id of a REST username
    /// (`<expiry>:<peer id>`), so fresh credentials for the same peer share
    /// its quota; any other username counts as itself.
    pub max_allocations_per_user: usize,
    /// Most allocations held from one client address (an IPv4 address or
    /// an IPv6 /64), whatever the credentials: credentials are minted for
    /// free with every join, an address is not.
    pub max_allocations_per_address: usize,
    /// Most peer addresses one allocation may hold permissions for; more
    /// are refused with 508 (RFC 8656 section 9.2 allows it). A browser
    /// installs one per remote candidate address it pairs a relay
    /// candidate with: a handful per remote peer.
    pub max_permissions_per_allocation: usize,
    /// Most channels bound on one allocation; more are refused with 508.
    pub max_channels_per_allocation: usize,
    /// Relayed bytes per second per allocation and direction; 0 means no
    /// limit. Excess packets are dropped (it is UDP).
    pub bandwidth_bytes_per_sec: u64,
    /// Relayed bytes per second per client address (all its allocations
    /// together) and direction; 0 means no limit.
    pub bandwidth_bytes_per_sec_per_address: u64,
    /// Relayed bytes per second through the whole server, per direction;
    /// 0 means no limit.
    pub bandwidth_bytes_per_sec_total: u64,
    /// Relay to loopback, private and link-local peers too, and to this
    /// machine's own addresses but for `own_ports` (tests and labs only).
    pub allow_private_peers: bool,
    /// This server's own addresses: its public address, the addresses it
    /// listens on, the address relays are opened on. Nothing there is
    /// relayed to (its TURN port, its web server, other relays, anything
    /// else on the machine) but this server's relays, handed over inside
    /// it, and `local_peers`.
    pub own_ips: Vec<IpAddr>,
    /// Ports of this server's own services on `own_ips` (TURN, HTTP, the
    /// relay range, the SFU): never relayed to, not even with
    /// `allow_private_peers`, but for this server's relays and
    /// `local_peers`.
    pub own_ports: Vec<std::ops::RangeInclusive<u16>>,
    /// This server's own services that clients may relay to although their
    /// address is private: the SFU of a server on a LAN. (This server's own
    /// relays are always reachable from each other: see
    /// [`Server`]'s relay-to-relay hand-over.)
    pub local_peers: Vec<SocketAddr>,
    /// Families the shell can open relay sockets in.
    pub families: Vec<Family>,
    /// Challenges (`401`, `438`: a nonce and realm, larger than the bare
    /// request that asks for them) sent over UDP per second to one client
    /// address (IPv4, or IPv6 /64); past it requests go unanswered, so a
    /// forged source address cannot make us a reflector. 0: no limit.
    pub challenges_per_sec_per_address: u64,
    /// The same, for all addresses together.
    pub challenges_per_sec: u64,
    /// Who may use their credentials now, when the code that hands them out
    /// can say: a username is accepted only while this says yes for its
    /// user (the peer id of a REST username), and [`Input::Revoke`] ends a
    /// user's allocations once it says no. `None`: every credential the
    /// secret checks, until it expires.
    pub users: Option<UserCheck>,
}

/// Says whether a user may use TURN now (see [`Config::users`]). A lookup,
/// not IO: webconf answers it from who holds a seat in a room.
#[derive(Clone)]
pub struct UserCheck(pub std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for UserCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserCheck(..)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            realm: "webconf".to_owned(),
            secret: Vec::new(),
            nonce_key: [0; 32],
            software: concat!("webconf ", env!("CARGO_PKG_VERSION")).to_owned(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(3600),
            max_allocations: 1000,
            max_allocations_per_user: 10,
            max_allocations_per_address: 32,
            max_permissions_per_allocation: 64,
            max_channels_per_allocation: 64,
            bandwidth_bytes_per_sec: 2_500_000,
            bandwidth_bytes_per_sec_per_address: 10_000_000,
            bandwidth_bytes_per_sec_total: 125_000_000,
            allow_private_peers: false,
            own_ips: Vec::new(),
            own_ports: Vec::new(),
            local_peers: Vec::new(),
            families: vec![Family::V4],
            // An office behind one NAT joining at once; a victim of forged
            // requests gets at most 20 small answers a second.
            challenges_per_sec_per_address: 20,
            challenges_per_sec: 2000,
            users: None,
        }
    }
}

/// Something that happened, fed in by the shell.
#[derive(Debug)]
pub enum Input<'a> {
    /// A datagram, or one frame of a TCP stream, from a client.
    FromClient {
        /// Who sent it, over what.
        from: FiveTuple,
        /// The bytes.
        data: &'a [u8],
    },
    /// A datagram from a peer, arriving on a relay socket.
    FromPeer {
        /// The relay address it arrived on (as advertised to the client).
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// The bytes.
        data: &'a [u8],
    },
    /// The shell opened the relay socket asked for by [`Output::OpenRelay`].
    RelayOpened {
        /// Which allocation.
        id: AllocId,
        /// Its relay address, as clients and peers must see it.
        relay: SocketAddr,
    },
    /// The shell could not open that relay socket.
    RelayFailed {
        /// Which allocation.
        id: AllocId,
    },
    /// A client's TCP connection closed: its allocation goes with it.
    ClientGone {
        /// The connection.
        client: FiveTuple,
    },
    /// `user` may no longer use its credentials (it left its room): unless
    /// [`Config::users`] says it may again by now, its allocations (and
    /// pending ones) end, and its credentials are refused from now on.
    Revoke {
        /// The user: the peer id of a REST username.
        user: &'a str,
    },
}

/// Something the shell must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send to a client.
    ToClient {
        /// Where (and over which transport).
        to: FiveTuple,
        /// The bytes (one datagram, or one stream frame).
        data: Vec<u8>,
    },
    /// Send a datagram from a relay socket to a peer.
    ToPeer {
        /// The relay address to send from.
        relay: SocketAddr,
        /// The peer.
        peer: SocketAddr,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Open a UDP relay socket, then answer with [`Input::RelayOpened`] or
    /// [`Input::RelayFailed`].
    OpenRelay {
        /// The allocation it is for.
        id: AllocId,
        /// Its family.
        family: Family,
    },
    /// Close a relay socket: its allocation is gone.
    CloseRelay {
        /// Its address.
        relay: SocketAddr,
    },
}

/// Counts for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations now.
    pub allocations: usize,
    /// Packets relayed client to peer.
    pub packets_to_peers: u64,
    /// Packets relayed peer to client.
    pub packets_to_clients: u64,
    /// Packets dropped: no permission, over bandwidth, unknown channel.
    pub packets_dropped: u64,
    /// Requests refused with an error response.
    pub requests_refused: u64,
    /// Unauthenticated requests over UDP left unanswered: over the
    /// challenge rate limits.
    pub challenges_dropped: u64,
}

/// Relayed bytes per second in one direction: of one allocation, one
/// client address, or the whole server. Starts full.
#[derive(Debug, Clone)]
struct ByteBucket {
    tokens: u64,
    rate: u64,
    /// When it was last filled; `None` until its first packet (the core
    /// reads no clock, so a bucket made with no input at hand starts then).
    last: Option<Instant>,
}

impl ByteBucket {
    fn new(rate: u64, now: Option<Instant>) -> Self {
        ByteBucket { tokens: rate, rate, last: now }
    }

    fn take(&mut self, bytes: usize, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let last = *self.last.get_or_insert(now);
        let elapsed = now.saturating_duration_since(last);
        self.last = Some(last.max(now));
        let refill =
            (elapsed.as_micros().min(u128::from(u64::MAX)) as u64).saturating_mul(self.rate) / 1_000_000;
        // One second of burst.
        self.tokens = self.tokens.saturating_add(refill).min(self.rate);
        let bytes = bytes as u64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

/// Hashes client addresses to challenge slots: keyed at random per
/// process, so nobody can pick addresses that share a slot with a victim;
/// with fixed keys in unit tests, so which addresses share a slot (one pair
/// in 1024) is the same in every run and a test cannot fail by chance.
#[cfg(not(test))]
type SlotHasher = std::collections::hash_map::RandomState;
#[cfg(test)]
type SlotHasher = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// Slots of client addresses for challenge rate limits: a fixed size, so
/// forged addresses cost no memory (addresses sharing a slot share its
/// limit).
const CHALLENGE_SLOTS: usize = 1024;

/// What one client address holds: how many allocations, and its share
/// of bandwidth.
#[derive(Debug)]
struct ClientBudget {
    allocations: usize,
    up: ByteBucket,
    down: ByteBucket,
}

#[derive(Debug)]
struct Allocation {
    relay: SocketAddr,
    username: String,
    expires: Instant,
    /// Peer IPs allowed, until when.
    permissions: HashMap<IpAddr, Instant>,
    /// Channel number to (peer, until when).
    channels: HashMap<u16, (SocketAddr, Instant)>,
    /// Peer to its channel number.
    by_peer: HashMap<SocketAddr, u16>,
    /// The Allocate transaction and our answer, for retransmissions.
    created_by: [u8; 12],
    created_response: Vec<u8>,
    up: ByteBucket,
    down: ByteBucket,
}

#[derive(Debug)]
struct Pending {
    client: FiveTuple,
    transaction: [u8; 12],
    username: String,
    key: [u8; 16],
    lifetime: Duration,
    started: Instant,
}

/// How long the shell may take to answer [`Output::OpenRelay`] before the
/// allocation is given up (it answers at once; a later answer is a lost one,
/// which would only hold a quota place).
const PENDING_TIMEOUT: Duration = Duration::from_secs(30);

/// What a deadline in [`Server`]'s ordered set ends.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Timer {
    /// An allocation's lifetime.
    Allocation(FiveTuple),
    /// A permission of an allocation, for one peer IP.
    Permission(FiveTuple, IpAddr),
    /// A channel binding of an allocation.
    Channel(FiveTuple, u16),
    /// An allocation waiting for its relay socket.
    Pending(AllocId),
}

/// The outcome of checking a request's credentials.
enum Auth {
    Ok {
        username: String,
        key: [u8; 16],
    },
    /// Already answered (401, 438 or 400).
    Refused,
}

/// Attributes we understand, or deliberately ignore, in requests.
const KNOWN: &[u16] = &[
    attr::MAPPED_ADDRESS,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REALM,
    attr::NONCE,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::REQUESTED_TRANSPORT,
    attr::DONT_FRAGMENT,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::USERHASH,
    attr::RESERVATION_TOKEN,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
];

/// The TURN server. See the module documentation.
#[derive(Debug)]
pub struct Server {
    config: Config,
    nonces: NonceKey,
    allocations: HashMap<FiveTuple, Allocation>,
    relays: HashMap<SocketAddr, FiveTuple>,
    pending: HashMap<AllocId, Pending>,
    /// Allocations (and pending ones) per user (see [`quota_key`]).
    per_user: HashMap<String, usize>,
    /// Allocations (and pending ones) and bandwidth per client address
    /// ([`policy::client_key`]); an entry lives while it counts any.
    per_address: HashMap<IpAddr, ClientBudget>,
    /// The whole server's bandwidth, each direction.
    total_up: ByteBucket,
    total_down: ByteBucket,
    /// Challenges over UDP: one bucket (a challenge a token) per slot of
    /// client addresses hashed with a key of this process's own (so a
    /// forger cannot aim at another's slot), and one for all.
    challenge_slots: Vec<ByteBucket>,
    challenge_hasher: SlotHasher,
    challenges: ByteBucket,
    /// Every deadline: one per allocation, permission, channel and pending
    /// allocation, each matching the time stored beside the thing it ends
    /// (checked by `check_invariants`). Bounded by what it times out.
    timers: BTreeSet<(Instant, Timer)>,
    next_id: u64,
    /// Drained by the shell after every input; bounded by one input's
    /// effects (at most one response and one relayed packet, or the relay
    /// closes of one sweep).
    outputs: VecDeque<Output>,
    stats: Stats,
}

impl Server {
    /// A server with no allocations.
    pub fn new(config: Config) -> Server {
        let nonces = NonceKey::new(config.nonce_key);
        let total = config.bandwidth_bytes_per_sec_total;
        let (per_address, in_all) = (config.challenges_per_sec_per_address, config.challenges_per_sec);
        Server {
            config,
            nonces,
            allocations: HashMap::new(),
            relays: HashMap::new(),
            pending: HashMap::new(),
            per_user: HashMap::new(),
            per_address: HashMap::new(),
            total_up: ByteBucket::new(total, None),
            total_down: ByteBucket::new(total, None),
            challenge_slots: vec![ByteBucket::new(per_address, None); CHALLENGE_SLOTS],
            challenge_hasher: SlotHasher::default(),
            challenges: ByteBucket::new(in_all, None),
            timers: BTreeSet::new(),
            next_id: 1,
            outputs: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Counts for metrics.
    pub fn stats(&self) -> Stats {
        Stats { allocations: self.allocations.len(), ..self.stats }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Applies one input. `now` drives lifetimes; `unix` (seconds since
    /// 1970) checks credential expiry and nonces.
    pub fn handle_input(&mut self, now: Instant, unix: u64, input: Input<'_>) {
        match input {
            Input::FromClient { from, data } => self.on_client(now, unix, from, data),
            Input::FromPeer { relay, peer, data } => self.on_peer(now, relay, peer, data),
            Input::RelayOpened { id, relay } => self.relay_opened(now, id, relay),
            Input::RelayFailed { id } => {
                if let Some(p) = self.pending.remove(&id) {
                    self.timers.remove(&(p.started + PENDING_TIMEOUT, Timer::Pending(id)));
                    self.release(&p.username, p.client.client);
                    let msg = Builder::new(Method::Allocate, Class::Error, p.transaction)
                        .error(508, "Insufficient Capacity")
                        .integrity(&p.key);
                    self.stats.requests_refused += 1;
                    self.send(p.client, msg);
                }
            }
            Input::Revoke { user } => self.revoke(user),
            Input::ClientGone { client } => {
                self.remove_allocation(client);
                let gone: Vec<AllocId> =
                    self.pending.iter().filter(|(_, p)| p.client == client).map(|(id, _)| *id).collect();
                for id in gone {
                    if let Some(p) = self.pending.remove(&id) {
                        self.timers.remove(&(p.started + PENDING_TIMEOUT, Timer::Pending(id)));
                        self.release(&p.username, p.client.client);
                    }
                }
            }
        }
    }

    /// Ends every allocation of `user`, unless it may use TURN (again).
    fn revoke(&mut self, user: &str) {
        if self.config.users.as_ref().is_none_or(|check| (check.0)(user)) {
            return;
        }
        let gone: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| quota_key(&a.username) == user)
            .map(|(t, _)| *t)
            .collect();
        for t in gone {
            self.remove_allocation(t);
        }
        let pending: Vec<AllocId> =
            self.pending.iter().filter(|(_, p)| quota_key(&p.username) == user).map(|(id, _)| *id).collect();
        for id in pending {
            if let Some(p) = self.pending.remove(&id) {
                self.timers.remove(&(p.started + PENDING_TIMEOUT, Timer::Pending(id)));
                self.release(&p.username, p.client.client);
            }
        }
    }

    /// When [`Server::handle_timeout`] next has something to do, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Ends every allocation, permission, channel binding and pending
    /// allocation whose deadline is `now` or earlier. Costs one step per
    /// thing ended; call it when [`Server::poll_timeout`] says so.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Allocation(t) => self.remove_allocation(t),
                Timer::Permission(t, ip) => {
                    if let Some(a) = self.allocations.get_mut(&t) {
                        a.permissions.remove(&ip);
                    }
                }
                Timer::Channel(t, c) => {
                    if let Some(a) = self.allocations.get_mut(&t)
                        && let Some((peer, _)) = a.channels.remove(&c)
                    {
                        a.by_peer.remove(&peer);
                    }
                }
                Timer::Pending(id) => {
                    if let Some(p) = self.pending.remove(&id) {
                        self.release(&p.username, p.client.client);
                    }
                }
            }
        }
    }

    /// Moves `timer` from `old` (if it had a deadline) to `new`.
    fn reschedule(&mut self, timer: Timer, old: Option<Instant>, new: Instant) {
        if let Some(old) = old {
            self.timers.remove(&(old, timer));
        }
        self.timers.insert((new, timer));
    }

    fn send(&mut self, to: FiveTuple, msg: Builder) {
        self.outputs.push_back(Output::ToClient { to, data: msg.finish_with_fingerprint() });
    }

    fn on_client(&mut self, now: Instant, unix: u64, from: FiveTuple, data: &[u8]) {
        if data.first().is_some_and(|b| b >> 6 == 0b01) {
            return self.channel_data_from_client(now, from, data);
        }
        let Ok(msg) = Message::parse(data) else { return };
        if !msg.fingerprint_ok() {
            return;
        }
        match (msg.method, msg.class) {
            (Method::Binding, Class::Request) => {
                // Anyone can send this with a forged source address, so the
                // answer is kept small (no SOFTWARE; FINGERPRINT only when
                // asked with one): at most twice the request's size, a poor
                // amplifier.
                let reply = Builder::new(Method::Binding, Class::Success, msg.transaction)
                    .xor_addr(attr::XOR_MAPPED_ADDRESS, from.client);
                let data = if msg.get(attr::FINGERPRINT).is_some() {
                    reply.finish_with_fingerprint()
                } else {
                    reply.finish()
                };
                self.outputs.push_back(Output::ToClient { to: from, data });
            }
            (Method::Send, Class::Indication) => self.send_indication(now, from, &msg),
            (
                Method::Allocate | Method::Refresh | Method::CreatePermission | Method::ChannelBind,
                Class::Request,
            ) => {
                let unknown = msg.unknown_required(KNOWN);
                if !unknown.is_empty() {
                    let list: Vec<u8> = unknown.iter().flat_map(|k| k.to_be_bytes()).collect();
                    let reply = Builder::new(msg.method, Class::Error, msg.transaction)
                        .error(420, "Unknown Attribute")
                        .attr(attr::UNKNOWN_ATTRIBUTES, &list);
                    self.stats.requests_refused += 1;
                    return self.send(from, reply);
                }
                let Auth::Ok { username, key } = self.authenticate(now, unix, from, &msg) else { return };
                match msg.method {
                    Method::Allocate => self.allocate(now, from, &msg, username, key),
                    Method::Refresh => self.refresh(now, from, &msg, &username, &key),
                    Method::CreatePermission => self.create_permission(now, from, &msg, &username, &key),
                    _ => self.channel_bind(now, from, &msg, &username, &key),
                }
            }
            (_, Class::Request) => {
                let reply = Builder::new(msg.method, Class::Error, msg.transaction).error(400, "Bad Request");
                self.stats.requests_refused += 1;
                self.send(from, reply);
            }
            // Other indications and any responses: nothing to do.
            _ => {}
        }
    }

    /// Long-term credentials (RFC 8489 section 9.2.4) with REST usernames.
    fn authenticate(&mut self, now: Instant, unix: u64, from: FiveTuple, msg: &Message<'_>) -> Auth {
        let client = from.client.to_string();
        let challenge = |server: &mut Server, code: u16, reason: &str| {
            if from.transport == Transport::Udp && !server.may_challenge(now, from.client.ip()) {
                server.stats.challenges_dropped += 1;
                return Auth::Refused;
            }
            let nonce = server.nonces.make(unix + server.config.nonce_lifetime.as_secs(), &client);
            let reply = Builder::new(msg.method, Class::Error, msg.transaction)
                .error(code, reason)
                .attr(attr::REALM, server.config.realm.as_bytes())
                .attr(attr::NONCE, nonce.as_bytes());
            server.stats.requests_refused += 1;
            server.send(from, reply);
            Auth::Refused
        };
        if msg.get(attr::MESSAGE_INTEGRITY).is_none() {
            return challenge(self, 401, "Unauthorized");
        }
        let (Some(username), Some(_realm), Some(nonce)) =
            (msg.get_str(attr::USERNAME), msg.get_str(attr::REALM), msg.get_str(attr::NONCE))
        else {
            let reply = Builder::new(msg.method, Class::Error, msg.transaction).error(400, "Bad Request");
            self.stats.requests_refused += 1;
            self.send(from, reply);
            return Auth::Refused;
        };
        if self.nonces.check(nonce, &client, unix) != NonceCheck::Valid {
            return challenge(self, 438, "Stale Nonce");
        }
        match auth::rest_expiry(username) {
            Some(expires) if expires > unix => {}
            _ => return challenge(self, 401, "Unauthorized"),
        }
        let password = auth::rest_password(&self.config.secret, username);
        let key = auth::long_term_key(username, &self.config.realm, &password);
        if !msg.verify_integrity(&key) {
            return challenge(self, 401, "Unauthorized");
        }
        if let Some(check) = &self.config.users
            && !(check.0)(quota_key(username))
        {
            return challenge(self, 401, "Unauthorized");
        }
        Auth::Ok { username: username.to_owned(), key }
    }

    /// Whether a challenge may go to `ip` over UDP now (see
    /// [`Config::challenges_per_sec_per_address`]).
    fn may_challenge(&mut self, now: Instant, ip: IpAddr) -> bool {
        use std::hash::BuildHasher;
        let slot = self.challenge_hasher.hash_one(policy::client_key(ip)) as usize % CHALLENGE_SLOTS;
        self.challenge_slots[slot].take(1, now) && self.challenges.take(1, now)
    }

    /// Answers `msg` with success: the attributes `with` adds, SOFTWARE,
    /// MESSAGE-INTEGRITY and FINGERPRINT.
    fn succeed(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        key: &[u8; 16],
        with: impl FnOnce(Builder) -> Builder,
    ) {
        let reply = with(Builder::new(msg.method, Class::Success, msg.transaction))
            .attr(attr::SOFTWARE, self.config.software.as_bytes())
            .integrity(key);
        self.send(from, reply);
    }

    fn refuse(&mut self, from: FiveTuple, msg: &Message<'_>, key: &[u8; 16], code: u16, reason: &str) {
        let reply =
            Builder::new(msg.method, Class::Error, msg.transaction).error(code, reason).integrity(key);
        self.stats.requests_refused += 1;
        self.send(from, reply);
    }

    fn lifetime(&self, msg: &Message<'_>) -> Duration {
        let asked = msg.get_u32(attr::LIFETIME).map(|s| Duration::from_secs(u64::from(s)));
        match asked {
            Some(asked) => asked.min(self.config.max_lifetime).max(self.config.default_lifetime),
            None => self.config.default_lifetime,
        }
    }

    fn allocate(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'_>,
        username: String,
        key: [u8; 16],
    ) {
        if let Some(a) = self.allocations.get(&from) {
            if a.created_by == msg.transaction {
                // A retransmission: the same answer again.
                let data = a.created_response.clone();
                return self.outputs.push_back(Output::ToClient { to: from, data });
            }
            return self.refuse(from, msg, &key, 437, "Allocation Mismatch");
        }
        if self.pending.values().any(|p| p.client == from) {
            return; // A retransmission while its relay socket opens.
        }
        match msg.get(attr::REQUESTED_TRANSPORT) {
            None => return self.refuse(from, msg, &key, 400, "Bad Request"),
            Some(v) if v.first() != Some(&17) => {
                return self.refuse(from, msg, &key, 442, "Unsupported Transport Protocol");
            }
            Some(_) => {}
        }
        if msg.get(attr::RESERVATION_TOKEN).is_some() {
            return self.refuse(from, msg, &key, 508, "Insufficient Capacity");
        }
        let family = match msg.get(attr::REQUESTED_ADDRESS_FAMILY).and_then(|v| v.first().copied()) {
            None | Some(0x01) => Family::V4,
            Some(0x02) => Family::V6,
            Some(_) => return self.refuse(from, msg, &key, 440, "Address Family not Supported"),
        };
        if !self.config.families.contains(&family) {
            return self.refuse(from, msg, &key, 440, "Address Family not Supported");
        }
        let in_use = self.allocations.len() + self.pending.len();
        let per_user = self.per_user.get(quota_key(&username)).copied().unwrap_or(0);
        let address = policy::client_key(from.client.ip());
        let per_address = self.per_address.get(&address).map_or(0, |b| b.allocations);
        if in_use >= self.config.max_allocations
            || per_user >= self.config.max_allocations_per_user
            || per_address >= self.config.max_allocations_per_address
        {
            return self.refuse(from, msg, &key, 486, "Allocation Quota Reached");
        }
        *self.per_user.entry(quota_key(&username).to_owned()).or_insert(0) += 1;
        let rate = self.config.bandwidth_bytes_per_sec_per_address;
        self.per_address
            .entry(address)
            .or_insert_with(|| ClientBudget {
                allocations: 0,
                up: ByteBucket::new(rate, Some(now)),
                down: ByteBucket::new(rate, Some(now)),
            })
            .allocations += 1;
        let id = AllocId(self.next_id);
        self.next_id += 1;
        let lifetime = self.lifetime(msg);
        self.pending.insert(
            id,
            Pending { client: from, transaction: msg.transaction, username, key, lifetime, started: now },
        );
        self.timers.insert((now + PENDING_TIMEOUT, Timer::Pending(id)));
        self.outputs.push_back(Output::OpenRelay { id, family });
    }

    fn relay_opened(&mut self, now: Instant, id: AllocId, relay: SocketAddr) {
        let Some(p) = self.pending.remove(&id) else {
            // Nobody wants it any more (the client left meanwhile).
            return self.outputs.push_back(Output::CloseRelay { relay });
        };
        self.timers.remove(&(p.started + PENDING_TIMEOUT, Timer::Pending(id)));
        self.timers.insert((now + p.lifetime, Timer::Allocation(p.client)));
        let response = Builder::new(Method::Allocate, Class::Success, p.transaction)
            .xor_addr(attr::XOR_RELAYED_ADDRESS, relay)
            .u32(attr::LIFETIME, p.lifetime.as_secs() as u32)
            .xor_addr(attr::XOR_MAPPED_ADDRESS, p.client.client)
            .attr(attr::SOFTWARE, self.config.software.as_bytes())
            .integrity(&p.key)
            .finish_with_fingerprint();
        let rate = self.config.bandwidth_bytes_per_sec;
        self.relays.insert(relay, p.client);
        self.allocations.insert(
            p.client,
            Allocation {
                relay,
                username: p.username,
                expires: now + p.lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                by_peer: HashMap::new(),
                created_by: p.transaction,
                created_response: response.clone(),
                up: ByteBucket::new(rate, Some(now)),
                down: ByteBucket::new(rate, Some(now)),
            },
        );
        self.outputs.push_back(Output::ToClient { to: p.client, data: response });
    }

    /// The allocation of `from` made by `username`, or an error sent.
    fn own_allocation(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        username: &str,
        key: &[u8; 16],
    ) -> Option<SocketAddr> {
        let Some(a) = self.allocations.get(&from) else {
            self.refuse(from, msg, key, 437, "Allocation Mismatch");
            return None;
        };
        if a.username != username {
            self.refuse(from, msg, key, 441, "Wrong Credentials");
            return None;
        }
        Some(a.relay)
    }

    fn refresh(&mut self, now: Instant, from: FiveTuple, msg: &Message<'_>, username: &str, key: &[u8; 16]) {
        if self.own_allocation(from, msg, username, key).is_none() {
            return;
        }
        let lifetime = if msg.get_u32(attr::LIFETIME) == Some(0) {
            self.remove_allocation(from);
            Duration::ZERO
        } else {
            let lifetime = self.lifetime(msg);
            let old =
                self.allocations.get_mut(&from).map(|a| std::mem::replace(&mut a.expires, now + lifetime));
            if old.is_some() {
                self.reschedule(Timer::Allocation(from), old, now + lifetime);
            }
            lifetime
        };
        self.succeed(from, msg, key, |b| b.u32(attr::LIFETIME, lifetime.as_secs() as u32));
    }

    /// Checks that a permission for `peer`'s address may be installed on
    /// `relay`: same family, and an address [`Server::may_relay_to`] could
    /// allow some port of. (Permissions are per IP address: one for this
    /// server's own address is what lets two of its relays, or a relay and
    /// its SFU, reach each other; every packet is then checked by port.)
    fn peer_ok(&self, relay: SocketAddr, peer: SocketAddr) -> Result<(), (u16, &'static str)> {
        if relay.is_ipv4() != peer.is_ipv4() {
            return Err((443, "Peer Address Family Mismatch"));
        }
        if !self.is_ours(relay, peer.ip())
            && !self.config.allow_private_peers
            && !policy::is_public(peer.ip())
        {
            return Err((403, "Forbidden"));
        }
        Ok(())
    }

    /// Whether a packet from `relay` may go to `peer` by the address policy,
    /// decided here alone: this server's relays (handed over inside it) and
    /// `local_peers` (its SFU) always; nothing else on this server's own
    /// addresses (with private peers allowed, nothing on its own ports);
    /// elsewhere, public addresses, or any when private peers are allowed.
    fn may_relay_to(&self, relay: SocketAddr, peer: SocketAddr) -> bool {
        if self.relays.contains_key(&peer) || self.config.local_peers.contains(&peer) {
            return true;
        }
        if self.is_ours(relay, peer.ip()) {
            return self.config.allow_private_peers
                && !self.config.own_ports.iter().any(|ports| ports.contains(&peer.port()));
        }
        self.config.allow_private_peers || policy::is_public(peer.ip())
    }

    /// Whether `ip` (or an IPv4 address it carries) is one of this server's
    /// own: `own_ips`, the relay's address, a local peer's.
    fn is_ours(&self, relay: SocketAddr, ip: IpAddr) -> bool {
        let ours = |ip: IpAddr| {
            let ip = ip.to_canonical();
            ip == relay.ip().to_canonical()
                || self.config.own_ips.iter().any(|o| o.to_canonical() == ip)
                || self.config.local_peers.iter().any(|p| p.ip().to_canonical() == ip)
        };
        match ip {
            IpAddr::V4(_) => ours(ip),
            IpAddr::V6(v6) => ours(ip) || policy::embedded_ipv4(v6).into_iter().any(|v4| ours(v4.into())),
        }
    }

    fn create_permission(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'_>,
        username: &str,
        key: &[u8; 16],
    ) {
        let Some(relay) = self.own_allocation(from, msg, username, key) else { return };
        let peers: Vec<Option<SocketAddr>> = msg
            .get_all(attr::XOR_PEER_ADDRESS)
            .into_iter()
            .map(|v| stun::decode_xor_addr(v, &msg.transaction))
            .collect();
        if peers.is_empty() || peers.iter().any(Option::is_none) {
            return self.refuse(from, msg, key, 400, "Bad Request");
        }
        let peers: Vec<SocketAddr> = peers.into_iter().flatten().collect();
        // All or nothing (RFC 8656 section 9.2).
        for peer in &peers {
            if let Err((code, reason)) = self.peer_ok(relay, *peer) {
                return self.refuse(from, msg, key, code, reason);
            }
        }
        let Some(a) = self.allocations.get(&from) else { return };
        let mut new_ips: Vec<IpAddr> =
            peers.iter().map(SocketAddr::ip).filter(|ip| !a.permissions.contains_key(ip)).collect();
        new_ips.sort_unstable();
        new_ips.dedup();
        if a.permissions.len() + new_ips.len() > self.config.max_permissions_per_allocation {
            return self.refuse(from, msg, key, 508, "Insufficient Capacity");
        }
        let until = now + self.config.permission_lifetime;
        for peer in peers {
            self.permit(from, peer.ip(), until);
        }
        self.succeed(from, msg, key, |b| b);
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        from: FiveTuple,
        msg: &Message<'_>,
        username: &str,
        key: &[u8; 16],
    ) {
        let Some(relay) = self.own_allocation(from, msg, username, key) else { return };
        let channel = msg
            .get(attr::CHANNEL_NUMBER)
            .and_then(|v| Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?)));
        let peer = msg.get_xor_addr(attr::XOR_PEER_ADDRESS);
        let (Some(channel), Some(peer)) = (channel, peer) else {
            return self.refuse(from, msg, key, 400, "Bad Request");
        };
        if !stun::CHANNELS.contains(&channel) {
            return self.refuse(from, msg, key, 400, "Bad Request");
        }
        if let Err((code, reason)) = self.peer_ok(relay, peer) {
            return self.refuse(from, msg, key, code, reason);
        }
        let Some(a) = self.allocations.get(&from) else { return };
        let channel_elsewhere = a.channels.get(&channel).is_some_and(|(p, _)| *p != peer);
        let peer_elsewhere = a.by_peer.get(&peer).is_some_and(|c| *c != channel);
        if channel_elsewhere || peer_elsewhere {
            return self.refuse(from, msg, key, 400, "Bad Request");
        }
        let new_channel = !a.channels.contains_key(&channel);
        let new_permission = !a.permissions.contains_key(&peer.ip());
        if (new_channel && a.channels.len() >= self.config.max_channels_per_allocation)
            || (new_permission && a.permissions.len() >= self.config.max_permissions_per_allocation)
        {
            return self.refuse(from, msg, key, 508, "Insufficient Capacity");
        }
        let until = now + self.config.channel_lifetime;
        let old = a.channels.get(&channel).map(|(_, until)| *until);
        if let Some(a) = self.allocations.get_mut(&from) {
            a.channels.insert(channel, (peer, until));
            a.by_peer.insert(peer, channel);
        }
        self.reschedule(Timer::Channel(from, channel), old, until);
        self.permit(from, peer.ip(), now + self.config.permission_lifetime);
        self.succeed(from, msg, key, |b| b);
    }

    /// Installs or extends `from`'s permission for `ip` until `until` (never
    /// shortening it). The caller has checked the cap.
    fn permit(&mut self, from: FiveTuple, ip: IpAddr, until: Instant) {
        let Some(a) = self.allocations.get_mut(&from) else { return };
        let old = a.permissions.insert(ip, until);
        if let Some(old) = old
            && old > until
        {
            a.permissions.insert(ip, old);
            return;
        }
        self.reschedule(Timer::Permission(from, ip), old, until);
    }

    fn send_indication(&mut self, now: Instant, from: FiveTuple, msg: &Message<'_>) {
        let (Some(peer), Some(data)) = (msg.get_xor_addr(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA)) else {
            return;
        };
        self.relay_to_peer(now, from, peer, data);
    }

    fn channel_data_from_client(&mut self, now: Instant, from: FiveTuple, data: &[u8]) {
        let Some((channel, payload)) = stun::parse_channel_data(data) else { return };
        let peer = self.allocations.get(&from).and_then(|a| a.channels.get(&channel)).map(|(p, _)| *p);
        match peer {
            Some(peer) => self.relay_to_peer(now, from, peer, payload),
            None => self.stats.packets_dropped += 1,
        }
    }

    fn relay_to_peer(&mut self, now: Instant, from: FiveTuple, peer: SocketAddr, data: &[u8]) {
        let Some(relay) = self.allocations.get(&from).map(|a| a.relay) else { return };
        let policy_ok = self.may_relay_to(relay, peer);
        let Some(a) = self.allocations.get_mut(&from) else { return };
        let allowed = a.permissions.get(&peer.ip()).is_some_and(|until| *until > now);
        let address = self.per_address.get_mut(&policy::client_key(from.client.ip()));
        if !allowed
            || !policy_ok
            || !a.up.take(data.len(), now)
            || !address.is_some_and(|b| b.up.take(data.len(), now))
            || !self.total_up.take(data.len(), now)
        {
            self.stats.packets_dropped += 1;
            return;
        }
        self.stats.packets_to_peers += 1;
        if self.relays.contains_key(&peer) {
            // Both ends relay through this server (two browsers that hide
            // their addresses, say): handed over here rather than sent to
            // ourselves, which needs no route to our own address (a NAT in
            // front of us may not loop it back).
            self.on_peer(now, peer, relay, data);
            return;
        }
        self.outputs.push_back(Output::ToPeer { relay, peer, data: data.to_vec() });
    }

    fn on_peer(&mut self, now: Instant, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        let Some(owner) = self.relays.get(&relay).copied() else { return };
        let Some(a) = self.allocations.get_mut(&owner) else { return };
        let allowed = a.permissions.get(&peer.ip()).is_some_and(|until| *until > now);
        let address = self.per_address.get_mut(&policy::client_key(owner.client.ip()));
        if !allowed
            || !a.down.take(data.len(), now)
            || !address.is_some_and(|b| b.down.take(data.len(), now))
            || !self.total_down.take(data.len(), now)
        {
            self.stats.packets_dropped += 1;
            return;
        }
        let channel =
            a.by_peer.get(&peer).copied().filter(|c| a.channels.get(c).is_some_and(|(_, u)| *u > now));
        let out = match channel {
            Some(c) => stun::channel_data(c, data, owner.transport == Transport::Tcp),
            None => {
                let transaction = indication_id(self.stats.packets_to_clients);
                Builder::new(Method::Data, Class::Indication, transaction)
                    .xor_addr(attr::XOR_PEER_ADDRESS, peer)
                    .attr(attr::DATA, data)
                    .finish()
            }
        };
        self.stats.packets_to_clients += 1;
        self.outputs.push_back(Output::ToClient { to: owner, data: out });
    }

    fn remove_allocation(&mut self, t: FiveTuple) {
        if let Some(a) = self.allocations.remove(&t) {
            self.timers.remove(&(a.expires, Timer::Allocation(t)));
            for (ip, until) in &a.permissions {
                self.timers.remove(&(*until, Timer::Permission(t, *ip)));
            }
            for (c, (_, until)) in &a.channels {
                self.timers.remove(&(*until, Timer::Channel(t, *c)));
            }
            self.relays.remove(&a.relay);
            self.release(&a.username, t.client);
            self.outputs.push_back(Output::CloseRelay { relay: a.relay });
        }
    }

    /// Gives back the quota places of an allocation (or pending one) of
    /// `username` from `client`.
    fn release(&mut self, username: &str, client: SocketAddr) {
        let user = quota_key(username);
        if let Some(n) = self.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
        let address = policy::client_key(client.ip());
        if let Some(b) = self.per_address.get_mut(&address) {
            b.allocations -= 1;
            if b.allocations == 0 {
                self.per_address.remove(&address);
            }
        }
    }

    /// Asserts internal consistency (for tests and fuzzing).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn check_invariants(&self) {
        assert_eq!(self.relays.len(), self.allocations.len());
        for (relay, owner) in &self.relays {
            assert_eq!(self.allocations.get(owner).map(|a| a.relay), Some(*relay));
        }
        let counted: usize = self.per_user.values().sum();
        assert_eq!(counted, self.allocations.len() + self.pending.len());
        let mut by_address: HashMap<IpAddr, usize> = HashMap::new();
        let clients = self.allocations.keys().chain(self.pending.values().map(|p| &p.client));
        for t in clients {
            *by_address.entry(policy::client_key(t.client.ip())).or_insert(0) += 1;
        }
        assert_eq!(by_address.len(), self.per_address.len());
        for (address, n) in by_address {
            assert_eq!(self.per_address.get(&address).map(|b| b.allocations), Some(n));
            assert!(n <= self.config.max_allocations_per_address);
        }
        let mut timers = 0;
        for (t, a) in &self.allocations {
            assert_eq!(a.channels.len(), a.by_peer.len());
            assert!(a.permissions.len() <= self.config.max_permissions_per_allocation);
            assert!(a.channels.len() <= self.config.max_channels_per_allocation);
            assert!(self.timers.contains(&(a.expires, Timer::Allocation(*t))));
            for (c, (peer, until)) in &a.channels {
                assert_eq!(a.by_peer.get(peer), Some(c));
                assert!(self.timers.contains(&(*until, Timer::Channel(*t, *c))));
            }
            for (ip, until) in &a.permissions {
                assert!(self.timers.contains(&(*until, Timer::Permission(*t, *ip))));
            }
            timers += 1 + a.channels.len() + a.permissions.len();
        }
        for (id, p) in &self.pending {
            assert!(self.timers.contains(&(p.started + PENDING_TIMEOUT, Timer::Pending(*id))));
        }
        assert_eq!(self.timers.len(), timers + self.pending.len(), "no deadline outlives its thing");
    }
}

/// Whose quota an allocation counts against: the peer id of a REST username
/// (`<expiry>:<peer id>`), so that credentials minted again for the same
/// peer share one quota; any other username is its own.
fn quota_key(username: &str) -> &str {
    match username.split_once(':') {
        Some((expiry, user)) if expiry.bytes().all(|b| b.is_ascii_digit()) && !expiry.is_empty() => user,
        _ => username,
    }
}

/// Indications need a transaction id but expect no answer: any unique-ish
/// value does.
fn indication_id(n: u64) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&n.to_be_bytes());
    t[8..].copy_from_slice(b"wcdi");
    t
}
