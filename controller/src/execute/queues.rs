//! Migration-queue reservations on Open vSwitch ports (VMPatrol),
//! through the project's own OVSDB client.
//!
//! A reservation on an egress port is one `linux-htb` QoS row with two
//! queues — queue 0, the default, up to the link rate; queue 1, the
//! migration, with min-rate = max-rate = L — and the Port pointing at it,
//! created in ONE transaction that first `wait`s for the Port to exist
//! without a QoS (so a busy port is refused atomically, never clobbered) and
//! bumps `next_cfg` so that [`QueueManager::reserve`] can wait until
//! `ovs-vswitchd` has applied it (`cur_cfg`), like `ovs-vsctl` does.
//!
//! OVS maps queue N to htb class `1:(N+1)` (verified on OVS 3.1: queue 0 is
//! class 1:1, the qdisc's default, queue 1 is class 1:2 under the root class
//! 1:fffe). On the kernel datapath an OpenFlow `set_queue:1` steers the
//! migration flow into class 1:2; on the userspace (netdev) datapath
//! `set_queue` does not steer (docs/testbed.md), so the optional classifier adds
//! `tc filter add dev PORT parent 1: protocol ip prio P u32 match ip protocol
//! 6 0xff match ip src S/32 match ip dst D/32 match ip dport PORT 0xffff
//! flowid 1:2` through a [`TcRunner`]. That part runs `tc` locally, so it
//! needs the controller on the switch's host (and in the switch's network
//! namespace, [`SystemTc::in_netns`]); the OVSDB part also works remotely
//! over `tcp:`.
//!
//! Every row carries `external_ids:shoal-migration=<migration id>` (the QoS
//! also its port, rates and classifier), so a restarted controller finds
//! its leftovers with [`QueueManager::list`] and removes them with
//! [`QueueManager::cleanup_all`]. QoS and Queue are root tables in the
//! `Open_vSwitch` schema: clearing `Port.qos` does NOT garbage-collect them,
//! so [`QueueManager::release`] deletes them explicitly, in the same
//! transaction that clears the port. When OVS removes the QoS from the port
//! it deletes the htb qdisc, and the classifier filter with it; `release`
//! still deletes the filter first, so the undo is exact.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::ovsdb::op::{self, Function, Mutator, Until};
use super::ovsdb::{datum, OvsdbClient, OvsdbError};

/// `external_ids` key marking Shoal's QoS and Queue rows; its value is the
/// migration id.
pub const MARKER_KEY: &str = "shoal-migration";
const KEY_PORT: &str = "shoal-port";
const KEY_LINK: &str = "shoal-link-bps";
const KEY_RATE: &str = "shoal-rate-bps";
const KEY_CLASSIFIER: &str = "shoal-classifier";
const KEY_QUEUE: &str = "shoal-queue";

/// The OVS queue number of the migration queue (for `set_queue`).
pub const MIGRATION_QUEUE: u32 = 1;
/// The htb class OVS creates for [`MIGRATION_QUEUE`] (queue N ↔ class
/// `1:(N+1)`), the `flowid` of the classifier.
pub const MIGRATION_CLASS: &str = "1:2";

const DB: &str = "Open_vSwitch";
/// Longest Linux interface name (IFNAMSIZ − 1).
const MAX_IFNAME: usize = 15;
const MAX_ID: usize = 200;

/// Errors of queue reservations.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// A parameter is out of range or malformed.
    #[error("invalid reservation request: {0}")]
    Invalid(String),
    /// No Port row of that name.
    #[error("port {port} does not exist in OVSDB")]
    PortNotFound {
        /// The port.
        port: String,
    },
    /// The port already has a QoS (Shoal's or somebody else's).
    #[error("port {port} already has QoS {qos}{}", owner.as_ref().map(|o| format!(" (shoal migration {o})")).unwrap_or_default())]
    PortBusy {
        /// The port.
        port: String,
        /// UUID of its QoS row.
        qos: String,
        /// The migration that owns it, when it is Shoal's.
        owner: Option<String>,
    },
    /// The database said no, or the connection failed.
    #[error(transparent)]
    Ovsdb(#[from] OvsdbError),
    /// `ovs-vswitchd` did not apply the change in time (is it running?).
    #[error("ovs-vswitchd did not apply configuration {cfg} within {after:?}")]
    NotApplied {
        /// The `next_cfg` waited for.
        cfg: i64,
        /// The wait.
        after: Duration,
    },
    /// The htb class of the migration queue is missing on the port.
    #[error("htb class {class} missing on {port} after OVS applied the QoS")]
    ClassMissing {
        /// The port.
        port: String,
        /// The class.
        class: String,
    },
    /// A `tc` command failed.
    #[error("tc {command} failed: {why}")]
    Tc {
        /// The arguments.
        command: String,
        /// The failure.
        why: String,
    },
    /// A row or result did not have the expected shape.
    #[error("unexpected OVSDB data: {0}")]
    BadData(String),
}

/// The migration's TCP connection, for the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpMatch {
    /// Sender (source hypervisor) address.
    pub src: Ipv4Addr,
    /// Receiver (destination hypervisor) address.
    pub dst: Ipv4Addr,
    /// Receiver's TCP port.
    pub dst_port: u16,
}

