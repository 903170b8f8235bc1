//! STUN messages (RFC 8489): parsing what peers send, building what we
//! answer, MESSAGE-INTEGRITY and FINGERPRINT, and the framing of STUN and
//! ChannelData on a TCP stream (RFC 8656 section 12.5).
//!
//! Parsing never panics and never allocates more than the input: a message
//! is a view over the bytes it came in, its attributes read on demand.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The fixed value in every STUN header (RFC 8489 section 5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Bytes in a STUN header.
pub const HEADER_LEN: usize = 20;
/// XORed into the CRC-32 of FINGERPRINT (RFC 8489 section 14.7).
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Attribute types used here (RFC 8489 section 18.3, RFC 8656 section 18),
/// named as in the RFCs.
#[allow(missing_docs)]
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

/// Methods (RFC 8489 section 18.2, RFC 8656 section 17).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Method {
    /// 0x001
    Binding,
    /// 0x003
    Allocate,
    /// 0x004
    Refresh,
    /// 0x006
    Send,
    /// 0x007
    Data,
    /// 0x008
    CreatePermission,
    /// 0x009
    ChannelBind,
    /// Any other method.
    Other(u16),
}

impl Method {
    fn code(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Allocate => 0x003,
            Method::Refresh => 0x004,
            Method::Send => 0x006,
            Method::Data => 0x007,
            Method::CreatePermission => 0x008,
            Method::ChannelBind => 0x009,
            Method::Other(m) => m & 0x0FFF,
        }
    }

    fn from_code(code: u16) -> Method {
        match code {
            0x001 => Method::Binding,
            0x003 => Method::Allocate,
            0x004 => Method::Refresh,
            0x006 => Method::Send,
            0x007 => Method::Data,
            0x008 => Method::CreatePermission,
            0x009 => Method::ChannelBind,
            other => Method::Other(other),
        }
    }
}

/// Message classes (RFC 8489 section 5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    /// Expects a response.
    Request,
    /// Expects nothing.
    Indication,
    /// Success response.
    Success,
    /// Error response.
    Error,
}

/// Combines method and class into the header's 14-bit type field.
fn message_type(method: Method, class: Class) -> u16 {
    let m = method.code();
    let c: u16 = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::Success => 0b10,
        Class::Error => 0b11,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

fn split_type(t: u16) -> (Method, Class) {
    let m = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::Success,
        _ => Class::Error,
    };
    (Method::from_code(m), class)
}

/// Why bytes are not a STUN message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StunError {
    /// Shorter than its header says, or an attribute runs past the end.
    Truncated,
    /// Not STUN: wrong leading bits, magic cookie, or length alignment.
    NotStun,
}

/// A parsed STUN message, borrowing the bytes it was read from.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// The whole message, header included (exactly its length; no trailing
    /// bytes).
    raw: &'a [u8],
    /// Its method.
    pub method: Method,
    /// Its class.
    pub class: Class,
    /// The transaction id.
    pub transaction: [u8; 12],
}

/// One attribute, as found.
#[derive(Clone, Copy, Debug)]
pub struct RawAttr<'a> {
    /// Its type.
    pub kind: u16,
    /// Its value, without padding.
    pub value: &'a [u8],
    /// Offset of its header in the message.
    pub offset: usize,
}

/// Whether `data` starts like a STUN message (the first two bits are 0 and
/// the magic cookie is in place), as opposed to ChannelData or media.
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN && data[0] & 0xC0 == 0 && data[4..8] == MAGIC_COOKIE.to_be_bytes()
}

impl<'a> Message<'a> {
    /// Parses one whole message; trailing bytes are an error.
    pub fn parse(data: &'a [u8]) -> Result<Message<'a>, StunError> {
        if data.len() < HEADER_LEN {
            return Err(StunError::Truncated);
        }
        if !is_stun(data) {
            return Err(StunError::NotStun);
        }
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        if len % 4 != 0 {
            return Err(StunError::NotStun);
        }
        if data.len() != HEADER_LEN + len {
            return Err(StunError::Truncated);
        }
        let (method, class) = split_type(u16::from_be_bytes([data[0], data[1]]));
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&data[8..20]);
        let msg = Message { raw: data, method, class, transaction };
        // Walk the attributes once, so later reads cannot fail.
        for a in msg.attributes() {
            a?;
        }
        Ok(msg)
    }

