//! The SFU with non-browser peers: str0m sessions in this process, speaking
//! the signaling protocol over real WebSockets and sending synthetic media
//! over real UDP on loopback. They prove forwarding (to exactly the other
//! members, never back), the switch message, keyframe requests (on
//! subscribe and when a subscriber asks), and retransmission of lost
//! packets, without a browser.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::harness::in_loopback_namespace;
use crate::support::{Client, TestServer, http_get};

/// A VP8 keyframe's first bytes (frame tag with the key bit clear, the
/// start code, 320x240), padded; and an inter frame's.
fn vp8_frame(key: bool, n: u32) -> Vec<u8> {
    let mut f = if key {
        vec![0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]
    } else {
        vec![0x51, 0x02, 0x00]
    };
    f.extend(n.to_be_bytes());
    f.resize(400, 0xab);
    f
}

/// One participant: its WebSocket, its str0m session and UDP socket, and
/// what it has received.
struct Peer {
    name: &'static str,
    ws: Client,
    id: String,
    rtc: Rtc,
    udp: UdpSocket,
    addr: SocketAddr,
    audio: Mid,
    video: Mid,
    /// The server's offer we are answering, if any (str0m keeps no state
    /// for an answer, so nothing to hold).
    pending: Option<SdpPendingOffer>,
    /// mid -> (peer id, source), from the server's latest offer.
    tracks: HashMap<String, (String, String)>,
    /// Frames received, per (peer id, source).
    frames: HashMap<(String, String), u32>,
    keyframe_requests: u32,
    /// Drop one in this many RTP or RTCP packets that arrive, at random
    /// (0: none), to make the server resend.
    drop_every: u32,
    rtp_packets: u32,
    /// Decides which packets are lost.
    rng: u32,
    dropped: u32,
    /// Our offer, until sent.
    offer: Option<SdpOffer>,
    /// Every message the server sent us, but sfu descriptions.
    heard: Vec<Value>,
    /// Where the SFU is (where our session sent its first packet).
    sfu: Option<SocketAddr>,
}

impl Peer {
    async fn join(server: &TestServer, room: &str, name: &'static str) -> (Peer, Value) {
        Self::join_with(server, json!({"type": "join", "room": room, "name": name}), name).await
    }

    /// Joins with a whole `join` message (to create a room as its host).
    async fn join_with(server: &TestServer, join: Value, name: &'static str) -> (Peer, Value) {
        let (ws, joined) = Client::join_with(server, join).await;
        let id = joined["you"].as_str().expect("you").to_owned();
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
        udp.set_nonblocking(true).expect("nonblocking");
        let addr = udp.local_addr().expect("addr");
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        let audio =
            api.add_media(MediaKind::Audio, Direction::SendOnly, Some(name.into()), Some("a".into()), None);
        let video =
            api.add_media(MediaKind::Video, Direction::SendOnly, Some(name.into()), Some("v".into()), None);
        let (offer, pending) = api.apply().expect("an offer");
        let peer = Peer {
            name,
            ws,
            id,
            rtc,
            udp,
            addr,
            audio,
            video,
            pending: Some(pending),
            tracks: HashMap::new(),
            frames: HashMap::new(),
            keyframe_requests: 0,
            drop_every: 0,
            rtp_packets: 0,
            rng: 0x9e37_79b9,
            dropped: 0,
            offer: Some(offer),
            heard: Vec::new(),
            sfu: None,
        };
        (peer, joined)
    }

    /// Starts the session with the SFU: our one offer.
    async fn start_sfu(&mut self) {
        let offer = self.offer.take().expect("not started yet");
        let sources = json!({ self.audio.to_string(): "audio", self.video.to_string(): "camera" });
        self.ws
            .send(json!({"type": "sfu", "description": {"type": "offer", "sdp": offer.to_sdp_string()}, "sources": sources}))
            .await;
    }

