//! The node's etcd session: lease, registration, election, mirror of the
//! cluster's keys and, on the leader, the mastership assignment.
//!
//! One task owns the session and publishes a
//! [`ClusterView`] after every change. A session lives as long as its
//! lease: a keep-alive acknowledged at `t` with TTL `T` keeps the node
//! acting until `t_sent + T` by the local monotonic clock (the fence reads
//! that deadline, so a node paused past it stops acting the moment it runs
//! again). When the lease is lost (expired, revoked, or etcd unreachable
//! for longer than the TTL) the node stops acting, says why, and starts a
//! new session — a new lease, a new registration, a new campaign.
//!
//! Losing one etcd member changes nothing: the client talks to the others,
//! and the watch and keep-alive streams are re-opened on the same lease.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, LeaderKey,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::cluster::assign::assign;
use crate::config::ClusterSettings;
use crate::knowledge::cluster::{ClusterView, NodeInfo};
use crate::monitor::dpid::dpid_str;

/// Operations per etcd transaction at most (etcd's default limit is 128).
const TXN_OPS: usize = 100;
/// Changes of the mirror within this long are assigned together.
const ASSIGN_COALESCE: Duration = Duration::from_millis(20);
/// Largest value of a key this node reads (etcd's own limit is 1.5 MiB).
const MAX_VALUE: usize = 1 << 20;
/// How often every node probes the other nodes' API ports.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// Refused connections in a row after which a peer is dead.
const PROBE_STRIKES: u32 = 2;

/// Errors of the etcd session.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An etcd request failed.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// An etcd request did not answer in time.
    #[error("etcd did not answer {what} within {after:?}")]
    Timeout {
        /// The request.
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The lease is gone: this session ends.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// Bad TLS material for etcd.
    #[error("etcd TLS: {0}")]
    Tls(String),
}

/// What `P/nodes/ID` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeRecord {
    id: String,
    api: String,
}

/// The keys under the prefix, as last seen.
#[derive(Debug, Default)]
struct Mirror {
    /// Key → (value, create revision, mod revision).
    kvs: BTreeMap<String, (Vec<u8>, i64, i64)>,
    /// Key → lease it is attached to (keys with a lease only).
    leases: BTreeMap<String, i64>,
    revision: i64,
}

impl Mirror {
    fn put(&mut self, kv: &KeyValue) {
        let Ok(k) = kv.key_str() else { return };
        if kv.value().len() > MAX_VALUE {
            return;
        }
        self.kvs.insert(
            k.to_string(),
            (kv.value().to_vec(), kv.create_revision(), kv.mod_revision()),
        );
        if kv.lease() != 0 {
            self.leases.insert(k.to_string(), kv.lease());
        } else {
            self.leases.remove(k);
        }
    }
    fn delete(&mut self, kv: &KeyValue) {
        if let Ok(k) = kv.key_str() {
            self.kvs.remove(k);
            self.leases.remove(k);
        }
    }
    fn under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a (Vec<u8>, i64, i64))> + 'a {
        self.kvs
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(move |(k, v)| (&k[prefix.len()..], v))
    }
}

/// Keys of one cluster.
#[derive(Debug, Clone)]
struct Keys {
    root: String,
}

impl Keys {
    fn all(&self) -> String {
        format!("{}/", self.root)
    }
    fn nodes(&self) -> String {
        format!("{}/nodes/", self.root)
    }
    fn node(&self, id: &str) -> String {
        format!("{}{id}", self.nodes())
    }
    fn conns(&self) -> String {
        format!("{}/conns/", self.root)
    }
    fn conn(&self, id: &str) -> String {
        format!("{}{id}", self.conns())
    }
    fn election(&self) -> String {
        format!("{}/election", self.root)
    }
    fn masters(&self) -> String {
        format!("{}/masters/", self.root)
    }
    fn master(&self, dpid: u64) -> String {
        format!("{}{dpid:016x}", self.masters())
    }
}

/// The pieces of a view derived from the mirror.
struct Derived {
    nodes: BTreeMap<String, NodeInfo>,
    /// (node id, election key, create revision).
    leader: Option<(String, String, i64)>,
    masters: BTreeMap<u64, (String, u64)>,
    connected: BTreeMap<u64, BTreeSet<String>>,
}

