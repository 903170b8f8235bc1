//! One synthetic participant of the SFU scenario, as webconf's SFU sees a
//! browser: a WebSocket for signaling (protocol version 2: its one offer
//! with `sources`, the server's answer, then the server's offers with
//! `tracks`, each answered) and a str0m session over its own UDP socket.
//!
//! The session runs in RTP mode: the publisher writes pre-built RTP (one
//! VP8 frame per packet, see [`crate::media`]) with no encoder and no
//! packetizer, and received packets come out as RTP without a jitter
//! buffer. Everything that arrives still goes through the session (SRTP,
//! receiver reports, NACKs, transport-wide congestion feedback), so the
//! server sees a receiver that behaves like a browser's, and its bandwidth
//! estimate for each subscriber follows what that subscriber gets.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::media::{Stamp, Tally, vp8_payload, vp8_stamp};
use crate::net::{Ws, instant_ns, now_ns};

/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;

/// A keyframe at least this often, as an encoder would (and whenever the
/// SFU asks for one).
const KEYFRAME_EVERY: u32 = 100;

/// When each publisher sends: frame `k` is due at `start + phase + k /
/// pps`, from the first due time after its session connects.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Common origin of every publisher's schedule.
    pub start: Instant,
    /// Frames per second.
    pub pps: f64,
    /// Publishers in all, to spread their phases over one interval.
    pub publishers: usize,
}

impl Schedule {
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.pps.max(1e-3))
    }

    /// The first due time of publisher `idx` at or after `now`.
    pub fn first_after(&self, idx: usize, now: Instant) -> Instant {
        let interval = self.interval();
        let phase = interval.mul_f64(idx as f64 / self.publishers.max(1) as f64);
        let mut t = self.start + phase;
        if now > t {
            let behind = (now - t).as_secs_f64();
            t += interval.mul_f64((behind * self.pps).ceil());
        }
        t
    }
}

/// A joined participant, ready to start its SFU session.
pub struct RtcParticipant {
    idx: u32,
    ws: Ws,
    udp: UdpSocket,
    local: SocketAddr,
    rtc: Rtc,
    video: Mid,
    /// Our offer, until the server answers it.
    pending: Option<SdpPendingOffer>,
    /// Our first offer, until sent.
    offer: Option<SdpOffer>,
    /// The VP8 payload type, once negotiated.
    pt: Option<Pt>,
    seq: u64,
    frames: u32,
    want_keyframe: bool,
    connected: bool,
    /// Size of the datagram last handed to the session.
    last_len: usize,
}

