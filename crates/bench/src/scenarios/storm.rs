//! Scenario 4: a join storm. N calls are set up at once: for each, two
//! clients connect, say hello, join the same room, and the newcomer sends an
//! offer (~2 KB of SDP-like text); the other answers (same size); then 8 ICE
//! candidates go each way. A set-up is complete when both sides have
//! received everything. Every client starts at the same instant.
//!
//! Paced (`pace`), the set-ups start one after another at a fixed rate
//! instead, and each is timed from its own start: how long one call takes
//! to set up while the server is busy setting up many others.
//!
//! How the two clients of a call find each other depends on the server:
//! webconf tells them (`joined.peers`, `peer-joined`). The relays have no
//! rooms, so clients announce themselves with a `join` carrying their
//! number (`w`); whoever hears the other's `join` answers with an `ack`
//! (webconf's `peer-joined`, in effect), and the higher-numbered one offers.
//! The bare relay pairs connections in arrival order, so partners are
//! whoever it paired; the seed sends everything to everyone, so clients
//! 2k and 2k+1 are partners and ignore the rest.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::Ctx;
use crate::hist::Hist;
use crate::net::{self, Kind, Ws, describe_close, now_ns, num_after, signal, str_after};
use crate::procfs::CpuMeter;
use crate::report::{Report, fmt_num};

/// Candidates each side sends.
const CANDIDATES: u32 = 8;
/// Size of the offer's and the answer's SDP.
const SDP_BYTES: usize = 2048;
/// Key of the sender's number in the relays' set-up messages.
const W_KEY: &str = r#""w":"#;

/// What one client of the storm saw.
#[derive(Debug, Default)]
struct Outcome {
    idx: usize,
    partner: Option<usize>,
    connect: Option<Duration>,
    /// When it had received everything it expected, [`now_ns`] time.
    done_ns: Option<u64>,
    /// When it sent its offer, if it was the one offering.
    offer_ns: Option<u64>,
    /// When it woke up to start ([`now_ns`] time; the timer may be late).
    start_ns: u64,
    error: Option<String>,
}

/// An SDP-like text: CRLF lines as JSON escapes, no quotes.
fn sdp() -> &'static str {
    static SDP: OnceLock<String> = OnceLock::new();
    SDP.get_or_init(|| {
        let lines = [
            "v=0",
            "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0 1",
            "a=msid-semantic: WMS stream",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 103 104 9 0 8 106 105 13 110 112 113 126",
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=ice-ufrag:Zx9k",
            "a=ice-pwd:b9Pq0kT6yq3vXhVnO0yR2u4E",
            "a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB",
            "a=setup:actpass",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125",
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 goog-remb",
            "a=rtcp-fb:96 transport-cc",
            "a=rtcp-fb:96 ccm fir",
        ];
        let mut s = String::with_capacity(SDP_BYTES + 128);
        'fill: loop {
            for l in lines {
                if s.len() + l.len() + 4 > SDP_BYTES {
                    break 'fill;
                }
                s.push_str(l);
                s.push_str("\\r\\n");
            }
        }
        while s.len() < SDP_BYTES {
            s.push('x');
        }
        s
    })
}

