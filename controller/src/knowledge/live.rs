//! Builds the knowledge [`Snapshot`] of the running controller: hosts and
//! VMs from the host daemons' registrations and reports, λ(u,v) from the
//! monitor (MACs mapped to VM names), and the tree levels from the LLDP
//! topology around the registered hypervisor bridges.
//!
//! A learnt endpoint that is no VM of any registered host and sits at an
//! edge port of a switch that is not a hypervisor bridge (registered or
//! configured) is an external endpoint (a client, a gateway): named
//! `ext:<ip>` (`ext:<mac>` without an IPv4 address, or when another
//! endpoint already has that name), located at its switch, and kept in the
//! snapshot when it has traffic with a VM. Their number is bounded by the
//! endpoint table's. An endpoint on a hypervisor's bridge that hostd does
//! not know is not an external: its traffic is left out, as any pair with
//! an unknown end.
//!
//! Times are seconds since the controller started (`start_unix_ms`), the
//! same base for report times, migration records and `now_s`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use ofp::MacAddr;

use crate::knowledge::groups::{EffectiveGroups, Groups};
use crate::knowledge::rules::RuleSet;
use crate::knowledge::snapshot::{
    ExternalEndpoint, HostLocation, HostSample, HostState, HotspotEvent, LinkInfo, MigrationRecord,
    Snapshot, SwitchInfo, SwitchLevel, Topology as SnapTopology, VmSample, VmState,
};
use crate::monitor::dpid::dpid_str;
use crate::monitor::hosts::{FastMap, HostEntry, HostRegistry};
use crate::monitor::stats::{PairRate, PortRate};
use crate::monitor::topology::Topology;

/// Everything the builder reads, gathered under the caller's locks.
pub struct LiveInputs<'a> {
    /// Registered hosts and VMs.
    pub hosts: &'a HostRegistry,
    /// LLDP topology.
    pub topo: &'a Topology,
    /// Statically configured bridges (dpid → hypervisor), besides the
    /// registered ones: their endpoints are never external.
    pub hypervisors: &'a BTreeMap<u64, String>,
    /// λ(u,v) by MAC.
    pub rates: &'a [PairRate],
    /// Port rates (link use).
    pub ports: &'a [PortRate],
    /// Capacity of every link, bit/s (None: the port's speed).
    pub link_capacity_bps: Option<f64>,
    /// Controller start, Unix ms (time origin).
    pub start_unix_ms: i64,
    /// Now, Unix ms.
    pub now_unix_ms: i64,
    /// Monitoring interval, s.
    pub interval_s: f64,
    /// Evaluation round.
    pub round: u64,
    /// Samples kept per host/VM in the snapshot.
    pub history: usize,
    /// Running and recently ended migrations.
    pub migrations: Vec<MigrationRecord>,
    /// Hotspots of recent rounds.
    pub hotspot_history: Vec<HotspotEvent>,
    /// When each VM's last migration ended, s (time origin as above).
    pub last_migration_s: BTreeMap<String, f64>,
    /// The set of domains and environments in force (the API's, else the
    /// configuration's); the registrations fill in the rest.
    pub groups: &'a Groups,
    /// The placement rules in force (validated), copied into
    /// [`Snapshot::rules`]; [`LiveInputs::new`] starts with none.
    pub rules: &'a RuleSet,
}

/// No placement rules (the default of [`LiveInputs::new`]).
pub static NO_RULES: RuleSet = RuleSet { rules: Vec::new() };

impl<'a> LiveInputs<'a> {
    /// Inputs of a first round at the time origin: no port rates, no
    /// migrations or hotspots yet, a 2 s interval and 5 samples kept. Callers
    /// set the rest with struct update syntax.
    pub fn new(
        hosts: &'a HostRegistry,
        topo: &'a Topology,
        hypervisors: &'a BTreeMap<u64, String>,
        rates: &'a [PairRate],
        groups: &'a Groups,
    ) -> Self {
        LiveInputs {
            hosts,
            topo,
            hypervisors,
            rates,
            ports: &[],
            link_capacity_bps: None,
            start_unix_ms: 0,
            now_unix_ms: 0,
            interval_s: 2.0,
            round: 1,
            history: 5,
            migrations: Vec::new(),
            hotspot_history: Vec::new(),
            last_migration_s: BTreeMap::new(),
            groups,
            rules: &NO_RULES,
        }
    }
}

fn secs(ms: i64, origin: i64) -> f64 {
    (ms - origin) as f64 / 1000.0
}

/// Capacity of a port, bit/s.
pub fn port_capacity_bps(topo: &Topology, dpid: u64, port: u32, over: Option<f64>) -> f64 {
    if let Some(c) = over {
        return c;
    }
    topo.switch(dpid)
        .and_then(|s| s.ports.get(&port))
        .map(|p| f64::from(p.desc.curr_speed) * 1000.0)
        .filter(|c| *c > 0.0)
        .unwrap_or(1e9)
}

/// Tree levels around the hypervisor bridges: distance 1 = ToR, 2 =
/// aggregation, 3+ = core. Returns (level by dpid, distance by dpid).
pub fn levels(topo: &Topology, bridges: &BTreeSet<u64>) -> BTreeMap<u64, usize> {
    let adj = topo.adjacency();
    let mut dist: BTreeMap<u64, usize> = bridges
        .iter()
        .filter(|b| adj.contains_key(b))
        .map(|b| (*b, 0))
        .collect();
    let mut q: VecDeque<u64> = dist.keys().copied().collect();
    while let Some(u) = q.pop_front() {
        let du = dist.get(&u).copied().unwrap_or(0);
        for &(v, _, _) in adj.get(&u).map(Vec::as_slice).unwrap_or_default() {
            if let std::collections::btree_map::Entry::Vacant(e) = dist.entry(v) {
                e.insert(du + 1);
                q.push_back(v);
            }
        }
    }
    dist
}

