//! The abuse scenario (issue 10, "Prove it under attack"): while two
//! legitimate clients keep a signaling call going and a TURN-relayed
//! stream flows between two legitimate TURN clients, an attacker from one
//! address (or from many in 127.0.0.0/8) opens as many as it can of every
//! hostile kind: idle TCP to HTTP and to TURN, half-sent requests,
//! WebSockets that never say `hello`, TURN allocations filled with
//! permissions and channels, and a room of chat flooders. Against coturn
//! (`--target coturn`) only the TURN parts run.
//!
//! The legitimate side runs on its own thread with its own runtime, so the
//! attacker's thousands of tasks never delay its timestamps; both threads
//! share the generator's core. What is measured: the server's peak RSS and
//! open descriptors (/proc), the call's signal latency, the relayed
//! stream's loss, `/healthz`'s latency, whether newcomers can join (and a
//! new TURN allocation be made), and what the server refused or shed
//! (/metrics).

pub mod attack;
pub mod turnc;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use self::attack::{Sources, TcpKind};
use self::turnc::{Credential, TurnClient};
use super::Ctx;
use crate::hist::Hist;
use crate::net;
use crate::procfs::{CpuMeter, MachineMeter, Proc};
use crate::report::{Report, fmt_num};

/// Which server is under attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// webconf: every part (signaling, HTTP, TURN).
    Webconf,
    /// coturn: only the TURN parts.
    Coturn,
}

/// How big the attack is and how long it lasts (`bench run ... abuse`'s
/// arguments).
#[derive(clap::Args, Debug)]
pub struct Plan {
    /// The server under attack (coturn: only the TURN parts).
    #[arg(long, value_enum, default_value_t = Target::Webconf)]
    pub target: Target,
    /// Its TURN address (UDP and TCP).
    #[arg(long)]
    pub turn: SocketAddr,
    /// coturn's `--static-auth-secret` (webconf hands credentials to
    /// joined peers instead).
    #[arg(long)]
    pub secret: Option<String>,
    /// Attacking source addresses (127.66.x.y).
    #[arg(long, default_value_t = 1)]
    pub addresses: usize,
    /// Seconds of calm before the attack (the baseline).
    #[arg(long, default_value_t = 5.0)]
    pub baseline: f64,
    /// Seconds of attack.
    #[arg(long, default_value_t = 20.0)]
    pub secs: f64,
    /// Hostile connections of each TCP kind the attacker keeps trying to hold.
    #[arg(long, default_value_t = 200)]
    pub conns: usize,
    /// TURN allocations it tries to hold.
    #[arg(long, default_value_t = 40)]
    pub allocations: usize,
    /// Permissions it tries to install in each.
    #[arg(long, default_value_t = 200)]
    pub permissions: usize,
    /// Channels it tries to bind in each.
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Chat flooders (joined, in rooms of 24).
    #[arg(long, default_value_t = 24)]
    pub flooders: usize,
    /// Chat messages each flooder writes a second.
    #[arg(long, default_value_t = 200)]
    pub chat_rate: u32,
    /// The server's process id (for its descriptors and limits): `bench
    /// run --pid`, not an argument of its own.
    #[arg(skip)]
    pub pid: u32,
}

/// The legitimate call's pace: signals each way a second (under the rate
/// limit of 100), and relayed packets a second (a small video stream).
const SIGNALS_PER_SEC: f64 = 50.0;
const RELAY_PPS: f64 = 500.0;
const RELAY_PAYLOAD: usize = 160;
/// Probes: `/healthz` every 100 ms, a newcomer's join every second, a new
/// TURN allocation every 2 s.
const HEALTH_EVERY: Duration = Duration::from_millis(100);
const JOIN_EVERY: Duration = Duration::from_secs(1);
const ALLOC_EVERY: Duration = Duration::from_secs(2);
/// A probe that takes longer failed.
const PROBE_LIMIT: Duration = Duration::from_secs(3);
/// After the attack, how long late packets and signals may still arrive.
const TAIL: Duration = Duration::from_secs(1);

/// Before the attack (0) and during it (1).
type Phases<T> = [T; 2];

/// What the legitimate side saw.
#[derive(Debug, Default)]
struct Legit {
    notes: Vec<String>,
    sig_lat: Phases<Hist>,
    sig_sent: Phases<u64>,
    sig_recv: Phases<u64>,
    health_lat: Phases<Hist>,
    health_failed: Phases<u64>,
    joins_tried: u64,
    joins_ok: u64,
    join_lat: Hist,
    allocs_tried: u64,
    allocs_ok: u64,
    relay_sent: Phases<u64>,
    relay_recv: Phases<u64>,
    relay_lat: Phases<Hist>,
}

/// The attack's timeline on the [`net::now_ns`] clock.
#[derive(Clone, Copy, Debug)]
struct Timeline {
    start_ns: u64,
    end_ns: u64,
}

impl Timeline {
    fn phase(&self, t_ns: u64) -> Option<usize> {
        if t_ns < self.start_ns {
            Some(0)
        } else if t_ns < self.end_ns {
            Some(1)
        } else {
            None
        }
    }
}

