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
    /// `fattree:K`: a k-ary fat tree (K even, 2..=64): K pods of K/2 edge
    /// and K/2 aggregation switches, (K/2)² core switches, K/2 hosts per
    /// edge switch (K = 16: 320 switches, 1,024 hosts).
    FatTree(u32),
    /// `tree:D,F`: a complete tree of depth D (1..=6) and fanout F
    /// (1..=16), as Mininet's `TreeTopo`: the root is switch 0, children
    /// follow breadth first, F hosts on each leaf switch.
    Tree(u32, u32),
}

/// A topology string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad topology {0:?}: expected linear:N, grid:SxH, fattree:K or tree:D,F (N, S >= 1, 1 <= H <= 254, K even, 2 <= K <= 64, 1 <= D <= 6, 1 <= F <= 16)")]
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
            "fattree" => {
                let k = num(arg)?;
                if k % 2 != 0 || !(2..=64).contains(&k) {
                    return Err(err());
                }
                Ok(TopoSpec::FatTree(k))
            }
            "tree" => {
                let (d, f) = arg.split_once(',').ok_or_else(err)?;
                let (d, f) = (num(d)?, num(f)?);
                if d > 6 || f > 16 {
                    return Err(err());
                }
                Ok(TopoSpec::Tree(d, f))
            }
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
    /// Free host ports (no host, no cable) hosts may move to (see
    /// [`Topology::with_spare_ports`]).
    pub spares: Vec<(usize, u32)>,
}

