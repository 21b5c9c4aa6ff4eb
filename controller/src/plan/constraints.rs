//! The constraints every policy shares, in one place.
//!
//! - a destination must have room after the move: CPU, memory and NIC
//!   utilisation at most their thresholds, free memory ≥ the VM's size, a
//!   free VM slot when slots are limited;
//! - at most `max_migrations_per_source_host` migrations per source host
//!   per round (default 1; S-CORE's published behaviour moves any number);
//! - a VM that migrated less than `cooldown_intervals · Δ` ago is not moved
//!   (default 10; S-CORE 0), nor a VM whose migration is running;
//! - the migration must converge under the VMPatrol model at the planning
//!   bandwidth (`migration_nic_share` of the smaller NIC); its cost (bytes,
//!   time, downtime) is attached to every migration decision.
//!
//! - the operator's placement rules ([`super::rules`], carried by the
//!   snapshot and compiled in the [`View`]): every destination check
//!   ([`Ledger::room`], [`Ledger::slots_and_ram`], hence [`Ledger::check`];
//!   [`Ledger::rule_check`] alone where a policy skips the room check)
//!   refuses a host where the VM would break a pin, an exclusion, a host
//!   limit, an (anti-)affinity with the round's tentative placement, or a
//!   reserve ([`NoRoom::Rule`] names the rule); a reserve lowers its
//!   hosts' thresholds; a VM pinned to its host alone, or held there by a
//!   host-scoped affinity group, is [`Blocked`].
//!
//! A [`Ledger`] tracks the tentative state of one planning round: every
//! accepted move updates host loads (CPU, memory, slots, NIC tx/rx with the
//! IDC/NIC split of the moved VM's traffic) so that later checks of the same
//! round see it.

use super::rules::{RuleBlock, Violation};
use super::view::View;
use super::{Action, Decision, MigrationCost, PlanError};
use crate::analyze::Thresholds;
use crate::knowledge::snapshot::{ratio, Snapshot};
use serde::{Deserialize, Serialize};
use shoal_common::vmpatrol::{self, ModelError, ModelParams};
use std::collections::BTreeSet;

/// MB → bytes.
pub const BYTES_PER_MB: f64 = 1_048_576.0;

/// Options of the shared constraints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConstraintOptions {
    /// Migrations allowed per source host per round; `None` = the policy's
    /// default (1; S-CORE: unlimited); `Some(0)` = unlimited.
    pub max_migrations_per_source_host: Option<u32>,
    /// Cooldown in monitoring intervals; `None` = the policy's default
    /// (10; S-CORE: 0).
    pub cooldown_intervals: Option<f64>,
    /// Share of the smaller NIC (source or destination) assumed as the
    /// migration bandwidth `L` when estimating migration cost, (0, 1].
    pub migration_nic_share: f64,
    /// VMPatrol switch-over goal `T`, seconds.
    pub downtime_goal_s: f64,
    /// VMPatrol minimum progress per round `X`, MB.
    pub min_progress_mb: f64,
}

impl Default for ConstraintOptions {
    fn default() -> Self {
        ConstraintOptions {
            max_migrations_per_source_host: None,
            cooldown_intervals: None,
            migration_nic_share: 0.5,
            downtime_goal_s: vmpatrol::DEFAULT_DOWNTIME_GOAL_S,
            min_progress_mb: vmpatrol::DEFAULT_MIN_PROGRESS_MB,
        }
    }
}

impl ConstraintOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), PlanError> {
        if let Some(c) = self.cooldown_intervals {
            if !(c.is_finite() && c >= 0.0) {
                return Err(PlanError::invalid(
                    "constraints.cooldown_intervals",
                    format!("must be >= 0, got {c}"),
                ));
            }
        }
        let s = self.migration_nic_share;
        if !(s.is_finite() && s > 0.0 && s <= 1.0) {
            return Err(PlanError::invalid(
                "constraints.migration_nic_share",
                format!("must be in (0, 1], got {s}"),
            ));
        }
        for (f, v) in [
            ("constraints.downtime_goal_s", self.downtime_goal_s),
            ("constraints.min_progress_mb", self.min_progress_mb),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(PlanError::invalid(f, format!("must be > 0, got {v}")));
            }
        }
        Ok(())
    }

    /// Resolves the policy defaults.
    pub fn resolve(&self, defaults: PolicyDefaults) -> Resolved {
        Resolved {
            max_per_source: self
                .max_migrations_per_source_host
                .unwrap_or(defaults.max_migrations_per_source_host),
            cooldown_intervals: self
                .cooldown_intervals
                .unwrap_or(defaults.cooldown_intervals),
            nic_share: self.migration_nic_share,
            downtime_goal_s: self.downtime_goal_s,
            min_progress_mb: self.min_progress_mb,
        }
    }
}

/// A policy's defaults for the shared constraints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyDefaults {
    /// Migrations per source host per round (0 = unlimited).
    pub max_migrations_per_source_host: u32,
    /// Cooldown in intervals.
    pub cooldown_intervals: f64,
}

