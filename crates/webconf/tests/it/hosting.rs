//! Issue 13 in browsers: a call started from the home page has a host,
//! who turns the lobby on, lets a Firefox guest in, mutes it (its audio
//! stops reaching the host: packets, not only an icon), asks it to
//! unmute, removes it, sets a password the guest must then give, and ends
//! the call for everyone. One Chromium host and one Firefox guest keep it
//! short; each visible state is saved to artifacts/ (English and Korean,
//! desktop and phone width).

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Browser, Driver, Webconf, artifacts, in_loopback_namespace, scratch, solid_y4m};

const BLUE: [u8; 3] = [41, 240, 110];

async fn shot(browser: &Browser, name: &str) {
    browser.screenshot(&artifacts().join(format!("hosting-{name}.png"))).await;
}

/// Audio packets the host has received from its one peer so far.
async fn audio_packets(browser: &Browser) -> u64 {
    let stats = browser.stats().await;
    stats.first().and_then(|p| p["audio"]["packetsReceived"].as_u64()).unwrap_or(0)
}

/// Waits until the page says `key` in its status line (its translation in
/// the current language is whatever `t` gives).
async fn wait_status(browser: &Browser, key: &str) {
    let script = format!("return window.webconf.metrics.statusLog.some(s => s.key === {key:?})");
    browser.wait_until(&format!("status {key}"), Duration::from_secs(10), &script).await;
}

async fn wait_text(browser: &Browser, css: &str, what: &str) -> Value {
    let script = format!(
        "const e = document.querySelector({css:?}); return e && !e.closest('[hidden]') && e.textContent"
    );
    browser.wait_until(what, Duration::from_secs(10), &script).await
}

