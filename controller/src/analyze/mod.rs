//! Analyze: hotspot detection (k-of-n + AR(1)), pure code.
//!
//! - **Owns**: hotspot detection and its configuration.
//! - **Reads**: a knowledge [`Snapshot`] only.
//! - **May not touch**: locks, the store, the network, the clock, or any
//!   stage above it (plan, execute, the loop, the API).
//!
//! [`detect`] looks at the last `n` [`HostSample`]s of every host in a
//! [`Snapshot`] and flags a resource hot when at least `k` of them exceed the
//! threshold **and** the AR(1) prediction of the next observation exceeds it
//! too. A host that is the source or target of a running migration is not
//! evaluated, and its window restarts when the migration ends: samples
//! taken before the end never count (the thesis §3.2.2: the source's usage
//! information "is reclaimed"). No clock, no I/O: the same call runs in the
//! live loop and in the simulator. Rules and sources: `docs/algorithms.md`.
#![warn(missing_docs)]

use crate::knowledge::snapshot::{HostSample, HostState, Snapshot, VmState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Invalid detector configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalyzeError {
    /// A configuration field is out of range.
    #[error("hotspot.{field}: {why}")]
    InvalidConfig {
        /// Field name.
        field: &'static str,
        /// What is expected.
        why: String,
    },
}

/// Detector configuration (the published defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HotspotConfig {
    /// Observations needed above the threshold (k, ≥ 2 so that a single
    /// spike never triggers).
    pub k: usize,
    /// Window length (n ≥ k).
    pub n: usize,
    /// Thresholds.
    pub thresholds: Thresholds,
    /// Noise term δ added to the AR(1) prediction (Sova; default 0).
    pub ar_noise: f64,
    /// Memory is also hot when its utilisation exceeds `thresholds.mem`
    /// (Shoal's own addition; the thesis's memory overload is swap-out
    /// only). `None` = the policy's default: off for `sandpiper` and
    /// `idc`, on for the others.
    pub mem_util_trigger: Option<bool>,
    /// The network observation counts the host's IDC traffic too (the sum
    /// of its VMs' own tx / rx, as Sandpiper does) instead of the physical
    /// NIC only. `None` = the policy's default: on for `sandpiper` only.
    pub net_includes_idc: Option<bool>,
    /// The memory observation counts swap-in (pages read back from swap)
    /// as well as swap-out: the swap activity the thesis's Sandpiper
    /// watches. `None` = the policy's default: on for `sandpiper` only.
    pub swap_includes_reads: Option<bool>,
}

impl Default for HotspotConfig {
    fn default() -> Self {
        HotspotConfig {
            k: 3,
            n: 5,
            thresholds: Thresholds::default(),
            ar_noise: 0.0,
            mem_util_trigger: None,
            net_includes_idc: None,
            swap_includes_reads: None,
        }
    }
}

/// What a policy's detector observes when the configuration leaves it open
/// (see [`HotspotConfig::for_policy`]). The default (the project's policies
/// other than the thesis's): memory utilisation triggers, NIC traffic only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorDefaults {
    /// Default of [`HotspotConfig::mem_util_trigger`].
    pub mem_util_trigger: bool,
    /// Default of [`HotspotConfig::net_includes_idc`].
    pub net_includes_idc: bool,
    /// Default of [`HotspotConfig::swap_includes_reads`].
    pub swap_includes_reads: bool,
}

impl DetectorDefaults {
    /// The IDC thesis's observations: memory overload is swap-out only,
    /// the network is the physical NIC only.
    pub const SWAP_AND_NIC: DetectorDefaults = DetectorDefaults {
        mem_util_trigger: false,
        net_includes_idc: false,
        swap_includes_reads: false,
    };
}

impl Default for DetectorDefaults {
    fn default() -> Self {
        DetectorDefaults {
            mem_util_trigger: true,
            net_includes_idc: false,
            swap_includes_reads: false,
        }
    }
}

/// Thresholds α_r; also the "room" limits a destination must stay below.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// CPU utilisation.
    pub cpu: f64,
    /// Network utilisation (NIC traffic only).
    pub net: f64,
    /// Memory utilisation (a destination's room limit; a hotspot trigger
    /// only with [`HotspotConfig::mem_util_trigger`]).
    pub mem: f64,
    /// Swap-out, pages/s.
    pub swap_out_pps: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            cpu: 0.85,
            net: 0.80,
            mem: 0.95,
            swap_out_pps: 150.0,
        }
    }
}

