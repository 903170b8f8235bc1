//! The NAT matrix: two Chromiums at two sites behind NAT routers (see
//! `netlab`), calling each other through webconf on the lab's internet, for
//! each kind of network that breaks calls in practice. Each case proves
//! media both ways and the kind of path ICE chose.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Driver, Webconf, in_loopback_namespace, scratch, solid_y4m};
use crate::netlab::{Lab, Nat, SERVER_IP};

const RED: [u8; 3] = [81, 90, 240];
const BLUE: [u8; 3] = [41, 240, 110];

/// One side's selected candidate pair: local type, remote type, and how
/// it reaches its TURN server when its local candidate is a relay.
#[derive(Debug)]
struct Path {
    local: String,
    remote: String,
    relay_protocol: Option<String>,
}

impl Path {
    fn of(stats: &Value) -> Path {
        let p = &stats["pair"];
        let s = |v: &Value| v.as_str().unwrap_or("none").to_owned();
        Path {
            local: s(&p["local"]),
            remote: s(&p["remote"]),
            relay_protocol: p["relayProtocol"].as_str().map(str::to_owned),
        }
    }

    fn relayed(&self) -> bool {
        self.local == "relay"
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.local, self.remote)?;
        if let Some(proto) = &self.relay_protocol {
            write!(f, " (TURN over {proto})")?;
        }
        Ok(())
    }
}

/// A case's expectation of both sides' paths.
type Expect = fn(&Path, &Path) -> bool;

/// Sets up `sites` (one host each, or two hosts at one site when `same_lan`),
/// starts webconf with `server_args`, calls, and checks the paths.
async fn call_across(
    case: &str,
    sites: &[Nat],
    same_lan: bool,
    server_args: &[&str],
    relay_only: bool,
    expect: Expect,
) {
    let with_coturn = server_args.iter().any(|a| a.contains(":3479"));
    let dir = scratch(case);
    let (red, blue) = (dir.join("red.y4m"), dir.join("blue.y4m"));
    solid_y4m(&red, RED);
    solid_y4m(&blue, BLUE);
    let mut lab = Lab::new();
    let mut drivers = Vec::new();
    if same_lan {
        lab.add_site(sites[0], 2);
        let site = &lab.sites[0];
        drivers.push(Driver::in_host(&site.hosts[0], &site.driver_url(0)));
        drivers.push(Driver::in_host(&site.hosts[1], &site.driver_url(1)));
    } else {
        for nat in sites {
            lab.add_site(*nat, 1);
        }
        for site in &lab.sites {
            drivers.push(Driver::in_host(&site.hosts[0], &site.driver_url(0)));
        }
    }
    let _coturn = with_coturn.then(coturn);
    let listen = format!("{SERVER_IP}:8443");
    let mut args = vec!["--tls", "self-signed"];
    args.extend_from_slice(server_args);
    let server = Webconf::start_on(&listen, &args);
    let room = format!("{}/r/{case}", server.base);
    let a = drivers[0].browser("A", &red, &dir.join("profile-a")).await;
    let b = drivers[1].browser("B", &blue, &dir.join("profile-b")).await;
    for browser in [&a, &b] {
        browser.goto(&room).await;
        if relay_only {
            browser
                .wait_until(
                    "the lobby",
                    Duration::from_secs(15),
                    "return document.getElementById('relay-only')",
                )
                .await;
            browser.click("#relay-only").await;
        }
        browser.join().await;
        browser.wait_state("call").await;
    }
    let a_stats = a.wait_media().await;
    let b_stats = b.wait_media().await;
    // B joins second: from its join to its first frame of A is the call's
    // set-up time, ICE included.
    let b_ms =
        b.eval("const m = window.webconf.metrics; return Math.round(m.firstRemoteFrame - m.joinedAt)").await;
    // ICE may start on the first pair that works (often the relay) and move
    // to a better one as checks succeed: give it time to settle.
    let settle = std::time::Instant::now();
    let (mut a_path, mut b_path) = (Path::of(&a_stats), Path::of(&b_stats));
    while !expect(&a_path, &b_path) && settle.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        a_path = Path::of(&a.stats().await[0]);
        b_path = Path::of(&b.stats().await[0]);
    }
    println!(
        "nat: {case}: A {a_path}; B {b_path}; join to first frame {b_ms} ms; path settled after {} ms",
        settle.elapsed().as_millis()
    );
    assert!(expect(&a_path, &b_path), "{case}: unexpected paths: A {a_path}, B {b_path}");
    let (seen_by_a, seen_by_b) = (a.remote_colour().await, b.remote_colour().await);
    assert!(seen_by_a[2] > 180 && seen_by_a[0] < 80, "{case}: A sees B's blue, saw {seen_by_a:?}");
    assert!(seen_by_b[0] > 180 && seen_by_b[2] < 80, "{case}: B sees A's red, saw {seen_by_b:?}");
    a.quit().await;
    b.quit().await;
    drop(server);
    drop(drivers);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn nat_1_same_network_uses_host_candidates() {
    if !in_loopback_namespace("nat::nat_1_same_network_uses_host_candidates") {
        return;
    }
    let host_pair = |a: &Path, b: &Path| [a, b].iter().all(|p| p.local == "host" && p.remote == "host");
    call_across("same-lan", &[Nat::Cone], true, &[], false, host_pair).await;
}

