//! Scenario 3: many calls at a fixed offered rate (open loop).
//!
//! Every client sends to its partner on a fixed schedule, whatever the
//! server does: the total offered rate is spread evenly over clients and
//! their phases staggered, so the server sees a smooth stream. Latency is
//! stamped when a message is actually written; if the generator falls
//! behind the schedule (its socket full, or its own core busy), "sent
//! msgs/s" shows it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{C_KEY, Ctx, Measured, T_KEY, throughput, warmup};
use crate::hist::Hist;
use crate::net::{self, Kind, Ws, describe_close, now_ns, num_after, timed_signal};
use crate::report::{Report, fmt_num};

/// Most messages one client writes per flush when it is behind schedule.
const SEND_BATCH: u64 = 64;

/// How long to wait, after sending stops, for messages still in flight.
const DRAIN: Duration = Duration::from_secs(2);

/// Counters shared by every client task.
#[derive(Debug, Default)]
struct Counts {
    /// Messages written, all the run.
    sent: AtomicU64,
    /// Messages written in the measured interval.
    sent_measured: AtomicU64,
    /// Messages that reached the partner they were meant for.
    useful: AtomicU64,
}

/// The measured interval, in [`now_ns`] time.
#[derive(Clone, Copy, Debug)]
struct Window {
    from_ns: u64,
    to_ns: u64,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        (self.from_ns..self.to_ns).contains(&t)
    }
}

/// Scenario 3 at one offered `rate` (msgs/s, all clients together).
pub async fn rate(ctx: &Ctx, clients: usize, rate: f64, secs: f64) -> Report {
    let mut report = ctx.report(
        format!("s3-{}", rate as u64),
        format!("3 {clients} clients in {} calls, offered {} msgs/s", clients / 2, fmt_num(rate)),
    );
    report.set("offered_rate", rate);
    let pairs =
        net::connect_pairs(ctx.kind, ctx.addr, clients / 2, 256, net::SMALL_READ_BUFFER, "rate").await;
    if pairs.failed > 0 {
        report.note(format!(
            "{} clients failed to set up: {}",
            pairs.failed,
            pairs.first_error.unwrap_or_default()
        ));
    }
    if pairs.pairs.is_empty() {
        return report;
    }
    drive(ctx, &mut report, pairs.pairs, rate, &Schedule::new(secs)).await;
    report
}

/// When an open-loop run sends and when it measures.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// The first message is due.
    start: Instant,
    /// The measured interval starts (after the warm-up).
    measure_from: Instant,
    /// Sending stops.
    end: Instant,
    /// The measured interval on the [`now_ns`] clock.
    window: Window,
    /// Its length.
    secs: f64,
}

impl Schedule {
    /// Sending starts in a moment (every task spawned by then), then a
    /// warm-up, then `secs` measured.
    pub fn new(secs: f64) -> Schedule {
        let warm = warmup(secs);
        let lead = Duration::from_millis(100);
        let start = Instant::now() + lead;
        let measure_from = start + warm;
        let end = measure_from + Duration::from_secs_f64(secs);
        let base = now_ns() + lead.as_nanos() as u64;
        let window = Window {
            from_ns: base + warm.as_nanos() as u64,
            to_ns: base + (warm + Duration::from_secs_f64(secs)).as_nanos() as u64,
        };
        Schedule { start, measure_from, end, window, secs }
    }

    /// When the measured interval starts.
    pub fn measure_from(&self) -> Instant {
        self.measure_from
    }

    /// When it ends (and sending stops).
    pub fn end(&self) -> Instant {
        self.end
    }
}

