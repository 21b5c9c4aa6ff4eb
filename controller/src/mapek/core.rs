//! The forwarding core and the statistics pollers.
//!
//! One core task owns the forwarding state and applies switch events in
//! order; it shares the topology with the API through a lock held only for
//! short, non-async sections. One poller task per switch fetches flow, port,
//! queue and meter statistics every interval, starting at a random offset
//! (jitter) and never with two polls of one switch in flight; each poll's
//! duration and outcome are counted in the monitor
//! ([`crate::monitor::stats::PollStats`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ofp::{
    ControllerRole, FlowStatsRequest, Message, MultipartReplyBody, MultipartRequest,
    MultipartRequestBody, PacketIn, PortReason, PortStatus,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::knowledge::state::Knowledge;
use crate::monitor::cookie;
use crate::monitor::dpid::dpid_str;
use crate::monitor::fair::FairReceiver;
use crate::monitor::forwarding::{Forwarding, FwdConfig, Outgoing, TABLE_EDGE};
use crate::monitor::lldp::{GuardConfig, LldpGuard, LldpSecret, ProbeClock};
use crate::monitor::openflow::{OfError, SwitchEvent, SwitchHandle};
use crate::monitor::stats::PollOutcome;
use crate::monitor::topology::{EndpointLimits, Learned, LinkChange, PortRef, Topology};

/// Sends messages grouped per switch, in order, each group followed by a
/// BARRIER. Never waits for a switch: each batch is queued or dropped at
/// once (a switch whose queue is full is being disconnected by its
/// connection, which logs it).
fn dispatch(handles: &HashMap<u64, SwitchHandle>, outs: Vec<Outgoing>) {
    let mut groups: Vec<(u64, Vec<Message>)> = Vec::new();
    for o in outs {
        match groups.iter_mut().find(|(d, _)| *d == o.dpid) {
            Some((_, v)) => v.push(o.msg),
            None => groups.push((o.dpid, vec![o.msg])),
        }
    }
    for (dpid, msgs) in groups {
        if let Some(h) = handles.get(&dpid) {
            if let Err(e) = h.try_send_batch(msgs) {
                debug!(dpid = %dpid_str(dpid), error = %e, "batch not sent");
            }
        }
    }
}

/// `OFPRRFC_STALE`: a role request's generation id is older than one the
/// switch has seen.
const ROLE_STALE: u16 = 0;

/// See [`Core::may_write`].
fn may_write(knowledge: &Knowledge, roles: &HashMap<u64, RoleState>, dpid: u64) -> bool {
    let Some(g) = roles.get(&dpid).and_then(|r| r.master) else {
        return false;
    };
    knowledge.fence.master_generation(dpid) == Some(g)
}

/// What the forwarding core and the pollers need of the settings.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Forwarding timeouts and port confirmation.
    pub fwd: FwdConfig,
    /// LLDP probe interval.
    pub lldp_interval: Duration,
    /// A link not seen for this long is gone.
    pub link_timeout: Duration,
    /// Statistics polling interval.
    pub poll_interval: Duration,
    /// The key LLDP probes are authenticated with.
    pub lldp_secret: LldpSecret,
    /// Bounds of the endpoint table.
    pub endpoint_limits: EndpointLimits,
}

/// Least time between two warnings about refused MACs at one port.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

struct Core {
    knowledge: Arc<Knowledge>,
    cfg: CoreConfig,
    fwd: Forwarding,
    handles: HashMap<u64, SwitchHandle>,
    pollers: HashMap<u64, JoinHandle<()>>,
    shutdown: watch::Receiver<bool>,
    /// Per edge port: when a refused MAC was last logged, and how many were
    /// refused since (bounded by the number of ports: entries of ports
    /// without refusals for a while are dropped on the tick).
    refusal_log: HashMap<PortRef, (Instant, u64)>,
    /// When the base flows are next reconciled with the topology (None:
    /// nothing changed since the last time).
    reconcile_due: Option<Instant>,
    /// Cluster node: the role asked of and granted by each switch.
    roles: HashMap<u64, RoleState>,
    /// Where role requests report back.
    role_tx: mpsc::UnboundedSender<RoleDone>,
}

