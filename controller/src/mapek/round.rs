//! The live MAPE-K loop: every monitoring interval, Analyze + Plan with the
//! configured policy on a snapshot of the knowledge, then Execute the
//! decisions (migrations through the orchestrator, VF changes and memory
//! resizes through the host daemons) — or only record them (`dry_run`).
//!
//! Stability: the policies honour a cooldown per VM (from the last
//! migration times given in the snapshot); on top, a VM is never moved back
//! to a host it left less than `pingpong_intervals` ago.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_common::proto;
use tracing::{debug, info, warn};

use crate::analyze::{self, HotspotReport};
use crate::execute::handles::{FabricView, HostdClient, HostdError};
use crate::execute::orchestrator::{MigState, Migration, MigrationRequest, Orchestrator};
use crate::knowledge::clock::now_unix_ms;
use crate::knowledge::control::Level;
use crate::knowledge::snapshot::{HotspotEvent, MigrationRecord, Snapshot};
use crate::knowledge::store::{to_json, Store};
use crate::mapek::live::{
    thread_cpu_ms, DecisionView, Expected, LiveState, PolicySettings, Relief, RoundTiming,
    MAX_PENDING,
};
use crate::plan::{Action, Decision};

/// Decisions kept in memory for the API (older ones are in the store).
const RECENT_DECISIONS: usize = 500;
/// Hotspot events kept.
const HOTSPOT_HISTORY: usize = 200;

/// What a round reads and writes: the fabric view, the store, the loop's
/// live state, the host daemons. Nothing else (no API, no settings file).
#[derive(Clone)]
pub struct RoundCtx {
    /// The read-only fabric (topology, hosts, statistics).
    pub fabric: Arc<dyn FabricView>,
    /// Where decisions are recorded (None: in memory only).
    pub store: Option<Arc<dyn Store>>,
    /// When the controller started (Unix ms; the snapshot's time origin).
    pub start_unix_ms: i64,
    /// The monitoring interval (one round per interval).
    pub poll_interval: Duration,
    /// The loop's live state (policy, hotspots, decisions), shared with the
    /// API.
    pub live: Arc<Mutex<LiveState>>,
    /// The host daemons (VF and memory commands).
    pub hostd: Arc<dyn HostdClient>,
}

impl std::fmt::Debug for RoundCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundCtx")
            .field("start_unix_ms", &self.start_unix_ms)
            .field("poll_interval", &self.poll_interval)
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

/// The snapshot now, from the round's context.
pub fn snapshot_now(
    s: &RoundCtx,
    round: u64,
    migrations: Vec<MigrationRecord>,
    hotspot_history: Vec<HotspotEvent>,
    last_migration_s: BTreeMap<String, f64>,
) -> Option<Snapshot> {
    let history = s
        .live
        .lock()
        .map(|l| l.settings.hotspot.n.max(l.settings.options.sova.num))
        .unwrap_or(5)
        .max(2);
    s.fabric.snapshot(
        round,
        history,
        migrations,
        hotspot_history,
        last_migration_s,
    )
}

/// The snapshot the live round plans on, now: the migrations under way
/// applied ([`apply_running`]) and recently ended ones in its window. The
/// what-if preview plans on it too.
pub fn planning_snapshot(ctx: &RoundCtx, orch: &Orchestrator) -> Option<Snapshot> {
    let all = orch.list();
    let (window, history) = {
        let l = lock(&ctx.live);
        (
            l.settings.hotspot.n.max(1) as i64,
            l.hotspot_history.iter().cloned().collect(),
        )
    };
    let (migrations, last_migration_s) = migration_records(
        &all,
        ctx.start_unix_ms,
        now_unix_ms(),
        ctx.poll_interval.as_millis() as i64 * window,
    );
    let round_no = lock(&ctx.live).round;
    let mut snap = snapshot_now(ctx, round_no, migrations, history, last_migration_s)?;
    apply_running(&mut snap, &all);
    Some(snap)
}

/// What decision `d` is expected to bring and cost (see [`Expected`]): a
/// migration is estimated by the orchestrator on the current state (with
/// the communication cost before and after on `snap`), and the hot host it
/// relieves is taken from `report`.
pub fn expected_of(
    orch: &Orchestrator,
    d: &Decision,
    report: &HotspotReport,
    snap: Option<&Snapshot>,
) -> Option<Expected> {
    let base = match (&d.action, snap) {
        (Action::Migrate { .. }, Some(sn)) => Some((sn, orch.cost_of(sn))),
        _ => None,
    };
    expected_with(orch, d, report, base)
}

