//! Cluster mode (`--redis`): three webconf nodes on 127.0.0.2, .3 and .4
//! sharing a real `redis-server`, all inside a loopback-only network
//! namespace. Scripted clients on different nodes share a room and stay
//! out of each other's rooms; the home node is killed (SIGKILL) or drained
//! (SIGTERM) and the clients come back with their ids; Redis is stopped
//! and started again empty; two nodes race to claim rooms in a real Redis;
//! two browsers on different nodes call each other and keep their call
//! while their room's home dies.

use std::net::TcpStream as StdTcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Driver, Reaped, Webconf, artifacts, in_loopback_namespace, scratch, solid_y4m};
use crate::support::Client;

/// A `redis-server` of the test's own: no persistence, so a restart is
/// empty.
pub(crate) struct Redis {
    process: Option<Reaped>,
    port: u16,
}

impl Redis {
    pub(crate) fn start(port: u16) -> Redis {
        let process = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { process: Some(Reaped(process)), port }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one command with redis-cli; its output, trimmed.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Kills it (SIGKILL: nothing is saved, and there is nothing to save).
    pub(crate) fn stop(&mut self) {
        self.process.take();
    }
}

/// A port nobody listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Node `n` of the cluster, on 127.0.0.`n`:8080, named `n<n>`.
fn node(n: u8, redis: &Redis, extra: &[&str]) -> Webconf {
    let id = format!("n{n}");
    let url = redis.url();
    let mut args = vec!["--redis", &url, "--node-id", &id];
    args.extend_from_slice(extra);
    Webconf::start_on(&format!("127.0.0.{n}:8080"), &args)
}

pub(crate) fn addr(n: u8) -> String {
    format!("127.0.0.{n}:8080")
}

/// Connects a scripted client to node `n` and says hello.
async fn connect(n: u8) -> Client {
    connect_from(n, [127, 0, 0, 1]).await
}

/// [`connect`] from the address `from`.
async fn connect_from(n: u8, from: [u8; 4]) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind((std::net::Ipv4Addr::from(from), 0).into()).expect("bind the client's address");
    let stream = socket.connect(addr(n).parse().expect("an address")).await.expect("connect to a node");
    // As browsers do: no Nagle delay on small messages.
    stream.set_nodelay(true).expect("nodelay");
    let mut c = Client::handshake(format!("ws://{}/ws", addr(n)), Box::new(stream)).await.expect("upgrade");
    c.hello().await;
    c
}

/// Joins `room` on node `n`: the client and its `joined`.
async fn join(n: u8, room: &str, name: &str) -> (Client, Value) {
    let mut c = connect(n).await;
    c.send(json!({"type": "join", "room": room, "name": name})).await;
    let joined = c.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    c.id = joined["you"].as_str().expect("you").to_owned();
    (c, joined)
}