/// A cluster node's role at one switch connection.
#[derive(Debug, Clone, Copy)]
struct RoleState {
    conn_id: u64,
    /// The last role asked for, with its generation id.
    asked: Option<(ControllerRole, u64)>,
    /// MASTER granted by the switch under this generation id.
    master: Option<u64>,
    /// A request is on its way.
    in_flight: bool,
}

/// The answer to a role request.
#[derive(Debug)]
struct RoleDone {
    dpid: u64,
    conn_id: u64,
    role: ControllerRole,
    generation: u64,
    result: Result<(), OfError>,
}

/// Topology changes within this long are reconciled together: LLDP finding
/// a fabric's links one by one (4,096 of them in a k = 16 fat tree) must not
/// recompute and re-send every switch's broadcast flows for each link.
const RECONCILE_COALESCE: Duration = Duration::from_millis(100);

impl CoreConfig {
    /// The core's part of `s`, with the LLDP secret of this run.
    pub fn from_settings(s: &crate::config::Settings, lldp_secret: LldpSecret) -> Self {
        CoreConfig {
            fwd: FwdConfig {
                pair_idle_timeout_s: s.pair_idle_timeout_s,
                dest_idle_timeout_s: s.dest_idle_timeout_s,
                port_confirm: s.port_confirm,
                max_pair_flows: s.max_pair_flows,
                endpoint_idle: s.endpoint_idle,
            },
            lldp_interval: s.lldp_interval,
            link_timeout: s.link_timeout,
            poll_interval: s.poll_interval,
            lldp_secret,
            endpoint_limits: EndpointLimits {
                max_per_port: s.max_macs_per_port,
                max_total: s.max_endpoints,
            },
        }
    }
}

impl Core {
    /// Whether this node may write to `dpid` now: always for a single
    /// controller; for a cluster node only while the switch granted it
    /// MASTER under the generation the cluster currently assigns it (and
    /// its lease is valid).
    fn may_write(&self, dpid: u64) -> bool {
        may_write(&self.knowledge, &self.roles, dpid)
    }

    /// Sends `outs` to the switches this node may write to.
    fn send(&self, outs: Vec<Outgoing>) {
        if !self.knowledge.fence.is_cluster() {
            return dispatch(&self.handles, outs);
        }
        let mut withheld = 0u64;
        let outs: Vec<Outgoing> = outs
            .into_iter()
            .filter(|o| {
                let ok = self.may_write(o.dpid);
                // Still master by the switch's last answer, but the fence
                // is closed (lease ran out, mastership moved): withheld.
                if !ok && self.roles.get(&o.dpid).is_some_and(|r| r.master.is_some()) {
                    withheld += 1;
                }
                ok
            })
            .collect();
        if withheld > 0 {
            self.knowledge
                .fenced_writes
                .fetch_add(withheld, std::sync::atomic::Ordering::Relaxed);
            debug!(messages = withheld, "cluster: writes withheld by the fence");
        }
        dispatch(&self.handles, outs);
    }

    /// Cluster node: asks every connected switch for the role the cluster
    /// assigns this node (MASTER or SLAVE, with the assignment's generation
    /// id); stops writing at once to a switch it no longer masters.
    fn sync_roles(&mut self) {
        let Some(view) = self.knowledge.fence.view() else {
            return;
        };
        let valid = view.lease_valid(Instant::now());
        for (&dpid, h) in &self.handles {
            let fresh = RoleState {
                conn_id: h.conn_id(),
                asked: None,
                master: None,
                in_flight: false,
            };
            let st = self.roles.entry(dpid).or_insert(fresh);
            if st.conn_id != fresh.conn_id {
                *st = fresh;
            }
            let want = view.master_of(dpid).map(|m| {
                if m.node == view.node_id && valid {
                    (ControllerRole::Master, m.generation)
                } else {
                    (ControllerRole::Slave, m.generation)
                }
            });
            if want.map(|w| w.0) != Some(ControllerRole::Master) {
                if let Some(g) = st.master.take() {
                    info!(dpid = %dpid_str(dpid), generation = g, "cluster: mastership of this switch released");
                }
            }
            let Some((role, generation)) = want else {
                continue;
            };
            if st.in_flight || st.asked == Some((role, generation)) {
                continue;
            }
            st.asked = Some((role, generation));
            st.in_flight = true;
            let h = h.clone();
            let tx = self.role_tx.clone();
            tokio::spawn(async move {
                let result = h
                    .request(Message::RoleRequest(ofp::RoleMsg {
                        role,
                        generation_id: generation,
                    }))
                    .await
                    .map(|_| ());
                let _ = tx.send(RoleDone {
                    dpid,
                    conn_id: h.conn_id(),
                    role,
                    generation,
                    result,
                });
            });
        }
        self.roles.retain(|d, _| self.handles.contains_key(d));
        self.publish_granted();
    }