/// [`expected_of`] with the snapshot's communication cost computed once
/// for all of a round's decisions (`base`: the snapshot and its cost).
pub fn expected_with(
    orch: &Orchestrator,
    d: &Decision,
    report: &HotspotReport,
    base: Option<(&Snapshot, f64)>,
) -> Option<Expected> {
    let relief = |host: &str| {
        report.hot.get(host).map(|h| Relief {
            host: host.to_string(),
            resources: h
                .evidence
                .iter()
                .map(|e| e.resource.as_str().to_string())
                .collect(),
        })
    };
    match &d.action {
        Action::Migrate { vm, from, to } => {
            let req = MigrationRequest {
                vm: vm.clone(),
                destination: to.clone(),
                deadline_s: None,
                reserve: None,
            };
            let (migration, refused) = match orch.estimate(&req, None) {
                Ok(mut e) => {
                    if let Some((sn, before)) = base {
                        let mut moved = sn.clone();
                        if let Some(v) = moved.vms.get_mut(vm) {
                            v.host = e.to.clone();
                        }
                        e.cost_before = Some(before);
                        e.cost_after = Some(orch.cost_of(&moved));
                    }
                    (Some(e), None)
                }
                Err(e) => (None, Some(e.to_string())),
            };
            Some(Expected {
                migration,
                refused,
                relieves: relief(from),
            })
        }
        Action::AttachVf { host, .. }
        | Action::DetachVf { host, .. }
        | Action::Resize { host, .. } => relief(host).map(|r| Expected {
            migration: None,
            refused: None,
            relieves: Some(r),
        }),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the loop until shutdown.
pub async fn run(
    ctx: RoundCtx,
    orch: Arc<Orchestrator>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let interval = ctx.poll_interval;
    // Start one interval in, so that reports and statistics exist.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => round(&ctx, &orch).await,
            _ = shutdown.changed() => if *shutdown.borrow() { break },
        }
    }
}

