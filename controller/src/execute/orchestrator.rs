//! The migration orchestrator (VMPatrol).
//!
//! A rolling queue: a submitted migration waits until its hosts and every
//! link of its path are free enough, then
//! 1. its bandwidth `L` is the smallest that meets the deadline with the
//!    largest dirty rate seen for the VM (VMPatrol model);
//! 2. a path between the source and destination hypervisor bridges whose
//!    every hop has `capacity − use − reservations ≥ L` is chosen (else it
//!    stays queued, with the reason);
//! 3. on every hop a meter limited to `L` and a flow matching the migration's
//!    TCP connection (dom0 → dom0, destination port) with a migration cookie
//!    are installed — each recorded in the knowledge store *before* it is
//!    installed, so that nothing survives a crash unnoticed — and a BARRIER
//!    confirms them (or OVS queues through OVSDB, when configured);
//! 4. the destination hostd gets `prepare_incoming`, the source hostd
//!    `migrate` with the same cap; progress is followed;
//! 5. on completion, failure or timeout every reservation and flow is
//!    removed; a completed migration is verified (the VM shows up at the
//!    destination bridge) and the change in communication cost recorded.
//!
//! A restarted controller reconciles: migrations that were under way are
//! asked for their final state at the source hostd (their reservations are
//! removed, they are never started twice), queued ones stay queued.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ofp::{
    meter_flags, Action, FlowMod, FlowModCommand, Instruction, Match, Message, MeterBand, MeterMod,
    MeterModCommand,
};
use serde::{Deserialize, Serialize};
use shoal_common::proto::{
    self, CommandState, CommandStatus, MigrationProgress, MigrationResult, MigrationSpec,
};
use shoal_common::vmpatrol::{self, ModelError, ModelParams};
use tracing::{info, warn};

use crate::config::{ExecuteConfig, ReservationKind, Settings};
use crate::execute::handles::{FabricView, Handles, HostdClient, HttpHostd, Switches};
use crate::execute::queues::{
    QueueConfig, QueueManager, QueueReservation, QueueSession, SystemTc, TcpMatch,
};
use crate::knowledge::clock::Clock;
use crate::knowledge::cluster::NotLeader;
use crate::knowledge::live::port_capacity_bps;
use crate::knowledge::state::Knowledge;
use crate::knowledge::store::{Store, StoreExt};
use crate::monitor::cookie;
use crate::monitor::dpid::dpid_str;
use crate::monitor::forwarding::{PRIO_MIGRATION, TABLE_CLASSIFY, TABLE_EDGE};
use crate::monitor::topology::{PortRef, Topology};

const MIB: f64 = 1_048_576.0;
/// First meter id used for migrations.
pub const METER_BASE: u32 = 1000;
/// Attempts of a command to a host daemon whose answer is lost in
/// transport (the same id each time: hostd takes it as one command).
const COMMAND_ATTEMPTS: u32 = 3;
/// How long a source hostd may stay unreachable before the migration is
/// declared lost.
const LOST_CONTACT: Duration = Duration::from_secs(30);

/// Life cycle of a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigState {
    /// Waiting for hosts and links.
    Queued,
    /// Reservations being installed.
    Reserving,
    /// Under way at the host daemons.
    Running,
    /// Completed at the hosts; waiting for the VM to show up at the
    /// destination.
    Verifying,
    /// Done and verified.
    Done,
    /// Failed (the VM keeps running on the source); `error` says why.
    Failed,
    /// Cancelled while queued.
    Cancelled,
}

impl MigState {
    /// Done, Failed or Cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            MigState::Done | MigState::Failed | MigState::Cancelled
        )
    }

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            MigState::Queued => "queued",
            MigState::Reserving => "reserving",
            MigState::Running => "running",
            MigState::Verifying => "verifying",
            MigState::Done => "done",
            MigState::Failed => "failed",
            MigState::Cancelled => "cancelled",
        }
    }
}

/// What the VMPatrol model predicts for the chosen bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Predicted {
    /// Migration time, s.
    pub time_s: f64,
    /// Bytes moved.
    pub traffic_bytes: f64,
    /// Index of the stop-and-copy round.
    pub rounds: u32,
    /// Downtime, s.
    pub downtime_s: f64,
}

/// What a migration would be if it were submitted now
/// ([`Orchestrator::estimate`]): the expected cost of a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// VM name.
    pub vm: String,
    /// Where it runs now.
    pub from: String,
    /// Where it would go.
    pub to: String,
    /// Deadline, s.
    pub deadline_s: f64,
    /// Whether bandwidth would be reserved on the path.
    pub reserve: bool,
    /// Bandwidth it would get, bytes/s.
    pub bandwidth_bytes_per_s: f64,
    /// Its memory, MB.
    pub memory_mb: f64,
    /// The VMPatrol prediction at that bandwidth (time, bytes moved).
    pub predicted: Predicted,
    /// The switches of its path (datapath ids).
    pub path: Vec<String>,
    /// Communication cost of the placement now (when a snapshot was
    /// given).
    pub cost_before: Option<f64>,
    /// Communication cost after the move (when a snapshot was given).
    pub cost_after: Option<f64>,
}

/// The outcome of [`Orchestrator::prepare`].
struct Prepared {
    deadline_s: f64,
    reserve: bool,
    vm: VmFacts,
    src_dom0: String,
    to: String,
    dst_ip: Ipv4Addr,
    path: SwitchPath,
    bandwidth: f64,
    predicted: vmpatrol::Prediction,
}

/// One hop of the path: the switch and the port the migration leaves by
/// (none at the last hop, where normal forwarding delivers it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    /// Datapath id.
    pub dpid: String,
    /// Egress port toward the next switch.
    pub out_port: Option<u32>,
    /// Link capacity, bit/s.
    pub capacity_bps: Option<f64>,
    /// Capacity minus use and reservations when admitted, bit/s.
    pub available_bps: Option<f64>,
}

/// One thing installed for a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// `meter`, `flow` or `queue`.
    pub kind: String,
    /// Datapath id (meter, flow) or port name (queue).
    pub target: String,
    /// Meter id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<u32>,
    /// Flow cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<u64>,
    /// The OVS queue reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueReservation>,
    /// Row id in the knowledge store.
    pub store_id: i64,
}

/// A migration as stored and served at `/api/v1/migrations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// Id (`mig-…`).
    pub id: String,
    /// VM name.
    pub vm: String,
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
    /// State.
    pub state: MigState,
    /// Why it was asked for (engineer request, policy decision …).
    pub reason: String,
    /// Deadline, s.
    pub deadline_s: f64,
    /// Whether bandwidth is reserved on the path.
    pub reserve: bool,
    /// Bandwidth `L` (the cap given to the hypervisor), bytes/s.
    pub bandwidth_bytes_per_s: f64,
    /// Memory `M` used by the model, MiB.
    pub memory_mb: f64,
    /// Dirty rate `R` used by the model (largest seen), MiB/s.
    pub dirty_rate_mbps: f64,
    /// The model's prediction at `L`.
    pub predicted: Option<Predicted>,
    /// Switches of the path, source bridge first.
    pub path: Vec<String>,
    /// Hops with their capacity and availability.
    pub hops: Vec<Hop>,
    /// What was installed.
    pub reservations: Vec<Reservation>,
    /// Why it waits (queued).
    pub queued_reason: Option<String>,
    /// Progress reported by the source hostd.
    pub progress: Option<MigrationProgress>,
    /// Outcome reported by the source hostd.
    pub result: Option<MigrationResult>,
    /// Why it failed.
    pub error: Option<String>,
    /// Source dom0 address.
    pub src_addr: String,
    /// Destination `IP:PORT` of the migration connection.
    pub dst_addr: String,
    /// Created, Unix ms.
    pub created_unix_ms: i64,
    /// Started at the hosts, Unix ms.
    pub started_unix_ms: Option<i64>,
    /// Ended, Unix ms.
    pub ended_unix_ms: Option<i64>,
    /// Overall communication cost before (S-CORE cost, λ × link weights).
    pub cost_before: Option<f64>,
    /// The same cost with the VM at its destination.
    pub cost_after: Option<f64>,
    /// The decision that asked for it.
    pub decision_id: Option<i64>,
    /// Monotonic sequence (ports, meters, cookies derive from it).
    pub seq: u64,
}

/// A request to migrate (`POST /api/v1/migrations`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationRequest {
    /// VM name.
    pub vm: String,
    /// Destination host id, or `auto`.
    #[serde(default = "auto")]
    pub destination: String,
    /// Deadline, s (default: the configured one).
    pub deadline_s: Option<f64>,
    /// Reserve bandwidth on the path (default: unless reservations are off).
    pub reserve: Option<bool>,
}

fn auto() -> String {
    "auto".into()
}

/// Why a migration cannot be accepted or changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrchError {
    /// No such VM.
    #[error("no VM named {0:?} is registered")]
    UnknownVm(String),
    /// No such host.
    #[error("no host named {0:?} is registered")]
    UnknownHost(String),
    /// No such migration.
    #[error("no migration {0:?}")]
    NotFound(String),
    /// The destination cannot take the VM.
    #[error("{0}")]
    NoRoom(String),
    /// The deadline cannot be met.
    #[error("{0}")]
    Infeasible(String),
    /// The request conflicts with the state (VM already migrating, …).
    #[error("{0}")]
    Conflict(String),
    /// Malformed values.
    #[error("{0}")]
    Invalid(String),
    /// A cluster node that does not lead takes no migration.
    #[error("{0}")]
    NotLeader(#[from] NotLeader),
}

/// What the orchestrator needs of the settings.
#[derive(Debug, Clone)]
pub struct OrchConfig {
    /// Execute settings.
    pub execute: ExecuteConfig,
    /// Downtime goal of migrations, s.
    pub downtime_goal_s: f64,
    /// Minimum pre-copy progress, MB.
    pub min_progress_mb: f64,
    /// CPU threshold a destination must stay below.
    pub cpu_threshold: f64,
    /// S-CORE link weights for communication cost.
    pub weights: [f64; 4],
    /// The token presented to the host daemons.
    pub token: Option<shoal_common::secret::Secret>,
    /// Finished migrations kept in memory at most (oldest dropped first).
    pub history: usize,
    /// How long the bridges of both ends must have been connected before a
    /// migration starts: until then their edge ports (the hosts' dom0
    /// interfaces) are not confirmed and the data plane does not deliver
    /// the migration stream (`[topology] port_confirm_s`).
    pub settle: Duration,
}

impl OrchConfig {
    /// The orchestrator's part of `s`.
    pub fn from_settings(s: &Settings) -> Self {
        OrchConfig {
            execute: s.execute.clone(),
            downtime_goal_s: s.policy.options.constraints.downtime_goal_s,
            min_progress_mb: s.policy.options.constraints.min_progress_mb,
            cpu_threshold: s.policy.hotspot.thresholds.cpu,
            weights: s.policy.options.score.weights,
            token: s.token.clone(),
            history: s.retention.migrations_in_memory,
            settle: s.port_confirm,
        }
    }
}

/// What became of a command to a host daemon that was not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    /// The daemon took it (answered the `PUT`, or knows it by its id).
    Taken,
    /// Every answer was lost and its status could not be read: the daemon
    /// may or may not have it (why).
    Unknown(String),
}

/// The migration's TCP connection and what is reserved for it on a hop.
#[derive(Debug, Clone, Copy)]
struct MigrationFlow {
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    port: u16,
    /// Reserved rate, bit/s (with the meter headroom).
    rate_bps: f64,
    meter_id: u32,
    cookie: u64,
}

impl MigrationFlow {
    /// The OpenFlow messages of one hop: the meter (when metering) and the
    /// classify-table flow of the connection, out of `out_port` (or on to
    /// the edge table at the last hop).
    fn messages(&self, use_meter: bool, last: bool, out_port: Option<u32>) -> Vec<Message> {
        let mut msgs = Vec::new();
        if use_meter {
            let kbps =
                ((self.rate_bps / 1000.0).round() as u64).clamp(1, u64::from(u32::MAX)) as u32;
            msgs.push(Message::MeterMod(MeterMod {
                command: MeterModCommand::Add,
                flags: meter_flags::KBPS | meter_flags::STATS,
                meter_id: self.meter_id,
                bands: vec![MeterBand::Drop {
                    rate: kbps,
                    burst_size: 0,
                }],
            }));
        }
        let mut ins = Vec::new();
        if use_meter {
            ins.push(Instruction::Meter(self.meter_id));
        }
        match (last, out_port) {
            (false, Some(p)) => ins.push(Instruction::ApplyActions(vec![Action::output(p)])),
            _ => ins.push(Instruction::GotoTable(TABLE_EDGE)),
        }
        msgs.push(Message::FlowMod(FlowMod {
            table_id: TABLE_CLASSIFY,
            priority: PRIO_MIGRATION,
            cookie: self.cookie,
            match_: Match::new()
                .eth_type(0x0800)
                .ip_proto(6)
                .ipv4_src(self.src_ip)
                .ipv4_dst(self.dst_ip)
                .tcp_dst(self.port),
            instructions: ins,
            ..FlowMod::default()
        }));
        msgs
    }
}

/// A path through the switches: (dpid, egress port) per hop.
type SwitchPath = Vec<(u64, Option<u32>)>;

/// What a migration request needs to know about its VM.
#[derive(Debug, Clone)]
struct VmFacts {
    /// The host it runs on.
    from: String,
    /// Its memory, MB (as last reported).
    memory_mb: f64,
    /// Its CPU use, cores.
    cpu_cores: f64,
    /// The largest dirty rate its host reported for it, MB/s.
    dirty_max: f64,
}

/// Everything about a host the orchestrator needs.
#[derive(Debug, Clone)]
struct HostFacts {
    api_url: String,
    dom0: String,
    bridge: Option<u64>,
    nic_bps: f64,
    memory_mb: f64,
    cores: f64,
    cpu_util: f64,
    vm_memory_mb: f64,
}

/// The migrations this node finished since it started, for `GET /metrics`:
/// counters that only grow (the records themselves are bounded in memory
/// and pruned in the store). A migration counts once, when it becomes final
/// here; those restored already final from the store, or finished by
/// another node, do not.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FinishedTotals {
    /// Migrations done (the VM runs at its destination).
    pub done: u64,
    /// Migrations failed.
    pub failed: u64,
    /// Migrations cancelled while queued.
    pub cancelled: u64,
    /// Done migrations with both a measured duration (the source's
    /// `total_time_ms`) and the model's prediction: the count behind
    /// `actual_s` and `predicted_s`.
    pub compared: u64,
    /// Measured durations of the compared migrations, s, in all.
    pub actual_s: f64,
    /// Predicted durations of the compared migrations, s, in all.
    pub predicted_s: f64,
    /// Done migrations whose measured duration exceeded their deadline.
    pub deadlines_missed: u64,
}

