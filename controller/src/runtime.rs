//! The running controller: wires the OpenFlow listener, the forwarding core,
//! the statistics pollers and the REST API together, and shuts them down
//! gracefully.
//!
//! One core task owns the forwarding state and applies switch events in
//! order; it shares the topology with the API through a lock held only for
//! short, non-async sections. One poller task per switch fetches flow, port,
//! queue and meter statistics every interval, starting at a random offset
//! (jitter) and never with two polls of one switch in flight.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ofp::{
    FlowStatsRequest, Message, MultipartReplyBody, MultipartRequest, MultipartRequestBody,
    PortReason,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::api::{self, ApiError, MatrixView, PairView, TrafficClass};
use crate::config::Settings;
use crate::cookie;
use crate::execute::orchestrator::Orchestrator;
use crate::forwarding::{Forwarding, FwdConfig, Outgoing, TABLE_EDGE};
use crate::hosts::HostRegistry;
use crate::knowledge::store::Store;
use crate::live::{LiveState, PolicySettings};
use crate::monitor::Monitor;
use crate::openflow::{self, ConnConfig, ConnContext, OfError, SwitchEvent, SwitchHandle};
use crate::topology::{LinkChange, Topology};

/// Errors starting the controller.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A task failed.
    #[error("controller task failed: {0}")]
    Task(String),
    /// The knowledge store could not be opened.
    #[error("cannot open the knowledge database {path}: {source}")]
    Store {
        /// Its path.
        path: String,
        /// Why.
        source: crate::knowledge::store::StoreError,
    },
}

fn open_store(path: &str) -> Result<Arc<Store>, RunError> {
    let r = if path == ":memory:" {
        Store::open_in_memory()
    } else {
        Store::open(std::path::Path::new(path))
    };
    r.map(Arc::new).map_err(|source| RunError::Store {
        path: path.to_string(),
        source,
    })
}

/// Loads the hosts of an earlier run from the store, so that reports of
/// hosts registered before a restart are accepted at once.
fn restore_hosts(shared: &Shared, store: &Store) {
    let rows: Vec<(
        String,
        shoal_common::proto::Registration,
        Option<shoal_common::proto::Report>,
    )> = match store.hosts() {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "cannot read hosts from the knowledge store");
            return;
        }
    };
    let Ok(mut hosts) = shared.hosts.write() else {
        return;
    };
    for (id, reg, _) in rows {
        match hosts.register(&id, reg, now_unix_ms()) {
            Ok(_) => info!(host = %id, "host restored from the knowledge store"),
            Err(e) => warn!(host = %id, error = %e, "stored registration rejected"),
        }
    }
}

/// Consumes host events until a later stage takes them over.
async fn drain_host_events(
    mut rx: mpsc::UnboundedReceiver<HostEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            ev = rx.recv() => if ev.is_none() { return },
            _ = shutdown.changed() => if *shutdown.borrow() { return },
        }
    }
}

/// State shared by the core, the pollers and the API.
#[derive(Debug)]
pub struct Shared {
    /// Settings.
    pub settings: Settings,
    /// Start time.
    pub started: Instant,
    /// The topology (written by the core task only).
    pub topo: RwLock<Topology>,
    /// The monitor.
    pub monitor: Arc<Mutex<Monitor>>,
    /// Datapath id → hypervisor name.
    pub hypervisors: RwLock<BTreeMap<u64, String>>,
    /// PACKET_INs dropped because the core was saturated.
    pub packet_in_drops: Arc<AtomicU64>,
    /// Registered hosts and their VMs.
    pub hosts: RwLock<HostRegistry>,
    /// The persistent knowledge store (None: not persisted).
    pub store: Option<Arc<Store>>,
    /// Bearer token shared with the host daemons.
    pub token: Option<String>,
    /// Where new host events (deduplicated) go.
    pub host_events: Option<mpsc::UnboundedSender<HostEvent>>,
    /// Connected switches (the core keeps this current).
    pub switches: RwLock<HashMap<u64, SwitchHandle>>,
    /// Start time, Unix ms (the time origin of snapshots).
    pub start_unix_ms: i64,
    /// The live loop's state (policy, hotspots, decisions).
    pub live: Mutex<LiveState>,
    /// The migration orchestrator (set once at start).
    pub orchestrator: std::sync::OnceLock<Arc<Orchestrator>>,
}

