//! The live loop's state shared with the API: the policy settings, the
//! latest hotspots, recent decisions, VF changes and the timings of the
//! recent rounds.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::analyze::{HotspotConfig, HotspotReport};
use crate::knowledge::snapshot::HotspotEvent;
use crate::plan::{self, Decision, Policy, PolicyOptions};

/// The policy configuration served at `/api/v1/policy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Policy name, or `none` (monitor only).
    pub name: String,
    /// Record decisions without executing them.
    #[serde(default)]
    pub dry_run: bool,
    /// Policy options.
    #[serde(default)]
    pub options: PolicyOptions,
    /// Hotspot detection.
    #[serde(default)]
    pub hotspot: HotspotConfig,
    /// No moving back to a host left less than this many intervals ago.
    #[serde(default = "default_pingpong")]
    pub pingpong_intervals: f64,
}

fn default_pingpong() -> f64 {
    30.0
}

/// A decision with what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    /// Store id (0 without a store).
    pub id: i64,
    /// Round.
    pub round: u64,
    /// Unix ms.
    pub at_unix_ms: i64,
    /// Policy.
    pub policy: String,
    /// The decision (action, reason, score, details).
    #[serde(flatten)]
    pub decision: Decision,
    /// `dry_run`, `queued as mig-…`, `rejected: …`, `sent`,
    /// `recommended` (waiting for an operator), …
    pub outcome: String,
    /// What it is expected to bring and cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expected>,
}

/// What a decision is expected to bring and to cost, as estimated when it
/// was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// A migration as the orchestrator would carry it out now: bytes,
    /// time, bandwidth reserved, path, communication cost before and
    /// after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<crate::execute::orchestrator::Estimate>,
    /// Why the orchestrator would refuse the migration now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The hot host it relieves and its hot resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relieves: Option<Relief>,
}

/// A hot host a decision relieves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relief {
    /// The host.
    pub host: String,
    /// Its hot resources (`cpu`, `mem`, `net`, …).
    pub resources: Vec<String>,
}

/// One VM of a host in maintenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmDrain {
    /// The VM.
    pub vm: String,
    /// `queued`, `migrating`, `done`, `failed` (after [`crate::mapek::maintenance::MAX_ATTEMPTS`]
    /// failed migrations), `unmovable` (see `reason`) or `waiting`.
    pub state: String,
    /// Its latest migration.
    pub migration: Option<String>,
    /// Where it goes (or went).
    pub to: Option<String>,
    /// Why it cannot go (`unmovable`), or the last error (`failed`).
    pub reason: Option<String>,
}

/// A host in maintenance and its progress (`GET
/// /api/v1/hosts/{id}/maintenance`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaintenanceView {
    /// The host.
    pub host: String,
    /// Unix ms maintenance started.
    pub since_unix_ms: i64,
    /// Who started it.
    pub by: String,
    /// `draining` while a VM is on the host, then `drained`.
    pub state: &'static str,
    /// VMs that were on the host since maintenance started, by name.
    pub vms: Vec<VmDrain>,
}

/// VF assignment of one host.
#[derive(Debug, Clone, Serialize)]
pub struct VfAssignment {
    /// Host id.
    pub host: String,
    /// VFs available.
    pub vf_count: u32,
    /// VMs with a VF attached now (from the latest report).
    pub attached: Vec<String>,
    /// VMs the last decisions gave a VF to (or took it from), with round.
    pub last_changes: Vec<(u64, String, String)>,
}

/// State of the loop shared with the API.
#[derive(Debug)]
pub struct LiveState {
    /// Current settings.
    pub settings: PolicySettings,
    /// Latest hotspot report.
    pub hotspots: Option<HotspotReport>,
    /// Hotspot events of recent rounds.
    pub hotspot_history: VecDeque<HotspotEvent>,
    /// Recent decisions, oldest first.
    pub decisions: VecDeque<DecisionView>,
    /// Rounds evaluated.
    pub round: u64,
    /// Per host: VF changes decided (round, vm, action).
    pub vf_changes: BTreeMap<String, VecDeque<(u64, String, String)>>,
    /// Timings of the recent rounds (the last [`ROUND_WINDOW`]).
    pub round_times: RoundTimes,
    /// Decisions made since the start, by (policy, action kind, outcome
    /// class: the outcome's first word, e.g. `queued`, `rejected`,
    /// `dry_run`), for `GET /metrics`. Bounded: policies, kinds and
    /// outcome classes are few.
    pub decision_counts: BTreeMap<(String, &'static str, String), u64>,
    /// Recommendations waiting for an operator: the action (as JSON text)
    /// → the decision's id. A round that recommends a pending action again
    /// does not record it again. Bounded by [`MAX_PENDING`].
    pub pending: BTreeMap<String, i64>,
    /// Progress of the hosts in maintenance, by host
    /// ([`crate::mapek::maintenance::step`]).
    pub drains: BTreeMap<String, MaintenanceView>,
    /// Policy (rebuilt when the settings change).
    pub(crate) policy: Option<Box<dyn Policy>>,
}

/// Most recommendations waiting at once (older ones are forgotten by the
/// loop; they stay in the store).
pub const MAX_PENDING: usize = 1000;

impl std::fmt::Debug for dyn Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The class of a decision's outcome text (`queued as mig-…` → `queued`):
/// the knowledge layer's [`crate::knowledge::history::outcome_class`], which
/// the store's queries match on too.
pub fn outcome_class(outcome: &str) -> String {
    crate::knowledge::history::outcome_class(outcome)
}

impl LiveState {
    /// Builds the state from configured settings (validated already).
    pub fn new(settings: PolicySettings) -> Self {
        let policy = build(&settings).ok().flatten();
        LiveState {
            settings,
            hotspots: None,
            hotspot_history: VecDeque::new(),
            decisions: VecDeque::new(),
            round: 0,
            vf_changes: BTreeMap::new(),
            round_times: RoundTimes::default(),
            decision_counts: BTreeMap::new(),
            pending: BTreeMap::new(),
            drains: BTreeMap::new(),
            policy,
        }
    }

