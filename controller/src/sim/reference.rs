//! The reference optimum: a strong centralised optimiser of the overall
//! communication cost `C` under the same capacity constraints as the
//! policies (slots, CPU / memory / NIC thresholds, memory capacity).
//!
//! ## Why this design
//!
//! `C` is a hierarchical graph-partitioning objective: heavy pairs should
//! share a host, then a rack, then a pod. The optimiser therefore
//!
//! 1. **constructs** a placement by greedy graph growing, the classic seed
//!    of multilevel partitioners: hosts are filled one after another in
//!    rack / pod order; each host starts from the unplaced VM most connected
//!    to the rack being filled (else the VM with the most traffic) and grows
//!    by repeatedly adding the unplaced VM with the most traffic to the
//!    host's VMs (ties: to the rack's VMs), while it fits;
//! 2. **refines** that placement and, separately, the current placement by
//!    local search with single moves **and pairwise swaps** (a swap is what
//!    a token-passing scheme that moves one VM at a time cannot do when
//!    hosts are full), best improvement per VM, in a seeded random order,
//!    until a pass improves `C` by less than 10⁻⁶ of it (at most 40 passes);
//! 3. perturbs each local optimum by simulated annealing (200 proposals per
//!    VM: a move to a peer's host, or a swap there when it is full;
//!    Metropolis acceptance, geometric cooling over four decades) and
//!    refines again, keeping the better result;
//! 4. keeps the better of the two starts.
//!
//! Every move and swap is checked with the policies' own [`Ledger`], so the
//! reference obeys exactly the same constraints. With placement rules
//! (`Snapshot::rules`) it searches single moves only, from the current
//! placement: each move goes through the ledger's rule checks, while a
//! swap and the constructed start (which ignore the rules) are skipped. A genetic algorithm (the
//! S-CORE paper's reference) explores more but needs far more evaluations to
//! reach the same quality at 40,960 VMs; construction + move/swap local
//! search + annealing reaches a deep local optimum in about ten seconds at
//! full scale (release build), and is deterministic for a seed.

use super::rng::Rng;
use crate::analyze::Thresholds;
use crate::knowledge::snapshot::{HostState, Snapshot};
use crate::plan::constraints::{Ledger, Resolved};
use crate::plan::physics;
use crate::plan::score::cumulative_weights;
use crate::plan::view::View;

/// What the optimiser found.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// Best communication cost found.
    pub cost: f64,
    /// Which start produced it: `constructed` or `current`.
    pub start: &'static str,
    /// Its placement: host of every VM, in VM name order.
    pub placement: Vec<String>,
    /// Local-search passes run.
    pub passes: usize,
}

const MAX_PASSES: usize = 40;

fn resolved() -> Resolved {
    Resolved {
        max_per_source: 0,
        cooldown_intervals: 0.0,
        nic_share: 0.5,
        downtime_goal_s: shoal_common::vmpatrol::DEFAULT_DOWNTIME_GOAL_S,
        min_progress_mb: shoal_common::vmpatrol::DEFAULT_MIN_PROGRESS_MB,
    }
}

/// Runs the optimiser on `snap` (which must carry the latest VM and host
/// samples, as the simulator's snapshots do).
pub fn optimize(
    snap: &Snapshot,
    thresholds: Thresholds,
    weights: &[f64; 4],
    seed: u64,
) -> Reference {
    let cum = cumulative_weights(weights);
    let mut best = local_search(snap, thresholds, &cum, seed, "current");
    tracing::debug!(
        cost = best.cost,
        passes = best.passes,
        "reference: local search from the current placement"
    );
    let constructed = if snap.rules.is_empty() {
        construct(snap, thresholds)
    } else {
        None
    };
    if let Some(built) = constructed {
        let r = local_search(&built, thresholds, &cum, seed ^ 0x5EED, "constructed");
        tracing::debug!(
            cost = r.cost,
            passes = r.passes,
            "reference: local search from the constructed placement"
        );
        if r.cost < best.cost {
            best = r;
        }
    }
    best
}

fn cost_at(view: &View, led: &Ledger, cum: &[f64; 5], u: usize, h: usize) -> f64 {
    view.peers(u)
        .iter()
        .map(|p| {
            p.total()
                * cum
                    .get(view.level(h, led.host_of(p.vm)))
                    .copied()
                    .unwrap_or(0.0)
        })
        .sum::<f64>()
        + ext_cost_at(view, cum, u, h)
}

