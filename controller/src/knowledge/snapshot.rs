//! The knowledge snapshot: everything Analyze and Plan may look at, as plain
//! data.
//!
//! A [`Snapshot`] is built by the simulator from a scenario
//! ([`crate::sim`]) and, in the live controller, from the knowledge store once
//! per monitoring interval. The policies never see anything else: no clock,
//! no I/O, no switch connection.
//!
//! Identifiers are strings: a host id (as registered by hostd) and a VM name.
//! Maps are [`BTreeMap`]s so that iteration order is deterministic.
//!
//! ## What the live loop must fill in
//!
//! - [`Snapshot::now_s`], [`Snapshot::interval_s`], [`Snapshot::round`]: the
//!   time of this evaluation (seconds since any fixed origin), the monitoring
//!   interval Δ and a counter that increases by one per evaluation;
//! - [`Snapshot::topology`]: switches with their level (ToR / aggregation /
//!   core) and uplinks, links with capacity and current use, from LLDP
//!   discovery or configuration;
//! - [`Snapshot::hosts`]: one [`HostState`] per registered hostd: capacities
//!   from the registration, [`HostLocation`] from the topology (see
//!   [`Topology::locate`]), the domain from configuration, and the last `n`
//!   reports as [`HostSample`]s (oldest first, the last one is "now"); NIC
//!   traffic counts the physical uplink only (IDC traffic never reaches it);
//! - [`Snapshot::vms`]: one [`VmState`] per VM: placement, memory, maximum
//!   dirty rate observed, VF attachment, the last reports as [`VmSample`]s and
//!   the time its last migration ended;
//! - [`Snapshot::traffic`]: the traffic matrix λ(u,v) in bytes/s (window
//!   average, OpenFlow flow statistics plus FLOW_REMOVED counters); the IDC /
//!   NIC class of a pair is not stored: it follows from the placement
//!   ([`Snapshot::traffic_class`]);
//! - [`Snapshot::externals`]: the endpoints outside the VMs (clients, a
//!   gateway) that appear in the traffic matrix, each at a fixed switch:
//!   never migrated, never a destination, their traffic with a VM crosses
//!   the VM's host NIC and counts at the level where the host's path meets
//!   their switch ([`ExternalLocation`]);
//! - [`Snapshot::migrations`]: running migrations and those that ended
//!   within the last `n` intervals (`n` = the detector's window): a host's
//!   window restarts when a migration of it ends;
//! - [`Snapshot::hotspot_history`]: the hotspots flagged in recent
//!   evaluations (bounded; the caller trims it);
//! - [`Snapshot::rules`]: the operator's placement rules in force
//!   ([`crate::knowledge::rules`]; live, from
//!   [`crate::knowledge::state::Knowledge::set_rules`]), enforced for every
//!   policy by the plan's shared constraints.
#![warn(missing_docs)]

use crate::knowledge::rules::RuleSet;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Traffic matrix: `traffic[src][dst]` = bytes/s sent from `src` to `dst`,
/// each a VM name or an external endpoint's name ([`Snapshot::externals`];
/// never both external).
pub type TrafficMatrix = BTreeMap<String, BTreeMap<String, f64>>;

/// The knowledge the policies consume, at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Time of this evaluation, seconds (simulated or since controller start).
    pub now_s: f64,
    /// Monitoring interval Δ, seconds (> 0).
    pub interval_s: f64,
    /// Evaluation counter (round number), increases by one per evaluation.
    pub round: u64,
    /// Switches and links.
    pub topology: Topology,
    /// Hosts (hypervisors) by id.
    pub hosts: BTreeMap<String, HostState>,
    /// VMs by name.
    pub vms: BTreeMap<String, VmState>,
    /// λ(u,v): bytes/s from `u` to `v` (VMs or externals).
    pub traffic: TrafficMatrix,
    /// Endpoints outside the VMs (clients, gateways) by name: fixed at a
    /// switch, never migrated nor a destination.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub externals: BTreeMap<String, ExternalEndpoint>,
    /// Running migrations and migrations that ended within the detector's
    /// window (their end restarts their hosts' windows).
    pub migrations: Vec<MigrationRecord>,
    /// Hotspots flagged in recent evaluations, oldest first.
    pub hotspot_history: Vec<HotspotEvent>,
    /// The operator's placement rules in force (validated before they get
    /// here): every policy's migration destinations obey them.
    #[serde(default, skip_serializing_if = "RuleSet::is_empty")]
    pub rules: RuleSet,
}

