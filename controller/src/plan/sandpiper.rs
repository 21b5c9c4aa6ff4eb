//! Sandpiper, the baseline (Wood et al., NSDI 2007).
//!
//! `vol = 1 / ((1 − cpu)(1 − mem)(1 − net))` with utilisations relative to
//! the host's capacity, each capped at `util_cap` (0.99); `VSR = vol / size_MB`.
//! From each hotspot host (most loaded first) the VM with the highest VSR
//! goes to the least loaded host (lowest host `vol`) that has room; if no
//! host has room for it, the next VM is tried. Sandpiper's network
//! utilisation counts IDC traffic too (the VMs' own tx/rx counters), unlike
//! every other policy: in its hotspot detection (the thesis §4.1:
//! "Sandpiper includes IDC in the network traffic") and in its volumes.
//!
//! As the IDC-aware thesis's baseline (§4.2.2: "At first memory overload,
//! Sandpiper allocates 32MB physical memory to VM1"), a memory hotspot first
//! grows the swapping VM by a whole `growth_step_mb`; only when that is
//! impossible does a migration follow (`memory_growth = false`: the NSDI
//! 2007 behaviour, straight to migration). Rules and sources:
//! `docs/algorithms.md`.

use super::constraints::{Ledger, HOTSPOT_DEFAULTS};
use super::growth::{self, GrowthTarget};
use super::view::View;
use super::{Action, Alternative, ConstraintOptions, Decision, Details, PlanError, Policy};
use crate::analyze::{DetectorDefaults, HotspotReport, Resource};
use crate::knowledge::snapshot::{ratio, Snapshot};
use serde::{Deserialize, Serialize};

/// Sandpiper options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandpiperOptions {
    /// Cap of each utilisation in the volume formula, in (0, 1).
    pub util_cap: f64,
    /// Grow the swapping VM of a memory hotspot before migrating (the
    /// thesis's baseline, default); `false`: migrate at once (NSDI 2007).
    pub memory_growth: bool,
    /// Memory growth step, MB (> 0); growth goes in whole steps.
    pub growth_step_mb: f64,
}

impl Default for SandpiperOptions {
    fn default() -> Self {
        SandpiperOptions {
            util_cap: 0.99,
            memory_growth: true,
            growth_step_mb: 32.0,
        }
    }
}

impl SandpiperOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), PlanError> {
        if !(self.util_cap.is_finite() && self.util_cap > 0.0 && self.util_cap < 1.0) {
            return Err(PlanError::invalid(
                "sandpiper.util_cap",
                format!("must be in (0, 1), got {}", self.util_cap),
            ));
        }
        if !(self.growth_step_mb.is_finite() && self.growth_step_mb > 0.0) {
            return Err(PlanError::invalid(
                "sandpiper.growth_step_mb",
                format!("must be > 0, got {}", self.growth_step_mb),
            ));
        }
        Ok(())
    }
}

/// The Sandpiper policy.
#[derive(Debug, Clone)]
pub struct Sandpiper {
    constraints: ConstraintOptions,
    opts: SandpiperOptions,
}

impl Sandpiper {
    /// A Sandpiper policy.
    pub fn new(constraints: ConstraintOptions, opts: SandpiperOptions) -> Self {
        Sandpiper { constraints, opts }
    }
}

/// Sandpiper's volume (defined in [`super::view`], where the memory-growth
/// rule shared with IDC-aware reads it too).
pub use super::view::volume;