/// `u`'s cost with the external endpoints, were it on host `h`.
fn ext_cost_at(view: &View, cum: &[f64; 5], u: usize, h: usize) -> f64 {
    view.ext_peers(u)
        .iter()
        .map(|p| p.total() * cum.get(view.ext_level(h, p.ext)).copied().unwrap_or(0.0))
        .sum()
}

fn total_cost(view: &View, led: &Ledger, cum: &[f64; 5]) -> f64 {
    (0..view.vm_count())
        .map(|u| {
            let hu = led.host_of(u);
            view.peers(u)
                .iter()
                .map(|p| {
                    p.out
                        * cum
                            .get(view.level(hu, led.host_of(p.vm)))
                            .copied()
                            .unwrap_or(0.0)
                })
                .sum::<f64>()
                + ext_cost_at(view, cum, u, hu)
        })
        .sum()
}

fn pair_traffic(view: &View, u: usize, w: usize) -> f64 {
    let peers = view.peers(u);
    peers
        .binary_search_by(|p| p.vm.cmp(&w))
        .ok()
        .and_then(|i| peers.get(i))
        .map_or(0.0, |p| p.total())
}

fn relocate(host_vms: &mut [Vec<usize>], u: usize, from: usize, to: usize) {
    if let Some(l) = host_vms.get_mut(from) {
        if let Some(i) = l.iter().position(|&x| x == u) {
            l.swap_remove(i);
        }
    }
    if let Some(l) = host_vms.get_mut(to) {
        l.push(u);
    }
}

/// Search state: the ledger (placement and loads) and VMs per host.
struct State<'v, 'a> {
    view: &'v View<'a>,
    led: Ledger<'v, 'a>,
    host_vms: Vec<Vec<usize>>,
    cum: [f64; 5],
}

impl State<'_, '_> {
    fn cost_at(&self, u: usize, h: usize) -> f64 {
        cost_at(self.view, &self.led, &self.cum, u, h)
    }

    fn do_move(&mut self, u: usize, h: usize) {
        let x = self.led.host_of(u);
        self.led.apply_move(u, h);
        relocate(&mut self.host_vms, u, x, h);
    }

    /// Swaps `u` (on x) and `w` (on h) if both hosts stay within limits.
    fn try_swap(&mut self, u: usize, w: usize) -> bool {
        if !self.view.rules.is_empty() {
            return false;
        }
        let (x, h) = (self.led.host_of(u), self.led.host_of(w));
        self.led.apply_move(u, h);
        self.led.apply_move(w, x);
        if self.led.host_within_limits(x) && self.led.host_within_limits(h) {
            relocate(&mut self.host_vms, u, x, h);
            relocate(&mut self.host_vms, w, h, x);
            true
        } else {
            self.led.apply_move(w, h);
            self.led.apply_move(u, x);
            false
        }
    }

    /// Gain of swapping `u` (on x) with `w` (on h), given `u`'s move gain.
    fn swap_gain(&self, u: usize, w: usize, gu: f64) -> f64 {
        let (x, h) = (self.led.host_of(u), self.led.host_of(w));
        let level_w = self.cum.get(self.view.level(x, h)).copied().unwrap_or(0.0);
        let gw = self.cost_at(w, h) - self.cost_at(w, x);
        gu + gw - 2.0 * pair_traffic(self.view, u, w) * level_w
    }