fn derive(keys: &Keys, m: &Mirror) -> Derived {
    let mut nodes = BTreeMap::new();
    for (id, (v, _, _)) in m.under(&keys.nodes()) {
        match serde_json::from_slice::<NodeRecord>(v) {
            Ok(r) if r.id == id => {
                nodes.insert(
                    id.to_string(),
                    NodeInfo {
                        id: r.id,
                        api: r.api,
                    },
                );
            }
            _ => debug!(key = id, "unreadable node record ignored"),
        }
    }
    let election = format!("{}/", keys.election());
    let leader = m
        .under(&election)
        .min_by_key(|(_, (_, create, _))| *create)
        .and_then(|(k, (v, create, _))| {
            std::str::from_utf8(v)
                .ok()
                .map(|id| (id.to_string(), format!("{election}{k}"), *create))
        });
    let mut masters = BTreeMap::new();
    for (d, (v, _, modrev)) in m.under(&keys.masters()) {
        let (Ok(dpid), Ok(node)) = (u64::from_str_radix(d, 16), std::str::from_utf8(v)) else {
            continue;
        };
        masters.insert(
            dpid,
            (node.to_string(), u64::try_from(*modrev).unwrap_or(0)),
        );
    }
    let mut connected: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for (id, (v, _, _)) in m.under(&keys.conns()) {
        if !nodes.contains_key(id) {
            continue;
        }
        let Ok(list) = serde_json::from_slice::<Vec<String>>(v) else {
            continue;
        };
        for d in list {
            if let Ok(dpid) = u64::from_str_radix(&d, 16) {
                connected.entry(dpid).or_default().insert(id.to_string());
            }
        }
    }
    Derived {
        nodes,
        leader,
        masters,
        connected,
    }
}

/// The TLS options for etcd of `cfg` (None: plain `http://`).
pub fn tls_options(cfg: &ClusterSettings) -> Option<etcd_client::TlsOptions> {
    cfg.tls.as_ref().map(|t| {
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(t.ca_pem.clone()));
        if let Some((c, k)) = &t.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(c.clone(), k.clone()));
        }
        tls
    })
}

/// Connects to etcd (the client balances over every endpoint and
/// reconnects by itself).
pub async fn connect(cfg: &ClusterSettings) -> Result<Client, ClusterError> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_millis(500), cfg.lease_ttl / 2)
        .with_keep_alive_while_idle(true);
    if let Some(tls) = tls_options(cfg) {
        opts = opts.with_tls(tls);
    }
    let fut = Client::connect(cfg.endpoints.clone(), Some(opts));
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ClusterError::Timeout {
            what: "connect",
            after: Duration::from_secs(5),
        }),
    }
}

/// Every key under a prefix, then the keys put under it later, in order:
/// what a node follows of the shared store's host rows and of the relay's
/// requests.
pub struct PutFollower {
    ws: WatchStream,
}

impl PutFollower {
    /// Reads every key under `prefix` (returned) and watches the puts made
    /// after that read.
    pub async fn start(
        c: &mut Client,
        prefix: &str,
    ) -> Result<(Vec<KeyValue>, PutFollower), ClusterError> {
        let r = c.get(prefix, Some(GetOptions::new().with_prefix())).await?;
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev + 1);
        let ws = c.watch(prefix, Some(opts)).await?;
        Ok((r.kvs().to_vec(), PutFollower { ws }))
    }

    /// The key-values of the next puts; None when the watch ended, or was
    /// cancelled or compacted (read everything again).
    pub async fn next(&mut self) -> Result<Option<Vec<KeyValue>>, ClusterError> {
        while let Some(resp) = self.ws.message().await? {
            if resp.canceled() || resp.compact_revision() > 0 {
                return Ok(None);
            }
            let puts: Vec<KeyValue> = resp
                .events()
                .iter()
                .filter(|ev| ev.event_type() == EventType::Put)
                .filter_map(|ev| ev.kv().cloned())
                .collect();
            if !puts.is_empty() {
                return Ok(Some(puts));
            }
        }
        Ok(None)
    }
}

/// `fut` within `after`, or a timeout error naming `what`.
async fn within<T>(
    what: &'static str,
    after: Duration,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(after, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ClusterError::Timeout { what, after }),
    }
}

