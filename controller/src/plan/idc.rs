//! IDC-aware migration (the IDC-aware thesis; rules and choices in
//! `docs/algorithms.md`).
//!
//! For VM `j` on hotspot host `i` and destination `k`, every term in one
//! direction's units (bytes/s of the busier direction): `Is` = traffic of
//! `j` with VMs on `i` (IDC today), `Nsd` = with VMs on `k`, `Nso` = with
//! VMs elsewhere; `Nds = min(Is, AB, NB)` (Eq. 2) with `AB` the NIC
//! bandwidth `i` has left once `j` is gone, computed from today's NIC
//! traffic minus `j`'s NIC traffic (before any of `Is` turns into NIC
//! traffic), and `NB` the per-VM network bound;
//! `NBen = (Nso + Nsd − Nds) / NIC_i` (one direction's capacity);
//! `V_ijk = CPU_ij·C_i + Mem_ij·M_i + NBen_ijk` (`C_i`/`M_i` = 1 when `i` is
//! overloaded on CPU / memory).
//!
//! The pair with the largest `V` among destinations with room wins; ties go
//! to the VM with more network traffic. Note that `Nso + Nsd` is `j`'s NIC
//! traffic whichever `k` is chosen, so `V` does not vary with `k`: the
//! destination is the host with room that carries the most traffic with `j`
//! (largest `Nsd`, then the least CPU-loaded, then the id). That is what
//! reunites communicating groups; low-IDC VMs win the victim choice because
//! `Nds` (≤ `Is`) is subtracted.
//!
//! Memory first (thesis §4.2.4): on a memory hotspot one VM ([`GrowthTarget`],
//! default the swapping VM) grows by a whole `growth_step_mb` when the host
//! has that much free memory and the VM stays within its maximum, every
//! round; while it does, no migration leaves that host (not even for CPU).
//! Only when a whole step cannot be given does the memory overload count in
//! `V` (`M_i = 1`) and a migration follow.

use super::constraints::{Ledger, NoRoom, HOTSPOT_DEFAULTS};
pub use super::growth::GrowthTarget;
use super::view::View;
use super::{
    Action, Alternative, ConstraintOptions, Decision, Details, MigrationCost, PlanError, Policy,
};
use crate::analyze::{DetectorDefaults, HotspotReport, Resource};
use crate::knowledge::snapshot::{ratio, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// IDC-aware options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdcOptions {
    /// Memory growth step, MB (> 0); growth goes in whole steps.
    pub growth_step_mb: f64,
    /// Which VM of a memory-hot host grows: `swapping` (default, the
    /// thesis's experiment) or `volume` (the thesis's text: the VM with the
    /// largest volume).
    pub growth_target: GrowthTarget,
    /// Per-VM network bound `NB`, bytes/s; `None` = the VM's vNIC cap
    /// (unbounded when unknown).
    pub nb_bytes_per_s: Option<f64>,
}

impl Default for IdcOptions {
    fn default() -> Self {
        IdcOptions {
            growth_step_mb: 32.0,
            growth_target: GrowthTarget::Swapping,
            nb_bytes_per_s: None,
        }
    }
}

impl IdcOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), PlanError> {
        if !(self.growth_step_mb.is_finite() && self.growth_step_mb > 0.0) {
            return Err(PlanError::invalid(
                "idc.growth_step_mb",
                format!("must be > 0, got {}", self.growth_step_mb),
            ));
        }
        if let Some(nb) = self.nb_bytes_per_s {
            if !(nb.is_finite() && nb >= 0.0) {
                return Err(PlanError::invalid(
                    "idc.nb_bytes_per_s",
                    format!("must be >= 0, got {nb}"),
                ));
            }
        }
        Ok(())
    }
}

/// The IDC-aware policy.
#[derive(Debug, Clone)]
pub struct Idc {
    constraints: ConstraintOptions,
    opts: IdcOptions,
}

impl Idc {
    /// An IDC-aware policy.
    pub fn new(constraints: ConstraintOptions, opts: IdcOptions) -> Self {
        Idc { constraints, opts }
    }
}