/// The abuse scenario on one server.
pub async fn abuse(ctx: &Ctx, plan: &Plan) -> Report {
    let (kind, target) = match plan.target {
        Target::Webconf => ("webconf", "webconf"),
        Target::Coturn => ("coturn", "coturn"),
    };
    let who =
        if plan.addresses <= 1 { "one address".to_owned() } else { format!("{} addresses", plan.addresses) };
    let quiet = plan.target == Target::Webconf && plan.flooders == 0;
    let mut report = Report::new(
        format!("abuse-{target}-{}{}", plan.addresses, if quiet { "-nochat" } else { "" }),
        format!("{target}, attacker from {who}{}", if quiet { ", no chat flood" } else { "" }),
        kind,
        kind,
    );
    report.set("target", target);
    report.set("addresses", plan.addresses as u64);
    report.set("attack_s", plan.secs);
    let http = (plan.target == Target::Webconf).then_some(ctx.addr);

    report.set("conns", plan.conns as u64);
    report.set("allocations", plan.allocations as u64);
    report.set("flooders", if http.is_some() { plan.flooders as u64 } else { 0 });
    if let Some(n) = nofile(plan.pid) {
        report.set("server_nofile", n);
    }
    let sampler = Sampler::start(ctx.server, plan.pid);
    let metrics_before = match http {
        Some(http) => scrape(http).await,
        None => BTreeMap::new(),
    };

    // The legitimate side, on its own thread.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<Credential, String>>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<Timeline>();
    // Only coturn takes minted credentials; webconf's come from `joined`.
    let secret = if plan.target == Target::Coturn { plan.secret.clone() } else { None };
    let turn = plan.turn;
    let legit = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        match runtime {
            Ok(rt) => rt.block_on(legit(http, turn, secret, ready_tx, go_rx)),
            Err(e) => Legit { notes: vec![format!("legit runtime: {e}")], ..Legit::default() },
        }
    });
    let spare = match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
        Ok(Ok(Ok(cred))) => Some(cred),
        Ok(Ok(Err(e))) => {
            report.note(format!("the legitimate call could not be set up: {e}"));
            None
        }
        _ => {
            report.note("the legitimate call was not set up within 30 s");
            None
        }
    };
    let Some(_) = spare else {
        drop(go_tx);
        let _ = tokio::task::spawn_blocking(move || legit.join()).await;
        return report;
    };
    let start = Instant::now() + Duration::from_secs_f64(plan.baseline);
    let end = start + Duration::from_secs_f64(plan.secs);
    let timeline =
        Timeline { start_ns: net::instant_ns(start.into_std()), end_ns: net::instant_ns(end.into_std()) };
    let _ = go_tx.send(timeline);
    tokio::time::sleep_until(start).await;
    let (rss_base, fds_base) = sampler.peaks();
    sampler.reset();

    // The attack.
    let stop = ctx.stop.child_token();
    let sources = Arc::new(Sources::new(plan.addresses));
    let mut tasks = JoinSet::new();
    let mut tcp = Vec::new();
    let creds = match http {
        Some(http) => {
            let holders = plan.allocations.div_ceil(10);
            let (creds, err) = attack::credential_holders(&mut tasks, http, holders, &sources, &stop).await;
            if let Some(e) = err {
                report.note(format!(
                    "{} of {holders} TURN credential holders could not join: {e}",
                    holders - creds.len()
                ));
            }
            creds
        }
        None => (0..plan.allocations.div_ceil(10))
            .map(|k| Credential::mint(plan.secret.as_deref().unwrap_or_default(), &format!("attacker{k}")))
            .collect(),
    };
    let turn_tally = attack::spawn_turn(
        &mut tasks,
        plan.turn,
        plan.allocations,
        plan.permissions,
        plan.channels,
        &creds,
        &sources,
        &stop,
    );
    let chat = match http {
        Some(http) => {
            let (chat, err) =
                attack::spawn_chat(&mut tasks, http, plan.flooders, 24, plan.chat_rate, &sources, &stop)
                    .await;
            if let Some(e) = err {
                report.note(format!("chat flooders: {e}"));
            }
            Some(chat)
        }
        None => None,
    };
    tcp.push((
        TcpKind::IdleTurnTcp,
        attack::spawn_tcp(&mut tasks, TcpKind::IdleTurnTcp, plan.turn, plan.conns, &sources, &stop),
    ));
    if let Some(http) = http {
        for kind in [TcpKind::IdleHttp, TcpKind::HalfHttp, TcpKind::NoHelloWs] {
            tcp.push((kind, attack::spawn_tcp(&mut tasks, kind, http, plan.conns, &sources, &stop)));
        }
    }
    let chat_sent0 = chat.as_ref().map_or(0, |c| c.sent.load(Ordering::Relaxed));
    let chat_t0 = Instant::now();
    let server_cpu = CpuMeter::start(ctx.server);
    let my_cpu = CpuMeter::start(ctx.me);
    let machine = MachineMeter::start();
    tokio::select! {
        () = tokio::time::sleep_until(end) => {}
        () = ctx.stop.cancelled() => {}
    }
    let (server_cpu, my_cpu) = (server_cpu.read(), my_cpu.read());
    report.set("server_cpu_pct", server_cpu.percent());
    report.set("gen_cpu_pct", my_cpu.percent());
    if let Some(busy) = machine.busy_pct() {
        report.set("other_cpu_pct", (busy - server_cpu.percent() - my_cpu.percent()).max(0.0));
    }
    let metrics_after = match http {
        Some(http) => scrape(http).await,
        None => BTreeMap::new(),
    };
    if http.is_some() && (metrics_after.is_empty() || metrics_before.is_empty()) {
        report.note("could not read /metrics (before or at the end of the attack)");
    }
    let (rss_peak, fds_peak) = sampler.peaks();
    stop.cancel();
    let _ =
        tokio::time::timeout(Duration::from_secs(10), async { while tasks.join_next().await.is_some() {} })
            .await;
    tasks.abort_all();
    let legit = tokio::task::spawn_blocking(move || legit.join()).await;
    let legit = match legit {
        Ok(Ok(l)) => l,
        _ => Legit { notes: vec!["the legitimate side panicked".to_owned()], ..Legit::default() },
    };
    sampler.stop();

    // What the server held.
    report.set("rss_base_mib", rss_base as f64 / 1024.0);
    report.set("rss_peak_mib", rss_peak as f64 / 1024.0);
    report.set("fds_base", fds_base);
    report.set("fds_peak", fds_peak);
    // The legitimate call.
    for (p, name) in [(0, "base"), (1, "attack")] {
        report.latency(&format!("sig_{name}"), &legit.sig_lat[p]);
        report.set(&format!("sig_{name}_sent"), legit.sig_sent[p]);
        report.set(&format!("sig_{name}_lost"), legit.sig_sent[p].saturating_sub(legit.sig_recv[p]));
        report.latency(&format!("health_{name}"), &legit.health_lat[p]);
        if let Some(max) = legit.health_lat[p].quantile(1.0) {
            report.set(&format!("health_{name}_max_us"), max as f64 / 1e3);
        }
        report.set(&format!("health_{name}_probes"), legit.health_lat[p].count() + legit.health_failed[p]);
        report.set(&format!("health_{name}_failed"), legit.health_failed[p]);
        report.set(&format!("relay_{name}_sent"), legit.relay_sent[p]);
        report.set(&format!("relay_{name}_recv"), legit.relay_recv[p]);
        if legit.relay_sent[p] > 0 {
            let lost = legit.relay_sent[p].saturating_sub(legit.relay_recv[p]);
            report.set(&format!("relay_{name}_loss_pct"), 100.0 * lost as f64 / legit.relay_sent[p] as f64);
        }
        report.latency(&format!("relay_{name}"), &legit.relay_lat[p]);
    }
    if http.is_some() {
        report.set("joins_tried", legit.joins_tried);
        report.set("joins_ok", legit.joins_ok);
        report.latency("join", &legit.join_lat);
        if let Some(max) = legit.join_lat.quantile(1.0) {
            report.set("join_max_us", max as f64 / 1e3);
        }
    }
    report.set("allocs_tried", legit.allocs_tried);
    report.set("allocs_ok", legit.allocs_ok);
    for n in legit.notes {
        report.note(n);
    }
    // What the attacker got.
    let mut held = Map::new();
    for (kind, tally) in &tcp {
        let [peak, opened, refused, deadline, failed] = tally.read();
        held.insert(
            kind.key().to_owned(),
            json!({"peak": peak, "opened": opened, "refused": refused, "deadline": deadline, "connect_failed": failed}),
        );
    }
    let map = |m: &std::sync::Mutex<BTreeMap<String, u64>>| {
        json!(m.lock().unwrap_or_else(|p| p.into_inner()).clone())
    };
    held.insert(
        "turn".to_owned(),
        json!({
            "credentials": creds.len(),
            "allocations": turn_tally.allocations.load(Ordering::Relaxed),
            "alloc_refused": map(&turn_tally.alloc_refused),
            "permissions": turn_tally.permissions.load(Ordering::Relaxed),
            "channels": turn_tally.channels.load(Ordering::Relaxed),
            "perm_refused": map(&turn_tally.perm_refused),
        }),
    );
    if let Some(chat) = &chat {
        let secs = chat_t0.elapsed().as_secs_f64().max(1e-9);
        held.insert(
            "chat".to_owned(),
            json!({
                "flooders": chat.joined.load(Ordering::Relaxed),
                "sent_per_s": (chat.sent.load(Ordering::Relaxed) - chat_sent0) as f64 / secs,
                "read_mib_per_s": chat.read_bytes.load(Ordering::Relaxed) as f64 / secs / 1048576.0,
                "closed": chat.closed.load(Ordering::Relaxed),
            }),
        );
    }
    report.set("attacker", Value::Object(held));
    // What the server says it refused or shed.
    let delta: Map<String, Value> = metrics_after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - metrics_before.get(k).copied().unwrap_or(0.0);
            (d != 0.0 && (k.contains("_total") || k.contains("turn_allocations")))
                .then(|| (k.clone(), json!(d)))
        })
        .collect();
    report.set("server_metrics", Value::Object(delta));
    report
}