/// Where a host sits in the tree: the ids of its rack, pod and cluster.
///
/// Two VMs on the same host are at level 0, same rack level 1, same pod
/// level 2, same cluster (reachable through one core layer) level 3, and
/// level 4 otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostLocation {
    /// Rack (ToR switch id).
    pub rack: String,
    /// Pod: ToRs that share an aggregation switch.
    pub pod: String,
    /// Cluster: pods that share a core switch.
    pub cluster: String,
    /// The host's ToR is not known (live: its bridge has no LLDP neighbour
    /// yet): `rack`, `pod` and `cluster` are placeholders naming the host
    /// alone. Rack- and pod-scoped placement rules treat such a host
    /// conservatively (docs/algorithms.md, "Placement rules").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
}

/// An endpoint outside the VMs (a client, a gateway) attached to a switch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExternalEndpoint {
    /// The switch it is attached to (a switch id of the topology).
    pub switch: String,
    /// Its IPv4 address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<std::net::Ipv4Addr>,
    /// Where its switch sits in the tree ([`Topology::locate_switch`]).
    pub location: ExternalLocation,
}

/// Where an external endpoint's switch sits in the tree, in the terms of
/// [`HostLocation`]: the level between a host and the endpoint is 1 when
/// `rack` is the host's rack, else 2 when `pod` is the host's pod, else 3
/// when `cluster` is the host's cluster, else 4 (never 0: an external is
/// never on a host).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExternalLocation {
    /// The ToR, when the switch is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    /// The pod, when the switch is a ToR or an aggregation switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The cluster (for a switch the topology does not know: the switch
    /// id, which no host shares).
    pub cluster: String,
}

impl ExternalLocation {
    /// Level between a host at `h` and this location: 1 same rack, 2 same
    /// pod, 3 same cluster, 4 otherwise.
    pub fn level_from(&self, h: &HostLocation) -> usize {
        if self.rack.as_deref() == Some(h.rack.as_str()) {
            1
        } else if self.pod.as_deref() == Some(h.pod.as_str()) {
            2
        } else if self.cluster == h.cluster {
            3
        } else {
            4
        }
    }
}

/// Level of a switch in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchLevel {
    /// Top of rack: hosts attach here.
    Tor,
    /// Aggregation: ToRs attach here.
    Aggregation,
    /// Core: aggregation switches attach here.
    Core,
}

/// One switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchInfo {
    /// Its level.
    pub level: SwitchLevel,
    /// Switches of the next level up it connects to (empty for core).
    #[serde(default)]
    pub uplinks: Vec<String>,
}

/// One link with its capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// One end (host id or switch id).
    pub a: String,
    /// The other end (switch id).
    pub b: String,
    /// Capacity, bit/s.
    pub capacity_bps: f64,
    /// Current use (max of both directions), bit/s.
    #[serde(default)]
    pub used_bps: f64,
}

/// Switches and links of the data center.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Switches by id.
    pub switches: BTreeMap<String, SwitchInfo>,
    /// Links (host–ToR, ToR–aggregation, aggregation–core).
    pub links: Vec<LinkInfo>,
}

impl Topology {
    /// Locates a host attached to ToR `tor`: its rack, pod and cluster.
    ///
    /// The pod of a ToR is the smallest aggregation switch id among the
    /// connected component of ToRs and aggregation switches it belongs to;
    /// the cluster likewise one level up. A ToR without uplinks is its own
    /// pod, a pod without core switches its own cluster. Returns `None` when
    /// `tor` is not a ToR switch.
    pub fn locate(&self, tor: &str) -> Option<HostLocation> {
        self.locate_all().remove(tor)
    }

    /// Locates switch `id` (any level) for an endpoint attached to it: a
    /// ToR gives its rack, pod and cluster, an aggregation switch its pod
    /// and cluster, a core switch its cluster. A switch the topology does
    /// not know is its own cluster (level 4 from every host).
    pub fn locate_switch(&self, id: &str) -> ExternalLocation {
        let Some(info) = self.switches.get(id) else {
            return ExternalLocation {
                rack: None,
                pod: None,
                cluster: id.to_string(),
            };
        };
        match info.level {
            SwitchLevel::Tor => {
                let l = self.locate(id).unwrap_or_default();
                ExternalLocation {
                    rack: Some(l.rack),
                    pod: Some(l.pod),
                    cluster: l.cluster,
                }
            }
            SwitchLevel::Aggregation => {
                let pod = self
                    .components(SwitchLevel::Aggregation)
                    .remove(id)
                    .unwrap_or_else(|| id.to_string());
                let cluster = self
                    .components(SwitchLevel::Core)
                    .remove(id)
                    .unwrap_or_else(|| pod.clone());
                ExternalLocation {
                    rack: None,
                    pod: Some(pod),
                    cluster,
                }
            }
            SwitchLevel::Core => ExternalLocation {
                rack: None,
                pod: None,
                cluster: self
                    .components(SwitchLevel::Core)
                    .remove(id)
                    .unwrap_or_else(|| id.to_string()),
            },
        }
    }

