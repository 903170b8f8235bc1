//! The Origin and Host headers come from anyone: the check answers without
//! a panic, and a foreign origin never passes for our own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::origin::OriginPolicy;

fuzz_target!(|input: (&str, &str, bool)| {
    let (origin, host, trust_loopback) = input;
    let policy = OriginPolicy::new(&["https://meet.example.org".to_owned()], trust_loopback);
    let allowed = policy.allows(Some(origin), Some(host));
    if allowed && !host.is_empty() {
        // What passes is our own host, loopback (only when trusted), or
        // the configured origin.
        let lower = origin.to_ascii_lowercase();
        let loopback = lower.contains("localhost") || lower.contains("127.") || lower.contains("[::1]");
        let ok = lower.contains(&host.trim().to_ascii_lowercase())
            || (trust_loopback && loopback)
            || lower.starts_with("https://meet.example.org");
        assert!(ok, "{origin:?} passed for host {host:?}");
    }
});