impl Policy for Sandpiper {
    fn name(&self) -> &'static str {
        "sandpiper"
    }

    /// The thesis: memory overload is swap activity only (writes and
    /// reads); the network observation includes IDC traffic.
    fn detector_defaults(&self) -> DetectorDefaults {
        DetectorDefaults {
            mem_util_trigger: false,
            net_includes_idc: true,
            swap_includes_reads: true,
        }
    }

    fn plan(&mut self, snap: &Snapshot, hot: &HotspotReport) -> Vec<Decision> {
        let view = View::new(snap);
        let mut led = Ledger::new(
            &view,
            hot.thresholds,
            self.constraints.resolve(HOTSPOT_DEFAULTS),
        );
        let cap = self.opts.util_cap.clamp(0.0, 0.999_999);
        let hn = view.host_count();
        let mut nic = NicView::of(&view);
        let host_vms = view.vms_by_host();
        // Hot hosts, most loaded first.
        let mut sources: Vec<(f64, usize)> = hot
            .hot
            .keys()
            .filter_map(|id| view.host_id(id))
            .map(|h| (nic.host_volume(&view, &led, h, cap), h))
            .collect();
        sources.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut out = Vec::new();
        for (src_vol, x) in sources {
            if self.opts.memory_growth && hot.is_hot(view.host_name(x), Resource::Mem) {
                let vms = host_vms.get(x).map_or(&[][..], Vec::as_slice);
                if let Some(d) = growth::grow(
                    &view,
                    &mut led,
                    x,
                    vms,
                    self.opts.growth_step_mb,
                    GrowthTarget::Swapping,
                    "sandpiper",
                ) {
                    // Growth first: no migration leaves the host this round.
                    out.push(d);
                    continue;
                }
            }
            if led.source_limit_reached(x) {
                continue;
            }
            let resources: Vec<&str> = [Resource::Cpu, Resource::Mem, Resource::Net]
                .into_iter()
                .filter(|r| hot.is_hot(view.host_name(x), *r))
                .map(|r| r.as_str())
                .collect();
            let cands = candidates(&view, host_vms.get(x).map_or(&[][..], Vec::as_slice), cap);
            // Destinations: not hot, not the source, least loaded first.
            let mut dests: Vec<(f64, usize)> = (0..hn)
                .filter(|&h| h != x && !hot.is_hotspot(view.host_name(h)))
                .map(|h| (nic.host_volume(&view, &led, h, cap), h))
                .collect();
            dests.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let Some((c, details)) = choose(&view, &led, &cands, &dests) else {
                continue;
            };
            let size = view.vms.get(c.v).map_or(0.0, |x| x.memory_mb);
            let mut details = details
                .metric("vsr", c.vsr)
                .metric("vol", c.vol)
                .metric("size_mb", size)
                .metric("source_vol", src_vol)
                .metric("dest_vol", c.dvol);
            details.migration = Some(c.cost);
            // Update Sandpiper's NIC view, then the shared ledger.
            nic.apply_move(&view, c.v, x, c.k);
            led.apply_move(c.v, c.k);
            out.push(Decision {
                action: Action::Migrate {
                    vm: view.vm_name(c.v).into(),
                    from: view.host_name(x).into(),
                    to: view.host_name(c.k).into(),
                },
                reason: format!(
                    "sandpiper: hotspot ({}); highest-VSR VM to the least loaded host with room",
                    resources.join(",")
                ),
                score: c.vsr,
                details,
            });
        }
        out
    }
}

/// Sandpiper's own NIC view: all VM traffic per host, IDC included.
struct NicView {
    tx: Vec<f64>,
    rx: Vec<f64>,
}

impl NicView {
    fn of(view: &View<'_>) -> Self {
        let hn = view.host_count();
        let mut all_tx = vec![0.0; hn];
        let mut all_rx = vec![0.0; hn];
        for v in 0..view.vm_count() {
            let s = view.vm_sample(v);
            let h = view.host_of(v);
            if let (Some(t), Some(r)) = (all_tx.get_mut(h), all_rx.get_mut(h)) {
                *t += s.tx_bytes_per_s;
                *r += s.rx_bytes_per_s;
            }
        }
        NicView {
            tx: all_tx,
            rx: all_rx,
        }
    }