/// Runs connected `pairs` open loop at `rate` (msgs/s, all clients
/// together) on `schedule`; records in `report` what the generator sent
/// and what arrived (rates, latency, CPU of `ctx.server`, and `lost`:
/// messages not delivered within [`DRAIN`] of sending stopping).
pub async fn drive(
    ctx: &Ctx,
    report: &mut Report,
    pairs: Vec<(net::Peer, net::Peer)>,
    rate: f64,
    schedule: &Schedule,
) -> Measured {
    let peers: Vec<net::Peer> = pairs.into_iter().flat_map(|(a, b)| [a, b]).collect();
    let per_client = rate / peers.len().max(1) as f64;
    let Schedule { start, measure_from, end, window, secs } = *schedule;
    let counts = Arc::new(Counts::default());
    let stop = ctx.stop.child_token();
    let mut writers = JoinSet::new();
    let mut readers = JoinSet::new();
    for (i, peer) in peers.into_iter().enumerate() {
        let (sink, stream) = peer.ws.split();
        // Stagger the clients' phases over one sending interval.
        let first = start + Duration::from_secs_f64(i as f64 / rate);
        writers.spawn(write(
            sink,
            peer.to,
            peer.idx,
            per_client,
            first,
            end,
            window,
            counts.clone(),
            stop.clone(),
        ));
        readers.spawn(read(stream, peer.partner, window, counts.clone(), stop.clone()));
    }

    let mut measured = Measured::metered(ctx, measure_from, end, &stop).await;
    let mut errors = Vec::new();
    while let Some(w) = writers.join_next().await {
        if let Ok(Some(e)) = w {
            errors.push(e);
        }
    }
    // Wait for what is still in flight, within bounds.
    let drain_end = Instant::now() + DRAIN;
    while counts.useful.load(Ordering::Relaxed) < counts.sent.load(Ordering::Relaxed)
        && Instant::now() < drain_end
        && !stop.is_cancelled()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let missing = counts.sent.load(Ordering::Relaxed).saturating_sub(counts.useful.load(Ordering::Relaxed));
    report.set("lost", missing);
    if missing > 0 {
        report.note(format!("{missing} messages not delivered {} s after sending stopped", DRAIN.as_secs()));
    }
    stop.cancel();
    let mut all = 0;
    while let Some(r) = readers.join_next().await {
        match r {
            Ok((h, n, error)) => {
                measured.hist.merge(&h);
                all += n;
                if let Some(e) = error {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(format!("reader task: {e}")),
        }
    }
    if !errors.is_empty() {
        report.note(format!("{} client errors, first: {}", errors.len(), errors[0]));
    }
    report.set("sent_rate", counts.sent_measured.load(Ordering::Relaxed) as f64 / secs);
    report.set("deliveries_rate", all as f64 / secs);
    if ctx.kind == Kind::Seed {
        report
            .note("the seed sends every message to every other client: 'all deliveries' counts those copies");
    }
    measured.count = measured.hist.count();
    measured.errors = errors;
    throughput(report, &measured, secs);
    measured
}

/// Sends to the partner on schedule: message `k` is due at `first + k/rate`.
#[allow(clippy::too_many_arguments)]
async fn write(
    mut sink: SplitSink<Ws, Message>,
    to: String,
    idx: usize,
    rate: f64,
    first: Instant,
    end: Instant,
    window: Window,
    counts: Arc<Counts>,
    stop: CancellationToken,
) -> Option<String> {
    let total = if end > first { ((end - first).as_secs_f64() * rate).ceil() as u64 } else { 0 };
    let mut sent = 0u64;
    while sent < total && !stop.is_cancelled() {
        let now = Instant::now();
        let due = if now < first { 0 } else { ((now - first).as_secs_f64() * rate) as u64 + 1 }.min(total);
        if sent < due {
            let n = (due - sent).min(SEND_BATCH);
            let t = now_ns();
            let msg = Message::text(timed_signal(&to, idx, t));
            let write = async {
                for _ in 0..n {
                    sink.feed(msg.clone()).await?;
                }
                sink.flush().await
            };
            let result = tokio::select! {
                r = write => r,
                () = stop.cancelled() => break,
            };
            if let Err(e) = result {
                return Some(format!("sender {idx}: {e}"));
            }
            sent += n;
            counts.sent.fetch_add(n, Ordering::Relaxed);
            if window.contains(t) {
                counts.sent_measured.fetch_add(n, Ordering::Relaxed);
            }
            continue;
        }
        let next = first + Duration::from_secs_f64(sent as f64 / rate);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = stop.cancelled() => break,
        }
    }
    None
}

/// Receives until stopped; returns latencies of messages from the partner
/// in the measured interval, and how many messages of any sender arrived
/// in it (the seed relays every client's messages to everyone).
async fn read(
    mut stream: SplitStream<Ws>,
    partner: usize,
    window: Window,
    counts: Arc<Counts>,
    stop: CancellationToken,
) -> (Hist, u64, Option<String>) {
    let mut hist = Hist::new();
    let mut all = 0u64;
    let partner = partner as u64;
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            () = stop.cancelled() => return (hist, all, None),
        };
        match msg {
            Some(Ok(Message::Text(text))) => {
                // Only timed messages are ours (a relay may pass on a stray
                // set-up message); on the seed, every client's reach us.
                let Some(from) = num_after(text.as_str(), C_KEY) else { continue };
                let now = now_ns();
                let measured = window.contains(now);
                all += u64::from(measured);
                if from == partner {
                    counts.useful.fetch_add(1, Ordering::Relaxed);
                    if let (true, Some(t)) = (measured, num_after(text.as_str(), T_KEY)) {
                        hist.record(now.saturating_sub(t));
                    }
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Binary(_))) => {}
            other => return (hist, all, Some(describe_close(other))),
        }
    }
}