    /// All locations of all ToRs at once (linear in the topology size).
    pub fn locate_all(&self) -> BTreeMap<String, HostLocation> {
        let pods = self.components(SwitchLevel::Aggregation);
        let clusters = self.components(SwitchLevel::Core);
        self.switches
            .iter()
            .filter(|(_, s)| s.level == SwitchLevel::Tor)
            .map(|(id, _)| {
                let pod = pods.get(id).cloned().unwrap_or_else(|| id.clone());
                let cluster = clusters.get(id).cloned().unwrap_or_else(|| pod.clone());
                (
                    id.clone(),
                    HostLocation {
                        rack: id.clone(),
                        pod,
                        cluster,
                        unknown: false,
                    },
                )
            })
            .collect()
    }

    /// Connected components of the graph of switches with level ≤ `up_to`;
    /// each switch is labelled with the smallest id of level `up_to` in its
    /// component (or its own id when there is none).
    fn components(&self, up_to: SwitchLevel) -> BTreeMap<String, String> {
        let ids: Vec<&String> = self
            .switches
            .iter()
            .filter(|(_, s)| s.level <= up_to)
            .map(|(id, _)| id)
            .collect();
        let index: BTreeMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut parent: Vec<usize> = (0..ids.len()).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while let Some(&p) = parent.get(x) {
                if p == x {
                    break;
                }
                let gp = parent.get(p).copied().unwrap_or(p);
                if let Some(slot) = parent.get_mut(x) {
                    *slot = gp;
                }
                x = p;
            }
            x
        }
        for (i, id) in ids.iter().enumerate() {
            let Some(info) = self.switches.get(*id) else {
                continue;
            };
            for up in &info.uplinks {
                if let Some(&j) = index.get(up.as_str()) {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    if a != b {
                        if let Some(slot) = parent.get_mut(a.max(b)) {
                            *slot = a.min(b);
                        }
                    }
                }
            }
        }
        // Label of a component: smallest id of level `up_to` in it.
        let mut label: BTreeMap<usize, String> = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            let is_top = self.switches.get(*id).is_some_and(|s| s.level == up_to);
            if is_top {
                let root = find(&mut parent, i);
                label.entry(root).or_insert_with(|| (*id).clone());
            }
        }
        let mut out = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            let root = find(&mut parent, i);
            if let Some(l) = label.get(&root) {
                out.insert((*id).clone(), l.clone());
            }
        }
        out
    }
}

/// One host (hypervisor).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    /// CPU cores.
    pub cores: f64,
    /// Memory, MB.
    pub memory_mb: f64,
    /// Physical NIC capacity, bit/s (per direction).
    pub nic_bps: f64,
    /// SR-IOV virtual functions available.
    pub vf_count: u32,
    /// VM slots, when limited.
    pub max_vms: Option<u32>,
    /// Configured domain (site, pod or rack) for VIOLIN; `None` = its pod.
    pub domain: Option<String>,
    /// Rack, pod and cluster.
    pub location: HostLocation,
    /// Last observations, oldest first; the last one is the current state.
    pub history: Vec<HostSample>,
}

impl HostState {
    /// The latest observation (all zero when there is none).
    pub fn latest(&self) -> HostSample {
        self.history.last().cloned().unwrap_or_default()
    }

    /// NIC capacity in bytes/s.
    pub fn nic_bytes_per_s(&self) -> f64 {
        self.nic_bps / 8.0
    }

    /// The domain VIOLIN uses: the configured one, else the pod.
    pub fn domain_or_pod(&self) -> &str {
        self.domain.as_deref().unwrap_or(&self.location.pod)
    }
}

/// One host observation (one hostd report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    /// When it was taken, seconds.
    pub at_s: f64,
    /// CPU utilisation in [0, 1] of all cores.
    pub cpu_util: f64,
    /// Memory in use (allocated to VMs plus the hypervisor's own), MB.
    pub mem_used_mb: f64,
    /// Swap-out, pages/s.
    pub swap_out_pps: f64,
    /// Swap-in (pages read back from swap), pages/s.
    #[serde(default)]
    pub swap_in_pps: f64,
    /// Physical NIC transmit, bytes/s (NIC traffic only, no IDC).
    pub nic_tx_bytes_per_s: f64,
    /// Physical NIC receive, bytes/s (NIC traffic only, no IDC).
    pub nic_rx_bytes_per_s: f64,
}