/// The published defaults.
pub const HOTSPOT_DEFAULTS: PolicyDefaults = PolicyDefaults {
    max_migrations_per_source_host: 1,
    cooldown_intervals: 10.0,
};

/// Constraint values after resolving policy defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolved {
    /// Migrations per source host per round (0 = unlimited).
    pub max_per_source: u32,
    /// Cooldown in intervals.
    pub cooldown_intervals: f64,
    /// Share of the smaller NIC used as migration bandwidth.
    pub nic_share: f64,
    /// VMPatrol `T`.
    pub downtime_goal_s: f64,
    /// VMPatrol `X`.
    pub min_progress_mb: f64,
}

/// Why a VM may not move at all this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// Its migration is still running.
    Migrating,
    /// It migrated less than the cooldown ago.
    Cooldown,
    /// Its host already reached the per-round migration limit.
    SourceLimit,
    /// A placement rule pins it to its current host alone.
    Pinned,
    /// A host-scoped affinity rule keeps it with a VM on its host.
    Together,
}

impl Blocked {
    /// Short text for decision details.
    pub fn as_str(self) -> &'static str {
        match self {
            Blocked::Migrating => "migration running",
            Blocked::Cooldown => "cooldown",
            Blocked::SourceLimit => "source host limit reached",
            Blocked::Pinned => "pinned to its host by a rule",
            Blocked::Together => "kept with its group on its host by an affinity rule",
        }
    }
}

/// Why a destination cannot take a VM.
#[derive(Debug, Clone, PartialEq)]
pub enum NoRoom {
    /// The VM is already there.
    SameHost,
    /// CPU would exceed its threshold.
    Cpu,
    /// Memory: free memory or utilisation threshold.
    Mem,
    /// NIC would exceed its threshold.
    Net,
    /// No free VM slot.
    Slots,
    /// The migration would not converge (or the model rejects its input).
    Model(ModelError),
    /// The move would break the placement rule of this name.
    Rule(String),
}

impl NoRoom {
    /// Short text for decision details.
    pub fn as_str(&self) -> String {
        match self {
            NoRoom::SameHost => "same host".into(),
            NoRoom::Cpu => "no room: cpu".into(),
            NoRoom::Mem => "no room: memory".into(),
            NoRoom::Net => "no room: net".into(),
            NoRoom::Slots => "no room: slots".into(),
            NoRoom::Model(ModelError::NonConvergent { .. }) => "migration does not converge".into(),
            NoRoom::Model(e) => format!("migration model: {e}"),
            NoRoom::Rule(name) => format!("placement rule {name:?}"),
        }
    }
}

/// Tentative state of one planning round.
#[derive(Debug, Clone)]
pub struct Ledger<'v, 'a> {
    /// The view it is built on.
    pub view: &'v View<'a>,
    /// Room thresholds.
    pub thresholds: Thresholds,
    /// Resolved constraint values.
    pub opts: Resolved,
    /// Current (tentative) host of each VM.
    pub placement: Vec<usize>,
    /// CPU in use per host, cores.
    pub cpu_used: Vec<f64>,
    /// Memory in use per host, MB.
    pub mem_used: Vec<f64>,
    /// VMs per host.
    pub vm_count: Vec<u32>,
    /// NIC transmit per host, bytes/s.
    pub tx: Vec<f64>,
    /// NIC receive per host, bytes/s.
    pub rx: Vec<f64>,
    /// Memory allocation per VM (changes with resizes), MB.
    pub vm_mem: Vec<f64>,
    /// Migrations planned from each host this round.
    pub moves_from: Vec<u32>,
    /// VMs moved this round.
    pub moved: Vec<bool>,
    blocked: Vec<Option<Blocked>>,
}

impl<'v, 'a> Ledger<'v, 'a> {
    /// Starts a round from the snapshot's latest samples.
    pub fn new(view: &'v View<'a>, thresholds: Thresholds, opts: Resolved) -> Self {
        let snap = view.snap;
        let hn = view.host_count();
        let mut cpu_used = Vec::with_capacity(hn);
        let mut mem_used = Vec::with_capacity(hn);
        let mut tx = Vec::with_capacity(hn);
        let mut rx = Vec::with_capacity(hn);
        for (h, s) in view.hosts.iter().zip(&view.host_latest) {
            cpu_used.push(s.cpu_util * h.cores);
            mem_used.push(s.mem_used_mb);
            tx.push(s.nic_tx_bytes_per_s);
            rx.push(s.nic_rx_bytes_per_s);
        }
        let mut vm_count = vec![0u32; hn];
        for &h in &view.vm_host {
            if let Some(c) = vm_count.get_mut(h) {
                *c += 1;
            }
        }
        let migrating = snap.vms_migrating();
        let cooldown_s = opts.cooldown_intervals * snap.interval_s;
        let blocked = view
            .vm_names
            .iter()
            .zip(&view.vms)
            .map(|(name, vm)| {
                if migrating.contains(*name) {
                    Some(Blocked::Migrating)
                } else if vm
                    .last_migration_s
                    .is_some_and(|t| snap.now_s - t < cooldown_s)
                {
                    Some(Blocked::Cooldown)
                } else {
                    None
                }
            })
            .collect();
        Ledger {
            view,
            thresholds,
            opts,
            placement: view.vm_host.clone(),
            cpu_used,
            mem_used,
            vm_count,
            tx,
            rx,
            vm_mem: view.vms.iter().map(|v| v.memory_mb).collect(),
            moves_from: vec![0; hn],
            moved: vec![false; view.vm_count()],
            blocked,
        }
    }

