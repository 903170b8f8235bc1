//! HTTPS and WSS: certificates from PEM files (re-read when the files
//! change, so a renewed certificate needs no restart) or generated at start
//! (self-signed, for a LAN), and a listener that does TLS handshakes
//! concurrently so one slow client cannot hold up the others.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once; more clients wait in the backlog.
const MAX_HANDSHAKES: usize = 256;
/// Finished handshakes waiting for the HTTP server to take them.
const READY_QUEUE: usize = 64;

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// PEM files: a certificate chain and its private key.
    Files {
        /// The chain, leaf first.
        cert: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A certificate made at start for these names (DNS names or IPs).
    SelfSigned {
        /// Subject alternative names.
        names: Vec<String>,
    },
}

/// A certificate that could not be loaded, in words for the operator.
#[derive(Debug)]
pub struct TlsError(String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The server's TLS set-up: what it presents, and how to accept with it.
#[derive(Clone, Debug)]
pub struct Tls {
    resolver: Arc<Resolver>,
    source: TlsSource,
}

#[derive(Debug)]
struct Resolver {
    /// Read on every handshake, written only on reload.
    current: RwLock<Loaded>,
}

#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
    /// The files' modification times when loaded, to notice changes.
    stamps: Option<(SystemTime, SystemTime)>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).key.clone())
    }
}

impl Tls {
    /// Loads (or makes) the certificate now; fails with a clear reason.
    pub fn load(source: TlsSource) -> Result<Tls, TlsError> {
        let loaded = load(&source)?;
        Ok(Tls { resolver: Arc::new(Resolver { current: RwLock::new(loaded) }), source })
    }

    /// SHA-256 fingerprint of the leaf certificate, as `AB:CD:...`.
    pub fn fingerprint(&self) -> String {
        self.resolver.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).fingerprint.clone()
    }

    /// A rustls server configuration presenting the current certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Re-reads the certificate files if they changed since they were
    /// loaded. Returns whether a new certificate is now in use. A file that
    /// fails to load keeps the old certificate (and says why).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let TlsSource::Files { cert, key } = &self.source else { return Ok(false) };
        let now = Some((modified(cert)?, modified(key)?));
        let old = self.resolver.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).stamps;
        if now == old {
            return Ok(false);
        }
        let loaded = load(&self.source)?;
        *self.resolver.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = loaded;
        Ok(true)
    }

    /// Checks the certificate files every `every` for as long as the
    /// returned task lives.
    pub fn spawn_reloader(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match tls.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(fingerprint = %tls.fingerprint(), "loaded a new TLS certificate")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("kept the old TLS certificate: {e}"),
                }
            }
        })
    }
}

fn modified(path: &Path) -> Result<SystemTime, TlsError> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| TlsError(format!("cannot read {}: {e}", path.display())))
}

fn load(source: &TlsSource) -> Result<Loaded, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let (chain, key, stamps) = match source {
        TlsSource::Files { cert, key } => {
            let stamps = Some((modified(cert)?, modified(key)?));
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| TlsError(format!("cannot read certificates from {}: {e}", cert.display())))?
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError(format!("{} is not a PEM certificate chain: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(TlsError(format!("{} holds no certificate", cert.display())));
            }
            let private = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| TlsError(format!("{} holds no usable private key: {e}", key.display())))?;
            (chain, private, stamps)
        }
        TlsSource::SelfSigned { names } => {
            let made = rcgen::generate_simple_self_signed(names.clone())
                .map_err(|e| TlsError(format!("cannot make a self-signed certificate for {names:?}: {e}")))?;
            let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
            (vec![made.cert.der().clone()], key, None)
        }
    };
    let fingerprint = fingerprint(&chain[0]);
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| TlsError(format!("the certificate and key do not go together: {e}")))?;
    Ok(Loaded { key: Arc::new(certified), fingerprint, stamps })
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref()).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Accepts TCP connections and hands over those that completed a TLS
/// handshake. Handshakes run in their own tasks, at most
/// [`MAX_HANDSHAKES`] at a time, each within [`HANDSHAKE_TIMEOUT`].
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let acceptor_task = tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                let (stream, addr) = match tcp.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, retry.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local, acceptor_task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The acceptor task only ends when aborted, with us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Names a self-signed certificate should cover on this machine:
/// `localhost`, loopback addresses, the host name, and `extra`.
pub fn default_names(extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_owned());
            names.push(format!("{host}.local"));
        }
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificates_load_with_a_fingerprint() {
        let tls =
            Tls::load(TlsSource::SelfSigned { names: default_names(&["meet.test".into()]) }).expect("made");
        let fp = tls.fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'));
        let _ = tls.server_config();
    }

    #[test]
    fn files_load_reload_when_changed_and_bad_files_say_why() {
        let dir = std::env::temp_dir().join(format!("webconf-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let write = |names: Vec<String>| {
            let made = rcgen::generate_simple_self_signed(names).expect("made");
            std::fs::write(&cert, made.cert.pem()).expect("write cert");
            std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
        };
        write(vec!["one.test".into()]);
        let tls = Tls::load(TlsSource::Files { cert: cert.clone(), key: key.clone() }).expect("loads");
        let first = tls.fingerprint();
        assert!(!tls.reload_if_changed().expect("unchanged"));
        // A renewed certificate (a later modification time) is picked up.
        std::thread::sleep(Duration::from_millis(20));
        write(vec!["two.test".into()]);
        let later = SystemTime::now() + Duration::from_secs(2);
        let file = std::fs::File::options().write(true).open(&cert).expect("open");
        file.set_modified(later).expect("touch");
        assert!(tls.reload_if_changed().expect("reloads"));
        assert_ne!(tls.fingerprint(), first);
        // A broken file keeps the old certificate and says why.
        std::fs::write(&cert, "not a certificate").expect("write");
        file.set_modified(later + Duration::from_secs(2)).expect("touch");
        let err = tls.reload_if_changed().expect_err("broken");
        assert!(err.to_string().contains("no certificate") || err.to_string().contains("PEM"), "{err}");
        let fresh = Tls::load(TlsSource::Files { cert: cert.clone(), key: dir.join("missing.pem") });
        assert!(fresh.is_err_and(|e| e.to_string().contains("missing.pem")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