    /// A switch answered a role request.
    fn on_role_done(&mut self, done: RoleDone) {
        let Some(st) = self.roles.get_mut(&done.dpid) else {
            return;
        };
        if st.conn_id != done.conn_id {
            return;
        }
        st.in_flight = false;
        match done.result {
            Ok(()) if done.role == ControllerRole::Master => {
                if self.knowledge.fence.master_generation(done.dpid) == Some(done.generation) {
                    st.master = Some(done.generation);
                    info!(dpid = %dpid_str(done.dpid), generation = done.generation, "cluster: this node masters the switch");
                    let now = Instant::now();
                    let mut outs = self.fwd.takeover(done.dpid);
                    {
                        let topo = self
                            .knowledge
                            .topo
                            .read()
                            .unwrap_or_else(|p| p.into_inner());
                        outs.extend(self.fwd.lldp_probes_of(&topo, done.dpid, None, now));
                    }
                    self.reconcile_due = Some(now);
                    self.send(outs);
                    self.publish_granted();
                }
            }
            Ok(()) => {
                debug!(dpid = %dpid_str(done.dpid), generation = done.generation, "cluster: slave");
            }
            Err(OfError::Rejected { error, .. })
                if error.kind == ofp::ErrorKind::RoleRequestFailed(ROLE_STALE) =>
            {
                warn!(dpid = %dpid_str(done.dpid), generation = done.generation, role = ?done.role, "cluster: the switch refused the role as stale (a newer assignment exists); waiting for it");
            }
            Err(e) => {
                warn!(dpid = %dpid_str(done.dpid), generation = done.generation, role = ?done.role, error = %e, "cluster: role request failed; asking again");
                st.asked = None;
            }
        }
        self.sync_roles();
    }

    /// Publishes the switches that granted this node MASTER.
    fn publish_granted(&self) {
        let set: std::collections::BTreeSet<u64> = self
            .roles
            .iter()
            .filter(|(_, r)| r.master.is_some())
            .map(|(d, _)| *d)
            .collect();
        if let Ok(mut g) = self.knowledge.granted_masters.lock() {
            *g = set;
        }
    }

    /// Publishes the set of connected switches (a cluster node's etcd
    /// session shares it).
    fn publish_connected(&self) {
        let set: std::collections::BTreeSet<u64> = self.handles.keys().copied().collect();
        self.knowledge.connected_switches.send_if_modified(|s| {
            if *s == set {
                false
            } else {
                *s = set;
                true
            }
        });
    }

    fn topo_write(&self) -> std::sync::RwLockWriteGuard<'_, Topology> {
        // The core is the only writer and never panics while holding the
        // lock; recover the data if a reader panicked.
        self.knowledge
            .topo
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Reacts to a change of the link table and brings flows up to date.
    fn after_change(&mut self, change: &LinkChange, now: Instant) -> Vec<Outgoing> {
        let topo = self
            .knowledge
            .topo
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let end = |p: &PortRef| serde_json::json!({"dpid": dpid_str(p.dpid), "port": p.port});
        for (a, b) in &change.added {
            info!(src = %format!("{:016x}:{}", a.dpid, a.port), dst = %format!("{:016x}:{}", b.dpid, b.port), "link up");
            self.knowledge
                .events
                .publish("link_up", serde_json::json!({"src": end(a), "dst": end(b)}));
        }
        for (a, b) in &change.removed {
            info!(src = %format!("{:016x}:{}", a.dpid, a.port), dst = %format!("{:016x}:{}", b.dpid, b.port), "link down");
            self.knowledge.events.publish(
                "link_down",
                serde_json::json!({"src": end(a), "dst": end(b)}),
            );
        }
        let v = self.fwd.links_changed(&topo, change);
        if self.reconcile_due.is_none() {
            self.reconcile_due = Some(now + RECONCILE_COALESCE);
        }
        v
    }