impl TcpMatch {
    /// The `external_ids` form, `SRC>DST:PORT`.
    pub fn encode(&self) -> String {
        format!("{}>{}:{}", self.src, self.dst, self.dst_port)
    }

    /// Parses [`TcpMatch::encode`]'s form.
    pub fn decode(s: &str) -> Option<Self> {
        let (src, rest) = s.split_once('>')?;
        let (dst, port) = rest.split_once(':')?;
        let m = TcpMatch {
            src: src.parse().ok()?,
            dst: dst.parse().ok()?,
            dst_port: port.parse().ok()?,
        };
        (m.dst_port != 0).then_some(m)
    }
}

impl fmt::Display for TcpMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp {} -> {}:{}", self.src, self.dst, self.dst_port)
    }
}

/// One reservation on one egress port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReservation {
    /// The migration it belongs to (`external_ids:shoal-migration`).
    pub migration_id: String,
    /// The OVS port (= Linux interface) name.
    pub port: String,
    /// The link rate given to the QoS and queue 0 (bits/s).
    pub link_bps: u64,
    /// min-rate = max-rate of queue 1 (bits/s).
    pub rate_bps: u64,
    /// The tc classifier, when one was installed.
    pub classifier: Option<TcpMatch>,
    /// UUID of the QoS row.
    pub qos_uuid: String,
    /// UUIDs of the Queue rows, in queue-number order.
    pub queue_uuids: Vec<String>,
    /// Whether the port still points at the QoS (always true right after
    /// [`QueueManager::reserve`]; false for a leftover found by
    /// [`QueueManager::list`] whose port was cleared or deleted).
    pub attached: bool,
}

/// What [`QueueManager::cleanup_all`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// The reservations released.
    pub released: Vec<QueueReservation>,
    /// Marked Queue rows that no QoS referenced any more, deleted.
    pub orphan_queues: usize,
}

/// A boxed future of [`TcRunner`].
pub type TcFuture<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// Runs `tc`. The real implementation is [`SystemTc`]; tests may record
/// the commands instead.
pub trait TcRunner: Send + Sync {
    /// Runs `tc ARGS...`: stdout on success, a description of the failure
    /// otherwise.
    fn tc<'a>(&'a self, args: &'a [String]) -> TcFuture<'a>;
}

/// Runs the `tc` binary of this host, optionally inside a network
/// namespace (`ip netns exec NS tc ...`), with a deadline.
#[derive(Debug, Clone)]
pub struct SystemTc {
    netns: Option<String>,
    timeout: Duration,
}