/// Comes back into `room` through node `n` with `resume`, as the web
/// client does after a dropped connection: tries again (every 100 ms)
/// while the cluster is still finding the room a new home, until
/// `deadline`. Returns the client and its `joined`.
async fn rejoin(n: u8, room: &str, resume: &str, deadline: Instant) -> (Client, Value) {
    loop {
        let mut c = connect(n).await;
        c.send(json!({"type": "join", "room": room, "name": "back", "resume": resume})).await;
        match c.next_or_close().await {
            Ok(joined) if joined["type"] == "joined" => {
                c.id = joined["you"].as_str().expect("you").to_owned();
                return (c, joined);
            }
            other => {
                assert!(Instant::now() < deadline, "could not rejoin {room} through node {n}: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The latest resume token a client holds (a `pong` brings a fresh one).
pub(crate) async fn resume_token(c: &mut Client) -> String {
    c.send(json!({"type": "ping"})).await;
    loop {
        let m = c.recv().await;
        if m["type"] == "pong" {
            return m["resume"].as_str().expect("a resume token in the room").to_owned();
        }
    }
}

/// A node's `/metrics` value for `name` (no labels).
pub(crate) async fn metric(n: u8, name: &str) -> i64 {
    let body = http(n, "/metrics").await.1;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("webconf_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in node {n}'s metrics"))
}

/// GET `path` from node `n`: status and body.
pub(crate) async fn http(n: u8, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr(n)).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", addr(n));
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("an answer in time")
        .expect("read");
    let status = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// Puts `room`'s home on node `n` before anyone joins (a test's way of
/// knowing where a room lives; placement is tested on its own).
pub(crate) fn home_on(redis: &Redis, room: &str, n: u8) {
    assert_eq!(redis.cli(&["SET", &format!("webconf:room:{room}"), &format!("n{n}"), "PX", "60000"]), "OK");
}

pub(crate) fn home_of(redis: &Redis, room: &str) -> String {
    redis.cli(&["GET", &format!("webconf:room:{room}")])
}

/// Starts Redis and three nodes, and waits until each sees the others.
pub(crate) async fn cluster(extra: &[&str]) -> (Redis, Vec<Webconf>) {
    let redis = Redis::start(free_port());
    let nodes: Vec<Webconf> = (2..=4).map(|n| node(n, &redis, extra)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.cli(&["KEYS", "webconf:node:*"]).lines().count() < 3 {
        assert!(Instant::now() < deadline, "the nodes did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Placement weighs the CPU each node used over its last lease period,
    // and a node's start-up burst (or a busy CI machine) can make it look
    // loaded for a moment. Wait until every record shows a calm node, then
    // one more renewal period so every node has read the calm records:
    // placement then starts from equal footing, as on a settled cluster.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let cpus: Vec<u32> = (2..=4)
            .map(|n| {
                let record = redis.cli(&["GET", &format!("webconf:node:n{n}")]);
                record.split(' ').nth(7).and_then(|c| c.parse().ok()).unwrap_or(u32::MAX)
            })
            .collect();
        if cpus.iter().all(|&c| c <= 20) {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes did not settle: CPU per mille {cpus:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    (redis, nodes)
}

/// Clients on different nodes share a room as on one server: signals
/// reach exactly the peer named, in order; chat and leaving are seen;
/// `peek` counts members on every node; a client in another room on the
/// same nodes hears nothing and cannot address them. New rooms spread
/// over the nodes by load, whichever node the first client reached.
#[tokio::test]
async fn scripted_clients_on_three_nodes_share_a_room_and_rooms_stay_apart() {
    if !in_loopback_namespace("cluster::scripted_clients_on_three_nodes_share_a_room_and_rooms_stay_apart") {
        return;
    }
    let (redis, _nodes) = cluster(&["--no-turn"]).await;

    // Placement: six rooms opened through node 2 land elsewhere, spread.
    let mut placed = Vec::new();
    for i in 0..6 {
        let room = format!("placed-{i}");
        let (mut c, _) = join(2, &room, "p").await;
        c.ping().await;
        placed.push((home_of(&redis, &room), c));
    }
    let homes: Vec<&str> = placed.iter().map(|(h, _)| h.as_str()).collect();
    println!("homes of six rooms opened through n2: {homes:?}");
    // Placement follows the load the nodes report (n2 carries every
    // client's connection; a node's CPU counts too), not the node the
    // client reached: the rooms spread. (The exact choice is tested in
    // the cluster crate.)
    let mut distinct = homes.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 2, "spread by load: {homes:?}");
    drop(placed);

    // "tea" lives on n4; A is on n2, B on n3. "other" lives on n2, with C
    // on n4 and D on n3: the same nodes, another room.
    home_on(&redis, "tea", 4);
    home_on(&redis, "other", 2);
    let (mut a, joined_a) = join(2, "tea", "A").await;
    assert_eq!(joined_a["peers"], json!([]));
    let (mut c, _) = join(4, "other", "C").await;
    let (mut d, _) = join(3, "other", "D").await;
    c.recv().await; // peer-joined D
    let (mut b, joined_b) = join(3, "tea", "B").await;
    assert_eq!(joined_b["peers"][0]["id"], a.id.as_str(), "{joined_b}");
    assert_eq!(joined_b["peers"][0]["name"], "A");
    let pj = a.recv().await;
    assert_eq!((pj["type"].as_str(), pj["peer"]["id"].as_str()), (Some("peer-joined"), Some(b.id.as_str())));

    // Signals both ways, in order, from exactly the sender.
    let sent = Instant::now();
    for i in 0..100 {
        a.signal(&b.id, json!({"n": i})).await;
    }
    for i in 0..100 {
        let s = b.recv().await;
        assert_eq!(s["type"], "signal", "{s}");
        assert_eq!(s["from"], a.id.as_str());
        assert_eq!(s["data"], json!({"n": i}), "in the order sent");
    }
    let hundred = sent.elapsed();
    let started = Instant::now();
    b.signal(&a.id, json!({"answer": true})).await;
    let s = a.recv().await;
    let one = started.elapsed();
    assert_eq!((s["from"].as_str(), &s["data"]), (Some(b.id.as_str()), &json!({"answer": true})));
    println!("cross-node signals: one round trip {one:?}; 100 from n2 to n3 via n4 in {hundred:?}");

    // Chat reaches both, sender included.
    a.send(json!({"type": "chat", "text": "hello across nodes"})).await;
    for who in [&mut a, &mut b] {
        let m = who.recv().await;
        assert_eq!((m["type"].as_str(), m["text"].as_str()), (Some("chat"), Some("hello across nodes")));
    }

    // Isolation: C and D heard none of it, and a signal to a peer of
    // another room is refused wherever the peers sit.
    c.expect_silence(Duration::from_millis(300)).await;
    d.expect_silence(Duration::from_millis(300)).await;
    a.signal(&d.id, json!({"x": 1})).await;
    a.expect_error("unknown-peer").await;
    d.signal(&a.id, json!({"x": 1})).await;
    d.expect_error("unknown-peer").await;
    d.signal(&c.id, json!({"to": "c"})).await;
    assert_eq!(c.recv().await["from"], d.id.as_str());
    b.expect_silence(Duration::from_millis(200)).await;

    // Peek through the node that does not hold the room.
    let mut e = connect(3).await;
    e.send(json!({"type": "peek", "room": "tea"})).await;
    let state = e.recv().await;
    assert_eq!((state["type"].as_str(), state["peers"].as_u64()), (Some("room-state"), Some(2)), "{state}");

    // n4 holds the logic of A, B and E (who peeked into tea), not their
    // sockets.
    assert_eq!(metric(4, "cluster_remote_members").await, 3);

    // Leaving is seen across nodes; the room's claim goes with its last member.
    a.send(json!({"type": "leave"})).await;
    assert_eq!(a.recv().await["type"], "left");
    let left = b.recv().await;
    assert_eq!((left["type"].as_str(), left["peer"].as_str()), (Some("peer-left"), Some(a.id.as_str())));
    assert_eq!(metric(4, "cluster_rooms_homed").await, 1, "tea lives on n4");
    assert!(metric(2, "cluster_messages_sent_total").await > 100);
    assert!(metric(4, "cluster_messages_received_total").await > 100);
    assert!(metric(3, "redis_round_trips_total").await > 0);
    assert_eq!(metric(3, "redis_errors_total").await, 0);
    assert!(metric(4, "cluster_leases_renewed_total").await > 0);
    assert_eq!(http(2, "/readyz").await.0, 200);
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    while home_of(&redis, "tea") == "n4" {
        assert!(Instant::now() < deadline, "the empty room's claim was not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The home node dies (SIGKILL) with members on two other nodes and one
/// on itself: all three are back in the room, on a live home, with their
/// own ids, within a few seconds.
#[tokio::test]
async fn killing_the_home_node_brings_everyone_back_with_their_ids() {
    if !in_loopback_namespace("cluster::killing_the_home_node_brings_everyone_back_with_their_ids") {
        return;
    }
    let (redis, mut nodes) = cluster(&["--no-turn", "--no-sfu"]).await;
    home_on(&redis, "failover", 4);
    let (mut a, _) = join(2, "failover", "A").await;
    let (mut b, _) = join(3, "failover", "B").await;
    let (mut c, _) = join(4, "failover", "C").await;
    let ids = [a.id.clone(), b.id.clone(), c.id.clone()];
    // Something said before the home dies is still there after.
    a.send(json!({"type": "chat", "text": "before the failover", "id": "m-1"})).await;
    loop {
        if a.recv().await["type"] == "chat" {
            break;
        }
    }
    let tokens = [resume_token(&mut a).await, resume_token(&mut b).await, resume_token(&mut c).await];

    let killed = Instant::now();
    drop(nodes.pop()); // n4, SIGKILL
    // The edges notice the home's lease lapse and tell their browsers.
    for who in [&mut a, &mut b] {
        let closed = loop {
            match who.next_or_close().await {
                Err(close) => break close,
                Ok(_) => continue, // peer-left C, whose socket died with n4
            }
        };
        assert_eq!(closed, (1012, "room moved to another server".to_owned()));
    }
    let noticed = killed.elapsed();
    // Everyone comes back; C through another node, as a load balancer
    // would send it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut a, ja) = rejoin(2, "failover", &tokens[0], deadline).await;
    let (mut b, jb) = rejoin(3, "failover", &tokens[1], deadline).await;
    let (mut c, jc) = rejoin(2, "failover", &tokens[2], deadline).await;
    let back = killed.elapsed();
    for (j, id) in [(&ja, &ids[0]), (&jb, &ids[1]), (&jc, &ids[2])] {
        assert_eq!(j["you"], id.as_str(), "the same id: {j}");
        assert_eq!(j["resumed"], true);
    }
    let home = home_of(&redis, "failover");
    assert!(home == "n2" || home == "n3", "a live node took the room: {home}");
    assert_eq!(jc["peers"].as_array().map(Vec::len), Some(2), "C finds A and B: {jc}");
    for j in [&ja, &jb, &jc] {
        let chat = j["chat"].as_array().cloned().unwrap_or_default();
        assert!(
            chat.iter().any(|m| m["text"] == "before the failover" && m["from"] == ids[0].as_str()),
            "the chat from before the failover is kept (in Redis): {j}"
        );
    }
    println!(
        "home node killed: edges noticed after {:.2} s; all three back with their ids after {:.2} s (new home {home})",
        noticed.as_secs_f64(),
        back.as_secs_f64()
    );
    assert!(back < Duration::from_millis(3500), "failover took {back:?}, target 3 s");
    // And the call's signaling works on the new home.
    c.signal(&a.id, json!({"after": "failover"})).await;
    let got = loop {
        let m = a.recv().await;
        if m["type"] == "signal" {
            break m;
        }
    };
    assert_eq!(got["from"], c.id.as_str());
    resume_token(&mut b).await;
}

/// A node drains (SIGTERM): it hands its rooms back at once, its members
/// elsewhere are told the server is restarting, and they are back with
/// their ids on another home well within the time a dead node takes.
#[tokio::test]
async fn draining_the_home_node_moves_its_room_without_losing_anyone() {
    if !in_loopback_namespace("cluster::draining_the_home_node_moves_its_room_without_losing_anyone") {
        return;
    }
    let (redis, mut nodes) = cluster(&["--no-turn", "--no-sfu"]).await;
    home_on(&redis, "drain", 4);
    let (mut a, _) = join(2, "drain", "A").await;
    let (mut b, _) = join(3, "drain", "B").await;
    let ids = [a.id.clone(), b.id.clone()];
    let tokens = [resume_token(&mut a).await, resume_token(&mut b).await];
    let started = Instant::now();
    nodes.pop().expect("n4").terminate();
    for who in [&mut a, &mut b] {
        assert_eq!(who.expect_close().await, (1001, "server shutting down".to_owned()));
    }
    assert_ne!(home_of(&redis, "drain"), "n4", "the drained node released its room");
    let deadline = Instant::now() + Duration::from_secs(5);
    let (_a, ja) = rejoin(2, "drain", &tokens[0], deadline).await;
    let (_b, jb) = rejoin(3, "drain", &tokens[1], deadline).await;
    let back = started.elapsed();
    assert_eq!((ja["you"].as_str(), jb["you"].as_str()), (Some(ids[0].as_str()), Some(ids[1].as_str())));
    assert_eq!(jb["peers"][0]["id"], ids[0].as_str(), "{jb}");
    println!("drained home: both back with their ids {:.2} s after SIGTERM", back.as_secs_f64());
    assert!(back < Duration::from_secs(3), "{back:?}");
}

/// Redis goes away: a room on one node goes on; new work that needs Redis
/// fails at once with `cluster-unavailable` instead of hanging; `/readyz`
/// says so. Redis comes back empty: the nodes register again, take back
/// their rooms, and everything works again.
#[tokio::test]
async fn redis_stopped_and_restarted_empty_is_survived() {
    if !in_loopback_namespace("cluster::redis_stopped_and_restarted_empty_is_survived") {
        return;
    }
    let (mut redis, _nodes) = cluster(&["--no-turn", "--no-sfu"]).await;
    let port = redis.port;
    home_on(&redis, "local", 2);
    let (mut a, _) = join(2, "local", "A").await;
    let (mut b, _) = join(2, "local", "B").await;
    a.recv().await; // peer-joined B
    home_on(&redis, "across", 3);
    let (mut e, _) = join(4, "across", "E").await;

    redis.stop();
    let stopped = Instant::now();
    // The room held by one node goes on.
    a.signal(&b.id, json!({"without": "redis"})).await;
    assert_eq!(b.recv().await["data"], json!({"without": "redis"}));
    // A connection across nodes lost its bus: it is told to reconnect.
    let closed = e.expect_close().await;
    assert_eq!(closed.0, 1012, "{closed:?}");
    // New work fails fast and clearly.
    let mut f = connect(3).await;
    let asked = Instant::now();
    f.send(json!({"type": "join", "room": "fresh", "name": "F"})).await;
    f.expect_error("cluster-unavailable").await;
    let refused_in = asked.elapsed();
    assert!(refused_in < Duration::from_millis(2500), "{refused_in:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while http(2, "/readyz").await.0 != 503 {
        assert!(Instant::now() < deadline, "/readyz did not notice Redis was gone");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(2, "redis_up").await, 0);
    assert!(metric(3, "redis_errors_total").await > 0);
    println!(
        "Redis gone: join refused in {refused_in:?}; /readyz 503 after {:.2} s",
        stopped.elapsed().as_secs_f64()
    );

    // Back, empty.
    let redis = Redis::start(port);
    let back = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 2..=4 {
        while http(n, "/readyz").await.0 != 200 {
            assert!(Instant::now() < deadline, "node {n} is not ready again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ready = back.elapsed();
    while home_of(&redis, "local") != "n2" {
        assert!(Instant::now() < deadline, "n2 did not claim its room again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(redis.cli(&["KEYS", "webconf:node:*"]).lines().count(), 3);
    assert_eq!(redis.cli(&["EXISTS", "webconf:secret"]), "1", "the shared secret is stored again");
    println!(
        "Redis back empty: nodes ready after {:.2} s, rooms reclaimed after {:.2} s",
        ready.as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
    f.send(json!({"type": "join", "room": "fresh", "name": "F"})).await;
    assert_eq!(f.recv().await["type"], "joined");
    a.signal(&b.id, json!({"with": "redis"})).await;
    assert_eq!(b.recv().await["data"], json!({"with": "redis"}));
    let (_e, je) = join(4, "across", "E").await;
    assert_eq!(je["type"], "joined");
}

/// The claim script in a real Redis: two nodes racing for each of 200
/// rooms (on two connections, both sent at once) agree on one home, which
/// is the one stored; a room whose home's record has lapsed is taken over.
#[tokio::test]
async fn two_nodes_racing_to_claim_rooms_in_redis_get_one_winner_each() {
    if !in_loopback_namespace("cluster::two_nodes_racing_to_claim_rooms_in_redis_get_one_winner_each") {
        return;
    }
    let redis = Redis::start(free_port());
    let client = redis::Client::open(redis.url()).expect("url");
    let mut one = client.get_multiplexed_async_connection().await.expect("connect");
    let mut two = client.get_multiplexed_async_connection().await.expect("connect");
    for n in ["a", "b"] {
        redis.cli(&["SET", &format!("webconf:node:{n}"), "v1", "PX", "60000"]);
    }
    async fn claim(conn: &mut redis::aio::MultiplexedConnection, room: &str, node: &str) -> String {
        redis::cmd("EVAL")
            .arg(cluster::script::CLAIM)
            .arg(1)
            .arg(format!("webconf:room:{room}"))
            .arg(node)
            .arg(10_000)
            .arg("webconf:node:")
            .query_async(conn)
            .await
            .expect("EVAL")
    }
    let mut wins = [0, 0];
    for i in 0..200 {
        let room = format!("race-{i}");
        let (x, y) = tokio::join!(claim(&mut one, &room, "a"), claim(&mut two, &room, "b"));
        assert_eq!(x, y, "both learn the same home for {room}");
        assert_eq!(home_of(&redis, &room), x, "the one stored");
        wins[usize::from(x == "b")] += 1;
    }
    println!("200 races: a won {}, b won {}", wins[0], wins[1]);
    // b's record lapses: its rooms go to whoever claims next.
    redis.cli(&["DEL", "webconf:node:b"]);
    let taken = (0..200).map(|i| format!("race-{i}")).find(|r| home_of(&redis, r) == "b");
    if let Some(room) = taken {
        assert_eq!(claim(&mut one, &room, "a").await, "a");
    }
}

const RED: [u8; 3] = [81, 90, 240];
const BLUE: [u8; 3] = [41, 240, 110];

/// Two browsers on different nodes call each other (P2P, through a room
/// homed on a third); the home is killed mid-call: both pages reconnect
/// to their own nodes with their ids, and the call's media never stops.
#[tokio::test]
async fn browsers_on_two_nodes_call_and_keep_calling_when_the_home_dies() {
    if !in_loopback_namespace("cluster::browsers_on_two_nodes_call_and_keep_calling_when_the_home_dies") {
        return;
    }
    let dir = scratch("cluster-call");
    let (red, blue) = (dir.join("red.y4m"), dir.join("blue.y4m"));
    solid_y4m(&red, RED);
    solid_y4m(&blue, BLUE);
    let (redis, mut nodes) = cluster(&[]).await;
    home_on(&redis, "cluster-call", 4);
    let driver = Driver::start();
    let a = driver.browser("A", &red, &dir.join("profile-a")).await;
    let b = driver.browser("B", &blue, &dir.join("profile-b")).await;
    for (browser, n) in [(&a, 2), (&b, 3)] {
        browser.goto(&format!("http://{}/r/cluster-call", addr(n))).await;
        browser.join().await;
        browser.wait_state("call").await;
    }
    let a_stats = a.wait_media().await;
    let b_stats = b.wait_media().await;
    assert_eq!(a_stats["connection"], "connected");
    assert_eq!(home_of(&redis, "cluster-call"), "n4", "the lobby's peek left the claim alone");
    let (ra, rb) = (a.remote_colour().await, b.remote_colour().await);
    assert!(ra[2] > 180 && ra[0] < 80, "A sees B's blue: {ra:?}");
    assert!(rb[0] > 180 && rb[2] < 80, "B sees A's red: {rb:?}");
    a.screenshot(&artifacts().join("cluster-call-a.png")).await;
    let sessions = (a_stats["session"].clone(), b_stats["session"].clone());
    let ids = (
        a.eval("return window.webconf.state.joined?.you").await,
        b.eval("return window.webconf.state.joined?.you").await,
    );

    // Kill the room's home. Frames keep coming while both pages reconnect.
    let frames = |s: &Value| s["video"]["framesDecoded"].as_u64().unwrap_or(0);
    let mut last = (frames(&a.stats().await[0]), frames(&b.stats().await[0]));
    let killed = Instant::now();
    drop(nodes.pop());
    let rejoined = "const r = window.webconf.metrics.reconnects.at(-1); return Boolean(r && r.rejoined)";
    let mut back = None;
    while back.is_none() || killed.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = (frames(&a.stats().await[0]), frames(&b.stats().await[0]));
        assert!(now.0 > last.0 && now.1 > last.1, "media stalled during failover: {last:?} -> {now:?}");
        last = now;
        if back.is_none() && a.eval(rejoined).await == true && b.eval(rejoined).await == true {
            back = Some(killed.elapsed());
        }
        if killed.elapsed() > Duration::from_secs(15) {
            let why = "return JSON.stringify([window.webconf.metrics.reconnects, document.body.dataset.state, \
                       document.getElementById('connection-banner').textContent])";
            panic!("the pages did not rejoin: A {} B {}", a.eval(why).await, b.eval(why).await);
        }
    }
    let back = back.expect("rejoined");
    println!(
        "browsers: home killed mid-call, both pages back after {:.2} s, media never stopped",
        back.as_secs_f64()
    );
    let after = (a.stats().await[0]["session"].clone(), b.stats().await[0]["session"].clone());
    assert_eq!(after, sessions, "the same peer connections throughout");
    let ids_after = (
        a.eval("return window.webconf.state.joined?.you").await,
        b.eval("return window.webconf.state.joined?.you").await,
    );
    assert_eq!(ids_after, ids, "the same ids");
    a.screenshot(&artifacts().join("cluster-call-after-failover-a.png")).await;
    a.quit().await;
    b.quit().await;
}

/// Three browsers on two nodes in a room homed on a third: a group call
/// through the SFU of the room's home, which every browser reaches at the
/// home's own address (not the address of the node its WebSocket
/// reached), and in which each decodes the other two. Then the home dies:
/// the call re-establishes on the SFU of the new home.
#[tokio::test]
async fn a_group_call_spread_over_three_nodes_runs_on_the_homes_sfu() {
    if !in_loopback_namespace("cluster::a_group_call_spread_over_three_nodes_runs_on_the_homes_sfu") {
        return;
    }
    let dir = scratch("cluster-group");
    const YELLOW: [u8; 3] = [210, 16, 146];
    let colours = [("A", RED, 2u8), ("B", BLUE, 3), ("C", YELLOW, 2)];
    let (redis, mut nodes) = cluster(&["--no-turn"]).await;
    home_on(&redis, "cluster-group", 4);
    let driver = Driver::start();
    let mut members = Vec::new();
    for (label, yuv, n) in colours {
        let clip = dir.join(format!("{label}.y4m"));
        solid_y4m(&clip, yuv);
        let browser = driver.browser(label, &clip, &dir.join(format!("profile-{label}"))).await;
        browser.goto(&format!("http://{}/r/cluster-group", addr(n))).await;
        browser.join().await;
        browser.wait_state("call").await;
        let id = browser
            .wait_until("our peer id", Duration::from_secs(10), "return window.webconf.state.joined?.you")
            .await;
        members.push((browser, id.as_str().expect("id").to_owned()));
    }
    let through_sfu = async |members: &[(crate::harness::Browser, String)], home: &str, min: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        for (who, _) in members {
            loop {
                let stats = who.stats().await;
                let ok = members.iter().filter(|(b, _)| b.label != who.label).all(|(_, id)| {
                    stats.iter().any(|s| {
                        s["id"] == id.as_str()
                            && s["path"] == "sfu"
                            && s["video"]["framesDecoded"].as_u64().unwrap_or(0) >= min
                            && s["audio"]["packetsReceived"].as_u64().unwrap_or(0) >= 10
                    })
                });
                let sfu = who.eval_async("return await window.webconf.sfuStats();").await;
                if ok && sfu["connection"] == "connected" && sfu["pair"]["remote"]["address"] == home {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} does not receive both others through {home}'s SFU: {stats:#?}\n{sfu:#}",
                    who.label
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    through_sfu(&members, "127.0.0.4", 10).await;
    assert_eq!(home_of(&redis, "cluster-group"), "n4");
    println!("group call over three nodes: everyone decodes everyone through n4's SFU");
    members[0].0.screenshot(&artifacts().join("cluster-group-a.png")).await;

    // The home dies: everyone is back, through the new home's SFU.
    let frames_before: Vec<u64> = {
        let mut v = Vec::new();
        for (who, _) in &members {
            v.push(who.stats().await.iter().map(|s| s["video"]["framesDecoded"].as_u64().unwrap_or(0)).sum());
        }
        v
    };
    let killed = Instant::now();
    drop(nodes.pop());
    let deadline = Instant::now() + Duration::from_secs(30);
    let home = loop {
        let h = home_of(&redis, "cluster-group");
        if h == "n2" || h == "n3" {
            break h;
        }
        assert!(Instant::now() < deadline, "no new home: {h:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let address = if home == "n2" { "127.0.0.2" } else { "127.0.0.3" };
    through_sfu(&members, address, 10).await;
    let resumed = killed.elapsed();
    let ids_after: Vec<Value> = {
        let mut v = Vec::new();
        for (who, _) in &members {
            v.push(who.eval("return window.webconf.state.joined?.you").await);
        }
        v
    };
    let ids: Vec<Value> = members.iter().map(|(_, id)| json!(id)).collect();
    assert_eq!(ids_after, ids, "the same ids");
    println!(
        "group call: home killed; everyone decodes everyone through {home}'s SFU {:.2} s later (frames before: {frames_before:?})",
        resumed.as_secs_f64()
    );
    for (who, _) in &members {
        let log = who.eval("return JSON.stringify(window.webconf.metrics.sfuLog)").await;
        println!("{}'s SFU sessions: {log}", who.label);
    }
    members[0].0.screenshot(&artifacts().join("cluster-group-after-failover-a.png")).await;
    for (browser, _) in members {
        browser.quit().await;
    }
}

/// Host actions in a room homed on another node than either person's:
/// the host's role, a mute and a bar cross the bus, and the bar counts
/// the guest's own address (its edge sends it with the connection), so the
/// guest is refused also when it comes straight to the home node.
#[tokio::test]
async fn a_host_on_one_node_moderates_a_guest_on_another() {
    if !in_loopback_namespace("cluster::a_host_on_one_node_moderates_a_guest_on_another") {
        return;
    }
    let (redis, _nodes) = cluster(&["--no-turn"]).await;
    home_on(&redis, "hosted", 2);
    let mut host = connect(3).await;
    host.send(json!({"type": "join", "room": "hosted", "name": "Host", "create": true})).await;
    let joined = host.recv().await;
    assert_eq!(
        (joined["type"].clone(), joined["role"].clone()),
        (json!("joined"), json!("host")),
        "{joined}"
    );
    let (mut guest, joined) = join(4, "hosted", "Guest").await;
    assert_eq!(joined["role"], "guest");
    assert_eq!(host.recv().await["type"], "peer-joined");
    guest.send(json!({"type": "moderate", "peer": joined["peers"][0]["id"], "action": "mute"})).await;
    guest.expect_error("not-host").await;
    host.send(json!({"type": "moderate", "peer": guest.id, "action": "mute"})).await;
    assert_eq!(guest.recv().await["action"], "mute");
    assert_eq!(host.recv().await["media"]["audio"], false);
    host.send(json!({"type": "moderate", "peer": guest.id, "action": "remove", "bar": true})).await;
    assert_eq!(guest.recv().await["type"], "removed");
    assert_eq!(host.recv().await["reason"], "removed");
    let mut again = connect(2).await;
    again.send(json!({"type": "join", "room": "hosted", "name": "Guest again"})).await;
    again.expect_error("barred").await;
}

/// What a host set outlives the room's home: after the home dies
/// (SIGKILL), the room continues on a live node still locked, with its
/// password, its bar and its hold; the host and the muted guest come back
/// with their roles and the hold, the barred guest and a stranger are
/// refused. When the call then ends on purpose, Redis forgets it all: the
/// next call in that room starts open.
#[tokio::test]
async fn a_rooms_lock_password_bars_and_holds_survive_its_homes_death() {
    if !in_loopback_namespace("cluster::a_rooms_lock_password_bars_and_holds_survive_its_homes_death") {
        return;
    }
    let (redis, mut nodes) = cluster(&["--no-turn", "--no-sfu"]).await;
    home_on(&redis, "kept", 4);
    let mut host = connect(2).await;
    host.send(json!({"type": "join", "room": "kept", "name": "Host", "create": true})).await;
    let joined = host.recv().await;
    assert_eq!(joined["role"], "host", "{joined}");
    host.id = joined["you"].as_str().expect("you").to_owned();
    let (mut guest, _) = join(3, "kept", "Guest").await;
    // The pest comes from an address of its own (a bar counts it).
    let mut pest = connect_from(3, [127, 0, 0, 9]).await;
    pest.send(json!({"type": "join", "room": "kept", "name": "Pest"})).await;
    pest.id = next_of(&mut pest, "joined").await["you"].as_str().expect("you").to_owned();
    host.send(json!({"type": "moderate", "peer": guest.id, "action": "mute"})).await;
    assert_eq!(next_of(&mut guest, "moderated").await["action"], "mute");
    host.send(json!({"type": "moderate", "peer": pest.id, "action": "remove", "bar": true})).await;
    next_of(&mut pest, "removed").await;
    host.send(json!({"type": "room-settings", "locked": true, "password": "blue kettle"})).await;
    let m = next_of(&mut host, "room-settings").await;
    assert_eq!((m["locked"].as_bool(), m["password"].as_bool()), (Some(true), Some(true)), "{m}");
    let kept = redis.cli(&["GET", "webconf:access:kept"]);
    assert!(kept.contains("\"locked\":true") && !kept.contains("blue kettle"), "kept hashed: {kept}");
    let tokens = [resume_token(&mut host).await, resume_token(&mut guest).await];

    drop(nodes.pop()); // n4, SIGKILL
    let deadline = Instant::now() + Duration::from_secs(10);
    // A stranger may get there first: the room is still locked.
    loop {
        let mut stranger = connect(3).await;
        stranger
            .send(json!({"type": "join", "room": "kept", "name": "Stranger", "password": "blue kettle"}))
            .await;
        match stranger.next_or_close().await {
            Ok(m) if m["type"] == "error" && m["code"] == "cluster-unavailable" => {}
            Err(_) => {}
            Ok(m) if m["type"] == "error" => {
                assert_eq!(m["code"], "room-locked", "{m}");
                break;
            }
            Ok(m) => panic!("a stranger got into the locked room after the failover: {m}"),
        }
        assert!(Instant::now() < deadline, "the room found no new home");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut host, jh) = rejoin(2, "kept", &tokens[0], deadline).await;
    let home = home_of(&redis, "kept");
    assert!(home == "n2" || home == "n3", "a live node took the room: {home}");
    assert_eq!(
        (jh["role"].as_str(), &jh["settings"]),
        (Some("host"), &json!({"locked": true, "lobby": false, "password": true}))
    );
    let (mut guest, jg) = rejoin(3, "kept", &tokens[1], deadline).await;
    assert_eq!(jg["role"], "guest");
    guest.send(json!({"type": "media", "audio": true, "video": true, "screen": false})).await;
    assert_eq!(next_of(&mut guest, "error").await["code"], "held");
    let mut barred = connect_from(2, [127, 0, 0, 9]).await;
    barred.send(json!({"type": "join", "room": "kept", "name": "Pest again"})).await;
    barred.expect_error("barred").await;
    assert!(
        redis.cli(&["TTL", "webconf:access:kept"]).parse::<i64>().expect("a TTL") > 3600,
        "kept by the new home"
    );

    // The call ends on purpose: nothing of it is left for the next one.
    host.send(json!({"type": "end-call"})).await;
    for who in [&mut host, &mut guest] {
        next_of(who, "removed").await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.cli(&["EXISTS", "webconf:access:kept"]) != "0" {
        assert!(Instant::now() < deadline, "the ended room's access state was not forgotten");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((host, guest));
    // (Told to reconnect while the old claim goes, as a browser is.)
    let jn = loop {
        let mut next = connect(2).await;
        next.send(json!({"type": "join", "room": "kept", "name": "Next"})).await;
        match next.next_or_close().await {
            Ok(m) if m["type"] == "joined" => break m,
            other => assert!(Instant::now() < deadline, "the next call could not start: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(jn["settings"], json!({"locked": false, "lobby": false, "password": false}), "{jn}");
}

/// The next message of type `ty`, skipping others.
async fn next_of(c: &mut Client, ty: &str) -> Value {
    loop {
        let m = c.recv().await;
        if m["type"] == ty {
            return m;
        }
    }
}