/// The legitimate side: sets up the call and the relayed stream, says it
/// is ready (with a spare credential), and measures until the attack is
/// over.
async fn legit(
    http: Option<SocketAddr>,
    turn: SocketAddr,
    secret: Option<String>,
    ready: tokio::sync::oneshot::Sender<Result<Credential, String>>,
    go: tokio::sync::oneshot::Receiver<Timeline>,
) -> Legit {
    let mut out = Legit::default();
    // The call: two joined clients (their TURN credentials come from
    // `joined`), or, against coturn, two minted credentials.
    let call = match http {
        Some(http) => match set_up_call(http).await {
            Ok(call) => Some(call),
            Err(e) => {
                let _ = ready.send(Err(e));
                return out;
            }
        },
        None => None,
    };
    let (cred_a, cred_b) = match (&call, &secret) {
        (Some(c), _) => (c.cred_a.clone(), c.cred_b.clone()),
        (None, Some(s)) => (Credential::mint(s, "legit-a"), Credential::mint(s, "legit-b")),
        (None, None) => {
            let _ = ready.send(Err("no way to get TURN credentials".to_owned()));
            return out;
        }
    };
    let stream = match set_up_stream(turn, cred_a, cred_b.clone()).await {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("relayed stream: {e}")));
            return out;
        }
    };
    let _ = ready.send(Ok(cred_b.clone()));
    let Ok(timeline) = go.await else { return out };
    let stop_ns = timeline.end_ns + TAIL.as_nanos() as u64;
    let until = tokio::time::Instant::now() + Duration::from_nanos(stop_ns.saturating_sub(net::now_ns()));

    let relay = tokio::spawn(run_stream(stream, timeline, until));
    let signals = call.map(|c| tokio::spawn(run_call(c, timeline, until)));
    let health = http.map(|h| tokio::spawn(run_health(h, timeline, until)));
    let joins = http.map(|h| tokio::spawn(run_joins(h, timeline, until)));
    let allocs = tokio::spawn(run_allocs(turn, secret, cred_b, timeline, until));

    if let Ok((sent, recv, lat)) = relay.await {
        (out.relay_sent, out.relay_recv, out.relay_lat) = (sent, recv, lat);
    }
    if let Some(Ok((sent, recv, lat, notes))) = match signals {
        Some(s) => Some(s.await),
        None => None,
    } {
        (out.sig_sent, out.sig_recv, out.sig_lat) = (sent, recv, lat);
        out.notes.extend(notes);
    }
    if let Some(Ok((lat, failed))) = match health {
        Some(h) => Some(h.await),
        None => None,
    } {
        (out.health_lat, out.health_failed) = (lat, failed);
    }
    if let Some(Ok((tried, ok, lat))) = match joins {
        Some(j) => Some(j.await),
        None => None,
    } {
        (out.joins_tried, out.joins_ok, out.join_lat) = (tried, ok, lat);
    }
    if let Ok((tried, ok, error)) = allocs.await {
        (out.allocs_tried, out.allocs_ok) = (tried, ok);
        if let Some(e) = error {
            out.notes.push(format!("a new TURN allocation failed: {e}"));
        }
    }
    out
}