/// Starts the node's etcd session task. `connected` is the set of
/// datapath ids the forwarding core has connected; the returned receiver
/// carries the view.
pub fn spawn(
    cfg: ClusterSettings,
    connected: watch::Receiver<BTreeSet<u64>>,
    shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<ClusterView>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(ClusterView {
        node_id: cfg.node_id.clone(),
        lease_ttl_s: cfg.lease_ttl.as_secs(),
        not_acting: Some("connecting to etcd".into()),
        ..ClusterView::default()
    });
    let task = tokio::spawn(run(cfg, tx, connected, shutdown));
    (rx, task)
}

/// How a session ended.
enum Ended {
    Shutdown,
    Lost(String),
}

async fn run(
    cfg: ClusterSettings,
    tx: watch::Sender<ClusterView>,
    mut connected: watch::Receiver<BTreeSet<u64>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client: Option<Client> = None;
    let mut quiet_since: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let c = match &client {
            Some(c) => c.clone(),
            None => match connect(&cfg).await {
                Ok(c) => {
                    client = Some(c.clone());
                    c
                }
                Err(e) => {
                    not_acting(&tx, format!("cannot reach etcd: {e}"), &mut quiet_since);
                    if pause(&mut shutdown, Duration::from_millis(500)).await {
                        break;
                    }
                    continue;
                }
            },
        };
        let mut s = Session::new(&cfg, c, &tx);
        match s.run(&mut connected, &mut shutdown).await {
            Ended::Shutdown => {
                s.close().await;
                break;
            }
            Ended::Lost(why) => {
                not_acting(&tx, why, &mut quiet_since);
                s.abort();
                if pause(&mut shutdown, Duration::from_millis(200)).await {
                    break;
                }
            }
        }
    }
    tx.send_modify(|v| {
        v.is_leader = false;
        v.lease_valid_until = None;
        v.not_acting = Some("shutting down".into());
    });
    info!("cluster session ended");
}

/// Marks the view not acting and logs why (at most one warning a second
/// while it lasts).
fn not_acting(tx: &watch::Sender<ClusterView>, why: String, quiet_since: &mut Option<Instant>) {
    let now = Instant::now();
    if quiet_since.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
        warn!(reason = %why, "cluster: this node is not acting (no commands, no flow changes) until it holds a valid etcd lease again");
        *quiet_since = Some(now);
    }
    tx.send_modify(|v| {
        v.is_leader = false;
        v.lease_valid_until = None;
        v.lease_id = 0;
        v.not_acting = Some(why);
    });
}

/// Sleeps `d`; true when shutdown came first.
async fn pause(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

struct Session<'a> {
    cfg: &'a ClusterSettings,
    keys: Keys,
    client: Client,
    tx: &'a watch::Sender<ClusterView>,
    lease: i64,
    valid_until: Instant,
    mirror: Mirror,
    leader_key: Option<LeaderKey>,
    campaign: Option<JoinHandle<()>>,
    prober: Option<JoinHandle<()>>,
}

/// The `host:port` of an `http(s)://host:port[/…]` URL; None for an
/// unspecified host (`0.0.0.0`, `[::]`), which names no peer: probing it
/// would reach this node's own host.
fn authority(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let a = rest.split('/').next()?;
    let unspecified = a
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|s| s.ip().is_unspecified());
    (!a.is_empty() && !unspecified).then_some(a)
}

