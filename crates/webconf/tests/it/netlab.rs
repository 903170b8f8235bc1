//! A small internet on one machine, for NAT tests: network namespaces joined
//! by veth pairs, routers doing NAT with nftables; and a LAN with no way
//! out ([`Lan`]). It is built inside the
//! test's own loopback-only namespace (see `harness`), so none of it can
//! reach a real network.
//!
//! Layout: the test's namespace is "the internet": a bridge `pub0` with the
//! server on 203.0.113.1. Each site is a router (WAN 203.0.113.(10+i), LAN
//! 192.168.i.1) with hosts behind it (192.168.i.2, .3, ...). ChromeDriver in
//! host j of site i is reached through a port forward on the router's WAN
//! address, port 9515 + j; nothing else gets in unasked.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::Reaped;

/// The server's address on the lab's internet.
pub const SERVER_IP: &str = "203.0.113.1";

/// Runs a shell script in this namespace; panics with its output on failure.
pub fn sh(script: &str) {
    run(Command::new("sh").args(["-ec", script]), script);
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}\nfailed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, alive while its keeper process lives.
pub struct Netns {
    keeper: Reaped,
}

impl Netns {
    pub fn new() -> Netns {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare --net");
        let ns = Netns { keeper: Reaped(child) };
        // unshare runs in the child after spawn returns: wait for it.
        let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(ns.path()).ok().as_ref() == Some(&ours) {
            assert!(Instant::now() < deadline, "the namespace never appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
        ns
    }

    pub fn pid(&self) -> u32 {
        self.keeper.0.id()
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid())
    }

    /// A command to run inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path())).arg(program);
        cmd
    }

    /// Runs a shell script inside this namespace.
    pub fn sh(&self, script: &str) {
        run(self.command("sh").args(["-ec", script]), script);
    }
}

/// How a site's router treats traffic to the internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// Linux masquerade: the same outside port for every destination when
    /// it can (endpoint-independent mapping), replies only from where the
    /// host sent to (port-restricted filtering). STUN hole punching works.
    Cone,
    /// Masquerade with a fresh random port for every destination
    /// (endpoint-dependent mapping): what STUN learns is useless to peers.
    Symmetric,
    /// Cone, and no UDP crosses at all: only TCP reaches the internet.
    UdpBlocked,
}

/// One site: a router and the hosts behind it.
pub struct Site {
    pub router: Netns,
    pub hosts: Vec<Netns>,
    pub index: u8,
}

impl Site {
    /// The router's address on the internet.
    pub fn wan_ip(&self) -> String {
        format!("203.0.113.{}", 10 + self.index)
    }

    /// Where ChromeDriver in host `j` is reached from the internet.
    pub fn driver_url(&self, j: usize) -> String {
        format!("http://{}:{}", self.wan_ip(), 9515 + j)
    }
}

/// The internet and its sites.
pub struct Lab {
    pub sites: Vec<Site>,
}

impl Lab {
    pub fn new() -> Lab {
        // The rest of the internet is a gateway that does not exist (a fixed
        // MAC address nobody has): packets to addresses nobody here has (a
        // peer's private address, say) leave and vanish, as they would out
        // there, instead of failing at the sender with "network unreachable"
        // (which makes coturn drop the allocation).
        sh(&format!(
            "ip link add pub0 type bridge && ip addr add {SERVER_IP}/24 dev pub0 && ip link set pub0 up && \
             ip neigh replace 203.0.113.254 lladdr 02:00:00:00:00:fe dev pub0 nud permanent && \
             ip route add default via 203.0.113.254 dev pub0"
        ));
        Lab { sites: Vec::new() }
    }

