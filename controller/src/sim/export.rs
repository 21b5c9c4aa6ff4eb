//! A knowledge [`Snapshot`] as a [`Scenario`]: the live data center
//! exported so that any policy can be tried on it offline
//! (`GET /api/v1/scenario`, `shoal-controller simulate --from-live URL`).
//!
//! What is kept: the switch tree with its uplink capacities, every host
//! (capacities, ToR, domain, VF count, slots), every VM with its placement,
//! size, vCPUs, environment (and head), VF, vNIC cap, dirty rate and its
//! **latest** load as constants (CPU, memory wanted, swap, packets, blocked
//! and received CPU time), the external endpoints, the traffic matrix and
//! the placement rules.
//!
//! What is adapted, so that the document loads ([`Scenario::load`]):
//!
//! - a host whose rack the topology does not know (its bridge has no LLDP
//!   neighbour yet) gets a ToR of its own, without uplinks;
//! - an external endpoint at a switch the topology does not know gets a
//!   core switch of that id (as live: its own cluster);
//! - an uplink to a switch that is not one level up is left out;
//! - rule names the inventory does not know are removed from their rules,
//!   and a rule left without the names it needs is dropped (each change is
//!   one of the returned notes);
//! - numbers that are not finite or negative become 0, vCPUs at least 1.

use std::collections::{BTreeMap, BTreeSet};

use super::scenario::{
    ExternalSpec, HostSpec, Scenario, Series, SwitchSpec, TopologySpec, TrafficSpec, VmSpec,
};
use crate::knowledge::rules::{Rule, RuleSet};
use crate::knowledge::snapshot::{Snapshot, SwitchLevel};

/// A finite, non-negative number (0 otherwise).
fn num(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// A name not in `taken`: `base`, else `base~2`, `base~3`, ...
fn fresh(base: &str, taken: &BTreeSet<String>) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    (2u64..)
        .map(|i| format!("{base}~{i}"))
        .find(|n| !taken.contains(n))
        .unwrap_or_else(|| base.to_string())
}

