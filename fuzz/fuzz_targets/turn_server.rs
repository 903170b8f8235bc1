//! Anything clients and peers send the TURN server (STUN messages, ChannelData,
//! junk) is answered or dropped without a panic, and its state stays
//! consistent. Valid-looking messages are built from the fuzzer's choices so
//! deep paths (allocations, permissions, channels) are reached too.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use turn::stun::{Builder, Class, Method, attr};
use turn::{Config, FiveTuple, Input, Output, Server, Transport};

#[derive(Arbitrary, Debug)]
enum Step {
    Raw {
        client: u8,
        tcp: bool,
        data: Vec<u8>,
    },
    Request {
        client: u8,
        method: u8,
        lifetime: Option<u32>,
        peer: Option<(u8, u16)>,
        channel: Option<u16>,
        good_key: bool,
    },
    Send {
        client: u8,
        peer: (u8, u16),
        data: Vec<u8>,
    },
    Channel {
        client: u8,
        channel: u16,
        data: Vec<u8>,
    },
    Peer {
        relay: u8,
        peer: (u8, u16),
        data: Vec<u8>,
    },
    Gone {
        client: u8,
    },
    Tick {
        secs: u16,
    },
    /// The peer leaves (its credentials are revoked) or comes back.
    Seated {
        seated: bool,
    },
}

fuzz_target!(|steps: Vec<Step>| {
    let secret = b"s".to_vec();
    let seated = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let check = seated.clone();
    let users =
        turn::UserCheck(std::sync::Arc::new(move |_: &str| check.load(std::sync::atomic::Ordering::Relaxed)));
    let mut server = Server::new(Config {
        users: Some(users),
        secret: secret.clone(),
        max_allocations: 8,
        max_allocations_per_user: 3,
        allow_private_peers: false,
        ..Config::default()
    });
    let start = Instant::now();
    let mut now = start;
    let unix = 1_800_000_000u64;
    let username = turn::auth::rest_username(unix + 3600, "fuzz");
    let key = turn::auth::long_term_key(&username, "webconf", &turn::auth::rest_password(&secret, &username));
    let client = |n: u8, tcp: bool| FiveTuple {
        transport: if tcp { Transport::Tcp } else { Transport::Udp },
        client: SocketAddr::from(([198, 51, 100, n % 4], 5000 + u16::from(n % 3))),
        server: "203.0.113.1:3478".parse().expect("addr"),
    };
    let mut relays: Vec<SocketAddr> = Vec::new();
    let mut nonces: std::collections::HashMap<FiveTuple, String> = Default::default();
    let mut tid = 0u8;
    for step in steps.into_iter().take(300) {
        tid = tid.wrapping_add(1);
        let owned: Vec<u8>;
        let input = match step {
            Step::Raw { client: c, tcp, data } => {
                owned = data;
                Input::FromClient { from: client(c, tcp), data: &owned }
            }
            Step::Request { client: c, method, lifetime, peer, channel, good_key } => {
                let from = client(c, false);
                let method =
                    [Method::Allocate, Method::Refresh, Method::CreatePermission, Method::ChannelBind]
                        [usize::from(method % 4)];
                // Nonces are the server's: the first request of a client is challenged,
                // and the nonce from the challenge opens the authenticated paths.
                let nonce = nonces.get(&from).cloned().unwrap_or_default();
                let mut b = Builder::new(method, Class::Request, [tid; 12])
                    .attr(attr::USERNAME, username.as_bytes())
                    .attr(attr::REALM, b"webconf")
                    .attr(attr::NONCE, nonce.as_bytes())
                    .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
                if let Some(l) = lifetime {
                    b = b.u32(attr::LIFETIME, l);
                }
                if let Some((ip, port)) = peer {
                    b = b.xor_addr(attr::XOR_PEER_ADDRESS, SocketAddr::from(([192, 0, 2, ip], port)));
                }
                if let Some(ch) = channel {
                    b = b.attr(attr::CHANNEL_NUMBER, &[(ch >> 8) as u8, ch as u8, 0, 0]);
                }
                owned = b.integrity(if good_key { &key } else { b"bad" }).finish_with_fingerprint();
                Input::FromClient { from, data: &owned }
            }
            Step::Send { client: c, peer: (ip, port), data } => {
                owned = Builder::new(Method::Send, Class::Indication, [tid; 12])
                    .xor_addr(attr::XOR_PEER_ADDRESS, SocketAddr::from(([192, 0, 2, ip], port)))
                    .attr(attr::DATA, &data)
                    .finish();
                Input::FromClient { from: client(c, false), data: &owned }
            }
            Step::Channel { client: c, channel, data } => {
                owned = turn::stun::channel_data(channel, &data, false);
                Input::FromClient { from: client(c, false), data: &owned }
            }
            Step::Peer { relay, peer: (ip, port), data } => {
                let Some(relay) = relays.get(usize::from(relay) % relays.len().max(1)).copied() else {
                    continue;
                };
                owned = data;
                Input::FromPeer { relay, peer: SocketAddr::from(([192, 0, 2, ip], port)), data: &owned }
            }
            Step::Gone { client: c } => Input::ClientGone { client: client(c, true) },
            Step::Seated { seated: now_seated } => {
                seated.store(now_seated, std::sync::atomic::Ordering::Relaxed);
                Input::Revoke { user: "fuzz" }
            }
            Step::Tick { secs } => {
                now += Duration::from_secs(u64::from(secs));
                server.handle_timeout(now);
                server.check_invariants();
                continue;
            }
        };
        server.handle_input(now, unix + now.duration_since(start).as_secs(), input);
        while let Some(out) = server.poll_output() {
            match out {
                Output::OpenRelay { id, .. } => {
                    let relay = SocketAddr::from(([203, 0, 113, 1], 50000 + (id.0 % 1000) as u16));
                    relays.push(relay);
                    server.handle_input(now, unix, Input::RelayOpened { id, relay });
                }
                Output::ToClient { to, data } => {
                    // Remember nonces from challenges to get past them.
                    if let Ok(msg) = turn::stun::Message::parse(&data)
                        && let Some(n) = msg.get_str(attr::NONCE)
                    {
                        nonces.insert(to, n.to_owned());
                    }
                }
                Output::ToPeer { peer, .. } => assert!(turn::policy::is_public(peer.ip())),
                Output::CloseRelay { relay } => relays.retain(|r| *r != relay),
            }
        }
        server.check_invariants();
    }
});
