//! Which web pages may open a WebSocket to us.
//!
//! A browser sends `Origin` with every WebSocket upgrade, and a page on any
//! site can try to open one; without this check, any site a user visits
//! could join calls with the user's camera permissions for this server
//! (cross-site WebSocket hijacking). Clients that are not browsers send no
//! `Origin` and cannot be used for that attack, so they are let through.

/// The rule: same origin as the `Host` the request was sent to, a loopback
/// origin (only on a server that listens on loopback: a page on a
/// developer's machine; on a public server a loopback origin is whatever
/// else runs on the visitor's machine), or one of the configured extra
/// origins (`*` allows any).
#[derive(Clone, Debug, Default)]
pub struct OriginPolicy {
    extra: Vec<String>,
    any: bool,
    loopback: bool,
}

impl OriginPolicy {
    /// A policy allowing `extra` origins (such as `https://meet.example.org`)
    /// on top of the server's own, and loopback ones if `trust_loopback`
    /// (the server listens on loopback).
    pub fn new(extra: &[String], trust_loopback: bool) -> Self {
        let any = extra.iter().any(|o| o.trim() == "*");
        let extra = extra.iter().filter_map(|o| normalize(o.trim())).collect();
        OriginPolicy { extra, any, loopback: trust_loopback }
    }

    /// Whether a request with these `Origin` and `Host` headers may upgrade.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        if self.any {
            return true;
        }
        let Some(normal) = normalize(origin) else { return false };
        let authority = normal.split_once("://").map_or("", |(_, a)| a);
        if let Some(host) = host {
            let host = host.trim().to_ascii_lowercase();
            if authority == host || with_default_port(&normal) == host {
                return true;
            }
        }
        (self.loopback && is_loopback(authority)) || self.extra.contains(&normal)
    }
}

/// Which names a request may call us by, against DNS rebinding: a page at
/// `http://evil.example:8080/` whose name the attacker then points at this
/// server's address is same-origin with itself, so the origin check lets
/// its WebSocket through; only the `Host` it sends, `evil.example`, gives it
/// away. Allowed: any IP address literal (a browser sends one only when
/// its user typed it), loopback names (`localhost`) on a server that
/// listens on loopback, and the configured names (this machine's host
/// name, a `--turn-host`, the self-signed certificate's names,
/// `--allow-host`); `*` allows any, as behind a reverse proxy or with a
/// certificate from files (a browser then talks to us only under a name
/// the certificate holds). A request without `Host` is no browser's.
#[derive(Clone, Debug, Default)]
pub struct HostPolicy {
    names: Vec<String>,
    any: bool,
    loopback: bool,
}

impl HostPolicy {
    /// A policy allowing `names` (host names, no ports), and loopback ones
    /// if `loopback` (the server listens on a loopback address, or on all).
    pub fn new(names: &[String], loopback: bool) -> Self {
        let any = names.iter().any(|n| n.trim() == "*");
        let names = names.iter().map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase()).collect();
        HostPolicy { names, any, loopback }
    }

    /// Whether a request with this `Host` header is meant for us.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        if self.any {
            return true;
        }
        let host = host.trim().to_ascii_lowercase();
        let name = host_of(&host).trim_end_matches('.');
        if name.parse::<std::net::Ipv4Addr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
        {
            return true;
        }
        if name == "localhost" || name.ends_with(".localhost") {
            return self.loopback;
        }
        !name.is_empty() && self.names.iter().any(|n| n == name)
    }
}

/// `scheme://host[:port]`, lowercased, default port dropped; `None` for
/// anything that is not an http(s) origin (including the opaque `null`).
fn normalize(origin: &str) -> Option<String> {
    let origin = origin.to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    Some(format!("{scheme}://{authority}"))
}

/// The authority of a normalized origin with its scheme's default port
/// written out, as some clients send `Host: example.org:443`.
fn with_default_port(normal: &str) -> String {
    match normal.split_once("://") {
        Some(("http", a)) if !has_port(a) => format!("{a}:80"),
        Some(("https", a)) if !has_port(a) => format!("{a}:443"),
        Some((_, a)) => a.to_owned(),
        None => String::new(),
    }
}

fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port)) => !port.is_empty() && !host.ends_with('[') && !port.ends_with(']'),
        None => false,
    }
}

fn host_of(authority: &str) -> &str {
    if has_port(authority) { authority.rsplit_once(':').map_or(authority, |(h, _)| h) } else { authority }
}