    /// Validates and applies new settings (the policy starts afresh).
    pub fn set(&mut self, settings: PolicySettings) -> Result<(), String> {
        let policy = build(&settings)?;
        self.policy = policy;
        self.settings = settings;
        Ok(())
    }
}

/// Validates settings and builds their policy (None for `none`).
pub fn build(s: &PolicySettings) -> Result<Option<Box<dyn Policy>>, String> {
    s.hotspot.validate().map_err(|e| format!("hotspot: {e}"))?;
    if !(s.pingpong_intervals.is_finite() && s.pingpong_intervals >= 0.0) {
        return Err(format!(
            "pingpong_intervals must be >= 0, got {}",
            s.pingpong_intervals
        ));
    }
    if s.name == "none" {
        s.options.validate().map_err(|e| e.to_string())?;
        return Ok(None);
    }
    plan::build_policy(&s.name, &s.options)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Rounds whose timings are kept for `GET /api/v1/loop`.
pub const ROUND_WINDOW: usize = 64;

/// How long one round of the live loop took, and on what.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RoundTiming {
    /// Round number.
    pub round: u64,
    /// When it ended, Unix ms.
    pub at_unix_ms: i64,
    /// The whole round (snapshot, Analyze, Plan, Execute or recording), ms.
    pub total_ms: f64,
    /// Building the snapshot of the knowledge, ms.
    pub snapshot_ms: f64,
    /// Analyze + Plan, ms.
    pub analyze_plan_ms: f64,
    /// Executing (or, in a dry run, recording) the decisions, ms.
    pub execute_ms: f64,
    /// CPU time the snapshot and Analyze + Plan used, ms (their thread's
    /// run time from Linux's `/proc/thread-self/schedstat`; None where it
    /// cannot be read). Below `snapshot_ms + analyze_plan_ms` when the
    /// thread waited for a core or a lock.
    pub cpu_ms: Option<f64>,
    /// The part of `cpu_ms` the snapshot used, ms.
    pub snapshot_cpu_ms: Option<f64>,
    /// Hosts in the snapshot.
    pub hosts: usize,
    /// VMs in the snapshot.
    pub vms: usize,
    /// Decisions of the round.
    pub decisions: usize,
}

/// Last, median, 99th percentile, largest and mean of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeriesStats {
    /// Samples.
    pub n: usize,
    /// The most recent sample.
    pub last: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The nearest-rank percentile `p` (in [0, 100]) of ascending `sorted`
/// (None when empty).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// Statistics of `samples` in the order they were taken (None when empty;
/// a NaN sorts above every number).
pub fn series_stats(samples: &[f64]) -> Option<SeriesStats> {
    let last = *samples.last()?;
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    Some(SeriesStats {
        n: samples.len(),
        last,
        p50: percentile(&sorted, 50.0)?,
        p99: percentile(&sorted, 99.0)?,
        max: *sorted.last()?,
        mean: samples.iter().sum::<f64>() / samples.len() as f64,
    })
}

/// The timings of the recent rounds, oldest first, at most
/// [`ROUND_WINDOW`] of them.
#[derive(Debug, Clone, Default)]
pub struct RoundTimes {
    window: VecDeque<RoundTiming>,
}

/// The statistics of the recent rounds (`GET /api/v1/loop`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundTimesView {
    /// Rounds the statistics cover (at most [`ROUND_WINDOW`]).
    pub window: usize,
    /// Whole round, ms.
    pub total_ms: Option<SeriesStats>,
    /// Snapshot, ms.
    pub snapshot_ms: Option<SeriesStats>,
    /// Analyze + Plan, ms.
    pub analyze_plan_ms: Option<SeriesStats>,
    /// Execute (or record), ms.
    pub execute_ms: Option<SeriesStats>,
    /// CPU time of the snapshot and Analyze + Plan, ms (the rounds where it
    /// was read).
    pub cpu_ms: Option<SeriesStats>,
    /// CPU time of the snapshot alone, ms (the rounds where it was read).
    pub snapshot_cpu_ms: Option<SeriesStats>,
    /// The most recent round.
    pub last: Option<RoundTiming>,
}