/// Scenario 4 with `setups` call set-ups: all at once, or `pace` a second.
pub async fn storm(ctx: &Ctx, setups: usize, deadline: f64, mark: f64, pace: Option<f64>) -> Report {
    let mut report = match pace {
        None => ctx.report(format!("s4-{setups}"), format!("4 join storm, {setups} call set-ups at once")),
        Some(rate) => ctx.report(
            format!("s4p-{setups}"),
            format!("4 paced: {setups} call set-ups, {} a second, each timed from its start", fmt_num(rate)),
        ),
    };
    report.set("setups", setups as u64);
    report.set("deadline_s", deadline);
    let clients = 2 * setups;
    // When set-up `k` starts, after the first.
    let offset =
        |k: usize| pace.map_or(Duration::ZERO, |rate| Duration::from_secs_f64(k as f64 / rate.max(1e-3)));
    // A moment to spawn every client before the first start.
    let lead = Duration::from_millis(300);
    let t0 = Instant::now() + lead;
    let t0_ns = now_ns() + lead.as_nanos() as u64;
    let deadline_at = t0 + offset(setups) + Duration::from_secs_f64(deadline);
    let stop = ctx.stop.child_token();
    let pending = Arc::new(AtomicUsize::new(clients));
    let all_done = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    for idx in 0..clients {
        let (stop, pending, all_done) = (stop.clone(), pending.clone(), all_done.clone());
        let (kind, addr) = (ctx.kind, ctx.addr);
        let start = t0 + offset(idx / 2);
        tasks.spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut out = Outcome { idx, start_ns: now_ns(), ..Outcome::default() };
            let mut ws = None;
            tokio::select! {
                r = set_up(kind, addr, idx, &mut out) => match r {
                    Ok(socket) => ws = Some(socket),
                    Err(e) => out.error = Some(e),
                },
                () = stop.cancelled() => {}
            }
            if pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                all_done.notify_one();
            }
            // Stay in the call, reading (the seed keeps sending everyone
            // everything), until the storm is over.
            if let Some(mut ws) = ws {
                tokio::select! {
                    () = async { while let Some(Ok(_)) = ws.next().await {} } => {}
                    () = stop.cancelled() => {}
                }
            }
            out
        });
    }
    tokio::time::sleep_until(t0).await;
    let server = CpuMeter::start(ctx.server);
    tokio::select! {
        () = all_done.notified() => {}
        () = tokio::time::sleep_until(deadline_at) => {}
        () = stop.cancelled() => {}
    }
    let server = server.read();
    report.set("wall_s", server.wall.as_secs_f64());
    stop.cancel();

    let mut outcomes: Vec<Option<Outcome>> = (0..clients).map(|_| None).collect();
    while let Some(r) = tasks.join_next().await {
        if let Ok(o) = r {
            let i = o.idx;
            outcomes[i] = Some(o);
        }
    }
    let mut done = Hist::new();
    let mut sig = Hist::new();
    let mut connect = Hist::new();
    let mut within_mark = 0u64;
    let mark_ns = (mark * 1e9) as u64;
    let mut errors = 0;
    let mut first_error = None;
    for o in outcomes.iter().flatten() {
        if let Some(c) = o.connect {
            connect.record(c.as_nanos() as u64);
        }
        if let Some(e) = &o.error {
            errors += 1;
            first_error.get_or_insert_with(|| e.clone());
        }
        let Some(p) = o.partner.filter(|&p| p > o.idx) else { continue };
        let Some(other) = outcomes.get(p).and_then(Option::as_ref) else { continue };
        if other.partner != Some(o.idx) {
            continue;
        }
        if let (Some(a), Some(b)) = (o.done_ns, other.done_ns) {
            let finished = a.max(b);
            // All at once: from the common start. Paced: from when the
            // first of the two actually started (the generator's timers
            // have a millisecond's grain; its lateness is not the server's).
            let from = match pace {
                None => t0_ns,
                Some(_) => o.start_ns.min(other.start_ns),
            };
            let took = finished.saturating_sub(from);
            done.record(took);
            within_mark += u64::from(took <= mark_ns);
            if let Some(offer) = o.offer_ns.or(other.offer_ns) {
                sig.record(finished.saturating_sub(offer));
            }
        }
    }
    let completed = done.count();
    report.set("completed", completed);
    report.set("within_mark_pct", 100.0 * within_mark as f64 / setups.max(1) as f64);
    for (key, hist) in [("done", &done), ("sig", &sig), ("connect", &connect)] {
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            if let Some(ns) = hist.quantile(q) {
                report.set(&format!("{key}_{name}_ms"), ns as f64 / 1e6);
            }
        }
    }
    if let Some(us) = server.micros_per(completed) {
        report.set("cpu_us_per_setup", us);
    }
    report.set("server_cpu_pct", server.percent());
    if errors > 0 {
        report.note(format!("{errors} clients failed, first: {}", first_error.unwrap_or_default()));
    }
    if completed < setups as u64 {
        report.note(format!(
            "{} of {setups} set-ups not complete after {:.1} s",
            setups as u64 - completed,
            server.wall.as_secs_f64()
        ));
    }
    report
}

/// One client's part of a set-up; returns its connection, still open.
async fn set_up(kind: Kind, addr: std::net::SocketAddr, idx: usize, out: &mut Outcome) -> Result<Ws, String> {
    let started = Instant::now();
    let mut ws = net::connect(addr, net::SMALL_READ_BUFFER).await?;
    out.connect = Some(started.elapsed());
    let room = format!("storm{}", idx / 2);
    let join = match kind {
        Kind::Webconf => format!(r#"{{"type":"join","room":"{room}","name":"c{idx}"}}"#),
        Kind::Bare | Kind::Seed => format!(r#"{{"type":"join","room":"{room}","name":"c{idx}","w":{idx}}}"#),
    };
    for m in [r#"{"type":"hello","version":2}"#.to_owned(), join] {
        ws.feed(Message::text(m)).await.map_err(|e| format!("send: {e}"))?;
    }
    ws.flush().await.map_err(|e| format!("send: {e}"))?;

    let mut call = Call { idx, partner: None, to: String::new(), sent_offer: false, got: 0, done: false };
    while !call.done {
        let text = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Binary(_))) => {
                continue;
            }
            other => return Err(describe_close(other)),
        };
        let text = text.as_str();
        let mut replies = Vec::new();
        match kind {
            Kind::Webconf => call.on_webconf(text, &mut replies, out)?,
            Kind::Bare | Kind::Seed => call.on_relay(kind, text, &mut replies, out),
        }
        if !replies.is_empty() {
            for m in replies {
                ws.feed(Message::text(m)).await.map_err(|e| format!("send: {e}"))?;
            }
            ws.flush().await.map_err(|e| format!("send: {e}"))?;
        }
    }
    out.done_ns = Some(now_ns());
    Ok(ws)
}

/// One client's view of its call being set up.
#[derive(Debug)]
struct Call {
    idx: usize,
    partner: Option<usize>,
    /// The partner's `to`.
    to: String,
    sent_offer: bool,
    /// Offer or answer, and candidates, received.
    got: u32,
    done: bool,
}