/// Adjacency of the LLDP topology: dpid → (neighbour, local port, its port).
type Adjacency = BTreeMap<u64, Vec<(u64, u32, u32)>>;

/// Builds the snapshot: the switch tree and links, the hosts that
/// reported, their VMs, the external endpoints, and λ(u,v) between those
/// VMs and between them and the externals.
pub fn build_snapshot(inp: &LiveInputs<'_>) -> Snapshot {
    let bridges = inp.hosts.bridges();
    let bridge_set: BTreeSet<u64> = bridges.keys().copied().collect();
    let dist = levels(inp.topo, &bridge_set);
    let adj = inp.topo.adjacency();
    let topology = snapshot_topology(inp, &bridges, &dist, &adj);
    let locations = topology.locate_all();
    // The set in force, filled in by the registrations' domains and
    // environments (never fails: contradictions are resolved).
    let groups = EffectiveGroups::new(inp.groups, inp.hosts);
    let hosts = reported_hosts(inp, &groups, &dist, &adj, &locations);
    let (vms, mac_to_vm) = vm_states(inp, &groups, &hosts);
    let mut ext = Externals::new(inp, &bridge_set, &topology);
    let (traffic, externals) = traffic_between(inp.rates, &mac_to_vm, &mut ext);
    Snapshot {
        now_s: secs(inp.now_unix_ms, inp.start_unix_ms),
        interval_s: inp.interval_s,
        round: inp.round,
        topology,
        hosts,
        vms,
        traffic,
        externals,
        migrations: inp.migrations.clone(),
        hotspot_history: inp.hotspot_history.clone(),
        rules: inp.rules.clone(),
    }
}

/// The level of a switch at `distance` hops from the nearest bridge.
fn switch_level(distance: usize) -> SwitchLevel {
    match distance {
        1 => SwitchLevel::Tor,
        2 => SwitchLevel::Aggregation,
        _ => SwitchLevel::Core,
    }
}

/// Switches with levels and uplinks; links with capacity and use.
fn snapshot_topology(
    inp: &LiveInputs<'_>,
    bridges: &BTreeMap<u64, String>,
    dist: &BTreeMap<u64, usize>,
    adj: &Adjacency,
) -> SnapTopology {
    let mut topology = SnapTopology::default();
    for (&d, &k) in dist {
        if k == 0 {
            continue;
        }
        let uplinks: BTreeSet<String> = adj
            .get(&d)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|(n, _, _)| dist.get(n).copied() == Some(k + 1))
            .map(|(n, _, _)| dpid_str(*n))
            .collect();
        topology.switches.insert(
            dpid_str(d),
            SwitchInfo {
                level: switch_level(k),
                uplinks: uplinks.into_iter().collect(),
            },
        );
    }
    topology.links = snapshot_links(inp, bridges, adj);
    topology
}

/// Every link once, named by hypervisor (bridges) or dpid, with its
/// capacity and the larger of its two directions' use, bit/s.
fn snapshot_links(
    inp: &LiveInputs<'_>,
    bridges: &BTreeMap<u64, String>,
    adj: &Adjacency,
) -> Vec<LinkInfo> {
    let tx_rate: BTreeMap<(u64, u32), f64> = inp
        .ports
        .iter()
        .filter_map(|p| p.tx_bytes_per_s.map(|r| ((p.dpid, p.port), r * 8.0)))
        .collect();
    let name = |d: u64| match bridges.get(&d) {
        Some(h) => h.clone(),
        None => dpid_str(d),
    };
    let mut links = Vec::new();
    let mut seen = BTreeSet::new();
    for (&a, nbrs) in adj {
        for &(b, ap, bp) in nbrs {
            if !seen.insert((a.min(b), a.max(b), ap.min(bp))) {
                continue;
            }
            let cap = port_capacity_bps(inp.topo, a, ap, inp.link_capacity_bps);
            let used = tx_rate
                .get(&(a, ap))
                .copied()
                .unwrap_or(0.0)
                .max(tx_rate.get(&(b, bp)).copied().unwrap_or(0.0));
            links.push(LinkInfo {
                a: name(a),
                b: name(b),
                capacity_bps: cap,
                used_bps: used,
            });
        }
    }
    links
}

