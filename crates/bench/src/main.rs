//! `bench`: webconf's benchmark tools, driven by `scripts/bench.sh`.
//!
//! - `bench bare-relay --listen ADDR`: the bare Rust relay, the baseline.
//! - `bench run ... SCENARIO`: runs one scenario against one running server
//!   and prints one JSON line of results.
//! - `bench udp-forwarder --listen ADDR`: the plain UDP forwarder, the SFU
//!   scenario's limit reference.
//! - `bench run ... cluster`: one step against several webconf nodes and
//!   their Redis (`scripts/bench.sh --cluster`).
//! - `bench table FILE`: the side-by-side table from those lines.
//!
//! The script starts and stops servers (a fresh process per scenario, so
//! one scenario's leftovers never weigh on the next) and pins them and this
//! generator to different cores.

mod hist;
mod media;
mod net;
mod procfs;
mod rawws;
mod relay;
mod report;
mod rtcpeer;
mod scenarios;
mod udpfwd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::net::Kind;
use crate::procfs::{Proc, Watchdog};
use crate::scenarios::Ctx;

/// webconf's benchmark: a load generator, a bare baseline relay, and the
/// results table.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the bare relay: pairs connections in order, forwards text.
    BareRelay {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Runs the plain UDP forwarder: sends each datagram to the rest of
    /// the sender's room.
    UdpForwarder {
        /// UDP address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Runs one scenario against a running server; prints a JSON line.
    Run(RunArgs),
    /// Prints the side-by-side table from a file of JSON lines.
    Table {
        /// The results file `bench run` lines were appended to.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Which server is listening.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Its column label, when it is a variant (e.g. the seed with logging).
    #[arg(long)]
    label: Option<String>,
    /// Where it listens.
    #[arg(long)]
    addr: SocketAddr,
    /// Its process id, for CPU time and memory.
    #[arg(long)]
    pid: u32,
    /// Clock ticks per second of /proc CPU times (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Stop a scenario early if the server's memory passes this (MiB).
    #[arg(long, default_value_t = 6144)]
    rss_cap_mib: u64,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// 1: one call, one message in flight, back and forth.
    Latency {
        /// Measured seconds (after a short warm-up).
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Runs, each on a new call; the median is reported.
        #[arg(long, default_value_t = 1)]
        reps: usize,
    },
    /// 2: one call, a window of messages in flight A→B.
    Window {
        /// Messages in flight.
        #[arg(long)]
        window: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Runs, each on a new call; the median is reported.
        #[arg(long, default_value_t = 1)]
        reps: usize,
    },
    /// 3: many calls at a fixed total offered rate.
    Rate {
        /// Clients (two per call).
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Offered messages per second, all clients together.
        #[arg(long)]
        rate: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// 4: simultaneous call set-ups.
    Storm {
        /// Calls set up at once.
        #[arg(long)]
        setups: usize,
        /// Seconds after which unfinished set-ups count as failed.
        #[arg(long, default_value_t = 30.0)]
        deadline: f64,
        /// Also report the share done within this many seconds.
        #[arg(long, default_value_t = 18.0)]
        mark: f64,
        /// Start the set-ups one after another, this many a second, each
        /// timed from its own start (default: all at once).
        #[arg(long)]
        pace: Option<f64>,
    },
    /// 5: idle connections, joined in pairs.
    Idle {
        /// Connections.
        #[arg(long)]
        conns: usize,
    },
    /// 6: churned clients between two runs of scenario 2.
    Churn {
        /// Connect/hello/join/leave/close cycles.
        #[arg(long)]
        cycles: u64,
        /// Stop churning after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        limit: f64,
        /// Window of the scenario 2 runs.
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Measured seconds of each scenario 2 run.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// 7: group calls through the SFU (webconf) or the plain UDP forwarder
    /// (`--kind bare`, `--addr` its UDP address): everyone publishes a
    /// camera to the rest of their room.
    Sfu {
        /// Which ladder this step belongs to (how the table shows it).
        #[arg(long, value_enum, default_value_t = scenarios::sfu::Ladder::Rate)]
        ladder: scenarios::sfu::Ladder,
        /// Rooms.
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// People in each room.
        #[arg(long)]
        room_size: usize,
        /// Packets per second of each camera (one frame per packet).
        #[arg(long, default_value_t = media::CAMERA_PPS)]
        pps: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Seconds of warm-up once every stream flows.
        #[arg(long, default_value_t = 10.0)]
        warmup: f64,
        /// Longest the set-up may take, seconds.
        #[arg(long, default_value_t = 30.0)]
        setup_limit: f64,
        /// The server's `--sfu-max-video` (last-N): the most cameras it
        /// sends each subscriber.
        #[arg(long, default_value_t = 16)]
        max_video: usize,
    },
    /// Cluster: webconf nodes sharing one Redis, a call's clients on one
    /// node or two and its home on theirs or a third; or one node alone.
    Cluster(scenarios::cluster::Args),
    /// Issue 10's abuse scenario: an attacker from one address (or many)
    /// against a legitimate call, relayed stream, `/healthz` and newcomers.
    Abuse(scenarios::abuse::Plan),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Table { file } => match std::fs::read_to_string(&file) {
            Ok(text) => match report::table(&text) {
                Ok(t) => {
                    print!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bench table: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("bench table: cannot read {}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        Command::BareRelay { listen } => {
            // webconf's runtime: multi-threaded, one worker per core it may
            // use (one, under `taskset -c 0`).
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("bare relay: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(relay::serve(listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bare relay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::UdpForwarder { listen } => match udpfwd::serve(listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("udp forwarder: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            // One thread: the generator gets one core (`taskset -c 1`), and
            // a single-threaded runtime spends it all on the clients.
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("bench: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let line = runtime.block_on(run(args));
            println!("{line}");
            ExitCode::SUCCESS
        }
    }
}

async fn run(args: RunArgs) -> String {
    net::init_sources();
    let label = args.label.unwrap_or_else(|| format!("{:?}", args.kind).to_lowercase());
    let ctx = Ctx {
        kind: args.kind,
        label,
        addr: args.addr,
        server: Proc::pid(args.pid, args.clk_tck),
        me: Proc::this(args.clk_tck),
        stop: CancellationToken::new(),
    };
    eprintln!("bench: {} {:?}", ctx.label, args.scenario);
    let watchdog = Watchdog::start(ctx.server, args.rss_cap_mib * 1024, ctx.stop.clone());
    let mut report = match args.scenario {
        Scenario::Latency { secs, reps } => scenarios::window::floor(&ctx, secs, reps).await,
        Scenario::Window { window, secs, reps } => scenarios::window::window(&ctx, window, secs, reps).await,
        Scenario::Rate { clients, rate, secs } => scenarios::openloop::rate(&ctx, clients, rate, secs).await,
        Scenario::Storm { setups, deadline, mark, pace } => {
            scenarios::storm::storm(&ctx, setups, deadline, mark, pace).await
        }
        Scenario::Idle { conns } => scenarios::idle::idle(&ctx, conns).await,
        Scenario::Churn { cycles, limit, window, secs } => {
            scenarios::churn::churn(&ctx, cycles, limit, window, secs).await
        }
        Scenario::Sfu { ladder, rooms, room_size, pps, secs, warmup, setup_limit, max_video } => {
            // str0m's DTLS and SRTP need a crypto provider.
            str0m::crypto::from_feature_flags().install_process_default();
            let plan =
                scenarios::sfu::Plan { ladder, rooms, room_size, pps, secs, warmup, setup_limit, max_video };
            scenarios::sfu::sfu(&ctx, &plan).await
        }
        Scenario::Cluster(cluster) => scenarios::cluster::run(&ctx, cluster, args.clk_tck).await,
        Scenario::Abuse(mut plan) => {
            plan.pid = args.pid;
            scenarios::abuse::abuse(&ctx, &plan).await
        }
    };
    report.set("peak_rss_mib", watchdog.peak_kib() as f64 / 1024.0);
    if let Some(reason) = watchdog.reason() {
        report.note(reason);
    }
    report.to_line()
}
