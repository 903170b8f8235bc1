//! The signaling server over real WebSockets: routing, refusals, limits.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Client, TestServer, http_get};

/// Long enough for a wrongly routed message to have arrived.
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn two_peers_exchange_offer_answer_and_candidates() {
    let server = TestServer::with_defaults().await;
    let (mut a, joined_a) = Client::join(&server, "Tea-Party", "Minji").await;
    assert_eq!(joined_a["room"], "tea-party");
    assert_eq!(joined_a["peers"], json!([]));
    assert_eq!(joined_a["capacity"], 2);
    assert_eq!(joined_a["ice_servers"], json!([]));

    let (mut b, joined_b) = Client::join(&server, "tea-party", "Joon").await;
    let media = json!({"audio": true, "video": true, "screen": false});
    // Roles follow id order, so both sides agree and keep them on return.
    let b_polite = b.id > a.id;
    assert_eq!(
        joined_b["peers"],
        json!([{"id": a.id, "name": "Minji", "polite": b_polite, "media": media, "role": "guest"}])
    );
    assert_eq!(joined_b["resumed"], false);
    assert!(joined_b["resume"].as_str().is_some_and(|t| t.starts_with(&b.id)));
    let hello = a.recv().await;
    assert_eq!(
        hello,
        json!({"type": "peer-joined", "peer": {"id": b.id, "name": "Joon", "media": media, "role": "guest"}, "polite": !b_polite})
    );

    // The newcomer offers; data goes through untouched, to the named peer only.
    let offer = json!({"description": {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}});
    b.signal(&a.id, offer.clone()).await;
    assert_eq!(a.recv().await, json!({"type": "signal", "from": b.id, "data": offer}));
    let answer = json!({"description": {"type": "answer", "sdp": "v=0\r\n"}});
    a.signal(&b.id, answer.clone()).await;
    assert_eq!(b.recv().await, json!({"type": "signal", "from": a.id, "data": answer}));
    for i in 0..8 {
        let cand = json!({"candidate": {"candidate": format!("candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host", 50000 + i), "sdpMid": "0"}});
        a.signal(&b.id, cand.clone()).await;
        b.signal(&a.id, cand.clone()).await;
        assert_eq!(b.recv().await["data"], cand);
        assert_eq!(a.recv().await["data"], cand);
    }
    a.expect_silence(QUIET).await;
    b.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_third_peer_is_refused_and_the_call_is_not_disturbed() {
    let server = TestServer::with_defaults().await;
    let (mut a, _) = Client::join(&server, "duo", "A").await;
    let (mut b, _) = Client::join(&server, "duo", "B").await;
    assert_eq!(a.recv().await["type"], "peer-joined");

    let mut c = Client::connect(&server).await;
    // Before hello, nothing; after it, C can ask how full a room is
    // without joining it (its lobby then says so before any camera is on).
    c.send(json!({"type": "peek", "room": "Duo"})).await;
    c.expect_error("hello-required").await;
    c.hello().await;
    c.send(json!({"type": "peek", "room": "Duo"})).await;
    // Who is there, by name, in the order they came.
    assert_eq!(
        c.recv().await,
        json!({"type": "room-state", "room": "duo", "peers": 2, "capacity": 2, "names": ["A", "B"],
               "settings": {"locked": false, "lobby": false, "password": false}})
    );
    c.send(json!({"type": "peek", "room": "nobody-here"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "room-state", "room": "nobody-here", "peers": 0, "capacity": 2, "names": [],
               "settings": {"locked": false, "lobby": false, "password": false}})
    );
    c.send(json!({"type": "peek", "room": "no/such"})).await;
    assert_eq!(c.expect_error("bad-room").await["request"], "peek");
    // Peeking joins nothing: the others hear nothing of it.
    a.expect_silence(QUIET).await;
    c.send(json!({"type": "join", "room": "duo", "name": "C"})).await;
    let full = c.expect_error("room-full").await;
    assert_eq!(full["request"], "join");
    // C cannot reach them, and they never hear of C.
    c.signal(&a.id, json!({"sneaky": true})).await;
    c.expect_error("not-joined").await;
    a.expect_silence(QUIET).await;
    b.expect_silence(QUIET).await;
    a.signal(&b.id, json!("still here")).await;
    assert_eq!(b.recv().await["data"], "still here");
    // C's connection was kept: it can use another room.
    c.send(json!({"type": "join", "room": "solo", "name": "C"})).await;
    assert_eq!(c.recv().await["type"], "joined");
    c.send(json!({"type": "peek", "room": "duo"})).await;
    assert_eq!(c.expect_error("already-joined").await["request"], "peek");
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = TestServer::with_defaults().await;
    let (mut a, _) = Client::join(&server, "one", "A").await;
    let (mut b, _) = Client::join(&server, "one", "B").await;
    let (mut c, _) = Client::join(&server, "two", "C").await;
    let (mut d, _) = Client::join(&server, "two", "D").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    assert_eq!(c.recv().await["type"], "peer-joined");

    a.signal(&c.id, json!("across rooms")).await;
    assert_eq!(a.expect_error("unknown-peer").await["request"], "signal");
    let own = a.id.clone();
    a.signal(&own, json!("to myself")).await;
    a.expect_error("unknown-peer").await;
    a.signal("0123456789abcdef", json!("to nobody")).await;
    a.expect_error("unknown-peer").await;
    for c in [&mut b, &mut c, &mut d] {
        c.expect_silence(QUIET).await;
    }
    // Leaving is only heard in one's own room.
    drop(a);
    assert_eq!(b.recv().await["type"], "peer-left");
    c.expect_silence(QUIET).await;
    d.expect_silence(QUIET).await;
}

#[tokio::test]
async fn leaving_and_disconnecting_reach_the_other_peer() {
    let server = TestServer::with_defaults().await;
    let (mut a, _) = Client::join(&server, "room", "A").await;
    let (mut b, _) = Client::join(&server, "room", "B").await;
    assert_eq!(a.recv().await["type"], "peer-joined");

    b.send(json!({"type": "leave"})).await;
    assert_eq!(b.recv().await, json!({"type": "left", "room": "room"}));
    assert_eq!(a.recv().await, json!({"type": "peer-left", "peer": b.id, "reason": "left"}));

    // B comes back on the same connection, then its connection dies.
    b.send(json!({"type": "join", "room": "room", "name": "B"})).await;
    let joined = b.recv().await;
    assert_eq!(joined["peers"][0]["id"], json!(a.id));
    assert_eq!(joined["peers"][0]["name"], "A");
    assert_eq!(a.recv().await["type"], "peer-joined");
    let b_id = b.id.clone();
    drop(b);
    assert_eq!(a.recv().await, json!({"type": "peer-left", "peer": b_id, "reason": "disconnected"}));

    // The room is free again for two.
    let (_c, _) = Client::join(&server, "room", "C").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
}

/// Every kind of bad input gets its documented error, keeps the
/// connection, and does not disturb a call next to it.
#[tokio::test]
async fn bad_input_gets_its_documented_error_and_nothing_breaks() {
    let server = TestServer::with_defaults().await;
    let (mut a, _) = Client::join(&server, "call", "A").await;
    let (mut b, _) = Client::join(&server, "call", "B").await;
    assert_eq!(a.recv().await["type"], "peer-joined");

    let mut m = Client::connect(&server).await;
    m.send(json!({"type": "join", "room": "call"})).await;
    m.expect_error("hello-required").await;
    // Pages from before group calls (1) and before hosts (2): told to reload.
    for version in [1, 2] {
        m.send(json!({"type": "hello", "version": version})).await;
        let old = m.expect_error("unsupported-version").await;
        assert!(old["message"].as_str().is_some_and(|t| t.contains("reload")), "{old}");
    }
    m.hello().await;

    let cases: &[(&str, &str)] = &[
        ("{not json", "bad-json"),
        ("", "bad-json"),
        ("[1,2,3]", "bad-message"),
        (r#"{"no":"type"}"#, "bad-message"),
        (r#"{"type":"dance"}"#, "bad-message"),
        (r#"{"type":"join"}"#, "bad-message"),
        (r#"{"type":"join","room":"a/b"}"#, "bad-room"),
        (r#"{"type":"join","room":""}"#, "bad-room"),
        (r#"{"type":"join","room":"ok","name":"\u0007bell"}"#, "bad-name"),
        (r#"{"type":"signal","to":"0123456789abcdef","data":{}}"#, "not-joined"),
        (r#"{"type":"leave"}"#, "not-joined"),
    ];
    for (input, code) in cases {
        m.send_text(input).await;
        let err = m.expect_error(code).await;
        assert!(err["message"].is_string(), "{input}: {err}");
    }
    m.send_raw(Message::binary(vec![1, 2, 3])).await;
    m.expect_error("bad-message").await;

    // A bad join leaves it outside, free to join properly.
    m.send(json!({"type": "join", "room": "mine", "name": "M"})).await;
    assert_eq!(m.recv().await["type"], "joined");
    m.send(json!({"type": "join", "room": "mine", "name": "M"})).await;
    m.expect_error("already-joined").await;
    m.signal("0123456789abcdef", json!({})).await;
    m.expect_error("unknown-peer").await;
    m.signal(&a.id, json!({})).await;
    m.expect_error("unknown-peer").await;
    m.ping().await;

    a.expect_silence(QUIET).await;
    b.expect_silence(QUIET).await;
    a.signal(&b.id, json!({"fine": true})).await;
    assert_eq!(b.recv().await["data"], json!({"fine": true}));
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_others_carry_on() {
    let server = TestServer::with_defaults().await;
    let (mut a, _) = Client::join(&server, "big", "A").await;
    let (mut b, _) = Client::join(&server, "big", "B").await;
    assert_eq!(a.recv().await["type"], "peer-joined");

    // Just under the limit is fine.
    let fits = "x".repeat(64 * 1024 - 100);
    b.signal(&a.id, json!(fits)).await;
    assert_eq!(a.recv().await["data"].as_str().map(str::len), Some(fits.len()));

    let huge = "x".repeat(64 * 1024 + 1);
    b.signal(&a.id, json!(huge)).await;
    assert_eq!(b.expect_close().await, (1009, "message too big".to_owned()));
    assert_eq!(a.recv().await["reason"], "disconnected");
    a.ping().await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_with_a_clear_error() {
    let limits = server::Limits { rate_per_sec: 20, rate_burst: 40, ..server::Limits::default() };
    let server = TestServer::start(server::Config { limits, ..server::Config::default() }).await;
    let (mut a, _) = Client::join(&server, "flood", "A").await;
    let (mut b, _) = Client::join(&server, "flood", "B").await;
    assert_eq!(a.recv().await["type"], "peer-joined");

    for i in 0..200 {
        b.signal(&a.id, json!(i)).await;
    }
    // B hears why (once, not 160 times); A gets the burst, not the flood.
    b.expect_error("rate-limited").await;
    b.expect_silence(Duration::from_millis(200)).await;
    let mut got = Vec::new();
    while let Ok(msg) = tokio::time::timeout(QUIET, a.recv()).await {
        got.push(msg["data"].as_i64().expect("a number"));
    }
    assert!((38..=45).contains(&got.len()), "the burst of 40 less hello and join, got {}", got.len());
    assert_eq!(got, (0..got.len() as i64).collect::<Vec<_>>(), "in order, none lost in the burst");

    // After a pause the limit has refilled and B is served again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.signal(&a.id, json!("after")).await;
    assert_eq!(a.recv().await["data"], "after");
}

#[tokio::test]
async fn websocket_origin_is_checked() {
    let server = TestServer::start(server::Config {
        allowed_origins: vec!["https://meet.example.org".to_owned()],
        ..server::Config::default()
    })
    .await;
    assert_eq!(Client::connect_with(&server, Some("https://evil.example")).await.err(), Some(403));
    assert_eq!(Client::connect_with(&server, Some("null")).await.err(), Some(403));
    let own = format!("http://{}", server.addr);
    for origin in [own.as_str(), "http://localhost:3000", "https://meet.example.org"] {
        let mut c =
            Client::connect_with(&server, Some(origin)).await.unwrap_or_else(|s| panic!("{origin}: {s}"));
        c.hello().await;
    }
}

#[tokio::test]
async fn silent_peers_are_dropped_and_the_room_hears_of_it() {
    let limits = server::Limits {
        ping_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(600),
        ..server::Limits::default()
    };
    let server = TestServer::start(server::Config { limits, ..server::Config::default() }).await;
    let (mut a, _) = Client::join(&server, "live", "A").await;
    // B joins, then stops reading: its client never answers pings again.
    let (b, _) = Client::join(&server, "live", "B").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    let started = std::time::Instant::now();
    // A keeps answering pings (recv does) and stays.
    let left = a.recv().await;
    assert_eq!(left, json!({"type": "peer-left", "peer": b.id, "reason": "disconnected"}));
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(3), "dropped after {waited:?}");
    a.ping().await;
    drop(b);
}

/// Issue 10, finding 2: a WebSocket that never said `hello` stayed forever
/// by answering pings. It is closed at its deadline; one that said hello
/// may sit in the lobby past it, and join.
#[tokio::test]
async fn a_socket_that_never_says_hello_is_closed_but_the_lobby_is_kept() {
    let limits = server::Limits {
        hello_timeout: Duration::from_millis(500),
        ping_interval: Duration::from_millis(100),
        ..server::Limits::default()
    };
    let server = TestServer::start(server::Config { limits, ..server::Config::default() }).await;
    let started = std::time::Instant::now();
    let mut silent = Client::connect(&server).await;
    let mut lobby = Client::connect(&server).await;
    lobby.hello().await;
    // The silent one answers every ping (the client library does), and is
    // closed all the same.
    assert_eq!(silent.expect_close().await, (1008, "no hello".to_owned()));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    lobby.expect_silence(Duration::from_millis(800)).await;
    lobby.send(json!({"type": "join", "room": "late", "name": "L"})).await;
    assert_eq!(lobby.recv().await["type"], "joined");
    drop(silent);
    // Counted once the close handshake is over.
    let counted = "webconf_connections_closed_total{reason=\"timeout\"} 1";
    let mut metrics = String::new();
    for _ in 0..30 {
        metrics = http_get(&server, "/metrics").await.1;
        if metrics.lines().any(|l| l == counted) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{counted} not in {metrics}");
}

#[tokio::test]
async fn a_reader_that_stalls_is_dropped_without_slowing_others() {
    let limits = server::Limits {
        rate_per_sec: 0,
        outbound_queue_bytes: 16 * 60 * 1024,
        write_timeout: Duration::from_secs(2),
        ..server::Limits::default()
    };
    let server = TestServer::start(server::Config { limits, ..server::Config::default() }).await;
    let (stalled, _) = Client::join(&server, "slow", "Stalled").await;
    let (mut sender, _) = Client::join(&server, "slow", "Sender").await;
    let (mut c, _) = Client::join(&server, "fast", "C").await;
    let (mut d, _) = Client::join(&server, "fast", "D").await;
    assert_eq!(c.recv().await["type"], "peer-joined");

    // Fill the stalled peer's socket buffers and then its queue.
    let blob = "y".repeat(60 * 1024);
    let started = std::time::Instant::now();
    let mut sent = 0;
    let left = loop {
        sender.signal(&stalled.id, json!(blob)).await;
        sent += 1;
        if let Ok(msg) = tokio::time::timeout(Duration::from_millis(1), sender.recv()).await {
            break msg;
        }
        assert!(sent < 5000, "the stalled peer was never dropped");
        // Meanwhile another room is served promptly.
        if sent % 50 == 0 {
            c.signal(&d.id, json!(sent)).await;
            assert_eq!(d.recv().await["data"], sent);
        }
    };
    assert_eq!(left, json!({"type": "peer-left", "peer": stalled.id, "reason": "disconnected"}));
    assert!(started.elapsed() < Duration::from_secs(10));
    // Signals still in flight to the dropped peer are refused, then the
    // sender is served as before.
    sender.send(json!({"type": "ping"})).await;
    loop {
        let msg = sender.recv().await;
        if msg["type"] == "pong" {
            break;
        }
        assert_eq!(msg["code"], "unknown-peer", "{msg}");
    }
    drop(stalled);
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_a_reason() {
    let server = TestServer::with_defaults().await;
    let (mut a, _) = Client::join(&server, "bye", "A").await;
    let mut lobby = Client::connect(&server).await;
    lobby.hello().await;
    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(a.expect_close().await, (1001, "server shutting down".to_owned()));
    assert_eq!(lobby.expect_close().await, (1001, "server shutting down".to_owned()));
    tokio::time::timeout(Duration::from_secs(5), stopping).await.expect("serve returns").expect("no panic");
}

/// The real binary on SIGTERM: every peer gets 1001 with a reason, and the
/// process exits successfully.
#[tokio::test]
async fn the_binary_shuts_down_gracefully_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_webconf"))
        .args(["--listen", "127.0.0.1:0", "--log", "warn"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start webconf");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("announcement");
    let url =
        line.split_whitespace().find(|w| w.starts_with("http://")).expect("a URL").trim_end_matches('/');
    let ws = format!("{}/ws", url.replacen("http://", "ws://", 1));
    let addr = url.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut peer = Client::handshake(ws.as_str(), Box::new(tcp)).await.expect("upgrade");
    peer.hello().await;

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    assert_eq!(peer.expect_close().await, (1001, "server shutting down".to_owned()));
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert!(exit.success(), "webconf exited with {exit}");
}

#[tokio::test]
async fn chat_reaches_the_room_only_with_history_for_late_joiners() {
    let server = TestServer::with_defaults().await;
    let (mut a, joined) = Client::join(&server, "chatty", "Minji").await;
    assert_eq!(joined["chat"], json!([]));
    let (mut other, _) = Client::join(&server, "elsewhere", "Eve").await;

    // Text is relayed as it is: markup stays text for the client to show.
    let evil = "<script>alert('x')</script> & <b>bold</b>";
    a.send(json!({"type": "chat", "text": evil})).await;
    let echo = a.recv().await;
    assert_eq!(echo["type"], "chat");
    assert_eq!(
        (echo["from"].as_str(), echo["name"].as_str(), echo["text"].as_str()),
        (Some(a.id.as_str()), Some("Minji"), Some(evil))
    );
    let ts = echo["ts"].as_u64().expect("server timestamp");
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    assert!(now_ms.abs_diff(ts) < 5_000, "ts {ts} is the server's clock");
    a.send(json!({"type": "chat", "text": "second"})).await;
    assert_eq!(a.recv().await["text"], "second");

    // A late joiner gets the history, in order; the other room hears nothing.
    let (mut b, joined) = Client::join(&server, "chatty", "Joon").await;
    let texts: Vec<&str> =
        joined["chat"].as_array().expect("chat").iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, [evil, "second"]);
    assert_eq!(a.recv().await["type"], "peer-joined");
    b.send(json!({"type": "chat", "text": "hi all"})).await;
    assert_eq!(a.recv().await["text"], "hi all");
    assert_eq!(b.recv().await["text"], "hi all");
    other.expect_silence(QUIET).await;

    // Limits, with the connection kept.
    b.send(json!({"type": "chat", "text": "x".repeat(1001)})).await;
    assert_eq!(b.expect_error("bad-chat").await["request"], "chat");
    b.send(json!({"type": "chat", "text": "  "})).await;
    b.expect_error("bad-chat").await;
    a.expect_silence(QUIET).await;
    let mut lobby = Client::connect(&server).await;
    lobby.hello().await;
    lobby.send(json!({"type": "chat", "text": "hello?"})).await;
    lobby.expect_error("not-joined").await;
}

/// A chat message's id (issue 14) comes back with it to everyone, and
/// stays with it in the history, so a sender back after a dropped
/// connection can tell it arrived and receivers can drop a second copy.
#[tokio::test]
async fn chat_ids_come_back_with_their_messages_and_in_the_history() {
    let server = TestServer::start(server::Config { room_capacity: 3, ..server::Config::default() }).await;
    let (mut a, _) = Client::join(&server, "ids", "A").await;
    let (mut b, _) = Client::join(&server, "ids", "B").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    a.send(json!({"type": "chat", "text": "one", "id": "q3Zt9xKd0b1w7LmA"})).await;
    for peer in [&mut a, &mut b] {
        let msg = peer.recv().await;
        assert_eq!((msg["text"].as_str(), msg["id"].as_str()), (Some("one"), Some("q3Zt9xKd0b1w7LmA")));
    }
    // Sent again (the sender could not know it arrived): passed on as it
    // is; receivers show one of the two.
    a.send(json!({"type": "chat", "text": "one", "id": "q3Zt9xKd0b1w7LmA"})).await;
    assert_eq!(b.recv().await["id"], "q3Zt9xKd0b1w7LmA");
    assert_eq!(a.recv().await["id"], "q3Zt9xKd0b1w7LmA");
    a.send(json!({"type": "chat", "text": "no id"})).await;
    assert_eq!(b.recv().await.get("id"), None, "no id given, none made up");
    assert_eq!(a.recv().await["text"], "no id");
    let (_c, joined) = Client::join(&server, "ids", "C").await;
    let history: Vec<(Option<&str>, Option<&str>)> = joined["chat"]
        .as_array()
        .expect("chat")
        .iter()
        .map(|m| (m["text"].as_str(), m["id"].as_str()))
        .collect();
    assert_eq!(
        history,
        [
            (Some("one"), Some("q3Zt9xKd0b1w7LmA")),
            (Some("one"), Some("q3Zt9xKd0b1w7LmA")),
            (Some("no id"), None)
        ]
    );
    assert_eq!(a.recv().await["type"], "peer-joined");
    assert_eq!(b.recv().await["type"], "peer-joined");
    for bad in [json!(""), json!("has space"), json!("x".repeat(65)), json!(7)] {
        a.send(json!({"type": "chat", "text": "hi", "id": bad})).await;
        let err = a.recv().await;
        assert_eq!(err["type"], "error", "{bad}: {err}");
        assert!(matches!(err["code"].as_str(), Some("bad-chat" | "bad-message")), "{bad}: {err}");
    }
    b.expect_silence(QUIET).await;
}

/// A server listening on every interface with no public address names, in
/// `joined.ice_servers`, the address each connection reached it at (issue
/// 14): here loopback, where the configured fallback would be another.
#[tokio::test]
async fn ice_servers_name_the_address_each_connection_reached() {
    let turn = server::TurnCredentials {
        urls: server::builtin_ice_urls("198.51.100.1", 3478),
        secret: b"s".to_vec(),
        ttl: Duration::from_secs(60),
    };
    let ice = server::IceConfig { servers: Vec::new(), turn: Some(turn), per_connection_port: Some(3478) };
    let server = TestServer::start(server::Config { ice: ice.clone(), ..server::Config::default() }).await;
    let (_a, joined) = Client::join(&server, "ice", "A").await;
    let urls: Vec<&str> = joined["ice_servers"]
        .as_array()
        .expect("ice servers")
        .iter()
        .flat_map(|s| s["urls"].as_array().expect("urls").iter().filter_map(|u| u.as_str()))
        .collect();
    assert_eq!(
        urls,
        ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
    );
    assert!(joined["ice_servers"][1]["credential"].is_string());
    // Behind a proxy our end faces the proxy: the configured address it is.
    let proxied =
        TestServer::start(server::Config { ice, trust_proxy: true, ..server::Config::default() }).await;
    let (_b, joined) = Client::join(&proxied, "ice", "B").await;
    assert_eq!(joined["ice_servers"][0]["urls"][0], "stun:198.51.100.1:3478");
}

/// `http://` typed for the HTTPS port (issue 14): a redirect to `https://`
/// on the same port and path, not TLS bytes a browser shows as garbage;
/// TLS on that port is unchanged, and bytes that are neither are dropped.
#[tokio::test]
async fn plain_http_on_the_tls_port_redirects_to_https_there() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (server, cert, dir) = crate::support::tls_test_server("tls-redirect").await;
    let port = server.addr.port();
    let response = crate::support::raw_http(
        server.addr,
        &format!("GET /r/tea?x=1 HTTP/1.1\r\nHost: 192.168.1.5:{port}\r\n\r\n"),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    let location = format!("location: https://192.168.1.5:{port}/r/tea?x=1");
    assert!(response.to_ascii_lowercase().contains(&location), "{response}");

    // TLS still works on that port.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.expect("tcp");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut stream = crate::support::tls_connector(cert)
        .connect(name, tcp)
        .await
        .expect("a TLS handshake on the same port");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut page = String::new();
    stream.read_to_string(&mut page).await.expect("read");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");

    // Neither TLS nor HTTP: closed without an answer.
    let mut junk = tokio::net::TcpStream::connect(server.addr).await.expect("tcp");
    junk.write_all(&[0, 1, 2, 3]).await.expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), junk.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {rest:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn chat_history_is_bounded() {
    let server = TestServer::start(server::Config { chat_history: 5, ..server::Config::default() }).await;
    let (mut a, _) = Client::join(&server, "many", "A").await;
    for i in 0..12 {
        a.send(json!({"type": "chat", "text": format!("m{i}")})).await;
        assert_eq!(a.recv().await["text"], format!("m{i}"));
    }
    let (_b, joined) = Client::join(&server, "many", "B").await;
    let texts: Vec<&str> =
        joined["chat"].as_array().expect("chat").iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["m7", "m8", "m9", "m10", "m11"]);
}

#[tokio::test]
async fn media_state_reaches_the_room_and_newcomers() {
    let server = TestServer::start(server::Config { room_capacity: 3, ..server::Config::default() }).await;
    let (mut a, _) = Client::join_with(
        &server,
        json!({"type": "join", "room": "m", "name": "A", "media": {"video": false}}),
    )
    .await;
    let (mut b, joined) = Client::join(&server, "m", "B").await;
    assert_eq!(joined["peers"][0]["media"], json!({"audio": true, "video": false, "screen": false}));
    assert_eq!(a.recv().await["type"], "peer-joined");
    a.send(json!({"type": "media", "audio": false})).await;
    assert_eq!(
        b.recv().await,
        json!({"type": "peer-media", "peer": a.id, "media": {"audio": false, "video": false, "screen": false}})
    );
    a.expect_silence(QUIET).await;
    let (_c, joined) = Client::join(&server, "m", "C").await;
    assert_eq!(joined["peers"][0]["media"], json!({"audio": false, "video": false, "screen": false}));
    assert_eq!(a.recv().await["type"], "peer-joined");
    a.send(json!({"type": "media", "video": "yes"})).await;
    a.expect_error("bad-message").await;
}

/// Resume tokens: the same id comes back, only in its own room, the token
/// cannot be bent to another id, and expired ones are refused.
#[tokio::test]
async fn a_resume_token_brings_back_the_same_peer_and_nothing_else() {
    let server = TestServer::with_defaults().await;
    let (mut a, _) = Client::join(&server, "resume", "A").await;
    let (b, joined_b) = Client::join(&server, "resume", "B").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    let token = joined_b["resume"].as_str().expect("token").to_owned();
    let b_id = b.id.clone();

    // B's connection drops; it comes back with its token, same id.
    drop(b);
    assert_eq!(a.recv().await, json!({"type": "peer-left", "peer": b_id, "reason": "disconnected"}));
    let (mut b, joined) =
        Client::join_with(&server, json!({"type": "join", "room": "resume", "name": "B", "resume": token}))
            .await;
    assert_eq!(joined["you"], json!(b_id));
    assert_eq!(joined["resumed"], true);
    let back = a.recv().await;
    assert_eq!(
        (back["type"].as_str(), back["peer"]["id"].as_str()),
        (Some("peer-joined"), Some(b_id.as_str()))
    );
    // Pongs carry fresh tokens for the same id.
    let pong = b.ping().await;
    let fresh = pong["resume"].as_str().expect("a fresh token").to_owned();
    assert!(fresh.starts_with(&b_id));

    // Not in another room.
    let mut elsewhere = Client::connect(&server).await;
    elsewhere.hello().await;
    elsewhere.send(json!({"type": "join", "room": "other", "name": "B", "resume": fresh})).await;
    let err = elsewhere.expect_error("bad-resume").await;
    assert_eq!(err["request"], "join");
    // Not as another peer: the id in the token is signed.
    let forged = format!("{}{}", a.id, &fresh[16..]);
    elsewhere.send(json!({"type": "join", "room": "resume", "name": "A", "resume": forged})).await;
    elsewhere.expect_error("bad-resume").await;
    elsewhere.send(json!({"type": "join", "room": "resume", "name": "X", "resume": "garbage"})).await;
    elsewhere.expect_error("bad-resume").await;

    // A second connection resuming B replaces the first, which is told why.
    let (_b2, joined) =
        Client::join_with(&server, json!({"type": "join", "room": "resume", "name": "B", "resume": fresh}))
            .await;
    assert_eq!(joined["you"], json!(b_id));
    assert_eq!(b.expect_close().await, (4000, "replaced by a newer connection".to_owned()));
    let left = a.recv().await;
    assert_eq!((left["type"].as_str(), left["peer"].as_str()), (Some("peer-left"), Some(b_id.as_str())));
    assert_eq!(a.recv().await["type"], "peer-joined");
    // The old connection's end does not take the new one out of the room.
    a.expect_silence(QUIET).await;
    a.signal(&b_id, json!("to the new B")).await;
    a.expect_silence(QUIET).await;
}

#[tokio::test]
async fn expired_resume_tokens_are_refused() {
    let server =
        TestServer::start(server::Config { resume_ttl: Duration::from_secs(1), ..server::Config::default() })
            .await;
    let (_a, joined) = Client::join(&server, "short", "A").await;
    let token = joined["resume"].as_str().expect("token").to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut late = Client::connect(&server).await;
    late.hello().await;
    late.send(json!({"type": "join", "room": "short", "name": "A", "resume": token})).await;
    let err = late.expect_error("bad-resume").await;
    assert!(err["message"].as_str().is_some_and(|m| m.contains("expired")), "{err}");
}

#[tokio::test]
async fn connections_are_capped_in_all_and_per_address_with_a_reason() {
    let limits =
        server::Limits { max_connections: 3, max_connections_per_ip: 2, ..server::Limits::default() };
    let server = TestServer::start(server::Config { limits, ..server::Config::default() }).await;
    let mut first = Client::connect(&server).await;
    first.hello().await;
    let mut second = Client::connect(&server).await;
    second.hello().await;
    // A third from 127.0.0.1 is over the per-address cap, and told so.
    let mut third = Client::connect(&server).await;
    assert_eq!(third.expect_close().await, (1013, "too many connections from your address".to_owned()));
    // Another loopback address is another address, until the server is full.
    let mut other = Client::connect_from(&server, "127.0.0.2").await;
    other.hello().await;
    let mut fourth = Client::connect_from(&server, "127.0.0.3").await;
    assert_eq!(fourth.expect_close().await, (1013, "server full".to_owned()));
    // A place comes free when a connection ends.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = Client::connect(&server).await;
    again.hello().await;
    second.ping().await;
    let (_, metrics) = http_get(&server, "/metrics").await;
    assert!(metrics.contains("webconf_connections_refused_total{reason=\"address_full\"} 1"), "{metrics}");
    assert!(metrics.contains("webconf_connections_refused_total{reason=\"server_full\"} 1"), "{metrics}");
}

#[tokio::test]
async fn health_readiness_and_metrics_report_what_happened() {
    let server = TestServer::with_defaults().await;
    assert_eq!(http_get(&server, "/healthz").await, (200, "ok\n".to_owned()));
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr);
    let plain = crate::support::raw_http(server.addr, &request).await;
    assert!(!plain.to_ascii_lowercase().contains("strict-transport-security"), "no HSTS over plain HTTP");
    assert_eq!(http_get(&server, "/readyz").await, (200, "ready\n".to_owned()));
    let (mut a, _) = Client::join(&server, "metered", "A").await;
    let (mut b, _) = Client::join(&server, "metered", "B").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    for _ in 0..5 {
        a.signal(&b.id, json!("x")).await;
        b.recv().await;
    }
    a.send(json!({"type": "chat", "text": "hi"})).await;
    a.recv().await;
    b.recv().await;
    a.send_text("{oops").await;
    a.expect_error("bad-json").await;
    a.signal("0123456789abcdef", json!(1)).await;
    a.expect_error("unknown-peer").await;
    let (status, text) = http_get(&server, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "webconf_connections_open 2",
        "webconf_rooms 1",
        "webconf_members 2",
        "webconf_signals_relayed_total 5",
        "webconf_chat_messages_total 1",
        "webconf_errors_total{code=\"bad-json\"} 1",
        "webconf_errors_total{code=\"unknown-peer\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    drop(b);
    assert_eq!(a.recv().await["type"], "peer-left");
    let (_, text) = http_get(&server, "/metrics").await;
    assert!(text.lines().any(|l| l == "webconf_members 1"), "{text}");
    assert!(text.lines().any(|l| l == "webconf_connections_closed_total{reason=\"peer\"} 1"), "{text}");
}

/// HTTPS and WSS with a certificate from PEM files: a client that trusts
/// exactly that certificate loads the page and joins a call over TLS.
#[tokio::test]
async fn serves_https_and_wss_from_pem_files() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (server, cert, dir) = crate::support::tls_test_server("tls").await;
    let connector = crate::support::tls_connector(cert);
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(server.addr).await.expect("tcp");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        connector.connect(name, tcp).await.expect("a TLS handshake with the certificate we trust")
    };

    // The page, over HTTPS.
    let mut stream = connect().await;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut page = String::new();
    stream.read_to_string(&mut page).await.expect("read");
    assert!(page.starts_with("HTTP/1.1 200"), "{}", &page[..page.len().min(200)]);
    assert!(page.contains("webconf"));
    // Issue 10, finding 9: HSTS over TLS (and only there).
    let head = page.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
    assert!(head.contains("strict-transport-security: max-age=31536000"), "{head}");

    // A call, over WSS.
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let mut a = Client::handshake(url.as_str(), Box::new(connect().await)).await.expect("wss upgrade");
    a.hello().await;
    a.send(json!({"type": "join", "room": "secure", "name": "A"})).await;
    assert_eq!(a.recv().await["type"], "joined");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn plain_http_redirects_to_https() {
    let listener = server::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve_redirect(listener, 8443, async move {
        let _ = stopped.await;
    }));
    let response = crate::support::raw_http(
        addr,
        "GET /r/tea?x=1 HTTP/1.1\r\nHost: meet.example:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("location: https://meet.example:8443/r/tea?x=1"),
        "{response}"
    );
    let response =
        crate::support::raw_http(addr, "GET / HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n").await;
    assert!(response.to_ascii_lowercase().contains("location: https://[::1]:8443/"), "{response}");
    let _ = stop.send(());
}

/// Behind a trusted proxy the per-address cap counts the forwarded client
/// address, and the origin check uses the forwarded host.
#[tokio::test]
async fn behind_a_trusted_proxy_forwarded_headers_count() {
    let limits = server::Limits { max_connections_per_ip: 1, ..server::Limits::default() };
    let server =
        TestServer::start(server::Config { limits, trust_proxy: true, ..server::Config::default() }).await;
    let request = |client: &str| {
        let mut r = server.url().into_client_request().expect("request");
        let h = r.headers_mut();
        h.insert("x-forwarded-for", format!("198.51.100.7, {client}").parse().expect("value"));
        h.insert("x-forwarded-host", "meet.example.org".parse().expect("value"));
        h.insert("origin", "https://meet.example.org".parse().expect("value"));
        r
    };
    let tcp = || async { Box::new(tokio::net::TcpStream::connect(server.addr).await.expect("tcp")) };
    let mut one =
        Client::handshake(request("203.0.113.1"), tcp().await).await.expect("the public origin passes");
    one.hello().await;
    let mut two = Client::handshake(request("203.0.113.2"), tcp().await).await.expect("another client");
    two.hello().await;
    let mut again = Client::handshake(request("203.0.113.1"), tcp().await).await.expect("upgraded");
    assert_eq!(again.expect_close().await.0, 1013, "the same client address is capped, not the proxy's");
}

/// A WebSocket spoken byte by byte, to send what no well-behaved client
/// library would.
struct RawWs(tokio::net::TcpStream);

impl RawWs {
    async fn open(server: &TestServer) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            server.addr
        );
        tcp.write_all(request.as_bytes()).await.expect("write");
        // Byte by byte up to the blank line, so no frame is read with it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.expect("response"));
        }
        let head = String::from_utf8(head).expect("ascii");
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        RawWs(tcp)
    }

    /// Sends one frame, masked unless `masked` is false.
    async fn frame(&mut self, b0: u8, payload: &[u8], masked: bool) {
        use tokio::io::AsyncWriteExt;
        let out = Self::encode(b0, payload, masked);
        self.0.write_all(&out).await.expect("write frame");
    }

    /// Sends these text messages in one write, as a pipelining client may.
    async fn texts_at_once(&mut self, texts: &[&str]) {
        use tokio::io::AsyncWriteExt;
        let out: Vec<u8> = texts.iter().flat_map(|t| Self::encode(0x81, t.as_bytes(), true)).collect();
        self.0.write_all(&out).await.expect("write frames");
    }

    async fn read_json(&mut self) -> serde_json::Value {
        let (b0, payload) = self.read().await;
        assert_eq!(b0, 0x81, "a text frame");
        serde_json::from_slice(&payload).expect("json")
    }

    fn encode(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mask = [0xA1, 0x5B, 0x07, 0xE2];
        let mut out = vec![b0];
        let flag = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(flag | n as u8),
            n => {
                out.push(flag | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    /// Reads one server frame: its first byte and payload.
    async fn read(&mut self) -> (u8, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let read = async {
            let b0 = self.0.read_u8().await?;
            let len = match self.0.read_u8().await? {
                126 => usize::from(self.0.read_u16().await?),
                127 => self.0.read_u64().await? as usize,
                n => usize::from(n),
            };
            let mut payload = vec![0; len];
            self.0.read_exact(&mut payload).await?;
            Ok::<_, std::io::Error>((b0, payload))
        };
        tokio::time::timeout(Duration::from_secs(5), read).await.expect("a frame in time").expect("a frame")
    }

    /// Expects a close frame with `code`, then the end of the stream.
    async fn expect_close(&mut self, code: u16) -> String {
        use tokio::io::AsyncReadExt;
        let (b0, payload) = self.read().await;
        assert_eq!(b0, 0x88, "a close frame");
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
        // Answer it, as a client would; the server then hangs up.
        self.frame(0x88, &payload[..2], true).await;
        let mut rest = Vec::new();
        let eof = tokio::time::timeout(Duration::from_secs(5), self.0.read_to_end(&mut rest)).await;
        assert!(matches!(eof, Ok(Ok(0))), "the server hangs up after closing: {eof:?} {rest:?}");
        String::from_utf8(payload[2..].to_vec()).expect("a UTF-8 reason")
    }
}

#[tokio::test]
async fn websocket_framing_is_checked_to_the_letter() {
    let server = TestServer::with_defaults().await;

    // Fragments, with a ping between them, make one message; the ping is
    // answered with its payload.
    let mut ws = RawWs::open(&server).await;
    let hello = br#"{"type":"hello","version":3}"#;
    ws.frame(0x01, &hello[..5], true).await;
    ws.frame(0x89, b"are you there", true).await;
    ws.frame(0x00, &hello[5..20], true).await;
    ws.frame(0x80, &hello[20..], true).await;
    assert_eq!(ws.read().await, (0x8A, b"are you there".to_vec()));
    let (b0, welcome) = ws.read().await;
    assert_eq!(b0, 0x81);
    let welcome: serde_json::Value = serde_json::from_slice(&welcome).expect("json");
    assert_eq!(welcome["type"], "welcome");
    // A close is answered with the same code, and the server hangs up.
    ws.frame(0x88, &[0x0F, 0xA0, b'b', b'y', b'e'], true).await;
    assert_eq!(ws.read().await, (0x88, vec![0x0F, 0xA0]));

    // Messages sent back to back in one write, a join among them: what
    // follows the join is handled once the join is answered.
    let mut ws = RawWs::open(&server).await;
    let hello = r#"{"type":"hello","version":3}"#;
    let join = r#"{"type":"join","room":"pipelined","name":"P"}"#;
    let chat = r#"{"type":"chat","text":"right after joining"}"#;
    let ping = r#"{"type":"ping"}"#;
    ws.texts_at_once(&[hello, join, chat, ping]).await;
    let kinds: Vec<serde_json::Value> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(ws.read_json().await["type"].clone());
        }
        v
    };
    // The chat comes back through the room's shard, the pong straight
    // from the connection: either may come first.
    assert_eq!(kinds[..2], [json!("welcome"), json!("joined")]);
    let mut last = [kinds[2].to_string(), kinds[3].to_string()];
    last.sort();
    assert_eq!(last, ["\"chat\"", "\"pong\""]);
    let hello = hello.as_bytes();

    // Each broken stream is closed with the code RFC 6455 gives it.
    let mut ws = RawWs::open(&server).await;
    ws.frame(0x81, hello, false).await;
    assert_eq!(ws.expect_close(1002).await, "client frames must be masked");
    let mut ws = RawWs::open(&server).await;
    ws.frame(0x81, b"{\"type\":\"hello\xff", true).await;
    assert_eq!(ws.expect_close(1007).await, "text is not UTF-8");
    let mut ws = RawWs::open(&server).await;
    ws.frame(0xC1, hello, true).await;
    assert_eq!(ws.expect_close(1002).await, "reserved bits set");
    let mut ws = RawWs::open(&server).await;
    ws.frame(0x80, hello, true).await;
    assert_eq!(ws.expect_close(1002).await, "continuation without a message");
    // Over the limit is refused from the header alone.
    let mut ws = RawWs::open(&server).await;
    {
        use tokio::io::AsyncWriteExt;
        ws.0.write_all(&[0x81, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0]).await.expect("write");
    }
    assert_eq!(ws.expect_close(1009).await, "message too big");

    // Not a WebSocket handshake at all: 426, saying what would be.
    let request = format!("GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr);
    let response = crate::support::raw_http(server.addr, &request).await;
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(response.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{response}");

    let (_, metrics) = http_get(&server, "/metrics").await;
    assert!(
        metrics.lines().any(|l| l == "webconf_connections_closed_total{reason=\"bad_frame\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "webconf_connections_closed_total{reason=\"too_big\"} 1"),
        "{metrics}"
    );
}

/// Issue 10, finding 8: a resume token was bound to its room in name only.
/// A token for room X, used while its peer sits in room Y, took the peer's
/// seat in Y (its connection was replaced, Y heard it leave). Now a seat is
/// taken over only by a token for that very room, and a refused resume
/// leaves the connection with its own id.
#[tokio::test]
async fn a_resume_token_takes_back_a_seat_in_its_own_room_only() {
    let server =
        TestServer::start(server::Config { shards: 1, room_capacity: 3, ..server::Config::default() }).await;
    let (mut a, joined_x) = Client::join(&server, "x", "A").await;
    let token_x = joined_x["resume"].as_str().expect("a resume token").to_owned();
    a.send(json!({"type": "leave"})).await;
    assert_eq!(a.recv().await["type"], "left");
    a.send(json!({"type": "join", "room": "y", "name": "A"})).await;
    assert_eq!(a.recv().await["you"], a.id.as_str());
    let (mut b, _) = Client::join(&server, "y", "B").await;
    assert_eq!(a.recv().await["type"], "peer-joined");

    let mut other = Client::connect(&server).await;
    other.hello().await;
    other.send(json!({"type": "join", "room": "x", "name": "T", "resume": token_x})).await;
    other.expect_error("bad-resume").await;
    a.expect_silence(QUIET).await;
    b.expect_silence(QUIET).await;
    b.signal(&a.id, json!("still you?")).await;
    assert_eq!(a.recv().await["data"], "still you?");

    // Refused, the connection is back to its own id: joining Y without a
    // token makes a newcomer there, not A.
    other.send(json!({"type": "join", "room": "y", "name": "T"})).await;
    let joined = other.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_ne!(joined["you"], a.id.as_str());
    assert_eq!(a.recv().await["type"], "peer-joined");
    a.ping().await;
}

/// A chat flood from one member reaches the room only up to that member's
/// budget (50 at once, then 5 a second): the rest is refused to the
/// flooder with `rate-limited`, and the others still chat.
#[tokio::test]
async fn a_chat_flood_is_refused_past_the_members_budget() {
    let server = TestServer::with_defaults().await;
    let (mut flooder, _) = Client::join(&server, "flood", "F").await;
    let (mut other, _) = Client::join(&server, "flood", "O").await;
    assert_eq!(flooder.recv().await["type"], "peer-joined");
    for i in 0..80 {
        flooder.send(json!({"type": "chat", "text": format!("spam {i}")})).await;
    }
    let (mut delivered, mut refused) = (0, 0);
    while delivered + refused < 80 {
        let m = flooder.recv().await;
        match m["type"].as_str() {
            Some("chat") => delivered += 1,
            Some("error") => {
                assert_eq!((m["code"].as_str(), m["request"].as_str()), (Some("rate-limited"), Some("chat")));
                refused += 1;
            }
            _ => panic!("unexpected {m}"),
        }
    }
    assert!((50..=52).contains(&delivered), "the burst, and what the rate earned meanwhile: {delivered}");
    for _ in 0..delivered {
        assert_eq!(other.recv().await["type"], "chat");
    }
    other.send(json!({"type": "chat", "text": "still here"})).await;
    assert_eq!(other.recv().await["text"], "still here");
    assert_eq!(flooder.recv().await["text"], "still here");
}