    /// Adds a site with `hosts` hosts behind a router of kind `nat`.
    pub fn add_site(&mut self, nat: Nat, hosts: usize) -> &Site {
        let i = self.sites.len() as u8 + 1;
        let router = Netns::new();
        sh(&format!(
            "ip link add w{i} type veth peer name wan{i} && ip link set wan{i} netns {pid} && \
             ip link set w{i} master pub0 && ip link set w{i} up",
            pid = router.pid()
        ));
        router.sh(&format!(
            "ip link set lo up && ip link set wan{i} name wan && ip addr add 203.0.113.{wan}/24 dev wan && \
             ip link set wan up && ip link add lan type bridge && ip addr add 192.168.{i}.1/24 dev lan && \
             ip link set lan up && echo 1 > /proc/sys/net/ipv4/ip_forward",
            wan = 10 + u32::from(i)
        ));
        let masquerade = match nat {
            Nat::Symmetric => "masquerade fully-random",
            Nat::Cone | Nat::UdpBlocked => "masquerade",
        };
        let udp = if nat == Nat::UdpBlocked { "iifname \"lan\" meta l4proto udp drop\n" } else { "" };
        let mut forwards = String::new();
        for j in 0..hosts {
            forwards.push_str(&format!(
                "iifname \"wan\" tcp dport {} dnat to 192.168.{i}.{}:9515\n",
                9515 + j,
                2 + j
            ));
        }
        router.sh(&format!(
            "nft -f - <<'EOF'
table ip nat {{
  chain pre {{
    type nat hook prerouting priority -100;
    {forwards}
  }}
  chain post {{
    type nat hook postrouting priority 100;
    oifname \"wan\" {masquerade}
  }}
}}
table inet filter {{
  chain input {{
    type filter hook input priority 0; policy accept;
    # Unasked packets to the router itself are dropped before conntrack
    # confirms them: a remembered stray packet would make the next mapping
    # of that port collide and change, which real cone NATs do not do.
    iifname \"wan\" ct state new drop
  }}
  chain forward {{
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ct status dnat accept
    {udp}iifname \"lan\" accept
  }}
}}
EOF"
        ));
        let mut site = Site { router, hosts: Vec::new(), index: i };
        for j in 0..hosts {
            let host = Netns::new();
            site.router.sh(&format!(
                "ip link add h{j} type veth peer name eth0 && ip link set eth0 netns {pid} && \
                 ip link set h{j} master lan && ip link set h{j} up",
                pid = host.pid()
            ));
            host.sh(&format!(
                "ip link set lo up && ip addr add 192.168.{i}.{}/24 dev eth0 && ip link set eth0 up && \
                 ip route add default via 192.168.{i}.1",
                2 + j
            ));
            site.hosts.push(host);
        }
        self.sites.push(site);
        self.sites.last().expect("just added")
    }
}

/// The server's address in a [`Lan`].
pub const LAN_SERVER_IP: &str = "192.168.77.1";

/// A LAN with no way out, as in a home without internet or a hall with its
/// own Wi-Fi: the test's namespace is the server machine, with only
/// loopback and a bridge `lan0` at [`LAN_SERVER_IP`] (no default route: no
/// address beyond the LAN exists), and hosts 192.168.77.(10+j) on the same
/// bridge. ChromeDriver in host j is reached at [`Lan::driver_url`].
pub struct Lan {
    pub hosts: Vec<Netns>,
}

impl Lan {
    pub fn new(hosts: usize) -> Lan {
        sh(&format!(
            "ip link add lan0 type bridge && ip addr add {LAN_SERVER_IP}/24 dev lan0 && ip link set lan0 up"
        ));
        let mut lan = Lan { hosts: Vec::new() };
        for j in 0..hosts {
            let host = Netns::new();
            sh(&format!(
                "ip link add l{j} type veth peer name p{j} && ip link set p{j} netns {pid} && \
                 ip link set l{j} master lan0 && ip link set l{j} up",
                pid = host.pid()
            ));
            host.sh(&format!(
                "ip link set lo up && ip link set p{j} name eth0 && ip addr add {}/24 dev eth0 && ip link set eth0 up",
                Lan::host_ip(j)
            ));
            lan.hosts.push(host);
        }
        lan
    }

    /// Host `j`'s address.
    pub fn host_ip(j: usize) -> String {
        format!("192.168.77.{}", 10 + j)
    }

    /// Where ChromeDriver in host `j` is reached.
    pub fn driver_url(j: usize) -> String {
        format!("http://{}:9515", Lan::host_ip(j))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.hosts.clear();
        let _ = Command::new("ip").args(["link", "del", "lan0"]).status();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The namespaces (and their ends of the veths) go with their keepers;
        // the bridge is ours.
        self.sites.clear();
        let _ = Command::new("ip").args(["link", "del", "pub0"]).status();
    }
}