    /// Current host of VM `v`.
    pub fn host_of(&self, v: usize) -> usize {
        self.placement.get(v).copied().unwrap_or(0)
    }

    /// Why `v` cannot move at all this round, if it cannot.
    pub fn blocked(&self, v: usize) -> Option<Blocked> {
        if let Some(Some(b)) = self.blocked.get(v) {
            return Some(*b);
        }
        if !self.view.rules.is_empty() {
            match self.view.rules.blocked(v, &self.placement) {
                Some(RuleBlock::Pinned(_)) => return Some(Blocked::Pinned),
                Some(RuleBlock::Together(_)) => return Some(Blocked::Together),
                None => {}
            }
        }
        let h = self.host_of(v);
        let limit = self.opts.max_per_source;
        if limit > 0 && self.moves_from.get(h).copied().unwrap_or(0) >= limit {
            return Some(Blocked::SourceLimit);
        }
        None
    }

    /// Whether the per-round limit of host `h` is reached.
    pub fn source_limit_reached(&self, h: usize) -> bool {
        let limit = self.opts.max_per_source;
        limit > 0 && self.moves_from.get(h).copied().unwrap_or(0) >= limit
    }

    /// CPU utilisation of host `h` now (tentative).
    pub fn cpu_util(&self, h: usize) -> f64 {
        let cores = self.view.hosts.get(h).map_or(0.0, |x| x.cores);
        crate::knowledge::snapshot::ratio(self.cpu_used.get(h).copied().unwrap_or(0.0), cores)
    }

    /// Memory utilisation of host `h` now (tentative).
    pub fn mem_util(&self, h: usize) -> f64 {
        let mem = self.view.hosts.get(h).map_or(0.0, |x| x.memory_mb);
        crate::knowledge::snapshot::ratio(self.mem_used.get(h).copied().unwrap_or(0.0), mem)
    }

    /// NIC utilisation of host `h` now (tentative).
    pub fn net_util(&self, h: usize) -> f64 {
        let cap = self.view.hosts.get(h).map_or(0.0, |x| x.nic_bytes_per_s());
        let t = self.tx.get(h).copied().unwrap_or(0.0);
        let r = self.rx.get(h).copied().unwrap_or(0.0);
        crate::knowledge::snapshot::ratio(t.max(r), cap)
    }

    /// NIC (tx, rx) of host `k` if `v` moved there, bytes/s.
    pub fn nic_after_arrival(&self, v: usize, k: usize) -> (f64, f64) {
        let mut tx = self.tx.get(k).copied().unwrap_or(0.0)
            + self.view.ext_tx.get(v).copied().unwrap_or(0.0);
        let mut rx = self.rx.get(k).copied().unwrap_or(0.0)
            + self.view.ext_rx.get(v).copied().unwrap_or(0.0);
        for p in self.view.peers(v) {
            if self.host_of(p.vm) == k {
                // Was NIC traffic of k, becomes IDC.
                tx -= p.inn;
                rx -= p.out;
            } else {
                tx += p.out;
                rx += p.inn;
            }
        }
        (tx.max(0.0), rx.max(0.0))
    }

    /// NIC (tx, rx) of `v`'s host if `v` left it (its IDC traffic with VMs
    /// staying there becomes NIC traffic), bytes/s.
    pub fn nic_after_departure(&self, v: usize) -> (f64, f64) {
        let x = self.host_of(v);
        let mut tx = self.tx.get(x).copied().unwrap_or(0.0)
            - self.view.ext_tx.get(v).copied().unwrap_or(0.0);
        let mut rx = self.rx.get(x).copied().unwrap_or(0.0)
            - self.view.ext_rx.get(v).copied().unwrap_or(0.0);
        for p in self.view.peers(v) {
            if self.host_of(p.vm) == x {
                tx += p.inn;
                rx += p.out;
            } else {
                tx -= p.out;
                rx -= p.inn;
            }
        }
        (tx.max(0.0), rx.max(0.0))
    }