impl RtcParticipant {
    /// A session for participant `idx`, already in its room over `ws`.
    pub async fn new(idx: u32, ws: Ws) -> Result<RtcParticipant, String> {
        let udp = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| format!("UDP socket: {e}"))?;
        let local = udp.local_addr().map_err(|e| format!("UDP socket: {e}"))?;
        // VP8 only (what the publisher sends), RTP mode, no bandwidth
        // estimation of our own (so nothing paces the publisher).
        let mut rtc = Rtc::builder().clear_codecs().enable_vp8(true).set_rtp_mode(true).build(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| format!("candidate: {e}"))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let name = format!("p{idx}");
        let video =
            api.add_media(MediaKind::Video, Direction::SendOnly, Some(name.clone()), Some(name), None);
        let (offer, pending) = api.apply().ok_or("no offer to make")?;
        Ok(RtcParticipant {
            idx,
            ws,
            udp,
            local,
            rtc,
            video,
            pending: Some(pending),
            offer: Some(offer),
            pt: None,
            seq: 1,
            frames: 0,
            want_keyframe: true,
            connected: false,
            last_len: 0,
        })
    }

    /// Runs the participant until `stop`: offers, answers, sends its camera
    /// on `schedule` (until the tally's window is over) and counts what it
    /// receives.
    pub async fn run(mut self, tally: Rc<RefCell<Tally>>, schedule: Schedule, stop: CancellationToken) {
        if let Err(e) = self.start().await {
            tally.borrow_mut().error(format!("p{}: {e}", self.idx));
            return;
        }
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut timeout = Instant::now();
        let mut next_frame: Option<Instant> = None;
        let far = Duration::from_secs(3600);
        loop {
            let wake = timeout.min(next_frame.unwrap_or_else(|| Instant::now() + far));
            tokio::select! {
                () = stop.cancelled() => break,
                msg = self.ws.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Err(e) = self.on_signal(text.as_str(), &tally).await {
                            tally.borrow_mut().error(format!("p{}: {e}", self.idx));
                        }
                    }
                    Some(Ok(_)) => {}
                    other => {
                        let why = crate::net::describe_close(other);
                        tally.borrow_mut().error(format!("p{}: signaling: {why}", self.idx));
                        break;
                    }
                },
                ready = self.udp.readable() => {
                    if ready.is_ok() {
                        while let Ok((n, from)) = self.udp.try_recv_from(&mut buf) {
                            self.on_datagram(&buf[..n], from, &tally);
                        }
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            if self.connected && next_frame.is_none() {
                next_frame = Some(schedule.first_after(self.idx as usize, now));
            }
            while let Some(due) = next_frame.filter(|t| *t <= now) {
                if tally.borrow().sending_over(now_ns()) {
                    next_frame = Some(now + far);
                    break;
                }
                self.send_frame(&tally);
                next_frame = Some(due + schedule.interval());
            }
            if now >= timeout {
                let _ = self.rtc.handle_input(Input::Timeout(now));
            }
            timeout = self.poll(&tally);
        }
    }

    /// Sends our one offer, naming its m-line the camera.
    async fn start(&mut self) -> Result<(), String> {
        let offer = self.offer.take().ok_or("offered already")?;
        let msg = json!({
            "type": "sfu",
            "description": {"type": "offer", "sdp": offer.to_sdp_string()},
            "sources": { self.video.to_string(): "camera" },
        });
        self.ws.send(Message::text(msg.to_string())).await.map_err(|e| format!("send: {e}"))
    }

    async fn on_signal(&mut self, text: &str, tally: &Rc<RefCell<Tally>>) -> Result<(), String> {
        let msg: Value = serde_json::from_str(text).map_err(|e| format!("bad JSON {e}: {text}"))?;
        match msg["type"].as_str() {
            Some("sfu") => {}
            Some("error") => return Err(format!("server error: {msg}")),
            _ => return Ok(()),
        }
        let sdp = msg["description"]["sdp"].as_str().ok_or("sfu message without SDP")?;
        match msg["description"]["type"].as_str() {
            Some("answer") => {
                let pending = self.pending.take().ok_or("an answer to no offer of ours")?;
                if let Some(port) = candidate_port(sdp) {
                    tally.borrow_mut().server_port.get_or_insert(port);
                }
                let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("answer: {e}"))?;
                self.rtc.sdp_api().accept_answer(pending, answer).map_err(|e| format!("answer: {e}"))?;
                self.pt = self.rtc.media(self.video).and_then(|m| m.remote_pts().first().copied());
                Ok(())
            }
            Some("offer") => {
                let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("offer: {e}"))?;
                let answer = self.rtc.sdp_api().accept_offer(offer).map_err(|e| format!("offer: {e}"))?;
                let reply =
                    json!({"type": "sfu", "description": {"type": "answer", "sdp": answer.to_sdp_string()}});
                self.ws.send(Message::text(reply.to_string())).await.map_err(|e| format!("send: {e}"))
            }
            other => Err(format!("unexpected description {other:?}")),
        }
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr, tally: &Rc<RefCell<Tally>>) {
        let now = Instant::now();
        tally.borrow_mut().rx.count(data);
        self.last_len = data.len();
        let Ok(contents) = data.try_into() else { return };
        let input = Input::Receive(
            now,
            Receive { proto: Protocol::Udp, source: from, destination: self.local, contents },
        );
        let _ = self.rtc.handle_input(input);
        self.poll(tally);
    }

    /// Writes one frame as one RTP packet.
    fn send_frame(&mut self, tally: &Rc<RefCell<Tally>>) {
        let Some(pt) = self.pt else { return };
        let key = self.want_keyframe || self.frames % KEYFRAME_EVERY == 0;
        self.want_keyframe = false;
        let now = Instant::now();
        let t_ns = instant_ns(now);
        let stamp = Stamp { publisher: self.idx, k: self.frames, t_ns };
        let payload = vp8_payload(&stamp, key);
        // RTP time at 90 kHz, from the send time.
        let rtp_time = (u128::from(t_ns) * 9 / 100_000) as u32;
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.video, None) else { return };
        tx.write_rtp(RtpWrite::new(pt, self.seq.into(), rtp_time, now, payload).marker(true).nackable(true));
        self.seq += 1;
        self.frames += 1;
        tally.borrow_mut().sent(self.idx, t_ns);
        let _ = self.rtc.handle_input(Input::Timeout(now));
    }

    /// Takes everything the session has to say; returns its next timeout.
    fn poll(&mut self, tally: &Rc<RefCell<Tally>>) -> Instant {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Transmit(t)) => {
                    if self.udp.try_send_to(&t.contents, t.destination).is_err() {
                        tally.borrow_mut().send_failures += 1;
                    }
                }
                Ok(Output::Event(e)) => match e {
                    Event::RtpPacket(p) => {
                        if let Some(stamp) = vp8_stamp(&p.payload) {
                            let mut t = tally.borrow_mut();
                            t.received(self.idx, stamp, instant_ns(p.timestamp));
                            // The datagram just handled carried it.
                            t.datagrams += 1;
                            t.datagram_bytes += self.last_len as u64;
                        }
                    }
                    Event::Connected => {
                        self.connected = true;
                        tally.borrow_mut().connected += 1;
                    }
                    Event::KeyframeRequest(_) => self.want_keyframe = true,
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        tally.borrow_mut().error(format!("p{}: ICE disconnected", self.idx));
                    }
                    _ => {}
                },
                Err(e) => {
                    tally.borrow_mut().error(format!("p{}: session: {e}", self.idx));
                    return Instant::now() + Duration::from_millis(100);
                }
            }
        }
    }
}

/// The port of the first UDP candidate in `sdp` (the SFU's one).
fn candidate_port(sdp: &str) -> Option<u16> {
    let line = sdp.lines().find(|l| l.starts_with("a=candidate:"))?;
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    line.split_whitespace().nth(5)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_port_comes_from_its_candidate() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=candidate:1 1 udp 2130706175 127.0.0.1 40123 typ host\r\n";
        assert_eq!(candidate_port(sdp), Some(40123));
        assert_eq!(candidate_port("v=0\r\n"), None);
    }

    #[test]
    fn publishers_keep_their_phase() {
        let start = Instant::now();
        let s = Schedule { start, pps: 50.0, publishers: 4 };
        assert_eq!(s.first_after(0, start), start);
        assert_eq!(s.first_after(2, start), start + Duration::from_millis(10));
        // Late: the next slot on the publisher's own grid.
        let t = s.first_after(0, start + Duration::from_millis(45));
        assert_eq!(t, start + Duration::from_millis(60));
    }
}