/// A new event reported by a host daemon.
#[derive(Debug, Clone)]
pub struct HostEvent {
    /// Host id.
    pub host: String,
    /// The event.
    pub event: shoal_common::proto::Event,
}

/// Milliseconds since the Unix epoch (wall clock, for records and logs).
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Shared {
    /// Fresh state from settings, without a store.
    pub fn new(settings: Settings) -> Self {
        let host_history = settings.host_history;
        let p = &settings.policy;
        let live_settings = PolicySettings {
            name: p.name.clone(),
            dry_run: p.dry_run,
            options: p.options.clone(),
            hotspot: p.hotspot.clone(),
            pingpong_intervals: p.pingpong_intervals,
        };
        let token = settings.token.clone();
        let monitor = Monitor::new(
            settings.window_intervals as usize,
            settings.excluded_cookie,
            settings.excluded_cookie_mask,
        );
        Shared {
            hypervisors: RwLock::new(settings.hypervisors.clone()),
            settings,
            started: Instant::now(),
            topo: RwLock::new(Topology::new()),
            monitor: Arc::new(Mutex::new(monitor)),
            packet_in_drops: Arc::new(AtomicU64::new(0)),
            hosts: RwLock::new(HostRegistry::new(host_history)),
            store: None,
            token,
            host_events: None,
            switches: RwLock::new(HashMap::new()),
            start_unix_ms: now_unix_ms(),
            live: Mutex::new(LiveState::new(live_settings)),
            orchestrator: std::sync::OnceLock::new(),
        }
    }

    /// The handle of a connected switch.
    pub fn switch_handle(&self, dpid: u64) -> Option<SwitchHandle> {
        self.switches.read().ok()?.get(&dpid).cloned()
    }

    /// The orchestrator (None before start completed).
    pub fn orchestrator(&self) -> Option<&Arc<Orchestrator>> {
        self.orchestrator.get()
    }

    /// Read access to the topology.
    pub fn topo_read(&self) -> Result<RwLockReadGuard<'_, Topology>, ApiError> {
        self.topo
            .read()
            .map_err(|_| ApiError::Internal("topology lock poisoned".into()))
    }

    /// The monitor.
    pub fn monitor_lock(&self) -> Result<MutexGuard<'_, Monitor>, ApiError> {
        self.monitor
            .lock()
            .map_err(|_| ApiError::Internal("monitor lock poisoned".into()))
    }

    /// Read access to the host registry.
    pub fn hosts_read(&self) -> Result<RwLockReadGuard<'_, HostRegistry>, ApiError> {
        self.hosts
            .read()
            .map_err(|_| ApiError::Internal("host registry lock poisoned".into()))
    }

    /// Write access to the host registry.
    pub fn hosts_write(&self) -> Result<std::sync::RwLockWriteGuard<'_, HostRegistry>, ApiError> {
        self.hosts
            .write()
            .map_err(|_| ApiError::Internal("host registry lock poisoned".into()))
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

    /// The class of traffic between endpoints attached to `a` and `b`:
    /// IDC when both bridges belong to the same hypervisor (or are the same
    /// bridge), NIC otherwise.
    pub fn class_of(&self, a: Option<u64>, b: Option<u64>) -> TrafficClass {
        match (a, b) {
            (Some(a), Some(b)) if a == b => TrafficClass::Idc,
            (Some(a), Some(b)) => match (self.hypervisor_of(a), self.hypervisor_of(b)) {
                (Some(x), Some(y)) if x == y => TrafficClass::Idc,
                _ => TrafficClass::Nic,
            },
            _ => TrafficClass::Nic,
        }
    }

    /// The traffic matrix λ(u,v), optionally filtered.
    pub fn traffic_matrix(
        &self,
        class: Option<TrafficClass>,
        min_bytes_per_s: f64,
    ) -> Result<MatrixView, ApiError> {
        let rates = self.monitor_lock()?.matrix.rates();
        let topo = self.topo_read()?;
        let interval = self.settings.poll_interval.as_secs_f64();
        let mut pairs = Vec::with_capacity(rates.len());
        for r in rates {
            let (se, de) = (topo.endpoint(&r.src), topo.endpoint(&r.dst));
            let c = self.class_of(se.map(|e| e.location.dpid), de.map(|e| e.location.dpid));
            if class.is_some_and(|k| k != c) || r.bytes_per_s < min_bytes_per_s {
                continue;
            }
            pairs.push(PairView {
                src: r.src,
                dst: r.dst,
                src_ip: se.and_then(|e| e.ip),
                dst_ip: de.and_then(|e| e.ip),
                bytes_per_s: r.bytes_per_s,
                total_bytes: r.total_bytes,
                class: c,
                dpid: api::dpid_str(r.dpid),
            });
        }
        Ok(MatrixView {
            window_s: interval * f64::from(self.settings.window_intervals),
            interval_s: interval,
            pairs,
        })
    }
}

