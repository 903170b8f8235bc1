//! Scenario 6: churn. Scenario 2 once; then many short-lived clients, each
//! connecting, saying hello, joining a room, leaving and disconnecting; then
//! scenario 2 again on the same server process. A server that forgets
//! nothing (the seed never drops a client) slows down and grows; one that
//! cleans up should measure the same before and after.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::window::run_window;
use super::{Ctx, one_pair};
use crate::net::{self, Kind, Ws, next_text};
use crate::procfs::CpuMeter;
use crate::report::Report;

/// Clients churning at once.
const WORKERS: usize = 32;
/// Longest one cycle may take before it counts as failed.
const CYCLE_WAIT: Duration = Duration::from_secs(5);
/// Time for the server to settle before its memory is read.
const SETTLE: Duration = Duration::from_secs(1);

/// Scenario 6: `cycles` churned clients (stopping after `limit` seconds),
/// between two windowed runs of `secs` seconds.
pub async fn churn(ctx: &Ctx, cycles: u64, limit: f64, window: usize, secs: f64) -> Report {
    let mut report = ctx.report(
        "s6".into(),
        format!(
            "6 churn: {cycles} connect/hello/join/leave/close cycles, scenario 2 ({window}) before and after"
        ),
    );
    report.set("cycles", cycles);
    match ctx.kind {
        Kind::Webconf => {}
        Kind::Bare | Kind::Seed => report.note(
            "no replies to wait for: a cycle sends hello, join and leave, then closes and waits for the \
             close reply, which the server sends after handling what came before it",
        ),
    }

    if !window_run(ctx, &mut report, "before", window, secs).await {
        return report;
    }
    tokio::time::sleep(SETTLE).await;
    let rss_before = ctx.server.rss_kib().unwrap_or(0);
    report.set("rss_before_mib", rss_before as f64 / 1024.0);

    // Churn.
    let meter = CpuMeter::start(ctx.server);
    let started = Instant::now();
    let limit_at = started + Duration::from_secs_f64(limit);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..WORKERS {
        let (next, stop, kind, addr) = (next.clone(), ctx.stop.clone(), ctx.kind, ctx.addr);
        workers.spawn(async move {
            let (mut done, mut failed, mut first_error) = (0u64, 0u64, None);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= cycles || Instant::now() >= limit_at || stop.is_cancelled() {
                    break;
                }
                let result = tokio::select! {
                    r = tokio::time::timeout(CYCLE_WAIT, cycle(kind, addr, n)) => r,
                    () = stop.cancelled() => break,
                };
                match result {
                    Ok(Ok(())) => done += 1,
                    Ok(Err(e)) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                    }
                    Err(_) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("a cycle took over {CYCLE_WAIT:?}"));
                    }
                }
            }
            (done, failed, first_error)
        });
    }
    let (mut done, mut failed, mut first_error) = (0, 0, None);
    while let Some(r) = workers.join_next().await {
        if let Ok((d, f, e)) = r {
            done += d;
            failed += f;
            if first_error.is_none() {
                first_error = e;
            }
        }
    }
    let churn_s = started.elapsed().as_secs_f64();
    let cpu = meter.read();
    report.set("cycles_done", done);
    report.set("churn_s", churn_s);
    report.set("cycles_rate", done as f64 / churn_s.max(1e-9));
    if let Some(us) = cpu.micros_per(done) {
        report.set("cpu_us_per_cycle", us);
    }
    if failed > 0 {
        report.note(format!("{failed} cycles failed, first: {}", first_error.unwrap_or_default()));
    }
    if done + failed < cycles {
        report.note(format!(
            "stopped after {:.0} s (the bound), {} of {cycles} cycles started",
            churn_s,
            done + failed
        ));
    }
    tokio::time::sleep(SETTLE).await;
    report.set("rss_after_churn_mib", ctx.server.rss_kib().unwrap_or(0) as f64 / 1024.0);

    if !window_run(ctx, &mut report, "after", window, secs).await {
        return report;
    }
    tokio::time::sleep(SETTLE).await;
    report.set("rss_after_mib", ctx.server.rss_kib().unwrap_or(0) as f64 / 1024.0);
    report
}

/// One short-lived client: connect, hello, join, leave, close.
/// Scenario 2 on a new call, its rate and p99 reported as
/// `rate_{which}` and `p99_{which}_us`; false if no call could be set up.
async fn window_run(ctx: &Ctx, report: &mut Report, which: &str, window: usize, secs: f64) -> bool {
    let Some((a, b)) = one_pair(ctx, report, &format!("churn-{which}")).await else { return false };
    let run = run_window(ctx, a, b, window, secs).await;
    for e in &run.errors {
        report.note(format!("{which}: {e}"));
    }
    report.set(&format!("rate_{which}"), run.count as f64 / secs);
    if let Some(ns) = run.hist.quantile(0.99) {
        report.set(&format!("p99_{which}_us"), ns as f64 / 1e3);
    }
    true
}

async fn cycle(kind: Kind, addr: std::net::SocketAddr, n: u64) -> Result<(), String> {
    let mut ws = net::connect(addr, net::SMALL_READ_BUFFER).await?;
    let join = format!(r#"{{"type":"join","room":"churn{n}","name":"c{n}"}}"#);
    match kind {
        Kind::Webconf => {
            send(&mut ws, r#"{"type":"hello","version":2}"#.to_owned()).await?;
            expect(&mut ws, "welcome").await?;
            send(&mut ws, join).await?;
            expect(&mut ws, "joined").await?;
            send(&mut ws, r#"{"type":"leave"}"#.to_owned()).await?;
            expect(&mut ws, "left").await?;
        }
        Kind::Bare | Kind::Seed => {
            for m in [r#"{"type":"hello","version":2}"#.to_owned(), join, r#"{"type":"leave"}"#.to_owned()] {
                ws.feed(Message::text(m)).await.map_err(|e| format!("send: {e}"))?;
            }
        }
    }
    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    // The close reply (or the end of the stream) comes after the server
    // has dealt with everything sent before the close.
    while let Some(Ok(_)) = ws.next().await {}
    Ok(())
}

async fn send(ws: &mut Ws, text: String) -> Result<(), String> {
    ws.send(Message::text(text)).await.map_err(|e| format!("send: {e}"))
}

async fn expect(ws: &mut Ws, kind: &str) -> Result<(), String> {
    let text = next_text(ws, CYCLE_WAIT).await?;
    let want = format!(r#""type":"{kind}""#);
    if text.contains(&want) { Ok(()) } else { Err(format!("expected {kind}, got {text}")) }
}
