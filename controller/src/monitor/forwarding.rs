//! Forwarding decisions as pure functions (Faucet style): topology and an
//! event in, the OpenFlow messages to send out. No I/O, no clock.
//!
//! Pipeline on every switch:
//!
//! ```text
//! table 0  65000  eth_type=LLDP                    -> CONTROLLER
//!            300  migration connection (execute)   -> meter M, output / goto 1
//!              0  *                                -> goto 1
//! table 1    200  in_port=E,eth_src=A,eth_dst=B    -> output   (pair flow, first hop only)
//!            150  in_port=L (inter-switch port)    -> goto 2   (dispatch)
//!              0  *                                -> CONTROLLER (miss: learn, install)
//! table 2    100  eth_dst=B                        -> output   (destination flow)
//!             50  in_port=T (tree port),multicast  -> other tree ports + edge ports
//!             10  multicast                        -> drop     (non-tree link: no loops)
//!              0  *                                -> CONTROLLER
//! ```
//!
//! Table 0 classifies: the executor puts the flows of a migration's TCP
//! connection there, metered to the reserved bandwidth, ahead of forwarding.
//!
//! Frames entering at an edge port never match a destination flow, so the
//! first frame of every (source MAC, destination MAC) pair reaches the
//! controller, which installs exactly one pair flow at the sender's first-hop
//! switch (idle timeout, `SEND_FLOW_REM`): the flows λ(u,v) is read from.
//! Unicast follows shortest paths; broadcast follows the spanning tree.
//!
//! LLDP frames are checked by [`crate::monitor::lldp::LldpGuard`] before
//! they may change the topology: only Shoal's own authenticated, fresh,
//! not replayed probes that did not arrive at a host's port count.
//!
//! Link changes ([`Forwarding::links_changed`]) never flush the network's
//! flows. A *cable* (a port pair, either direction) changed when it went
//! down (no direction left) or came up (its first direction seen); a
//! direction that comes or goes while the other stays changes no path. For
//! each changed cable, on the switches at its two ends, the pair and
//! destination flows that output to its port are deleted (and, for a cable
//! that came up, pair flows whose in-port it is: a port that turned out to
//! be a link); every pair flow whose recorded path uses one of its ports is
//! deleted by its exact cookie at its first hop and re-installed by
//! [`Forwarding::reconcile`] along the new shortest path. All other flows
//! stay as they are: their paths did not use the cable and are still valid.
//! Repeated changes of one cable are damped by the topology
//! ([`crate::monitor::topology::FLAP_MAX_CHANGES`] per
//! [`crate::monitor::topology::FLAP_WINDOW`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ofp::{
    flow_mod_flags, port_no, Action, FlowMod, FlowModCommand, Instruction, MacAddr, Match, Message,
    OxmField, PacketIn, PacketOut, NO_BUFFER,
};

use crate::monitor::cookie::{self, CookieJar};
use crate::monitor::lldp::{Ignored, LldpGuard, Verdict};
use crate::monitor::packet::{self, ETH_TYPE_LLDP};
use crate::monitor::topology::{Learned, LinkChange, PortRef, Topology};

/// Classification table: LLDP, metered migration connections.
pub const TABLE_CLASSIFY: u8 = 0;
/// Table of first-hop pair flows, dispatch and misses.
pub const TABLE_EDGE: u8 = 1;
/// Table of destination and broadcast flows.
pub const TABLE_FABRIC: u8 = 2;
/// Priority of migration flows in the classification table.
pub const PRIO_MIGRATION: u16 = 300;
/// Priority of the LLDP-to-controller flow.
pub const PRIO_LLDP: u16 = 65000;
/// Priority of pair flows.
pub const PRIO_PAIR: u16 = 200;
/// Priority of inter-switch dispatch flows.
pub const PRIO_DISPATCH: u16 = 150;
/// Priority of destination flows.
pub const PRIO_DEST: u16 = 100;
/// Priority of broadcast-along-the-tree flows.
pub const PRIO_BCAST: u16 = 50;
/// Priority of the multicast drop on non-tree links.
pub const PRIO_MCAST_DROP: u16 = 10;
/// Multicast bit (group bit of the first octet).
const MCAST: MacAddr = MacAddr([1, 0, 0, 0, 0, 0]);
/// Minimum time between two installs of the same pair (packet-ins that
/// were already in flight when the first install went out).
const REINSTALL_HOLDOFF: Duration = Duration::from_millis(500);

/// A message for one switch.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Datapath id of the switch.
    pub dpid: u64,
    /// The message.
    pub msg: Message,
}

/// Forwarding settings.
#[derive(Debug, Clone)]
pub struct FwdConfig {
    /// Idle timeout of pair flows, seconds.
    pub pair_idle_timeout_s: u16,
    /// Idle timeout of destination flows, seconds.
    pub dest_idle_timeout_s: u16,
    /// Edge-port confirmation delay.
    pub port_confirm: Duration,
    /// Pair flows installed at most (a new pair beyond it is forwarded by
    /// PACKET_OUT only, without a flow).
    pub max_pair_flows: usize,
    /// An endpoint not seen for this long (and neither end of an
    /// installed pair flow) is forgotten.
    pub endpoint_idle: Duration,
}

/// Default bound of installed pair flows.
pub const DEFAULT_MAX_PAIR_FLOWS: usize = 65_536;
/// Default endpoint idle timeout.
pub const DEFAULT_ENDPOINT_IDLE: Duration = Duration::from_secs(300);

impl Default for FwdConfig {
    fn default() -> Self {
        FwdConfig {
            pair_idle_timeout_s: 10,
            dest_idle_timeout_s: 30,
            port_confirm: Duration::from_millis(2500),
            max_pair_flows: DEFAULT_MAX_PAIR_FLOWS,
            endpoint_idle: DEFAULT_ENDPOINT_IDLE,
        }
    }
}

/// An installed (or to be re-installed) first-hop pair flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairFlow {
    /// Where the source is attached (switch and edge port).
    pub first_hop: PortRef,
    /// The flow's cookie.
    pub cookie: u64,
    /// Switches of the path, first hop first.
    pub path: Vec<u64>,
    /// The output port of every hop, first hop first (the last one is the
    /// destination's edge port).
    pub hops: Vec<PortRef>,
    /// Needs to be installed again (its switch reconnected, the topology
    /// changed, or an endpoint moved).
    pub stale: bool,
    /// When it was last (re)installed.
    pub installed_at: Instant,
}

/// The flows of one switch that depend only on topology.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct BaseFlows {
    dispatch: BTreeSet<u32>,
    bcast: BTreeMap<u32, Vec<u32>>,
}

/// What a PACKET_IN led to.
#[derive(Debug, Default)]
pub struct PacketInOutcome {
    /// Messages to send.
    pub out: Vec<Outgoing>,
    /// Links found (LLDP).
    pub links: LinkChange,
    /// Whether/how the source was learnt.
    pub learned: Option<Learned>,
    /// Endpoints found at a new place: (MAC, where now, where before: None
    /// for one not known before), in order; replays gather every one.
    pub located: Vec<(MacAddr, PortRef, Option<PortRef>)>,
    /// An LLDP frame that was ignored (already counted).
    pub lldp_ignored: Option<Ignored>,
}

/// Most PACKET_INs held while their port waits for classification.
const MAX_DEFERRED: usize = 512;

/// Destinations whose next hops are cached at most (a bound on memory:
/// one map of the fabric's switches each).
const PATH_CACHE_DESTS: usize = 4096;

/// See [`Forwarding::path`].
#[derive(Debug, Default)]
struct PathCache {
    version: Option<u64>,
    next: HashMap<u64, std::sync::Arc<BTreeMap<u64, u32>>>,
    adj: std::sync::Arc<Adjacency>,
}

/// [`Topology::adjacency`]: per switch, (neighbour, local port, its port).
type Adjacency = BTreeMap<u64, Vec<(u64, u32, u32)>>;
/// Spanning-tree ports per switch, shared between the users of one
/// topology version.
type SharedTree = std::sync::Arc<BTreeMap<u64, BTreeSet<u32>>>;

