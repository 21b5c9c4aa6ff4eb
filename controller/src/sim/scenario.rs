//! The scenario format (documented in `docs/scenario.md`), its loader and
//! its validator.
//!
//! Loading never panics: malformed JSON and wrong types are reported with
//! the JSON path of the offending field (`vms[3].memory_mb: invalid type
//! …`), semantic errors likewise (`vms[3].host: unknown host "h9"`).

use super::SimError;
use crate::knowledge::rules::RuleSet;
use crate::knowledge::snapshot::{
    ExternalEndpoint, HostState, LinkInfo, Snapshot, SwitchInfo, SwitchLevel, Topology,
    TrafficMatrix, VmState,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A value that is either constant or a time series (one value per round;
/// the last value holds after the series ends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Series {
    /// The same value every round.
    Const(f64),
    /// One value per round.
    Values(Vec<f64>),
}

impl Default for Series {
    fn default() -> Self {
        Series::Const(0.0)
    }
}

impl Series {
    /// Value at round `r`.
    pub fn at(&self, r: usize) -> f64 {
        match self {
            Series::Const(x) => *x,
            Series::Values(v) => v.get(r).or(v.last()).copied().unwrap_or(0.0),
        }
    }

    /// Whether it varies over time.
    pub fn is_series(&self) -> bool {
        matches!(self, Series::Values(v) if v.len() > 1)
    }

    fn check(&self, field: &str, min_ok: f64) -> Result<(), SimError> {
        let bad = |f: String, v: f64| {
            Err(SimError::scenario(
                f,
                format!("must be a finite number >= {min_ok}, got {v}"),
            ))
        };
        match self {
            Series::Const(x) => {
                if !(x.is_finite() && *x >= min_ok) {
                    return bad(field.to_string(), *x);
                }
            }
            Series::Values(v) => {
                if v.is_empty() {
                    return Err(SimError::scenario(
                        field,
                        "a time series needs at least one value",
                    ));
                }
                if v.len() > MAX_SERIES {
                    return Err(SimError::scenario(
                        field,
                        format!("at most {MAX_SERIES} values"),
                    ));
                }
                for (i, x) in v.iter().enumerate() {
                    if !(x.is_finite() && *x >= min_ok) {
                        return bad(format!("{field}[{i}]"), *x);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Longest accepted time series.
pub const MAX_SERIES: usize = 1_000_000;

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Free-form name.
    #[serde(default)]
    pub name: String,
    /// Monitoring interval Δ, seconds (default 10).
    #[serde(default = "default_interval")]
    pub interval_s: f64,
    /// Default number of rounds (`--rounds` overrides; default 10).
    #[serde(default)]
    pub rounds: Option<u32>,
    /// Switch tree.
    pub topology: TopologySpec,
    /// Hosts.
    pub hosts: Vec<HostSpec>,
    /// VMs with their initial host and time series.
    pub vms: Vec<VmSpec>,
    /// Endpoints outside the VMs (clients, gateways), each at a switch:
    /// they send and receive traffic but are never migrated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub externals: Vec<ExternalSpec>,
    /// Traffic matrix entries.
    #[serde(default)]
    pub traffic: Vec<TrafficSpec>,
    /// Placement rules every policy obeys (the live controller's rule
    /// format; `docs/algorithms.md`, "Placement rules").
    #[serde(default, skip_serializing_if = "RuleSet::is_empty")]
    pub rules: RuleSet,
}

/// An endpoint outside the VMs (a client, a gateway) attached to a switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSpec {
    /// Unique name (not a VM's nor a host's), used in `traffic`.
    pub name: String,
    /// The switch it attaches to: any switch id (ToR, aggregation, core).
    pub switch: String,
    /// IPv4 address, informative.
    #[serde(default)]
    pub ip: Option<std::net::Ipv4Addr>,
}

fn default_interval() -> f64 {
    10.0
}

/// Switches of the tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// ToR, aggregation and core switches.
    pub switches: Vec<SwitchSpec>,
}

/// One switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSpec {
    /// Unique id.
    pub id: String,
    /// `tor`, `aggregation` or `core`.
    pub level: SwitchLevel,
    /// Switches of the next level up (ToR → aggregation → core).
    #[serde(default)]
    pub uplinks: Vec<String>,
    /// Capacity of each uplink, bit/s (default 40e9 from a ToR, 100e9 from
    /// an aggregation switch).
    #[serde(default)]
    pub uplink_bps: Option<f64>,
}

/// One host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Unique id.
    pub id: String,
    /// ToR switch it attaches to.
    pub tor: String,
    /// CPU cores (> 0).
    pub cores: f64,
    /// Memory, MB (> 0).
    pub memory_mb: f64,
    /// NIC capacity, bit/s (> 0); also the host–ToR link capacity.
    pub nic_bps: f64,
    /// SR-IOV VFs.
    #[serde(default)]
    pub vf_count: u32,
    /// VM slots (≥ 1), unlimited when absent.
    #[serde(default)]
    pub max_vms: Option<u32>,
    /// VIOLIN domain (default: its pod).
    #[serde(default)]
    pub domain: Option<String>,
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Unique name.
    pub name: String,
    /// Initial host.
    pub host: String,
    /// IPv4 address (S-CORE's VM id: round-robin token order; VMs without
    /// one follow, by name).
    #[serde(default)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Allocated memory, MB (> 0).
    pub memory_mb: f64,
    /// Maximum memory, MB (≥ memory_mb; default memory_mb).
    #[serde(default)]
    pub max_memory_mb: Option<f64>,
    /// Page dirty rate, MB/s (≥ 0).
    #[serde(default)]
    pub dirty_rate_mbps: f64,
    /// vCPUs (≥ 1, default 1).
    #[serde(default = "one")]
    pub vcpus: u32,
    /// Virtual environment (tenant group).
    #[serde(default)]
    pub environment: Option<String>,
    /// The environment's head node (gateway): stays in its domain when
    /// VIOLIN moves the environment. Needs `environment`.
    #[serde(default)]
    pub head: bool,
    /// vNIC cap, bit/s.
    #[serde(default)]
    pub vnic_bps: Option<f64>,
    /// VF attached initially.
    #[serde(default)]
    pub vf: bool,
    /// CPU used, cores.
    #[serde(default)]
    pub cpu: Series,
    /// Memory the guest wants (working set), MB; default half of `memory_mb`.
    /// Demand above the allocation swaps: 256 pages per MB per interval.
    #[serde(default)]
    pub mem_used_mb: Option<Series>,
    /// Extra swap-out, pages/s.
    #[serde(default)]
    pub swap_out_pps: Series,
    /// Swap-in (pages read back from swap), pages/s.
    #[serde(default)]
    pub swap_in_pps: Series,
    /// Packets per interval; default (tx + rx bytes)·Δ / 1500.
    #[serde(default)]
    pub packets: Option<Series>,
    /// Blocked time per interval, seconds.
    #[serde(default)]
    pub blocked_s: Series,
    /// CPU time received per interval, seconds; default cpu · Δ.
    #[serde(default)]
    pub gotten_s: Option<Series>,
}

fn one() -> u32 {
    1
}

/// One traffic matrix entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// Sending VM or external endpoint.
    pub src: String,
    /// Receiving VM or external endpoint (not both ends external).
    pub dst: String,
    /// bytes/s: a number (static matrix) or one value per round.
    pub bytes_per_s: Series,
}

fn err(field: impl Into<String>, why: impl Into<String>) -> SimError {
    SimError::scenario(field, why)
}

impl Scenario {
    /// Parses JSON; errors name the JSON path.
    pub fn from_json(text: &str) -> Result<Scenario, SimError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let scn: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            SimError::Json {
                path: if path == "." {
                    "(document)".into()
                } else {
                    path
                },
                msg: e.into_inner().to_string(),
            }
        })?;
        Ok(scn)
    }

    /// Parses and validates.
    pub fn load(text: &str) -> Result<Scenario, SimError> {
        let s = Scenario::from_json(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Checks every semantic rule; the error names the field.
    pub fn validate(&self) -> Result<(), SimError> {
        if !(self.interval_s.is_finite() && self.interval_s > 0.0) {
            return Err(err(
                "interval_s",
                format!("must be > 0, got {}", self.interval_s),
            ));
        }
        let switches = self.validate_switches()?;
        let hosts = self.validate_hosts(&switches)?;
        let (vms, placed) = self.validate_vms(&hosts)?;
        self.validate_placement(&placed)?;
        let externals = self.validate_externals(&switches, &hosts, &vms)?;
        self.validate_traffic(&vms, &externals)?;
        self.validate_rules(&hosts, &vms)
    }

    /// Rules valid and free of contradictions ([`RuleSet::validate`]), and
    /// naming only VMs and hosts of the scenario (a scenario is static: an
    /// unknown name is a mistake). The initial placement may break a rule.
    fn validate_rules(
        &self,
        hosts: &BTreeMap<&str, &HostSpec>,
        vms: &BTreeSet<&str>,
    ) -> Result<(), SimError> {
        self.rules
            .validate()
            .map_err(|e| err("rules", e.to_string()))?;
        for (i, r) in self.rules.rules.iter().enumerate() {
            for (j, v) in r.vms().unwrap_or_default().iter().enumerate() {
                if !vms.contains(v.as_str()) {
                    return Err(err(
                        format!("rules[{i}].vms[{j}]"),
                        format!("unknown VM {v:?}"),
                    ));
                }
            }
            for (j, h) in r.hosts().unwrap_or_default().iter().enumerate() {
                if !hosts.contains_key(h.as_str()) {
                    return Err(err(
                        format!("rules[{i}].hosts[{j}]"),
                        format!("unknown host {h:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// External names unique, distinct from VM names and host ids;
    /// switches known.
    fn validate_externals(
        &self,
        switches: &BTreeMap<&str, SwitchLevel>,
        hosts: &BTreeMap<&str, &HostSpec>,
        vms: &BTreeSet<&str>,
    ) -> Result<BTreeSet<&str>, SimError> {
        let mut externals: BTreeSet<&str> = BTreeSet::new();
        for (i, x) in self.externals.iter().enumerate() {
            let f = format!("externals[{i}]");
            if x.name.is_empty() {
                return Err(err(format!("{f}.name"), "must not be empty"));
            }
            if vms.contains(x.name.as_str()) {
                return Err(err(
                    format!("{f}.name"),
                    format!("{:?} is already a VM name", x.name),
                ));
            }
            if hosts.contains_key(x.name.as_str()) {
                return Err(err(
                    format!("{f}.name"),
                    format!("{:?} is already a host id", x.name),
                ));
            }
            if !externals.insert(&x.name) {
                return Err(err(
                    format!("{f}.name"),
                    format!("duplicate name {:?}", x.name),
                ));
            }
            if !switches.contains_key(x.switch.as_str()) {
                return Err(err(
                    format!("{f}.switch"),
                    format!("unknown switch {:?}", x.switch),
                ));
            }
        }
        Ok(externals)
    }

    /// Switch ids unique, capacities positive, uplinks one level up.
    fn validate_switches(&self) -> Result<BTreeMap<&str, SwitchLevel>, SimError> {
        let mut switches: BTreeMap<&str, SwitchLevel> = BTreeMap::new();
        for (i, s) in self.topology.switches.iter().enumerate() {
            let f = format!("topology.switches[{i}]");
            if s.id.is_empty() {
                return Err(err(format!("{f}.id"), "must not be empty"));
            }
            if switches.insert(&s.id, s.level).is_some() {
                return Err(err(format!("{f}.id"), format!("duplicate id {:?}", s.id)));
            }
            if let Some(c) = s.uplink_bps {
                if !(c.is_finite() && c > 0.0) {
                    return Err(err(
                        format!("{f}.uplink_bps"),
                        format!("must be > 0, got {c}"),
                    ));
                }
            }
        }
        for (i, s) in self.topology.switches.iter().enumerate() {
            let want = match s.level {
                SwitchLevel::Tor => Some(SwitchLevel::Aggregation),
                SwitchLevel::Aggregation => Some(SwitchLevel::Core),
                SwitchLevel::Core => None,
            };
            for (j, u) in s.uplinks.iter().enumerate() {
                let f = format!("topology.switches[{i}].uplinks[{j}]");
                match (switches.get(u.as_str()), want) {
                    (None, _) => return Err(err(f, format!("unknown switch {u:?}"))),
                    (Some(l), Some(w)) if *l == w => {}
                    (Some(l), _) => {
                        return Err(err(
                            f,
                            format!(
                                "{u:?} is a {l:?} switch; a {:?} switch links up to {}",
                                s.level,
                                want.map_or("nothing".to_string(), |w| format!("{w:?}"))
                            ),
                        ))
                    }
                }
            }
        }
        Ok(switches)
    }

    /// Host ids unique and not switch ids, ToRs known, sizes positive.
    fn validate_hosts<'a>(
        &'a self,
        switches: &BTreeMap<&str, SwitchLevel>,
    ) -> Result<BTreeMap<&'a str, &'a HostSpec>, SimError> {
        let mut hosts: BTreeMap<&str, &HostSpec> = BTreeMap::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let f = format!("hosts[{i}]");
            if h.id.is_empty() {
                return Err(err(format!("{f}.id"), "must not be empty"));
            }
            if switches.contains_key(h.id.as_str()) {
                return Err(err(
                    format!("{f}.id"),
                    format!("{:?} is already a switch id", h.id),
                ));
            }
            if hosts.insert(&h.id, h).is_some() {
                return Err(err(format!("{f}.id"), format!("duplicate id {:?}", h.id)));
            }
            match switches.get(h.tor.as_str()) {
                None => {
                    return Err(err(
                        format!("{f}.tor"),
                        format!("unknown switch {:?}", h.tor),
                    ))
                }
                Some(SwitchLevel::Tor) => {}
                Some(l) => {
                    return Err(err(
                        format!("{f}.tor"),
                        format!("{:?} is a {l:?} switch, not a ToR", h.tor),
                    ))
                }
            }
            for (name, v) in [
                ("cores", h.cores),
                ("memory_mb", h.memory_mb),
                ("nic_bps", h.nic_bps),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    return Err(err(format!("{f}.{name}"), format!("must be > 0, got {v}")));
                }
            }
            if h.max_vms == Some(0) {
                return Err(err(format!("{f}.max_vms"), "must be >= 1"));
            }
        }
        if self.hosts.is_empty() {
            return Err(err("hosts", "at least one host is needed"));
        }
        Ok(hosts)
    }

    /// VM names unique, hosts known, sizes and series valid; returns the
    /// names and, per host, the initial (memory, VMs, VFs).
    #[allow(clippy::type_complexity)]
    fn validate_vms(
        &self,
        hosts: &BTreeMap<&str, &HostSpec>,
    ) -> Result<(BTreeSet<&str>, BTreeMap<&str, (f64, u32, u32)>), SimError> {
        let largest = self.hosts.iter().map(|h| h.memory_mb).fold(0.0, f64::max);
        let mut vms: BTreeSet<&str> = BTreeSet::new();
        let mut mem: BTreeMap<&str, (f64, u32, u32)> = BTreeMap::new();
        for (i, v) in self.vms.iter().enumerate() {
            let f = format!("vms[{i}]");
            if v.name.is_empty() {
                return Err(err(format!("{f}.name"), "must not be empty"));
            }
            if !vms.insert(&v.name) {
                return Err(err(
                    format!("{f}.name"),
                    format!("duplicate name {:?}", v.name),
                ));
            }
            if !hosts.contains_key(v.host.as_str()) {
                return Err(err(
                    format!("{f}.host"),
                    format!("unknown host {:?}", v.host),
                ));
            }
            if !(v.memory_mb.is_finite() && v.memory_mb > 0.0) {
                return Err(err(
                    format!("{f}.memory_mb"),
                    format!("must be > 0, got {}", v.memory_mb),
                ));
            }
            if v.memory_mb > largest {
                return Err(err(
                    format!("{f}.memory_mb"),
                    format!(
                        "{} MB is bigger than every host (largest: {largest} MB)",
                        v.memory_mb
                    ),
                ));
            }
            if let Some(m) = v.max_memory_mb {
                if !(m.is_finite() && m >= v.memory_mb) {
                    return Err(err(
                        format!("{f}.max_memory_mb"),
                        format!("must be >= memory_mb ({}), got {m}", v.memory_mb),
                    ));
                }
            }
            if !(v.dirty_rate_mbps.is_finite() && v.dirty_rate_mbps >= 0.0) {
                return Err(err(
                    format!("{f}.dirty_rate_mbps"),
                    format!("must be >= 0, got {}", v.dirty_rate_mbps),
                ));
            }
            if v.head && v.environment.is_none() {
                return Err(err(format!("{f}.head"), "needs an environment"));
            }
            if v.vcpus == 0 {
                return Err(err(format!("{f}.vcpus"), "must be >= 1"));
            }
            if let Some(b) = v.vnic_bps {
                if !(b.is_finite() && b > 0.0) {
                    return Err(err(
                        format!("{f}.vnic_bps"),
                        format!("must be > 0, got {b}"),
                    ));
                }
            }
            v.cpu.check(&format!("{f}.cpu"), 0.0)?;
            v.swap_out_pps.check(&format!("{f}.swap_out_pps"), 0.0)?;
            v.swap_in_pps.check(&format!("{f}.swap_in_pps"), 0.0)?;
            v.blocked_s.check(&format!("{f}.blocked_s"), 0.0)?;
            for (name, s) in [
                ("mem_used_mb", &v.mem_used_mb),
                ("packets", &v.packets),
                ("gotten_s", &v.gotten_s),
            ] {
                if let Some(s) = s {
                    s.check(&format!("{f}.{name}"), 0.0)?;
                }
            }
            let e = mem.entry(v.host.as_str()).or_default();
            e.0 += v.memory_mb;
            e.1 += 1;
            e.2 += u32::from(v.vf);
        }
        Ok((vms, mem))
    }

    /// The initial placement fits every host (memory, VM slots, VFs).
    fn validate_placement(&self, mem: &BTreeMap<&str, (f64, u32, u32)>) -> Result<(), SimError> {
        for (i, h) in self.hosts.iter().enumerate() {
            let (m, n, vf) = mem.get(h.id.as_str()).copied().unwrap_or_default();
            if m > h.memory_mb {
                return Err(err(
                    format!("hosts[{i}].memory_mb"),
                    format!(
                        "the initial placement puts {m} MB of VMs on a {} MB host",
                        h.memory_mb
                    ),
                ));
            }
            if let Some(max) = h.max_vms {
                if n > max {
                    return Err(err(
                        format!("hosts[{i}].max_vms"),
                        format!("the initial placement puts {n} VMs on it"),
                    ));
                }
            }
            if vf > h.vf_count {
                return Err(err(
                    format!("hosts[{i}].vf_count"),
                    format!("the initial placement attaches {vf} VFs"),
                ));
            }
        }
        Ok(())
    }

    /// Traffic between known, distinct VMs or a VM and an external
    /// endpoint, each pair once.
    fn validate_traffic(
        &self,
        vms: &BTreeSet<&str>,
        externals: &BTreeSet<&str>,
    ) -> Result<(), SimError> {
        let mut pairs: BTreeSet<(&str, &str)> = BTreeSet::new();
        for (i, t) in self.traffic.iter().enumerate() {
            let f = format!("traffic[{i}]");
            let known = |n: &str| vms.contains(n) || externals.contains(n);
            if !known(t.src.as_str()) {
                return Err(err(
                    format!("{f}.src"),
                    format!("unknown VM {:?} (nor an external)", t.src),
                ));
            }
            if !known(t.dst.as_str()) {
                return Err(err(
                    format!("{f}.dst"),
                    format!("unknown VM {:?} (nor an external)", t.dst),
                ));
            }
            if externals.contains(t.src.as_str()) && externals.contains(t.dst.as_str()) {
                return Err(err(
                    format!("{f}.dst"),
                    "traffic between two externals is not modelled (one end must be a VM)",
                ));
            }
            if t.src == t.dst {
                return Err(err(format!("{f}.dst"), "a VM does not send to itself"));
            }
            if !pairs.insert((&t.src, &t.dst)) {
                return Err(err(f, format!("duplicate pair ({:?}, {:?})", t.src, t.dst)));
            }
            t.bytes_per_s.check(&format!("{f}.bytes_per_s"), 0.0)?;
        }
        Ok(())
    }

    /// Whether any traffic entry is a time series.
    pub fn traffic_varies(&self) -> bool {
        self.traffic.iter().any(|t| t.bytes_per_s.is_series())
    }

    /// The traffic matrix at round `r`.
    pub fn traffic_at(&self, r: usize) -> TrafficMatrix {
        let mut m: TrafficMatrix = BTreeMap::new();
        for t in &self.traffic {
            let x = t.bytes_per_s.at(r);
            if x > 0.0 {
                m.entry(t.src.clone()).or_default().insert(t.dst.clone(), x);
            }
        }
        m
    }

    /// The snapshot before the first round (no samples yet). Call only on a
    /// validated scenario.
    pub fn initial_snapshot(&self) -> Snapshot {
        let mut topology = Topology::default();
        for s in &self.topology.switches {
            topology.switches.insert(
                s.id.clone(),
                SwitchInfo {
                    level: s.level,
                    uplinks: s.uplinks.clone(),
                },
            );
            let cap = s.uplink_bps.unwrap_or(match s.level {
                SwitchLevel::Tor => 40e9,
                _ => 100e9,
            });
            for u in &s.uplinks {
                topology.links.push(LinkInfo {
                    a: s.id.clone(),
                    b: u.clone(),
                    capacity_bps: cap,
                    used_bps: 0.0,
                });
            }
        }
        let locations = topology.locate_all();
        let mut hosts = BTreeMap::new();
        for h in &self.hosts {
            topology.links.push(LinkInfo {
                a: h.id.clone(),
                b: h.tor.clone(),
                capacity_bps: h.nic_bps,
                used_bps: 0.0,
            });
            hosts.insert(
                h.id.clone(),
                HostState {
                    cores: h.cores,
                    memory_mb: h.memory_mb,
                    nic_bps: h.nic_bps,
                    vf_count: h.vf_count,
                    max_vms: h.max_vms,
                    domain: h.domain.clone(),
                    location: locations.get(&h.tor).cloned().unwrap_or_default(),
                    history: Vec::new(),
                },
            );
        }
        let externals = self
            .externals
            .iter()
            .map(|x| {
                (
                    x.name.clone(),
                    ExternalEndpoint {
                        switch: x.switch.clone(),
                        ipv4: x.ip,
                        location: topology.locate_switch(&x.switch),
                    },
                )
            })
            .collect();
        let vms = self
            .vms
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    VmState {
                        host: v.host.clone(),
                        environment: v.environment.clone(),
                        head: v.head,
                        ipv4: v.ip,
                        vcpus: v.vcpus,
                        memory_mb: v.memory_mb,
                        max_memory_mb: v.max_memory_mb.unwrap_or(v.memory_mb),
                        dirty_rate_mbps: v.dirty_rate_mbps,
                        vnic_bytes_per_s: v.vnic_bps.map(|b| b / 8.0),
                        has_vf: v.vf,
                        last_migration_s: None,
                        history: Vec::new(),
                    },
                )
            })
            .collect();
        Snapshot {
            now_s: 0.0,
            interval_s: self.interval_s,
            round: 0,
            topology,
            hosts,
            vms,
            traffic: self.traffic_at(0),
            externals,
            migrations: Vec::new(),
            hotspot_history: Vec::new(),
            rules: self.rules.clone(),
        }
    }
}
