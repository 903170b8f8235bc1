//! Scenario 7: group calls through the SFU, side by side with a plain UDP
//! forwarder.
//!
//! `rooms` rooms of `room_size` synthetic participants; each publishes one
//! camera (pre-built VP8 RTP, one frame per packet, `pps` packets a second,
//! see [`crate::media`]) and receives everyone else's through the server.
//! Against webconf every participant is a str0m session
//! ([`crate::rtcpeer`]) set up over the signaling protocol; against the
//! forwarder ([`crate::udpfwd`]), a bare UDP socket. All of them run in
//! this one thread.
//!
//! Once every session is up and every stream the server should forward is
//! flowing (or a set-up limit passed), a warm-up, then the measured window:
//! every frame a publisher sends in it should reach each of its
//! subscribers. Loss is what did not, counted a few hundred milliseconds
//! after sending stops; delay is send (handing the packet to the
//! publisher's session) to receipt (the datagram read from the
//! subscriber's socket), on one clock.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::{JoinSet, LocalSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{Ctx, Measured};
use crate::media::Tally;
use crate::net::{self, Kind, Ws, instant_ns, next_text, now_ns};
use crate::procfs::udp_drops;
use crate::report::{Report, fmt_num};
use crate::rtcpeer::{RtcParticipant, Schedule};
use crate::udpfwd::UdpParticipant;

/// How long after sending stops the subscribers keep counting.
const DRAIN: Duration = Duration::from_millis(800);

/// Server CPU (% of its core) from which a run counts as saturated.
const SATURATED_PCT: f64 = 95.0;

/// Generator CPU (% of its core) from which a run measured the generator.
const GENERATOR_BOUND_PCT: f64 = 90.0;

/// Loss (%) a run may have and still hold.
const MAX_LOSS_PCT: f64 = 0.1;

/// p99 forwarding delay (ms) a run may have and still hold: not the
/// issue's condition, but video a second late is no call.
const MAX_P99_MS: f64 = 100.0;

/// WebSocket set-ups in flight at once.
const CONNECTS_IN_FLIGHT: usize = 64;

/// Which ladder a run belongs to, for the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ladder {
    /// Many rooms of a fixed size: packets per second.
    Rate,
    /// One room, everyone publishing to everyone: room size.
    Room,
}

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Which ladder the run belongs to.
    pub ladder: Ladder,
    /// Rooms.
    pub rooms: usize,
    /// People in each.
    pub room_size: usize,
    /// Packets per second of each camera.
    pub pps: f64,
    /// Measured seconds.
    pub secs: f64,
    /// Seconds between set-up and the measured window.
    pub warmup: f64,
    /// Longest the set-up may take, seconds.
    pub setup_limit: f64,
    /// The server's last-N (`--sfu-max-video`).
    pub max_video: usize,
}

/// Runs one step of a ladder against the server in `ctx`.
pub async fn sfu(ctx: &Ctx, plan: &Plan) -> Report {
    LocalSet::new().run_until(run(ctx, plan)).await
}