/// The forwarding state machine.
#[derive(Debug)]
pub struct Forwarding {
    cfg: FwdConfig,
    cookies: CookieJar,
    pairs: HashMap<(MacAddr, MacAddr), PairFlow>,
    base: HashMap<u64, BaseFlows>,
    /// PACKET_INs from ports LLDP has not classified yet, oldest first:
    /// replayed once the port is an edge port (a VM's port that just
    /// appeared, e.g. after a migration, whose first frame is its
    /// gratuitous ARP), dropped if it turns out to be an inter-switch port.
    deferred: std::collections::VecDeque<(Instant, u64, PacketIn)>,
    /// Spanning tree of the topology version it was computed for (flooding
    /// asks for it on every broadcast PACKET_IN).
    tree_cache: Option<(u64, SharedTree)>,
    /// Next hops towards each destination switch asked for, and the
    /// adjacency, for one topology version: a PACKET_IN's path costs a
    /// walk along it, not a search of the fabric.
    path_cache: PathCache,
    /// Signs our LLDP probes and checks received LLDP.
    lldp: LldpGuard,
    /// New pairs not given a flow because `max_pair_flows` were installed.
    pairs_refused: u64,
    /// No endpoint can be idle before this (the earliest last-seen time
    /// plus the idle time at the last look): the tick skips the expiry
    /// until then (last-seen times only move forward, a new endpoint is
    /// seen now).
    endpoints_idle_from: Option<Instant>,
}

fn flow_mod(
    table_id: u8,
    priority: u16,
    cookie: u64,
    match_: Match,
    ins: Vec<Instruction>,
) -> FlowMod {
    FlowMod {
        table_id,
        priority,
        cookie,
        match_,
        instructions: ins,
        ..FlowMod::default()
    }
}

fn output(port: u32) -> Instruction {
    Instruction::ApplyActions(vec![Action::output(port)])
}

fn out(dpid: u64, fm: FlowMod) -> Outgoing {
    Outgoing {
        dpid,
        msg: Message::FlowMod(fm),
    }
}

/// A FLOW_MOD deleting every flow of cookie `kind` in all tables.
fn delete_kind(dpid: u64, kind: u8) -> Outgoing {
    delete_out_port(dpid, kind, ofp::port_no::ANY)
}

/// A FLOW_MOD deleting, in all tables, every flow of cookie `kind` that
/// outputs to `port`.
fn delete_out_port(dpid: u64, kind: u8, port: u32) -> Outgoing {
    out(
        dpid,
        FlowMod {
            command: FlowModCommand::Delete,
            table_id: 0xff,
            cookie: cookie::kind_value(kind),
            cookie_mask: cookie::KIND_MASK,
            out_port: port,
            ..FlowMod::default()
        },
    )
}

/// A FLOW_MOD deleting the flow(s) of exactly this cookie in all tables.
fn delete_cookie(dpid: u64, c: u64) -> Outgoing {
    out(
        dpid,
        FlowMod {
            command: FlowModCommand::Delete,
            table_id: 0xff,
            cookie: c,
            cookie_mask: u64::MAX,
            ..FlowMod::default()
        },
    )
}

/// A FLOW_MOD deleting, in all tables, every flow whose match includes `m`
/// and whose cookie is of `kind`.
fn delete_matching(dpid: u64, kind: u8, m: Match) -> Outgoing {
    out(
        dpid,
        FlowMod {
            command: FlowModCommand::Delete,
            table_id: 0xff,
            cookie: cookie::kind_value(kind),
            cookie_mask: cookie::KIND_MASK,
            match_: m,
            ..FlowMod::default()
        },
    )
}

fn packet_out(dpid: u64, pin: &PacketIn, in_port: u32, ports: &[u32]) -> Outgoing {
    let (buffer_id, data) = if pin.buffer_id != NO_BUFFER {
        (pin.buffer_id, Vec::new())
    } else {
        (NO_BUFFER, pin.data.clone())
    };
    Outgoing {
        dpid,
        msg: Message::PacketOut(PacketOut {
            buffer_id,
            in_port,
            actions: ports.iter().map(|&p| Action::output(p)).collect(),
            data,
        }),
    }
}

/// The base pipeline of a switch: LLDP to the controller, classification,
/// table misses to the controller, multicast dropped in the fabric table.
fn base_pipeline(dpid: u64) -> Vec<Outgoing> {
    let mut v = Vec::new();
    let base = cookie::make(cookie::KIND_BASE, 0);
    let to_ctl = || output(port_no::CONTROLLER);
    v.push(out(
        dpid,
        flow_mod(
            TABLE_CLASSIFY,
            PRIO_LLDP,
            base,
            Match::new().eth_type(ETH_TYPE_LLDP),
            vec![to_ctl()],
        ),
    ));
    v.push(out(
        dpid,
        flow_mod(
            TABLE_CLASSIFY,
            0,
            base,
            Match::new(),
            vec![Instruction::GotoTable(TABLE_EDGE)],
        ),
    ));
    v.push(out(
        dpid,
        flow_mod(TABLE_EDGE, 0, base, Match::new(), vec![to_ctl()]),
    ));
    v.push(out(
        dpid,
        flow_mod(TABLE_FABRIC, 0, base, Match::new(), vec![to_ctl()]),
    ));
    v.push(out(
        dpid,
        flow_mod(
            TABLE_FABRIC,
            PRIO_MCAST_DROP,
            base,
            Match::new().with(OxmField::EthDst {
                addr: MCAST,
                mask: Some(MCAST),
            }),
            vec![],
        ),
    ));
    v
}

impl Forwarding {
    /// A new state machine; `cookie_start` seeds cookie sequence numbers
    /// (e.g. from the wall clock, so a restarted controller does not reuse
    /// cookies of flows still installed); `lldp` signs and checks LLDP.
    pub fn new(cfg: FwdConfig, cookie_start: u64, lldp: LldpGuard) -> Self {
        Forwarding {
            cfg,
            cookies: CookieJar::starting_at(cookie_start),
            pairs: HashMap::new(),
            base: HashMap::new(),
            deferred: std::collections::VecDeque::new(),
            tree_cache: None,
            path_cache: PathCache::default(),
            lldp,
            pairs_refused: 0,
            endpoints_idle_from: None,
        }
    }

    /// New pairs forwarded without a flow because
    /// [`FwdConfig::max_pair_flows`] pair flows were installed, since start.
    pub fn pairs_refused(&self) -> u64 {
        self.pairs_refused
    }

    /// Forgets the endpoints idle for [`FwdConfig::endpoint_idle`] (both
    /// ends of installed pair flows are active: their frames no longer
    /// reach the controller) with their pairs, and deletes every flow to or
    /// from them. Returns the MACs forgotten and the messages to send.
    pub fn expire_endpoints(
        &mut self,
        topo: &mut Topology,
        now: Instant,
    ) -> (Vec<MacAddr>, Vec<Outgoing>) {
        // Every tick used to collect the ends of all pairs (a million at
        // scale) whether or not any endpoint was idle.
        if self.endpoints_idle_from.is_some_and(|t| now < t) {
            return (Vec::new(), Vec::new());
        }
        let earliest = topo.endpoints_idle_from(self.cfg.endpoint_idle);
        if earliest.is_none_or(|t| now < t) {
            self.endpoints_idle_from = earliest;
            return (Vec::new(), Vec::new());
        }
        self.endpoints_idle_from = None;
        let active: std::collections::HashSet<MacAddr> = self
            .pairs
            .iter()
            .filter(|(_, p)| !p.stale)
            .flat_map(|((a, b), _)| [*a, *b])
            .collect();
        let gone = topo.expire_endpoints(now, self.cfg.endpoint_idle, |m| active.contains(m));
        if gone.is_empty() {
            return (gone, Vec::new());
        }
        let set: std::collections::HashSet<MacAddr> = gone.iter().copied().collect();
        self.pairs
            .retain(|(a, b), _| !set.contains(a) && !set.contains(b));
        let mut v = Vec::new();
        for &mac in &gone {
            v.extend(self.flow_deletes(topo, mac));
        }
        (gone, v)
    }

    /// The spanning tree of `topo`, recomputed only when it changed.
    /// [`Topology::path`] with the next hops and adjacency cached per
    /// topology version (at most [`PATH_CACHE_DESTS`] destinations).
    fn path(&mut self, topo: &Topology, src: u64, dst: u64) -> Option<Vec<(u64, Option<u32>)>> {
        let c = &mut self.path_cache;
        if c.version != Some(topo.version()) {
            c.version = Some(topo.version());
            c.next.clear();
            c.adj = std::sync::Arc::new(topo.adjacency());
        }
        if c.next.len() >= PATH_CACHE_DESTS && !c.next.contains_key(&dst) {
            c.next.clear();
        }
        let next = c
            .next
            .entry(dst)
            .or_insert_with(|| std::sync::Arc::new(topo.next_hops_to(dst)))
            .clone();
        let adj = c.adj.clone();
        topo.path_with(&next, &adj, src, dst)
    }