    /// The message's bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Every attribute in order.
    pub fn attributes(&self) -> impl Iterator<Item = Result<RawAttr<'a>, StunError>> + 'a {
        let raw = self.raw;
        let mut offset = HEADER_LEN;
        std::iter::from_fn(move || {
            if offset >= raw.len() {
                return None;
            }
            let Some(head) = raw.get(offset..offset + 4) else {
                offset = raw.len();
                return Some(Err(StunError::Truncated));
            };
            let kind = u16::from_be_bytes([head[0], head[1]]);
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let start = offset + 4;
            let Some(value) = raw.get(start..start + len) else {
                offset = raw.len();
                return Some(Err(StunError::Truncated));
            };
            let this = offset;
            offset = start + len.next_multiple_of(4);
            Some(Ok(RawAttr { kind, value, offset: this }))
        })
    }

    /// The first attribute of type `kind`, ignoring anything after
    /// MESSAGE-INTEGRITY but FINGERPRINT (RFC 8489 section 14.5).
    pub fn get(&self, kind: u16) -> Option<&'a [u8]> {
        let mut past_integrity = false;
        for a in self.attributes().flatten() {
            if past_integrity && a.kind != attr::FINGERPRINT {
                return None;
            }
            if a.kind == kind {
                return Some(a.value);
            }
            if a.kind == attr::MESSAGE_INTEGRITY {
                past_integrity = true;
            }
        }
        None
    }

    /// Every value of attributes of type `kind` (XOR-PEER-ADDRESS may come
    /// more than once), before MESSAGE-INTEGRITY.
    pub fn get_all(&self, kind: u16) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        for a in self.attributes().flatten() {
            if a.kind == attr::MESSAGE_INTEGRITY {
                break;
            }
            if a.kind == kind {
                out.push(a.value);
            }
        }
        out
    }

    /// A UTF-8 attribute's value (USERNAME, REALM, NONCE, SOFTWARE).
    pub fn get_str(&self, kind: u16) -> Option<&'a str> {
        self.get(kind).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A 32-bit attribute's value (LIFETIME).
    pub fn get_u32(&self, kind: u16) -> Option<u32> {
        let v = self.get(kind)?;
        Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
    }

    /// An XOR-address attribute, decoded.
    pub fn get_xor_addr(&self, kind: u16) -> Option<SocketAddr> {
        decode_xor_addr(self.get(kind)?, &self.transaction)
    }

    /// Types of comprehension-required attributes (0x0000-0x7FFF) that are
    /// not in `known` (RFC 8489 section 7.3.1).
    pub fn unknown_required(&self, known: &[u16]) -> Vec<u16> {
        self.attributes().flatten().map(|a| a.kind).filter(|k| *k < 0x8000 && !known.contains(k)).collect()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1 with `key`) over the message up to
    /// it, with the header's length as it was when the MAC was computed.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(mi) = self.attributes().flatten().find(|a| a.kind == attr::MESSAGE_INTEGRITY) else {
            return false;
        };
        if mi.value.len() != 20 {
            return false;
        }
        let Some(covered) = self.raw.get(..mi.offset) else { return false };
        // The length counts up to and including MESSAGE-INTEGRITY.
        let len = (mi.offset + 24 - HEADER_LEN) as u16;
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(&covered[..2]);
        mac.update(&len.to_be_bytes());
        mac.update(&covered[4..]);
        mac.verify_slice(mi.value).is_ok()
    }

    /// Checks FINGERPRINT, if present (absent is fine: it is optional).
    pub fn fingerprint_ok(&self) -> bool {
        let Some(fp) = self.attributes().flatten().find(|a| a.kind == attr::FINGERPRINT) else {
            return true;
        };
        if fp.value.len() != 4 {
            return false;
        }
        let expected = crc32fast::hash(&self.raw[..fp.offset]) ^ FINGERPRINT_XOR;
        fp.value == expected.to_be_bytes()
    }
}