    /// Whether moving VM `v` to host `k` keeps every placement rule: pins,
    /// exclusions, host limits, (anti-)affinity with the other VMs where
    /// they are now (tentatively), and the reserves of `k` (its load after
    /// the arrival) and of `v`'s host (whose NIC may grow when `v`'s
    /// traffic with VMs staying there stops being IDC). `Err` names the
    /// first rule broken. Part of [`Ledger::room`] and
    /// [`Ledger::slots_and_ram`].
    pub fn rule_check(&self, v: usize, k: usize) -> Result<(), NoRoom> {
        let rules = &self.view.rules;
        if rules.is_empty() {
            return Ok(());
        }
        let named = |r: usize| NoRoom::Rule(rules.name(r).to_string());
        rules
            .placement_check(v, k, &self.placement, &self.vm_count)
            .map_err(named)?;
        if !rules.has_reserves() {
            return Ok(());
        }
        let res = rules.reserve(k);
        if let (false, Some(host)) = (res.is_none(), self.view.hosts.get(k)) {
            if let Some((f, r)) = res.cpu {
                let vm_cpu = self.view.vm_latest.get(v).map_or(0.0, |s| s.cpu_cores);
                let after = self.cpu_used.get(k).copied().unwrap_or(0.0) + vm_cpu;
                if ratio(after, host.cores) > 1.0 - f {
                    return Err(named(r));
                }
            }
            if let Some((f, r)) = res.mem {
                let vm_mem = self.vm_mem.get(v).copied().unwrap_or(0.0);
                let after = self.mem_used.get(k).copied().unwrap_or(0.0) + vm_mem;
                if ratio(after, host.memory_mb) > 1.0 - f {
                    return Err(named(r));
                }
            }
            if let Some((f, r)) = res.net {
                let (tx, rx) = self.nic_after_arrival(v, k);
                if ratio(tx.max(rx), host.nic_bytes_per_s()) > 1.0 - f {
                    return Err(named(r));
                }
            }
        }
        let x = self.host_of(v);
        if let (Some((f, r)), Some(host)) = (rules.reserve(x).net, self.view.hosts.get(x)) {
            let before = self.net_util(x);
            let (tx, rx) = self.nic_after_departure(v);
            let after = ratio(tx.max(rx), host.nic_bytes_per_s());
            if after > 1.0 - f && after > before {
                return Err(named(r));
            }
        }
        Ok(())
    }

    /// Whether host `k` has room for VM `v` (placement rules, thresholds —
    /// lowered by a reserve —, memory, slots).
    pub fn room(&self, v: usize, k: usize) -> Result<(), NoRoom> {
        if self.host_of(v) == k {
            return Err(NoRoom::SameHost);
        }
        let Some(host) = self.view.hosts.get(k) else {
            return Err(NoRoom::Slots);
        };
        self.rule_check(v, k)?;
        let t = &self.thresholds;
        if let Some(max) = host.max_vms {
            if self.vm_count.get(k).copied().unwrap_or(0) >= max {
                return Err(NoRoom::Slots);
            }
        }
        let vm_cpu = self.view.vm_latest.get(v).map_or(0.0, |s| s.cpu_cores);
        let cpu_after = self.cpu_used.get(k).copied().unwrap_or(0.0) + vm_cpu;
        if crate::knowledge::snapshot::ratio(cpu_after, host.cores) > t.cpu || host.cores <= 0.0 {
            return Err(NoRoom::Cpu);
        }
        let vm_mem = self.vm_mem.get(v).copied().unwrap_or(0.0);
        let used = self.mem_used.get(k).copied().unwrap_or(0.0);
        if host.memory_mb - used < vm_mem
            || crate::knowledge::snapshot::ratio(used + vm_mem, host.memory_mb) > t.mem
        {
            return Err(NoRoom::Mem);
        }
        let (tx, rx) = self.nic_after_arrival(v, k);
        if crate::knowledge::snapshot::ratio(tx.max(rx), host.nic_bytes_per_s()) > t.net
            || host.nic_bps <= 0.0
        {
            return Err(NoRoom::Net);
        }
        Ok(())
    }

    /// S-CORE's capacity: a free VM slot (when slots are limited) and free
    /// memory ≥ the VM's size at `k`; no utilisation threshold. The
    /// placement rules hold here too (a reserve included).
    pub fn slots_and_ram(&self, v: usize, k: usize) -> Result<(), NoRoom> {
        if self.host_of(v) == k {
            return Err(NoRoom::SameHost);
        }
        let Some(host) = self.view.hosts.get(k) else {
            return Err(NoRoom::Slots);
        };
        self.rule_check(v, k)?;
        if let Some(max) = host.max_vms {
            if self.vm_count.get(k).copied().unwrap_or(0) >= max {
                return Err(NoRoom::Slots);
            }
        }
        let vm_mem = self.vm_mem.get(v).copied().unwrap_or(0.0);
        if host.memory_mb - self.mem_used.get(k).copied().unwrap_or(0.0) < vm_mem {
            return Err(NoRoom::Mem);
        }
        Ok(())
    }

    /// Whether host `h` is within every limit at its current (tentative)
    /// load: slots, CPU, memory and NIC thresholds, memory capacity.
    pub fn host_within_limits(&self, h: usize) -> bool {
        let Some(host) = self.view.hosts.get(h) else {
            return false;
        };
        let t = &self.thresholds;
        let slots_ok = host
            .max_vms
            .is_none_or(|m| self.vm_count.get(h).copied().unwrap_or(0) <= m);
        let mem = self.mem_used.get(h).copied().unwrap_or(0.0);
        slots_ok
            && self.cpu_util(h) <= t.cpu
            && mem <= host.memory_mb
            && self.mem_util(h) <= t.mem
            && self.net_util(h) <= t.net
    }

