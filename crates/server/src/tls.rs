//! HTTPS and WSS: certificates from PEM files (re-read when the files
//! change, so a renewed certificate needs no restart) or self-signed for a
//! LAN (kept in the state directory, so the fingerprint people accepted
//! survives a restart), and the handshake of one connection (within a
//! deadline, each in its own task: see `accept.rs`), which answers plain
//! HTTP sent to it by mistake with a redirect to HTTPS.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The first byte of every TLS connection: a handshake record (RFC 8446,
/// section 5.1). A plain HTTP request starts with a method's letter.
const TLS_HANDSHAKE_RECORD: u8 = 22;

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
    /// A self-signed certificate for these names (DNS names or IPs), made
    /// at the first start and kept in `keep_in` for the next ones.
    SelfSigned {
        /// Subject alternative names.
        names: Vec<String>,
        /// Where the certificate, its key and the names it covers are kept
        /// (the state directory's `tls/`), so that people who accepted its
        /// fingerprint need not again after a restart. A kept certificate
        /// that does not name all of `names` (the machine got a new address)
        /// is replaced by one naming those and the old ones. `None`: a new
        /// certificate at every start.
        keep_in: Option<PathBuf>,
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
        TlsSource::SelfSigned { names, keep_in } => {
            let (cert, key) = self_signed(names, keep_in.as_deref())?;
            (vec![cert], key, None)
        }
    };
    let fingerprint = fingerprint(&chain[0]);
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| TlsError(format!("the certificate and key do not go together: {e}")))?;
    Ok(Loaded { key: Arc::new(certified), fingerprint, stamps })
}

/// Most names one self-signed certificate accumulates across new addresses;
/// past it, a new certificate names only the current ones.
const MAX_KEPT_NAMES: usize = 100;

/// A self-signed certificate for `names`: the one kept in `dir` if it names
/// them all, else a new one (kept there if possible).
fn self_signed(
    names: &[String],
    dir: Option<&Path>,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let mut covered = Vec::new();
    if let Some(dir) = dir {
        match read_kept(dir) {
            Ok(Some((cert, key, kept))) if names.iter().all(|n| kept.contains(n)) => return Ok((cert, key)),
            Ok(Some((_, _, kept))) => {
                tracing::info!(
                    "the kept self-signed certificate does not name all of {names:?}: making a new one \
                     (browsers will show a new fingerprint)"
                );
                covered = kept;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "cannot use the self-signed certificate in {}: {e}; making a new one",
                dir.display()
            ),
        }
    }
    for name in names {
        if !covered.contains(name) {
            covered.push(name.clone());
        }
    }
    if covered.len() > MAX_KEPT_NAMES {
        covered = names.to_vec();
    }
    let made = rcgen::generate_simple_self_signed(covered.clone())
        .map_err(|e| TlsError(format!("cannot make a self-signed certificate for {covered:?}: {e}")))?;
    if let Some(dir) = dir
        && let Err(e) = keep(dir, &made, &covered)
    {
        tracing::warn!(
            "cannot keep the self-signed certificate in {}: {e}; it changes at the next start",
            dir.display()
        );
    }
    let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    Ok((made.cert.der().clone(), key))
}

/// A kept self-signed certificate, its key, and the names it covers.
type Kept = (CertificateDer<'static>, PrivateKeyDer<'static>, Vec<String>);

/// The certificate, key and names kept in `dir`, if there are any; an error
/// if they are unreadable or do not go together.
fn read_kept(dir: &Path) -> Result<Option<Kept>, String> {
    let names = match std::fs::read_to_string(dir.join("names")) {
        Ok(text) => text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("names: {e}")),
    };
    let cert = CertificateDer::from_pem_file(dir.join("cert.pem")).map_err(|e| format!("cert.pem: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).map_err(|e| format!("key.pem: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(vec![cert.clone()], key.clone_key(), &provider)
        .map_err(|e| format!("cert.pem and key.pem do not go together: {e}"))?;
    Ok(Some((cert, key, names)))
}

/// Writes a certificate, its key (readable by us alone) and its names into
/// `dir`, each file whole or not at all (written aside, then renamed), the
/// names last: they say the other two are there.
fn keep(dir: &Path, made: &rcgen::CertifiedKey<rcgen::KeyPair>, names: &[String]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, text: &str, private: bool| -> io::Result<()> {
        use std::io::Write;
        let aside = dir.join(format!(".{name}.new"));
        let _ = std::fs::remove_file(&aside);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if private {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&aside)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&aside, dir.join(name))
    };
    let _ = std::fs::remove_file(dir.join("names"));
    write("key.pem", &made.signing_key.serialize_pem(), true)?;
    write("cert.pem", &made.cert.pem(), false)?;
    write("names", &(names.join("\n") + "\n"), false)
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref()).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Why a connection did not become TLS.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The deadline passed first.
    TimedOut,
    /// The handshake failed.
    Failed(io::Error),
}

