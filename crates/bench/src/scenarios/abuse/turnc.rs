//! A TURN client over UDP (RFC 8656), just enough for the abuse scenario:
//! an allocation with long-term credentials (the REST scheme webconf and
//! coturn share), permissions, a channel, and ChannelData. Built on the
//! `turn` crate's STUN codec, so it speaks exactly what the server parses.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use turn::stun::{self, Builder, Class, Message, Method, attr};

/// A TURN credential: the REST username and its password.
#[derive(Clone, Debug)]
pub struct Credential {
    /// `<unix expiry>:<user>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
}

impl Credential {
    /// Mints a credential with the server's shared secret (for coturn,
    /// whose credentials webconf would mint the same way with
    /// `--turn-external`), valid for a day.
    pub fn mint(secret: &str, user: &str) -> Credential {
        let expires =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
                + 86_400;
        let username = turn::auth::rest_username(expires, user);
        let password = turn::auth::rest_password(secret.as_bytes(), &username);
        Credential { username, password }
    }
}

/// Why a request did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnError {
    /// No answer after every retransmission.
    NoAnswer,
    /// An error response with this code (508: a cap; 486: a quota; 403:
    /// refused by policy; 401: the credential).
    Code(u16),
    /// The socket failed, or the answer made no sense.
    Other(String),
}

impl std::fmt::Display for TurnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TurnError::NoAnswer => write!(f, "no answer"),
            TurnError::Code(c) => write!(f, "error {c}"),
            TurnError::Other(e) => write!(f, "{e}"),
        }
    }
}

/// One client's allocation on one UDP socket.
#[derive(Debug)]
pub struct TurnClient {
    /// The client's socket, connected to the server.
    pub sock: UdpSocket,
    cred: Credential,
    realm: String,
    nonce: String,
    key: [u8; 16],
    next_tx: u64,
    /// How long to wait for an answer before sending a request again, and
    /// how many times to send it. A server that limits challenges per
    /// address leaves some unanswered: the client retransmits, as RFC 8489
    /// section 6.2.1 says.
    pub rto: Duration,
    /// Sends of one request before giving up.
    pub tries: u32,
}

impl TurnClient {
    /// A socket bound to `source` (port chosen by the kernel), talking to
    /// `server` with `cred`.
    pub async fn bind(
        source: std::net::IpAddr,
        server: SocketAddr,
        cred: Credential,
    ) -> Result<TurnClient, String> {
        let sock =
            UdpSocket::bind(SocketAddr::new(source, 0)).await.map_err(|e| format!("bind {source}: {e}"))?;
        sock.connect(server).await.map_err(|e| format!("connect {server}: {e}"))?;
        Ok(TurnClient {
            sock,
            cred,
            realm: String::new(),
            nonce: String::new(),
            key: [0; 16],
            next_tx: u64::from(std::process::id()) << 40 | u64::from(rand_u32()),
            rto: Duration::from_millis(500),
            tries: 7,
        })
    }

    fn transaction(&mut self) -> [u8; 12] {
        self.next_tx = self.next_tx.wrapping_add(1);
        let mut t = [0u8; 12];
        t[4..].copy_from_slice(&self.next_tx.to_be_bytes());
        t
    }

