//! IDC-aware migration.
//!
//! For VM `j` on hotspot host `i` and destination `k` (bytes/s, both
//! directions): `Is` = traffic of `j` with VMs on `i` (IDC today), `Nsd` =
//! with VMs on `k`, `Nso` = with VMs elsewhere; `Nds = min(Is, AB, NB)` with
//! `AB` the NIC bandwidth left on `i` once `j` is gone and `NB` the per-VM
//! network bound; `NBen = (Nso + Nsd − Nds) / NIC_i`;
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
//! Memory first: on a memory hotspot the most memory-pressured VM (highest
//! swap-out, then highest used/allocated) grows by `growth_step_mb` when the
//! host has free memory and the VM is below its maximum, every round; only
//! when that is impossible does the memory overload count in `V` (`M_i = 1`).
//! Memory is handled before CPU on the same host: a host that grows a VM can
//! still migrate for CPU or network in the same round, scored without `M_i`.

use super::constraints::{Ledger, NoRoom, HOTSPOT_DEFAULTS};
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
    /// Memory growth step, MB (> 0).
    pub growth_step_mb: f64,
    /// Per-VM network bound `NB`, bytes/s; `None` = the VM's vNIC cap
    /// (unbounded when unknown).
    pub nb_bytes_per_s: Option<f64>,
}

