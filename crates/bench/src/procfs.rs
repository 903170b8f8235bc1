//! What the benchmark reads about processes from /proc: CPU time and
//! resident memory, for the server under test and for the generator itself.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A process to measure: a pid, or the generator itself.
#[derive(Clone, Copy, Debug)]
pub struct Proc {
    /// `None` is this process.
    pid: Option<u32>,
    /// Clock ticks per second (`getconf CLK_TCK`), the unit of /proc CPU times.
    clk_tck: u64,
}

impl Proc {
    /// The process `pid`.
    pub fn pid(pid: u32, clk_tck: u64) -> Proc {
        Proc { pid: Some(pid), clk_tck: clk_tck.max(1) }
    }

    /// The generator itself.
    pub fn this(clk_tck: u64) -> Proc {
        Proc { pid: None, clk_tck: clk_tck.max(1) }
    }

    fn path(&self, file: &str) -> String {
        match self.pid {
            Some(pid) => format!("/proc/{pid}/{file}"),
            None => format!("/proc/self/{file}"),
        }
    }

    /// User plus system CPU time used so far, all threads.
    pub fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(self.path("stat")).ok()?;
        // The command name (field 2) may hold spaces: count from its ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        // After ')': state is field 3, utime field 14, stime field 15.
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(Duration::from_secs_f64((utime + stime) as f64 / self.clk_tck as f64))
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(self.path("status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Whether the process still exists (and is not a zombie).
    pub fn alive(&self) -> bool {
        match std::fs::read_to_string(self.path("stat")) {
            Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) != Some("Z"),
            Err(_) => false,
        }
    }
}

/// CPU used by a process over an interval, against wall time.
#[derive(Debug)]
pub struct CpuMeter {
    proc: Proc,
    cpu0: Option<Duration>,
    wall0: Instant,
}

/// What a [`CpuMeter`] measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    /// CPU time used (user + system).
    pub cpu: Duration,
    /// Wall time elapsed.
    pub wall: Duration,
}

impl CpuUse {
    /// CPU time as a percentage of one core.
    pub fn percent(&self) -> f64 {
        100.0 * self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// CPU microseconds per unit of work (message, set-up, connection).
    pub fn micros_per(&self, units: u64) -> Option<f64> {
        (units > 0).then(|| self.cpu.as_secs_f64() * 1e6 / units as f64)
    }
}

impl CpuMeter {
    /// Starts measuring `proc` now.
    pub fn start(proc: Proc) -> CpuMeter {
        CpuMeter { proc, cpu0: proc.cpu(), wall0: Instant::now() }
    }

    /// What was used since [`CpuMeter::start`].
    pub fn read(&self) -> CpuUse {
        let cpu = match (self.cpu0, self.proc.cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => Duration::ZERO,
        };
        CpuUse { cpu, wall: self.wall0.elapsed() }
    }
}

/// Watches the server while a scenario runs: records its peak memory, and
/// stops the scenario (through `stop`) if the server exits or grows past
/// `cap_kib`, so a collapsing server cannot take the machine with it.
#[derive(Debug)]
pub struct Watchdog {
    peak_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
    reason: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watchdog {
    /// Samples `server` every 100 ms until dropped.
    pub fn start(server: Proc, cap_kib: u64, stop: CancellationToken) -> Watchdog {
        use std::sync::atomic::Ordering;
        let peak_kib = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(server.rss_kib().unwrap_or(0)));
        let reason = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (peak, why) = (peak_kib.clone(), reason.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let verdict = if !server.alive() {
                    Some("the server process exited".to_owned())
                } else {
                    let rss = server.rss_kib().unwrap_or(0);
                    peak.fetch_max(rss, Ordering::Relaxed);
                    (rss > cap_kib)
                        .then(|| format!("stopped early: server RSS passed {} MiB", cap_kib / 1024))
                };
                if let Some(v) = verdict {
                    *why.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
                    stop.cancel();
                    return;
                }
            }
        });
        Watchdog { peak_kib, reason, task }
    }

    /// Highest RSS seen so far, KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the watchdog stopped the scenario, if it did.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CPU time used by the whole machine over an interval, to tell how much
/// of it went to processes other than the server and the generator.
#[derive(Debug)]
pub struct MachineMeter {
    start: Option<(u64, u64)>,
    cpus: u64,
}

impl MachineMeter {
    /// Starts measuring now.
    pub fn start() -> MachineMeter {
        let cpus = std::fs::read_to_string("/proc/stat")
            .map(|s| s.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count() as u64)
            .unwrap_or(1);
        MachineMeter { start: machine_ticks(), cpus: cpus.max(1) }
    }

    /// Cores' worth of CPU busy since the start, as a percentage of one core.
    pub fn busy_pct(&self) -> Option<f64> {
        let ((busy0, total0), (busy1, total1)) = (self.start?, machine_ticks()?);
        let total = total1.checked_sub(total0)?;
        (total > 0).then(|| 100.0 * self.cpus as f64 * busy1.saturating_sub(busy0) as f64 / total as f64)
    }
}

/// (busy, total) ticks of all CPUs, from the first line of /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest times are
    // already inside user and nice).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Datagrams the kernel dropped because a UDP socket's receive buffer was
/// full, summed over this network namespace's IPv4 UDP sockets: those
/// bound to `port`, and all others (`/proc/net/udp`, last column).
pub fn udp_drops(port: Option<u16>) -> (u64, u64) {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let (mut at_port, mut others) = (0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port =
            fields.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
        let Some(drops) = fields.last().and_then(|d| d.parse::<u64>().ok()) else { continue };
        if port.is_some() && local_port == port {
            at_port += drops;
        } else {
            others += drops;
        }
    }
    (at_port, others)
}