    /// Reconciles the base flows when a change is due (see
    /// [`RECONCILE_COALESCE`]).
    fn reconcile_if_due(&mut self, now: Instant) {
        if self.reconcile_due.is_none_or(|t| now < t) {
            return;
        }
        self.reconcile_due = None;
        let outs = {
            let topo = self
                .knowledge
                .topo
                .read()
                .unwrap_or_else(|p| p.into_inner());
            self.fwd.reconcile(&topo, now)
        };
        self.send(outs);
    }

    async fn on_event(&mut self, ev: SwitchEvent) {
        let now = Instant::now();
        match ev {
            SwitchEvent::Connected { .. } => self.on_connected(ev, now).await,
            SwitchEvent::Disconnected {
                dpid,
                conn_id,
                reason,
            } => self.on_disconnected(dpid, conn_id, &reason, now).await,
            SwitchEvent::PacketIn { dpid, conn_id, msg } => {
                self.on_packet_in(dpid, conn_id, &msg, now).await
            }
            SwitchEvent::PortStatus { dpid, conn_id, msg } => {
                self.on_port_status(dpid, conn_id, msg, now).await
            }
            SwitchEvent::FlowRemoved { dpid, msg } => {
                self.fwd.flow_removed(dpid, msg.cookie, &msg.match_);
            }
            SwitchEvent::Error { dpid, xid, msg } => {
                warn!(dpid = %dpid_str(dpid), xid, error = ?msg.kind, "switch error");
            }
        }
    }

    /// A switch finished its handshake: topology, handle, pipeline, LLDP
    /// probes, and a fresh poller.
    async fn on_connected(&mut self, ev: SwitchEvent, now: Instant) {
        let SwitchEvent::Connected {
            dpid,
            conn_id,
            peer,
            features,
            ports,
            description,
            handle,
        } = ev
        else {
            return;
        };
        info!(dpid = %dpid_str(dpid), conn_id, ports = ports.len(), "switch ready");
        self.knowledge.events.publish(
            "switch_up",
            serde_json::json!({
                "dpid": dpid_str(dpid),
                "peer": peer.to_string(),
                "ports": ports.len(),
            }),
        );
        let change = {
            let mut topo = self.topo_write();
            let ch = topo.switch_connected(dpid, conn_id, peer, features, ports, now);
            if let Some(d) = description {
                topo.set_description(dpid, d);
            }
            ch
        };
        if let Ok(mut sw) = self.knowledge.switches.write() {
            sw.insert(dpid, handle.clone());
        }
        // The newest connection of a datapath id wins once its bring-up is
        // complete (an Open vSwitch restarted after a crash must win over
        // its dead connection): the older one is closed.
        if let Some(old) = self.handles.insert(dpid, handle.clone()) {
            if old.conn_id() != conn_id {
                warn!(dpid = %dpid_str(dpid), old_conn = old.conn_id(), new_conn = conn_id, %peer, "datapath id connected again: the newer connection replaces the older one, which is closed");
                old.close().await;
            }
        }
        let mut outs = self.fwd.switch_up(dpid);
        {
            let topo = self
                .knowledge
                .topo
                .read()
                .unwrap_or_else(|p| p.into_inner());
            outs.extend(self.fwd.lldp_probes_of(&topo, dpid, None, now));
        }
        outs.extend(self.after_change(&change, now));
        self.send(outs);
        if let Some(p) = self.pollers.remove(&dpid) {
            p.abort();
        }
        let poller = tokio::spawn(poll_switch(
            handle,
            self.knowledge.clone(),
            self.cfg.poll_interval,
            self.shutdown.clone(),
        ));
        self.pollers.insert(dpid, poller);
        self.publish_connected();
        self.sync_roles();
    }

