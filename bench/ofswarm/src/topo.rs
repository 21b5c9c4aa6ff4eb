//! Emulated topologies: switches, their host ports and the cables between
//! them, and the hosts' addresses.

use std::net::Ipv4Addr;
use std::str::FromStr;

use ofp::MacAddr;

/// Most host ports per switch (host addresses are 10.d.d.port).
pub const MAX_HOSTS: u32 = 254;

/// A topology kind, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopoSpec {
    /// `linear:N`: N switches in a chain, `--hosts` host ports each.
    Linear(u32),
    /// `grid:SxH`: S independent switches with H host ports each.
    Grid(u32, u32),
}

/// A topology string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad topology {0:?}: expected linear:N or grid:SxH (N, S >= 1, 1 <= H <= 254)")]
pub struct TopoParseError(pub String);

impl FromStr for TopoSpec {
    type Err = TopoParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TopoParseError(s.to_string());
        let (kind, arg) = s.split_once([':', ' ', '=']).ok_or_else(err)?;
        let num = |x: &str| {
            x.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(err)
        };
        let hosts = |x: &str| num(x).ok().filter(|&n| n <= MAX_HOSTS).ok_or_else(err);
        match kind {
            "linear" => Ok(TopoSpec::Linear(num(arg)?)),
            "grid" => {
                let (a, b) = arg.split_once(['x', 'X', '×']).ok_or_else(err)?;
                Ok(TopoSpec::Grid(num(a)?, hosts(b)?))
            }
            _ => Err(err()),
        }
    }
}

/// One host: where it is attached and its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// Index of its switch in [`Topology::switches`].
    pub switch: usize,
    /// Its port on that switch.
    pub port: u32,
    /// MAC address.
    pub mac: MacAddr,
    /// IPv4 address.
    pub ip: Ipv4Addr,
}

/// One emulated switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchSpec {
    /// Datapath id.
    pub dpid: u64,
    /// Port numbers (host ports first), ascending.
    pub ports: Vec<u32>,
}

/// The whole emulated network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Switches, in dpid order.
    pub switches: Vec<SwitchSpec>,
    /// Hosts, grouped by switch.
    pub hosts: Vec<Host>,
    /// Cables: ((switch index, port), (switch index, port)).
    pub links: Vec<((usize, u32), (usize, u32))>,
}

impl Topology {
    /// Builds a topology; dpids are `dpid_base + i`.
    pub fn build(spec: TopoSpec, hosts_per_switch: u32, dpid_base: u64) -> Topology {
        let (n, h) = match spec {
            TopoSpec::Linear(n) => (n, hosts_per_switch),
            TopoSpec::Grid(s, h) => (s, h),
        };
        let mut t = Topology {
            switches: Vec::new(),
            hosts: Vec::new(),
            links: Vec::new(),
        };
        for i in 0..n as usize {
            let mut ports: Vec<u32> = (1..=h).collect();
            for p in 1..=h {
                t.hosts.push(Host {
                    switch: i,
                    port: p,
                    mac: host_mac(dpid_base + i as u64, p),
                    ip: host_ip(dpid_base + i as u64, p),
                });
            }
            if matches!(spec, TopoSpec::Linear(_)) {
                if i > 0 {
                    ports.push(h + 1);
                }
                if i + 1 < n as usize {
                    ports.push(h + 2);
                    t.links.push(((i, h + 2), (i + 1, h + 1)));
                }
            }
            t.switches.push(SwitchSpec {
                dpid: dpid_base + i as u64,
                ports,
            });
        }
        t
    }

    /// The far end of a cable at (switch, port), if any.
    pub fn peer(&self, switch: usize, port: u32) -> Option<(usize, u32)> {
        self.links.iter().find_map(|&(a, b)| {
            if a == (switch, port) {
                Some(b)
            } else if b == (switch, port) {
                Some(a)
            } else {
                None
            }
        })
    }

    /// The host at (switch, port), if any.
    pub fn host_at(&self, switch: usize, port: u32) -> Option<&Host> {
        self.hosts
            .iter()
            .find(|h| h.switch == switch && h.port == port)
    }

    /// Hosts reachable from switch `switch` (its own and those of every
    /// switch connected to it by cables): the destinations a controller
    /// can route to.
    pub fn reachable_hosts(&self, switch: usize) -> Vec<Host> {
        let mut seen = vec![switch];
        let mut i = 0;
        while let Some(&s) = seen.get(i) {
            for &((a, _), (b, _)) in &self.links {
                for (x, y) in [(a, b), (b, a)] {
                    if x == s && !seen.contains(&y) {
                        seen.push(y);
                    }
                }
            }
            i += 1;
        }
        self.hosts
            .iter()
            .filter(|h| seen.contains(&h.switch))
            .copied()
            .collect()
    }

    /// Hosts of one switch.
    pub fn hosts_of(&self, switch: usize) -> Vec<Host> {
        self.hosts
            .iter()
            .filter(|h| h.switch == switch)
            .copied()
            .collect()
    }
}

/// MAC of the host at port `p` of the switch with datapath id `dpid`:
/// 02:5f:dd:dd:pp:pp (the low 16 bits of each), so runs with other
/// `--dpid-base` values use other MACs (no endpoint "moves").
pub fn host_mac(dpid: u64, p: u32) -> MacAddr {
    let i = dpid.to_be_bytes();
    let p = p.to_be_bytes();
    MacAddr([0x02, 0x5f, i[6], i[7], p[2], p[3]])
}

/// IPv4 address of the host at port `p` (1..=254) of the switch with
/// datapath id `dpid`: 10.d.d.p (the low 16 bits of the dpid).
pub fn host_ip(dpid: u64, p: u32) -> Ipv4Addr {
    let d = dpid.to_be_bytes();
    Ipv4Addr::new(10, d[6], d[7], (p & 0xff) as u8)
}

/// Hardware address of port `p` of switch index `i`: 0a:5f:ii:ii:pp:pp.
pub fn port_mac(i: usize, p: u32) -> MacAddr {
    let i = (i as u32).to_be_bytes();
    let p = p.to_be_bytes();
    MacAddr([0x0a, 0x5f, i[2], i[3], p[2], p[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_build() {
        assert_eq!("linear:3".parse::<TopoSpec>(), Ok(TopoSpec::Linear(3)));
        assert_eq!("grid:4x8".parse::<TopoSpec>(), Ok(TopoSpec::Grid(4, 8)));
        assert!("fat:2".parse::<TopoSpec>().is_err());
        assert!("linear:0".parse::<TopoSpec>().is_err());
        assert!("grid:2x255".parse::<TopoSpec>().is_err());
        let t = Topology::build(TopoSpec::Linear(3), 2, 1);
        assert_eq!(t.links.len(), 2);
        assert_eq!(t.peer(0, 4), Some((1, 3)));
        assert_eq!(t.peer(1, 3), Some((0, 4)));
        assert_eq!(t.switches[1].ports, vec![1, 2, 3, 4]);
        assert_eq!(t.hosts.len(), 6);
        let g = Topology::build(TopoSpec::Grid(2, 3), 9, 1);
        assert!(g.links.is_empty());
        assert_eq!(g.hosts.len(), 6);
        assert_eq!(g.reachable_hosts(1).len(), 3);
        assert_eq!(t.reachable_hosts(2).len(), 6);
    }
}
