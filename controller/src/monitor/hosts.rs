//! Registered hosts (hypervisors) and their VMs, fed by `shoal-hostd`
//! registrations and reports (wire types: `shoal_common::proto`).
//!
//! Pure state: callers pass the time. Keeps the latest registration of each
//! host, a bounded history of its reports, where every VM is, and the events
//! already seen (hostd delivers events at least once; they are deduplicated
//! by sequence number). Registered bridges say which datapath belongs to
//! which hypervisor, replacing the static `[hypervisors]` configuration for
//! IDC classification.

use std::collections::{BTreeMap, HashMap, VecDeque};

use shoal_common::proto::{self, Event, Registration, Report};

/// Default number of reports kept per host.
pub const DEFAULT_HISTORY: usize = 60;

/// Errors of registrations and reports (each maps to an HTTP status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// A report for a host that never registered (hostd registers again).
    #[error("host {0} is not registered")]
    Unknown(String),
    /// The body contradicts the path or is otherwise invalid.
    #[error("{0}")]
    Invalid(String),
}

/// A hash map with foldhash's seeded hasher, for maps keyed by VM name or
/// MAC that the live round reads for every VM (SipHash was a tenth of the
/// snapshot's CPU at 10,000 VMs). Keys come from authenticated host daemons.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One registered host.
#[derive(Debug, Clone)]
pub struct HostEntry {
    /// Latest registration.
    pub registration: Registration,
    /// When it registered (Unix ms, controller clock).
    pub registered_ms: i64,
    /// Reports, oldest first, at most the history length.
    pub reports: VecDeque<Report>,
    /// When the last report arrived (Unix ms, controller clock).
    pub last_report_ms: Option<i64>,
    /// Highest event sequence number processed (per hostd process: reset
    /// when its report numbers restart).
    last_event_seq: u64,
    last_report_seq: u64,
    /// Each VM's largest dirty rate and VF flag over the kept reports, kept
    /// current as reports come and go, so that the snapshot reads it
    /// instead of scanning every kept report of every host each round.
    windows: FastMap<String, VmWindow>,
    /// Reports pushed so far: the index the next report gets.
    pushed: u64,
}

/// One VM over the reports its host keeps: a sliding-window maximum of its
/// dirty rate (a monotonic queue of `(report index, rate)`, rates strictly
/// decreasing from the front) and the VF flag of the latest report listing
/// it.
#[derive(Debug, Clone, Default)]
struct VmWindow {
    max: VecDeque<(u64, f64)>,
    vf: bool,
}

impl HostEntry {
    /// Sequence number of the last report applied (0: none yet).
    pub fn last_report_seq(&self) -> u64 {
        self.last_report_seq
    }

    /// The latest report.
    pub fn latest(&self) -> Option<&Report> {
        self.reports.back()
    }

    /// VM `name`'s largest dirty rate (MB/s) over the reports kept, and
    /// whether the latest kept report listing it has a VF attached; `None`
    /// when no kept report lists it. A name listed twice in one report:
    /// its first entry counts.
    pub fn vm_window(&self, name: &str) -> Option<(f64, bool)> {
        let w = self.windows.get(name)?;
        Some((w.max.front()?.1, w.vf))
    }

    /// Adds report `rep` (already validated), keeping at most `history`.
    fn push_report(&mut self, rep: Report, history: usize) {
        let i = self.pushed;
        self.pushed += 1;
        for m in &rep.vms {
            let w = self.windows.entry(m.name.clone()).or_default();
            if w.max.back().is_some_and(|&(j, _)| j == i) {
                continue; // listed twice in this report: the first counts
            }
            let d = m.dirty_rate_mbps.unwrap_or(0.0);
            while w.max.back().is_some_and(|&(_, x)| x <= d) {
                w.max.pop_back();
            }
            w.max.push_back((i, d));
            w.vf = m.vf_attached;
        }
        self.reports.push_back(rep);
        while self.reports.len() > history {
            self.reports.pop_front();
        }
        let oldest = self.pushed - self.reports.len() as u64;
        self.windows.retain(|_, w| {
            while w.max.front().is_some_and(|&(j, _)| j < oldest) {
                w.max.pop_front();
            }
            !w.max.is_empty()
        });
    }
}

/// Where a VM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPlace {
    /// Host id.
    pub host: String,
}

/// What a registration changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// True for a host not known before.
    pub new_host: bool,
    /// VMs now on this host that were elsewhere (or nowhere) before:
    /// (vm, previous host).
    pub placed: Vec<(String, Option<String>)>,
}

