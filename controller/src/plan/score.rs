//! S-CORE: communication-cost reduction by migration.
//!
//! Levels: 0 same host, 1 same rack, 2 same pod, 3 same cluster, 4 beyond.
//! With link weights `c_1..c_4` (default `e^0, e^1, e^3, e^5`) and
//! `W(ℓ) = Σ_{i≤ℓ} c_i`, the overall cost is
//! `C = Σ_u Σ_v λ(u,v)·W(ℓ(u,v))`.
//!
//! A VM `u` on host `x` evaluates the hosts of its neighbouring VMs, in
//! descending order of each neighbour's own pair cost
//! `(λ(u,z) + λ(z,u))·W(ℓ(x, h_z))`, as destinations `x̂` (a host met twice
//! is evaluated once). Its reduction is
//! `Σ_z (λ(u,z) + λ(z,u)) · (W(ℓ(x, h_z)) − W(ℓ(x̂, h_z)))`, the exact change
//! of `C` (equal to the published `2·Σ λ(z,u)·Δcost` when traffic is
//! symmetric). It migrates when the reduction exceeds `c_m` and `x̂` has
//! capacity: by default, as published, a free VM slot and the RAM
//! ([`Capacity::SlotsRam`]; a migration that cannot converge is refused
//! too, as it could never finish); the shared room check (CPU, memory and
//! NIC thresholds) is [`Capacity::Shared`].
//! `first-fit` (the published behaviour, default) takes the first candidate
//! with capacity and migrates there if the cost falls by more than `c_m`,
//! else not at all; `best` takes the largest reduction among all candidates
//! (Shoal's option). `c_m = cm + cm_fraction · C`, `C` the overall cost at
//! the start of the iteration (the paper's Fig. 2c gives `c_m` as 10 % and
//! 20 % of it). With `cm_model_horizon_s` (Shoal's own), `c_m` also
//! includes the VMPatrol migration traffic weighted by the path level and
//! amortised over that horizon: `c_m + bytes · W(ℓ(x, x̂)) / horizon`.
//!
//! One [`Policy::plan`] call is one token iteration: every VM holds the
//! token once, in the order of the token policy, and each accepted move is
//! applied before the token moves on:
//! - `round-robin`: ascending VM IPv4 address (the paper's VM id); VMs
//!   whose address is unknown follow, by name;
//! - `global`: highest achievable reduction first (a max-heap, updated for
//!   the peers of every VM that moves);
//! - `distributed`: highest communication level first (ties: VM id);
//! - `load-aware`: as distributed, ties broken by the VM's higher aggregate
//!   traffic (then VM id).
//!
//! External endpoints (clients outside the VMs, Shoal's own addition): a
//! VM's pairs with them count in `C` and in every reduction at the level
//! where its host meets their switch ([`View::ext_level`]); they never
//! move, and as candidates they stand for the hosts nearest to them
//! ([`View::ext_nearest_hosts`]) that are closer than `x`.
//!
//! Cost per iteration: `O(Σ_u deg(u)²)` plus a heap `O(V log V)` for
//! `global`, with the adjacency lists and integer host locations of
//! [`View`]: no `O(V²)` step.

use super::constraints::{Ledger, NoRoom, PolicyDefaults};
use super::physics::communication_cost;
/// `W(ℓ)` (defined with the communication cost in [`super::physics`]).
pub use super::physics::cumulative_weights;
use super::view::View;
use super::{
    Action, Alternative, ConstraintOptions, Decision, Details, MigrationCost, PlanError, Policy,
};
use crate::analyze::HotspotReport;
use crate::knowledge::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Default link weights `e^0, e^1, e^3, e^5`.
pub const DEFAULT_WEIGHTS: [f64; 4] = [
    1.0,
    std::f64::consts::E,
    20.085_536_923_187_668,
    148.413_159_102_576_6,
];