/// One evaluation: snapshot → Analyze → Plan → Execute (or only record).
///
/// Records the round's timings in the live state (`GET /api/v1/loop`).
pub async fn round(s: &RoundCtx, orch: &Arc<Orchestrator>) {
    // A cluster follower (or a node whose lease ran out) neither analyses
    // nor plans nor acts: the leader does.
    if let Err(e) = s.fabric.may_lead() {
        tracing::debug!(reason = %e, "live round skipped: not the cluster leader");
        return;
    }
    let started = Instant::now();
    // Hosts in maintenance: their VMs leave first, so that the snapshot
    // below plans with them under way.
    if !s.fabric.control().maintenance.is_empty() || !lock(&s.live).drains.is_empty() {
        crate::mapek::maintenance::step(&*s.fabric, orch, &s.live);
    }
    let all = orch.list();
    // Ended migrations stay in the snapshot for one detector window: their
    // end restarts their hosts' windows.
    let window = lock(&s.live).settings.hotspot.n.max(1) as i64;
    let (migrations, last_migration_s) = migration_records(
        &all,
        s.start_unix_ms,
        now_unix_ms(),
        s.poll_interval.as_millis() as i64 * window,
    );
    let (round_no, history) = {
        let mut l = lock(&s.live);
        l.round += 1;
        (l.round, l.hotspot_history.iter().cloned().collect())
    };
    // Snapshot, Analyze and Plan are CPU work over the whole fabric (a
    // million pairs at scale): a blocking thread runs them, so the
    // OpenFlow readers keep timestamping statistics replies meanwhile.
    let ctx = s.clone();
    let running = all.clone();
    let orch2 = Arc::clone(orch);
    let planned = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        let cpu0 = thread_cpu_ms();
        let mut snap = snapshot_now(&ctx, round_no, migrations, history, last_migration_s)?;
        apply_running(&mut snap, &running);
        let t1 = Instant::now();
        let cpu1 = thread_cpu_ms();
        let mut planned = analyze_and_plan(&ctx, &snap, round_no);
        // Broken placement rules (a manual move, a new rule) are repaired
        // when a policy runs, as its decisions are: executed, recommended
        // or skipped by automation level.
        if planned.2.name != "none" && !snap.rules.is_empty() {
            let mut busy: std::collections::BTreeSet<String> = running
                .iter()
                .filter(|m| !m.state.is_final())
                .map(|m| m.vm.clone())
                .collect();
            busy.extend(planned.1.iter().map(|d| d.action.vm().to_string()));
            let mut fits = |vm: &str, host: &str| {
                orch2
                    .estimate(
                        &MigrationRequest {
                            vm: vm.to_string(),
                            destination: host.to_string(),
                            deadline_s: None,
                            reserve: None,
                        },
                        None,
                    )
                    .is_ok()
            };
            let repairs = crate::plan::repair::repairs(&snap, &busy, &mut fits);
            planned.1.extend(repairs);
        }
        let snap = std::sync::Arc::new(snap);
        let timing = RoundTiming {
            round: round_no,
            at_unix_ms: 0,
            total_ms: 0.0,
            snapshot_ms: ms(t1 - t0),
            analyze_plan_ms: ms(t1.elapsed()),
            execute_ms: 0.0,
            cpu_ms: cpu0.zip(thread_cpu_ms()).map(|(a, b)| b - a),
            snapshot_cpu_ms: cpu0.zip(cpu1).map(|(a, b)| b - a),
            hosts: snap.hosts.len(),
            vms: snap.vms.len(),
            decisions: planned.1.len(),
        };
        Some((planned, timing, snap))
    })
    .await;
    let Ok(Some(((report, decisions, settings), mut timing, snap))) = planned else {
        return;
    };
    if !report.hot.is_empty() {
        info!(round = round_no, hot = ?report.hot.keys().collect::<Vec<_>>(), "hotspots");
    }
    let pingpong_s = settings.pingpong_intervals * s.poll_interval.as_secs_f64();
    let executing = Instant::now();
    let mut done = Vec::with_capacity(decisions.len());
    let control = s.fabric.control();
    // The communication cost of the placement, once for every migration's
    // expected effect.
    let before = decisions
        .iter()
        .any(|d| matches!(d.action, Action::Migrate { .. }))
        .then(|| orch.cost_of(&snap));
    for d in decisions {
        let level = control.automation.level_of(d.action.vm());
        // Migrations are estimated before they are queued (the estimate of
        // a queued one would find it under way).
        let expected = expected_with(orch, &d, &report, before.map(|b| (&*snap, b)));
        let outcome = if settings.dry_run {
            "dry_run".to_string()
        } else {
            match level {
                Level::Recommend => RECOMMENDED.to_string(),
                Level::Manual => {
                    format!("skipped: {} is at automation level manual", d.action.vm())
                }
                Level::Auto => execute_decision(s, orch, &d, &all, pingpong_s, round_no).await,
            }
        };
        done.push((now_unix_ms(), d, outcome, expected));
    }
    record(s, orch, round_no, &settings, done).await;
    timing.execute_ms = ms(executing.elapsed());
    timing.total_ms = ms(started.elapsed());
    timing.at_unix_ms = now_unix_ms();
    debug!(
        round = round_no,
        total_ms = timing.total_ms,
        snapshot_ms = timing.snapshot_ms,
        analyze_plan_ms = timing.analyze_plan_ms,
        cpu_ms = ?timing.cpu_ms,
        execute_ms = timing.execute_ms,
        hosts = timing.hosts,
        vms = timing.vms,
        decisions = timing.decisions,
        "round"
    );
    lock(&s.live).round_times.push(timing);
}

/// A duration in milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The migrations the snapshot shows (running, or ended within the last
/// `keep_ms` and not cancelled) and when each VM's last migration ended, in
/// seconds since `start_ms`.
fn migration_records(
    all: &[Migration],
    start_ms: i64,
    now: i64,
    keep_ms: i64,
) -> (Vec<MigrationRecord>, BTreeMap<String, f64>) {
    let secs = |ms: i64| (ms - start_ms) as f64 / 1000.0;
    let migrations: Vec<MigrationRecord> = all
        .iter()
        .filter(|m| {
            !m.state.is_final()
                || (m.state != MigState::Cancelled
                    && m.ended_unix_ms.is_some_and(|e| now - e < keep_ms))
        })
        .map(|m| MigrationRecord {
            vm: m.vm.clone(),
            from: m.from.clone(),
            to: m.to.clone(),
            started_s: secs(m.started_unix_ms.unwrap_or(m.created_unix_ms)),
            ended_s: m.ended_unix_ms.map(secs),
        })
        .collect();
    let mut last_migration_s: BTreeMap<String, f64> = BTreeMap::new();
    for m in all.iter().filter(|m| m.state == MigState::Done) {
        if let Some(e) = m.ended_unix_ms {
            let t = secs(e);
            let slot = last_migration_s.entry(m.vm.clone()).or_insert(t);
            *slot = slot.max(t);
        }
    }
    (migrations, last_migration_s)
}

