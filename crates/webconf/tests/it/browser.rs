//! End to end: headless Chromium with fake camera and microphone, through
//! the real webconf binary, in a loopback-only network namespace.

use std::time::{Duration, Instant};

use crate::harness::{Driver, Webconf, artifacts, in_loopback_namespace, scratch, solid_y4m};

const RED: [u8; 3] = [81, 90, 240];
const BLUE: [u8; 3] = [41, 240, 110];

fn is_red([r, g, b]: [u8; 3]) -> bool {
    r > 180 && g < 80 && b < 80
}

fn is_blue([r, g, b]: [u8; 3]) -> bool {
    b > 180 && r < 80 && g < 80
}

/// The foundation's promise, in one scenario: two browsers call each other
/// and each sees the other's camera (red one way, blue the other) and gets
/// its audio; a third is told the call is full while the call goes on;
/// hanging up reaches the other side.
#[tokio::test]
async fn two_browsers_call_a_third_is_turned_away_and_hang_up_is_seen() {
    if !in_loopback_namespace("browser::two_browsers_call_a_third_is_turned_away_and_hang_up_is_seen") {
        return;
    }
    let dir = scratch("call");
    let (red, blue) = (dir.join("red.y4m"), dir.join("blue.y4m"));
    solid_y4m(&red, RED);
    solid_y4m(&blue, BLUE);
    let server = Webconf::start(&[]);
    let driver = Driver::start();
    let room_url = format!("{}/r/E2E-Room", server.base);

    let a = driver.browser("A", &red, &dir.join("profile-a")).await;
    let b = driver.browser("B", &blue, &dir.join("profile-b")).await;

    a.goto(&room_url).await;
    a.join().await;
    a.wait_state("call").await;
    a.wait_until(
        "the waiting panel",
        Duration::from_secs(5),
        "return !document.getElementById('waiting').hidden",
    )
    .await;

    let b_loaded = Instant::now();
    b.goto(&room_url).await;
    b.join().await;
    b.wait_state("call").await;

    let a_stats = a.wait_media().await;
    let b_stats = b.wait_media().await;
    let b_first_frame = b_loaded.elapsed();
    println!("A receives: {a_stats}");
    println!("B receives: {b_stats}");
    assert_eq!(a_stats["connection"], "connected");
    assert_eq!(b_stats["pair"]["local"], "host", "one machine: a direct host pair");

    // Direction: each side sees the other's colour.
    let (seen_by_a, seen_by_b) = (a.remote_colour().await, b.remote_colour().await);
    assert!(is_blue(seen_by_a), "A should see B's blue camera, saw {seen_by_a:?}");
    assert!(is_red(seen_by_b), "B should see A's red camera, saw {seen_by_b:?}");

    // The page's own clock: navigation start to the first remote frame.
    let b_metric = b.eval("return window.webconf.metrics.firstRemoteFrame").await;
    println!(
        "timing: B page load to first remote frame {b_metric} ms (page clock); {:.0} ms until both had 10 frames",
        b_first_frame.as_secs_f64() * 1000.0
    );
    a.screenshot(&artifacts().join("call-a.png")).await;
    b.screenshot(&artifacts().join("call-b.png")).await;

    // A third browser is told the call is full; the call goes on.
    let c = driver.browser("C", &red, &dir.join("profile-c")).await;
    c.goto(&room_url).await;
    c.join().await;
    c.wait_state("full").await;
    let full_text = c.eval("return document.getElementById('full').innerText").await;
    assert!(full_text.as_str().is_some_and(|t| t.contains("full") || t.contains("가득")), "{full_text}");
    c.screenshot(&artifacts().join("call-full.png")).await;
    let before = a_stats["video"]["framesDecoded"].as_u64().unwrap_or(0);
    let still = a.wait_media().await;
    assert!(still["video"]["framesDecoded"].as_u64().unwrap_or(0) > before);
    assert_eq!(a.stats().await.len(), 1, "A still has exactly one peer");
    assert_eq!(b.stats().await.len(), 1, "B still has exactly one peer");
    c.quit().await;

    // A hangs up: B sees it and waits; A sees that it left.
    a.click("#hangup").await;
    a.wait_state("ended").await;
    b.wait_until("B to see A leave", Duration::from_secs(10), "return document.body.dataset.peers === '0'")
        .await;
    let status = b.eval("return document.getElementById('status').textContent").await;
    assert!(status.as_str().is_some_and(|s| s.contains("left") || s.contains("나갔")), "{status}");
    b.wait_until(
        "the waiting panel",
        Duration::from_secs(5),
        "return !document.getElementById('waiting').hidden",
    )
    .await;
    let camera_off =
        a.eval("return window.webconf.state.local.getTracks().every(t => t.readyState === 'ended')").await;
    assert_eq!(camera_off, true, "hanging up turns the camera off");

    a.quit().await;
    b.quit().await;
    let _ = std::fs::remove_dir_all(&dir);
}