/// Hosts: only those that reported at least once (a host that only
/// registered has no load to judge, its VMs no dirty rate).
fn reported_hosts(
    inp: &LiveInputs<'_>,
    groups: &EffectiveGroups<'_>,
    dist: &BTreeMap<u64, usize>,
    adj: &Adjacency,
    locations: &BTreeMap<String, HostLocation>,
) -> BTreeMap<String, HostState> {
    let origin = inp.start_unix_ms;
    let mut hosts = BTreeMap::new();
    for (id, e) in inp.hosts.hosts() {
        if e.reports.is_empty() {
            continue;
        }
        let reg = &e.registration;
        let tor = reg.bridge.as_ref().and_then(|b| {
            adj.get(&b.datapath_id)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|(n, _, _)| dist.get(n).copied() == Some(1))
                .map(|(n, _, _)| dpid_str(*n))
                .min()
        });
        let location = tor
            .and_then(|t| locations.get(&t).cloned())
            .unwrap_or_else(|| HostLocation {
                rack: format!("host:{id}"),
                pod: format!("host:{id}"),
                cluster: format!("host:{id}"),
                unknown: true,
            });
        let skip = e.reports.len().saturating_sub(inp.history);
        let history = e
            .reports
            .iter()
            .skip(skip)
            .map(|r| HostSample {
                at_s: secs(r.at_unix_ms as i64, origin),
                cpu_util: r.host.cpu_util,
                mem_used_mb: r.host.mem_used_mb as f64,
                swap_out_pps: r.host.swap_out_pages_per_s,
                swap_in_pps: r.host.swap_in_pages_per_s,
                nic_tx_bytes_per_s: r.host.nic_tx_bytes_per_s,
                nic_rx_bytes_per_s: r.host.nic_rx_bytes_per_s,
            })
            .collect();
        hosts.insert(
            id.clone(),
            HostState {
                cores: f64::from(reg.cores),
                memory_mb: reg.memory_mb as f64,
                nic_bps: reg.nic_bps as f64,
                vf_count: reg.vf_count,
                max_vms: None,
                domain: groups.domain_of(id).map(str::to_string),
                location,
                history,
            },
        );
    }
    hosts
}

/// The VMs of the reported hosts, and MAC → VM name.
fn vm_states(
    inp: &LiveInputs<'_>,
    groups: &EffectiveGroups<'_>,
    hosts: &BTreeMap<String, HostState>,
) -> (BTreeMap<String, VmState>, FastMap<MacAddr, String>) {
    let mut vms = Vec::with_capacity(inp.hosts.vms().len());
    let mut mac_to_vm: FastMap<MacAddr, String> =
        FastMap::with_capacity_and_hasher(inp.hosts.vms().len(), Default::default());
    // Each host is read once for all its VMs: its registration's inventory
    // and its last `history` reports (a VM at a time was O(VMs × reports ×
    // VMs per report) string comparisons: most of the round at 10,000
    // VMs), and found by one hash lookup per VM (`None`: not reported).
    // The dirty-rate maximum over all kept reports is the registry's
    // running window ([`HostEntry::vm_window`]).
    let mut per_host: FastMap<&str, Option<(&HostEntry, HostVms<'_>)>> = FastMap::default();
    for (name, place) in inp.hosts.vms() {
        let Some((e, hv)) = per_host
            .entry(place.host.as_str())
            .or_insert_with(|| {
                let e = inp.hosts.host(&place.host)?;
                hosts
                    .contains_key(place.host.as_str())
                    .then(|| (e, host_vms(inp, e)))
            })
            .as_mut()
        else {
            continue;
        };
        let Some(inv) = hv.inventory.get(name.as_str()).copied() else {
            continue;
        };
        if let Ok(mac) = inv.mac.parse::<MacAddr>() {
            mac_to_vm.insert(mac, name.clone());
        }
        let (history, latest_mb) = hv.samples.remove(name.as_str()).unwrap_or_default();
        let (dirty_max, has_vf) = e.vm_window(name).unwrap_or((0.0, false));
        let memory_mb = latest_mb.unwrap_or(inv.memory_mb) as f64;
        let group = groups.environment_of(name);
        vms.push((
            name.clone(),
            VmState {
                host: place.host.clone(),
                environment: group.map(|(e, _)| e.to_string()),
                head: group.is_some_and(|(_, head)| head),
                ipv4: inv.ip.as_deref().and_then(|ip| ip.trim().parse().ok()),
                vcpus: inv.vcpus,
                memory_mb,
                max_memory_mb: inv.max_memory_mb as f64,
                dirty_rate_mbps: dirty_max,
                vnic_bytes_per_s: None,
                has_vf,
                last_migration_s: inp.last_migration_s.get(name).copied(),
                history,
            },
        ));
    }
    // In name order already: the map is built in one pass, not searched
    // for each VM.
    (vms.into_iter().collect(), mac_to_vm)
}

/// One host's VMs as the snapshot needs them: the inventory of its
/// registration by name (a name listed twice: the first entry), and each
/// VM's [`VmSamples`].
struct HostVms<'e> {
    inventory: FastMap<&'e str, &'e shoal_common::proto::VmInventory>,
    samples: FastMap<&'e str, VmSamples>,
}

fn host_vms<'e>(inp: &LiveInputs<'_>, e: &'e HostEntry) -> HostVms<'e> {
    let mut inventory =
        FastMap::with_capacity_and_hasher(e.registration.vms.len(), Default::default());
    for v in &e.registration.vms {
        inventory.entry(v.name.as_str()).or_insert(v);
    }
    HostVms {
        inventory,
        samples: vm_histories(inp, e),
    }
}

/// A VM's samples from the last `history` reports of its host (oldest
/// first), and its allocated memory in the latest report when that lists
/// it.
type VmSamples = (Vec<VmSample>, Option<u64>);

/// The sample of VM metrics `m` from report `r`.
fn vm_sample(
    r: &shoal_common::proto::Report,
    m: &shoal_common::proto::VmMetrics,
    origin: i64,
) -> VmSample {
    VmSample {
        at_s: secs(r.at_unix_ms as i64, origin),
        cpu_cores: m.cpu_cores,
        mem_used_mb: m.used_memory_mb as f64,
        swap_out_pps: 0.0,
        swap_in_pps: 0.0,
        packets: (m.tx_packets_per_s + m.rx_packets_per_s) * r.interval_s,
        blocked_s: m.blocked_ms.unwrap_or(0.0) / 1000.0,
        gotten_s: m.gotten_ms.unwrap_or(0.0) / 1000.0,
        tx_bytes_per_s: m.tx_bytes_per_s,
        rx_bytes_per_s: m.rx_bytes_per_s,
    }
}

