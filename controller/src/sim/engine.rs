//! The simulator loop: observe → Analyze → Plan → apply, once per round.
//!
//! Round `r` (time `r·Δ`):
//! 1. every VM's sample comes from its scenario series at `r` (CPU, memory
//!    demand, swap, packets, blocked / gotten) and the traffic matrix at `r`;
//!    memory demand above the allocation swaps (256 pages per MB per
//!    interval); hosts' samples follow from [`physics`];
//! 2. [`analyze::detect`] flags hotspots;
//! 3. the policy plans; every decision is checked (the VM is where the
//!    decision says, capacities hold, a VF is free, no migration breaks a
//!    placement rule of the scenario: [`audit`]) and applied: a
//!    migration moves the VM at once and is recorded as running for the
//!    VMPatrol-predicted time (its hosts are not evaluated while it runs,
//!    and their windows restart when it ends), its bytes come from the same
//!    model;
//! 4. one JSON line per decision is written.
//!
//! After the last round one summary line is written. Costs are S-CORE's `C`
//! with the S-CORE weights of the options; `cost_before` and `cost_after`
//! are both evaluated with the last round's traffic (the initial vs the
//! final placement).

use super::links;
use super::reference;
use super::scenario::Scenario;
use super::SimError;
use crate::analyze::{self, HotspotConfig};
use crate::knowledge::snapshot::{HotspotEvent, MigrationRecord, Snapshot, VmSample};
use crate::plan::constraints::{audit, migration_cost, BYTES_PER_MB, HOTSPOT_DEFAULTS};
use crate::plan::physics;
use crate::plan::{build_policy, Action, Decision, PolicyOptions};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Policy name.
    pub policy: String,
    /// Policy options.
    pub options: PolicyOptions,
    /// Detector configuration.
    pub hotspot: HotspotConfig,
    /// Rounds to run.
    pub rounds: u32,
    /// Also run the reference optimiser (slow at full scale).
    pub reference: bool,
    /// Seed (reference optimiser's search order).
    pub seed: u64,
    /// Intervals observed before round 0 without planning or counting:
    /// the scenario's situation has already lasted this long when the
    /// policies first look (0: they see it from its first sample, and a
    /// detector that needs `k` observations loses `k − 1` rounds).
    pub warmup: u32,
}

/// The summary line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Policy name.
    pub policy: String,
    /// `C` of the initial placement.
    pub cost_before: f64,
    /// `C` of the final placement.
    pub cost_after: f64,
    /// `(cost_before − cost_after) / cost_before` (0 when cost_before = 0).
    pub reduction: f64,
    /// Migrations applied.
    pub migrations: u64,
    /// Bytes moved by migrations (VMPatrol model).
    pub bytes_moved: f64,
    /// Rounds in which at least one hotspot was flagged.
    pub hotspot_rounds: u64,
    /// Sum over rounds of the number of hot hosts.
    pub hotspot_host_rounds: u64,
    /// VF attachments applied.
    pub vf_attached: u64,
    /// VF detachments applied.
    pub vf_detached: u64,
    /// Memory resizes applied.
    pub resizes: u64,
    /// Rounds run.
    pub rounds: u32,
    /// `C` after each round.
    pub cost_by_round: Vec<f64>,
    /// `C` of the reference optimum (with `--reference`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_cost: Option<f64>,
    /// This run's reduction as a fraction of the reference's reduction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction_of_reference: Option<f64>,
    /// Which start gave the reference (`current` or `constructed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_start: Option<String>,
    /// Seconds hosts spent overloaded, whatever the detector flagged: CPU,
    /// NIC or memory utilisation above its threshold, or swap-out above
    /// its rate (each host counted once per round, Δ seconds).
    pub overloaded_host_s: f64,
    /// Seconds hosts spent with the NIC above its threshold.
    pub nic_overloaded_host_s: f64,
    /// VM-seconds on overloaded hosts (SLA violations).
    pub sla_violation_vm_s: f64,
    /// Link-seconds links spent above [`CONGESTION_LIMIT`] of their
    /// capacity, migration streams included ([`super::links`]).
    pub congested_link_s: f64,
    /// Wall-clock seconds spent in the policy's planning (not written: the
    /// output stays byte-identical for the same inputs).
    #[serde(skip)]
    pub planning_s: f64,
}

