//! Topology: connected switches and their ports, links found by LLDP, and
//! where each endpoint (VM) is attached.
//!
//! Pure state: callers pass the current monotonic time; nothing here reads a
//! clock or does I/O. Links are directed as LLDP sees them (`src` sent the
//! probe, `dst` received it); a port is an inter-switch port as soon as a
//! link in either direction uses it. Endpoints are learnt only at edge ports
//! (never at inter-switch ports) and move when their MAC appears at a new
//! edge port.
//!
//! The endpoint table is bounded ([`EndpointLimits`]): an edge port holds
//! at most `max_per_port` MACs and the table at most `max_total`; a MAC
//! beyond either limit is refused ([`Learned::Refused`], counted in
//! [`EndpointCounters`]) and the frame that carried it is dropped by the
//! forwarding. Endpoints not seen for the idle timeout are removed
//! ([`Topology::expire_endpoints`]).
//!
//! Cable damping: a cable (the two ports of a link, either direction) that
//! came up or went down [`FLAP_MAX_CHANGES`] times within [`FLAP_WINDOW`]
//! is not brought up again until the oldest of those changes is older than
//! the window; going down is never delayed (a dead cable must not carry
//! traffic). So a flapping cable changes the topology at most
//! [`FLAP_MAX_CHANGES`] times a window. A switch whose controller
//! connection ends loses its links, but that is no cable change (the switch
//! goes on forwarding with its flows; the cables are only out of sight), nor
//! is their rediscovery when it reconnects: a switch reconnecting is never
//! damped, a cable reported down meanwhile is.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ofp::{port_no, MacAddr, PortDesc, SwitchFeatures};
use serde::Serialize;

/// One end of a link: a switch port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortRef {
    /// Datapath id.
    pub dpid: u64,
    /// OpenFlow port number.
    pub port: u32,
}

/// A directed link seen by LLDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The port the probe left from.
    pub src: PortRef,
    /// The port it arrived at.
    pub dst: PortRef,
    /// When it was first seen.
    pub since: Instant,
    /// When it was last seen.
    pub last_seen: Instant,
}

/// A port of a connected switch.
#[derive(Debug, Clone)]
pub struct PortState {
    /// The switch's description of the port.
    pub desc: PortDesc,
    /// When the port was (last) seen coming up; edge status waits for
    /// LLDP to have had a chance after this.
    pub up_since: Instant,
    /// The port appeared while its switch was already connected (a VM
    /// plugged in or migrated in): our LLDP probe goes out of it at once, so
    /// it is confirmed after [`LATE_PORT_CONFIRM`] at most.
    pub late: bool,
}

/// Period over which a cable's up/down changes are counted for damping.
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);
/// Changes of one cable within [`FLAP_WINDOW`] after which it is not
/// brought up again until the window has passed the oldest of them.
pub const FLAP_MAX_CHANGES: usize = 4;

/// Longest confirmation delay of a port that appears on a connected switch.
pub const LATE_PORT_CONFIRM: Duration = Duration::from_millis(500);

/// A connected switch.
#[derive(Debug, Clone)]
pub struct SwitchState {
    /// Datapath id.
    pub dpid: u64,
    /// Identifies the connection (a reconnect gets a new id).
    pub conn_id: u64,
    /// The switch's address.
    pub peer: SocketAddr,
    /// FEATURES_REPLY.
    pub features: SwitchFeatures,
    /// Manufacturer/software description, when known.
    pub description: Option<String>,
    /// When the connection was established.
    pub connected_at: Instant,
    /// Ports by number.
    pub ports: BTreeMap<u32, PortState>,
}

/// Where an endpoint (VM) is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its MAC address.
    pub mac: MacAddr,
    /// Its IPv4 address, once seen (ARP or IPv4 source).
    pub ip: Option<Ipv4Addr>,
    /// Switch and edge port.
    pub location: PortRef,
    /// First seen.
    pub first_seen: Instant,
    /// Last seen (any frame from it reaching the controller).
    pub last_seen: Instant,
    /// How many times it moved to another port.
    pub moves: u32,
}

/// Outcome of learning a source MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Not learnt: the port is not an (confirmed) edge port.
    Ignored,
    /// A new endpoint.
    New,
    /// Known at the same port.
    Refreshed,
    /// Moved from another port.
    Moved {
        /// Its previous location.
        from: PortRef,
    },
    /// Not learnt: a limit of [`EndpointLimits`] was reached.
    Refused(Refusal),
}

/// Which endpoint limit refused a MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The edge port already holds `max_per_port` MACs.
    PortFull,
    /// The endpoint table already holds `max_total` MACs.
    TableFull,
}

impl Refusal {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PortFull => "port MAC limit reached",
            Refusal::TableFull => "endpoint table full",
        }
    }
}

/// Bounds of the endpoint table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointLimits {
    /// MACs learnt at one edge port at most.
    pub max_per_port: usize,
    /// Endpoints in all at most.
    pub max_total: usize,
}

/// Default MACs per edge port.
pub const DEFAULT_MAX_MACS_PER_PORT: usize = 64;
/// Default size of the endpoint table.
pub const DEFAULT_MAX_ENDPOINTS: usize = 8192;

impl Default for EndpointLimits {
    fn default() -> Self {
        EndpointLimits {
            max_per_port: DEFAULT_MAX_MACS_PER_PORT,
            max_total: DEFAULT_MAX_ENDPOINTS,
        }
    }
}

/// What the endpoint limits did, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EndpointCounters {
    /// MACs refused because their port was full.
    pub refused_port_full: u64,
    /// MACs refused because the table was full.
    pub refused_table_full: u64,
    /// Endpoints removed after their idle timeout.
    pub expired: u64,
}

/// What changed in the link table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkChange {
    /// Links that appeared.
    pub added: Vec<(PortRef, PortRef)>,
    /// Links that disappeared.
    pub removed: Vec<(PortRef, PortRef)>,
}