/// The legitimate call: A and B joined in one room.
struct Call {
    a: net::Ws,
    b: net::Ws,
    a_id: String,
    b_id: String,
    cred_a: Credential,
    cred_b: Credential,
}

async fn set_up_call(http: SocketAddr) -> Result<Call, String> {
    let wait = Duration::from_secs(10);
    let mut a = net::connect(http, net::BUSY_READ_BUFFER).await?;
    let joined_a = hello_join(&mut a, "legit-call", "a").await?;
    let mut b = net::connect(http, net::BUSY_READ_BUFFER).await?;
    let joined_b = hello_join(&mut b, "legit-call", "b").await?;
    let a_id = joined_a["you"].as_str().ok_or("no id in joined")?.to_owned();
    let b_id = joined_b["you"].as_str().ok_or("no id in joined")?.to_owned();
    // A hears of B.
    loop {
        let text = net::next_text(&mut a, wait).await?;
        if text.contains(r#""type":"peer-joined""#) {
            break;
        }
    }
    let cred_a = attack::credential_of(&joined_a).ok_or("no TURN credential in joined")?;
    let cred_b = attack::credential_of(&joined_b).ok_or("no TURN credential in joined")?;
    Ok(Call { a, b, a_id, b_id, cred_a, cred_b })
}

/// Says hello and joins `room`; returns `joined`.
async fn hello_join(ws: &mut net::Ws, room: &str, name: &str) -> Result<Value, String> {
    ws.send(Message::text(r#"{"type":"hello","version":3}"#)).await.map_err(|e| format!("send: {e}"))?;
    let join = format!(r#"{{"type":"join","room":"{room}","name":"{name}"}}"#);
    ws.send(Message::text(join)).await.map_err(|e| format!("send: {e}"))?;
    loop {
        let text = net::next_text(ws, Duration::from_secs(10)).await?;
        let msg: Value = serde_json::from_str(&text).map_err(|e| format!("bad JSON {e}"))?;
        match msg["type"].as_str() {
            Some("joined") => return Ok(msg),
            Some("welcome") => {}
            _ => return Err(format!("join refused: {text}")),
        }
    }
}

/// The call's ping-pong: A signals B 50 times a second, B answers each at
/// once; every message's one-way latency is recorded by its send time's
/// phase.
async fn run_call(
    call: Call,
    timeline: Timeline,
    until: Instant,
) -> (Phases<u64>, Phases<u64>, Phases<Hist>, Vec<String>) {
    let (mut a_tx, mut a_rx) = call.a.split();
    let (mut b_tx, mut b_rx) = call.b.split();
    let (a_id, b_id) = (call.a_id, call.b_id);
    let mut sent = [0u64; 2];
    let mut recv = [0u64; 2];
    let mut lat: Phases<Hist> = [Hist::new(), Hist::new()];
    let mut notes = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / SIGNALS_PER_SEC));
    let deadline = tokio::time::sleep_until(until);
    tokio::pin!(deadline);
    // The worst latency of each second of the attack, to see when it hurt.
    let mut worst_by_s = vec![0u64; ((timeline.end_ns - timeline.start_ns) / 1_000_000_000 + 1) as usize];
    // Records a timed message that arrived now.
    let mut arrived = |text: &str, recv: &mut [u64; 2]| -> bool {
        let Some(t) = net::num_after(text, super::T_KEY) else { return false };
        if let Some(p) = timeline.phase(t) {
            recv[p] += 1;
            let l = net::now_ns().saturating_sub(t);
            lat[p].record(l);
            if p == 1
                && let Some(w) = worst_by_s.get_mut(((t - timeline.start_ns) / 1_000_000_000) as usize)
            {
                *w = (*w).max(l);
            }
        }
        true
    };
    loop {
        tokio::select! {
            () = &mut deadline => break,
            _ = tick.tick() => {
                let t = net::now_ns();
                if a_tx.send(Message::text(net::timed_signal(&b_id, 0, t))).await.is_err() {
                    notes.push("the call: A could not send".to_owned());
                    break;
                }
                if let Some(p) = timeline.phase(t) { sent[p] += 1; }
            }
            msg = b_rx.next() => {
                let Some(Ok(msg)) = msg else {
                    notes.push("the call: B's connection ended".to_owned());
                    break;
                };
                let Message::Text(text) = msg else { continue };
                if !arrived(text.as_str(), &mut recv) { continue }
                let t = net::now_ns();
                if b_tx.send(Message::text(net::timed_signal(&a_id, 1, t))).await.is_err() {
                    notes.push("the call: B could not send".to_owned());
                    break;
                }
                if let Some(p) = timeline.phase(t) { sent[p] += 1; }
            }
            msg = a_rx.next() => {
                let Some(Ok(msg)) = msg else {
                    notes.push("the call: A's connection ended".to_owned());
                    break;
                };
                if let Message::Text(text) = msg { arrived(text.as_str(), &mut recv); }
            }
        }
    }
    notes.push(format!(
        "the call's worst signal latency in each second of the attack (ms): {}",
        worst_by_s.iter().map(|ns| fmt_num(*ns as f64 / 1e6)).collect::<Vec<_>>().join(", ")
    ));
    (sent, recv, lat, notes)
}

/// The relayed stream: A's and B's allocations, each permitting the
/// other's relay, a channel each way.
struct Stream {
    a: TurnClient,
    b: TurnClient,
}

const CHANNEL: u16 = 0x4000;

async fn set_up_stream(turn: SocketAddr, cred_a: Credential, cred_b: Credential) -> Result<Stream, String> {
    let mut a = TurnClient::bind(IpAddr::V4(Ipv4Addr::new(127, 4, 0, 1)), turn, cred_a).await?;
    let mut b = TurnClient::bind(IpAddr::V4(Ipv4Addr::new(127, 4, 0, 2)), turn, cred_b).await?;
    let relay_a = a.allocate().await.map_err(|e| format!("A's allocation: {e}"))?;
    let relay_b = b.allocate().await.map_err(|e| format!("B's allocation: {e}"))?;
    a.create_permission(&[relay_b]).await.map_err(|e| format!("A's permission: {e}"))?;
    b.create_permission(&[relay_a]).await.map_err(|e| format!("B's permission: {e}"))?;
    a.channel_bind(CHANNEL, relay_b).await.map_err(|e| format!("A's channel: {e}"))?;
    b.channel_bind(CHANNEL, relay_a).await.map_err(|e| format!("B's channel: {e}"))?;
    Ok(Stream { a, b })
}

/// A sends B `RELAY_PPS` packets a second through both relays; B counts
/// them by their send time's phase.
async fn run_stream(
    stream: Stream,
    timeline: Timeline,
    until: Instant,
) -> (Phases<u64>, Phases<u64>, Phases<Hist>) {
    let (mut sent, mut recv) = ([0u64; 2], [0u64; 2]);
    let mut lat: Phases<Hist> = [Hist::new(), Hist::new()];
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / RELAY_PPS));
    let mut payload = vec![0x5au8; RELAY_PAYLOAD];
    let mut buf = vec![0u8; 2048];
    let deadline = tokio::time::sleep_until(until);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            _ = tick.tick() => {
                let t = net::now_ns();
                payload[..8].copy_from_slice(&t.to_be_bytes());
                let packet = turn::stun::channel_data(CHANNEL, &payload, false);
                if stream.a.sock.send(&packet).await.is_ok()
                    && let Some(p) = timeline.phase(t)
                {
                    sent[p] += 1;
                }
            }
            r = stream.b.sock.recv(&mut buf) => {
                let Ok(n) = r else { continue };
                let data = match turn::stun::parse_channel_data(&buf[..n]) {
                    Some((_, data)) => Some(data),
                    None => turn::stun::Message::parse(&buf[..n]).ok().and_then(|m| m.get(turn::stun::attr::DATA)),
                };
                let Some(t) = data.and_then(|d| d.get(..8)).and_then(|d| <[u8; 8]>::try_from(d).ok()) else { continue };
                let t = u64::from_be_bytes(t);
                if let Some(p) = timeline.phase(t) {
                    recv[p] += 1;
                    lat[p].record(net::now_ns().saturating_sub(t));
                }
            }
        }
    }
    (sent, recv, lat)
}