/// Does the TLS handshake on `stream` by `deadline` (which also bounds the
/// wait for its first byte, so a silent client holds its socket no longer).
/// Plain HTTP sent to this port (someone typed `http://`) is answered with
/// a redirect to HTTPS on `https_port`, and so is anything that is neither:
/// `Ok(None)`.
pub(crate) async fn handshake(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    https_port: u16,
    deadline: tokio::time::Instant,
) -> Result<Option<TlsStream<TcpStream>>, HandshakeError> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) if first[0].is_ascii_alphabetic() => {
            let served = redirect_plain_http(stream, https_port);
            return match tokio::time::timeout_at(deadline, served).await {
                Ok(()) => Ok(None),
                Err(_) => Err(HandshakeError::TimedOut),
            };
        }
        Ok(Ok(_)) => return Ok(None),
        Ok(Err(e)) => return Err(HandshakeError::Failed(e)),
        Err(_) => return Err(HandshakeError::TimedOut),
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(Some(tls)),
        Ok(Err(e)) => Err(HandshakeError::Failed(e)),
        Err(_) => Err(HandshakeError::TimedOut),
    }
}

/// Answers the plain HTTP requests on `stream` (one, then it closes) with a
/// redirect to the same host and path over HTTPS on `https_port`: what a
/// browser shows instead of "invalid response" or garbage when someone
/// typed `http://` for the HTTPS port.
async fn redirect_plain_http(stream: TcpStream, https_port: u16) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok());
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let response = crate::http::redirect_to_https(host, path, https_port);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Err(e) = served.await {
        tracing::debug!("plain HTTP on the TLS port: {e}");
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
        let names = default_names(&["meet.test".into()]);
        let tls = Tls::load(TlsSource::SelfSigned { names, keep_in: None }).expect("made");
        let fp = tls.fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'));
        let _ = tls.server_config();
    }

    /// The fingerprint people accepted survives a restart; a new address
    /// gets a new certificate that still names the old ones; a broken kept
    /// file is replaced, not fatal.
    #[test]
    fn self_signed_certificates_are_kept_until_the_names_change() {
        let dir = std::env::temp_dir().join(format!("webconf-tls-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let load = |names: &[&str]| {
            let names = names.iter().map(|n| (*n).to_owned()).collect();
            Tls::load(TlsSource::SelfSigned { names, keep_in: Some(dir.clone()) })
                .expect("made")
                .fingerprint()
        };
        let first = load(&["localhost", "192.168.1.5"]);
        assert_eq!(load(&["localhost", "192.168.1.5"]), first, "kept across a restart");
        assert_eq!(load(&["192.168.1.5"]), first, "a name fewer needs no new certificate");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("key.pem")).expect("key kept").permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is ours alone: {mode:o}");
        }
        let moved = load(&["localhost", "10.0.0.7"]);
        assert_ne!(moved, first, "a new address needs a new certificate");
        let kept = std::fs::read_to_string(dir.join("names")).expect("names");
        assert_eq!(kept.lines().collect::<Vec<_>>(), ["localhost", "192.168.1.5", "10.0.0.7"]);
        assert_eq!(load(&["192.168.1.5"]), moved, "and it still names the old one");
        std::fs::write(dir.join("cert.pem"), "garbage").expect("write");
        let fresh = load(&["localhost"]);
        assert_ne!(fresh, moved);
        // A key that is not the certificate's: replaced too.
        let other = rcgen::generate_simple_self_signed(vec!["x.test".to_owned()]).expect("made");
        std::fs::write(dir.join("key.pem"), other.signing_key.serialize_pem()).expect("write");
        let fresh = load(&["localhost"]);
        assert_ne!(fresh, moved);
        assert_eq!(load(&["localhost"]), fresh);
        let _ = std::fs::remove_dir_all(&dir);
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