    fn tree(&mut self, topo: &Topology) -> SharedTree {
        match &self.tree_cache {
            // Shared, not copied: a broadcast PACKET_IN reads one switch's
            // tree ports.
            Some((v, t)) if *v == topo.version() => t.clone(),
            _ => {
                let t = std::sync::Arc::new(topo.spanning_tree());
                self.tree_cache = Some((topo.version(), t.clone()));
                t
            }
        }
    }

    /// PACKET_INs waiting for their port to be classified.
    pub fn deferred_len(&self) -> usize {
        self.deferred.len()
    }

    /// Replays deferred PACKET_INs whose port is now an edge port, drops
    /// those whose port turned out to carry a link (or vanished) and those
    /// older than the confirmation delay plus one second.
    pub fn replay_deferred(&mut self, topo: &mut Topology, now: Instant) -> PacketInOutcome {
        let mut res = PacketInOutcome::default();
        let held = std::mem::take(&mut self.deferred);
        let max_age = self.cfg.port_confirm + Duration::from_secs(1);
        for (at, dpid, pin) in held {
            let Some(port) = pin.in_port() else { continue };
            let here = PortRef { dpid, port };
            if topo.is_edge_port(here, now, self.cfg.port_confirm) {
                let r = self.packet_in(topo, dpid, &pin, now);
                res.out.extend(r.out);
                if !r.links.is_empty() {
                    res.links.added.extend(r.links.added);
                    res.links.removed.extend(r.links.removed);
                }
                if r.learned.is_some() {
                    res.learned = r.learned;
                }
                res.located.extend(r.located);
            } else if !topo.is_link_port(here)
                && topo
                    .switch(dpid)
                    .is_some_and(|s| s.ports.contains_key(&port))
                && now.saturating_duration_since(at) < max_age
            {
                self.deferred.push_back((at, dpid, pin));
            }
        }
        res
    }

    /// Installed pair flows.
    pub fn pairs(&self) -> &HashMap<(MacAddr, MacAddr), PairFlow> {
        &self.pairs
    }

    /// A switch completed its handshake: remove Shoal's forwarding flows
    /// left from an earlier connection and install the base pipeline.
    /// Topology-dependent flows follow from [`Forwarding::reconcile`].
    pub fn switch_up(&mut self, dpid: u64) -> Vec<Outgoing> {
        self.base.remove(&dpid);
        for p in self.pairs.values_mut() {
            if p.path.contains(&dpid) {
                p.stale = true;
            }
        }
        let mut v: Vec<Outgoing> = [
            cookie::KIND_BASE,
            cookie::KIND_BCAST,
            cookie::KIND_PAIR,
            cookie::KIND_DEST,
        ]
        .into_iter()
        .map(|k| delete_kind(dpid, k))
        .collect();
        v.extend(base_pipeline(dpid));
        v
    }

    /// This node became the master of a switch another node mastered (a
    /// cluster's failover or rebalancing): the base pipeline is written
    /// again (identical flows replace themselves) and the topology-dependent
    /// flows are re-sent by the next [`Forwarding::reconcile`]; the flows
    /// the previous master installed stay, so established traffic keeps
    /// flowing.
    pub fn takeover(&mut self, dpid: u64) -> Vec<Outgoing> {
        self.base.remove(&dpid);
        base_pipeline(dpid)
    }

    /// A switch disconnected: forget its flows; pairs through it will be
    /// re-installed when it is back.
    pub fn switch_down(&mut self, dpid: u64) {
        self.base.remove(&dpid);
        for p in self.pairs.values_mut() {
            if p.path.contains(&dpid) {
                p.stale = true;
            }
        }
    }

    /// Links appeared or disappeared (`topo` is the topology after the
    /// change): removes only the flows that used a changed cable (the rule
    /// is in the module documentation; their final counters arrive as
    /// FLOW_REMOVED) and marks the pairs that used it for re-installation
    /// by [`Forwarding::reconcile`] along the new shortest paths.
    pub fn links_changed(&mut self, topo: &Topology, change: &LinkChange) -> Vec<Outgoing> {
        // Ends of cables that went down (no direction left).
        let mut down: BTreeSet<PortRef> = BTreeSet::new();
        for &(a, b) in &change.removed {
            if !topo.has_link(a, b) && !topo.has_link(b, a) {
                down.extend([a, b]);
            }
        }
        // Ends of cables that came up (not just their second direction).
        let mut up: BTreeSet<PortRef> = BTreeSet::new();
        for &(a, b) in &change.added {
            let reverse_was_up = topo.has_link(b, a) && !change.added.contains(&(b, a));
            if !reverse_was_up {
                up.extend([a, b]);
            }
        }
        let changed: BTreeSet<PortRef> = down.union(&up).copied().collect();
        if changed.is_empty() {
            return Vec::new();
        }
        let live = |p: &PortRef| topo.switch(p.dpid).is_some();
        let mut v = Vec::new();
        for p in changed.iter().filter(|p| live(p)) {
            v.push(delete_out_port(p.dpid, cookie::KIND_PAIR, p.port));
            v.push(delete_out_port(p.dpid, cookie::KIND_DEST, p.port));
        }
        for p in up.iter().filter(|p| live(p)) {
            v.push(delete_matching(
                p.dpid,
                cookie::KIND_PAIR,
                Match::new().in_port(p.port),
            ));
        }
        let mut affected: Vec<(u64, u64)> = Vec::new();
        for p in self.pairs.values_mut() {
            if changed.contains(&p.first_hop) || p.hops.iter().any(|h| changed.contains(h)) {
                p.stale = true;
                affected.push((p.first_hop.dpid, p.cookie));
            }
        }
        affected.sort_unstable();
        for (dpid, c) in affected {
            if topo.switch(dpid).is_some() {
                v.push(delete_cookie(dpid, c));
            }
        }
        v
    }

    /// Brings topology-dependent flows up to date: inter-switch dispatch and
    /// broadcast-tree flows of every switch (re-sent only where they
    /// changed), and stale pairs re-installed where a path exists again.
    /// Pairs stale for longer than their idle timeout are forgotten.
    pub fn reconcile(&mut self, topo: &Topology, now: Instant) -> Vec<Outgoing> {
        let mut v = Vec::new();
        let tree = self.tree(topo);
        // Inter-switch ports of every switch, in one pass over the links.
        let mut link_ports: HashMap<u64, BTreeSet<u32>> = HashMap::new();
        for l in topo.links() {
            link_ports.entry(l.src.dpid).or_default().insert(l.src.port);
            link_ports.entry(l.dst.dpid).or_default().insert(l.dst.port);
        }
        for &dpid in topo.switches().keys() {
            let links: BTreeSet<u32> = link_ports.remove(&dpid).unwrap_or_default();
            let tree_ports = tree.get(&dpid).cloned().unwrap_or_default();
            let edges = topo.edge_ports(dpid, now, self.cfg.port_confirm);
            let bcast = tree_ports
                .iter()
                .map(|&tp| {
                    let outs: Vec<u32> = tree_ports
                        .iter()
                        .copied()
                        .filter(|&p| p != tp)
                        .chain(edges.iter().copied())
                        .collect();
                    (tp, outs)
                })
                .collect();
            let want = BaseFlows {
                dispatch: links,
                bcast,
            };
            if self.base.get(&dpid) == Some(&want) {
                continue;
            }
            v.push(delete_kind(dpid, cookie::KIND_BCAST));
            let c = cookie::make(cookie::KIND_BCAST, 0);
            for &lp in &want.dispatch {
                v.push(out(
                    dpid,
                    flow_mod(
                        TABLE_EDGE,
                        PRIO_DISPATCH,
                        c,
                        Match::new().in_port(lp),
                        vec![Instruction::GotoTable(TABLE_FABRIC)],
                    ),
                ));
            }
            for (&tp, outs) in &want.bcast {
                let actions = outs.iter().map(|&p| Action::output(p)).collect();
                v.push(out(
                    dpid,
                    flow_mod(
                        TABLE_FABRIC,
                        PRIO_BCAST,
                        c,
                        Match::new().in_port(tp).with(OxmField::EthDst {
                            addr: MCAST,
                            mask: Some(MCAST),
                        }),
                        vec![Instruction::ApplyActions(actions)],
                    ),
                ));
            }
            self.base.insert(dpid, want);
        }
        // Re-install stale pairs whose endpoints are known and reachable.
        let idle = Duration::from_secs(u64::from(self.cfg.pair_idle_timeout_s));
        let stale: Vec<(MacAddr, MacAddr)> = self
            .pairs
            .iter()
            .filter(|(_, p)| p.stale)
            .map(|(k, _)| *k)
            .collect();
        for (a, b) in stale {
            let ready = match (topo.endpoint(&a), topo.endpoint(&b)) {
                (Some(ea), Some(eb)) => {
                    topo.is_edge_port(ea.location, now, self.cfg.port_confirm)
                        && topo.is_edge_port(eb.location, now, self.cfg.port_confirm)
                }
                _ => false,
            };
            if ready {
                v.extend(self.install_pair(topo, a, b, now));
            } else if self
                .pairs
                .get(&(a, b))
                .is_some_and(|p| now.saturating_duration_since(p.installed_at) > idle)
            {
                self.pairs.remove(&(a, b));
            }
        }
        v
    }