/// `GET /healthz` every 100 ms on a new connection, timed from connect to
/// the answer's head.
async fn run_health(http: SocketAddr, timeline: Timeline, until: Instant) -> (Phases<Hist>, Phases<u64>) {
    let mut lat: Phases<Hist> = [Hist::new(), Hist::new()];
    let mut failed = [0u64; 2];
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    let source = IpAddr::V4(Ipv4Addr::new(127, 2, 0, 1));
    while Instant::now() < until {
        tick.tick().await;
        let t = net::now_ns();
        let ok = tokio::time::timeout(PROBE_LIMIT, http_get(source, http, "/healthz")).await;
        let Some(p) = timeline.phase(t) else { continue };
        match ok {
            Ok(Ok(_)) => lat[p].record(net::now_ns().saturating_sub(t)),
            _ => failed[p] += 1,
        }
    }
    (lat, failed)
}

/// One `GET path` with `Connection: close`; the whole answer, if it was a 200.
async fn http_get(source: IpAddr, http: SocketAddr, path: &str) -> Result<String, String> {
    let mut tcp = attack::connect_from(source, http).await.map_err(|e| format!("connect: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut body = Vec::new();
    tcp.read_to_end(&mut body).await.map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if text.starts_with("HTTP/1.1 200") { Ok(text) } else { Err(format!("answer: {:.40}", text)) }
}

/// During the attack, a newcomer every second: a new connection from an
/// address of its own, `hello`, `join` a room of its own; joined within
/// 3 s or failed.
async fn run_joins(http: SocketAddr, timeline: Timeline, until: Instant) -> (u64, u64, Hist) {
    let (mut tried, mut ok, mut lat) = (0, 0, Hist::new());
    let mut tick = tokio::time::interval(JOIN_EVERY);
    let mut k = 0u32;
    while Instant::now() < until {
        tick.tick().await;
        let t = net::now_ns();
        if timeline.phase(t) != Some(1) {
            continue;
        }
        k += 1;
        let source = IpAddr::V4(Ipv4Addr::new(127, 3, (k / 250) as u8, (k % 250 + 1) as u8));
        let join = async {
            let tcp = attack::connect_from(source, http).await.map_err(|e| format!("connect: {e}"))?;
            let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{http}/ws"), tcp)
                .await
                .map_err(|e| format!("WebSocket handshake: {e}"))?;
            hello_join(&mut ws, &format!("newcomer-{k}"), "newcomer").await
        };
        tried += 1;
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_LIMIT, join).await {
            ok += 1;
            lat.record(net::now_ns().saturating_sub(t));
        }
    }
    (tried, ok, lat)
}

/// During the attack, a new TURN allocation every 2 s (with B's
/// credential on webconf, whose seat B holds; a fresh one on coturn),
/// released at once.
async fn run_allocs(
    turn: SocketAddr,
    secret: Option<String>,
    cred: Credential,
    timeline: Timeline,
    until: Instant,
) -> (u64, u64, Option<String>) {
    let (mut tried, mut ok, mut first_error) = (0, 0, None);
    let mut tick = tokio::time::interval(ALLOC_EVERY);
    let mut k = 0u32;
    while Instant::now() < until {
        tick.tick().await;
        if timeline.phase(net::now_ns()) != Some(1) {
            continue;
        }
        k += 1;
        let cred = match &secret {
            Some(s) => Credential::mint(s, &format!("newcomer{k}")),
            None => cred.clone(),
        };
        let source = IpAddr::V4(Ipv4Addr::new(127, 5, (k / 250) as u8, (k % 250 + 1) as u8));
        tried += 1;
        let Ok(mut client) = TurnClient::bind(source, turn, cred).await else { continue };
        client.rto = Duration::from_millis(300);
        client.tries = 8;
        match tokio::time::timeout(PROBE_LIMIT, client.allocate()).await {
            Ok(Ok(_)) => {
                ok += 1;
                let _ = client.release().await;
            }
            Ok(Err(e)) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                first_error.get_or_insert_with(|| "no allocation within 3 s".to_owned());
            }
        }
    }
    (tried, ok, first_error)
}