/// S-CORE keeps the published behaviour: any number of moves per host per
/// iteration, no cooldown (both configurable in `constraints`).
pub const SCORE_DEFAULTS: PolicyDefaults = PolicyDefaults {
    max_migrations_per_source_host: 0,
    cooldown_intervals: 0.0,
};

/// Which VM holds the token next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenPolicy {
    /// Ascending VM id.
    RoundRobin,
    /// Highest achievable reduction first.
    Global,
    /// Highest communication level first.
    Distributed,
    /// Highest level first, ties by higher aggregate traffic.
    LoadAware,
}

impl TokenPolicy {
    /// All token policies.
    pub const ALL: [TokenPolicy; 4] = [
        TokenPolicy::RoundRobin,
        TokenPolicy::Global,
        TokenPolicy::Distributed,
        TokenPolicy::LoadAware,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenPolicy::RoundRobin => "round-robin",
            TokenPolicy::Global => "global",
            TokenPolicy::Distributed => "distributed",
            TokenPolicy::LoadAware => "load-aware",
        }
    }
}

/// Which acceptable destination is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestinationPick {
    /// The largest reduction among all candidates (Shoal's option).
    Best,
    /// The first candidate with capacity, in descending pair-cost order:
    /// migrate there if the cost falls by more than `c_m`, else not.
    FirstFit,
}

/// What "has capacity" means for an S-CORE destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capacity {
    /// As published: a free VM slot and enough free RAM (and, as for
    /// every migration, one that converges).
    #[default]
    SlotsRam,
    /// The shared room check: CPU, memory and NIC below their thresholds,
    /// free memory, a free slot, and a migration that converges.
    Shared,
}

/// S-CORE options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreOptions {
    /// Token policy.
    pub token: TokenPolicy,
    /// Destination pick.
    pub destination: DestinationPick,
    /// Migration cost threshold `c_m` (≥ 0), in cost units (bytes/s · weight).
    pub cm: f64,
    /// Added to `cm`: this share of the overall cost at the start of the
    /// iteration, in [0, 1] (default 0).
    pub cm_fraction: f64,
    /// What a destination needs (default `slots-ram`).
    pub capacity: Capacity,
    /// When set, add the VMPatrol traffic of the migration, weighted by its
    /// path level and amortised over this many seconds, to `c_m`.
    pub cm_model_horizon_s: Option<f64>,
    /// Link weights `c_1..c_4`.
    pub weights: [f64; 4],
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            token: TokenPolicy::RoundRobin,
            destination: DestinationPick::FirstFit,
            cm: 0.0,
            cm_fraction: 0.0,
            capacity: Capacity::SlotsRam,
            cm_model_horizon_s: None,
            weights: DEFAULT_WEIGHTS,
        }
    }
}

impl ScoreOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), PlanError> {
        if !(self.cm.is_finite() && self.cm >= 0.0) {
            return Err(PlanError::invalid(
                "score.cm",
                format!("must be >= 0, got {}", self.cm),
            ));
        }
        if !(self.cm_fraction.is_finite() && (0.0..=1.0).contains(&self.cm_fraction)) {
            return Err(PlanError::invalid(
                "score.cm_fraction",
                format!("must be in [0, 1], got {}", self.cm_fraction),
            ));
        }
        if let Some(h) = self.cm_model_horizon_s {
            if !(h.is_finite() && h > 0.0) {
                return Err(PlanError::invalid(
                    "score.cm_model_horizon_s",
                    format!("must be > 0, got {h}"),
                ));
            }
        }
        for (i, w) in self.weights.iter().enumerate() {
            if !(w.is_finite() && *w >= 0.0) {
                return Err(PlanError::invalid(
                    &format!("score.weights[{i}]"),
                    format!("must be >= 0, got {w}"),
                ));
            }
        }
        Ok(())
    }
}

/// The S-CORE policy.
#[derive(Debug, Clone)]
pub struct Score {
    constraints: ConstraintOptions,
    opts: ScoreOptions,
    /// `c_m` of the current iteration (`cm + cm_fraction · C`).
    cm: f64,
}

