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
    /// server's own origin is always allowed, loopback origins when it
    /// listens on loopback.
    #[arg(long = "allow-origin", env = "WEBCONF_ALLOW_ORIGIN", value_delimiter = ',')]
    allow_origin: Vec<String>,

    /// A name browsers reach this server by (repeatable, or
    /// comma-separated), e.g. meet.example.org; requests for other names
    /// get 421 (against DNS rebinding). IP addresses, this machine's host
    /// name, --turn-host and --tls-name are always allowed, and loopback
    /// names when listening on loopback. `*` allows any (the default behind
    /// --trust-proxy or with --tls-cert, where the proxy or the certificate
    /// decides).
    #[arg(long = "allow-host", env = "WEBCONF_ALLOW_HOST", value_delimiter = ',')]
    allow_host: Vec<String>,

    /// Most people in one call (at most 100).
    #[arg(long, env = "WEBCONF_ROOM_CAPACITY", default_value_t = 25,
          value_parser = clap::value_parser!(u16).range(1..=100))]
    room_capacity: u16,

    /// A call with more people than this moves from browser-to-browser
    /// links to the built-in SFU (and stays there until it empties).
    #[arg(long, env = "WEBCONF_P2P_MAX", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=100))]
    p2p_max: u16,

    /// UDP port of the SFU for group calls (on the --listen address); 0
    /// picks any free port.
    #[arg(long, env = "WEBCONF_SFU_PORT", default_value_t = 7882)]
    sfu_port: u16,

    /// Most group-call sessions the SFU holds at once.
    #[arg(long, env = "WEBCONF_SFU_MAX_PARTICIPANTS", default_value_t = 500)]
    sfu_max_participants: usize,

    /// Most videos the SFU sends one person at once (last-N: screens, then
    /// the most recent speakers); the web client shows at most 16.
    #[arg(long, env = "WEBCONF_SFU_MAX_VIDEO", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=100))]
    sfu_max_video: u16,

    /// Turn the SFU off: calls of more than two are then a full mesh of
    /// browser-to-browser links, which works for three or four people.
    #[arg(long, env = "WEBCONF_NO_SFU")]
    no_sfu: bool,

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

    /// Seconds a WebSocket may take to say `hello` after it opened before
    /// it is closed (a page says it at once).
    #[arg(long, env = "WEBCONF_HELLO_TIMEOUT", default_value_t = 10)]
    hello_timeout: u64,

    /// Most TCP connections to the HTTP(S) port that are not (yet)
    /// WebSockets, in all; also at most an eighth of the open-files limit
    /// (0: only that).
    #[arg(long, env = "WEBCONF_MAX_HTTP_CONNECTIONS", default_value_t = 4096)]
    max_http_connections: usize,

    /// Most such connections from one IPv4 address or IPv6 /64 (0: no
    /// limit).
    #[arg(long, env = "WEBCONF_MAX_HTTP_CONNECTIONS_PER_IP", default_value_t = 64)]
    max_http_connections_per_ip: usize,

    /// Seconds a client may take to send a request's headers (from the
    /// connection's start, or the end of its previous response).
    #[arg(long, env = "WEBCONF_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,

    /// Seconds a client may take to finish its TLS handshake.
    #[arg(long, env = "WEBCONF_TLS_HANDSHAKE_TIMEOUT", default_value_t = 5)]
    tls_handshake_timeout: u64,

    /// Serve HTTPS and WSS with a certificate made for this machine's names
    /// and addresses (`self-signed`), kept in the state directory so its
    /// fingerprint survives restarts; browsers will ask to trust it once.
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
    /// on), e.g. 0.0.0.0:80. (Plain HTTP sent to the HTTPS port itself is
    /// always redirected.)
    #[arg(long, env = "WEBCONF_HTTP_REDIRECT")]
    http_redirect: Option<SocketAddr>,

    /// Running behind a reverse proxy (nginx, Caddy): trust its
    /// X-Forwarded-For and X-Forwarded-Host headers. Only set this when
    /// webconf is reachable through the proxy alone.
    #[arg(long, env = "WEBCONF_TRUST_PROXY")]
    trust_proxy: bool,

    /// Turn the built-in STUN/TURN server off.
    #[arg(long, env = "WEBCONF_NO_TURN")]
    no_turn: bool,

    /// UDP and TCP port of the built-in STUN/TURN server (on the --listen
    /// address).
    #[arg(long, env = "WEBCONF_TURN_PORT", default_value_t = 3478)]
    turn_port: u16,

    /// The address browsers reach this machine at, for TURN relays and the
    /// SFU (set it behind a 1:1 NAT, such as a cloud VM's public IP, or on a
    /// machine with several networks). Default: the --listen address, else
    /// the default route's, else the first network interface's; listening
    /// on 0.0.0.0 without it, STUN/TURN URLs name the address each
    /// browser's connection reached.
    #[arg(long, env = "WEBCONF_PUBLIC_IP")]
    public_ip: Option<std::net::IpAddr>,

    /// Host name for the STUN/TURN URLs handed to browsers (default: the
    /// public IP).
    #[arg(long, env = "WEBCONF_TURN_HOST")]
    turn_host: Option<String>,

    /// UDP ports for TURN relays, as FIRST-LAST.
    #[arg(long, env = "WEBCONF_TURN_RELAY_PORTS", default_value = "49152-65535", value_parser = parse_port_range)]
    turn_relay_ports: std::ops::RangeInclusive<u16>,

    /// Shared secret for TURN credentials (coturn's static-auth-secret).
    /// Default: derived from the state directory's secret.
    #[arg(long, env = "WEBCONF_TURN_SECRET")]
    turn_secret: Option<String>,

    /// Use these external TURN/STUN servers (coturn with
    /// --use-auth-secret, repeatable) instead of the built-in one; needs
    /// --turn-secret.
    #[arg(
        long = "turn-external",
        env = "WEBCONF_TURN_EXTERNAL",
        value_delimiter = ',',
        requires = "turn_secret"
    )]
    turn_external: Vec<String>,

    /// Let the built-in TURN server relay to loopback, private and
    /// link-local addresses (off: a relay is otherwise a way into the
    /// server's own network). For tests on one machine.
    #[arg(long, env = "WEBCONF_TURN_ALLOW_PRIVATE")]
    turn_allow_private: bool,

    /// Most TURN allocations one peer may hold (all the credentials it was
    /// given count together).
    #[arg(long, env = "WEBCONF_TURN_USER_QUOTA", default_value_t = 10)]
    turn_user_quota: usize,

    /// Most TURN allocations held from one IPv4 address or IPv6 /64.
    #[arg(long, env = "WEBCONF_TURN_ADDRESS_QUOTA", default_value_t = 32)]
    turn_address_quota: usize,

    /// Relay bandwidth per allocation and direction, in kbit/s (0: no limit).
    #[arg(long, env = "WEBCONF_TURN_BANDWIDTH", default_value_t = 20_000)]
    turn_bandwidth: u64,

    /// Relay bandwidth per client address (all its allocations) and
    /// direction, in kbit/s (0: no limit).
    #[arg(long, env = "WEBCONF_TURN_BANDWIDTH_PER_IP", default_value_t = 80_000)]
    turn_bandwidth_per_ip: u64,

    /// Relay bandwidth of the whole server per direction, in kbit/s (0: no
    /// limit).
    #[arg(long, env = "WEBCONF_TURN_BANDWIDTH_TOTAL", default_value_t = 1_000_000)]
    turn_bandwidth_total: u64,

    /// Where webconf keeps its state: a `secret` file that signs resume
    /// tokens, so calls survive a restart, and the self-signed certificate
    /// (`tls/`). Default: $XDG_STATE_HOME/webconf or ~/.local/state/webconf.
    #[arg(long, env = "WEBCONF_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,

    /// Cluster mode: share rooms with other webconf nodes through this
    /// Redis (redis://host:port/db). Browsers may then connect to any
    /// node; each room lives on one, chosen by load. The secret that signs
    /// resume tokens and TURN credentials is shared through it too.
    /// Without it webconf is a single node and needs no Redis.
    #[arg(long, env = "WEBCONF_REDIS")]
    redis: Option<String>,

    /// This node's name in the cluster (lower-case letters, digits, `-`;
    /// at most 32). Default: random at each start.
    #[arg(long, env = "WEBCONF_NODE_ID", value_parser = parse_node_id)]
    node_id: Option<cluster::NodeId>,

    /// Log filter: error, warn, info, debug, trace, or per module like
    /// `info,server=debug`.
    #[arg(long, env = "WEBCONF_LOG", default_value = "info")]
    log: String,

    /// Secret (at least 16 bytes) that signs join tokens, shared with the
    /// application that invites people (docs/tokens.md). Without it, join
    /// tokens are refused.
    #[arg(long, env = "WEBCONF_JOIN_SECRET", global = true, hide_env_values = true)]
    join_secret: Option<String>,

    /// Admit only people with a join token (needs --join-secret).
    #[arg(long, env = "WEBCONF_REQUIRE_TOKEN", requires = "join_secret")]
    require_token: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print a join token (docs/tokens.md), signed with --join-secret.
    Token {
        /// The room it lets its holder into.
        #[arg(long)]
        room: String,
        /// The name others will see.
        #[arg(long)]
        name: String,
        /// Join as a host.
        #[arg(long)]
        host: bool,
        /// Valid for this many seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// May not turn on a microphone or camera.
        #[arg(long)]
        no_publish: bool,
        /// May not share a screen.
        #[arg(long)]
        no_screen: bool,
        /// May not chat.
        #[arg(long)]
        no_chat: bool,
        /// Also print the link to the call on this server, like
        /// https://meet.example.org.
        #[arg(long)]
        base_url: Option<String>,
    },
}