    /// A host's `vol` (CPU and memory from the ledger, network from this
    /// view).
    fn host_volume(&self, view: &View<'_>, led: &Ledger, h: usize, cap: f64) -> f64 {
        let nic = view.hosts.get(h).map_or(0.0, |x| x.nic_bytes_per_s());
        let net = ratio(
            self.tx
                .get(h)
                .copied()
                .unwrap_or(0.0)
                .max(self.rx.get(h).copied().unwrap_or(0.0)),
            nic,
        );
        volume(led.cpu_util(h), led.mem_util(h), net, cap)
    }

    /// Moves VM `v`'s traffic from host `x` to host `k`.
    fn apply_move(&mut self, view: &View<'_>, v: usize, x: usize, k: usize) {
        let s = view.vm_sample(v);
        for (vec, d) in [
            (&mut self.tx, s.tx_bytes_per_s),
            (&mut self.rx, s.rx_bytes_per_s),
        ] {
            if let Some(a) = vec.get_mut(x) {
                *a -= d;
            }
            if let Some(a) = vec.get_mut(k) {
                *a += d;
            }
        }
    }
}

/// A VM's `vol` relative to its host, and its VSR (`vol / size_MB`).
fn vm_volume(view: &View<'_>, v: usize, cap: f64) -> (f64, f64) {
    let s = view.vm_sample(v);
    let h = view.host_of(v);
    let host = view.hosts.get(h);
    let cpu = ratio(s.cpu_cores, host.map_or(0.0, |x| x.cores));
    let size = view.vms.get(v).map_or(0.0, |x| x.memory_mb);
    let mem = ratio(size, host.map_or(0.0, |x| x.memory_mb));
    let net = ratio(
        s.tx_bytes_per_s.max(s.rx_bytes_per_s),
        host.map_or(0.0, |x| x.nic_bytes_per_s()),
    );
    let vol = volume(cpu, mem, net, cap);
    (vol, if size > 0.0 { vol / size } else { 0.0 })
}

/// The VMs of a hot host as (VSR, vol, VM), highest VSR first.
fn candidates(view: &View<'_>, vms: &[usize], cap: f64) -> Vec<(f64, f64, usize)> {
    let mut cands: Vec<(f64, f64, usize)> = vms
        .iter()
        .map(|&v| {
            let (vol, vsr) = vm_volume(view, v, cap);
            (vsr, vol, v)
        })
        .collect();
    cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
    cands
}

/// The move chosen from one hot host.
struct Choice {
    vsr: f64,
    vol: f64,
    v: usize,
    k: usize,
    dvol: f64,
    cost: super::MigrationCost,
}