/// A candidate destination and how it fared.
#[derive(Debug, Clone)]
struct Cand {
    host: usize,
    pair_cost: f64,
    benefit: f64,
    cm: f64,
    outcome: Result<Option<MigrationCost>, String>,
}

/// Evaluation of one VM.
#[derive(Debug)]
struct Eval {
    cost_now: f64,
    cands: Vec<Cand>,
    chosen: Option<usize>,
}

/// f64 with a total order, for the heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key(f64);
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Score {
    /// An S-CORE policy.
    pub fn new(constraints: ConstraintOptions, opts: ScoreOptions) -> Self {
        let cm = opts.cm;
        Score {
            constraints,
            opts,
            cm,
        }
    }

    fn cost_at(view: &View, led: &Ledger, cum: &[f64; 5], u: usize, h: usize) -> f64 {
        let vms: f64 = view
            .peers(u)
            .iter()
            .map(|p| {
                p.total()
                    * cum
                        .get(view.level(h, led.host_of(p.vm)))
                        .copied()
                        .unwrap_or(0.0)
            })
            .sum();
        let externals: f64 = view
            .ext_peers(u)
            .iter()
            .map(|p| p.total() * cum.get(view.ext_level(h, p.ext)).copied().unwrap_or(0.0))
            .sum();
        vms + externals
    }

    /// The highest level of `u`'s pairs (VMs and externals) from host `x`.
    fn max_level(view: &View, led: &Ledger, u: usize, x: usize) -> usize {
        let vms = view
            .peers(u)
            .iter()
            .map(|p| view.level(x, led.host_of(p.vm)));
        let externals = view.ext_peers(u).iter().map(|p| view.ext_level(x, p.ext));
        vms.chain(externals).max().unwrap_or(0)
    }

    /// Evaluates VM `u`'s candidates (first-fit stops at the first
    /// acceptable one).
    fn evaluate(&self, view: &View, led: &Ledger, cum: &[f64; 5], u: usize) -> Option<Eval> {
        if led.blocked(u).is_some() {
            return None;
        }
        let peers = view.peers(u);
        let ext_peers = view.ext_peers(u);
        if peers.is_empty() && ext_peers.is_empty() {
            return None;
        }
        let x = led.host_of(u);
        // Neighbours by their own pair cost, descending (ties: VM index);
        // each host once, at its first (heaviest) neighbour.
        let mut by_pair: Vec<(usize, f64, usize)> = peers
            .iter()
            .map(|p| {
                let h = led.host_of(p.vm);
                (
                    h,
                    p.total() * cum.get(view.level(x, h)).copied().unwrap_or(0.0),
                    p.vm,
                )
            })
            .filter(|(h, _, _)| *h != x)
            .collect();
        // An external endpoint has no host: the hosts nearest to it that
        // are closer than `x` stand for it (ties after the VMs).
        for p in ext_peers {
            let now = view.ext_level(x, p.ext);
            let pair_cost = p.total() * cum.get(now).copied().unwrap_or(0.0);
            for &h in view.ext_nearest_hosts(p.ext) {
                if h != x && view.ext_level(h, p.ext) < now {
                    by_pair.push((h, pair_cost, view.vm_count() + p.ext));
                }
            }
        }
        if by_pair.is_empty() {
            return None;
        }
        by_pair.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
        let mut seen = std::collections::BTreeSet::new();
        by_pair.retain(|(h, _, _)| seen.insert(*h));
        let cost_now = Self::cost_at(view, led, cum, u, x);
        let mut cands = Vec::with_capacity(by_pair.len());
        let mut chosen: Option<usize> = None;
        for (h, pair_cost, _) in by_pair {
            let after = Self::cost_at(view, led, cum, u, h);
            let benefit = cost_now - after;
            let mut cm = self.cm;
            let capacity = match self.opts.capacity {
                // A pre-copy migration that cannot converge could never
                // finish: refused whatever the capacity rule.
                Capacity::SlotsRam => led
                    .slots_and_ram(u, h)
                    .and_then(|()| led.estimate(u, h).map(Some).map_err(NoRoom::Model))
                    .map_err(|e| e.as_str()),
                Capacity::Shared => led.check(u, h).map(Some).map_err(|e| e.as_str()),
            };
            let has_capacity = capacity.is_ok();
            let outcome = capacity.and_then(|cost| {
                if let (Some(horizon), Some(c)) = (self.opts.cm_model_horizon_s, cost) {
                    let w = cum.get(view.level(x, h)).copied().unwrap_or(0.0);
                    cm += c.bytes * w / horizon;
                }
                if benefit <= cm {
                    Err("benefit <= c_m".to_string())
                } else {
                    Ok(cost)
                }
            });
            let ok = outcome.is_ok();
            cands.push(Cand {
                host: h,
                pair_cost,
                benefit,
                cm,
                outcome,
            });
            if self.opts.destination == DestinationPick::FirstFit && has_capacity {
                // The first host with capacity decides: migrate if the cost
                // falls enough, else not at all.
                if ok {
                    chosen = Some(cands.len() - 1);
                }
                break;
            }
            if ok {
                let idx = cands.len() - 1;
                match (self.opts.destination, chosen) {
                    (DestinationPick::FirstFit, _) => {
                        chosen = Some(idx);
                        break;
                    }
                    (DestinationPick::Best, None) => chosen = Some(idx),
                    (DestinationPick::Best, Some(c)) => {
                        if cands.get(c).is_some_and(|b| benefit > b.benefit) {
                            chosen = Some(idx);
                        }
                    }
                }
            }
        }
        Some(Eval {
            cost_now,
            cands,
            chosen,
        })
    }

    /// Achievable reduction of `u` now (0 when it cannot move).
    fn potential(&self, view: &View, led: &Ledger, cum: &[f64; 5], u: usize) -> f64 {
        self.evaluate(view, led, cum, u)
            .and_then(|e| e.chosen.and_then(|c| e.cands.get(c).map(|c| c.benefit)))
            .unwrap_or(0.0)
    }

    /// Evaluates `u` and, when a candidate is accepted, applies the move and
    /// returns the decision.
    fn take_token(
        &self,
        view: &View,
        led: &mut Ledger,
        cum: &[f64; 5],
        u: usize,
    ) -> Option<Decision> {
        let eval = self.evaluate(view, led, cum, u)?;
        let c = eval.cands.get(eval.chosen?)?.clone();
        let cost = c.outcome.clone().ok()?;
        let x = led.host_of(u);
        let max_level = Self::max_level(view, led, u, x);
        let mut details = Details::default()
            .metric("cost_now", eval.cost_now)
            .metric("cost_after", eval.cost_now - c.benefit)
            .metric("reduction", c.benefit)
            .metric("cm", c.cm)
            .metric("pair_cost", c.pair_cost)
            .metric("max_level_before", max_level as f64)
            .metric("move_level", view.level(x, c.host) as f64);
        details.migration = cost;
        for o in &eval.cands {
            if o.host == c.host {
                continue;
            }
            details.push_alternative(Alternative {
                vm: None,
                host: Some(view.host_name(o.host).into()),
                score: Some(o.benefit),
                rejected: match &o.outcome {
                    Ok(_) => match self.opts.destination {
                        DestinationPick::Best => "smaller reduction".into(),
                        DestinationPick::FirstFit => "later in pair-cost order".into(),
                    },
                    Err(e) => e.clone(),
                },
            });
        }
        led.apply_move(u, c.host);
        Some(Decision {
            action: Action::Migrate {
                vm: view.vm_name(u).into(),
                from: view.host_name(x).into(),
                to: view.host_name(c.host).into(),
            },
            reason: format!(
                "score: token {}; communication cost reduction {:.6} > c_m {:.6} moving toward its peers",
                self.opts.token.as_str(),
                c.benefit,
                c.cm
            ),
            score: c.benefit,
            details,
        })
    }
}