/// Plans on the placement after the migrations already under way (as the
/// simulator does: a decided migration changes the placement at once), and
/// keeps their VMs cooling down.
///
/// A migration that ended `done` within the snapshot's window counts as
/// well while the host daemons' registrations still place its VM on the
/// source: the destination re-registers the VM only after the end, and a
/// round in between would plan as if the VM were back where it left (and
/// move it there again). Failed migrations, and VMs the registry already
/// places elsewhere, stay as they are.
fn apply_running(snap: &mut Snapshot, all: &[Migration]) {
    let mut latest_done: BTreeMap<&str, &Migration> = BTreeMap::new();
    for m in all.iter().filter(|m| m.state == MigState::Done) {
        let recent = snap
            .migrations
            .iter()
            .any(|r| r.vm == m.vm && r.from == m.from && r.to == m.to && r.ended_s.is_some());
        if !recent {
            continue;
        }
        let newer = latest_done
            .get(m.vm.as_str())
            .is_none_or(|p| p.ended_unix_ms < m.ended_unix_ms);
        if newer {
            latest_done.insert(m.vm.as_str(), m);
        }
    }
    for m in latest_done.values() {
        if let Some(v) = snap.vms.get_mut(&m.vm) {
            if v.host == m.from {
                v.host = m.to.clone();
            }
        }
    }
    for m in all.iter().filter(|m| !m.state.is_final()) {
        if let Some(v) = snap.vms.get_mut(&m.vm) {
            v.host = m.to.clone();
            v.last_migration_s = Some(snap.now_s);
        }
    }
}

/// Publishes the hosts that became hot (or hot on other resources) and
/// those no longer hot since the `previous` round.
fn announce_hotspots(
    bus: &crate::knowledge::events::EventBus,
    previous: Option<&HotspotReport>,
    now: &HotspotReport,
    round_no: u64,
) {
    let resources = |r: &HotspotReport, h: &str| -> Vec<&'static str> {
        r.hot
            .get(h)
            .map(|x| x.evidence.iter().map(|e| e.resource.as_str()).collect())
            .unwrap_or_default()
    };
    for host in now.hot.keys() {
        let was = previous.map(|p| resources(p, host)).unwrap_or_default();
        let is = resources(now, host);
        if was != is {
            bus.publish(
                "hotspot_raised",
                serde_json::json!({"host": host, "resources": is, "round": round_no}),
            );
        }
    }
    for host in previous.iter().flat_map(|p| p.hot.keys()) {
        if !now.hot.contains_key(host) {
            bus.publish(
                "hotspot_cleared",
                serde_json::json!({"host": host, "round": round_no}),
            );
        }
    }
}

/// Analyze and Plan under the `live` lock; records the hotspots.
fn analyze_and_plan(
    s: &RoundCtx,
    snap: &Snapshot,
    round_no: u64,
) -> (HotspotReport, Vec<Decision>, PolicySettings) {
    let mut l = lock(&s.live);
    let settings = l.settings.clone();
    let hotspot = match l.policy.as_ref() {
        Some(p) => settings.hotspot.for_policy(p.detector_defaults()),
        None => settings.hotspot.clone(),
    };
    let report = analyze::detect(snap, &hotspot);
    let decisions = match l.policy.as_mut() {
        Some(p) => p.plan(snap, &report),
        None => Vec::new(),
    };
    for (host, h) in &report.hot {
        l.hotspot_history.push_back(HotspotEvent {
            round: round_no,
            host: host.clone(),
            resources: h
                .evidence
                .iter()
                .map(|e| e.resource.as_str().to_string())
                .collect(),
        });
    }
    while l.hotspot_history.len() > HOTSPOT_HISTORY {
        l.hotspot_history.pop_front();
    }
    if let Some(bus) = s.fabric.events() {
        announce_hotspots(&bus, l.hotspots.as_ref(), &report, round_no);
    }
    l.hotspots = Some(report.clone());
    (report, decisions, settings)
}