    /// Flows for (a → b): a pair flow at a's first-hop switch and
    /// destination flows on the rest of the shortest path, installed
    /// last-hop first so that no frame overtakes its flows.
    fn install_pair(
        &mut self,
        topo: &Topology,
        a: MacAddr,
        b: MacAddr,
        now: Instant,
    ) -> Vec<Outgoing> {
        let (Some(ea), Some(eb)) = (topo.endpoint(&a), topo.endpoint(&b)) else {
            return Vec::new();
        };
        let (src, dst) = (ea.location, eb.location);
        if src == dst {
            return Vec::new();
        }
        if !self.pairs.contains_key(&(a, b)) && self.pairs.len() >= self.cfg.max_pair_flows {
            self.pairs_refused += 1;
            return Vec::new();
        }
        let Some(path) = self.path(topo, src.dpid, dst.dpid) else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for &(sw, port) in path.iter().skip(1).rev() {
            v.push(out(sw, self.dest_flow(b, port.unwrap_or(dst.port))));
        }
        let first_out = path.first().and_then(|(_, p)| *p).unwrap_or(dst.port);
        // Keep the cookie while the flow is believed installed at the same
        // place, so that an ADD replacing it never looks like a new flow.
        let cookie = match self.pairs.get(&(a, b)) {
            Some(p) if !p.stale && p.first_hop == src => p.cookie,
            _ => self.cookies.next(cookie::KIND_PAIR),
        };
        let mut fm = flow_mod(
            TABLE_EDGE,
            PRIO_PAIR,
            cookie,
            Match::new().in_port(src.port).eth_src(a).eth_dst(b),
            vec![output(first_out)],
        );
        fm.idle_timeout = self.cfg.pair_idle_timeout_s;
        fm.flags = flow_mod_flags::SEND_FLOW_REM;
        v.push(out(src.dpid, fm));
        self.pairs.insert(
            (a, b),
            PairFlow {
                first_hop: src,
                cookie,
                path: path.iter().map(|(d, _)| *d).collect(),
                hops: path
                    .iter()
                    .map(|&(dpid, port)| PortRef {
                        dpid,
                        port: port.unwrap_or(dst.port),
                    })
                    .collect(),
                stale: false,
                installed_at: now,
            },
        );
        v
    }

    fn dest_flow(&self, b: MacAddr, port: u32) -> FlowMod {
        let mut fm = flow_mod(
            TABLE_FABRIC,
            PRIO_DEST,
            cookie::make(cookie::KIND_DEST, 0),
            Match::new().eth_dst(b),
            vec![output(port)],
        );
        fm.idle_timeout = self.cfg.dest_idle_timeout_s;
        fm
    }

    /// Ports to flood to at `dpid` for a frame that entered at `in_port`:
    /// spanning-tree ports and confirmed edge ports, never back out of
    /// `in_port`; nothing when it entered on a link outside the tree.
    fn flood_ports(&mut self, topo: &Topology, dpid: u64, in_port: u32, now: Instant) -> Vec<u32> {
        let tree_ports = self.tree(topo).get(&dpid).cloned().unwrap_or_default();
        let at = PortRef {
            dpid,
            port: in_port,
        };
        if topo.is_link_port(at) && !tree_ports.contains(&in_port) {
            return Vec::new();
        }
        let mut ports: BTreeSet<u32> = tree_ports;
        ports.extend(topo.edge_ports(dpid, now, self.cfg.port_confirm));
        ports.remove(&in_port);
        ports.into_iter().collect()
    }

    /// Handles a PACKET_IN from `dpid`.
    pub fn packet_in(
        &mut self,
        topo: &mut Topology,
        dpid: u64,
        pin: &PacketIn,
        now: Instant,
    ) -> PacketInOutcome {
        let mut res = PacketInOutcome::default();
        let Some(in_port) = pin.in_port() else {
            return res;
        };
        let Ok(frame) = packet::parse_frame(&pin.data) else {
            return res;
        };
        if frame.ethertype == ETH_TYPE_LLDP {
            let at = PortRef {
                dpid,
                port: in_port,
            };
            let confirm = self.cfg.port_confirm;
            let hosts = |p: PortRef| topo.hosts_at(p, now, confirm);
            match self.lldp.check(&pin.data, at, hosts, now) {
                Verdict::Accept { src } => res.links = topo.lldp_seen(src, at, now),
                Verdict::Ignore(i) => res.lldp_ignored = Some(i),
            }
            return res;
        }
        let at = PortRef {
            dpid,
            port: in_port,
        };
        let edge = topo.is_edge_port(at, now, self.cfg.port_confirm);
        if !edge && !topo.is_link_port(at) {
            // A port LLDP has not had the time to classify: neither learn
            // nor flood now, or a loop of undiscovered links could storm;
            // hold the frame until the port is classified.
            if self.deferred.len() >= MAX_DEFERRED {
                self.deferred.pop_front();
            }
            self.deferred.push_back((now, dpid, pin.clone()));
            return res;
        }
        if edge {
            let learned = topo.learn(frame.src, frame.src_ip, at, now, self.cfg.port_confirm);
            res.learned = Some(learned);
            match learned {
                Learned::New => res.located.push((frame.src, at, None)),
                Learned::Moved { from } => res.located.push((frame.src, at, Some(from))),
                _ => {}
            }
            match learned {
                Learned::Moved { .. } => res.out.extend(self.endpoint_moved(topo, frame.src)),
                // Over a limit: the frame is dropped (no flood, no flow).
                Learned::Refused(_) => return res,
                _ => {}
            }
        }
        if frame.is_multicast() {
            let ports = self.flood_ports(topo, dpid, in_port, now);
            if !ports.is_empty() {
                res.out.push(packet_out(dpid, pin, in_port, &ports));
            }
            return res;
        }
        let Some(dst) = topo.endpoint(&frame.dst).map(|e| e.location) else {
            let ports = self.flood_ports(topo, dpid, in_port, now);
            if !ports.is_empty() {
                res.out.push(packet_out(dpid, pin, in_port, &ports));
            }
            return res;
        };
        if dst == at {
            return res;
        }
        let Some(path) = self.path(topo, dpid, dst.dpid) else {
            return res;
        };
        let first_out = path.first().and_then(|(_, p)| *p).unwrap_or(dst.port);
        if edge {
            let key = (frame.src, frame.dst);
            let recent = self.pairs.get(&key).is_some_and(|p| {
                !p.stale
                    && p.first_hop == at
                    && now.saturating_duration_since(p.installed_at) < REINSTALL_HOLDOFF
            });
            if !recent {
                res.out
                    .extend(self.install_pair(topo, frame.src, frame.dst, now));
            }
        } else {
            for &(sw, port) in path.iter().rev() {
                res.out
                    .push(out(sw, self.dest_flow(frame.dst, port.unwrap_or(dst.port))));
            }
        }
        res.out.push(packet_out(dpid, pin, in_port, &[first_out]));
        res
    }

    /// An endpoint moved: remove every flow to or from it on all switches
    /// (their final counters arrive as FLOW_REMOVED) and mark its pairs for
    /// re-installation along the new paths.
    pub fn endpoint_moved(&mut self, topo: &Topology, mac: MacAddr) -> Vec<Outgoing> {
        for ((a, b), p) in self.pairs.iter_mut() {
            if *a == mac || *b == mac {
                p.stale = true;
            }
        }
        self.flow_deletes(topo, mac)
    }