impl Policy for Score {
    fn name(&self) -> &'static str {
        "score"
    }

    fn plan(&mut self, snap: &Snapshot, hot: &HotspotReport) -> Vec<Decision> {
        let view = View::new(snap);
        let mut led = Ledger::new(
            &view,
            hot.thresholds,
            self.constraints.resolve(SCORE_DEFAULTS),
        );
        let cum = cumulative_weights(&self.opts.weights);
        self.cm = self.opts.cm;
        if self.opts.cm_fraction > 0.0 {
            self.cm += self.opts.cm_fraction * communication_cost(snap, &self.opts.weights);
        }
        let n = view.vm_count();
        let mut out = Vec::new();
        match self.opts.token {
            TokenPolicy::RoundRobin => {
                // Ascending IPv4 (the paper's VM id); unknown addresses
                // last, by name (the view's order).
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by_key(|&u| {
                    let ip = view.vms.get(u).and_then(|v| v.ipv4);
                    (ip.is_none(), ip, u)
                });
                for u in order {
                    out.extend(self.take_token(&view, &mut led, &cum, u));
                }
            }
            TokenPolicy::Distributed | TokenPolicy::LoadAware => {
                let mut keys: Vec<(usize, f64, usize)> = (0..n)
                    .map(|u| {
                        let x = led.host_of(u);
                        let level = Self::max_level(&view, &led, u, x);
                        let load = if self.opts.token == TokenPolicy::LoadAware {
                            view.peers(u).iter().map(|p| p.total()).sum::<f64>()
                                + view.ext_peers(u).iter().map(|p| p.total()).sum::<f64>()
                        } else {
                            0.0
                        };
                        (level, load, u)
                    })
                    .collect();
                keys.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
                for (_, _, u) in keys {
                    out.extend(self.take_token(&view, &mut led, &cum, u));
                }
            }
            TokenPolicy::Global => {
                let mut pot: Vec<f64> = (0..n)
                    .map(|u| self.potential(&view, &led, &cum, u))
                    .collect();
                let mut heap: BinaryHeap<(Key, Reverse<usize>)> = pot
                    .iter()
                    .enumerate()
                    .map(|(u, &p)| (Key(p), Reverse(u)))
                    .collect();
                let mut visited = vec![false; n];
                while let Some((Key(p), Reverse(u))) = heap.pop() {
                    if visited.get(u).copied().unwrap_or(true) {
                        continue;
                    }
                    if pot.get(u).is_some_and(|&cur| cur.to_bits() != p.to_bits()) {
                        continue; // stale entry
                    }
                    if let Some(v) = visited.get_mut(u) {
                        *v = true;
                    }
                    if let Some(d) = self.take_token(&view, &mut led, &cum, u) {
                        out.push(d);
                        for peer in view.peers(u) {
                            let z = peer.vm;
                            if visited.get(z).copied().unwrap_or(true) {
                                continue;
                            }
                            let np = self.potential(&view, &led, &cum, z);
                            if let Some(slot) = pot.get_mut(z) {
                                if slot.to_bits() != np.to_bits() {
                                    *slot = np;
                                    heap.push((Key(np), Reverse(z)));
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::{migrations, Dc};

    /// h1, h2 in rack r0 and h3 in rack r1 (pod p0); h4 in pod p1.
    /// `a` on h1 talks with `p` on h3 (10/s each way: 20) and `q` on h4
    /// (30/s each way: 60). W = [0, 1, 1+e, 1+e+e³, …]:
    /// W(2) = 3.71828, W(3) = 23.80382.
    /// a now: 20·W(2) + 60·W(3) = 74.366 + 1428.229 = 1502.595.
    /// a→h4: 20·W(ℓ(h4,h3) = 3) = 476.076: reduction 1026.519.
    /// a→h3: 60·W(3) = 1428.229: reduction 74.366.
    /// Heaviest peer q wins: a moves to h4. Then p (on h3, a on h4 now):
    /// 20·W(3) = 476.076 → to h4: reduction 476.076, moves. q: with a, stays.
    fn dc() -> Dc {
        Dc::new()
            .host("h1", "r0", "p0", 16.0, 65536.0)
            .host("h2", "r0", "p0", 16.0, 65536.0)
            .host("h3", "r1", "p0", 16.0, 65536.0)
            .host("h4", "r2", "p1", 16.0, 65536.0)
            .vm("a", "h1", 1.0, 1024.0)
            .vm("p", "h3", 1.0, 1024.0)
            .vm("q", "h4", 1.0, 1024.0)
            .talk("a", "p", 10.0)
            .talk("a", "q", 30.0)
    }

    fn opts(token: TokenPolicy, cm: f64) -> ScoreOptions {
        ScoreOptions {
            token,
            cm,
            ..Default::default()
        }
    }

    const W2: f64 = 1.0 + std::f64::consts::E;
    const W3: f64 = W2 + 20.085_536_923_187_668;

    #[test]
    fn moves_toward_the_heaviest_peer() {
        let (snap, hot) = dc().build(5);
        let d =
            Score::new(Default::default(), opts(TokenPolicy::RoundRobin, 0.0)).plan(&snap, &hot);
        assert_eq!(
            migrations(&d),
            vec![
                ("a".into(), "h1".into(), "h4".into()),
                ("p".into(), "h3".into(), "h4".into())
            ]
        );
        let r = d[0].score;
        assert!((r - (20.0 * W2 + 40.0 * W3)).abs() < 1e-9, "{r}");
        assert!((r - 1026.519).abs() < 1e-3);
        // First-fit stops at h4 (the heaviest neighbour's host, which has
        // capacity); `best` lists the other candidate (h3) with its smaller
        // reduction.
        assert!(d[0].details.alternatives.is_empty());
        let best = ScoreOptions {
            destination: DestinationPick::Best,
            ..opts(TokenPolicy::RoundRobin, 0.0)
        };
        let d2 = Score::new(Default::default(), best).plan(&snap, &hot);
        assert_eq!(migrations(&d2), migrations(&d));
        let alt = &d2[0].details.alternatives[0];
        assert_eq!(alt.host.as_deref(), Some("h3"));
        assert!((alt.score.unwrap() - 20.0 * W2).abs() < 1e-9);
        // Cost after both moves: only nothing left across hosts.
        let mut s = snap.clone();
        for (vm, _, to) in migrations(&d) {
            s.vms.get_mut(&vm).unwrap().host = to;
        }
        assert_eq!(
            crate::plan::physics::communication_cost(&s, &DEFAULT_WEIGHTS),
            0.0
        );
    }

    /// c_m = 1030 > 1026.519: `a` does not move (benefit ≤ c_m). `p` (74.4
    /// toward h1) does not either. `q` on h4 sees a on h1 at level 3:
    /// 60·W(3) = 1428.2 > 1030: q moves to h1. Then p's reduction is still
    /// 20·W(2) = 74.4 ≤ c_m.
    #[test]
    fn no_move_when_benefit_not_above_cm() {
        let (snap, hot) = dc().build(5);
        let d =
            Score::new(Default::default(), opts(TokenPolicy::RoundRobin, 1030.0)).plan(&snap, &hot);
        assert_eq!(migrations(&d), vec![("q".into(), "h4".into(), "h1".into())]);
        let d =
            Score::new(Default::default(), opts(TokenPolicy::RoundRobin, 1e9)).plan(&snap, &hot);
        assert!(d.is_empty());
    }

    /// global: achievable reductions a 1026.5, p 74.4, q 1428.2 → q first
    /// (to h1, with a). Then a stays (its peers: q on h1, p on h3: moving to
    /// h3 would add 60·W(2) − 20·W(2) > 0). p then moves to h1: 74.4.
    /// distributed: highest level first: a (3), q (3), p (2): a → h4, q
    /// stays, p → h4.
    #[test]
    fn token_orders() {
        let (snap, hot) = dc().build(5);
        let d = Score::new(Default::default(), opts(TokenPolicy::Global, 0.0)).plan(&snap, &hot);
        assert_eq!(
            migrations(&d),
            vec![
                ("q".into(), "h4".into(), "h1".into()),
                ("p".into(), "h3".into(), "h1".into())
            ]
        );
        let d =
            Score::new(Default::default(), opts(TokenPolicy::Distributed, 0.0)).plan(&snap, &hot);
        assert_eq!(
            migrations(&d),
            vec![
                ("a".into(), "h1".into(), "h4".into()),
                ("p".into(), "h3".into(), "h4".into())
            ]
        );
        // load-aware: a has the most traffic (80) among level-3 VMs (q: 60).
        let d = Score::new(Default::default(), opts(TokenPolicy::LoadAware, 0.0)).plan(&snap, &hot);
        assert_eq!(migrations(&d)[0].0, "a");
    }

    /// Room is respected: h4 holds one VM at most, so a cannot join q and
    /// goes to h3 instead (74.4 > 0); the model-derived c_m adds the
    /// migration bytes (≈ 1 GB · W(level)) / horizon and blocks tiny gains.
    #[test]
    fn room_and_model_cm() {
        let (snap, hot) = dc().with_host("h4", |h| h.max_vms = Some(1)).build(5);
        let d =
            Score::new(Default::default(), opts(TokenPolicy::RoundRobin, 0.0)).plan(&snap, &hot);
        assert_eq!(migrations(&d)[0], ("a".into(), "h1".into(), "h3".into()));
        let no_room = d[0]
            .details
            .alternatives
            .iter()
            .find(|a| a.host.as_deref() == Some("h4"))
            .unwrap();
        assert_eq!(no_room.rejected, "no room: slots");
        let mut o = opts(TokenPolicy::RoundRobin, 0.0);
        o.cm_model_horizon_s = Some(3600.0);
        let d = Score::new(Default::default(), o).plan(&snap, &hot);
        assert!(d.is_empty(), "{d:?}");
    }

    /// `a` on h1 (rack r0) talks with `p` on h2 (r0) at 5/s each way and
    /// with client `c` at ToR r2 (pod p1, where h4 is) at 100/s each way.
    /// a now: 10·W(1) + 200·W(3); on h4: 10·W(3) + 200·W(1). Every token
    /// policy moves a under the client's ToR first; the client itself is
    /// never moved nor a destination.
    #[test]
    fn moves_next_to_an_external_client() {
        let (snap, hot) = Dc::new()
            .host("h1", "r0", "p0", 16.0, 65536.0)
            .host("h2", "r0", "p0", 16.0, 65536.0)
            .host("h4", "r2", "p1", 16.0, 65536.0)
            .vm("a", "h1", 1.0, 1024.0)
            .vm("p", "h2", 1.0, 1024.0)
            .external("c", "r2")
            .talk("a", "p", 5.0)
            .talk("a", "c", 100.0)
            .build(5);
        let before = communication_cost(&snap, &DEFAULT_WEIGHTS);
        let w1 = 1.0;
        assert!((before - (10.0 * w1 + 200.0 * W3)).abs() < 1e-9, "{before}");
        for token in TokenPolicy::ALL {
            let d = Score::new(Default::default(), opts(token, 0.0)).plan(&snap, &hot);
            let m = migrations(&d);
            assert_eq!(m[0], ("a".into(), "h1".into(), "h4".into()), "{token:?}");
            assert!((d[0].score - 190.0 * (W3 - w1)).abs() < 1e-9);
            assert!(m.iter().all(|(vm, _, to)| vm != "c" && to != "c"));
            let mut s = snap.clone();
            for (vm, _, to) in &m {
                s.vms.get_mut(vm).unwrap().host = to.clone();
            }
            assert!(communication_cost(&s, &DEFAULT_WEIGHTS) < before);
        }
    }
}