/// The first candidate (highest VSR) with a destination that has room (the
/// least loaded one), and the alternatives considered on the way.
fn choose(
    view: &View<'_>,
    led: &Ledger,
    cands: &[(f64, f64, usize)],
    dests: &[(f64, usize)],
) -> Option<(Choice, Details)> {
    let mut details = Details::default();
    let mut chosen = None;
    'vms: for (i, &(vsr, vol, v)) in cands.iter().enumerate() {
        if let Some(b) = led.blocked(v) {
            details.push_alternative(Alternative {
                vm: Some(view.vm_name(v).into()),
                host: None,
                score: Some(vsr),
                rejected: b.as_str().into(),
            });
            continue;
        }
        let mut dest_alts = Vec::new();
        for &(dvol, k) in dests {
            match led.check(v, k) {
                Ok(cost) => {
                    chosen = Some((
                        i,
                        Choice {
                            vsr,
                            vol,
                            v,
                            k,
                            dvol,
                            cost,
                        },
                        dest_alts,
                    ));
                    break 'vms;
                }
                Err(e) => {
                    if dest_alts.len() < 2 {
                        dest_alts.push(Alternative {
                            vm: None,
                            host: Some(view.host_name(k).into()),
                            score: Some(dvol),
                            rejected: e.as_str(),
                        });
                    }
                }
            }
        }
        details.push_alternative(Alternative {
            vm: Some(view.vm_name(v).into()),
            host: None,
            score: Some(vsr),
            rejected: "no host with room".into(),
        });
    }
    let (i, choice, dest_alts) = chosen?;
    for a in dest_alts {
        details.push_alternative(a);
    }
    if let Some(&(nvsr, _, nv)) = cands.get(i + 1) {
        details.push_alternative(Alternative {
            vm: Some(view.vm_name(nv).into()),
            host: None,
            score: Some(nvsr),
            rejected: "lower VSR".into(),
        });
    }
    Some((choice, details))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::{migrations, Dc};

    /// Host a (8 cores, 8192 MB) runs v1 (3 cores, 1024 MB), v2 (2 cores,
    /// 512 MB) and v3 (2.5 cores, 4096 MB): CPU 7.5/8 = 0.94 > 0.85, hot.
    /// VM volumes (net 0): v1 = 1/((1−3/8)(1−1024/8192)) = 1/(0.625·0.875)
    /// = 1.829, VSR = 1.829/1024 = 1.79e−3; v2 = 1/(0.75·0.9375) = 1.422,
    /// VSR = 2.78e−3; v3 = 1/(0.6875·0.5) = 2.909, VSR = 0.71e−3.
    /// Highest VSR: v2. Hosts: b is loaded (6 cores of 8: vol 1/(0.25·…)
    /// ≈ 4.3) and c is light (1 core: vol ≈ 1.16); d has the least load but
    /// only 256 MB of memory (no room). Least loaded with room: c.
    #[test]
    fn highest_vsr_to_least_loaded_host_with_room() {
        let (snap, hot) = Dc::new()
            .host("a", "r0", "p0", 8.0, 8192.0)
            .host("b", "r0", "p0", 8.0, 8192.0)
            .host("c", "r1", "p0", 8.0, 8192.0)
            .host("d", "r1", "p0", 8.0, 256.0)
            .vm("v1", "a", 3.0, 1024.0)
            .vm("v2", "a", 2.0, 512.0)
            .vm("v3", "a", 2.5, 4096.0)
            .vm("w1", "b", 6.0, 1024.0)
            .vm("x1", "c", 1.0, 1024.0)
            .build(5);
        assert!(hot.is_hotspot("a") && hot.hot.len() == 1, "{hot:?}");
        let mut p = Sandpiper::new(Default::default(), Default::default());
        let d = p.plan(&snap, &hot);
        assert_eq!(migrations(&d), vec![("v2".into(), "a".into(), "c".into())]);
        let m = &d[0].details.metrics;
        assert!((m["vsr"] - 1.0 / (0.75 * 0.9375) / 512.0).abs() < 1e-9);
        assert!(d[0].details.migration.is_some());
        // The rejected, less loaded host d shows up as an alternative.
        assert!(d[0]
            .details
            .alternatives
            .iter()
            .any(|a| a.host.as_deref() == Some("d") && a.rejected.contains("memory")));
    }

    /// If the highest-VSR VM fits nowhere, the next VM is tried: v2 (VSR
    /// highest) needs 4 cores and the only other host c has 3.5 free cores
    /// below the 0.85·8 = 6.8 limit (6.8 − 3.3 = 3.5); v1 (1.5 cores) fits.
    #[test]
    fn next_vm_when_no_room() {
        let (snap, hot) = Dc::new()
            .host("a", "r0", "p0", 8.0, 65536.0)
            .host("c", "r0", "p0", 8.0, 65536.0)
            .vm("v1", "a", 1.5, 4096.0)
            .vm("v2", "a", 4.0, 256.0)
            .vm("v3", "a", 2.0, 8192.0)
            .vm("x", "c", 3.3, 1024.0)
            .build(5);
        assert!(hot.is_hotspot("a"));
        let d = Sandpiper::new(Default::default(), Default::default()).plan(&snap, &hot);
        assert_eq!(migrations(&d), vec![("v1".into(), "a".into(), "c".into())]);
        assert_eq!(d[0].details.alternatives[0].vm.as_deref(), Some("v2"));
    }
}
