//! A sans-IO STUN/TURN server for webconf.
//!
//! - [`stun`]: the message codec (RFC 8489), MESSAGE-INTEGRITY, FINGERPRINT,
//!   and the framing of STUN and ChannelData on TCP streams.
//! - [`auth`]: time-limited credentials in the coturn REST scheme, the
//!   long-term credential key, stateless nonces.
//! - [`policy`]: which peers may be relayed to (public unicast by default).
//! - [`Server`]: the TURN state machine (RFC 8656): allocations, permissions,
//!   channels, lifetimes, quotas, bandwidth.
//!
//! Nothing here touches a socket or a clock; the IO shell (crates/server,
//! `turn_io.rs`) owns the sockets and feeds the state machine.

pub mod auth;
pub mod policy;
mod server;
pub mod stun;

pub use server::{AllocId, Config, Family, FiveTuple, Input, Output, Server, Stats, Transport, UserCheck};

#[cfg(test)]
mod tests {
    //! A scripted TURN client against the state machine, through whole
    //! exchanges: challenge, allocation, permissions, relaying both ways.

    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::stun::{Builder, Class, Message, Method, attr};

    const SECRET: &[u8] = b"s3cret";
    const UNIX: u64 = 1_800_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    struct Harness {
        server: Server,
        now: Instant,
        unix: u64,
        client: FiveTuple,
        username: String,
        key: [u8; 16],
        nonce: String,
        next_tid: u8,
        relay_port: u16,
        /// The address relays are opened on.
        relay_ip: std::net::IpAddr,
    }

    impl Harness {
        fn new(config: Config) -> Harness {
            let username = auth::rest_username(UNIX + 3600, "peer");
            let password = auth::rest_password(SECRET, &username);
            let key = auth::long_term_key(&username, "webconf", &password);
            Harness {
                server: Server::new(Config { secret: SECRET.to_vec(), nonce_key: [9; 32], ..config }),
                now: Instant::now(),
                unix: UNIX,
                client: FiveTuple {
                    transport: Transport::Udp,
                    client: addr("198.51.100.10:50000"),
                    server: addr("203.0.113.1:3478"),
                },
                username,
                key,
                nonce: String::new(),
                next_tid: 1,
                relay_port: 49152,
                relay_ip: addr("203.0.113.1:0").ip(),
            }
        }

        fn tid(&mut self) -> [u8; 12] {
            self.next_tid += 1;
            [self.next_tid; 12]
        }

        fn input(&mut self, input: Input<'_>) -> Vec<Output> {
            self.server.handle_input(self.now, self.unix, input);
            self.server.check_invariants();
            std::iter::from_fn(|| self.server.poll_output()).collect()
        }

        fn send_client(&mut self, data: &[u8]) -> Vec<Output> {
            let from = self.client;
            self.input(Input::FromClient { from, data })
        }

        /// Sends an authenticated request built by `build`; returns the
        /// outputs (answering a nonce challenge first if needed).
        fn request(&mut self, method: Method, build: impl Fn(Builder) -> Builder) -> Vec<Output> {
            let tid = self.tid();
            let b = Builder::new(method, Class::Request, tid)
                .attr(attr::USERNAME, self.username.as_bytes())
                .attr(attr::REALM, b"webconf")
                .attr(attr::NONCE, self.nonce.as_bytes());
            let msg = build(b).integrity(&self.key).finish_with_fingerprint();
            self.send_client(&msg)
        }

        /// The one response among `outputs`, parsed and checked.
        fn response(outputs: &[Output]) -> (Method, Class, Option<u16>, Vec<u8>) {
            let data = outputs
                .iter()
                .find_map(|o| match o {
                    Output::ToClient { data, .. } => Some(data.clone()),
                    _ => None,
                })
                .expect("a response");
            let msg = Message::parse(&data).expect("our responses parse");
            assert!(msg.fingerprint_ok());
            let code = msg.get(attr::ERROR_CODE).map(|v| u16::from(v[2]) * 100 + u16::from(v[3]));
            (msg.method, msg.class, code, data)
        }

        /// Gets a nonce (401), then allocates; returns the relay address.
        fn allocate(&mut self) -> SocketAddr {
            self.allocate_family(1)
        }

