//! Sans-IO rooms for webconf: who is in which room, and who may send to whom.
//!
//! [`Rooms`] is a plain state machine. The IO shell feeds it
//! [`Input`]s (a peer joins, signals, leaves, disconnects) and drains
//! [`Output`]s, each addressed to exactly one peer. It never touches a
//! socket, a clock, a task or JSON, so everything it decides is tested here
//! directly, by scripts of inputs and the outputs they must produce.
//!
//! The routing rule the whole product rests on lives in this crate: a payload
//! is relayed only to the one peer it names, and only if that peer is in the
//! sender's room.

mod ids;
mod rooms;

pub use ids::{DisplayName, NameError, PeerId, RoomId};
pub use rooms::{Config, Input, LeaveReason, Output, PeerInfo, Rejection, Request, Rooms};

#[cfg(test)]
mod tests {
    //! Data-driven tests: a script of inputs (`> ` lines), each followed by
    //! exactly the outputs it must produce. Peers are written as single
    //! letters.

    use super::*;

    fn peer(letter: &str) -> PeerId {
        let b = letter.as_bytes();
        assert_eq!(b.len(), 1, "peers are single letters: {letter:?}");
        PeerId(u64::from(b[0]))
    }

    fn letter(id: PeerId) -> char {
        char::from(u8::try_from(id.0).expect("test peers are letters"))
    }

    fn render(out: Output<String>) -> String {
        let infos = |peers: &[PeerInfo]| {
            peers.iter().map(|p| format!("{} {}", letter(p.id), p.name)).collect::<Vec<_>>().join(", ")
        };
        match out {
            Output::Joined { to, room, name, capacity, polite, peers } => format!(
                "{}: joined {room} as {name} polite={polite} cap={capacity} peers=[{}]",
                letter(to),
                infos(&peers)
            ),
            Output::PeerJoined { to, peer, polite } => {
                format!("{}: peer-joined {} {} polite={polite}", letter(to), letter(peer.id), peer.name)
            }
            Output::PeerLeft { to, peer, reason } => {
                format!("{}: peer-left {} {reason:?}", letter(to), letter(peer))
            }
            Output::Left { to, room } => format!("{}: left {room}", letter(to)),
            Output::Relay { to, from, payload } => {
                format!("{}: relay from {} {payload}", letter(to), letter(from))
            }
            Output::Rejected { to, request, reason } => {
                format!("{}: rejected {request:?} {reason:?}", letter(to))
            }
        }
    }

