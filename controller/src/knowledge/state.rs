//! The live knowledge of the running controller and its locks.
//!
//! [`Knowledge`] holds what the Monitor stage keeps current (topology,
//! statistics, host reports, connected switches) and the persistent store.
//! The stages above read it through the accessors below; none of them sees
//! the loop's own state or the API.
//!
//! # Lock order
//!
//! This is the one lock order of the controller. A section that needs two
//! of these locks takes them in this order (and may skip any); none is held
//! across `.await`:
//!
//! 1. `hosts` (host registry);
//! 2. `topo` (LLDP topology);
//! 3. `hypervisors` (static bridge → hypervisor map);
//! 4. `switches` (connected switch handles);
//! 5. `monitor` (statistics);
//! 6. the loop's `live` state ([`crate::mapek::live::LiveState`]) and
//!    the orchestrator's migration table, `groups` and `api_groups`
//!    (configured domains and environments, and the API's set) and
//!    `rules` (placement rules), the last three held
//!    only to clone an `Arc`: leaves, nothing else is taken while one of
//!    them is held.
//!
//! For example [`Knowledge::snapshot`] takes `monitor` alone first, then
//! `hosts`, `topo` and `hypervisors`; the API reads [`Knowledge::hypervisor_map`] (hosts,
//! then hypervisors) *before* it takes `topo`, never while holding it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::knowledge::clock::now_unix_ms;
use crate::knowledge::cluster::Fence;
use crate::knowledge::control::Control;
use crate::knowledge::groups::Groups;
use crate::knowledge::live::{build_snapshot, LiveInputs};
use crate::knowledge::reports::ReportQueue;
use crate::knowledge::rules::RuleSet;
use crate::knowledge::snapshot::{HotspotEvent, MigrationRecord, Snapshot};
use crate::knowledge::store::Store;
use crate::monitor::hosts::HostRegistry;
use crate::monitor::lldp::LldpCounters;
use crate::monitor::openflow::SwitchHandle;
use crate::monitor::stats::Monitor;
use crate::monitor::topology::Topology;