        /// Like `allocate`, for REQUESTED-ADDRESS-FAMILY `family` (1 IPv4,
        /// 2 IPv6).
        fn allocate_family(&mut self, family: u8) -> SocketAddr {
            let tid = self.tid();
            let plain = Builder::new(Method::Allocate, Class::Request, tid)
                .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .finish();
            let out = self.send_client(&plain);
            let (_, class, code, data) = Self::response(&out);
            assert_eq!((class, code), (Class::Error, Some(401)));
            let challenge = Message::parse(&data).expect("parses");
            assert_eq!(challenge.get_str(attr::REALM), Some("webconf"));
            self.nonce = challenge.get_str(attr::NONCE).expect("a nonce").to_owned();
            let out = self.request(Method::Allocate, |b| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                    .attr(attr::REQUESTED_ADDRESS_FAMILY, &[family, 0, 0, 0])
            });
            let Some(Output::OpenRelay { id, .. }) = out.first() else {
                panic!("expected OpenRelay, got {out:?}")
            };
            let id = *id;
            self.relay_port += 1;
            let relay = SocketAddr::new(self.relay_ip, self.relay_port);
            let out = self.input(Input::RelayOpened { id, relay });
            let (method, class, _, data) = Self::response(&out);
            assert_eq!((method, class), (Method::Allocate, Class::Success));
            let ok = Message::parse(&data).expect("parses");
            assert!(ok.verify_integrity(&self.key), "success responses carry our integrity");
            assert_eq!(ok.get_xor_addr(attr::XOR_RELAYED_ADDRESS), Some(relay));
            assert_eq!(ok.get_xor_addr(attr::XOR_MAPPED_ADDRESS), Some(self.client.client));
            assert_eq!(ok.get_u32(attr::LIFETIME), Some(600));
            relay
        }

        /// Takes the nonce from a 401 or 438 answer to a bare request (a
        /// nonce is bound to the client's address).
        fn fresh_nonce(&mut self) {
            let out = self.request(Method::Refresh, |b| b);
            let (_, _, code, data) = Self::response(&out);
            assert!(matches!(code, Some(401 | 438)), "{code:?}");
            self.nonce =
                Message::parse(&data).expect("parses").get_str(attr::NONCE).expect("nonce").to_owned();
        }

        /// Sends `data` to `peer` in a Send indication.
        fn send_to(&mut self, peer: SocketAddr, data: &[u8]) -> Vec<Output> {
            let tid = self.tid();
            let msg = Builder::new(Method::Send, Class::Indication, tid)
                .xor_addr(attr::XOR_PEER_ADDRESS, peer)
                .attr(attr::DATA, data)
                .finish();
            self.send_client(&msg)
        }