impl Summary {
    /// A summary before any round of `policy`.
    pub fn empty(policy: &str, rounds: u32) -> Self {
        Summary {
            policy: policy.to_string(),
            cost_before: 0.0,
            cost_after: 0.0,
            reduction: 0.0,
            migrations: 0,
            bytes_moved: 0.0,
            hotspot_rounds: 0,
            hotspot_host_rounds: 0,
            vf_attached: 0,
            vf_detached: 0,
            resizes: 0,
            rounds,
            cost_by_round: Vec::new(),
            reference_cost: None,
            fraction_of_reference: None,
            reference_start: None,
            overloaded_host_s: 0.0,
            nic_overloaded_host_s: 0.0,
            sla_violation_vm_s: 0.0,
            congested_link_s: 0.0,
            planning_s: 0.0,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    round: u32,
    #[serde(flatten)]
    decision: &'a Decision,
}

#[derive(Serialize)]
struct SummaryLine<'a> {
    summary: &'a Summary,
}

fn write_json<T: Serialize>(out: &mut dyn Write, v: &T) -> Result<(), SimError> {
    serde_json::to_writer(&mut *out, v).map_err(|e| SimError::Io(e.to_string()))?;
    out.write_all(b"\n")
        .map_err(|e| SimError::Io(e.to_string()))
}

/// Share of a link's capacity above which it counts as congested.
pub const CONGESTION_LIMIT: f64 = 0.9;

/// Runs `scn` (validated) and writes the JSON lines to `out`.
pub fn simulate(scn: &Scenario, cfg: &SimConfig, out: &mut dyn Write) -> Result<Summary, SimError> {
    cfg.hotspot
        .validate()
        .map_err(|e| SimError::Args(e.to_string()))?;
    let mut policy = build_policy(&cfg.policy, &cfg.options)?;
    let hotspot = cfg.hotspot.for_policy(policy.detector_defaults());
    let weights = cfg.options.score.weights;
    let history = cfg.hotspot.n.max(cfg.options.sova.num).max(10);
    let mut snap = scn.initial_snapshot();
    let initial: HashMap<String, String> = snap
        .vms
        .iter()
        .map(|(k, v)| (k.clone(), v.host.clone()))
        .collect();
    let specs: HashMap<&str, &super::scenario::VmSpec> =
        scn.vms.iter().map(|v| (v.name.as_str(), v)).collect();
    let varies = scn.traffic_varies();
    let mut rates: HashMap<String, (f64, f64)> = rates_of(&snap);
    let resolved = cfg.options.constraints.resolve(HOTSPOT_DEFAULTS);
    let dt = scn.interval_s;
    let mut summary = Summary::empty(&cfg.policy, cfg.rounds);
    let mut first: Option<Snapshot> = None;
    for w in 0..cfg.warmup {
        snap.now_s = -f64::from(cfg.warmup - w) * dt;
        observe(&mut snap, &specs, &rates, 0, history);
    }
    for r in 0..cfg.rounds {
        let ri = r as usize;
        let now = f64::from(r) * dt;
        snap.round = u64::from(r);
        snap.now_s = now;
        if varies && r > 0 {
            snap.traffic = scn.traffic_at(ri);
            rates = rates_of(&snap);
        }
        // Keep ended migrations while they restart a host's window (the
        // last `history` ≥ n samples).
        snap.migrations
            .retain(|m| m.ended_s.is_none_or(|e| now < e + history as f64 * dt));
        observe(&mut snap, &specs, &rates, ri, history);
        links::fill_used(&mut snap);
        if first.is_none() {
            first = Some(snap.clone());
        }
        count_overload(&snap, &hotspot.thresholds, &mut summary);
        let report = analyze::detect(&snap, &hotspot);
        record_hotspots(&mut snap, &report, r, history, &mut summary);
        let planning = std::time::Instant::now();
        let decisions = policy.plan(&snap, &report);
        summary.planning_s += planning.elapsed().as_secs_f64();
        // No policy may plan a migration that breaks a placement rule.
        audit(&snap, &decisions).map_err(|e| SimError::InvalidDecision(e.to_string()))?;
        let mut usage = usage_of(&snap);
        let mut streams: Vec<(String, String, f64, f64)> = Vec::new();
        for d in &decisions {
            if let Some(s) = apply(&mut snap, &mut usage, d, now, &resolved, &mut summary)? {
                streams.push(s);
            }
            write_json(
                out,
                &Line {
                    round: r,
                    decision: d,
                },
            )?;
        }
        let streams: Vec<links::Stream> = streams
            .iter()
            .map(|(from, to, bytes_per_s, secs)| links::Stream {
                from,
                to,
                bytes_per_s: *bytes_per_s,
                secs: *secs,
            })
            .collect();
        summary.congested_link_s += links::congested_link_s(&snap, CONGESTION_LIMIT, dt, &streams);
        summary
            .cost_by_round
            .push(physics::communication_cost(&snap, &weights));
    }
    finish_summary(&mut summary, &snap, &initial, first, varies, cfg, &weights);
    write_json(out, &SummaryLine { summary: &summary })?;
    out.flush().map_err(|e| SimError::Io(e.to_string()))?;
    Ok(summary)
}

/// Costs before (initial placement) and after, with the last round's
/// traffic, and the reference optimum when asked for.
fn finish_summary(
    summary: &mut Summary,
    snap: &Snapshot,
    initial: &HashMap<String, String>,
    first: Option<Snapshot>,
    varies: bool,
    cfg: &SimConfig,
    weights: &[f64; 4],
) {
    // Costs with the last round's traffic.
    let mut before = snap.clone();
    for (name, vm) in before.vms.iter_mut() {
        if let Some(h) = initial.get(name) {
            vm.host = h.clone();
        }
    }
    summary.cost_before = physics::communication_cost(&before, weights);
    summary.cost_after = physics::communication_cost(snap, weights);
    summary.reduction = if summary.cost_before > 0.0 {
        (summary.cost_before - summary.cost_after) / summary.cost_before
    } else {
        0.0
    };
    if cfg.reference {
        if let Some(mut base) = first {
            if varies {
                base.traffic = snap.traffic.clone();
                for (id, s) in physics::host_samples(&base, base.now_s) {
                    if let Some(h) = base.hosts.get_mut(&id) {
                        h.history = vec![s];
                    }
                }
            }
            let rf = reference::optimize(&base, cfg.hotspot.thresholds, weights, cfg.seed);
            summary.reference_cost = Some(rf.cost);
            summary.reference_start = Some(format!("{} ({} passes)", rf.start, rf.passes));
            let denom = summary.cost_before - rf.cost;
            summary.fraction_of_reference = Some(if denom > 0.0 {
                (summary.cost_before - summary.cost_after) / denom
            } else {
                0.0
            });
        }
    }
}

/// Adds this round's overloaded hosts (by their latest sample against
/// `t`, not by the detector) and the VMs on them to the summary.
fn count_overload(snap: &Snapshot, t: &analyze::Thresholds, summary: &mut Summary) {
    let dt = snap.interval_s;
    let mut vms_on: HashMap<&str, usize> = HashMap::new();
    for vm in snap.vms.values() {
        *vms_on.entry(vm.host.as_str()).or_default() += 1;
    }
    for (id, h) in &snap.hosts {
        let s = h.latest();
        let nic = s.net_util(h) > t.net;
        let over =
            nic || s.cpu_util > t.cpu || s.mem_util(h) > t.mem || s.swap_out_pps > t.swap_out_pps;
        if nic {
            summary.nic_overloaded_host_s += dt;
        }
        if over {
            summary.overloaded_host_s += dt;
            summary.sla_violation_vm_s += dt * vms_on.get(id.as_str()).copied().unwrap_or(0) as f64;
        }
    }
}

/// Counts and records this round's hotspots, keeping `history` rounds.
fn record_hotspots(
    snap: &mut Snapshot,
    report: &analyze::HotspotReport,
    r: u32,
    history: usize,
    summary: &mut Summary,
) {
    if !report.hot.is_empty() {
        summary.hotspot_rounds += 1;
    }
    summary.hotspot_host_rounds += report.hot.len() as u64;
    for (host, h) in &report.hot {
        snap.hotspot_history.push(HotspotEvent {
            round: u64::from(r),
            host: host.clone(),
            resources: h
                .evidence
                .iter()
                .map(|e| e.resource.as_str().to_string())
                .collect(),
        });
    }
    let keep_from = u64::from(r).saturating_sub(history as u64);
    snap.hotspot_history.retain(|e| e.round >= keep_from);
}

/// Pushes the observations of round `r` (VM samples from the scenario
/// series and `rates`, host samples from [`physics`]) into `snap`,
/// keeping at most `history` samples per VM and host.
fn observe(
    snap: &mut Snapshot,
    specs: &HashMap<&str, &super::scenario::VmSpec>,
    rates: &HashMap<String, (f64, f64)>,
    ri: usize,
    history: usize,
) {
    let now = snap.now_s;
    let dt = snap.interval_s;
    for (name, vm) in snap.vms.iter_mut() {
        let Some(spec) = specs.get(name.as_str()) else {
            continue;
        };
        let cpu = spec.cpu.at(ri);
        let demand = spec
            .mem_used_mb
            .as_ref()
            .map_or(spec.memory_mb * 0.5, |s| s.at(ri));
        let (tx, rx) = rates.get(name).copied().unwrap_or_default();
        let sample = VmSample {
            at_s: now,
            cpu_cores: cpu,
            mem_used_mb: demand.min(vm.memory_mb),
            swap_out_pps: (demand - vm.memory_mb).max(0.0) * 256.0 / dt + spec.swap_out_pps.at(ri),
            swap_in_pps: spec.swap_in_pps.at(ri),
            packets: spec
                .packets
                .as_ref()
                .map_or((tx + rx) * dt / 1500.0, |s| s.at(ri)),
            blocked_s: spec.blocked_s.at(ri),
            gotten_s: spec.gotten_s.as_ref().map_or(cpu * dt, |s| s.at(ri)),
            tx_bytes_per_s: tx,
            rx_bytes_per_s: rx,
        };
        push_bounded(&mut vm.history, sample, history);
    }
    for (id, s) in physics::host_samples(snap, now) {
        if let Some(h) = snap.hosts.get_mut(&id) {
            push_bounded(&mut h.history, s, history);
        }
    }
}

/// The snapshot of round 0 (one observation per VM and host, no decision
/// applied): what the policies see first. Call only on a validated
/// scenario. Used by the benchmarks.
pub fn first_snapshot(scn: &Scenario) -> Snapshot {
    let mut snap = scn.initial_snapshot();
    let specs: HashMap<&str, &super::scenario::VmSpec> =
        scn.vms.iter().map(|v| (v.name.as_str(), v)).collect();
    let rates = rates_of(&snap);
    observe(&mut snap, &specs, &rates, 0, 10);
    snap
}

fn rates_of(snap: &Snapshot) -> HashMap<String, (f64, f64)> {
    physics::vm_rates(snap)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn push_bounded<T>(v: &mut Vec<T>, x: T, max: usize) {
    v.push(x);
    if v.len() > max {
        let extra = v.len() - max;
        v.drain(..extra);
    }
}

/// Per-host memory allocated, VM count and VFs in use.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    mem_mb: f64,
    vms: usize,
    vfs: usize,
}

fn usage_of(snap: &Snapshot) -> HashMap<String, Usage> {
    let mut m: HashMap<String, Usage> = HashMap::new();
    for v in snap.vms.values() {
        let u = m.entry(v.host.clone()).or_default();
        u.mem_mb += v.memory_mb;
        u.vms += 1;
        u.vfs += usize::from(v.has_vf);
    }
    m
}

/// Checks and applies one decision to the simulated data center; a
/// migration returns its stream (from, to, bytes/s, seconds).
fn apply(
    snap: &mut Snapshot,
    usage: &mut HashMap<String, Usage>,
    d: &Decision,
    now: f64,
    resolved: &crate::plan::constraints::Resolved,
    summary: &mut Summary,
) -> Result<Option<(String, String, f64, f64)>, SimError> {
    let bad = |why: String| {
        SimError::InvalidDecision(format!(
            "{}: {why}",
            serde_json::to_string(&d.action).unwrap_or_default()
        ))
    };
    match &d.action {
        Action::Migrate { vm, from, to } => {
            let v = snap.vms.get(vm).ok_or_else(|| bad("unknown VM".into()))?;
            if &v.host != from {
                return Err(bad(format!("VM is on {}", v.host)));
            }
            if from == to {
                return Err(bad("source = destination".into()));
            }
            let (src, dst) = match (snap.hosts.get(from), snap.hosts.get(to)) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(bad("unknown host".into())),
            };
            let u = usage.get(to).copied().unwrap_or_default();
            let (used, count) = (u.mem_mb, u.vms);
            if used + v.memory_mb > dst.memory_mb {
                return Err(bad("destination memory exceeded".into()));
            }
            if dst.max_vms.is_some_and(|m| count >= m as usize) {
                return Err(bad("destination slots exceeded".into()));
            }
            // At the bandwidth the decision plans (a policy may plan less
            // than the default share of the NIC), by the simulator's model.
            let nic = src.nic_bps.min(dst.nic_bps);
            let nic = match &d.details.migration {
                Some(m) if m.bandwidth_mbps > 0.0 && resolved.nic_share > 0.0 => {
                    nic.min(m.bandwidth_mbps * BYTES_PER_MB * 8.0 / resolved.nic_share)
                }
                _ => nic,
            };
            let cost = migration_cost(v.memory_mb, v.dirty_rate_mbps, nic, resolved)
                .map_err(|e| bad(format!("migration model: {e}")))?;
            let end = now + cost.time_s;
            snap.migrations.push(MigrationRecord {
                vm: vm.clone(),
                from: from.clone(),
                to: to.clone(),
                started_s: now,
                ended_s: Some(end),
            });
            let (mem, vf) = (v.memory_mb, v.has_vf);
            let f = usage.entry(from.clone()).or_default();
            f.mem_mb -= mem;
            f.vms = f.vms.saturating_sub(1);
            f.vfs = f.vfs.saturating_sub(usize::from(vf));
            let t = usage.entry(to.clone()).or_default();
            t.mem_mb += mem;
            t.vms += 1;
            if let Some(v) = snap.vms.get_mut(vm) {
                v.host = to.clone();
                v.has_vf = false;
                v.last_migration_s = Some(end);
            }
            summary.migrations += 1;
            summary.bytes_moved += cost.bytes;
            let rate = if cost.time_s > 0.0 {
                cost.bytes / cost.time_s
            } else {
                0.0
            };
            return Ok(Some((from.clone(), to.clone(), rate, cost.time_s)));
        }
        Action::AttachVf { vm, host } => {
            let v = snap.vms.get(vm).ok_or_else(|| bad("unknown VM".into()))?;
            if &v.host != host || v.has_vf {
                return Err(bad("VM not on that host, or already has a VF".into()));
            }
            let in_use = usage.get(host).map_or(0, |u| u.vfs);
            let vfs = snap.hosts.get(host).map_or(0, |h| h.vf_count as usize);
            if in_use >= vfs {
                return Err(bad(format!("no free VF ({in_use} of {vfs} in use)")));
            }
            usage.entry(host.clone()).or_default().vfs += 1;
            if let Some(v) = snap.vms.get_mut(vm) {
                v.has_vf = true;
            }
            summary.vf_attached += 1;
        }
        Action::DetachVf { vm, host } => {
            let v = snap
                .vms
                .get_mut(vm)
                .ok_or_else(|| bad("unknown VM".into()))?;
            if &v.host != host || !v.has_vf {
                return Err(bad("VM not on that host, or has no VF".into()));
            }
            v.has_vf = false;
            let u = usage.entry(host.clone()).or_default();
            u.vfs = u.vfs.saturating_sub(1);
            summary.vf_detached += 1;
        }
        Action::Resize {
            vm,
            host,
            target_mb,
        } => {
            let v = snap.vms.get(vm).ok_or_else(|| bad("unknown VM".into()))?;
            if &v.host != host {
                return Err(bad("VM not on that host".into()));
            }
            if !(target_mb.is_finite() && *target_mb > 0.0 && *target_mb <= v.max_memory_mb) {
                return Err(bad(format!("target must be in (0, {}]", v.max_memory_mb)));
            }
            let used = usage.get(host).map_or(0.0, |u| u.mem_mb);
            let cap = snap.hosts.get(host).map_or(0.0, |h| h.memory_mb);
            if used - v.memory_mb + target_mb > cap {
                return Err(bad("host memory exceeded".into()));
            }
            let delta = target_mb - v.memory_mb;
            usage.entry(host.clone()).or_default().mem_mb += delta;
            if let Some(v) = snap.vms.get_mut(vm) {
                v.memory_mb = *target_mb;
            }
            summary.resizes += 1;
        }
    }
    Ok(None)
}
