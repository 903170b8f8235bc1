//! webconf: self-hosted browser video calls in one binary.
//!
//! This is only the glue: it reads the command line, sets up logging and
//! signal handling, and hands over to [`server::serve`].

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

/// Self-hosted browser video calls: serves the web client and relays call
/// set-up between browsers in the same room.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Address and port to listen on. Use 0.0.0.0:8080 to accept other
    /// devices on your network (their cameras need HTTPS; see README).
    #[arg(long, env = "WEBCONF_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Another origin allowed to open the WebSocket (repeatable, or
    /// comma-separated), e.g. https://meet.example.org; `*` allows any. The
    /// server's own origin and loopback origins are always allowed.
    #[arg(long = "allow-origin", env = "WEBCONF_ALLOW_ORIGIN", value_delimiter = ',')]
    allow_origin: Vec<String>,

    /// Most people in one call.
    #[arg(long, env = "WEBCONF_ROOM_CAPACITY", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=50))]
    room_capacity: u16,

    /// Messages per second one connection may send (bursts of twice that);
    /// 0 turns the limit off.
    #[arg(long, env = "WEBCONF_RATE_LIMIT", default_value_t = 100)]
    rate_limit: u32,

    /// Most WebSocket connections open at once (0: no limit).
    #[arg(long, env = "WEBCONF_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,

    /// Most WebSocket connections from one IPv4 address or IPv6 /64 (0: no
    /// limit). Behind a reverse proxy every connection comes from the proxy.
    #[arg(long, env = "WEBCONF_MAX_CONNECTIONS_PER_IP", default_value_t = 100)]
    max_connections_per_ip: usize,

    /// Serve HTTPS and WSS with a certificate made at start for this
    /// machine's names (`self-signed`); browsers will ask to trust it once.
    /// For a real certificate use --tls-cert and --tls-key instead.
    #[arg(long, env = "WEBCONF_TLS", value_enum)]
    tls: Option<TlsMode>,

    /// PEM certificate chain for HTTPS (re-read when the file changes).
    #[arg(long, env = "WEBCONF_TLS_CERT", requires = "tls_key", conflicts_with = "tls")]
    tls_cert: Option<std::path::PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "WEBCONF_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// Another name (host name or IP) for the self-signed certificate.
    #[arg(long = "tls-name", env = "WEBCONF_TLS_NAME", value_delimiter = ',')]
    tls_names: Vec<String>,

    /// Also listen for plain HTTP here and redirect it to HTTPS (with TLS
    /// on), e.g. 0.0.0.0:80.
    #[arg(long, env = "WEBCONF_HTTP_REDIRECT")]
    http_redirect: Option<SocketAddr>,

    /// Running behind a reverse proxy (nginx, Caddy): trust its
    /// X-Forwarded-For and X-Forwarded-Host headers. Only set this when
    /// webconf is reachable through the proxy alone.
    #[arg(long, env = "WEBCONF_TRUST_PROXY")]
    trust_proxy: bool,

    /// Where webconf keeps its state: a `secret` file that signs resume
    /// tokens, so calls survive a restart. Default: $XDG_STATE_HOME/webconf
    /// or ~/.local/state/webconf.
    #[arg(long, env = "WEBCONF_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,

    /// Log filter: error, warn, info, debug, trace, or per module like
    /// `info,server=debug`.
    #[arg(long, env = "WEBCONF_LOG", default_value = "info")]
    log: String,
}