/// Records the round's decisions, `(at_ms, decision, outcome)`, in order:
/// in the store (one transaction on a blocking thread; a queued migration
/// is linked to its decision), in the log, and in the recent decisions and
/// VF changes.
async fn record(
    s: &RoundCtx,
    orch: &Orchestrator,
    round_no: u64,
    settings: &PolicySettings,
    done: Vec<(i64, Decision, String, Option<Expected>)>,
) {
    // A recommendation already waiting for an operator is not recorded
    // again: the pending one is the operator's to approve or reject.
    let done: Vec<_> = {
        let l = lock(&s.live);
        done.into_iter()
            .filter(|(_, d, outcome, _)| {
                outcome != RECOMMENDED || !l.pending.contains_key(&action_key(d))
            })
            .collect()
    };
    if done.is_empty() {
        return;
    }
    // The id of each decision (0: not stored). A decision that cannot be
    // serialised is logged and left out; the others keep their own ids.
    let mut ids = vec![0i64; done.len()];
    if let Some(st) = &s.store {
        let mut stored_at = Vec::with_capacity(done.len());
        let mut rows: Vec<(i64, String, String)> = Vec::with_capacity(done.len());
        for (i, (at, d, outcome, expected)) in done.iter().enumerate() {
            let stored = StoredDecision {
                decision: d,
                expected: expected.as_ref(),
            };
            match to_json("decisions", &stored) {
                Ok(j) => {
                    stored_at.push(i);
                    rows.push((*at, j, outcome.clone()));
                }
                Err(e) => warn!(round = round_no, error = %e, "cannot record a decision"),
            }
        }
        let st = st.clone();
        let policy = settings.name.clone();
        let stored = tokio::task::spawn_blocking(move || {
            st.record_decisions_json(round_no as i64, &policy, &rows)
        })
        .await;
        match stored {
            Ok(Ok(got)) => {
                for (i, id) in stored_at.into_iter().zip(got) {
                    if let Some(slot) = ids.get_mut(i) {
                        *slot = id;
                    }
                }
            }
            Ok(Err(e)) => {
                warn!(round = round_no, error = %e, "cannot record the round's decisions");
            }
            Err(e) => {
                warn!(round = round_no, error = %e, "recording the round's decisions failed");
            }
        }
    }
    let mut views = Vec::with_capacity(done.len());
    for (i, (at, d, outcome, expected)) in done.into_iter().enumerate() {
        let id = ids.get(i).copied().unwrap_or(0);
        if let Action::Migrate { .. } = &d.action {
            if let Some(mig) = outcome.strip_prefix("queued as ") {
                orch.link_decision(mig, id);
            }
        }
        info!(round = round_no, policy = %settings.name, action = ?d.action, reason = %d.reason, score = d.score, %outcome, "decision");
        views.push(DecisionView {
            id,
            round: round_no,
            at_unix_ms: at,
            policy: settings.name.clone(),
            decision: d,
            outcome,
            expected,
        });
    }
    let bus = s.fabric.events();
    let mut l = lock(&s.live);
    for v in views {
        if let Some(bus) = &bus {
            bus.publish(
                "decision",
                serde_json::json!({
                    "id": v.id,
                    "round": v.round,
                    "policy": v.policy,
                    "action": v.decision.action.kind(),
                    "vm": v.decision.action.vm(),
                    "reason": v.decision.reason,
                    "score": v.decision.score,
                    "outcome": v.outcome,
                }),
            );
        }
        if let Action::AttachVf { vm, host } | Action::DetachVf { vm, host } = &v.decision.action {
            let kind = if matches!(v.decision.action, Action::AttachVf { .. }) {
                "attach"
            } else {
                "detach"
            };
            if let Some(bus) = &bus {
                bus.publish(
                    "vf_moved",
                    serde_json::json!({"host": host, "vm": vm, "action": kind, "round": round_no}),
                );
            }
            let q = l.vf_changes.entry(host.clone()).or_default();
            q.push_back((round_no, vm.clone(), kind.to_string()));
            while q.len() > 50 {
                q.pop_front();
            }
        }
        let key = (
            v.policy.clone(),
            v.decision.action.kind(),
            crate::mapek::live::outcome_class(&v.outcome),
        );
        *l.decision_counts.entry(key).or_default() += 1;
        if v.outcome == RECOMMENDED {
            if let Some(bus) = &bus {
                bus.publish(
                    "recommendation",
                    serde_json::json!({
                        "id": v.id,
                        "action": v.decision.action.kind(),
                        "vm": v.decision.action.vm(),
                        "reason": v.decision.reason,
                    }),
                );
            }
            l.pending.insert(action_key(&v.decision), v.id);
            while l.pending.len() > MAX_PENDING {
                l.pending.pop_first();
            }
        }
        l.decisions.push_back(v);
    }
    while l.decisions.len() > RECENT_DECISIONS {
        l.decisions.pop_front();
    }
}