impl Topology {
    /// Builds a topology; dpids are `dpid_base + i`.
    pub fn build(spec: TopoSpec, hosts_per_switch: u32, dpid_base: u64) -> Topology {
        let (n, h) = match spec {
            TopoSpec::Linear(n) => (n, hosts_per_switch),
            TopoSpec::Grid(s, h) => (s, h),
            TopoSpec::FatTree(k) => return Topology::fat_tree(k, dpid_base),
            TopoSpec::Tree(d, f) => return Topology::tree(d, f, dpid_base),
        };
        let mut t = Topology {
            switches: Vec::new(),
            hosts: Vec::new(),
            links: Vec::new(),
            spares: Vec::new(),
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

    /// A k-ary fat tree: switches 0..k²/2 are the edge switches (pod p's
    /// edge i is `p·k/2 + i`; host ports 1..=k/2, port k/2+1+j to the pod's
    /// aggregation j), then the aggregation switches (pod p's agg j is
    /// `k²/2 + p·k/2 + j`; port 1+i to edge i, port k/2+1+m to core
    /// j·k/2 + m), then the (k/2)² core switches (port 1+p to pod p).
    fn fat_tree(k: u32, dpid_base: u64) -> Topology {
        let h = k / 2;
        let (k, h) = (k as usize, h as usize);
        let edges = k * h;
        let aggs = k * h;
        let cores = h * h;
        let mut t = Topology {
            switches: Vec::with_capacity(edges + aggs + cores),
            hosts: Vec::new(),
            links: Vec::new(),
            spares: Vec::new(),
        };
        let port = |x: usize| x as u32;
        for i in 0..edges + aggs + cores {
            let dpid = dpid_base + i as u64;
            // Every switch has k ports.
            let ports: Vec<u32> = (1..=port(k)).collect();
            if i < edges {
                for p in 1..=port(h) {
                    t.hosts.push(Host {
                        switch: i,
                        port: p,
                        mac: host_mac(dpid, p),
                        ip: host_ip(dpid, p),
                    });
                }
            }
            t.switches.push(SwitchSpec { dpid, ports });
        }
        for pod in 0..k {
            for i in 0..h {
                for j in 0..h {
                    let edge = pod * h + i;
                    let agg = edges + pod * h + j;
                    t.links.push(((edge, port(h + 1 + j)), (agg, port(1 + i))));
                }
            }
            for j in 0..h {
                for m in 0..h {
                    let agg = edges + pod * h + j;
                    let core = edges + aggs + j * h + m;
                    t.links
                        .push(((agg, port(h + 1 + m)), (core, port(1 + pod))));
                }
            }
        }
        t
    }

    /// A complete tree of depth `d` and fanout `f` (Mininet's `TreeTopo`
    /// numbering: breadth first from the root). A switch's port 1..=f go
    /// down (to its children, or to its hosts on a leaf), port f+1 goes up
    /// to its parent.
    fn tree(d: u32, f: u32, dpid_base: u64) -> Topology {
        let mut t = Topology {
            switches: Vec::new(),
            hosts: Vec::new(),
            links: Vec::new(),
            spares: Vec::new(),
        };
        // Switches per level: 1, f, f², …, f^(d-1).
        let mut level_start = vec![0usize];
        let mut width = 1usize;
        for _ in 1..d {
            let next = level_start.last().copied().unwrap_or(0) + width;
            level_start.push(next);
            width = width.saturating_mul(f as usize);
        }
        let total = level_start.last().copied().unwrap_or(0) + width;
        for i in 0..total {
            let dpid = dpid_base + i as u64;
            let mut ports: Vec<u32> = (1..=f).collect();
            if i > 0 {
                ports.push(f + 1);
            }
            t.switches.push(SwitchSpec { dpid, ports });
        }
        for (lvl, &start) in level_start.iter().enumerate() {
            let w = (f as usize).pow(lvl as u32);
            for i in start..start + w {
                if lvl + 1 == d as usize {
                    let dpid = dpid_base + i as u64;
                    for p in 1..=f {
                        t.hosts.push(Host {
                            switch: i,
                            port: p,
                            mac: host_mac(dpid, p),
                            ip: host_ip(dpid, p),
                        });
                    }
                } else {
                    let first_child = level_start[lvl + 1] + (i - start) * f as usize;
                    for c in 0..f as usize {
                        t.links.push(((i, 1 + c as u32), (first_child + c, f + 1)));
                    }
                }
            }
        }
        t
    }

    /// The same network with one more, empty port on every switch that
    /// has hosts (listed in [`Topology::spares`]): where hosts can move.
    pub fn with_spare_ports(mut self) -> Topology {
        let with_hosts: std::collections::BTreeSet<usize> =
            self.hosts.iter().map(|h| h.switch).collect();
        for i in with_hosts {
            if let Some(s) = self.switches.get_mut(i) {
                let p = s.ports.iter().copied().max().unwrap_or(0) + 1;
                s.ports.push(p);
                self.spares.push((i, p));
            }
        }
        self
    }

    /// Hops (cables) on a shortest path between two switches over the
    /// cables for which `up(cable index)` holds; None when unreachable.
    pub fn hops(&self, from: usize, to: usize, up: impl Fn(usize) -> bool) -> Option<usize> {
        let mut dist = vec![usize::MAX; self.switches.len()];
        *dist.get_mut(from)? = 0;
        let mut queue = std::collections::VecDeque::from([from]);
        while let Some(s) = queue.pop_front() {
            if s == to {
                return Some(dist[s]);
            }
            for (k, &((a, _), (b, _))) in self.links.iter().enumerate() {
                if !up(k) {
                    continue;
                }
                let n = if a == s {
                    b
                } else if b == s {
                    a
                } else {
                    continue;
                };
                if dist[n] == usize::MAX {
                    dist[n] = dist[s] + 1;
                    queue.push_back(n);
                }
            }
        }
        None
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
        assert!("fattree:3".parse::<TopoSpec>().is_err());
        assert!("fattree:66".parse::<TopoSpec>().is_err());
        assert_eq!("fattree:4".parse::<TopoSpec>(), Ok(TopoSpec::FatTree(4)));
        let f = Topology::build(TopoSpec::FatTree(16), 8, 1);
        assert_eq!(f.switches.len(), 320);
        assert_eq!(f.hosts.len(), 1024);
        assert_eq!(f.links.len(), 2048);
        // Every port has at most one cable; every port but the edge
        // switches' host ports has exactly one.
        let mut ends = std::collections::HashSet::new();
        for &(a, b) in &f.links {
            assert!(ends.insert(a) && ends.insert(b), "{a:?} {b:?}");
        }
        let host_ports = f.hosts.len();
        let ports: usize = f.switches.iter().map(|s| s.ports.len()).sum();
        assert_eq!(ends.len() + host_ports, ports);
        assert_eq!(f.reachable_hosts(0).len(), 1024);
        // Edge 0's uplink 9 goes to pod 0's aggregation 0, whose uplink 9
        // goes to core 0.
        assert_eq!(f.peer(0, 9), Some((128, 1)));
        assert_eq!(f.peer(128, 9), Some((256, 1)));
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

    #[test]
    fn trees_spares_and_hops() {
        assert_eq!("tree:3,2".parse::<TopoSpec>(), Ok(TopoSpec::Tree(3, 2)));
        assert!("tree:7,2".parse::<TopoSpec>().is_err());
        assert!("tree:2".parse::<TopoSpec>().is_err());
        // Mininet's tree,depth=3,fanout=2: 7 switches, 8 hosts.
        let t = Topology::build(TopoSpec::Tree(3, 2), 9, 1);
        assert_eq!(t.switches.len(), 7);
        assert_eq!(t.hosts.len(), 8);
        assert_eq!(t.links.len(), 6);
        assert_eq!(t.peer(0, 1), Some((1, 3)));
        assert_eq!(t.peer(2, 2), Some((6, 3)));
        assert_eq!(t.hosts_of(3).len(), 2);
        assert!(t.hosts_of(1).is_empty());
        let all = |_| true;
        assert_eq!(t.hops(3, 6, all), Some(4));
        assert_eq!(t.hops(3, 4, all), Some(2));
        assert_eq!(t.hops(5, 5, all), Some(0));
        // The cable root–switch 1 down: its subtree is cut off.
        let cut = t.links.iter().position(|&l| l == ((0, 1), (1, 3))).unwrap();
        assert_eq!(t.hops(3, 6, |k| k != cut), None);
        let s = t.with_spare_ports();
        assert_eq!(s.spares, vec![(3, 4), (4, 4), (5, 4), (6, 4)]);
        assert_eq!(s.switches[3].ports, vec![1, 2, 3, 4]);
        // A fat tree keeps every pair connected with any one cable down.
        let f = Topology::build(TopoSpec::FatTree(4), 1, 1);
        for k in 0..f.links.len() {
            assert_eq!(f.hops(0, 7, |x| x != k).map(|h| h <= 6), Some(true));
        }
        assert_eq!(f.hops(0, 1, all), Some(2));
        assert_eq!(f.hops(0, 7, all), Some(4));
    }
}