impl FinishedTotals {
    /// Counts `m`, which just became final (as [`Migration::actual_s`]
    /// and the `shoal_migration_last_seconds` gauge read it).
    pub fn add(&mut self, m: &Migration) {
        match m.state {
            MigState::Done => self.done += 1,
            MigState::Failed => self.failed += 1,
            MigState::Cancelled => self.cancelled += 1,
            _ => return,
        }
        if m.state != MigState::Done {
            return;
        }
        let Some(actual) = m.actual_s() else { return };
        if actual > m.deadline_s {
            self.deadlines_missed += 1;
        }
        if let Some(p) = &m.predicted {
            self.compared += 1;
            self.actual_s += actual;
            self.predicted_s += p.time_s;
        }
    }
}

impl Migration {
    /// Its measured duration, s: the source's `total_time_ms` (once it
    /// succeeded at the hosts).
    pub fn actual_s(&self) -> Option<f64> {
        self.result
            .as_ref()
            .map(|r| r.total_time_ms as f64 / 1000.0)
    }
}

/// The orchestrator.
pub struct Orchestrator {
    fabric: Weak<dyn FabricView>,
    switches: Arc<dyn Switches>,
    hostd: Arc<dyn HostdClient>,
    store: Option<Arc<dyn Store>>,
    clock: Arc<dyn Clock>,
    cfg: ExecuteConfig,
    /// See [`OrchConfig::settle`].
    settle: Duration,
    downtime_goal_s: f64,
    min_progress_mb: f64,
    state: Mutex<OrchState>,
    /// OVS queues through OVSDB (reservation kind `queue`): connected on
    /// demand and again after a failure; the first connection removes
    /// the Shoal-marked rows earlier runs left.
    queues: Option<QueueSession>,
    /// CPU threshold a destination must stay below.
    cpu_threshold: f64,
    /// S-CORE link weights for communication cost.
    weights: [f64; 4],
    /// Finished migrations kept in memory at most.
    history: usize,
    /// This node led the cluster at the last tick (always true for a
    /// single controller): a node that becomes leader takes the
    /// migrations over from the knowledge store first.
    leading: std::sync::atomic::AtomicBool,
    /// Each migration's state as this node last recorded it (or read it
    /// from the store): the expected state of its next compare-and-set.
    /// Held across a record's write, so that records are written one at a
    /// time, each the latest in memory.
    recorded: Mutex<BTreeMap<String, MigState>>,
}

#[derive(Default)]
struct OrchState {
    migs: BTreeMap<String, Migration>,
    seq: u64,
    /// Reservations of an earlier run to remove: (store id, kind, dpid,
    /// meter, cookie).
    stale: Vec<crate::knowledge::store::ReservationRow>,
    /// Last time each running migration's source answered.
    last_contact: BTreeMap<String, i64>,
    /// Running migrations whose source hostd did not answer the last
    /// status query (down, restarting): logged once when it stops and
    /// once when it answers again.
    unanswered: BTreeSet<String>,
    /// The migrations this node finished since it started.
    finished: FinishedTotals,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Orchestrator")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops the oldest finished migrations beyond `keep` (the store keeps
/// their records, under its own retention).
fn bound_history(migs: &mut BTreeMap<String, Migration>, keep: usize) {
    let mut done: Vec<(i64, u64, String)> = migs
        .values()
        .filter(|m| m.state.is_final())
        .map(|m| {
            (
                m.ended_unix_ms.unwrap_or(m.created_unix_ms),
                m.seq,
                m.id.clone(),
            )
        })
        .collect();
    if done.len() <= keep {
        return;
    }
    done.sort_unstable();
    let excess = done.len() - keep;
    for (_, _, id) in done.into_iter().take(excess) {
        migs.remove(&id);
    }
}

/// Available bandwidth of a hop whose reservations are all sending:
/// [`hop_available_bps`] with every reservation's traffic possibly in
/// `used`, i.e. capacity − max(used, reserved), bit/s.
pub fn available_bps(capacity: f64, used: f64, reserved: f64) -> f64 {
    hop_available_bps(capacity, used, reserved, reserved)
}

/// Available bandwidth of a hop, bit/s (Shoal's own rule; see
/// docs/reservations.md). `used` is the port's measured tx rate, which
/// already carries the traffic of the reserved migrations sending on it;
/// `reserved` is the sum of the reservations on the hop; `sending` is the
/// part of `reserved` held by migrations that may be sending (running).
/// The port rate is not split per flow, so the reserved migrations'
/// measured share is taken as `min(used, sending)` (their meters cap
/// them at their reservations) and only the rest of `used` is other
/// traffic: available = capacity − (used − min(used, sending)) −
/// reserved. Each reservation thus counts once, as max(reserved rate,
/// measured share). Reservations never add up to more than the capacity;
/// when a running migration sends less than its reservation, the
/// estimate of other traffic is low, which only costs best-effort
/// traffic.
pub fn hop_available_bps(capacity: f64, used: f64, reserved: f64, sending: f64) -> f64 {
    let other = used - used.min(sending.min(reserved).max(0.0));
    (capacity - other.max(0.0) - reserved).max(0.0)
}

/// The hops of `path` (from [`Topology::path`]) as (dpid, egress port).
pub fn hops_of(path: &[(u64, Option<u32>)]) -> Vec<(u64, Option<u32>)> {
    path.to_vec()
}

impl Orchestrator {
    /// A new orchestrator reading `knowledge`, driving its switches and
    /// recording in its store.
    pub async fn new(knowledge: &Arc<Knowledge>, oc: OrchConfig) -> Arc<Orchestrator> {
        let hostd = Arc::new(HttpHostd::new(
            Duration::from_secs_f64(oc.execute.hostd_timeout_s),
            oc.token.clone(),
        ));
        Self::with_handles(oc, Handles::of(knowledge, hostd)).await
    }

    /// A new orchestrator working through `handles` (it holds the fabric
    /// view weakly: it stops acting once the fabric is gone).
    pub async fn with_handles(oc: OrchConfig, handles: Handles) -> Arc<Orchestrator> {
        let cfg = oc.execute;
        let queues = if cfg.reservation == ReservationKind::Queue {
            let session = QueueSession::new(
                &cfg.ovsdb,
                Arc::new(SystemTc::new()),
                QueueConfig::default(),
            );
            // Connects and sweeps the leftovers of earlier runs now when
            // OVSDB is there (else on a later tick).
            let _ = session.get().await;
            Some(session)
        } else {
            None
        };
        Arc::new(Orchestrator {
            fabric: Arc::downgrade(&handles.fabric),
            switches: handles.switches,
            hostd: handles.hostd,
            store: handles.store,
            clock: handles.clock,
            cpu_threshold: oc.cpu_threshold,
            downtime_goal_s: oc.downtime_goal_s,
            min_progress_mb: oc.min_progress_mb,
            cfg,
            state: Mutex::new(OrchState::default()),
            queues,
            weights: oc.weights,
            history: oc.history.max(1),
            settle: oc.settle,
            leading: std::sync::atomic::AtomicBool::new(true),
            recorded: Mutex::new(BTreeMap::new()),
        })
    }

    fn fabric(&self) -> Option<Arc<dyn FabricView>> {
        self.fabric.upgrade()
    }