/// The [`VmSamples`] of every VM the last `history` reports (at least the
/// latest) of host `e` list, in one pass over them, newest first (a name listed twice in one
/// report: its first entry counts). A report usually lists the VMs in the
/// order of the report after it, so a VM's slot is found by its position
/// (checked) and hashed only when that fails.
fn vm_histories<'e>(inp: &LiveInputs<'_>, e: &'e HostEntry) -> FastMap<&'e str, VmSamples> {
    struct Acc<'e> {
        name: &'e str,
        samples: Vec<VmSample>,
        latest_mb: Option<u64>,
        last_report: usize,
    }
    let origin = inp.start_unix_ms;
    let newest = e.reports.len().saturating_sub(1);
    let mut slots: FastMap<&str, usize> = FastMap::default();
    let mut acc: Vec<Acc<'e>> = Vec::new();
    let mut hint: Vec<usize> = Vec::new();
    let mut next: Vec<usize> = Vec::new();
    for (ri, r) in e.reports.iter().enumerate().rev().take(inp.history.max(1)) {
        next.clear();
        for (j, m) in r.vms.iter().enumerate() {
            let slot = match hint.get(j) {
                Some(&s) if acc.get(s).is_some_and(|a| a.name == m.name) => s,
                _ => *slots.entry(m.name.as_str()).or_insert_with(|| {
                    acc.push(Acc {
                        name: m.name.as_str(),
                        samples: Vec::new(),
                        latest_mb: None,
                        last_report: usize::MAX,
                    });
                    acc.len() - 1
                }),
            };
            next.push(slot);
            let Some(a) = acc.get_mut(slot) else {
                continue;
            };
            if a.last_report == ri {
                continue;
            }
            a.last_report = ri;
            if ri == newest {
                a.latest_mb = Some(m.memory_mb);
            }
            if a.samples.len() < inp.history {
                a.samples.push(vm_sample(r, m, origin));
            }
        }
        std::mem::swap(&mut hint, &mut next);
    }
    acc.into_iter()
        .map(|mut a| {
            a.samples.reverse();
            (a.name, (a.samples, a.latest_mb))
        })
        .collect()
}

/// One VM's samples (from the last `history` reports), largest dirty rate
/// and VF flag (over all kept reports) and latest memory, a report at a
/// time (what the snapshot must give for each VM).
#[cfg(test)]
fn vm_history(
    inp: &LiveInputs<'_>,
    e: &HostEntry,
    name: &str,
) -> (Vec<VmSample>, f64, bool, Option<u64>) {
    let origin = inp.start_unix_ms;
    let mut history = Vec::new();
    let mut dirty_max: f64 = 0.0;
    let mut has_vf = false;
    let recent = e.reports.len().saturating_sub(inp.history);
    for (i, r) in e.reports.iter().enumerate() {
        if let Some(m) = r.vms.iter().find(|v| v.name == name) {
            dirty_max = dirty_max.max(m.dirty_rate_mbps.unwrap_or(0.0));
            has_vf = m.vf_attached;
            if i >= recent {
                history.push(vm_sample(r, m, origin));
            }
        }
    }
    let latest = e
        .latest()
        .and_then(|r| r.vms.iter().find(|v| v.name == name))
        .map(|m| m.memory_mb);
    (history, dirty_max, has_vf, latest)
}

/// The learnt endpoints that are external: not the MAC of any registered
/// host's VM, not at a hypervisor bridge (registered ones in `bridges`, or
/// configured). Named `ext:<ip>`, else (no address, or the address already
/// taken by an external of a lower MAC) `ext:<mac>`.
///
/// Only the endpoints in the traffic matrix are ever asked for, so they are
/// looked up one by one ([`Externals::get`]); building every external each
/// round cost a string and a sort per learnt endpoint (half a million
/// under a MAC flood) for the few with traffic. One pass over the
/// endpoints with an address finds which external owns each address.
struct Externals<'a, 'i> {
    inp: &'a LiveInputs<'i>,
    bridges: &'a BTreeSet<u64>,
    topology: &'a SnapTopology,
    vm_macs: HashSet<MacAddr>,
    ip_owner: HashMap<std::net::Ipv4Addr, MacAddr>,
    found: HashMap<MacAddr, Option<(String, ExternalEndpoint)>>,
}

impl<'a, 'i> Externals<'a, 'i> {
    fn new(
        inp: &'a LiveInputs<'i>,
        bridges: &'a BTreeSet<u64>,
        topology: &'a SnapTopology,
    ) -> Self {
        let vm_macs: HashSet<MacAddr> = inp
            .hosts
            .hosts()
            .values()
            .flat_map(|e| e.registration.vms.iter())
            .filter_map(|v| v.mac.parse().ok())
            .collect();
        let mut x = Externals {
            inp,
            bridges,
            topology,
            vm_macs,
            ip_owner: HashMap::new(),
            found: HashMap::new(),
        };
        let mut ip_owner: HashMap<std::net::Ipv4Addr, MacAddr> = HashMap::new();
        for e in inp.topo.endpoints() {
            if let Some(ip) = e.ip {
                if x.is_external(e) {
                    let owner = ip_owner.entry(ip).or_insert(e.mac);
                    *owner = (*owner).min(e.mac);
                }
            }
        }
        x.ip_owner = ip_owner;
        x
    }

