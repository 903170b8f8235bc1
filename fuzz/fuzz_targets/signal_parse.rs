//! Every text frame a peer can send goes through `signal::parse`: it must
//! answer each with a message or an error, never a panic, and what it
//! accepts must survive being relayed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // The fast path for signals and the general parser agree.
    let fast = signal::parse(text).map(|m| format!("{m:?}")).map_err(|e| e.to_string());
    let general = signal::parse_general(text).map(|m| format!("{m:?}")).map_err(|e| e.to_string());
    assert_eq!(fast, general);
    match signal::parse(text) {
        Ok(signal::ClientMsg::Signal { to, data }) => {
            // The relayed form is well-formed JSON carrying the very same
            // payload bytes. (Checked with the same grammar the parser uses:
            // payloads may hold what JSON's grammar allows but serde_json's
            // Value refuses, like 1e999 or a lone surrogate escape, which
            // browsers' JSON.parse accepts.)
            let out = signal::encode_relay(to, data.get());
            #[derive(serde::Deserialize)]
            struct Relayed<'a> {
                #[serde(borrow)]
                data: &'a serde_json::value::RawValue,
            }
            let back: Relayed<'_> = serde_json::from_str(&out).expect("relay is JSON");
            assert_eq!(back.data.get(), data.get());
        }
        Ok(msg) => {
            let _ = msg.kind();
        }
        Err(e) => assert!(!e.message.is_empty()),
    }
});
