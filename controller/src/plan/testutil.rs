//! Hand-made data centers for policy unit tests.

use crate::analyze::{detect, HotspotConfig, HotspotReport};
use crate::knowledge::snapshot::{
    ExternalEndpoint, HostLocation, HostState, Snapshot, SwitchInfo, SwitchLevel, VmSample, VmState,
};

/// Builder of a small snapshot. Every host gets `samples` identical
/// observations derived from its VMs (sim physics), so the k-of-n detector
/// sees a steady state.
pub struct Dc {
    pub snap: Snapshot,
}

impl Dc {
    pub fn new() -> Self {
        Dc {
            snap: Snapshot {
                now_s: 1000.0,
                interval_s: 10.0,
                round: 100,
                ..Default::default()
            },
        }
    }

    /// Host `id` in rack `rack` of pod `pod` (cluster `c0`), 10 Gbit/s NIC.
    pub fn host(mut self, id: &str, rack: &str, pod: &str, cores: f64, mem_mb: f64) -> Self {
        let t = &mut self.snap.topology;
        t.switches.entry("c0".into()).or_insert(SwitchInfo {
            level: SwitchLevel::Core,
            uplinks: vec![],
        });
        t.switches.entry(pod.into()).or_insert(SwitchInfo {
            level: SwitchLevel::Aggregation,
            uplinks: vec!["c0".into()],
        });
        t.switches.entry(rack.into()).or_insert(SwitchInfo {
            level: SwitchLevel::Tor,
            uplinks: vec![pod.into()],
        });
        self.snap.hosts.insert(
            id.into(),
            HostState {
                cores,
                memory_mb: mem_mb,
                nic_bps: 10e9,
                location: HostLocation {
                    rack: rack.into(),
                    pod: pod.into(),
                    cluster: "c0".into(),
                    unknown: false,
                },
                ..Default::default()
            },
        );
        self
    }

    pub fn with_host(mut self, id: &str, f: impl FnOnce(&mut HostState)) -> Self {
        if let Some(h) = self.snap.hosts.get_mut(id) {
            f(h);
        }
        self
    }

    /// VM with steady CPU (cores) and allocated memory.
    pub fn vm(mut self, name: &str, host: &str, cpu_cores: f64, mem_mb: f64) -> Self {
        self.snap.vms.insert(
            name.into(),
            VmState {
                host: host.into(),
                vcpus: 1,
                memory_mb: mem_mb,
                max_memory_mb: mem_mb * 2.0,
                dirty_rate_mbps: 1.0,
                history: vec![VmSample {
                    cpu_cores,
                    mem_used_mb: mem_mb * 0.5,
                    gotten_s: 1.0,
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        self
    }

    pub fn with_vm(mut self, name: &str, f: impl FnOnce(&mut VmState)) -> Self {
        if let Some(v) = self.snap.vms.get_mut(name) {
            f(v);
        }
        self
    }

    /// An external endpoint at switch `switch` (a rack, pod or `c0`).
    pub fn external(mut self, name: &str, switch: &str) -> Self {
        let location = self.snap.topology.locate_switch(switch);
        self.snap.externals.insert(
            name.into(),
            ExternalEndpoint {
                switch: switch.into(),
                ipv4: None,
                location,
            },
        );
        self
    }

    /// λ(a,b) = λ(b,a) = `rate` bytes/s.
    pub fn talk(mut self, a: &str, b: &str, rate: f64) -> Self {
        self.snap
            .traffic
            .entry(a.into())
            .or_default()
            .insert(b.into(), rate);
        self.snap
            .traffic
            .entry(b.into())
            .or_default()
            .insert(a.into(), rate);
        self
    }

    /// Fills VM tx/rx from the matrix and gives every host `n` identical
    /// samples; returns the snapshot and the default detector's report.
    pub fn build(mut self, n: usize) -> (Snapshot, HotspotReport) {
        let rates: Vec<(String, (f64, f64))> = crate::plan::physics::vm_rates(&self.snap)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        for (name, (tx, rx)) in rates {
            if let Some(vm) = self.snap.vms.get_mut(&name) {
                for s in &mut vm.history {
                    s.tx_bytes_per_s = tx;
                    s.rx_bytes_per_s = rx;
                }
            }
        }
        let samples = crate::plan::physics::host_samples(&self.snap, self.snap.now_s);
        for (id, s) in samples {
            if let Some(h) = self.snap.hosts.get_mut(&id) {
                h.history = vec![s; n];
            }
        }
        let report = detect(&self.snap, &HotspotConfig::default());
        (self.snap, report)
    }
}

/// Names of migrate decisions as (vm, from, to).
pub fn migrations(d: &[super::Decision]) -> Vec<(String, String, String)> {
    d.iter()
        .filter_map(|d| match &d.action {
            super::Action::Migrate { vm, from, to } => Some((vm.clone(), from.clone(), to.clone())),
            _ => None,
        })
        .collect()
}