/// How to get a certificate without files.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TlsMode {
    /// Make one at start for this machine's names.
    SelfSigned,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("webconf: --log {:?} is not a log filter: {e}", cli.log);
            return ExitCode::from(2);
        }
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("webconf: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("webconf: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let listener = server::bind(cli.listen).map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    let addr = listener.local_addr().map_err(|e| format!("cannot read the listening address: {e}"))?;
    let limits = server::Limits {
        rate_per_sec: cli.rate_limit,
        rate_burst: cli.rate_limit.saturating_mul(2),
        max_connections: cli.max_connections,
        max_connections_per_ip: cli.max_connections_per_ip,
        ..server::Limits::default()
    };
    let tls = match (&cli.tls, &cli.tls_cert, &cli.tls_key) {
        (Some(TlsMode::SelfSigned), _, _) => {
            let mut extra = cli.tls_names.clone();
            if !addr.ip().is_unspecified() {
                extra.push(addr.ip().to_string());
            }
            let names = server::tls::default_names(&extra);
            Some(
                server::tls::Tls::load(server::tls::TlsSource::SelfSigned { names })
                    .map_err(|e| e.to_string())?,
            )
        }
        (None, Some(cert), Some(key)) => Some(
            server::tls::Tls::load(server::tls::TlsSource::Files { cert: cert.clone(), key: key.clone() })
                .map_err(|e| format!("cannot use --tls-cert/--tls-key: {e}"))?,
        ),
        _ => None,
    };
    if cli.http_redirect.is_some() && tls.is_none() {
        return Err(
            "--http-redirect needs TLS on (--tls self-signed, or --tls-cert and --tls-key)".to_owned()
        );
    }
    let secret = load_secret(cli.state_dir.as_deref());
    let config = server::Config {
        room_capacity: usize::from(cli.room_capacity),
        allowed_origins: cli.allow_origin,
        limits,
        resume_key: server::resume::ResumeKey::new(secret),
        tls: tls.clone(),
        trust_proxy: cli.trust_proxy,
        ..server::Config::default()
    };
    announce(addr, tls.as_ref());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(redirect) = cli.http_redirect {
        let plain = server::bind(redirect).map_err(|e| format!("cannot listen on {redirect}: {e}"))?;
        let mut stop = stop_rx.clone();
        let https_port = addr.port();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = server::serve_redirect(plain, https_port, stopped).await {
                tracing::error!("the HTTP redirect stopped: {e}");
            }
        });
        println_ignoring_errors(&format!("  plain HTTP on {redirect} redirects to HTTPS\n"));
    }
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    server::serve(listener, config, shutdown).await.map_err(|e| format!("server failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// The secret that signs resume tokens, from `<state dir>/secret`, made
/// there on first start. Without a usable state directory a fresh secret
/// is used: everything works, but peers cannot resume across a restart.
fn load_secret(state_dir: Option<&std::path::Path>) -> [u8; 32] {
    let dir = match state_dir {
        Some(d) => Some(d.to_path_buf()),
        None => std::env::var_os("XDG_STATE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/state")))
            .map(|d| d.join("webconf")),
    };
    let Some(dir) = dir else {
        tracing::warn!("no state directory (set --state-dir): resume tokens will not survive a restart");
        return server::random_secret();
    };
    let path = dir.join("secret");
    match read_or_create_secret(&path) {
        Ok(secret) => secret,
        Err(e) => {
            tracing::warn!("cannot use {}: {e}; resume tokens will not survive a restart", path.display());
            server::random_secret()
        }
    }
}

fn read_or_create_secret(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use std::io::Write;
    let parse = |text: &str| -> Option<[u8; 32]> {
        let text = text.trim();
        let bytes: Option<Vec<u8>> =
            (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect();
        bytes?.try_into().ok()
    };
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not 64 hex digits; delete it to make a new one",
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let secret = server::random_secret();
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = match options.open(path) {
                // Another webconf made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return read_or_create_secret(path);
                }
                other => other?,
            };
            file.write_all(hex.as_bytes())?;
            file.write_all(b"\n")?;
            Ok(secret)
        }
        Err(e) => Err(e),
    }
}

/// Tells the person who started us where to point a browser. Tests read the
/// first line to learn the port when listening on port 0.
fn announce(addr: SocketAddr, tls: Option<&server::tls::Tls>) {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut text = if addr.ip().is_unspecified() {
        let note = if tls.is_some() {
            ""
        } else {
            "  note: browsers allow the camera only on localhost or over HTTPS\n"
        };
        format!(
            "webconf listening on {scheme}://localhost:{port}/ (all interfaces)\n  \
             other devices: {scheme}://<this machine's address>:{port}/\n{note}",
            port = addr.port()
        )
    } else {
        format!("webconf listening on {scheme}://{addr}/\n  open that address in a browser to start a call\n")
    };
    if let Some(tls) = tls {
        text.push_str(&format!(
            "  TLS certificate SHA-256 fingerprint: {}\n  (check it matches when a browser asks you to trust it)\n",
            tls.fingerprint()
        ));
    }
    println_ignoring_errors(&text);
}

/// Whoever started us may have stopped reading (a closed pipe): that is no
/// reason to stop serving, so write errors are ignored.
fn println_ignoring_errors(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, text.as_bytes());
    let _ = std::io::Write::flush(&mut out);
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: closing every connection");
}
