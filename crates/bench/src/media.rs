//! The SFU scenario's synthetic camera streams: what a publisher puts in
//! every packet (who sent it, its number, when), and what the subscribers
//! count of it.
//!
//! Every packet is one whole video frame, so the SFU forwards it as one
//! packet; the frame carries a [`Stamp`] at a fixed offset. The generator
//! owns every publisher and every subscriber, so one monotonic clock
//! ([`crate::net::now_ns`]) stamps the send and the receipt.

use crate::hist::Hist;

/// Marks a stamped frame (the SFU may send other things: padding, probes).
const MAGIC: [u8; 4] = *b"WCB1";

/// Bytes of a stamp: magic, publisher, frame number, send time.
pub const STAMP_LEN: usize = 4 + 4 + 4 + 8;

/// Where the stamp sits in a VP8 frame: after the frame tag and the
/// keyframe start code, where a decoder would find compressed data.
const STAMP_AT: usize = 16;

/// Bytes of every VP8 frame a publisher sends. With str0m's RTP header,
/// extensions, VP8 descriptor and SRTP tag, the SFU's datagrams carrying
/// one such frame are [`DATAGRAM_BYTES`] long (the scenario reports the
/// mean size it actually saw).
pub const FRAME_BYTES: usize = 1100;

/// Size of the plain forwarder's datagrams: what the SFU's forwarded
/// datagrams measured on loopback with [`FRAME_BYTES`] frames.
pub const DATAGRAM_BYTES: usize = 1145;

/// Packets per second of one camera at 500 kbps: 54 datagrams of
/// [`DATAGRAM_BYTES`] bytes (495 kbps of UDP payload).
pub const CAMERA_PPS: f64 = 54.0;

/// A stream is flowing if a frame arrived this recently (ns).
const FLOWING_NS: u64 = 1_000_000_000;

/// Who sent a frame, which of theirs it is, and when it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The publisher's number in the scenario.
    pub publisher: u32,
    /// The publisher's frame number, from 0.
    pub k: u32,
    /// When it was handed to the publisher's session ([`crate::net::now_ns`]).
    pub t_ns: u64,
}

impl Stamp {
    /// Writes the stamp at the start of `out` (at least [`STAMP_LEN`] long).
    pub fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.publisher.to_be_bytes());
        out[8..12].copy_from_slice(&self.k.to_be_bytes());
        out[12..20].copy_from_slice(&self.t_ns.to_be_bytes());
    }

    /// The stamp at the start of `buf`, if there is one.
    pub fn read(buf: &[u8]) -> Option<Stamp> {
        if buf.len() < STAMP_LEN || buf[..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| buf.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
        let t = buf.get(12..20).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)?;
        Some(Stamp { publisher: u32_at(4)?, k: u32_at(8)?, t_ns: t })
    }
}

/// One RTP payload: a VP8 payload descriptor (start of a frame, partition
/// 0, no picture id) and a frame of [`FRAME_BYTES`] holding `stamp`: a
/// keyframe's first bytes (key bit clear, start code, 320x240) or an inter
/// frame's, then filler. The SFU looks at no more than that.
pub fn vp8_payload(stamp: &Stamp, key: bool) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + FRAME_BYTES);
    p.push(0x10);
    if key {
        p.extend_from_slice(&[0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]);
    } else {
        p.extend_from_slice(&[0x51, 0x02, 0x00]);
    }
    p.resize(1 + STAMP_AT, 0xab);
    p.resize(1 + STAMP_AT + STAMP_LEN, 0);
    stamp.write(&mut p[1 + STAMP_AT..]);
    p.resize(1 + FRAME_BYTES, 0xab);
    p
}

