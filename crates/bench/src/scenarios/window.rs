//! Scenarios 1 and 2: one call, a fixed number of messages in flight.
//!
//! Scenario 1 keeps exactly one message in flight, alternating A→B and B→A:
//! the latency floor. Scenario 2 keeps a window of W messages in flight
//! A→B: a sender tops the window up as soon as the receiver frees slots,
//! so the server is never idle and never sees more than W queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::SinkExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, Measured, RECV_WAIT, T_KEY, one_pair, throughput, warmup};
use crate::hist::Hist;
use crate::net::{Peer, next_text, now_ns, num_after, timed_signal};
use crate::procfs::{CpuMeter, MachineMeter};
use crate::rawws::{Frame, RawWs};
use crate::report::Report;

/// Most messages the sender writes per flush.
const SEND_BATCH: usize = 64;

/// Most window slots the receiver frees at once.
const FREE_BATCH: usize = 32;

/// How long the receiver waits, after sending stops, for what is still in
/// flight. A server that cannot deliver the window in this time has
/// collapsed; its rate says so.
const DRAIN: Duration = Duration::from_secs(2);

/// Scenario 1: one message in flight, back and forth; `reps` runs, each on
/// a new call, the median reported.
pub async fn floor(ctx: &Ctx, secs: f64, reps: usize) -> Report {
    let mut report = ctx.report("s1".into(), "1 latency floor (1 call, 1 in flight)".into());
    let mut runs = Vec::new();
    for rep in 0..reps.max(1) {
        let Some((a, b)) = one_pair(ctx, &mut report, &format!("floor{rep}-")).await else { break };
        runs.push(run_floor(ctx, a, b, secs).await);
        if ctx.stop.is_cancelled() {
            break;
        }
    }
    median(&mut report, runs, secs);
    report
}

async fn run_floor(ctx: &Ctx, mut a: Peer, mut b: Peer, secs: f64) -> Measured {
    let start = Instant::now();
    let measure_from = start + warmup(secs);
    let end = measure_from + Duration::from_secs_f64(secs);
    let mut m = Measured::default();
    let mut meters: Option<(CpuMeter, CpuMeter, MachineMeter)> = None;
    let mut a_sends = true;
    while !ctx.stop.is_cancelled() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if meters.is_none() && now >= measure_from {
            meters = Some((CpuMeter::start(ctx.server), CpuMeter::start(ctx.me), MachineMeter::start()));
        }
        let (from, to) = if a_sends { (&mut a, &mut b) } else { (&mut b, &mut a) };
        a_sends = !a_sends;
        if let Err(e) = from.ws.send(Message::text(timed_signal(&from.to, from.idx, now_ns()))).await {
            m.errors.push(format!("send failed: {e}"));
            break;
        }
        match next_timed(&mut to.ws).await {
            Ok(t) => {
                if meters.is_some() {
                    m.hist.record(now_ns().saturating_sub(t));
                }
            }
            Err(e) => {
                m.errors.push(format!("receive failed: {e}"));
                break;
            }
        }
    }
    if let Some((server, me, machine)) = meters {
        (m.server, m.me, m.machine_pct) = (server.read(), me.read(), machine.busy_pct());
    }
    m.count = m.hist.count();
    m
}

/// The send time of the next timed message (skipping any other text).
async fn next_timed(ws: &mut crate::net::Ws) -> Result<u64, String> {
    loop {
        let text = next_text(ws, RECV_WAIT).await?;
        if let Some(t) = num_after(&text, T_KEY) {
            return Ok(t);
        }
    }
}

/// Scenario 2: a window of `window` messages in flight A→B; `reps` runs,
/// each on a new call, the median reported.
pub async fn window(ctx: &Ctx, window: usize, secs: f64, reps: usize) -> Report {
    let mut report =
        ctx.report(format!("s2-{window}"), format!("2 one call, {window} in flight (200 B, A→B)"));
    let mut runs = Vec::new();
    for rep in 0..reps.max(1) {
        let Some((a, b)) = one_pair(ctx, &mut report, &format!("window{window}-{rep}-")).await else { break };
        runs.push(run_window(ctx, a, b, window, secs).await);
        if ctx.stop.is_cancelled() {
            break;
        }
    }
    median(&mut report, runs, secs);
    report
}

/// Reports the run with the median rate, and the spread of all runs:
/// other work on the machine can stall any one run.
fn median(report: &mut Report, mut runs: Vec<Measured>, secs: f64) {
    if runs.is_empty() {
        return;
    }
    runs.sort_by_key(|r| r.count);
    report.set("reps", runs.len() as u64);
    report.set("rate_min", runs[0].rate(secs));
    report.set("rate_max", runs[runs.len() - 1].rate(secs));
    let n = runs.len();
    for (i, run) in runs.iter().enumerate() {
        for e in &run.errors {
            report.note(if n > 1 { format!("run {} of {n} (by rate): {e}", i + 1) } else { e.clone() });
        }
    }
    throughput(report, &runs[runs.len() / 2], secs);
}

