//! Shoal's own policy: one cost-benefit rule over everything the other
//! policies see separately (none of the papers has it).
//!
//! For a candidate move of VM `v` from host `x` to host `k`:
//!
//! - **benefit**: hotspot relief at `x` (CPU, memory, NIC: which of the
//!   host's hot resources the move brings back under its threshold, and by
//!   how much), plus the reduction of S-CORE's layered communication cost
//!   `ΔC = Σ_z (λ(v,z) + λ(z,v)) · (W(ℓ(x, h_z)) − W(ℓ(k, h_z)))` (external
//!   clients counted at their switch's level);
//! - **cost**: the VMPatrol model's migration traffic at the bandwidth the
//!   path can reserve (`min(constraints.migration_nic_share` of the smaller
//!   NIC, what the two NICs have free)`), weighted by the level it crosses
//!   and amortised over `horizon_s`: `bytes · W(ℓ(x, k)) / horizon_s`, in
//!   the same unit as `ΔC`. A move whose reservation would push either NIC
//!   over `link_limit` of its capacity (its VM traffic and the streams of
//!   the migrations already accepted this round included) is not
//!   made, nor one whose destination would leave its thresholds (the shared
//!   room check), nor one that does not converge.
//! - **hysteresis**: a communication move must gain more than
//!   `(1 + margin)` times its cost and cut at least `min_gain_share` of
//!   the VM's own communication cost. A VM that migrated less than
//!   `recent_intervals` (default 3) intervals ago never goes back to a host
//!   it left in that time, and its communication moves need twice the
//!   margin: oscillation (A→B→A, or two peers chasing each other) is
//!   refused, while a VM that moved towards its peers may follow them on
//!   when they move too. (`constraints.cooldown_intervals`, a blanket
//!   freeze, is off for `shoal` unless configured.)
//!
//! A round: (1) a memory-hot host first grows its swapping VM by a whole
//! step when it can ([`super::growth`]); (2) every other hotspot, most
//! overloaded first, takes the move that resolves it with the best net
//! benefit (`ΔC − cost`), else the one that relieves it most; (3) then the
//! VMs with the most remote weighted traffic move towards their peers while
//! the net benefit clears the margin; (4) VFs go to the most
//! network-intensive VMs by Sova's Algorithm 1 (VMs moved this round
//! excepted). Each accepted move is applied to the round's projected state
//! ([`Ledger`]) before the next is evaluated. At most `max_moves`
//! migrations per round.
//!
//! Cost: a hotspot evaluates its VMs × (their peers' hosts + the
//! `candidates` least-loaded hosts); the communication phase evaluates
//! `Σ_u deg(u)` destinations. No `O(V²)` step.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::constraints::{migration_cost, Ledger, NoRoom, PolicyDefaults, BYTES_PER_MB};
use super::growth::{self, GrowthTarget};
use super::physics::cumulative_weights;
use super::score::DEFAULT_WEIGHTS;
use super::sova::{Sova, SovaOptions};
use super::view::View;
use super::{
    Action, Alternative, ConstraintOptions, Decision, Details, MigrationCost, PlanError, Policy,
};
use crate::analyze::{DetectorDefaults, HotspotReport, Resource};
use crate::knowledge::snapshot::{ratio, Snapshot};

/// Shoal's defaults: two migrations per source host per round (a second
/// only for a hotspot the first leaves hot; communication moves leave a
/// host one at a time); no blanket cooldown (its own hysteresis is
/// [`ShoalOptions::recent_intervals`]).
pub const SHOAL_DEFAULTS: PolicyDefaults = PolicyDefaults {
    max_migrations_per_source_host: 2,
    cooldown_intervals: 0.0,
};

/// Options of the `shoal` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShoalOptions {
    /// Link weights `c_1..c_4` of the communication cost (S-CORE's).
    pub weights: [f64; 4],
    /// Seconds over which a migration's traffic is amortised against the
    /// communication it saves (> 0).
    pub horizon_s: f64,
    /// A communication move must gain more than `(1 + margin)` × its cost
    /// (≥ 0).
    pub margin: f64,
    /// ... and cut at least this share of the VM's own communication cost
    /// (in [0, 1)): moves that gain next to nothing are not worth the risk.
    pub min_gain_share: f64,
    /// A VM that migrated less than this many intervals ago never goes
    /// back to a host it left in that time, and its communication moves
    /// need `2 × margin` (≥ 0).
    pub recent_intervals: f64,
    /// Migrations per round at most (≥ 1; the one-per-source-host limit
    /// already bounds a round to the number of hosts).
    pub max_moves: usize,
    /// Least-loaded hosts examined per hotspot VM besides its peers' hosts
    /// (≥ 1).
    pub candidates: usize,
    /// Neither NIC of a migration may be projected above this share of its
    /// capacity with the migration's bandwidth added (in (0, 1]).
    pub link_limit: f64,
    /// A memory-hot host grows its swapping VM by `growth_step_mb` first.
    pub memory_growth: bool,
    /// Memory growth step, MB (> 0).
    pub growth_step_mb: f64,
    /// Assign VFs with Sova's Algorithm 1.
    pub vf: bool,
}

impl Default for ShoalOptions {
    fn default() -> Self {
        ShoalOptions {
            weights: DEFAULT_WEIGHTS,
            horizon_s: 3600.0,
            margin: 0.5,
            min_gain_share: 0.1,
            recent_intervals: 3.0,
            max_moves: 100_000,
            candidates: 8,
            link_limit: 0.9,
            memory_growth: true,
            growth_step_mb: 32.0,
            vf: true,
        }
    }
}

