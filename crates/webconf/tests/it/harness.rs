//! Real browsers against the real binary: a loopback-only network
//! namespace, the webconf process, chromedriver, and Chromium sessions with
//! fake camera and microphone.
//!
//! Every browser test runs in a fresh network namespace with only `lo` up,
//! because ICE sends checks to every interface it finds and this project's
//! tests may only touch loopback. A test that finds itself outside one
//! re-runs itself inside one (`unshare --net --pid --fork`), so `cargo test`
//! alone is safe; `--pid` makes every process it started die with it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const IN_NAMESPACE: &str = "WEBCONF_TEST_IN_NETNS";

/// Whether this process's network namespace has only the loopback device.
fn only_loopback() -> bool {
    let Ok(dev) = std::fs::read_to_string("/proc/net/dev") else { return false };
    dev.lines().skip(2).filter_map(|l| l.split(':').next()).all(|name| name.trim() == "lo")
}

/// Runs the test `name` (its full path in this binary) inside a fresh
/// loopback-only network namespace. Returns `true` when the caller is
/// already inside and should run the test body; otherwise it ran the test
/// in a child, asserted it passed, and returns `false`.
pub fn in_loopback_namespace(name: &str) -> bool {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        assert!(only_loopback(), "{IN_NAMESPACE} is set but other network devices are visible");
        return true;
    }
    // Browser tests run one at a time: two cores cannot hold several pairs
    // of Chromium decoding video without the calls themselves stuttering.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let exe = std::env::current_exe().expect("test binary path");
    let mut unshare = Command::new("unshare");
    if !is_root() {
        // Without root, a user namespace grants what a private network needs.
        unshare.args(["--user", "--map-root-user"]);
    }
    let status = unshare
        .args([
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_NAMESPACE, "1")
        .status()
        .expect("run unshare (browser tests need root, or a user namespace, for a private network)");
    assert!(status.success(), "{name} failed inside its network namespace: {status}");
    false
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    euid == Some("0")
}

/// A child process killed when dropped, so a failing test leaves nothing
/// running.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The webconf binary, listening on 127.0.0.1 on a port of its choosing.
pub struct Webconf {
    process: Reaped,
    pub base: String,
}

impl Webconf {
    pub fn start(extra_args: &[&str]) -> Webconf {
        Self::start_on("127.0.0.1:0", extra_args)
    }

    /// Starts webconf listening on `listen` (to restart one on its port).
    pub fn start_on(listen: &str, extra_args: &[&str]) -> Webconf {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_webconf")), listen, extra_args)
    }

    /// Starts webconf on 127.0.0.1 with an open-files limit of `nofile`
    /// (through util-linux's `prlimit`, which then runs it).
    pub fn start_with_nofile(nofile: u32, extra_args: &[&str]) -> Webconf {
        let mut prlimit = Command::new("prlimit");
        prlimit.arg(format!("--nofile={nofile}:{nofile}")).arg("--").arg(env!("CARGO_BIN_EXE_webconf"));
        Self::spawn(prlimit, "127.0.0.1:0", extra_args)
    }

    fn spawn(mut command: Command, listen: &str, extra_args: &[&str]) -> Webconf {
        let mut child = command
            // WEBCONF_TEST_LOG (e.g. `info,server::sfu_io=debug`) to see more.
            .args([
                "--listen",
                listen,
                "--log",
                &std::env::var("WEBCONF_TEST_LOG").unwrap_or_else(|_| "info".into()),
            ])
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start webconf");
        let stdout = child.stdout.take().expect("stdout");
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        stdout.read_line(&mut first).expect("read the announcement");
        // Keep draining, so the server never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let base = first
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no URL in {first:?}"))
            .trim_end_matches('/')
            .to_owned();
        Webconf { process: Reaped(child), base }
    }