/// The registry.
#[derive(Debug)]
pub struct HostRegistry {
    hosts: BTreeMap<String, HostEntry>,
    vms: BTreeMap<String, VmPlace>,
    history: usize,
}

impl Default for HostRegistry {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY)
    }
}

fn check_id(what: &str, id: &str) -> Result<(), HostError> {
    if proto::valid_command_id(id) {
        Ok(())
    } else {
        Err(HostError::Invalid(format!(
            "{what} {id:?} is not 1 to 128 characters of [A-Za-z0-9._-]"
        )))
    }
}

impl HostRegistry {
    /// An empty registry keeping `history` reports per host.
    pub fn new(history: usize) -> Self {
        HostRegistry {
            hosts: BTreeMap::new(),
            vms: BTreeMap::new(),
            history: history.max(1),
        }
    }

    /// Hosts by id.
    pub fn hosts(&self) -> &BTreeMap<String, HostEntry> {
        &self.hosts
    }

    /// One host.
    pub fn host(&self, id: &str) -> Option<&HostEntry> {
        self.hosts.get(id)
    }

    /// Where each VM is.
    pub fn vms(&self) -> &BTreeMap<String, VmPlace> {
        &self.vms
    }

    /// The inventory entry of a VM (from its host's registration).
    pub fn vm_inventory(&self, name: &str) -> Option<(&str, &proto::VmInventory)> {
        let host = &self.vms.get(name)?.host;
        let e = self.hosts.get(host)?;
        e.registration
            .vms
            .iter()
            .find(|v| v.name == name)
            .map(|v| (host.as_str(), v))
    }

    /// The latest metrics of a VM (from its host's latest report).
    pub fn vm_metrics(&self, name: &str) -> Option<&proto::VmMetrics> {
        let host = &self.vms.get(name)?.host;
        self.hosts
            .get(host)?
            .latest()?
            .vms
            .iter()
            .find(|v| v.name == name)
    }

    /// Datapath id → host id, from registered bridges.
    pub fn bridges(&self) -> BTreeMap<u64, String> {
        self.hosts
            .iter()
            .filter_map(|(id, e)| {
                e.registration
                    .bridge
                    .as_ref()
                    .map(|b| (b.datapath_id, id.clone()))
            })
            .collect()
    }

    /// The host whose VM has this MAC (lower-case `aa:bb:…`).
    pub fn vm_by_mac(&self, mac: &str) -> Option<(&str, &proto::VmInventory)> {
        self.hosts.iter().find_map(|(h, e)| {
            e.registration
                .vms
                .iter()
                .find(|v| v.mac.eq_ignore_ascii_case(mac))
                .map(|v| (h.as_str(), v))
        })
    }