#[tokio::test]
async fn nat_2_cone_nats_connect_directly_with_stun() {
    if !in_loopback_namespace("nat::nat_2_cone_nats_connect_directly_with_stun") {
        return;
    }
    // Direct: nobody relayed, and someone reached the other's NAT mapping
    // (learned by STUN, or found during the checks).
    let direct = |a: &Path, b: &Path| {
        !a.relayed() && !b.relayed() && [a, b].iter().any(|p| matches!(p.remote.as_str(), "srflx" | "prflx"))
    };
    call_across("cone", &[Nat::Cone, Nat::Cone], false, &[], false, direct).await;
}

#[tokio::test]
async fn nat_3_symmetric_nats_need_and_get_turn() {
    if !in_loopback_namespace("nat::nat_3_symmetric_nats_need_and_get_turn") {
        return;
    }
    let relayed =
        |a: &Path, b: &Path| (a.relayed() || b.relayed()) && !(a.local == "host" && a.remote == "host");
    call_across("symmetric", &[Nat::Symmetric, Nat::Symmetric], false, &[], false, relayed).await;
}

#[tokio::test]
async fn nat_4_without_udp_turn_over_tcp_carries_the_call() {
    if !in_loopback_namespace("nat::nat_4_without_udp_turn_over_tcp_carries_the_call") {
        return;
    }
    let over_tcp =
        |a: &Path, b: &Path| [a, b].iter().all(|p| p.relayed() && p.relay_protocol.as_deref() == Some("tcp"));
    call_across("udp-blocked", &[Nat::UdpBlocked, Nat::UdpBlocked], false, &[], false, over_tcp).await;
}

#[tokio::test]
async fn nat_5_relay_only_policy_relays_everything() {
    if !in_loopback_namespace("nat::nat_5_relay_only_policy_relays_everything") {
        return;
    }
    let all_relayed = |a: &Path, b: &Path| {
        [a, b]
            .iter()
            .all(|p| p.relayed() && p.remote == "relay" && p.relay_protocol.as_deref() == Some("udp"))
    };
    call_across("relay-only", &[Nat::Cone, Nat::Cone], false, &[], true, all_relayed).await;
}

/// Case 3 again with Debian's coturn as the TURN server, webconf only
/// handing out credentials in the same REST scheme.
#[tokio::test]
async fn nat_3_symmetric_nats_through_coturn() {
    if !in_loopback_namespace("nat::nat_3_symmetric_nats_through_coturn") {
        return;
    }
    let external = format!(
        "stun:{SERVER_IP}:3479,turn:{SERVER_IP}:3479?transport=udp,turn:{SERVER_IP}:3479?transport=tcp"
    );
    let args = ["--turn-external", external.as_str(), "--turn-secret", "coturn-test-secret"];
    let relayed =
        |a: &Path, b: &Path| (a.relayed() || b.relayed()) && !(a.local == "host" && a.remote == "host");
    call_across("symmetric-coturn", &[Nat::Symmetric, Nat::Symmetric], false, &args, false, relayed).await;
}

