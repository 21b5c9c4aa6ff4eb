//! VIOLIN: adaptive virtual environments.
//!
//! - Per VM, an exponentially weighted average of its CPU demand (CPU used
//!   over its vCPUs), over its sample window, weight `ewma_weight` on the
//!   newest sample; high demand > `high_demand`, low demand < `low_demand`.
//! - Host score = high-demand VMs / host cores.
//! - Sources: hosts "supporting more than their share" (score above the
//!   mean; `rebalance`, default on) and CPU hotspots; highest score first.
//!   Either may lead to an environment move when its domain is overloaded.
//! - A high-demand VM moves when the move lowers the standard deviation of
//!   the host scores (over all hosts), searching the hosts of the source's
//!   domain (configured, else its pod), least utilised first (score, then
//!   CPU utilisation, then id).
//! - If the source has a high-demand VM that may move and no host of the
//!   domain can support any of them (room, not a failed standard-deviation
//!   test), the domain is overloaded: a whole virtual environment (of the
//!   most demanding VM of that host that has one) moves to the other domain
//!   with the most free CPU that can hold all its VMs (each VM to the least
//!   utilised host with room there), except its head node (gateway), which
//!   stays in its domain. Environment moves ignore the
//!   one-migration-per-source-host limit: the environment moves together.

use super::constraints::{Ledger, HOTSPOT_DEFAULTS};
use super::view::View;
use super::{
    Action, Alternative, ConstraintOptions, Decision, Details, MigrationCost, PlanError, Policy,
};
use crate::analyze::{HotspotReport, Resource};
use crate::knowledge::snapshot::{ratio, Snapshot, VmState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// VIOLIN options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViolinOptions {
    /// EWMA weight of the newest sample, in (0, 1].
    pub ewma_weight: f64,
    /// High-demand threshold.
    pub high_demand: f64,
    /// Low-demand threshold (reported in details).
    pub low_demand: f64,
    /// Also rebalance hosts whose score is above the mean (not only CPU
    /// hotspots).
    pub rebalance: bool,
}

impl Default for ViolinOptions {
    fn default() -> Self {
        ViolinOptions {
            ewma_weight: 0.5,
            high_demand: 0.75,
            low_demand: 0.25,
            rebalance: true,
        }
    }
}

impl ViolinOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), PlanError> {
        if !(self.ewma_weight.is_finite() && self.ewma_weight > 0.0 && self.ewma_weight <= 1.0) {
            return Err(PlanError::invalid(
                "violin.ewma_weight",
                format!("must be in (0, 1], got {}", self.ewma_weight),
            ));
        }
        if !(self.low_demand.is_finite()
            && self.high_demand.is_finite()
            && 0.0 <= self.low_demand
            && self.low_demand <= self.high_demand)
        {
            return Err(PlanError::invalid(
                "violin.high_demand",
                format!(
                    "need 0 <= low_demand <= high_demand, got {} and {}",
                    self.low_demand, self.high_demand
                ),
            ));
        }
        Ok(())
    }
}

/// The VIOLIN policy.
#[derive(Debug, Clone)]
pub struct Violin {
    constraints: ConstraintOptions,
    opts: ViolinOptions,
}

impl Violin {
    /// A VIOLIN policy.
    pub fn new(constraints: ConstraintOptions, opts: ViolinOptions) -> Self {
        Violin { constraints, opts }
    }
}

/// EWMA of CPU demand (cores over vCPUs) across the VM's samples.
pub fn ewma_demand(vm: &VmState, weight: f64) -> f64 {
    let vcpus = f64::from(vm.vcpus.max(1));
    let mut e: Option<f64> = None;
    for s in &vm.history {
        let x = s.cpu_cores / vcpus;
        e = Some(match e {
            None => x,
            Some(prev) => weight * x + (1.0 - weight) * prev,
        });
    }
    e.unwrap_or(0.0)
}

