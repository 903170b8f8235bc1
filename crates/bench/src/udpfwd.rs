//! The SFU scenario's limit reference: a plain UDP forwarder (`bench
//! udp-forwarder`), and the participants that use it.
//!
//! The forwarder is the least an SFU does on one core: receive a datagram
//! and send it to every other member of the sender's room, one system call
//! each, on one blocking socket. No encryption, no RTP, no feedback, no
//! bandwidth estimation, no pacing. A participant joins a room by sending
//! [`HELLO`] with its room number until the forwarder acknowledges it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::media::{DATAGRAM_BYTES, STAMP_LEN, Stamp, Tally};
use crate::net::{instant_ns, now_ns};
use crate::rtcpeer::Schedule;

/// A participant's hello: these 4 bytes, then its room (u32, big endian).
const HELLO: [u8; 4] = *b"WCBH";
/// The forwarder's answer to a hello.
const ACK: [u8; 4] = *b"WCBA";

/// How often a participant says hello until answered.
const HELLO_EVERY: Duration = Duration::from_millis(100);

/// Runs the forwarder on `listen` until the process is killed.
pub fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let socket = StdUdpSocket::bind(listen)?;
    let mut buf = vec![0u8; 2048];
    let mut room_of: HashMap<SocketAddr, u32> = HashMap::new();
    let mut members: HashMap<u32, Vec<SocketAddr>> = HashMap::new();
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        let data = &buf[..n];
        if n == 8 && data[..4] == HELLO {
            let room = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            if room_of.insert(from, room).is_none() {
                members.entry(room).or_default().push(from);
            }
            let _ = socket.send_to(&ACK, from);
            continue;
        }
        let Some(room) = room_of.get(&from) else { continue };
        for to in members.get(room).into_iter().flatten() {
            if *to != from {
                // Dropped if it cannot be sent, as the SFU does.
                let _ = socket.send_to(data, to);
            }
        }
    }
}

/// A participant of the plain forwarder's rooms.
pub struct UdpParticipant {
    idx: u32,
    room: u32,
    udp: UdpSocket,
    server: SocketAddr,
    registered: bool,
    frames: u32,
}

impl UdpParticipant {
    /// Participant `idx` of `room`, talking to the forwarder at `server`.
    pub async fn new(idx: u32, room: u32, server: SocketAddr) -> Result<UdpParticipant, String> {
        let udp = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| format!("UDP socket: {e}"))?;
        Ok(UdpParticipant { idx, room, udp, server, registered: false, frames: 0 })
    }

    /// Says hello until answered, then sends a datagram of the SFU's
    /// forwarded size on `schedule` (until the tally's window is over) and
    /// counts what arrives, until `stop`.
    pub async fn run(mut self, tally: Rc<RefCell<Tally>>, schedule: Schedule, stop: CancellationToken) {
        let mut buf = vec![0u8; 2048];
        let mut hello = [0u8; 8];
        hello[..4].copy_from_slice(&HELLO);
        hello[4..].copy_from_slice(&self.room.to_be_bytes());
        let mut datagram = vec![0xabu8; DATAGRAM_BYTES.max(STAMP_LEN)];
        let mut next_hello = Instant::now();
        let mut next_frame: Option<Instant> = None;
        let far = Duration::from_secs(3600);
        loop {
            let wake =
                if self.registered { next_frame.unwrap_or_else(|| Instant::now() + far) } else { next_hello };
            tokio::select! {
                () = stop.cancelled() => break,
                ready = self.udp.readable() => {
                    if ready.is_ok() {
                        while let Ok((n, _)) = self.udp.try_recv_from(&mut buf) {
                            let now = instant_ns(Instant::now());
                            self.on_datagram(&buf[..n], now, &tally);
                        }
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            if !self.registered {
                if now >= next_hello {
                    let _ = self.udp.try_send_to(&hello, self.server);
                    next_hello = now + HELLO_EVERY;
                }
                continue;
            }
            let due_from = *next_frame.get_or_insert_with(|| schedule.first_after(self.idx as usize, now));
            let mut due = due_from;
            while due <= now {
                if tally.borrow().sending_over(now_ns()) {
                    due = now + far;
                    break;
                }
                let t_ns = now_ns();
                Stamp { publisher: self.idx, k: self.frames, t_ns }.write(&mut datagram);
                if self.udp.try_send_to(&datagram, self.server).is_err() {
                    tally.borrow_mut().send_failures += 1;
                }
                self.frames += 1;
                tally.borrow_mut().sent(self.idx, t_ns);
                due += Duration::from_secs_f64(1.0 / schedule.pps.max(1e-3));
            }
            next_frame = Some(due);
        }
    }

    fn on_datagram(&mut self, data: &[u8], now: u64, tally: &Rc<RefCell<Tally>>) {
        if data == ACK {
            if !self.registered {
                self.registered = true;
                tally.borrow_mut().connected += 1;
            }
            return;
        }
        let mut t = tally.borrow_mut();
        t.rx.rtp += 1;
        t.datagrams += 1;
        t.datagram_bytes += data.len() as u64;
        if let Some(stamp) = Stamp::read(data) {
            t.received(self.idx, stamp, now);
        }
    }
}
