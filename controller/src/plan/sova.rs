//! Sova: coordination of dynamic SR-IOV and migration.
//!
//! Per VM over its last `num` samples:
//! - I/O factor `IF = mean(blocked / gotten)` (samples with no CPU time
//!   received count as 0);
//! - network factor `NF = ε·freq + (1 − ε)·avg`, `freq` = share of samples
//!   with packets, `avg` = mean over those samples of `(t − min)/(max − min)`
//!   (0 when `max = min`);
//! - volume `sqrt(Σ_i (r_i / r̄ − 1)²)` over cpu, mem, net, where `r_i` is
//!   the VM's (or host's) utilisation of the host's capacity and `r̄` the mean
//!   utilisation of the host's three resources (volume 0 when `r̄ = 0`);
//!   option `volume = "sandpiper"` ranks by Sandpiper's volume instead
//!   ([`VolumeFormula`]).
//!
//! Manager (Algorithm 2, l.7–8): for each hotspot (§2; largest volume
//! first) the candidate is the host with the smallest volume that is not
//! already a destination this round (`getMinNotInDestination`); it becomes
//! the target only if it is not the source, not hot, and every resource is
//! strictly below its threshold (a cold spot). Otherwise no migration for
//! that host this round ([`TargetSearch::Minimum`]; filtering first is
//! [`TargetSearch::ColdestEligible`]).
//!
//! Per host (Algorithm 1), with `p` VFs and `n` VMs: when signalled, the VM
//! with the largest `MF = volume / size` migrates to the target (its VF is
//! detached first; one VM per round), with no room-after-the-move check and
//! no fallback to another VM (l.7–8; the shared room check with fallback to
//! the next MF is [`SovaOptions::room_check`]). A VM still cooling down or
//! migrating, whose migration would not converge, or that a placement rule
//! keeps off the target (rules hold with or without the room check), is not
//! moved. Of the
//! remaining VMs the `q` (default `p + ⌈(n − p)/2⌉`) with the largest IF, and
//! of those the `p` with the largest NF, hold the VFs. Alg. 1 l.10 asks for
//! `n > q > p`, which no `q` meets when `n = p + 1`: the default then gives
//! `q = n` (the `p` VFs go by NF among all VMs); a configured `q` is
//! clamped to `[p, n]`. Only changes are emitted: detaches first, then
//! attaches.

use super::constraints::{Ledger, NoRoom, HOTSPOT_DEFAULTS};
use super::view::View;
use super::{Action, Alternative, ConstraintOptions, Decision, Details, PlanError, Policy};
use crate::analyze::HotspotReport;
use crate::knowledge::snapshot::{ratio, HostState, Snapshot, VmState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Sova options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SovaOptions {
    /// ε of the network factor, in [0, 1].
    pub epsilon: f64,
    /// Samples per factor (`num` ≥ 1).
    pub num: usize,
    /// Fixed `q`; `None` = `p + ⌈(n − p)/2⌉`.
    pub q: Option<usize>,
    /// A sample counts as "with traffic" only above this many packets
    /// (default 0, as published). On a live network every VM sees a few
    /// background frames per interval (LLDP probes, ARP); a floor such as
    /// 50 packets per interval keeps idle VMs from looking busy.
    pub traffic_floor_packets: f64,
    /// Over which samples `Traffic_avg` takes its min and max: `host` (all
    /// VMs of the host in the window, default: the VF goes to the VMs that
    /// send the most) or `vm` (each VM's own window: rewards a VM whose
    /// traffic grows, and briefly one whose traffic just stopped).
    pub nf_scope: NfScope,
    /// The shared room-after-the-move check for the migrating VM, falling
    /// back to the VM with the next largest MF (default false: Alg. 1
    /// l.7–8 moves the largest-MF VM to the signalled cold spot unchecked).
    pub room_check: bool,
    /// How Algorithm 2 finds the target (default `minimum`).
    pub target_search: TargetSearch,
    /// Which volume ranks hosts and VMs (default `skew`: Eq. 5 as written).
    pub volume: VolumeFormula,
}

/// The volume formula of Sova's manager and of `MF = volume / size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeFormula {
    /// Eq. 5 as written: `sqrt(Σ (r_i / r̄ − 1)²)`, `r̄` the host's mean
    /// utilisation. It measures the skew of a usage mix, not its size.
    #[default]
    Skew,
    /// Sandpiper's volume `1 / ((1 − cpu)(1 − mem)(1 − net))` of the same
    /// utilisations (each capped at 0.99): grows with load.
    Sandpiper,
}