/// One scored (VM, destination) pair.
#[derive(Debug, Clone)]
struct Cand {
    v: usize,
    k: usize,
    value: f64,
    traffic: f64,
    nsd: f64,
    k_cpu: f64,
    is: f64,
    nso: f64,
    nds: f64,
    ab: f64,
    nben: f64,
    cpu_ij: f64,
    mem_ij: f64,
}

/// Traffic of one VM with a group of peers, per direction (bytes/s).
#[derive(Debug, Clone, Copy, Default)]
struct Dir {
    out: f64,
    inn: f64,
}

impl Dir {
    /// The busier direction.
    fn one(self) -> f64 {
        self.out.max(self.inn)
    }
}

impl Policy for Idc {
    fn name(&self) -> &'static str {
        "idc"
    }

    /// The thesis: memory overload is swap activity only; the network
    /// observation is NIC traffic only.
    fn detector_defaults(&self) -> DetectorDefaults {
        DetectorDefaults::SWAP_AND_NIC
    }

    fn plan(&mut self, snap: &Snapshot, hot: &HotspotReport) -> Vec<Decision> {
        let view = View::new(snap);
        let mut led = Ledger::new(
            &view,
            hot.thresholds,
            self.constraints.resolve(HOTSPOT_DEFAULTS),
        );
        let host_vms = view.vms_by_host();
        let mut out = Vec::new();
        for id in hot.hot.keys() {
            let Some(i) = view.host_id(id) else { continue };
            let mem_hot = hot.is_hot(id, Resource::Mem);
            let cpu_hot = hot.is_hot(id, Resource::Cpu);
            let net_hot = hot.is_hot(id, Resource::Net);
            let vms: &[usize] = host_vms.get(i).map_or(&[], |l| l.as_slice());
            if mem_hot {
                if let Some(d) = super::growth::grow(
                    &view,
                    &mut led,
                    i,
                    vms,
                    self.opts.growth_step_mb,
                    self.opts.growth_target,
                    "idc",
                ) {
                    // Memory first: no migration leaves the host while
                    // growth resolves its overload.
                    out.push(d);
                    continue;
                }
            }
            let c_i = if cpu_hot { 1.0 } else { 0.0 };
            let m_i = if mem_hot { 1.0 } else { 0.0 };
            if c_i == 0.0 && m_i == 0.0 && !net_hot {
                continue;
            }
            if led.source_limit_reached(i) {
                continue;
            }
            if let Some(d) = self.migrate(&view, &mut led, i, vms, c_i, m_i, hot) {
                out.push(d);
            }
        }
        out
    }
}

