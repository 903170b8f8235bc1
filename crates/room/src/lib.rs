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

pub use ids::{ChatId, ChatText, DisplayName, MediaState, NameError, PeerId, PeerIdHasher, PeerMap, RoomId};
pub use rooms::{
    CHAT_ENTRY_OVERHEAD, ChatEntry, Config, Input, LeaveReason, Mode, Output, PEEK_NAMES, PeerInfo,
    Rejection, Request, Rooms,
};

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

    fn media(m: MediaState) -> String {
        let flag = |on: bool, c: char| if on { c } else { '-' };
        [flag(m.audio, 'a'), flag(m.video, 'v'), flag(m.screen, 's')].iter().collect()
    }

    fn parse_media(flags: &str) -> MediaState {
        MediaState { audio: flags.contains('a'), video: flags.contains('v'), screen: flags.contains('s') }
    }

    fn render(out: Output<String>) -> String {
        let info = |p: &PeerInfo| format!("{} {} {}", letter(p.id), p.name, media(p.media));
        match out {
            Output::RoomMode { to, mode } => format!("{}: room-mode {mode:?}", letter(to)),
            Output::Joined { to, room, name, capacity, peers, chat, mode } => {
                let peers: Vec<String> = peers
                    .iter()
                    .map(|(p, polite)| format!("{}{}", info(p), if *polite { " polite" } else { "" }))
                    .collect();
                let chat: Vec<String> = chat
                    .iter()
                    .map(|e| {
                        let id = e.id.as_ref().map_or(String::new(), |id| format!("#{}", id.as_str()));
                        format!("{}@{}{id} {}", letter(e.from), e.ts_ms, e.text.as_str())
                    })
                    .collect();
                let mut line = format!(
                    "{}: joined {room} as {name} cap={capacity} peers=[{}]",
                    letter(to),
                    peers.join(", ")
                );
                if !chat.is_empty() {
                    line.push_str(&format!(" chat=[{}]", chat.join(", ")));
                }
                if mode != Mode::P2p {
                    line.push_str(&format!(" mode={mode:?}"));
                }
                line
            }
            Output::PeerJoined { to, peer, polite } => {
                format!("{}: peer-joined {} polite={polite}", letter(to), info(&peer))
            }
            Output::PeerLeft { to, peer, reason } => {
                format!("{}: peer-left {} {reason:?}", letter(to), letter(peer))
            }
            Output::PeerMedia { to, peer, media: m } => {
                format!("{}: peer-media {} {}", letter(to), letter(peer), media(m))
            }
            Output::Chat { to, entry } => format!(
                "{}: chat from {} {} {:?} @{}{}",
                letter(to),
                letter(entry.from),
                entry.name,
                entry.text.as_str(),
                entry.ts_ms,
                entry.id.map_or(String::new(), |id| format!(" id={}", id.as_str()))
            ),
            Output::Left { to, room } => format!("{}: left {room}", letter(to)),
            Output::Relay { to, from, payload } => {
                format!("{}: relay from {} {payload}", letter(to), letter(from))
            }
            Output::Rejected { to, request, reason } => {
                format!("{}: rejected {request:?} {reason:?}", letter(to))
            }
        }
    }

    /// Script lines: `join <peer> <room> <name> [t=<ms>] [m=<flags>]`,
    /// `signal <from> <to> <payload>`, `chat <peer> <text> [t=<ms>] [id=<id>]`
    /// (`_` in text is a space), `media <peer> <flags>` (like `a-s`), `leave <peer>`,
    /// `disconnect <peer>`.
    fn parse_input(line: &str) -> Input<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let opt = |key: &str| words.iter().find_map(|w| w.strip_prefix(key));
        let now_ms = opt("t=").map_or(0, |t| t.parse().expect("t=<ms>"));
        match words.as_slice() {
            ["join", p, room, name, ..] => Input::Join {
                peer: peer(p),
                room: RoomId::parse(room).expect("valid room in script"),
                name: DisplayName::parse(name).expect("valid name in script"),
                media: opt("m=").map_or_else(MediaState::default, parse_media),
                now_ms,
            },
            ["signal", from, to, payload] => {
                Input::Signal { from: peer(from), to: peer(to), payload: (*payload).to_owned() }
            }
            ["chat", p, text, ..] => {
                let text = ChatText::parse(&text.replace('_', " ")).expect("valid chat in script");
                let id = opt("id=").map(|id| ChatId::parse(id).expect("valid chat id in script"));
                Input::Chat { peer: peer(p), text, id, now_ms }
            }
            ["media", p, flags] => Input::Media { peer: peer(p), media: parse_media(flags) },
            ["leave", p] => Input::Leave { peer: peer(p) },
            ["disconnect", p] => Input::Disconnect { peer: peer(p) },
            _ => panic!("bad script line {line:?}"),
        }
    }

    /// Runs `script` on a core of the given capacity and compares the whole
    /// transcript, so a missing or an extra output both fail.
    fn check(capacity: usize, script: &str) {
        check_with(Config { capacity, ..Config::default() }, script);
    }

    fn check_with(config: Config, script: &str) {
        let mut rooms = Rooms::new(config);
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
            a: joined tea as Minji cap=2 peers=[]
            > join b Tea Joon
            a: peer-joined b Joon av- polite=false
            b: joined tea as Joon cap=2 peers=[a Minji av- polite]
            > signal b a offer
            a: relay from b offer
            > signal a b answer
            b: relay from a answer
            > leave b
            a: peer-left b Left
            b: left tea
            > join b tea Joon
            a: peer-joined b Joon av- polite=false
            b: joined tea as Joon cap=2 peers=[a Minji av- polite]
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
            a: joined tea as A cap=2 peers=[]
            > join b tea B
            a: peer-joined b B av- polite=false
            b: joined tea as B cap=2 peers=[a A av- polite]
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
    fn a_peek_names_the_first_members_in_join_order_and_no_more() {
        let mut rooms: Rooms<String> = Rooms::new(Config { capacity: 20, ..Config::default() });
        let room = RoomId::parse("tea").expect("room");
        assert_eq!(rooms.names_in(&room), Vec::<&str>::new(), "nobody in a room that is not there");
        let letters: Vec<String> = ('a'..='j').map(String::from).collect();
        for l in &letters {
            let name = DisplayName::parse(&l.to_uppercase()).expect("name");
            rooms.handle_input(Input::Join {
                peer: peer(l),
                room: room.clone(),
                name,
                media: MediaState::default(),
                now_ms: 0,
            });
        }
        while rooms.poll_output().is_some() {}
        rooms.handle_input(Input::Leave { peer: peer("b") });
        while rooms.poll_output().is_some() {}
        assert_eq!(rooms.names_in(&room), ["A", "C", "D", "E", "F", "G", "H", "I"]);
        assert_eq!(PEEK_NAMES, 8);
        assert_eq!(rooms.occupancy(&room), (9, 20));
        assert_eq!(rooms.names_in(&RoomId::parse("other").expect("room")), Vec::<&str>::new());
    }

    #[test]
    fn rooms_are_isolated() {
        check(
            2,
            "
            > join a one A
            a: joined one as A cap=2 peers=[]
            > join b one B
            a: peer-joined b B av- polite=false
            b: joined one as B cap=2 peers=[a A av- polite]
            > join c two C
            c: joined two as C cap=2 peers=[]
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
            a: joined tea as A cap=2 peers=[]
            > join b tea B
            a: peer-joined b B av- polite=false
            b: joined tea as B cap=2 peers=[a A av- polite]
            > signal b a sdp
            a: relay from b sdp
            > join a other A
            b: peer-left a Disconnected
            a: joined other as A cap=2 peers=[]
            > leave a
            a: left other
            > chat a hi
            a: rejected Chat NotJoined
            > media a -
            a: rejected Media NotJoined
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
            a: joined m as A cap=3 peers=[]
            > join b m B
            a: peer-joined b B av- polite=false
            b: joined m as B cap=3 peers=[a A av- polite]
            > join c m C
            a: peer-joined c C av- polite=false
            b: peer-joined c C av- polite=false
            c: joined m as C cap=3 peers=[a A av- polite, b B av- polite]
            > disconnect b
            a: peer-left b Disconnected
            c: peer-left b Disconnected
            > join d m D
            a: peer-joined d D av- polite=false
            c: peer-joined d D av- polite=false
            d: joined m as D cap=3 peers=[a A av- polite, c C av- polite]
            ",
        );
    }

    #[test]
    fn chat_reaches_the_whole_room_and_newcomers_get_recent_history() {
        check(
            3,
            "
            > join a r A t=1000
            a: joined r as A cap=3 peers=[]
            > chat a <script>hi</script> t=2000
            a: chat from a A \"<script>hi</script>\" @2000
            > join b r B t=3000
            a: peer-joined b B av- polite=false
            b: joined r as B cap=3 peers=[a A av- polite] chat=[a@2000 <script>hi</script>]
            > chat b hello_there t=4000
            a: chat from b B \"hello there\" @4000
            b: chat from b B \"hello there\" @4000
            > join c other C t=4000
            c: joined other as C cap=3 peers=[]
            > leave b
            a: peer-left b Left
            b: left r
            > join b r B t=3602001
            a: peer-joined b B av- polite=false
            b: joined r as B cap=3 peers=[a A av- polite] chat=[b@4000 hello there]
            ",
        );
    }

    /// A message's id goes with it to everyone, and into the history, so a
    /// sender back after a dropped connection can tell it arrived; the core
    /// passes a repeated id on as it is (receivers drop repeats).
    #[test]
    fn chat_ids_travel_with_their_messages_and_into_the_history() {
        check(
            3,
            "
            > join a r A t=1000
            a: joined r as A cap=3 peers=[]
            > join b r B t=1000
            a: peer-joined b B av- polite=false
            b: joined r as B cap=3 peers=[a A av- polite]
            > chat a hi t=2000 id=m-1
            a: chat from a A \"hi\" @2000 id=m-1
            b: chat from a A \"hi\" @2000 id=m-1
            > chat a hi t=2500 id=m-1
            a: chat from a A \"hi\" @2500 id=m-1
            b: chat from a A \"hi\" @2500 id=m-1
            > chat a plain t=3000
            a: chat from a A \"plain\" @3000
            b: chat from a A \"plain\" @3000
            > disconnect a
            b: peer-left a Disconnected
            > join a r A t=4000
            b: peer-joined a A av- polite=true
            a: joined r as A cap=3 peers=[b B av-] chat=[a@2000#m-1 hi, a@2500#m-1 hi, a@3000 plain]
            ",
        );
    }

    /// Issue 10, finding 9: chat history was bounded by count only, so
    /// rooms of one member each could hold 100 messages of 4000 bytes
    /// apiece. It is bounded by bytes per room and in all: past the total,
    /// a room forgets its own oldest first, and a message that does not
    /// fit is delivered but not remembered.
    #[test]
    fn history_is_bounded_by_bytes_per_room_and_in_all() {
        let long = "x".repeat(1000);
        // "Guest" and 1000 bytes of text, plus the overhead.
        let one = 1005 + CHAT_ENTRY_OVERHEAD;
        let mut rooms: Rooms<String> = Rooms::new(Config {
            capacity: 4,
            chat_history_bytes: 3 * one,
            chat_bytes_total: 5 * one,
            ..Config::default()
        });
        let join = |p: &str, r: &str| Input::Join {
            peer: peer(p),
            room: RoomId::parse(r).expect("valid"),
            name: DisplayName::guest(),
            media: MediaState::default(),
            now_ms: 0,
        };
        let say = |p: &str, i: u64| Input::Chat {
            peer: peer(p),
            text: ChatText::parse(&format!("{i}{}", &long[1..])).expect("valid"),
            id: None,
            now_ms: i,
        };
        let history = |rooms: &mut Rooms<String>, p: &str, r: &str| -> Vec<u64> {
            while rooms.poll_output().is_some() {}
            rooms.handle_input(join(p, r));
            let chat = std::iter::from_fn(|| rooms.poll_output())
                .find_map(|o| match o {
                    Output::Joined { chat, .. } => Some(chat),
                    _ => None,
                })
                .expect("joined");
            chat.iter().map(|e| e.ts_ms).collect()
        };
        rooms.handle_input(join("a", "one"));
        for i in 1..=5 {
            rooms.handle_input(say("a", i));
            rooms.check_invariants();
        }
        assert_eq!(history(&mut rooms, "b", "one"), [3, 4, 5], "three fit in a room");
        rooms.handle_input(join("c", "two"));
        for i in 6..=8 {
            rooms.handle_input(say("c", i));
            rooms.check_invariants();
        }
        // Five fit in all: room two keeps what room one leaves room for.
        assert_eq!(history(&mut rooms, "d", "two"), [7, 8]);
        // Room one emptied: its bytes are free again.
        rooms.handle_input(Input::Disconnect { peer: peer("a") });
        rooms.handle_input(Input::Disconnect { peer: peer("b") });
        rooms.handle_input(say("c", 9));
        rooms.check_invariants();
        assert_eq!(history(&mut rooms, "e", "two"), [7, 8, 9]);
    }

    #[test]
    fn history_is_bounded_and_goes_with_the_room() {
        let mut rooms: Rooms<String> =
            Rooms::new(Config { capacity: 2, chat_history: 3, chat_max_age_ms: 1000, ..Config::default() });
        let room = RoomId::parse("r").expect("valid");
        let join = |p: &str, now_ms| Input::Join {
            peer: peer(p),
            room: room.clone(),
            name: DisplayName::guest(),
            media: MediaState::default(),
            now_ms,
        };
        rooms.handle_input(join("a", 0));
        for i in 0..10 {
            let text = ChatText::parse(&format!("m{i}")).expect("valid");
            rooms.handle_input(Input::Chat { peer: peer("a"), text, id: None, now_ms: 100 + i });
        }
        rooms.check_invariants();
        while rooms.poll_output().is_some() {}
        rooms.handle_input(join("b", 200));
        let history = std::iter::from_fn(|| rooms.poll_output())
            .find_map(|o| match o {
                Output::Joined { chat, .. } => Some(chat),
                _ => None,
            })
            .expect("joined");
        let texts: Vec<&str> = history.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["m7", "m8", "m9"]);
        // Everyone leaves: the room and its history are gone.
        rooms.handle_input(Input::Disconnect { peer: peer("a") });
        rooms.handle_input(Input::Disconnect { peer: peer("b") });
        while rooms.poll_output().is_some() {}
        rooms.handle_input(join("a", 300));
        let fresh = std::iter::from_fn(|| rooms.poll_output())
            .any(|o| matches!(o, Output::Joined { chat, .. } if chat.is_empty()));
        assert!(fresh);
    }

    #[test]
    fn media_state_is_shared_with_the_room_and_newcomers() {
        check(
            3,
            "
            > join a r A m=a--
            a: joined r as A cap=3 peers=[]
            > join b r B
            a: peer-joined b B av- polite=false
            b: joined r as B cap=3 peers=[a A a-- polite]
            > media b -vs
            a: peer-media b -vs
            > media a av-
            b: peer-media a av-
            > join c r C
            a: peer-joined c C av- polite=false
            b: peer-joined c C av- polite=false
            c: joined r as C cap=3 peers=[a A av- polite, b B -vs polite]
            ",
        );
    }

    #[test]
    fn a_peer_back_with_its_old_id_replaces_itself_and_keeps_its_roles() {
        check(
            2,
            "
            > join b r B
            b: joined r as B cap=2 peers=[]
            > join a r A
            b: peer-joined a A av- polite=true
            a: joined r as A cap=2 peers=[b B av-]
            > join b r B
            a: peer-left b Disconnected
            a: peer-joined b B av- polite=false
            b: joined r as B cap=2 peers=[a A av- polite]
            > signal a b still-routed
            b: relay from a still-routed
            ",
        );
    }

    #[test]
    fn a_third_peer_moves_the_room_to_the_sfu_for_good() {
        check_with(
            Config { capacity: 4, p2p_max: Some(2), ..Config::default() },
            "
            > join a r A
            a: joined r as A cap=4 peers=[]
            > join b r B
            a: peer-joined b B av- polite=false
            b: joined r as B cap=4 peers=[a A av- polite]
            > join c r C
            a: room-mode Sfu
            b: room-mode Sfu
            a: peer-joined c C av- polite=false
            b: peer-joined c C av- polite=false
            c: joined r as C cap=4 peers=[a A av- polite, b B av- polite] mode=Sfu
            > leave c
            a: peer-left c Left
            b: peer-left c Left
            c: left r
            > join d r D
            a: peer-joined d D av- polite=false
            b: peer-joined d D av- polite=false
            d: joined r as D cap=4 peers=[a A av- polite, b B av- polite] mode=Sfu
            > join e other E
            e: joined other as E cap=4 peers=[]
            > disconnect a
            b: peer-left a Disconnected
            d: peer-left a Disconnected
            > disconnect b
            d: peer-left b Disconnected
            > disconnect d
            > join a r A
            a: joined r as A cap=4 peers=[]
            ",
        );
    }

    #[test]
    fn without_an_sfu_rooms_stay_browser_to_browser() {
        check(
            3,
            "
            > join a r A
            a: joined r as A cap=3 peers=[]
            > join b r B
            a: peer-joined b B av- polite=false
            b: joined r as B cap=3 peers=[a A av- polite]
            > join c r C
            a: peer-joined c C av- polite=false
            b: peer-joined c C av- polite=false
            c: joined r as C cap=3 peers=[a A av- polite, b B av- polite]
            ",
        );
    }

    #[test]
    fn rooms_vanish_when_empty() {
        let mut rooms: Rooms<String> = Rooms::new(Config::default());
        for (i, p) in ["a", "b"].iter().enumerate() {
            let room = RoomId::parse(&format!("r{i}")).expect("valid");
            let (name, media) = (DisplayName::guest(), MediaState::default());
            rooms.handle_input(Input::Join { peer: peer(p), room, name, media, now_ms: 0 });
        }
        assert_eq!((rooms.room_count(), rooms.member_count()), (2, 2));
        rooms.handle_input(Input::Disconnect { peer: peer("a") });
        rooms.handle_input(Input::Leave { peer: peer("b") });
        while rooms.poll_output().is_some() {}
        assert_eq!((rooms.room_count(), rooms.member_count()), (0, 0));
        assert!(rooms.poll_output().is_none());
    }
}
