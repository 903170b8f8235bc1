//! A scripted WebSocket client and in-process servers for the tests.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long any single expected message may take.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A server running in this process on 127.0.0.1:0; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: server::Config) -> TestServer {
        let listener = server::bind("127.0.0.1:0".parse().expect("addr")).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(server::serve(listener, config, async move {
            let _ = stopped.await;
        }));
        TestServer { addr, stop: Some(stop), done: Some(done) }
    }

    pub async fn with_defaults() -> TestServer {
        Self::start(server::Config::default()).await
    }

    /// Shuts down like SIGTERM would, and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.expect("serve task").expect("serve returned an error");
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends `request` as it is to `addr`; returns the whole response.
pub async fn raw_http(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("in time")
        .expect("read");
    response
}

/// A plain HTTP/1.1 GET: the status and the body.
pub async fn http_get(server: &TestServer, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr);
    let response = raw_http(server.addr, &request).await;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The transports a test client speaks over.
pub type Transport = Box<dyn Duplex>;

/// A byte stream a WebSocket can run over (plain TCP or TLS).
pub trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Duplex for T {}

/// One scripted peer.
pub struct Client {
    ws: WebSocketStream<Transport>,
    /// Set by [`Client::join`].
    pub id: String,
}

impl Client {
    /// Connects without an Origin header, as non-browser clients do.
    pub async fn connect(server: &TestServer) -> Client {
        Self::connect_with(server, None).await.expect("connect")
    }

    /// Connects from the local address `source` (such as 127.0.0.2).
    pub async fn connect_from(server: &TestServer, source: &str) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(format!("{source}:0").parse().expect("source address")).expect("bind");
        let stream = socket.connect(server.addr).await.expect("connect");
        Self::handshake(server.url().as_str(), Box::new(stream)).await.expect("upgrade")
    }

    /// Connects with the given Origin header; the HTTP status on refusal.
    pub async fn connect_with(server: &TestServer, origin: Option<&str>) -> Result<Client, u16> {
        let mut request = server.url().into_client_request().expect("request");
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().expect("header value"));
        }
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        Self::handshake(request, Box::new(stream)).await
    }

    /// Does the WebSocket handshake for `request` over `stream` (plain TCP or
    /// TLS); the HTTP status on refusal.
    pub async fn handshake(
        request: impl IntoClientRequest + Unpin,
        stream: Transport,
    ) -> Result<Client, u16> {
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((ws, _)) => Ok(Client { ws, id: String::new() }),
            Err(WsError::Http(res)) => Err(res.status().as_u16()),
            Err(e) => panic!("WebSocket handshake failed: {e}"),
        }
    }

    /// Connects, says hello and joins `room` as `name`; returns `joined`.
    pub async fn join(server: &TestServer, room: &str, name: &str) -> (Client, Value) {
        Self::join_with(server, json!({"type": "join", "room": room, "name": name})).await
    }

    /// Connects, says hello and sends `join` (a whole message); returns
    /// the `joined` answer.
    pub async fn join_with(server: &TestServer, join: Value) -> (Client, Value) {
        let mut c = Self::connect(server).await;
        c.hello().await;
        c.send(join).await;
        let joined = c.recv().await;
        assert_eq!(joined["type"], "joined", "{joined}");
        c.id = joined["you"].as_str().expect("you").to_owned();
        (c, joined)
    }

    pub async fn hello(&mut self) {
        self.send(json!({"type": "hello", "version": 3})).await;
        let welcome = self.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["version"], 3);
    }

    pub async fn send(&mut self, msg: Value) {
        self.send_text(&msg.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// Sends a signal with `data` to `to`.
    pub async fn signal(&mut self, to: &str, data: Value) {
        self.send(json!({"type": "signal", "to": to, "data": data})).await;
    }

    /// The next protocol message; panics after [`PATIENCE`] or on close.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no message within {PATIENCE:?}"));
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str()).expect("server sends JSON");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next message, which must be an error with `code`.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let msg = self.recv().await;
        assert_eq!(msg["type"], "error", "{msg}");
        assert_eq!(msg["code"], code, "{msg}");
        assert!(msg["message"].as_str().is_some_and(|m| !m.is_empty()), "{msg}");
        msg
    }

    /// Asserts that no protocol message arrives for `dur`.
    pub async fn expect_silence(&mut self, dur: Duration) {
        let deadline = tokio::time::Instant::now() + dur;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Round-trips a ping: proves the connection still works and that
    /// everything the server sent before has arrived.
    pub async fn ping(&mut self) -> Value {
        self.send(json!({"type": "ping"})).await;
        let pong = self.recv().await;
        assert_eq!(pong["type"], "pong", "{pong}");
        pong
    }

    /// The next protocol message, or the close code and reason if the
    /// server closes instead.
    pub async fn next_or_close(&mut self) -> Result<Value, (u16, String)> {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("nothing within {PATIENCE:?}"));
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Ok(serde_json::from_str(t.as_str()).expect("server sends JSON"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return Err((u16::from(code), reason.as_str().to_owned()));
                }
                other => panic!("expected a message or a close frame, got {other:?}"),
            }
        }
    }

    /// The next protocol message if one comes within `dur`; `Err` with the
    /// close code and reason if the server closes instead.
    pub async fn recv_within(&mut self, dur: Duration) -> Option<Result<Value, (u16, String)>> {
        let deadline = tokio::time::Instant::now() + dur;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Some(Ok(serde_json::from_str(t.as_str()).expect("server sends JSON")));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.as_str().to_owned()));
                    return Some(Err((code, reason)));
                }
                other => return Some(Err((1006, format!("{other:?}")))),
            }
        }
    }

    /// Waits for the server to close; returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no close within {PATIENCE:?}"));
            match msg {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return (u16::from(code), reason.as_str().to_owned());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// TLS from a fresh self-signed certificate for `localhost`, loaded from
/// PEM files written under a scratch folder named by `tag`; the
/// certificate (to trust) and the folder (to remove) come back too.
pub fn self_signed_tls(
    tag: &str,
) -> (server::tls::Tls, rustls_pki_types::CertificateDer<'static>, std::path::PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let dir = std::env::temp_dir().join(format!("webconf-it-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).expect("write");
    let tls = server::tls::Tls::load(server::tls::TlsSource::Files {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    })
    .expect("load");
    (tls, made.cert.der().clone(), dir)
}

/// A server with TLS on (see [`self_signed_tls`]).
pub async fn tls_test_server(
    tag: &str,
) -> (TestServer, rustls_pki_types::CertificateDer<'static>, std::path::PathBuf) {
    let (tls, cert, dir) = self_signed_tls(tag);
    let server = TestServer::start(server::Config { tls: Some(tls), ..server::Config::default() }).await;
    (server, cert, dir)
}

/// A TLS connector that trusts exactly `cert`.
pub fn tls_connector(cert: rustls_pki_types::CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("trust the certificate");
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
}