    /// Stops it as SIGTERM does (every WebSocket closed with 1001 "server
    /// shutting down") and waits for it to exit.
    pub fn terminate(mut self) {
        let pid = self.process.0.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success(), "kill -TERM {pid}: {status}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.process.0.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "webconf did not exit within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `nft` with `args` (inside the test's own network namespace only).
pub fn nft(args: &str) {
    assert!(only_loopback(), "nft only inside the test's private network namespace");
    let status = Command::new("nft")
        .args(args.split_whitespace())
        .status()
        .expect("run nft (apt-get install nftables)");
    assert!(status.success(), "nft {args}: {status}");
}

/// One chromedriver serving every browser of a test, or one geckodriver
/// serving one Firefox (geckodriver runs one session at a time).
pub struct Driver {
    _process: Reaped,
    url: String,
    /// Browsers see only loopback: they must be allowed to use it for calls.
    loopback_only: bool,
    firefox: bool,
}

impl Driver {
    /// A chromedriver in a lab host (see `netlab`), reached from the test
    /// at `url` through the host's router.
    pub fn in_host(host: &crate::netlab::Netns, url: &str) -> Driver {
        Self::in_host_for(host, url, crate::netlab::SERVER_IP)
    }

    /// A chromedriver in a lab host, taking commands from `test_ip` only
    /// (the test's address as the host sees it).
    pub fn in_host_for(host: &crate::netlab::Netns, url: &str, test_ip: &str) -> Driver {
        let process = host
            .command("chromedriver")
            .args(["--port=9515", &format!("--allowed-ips={test_ip}"), "--allowed-origins=*"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver in the host");
        let process = Reaped(process);
        let addr: SocketAddr = url.trim_start_matches("http://").parse().expect("driver address");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver in the host is not reachable at {url}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { _process: process, url: url.to_owned(), loopback_only: false, firefox: false }
    }

    pub fn start() -> Driver {
        let port = free_port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (apt-get install chromium-driver)");
        Self::listening(process, port, "chromedriver", false)
    }

    /// A geckodriver for one Firefox ESR (`apt-get install firefox-esr`,
    /// `cargo install geckodriver`).
    pub fn firefox() -> Driver {
        let port = free_port();
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
        let geckodriver = cargo_home
            .map(|c| c.join("bin/geckodriver"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("geckodriver"));
        let process = Command::new(geckodriver)
            .args(["--port", &port.to_string(), "--log", "fatal"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start geckodriver (cargo install geckodriver)");
        Self::listening(process, port, "geckodriver", true)
    }

    fn listening(process: Child, port: u16, name: &str, firefox: bool) -> Driver {
        let process = Reaped(process);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "{name} did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { _process: process, url: format!("http://{addr}"), loopback_only: true, firefox }
    }

    /// A new browser. Chromium's fake camera shows `video` (a .y4m file);
    /// Firefox's shows its own moving test pattern (it cannot play a file),
    /// so its colour proves nothing and tests tell it apart by peer id.
    pub async fn browser(&self, label: &str, video: &Path, profile: &Path) -> Browser {
        self.browser_with(label, video, profile, Options::default()).await
    }

    /// A new browser, set up as `options` say.
    pub async fn browser_with(&self, label: &str, video: &Path, profile: &Path, options: Options) -> Browser {
        if self.firefox {
            return self.firefox_browser(label, profile, options).await;
        }
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--use-fake-device-for-media-stream".to_owned(),
            "--autoplay-policy=no-user-gesture-required".to_owned(),
            // Self-signed certificates of test servers.
            "--ignore-certificate-errors".to_owned(),
            "--window-size=1280,800".to_owned(),
            format!("--use-file-for-fake-video-capture={}", video.display()),
            format!("--user-data-dir={}", profile.display()),
        ];
        if self.loopback_only {
            // Without it Chromium gathers no candidates at all on loopback.
            args.push("--allow-loopback-in-peer-connection".to_owned());
        }
        // Asked for the camera: yes, or (devices blocked) no.
        args.push(
            if options.devices_blocked {
                "--deny-permission-prompts"
            } else {
                "--use-fake-ui-for-media-stream"
            }
            .to_owned(),
        );
        let mut caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        });
        options.apply(&mut caps);
        self.session(label, caps).await
    }

    /// A WebDriver session with `caps`.
    async fn session(&self, label: &str, caps: Value) -> Browser {
        let Value::Object(caps) = caps else { unreachable!() };
        // fantoccini's rustls and ours bring two crypto providers; pick one
        // for the process (a second install is a harmless error).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientBuilder::rustls()
            .expect("TLS roots")
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("start a browser for {label}: {e}"));
        Browser { client, label: label.to_owned() }
    }

    async fn firefox_browser(&self, label: &str, profile: &Path, options: Options) -> Browser {
        std::fs::create_dir_all(profile).expect("profile dir");
        // 1: allowed without asking; 2: blocked.
        let allowed = if options.devices_blocked { 2 } else { 1 };
        let mut caps = json!({
            "browserName": "firefox",
            "acceptInsecureCerts": true,
            "moz:firefoxOptions": {
                "binary": "/usr/bin/firefox-esr",
                "args": ["-headless", "--width=1280", "--height=800", "-profile", profile.display().to_string()],
                "prefs": {
                    // Fake camera and microphone, allowed without asking
                    // (not media.navigator.permission.disabled: with it,
                    // ICE fails on a machine with no default route).
                    "media.navigator.streams.fake": true,
                    "permissions.default.camera": allowed,
                    "permissions.default.microphone": allowed,
                    // Calls on loopback, with real host addresses.
                    "media.peerconnection.ice.loopback": true,
                    "media.peerconnection.ice.obfuscate_host_addresses": false,
                    "media.autoplay.default": 0,
                    "media.autoplay.blocking_policy": 0,
                    "media.autoplay.block-webaudio": false,
                    // Headless here has no sound device, so Web Audio (the
                    // lobby's meter, the speaking ring) would never start:
                    // Firefox's own stand-in device plays it, as a
                    // person's sound card would.
                    "media.cubeb.force_mock_context": true,
                    // Nothing to fetch from the internet.
                    "app.update.disabledForTesting": true,
                    "browser.shell.checkDefaultBrowser": false,
                    "datareporting.policy.dataSubmissionEnabled": false,
                    "toolkit.telemetry.enabled": false,
                    "network.captive-portal-service.enabled": false,
                    "network.connectivity-service.enabled": false,
                },
            },
        });
        options.apply(&mut caps);
        self.session(label, caps).await
    }
}

/// How a test browser differs from the usual one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The camera and microphone are refused to every page, as when a
    /// person blocked them.
    pub devices_blocked: bool,
    /// Navigation returns once the document is parsed, not loaded, so a
    /// test can watch a page that never finishes loading.
    pub eager: bool,
}

impl Options {
    fn apply(self, caps: &mut Value) {
        if self.eager {
            caps["pageLoadStrategy"] = json!("eager");
        }
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// One browser tab driven through WebDriver.
pub struct Browser {
    pub client: Client,
    pub label: String,
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("{}: open {url}: {e}", self.label));
    }

    /// Runs `script` (a function body) and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{}: {script}: {e}", self.label))
    }

    /// Runs `script` (a function body that may `await`) and returns what it
    /// resolves to.
    pub async fn eval_async(&self, script: &str) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1];
             (async () => {{ {script} }})().then(done, (e) => done({{error: String(e)}}));"
        );
        self.client
            .execute_async(&wrapped, vec![])
            .await
            .unwrap_or_else(|e| panic!("{}: {script}: {e}", self.label))
    }

    /// Waits until `script` returns something truthy; panics with `what`
    /// after `timeout`.
    pub async fn wait_until(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script).await;
            if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
                return v;
            }
            assert!(Instant::now() < deadline, "{}: waited {timeout:?} for {what}", self.label);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page state the call page shows (body[data-state]).
    pub async fn wait_state(&self, state: &str) {
        let script = format!("return document.body.dataset.state === {state:?}");
        self.wait_until(&format!("page state {state}"), Duration::from_secs(15), &script).await;
    }

    /// Switches the page's language the way a person does, with the selector.
    pub async fn set_lang(&self, lang: &str) {
        let script = format!(
            "const s = document.querySelector('select.lang'); s.value = {lang:?}; s.dispatchEvent(new Event('change'))"
        );
        self.eval(&script).await;
    }

    pub async fn click(&self, css: &str) {
        let el = self.client.wait().for_element(Locator::Css(css)).await.unwrap_or_else(|e| {
            panic!("{}: no element {css}: {e}", self.label);
        });
        el.click().await.unwrap_or_else(|e| panic!("{}: click {css}: {e}", self.label));
    }

    /// Types into the element matched by `css` (WebDriver key codes work,
    /// e.g. `\u{E007}` for Enter).
    pub async fn type_text(&self, css: &str, text: &str) {
        let el = self.client.wait().for_element(Locator::Css(css)).await.unwrap_or_else(|e| {
            panic!("{}: no element {css}: {e}", self.label);
        });
        el.send_keys(text).await.unwrap_or_else(|e| panic!("{}: type into {css}: {e}", self.label));
    }

    /// Waits for the lobby to have tried the camera, then presses Join.
    pub async fn join(&self) {
        self.wait_until(
            "the Join button",
            Duration::from_secs(15),
            "return !document.getElementById('join').disabled",
        )
        .await;
        self.click("#join").await;
    }

    /// `window.webconf.stats()` of the page: one summary per peer.
    pub async fn stats(&self) -> Vec<Value> {
        match self.eval_async("return await window.webconf.stats();").await {
            Value::Array(peers) => peers,
            other => panic!("{}: stats returned {other}", self.label),
        }
    }

    /// Waits until media flows from the one remote peer: at least 10 video
    /// frames decoded, 10 audio packets received, and the <video> sized.
    pub async fn wait_media(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = self.stats().await;
            let width = self
                .eval("const v = document.querySelector('.tile video'); return v ? v.videoWidth : 0")
                .await;
            if let [peer] = stats.as_slice() {
                let frames = peer["video"]["framesDecoded"].as_u64().unwrap_or(0);
                let packets = peer["audio"]["packetsReceived"].as_u64().unwrap_or(0);
                if frames >= 10 && packets >= 10 && width.as_u64().unwrap_or(0) > 0 {
                    return peer.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}: no media after 30 s: {stats:?}, videoWidth {width}",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The colour in the middle of the remote video, as [r, g, b].
    pub async fn remote_colour(&self) -> [u8; 3] {
        let v = self
            .eval(
                "const v = document.querySelector('.tile video');
                 const c = document.createElement('canvas');
                 c.width = v.videoWidth; c.height = v.videoHeight;
                 const g = c.getContext('2d');
                 g.drawImage(v, 0, 0);
                 const d = g.getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
                 return [d[0], d[1], d[2]];",
            )
            .await;
        let channel = |i: usize| v[i].as_u64().and_then(|x| u8::try_from(x).ok()).unwrap_or(0);
        [channel(0), channel(1), channel(2)]
    }

    pub async fn screenshot(&self, path: &Path) {
        let png =
            self.client.screenshot().await.unwrap_or_else(|e| panic!("{}: screenshot: {e}", self.label));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifacts dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    pub async fn quit(self) {
        let _ = self.client.close().await;
    }
}

/// Writes a solid-colour Y4M clip for Chromium's fake camera. `yuv` is the
/// BT.601 limited-range colour (e.g. red is [81, 90, 240]).
pub fn solid_y4m(path: &Path, yuv: [u8; 3]) {
    let (w, h) = (320usize, 240usize);
    let mut out = format!("YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n").into_bytes();
    for _ in 0..10 {
        out.extend_from_slice(b"FRAME\n");
        out.extend(std::iter::repeat_n(yuv[0], w * h));
        out.extend(std::iter::repeat_n(yuv[1], w * h / 4));
        out.extend(std::iter::repeat_n(yuv[2], w * h / 4));
    }
    std::fs::write(path, out).expect("write y4m");
}

/// Writes a Y4M clip of grey noise, `width` by `height`, for a fake camera
/// whose encoder cannot compress it: it sends at its bitrate limits, so
/// layers cost what they are allowed to.
pub fn noise_y4m(path: &Path, width: usize, height: usize) {
    let mut out = format!("YUV4MPEG2 W{width} H{height} F15:1 Ip A1:1 C420jpeg\n").into_bytes();
    let mut x: u32 = 0x2545_f491;
    for _ in 0..8 {
        out.extend_from_slice(b"FRAME\n");
        for _ in 0..width * height {
            // xorshift: cheap, and the same clip every run.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push(16 + (x % 220) as u8);
        }
        out.extend(std::iter::repeat_n(128u8, width * height / 2));
    }
    std::fs::write(path, out).expect("write y4m");
}

/// A fresh scratch directory for one test (profiles, clips).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("webconf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Where tests leave things for people to look at (not committed).
pub fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts")
}