impl Call {
    fn data(&self, kind: &str) -> String {
        let (idx, sdp) = (self.idx, sdp());
        format!(r#"{{"k":"{kind}","w":{idx},"description":{{"type":"{kind}","sdp":"{sdp}"}}}}"#)
    }

    fn candidates(&self, out: &mut Vec<String>) {
        for n in 0..CANDIDATES {
            let data = format!(
                r#"{{"k":"cand","w":{},"n":{n},"candidate":{{"candidate":"candidate:{n} 1 udp 2122260223 192.168.1.20 {} typ host generation 0 ufrag Zx9k network-id 1","sdpMid":"0","sdpMLineIndex":0}}}}"#,
                self.idx,
                50000 + n
            );
            out.push(signal(&self.to, &data));
        }
    }

    /// Sends the offer and our candidates (we are the newcomer).
    fn offer(&mut self, out: &mut Vec<String>, outcome: &mut Outcome) {
        if self.sent_offer {
            return;
        }
        self.sent_offer = true;
        outcome.offer_ns = Some(now_ns());
        out.push(signal(&self.to, &self.data("offer")));
        self.candidates(out);
    }

    /// A relayed set-up message (`data` of a signal), from the partner.
    fn on_signal(&mut self, text: &str, out: &mut Vec<String>) {
        match str_after(text, r#""k":""#) {
            Some("offer") if !self.sent_offer => {
                self.got += 1;
                out.push(signal(&self.to, &self.data("answer")));
                self.candidates(out);
            }
            Some("answer") if self.sent_offer => self.got += 1,
            Some("cand") => self.got += 1,
            _ => {}
        }
        self.done = self.got == CANDIDATES + 1;
    }

    fn on_webconf(&mut self, text: &str, out: &mut Vec<String>, outcome: &mut Outcome) -> Result<(), String> {
        if str_after(text, r#""type":""#) == Some("signal") {
            self.on_signal(text, out);
            return Ok(());
        }
        let (partner, to) = match str_after(text, r#""type":""#) {
            Some("welcome") => return Ok(()),
            Some("joined" | "peer-joined") => {
                let msg: serde_json::Value =
                    serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))?;
                let peer = if msg["type"] == "joined" { &msg["peers"][0] } else { &msg["peer"] };
                let Some(id) = peer["id"].as_str() else { return Ok(()) };
                let name = peer["name"].as_str().unwrap_or_default();
                let partner = name.strip_prefix('c').and_then(|n| n.parse().ok());
                (partner, id.to_owned())
            }
            _ => return Err(format!("unexpected: {text}")),
        };
        let newcomer = str_after(text, r#""type":""#) == Some("joined");
        self.partner = partner;
        self.to = to;
        outcome.partner = partner;
        if newcomer {
            self.offer(out, outcome);
        }
        Ok(())
    }

    fn on_relay(&mut self, kind: Kind, text: &str, out: &mut Vec<String>, outcome: &mut Outcome) {
        let Some(from) = num_after(text, W_KEY).map(|w| w as usize) else { return };
        // Only the partner counts: on the seed, clients 2k and 2k+1; on the
        // bare relay, whoever it paired us with (the first we hear from).
        let partner = match (kind, self.partner) {
            (_, Some(p)) => p,
            (Kind::Seed, None) => self.idx ^ 1,
            _ => from,
        };
        if from != partner || from == self.idx {
            return;
        }
        match str_after(text, r#""type":""#) {
            Some(kind @ ("join" | "ack")) => {
                if self.partner.is_none() {
                    self.partner = Some(partner);
                    self.to = partner.to_string();
                    outcome.partner = Some(partner);
                }
                if kind == "join" {
                    // Tell the newcomer we are here (as webconf's joined.peers would).
                    out.push(format!(r#"{{"type":"ack","room":"storm{}","w":{}}}"#, self.idx / 2, self.idx));
                }
                if self.idx > partner {
                    self.offer(out, outcome);
                }
            }
            Some("signal") if self.partner.is_some() => self.on_signal(text, out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_up_messages_are_json_of_the_intended_size() {
        let call = Call { idx: 7, partner: Some(6), to: "6".into(), sent_offer: false, got: 0, done: false };
        let offer = signal("6", &call.data("offer"));
        let v: serde_json::Value = serde_json::from_str(&offer).expect("offer is JSON");
        let sdp = v["data"]["description"]["sdp"].as_str().expect("sdp");
        assert!(sdp.len() > 1900 && sdp.len() <= SDP_BYTES, "{}", sdp.len());
        assert_eq!(num_after(&offer, W_KEY), Some(7));
        assert_eq!(str_after(&offer, r#""k":""#), Some("offer"));
        let mut cands = Vec::new();
        call.candidates(&mut cands);
        assert_eq!(cands.len(), CANDIDATES as usize);
        for c in cands {
            let v: serde_json::Value = serde_json::from_str(&c).expect("candidate is JSON");
            assert_eq!(v["data"]["w"], 7);
        }
    }
}
