//! Which peer addresses a TURN server relays to.
//!
//! A relay that sends wherever a client asks is a door into the network the
//! server sits in: its loopback services, the LAN behind it, cloud metadata
//! endpoints. By default only public unicast addresses are allowed
//! (RFC 8656 section 21.3 asks servers to consider this).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether relaying to `ip` is allowed when private peers are not.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        // 0.0.0.0/8 "this network", 100.64.0.0/10 carrier-grade NAT,
        // 192.0.0.0/24 protocol assignments, 240.0.0.0/4 reserved.
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local, 64:ff9b:1::/48
        // local-use translation.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x64 && ip.segments()[1] == 0xff9b && ip.segments()[2] == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_is_relayable() {
        let yes = ["203.0.113.5", "8.8.8.8", "198.51.100.1", "2001:db8::1", "2a00:1450::1", "::ffff:8.8.8.8"];
        let no = [
            "127.0.0.1",
            "127.8.8.8",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.170",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b:1::1",
        ];
        for ip in yes {
            assert!(is_public(ip.parse().expect("ip")), "{ip} should be relayable");
        }
        for ip in no {
            assert!(!is_public(ip.parse().expect("ip")), "{ip} must not be relayable by default");
        }
    }
}