    /// Sends a request built by `build` (its method's attributes) and waits
    /// for its answer, retransmitting; with credentials once a challenge
    /// gave realm and nonce (a `438` renews the nonce and tries again).
    async fn request(
        &mut self,
        method: Method,
        build: &(dyn Fn(Builder) -> Builder + Sync),
    ) -> Result<Vec<u8>, TurnError> {
        let mut buf = vec![0u8; 2048];
        let mut retried_auth = false;
        loop {
            let tx = self.transaction();
            let mut b = build(Builder::new(method, Class::Request, tx));
            if !self.nonce.is_empty() {
                b = b
                    .attr(attr::USERNAME, self.cred.username.as_bytes())
                    .attr(attr::REALM, self.realm.as_bytes())
                    .attr(attr::NONCE, self.nonce.as_bytes())
                    .integrity(&self.key);
            }
            let packet = b.finish_with_fingerprint();
            let answer = self.exchange(&packet, tx, &mut buf).await?;
            let msg = Message::parse(&buf[..answer]).map_err(|e| TurnError::Other(format!("{e:?}")))?;
            if msg.class == Class::Success {
                return Ok(buf[..answer].to_vec());
            }
            let code = msg
                .get(attr::ERROR_CODE)
                .and_then(|v| Some(u16::from(*v.get(2)?) * 100 + u16::from(*v.get(3)?)));
            let code = code.unwrap_or(0);
            if (code == 401 || code == 438) && !retried_auth {
                let (Some(realm), Some(nonce)) = (msg.get_str(attr::REALM), msg.get_str(attr::NONCE)) else {
                    return Err(TurnError::Code(code));
                };
                // A first 401 is the challenge; a second one after a
                // challenge means the credential was refused.
                retried_auth = code == 401 && !self.nonce.is_empty();
                self.realm = realm.to_owned();
                self.nonce = nonce.to_owned();
                self.key = turn::auth::long_term_key(&self.cred.username, &self.realm, &self.cred.password);
                continue;
            }
            return Err(TurnError::Code(code));
        }
    }

    /// Sends `packet` until a message with transaction `tx` comes back;
    /// returns its length in `buf`. Anything else that arrives is dropped.
    async fn exchange(&mut self, packet: &[u8], tx: [u8; 12], buf: &mut [u8]) -> Result<usize, TurnError> {
        for _ in 0..self.tries {
            self.sock.send(packet).await.map_err(|e| TurnError::Other(format!("send: {e}")))?;
            let deadline = tokio::time::Instant::now() + self.rto;
            loop {
                match tokio::time::timeout_at(deadline, self.sock.recv(buf)).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(TurnError::Other(format!("recv: {e}"))),
                    Ok(Ok(n)) => {
                        if n >= stun::HEADER_LEN && stun::is_stun(&buf[..n]) && buf[8..20] == tx {
                            return Ok(n);
                        }
                    }
                }
            }
        }
        Err(TurnError::NoAnswer)
    }

    /// Allocates a UDP relay; returns its address.
    pub async fn allocate(&mut self) -> Result<SocketAddr, TurnError> {
        let answer =
            self.request(Method::Allocate, &|b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])).await?;
        let msg = Message::parse(&answer).map_err(|e| TurnError::Other(format!("{e:?}")))?;
        msg.get_xor_addr(attr::XOR_RELAYED_ADDRESS)
            .ok_or_else(|| TurnError::Other("no XOR-RELAYED-ADDRESS".to_owned()))
    }

    /// Installs permissions for `peers` in one request.
    pub async fn create_permission(&mut self, peers: &[SocketAddr]) -> Result<(), TurnError> {
        let peers = peers.to_vec();
        self.request(Method::CreatePermission, &move |mut b| {
            for p in &peers {
                b = b.xor_addr(attr::XOR_PEER_ADDRESS, *p);
            }
            b
        })
        .await
        .map(|_| ())
    }

    /// Binds `channel` to `peer`.
    pub async fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<(), TurnError> {
        self.request(Method::ChannelBind, &move |b| {
            b.u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16).xor_addr(attr::XOR_PEER_ADDRESS, peer)
        })
        .await
        .map(|_| ())
    }
}

/// A little randomness for transaction ids (no `rand` dependency here).
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::net::now_ns());
    h.finish() as u32
}

impl TurnClient {
    /// Ends the allocation (a Refresh with lifetime 0).
    pub async fn release(&mut self) -> Result<(), TurnError> {
        self.request(Method::Refresh, &|b| b.u32(attr::LIFETIME, 0)).await.map(|_| ())
    }
}