    /// A switch connection ended (ignored when a newer one replaced it).
    async fn on_disconnected(&mut self, dpid: u64, conn_id: u64, reason: &str, now: Instant) {
        let change = self.topo_write().switch_disconnected(dpid, conn_id, now);
        let Some(change) = change else {
            debug!(dpid = %dpid_str(dpid), conn_id, "stale disconnect ignored");
            return;
        };
        info!(dpid = %dpid_str(dpid), %reason, "switch state cleared");
        self.knowledge.events.publish(
            "switch_down",
            serde_json::json!({"dpid": dpid_str(dpid), "reason": reason}),
        );
        if self
            .handles
            .get(&dpid)
            .is_some_and(|h| h.conn_id() == conn_id)
        {
            self.handles.remove(&dpid);
            if let Ok(mut sw) = self.knowledge.switches.write() {
                sw.remove(&dpid);
            }
        }
        if let Some(p) = self.pollers.remove(&dpid) {
            p.abort();
        }
        self.fwd.switch_down(dpid);
        if self.roles.get(&dpid).is_some_and(|r| r.conn_id == conn_id) {
            self.roles.remove(&dpid);
        }
        self.publish_connected();
        if let Ok(mut m) = self.knowledge.monitor.lock() {
            m.switch_gone(dpid);
        }
        let outs = self.after_change(&change, now);
        self.send(outs);
    }

    /// A PACKET_IN of the current connection of `dpid`.
    async fn on_packet_in(&mut self, dpid: u64, conn_id: u64, msg: &PacketIn, now: Instant) {
        if self
            .handles
            .get(&dpid)
            .is_none_or(|h| h.conn_id() != conn_id)
        {
            return;
        }
        let res = {
            let mut topo = self
                .knowledge
                .topo
                .write()
                .unwrap_or_else(|p| p.into_inner());
            self.fwd.packet_in(&mut topo, dpid, msg, now)
        };
        if let (Some(Learned::Refused(why)), Some(port)) = (res.learned, msg.in_port()) {
            self.note_refusal(PortRef { dpid, port }, why, now);
        }
        self.announce_located(&res.located);
        self.publish_pair_counters();
        if let Some(i) = res.lldp_ignored.filter(|i| i.warn) {
            warn!(
                dpid = %dpid_str(i.at.dpid),
                port = i.at.port,
                reason = i.reason.as_str(),
                claimed = %i.claimed.map(|c| format!("{}:{}", dpid_str(c.dpid), c.port)).unwrap_or_else(|| "-".into()),
                "LLDP frame ignored (further ones at this port are only counted for a minute)"
            );
        }
        let mut outs = res.out;
        if !res.links.is_empty() {
            outs.extend(self.after_change(&res.links, now));
        }
        self.send(outs);
    }

    /// Counts a refused MAC at `at` and warns at most once a
    /// [`REFUSAL_LOG_EVERY`] per port (with the count since the last one).
    fn note_refusal(&mut self, at: PortRef, why: crate::monitor::topology::Refusal, now: Instant) {
        let e = self.refusal_log.entry(at).or_insert((now, 0));
        e.1 += 1;
        let first = e.1 == 1;
        if first || now.saturating_duration_since(e.0) >= REFUSAL_LOG_EVERY {
            warn!(
                dpid = %dpid_str(at.dpid),
                port = at.port,
                reason = why.as_str(),
                refused = e.1,
                "source MACs refused at this port: frames dropped, no flow installed (next warning for this port in a minute at the earliest)"
            );
            *e = (now, 0);
        }
    }

    /// Publishes the forwarding's pair counters to the knowledge.
    fn publish_pair_counters(&self) {
        use std::sync::atomic::Ordering;
        let l = &self.knowledge.limits;
        l.pair_flows
            .store(self.fwd.pairs().len() as u64, Ordering::Relaxed);
        l.pair_flows_refused
            .store(self.fwd.pairs_refused(), Ordering::Relaxed);
    }

    /// Forgets idle endpoints, their pairs, flows and traffic-matrix rows.
    fn expire_endpoints(&mut self, now: Instant) -> Vec<Outgoing> {
        let (gone, outs) = {
            let mut topo = self
                .knowledge
                .topo
                .write()
                .unwrap_or_else(|p| p.into_inner());
            self.fwd.expire_endpoints(&mut topo, now)
        };
        if !gone.is_empty() {
            info!(count = gone.len(), "idle endpoints forgotten");
            if let Ok(mut m) = self.knowledge.monitor.lock() {
                m.matrix.forget_macs(&gone);
            }
        }
        self.refusal_log
            .retain(|_, (at, n)| *n > 0 || now.saturating_duration_since(*at) < REFUSAL_LOG_EVERY);
        self.publish_pair_counters();
        outs
    }