async fn run(ctx: &Ctx, plan: &Plan) -> Report {
    let (rooms, size) = (plan.rooms.max(1), plan.room_size.max(2));
    let people = rooms * size;
    let all_streams = people * (size - 1);
    let offered = all_streams as f64 * plan.pps;
    let (id, title) = match plan.ladder {
        Ladder::Rate => (
            format!("sfu-rate-{rooms}x{size}"),
            format!(
                "{rooms} rooms of {size}: {} streams, {} pkts/s",
                fmt_num(all_streams as f64),
                fmt_num(offered)
            ),
        ),
        Ladder::Room => (
            format!("sfu-room-{size}"),
            format!("1 room of {size}: {} streams, {} pkts/s", fmt_num(all_streams as f64), fmt_num(offered)),
        ),
    };
    let mut report = ctx.report(id, title);
    report.set("ladder", format!("{:?}", plan.ladder).to_lowercase());
    report.set("rooms", rooms);
    report.set("room_size", size);
    report.set("participants", people);
    report.set("pps", plan.pps);
    report.set("streams_all", all_streams);
    // webconf forwards at most `max_video` cameras to each subscriber
    // (last-N); the forwarder has no such limit.
    let per_subscriber = match ctx.kind {
        Kind::Webconf => (size - 1).min(plan.max_video),
        _ => size - 1,
    };
    let design = people * per_subscriber;
    report.set("streams_design", design);
    let _ = now_ns();

    let tally = Rc::new(RefCell::new(Tally::new(people, size)));
    let stop = ctx.stop.child_token();
    let schedule = Schedule { start: std::time::Instant::now(), pps: plan.pps, publishers: people };
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    match ctx.kind {
        Kind::Webconf => {
            let (joined, failed) = join_all(ctx, people, size).await;
            if let Some(e) = failed {
                report.note(e);
            }
            for (idx, ws) in joined.into_iter().enumerate() {
                let Some(ws) = ws else { continue };
                match RtcParticipant::new(idx as u32, ws).await {
                    Ok(p) => {
                        tasks.spawn_local(p.run(tally.clone(), schedule, stop.clone()));
                    }
                    Err(e) => tally.borrow_mut().error(format!("p{idx}: {e}")),
                }
            }
        }
        _ => {
            for idx in 0..people {
                match UdpParticipant::new(idx as u32, (idx / size) as u32, ctx.addr).await {
                    Ok(p) => {
                        tasks.spawn_local(p.run(tally.clone(), schedule, stop.clone()));
                    }
                    Err(e) => tally.borrow_mut().error(format!("p{idx}: {e}")),
                }
            }
        }
    }

    // Set-up: every session connected and every stream flowing.
    let limit = started + Duration::from_secs_f64(plan.setup_limit);
    loop {
        let (connected, active) = {
            let t = tally.borrow();
            (t.connected, t.flowing(now_ns()))
        };
        if connected >= people && active >= design {
            break;
        }
        if Instant::now() >= limit || stop.is_cancelled() {
            report.note(format!(
                "after {} s of set-up: {connected} of {people} sessions connected, {active} of {design} streams flowing",
                plan.setup_limit
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.set("setup_s", started.elapsed().as_secs_f64());

    let warm = Instant::now();
    let from = warm + Duration::from_secs_f64(plan.warmup);
    let to = from + Duration::from_secs_f64(plan.secs);
    tally.borrow_mut().set_window(
        instant_ns(warm.into_std()),
        instant_ns(from.into_std()),
        instant_ns(to.into_std()),
    );
    let server_port = match ctx.kind {
        Kind::Webconf => tally.borrow().server_port,
        _ => Some(ctx.addr.port()),
    };
    tokio::time::sleep_until(from).await;
    tally.borrow_mut().mark_flowing(now_ns());
    let drops_before = udp_drops(server_port);
    let (rx_before, frames_before) = (tally.borrow().rx, tally.borrow().datagrams);
    let metrics_before = server_metrics(ctx).await;
    let measured = Measured::metered(ctx, from, to, &stop).await;
    let metrics_after = server_metrics(ctx).await;
    let (rx, frames) = (tally.borrow().rx.since(&rx_before), tally.borrow().datagrams - frames_before);
    tokio::time::sleep(DRAIN).await;
    let drops_after = udp_drops(server_port);
    stop.cancel();
    while tasks.join_next().await.is_some() {}

    let t = tally.borrow();
    let s = t.summary();
    let secs = measured.server.wall.as_secs_f64().max(1e-9);
    report.set("streams", s.streams);
    report.set("offered_rate", s.expected as f64 / secs);
    report.set("rate", s.received as f64 / secs);
    report.set("sent_rate", s.sent as f64 / secs);
    report.set("loss_pct", s.loss_pct());
    report.latency("lat", &t.hist);
    report.latency("warmup_lat", &t.warmup_hist);
    // What else reached the participants: the server's feedback, padding,
    // probes and retransmissions.
    report.set("rx_rtp_other_rate", rx.rtp.saturating_sub(frames) as f64 / secs);
    report.set("rx_rtcp_rate", rx.rtcp as f64 / secs);
    report.set("rx_stun_rate", rx.stun as f64 / secs);
    report.set("server_cpu_pct", measured.server.percent());
    report.set("gen_cpu_pct", measured.me.percent());
    if let Some(busy) = measured.machine_pct {
        report.set("other_cpu_pct", (busy - measured.server.percent() - measured.me.percent()).max(0.0));
    }
    if let Some(us) = measured.server.micros_per(s.received) {
        report.set("cpu_us_per_pkt", us);
    }
    if s.streams > 0 {
        report.set("cpu_pct_per_stream", measured.server.percent() / s.streams as f64);
    }
    if t.datagrams > 0 {
        report.set("datagram_bytes", t.datagram_bytes as f64 / t.datagrams as f64);
    }
    // webconf's own counters over the window, where it has them.
    for (name, key) in [
        ("webconf_sfu_frames_forwarded_total", "server_frames_forwarded"),
        ("webconf_sfu_keyframe_requests_total", "keyframe_requests"),
        ("webconf_sfu_nacks_received_total", "nacks_received"),
        ("webconf_sfu_nacks_sent_total", "nacks_sent"),
    ] {
        if let (Some(a), Some(b)) = (metric(&metrics_before, name), metric(&metrics_after, name)) {
            report.set(key, (b - a).max(0.0));
        }
    }
    if let Some(bps) = metric(&metrics_after, "webconf_sfu_bandwidth_estimate_bps") {
        report.set("bwe_last_bps", bps);
    }
    report.set("server_sock_drops", drops_after.0.saturating_sub(drops_before.0));
    report.set("gen_sock_drops", drops_after.1.saturating_sub(drops_before.1));
    report.set("duplicates", t.duplicates);
    report.set("send_failures", t.send_failures);
    let saturated = measured.server.percent() >= SATURATED_PCT;
    let generator_bound = measured.me.percent() >= GENERATOR_BOUND_PCT;
    let p99_ms = t.hist.quantile(0.99).map_or(f64::INFINITY, |ns| ns as f64 / 1e6);
    let late = p99_ms >= MAX_P99_MS;
    let held =
        s.loss_pct() < MAX_LOSS_PCT && s.streams >= design && !saturated && !late && !ctx.stop.is_cancelled();
    report.set("held", held);
    report.set("generator_bound", generator_bound);
    if generator_bound {
        report.note(format!(
            "the generator used {:.0}% of its core: this row may measure the generator",
            measured.me.percent()
        ));
    }
    if saturated {
        report.note(format!("the server used {:.0}% of its core", measured.server.percent()));
    }
    if late {
        report.note(format!("p99 delay {} ms", fmt_num(p99_ms)));
    }
    if s.streams < design {
        report.note(format!("{} of {design} streams were flowing when the window began", s.streams));
    }
    if t.error_count > 0 {
        report.note(format!("{} participant errors, first: {}", t.error_count, t.errors.join("; ")));
    }
    report
}

/// webconf's `/metrics` page (empty for the forwarder, or on failure).
async fn server_metrics(ctx: &Ctx) -> String {
    if ctx.kind != Kind::Webconf {
        return String::new();
    }
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(ctx.addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", ctx.addr);
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    tokio::time::timeout(Duration::from_secs(2), fetch).await.ok().flatten().unwrap_or_default()
}

/// The value of metric `name` on a `/metrics` page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Connects `people` WebSockets, says hello and joins participant `i` to
/// room `r{i / size}`; returns them by number (None: failed) and the first
/// failure, if any.
async fn join_all(ctx: &Ctx, people: usize, size: usize) -> (Vec<Option<Ws>>, Option<String>) {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECTS_IN_FLIGHT));
    let mut joins = JoinSet::new();
    for idx in 0..people {
        let (gate, addr) = (gate.clone(), ctx.addr);
        joins.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|_| "semaphore closed".to_owned())?;
            let mut ws = net::connect(addr, net::SMALL_READ_BUFFER).await?;
            ws.feed(Message::text(r#"{"type":"hello","version":2}"#))
                .await
                .map_err(|e| format!("send: {e}"))?;
            let join = format!(r#"{{"type":"join","room":"r{}","name":"p{idx}"}}"#, idx / size);
            ws.feed(Message::text(join)).await.map_err(|e| format!("send: {e}"))?;
            ws.flush().await.map_err(|e| format!("send: {e}"))?;
            loop {
                let text = next_text(&mut ws, Duration::from_secs(30)).await?;
                if text.contains(r#""type":"joined""#) {
                    return Ok::<_, String>((idx, ws));
                }
                if text.contains(r#""type":"error""#) {
                    return Err(format!("join refused: {text}"));
                }
            }
        });
    }
    let mut out: Vec<Option<Ws>> = (0..people).map(|_| None).collect();
    let (mut failed, mut first) = (0, None);
    while let Some(done) = joins.join_next().await {
        match done.map_err(|e| format!("task: {e}")).and_then(|r| r) {
            Ok((idx, ws)) => out[idx] = Some(ws),
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    (out, first.map(|e| format!("{failed} of {people} participants could not join: {e}")))
}
