//! Resume tokens come from peers: any string is refused or accepted without
//! a panic, and only tokens we issued are accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use room::{PeerId, RoomId};
use server::resume::ResumeKey;

fuzz_target!(|input: (&str, u64, u64)| {
    let (token, peer, now) = input;
    // Unix seconds: a clock far from u64::MAX, where "one second later" exists.
    let now = now % 100_000_000_000;
    let key = ResumeKey::new([42; 32]);
    let room = RoomId::parse("fuzz").expect("valid");
    if let Ok(id) = key.verify(token, &room, now) {
        // Accepted only if it is exactly what we would issue.
        let expires: u64 =
            token.split('.').nth(1).and_then(|e| e.parse().ok()).expect("accepted tokens parse");
        assert_eq!(key.issue(&room, id, expires), token);
    }
    let issued = key.issue(&room, PeerId(peer), now.saturating_add(1));
    assert_eq!(key.verify(&issued, &room, now), Ok(PeerId(peer)));
});