impl LinkChange {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Depth-first enumeration of loop-free paths (see [`Topology::paths`]).
struct PathSearch {
    adj: BTreeMap<u64, Vec<(u64, u32, u32)>>,
    dst: u64,
    max_len: usize,
    stack: Vec<(u64, Option<u32>)>,
    on_path: BTreeSet<u64>,
    out: Vec<Vec<(u64, Option<u32>)>>,
    budget: usize,
}

impl PathSearch {
    fn dfs(&mut self, cur: u64) {
        if self.budget == 0 {
            return;
        }
        self.budget -= 1;
        if cur == self.dst {
            let mut p = self.stack.clone();
            p.push((cur, None));
            self.out.push(p);
            return;
        }
        if self.stack.len() + 1 >= self.max_len {
            return;
        }
        self.on_path.insert(cur);
        let nbrs = self.adj.get(&cur).cloned().unwrap_or_default();
        for (nbr, lp, _) in nbrs {
            if self.on_path.contains(&nbr) {
                continue;
            }
            self.stack.push((cur, Some(lp)));
            self.dfs(nbr);
            self.stack.pop();
        }
        self.on_path.remove(&cur);
    }
}

/// The topology.
#[derive(Debug, Default)]
pub struct Topology {
    switches: BTreeMap<u64, SwitchState>,
    /// Directed links keyed by their source port.
    links: BTreeMap<PortRef, Link>,
    /// How many links end at each port (kept with `links`, so that
    /// [`Topology::is_link_port`], asked on every PACKET_IN, is two lookups
    /// instead of a scan of every link).
    link_dsts: HashMap<PortRef, u32>,
    endpoints: HashMap<MacAddr, Endpoint>,
    /// Endpoints per edge port (kept equal to a count of `endpoints`).
    per_port: HashMap<PortRef, usize>,
    /// Bounds of the endpoint table.
    limits: EndpointLimits,
    /// What the limits did.
    counters: EndpointCounters,
    /// Bumped on every change of switches, ports or links.
    version: u64,
    /// Recent up/down changes per cable (ports in ascending order).
    flaps: HashMap<(PortRef, PortRef), VecDeque<Instant>>,
    /// Cable ups held back by damping, since start.
    damped: u64,
    /// Cables whose links went only because a switch's connection ended
    /// (the cable's state is unknown, not down), since when: neither that
    /// nor their rediscovery counts as a change for damping.
    unseen: HashMap<(PortRef, PortRef), Instant>,
}

/// The key of the cable between two ports (direction-free).
fn cable(a: PortRef, b: PortRef) -> (PortRef, PortRef) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes whenever switches, ports or links change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Connected switches by datapath id.
    pub fn switches(&self) -> &BTreeMap<u64, SwitchState> {
        &self.switches
    }

    /// One switch.
    pub fn switch(&self, dpid: u64) -> Option<&SwitchState> {
        self.switches.get(&dpid)
    }

    /// All directed links.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }

    /// All endpoints.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    /// The endpoint with this MAC.
    pub fn endpoint(&self, mac: &MacAddr) -> Option<&Endpoint> {
        self.endpoints.get(mac)
    }

    /// Number of endpoints.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Sets the bounds of the endpoint table (endpoints already learnt
    /// stay until they expire).
    pub fn set_limits(&mut self, limits: EndpointLimits) {
        self.limits = EndpointLimits {
            max_per_port: limits.max_per_port.max(1),
            max_total: limits.max_total.max(1),
        };
    }

    /// The bounds of the endpoint table.
    pub fn limits(&self) -> EndpointLimits {
        self.limits
    }

    /// What the limits did since start.
    pub fn endpoint_counters(&self) -> EndpointCounters {
        self.counters
    }

    /// Rebuilds the per-port counts after endpoints were removed in bulk.
    fn recount(&mut self) {
        self.per_port.clear();
        for e in self.endpoints.values() {
            *self.per_port.entry(e.location).or_default() += 1;
        }
    }