    /// Handles one signaling message from the server.
    async fn on_message(&mut self, msg: Value) {
        match msg["type"].as_str() {
            Some("sfu") => {
                let sdp = msg["description"]["sdp"].as_str().expect("sdp").to_owned();
                match msg["description"]["type"].as_str() {
                    Some("answer") => {
                        let pending = self.pending.take().expect("an offer of ours was pending");
                        let answer = SdpAnswer::from_sdp_string(&sdp).expect("an SDP answer");
                        self.rtc.sdp_api().accept_answer(pending, answer).expect("answer accepted");
                    }
                    Some("offer") => {
                        self.tracks.clear();
                        for t in msg["tracks"].as_array().expect("tracks") {
                            let mid = t["mid"].as_str().expect("mid").to_owned();
                            let who = t["peer"].as_str().expect("peer").to_owned();
                            let source = t["source"].as_str().expect("source").to_owned();
                            self.tracks.insert(mid, (who, source));
                        }
                        let offer = SdpOffer::from_sdp_string(&sdp).expect("an SDP offer");
                        let answer = self.rtc.sdp_api().accept_offer(offer).expect("offer accepted");
                        self.ws
                            .send(json!({"type": "sfu", "description": {"type": "answer", "sdp": answer.to_sdp_string()}}))
                            .await;
                    }
                    other => panic!("{}: unexpected description {other:?}", self.name),
                }
            }
            Some("error") => panic!("{}: {msg}", self.name),
            _ => self.heard.push(msg),
        }
    }

    /// Moves the session on: network in, timers, output out.
    fn drive(&mut self, now: Instant) {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = self.udp.recv_from(&mut buf) {
            // Only media and its resends are dropped, never ICE or DTLS
            // (which start with bytes below 128).
            if buf[0] >= 128 {
                self.rtp_packets += 1;
                // One in `drop_every` on average, at random (xorshift,
                // fixed seed): a strict period aliases with the streams'
                // own rhythm and can hit the same stream, or every resend
                // of one packet, each time.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 17;
                self.rng ^= self.rng << 5;
                if self.drop_every > 0 && self.rng % self.drop_every == 0 {
                    self.dropped += 1;
                    continue;
                }
            }
            let Ok(contents) = buf[..n].try_into() else { continue };
            let input = Input::Receive(
                now,
                Receive { proto: Protocol::Udp, source: from, destination: self.addr, contents },
            );
            if self.rtc.accepts(&input) {
                let _ = self.rtc.handle_input(input);
            }
        }
        let _ = self.rtc.handle_input(Input::Timeout(now));
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => {
                    self.sfu.get_or_insert(t.destination);
                    let _ = self.udp.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    Event::MediaData(d) => {
                        let key = self.tracks.get(&d.mid.to_string()).cloned().unwrap_or_default();
                        *self.frames.entry(key).or_default() += 1;
                    }
                    Event::KeyframeRequest(_) => self.keyframe_requests += 1,
                    _ => {}
                },
            }
        }
    }

    /// Sends one frame of audio and one of video (a keyframe when asked).
    fn send_media(&mut self, now: Instant, n: u32, key: bool) {
        if !self.rtc.is_connected() {
            return;
        }
        for (mid, codec, data, time) in [
            (
                self.audio,
                Codec::Opus,
                vec![0xfc; 60],
                MediaTime::new(u64::from(n) * 960, Frequency::FORTY_EIGHT_KHZ),
            ),
            (
                self.video,
                Codec::Vp8,
                vp8_frame(key, n),
                MediaTime::new(u64::from(n) * 4500, Frequency::NINETY_KHZ),
            ),
        ] {
            let Some(w) = self.rtc.writer(mid) else { continue };
            let Some(pt) = w.payload_params().find(|p| p.spec().codec == codec).map(|p| p.pt()) else {
                continue;
            };
            let _ = w.write(pt, now, time, data);
        }
    }

    fn frames_from(&self, other: &Peer, source: &str) -> u32 {
        self.frames.get(&(other.id.clone(), source.to_owned())).copied().unwrap_or(0)
    }
}