impl Default for IdcOptions {
    fn default() -> Self {
        IdcOptions {
            growth_step_mb: 32.0,
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
    nben: f64,
    cpu_ij: f64,
    mem_ij: f64,
}

impl Policy for Idc {
    fn name(&self) -> &'static str {
        "idc"
    }

    /// The thesis: memory overload is swap activity only; the network
    /// observation is NIC traffic only.
    fn detector_defaults(&self) -> DetectorDefaults {
        DetectorDefaults {
            mem_util_trigger: false,
            net_includes_idc: false,
        }
    }

    fn plan(&mut self, snap: &Snapshot, hot: &HotspotReport) -> Vec<Decision> {
        let view = View::new(snap);
        let mut led = Ledger::new(
            &view,
            hot.thresholds,
            self.constraints.resolve(HOTSPOT_DEFAULTS),
        );
        let hn = view.host_count();
        let mut host_vms: Vec<Vec<usize>> = vec![Vec::new(); hn];
        for v in 0..view.vm_count() {
            if let Some(l) = host_vms.get_mut(view.host_of(v)) {
                l.push(v);
            }
        }
        let mut out = Vec::new();
        for id in hot.hot.keys() {
            let Some(i) = view.host_id(id) else { continue };
            let mem_hot = hot.is_hot(id, Resource::Mem);
            let cpu_hot = hot.is_hot(id, Resource::Cpu);
            let net_hot = hot.is_hot(id, Resource::Net);
            let vms: &[usize] = host_vms.get(i).map_or(&[], |l| l.as_slice());
            let mut grew = false;
            if mem_hot {
                if let Some(d) = self.grow(&view, &mut led, i, vms) {
                    out.push(d);
                    grew = true;
                }
            }
            let c_i = if cpu_hot { 1.0 } else { 0.0 };
            let m_i = if mem_hot && !grew { 1.0 } else { 0.0 };
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
    /// Memory-first growth on host `i`; `None` when growth is impossible.
    fn grow(&self, view: &View, led: &mut Ledger, i: usize, vms: &[usize]) -> Option<Decision> {
        let pressure = |v: usize| {
            let s = view.vm_sample(v);
            let alloc = led.vm_mem.get(v).copied().unwrap_or(0.0);
            (s.swap_out_pps, ratio(s.mem_used_mb, alloc))
        };
        let &v = vms.iter().max_by(|&&a, &&b| {
            let (pa, pb) = (pressure(a), pressure(b));
            pa.0.total_cmp(&pb.0)
                .then(pa.1.total_cmp(&pb.1))
                .then(b.cmp(&a))
        })?;
        let host = view.hosts.get(i)?;
        let free = host.memory_mb - led.mem_used.get(i).copied().unwrap_or(0.0);
        let alloc = led.vm_mem.get(v).copied().unwrap_or(0.0);
        let max = view.vms.get(v).map_or(0.0, |x| x.max_memory_mb);
        let step = self.opts.growth_step_mb.min(free).min(max - alloc);
        if step <= 0.0 {
            return None;
        }
        let target = alloc + step;
        let (swap, used_ratio) = pressure(v);
        led.apply_resize(v, target);
        Some(Decision {
            action: Action::Resize {
                vm: view.vm_name(v).into(),
                host: view.host_name(i).into(),
                target_mb: target,
            },
            reason: "idc: memory hotspot; grow the most memory-pressured VM before migrating"
                .into(),
            score: swap,
            details: Details::default()
                .metric("swap_out_pps", swap)
                .metric("used_over_allocated", used_ratio)
                .metric("allocated_mb", alloc)
                .metric("max_memory_mb", max)
                .metric("host_free_mb", free)
                .metric("step_mb", step),
        })
    }

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
            let mut by_host: BTreeMap<usize, f64> = BTreeMap::new();
            let mut total = 0.0;
            for p in view.peers(j) {
                *by_host.entry(led.host_of(p.vm)).or_default() += p.total();
                total += p.total();
            }
            let is = by_host.get(&i).copied().unwrap_or(0.0);
            let (tx, rx) = led.nic_after_departure(j);
            let ab = (nic_i - tx.max(rx)).max(0.0);
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
                let nsd = by_host.get(&k).copied().unwrap_or(0.0);
                let nso = total - is - nsd;
                let nben = ratio(nso + nsd - nds, nic_i);
                cands.push(Cand {
                    v: j,
                    k,
                    value: cpu_ij * c_i + mem_ij * m_i + nben,
                    traffic: total,
                    nsd,
                    k_cpu: led.cpu_util(k),
                    is,
                    nso,
                    nds,
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
        let details = explain(view, &cands, n, cost, rejected, blocked_alts, c_i, m_i);
        led.apply_move(c.v, c.k);
        let mut why = Vec::new();
        if m_i > 0.0 {
            why.push("memory (growth impossible)");
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
/// destinations, VMs that may not move, and the runner-up VM.
#[allow(clippy::too_many_arguments)]
fn explain(
    view: &View,
    cands: &[Cand],
    n: usize,
    cost: MigrationCost,
    rejected: Vec<(usize, usize, f64, NoRoom)>,
    blocked_alts: Vec<Alternative>,
    c_i: f64,
    m_i: f64,
) -> Details {
    let Some(c) = cands.get(n) else {
        return Details::default();
    };
    let mut details = Details::default()
        .metric("v", c.value)
        .metric("cpu_ij", c.cpu_ij)
        .metric("mem_ij", c.mem_ij)
        .metric("c_i", c_i)
        .metric("m_i", m_i)
        .metric("is", c.is)
        .metric("nsd", c.nsd)
        .metric("nso", c.nso)
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
    // Runner-up VM (best pair of another VM).
    if let Some(o) = cands.iter().skip(n + 1).find(|o| o.v != c.v) {
        details.push_alternative(Alternative {
            vm: Some(view.vm_name(o.v).into()),
            host: Some(view.host_name(o.k).into()),
            score: Some(o.value),
            rejected: "lower V".into(),
        });
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::{migrations, Dc};

    /// Host a is CPU-hot (7.2 of 8 cores = 0.9). Two candidates, 2 cores
    /// each (CPU_ij = 2/8 = 0.25, C_i = 1, M_i = 0). `talk` sets both
    /// directions, so "traffic between" is twice the rate:
    /// - j1 talks 100 MB/s with a1 on a (Is = 200e6) and 20 MB/s with b1 on
    ///   b (Nso or Nsd = 40e6);
    /// - j2 talks 100 MB/s with c1 on c (Nsd for k = c: 200e6) and 20 MB/s
    ///   with a1 (Is = 40e6).
    ///
    /// NIC_a = 10 Gbit/s = 1.25e9 B/s; AB ≥ 1e9 so Nds = Is.
    /// j1: NBen = (40e6 − 200e6)/1.25e9 = −0.128, V = 0.25 − 0.128 = 0.122.
    /// j2: NBen = (200e6 − 40e6)/1.25e9 = +0.128, V = 0.378.
    /// a1 (CPU_ij = 0.4, all its traffic is IDC: Is = 240e6): V = 0.208.
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
        assert!((m["v"] - 0.378).abs() < 1e-9, "{m:?}");
        assert!((m["nsd"] - 200e6).abs() < 1e-3);
        // Runner-up: a1 (3.2 cores: CPU_ij = 0.4; Is = 200e6 + 40e6, Nso = 0):
        // V = 0.4 − 240e6/1.25e9 = 0.208 (j1's 0.122 is lower still).
        let alt = &d[0].details.alternatives[0];
        assert_eq!(alt.vm.as_deref(), Some("a1"));
        assert!((alt.score.unwrap() - 0.208).abs() < 1e-9, "{alt:?}");
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
}
