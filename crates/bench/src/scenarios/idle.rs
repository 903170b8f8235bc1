//! Scenario 5: idle capacity. N connections that have set up their call and
//! then sit quiet; what each costs the server in memory, and how long
//! connecting took.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Ctx;
use crate::hist::Hist;
use crate::net::{self, Kind};
use crate::procfs::CpuMeter;
use crate::report::Report;

/// Connects in flight at once: enough to keep the server's accept queue
/// busy without turning the test into a SYN flood.
const CONNECT_CONCURRENCY: usize = 256;

/// Time for the server to settle (finish handshakes, free temporaries)
/// before its memory is read.
const SETTLE: Duration = Duration::from_secs(1);

/// Scenario 5 with `conns` connections.
pub async fn idle(ctx: &Ctx, conns: usize) -> Report {
    let mut report =
        ctx.report(format!("s5-{conns}"), format!("5 idle: {conns} connections in {} calls", conns / 2));
    report.set("conns", conns as u64);
    match ctx.kind {
        Kind::Webconf => {}
        Kind::Bare => report.note("bare relay: each client sends one hello, which reaches its partner"),
        Kind::Seed => report
            .note("seed relay: connected only; it has no rooms and any message would go to every client"),
    }
    tokio::time::sleep(SETTLE).await;
    let base = ctx.server.rss_kib().unwrap_or(0);
    let meter = CpuMeter::start(ctx.server);
    let started = Instant::now();
    let pairs = net::connect_pairs(
        ctx.kind,
        ctx.addr,
        conns / 2,
        CONNECT_CONCURRENCY,
        net::SMALL_READ_BUFFER,
        "idle",
    )
    .await;
    report.set("setup_s", started.elapsed().as_secs_f64());
    let cpu = meter.read();
    if pairs.failed > 0 {
        report.note(format!(
            "{} connections failed: {}",
            pairs.failed,
            pairs.first_error.clone().unwrap_or_default()
        ));
    }
    let held = pairs.pairs.len() * 2;
    report.set("held", held as u64);
    let mut connect = Hist::new();
    let stop = ctx.stop.child_token();
    let closed = Arc::new(AtomicUsize::new(0));
    let mut holders = JoinSet::new();
    for peer in pairs.pairs.into_iter().flat_map(|(a, b)| [a, b]) {
        connect.record(peer.connect_time.as_nanos() as u64);
        let (stop, closed) = (stop.clone(), closed.clone());
        // Keep reading, as a browser would: it answers the server's pings.
        let mut ws = peer.ws;
        holders.spawn(async move {
            tokio::select! {
                () = async { while let Some(Ok(_)) = ws.next().await {} } => {
                    closed.fetch_add(1, Ordering::Relaxed);
                }
                () = stop.cancelled() => {}
            }
        });
    }
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        if let Some(ns) = connect.quantile(q) {
            report.set(&format!("connect_{name}_ms"), ns as f64 / 1e6);
        }
    }
    if let Some(us) = cpu.micros_per(held as u64) {
        report.set("cpu_us_per_conn", us);
    }
    tokio::time::sleep(SETTLE).await;
    let rss = ctx.server.rss_kib().unwrap_or(0);
    report.set("rss_base_mib", base as f64 / 1024.0);
    report.set("rss_held_mib", rss as f64 / 1024.0);
    if held > 0 {
        report.set("kib_per_conn", rss.saturating_sub(base) as f64 / held as f64);
    }
    let closed = closed.load(Ordering::Relaxed);
    if closed > 0 {
        report.note(format!("{closed} connections were closed by the server before its memory was read"));
    }
    stop.cancel();
    while holders.join_next().await.is_some() {}
    report
}