    /// Deletes of every pair and destination flow to or from `mac`, on all
    /// switches.
    fn flow_deletes(&self, topo: &Topology, mac: MacAddr) -> Vec<Outgoing> {
        let mut v = Vec::new();
        for &d in topo.switches().keys() {
            v.push(delete_matching(
                d,
                cookie::KIND_PAIR,
                Match::new().eth_src(mac),
            ));
            v.push(delete_matching(
                d,
                cookie::KIND_PAIR,
                Match::new().eth_dst(mac),
            ));
            v.push(delete_matching(
                d,
                cookie::KIND_DEST,
                Match::new().eth_dst(mac),
            ));
        }
        v
    }

    /// A FLOW_REMOVED arrived: forget the pair whose current flow it was.
    pub fn flow_removed(&mut self, dpid: u64, cookie: u64, m: &Match) {
        if cookie::kind_of(cookie) != Some(cookie::KIND_PAIR) {
            return;
        }
        if let (Some(a), Some(b)) = (m.get_eth_src(), m.get_eth_dst()) {
            if let Some(p) = self.pairs.get(&(a, b)) {
                if p.cookie == cookie && p.first_hop.dpid == dpid && !p.stale {
                    self.pairs.remove(&(a, b));
                }
            }
        }
    }

    /// LLDP probes out of every live port of every switch, authenticated
    /// and stamped with the probe clock at `now`.
    pub fn lldp_probes(&self, topo: &Topology, now: Instant) -> Vec<Outgoing> {
        let mut v = Vec::new();
        for &dpid in topo.switches().keys() {
            self.lldp_probes_into(topo, dpid, None, now, &mut v);
        }
        v
    }

    /// The LLDP probes of one switch only (`port`: of one port only): a
    /// switch that connects or a port that comes up is probed without
    /// building the probes of the whole fabric.
    pub fn lldp_probes_of(
        &self,
        topo: &Topology,
        dpid: u64,
        port: Option<u32>,
        now: Instant,
    ) -> Vec<Outgoing> {
        let mut v = Vec::new();
        self.lldp_probes_into(topo, dpid, port, now, &mut v);
        v
    }

