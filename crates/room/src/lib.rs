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

mod access;
mod ids;
mod rooms;

pub use access::{
    Action, Admission, Grants, KnockEnd, NOTHING_HELD, PASSWORD_ATTEMPTS, PASSWORD_WINDOW_MS, PasswordChange,
    PasswordHash, RemoveReason, Role, RoomAccess, Settings,
};
pub use ids::{ChatId, ChatText, DisplayName, MediaState, NameError, PeerId, PeerIdHasher, PeerMap, RoomId};
pub use rooms::{
    BARRED_MAX, CHAT_ENTRY_OVERHEAD, ChatEntry, Closing, Config, Input, LOBBY_MAX, LeaveReason, Mode, Output,
    PEEK_NAMES, PeerInfo, Rate, Rejection, Request, Rooms,
};

#[cfg(test)]
mod tests {
    //! Data-driven tests: a script of inputs (`> ` lines), each followed by
    //! exactly the outputs it must produce. Peers are written as single
    //! letters.

    use super::*;

    fn ip(n: u8) -> std::net::IpAddr {
        std::net::IpAddr::from([10, 0, 0, n])
    }

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

    fn action(a: Action) -> &'static str {
        match a {
            Action::Mute => "mute",
            Action::StopVideo => "stop-video",
            Action::StopScreen => "stop-screen",
            Action::AskUnmute => "ask-unmute",
            Action::MakeHost => "make-host",
            Action::Remove { bar: false } => "remove",
            Action::Remove { bar: true } => "remove-bar",
        }
    }

    fn settings(s: Settings) -> String {
        let flag = |on: bool, w: &str| if on { w.to_owned() } else { String::new() };
        let words: Vec<String> =
            [flag(s.locked, "locked"), flag(s.lobby, "lobby"), flag(s.password, "password")]
                .into_iter()
                .filter(|w| !w.is_empty())
                .collect();
        if words.is_empty() { "open".to_owned() } else { words.join("+") }
    }

    fn render(out: Output<String>) -> String {
        let info = |p: &PeerInfo| {
            let host = if p.role == Role::Host { " host" } else { "" };
            format!("{} {} {}{host}", letter(p.id), p.name, media(p.media))
        };
        match out {
            Output::RoomMode { to, mode } => format!("{}: room-mode {mode:?}", letter(to)),
            Output::Joined {
                to,
                room,
                name,
                capacity,
                peers,
                chat,
                mode,
                role,
                grants,
                settings: set,
                lobby,
            } => {
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
                if role == Role::Host {
                    line.push_str(" role=host");
                }
                if grants != Grants::default() {
                    let g = |on: bool, c: char| if on { c } else { '-' };
                    line.push_str(&format!(
                        " grants={}{}{}",
                        g(grants.publish, 'p'),
                        g(grants.screen, 's'),
                        g(grants.chat, 'c')
                    ));
                }
                if set != Settings::default() {
                    line.push_str(&format!(" settings={}", settings(set)));
                }
                if !lobby.is_empty() {
                    let l: Vec<String> = lobby.iter().map(|(p, n)| format!("{} {n}", letter(*p))).collect();
                    line.push_str(&format!(" lobby=[{}]", l.join(", ")));
                }
                line
            }
            Output::Waiting { to, room } => format!("{}: waiting {room}", letter(to)),
            Output::Knock { to, peer, name } => format!("{}: knock {} {name}", letter(to), letter(peer)),
            Output::KnockGone { to, peer, reason } => {
                format!("{}: knock-gone {} {reason:?}", letter(to), letter(peer))
            }
            Output::Settings { to, settings: s } => format!("{}: settings {}", letter(to), settings(s)),
            Output::PeerRole { to, peer, role } => {
                format!("{}: peer-role {} {role:?}", letter(to), letter(peer))
            }
            Output::Moderated { to, action: a, by, held } => {
                format!("{}: moderated {} by {} held={}", letter(to), action(a), letter(by), media(held))
            }
            Output::Removed { to, room, reason, by } => {
                format!("{}: removed from {room} {reason:?} by {}", letter(to), letter(by))
            }
            Output::Allowed { to, allowed } => format!("{}: allowed {}", letter(to), media(allowed)),
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
    /// `disconnect <peer>`. Joins take `create`, `host` (a host token),
    /// `resumed`, `rhost` (a host's resume token), `pw=<password>`,
    /// `ip=<n>` (address 10.0.0.n) and `grants=<psc>`. Host actions:
    /// `admit <host> <peer>`, `deny <host> <peer>`, `settings <host>
    /// [lock=0|1] [lobby=0|1] [pw=<password>|pw=-]`, `mod <host> <peer>
    /// <action>`, `end <host>`.
    fn parse_input(line: &str) -> Input<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let opt = |key: &str| words.iter().find_map(|w| w.strip_prefix(key));
        let has = |word: &str| words.contains(&word);
        let flag = |key: &str| opt(key).map(|v| v == "1");
        let now_ms = opt("t=").map_or(0, |t| t.parse().expect("t=<ms>"));
        match words.as_slice() {
            ["join", p, room, name, ..] => Input::Join {
                peer: peer(p),
                room: RoomId::parse(room).expect("valid room in script"),
                name: DisplayName::parse(name).expect("valid name in script"),
                media: opt("m=").map_or_else(MediaState::default, parse_media),
                now_ms,
                admission: Admission {
                    addr: std::net::IpAddr::from([
                        10,
                        0,
                        0,
                        opt("ip=").map_or(1, |n| n.parse().expect("ip=<n>")),
                    ]),
                    resumed: has("resumed") || has("rhost"),
                    resumed_host: has("rhost"),
                    token_host: has("host"),
                    create: has("create"),
                    password: opt("pw=").map(str::to_owned),
                    grants: opt("grants=").map_or_else(Grants::default, |g| Grants {
                        publish: g.contains('p'),
                        screen: g.contains('s'),
                        chat: g.contains('c'),
                    }),
                    history: Vec::new(),
                    access: Box::default(),
                },
            },
            ["admit", h, p] => Input::Admit { host: peer(h), peer: peer(p) },
            ["deny", h, p] => Input::Deny { host: peer(h), peer: peer(p) },
            ["settings", h, ..] => Input::Settings {
                host: peer(h),
                locked: flag("lock="),
                lobby: flag("lobby="),
                password: opt("pw=").map(|pw| match pw {
                    "-" => PasswordChange::Clear,
                    pw => PasswordChange::Set { password: pw.to_owned(), salt: [9; 16] },
                }),
            },
            ["mod", h, p, a] => Input::Moderate {
                host: peer(h),
                peer: peer(p),
                action: match *a {
                    "mute" => Action::Mute,
                    "stop-video" => Action::StopVideo,
                    "stop-screen" => Action::StopScreen,
                    "ask-unmute" => Action::AskUnmute,
                    "make-host" => Action::MakeHost,
                    "remove" => Action::Remove { bar: false },
                    "remove-bar" => Action::Remove { bar: true },
                    other => panic!("bad action {other:?}"),
                },
            },
            ["end", h] => Input::EndCall { host: peer(h) },
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
                admission: Admission::default(),
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
            admission: Admission::default(),
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
            admission: Admission::default(),
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
            rooms.handle_input(Input::Join {
                peer: peer(p),
                room,
                name,
                media,
                now_ms: 0,
                admission: Admission::default(),
            });
        }
        assert_eq!((rooms.room_count(), rooms.member_count()), (2, 2));
        rooms.handle_input(Input::Disconnect { peer: peer("a") });
        rooms.handle_input(Input::Leave { peer: peer("b") });
        while rooms.poll_output().is_some() {}
        assert_eq!((rooms.room_count(), rooms.member_count()), (0, 0));
        assert!(rooms.poll_output().is_none());
    }

    #[test]
    /// The creator of a new room is its host; a guest's host actions are refused; a host acts only on others in its own room.
    fn only_hosts_act_and_a_host_can_make_another() {
        check(
            5,
            "
            > join a tea A create
            a: joined tea as A cap=5 peers=[] role=host
            > join b tea B
            a: peer-joined b B av- polite=false
            b: joined tea as B cap=5 peers=[a A av- host polite]
            > mod b a mute
            b: rejected Moderate NotHost
            > settings b lock=1
            b: rejected Settings NotHost
            > admit b a
            b: rejected Admit NotHost
            > end b
            b: rejected EndCall NotHost
            > mod a b make-host
            a: peer-role b Host
            b: peer-role b Host
            > mod b a mute
            a: moderated mute by b held=a--
            a: allowed -vs
            b: peer-media a -v-
            > mod a a mute
            a: rejected Moderate UnknownPeer
            > join c other C create
            c: joined other as C cap=5 peers=[] role=host
            > mod a c mute
            a: rejected Moderate UnknownPeer
            ",
        );
    }

    #[test]
    /// With the lobby on, newcomers wait (and can do nothing), hosts hear of them, admit or deny; leaving or disconnecting stops waiting; turning the lobby off admits everyone waiting.
    fn newcomers_wait_in_the_lobby_until_a_host_answers() {
        check(
            5,
            "
            > join a tea A create
            a: joined tea as A cap=5 peers=[] role=host
            > settings a lobby=1
            a: settings lobby
            > join b tea B
            a: knock b B
            b: waiting tea
            > join c tea C m=a--
            a: knock c C
            c: waiting tea
            > signal b a x
            b: rejected Signal NotJoined
            > chat b hi
            b: rejected Chat NotJoined
            > admit a b
            a: knock-gone b Admitted
            a: peer-joined b B av- polite=false
            b: joined tea as B cap=5 peers=[a A av- host polite] settings=lobby
            > join d tea D host
            a: peer-joined d D av- host polite=false
            b: peer-joined d D av- host polite=false
            d: joined tea as D cap=5 peers=[a A av- host polite, b B av- polite] role=host settings=lobby lobby=[c C]
            > deny d c
            a: knock-gone c Denied
            d: knock-gone c Denied
            c: rejected Join Denied
            > join e tea E
            a: knock e E
            d: knock e E
            e: waiting tea
            > leave e
            a: knock-gone e Left
            d: knock-gone e Left
            e: left tea
            > join f tea F
            a: knock f F
            d: knock f F
            f: waiting tea
            > disconnect f
            a: knock-gone f Left
            d: knock-gone f Left
            > join g tea G
            a: knock g G
            d: knock g G
            g: waiting tea
            > settings a lobby=0
            a: settings open
            b: settings open
            d: settings open
            a: knock-gone g Admitted
            d: knock-gone g Admitted
            a: peer-joined g G av- polite=false
            b: peer-joined g G av- polite=false
            d: peer-joined g G av- polite=false
            g: joined tea as G cap=5 peers=[a A av- host polite, b B av- polite, d D av- host polite]
            ",
        );
    }

    #[test]
    /// A resumed member walks past the lobby; when the last host leaves on purpose, the longest present member becomes host and sees who waits.
    fn resumed_members_skip_the_lobby_and_the_last_host_leaving_hands_over() {
        check(
            5,
            "
            > join a tea A create
            a: joined tea as A cap=5 peers=[] role=host
            > join b tea B
            a: peer-joined b B av- polite=false
            b: joined tea as B cap=5 peers=[a A av- host polite]
            > settings a lobby=1
            a: settings lobby
            b: settings lobby
            > disconnect b
            a: peer-left b Disconnected
            > join b tea B resumed
            a: peer-joined b B av- polite=false
            b: joined tea as B cap=5 peers=[a A av- host polite] settings=lobby
            > join c tea C resumed
            a: peer-joined c C av- polite=false
            b: peer-joined c C av- polite=false
            c: joined tea as C cap=5 peers=[a A av- host polite, b B av- polite] settings=lobby
            > join x tea X
            a: knock x X
            x: waiting tea
            > leave a
            b: peer-left a Left
            c: peer-left a Left
            b: peer-role b Host
            c: peer-role b Host
            b: knock x X
            a: left tea
            > join y tea Y
            b: knock y Y
            y: waiting tea
            ",
        );
    }

    #[test]
    fn a_locked_room_lets_in_only_hosts_and_resumed_members() {
        check(
            5,
            "
            > join a tea A create
            a: joined tea as A cap=5 peers=[] role=host
            > settings a lock=1
            a: settings locked
            > join b tea B
            b: rejected Join Locked
            > join c tea C host
            a: peer-joined c C av- host polite=false
            c: joined tea as C cap=5 peers=[a A av- host polite] role=host settings=locked
            > join d tea D resumed
            a: peer-joined d D av- polite=false
            c: peer-joined d D av- polite=false
            d: joined tea as D cap=5 peers=[a A av- host polite, c C av- host polite] settings=locked
            > settings a lock=0
            a: settings open
            c: settings open
            d: settings open
            > join b tea B
            a: peer-joined b B av- polite=false
            c: peer-joined b B av- polite=true
            d: peer-joined b B av- polite=true
            b: joined tea as B cap=5 peers=[a A av- host polite, c C av- host, d D av-]
            ",
        );
    }

    #[test]
    /// Five wrong passwords in a minute from one address, then even the right one is refused from it until the minute is over; another address is not affected.
    fn wrong_passwords_are_refused_and_limited_per_address() {
        check(
            5,
            "
            > join a tea A create
            a: joined tea as A cap=5 peers=[] role=host
            > settings a pw=kettle
            a: settings password
            > join b tea B
            b: rejected Join PasswordRequired
            > join b tea B pw=wrong t=1000
            b: rejected Join BadPassword
            > join b tea B pw=wrong t=1000
            b: rejected Join BadPassword
            > join b tea B pw=wrong t=1000
            b: rejected Join BadPassword
            > join b tea B pw=wrong t=1000
            b: rejected Join BadPassword
            > join b tea B pw=wrong t=1000
            b: rejected Join BadPassword
            > join b tea B pw=kettle t=2000
            b: rejected Join TooManyAttempts
            > join c tea C pw=kettle ip=2 t=2000
            a: peer-joined c C av- polite=false
            c: joined tea as C cap=5 peers=[a A av- host polite] settings=password
            > join b tea B pw=kettle t=61000
            a: peer-joined b B av- polite=false
            c: peer-joined b B av- polite=true
            b: joined tea as B cap=5 peers=[a A av- host polite, c C av-] settings=password
            > settings a pw=-
            a: settings open
            c: settings open
            b: settings open
            > join d tea D
            a: peer-joined d D av- polite=false
            c: peer-joined d D av- polite=false
            b: peer-joined d D av- polite=false
            d: joined tea as D cap=5 peers=[a A av- host polite, c C av- polite, b B av- polite]
            ",
        );
    }

    #[test]
    /// A host's mute, stop-video and stop-screen turn the source off and hold it off (the peer cannot turn it back on, not even by reconnecting); ask-unmute releases only the microphone and never turns it on.
    fn a_host_holds_a_source_off_until_it_asks_to_unmute() {
        check(
            5,
            "
            > join a tea A create
            a: joined tea as A cap=5 peers=[] role=host
            > join b tea B
            a: peer-joined b B av- polite=false
            b: joined tea as B cap=5 peers=[a A av- host polite]
            > mod a b mute
            b: moderated mute by a held=a--
            b: allowed -vs
            a: peer-media b -v-
            > media b av-
            b: rejected Media Held
            > media b -v-
            a: peer-media b -v-
            > mod a b stop-video
            b: moderated stop-video by a held=av-
            b: allowed --s
            a: peer-media b ---
            > media b --s
            a: peer-media b --s
            > mod a b ask-unmute
            b: moderated ask-unmute by a held=-v-
            b: allowed a-s
            > media b a-s
            a: peer-media b a-s
            > mod a b stop-screen
            b: moderated stop-screen by a held=-vs
            b: allowed a--
            a: peer-media b a--
            > disconnect b
            b: allowed avs
            a: peer-left b Disconnected
            > join b tea B resumed m=avs
            a: peer-joined b B a-- polite=false
            b: joined tea as B cap=5 peers=[a A av- host polite]
            b: allowed a--
            > media b avs
            b: rejected Media Held
            ",
        );
    }

    #[test]
    /// A barred peer cannot come back, by a new connection from its address nor by its resume token; a removed one's resume token no longer walks it past a lock.
    fn removed_peers_leave_and_barred_ones_stay_out() {
        check(
            5,
            "
            > join a tea A create
            a: joined tea as A cap=5 peers=[] role=host
            > join b tea B ip=2
            a: peer-joined b B av- polite=false
            b: joined tea as B cap=5 peers=[a A av- host polite]
            > join c tea C ip=3
            a: peer-joined c C av- polite=false
            b: peer-joined c C av- polite=false
            c: joined tea as C cap=5 peers=[a A av- host polite, b B av- polite]
            > mod a b remove-bar
            b: removed from tea Removed by a
            a: peer-left b Removed
            c: peer-left b Removed
            > join b tea B ip=2
            b: rejected Join Barred
            > join z tea Z ip=2
            z: rejected Join Barred
            > join b tea B ip=9 resumed
            b: rejected Join Barred
            > mod a c remove
            c: removed from tea Removed by a
            a: peer-left c Removed
            > join c tea C ip=3 resumed
            a: peer-joined c C av- polite=false
            c: joined tea as C cap=5 peers=[a A av- host polite]
            > settings a lock=1
            a: settings locked
            c: settings locked
            > join c tea C ip=3 resumed
            a: peer-left c Disconnected
            c: rejected Join Locked
            ",
        );
    }

    #[test]
    fn ending_the_call_empties_the_room_and_the_lobby() {
        check(
            5,
            "
            > join a tea A create
            a: joined tea as A cap=5 peers=[] role=host
            > join b tea B
            a: peer-joined b B av- polite=false
            b: joined tea as B cap=5 peers=[a A av- host polite]
            > settings a lobby=1
            a: settings lobby
            b: settings lobby
            > join c tea C
            a: knock c C
            c: waiting tea
            > mod a b mute
            b: moderated mute by a held=a--
            b: allowed -vs
            a: peer-media b -v-
            > end a
            c: rejected Join Denied
            a: removed from tea Ended by a
            b: removed from tea Ended by a
            b: allowed avs
            > join b tea B
            b: joined tea as B cap=5 peers=[]
            ",
        );
    }

    #[test]
    fn join_token_grants_limit_what_a_peer_may_send() {
        check(
            5,
            "
            > join a tea A create
            a: joined tea as A cap=5 peers=[] role=host
            > join v tea V grants=--- m=avs
            a: peer-joined v V --- polite=false
            v: joined tea as V cap=5 peers=[a A av- host polite] grants=---
            v: allowed ---
            > media v av-
            v: rejected Media NotAllowed
            > chat v hi
            v: rejected Chat NotAllowed
            > join w tea W grants=-sc m=a--
            a: peer-joined w W --- polite=false
            v: peer-joined w W --- polite=false
            w: joined tea as W cap=5 peers=[a A av- host polite, v V --- polite] grants=-sc
            w: allowed --s
            > media w --s
            a: peer-media w --s
            v: peer-media w --s
            ",
        );
    }

    #[test]
    fn a_host_keeps_its_role_across_a_resume() {
        check(
            5,
            "
            > join a tea A create
            a: joined tea as A cap=5 peers=[] role=host
            > join b tea B
            a: peer-joined b B av- polite=false
            b: joined tea as B cap=5 peers=[a A av- host polite]
            > join c tea C
            a: peer-joined c C av- polite=false
            b: peer-joined c C av- polite=false
            c: joined tea as C cap=5 peers=[a A av- host polite, b B av- polite]
            > disconnect a
            b: peer-left a Disconnected
            c: peer-left a Disconnected
            > join a tea A rhost
            b: peer-joined a A av- host polite=true
            c: peer-joined a A av- host polite=true
            a: joined tea as A cap=5 peers=[b B av-, c C av-] role=host
            > settings a lobby=1
            b: settings lobby
            c: settings lobby
            a: settings lobby
            > join d tea D
            a: knock d D
            d: waiting tea
            > leave a
            b: peer-left a Left
            c: peer-left a Left
            b: peer-role b Host
            c: peer-role b Host
            b: knock d D
            a: left tea
            > admit b d
            b: knock-gone d Admitted
            b: peer-joined d D av- polite=false
            c: peer-joined d D av- polite=false
            d: joined tea as D cap=5 peers=[b B av- host polite, c C av- polite] settings=lobby
            ",
        );
    }

    /// Cluster mode: a room that lived on another node starts here with
    /// the chat kept for it, within this core's bounds (count and age),
    /// and only if the room is new here.
    #[test]
    fn a_room_that_lived_elsewhere_starts_with_its_history_within_bounds() {
        let mut rooms: Rooms<String> =
            Rooms::new(Config { capacity: 3, chat_history: 2, chat_max_age_ms: 1000, ..Config::default() });
        let entry = |i: u64| ChatEntry {
            from: peer("z"),
            name: DisplayName::guest(),
            text: ChatText::parse(&format!("m{i}")).expect("valid"),
            ts_ms: i * 100,
            id: None,
        };
        let join = |p: &str, history: Vec<ChatEntry>| Input::Join {
            peer: peer(p),
            room: RoomId::parse("moved").expect("valid"),
            name: DisplayName::guest(),
            media: MediaState::default(),
            now_ms: 1200,
            admission: Admission { history, ..Admission::default() },
        };
        let said = |rooms: &mut Rooms<String>| -> Vec<String> {
            let mut chat = Vec::new();
            while let Some(out) = rooms.poll_output() {
                if let Output::Joined { chat: c, .. } = out {
                    chat = c.iter().map(|e| e.text.as_str().to_owned()).collect();
                }
            }
            chat
        };
        rooms.handle_input(join("a", (0..5).map(entry).collect()));
        assert_eq!(said(&mut rooms), ["m3", "m4"], "the last two, none older than a second");
        rooms.handle_input(join("b", vec![entry(9)]));
        assert_eq!(said(&mut rooms), ["m3", "m4"], "a room that is here already keeps its own");
        rooms.check_invariants();
    }

    /// Cluster mode: a room that moves to another node (its home died or
    /// drained) continues there with what its hosts set: the lock, the
    /// password, the lobby, bars by id and address, removals and holds.
    /// They apply to the first join on the new home as to any other, and a
    /// refused first join leaves no room behind.
    #[test]
    fn a_room_that_moves_keeps_its_lock_password_bars_and_holds() {
        let mut old: Rooms<String> = Rooms::new(Config { capacity: 5, ..Config::default() });
        for line in [
            "join h tea H create",
            "join g tea G",
            "join x tea X ip=7",
            "join y tea Y",
            "mod h g mute",
            "mod h x remove-bar",
            "mod h y remove",
            "settings h lock=1 pw=secret",
        ] {
            old.handle_input(parse_input(line));
        }
        while old.poll_output().is_some() {}
        let tea = RoomId::parse("tea").expect("valid");
        let kept = old.access(&tea).expect("the room exists");
        assert!(kept.locked && !kept.lobby && kept.password.is_some());
        assert_eq!(
            (kept.barred_ids.as_slice(), kept.barred_addrs.as_slice()),
            (&[peer("x")][..], &[ip(7)][..])
        );
        assert_eq!(kept.removed, [peer("x"), peer("y")]);
        assert_eq!(kept.holds, [(peer("g"), MediaState { audio: true, video: false, screen: false })]);

        // The new home: every join carries what Redis kept.
        let mut new: Rooms<String> = Rooms::new(Config { capacity: 5, ..Config::default() });
        let join = |p: &str, adm: Admission| Input::Join {
            peer: peer(p),
            room: tea.clone(),
            name: DisplayName::guest(),
            media: MediaState { audio: true, video: true, screen: false },
            now_ms: 0,
            admission: Admission { access: Box::new(kept.clone()), ..adm },
        };
        let answers = |rooms: &mut Rooms<String>| -> Vec<Output<String>> {
            std::iter::from_fn(|| rooms.poll_output()).collect()
        };
        let refused = |reason| vec![Output::Rejected { to: PeerId(0), request: Request::Join, reason }];
        let to = |mut v: Vec<Output<String>>, p: &str| {
            if let Some(Output::Rejected { to, .. }) = v.first_mut() {
                *to = peer(p);
            }
            v
        };
        for (p, adm, reason) in [
            ("x", Admission { resumed: true, addr: ip(8), ..Admission::default() }, Rejection::Barred),
            ("z", Admission { addr: ip(7), ..Admission::default() }, Rejection::Barred),
            ("y", Admission { resumed: true, ..Admission::default() }, Rejection::Locked),
            ("n", Admission { create: true, ..Admission::default() }, Rejection::Locked),
        ] {
            new.handle_input(join(p, adm));
            assert_eq!(answers(&mut new), to(refused(reason), p), "{p}");
            assert_eq!(new.room_count(), 0, "a refused first join leaves no room");
            assert_eq!(new.poll_closed(), Some((tea.clone(), Closing::Emptied)));
            new.check_invariants();
        }
        // The host comes back first, the muted guest after: still a host,
        // still locked with a password, and the hold holds.
        new.handle_input(join("h", Admission { resumed: true, resumed_host: true, ..Admission::default() }));
        let Some(Output::Joined { role, settings, .. }) = answers(&mut new).into_iter().next() else {
            panic!("the host is back")
        };
        assert_eq!(role, Role::Host);
        assert_eq!(settings, Settings { locked: true, lobby: false, password: true });
        new.handle_input(join("g", Admission { resumed: true, ..Admission::default() }));
        let out = answers(&mut new);
        assert!(out.contains(&Output::Allowed {
            to: peer("g"),
            allowed: MediaState { audio: false, video: true, screen: true }
        }));
        assert_eq!(new.access(&tea), Some(kept), "nothing lost on the way");
        assert_eq!(new.poll_closed(), None);
        new.check_invariants();
    }

    /// How rooms end, for the shell's bookkeeping: on purpose (the last
    /// member left, or a host ended the call) or by losing their members'
    /// connections. A lone member coming back with its id while its old
    /// connection lingers does not end its room, nor lose what it set.
    #[test]
    fn rooms_say_how_they_ended() {
        let mut rooms: Rooms<String> = Rooms::new(Config { capacity: 3, ..Config::default() });
        let tea = RoomId::parse("tea").expect("valid");
        let mut run = |line: &str| {
            rooms.handle_input(parse_input(line));
            while rooms.poll_output().is_some() {}
            let closed = rooms.poll_closed();
            assert_eq!(rooms.poll_closed(), None, "one at most");
            rooms.check_invariants();
            (closed, rooms.access(&tea).map(|a| a.locked))
        };
        assert_eq!(run("join a tea A create"), (None, Some(false)));
        assert_eq!(run("settings a lock=1"), (None, Some(true)));
        assert_eq!(run("join a tea A rhost"), (None, Some(true)), "back again: nothing ends, the lock stays");
        assert_eq!(run("leave a"), (Some((tea.clone(), Closing::Ended)), None));
        assert_eq!(run("join a tea A create"), (None, Some(false)));
        assert_eq!(run("disconnect a"), (Some((tea.clone(), Closing::Emptied)), None));
        assert_eq!(run("join a tea A create"), (None, Some(false)));
        assert_eq!(run("join b tea B"), (None, Some(false)));
        assert_eq!(run("end a"), (Some((tea.clone(), Closing::Ended)), None));
    }

    /// Chat is budgeted per member and per room: a flooder gets
    /// `rate-limited` past its burst and then its rate, and many members
    /// together no more than the room's; nobody else's messages are
    /// refused for one member's flood beyond what the room allows.
    #[test]
    fn chat_is_budgeted_per_member_and_per_room() {
        let mut rooms: Rooms<String> = Rooms::new(Config {
            capacity: 4,
            chat_member: Rate { per_sec: 2, burst: 3 },
            chat_room: Rate { per_sec: 4, burst: 5 },
            ..Config::default()
        });
        for line in ["join a tea A t=0", "join b tea B t=0", "join c tea C t=0"] {
            rooms.handle_input(parse_input(line));
        }
        while rooms.poll_output().is_some() {}
        let mut chat = |p: &str, t: u64| -> bool {
            rooms.handle_input(parse_input(&format!("chat {p} x t={t}")));
            let out: Vec<_> = std::iter::from_fn(|| rooms.poll_output()).collect();
            match out.as_slice() {
                [Output::Rejected { request: Request::Chat, reason: Rejection::RateLimited, .. }] => false,
                delivered => {
                    assert_eq!(delivered.len(), 3, "to everyone: {delivered:?}");
                    true
                }
            }
        };
        let a: Vec<bool> = (0..5).map(|_| chat("a", 0)).collect();
        assert_eq!(a, [true, true, true, false, false], "a's burst is 3");
        assert!(chat("b", 0) && chat("b", 0), "b has its own budget");
        assert!(!chat("c", 0), "the room's burst (5) is spent");
        assert!(chat("c", 250), "the room earns one every 250 ms");
        assert!(!chat("a", 250), "a earns one every 500 ms");
        assert!(chat("a", 500));
        rooms.check_invariants();
    }

    /// A lobby holds at most [`LOBBY_MAX`] people; the next is told so and
    /// is not listed anywhere.
    #[test]
    fn a_lobby_holds_a_bounded_number_of_people() {
        let mut rooms: Rooms<String> = Rooms::new(Config { capacity: 5, ..Config::default() });
        rooms.handle_input(parse_input("join a tea A create"));
        rooms.handle_input(parse_input("settings a lobby=1"));
        while rooms.poll_output().is_some() {}
        let join = |n: u64| Input::Join {
            peer: PeerId(1000 + n),
            room: RoomId::parse("tea").expect("valid"),
            name: DisplayName::guest(),
            media: MediaState::default(),
            now_ms: 0,
            admission: Admission::default(),
        };
        for n in 0..LOBBY_MAX as u64 {
            rooms.handle_input(join(n));
        }
        while rooms.poll_output().is_some() {}
        rooms.handle_input(join(999));
        let out: Vec<_> = std::iter::from_fn(|| rooms.poll_output()).collect();
        assert_eq!(
            out,
            [Output::Rejected { to: PeerId(1999), request: Request::Join, reason: Rejection::LobbyFull }]
        );
        assert_eq!(rooms.lobby_of(&RoomId::parse("tea").expect("valid")).len(), LOBBY_MAX);
        rooms.check_invariants();
    }
}