    /// Best-improvement moves, then swaps, per VM in a seeded random order,
    /// until a pass gains less than 10⁻⁶ of the cost. Returns the passes.
    fn refine(&mut self, rng: &mut Rng) -> usize {
        let n = self.view.vm_count();
        let mut order: Vec<usize> = (0..n).collect();
        let mut cost = total_cost(self.view, &self.led, &self.cum);
        let mut passes = 0;
        for _ in 0..MAX_PASSES {
            passes += 1;
            rng.shuffle(&mut order);
            let mut gained = 0.0;
            for &u in &order {
                let peers = self.view.peers(u);
                let ext_peers = self.view.ext_peers(u);
                if peers.is_empty() && ext_peers.is_empty() {
                    continue;
                }
                let x = self.led.host_of(u);
                let mut cands: Vec<usize> = peers
                    .iter()
                    .map(|p| self.led.host_of(p.vm))
                    .chain(
                        ext_peers
                            .iter()
                            .flat_map(|p| self.view.ext_nearest_hosts(p.ext).iter().copied()),
                    )
                    .filter(|&h| h != x)
                    .collect();
                cands.sort_unstable();
                cands.dedup();
                let now = self.cost_at(u, x);
                let mut gains: Vec<(f64, usize)> = cands
                    .iter()
                    .map(|&h| (now - self.cost_at(u, h), h))
                    .filter(|(g, _)| *g > 1e-12)
                    .collect();
                gains.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                if let Some(&(g, h)) = gains.iter().find(|(_, h)| self.led.room(u, *h).is_ok()) {
                    self.do_move(u, h);
                    gained += g;
                    continue;
                }
                // Swaps with a VM of one of the three most attractive hosts.
                let mut swaps: Vec<(f64, usize)> = Vec::new();
                for &(gu, h) in gains.iter().take(3) {
                    for &w in self.host_vms.get(h).map_or(&[][..], |l| l.as_slice()) {
                        let g = self.swap_gain(u, w, gu);
                        if g > 1e-12 {
                            swaps.push((g, w));
                        }
                    }
                }
                swaps.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                for &(g, w) in swaps.iter().take(8) {
                    if self.try_swap(u, w) {
                        gained += g;
                        break;
                    }
                }
            }
            let new_cost = total_cost(self.view, &self.led, &self.cum);
            let improved = cost - new_cost;
            cost = new_cost;
            if gained <= 0.0 || improved <= 1e-6 * cost.max(1e-300) {
                break;
            }
        }
        passes
    }

    /// Simulated annealing: `budget` proposals (move `u` to the host of a
    /// random peer, or swap it with a random VM there when that host is
    /// full), Metropolis acceptance, geometric cooling from `t0` to
    /// `t0 · 10⁻⁴`.
    fn anneal(&mut self, rng: &mut Rng, budget: usize, t0: f64) {
        let n = self.view.vm_count();
        if n == 0 || t0 <= 0.0 || budget == 0 {
            return;
        }
        let cool = (1e-4f64).powf(1.0 / budget as f64);
        let mut t = t0;
        for _ in 0..budget {
            t *= cool;
            let u = rng.below(n);
            let peers = self.view.peers(u);
            let Some(p) = peers.get(rng.below(peers.len())) else {
                continue;
            };
            let x = self.led.host_of(u);
            let h = self.led.host_of(p.vm);
            if h == x {
                continue;
            }
            let gu = self.cost_at(u, x) - self.cost_at(u, h);
            let accept = |g: f64, rng: &mut Rng| g > 0.0 || rng.f64() < (g / t).exp();
            if self.led.room(u, h).is_ok() {
                if accept(gu, rng) {
                    self.do_move(u, h);
                }
                continue;
            }
            let on_h = self.host_vms.get(h).map_or(&[][..], |l| l.as_slice());
            let Some(&w) = on_h.get(rng.below(on_h.len())) else {
                continue;
            };
            let g = self.swap_gain(u, w, gu);
            if accept(g, rng) {
                self.try_swap(u, w);
            }
        }
    }
}

/// Annealing proposals per VM.
const ANNEAL_PER_VM: usize = 200;