#[tokio::test]
async fn a_host_runs_the_lobby_mutes_removes_and_ends_the_call_in_chromium_and_firefox() {
    if !in_loopback_namespace(
        "hosting::a_host_runs_the_lobby_mutes_removes_and_ends_the_call_in_chromium_and_firefox",
    ) {
        return;
    }
    let dir = scratch("hosting");
    let blue = dir.join("blue.y4m");
    solid_y4m(&blue, BLUE);
    let server = Webconf::start(&["--room-capacity", "4"]);
    let chromium = Driver::start();
    let firefox = Driver::firefox();
    let host = chromium.browser("host (Chromium)", &blue, &dir.join("profile-host")).await;
    let guest = firefox.browser("guest (Firefox)", &blue, &dir.join("profile-guest")).await;

    // The host starts a new call from the home page: it runs it.
    host.goto(&format!("{}/", server.base)).await;
    host.click("#start").await;
    host.wait_until("the room page", Duration::from_secs(10), "return location.pathname.startsWith('/r/')")
        .await;
    let room_url = host.eval("return location.href").await.as_str().expect("url").to_owned();
    host.join().await;
    host.wait_state("call").await;
    host.wait_until("the host role", Duration::from_secs(5), "return window.webconf.state.role === 'host'")
        .await;
    host.click("#people-toggle").await;
    host.click("#room-lobby").await;
    host.wait_until(
        "the lobby on",
        Duration::from_secs(5),
        "return window.webconf.state.settings.lobby === true",
    )
    .await;

    // The guest knocks, and sees that it waits.
    guest.goto(&room_url).await;
    guest.join().await;
    guest.wait_state("knocking").await;
    shot(&guest, "firefox-knocking").await;
    guest.set_lang("ko").await;
    shot(&guest, "firefox-knocking-ko").await;
    guest.set_lang("en").await;
    // The host sees it in the panel, and lets it in.
    wait_text(&host, "#people-waiting .person-name", "the knock in the host's panel").await;
    shot(&host, "chromium-lobby").await;
    host.click("#people-waiting button[data-action=admit]").await;
    guest.wait_state("call").await;
    let media = host.wait_media().await;
    println!("host gets the admitted guest's media: {media}");
    guest.wait_media().await;

    // The host mutes the guest: the guest's audio stops reaching the host.
    let menu = "#people-list li:nth-child(2) .person-menu summary";
    host.click(menu).await;
    shot(&host, "chromium-menu").await;
    host.click("#people-list li:nth-child(2) [data-action=mute]").await;
    wait_status(&guest, "host_muted_you").await;
    guest
        .wait_until(
            "the guest's microphone off",
            Duration::from_secs(5),
            "return document.getElementById('mic').getAttribute('aria-pressed') === 'false'",
        )
        .await;
    shot(&guest, "firefox-muted-by-host").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let muted_at = audio_packets(&host).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = audio_packets(&host).await;
    println!("guest audio packets at the host after the mute: {muted_at} then {later} 2 s later");
    assert!(later <= muted_at + 2, "the guest's audio stopped reaching the host: {muted_at} -> {later}");
    host.wait_until(
        "the guest shown muted",
        Duration::from_secs(10),
        "return document.querySelector('#people-list li:nth-child(2) .person-muted svg') !== null",
    )
    .await;
    // The guest cannot turn it back on until asked.
    guest.click("#mic").await;
    wait_status(&guest, "held_by_host").await;
    assert_eq!(guest.eval("return window.webconf.state.media.flags.audio").await, false);
    host.click(menu).await;
    host.click("#people-list li:nth-child(2) [data-action=ask-unmute]").await;
    wait_status(&guest, "host_asks_unmute").await;
    guest.click("#mic").await;
    host.wait_until(
        "the guest unmuted",
        Duration::from_secs(10),
        "return [...window.webconf.state.peers.values()].every(p => p.info.media.audio)",
    )
    .await;
    let resumed_at = audio_packets(&host).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let flowing = audio_packets(&host).await;
    assert!(flowing > resumed_at + 20, "after unmuting, the guest's audio flows: {resumed_at} -> {flowing}");

    // The panel in Korean, and at a phone's width.
    host.set_lang("ko").await;
    shot(&host, "chromium-panel-ko").await;
    host.client.set_window_size(390, 844).await.expect("resize host");
    shot(&host, "chromium-panel-ko-390").await;
    host.client.set_window_size(1280, 800).await.expect("resize host back");
    host.set_lang("en").await;

    // The host removes the guest: its page says so, its media stops.
    host.click(menu).await;
    host.click("#people-list li:nth-child(2) [data-action=remove]").await;
    guest.wait_state("ended").await;
    let title = guest.eval("return document.getElementById('ended-title').textContent").await;
    assert_eq!(title, "You were removed from the call.");
    shot(&guest, "firefox-removed").await;
    host.wait_until(
        "the guest gone",
        Duration::from_secs(10),
        "return window.webconf.state.peers.size === 0",
    )
    .await;

    // A password, and no lobby: the guest must give the password.
    host.click("#room-lobby").await;
    host.type_text("#room-password", "blue kettle").await;
    host.click("#room-password-form button[type=submit]").await;
    host.wait_until(
        "the password set",
        Duration::from_secs(5),
        "return window.webconf.state.settings.password === true && !window.webconf.state.settings.lobby",
    )
    .await;
    shot(&host, "chromium-access").await;
    // The lobby asks for the password before anyone tries (from `peek`).
    guest.goto(&room_url).await;
    guest
        .wait_until(
            "the password field",
            Duration::from_secs(10),
            "return !document.getElementById('password-row').hidden",
        )
        .await;
    guest.type_text("#join-password", "red kettle").await;
    guest.click("#join").await;
    wait_status(&guest, "password_wrong").await;
    shot(&guest, "firefox-password").await;
    guest.eval("document.getElementById('join-password').value = ''").await;
    guest.type_text("#join-password", "blue kettle").await;
    guest.click("#join").await;
    guest.wait_state("call").await;
    host.wait_media().await;

    // A locked call says so before any camera starts.
    host.click("#room-lock").await;
    guest
        .wait_until(
            "the lock heard",
            Duration::from_secs(5),
            "return window.webconf.state.settings.locked === true",
        )
        .await;
    let stranger = chromium.browser("stranger (Chromium)", &blue, &dir.join("profile-stranger")).await;
    stranger.goto(&room_url).await;
    stranger.wait_state("ended").await;
    let title = stranger.eval("return document.getElementById('ended-title').textContent").await;
    assert_eq!(title, "This call is locked.");
    let again = stranger.eval("return document.getElementById('rejoin').textContent").await;
    assert_eq!(again, "Try again");
    let live = stranger.eval("const m = window.webconf.state.media; return Boolean(m.mic || m.camera)").await;
    assert_eq!(live, false, "no camera or microphone for a locked call");
    shot(&stranger, "chromium-locked").await;
    stranger.set_lang("ko").await;
    stranger.wait_state("ended").await;
    shot(&stranger, "chromium-locked-ko").await;
    stranger.quit().await;
    host.click("#room-lock").await;
    host.wait_until(
        "the room unlocked",
        Duration::from_secs(5),
        "return window.webconf.state.settings.locked === false",
    )
    .await;

    // The host ends the call for everyone.
    host.click("#end-for-all").await;
    guest.wait_state("ended").await;
    let title = guest.eval("return document.getElementById('ended-title').textContent").await;
    assert_eq!(title, "A host ended the call.");
    host.wait_state("ended").await;
    let title = host.eval("return document.getElementById('ended-title').textContent").await;
    assert_eq!(title, "You ended the call for everyone.");
    shot(&guest, "firefox-ended").await;
    let live = guest.eval("const m = window.webconf.state.media; return Boolean(m.mic || m.camera)").await;
    assert_eq!(live, false, "the guest's camera and microphone are off after the call ended");
    host.quit().await;
    guest.quit().await;
}