/// The stamp in a forwarded VP8 RTP payload: skips the descriptor the SFU
/// wrote (RFC 7741 section 4.2: optional picture id, TL0PICIDX, TID/KEYIDX).
pub fn vp8_stamp(payload: &[u8]) -> Option<Stamp> {
    let first = *payload.first()?;
    let mut at = 1;
    if first & 0x80 != 0 {
        let x = *payload.get(at)?;
        at += 1;
        if x & 0x80 != 0 {
            // Picture id: 7 bits, or 15 with M set.
            at += if payload.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1;
        }
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    Stamp::read(payload.get(at + STAMP_AT..)?)
}

/// What one subscriber got from one publisher of its room.
#[derive(Debug, Default)]
struct Pair {
    /// When its latest frame arrived.
    last_rx_ns: Option<u64>,
    /// Whether it was flowing when the measured window began.
    flowing_at_start: bool,
    /// Frame numbers received, as a bit set (to count each frame once,
    /// should a retransmission arrive too).
    seen: Vec<u64>,
    /// Frames received that were sent in the measured window.
    in_window: u64,
}

/// Everything the participants of one run count, in one place: the
/// generator is one thread, so they share it without locks.
#[derive(Debug)]
pub struct Tally {
    /// People per room; participant `i` is in room `i / room_size`.
    room_size: usize,
    /// The measured window ([`crate::net::now_ns`]): frames sent in it are
    /// the ones counted.
    window: Option<(u64, u64)>,
    /// Frames each publisher sent in the window.
    sent_in_window: Vec<u64>,
    /// `[subscriber][publisher's place in the room]`.
    pairs: Vec<Vec<Pair>>,
    /// When the warm-up began ([`crate::net::now_ns`]).
    warmup_from: Option<u64>,
    /// Forwarding delays of frames sent in the window, ns.
    pub hist: Hist,
    /// Forwarding delays of frames sent during the warm-up, ns: how the
    /// first seconds of a call go.
    pub warmup_hist: Hist,
    /// Datagrams the participants received, by kind.
    pub rx: Received,
    /// Sessions connected (ICE and DTLS up, or registered).
    pub connected: usize,
    /// Datagrams carrying a stamped frame that reached subscribers.
    pub datagrams: u64,
    /// Their bytes.
    pub datagram_bytes: u64,
    /// Frames that arrived twice.
    pub duplicates: u64,
    /// Packets a participant could not send (its socket buffer full).
    pub send_failures: u64,
    /// The server's UDP port, once known.
    pub server_port: Option<u16>,
    /// What went wrong, per participant, first few kept.
    pub errors: Vec<String>,
    /// How many errors there were.
    pub error_count: usize,
}

/// Datagrams participants received, by kind (RFC 7983 and RFC 5761).
#[derive(Clone, Copy, Debug, Default)]
pub struct Received {
    /// STUN (ICE checks and their answers).
    pub stun: u64,
    /// DTLS.
    pub dtls: u64,
    /// RTCP (reports, NACKs, keyframe requests, congestion feedback).
    pub rtcp: u64,
    /// RTP: forwarded frames, retransmissions, padding and probes.
    pub rtp: u64,
}

impl Received {
    /// Counts one datagram.
    pub fn count(&mut self, data: &[u8]) {
        match (data.first(), data.get(1)) {
            (Some(0..=3), _) => self.stun += 1,
            (Some(20..=63), _) => self.dtls += 1,
            (Some(128..=191), Some(b)) if (64..96).contains(&(b & 0x7f)) => self.rtcp += 1,
            (Some(128..=191), _) => self.rtp += 1,
            _ => {}
        }
    }

    /// What was counted since `before`.
    pub fn since(&self, before: &Received) -> Received {
        Received {
            stun: self.stun - before.stun,
            dtls: self.dtls - before.dtls,
            rtcp: self.rtcp - before.rtcp,
            rtp: self.rtp - before.rtp,
        }
    }
}

/// The accounting of one measured window.
#[derive(Debug, Default)]
pub struct Summary {
    /// Publisher→subscriber pairs flowing when the window began.
    pub streams: usize,
    /// Frames their subscribers should have got (sent in the window, one
    /// per subscriber of each).
    pub expected: u64,
    /// Frames they got.
    pub received: u64,
    /// Frames all publishers sent in the window.
    pub sent: u64,
}

impl Summary {
    /// Lost share of the expected frames, in %.
    pub fn loss_pct(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        100.0 * self.expected.saturating_sub(self.received) as f64 / self.expected as f64
    }
}

impl Tally {
    /// Counters for `participants` people in rooms of `room_size`.
    pub fn new(participants: usize, room_size: usize) -> Tally {
        let room_size = room_size.max(1);
        Tally {
            room_size,
            window: None,
            warmup_from: None,
            warmup_hist: Hist::new(),
            rx: Received::default(),
            sent_in_window: vec![0; participants],
            pairs: (0..participants).map(|_| (0..room_size).map(|_| Pair::default()).collect()).collect(),
            hist: Hist::new(),
            connected: 0,
            datagrams: 0,
            datagram_bytes: 0,
            duplicates: 0,
            send_failures: 0,
            server_port: None,
            errors: Vec::new(),
            error_count: 0,
        }
    }

    /// Sets the warm-up's start and the measured window.
    pub fn set_window(&mut self, warmup_ns: u64, from_ns: u64, to_ns: u64) {
        self.warmup_from = Some(warmup_ns);
        self.window = Some((from_ns, to_ns));
    }

    fn in_window(&self, t: u64) -> bool {
        self.window.is_some_and(|(a, b)| (a..b).contains(&t))
    }

    /// Whether publishers should stop: the window is over.
    pub fn sending_over(&self, now_ns: u64) -> bool {
        self.window.is_some_and(|(_, b)| now_ns >= b)
    }

    /// `publisher` sent a frame at `t_ns`.
    pub fn sent(&mut self, publisher: u32, t_ns: u64) {
        let p = publisher as usize;
        if p < self.sent_in_window.len() && self.in_window(t_ns) {
            self.sent_in_window[p] += 1;
        }
    }

    /// `subscriber` got `stamp` at `now_ns`.
    pub fn received(&mut self, subscriber: u32, stamp: Stamp, now_ns: u64) {
        let (sub, publisher) = (subscriber as usize, stamp.publisher as usize);
        let base = sub / self.room_size * self.room_size;
        if sub >= self.pairs.len() || publisher < base || publisher >= base + self.room_size {
            self.error("a frame from another room arrived".to_owned());
            return;
        }
        let in_window = self.in_window(stamp.t_ns);
        let pair = &mut self.pairs[sub][publisher - base];
        let (word, bit) = (stamp.k as usize / 64, 1u64 << (stamp.k % 64));
        if pair.seen.len() <= word {
            pair.seen.resize(word + 1, 0);
        }
        if pair.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        pair.seen[word] |= bit;
        pair.last_rx_ns = pair.last_rx_ns.max(Some(now_ns));
        if in_window {
            pair.in_window += 1;
            self.hist.record(now_ns.saturating_sub(stamp.t_ns));
        } else if self.warmup_from.is_some_and(|w| stamp.t_ns >= w)
            && self.window.is_some_and(|(from, _)| stamp.t_ns < from)
        {
            self.warmup_hist.record(now_ns.saturating_sub(stamp.t_ns));
        }
    }

    /// Pairs that got a frame in the second before `now_ns`.
    pub fn flowing(&self, now_ns: u64) -> usize {
        let since = now_ns.saturating_sub(FLOWING_NS);
        self.pairs.iter().flatten().filter(|p| p.last_rx_ns.is_some_and(|t| t >= since)).count()
    }

    /// Notes which pairs are flowing as the window begins (at `now_ns`):
    /// the streams the window counts. (While a room fills up, the SFU may
    /// start a stream and stop it again when it picks its last-N cameras.)
    pub fn mark_flowing(&mut self, now_ns: u64) {
        let since = now_ns.saturating_sub(FLOWING_NS);
        for pair in self.pairs.iter_mut().flatten() {
            pair.flowing_at_start = pair.last_rx_ns.is_some_and(|t| t >= since);
        }
    }

    /// Records a participant's error (the first few are kept).
    pub fn error(&mut self, e: String) {
        self.error_count += 1;
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }

    /// The window's accounting: pairs forwarding when it began, what they
    /// should have got and what they got.
    pub fn summary(&self) -> Summary {
        if self.window.is_none() {
            return Summary::default();
        }
        let mut s = Summary { sent: self.sent_in_window.iter().sum(), ..Summary::default() };
        for (sub, pairs) in self.pairs.iter().enumerate() {
            let base = sub / self.room_size * self.room_size;
            for (i, pair) in pairs.iter().enumerate() {
                if pair.flowing_at_start {
                    s.streams += 1;
                    s.expected += self.sent_in_window.get(base + i).copied().unwrap_or(0);
                    s.received += pair.in_window;
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_survive_any_vp8_descriptor() {
        let stamp = Stamp { publisher: 7, k: 1234, t_ns: 987_654_321_012 };
        let sent = vp8_payload(&stamp, true);
        assert_eq!(sent.len(), 1 + FRAME_BYTES);
        assert_eq!(vp8_stamp(&sent), Some(stamp));
        // What str0m's packetizer writes: X and I set, a 15-bit picture id.
        let mut forwarded = vec![0x90, 0x80, 0x81, 0x02];
        forwarded.extend_from_slice(&sent[1..]);
        assert_eq!(vp8_stamp(&forwarded), Some(stamp));
        // A 7-bit picture id.
        let mut short = vec![0x90, 0x80, 0x05];
        short.extend_from_slice(&sent[1..]);
        assert_eq!(vp8_stamp(&short), Some(stamp));
        assert_eq!(vp8_stamp(&[0x10, 0x50]), None);
    }

    #[test]
    fn tally_counts_pairs_once_and_only_in_the_window() {
        // Two rooms of three.
        let mut t = Tally::new(6, 3);
        let at = |publisher, k, t_ns| Stamp { publisher, k, t_ns };
        // Before the window: pair (1 <- 0) and (2 <- 0) start.
        t.received(1, at(0, 0, 10), 11);
        t.received(2, at(0, 0, 10), 12);
        t.set_window(50, 100, 200);
        assert_eq!(t.flowing(100), 2);
        t.mark_flowing(100);
        for (k, ts) in [(1, 110), (2, 150), (3, 190)] {
            t.sent(0, ts);
            t.received(1, at(0, k, ts), ts + 5);
        }
        t.sent(0, 250);
        // A retransmission, and one after the window.
        t.received(1, at(0, 2, 150), 170);
        t.received(1, at(0, 4, 250), 255);
        // Subscriber 2 got one of the three.
        t.received(2, at(0, 2, 150), 160);
        // Another room's frame is refused.
        t.received(4, at(0, 1, 110), 120);
        let s = t.summary();
        assert_eq!(s.streams, 2);
        assert_eq!(s.expected, 6);
        assert_eq!(s.received, 4);
        assert_eq!(s.sent, 3);
        assert!((s.loss_pct() - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.hist.count(), 4);
        assert_eq!(t.warmup_hist.count(), 0);
        assert_eq!(t.error_count, 1);
        assert!(t.sending_over(200) && !t.sending_over(199));
    }
}