fn local_search(
    snap: &Snapshot,
    thresholds: Thresholds,
    cum: &[f64; 5],
    seed: u64,
    start: &'static str,
) -> Reference {
    let view = View::new(snap);
    let led = Ledger::new(&view, thresholds, resolved());
    let n = view.vm_count();
    let mut host_vms: Vec<Vec<usize>> = vec![Vec::new(); view.host_count()];
    for u in 0..n {
        if let Some(l) = host_vms.get_mut(led.host_of(u)) {
            l.push(u);
        }
    }
    let mut st = State {
        view: &view,
        led,
        host_vms,
        cum: *cum,
    };
    let mut rng = Rng::new(seed);
    let mut passes = st.refine(&mut rng);
    let placement_of = |st: &State| -> Vec<String> {
        (0..n)
            .map(|u| view.host_name(st.led.host_of(u)).to_string())
            .collect()
    };
    let cost1 = total_cost(&view, &st.led, cum);
    let placement1 = placement_of(&st);
    // Annealing from the local optimum, starting at half the mean cost per
    // VM (a tuning run on the full-scale dc scenario: 0.01 to 2 all land
    // within 1 % of each other), then refine again.
    let t0 = 0.5 * cost1 / n.max(1) as f64;
    st.anneal(&mut rng, ANNEAL_PER_VM * n, t0);
    passes += st.refine(&mut rng);
    let cost2 = total_cost(&view, &st.led, cum);
    if cost2 < cost1 {
        Reference {
            cost: cost2,
            start,
            placement: placement_of(&st),
            passes,
        }
    } else {
        Reference {
            cost: cost1,
            start,
            placement: placement1,
            passes,
        }
    }
}

/// Greedy graph growing into hosts in rack order; `None` when the result
/// does not respect every limit (the current placement is used alone then).
fn construct(snap: &Snapshot, t: Thresholds) -> Option<Snapshot> {
    let view = View::new(snap);
    let n = view.vm_count();
    let hn = view.host_count();
    let mut hosts: Vec<usize> = (0..hn).collect();
    hosts.sort_by_key(|&h| {
        (
            view.host_cluster.get(h).copied(),
            view.host_pod.get(h).copied(),
            view.host_rack.get(h).copied(),
            h,
        )
    });
    let mut packer = Packer::new(&view);
    let mut prev_rack = None;
    for &h in &hosts {
        if packer.placed_count == n {
            break;
        }
        let Some(host) = view.hosts.get(h) else {
            continue;
        };
        let rack = view.host_rack.get(h).copied();
        if prev_rack != Some(rack) {
            packer.next_rack();
            prev_rack = Some(rack);
        }
        packer.next_host();
        packer.fill(&view, h, host, t);
    }
    if packer.placed_count < n {
        return None;
    }
    let mut out = snap.clone();
    for (u, vm) in out.vms.values_mut().enumerate() {
        // `View` indexes exactly the VMs whose host is known, in name order;
        // validated scenarios have no others.
        if let Some(h) = packer.host_of.get(u).and_then(|&h| view.host_names.get(h)) {
            vm.host = h.to_string();
        }
    }
    let samples = physics::host_samples(&out, out.now_s);
    for (id, s) in samples {
        if let Some(h) = out.hosts.get_mut(&id) {
            h.history = vec![s];
        }
    }
    let v2 = View::new(&out);
    let led = Ledger::new(&v2, t, resolved());
    (0..v2.host_count())
        .all(|h| led.host_within_limits(h))
        .then_some(out)
}

/// The greedy packing of [`construct`]: hosts are filled in topology order,
/// each with the free VM most connected to the host, else to the rack, else
/// the free VM with the most traffic overall.
struct Packer {
    /// VMs by total traffic, largest first.
    global: Vec<usize>,
    /// Next index of `global` that may be free.
    gptr: usize,
    placed: Vec<bool>,
    host_of: Vec<usize>,
    placed_count: usize,
    /// Traffic of each free VM with the VMs on the current host / rack.
    conn_host: Vec<f64>,
    conn_rack: Vec<f64>,
    host_cands: Vec<usize>,
    rack_cands: Vec<usize>,
}

impl Packer {
    fn new(view: &View<'_>) -> Self {
        let n = view.vm_count();
        let traffic: Vec<f64> = (0..n)
            .map(|u| view.peers(u).iter().map(|p| p.total()).sum())
            .collect();
        let mut global: Vec<usize> = (0..n).collect();
        global.sort_by(|&a, &b| {
            traffic
                .get(b)
                .copied()
                .unwrap_or(0.0)
                .total_cmp(&traffic.get(a).copied().unwrap_or(0.0))
                .then(a.cmp(&b))
        });
        Packer {
            global,
            gptr: 0,
            placed: vec![false; n],
            host_of: vec![usize::MAX; n],
            placed_count: 0,
            conn_host: vec![0.0; n],
            conn_rack: vec![0.0; n],
            host_cands: Vec::new(),
            rack_cands: Vec::new(),
        }
    }

