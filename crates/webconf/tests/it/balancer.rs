//! The load balancers of docs/deploy.md ("Several nodes"), run from the
//! very config blocks the document shows (only the node addresses, the
//! listen address and the certificate files swapped for the test's), in
//! front of three cluster nodes on 127.0.0.2, .3 and .4 and a real Redis,
//! inside a loopback-only network namespace: Debian's HAProxy and nginx.
//!
//! Scripted clients reach the nodes only through the balancer; round robin
//! spreads their WebSockets over the nodes, and they still share a room.
//! A node holding one client's WebSocket and the room's home is killed
//! (SIGKILL): the balancer stops sending anything there at once, every
//! client comes back through it with its id, and a WebSocket on a live
//! node is never moved or closed. Then another node drains (SIGTERM), as
//! in a rolling restart, and its client is back at once. Last, Redis goes
//! away and HAProxy still serves the page. Two Chromium pages call each
//! other through HAProxy with their WebSockets on different nodes, and
//! keep calling when one of those nodes dies.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::{cluster, free_port, home_of, home_on, http, metric, resume_token};
use crate::harness::{Driver, Reaped, artifacts, in_loopback_namespace, scratch, solid_y4m};
use crate::support::Client;

/// A balancer docs/deploy.md shows a config for.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Haproxy,
    Nginx,
}

impl Kind {
    /// The language tag of its block in docs/deploy.md.
    fn lang(self) -> &'static str {
        match self {
            Kind::Haproxy => "haproxy",
            Kind::Nginx => "nginx",
        }
    }
}

/// The code block after "```{lang}" in docs/deploy.md's section on
/// several nodes.
fn documented(lang: &str) -> String {
    let doc = include_str!("../../../../docs/deploy.md");
    let section = &doc[doc.find("## 4. Several nodes").expect("the section on several nodes")..];
    let start =
        section.find(&format!("```{lang}\n")).unwrap_or_else(|| panic!("a {lang} config")) + lang.len() + 4;
    let len = section[start..].find("```").expect("the config ends");
    section[start..start + len].to_owned()
}

/// `text` with `from` replaced by `to`, which must be there.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the documented config has no {from:?}:\n{text}");
    text.replace(from, to)
}

/// Debian installs both balancers in /usr/sbin, which is not on
/// everyone's `PATH`.
fn sbin(program: &str) -> PathBuf {
    let path = Path::new("/usr/sbin").join(program);
    if path.exists() { path } else { PathBuf::from(program) }
}

/// A balancer process in front of nodes 2, 3 and 4, serving TLS on
/// 127.0.0.1 with a fresh self-signed certificate for `localhost`.
struct Balancer {
    process: Option<Reaped>,
    port: u16,
    cert: CertificateDer<'static>,
    dir: PathBuf,
}