    fn lldp_probes_into(
        &self,
        topo: &Topology,
        dpid: u64,
        only: Option<u32>,
        now: Instant,
        v: &mut Vec<Outgoing>,
    ) {
        let Some(sw) = topo.switches().get(&dpid) else {
            return;
        };
        for (&port, st) in &sw.ports {
            if !st.desc.is_up() || only.is_some_and(|p| p != port) {
                continue;
            }
            v.push(Outgoing {
                dpid,
                msg: Message::PacketOut(PacketOut {
                    buffer_id: NO_BUFFER,
                    in_port: port_no::CONTROLLER,
                    actions: vec![Action::output(port)],
                    data: self.lldp.probe(dpid, port, st.desc.hw_addr, now),
                }),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::lldp::IgnoreReason;
    use crate::monitor::topology::tests::{build, port, pr, triangle};
    use ofp::PacketInReason;
    use std::net::Ipv4Addr;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0, 0, 0, 0, 0, n])
    }

    fn fresh() -> Forwarding {
        Forwarding::new(
            FwdConfig::default(),
            0,
            crate::monitor::lldp::tests::guard(Instant::now()),
        )
    }

    fn eth(dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.resize(60, 0);
        f
    }

    fn pin(in_port: u32, data: Vec<u8>) -> PacketIn {
        PacketIn {
            buffer_id: NO_BUFFER,
            total_len: data.len() as u16,
            reason: PacketInReason::NoMatch,
            table_id: 0,
            cookie: 0,
            match_: Match::new().in_port(in_port),
            data,
        }
    }

    fn flow_mods(v: &[Outgoing]) -> Vec<(u64, &FlowMod)> {
        v.iter()
            .filter_map(|o| match &o.msg {
                Message::FlowMod(fm) => Some((o.dpid, fm)),
                _ => None,
            })
            .collect()
    }

    fn adds(v: &[Outgoing]) -> Vec<(u64, &FlowMod)> {
        flow_mods(v)
            .into_iter()
            .filter(|(_, f)| f.command == FlowModCommand::Add)
            .collect()
    }

    fn outputs(fm: &FlowMod) -> Vec<u32> {
        fm.instructions
            .iter()
            .flat_map(|i| match i {
                Instruction::ApplyActions(a) => a.clone(),
                _ => vec![],
            })
            .filter_map(|a| match a {
                Action::Output { port, .. } => Some(port),
                _ => None,
            })
            .collect()
    }

    fn packet_outs(v: &[Outgoing]) -> Vec<(u64, &PacketOut)> {
        v.iter()
            .filter_map(|o| match &o.msg {
                Message::PacketOut(p) => Some((o.dpid, p)),
                _ => None,
            })
            .collect()
    }

    /// Line s1 - s2 - s3 (s1:2-s2:2, s2:3-s3:2), hosts on port 1 of s1/s3
    /// and port 4 of s1 (the same "hypervisor" bridge as port 1).
    fn setup() -> (Topology, Forwarding, Instant) {
        let t0 = Instant::now();
        let topo = build(
            t0,
            &[(1, 4), (2, 3), (3, 3)],
            &[((1, 2), (2, 2)), ((2, 3), (3, 2))],
        );
        let fwd = fresh();
        (topo, fwd, t0 + Duration::from_secs(3))
    }

    #[test]
    fn switch_up_installs_base_pipeline() {
        let mut f = fresh();
        let v = f.switch_up(7);
        let dels = flow_mods(&v)
            .iter()
            .filter(|(_, f)| f.command == FlowModCommand::Delete)
            .count();
        assert_eq!(dels, 4);
        let a = adds(&v);
        assert!(a.iter().all(|(d, _)| *d == 7));
        let lldp = a.iter().find(|(_, f)| f.priority == PRIO_LLDP).unwrap();
        assert_eq!(lldp.1.match_.get_eth_type(), Some(ETH_TYPE_LLDP));
        assert_eq!(outputs(lldp.1), vec![port_no::CONTROLLER]);
        // Classification falls through to forwarding.
        let fall = a
            .iter()
            .find(|(_, f)| f.table_id == TABLE_CLASSIFY && f.priority == 0)
            .unwrap();
        assert_eq!(
            fall.1.instructions,
            vec![Instruction::GotoTable(TABLE_EDGE)]
        );
        // Table-miss in both forwarding tables goes to the controller.
        for t in [TABLE_EDGE, TABLE_FABRIC] {
            let miss = a
                .iter()
                .find(|(_, f)| f.table_id == t && f.priority == 0)
                .unwrap();
            assert_eq!(outputs(miss.1), vec![port_no::CONTROLLER]);
        }
    }

    #[test]
    fn reconcile_installs_tree_broadcast_once() {
        let t0 = Instant::now();
        let topo = triangle(t0);
        let mut f = fresh();
        let now = t0 + Duration::from_secs(3);
        let v = f.reconcile(&topo, now);
        let a = adds(&v);
        // Tree from s1: s1-s2 (2/2), s1-s3 (3/3); s2:3-s3:2 is a redundant link.
        let bc: Vec<_> = a
            .iter()
            .filter(|(_, f)| f.priority == PRIO_BCAST)
            .map(|(d, f)| (*d, f.match_.get_in_port().unwrap(), outputs(f)))
            .collect();
        assert!(bc.contains(&(1, 2, vec![3, 1])));
        assert!(bc.contains(&(1, 3, vec![2, 1])));
        assert!(bc.contains(&(2, 2, vec![1])));
        assert!(bc.contains(&(3, 3, vec![1])));
        // No broadcast flow for the non-tree link: its frames hit the drop.
        assert!(!bc
            .iter()
            .any(|(d, p, _)| (*d, *p) == (2, 3) || (*d, *p) == (3, 2)));
        // Dispatch flows for every inter-switch port (tree or not).
        let disp: BTreeSet<_> = a
            .iter()
            .filter(|(_, f)| f.priority == PRIO_DISPATCH)
            .map(|(d, f)| (*d, f.match_.get_in_port().unwrap()))
            .collect();
        assert_eq!(
            disp,
            BTreeSet::from([(1, 2), (1, 3), (2, 2), (2, 3), (3, 2), (3, 3)])
        );
        // Nothing changed: nothing re-sent.
        assert!(f.reconcile(&topo, now).is_empty());
    }

    #[test]
    fn cached_paths_follow_topology_changes() {
        let t0 = Instant::now();
        let mut topo = triangle(t0);
        let mut f = fresh();
        for (a, b) in [(1, 3), (3, 1), (2, 3), (1, 1)] {
            assert_eq!(f.path(&topo, a, b), topo.path(a, b));
        }
        assert_eq!(f.path(&topo, 1, 3), Some(vec![(1, Some(3)), (3, None)]));
        // s1:3 goes away: s1 reaches s3 through s2 now, cached or not.
        topo.port_status(1, true, port(3), t0);
        assert_eq!(
            f.path(&topo, 1, 3),
            Some(vec![(1, Some(2)), (2, Some(3)), (3, None)])
        );
        assert_eq!(f.path(&topo, 1, 3), topo.path(1, 3));
        assert_eq!(f.path(&topo, 3, 1), topo.path(3, 1));
        // LLDP probes of one switch (one port) are those of the fabric's.
        let all = f.lldp_probes(&topo, t0);
        let of2 = f.lldp_probes_of(&topo, 2, None, t0);
        assert_eq!(of2.len(), 3);
        assert!(of2.iter().all(|o| all.contains(o)));
        assert_eq!(f.lldp_probes_of(&topo, 2, Some(3), t0).len(), 1);
        assert!(f.lldp_probes_of(&topo, 9, None, t0).is_empty());
    }

    #[test]
    fn unconfirmed_ports_neither_learn_nor_flood_until_confirmed() {
        let t0 = Instant::now();
        let mut topo = triangle(t0);
        let mut f = fresh();
        let r = f.packet_in(&mut topo, 1, &pin(1, eth(MacAddr::BROADCAST, mac(1))), t0);
        assert!(r.out.is_empty());
        assert!(topo.endpoint(&mac(1)).is_none());
        // A frame at s2:1 too, which LLDP then finds to be a link port.
        f.packet_in(&mut topo, 2, &pin(1, eth(MacAddr::BROADCAST, mac(2))), t0);
        assert_eq!(f.deferred_len(), 2);
        // Still pending: nothing happens.
        let r = f.replay_deferred(&mut topo, t0 + Duration::from_millis(100));
        assert!(r.out.is_empty() && f.deferred_len() == 2);
        topo.lldp_seen(pr(3, 1), pr(2, 1), t0);
        // Confirmed: the held frame is learnt and flooded; the one at the
        // link port is dropped.
        let r = f.replay_deferred(&mut topo, t0 + Duration::from_secs(3));
        assert_eq!(r.learned, Some(Learned::New));
        assert_eq!(packet_outs(&r.out).len(), 1);
        assert!(topo.endpoint(&mac(1)).is_some());
        assert!(topo.endpoint(&mac(2)).is_none());
        assert_eq!(f.deferred_len(), 0);
    }

    #[test]
    fn broadcast_from_edge_learns_and_floods_along_tree() {
        let t0 = Instant::now();
        let mut topo = triangle(t0);
        let mut f = fresh();
        let now = t0 + Duration::from_secs(3);
        let r = f.packet_in(&mut topo, 2, &pin(1, eth(MacAddr::BROADCAST, mac(2))), now);
        assert_eq!(r.learned, Some(Learned::New));
        let po = packet_outs(&r.out);
        assert_eq!(po.len(), 1);
        // s2's tree port is 2 (to s1); port 3 (to s3) is not in the tree.
        let ports: Vec<u32> = po[0]
            .1
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Output { port, .. } => Some(*port),
                _ => None,
            })
            .collect();
        assert_eq!(ports, vec![2]);
        assert_eq!(po[0].1.in_port, 1);
        // A broadcast arriving on the non-tree link is not flooded.
        let r = f.packet_in(&mut topo, 2, &pin(3, eth(MacAddr::BROADCAST, mac(3))), now);
        assert!(r.out.is_empty());
        assert!(topo.endpoint(&mac(3)).is_none(), "learnt at a link port");
    }

    fn spray(i: u32) -> MacAddr {
        let b = i.to_be_bytes();
        MacAddr([0x02, 0xbb, b[0], b[1], b[2], b[3]])
    }

    /// 100,000 random source MACs at one edge port, half unicast to a
    /// known host, half broadcast: a bounded number is learnt and given a
    /// flow; the rest is dropped without a flood or a flow.
    #[test]
    fn a_mac_spray_installs_no_flow_beyond_the_port_limit() {
        let (mut topo, mut f, now) = setup();
        topo.set_limits(crate::monitor::topology::EndpointLimits {
            max_per_port: 16,
            max_total: 1000,
        });
        f.packet_in(&mut topo, 3, &pin(1, eth(MacAddr::BROADCAST, mac(3))), now);
        let (mut flows, mut outs) = (0, 0);
        for i in 0..100_000 {
            let dst = if i % 2 == 0 {
                mac(3)
            } else {
                MacAddr::BROADCAST
            };
            let r = f.packet_in(&mut topo, 1, &pin(1, eth(dst, spray(i))), now);
            flows += adds(&r.out).len();
            outs += packet_outs(&r.out).len();
        }
        assert_eq!(topo.endpoint_count(), 17);
        assert!(f.pairs().len() <= 16, "{} pairs", f.pairs().len());
        // Per learnt unicast MAC: s3 dest, s2 dest, the s1 pair flow.
        assert!(flows <= 16 * 3, "{flows} flows installed");
        assert!(outs <= 16, "{outs} frames forwarded");
        assert_eq!(topo.endpoint_counters().refused_port_full, 100_000 - 16);
    }

    #[test]
    fn pair_flows_are_bounded_and_idle_endpoints_expire_with_their_flows() {
        let (mut topo, _, now) = setup();
        let cfg = FwdConfig {
            max_pair_flows: 2,
            endpoint_idle: Duration::from_secs(60),
            ..FwdConfig::default()
        };
        let mut f = Forwarding::new(cfg, 0, crate::monitor::lldp::tests::guard(now));
        f.packet_in(&mut topo, 3, &pin(1, eth(MacAddr::BROADCAST, mac(3))), now);
        for i in 1..=4 {
            f.packet_in(&mut topo, 1, &pin(1, eth(mac(3), spray(i))), now);
        }
        assert_eq!(f.pairs().len(), 2);
        assert_eq!(f.pairs_refused(), 2);
        // Nothing idle yet.
        let (gone, _) = f.expire_endpoints(&mut topo, now + Duration::from_secs(59));
        assert!(gone.is_empty());
        // A host first seen after that look is not idle at the next one
        // (nor skipped at a later one: see the end).
        let late = now + Duration::from_secs(59);
        f.packet_in(&mut topo, 3, &pin(3, eth(MacAddr::BROADCAST, mac(9))), late);
        // Both ends of the two pair flows are active; the two sources
        // without a flow expire, with their flows.
        let (mut gone, v) = f.expire_endpoints(&mut topo, now + Duration::from_secs(61));
        gone.sort();
        assert_eq!(gone, vec![spray(3), spray(4)]);
        assert_eq!(f.pairs().len(), 2);
        assert!(flow_mods(&v)
            .iter()
            .all(|(_, fm)| fm.command == FlowModCommand::Delete));
        assert!(flow_mods(&v)
            .iter()
            .any(|(_, fm)| fm.match_.get_eth_src() == Some(spray(3))));
        assert_eq!(topo.endpoint_count(), 4);
        // Once their flows are gone (FLOW_REMOVED), the rest expires too,
        // with its pairs.
        for k in [(spray(1), mac(3)), (spray(2), mac(3))] {
            let c = f.pairs()[&k].cookie;
            f.flow_removed(1, c, &Match::new().eth_src(k.0).eth_dst(k.1));
        }
        let (gone, _) = f.expire_endpoints(&mut topo, now + Duration::from_secs(100));
        assert!(
            gone.is_empty(),
            "{gone:?}: refreshed at 61 s, the late host seen at 59 s"
        );
        let (mut gone, _) = f.expire_endpoints(&mut topo, now + Duration::from_secs(200));
        gone.sort();
        assert_eq!(gone, vec![mac(3), mac(9), spray(1), spray(2)]);
        assert_eq!(topo.endpoint_count(), 0);
        assert!(f.pairs().is_empty());
    }

    #[test]
    fn unicast_installs_pair_at_first_hop_and_dest_flows_elsewhere() {
        let (mut topo, mut f, now) = setup();
        // h3 (s3:1) speaks first so it is known.
        f.packet_in(&mut topo, 3, &pin(1, eth(MacAddr::BROADCAST, mac(3))), now);
        let r = f.packet_in(&mut topo, 1, &pin(1, eth(mac(3), mac(1))), now);
        let a = adds(&r.out);
        // Last hop first: s3 dest, s2 dest, then the s1 pair flow.
        let order: Vec<u64> = a.iter().map(|(d, _)| *d).collect();
        assert_eq!(order, vec![3, 2, 1]);
        let (_, pair) = a[2];
        assert_eq!(pair.table_id, TABLE_EDGE);
        assert_eq!(pair.priority, PRIO_PAIR);
        assert_eq!(pair.match_.get_in_port(), Some(1));
        assert_eq!(pair.match_.get_eth_src(), Some(mac(1)));
        assert_eq!(pair.match_.get_eth_dst(), Some(mac(3)));
        assert_eq!(
            pair.flags & flow_mod_flags::SEND_FLOW_REM,
            flow_mod_flags::SEND_FLOW_REM
        );
        assert_eq!(pair.idle_timeout, 10);
        assert_eq!(cookie::kind_of(pair.cookie), Some(cookie::KIND_PAIR));
        assert_eq!(outputs(pair), vec![2]);
        let (_, s2) = a[1];
        assert_eq!(s2.table_id, TABLE_FABRIC);
        assert_eq!(s2.match_.get_eth_dst(), Some(mac(3)));
        assert_eq!(s2.match_.get_eth_src(), None);
        assert_eq!(outputs(s2), vec![3]);
        assert_eq!(outputs(a[0].1), vec![1]);
        // And the frame itself goes out toward s2.
        let po = packet_outs(&r.out);
        assert_eq!(po.len(), 1);
        assert_eq!(po[0].0, 1);
        // A duplicate packet-in right after does not re-install.
        let r2 = f.packet_in(&mut topo, 1, &pin(1, eth(mac(3), mac(1))), now);
        assert!(adds(&r2.out).is_empty());
        assert_eq!(packet_outs(&r2.out).len(), 1);
    }

    #[test]
    fn same_bridge_pair_is_one_local_flow() {
        let (mut topo, mut f, now) = setup();
        f.packet_in(&mut topo, 1, &pin(4, eth(MacAddr::BROADCAST, mac(4))), now);
        let r = f.packet_in(&mut topo, 1, &pin(1, eth(mac(4), mac(1))), now);
        let a = adds(&r.out);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, 1);
        assert_eq!(outputs(a[0].1), vec![4]);
    }

    #[test]
    fn unknown_destination_is_flooded_not_installed() {
        let (mut topo, mut f, now) = setup();
        let r = f.packet_in(&mut topo, 1, &pin(1, eth(mac(9), mac(1))), now);
        assert!(adds(&r.out).is_empty());
        assert_eq!(packet_outs(&r.out).len(), 1);
    }

    #[test]
    fn move_deletes_flows_everywhere_and_reinstalls_along_new_path() {
        let (mut topo, mut f, now) = setup();
        f.packet_in(&mut topo, 3, &pin(1, eth(MacAddr::BROADCAST, mac(3))), now);
        f.packet_in(&mut topo, 1, &pin(1, eth(mac(3), mac(1))), now);
        let old_cookie = f.pairs()[&(mac(1), mac(3))].cookie;
        // h3 migrates to s1:4 and announces itself with a gratuitous ARP.
        let garp = packet::build_gratuitous_arp(mac(3), Ipv4Addr::new(10, 0, 0, 3));
        let r = f.packet_in(&mut topo, 1, &pin(4, garp), now);
        assert_eq!(r.learned, Some(Learned::Moved { from: pr(3, 1) }));
        let dels: Vec<_> = flow_mods(&r.out)
            .into_iter()
            .filter(|(_, f)| f.command == FlowModCommand::Delete)
            .collect();
        assert_eq!(dels.len(), 9, "3 deletes on each of 3 switches");
        assert!(f.pairs()[&(mac(1), mac(3))].stale);
        // Reconcile re-installs the pair as a local flow on s1 with a new cookie.
        let v = f.reconcile(&topo, now);
        let pair = adds(&v)
            .into_iter()
            .find(|(_, fm)| fm.priority == PRIO_PAIR)
            .unwrap();
        assert_eq!(pair.0, 1);
        assert_eq!(outputs(pair.1), vec![4]);
        assert_ne!(pair.1.cookie, old_cookie);
        // A FLOW_REMOVED of the old flow does not forget the new one.
        let m = Match::new().in_port(1).eth_src(mac(1)).eth_dst(mac(3));
        f.flow_removed(1, old_cookie, &m);
        assert!(f.pairs().contains_key(&(mac(1), mac(3))));
        f.flow_removed(1, pair.1.cookie, &m);
        assert!(!f.pairs().contains_key(&(mac(1), mac(3))));
    }

    #[test]
    fn reconnect_marks_pairs_stale_and_reinstalls() {
        let (mut topo, mut f, now) = setup();
        f.packet_in(&mut topo, 3, &pin(1, eth(MacAddr::BROADCAST, mac(3))), now);
        f.packet_in(&mut topo, 1, &pin(1, eth(mac(3), mac(1))), now);
        f.switch_down(2);
        assert!(f.pairs()[&(mac(1), mac(3))].stale);
        // While s2 is away there is no path: nothing installed, pair kept.
        let sw2 = topo.switch(2).unwrap().clone();
        topo.switch_disconnected(2, sw2.conn_id, now);
        assert!(adds(&f.reconcile(&topo, now))
            .iter()
            .all(|(_, fm)| fm.priority != PRIO_PAIR));
        assert!(f.pairs().contains_key(&(mac(1), mac(3))));
        // s2 is back and LLDP found its links again.
        let ports = sw2.ports.values().map(|p| p.desc.clone()).collect();
        topo.switch_connected(2, 99, sw2.peer, sw2.features, ports, now);
        for (a, b) in [(pr(1, 2), pr(2, 2)), (pr(2, 3), pr(3, 2))] {
            topo.lldp_seen(a, b, now);
            topo.lldp_seen(b, a, now);
        }
        let later = now + Duration::from_secs(3);
        let v = f.reconcile(&topo, later);
        let pair = adds(&v)
            .into_iter()
            .find(|(_, fm)| fm.priority == PRIO_PAIR)
            .unwrap();
        assert_eq!(pair.0, 1);
        assert!(!f.pairs()[&(mac(1), mac(3))].stale);
    }

    /// Line s1 - s2 - s3 (s1:2-s2:2, s2:3-s3:2), one host on port 1 of
    /// each switch, flows installed for h1 -> h2 (over s1-s2 only) and
    /// h2 -> h3 (over s2-s3 only).
    fn two_pairs() -> (Topology, Forwarding, Instant) {
        let (mut topo, mut f, now) = setup();
        for d in [1u64, 2, 3] {
            f.packet_in(
                &mut topo,
                d,
                &pin(1, eth(MacAddr::BROADCAST, mac(d as u8))),
                now,
            );
        }
        f.packet_in(&mut topo, 1, &pin(1, eth(mac(2), mac(1))), now);
        f.packet_in(&mut topo, 2, &pin(1, eth(mac(3), mac(2))), now);
        assert_eq!(f.pairs().len(), 2);
        (topo, f, now)
    }

    /// True for a DELETE that would remove every flow of a kind on its
    /// switch (no match, any output port, no exact cookie).
    fn deletes_a_whole_kind(fm: &FlowMod) -> bool {
        fm.command == FlowModCommand::Delete
            && fm.match_ == Match::new()
            && fm.out_port == port_no::ANY
            && fm.cookie_mask != u64::MAX
    }

    #[test]
    fn link_removal_deletes_only_the_flows_on_that_link() {
        let (mut topo, mut f, now) = two_pairs();
        let c23 = f.pairs()[&(mac(2), mac(3))].cookie;
        // The s2-s3 cable goes down (s3:2 reports LINK_DOWN).
        let mut down = topo.switch(3).unwrap().ports[&2].desc.clone();
        down.state = 1;
        let change = topo.port_status(3, false, down, now);
        assert_eq!(change.removed.len(), 2);
        let v = f.links_changed(&topo, &change);
        let dels: Vec<(u64, &FlowMod)> = flow_mods(&v)
            .into_iter()
            .filter(|(_, fm)| fm.command == FlowModCommand::Delete)
            .collect();
        assert!(!dels.is_empty(), "the flows over s2-s3 must go");
        for (d, fm) in &dels {
            assert!(!deletes_a_whole_kind(fm), "flush on s{d}: {fm:?}");
            // Each delete names the changed link's port on its switch, or
            // the exact cookie of the pair that used it.
            let on_link = (*d, fm.out_port) == (2, 3) || (*d, fm.out_port) == (3, 2);
            let exact = fm.cookie == c23 && fm.cookie_mask == u64::MAX;
            assert!(on_link || exact, "unrelated delete on s{d}: {fm:?}");
        }
        assert!(dels.iter().all(|(d, _)| *d != 1), "s1 is not on the link");
        // Only the pair that used the link is re-routed.
        assert!(f.pairs()[&(mac(2), mac(3))].stale);
        assert!(!f.pairs()[&(mac(1), mac(2))].stale);
        let v = f.reconcile(&topo, now);
        assert!(adds(&v).iter().all(|(_, fm)| fm.priority != PRIO_PAIR));
    }

    #[test]
    fn link_added_deletes_nothing_in_use() {
        let t0 = Instant::now();
        // s1 - s2 - s3 as in setup(), then a new cable s1:3 - s3:3.
        let mut topo = build(
            t0,
            &[(1, 4), (2, 3), (3, 3)],
            &[((1, 2), (2, 2)), ((2, 3), (3, 2))],
        );
        let mut f = fresh();
        let now = t0 + Duration::from_secs(3);
        f.packet_in(&mut topo, 3, &pin(1, eth(MacAddr::BROADCAST, mac(3))), now);
        f.packet_in(&mut topo, 1, &pin(1, eth(mac(3), mac(1))), now);
        let mut change = topo.lldp_seen(pr(1, 3), pr(3, 3), now);
        let back = topo.lldp_seen(pr(3, 3), pr(1, 3), now);
        change.added.extend(back.added);
        assert_eq!(change.added.len(), 2);
        let v = f.links_changed(&topo, &change);
        for (d, fm) in flow_mods(&v) {
            assert!(!deletes_a_whole_kind(fm), "flush on s{d}: {fm:?}");
        }
        // The existing path s1-s2-s3 still works: the pair stays as it is.
        assert!(!f.pairs()[&(mac(1), mac(3))].stale);
    }

    /// An LLDP frame as a VM could send it: chassis and port id of a real
    /// switch port, no authentication.
    fn untagged_lldp(dpid: u64, port: u32) -> Vec<u8> {
        let mut f = packet::LLDP_DST.0.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 0x66]);
        f.extend_from_slice(&ETH_TYPE_LLDP.to_be_bytes());
        let tlv = |f: &mut Vec<u8>, ty: u16, v: &[u8]| {
            f.extend_from_slice(&((ty << 9) | v.len() as u16).to_be_bytes());
            f.extend_from_slice(v);
        };
        tlv(&mut f, 1, format!("\x07dpid:{dpid:016x}").as_bytes());
        tlv(&mut f, 2, format!("\x07{port}").as_bytes());
        tlv(&mut f, 3, &120u16.to_be_bytes());
        tlv(&mut f, 0, &[]);
        f.resize(60, 0);
        f
    }

    #[test]
    fn forged_untagged_lldp_from_an_edge_port_makes_no_link() {
        let (mut topo, mut f, now) = two_pairs();
        let links_before: Vec<_> = topo.links().map(|l| (l.src, l.dst)).collect();
        // The VM at s3:1 claims to be s1:2 (a real inter-switch port).
        let r = f.packet_in(&mut topo, 3, &pin(1, untagged_lldp(1, 2)), now);
        assert!(r.links.is_empty(), "forged link: {:?}", r.links);
        assert!(r.out.is_empty());
        let links_after: Vec<_> = topo.links().map(|l| (l.src, l.dst)).collect();
        assert_eq!(links_after, links_before);
        assert!(topo.endpoint(&mac(3)).is_some(), "the VM was forgotten");
        let ig = r.lldp_ignored.expect("counted as ignored");
        assert_eq!(ig.reason, IgnoreReason::NoTag);
        assert_eq!((ig.at, ig.claimed), (pr(3, 1), Some(pr(1, 2))));
        assert!(ig.warn);
    }

    /// The probe `f` sends out of `(dpid, port)` at `now`.
    fn probe_of(f: &Forwarding, topo: &Topology, dpid: u64, port: u32, now: Instant) -> Vec<u8> {
        f.lldp_probes(topo, now)
            .into_iter()
            .find_map(|o| match o.msg {
                Message::PacketOut(p)
                    if o.dpid == dpid && p.actions == vec![Action::output(port)] =>
                {
                    Some(p.data)
                }
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn replayed_and_relayed_probes_make_no_link() {
        let (mut topo, mut f, now) = two_pairs();
        let links_before: Vec<_> = topo.links().map(|l| (l.src, l.dst)).collect();
        // A genuine probe of s1:2 reaches s2:2 (a real link): accepted.
        let genuine = probe_of(&f, &topo, 1, 2, now);
        let r = f.packet_in(&mut topo, 2, &pin(2, genuine.clone()), now);
        assert!(r.lldp_ignored.is_none() && r.links.is_empty());
        // The VM at s3:1 replays it: the tag is valid, the timestamp is not new.
        let later = now + Duration::from_millis(300);
        let r = f.packet_in(&mut topo, 3, &pin(1, genuine), later);
        assert_eq!(
            r.lldp_ignored.map(|i| i.reason),
            Some(IgnoreReason::Replayed)
        );
        // The probe s1 sends out of the VM port s1:1 (h1 receives it), relayed
        // by an accomplice to the VM at s3:1: fresh, but a host is there.
        let relayed = probe_of(&f, &topo, 1, 1, later);
        let r = f.packet_in(&mut topo, 3, &pin(1, relayed.clone()), later);
        assert_eq!(
            r.lldp_ignored.map(|i| i.reason),
            Some(IgnoreReason::EdgePort)
        );
        assert!(!r.lldp_ignored.unwrap().warn, "one warning per port");
        // h1 sends its own port's probe back in.
        let r = f.packet_in(&mut topo, 1, &pin(1, relayed.clone()), later);
        assert_eq!(
            r.lldp_ignored.map(|i| i.reason),
            Some(IgnoreReason::EdgePort)
        );
        // Much later the relayed probe is stale.
        let r = f.packet_in(
            &mut topo,
            3,
            &pin(1, relayed),
            later + Duration::from_secs(8),
        );
        assert_eq!(r.lldp_ignored.map(|i| i.reason), Some(IgnoreReason::Stale));
        let links_after: Vec<_> = topo.links().map(|l| (l.src, l.dst)).collect();
        assert_eq!(links_after, links_before);
        let c = f.lldp.counters().read();
        assert_eq!(c.accepted, 1);
        assert_eq!(
            (
                c.ignored["replayed"],
                c.ignored["edge_port"],
                c.ignored["stale"]
            ),
            (1, 2, 1)
        );
    }

    #[test]
    fn one_direction_going_away_changes_no_flow() {
        let (mut topo, mut f, now) = two_pairs();
        // Only s3 -> s2 stops being seen; s2 -> s3 still carries the cable.
        let later = now + Duration::from_secs(10);
        for (a, b) in [
            (pr(1, 2), pr(2, 2)),
            (pr(2, 2), pr(1, 2)),
            (pr(2, 3), pr(3, 2)),
        ] {
            topo.lldp_seen(a, b, later);
        }
        let change = topo.expire_links(later, Duration::from_secs(5));
        assert_eq!(change.removed, vec![(pr(3, 2), pr(2, 3))]);
        assert!(f.links_changed(&topo, &change).is_empty());
        assert!(f.pairs().values().all(|p| !p.stale));
    }

    #[test]
    fn lldp_probe_out_and_back_makes_a_link() {
        let t0 = Instant::now();
        let mut topo = build(t0, &[(2, 3), (3, 3)], &[]);
        let mut f = fresh();
        let probes = f.lldp_probes(&topo, t0);
        assert_eq!(probes.len(), 6, "one per port");
        let po = probes
            .iter()
            .find_map(|o| match &o.msg {
                Message::PacketOut(p) if o.dpid == 3 && p.actions == vec![Action::output(2)] => {
                    Some(p.clone())
                }
                _ => None,
            })
            .unwrap();
        // The probe sent out of s3:2 comes back as a PACKET_IN at s2:3.
        let r = f.packet_in(&mut topo, 2, &pin(3, po.data), t0);
        assert_eq!(r.links.added, vec![(pr(3, 2), pr(2, 3))]);
        assert!(r.out.is_empty());
        assert!(topo.is_link_port(pr(2, 3)) && topo.is_link_port(pr(3, 2)));
    }
}