/// A decision as stored: the decision and its expected effect.
#[derive(serde::Serialize)]
struct StoredDecision<'a> {
    #[serde(flatten)]
    decision: &'a Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected: Option<&'a Expected>,
}

/// The outcome of a decision recorded as a recommendation, waiting for an
/// operator.
pub const RECOMMENDED: &str = "recommended";

/// The key of a decision's action among the pending recommendations.
pub fn action_key(d: &Decision) -> String {
    serde_json::to_string(&d.action).unwrap_or_else(|_| format!("{:?}", d.action))
}

/// Fills `pending` (the loop's recommendations waiting for an operator)
/// from the store's decisions still `recommended`, newest
/// [`MAX_PENDING`](crate::mapek::live::MAX_PENDING) at most; returns how
/// many. Run at start, so that after a restart a round recommending the
/// same action again does not record it a second time (before, each
/// restart added a new row for every recommendation still waiting). A row
/// whose decision cannot be read is skipped.
pub fn restore_pending(
    pending: &mut BTreeMap<String, i64>,
    store: &dyn crate::knowledge::store::Store,
) -> Result<usize, crate::knowledge::store::StoreError> {
    let rows = store.decisions_query(&crate::knowledge::history::DecisionQuery {
        outcome: Some(RECOMMENDED.to_string()),
        limit: crate::mapek::live::MAX_PENDING,
        ..Default::default()
    })?;
    let mut n = 0;
    for row in rows {
        if let Ok(d) = serde_json::from_value::<Decision>(row.decision) {
            pending.insert(action_key(&d), row.id);
            n += 1;
        }
    }
    Ok(n)
}

/// Carries out one decision; returns its outcome text. `all`: the
/// orchestrator's migrations (for the ping-pong check).
pub async fn execute_decision(
    s: &RoundCtx,
    orch: &Orchestrator,
    d: &Decision,
    all: &[crate::execute::orchestrator::Migration],
    pingpong_s: f64,
    round: u64,
) -> String {
    match &d.action {
        Action::Migrate { vm, from, to } => {
            let now = now_unix_ms();
            let back = all.iter().any(|m| {
                m.state == MigState::Done
                    && &m.vm == vm
                    && &m.from == to
                    && &m.to == from
                    && m.ended_unix_ms
                        .is_some_and(|e| (now - e) as f64 / 1000.0 < pingpong_s)
            });
            if back {
                return format!(
                    "skipped: {vm} left {to} less than {pingpong_s:.0} s ago (ping-pong)"
                );
            }
            match orch.submit(
                MigrationRequest {
                    vm: vm.clone(),
                    destination: to.clone(),
                    deadline_s: None,
                    reserve: None,
                },
                format!("round {round}: {}", d.reason),
                None,
            ) {
                Ok(m) => format!("queued as {}", m.id),
                Err(e) => format!("rejected: {e}"),
            }
        }
        Action::AttachVf { vm, host } => {
            send_command(
                s,
                host,
                &format!("vf-{round}-{vm}"),
                proto::Command::VfAttach { vm: vm.clone() },
            )
            .await
        }
        Action::DetachVf { vm, host } => {
            send_command(
                s,
                host,
                &format!("vfd-{round}-{vm}"),
                proto::Command::VfDetach { vm: vm.clone() },
            )
            .await
        }
        Action::Resize {
            vm,
            host,
            target_mb,
        } => {
            send_command(
                s,
                host,
                &format!("mem-{round}-{vm}"),
                proto::Command::MemoryResize {
                    vm: vm.clone(),
                    target_mb: target_mb.round().max(1.0) as u64,
                },
            )
            .await
        }
    }
}