impl ShoalOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |f: &str, why: &str| Err(PlanError::invalid(&format!("shoal.{f}"), why));
        if !self.weights.iter().all(|w| w.is_finite() && *w >= 0.0) {
            return bad("weights", "must be finite and >= 0");
        }
        if !(self.horizon_s.is_finite() && self.horizon_s > 0.0) {
            return bad("horizon_s", "must be > 0");
        }
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return bad("margin", "must be >= 0");
        }
        if !(self.min_gain_share.is_finite() && (0.0..1.0).contains(&self.min_gain_share)) {
            return bad("min_gain_share", "must be in [0, 1)");
        }
        if !(self.recent_intervals.is_finite() && self.recent_intervals >= 0.0) {
            return bad("recent_intervals", "must be >= 0");
        }
        if self.max_moves == 0 {
            return bad("max_moves", "must be >= 1");
        }
        if self.candidates == 0 {
            return bad("candidates", "must be >= 1");
        }
        if !(self.link_limit.is_finite() && self.link_limit > 0.0 && self.link_limit <= 1.0) {
            return bad("link_limit", "must be in (0, 1]");
        }
        if !(self.growth_step_mb.is_finite() && self.growth_step_mb > 0.0) {
            return bad("growth_step_mb", "must be > 0");
        }
        Ok(())
    }
}

/// The unified cost-benefit policy.
pub struct Shoal {
    constraints: ConstraintOptions,
    opts: ShoalOptions,
    sova: Sova,
}

impl Shoal {
    /// A `shoal` policy.
    pub fn new(constraints: ConstraintOptions, opts: ShoalOptions) -> Self {
        let sova = Sova::new(constraints.clone(), SovaOptions::default());
        Shoal {
            constraints,
            opts,
            sova,
        }
    }
}

/// One evaluated move.
#[derive(Debug, Clone)]
struct Move {
    v: usize,
    k: usize,
    /// Reduction of the communication cost.
    gain: f64,
    /// Amortised, level-weighted migration traffic.
    cost: f64,
    migration: MigrationCost,
    /// Hot resources brought under their threshold.
    resolved: usize,
    /// Hot resources at the source.
    hot: usize,
    /// Progress towards the thresholds, summed over hot resources (each ≤ 1).
    relief: f64,
}

impl Move {
    fn net(&self) -> f64 {
        self.gain - self.cost
    }
}

/// Planning context of one round.
struct Round<'r, 'v, 'a> {
    view: &'r View<'a>,
    cum: [f64; 5],
    opts: &'r ShoalOptions,
    led: Ledger<'v, 'a>,
    /// Per VM: the hosts it left less than `recent_intervals` ago (empty:
    /// it did not migrate recently).
    left: &'r [Vec<usize>],
    /// Per host: bytes/s of the migration streams accepted this round
    /// (out, in), so that two migrations into one NIC are not each
    /// planned as if alone.
    streams: Vec<[f64; 2]>,
    /// Per host: its NIC is hot (Analyze's report).
    nic_hot: &'r [bool],
    /// Per tier (racks, pods) and group: bytes/s its uplinks (the ToRs',
    /// the aggregation switches') have free under the link limit (measured
    /// use subtracted; infinite when the topology has none).
    uplink_room: &'r [Vec<f64>; TIERS],
    /// Per tier and group: bytes/s of this round's streams over its
    /// uplinks (up, down).
    uplink_streams: [Vec<[f64; 2]>; TIERS],
}

