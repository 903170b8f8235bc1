//! Any sequence of joins (as hosts, with passwords, resumed), signals,
//! chats, media changes, host actions, leaves and disconnects keeps the
//! room core's invariants, and every output names a peer that is (or just
//! was) in the right room.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use room::{
    Action, Admission, ChatId, ChatText, Config, DisplayName, Grants, Input, MediaState, Output,
    PasswordChange, PasswordHash, PeerId, Rate, RoomAccess, RoomId, Rooms,
};

#[derive(Arbitrary, Debug)]
enum Step {
    Join { peer: u8, room: u8, audio: bool, video: bool, screen: bool, how: u8, addr: u8, kept: Option<u16> },
    Admit { host: u8, peer: u8, yes: bool },
    Settings { host: u8, locked: Option<bool>, lobby: Option<bool>, password: Option<Option<u8>> },
    Moderate { host: u8, peer: u8, action: u8 },
    EndCall { host: u8 },
    Signal { from: u8, to: u8 },
    Chat { peer: u8, text: u8, id: Option<u8> },
    Media { peer: u8, audio: bool, video: bool, screen: bool },
    Leave { peer: u8 },
    Disconnect { peer: u8 },
    Tick { ms: u16 },
}

fuzz_target!(|input: (u8, Vec<Step>)| {
    let (capacity, steps) = input;
    // Odd capacities also switch rooms to the SFU past two members.
    let p2p_max = (capacity & 1 == 1).then_some(2);
    let config = Config {
        capacity: usize::from(capacity % 6) + 1,
        chat_history: 5,
        chat_history_bytes: 4 * 1024,
        chat_bytes_total: 16 * 1024,
        chat_max_age_ms: 10_000,
        p2p_max,
        // Small budgets, so that fuzzing reaches the refusals.
        chat_member: Rate { per_sec: 2, burst: 3 },
        chat_room: Rate { per_sec: 3, burst: 5 },
    };
    let mut rooms: Rooms<u32> = Rooms::new(config);
    let mut now_ms = 0u64;
    let mut payload = 0u32;
    for step in steps.into_iter().take(500) {
        let peer = |p: u8| PeerId(u64::from(p % 16));
        let input = match step {
            Step::Join { peer: p, room, audio, video, screen, how, addr, kept } => Input::Join {
                peer: peer(p),
                room: RoomId::parse(&format!("r{}", room % 4)).expect("valid"),
                name: DisplayName::guest(),
                media: MediaState { audio, video, screen },
                now_ms,
                admission: Admission {
                    addr: std::net::IpAddr::from([10, 0, 0, addr % 4]),
                    resumed: how & 1 != 0,
                    resumed_host: how & 2 != 0,
                    token_host: how & 4 != 0,
                    create: how & 8 != 0,
                    password: (how & 16 != 0).then(|| format!("p{}", how >> 6)),
                    grants: Grants { publish: how & 32 == 0, screen: true, chat: how & 64 == 0 },
                    history: Vec::new(),
                    // What a previous home kept (cluster mode).
                    access: Box::new(kept.map_or_else(RoomAccess::default, |k| RoomAccess {
                        locked: k & 1 != 0,
                        lobby: k & 2 != 0,
                        password: (k & 4 != 0).then(|| PasswordHash::new("p0", [1; 16])),
                        barred_ids: vec![peer((k >> 3) as u8)],
                        barred_addrs: vec![std::net::IpAddr::from([10, 0, 0, (k >> 7) as u8 % 4])],
                        removed: vec![peer((k >> 9) as u8)],
                        holds: vec![(
                            peer((k >> 12) as u8),
                            MediaState { audio: k & 0x100 != 0, video: k & 0x200 != 0, screen: false },
                        )],
                    })),
                },
            },
            Step::Admit { host, peer: p, yes: true } => Input::Admit { host: peer(host), peer: peer(p) },
            Step::Admit { host, peer: p, yes: false } => Input::Deny { host: peer(host), peer: peer(p) },
            Step::Settings { host, locked, lobby, password } => Input::Settings {
                host: peer(host),
                locked,
                lobby,
                password: password.map(|p| match p {
                    Some(p) => PasswordChange::Set { password: format!("p{}", p % 4), salt: [p; 16] },
                    None => PasswordChange::Clear,
                }),
            },
            Step::Moderate { host, peer: p, action } => Input::Moderate {
                host: peer(host),
                peer: peer(p),
                action: match action % 7 {
                    0 => Action::Mute,
                    1 => Action::StopVideo,
                    2 => Action::StopScreen,
                    3 => Action::AskUnmute,
                    4 => Action::MakeHost,
                    5 => Action::Remove { bar: false },
                    _ => Action::Remove { bar: true },
                },
            },
            Step::EndCall { host } => Input::EndCall { host: peer(host) },
            Step::Signal { from, to } => {
                payload += 1;
                Input::Signal { from: peer(from), to: peer(to), payload }
            }
            Step::Chat { peer: p, text, id } => Input::Chat {
                peer: peer(p),
                text: ChatText::parse(&format!("m{text}")).expect("valid"),
                id: id.map(|id| ChatId::parse(&format!("c{id}")).expect("valid")),
                now_ms,
            },
            Step::Media { peer: p, audio, video, screen } => {
                Input::Media { peer: peer(p), media: MediaState { audio, video, screen } }
            }
            Step::Leave { peer: p } => Input::Leave { peer: peer(p) },
            Step::Disconnect { peer: p } => Input::Disconnect { peer: peer(p) },
            Step::Tick { ms } => {
                now_ms += u64::from(ms);
                continue;
            }
        };
        let relay = match &input {
            Input::Signal { from, to, .. } => Some((*from, *to)),
            _ => None,
        };
        rooms.handle_input(input);
        while let Some(out) = rooms.poll_output() {
            if let Output::Relay { to, from, .. } = out {
                // Relayed only as asked, only inside one room.
                assert_eq!(Some((from, to)), relay);
                assert_ne!(from, to);
                assert_eq!(rooms.room_of(from), rooms.room_of(to));
                assert!(rooms.room_of(to).is_some());
            }
        }
        while rooms.poll_closed().is_some() {}
        rooms.check_invariants();
    }
});