impl HostSample {
    /// Memory utilisation in [0, 1] of `host`'s memory.
    pub fn mem_util(&self, host: &HostState) -> f64 {
        ratio(self.mem_used_mb, host.memory_mb)
    }

    /// Network utilisation: the busier NIC direction over the capacity.
    pub fn net_util(&self, host: &HostState) -> f64 {
        ratio(
            self.nic_tx_bytes_per_s.max(self.nic_rx_bytes_per_s),
            host.nic_bytes_per_s(),
        )
    }
}

/// `a / b`, 0 when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 && a.is_finite() {
        a / b
    } else {
        0.0
    }
}

/// One VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmState {
    /// Host it runs on now.
    pub host: String,
    /// Virtual environment (tenant group), if any.
    pub environment: Option<String>,
    /// The head node (gateway) of its environment: VIOLIN keeps it in its
    /// domain when the environment moves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head: bool,
    /// IPv4 address, when known (S-CORE's VM id: its round-robin token
    /// order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<std::net::Ipv4Addr>,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Allocated memory, MB.
    pub memory_mb: f64,
    /// Maximum memory it may grow to, MB.
    pub max_memory_mb: f64,
    /// Page dirty rate, MB/s: the maximum observed, not the mean.
    pub dirty_rate_mbps: f64,
    /// Per-VM network bound (vNIC cap), bytes/s, when known.
    pub vnic_bytes_per_s: Option<f64>,
    /// Whether an SR-IOV VF is attached.
    pub has_vf: bool,
    /// Time its last migration ended, seconds.
    pub last_migration_s: Option<f64>,
    /// Last observations, oldest first; the last one is the current state.
    /// Live: from its host's last `n` reports (the host's window), one per
    /// report that lists the VM.
    pub history: Vec<VmSample>,
}

impl VmState {
    /// The latest observation (all zero when there is none).
    pub fn latest(&self) -> VmSample {
        self.history.last().cloned().unwrap_or_default()
    }
}

/// One VM observation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmSample {
    /// When it was taken, seconds.
    pub at_s: f64,
    /// CPU used, in cores (1.0 = one core fully busy).
    pub cpu_cores: f64,
    /// Memory used by the guest, MB.
    pub mem_used_mb: f64,
    /// Swap-out caused by this VM, pages/s.
    pub swap_out_pps: f64,
    /// Swap-in caused by this VM, pages/s.
    #[serde(default)]
    pub swap_in_pps: f64,
    /// Packets (tx + rx) in the interval.
    pub packets: f64,
    /// Blocked time over the interval, seconds.
    pub blocked_s: f64,
    /// CPU time received ("gotten") over the interval, seconds.
    pub gotten_s: f64,
    /// Bytes/s sent (all traffic, IDC included).
    pub tx_bytes_per_s: f64,
    /// Bytes/s received (all traffic, IDC included).
    pub rx_bytes_per_s: f64,
}

/// A migration that runs or ended recently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationRecord {
    /// The VM.
    pub vm: String,
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
    /// Start time, seconds.
    pub started_s: f64,
    /// End time, seconds; `None` while it runs.
    pub ended_s: Option<f64>,
}

/// A hotspot flagged at some evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotspotEvent {
    /// Round of the evaluation.
    pub round: u64,
    /// Host.
    pub host: String,
    /// Resources found hot (`cpu`, `mem`, `net`).
    pub resources: Vec<String>,
}

/// Class of a traffic pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficClass {
    /// Both VMs on the same host: never crosses the physical NIC.
    Idc,
    /// Crosses the physical NIC.
    Nic,
}

impl Snapshot {
    /// λ(u,v) in bytes/s (0 when absent).
    pub fn rate(&self, u: &str, v: &str) -> f64 {
        self.traffic
            .get(u)
            .and_then(|m| m.get(v))
            .copied()
            .unwrap_or(0.0)
    }

    /// IDC when both VMs are on the same host, NIC otherwise (always NIC
    /// between a VM and an external endpoint); `None` when an end is
    /// unknown or both are external.
    pub fn traffic_class(&self, u: &str, v: &str) -> Option<TrafficClass> {
        let vm_u = self.vms.get(u);
        let vm_v = self.vms.get(v);
        match (vm_u, vm_v) {
            (Some(_), None) if self.externals.contains_key(v) => return Some(TrafficClass::Nic),
            (None, Some(_)) if self.externals.contains_key(u) => return Some(TrafficClass::Nic),
            _ => {}
        }
        let hu = &vm_u?.host;
        let hv = &vm_v?.host;
        Some(if hu == hv {
            TrafficClass::Idc
        } else {
            TrafficClass::Nic
        })
    }

