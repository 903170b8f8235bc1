//! The cluster scenario: webconf nodes sharing one `redis-server`
//! (`--redis`), with the two clients of a call on one node or on two, and
//! their room's home on one of theirs or on a third; and one node alone
//! (no Redis), the same steps, beside them.
//!
//! Two kinds of step, each on a fresh cluster (scripts/bench.sh starts it):
//!
//! - **set-ups**: calls set up one after another (or `workers` at a time):
//!   client A connects, says hello and joins; client B the same; A hears
//!   `peer-joined`; B sends an offer, A answers. Timed from A's connect to
//!   B having the answer. Every `PING_EVERY`th call then times
//!   `PINGS` signals A→B one way, one at a time. Redis's own command count
//!   (`total_commands_processed`, which counts the commands a script runs)
//!   and the CPU of every node and of redis-server are divided by the
//!   set-ups.
//! - **rate**: `clients` clients in calls, open loop at a fixed total rate
//!   of signals (scenario 3's driver), each call's A on one node and B on
//!   another: delivered rate, loss, latency, and the CPU of every node and
//!   of redis-server per signal.
//!
//! The bench places every room's home itself (it writes the claim into
//! Redis before the first client joins, as the cluster tests do), so a
//! layout is what it says, not what placement by load chose.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::openloop::{self, Schedule};
use super::{Ctx, RECV_WAIT};
use crate::hist::Hist;
use crate::net::{self, Kind, Ws, describe_close, signal, timed_signal};
use crate::procfs::{CpuMeter, CpuUse, MachineMeter, Proc};
use crate::report::{Report, fmt_num, markdown, notes_section};

/// Every this many set-ups, the call times signals one way.
const PING_EVERY: usize = 10;
/// Signals timed on such a call.
const PINGS: usize = 20;
/// Longest any one Redis command of the bench may take.
const REDIS_WAIT: Duration = Duration::from_secs(5);
/// How long a claim the bench writes lasts: longer than any step (the home
/// renews it while the room lives; an empty room's home lets it go).
const CLAIM_MS: u64 = 120_000;
/// Time after the last set-up for the nodes to finish tearing calls down,
/// so that work is counted with the set-ups.
const TEARDOWN: Duration = Duration::from_millis(500);
/// A node is calm when it used at most this much CPU (thousandths of a
/// core) over its last lease period: placement and timings then start from
/// a settled cluster, not from the nodes' start-up.
const CALM_PERMILLE: u32 = 20;

/// Where a call's two clients connect and where its room lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// One webconf without Redis: both clients on it.
    Single,
    /// A cluster; both clients and the home on one node.
    Same,
    /// Clients on two nodes; the home on A's.
    Two,
    /// Clients on two nodes; the home on a third.
    Third,
}

impl Layout {
    /// The name in ids and JSON.
    fn name(self) -> &'static str {
        match self {
            Layout::Single => "single",
            Layout::Same => "same",
            Layout::Two => "two",
            Layout::Third => "third",
        }
    }

    /// How the table names it.
    fn title(self) -> &'static str {
        match self {
            Layout::Single => "one node, no Redis",
            Layout::Same => "both peers and the home on one node",
            Layout::Two => "peers on two nodes, home on one of them",
            Layout::Third => "peers on two nodes, home on a third",
        }
    }

    /// Which node (index into the plan's nodes) A uses, which B, and which
    /// is the home; and how many nodes the layout needs.
    fn places(self) -> (usize, usize, usize, usize) {
        match self {
            Layout::Single => (0, 0, 0, 1),
            Layout::Same => (0, 0, 0, 1),
            Layout::Two => (0, 1, 0, 2),
            Layout::Third => (0, 1, 2, 3),
        }
    }
}

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    /// Call set-ups, timed, with Redis commands and CPU per set-up.
    Setup,
    /// Signals at a fixed total rate, open loop.
    Rate,
}

/// One node under test.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its `--node-id` (unused for a node without Redis).
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process.
    pub proc: Proc,
}

/// One step of the scenario.
#[derive(Debug)]
pub struct Plan {
    /// Where clients and homes are.
    pub layout: Layout,
    /// What to measure.
    pub step: Step,
    /// The nodes, in the order [`Layout::places`] indexes.
    pub nodes: Vec<Node>,
    /// The cluster's Redis and its process (`None` for a node alone).
    pub redis: Option<(SocketAddr, Proc)>,
    /// Set-ups (step `setup`).
    pub calls: usize,
    /// Set-ups in flight at once (step `setup`).
    pub workers: usize,
    /// Offered signals per second, all clients together (step `rate`).
    pub rate: f64,
    /// Clients, two per call (step `rate`).
    pub clients: usize,
    /// Measured seconds (step `rate`).
    pub secs: f64,
}