/// Running sums of host scores for O(1) standard deviations.
#[derive(Debug, Clone)]
struct Scores {
    score: Vec<f64>,
    sum: f64,
    sumsq: f64,
}

impl Scores {
    fn std_of(sum: f64, sumsq: f64, n: usize) -> f64 {
        if n == 0 {
            return 0.0;
        }
        let n = n as f64;
        let mean = sum / n;
        (sumsq / n - mean * mean).max(0.0).sqrt()
    }

    fn std(&self) -> f64 {
        Self::std_of(self.sum, self.sumsq, self.score.len())
    }

    fn get(&self, h: usize) -> f64 {
        self.score.get(h).copied().unwrap_or(0.0)
    }

    /// Standard deviation after moving `a` from `s` to `k` and `b` to `k`.
    fn std_after(&self, s: usize, a: f64, k: usize, b: f64) -> f64 {
        let (xs, xk) = (self.get(s), self.get(k));
        let sum = self.sum - a + b;
        let sumsq = self.sumsq - xs * xs + (xs - a).powi(2) - xk * xk + (xk + b).powi(2);
        Self::std_of(sum, sumsq, self.score.len())
    }

    fn apply(&mut self, s: usize, a: f64, k: usize, b: f64) {
        let (xs, xk) = (self.get(s), self.get(k));
        self.sum += b - a;
        self.sumsq += -xs * xs + (xs - a).powi(2) - xk * xk + (xk + b).powi(2);
        if let Some(x) = self.score.get_mut(s) {
            *x -= a;
        }
        if let Some(x) = self.score.get_mut(k) {
            *x += b;
        }
    }
}

impl Policy for Violin {
    fn name(&self) -> &'static str {
        "violin"
    }

    fn plan(&mut self, snap: &Snapshot, hot: &HotspotReport) -> Vec<Decision> {
        let view = View::new(snap);
        let mut led = Ledger::new(
            &view,
            hot.thresholds,
            self.constraints.resolve(HOTSPOT_DEFAULTS),
        );
        let hn = view.host_count();
        let demand: Vec<f64> = view
            .vms
            .iter()
            .map(|v| ewma_demand(v, self.opts.ewma_weight))
            .collect();
        let mut scores = self.host_scores(&view, &demand);
        let mean = if hn > 0 { scores.sum / hn as f64 } else { 0.0 };
        let mut domains: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for h in 0..hn {
            domains.entry(domain_of(&view, h)).or_default().push(h);
        }
        let mut sources: Vec<(f64, usize, bool)> = (0..hn)
            .filter_map(|h| {
                let cpu_hot = hot.is_hot(view.host_name(h), Resource::Cpu);
                let above = self.opts.rebalance && scores.get(h) > mean + 1e-12;
                (cpu_hot || above).then(|| (scores.get(h), h, cpu_hot))
            })
            .collect();
        sources.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut out = Vec::new();
        let mut moved_envs: Vec<String> = Vec::new();
        for (_, s, _) in sources {
            if led.source_limit_reached(s) {
                continue;
            }
            let domain = domain_of(&view, s);
            match self.move_within_domain(&view, &mut led, &mut scores, &demand, &domains, s) {
                InDomain::Moved(d) => {
                    out.push(*d);
                    continue;
                }
                // A host of the domain could support it (only the standard
                // deviation would not drop), or nothing to move.
                InDomain::NotOverloaded | InDomain::NoHighDemand => continue,
                InDomain::Overloaded => {}
            }
            // Domain overloaded: move a whole environment.
            for env in environments_on(&view, &led, &demand, s, &moved_envs) {
                if let Some(ds) = self.move_environment(
                    &view,
                    &mut led,
                    &mut scores,
                    &demand,
                    &domains,
                    env,
                    domain,
                    s,
                ) {
                    out.extend(ds);
                    moved_envs.push(env.to_string());
                    break;
                }
            }
        }
        out
    }
}