/// A running controller.
pub struct Running {
    /// Shared state (for in-process callers and tests).
    pub shared: Arc<Shared>,
    /// Where switches connect.
    pub of_addr: SocketAddr,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, closes switch connections and the API, and waits
    /// for the tasks (at most `grace`).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let all = futures_join(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            warn!("shutdown grace period over; leaving remaining tasks");
        }
        info!("controller stopped");
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Binds the listeners and starts every task.
pub async fn start(settings: Settings) -> Result<Running, RunError> {
    let of_listener = TcpListener::bind(settings.of_listen)
        .await
        .map_err(|source| RunError::Bind {
            what: "OpenFlow",
            addr: settings.of_listen,
            source,
        })?;
    let api_listener = TcpListener::bind(settings.api_listen)
        .await
        .map_err(|source| RunError::Bind {
            what: "REST API",
            addr: settings.api_listen,
            source,
        })?;
    let of_addr = of_listener.local_addr().unwrap_or(settings.of_listen);
    let api_addr = api_listener.local_addr().unwrap_or(settings.api_listen);
    let store = open_store(&settings.db)?;
    let (host_tx, host_rx) = mpsc::unbounded_channel::<HostEvent>();
    let mut shared = Shared::new(settings);
    restore_hosts(&shared, &store);
    if !shared.settings.policy_pinned {
        match store.config::<PolicySettings>("policy") {
            Ok(Some(p)) => {
                let name = p.name.clone();
                match shared.live.lock().map(|mut l| l.set(p)) {
                    Ok(Ok(())) => info!(policy = %name, "policy restored from the knowledge store"),
                    Ok(Err(e)) => warn!(error = %e, "stored policy rejected"),
                    Err(_) => {}
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot read the stored policy"),
        }
    }
    shared.store = Some(store);
    shared.host_events = Some(host_tx);
    let shared = Arc::new(shared);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (ev_tx, ev_rx) = mpsc::channel::<SwitchEvent>(8192);

    let ctx = ConnContext {
        cfg: ConnConfig {
            echo_interval: shared.settings.echo_interval,
            request_timeout: shared.settings.request_timeout,
            multipart_cap_bytes: shared.settings.multipart_cap_bytes,
        },
        events: ev_tx,
        monitor: shared.monitor.clone(),
        shutdown: shutdown_rx.clone(),
        packet_in_drops: shared.packet_in_drops.clone(),
    };
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(openflow::serve(of_listener, ctx)));
    tasks.push(tokio::spawn(core_loop(
        shared.clone(),
        ev_rx,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(drain_host_events(
        host_rx,
        shutdown_rx.clone(),
    )));
    let orch = Orchestrator::new(&shared).await;
    orch.restore();
    let _ = shared.orchestrator.set(orch.clone());
    tasks.push(tokio::spawn(orch.clone().run(shutdown_rx.clone())));
    tasks.push(tokio::spawn(crate::live::run(
        shared.clone(),
        orch,
        shutdown_rx.clone(),
    )));
    let app = api::router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let mut api_shutdown = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let r = axum::serve(api_listener, app)
            .with_graceful_shutdown(async move {
                while api_shutdown.changed().await.is_ok() {
                    if *api_shutdown.borrow() {
                        break;
                    }
                }
            })
            .await;
        if let Err(e) = r {
            warn!(error = %e, "REST API server failed");
        }
    }));
    info!(%of_addr, %api_addr, "controller started");
    Ok(Running {
        shared,
        of_addr,
        api_addr,
        shutdown: shutdown_tx,
        tasks,
    })
}