/// Samples the server's RSS and open descriptors every 100 ms on a thread
/// of its own, keeping the peaks.
struct Sampler {
    rss: Arc<AtomicU64>,
    fds: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
}

impl Sampler {
    fn start(server: Proc, pid: u32) -> Sampler {
        let (rss, fds, done) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (r, f, d) = (rss.clone(), fds.clone(), done.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                r.fetch_max(server.rss_kib().unwrap_or(0), Ordering::Relaxed);
                let n = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
                f.fetch_max(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler { rss, fds, done }
    }

    /// Peak RSS (KiB) and descriptors since the start or the last reset.
    fn peaks(&self) -> (u64, u64) {
        (self.rss.load(Ordering::Relaxed), self.fds.load(Ordering::Relaxed))
    }

    fn reset(&self) {
        self.rss.store(0, Ordering::Relaxed);
        self.fds.store(0, Ordering::Relaxed);
    }

    fn stop(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// The server's /metrics, sample by sample (`name{labels}` → value).
async fn scrape(http: SocketAddr) -> BTreeMap<String, f64> {
    let source = IpAddr::V4(Ipv4Addr::new(127, 2, 0, 2));
    // Under attack the HTTP caps may be full: try a few times.
    let mut text = None;
    for _ in 0..5 {
        if let Ok(Ok(t)) =
            tokio::time::timeout(Duration::from_secs(3), http_get(source, http, "/metrics")).await
        {
            text = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let Some(text) = text else { return BTreeMap::new() };
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The server's soft limit on open files, from /proc/PID/limits.
pub fn nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

// -- The table ---------------------------------------------------------------

/// What ARCHITECTURE.md's memory budget ("Memory budget") lets the holders
/// this attack reaches take, in MiB, on top of the server's RSS before the
/// attack: for each holder, the connections the attack can make it hold
/// (what it tried, cut to the caps per address and in all, and to the
/// holder's share of the open-files limit) times the bound per client.
fn budget_mib(m: &Map<String, Value>) -> Option<f64> {
    let get = |k: &str| m.get(k).and_then(Value::as_f64);
    let (addresses, conns, allocations) = (get("addresses")?, get("conns")?, get("allocations")?);
    let flooders = get("flooders").unwrap_or(0.0);
    let nofile = get("server_nofile").unwrap_or(1_048_576.0);
    // The budget is webconf's; coturn states none.
    if m.get("target").and_then(Value::as_str) != Some("webconf") {
        return None;
    }
    const KIB: f64 = 1.0 / 1024.0;
    // TURN: allocations 64+64 permissions and channels (13 KiB) and a relay
    // socket's 64 KiB buffer, 32 per address, 1000 in all; TCP clients a
    // queue, a partial frame and a read (132 KiB), 64 per address, 1024 in
    // all (and a sixteenth of the descriptors); the inbox 4 MiB.
    let allocs = allocations.min(32.0 * addresses).min(1000.0);
    let turn_tcp = conns.min(64.0 * addresses).min(1024.0).min(nofile / 16.0);
    let mut budget = allocs * 77.0 * KIB + turn_tcp * 132.0 * KIB + 4.0;
    {
        // Raw HTTP(S): a request head (hyper's buffer, about 400 KiB), 64
        // per address, 4096 in all, an eighth of the descriptors.
        let raw = (2.0 * conns).min(64.0 * addresses).min(4096.0).min(nofile / 8.0);
        // WebSockets: outbound queue 4 MiB each but 512 MiB in all plus
        // 64 KiB each, one frame (64 KiB) and a read (4 KiB) of input; 100
        // per address, 10 000 in all, half the descriptors.
        let ws =
            (conns + flooders + allocations / 10.0).min(100.0 * addresses).min(10_000.0).min(nofile / 2.0);
        let queues = (ws * 4.0).min(512.0 + ws * 64.0 * KIB);
        // Chat: 64 KiB a room.
        let rooms = (flooders / 24.0).ceil();
        budget += raw * 400.0 * KIB + queues + ws * 68.0 * KIB + rooms * 64.0 * KIB;
    }
    Some(budget + get("rss_base_mib").unwrap_or(0.0))
}

/// The abuse scenario's table: one column per run (server and attacker),
/// one row per measure, then the issue's targets.
pub fn table(results: &[Value]) -> String {
    let metrics: Vec<Map<String, Value>> =
        results.iter().map(|r| r["metrics"].as_object().cloned().unwrap_or_default()).collect();
    let num = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_f64);
    let ms = |m: &Map<String, Value>, k: &str| num(m, k).map(|us| fmt_num(us / 1000.0));
    let pair = |a: Option<String>, b: Option<String>| match (a, b) {
        (None, None) => "–".to_owned(),
        (a, b) => format!("{} / {}", a.unwrap_or_else(|| "–".into()), b.unwrap_or_else(|| "–".into())),
    };
    let attacker = |m: &Map<String, Value>, kind: &str, field: &str| {
        m.get("attacker").and_then(|a| a.get(kind)).and_then(|k| k.get(field)).and_then(Value::as_f64)
    };
    let webconf = |m: &Map<String, Value>| m.get("target").and_then(Value::as_str) == Some("webconf");
    let server_sum = |m: &Map<String, Value>, prefix: &str| -> Option<f64> {
        let s = m.get("server_metrics")?.as_object()?;
        Some(s.iter().filter(|(k, _)| k.starts_with(prefix)).filter_map(|(_, v)| v.as_f64()).sum())
    };
    type Cell<'a> = Box<dyn Fn(&Map<String, Value>) -> String + 'a>;
    let mut rows: Vec<(&str, Cell)> = Vec::new();
    for (kind, label) in [
        ("idle_http", "idle TCP to HTTP: most held (1 s+) / opened / closed at once / closed later"),
        ("half_http", "half-sent requests: the same"),
        ("nohello_ws", "WebSockets without hello: the same"),
        ("idle_turn_tcp", "idle TURN/TCP: the same"),
    ] {
        rows.push((
            label,
            Box::new(move |m| {
                let f = |field| attacker(m, kind, field).map_or_else(|| "–".to_owned(), fmt_num);
                if attacker(m, kind, "opened").is_none() {
                    return "–".to_owned();
                }
                format!("{} / {} / {} / {}", f("peak"), f("opened"), f("refused"), f("deadline"))
            }),
        ));
    }
    rows.push((
        "TURN allocations made / permissions / channels (attacker)",
        Box::new(move |m| {
            let f = |field| attacker(m, "turn", field).map_or_else(|| "–".to_owned(), fmt_num);
            format!("{} / {} / {}", f("allocations"), f("permissions"), f("channels"))
        }),
    ));
    rows.push((
        "TURN requests refused (attacker; by code)",
        Box::new(move |m| {
            let t = m.get("attacker").and_then(|a| a.get("turn"));
            let mut parts = Vec::new();
            for (what, key) in [("allocate", "alloc_refused"), ("perm/chan", "perm_refused")] {
                if let Some(map) = t.and_then(|t| t.get(key)).and_then(Value::as_object)
                    && !map.is_empty()
                {
                    let codes: Vec<String> = map.iter().map(|(c, n)| format!("{c}×{n}")).collect();
                    parts.push(format!("{what}: {}", codes.join(", ")));
                }
            }
            if parts.is_empty() { "none".to_owned() } else { parts.join("; ") }
        }),
    ));
    rows.push((
        "chat flood: flooders / chats written a second / MiB a second read back",
        Box::new(move |m| {
            let Some(n) = attacker(m, "chat", "flooders") else { return "–".to_owned() };
            format!(
                "{} / {} / {}",
                fmt_num(n),
                fmt_num(attacker(m, "chat", "sent_per_s").unwrap_or(0.0)),
                fmt_num(attacker(m, "chat", "read_mib_per_s").unwrap_or(0.0))
            )
        }),
    ));
    rows.push((
        "server: TCP shed / WebSockets refused / timed out (/metrics)",
        Box::new(move |m| {
            if !webconf(m) {
                return "–".to_owned();
            }
            let timeouts = m
                .get("server_metrics")
                .and_then(|s| s.get(r#"webconf_connections_closed_total{reason="timeout"}"#))
                .and_then(Value::as_f64);
            format!(
                "{} / {} / {}",
                fmt_num(server_sum(m, "webconf_tcp_shed_total").unwrap_or(0.0)),
                fmt_num(server_sum(m, "webconf_connections_refused_total").unwrap_or(0.0)),
                fmt_num(timeouts.unwrap_or(0.0))
            )
        }),
    ));
    rows.push((
        "server: chats rate-limited / TURN requests refused (/metrics)",
        Box::new(move |m| {
            if !webconf(m) {
                return "–".to_owned();
            }
            format!(
                "{} / {}",
                fmt_num(server_sum(m, "webconf_rate_limited_total").unwrap_or(0.0)),
                fmt_num(server_sum(m, "webconf_turn_refused_total").unwrap_or(0.0))
            )
        }),
    ));
    rows.push((
        "CPU under attack: server / generator / other (% of a core)",
        Box::new(move |m| {
            let f = |k| num(m, k).map_or_else(|| "–".to_owned(), fmt_num);
            format!("{} / {} / {}", f("server_cpu_pct"), f("gen_cpu_pct"), f("other_cpu_pct"))
        }),
    ));
    rows.push((
        "server RSS before / peak (MiB)",
        Box::new(move |m| pair(num(m, "rss_base_mib").map(fmt_num), num(m, "rss_peak_mib").map(fmt_num))),
    ));
    rows.push((
        "RSS budget for this attack (ARCHITECTURE.md; MiB)",
        Box::new(move |m| budget_mib(m).map_or_else(|| "–".to_owned(), fmt_num)),
    ));
    rows.push((
        "server open descriptors before / peak (limit)",
        Box::new(move |m| {
            format!(
                "{} ({})",
                pair(num(m, "fds_base").map(fmt_num), num(m, "fds_peak").map(fmt_num)),
                num(m, "server_nofile").map_or_else(|| "?".to_owned(), fmt_num)
            )
        }),
    ));
    for (phase, label) in
        [("base", "call's signal latency p50 / p99, calm (ms)"), ("attack", "the same, under attack (ms)")]
    {
        rows.push((
            label,
            Box::new(move |m| {
                pair(ms(m, &format!("sig_{phase}_p50_us")), ms(m, &format!("sig_{phase}_p99_us")))
            }),
        ));
    }
    rows.push((
        "call's signals lost under attack (of sent)",
        Box::new(move |m| match (num(m, "sig_attack_lost"), num(m, "sig_attack_sent")) {
            (Some(l), Some(s)) if webconf(m) => format!("{} of {}", fmt_num(l), fmt_num(s)),
            _ => "–".to_owned(),
        }),
    ));
    rows.push((
        "/healthz p99 / max under attack (ms); failed",
        Box::new(move |m| {
            if !webconf(m) {
                return "–".to_owned();
            }
            format!(
                "{}; {} of {}",
                pair(ms(m, "health_attack_p99_us"), ms(m, "health_attack_max_us")),
                fmt_num(num(m, "health_attack_failed").unwrap_or(0.0)),
                fmt_num(num(m, "health_attack_probes").unwrap_or(0.0))
            )
        }),
    ));
    rows.push((
        "newcomers joined under attack (of tried); slowest (ms)",
        Box::new(move |m| match (num(m, "joins_ok"), num(m, "joins_tried")) {
            (Some(ok), Some(tried)) => format!(
                "{} of {}; {}",
                fmt_num(ok),
                fmt_num(tried),
                ms(m, "join_max_us").unwrap_or_else(|| "–".into())
            ),
            _ => "–".to_owned(),
        }),
    ));
    rows.push((
        "new TURN allocations under attack (of tried)",
        Box::new(move |m| match (num(m, "allocs_ok"), num(m, "allocs_tried")) {
            (Some(ok), Some(tried)) => format!("{} of {}", fmt_num(ok), fmt_num(tried)),
            _ => "–".to_owned(),
        }),
    ));
    rows.push((
        "relayed stream loss, calm / under attack (%)",
        Box::new(move |m| {
            pair(num(m, "relay_base_loss_pct").map(fmt_num), num(m, "relay_attack_loss_pct").map(fmt_num))
        }),
    ));
    rows.push((
        "relayed packet delay p99, calm / under attack (ms)",
        Box::new(move |m| pair(ms(m, "relay_base_p99_us"), ms(m, "relay_attack_p99_us"))),
    ));
    let mut out_rows = vec![{
        let mut h = vec!["measure".to_owned()];
        h.extend(results.iter().map(|r| r["title"].as_str().unwrap_or("?").to_owned()));
        h
    }];
    for (label, cell) in &rows {
        let mut r = vec![(*label).to_owned()];
        r.extend(metrics.iter().map(cell));
        out_rows.push(r);
    }
    let mut out = crate::report::markdown(&out_rows, 1);
    // The issue's targets, per run.
    out.push_str("\nTargets (issue 10):\n\n");
    for (r, m) in results.iter().zip(&metrics) {
        let title = r["title"].as_str().unwrap_or("?");
        let yes = |b: bool| if b { "met" } else { "MISSED" };
        let mut verdicts = Vec::new();
        if let (Some(peak), Some(budget)) = (num(m, "rss_peak_mib"), budget_mib(m)) {
            verdicts.push(format!("RSS under budget: {}", yes(peak <= budget)));
        }
        if webconf(m) {
            if let Some(p99) = num(m, "sig_attack_p99_us") {
                verdicts.push(format!("signal p99 < 10 ms: {}", yes(p99 < 10_000.0)));
            }
            let health_ok = num(m, "health_attack_failed") == Some(0.0)
                && num(m, "health_attack_max_us").is_some_and(|x| x < 100_000.0);
            verdicts.push(format!("/healthz within 100 ms: {}", yes(health_ok)));
            let joins = num(m, "joins_ok").unwrap_or(0.0);
            verdicts.push(format!(
                "a new user joins: {}",
                yes(joins > 0.0 && Some(joins) == num(m, "joins_tried"))
            ));
        }
        if let Some(loss) = num(m, "relay_attack_loss_pct") {
            verdicts.push(format!("relayed loss under attack: {}%", fmt_num(loss)));
        }
        out.push_str(&format!("- {title}: {}\n", verdicts.join("; ")));
    }
    let notes: Vec<String> = results
        .iter()
        .flat_map(|r| {
            let title = r["title"].as_str().unwrap_or("?").to_owned();
            r["notes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |n| format!("- {title}: {}", n.as_str().unwrap_or("?")))
        })
        .collect();
    out.push_str(&crate::report::notes_section(&notes));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_puts_runs_side_by_side_and_checks_the_targets() {
        let webconf = json!({
            "scenario": "abuse-webconf-1", "title": "webconf, attacker from one address",
            "kind": "webconf", "label": "webconf", "notes": ["a note"],
            "metrics": {
                "target": "webconf", "addresses": 1, "conns": 200, "allocations": 40, "flooders": 24,
                "server_nofile": 20000, "rss_base_mib": 10.0, "rss_peak_mib": 40.0, "fds_base": 23, "fds_peak": 212,
                "sig_attack_p50_us": 140.0, "sig_attack_p99_us": 66_300.0, "health_attack_p99_us": 62_000.0,
                "health_attack_max_us": 188_000.0, "health_attack_failed": 0, "health_attack_probes": 200,
                "joins_ok": 20, "joins_tried": 20, "relay_attack_loss_pct": 0.0,
                "attacker": {"idle_http": {"peak": 64, "opened": 2848, "refused": 2720, "deadline": 64}},
                "server_metrics": {"webconf_tcp_shed_total{listener=\"http\",reason=\"address_full\"}": 13696.0}
            }
        });
        let coturn = json!({
            "scenario": "abuse-coturn-1", "title": "coturn, attacker from one address",
            "kind": "coturn", "label": "coturn", "notes": [],
            "metrics": {"target": "coturn", "addresses": 1, "conns": 200, "allocations": 40, "relay_attack_loss_pct": 0.0}
        });
        let out = table(&[webconf, coturn]);
        assert!(
            out.contains("| webconf, attacker from one address | coturn, attacker from one address |"),
            "{out}"
        );
        assert!(out.contains("64 / 2,848 / 2,720 / 64"), "{out}");
        assert!(out.contains("13,696 / 0 / 0"), "{out}");
        // One address: its HTTP and WebSocket caps (64 and 100 connections),
        // TURN's (64 TCP, 32 allocations), one chat room, over the RSS before.
        let one_address = json!({"target": "webconf", "addresses": 1, "conns": 200, "allocations": 40,
                                  "flooders": 24, "server_nofile": 20000, "rss_base_mib": 10.0});
        let budget = budget_mib(one_address.as_object().expect("object")).expect("a budget");
        assert!((400.0..500.0).contains(&budget), "{budget}");
        assert!(out.contains("RSS under budget: met; signal p99 < 10 ms: MISSED; /healthz within 100 ms: MISSED; a new user joins: met"), "{out}");
        assert!(out.contains("- coturn, attacker from one address: relayed loss under attack: 0%"), "{out}");
        assert!(out.contains("- webconf, attacker from one address: a note"), "{out}");
    }
}
