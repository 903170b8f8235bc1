//! The Origin and Host headers come from anyone: the check answers without
//! a panic, and a foreign origin never passes for our own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::origin::OriginPolicy;

fuzz_target!(|input: (&str, &str)| {
    let (origin, host) = input;
    let policy = OriginPolicy::new(&["https://meet.example.org".to_owned()]);
    let allowed = policy.allows(Some(origin), Some(host));
    if allowed && !host.is_empty() {
        // What passes is our own host, loopback, or the configured origin.
        let lower = origin.to_ascii_lowercase();
        let ok = lower.contains(&host.trim().to_ascii_lowercase())
            || lower.contains("localhost")
            || lower.contains("127.")
            || lower.contains("[::1]")
            || lower.starts_with("https://meet.example.org");
        assert!(ok, "{origin:?} passed for host {host:?}");
    }
});