impl HotspotConfig {
    /// This configuration with the options it leaves open (`None`) set to
    /// the policy's defaults.
    pub fn for_policy(&self, d: DetectorDefaults) -> HotspotConfig {
        HotspotConfig {
            mem_util_trigger: Some(self.mem_util_trigger.unwrap_or(d.mem_util_trigger)),
            net_includes_idc: Some(self.net_includes_idc.unwrap_or(d.net_includes_idc)),
            swap_includes_reads: Some(self.swap_includes_reads.unwrap_or(d.swap_includes_reads)),
            ..self.clone()
        }
    }

    /// Checks ranges: `2 ≤ k ≤ n`, utilisation thresholds in (0, 1],
    /// swap threshold > 0, noise finite.
    pub fn validate(&self) -> Result<(), AnalyzeError> {
        let bad = |field: &'static str, why: String| AnalyzeError::InvalidConfig { field, why };
        if self.k < 2 {
            return Err(bad(
                "k",
                format!(
                    "must be >= 2 (a single spike must never trigger), got {}",
                    self.k
                ),
            ));
        }
        if self.n < self.k {
            return Err(bad(
                "n",
                format!("must be >= k = {}, got {}", self.k, self.n),
            ));
        }
        if self.n > 1000 {
            return Err(bad("n", format!("must be <= 1000, got {}", self.n)));
        }
        let t = &self.thresholds;
        for (field, v) in [
            ("thresholds.cpu", t.cpu),
            ("thresholds.net", t.net),
            ("thresholds.mem", t.mem),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return Err(bad(field, format!("must be in (0, 1], got {v}")));
            }
        }
        if !(t.swap_out_pps.is_finite() && t.swap_out_pps > 0.0) {
            return Err(bad(
                "thresholds.swap_out_pps",
                format!("must be > 0, got {}", t.swap_out_pps),
            ));
        }
        if !self.ar_noise.is_finite() {
            return Err(bad("ar_noise", "must be finite".into()));
        }
        Ok(())
    }
}

/// A resource of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// CPU.
    Cpu,
    /// Memory (utilisation or swap-out).
    Mem,
    /// Network (NIC).
    Net,
}

impl Resource {
    /// `cpu`, `mem` or `net`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Mem => "mem",
            Resource::Net => "net",
        }
    }
}

/// The signal a verdict is based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    /// CPU utilisation.
    CpuUtil,
    /// Memory utilisation.
    MemUtil,
    /// Swap-out pages/s (plus swap-in with
    /// [`HotspotConfig::swap_includes_reads`]).
    SwapOut,
    /// NIC utilisation.
    NetUtil,
}

/// Why a resource of a host is hot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The resource.
    pub resource: Resource,
    /// The signal.
    pub indicator: Indicator,
    /// Observations above the threshold in the window.
    pub exceeded: usize,
    /// Observations in the window.
    pub window: usize,
    /// AR(1) prediction of the next observation (noise included).
    pub predicted: f64,
    /// The latest observation.
    pub latest: f64,
    /// The threshold.
    pub threshold: f64,
}

/// The hot resources of one host, in the order cpu, mem, net.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostHotspot {
    /// One entry per hot resource.
    pub evidence: Vec<Evidence>,
}

impl HostHotspot {
    /// Whether `r` is hot.
    pub fn is_hot(&self, r: Resource) -> bool {
        self.evidence.iter().any(|e| e.resource == r)
    }
}

/// What Analyze hands to Plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HotspotReport {
    /// Thresholds used (policies use them as "room" limits).
    pub thresholds: Thresholds,
    /// Hot hosts by id.
    pub hot: BTreeMap<String, HostHotspot>,
    /// Hosts not evaluated because of a migration, sorted.
    pub excluded: Vec<String>,
}

impl HotspotReport {
    /// Whether `host` is hot on `r`.
    pub fn is_hot(&self, host: &str, r: Resource) -> bool {
        self.hot.get(host).is_some_and(|h| h.is_hot(r))
    }