/// `bench run ... cluster`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the clients connect and where rooms live.
    #[arg(long, value_enum)]
    layout: Layout,
    /// What to measure.
    #[arg(long, value_enum)]
    step: Step,
    /// The nodes as `ID=ADDR=PID`, comma-separated: A's node, B's, the
    /// third.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// The cluster's Redis as `ADDR=PID` (all layouts but `single`).
    #[arg(long)]
    redis: Option<String>,
    /// Set-ups (step `setup`).
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Set-ups in flight at once (step `setup`).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Offered signals per second, all clients together (step `rate`).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Clients, two per call (step `rate`).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Measured seconds (step `rate`).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
}

/// Runs the step `args` describe; `clk_tck` is /proc's unit of CPU time.
pub async fn run(ctx: &Ctx, args: Args, clk_tck: u64) -> Report {
    let pid = |s: &str| s.parse::<u32>().map(|p| Proc::pid(p, clk_tck)).map_err(|e| format!("pid {s}: {e}"));
    let addr = |s: &str| s.parse::<SocketAddr>().map_err(|e| format!("address {s}: {e}"));
    let parsed = (|| {
        let nodes = args
            .nodes
            .iter()
            .map(|spec| match spec.split('=').collect::<Vec<_>>()[..] {
                [id, a, p] => Ok(Node { id: id.to_owned(), addr: addr(a)?, proc: pid(p)? }),
                _ => Err(format!("a node is ID=ADDR=PID, not {spec}")),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let redis = match args.redis.as_deref().map(|r| r.split_once('=')) {
            None => None,
            Some(Some((a, p))) => Some((addr(a)?, pid(p)?)),
            Some(None) => return Err("--redis is ADDR=PID".to_owned()),
        };
        Ok::<_, String>(Plan {
            layout: args.layout,
            step: args.step,
            nodes,
            redis,
            calls: args.calls,
            workers: args.workers,
            rate: args.rate,
            clients: args.clients,
            secs: args.secs,
        })
    })();
    match parsed {
        Ok(plan) => cluster(ctx, &plan).await,
        Err(e) => {
            let mut report = ctx.report(format!("cluster-{}", args.layout.name()), "cluster".into());
            report.note(e);
            report
        }
    }
}

/// Runs one step of the cluster scenario.
pub async fn cluster(ctx: &Ctx, plan: &Plan) -> Report {
    let layout = plan.layout;
    let mut report = match plan.step {
        Step::Setup => ctx.report(
            format!("cluster-setup-{}-{}", layout.name(), plan.workers),
            format!("{}: {} set-ups, {} at a time", layout.title(), plan.calls, plan.workers),
        ),
        Step::Rate => ctx.report(
            format!("cluster-rate-{}-{}", layout.name(), plan.rate as u64),
            format!("{}: {} signals/s", layout.title(), fmt_num(plan.rate)),
        ),
    };
    report.set("layout", layout.name());
    report.set("step", if plan.step == Step::Setup { "setup" } else { "rate" });
    let needed = layout.places().3;
    if plan.nodes.len() < needed {
        report.note(format!("layout {} needs {needed} nodes, got {}", layout.name(), plan.nodes.len()));
        return report;
    }
    let mut redis = match (layout, plan.redis) {
        (Layout::Single, _) => None,
        (_, None) => {
            report.note("a cluster layout needs --redis");
            return report;
        }
        (_, Some((addr, proc))) => match Redis::connect(addr, proc).await {
            Ok(r) => Some(r),
            Err(e) => {
                report.note(format!("cannot reach Redis at {addr}: {e}"));
                return report;
            }
        },
    };
    if let Some(r) = redis.as_mut() {
        if let Err(e) = r.settle(&plan.nodes[..plan.nodes.len().min(3)]).await {
            report.note(e);
            return report;
        }
    }
    match plan.step {
        Step::Setup => setups(ctx, plan, redis.as_mut(), &mut report).await,
        Step::Rate => rate(ctx, plan, redis.as_mut(), &mut report).await,
    }
    for node in &plan.nodes {
        if !node.proc.alive() {
            report.note(format!("node {} ({}) exited during the step", node.id, node.addr));
        }
    }
    report
}

/// The bench's own connection to the cluster's Redis.
struct Redis {
    conn: MultiplexedConnection,
    proc: Proc,
}

impl Redis {
    async fn connect(addr: SocketAddr, proc: Proc) -> Result<Redis, String> {
        let client = redis::Client::open(format!("redis://{addr}/")).map_err(|e| e.to_string())?;
        let conn = tokio::time::timeout(REDIS_WAIT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(Redis { conn, proc })
    }

    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T, String> {
        tokio::time::timeout(REDIS_WAIT, cmd.query_async::<T>(&mut self.conn))
            .await
            .map_err(|_| "Redis did not answer in time".to_owned())?
            .map_err(|e| format!("Redis: {e}"))
    }

    /// Waits (at most 20 s) until every node has a record showing a calm
    /// CPU, then one renewal period more so each node has read the others'
    /// calm records: timings start from a settled cluster.
    async fn settle(&mut self, nodes: &[Node]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut cpus = Vec::new();
            for node in nodes {
                let id =
                    cluster::NodeId::parse(&node.id).ok_or_else(|| format!("bad node id {}", node.id))?;
                let record: Option<String> =
                    self.query(redis::cmd("GET").arg(cluster::node_key(&id))).await?;
                let cpu = record
                    .as_deref()
                    .and_then(cluster::NodeRecord::decode)
                    .map_or(u32::MAX, |r| r.load.cpu_permille);
                cpus.push(cpu);
            }
            if cpus.iter().all(|&c| c <= CALM_PERMILLE) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("the nodes did not settle: CPU per mille {cpus:?} (MAX: no record)"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }

    /// Redis's count of commands processed so far.
    async fn commands(&mut self) -> Result<u64, String> {
        let info: String = self.query(redis::cmd("INFO").arg("stats")).await?;
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| "no total_commands_processed in INFO".to_owned())
    }

    /// Commands per second with nothing but the nodes' lease renewals
    /// going on, over one second (the bench's own `INFO`s left out).
    async fn idle_rate(&mut self) -> Result<f64, String> {
        let (c0, t0) = (self.commands().await?, Instant::now());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let c1 = self.commands().await?;
        Ok(c1.saturating_sub(c0 + 1) as f64 / t0.elapsed().as_secs_f64())
    }

    /// Makes `node` the home of `rooms`, as a claim its own `join` would
    /// have written.
    async fn place(&mut self, rooms: &[String], node: &str) -> Result<(), String> {
        for chunk in rooms.chunks(500) {
            let mut pipe = redis::pipe();
            for room in chunk {
                pipe.cmd("SET").arg(cluster::room_key(room)).arg(node).arg("PX").arg(CLAIM_MS).ignore();
            }
            tokio::time::timeout(REDIS_WAIT, pipe.query_async::<()>(&mut self.conn))
                .await
                .map_err(|_| "Redis did not answer in time".to_owned())?
                .map_err(|e| format!("Redis: {e}"))?;
        }
        Ok(())
    }
}

/// CPU of every node and of redis-server over one interval.
struct Meters {
    nodes: Vec<CpuMeter>,
    redis: Option<CpuMeter>,
    me: CpuMeter,
    machine: MachineMeter,
}

/// What [`Meters`] measured.
struct Used {
    nodes: Vec<CpuUse>,
    redis: Option<CpuUse>,
    me: CpuUse,
    machine_pct: Option<f64>,
}

impl Meters {
    fn start(ctx: &Ctx, nodes: &[Node], redis: Option<&Redis>) -> Meters {
        Meters {
            nodes: nodes.iter().map(|n| CpuMeter::start(n.proc)).collect(),
            redis: redis.map(|r| CpuMeter::start(r.proc)),
            me: CpuMeter::start(ctx.me),
            machine: MachineMeter::start(),
        }
    }

    fn read(&self) -> Used {
        Used {
            nodes: self.nodes.iter().map(CpuMeter::read).collect(),
            redis: self.redis.as_ref().map(CpuMeter::read),
            me: self.me.read(),
            machine_pct: self.machine.busy_pct(),
        }
    }
}

impl Used {
    /// CPU of all nodes together.
    fn nodes_cpu(&self) -> Duration {
        self.nodes.iter().map(|u| u.cpu).sum()
    }

    fn redis_cpu(&self) -> Duration {
        self.redis.map_or(Duration::ZERO, |u| u.cpu)
    }

    fn wall(&self) -> f64 {
        self.me.wall.as_secs_f64().max(1e-9)
    }

    /// Records the CPU as percentages of a core, and what the rest of the
    /// machine used beside the nodes, redis-server and the generator.
    fn record(&self, report: &mut Report) {
        let pct = |d: Duration| 100.0 * d.as_secs_f64() / self.wall();
        report.set("nodes_cpu_pct", pct(self.nodes_cpu()));
        report.set("node_cpu_pcts", self.nodes.iter().map(CpuUse::percent).collect::<Vec<f64>>());
        if self.redis.is_some() {
            report.set("redis_cpu_pct", pct(self.redis_cpu()));
        }
        report.set("gen_cpu_pct", self.me.percent());
        if let Some(busy) = self.machine_pct {
            let ours = pct(self.nodes_cpu() + self.redis_cpu()) + self.me.percent();
            report.set("other_cpu_pct", (busy - ours).max(0.0));
        }
    }
}

/// Step `setup`: `plan.calls` call set-ups, `plan.workers` at a time.
async fn setups(ctx: &Ctx, plan: &Plan, mut redis: Option<&mut Redis>, report: &mut Report) {
    let (ia, ib, ih, used) = plan.layout.places();
    let nodes = &plan.nodes[..used];
    let (a, b, home) = (plan.nodes[ia].addr, plan.nodes[ib].addr, plan.nodes[ih].id.clone());
    report.set("setups", plan.calls);
    report.set("workers", plan.workers);
    // Rooms no earlier run used (a claim outlives its room by a while).
    let tag = format!("cs{}-{}", std::process::id(), plan.layout.name());
    let rooms: Arc<Vec<String>> = Arc::new((0..plan.calls).map(|i| format!("{tag}-{i}")).collect());
    let mut idle = 0.0;
    let mut commands0 = 0;
    if let Some(r) = redis.as_deref_mut() {
        let placed = async {
            r.place(&rooms, &home).await?;
            idle = r.idle_rate().await?;
            commands0 = r.commands().await?;
            Ok::<_, String>(())
        };
        if let Err(e) = placed.await {
            report.note(e);
            return;
        }
    }
    let meters = Meters::start(ctx, nodes, redis.as_deref());
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..plan.workers.max(1) {
        let (next, stop, rooms) = (next.clone(), ctx.stop.clone(), rooms.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            let mut pings = Hist::new();
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= rooms.len() || stop.is_cancelled() {
                    break;
                }
                let pinged = if i % PING_EVERY == 0 { PINGS } else { 0 };
                let wait = RECV_WAIT * 2;
                match tokio::time::timeout(wait, one_setup([a, b], &rooms[i], pinged, &mut pings)).await {
                    Ok(Ok(t)) => done.push(t),
                    Ok(Err(e)) => errors.push(format!("set-up {i}: {e}")),
                    Err(_) => errors.push(format!("set-up {i} took over {wait:?}")),
                }
            }
            (done, pings, errors)
        });
    }
    let mut times = Vec::new();
    let mut pings = Hist::new();
    let mut errors = Vec::new();
    while let Some(r) = workers.join_next().await {
        match r {
            Ok((d, p, e)) => {
                times.extend(d);
                pings.merge(&p);
                errors.extend(e);
            }
            Err(e) => errors.push(format!("worker: {e}")),
        }
    }
    let busy = started.elapsed();
    tokio::time::sleep(TEARDOWN).await;
    let used_cpu = meters.read();
    let elapsed = started.elapsed();
    if let Some(r) = redis.as_deref_mut() {
        match r.commands().await {
            // Less the lease renewals over the interval and the claims the
            // bench wrote itself (one a room); its own INFO is one more.
            Ok(c1) => {
                let server = c1.saturating_sub(commands0 + 1) as f64 - idle * elapsed.as_secs_f64();
                report.set("redis_cmds_per_setup", server.max(0.0) / plan.calls as f64);
                report.set("redis_idle_cmds_per_s", idle);
            }
            Err(e) => report.note(e),
        }
    }
    let done = times.len();
    report.set("done", done);
    if !errors.is_empty() {
        report.note(format!("{} set-ups failed, first: {}", errors.len(), errors[0]));
    }
    if done == 0 {
        return;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    report.set("setup_mean_ms", ms(times.iter().sum::<Duration>() / done as u32));
    report.set("setup_p50_ms", ms(percentile(&times, 0.5)));
    report.set("setup_p99_ms", ms(percentile(&times, 0.99)));
    report.set("setups_rate", done as f64 / busy.as_secs_f64().max(1e-9));
    for (q, name) in [(0.5, "sig_p50_us"), (0.99, "sig_p99_us")] {
        if let Some(ns) = pings.quantile(q) {
            report.set(name, ns as f64 / 1e3);
        }
    }
    report.set("node_cpu_ms_per_setup", used_cpu.nodes_cpu().as_secs_f64() * 1e3 / done as f64);
    if redis.is_some() {
        report.set("redis_cpu_ms_per_setup", used_cpu.redis_cpu().as_secs_f64() * 1e3 / done as f64);
    }
    used_cpu.record(report);
}

/// One call set up on `nodes` (A's, B's) in `room`, then `pings` signals
/// timed A→B (into `hist`, ns); returns the set-up time. Both clients
/// close when it returns.
async fn one_setup(
    nodes: [SocketAddr; 2],
    room: &str,
    pings: usize,
    hist: &mut Hist,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut a = net::connect(nodes[0], net::SMALL_READ_BUFFER).await?;
    let a_id = enter(&mut a, room, "a").await?;
    let mut b = net::connect(nodes[1], net::SMALL_READ_BUFFER).await?;
    let b_id = enter(&mut b, room, "b").await?;
    until(&mut a, "peer-joined").await?;
    send(&mut b, signal(&a_id, OFFER)).await?;
    until(&mut a, "signal").await?;
    send(&mut a, signal(&b_id, ANSWER)).await?;
    until(&mut b, "signal").await?;
    let setup = t0.elapsed();
    for k in 0..pings {
        let t = Instant::now();
        send(&mut a, timed_signal(&b_id, k, net::instant_ns(t.into_std()))).await?;
        until(&mut b, "signal").await?;
        hist.record(t.elapsed().as_nanos() as u64);
    }
    // Closed, not waited for: the nodes' teardown overlaps the next
    // set-up, as it would with people coming and going.
    for mut ws in [a, b] {
        let _ = ws.close(None).await;
    }
    Ok(setup)
}

/// An offer's `data`, as small as a signal of the benchmark's size (the
/// SDP's size matters to the relays, not to where the room lives).
const OFFER: &str = r#"{"description":{"type":"offer","sdp":"v=0 o=- 4611731400430051336 2 IN IP4 127.0.0.1 s=- t=0 0 a=group:BUNDLE 0 1 a=msid-semantic: WMS stream m=audio 9 UDP/TLS/RTP/SAVPF 111 c=IN IP4 0.0.0.0"}}"#;
/// The answer's.
const ANSWER: &str = r#"{"description":{"type":"answer","sdp":"v=0 o=- 5611731400430051336 2 IN IP4 127.0.0.1 s=- t=0 0 a=group:BUNDLE 0 1 a=msid-semantic: WMS stream m=audio 9 UDP/TLS/RTP/SAVPF 111 c=IN IP4 0.0.0.0"}}"#;

/// Says hello and joins `room` as `name`; the peer id the server gave.
async fn enter(ws: &mut Ws, room: &str, name: &str) -> Result<String, String> {
    ws.feed(Message::text(r#"{"type":"hello","version":3}"#)).await.map_err(|e| format!("send: {e}"))?;
    let join = format!(r#"{{"type":"join","room":"{room}","name":"{name}"}}"#);
    send(ws, join).await?;
    let joined = until(ws, "joined").await?;
    let v: Value = serde_json::from_str(&joined).map_err(|e| format!("bad JSON {e}: {joined}"))?;
    v["you"].as_str().map(str::to_owned).ok_or_else(|| format!("no id in {joined}"))
}

async fn send(ws: &mut Ws, text: String) -> Result<(), String> {
    ws.send(Message::text(text)).await.map_err(|e| format!("send: {e}"))
}

/// Reads until a message of type `kind` arrives (skipping others, such as
/// `welcome`); an `error` ends the wait.
async fn until(ws: &mut Ws, kind: &str) -> Result<String, String> {
    let want = format!(r#""type":"{kind}""#);
    let deadline = Instant::now() + RECV_WAIT;
    loop {
        let msg =
            tokio::time::timeout_at(deadline, ws.next()).await.map_err(|_| format!("no {kind} in time"))?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                let t = t.as_str();
                if t.contains(&want) {
                    return Ok(t.to_owned());
                }
                if t.contains(r#""type":"error""#) {
                    return Err(format!("waiting for {kind}: {t}"));
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Binary(_))) => {}
            other => return Err(format!("waiting for {kind}: {}", describe_close(other))),
        }
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Step `rate`: `plan.clients` clients in calls, A on one node and B on
/// another, sending at `plan.rate` signals/s in all.
async fn rate(ctx: &Ctx, plan: &Plan, mut redis: Option<&mut Redis>, report: &mut Report) {
    let (ia, ib, ih, used) = plan.layout.places();
    let nodes = &plan.nodes[..used];
    let calls = plan.clients / 2;
    report.set("offered_rate", plan.rate);
    report.set("clients", calls * 2);
    let prefix = format!("cr{}-{}-", std::process::id(), plan.layout.name());
    let mut idle = 0.0;
    if let Some(r) = redis.as_deref_mut() {
        let rooms: Vec<String> = (0..calls).map(|k| format!("{prefix}{k}")).collect();
        let placed = async {
            r.place(&rooms, &plan.nodes[ih].id).await?;
            idle = r.idle_rate().await?;
            Ok::<_, String>(())
        };
        if let Err(e) = placed.await {
            report.note(e);
            return;
        }
    }
    let addrs = [plan.nodes[ia].addr, plan.nodes[ib].addr];
    let pairs =
        net::connect_pairs_across(Kind::Webconf, addrs, calls, 256, net::SMALL_READ_BUFFER, &prefix).await;
    if pairs.failed > 0 {
        report.note(format!(
            "{} clients failed to set up: {}",
            pairs.failed,
            pairs.first_error.unwrap_or_default()
        ));
    }
    if pairs.pairs.is_empty() {
        return;
    }
    let schedule = Schedule::new(plan.secs);
    // Meter the nodes and Redis over exactly the interval the driver
    // measures, beside it on this one thread.
    let metered = async {
        tokio::time::sleep_until(schedule.measure_from()).await;
        let commands0 = match redis.as_deref_mut() {
            Some(r) => Some(r.commands().await),
            None => None,
        };
        let meters = Meters::start(ctx, nodes, redis.as_deref());
        tokio::select! {
            () = tokio::time::sleep_until(schedule.end()) => {}
            () = ctx.stop.cancelled() => {}
        }
        let used_cpu = meters.read();
        let commands = match (redis.as_deref_mut(), commands0) {
            (Some(r), Some(Ok(c0))) => Some(
                r.commands()
                    .await
                    .map(|c1| c1.saturating_sub(c0 + 1) as f64 - idle * used_cpu.me.wall.as_secs_f64()),
            ),
            (_, Some(Err(e))) => Some(Err(e)),
            _ => None,
        };
        (used_cpu, commands)
    };
    let (measured, (used_cpu, commands)) =
        tokio::join!(openloop::drive(ctx, report, pairs.pairs, plan.rate, &schedule), metered);
    // The driver metered A's node only: count every node and Redis.
    let signals = measured.count;
    used_cpu.record(report);
    report.set("server_cpu_pct", 100.0 * used_cpu.nodes_cpu().as_secs_f64() / used_cpu.wall());
    if signals > 0 {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / signals as f64;
        report.set("cpu_us_per_msg", per(used_cpu.nodes_cpu() + used_cpu.redis_cpu()));
        report.set("node_cpu_us_per_msg", per(used_cpu.nodes_cpu()));
        match commands {
            Some(Ok(c)) => report.set("redis_cmds_per_msg", c.max(0.0) / signals as f64),
            Some(Err(e)) => report.note(e),
            None => {}
        }
    }
    // Holds: every signal arrived, at the offered rate, within 100 ms at
    // the 99th percentile, and the generator kept its schedule.
    let lat_p99_ms = measured.hist.quantile(0.99).map_or(f64::INFINITY, |ns| ns as f64 / 1e6);
    let delivered = measured.rate(plan.secs);
    let held = measured.errors.is_empty()
        && report.get("lost").and_then(Value::as_u64) == Some(0)
        && delivered >= 0.98 * plan.rate
        && lat_p99_ms < 100.0;
    let generator_bound = used_cpu.me.percent() > 90.0;
    if generator_bound {
        report.note("the generator used over 90% of its core: this step measured the generator too");
    }
    report.set("generator_bound", generator_bound);
    report.set("held", held);
}

/// The cluster section's tables, from the steps' JSON lines: set-ups,
/// signal rates, and each layout against one node alone.
pub fn table(results: &[Value]) -> String {
    let layouts = [Layout::Single, Layout::Same, Layout::Two, Layout::Third];
    let step = |kind: &'static str| {
        move |r: &&Value| {
            r["metrics"]["step"] == kind && r["scenario"].as_str().is_some_and(|s| s.starts_with("cluster-"))
        }
    };
    let of = |r: &Value, layout: Layout| r["metrics"]["layout"] == layout.name();
    let num = |r: &Value, key: &str| r["metrics"][key].as_f64();
    let cell = |r: &Value, key: &str| num(r, key).map_or_else(|| "–".to_owned(), fmt_num);
    let cells = |r: &Value, keys: &[&str]| keys.iter().map(|k| cell(r, k)).collect::<Vec<_>>().join(" / ");
    let mut out = String::new();
    let mut notes = Vec::new();
    let mut collect_notes = |r: &Value| {
        for n in r["notes"].as_array().into_iter().flatten() {
            notes.push(format!("- {}: {}", r["title"].as_str().unwrap_or("?"), n.as_str().unwrap_or("?")));
        }
    };

    let setups: Vec<&Value> = results.iter().filter(step("setup")).collect();
    if !setups.is_empty() {
        let mut rows = vec![
            [
                "layout",
                "set-ups at a time",
                "set-ups done",
                "set-up mean / p50 / p99 (ms)",
                "set-ups/s",
                "signal one way p50 / p99 (µs)",
                "Redis commands per set-up",
                "node CPU per set-up (ms, all nodes)",
                "redis-server CPU per set-up (ms)",
                "generator CPU (%)",
                "CPU outside all (%)",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for layout in layouts {
            let mut mine: Vec<&&Value> = setups.iter().filter(|r| of(r, layout)).collect();
            mine.sort_by_key(|r| r["metrics"]["workers"].as_u64().unwrap_or(0));
            for r in mine {
                rows.push(vec![
                    layout.title().to_owned(),
                    cell(r, "workers"),
                    format!("{} of {}", cell(r, "done"), cell(r, "setups")),
                    cells(r, &["setup_mean_ms", "setup_p50_ms", "setup_p99_ms"]),
                    cell(r, "setups_rate"),
                    cells(r, &["sig_p50_us", "sig_p99_us"]),
                    cell(r, "redis_cmds_per_setup"),
                    cell(r, "node_cpu_ms_per_setup"),
                    cell(r, "redis_cpu_ms_per_setup"),
                    cell(r, "gen_cpu_pct"),
                    cell(r, "other_cpu_pct"),
                ]);
                collect_notes(r);
            }
        }
        out.push_str("**Call set-ups**\n\n");
        out.push_str(&markdown(&rows, 1));
    }

    let rates: Vec<&Value> = results.iter().filter(step("rate")).collect();
    if !rates.is_empty() {
        let mut rows = vec![
            [
                "layout",
                "offered signals/s",
                "delivered signals/s",
                "lost",
                "latency p50 / p99 / p99.9 (µs)",
                "nodes' CPU (% of a core: all / each)",
                "redis-server CPU (%)",
                "CPU per signal, nodes + Redis (µs)",
                "Redis commands per signal",
                "generator CPU (%)",
                "CPU outside all (%)",
                "holds",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for layout in layouts {
            let mut mine: Vec<&&Value> = rates.iter().filter(|r| of(r, layout)).collect();
            mine.sort_by(|a, b| {
                num(a, "offered_rate").unwrap_or(0.0).total_cmp(&num(b, "offered_rate").unwrap_or(0.0))
            });
            for r in mine {
                let each: Vec<String> = r["metrics"]["node_cpu_pcts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_f64)
                    .map(fmt_num)
                    .collect();
                let nodes = match each.len() {
                    0 | 1 => cell(r, "nodes_cpu_pct"),
                    _ => format!("{} ({})", cell(r, "nodes_cpu_pct"), each.join(" + ")),
                };
                rows.push(vec![
                    layout.title().to_owned(),
                    cell(r, "offered_rate"),
                    cell(r, "rate"),
                    cell(r, "lost"),
                    cells(r, &["lat_p50_us", "lat_p99_us", "lat_p999_us"]),
                    nodes,
                    cell(r, "redis_cpu_pct"),
                    cell(r, "cpu_us_per_msg"),
                    cell(r, "redis_cmds_per_msg"),
                    cell(r, "gen_cpu_pct"),
                    cell(r, "other_cpu_pct"),
                    match r["metrics"]["held"].as_bool() {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "–",
                    }
                    .to_owned(),
                ]);
                collect_notes(r);
            }
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("**Signals at a fixed rate, open loop**\n\n");
        out.push_str(&markdown(&rows, 1));
    }

    // Each layout against one node alone: latency and CPU per unit of work.
    let setup_of = |layout: Layout| {
        setups.iter().find(|r| of(r, layout) && r["metrics"]["workers"].as_u64() == Some(1)).copied()
    };
    let held = |r: &&&Value| r["metrics"]["held"].as_bool() == Some(true);
    let best_rate = |layout: Layout| {
        rates
            .iter()
            .filter(|r| of(r, layout))
            .filter(held)
            .filter_map(|r| num(r, "offered_rate"))
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))))
    };
    // Signals compared at one rate: the highest every layout held (CPU
    // per signal is most exact at a high rate, where the nodes' own idle
    // work and /proc's 10 ms ticks weigh least).
    let measured: Vec<Layout> = layouts.into_iter().filter(|&l| rates.iter().any(|r| of(r, l))).collect();
    let common = rates
        .iter()
        .filter(held)
        .filter_map(|r| num(r, "offered_rate"))
        .filter(|&rate| {
            measured
                .iter()
                .all(|&l| rates.iter().filter(held).any(|r| of(r, l) && num(r, "offered_rate") == Some(rate)))
        })
        .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
    let at_common = |layout: Layout| {
        rates.iter().find(|r| of(r, layout) && common.is_some() && num(r, "offered_rate") == common).copied()
    };
    let cpu_per_signal = |layout: Layout| at_common(layout).and_then(|r| num(r, "cpu_us_per_msg"));
    let setup_cpu =
        |r: &Value| Some(num(r, "node_cpu_ms_per_setup")? + num(r, "redis_cpu_ms_per_setup").unwrap_or(0.0));
    let base = setup_of(Layout::Single);
    let with_ratio = |v: Option<f64>, one: Option<f64>, unit: &str| match (v, one) {
        (Some(v), Some(o)) if o > 0.0 => format!("{} {unit} ({}×)", fmt_num(v), fmt_num(v / o)),
        (Some(v), _) => format!("{} {unit}", fmt_num(v)),
        _ => "–".to_owned(),
    };
    let mut rows = vec![
        [
            "layout",
            "set-up mean",
            "signal p50 / p99",
            "CPU per set-up, nodes + Redis",
            "CPU per signal, nodes + Redis",
            "latency p50 / p99",
            "highest signal rate held",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    if let Some(rate) = common {
        let at = format!(" at {} signals/s", fmt_num(rate));
        rows[0][4].push_str(&at);
        rows[0][5].push_str(&at);
    }
    for layout in layouts {
        let s = setup_of(layout);
        if s.is_none() && rates.iter().all(|r| !of(r, layout)) {
            continue;
        }
        let tried = rates.iter().filter(|r| of(r, layout)).count();
        let top =
            rates.iter().filter(|r| of(r, layout)).filter_map(|r| num(r, "offered_rate")).fold(0.0, f64::max);
        rows.push(vec![
            layout.title().to_owned(),
            with_ratio(
                s.and_then(|r| num(r, "setup_mean_ms")),
                base.and_then(|r| num(r, "setup_mean_ms")),
                "ms",
            ),
            match s {
                Some(r) if num(r, "sig_p50_us").is_some() => {
                    format!("{} µs", cells(r, &["sig_p50_us", "sig_p99_us"]))
                }
                _ => "–".to_owned(),
            },
            with_ratio(s.and_then(setup_cpu), base.and_then(setup_cpu), "ms"),
            with_ratio(cpu_per_signal(layout), cpu_per_signal(Layout::Single), "µs"),
            at_common(layout).map_or_else(
                || "–".to_owned(),
                |r| format!("{} µs", cells(r, &["lat_p50_us", "lat_p99_us"])),
            ),
            match best_rate(layout) {
                None if tried > 0 => "none held".to_owned(),
                None => "–".to_owned(),
                Some(r) if r >= top => format!("{} signals/s or more (every step held)", fmt_num(r)),
                Some(r) => format!("{} signals/s", fmt_num(r)),
            },
        ]);
    }
    if rows.len() > 1 {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str("**Against one node alone** (× its number)\n\n");
        out.push_str(&markdown(&rows, 1));
    }
    out.push_str(&notes_section(&notes));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, layout: Layout, step: &str, metrics: &[(&str, Value)]) -> String {
        let mut r = Report::new(id.into(), format!("{} {id}", layout.title()), "webconf", "webconf");
        r.set("layout", layout.name());
        r.set("step", step);
        for (k, v) in metrics {
            r.set(k, v.clone());
        }
        r.to_line()
    }

    #[test]
    fn layouts_are_set_against_one_node() {
        use serde_json::json;
        let lines = [
            line(
                "cluster-setup-single-1",
                Layout::Single,
                "setup",
                &[
                    ("workers", json!(1)),
                    ("setup_mean_ms", json!(2.0)),
                    ("node_cpu_ms_per_setup", json!(1.0)),
                ],
            ),
            line(
                "cluster-setup-third-1",
                Layout::Third,
                "setup",
                &[
                    ("workers", json!(1)),
                    ("setup_mean_ms", json!(5.0)),
                    ("node_cpu_ms_per_setup", json!(4.0)),
                    ("redis_cpu_ms_per_setup", json!(1.0)),
                    ("redis_cmds_per_setup", json!(31.5)),
                ],
            ),
            line(
                "cluster-rate-single-1000",
                Layout::Single,
                "rate",
                &[("offered_rate", json!(1000.0)), ("cpu_us_per_msg", json!(10.0)), ("held", json!(true))],
            ),
            line(
                "cluster-rate-single-5000",
                Layout::Single,
                "rate",
                &[("offered_rate", json!(5000.0)), ("cpu_us_per_msg", json!(8.0)), ("held", json!(true))],
            ),
            line(
                "cluster-rate-third-1000",
                Layout::Third,
                "rate",
                &[
                    ("offered_rate", json!(1000.0)),
                    ("cpu_us_per_msg", json!(40.0)),
                    ("node_cpu_pcts", json!([1.0, 2.0, 3.0])),
                    ("nodes_cpu_pct", json!(6.0)),
                    ("held", json!(true)),
                ],
            ),
            line(
                "cluster-rate-third-5000",
                Layout::Third,
                "rate",
                &[("offered_rate", json!(5000.0)), ("cpu_us_per_msg", json!(60.0)), ("held", json!(false))],
            ),
        ];
        let t = crate::report::table(&lines.join("\n")).expect("table");
        // Each layout once in the comparison, with its ratio to one node.
        assert!(t.contains("| one node, no Redis                  |    2 ms (1×) |"), "{t}");
        assert!(t.contains("5 ms (2.50×)"), "{t}");
        assert!(t.contains("5 ms (5×)"), "CPU per set-up, nodes + Redis: {t}");
        assert!(t.contains("40 µs (4×)"), "{t}");
        // Compared at the highest rate both held, though one node held more.
        assert!(t.contains("| CPU per signal, nodes + Redis at 1,000 signals/s |"), "{t}");
        let third = t.lines().rfind(|l| l.starts_with("| peers on two nodes, home on a third"));
        assert!(third.is_some_and(|l| l.ends_with(" 1,000 signals/s |")), "held 1,000 only: {t}");
        assert!(t.contains("5,000 signals/s or more (every step held)"), "{t}");
        assert!(t.contains("6 (1 + 2 + 3)"), "{t}");
        assert!(t.contains("31.5"), "{t}");
    }
}
