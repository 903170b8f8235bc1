//! The SFU's forwarding core under any sequence of what participants can
//! make happen (join, publish, leave, report tile sizes, ask for
//! keyframes, send frames and audio levels) and what the network reports
//! (bandwidth, sessions ready, keyframe requests lost): it never panics and its bookkeeping stays consistent
//! (subscriptions only inside a room, nobody receives their own tracks).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sfu::{Config, Forwarder, Layer, ParticipantId, Source, TrackKey};

#[derive(Arbitrary, Debug)]
enum Step {
    Join { who: u8, room: u8 },
    Leave { who: u8 },
    Publish { who: u8, source: u8, layers: u8 },
    Unpublish { who: u8, source: u8 },
    Bandwidth { who: u8, bps: u32 },
    Tile { who: u8, of: u8, height: u16 },
    Keyframe { who: u8, of: u8, source: u8 },
    Frame { of: u8, source: u8, layer: u8, key: bool, bytes: u16 },
    Level { who: u8, level: u8 },
    Clock,
    Ready { who: u8, of: u8, source: u8 },
    Failed { of: u8, source: u8, layer: u8 },
    Tick { ms: u16 },
}

fn source(s: u8) -> Source {
    Source::ALL[usize::from(s % 3)]
}

fuzz_target!(|input: (u8, Vec<Step>)| {
    let (max_video, steps) = input;
    let mut f: Forwarder<u8> = Forwarder::new(Config { max_video: usize::from(max_video % 5), ..Config::default() });
    let id = |p: u8| ParticipantId(u64::from(p % 12));
    let mut now = 0u64;
    for step in steps.into_iter().take(400) {
        match step {
            Step::Join { who, room } => f.join(now, id(who), room % 3),
            Step::Leave { who } => f.leave(id(who)),
            Step::Publish { who, source: s, layers } => f.publish(now, id(who), source(s), layers),
            Step::Unpublish { who, source: s } => f.unpublish(id(who), source(s)),
            Step::Bandwidth { who, bps } => f.set_bandwidth(now, id(who), u64::from(bps)),
            Step::Tile { who, of, height } => f.set_tile(now, id(who), id(of), u32::from(height)),
            Step::Keyframe { who, of, source: s } => {
                f.keyframe_requested(now, id(who), TrackKey { publisher: id(of), source: source(s) });
            }
            Step::Frame { of, source: s, layer, key, bytes } => {
                let track = TrackKey { publisher: id(of), source: source(s) };
                let receivers = f.forward(now, track, Layer(layer % 4), key, usize::from(bytes)).to_vec();
                assert!(!receivers.contains(&track.publisher), "nobody receives their own track");
            }
            Step::Level { who, level } => f.audio_level(id(who), level),
            Step::Clock => f.tick(now),
            Step::Ready { who, of, source: s } => {
                f.set_ready(now, id(who), TrackKey { publisher: id(of), source: source(s) });
            }
            Step::Failed { of, source: s, layer } => {
                f.keyframe_request_failed(TrackKey { publisher: id(of), source: source(s) }, Layer(layer % 4));
            }
            Step::Tick { ms } => now += u64::from(ms),
        }
        while f.poll_output().is_some() {}
        f.check_invariants();
    }
});