    fn is_external(&self, e: &crate::monitor::topology::Endpoint) -> bool {
        !self.bridges.contains(&e.location.dpid)
            && !self.inp.hypervisors.contains_key(&e.location.dpid)
            && !self.vm_macs.contains(&e.mac)
    }

    /// The external endpoint with this MAC, with its name.
    fn get(&mut self, mac: MacAddr) -> Option<&(String, ExternalEndpoint)> {
        if !self.found.contains_key(&mac) {
            let v = self
                .inp
                .topo
                .endpoint(&mac)
                .filter(|e| self.is_external(e))
                .map(|e| {
                    let name = match e.ip {
                        Some(ip) if self.ip_owner.get(&ip) == Some(&e.mac) => format!("ext:{ip}"),
                        _ => format!("ext:{}", e.mac.to_string().to_ascii_lowercase()),
                    };
                    let switch = dpid_str(e.location.dpid);
                    let location = self.topology.locate_switch(&switch);
                    (
                        name,
                        ExternalEndpoint {
                            switch,
                            ipv4: e.ip,
                            location,
                        },
                    )
                });
            self.found.insert(mac, v);
        }
        self.found.get(&mac).and_then(Option::as_ref)
    }
}

/// λ(u,v) between known VMs, and between a known VM and an external
/// endpoint (pairs with traffic only; never two externals), with the
/// externals that have such traffic.
fn traffic_between(
    rates: &[PairRate],
    mac_to_vm: &FastMap<MacAddr, String>,
    ext: &mut Externals<'_, '_>,
) -> (
    BTreeMap<String, BTreeMap<String, f64>>,
    BTreeMap<String, ExternalEndpoint>,
) {
    let mut traffic: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut externals: BTreeMap<String, ExternalEndpoint> = BTreeMap::new();
    // Keyed by address, not text: no formatting per pair (a matrix may
    // hold a million pairs).
    let vm_of = mac_to_vm;
    for r in rates {
        if r.bytes_per_s.is_nan() || r.bytes_per_s <= 0.0 {
            continue;
        }
        let (src, dst) = (r.src, r.dst);
        let (u, v) = match (vm_of.get(&src), vm_of.get(&dst)) {
            (Some(u), Some(v)) => (u.clone(), v.clone()),
            (Some(u), None) => {
                let Some((x, e)) = ext.get(dst) else {
                    continue;
                };
                externals.insert(x.clone(), e.clone());
                (u.clone(), x.clone())
            }
            (None, Some(v)) => {
                let Some((x, e)) = ext.get(src) else {
                    continue;
                };
                externals.insert(x.clone(), e.clone());
                (x.clone(), v.clone())
            }
            (None, None) => continue,
        };
        traffic.entry(u).or_default().insert(v, r.bytes_per_s);
    }
    (traffic, externals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::hosts::tests::{reg, report, vm};
    use crate::monitor::topology::tests::build;
    use ofp::MacAddr;
    use std::time::Instant;

    /// hv1 (0x41) and hv2 (0x42) under ToR 0x31, hv3 (0x43) under ToR
    /// 0x32; both ToRs under agg 0x21.
    #[test]
    fn levels_locations_and_traffic() {
        let t0 = Instant::now();
        let topo = build(
            t0,
            &[
                (0x21, 3),
                (0x31, 3),
                (0x32, 3),
                (0x41, 2),
                (0x42, 2),
                (0x43, 2),
            ],
            &[
                ((0x41, 1), (0x31, 1)),
                ((0x42, 1), (0x31, 2)),
                ((0x43, 1), (0x32, 1)),
                ((0x31, 3), (0x21, 1)),
                ((0x32, 3), (0x21, 2)),
            ],
        );
        let mut hosts = HostRegistry::default();
        hosts
            .register(
                "hv1",
                reg(
                    "hv1",
                    0x41,
                    vec![shoal_common::proto::VmInventory {
                        ip: Some("10.0.0.10".into()),
                        ..vm("a", "02:00:00:00:00:0a")
                    }],
                ),
                0,
            )
            .unwrap();
        hosts
            .register(
                "hv2",
                reg("hv2", 0x42, vec![vm("b", "02:00:00:00:00:0b")]),
                0,
            )
            .unwrap();
        hosts.register("hv3", reg("hv3", 0x43, vec![]), 0).unwrap();
        for h in ["hv1", "hv2", "hv3"] {
            hosts.report(h, report(h, 1, vec![]), 1).unwrap();
        }
        // A host that registered but never reported is left out.
        hosts.register("hv4", reg("hv4", 0x44, vec![]), 0).unwrap();
        let rates = vec![PairRate {
            src: "02:00:00:00:00:0a".parse::<MacAddr>().unwrap(),
            dst: "02:00:00:00:00:0b".parse::<MacAddr>().unwrap(),
            dpid: 0x41,
            bytes_per_s: 1000.0,
            total_bytes: 5000,
            window_s: 6.0,
        }];
        // Configured groups reach the snapshot (VIOLIN's domains and
        // environments); unconfigured ones stay empty.
        let groups = Groups::new(
            &[("d0".to_string(), vec!["hv1".to_string()])].into(),
            &[crate::knowledge::groups::EnvironmentSpec {
                name: "tenant1".into(),
                members: vec!["a".into(), "b".into()],
                head: Some("b".into()),
            }],
        )
        .unwrap();
        let none = BTreeMap::new();
        let snap = build_snapshot(&LiveInputs {
            link_capacity_bps: Some(1e8),
            now_unix_ms: 10_000,
            round: 3,
            ..LiveInputs::new(&hosts, &topo, &none, &rates, &groups)
        });
        assert_eq!(snap.now_s, 10.0);
        assert_eq!(
            snap.topology.switches[&dpid_str(0x31)].level,
            SwitchLevel::Tor
        );
        assert_eq!(
            snap.topology.switches[&dpid_str(0x21)].level,
            SwitchLevel::Aggregation
        );
        assert_eq!(
            snap.topology.switches[&dpid_str(0x31)].uplinks,
            vec![dpid_str(0x21)]
        );
        let l1 = &snap.hosts["hv1"].location;
        let l2 = &snap.hosts["hv2"].location;
        let l3 = &snap.hosts["hv3"].location;
        assert_eq!(l1.rack, l2.rack, "same ToR");
        assert_ne!(l1.rack, l3.rack);
        assert_eq!(l1.pod, l3.pod, "same aggregation");
        assert_eq!(snap.rate("a", "b"), 1000.0);
        assert!(!snap.hosts.contains_key("hv4"));
        assert_eq!(snap.vms["a"].host, "hv1");
        // The inventory's IPv4 address (S-CORE's round-robin order).
        assert_eq!(snap.vms["a"].ipv4, Some([10, 0, 0, 10].into()));
        assert_eq!(snap.vms["b"].ipv4, None);
        assert_eq!(snap.hosts["hv1"].domain.as_deref(), Some("d0"));
        assert_eq!(snap.hosts["hv2"].domain, None);
        assert_eq!(snap.vms["a"].environment.as_deref(), Some("tenant1"));
        assert!(!snap.vms["a"].head);
        assert!(snap.vms["b"].head);
        // Host links are named by host id, capacities from the override.
        assert!(snap
            .topology
            .links
            .iter()
            .any(|l| (l.a == "hv1" || l.b == "hv1") && l.capacity_bps == 1e8));
    }

    /// Without any set (no API, no `[groups]`), the registrations' domains
    /// and environments reach the snapshot; a set names a host or VM, it
    /// wins for that one and the registrations still fill in the rest.
    #[test]
    fn registered_groups_reach_the_snapshot() {
        let topo = build(Instant::now(), &[], &[]);
        let mut hosts = HostRegistry::default();
        let mut a = vm("a", "02:00:00:00:00:0a");
        a.environment = Some("tenant1".into());
        a.environment_head = true;
        let mut b = vm("b", "02:00:00:00:00:0b");
        b.environment = Some("tenant1".into());
        let c = vm("c", "02:00:00:00:00:0c");
        let mut r1 = reg("hv1", 0x41, vec![a, c]);
        r1.domain = Some("east".into());
        let mut r2 = reg("hv2", 0x42, vec![b]);
        r2.domain = Some("west".into());
        hosts.register("hv1", r1, 0).unwrap();
        hosts.register("hv2", r2, 0).unwrap();
        for h in ["hv1", "hv2"] {
            hosts.report(h, report(h, 1, vec![]), 1).unwrap();
        }
        let none = BTreeMap::new();
        let groups = Groups::default();
        let snap = build_snapshot(&LiveInputs::new(&hosts, &topo, &none, &[], &groups));
        assert_eq!(snap.hosts["hv1"].domain.as_deref(), Some("east"));
        assert_eq!(snap.hosts["hv2"].domain.as_deref(), Some("west"));
        assert_eq!(snap.vms["a"].environment.as_deref(), Some("tenant1"));
        assert!(snap.vms["a"].head);
        assert_eq!(snap.vms["b"].environment.as_deref(), Some("tenant1"));
        assert!(!snap.vms["b"].head);
        assert_eq!(snap.vms["c"].environment, None);
        // A set naming hv2 and b wins for them only.
        let set = Groups::new(
            &[("d9".to_string(), vec!["hv2".to_string()])].into(),
            &[crate::knowledge::groups::EnvironmentSpec {
                name: "other".into(),
                members: vec!["b".into()],
                head: None,
            }],
        )
        .unwrap();
        let snap = build_snapshot(&LiveInputs::new(&hosts, &topo, &none, &[], &set));
        assert_eq!(snap.hosts["hv1"].domain.as_deref(), Some("east"));
        assert_eq!(snap.hosts["hv2"].domain.as_deref(), Some("d9"));
        assert_eq!(snap.vms["a"].environment.as_deref(), Some("tenant1"));
        assert_eq!(snap.vms["b"].environment.as_deref(), Some("other"));
    }

    /// The rules in force reach the snapshot; a host whose bridge has no
    /// ToR in the LLDP topology gets a placeholder location marked
    /// unknown (placement rules treat it conservatively).
    #[test]
    fn rules_and_unknown_locations_reach_the_snapshot() {
        let topo = build(
            Instant::now(),
            &[(0x31, 2), (0x41, 2)],
            &[((0x41, 1), (0x31, 1))],
        );
        let mut hosts = HostRegistry::default();
        hosts
            .register(
                "hv1",
                reg("hv1", 0x41, vec![vm("a", "02:00:00:00:00:0a")]),
                0,
            )
            .unwrap();
        hosts
            .register(
                "hv2",
                reg("hv2", 0x42, vec![vm("b", "02:00:00:00:00:0b")]),
                0,
            )
            .unwrap();
        for h in ["hv1", "hv2"] {
            hosts.report(h, report(h, 1, vec![]), 1).unwrap();
        }
        let groups = Groups::default();
        let none = BTreeMap::new();
        let snap = build_snapshot(&LiveInputs::new(&hosts, &topo, &none, &[], &groups));
        assert!(snap.rules.is_empty());
        assert!(!snap.hosts["hv1"].location.unknown);
        let l2 = &snap.hosts["hv2"].location;
        assert!(l2.unknown);
        assert_eq!(l2.rack, "host:hv2");
        let rules: RuleSet = serde_json::from_str(
            r#"[{"kind":"anti_affinity","name":"apart","vms":["a","b"],"scope":"rack"}]"#,
        )
        .unwrap();
        let snap = build_snapshot(&LiveInputs {
            rules: &rules,
            ..LiveInputs::new(&hosts, &topo, &none, &[], &groups)
        });
        assert_eq!(snap.rules, rules);
        // The location flag survives the snapshot's JSON form (and is left
        // out for known hosts).
        let text = serde_json::to_string(&snap.hosts["hv2"].location).unwrap();
        assert!(text.contains("\"unknown\":true"), "{text}");
        let text = serde_json::to_string(&snap.hosts["hv1"].location).unwrap();
        assert!(!text.contains("unknown"), "{text}");
    }

    /// The one-pass histories of all of a host's VMs are what the
    /// VM-at-a-time reading gives: VMs missing from some reports, a name
    /// listed twice in one report, dirty rates and VFs changing, more
    /// reports than the registry keeps (the largest dirty rate leaving the
    /// window, a VM no kept report lists any more).
    #[test]
    fn one_pass_vm_histories_match_the_vm_at_a_time_ones() {
        let mut hosts = HostRegistry::new(6);
        let names = ["v1", "v2", "v3"];
        let inv = names
            .iter()
            .enumerate()
            .map(|(i, n)| vm(n, &format!("02:00:00:00:00:{:02x}", i + 1)))
            .collect();
        hosts.register("hv1", reg("hv1", 0x41, inv), 0).unwrap();
        for seq in 1..=9u64 {
            let mut r = report("hv1", seq, vec![]);
            let base = r.vms[0].clone();
            r.vms.clear();
            for (i, n) in names.iter().enumerate() {
                // v2 skips every third report, v3 the even ones.
                if (i == 1 && seq.is_multiple_of(3)) || (i == 2 && seq.is_multiple_of(2)) {
                    continue;
                }
                let mut m = base.clone();
                m.name = n.to_string();
                m.cpu_cores = seq as f64 + i as f64 / 10.0;
                m.dirty_rate_mbps = (seq % 4 != 1).then_some((seq * 7 % 5) as f64 + i as f64);
                m.vf_attached = (seq + i as u64).is_multiple_of(3);
                r.vms.push(m);
            }
            if seq <= 2 {
                // v4 only in the first two reports: gone from the window.
                let mut m = base.clone();
                m.name = "v4".into();
                m.dirty_rate_mbps = Some(50.0);
                r.vms.push(m);
            }
            if seq == 8 {
                // Listed twice: the first entry counts.
                let mut dup = r.vms[0].clone();
                dup.cpu_cores = 99.0;
                dup.vf_attached = !dup.vf_attached;
                r.vms.push(dup);
            }
            hosts.report("hv1", r, seq as i64).unwrap();
            // The running window after every report: the maximum and the
            // latest VF flag over the kept reports, read report by report.
            let e = hosts.host("hv1").unwrap();
            for n in ["v1", "v2", "v3", "v4"] {
                let listed: Vec<_> = e
                    .reports
                    .iter()
                    .filter_map(|r| r.vms.iter().find(|v| v.name == n))
                    .collect();
                let want = listed.last().map(|last| {
                    let max = listed
                        .iter()
                        .map(|m| m.dirty_rate_mbps.unwrap_or(0.0))
                        .fold(0.0, f64::max);
                    (max, last.vf_attached)
                });
                assert_eq!(e.vm_window(n), want, "{n} after report {seq}");
            }
        }
        let topo = build(Instant::now(), &[], &[]);
        let none = BTreeMap::new();
        let groups = Groups::default();
        for history in [0, 1, 4, 6, 10] {
            let inp = LiveInputs {
                now_unix_ms: 100_000,
                interval_s: 10.0,
                history,
                ..LiveInputs::new(&hosts, &topo, &none, &[], &groups)
            };
            let e = hosts.host("hv1").unwrap();
            let mut all = vm_histories(&inp, e);
            for n in names.iter().chain(&["v4", "nowhere"]) {
                let (samples, latest) = all.remove(n).unwrap_or_default();
                let (dirty, vf) = e.vm_window(n).unwrap_or((0.0, false));
                assert_eq!(
                    (samples, dirty, vf, latest),
                    vm_history(&inp, e, n),
                    "{n}, history {history}"
                );
            }
            assert!(all.is_empty(), "{:?}", all.keys());
            assert!(e.vm_window("v4").is_none(), "v4 left the kept reports");
        }
    }

    fn pair(src: &str, dst: &str, bytes_per_s: f64) -> PairRate {
        PairRate {
            src: src.parse::<MacAddr>().unwrap(),
            dst: dst.parse::<MacAddr>().unwrap(),
            dpid: 0x41,
            bytes_per_s,
            total_bytes: 0,
            window_s: 6.0,
        }
    }

    /// hv1 (0x41) under ToR 0x31, hv3 (0x43) under ToR 0x32, both under
    /// agg 0x21. Learnt endpoints: a client at ToR 0x32 (with an address),
    /// one at the agg (without), an unknown MAC at hv1's bridge, and a
    /// client without traffic. The first two become externals at their
    /// switches; the bridge's MAC does not; the silent client is left out.
    #[test]
    fn learnt_endpoints_off_the_bridges_are_externals() {
        use crate::monitor::topology::tests::pr;
        use std::net::Ipv4Addr;
        use std::time::Duration;
        let t0 = Instant::now();
        let mut topo = build(
            t0,
            &[(0x21, 3), (0x31, 3), (0x32, 3), (0x41, 2), (0x43, 2)],
            &[
                ((0x41, 1), (0x31, 1)),
                ((0x43, 1), (0x32, 1)),
                ((0x31, 3), (0x21, 1)),
                ((0x32, 3), (0x21, 2)),
            ],
        );
        let now = t0 + Duration::from_secs(5);
        let confirm = Duration::from_secs(1);
        let client: MacAddr = "02:00:00:00:00:c1".parse().unwrap();
        let at_agg: MacAddr = "02:00:00:00:00:c2".parse().unwrap();
        let on_bridge: MacAddr = "02:00:00:00:00:c3".parse().unwrap();
        let silent: MacAddr = "02:00:00:00:00:c4".parse().unwrap();
        let vm_a: MacAddr = "02:00:00:00:00:0a".parse().unwrap();
        let ip = Some(Ipv4Addr::new(192, 0, 2, 7));
        for (mac, ip, at) in [
            (client, ip, pr(0x32, 2)),
            (at_agg, None, pr(0x21, 3)),
            (on_bridge, None, pr(0x41, 2)),
            (silent, None, pr(0x31, 2)),
            (vm_a, None, pr(0x41, 2)),
        ] {
            assert!(matches!(
                topo.learn(mac, ip, at, now, confirm),
                crate::monitor::topology::Learned::New
            ));
        }
        let mut hosts = HostRegistry::default();
        hosts
            .register(
                "hv1",
                reg("hv1", 0x41, vec![vm("a", "02:00:00:00:00:0a")]),
                0,
            )
            .unwrap();
        hosts.register("hv3", reg("hv3", 0x43, vec![]), 0).unwrap();
        for h in ["hv1", "hv3"] {
            hosts.report(h, report(h, 1, vec![]), 1).unwrap();
        }
        let rates = vec![
            pair("02:00:00:00:00:0a", "02:00:00:00:00:c1", 500.0),
            pair("02:00:00:00:00:c1", "02:00:00:00:00:0a", 2000.0),
            pair("02:00:00:00:00:c2", "02:00:00:00:00:0a", 300.0),
            pair("02:00:00:00:00:c3", "02:00:00:00:00:0a", 700.0),
            pair("02:00:00:00:00:c1", "02:00:00:00:00:c2", 900.0),
        ];
        let groups = Groups::default();
        fn inputs<'a>(
            hosts: &'a HostRegistry,
            topo: &'a Topology,
            hypervisors: &'a BTreeMap<u64, String>,
            rates: &'a [PairRate],
            groups: &'a Groups,
        ) -> LiveInputs<'a> {
            LiveInputs {
                now_unix_ms: 10_000,
                ..LiveInputs::new(hosts, topo, hypervisors, rates, groups)
            }
        }
        let none = BTreeMap::new();
        let snap = build_snapshot(&inputs(&hosts, &topo, &none, &rates, &groups));
        let names: Vec<&str> = snap.externals.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["ext:02:00:00:00:00:c2", "ext:192.0.2.7"]);
        let c = &snap.externals["ext:192.0.2.7"];
        assert_eq!(c.switch, dpid_str(0x32));
        assert_eq!(c.ipv4, ip);
        assert_eq!(c.location.rack.as_deref(), Some(dpid_str(0x32).as_str()));
        assert_eq!(
            snap.externals["ext:02:00:00:00:00:c2"].switch,
            dpid_str(0x21)
        );
        assert_eq!(snap.rate("a", "ext:192.0.2.7"), 500.0);
        assert_eq!(snap.rate("ext:192.0.2.7", "a"), 2000.0);
        assert_eq!(snap.rate("ext:02:00:00:00:00:c2", "a"), 300.0);
        // Neither the bridge's unknown MAC nor a pair of two externals.
        assert_eq!(snap.traffic.len(), 3, "{:?}", snap.traffic);
        // Both are in hv1's pod: level 2, as in the simulator.
        let h1 = &snap.hosts["hv1"].location;
        for e in snap.externals.values() {
            assert_eq!(e.location.level_from(h1), 2, "{e:?}");
        }
        // A configured bridge's endpoints are not external either.
        let mut configured = BTreeMap::new();
        configured.insert(0x32, "hv9".to_string());
        let snap = build_snapshot(&inputs(&hosts, &topo, &configured, &rates, &groups));
        assert!(!snap.externals.contains_key("ext:192.0.2.7"));
        drop(snap);
        // An external of a lower MAC with the same address owns the name,
        // though it has no traffic: the client is named by its MAC.
        let dup: MacAddr = "02:00:00:00:00:c0".parse().unwrap();
        topo.learn(dup, ip, pr(0x31, 2), now, confirm);
        let snap = build_snapshot(&inputs(&hosts, &topo, &none, &rates, &groups));
        let names: Vec<&str> = snap.externals.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec!["ext:02:00:00:00:00:c1", "ext:02:00:00:00:00:c2"]
        );
        assert_eq!(snap.rate("ext:02:00:00:00:00:c1", "a"), 2000.0);
    }
}