    /// A PORT_STATUS of the current connection of `dpid`.
    async fn on_port_status(&mut self, dpid: u64, conn_id: u64, msg: PortStatus, now: Instant) {
        if self
            .handles
            .get(&dpid)
            .is_none_or(|h| h.conn_id() != conn_id)
        {
            return;
        }
        let deleted = msg.reason == PortReason::Delete;
        info!(dpid = %dpid_str(dpid), port = msg.desc.port_no, name = %msg.desc.name, reason = ?msg.reason, up = msg.desc.is_up(), "port status");
        let port = msg.desc.port_no;
        let change = self.topo_write().port_status(dpid, deleted, msg.desc, now);
        let mut outs = self.after_change(&change, now);
        if !deleted {
            let topo = self
                .knowledge
                .topo
                .read()
                .unwrap_or_else(|p| p.into_inner());
            outs.extend(self.fwd.lldp_probes_of(&topo, dpid, Some(port), now));
        }
        self.send(outs);
    }

    /// Replays PACKET_INs held for ports that are classified now.
    async fn on_replay(&mut self) {
        if self.fwd.deferred_len() == 0 {
            return;
        }
        let now = Instant::now();
        let res = {
            let mut topo = self
                .knowledge
                .topo
                .write()
                .unwrap_or_else(|p| p.into_inner());
            self.fwd.replay_deferred(&mut topo, now)
        };
        self.announce_located(&res.located);
        let mut outs = res.out;
        if !res.links.is_empty() {
            outs.extend(self.after_change(&res.links, now));
        }
        self.send(outs);
    }

    /// Publishes endpoints found at a new place: `endpoint_moved` from a
    /// known place, `endpoint_learned` for one not known (or forgotten,
    /// e.g. when its port went away).
    fn announce_located(&self, located: &[(ofp::MacAddr, PortRef, Option<PortRef>)]) {
        let end = |p: &PortRef| serde_json::json!({"dpid": dpid_str(p.dpid), "port": p.port});
        for (mac, to, from) in located {
            match from {
                Some(f) => self.knowledge.events.publish(
                    "endpoint_moved",
                    serde_json::json!({"mac": mac.to_string(), "from": end(f), "to": end(to)}),
                ),
                None => self.knowledge.events.publish(
                    "endpoint_learned",
                    serde_json::json!({"mac": mac.to_string(), "to": end(to)}),
                ),
            };
        }
    }

    async fn on_tick(&mut self) {
        self.sync_roles();
        let now = Instant::now();
        let (probes, change) = {
            let mut topo = self.topo_write();
            let change = topo.expire_links(now, self.cfg.link_timeout);
            (self.fwd.lldp_probes(&topo, now), change)
        };
        let mut outs = probes;
        outs.extend(self.after_change(&change, now));
        outs.extend(self.expire_endpoints(now));
        self.send(outs);
        if let Ok(mut m) = self.knowledge.monitor.lock() {
            m.matrix.gc();
        }
    }
}

/// Switch events the core handles in a row before it looks at its timers
/// and control events again.
const EVENT_BATCH: usize = 64;