/// Debian's coturn on the lab's internet, port 3479, checking REST
/// credentials with the given secret; started once the lab's addresses
/// exist (it binds them).
fn coturn() -> crate::harness::Reaped {
    let child = std::process::Command::new("turnserver")
        .args([
            "-c",
            "/dev/null",
            "--listening-ip",
            SERVER_IP,
            "--relay-ip",
            SERVER_IP,
            "--listening-port",
            "3479",
            "--use-auth-secret",
            "--static-auth-secret",
            "coturn-test-secret",
            "--realm",
            "webconf",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--min-port",
            "50000",
            "--max-port",
            "50999",
            "--log-file",
            "stdout",
            "--simple-log",
            "--pidfile",
            "",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start coturn (apt-get install coturn)");
    crate::harness::Reaped(child)
}

/// Opens /diagnose in a browser behind a cone NAT, with webconf started
/// with `server_args`; returns each check's outcome and the verdict key.
async fn diagnose(case: &str, server_args: &[&str]) -> (Value, String) {
    let dir = scratch(case);
    let red = dir.join("red.y4m");
    solid_y4m(&red, RED);
    let mut lab = Lab::new();
    lab.add_site(Nat::Cone, 1);
    let site = &lab.sites[0];
    let driver = Driver::in_host(&site.hosts[0], &site.driver_url(0));
    let listen = format!("{SERVER_IP}:8443");
    let mut args = vec!["--tls", "self-signed"];
    args.extend_from_slice(server_args);
    let server = Webconf::start_on(&listen, &args);
    let browser = driver.browser("D", &red, &dir.join("profile")).await;
    browser.goto(&format!("{}/diagnose", server.base)).await;
    browser
        .wait_until("the verdict", Duration::from_secs(40), "return document.body.dataset.state === 'done'")
        .await;
    let outcomes = browser
        .eval("return Object.fromEntries([...window.webconf.results.values()].map(r => [r.id, [r.outcome, r.detail]]))")
        .await;
    let verdict = browser.eval("return document.getElementById('verdict').dataset.key").await;
    let text = browser.eval("return document.getElementById('verdict').textContent").await;
    println!("diagnose: {case}: {outcomes}\ndiagnose: {case}: verdict {text}");
    browser.screenshot(&crate::harness::artifacts().join(format!("diagnose-{case}.png"))).await;
    browser.quit().await;
    drop(server);
    drop(driver);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
    (outcomes, verdict.as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn diagnose_says_calls_will_work_when_everything_is_reachable() {
    if !in_loopback_namespace("nat::diagnose_says_calls_will_work_when_everything_is_reachable") {
        return;
    }
    let (outcomes, verdict) = diagnose("working", &[]).await;
    for check in ["camera", "mic", "websocket", "stun", "turn_udp", "turn_tcp"] {
        assert_eq!(outcomes[check][0], "pass", "{check}: {outcomes}");
    }
    assert!(
        outcomes["stun"][1].as_str().is_some_and(|d| d.contains("203.0.113.11")),
        "the NAT's address: {outcomes}"
    );
    assert_eq!(verdict, "diag_verdict_work");
}

#[tokio::test]
async fn diagnose_says_calls_will_fail_across_networks_when_turn_is_down() {
    if !in_loopback_namespace("nat::diagnose_says_calls_will_fail_across_networks_when_turn_is_down") {
        return;
    }
    // Point browsers at STUN/TURN servers that are not there.
    let dead =
        format!("stun:{SERVER_IP}:9,turn:{SERVER_IP}:9?transport=udp,turn:{SERVER_IP}:9?transport=tcp");
    let (outcomes, verdict) = diagnose("turn-down", &["--turn-external", &dead, "--turn-secret", "x"]).await;
    assert_eq!(outcomes["websocket"][0], "pass", "{outcomes}");
    assert_eq!(outcomes["stun"][0], "warn", "{outcomes}");
    assert_eq!(outcomes["turn_udp"][0], "fail", "{outcomes}");
    assert_eq!(outcomes["turn_tcp"][0], "fail", "{outcomes}");
    assert_eq!(verdict, "diag_verdict_lan");
}