async fn send_command(s: &RoundCtx, host: &str, id: &str, cmd: proto::Command) -> String {
    let api = s.fabric.hosts().ok().and_then(|h| {
        h.host(host)
            .map(|e| e.registration.api_url.trim_end_matches('/').to_string())
    });
    let Some(api) = api else {
        return format!("rejected: host {host} is not registered");
    };
    match s.hostd.put_command(&api, id, &cmd).await {
        Ok(()) => format!("sent to {host} as {id}"),
        Err(HostdError::Encode(e)) => format!("rejected: {e}"),
        Err(HostdError::Refused { code, body, .. }) => {
            warn!(%host, code, text = %body, "hostd refused a command");
            format!("refused by {host} ({code}): {body}")
        }
        Err(e) => format!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Recommendations still waiting in the store are pending again after a
    /// restart; decided ones are not.
    #[test]
    fn pending_recommendations_are_restored_from_the_store() {
        use crate::knowledge::store::{SqliteStore, Store};
        let st = SqliteStore::open_in_memory().unwrap();
        let mig = |vm: &str| Decision {
            action: Action::Migrate {
                vm: vm.into(),
                from: "h1".into(),
                to: "h2".into(),
            },
            reason: "r".into(),
            score: 1.0,
            details: Default::default(),
        };
        let json = |d: &Decision| serde_json::to_string(d).unwrap();
        let waiting = st
            .record_decision_json(1, 10, "sandpiper", &json(&mig("v1")), RECOMMENDED)
            .unwrap();
        st.record_decision_json(
            1,
            11,
            "sandpiper",
            &json(&mig("v2")),
            "approved by ops: queued as mig-1",
        )
        .unwrap();
        st.record_decision_json(1, 12, "sandpiper", "{\"not\": \"a decision\"}", RECOMMENDED)
            .unwrap();
        let mut pending = BTreeMap::new();
        assert_eq!(restore_pending(&mut pending, &st).unwrap(), 1);
        assert_eq!(pending.get(&action_key(&mig("v1"))), Some(&waiting));
        assert_eq!(pending.len(), 1);
    }
    use crate::execute::handles::{BoxFuture, Handles, NoSwitches};
    use crate::execute::orchestrator::OrchConfig;
    use crate::knowledge::clock::SystemClock;
    use crate::mapek::state;
    use crate::monitor::hosts::tests::{reg, vm};
    use shoal_common::proto::CommandStatus;

    /// Records commands; refuses the VF detaches (ids `vfd-…`).
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, proto::Command)>>);

    impl HostdClient for Recorder {
        fn put_command<'a>(
            &'a self,
            api: &'a str,
            id: &'a str,
            cmd: &'a proto::Command,
        ) -> BoxFuture<'a, Result<(), HostdError>> {
            Box::pin(async move {
                lock(&self.0).push((api.to_string(), id.to_string(), cmd.clone()));
                if id.starts_with("vfd-") {
                    return Err(HostdError::Refused {
                        url: format!("{api}/x"),
                        code: 409,
                        body: "busy".into(),
                    });
                }
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

    /// A migration record as the orchestrator keeps it.
    fn migration(
        vm: &str,
        from: &str,
        to: &str,
        state: &str,
        ended_unix_ms: Option<i64>,
    ) -> Migration {
        serde_json::from_value(serde_json::json!({
            "id": format!("mig-{vm}-{to}"), "vm": vm, "from": from, "to": to, "state": state,
            "reason": "test", "deadline_s": 12.0, "reserve": true,
            "bandwidth_bytes_per_s": 3.6e6, "memory_mb": 32.0, "dirty_rate_mbps": 0.5,
            "predicted": null, "path": [], "hops": [], "reservations": [],
            "queued_reason": null, "progress": null, "result": null, "error": null,
            "src_addr": "", "dst_addr": "", "created_unix_ms": 0,
            "started_unix_ms": 1_000, "ended_unix_ms": ended_unix_ms,
            "cost_before": null, "cost_after": null, "decision_id": null, "seq": 0
        }))
        .expect("a migration")
    }

    /// Right after a migration ended `done`, the host daemons' registrations
    /// may still place its VM on the source (the destination re-registers it
    /// a moment later). A round in that gap planned on the old placement:
    /// S-CORE moved the VM "again" from its source to where it already was
    /// (seen on the testbed: tv4 th2 -> th4 decided twice, the second one
    /// failed). The snapshot places a VM of a recently done migration on its
    /// destination; failed migrations and VMs the registry already moved
    /// elsewhere are left as they are.
    #[test]
    fn a_just_done_migration_places_its_vm_on_the_destination() {
        use crate::plan::testutil::{migrations, Dc};
        use crate::plan::Policy;
        let (mut snap, hot) = Dc::new()
            .host("h1", "r1", "p1", 4.0, 4096.0)
            .host("h2", "r2", "p2", 4.0, 4096.0)
            .host("h3", "r3", "p3", 4.0, 4096.0)
            .vm("v1", "h1", 0.1, 32.0) // the registry still has v1 on h1
            .vm("v2", "h2", 0.1, 32.0)
            .vm("v3", "h1", 0.1, 32.0) // its migration to h3 failed
            .vm("v4", "h3", 0.1, 32.0) // moved on to h3 since
            .talk("v1", "v2", 1e6)
            .build(3);
        let now = snap.now_s;
        let rec = |vm: &str, from: &str, to: &str| MigrationRecord {
            vm: vm.into(),
            from: from.into(),
            to: to.into(),
            started_s: now - 12.0,
            ended_s: Some(now - 0.5),
        };
        snap.migrations = vec![
            rec("v1", "h1", "h2"),
            rec("v3", "h1", "h3"),
            rec("v4", "h1", "h2"),
        ];
        let all = vec![
            migration("v1", "h1", "h2", "done", Some(2_000)),
            migration("v3", "h1", "h3", "failed", Some(2_000)),
            migration("v4", "h1", "h2", "done", Some(2_000)),
        ];
        apply_running(&mut snap, &all);
        let host = |v: &str| snap.vms.get(v).map(|x| x.host.clone()).unwrap_or_default();
        assert_eq!(host("v1"), "h2");
        assert_eq!(host("v3"), "h1");
        assert_eq!(host("v4"), "h3");
        let mut score = crate::plan::score::Score::new(
            crate::plan::ConstraintOptions::default(),
            crate::plan::score::ScoreOptions::default(),
        );
        assert!(
            migrations(&score.plan(&snap, &hot)).is_empty(),
            "v1 and v2 are together already"
        );
    }

    fn decision(action: Action) -> Decision {
        Decision {
            action,
            reason: "test".into(),
            score: 1.0,
            details: Default::default(),
        }
    }

    /// A round's VF commands go through the [`HostdClient`] handle it is
    /// given, to the registered host's API, and a refusal becomes the
    /// decision's outcome.
    #[tokio::test]
    async fn vf_commands_go_through_the_hostd_handle() {
        let settings = Config::from_toml("")
            .and_then(|c| c.validate())
            .expect("default settings");
        let knowledge = Arc::new(state::knowledge(&settings, None));
        knowledge
            .hosts_write()
            .expect("hosts")
            .register("h1", reg("h1", 7, vec![vm("v1", "02:00:00:00:00:01")]), 0)
            .expect("register");
        let rec = Arc::new(Recorder::default());
        let orch = Orchestrator::with_handles(
            OrchConfig::from_settings(&settings),
            Handles {
                fabric: knowledge.clone(),
                switches: Arc::new(NoSwitches),
                hostd: rec.clone(),
                store: None,
                clock: Arc::new(SystemClock),
            },
        )
        .await;
        let ctx = RoundCtx {
            fabric: knowledge.clone(),
            store: None,
            start_unix_ms: 0,
            poll_interval: Duration::from_secs(1),
            live: Arc::new(Mutex::new(state::live_state(&settings))),
            hostd: rec.clone(),
        };
        let attach = decision(Action::AttachVf {
            vm: "v1".into(),
            host: "h1".into(),
        });
        let out = execute_decision(&ctx, &orch, &attach, &[], 0.0, 3).await;
        assert_eq!(out, "sent to h1 as vf-3-v1");
        let detach = decision(Action::DetachVf {
            vm: "v1".into(),
            host: "h1".into(),
        });
        let out = execute_decision(&ctx, &orch, &detach, &[], 0.0, 4).await;
        assert_eq!(out, "refused by h1 (409): busy");
        let unknown = decision(Action::AttachVf {
            vm: "v1".into(),
            host: "nowhere".into(),
        });
        let out = execute_decision(&ctx, &orch, &unknown, &[], 0.0, 5).await;
        assert_eq!(out, "rejected: host nowhere is not registered");
        // A round records its timings for `GET /api/v1/loop`.
        round(&ctx, &orch).await;
        let view = lock(&ctx.live).round_times.view();
        assert_eq!(view.window, 1);
        let last = view.last.expect("the round's timing");
        // h1 registered but never reported: not in the snapshot.
        assert_eq!((last.round, last.hosts, last.vms), (1, 0, 0));
        assert!(last.total_ms >= last.snapshot_ms + last.analyze_plan_ms);
        let sent = lock(&rec.0).clone();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].0, "http://127.0.0.1:7070");
        assert_eq!(sent[0].1, "vf-3-v1");
        assert_eq!(sent[0].2, proto::Command::VfAttach { vm: "v1".into() });
    }
}
