//! How the simulator turns VM demands, placement and traffic into
//! observations (the simulated hostd reports); the orchestrator uses the
//! same communication cost. Pure: reads snapshots only.
//!
//! - VM `tx`/`rx` = its row / column sums of the traffic matrix;
//! - host CPU = Σ VM CPU (cores) / host cores;
//! - host memory in use = Σ allocated VM memory;
//! - host swap-out = Σ VM swap-out;
//! - host NIC tx/rx = traffic of its VMs to / from VMs on other hosts
//!   (IDC traffic never reaches the NIC).

use crate::knowledge::snapshot::{HostSample, Snapshot};
use std::collections::{BTreeMap, HashMap};

/// Host samples derived from the latest VM samples, placement and traffic.
pub fn host_samples(snap: &Snapshot, at_s: f64) -> BTreeMap<String, HostSample> {
    let mut out: BTreeMap<String, HostSample> = snap
        .hosts
        .keys()
        .map(|h| {
            (
                h.clone(),
                HostSample {
                    at_s,
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut cpu: HashMap<&str, f64> = HashMap::new();
    for vm in snap.vms.values() {
        let s = vm.latest();
        if let Some(h) = out.get_mut(&vm.host) {
            *cpu.entry(vm.host.as_str()).or_default() += s.cpu_cores;
            h.mem_used_mb += vm.memory_mb;
            h.swap_out_pps += s.swap_out_pps;
            h.swap_in_pps += s.swap_in_pps;
        }
    }
    let mut tx: HashMap<&str, f64> = HashMap::new();
    let mut rx: HashMap<&str, f64> = HashMap::new();
    for (u, row) in &snap.traffic {
        let Some(hu) = snap.vms.get(u).map(|v| v.host.as_str()) else {
            continue;
        };
        for (v, &r) in row {
            let Some(hv) = snap.vms.get(v).map(|v| v.host.as_str()) else {
                continue;
            };
            if hu != hv {
                *tx.entry(hu).or_default() += r;
                *rx.entry(hv).or_default() += r;
            }
        }
    }
    for (id, s) in out.iter_mut() {
        let cores = snap.hosts.get(id).map_or(0.0, |h| h.cores);
        s.cpu_util =
            crate::knowledge::snapshot::ratio(cpu.get(id.as_str()).copied().unwrap_or(0.0), cores);
        s.nic_tx_bytes_per_s = tx.get(id.as_str()).copied().unwrap_or(0.0);
        s.nic_rx_bytes_per_s = rx.get(id.as_str()).copied().unwrap_or(0.0);
    }
    out
}

/// Per-VM (tx, rx) bytes/s from the traffic matrix.
pub fn vm_rates(snap: &Snapshot) -> HashMap<&str, (f64, f64)> {
    let mut out: HashMap<&str, (f64, f64)> = HashMap::new();
    for (u, row) in &snap.traffic {
        for (v, &r) in row {
            out.entry(u.as_str()).or_default().0 += r;
            out.entry(v.as_str()).or_default().1 += r;
        }
    }
    out
}

/// Overall communication cost `C = Σ_u Σ_v λ(u,v) · Σ_{i≤ℓ(u,v)} c_i` of the
/// `W(ℓ) = Σ_{i≤ℓ} c_i` for ℓ = 0..4.
pub fn cumulative_weights(w: &[f64; 4]) -> [f64; 5] {
    let mut out = [0.0; 5];
    let mut acc = 0.0;
    for (i, c) in w.iter().enumerate() {
        acc += c;
        if let Some(o) = out.get_mut(i + 1) {
            *o = acc;
        }
    }
    out
}

/// snapshot's placement, with link weights `c_1..c_4`.
pub fn communication_cost(snap: &Snapshot, weights: &[f64; 4]) -> f64 {
    let view = crate::plan::view::View::new(snap);
    let cum = cumulative_weights(weights);
    let mut total = 0.0;
    for u in 0..view.vm_count() {
        let hu = view.host_of(u);
        for p in view.peers(u) {
            let l = view.level(hu, view.host_of(p.vm));
            total += p.out * cum.get(l).copied().unwrap_or(0.0);
        }
    }
    total
}