    /// Loads the migrations and reservations of an earlier run.
    pub fn restore(&self) {
        let Some(store) = &self.store else { return };
        let migs: Vec<Migration> = match store.migrations(None, 10_000) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot read migrations from the knowledge store");
                return;
            }
        };
        let live = store.live_reservations(None).unwrap_or_default();
        *lock(&self.recorded) = migs.iter().map(|m| (m.id.clone(), m.state)).collect();
        let mut st = lock(&self.state);
        // Reservation rows a restored migration still holds.
        let mut held = BTreeSet::new();
        for mut m in migs {
            st.seq = st.seq.max(m.seq + 1);
            if !m.state.is_final() {
                info!(id = %m.id, vm = %m.vm, state = m.state.as_str(), reservations = m.reservations.len(), "migration restored after a restart");
                if m.state == MigState::Reserving {
                    // Never reached the hosts: nothing ran; queue it again.
                    // What it had installed so far is stale.
                    m.state = MigState::Queued;
                    m.queued_reason = Some("controller restarted while reserving".into());
                    m.reservations.clear();
                } else {
                    // Running or verifying at the hosts: it keeps its
                    // reservations (written ahead, installed on the
                    // switches, which keep them across a controller's
                    // death) until it ends, as if nothing had happened.
                    held.extend(m.reservations.iter().map(|r| r.store_id));
                }
            }
            st.migs.insert(m.id.clone(), m);
        }
        let stale: Vec<_> = live.into_iter().filter(|r| !held.contains(&r.id)).collect();
        bound_history(&mut st.migs, self.history);
        if !stale.is_empty() {
            info!(
                count = stale.len(),
                "reservations of an earlier run will be removed"
            );
        }
        st.stale = stale;
    }

    /// A cluster node became leader: what it held in memory is replaced by
    /// the shared store's records, as after a restart ([`Orchestrator::restore`]):
    /// a migration its predecessor had started is followed by its command
    /// ids (never sent again under new ones), one still reserving is queued
    /// again, and the reservations recorded as live are removed once no
    /// migration holds them.
    pub fn take_over(&self) {
        {
            let mut st = lock(&self.state);
            st.migs.clear();
            st.stale.clear();
            st.last_contact.clear();
            st.unanswered.clear();
        }
        // (Not under the state's lock: `persist` takes `recorded` first.)
        lock(&self.recorded).clear();
        self.restore();
        info!(
            active = self.active().len(),
            "orchestrator: this node leads; migrations taken over from the knowledge store"
        );
    }

    /// What the API shows: the migrations this node follows when it leads
    /// (always, for a single controller); on a cluster follower the shared
    /// store's records (the leader's), at most as many as kept in memory.
    pub fn list_for_api(&self) -> Vec<Migration> {
        if self.fabric().is_some_and(|f| f.may_lead().is_err()) {
            if let Some(store) = &self.store {
                match store.migrations::<Migration>(None, self.history) {
                    Ok(mut v) => {
                        v.sort_by_key(|m| (m.created_unix_ms, m.seq));
                        return v;
                    }
                    Err(e) => warn!(error = %e, "cannot read migrations from the knowledge store"),
                }
            }
        }
        self.list()
    }

    /// One migration as the API shows it (see [`Orchestrator::list_for_api`]).
    pub fn get_for_api(&self, id: &str) -> Option<Migration> {
        if self.fabric().is_some_and(|f| f.may_lead().is_err()) {
            if let Some(store) = &self.store {
                match store.migration::<Migration>(id) {
                    Ok(m) => return m,
                    Err(e) => warn!(error = %e, "cannot read a migration from the knowledge store"),
                }
            }
        }
        self.get(id)
    }

    /// All migrations, oldest first.
    pub fn list(&self) -> Vec<Migration> {
        let mut v: Vec<Migration> = lock(&self.state).migs.values().cloned().collect();
        v.sort_by_key(|m| (m.created_unix_ms, m.seq));
        v
    }

    /// One migration.
    pub fn get(&self, id: &str) -> Option<Migration> {
        lock(&self.state).migs.get(id).cloned()
    }

    /// Migrations not final yet.
    pub fn active(&self) -> Vec<Migration> {
        lock(&self.state)
            .migs
            .values()
            .filter(|m| !m.state.is_final())
            .cloned()
            .collect()
    }

    /// Writes the record of migration `m` as it is in memory now (the
    /// latest, even when `m` is an older copy), as a compare-and-set on the
    /// state this node last recorded: a record another node changed since
    /// (two leaders at once, which the fence should make impossible) is
    /// not overwritten. The error says why it could not write.
    fn persist(&self, m: &Migration) -> Result<(), String> {
        let mut recorded = lock(&self.recorded);
        let Some(cur) = lock(&self.state).migs.get(&m.id).cloned() else {
            return Ok(());
        };
        self.announce(&cur);
        let Some(store) = &self.store else {
            return Ok(());
        };
        let expected = recorded.get(&cur.id).map(|s| s.as_str());
        match store.put_migration_if(
            &cur.id,
            &cur.vm,
            expected,
            cur.state.as_str(),
            &cur,
            self.clock.now_unix_ms(),
        ) {
            Ok(true) => {
                recorded.insert(cur.id.clone(), cur.state);
                Ok(())
            }
            Ok(false) => {
                let now = store
                    .migration::<Migration>(&cur.id)
                    .ok()
                    .flatten()
                    .map(|x| x.state.as_str());
                warn!(id = %cur.id, expected = ?expected, stored = ?now, "migration record changed by another node; not overwritten");
                Err(format!(
                    "the migration's record was changed by another node (stored state {now:?}, expected {expected:?})"
                ))
            }
            Err(e) => {
                warn!(id = %cur.id, error = %e, "cannot persist migration");
                Err(format!(
                    "cannot record the migration in the knowledge store: {e}"
                ))
            }
        }
    }

    /// Publishes migration `m` as it is now on the event stream.
    fn announce(&self, m: &Migration) {
        let Some(bus) = self.fabric().and_then(|f| f.events()) else {
            return;
        };
        bus.publish(
            "migration",
            serde_json::json!({
                "id": m.id,
                "vm": m.vm,
                "from": m.from,
                "to": m.to,
                "state": m.state.as_str(),
                "path": m.path,
                "bandwidth_bytes_per_s": m.bandwidth_bytes_per_s,
                "deadline_s": m.deadline_s,
                "predicted_s": m.predicted.as_ref().map(|p| p.time_s),
                "reservations": m.reservations.len(),
                "progress": m.progress,
                "total_time_ms": m.result.as_ref().map(|r| r.total_time_ms),
                "error": m.error,
            }),
        );
    }

    /// Publishes a reservation installed or removed.
    fn announce_reservation(
        &self,
        action: &str,
        migration: Option<&str>,
        kind: &str,
        target: &str,
    ) {
        if let Some(bus) = self.fabric().and_then(|f| f.events()) {
            bus.publish(
                "reservation",
                serde_json::json!({
                    "action": action,
                    "migration": migration,
                    "kind": kind,
                    "target": target,
                }),
            );
        }
    }

    /// Links migration `id` to the decision that asked for it (recorded).
    pub fn link_decision(&self, id: &str, decision: i64) {
        self.update(id, |m| m.decision_id = Some(decision));
    }

    fn host_facts(s: &dyn FabricView, id: &str) -> Option<HostFacts> {
        let hosts = s.hosts().ok()?;
        let e = hosts.host(id)?;
        let reg = &e.registration;
        let vm_memory_mb = reg.vms.iter().map(|v| v.memory_mb as f64).sum();
        Some(HostFacts {
            api_url: reg.api_url.trim_end_matches('/').to_string(),
            dom0: reg.dom0_addr.clone(),
            bridge: reg.bridge.as_ref().map(|b| b.datapath_id),
            nic_bps: reg.nic_bps as f64,
            memory_mb: reg.memory_mb as f64,
            cores: f64::from(reg.cores.max(1)),
            cpu_util: e.latest().map(|r| r.host.cpu_util).unwrap_or(0.0),
            vm_memory_mb,
        })
    }

    /// What a request would do if it were submitted now: the destination,
    /// path, bandwidth, VMPatrol prediction and communication cost before
    /// and after, from the same checks as [`Orchestrator::submit`] (an
    /// error is what `submit` would answer). Queues nothing.
    pub fn estimate(
        &self,
        req: &MigrationRequest,
        snap: Option<&crate::knowledge::snapshot::Snapshot>,
    ) -> Result<Estimate, OrchError> {
        let s = self
            .fabric()
            .ok_or_else(|| OrchError::Conflict("controller is shutting down".into()))?;
        let p = self.prepare(&*s, req)?;
        let (cost_before, cost_after) = match snap {
            Some(sn) => {
                let before = crate::plan::physics::communication_cost(sn, &self.weights);
                let mut moved = sn.clone();
                if let Some(v) = moved.vms.get_mut(&req.vm) {
                    v.host = p.to.clone();
                }
                let after = crate::plan::physics::communication_cost(&moved, &self.weights);
                (Some(before), Some(after))
            }
            None => (None, None),
        };
        Ok(Estimate {
            vm: req.vm.clone(),
            from: p.vm.from.clone(),
            to: p.to.clone(),
            deadline_s: p.deadline_s,
            reserve: p.reserve,
            bandwidth_bytes_per_s: p.bandwidth,
            memory_mb: p.vm.memory_mb,
            predicted: Predicted {
                time_s: p.predicted.time_s,
                traffic_bytes: p.predicted.traffic_mb * MIB,
                rounds: p.predicted.rounds,
                downtime_s: p.predicted.downtime_s,
            },
            path: p.path.iter().map(|(d, _)| dpid_str(*d)).collect(),
            cost_before,
            cost_after,
        })
    }

    /// The checks and computations of a request (see
    /// [`Orchestrator::submit`]), without queueing.
    fn prepare(&self, s: &dyn FabricView, req: &MigrationRequest) -> Result<Prepared, OrchError> {
        s.may_lead()?;
        let deadline_s = req.deadline_s.unwrap_or(self.cfg.default_deadline_s);
        if !(deadline_s.is_finite() && deadline_s > 0.0) {
            return Err(OrchError::Invalid(format!(
                "deadline_s must be a number > 0, got {deadline_s}"
            )));
        }
        let reserve = req
            .reserve
            .unwrap_or(self.cfg.reservation != ReservationKind::None);
        let vm = Self::vm_facts(s, &req.vm)?;
        if self.active().iter().any(|m| m.vm == req.vm) {
            return Err(OrchError::Conflict(format!(
                "VM {} already has a migration under way",
                req.vm
            )));
        }
        let src =
            Self::host_facts(s, &vm.from).ok_or_else(|| OrchError::UnknownHost(vm.from.clone()))?;
        // Memory of the migrations already heading to each host.
        let inbound: BTreeMap<String, f64> =
            self.active().iter().fold(BTreeMap::new(), |mut acc, m| {
                *acc.entry(m.to.clone()).or_insert(0.0) += m.memory_mb;
                acc
            });
        let to = self.destination(s, req, &vm, &inbound)?;
        if let Some(m) = s.control().maintenance.get(&to) {
            return Err(OrchError::NoRoom(format!(
                "destination {to} is in maintenance (since {} ms, by {}): it receives no VM",
                m.since_unix_ms, m.by
            )));
        }
        let dst = Self::host_facts(s, &to).ok_or_else(|| OrchError::UnknownHost(to.clone()))?;
        self.room(&to, &dst, &vm, &inbound)
            .map_err(OrchError::NoRoom)?;
        let dst_ip: Ipv4Addr = dst.dom0.parse().map_err(|_| {
            OrchError::Invalid(format!(
                "destination dom0 address {:?} is not IPv4",
                dst.dom0
            ))
        })?;
        let (path, bottleneck_bps) = Self::path(s, &src, &dst, &vm.from, &to, reserve)?;
        let (bandwidth, predicted) =
            self.bandwidth(&vm, &src, &dst, bottleneck_bps, deadline_s, reserve)?;
        Ok(Prepared {
            deadline_s,
            reserve,
            vm,
            src_dom0: src.dom0.clone(),
            to,
            dst_ip,
            path,
            bandwidth,
            predicted,
        })
    }

    /// Checks a request and queues the migration. Changes nothing when it
    /// returns an error.
    pub fn submit(
        &self,
        req: MigrationRequest,
        reason: String,
        decision_id: Option<i64>,
    ) -> Result<Migration, OrchError> {
        let s = self
            .fabric()
            .ok_or_else(|| OrchError::Conflict("controller is shutting down".into()))?;
        let Prepared {
            deadline_s,
            reserve,
            vm,
            src_dom0,
            to,
            dst_ip,
            path,
            bandwidth,
            predicted,
        } = self.prepare(&*s, &req)?;
        let cost_before = self.communication_cost(&*s, None);
        let now = self.clock.now_unix_ms();
        let m = {
            let mut st = lock(&self.state);
            // Checked again under the lock: of concurrent submissions for
            // one VM, exactly one is queued.
            if st
                .migs
                .values()
                .any(|o| o.vm == req.vm && !o.state.is_final())
            {
                return Err(OrchError::Conflict(format!(
                    "VM {} already has a migration under way",
                    req.vm
                )));
            }
            let seq = st.seq;
            st.seq += 1;
            let port = self.cfg.port_base.wrapping_add((seq % 10_000) as u16);
            let m = Migration {
                id: format!("mig-{now}-{seq}"),
                vm: req.vm.clone(),
                from: vm.from.clone(),
                to: to.clone(),
                state: MigState::Queued,
                reason,
                deadline_s,
                reserve,
                bandwidth_bytes_per_s: bandwidth,
                memory_mb: vm.memory_mb,
                dirty_rate_mbps: vm.dirty_max,
                predicted: Some(Predicted {
                    time_s: predicted.time_s,
                    traffic_bytes: predicted.traffic_mb * MIB,
                    rounds: predicted.rounds,
                    downtime_s: predicted.downtime_s,
                }),
                path: path.iter().map(|(d, _)| dpid_str(*d)).collect(),
                hops: path
                    .iter()
                    .map(|(d, p)| Hop {
                        dpid: dpid_str(*d),
                        out_port: *p,
                        capacity_bps: None,
                        available_bps: None,
                    })
                    .collect(),
                reservations: Vec::new(),
                queued_reason: Some("waiting for the next admission round".into()),
                progress: None,
                result: None,
                error: None,
                src_addr: src_dom0,
                dst_addr: format!("{dst_ip}:{port}"),
                created_unix_ms: now,
                started_unix_ms: None,
                ended_unix_ms: None,
                cost_before,
                cost_after: None,
                decision_id,
                seq,
            };
            st.migs.insert(m.id.clone(), m.clone());
            m
        };
        let _ = self.persist(&m);
        info!(id = %m.id, vm = %m.vm, from = %m.from, to = %m.to, bandwidth_mbps = bandwidth / MIB, deadline_s, reserve, "migration queued");
        Ok(m)
    }

    /// What a migration request needs to know about its VM.
    fn vm_facts(s: &dyn FabricView, name: &str) -> Result<VmFacts, OrchError> {
        let hosts = s.hosts().map_err(|e| OrchError::Conflict(e.to_string()))?;
        let (from, _) = hosts
            .vm_inventory(name)
            .ok_or_else(|| OrchError::UnknownVm(name.to_string()))?;
        let Some(metrics) = hosts.vm_metrics(name) else {
            return Err(OrchError::Conflict(format!(
                "VM {name} has not been reported by its host yet: its dirty rate is unknown"
            )));
        };
        let dirty_max = hosts
            .host(from)
            .map(|e| {
                e.reports
                    .iter()
                    .filter_map(|r| r.vms.iter().find(|v| v.name == name))
                    .filter_map(|v| v.dirty_rate_mbps)
                    .fold(0.0f64, f64::max)
            })
            .unwrap_or(0.0);
        Ok(VmFacts {
            from: from.to_string(),
            memory_mb: metrics.memory_mb as f64,
            cpu_cores: metrics.cpu_cores,
            dirty_max,
        })
    }

    /// Whether host `id` can take the VM: memory (with the migrations
    /// already heading there) and CPU below the threshold.
    fn room(
        &self,
        id: &str,
        h: &HostFacts,
        vm: &VmFacts,
        inbound: &BTreeMap<String, f64>,
    ) -> Result<(), String> {
        let memory_mb = vm.memory_mb;
        let used = h.vm_memory_mb + inbound.get(id).copied().unwrap_or(0.0);
        if used + memory_mb > h.memory_mb {
            return Err(format!(
                "destination {id} has no room: {used:.0} of {:.0} MB memory allocated, the VM needs {memory_mb:.0} MB",
                h.memory_mb
            ));
        }
        let cpu_after = h.cpu_util + vm.cpu_cores / h.cores;
        if cpu_after > self.cpu_threshold {
            return Err(format!(
                "destination {id} has no room: CPU would be {:.0} % (threshold {:.0} %)",
                cpu_after * 100.0,
                self.cpu_threshold * 100.0
            ));
        }
        Ok(())
    }

    /// The destination: the one asked for, or (`auto`) the least loaded
    /// other host with room.
    fn destination(
        &self,
        s: &dyn FabricView,
        req: &MigrationRequest,
        vm: &VmFacts,
        inbound: &BTreeMap<String, f64>,
    ) -> Result<String, OrchError> {
        let to = if req.destination == "auto" {
            let ids: Vec<String> = s
                .hosts()
                .map(|h| h.hosts().keys().cloned().collect())
                .unwrap_or_default();
            // The placement rules: `auto` never picks a host where the VM
            // would break one that holds now (an operator who names the
            // destination may; the break is then reported).
            // VMs of the migrations under way count where they go: two
            // VMs of one anti-affinity group drained at once must not be
            // given the same host.
            let active = self.active();
            let snap = s
                .snapshot(0, 2, Vec::new(), Vec::new(), BTreeMap::new())
                .filter(|sn| !sn.rules.is_empty())
                .map(|mut sn| {
                    for m in &active {
                        if let Some(v) = sn.vms.get_mut(&m.vm) {
                            v.host = m.to.clone();
                        }
                    }
                    sn
                });
            let broken = |sn: &crate::knowledge::snapshot::Snapshot| -> BTreeSet<String> {
                crate::plan::constraints::violations(sn)
                    .into_iter()
                    .map(|v| v.rule)
                    .collect()
            };
            let before = snap.as_ref().map(broken).unwrap_or_default();
            let allowed = |host: &str| -> bool {
                let Some(sn) = &snap else { return true };
                // A host the snapshot does not have (no report yet) cannot
                // be checked against the rules: not chosen.
                if !sn.hosts.contains_key(host) || !sn.vms.contains_key(&req.vm) {
                    return false;
                }
                let mut moved = sn.clone();
                if let Some(v) = moved.vms.get_mut(&req.vm) {
                    v.host = host.to_string();
                }
                broken(&moved).is_subset(&before)
            };
            let mut best: Option<(f64, String)> = None;
            for id in ids {
                if id == vm.from {
                    continue;
                }
                let Some(h) = Self::host_facts(s, &id) else {
                    continue;
                };
                if self.room(&id, &h, vm, inbound).is_ok()
                    && allowed(&id)
                    && best.as_ref().is_none_or(|(c, _)| h.cpu_util < *c)
                {
                    best = Some((h.cpu_util, id));
                }
            }
            best.map(|(_, id)| id).ok_or_else(|| {
                OrchError::NoRoom(
                    "no other host has room for the VM within the placement rules".into(),
                )
            })?
        } else {
            req.destination.clone()
        };
        if to == vm.from {
            return Err(OrchError::Conflict(format!(
                "VM {} already runs on {to}",
                req.vm
            )));
        }
        Ok(to)
    }

    /// The path between the two hosts' bridges and its bottleneck capacity,
    /// bit/s (no path: the smaller NIC, unless bandwidth is to be reserved).
    fn path(
        s: &dyn FabricView,
        src: &HostFacts,
        dst: &HostFacts,
        from: &str,
        to: &str,
        reserve: bool,
    ) -> Result<(SwitchPath, f64), OrchError> {
        let topo = s
            .topology()
            .map_err(|e| OrchError::Conflict(e.to_string()))?;
        let (path, bottleneck_bps) = match (src.bridge, dst.bridge) {
            (Some(a), Some(b)) => match topo.path(a, b) {
                Some(p) => {
                    let cap = p
                        .iter()
                        .filter_map(|(d, port)| port.map(|pt| (*d, pt)))
                        .map(|(d, pt)| port_capacity_bps(&topo, d, pt, s.link_capacity_bps()))
                        .fold(f64::INFINITY, f64::min);
                    (p, cap)
                }
                None if reserve => {
                    return Err(OrchError::Infeasible(format!(
                        "no path between the bridges of {from} and {to}: cannot reserve bandwidth"
                    )))
                }
                None => (Vec::new(), src.nic_bps.min(dst.nic_bps)),
            },
            _ if reserve => {
                return Err(OrchError::Infeasible(format!(
                    "{from} or {to} registered no bridge: cannot reserve bandwidth on a path"
                )))
            }
            _ => (Vec::new(), src.nic_bps.min(dst.nic_bps)),
        };
        Ok((path, bottleneck_bps))
    }

    /// The bandwidth to give the migration, bytes/s, and the VMPatrol
    /// prediction at that bandwidth: the least that meets the deadline when
    /// reserving, else the configured maximum.
    fn bandwidth(
        &self,
        vm: &VmFacts,
        src: &HostFacts,
        dst: &HostFacts,
        bottleneck_bps: f64,
        deadline_s: f64,
        reserve: bool,
    ) -> Result<(f64, vmpatrol::Prediction), OrchError> {
        let (memory_mb, dirty_max) = (vm.memory_mb, vm.dirty_max);
        let bottleneck_bps = bottleneck_bps.min(src.nic_bps).min(dst.nic_bps);
        let max_bytes = (bottleneck_bps / 8.0 / self.cfg.meter_headroom)
            .min(self.cfg.max_bandwidth_bytes_per_s);
        let params = ModelParams {
            memory_mb,
            dirty_mbps: dirty_max,
            downtime_goal_s: self.downtime_goal_s,
            min_progress_mb: self.min_progress_mb,
        };
        let planned_s = deadline_s * (1.0 - self.cfg.deadline_margin);
        let need = vmpatrol::min_bandwidth_for_deadline(&params, planned_s, max_bytes / MIB)
            .map_err(|e| match e {
                ModelError::DeadlineInfeasible { .. } => OrchError::Infeasible(format!(
                    "deadline {deadline_s} s cannot be met: moving {memory_mb:.0} MB with a dirty rate of {dirty_max:.1} MB/s needs more than the {:.1} MB/s the path offers",
                    max_bytes / MIB
                )),
                other => OrchError::Infeasible(other.to_string()),
            })?;
        if reserve {
            Ok((need.bandwidth_mbps * MIB, need))
        } else {
            let at_max = vmpatrol::predict(&params, max_bytes / MIB)
                .map_err(|e| OrchError::Infeasible(e.to_string()))?;
            Ok((self.cfg.max_bandwidth_bytes_per_s, at_max))
        }
    }

    /// Cancels a queued migration.
    pub fn cancel(&self, id: &str) -> Result<Migration, OrchError> {
        let m = {
            let mut st = lock(&self.state);
            let m = st
                .migs
                .get_mut(id)
                .ok_or_else(|| OrchError::NotFound(id.to_string()))?;
            if m.state != MigState::Queued {
                return Err(OrchError::Conflict(format!(
                    "migration {id} is {}: only a queued migration can be cancelled",
                    m.state.as_str()
                )));
            }
            m.state = MigState::Cancelled;
            m.ended_unix_ms = Some(self.clock.now_unix_ms());
            m.queued_reason = None;
            let m = m.clone();
            st.finished.add(&m);
            m
        };
        let _ = self.persist(&m);
        bound_history(&mut lock(&self.state).migs, self.history);
        info!(id, "migration cancelled");
        Ok(m)
    }

    /// Overall communication cost now, optionally with `moved = (vm, host)`.
    /// The S-CORE communication cost of `snap` with this orchestrator's
    /// link weights.
    pub fn cost_of(&self, snap: &crate::knowledge::snapshot::Snapshot) -> f64 {
        crate::plan::physics::communication_cost(snap, &self.weights)
    }

    fn communication_cost(&self, s: &dyn FabricView, moved: Option<(&str, &str)>) -> Option<f64> {
        let mut snap = s.snapshot(0, 2, Vec::new(), Vec::new(), BTreeMap::new())?;
        if let Some((vm, host)) = moved {
            if let Some(v) = snap.vms.get_mut(vm) {
                v.host = host.to_string();
            }
        }
        Some(crate::plan::physics::communication_cost(
            &snap,
            &self.weights,
        ))
    }

    /// Runs the orchestrator until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => self.tick().await,
                _ = shutdown.changed() => if *shutdown.borrow() { break },
            }
        }
    }

    /// One round: stale cleanups, following, admission. A cluster node
    /// that does not lead does nothing; one that has just become leader
    /// first takes the migrations over from the shared knowledge store
    /// ([`Orchestrator::take_over`]).
    pub async fn tick(&self) {
        use std::sync::atomic::Ordering;
        let Some(s) = self.fabric() else { return };
        if s.may_lead().is_err() {
            if self.leading.swap(false, Ordering::SeqCst) {
                info!("orchestrator: this node no longer leads; it stops following migrations");
            }
            return;
        }
        if !self.leading.swap(true, Ordering::SeqCst) {
            self.take_over();
        }
        self.clean_stale().await;
        for m in self.active() {
            match m.state {
                MigState::Running => self.follow(&*s, m).await,
                MigState::Verifying => self.verify(&*s, m).await,
                _ => {}
            }
        }
        let queued: Vec<Migration> = {
            let mut v: Vec<Migration> = self
                .active()
                .into_iter()
                .filter(|m| m.state == MigState::Queued)
                .collect();
            v.sort_by_key(|m| m.seq);
            v
        };
        for m in queued {
            self.try_start(&*s, m).await;
        }
    }

    async fn clean_stale(&self) {
        let stale = std::mem::take(&mut lock(&self.state).stale);
        if stale.is_empty() {
            return;
        }
        // Migrations that hold reservations now.
        let holding: BTreeSet<String> = self
            .active()
            .into_iter()
            .filter(|m| !m.reservations.is_empty() || m.state == MigState::Reserving)
            .map(|m| m.id)
            .collect();
        let mut keep = Vec::new();
        for r in stale {
            let done = match r.kind.as_str() {
                // A migration queued again after a restart reuses its meter
                // ids and cookies (they derive from its sequence number):
                // while it holds new reservations, removing the old ones by
                // id would remove the new; they wait until it ends.
                "meter" | "flow" if holding.contains(&r.migration) => {
                    keep.push(r);
                    continue;
                }
                "meter" | "flow" => {
                    let Some(dpid) = crate::monitor::dpid::parse_dpid(&r.target) else {
                        continue;
                    };
                    let Some(h) = self.switches.switch(dpid) else {
                        keep.push(r);
                        continue;
                    };
                    let msg = if r.kind == "meter" {
                        r.detail["meter_id"]
                            .as_u64()
                            .map(|id| delete_meter(id as u32))
                    } else {
                        r.detail["cookie"].as_u64().map(delete_flows)
                    };
                    match msg {
                        Some(m) => h.send(m).await.is_ok() && h.barrier().await.is_ok(),
                        None => true,
                    }
                }
                // By the marker (migration id) and the port alone, which
                // every queue record has from before anything was created
                // (write-ahead): its QoS UUID may never have been learnt.
                // Not while the migration holds reservations again (its
                // own, new ones); retried until OVSDB answers.
                "queue" => {
                    if holding.contains(&r.migration) {
                        keep.push(r);
                        continue;
                    }
                    match self.queue_manager().await {
                        Some(q) => match q.release_all_of(&r.migration, Some(&r.target)).await {
                            Ok(_) => true,
                            Err(e) => {
                                warn!(migration = %r.migration, port = %r.target, error = %e, "queue reservation not removed yet; will retry");
                                false
                            }
                        },
                        None => false,
                    }
                }
                _ => true,
            };
            if done {
                info!(kind = %r.kind, target = %r.target, migration = %r.migration, "stale reservation removed");
                self.announce_reservation("removed", Some(&r.migration), &r.kind, &r.target);
                if let Some(store) = &self.store {
                    let _ = store.remove_reservation(r.id, self.clock.now_unix_ms());
                }
            } else {
                keep.push(r);
            }
        }
        lock(&self.state).stale.extend(keep);
    }

    /// Compare-and-set: applies `f` only while the migration is still in
    /// state `expected` (under the table's lock), so that a concurrent
    /// cancel or finish is never overwritten. None when it is not.
    fn update_if(
        &self,
        id: &str,
        expected: MigState,
        f: impl FnOnce(&mut Migration),
    ) -> Option<Migration> {
        self.update_if_recorded(id, expected, f).map(|(m, _)| m)
    }

    /// [`Orchestrator::update_if`], with whether its record was written.
    fn update_if_recorded(
        &self,
        id: &str,
        expected: MigState,
        f: impl FnOnce(&mut Migration),
    ) -> Option<(Migration, Result<(), String>)> {
        let m = {
            let mut st = lock(&self.state);
            let m = st.migs.get_mut(id)?;
            if m.state != expected {
                return None;
            }
            f(m);
            m.clone()
        };
        let recorded = self.persist(&m);
        Some((m, recorded))
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Migration)) -> Option<Migration> {
        self.update_recorded(id, f).map(|(m, _)| m)
    }

    /// [`Orchestrator::update`], with whether its record was written.
    fn update_recorded(
        &self,
        id: &str,
        f: impl FnOnce(&mut Migration),
    ) -> Option<(Migration, Result<(), String>)> {
        let m = {
            let mut st = lock(&self.state);
            let m = st.migs.get_mut(id)?;
            f(m);
            m.clone()
        };
        let recorded = self.persist(&m);
        Some((m, recorded))
    }

    /// Admission: hosts free, and a candidate path (the forwarding path
    /// first, then loop-free detours up to two hops longer) whose every hop
    /// has enough bandwidth; the first such path wins.
    fn admit(&self, s: &dyn FabricView, m: &Migration) -> Result<Vec<Hop>, String> {
        // Right after a (re)start or a reconnection the bridges' edge ports
        // are not confirmed yet, and the stream between the dom0s would not
        // be delivered (seen: "No route to host" right after a controller
        // restart): wait until both ends have settled.
        if let Ok(topo) = s.topology() {
            let now = Instant::now();
            for host in [&m.from, &m.to] {
                let Some(b) = Self::host_facts(s, host).and_then(|h| h.bridge) else {
                    continue;
                };
                match topo.connected_since(b) {
                    Some(t) if now.saturating_duration_since(t) >= self.settle => {}
                    Some(_) => {
                        return Err(format!(
                            "waiting for the bridge of {host} ({}) to settle after it connected",
                            dpid_str(b)
                        ))
                    }
                    // Not in the topology: nothing to wait for (the paths
                    // below decide).
                    None => {}
                }
            }
        }
        let candidates: Vec<Vec<Hop>> = match (
            Self::host_facts(s, &m.from).and_then(|h| h.bridge),
            Self::host_facts(s, &m.to).and_then(|h| h.bridge),
            s.topology().ok(),
        ) {
            (Some(a), Some(b), Some(topo)) => topo
                .paths(a, b, 2, 8)
                .into_iter()
                .map(|p| {
                    p.into_iter()
                        .map(|(d, port)| Hop {
                            dpid: dpid_str(d),
                            out_port: port,
                            capacity_bps: None,
                            available_bps: None,
                        })
                        .collect()
                })
                .collect(),
            _ => Vec::new(),
        };
        if candidates.is_empty() {
            return self.admit_hops(s, m, &m.hops);
        }
        let mut first_err = None;
        for hops in &candidates {
            match self.admit_hops(s, m, hops) {
                Ok(h) => return Ok(h),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| "no path".into()))
    }

    fn admit_hops(
        &self,
        s: &dyn FabricView,
        m: &Migration,
        candidate: &[Hop],
    ) -> Result<Vec<Hop>, String> {
        let active = self.active();
        let busy = |h: &str| {
            active
                .iter()
                .filter(|o| o.id != m.id && !matches!(o.state, MigState::Queued))
                .filter(|o| o.from == h || o.to == h)
                .count()
        };
        for h in [&m.from, &m.to] {
            if busy(h) >= self.cfg.max_per_host {
                return Err(format!("host {h} is busy with another migration"));
            }
        }
        if !m.reserve {
            return Ok(candidate.to_vec());
        }
        let topo = s.topology().map_err(|e| e.to_string())?;
        let ports = s.port_rates();
        let used: BTreeMap<(u64, u32), f64> = ports
            .iter()
            .filter_map(|p| p.tx_bytes_per_s.map(|r| ((p.dpid, p.port), r * 8.0)))
            .collect();
        // Per egress port: (reserved bit/s, reserved bit/s of running
        // migrations, whose traffic is in `used`, reserved migrations).
        let mut reserved: BTreeMap<(String, u32), (f64, f64, usize)> = BTreeMap::new();
        for o in active.iter().filter(|o| {
            o.id != m.id
                && o.reserve
                && matches!(
                    o.state,
                    MigState::Reserving | MigState::Running | MigState::Verifying
                )
        }) {
            for h in &o.hops {
                if let Some(p) = h.out_port {
                    let e = reserved.entry((h.dpid.clone(), p)).or_insert((0.0, 0.0, 0));
                    let r = o.bandwidth_bytes_per_s * 8.0 * self.cfg.meter_headroom;
                    e.0 += r;
                    if matches!(o.state, MigState::Running) {
                        e.1 += r;
                    }
                    e.2 += 1;
                }
            }
        }
        let need = m.bandwidth_bytes_per_s * 8.0 * self.cfg.meter_headroom;
        let mut hops = Vec::new();
        for h in candidate {
            let Some(dpid) = crate::monitor::dpid::parse_dpid(&h.dpid) else {
                return Err(format!("bad hop {}", h.dpid));
            };
            if topo.switch(dpid).is_none() {
                return Err(format!("switch {} of the path is not connected", h.dpid));
            }
            let mut hop = h.clone();
            if let Some(p) = h.out_port {
                let cap = port_capacity_bps(&topo, dpid, p, s.link_capacity_bps());
                let (res, sending, n) = reserved
                    .get(&(h.dpid.clone(), p))
                    .copied()
                    .unwrap_or((0.0, 0.0, 0));
                if n >= self.cfg.max_per_link {
                    return Err(format!(
                        "link {}:{p} already carries {n} reserved migration(s)",
                        h.dpid
                    ));
                }
                let used = used.get(&(dpid, p)).copied().unwrap_or(0.0);
                let avail = hop_available_bps(cap, used, res, sending);
                if avail < need {
                    return Err(format!(
                        "hop {}:{p} has {:.1} Mbit/s available, the migration needs {:.1} Mbit/s",
                        h.dpid,
                        avail / 1e6,
                        need / 1e6
                    ));
                }
                hop.capacity_bps = Some(cap);
                hop.available_bps = Some(avail);
            }
            hops.push(hop);
        }
        Ok(hops)
    }

    async fn try_start(&self, s: &dyn FabricView, m: Migration) {
        let hops = match self.admit(s, &m) {
            Ok(h) => h,
            Err(why) => {
                if m.queued_reason.as_deref() != Some(why.as_str()) {
                    info!(id = %m.id, reason = %why, "migration stays queued");
                    self.update_if(&m.id, MigState::Queued, |x| x.queued_reason = Some(why));
                }
                return;
            }
        };
        // Compare-and-set: a cancel since `m` was read wins.
        let Some((m, recorded)) = self.update_if_recorded(&m.id, MigState::Queued, |x| {
            x.state = MigState::Reserving;
            x.queued_reason = None;
            x.path = hops.iter().map(|h| h.dpid.clone()).collect();
            x.hops = hops;
        }) else {
            return;
        };
        // Never run a migration the store does not know about.
        if let Err(why) = recorded {
            self.finish(&m.id, MigState::Failed, Some(why));
            return;
        }
        let reservations = if m.reserve {
            match self.reserve(s, &m).await {
                Ok(r) => r,
                Err((installed, why)) => {
                    self.release(&installed).await;
                    self.finish(
                        &m.id,
                        MigState::Failed,
                        Some(format!("reservation failed: {why}")),
                    );
                    return;
                }
            }
        } else {
            Vec::new()
        };
        for r in &reservations {
            self.announce_reservation("installed", Some(&m.id), &r.kind, &r.target);
        }
        if let Some((_, Err(why))) =
            self.update_recorded(&m.id, |x| x.reservations = reservations.clone())
        {
            self.release(&reservations).await;
            self.finish(&m.id, MigState::Failed, Some(why));
            return;
        }
        if let Some(hold) = self.cfg.fault_hold_after_reserve_s {
            warn!(id = %m.id, hold_s = hold, "fault injection: holding after reserve");
            tokio::time::sleep(Duration::from_secs_f64(hold)).await;
        }
        match self.command_hosts(s, &m).await {
            Ok(()) => {
                let now = self.clock.now_unix_ms();
                lock(&self.state).last_contact.insert(m.id.clone(), now);
                self.update_if(&m.id, MigState::Reserving, |x| {
                    x.state = MigState::Running;
                    x.started_unix_ms = Some(now);
                });
                info!(id = %m.id, vm = %m.vm, hops = m.hops.len(), reservations = reservations.len(), "migration started");
            }
            Err(why) => {
                self.release(&reservations).await;
                self.finish(&m.id, MigState::Failed, Some(why));
            }
        }
    }

    /// Installs the reservation on every hop; on error returns what was
    /// installed so far (for rollback).
    async fn reserve(
        &self,
        s: &dyn FabricView,
        m: &Migration,
    ) -> Result<Vec<Reservation>, (Vec<Reservation>, String)> {
        let mut done = Vec::new();
        let (Ok(src_ip), Some((dst_ip, port))) = (
            m.src_addr.parse::<Ipv4Addr>(),
            m.dst_addr
                .split_once(':')
                .and_then(|(ip, p)| Some((ip.parse::<Ipv4Addr>().ok()?, p.parse::<u16>().ok()?))),
        ) else {
            return Err((
                done,
                format!("bad addresses {} -> {}", m.src_addr, m.dst_addr),
            ));
        };
        let rate_bps = m.bandwidth_bytes_per_s * 8.0 * self.cfg.meter_headroom;
        let meter_id = METER_BASE + (m.seq % 60_000) as u32;
        let cookie = cookie::make(cookie::KIND_MIGRATION_FIRST, m.seq + 1);
        let flow = MigrationFlow {
            src_ip,
            dst_ip,
            port,
            rate_bps,
            meter_id,
            cookie,
        };
        let store = self.store.clone();
        let record = |kind: &str, target: &str, detail: serde_json::Value| -> Result<i64, String> {
            match &store {
                Some(st) => st
                    .add_reservation(&m.id, kind, target, &detail, self.clock.now_unix_ms())
                    .map_err(|e| e.to_string()),
                None => Ok(0),
            }
        };
        for (i, hop) in m.hops.iter().enumerate() {
            let Some(dpid) = crate::monitor::dpid::parse_dpid(&hop.dpid) else {
                return Err((done, format!("bad hop {}", hop.dpid)));
            };
            let last = i + 1 == m.hops.len();
            if self.cfg.reservation == ReservationKind::Queue && !last {
                match self.reserve_queue(s, m, hop, dpid, &flow, &record).await {
                    Ok(Some(r)) => done.push(r),
                    Ok(None) => {}
                    Err((r, e)) => {
                        // What may exist (its write-ahead record) is
                        // rolled back with the rest.
                        done.extend(r);
                        return Err((done, e));
                    }
                }
                continue;
            }
            let Some(h) = self.switches.switch(dpid) else {
                return Err((done, format!("switch {} is not connected", hop.dpid)));
            };
            let target = dpid_str(dpid);
            let use_meter = self.cfg.reservation == ReservationKind::Meter;
            if use_meter {
                let id = record("meter", &target, serde_json::json!({"meter_id": meter_id}))
                    .map_err(|e| (done.clone(), e))?;
                done.push(Reservation {
                    kind: "meter".into(),
                    target: target.clone(),
                    meter_id: Some(meter_id),
                    cookie: None,
                    queue: None,
                    store_id: id,
                });
            }
            let id = record("flow", &target, serde_json::json!({"cookie": cookie}))
                .map_err(|e| (done.clone(), e))?;
            done.push(Reservation {
                kind: "flow".into(),
                target: target.clone(),
                meter_id: None,
                cookie: Some(cookie),
                queue: None,
                store_id: id,
            });
            // An ERROR for any message of the batch, before its BARRIER
            // is answered, fails the reservation (before any host is told).
            let msgs = flow.messages(use_meter, last, hop.out_port);
            if let Err(e) = h.send_batch_confirmed(msgs).await {
                return Err((done, e.to_string()));
            }
        }
        Ok(done)
    }

    /// The OVS queue manager over a live OVSDB connection (None: queue
    /// reservations are off, or OVSDB is unreachable now).
    async fn queue_manager(&self) -> Option<QueueManager> {
        self.queues.as_ref()?.get().await
    }

    /// Reserves an OVS queue on the egress port of one hop (None: the hop
    /// has no egress port). Write-ahead: the store record, with everything
    /// needed to remove the reservation (migration id = the rows' marker,
    /// port, OVSDB target, rates, classifier), is written before OVSDB is
    /// asked; on error it is returned (as a reservation without rows) for
    /// the rollback, which removes whatever the marker finds.
    async fn reserve_queue(
        &self,
        s: &dyn FabricView,
        m: &Migration,
        hop: &Hop,
        dpid: u64,
        flow: &MigrationFlow,
        record: &(dyn Fn(&str, &str, serde_json::Value) -> Result<i64, String> + Sync),
    ) -> Result<Option<Reservation>, (Option<Reservation>, String)> {
        let Some(q) = self.queue_manager().await else {
            return Err((
                None,
                "queue reservations need OVSDB, which is unreachable".into(),
            ));
        };
        let Some(out) = hop.out_port else {
            return Ok(None);
        };
        let name = s.topology().ok().and_then(|t| {
            t.switch(dpid)
                .and_then(|sw| sw.ports.get(&out).map(|p| p.desc.name.clone()))
        });
        let Some(name) = name else {
            return Err((None, format!("port {}:{out} unknown", hop.dpid)));
        };
        let cap = hop.capacity_bps.unwrap_or(flow.rate_bps * 2.0);
        let classifier = TcpMatch {
            src: flow.src_ip,
            dst: flow.dst_ip,
            dst_port: flow.port,
        };
        let ovsdb = self.queues.as_ref().map(|q| q.target().to_string());
        let intent = serde_json::json!({
            "migration_id": m.id,
            "port": name,
            "ovsdb": ovsdb,
            "link_bps": cap as u64,
            "rate_bps": flow.rate_bps as u64,
            "classifier": classifier,
            "marker": crate::execute::queues::MARKER_KEY,
        });
        let id = record("queue", &name, intent).map_err(|e| (None, e))?;
        let pending = Reservation {
            kind: "queue".into(),
            target: name.clone(),
            meter_id: None,
            cookie: None,
            queue: None,
            store_id: id,
        };
        let qr = match q
            .reserve(
                &m.id,
                &name,
                cap as u64,
                flow.rate_bps as u64,
                Some(classifier),
            )
            .await
        {
            Ok(qr) => qr,
            Err(e) => return Err((Some(pending), e.to_string())),
        };
        // The full record (with the rows' UUIDs) first, then the
        // write-ahead one goes: at every moment one record covers it.
        let mut store_id = id;
        if let Some(st) = &self.store {
            let mut detail = serde_json::to_value(&qr).unwrap_or_default();
            if let Some(o) = detail.as_object_mut() {
                o.insert("ovsdb".into(), serde_json::json!(ovsdb));
            }
            match st.add_reservation(&m.id, "queue", &name, &detail, self.clock.now_unix_ms()) {
                Ok(full) => {
                    store_id = full;
                    let _ = st.remove_reservation(id, self.clock.now_unix_ms());
                }
                Err(e) => {
                    warn!(id = %m.id, error = %e, "queue reservation kept under its write-ahead record");
                }
            }
        }
        Ok(Some(Reservation {
            kind: "queue".into(),
            target: name,
            meter_id: None,
            cookie: None,
            queue: Some(qr),
            store_id,
        }))
    }

    async fn release(&self, rs: &[Reservation]) {
        // Flows first (they reference the meters), then meters, then queues.
        let mut order: Vec<&Reservation> = rs.iter().collect();
        order.sort_by_key(|r| match r.kind.as_str() {
            "flow" => 0,
            "meter" => 1,
            _ => 2,
        });
        for r in order {
            let ok = match r.kind.as_str() {
                "flow" | "meter" => {
                    let dpid = crate::monitor::dpid::parse_dpid(&r.target);
                    match dpid.and_then(|d| self.switches.switch(d)) {
                        Some(h) => {
                            let msg = if r.kind == "flow" {
                                r.cookie.map(delete_flows)
                            } else {
                                r.meter_id.map(delete_meter)
                            };
                            match msg {
                                Some(m) => h.send(m).await.is_ok() && h.barrier().await.is_ok(),
                                None => true,
                            }
                        }
                        None => false,
                    }
                }
                // Without the reservation's rows (never learnt) the record
                // goes to the stale list, removed by its marker.
                "queue" => match (self.queue_manager().await, &r.queue) {
                    (Some(q), Some(qr)) => q.release(qr).await.is_ok(),
                    _ => false,
                },
                _ => true,
            };
            if ok {
                if let Some(st) = &self.store {
                    let _ = st.remove_reservation(r.store_id, self.clock.now_unix_ms());
                }
                self.announce_reservation("removed", None, &r.kind, &r.target);
            } else {
                // Remove it later, once the switch is back.
                warn!(kind = %r.kind, target = %r.target, "reservation not removed yet; will retry");
                if let Some(st) = &self.store {
                    if let Ok(rows) = st.live_reservations(None) {
                        lock(&self.state)
                            .stale
                            .extend(rows.into_iter().filter(|x| x.id == r.store_id));
                    }
                }
            }
        }
    }

    async fn command_hosts(&self, s: &dyn FabricView, m: &Migration) -> Result<(), String> {
        let src = Self::host_facts(s, &m.from).ok_or_else(|| format!("host {} is gone", m.from))?;
        let dst = Self::host_facts(s, &m.to).ok_or_else(|| format!("host {} is gone", m.to))?;
        let inv = s
            .hosts()
            .ok()
            .and_then(|h| h.vm_inventory(&m.vm).map(|(_, i)| i.clone()))
            .ok_or_else(|| format!("VM {} is gone", m.vm))?;
        let spec = MigrationSpec {
            vm: m.vm.clone(),
            destination_host: m.to.clone(),
            destination_addr: m.dst_addr.clone(),
            max_bandwidth_bytes_per_s: m.bandwidth_bytes_per_s.ceil().max(1.0) as u64,
            downtime_limit_ms: (self.downtime_goal_s * 1000.0).round().max(1.0) as u64,
            deadline_s: m.deadline_s,
            destination_api: None,
            incoming_command_id: None,
            peer_token: Some(shoal_common::secret::random_token()?.expose().to_string()),
            vm_spec: None,
        };
        let incoming = MigrationSpec {
            vm_spec: Some(inv),
            ..spec.clone()
        };
        let in_id = format!("{}-in", m.id);
        match self
            .put_command(
                &dst.api_url,
                &in_id,
                &proto::Command::PrepareIncoming(incoming),
            )
            .await
        {
            Ok(Sent::Taken) => {}
            // The source is not told yet: failing here is safe.
            Ok(Sent::Unknown(why)) => {
                return Err(format!("prepare_incoming at {}: {why}", m.to));
            }
            Err(e) => return Err(format!("prepare_incoming at {}: {e}", m.to)),
        }
        let out = MigrationSpec {
            destination_api: Some(dst.api_url.clone()),
            incoming_command_id: Some(in_id),
            ..spec
        };
        match self
            .put_command(
                &src.api_url,
                &format!("{}-out", m.id),
                &proto::Command::Migrate(out),
            )
            .await
        {
            Ok(Sent::Taken) => Ok(()),
            // The source may be migrating: never declared failed blindly.
            // The migration counts as running; following it asks the
            // source again (unknown there: failed, never started).
            Ok(Sent::Unknown(why)) => {
                warn!(id = %m.id, %why, "migrate command's fate unknown: following it as running");
                Ok(())
            }
            Err(e) => Err(format!("migrate at {}: {e}", m.from)),
        }
    }

    async fn status(&self, api: &str, id: &str) -> Result<Option<CommandStatus>, String> {
        self.hostd
            .command_status(api, id)
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends command `id`; an answer lost in transport (timeout, reset) is
    /// retried with the same id and body, which hostd takes as the same
    /// command, up to [`COMMAND_ATTEMPTS`] times. When every answer was
    /// lost, the daemon is asked for the command's status before the
    /// command counts as failed: a daemon that knows it took it (any state)
    /// makes it [`Sent::Taken`], one that does not know it a failure, and
    /// one that does not answer that either [`Sent::Unknown`]. A refusal is
    /// final at once.
    async fn put_command(&self, api: &str, id: &str, cmd: &proto::Command) -> Result<Sent, String> {
        let mut attempt = 1;
        loop {
            match self.hostd.put_command(api, id, cmd).await {
                Ok(()) => return Ok(Sent::Taken),
                Err(e @ crate::execute::handles::HostdError::Transport { .. }) => {
                    if attempt < COMMAND_ATTEMPTS {
                        warn!(command = id, attempt, error = %e, "no answer from hostd: sending the command again");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                        attempt += 1;
                        continue;
                    }
                    return match self.hostd.command_status(api, id).await {
                        Ok(Some(st)) => {
                            warn!(command = id, state = ?st.state, "every answer to the command was lost, but hostd has it");
                            Ok(Sent::Taken)
                        }
                        Ok(None) => Err(format!("{e} (hostd does not know the command)")),
                        Err(q) => {
                            warn!(command = id, error = %q, "every answer to the command was lost and its status is unknown");
                            Ok(Sent::Unknown(format!("{e}; status: {q}")))
                        }
                    };
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    async fn follow(&self, s: &dyn FabricView, m: Migration) {
        let Some(src) = Self::host_facts(s, &m.from) else {
            return;
        };
        let now = self.clock.now_unix_ms();
        let status = self.status(&src.api_url, &format!("{}-out", m.id)).await;
        if status.is_ok() {
            let mut st = lock(&self.state);
            if st.unanswered.remove(&m.id) {
                let silent_ms = now - st.last_contact.get(&m.id).copied().unwrap_or(now);
                info!(id = %m.id, host = %m.from, silent_ms, "the source hostd answers again; following the migration on");
            }
        }
        match status {
            Ok(Some(st)) => {
                lock(&self.state).last_contact.insert(m.id.clone(), now);
                match st.state {
                    CommandState::Succeeded => {
                        let result = match st.result {
                            Some(proto::CommandResult::Migration(r)) => Some(r),
                            _ => None,
                        };
                        self.update(&m.id, |x| {
                            x.progress = st.progress.clone();
                            x.result = result;
                            x.state = MigState::Verifying;
                        });
                        info!(id = %m.id, "migration completed at the hosts; verifying");
                    }
                    CommandState::Failed => {
                        let why = st.error.unwrap_or_else(|| "failed at the source".into());
                        self.update(&m.id, |x| x.progress = st.progress.clone());
                        self.release(&m.reservations).await;
                        self.finish(&m.id, MigState::Failed, Some(why));
                    }
                    _ => {
                        self.update(&m.id, |x| x.progress = st.progress.clone());
                    }
                }
            }
            Ok(None) => {
                // The source never got it (restart before the command).
                self.release(&m.reservations).await;
                self.finish(
                    &m.id,
                    MigState::Failed,
                    Some("the source host has no such migration (never started)".into()),
                );
            }
            Err(e) => {
                // Down or restarting: hostd keeps its commands across a
                // restart and QEMU migrates on without it, so this is no
                // failure until contact is lost for LOST_CONTACT.
                let (last, first) = {
                    let mut st = lock(&self.state);
                    let first = st.unanswered.insert(m.id.clone());
                    (st.last_contact.get(&m.id).copied().unwrap_or(now), first)
                };
                if first {
                    warn!(id = %m.id, host = %m.from, error = %e, lost_after_s = LOST_CONTACT.as_secs(), "the source hostd does not answer; following the migration on");
                }
                let started = m.started_unix_ms.unwrap_or(now);
                let limit = started + ((m.deadline_s + 30.0) * 1000.0) as i64;
                if now - last > LOST_CONTACT.as_millis() as i64 || now > limit {
                    // The source is silent (down longer than a restart):
                    // the destination's incoming command may know. QEMU
                    // migrates without its hostd, so a VM that moved is
                    // never recorded as failed for the source's silence.
                    let incoming = match Self::host_facts(s, &m.to) {
                        Some(d) => self
                            .status(&d.api_url, &format!("{}-in", m.id))
                            .await
                            .ok()
                            .flatten()
                            .map(|st| st.state),
                        None => None,
                    };
                    match incoming {
                        Some(CommandState::Succeeded) => {
                            info!(id = %m.id, host = %m.from, "the source hostd is silent but the destination runs the VM; verifying");
                            self.update_if(&m.id, MigState::Running, |x| {
                                x.state = MigState::Verifying
                            });
                        }
                        // Still coming in: the destination decides by the
                        // deadline (it stops its QEMU past it).
                        Some(CommandState::Accepted | CommandState::Running) if now <= limit => {}
                        _ => {
                            self.release(&m.reservations).await;
                            self.finish(
                                &m.id,
                                MigState::Failed,
                                Some(format!("lost contact with the source hostd: {e}")),
                            );
                        }
                    }
                }
            }
        }
    }

    async fn verify(&self, s: &dyn FabricView, m: Migration) {
        let dst_bridge = Self::host_facts(s, &m.to).and_then(|h| h.bridge);
        let mac = s
            .hosts()
            .ok()
            .and_then(|h| h.vm_inventory(&m.vm).map(|(_, i)| i.mac.clone()))
            .and_then(|m| m.parse::<ofp::MacAddr>().ok());
        let seen = match (dst_bridge, mac) {
            (Some(b), Some(mac)) => s
                .topology()
                .ok()
                .and_then(|t| t.endpoint(&mac).map(|e| e.location.dpid == b))
                .unwrap_or(false),
            _ => false,
        };
        let waited = self.clock.now_unix_ms() - m.started_unix_ms.unwrap_or(0);
        let timeout = ((m.deadline_s + self.cfg.verify_timeout_s) * 1000.0) as i64;
        let bridge_known = dst_bridge.is_some_and(|b| self.switches.switch(b).is_some());
        if seen || (!bridge_known && waited > 0) {
            self.release(&m.reservations).await;
            let after = self.communication_cost(s, Some((&m.vm, &m.to)));
            self.update(&m.id, |x| x.cost_after = after);
            self.finish(&m.id, MigState::Done, None);
        } else if waited > timeout {
            self.release(&m.reservations).await;
            self.finish(
                &m.id,
                MigState::Failed,
                Some(format!("the VM did not show up at {}'s bridge", m.to)),
            );
        }
    }

    fn finish(&self, id: &str, state: MigState, error: Option<String>) {
        let mut was_final = true;
        let Some(m) = self.update(id, |x| {
            was_final = x.state.is_final();
            x.state = state;
            x.error = error.clone();
            x.ended_unix_ms = Some(self.clock.now_unix_ms());
            x.reservations.clear();
        }) else {
            return;
        };
        {
            let mut st = lock(&self.state);
            // Counted once, when it becomes final.
            if !was_final {
                st.finished.add(&m);
            }
            st.last_contact.remove(id);
            st.unanswered.remove(id);
            bound_history(&mut st.migs, self.history);
        }
        if let (Some(store), Some(d)) = (&self.store, m.decision_id) {
            // An approved recommendation keeps who approved it.
            let outcome = format!("{} ({})", m.state.as_str(), m.id);
            let approver = store.decision_json(d).ok().flatten().and_then(|r| {
                r.outcome
                    .strip_prefix("approved by ")
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(who, _)| who.to_string())
            });
            let outcome = match approver {
                Some(who) => format!("approved by {who}: {outcome}"),
                None => outcome,
            };
            let _ = store.set_decision_outcome(d, &outcome);
        }
        match state {
            MigState::Done => {
                info!(id, vm = %m.vm, to = %m.to, cost_before = ?m.cost_before, cost_after = ?m.cost_after, "migration done")
            }
            _ => warn!(id, vm = %m.vm, state = state.as_str(), error = ?m.error, "migration ended"),
        }
    }

    /// The migrations this node finished since it started.
    pub fn finished_totals(&self) -> FinishedTotals {
        lock(&self.state).finished
    }

    /// VMs with a non-final migration and every host involved.
    pub fn busy(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut vms = BTreeSet::new();
        let mut hosts = BTreeSet::new();
        for m in self.active() {
            vms.insert(m.vm);
            hosts.insert(m.from);
            hosts.insert(m.to);
        }
        (vms, hosts)
    }
}

/// FLOW_MOD deleting every flow with exactly `cookie` in all tables.
pub fn delete_flows(cookie: u64) -> Message {
    Message::FlowMod(FlowMod {
        command: FlowModCommand::Delete,
        table_id: 0xff,
        cookie,
        cookie_mask: u64::MAX,
        ..FlowMod::default()
    })
}

/// METER_MOD deleting meter `id`.
pub fn delete_meter(id: u32) -> Message {
    Message::MeterMod(MeterMod {
        command: MeterModCommand::Delete,
        flags: 0,
        meter_id: id,
        bands: vec![],
    })
}

/// Ports used on `topo` by a path, for tests and diagnostics.
pub fn path_ports(topo: &Topology, a: u64, b: u64) -> Vec<PortRef> {
    topo.path(a, b)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(d, p)| p.map(|port| PortRef { dpid: d, port }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 100 Mbit/s hop carrying a reserved migration of
    /// 40 Mbit/s, measured at 40 Mbit/s, plus 10 Mbit/s of other traffic
    /// (port rate 50 Mbit/s) has 50 Mbit/s available, so a second
    /// migration needing 45 Mbit/s is admitted; the migration's own
    /// traffic is not subtracted twice (100 - 50 - 40 = 10).
    #[test]
    fn reserved_traffic_not_subtracted_twice() {
        let avail = available_bps(100e6, 50e6, 40e6);
        assert_eq!(avail, 50e6);
        assert!(avail >= 45e6, "a 45 Mbit/s migration must be admitted");
    }

    #[test]
    fn availability_never_negative() {
        assert_eq!(available_bps(100e6, 40e6, 30e6), 60e6);
        assert_eq!(available_bps(100e6, 90e6, 30e6), 10e6);
        assert_eq!(available_bps(100e6, 120e6, 30e6), 0.0);
        assert_eq!(hop_available_bps(100e6, 90e6, 30e6, 0.0), 0.0);
    }

    /// A reservation whose migration is not sending yet (reserving) is
    /// not assumed to be in the port rate: its reserved rate and the
    /// whole measured rate are both subtracted.
    #[test]
    fn pending_reservation_counts_whole_port_rate() {
        // 40 reserved, not sending; 50 of other traffic.
        assert_eq!(hop_available_bps(100e6, 50e6, 40e6, 0.0), 10e6);
        // 40 reserved and running (measured 40) + 20 pending; 10 other.
        assert_eq!(hop_available_bps(100e6, 50e6, 60e6, 40e6), 30e6);
        // A running migration sending less than its reservation (20 of
        // 40, 10 other) counts as its full 40; the other traffic is then
        // underestimated (0 instead of 10), never the reservations.
        assert_eq!(hop_available_bps(100e6, 30e6, 40e6, 40e6), 60e6);
    }

    #[test]
    fn hop_messages_meter_then_flow() {
        let f = MigrationFlow {
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            port: 4444,
            rate_bps: 8e6,
            meter_id: 1001,
            cookie: 77,
        };
        let m = f.messages(true, false, Some(3));
        assert_eq!(m.len(), 2);
        match &m[0] {
            Message::MeterMod(mm) => {
                assert_eq!(mm.meter_id, 1001);
                assert_eq!(
                    mm.bands,
                    vec![MeterBand::Drop {
                        rate: 8000,
                        burst_size: 0
                    }]
                );
            }
            _ => panic!("not a meter mod"),
        }
        match &m[1] {
            Message::FlowMod(fm) => {
                assert_eq!((fm.table_id, fm.cookie), (TABLE_CLASSIFY, 77));
                assert_eq!(
                    fm.instructions,
                    vec![
                        Instruction::Meter(1001),
                        Instruction::ApplyActions(vec![Action::output(3)])
                    ]
                );
            }
            _ => panic!("not a flow mod"),
        }
        let last = f.messages(false, true, Some(3));
        assert_eq!(last.len(), 1);
        match &last[0] {
            Message::FlowMod(fm) => {
                assert_eq!(fm.instructions, vec![Instruction::GotoTable(TABLE_EDGE)])
            }
            _ => panic!("not a flow mod"),
        }
    }

    #[test]
    fn removal_messages() {
        match delete_flows(7) {
            Message::FlowMod(f) => {
                assert_eq!(f.command, FlowModCommand::Delete);
                assert_eq!((f.cookie, f.cookie_mask, f.table_id), (7, u64::MAX, 0xff));
            }
            _ => panic!("not a flow mod"),
        }
        match delete_meter(1001) {
            Message::MeterMod(m) => {
                assert_eq!(m.command, MeterModCommand::Delete);
                assert_eq!(m.meter_id, 1001);
            }
            _ => panic!("not a meter mod"),
        }
    }

    #[test]
    fn states() {
        assert!(MigState::Done.is_final() && MigState::Failed.is_final());
        assert!(!MigState::Queued.is_final() && !MigState::Verifying.is_final());
        assert_eq!(
            serde_json::to_value(MigState::Verifying).unwrap(),
            serde_json::json!("verifying")
        );
    }
}

#[cfg(test)]
mod race_tests {
    use super::*;

    /// The error of a call whose answer was lost.
    fn unanswered(api: &str, reason: &str) -> HostdError {
        HostdError::Transport {
            url: format!("{api}/x"),
            reason: reason.into(),
        }
    }

    /// A command's status as a fake daemon answers it.
    fn status(id: &str, command: proto::Command, state: CommandState) -> CommandStatus {
        CommandStatus {
            id: id.to_string(),
            command,
            state,
            progress: None,
            result: None,
            error: None,
            created_unix_ms: 0,
            updated_unix_ms: 0,
        }
    }
    use crate::config::Config;
    use crate::execute::handles::{BoxFuture, HostdError, NoSwitches};
    use crate::knowledge::clock::SystemClock;
    use crate::monitor::hosts::tests::{reg, report, vm};

    /// Counts the commands sent to host daemons; the first `lost` calls
    /// are taken by the daemon but their answers are lost (a timeout). The
    /// daemon knows every command it took (field 2), by id.
    #[derive(Default)]
    struct Hostds(
        Mutex<Vec<String>>,
        std::sync::atomic::AtomicUsize,
        Mutex<BTreeMap<String, proto::Command>>,
    );

    impl HostdClient for Hostds {
        fn put_command<'a>(
            &'a self,
            api: &'a str,
            id: &'a str,
            cmd: &'a proto::Command,
        ) -> BoxFuture<'a, Result<(), HostdError>> {
            Box::pin(async move {
                lock(&self.0).push(id.to_string());
                lock(&self.2).insert(id.to_string(), cmd.clone());
                let lost = &self.1;
                if lost.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                    lost.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    return Err(unanswered(api, "timed out"));
                }
                Ok(())
            })
        }
        fn command_status<'a>(
            &'a self,
            _api: &'a str,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<CommandStatus>, HostdError>> {
            Box::pin(async move {
                Ok(lock(&self.2)
                    .get(id)
                    .map(|c| status(id, c.clone(), CommandState::Accepted)))
            })
        }
    }

    /// Two registered hosts; VM v1 on h1, reported; an orchestrator over
    /// them with a recording hostd client.
    async fn world() -> (Arc<Knowledge>, Arc<Orchestrator>, Arc<Hostds>) {
        world_with(None, 1000).await
    }

    /// [`world`] recording in `store`, keeping `history` finished
    /// migrations in memory.
    async fn world_with(
        store: Option<Arc<dyn Store>>,
        history: usize,
    ) -> (Arc<Knowledge>, Arc<Orchestrator>, Arc<Hostds>) {
        let settings = Config::from_toml("")
            .and_then(|c| c.validate())
            .expect("settings");
        let k = Arc::new(Knowledge::new(
            &settings.knowledge_config(),
            settings.hypervisors.clone(),
            None,
        ));
        {
            let mut h = k.hosts_write().expect("hosts");
            h.register("h1", reg("h1", 1, vec![vm("v1", "02:00:00:00:00:01")]), 0)
                .expect("h1");
            h.register("h2", reg("h2", 2, vec![]), 0).expect("h2");
            h.report("h1", report("h1", 1, vec![]), 1).expect("report");
        }
        let hostds = Arc::new(Hostds::default());
        let mut oc = OrchConfig::from_settings(&settings);
        oc.history = history;
        let orch = Orchestrator::with_handles(
            oc,
            Handles {
                fabric: k.clone(),
                switches: Arc::new(NoSwitches),
                hostd: hostds.clone(),
                store,
                clock: Arc::new(SystemClock),
            },
        )
        .await;
        (k, orch, hostds)
    }

    /// [`world_with`] as one node of a cluster: its fence follows `view`,
    /// its host daemons are `hostds` (shared by the nodes: the same hosts).
    async fn node(
        store: Arc<dyn Store>,
        view: tokio::sync::watch::Receiver<crate::knowledge::cluster::ClusterView>,
        hostds: Arc<Hostds>,
    ) -> (Arc<Knowledge>, Arc<Orchestrator>) {
        let settings = Config::from_toml("")
            .and_then(|c| c.validate())
            .expect("settings");
        let k = Knowledge::new(
            &settings.knowledge_config(),
            settings.hypervisors.clone(),
            None,
        )
        .with_cluster(
            crate::knowledge::cluster::Fence::cluster(view),
            tokio::sync::watch::channel(BTreeSet::new()).0,
        );
        let k = Arc::new(k);
        {
            let mut h = k.hosts_write().expect("hosts");
            h.register("h1", reg("h1", 1, vec![vm("v1", "02:00:00:00:00:01")]), 0)
                .expect("h1");
            h.register("h2", reg("h2", 2, vec![]), 0).expect("h2");
            h.report("h1", report("h1", 1, vec![]), 1).expect("report");
        }
        let orch = Orchestrator::with_handles(
            OrchConfig::from_settings(&settings),
            Handles {
                fabric: k.clone(),
                switches: Arc::new(NoSwitches),
                hostd: hostds,
                store: Some(store),
                clock: Arc::new(SystemClock),
            },
        )
        .await;
        orch.restore();
        (k, orch)
    }

    fn cluster_view(me: &str, leader: &str) -> crate::knowledge::cluster::ClusterView {
        crate::knowledge::cluster::ClusterView {
            node_id: me.into(),
            is_leader: me == leader,
            leader: Some(leader.into()),
            lease_valid_until: Some(std::time::Instant::now() + Duration::from_secs(3600)),
            ..Default::default()
        }
    }

    /// Failover: the migration the old leader started is taken over by the
    /// new leader from the shared store and followed under its command ids
    /// (nothing is sent again); a node that does not lead neither submits
    /// nor follows.
    #[tokio::test]
    async fn a_new_leader_follows_its_predecessors_migration_without_running_it_again() {
        let store: Arc<dyn Store> =
            Arc::new(crate::knowledge::store::SqliteStore::open_in_memory().expect("store"));
        let hostds = Arc::new(Hostds::default());
        let (va, ra) = tokio::sync::watch::channel(cluster_view("a", "a"));
        let (vb, rb) = tokio::sync::watch::channel(cluster_view("b", "a"));
        let (ka, a) = node(store.clone(), ra, hostds.clone()).await;
        let (_kb, b) = node(store.clone(), rb, hostds.clone()).await;
        // A follower takes no migration.
        assert!(matches!(
            b.submit(request(), "t".into(), None),
            Err(OrchError::NotLeader(_))
        ));
        let m = a.submit(request(), "t".into(), None).expect("queued");
        a.try_start(&*ka, m.clone()).await;
        assert_eq!(a.get(&m.id).expect("known").state, MigState::Running);
        let sent = lock(&hostds.0).clone();
        assert_eq!(sent.len(), 2, "prepare + migrate: {sent:?}");
        // b does not lead: its ticks do nothing, and it shows the leader's
        // migrations (from the store).
        b.tick().await;
        assert_eq!(
            b.get_for_api(&m.id).map(|x| x.state),
            Some(MigState::Running)
        );
        assert_eq!(b.list_for_api().len(), 1);
        assert!(b.get(&m.id).is_none_or(|x| x.state == MigState::Running));
        // a loses the lease (killed, paused): b is elected.
        va.send_replace(cluster_view("a", "b"));
        vb.send_replace(cluster_view("b", "b"));
        a.tick().await;
        b.tick().await;
        let took = b.get(&m.id).expect("b knows the migration from the store");
        assert_eq!(took.state, MigState::Running, "{took:?}");
        assert_eq!(
            lock(&hostds.0).clone(),
            sent,
            "a command was sent again after the failover"
        );
        // The old leader, resumed, sends nothing either.
        a.tick().await;
        assert_eq!(lock(&hostds.0).len(), 2);
    }

    fn request() -> MigrationRequest {
        MigrationRequest {
            vm: "v1".into(),
            destination: "h2".into(),
            deadline_s: None,
            reserve: Some(false),
        }
    }

    /// `auto` picks no host where the VM would break a placement rule; a
    /// destination the operator names is taken as asked (the break is
    /// reported by `GET /api/v1/rules`).
    #[tokio::test]
    async fn auto_destinations_obey_the_placement_rules() {
        use crate::knowledge::rules::{Rule, RuleSet};
        let (k, orch, _) = world().await;
        let auto = || MigrationRequest {
            destination: "auto".into(),
            ..request()
        };
        let m = orch.submit(auto(), "test".into(), None).expect("queued");
        assert_eq!(m.to, "h2", "the only other host");
        orch.cancel(&m.id).expect("cancelled");
        // h2 reports (a host without a report cannot be checked against
        // rules, so `auto` would not pick it whatever the rules say).
        k.hosts_write()
            .expect("hosts")
            .report("h2", report("h2", 2, vec![]), 1)
            .expect("report");
        let m = orch.submit(auto(), "test".into(), None).expect("queued");
        assert_eq!(m.to, "h2");
        orch.cancel(&m.id).expect("cancelled");
        k.set_rules(RuleSet::new(vec![Rule::Exclude {
            name: "not-h2".into(),
            hosts: vec!["h2".into()],
            vms: Some(vec!["v1".into()]),
        }]));
        match orch.submit(auto(), "test".into(), None) {
            Err(OrchError::NoRoom(why)) => assert!(why.contains("placement rules"), "{why}"),
            other => panic!("auto chose a host the rules exclude: {other:?}"),
        }
        let m = orch
            .submit(request(), "test".into(), None)
            .expect("a named destination is taken as asked");
        assert_eq!(m.to, "h2");
    }

    /// A cancel that answered "cancelled" is final: the admission round
    /// that read the migration as queued just before cannot start it.
    #[tokio::test]
    async fn a_cancel_is_never_overwritten_by_a_start() {
        let (k, orch, hostds) = world().await;
        for _ in 0..50 {
            let m = orch.submit(request(), "test".into(), None).expect("queued");
            // The admission round read it as queued ...
            let seen = orch.get(&m.id).expect("known");
            // ... then the operator's DELETE won the race.
            let c = orch.cancel(&m.id).expect("cancelled");
            assert_eq!(c.state, MigState::Cancelled);
            orch.try_start(&*k, seen).await;
            let after = orch.get(&m.id).expect("known");
            assert_eq!(after.state, MigState::Cancelled, "{after:?}");
        }
        assert!(
            lock(&hostds.0).is_empty(),
            "commands sent for cancelled migrations"
        );
    }

    /// Every record write is a compare-and-set on the state this node
    /// recorded last: a record another node changed meanwhile (a second
    /// leader) is never overwritten, and the change that would have
    /// overwritten it reports the failure; this node's own writes go on.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_record_changed_by_another_node_is_not_overwritten() {
        let store: Arc<dyn Store> =
            Arc::new(crate::knowledge::store::SqliteStore::open_in_memory().expect("store"));
        let (_k, orch, _h) = world_with(Some(store.clone()), 1000).await;
        let m = orch.submit(request(), "t".into(), None).expect("queued");
        let stored = |id: &str| {
            store
                .migration::<Migration>(id)
                .expect("read")
                .map(|x| x.state)
        };
        assert_eq!(stored(&m.id), Some(MigState::Queued));
        // Another node records it failed.
        let mut other = m.clone();
        other.state = MigState::Failed;
        store
            .put_migration(&m.id, &m.vm, "failed", &other, 1)
            .expect("write");
        let r = orch.update_recorded(&m.id, |x| x.queued_reason = Some("x".into()));
        assert!(r.expect("known").1.is_err(), "the write was not refused");
        let _ = orch.cancel(&m.id);
        assert_eq!(stored(&m.id), Some(MigState::Failed), "overwritten");
        // A migration of its own is recorded as before, state by state.
        let n = orch
            .submit(
                MigrationRequest {
                    vm: "v1".into(),
                    destination: "h2".into(),
                    deadline_s: None,
                    reserve: Some(false),
                },
                "t".into(),
                None,
            )
            .map(|n| n.id)
            .expect("queued");
        orch.cancel(&n).expect("cancel");
        assert_eq!(stored(&n), Some(MigState::Cancelled));
    }

    /// Many concurrent submissions for one VM: exactly one is queued.
    #[test]
    fn concurrent_submissions_for_one_vm_queue_once() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (_k, orch, _) = rt.block_on(world());
        for round in 0..100 {
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let oks: usize = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..4)
                    .map(|_| {
                        let (o, b) = (orch.clone(), barrier.clone());
                        sc.spawn(move || {
                            b.wait();
                            o.submit(request(), "race".into(), None).is_ok() as usize
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
            });
            assert_eq!(oks, 1, "round {round}: {oks} migrations queued for one VM");
            for m in orch.list() {
                if m.state == MigState::Queued {
                    orch.cancel(&m.id).expect("cancel");
                }
            }
        }
    }

    /// A command whose answer was lost (a timeout) is sent again with the
    /// same id (hostd takes a repeated id and body as the same command)
    /// before the migration is declared failed.
    #[tokio::test]
    async fn a_lost_answer_is_retried_before_failing() {
        let (k, orch, hostds) = world().await;
        hostds.1.store(1, std::sync::atomic::Ordering::SeqCst);
        let m = orch.submit(request(), "test".into(), None).expect("queued");
        orch.try_start(&*k, m.clone()).await;
        let after = orch.get(&m.id).expect("known");
        assert_eq!(after.state, MigState::Running, "{after:?}");
        let sent = lock(&hostds.0).clone();
        let in_id = format!("{}-in", m.id);
        assert_eq!(sent.iter().filter(|i| **i == in_id).count(), 2, "{sent:?}");
    }

    /// Every answer to the commands is lost (the daemons take them but the
    /// replies time out): the orchestrator asks for the commands' status
    /// before declaring the migration failed, and finds them taken.
    #[tokio::test]
    async fn all_answers_lost_but_taken_is_not_a_failure() {
        let (k, orch, hostds) = world().await;
        hostds.1.store(1_000, std::sync::atomic::Ordering::SeqCst);
        let m = orch.submit(request(), "test".into(), None).expect("queued");
        orch.try_start(&*k, m.clone()).await;
        let after = orch.get(&m.id).expect("known");
        assert_eq!(after.state, MigState::Running, "{after:?}");
        let sent = lock(&hostds.0).clone();
        for suffix in ["in", "out"] {
            let id = format!("{}-{suffix}", m.id);
            assert_eq!(
                sent.iter().filter(|i| **i == id).count(),
                COMMAND_ATTEMPTS as usize,
                "{sent:?}"
            );
        }
    }

    /// The source daemon takes `migrate` but every answer is lost, and so
    /// is every status query: the command's fate is unknown, so the
    /// migration is not declared failed (the VM may be moving) but followed
    /// as running; a lost `prepare_incoming` of unknown fate fails it
    /// before the source is told anything.
    struct Silent {
        sent: Mutex<Vec<String>>,
        /// Suffix of the command ids whose answers are lost.
        lost: &'static str,
    }

    impl HostdClient for Silent {
        fn put_command<'a>(
            &'a self,
            api: &'a str,
            id: &'a str,
            _cmd: &'a proto::Command,
        ) -> BoxFuture<'a, Result<(), HostdError>> {
            Box::pin(async move {
                lock(&self.sent).push(id.to_string());
                if id.ends_with(self.lost) {
                    return Err(unanswered(api, "timed out"));
                }
                Ok(())
            })
        }
        fn command_status<'a>(
            &'a self,
            api: &'a str,
            _id: &'a str,
        ) -> BoxFuture<'a, Result<Option<CommandStatus>, HostdError>> {
            Box::pin(async move { Err(unanswered(api, "timed out")) })
        }
    }

    #[tokio::test]
    async fn a_migrate_of_unknown_fate_is_followed_not_failed() {
        for (lost, want) in [("-out", MigState::Running), ("-in", MigState::Failed)] {
            let (k, _, _) = world().await;
            let silent = Arc::new(Silent {
                sent: Mutex::new(Vec::new()),
                lost,
            });
            let orch = Orchestrator::with_handles(
                OrchConfig::from_settings(
                    &Config::from_toml("")
                        .and_then(|c| c.validate())
                        .expect("settings"),
                ),
                Handles {
                    fabric: k.clone(),
                    switches: Arc::new(NoSwitches),
                    hostd: silent.clone(),
                    store: None,
                    clock: Arc::new(SystemClock),
                },
            )
            .await;
            let m = orch.submit(request(), "test".into(), None).expect("queued");
            orch.try_start(&*k, m.clone()).await;
            let after = orch.get(&m.id).expect("known");
            assert_eq!(after.state, want, "lost {lost}: {after:?}");
            let sent = lock(&silent.sent).clone();
            let out = format!("{}-out", m.id);
            let expect_out = if lost == "-out" {
                COMMAND_ATTEMPTS as usize
            } else {
                0
            };
            assert_eq!(
                sent.iter().filter(|i| **i == out).count(),
                expect_out,
                "{sent:?}"
            );
        }
    }

    /// A source hostd that restarts while its VM migrates: taken commands,
    /// then status queries refused for a while (down), then answered
    /// again from its state file (`state`).
    struct Restarting {
        down: std::sync::atomic::AtomicBool,
        state: Mutex<CommandState>,
    }

    impl HostdClient for Restarting {
        fn put_command<'a>(
            &'a self,
            _api: &'a str,
            _id: &'a str,
            _cmd: &'a proto::Command,
        ) -> BoxFuture<'a, Result<(), HostdError>> {
            Box::pin(async move { Ok(()) })
        }
        fn command_status<'a>(
            &'a self,
            api: &'a str,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<CommandStatus>, HostdError>> {
            Box::pin(async move {
                if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(unanswered(api, "connection refused"));
                }
                Ok(Some(status(
                    id,
                    proto::Command::VfAttach { vm: "v1".into() },
                    *lock(&self.state),
                )))
            })
        }
    }

    /// While the source hostd does not answer (a restart) the migration
    /// stays running; once it answers again its command's state decides.
    #[tokio::test]
    async fn a_source_hostd_restart_is_followed_through() {
        let (k, _, _) = world().await;
        let hostd = Arc::new(Restarting {
            down: false.into(),
            state: Mutex::new(CommandState::Running),
        });
        let orch = Orchestrator::with_handles(
            OrchConfig::from_settings(
                &Config::from_toml("")
                    .and_then(|c| c.validate())
                    .expect("settings"),
            ),
            Handles {
                fabric: k.clone(),
                switches: Arc::new(NoSwitches),
                hostd: hostd.clone(),
                store: None,
                clock: Arc::new(SystemClock),
            },
        )
        .await;
        let m = orch.submit(request(), "test".into(), None).expect("queued");
        orch.try_start(&*k, m.clone()).await;
        let m = orch.get(&m.id).expect("known");
        assert_eq!(m.state, MigState::Running, "{m:?}");
        hostd.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            orch.follow(&*k, m.clone()).await;
        }
        assert_eq!(orch.get(&m.id).expect("known").state, MigState::Running);
        assert!(lock(&orch.state).unanswered.contains(&m.id));
        // Back, the migration completed meanwhile.
        hostd.down.store(false, std::sync::atomic::Ordering::SeqCst);
        *lock(&hostd.state) = CommandState::Succeeded;
        orch.follow(&*k, m.clone()).await;
        assert_eq!(orch.get(&m.id).expect("known").state, MigState::Verifying);
        assert!(lock(&orch.state).unanswered.is_empty());
    }

    /// A clock the test moves.
    #[derive(Debug, Default)]
    struct TestClock(std::sync::atomic::AtomicI64);

    impl crate::knowledge::clock::Clock for TestClock {
        fn now_unix_ms(&self) -> i64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A source hostd that never answers a status query; the destination
    /// answers its incoming command with `incoming`.
    struct SourceGone {
        incoming: Mutex<CommandState>,
    }

    impl HostdClient for SourceGone {
        fn put_command<'a>(
            &'a self,
            _api: &'a str,
            _id: &'a str,
            _cmd: &'a proto::Command,
        ) -> BoxFuture<'a, Result<(), HostdError>> {
            Box::pin(async move { Ok(()) })
        }
        fn command_status<'a>(
            &'a self,
            api: &'a str,
            id: &'a str,
        ) -> BoxFuture<'a, Result<Option<CommandStatus>, HostdError>> {
            Box::pin(async move {
                if id.ends_with("-out") {
                    return Err(unanswered(api, "connection refused"));
                }
                Ok(Some(status(
                    id,
                    proto::Command::VfAttach { vm: "v1".into() },
                    *lock(&self.incoming),
                )))
            })
        }
    }

    /// The source's hostd silent for longer than [`LOST_CONTACT`]: the
    /// destination's incoming command decides. Still coming in: followed
    /// on (until the deadline + 30 s); the VM runs there: verifying (not
    /// failed: QEMU migrated without the source's hostd); failed there:
    /// failed.
    #[tokio::test]
    async fn a_silent_source_is_judged_by_the_destination() {
        for (end, want) in [
            (CommandState::Succeeded, MigState::Verifying),
            (CommandState::Failed, MigState::Failed),
        ] {
            let (k, _, _) = world().await;
            let hostd = Arc::new(SourceGone {
                incoming: Mutex::new(CommandState::Running),
            });
            let clock = Arc::new(TestClock(1_000_000.into()));
            let orch = Orchestrator::with_handles(
                OrchConfig::from_settings(
                    &Config::from_toml("")
                        .and_then(|c| c.validate())
                        .expect("settings"),
                ),
                Handles {
                    fabric: k.clone(),
                    switches: Arc::new(NoSwitches),
                    hostd: hostd.clone(),
                    store: None,
                    clock: clock.clone(),
                },
            )
            .await;
            let mut req = request();
            req.deadline_s = Some(60.0);
            let m = orch.submit(req, "test".into(), None).expect("queued");
            orch.try_start(&*k, m.clone()).await;
            let m = orch.get(&m.id).expect("known");
            assert_eq!(m.state, MigState::Running, "{m:?}");
            orch.follow(&*k, m.clone()).await;
            let past = LOST_CONTACT.as_millis() as i64 + 1000;
            clock.0.fetch_add(past, std::sync::atomic::Ordering::SeqCst);
            orch.follow(&*k, m.clone()).await;
            assert_eq!(orch.get(&m.id).expect("known").state, MigState::Running);
            *lock(&hostd.incoming) = end;
            orch.follow(&*k, m.clone()).await;
            let after = orch.get(&m.id).expect("known");
            assert_eq!(after.state, want, "{end:?}: {after:?}");
        }
    }

    /// A migration whose record cannot be written (the store's file
    /// refuses writes: a trigger that aborts them, as a full disk or a
    /// read-only file would) is failed with the reason before anything is
    /// reserved or sent to a host daemon.
    #[tokio::test]
    async fn a_migration_that_cannot_be_recorded_does_not_run() {
        let dir =
            std::env::temp_dir().join(format!("shoal-orch-unrecorded-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("k.db");
        let store: Arc<dyn Store> =
            Arc::new(crate::knowledge::store::SqliteStore::open(&path).expect("store"));
        let (k, orch, hostds) = world_with(Some(store.clone()), 1000).await;
        let m = orch.submit(request(), "test".into(), None).expect("queued");
        // From now on every change of a migration record fails.
        rusqlite::Connection::open(&path)
            .and_then(|c| {
                c.execute_batch(
                    "CREATE TRIGGER refuse BEFORE UPDATE ON migrations
                     BEGIN SELECT RAISE(ABORT, 'injected write failure'); END;",
                )
            })
            .expect("trigger");
        orch.try_start(&*k, m.clone()).await;
        let after = orch.get(&m.id).expect("known");
        assert_eq!(after.state, MigState::Failed, "{after:?}");
        let why = after.error.clone().unwrap_or_default();
        assert!(
            why.contains("cannot record the migration") && why.contains("injected write failure"),
            "{why}"
        );
        assert!(after.reservations.is_empty(), "{after:?}");
        assert!(
            lock(&hostds.0).is_empty(),
            "commands sent for an unrecorded migration: {:?}",
            lock(&hostds.0)
        );
        assert!(store.live_reservations(None).expect("rows").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Finished migrations beyond the configured number leave memory
    /// (oldest first); queued ones always stay.
    #[tokio::test]
    async fn finished_migrations_in_memory_are_bounded() {
        let (_k, orch, _) = world_with(None, 5).await;
        for _ in 0..50 {
            let m = orch.submit(request(), "test".into(), None).expect("queued");
            orch.cancel(&m.id).expect("cancel");
        }
        let live = orch.submit(request(), "test".into(), None).expect("queued");
        let all = orch.list();
        assert_eq!(all.len(), 6, "{} migrations in memory", all.len());
        assert!(all.iter().any(|m| m.id == live.id));
    }

    /// Finished migrations are counted once each, when they become final,
    /// and stay counted when their records leave memory: done ones with
    /// their measured and predicted durations (both only when both are
    /// known) and whether they missed their deadline.
    #[tokio::test]
    async fn finished_migrations_are_counted_once_each() {
        let (_k, orch, _) = world_with(None, 1).await;
        let took = |ms: u64| proto::MigrationResult {
            total_time_ms: ms,
            downtime_ms: 10,
            transferred_bytes: 1,
            memory_bytes: 1,
            max_dirty_rate_bytes_per_s: 0.0,
            achieved_bandwidth_bytes_per_s: 1.0,
            iterations: 1,
        };
        // Done within its deadline, then past it (measured), then without
        // a measurement (the source went silent; the destination ran it).
        let mut predicted = 0.0;
        let mut deadline = 0.0;
        for ms in [Some(2_500), Some(400_000), None] {
            let m = orch.submit(request(), "t".into(), None).expect("queued");
            if ms.is_some() {
                predicted += m.predicted.expect("a prediction").time_s;
            }
            deadline = m.deadline_s;
            orch.update(&m.id, |x| {
                x.result = ms.map(took);
                x.state = MigState::Verifying;
            });
            orch.finish(&m.id, MigState::Done, None);
            // Finished again (a late answer): not counted twice.
            orch.finish(&m.id, MigState::Done, None);
        }
        assert!(deadline < 400.0, "default deadline {deadline}");
        let f = orch.submit(request(), "t".into(), None).expect("queued");
        orch.finish(&f.id, MigState::Failed, Some("x".into()));
        let c = orch.submit(request(), "t".into(), None).expect("queued");
        orch.cancel(&c.id).expect("cancel");
        assert!(orch.cancel(&c.id).is_err());
        let t = orch.finished_totals();
        assert_eq!((t.done, t.failed, t.cancelled), (3, 1, 1), "{t:?}");
        assert_eq!((t.compared, t.deadlines_missed), (2, 1), "{t:?}");
        assert!((t.actual_s - 402.5).abs() < 1e-9, "{t:?}");
        assert!(
            predicted > 0.0 && (t.predicted_s - predicted).abs() < 1e-9,
            "{t:?}"
        );
        // Only one finished record is kept in memory; the counts stay.
        assert_eq!(orch.list().len(), 1);
    }
}

/// A switch that refuses a message of a reservation batch (by its xid),
/// over the real OpenFlow connection code and a scripted peer on TCP.
#[cfg(test)]
mod batch_error_tests {
    use super::*;
    use crate::config::Config;
    use crate::execute::handles::{BoxFuture, HostdError};
    use crate::knowledge::clock::SystemClock;
    use crate::monitor::hosts::tests::{reg, report, vm};
    use crate::monitor::openflow::{serve, ConnConfig, ConnContext, SwitchEvent};
    use ofp::{ErrorKind, ErrorMsg, Hello, MultipartReply, MultipartReplyBody, OfpMessage};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const DPID: u64 = 0x77;

    /// Records every command; answers nothing else.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl HostdClient for Recorder {
        fn put_command<'a>(
            &'a self,
            _api: &'a str,
            id: &'a str,
            _cmd: &'a proto::Command,
        ) -> BoxFuture<'a, Result<(), HostdError>> {
            Box::pin(async move {
                lock(&self.0).push(id.to_string());
                Ok(())
            })
        }
        fn command_status<'a>(
            &'a self,
            _api: &'a str,
            _id: &'a str,
        ) -> BoxFuture<'a, Result<Option<CommandStatus>, HostdError>> {
            Box::pin(async { Ok(None) })
        }
    }

    async fn send(s: &mut TcpStream, xid: u32, body: Message) {
        let bytes = OfpMessage::new(xid, body).to_vec().expect("encodes");
        s.write_all(&bytes).await.expect("peer write");
    }

    /// A scripted OpenFlow 1.3 switch: handshake, BARRIER and ECHO
    /// answered; every METER_MOD refused with an ERROR of its xid.
    /// Returns the names of the messages it received.
    async fn scripted_switch(mut s: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
        send(&mut s, 1, Message::Hello(Hello::of13())).await;
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = loop {
                if let Ok(Some(n)) = ofp::check_frame(&buf) {
                    let f = buf[..n].to_vec();
                    buf.drain(..n);
                    break Some(f);
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let Some(frame) = frame else { return };
            let Ok(m) = OfpMessage::decode(&frame) else {
                continue;
            };
            lock(&seen).push(m.body.name().to_string());
            match m.body {
                Message::FeaturesRequest => {
                    let f = ofp::SwitchFeatures {
                        datapath_id: DPID,
                        n_buffers: 0,
                        n_tables: 254,
                        auxiliary_id: 0,
                        capabilities: 0,
                    };
                    send(&mut s, m.xid, Message::FeaturesReply(f)).await
                }
                Message::RoleRequest(r) => send(&mut s, m.xid, Message::RoleReply(r)).await,
                Message::MultipartRequest(req) => {
                    let body = match req.body {
                        ofp::MultipartRequestBody::PortDesc => MultipartReplyBody::PortDesc(vec![]),
                        ofp::MultipartRequestBody::Desc => {
                            MultipartReplyBody::Desc(ofp::DescStats {
                                mfr_desc: "test".into(),
                                hw_desc: "refuses meters".into(),
                                sw_desc: "0".into(),
                                serial_num: String::new(),
                                dp_desc: String::new(),
                            })
                        }
                        _ => continue,
                    };
                    send(
                        &mut s,
                        m.xid,
                        Message::MultipartReply(MultipartReply { flags: 0, body }),
                    )
                    .await
                }
                Message::BarrierRequest => send(&mut s, m.xid, Message::BarrierReply).await,
                Message::EchoRequest(d) => send(&mut s, m.xid, Message::EchoReply(d)).await,
                Message::MeterMod(_) => {
                    // OFPET_METER_MOD_FAILED / OFPMMFC_OUT_OF_METERS.
                    let e = ErrorMsg {
                        kind: ErrorKind::from_type_code(12, 8),
                        data: frame.iter().take(64).copied().collect(),
                    };
                    send(&mut s, m.xid, Message::Error(e)).await
                }
                _ => {}
            }
        }
    }

    /// The switch refuses the reservation's METER_MOD (an ERROR with its
    /// xid, then the BARRIER_REPLY of the batch): the reservation fails
    /// with that error as the reason and no command reaches a hostd.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_in_a_reservation_batch_fails_it_before_the_hosts() {
        let settings = Config::from_toml("[execute]\nreservation = \"meter\"\n")
            .and_then(|c| c.validate())
            .expect("settings");
        let k = Arc::new(Knowledge::new(
            &settings.knowledge_config(),
            settings.hypervisors.clone(),
            None,
        ));
        {
            let mut h = k.hosts_write().expect("hosts");
            h.register(
                "h1",
                reg("h1", DPID, vec![vm("v1", "02:00:00:00:00:01")]),
                0,
            )
            .expect("h1");
            h.register("h2", reg("h2", DPID, vec![]), 0).expect("h2");
            h.report("h1", report("h1", 1, vec![]), 1).expect("report");
        }
        // The controller's switch side.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (ev_tx, _ev_rx) = crate::monitor::fair::fair_queues(64, 64);
        let (control_tx, mut control_rx) = tokio::sync::mpsc::unbounded_channel();
        let (_shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let ctx = ConnContext {
            cfg: ConnConfig {
                echo_interval: Duration::from_secs(5),
                request_timeout: Duration::from_secs(5),
                multipart_cap_bytes: 1 << 20,
                write_timeout: Duration::from_secs(2),
                send_queue_bytes: 1 << 20,
                allowed_dpids: None,
                cluster: false,
            },
            events: ev_tx,
            control: control_tx,
            monitor: k.monitor.clone(),
            shutdown: shutdown_rx,
            packet_in_drops: k.packet_in_drops.clone(),
            event_drops: k.event_drops.clone(),
            not_reading: k.not_reading_disconnects.clone(),
            messages: k.of_messages.clone(),
        };
        tokio::spawn(serve(listener, ctx, None));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let peer = TcpStream::connect(addr).await.expect("connect");
        tokio::spawn(scripted_switch(peer, seen.clone()));
        let ev = tokio::time::timeout(Duration::from_secs(10), control_rx.recv())
            .await
            .expect("switch up in time")
            .expect("event");
        let SwitchEvent::Connected {
            dpid,
            conn_id,
            peer,
            features,
            ports,
            handle,
            ..
        } = ev
        else {
            panic!("not a connect event");
        };
        k.topo.write().expect("topo").switch_connected(
            dpid,
            conn_id,
            peer,
            features,
            ports,
            // Connected a while ago: settled (see `OrchConfig::settle`).
            std::time::Instant::now()
                .checked_sub(Duration::from_secs(60))
                .unwrap_or_else(std::time::Instant::now),
        );
        k.switches.write().expect("switches").insert(dpid, handle);

        let hostds = Arc::new(Recorder::default());
        let orch = Orchestrator::with_handles(
            OrchConfig::from_settings(&settings),
            Handles {
                fabric: k.clone(),
                switches: k.clone(),
                hostd: hostds.clone(),
                store: None,
                clock: Arc::new(SystemClock),
            },
        )
        .await;
        let m = orch
            .submit(
                MigrationRequest {
                    vm: "v1".into(),
                    destination: "h2".into(),
                    deadline_s: None,
                    reserve: Some(true),
                },
                "test".into(),
                None,
            )
            .expect("queued");
        orch.try_start(&*k, m.clone()).await;
        let after = orch.get(&m.id).expect("known");
        assert!(
            lock(&seen).iter().any(|n| n == "OFPT_METER_MOD"),
            "the batch reached the switch: {:?}",
            lock(&seen)
        );
        assert_eq!(after.state, MigState::Failed, "{after:?}");
        let why = after.error.clone().unwrap_or_default();
        assert!(
            why.starts_with("reservation failed") && why.contains("rejected"),
            "{why}"
        );
        assert!(
            lock(&hostds.0).is_empty(),
            "commands reached hostd: {:?}",
            lock(&hostds.0)
        );
    }
}
