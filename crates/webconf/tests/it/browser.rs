//! End to end: headless Chromium with fake camera and microphone, through
//! the real webconf binary, in a loopback-only network namespace.

use std::time::{Duration, Instant};

use crate::harness::{Browser, Driver, Webconf, artifacts, in_loopback_namespace, nft, scratch, solid_y4m};

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
    let server = Webconf::start(&["--room-capacity", "2"]);
    let driver = Driver::start();
    let room_url = format!("{}/r/E2E-Room", server.base);

    let a = driver.browser("A", &red, &dir.join("profile-a")).await;
    let b = driver.browser("B", &blue, &dir.join("profile-b")).await;

    // The home page's "start a call" makes an unguessable room and goes there.
    a.goto(&format!("{}/", server.base)).await;
    a.screenshot(&artifacts().join("home.png")).await;
    a.click("#start").await;
    let started = a
        .wait_until(
            "a new room",
            Duration::from_secs(10),
            "return location.pathname.startsWith('/r/') && location.pathname",
        )
        .await;
    let name = started.as_str().unwrap_or_default().trim_start_matches("/r/").to_owned();
    assert!(
        name.len() >= 16 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "{name}"
    );

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
        a.eval("const m = window.webconf.state.media; return !m.camera && !m.mic && !m.screen").await;
    assert_eq!(camera_off, true, "hanging up turns the camera off");

    a.quit().await;
    b.quit().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 3's features between two real browsers: chat (markup stays text),