    fn port_dec(&mut self, p: PortRef) {
        if let Some(n) = self.per_port.get_mut(&p) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_port.remove(&p);
            }
        }
    }

    /// When the first endpoint may have been idle for `idle` (its last
    /// sighting plus `idle`); `None` without endpoints.
    pub fn endpoints_idle_from(&self, idle: Duration) -> Option<Instant> {
        self.endpoints.values().map(|e| e.last_seen + idle).min()
    }

    /// Removes the endpoints not seen for `idle` (at `now`) for which
    /// `active` is false (e.g. the ends of installed pair flows, whose
    /// frames no longer reach the controller); returns their MACs.
    pub fn expire_endpoints(
        &mut self,
        now: Instant,
        idle: Duration,
        active: impl Fn(&MacAddr) -> bool,
    ) -> Vec<MacAddr> {
        let mut gone = Vec::new();
        for e in self.endpoints.values_mut() {
            if now.saturating_duration_since(e.last_seen) < idle {
                continue;
            }
            if active(&e.mac) {
                e.last_seen = now;
            } else {
                gone.push(e.mac);
            }
        }
        for m in &gone {
            if let Some(e) = self.endpoints.remove(m) {
                self.port_dec(e.location);
            }
        }
        self.counters.expired += gone.len() as u64;
        gone
    }

    /// Records a switch that completed the handshake. A previous connection
    /// of the same datapath id is replaced (its state cleared first).
    pub fn switch_connected(
        &mut self,
        dpid: u64,
        conn_id: u64,
        peer: SocketAddr,
        features: SwitchFeatures,
        ports: Vec<PortDesc>,
        now: Instant,
    ) -> LinkChange {
        let change = self.remove_switch_links(dpid, now);
        let ports = ports
            .into_iter()
            .filter(|p| p.port_no <= port_no::MAX)
            .map(|desc| {
                (
                    desc.port_no,
                    PortState {
                        desc,
                        up_since: now,
                        late: false,
                    },
                )
            })
            .collect();
        self.switches.insert(
            dpid,
            SwitchState {
                dpid,
                conn_id,
                peer,
                features,
                description: None,
                connected_at: now,
                ports,
            },
        );
        self.version += 1;
        change
    }

    /// Sets the DESC text of a switch.
    pub fn set_description(&mut self, dpid: u64, text: String) {
        if let Some(s) = self.switches.get_mut(&dpid) {
            s.description = Some(text);
        }
    }

    /// Clears all state of a switch whose connection `conn_id` ended; a stale
    /// notice of an older connection is ignored. Endpoints attached to it are
    /// kept (they are VMs, not switch state) but will be re-validated by the
    /// next frame they send.
    pub fn switch_disconnected(
        &mut self,
        dpid: u64,
        conn_id: u64,
        now: Instant,
    ) -> Option<LinkChange> {
        match self.switches.get(&dpid) {
            Some(s) if s.conn_id == conn_id => {}
            _ => return None,
        }
        self.switches.remove(&dpid);
        let change = self.remove_switch_links(dpid, now);
        self.version += 1;
        Some(change)
    }

    /// Removes the links of a switch whose connection ended or restarted.
    /// Its cables are not known to be down (the switch forwards with its
    /// flows while away), so this is no cable change for damping, nor is
    /// their rediscovery (see [`Topology::lldp_seen`]).
    fn remove_switch_links(&mut self, dpid: u64, now: Instant) -> LinkChange {
        let mut change = LinkChange::default();
        self.links.retain(|_, l| {
            let keep = l.src.dpid != dpid && l.dst.dpid != dpid;
            if !keep {
                change.removed.push((l.src, l.dst));
            }
            keep
        });
        self.index_link_ends(&change);
        if !change.removed.is_empty() {
            self.version += 1;
        }
        if self.unseen.len() >= 4096 {
            self.unseen
                .retain(|_, at| now.saturating_duration_since(*at) < FLAP_WINDOW);
        }
        for &(a, b) in &change.removed {
            self.unseen.insert(cable(a, b), now);
        }
        change
    }

    /// True when the directed link `src` → `dst` is known.
    pub fn has_link(&self, src: PortRef, dst: PortRef) -> bool {
        self.links.get(&src).is_some_and(|l| l.dst == dst)
    }

    /// Cable ups held back by damping since start.
    pub fn damped_link_ups(&self) -> u64 {
        self.damped
    }

    /// Recent changes of the cable `key` within the window, pruned.
    fn recent_changes(&mut self, key: (PortRef, PortRef), now: Instant) -> usize {
        let Some(q) = self.flaps.get_mut(&key) else {
            return 0;
        };
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= FLAP_WINDOW)
        {
            q.pop_front();
        }
        let n = q.len();
        if n == 0 {
            self.flaps.remove(&key);
        }
        n
    }

    fn note_change(&mut self, key: (PortRef, PortRef), now: Instant) {
        if self.flaps.len() >= 4096 {
            self.flaps.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < FLAP_WINDOW)
            });
        }
        let q = self.flaps.entry(key).or_default();
        q.push_back(now);
        while q.len() > FLAP_MAX_CHANGES {
            q.pop_front();
        }
    }

    /// Records a cable-down change for every removed link whose reverse
    /// direction is gone too.
    fn note_removed(&mut self, change: &LinkChange, now: Instant) {
        let gone: BTreeSet<(PortRef, PortRef)> = change
            .removed
            .iter()
            .filter(|&&(a, b)| !self.has_link(b, a) && !self.has_link(a, b))
            .map(|&(a, b)| cable(a, b))
            .collect();
        for key in gone {
            self.note_change(key, now);
        }
    }

    /// Applies a PORT_STATUS: adds, modifies or deletes the port; a port that
    /// goes down or away loses its links.
    pub fn port_status(
        &mut self,
        dpid: u64,
        deleted: bool,
        desc: PortDesc,
        now: Instant,
    ) -> LinkChange {
        let Some(sw) = self.switches.get_mut(&dpid) else {
            return LinkChange::default();
        };
        if desc.port_no > port_no::MAX {
            return LinkChange::default();
        }
        let port = desc.port_no;
        let up = desc.is_up() && !deleted;
        if deleted {
            sw.ports.remove(&port);
        } else {
            let was_up = sw.ports.get(&port).map(|p| p.desc.is_up()).unwrap_or(false);
            let up_since = match sw.ports.get(&port) {
                Some(p) if was_up => p.up_since,
                _ => now,
            };
            sw.ports.insert(
                port,
                PortState {
                    desc,
                    up_since,
                    late: true,
                },
            );
        }
        self.version += 1;
        let mut change = LinkChange::default();
        if !up {
            let here = PortRef { dpid, port };
            self.links.retain(|_, l| {
                let keep = l.src != here && l.dst != here;
                if !keep {
                    change.removed.push((l.src, l.dst));
                }
                keep
            });
            self.index_link_ends(&change);
            // A cable out of sight that is now known to be down: a change.
            let down: Vec<_> = self
                .unseen
                .keys()
                .filter(|k| k.0 == here || k.1 == here)
                .copied()
                .collect();
            for key in down {
                self.unseen.remove(&key);
                self.note_change(key, now);
            }
        }
        self.note_removed(&change, now);
        change
    }

    /// Records an LLDP probe sent from `src` that arrived at `dst`. Both must
    /// be ports of connected switches, and up (else the probe is ignored: a
    /// probe read after its port's PORT_STATUS said down was in flight when
    /// the cable went, and must not bring the link back on a dead port).
    pub fn lldp_seen(&mut self, src: PortRef, dst: PortRef, now: Instant) -> LinkChange {
        let mut change = LinkChange::default();
        if src == dst || !self.port_up(src) || !self.port_up(dst) {
            return change;
        }
        let fresh = !self.has_link(src, dst);
        if fresh && !self.has_link(dst, src) {
            // The cable comes up: damped when it changed too often lately
            // (unless it was only out of sight while a switch reconnected).
            let key = cable(src, dst);
            let was_unseen = self
                .unseen
                .remove(&key)
                .is_some_and(|at| now.saturating_duration_since(at) < FLAP_WINDOW);
            // A cable that was only out of sight is neither gone nor back.
            if !was_unseen {
                if self.recent_changes(key, now) >= FLAP_MAX_CHANGES {
                    self.damped += 1;
                    return change;
                }
                self.note_change(key, now);
            }
        }
        match self.links.get_mut(&src) {
            Some(l) if l.dst == dst => l.last_seen = now,
            Some(l) => {
                // The port now leads somewhere else (re-cabled).
                change.removed.push((l.src, l.dst));
                *l = Link {
                    src,
                    dst,
                    since: now,
                    last_seen: now,
                };
                change.added.push((src, dst));
            }
            None => {
                self.links.insert(
                    src,
                    Link {
                        src,
                        dst,
                        since: now,
                        last_seen: now,
                    },
                );
                change.added.push((src, dst));
            }
        }
        if !change.is_empty() {
            self.index_link_ends(&change);
            self.version += 1;
            // Endpoints wrongly learnt at what is now an inter-switch port.
            self.endpoints
                .retain(|_, e| e.location != src && e.location != dst);
            self.recount();
            // A re-cabled port: its old cable may be gone now.
            self.note_removed(&change, now);
        }
        change
    }

    /// Removes links not seen for `timeout`.
    pub fn expire_links(&mut self, now: Instant, timeout: Duration) -> LinkChange {
        let mut change = LinkChange::default();
        self.links.retain(|_, l| {
            let keep = now.saturating_duration_since(l.last_seen) <= timeout;
            if !keep {
                change.removed.push((l.src, l.dst));
            }
            keep
        });
        self.index_link_ends(&change);
        if !change.is_empty() {
            self.version += 1;
        }
        self.note_removed(&change, now);
        change
    }

    /// Keeps [`Topology::link_dsts`] equal to the links after `change`
    /// (links removed and added by the caller).
    fn index_link_ends(&mut self, change: &LinkChange) {
        for &(_, dst) in &change.removed {
            if let Some(n) = self.link_dsts.get_mut(&dst) {
                *n -= 1;
                if *n == 0 {
                    self.link_dsts.remove(&dst);
                }
            }
        }
        for &(_, dst) in &change.added {
            *self.link_dsts.entry(dst).or_insert(0) += 1;
        }
    }

    /// True when `p` is a port of a connected switch and up.
    fn port_up(&self, p: PortRef) -> bool {
        self.switches
            .get(&p.dpid)
            .and_then(|s| s.ports.get(&p.port))
            .is_some_and(|ps| ps.desc.is_up())
    }

    /// True when a link (either direction) uses this port.
    pub fn is_link_port(&self, p: PortRef) -> bool {
        self.links.contains_key(&p) || self.link_dsts.contains_key(&p)
    }

    /// When switch `dpid` connected (None: not connected).
    pub fn connected_since(&self, dpid: u64) -> Option<Instant> {
        self.switches.get(&dpid).map(|sw| sw.connected_at)
    }

    /// True when the port is an edge (host-facing) port: it exists, is up,
    /// carries no link, and has been up at least `confirm` so that LLDP had
    /// a chance to find a link on it.
    pub fn is_edge_port(&self, p: PortRef, now: Instant, confirm: Duration) -> bool {
        let Some(sw) = self.switches.get(&p.dpid) else {
            return false;
        };
        let Some(port) = sw.ports.get(&p.port) else {
            return false;
        };
        let confirm_port = if port.late {
            confirm.min(LATE_PORT_CONFIRM)
        } else {
            confirm
        };
        port.desc.is_up()
            && now.saturating_duration_since(port.up_since) >= confirm_port
            && now.saturating_duration_since(sw.connected_at) >= confirm
            && !self.is_link_port(p)
    }

    /// True when `p` is a confirmed edge port (see [`Topology::is_edge_port`])
    /// at which an endpoint has been seen since the port last came up: a
    /// host is there, so no LLDP probe of ours can genuinely arrive at it.
    pub fn hosts_at(&self, p: PortRef, now: Instant, confirm: Duration) -> bool {
        let Some(up_since) = self
            .switches
            .get(&p.dpid)
            .and_then(|s| s.ports.get(&p.port))
            .map(|ps| ps.up_since)
        else {
            return false;
        };
        self.is_edge_port(p, now, confirm)
            && self
                .endpoints
                .values()
                .any(|e| e.location == p && e.last_seen >= up_since)
    }

    /// Confirmed edge ports of a switch, ascending.
    pub fn edge_ports(&self, dpid: u64, now: Instant, confirm: Duration) -> Vec<u32> {
        self.switches
            .get(&dpid)
            .map(|s| {
                s.ports
                    .keys()
                    .copied()
                    .filter(|&port| self.is_edge_port(PortRef { dpid, port }, now, confirm))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Inter-switch ports of a switch, ascending.
    pub fn link_ports(&self, dpid: u64) -> Vec<u32> {
        let mut v: BTreeSet<u32> = BTreeSet::new();
        for l in self.links.values() {
            if l.src.dpid == dpid {
                v.insert(l.src.port);
            }
            if l.dst.dpid == dpid {
                v.insert(l.dst.port);
            }
        }
        v.into_iter().collect()
    }

    /// Undirected adjacency: switch → sorted (neighbor, local port, remote
    /// port). A link counts when either direction was seen.
    pub fn adjacency(&self) -> BTreeMap<u64, Vec<(u64, u32, u32)>> {
        let mut adj: BTreeMap<u64, BTreeSet<(u64, u32, u32)>> = BTreeMap::new();
        for d in self.switches.keys() {
            adj.entry(*d).or_default();
        }
        for l in self.links.values() {
            adj.entry(l.src.dpid)
                .or_default()
                .insert((l.dst.dpid, l.src.port, l.dst.port));
            adj.entry(l.dst.dpid)
                .or_default()
                .insert((l.src.dpid, l.dst.port, l.src.port));
        }
        adj.into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect()
    }

    /// Spanning-tree ports per switch: a BFS forest from the lowest datapath
    /// id of each connected component, one link per switch pair (lowest
    /// ports first). Broadcast is forwarded only along these ports.
    pub fn spanning_tree(&self) -> BTreeMap<u64, BTreeSet<u32>> {
        let adj = self.adjacency();
        let mut tree: BTreeMap<u64, BTreeSet<u32>> =
            adj.keys().map(|d| (*d, BTreeSet::new())).collect();
        let mut seen: BTreeSet<u64> = BTreeSet::new();
        for &root in adj.keys() {
            if !seen.insert(root) {
                continue;
            }
            let mut q = VecDeque::from([root]);
            while let Some(u) = q.pop_front() {
                for &(v, lp, rp) in adj.get(&u).map(Vec::as_slice).unwrap_or_default() {
                    if seen.insert(v) {
                        tree.entry(u).or_default().insert(lp);
                        tree.entry(v).or_default().insert(rp);
                        q.push_back(v);
                    }
                }
            }
        }
        tree
    }

    /// Next hops toward switch `dst` along shortest paths (hop count): for
    /// every switch that can reach `dst`, the port to send out of. Ties are
    /// broken by the lowest (neighbor dpid, port), so all switches agree and
    /// the destination-based flows form a tree.
    pub fn next_hops_to(&self, dst: u64) -> BTreeMap<u64, u32> {
        let adj = self.adjacency();
        let mut next: BTreeMap<u64, u32> = BTreeMap::new();
        if !adj.contains_key(&dst) {
            return next;
        }
        let mut seen: BTreeSet<u64> = BTreeSet::from([dst]);
        let mut q = VecDeque::from([dst]);
        while let Some(u) = q.pop_front() {
            for &(v, lp, rp) in adj.get(&u).map(Vec::as_slice).unwrap_or_default() {
                let _ = lp;
                if seen.insert(v) {
                    // v reaches dst through u, leaving v by rp.
                    next.insert(v, rp);
                    q.push_back(v);
                }
            }
        }
        next
    }

    /// The switches from `src` to `dst` (inclusive) with the output port at
    /// each (the last hop's port is `None`: the caller adds the edge port).
    pub fn path(&self, src: u64, dst: u64) -> Option<Vec<(u64, Option<u32>)>> {
        if src == dst {
            return self.switches.contains_key(&src).then(|| vec![(src, None)]);
        }
        self.path_with(&self.next_hops_to(dst), &self.adjacency(), src, dst)
    }

    /// [`Topology::path`] from `next` = [`Topology::next_hops_to`]`(dst)`
    /// and `adj` = [`Topology::adjacency`] computed earlier for this
    /// [`Topology::version`] (a caller may cache them).
    pub fn path_with(
        &self,
        next: &BTreeMap<u64, u32>,
        adj: &BTreeMap<u64, Vec<(u64, u32, u32)>>,
        src: u64,
        dst: u64,
    ) -> Option<Vec<(u64, Option<u32>)>> {
        if src == dst {
            return self.switches.contains_key(&src).then(|| vec![(src, None)]);
        }
        let mut path = Vec::new();
        let mut cur = src;
        while cur != dst {
            let port = *next.get(&cur)?;
            path.push((cur, Some(port)));
            let (nbr, _, _) = adj
                .get(&cur)?
                .iter()
                .find(|(_, lp, _)| *lp == port)
                .copied()?;
            cur = nbr;
            if path.len() > self.switches.len() {
                return None;
            }
        }
        path.push((dst, None));
        Some(path)
    }

    /// Loop-free paths from `src` to `dst` at most `extra` hops longer than
    /// the shortest, shortest first (then by the sequence of (dpid, port)),
    /// at most `limit` of them; same shape as [`Topology::path`].
    pub fn paths(
        &self,
        src: u64,
        dst: u64,
        extra: usize,
        limit: usize,
    ) -> Vec<Vec<(u64, Option<u32>)>> {
        let Some(shortest) = self.path(src, dst) else {
            return Vec::new();
        };
        let max_len = shortest.len() + extra;
        let mut search = PathSearch {
            adj: self.adjacency(),
            dst,
            max_len,
            stack: Vec::new(),
            on_path: BTreeSet::new(),
            out: Vec::new(),
            // Bounded search: at most this many steps, whatever the topology.
            budget: 100_000,
        };
        search.dfs(src);
        let mut out = search.out;
        out.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        // The forwarding path first among the shortest.
        if let Some(i) = out.iter().position(|p| *p == shortest) {
            let p = out.remove(i);
            out.insert(0, p);
        }
        out.truncate(limit);
        out
    }

    /// Learns `mac` (and `ip`, when given) at `at`, if `at` is a confirmed
    /// edge port. Never learns at inter-switch ports.
    pub fn learn(
        &mut self,
        mac: MacAddr,
        ip: Option<Ipv4Addr>,
        at: PortRef,
        now: Instant,
        confirm: Duration,
    ) -> Learned {
        if mac.0[0] & 1 == 1 || mac.0 == [0; 6] || !self.is_edge_port(at, now, confirm) {
            return Learned::Ignored;
        }
        let port_full = self.per_port.get(&at).copied().unwrap_or(0) >= self.limits.max_per_port;
        let table_full = self.endpoints.len() >= self.limits.max_total;
        match self.endpoints.get_mut(&mac) {
            Some(e) if e.location == at => {
                e.last_seen = now;
                if ip.is_some() {
                    e.ip = ip;
                }
                Learned::Refreshed
            }
            Some(_) if port_full => {
                self.counters.refused_port_full += 1;
                Learned::Refused(Refusal::PortFull)
            }
            Some(e) => {
                e.last_seen = now;
                if ip.is_some() {
                    e.ip = ip;
                }
                let from = e.location;
                e.location = at;
                e.moves += 1;
                self.port_dec(from);
                *self.per_port.entry(at).or_default() += 1;
                Learned::Moved { from }
            }
            None if port_full => {
                self.counters.refused_port_full += 1;
                Learned::Refused(Refusal::PortFull)
            }
            None if table_full => {
                self.counters.refused_table_full += 1;
                Learned::Refused(Refusal::TableFull)
            }
            None => {
                *self.per_port.entry(at).or_default() += 1;
                self.endpoints.insert(
                    mac,
                    Endpoint {
                        mac,
                        ip,
                        location: at,
                        first_seen: now,
                        last_seen: now,
                        moves: 0,
                    },
                );
                Learned::New
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn port(n: u32) -> PortDesc {
        PortDesc {
            port_no: n,
            hw_addr: MacAddr([2, 0, 0, 0, (n >> 8) as u8, n as u8]),
            name: format!("p{n}"),
            config: 0,
            state: 0,
            curr: 0,
            advertised: 0,
            supported: 0,
            peer: 0,
            curr_speed: 0,
            max_speed: 0,
        }
    }

    pub(crate) fn features(dpid: u64) -> SwitchFeatures {
        SwitchFeatures {
            datapath_id: dpid,
            n_buffers: 0,
            n_tables: 254,
            auxiliary_id: 0,
            capabilities: 0,
        }
    }

    pub(crate) fn pr(dpid: u64, port: u32) -> PortRef {
        PortRef { dpid, port }
    }

    /// A cable between two (dpid, port) ends.
    pub(crate) type Cable = ((u64, u32), (u64, u32));

    /// Builds switches with `nports` ports each and bidirectional links.
    pub(crate) fn build(now: Instant, switches: &[(u64, u32)], links: &[Cable]) -> Topology {
        let mut t = Topology::new();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for &(d, n) in switches {
            t.switch_connected(d, d, peer, features(d), (1..=n).map(port).collect(), now);
        }
        for &((a, ap), (b, bp)) in links {
            t.lldp_seen(pr(a, ap), pr(b, bp), now);
            t.lldp_seen(pr(b, bp), pr(a, ap), now);
        }
        t
    }

    /// Triangle s1-s2-s3 (a redundant loop) with hosts on port 1 of each.
    /// s1:2-s2:2, s2:3-s3:2, s1:3-s3:3.
    pub(crate) fn triangle(now: Instant) -> Topology {
        build(
            now,
            &[(1, 3), (2, 3), (3, 3)],
            &[((1, 2), (2, 2)), ((2, 3), (3, 2)), ((1, 3), (3, 3))],
        )
    }

    #[test]
    fn spanning_tree_breaks_the_loop() {
        let now = Instant::now();
        let t = triangle(now);
        let tree = t.spanning_tree();
        // BFS from s1: s1-s2 via 2/2 and s1-s3 via 3/3; s2-s3 is not in the tree.
        assert_eq!(tree[&1], BTreeSet::from([2, 3]));
        assert_eq!(tree[&2], BTreeSet::from([2]));
        assert_eq!(tree[&3], BTreeSet::from([3]));
        let tree_links: usize = tree.values().map(BTreeSet::len).sum::<usize>() / 2;
        assert_eq!(tree_links, t.switches().len() - 1);
    }

    #[test]
    fn shortest_paths_and_next_hops() {
        let now = Instant::now();
        let t = triangle(now);
        // Direct links everywhere: one hop.
        assert_eq!(t.path(2, 3).unwrap(), vec![(2, Some(3)), (3, None)]);
        assert_eq!(t.path(1, 1).unwrap(), vec![(1, None)]);
        // A line 1-2-3 (drop the 1-3 link): two hops via s2.
        let line = build(
            now,
            &[(1, 3), (2, 3), (3, 3)],
            &[((1, 2), (2, 2)), ((2, 3), (3, 2))],
        );
        assert_eq!(
            line.path(1, 3).unwrap(),
            vec![(1, Some(2)), (2, Some(3)), (3, None)]
        );
        assert_eq!(line.next_hops_to(3), BTreeMap::from([(1, 2), (2, 3)]));
        assert!(line.path(1, 9).is_none());
    }

    #[test]
    fn alternative_paths_in_the_triangle() {
        let t = triangle(Instant::now());
        let p = t.paths(1, 2, 1, 10);
        // Direct s1:2 -> s2, then the detour s1:3 -> s3:2 -> s2.
        assert_eq!(
            p,
            vec![
                vec![(1, Some(2)), (2, None)],
                vec![(1, Some(3)), (3, Some(2)), (2, None)],
            ]
        );
        assert_eq!(t.paths(1, 2, 0, 10).len(), 1);
        assert!(t.paths(1, 9, 2, 10).is_empty());
    }

    #[test]
    fn edge_ports_need_confirmation_and_exclude_links() {
        let t0 = Instant::now();
        let t = triangle(t0);
        let confirm = Duration::from_secs(2);
        assert!(t.edge_ports(1, t0, confirm).is_empty());
        let later = t0 + Duration::from_secs(3);
        assert_eq!(t.edge_ports(1, later, confirm), vec![1]);
        assert!(!t.is_edge_port(pr(1, 2), later, confirm));
    }

    #[test]
    fn ports_added_later_are_confirmed_sooner() {
        let t0 = Instant::now();
        let mut t = triangle(t0);
        let confirm = Duration::from_secs(2);
        let t1 = t0 + Duration::from_secs(10);
        t.port_status(1, false, port(7), t1);
        assert!(!t.is_edge_port(pr(1, 7), t1, confirm));
        assert!(t.is_edge_port(pr(1, 7), t1 + LATE_PORT_CONFIRM, confirm));
    }

    #[test]
    fn learning_only_at_edge_ports_and_moves() {
        let t0 = Instant::now();
        let mut t = triangle(t0);
        let confirm = Duration::from_secs(1);
        let now = t0 + Duration::from_secs(2);
        let m = MacAddr([0, 0, 0, 0, 0, 1]);
        assert_eq!(t.learn(m, None, pr(1, 2), now, confirm), Learned::Ignored);
        assert_eq!(t.learn(m, None, pr(1, 1), now, confirm), Learned::New);
        assert_eq!(t.learn(m, None, pr(1, 1), now, confirm), Learned::Refreshed);
        assert_eq!(
            t.learn(m, Some(Ipv4Addr::new(10, 0, 0, 1)), pr(3, 1), now, confirm),
            Learned::Moved { from: pr(1, 1) }
        );
        let e = t.endpoint(&m).unwrap();
        assert_eq!(e.location, pr(3, 1));
        assert_eq!(e.moves, 1);
        assert_eq!(e.ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        // Broadcast/multicast sources are never learnt.
        let b = MacAddr([0xff; 6]);
        assert_eq!(t.learn(b, None, pr(1, 1), now, confirm), Learned::Ignored);
    }

    fn spray_mac(i: u32) -> MacAddr {
        let b = i.to_be_bytes();
        MacAddr([0x02, 0xaa, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn a_mac_spray_is_bounded_per_port_and_in_all() {
        let t0 = Instant::now();
        let mut t = triangle(t0);
        t.set_limits(EndpointLimits {
            max_per_port: 8,
            max_total: 12,
        });
        let confirm = Duration::from_secs(1);
        let now = t0 + Duration::from_secs(2);
        let mut learnt = 0;
        for i in 0..100_000 {
            if t.learn(spray_mac(i), None, pr(1, 1), now, confirm) == Learned::New {
                learnt += 1;
            }
        }
        assert_eq!(learnt, 8);
        assert_eq!(t.endpoint_count(), 8);
        assert_eq!(t.endpoint_counters().refused_port_full, 100_000 - 8);
        // A known MAC at its own port is still refreshed.
        assert_eq!(
            t.learn(spray_mac(0), None, pr(1, 1), now, confirm),
            Learned::Refreshed
        );
        // Another port has its own budget, up to the table's.
        for i in 0..8 {
            t.learn(spray_mac(1_000_000 + i), None, pr(2, 1), now, confirm);
        }
        assert_eq!(t.endpoint_count(), 12);
        assert_eq!(
            t.learn(spray_mac(2_000_000), None, pr(3, 1), now, confirm),
            Learned::Refused(Refusal::TableFull)
        );
        // No move into a full port either.
        assert_eq!(
            t.learn(spray_mac(1_000_000), None, pr(1, 1), now, confirm),
            Learned::Refused(Refusal::PortFull)
        );
        assert_eq!(
            t.endpoint(&spray_mac(1_000_000)).map(|e| e.location),
            Some(pr(2, 1))
        );
    }

    #[test]
    fn idle_endpoints_expire_unless_active() {
        let t0 = Instant::now();
        let mut t = triangle(t0);
        t.set_limits(EndpointLimits {
            max_per_port: 2,
            max_total: 100,
        });
        let confirm = Duration::from_secs(1);
        let now = t0 + Duration::from_secs(2);
        let (a, b) = (spray_mac(1), spray_mac(2));
        t.learn(a, None, pr(1, 1), now, confirm);
        t.learn(b, None, pr(1, 1), now, confirm);
        let idle = Duration::from_secs(300);
        // Not idle yet.
        assert!(t
            .expire_endpoints(now + Duration::from_secs(299), idle, |_| false)
            .is_empty());
        // b sends through an installed pair flow: kept (and refreshed).
        let later = now + Duration::from_secs(301);
        assert_eq!(t.expire_endpoints(later, idle, |m| *m == b), vec![a]);
        assert!(t.endpoint(&a).is_none() && t.endpoint(&b).is_some());
        assert_eq!(t.endpoint_counters().expired, 1);
        // The port's budget was given back.
        assert_eq!(
            t.learn(spray_mac(3), None, pr(1, 1), later, confirm),
            Learned::New
        );
        assert_eq!(
            t.learn(spray_mac(4), None, pr(1, 1), later, confirm),
            Learned::Refused(Refusal::PortFull)
        );
    }

    #[test]
    fn links_expire_and_ports_going_down_drop_links() {
        let t0 = Instant::now();
        let mut t = triangle(t0);
        assert_eq!(t.links().count(), 6);
        // Refresh all but s1->s2.
        let t1 = t0 + Duration::from_secs(5);
        for (a, b) in [
            (pr(2, 2), pr(1, 2)),
            (pr(2, 3), pr(3, 2)),
            (pr(3, 2), pr(2, 3)),
            (pr(1, 3), pr(3, 3)),
            (pr(3, 3), pr(1, 3)),
        ] {
            t.lldp_seen(a, b, t1);
        }
        let ch = t.expire_links(t1, Duration::from_secs(3));
        assert_eq!(ch.removed, vec![(pr(1, 2), pr(2, 2))]);
        // The reverse direction still makes s1:2 an inter-switch port.
        assert!(t.is_link_port(pr(1, 2)));
        let mut down = port(3);
        down.state = 1; // LINK_DOWN
        let ch = t.port_status(2, false, down, t1);
        assert_eq!(ch.removed.len(), 2);
        assert_eq!(t.links().count(), 3);
    }

    #[test]
    fn disconnect_clears_switch_state_but_not_a_newer_connection() {
        let t0 = Instant::now();
        let mut t = triangle(t0);
        assert!(t.switch_disconnected(2, 999, t0).is_none());
        let ch = t.switch_disconnected(2, 2, t0).unwrap();
        assert_eq!(ch.removed.len(), 4);
        assert!(t.switch(2).is_none());
        assert_eq!(t.links().count(), 2);
    }

    #[test]
    fn lldp_from_unknown_switch_is_ignored_and_purges_mislearnt_endpoints() {
        let t0 = Instant::now();
        let mut t = build(t0, &[(1, 2), (2, 2)], &[]);
        let now = t0 + Duration::from_secs(5);
        let confirm = Duration::from_secs(1);
        assert!(t.lldp_seen(pr(9, 1), pr(1, 1), now).is_empty());
        let m = MacAddr([0, 0, 0, 0, 0, 7]);
        assert_eq!(t.learn(m, None, pr(1, 2), now, confirm), Learned::New);
        // s1:2 turns out to be an inter-switch port.
        let ch = t.lldp_seen(pr(2, 2), pr(1, 2), now);
        assert_eq!(ch.added.len(), 1);
        assert!(t.endpoint(&m).is_none());
    }
    #[test]
    fn a_flapping_cable_is_damped() {
        let t0 = Instant::now();
        let mut t = build(t0, &[(1, 2), (2, 2)], &[((1, 2), (2, 2))]);
        let (a, b) = (pr(1, 2), pr(2, 2));
        let mut down = port(2);
        down.state = 1;
        let mut now = t0;
        // Up (1), down (2), up (3), down (4): all go through.
        for i in 0..2 {
            now += Duration::from_secs(1);
            let ch = t.port_status(1, false, down.clone(), now);
            assert_eq!(ch.removed.len(), 2, "down #{i}");
            now += Duration::from_secs(1);
            t.port_status(1, false, port(2), now);
            if i == 0 {
                let ch = t.lldp_seen(a, b, now);
                assert_eq!(ch.added, vec![(a, b)], "up again");
                t.lldp_seen(b, a, now);
            }
        }
        // A fourth change inside the window: the cable stays down, although
        // the probes keep arriving; going down was never delayed.
        assert_eq!(t.links().count(), 0);
        assert!(t.lldp_seen(a, b, now).is_empty());
        assert!(t.lldp_seen(b, a, now).is_empty());
        assert_eq!(t.damped_link_ups(), 2);
        assert!(!t.is_link_port(a));
        // Once the oldest change is older than the window it comes back.
        let later = t0 + FLAP_WINDOW + Duration::from_millis(1);
        assert_eq!(t.lldp_seen(a, b, later).added, vec![(a, b)]);
        // The reverse direction of a cable that is up is never damped.
        assert_eq!(t.lldp_seen(b, a, later).added, vec![(b, a)]);
    }

    /// The index of link ends answers `is_link_port` as a scan of every
    /// link would, through discovery, re-cabling, a port going down, expiry
    /// and a switch leaving.
    #[test]
    fn link_ends_index_follows_every_change() {
        let t0 = Instant::now();
        let mut t = build(
            t0,
            &[(1, 3), (2, 3), (3, 3)],
            &[((1, 1), (2, 1)), ((2, 2), (3, 1))],
        );
        let check = |t: &Topology, when: &str| {
            for d in 1..=3 {
                for p in 1..=3 {
                    let at = pr(d, p);
                    let scan = t.links().any(|l| l.src == at || l.dst == at);
                    assert_eq!(t.is_link_port(at), scan, "{when}: {at:?}");
                }
            }
            let mut want: HashMap<PortRef, u32> = HashMap::new();
            for l in t.links() {
                *want.entry(l.dst).or_default() += 1;
            }
            assert_eq!(t.link_dsts, want, "{when}");
        };
        check(&t, "discovered");
        let mut now = t0 + Duration::from_secs(1);
        // (1, 1) is re-cabled to (3, 3): one direction seen so far.
        t.lldp_seen(pr(1, 1), pr(3, 3), now);
        check(&t, "re-cabled");
        let mut down = port(2);
        down.state = 1;
        t.port_status(2, false, down, now);
        check(&t, "port down");
        now += Duration::from_secs(30);
        t.lldp_seen(pr(3, 3), pr(1, 1), now);
        t.expire_links(now, Duration::from_secs(5));
        check(&t, "expired");
        assert_eq!(t.links().count(), 1);
        t.switch_disconnected(3, 3, now).expect("known");
        check(&t, "switch gone");
        assert!(t.link_dsts.is_empty());
    }

    /// Found by ofswarm's churn test on a loaded machine: an LLDP probe
    /// still in flight when its cable went down was read after the first
    /// end's PORT_STATUS (down) and brought the link back on a dead port;
    /// the second end's PORT_STATUS took it down again. Those two false
    /// changes damped the cable when it really came back, and the hosts
    /// behind it were cut off for a minute.
    #[test]
    fn a_probe_read_after_its_port_went_down_is_no_link() {
        let t0 = Instant::now();
        let mut t = build(t0, &[(1, 2), (2, 2)], &[((1, 2), (2, 2))]);
        let (a, b) = (pr(1, 2), pr(2, 2));
        let mut down = port(2);
        down.state = 1;
        let now = t0 + Duration::from_secs(1);
        assert_eq!(t.port_status(2, false, down.clone(), now).removed.len(), 2);
        // Sent from a before the cable went down, read now.
        assert!(t.lldp_seen(a, b, now).is_empty(), "b is down");
        assert!(t.lldp_seen(b, a, now).is_empty(), "b is down");
        assert_eq!(t.links().count(), 0);
        t.port_status(1, false, down, now);
        // The cable comes back once: up at once, in both directions.
        let later = now + Duration::from_secs(2);
        t.port_status(1, false, port(2), later);
        t.port_status(2, false, port(2), later);
        assert_eq!(t.lldp_seen(a, b, later).added, vec![(a, b)]);
        assert_eq!(t.lldp_seen(b, a, later).added, vec![(b, a)]);
        assert_eq!(t.damped_link_ups(), 0);
    }

    /// Found by ofswarm's churn mode: a switch whose controller connection
    /// dropped twice within a minute had its cables damped for the rest of
    /// the minute, so every host behind it was cut off although no cable
    /// ever went down (the switch forwards with its flows while away).
    #[test]
    fn a_switch_reconnecting_does_not_count_as_cable_flaps() {
        let t0 = Instant::now();
        let mut t = build(t0, &[(1, 2), (2, 2)], &[((1, 2), (2, 2))]);
        let (a, b) = (pr(1, 2), pr(2, 2));
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut now = t0;
        for i in 0..5u64 {
            now += Duration::from_secs(1);
            let ch = t.switch_disconnected(2, 2 + i * 10, now).expect("known");
            assert_eq!(ch.removed.len(), 2, "its links go with it (#{i})");
            now += Duration::from_millis(500);
            t.switch_connected(
                2,
                12 + i * 10,
                peer,
                features(2),
                (1..=2).map(port).collect(),
                now,
            );
            assert_eq!(t.lldp_seen(a, b, now).added, vec![(a, b)], "back (#{i})");
            assert_eq!(t.lldp_seen(b, a, now).added, vec![(b, a)]);
        }
        assert_eq!(t.damped_link_ups(), 0);
        // A cable that really flaps is still damped after such reconnects.
        let mut down = port(2);
        down.state = 1;
        for _ in 0..2 {
            now += Duration::from_secs(1);
            t.port_status(1, false, down.clone(), now);
            now += Duration::from_secs(1);
            t.port_status(1, false, port(2), now);
            t.lldp_seen(a, b, now);
            t.lldp_seen(b, a, now);
        }
        // The 4th change (an up) is held back, in both directions.
        assert_eq!(t.damped_link_ups(), 2);
        assert!(!t.has_link(a, b));
    }

    #[test]
    fn host_ports_are_edge_ports_with_an_endpoint_seen_since_they_came_up() {
        let t0 = Instant::now();
        let mut t = triangle(t0);
        let confirm = Duration::from_secs(1);
        let now = t0 + Duration::from_secs(2);
        assert!(!t.hosts_at(pr(1, 1), now, confirm), "no host yet");
        let m = MacAddr([0, 0, 0, 0, 0, 1]);
        assert_eq!(t.learn(m, None, pr(1, 1), now, confirm), Learned::New);
        assert!(t.hosts_at(pr(1, 1), now, confirm));
        assert!(!t.hosts_at(pr(1, 2), now, confirm), "a link port");
        assert!(!t.hosts_at(pr(9, 1), now, confirm), "no such switch");
        // The port goes down and up again (re-cabled): the host seen before
        // does not count any more.
        let mut down = port(1);
        down.state = 1;
        let later = now + Duration::from_secs(1);
        t.port_status(1, false, down, later);
        t.port_status(1, false, port(1), later);
        let confirmed = later + Duration::from_secs(1);
        assert!(t.is_edge_port(pr(1, 1), confirmed, confirm));
        assert!(!t.hosts_at(pr(1, 1), confirmed, confirm));
    }
}
