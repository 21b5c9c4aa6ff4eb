//! How the simulator turns VM demands, placement and traffic into
//! observations (the simulated hostd reports); the orchestrator uses the
//! same communication cost. Pure: reads snapshots only.
//!
//! - VM `tx`/`rx` = its row / column sums of the traffic matrix;
//! - host CPU = Σ VM CPU (cores) / host cores;
//! - host memory in use = Σ allocated VM memory;
//! - host swap-out = Σ VM swap-out;
//! - host NIC tx/rx = traffic of its VMs to / from VMs on other hosts and
//!   external endpoints (IDC traffic never reaches the NIC).

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
    let external = |name: &str| !snap.vms.contains_key(name) && snap.externals.contains_key(name);
    for (u, row) in &snap.traffic {
        let hu = snap.vms.get(u).map(|v| v.host.as_str());
        if hu.is_none() && !external(u) {
            continue;
        }
        for (v, &r) in row {
            let hv = snap.vms.get(v).map(|v| v.host.as_str());
            match (hu, hv) {
                (Some(hu), Some(hv)) if hu != hv => {
                    *tx.entry(hu).or_default() += r;
                    *rx.entry(hv).or_default() += r;
                }
                // A VM and an external endpoint: always through the NIC.
                (Some(hu), None) if external(v) => *tx.entry(hu).or_default() += r,
                (None, Some(hv)) => *rx.entry(hv).or_default() += r,
                _ => {}
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

/// Per-VM (tx, rx) bytes/s from the traffic matrix (external endpoints get
/// entries too; nothing reads them).
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

/// Overall communication cost `C = Σ_u Σ_v λ(u,v) · Σ_{i≤ℓ(u,v)} c_i` of the
/// snapshot's placement, with link weights `c_1..c_4`. Pairs of a VM and an
/// external endpoint count, both directions, at the level where the VM's
/// host meets the endpoint's switch ([`crate::plan::view::View::ext_level`]).
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
        for p in view.ext_peers(u) {
            let l = view.ext_level(hu, p.ext);
            total += p.total() * cum.get(l).copied().unwrap_or(0.0);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::snapshot::{
        ExternalEndpoint, HostState, SwitchInfo, SwitchLevel, TrafficClass, VmSample, VmState,
    };
    use crate::plan::view::View;

    /// `a` on h1 (rack r0, pod p0) sends 10/s to client `c` at `switch`
    /// and receives 30/s from it; h2 is in rack r1 of pod p1; one core c0.
    fn with_client(switch: &str) -> Snapshot {
        let mut s = Snapshot::default();
        let sw = |level, up: &[&str]| SwitchInfo {
            level,
            uplinks: up.iter().map(|u| u.to_string()).collect(),
        };
        let t = &mut s.topology.switches;
        t.insert("c0".into(), sw(SwitchLevel::Core, &[]));
        t.insert("p0".into(), sw(SwitchLevel::Aggregation, &["c0"]));
        t.insert("p1".into(), sw(SwitchLevel::Aggregation, &["c0"]));
        t.insert("r0".into(), sw(SwitchLevel::Tor, &["p0"]));
        t.insert("r1".into(), sw(SwitchLevel::Tor, &["p1"]));
        for (h, tor) in [("h1", "r0"), ("h2", "r1")] {
            let location = s.topology.locate(tor).unwrap_or_default();
            s.hosts.insert(
                h.into(),
                HostState {
                    cores: 8.0,
                    memory_mb: 16384.0,
                    nic_bps: 1e10,
                    location,
                    ..Default::default()
                },
            );
        }
        s.vms.insert(
            "a".into(),
            VmState {
                host: "h1".into(),
                memory_mb: 1024.0,
                history: vec![VmSample {
                    tx_bytes_per_s: 10.0,
                    rx_bytes_per_s: 30.0,
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let location = s.topology.locate_switch(switch);
        s.externals.insert(
            "c".into(),
            ExternalEndpoint {
                switch: switch.into(),
                ipv4: None,
                location,
            },
        );
        s.traffic
            .entry("a".into())
            .or_default()
            .insert("c".into(), 10.0);
        s.traffic
            .entry("c".into())
            .or_default()
            .insert("a".into(), 30.0);
        s
    }

    /// W = [0, 1, 11, 111, 1111]: both directions (40/s) count at the
    /// level where h1 meets the client's switch.
    #[test]
    fn external_pairs_cost_at_their_level() {
        let w = [1.0, 10.0, 100.0, 1000.0];
        assert_eq!(communication_cost(&with_client("r0"), &w), 40.0);
        assert_eq!(communication_cost(&with_client("p0"), &w), 40.0 * 11.0);
        assert_eq!(communication_cost(&with_client("r1"), &w), 40.0 * 111.0);
        assert_eq!(communication_cost(&with_client("c0"), &w), 40.0 * 111.0);
        assert_eq!(
            communication_cost(&with_client("elsewhere"), &w),
            40.0 * 1111.0
        );
    }

    /// Traffic with an external crosses the VM's host NIC (IDC traffic
    /// does not), whatever the VM's own counters say.
    #[test]
    fn nic_counts_external_traffic() {
        let snap = {
            let mut s = with_client("c0");
            s.vms.insert("b".into(), s.vms["a"].clone());
            s.traffic
                .entry("a".into())
                .or_default()
                .insert("b".into(), 1000.0);
            s
        };
        let hs = host_samples(&snap, 0.0);
        assert_eq!(hs["h1"].nic_tx_bytes_per_s, 10.0);
        assert_eq!(hs["h1"].nic_rx_bytes_per_s, 30.0);
        assert_eq!(hs["h2"].nic_tx_bytes_per_s, 0.0);
        assert_eq!(snap.traffic_class("a", "c"), Some(TrafficClass::Nic));
        assert_eq!(snap.traffic_class("c", "a"), Some(TrafficClass::Nic));
        assert_eq!(snap.traffic_class("a", "b"), Some(TrafficClass::Idc));
        // The view's outside traffic of `a` (which follows it to any
        // host) is at least its traffic with the client, even with silent
        // counters.
        let mut quiet = snap.clone();
        for vm in quiet.vms.values_mut() {
            vm.history.clear();
        }
        let view = View::new(&quiet);
        let a = view.vm_id("a").unwrap();
        assert_eq!(view.ext_tx[a], 10.0);
        assert_eq!(view.ext_rx[a], 30.0);
        assert_eq!(view.ext_count(), 1);
        assert_eq!(view.vm_id("c"), None, "an external is no VM");
    }
}