impl Round<'_, '_, '_> {
    /// VM `v`'s share of the overall communication cost if it were on
    /// host `h`: both directions of each of its pairs (VMs and external
    /// clients) at their level.
    fn vm_cost(&self, v: usize, h: usize) -> f64 {
        let w = |l: usize| self.cum.get(l).copied().unwrap_or(0.0);
        let vms: f64 = self
            .view
            .peers(v)
            .iter()
            .map(|p| p.total() * w(self.view.level(h, self.led.host_of(p.vm))))
            .sum();
        let externals: f64 = self
            .view
            .ext_peers(v)
            .iter()
            .map(|p| (p.out + p.inn) * w(self.view.ext_level(h, p.ext)))
            .sum();
        vms + externals
    }

    /// The change of the overall communication cost if `v` moved to `k`
    /// (positive: it falls).
    fn gain(&self, v: usize, k: usize) -> f64 {
        self.vm_cost(v, self.led.host_of(v)) - self.vm_cost(v, k)
    }

    /// The VMPatrol cost of moving `v` to `k` at the bandwidth the two
    /// NICs can give, and whether the projected NIC loads stay under the
    /// link limit.
    /// A hotspot move (`urgent`) may share a NIC with another stream of the
    /// round at a reduced rate.
    fn migration(&self, v: usize, k: usize, urgent: bool) -> Result<MigrationCost, NoRoom> {
        let x = self.led.host_of(v);
        let view = self.view;
        if view.hosts.get(x).is_none() || view.hosts.get(k).is_none() {
            return Err(NoRoom::Slots);
        }
        let (free, planned) = self.bandwidth(x, k);
        let share = self.led.opts.nic_share;
        let l = planned.min(free);
        if l <= 0.0 || share <= 0.0 || (!urgent && self.nic_busy(x, k)) {
            return Err(NoRoom::Net);
        }
        migration_cost(
            self.led.vm_mem.get(v).copied().unwrap_or(0.0),
            view.vms.get(v).map_or(0.0, |m| m.dirty_rate_mbps),
            l * 8.0 / share,
            &self.led.opts,
        )
        .map_err(NoRoom::Model)
    }

    /// Bytes/s a migration from `x` to `k` has free under the link limit on
    /// both NICs (VM traffic and this round's streams counted), and its
    /// planned rate (`nic_share` of the smaller NIC).
    fn bandwidth(&self, x: usize, k: usize) -> (f64, f64) {
        let (Some(hx), Some(hk)) = (self.view.hosts.get(x), self.view.hosts.get(k)) else {
            return (0.0, 0.0);
        };
        let stream = |h: usize, i: usize| self.streams.get(h).map_or(0.0, |s| s[i]);
        let tx = self.led.tx.get(x).copied().unwrap_or(0.0) + stream(x, 0);
        let rx = self.led.rx.get(k).copied().unwrap_or(0.0) + stream(k, 1);
        // A NIC-hot source is over the limit already: its migration goes at
        // the full planned rate, the shortest burst that relieves it.
        let fx = if self.nic_hot.get(x).copied().unwrap_or(false) {
            f64::INFINITY
        } else {
            self.opts.link_limit * hx.nic_bytes_per_s() - tx
        };
        let mut free = fx.min(self.opts.link_limit * hk.nic_bytes_per_s() - rx);
        for t in 0..TIERS {
            if let Some((a, b)) = self.groups(t, x, k) {
                free = free
                    .min(self.uplink_free(t, a, 0))
                    .min(self.uplink_free(t, b, 1));
            }
        }
        let planned = self.led.opts.nic_share * hx.nic_bps.min(hk.nic_bps) / 8.0;
        (free, planned)
    }

    /// The groups of tier `t` (0 racks, 1 pods) of `x` and `k` when a
    /// stream between them crosses that tier's uplinks.
    fn groups(&self, t: usize, x: usize, k: usize) -> Option<(usize, usize)> {
        let of = if t == 0 {
            &self.view.host_rack
        } else {
            &self.view.host_pod
        };
        let g = |h: usize| of.get(h).map(|&r| r as usize);
        match (g(x), g(k)) {
            (Some(a), Some(b)) if a != b => Some((a, b)),
            _ => None,
        }
    }

    /// Bytes/s group `g` of tier `t` has free on its uplinks under the link
    /// limit in direction `i` (0 up, 1 down), this round's streams counted.
    fn uplink_free(&self, t: usize, g: usize, i: usize) -> f64 {
        let room = self.uplink_room.get(t).and_then(|v| v.get(g)).copied();
        let used = self
            .uplink_streams
            .get(t)
            .and_then(|v| v.get(g))
            .map_or(0.0, |s| s[i]);
        room.unwrap_or(f64::INFINITY) - used
    }

    /// A NIC or a rack's uplinks already carrying a migration stream this
    /// round take another only at its full planned rate: never two
    /// slowed-down streams at once.
    fn nic_busy(&self, x: usize, k: usize) -> bool {
        let stream = |h: usize, i: usize| self.streams.get(h).map_or(0.0, |s| s[i]);
        let uplink = |t: usize, g: usize, i: usize| {
            self.uplink_streams
                .get(t)
                .and_then(|v| v.get(g))
                .map_or(0.0, |s| s[i])
        };
        let (free, planned) = self.bandwidth(x, k);
        let shared = stream(x, 0) > 0.0
            || stream(k, 1) > 0.0
            || (0..TIERS).any(|t| {
                self.groups(t, x, k)
                    .is_some_and(|(a, b)| uplink(t, a, 0) > 0.0 || uplink(t, b, 1) > 0.0)
            });
        shared && free < planned
    }

    /// Level-weighted migration traffic amortised over the horizon.
    fn cost(&self, v: usize, k: usize, m: &MigrationCost) -> f64 {
        let x = self.led.host_of(v);
        let w = self.cum.get(self.view.level(x, k)).copied().unwrap_or(0.0);
        m.bytes * w / self.opts.horizon_s
    }

    /// Utilisation of host `h` per resource, and its thresholds.
    fn util(&self, h: usize) -> [(Resource, f64, f64); 3] {
        let t = &self.led.thresholds;
        [
            (Resource::Cpu, self.led.cpu_util(h), t.cpu),
            (Resource::Mem, self.led.mem_util(h), t.mem),
            (Resource::Net, self.led.net_util(h), t.net),
        ]
    }

    /// Evaluates `v` leaving its hot host towards `k`: relief at the
    /// source, room at `k`, the migration and its cost.
    fn evaluate(&self, v: usize, k: usize, hot: &[Resource]) -> Result<Move, NoRoom> {
        self.led.room(v, k)?;
        let m = self.migration(v, k, true)?;
        let x = self.led.host_of(v);
        let before = self.util(x);
        let mut probe = self.led.clone();
        probe.apply_move(v, k);
        let after = Round {
            view: self.view,
            cum: self.cum,
            opts: self.opts,
            led: probe,
            left: self.left,
            streams: Vec::new(),
            nic_hot: self.nic_hot,
            uplink_room: self.uplink_room,
            uplink_streams: [Vec::new(), Vec::new()],
        }
        .util(x);
        let (mut resolved, mut relief) = (0, 0.0);
        for ((r, u0, t), (_, u1, _)) in before.iter().zip(after.iter()) {
            if !hot.contains(r) {
                continue;
            }
            // Memory hot by swapping: only moving the swapping VM relieves it.
            let swap_only = *r == Resource::Mem && *u0 <= *t;
            if swap_only {
                let s = self.view.vm_sample(v);
                if s.swap_out_pps > 0.0 {
                    resolved += 1;
                    relief += 1.0;
                }
                continue;
            }
            if *u1 <= *t {
                resolved += 1;
            }
            relief += ratio(u0 - u1, (u0 - t).max(1e-9)).min(1.0);
        }
        Ok(Move {
            v,
            k,
            gain: self.gain(v, k),
            cost: self.cost(v, k, &m),
            migration: m,
            resolved,
            hot: hot.len(),
            relief,
        })
    }

    /// The hosts of `v`'s peers, then the `n` least-loaded hosts.
    fn destinations(&self, v: usize, n: usize, by_load: &[usize]) -> Vec<usize> {
        let x = self.led.host_of(v);
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut peers: Vec<(f64, usize)> = self
            .view
            .peers(v)
            .iter()
            .map(|p| (p.total(), self.led.host_of(p.vm)))
            .collect();
        // External clients: the hosts nearest to them.
        for p in self.view.ext_peers(v) {
            for &h in self.view.ext_nearest_hosts(p.ext) {
                peers.push((p.out + p.inn, h));
            }
        }
        peers.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, h) in peers {
            if h != x && seen.insert(h) {
                out.push(h);
            }
        }
        for &h in by_load.iter().filter(|&&h| h != x).take(n) {
            if seen.insert(h) {
                out.push(h);
            }
        }
        out
    }

    /// Whether `v` migrated less than `recent_intervals` ago.
    fn recent(&self, v: usize) -> bool {
        self.left.get(v).is_some_and(|l| !l.is_empty())
    }

    /// Whether moving `v` to `k` would take it back to a host it left less
    /// than `recent_intervals` ago.
    fn went_back(&self, v: usize, k: usize) -> bool {
        self.left.get(v).is_some_and(|l| l.contains(&k))
    }

    /// Hosts by their largest utilisation relative to its threshold,
    /// least loaded first.
    fn by_load(&self) -> Vec<usize> {
        let mut hosts: Vec<(f64, usize)> = (0..self.view.host_count())
            .map(|h| {
                let worst = self
                    .util(h)
                    .iter()
                    .map(|(_, u, t)| ratio(*u, *t))
                    .fold(0.0, f64::max);
                (worst, h)
            })
            .collect();
        hosts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        hosts.into_iter().map(|(_, h)| h).collect()
    }

    /// Records `m` and returns its decision.
    fn accept(&mut self, m: &Move, reason: String, alternatives: Vec<Alternative>) -> Decision {
        let x = self.led.host_of(m.v);
        self.led.apply_move(m.v, m.k);
        let rate = m.migration.bandwidth_mbps * BYTES_PER_MB;
        if let Some(s) = self.streams.get_mut(x) {
            s[0] += rate;
        }
        if let Some(s) = self.streams.get_mut(m.k) {
            s[1] += rate;
        }
        for t in 0..TIERS {
            if let Some((a, b)) = self.groups(t, x, m.k) {
                let v = self.uplink_streams.get_mut(t);
                if let Some(s) = v.and_then(|v| v.get_mut(a)) {
                    s[0] += rate;
                }
                let v = self.uplink_streams.get_mut(t);
                if let Some(s) = v.and_then(|v| v.get_mut(b)) {
                    s[1] += rate;
                }
            }
        }
        let mut details = Details::default()
            .metric("comm_gain", m.gain)
            .metric("migration_cost", m.cost)
            .metric("net_benefit", m.net())
            .metric("hot_resources", m.hot as f64)
            .metric("resolved", m.resolved as f64)
            .metric("relief", m.relief)
            .metric("migration_bytes", m.migration.bytes)
            .metric("migration_time_s", m.migration.time_s);
        details.migration = Some(m.migration);
        for a in alternatives {
            details.push_alternative(a);
        }
        Decision {
            action: Action::Migrate {
                vm: self.view.vm_name(m.v).into(),
                from: self.view.host_name(x).into(),
                to: self.view.host_name(m.k).into(),
            },
            reason,
            score: m.net(),
            details,
        }
    }
}

