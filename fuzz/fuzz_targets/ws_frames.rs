//! Every byte a WebSocket client sends goes through `signal::ws::Decoder`:
//! it must never panic, each frame it takes must come from the bytes it
//! was given, and bytes arriving in pieces must decode exactly as they do
//! all at once (as reads split them at any point).
#![no_main]

use libfuzzer_sys::fuzz_target;
use signal::ws::Decoder;

/// Decodes `bytes` fed in pieces of `step` bytes (all at once for 0), as the
/// server's socket does: appending each read to what is left undecoded.
/// Returns the events, and the error that ended the stream, if any.
fn decode(bytes: &[u8], max: usize, step: usize) -> (Vec<String>, Option<String>) {
    let mut decoder = Decoder::new(max);
    let mut events = Vec::new();
    let mut buf = Vec::new();
    let mut decoded = 0;
    let pieces: Vec<&[u8]> = if step == 0 { vec![bytes] } else { bytes.chunks(step).collect() };
    for piece in pieces {
        buf.drain(..decoded);
        decoded = 0;
        buf.extend_from_slice(piece);
        loop {
            let len = buf.len() - decoded;
            match decoder.decode(&mut buf[decoded..]) {
                Ok(Some((used, event))) => {
                    assert!(used > 0 && used <= len, "took {used} of {len} bytes");
                    if let Some(event) = event {
                        events.push(format!("{event:?}"));
                    }
                    decoded += used;
                }
                Ok(None) => break,
                Err(e) => return (events, Some(format!("{e:?} {}", e.close_code()))),
            }
        }
    }
    (events, None)
}

fuzz_target!(|input: (u8, u8, &[u8])| {
    let (max, step, bytes) = input;
    let max = usize::from(max) * 4;
    let whole = decode(bytes, max, 0);
    let pieces = decode(bytes, max, usize::from(step % 16) + 1);
    assert_eq!(whole, pieces);
});