/// Keeps `window` messages in flight from `a` to `b` for a warm-up and
/// then `secs` measured seconds.
pub async fn run_window(ctx: &Ctx, a: Peer, b: Peer, window: usize, secs: f64) -> Measured {
    let slots = Arc::new(Semaphore::new(window.max(1)));
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let stop = ctx.stop.child_token();
    let start = Instant::now();
    let warm = warmup(secs);
    let measure_from = start + warm;
    let end = measure_from + Duration::from_secs_f64(secs);
    let (from_ns, to_ns) = {
        let base = now_ns();
        (base + warm.as_nanos() as u64, base + (warm + Duration::from_secs_f64(secs)).as_nanos() as u64)
    };

    // After set-up, both ends speak raw frames (see `rawws`).
    let (to, idx) = (a.to.clone(), a.idx);
    let mut a = RawWs::new(a.ws, 0x5eed_0000 ^ a.idx as u32);
    let mut b = RawWs::new(b.ws, 0x5eed_0000 ^ b.idx as u32);

    let writer = {
        let (slots, sent, done, stop) = (slots.clone(), sent.clone(), done.clone(), stop.clone());
        tokio::spawn(async move {
            let mut error = None;
            let (mut one, mut batch) = (Vec::new(), Vec::new());
            loop {
                let permit = tokio::select! {
                    p = slots.acquire() => p,
                    () = tokio::time::sleep_until(end) => break,
                    () = stop.cancelled() => break,
                };
                let Ok(permit) = permit else { break };
                permit.forget();
                let mut n = 1;
                let more = slots.available_permits().min(SEND_BATCH - 1);
                if more > 0 {
                    if let Ok(p) = slots.try_acquire_many(more as u32) {
                        p.forget();
                        n += more;
                    }
                }
                // One stamp per batch, so one frame, masked once and
                // written n times: the generator's core is the scarcer
                // one at millions of messages a second.
                one.clear();
                a.frame(&timed_signal(&to, idx, now_ns()), &mut one);
                batch.clear();
                for _ in 0..n {
                    batch.extend_from_slice(&one);
                }
                let result = tokio::select! {
                    r = a.write(&batch) => r,
                    () = stop.cancelled() => break,
                };
                if let Err(e) = result {
                    error = Some(format!("sender: {e}"));
                    break;
                }
                sent.fetch_add(n as u64, Ordering::Relaxed);
                if Instant::now() >= end {
                    break;
                }
            }
            done.store(true, Ordering::Release);
            // Hand the connection back, so it stays open while the receiver
            // drains.
            (a, error)
        })
    };

    let reader = {
        let (sent, done, stop) = (sent.clone(), done.clone(), stop.clone());
        tokio::spawn(async move {
            let mut hist = Hist::new();
            let mut received = 0u64;
            let mut freed = 0usize;
            let mut error = None;
            let hard_end = end + DRAIN;
            'read: loop {
                // Take what is already buffered; free the window's slots
                // every FREE_BATCH messages and before waiting for more.
                loop {
                    match b.next_buffered() {
                        Ok(Some(Frame::Text(text))) => {
                            // Only timed messages are ours (a relay may pass
                            // on a stray set-up message).
                            let Some(t) = num_after(text, T_KEY) else { continue };
                            let now = now_ns();
                            received += 1;
                            freed += 1;
                            if (from_ns..to_ns).contains(&now) {
                                hist.record(now.saturating_sub(t));
                            }
                            if freed >= FREE_BATCH {
                                slots.add_permits(std::mem::take(&mut freed));
                            }
                        }
                        Ok(Some(Frame::Other)) => {}
                        Ok(Some(Frame::Closed)) => {
                            error =
                                Some(format!("receiver, after {received} messages: closed by the server"));
                            break 'read;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(format!("receiver, after {received} messages: {e}"));
                            break 'read;
                        }
                    }
                }
                slots.add_permits(std::mem::take(&mut freed));
                if done.load(Ordering::Acquire) && received >= sent.load(Ordering::Relaxed) {
                    break;
                }
                if Instant::now() >= hard_end || stop.is_cancelled() {
                    error = Some(format!(
                        "{} messages still in flight {} s after sending stopped",
                        sent.load(Ordering::Relaxed).saturating_sub(received),
                        DRAIN.as_secs()
                    ));
                    break;
                }
                match tokio::time::timeout(Duration::from_millis(50), b.fill()).await {
                    Err(_) | Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        error = Some(format!("receiver, after {received} messages: connection ended"));
                        break;
                    }
                    Ok(Err(e)) => {
                        error = Some(format!("receiver, after {received} messages: read error: {e}"));
                        break;
                    }
                }
            }
            (b, hist, error)
        })
    };

    let mut run = Measured::metered(ctx, measure_from, end, &ctx.stop).await;
    let b_back = reader.await;
    // The receiver is done: stop a sender still blocked on a full socket.
    stop.cancel();
    let a_back = writer.await;
    match b_back {
        Ok((_b, hist, error)) => {
            run.count = hist.count();
            run.hist = hist;
            run.errors.extend(error);
        }
        Err(e) => run.errors.push(format!("receiver task: {e}")),
    }
    match a_back {
        Ok((_a, error)) => run.errors.extend(error),
        Err(e) => run.errors.push(format!("sender task: {e}")),
    }
    run
}