/// Uplink tiers whose streams a plan projects: racks (ToR uplinks) and
/// pods (aggregation switches' uplinks).
const TIERS: usize = 2;

/// Per tier (the view's rack, pod index): bytes/s the group's uplinks (a
/// ToR's, the aggregation switches' above a pod, as the topology's
/// switches list them) have free under `limit` of their capacity, their
/// measured use subtracted (summed over the uplinks: traffic spreads over
/// them); infinite for a group whose uplinks the topology does not list.
fn uplink_room(view: &View, snap: &Snapshot, limit: f64) -> [Vec<f64>; TIERS] {
    // Free bytes/s of every link, by its two ends in either order (the
    // live topology names a link's ends in discovery order, not by tier).
    let mut by_pair: std::collections::HashMap<(&str, &str), f64> = Default::default();
    for l in &snap.topology.links {
        let free = (limit * l.capacity_bps - l.used_bps).max(0.0) / 8.0;
        *by_pair.entry((l.a.as_str(), l.b.as_str())).or_default() += free;
        *by_pair.entry((l.b.as_str(), l.a.as_str())).or_default() += free;
    }
    // A switch's uplinks that the topology lists, summed (None: none).
    let up_free = |sw: &str| -> Option<f64> {
        let info = snap.topology.switches.get(sw)?;
        let free: Vec<f64> = info
            .uplinks
            .iter()
            .filter_map(|u| by_pair.get(&(sw, u.as_str())).copied())
            .collect();
        (!free.is_empty()).then(|| free.iter().sum())
    };
    let count = |of: &[u32]| of.iter().map(|&r| r as usize + 1).max().unwrap_or(0);
    let mut racks = vec![f64::INFINITY; count(&view.host_rack)];
    // The aggregation switches above each pod's ToRs.
    let mut pod_aggs: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); count(&view.host_pod)];
    for (h, host) in view.hosts.iter().enumerate() {
        let tor = host.location.rack.as_str();
        if let (Some(free), Some(x)) = (
            up_free(tor),
            view.host_rack
                .get(h)
                .and_then(|&r| racks.get_mut(r as usize)),
        ) {
            *x = free;
        }
        if let (Some(sw), Some(aggs)) = (
            snap.topology.switches.get(tor),
            view.host_pod
                .get(h)
                .and_then(|&p| pod_aggs.get_mut(p as usize)),
        ) {
            aggs.extend(sw.uplinks.iter().map(String::as_str));
        }
    }
    let pods = pod_aggs
        .iter()
        .map(|aggs| {
            let free: Vec<f64> = aggs.iter().filter_map(|a| up_free(a)).collect();
            if free.is_empty() {
                f64::INFINITY
            } else {
                free.iter().sum()
            }
        })
        .collect();
    [racks, pods]
}