/// Decodes an XOR-MAPPED-ADDRESS-style value.
pub fn decode_xor_addr(v: &[u8], transaction: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match v[1] {
        0x01 if v.len() == 8 => {
            let raw = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC_COOKIE;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(raw)), port))
        }
        0x02 if v.len() == 20 => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(transaction);
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = v[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

fn encode_xor_addr(addr: SocketAddr, transaction: &[u8; 12]) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            let mut v = vec![0, 0x01];
            v.extend_from_slice(&port.to_be_bytes());
            v.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
            v
        }
        IpAddr::V6(ip) => {
            let mut v = vec![0, 0x02];
            v.extend_from_slice(&port.to_be_bytes());
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(transaction);
            v.extend(ip.octets().iter().zip(key).map(|(a, b)| a ^ b));
            v
        }
    }
}

/// Builds a STUN message attribute by attribute.
#[derive(Debug)]
pub struct Builder {
    buf: Vec<u8>,
    transaction: [u8; 12],
}

impl Builder {
    /// A message of `method` and `class` with `transaction`.
    pub fn new(method: Method, class: Class, transaction: [u8; 12]) -> Builder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction);
        Builder { buf, transaction }
    }

    /// Appends an attribute (padded to 4 bytes).
    pub fn attr(mut self, kind: u16, value: &[u8]) -> Builder {
        self.buf.extend_from_slice(&kind.to_be_bytes());
        // Values come from us and are far below 64 KiB.
        self.buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self.set_len();
        self
    }

    /// Appends an XOR-address attribute.
    pub fn xor_addr(self, kind: u16, addr: SocketAddr) -> Builder {
        let v = encode_xor_addr(addr, &self.transaction);
        self.attr(kind, &v)
    }

    /// Appends a 32-bit attribute.
    pub fn u32(self, kind: u16, value: u32) -> Builder {
        self.attr(kind, &value.to_be_bytes())
    }

    /// Appends ERROR-CODE (RFC 8489 section 14.8).
    pub fn error(self, code: u16, reason: &str) -> Builder {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ERROR_CODE, &v)
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends MESSAGE-INTEGRITY computed with `key`.
    pub fn integrity(mut self, key: &[u8]) -> Builder {
        let len = (self.buf.len() + 24 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(&self.buf);
        let tag = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY, &tag)
    }

    /// Appends FINGERPRINT and returns the message.
    pub fn finish_with_fingerprint(mut self) -> Vec<u8> {
        let len = (self.buf.len() + 8 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let crc = crc32fast::hash(&self.buf) ^ FINGERPRINT_XOR;
        self.attr(attr::FINGERPRINT, &crc.to_be_bytes()).buf
    }

    /// The message as it is.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Channel numbers accepted: RFC 8656 uses 0x4000-0x4FFF, RFC 5766 clients
/// may use up to 0x7FFE.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFE;

/// A ChannelData message (RFC 8656 section 12.4): channel number, data.
pub fn parse_channel_data(data: &[u8]) -> Option<(u16, &[u8])> {
    if data.len() < 4 {
        return None;
    }
    let channel = u16::from_be_bytes([data[0], data[1]]);
    if !CHANNELS.contains(&channel) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    // Over UDP, bytes past the length are padding (allowed); fewer is an
    // error.
    Some((channel, data.get(4..4 + len)?))
}

/// Builds a ChannelData message; over a stream it is padded to 4 bytes.
pub fn channel_data(channel: u16, data: &[u8], stream: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len() + 3);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(data);
    if stream {
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

/// On a TCP stream: how many bytes the next frame (a STUN message, or a
/// padded ChannelData message) takes, once at least 4 bytes are there.
/// `None` means the stream is not speaking STUN/TURN and must be closed.
pub fn stream_frame_len(head: &[u8]) -> Option<usize> {
    let first = *head.first()?;
    let len = usize::from(u16::from_be_bytes([*head.get(2)?, *head.get(3)?]));
    match first >> 6 {
        0b00 => Some(HEADER_LEN + len),
        0b01 => Some((4 + len).next_multiple_of(4)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 section 2.1: a sample request with MESSAGE-INTEGRITY (short
    /// term password "VOkJxbRl1RmTxUk/WvJxBt") and FINGERPRINT.
    const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa,
        0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20,
        0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00,
        0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a,
        0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf,
        0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28,
        0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
    ];

    #[test]
    fn rfc5769_sample_request_checks_out() {
        let msg = Message::parse(&RFC5769_REQUEST).expect("parses");
        assert_eq!((msg.method, msg.class), (Method::Binding, Class::Request));
        assert_eq!(msg.get_str(attr::SOFTWARE), Some("STUN test client"));
        assert_eq!(msg.get_str(attr::USERNAME), Some("evtj:h6vY"));
        assert!(msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!msg.verify_integrity(b"wrong"));
        assert!(msg.fingerprint_ok());
        let mut bent = RFC5769_REQUEST;
        bent[30] ^= 1;
        let bent = Message::parse(&bent).expect("still parses");
        assert!(!bent.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!bent.fingerprint_ok());
    }

    /// RFC 5769 section 2.2: XOR-MAPPED-ADDRESS 192.0.2.1:32853.
    #[test]
    fn rfc5769_sample_response_address() {
        let tid = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];
        let value = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        assert_eq!(decode_xor_addr(&value, &tid), Some("192.0.2.1:32853".parse().expect("addr")));
        let v6 = "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().expect("addr");
        assert_eq!(decode_xor_addr(&encode_xor_addr(v6, &tid), &tid), Some(v6));
    }

    #[test]
    fn built_messages_parse_back_with_integrity_and_fingerprint() {
        let tid = [7u8; 12];
        let peer: SocketAddr = "203.0.113.9:40000".parse().expect("addr");
        let bytes = Builder::new(Method::Allocate, Class::Success, tid)
            .xor_addr(attr::XOR_RELAYED_ADDRESS, peer)
            .u32(attr::LIFETIME, 600)
            .attr(attr::SOFTWARE, b"webconf")
            .integrity(b"key")
            .finish_with_fingerprint();
        let msg = Message::parse(&bytes).expect("parses");
        assert_eq!((msg.method, msg.class, msg.transaction), (Method::Allocate, Class::Success, tid));
        assert_eq!(msg.get_xor_addr(attr::XOR_RELAYED_ADDRESS), Some(peer));
        assert_eq!(msg.get_u32(attr::LIFETIME), Some(600));
        assert!(msg.verify_integrity(b"key"));
        assert!(msg.fingerprint_ok());
        for t in 0..0x3FFFu16 {
            let (m, c) = split_type(t);
            assert_eq!(message_type(m, c), t);
        }
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        assert_eq!(Message::parse(&[]).err(), Some(StunError::Truncated));
        assert_eq!(Message::parse(&[0u8; 20]).err(), Some(StunError::NotStun));
        let mut header = RFC5769_REQUEST[..20].to_vec();
        assert_eq!(Message::parse(&header).err(), Some(StunError::Truncated), "length says 88 more bytes");
        header[2..4].copy_from_slice(&8u16.to_be_bytes());
        header.extend_from_slice(&[0x80, 0x22, 0x00, 0x40, 0, 0, 0, 0]);
        assert_eq!(Message::parse(&header).err(), Some(StunError::Truncated), "attribute runs past the end");
        assert_eq!(parse_channel_data(&[0x40, 0x00, 0x00, 0x08, 1, 2]), None);
        assert_eq!(parse_channel_data(&[0x40, 0x01, 0x00, 0x02, 1, 2, 0, 0]), Some((0x4001, &[1u8, 2][..])));
        assert_eq!(parse_channel_data(&[0x80, 0x01, 0x00, 0x00]), None);
    }

    #[test]
    fn stream_framing() {
        assert_eq!(stream_frame_len(&RFC5769_REQUEST[..4]), Some(108));
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x05]), Some(12));
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x08]), Some(12));
        assert_eq!(stream_frame_len(b"\xff\x00\x00\x00"), None);
        assert_eq!(channel_data(0x4000, &[1, 2, 3, 4, 5], true).len(), 12);
        assert_eq!(channel_data(0x4000, &[1, 2, 3, 4, 5], false).len(), 9);
    }
}