/// `snap` as a scenario called `name`, and notes on what had to be adapted
/// (see the module).
pub fn from_snapshot(snap: &Snapshot, name: &str) -> (Scenario, Vec<String>) {
    let mut notes = Vec::new();
    let topo = &snap.topology;
    // Switches, with only the uplinks one level up.
    let mut switches: Vec<SwitchSpec> = Vec::with_capacity(topo.switches.len());
    for (id, s) in &topo.switches {
        let want = match s.level {
            SwitchLevel::Tor => Some(SwitchLevel::Aggregation),
            SwitchLevel::Aggregation => Some(SwitchLevel::Core),
            SwitchLevel::Core => None,
        };
        let uplinks: Vec<String> = s
            .uplinks
            .iter()
            .filter(|u| topo.switches.get(*u).map(|x| x.level) == want && want.is_some())
            .cloned()
            .collect();
        if uplinks.len() != s.uplinks.len() {
            notes.push(format!("switch {id}: uplinks not one level up left out"));
        }
        let cap = topo
            .links
            .iter()
            .filter(|l| {
                (l.a == *id && uplinks.contains(&l.b)) || (l.b == *id && uplinks.contains(&l.a))
            })
            .map(|l| l.capacity_bps)
            .filter(|c| c.is_finite() && *c > 0.0)
            .reduce(f64::min);
        switches.push(SwitchSpec {
            id: id.clone(),
            level: s.level,
            uplinks,
            uplink_bps: cap,
        });
    }
    let mut taken: BTreeSet<String> = topo.switches.keys().cloned().collect();
    taken.extend(snap.hosts.keys().cloned());
    taken.extend(snap.vms.keys().cloned());
    taken.extend(snap.externals.keys().cloned());
    // Hosts; an unknown rack gets a ToR of its own.
    let mut own_tor: BTreeMap<String, String> = BTreeMap::new();
    let mut hosts = Vec::with_capacity(snap.hosts.len());
    for (id, h) in &snap.hosts {
        let rack = &h.location.rack;
        let is_tor = topo
            .switches
            .get(rack)
            .is_some_and(|s| s.level == SwitchLevel::Tor);
        let tor = if is_tor {
            rack.clone()
        } else {
            let base = if rack.is_empty() { id } else { rack };
            let tor = match own_tor.get(base) {
                Some(t) => t.clone(),
                None => {
                    let t = fresh(&format!("tor-{base}"), &taken);
                    taken.insert(t.clone());
                    own_tor.insert(base.clone(), t.clone());
                    switches.push(SwitchSpec {
                        id: t.clone(),
                        level: SwitchLevel::Tor,
                        uplinks: Vec::new(),
                        uplink_bps: None,
                    });
                    notes.push(format!(
                        "host {id}: its ToR is not known; given a ToR of its own ({t})"
                    ));
                    t
                }
            };
            tor
        };
        hosts.push(HostSpec {
            id: id.clone(),
            tor,
            cores: num(h.cores),
            memory_mb: num(h.memory_mb),
            nic_bps: num(h.nic_bps),
            vf_count: h.vf_count,
            max_vms: h.max_vms,
            domain: h.domain.clone(),
        });
    }
    // External endpoints; an unknown switch becomes a core switch.
    let mut externals = Vec::with_capacity(snap.externals.len());
    for (x, e) in &snap.externals {
        if !switches.iter().any(|s| s.id == e.switch) {
            switches.push(SwitchSpec {
                id: e.switch.clone(),
                level: SwitchLevel::Core,
                uplinks: Vec::new(),
                uplink_bps: None,
            });
            notes.push(format!(
                "external {x}: switch {} is not in the topology; added as a core switch",
                e.switch
            ));
        }
        externals.push(ExternalSpec {
            name: x.clone(),
            switch: e.switch.clone(),
            ip: e.ipv4,
        });
    }
    let vms: Vec<VmSpec> = snap
        .vms
        .iter()
        .map(|(n, v)| {
            let l = v.latest();
            let memory_mb = num(v.memory_mb);
            VmSpec {
                name: n.clone(),
                host: v.host.clone(),
                ip: v.ipv4,
                memory_mb,
                max_memory_mb: Some(num(v.max_memory_mb).max(memory_mb)),
                dirty_rate_mbps: num(v.dirty_rate_mbps),
                vcpus: v.vcpus.max(1),
                environment: v.environment.clone(),
                head: v.head && v.environment.is_some(),
                vnic_bps: v
                    .vnic_bytes_per_s
                    .map(|b| num(b) * 8.0)
                    .filter(|b| *b > 0.0),
                vf: v.has_vf,
                cpu: Series::Const(num(l.cpu_cores)),
                mem_used_mb: Some(Series::Const(num(l.mem_used_mb))),
                swap_out_pps: Series::Const(num(l.swap_out_pps)),
                swap_in_pps: Series::Const(num(l.swap_in_pps)),
                packets: Some(Series::Const(num(l.packets))),
                blocked_s: Series::Const(num(l.blocked_s)),
                gotten_s: Some(Series::Const(num(l.gotten_s))),
            }
        })
        .collect();
    let known = |n: &str| snap.vms.contains_key(n) || snap.externals.contains_key(n);
    let mut traffic = Vec::new();
    for (src, row) in &snap.traffic {
        for (dst, rate) in row {
            let both_external =
                snap.externals.contains_key(src) && snap.externals.contains_key(dst);
            if src == dst || !known(src) || !known(dst) || both_external {
                continue;
            }
            traffic.push(TrafficSpec {
                src: src.clone(),
                dst: dst.clone(),
                bytes_per_s: Series::Const(num(*rate)),
            });
        }
    }
    let rules = known_rules(snap, &mut notes);
    let scn = Scenario {
        name: name.to_string(),
        interval_s: if snap.interval_s.is_finite() && snap.interval_s > 0.0 {
            snap.interval_s
        } else {
            10.0
        },
        rounds: None,
        topology: TopologySpec { switches },
        hosts,
        vms,
        externals,
        traffic,
        rules,
    };
    (scn, notes)
}