    /// Hosts that are the source or target of a running migration (not
    /// evaluated by Analyze while it runs).
    pub fn hosts_in_migration(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for m in &self.migrations {
            if m.ended_s.is_none_or(|e| e > self.now_s) {
                out.insert(m.from.clone());
                out.insert(m.to.clone());
            }
        }
        out
    }

    /// When `host`'s observation window restarts: the end of the latest
    /// ended migration it was the source or target of (Analyze counts only
    /// samples taken after it). Needs the ended migrations of the last
    /// window (see [`Snapshot::migrations`]).
    pub fn window_restart_s(&self, host: &str) -> Option<f64> {
        self.migrations
            .iter()
            .filter(|m| m.from == host || m.to == host)
            .filter_map(|m| m.ended_s)
            .filter(|&e| e <= self.now_s)
            .reduce(f64::max)
    }

    /// VMs of a running migration (they cannot be moved again).
    pub fn vms_migrating(&self) -> BTreeSet<String> {
        self.migrations
            .iter()
            .filter(|m| m.ended_s.is_none_or(|e| e > self.now_s))
            .map(|m| m.vm.clone())
            .collect()
    }

    /// VMs per host, each list sorted by name.
    pub fn vms_by_host(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> =
            self.hosts.keys().map(|h| (h.clone(), Vec::new())).collect();
        for (name, vm) in &self.vms {
            out.entry(vm.host.clone()).or_default().push(name.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sw(level: SwitchLevel, up: &[&str]) -> SwitchInfo {
        SwitchInfo {
            level,
            uplinks: up.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn locate_tree() {
        let mut t = Topology::default();
        t.switches.insert("c0".into(), sw(SwitchLevel::Core, &[]));
        t.switches
            .insert("a0".into(), sw(SwitchLevel::Aggregation, &["c0"]));
        t.switches
            .insert("a1".into(), sw(SwitchLevel::Aggregation, &["c0"]));
        t.switches
            .insert("t0".into(), sw(SwitchLevel::Tor, &["a0"]));
        t.switches
            .insert("t1".into(), sw(SwitchLevel::Tor, &["a0"]));
        t.switches
            .insert("t2".into(), sw(SwitchLevel::Tor, &["a1"]));
        t.switches.insert("t3".into(), sw(SwitchLevel::Tor, &[]));
        let l0 = t.locate("t0").unwrap();
        let l1 = t.locate("t1").unwrap();
        let l2 = t.locate("t2").unwrap();
        let l3 = t.locate("t3").unwrap();
        assert_eq!(l0.pod, "a0");
        assert_eq!(l0.pod, l1.pod);
        assert_eq!(l2.pod, "a1");
        assert_eq!(l0.cluster, "c0");
        assert_eq!(l2.cluster, "c0");
        assert_eq!(l3.pod, "t3");
        assert_eq!(l3.cluster, "t3");
        assert_eq!(t.locate("a0"), None);
        let all = t.locate_all();
        assert_eq!(all.get("t2"), Some(&l2));
        assert_eq!(all.get("t3"), Some(&l3));
    }

    /// An external at a ToR, an aggregation or a core switch meets a host
    /// at the level where their subtrees meet.
    #[test]
    fn external_levels() {
        let mut t = Topology::default();
        t.switches.insert("c0".into(), sw(SwitchLevel::Core, &[]));
        t.switches.insert("c9".into(), sw(SwitchLevel::Core, &[]));
        t.switches
            .insert("a0".into(), sw(SwitchLevel::Aggregation, &["c0"]));
        t.switches
            .insert("a1".into(), sw(SwitchLevel::Aggregation, &["c0"]));
        t.switches
            .insert("t0".into(), sw(SwitchLevel::Tor, &["a0"]));
        t.switches
            .insert("t1".into(), sw(SwitchLevel::Tor, &["a0"]));
        t.switches
            .insert("t2".into(), sw(SwitchLevel::Tor, &["a1"]));
        let h = t.locate("t0").unwrap();
        let level = |s: &str| t.locate_switch(s).level_from(&h);
        assert_eq!(level("t0"), 1, "own ToR");
        assert_eq!(level("t1"), 2, "ToR of the same pod");
        assert_eq!(level("a0"), 2, "aggregation of the pod");
        assert_eq!(level("t2"), 3, "ToR of another pod");
        assert_eq!(level("a1"), 3, "aggregation of another pod");
        assert_eq!(level("c0"), 3, "core");
        assert_eq!(level("c9"), 4, "a core of another cluster");
        assert_eq!(level("nowhere"), 4, "unknown switch");
    }
}