/// Fast detection of a dead peer: a node whose API port *refuses*
/// connections (its process is gone and its host answered with a reset) is
/// dead, so its lease is revoked at once instead of waiting for it to
/// expire — a `kill -9`'d leader is replaced within a few hundred
/// milliseconds. A paused or unreachable node still accepts or times out:
/// only its lease's expiry removes it.
async fn probe_peers(
    me: String,
    keys: Keys,
    mut client: Client,
    view: watch::Receiver<ClusterView>,
) {
    let mut strikes: BTreeMap<String, u32> = BTreeMap::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let peers: Vec<(String, String)> = view
            .borrow()
            .nodes
            .values()
            .filter(|n| n.id != me)
            .filter_map(|n| Some((n.id.clone(), authority(&n.api)?.to_string())))
            .collect();
        strikes.retain(|id, _| peers.iter().any(|(p, _)| p == id));
        for (id, addr) in peers {
            let r = tokio::time::timeout(
                Duration::from_millis(300),
                tokio::net::TcpStream::connect(addr.as_str()),
            )
            .await;
            let refused =
                matches!(&r, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused);
            let n = strikes.entry(id.clone()).or_insert(0);
            *n = if refused { *n + 1 } else { 0 };
            if *n < PROBE_STRIKES {
                continue;
            }
            *n = 0;
            let lease = match within(
                "read",
                Duration::from_secs(1),
                client.get(keys.node(&id), None),
            )
            .await
            {
                Ok(r) => r.kvs().first().map(|kv| kv.lease()).unwrap_or(0),
                Err(_) => 0,
            };
            if lease == 0 {
                continue;
            }
            warn!(node = %id, api = %addr, lease = format!("{lease:x}"), "cluster: a node's API refuses connections (its process is gone): revoking its lease now");
            if let Err(e) = within(
                "lease revoke",
                Duration::from_secs(1),
                client.lease_revoke(lease),
            )
            .await
            {
                debug!(node = %id, error = %e, "lease not revoked (already gone?)");
            }
        }
    }
}

impl<'a> Session<'a> {
    fn new(cfg: &'a ClusterSettings, client: Client, tx: &'a watch::Sender<ClusterView>) -> Self {
        Session {
            cfg,
            keys: Keys {
                root: cfg.prefix.clone(),
            },
            client,
            tx,
            lease: 0,
            valid_until: Instant::now(),
            mirror: Mirror::default(),
            leader_key: None,
            campaign: None,
            prober: None,
        }
    }

    fn abort(&mut self) {
        if let Some(c) = self.campaign.take() {
            c.abort();
        }
        if let Some(p) = self.prober.take() {
            p.abort();
        }
    }

    /// Shutdown: give up the lease at once so that the others take over
    /// without waiting for it to expire.
    async fn close(&mut self) {
        self.abort();
        if self.lease != 0 {
            let mut c = self.client.clone();
            let _ = within(
                "lease revoke",
                Duration::from_secs(1),
                c.lease_revoke(self.lease),
            )
            .await;
            info!(lease = self.lease, "cluster lease revoked");
        }
    }

    fn rpc_timeout(&self) -> Duration {
        (self.cfg.lease_ttl / 2).max(Duration::from_millis(500))
    }