impl VolumeFormula {
    /// The volume of utilisations `r` (CPU, memory, network) on a host
    /// whose mean utilisation is `mean`.
    pub fn of(self, r: &[f64; 3], mean: f64) -> f64 {
        match self {
            VolumeFormula::Skew => volume(r, mean),
            VolumeFormula::Sandpiper => {
                let [c, m, n] = *r;
                crate::plan::view::volume(c, m, n, 0.99)
            }
        }
    }
}

/// How Sova's manager picks a hotspot's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetSearch {
    /// Alg. 2 l.7–8: the smallest-volume host not yet a destination, then
    /// tested (cold spot, not the source); no migration if it fails.
    #[default]
    Minimum,
    /// The smallest-volume host among those that pass the test.
    ColdestEligible,
}

/// Normalisation scope of the network factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NfScope {
    /// Min/max over all VMs of the host.
    #[default]
    Host,
    /// Min/max over the VM's own samples.
    Vm,
}

impl Default for SovaOptions {
    fn default() -> Self {
        SovaOptions {
            epsilon: 0.5,
            num: 5,
            q: None,
            traffic_floor_packets: 0.0,
            nf_scope: NfScope::Host,
            room_check: false,
            target_search: TargetSearch::Minimum,
            volume: VolumeFormula::Skew,
        }
    }
}

impl SovaOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), PlanError> {
        if !(self.epsilon.is_finite() && (0.0..=1.0).contains(&self.epsilon)) {
            return Err(PlanError::invalid(
                "sova.epsilon",
                format!("must be in [0, 1], got {}", self.epsilon),
            ));
        }
        if !(self.traffic_floor_packets.is_finite() && self.traffic_floor_packets >= 0.0) {
            return Err(PlanError::invalid(
                "sova.traffic_floor_packets",
                format!("must be >= 0, got {}", self.traffic_floor_packets),
            ));
        }
        if self.num == 0 || self.num > 1000 {
            return Err(PlanError::invalid(
                "sova.num",
                format!("must be in 1..=1000, got {}", self.num),
            ));
        }
        Ok(())
    }
}

/// The Sova policy.
#[derive(Debug, Clone)]
pub struct Sova {
    constraints: ConstraintOptions,
    opts: SovaOptions,
}

impl Sova {
    /// A Sova policy.
    pub fn new(constraints: ConstraintOptions, opts: SovaOptions) -> Self {
        Sova { constraints, opts }
    }
}

/// I/O factor over the last `num` samples.
pub fn io_factor(vm: &VmState, num: usize) -> f64 {
    let start = vm.history.len().saturating_sub(num);
    let w = vm.history.get(start..).unwrap_or(&[]);
    if w.is_empty() {
        return 0.0;
    }
    w.iter()
        .map(|s| ratio(s.blocked_s, s.gotten_s))
        .sum::<f64>()
        / w.len() as f64
}

/// Network factor over the last `num` samples of packet counts.
///
/// `range` gives the (min, max) to normalise with; `None` = the VM's own.
pub fn network_factor(
    vm: &VmState,
    num: usize,
    epsilon: f64,
    floor: f64,
    range: Option<(f64, f64)>,
) -> f64 {
    let t = window(vm, num);
    if t.is_empty() {
        return 0.0;
    }
    let (min, max) = range.unwrap_or_else(|| packet_range(&t));
    let active: Vec<f64> = t.iter().copied().filter(|&x| x > floor.max(0.0)).collect();
    let freq = active.len() as f64 / t.len() as f64;
    let avg = if active.is_empty() || max <= min {
        0.0
    } else {
        active.iter().map(|x| (x - min) / (max - min)).sum::<f64>() / active.len() as f64
    };
    epsilon * freq + (1.0 - epsilon) * avg
}