impl Idc {
    /// Every (VM, destination) pair of hot host `i` with its value V_ijk,
    /// best first, and the VMs that may not move.
    fn candidates(
        &self,
        view: &View,
        led: &Ledger,
        i: usize,
        vms: &[usize],
        c_i: f64,
        m_i: f64,
    ) -> Option<(Vec<Cand>, Vec<Alternative>)> {
        let host_i = view.hosts.get(i)?;
        let nic_i = host_i.nic_bytes_per_s();
        let tx_i = led.tx.get(i).copied().unwrap_or(0.0);
        let rx_i = led.rx.get(i).copied().unwrap_or(0.0);
        let hn = view.host_count();
        let mut cands: Vec<Cand> = Vec::new();
        let mut blocked_alts = Vec::new();
        for &j in vms {
            if let Some(b) = led.blocked(j) {
                blocked_alts.push(Alternative {
                    vm: Some(view.vm_name(j).into()),
                    host: None,
                    score: None,
                    rejected: b.as_str().into(),
                });
                continue;
            }
            let s = view.vm_sample(j);
            let mut by_host: BTreeMap<usize, Dir> = BTreeMap::new();
            let mut total = Dir::default();
            for p in view.peers(j) {
                let d = by_host.entry(led.host_of(p.vm)).or_default();
                d.out += p.out;
                d.inn += p.inn;
                total.out += p.out;
                total.inn += p.inn;
            }
            let on_i = by_host.get(&i).copied().unwrap_or_default();
            let is = on_i.one();
            // j's NIC traffic today: with VMs on other hosts and outside.
            let j_tx = total.out - on_i.out + view.ext_tx.get(j).copied().unwrap_or(0.0);
            let j_rx = total.inn - on_i.inn + view.ext_rx.get(j).copied().unwrap_or(0.0);
            // AB: what i's NIC has left once j's NIC traffic is gone,
            // before any of Is becomes NIC traffic (Eq. 2).
            let ab = (nic_i - (tx_i - j_tx).max(rx_i - j_rx)).max(0.0);
            let nb = self
                .opts
                .nb_bytes_per_s
                .or(view.vms.get(j).and_then(|x| x.vnic_bytes_per_s))
                .unwrap_or(f64::INFINITY);
            let nds = is.min(ab).min(nb);
            let cpu_ij = ratio(s.cpu_cores, host_i.cores);
            let mem_ij = ratio(led.vm_mem.get(j).copied().unwrap_or(0.0), host_i.memory_mb);
            for k in 0..hn {
                if k == i {
                    continue;
                }
                let on_k = by_host.get(&k).copied().unwrap_or_default();
                let nsd = on_k.one();
                let nso = Dir {
                    out: total.out - on_i.out - on_k.out,
                    inn: total.inn - on_i.inn - on_k.inn,
                }
                .one();
                let nben = ratio(nso + nsd - nds, nic_i);
                cands.push(Cand {
                    v: j,
                    k,
                    value: cpu_ij * c_i + mem_ij * m_i + nben,
                    traffic: total.out + total.inn,
                    nsd,
                    k_cpu: led.cpu_util(k),
                    is,
                    nso,
                    nds,
                    ab,
                    nben,
                    cpu_ij,
                    mem_ij,
                });
            }
        }
        cands.sort_by(|a, b| {
            b.value
                .total_cmp(&a.value)
                .then(b.traffic.total_cmp(&a.traffic))
                .then(a.v.cmp(&b.v))
                .then(b.nsd.total_cmp(&a.nsd))
                .then(a.k_cpu.total_cmp(&b.k_cpu))
                .then(a.k.cmp(&b.k))
        });
        Some((cands, blocked_alts))
    }

    #[allow(clippy::too_many_arguments)]
    fn migrate(
        &self,
        view: &View,
        led: &mut Ledger,
        i: usize,
        vms: &[usize],
        c_i: f64,
        m_i: f64,
        hot: &HotspotReport,
    ) -> Option<Decision> {
        let (cands, blocked_alts) = self.candidates(view, led, i, vms, c_i, m_i)?;
        let mut rejected: Vec<(usize, usize, f64, NoRoom)> = Vec::new();
        let mut pick = None;
        for (n, c) in cands.iter().enumerate() {
            if hot.is_hotspot(view.host_name(c.k)) {
                continue;
            }
            match led.check(c.v, c.k) {
                Ok(cost) => {
                    pick = Some((n, cost));
                    break;
                }
                Err(e) => {
                    if rejected.len() < 3 {
                        rejected.push((c.v, c.k, c.value, e));
                    }
                }
            }
        }
        let (n, cost) = pick?;
        let c = cands.get(n)?.clone();
        // Runner-up: the best pair of another VM that could have moved.
        let runner_up = cands
            .iter()
            .skip(n + 1)
            .find(|o| {
                o.v != c.v && !hot.is_hotspot(view.host_name(o.k)) && led.check(o.v, o.k).is_ok()
            })
            .cloned();
        let details = explain(
            view,
            &c,
            runner_up.as_ref(),
            cost,
            rejected,
            blocked_alts,
            c_i,
            m_i,
        );
        led.apply_move(c.v, c.k);
        let mut why = Vec::new();
        if m_i > 0.0 {
            why.push("memory (no whole growth step possible)");
        }
        if c_i > 0.0 {
            why.push("cpu");
        }
        if hot.is_hot(view.host_name(i), Resource::Net) {
            why.push("net");
        }
        Some(Decision {
            action: Action::Migrate {
                vm: view.vm_name(c.v).into(),
                from: view.host_name(i).into(),
                to: view.host_name(c.k).into(),
            },
            reason: format!(
                "idc: hotspot ({}); largest V_ijk, destination hosting most of its peers",
                why.join(", ")
            ),
            score: c.value,
            details,
        })
    }
}