    fn parse_input(line: &str) -> Input<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["join", p, room, name] => Input::Join {
                peer: peer(p),
                room: RoomId::parse(room).expect("valid room in script"),
                name: DisplayName::parse(name).expect("valid name in script"),
            },
            ["signal", from, to, payload] => {
                Input::Signal { from: peer(from), to: peer(to), payload: (*payload).to_owned() }
            }
            ["leave", p] => Input::Leave { peer: peer(p) },
            ["disconnect", p] => Input::Disconnect { peer: peer(p) },
            _ => panic!("bad script line {line:?}"),
        }
    }

    /// Runs `script` on a core of the given capacity and compares the whole
    /// transcript, so a missing or an extra output both fail.
    fn check(capacity: usize, script: &str) {
        let mut rooms = Rooms::new(Config { capacity });
        let mut transcript = String::new();
        for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(input) = line.strip_prefix("> ") {
                transcript.push_str(line);
                transcript.push('\n');
                rooms.handle_input(parse_input(input));
                while let Some(out) = rooms.poll_output() {
                    transcript.push_str(&render(out));
                    transcript.push('\n');
                }
            }
        }
        let expected: String =
            script.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| format!("{l}\n")).collect();
        assert_eq!(transcript, expected);
        rooms.check_invariants();
    }

    #[test]
    fn two_peers_call_and_hang_up() {
        check(
            2,
            "
            > join a tea Minji
            a: joined tea as Minji polite=true cap=2 peers=[]
            > join b Tea Joon
            a: peer-joined b Joon polite=false
            b: joined tea as Joon polite=true cap=2 peers=[a Minji]
            > signal b a offer
            a: relay from b offer
            > signal a b answer
            b: relay from a answer
            > leave b
            a: peer-left b Left
            b: left tea
            > join b tea Joon
            a: peer-joined b Joon polite=false
            b: joined tea as Joon polite=true cap=2 peers=[a Minji]
            > disconnect a
            b: peer-left a Disconnected
            ",
        );
    }

    #[test]
    fn third_peer_is_refused_and_nobody_else_hears_of_it() {
        check(
            2,
            "
            > join a tea A
            a: joined tea as A polite=true cap=2 peers=[]
            > join b tea B
            a: peer-joined b B polite=false
            b: joined tea as B polite=true cap=2 peers=[a A]
            > join c tea C
            c: rejected Join RoomFull { capacity: 2 }
            > signal c a hi
            c: rejected Signal NotJoined
            > signal a b still-fine
            b: relay from a still-fine
            > disconnect c
            ",
        );
    }

    #[test]
    fn rooms_are_isolated() {
        check(
            2,
            "
            > join a one A
            a: joined one as A polite=true cap=2 peers=[]
            > join b one B
            a: peer-joined b B polite=false
            b: joined one as B polite=true cap=2 peers=[a A]
            > join c two C
            c: joined two as C polite=true cap=2 peers=[]
            > signal a c across
            a: rejected Signal UnknownPeer
            > signal c a across
            c: rejected Signal UnknownPeer
            > signal a a self
            a: rejected Signal UnknownPeer
            > signal a z nobody
            a: rejected Signal UnknownPeer
            > disconnect b
            a: peer-left b Disconnected
            ",
        );
    }

    #[test]
    fn bad_requests_change_nothing() {
        check(
            2,
            "
            > leave a
            a: rejected Leave NotJoined
            > disconnect a
            > join a tea A
            a: joined tea as A polite=true cap=2 peers=[]
            > join a other A
            a: rejected Join AlreadyJoined
            > join a tea A
            a: rejected Join AlreadyJoined
            > leave a
            a: left tea
            > leave a
            a: rejected Leave NotJoined
            ",
        );
    }

    #[test]
    fn mesh_room_keeps_join_order_and_roles() {
        check(
            3,
            "
            > join a m A
            a: joined m as A polite=true cap=3 peers=[]
            > join b m B
            a: peer-joined b B polite=false
            b: joined m as B polite=true cap=3 peers=[a A]
            > join c m C
            a: peer-joined c C polite=false
            b: peer-joined c C polite=false
            c: joined m as C polite=true cap=3 peers=[a A, b B]
            > disconnect b
            a: peer-left b Disconnected
            c: peer-left b Disconnected
            > join d m D
            a: peer-joined d D polite=false
            c: peer-joined d D polite=false
            d: joined m as D polite=true cap=3 peers=[a A, c C]
            ",
        );
    }

    #[test]
    fn rooms_vanish_when_empty() {
        let mut rooms: Rooms<String> = Rooms::new(Config { capacity: 2 });
        for (i, p) in ["a", "b"].iter().enumerate() {
            let room = RoomId::parse(&format!("r{i}")).expect("valid");
            rooms.handle_input(Input::Join { peer: peer(p), room, name: DisplayName::guest() });
        }
        assert_eq!((rooms.room_count(), rooms.member_count()), (2, 2));
        rooms.handle_input(Input::Disconnect { peer: peer("a") });
        rooms.handle_input(Input::Leave { peer: peer("b") });
        while rooms.poll_output().is_some() {}
        assert_eq!((rooms.room_count(), rooms.member_count()), (0, 0));
        assert!(rooms.poll_output().is_none());
    }
}