/// mute (audio packets stop, the other side shows it), camera off (a
/// placeholder, not a frozen frame), screen share (the other side decodes a
/// new resolution), the quality panel, the shortcut help, and both languages.
#[tokio::test]
async fn chat_mute_camera_screen_quality_and_languages_work_between_browsers() {
    if !in_loopback_namespace("browser::chat_mute_camera_screen_quality_and_languages_work_between_browsers")
    {
        return;
    }
    let dir = scratch("features");
    let (red, blue) = (dir.join("red.y4m"), dir.join("blue.y4m"));
    solid_y4m(&red, RED);
    solid_y4m(&blue, BLUE);
    let server = Webconf::start(&[]);
    let driver = Driver::start();
    let room_url = format!("{}/r/features", server.base);
    let a = driver.browser("A", &red, &dir.join("profile-a")).await;
    let b = driver.browser("B", &blue, &dir.join("profile-b")).await;
    // The lobby in each language, for people to look at.
    a.goto(&room_url).await;
    a.wait_until(
        "the Join button",
        Duration::from_secs(15),
        "return !document.getElementById('join').disabled",
    )
    .await;
    a.screenshot(&artifacts().join("lobby-en.png")).await;
    set_lang(&a, "ko").await;
    assert_eq!(a.eval("return document.getElementById('join').textContent").await, "참여");
    a.screenshot(&artifacts().join("lobby-ko.png")).await;
    set_lang(&a, "en").await;
    for browser in [&a, &b] {
        if browser.label == "B" {
            browser.goto(&room_url).await;
        }
        browser.join().await;
        browser.wait_state("call").await;
    }
    a.wait_media().await;
    b.wait_media().await;

    // Chat: typed in A, shown in B as text, never as markup.
    let evil = "<img src=x onerror=\"window.pwned=1\"><b>bold</b> & 안녕";
    a.click("#chat-toggle").await;
    a.type_text("#chat-input", &format!("{evil}\u{E007}")).await;
    b.wait_until(
        "B's unread badge",
        Duration::from_secs(5),
        "return document.getElementById('chat-unread').textContent === '1'",
    )
    .await;
    b.click("#chat-toggle").await;
    let shown =
        b.eval("return document.querySelector('#chat-log li:last-child .chat-text').textContent").await;
    assert_eq!(shown.as_str(), Some(evil));
    let injected = b
        .eval("return [document.querySelectorAll('#chat-log b, #chat-log img').length, window.pwned ?? null]")
        .await;
    assert_eq!(injected, serde_json::json!([0, null]), "chat text must never become markup");
    let own = a.eval("return document.querySelector('#chat-log li:last-child').className").await;
    assert_eq!(own, "mine");

    // Mute: B stops receiving A's audio packets and shows A muted.
    a.click("#mic").await;
    b.wait_until(
        "A shown muted",
        Duration::from_secs(5),
        "return document.querySelector('.tile').classList.contains('audio-off')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = audio_packets(&b).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = audio_packets(&b).await;
    assert!(after - before <= 2, "muted audio still flows: {before} -> {after}");
    assert_eq!(a.eval("return document.getElementById('mic').getAttribute('aria-pressed')").await, "false");
    a.click("#mic").await;
    b.wait_until(
        "A unmuted",
        Duration::from_secs(5),
        "return !document.querySelector('.tile').classList.contains('audio-off')",
    )
    .await;
    let resumed = audio_packets(&b).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(audio_packets(&b).await > resumed + 10, "audio flows again after unmute");

    // Camera off: B shows a placeholder (not a frozen frame); A's camera is
    // released.
    a.click("#camera").await;
    b.wait_until(
        "B's placeholder for A",
        Duration::from_secs(5),
        "const t = document.querySelector('.tile'); return t.classList.contains('video-off') && getComputedStyle(t.querySelector('.placeholder')).display !== 'none'",
    )
    .await;
    assert_eq!(a.eval("return window.webconf.state.media.camera === null").await, true, "camera released");
    b.screenshot(&artifacts().join("camera-off-seen-by-b.png")).await;
    a.click("#camera").await;
    b.wait_until(
        "A's video back",
        Duration::from_secs(10),
        "return !document.querySelector('.tile').classList.contains('video-off')",
    )
    .await;
    let frames = b.stats().await[0]["video"]["framesDecoded"].as_u64().unwrap_or(0);
    b.wait_until(
        "frames after camera on",
        Duration::from_secs(10),
        &format!("return window.webconf.stats().then(s => s[0].video.framesDecoded > {frames} + 10)"),
    )
    .await;

    // Screen share replaces the camera: B decodes another resolution.
    let width_before = b.stats().await[0]["video"]["frameWidth"].as_u64().unwrap_or(0);
    assert_eq!(width_before, 320, "the fake camera is 320 wide");
    a.click("#screen").await;
    let shared = b
        .wait_until(
            "B decoding A's screen",
            Duration::from_secs(15),
            "return window.webconf.stats().then(s => s[0].video.frameWidth !== 320 && s[0].video.frameWidth)",
        )
        .await;
    println!("screen share: B decodes width {shared} (camera was {width_before})");
    assert_eq!(a.eval("return document.getElementById('screen').getAttribute('aria-pressed')").await, "true");
    b.wait_until(
        "B sees A sharing",
        Duration::from_secs(5),
        "return document.querySelector('.tile').classList.contains('screen')",
    )
    .await;
    // Stopping from the browser's own bar ends the track; we fall back.
    a.eval("window.webconf.state.media.screen.stop(); window.webconf.state.media.screen.dispatchEvent(new Event('ended'))")
        .await;
    b.wait_until(
        "B back to A's camera",
        Duration::from_secs(15),
        "return window.webconf.stats().then(s => s[0].video.frameWidth === 320)",
    )
    .await;
    assert!(is_red(b.remote_colour().await));

    // Switching the camera from the settings (to the next one, or the same
    // one reopened when there is one) replaces the track in place: a new
    // track on the sender, no new offer, and B keeps decoding.
    let before = a.stats().await[0].clone();
    a.click("#settings").await;
    let cameras = a
        .wait_until(
            "the camera list",
            Duration::from_secs(5),
            "const s = document.getElementById('camera-select'); return s.options.length",
        )
        .await;
    println!("devices: {cameras} cameras offered");
    a.eval(
        "const s = document.getElementById('camera-select'); \
         s.selectedIndex = (s.selectedIndex + 1) % s.options.length; s.dispatchEvent(new Event('change'))",
    )
    .await;
    a.wait_until(
        "the new camera track on the sender",
        Duration::from_secs(10),
        &format!(
            "return window.webconf.stats().then(s => JSON.stringify(s[0].sending) !== {:?})",
            before["sending"].to_string()
        ),
    )
    .await;
    a.type_text("#settings-dialog button.primary", "\u{E007}").await;
    let after = a.stats().await[0].clone();
    assert_eq!(after["offers"], before["offers"], "a device switch needs no renegotiation");
    let frames = b.stats().await[0]["video"]["framesDecoded"].as_u64().unwrap_or(0);
    b.wait_until(
        "B's frames after the camera switch",
        Duration::from_secs(10),
        &format!("return window.webconf.stats().then(s => s[0].video.framesDecoded > {frames} + 10)"),
    )
    .await;

    // Every control has a name a screen reader can say.
    let unnamed = a
        .eval(
            "return [...document.querySelectorAll('button, select, input, textarea')]
               .filter(e => !e.closest('[hidden]') && !(e.getAttribute('aria-label') || e.textContent.trim() || e.labels?.length))
               .map(e => e.id || e.outerHTML.slice(0, 60))",
        )
        .await;
    assert_eq!(unnamed, serde_json::json!([]), "controls without an accessible name");

    // The quality panel reads real numbers.
    a.click("#quality-toggle").await;
    let panel = a
        .wait_until(
            "quality numbers",
            Duration::from_secs(5),
            "const t = document.getElementById('quality-body').innerText; return /\\n[1-9][0-9]* kbit\\/s/.test(t) && t.includes('host/host') && t",
        )
        .await;
    println!("quality panel: {panel}");

    // Shortcut help, then each language, looked at by people via artifacts.
    a.eval("document.activeElement.blur()").await;
    a.type_text("body", "?").await;
    a.wait_until(
        "the help dialog",
        Duration::from_secs(5),
        "return document.getElementById('help-dialog').open",
    )
    .await;
    a.screenshot(&artifacts().join("help-en.png")).await;
    a.type_text("body", "\u{E00C}").await;
    a.wait_until(
        "help closed",
        Duration::from_secs(5),
        "return !document.getElementById('help-dialog').open",
    )
    .await;
    set_lang(&a, "ko").await;
    let hang_up = a.eval("return document.getElementById('hangup').textContent").await;
    assert_eq!(hang_up, "통화 종료");
    assert_eq!(a.eval("return document.documentElement.lang").await, "ko");
    a.screenshot(&artifacts().join("call-ko.png")).await;
    set_lang(&a, "en").await;
    assert_eq!(a.eval("return document.getElementById('hangup').textContent").await, "Hang up");
    a.screenshot(&artifacts().join("call-en.png")).await;

    a.quit().await;
    b.quit().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Switches the page's language the way a person does, with the selector.
async fn set_lang(browser: &Browser, lang: &str) {
    let script = format!(
        "const s = document.querySelector('select.lang'); s.value = {lang:?}; s.dispatchEvent(new Event('change'))"
    );
    browser.eval(&script).await;
}

async fn audio_packets(browser: &Browser) -> i64 {
    browser.stats().await[0]["audio"]["packetsReceived"].as_i64().unwrap_or(0)
}

/// Signaling goes away and comes back (the server is killed and started
/// again on the same port and state), then the network path breaks (all UDP
/// dropped for a while): the call comes back both times, with the same
/// peer connections.
#[tokio::test]
async fn calls_survive_a_server_restart_and_recover_by_ice_restart() {
    if !in_loopback_namespace("browser::calls_survive_a_server_restart_and_recover_by_ice_restart") {
        return;
    }
    let dir = scratch("restart");
    let (red, blue) = (dir.join("red.y4m"), dir.join("blue.y4m"));
    solid_y4m(&red, RED);
    solid_y4m(&blue, BLUE);
    let state_dir = dir.join("state");
    let state_arg = state_dir.to_str().expect("utf-8 path").to_owned();
    let server = Webconf::start(&["--state-dir", &state_arg]);
    let listen = server.base.trim_start_matches("http://").to_owned();
    let driver = Driver::start();
    let room_url = format!("{}/r/restart", server.base);
    let a = driver.browser("A", &red, &dir.join("profile-a")).await;
    let b = driver.browser("B", &blue, &dir.join("profile-b")).await;
    for browser in [&a, &b] {
        browser.goto(&room_url).await;
        browser.join().await;
        browser.wait_state("call").await;
    }
    a.wait_media().await;
    b.wait_media().await;
    let sessions = (a.stats().await[0]["session"].clone(), b.stats().await[0]["session"].clone());

    // Kill the server mid-call and start it again.
    let killed = Instant::now();
    drop(server);
    for browser in [&a, &b] {
        browser
            .wait_until(
                "the reconnecting banner",
                Duration::from_secs(10),
                "return !document.getElementById('connection-banner').hidden",
            )
            .await;
    }
    a.screenshot(&artifacts().join("reconnecting.png")).await;
    let _server = Webconf::start_on(&listen, &["--state-dir", &state_arg]);
    let rejoined = "const r = window.webconf.metrics.reconnects.at(-1); return Boolean(r && r.rejoined)";
    for browser in [&a, &b] {
        browser.wait_until("rejoined after the restart", Duration::from_secs(10), rejoined).await;
    }
    let back = killed.elapsed();
    let frames_a = a.stats().await[0]["video"]["framesDecoded"].as_u64().unwrap_or(0);
    let frames_b = b.stats().await[0]["video"]["framesDecoded"].as_u64().unwrap_or(0);
    let more = |n: u64| {
        format!(
            "return window.webconf.stats().then(s => s.length === 1 && s[0].video.framesDecoded > {n} + 10)"
        )
    };
    a.wait_until("A's frames after the restart", Duration::from_secs(10), &more(frames_a)).await;
    b.wait_until("B's frames after the restart", Duration::from_secs(10), &more(frames_b)).await;
    let flowing = killed.elapsed();
    println!(
        "timing: server killed -> both rejoined {:.0} ms, media confirmed flowing {:.0} ms",
        back.as_secs_f64() * 1000.0,
        flowing.as_secs_f64() * 1000.0
    );
    assert!(flowing < Duration::from_secs(10), "took {flowing:?}");
    assert_eq!(a.stats().await[0]["session"], sessions.0, "A kept its peer connection");
    assert_eq!(b.stats().await[0]["session"], sessions.1, "B kept its peer connection");
    // Signaling works again: a chat message crosses.
    a.click("#chat-toggle").await;
    a.type_text("#chat-input", "after the restart\u{E007}").await;
    b.wait_until(
        "the chat message after the restart",
        Duration::from_secs(5),
        "return [...document.querySelectorAll('#chat-log .chat-text')].some(p => p.textContent === 'after the restart')",
    )
    .await;

    // Break the network path: every UDP packet dropped. ICE notices, the
    // clients restart it; once packets flow again the restart completes.
    let ufrag = a.stats().await[0]["ufrag"].clone();
    nft("add table inet webconf_test");
    nft("add chain inet webconf_test input { type filter hook input priority 0 ; }");
    nft("add rule inet webconf_test input meta l4proto udp drop");
    let broke = Instant::now();
    let restarted = "return window.webconf.stats().then(s => s[0].iceRestarts > 0)";
    a.wait_until("A to restart ICE", Duration::from_secs(30), restarted).await;
    nft("delete table inet webconf_test");
    let connected_again = format!(
        "return window.webconf.stats().then(s => s[0].connection === 'connected' && s[0].ufrag !== {ufrag})"
    );
    a.wait_until("A connected with new ICE credentials", Duration::from_secs(30), &connected_again).await;
    let frames = b.stats().await[0]["video"]["framesDecoded"].as_u64().unwrap_or(0);
    b.wait_until("B's frames after the ICE restart", Duration::from_secs(15), &more(frames)).await;
    let frames = a.stats().await[0]["video"]["framesDecoded"].as_u64().unwrap_or(0);
    a.wait_until("A's frames after the ICE restart", Duration::from_secs(15), &more(frames)).await;
    println!(
        "timing: UDP dropped -> recovered by ICE restart {:.0} ms (UDP blocked until the first restart)",
        broke.elapsed().as_secs_f64() * 1000.0
    );
    assert!(is_blue(a.remote_colour().await) && is_red(b.remote_colour().await));

    a.quit().await;
    b.quit().await;
    let _ = std::fs::remove_dir_all(&dir);
}