    /// VMPatrol estimate for moving `v` from its host to `k`.
    pub fn estimate(&self, v: usize, k: usize) -> Result<MigrationCost, ModelError> {
        let from = self.host_of(v);
        let nic = |h: usize| self.view.hosts.get(h).map_or(0.0, |x| x.nic_bps);
        migration_cost(
            self.vm_mem.get(v).copied().unwrap_or(0.0),
            self.view.vms.get(v).map_or(0.0, |x| x.dirty_rate_mbps),
            nic(from).min(nic(k)),
            &self.opts,
        )
    }

    /// Room at `k` and a converging migration: the full destination check.
    pub fn check(&self, v: usize, k: usize) -> Result<MigrationCost, NoRoom> {
        self.room(v, k)?;
        self.estimate(v, k).map_err(NoRoom::Model)
    }

    /// Records the move of `v` to `k`: loads, NIC split, counters.
    pub fn apply_move(&mut self, v: usize, k: usize) {
        let x = self.host_of(v);
        if x == k {
            return;
        }
        let view = self.view;
        let cpu = view.vm_latest.get(v).map_or(0.0, |s| s.cpu_cores);
        let mem = self.vm_mem.get(v).copied().unwrap_or(0.0);
        add(&mut self.cpu_used, x, -cpu);
        add(&mut self.cpu_used, k, cpu);
        add(&mut self.mem_used, x, -mem);
        add(&mut self.mem_used, k, mem);
        if let Some(c) = self.vm_count.get_mut(x) {
            *c = c.saturating_sub(1);
        }
        if let Some(c) = self.vm_count.get_mut(k) {
            *c += 1;
        }
        let (etx, erx) = (
            view.ext_tx.get(v).copied().unwrap_or(0.0),
            view.ext_rx.get(v).copied().unwrap_or(0.0),
        );
        add(&mut self.tx, x, -etx);
        add(&mut self.rx, x, -erx);
        add(&mut self.tx, k, etx);
        add(&mut self.rx, k, erx);
        for p in view.peers(v) {
            let hz = self.host_of(p.vm);
            if hz != x {
                add(&mut self.tx, x, -p.out);
                add(&mut self.rx, x, -p.inn);
                add(&mut self.rx, hz, -p.out);
                add(&mut self.tx, hz, -p.inn);
            }
            if hz != k {
                add(&mut self.tx, k, p.out);
                add(&mut self.rx, k, p.inn);
                add(&mut self.rx, hz, p.out);
                add(&mut self.tx, hz, p.inn);
            }
        }
        for h in [x, k] {
            for vec in [
                &mut self.tx,
                &mut self.rx,
                &mut self.cpu_used,
                &mut self.mem_used,
            ] {
                if let Some(val) = vec.get_mut(h) {
                    if *val < 0.0 {
                        *val = 0.0;
                    }
                }
            }
        }
        if let Some(p) = self.placement.get_mut(v) {
            *p = k;
        }
        if let Some(c) = self.moves_from.get_mut(x) {
            *c += 1;
        }
        if let Some(m) = self.moved.get_mut(v) {
            *m = true;
        }
    }