impl RoundTimes {
    /// Adds a round, forgetting the oldest beyond [`ROUND_WINDOW`].
    pub fn push(&mut self, t: RoundTiming) {
        self.window.push_back(t);
        while self.window.len() > ROUND_WINDOW {
            self.window.pop_front();
        }
    }

    /// The kept rounds, oldest first.
    pub fn rounds(&self) -> impl Iterator<Item = &RoundTiming> {
        self.window.iter()
    }

    /// Statistics over the kept rounds.
    pub fn view(&self) -> RoundTimesView {
        let series = |f: fn(&RoundTiming) -> f64| {
            let v: Vec<f64> = self.window.iter().map(f).collect();
            series_stats(&v)
        };
        RoundTimesView {
            window: self.window.len(),
            total_ms: series(|t| t.total_ms),
            snapshot_ms: series(|t| t.snapshot_ms),
            analyze_plan_ms: series(|t| t.analyze_plan_ms),
            execute_ms: series(|t| t.execute_ms),
            cpu_ms: series_stats(
                &self
                    .window
                    .iter()
                    .filter_map(|t| t.cpu_ms)
                    .collect::<Vec<f64>>(),
            ),
            snapshot_cpu_ms: series_stats(
                &self
                    .window
                    .iter()
                    .filter_map(|t| t.snapshot_cpu_ms)
                    .collect::<Vec<f64>>(),
            ),
            last: self.window.back().copied(),
        }
    }
}

/// This thread's CPU time so far, ms (`/proc/thread-self/schedstat`'s run
/// time; None off Linux or when it cannot be read).
pub fn thread_cpu_ms() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    parse_schedstat_ms(&text)
}

/// The run time of a `schedstat` line (`run_ns wait_ns slices`), ms.
pub fn parse_schedstat_ms(text: &str) -> Option<f64> {
    let ns: u64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(round: u64, total_ms: f64) -> RoundTiming {
        RoundTiming {
            round,
            at_unix_ms: round as i64 * 1000,
            total_ms,
            snapshot_ms: total_ms / 2.0,
            analyze_plan_ms: total_ms / 4.0,
            execute_ms: 0.0,
            cpu_ms: round.is_multiple_of(2).then_some(1.0),
            snapshot_cpu_ms: round.is_multiple_of(2).then_some(0.5),
            hosts: 2,
            vms: 3,
            decisions: 0,
        }
    }

    #[test]
    fn schedstat_run_time() {
        assert_eq!(parse_schedstat_ms("2500000 100 7\n"), Some(2.5));
        assert_eq!(parse_schedstat_ms(""), None);
        assert_eq!(parse_schedstat_ms("x 1 2"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0], 50.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn series_stats_keep_the_last_in_time_order() {
        assert_eq!(series_stats(&[]), None);
        let s = series_stats(&[5.0, 1.0, 9.0, 3.0]).expect("stats");
        assert_eq!(s.n, 4);
        assert_eq!(s.last, 3.0);
        assert_eq!(s.p50, 3.0);
        assert_eq!(s.p99, 9.0);
        assert_eq!(s.max, 9.0);
        assert!((s.mean - 4.5).abs() < 1e-12);
    }

    #[test]
    fn the_window_keeps_the_last_rounds_only() {
        let mut w = RoundTimes::default();
        assert_eq!(w.view().window, 0);
        assert_eq!(w.view().total_ms, None);
        assert_eq!(w.view().last, None);
        // Round 1 is slow; it falls out of the window once 64 more came.
        w.push(timing(1, 1000.0));
        for r in 2..=(ROUND_WINDOW as u64 + 1) {
            w.push(timing(r, r as f64));
        }
        let v = w.view();
        assert_eq!(v.window, ROUND_WINDOW);
        assert_eq!(w.rounds().next().map(|t| t.round), Some(2));
        let total = v.total_ms.expect("total");
        assert_eq!(total.last, 65.0);
        assert_eq!(total.max, 65.0);
        assert_eq!(total.p50, 33.0);
        assert_eq!(total.p99, 65.0);
        assert_eq!(v.snapshot_ms.map(|s| s.max), Some(32.5));
        assert_eq!(v.cpu_ms.map(|s| s.n), Some(ROUND_WINDOW / 2));
        assert_eq!(v.last.map(|t| t.round), Some(65));
    }
}