impl Default for SystemTc {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemTc {
    /// `tc` in the controller's own namespace.
    pub fn new() -> Self {
        SystemTc {
            netns: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// `tc` inside namespace `ns` (where the switch's ports are).
    pub fn in_netns(ns: &str) -> Self {
        SystemTc {
            netns: Some(ns.to_string()),
            timeout: Duration::from_secs(5),
        }
    }
}

impl TcRunner for SystemTc {
    fn tc<'a>(&'a self, args: &'a [String]) -> TcFuture<'a> {
        Box::pin(async move {
            let mut cmd = match &self.netns {
                Some(ns) => {
                    let mut c = tokio::process::Command::new("ip");
                    c.args(["netns", "exec", ns, "tc"]);
                    c
                }
                None => tokio::process::Command::new("tc"),
            };
            cmd.args(args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let out = match tokio::time::timeout(self.timeout, cmd.output()).await {
                Ok(Ok(out)) => out,
                Ok(Err(e)) => return Err(format!("cannot run tc: {e}")),
                Err(_) => return Err(format!("timed out after {:?}", self.timeout)),
            };
            if !out.status.success() {
                return Err(format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })
    }
}

/// Settings of the [`QueueManager`].
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// How long to wait for `ovs-vswitchd` to apply a change.
    pub apply_timeout: Duration,
    /// The `prio` of Shoal's tc filter.
    pub tc_prio: u16,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            apply_timeout: Duration::from_secs(5),
            tc_prio: 1,
        }
    }
}

/// Creates, finds and removes migration-queue reservations.
#[derive(Clone)]
pub struct QueueManager {
    client: OvsdbClient,
    tc: Arc<dyn TcRunner>,
    cfg: QueueConfig,
}

impl fmt::Debug for QueueManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueManager")
            .field("client", &self.client)
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn validate_port(port: &str) -> Result<(), QueueError> {
    let ok = !port.is_empty()
        && port.len() <= MAX_IFNAME
        && !port.starts_with('-')
        && port
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(())
    } else {
        Err(QueueError::Invalid(format!(
            "port name {port:?} is not a Linux interface name"
        )))
    }
}

fn validate_id(id: &str) -> Result<(), QueueError> {
    if id.is_empty() || id.len() > MAX_ID || id.chars().any(char::is_control) {
        return Err(QueueError::Invalid(format!(
            "migration id {id:?} must be 1..={MAX_ID} printable characters"
        )));
    }
    Ok(())
}

fn validate_request(
    migration_id: &str,
    port: &str,
    link_bps: u64,
    rate_bps: u64,
    classifier: Option<&TcpMatch>,
) -> Result<(), QueueError> {
    validate_id(migration_id)?;
    validate_port(port)?;
    if link_bps == 0 || rate_bps == 0 || rate_bps > link_bps {
        return Err(QueueError::Invalid(format!(
            "need 0 < rate ({rate_bps} bit/s) <= link ({link_bps} bit/s)"
        )));
    }
    if classifier.is_some_and(|m| m.dst_port == 0) {
        return Err(QueueError::Invalid("classifier port 0".into()));
    }
    Ok(())
}

/// `tc filter add` arguments of a classifier.
pub fn filter_add_args(port: &str, prio: u16, m: &TcpMatch) -> Vec<String> {
    [
        "filter",
        "add",
        "dev",
        port,
        "parent",
        "1:",
        "protocol",
        "ip",
        "prio",
        &prio.to_string(),
        "u32",
        "match",
        "ip",
        "protocol",
        "6",
        "0xff",
        "match",
        "ip",
        "src",
        &format!("{}/32", m.src),
        "match",
        "ip",
        "dst",
        &format!("{}/32", m.dst),
        "match",
        "ip",
        "dport",
        &m.dst_port.to_string(),
        "0xffff",
        "flowid",
        MIGRATION_CLASS,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `tc filter del` arguments removing Shoal's filters of `prio` on `port`.
pub fn filter_del_args(port: &str, prio: u16) -> Vec<String> {
    [
        "filter",
        "del",
        "dev",
        port,
        "parent",
        "1:",
        "protocol",
        "ip",
        "prio",
        &prio.to_string(),
        "u32",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Reads a QoS row (columns `_uuid`, `queues`, `external_ids`) into a
/// reservation when it carries the marker. `ports` maps QoS UUIDs to the
/// ports pointing at them.
fn parse_qos_row(row: &Value, ports: &HashMap<String, String>) -> Option<QueueReservation> {
    let ext = datum::str_map(row.get("external_ids")?)?;
    let migration_id = ext.get(MARKER_KEY)?.clone();
    let qos_uuid = datum::uuid(row.get("_uuid")?)?.to_string();
    let mut queues: Vec<(i64, String)> = row
        .get("queues")
        .and_then(datum::map)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k.as_i64()?, datum::uuid(v)?.to_string())))
        .collect();
    queues.sort();
    let num = |k: &str| ext.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    let classifier = ext.get(KEY_CLASSIFIER).and_then(|c| {
        let m = TcpMatch::decode(c);
        if m.is_none() {
            warn!(qos = %qos_uuid, classifier = %c, "unreadable shoal classifier marker");
        }
        m
    });
    let (port, attached) = match ports.get(&qos_uuid) {
        Some(p) => (p.clone(), true),
        None => (ext.get(KEY_PORT).cloned().unwrap_or_default(), false),
    };
    Some(QueueReservation {
        migration_id,
        port,
        link_bps: num(KEY_LINK),
        rate_bps: num(KEY_RATE),
        classifier,
        qos_uuid,
        queue_uuids: queues.into_iter().map(|(_, u)| u).collect(),
        attached,
    })
}

fn result_at(results: &[Value], i: usize) -> Result<&Value, QueueError> {
    results
        .get(i)
        .ok_or_else(|| QueueError::BadData(format!("no result {i}")))
}

fn inserted(results: &[Value], i: usize) -> Result<String, QueueError> {
    datum::inserted_uuid(result_at(results, i)?)
        .map(str::to_string)
        .ok_or_else(|| QueueError::BadData(format!("insert {i} returned no uuid")))
}

fn next_cfg_of(select: &Value) -> Result<i64, QueueError> {
    datum::rows(select)
        .and_then(|r| r.first())
        .and_then(|r| r.get("next_cfg"))
        .and_then(Value::as_i64)
        .ok_or_else(|| QueueError::BadData("no next_cfg in the Open_vSwitch row".into()))
}

impl QueueManager {
    /// A manager over `client`, running `tc` through `tc`.
    pub fn new(client: OvsdbClient, tc: Arc<dyn TcRunner>) -> Self {
        Self::with_config(client, tc, QueueConfig::default())
    }

    /// Like [`QueueManager::new`] with explicit settings.
    pub fn with_config(client: OvsdbClient, tc: Arc<dyn TcRunner>, cfg: QueueConfig) -> Self {
        QueueManager { client, tc, cfg }
    }

    /// The OVSDB connection.
    pub fn client(&self) -> &OvsdbClient {
        &self.client
    }

    /// Reserves `rate_bps` (min = max) for migration `migration_id` on
    /// egress port `port` of a link of `link_bps`: a `linux-htb` QoS with
    /// queue 0 (default, min `link − rate`, max `link`) and queue 1
    /// (migration, min = max = `rate`), attached to the port in one
    /// transaction that fails when the port is missing or already has a
    /// QoS. Waits until `ovs-vswitchd` applied it; with a `classifier`,
    /// checks the htb class and adds the tc filter steering the migration
    /// connection into it. On any failure after the commit everything is
    /// rolled back and the error returned.
    pub async fn reserve(
        &self,
        migration_id: &str,
        port: &str,
        link_bps: u64,
        rate_bps: u64,
        classifier: Option<TcpMatch>,
    ) -> Result<QueueReservation, QueueError> {
        validate_request(migration_id, port, link_bps, rate_bps, classifier.as_ref())?;
        let link = link_bps.to_string();
        let rate = rate_bps.to_string();
        let rest = (link_bps - rate_bps).to_string();
        let mut q0_cfg = vec![("max-rate", link.as_str())];
        if link_bps > rate_bps {
            q0_cfg.push(("min-rate", rest.as_str()));
        }
        let mut qos_ext: Vec<(&str, String)> = vec![
            (MARKER_KEY, migration_id.to_string()),
            (KEY_PORT, port.to_string()),
            (KEY_LINK, link.clone()),
            (KEY_RATE, rate.clone()),
        ];
        if let Some(m) = &classifier {
            qos_ext.push((KEY_CLASSIFIER, m.encode()));
        }
        let port_is = vec![op::cond("name", Function::Eq, json!(port))];
        let ops = vec![
            // 0: the port exists and has no QoS (atomically with the rest).
            op::wait(
                "Port",
                port_is.clone(),
                &["qos"],
                Until::Eq,
                vec![json!({"qos": op::set(vec![])})],
                Some(0),
            ),
            // 1, 2: the queues.
            op::insert(
                "Queue",
                json!({
                    "other_config": op::str_map(q0_cfg),
                    "external_ids": op::str_map([(MARKER_KEY, migration_id), (KEY_QUEUE, "0")]),
                }),
                Some("q0"),
            ),
            op::insert(
                "Queue",
                json!({
                    "other_config": op::str_map([("min-rate", &rate), ("max-rate", &rate)]),
                    "external_ids": op::str_map([(MARKER_KEY, migration_id), (KEY_QUEUE, "1")]),
                }),
                Some("q1"),
            ),
            // 3: the QoS.
            op::insert(
                "QoS",
                json!({
                    "type": "linux-htb",
                    "other_config": op::str_map([("max-rate", &link)]),
                    "queues": op::map(vec![
                        (json!(0), op::named_uuid("q0")),
                        (json!(MIGRATION_QUEUE), op::named_uuid("q1")),
                    ]),
                    "external_ids": op::str_map(qos_ext),
                }),
                Some("qos"),
            ),
            // 4: the port points at it.
            op::update("Port", port_is, json!({"qos": op::named_uuid("qos")})),
            // 5, 6: ask ovs-vswitchd to confirm it applied this.
            op::mutate(
                DB,
                vec![],
                vec![op::mutation("next_cfg", Mutator::Add, json!(1))],
            ),
            op::select(DB, vec![], Some(&["next_cfg"])),
            op::comment(&format!(
                "shoal: reserve {rate_bps} bit/s on {port} for migration {migration_id}"
            )),
        ];
        let results = match self.client.transact(DB, ops).await {
            Ok(r) => r,
            Err(OvsdbError::Transaction {
                index: Some(0),
                error,
                ..
            }) if error == "timed out" => return Err(self.why_unavailable(port).await),
            Err(e) => return Err(e.into()),
        };
        let q0 = inserted(&results, 1)?;
        let q1 = inserted(&results, 2)?;
        let qos = inserted(&results, 3)?;
        let r = QueueReservation {
            migration_id: migration_id.to_string(),
            port: port.to_string(),
            link_bps,
            rate_bps,
            classifier,
            qos_uuid: qos,
            queue_uuids: vec![q0, q1],
            attached: true,
        };
        if let Err(e) = self.finish_reserve(&r, &results).await {
            warn!(port, migration = migration_id, error = %e, "reservation failed after commit; rolling back");
            if let Err(e2) = self.remove_rows(&r).await {
                warn!(port, migration = migration_id, error = %e2, "rollback failed; cleanup_all will remove it");
            }
            return Err(e);
        }
        info!(
            port,
            migration = migration_id,
            rate_bps,
            link_bps,
            classifier = ?classifier.map(|c| c.to_string()),
            qos = %r.qos_uuid,
            "queue reservation in place"
        );
        Ok(r)
    }

    /// After the commit: wait for vswitchd, then the class and classifier.
    async fn finish_reserve(
        &self,
        r: &QueueReservation,
        results: &[Value],
    ) -> Result<(), QueueError> {
        let cfg = next_cfg_of(result_at(results, 6)?)?;
        self.wait_applied(cfg).await?;
        let Some(m) = &r.classifier else {
            return Ok(());
        };
        let show: Vec<String> = ["class", "show", "dev", &r.port, "classid", MIGRATION_CLASS]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = self.run_tc(&show).await?;
        if !out.contains(&format!("htb {MIGRATION_CLASS} ")) {
            return Err(QueueError::ClassMissing {
                port: r.port.clone(),
                class: MIGRATION_CLASS.into(),
            });
        }
        self.run_tc(&filter_add_args(&r.port, self.cfg.tc_prio, m))
            .await
            .map(|_| ())
    }

    async fn run_tc(&self, args: &[String]) -> Result<String, QueueError> {
        debug!(args = %args.join(" "), "tc");
        self.tc.tc(args).await.map_err(|why| QueueError::Tc {
            command: args.join(" "),
            why,
        })
    }

    /// Explains why the `wait` of a reservation failed.
    async fn why_unavailable(&self, port: &str) -> QueueError {
        let ops = vec![op::select(
            "Port",
            vec![op::cond("name", Function::Eq, json!(port))],
            Some(&["qos"]),
        )];
        let res = match self.client.transact(DB, ops).await {
            Ok(r) => r,
            Err(e) => return e.into(),
        };
        let qos = res
            .first()
            .and_then(datum::rows)
            .and_then(|rows| rows.first())
            .map(|row| {
                row.get("qos")
                    .and_then(datum::set)
                    .and_then(|s| s.first().and_then(|u| datum::uuid(u)).map(str::to_string))
            });
        match qos {
            None => QueueError::PortNotFound {
                port: port.to_string(),
            },
            Some(None) => QueueError::BadData(format!(
                "port {port} looked busy, then had no QoS (concurrent change?)"
            )),
            Some(Some(qos)) => {
                let owner = self.owner_of(&qos).await;
                QueueError::PortBusy {
                    port: port.to_string(),
                    qos,
                    owner,
                }
            }
        }
    }

    async fn owner_of(&self, qos: &str) -> Option<String> {
        let ops = vec![op::select(
            "QoS",
            vec![op::cond("_uuid", Function::Eq, op::uuid(qos))],
            Some(&["external_ids"]),
        )];
        let res = self.client.transact(DB, ops).await.ok()?;
        let row = datum::rows(res.first()?)?.first()?;
        datum::str_map(row.get("external_ids")?)?
            .get(MARKER_KEY)
            .cloned()
    }

    /// Polls `cur_cfg` until `ovs-vswitchd` has applied configuration `cfg`.
    async fn wait_applied(&self, cfg: i64) -> Result<(), QueueError> {
        let deadline = Instant::now() + self.cfg.apply_timeout;
        loop {
            let res = self
                .client
                .transact(DB, vec![op::select(DB, vec![], Some(&["cur_cfg"]))])
                .await?;
            let cur = res
                .first()
                .and_then(datum::rows)
                .and_then(|r| r.first())
                .and_then(|r| r.get("cur_cfg"))
                .and_then(Value::as_i64);
            if cur.is_some_and(|c| c >= cfg) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(QueueError::NotApplied {
                    cfg,
                    after: self.cfg.apply_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Removes a reservation: its tc filter (when the port still points at
    /// its QoS), then in one transaction the port's reference and the QoS
    /// and Queue rows (not garbage-collected: root tables). Waits until
    /// `ovs-vswitchd` applied it (a timeout there is only logged: the
    /// database no longer holds the reservation). Returns false when the
    /// reservation was already gone.
    pub async fn release(&self, r: &QueueReservation) -> Result<bool, QueueError> {
        // Which port points at the QoS now (not what the caller remembers).
        let res = self
            .client
            .transact(
                DB,
                vec![op::select(
                    "Port",
                    vec![op::cond("qos", Function::Includes, op::uuid(&r.qos_uuid))],
                    Some(&["name"]),
                )],
            )
            .await?;
        let attached_to: Vec<String> = res
            .first()
            .and_then(datum::rows)
            .unwrap_or_default()
            .iter()
            .filter_map(|row| row.get("name")?.as_str().map(str::to_string))
            .collect();
        if r.classifier.is_some() {
            for port in &attached_to {
                if validate_port(port).is_err() {
                    continue;
                }
                if let Err(e) = self.run_tc(&filter_del_args(port, self.cfg.tc_prio)).await {
                    // The qdisc (and the filter with it) goes when OVS
                    // removes the QoS; a missing filter is no failure.
                    warn!(port = %port, error = %e, "could not delete the classifier; OVS removes it with the qdisc");
                }
            }
        }
        let removed = self.remove_rows(r).await?;
        info!(port = %r.port, migration = %r.migration_id, qos = %r.qos_uuid, removed, "queue reservation released");
        Ok(removed)
    }

    /// The OVSDB half of [`QueueManager::release`].
    async fn remove_rows(&self, r: &QueueReservation) -> Result<bool, QueueError> {
        let qos = op::uuid(&r.qos_uuid);
        let mut ops = vec![
            op::mutate(
                "Port",
                vec![op::cond("qos", Function::Includes, qos.clone())],
                vec![op::mutation(
                    "qos",
                    Mutator::Delete,
                    op::set(vec![qos.clone()]),
                )],
            ),
            op::delete("QoS", vec![op::cond("_uuid", Function::Eq, qos)]),
        ];
        for q in &r.queue_uuids {
            ops.push(op::delete(
                "Queue",
                vec![op::cond("_uuid", Function::Eq, op::uuid(q))],
            ));
        }
        let n = ops.len();
        ops.push(op::mutate(
            DB,
            vec![],
            vec![op::mutation("next_cfg", Mutator::Add, json!(1))],
        ));
        ops.push(op::select(DB, vec![], Some(&["next_cfg"])));
        ops.push(op::comment(&format!(
            "shoal: release {} for migration {}",
            r.port, r.migration_id
        )));
        let results = self.client.transact(DB, ops).await?;
        let removed = datum::count(result_at(&results, 1)?).unwrap_or(0) > 0;
        let cfg = next_cfg_of(result_at(&results, n + 1)?)?;
        if let Err(e) = self.wait_applied(cfg).await {
            warn!(port = %r.port, error = %e, "released in OVSDB, but ovs-vswitchd has not applied it yet");
        }
        Ok(removed)
    }

    /// Every Shoal reservation in the database (QoS rows with the marker),
    /// attached or not.
    pub async fn list(&self) -> Result<Vec<QueueReservation>, QueueError> {
        Ok(self.scan().await?.0)
    }

    /// The reservations of one migration (one per hop).
    pub async fn find(&self, migration_id: &str) -> Result<Vec<QueueReservation>, QueueError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|r| r.migration_id == migration_id)
            .collect())
    }

    /// Reservations, plus marked Queue rows no QoS references (UUID,
    /// migration id).
    async fn scan(&self) -> Result<(Vec<QueueReservation>, Vec<(String, String)>), QueueError> {
        let ops = vec![
            op::select("QoS", vec![], Some(&["_uuid", "queues", "external_ids"])),
            op::select("Port", vec![], Some(&["name", "qos"])),
            op::select("Queue", vec![], Some(&["_uuid", "external_ids"])),
        ];
        let res = self.client.transact(DB, ops).await?;
        let rows = |i: usize| -> Result<&[Value], QueueError> {
            datum::rows(result_at(&res, i)?)
                .ok_or_else(|| QueueError::BadData(format!("select {i} returned no rows")))
        };
        let mut ports: HashMap<String, String> = HashMap::new();
        for row in rows(1)? {
            let (Some(name), Some(qos)) = (
                row.get("name").and_then(Value::as_str),
                row.get("qos").and_then(datum::set),
            ) else {
                continue;
            };
            for u in qos.into_iter().filter_map(datum::uuid) {
                ports.insert(u.to_string(), name.to_string());
            }
        }
        let mut referenced: HashSet<String> = HashSet::new();
        let mut found = Vec::new();
        for row in rows(0)? {
            for (_, q) in row.get("queues").and_then(datum::map).unwrap_or_default() {
                if let Some(u) = datum::uuid(q) {
                    referenced.insert(u.to_string());
                }
            }
            if let Some(r) = parse_qos_row(row, &ports) {
                found.push(r);
            }
        }
        let mut orphans = Vec::new();
        for row in rows(2)? {
            let Some(u) = row.get("_uuid").and_then(datum::uuid) else {
                continue;
            };
            let marker = row
                .get("external_ids")
                .and_then(datum::str_map)
                .and_then(|m: BTreeMap<String, String>| m.get(MARKER_KEY).cloned());
            if let Some(id) = marker {
                if !referenced.contains(u) {
                    orphans.push((u.to_string(), id));
                }
            }
        }
        found.sort_by(|a, b| (&a.migration_id, &a.port).cmp(&(&b.migration_id, &b.port)));
        Ok((found, orphans))
    }

    /// Releases every reservation of migration `migration_id` exactly (on
    /// port `port` only, when given: the port it is attached to, or the
    /// one recorded in its marker) and deletes that migration's marked
    /// Queue rows no QoS references. Needs nothing but the marker: what a
    /// write-ahead record of a reservation whose outcome was never learnt
    /// (connection lost mid-transaction, crash) is removed with. Returns
    /// how many reservations were released (0: nothing was there).
    pub async fn release_all_of(
        &self,
        migration_id: &str,
        port: Option<&str>,
    ) -> Result<usize, QueueError> {
        let (found, orphans) = self.scan().await?;
        let mut n = 0;
        for r in found
            .iter()
            .filter(|r| r.migration_id == migration_id && port.is_none_or(|p| r.port == p))
        {
            self.release(r).await?;
            n += 1;
        }
        let ops: Vec<Value> = orphans
            .iter()
            .filter(|(_, id)| id == migration_id)
            .map(|(u, _)| op::delete("Queue", vec![op::cond("_uuid", Function::Eq, op::uuid(u))]))
            .collect();
        if !ops.is_empty() {
            self.client.transact(DB, ops).await?;
        }
        Ok(n)
    }

    /// Releases every Shoal reservation whose migration id starts with
    /// `marker_prefix` (all of them for `""`) and deletes marked Queue rows
    /// left without a QoS: what a restarted controller runs for migrations
    /// that are over.
    pub async fn cleanup_all(&self, marker_prefix: &str) -> Result<CleanupReport, QueueError> {
        let (found, orphans) = self.scan().await?;
        let mut report = CleanupReport::default();
        for r in found
            .into_iter()
            .filter(|r| r.migration_id.starts_with(marker_prefix))
        {
            self.release(&r).await?;
            report.released.push(r);
        }
        let orphans: Vec<&(String, String)> = orphans
            .iter()
            .filter(|(_, id)| id.starts_with(marker_prefix))
            .collect();
        if !orphans.is_empty() {
            let ops = orphans
                .iter()
                .map(|(u, _)| {
                    op::delete("Queue", vec![op::cond("_uuid", Function::Eq, op::uuid(u))])
                })
                .collect();
            self.client.transact(DB, ops).await?;
            report.orphan_queues = orphans.len();
        }
        if !report.released.is_empty() || report.orphan_queues > 0 {
            info!(
                prefix = marker_prefix,
                released = report.released.len(),
                orphan_queues = report.orphan_queues,
                "leftover queue reservations removed"
            );
        }
        Ok(report)
    }
}

/// Shortest wait before connecting again after a failure.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// Longest wait between two connection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// A [`QueueManager`] whose OVSDB connection is made when first needed and
/// made again, with a bounded exponential backoff
/// (200 ms … 10 s between attempts), after it died.
///
/// Before the first connection of the process is handed out, every
/// Shoal-marked QoS and Queue row in the database is removed
/// ([`QueueManager::cleanup_all`] with prefix `""`): whatever a crashed
/// run left there (its tc filters go with the htb qdisc). A process
/// never reserves anything before that sweep has succeeded, so the sweep
/// can only remove leftovers.
pub struct QueueSession {
    target: String,
    tc: Arc<dyn TcRunner>,
    cfg: QueueConfig,
    state: tokio::sync::Mutex<SessionState>,
}

#[derive(Default)]
struct SessionState {
    mgr: Option<QueueManager>,
    /// No attempt before this instant (backoff).
    next_try: Option<Instant>,
    /// The wait after the next failure.
    backoff: Duration,
    /// Leftovers of earlier runs removed.
    swept: bool,
}

impl fmt::Debug for QueueSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueSession")
            .field("target", &self.target)
            .finish()
    }
}

impl QueueSession {
    /// A session to OVSDB `target` (`unix:PATH` or `tcp:HOST:PORT`); no
    /// connection is made yet.
    pub fn new(target: &str, tc: Arc<dyn TcRunner>, cfg: QueueConfig) -> Self {
        QueueSession {
            target: target.to_string(),
            tc,
            cfg,
            state: tokio::sync::Mutex::new(SessionState {
                backoff: RECONNECT_MIN,
                ..SessionState::default()
            }),
        }
    }

    /// The OVSDB target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A manager over a live connection: the current one, or a new one
    /// (after the startup sweep, the first time) when the old one died
    /// and the backoff allows an attempt now. None while OVSDB is
    /// unreachable.
    pub async fn get(&self) -> Option<QueueManager> {
        let mut st = self.state.lock().await;
        if let Some(m) = &st.mgr {
            if !m.client().is_closed() {
                return Some(m.clone());
            }
            warn!(target = %self.target, "OVSDB connection lost; connecting again");
            st.mgr = None;
        }
        let now = Instant::now();
        if st.next_try.is_some_and(|t| now < t) {
            return None;
        }
        let failed = |st: &mut SessionState, why: String| {
            st.next_try = Some(Instant::now() + st.backoff);
            warn!(target = %self.target, error = %why, retry_in = ?st.backoff, "OVSDB unreachable: queue reservations unavailable");
            st.backoff = (st.backoff * 2).min(RECONNECT_MAX);
        };
        let client = match OvsdbClient::connect(&self.target).await {
            Ok(c) => c,
            Err(e) => {
                failed(&mut st, e.to_string());
                return None;
            }
        };
        let mgr = QueueManager::with_config(client, self.tc.clone(), self.cfg.clone());
        if !st.swept {
            match mgr.cleanup_all("").await {
                Ok(r) => {
                    info!(
                        target = %self.target,
                        released = r.released.len(),
                        orphan_queues = r.orphan_queues,
                        "startup sweep: Shoal-marked QoS and Queue rows of earlier runs removed"
                    );
                    st.swept = true;
                }
                Err(e) => {
                    mgr.client().close().await;
                    failed(&mut st, format!("startup sweep failed: {e}"));
                    return None;
                }
            }
        }
        info!(target = %self.target, "OVSDB connected");
        st.backoff = RECONNECT_MIN;
        st.next_try = None;
        st.mgr = Some(mgr.clone());
        Some(mgr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> TcpMatch {
        TcpMatch {
            src: Ipv4Addr::new(10, 77, 0, 1),
            dst: Ipv4Addr::new(10, 77, 0, 2),
            dst_port: 49152,
        }
    }

    #[test]
    fn classifier_marker_round_trips() {
        assert_eq!(m().encode(), "10.77.0.1>10.77.0.2:49152");
        assert_eq!(TcpMatch::decode(&m().encode()), Some(m()));
        for bad in [
            "",
            "10.77.0.1",
            "10.77.0.1>10.77.0.2",
            "10.77.0.1>10.77.0.2:0",
            "10.77.0.1>10.77.0.2:65536",
            "10.77.0.1>x:1",
            "a>b:c",
            ">:",
        ] {
            assert_eq!(TcpMatch::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn tc_commands() {
        assert_eq!(
            filter_add_args("sdb-p2", 1, &m()).join(" "),
            "filter add dev sdb-p2 parent 1: protocol ip prio 1 u32 \
             match ip protocol 6 0xff match ip src 10.77.0.1/32 match ip dst 10.77.0.2/32 \
             match ip dport 49152 0xffff flowid 1:2"
        );
        assert_eq!(
            filter_del_args("sdb-p2", 3).join(" "),
            "filter del dev sdb-p2 parent 1: protocol ip prio 3 u32"
        );
    }

    #[test]
    fn requests_are_validated() {
        let ok = validate_request("m1", "sdb-p2", 100_000_000, 20_000_000, Some(&m()));
        assert!(ok.is_ok());
        assert!(validate_request("m1", "sdb-p2", 100, 100, None).is_ok());
        let bad: [(&str, &str, u64, u64); 9] = [
            ("", "p", 10, 1),
            ("m\n1", "p", 10, 1),
            ("m1", "", 10, 1),
            ("m1", "a-very-long-port-name", 10, 1),
            ("m1", "-p", 10, 1),
            ("m1", "p/1", 10, 1),
            ("m1", "p 1", 10, 1),
            ("m1", "p", 10, 0),
            ("m1", "p", 10, 11),
        ];
        for (id, port, link, rate) in bad {
            assert!(
                matches!(
                    validate_request(id, port, link, rate, None),
                    Err(QueueError::Invalid(_))
                ),
                "{id:?} {port:?} {link} {rate}"
            );
        }
        let zero = TcpMatch { dst_port: 0, ..m() };
        assert!(validate_request("m1", "p", 10, 1, Some(&zero)).is_err());
    }

    #[test]
    fn qos_rows_are_read_leniently() {
        let row = json!({
            "_uuid": ["uuid", "q-os"],
            "queues": ["map", [[1, ["uuid", "q-1"]], [0, ["uuid", "q-0"]]]],
            "external_ids": ["map", [
                ["shoal-migration", "mig-7"], ["shoal-port", "sdb-p2"],
                ["shoal-link-bps", "100000000"], ["shoal-rate-bps", "20000000"],
                ["shoal-classifier", "10.77.0.1>10.77.0.2:49152"]
            ]]
        });
        let mut ports = HashMap::new();
        let r = parse_qos_row(&row, &ports).unwrap();
        assert_eq!(
            r,
            QueueReservation {
                migration_id: "mig-7".into(),
                port: "sdb-p2".into(),
                link_bps: 100_000_000,
                rate_bps: 20_000_000,
                classifier: Some(m()),
                qos_uuid: "q-os".into(),
                queue_uuids: vec!["q-0".into(), "q-1".into()],
                attached: false,
            }
        );
        ports.insert("q-os".to_string(), "sdb-p9".to_string());
        let r = parse_qos_row(&row, &ports).unwrap();
        assert!(r.attached);
        assert_eq!(r.port, "sdb-p9");

        // Not Shoal's, or not a row at all: ignored.
        for other in [
            json!({"_uuid": ["uuid", "x"], "queues": ["map", []], "external_ids": ["map", []]}),
            json!({"_uuid": "x", "external_ids": ["map", [["shoal-migration", "m"]]]}),
            json!(null),
            json!([1, 2]),
        ] {
            assert_eq!(parse_qos_row(&other, &ports), None, "{other}");
        }
        // A damaged marker row is still found (so it can be removed).
        let damaged = json!({
            "_uuid": ["uuid", "d"],
            "queues": "junk",
            "external_ids": ["map", [["shoal-migration", "m"], ["shoal-rate-bps", "lots"],
                                     ["shoal-classifier", "??"]]]
        });
        let r = parse_qos_row(&damaged, &ports).unwrap();
        assert_eq!(
            (r.rate_bps, r.classifier, r.queue_uuids.len()),
            (0, None, 0)
        );
    }

    #[test]
    fn next_cfg_is_read_from_a_select() {
        assert_eq!(
            next_cfg_of(&json!({"rows": [{"next_cfg": 42}]})).unwrap(),
            42
        );
        assert!(next_cfg_of(&json!({"rows": []})).is_err());
        assert!(next_cfg_of(&json!({"count": 1})).is_err());
    }

    /// An OVSDB that accepts connections and drops them at once: the
    /// session's startup sweep fails, it hands out nothing, and it tries
    /// again only after its backoff (200 ms, then 400 ms), not on every
    /// call.
    #[tokio::test]
    async fn a_session_backs_off_between_connection_attempts() {
        let path = std::env::temp_dir().join(format!("shoal-qs-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let accepts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = accepts.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            }
        });
        let count = || accepts.load(std::sync::atomic::Ordering::SeqCst);
        let session = QueueSession::new(
            &format!("unix:{}", path.display()),
            Arc::new(SystemTc::new()),
            QueueConfig::default(),
        );
        assert!(session.get().await.is_none());
        assert_eq!(count(), 1);
        assert!(session.get().await.is_none(), "within the backoff");
        assert_eq!(count(), 1, "no attempt within the backoff");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(session.get().await.is_none());
        assert_eq!(count(), 2, "a new attempt after 200 ms");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(session.get().await.is_none());
        assert_eq!(count(), 2, "the backoff doubled to 400 ms");
        let _ = std::fs::remove_file(&path);
    }
}
