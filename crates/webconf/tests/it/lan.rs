//! Calls across a LAN with no way out (issue 14): webconf on `0.0.0.0` with
//! `--tls self-signed` on a machine with no default route, and two Chromiums
//! on other machines of the LAN (see `netlab::Lan`).

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio_rustls::client::TlsStream;

use crate::harness::{Driver, Webconf, artifacts, in_loopback_namespace, scratch, solid_y4m};
use crate::netlab::{LAN_SERVER_IP, Lan};
use crate::support::Client;

const RED: [u8; 3] = [81, 90, 240];
const BLUE: [u8; 3] = [41, 240, 110];
const PORT: u16 = 8443;

/// What a person on the LAN meets: the certificate names the address they
/// typed (and the host name) and keeps its fingerprint across a restart;
/// `http://` on the HTTPS port lands on `https://`; STUN/TURN URLs name the
/// address each browser reached (not `127.0.0.1`, the only address a
/// machine without a default route finds for itself); and a call with
/// everything relayed ("hide my IP address") works.
#[tokio::test]
async fn a_lan_without_a_way_out_gets_a_kept_named_certificate_working_ice_servers_and_redirects() {
    if !in_loopback_namespace(
        "lan::a_lan_without_a_way_out_gets_a_kept_named_certificate_working_ice_servers_and_redirects",
    ) {
        return;
    }
    let dir = scratch("lan");
    let (red, blue) = (dir.join("red.y4m"), dir.join("blue.y4m"));
    solid_y4m(&red, RED);
    solid_y4m(&blue, BLUE);
    let lan = Lan::new(2);
    let state = dir.join("state");
    let state_arg = state.to_str().expect("utf-8 path").to_owned();
    let args = ["--tls", "self-signed", "--state-dir", &state_arg];
    let listen = format!("0.0.0.0:{PORT}");
    let server = Webconf::start_on(&listen, &args);

    // The certificate, kept in the state directory, names the LAN address
    // and the host name: a client that trusts exactly it and checks names
    // as browsers do accepts the server under both.
    let served = certificate_served(&state, LAN_SERVER_IP).await;
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim();
    if ServerName::try_from(host.to_owned()).is_ok_and(|n| matches!(n, ServerName::DnsName(_))) {
        let mut tls = connect_tls(&state, LAN_SERVER_IP, host).await;
        get(&mut tls, "/healthz").await;
    }

    // Each connection is told the address it reached.
    let lan_urls = ice_urls(&state, LAN_SERVER_IP).await;
    let loopback_urls = ice_urls(&state, "127.0.0.1").await;
    println!("lan: ice servers via the LAN {lan_urls:?}, via loopback {loopback_urls:?}");
    assert_eq!(
        lan_urls,
        [
            format!("stun:{LAN_SERVER_IP}:3478"),
            format!("turn:{LAN_SERVER_IP}:3478?transport=udp"),
            format!("turn:{LAN_SERVER_IP}:3478?transport=tcp")
        ]
    );
    assert!(loopback_urls.iter().all(|u| u.contains("127.0.0.1:3478")), "{loopback_urls:?}");

    // Plain HTTP on the HTTPS port: a redirect there.
    let addr = format!("{LAN_SERVER_IP}:{PORT}").parse().expect("address");
    let response = crate::support::raw_http(
        addr,
        &format!("GET /r/lan HTTP/1.1\r\nHost: {LAN_SERVER_IP}:{PORT}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains(&format!("location: https://{LAN_SERVER_IP}:{PORT}/r/lan")),
        "{response}"
    );

    // Two machines of the LAN, each typing http://, land on the HTTPS page
    // and call with everything relayed through the server.
    let drivers: Vec<Driver> =
        (0..2).map(|j| Driver::in_host_for(&lan.hosts[j], &Lan::driver_url(j), LAN_SERVER_IP)).collect();
    let a = drivers[0].browser("A", &red, &dir.join("profile-a")).await;
    let b = drivers[1].browser("B", &blue, &dir.join("profile-b")).await;
    for browser in [&a, &b] {
        browser.goto(&format!("http://{LAN_SERVER_IP}:{PORT}/r/lan")).await;
        let landed = browser
            .wait_until(
                "the HTTPS page",
                Duration::from_secs(15),
                "return location.protocol === 'https:' && location.href",
            )
            .await;
        assert_eq!(landed, format!("https://{LAN_SERVER_IP}:{PORT}/r/lan"));
        browser
            .wait_until("the lobby", Duration::from_secs(15), "return document.getElementById('relay-only')")
            .await;
        browser.click("#relay-only").await;
        browser.join().await;
        browser.wait_state("call").await;
    }
    let a_stats = a.wait_media().await;
    let b_stats = b.wait_media().await;
    for (label, stats) in [("A", &a_stats), ("B", &b_stats)] {
        println!("lan: {label} receives over {}", stats["pair"]);
        assert_eq!(stats["pair"]["local"], "relay", "{label}: {stats}");
        assert_eq!(stats["pair"]["remote"], "relay", "{label}: {stats}");
    }
    let (seen_by_a, seen_by_b) = (a.remote_colour().await, b.remote_colour().await);
    assert!(seen_by_a[2] > 180 && seen_by_a[0] < 80, "A sees B's blue, saw {seen_by_a:?}");
    assert!(seen_by_b[0] > 180 && seen_by_b[2] < 80, "B sees A's red, saw {seen_by_b:?}");
    a.screenshot(&artifacts().join("lan-relay-call.png")).await;
    a.quit().await;
    b.quit().await;
    drop(drivers);

    // A restart keeps the certificate people accepted.
    drop(server);
    let _server = Webconf::start_on(&listen, &args);
    assert_eq!(
        certificate_served(&state, LAN_SERVER_IP).await,
        served,
        "the same certificate after a restart"
    );
    drop(lan);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS connection to `ip` that trusts only the certificate kept in
/// `state` and checks it names `name`.
async fn connect_tls(state: &Path, ip: &str, name: &str) -> TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let kept = state.join("tls/cert.pem");
    let cert = CertificateDer::from_pem_file(&kept).unwrap_or_else(|e| panic!("{}: {e}", kept.display()));
    let tcp = tokio::net::TcpStream::connect((ip, PORT)).await.expect("tcp");
    let server_name = ServerName::try_from(name.to_owned()).expect("a server name");
    crate::support::tls_connector(cert)
        .connect(server_name, tcp)
        .await
        .unwrap_or_else(|e| panic!("a certificate naming {name}: {e}"))
}

/// The certificate the server at `ip` presents (checked to name `ip`).
async fn certificate_served(state: &Path, ip: &str) -> Vec<u8> {
    let tls = connect_tls(state, ip, ip).await;
    let certs = tls.get_ref().1.peer_certificates().expect("a certificate");
    certs[0].as_ref().to_vec()
}

async fn get(tls: &mut TlsStream<tokio::net::TcpStream>, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tls.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The STUN/TURN URLs a peer joining over WSS at `ip` is given.
async fn ice_urls(state: &Path, ip: &str) -> Vec<String> {
    let tls = connect_tls(state, ip, ip).await;
    let url = format!("wss://{ip}:{PORT}/ws");
    let mut peer = Client::handshake(url.as_str(), Box::new(tls)).await.expect("wss upgrade");
    peer.hello().await;
    peer.send(json!({"type": "join", "room": format!("ice-{ip}"), "name": "probe"})).await;
    let joined = peer.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    joined["ice_servers"]
        .as_array()
        .expect("ice_servers")
        .iter()
        .flat_map(|s| s["urls"].as_array().cloned().unwrap_or_default())
        .filter_map(|u: Value| u.as_str().map(str::to_owned))
        .collect()
}