    /// Whether `host` is hot on any resource.
    pub fn is_hotspot(&self, host: &str) -> bool {
        self.hot.contains_key(host)
    }
}

/// The AR(1) prediction `μ + φ (x_p − μ)` of the observation after `window`
/// (`μ` mean, `φ` lag-1 autocorrelation clamped to [−1, 1], 0 when the
/// window has zero variance or fewer than two points). `None` for an empty
/// window.
pub fn ar1_predict(window: &[f64]) -> Option<f64> {
    let last = *window.last()?;
    let n = window.len() as f64;
    let mu = window.iter().sum::<f64>() / n;
    let var: f64 = window.iter().map(|x| (x - mu) * (x - mu)).sum();
    let phi = if window.len() < 2 || var <= f64::EPSILON * mu.abs().max(1.0) {
        0.0
    } else {
        let cov: f64 = window
            .windows(2)
            .map(|w| match w {
                [a, b] => (a - mu) * (b - mu),
                _ => 0.0,
            })
            .sum();
        (cov / var).clamp(-1.0, 1.0)
    };
    Some(mu + phi * (last - mu))
}

/// Evaluates one signal: k of the last n above `threshold` and the AR(1)
/// prediction above it too.
fn evaluate(
    resource: Resource,
    indicator: Indicator,
    series: &[f64],
    threshold: f64,
    cfg: &HotspotConfig,
) -> Option<Evidence> {
    let start = series.len().saturating_sub(cfg.n);
    let window = series.get(start..)?;
    let exceeded = window.iter().filter(|&&x| x > threshold).count();
    if exceeded < cfg.k {
        return None;
    }
    let predicted = ar1_predict(window)? + cfg.ar_noise;
    if predicted <= threshold {
        return None;
    }
    Some(Evidence {
        resource,
        indicator,
        exceeded,
        window: window.len(),
        predicted,
        latest: window.last().copied().unwrap_or(0.0),
        threshold,
    })
}

/// Evaluates one host's whole window (no migration logic; the network
/// observation is the NIC's: IDC traffic needs the VMs, see [`detect`]).
pub fn detect_host(host: &HostState, cfg: &HotspotConfig) -> HostHotspot {
    evaluate_host(host, &[], None, cfg)
}

/// Evaluates `host` on its samples taken after `since` (all when `None`);
/// `vms` are the VMs on it (for a network observation with IDC traffic).
fn evaluate_host(
    host: &HostState,
    vms: &[&VmState],
    since: Option<f64>,
    cfg: &HotspotConfig,
) -> HostHotspot {
    let t = &cfg.thresholds;
    let first = since.map_or(0, |e| {
        host.history
            .iter()
            .position(|s| s.at_s > e)
            .unwrap_or(host.history.len())
    });
    let samples = host.history.get(first..).unwrap_or(&[]);
    let series = |f: &dyn Fn(&HostSample) -> f64| -> Vec<f64> { samples.iter().map(f).collect() };
    let cpu = series(&|s| s.cpu_util);
    let mem = series(&|s| s.mem_util(host));
    let reads = cfg.swap_includes_reads.unwrap_or(false);
    let swap = series(&|s| s.swap_out_pps + if reads { s.swap_in_pps } else { 0.0 });
    let net = if cfg.net_includes_idc.unwrap_or(false) && !vms.is_empty() {
        net_with_idc(host, samples, vms)
    } else {
        series(&|s| s.net_util(host))
    };
    let mut evidence = Vec::new();
    if let Some(e) = evaluate(Resource::Cpu, Indicator::CpuUtil, &cpu, t.cpu, cfg) {
        evidence.push(e);
    }
    // Memory: swap-out (the thesis's overload), or utilisation when that
    // trigger is on (swap first: it is the stronger signal).
    let by_util = || {
        if cfg.mem_util_trigger.unwrap_or(true) {
            evaluate(Resource::Mem, Indicator::MemUtil, &mem, t.mem, cfg)
        } else {
            None
        }
    };
    if let Some(e) = evaluate(
        Resource::Mem,
        Indicator::SwapOut,
        &swap,
        t.swap_out_pps,
        cfg,
    )
    .or_else(by_util)
    {
        evidence.push(e);
    }
    if let Some(e) = evaluate(Resource::Net, Indicator::NetUtil, &net, t.net, cfg) {
        evidence.push(e);
    }
    HostHotspot { evidence }
}

