//! The scenarios of the benchmark, each against one running server.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hist::Hist;
use crate::net::{self, Kind, Peer};
use crate::procfs::{CpuMeter, CpuUse, MachineMeter, Proc};
use crate::report::Report;

pub mod abuse;
pub mod churn;
pub mod cluster;
pub mod idle;
pub mod openloop;
pub mod sfu;
pub mod storm;
pub mod window;

/// The key that carries a timed message's send time.
pub const T_KEY: &str = r#""t":"#;
/// The key that carries a timed message's sender.
pub const C_KEY: &str = r#""c":"#;

/// Longest a scenario waits for one expected message before calling it lost.
pub const RECV_WAIT: Duration = Duration::from_secs(5);

/// Everything a scenario needs to know about the server under test.
#[derive(Debug)]
pub struct Ctx {
    /// Which server it is.
    pub kind: Kind,
    /// Its column label in the table (the kind's name, or a variant's).
    pub label: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process, for CPU and memory.
    pub server: Proc,
    /// The generator's own process, to tell when it is the bottleneck.
    pub me: Proc,
    /// Cancelled when the scenario must stop early (the server died or grew
    /// past the memory cap).
    pub stop: CancellationToken,
}

impl Ctx {
    /// A fresh report for this server.
    pub fn report(&self, id: String, title: String) -> Report {
        let kind = match self.kind {
            Kind::Webconf => "webconf",
            Kind::Bare => "bare",
            Kind::Seed => "seed",
        };
        Report::new(id, title, kind, &self.label)
    }
}

/// Warm-up before measuring: long enough for connections' buffers to grow
/// and for node's JIT to settle, short next to the measured time.
pub fn warmup(secs: f64) -> Duration {
    Duration::from_secs_f64((secs * 0.1).clamp(0.2, 1.0))
}

/// Connects one call (two clients), or notes why not.
pub async fn one_pair(ctx: &Ctx, report: &mut Report, room: &str) -> Option<(Peer, Peer)> {
    let mut pairs = net::connect_pairs(ctx.kind, ctx.addr, 1, 2, net::BUSY_READ_BUFFER, room).await;
    match pairs.pairs.pop() {
        Some(pair) => Some(pair),
        None => {
            report.note(format!(
                "could not set up the call: {}",
                pairs.first_error.unwrap_or_else(|| "no pair".to_owned())
            ));
            None
        }
    }
}

/// What one measured interval of a throughput scenario saw.
#[derive(Debug, Default)]
pub struct Measured {
    /// Messages delivered in the measured interval.
    pub count: u64,
    /// Their one-way latencies, ns.
    pub hist: Hist,
    /// Server CPU over the interval.
    pub server: CpuUse,
    /// Generator CPU over the interval.
    pub me: CpuUse,
    /// The whole machine's busy CPU over the interval (% of one core).
    pub machine_pct: Option<f64>,
    /// What went wrong, if anything.
    pub errors: Vec<String>,
}

impl Measured {
    /// Waits for `from`, then meters the server, the generator and the
    /// machine until `end` (or `stop`): the CPU part of a measured run.
    pub async fn metered(ctx: &Ctx, from: Instant, end: Instant, stop: &CancellationToken) -> Measured {
        tokio::time::sleep_until(from).await;
        let server = CpuMeter::start(ctx.server);
        let me = CpuMeter::start(ctx.me);
        let machine = MachineMeter::start();
        tokio::select! {
            () = tokio::time::sleep_until(end) => {}
            () = stop.cancelled() => {}
        }
        Measured {
            server: server.read(),
            me: me.read(),
            machine_pct: machine.busy_pct(),
            ..Measured::default()
        }
    }

    /// Delivered messages per second over `secs`.
    pub fn rate(&self, secs: f64) -> f64 {
        self.count as f64 / secs.max(1e-9)
    }
}

/// Records rate, latency and CPU of `m`, measured over `secs` seconds.
pub fn throughput(report: &mut Report, m: &Measured, secs: f64) {
    report.set("delivered", m.count);
    report.set("rate", m.rate(secs));
    report.latency("lat", &m.hist);
    if let Some(us) = m.server.micros_per(m.count) {
        report.set("cpu_us_per_msg", us);
    }
    report.set("server_cpu_pct", m.server.percent());
    report.set("gen_cpu_pct", m.me.percent());
    if let Some(busy) = m.machine_pct {
        // Anything else running on the machine competes for the two cores.
        report.set("other_cpu_pct", (busy - m.server.percent() - m.me.percent()).max(0.0));
    }
}