/// Sends messages grouped per switch, in order, each group followed by a
/// BARRIER.
async fn dispatch(handles: &HashMap<u64, SwitchHandle>, outs: Vec<Outgoing>) {
    let mut groups: Vec<(u64, Vec<Message>)> = Vec::new();
    for o in outs {
        match groups.iter_mut().find(|(d, _)| *d == o.dpid) {
            Some((_, v)) => v.push(o.msg),
            None => groups.push((o.dpid, vec![o.msg])),
        }
    }
    for (dpid, msgs) in groups {
        if let Some(h) = handles.get(&dpid) {
            if let Err(e) = h.send_batch(msgs).await {
                debug!(dpid = %api::dpid_str(dpid), error = %e, "batch not sent");
            }
        }
    }
}

struct Core {
    shared: Arc<Shared>,
    fwd: Forwarding,
    handles: HashMap<u64, SwitchHandle>,
    pollers: HashMap<u64, JoinHandle<()>>,
    shutdown: watch::Receiver<bool>,
}

impl Core {
    fn topo_write(&self) -> std::sync::RwLockWriteGuard<'_, Topology> {
        // The core is the only writer and never panics while holding the
        // lock; recover the data if a reader panicked.
        self.shared
            .topo
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Reacts to a change of the link table and brings flows up to date.
    fn after_change(&mut self, change: &LinkChange, now: Instant) -> Vec<Outgoing> {
        let topo = self.shared.topo.read().unwrap_or_else(|p| p.into_inner());
        for (a, b) in &change.added {
            info!(src = %format!("{:016x}:{}", a.dpid, a.port), dst = %format!("{:016x}:{}", b.dpid, b.port), "link up");
        }
        for (a, b) in &change.removed {
            info!(src = %format!("{:016x}:{}", a.dpid, a.port), dst = %format!("{:016x}:{}", b.dpid, b.port), "link down");
        }
        let mut v = self.fwd.links_changed(&topo, change);
        v.extend(self.fwd.reconcile(&topo, now));
        v
    }