/// Per VM, the hosts it left by a migration that ended (or is still
/// running) less than `intervals` monitoring intervals ago.
fn recently_left(view: &View, snap: &Snapshot, intervals: f64) -> Vec<Vec<usize>> {
    let mut left = vec![Vec::new(); view.vm_count()];
    let window = intervals * snap.interval_s;
    for m in &snap.migrations {
        let end = m.ended_s.unwrap_or(snap.now_s);
        if snap.now_s - end >= window {
            continue;
        }
        if let (Some(v), Some(h)) = (view.vm_id(&m.vm), view.host_id(&m.from)) {
            if let Some(l) = left.get_mut(v) {
                if !l.contains(&h) {
                    l.push(h);
                }
            }
        }
    }
    left
}

/// Ranks hotspot moves: resolving more hot resources first, then more
/// relief, then the larger net benefit, then fewer bytes, then indices.
fn hotspot_order(a: &Move, b: &Move) -> std::cmp::Ordering {
    b.resolved
        .cmp(&a.resolved)
        .then(b.relief.total_cmp(&a.relief))
        .then(b.net().total_cmp(&a.net()))
        .then(a.migration.bytes.total_cmp(&b.migration.bytes))
        .then(a.v.cmp(&b.v))
        .then(a.k.cmp(&b.k))
}

fn alternative(view: &View, m: &Move, why: &str) -> Alternative {
    Alternative {
        vm: Some(view.vm_name(m.v).into()),
        host: Some(view.host_name(m.k).into()),
        score: Some(m.net()),
        rejected: why.into(),
    }
}