/// What the in-domain attempt found.
enum InDomain {
    /// A high-demand VM moved within the domain.
    Moved(Box<Decision>),
    /// No high-demand VM on the host may move.
    NoHighDemand,
    /// Some host of the domain could support a high-demand VM, but no move
    /// lowered the standard deviation.
    NotOverloaded,
    /// No host of the domain can support any of them: the domain is
    /// overloaded.
    Overloaded,
}

/// `1 / cores` of host `h` (a high-demand VM's share of its host score).
fn inv_cores(view: &View<'_>, h: usize) -> f64 {
    view.hosts.get(h).map_or(0.0, |x| ratio(1.0, x.cores))
}

/// The domain of host `h` (its configured domain, else its pod).
fn domain_of<'a>(view: &View<'a>, h: usize) -> &'a str {
    view.hosts.get(h).map_or("", |x| x.domain_or_pod())
}

/// VMs by demand, highest first (ties by index).
fn by_demand_desc(vms: &mut [usize], demand: &[f64]) {
    vms.sort_by(|&a, &b| {
        demand
            .get(b)
            .copied()
            .unwrap_or(0.0)
            .total_cmp(&demand.get(a).copied().unwrap_or(0.0))
            .then(a.cmp(&b))
    });
}

/// The environments of the VMs on host `s`, by their VMs' demand, except
/// those moved already this round.
fn environments_on<'a>(
    view: &View<'a>,
    led: &Ledger,
    demand: &[f64],
    s: usize,
    moved_envs: &[String],
) -> Vec<&'a str> {
    let mut envs: Vec<&str> = Vec::new();
    let mut on_s: Vec<usize> = (0..view.vm_count())
        .filter(|&v| led.host_of(v) == s)
        .collect();
    by_demand_desc(&mut on_s, demand);
    for v in on_s {
        if let Some(e) = view.vms.get(v).and_then(|x| x.environment.as_deref()) {
            if !envs.contains(&e) && !moved_envs.iter().any(|m| m == e) {
                envs.push(e);
            }
        }
    }
    envs
}

impl Violin {
    fn is_high(&self, demand: &[f64], v: usize) -> bool {
        demand.get(v).is_some_and(|&d| d > self.opts.high_demand)
    }

    /// Host scores: Σ 1/cores over the host's high-demand VMs.
    fn host_scores(&self, view: &View<'_>, demand: &[f64]) -> Scores {
        let mut score = vec![0.0; view.host_count()];
        for v in 0..view.vm_count() {
            if self.is_high(demand, v) {
                let h = view.host_of(v);
                if let Some(s) = score.get_mut(h) {
                    *s += inv_cores(view, h);
                }
            }
        }
        Scores {
            sum: score.iter().sum(),
            sumsq: score.iter().map(|x| x * x).sum(),
            score,
        }
    }