/// The snapshot's rules naming only its VMs and hosts (see the module).
fn known_rules(snap: &Snapshot, notes: &mut Vec<String>) -> RuleSet {
    let vm = |v: &String| snap.vms.contains_key(v);
    let host = |h: &String| snap.hosts.contains_key(h);
    let keep = |list: &[String], f: &dyn Fn(&String) -> bool| -> Vec<String> {
        list.iter().filter(|x| f(x)).cloned().collect()
    };
    let mut out = Vec::with_capacity(snap.rules.len());
    for r in &snap.rules.rules {
        let adapted = match r {
            Rule::Pin { name, vms, hosts } => {
                let (vms, hosts) = (keep(vms, &vm), keep(hosts, &host));
                (!vms.is_empty() && !hosts.is_empty()).then(|| Rule::Pin {
                    name: name.clone(),
                    vms,
                    hosts,
                })
            }
            Rule::Exclude { name, hosts, vms } => {
                let hosts = keep(hosts, &host);
                let vms = vms.as_ref().map(|v| keep(v, &vm));
                (!hosts.is_empty() && vms.as_ref().is_none_or(|v| !v.is_empty())).then(|| {
                    Rule::Exclude {
                        name: name.clone(),
                        hosts,
                        vms,
                    }
                })
            }
            Rule::Affinity { name, vms, scope } => {
                let vms = keep(vms, &vm);
                (vms.len() >= 2).then(|| Rule::Affinity {
                    name: name.clone(),
                    vms,
                    scope: *scope,
                })
            }
            Rule::AntiAffinity { name, vms, scope } => {
                let vms = keep(vms, &vm);
                (vms.len() >= 2).then(|| Rule::AntiAffinity {
                    name: name.clone(),
                    vms,
                    scope: *scope,
                })
            }
            Rule::HostLimit {
                name,
                hosts,
                max_vms,
            } => {
                let hosts = hosts.as_ref().map(|h| keep(h, &host));
                hosts
                    .as_ref()
                    .is_none_or(|h| !h.is_empty())
                    .then(|| Rule::HostLimit {
                        name: name.clone(),
                        hosts,
                        max_vms: *max_vms,
                    })
            }
            Rule::Reserve {
                name,
                hosts,
                cpu,
                mem,
                net,
            } => {
                let hosts = hosts.as_ref().map(|h| keep(h, &host));
                hosts
                    .as_ref()
                    .is_none_or(|h| !h.is_empty())
                    .then(|| Rule::Reserve {
                        name: name.clone(),
                        hosts,
                        cpu: *cpu,
                        mem: *mem,
                        net: *net,
                    })
            }
        };
        match adapted {
            Some(a) => {
                if &a != r {
                    notes.push(format!(
                        "rule {:?}: names the inventory does not know left out",
                        r.name()
                    ));
                }
                out.push(a);
            }
            None => notes.push(format!(
                "rule {:?}: dropped (it names no VM or host of the data center)",
                r.name()
            )),
        }
    }
    // Removing names cannot make a valid set contradictory in general, but
    // keep the export loadable whatever happens: rules are added one by one
    // and one that does not fit is left out.
    let mut set = RuleSet::new(out.clone());
    if set.validate().is_err() {
        let mut ok = RuleSet::default();
        for r in out {
            let mut next = ok.clone();
            let name = r.name().to_string();
            next.rules.push(r);
            match next.validate() {
                Ok(()) => ok = next,
                Err(e) => notes.push(format!("rule {name:?}: dropped ({e})")),
            }
        }
        set = ok;
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::snapshot::{
        ExternalEndpoint, HostLocation, HostState, LinkInfo, SwitchInfo, VmSample, VmState,
    };

    /// Two racks under one aggregation switch, a host whose ToR is unknown,
    /// three VMs, a client, traffic, a pin rule naming a host that is gone.
    fn live() -> Snapshot {
        let mut s = Snapshot {
            now_s: 100.0,
            interval_s: 5.0,
            round: 7,
            ..Default::default()
        };
        let sw = |level, up: &[&str]| SwitchInfo {
            level,
            uplinks: up.iter().map(|u| u.to_string()).collect(),
        };
        s.topology
            .switches
            .insert("agg".into(), sw(SwitchLevel::Aggregation, &[]));
        s.topology
            .switches
            .insert("t1".into(), sw(SwitchLevel::Tor, &["agg"]));
        s.topology
            .switches
            .insert("t2".into(), sw(SwitchLevel::Tor, &["agg"]));
        s.topology.links.push(LinkInfo {
            a: "t1".into(),
            b: "agg".into(),
            capacity_bps: 10e9,
            used_bps: 0.0,
        });
        let locs = s.topology.locate_all();
        let host = |rack: &str, loc: Option<HostLocation>| HostState {
            cores: 8.0,
            memory_mb: 16384.0,
            nic_bps: 1e9,
            vf_count: 2,
            max_vms: Some(10),
            domain: Some("d1".into()),
            location: loc.unwrap_or(HostLocation {
                rack: rack.into(),
                pod: rack.into(),
                cluster: rack.into(),
                unknown: true,
            }),
            history: Vec::new(),
        };
        s.hosts
            .insert("h1".into(), host("t1", locs.get("t1").cloned()));
        s.hosts
            .insert("h2".into(), host("t2", locs.get("t2").cloned()));
        s.hosts.insert("h3".into(), host("h3", None));
        let vm = |h: &str, cpu: f64| VmState {
            host: h.into(),
            environment: Some("tenant".into()),
            vcpus: 2,
            memory_mb: 1024.0,
            max_memory_mb: 2048.0,
            dirty_rate_mbps: 3.0,
            vnic_bytes_per_s: Some(1e6),
            history: vec![
                VmSample {
                    cpu_cores: 9.0,
                    ..Default::default()
                },
                VmSample {
                    cpu_cores: cpu,
                    mem_used_mb: 512.0,
                    packets: 100.0,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        s.vms.insert("a".into(), vm("h1", 1.5));
        s.vms.insert("b".into(), vm("h2", 0.5));
        s.vms.insert("c".into(), vm("h3", f64::NAN));
        s.externals.insert(
            "client".into(),
            ExternalEndpoint {
                switch: "gw".into(),
                ipv4: None,
                location: s.topology.locate_switch("gw"),
            },
        );
        s.traffic
            .entry("a".into())
            .or_default()
            .insert("b".into(), 1e6);
        s.traffic
            .entry("client".into())
            .or_default()
            .insert("c".into(), 2e5);
        s.traffic
            .entry("gone".into())
            .or_default()
            .insert("a".into(), 1.0);
        s.rules = serde_json::from_str(
            r#"[{"kind":"pin","name":"p","vms":["a"],"hosts":["h1","h9"]},
                {"kind":"anti_affinity","name":"n","vms":["a","zz"],"scope":"host"}]"#,
        )
        .expect("rules");
        s
    }

    /// The export loads with the simulator's loader and keeps the
    /// essentials: hosts, placement, sizes, the latest loads, traffic,
    /// groups and the rules (less the unknown names).
    #[test]
    fn a_live_snapshot_exports_as_a_loadable_scenario() {
        let snap = live();
        let (scn, notes) = from_snapshot(&snap, "live");
        let text = serde_json::to_string(&scn).expect("json");
        let back = Scenario::load(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(back, scn);
        assert_eq!(back.interval_s, 5.0);
        let init = back.initial_snapshot();
        assert_eq!(
            init.hosts.keys().collect::<Vec<_>>(),
            snap.hosts.keys().collect::<Vec<_>>()
        );
        for (n, v) in &snap.vms {
            let got = &init.vms[n];
            assert_eq!(got.host, v.host, "{n}");
            assert_eq!(got.memory_mb, v.memory_mb);
            assert_eq!(got.vcpus, v.vcpus);
            assert_eq!(got.environment, v.environment);
            assert_eq!(got.vnic_bytes_per_s, v.vnic_bytes_per_s);
        }
        let a = back.vms.iter().find(|v| v.name == "a").expect("a");
        assert_eq!(a.cpu, Series::Const(1.5), "the latest load");
        let c = back.vms.iter().find(|v| v.name == "c").expect("c");
        assert_eq!(c.cpu, Series::Const(0.0), "NaN is not exported");
        assert_eq!(init.rate("a", "b"), 1e6);
        assert_eq!(init.rate("client", "c"), 2e5);
        assert_eq!(back.traffic.len(), 2, "the unknown sender is left out");
        // Same rack/pod structure for the hosts the topology knows.
        assert_eq!(init.hosts["h1"].location.pod, init.hosts["h2"].location.pod);
        assert_eq!(init.hosts["h1"].domain.as_deref(), Some("d1"));
        assert_ne!(
            init.hosts["h3"].location.rack,
            init.hosts["h1"].location.rack
        );
        // The uplink capacity comes from the link.
        let t1 = back
            .topology
            .switches
            .iter()
            .find(|s| s.id == "t1")
            .expect("t1");
        assert_eq!(t1.uplink_bps, Some(10e9));
        assert_eq!(
            serde_json::to_value(&back.rules).expect("rules"),
            serde_json::json!([{"kind":"pin","name":"p","vms":["a"],"hosts":["h1"]}])
        );
        assert!(
            notes.iter().any(|n| n.contains("\"n\"")) && notes.iter().any(|n| n.contains("h3")),
            "{notes:?}"
        );
        // The communication cost is the same on both sides.
        let w = crate::plan::score::DEFAULT_WEIGHTS;
        let live_cost = crate::plan::physics::communication_cost(&snap, &w);
        let sim_cost = crate::plan::physics::communication_cost(&init, &w);
        assert!(
            (live_cost - sim_cost).abs() < 1e-6,
            "{live_cost} vs {sim_cost}"
        );
    }
}
