//! This machine's own addresses, for what it tells browsers about itself
//! when it listens on every interface: the names its self-signed
//! certificate covers, and where relays and the SFU are, when nobody said.

use std::net::IpAddr;

/// The addresses of this machine's network interfaces that another machine
/// could reach: not loopback, not IPv6 link-local (which needs a scope no
/// URL or certificate carries). IPv4 first, each family in the order the
/// system lists them; empty if the system would not say.
pub fn addresses() -> Vec<IpAddr> {
    let interfaces = match if_addrs::get_if_addrs() {
        Ok(list) => list,
        Err(e) => {
            tracing::debug!("cannot list this machine's network interfaces: {e}");
            return Vec::new();
        }
    };
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in interfaces.iter().filter(|i| !i.is_loopback() && !i.is_link_local()).map(|i| i.ip()) {
        if !ip.is_loopback() && !ip.is_unspecified() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out.sort_by_key(|ip| ip.is_ipv6());
    out
}