    async fn run(
        &mut self,
        connected: &mut watch::Receiver<BTreeSet<u64>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        match self.start(connected).await {
            Ok(()) => {}
            Err(e) => return Ended::Lost(e.to_string()),
        }
        let (mut keeper, mut ka) = match self.keep_alive_stream().await {
            Ok((k, s)) => (Some(k), Some(s)),
            Err(_) => (None, None),
        };
        let mut ws = self.watch_from(self.mirror.revision + 1).await.ok();
        let (ctx, mut crx) = oneshot::channel();
        self.campaign = Some(self.spawn_campaign(ctx));
        self.prober = Some(tokio::spawn(probe_peers(
            self.cfg.node_id.clone(),
            self.keys.clone(),
            self.client.clone(),
            self.tx.subscribe(),
        )));
        let mut tick = tokio::time::interval(self.cfg.lease_ttl / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ka_sent = Instant::now();
        let mut assign_due: Option<Instant> = Some(Instant::now());
        let mut resync = false;
        loop {
            let due = assign_due.filter(|_| self.leader_key.is_some());
            tokio::select! {
                _ = tick.tick() => {
                    if Instant::now() >= self.valid_until {
                        return Ended::Lost("no keep-alive acknowledged within the lease TTL".into());
                    }
                    if keeper.is_none() {
                        if let Ok((k, s)) = self.keep_alive_stream().await {
                            keeper = Some(k);
                            ka = Some(s);
                        }
                    }
                    if let Some(k) = keeper.as_mut() {
                        ka_sent = Instant::now();
                        if let Err(e) = k.keep_alive().await {
                            debug!(error = %e, "keep-alive not sent; re-opening the stream");
                            keeper = None;
                            ka = None;
                        }
                    }
                    if ws.is_none() || resync {
                        resync = false;
                        match self.load().await {
                            Ok(()) => {
                                ws = self.watch_from(self.mirror.revision + 1).await.ok();
                                if let Err(why) = self.publish() { return Ended::Lost(why); }
                                assign_due.get_or_insert(Instant::now());
                            }
                            Err(e) => debug!(error = %e, "cluster keys not read"),
                        }
                    }
                }
                r = async { ka.as_mut().map(|s| s.message()).expect("guarded").await }, if ka.is_some() => {
                    match r {
                        Ok(Some(resp)) if resp.ttl() > 0 => {
                            let until = ka_sent + Duration::from_secs(resp.ttl() as u64);
                            if until > self.valid_until { self.valid_until = until; }
                            self.tx.send_modify(|v| v.lease_valid_until = Some(self.valid_until));
                        }
                        Ok(Some(_)) => return Ended::Lost("etcd says the lease expired".into()),
                        Ok(None) | Err(_) => { keeper = None; ka = None; }
                    }
                }
                r = async { ws.as_mut().map(|s| s.message()).expect("guarded").await }, if ws.is_some() => {
                    match r {
                        Ok(Some(resp)) => {
                            if resp.canceled() || resp.compact_revision() > 0 {
                                ws = None;
                                resync = true;
                                continue;
                            }
                            for ev in resp.events() {
                                let Some(kv) = ev.kv() else { continue };
                                match ev.event_type() {
                                    EventType::Put => self.mirror.put(kv),
                                    EventType::Delete => self.mirror.delete(kv),
                                }
                                self.mirror.revision = self.mirror.revision.max(kv.mod_revision());
                            }
                            if let Some(h) = resp.header() {
                                self.mirror.revision = self.mirror.revision.max(h.revision());
                            }
                            if let Err(why) = self.publish() { return Ended::Lost(why); }
                            if assign_due.is_none() { assign_due = Some(Instant::now() + ASSIGN_COALESCE); }
                        }
                        Ok(None) | Err(_) => { ws = None; resync = true; }
                    }
                }
                r = &mut crx, if self.campaign.is_some() => {
                    self.campaign = None;
                    match r {
                        Ok(Ok(key)) => {
                            if Instant::now() >= self.valid_until {
                                return Ended::Lost("elected after the lease ran out".into());
                            }
                            info!(node = %self.cfg.node_id, key = %String::from_utf8_lossy(key.key()), revision = key.rev(), "cluster: elected leader");
                            self.leader_key = Some(key);
                            if let Err(why) = self.publish() { return Ended::Lost(why); }
                            assign_due = Some(Instant::now());
                        }
                        Ok(Err(e)) => return Ended::Lost(format!("campaign failed: {e}")),
                        Err(_) => return Ended::Lost("campaign task ended".into()),
                    }
                }
                _ = async {
                    match due {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    assign_due = None;
                    if let Err(e) = self.assign_masters().await {
                        match e {
                            ClusterError::LeaseLost(why) => return Ended::Lost(why),
                            e => {
                                debug!(error = %e, "mastership assignment not written; retrying");
                                assign_due = Some(Instant::now() + Duration::from_millis(200));
                            }
                        }
                    }
                }
                r = connected.changed() => {
                    if r.is_err() { return Ended::Shutdown; }
                    if let Err(e) = self.put_conns(connected).await {
                        debug!(error = %e, "connected switches not published; retrying on the next tick");
                    }
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return Ended::Shutdown; }
                }
            }
        }
    }

    /// Lease, registration, connections, and the first read of the keys.
    async fn start(
        &mut self,
        connected: &mut watch::Receiver<BTreeSet<u64>>,
    ) -> Result<(), ClusterError> {
        let t = self.rpc_timeout();
        let sent = Instant::now();
        let ttl = self.cfg.lease_ttl.as_secs() as i64;
        let g = within("lease grant", t, self.client.lease_grant(ttl, None)).await?;
        self.lease = g.id();
        self.valid_until = sent + Duration::from_secs(g.ttl().max(0) as u64);
        let rec = NodeRecord {
            id: self.cfg.node_id.clone(),
            api: self.cfg.advertise_api.clone(),
        };
        let body = serde_json::to_vec(&rec).map_err(|e| ClusterError::LeaseLost(e.to_string()))?;
        within(
            "register",
            t,
            self.client.put(
                self.keys.node(&self.cfg.node_id),
                body,
                Some(PutOptions::new().with_lease(self.lease)),
            ),
        )
        .await?;
        self.put_conns(connected).await?;
        self.load().await?;
        self.tx.send_modify(|v| {
            v.lease_id = self.lease;
            v.lease_ttl_s = g.ttl().max(0) as u64;
            v.lease_valid_until = Some(self.valid_until);
            v.not_acting = None;
        });
        info!(node = %self.cfg.node_id, lease = format!("{:x}", self.lease), ttl_s = g.ttl(), "cluster: registered");
        self.publish().map_err(ClusterError::LeaseLost)
    }

    async fn keep_alive_stream(
        &mut self,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream), ClusterError> {
        within(
            "keep-alive stream",
            self.rpc_timeout(),
            self.client.lease_keep_alive(self.lease),
        )
        .await
    }

    async fn watch_from(&mut self, rev: i64) -> Result<WatchStream, ClusterError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(rev);
        within(
            "watch",
            self.rpc_timeout(),
            self.client.watch(self.keys.all(), Some(opts)),
        )
        .await
    }