        fn permit(&mut self, peer: SocketAddr) -> Option<u16> {
            let out = self.request(Method::CreatePermission, |b| b.xor_addr(attr::XOR_PEER_ADDRESS, peer));
            Self::response(&out).2
        }
    }

    #[test]
    fn binding_answers_with_the_mapped_address() {
        let mut h = Harness::new(Config::default());
        let req = Builder::new(Method::Binding, Class::Request, [1; 12]).finish_with_fingerprint();
        let out = h.send_client(&req);
        let (_, class, _, data) = Harness::response(&out);
        assert_eq!(class, Class::Success);
        let msg = Message::parse(&data).expect("parses");
        assert_eq!(msg.get_xor_addr(attr::XOR_MAPPED_ADDRESS), Some(h.client.client));
        assert!(msg.get(attr::FINGERPRINT).is_some(), "asked with one, answered with one");
    }

    /// Issue 10, finding 9: a 20-byte unauthenticated Binding request got
    /// an answer several times larger (SOFTWARE, FINGERPRINT), a reflector
    /// for anyone forging a source address. The answer is at most twice
    /// the request, with or without FINGERPRINT.
    #[test]
    fn binding_answers_are_no_amplifier() {
        let mut h = Harness::new(Config::default());
        for req in [
            Builder::new(Method::Binding, Class::Request, [1; 12]).finish(),
            Builder::new(Method::Binding, Class::Request, [2; 12]).finish_with_fingerprint(),
        ] {
            let out = h.send_client(&req);
            let (_, class, _, data) = Harness::response(&out);
            assert_eq!(class, Class::Success);
            assert!(data.len() <= 2 * req.len(), "{} bytes for {}", data.len(), req.len());
        }
    }

    #[test]
    fn allocate_permit_and_relay_both_ways_by_indication_and_channel() {
        let mut h = Harness::new(Config::default());
        let relay = h.allocate();
        let peer = addr("192.0.2.77:40000");

        // No permission yet: nothing goes either way.
        let send = |h: &mut Harness, data: &[u8]| {
            let tid = h.tid();
            let msg = Builder::new(Method::Send, Class::Indication, tid)
                .xor_addr(attr::XOR_PEER_ADDRESS, peer)
                .attr(attr::DATA, data)
                .finish();
            h.send_client(&msg)
        };
        assert!(send(&mut h, b"early").is_empty());
        assert!(h.input(Input::FromPeer { relay, peer, data: b"hello?" }).is_empty());

        assert_eq!(h.permit(peer), None);
        assert_eq!(send(&mut h, b"ping"), vec![Output::ToPeer { relay, peer, data: b"ping".to_vec() }]);
        let out = h.input(Input::FromPeer { relay, peer, data: b"pong" });
        let [Output::ToClient { data, .. }] = out.as_slice() else { panic!("{out:?}") };
        let ind = Message::parse(data).expect("a Data indication");
        assert_eq!((ind.method, ind.class), (Method::Data, Class::Indication));
        assert_eq!(ind.get_xor_addr(attr::XOR_PEER_ADDRESS), Some(peer));
        assert_eq!(ind.get(attr::DATA), Some(&b"pong"[..]));
        // Permissions are per IP: another port of the same peer passes too.
        let other_port = addr("192.0.2.77:40001");
        assert_eq!(h.input(Input::FromPeer { relay, peer: other_port, data: b"x" }).len(), 1);

        // A channel: ChannelData both ways.
        let out = h.request(Method::ChannelBind, |b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]).xor_addr(attr::XOR_PEER_ADDRESS, peer)
        });
        assert_eq!(Harness::response(&out).1, Class::Success);
        let out = h.send_client(&stun::channel_data(0x4001, b"via channel", false));
        assert_eq!(out, vec![Output::ToPeer { relay, peer, data: b"via channel".to_vec() }]);
        let out = h.input(Input::FromPeer { relay, peer, data: b"back" });
        assert_eq!(
            out,
            vec![Output::ToClient { to: h.client, data: stun::channel_data(0x4001, b"back", false) }]
        );
        // The same channel for another peer, or another channel for this
        // peer, is refused.
        let out = h.request(Method::ChannelBind, |b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]).xor_addr(attr::XOR_PEER_ADDRESS, other_port)
        });
        assert_eq!(Harness::response(&out).2, Some(400));
        let out = h.request(Method::ChannelBind, |b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x02, 0, 0]).xor_addr(attr::XOR_PEER_ADDRESS, peer)
        });
        assert_eq!(Harness::response(&out).2, Some(400));
        assert_eq!(h.server.stats().allocations, 1);
    }

    #[test]
    fn private_and_loopback_peers_are_refused_unless_allowed() {
        let mut h = Harness::new(Config::default());
        h.allocate();
        for peer in ["127.0.0.1:9", "10.0.0.5:9", "192.168.1.1:9", "169.254.169.254:80"] {
            assert_eq!(h.permit(addr(peer)), Some(403), "{peer}");
        }
        let out = h.request(Method::ChannelBind, |b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
                .xor_addr(attr::XOR_PEER_ADDRESS, addr("127.0.0.1:9"))
        });
        assert_eq!(Harness::response(&out).2, Some(403));
        let mut open = Harness::new(Config { allow_private_peers: true, ..Config::default() });
        open.allocate();
        assert_eq!(open.permit(addr("127.0.0.1:9")), None);
    }

    /// On a LAN the server's own address is private: two clients that both
    /// relay (both hide their addresses) still reach each other, handed
    /// over inside the server, and so does the SFU beside it; nothing else
    /// on that network, nor on the server's address, is reachable.
    #[test]
    fn relays_of_this_server_reach_each_other_on_a_private_address() {
        let sfu = addr("192.168.50.1:7882");
        let mut h = Harness::new(Config { local_peers: vec![sfu], ..Config::default() });
        h.relay_ip = sfu.ip();
        let a = h.client;
        let relay_a = h.allocate();
        let b = FiveTuple { client: addr("192.168.50.3:50001"), ..a };
        h.client = b;
        let relay_b = h.allocate();
        assert_eq!(h.permit(relay_a), None, "this server's own address");
        assert_eq!(h.permit(addr("192.168.50.9:9")), Some(403), "another machine of the LAN");
        assert_eq!(h.permit(addr("127.0.0.1:9")), Some(403));
        h.client = a;
        h.fresh_nonce();
        assert_eq!(h.permit(relay_b), None);
        let send = |h: &mut Harness, peer: SocketAddr, data: &[u8]| {
            let tid = h.tid();
            let msg = Builder::new(Method::Send, Class::Indication, tid)
                .xor_addr(attr::XOR_PEER_ADDRESS, peer)
                .attr(attr::DATA, data)
                .finish();
            h.send_client(&msg)
        };
        // A to B's relay: straight to B, from A's relay.
        let out = send(&mut h, relay_b, b"hello b");
        let [Output::ToClient { to, data }] = out.as_slice() else { panic!("{out:?}") };
        assert_eq!(*to, b);
        let ind = Message::parse(data).expect("a Data indication");
        assert_eq!(ind.get_xor_addr(attr::XOR_PEER_ADDRESS), Some(relay_a));
        assert_eq!(ind.get(attr::DATA), Some(&b"hello b"[..]));
        // The SFU beside us goes out through the socket; any other port of
        // our address does not go at all.
        assert_eq!(
            send(&mut h, sfu, b"rtp"),
            vec![Output::ToPeer { relay: relay_a, peer: sfu, data: b"rtp".to_vec() }]
        );
        assert!(send(&mut h, addr("192.168.50.1:22"), b"ssh?").is_empty());
    }

    /// Finding 5 of issue 10: the relay reached the server's own public
    /// address (its TURN port, its web server, relay ports, anything on the
    /// machine). Only its own relays (handed over inside it) and its SFU's
    /// exact address are reached there, by any form of the address.
    #[test]
    fn nothing_on_the_servers_own_addresses_is_reached_but_relays_and_the_sfu() {
        let public = addr("203.0.113.1:0").ip();
        let listen = addr("192.0.2.200:443");
        let sfu = SocketAddr::new(public, 7882);
        let own = Config {
            own_ips: vec![public, listen.ip()],
            own_ports: vec![443..=443, 3478..=3478, 7882..=7882, 49152..=65535],
            local_peers: vec![sfu],
            ..Config::default()
        };
        let mut h = Harness::new(own.clone());
        let a = h.client;
        let relay_a = h.allocate();
        let b = FiveTuple { client: addr("198.51.100.20:50001"), ..a };
        h.client = b;
        let relay_b = h.allocate();
        assert_eq!(h.permit(relay_a), None);
        h.client = a;
        h.fresh_nonce();
        assert_eq!(h.permit(relay_b), None);
        assert_eq!(h.permit(listen), None);
        assert_eq!(h.permit(addr("198.51.100.99:9")), None);
        for port in [3478, 443, 22, 8080, 49999, relay_b.port() + 1, 65535] {
            let peer = SocketAddr::new(public, port);
            assert!(h.send_to(peer, b"x").is_empty(), "{peer} is this server");
        }
        for port in [443, 22] {
            let peer = SocketAddr::new(listen.ip(), port);
            assert!(h.send_to(peer, b"x").is_empty(), "{peer} is this server");
        }
        let out = h.send_to(relay_b, b"hello b");
        assert!(matches!(out.as_slice(), [Output::ToClient { to, .. }] if *to == b), "{out:?}");
        assert_eq!(
            h.send_to(sfu, b"rtp"),
            vec![Output::ToPeer { relay: relay_a, peer: sfu, data: b"rtp".to_vec() }]
        );
        assert!(!h.send_to(addr("198.51.100.99:9"), b"x").is_empty(), "elsewhere is fine");

        // An IPv6 relay: our address in an IPv6 form that carries it is ours too.
        let mut v6 = Harness::new(Config { families: vec![Family::V4, Family::V6], ..own });
        v6.relay_ip = addr("[2001:db8::1]:0").ip();
        v6.allocate_family(2);
        for peer in ["[::ffff:203.0.113.1]:3478", "[64:ff9b::203.0.113.1]:443", "[2002:cb00:7101::1]:22"] {
            let peer = addr(peer);
            assert_eq!(v6.permit(peer), None, "{peer}: a permission for our address...");
            assert!(v6.send_to(peer, b"x").is_empty(), "...opens nothing on it: {peer}");
        }

        // Tests and labs relay to private addresses, this machine's too,
        // but still never to its own services.
        let mut lab = Harness::new(Config {
            allow_private_peers: true,
            own_ips: vec![addr("127.0.0.1:0").ip()],
            own_ports: vec![3478..=3478, 8080..=8080],
            ..Config::default()
        });
        lab.relay_ip = addr("127.0.0.1:0").ip();
        lab.allocate();
        assert_eq!(lab.permit(addr("127.0.0.1:3480")), None);
        assert_eq!(lab.send_to(addr("127.0.0.1:3480"), b"echo").len(), 1);
        assert!(lab.send_to(addr("127.0.0.1:3478"), b"x").is_empty(), "our own TURN port");
        assert!(lab.send_to(addr("127.0.0.1:8080"), b"x").is_empty(), "our own web server");
    }

    #[test]
    fn credentials_are_checked_and_expire() {
        let mut h = Harness::new(Config::default());
        h.allocate();
        // A wrong password.
        let good_key = h.key;
        h.key = [0; 16];
        assert_eq!(h.permit(addr("192.0.2.1:1")), Some(401));
        h.key = good_key;
        // A stale nonce gets 438 and a fresh one.
        h.unix += 3601;
        h.username = auth::rest_username(UNIX + 100_000, "peer");
        h.key = auth::long_term_key(&h.username, "webconf", &auth::rest_password(SECRET, &h.username));
        let out = h.request(Method::Refresh, |b| b);
        let (_, _, code, data) = Harness::response(&out);
        assert_eq!(code, Some(438));
        h.nonce = Message::parse(&data).expect("parses").get_str(attr::NONCE).expect("nonce").to_owned();
        // Another username than the allocation's: 441.
        let out = h.request(Method::Refresh, |b| b);
        assert_eq!(Harness::response(&out).2, Some(441));
        // An expired username is refused outright.
        let mut late = Harness::new(Config::default());
        late.username = auth::rest_username(UNIX - 1, "peer");
        late.key =
            auth::long_term_key(&late.username, "webconf", &auth::rest_password(SECRET, &late.username));
        let first = late.request(Method::Allocate, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]));
        let (_, _, _, data) = Harness::response(&first);
        late.nonce = Message::parse(&data).expect("parses").get_str(attr::NONCE).expect("nonce").to_owned();
        let out = late.request(Method::Allocate, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]));
        assert_eq!(Harness::response(&out).2, Some(401));
    }

    #[test]
    fn allocation_rules_quotas_and_lifetimes() {
        let mut h = Harness::new(Config { max_allocations_per_user: 1, ..Config::default() });
        let relay = h.allocate();
        // A second Allocate on the same 5-tuple is a mismatch...
        let out = h.request(Method::Allocate, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]));
        assert_eq!(Harness::response(&out).2, Some(437));
        // ...and from another port it is over this user's quota.
        h.client.client = addr("198.51.100.10:50001");
        h.fresh_nonce();
        let out = h.request(Method::Allocate, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]));
        assert_eq!(Harness::response(&out).2, Some(486));
        // TCP relaying to peers is not offered.
        let out = h.request(Method::Allocate, |b| b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]));
        assert_eq!(Harness::response(&out).2, Some(442));
        h.client.client = addr("198.51.100.10:50000");
        h.fresh_nonce();
        // Refresh extends; the allocation expires without one.
        h.now += Duration::from_secs(500);
        let out = h.request(Method::Refresh, |b| b.u32(attr::LIFETIME, 100));
        let (_, class, _, data) = Harness::response(&out);
        assert_eq!(class, Class::Success);
        assert_eq!(
            Message::parse(&data).expect("parses").get_u32(attr::LIFETIME),
            Some(600),
            "at least the default"
        );
        h.now += Duration::from_secs(599);
        h.server.handle_timeout(h.now);
        assert_eq!(h.server.stats().allocations, 1);
        h.now += Duration::from_secs(2);
        h.server.handle_timeout(h.now);
        assert_eq!(h.server.poll_output(), Some(Output::CloseRelay { relay }));
        assert_eq!(h.server.stats().allocations, 0);
        h.server.check_invariants();
        // The quota place came free.
        h.allocate();
        // Refresh with lifetime 0 deletes at once.
        let out = h.request(Method::Refresh, |b| b.u32(attr::LIFETIME, 0));
        assert!(out.iter().any(|o| matches!(o, Output::CloseRelay { .. })));
        assert_eq!(h.server.stats().allocations, 0);
    }

    #[test]
    fn permissions_and_channels_expire() {
        let mut h = Harness::new(Config::default());
        let relay = h.allocate();
        let peer = addr("192.0.2.7:7");
        h.permit(peer);
        h.now += Duration::from_secs(301);
        h.server.handle_timeout(h.now);
        assert!(h.input(Input::FromPeer { relay, peer, data: b"late" }).is_empty());
        assert_eq!(h.server.stats().packets_dropped, 1);
    }

    /// Finding 1 of issue 10: one credential could install millions of
    /// permissions. Each allocation holds at most the configured number of
    /// permissions and channels; refreshing one it has is always fine.
    #[test]
    fn permissions_and_channels_are_capped_per_allocation() {
        let mut h = Harness::new(Config::default());
        h.allocate();
        let config = Config::default();
        let peer = |i: usize| addr(&format!("8.8.{}.{}:9", i / 256, i % 256));
        for i in 0..config.max_permissions_per_allocation {
            assert_eq!(h.permit(peer(i)), None, "permission {i}");
        }
        let over = config.max_permissions_per_allocation;
        assert_eq!(h.permit(peer(over)), Some(508), "one more peer");
        assert_eq!(h.permit(peer(0)), None, "refreshing one it has");
        // One request naming several new peers: all or nothing.
        let out = h.request(Method::CreatePermission, |b| {
            b.xor_addr(attr::XOR_PEER_ADDRESS, peer(0)).xor_addr(attr::XOR_PEER_ADDRESS, peer(over + 1))
        });
        assert_eq!(Harness::response(&out).2, Some(508));
        // A channel to a new peer would need a new permission: refused too.
        let bind = |h: &mut Harness, channel: u16, peer: SocketAddr| {
            let out = h.request(Method::ChannelBind, |b| {
                b.attr(attr::CHANNEL_NUMBER, &[(channel >> 8) as u8, channel as u8, 0, 0])
                    .xor_addr(attr::XOR_PEER_ADDRESS, peer)
            });
            Harness::response(&out).2
        };
        assert_eq!(bind(&mut h, 0x4000, peer(over)), Some(508));
        for i in 0..config.max_channels_per_allocation {
            assert_eq!(bind(&mut h, 0x4000 + i as u16, peer(i)), None, "channel {i}");
        }
        let other_port = SocketAddr::new(peer(0).ip(), 10);
        assert_eq!(bind(&mut h, 0x7000, other_port), Some(508), "one more channel");
        assert_eq!(bind(&mut h, 0x4000, peer(0)), None, "refreshing one it has");
    }

    /// Deadlines are kept in order: the next one is known without looking
    /// at every allocation, and `handle_timeout` ends only what is due.
    #[test]
    fn deadlines_are_kept_in_order_and_end_only_what_is_due() {
        let mut h = Harness::new(Config::default());
        assert_eq!(h.server.poll_timeout(), None, "nothing to time out");
        let start = h.now;
        let secs = |s: u64| start + Duration::from_secs(s);
        let relay = h.allocate();
        assert_eq!(h.server.poll_timeout(), Some(secs(600)), "the allocation's lifetime");
        let early = addr("192.0.2.1:1");
        let late = addr("192.0.2.2:2");
        h.permit(early);
        assert_eq!(h.server.poll_timeout(), Some(secs(300)));
        h.now = secs(100);
        h.permit(late);
        assert_eq!(h.server.poll_timeout(), Some(secs(300)), "the earliest first");
        h.now = secs(300);
        h.server.handle_timeout(h.now);
        h.server.check_invariants();
        assert_eq!(h.server.poll_timeout(), Some(secs(400)));
        assert!(h.input(Input::FromPeer { relay, peer: early, data: b"x" }).is_empty(), "ended");
        assert_eq!(h.input(Input::FromPeer { relay, peer: late, data: b"x" }).len(), 1, "still on");
        // Renewing a permission moves its deadline rather than adding one.
        h.permit(late);
        assert_eq!(h.server.poll_timeout(), Some(secs(600)));
        h.now = secs(599);
        h.server.handle_timeout(h.now);
        assert_eq!(h.server.stats().allocations, 1);
        h.now = secs(600);
        h.server.handle_timeout(h.now);
        assert_eq!(h.server.poll_output(), Some(Output::CloseRelay { relay }));
        h.server.check_invariants();
        assert_eq!(h.server.poll_timeout(), None, "the allocation took its deadlines with it");
    }

    /// Finding 4 of issue 10: every join mints a fresh credential, so the
    /// per-username quota limited nothing. Allocations are capped per
    /// client address whatever the credentials, and a peer's quota is
    /// shared by all the credentials minted for it.
    #[test]
    fn allocations_are_capped_per_address_and_per_peer_not_per_credential() {
        let mut h = Harness::new(Config { max_allocations_per_address: 2, ..Config::default() });
        let as_peer = |h: &mut Harness, expiry: u64, peer: &str| {
            h.username = auth::rest_username(expiry, peer);
            let password = auth::rest_password(SECRET, &h.username);
            h.key = auth::long_term_key(&h.username, "webconf", &password);
        };
        for (port, peer) in [(50001, "a"), (50002, "b")] {
            h.client.client = SocketAddr::new(h.client.client.ip(), port);
            as_peer(&mut h, UNIX + 3600, peer);
            h.allocate();
        }
        h.client.client = SocketAddr::new(h.client.client.ip(), 50003);
        as_peer(&mut h, UNIX + 3600, "c");
        h.fresh_nonce();
        let out = h.request(Method::Allocate, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]));
        assert_eq!(Harness::response(&out).2, Some(486), "a third from the same address");
        h.client.client = addr("198.51.100.11:50003");
        h.allocate();

        let mut q = Harness::new(Config { max_allocations_per_user: 1, ..Config::default() });
        q.allocate();
        q.client.client = addr("198.51.100.12:50000");
        as_peer(&mut q, UNIX + 7200, "peer");
        q.fresh_nonce();
        let out = q.request(Method::Allocate, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]));
        assert_eq!(Harness::response(&out).2, Some(486), "a fresh credential for the same peer");
    }

    /// Finding 9: a bare 20-byte request over UDP got a 401 with a realm
    /// and a nonce, several times its size, whatever its (forgeable)
    /// source: a reflector. Challenges to one address are now capped (by
    /// default 20 a second, one second's worth at once), and in all (2000
    /// a second); over TCP (no forged sources) they are not.
    #[test]
    fn challenges_over_udp_are_rate_limited_per_address_and_in_all() {
        let limits =
            Config { challenges_per_sec_per_address: 10, challenges_per_sec: 15, ..Config::default() };
        let mut h = Harness::new(limits);
        let bare = |h: &mut Harness| {
            let tid = h.tid();
            let msg = Builder::new(Method::Allocate, Class::Request, tid)
                .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .finish();
            h.send_client(&msg).len()
        };
        let answered: usize = (0..50).map(|_| bare(&mut h)).sum();
        assert_eq!(answered, 10, "one address: 10 at once");
        h.client.client = addr("198.51.100.99:50000");
        let answered: usize = (0..50).map(|_| bare(&mut h)).sum();
        assert_eq!(answered, 5, "all addresses: 15 a second");
        assert_eq!(h.server.stats().challenges_dropped, 85);
        h.now += Duration::from_secs(1);
        assert_eq!(bare(&mut h), 1, "a second later, again");
        h.client.transport = Transport::Tcp;
        let answered: usize = (0..50).map(|_| bare(&mut h)).sum();
        assert_eq!(answered, 50, "TCP clients cannot forge their address");
        // The usual dance still works.
        h.client.transport = Transport::Udp;
        h.client.client = addr("198.51.100.7:50000");
        h.now += Duration::from_secs(1);
        h.allocate();
    }

    /// Finding 4: a credential is good only while the peer it was handed
    /// to may use TURN (webconf: holds a seat). When it leaves, its
    /// allocations end (relay closed) and its credential is refused; a
    /// revocation for a peer that is back (resumed) ends nothing.
    #[test]
    fn credentials_are_bound_to_their_peer_and_revoked_when_it_leaves() {
        use std::sync::{Arc, Mutex};
        let seated = Arc::new(Mutex::new(vec!["peer".to_owned()]));
        let check = seated.clone();
        let users = UserCheck(Arc::new(move |u| check.lock().expect("lock").iter().any(|s| s == u)));
        let mut h = Harness::new(Config { users: Some(users), ..Config::default() });
        let relay = h.allocate();
        assert_eq!(h.permit(addr("192.0.2.1:1")), None);

        // Revoked while still seated (a resumed peer): nothing ends.
        assert!(h.input(Input::Revoke { user: "peer" }).is_empty());
        seated.lock().expect("lock").clear();
        assert_eq!(h.input(Input::Revoke { user: "peer" }), vec![Output::CloseRelay { relay }]);
        assert_eq!(h.server.stats().allocations, 0);
        // Its credential no longer allocates, refreshes or permits.
        h.client.client = addr("198.51.100.10:50001");
        h.fresh_nonce();
        let out = h.request(Method::Allocate, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]));
        assert_eq!(Harness::response(&out).2, Some(401));
        assert_eq!(h.permit(addr("192.0.2.1:1")), Some(401));
        // Seated again (resumed), the peer allocates again.
        seated.lock().expect("lock").push("peer".to_owned());
        h.client.client = addr("198.51.100.10:50002");
        h.allocate();
    }

    /// Finding 4: the bandwidth cap was per allocation only, so more
    /// allocations meant more bandwidth. A client address and the whole
    /// server have budgets too.
    #[test]
    fn bandwidth_is_capped_per_address_and_in_all() {
        let mut h = Harness::new(Config {
            bandwidth_bytes_per_sec: 10_000,
            bandwidth_bytes_per_sec_per_address: 15_000,
            bandwidth_bytes_per_sec_total: 22_000,
            ..Config::default()
        });
        let peer = addr("192.0.2.8:8");
        let mut relays = Vec::new();
        for (client, port) in [("198.51.100.10", 50001), ("198.51.100.10", 50002), ("198.51.100.20", 50003)] {
            h.client.client = SocketAddr::new(addr(&format!("{client}:0")).ip(), port);
            let relay = h.allocate();
            h.permit(peer);
            relays.push(relay);
        }
        let blob = vec![0u8; 1000];
        let mut passed = |relay: SocketAddr| {
            (0..50).filter(|_| !h.input(Input::FromPeer { relay, peer, data: &blob }).is_empty()).count()
        };
        assert_eq!(passed(relays[0]), 10, "the allocation's own second");
        assert_eq!(passed(relays[1]), 5, "what is left of its address's");
        assert_eq!(passed(relays[2]), 7, "another address: what is left of the server's");
    }

    #[test]
    fn bandwidth_is_capped_per_allocation() {
        let mut h = Harness::new(Config { bandwidth_bytes_per_sec: 10_000, ..Config::default() });
        let relay = h.allocate();
        let peer = addr("192.0.2.8:8");
        h.permit(peer);
        let blob = vec![0u8; 1000];
        let passed =
            (0..50).filter(|_| !h.input(Input::FromPeer { relay, peer, data: &blob }).is_empty()).count();
        assert_eq!(passed, 10, "one second's worth of burst");
        h.now += Duration::from_millis(500);
        let passed =
            (0..50).filter(|_| !h.input(Input::FromPeer { relay, peer, data: &blob }).is_empty()).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn tcp_clients_get_padded_channel_data_and_lose_allocations_on_close() {
        let mut h = Harness::new(Config::default());
        h.client.transport = Transport::Tcp;
        let relay = h.allocate();
        let peer = addr("192.0.2.9:9");
        let out = h.request(Method::ChannelBind, |b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0]).xor_addr(attr::XOR_PEER_ADDRESS, peer)
        });
        assert_eq!(Harness::response(&out).1, Class::Success);
        let out = h.input(Input::FromPeer { relay, peer, data: b"12345" });
        let [Output::ToClient { data, .. }] = out.as_slice() else { panic!("{out:?}") };
        assert_eq!(data.len(), 12, "4 + 5 padded to 12 on a stream");
        let client = h.client;
        let out = h.input(Input::ClientGone { client });
        assert_eq!(out, vec![Output::CloseRelay { relay }]);
        h.server.check_invariants();
    }

    #[test]
    fn unknown_required_attributes_and_garbage() {
        let mut h = Harness::new(Config::default());
        let req = Builder::new(Method::Allocate, Class::Request, [3; 12]).attr(0x0042, b"?").finish();
        let out = h.send_client(&req);
        let (_, _, code, data) = Harness::response(&out);
        assert_eq!(code, Some(420));
        assert_eq!(
            Message::parse(&data).expect("parses").get(attr::UNKNOWN_ATTRIBUTES),
            Some(&[0x00, 0x42][..])
        );
        for junk in [&b""[..], b"\x00", b"\x40\x00\x00\xff", b"GET / HTTP/1.1\r\n", &[0u8; 20]] {
            assert!(h.send_client(junk).is_empty());
        }
        assert!(
            h.input(Input::FromPeer { relay: addr("203.0.113.1:1"), peer: addr("192.0.2.1:1"), data: b"?" })
                .is_empty()
        );
    }
}