/// The network observation with IDC traffic: per host sample, the busier
/// direction of the sum of the host's VMs' own tx / rx (IDC included) in
/// the samples taken at the same time (one report carries the host and its
/// VMs), over the NIC capacity.
fn net_with_idc(host: &HostState, samples: &[HostSample], vms: &[&VmState]) -> Vec<f64> {
    let cap = host.nic_bytes_per_s();
    samples
        .iter()
        .map(|hs| {
            let (mut tx, mut rx) = (0.0, 0.0);
            for vm in vms {
                if let Some(s) = vm.history.iter().rev().find(|s| s.at_s == hs.at_s) {
                    tx += s.tx_bytes_per_s;
                    rx += s.rx_bytes_per_s;
                }
            }
            crate::knowledge::snapshot::ratio(f64::max(tx, rx), cap)
        })
        .collect()
}

/// Flags the hotspots of `snap`. Hosts of running migrations are listed in
/// [`HotspotReport::excluded`] and not evaluated; a host whose migration
/// ended is evaluated on the samples taken after the end only. Call it with
/// [`HotspotConfig::for_policy`] of the planning policy.
pub fn detect(snap: &Snapshot, cfg: &HotspotConfig) -> HotspotReport {
    let excluded = snap.hosts_in_migration();
    let with_idc = cfg.net_includes_idc.unwrap_or(false);
    let by_host: BTreeMap<&str, Vec<&VmState>> = if with_idc {
        let mut m: BTreeMap<&str, Vec<&VmState>> = BTreeMap::new();
        for vm in snap.vms.values() {
            m.entry(vm.host.as_str()).or_default().push(vm);
        }
        m
    } else {
        BTreeMap::new()
    };
    let mut hot = BTreeMap::new();
    for (id, host) in &snap.hosts {
        if excluded.contains(id) {
            continue;
        }
        let vms = by_host.get(id.as_str()).map_or(&[][..], Vec::as_slice);
        let h = evaluate_host(host, vms, snap.window_restart_s(id), cfg);
        if !h.evidence.is_empty() {
            hot.insert(id.clone(), h);
        }
    }
    HotspotReport {
        thresholds: cfg.thresholds,
        hot,
        excluded: excluded
            .into_iter()
            .filter(|h| snap.hosts.contains_key(h))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::snapshot::MigrationRecord;

    fn host_with_cpu(cpu: &[f64]) -> HostState {
        HostState {
            cores: 8.0,
            memory_mb: 1000.0,
            nic_bps: 8000.0,
            history: cpu
                .iter()
                .enumerate()
                .map(|(i, &c)| HostSample {
                    at_s: i as f64,
                    cpu_util: c,
                    mem_used_mb: 100.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn ar1_constant_window_predicts_mean() {
        assert_eq!(ar1_predict(&[0.9, 0.9, 0.9]), Some(0.9));
        assert_eq!(ar1_predict(&[]), None);
        assert_eq!(ar1_predict(&[0.4]), Some(0.4));
    }

    /// Window 1,2,3,4,5: μ = 3; deviations −2,−1,0,1,2; Σd² = 10;
    /// lag-1 products (−2)(−1)+(−1)(0)+0·1+1·2 = 4; φ = 0.4;
    /// x̂ = 3 + 0.4·(5 − 3) = 3.8.
    #[test]
    fn ar1_hand_worked() {
        let p = ar1_predict(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert!((p - 3.8).abs() < 1e-12, "{p}");
    }

    #[test]
    fn k_of_n_and_prediction() {
        let cfg = HotspotConfig::default();
        // 3 of 5 above 0.85 and a high prediction: hot.
        // μ = .894, φ = .000264/.01272 = .0208, x̂ = .894 + .0208·.026 = .8945.
        let h = host_with_cpu(&[0.8, 0.9, 0.95, 0.9, 0.92]);
        let v = detect_host(&h, &cfg);
        assert!(v.is_hot(Resource::Cpu), "{v:?}");
        let e = &v.evidence[0];
        assert_eq!((e.exceeded, e.window), (4, 5));
        assert!((e.predicted - 0.8945).abs() < 1e-3, "{e:?}");
        // 4 of 5 above, but one low outlier drags the AR(1) prediction
        // (μ = .834, φ ≈ −.007) below the threshold: not hot.
        let h = host_with_cpu(&[0.5, 0.9, 0.95, 0.9, 0.92]);
        assert!(!detect_host(&h, &cfg).is_hot(Resource::Cpu));
        // A single spike never triggers.
        let h = host_with_cpu(&[0.5, 0.5, 0.5, 0.5, 1.0]);
        assert!(!detect_host(&h, &cfg).is_hot(Resource::Cpu));
        // 3 of 5 above, but falling fast: the AR(1) prediction is below.
        // μ = 0.71, deviations .24,.24,.24,−.36,−.36: Σd² = 0.432,
        // lag-1 = .0576+.0576−.0864+.1296 = .1584, φ = .3667,
        // x̂ = .71 + .3667·(−.36) = .578 < .85.
        let h = host_with_cpu(&[0.95, 0.95, 0.95, 0.35, 0.35]);
        assert!(!detect_host(&h, &cfg).is_hot(Resource::Cpu));
        // Only the last n count: old highs fall out of the window.
        let h = host_with_cpu(&[0.9, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5]);
        assert!(!detect_host(&h, &cfg).is_hot(Resource::Cpu));
    }

    #[test]
    fn memory_and_net_signals() {
        let cfg = HotspotConfig::default();
        let mut h = host_with_cpu(&[0.1; 5]);
        for s in &mut h.history {
            s.swap_out_pps = 400.0;
        }
        let v = detect_host(&h, &cfg);
        assert!(v.is_hot(Resource::Mem));
        assert_eq!(v.evidence[0].indicator, Indicator::SwapOut);
        let mut h = host_with_cpu(&[0.1; 5]);
        for s in &mut h.history {
            s.mem_used_mb = 990.0;
            s.nic_rx_bytes_per_s = 900.0; // 900 B/s of 1000 B/s = 0.9
        }
        let v = detect_host(&h, &cfg);
        assert!(v.is_hot(Resource::Mem) && v.is_hot(Resource::Net), "{v:?}");
        assert!(!v.is_hot(Resource::Cpu));
    }

    /// A host of a running migration is not evaluated; when the migration
    /// ends, its window restarts: samples taken before the end never count.
    #[test]
    fn migrating_hosts_are_excluded_and_their_windows_restart() {
        let at = |cpu: f64, t0: f64| {
            let mut h = host_with_cpu(&[cpu; 5]);
            for (i, s) in h.history.iter_mut().enumerate() {
                s.at_s = t0 + 10.0 * i as f64;
            }
            h
        };
        let mut snap = Snapshot {
            now_s: 100.0,
            interval_s: 10.0,
            ..Default::default()
        };
        snap.hosts.insert("a".into(), at(0.99, 60.0));
        snap.hosts.insert("b".into(), at(0.99, 60.0));
        snap.hosts.insert("c".into(), at(0.99, 60.0));
        snap.migrations.push(MigrationRecord {
            vm: "v".into(),
            from: "a".into(),
            to: "b".into(),
            started_s: 90.0,
            ended_s: None,
        });
        let r = detect(&snap, &HotspotConfig::default());
        assert_eq!(r.excluded, vec!["a".to_string(), "b".to_string()]);
        assert!(r.is_hotspot("c") && !r.is_hotspot("a"));
        // Ended at 95: evaluated again, on the samples after 95 only (one:
        // fewer than k), so not hot however high the old samples were.
        if let Some(m) = snap.migrations.first_mut() {
            m.ended_s = Some(95.0);
        }
        let r = detect(&snap, &HotspotConfig::default());
        assert!(r.excluded.is_empty(), "{r:?}");
        assert!(!r.is_hotspot("a") && !r.is_hotspot("b") && r.is_hotspot("c"));
        // Three samples after the end, all high: hot again.
        snap.now_s = 120.0;
        for h in snap.hosts.values_mut() {
            *h = at(0.99, 80.0);
        }
        let r = detect(&snap, &HotspotConfig::default());
        assert!(r.is_hotspot("a") && r.is_hotspot("b"), "{r:?}");
    }

    /// The swap window [3482, 3482, 3482, 0, 0] of a host whose swapping
    /// VM left passes k-of-n and AR(1) (x̂ ≈ 1324 > 150) unless the window
    /// restarts at the migration's end.
    #[test]
    fn a_reclaimed_source_is_not_hot() {
        let mut h = host_with_cpu(&[0.1; 5]);
        for (i, s) in h.history.iter_mut().enumerate() {
            s.at_s = 10.0 * i as f64;
            s.swap_out_pps = if i < 3 { 3482.0 } else { 0.0 };
        }
        let cfg = HotspotConfig::default();
        assert!(detect_host(&h, &cfg).is_hot(Resource::Mem));
        let mut snap = Snapshot {
            now_s: 40.0,
            interval_s: 10.0,
            ..Default::default()
        };
        snap.hosts.insert("a".into(), h);
        snap.migrations.push(MigrationRecord {
            vm: "v".into(),
            from: "a".into(),
            to: "b".into(),
            started_s: 20.0,
            ended_s: Some(23.0),
        });
        assert!(!detect(&snap, &cfg).is_hotspot("a"));
    }

    /// The memory-utilisation trigger is an option (off for the thesis's
    /// policies); Sandpiper's network observation counts IDC traffic.
    #[test]
    fn policy_dependent_observations() {
        let mut h = host_with_cpu(&[0.1; 5]);
        for s in &mut h.history {
            s.mem_used_mb = 990.0;
        }
        let thesis = HotspotConfig::default().for_policy(DetectorDefaults {
            mem_util_trigger: false,
            net_includes_idc: true,
            swap_includes_reads: true,
        });
        assert!(!detect_host(&h, &thesis).is_hot(Resource::Mem));
        // Swap activity: 100 pages/s out and 100 in is below the 150 pages/s
        // threshold as swap-out, above it as Sandpiper's reads + writes.
        let mut sw = h.clone();
        for s in &mut sw.history {
            s.mem_used_mb = 500.0;
            s.swap_out_pps = 100.0;
            s.swap_in_pps = 100.0;
        }
        assert!(detect_host(&sw, &thesis).is_hot(Resource::Mem));
        let writes_only = HotspotConfig {
            swap_includes_reads: Some(false),
            ..thesis.clone()
        };
        assert!(!detect_host(&sw, &writes_only).is_hot(Resource::Mem));
        assert!(!detect_host(&sw, &HotspotConfig::default()).is_hot(Resource::Mem));
        assert!(detect_host(&h, &HotspotConfig::default()).is_hot(Resource::Mem));
        let forced = HotspotConfig {
            mem_util_trigger: Some(true),
            ..Default::default()
        };
        let forced = forced.for_policy(DetectorDefaults {
            mem_util_trigger: false,
            net_includes_idc: false,
            swap_includes_reads: false,
        });
        assert!(detect_host(&h, &forced).is_hot(Resource::Mem));
        // IDC: two VMs exchange 450 B/s each way on a 1000 B/s NIC (the
        // NIC itself carries nothing): 900/1000 = 0.9 > 0.8 with IDC.
        let mut snap = Snapshot {
            now_s: 40.0,
            interval_s: 10.0,
            ..Default::default()
        };
        snap.hosts.insert("a".into(), host_with_cpu(&[0.1; 5]));
        for v in ["x", "y"] {
            snap.vms.insert(
                v.into(),
                VmState {
                    host: "a".into(),
                    history: (0..5)
                        .map(|i| crate::knowledge::snapshot::VmSample {
                            at_s: f64::from(i),
                            tx_bytes_per_s: 450.0,
                            rx_bytes_per_s: 450.0,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            );
        }
        assert!(detect(&snap, &thesis).is_hot("a", Resource::Net));
        assert!(!detect(&snap, &HotspotConfig::default()).is_hotspot("a"));
    }

    #[test]
    fn config_validation() {
        let mut c = HotspotConfig::default();
        assert!(c.validate().is_ok());
        c.k = 1;
        assert!(c.validate().unwrap_err().to_string().contains("hotspot.k"));
        c.k = 6;
        assert!(c.validate().unwrap_err().to_string().contains("hotspot.n"));
        let mut c = HotspotConfig::default();
        c.thresholds.cpu = 1.5;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("thresholds.cpu"));
    }
}