impl Policy for Shoal {
    fn name(&self) -> &'static str {
        "shoal"
    }

    /// Memory overload is swap activity; the network observation is the
    /// physical NIC (IDC traffic costs no NIC bandwidth).
    fn detector_defaults(&self) -> DetectorDefaults {
        DetectorDefaults::SWAP_AND_NIC
    }

    fn plan(&mut self, snap: &Snapshot, hot: &HotspotReport) -> Vec<Decision> {
        let view = View::new(snap);
        let led = Ledger::new(
            &view,
            hot.thresholds,
            self.constraints.resolve(SHOAL_DEFAULTS),
        );
        let left = recently_left(&view, snap, self.opts.recent_intervals);
        let uplink_room = uplink_room(&view, snap, self.opts.link_limit);
        let nic_hot: Vec<bool> = (0..view.host_count())
            .map(|h| hot.is_hot(view.host_name(h), Resource::Net))
            .collect();
        let mut r = Round {
            view: &view,
            cum: cumulative_weights(&self.opts.weights),
            opts: &self.opts,
            led,
            left: &left,
            streams: vec![[0.0; 2]; view.host_count()],
            nic_hot: &nic_hot,
            uplink_room: &uplink_room,
            uplink_streams: [
                vec![[0.0; 2]; uplink_room[0].len()],
                vec![[0.0; 2]; uplink_room[1].len()],
            ],
        };
        let host_vms = view.vms_by_host();
        let mut out = Vec::new();
        let mut moves = 0usize;

        // Hot hosts, most overloaded first.
        let mut hot_hosts: Vec<(f64, usize, Vec<Resource>)> = hot
            .hot
            .iter()
            .filter_map(|(id, hh)| {
                let h = view.host_id(id)?;
                let res: Vec<Resource> = [Resource::Cpu, Resource::Mem, Resource::Net]
                    .into_iter()
                    .filter(|x| hh.is_hot(*x))
                    .collect();
                let over = r
                    .util(h)
                    .iter()
                    .map(|(_, u, t)| (u - t).max(0.0) / t.max(1e-9))
                    .sum::<f64>();
                Some((over, h, res))
            })
            .collect();
        hot_hosts.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));

        for (_, h, mut res) in hot_hosts {
            let vms = host_vms.get(h).cloned().unwrap_or_default();
            // (1) Memory first: grow the swapping VM by a whole step.
            if res.contains(&Resource::Mem) && self.opts.memory_growth {
                if let Some(d) = growth::grow(
                    &view,
                    &mut r.led,
                    h,
                    &vms,
                    self.opts.growth_step_mb,
                    GrowthTarget::Swapping,
                    "shoal",
                ) {
                    out.push(d);
                    res.retain(|x| *x != Resource::Mem);
                }
            }
            // (2) The move that resolves the hotspot with the best net
            // benefit; a second one (up to the per-source limit) when the
            // first leaves it hot.
            while !res.is_empty() && moves < self.opts.max_moves && !r.led.source_limit_reached(h) {
                let by_load = r.by_load();
                let mut cands: Vec<Move> = Vec::new();
                for &v in &vms {
                    if r.led.blocked(v).is_some() || r.led.host_of(v) != h {
                        continue;
                    }
                    for k in r.destinations(v, self.opts.candidates, &by_load) {
                        if r.went_back(v, k) {
                            continue;
                        }
                        if let Ok(m) = r.evaluate(v, k, &res) {
                            if m.relief > 0.0 {
                                cands.push(m);
                            }
                        }
                    }
                }
                cands.sort_by(hotspot_order);
                let Some(best) = cands.first().cloned() else {
                    break;
                };
                let alts = cands
                    .iter()
                    .skip(1)
                    .take(super::MAX_ALTERNATIVES)
                    .map(|m| alternative(&view, m, "less relief or lower net benefit"))
                    .collect();
                let what = res.iter().map(|x| x.as_str()).collect::<Vec<_>>().join("+");
                let reason = format!(
                    "shoal: {what} hotspot; resolves {}/{} with net benefit {:.3e} (communication {:+.3e}, migration {:.3e})",
                    best.resolved,
                    best.hot,
                    best.net(),
                    best.gain,
                    best.cost
                );
                out.push(r.accept(&best, reason, alts));
                moves += 1;
                // What is still over its threshold after the move (a
                // swapping VM's host counts as relieved once it left).
                let after = r.util(h);
                res.retain(|x| after.iter().any(|(rr, u, t)| rr == x && u > t));
            }
        }

        // (3) Communication: the VMs with the most remote weighted traffic
        // move towards their peers while the benefit clears the margin.
        let mut order: Vec<(f64, usize)> = (0..view.vm_count())
            .map(|u| (r.vm_cost(u, r.led.host_of(u)), u))
            .filter(|(w, _)| *w > 0.0)
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        // VMs a peer has just moved next to stay this round: the group
        // gathers around them instead of chasing its own members.
        let mut anchored = vec![false; view.vm_count()];
        for (_, u) in order {
            if moves >= self.opts.max_moves {
                break;
            }
            if r.led.blocked(u).is_some()
                || r.led.moved.get(u).copied().unwrap_or(false)
                || anchored.get(u).copied().unwrap_or(false)
            {
                continue;
            }
            let x = r.led.host_of(u);
            if r.led.moves_from.get(x).copied().unwrap_or(0) > 0 {
                continue;
            }
            let mut cands: Vec<Move> = Vec::new();
            // The best gain among destinations whose NIC is busy with
            // another stream this round: if it is as good as every free one, `u`
            // waits a round instead of settling for second best (which
            // would split a gathering group).
            let mut waiting = f64::NEG_INFINITY;
            for k in r.destinations(u, 0, &[]) {
                if hot.is_hotspot(view.host_name(k)) || r.went_back(u, k) {
                    continue;
                }
                let Ok(()) = r.led.room(u, k) else { continue };
                if r.nic_busy(x, k) {
                    waiting = waiting.max(r.gain(u, k));
                    continue;
                }
                let Ok(m) = r.migration(u, k, false) else {
                    continue;
                };
                let gain = r.gain(u, k);
                let cost = r.cost(u, k, &m);
                cands.push(Move {
                    v: u,
                    k,
                    gain,
                    cost,
                    migration: m,
                    resolved: 0,
                    hot: 0,
                    relief: 0.0,
                });
            }
            // Equal benefit: the host with more of its peers, where the
            // rest of the group is likelier to gather.
            let peers_on = |k: usize| {
                view.peers(u)
                    .iter()
                    .filter(|p| r.led.host_of(p.vm) == k)
                    .count()
            };
            cands.sort_by(|a, b| {
                b.net()
                    .total_cmp(&a.net())
                    .then(peers_on(b.k).cmp(&peers_on(a.k)))
                    .then(a.k.cmp(&b.k))
            });
            let Some(best) = cands.first().cloned() else {
                continue;
            };
            if waiting >= best.gain {
                continue;
            }
            let min_gain = self.opts.min_gain_share * r.vm_cost(u, x);
            let margin = if r.recent(u) {
                2.0 * self.opts.margin
            } else {
                self.opts.margin
            };
            if !(best.gain > (1.0 + margin) * best.cost && best.gain >= min_gain) {
                continue;
            }
            let alts = cands
                .iter()
                .skip(1)
                .take(super::MAX_ALTERNATIVES)
                .map(|m| alternative(&view, m, "lower net benefit"))
                .collect();
            let reason = format!(
                "shoal: communication cost falls by {:.3e} for a migration cost of {:.3e} (margin {margin})",
                best.gain, best.cost
            );
            for p in view.peers(u) {
                if r.led.host_of(p.vm) == best.k {
                    if let Some(a) = anchored.get_mut(p.vm) {
                        *a = true;
                    }
                }
            }
            out.push(r.accept(&best, reason, alts));
            moves += 1;
        }

        // (4) VFs to the most network-intensive VMs (Sova's Algorithm 1),
        // except VMs that move this round.
        if self.opts.vf {
            let calm = HotspotReport {
                thresholds: hot.thresholds,
                hot: Default::default(),
                excluded: hot.excluded.clone(),
            };
            let moved: BTreeSet<&str> = (0..view.vm_count())
                .filter(|&v| r.led.moved.get(v).copied().unwrap_or(false))
                .map(|v| view.vm_name(v))
                .collect();
            out.extend(self.sova.plan(snap, &calm).into_iter().filter(|d| {
                matches!(d.action, Action::AttachVf { .. } | Action::DetachVf { .. })
                    && !moved.contains(d.action.vm())
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::snapshot::MigrationRecord;
    use crate::plan::testutil::{migrations, Dc};

    fn shoal() -> Shoal {
        Shoal::new(ConstraintOptions::default(), ShoalOptions::default())
    }

    /// Two pods; `a` (h1) and `b` (h3) exchange 50 MB/s across the core.
    fn chatty() -> Dc {
        Dc::new()
            .host("h1", "r1", "p1", 8.0, 16384.0)
            .host("h2", "r1", "p1", 8.0, 16384.0)
            .host("h3", "r2", "p2", 8.0, 16384.0)
            .host("h4", "r2", "p2", 8.0, 16384.0)
            .vm("a", "h1", 1.0, 1024.0)
            .vm("b", "h3", 1.0, 1024.0)
            .vm("c", "h2", 1.0, 1024.0)
            .talk("a", "b", 50e6)
    }

    /// S-CORE's situation: chatty VMs across the core come together when
    /// the communication saved pays for the migration.
    #[test]
    fn chatty_peers_come_together() {
        let (snap, rep) = chatty().build(5);
        let d = shoal().plan(&snap, &rep);
        let m = migrations(&d);
        assert_eq!(m.len(), 1, "{d:?}");
        let (vm, _, to) = &m[0];
        assert!(
            (vm == "a" && to == "h3") || (vm == "b" && to == "h1"),
            "{m:?}"
        );
        let det = &d[0].details.metrics;
        assert!(det["comm_gain"] > 1.5 * det["migration_cost"], "{det:?}");
    }

    /// The same pair at 5 kB/s: the communication saved does not pay for
    /// moving 1 GiB across the core; S-CORE with c_m = 0 would move it.
    #[test]
    fn a_move_that_does_not_pay_is_not_made() {
        let (snap, rep) = chatty().talk("a", "b", 5e3).build(5);
        let d = shoal().plan(&snap, &rep);
        assert!(migrations(&d).is_empty(), "{d:?}");
    }

    /// Sandpiper's / IDC's situation: a CPU hotspot (h1 at 7.5 of 8
    /// cores). The move that resolves it and keeps `big` next to its peer
    /// wins over the one that breaks the pair: `small` (1.5 cores, no
    /// traffic) leaves, not `big`, whose peer `p` is on h1 too.
    #[test]
    fn a_hotspot_is_resolved_without_breaking_a_chatty_pair() {
        let (snap, rep) = Dc::new()
            .host("h1", "r1", "p1", 8.0, 16384.0)
            .host("h2", "r1", "p1", 8.0, 16384.0)
            .host("h3", "r2", "p2", 8.0, 16384.0)
            .vm("big", "h1", 4.0, 2048.0)
            .vm("p", "h1", 2.0, 1024.0)
            .vm("small", "h1", 1.5, 512.0)
            .talk("big", "p", 80e6)
            .build(5);
        assert!(rep.is_hotspot("h1"), "{rep:?}");
        let d = shoal().plan(&snap, &rep);
        let m = migrations(&d);
        assert_eq!(m.len(), 1, "{d:?}");
        assert_eq!(m[0].0, "small", "{d:?}");
        assert_eq!(m[0].1, "h1");
        assert!(d[0].reason.contains("cpu hotspot"), "{}", d[0].reason);
    }

    /// A destination with no room, or a NIC the migration would push over
    /// the link limit, is never chosen.
    #[test]
    fn no_destination_over_its_limits() {
        let (snap, rep) = chatty()
            .with_host("h3", |h| h.nic_bps = 1e9)
            .vm("hog", "h3", 7.5, 1024.0)
            .vm("hog2", "h4", 7.5, 1024.0)
            .build(5);
        let d = shoal().plan(&snap, &rep);
        for (vm, _, to) in migrations(&d) {
            assert!(!(vm == "a" && (to == "h3" || to == "h4")), "{d:?}");
        }
    }

    /// Two hot hosts and one cold 10 Gbit/s destination: the first
    /// migration's stream (half the NIC) leaves no room for a second at its
    /// full rate under the 90 % link limit, so the second hotspot's VM goes
    /// to the other cold host.
    #[test]
    fn two_streams_never_overfill_one_nic() {
        // h3 stays the least loaded host after the first arrival (2 of 8
        // cores against h4's 3): only the NIC rule keeps the second away.
        let (snap, rep) = Dc::new()
            .host("h1", "r1", "p1", 8.0, 16384.0)
            .host("h2", "r1", "p1", 8.0, 16384.0)
            .host("h3", "r2", "p2", 8.0, 16384.0)
            .host("h4", "r2", "p2", 8.0, 16384.0)
            .vm("a1", "h1", 2.0, 2048.0)
            .vm("a2", "h1", 5.0, 2048.0)
            .vm("b1", "h2", 2.0, 2048.0)
            .vm("b2", "h2", 5.0, 2048.0)
            .vm("z", "h4", 3.0, 512.0)
            .build(5);
        assert!(rep.is_hotspot("h1") && rep.is_hotspot("h2"), "{rep:?}");
        let d = shoal().plan(&snap, &rep);
        let m = migrations(&d);
        assert_eq!(m.len(), 2, "{d:?}");
        assert_ne!(m[0].2, m[1].2, "{m:?}");
    }

    /// Two chatty pairs across racks; r2's ToR uplink (10 Gbit/s, 3 in
    /// use) has room under the 90 % limit for one 5 Gbit/s stream each
    /// way: the second pair does not stream over it the same way; its
    /// other member comes the other way instead.
    #[test]
    fn streams_never_overfill_a_racks_uplinks() {
        let (mut snap, rep) = Dc::new()
            .host("h1", "r1", "p1", 8.0, 16384.0)
            .host("h2", "r1", "p1", 8.0, 16384.0)
            .host("h3", "r2", "p1", 8.0, 16384.0)
            .host("h4", "r2", "p1", 8.0, 16384.0)
            .vm("a", "h1", 1.0, 1024.0)
            .vm("c", "h2", 1.0, 1024.0)
            .vm("b", "h3", 1.0, 1024.0)
            .vm("d", "h4", 1.0, 1024.0)
            .talk("a", "b", 50e6)
            .talk("c", "d", 50e6)
            .build(5);
        // Only r2's uplink is tight, and it is named the other way round,
        // as live discovery may name it.
        for (a, b, cap) in [("r1", "p1", 100e9), ("p1", "r2", 10e9)] {
            snap.topology
                .links
                .push(crate::knowledge::snapshot::LinkInfo {
                    a: a.into(),
                    b: b.into(),
                    capacity_bps: cap,
                    used_bps: 3e9,
                });
        }
        for r in ["r1", "r2"] {
            snap.topology.switches.insert(
                r.into(),
                crate::knowledge::snapshot::SwitchInfo {
                    level: crate::knowledge::snapshot::SwitchLevel::Tor,
                    uplinks: vec!["p1".into()],
                },
            );
        }
        let d = shoal().plan(&snap, &rep);
        let m = migrations(&d);
        assert_eq!(m.len(), 2, "{d:?}");
        let rack = |h: &str| if h == "h1" || h == "h2" { "r1" } else { "r2" };
        assert_ne!(
            (rack(&m[0].1), rack(&m[0].2)),
            (rack(&m[1].1), rack(&m[1].2)),
            "{m:?}"
        );
    }

    /// Hysteresis: two peers that have just chased each other (a left h3
    /// for h1 while b left h1 for h3) never go back to the host they left;
    /// once the window has passed they may.
    #[test]
    fn peers_that_just_swapped_do_not_chase_back() {
        let (mut snap, rep) = chatty().build(5);
        for (vm, from, to) in [("a", "h3", "h1"), ("b", "h1", "h3")] {
            snap.migrations.push(MigrationRecord {
                vm: vm.into(),
                from: from.into(),
                to: to.into(),
                started_s: snap.now_s - 15.0,
                ended_s: Some(snap.now_s - 10.0),
            });
        }
        let d = shoal().plan(&snap, &rep);
        assert!(migrations(&d).is_empty(), "{d:?}");
        // Three intervals later the move is allowed again.
        snap.now_s += 3.0 * snap.interval_s;
        assert_eq!(migrations(&shoal().plan(&snap, &rep)).len(), 1);
    }

    /// A VM that moved towards one peer follows the group on when it
    /// gathers elsewhere (not back to where it came from): no blanket
    /// freeze, but a doubled margin.
    #[test]
    fn a_recent_mover_may_follow_its_peers() {
        let (mut snap, rep) = chatty().build(5);
        snap.migrations.push(MigrationRecord {
            vm: "a".into(),
            from: "h2".into(),
            to: "h1".into(),
            started_s: snap.now_s - 15.0,
            ended_s: Some(snap.now_s - 10.0),
        });
        let d = shoal().plan(&snap, &rep);
        let m = migrations(&d);
        assert_eq!(m.len(), 1, "{d:?}");
        assert!(d[0].reason.contains("margin 1"), "{}", d[0].reason);
    }

    /// A VM whose traffic goes to an external client at another pod's ToR
    /// moves under that ToR; the client is never a decision's subject.
    #[test]
    fn moves_next_to_an_external_client() {
        let (mut snap, _) = chatty().talk("a", "b", 0.0).build(5);
        snap.externals.insert(
            "c1".into(),
            crate::knowledge::snapshot::ExternalEndpoint {
                switch: "r2".into(),
                ipv4: None,
                location: crate::knowledge::snapshot::ExternalLocation {
                    rack: Some("r2".into()),
                    pod: Some("p2".into()),
                    cluster: "c0".into(),
                },
            },
        );
        snap.traffic
            .entry("a".into())
            .or_default()
            .insert("c1".into(), 50e6);
        snap.traffic
            .entry("c1".into())
            .or_default()
            .insert("a".into(), 50e6);
        let rep = crate::analyze::detect(&snap, &crate::analyze::HotspotConfig::default());
        let d = shoal().plan(&snap, &rep);
        let m = migrations(&d);
        assert_eq!(m.len(), 1, "{d:?}");
        assert_eq!(m[0].0, "a");
        assert!(m[0].2 == "h3" || m[0].2 == "h4", "{m:?}");
    }

    #[test]
    fn options_are_checked() {
        let mut o = ShoalOptions::default();
        assert!(o.validate().is_ok());
        o.link_limit = 1.5;
        let e = o.validate().unwrap_err();
        assert!(e.to_string().starts_with("shoal.link_limit"), "{e}");
        let o = ShoalOptions {
            max_moves: 0,
            ..Default::default()
        };
        assert!(o.validate().is_err());
    }
}