fn is_loopback(authority: &str) -> bool {
    let host = host_of(authority);
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "[::1]"
        || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod host_tests {
    use super::*;

    /// Issue 10, finding 9: the `Host` header was never checked.
    #[test]
    fn only_our_names_and_addresses_are_hosts() {
        let ours = HostPolicy::new(&["meet.example.org".into(), "Box.local.".into()], false);
        for (host, ok) in [
            (Some("meet.example.org"), true),
            (Some("MEET.example.org:8443"), true),
            (Some("meet.example.org."), true),
            (Some("box.local:8080"), true),
            (Some("203.0.113.7:8080"), true),
            (Some("[2001:db8::1]:8443"), true),
            (None, true),
            (Some("evil.example:8080"), false),
            (Some("meet.example.org.evil.example"), false),
            (Some("localhost:8080"), false),
            (Some(""), false),
            (Some("[evil]"), false),
        ] {
            assert_eq!(ours.allows(host), ok, "{host:?}");
        }
        let on_loopback = HostPolicy::new(&[], true);
        assert!(on_loopback.allows(Some("localhost:8080")));
        assert!(on_loopback.allows(Some("app.localhost")));
        assert!(!on_loopback.allows(Some("evil.example")));
        assert!(HostPolicy::new(&["*".into()], false).allows(Some("anything.example")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_like_the_protocol_doc_says() {
        let policy = OriginPolicy::new(&["https://Meet.Example.org".to_owned()], true);
        let cases: &[(Option<&str>, Option<&str>, bool)] = &[
            // Non-browser clients send no Origin.
            (None, Some("example.org"), true),
            // Same origin as the Host header, with or without default port.
            (Some("http://192.168.1.5:8080"), Some("192.168.1.5:8080"), true),
            (Some("https://call.example.org"), Some("call.example.org"), true),
            (Some("https://call.example.org"), Some("call.example.org:443"), true),
            (Some("HTTPS://CALL.example.org:443"), Some("call.example.org"), true),
            (Some("http://call.example.org:8080"), Some("call.example.org"), false),
            // Loopback origins, any port.
            (Some("http://localhost:3000"), Some("example.org"), true),
            (Some("http://app.localhost"), Some("example.org"), true),
            (Some("http://127.0.0.1:9"), Some("example.org"), true),
            (Some("http://127.8.0.1"), None, true),
            (Some("http://[::1]:8080"), None, true),
            // Configured extra origin, exact.
            (Some("https://meet.example.org"), Some("call.example.org"), true),
            (Some("https://meet.example.org:443"), Some("call.example.org"), true),
            (Some("http://meet.example.org"), Some("call.example.org"), false),
            (Some("https://evil.meet.example.org"), Some("call.example.org"), false),
            // Everything else.
            (Some("https://evil.example"), Some("call.example.org"), false),
            (Some("http://localhost.evil.example"), Some("call.example.org"), false),
            (Some("http://127.0.0.1.evil.example"), Some("call.example.org"), false),
            (Some("null"), Some("call.example.org"), false),
            (Some("file://"), Some("call.example.org"), false),
            (Some("https://a@call.example.org"), Some("call.example.org"), false),
            (Some(""), Some(""), false),
            (Some("https://call.example.org"), None, false),
        ];
        for (origin, host, expect) in cases {
            assert_eq!(policy.allows(*origin, *host), *expect, "origin {origin:?} host {host:?}");
        }
    }

    #[test]
    fn star_allows_any_origin() {
        let policy = OriginPolicy::new(&["*".to_owned()], false);
        assert!(policy.allows(Some("https://anything.example"), Some("call.example.org")));
    }

    /// Issue 10, finding 9: loopback origins were trusted on public
    /// deployments too, where they are whatever else runs on a visitor's
    /// machine. Only a server listening on loopback trusts them; its own
    /// origin is still its own.
    #[test]
    fn loopback_origins_are_trusted_only_on_a_loopback_server() {
        let public = OriginPolicy::new(&[], false);
        let cases: &[(Option<&str>, Option<&str>, bool)] = &[
            (Some("http://localhost:3000"), Some("call.example.org"), false),
            (Some("http://127.0.0.1:9"), Some("call.example.org"), false),
            (Some("http://[::1]:8080"), Some("call.example.org"), false),
            (Some("http://localhost:8080"), Some("localhost:8080"), true),
            (Some("https://call.example.org"), Some("call.example.org"), true),
        ];
        for (origin, host, expect) in cases {
            assert_eq!(public.allows(*origin, *host), *expect, "origin {origin:?} host {host:?}");
        }
    }
}