    /// Moves the highest-demand VM of host `s` that can go to the least
    /// scored host of its domain where the std of host scores drops.
    fn move_within_domain(
        &self,
        view: &View<'_>,
        led: &mut Ledger,
        scores: &mut Scores,
        demand: &[f64],
        domains: &BTreeMap<&str, Vec<usize>>,
        s: usize,
    ) -> InDomain {
        let mut movable = false;
        let mut supported = false;
        let mut highs: Vec<usize> = (0..view.vm_count())
            .filter(|&v| {
                led.host_of(v) == s
                    && self.is_high(demand, v)
                    && !led.moved.get(v).copied().unwrap_or(true)
            })
            .collect();
        by_demand_desc(&mut highs, demand);
        let domain = domain_of(view, s);
        let mut dests: Vec<usize> = domains.get(domain).map_or_else(Vec::new, |d| {
            d.iter().copied().filter(|&k| k != s).collect()
        });
        dests.sort_by(|&a, &b| {
            scores
                .get(a)
                .total_cmp(&scores.get(b))
                .then(led.cpu_util(a).total_cmp(&led.cpu_util(b)))
                .then(a.cmp(&b))
        });
        let std_now = scores.std();
        let mut details = Details::default();
        for &v in &highs {
            if let Some(b) = led.blocked(v) {
                details.push_alternative(Alternative {
                    vm: Some(view.vm_name(v).into()),
                    host: None,
                    score: demand.get(v).copied(),
                    rejected: b.as_str().into(),
                });
                continue;
            }
            movable = true;
            for &k in &dests {
                let after = scores.std_after(s, inv_cores(view, s), k, inv_cores(view, k));
                let room = led.check(v, k);
                supported |= room.is_ok();
                if after >= std_now - 1e-12 {
                    details.push_alternative(Alternative {
                        vm: Some(view.vm_name(v).into()),
                        host: Some(view.host_name(k).into()),
                        score: Some(after),
                        rejected: "does not lower the std of host scores".into(),
                    });
                    continue;
                }
                match room {
                    Err(e) => details.push_alternative(Alternative {
                        vm: Some(view.vm_name(v).into()),
                        host: Some(view.host_name(k).into()),
                        score: Some(after),
                        rejected: e.as_str(),
                    }),
                    Ok(cost) => {
                        let mut d = std::mem::take(&mut details)
                            .metric("demand", demand.get(v).copied().unwrap_or(0.0))
                            .metric("std_before", std_now)
                            .metric("std_after", after)
                            .metric("source_score", scores.get(s))
                            .metric("dest_score", scores.get(k));
                        d.migration = Some(cost);
                        scores.apply(s, inv_cores(view, s), k, inv_cores(view, k));
                        led.apply_move(v, k);
                        return InDomain::Moved(Box::new(Decision {
                            action: Action::Migrate {
                                vm: view.vm_name(v).into(),
                                from: view.host_name(s).into(),
                                to: view.host_name(k).into(),
                            },
                            reason: format!(
                                "violin: lowers the std of host scores, least utilised host of domain {domain}"
                            ),
                            score: std_now - after,
                            details: d,
                        }));
                    }
                }
            }
        }
        match (movable, supported) {
            (false, _) => InDomain::NoHighDemand,
            (true, true) => InDomain::NotOverloaded,
            (true, false) => InDomain::Overloaded,
        }
    }
    /// Moves every VM of `env` out of `domain` into another domain that can
    /// hold them all; `None` when no domain can (nothing is changed then).
    #[allow(clippy::too_many_arguments)]
    fn move_environment(
        &self,
        view: &View,
        led: &mut Ledger,
        scores: &mut Scores,
        demand: &[f64],
        domains: &BTreeMap<&str, Vec<usize>>,
        env: &str,
        domain: &str,
        source: usize,
    ) -> Option<Vec<Decision>> {
        // The head node (gateway) stays in its domain.
        let mut members: Vec<usize> = (0..view.vm_count())
            .filter(|&v| {
                view.vms
                    .get(v)
                    .is_some_and(|x| x.environment.as_deref() == Some(env) && !x.head)
            })
            .collect();
        // Cooldown / running migration block the whole environment.
        if members.iter().any(|&v| {
            matches!(
                led.blocked(v),
                Some(
                    super::constraints::Blocked::Migrating | super::constraints::Blocked::Cooldown
                )
            )
        }) {
            return None;
        }
        let cpu = |v: usize| view.vm_latest.get(v).map_or(0.0, |s| s.cpu_cores);
        members.sort_by(|&a, &b| cpu(b).total_cmp(&cpu(a)).then(a.cmp(&b)));
        let t = led.thresholds;
        let mut targets: Vec<(f64, &str)> = domains
            .iter()
            .filter(|(d, _)| **d != domain)
            .map(|(d, hs)| {
                let free: f64 = hs
                    .iter()
                    .map(|&h| {
                        view.hosts.get(h).map_or(0.0, |x| x.cores) * t.cpu
                            - led.cpu_used.get(h).copied().unwrap_or(0.0)
                    })
                    .sum();
                (free, *d)
            })
            .collect();
        targets.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let is_high = |v: usize| demand.get(v).is_some_and(|&d| d > self.opts.high_demand);
        let inv_cores = |h: usize| view.hosts.get(h).map_or(0.0, |x| ratio(1.0, x.cores));
        for (free, d) in targets {
            let hosts = domains.get(d)?;
            let mut trial_led = led.clone();
            let mut trial_scores = scores.clone();
            let mut plan: Vec<(usize, usize, usize, MigrationCost)> = Vec::new();
            let mut ok = true;
            for &v in &members {
                let from = trial_led.host_of(v);
                if hosts.contains(&from) {
                    continue;
                }
                let mut hs = hosts.clone();
                hs.sort_by(|&a, &b| {
                    trial_scores
                        .get(a)
                        .total_cmp(&trial_scores.get(b))
                        .then(trial_led.cpu_util(a).total_cmp(&trial_led.cpu_util(b)))
                        .then(a.cmp(&b))
                });
                let found = hs.into_iter().find_map(|k| {
                    trial_led.room(v, k).ok()?;
                    trial_led.estimate(v, k).ok().map(|c| (k, c))
                });
                match found {
                    Some((k, cost)) => {
                        if is_high(v) {
                            trial_scores.apply(from, inv_cores(from), k, inv_cores(k));
                        }
                        trial_led.apply_move(v, k);
                        plan.push((v, from, k, cost));
                    }
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok || plan.is_empty() {
                continue;
            }
            *led = trial_led;
            *scores = trial_scores;
            let n = plan.len();
            return Some(
                plan.into_iter()
                    .map(|(v, from, k, cost)| {
                        let mut details = Details::default()
                            .metric("demand", demand.get(v).copied().unwrap_or(0.0))
                            .metric("environment_size", n as f64)
                            .metric("target_domain_free_cores", free)
                            .metric(
                                "low_demand",
                                if demand.get(v).is_some_and(|&x| x < self.opts.low_demand) { 1.0 } else { 0.0 },
                            );
                        details.migration = Some(cost);
                        Decision {
                            action: Action::Migrate {
                                vm: view.vm_name(v).into(),
                                from: view.host_name(from).into(),
                                to: view.host_name(k).into(),
                            },
                            reason: format!(
                                "violin: domain {domain} overloaded (no host of it can take a high-demand VM of {}); environment {env} moves to domain {d}",
                                view.host_name(source)
                            ),
                            score: free,
                            details,
                        }
                    })
                    .collect(),
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::{migrations, Dc};

    /// Domain d0 = {a, b, c}, 4 cores each; host "aa" (domain d1) is idle.
    /// a runs 3 high-demand VMs (0.9 of 1 vCPU > 0.75; CPU 2.7/4 = 0.675,
    /// not hot), b one, c none, aa none: scores .75, .25, 0, 0
    /// (hosts a, aa, b, c), mean .25, std = sqrt((.25 + 0 + .0625·2)/4)
    /// = .3062. a is above the mean (rebalance). Same domain first, least
    /// utilised: c (score 0). After a→c: .5, 0, .25, .25: std = .1768 <
    /// .3062: move. ("aa" sorts first by name and is as idle, but it is in
    /// another domain.)
    #[test]
    fn lowers_std_within_the_domain() {
        let (snap, hot) = Dc::new()
            .host("a", "r0", "p0", 4.0, 65536.0)
            .host("b", "r0", "p0", 4.0, 65536.0)
            .host("c", "r0", "p0", 4.0, 65536.0)
            .host("aa", "r1", "p0", 4.0, 65536.0)
            .with_host("a", |h| h.domain = Some("d0".into()))
            .with_host("b", |h| h.domain = Some("d0".into()))
            .with_host("c", |h| h.domain = Some("d0".into()))
            .with_host("aa", |h| h.domain = Some("d1".into()))
            .vm("a1", "a", 0.9, 1024.0)
            .vm("a2", "a", 0.9, 1024.0)
            .vm("a3", "a", 0.9, 1024.0)
            .vm("b1", "b", 0.9, 1024.0)
            .build(5);
        let d = Violin::new(Default::default(), Default::default()).plan(&snap, &hot);
        assert_eq!(migrations(&d), vec![("a1".into(), "a".into(), "c".into())]);
        let m = &d[0].details.metrics;
        assert!((m["std_before"] - 0.3062).abs() < 1e-4, "{m:?}");
        assert!((m["std_after"] - 0.1768).abs() < 1e-4, "{m:?}");
    }

    /// Domain d0 = {a, b} is full: a and b run four 0.9-core high-demand VMs
    /// each (3.6/4 = 0.9 > 0.85: both CPU-hot). Moving one from a to b does
    /// not lower the std (scores 1, 1, 0, 0 → .75, 1.25, 0, 0: std .5 →
    /// .53) and b has no CPU room (4.5/4) either: d0 is overloaded.
    /// The most demanding VM on a is a1 (0.95), environment t1 = {a1, a2,
    /// b1}: all three move to domain d1 = {c, d} (idle, 4 cores each), each
    /// to the least utilised host with room; t2 (a3, a4) stays.
    #[test]
    fn whole_environment_moves_when_domain_full() {
        let mut dc = Dc::new();
        for (h, dom) in [("a", "d0"), ("b", "d0"), ("c", "d1"), ("d", "d1")] {
            dc = dc
                .host(h, "r0", "p0", 4.0, 65536.0)
                .with_host(h, |x| x.domain = Some(dom.into()));
        }
        for (vm, host, cpu, env) in [
            ("a1", "a", 0.95, "t1"),
            ("a2", "a", 0.9, "t1"),
            ("a3", "a", 0.9, "t2"),
            ("a4", "a", 0.9, "t2"),
            ("b1", "b", 0.9, "t1"),
            ("b2", "b", 0.9, "t3"),
            ("b3", "b", 0.9, "t3"),
            ("b4", "b", 0.9, "t3"),
        ] {
            dc = dc
                .vm(vm, host, cpu, 1024.0)
                .with_vm(vm, |v| v.environment = Some(env.into()));
        }
        let (snap, hot) = dc.build(5);
        assert!(hot.is_hot("a", Resource::Cpu) && hot.is_hot("b", Resource::Cpu));
        let d = Violin::new(Default::default(), Default::default()).plan(&snap, &hot);
        let m = migrations(&d);
        let mut moved: Vec<&str> = m.iter().map(|x| x.0.as_str()).collect();
        moved.sort();
        assert_eq!(moved, vec!["a1", "a2", "b1"], "{m:?}");
        assert!(m.iter().all(|x| x.2 == "c" || x.2 == "d"));
        assert!(d.iter().all(|x| x.reason.contains("environment t1")));
    }

    /// The overloaded-domain case of `whole_environment_moves_when_domain_full`,
    /// but on a snapshot the live builder made from host daemons'
    /// registrations and reports alone: no `[groups]`, no API set, no
    /// scenario file. Domains d0 = {a, b}, d1 = {c, d} and environments
    /// t1 = {a1, a2, b1 (head)}, t2, t3 come from the registrations; t1
    /// moves to d1 except its head.
    #[test]
    fn environment_moves_on_a_live_snapshot_with_registered_groups() {
        use crate::knowledge::groups::Groups;
        use crate::knowledge::live::{build_snapshot, LiveInputs};
        use crate::monitor::hosts::tests::{reg, report, vm};
        use crate::monitor::hosts::HostRegistry;
        use crate::monitor::topology::tests::build;
        let topo = build(
            std::time::Instant::now(),
            &[(0x31, 5), (0x41, 2), (0x42, 2), (0x43, 2), (0x44, 2)],
            &[
                ((0x41, 1), (0x31, 1)),
                ((0x42, 1), (0x31, 2)),
                ((0x43, 1), (0x31, 3)),
                ((0x44, 1), (0x31, 4)),
            ],
        );
        /// Host id, bridge, domain, VMs (name, CPU, environment, head).
        type Layout<'a> = (&'a str, u64, &'a str, &'a [(&'a str, f64, &'a str, bool)]);
        let layout: [Layout<'_>; 4] = [
            (
                "a",
                0x41,
                "d0",
                &[
                    ("a1", 0.95, "t1", false),
                    ("a2", 0.9, "t1", false),
                    ("a3", 0.9, "t2", false),
                    ("a4", 0.9, "t2", false),
                ],
            ),
            (
                "b",
                0x42,
                "d0",
                &[
                    ("b1", 0.9, "t1", true),
                    ("b2", 0.9, "t3", false),
                    ("b3", 0.9, "t3", false),
                    ("b4", 0.9, "t3", false),
                ],
            ),
            ("c", 0x43, "d1", &[]),
            ("d", 0x44, "d1", &[]),
        ];
        let mut hosts = HostRegistry::default();
        for (i, (id, dpid, domain, vms)) in layout.iter().enumerate() {
            let inv = vms
                .iter()
                .enumerate()
                .map(|(j, (name, _, env, head))| {
                    let mut v = vm(name, &format!("02:00:00:00:{i:02x}:{j:02x}"));
                    v.environment = Some(env.to_string());
                    v.environment_head = *head;
                    v
                })
                .collect();
            let mut r = reg(id, *dpid, inv);
            r.domain = Some(domain.to_string());
            hosts.register(id, r, 0).unwrap();
            for seq in 1..=5u64 {
                let mut rep = report(id, seq, vec![]);
                let base = rep.vms[0].clone();
                rep.vms = vms
                    .iter()
                    .map(|(name, cpu, _, _)| {
                        let mut m = base.clone();
                        m.name = name.to_string();
                        m.cpu_cores = *cpu;
                        m
                    })
                    .collect();
                rep.host.cpu_util = vms.iter().map(|v| v.1).sum::<f64>() / 4.0;
                rep.host.mem_total_mb = 4096;
                rep.host.mem_used_mb = 512;
                hosts.report(id, rep, seq as i64 * 10_000).unwrap();
            }
        }
        let none = std::collections::BTreeMap::new();
        let no_groups = Groups::default();
        let snap = build_snapshot(&LiveInputs {
            now_unix_ms: 50_000,
            interval_s: 10.0,
            ..LiveInputs::new(&hosts, &topo, &none, &[], &no_groups)
        });
        assert_eq!(snap.hosts["a"].domain.as_deref(), Some("d0"));
        assert_eq!(snap.vms["b1"].environment.as_deref(), Some("t1"));
        assert!(snap.vms["b1"].head);
        let hot = crate::analyze::detect(&snap, &crate::analyze::HotspotConfig::default());
        assert!(hot.is_hot("a", Resource::Cpu) && hot.is_hot("b", Resource::Cpu));
        let d = Violin::new(Default::default(), Default::default()).plan(&snap, &hot);
        let m = migrations(&d);
        // t1 without its head leaves d0 for d1, as one environment move.
        let env_moves: Vec<&super::Decision> = d
            .iter()
            .filter(|x| x.reason.contains("environment t1 moves"))
            .collect();
        let mut moved: Vec<&str> = m
            .iter()
            .filter(|x| x.2 == "c" || x.2 == "d")
            .map(|x| x.0.as_str())
            .collect();
        moved.sort();
        assert_eq!(moved, vec!["a1", "a2"], "{m:?}");
        assert_eq!(env_moves.len(), 2, "{m:?}");
        // The head (b1) stays in its domain (it may move within it, to the
        // room the environment left).
        assert!(
            m.iter().all(|x| x.0 != "b1" || x.2 == "a" || x.2 == "b"),
            "{m:?}"
        );
    }
}