    /// The placement rules the tentative placement breaks (reserves against
    /// the tentative loads), for reporting and for checking a plan.
    pub fn violations(&self) -> Vec<Violation> {
        let rules = &self.view.rules;
        if rules.is_empty() {
            return Vec::new();
        }
        let util = |h: usize| [self.cpu_util(h), self.mem_util(h), self.net_util(h)];
        rules
            .violations(
                &self.view.vm_names,
                &self.view.host_names,
                &self.placement,
                &self.vm_count,
                Some(&util),
            )
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Records a memory resize of `v` to `target_mb`.
    pub fn apply_resize(&mut self, v: usize, target_mb: f64) {
        let h = self.host_of(v);
        let old = self.vm_mem.get(v).copied().unwrap_or(0.0);
        add(&mut self.mem_used, h, target_mb - old);
        if let Some(m) = self.vm_mem.get_mut(v) {
            *m = target_mb;
        }
    }
}

/// The placement rules the snapshot's placement breaks now (reserves
/// against the latest host samples): what to report after, e.g., an
/// operator's manual move.
pub fn violations(snap: &Snapshot) -> Vec<Violation> {
    if snap.rules.is_empty() {
        return Vec::new();
    }
    let view = View::new(snap);
    let led = Ledger::new(
        &view,
        Thresholds::default(),
        ConstraintOptions::default().resolve(HOTSPOT_DEFAULTS),
    );
    led.violations()
}

/// A planned migration after which the placement breaks a rule it did not
/// break before.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("decision {index} (migrate {vm} to {to}) breaks {}", describe(.broken))]
pub struct RuleBreach {
    /// Position of the decision in the plan.
    pub index: usize,
    /// The VM.
    pub vm: String,
    /// Its destination.
    pub to: String,
    /// The violations it adds.
    pub broken: Vec<Violation>,
}

fn describe(v: &[Violation]) -> String {
    v.iter()
        .map(|x| format!("rule {:?} ({}: {})", x.rule, x.kind, x.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Replays a round's `decisions` on a ledger of the snapshot the policy
/// saw (migrations and resizes, in order) and checks that no migration
/// adds a rule violation (a violation that was there before — an
/// operator's move, a rule added over the placement — may stay). The
/// simulator runs it on every plan when the scenario has rules.
pub fn audit(snap: &Snapshot, decisions: &[Decision]) -> Result<(), RuleBreach> {
    if snap.rules.is_empty() {
        return Ok(());
    }
    let view = View::new(snap);
    let mut led = Ledger::new(
        &view,
        Thresholds::default(),
        ConstraintOptions::default().resolve(HOTSPOT_DEFAULTS),
    );
    type Key = (String, Vec<String>, Vec<String>, Option<String>);
    let keys =
        |led: &Ledger| -> BTreeSet<Key> { led.violations().iter().map(Violation::key).collect() };
    let mut before = keys(&led);
    for (index, d) in decisions.iter().enumerate() {
        match &d.action {
            Action::Migrate { vm, to, .. } => {
                let (Some(v), Some(k)) = (view.vm_id(vm), view.host_id(to)) else {
                    continue;
                };
                led.apply_move(v, k);
                let now = led.violations();
                let broken: Vec<Violation> = now
                    .iter()
                    .filter(|x| !before.contains(&x.key()))
                    .cloned()
                    .collect();
                if !broken.is_empty() {
                    return Err(RuleBreach {
                        index,
                        vm: vm.clone(),
                        to: to.clone(),
                        broken,
                    });
                }
                before = now.iter().map(Violation::key).collect();
            }
            Action::Resize { vm, target_mb, .. } => {
                if let Some(v) = view.vm_id(vm) {
                    led.apply_resize(v, *target_mb);
                    before = keys(&led);
                }
            }
            Action::AttachVf { .. } | Action::DetachVf { .. } => {}
        }
    }
    Ok(())
}

/// VMPatrol cost of moving a VM of `memory_mb` with dirty rate
/// `dirty_mbps` over a path whose slowest NIC has `nic_bps` bit/s, at the
/// planning bandwidth `opts.nic_share · nic_bps`.
pub fn migration_cost(
    memory_mb: f64,
    dirty_mbps: f64,
    nic_bps: f64,
    opts: &Resolved,
) -> Result<MigrationCost, ModelError> {
    let l_mbps = nic_bps / 8.0 * opts.nic_share / BYTES_PER_MB;
    let params = ModelParams {
        memory_mb,
        dirty_mbps,
        downtime_goal_s: opts.downtime_goal_s,
        min_progress_mb: opts.min_progress_mb,
    };
    let p = vmpatrol::predict(&params, l_mbps)?;
    Ok(MigrationCost {
        bandwidth_mbps: p.bandwidth_mbps,
        rounds: p.rounds,
        bytes: p.traffic_mb * BYTES_PER_MB,
        time_s: p.time_s,
        downtime_s: p.downtime_s,
    })
}

fn add(v: &mut [f64], i: usize, d: f64) {
    if let Some(x) = v.get_mut(i) {
        *x += d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::rules::RuleSet;
    use crate::plan::testutil::Dc;

    fn rules(json: &str) -> RuleSet {
        let r: RuleSet = serde_json::from_str(json).unwrap();
        r.validate().unwrap();
        r
    }

    /// Hosts a, b (rack r1) and c (rack r2), 8 cores and 16 GB each; v1
    /// (1 core) on a, v2 on b, v3 on c, v4 on a.
    fn dc() -> Snapshot {
        Dc::new()
            .host("a", "r1", "p1", 8.0, 16384.0)
            .host("b", "r1", "p1", 8.0, 16384.0)
            .host("c", "r2", "p1", 8.0, 16384.0)
            .vm("v1", "a", 1.0, 1024.0)
            .vm("v2", "b", 1.0, 1024.0)
            .vm("v3", "c", 1.0, 1024.0)
            .vm("v4", "a", 1.0, 1024.0)
            .build(5)
            .0
    }

    fn ledger<'v, 'a>(view: &'v View<'a>) -> Ledger<'v, 'a> {
        Ledger::new(
            view,
            Thresholds::default(),
            ConstraintOptions::default().resolve(HOTSPOT_DEFAULTS),
        )
    }

    fn rule(name: &str) -> Result<(), NoRoom> {
        Err(NoRoom::Rule(name.into()))
    }

    /// Every destination check refuses a host where the move would break a
    /// rule, naming it, and accepts the others.
    #[test]
    fn every_destination_check_refuses_each_rule_kind_by_name() {
        // (rules, VM, refused host, accepted host)
        let cases = [
            (
                r#"[{"kind":"pin","name":"pin","vms":["v1"],"hosts":["a","c"]}]"#,
                "v1",
                "b",
                Some("c"),
            ),
            (
                r#"[{"kind":"exclude","name":"drain","hosts":["b"]}]"#,
                "v1",
                "b",
                Some("c"),
            ),
            (
                r#"[{"kind":"exclude","name":"not-v1","hosts":["c"],"vms":["v1"]}]"#,
                "v1",
                "c",
                Some("b"),
            ),
            (
                r#"[{"kind":"affinity","name":"with-v2","vms":["v1","v2"],"scope":"host"}]"#,
                "v1",
                "c",
                Some("b"),
            ),
            (
                r#"[{"kind":"affinity","name":"rack-v2","vms":["v1","v2"],"scope":"rack"}]"#,
                "v1",
                "c",
                Some("b"),
            ),
            (
                r#"[{"kind":"affinity","name":"pod-v3","vms":["v1","v3"],"scope":"pod"}]"#,
                "v4",
                "a",
                None,
            ),
            (
                r#"[{"kind":"anti_affinity","name":"apart","vms":["v1","v2"],"scope":"host"}]"#,
                "v1",
                "b",
                Some("c"),
            ),
            (
                r#"[{"kind":"anti_affinity","name":"racks","vms":["v1","v3"],"scope":"rack"}]"#,
                "v1",
                "c",
                Some("b"),
            ),
            (
                r#"[{"kind":"host_limit","name":"one","max_vms":1}]"#,
                "v1",
                "b",
                None,
            ),
            (
                r#"[{"kind":"host_limit","name":"two-on-c","hosts":["c"],"max_vms":1}]"#,
                "v1",
                "c",
                Some("b"),
            ),
            // b: 1 + 1 core of 8 = 0.25 > 1 − 0.8.
            (
                r#"[{"kind":"reserve","name":"cpu","hosts":["b"],"cpu":0.8}]"#,
                "v1",
                "b",
                Some("c"),
            ),
            // 2048 MB (+ the VM) of 16384 > 1 − 0.9.
            (
                r#"[{"kind":"reserve","name":"mem","mem":0.9}]"#,
                "v1",
                "b",
                None,
            ),
        ];
        for (json, vm, bad, good) in cases {
            let mut snap = dc();
            snap.rules = rules(json);
            let name = snap.rules.rules[0].name().to_string();
            let view = View::new(&snap);
            let led = ledger(&view);
            let (v, k) = (view.vm_id(vm).unwrap(), view.host_id(bad).unwrap());
            if vm == "v4" {
                // Same host: the check says so first.
                assert_eq!(led.room(v, k), Err(NoRoom::SameHost));
                continue;
            }
            assert_eq!(led.rule_check(v, k), rule(&name), "{json}");
            assert_eq!(led.room(v, k), rule(&name), "{json}");
            assert_eq!(led.slots_and_ram(v, k), rule(&name), "{json}");
            let e = led.check(v, k).unwrap_err();
            assert_eq!(e.as_str(), format!("placement rule {name:?}"));
            if let Some(good) = good {
                let k = view.host_id(good).unwrap();
                assert_eq!(led.room(v, k), Ok(()), "{json}");
                assert!(led.check(v, k).is_ok(), "{json}");
            }
        }
    }

    /// Rules apply to the round's tentative placement.
    #[test]
    fn rules_follow_the_tentative_placement() {
        let mut snap = dc();
        snap.rules = rules(
            r#"[{"kind":"anti_affinity","name":"apart","vms":["v1","v2"],"scope":"host"},
                {"kind":"host_limit","name":"three","max_vms":3}]"#,
        );
        let view = View::new(&snap);
        let mut led = ledger(&view);
        let id = |n: &str| view.vm_id(n).unwrap();
        let h = |n: &str| view.host_id(n).unwrap();
        assert_eq!(led.room(id("v2"), h("c")), Ok(()));
        led.apply_move(id("v1"), h("c"));
        assert_eq!(led.room(id("v2"), h("c")), rule("apart"));
        assert_eq!(led.room(id("v2"), h("a")), Ok(()));
        assert_eq!(led.room(id("v4"), h("c")), Ok(()));
        led.apply_move(id("v4"), h("c"));
        // c holds v3, v1 and v4 now: full under the limit.
        assert_eq!(led.room(id("v2"), h("c")), rule("three"));
        assert!(led.violations().is_empty());
    }

    /// A reserve lowers the thresholds of its hosts: 1 + 5 cores of 8 =
    /// 0.75 fits under the CPU threshold (0.85) but not under 1 − 0.3.
    #[test]
    fn a_reserve_lowers_the_thresholds() {
        let base = || {
            Dc::new()
                .host("a", "r1", "p1", 8.0, 16384.0)
                .host("b", "r1", "p1", 8.0, 16384.0)
                .vm("v1", "a", 1.0, 1024.0)
                .vm("busy", "b", 5.0, 1024.0)
        };
        let check = |json: &str| {
            let (mut snap, _) = base().build(5);
            snap.rules = rules(json);
            let view = View::new(&snap);
            let led = ledger(&view);
            led.room(view.vm_id("v1").unwrap(), view.host_id("b").unwrap())
        };
        assert_eq!(check("[]"), Ok(()));
        assert_eq!(
            check(r#"[{"kind":"reserve","name":"r","cpu":0.3}]"#),
            rule("r")
        );
        assert_eq!(
            check(r#"[{"kind":"reserve","name":"r","cpu":0.2}]"#),
            Ok(())
        );
        // The threshold still binds below the reserve's limit.
        assert_eq!(
            check(r#"[{"kind":"reserve","name":"r","cpu":0.01}]"#),
            Ok(())
        );
        let (mut snap, _) = base().vm("more", "b", 1.0, 1024.0).build(5);
        snap.rules = rules(r#"[{"kind":"reserve","name":"r","cpu":0.01}]"#);
        let view = View::new(&snap);
        let led = ledger(&view);
        // 1 + 6 of 8 = 0.875 > 0.85: the threshold, not the rule.
        assert_eq!(
            led.room(view.vm_id("v1").unwrap(), view.host_id("b").unwrap()),
            Err(NoRoom::Cpu)
        );
    }

    /// A VM leaving a host turns its traffic with the VMs staying there
    /// into NIC traffic: a net reserve of the source host refuses that.
    #[test]
    fn a_net_reserve_protects_the_source_host_too() {
        let (mut snap, _) = Dc::new()
            .host("a", "r1", "p1", 8.0, 16384.0)
            .host("b", "r1", "p1", 8.0, 16384.0)
            .vm("v1", "a", 1.0, 1024.0)
            .vm("v2", "a", 1.0, 1024.0)
            .talk("v1", "v2", 500e6)
            .build(5);
        snap.rules = rules(r#"[{"kind":"reserve","name":"keep-a","hosts":["a"],"net":0.7}]"#);
        let view = View::new(&snap);
        let led = ledger(&view);
        // 500 MB/s of a 1.25 GB/s NIC = 0.4 > 1 − 0.7 once v1 is on b.
        assert_eq!(
            led.rule_check(view.vm_id("v1").unwrap(), view.host_id("b").unwrap()),
            rule("keep-a")
        );
    }

    #[test]
    fn pinned_and_grouped_vms_are_blocked() {
        let mut snap = dc();
        snap.rules = rules(
            r#"[{"kind":"pin","name":"stay","vms":["v2"],"hosts":["b"]},
                {"kind":"affinity","name":"pair","vms":["v1","v4"],"scope":"host"}]"#,
        );
        let view = View::new(&snap);
        let led = ledger(&view);
        let b = |n: &str| led.blocked(view.vm_id(n).unwrap());
        assert_eq!(b("v2"), Some(Blocked::Pinned));
        assert_eq!(b("v1"), Some(Blocked::Together));
        assert_eq!(b("v4"), Some(Blocked::Together));
        assert_eq!(b("v3"), None);
        assert_eq!(Blocked::Pinned.as_str(), "pinned to its host by a rule");
    }

    /// After an operator's manual move the snapshot breaks a rule: it is
    /// reported; a plan may leave it (or repair it) but never add one.
    #[test]
    fn violations_are_reported_and_audited() {
        let mut snap = dc();
        snap.rules = rules(
            r#"[{"kind":"exclude","name":"drain-c","hosts":["c"]},
                {"kind":"pin","name":"v1-on-a","vms":["v1"],"hosts":["a","b"]}]"#,
        );
        let v = violations(&snap);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            (v[0].rule.as_str(), v[0].kind.as_str()),
            ("drain-c", "exclude")
        );
        assert_eq!(
            (v[0].vms.clone(), v[0].hosts.clone()),
            (vec!["v3".to_string()], vec!["c".to_string()])
        );
        let mig = |vm: &str, from: &str, to: &str| Decision {
            action: Action::Migrate {
                vm: vm.into(),
                from: from.into(),
                to: to.into(),
            },
            reason: String::new(),
            score: 0.0,
            details: Default::default(),
        };
        // Repairing, and moves that break nothing, pass.
        assert_eq!(
            audit(&snap, &[mig("v3", "c", "b"), mig("v2", "b", "a")]),
            Ok(())
        );
        assert_eq!(audit(&snap, &[mig("v2", "b", "a")]), Ok(()));
        // A move onto the drained host, or off the pinned hosts, does not.
        let e = audit(&snap, &[mig("v2", "b", "a"), mig("v2", "a", "c")]).unwrap_err();
        assert_eq!((e.index, e.broken[0].rule.as_str()), (1, "drain-c"));
        assert!(e.to_string().contains("rule \"drain-c\""), "{e}");
        let e = audit(&snap, &[mig("v1", "a", "c")]).unwrap_err();
        let broken: Vec<&str> = e.broken.iter().map(|x| x.rule.as_str()).collect();
        assert_eq!(broken, ["drain-c", "v1-on-a"]);
    }
}