    async fn on_event(&mut self, ev: SwitchEvent) {
        let now = Instant::now();
        match ev {
            SwitchEvent::Connected {
                dpid,
                conn_id,
                peer,
                features,
                ports,
                description,
                handle,
            } => {
                info!(dpid = %api::dpid_str(dpid), conn_id, ports = ports.len(), "switch ready");
                let change = {
                    let mut topo = self.topo_write();
                    let ch = topo.switch_connected(dpid, conn_id, peer, features, ports, now);
                    if let Some(d) = description {
                        topo.set_description(dpid, d);
                    }
                    ch
                };
                if let Ok(mut sw) = self.shared.switches.write() {
                    sw.insert(dpid, handle.clone());
                }
                if let Some(old) = self.handles.insert(dpid, handle.clone()) {
                    if old.conn_id() != conn_id {
                        old.close().await;
                    }
                }
                let mut outs = self.fwd.switch_up(dpid);
                {
                    let topo = self.shared.topo.read().unwrap_or_else(|p| p.into_inner());
                    outs.extend(
                        self.fwd
                            .lldp_probes(&topo)
                            .into_iter()
                            .filter(|o| o.dpid == dpid),
                    );
                }
                outs.extend(self.after_change(&change, now));
                dispatch(&self.handles, outs).await;
                if let Some(p) = self.pollers.remove(&dpid) {
                    p.abort();
                }
                let poller = tokio::spawn(poll_switch(
                    handle,
                    self.shared.clone(),
                    self.shutdown.clone(),
                ));
                self.pollers.insert(dpid, poller);
            }
            SwitchEvent::Disconnected {
                dpid,
                conn_id,
                reason,
            } => {
                let change = self.topo_write().switch_disconnected(dpid, conn_id);
                let Some(change) = change else {
                    debug!(dpid = %api::dpid_str(dpid), conn_id, "stale disconnect ignored");
                    return;
                };
                info!(dpid = %api::dpid_str(dpid), %reason, "switch state cleared");
                if self
                    .handles
                    .get(&dpid)
                    .is_some_and(|h| h.conn_id() == conn_id)
                {
                    self.handles.remove(&dpid);
                    if let Ok(mut sw) = self.shared.switches.write() {
                        sw.remove(&dpid);
                    }
                }
                if let Some(p) = self.pollers.remove(&dpid) {
                    p.abort();
                }
                self.fwd.switch_down(dpid);
                if let Ok(mut m) = self.shared.monitor.lock() {
                    m.switch_gone(dpid);
                }
                let outs = self.after_change(&change, now);
                dispatch(&self.handles, outs).await;
            }
            SwitchEvent::PacketIn { dpid, conn_id, msg } => {
                if self
                    .handles
                    .get(&dpid)
                    .is_none_or(|h| h.conn_id() != conn_id)
                {
                    return;
                }
                let res = {
                    let mut topo = self.shared.topo.write().unwrap_or_else(|p| p.into_inner());
                    self.fwd.packet_in(&mut topo, dpid, &msg, now)
                };
                let mut outs = res.out;
                if !res.links.is_empty() {
                    outs.extend(self.after_change(&res.links, now));
                }
                dispatch(&self.handles, outs).await;
            }
            SwitchEvent::PortStatus { dpid, conn_id, msg } => {
                if self
                    .handles
                    .get(&dpid)
                    .is_none_or(|h| h.conn_id() != conn_id)
                {
                    return;
                }
                let deleted = msg.reason == PortReason::Delete;
                info!(dpid = %api::dpid_str(dpid), port = msg.desc.port_no, name = %msg.desc.name, reason = ?msg.reason, up = msg.desc.is_up(), "port status");
                let port = msg.desc.port_no;
                let change = self.topo_write().port_status(dpid, deleted, msg.desc, now);
                let mut outs = self.after_change(&change, now);
                if !deleted {
                    let topo = self.shared.topo.read().unwrap_or_else(|p| p.into_inner());
                    outs.extend(self.fwd.lldp_probes(&topo).into_iter().filter(|o| {
                        o.dpid == dpid
                            && matches!(&o.msg, Message::PacketOut(p) if p.actions == vec![ofp::Action::output(port)])
                    }));
                }
                dispatch(&self.handles, outs).await;
            }
            SwitchEvent::FlowRemoved { dpid, msg } => {
                self.fwd.flow_removed(dpid, msg.cookie, &msg.match_);
            }
            SwitchEvent::Error { dpid, xid, msg } => {
                warn!(dpid = %api::dpid_str(dpid), xid, error = ?msg.kind, "switch error");
            }
        }
    }

    /// Replays PACKET_INs held for ports that are classified now.
    async fn on_replay(&mut self) {
        if self.fwd.deferred_len() == 0 {
            return;
        }
        let now = Instant::now();
        let res = {
            let mut topo = self.shared.topo.write().unwrap_or_else(|p| p.into_inner());
            self.fwd.replay_deferred(&mut topo, now)
        };
        let mut outs = res.out;
        if !res.links.is_empty() {
            outs.extend(self.after_change(&res.links, now));
        }
        dispatch(&self.handles, outs).await;
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let (probes, change) = {
            let mut topo = self.topo_write();
            let change = topo.expire_links(now, self.shared.settings.link_timeout);
            (self.fwd.lldp_probes(&topo), change)
        };
        let mut outs = probes;
        outs.extend(self.after_change(&change, now));
        dispatch(&self.handles, outs).await;
        if let Ok(mut m) = self.shared.monitor.lock() {
            m.matrix.gc();
        }
    }
}