/// Runs the forwarding core until shutdown: connect and disconnect events
/// come on `control` (never dropped, handled first), everything else on
/// `events` (a bounded queue per connection, served in turn; the
/// connections drop and count what does not fit).
pub async fn core_loop(
    knowledge: Arc<Knowledge>,
    cfg: CoreConfig,
    mut control: mpsc::UnboundedReceiver<SwitchEvent>,
    mut events: FairReceiver<SwitchEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cookie_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
        << 8;
    let guard = LldpGuard::new(
        GuardConfig {
            secret: cfg.lldp_secret.clone(),
            max_age: cfg.link_timeout,
        },
        ProbeClock::new(
            knowledge.started,
            u64::try_from(knowledge.start_unix_ms).unwrap_or(0),
        ),
        knowledge.lldp.clone(),
    );
    let fwd = Forwarding::new(cfg.fwd.clone(), cookie_start, guard);
    knowledge
        .topo
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .set_limits(cfg.endpoint_limits);
    let mut lldp = tokio::time::interval(cfg.lldp_interval);
    lldp.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut replay = tokio::time::interval(Duration::from_millis(100));
    replay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (role_tx, mut role_rx) = mpsc::unbounded_channel();
    let mut view = knowledge.fence.subscribe();
    let mut core = Core {
        knowledge,
        cfg,
        fwd,
        handles: HashMap::new(),
        pollers: HashMap::new(),
        shutdown: shutdown.clone(),
        refusal_log: HashMap::new(),
        reconcile_due: None,
        roles: HashMap::new(),
        role_tx,
    };
    // One timer for the reconciliation, moved when its time changes (not
    // made afresh at every event).
    let reconcile = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(reconcile);
    loop {
        // Due even while events keep coming.
        core.reconcile_if_due(Instant::now());
        let due = core.reconcile_due;
        if let Some(t) = due.map(tokio::time::Instant::from) {
            if reconcile.deadline() != t {
                reconcile.as_mut().reset(t);
            }
        }
        // Switch events come last: under a flood they are always ready,
        // and the timers (LLDP probes above all: without them every link
        // times out) must still fire. Each timer fires at most once per
        // period, so the events still get nearly all the time.
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
            ev = control.recv() => match ev {
                Some(ev) => core.on_event(ev).await,
                None => break,
            },
            _ = lldp.tick() => core.on_tick().await,
            _ = replay.tick() => core.on_replay().await,
            _ = &mut reconcile, if due.is_some() => core.reconcile_if_due(Instant::now()),
            Some(done) = role_rx.recv() => core.on_role_done(done),
            r = async { view.as_mut().map(|v| v.changed()).expect("guarded").await }, if view.is_some() => {
                if r.is_err() { view = None; }
                core.sync_roles();
            }
            ev = events.recv() => match ev {
                Some(ev) => {
                    core.on_event(ev).await;
                    // More of what is queued, without going through the
                    // select (and polling every timer) for each event; the
                    // timers get their turn again after a batch.
                    for _ in 1..EVENT_BATCH {
                        tokio::task::coop::consume_budget().await;
                        let Some(ev) = events.try_recv() else { break };
                        core.on_event(ev).await;
                    }
                }
                None => break,
            },
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
async fn poll_switch(
    h: SwitchHandle,
    knowledge: Arc<Knowledge>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let dpid = h.dpid();
    let delay = crate::monitor::stats::first_poll_delay(interval, jitter_fraction(dpid));
    let start = tokio::time::Instant::now() + delay;
    let mut tick = tokio::time::interval_at(start, interval);
    // A tick that comes due while a poll is still waiting for its reply is
    // skipped: never two polls of one switch in flight.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    debug!(dpid = %dpid_str(dpid), ?delay, "poller started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() { return; }
                continue;
            }
        }
        let started = Instant::now();
        let r = poll_once(&h, &knowledge).await;
        let outcome = match &r {
            Ok(()) => PollOutcome::Done,
            // Going away: its counts are forgotten with it.
            Err(OfError::Disconnected { .. } | OfError::NotReading { .. }) => return,
            Err(OfError::Timeout { .. }) => PollOutcome::TimedOut,
            Err(_) => PollOutcome::Failed,
        };
        if let Ok(mut m) = knowledge.monitor.lock() {
            m.poll_finished(dpid, started.elapsed(), outcome);
        }
        if let Err(e) = r {
            warn!(dpid = %dpid_str(dpid), error = %e, "poll failed");
        }
    }
}

async fn poll_once(h: &SwitchHandle, knowledge: &Knowledge) -> Result<(), OfError> {
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
    debug!(dpid = %dpid_str(dpid), pairs = n, "flow stats");
    let mp = |body| MultipartRequest { flags: 0, body };
    let ports = h
        .multipart(mp(MultipartRequestBody::PortStats {
            port_no: ofp::port_no::ANY,
        }))
        .await?;
    if let MultipartReplyBody::PortStats(p) = ports.body {
        if let Ok(mut m) = knowledge.monitor.lock() {
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
                if let Ok(mut m) = knowledge.monitor.lock() {
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
                if let Ok(mut m) = knowledge.monitor.lock() {
                    m.ingest_meter_stats(dpid, Instant::now(), &ms);
                }
            }
        }
        Err(OfError::Rejected { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}
