//! Messages between an edge node (where a browser's WebSocket is) and the
//! home node of its room, over the home's and the edge's bus channels.
//!
//! Each message is one pub/sub message of text:
//! `<direction><kind> <from node> <conn> <seq> <payload>`, where the
//! payload is the rest (a WebSocket text message as the browser sent it or
//! as the home wrote it, or a close code and reason). `conn` is the edge's
//! number for the browser's connection: with `from`, it names the
//! connection on both sides. `seq` counts each direction's messages of one
//! connection from 0: pub/sub delivers at most once, so a gap means one
//! was lost, and the connection is closed (the browser reconnects and
//! resumes) rather than go on with a hole in its conversation.

use crate::NodeId;

/// Which way a message goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dir {
    /// From the edge holding the browser's socket to the room's home.
    ToHome,
    /// From the home back to the edge.
    ToEdge,
}

/// What a message says.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Body<'a> {
    /// (to home) A connection starts: the home sets up a member for it,
    /// from this client address (for per-address rules: bars, the room
    /// password limit). Its first text follows.
    Open(Option<std::net::IpAddr>),
    /// A WebSocket text message: the browser's (to home) or for the browser
    /// (to edge).
    Text(&'a str),
    /// (to home) The browser's connection is gone.
    Closed,
    /// (to edge) Close the browser's WebSocket with this code and reason.
    Close(u16, &'a str),
    /// (to edge) Is the connection still there? Answered with `Pong`.
    Ping,
    /// (to home) It is.
    Pong,
}

/// One bus message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Msg<'a> {
    /// Which way it goes.
    pub dir: Dir,
    /// The node that sent it.
    pub from: &'a str,
    /// The edge's number for the browser's connection.
    pub conn: u64,
    /// Its place among this connection's messages in this direction.
    pub seq: u64,
    /// What it says.
    pub body: Body<'a>,
}

/// Why a message was not understood.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BadMsg;

impl Msg<'_> {
    /// The message as published.
    pub fn encode(&self) -> String {
        let d = match self.dir {
            Dir::ToHome => 'h',
            Dir::ToEdge => 'e',
        };
        let (k, payload): (char, std::borrow::Cow<'_, str>) = match &self.body {
            Body::Open(None) => ('o', "".into()),
            Body::Open(Some(ip)) => ('o', ip.to_string().into()),
            Body::Text(t) => ('t', (*t).into()),
            Body::Closed => ('c', "".into()),
            Body::Close(code, reason) => ('x', format!("{code} {reason}").into()),
            Body::Ping => ('i', "".into()),
            Body::Pong => ('p', "".into()),
        };
        format!("{d}{k} {} {} {} {payload}", self.from, self.conn, self.seq)
    }
}

/// Reads a message (from bytes off the bus: never trusted to be well
/// formed, though only nodes publish there).
pub fn decode(text: &str) -> Result<Msg<'_>, BadMsg> {
    let mut parts = text.splitn(5, ' ');
    let head = parts.next().ok_or(BadMsg)?.as_bytes();
    let from = parts.next().ok_or(BadMsg)?;
    NodeId::parse(from).ok_or(BadMsg)?;
    let conn = parts.next().ok_or(BadMsg)?.parse().map_err(|_| BadMsg)?;
    let seq = parts.next().ok_or(BadMsg)?.parse().map_err(|_| BadMsg)?;
    let payload = parts.next().ok_or(BadMsg)?;
    let [d, k] = head else { return Err(BadMsg) };
    let dir = match d {
        b'h' => Dir::ToHome,
        b'e' => Dir::ToEdge,
        _ => return Err(BadMsg),
    };
    let empty = |body| if payload.is_empty() { Ok(body) } else { Err(BadMsg) };
    let body = match (dir, k) {
        (Dir::ToHome, b'o') if payload.is_empty() => Body::Open(None),
        (Dir::ToHome, b'o') => Body::Open(Some(payload.parse().map_err(|_| BadMsg)?)),
        (_, b't') => Body::Text(payload),
        (Dir::ToHome, b'c') => empty(Body::Closed)?,
        (Dir::ToEdge, b'x') => {
            let (code, reason) = payload.split_once(' ').ok_or(BadMsg)?;
            Body::Close(code.parse().map_err(|_| BadMsg)?, reason)
        }
        (Dir::ToEdge, b'i') => empty(Body::Ping)?,
        (Dir::ToHome, b'p') => empty(Body::Pong)?,
        _ => return Err(BadMsg),
    };
    Ok(Msg { dir, from, conn, seq, body })
}

/// The sequence numbers one side of a connection expects.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqIn {
    next: u64,
}

impl SeqIn {
    /// Whether `seq` is the one expected (then the next is expected);
    /// anything else means a message was lost or came twice.
    pub fn accept(&mut self, seq: u64) -> bool {
        if seq != self.next {
            return false;
        }
        self.next += 1;
        true
    }
}

/// The sequence numbers one side of a connection sends.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqOut {
    next: u64,
}

impl SeqOut {
    /// The number for the next message.
    pub fn take(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let table = [
            (Dir::ToHome, Body::Open(None), "ho n1 7 0 "),
            (Dir::ToHome, Body::Open(Some(std::net::IpAddr::from([192, 0, 2, 7]))), "ho n1 7 0 192.0.2.7"),
            (
                Dir::ToHome,
                Body::Text(r#"{"type":"join","room":"a b"}"#),
                r#"ht n1 7 0 {"type":"join","room":"a b"}"#,
            ),
            (Dir::ToEdge, Body::Text(""), "et n1 7 0 "),
            (Dir::ToHome, Body::Closed, "hc n1 7 0 "),
            (
                Dir::ToEdge,
                Body::Close(1012, "room moved to another node"),
                "ex n1 7 0 1012 room moved to another node",
            ),
            (Dir::ToEdge, Body::Ping, "ei n1 7 0 "),
            (Dir::ToHome, Body::Pong, "hp n1 7 0 "),
        ];
        for (dir, body, text) in table {
            let msg = Msg { dir, from: "n1", conn: 7, seq: 0, body };
            assert_eq!(msg.encode(), text);
            assert_eq!(decode(text), Ok(msg));
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        for bad in [
            "",
            "ht",
            "ht n1 7 0",
            "ht N1 7 0 x",
            "ht n1 x 0 x",
            "ht n1 7 -1 x",
            "xt n1 7 0 x",
            "ho n1 7 0 extra",
            "eo n1 7 0 ",
            "hx n1 7 0 1000 x",
            "ex n1 7 0 nocode",
            "ex n1 7 0 99999 x",
            "htt n1 7 0 x",
        ] {
            assert_eq!(decode(bad), Err(BadMsg), "{bad:?}");
        }
    }

    #[test]
    fn a_gap_or_a_repeat_is_noticed() {
        let mut seq = SeqIn::default();
        assert!(seq.accept(0));
        assert!(seq.accept(1));
        assert!(!seq.accept(1), "a repeat");
        assert!(!seq.accept(3), "2 was lost");
        let mut out = SeqOut::default();
        assert_eq!([out.take(), out.take()], [0, 1]);
    }
}