/// A lock of the knowledge is poisoned (a thread panicked holding it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} lock poisoned")]
pub struct Poisoned(pub &'static str);

/// Gauges and counters of the forwarding's bounded state that the core
/// publishes for the API (the endpoint counters live in the topology, the
/// traffic matrix's in the monitor).
#[derive(Debug, Default)]
pub struct LimitCounters {
    /// Pair flows installed now.
    pub pair_flows: AtomicU64,
    /// New pairs forwarded without a flow (pair-flow bound reached).
    pub pair_flows_refused: AtomicU64,
}

/// The fixed facts the knowledge needs to build snapshots.
#[derive(Debug, Clone)]
pub struct KnowledgeConfig {
    /// Capacity of every link, bit/s (None: the port's speed).
    pub link_capacity_bps: Option<f64>,
    /// Monitoring interval.
    pub poll_interval: Duration,
    /// Statistics window, in intervals.
    pub window_intervals: u32,
    /// Flow cookie excluded from λ, and its mask.
    pub excluded_cookie: u64,
    /// Mask of [`KnowledgeConfig::excluded_cookie`].
    pub excluded_cookie_mask: u64,
    /// Reports kept per host.
    pub host_history: usize,
    /// Pairs the traffic matrix tracks at most.
    pub max_matrix_pairs: usize,
    /// Configured domains and environments.
    pub groups: Groups,
    /// Events kept for clients resuming the event stream.
    pub events_ring: usize,
    /// Events a client of the stream may fall behind before it is dropped.
    pub events_client_buffer: usize,
}

/// The live knowledge (see the module doc for the lock order).
#[derive(Debug)]
pub struct Knowledge {
    /// Start time.
    pub started: Instant,
    /// Start time, Unix ms (the time origin of snapshots).
    pub start_unix_ms: i64,
    /// Capacity of every link, bit/s (None: the port's speed).
    pub link_capacity_bps: Option<f64>,
    /// Monitoring interval.
    pub poll_interval: Duration,
    /// The topology (written by the core task only).
    pub topo: RwLock<Topology>,
    /// The monitor.
    pub monitor: Arc<Mutex<Monitor>>,
    /// Datapath id → hypervisor name.
    pub hypervisors: RwLock<BTreeMap<u64, String>>,
    /// PACKET_INs dropped because the core was saturated.
    pub packet_in_drops: Arc<AtomicU64>,
    /// Other switch events (PORT_STATUS, FLOW_REMOVED, ERROR) dropped
    /// because the core was saturated.
    pub event_drops: Arc<AtomicU64>,
    /// Switch connections closed because the peer did not read.
    pub not_reading_disconnects: Arc<AtomicU64>,
    /// OpenFlow messages by type and direction (the connections count).
    pub of_messages: Arc<crate::monitor::ofcount::OfMessageCounters>,
    /// The event stream (`GET /api/v1/events`).
    pub events: Arc<crate::knowledge::events::EventBus>,
    /// Registered hosts and their VMs.
    pub hosts: RwLock<HostRegistry>,
    /// The persistent knowledge store (None: not persisted).
    pub store: Option<Arc<dyn Store>>,
    /// Host reports waiting to be written to the store (a writer task
    /// flushes them; see [`crate::knowledge::reports`]).
    pub report_queue: Arc<ReportQueue>,
    /// Connected switches (the core keeps this current).
    pub switches: RwLock<HashMap<u64, SwitchHandle>>,
    /// LLDP frames accepted and ignored, by reason (the core counts).
    pub lldp: Arc<LldpCounters>,
    /// Pair-flow gauges and counters (the core publishes them).
    pub limits: Arc<LimitCounters>,
    /// Configured domains and environments (replaced on SIGHUP; a leaf
    /// lock, held only to clone the `Arc`).
    groups: RwLock<Arc<Groups>>,
    /// Domains and environments set with `PUT /api/v1/groups` (None: the
    /// configuration's apply); they replace the configuration's wholesale.
    /// A leaf lock, held only to clone the `Arc`.
    api_groups: RwLock<Option<Arc<Groups>>>,
    /// The placement rules in force (validated by the caller of
    /// [`Knowledge::set_rules`]; none at start; a leaf lock, held only to
    /// clone the `Arc`).
    rules: RwLock<Arc<RuleSet>>,
    /// The operator's automation levels and hosts in maintenance.
    control: RwLock<Arc<Control>>,
    /// The cluster fence ([`Fence::single`] for a single controller).
    pub fence: Fence,
    /// OpenFlow messages a cluster node withheld from switches it still
    /// held as master because its fence had closed (lease ran out).
    pub fenced_writes: AtomicU64,
    /// Switches that granted this cluster node MASTER under the generation
    /// the cluster assigns (their ROLE_REPLY), for `GET /api/v1/cluster`.
    pub granted_masters: Mutex<std::collections::BTreeSet<u64>>,
    /// Datapath ids of the switches connected to this node (written by
    /// the forwarding core; a cluster node publishes them in etcd).
    pub connected_switches: tokio::sync::watch::Sender<std::collections::BTreeSet<u64>>,
}

impl Knowledge {
    /// Empty knowledge.
    pub fn new(
        cfg: &KnowledgeConfig,
        hypervisors: BTreeMap<u64, String>,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        let mut monitor = Monitor::new(
            cfg.window_intervals as usize,
            cfg.excluded_cookie,
            cfg.excluded_cookie_mask,
        );
        monitor.matrix.set_max_pairs(cfg.max_matrix_pairs);
        Knowledge {
            started: Instant::now(),
            start_unix_ms: now_unix_ms(),
            link_capacity_bps: cfg.link_capacity_bps,
            poll_interval: cfg.poll_interval,
            topo: RwLock::new(Topology::new()),
            monitor: Arc::new(Mutex::new(monitor)),
            hypervisors: RwLock::new(hypervisors),
            packet_in_drops: Arc::new(AtomicU64::new(0)),
            event_drops: Arc::new(AtomicU64::new(0)),
            not_reading_disconnects: Arc::new(AtomicU64::new(0)),
            of_messages: Arc::default(),
            events: Arc::new(crate::knowledge::events::EventBus::new(
                cfg.events_ring,
                cfg.events_client_buffer,
            )),
            hosts: RwLock::new(HostRegistry::new(cfg.host_history)),
            store,
            report_queue: Arc::new(ReportQueue::default()),
            switches: RwLock::new(HashMap::new()),
            lldp: Arc::new(LldpCounters::default()),
            groups: RwLock::new(Arc::new(cfg.groups.clone())),
            api_groups: RwLock::new(None),
            rules: RwLock::new(Arc::new(RuleSet::default())),
            control: RwLock::new(Arc::new(Control::default())),
            limits: Arc::new(LimitCounters::default()),
            fence: Fence::single(),
            fenced_writes: AtomicU64::new(0),
            granted_masters: Mutex::new(std::collections::BTreeSet::new()),
            connected_switches: tokio::sync::watch::channel(std::collections::BTreeSet::new()).0,
        }
    }

    /// The same knowledge for a cluster node: every act passes `fence`,
    /// and the set of connected switches goes to `connected` (for the
    /// node's etcd session to publish).
    pub fn with_cluster(
        mut self,
        fence: Fence,
        connected: tokio::sync::watch::Sender<std::collections::BTreeSet<u64>>,
    ) -> Self {
        self.fence = fence;
        self.connected_switches = connected;
        self
    }

    /// The handle of a connected switch.
    pub fn switch_handle(&self, dpid: u64) -> Option<SwitchHandle> {
        self.switches.read().ok()?.get(&dpid).cloned()
    }

    /// Read access to the topology.
    pub fn topo_read(&self) -> Result<RwLockReadGuard<'_, Topology>, Poisoned> {
        self.topo.read().map_err(|_| Poisoned("topology"))
    }

    /// The monitor.
    pub fn monitor_lock(&self) -> Result<MutexGuard<'_, Monitor>, Poisoned> {
        self.monitor.lock().map_err(|_| Poisoned("monitor"))
    }

    /// Read access to the host registry.
    pub fn hosts_read(&self) -> Result<RwLockReadGuard<'_, HostRegistry>, Poisoned> {
        self.hosts.read().map_err(|_| Poisoned("host registry"))
    }

    /// Write access to the host registry.
    pub fn hosts_write(&self) -> Result<RwLockWriteGuard<'_, HostRegistry>, Poisoned> {
        self.hosts.write().map_err(|_| Poisoned("host registry"))
    }

    /// The hypervisor a bridge belongs to: the host that registered it,
    /// else the static configuration.
    pub fn hypervisor_of(&self, dpid: u64) -> Option<String> {
        let registered = self
            .hosts
            .read()
            .ok()
            .and_then(|h| h.bridges().get(&dpid).cloned());
        registered.or_else(|| {
            self.hypervisors
                .read()
                .ok()
                .and_then(|h| h.get(&dpid).cloned())
        })
    }

    /// Every bridge's hypervisor: the host that registered it, else the
    /// static configuration (as [`Knowledge::hypervisor_of`], for all
    /// bridges at once; takes `hosts`, then `hypervisors`).
    pub fn hypervisor_map(&self) -> BTreeMap<u64, String> {
        let registered = self.hosts.read().map(|h| h.bridges()).unwrap_or_default();
        let mut all = self
            .hypervisors
            .read()
            .map(|h| h.clone())
            .unwrap_or_default();
        all.extend(registered);
        all
    }

    /// The snapshot now (None if a lock is poisoned). `history`: samples
    /// kept per host and VM.
    pub fn snapshot(
        &self,
        round: u64,
        history: usize,
        migrations: Vec<MigrationRecord>,
        hotspot_history: Vec<HotspotEvent>,
        last_migration_s: BTreeMap<String, f64>,
    ) -> Option<Snapshot> {
        let rates = self.monitor_lock().ok()?.matrix.rates_unsorted();
        let ports = self.monitor_lock().ok()?.port_rates();
        let groups = self.groups();
        let rules = self.rules();
        let control = self.control();
        let hosts = self.hosts_read().ok()?;
        let topo = self.topo_read().ok()?;
        let hypervisors = self.hypervisors.read().ok()?;
        let mut snap = build_snapshot(&LiveInputs {
            hosts: &hosts,
            topo: &topo,
            hypervisors: &hypervisors,
            rates: &rates,
            ports: &ports,
            link_capacity_bps: self.link_capacity_bps,
            start_unix_ms: self.start_unix_ms,
            now_unix_ms: now_unix_ms(),
            interval_s: self.poll_interval.as_secs_f64(),
            round,
            history,
            migrations,
            hotspot_history,
            last_migration_s,
            groups: &groups,
            rules: &rules,
        });
        if !control.is_neutral() {
            snap.rules = control.rules_for(
                &snap.rules,
                snap.vms.iter().map(|(n, v)| (n.as_str(), v.host.as_str())),
            );
        }
        Some(snap)
    }

    /// The set of domains and environments in force: the API's if one was
    /// put, else the configuration's. The registrations fill in the hosts
    /// and VMs it does not name when a snapshot is built
    /// ([`crate::knowledge::groups::EffectiveGroups`]).
    pub fn groups(&self) -> Arc<Groups> {
        self.api_groups().unwrap_or_else(|| self.config_groups())
    }

    /// The configuration's domains and environments (`[groups]`).
    pub fn config_groups(&self) -> Arc<Groups> {
        match self.groups.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// The domains and environments put with the API, if any.
    pub fn api_groups(&self) -> Option<Arc<Groups>> {
        match self.api_groups.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Puts new configured domains and environments in force (SIGHUP);
    /// a set put with the API still overrides them.
    pub fn set_groups(&self, groups: Groups) {
        match self.groups.write() {
            Ok(mut g) => *g = Arc::new(groups),
            Err(p) => *p.into_inner() = Arc::new(groups),
        }
    }

    /// Puts the API's set of domains and environments in force (validated
    /// by the caller), replacing the configuration's wholesale; None goes
    /// back to the configuration's.
    pub fn set_api_groups(&self, groups: Option<Groups>) {
        let groups = groups.map(Arc::new);
        match self.api_groups.write() {
            Ok(mut g) => *g = groups,
            Err(p) => *p.into_inner() = groups,
        }
    }

    /// The placement rules in force (every snapshot carries them).
    pub fn rules(&self) -> Arc<RuleSet> {
        match self.rules.read() {
            Ok(r) => Arc::clone(&r),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Puts a new set of placement rules in force; the next snapshot, hence
    /// the next planning round, obeys them. The caller validates them first
    /// ([`RuleSet::validate`]; contradictory rules must never get here)
    /// and persists them.
    pub fn set_rules(&self, rules: RuleSet) {
        match self.rules.write() {
            Ok(mut r) => *r = Arc::new(rules),
            Err(p) => *p.into_inner() = Arc::new(rules),
        }
    }

    /// The operator's control state in force (automation levels, hosts in
    /// maintenance); every snapshot adds its rules
    /// ([`Control::rules_for`]).
    pub fn control(&self) -> Arc<Control> {
        match self.control.read() {
            Ok(r) => Arc::clone(&r),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Changes the control state with `f` (atomically) and returns the new
    /// one. The caller persists it.
    pub fn update_control(&self, f: impl FnOnce(&mut Control)) -> Arc<Control> {
        let mut g = match self.control.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut c = (**g).clone();
        f(&mut c);
        *g = Arc::new(c);
        Arc::clone(&g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small knowledge configuration with these groups.
    fn test_config(groups: Groups) -> KnowledgeConfig {
        KnowledgeConfig {
            link_capacity_bps: None,
            poll_interval: Duration::from_secs(2),
            window_intervals: 5,
            excluded_cookie: 0,
            excluded_cookie_mask: 0,
            host_history: 5,
            max_matrix_pairs: 1000,
            groups,
            events_ring: 16,
            events_client_buffer: 16,
        }
    }

    /// Rules put in force reach every following snapshot.
    #[test]
    fn rules_in_force_reach_the_snapshot() {
        let cfg = test_config(Groups::default());
        let k = Knowledge::new(&cfg, BTreeMap::new(), None);
        assert!(k.rules().is_empty());
        let snap = k
            .snapshot(1, 5, Vec::new(), Vec::new(), BTreeMap::new())
            .unwrap();
        assert!(snap.rules.is_empty());
        let rules: RuleSet =
            serde_json::from_str(r#"[{"kind":"host_limit","name":"eight","max_vms":8}]"#).unwrap();
        k.set_rules(rules.clone());
        assert_eq!(*k.rules(), rules);
        let snap = k
            .snapshot(2, 5, Vec::new(), Vec::new(), BTreeMap::new())
            .unwrap();
        assert_eq!(snap.rules, rules);
    }

    /// The API's set replaces the configuration's wholesale (a SIGHUP
    /// underneath does not undo it); clearing it brings the configuration's
    /// back.
    #[test]
    fn the_api_set_overrides_the_configured_groups() {
        use crate::knowledge::groups::GroupsSpec;
        let cfg_set: GroupsSpec =
            serde_json::from_str(r#"{"domains": {"d0": ["h1", "h2"]}}"#).unwrap();
        let api_set: GroupsSpec = serde_json::from_str(
            r#"{"environments": [{"name": "t", "members": ["v"], "head": "v"}]}"#,
        )
        .unwrap();
        let cfg = test_config(cfg_set.check().unwrap());
        let k = Knowledge::new(&cfg, BTreeMap::new(), None);
        assert_eq!(k.groups().domain_of("h1"), Some("d0"));
        k.set_api_groups(Some(api_set.check().unwrap()));
        assert_eq!(k.groups().domain_of("h1"), None, "wholesale");
        assert_eq!(k.groups().environment_of("v"), Some(("t", true)));
        k.set_groups(cfg_set.check().unwrap());
        assert_eq!(k.groups().domain_of("h1"), None, "SIGHUP keeps the API's");
        assert_eq!(k.config_groups().domain_of("h1"), Some("d0"));
        k.set_api_groups(None);
        assert_eq!(k.groups().domain_of("h1"), Some("d0"));
        assert_eq!(k.groups().environment_of("v"), None);
    }
}