/// `webconf token`: prints a join token, or says what is wrong.
fn mint_token(secret: Option<&str>, command: Command) -> Result<String, String> {
    let Command::Token { room, name, host, ttl, no_publish, no_screen, no_chat, base_url } = command;
    let secret = secret.ok_or("--join-secret (or WEBCONF_JOIN_SECRET) is needed to sign a token")?;
    let key = server::jointoken::JoinKey::new(secret.as_bytes())?;
    let room = room::RoomId::parse(&room).map_err(|e| format!("--room: the room name {e}"))?;
    let name = room::DisplayName::parse(&name).map_err(|e| format!("--name: the name {e}"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let grants = room::Grants { publish: !no_publish, screen: !no_screen, chat: !no_chat };
    let token = key.mint(&room, &name, now.saturating_add(ttl), host, grants);
    Ok(match base_url {
        Some(base) => format!("{token}\n{}/r/{room}#token={token}", base.trim_end_matches('/')),
        None => token,
    })
}

fn parse_node_id(s: &str) -> Result<cluster::NodeId, String> {
    cluster::NodeId::parse(s).ok_or_else(|| "1 to 32 lower-case letters, digits or -".to_owned())
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').ok_or("expected FIRST-LAST, like 49152-65535")?;
    let (a, b): (u16, u16) =
        (a.trim().parse().map_err(|e| format!("{e}"))?, b.trim().parse().map_err(|e| format!("{e}"))?);
    if a == 0 || a > b {
        return Err("FIRST must be at least 1 and not above LAST".to_owned());
    }
    Ok(a..=b)
}

/// How to get a certificate without files.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TlsMode {
    /// Make one for this machine's names (kept in the state directory).
    SelfSigned,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(command) = cli.command.take() {
        return match mint_token(cli.join_secret.as_deref(), command) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("webconf token: {msg}");
                ExitCode::from(2)
            }
        };
    }
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
        hello_timeout: std::time::Duration::from_secs(cli.hello_timeout.max(1)),
        max_http_connections: cli.max_http_connections,
        max_http_connections_per_ip: cli.max_http_connections_per_ip,
        header_timeout: std::time::Duration::from_secs(cli.header_timeout.max(1)),
        tls_handshake_timeout: std::time::Duration::from_secs(cli.tls_handshake_timeout.max(1)),
        ..server::Limits::default()
    };
    let state_dir = state_dir(cli.state_dir.as_deref());
    let tls = match (&cli.tls, &cli.tls_cert, &cli.tls_key) {
        (Some(TlsMode::SelfSigned), _, _) => {
            let mut extra = cli.tls_names.clone();
            if addr.ip().is_unspecified() {
                // Every address other machines may use to reach this one,
                // so browsers that check names find theirs in it.
                extra.extend(server::interfaces::addresses().iter().map(|ip| ip.to_string()));
            } else {
                extra.push(addr.ip().to_string());
            }
            let names = server::tls::default_names(&extra);
            let keep_in = state_dir.as_ref().map(|d| d.join("tls"));
            Some(
                server::tls::Tls::load(server::tls::TlsSource::SelfSigned { names, keep_in })
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
    let join_key = match &cli.join_secret {
        Some(s) => {
            Some(server::jointoken::JoinKey::new(s.as_bytes()).map_err(|e| format!("--join-secret: {e}"))?)
        }
        None => None,
    };
    let mut secret = load_secret(state_dir.as_deref());
    let cluster = match &cli.redis {
        Some(url) => {
            // One secret for every node, so a resume token or TURN
            // credential from one is good on all.
            secret = server::cluster::shared_secret(url, secret, std::time::Duration::from_secs(3)).await?;
            let node = cli.node_id.clone().unwrap_or_else(|| {
                cluster::NodeId::from_random(u64::from_le_bytes(
                    server::random_secret()[..8].try_into().unwrap_or_default(),
                ))
            });
            let config = server::cluster::ClusterConfig::new(
                url.clone(),
                node.clone(),
                addr.to_string(),
                public_ip(&cli, addr),
            );
            tracing::info!(%node, redis = %url, "cluster mode: sharing rooms with the other nodes");
            Some((config, secret))
        }
        None => None,
    };
    warn_about_addresses(&cli, addr);
    let (ice, turn) = turn_setup(&cli, addr, &secret);
    let sfu = (!cli.no_sfu).then(|| server::sfu_io::SfuConfig {
        listen: SocketAddr::new(addr.ip(), cli.sfu_port),
        public_ip: public_ip(&cli, addr),
        max_participants: cli.sfu_max_participants,
        p2p_max: usize::from(cli.p2p_max),
        forwarding: sfu::Config { max_video: usize::from(cli.sfu_max_video), ..sfu::Config::default() },
        connect_deadline: server::sfu_io::CONNECT_DEADLINE,
    });
    let mut allowed_hosts = cli.allow_host.clone();
    if allowed_hosts.is_empty() && (cli.trust_proxy || cli.tls_cert.is_some()) {
        allowed_hosts.push("*".to_owned());
    }
    allowed_hosts.extend(cli.tls_names.iter().cloned());
    allowed_hosts.extend(cli.turn_host.iter().cloned());
    let config = server::Config {
        allowed_hosts,
        sfu,
        room_capacity: usize::from(cli.room_capacity),
        allowed_origins: cli.allow_origin,
        limits,
        resume_key: server::resume::ResumeKey::new(secret),
        tls: tls.clone(),
        trust_proxy: cli.trust_proxy,
        ice,
        turn,
        join_key,
        require_token: cli.require_token,
        cluster,
        rooms_file: state_dir.as_ref().map(|d| d.join("rooms.json")),
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

/// The address browsers reach this machine at, for TURN relays and the
/// SFU's candidates: `--public-ip`, else the listen address, else the
/// default route's, else the first address of a network interface (a LAN
/// with no way out), else loopback (this machine alone).
fn public_ip(cli: &Cli, addr: SocketAddr) -> std::net::IpAddr {
    let listen_ip = addr.ip();
    cli.public_ip
        .or((!listen_ip.is_unspecified()).then_some(listen_ip))
        .or_else(server::turn_io::default_route_ip)
        .or_else(|| server::interfaces::addresses().into_iter().next())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// Says at start when what browsers will be told about this machine's
/// address cannot work for all of them: listening on every interface with
/// no `--public-ip`, relays and the SFU need one address, and the one
/// found is loopback (useless to any other machine) or one of several.
fn warn_about_addresses(cli: &Cli, addr: SocketAddr) {
    if cli.public_ip.is_some() || !addr.ip().is_unspecified() {
        return;
    }
    let chosen = public_ip(cli, addr);
    if chosen.is_loopback() {
        tracing::warn!(
            "listening on all interfaces, but this machine has no address but loopback: other machines \
             will not reach TURN relays or the SFU; set --public-ip to the address browsers reach it at"
        );
        return;
    }
    let others: Vec<String> = server::interfaces::addresses()
        .into_iter()
        .filter(|ip| *ip != chosen && ip.is_ipv4() == chosen.is_ipv4())
        .map(|ip| ip.to_string())
        .collect();
    if server::turn_io::default_route_ip().is_none() || !others.is_empty() {
        tracing::info!(
            "TURN relays and the SFU are announced at {chosen} (STUN/TURN URLs follow each browser's \
             connection){}; set --public-ip if browsers reach this machine at another address",
            if others.is_empty() {
                String::new()
            } else {
                format!("; this machine also has {}", others.join(", "))
            }
        );
    }
}

/// What peers are told about STUN/TURN, and the built-in server's set-up.
fn turn_setup(
    cli: &Cli,
    addr: SocketAddr,
    secret: &[u8; 32],
) -> (server::IceConfig, Option<server::turn_io::TurnIo>) {
    let turn_secret = match &cli.turn_secret {
        Some(s) => s.as_bytes().to_vec(),
        None => server::derive_key(secret, "webconf-turn-secret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes(),
    };
    let ttl = std::time::Duration::from_secs(24 * 3600);
    if !cli.turn_external.is_empty() {
        let credentials =
            server::TurnCredentials { urls: cli.turn_external.clone(), secret: turn_secret, ttl };
        return (
            server::IceConfig { servers: Vec::new(), turn: Some(credentials), per_connection_port: None },
            None,
        );
    }
    if cli.no_turn {
        return (server::IceConfig::default(), None);
    }
    let listen_ip = addr.ip();
    let public_ip = public_ip(cli, addr);
    let host = cli.turn_host.clone().unwrap_or_else(|| public_ip.to_string());
    let port = cli.turn_port;
    let urls = server::builtin_ice_urls(&host, port);
    // Listening everywhere with no address given: each browser is told the
    // address its own connection reached (`urls` only when that is unknown).
    let per_connection =
        (listen_ip.is_unspecified() && cli.public_ip.is_none() && cli.turn_host.is_none()).then_some(port);
    let families = if public_ip.is_ipv4() { vec![turn::Family::V4] } else { vec![turn::Family::V6] };
    let core = turn::Config {
        secret: turn_secret.clone(),
        nonce_key: server::random_secret(),
        max_allocations_per_user: cli.turn_user_quota,
        max_allocations_per_address: cli.turn_address_quota,
        bandwidth_bytes_per_sec: cli.turn_bandwidth * 1000 / 8,
        bandwidth_bytes_per_sec_per_address: cli.turn_bandwidth_per_ip * 1000 / 8,
        bandwidth_bytes_per_sec_total: cli.turn_bandwidth_total * 1000 / 8,
        allow_private_peers: cli.turn_allow_private,
        // The SFU beside us, for members who relay everything: on a LAN its
        // address is private, which the relay policy otherwise refuses.
        local_peers: (!cli.no_sfu && cli.sfu_port != 0)
            .then(|| SocketAddr::new(public_ip, cli.sfu_port))
            .into_iter()
            .collect(),
        families,
        // This server's own services besides TURN's (which the TURN server
        // adds, with its relay ports and addresses): never relayed to.
        own_ports: [
            Some(addr.port()),
            (!cli.no_sfu).then_some(cli.sfu_port),
            cli.http_redirect.map(|a| a.port()),
        ]
        .into_iter()
        .flatten()
        .filter(|port| *port != 0)
        .map(|port| port..=port)
        .collect(),
        ..turn::Config::default()
    };
    let io = server::turn_io::TurnIo {
        listen: SocketAddr::new(listen_ip, port),
        relay_bind: listen_ip,
        public_ip,
        relay_ports: cli.turn_relay_ports.clone(),
        core,
        tcp_max_connections: server::turn_io::TurnIo::TCP_DEFAULTS.0,
        tcp_max_connections_per_ip: server::turn_io::TurnIo::TCP_DEFAULTS.1,
        tcp_first_message_timeout: server::turn_io::TurnIo::TCP_DEFAULTS.2,
    };
    let credentials = server::TurnCredentials { urls, secret: turn_secret, ttl };
    let ice = server::IceConfig {
        servers: Vec::new(),
        turn: Some(credentials),
        per_connection_port: per_connection,
    };
    (ice, Some(io))
}

/// The state directory: `--state-dir`, else `$XDG_STATE_HOME/webconf`, else
/// `~/.local/state/webconf`; `None` if there is no home to put it in.
fn state_dir(given: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    match given {
        Some(d) => Some(d.to_path_buf()),
        None => std::env::var_os("XDG_STATE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".local/state")))
            .map(|d| d.join("webconf")),
    }
}

/// The secret that signs resume tokens, from `<state dir>/secret`, made
/// there on first start. Without a usable state directory a fresh secret
/// is used: everything works, but peers cannot resume across a restart.
fn load_secret(dir: Option<&std::path::Path>) -> [u8; 32] {
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
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    match std::fs::read_to_string(path) {
        Ok(text) => {
            // Whoever can read it can forge resume tokens and TURN
            // credentials: only its owner may.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(invalid(format!(
                        "readable by others (mode {mode:o}); chmod 600 it, or delete it to make a new one"
                    )));
                }
            }
            let secret = parse(&text)
                .ok_or_else(|| invalid("not 64 hex digits; delete it to make a new one".into()))?;
            // 32 random bytes hold about 30 different values; a secret
            // someone typed (all zeros, a repeated word) holds few.
            let mut seen = [false; 256];
            secret.iter().for_each(|b| seen[usize::from(*b)] = true);
            if seen.iter().filter(|s| **s).count() < 16 {
                return Err(invalid("too easy to guess; delete it to make a new one".into()));
            }
            Ok(secret)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10, finding 9: an existing secret was used whatever its
    /// permissions and content.
    #[test]
    #[cfg(unix)]
    fn a_secret_others_can_read_or_guess_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("webconf-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("secret");
        let made = read_or_create_secret(&path).expect("made on first start");
        assert_eq!(read_or_create_secret(&path).expect("read again"), made);
        let mode =
            |m: u32| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).expect("chmod");
        mode(0o644);
        let err = read_or_create_secret(&path).expect_err("readable by others");
        assert!(err.to_string().contains("readable by others"), "{err}");
        mode(0o600);
        std::fs::write(&path, "00".repeat(32)).expect("write");
        let err = read_or_create_secret(&path).expect_err("all zeros");
        assert!(err.to_string().contains("too easy to guess"), "{err}");
        std::fs::write(&path, "000102030405060708090a0b0c0d0e0f".repeat(2)).expect("write");
        assert!(read_or_create_secret(&path).is_ok(), "16 different bytes");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