    /// A new rack: no VM is connected to it yet.
    fn next_rack(&mut self) {
        for &c in &self.rack_cands {
            if let Some(x) = self.conn_rack.get_mut(c) {
                *x = 0.0;
            }
        }
        self.rack_cands.clear();
    }

    /// A new host: no VM is connected to it yet.
    fn next_host(&mut self) {
        for &c in &self.host_cands {
            if let Some(x) = self.conn_host.get_mut(c) {
                *x = 0.0;
            }
        }
        self.host_cands.clear();
    }

    /// Fills host `h` up to its slots and the CPU and memory thresholds.
    fn fill(&mut self, view: &View<'_>, h: usize, host: &HostState, t: Thresholds) {
        let slots = host.max_vms.map_or(usize::MAX, |m| m as usize);
        let cpu_cap = t.cpu * host.cores;
        let mem_cap = host.memory_mb.min(t.mem * host.memory_mb);
        let (mut count, mut cpu, mut mem) = (0usize, 0.0f64, 0.0f64);
        let mut rejected: Vec<usize> = Vec::new();
        loop {
            if count >= slots {
                break;
            }
            let Some(v) = self.pick(&rejected) else { break };
            let vcpu = view.vm_latest.get(v).map_or(0.0, |s| s.cpu_cores);
            let vmem = view.vms.get(v).map_or(0.0, |x| x.memory_mb);
            if cpu + vcpu > cpu_cap || mem + vmem > mem_cap {
                rejected.push(v);
                if rejected.len() > 32 {
                    break;
                }
                continue;
            }
            cpu += vcpu;
            mem += vmem;
            count += 1;
            self.place(view, v, h);
        }
    }

    /// The next VM to try: most connected to the host, else to the rack,
    /// else the one with the most traffic.
    fn pick(&mut self, rejected: &[usize]) -> Option<usize> {
        let placed = &self.placed;
        let is_free = |v: &usize| !placed.get(*v).copied().unwrap_or(true) && !rejected.contains(v);
        let (conn_host, conn_rack) = (&self.conn_host, &self.conn_rack);
        let by_host = self
            .host_cands
            .iter()
            .copied()
            .filter(is_free)
            .max_by(|&a, &b| {
                let ka = (
                    conn_host.get(a).copied().unwrap_or(0.0),
                    conn_rack.get(a).copied().unwrap_or(0.0),
                );
                let kb = (
                    conn_host.get(b).copied().unwrap_or(0.0),
                    conn_rack.get(b).copied().unwrap_or(0.0),
                );
                ka.0.total_cmp(&kb.0)
                    .then(ka.1.total_cmp(&kb.1))
                    .then(b.cmp(&a))
            });
        if by_host.is_some() {
            return by_host;
        }
        let by_rack = self
            .rack_cands
            .iter()
            .copied()
            .filter(is_free)
            .max_by(|&a, &b| {
                conn_rack
                    .get(a)
                    .copied()
                    .unwrap_or(0.0)
                    .total_cmp(&conn_rack.get(b).copied().unwrap_or(0.0))
                    .then(b.cmp(&a))
            });
        if by_rack.is_some() {
            return by_rack;
        }
        while self
            .global
            .get(self.gptr)
            .is_some_and(|v| placed.get(*v).copied().unwrap_or(true))
        {
            self.gptr += 1;
        }
        self.global
            .get(self.gptr..)
            .and_then(|rest| rest.iter().copied().find(|v| is_free(v)))
    }

    /// Places VM `v` on host `h`; its free peers become candidates.
    fn place(&mut self, view: &View<'_>, v: usize, h: usize) {
        self.placed_count += 1;
        if let Some(p) = self.placed.get_mut(v) {
            *p = true;
        }
        if let Some(x) = self.host_of.get_mut(v) {
            *x = h;
        }
        for p in view.peers(v) {
            if self.placed.get(p.vm).copied().unwrap_or(true) {
                continue;
            }
            if let Some(x) = self.conn_host.get_mut(p.vm) {
                *x += p.total();
            }
            if let Some(x) = self.conn_rack.get_mut(p.vm) {
                *x += p.total();
            }
            self.host_cands.push(p.vm);
            self.rack_cands.push(p.vm);
        }
    }
}