/// The numbers behind the chosen pair and the alternatives: rejected
/// destinations, VMs that may not move, and the runner-up VM (a feasible
/// pair only).
#[allow(clippy::too_many_arguments)]
fn explain(
    view: &View,
    c: &Cand,
    runner_up: Option<&Cand>,
    cost: MigrationCost,
    rejected: Vec<(usize, usize, f64, NoRoom)>,
    blocked_alts: Vec<Alternative>,
    c_i: f64,
    m_i: f64,
) -> Details {
    let mut details = Details::default()
        .metric("v", c.value)
        .metric("cpu_ij", c.cpu_ij)
        .metric("mem_ij", c.mem_ij)
        .metric("c_i", c_i)
        .metric("m_i", m_i)
        .metric("is", c.is)
        .metric("nsd", c.nsd)
        .metric("nso", c.nso)
        .metric("ab", c.ab)
        .metric("nds", c.nds)
        .metric("nben", c.nben);
    details.migration = Some(cost);
    for (v, k, value, e) in rejected {
        details.push_alternative(Alternative {
            vm: Some(view.vm_name(v).into()),
            host: Some(view.host_name(k).into()),
            score: Some(value),
            rejected: e.as_str(),
        });
    }
    for a in blocked_alts {
        details.push_alternative(a);
    }
    if let Some(o) = runner_up {
        details.push_alternative(Alternative {
            vm: Some(view.vm_name(o.v).into()),
            host: Some(view.host_name(o.k).into()),
            score: Some(o.value),
            rejected: "lower V".into(),
        });
    }
    details
}

/// Most IDC groups [`idc_groups`] returns by default (`GET /api/v1/groups`).
pub const MAX_IDC_GROUPS: usize = 100;