impl Balancer {
    fn start(kind: Kind) -> Balancer {
        let dir = scratch(&format!("balancer-{}", kind.lang()));
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let (cert_pem, key_pem) = (made.cert.pem(), made.signing_key.serialize_pem());
        let port = free_port();
        // The documented nodes 10.0.0.2-4 are the test's 127.0.0.2-4, on
        // the same port.
        let config = swap(&documented(kind.lang()), "10.0.0.", "127.0.0.");
        let mut command = match kind {
            Kind::Haproxy => {
                let pem = dir.join("meet.pem");
                std::fs::write(&pem, format!("{cert_pem}{key_pem}")).expect("write pem");
                let config = swap(&config, "bind :443", &format!("bind 127.0.0.1:{port}"));
                let config = swap(&config, "/etc/haproxy/meet.example.org.pem", &pem.display().to_string());
                let file = dir.join("haproxy.cfg");
                std::fs::write(&file, config).expect("write haproxy.cfg");
                let mut c = Command::new(sbin("haproxy"));
                // -db: in the foreground, as one process.
                c.arg("-db").arg("-f").arg(&file);
                c
            }
            Kind::Nginx => {
                let (cert, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
                std::fs::write(&cert, &cert_pem).expect("write cert");
                std::fs::write(&key, &key_pem).expect("write key");
                let config = swap(&config, "listen 443", &format!("listen 127.0.0.1:{port}"));
                let config = swap(
                    &config,
                    "/etc/letsencrypt/live/meet.example.org/fullchain.pem",
                    &cert.display().to_string(),
                );
                let config = swap(
                    &config,
                    "/etc/letsencrypt/live/meet.example.org/privkey.pem",
                    &key.display().to_string(),
                );
                // The documented blocks go in the `http` context, as in
                // Debian's /etc/nginx/sites-enabled/; around them, what
                // Debian's nginx.conf sets that matters here (a worker per
                // core), files of the test's own, and workers that stay the
                // user who started nginx (root, or root of the test's user
                // namespace, where no other user exists).
                let d = dir.display();
                let main = format!(
                    "daemon off;\nuser root root;\nworker_processes auto;\npid {d}/nginx.pid;\n\
                     events {{ worker_connections 768; }}\n\
                     http {{\n    access_log off;\n    error_log {d}/error.log;\n    \
                     client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    \
                     fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    \
                     scgi_temp_path {d}/scgi;\n\n{config}\n}}\n"
                );
                let file = dir.join("nginx.conf");
                std::fs::write(&file, main).expect("write nginx.conf");
                let mut c = Command::new(sbin("nginx"));
                c.arg("-p").arg(&dir).arg("-c").arg(&file).arg("-e").arg(dir.join("error.log"));
                c
            }
        };
        let process =
            command.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap_or_else(|e| {
                panic!("start {} (apt-get install haproxy nginx-light): {e}", kind.lang())
            });
        let mut process = Reaped(process);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = process.0.try_wait() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                panic!("{} exited: {status}\n{log}", kind.lang());
            }
            assert!(Instant::now() < deadline, "{} did not start listening", kind.lang());
            std::thread::sleep(Duration::from_millis(20));
        }
        Balancer { process: Some(process), port, cert: made.cert.der().clone(), dir }
    }

    /// A TLS connection to the balancer from the local address `source`
    /// (each test client has its own, as browsers do).
    async fn tls(&self, source: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(format!("{source}:0").parse().expect("source address")).expect("bind");
        let tcp = socket.connect(([127, 0, 0, 1], self.port).into()).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from("localhost").expect("name");
        crate::support::tls_connector(self.cert.clone()).connect(name, tcp).await.expect("TLS handshake")
    }

    /// A WebSocket through the balancer from `source`, opened as a page of
    /// the documented site opens it, that said hello; or why not: the HTTP
    /// status the balancer refused it with, or how the node closed it.
    async fn connect(&self, source: &str) -> Result<Client, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        // Host and Origin as a browser on the documented site sends them
        // (TLS checks the test certificate's name, `localhost`).
        let site = format!("meet.example.org:{}", self.port);
        let mut request = format!("wss://{site}/ws").into_client_request().expect("request");
        request.headers_mut().insert("origin", format!("https://{site}").parse().expect("origin"));
        let mut c = Client::handshake(request, Box::new(self.tls(source).await))
            .await
            .map_err(|status| format!("HTTP {status}"))?;
        c.send(json!({"type": "hello", "version": 3})).await;
        match c.next_or_close().await {
            Ok(welcome) if welcome["type"] == "welcome" => Ok(c),
            other => Err(format!("{other:?}")),
        }
    }

    /// GET `path` through the balancer: status and body.
    async fn get(&self, path: &str) -> (u16, String) {
        let mut s = self.tls("127.0.0.1").await;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n", self.port);
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        // Read to the end; a balancer that closes without TLS's
        // close_notify has still sent the whole answer.
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("in time");
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master then stops its workers too.
        if let Some(mut p) = self.process.take() {
            let _ = Command::new("kill").args(["-TERM", &p.0.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while p.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Open WebSockets on each of the `live` nodes.
async fn open_on(live: &[u8]) -> Vec<i64> {
    let mut open = Vec::new();
    for &n in live {
        open.push(metric(n, "connections_open").await);
    }
    open
}

/// Connects through the balancer from `source`; the client and the node
/// it landed on (the one whose count of open WebSockets went up).
async fn connect_landing(lb: &Balancer, source: &str, live: &[u8]) -> (Client, u8) {
    let before = open_on(live).await;
    let c = lb.connect(source).await.unwrap_or_else(|e| panic!("a WebSocket from {source}: {e}"));
    let after = open_on(live).await;
    let grew: Vec<u8> =
        live.iter().zip(before.iter().zip(&after)).filter(|(_, (b, a))| a > b).map(|(n, _)| *n).collect();
    let [n] = grew[..] else { panic!("one node should have one more WebSocket: {before:?} -> {after:?}") };
    (c, n)
}

/// Joins `room` on an open connection; its `joined`.
async fn enter(c: &mut Client, room: &str, name: &str) -> Value {
    c.send(json!({"type": "join", "room": room, "name": name})).await;
    let joined = c.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    c.id = joined["you"].as_str().expect("you").to_owned();
    joined
}

/// The next `signal` a client gets (peer-joined and the like skipped).
async fn next_signal(c: &mut Client) -> Value {
    loop {
        let m = c.recv().await;
        if m["type"] == "signal" {
            return m;
        }
    }
}

/// Reads until the connection ends, however it ends (a close frame from
/// the node, or the balancer dropping it): the close code, 1006 if none.
async fn until_closed(c: &mut Client) -> u16 {
    loop {
        match c.recv_within(crate::support::PATIENCE).await {
            Some(Ok(_)) => continue,
            Some(Err((code, _))) => return code,
            None => panic!("the connection stayed open"),
        }
    }
}

const QUIET: Duration = Duration::from_millis(300);

/// Comes back into `room` through the balancer from `source` with
/// `resume`, trying again every 100 ms while the cluster finds the room a
/// new home; the client, its `joined`, and every refused try.
async fn rejoin(lb: &Balancer, source: &str, room: &str, resume: &str) -> (Client, Value, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused = Vec::new();
    loop {
        match lb.connect(source).await {
            Ok(mut c) => {
                c.send(json!({"type": "join", "room": room, "name": "back", "resume": resume})).await;
                match c.next_or_close().await {
                    Ok(joined) if joined["type"] == "joined" => {
                        c.id = joined["you"].as_str().expect("you").to_owned();
                        return (c, joined, refused);
                    }
                    other => refused.push(format!("{other:?}")),
                }
            }
            Err(e) => refused.push(e),
        }
        assert!(Instant::now() < deadline, "could not rejoin from {source}: {refused:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The scripted scenario, the same for every balancer.
async fn scripted_clients_through(kind: Kind) {
    // One WebSocket per address: a node that saw the balancer's address
    // instead of the browser's (X-Forwarded-For) would refuse the second
    // client the balancer sends it.
    let (mut redis, mut nodes) =
        cluster(&["--no-turn", "--no-sfu", "--trust-proxy", "--max-connections-per-ip", "1"]).await;
    let lb = Balancer::start(kind);
    let name = kind.lang();
    let live = [2u8, 3, 4];

    // Round robin: three WebSockets in a row land on three nodes; a fourth
    // on one of them again, where the node tells its browser from the
    // first one's by the address the balancer forwards.
    let mut clients = Vec::new();
    for i in 1..=4 {
        clients.push(connect_landing(&lb, &format!("127.0.1.{i}"), &live).await);
    }
    let landed: Vec<u8> = clients.iter().map(|(_, n)| *n).collect();
    println!("{name}: four WebSockets in a row landed on {landed:?}");
    let mut first_three = landed[..3].to_vec();
    first_three.sort();
    assert_eq!(first_three, [2, 3, 4], "round robin over the three nodes: {landed:?}");
    let (mut d, d_node) = clients.pop().expect("D");
    let (mut c, c_node) = clients.pop().expect("C");
    let (mut b, b_node) = clients.pop().expect("B");
    let (mut a, a_node) = clients.pop().expect("A");
    // "tea" lives on a node that holds one of its members' WebSockets and
    // not D's; "other", D's room, on D's own node.
    let victim = [a_node, b_node, c_node].into_iter().find(|&n| n != d_node).expect("a node without D");
    home_on(&redis, "tea", victim);
    home_on(&redis, "other", d_node);
    enter(&mut a, "tea", "A").await;
    enter(&mut b, "tea", "B").await;
    enter(&mut c, "tea", "C").await;
    enter(&mut d, "other", "D").await;

    // Each signal reaches the peer named, and nobody else.
    a.signal(&b.id, json!({"n": 1})).await;
    let got = next_signal(&mut b).await;
    assert_eq!((got["from"].as_str(), &got["data"]), (Some(a.id.as_str()), &json!({"n": 1})));
    c.signal(&a.id, json!({"n": 2})).await;
    let got = next_signal(&mut a).await;
    assert_eq!((got["from"].as_str(), &got["data"]), (Some(c.id.as_str()), &json!({"n": 2})));
    for who in [&mut b, &mut c] {
        while let Some(m) = who.recv_within(QUIET).await {
            let m = m.expect("still open");
            assert_eq!(m["type"], "peer-joined", "nothing but arrivals: {m}");
        }
    }
    d.expect_silence(QUIET).await;

    // Kill `victim`: the home of "tea" and the node of one of its members.
    let ids = [a.id.clone(), b.id.clone(), c.id.clone()];
    let tokens = [resume_token(&mut a).await, resume_token(&mut b).await, resume_token(&mut c).await];
    let index = live.iter().position(|&n| n == victim).expect("victim");
    let killed = Instant::now();
    drop(nodes.remove(index));

    // Meanwhile, the balancer answers for the dead node at once: every
    // request reaches a live one, before any health check could notice.
    let probe = async {
        let mut answers = Vec::new();
        for _ in 0..6 {
            let asked = Instant::now();
            let status = lb.get("/readyz").await.0;
            answers.push((status, asked.elapsed().as_millis()));
        }
        answers
    };
    // Every member of "tea" loses its WebSocket, the one on the dead node
    // with it, the others told their room moved; each comes back through
    // the balancer (from another address, as a phone might) with its id.
    let failover = async {
        let mut closes = Vec::new();
        let mut back = Vec::new();
        for (i, (who, n)) in [(&mut a, a_node), (&mut b, b_node), (&mut c, c_node)].into_iter().enumerate() {
            let code = until_closed(who).await;
            if n == victim {
                assert_ne!(code, 1012, "the dead node's own client: {code}");
            } else {
                assert_eq!(code, 1012, "room moved to another server");
            }
            closes.push((code, killed.elapsed().as_millis()));
            back.push(rejoin(&lb, &format!("127.0.2.{i}"), "tea", &tokens[i]).await);
        }
        (closes, back, killed.elapsed())
    };
    let (answers, (closes, mut back, took)) = tokio::join!(probe, failover);
    println!("{name}: /readyz through the balancer right after the kill (status, ms): {answers:?}");
    let refused: Vec<&String> = back.iter().flat_map(|(_, _, r)| r).collect();
    println!(
        "{name}: node {victim} (home of the room and one member's WebSocket) killed; closes (code, ms): \
         {closes:?}; all three back through the balancer with their ids after {:.2} s; tries refused \
         meanwhile: {refused:?}",
        took.as_secs_f64(),
    );
    assert!(
        answers.iter().all(|&(status, ms)| status == 200 && ms < 500),
        "{name} sent requests to the dead node: {answers:?}"
    );
    assert!(
        refused.iter().all(|r| !r.starts_with("HTTP")),
        "{name} handed a WebSocket to the dead node: {refused:?}"
    );
    for ((_, joined, _), id) in back.iter().zip(&ids) {
        assert_eq!(
            (joined["you"].as_str(), &joined["resumed"]),
            (Some(id.as_str()), &json!(true)),
            "{joined}"
        );
    }
    assert!(took < Duration::from_millis(3500), "{name}: failover took {took:?}, target 3 s");

    // D, on a live node in a room homed there, was left alone: a WebSocket
    // stays on its node for its lifetime, whatever the balancer does with
    // new ones.
    d.expect_silence(QUIET).await;
    d.ping().await;
    // The room works again: the last one back finds the other two, and
    // signals flow.
    let (mut last, joined, _) = back.pop().expect("C");
    assert_eq!(joined["peers"].as_array().map(Vec::len), Some(2), "{joined}");
    let (mut first, _, _) = back.remove(0);
    last.signal(&first.id, json!({"after": "failover"})).await;
    let got = next_signal(&mut first).await;
    assert_eq!(got["from"], last.id.as_str());
    drop((first, last, back));

    // A rolling restart: D's node, the home of its room, drains
    // (SIGTERM). D is told, and is back through the balancer on the node
    // left, with its id; meanwhile the page is served every time.
    let d_id = d.id.clone();
    let d_token = resume_token(&mut d).await;
    let left: Vec<u8> = live.into_iter().filter(|&n| n != victim).collect();
    let node = nodes.remove(left.iter().position(|&n| n == d_node).expect("D's node"));
    let drained = Instant::now();
    let stopping = tokio::task::spawn_blocking(move || node.terminate());
    let pages = async {
        let mut statuses = Vec::new();
        while drained.elapsed() < Duration::from_millis(1500) {
            statuses.push(lb.get("/r/other").await.0);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        statuses
    };
    let comeback = async {
        assert_eq!(d.expect_close().await, (1001, "server shutting down".to_owned()));
        let (d, joined, refused) = rejoin(&lb, "127.0.3.1", "other", &d_token).await;
        (d, joined, refused, drained.elapsed())
    };
    let (statuses, (mut d, joined, refused, took)) = tokio::join!(pages, comeback);
    println!(
        "{name}: node {d_node} drained; D back through the balancer with its id after {:.2} s (refused meanwhile: \
         {refused:?}); the page through the balancer meanwhile: {statuses:?}",
        took.as_secs_f64()
    );
    assert_eq!((joined["you"].as_str(), &joined["resumed"]), (Some(d_id.as_str()), &json!(true)), "{joined}");
    assert!(statuses.iter().all(|&s| s == 200), "{name} served errors during a drain: {statuses:?}");
    assert!(took < Duration::from_secs(2), "{name}: D took {took:?} to come back from a drain");
    d.ping().await;
    stopping.await.expect("the drained node exits");

    // Redis goes away: every node says it is not ready. A health-checking
    // balancer must not take them all out: the page is still served, and
    // a join is told why it cannot be (nginx checks nothing but failed
    // connections, so this is HAProxy's part).
    if let Kind::Haproxy = kind {
        let last = left.into_iter().find(|&n| n != d_node).expect("one node left");
        redis.stop();
        let stopped = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(10);
        while http(last, "/readyz").await.0 != 503 {
            assert!(Instant::now() < deadline, "node {last} did not notice Redis was gone");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Past two failed checks a second apart.
        let unready = Instant::now();
        let noticed = stopped.elapsed();
        let mut statuses = Vec::new();
        while unready.elapsed() < Duration::from_millis(2500) {
            statuses.push(lb.get("/r/other").await.0);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "{name}: Redis gone, node {last} unready after {:.2} s; the page through the balancer then: {statuses:?}",
            noticed.as_secs_f64()
        );
        assert!(
            statuses.iter().all(|&s| s == 200),
            "{name} stopped serving when Redis went away: {statuses:?}"
        );
        let mut e = lb.connect("127.0.4.1").await.expect("a WebSocket while Redis is away");
        e.send(json!({"type": "join", "room": "fresh", "name": "E"})).await;
        e.expect_error("cluster-unavailable").await;
        d.ping().await;
    }
}

#[tokio::test]
async fn haproxy_as_documented_spreads_clients_and_brings_them_back_after_a_node_dies() {
    if !in_loopback_namespace(
        "balancer::haproxy_as_documented_spreads_clients_and_brings_them_back_after_a_node_dies",
    ) {
        return;
    }
    scripted_clients_through(Kind::Haproxy).await;
}

#[tokio::test]
async fn nginx_as_documented_spreads_clients_and_brings_them_back_after_a_node_dies() {
    if !in_loopback_namespace(
        "balancer::nginx_as_documented_spreads_clients_and_brings_them_back_after_a_node_dies",
    ) {
        return;
    }
    scripted_clients_through(Kind::Nginx).await;
}

/// Which of `live` holds one more open WebSocket than `before` says, once
/// the counts settle there (a page's lobby opens short-lived ones too).
async fn one_more_on(live: &[u8], before: &[i64]) -> u8 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = open_on(live).await;
        let grew: Vec<u8> =
            live.iter().zip(before.iter().zip(&now)).filter(|(_, (b, n))| n > b).map(|(n, _)| *n).collect();
        let total: i64 = now.iter().sum::<i64>() - before.iter().sum::<i64>();
        if let ([n], 1) = (grew.as_slice(), total) {
            return *n;
        }
        assert!(Instant::now() < deadline, "no single new WebSocket: {before:?} -> {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two Chromium pages load the call page through HAProxy, as documented,
/// and call each other with their WebSockets on different nodes: each
/// decodes the other's colour.
#[tokio::test]
async fn two_browsers_call_through_haproxy_from_different_nodes() {
    if !in_loopback_namespace("balancer::two_browsers_call_through_haproxy_from_different_nodes") {
        return;
    }
    let dir = scratch("balancer-call");
    const RED: [u8; 3] = [81, 90, 240];
    const BLUE: [u8; 3] = [41, 240, 110];
    let (red, blue) = (dir.join("red.y4m"), dir.join("blue.y4m"));
    solid_y4m(&red, RED);
    solid_y4m(&blue, BLUE);
    let (redis, mut nodes) = cluster(&["--no-turn", "--no-sfu", "--trust-proxy"]).await;
    let lb = Balancer::start(Kind::Haproxy);
    let live = [2u8, 3, 4];
    let url = format!("https://localhost:{}/r/lb-call", lb.port);
    let driver = Driver::start();
    let a = driver.browser("A", &red, &dir.join("profile-a")).await;
    let b = driver.browser("B", &blue, &dir.join("profile-b")).await;
    let before = open_on(&live).await;
    a.goto(&url).await;
    a.join().await;
    a.wait_state("call").await;
    let a_node = one_more_on(&live, &before).await;
    // The page's requests go round robin too, so B's WebSocket may land
    // on A's node: then B loads the page again, as a person might.
    let before = open_on(&live).await;
    let mut b_node = a_node;
    for _ in 0..5 {
        b.goto(&url).await;
        b.join().await;
        b.wait_state("call").await;
        b_node = one_more_on(&live, &before).await;
        if b_node != a_node {
            break;
        }
    }
    assert_ne!(a_node, b_node, "B's WebSocket kept landing on A's node");
    println!("browsers through HAProxy: A's WebSocket on n{a_node}, B's on n{b_node}");
    a.wait_media().await;
    b.wait_media().await;
    let (ra, rb) = (a.remote_colour().await, b.remote_colour().await);
    assert!(ra[2] > 180 && ra[0] < 80, "A sees B's blue: {ra:?}");
    assert!(rb[0] > 180 && rb[2] < 80, "B sees A's red: {rb:?}");
    a.screenshot(&artifacts().join("balancer-call-a.png")).await;

    // B's node dies (and with it the room, if it was the home): the pages
    // reconnect through HAProxy with their ids while the call's media,
    // browser to browser, goes on.
    let home = home_of(&redis, "lb-call");
    let you = "return window.webconf.state.joined?.you";
    let ids = (a.eval(you).await, b.eval(you).await);
    let frames = |s: &Value| s["video"]["framesDecoded"].as_u64().unwrap_or(0);
    let mut last = (frames(&a.stats().await[0]), frames(&b.stats().await[0]));
    let killed = Instant::now();
    drop(nodes.remove(live.iter().position(|&n| n == b_node).expect("B's node")));
    let rejoined = "const r = window.webconf.metrics.reconnects.at(-1); return Boolean(r && r.rejoined)";
    let a_too = home == format!("n{b_node}");
    let back = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = (frames(&a.stats().await[0]), frames(&b.stats().await[0]));
        assert!(now.0 > last.0 && now.1 > last.1, "media stalled: {last:?} -> {now:?}");
        last = now;
        if b.eval(rejoined).await == true && (!a_too || a.eval(rejoined).await == true) {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "the pages did not come back through HAProxy");
    };
    assert_eq!((a.eval(you).await, b.eval(you).await), ids, "the same ids");
    println!(
        "browsers through HAProxy: n{b_node} (B's; home {home}) killed, back with their ids after {:.2} s, media never stopped",
        back.as_secs_f64()
    );
    a.quit().await;
    b.quit().await;
}
