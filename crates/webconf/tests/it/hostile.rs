//! Issue 10: one hostile client must never hurt anyone else. Raw TCP
//! connections nobody is known on yet are capped per address at accept
//! time and must say something within a deadline; others keep `/healthz`,
//! joining and their calls. All load is on 127.0.0.1, bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{Client, PATIENCE, TestServer, http_get};

/// Connects to `addr` from the local address `source`.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{source}:0").parse().expect("source")).expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// Whether the server closed `stream` within `wait` (end of stream or a
/// reset), reading and discarding anything it sent first.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// `/healthz` from `source`.
async fn healthz_from(source: &str, addr: SocketAddr) -> String {
    let mut stream = connect_from(source, addr).await;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("/healthz in time")
        .expect("read");
    response
}

/// Finding 2: a few thousand idle sockets from one address took every file
/// descriptor. Past its cap, an address's new connections are closed at
/// once; others (and its own WebSocket, already joined) are not touched.
#[tokio::test]
async fn idle_sockets_from_one_address_leave_others_healthz_and_joins() {
    let cap = 8;
    let limits = server::Limits { max_http_connections_per_ip: cap, ..server::Limits::default() };
    let server = TestServer::start(server::Config { limits, ..server::Config::default() }).await;
    // A call in progress, one end on the attacker's own address.
    let (mut a, _) = Client::join(&server, "call", "A").await;
    let mut b = Client::connect_from(&server, "127.0.0.2").await;
    b.hello().await;
    b.send(json!({"type": "join", "room": "call", "name": "B"})).await;
    let joined = b.recv().await;
    b.id = joined["you"].as_str().expect("you").to_owned();
    assert_eq!(a.recv().await["type"], "peer-joined");

    let mut idle = Vec::new();
    for _ in 0..3 * cap {
        idle.push(connect_from("127.0.0.1", server.addr).await);
    }
    let mut refused = 0;
    for stream in &mut idle {
        if closed_within(stream, Duration::from_millis(200)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, 2 * cap, "all but {cap} idle sockets refused at once");

    let health = healthz_from("127.0.0.3", server.addr).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let mut c = Client::connect_from(&server, "127.0.0.3").await;
    c.hello().await;
    c.send(json!({"type": "join", "room": "other", "name": "C"})).await;
    assert_eq!(c.recv().await["type"], "joined", "a new user joins");
    a.signal(&b.id, json!("still here")).await;
    assert_eq!(b.recv().await["data"], "still here", "the call goes on");

    // Once the idle ones go, the address may connect again.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health = healthz_from("127.0.0.1", server.addr).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let (_, metrics) = http_get(&server, "/metrics").await;
    let line = format!("webconf_tcp_shed_total{{listener=\"http\",reason=\"address_full\"}} {}", 2 * cap);
    assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
}

/// The abuse bench (BENCHMARKS.md, "Abuse"): idle sockets from many
/// addresses, each under its own cap, filled the cap in all, and from then
/// on `/healthz` and newcomers were refused like the attackers. Past the
/// cap, an address holding nothing still gets one of a few places kept
/// for newcomers (an eighth of the cap); the attackers' addresses, which
/// hold some, do not.
#[tokio::test]
async fn idle_sockets_from_many_addresses_leave_room_for_healthz_and_newcomers() {
    let (per_address, total) = (8, 16);
    let limits = server::Limits {
        max_http_connections_per_ip: per_address,
        max_http_connections: total,
        ..server::Limits::default()
    };
    let server = TestServer::start(server::Config { limits, ..server::Config::default() }).await;
    // Four attacking addresses, in turn, each under its own cap: twice the
    // cap in all.
    let mut idle = Vec::new();
    for _ in 0..per_address {
        for k in 1..=4 {
            idle.push(connect_from(&format!("127.0.9.{k}"), server.addr).await);
        }
    }
    let mut refused = 0;
    for stream in &mut idle {
        if closed_within(stream, Duration::from_millis(100)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, idle.len() - total, "all past the cap in all refused");
    // Someone new: a health check, then a person who joins.
    let health = healthz_from("127.0.8.1", server.addr).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let mut c = Client::connect_from(&server, "127.0.8.2").await;
    c.hello().await;
    c.send(json!({"type": "join", "room": "newcomer", "name": "C"})).await;
    assert_eq!(c.recv().await["type"], "joined", "a new user joins");
    // An attacking address holding its connections gets nothing more.
    let mut more = connect_from("127.0.9.1", server.addr).await;
    assert!(closed_within(&mut more, Duration::from_millis(500)).await, "refused");
}

/// Finding 2: HTTP had no header deadline (hyper was given no timer). A
/// socket that says nothing, or half a request, is closed at the deadline.
#[tokio::test]
async fn silent_and_half_sent_requests_are_closed_at_the_header_deadline() {
    let deadline = Duration::from_millis(500);
    let limits = server::Limits { header_timeout: deadline, ..server::Limits::default() };
    let server = TestServer::start(server::Config { limits, ..server::Config::default() }).await;
    let started = Instant::now();
    let mut silent = connect_from("127.0.0.1", server.addr).await;
    let mut half = connect_from("127.0.0.1", server.addr).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await, "the silent socket is closed");
    assert!(closed_within(&mut half, Duration::from_secs(3)).await, "the half-sent request is closed");
    let waited = started.elapsed();
    assert!(waited >= deadline, "not before the deadline: {waited:?}");
    // A keep-alive connection that goes quiet after a request is closed too.
    let mut kept = connect_from("127.0.0.1", server.addr).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut answer = [0u8; 12];
    kept.read_exact(&mut answer).await.expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    assert!(closed_within(&mut kept, Duration::from_secs(3)).await, "the idle keep-alive is closed");
    let (_, metrics) = http_get(&server, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("webconf_tcp_shed_total{listener=\"http\",reason=\"deadline\"}")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// Finding 3: TLS handshakes shared one pool of 256 with a 10 s deadline,
/// so idle sockets made HTTPS unreachable for everyone. A silent socket is
/// closed at the (short) handshake deadline, and one address's idle
/// sockets leave the others' handshakes alone.
#[tokio::test]
async fn silent_tls_clients_are_closed_and_do_not_block_others() {
    let (tls, cert, dir) = crate::support::self_signed_tls("tls-hostile");
    let _ = std::fs::remove_dir_all(&dir);
    let limits = server::Limits {
        tls_handshake_timeout: Duration::from_millis(500),
        max_http_connections_per_ip: 4,
        ..server::Limits::default()
    };
    let server =
        TestServer::start(server::Config { tls: Some(tls), limits, ..server::Config::default() }).await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(connect_from("127.0.0.1", server.addr).await);
    }
    // Half a ClientHello record: the handshake has started, and stalls.
    idle[0].write_all(&[22, 3, 1, 0, 200, 1]).await.expect("write");

    let tcp = connect_from("127.0.0.2", server.addr).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut stream = tokio::time::timeout(
        Duration::from_millis(400),
        crate::support::tls_connector(cert).connect(name, tcp),
    )
    .await
    .expect("a handshake from elsewhere, before the idle ones time out")
    .expect("TLS");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut page = String::new();
    stream.read_to_string(&mut page).await.expect("read");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");

    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(closed_within(stream, Duration::from_secs(3)).await, "idle socket {i} closed");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Connects from `source` and says hello: a WebSocket that stays.
async fn websocket_from(source: &str, addr: SocketAddr) -> Result<Client, (u16, String)> {
    let tcp = connect_from(source, addr).await;
    let url = format!("ws://{addr}/ws");
    let mut c = Client::handshake(url.as_str(), Box::new(tcp)).await.map_err(|s| (s, String::new()))?;
    c.send(json!({"type": "hello", "version": 3})).await;
    match c.next_or_close().await {
        Ok(welcome) => {
            assert_eq!(welcome["type"], "welcome");
            Ok(c)
        }
        Err(close) => Err(close),
    }
}

/// Finding 2: at the open-files limit a new connection was neither
/// accepted nor refused, and everything stopped. Every holder of file
/// descriptors is capped to a share of the limit, so with a small limit
/// WebSockets are refused (1013) and idle sockets closed before the
/// process runs out: `/healthz` and the people already in keep working.
#[tokio::test]
async fn a_small_open_files_limit_keeps_headroom_for_healthz_and_members() {
    let server = crate::harness::Webconf::start_with_nofile(128, &["--no-turn", "--no-sfu"]);
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().expect("address");
    let mut members = Vec::new();
    let mut refused = 0;
    for i in 0..120 {
        let source = format!("127.0.1.{}", 1 + i / 40);
        let opened = tokio::time::timeout(PATIENCE, websocket_from(&source, addr));
        match opened.await.expect("neither accepted nor refused") {
            Ok(c) => members.push(c),
            Err((code, _)) => {
                assert_eq!(code, 1013, "refused as server full");
                refused += 1;
            }
        }
    }
    assert_eq!((members.len(), refused), (64, 56), "WebSockets: half of 128 descriptors");
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(connect_from("127.0.2.1", addr).await);
    }
    let mut closed = 0;
    for stream in &mut idle {
        if closed_within(stream, Duration::from_millis(100)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 36, "idle sockets from one address: a quarter of an eighth of 128");
    let health = healthz_from("127.0.3.1", addr).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    for m in &mut members {
        m.ping().await;
    }
}

/// Finding 2: the header deadline does not bound a connection that keeps
/// asking (or asks and never reads): an HTTP connection that is not a
/// WebSocket is asked to close at its age, after the request at hand.
#[tokio::test]
async fn an_http_connection_is_closed_at_its_age_after_its_last_answer() {
    let limits =
        server::Limits { http_connection_max_age: Duration::from_millis(600), ..server::Limits::default() };
    let server = TestServer::start(server::Config { limits, ..server::Config::default() }).await;
    let started = Instant::now();
    let mut kept = connect_from("127.0.0.1", server.addr).await;
    let mut answers = 0;
    let mut buf = vec![0u8; 4096];
    let closed = loop {
        if started.elapsed() > Duration::from_secs(5) {
            break false;
        }
        if kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.is_err() {
            break true;
        }
        match tokio::time::timeout(Duration::from_secs(2), kept.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(text.starts_with("HTTP/1.1 200"), "{text}");
                answers += 1;
                if text.to_ascii_lowercase().contains("connection: close") {
                    // Said it closes after this answer; it must.
                    break closed_within(&mut kept, Duration::from_secs(2)).await;
                }
            }
            Err(_) => break false,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(closed, "closed at its age");
    let lived = started.elapsed();
    assert!(lived >= Duration::from_millis(600) && lived < Duration::from_secs(3), "lived {lived:?}");
    assert!(answers >= 3, "answered until then: {answers}");
}

/// Behind a reverse proxy every connection comes from the proxy: the cap
/// per address would be one cap for all its users, so it is not applied
/// there (the cap in all still is).
#[tokio::test]
async fn behind_a_proxy_the_cap_per_address_does_not_apply() {
    let limits = server::Limits { max_http_connections_per_ip: 4, ..server::Limits::default() };
    let server =
        TestServer::start(server::Config { limits, trust_proxy: true, ..server::Config::default() }).await;
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(connect_from("127.0.0.1", server.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for stream in &mut idle {
        assert!(!closed_within(stream, Duration::from_millis(20)).await, "kept");
    }
    let health = healthz_from("127.0.0.1", server.addr).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

/// Issue 10, finding 9: the `Host` header was never checked, so a page
/// whose own name was pointed at this server (DNS rebinding) was
/// same-origin with itself and could read pages and `/metrics` and open
/// the WebSocket. A name that is not ours now gets 421 (the WebSocket
/// included); our addresses, loopback names on a loopback listener and
/// `--allow-host` names are served, and `/healthz` answers any name.
#[tokio::test]
async fn requests_for_names_that_are_not_ours_are_refused() {
    let config =
        server::Config { allowed_hosts: vec!["meet.example.org".into()], ..server::Config::default() };
    let server = TestServer::start(config).await;
    let port = server.addr.port();
    let status = |host: String, path: &'static str| {
        let addr = server.addr;
        async move {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nConnection: close\r\n\
                 Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            );
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut head = [0u8; 12];
            tokio::time::timeout(PATIENCE, stream.read_exact(&mut head))
                .await
                .expect("in time")
                .expect("read");
            String::from_utf8_lossy(&head[9..12]).into_owned()
        }
    };
    for (host, path, expected) in [
        (format!("evil.example:{port}"), "/", "421"),
        (format!("evil.example:{port}"), "/ws", "421"),
        (format!("evil.example:{port}"), "/metrics", "421"),
        (format!("evil.example:{port}"), "/healthz", "200"),
        (format!("127.0.0.1:{port}"), "/", "200"),
        (format!("localhost:{port}"), "/", "200"),
        (format!("meet.example.org:{port}"), "/", "200"),
        (format!("127.0.0.1:{port}"), "/ws", "101"),
        (format!("meet.example.org:{port}"), "/ws", "101"),
    ] {
        assert_eq!(status(host.clone(), path).await, expected, "GET {path} for {host}");
    }
}

/// Issue 10, finding 10: outbound queues were bounded one by one only. Two
/// readers that stop reading, each far under its own cap (64 MiB here),
/// are dropped as too slow once all queues together hold the process-wide
/// budget (1 MiB here), while a call in another room, whose readers keep
/// up, goes on untouched.
#[tokio::test]
async fn all_outbound_queues_together_are_bounded() {
    let limits = server::Limits {
        rate_per_sec: 0,
        outbound_queue_bytes: 64 << 20,
        outbound_bytes_total: 1 << 20,
        write_timeout: Duration::from_secs(30),
        ..server::Limits::default()
    };
    let server =
        TestServer::start(server::Config { limits, room_capacity: 3, ..server::Config::default() }).await;
    let (stalled_a, _) = Client::join(&server, "slow", "A").await;
    let (stalled_b, _) = Client::join(&server, "slow", "B").await;
    let (mut sender, _) = Client::join(&server, "slow", "Sender").await;
    let (mut c, _) = Client::join(&server, "fast", "C").await;
    let (mut d, _) = Client::join(&server, "fast", "D").await;
    assert_eq!(c.recv().await["type"], "peer-joined");

    let blob = "y".repeat(60 * 1024);
    let mut gone = Vec::new();
    let mut sent = 0;
    while gone.len() < 2 {
        for to in [&stalled_a.id, &stalled_b.id] {
            if !gone.contains(to) {
                sender.signal(to, json!(blob)).await;
                sent += 1;
            }
        }
        while let Ok(msg) = tokio::time::timeout(Duration::from_millis(1), sender.recv()).await {
            if msg["type"] == "peer-left" {
                gone.push(msg["peer"].as_str().expect("peer").to_owned());
            }
        }
        // 60 MiB each would be past their own caps.
        assert!(sent < 2000, "the stalled readers were not dropped after {sent} signals");
        if sent % 50 == 0 {
            c.signal(&d.id, json!(sent)).await;
            assert_eq!(d.recv().await["data"], sent, "the other room is served meanwhile");
        }
    }
    println!("hostile: two stalled readers dropped after {sent} signals of 60 KiB");
    c.signal(&d.id, json!("after")).await;
    assert_eq!(d.recv().await["data"], "after");
    drop((stalled_a, stalled_b));
}