    /// Applies a registration of host `id` (the path's id).
    pub fn register(
        &mut self,
        id: &str,
        reg: Registration,
        now_ms: i64,
    ) -> Result<RegisterOutcome, HostError> {
        check_id("host id", id)?;
        if reg.host_id != id {
            return Err(HostError::Invalid(format!(
                "host_id {:?} in the body differs from {id:?} in the path",
                reg.host_id
            )));
        }
        if !(reg.interval_s.is_finite() && reg.interval_s > 0.0) {
            return Err(HostError::Invalid(format!(
                "interval_s must be > 0, got {}",
                reg.interval_s
            )));
        }
        // The host's domain and its VMs' environments (VIOLIN's groups):
        // bounded names, a head only with an environment.
        proto::check_registration_groups(&reg).map_err(HostError::Invalid)?;
        let mut seen = std::collections::BTreeSet::new();
        for v in &reg.vms {
            check_id("VM name", &v.name)?;
            if !seen.insert(v.name.as_str()) {
                return Err(HostError::Invalid(format!("VM {} listed twice", v.name)));
            }
            if v.mac.parse::<ofp::MacAddr>().is_err() {
                return Err(HostError::Invalid(format!(
                    "vms[{}].mac {:?} is not a MAC address",
                    v.name, v.mac
                )));
            }
            if v.max_memory_mb == 0 || v.memory_mb > v.max_memory_mb {
                return Err(HostError::Invalid(format!(
                    "vms[{}]: memory_mb {} must be in 1..=max_memory_mb {}",
                    v.name, v.memory_mb, v.max_memory_mb
                )));
            }
        }
        let mut out = RegisterOutcome {
            new_host: !self.hosts.contains_key(id),
            placed: Vec::new(),
        };
        for v in &reg.vms {
            let prev = self.vms.get(&v.name).map(|p| p.host.clone());
            if prev.as_deref() != Some(id) {
                out.placed.push((v.name.clone(), prev));
                self.vms.insert(
                    v.name.clone(),
                    VmPlace {
                        host: id.to_string(),
                    },
                );
            }
        }
        // VMs this host no longer lists go back to another host whose
        // registration still lists them (a stale claim at the end of a
        // migration must not unplace the VM); if none does, they are gone.
        let listed: std::collections::BTreeSet<&str> =
            reg.vms.iter().map(|v| v.name.as_str()).collect();
        let dropped: Vec<String> = self
            .vms
            .iter()
            .filter(|(name, p)| p.host == id && !listed.contains(name.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in dropped {
            let other = self
                .hosts
                .iter()
                .filter(|(h, _)| h.as_str() != id)
                .find(|(_, e)| e.registration.vms.iter().any(|v| v.name == name))
                .map(|(h, _)| h.clone());
            match other {
                Some(host) => {
                    self.vms.insert(name, VmPlace { host });
                }
                None => {
                    self.vms.remove(&name);
                }
            }
        }
        match self.hosts.get_mut(id) {
            Some(e) => {
                e.registration = reg;
                e.registered_ms = now_ms;
            }
            None => {
                self.hosts.insert(
                    id.to_string(),
                    HostEntry {
                        registration: reg,
                        registered_ms: now_ms,
                        reports: VecDeque::new(),
                        last_report_ms: None,
                        last_event_seq: 0,
                        last_report_seq: 0,
                        windows: HashMap::default(),
                        pushed: 0,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Applies a report of host `id`; returns the events not seen before.
    pub fn report(&mut self, id: &str, rep: Report, now_ms: i64) -> Result<Vec<Event>, HostError> {
        if rep.host_id != id {
            return Err(HostError::Invalid(format!(
                "host_id {:?} in the body differs from {id:?} in the path",
                rep.host_id
            )));
        }
        let h = &rep.host;
        for (name, v) in [
            ("host.cpu_util", h.cpu_util),
            ("host.swap_out_pages_per_s", h.swap_out_pages_per_s),
            ("host.swap_in_pages_per_s", h.swap_in_pages_per_s),
            ("host.nic_tx_bytes_per_s", h.nic_tx_bytes_per_s),
            ("host.nic_rx_bytes_per_s", h.nic_rx_bytes_per_s),
            ("interval_s", rep.interval_s),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(HostError::Invalid(format!(
                    "{name} must be a finite number >= 0, got {v}"
                )));
            }
        }
        for v in &rep.vms {
            for (name, x) in [
                ("cpu_util", v.cpu_util),
                ("tx_bytes_per_s", v.tx_bytes_per_s),
                ("rx_bytes_per_s", v.rx_bytes_per_s),
                ("tx_packets_per_s", v.tx_packets_per_s),
                ("rx_packets_per_s", v.rx_packets_per_s),
                ("cpu_cores", v.cpu_cores),
                ("dirty_rate_mbps", v.dirty_rate_mbps.unwrap_or(0.0)),
                ("gotten_ms", v.gotten_ms.unwrap_or(0.0)),
                ("wait_ms", v.wait_ms.unwrap_or(0.0)),
                ("blocked_ms", v.blocked_ms.unwrap_or(0.0)),
            ] {
                if !x.is_finite() || x < 0.0 {
                    return Err(HostError::Invalid(format!(
                        "vms[{}].{name} must be a finite number >= 0, got {x}",
                        v.name
                    )));
                }
            }
        }
        let history = self.history;
        let e = self
            .hosts
            .get_mut(id)
            .ok_or_else(|| HostError::Unknown(id.to_string()))?;
        if rep.seq <= e.last_report_seq {
            // A restarted hostd numbers its reports and events from 1 again.
            e.last_event_seq = 0;
        }
        e.last_report_seq = rep.seq;
        let fresh: Vec<Event> = rep
            .events
            .iter()
            .filter(|ev| ev.seq > e.last_event_seq)
            .cloned()
            .collect();
        if let Some(max) = fresh.iter().map(|ev| ev.seq).max() {
            e.last_event_seq = max;
        }
        e.push_report(rep, history);
        e.last_report_ms = Some(now_ms);
        Ok(fresh)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proto::{BackendKind, EventKind, HostMetrics, VmBackendSpec, VmInventory};

    pub(crate) fn vm(name: &str, mac: &str) -> VmInventory {
        VmInventory {
            environment: None,
            environment_head: false,
            name: name.into(),
            mac: mac.into(),
            ip: None,
            vcpus: 1,
            memory_mb: 128,
            max_memory_mb: 256,
            spec: VmBackendSpec::Netns {
                namespace: name.into(),
                iface: "eth0".into(),
                port: format!("{name}-p"),
                vf_iface: None,
                vf_port: None,
                scenario: None,
                scenario_epoch_unix_ms: None,
            },
        }
    }

    pub(crate) fn reg(id: &str, dpid: u64, vms: Vec<VmInventory>) -> Registration {
        Registration {
            domain: None,
            host_id: id.into(),
            api_url: "http://127.0.0.1:7070".into(),
            dom0_addr: "10.0.0.1".into(),
            cores: 4,
            memory_mb: 4096,
            nic: "eth0".into(),
            nic_bps: 1_000_000_000,
            vf_count: 2,
            bridge: Some(proto::BridgeAttachment {
                name: format!("br-{id}"),
                datapath_id: dpid,
            }),
            interval_s: 10.0,
            vms,
            hostd_version: "test".into(),
        }
    }

    pub(crate) fn report(id: &str, seq: u64, events: Vec<Event>) -> Report {
        Report {
            host_id: id.into(),
            seq,
            at_unix_ms: seq * 10_000,
            interval_s: 10.0,
            host: HostMetrics::default(),
            vms: vec![proto::VmMetrics {
                name: "v1".into(),
                backend: BackendKind::Netns,
                state: proto::VmState::Running,
                cpu_cores: 0.5,
                cpu_util: 0.5,
                gotten_ms: None,
                wait_ms: None,
                blocked_ms: None,
                memory_mb: 128,
                max_memory_mb: 256,
                used_memory_mb: 100,
                tx_bytes_per_s: 1.0,
                rx_bytes_per_s: 1.0,
                tx_packets_per_s: 1.0,
                rx_packets_per_s: 1.0,
                dirty_rate_mbps: Some(2.0),
                vf_attached: false,
            }],
            events,
        }
    }

    fn ev(seq: u64, vm: &str) -> Event {
        Event {
            seq,
            at_unix_ms: 1,
            kind: EventKind::VmArrived { vm: vm.into() },
        }
    }

    #[test]
    fn register_places_vms_and_bridges() {
        let mut r = HostRegistry::new(3);
        let o = r
            .register(
                "h1",
                reg("h1", 0x21, vec![vm("v1", "02:00:00:00:00:01")]),
                1,
            )
            .unwrap();
        assert!(o.new_host);
        assert_eq!(o.placed, vec![("v1".to_string(), None)]);
        assert_eq!(r.bridges().get(&0x21).map(String::as_str), Some("h1"));
        assert_eq!(r.vm_by_mac("02:00:00:00:00:01").unwrap().0, "h1");
        // v1 migrates to h2: h2 registers with it, then h1 without it.
        let o = r
            .register(
                "h2",
                reg("h2", 0x22, vec![vm("v1", "02:00:00:00:00:01")]),
                2,
            )
            .unwrap();
        assert_eq!(o.placed, vec![("v1".to_string(), Some("h1".to_string()))]);
        r.register("h1", reg("h1", 0x21, vec![]), 3).unwrap();
        assert_eq!(r.vms()["v1"].host, "h2");
        assert_eq!(r.vm_inventory("v1").unwrap().0, "h2");
    }

    /// A registration's domain and environments are kept; invalid ones
    /// are refused (422 at the API) naming the field, and nothing of the
    /// refused registration is applied.
    #[test]
    fn registration_groups_are_kept_or_refused_naming_the_field() {
        let mut r = HostRegistry::new(3);
        let mut g = reg("h1", 0x21, vec![vm("v1", "02:00:00:00:00:01")]);
        g.domain = Some("dc-east".into());
        g.vms[0].environment = Some("tenant1".into());
        g.vms[0].environment_head = true;
        r.register("h1", g.clone(), 1).unwrap();
        let e = &r.host("h1").unwrap().registration;
        assert_eq!(e.domain.as_deref(), Some("dc-east"));
        assert_eq!(e.vms[0].environment.as_deref(), Some("tenant1"));
        let mut bad = g.clone();
        bad.domain = Some("d".repeat(129));
        bad.vms.clear();
        match r.register("h1", bad, 2) {
            Err(HostError::Invalid(m)) => assert!(m.starts_with("domain "), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut bad = g.clone();
        bad.host_id = "h2".into();
        bad.vms[0].environment = Some("a\u{7}".into());
        match r.register("h2", bad, 2) {
            Err(HostError::Invalid(m)) => assert!(m.starts_with("vms[v1].environment "), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut bad = g;
        bad.host_id = "h2".into();
        bad.vms[0].environment = None;
        match r.register("h2", bad, 2) {
            Err(HostError::Invalid(m)) => {
                assert!(m.starts_with("vms[v1].environment_head "), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(r.host("h2").is_none());
        assert_eq!(r.host("h1").unwrap().registration.vms.len(), 1);
    }

    /// Suite run 30: at the end of a migration whose source hostd had
    /// restarted, the destination registered with the VM, then the source
    /// (still listing it for a moment) and then the source without it. The
    /// VM was left placed nowhere though the destination still listed it,
    /// so the controller could not verify the migration.
    #[test]
    fn a_vm_dropped_by_one_host_stays_with_the_host_that_still_lists_it() {
        let mut r = HostRegistry::new(3);
        let v = || vec![vm("v1", "02:00:00:00:00:01")];
        r.register("h1", reg("h1", 0x21, v()), 1).unwrap();
        r.register("h2", reg("h2", 0x22, v()), 2).unwrap();
        let o = r.register("h1", reg("h1", 0x21, v()), 3).unwrap();
        assert_eq!(o.placed, vec![("v1".to_string(), Some("h2".to_string()))]);
        r.register("h1", reg("h1", 0x21, vec![]), 4).unwrap();
        assert_eq!(r.vms().get("v1").map(|p| p.host.as_str()), Some("h2"));
        assert_eq!(r.vm_inventory("v1").map(|(h, _)| h), Some("h2"));
        // Nobody lists it any more: it is gone.
        r.register("h2", reg("h2", 0x22, vec![]), 5).unwrap();
        assert!(r.vms().get("v1").is_none());
    }

    #[test]
    fn bad_registrations_name_the_problem() {
        let mut r = HostRegistry::default();
        let e = r.register("h1", reg("h2", 1, vec![]), 1).unwrap_err();
        assert!(e.to_string().contains("differs"), "{e}");
        let e = r
            .register("h1", reg("h1", 1, vec![vm("v1", "zz")]), 1)
            .unwrap_err();
        assert!(e.to_string().contains("mac"), "{e}");
        let e = r
            .register(
                "h1",
                reg(
                    "h1",
                    1,
                    vec![vm("v1", "02:00:00:00:00:01"), vm("v1", "02:00:00:00:00:02")],
                ),
                1,
            )
            .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = r.register("h/1", reg("h/1", 1, vec![]), 1).unwrap_err();
        assert!(e.to_string().contains("host id"), "{e}");
    }

    #[test]
    fn reports_history_and_event_dedup() {
        let mut r = HostRegistry::new(2);
        assert_eq!(
            r.report("h1", report("h1", 1, vec![]), 1),
            Err(HostError::Unknown("h1".into()))
        );
        r.register("h1", reg("h1", 1, vec![vm("v1", "02:00:00:00:00:01")]), 1)
            .unwrap();
        assert_eq!(
            r.report("h1", report("h1", 1, vec![ev(1, "a")]), 2)
                .unwrap()
                .len(),
            1
        );
        // The same event again (ack lost): not new.
        let fresh = r
            .report("h1", report("h1", 2, vec![ev(1, "a"), ev(2, "b")]), 3)
            .unwrap();
        assert_eq!(fresh, vec![ev(2, "b")]);
        r.report("h1", report("h1", 3, vec![]), 4).unwrap();
        assert_eq!(r.host("h1").unwrap().reports.len(), 2, "history bounded");
        assert_eq!(r.vm_metrics("v1").unwrap().dirty_rate_mbps, Some(2.0));
        // hostd restarted: numbering starts again, events are new again.
        assert_eq!(
            r.report("h1", report("h1", 1, vec![ev(1, "c")]), 5)
                .unwrap()
                .len(),
            1
        );
        let mut bad = report("h1", 9, vec![]);
        bad.host.cpu_util = f64::NAN;
        assert!(matches!(r.report("h1", bad, 6), Err(HostError::Invalid(_))));
        // Dirty rates and CPU figures are checked like the other rates.
        let mut bad = report("h1", 9, vec![]);
        bad.vms[0].dirty_rate_mbps = Some(-1.0);
        assert!(matches!(r.report("h1", bad, 7), Err(HostError::Invalid(_))));
        let mut bad = report("h1", 9, vec![]);
        bad.vms[0].cpu_cores = f64::INFINITY;
        assert!(matches!(r.report("h1", bad, 8), Err(HostError::Invalid(_))));
    }
}
