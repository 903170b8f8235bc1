//! Which peer addresses a TURN server relays to.
//!
//! A relay that sends wherever a client asks is a door into the network the
//! server sits in: its loopback services, the LAN behind it, cloud metadata
//! endpoints. By default only public unicast addresses are allowed
//! (RFC 8656 section 21.3 asks servers to consider this). An IPv6 address
//! that carries an IPv4 address inside (mapped, compatible, SIIT, NAT64,
//! 6to4, Teredo) reaches that IPv4 address through some translator, so it
//! is judged by the IPv4 address it carries; special-purpose ranges
//! (RFC 6890 and the IANA registries) are refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether relaying to `ip` is allowed when private peers are not.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

/// The unit one client is counted in for caps: an IPv4 address, or an IPv6
/// /64 (what one subscriber is usually given); IPv4-mapped IPv6 counts as
/// its IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
        v4 => v4,
    }
}

/// The IPv4 addresses an IPv6 address leads to through a translator or a
/// tunnel, if it is of such a form: IPv4-mapped `::ffff:0:0/96`, SIIT's
/// IPv4-translated `::ffff:0:0:0/96`, IPv4-compatible `::/96`, NAT64's
/// `64:ff9b::/96`, 6to4 `2002::/16`, and Teredo `2001::/32` (its server
/// and, inverted, its client).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d, ::ffff:0:a.b.c.d and ::a.b.c.d.
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] | [0, 0, 0, 0, 0, 0, ..] => vec![low],
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => vec![low],
        [0x2002, hi, lo, ..] => {
            vec![Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)]
        }
        [0x2001, 0, hi, lo, ..] => {
            let server = Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            let client = Ipv4Addr::from(!u32::from(low));
            vec![server, client]
        }
        _ => Vec::new(),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        // 0.0.0.0/8 "this network", 100.64.0.0/10 carrier-grade NAT,
        // 192.0.0.0/24 protocol assignments, 198.18.0.0/15 benchmarking,
        // 240.0.0.0/4 reserved.
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b & 0xfe) == 18)
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = embedded_ipv4(ip);
    if !embedded.is_empty() {
        return embedded.into_iter().all(is_public_v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local, fec0::/10 the
        // former site-local.
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        // 64:ff9b:1::/48 local-use translation (RFC 8215).
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
        // 100::/64 discard only (RFC 6666).
        || (s[0] == 0x100 && s[1] == 0 && s[2] == 0 && s[3] == 0)
        // 2001:2::/48 benchmarking (RFC 5180).
        || (s[0] == 0x2001 && s[1] == 2 && s[2] == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each address with whether it may be relayed to by default, and why.
    const TABLE: &[(&str, bool, &str)] = &[
        ("203.0.113.5", true, "public"),
        ("8.8.8.8", true, "public"),
        ("198.51.100.1", true, "public"),
        ("2001:db8::1", true, "public"),
        ("2a00:1450::1", true, "public"),
        ("::ffff:8.8.8.8", true, "mapped public"),
        ("127.0.0.1", false, "loopback"),
        ("127.8.8.8", false, "loopback"),
        ("10.1.2.3", false, "private"),
        ("172.16.0.1", false, "private"),
        ("172.31.255.255", false, "private"),
        ("192.168.1.1", false, "private"),
        ("169.254.169.254", false, "link-local, cloud metadata"),
        ("100.64.0.1", false, "carrier-grade NAT"),
        ("100.127.255.255", false, "carrier-grade NAT"),
        ("0.0.0.0", false, "unspecified"),
        ("0.1.2.3", false, "this network"),
        ("224.0.0.1", false, "multicast"),
        ("255.255.255.255", false, "broadcast"),
        ("240.0.0.1", false, "reserved"),
        ("192.0.0.170", false, "protocol assignments"),
        ("198.18.0.1", false, "benchmarking"),
        ("198.19.255.255", false, "benchmarking"),
        ("198.20.0.1", true, "just past benchmarking"),
        ("::", false, "unspecified"),
        ("::1", false, "loopback"),
        ("fc00::1", false, "unique local"),
        ("fd12:3456::1", false, "unique local"),
        ("fe80::1", false, "link-local"),
        ("fec0::1", false, "site-local"),
        ("feff::1", false, "site-local"),
        ("ff02::1", false, "multicast"),
        ("100::1", false, "discard only"),
        ("100:0:0:1::1", true, "past discard only"),
        ("2001:2::1", false, "benchmarking"),
        ("::ffff:127.0.0.1", false, "mapped loopback"),
        ("::ffff:10.0.0.1", false, "mapped private"),
        ("::ffff:0:10.0.0.1", false, "SIIT private"),
        ("::ffff:0:8.8.8.8", true, "SIIT public"),
        ("::127.0.0.1", false, "compatible loopback"),
        ("::8.8.8.8", true, "compatible public"),
        ("64:ff9b::127.0.0.1", false, "NAT64 loopback"),
        ("64:ff9b::10.0.0.1", false, "NAT64 private"),
        ("64:ff9b::169.254.169.254", false, "NAT64 metadata"),
        ("64:ff9b::8.8.8.8", true, "NAT64 public"),
        ("64:ff9b:1::1", false, "local-use translation"),
        ("64:ff9b:1::8.8.8.8", false, "local-use translation"),
        ("2002:7f00:1::1", false, "6to4 of loopback"),
        ("2002:c0a8:101::1", false, "6to4 of private"),
        ("2002:808:808::1", true, "6to4 of public"),
        // Teredo: server 8.8.8.8; client 127.0.0.1 and 8.8.4.4 inverted.
        ("2001:0:808:808::80ff:fffe", false, "Teredo client loopback"),
        ("2001:0:a00:1::f7f7:fbfb", false, "Teredo server private"),
        ("2001:0:808:808::f7f7:fbfb", true, "Teredo all public"),
    ];

    #[test]
    fn only_public_unicast_is_relayable() {
        for (ip, public, why) in TABLE {
            assert_eq!(is_public(ip.parse().expect("ip")), *public, "{ip} ({why})");
        }
    }

    #[test]
    fn embedded_ipv4_is_found_in_every_form() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().expect("v4");
        let table: &[(&str, &[&str])] = &[
            ("::ffff:1.2.3.4", &["1.2.3.4"]),
            ("::ffff:0:1.2.3.4", &["1.2.3.4"]),
            ("::1.2.3.4", &["1.2.3.4"]),
            ("64:ff9b::1.2.3.4", &["1.2.3.4"]),
            ("2002:102:304::", &["1.2.3.4"]),
            ("2001:0:102:304::fefd:fcfb", &["1.2.3.4", "1.2.3.4"]),
            ("2001:db8::1.2.3.4", &[]),
            ("2a00::1", &[]),
        ];
        for (ip, want) in table {
            let want: Vec<Ipv4Addr> = want.iter().map(|s| v4(s)).collect();
            assert_eq!(embedded_ipv4(ip.parse().expect("ip")), want, "{ip}");
        }
    }
}
