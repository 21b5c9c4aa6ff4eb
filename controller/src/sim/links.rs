//! Link loads in the simulator: every VM pair's traffic and every running
//! migration's stream routed over the tree, and the link-seconds spent
//! above a share of capacity.
//!
//! Routing is the tree's: a stream from host `a` to host `b` crosses `a`'s
//! NIC link up and `b`'s down; between racks it also crosses the uplinks of
//! both ToRs, split evenly among each ToR's uplinks (ECMP); between pods
//! the uplinks of those aggregation switches too, split evenly among their
//! core uplinks. A link's load is the larger of its two directions.
//! Traffic to or from external endpoints is not routed (their attachment
//! switch is not a host).

use std::collections::HashMap;

use crate::knowledge::snapshot::Snapshot;

/// A migration's stream: `bytes_per_s` for `secs` seconds from host `from`
/// to host `to`.
#[derive(Debug, Clone, Copy)]
pub struct Stream<'a> {
    /// Source host.
    pub from: &'a str,
    /// Destination host.
    pub to: &'a str,
    /// Rate, bytes/s.
    pub bytes_per_s: f64,
    /// Duration, seconds.
    pub secs: f64,
}

/// The links of a snapshot's topology, indexed.
struct Net<'s> {
    index: HashMap<(&'s str, &'s str), usize>,
    cap: Vec<f64>,
    uplinks: HashMap<&'s str, &'s [String]>,
    rack_of: HashMap<&'s str, &'s str>,
    pod_of: HashMap<&'s str, &'s str>,
}

impl<'s> Net<'s> {
    fn new(snap: &'s Snapshot) -> Self {
        let mut index = HashMap::new();
        let mut cap = Vec::new();
        for l in &snap.topology.links {
            index.insert((l.a.as_str(), l.b.as_str()), cap.len());
            cap.push(l.capacity_bps / 8.0);
        }
        Net {
            index,
            cap,
            uplinks: snap
                .topology
                .switches
                .iter()
                .map(|(id, s)| (id.as_str(), s.uplinks.as_slice()))
                .collect(),
            rack_of: snap
                .hosts
                .iter()
                .map(|(id, h)| (id.as_str(), h.location.rack.as_str()))
                .collect(),
            pod_of: snap
                .hosts
                .iter()
                .map(|(id, h)| (id.as_str(), h.location.pod.as_str()))
                .collect(),
        }
    }

    fn ups(&self, sw: &str) -> &'s [String] {
        self.uplinks.get(sw).copied().unwrap_or(&[])
    }

    /// Calls `f(link, up, share)` for every link a stream of `r` bytes/s
    /// from host `a` to host `b` crosses (`up`: in the child→parent
    /// direction).
    fn route(&self, a: &str, b: &str, r: f64, f: &mut impl FnMut(usize, bool, f64)) {
        if a == b || r <= 0.0 {
            return;
        }
        let (Some(&ra), Some(&rb)) = (self.rack_of.get(a), self.rack_of.get(b)) else {
            return;
        };
        if let Some(&i) = self.index.get(&(a, ra)) {
            f(i, true, r);
        }
        if let Some(&i) = self.index.get(&(b, rb)) {
            f(i, false, r);
        }
        if ra == rb {
            return;
        }
        let cross_pod = self.pod_of.get(a) != self.pod_of.get(b);
        for (tor, up) in [(ra, true), (rb, false)] {
            let aggs = self.ups(tor);
            let share = r / aggs.len().max(1) as f64;
            for agg in aggs {
                if let Some(&i) = self.index.get(&(tor, agg.as_str())) {
                    f(i, up, share);
                }
                if !cross_pod {
                    continue;
                }
                let cores = self.ups(agg);
                let s2 = share / cores.len().max(1) as f64;
                for core in cores {
                    if let Some(&i) = self.index.get(&(agg.as_str(), core.as_str())) {
                        f(i, up, s2);
                    }
                }
            }
        }
    }
}

/// Bytes/s of the VM traffic on every link of `net` (up, down).
fn vm_loads(snap: &Snapshot, net: &Net) -> Vec<[f64; 2]> {
    let mut base = vec![[0.0f64; 2]; net.cap.len()];
    for (src, row) in &snap.traffic {
        let Some(a) = snap.vms.get(src).map(|v| v.host.as_str()) else {
            continue;
        };
        for (dst, &r) in row {
            let Some(b) = snap.vms.get(dst).map(|v| v.host.as_str()) else {
                continue;
            };
            net.route(a, b, r, &mut |i, up, x| {
                if let Some(l) = base.get_mut(i) {
                    l[usize::from(!up)] += x;
                }
            });
        }
    }
    base
}

/// Sets every link's `used_bps` to its VM traffic (the larger direction),
/// as the live controller measures it from port statistics.
pub fn fill_used(snap: &mut Snapshot) {
    let loads = {
        let net = Net::new(snap);
        vm_loads(snap, &net)
    };
    for (l, d) in snap.topology.links.iter_mut().zip(loads) {
        l.used_bps = 8.0 * d[0].max(d[1]);
    }
}