    /// Reads every key under the prefix into the mirror.
    async fn load(&mut self) -> Result<(), ClusterError> {
        let r = within(
            "read",
            self.rpc_timeout(),
            self.client
                .get(self.keys.all(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut m = Mirror::default();
        for kv in r.kvs() {
            m.put(kv);
        }
        m.revision = r.header().map(|h| h.revision()).unwrap_or(0);
        self.mirror = m;
        Ok(())
    }

    async fn put_conns(
        &mut self,
        connected: &mut watch::Receiver<BTreeSet<u64>>,
    ) -> Result<(), ClusterError> {
        let list: Vec<String> = connected
            .borrow_and_update()
            .iter()
            .map(|d| format!("{d:016x}"))
            .collect();
        let body = serde_json::to_vec(&list).map_err(|e| ClusterError::LeaseLost(e.to_string()))?;
        within(
            "publish connections",
            self.rpc_timeout(),
            self.client.put(
                self.keys.conn(&self.cfg.node_id),
                body,
                Some(PutOptions::new().with_lease(self.lease)),
            ),
        )
        .await?;
        Ok(())
    }

    fn spawn_campaign(
        &self,
        done: oneshot::Sender<Result<LeaderKey, etcd_client::Error>>,
    ) -> JoinHandle<()> {
        let mut c = self.client.election_client();
        let name = self.keys.election();
        let id = self.cfg.node_id.clone();
        let lease = self.lease;
        tokio::spawn(async move {
            let r = c.campaign(name, id, lease).await.and_then(|mut resp| {
                resp.take_leader().ok_or_else(|| {
                    etcd_client::Error::ElectError("campaign answered without a leader key".into())
                })
            });
            let _ = done.send(r);
        })
    }

    /// Publishes the view derived from the mirror. Err when this node's
    /// leader key vanished (the session must end).
    fn publish(&mut self) -> Result<(), String> {
        let d = derive(&self.keys, &self.mirror);
        if let Some(k) = &self.leader_key {
            let key = String::from_utf8_lossy(k.key()).to_string();
            if !self.mirror.kvs.contains_key(&key) {
                self.leader_key = None;
                return Err("this node's leader key is gone".into());
            }
        }
        let is_leader = self.leader_key.is_some();
        // This node's own key while it leads (the mirror may still show its
        // predecessor's for a moment after the election returned).
        let mine = self
            .leader_key
            .as_ref()
            .map(|k| (String::from_utf8_lossy(k.key()).to_string(), k.rev()));
        let (leader, leader_key) = match mine {
            Some(k) => (Some(self.cfg.node_id.clone()), Some(k)),
            None => (
                d.leader.as_ref().map(|l| l.0.clone()),
                d.leader.as_ref().map(|l| (l.1.clone(), l.2)),
            ),
        };
        let rev = self.mirror.revision;
        self.tx.send_modify(|v| {
            if v.leader != leader {
                info!(
                    leader = leader.as_deref().unwrap_or("none"),
                    "cluster: leader changed"
                );
            }
            v.nodes = d.nodes;
            v.leader_key = leader_key;
            v.leader = leader;
            v.is_leader = is_leader;
            v.masters = d.masters;
            v.connected = d
                .connected
                .into_iter()
                .map(|(k, s)| (k, s.into_iter().collect()))
                .collect();
            v.revision = rev;
        });
        Ok(())
    }

    /// The leader assigns every switch a master and writes what changed,
    /// each transaction conditioned on its leader key.
    async fn assign_masters(&mut self) -> Result<(), ClusterError> {
        let Some(lk) = self.leader_key.clone() else {
            return Ok(());
        };
        if Instant::now() >= self.valid_until {
            return Err(ClusterError::LeaseLost(
                "the lease ran out before the assignment was written".into(),
            ));
        }
        let d = derive(&self.keys, &self.mirror);
        let current: BTreeMap<u64, String> = d
            .masters
            .iter()
            .map(|(k, (n, _))| (*k, n.clone()))
            .collect();
        let live: BTreeSet<String> = d.nodes.keys().cloned().collect();
        let want = assign(&current, &d.connected, &live);
        let mut ops = Vec::new();
        for (dpid, node) in &want {
            if current.get(dpid) != Some(node) {
                info!(dpid = %dpid_str(*dpid), from = current.get(dpid).map(String::as_str).unwrap_or("-"), to = %node, "cluster: mastership assigned");
                ops.push(TxnOp::put(self.keys.master(*dpid), node.clone(), None));
            }
        }
        for dpid in current.keys() {
            if !want.contains_key(dpid) {
                ops.push(TxnOp::delete(self.keys.master(*dpid), None));
            }
        }
        for chunk in ops.chunks(TXN_OPS) {
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    lk.key().to_vec(),
                    CompareOp::Equal,
                    lk.rev(),
                )])
                .and_then(chunk.to_vec());
            let r = within("assign", self.rpc_timeout(), self.client.txn(txn)).await?;
            if !r.succeeded() {
                self.leader_key = None;
                return Err(ClusterError::LeaseLost(
                    "the leader key changed: this node no longer leads".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_of_api_urls() {
        assert_eq!(authority("http://10.0.0.1:8080"), Some("10.0.0.1:8080"));
        assert_eq!(authority("https://a.example:443/x"), Some("a.example:443"));
        assert_eq!(authority("ftp://a:1"), None);
        assert_eq!(authority("http://"), None);
        assert_eq!(authority("http://0.0.0.0:8080"), None);
        assert_eq!(authority("http://[::]:8080"), None);
    }

    #[test]
    fn the_mirror_derives_nodes_leader_masters_and_connections() {
        let keys = Keys {
            root: "/shoal".into(),
        };
        let mut m = Mirror::default();
        let mut put = |k: &str, v: &str, create: i64, modrev: i64| {
            m.kvs
                .insert(k.to_string(), (v.as_bytes().to_vec(), create, modrev));
        };
        put("/shoal/nodes/a", r#"{"id":"a","api":"http://a"}"#, 1, 1);
        put("/shoal/nodes/b", r#"{"id":"b","api":"http://b"}"#, 2, 2);
        put("/shoal/nodes/c", r#"{"id":"x","api":"http://c"}"#, 3, 3); // id mismatch
        put("/shoal/election/2", "b", 5, 5);
        put("/shoal/election/1", "a", 7, 7);
        put("/shoal/masters/0000000000000011", "a", 8, 12);
        put("/shoal/masters/zz", "a", 8, 12); // not a dpid
        put(
            "/shoal/conns/a",
            r#"["0000000000000011","0000000000000021"]"#,
            4,
            9,
        );
        put("/shoal/conns/gone", r#"["0000000000000011"]"#, 4, 9); // not registered
        put("/shoalx/nodes/q", r#"{"id":"q","api":"http://q"}"#, 1, 1); // other prefix
        let d = derive(&keys, &m);
        assert_eq!(d.nodes.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(d.leader.map(|l| l.0), Some("b".to_string()));
        assert_eq!(d.masters.get(&0x11), Some(&("a".to_string(), 12)));
        assert_eq!(d.masters.len(), 1);
        assert_eq!(
            d.connected
                .get(&0x11)
                .map(|s| s.iter().cloned().collect::<Vec<_>>()),
            Some(vec!["a".to_string()])
        );
        assert!(d.connected.contains_key(&0x21));
    }
}