/// (min, max) of packet counts.
fn packet_range(t: &[f64]) -> (f64, f64) {
    (
        t.iter().copied().fold(f64::INFINITY, f64::min),
        t.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// The last `num` packet counts of a VM.
fn window(vm: &VmState, num: usize) -> Vec<f64> {
    let start = vm.history.len().saturating_sub(num);
    vm.history
        .get(start..)
        .unwrap_or(&[])
        .iter()
        .map(|s| s.packets.max(0.0))
        .collect()
}

/// `sqrt(Σ (r_i / mean − 1)²)`, 0 when `mean` is not positive.
pub fn volume(r: &[f64; 3], mean: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    r.iter()
        .map(|x| (x / mean - 1.0).powi(2))
        .sum::<f64>()
        .sqrt()
}

impl Policy for Sova {
    fn name(&self) -> &'static str {
        "sova"
    }

    fn plan(&mut self, snap: &Snapshot, hot: &HotspotReport) -> Vec<Decision> {
        let view = View::new(snap);
        let mut led = Ledger::new(
            &view,
            hot.thresholds,
            self.constraints.resolve(HOTSPOT_DEFAULTS),
        );
        let hn = view.host_count();
        let host_vms = view.vms_by_host();
        let signal = cold_spot_targets(&view, &led, hot, self.opts.target_search, self.opts.volume);
        let mut out = Vec::new();
        // Algorithm 1 per host, in id order.
        for h in 0..hn {
            let vms: Vec<usize> = host_vms.get(h).cloned().unwrap_or_default();
            let host = match view.hosts.get(h) {
                Some(x) => *x,
                None => continue,
            };
            let mut remaining = vms.clone();
            if let Some(Some((k, kvol))) = signal.get(h).copied() {
                let target = (k, kvol);
                if let Some(v) =
                    migrate_one(&view, &mut led, h, host, &vms, target, &self.opts, &mut out)
                {
                    remaining.retain(|&x| x != v);
                }
            }
            self.assign_vfs(&view, h, host.vf_count as usize, &remaining, &mut out);
        }
        out
    }
}

/// A host's (CPU, memory, network) utilisation.
fn host_util(led: &Ledger, h: usize) -> [f64; 3] {
    [led.cpu_util(h), led.mem_util(h), led.net_util(h)]
}

/// A host's volume.
fn host_volume(led: &Ledger, h: usize, f: VolumeFormula) -> f64 {
    let r = host_util(led, h);
    f.of(&r, r.iter().sum::<f64>() / 3.0)
}

/// Algorithm 2: hotspots, largest volume first, each get a distinct cold
/// spot (strictly below every threshold, not hot, not the source) as
/// target: per host, (target, its volume).
fn cold_spot_targets(
    view: &View<'_>,
    led: &Ledger,
    hot: &HotspotReport,
    search: TargetSearch,
    formula: VolumeFormula,
) -> Vec<Option<(usize, f64)>> {
    let hn = view.host_count();
    let t = hot.thresholds;
    let mut sources: Vec<(f64, usize)> = hot
        .hot
        .keys()
        .filter_map(|id| view.host_id(id))
        .map(|h| (host_volume(led, h, formula), h))
        .collect();
    sources.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut targets: BTreeSet<usize> = BTreeSet::new();
    let mut signal: Vec<Option<(usize, f64)>> = vec![None; hn];
    let cold = |k: usize, s: usize| {
        let [c, m, n] = host_util(led, k);
        k != s && !hot.is_hotspot(view.host_name(k)) && c < t.cpu && m < t.mem && n < t.net
    };
    for &(_, s) in &sources {
        let free = (0..hn).filter(|k| !targets.contains(k));
        let smallest = |it: &mut dyn Iterator<Item = usize>| {
            it.map(|k| (host_volume(led, k, formula), k))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        };
        let best = match search {
            TargetSearch::Minimum => smallest(&mut { free }).filter(|&(_, k)| cold(k, s)),
            TargetSearch::ColdestEligible => smallest(&mut free.filter(|&k| cold(k, s))),
        };
        if let Some((vol, k)) = best {
            targets.insert(k);
            if let Some(sig) = signal.get_mut(s) {
                *sig = Some((k, vol));
            }
        }
    }
    signal
}

/// Algorithm 1 step 1 on hot host `h`: the VM with the largest MF =
/// volume / size goes to target `k` (its VF revoked first); with
/// `room_check`, the first by MF that fits. Returns the VM moved.
#[allow(clippy::too_many_arguments)]
fn migrate_one(
    view: &View<'_>,
    led: &mut Ledger,
    h: usize,
    host: &HostState,
    vms: &[usize],
    (k, kvol): (usize, f64),
    opts: &SovaOptions,
    out: &mut Vec<Decision>,
) -> Option<usize> {
    let room_check = opts.room_check;
    let r = host_util(led, h);
    let mean = r.iter().sum::<f64>() / 3.0;
    let mut by_mf: Vec<(f64, f64, usize)> = vms
        .iter()
        .map(|&v| {
            let s = view.vm_sample(v);
            let ru = [
                ratio(s.cpu_cores, host.cores),
                ratio(led.vm_mem.get(v).copied().unwrap_or(0.0), host.memory_mb),
                ratio(
                    s.tx_bytes_per_s.max(s.rx_bytes_per_s),
                    host.nic_bytes_per_s(),
                ),
            ];
            let vol = opts.volume.of(&ru, mean);
            let size = led.vm_mem.get(v).copied().unwrap_or(0.0);
            (ratio(vol, size), vol, v)
        })
        .collect();
    by_mf.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
    let mut details = Details::default();
    let mut pick = None;
    let tries = if room_check { by_mf.len() } else { 1 };
    for &(mf, vol, v) in by_mf.iter().take(tries) {
        let res = match led.blocked(v) {
            Some(b) => Err(b.as_str().to_string()),
            None if room_check => led.check(v, k).map_err(|e| e.as_str()),
            // Without the room check the placement rules still hold.
            None => led
                .rule_check(v, k)
                .and_then(|()| led.estimate(v, k).map_err(NoRoom::Model))
                .map_err(|e| e.as_str()),
        };
        match res {
            Ok(cost) => {
                pick = Some((mf, vol, v, cost));
                break;
            }
            Err(e) => details.push_alternative(Alternative {
                vm: Some(view.vm_name(v).into()),
                host: None,
                score: Some(mf),
                rejected: e,
            }),
        }
    }
    if let Some((mf, vol, v, cost)) = pick {
        if let Some(&(nmf, _, nv)) = by_mf.iter().find(|o| o.0 < mf || (o.0 == mf && o.2 > v)) {
            details.push_alternative(Alternative {
                vm: Some(view.vm_name(nv).into()),
                host: None,
                score: Some(nmf),
                rejected: "smaller MF".into(),
            });
        }
        let mut details = details
            .metric("mf", mf)
            .metric("volume", vol)
            .metric("size_mb", led.vm_mem.get(v).copied().unwrap_or(0.0))
            .metric("source_volume", opts.volume.of(&r, mean))
            .metric("target_volume", kvol);
        details.migration = Some(cost);
        if view.vms.get(v).is_some_and(|x| x.has_vf) {
            out.push(Decision {
                action: Action::DetachVf {
                    vm: view.vm_name(v).into(),
                    host: view.host_name(h).into(),
                },
                reason: "sova: revoke the VF of the VM chosen to migrate".into(),
                score: mf,
                details: Details::default(),
            });
        }
        led.apply_move(v, k);
        out.push(Decision {
            action: Action::Migrate {
                vm: view.vm_name(v).into(),
                from: view.host_name(h).into(),
                to: view.host_name(k).into(),
            },
            reason: "sova: hotspot; largest MF = volume/size to the smallest-volume cold spot"
                .into(),
            score: mf,
            details,
        });
        return Some(v);
    }
    None
}

impl Sova {
    /// Algorithm 1 steps 2–3 on host `h`.
    fn assign_vfs(&self, view: &View, h: usize, p: usize, vms: &[usize], out: &mut Vec<Decision>) {
        let n = vms.len();
        let range = match self.opts.nf_scope {
            NfScope::Vm => None,
            NfScope::Host => {
                let all: Vec<f64> = vms
                    .iter()
                    .filter_map(|&v| view.vms.get(v))
                    .flat_map(|x| window(x, self.opts.num))
                    .collect();
                (!all.is_empty()).then(|| packet_range(&all))
            }
        };
        let scored: Vec<(f64, f64, usize)> = vms
            .iter()
            .map(|&v| {
                let vm = view.vms.get(v);
                (
                    vm.map_or(0.0, |x| io_factor(x, self.opts.num)),
                    vm.map_or(0.0, |x| {
                        network_factor(
                            x,
                            self.opts.num,
                            self.opts.epsilon,
                            self.opts.traffic_floor_packets,
                            range,
                        )
                    }),
                    v,
                )
            })
            .collect();
        let mut by_if = scored.clone();
        by_if.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
        let q = if n <= p {
            n
        } else {
            self.opts.q.unwrap_or(p + (n - p).div_ceil(2)).clamp(p, n)
        };
        let mut top_q: Vec<(f64, f64, usize)> = by_if.iter().take(q).copied().collect();
        top_q.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
        let chosen: BTreeSet<usize> = top_q.iter().take(p).map(|x| x.2).collect();
        let rank_if = |v: usize| by_if.iter().position(|x| x.2 == v).unwrap_or(n);
        let mut detach = Vec::new();
        let mut attach = Vec::new();
        for &(iff, nf, v) in &scored {
            let has = view.vms.get(v).is_some_and(|x| x.has_vf);
            let want = chosen.contains(&v);
            let details = Details::default()
                .metric("if", iff)
                .metric("nf", nf)
                .metric("p", p as f64)
                .metric("q", q as f64)
                .metric("if_rank", rank_if(v) as f64);
            if has && !want {
                detach.push(Decision {
                    action: Action::DetachVf {
                        vm: view.vm_name(v).into(),
                        host: view.host_name(h).into(),
                    },
                    reason: if rank_if(v) >= q {
                        "sova: not among the top-q I/O factors".into()
                    } else {
                        "sova: among the top-q I/O factors but not the top-p network factors".into()
                    },
                    score: nf,
                    details,
                });
            } else if want && !has {
                attach.push(Decision {
                    action: Action::AttachVf {
                        vm: view.vm_name(v).into(),
                        host: view.host_name(h).into(),
                    },
                    reason: "sova: top-p network factor among the top-q I/O factors".into(),
                    score: nf,
                    details,
                });
            }
        }
        out.extend(detach);
        out.extend(attach);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::snapshot::VmSample;
    use crate::plan::testutil::Dc;

    /// Background frames only (3 packets per sample, LLDP/ARP): with no
    /// floor every sample "has traffic" (freq 1, NF = 0.5·1 + 0.5·0 = 0.5);
    /// with a floor of 50 none does (NF 0). A busy VM (1000..2000 packets)
    /// keeps its NF either way: freq 1, avg of (t − 1000)/1000 over
    /// 1000, 1500, 2000 = (0 + .5 + 1)/3 = .5 → NF = .75.
    #[test]
    fn traffic_floor_ignores_background_frames() {
        let vm = |p: &[f64]| VmState {
            history: p
                .iter()
                .map(|&x| VmSample {
                    packets: x,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let idle = vm(&[3.0, 3.0, 3.0]);
        let busy = vm(&[1000.0, 1500.0, 2000.0]);
        assert!((network_factor(&idle, 5, 0.5, 0.0, None) - 0.5).abs() < 1e-12);
        assert_eq!(network_factor(&idle, 5, 0.5, 50.0, None), 0.0);
        assert!((network_factor(&busy, 5, 0.5, 50.0, None) - 0.75).abs() < 1e-12);
        assert!((network_factor(&busy, 5, 0.5, 0.0, None) - 0.75).abs() < 1e-12);
    }

    /// Host a has p = 2 VFs and n = 6 VMs: q = 2 + ⌈4/2⌉ = 4.
    /// IF (blocked/gotten): v1 .9, v2 .8, v3 .7, v4 .6, v5 .1, v6 .05 →
    /// top-4 IF: v1..v4. NF (ε = .5), packets over 5 samples:
    /// v1 always 0 → freq 0, NF 0; v2 [10,10,10,10,10] → freq 1, avg 0
    /// (max = min) → NF .5; v3 [0,50,100,50,100]: freq .8, min 0 max 100,
    /// avg over active (.5+1+.5+1)/4 = .75 → NF .775; v4 [0,0,0,0,100]:
    /// freq .2, avg 1 → NF .6. v5 and v6 have the highest NF (always 100,
    /// 200) but are not in the top-4 IF.
    /// Top-2 NF of {v1..v4}: v3 (.775), v4 (.6). v5 holds a VF today:
    /// detach v5, attach v3 and v4.
    #[test]
    fn vfs_to_top_p_nf_among_top_q_if() {
        let mut dc = Dc::new()
            .host("a", "r0", "p0", 32.0, 65536.0)
            .with_host("a", |h| h.vf_count = 2);
        let ifs = [0.9, 0.8, 0.7, 0.6, 0.1, 0.05];
        let pk: [[f64; 5]; 6] = [
            [0.0; 5],
            [10.0; 5],
            [0.0, 50.0, 100.0, 50.0, 100.0],
            [0.0, 0.0, 0.0, 0.0, 100.0],
            [100.0; 5],
            [200.0, 190.0, 200.0, 210.0, 200.0],
        ];
        for i in 0..6 {
            let name = format!("v{}", i + 1);
            let (iff, p) = (ifs[i], pk[i]);
            dc = dc.vm(&name, "a", 1.0, 1024.0).with_vm(&name, |v| {
                let s0 = v.history[0].clone();
                v.history = p
                    .iter()
                    .map(|&x| {
                        let mut s = s0.clone();
                        s.packets = x;
                        s.blocked_s = iff;
                        s.gotten_s = 1.0;
                        s
                    })
                    .collect();
                v.has_vf = i == 4;
            });
        }
        let (snap, hot) = dc.build(5);
        let vm = &snap.vms["v3"];
        assert!((network_factor(vm, 5, 0.5, 0.0, None) - 0.775).abs() < 1e-12);
        assert!((network_factor(&snap.vms["v4"], 5, 0.5, 0.0, None) - 0.6).abs() < 1e-12);
        let per_vm = SovaOptions {
            nf_scope: NfScope::Vm,
            ..Default::default()
        };
        let acts = |opts: SovaOptions| -> Vec<Action> {
            Sova::new(Default::default(), opts)
                .plan(&snap, &hot)
                .into_iter()
                .map(|d| d.action)
                .collect()
        };
        let detach = |vm: &str| Action::DetachVf {
            vm: vm.into(),
            host: "a".into(),
        };
        let attach = |vm: &str| Action::AttachVf {
            vm: vm.into(),
            host: "a".into(),
        };
        assert_eq!(acts(per_vm), vec![detach("v5"), attach("v3"), attach("v4")]);
        // Host scope (the default): min 0, max 210 over all six VMs.
        // v2: freq 1, avg 10/210 = .0476 → NF .524; v3: freq .8, avg
        // (50+100+50+100)/4/210 = .357 → NF .579; v4: freq .2, avg
        // 100/210 = .476 → NF .338; v1 0. Top-2 NF of {v1..v4}: v3, v2.
        assert_eq!(
            acts(SovaOptions::default()),
            vec![detach("v5"), attach("v2"), attach("v3")]
        );
    }

    /// Hotspot a (CPU 7/8), cold spots b and c. Volumes use (cpu, mem,
    /// net) utilisations: b (cpu .25, mem 1024/16384 = .0625, net 0):
    /// mean .104, volume sqrt((2.4−1)² + (.6−1)² + 1) = 1.766; c (cpu .25,
    /// mem .25, net 0): mean .1667, volume sqrt(.5²+.5²+1) = 1.225 →
    /// target c (smallest volume).
    /// On a (cpu 7/8 = .875, mem 3072/16384 = .1875, net 0; mean .354):
    /// v1 (4 cores, 1024 MB): r = (.5, .0625, 0), volume
    /// sqrt((1.412−1)² + (.176−1)² + 1) = 1.3593, MF = 1.33e−3;
    /// v2 (3 cores, 2048 MB): r = (.375, .125, 0), volume
    /// sqrt(.059² + .647² + 1) = 1.193, MF = 0.58e−3. Largest MF: v1,
    /// which holds a VF: detach, then migrate to c.
    #[test]
    fn largest_mf_to_smallest_volume_cold_spot() {
        let (snap, hot) = Dc::new()
            .host("a", "r0", "p0", 8.0, 16384.0)
            .host("b", "r0", "p0", 8.0, 16384.0)
            .host("c", "r0", "p0", 8.0, 16384.0)
            .with_host("a", |h| h.vf_count = 1)
            .vm("v1", "a", 4.0, 1024.0)
            .vm("v2", "a", 3.0, 2048.0)
            .vm("b1", "b", 2.0, 1024.0)
            .vm("c1", "c", 2.0, 4096.0)
            .with_vm("v1", |v| v.has_vf = true)
            .build(5);
        assert!(hot.is_hotspot("a"));
        let d = Sova::new(Default::default(), Default::default()).plan(&snap, &hot);
        let acts: Vec<Action> = d.iter().map(|d| d.action.clone()).collect();
        assert_eq!(
            acts[..2],
            [
                Action::DetachVf {
                    vm: "v1".into(),
                    host: "a".into()
                },
                Action::Migrate {
                    vm: "v1".into(),
                    from: "a".into(),
                    to: "c".into()
                },
            ]
        );
        assert!(
            (d[1].details.metrics["volume"] - 1.3593).abs() < 1e-4,
            "{:?}",
            d[1].details
        );
        // v2 stays alone on a with p = 1 ≥ n = 1: it gets the VF.
        assert_eq!(
            acts[2],
            Action::AttachVf {
                vm: "v2".into(),
                host: "a".into()
            }
        );
    }
}