/// Link-seconds of one interval `dt` above `limit` × capacity: a link over
/// the limit with the VM traffic alone counts `dt`; one pushed over only by
/// migration streams counts the longest of those streams (at most `dt`).
pub fn congested_link_s(snap: &Snapshot, limit: f64, dt: f64, streams: &[Stream]) -> f64 {
    let net = Net::new(snap);
    let n = net.cap.len();
    let base = vm_loads(snap, &net);
    let mut with = base.clone();
    let mut longest = vec![0.0f64; n];
    for s in streams {
        net.route(s.from, s.to, s.bytes_per_s, &mut |i, up, x| {
            if let (Some(l), Some(t)) = (with.get_mut(i), longest.get_mut(i)) {
                l[usize::from(!up)] += x;
                *t = t.max(s.secs);
            }
        });
    }
    let mut total = 0.0;
    for i in 0..n {
        let lim = limit * net.cap.get(i).copied().unwrap_or(0.0);
        let load = |l: &[[f64; 2]]| l.get(i).map_or(0.0, |d| d[0].max(d[1]));
        if load(&base) > lim {
            total += dt;
        } else if load(&with) > lim {
            total += longest.get(i).copied().unwrap_or(0.0).min(dt);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::Scenario;

    /// Two racks in two pods under one core, 1 Gbit/s NICs, ToR uplinks of
    /// 2 Gbit/s (two of them), aggregation uplinks of 10 Gbit/s.
    fn scenario(rate: f64) -> Snapshot {
        let text = serde_json::json!({
            "interval_s": 10,
            "topology": {"switches": [
                {"id": "c", "level": "core"},
                {"id": "a1", "level": "aggregation", "uplinks": ["c"], "uplink_bps": 1e10},
                {"id": "a2", "level": "aggregation", "uplinks": ["c"], "uplink_bps": 1e10},
                {"id": "a3", "level": "aggregation", "uplinks": ["c"], "uplink_bps": 1e10},
                {"id": "t1", "level": "tor", "uplinks": ["a1", "a2"], "uplink_bps": 2e9},
                {"id": "t2", "level": "tor", "uplinks": ["a3"], "uplink_bps": 2e9}
            ]},
            "hosts": [
                {"id": "h1", "tor": "t1", "cores": 8, "memory_mb": 8192, "nic_bps": 1e9},
                {"id": "h2", "tor": "t1", "cores": 8, "memory_mb": 8192, "nic_bps": 1e9},
                {"id": "h3", "tor": "t2", "cores": 8, "memory_mb": 8192, "nic_bps": 1e9}
            ],
            "vms": [
                {"name": "x", "host": "h1", "memory_mb": 1024},
                {"name": "y", "host": "h3", "memory_mb": 1024}
            ],
            "traffic": [{"src": "x", "dst": "y", "bytes_per_s": rate}]
        })
        .to_string();
        let s = Scenario::load(&text).unwrap();
        s.validate().unwrap();
        s.initial_snapshot()
    }

    /// 120 MB/s from h1 to h3 fills both 1 Gbit/s NICs (96 % > 90 %) but
    /// only half of each 2 Gbit/s ToR uplink of t1 (ECMP over two) and
    /// 48 % of t2's: two congested links for the interval.
    #[test]
    fn vm_traffic_routed_up_and_down_the_tree() {
        let snap = scenario(120e6);
        assert_eq!(congested_link_s(&snap, 0.9, 10.0, &[]), 20.0);
        let snap = scenario(100e6);
        assert_eq!(congested_link_s(&snap, 0.9, 10.0, &[]), 0.0);
    }

    /// `fill_used` writes each link's VM traffic in bit/s: 120 MB/s on both
    /// NICs, half of it on each of t1's two uplinks, all on t2's.
    #[test]
    fn used_bandwidth_of_every_link() {
        let mut snap = scenario(120e6);
        fill_used(&mut snap);
        let used = |a: &str, b: &str| {
            snap.topology
                .links
                .iter()
                .find(|l| l.a == a && l.b == b)
                .map(|l| l.used_bps)
        };
        assert_eq!(used("h1", "t1"), Some(960e6));
        assert_eq!(used("h3", "t2"), Some(960e6));
        assert_eq!(used("h2", "t1"), Some(0.0));
        assert_eq!(used("t1", "a1"), Some(480e6));
        assert_eq!(used("t2", "a3"), Some(960e6));
        assert_eq!(used("a1", "c"), Some(480e6));
    }

    /// A 4-second migration stream of 40 MB/s from h2 to h3 on top of
    /// 100 MB/s pushes h3's NIC (and only it: h2 sends nothing else) over
    /// the limit for its 4 seconds; within the rack it crosses no uplink.
    #[test]
    fn migration_streams_count_their_duration() {
        let snap = scenario(100e6);
        let s = Stream {
            from: "h2",
            to: "h3",
            bytes_per_s: 40e6,
            secs: 4.0,
        };
        assert_eq!(congested_link_s(&snap, 0.9, 10.0, &[s]), 4.0);
        let same_rack = Stream { to: "h1", ..s };
        // h1 → h3 carries 100 MB/s up; 40 MB/s into h1 is down: 100 < 112.5.
        assert_eq!(congested_link_s(&snap, 0.9, 10.0, &[same_rack]), 0.0);
        let long = Stream { secs: 30.0, ..s };
        assert_eq!(congested_link_s(&snap, 0.9, 10.0, &[long]), 10.0);
    }
}
