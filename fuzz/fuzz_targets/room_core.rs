//! Any sequence of joins, signals, chats, media changes, leaves and
//! disconnects keeps the room core's invariants, and every output names a
//! peer that is (or just was) in the right room.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use room::{ChatId, ChatText, Config, DisplayName, Input, MediaState, Output, PeerId, RoomId, Rooms};

#[derive(Arbitrary, Debug)]
enum Step {
    Join { peer: u8, room: u8, audio: bool, video: bool, screen: bool },
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
    let config =
        Config {
            capacity: usize::from(capacity % 6) + 1,
            chat_history: 5,
            chat_history_bytes: 4 * 1024,
            chat_bytes_total: 16 * 1024,
            chat_max_age_ms: 10_000,
            p2p_max,
        };
    let mut rooms: Rooms<u32> = Rooms::new(config);
    let mut now_ms = 0u64;
    let mut payload = 0u32;
    for step in steps.into_iter().take(500) {
        let peer = |p: u8| PeerId(u64::from(p % 16));
        let input = match step {
            Step::Join { peer: p, room, audio, video, screen } => Input::Join {
                peer: peer(p),
                room: RoomId::parse(&format!("r{}", room % 4)).expect("valid"),
                name: DisplayName::guest(),
                media: MediaState { audio, video, screen },
                now_ms,
            },
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
        rooms.check_invariants();
    }
});