/// Runs every peer for `how_long`: signaling, network and media (each
/// sends a frame every 50 ms, a keyframe when it was asked for one).
async fn run(peers: &mut [Peer], how_long: Duration, frame_no: &mut u32) {
    let end = Instant::now() + how_long;
    let mut next_frame = Instant::now();
    let mut asked: Vec<u32> = peers.iter().map(|p| p.keyframe_requests).collect();
    while Instant::now() < end {
        for p in peers.iter_mut() {
            while let Ok(msg) = tokio::time::timeout(Duration::from_millis(1), p.ws.recv()).await {
                p.on_message(msg).await;
            }
            p.drive(Instant::now());
        }
        if Instant::now() >= next_frame {
            next_frame += Duration::from_millis(50);
            *frame_no += 1;
            for (i, p) in peers.iter_mut().enumerate() {
                let key = p.keyframe_requests > asked[i] || *frame_no % 100 == 1;
                asked[i] = p.keyframe_requests;
                p.send_media(Instant::now(), *frame_no, key);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The SFU on loopback, `listen` its UDP (and ICE-TCP) address.
fn sfu_config(
    listen: &str,
    max_participants: usize,
    connect_deadline: Duration,
) -> server::sfu_io::SfuConfig {
    server::sfu_io::SfuConfig {
        listen: listen.parse().expect("addr"),
        public_ip: "127.0.0.1".parse().expect("ip"),
        max_participants,
        p2p_max: 2,
        forwarding: sfu::Config::default(),
        connect_deadline,
    }
}

#[tokio::test]
async fn three_str0m_peers_get_each_others_media_through_the_sfu() {
    if !in_loopback_namespace("sfu_peers::three_str0m_peers_get_each_others_media_through_the_sfu") {
        return;
    }
    let sfu = sfu_config("127.0.0.1:0", 4, server::sfu_io::CONNECT_DEADLINE);
    let server =
        TestServer::start(server::Config { room_capacity: 5, sfu: Some(sfu), ..server::Config::default() })
            .await;

    // Two people: browser to browser.
    let (mut a, joined) = Peer::join(&server, "g", "A").await;
    assert_eq!(joined["mode"], "p2p");
    let (b, joined) = Peer::join(&server, "g", "B").await;
    assert_eq!(joined["mode"], "p2p");
    assert_eq!(a.ws.recv().await["type"], "peer-joined");
    // A third: the room switches, and those already there are told first.
    let (c, joined) = Peer::join(&server, "g", "C").await;
    assert_eq!(joined["mode"], "sfu");
    assert_eq!(a.ws.recv().await, json!({"type": "room-mode", "mode": "sfu"}));
    assert_eq!(a.ws.recv().await["type"], "peer-joined");
    // Someone alone in another room, whose first offer is not SDP.
    let (mut x, _) = Peer::join(&server, "other", "X").await;
    x.ws.send(json!({"type": "sfu", "description": {"type": "offer", "sdp": "v=0\r\n"}})).await;
    let bad = x.ws.expect_error("bad-sdp").await;
    assert_eq!(bad["request"], "sfu");
    x.ws.send(json!({"type": "sfu", "description": {"type": "answer", "sdp": "v=0\r\n"}})).await;
    x.ws.expect_error("bad-sdp").await;

    let mut peers = vec![a, b, c, x];
    for p in &mut peers {
        p.start_sfu().await;
    }
    let mut n = 0;
    // Until everyone in `g` has a few frames of everyone else (a loaded
    // machine may take a while to connect), at most 15 s.
    let started = Instant::now();
    let everyone_has_frames = |peers: &[Peer]| {
        peers[..3]
            .iter()
            .all(|p| peers[..3].iter().filter(|o| o.id != p.id).all(|o| p.frames_from(o, "camera") > 10))
    };
    while started.elapsed() < Duration::from_secs(15) && !everyone_has_frames(&peers) {
        run(&mut peers, Duration::from_millis(500), &mut n).await;
    }
    println!("three peers had 10 frames of each other after {:?}", started.elapsed());
    for p in &peers {
        assert!(p.rtc.is_connected(), "{} connected to the SFU", p.name);
    }
    let x = peers.pop().expect("x");
    for p in &peers {
        for other in peers.iter().filter(|o| o.id != p.id) {
            for source in ["audio", "camera"] {
                assert!(
                    p.frames_from(other, source) > 10,
                    "{} gets {}'s {source}: {:?}",
                    p.name,
                    other.name,
                    p.frames
                );
            }
        }
        assert!(!p.frames.keys().any(|(who, _)| *who == p.id), "{} gets none of its own media", p.name);
        assert!(p.keyframe_requests >= 1, "subscribing to {} asked it for a keyframe", p.name);
        assert_eq!(p.frames_from(&x, "camera"), 0, "nobody in g gets X's media");
    }
    assert_eq!(x.frames.values().sum::<u32>(), 0, "X, in another room, gets nothing: {:?}", x.frames);
    println!("frames A got from B: {}, sent: {n}", peers[0].frames_from(&peers[1], "camera"));

    let a_id = peers[0].id.clone();
    // Nobody shows A's camera: A is told to stop encoding it (dynacast),
    // and nobody is sent it; shown again, it comes back.
    for i in [1, 2] {
        peers[i].ws.send(json!({"type": "sfu-layout", "tiles": [{"peer": a_id, "height": 0}]})).await;
    }
    run(&mut peers, Duration::from_millis(500), &mut n).await;
    let paused = json!({"type": "sfu-layers", "source": "camera", "active": []});
    assert!(peers[0].heard.contains(&paused), "A was told nobody gets its camera: {:?}", peers[0].heard);
    let hidden = peers[1].frames_from(&peers[0], "camera");
    run(&mut peers, Duration::from_millis(500), &mut n).await;
    assert_eq!(peers[1].frames_from(&peers[0], "camera"), hidden, "B gets none of A's hidden camera");
    peers[1].ws.send(json!({"type": "sfu-layout", "tiles": [{"peer": a_id, "height": 240}]})).await;
    run(&mut peers, Duration::from_secs(1), &mut n).await;
    let resumed = json!({"type": "sfu-layers", "source": "camera", "active": [0]});
    assert!(peers[0].heard.contains(&resumed), "A was told to send again: {:?}", peers[0].heard);
    assert!(peers[1].frames_from(&peers[0], "camera") > hidden + 5, "B gets A's camera again");

    // A fifth session, over the limit of four: refused, the others unaffected.
    let (mut y, _) = Peer::join(&server, "g", "Y").await;
    y.start_sfu().await;
    let refused = y.ws.expect_error("sfu-unavailable").await;
    assert_eq!(refused["request"], "sfu");
    drop(x);

    // A subscriber asks for a keyframe: the publisher is asked (at most
    // twice a second, however often subscribers ask).
    let before = peers[0].keyframe_requests;
    let mid = peers[1]
        .tracks
        .iter()
        .find(|(_, (who, s))| *who == peers[0].id && s == "camera")
        .map(|(m, _)| m.clone());
    let mid: Mid = mid.expect("B receives A's camera").as_str().into();
    for _ in 0..5 {
        if let Some(mut w) = peers[1].rtc.writer(mid) {
            let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
        }
        run(&mut peers, Duration::from_millis(100), &mut n).await;
    }
    let asked = peers[0].keyframe_requests - before;
    assert!((1..=2).contains(&asked), "A was asked {asked} times for 5 requests in 0.5 s");

    // B loses one media packet in ten on the way in: it asks again (NACK)
    // and the SFU resends, so it misses (almost) no frame. (Less than one
    // in seven, which sat at str0m's 15% resend cap. Some CI runs still see
    // a whole window without resends, 54-55 of 61 frames, at one in ten
    // too: an open fault, see the stop 11 note.)
    peers[1].drop_every = 10;
    let (a_before, b_before) = (peers[1].frames_from(&peers[0], "camera"), n);
    run(&mut peers, Duration::from_secs(3), &mut n).await;
    let got = peers[1].frames_from(&peers[0], "camera") - a_before;
    let sent = n - b_before;
    println!("with 1 in 10 packets lost on the way to B: {got} of {sent} frames arrived");
    assert!(peers[1].dropped >= 10, "the lossy link dropped {} packets", peers[1].dropped);
    // Without resends one frame in ten would be lost (a frame is one
    // packet here); allow one whose resend was late on a busy host. The
    // resend requests are counted in /metrics below.
    assert!(got * 100 >= sent * 95, "B got {got} of {sent} of A's frames despite losses");
    let (_, metrics) = http_get(&server, "/metrics").await;
    let value = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("webconf_{name} "))).unwrap_or_default();
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    for name in [
        "sfu_nacks_received_total",
        "sfu_packets_sent_total",
        "sfu_packets_received_total",
        "sfu_keyframe_requests_total",
        "sfu_frames_forwarded_total",
    ] {
        assert!(value(name) > 0, "{name} counted:\n{metrics}");
    }
    assert_eq!(value("sfu_sessions"), 3, "X and Y are gone: {metrics}");
    assert_eq!(value("sfu_rooms"), 1, "{metrics}");

    // A floods the SFU from its own address with junk that looks like
    // RTP: past its packet rate the rest is dropped unread, and B and C
    // keep getting each other.
    let sfu_addr = peers[0].sfu.expect("A's session sent to the SFU");
    let junk = [0x80u8, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xaa, 0xbb];
    let before = [peers[1].frames_from(&peers[2], "camera"), peers[2].frames_from(&peers[1], "camera")];
    // 8,000 a second for a second and a half (in bursts the socket
    // buffers can hold), over three times what one session may send.
    for _ in 0..150 {
        for _ in 0..80 {
            let _ = peers[0].udp.send_to(&junk, sfu_addr);
        }
        run(&mut peers, Duration::from_millis(10), &mut n).await;
    }
    assert!(peers[1].frames_from(&peers[2], "camera") > before[0] + 10, "B keeps getting C during A's flood");
    assert!(peers[2].frames_from(&peers[1], "camera") > before[1] + 10, "C keeps getting B during A's flood");
    let (_, metrics) = http_get(&server, "/metrics").await;
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("webconf_sfu_ingress_dropped_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    println!("A's flood of 12,000 datagrams in 1.5 s: {dropped} dropped unread by the SFU");
    assert!(dropped >= 1_000, "A's flood was cut at its packet rate: {dropped} dropped");

    // A hangs up: the others stop receiving it, and its m-lines go.
    drop(peers.remove(0));
    run(&mut peers, Duration::from_secs(1), &mut n).await;
    for p in &peers {
        assert!(
            !p.tracks.values().any(|(who, _)| *who == a_id),
            "{}'s tracks from A are gone: {:?}",
            p.name,
            p.tracks
        );
    }
    let before: Vec<u32> =
        vec![peers[0].frames_from(&peers[1], "camera"), peers[1].frames_from(&peers[0], "camera")];
    run(&mut peers, Duration::from_secs(1), &mut n).await;
    assert!(peers[0].frames_from(&peers[1], "camera") > before[0] + 10, "B keeps getting C");
    assert!(peers[1].frames_from(&peers[0], "camera") > before[1] + 10, "C keeps getting B");
    server.shutdown().await;
}

/// A host's mute holds in the SFU even against a client that ignores it:
/// B's str0m session keeps sending its microphone, and C stops getting it
/// at once, while B's camera and A's microphone flow on; asked to unmute,
/// B's audio flows again. Stopping B's camera works the same way.
#[tokio::test]
async fn a_host_mute_stops_forwarding_whatever_the_muted_peer_sends() {
    if !in_loopback_namespace("sfu_peers::a_host_mute_stops_forwarding_whatever_the_muted_peer_sends") {
        return;
    }
    let sfu = sfu_config("127.0.0.1:0", 4, server::sfu_io::CONNECT_DEADLINE);
    let server =
        TestServer::start(server::Config { room_capacity: 5, sfu: Some(sfu), ..server::Config::default() })
            .await;
    let (a, joined) =
        Peer::join_with(&server, json!({"type": "join", "room": "m", "name": "A", "create": true}), "A")
            .await;
    assert_eq!(joined["role"], "host");
    let (b, _) = Peer::join(&server, "m", "B").await;
    let (c, joined) = Peer::join(&server, "m", "C").await;
    assert_eq!(joined["mode"], "sfu");
    let mut peers = vec![a, b, c];
    for p in &mut peers {
        p.start_sfu().await;
    }
    let mut n = 0;
    let started = Instant::now();
    let flowing = |peers: &[Peer]| {
        peers[2].frames_from(&peers[1], "audio") > 10 && peers[2].frames_from(&peers[0], "audio") > 10
    };
    while started.elapsed() < Duration::from_secs(15) && !flowing(&peers) {
        run(&mut peers, Duration::from_millis(500), &mut n).await;
    }
    assert!(flowing(&peers), "C gets A's and B's audio: {:?}", peers[2].frames);

    let b_id = peers[1].id.clone();
    peers[0].ws.send(json!({"type": "moderate", "peer": b_id, "action": "mute"})).await;
    // Frames already on their way may still land; then nothing.
    run(&mut peers, Duration::from_millis(300), &mut n).await;
    let muted_at = [
        peers[2].frames_from(&peers[1], "audio"),
        peers[2].frames_from(&peers[1], "camera"),
        peers[2].frames_from(&peers[0], "audio"),
    ];
    run(&mut peers, Duration::from_millis(1500), &mut n).await;
    assert!(peers[1].heard.iter().any(|m| m["type"] == "moderated"), "B was told: {:?}", peers[1].heard);
    assert_eq!(peers[2].frames_from(&peers[1], "audio"), muted_at[0], "C gets none of B's held audio");
    assert!(peers[2].frames_from(&peers[1], "camera") > muted_at[1] + 10, "B's camera still flows");
    assert!(peers[2].frames_from(&peers[0], "audio") > muted_at[2] + 10, "A's audio still flows");

    peers[0].ws.send(json!({"type": "moderate", "peer": b_id, "action": "stop-video"})).await;
    run(&mut peers, Duration::from_millis(300), &mut n).await;
    let stopped_at = peers[2].frames_from(&peers[1], "camera");
    run(&mut peers, Duration::from_millis(1000), &mut n).await;
    assert_eq!(peers[2].frames_from(&peers[1], "camera"), stopped_at, "C gets none of B's stopped camera");

    peers[0].ws.send(json!({"type": "moderate", "peer": b_id, "action": "ask-unmute"})).await;
    run(&mut peers, Duration::from_millis(1500), &mut n).await;
    assert!(
        peers[2].frames_from(&peers[1], "audio") > muted_at[0] + 10,
        "asked to unmute, B's audio flows again"
    );
    let (_, metrics) = http_get(&server, "/metrics").await;
    let held = metrics
        .lines()
        .find_map(|l| l.strip_prefix("webconf_sfu_held_dropped_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    println!("frames of B's the SFU held back: {held}");
    assert!(held >= 20, "the SFU dropped B's held media: {held}");
    server.shutdown().await;
}

/// A session whose browser never connects (it got the answer, then sent
/// nothing) is ended at the connect deadline and its place freed: the
/// client hears `sfu-failed`, and the SFU holds no session for it.
#[tokio::test]
async fn a_session_that_never_connects_ends_at_its_deadline() {
    if !in_loopback_namespace("sfu_peers::a_session_that_never_connects_ends_at_its_deadline") {
        return;
    }
    let sfu = sfu_config("127.0.0.1:0", 4, Duration::from_secs(1));
    let server = TestServer::start(server::Config { sfu: Some(sfu), ..server::Config::default() }).await;
    let sessions = || async {
        let (_, text) = http_get(&server, "/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix("webconf_sfu_sessions ").map(str::to_owned))
            .unwrap_or_default()
    };
    let (mut a, _) = Peer::join(&server, "silent", "A").await;
    let started = Instant::now();
    a.start_sfu().await;
    let answer = a.ws.recv().await;
    assert_eq!(answer["description"]["type"], "answer", "{answer}");
    assert_eq!(sessions().await, "1");
    // Nothing from A's side: no ICE check, no DTLS.
    let failed = a.ws.expect_error("sfu-failed").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "ended {took:?} after the answer: {failed}"
    );
    assert!(failed["message"].as_str().unwrap_or("").contains("in time"), "{failed}");
    assert_eq!(sessions().await, "0", "the session's place is freed");
}

/// ICE-TCP connections have not authenticated anything: one address may
/// hold 16 at once; the next is closed as soon as it is accepted, and a
/// place freed is taken again. One that no session takes (junk, never an
/// ICE check) is closed at the connect deadline.
#[tokio::test]
async fn ice_tcp_connections_are_capped_per_address_and_closed_unless_a_session_takes_them() {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    if !in_loopback_namespace(
        "sfu_peers::ice_tcp_connections_are_capped_per_address_and_closed_unless_a_session_takes_them",
    ) {
        return;
    }
    // A namespace of our own: the port is free.
    let port = 7882;
    let sfu = sfu_config(&format!("127.0.0.1:{port}"), 50, Duration::from_secs(2));
    let _server = TestServer::start(server::Config { sfu: Some(sfu), ..server::Config::default() }).await;
    let still_open = |s: &TcpStream| {
        let mut buf = [0u8; 1];
        matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    };
    let closed_soon = |mut s: TcpStream| async move {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        matches!(read, Ok(Ok(0) | Err(_)))
    };
    // The SFU starts listening once the server is up.
    let started = Instant::now();
    let first = loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the SFU never listened on TCP {port}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut held = vec![first];
    for _ in 1..16 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.expect("connect"));
    }
    let extra = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    assert!(closed_soon(extra).await, "a 17th connection from one address is closed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(held.iter().all(still_open), "the 16 within the cap stay open");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(still_open(&again), "a freed place is taken again");
    // Frames that are no ICE check (an RFC 4571 frame of RTP-looking junk)
    // keep it busy, but do not keep it.
    let opened = Instant::now();
    let junk = [0u8, 4, 0x80, 0, 0, 1];
    let closed = loop {
        use tokio::io::AsyncWriteExt;
        if again.write_all(&junk).await.is_err() || !still_open(&again) {
            break opened.elapsed();
        }
        assert!(opened.elapsed() < Duration::from_secs(6), "a connection no session took is still open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(closed >= Duration::from_millis(1500), "closed at {closed:?}, before its deadline");
    println!("ICE-TCP: a connection no session took closed after {closed:?} (deadline 2 s)");
}