async fn core_loop(
    shared: Arc<Shared>,
    mut events: mpsc::Receiver<SwitchEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cookie_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
        << 8;
    let fwd = Forwarding::new(
        FwdConfig {
            pair_idle_timeout_s: shared.settings.pair_idle_timeout_s,
            dest_idle_timeout_s: shared.settings.dest_idle_timeout_s,
            port_confirm: shared.settings.port_confirm,
        },
        cookie_start,
    );
    let mut lldp = tokio::time::interval(shared.settings.lldp_interval);
    lldp.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut replay = tokio::time::interval(Duration::from_millis(100));
    replay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut core = Core {
        shared,
        fwd,
        handles: HashMap::new(),
        pollers: HashMap::new(),
        shutdown: shutdown.clone(),
    };
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => core.on_event(ev).await,
                None => break,
            },
            _ = lldp.tick() => core.on_tick().await,
            _ = replay.tick() => core.on_replay().await,
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
    }
    for (_, p) in core.pollers.drain() {
        p.abort();
    }
    for (_, h) in core.handles.drain() {
        h.close().await;
    }
    info!("forwarding core stopped");
}

/// A pseudo-random fraction in [0, 1) from the datapath id and the clock,
/// for the poll start jitter.
fn jitter_fraction(dpid: u64) -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let mut x = dpid ^ nanos.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
    // SplitMix64 finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Polls one switch every interval until its connection ends.
async fn poll_switch(h: SwitchHandle, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let dpid = h.dpid();
    let interval = shared.settings.poll_interval;
    let delay = crate::monitor::first_poll_delay(interval, jitter_fraction(dpid));
    let start = tokio::time::Instant::now() + delay;
    let mut tick = tokio::time::interval_at(start, interval);
    // A tick that comes due while a poll is still waiting for its reply is
    // skipped: never two polls of one switch in flight.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    debug!(dpid = %api::dpid_str(dpid), ?delay, "poller started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() { return; }
                continue;
            }
        }
        match poll_once(&h, &shared).await {
            Ok(()) => {}
            Err(OfError::Disconnected { .. }) => return,
            Err(e) => warn!(dpid = %api::dpid_str(dpid), error = %e, "poll failed"),
        }
    }
}

async fn poll_once(h: &SwitchHandle, shared: &Shared) -> Result<(), OfError> {
    let dpid = h.dpid();
    // Pair flows only: the first-hop flows λ is read from.
    let n = h
        .poll_flows(FlowStatsRequest {
            table_id: TABLE_EDGE,
            cookie: cookie::kind_value(cookie::KIND_PAIR),
            cookie_mask: cookie::KIND_MASK,
            ..FlowStatsRequest::default()
        })
        .await?;
    debug!(dpid = %api::dpid_str(dpid), pairs = n, "flow stats");
    let mp = |body| MultipartRequest { flags: 0, body };
    let ports = h
        .multipart(mp(MultipartRequestBody::PortStats {
            port_no: ofp::port_no::ANY,
        }))
        .await?;
    if let MultipartReplyBody::PortStats(p) = ports.body {
        if let Ok(mut m) = shared.monitor.lock() {
            m.ingest_port_stats(dpid, Instant::now(), &p);
        }
    }
    match h
        .multipart(mp(MultipartRequestBody::Queue {
            port_no: ofp::port_no::ANY,
            queue_id: 0xffff_ffff,
        }))
        .await
    {
        Ok(r) => {
            if let MultipartReplyBody::Queue(q) = r.body {
                if let Ok(mut m) = shared.monitor.lock() {
                    m.ingest_queue_stats(dpid, Instant::now(), &q);
                }
            }
        }
        Err(OfError::Rejected { .. }) => {}
        Err(e) => return Err(e),
    }
    match h
        .multipart(mp(MultipartRequestBody::Meter {
            meter_id: ofp::METER_ALL,
        }))
        .await
    {
        Ok(r) => {
            if let MultipartReplyBody::Meter(ms) = r.body {
                if let Ok(mut m) = shared.monitor.lock() {
                    m.ingest_meter_stats(dpid, Instant::now(), &ms);
                }
            }
        }
        Err(OfError::Rejected { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}