/// The traffic-derived IDC groups of `snap`: the inter-dependent VM
/// clusters, i.e. the connected components of the graph whose vertices are
/// the snapshot's VMs and whose edges are the VM pairs with traffic in
/// either direction (λ(u,v) + λ(v,u) > 0; externals and unknown names left
/// out). Groups of one VM are left out. Each group's members are sorted by
/// name; the groups come heaviest first (total traffic inside the group,
/// then size, then the first member), at most `limit` of them.
pub fn idc_groups(snap: &Snapshot, limit: usize) -> Vec<Vec<String>> {
    let names: Vec<&str> = snap.vms.keys().map(String::as_str).collect();
    let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    // Union-find over VM indices.
    let mut parent: Vec<usize> = (0..names.len()).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while let Some(&p) = parent.get(x) {
            if p == x {
                break;
            }
            let gp = parent.get(p).copied().unwrap_or(p);
            if let Some(slot) = parent.get_mut(x) {
                *slot = gp;
            }
            x = p;
        }
        x
    }
    let mut edges: Vec<(usize, usize, f64)> = Vec::new();
    for (u, row) in &snap.traffic {
        let Some(&a) = index.get(u.as_str()) else {
            continue;
        };
        for (v, &rate) in row {
            let Some(&b) = index.get(v.as_str()) else {
                continue;
            };
            if a == b || !(rate.is_finite() && rate > 0.0) {
                continue;
            }
            edges.push((a, b, rate));
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            if ra != rb {
                if let Some(slot) = parent.get_mut(ra.max(rb)) {
                    *slot = ra.min(rb);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, (Vec<usize>, f64)> = BTreeMap::new();
    for i in 0..names.len() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().0.push(i);
    }
    for (a, _, rate) in edges {
        let r = root(&mut parent, a);
        if let Some(g) = groups.get_mut(&r) {
            g.1 += rate;
        }
    }
    let mut out: Vec<(f64, Vec<usize>)> = groups
        .into_values()
        .filter(|(m, _)| m.len() > 1)
        .map(|(m, w)| (w, m))
        .collect();
    out.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(b.1.len().cmp(&a.1.len()))
            .then(a.1.first().cmp(&b.1.first()))
    });
    out.into_iter()
        .take(limit)
        .map(|(_, m)| {
            m.into_iter()
                .filter_map(|i| names.get(i).map(|n| n.to_string()))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::{migrations, Dc};

    /// Host a is CPU-hot (7.2 of 8 cores = 0.9). Two candidates, 2 cores
    /// each (CPU_ij = 2/8 = 0.25, C_i = 1, M_i = 0). `talk` sets both
    /// directions; every term is one direction's rate:
    /// - j1 talks 100 MB/s with a1 on a (Is = 100e6) and 20 MB/s with b1 on
    ///   b (Nso or Nsd = 20e6);
    /// - j2 talks 100 MB/s with c1 on c (Nsd for k = c: 100e6) and 20 MB/s
    ///   with a1 (Is = 20e6).
    ///
    /// NIC_a = 10 Gbit/s = 1.25e9 B/s; AB ≥ 1e9 so Nds = Is.
    /// j1: NBen = (20e6 − 100e6)/1.25e9 = −0.064, V = 0.25 − 0.064 = 0.186.
    /// j2: NBen = (100e6 − 20e6)/1.25e9 = +0.064, V = 0.314.
    /// a1 (CPU_ij = 0.4, all its traffic is IDC: Is = 120e6): V = 0.304.
    /// j2 (low IDC) wins, and goes to c, which hosts its peer c1 (b has room
    /// and even less CPU load, but carries no traffic of j2).
    #[test]
    fn low_idc_vm_to_the_host_of_its_peers() {
        let (snap, hot) = Dc::new()
            .host("a", "r0", "p0", 8.0, 65536.0)
            .host("b", "r0", "p0", 8.0, 65536.0)
            .host("c", "r1", "p0", 8.0, 65536.0)
            .vm("j1", "a", 2.0, 1024.0)
            .vm("j2", "a", 2.0, 1024.0)
            .vm("a1", "a", 3.2, 1024.0)
            .vm("b1", "b", 0.5, 1024.0)
            .vm("c1", "c", 1.0, 1024.0)
            .talk("j1", "a1", 100e6)
            .talk("j1", "b1", 20e6)
            .talk("j2", "c1", 100e6)
            .talk("j2", "a1", 20e6)
            .build(5);
        assert!(hot.is_hot("a", Resource::Cpu));
        let d = Idc::new(Default::default(), Default::default()).plan(&snap, &hot);
        assert_eq!(migrations(&d), vec![("j2".into(), "a".into(), "c".into())]);
        let m = &d[0].details.metrics;
        assert!((m["v"] - 0.314).abs() < 1e-9, "{m:?}");
        assert!((m["nsd"] - 100e6).abs() < 1e-3);
        // Runner-up: a1 (3.2 cores: CPU_ij = 0.4; Is = 100e6 + 20e6, Nso = 0):
        // V = 0.4 − 120e6/1.25e9 = 0.304 (j1's 0.186 is lower still).
        let alt = &d[0].details.alternatives[0];
        assert_eq!(alt.vm.as_deref(), Some("a1"));
        assert!((alt.score.unwrap() - 0.304).abs() < 1e-9, "{alt:?}");
    }

    /// Memory hotspot by swap-out: v1 swaps 400 pages/s and the host has
    /// free memory, v1 is below its maximum: grow by 32 MB, no migration.
    /// When v1 is at its maximum, growth is impossible: migrate (M_i = 1).
    #[test]
    fn memory_first_growth_then_migration() {
        let base = || {
            Dc::new()
                .host("a", "r0", "p0", 8.0, 8192.0)
                .host("b", "r0", "p0", 8.0, 8192.0)
                .vm("v1", "a", 1.0, 2048.0)
                .vm("v2", "a", 1.0, 1024.0)
                .with_vm("v1", |v| v.history[0].swap_out_pps = 400.0)
        };
        let (snap, hot) = base().build(5);
        assert!(hot.is_hot("a", Resource::Mem));
        let d = Idc::new(Default::default(), Default::default()).plan(&snap, &hot);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].action,
            Action::Resize {
                vm: "v1".into(),
                host: "a".into(),
                target_mb: 2080.0
            }
        );
        let (snap, hot) = base().with_vm("v1", |v| v.max_memory_mb = 2048.0).build(5);
        let d = Idc::new(Default::default(), Default::default()).plan(&snap, &hot);
        let m = migrations(&d);
        assert_eq!(m.len(), 1);
        // V = Mem_ij: v1 (2048/8192 = 0.25) beats v2 (0.125).
        assert_eq!(m[0], ("v1".into(), "a".into(), "b".into()));
        assert_eq!(d[0].details.metrics["m_i"], 1.0);
    }

    /// Eq. 2 near NIC saturation. NIC_a = 1.25e9 B/s (one direction);
    /// traffic is symmetric, so every term is one direction's rate:
    /// - x talks 0.44·C with r on o2 (NIC) and 0.32·C with p on a (IDC);
    /// - y talks 0.40·C with q on o1 (NIC), no IDC.
    ///
    /// a's NIC carries 0.84·C per direction (> 0.80: net hot). For x,
    /// AB = C − (0.84 − 0.44)·C = 0.60·C, computed before any of Is becomes
    /// NIC traffic, so Nds = min(Is, AB) = 0.32·C and NBen_x = 0.44 − 0.32 =
    /// 0.12; NBen_y = 0.40. y leaves (to o1, where q runs), x is the
    /// runner-up with V = 0.12.
    fn saturated(x_mem: f64) -> (Snapshot, HotspotReport) {
        let c = 1.25e9;
        Dc::new()
            .host("a", "r0", "p0", 8.0, 65536.0)
            .host("o1", "r0", "p0", 8.0, 8192.0)
            .host("o2", "r0", "p0", 8.0, 8192.0)
            .vm("x", "a", 1.0, x_mem)
            .vm("p", "a", 1.0, 1024.0)
            .vm("y", "a", 1.0, 1024.0)
            .vm("q", "o1", 1.0, 1024.0)
            .vm("r", "o2", 1.0, 1024.0)
            .talk("x", "r", 0.44 * c)
            .talk("x", "p", 0.32 * c)
            .talk("y", "q", 0.40 * c)
            .build(5)
    }

    #[test]
    fn nben_uses_available_bandwidth_before_is_becomes_nic_traffic() {
        let (snap, hot) = saturated(1024.0);
        assert!(hot.is_hot("a", Resource::Net), "{hot:?}");
        let d = Idc::new(Default::default(), Default::default()).plan(&snap, &hot);
        assert_eq!(migrations(&d), vec![("y".into(), "a".into(), "o1".into())]);
        let m = &d[0].details.metrics;
        assert!((m["nben"] - 0.40).abs() < 1e-9, "{m:?}");
        let alt = &d[0].details.alternatives[0];
        assert_eq!(alt.vm.as_deref(), Some("x"), "{alt:?}");
        assert!((alt.score.unwrap() - 0.12).abs() < 1e-9, "{alt:?}");
    }

    /// The runner-up reported is a VM that could have moved: x (V = 0.12)
    /// fits on no host (60000 MB), so p (V = (0 − min(0.32·C, AB_p =
    /// C − 0.84·C))/C = −0.16) is the runner-up, never x.
    #[test]
    fn runner_up_is_feasible() {
        let (snap, hot) = saturated(60000.0);
        let d = Idc::new(Default::default(), Default::default()).plan(&snap, &hot);
        assert_eq!(migrations(&d), vec![("y".into(), "a".into(), "o1".into())]);
        let lower: Vec<&Alternative> = d[0]
            .details
            .alternatives
            .iter()
            .filter(|a| a.rejected == "lower V")
            .collect();
        assert_eq!(lower.len(), 1, "{lower:?}");
        assert_eq!(lower[0].vm.as_deref(), Some("p"), "{lower:?}");
        assert!((lower[0].score.unwrap() + 0.16).abs() < 1e-9, "{lower:?}");
    }

    /// Growth goes in whole 32 MB steps: a has 20 MB free, so v1 cannot
    /// grow and the memory-first rule falls through to migration (M_i = 1;
    /// V = Mem_ij picks v2, 6124/8192).
    #[test]
    fn growth_in_whole_steps_else_migration() {
        let (snap, hot) = Dc::new()
            .host("a", "r0", "p0", 8.0, 8192.0)
            .host("b", "r0", "p0", 8.0, 8192.0)
            .vm("v1", "a", 1.0, 2048.0)
            .vm("v2", "a", 1.0, 6124.0)
            .with_vm("v1", |v| v.history[0].swap_out_pps = 400.0)
            .build(5);
        assert!(hot.is_hot("a", Resource::Mem));
        let d = Idc::new(Default::default(), Default::default()).plan(&snap, &hot);
        assert!(
            d.iter().all(|d| !matches!(d.action, Action::Resize { .. })),
            "{d:?}"
        );
        assert_eq!(migrations(&d), vec![("v2".into(), "a".into(), "b".into())]);
        assert_eq!(d[0].details.metrics["m_i"], 1.0);
    }

    /// Which VM grows: the swapping VM by default (the thesis's
    /// experiment); with `growth_target = volume` the VM with the largest
    /// Sandpiper volume (the thesis's text). v1 swaps (vol = 1/(0.875 ·
    /// 0.875) = 1.31); v2 does not, but is busier and bigger (vol =
    /// 1/(0.5 · 0.75) = 2.67).
    #[test]
    fn growth_target_option() {
        let (snap, hot) = Dc::new()
            .host("a", "r0", "p0", 8.0, 8192.0)
            .host("b", "r0", "p0", 8.0, 8192.0)
            .vm("v1", "a", 1.0, 1024.0)
            .vm("v2", "a", 4.0, 2048.0)
            .with_vm("v1", |v| v.history[0].swap_out_pps = 400.0)
            .build(5);
        let grown = |opts: IdcOptions| {
            let d = Idc::new(Default::default(), opts).plan(&snap, &hot);
            assert_eq!(d.len(), 1, "{d:?}");
            match &d[0].action {
                Action::Resize { vm, target_mb, .. } => (vm.clone(), *target_mb),
                a => panic!("{a:?}"),
            }
        };
        assert_eq!(grown(IdcOptions::default()), ("v1".into(), 1056.0));
        let volume = IdcOptions {
            growth_target: GrowthTarget::Volume,
            ..Default::default()
        };
        assert_eq!(grown(volume), ("v2".into(), 2080.0));
    }

    /// IDC groups are the connected components of the VM traffic graph,
    /// heaviest first, externals and lone VMs left out, bounded.
    #[test]
    fn idc_groups_are_traffic_components() {
        let mut dc = Dc::new().host("h1", "r0", "p0", 8.0, 65536.0);
        for v in ["a", "b", "c", "d", "e", "f", "g"] {
            dc = dc.vm(v, "h1", 0.1, 512.0);
        }
        let (mut snap, _) = dc.build(3);
        let mut put = |u: &str, v: &str, r: f64| {
            snap.traffic
                .entry(u.to_string())
                .or_default()
                .insert(v.to_string(), r);
        };
        // {a, b, c} light (a-b, c-b one way), {d, e} heavy, f talks to an
        // external only, g to no one; a zero rate is no edge.
        put("a", "b", 10.0);
        put("c", "b", 5.0);
        put("d", "e", 1000.0);
        put("f", "ext:192.0.2.1", 1e6);
        put("g", "a", 0.0);
        let g = idc_groups(&snap, MAX_IDC_GROUPS);
        assert_eq!(
            g,
            vec![
                vec!["d".to_string(), "e".to_string()],
                vec!["a".to_string(), "b".to_string(), "c".to_string()],
            ]
        );
        assert_eq!(idc_groups(&snap, 1).len(), 1);
        assert!(idc_groups(&snap, 0).is_empty());
    }
}
