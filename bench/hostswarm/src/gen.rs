//! The emulated data center: hosts, their VMs, and the metrics of every
//! report, all derived from a seed (the same seed gives the same
//! registrations and the same reports, whatever the order they are made
//! in).
//!
//! Host `i` is `hs0000`…; VMs are numbered across the data center
//! (`hsvm00000`…), spread evenly (the first `V mod H` hosts get one more),
//! with MAC `02:5a:` + the VM's number (locally administered, unique). A
//! fraction of the hosts is hot: their VMs run at 90–100 % CPU, so the
//! host's utilisation is above the detector's default CPU threshold
//! (0.85); the others run at 10–60 %.

use shoal_common::proto::{
    BackendKind, BridgeAttachment, HostMetrics, Registration, Report, VmBackendSpec, VmInventory,
    VmMetrics, VmState,
};

/// vCPUs of every VM.
pub const VCPUS: u32 = 2;
/// Boot memory of every VM, MiB.
pub const VM_MAX_MEMORY_MB: u64 = 4096;
/// Memory allocated to every VM, MiB.
pub const VM_MEMORY_MB: u64 = 2048;
/// Physical memory of every host, MiB.
pub const HOST_MEMORY_MB: u64 = 262_144;
/// Uplink capacity of every host, bit/s.
pub const HOST_NIC_BPS: u64 = 10_000_000_000;
/// Datapath id of host 0's (made-up) bridge; host `i` has this + `i`.
pub const DPID_BASE: u64 = 0x0000_5a00_0000_0000;

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform number in [0, 1) from the words `parts` (hashed in order).
pub fn unit(parts: &[u64]) -> f64 {
    let h = parts.iter().fold(0u64, |acc, p| mix(acc ^ mix(*p)));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// What to emulate.
#[derive(Debug, Clone, PartialEq)]
pub struct DcSpec {
    /// Hosts (≥ 1).
    pub hosts: usize,
    /// VMs in all.
    pub vms: usize,
    /// Seed of every number drawn.
    pub seed: u64,
    /// Each host's report interval, s (> 0).
    pub interval_s: f64,
    /// Fraction of the hosts that are hot, in [0, 1].
    pub hot_fraction: f64,
}

/// One emulated host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSpec {
    /// Index (0-based).
    pub index: usize,
    /// Host id.
    pub id: String,
    /// Its VMs' global numbers (consecutive).
    pub vms: std::ops::Range<usize>,
    /// Whether its VMs run hot.
    pub hot: bool,
}

/// The emulated data center.
#[derive(Debug, Clone)]
pub struct Dc {
    /// What it was made from.
    pub spec: DcSpec,
    /// Its hosts.
    pub hosts: Vec<HostSpec>,
}

/// The id of host `i`.
pub fn host_id(i: usize) -> String {
    format!("hs{i:04}")
}

/// The name of VM `n`.
pub fn vm_name(n: usize) -> String {
    format!("hsvm{n:05}")
}

/// The MAC of VM `n` (`02:5a:` + n as 4 bytes, lower case).
pub fn vm_mac(n: usize) -> String {
    let b = (n as u32).to_be_bytes();
    format!("02:5a:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

// Streams of the generator (one per kind of number drawn).
const HOT: u64 = 1;
const CPU_BASE: u64 = 2;
const CPU_NOISE: u64 = 3;
const NET_BASE: u64 = 4;
const NET_NOISE: u64 = 5;

impl Dc {
    /// The data center of `spec` (`hosts` is at least 1).
    pub fn new(spec: DcSpec) -> Dc {
        let h = spec.hosts.max(1);
        let per = spec.vms / h;
        let extra = spec.vms % h;
        let mut next = 0;
        let hosts = (0..h)
            .map(|i| {
                let n = per + usize::from(i < extra);
                let vms = next..next + n;
                next += n;
                HostSpec {
                    index: i,
                    id: host_id(i),
                    vms,
                    hot: unit(&[spec.seed, HOT, i as u64]) < spec.hot_fraction,
                }
            })
            .collect();
        Dc { spec, hosts }
    }

    /// The registration of host `i` (None beyond the last host).
    pub fn registration(&self, i: usize) -> Option<Registration> {
        let h = self.hosts.get(i)?;
        let vms: Vec<VmInventory> = h
            .vms
            .clone()
            .map(|n| VmInventory {
                environment: None,
                environment_head: false,
                name: vm_name(n),
                mac: vm_mac(n),
                ip: None,
                vcpus: VCPUS,
                memory_mb: VM_MEMORY_MB,
                max_memory_mb: VM_MAX_MEMORY_MB,
                spec: VmBackendSpec::Netns {
                    namespace: format!("ns-{}", vm_name(n)),
                    iface: "eth0".into(),
                    port: format!("p{n}"),
                    vf_iface: None,
                    vf_port: None,
                    scenario: None,
                    scenario_epoch_unix_ms: None,
                },
            })
            .collect();
        Some(Registration {
            domain: None,
            host_id: h.id.clone(),
            // TEST-NET-2 addresses: nothing answers there (the controller
            // only stores them; a dry run never calls them).
            api_url: format!("http://198.51.100.{}:7070", 1 + i % 254),
            dom0_addr: format!("198.51.100.{}", 1 + i % 254),
            cores: (h.vms.len() as u32 * VCPUS).max(1),
            memory_mb: HOST_MEMORY_MB,
            nic: "eth0".into(),
            nic_bps: HOST_NIC_BPS,
            vf_count: 0,
            bridge: Some(BridgeAttachment {
                name: format!("br-{}", h.id),
                datapath_id: DPID_BASE + i as u64,
            }),
            interval_s: self.spec.interval_s,
            vms,
            hostd_version: concat!("hostswarm ", env!("CARGO_PKG_VERSION")).into(),
        })
    }

    /// Report `seq` (≥ 1) of host `i`, ending at `at_unix_ms` (None beyond
    /// the last host).
    pub fn report(&self, i: usize, seq: u64, at_unix_ms: u64) -> Option<Report> {
        let h = self.hosts.get(i)?;
        let seed = self.spec.seed;
        let mut cores_used = 0.0;
        let mut mem_used = 1024;
        let (mut tx, mut rx) = (0.0, 0.0);
        let vms: Vec<VmMetrics> = h
            .vms
            .clone()
            .map(|n| {
                let n64 = n as u64;
                let base = if h.hot {
                    0.90 + 0.08 * unit(&[seed, CPU_BASE, n64])
                } else {
                    0.10 + 0.50 * unit(&[seed, CPU_BASE, n64])
                };
                let noise = 0.04 * (unit(&[seed, CPU_NOISE, n64, seq]) - 0.5);
                let cpu_util = (base + noise).clamp(0.0, 1.0);
                let cpu_cores = cpu_util * f64::from(VCPUS);
                cores_used += cpu_cores;
                // 10 kB/s to 5 MB/s each way, ±10 % per report.
                let rate = 1e4 + 5e6 * unit(&[seed, NET_BASE, n64]).powi(3);
                let wobble = 0.9 + 0.2 * unit(&[seed, NET_NOISE, n64, seq]);
                let vm_tx = rate * wobble;
                let vm_rx = rate * (2.0 - wobble);
                tx += vm_tx;
                rx += vm_rx;
                let used = VM_MEMORY_MB * 3 / 5;
                mem_used += used;
                VmMetrics {
                    name: vm_name(n),
                    backend: BackendKind::Netns,
                    state: VmState::Running,
                    cpu_cores,
                    cpu_util,
                    gotten_ms: None,
                    wait_ms: None,
                    blocked_ms: None,
                    memory_mb: VM_MEMORY_MB,
                    max_memory_mb: VM_MAX_MEMORY_MB,
                    used_memory_mb: used,
                    tx_bytes_per_s: vm_tx,
                    rx_bytes_per_s: vm_rx,
                    tx_packets_per_s: vm_tx / 800.0,
                    rx_packets_per_s: vm_rx / 800.0,
                    dirty_rate_mbps: Some(1.0 + 10.0 * unit(&[seed, CPU_BASE, n64, 1])),
                    vf_attached: false,
                }
            })
            .collect();
        let cores = f64::from((h.vms.len() as u32 * VCPUS).max(1));
        Some(Report {
            host_id: h.id.clone(),
            seq,
            at_unix_ms,
            interval_s: self.spec.interval_s,
            host: HostMetrics {
                cpu_util: (cores_used / cores).clamp(0.0, 1.0),
                mem_used_mb: mem_used,
                mem_total_mb: HOST_MEMORY_MB,
                swap_out_pages_per_s: 0.0,
                swap_in_pages_per_s: 0.0,
                // Half of the VMs' traffic leaves the host.
                nic_tx_bytes_per_s: tx / 2.0,
                nic_rx_bytes_per_s: rx / 2.0,
            },
            vms,
            events: Vec::new(),
        })
    }

    /// How many hosts are hot.
    pub fn hot_hosts(&self) -> usize {
        self.hosts.iter().filter(|h| h.hot).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_controller::monitor::hosts::HostRegistry;
    use std::collections::BTreeSet;

    fn dc(hosts: usize, vms: usize, seed: u64) -> Dc {
        Dc::new(DcSpec {
            hosts,
            vms,
            seed,
            interval_s: 0.64,
            hot_fraction: 0.1,
        })
    }

    #[test]
    fn vms_are_spread_evenly_and_numbered_once() {
        let d = dc(7, 100, 1);
        let sizes: Vec<usize> = d.hosts.iter().map(|h| h.vms.len()).collect();
        assert_eq!(sizes, vec![15, 15, 14, 14, 14, 14, 14]);
        let all: Vec<usize> = d.hosts.iter().flat_map(|h| h.vms.clone()).collect();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(dc(0, 0, 1).registration(0).is_some(), "at least one host");
        assert!(d.registration(7).is_none() && d.report(7, 1, 0).is_none());
    }

    #[test]
    fn names_and_macs_are_unique_and_valid() {
        let d = dc(640, 10_000, 7);
        let mut names = BTreeSet::new();
        let mut macs = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for i in 0..d.hosts.len() {
            let r = d.registration(i).expect("registration");
            assert!(shoal_common::proto::valid_command_id(&r.host_id));
            assert!(ids.insert(r.host_id.clone()));
            for v in &r.vms {
                assert!(shoal_common::proto::valid_command_id(&v.name), "{}", v.name);
                assert!(v.mac.parse::<ofp::MacAddr>().is_ok(), "{}", v.mac);
                assert!(v.memory_mb <= v.max_memory_mb);
                assert!(names.insert(v.name.clone()), "{} twice", v.name);
                assert!(macs.insert(v.mac.clone()), "{} twice", v.mac);
                if let VmBackendSpec::Netns { port, .. } = &v.spec {
                    assert!(port.len() <= 15, "{port}");
                }
            }
        }
        assert_eq!((names.len(), macs.len()), (10_000, 10_000));
        assert_eq!(vm_mac(0x0102_0304), "02:5a:01:02:03:04");
    }

    #[test]
    fn the_same_seed_gives_the_same_data_center() {
        let (a, b, c) = (dc(40, 500, 3), dc(40, 500, 3), dc(40, 500, 4));
        assert_eq!(a.hosts, b.hosts);
        assert_eq!(a.registration(5), b.registration(5));
        assert_eq!(a.report(5, 9, 1000), b.report(5, 9, 1000));
        assert_ne!(a.report(5, 9, 1000), c.report(5, 9, 1000));
        assert_ne!(a.report(5, 9, 1000), a.report(5, 10, 1000));
    }

    #[test]
    fn some_hosts_are_hot_and_only_they_exceed_the_cpu_threshold() {
        let d = dc(640, 10_000, 11);
        let hot = d.hot_hosts();
        assert!((30..=100).contains(&hot), "{hot} hot hosts of 640");
        for h in &d.hosts {
            let r = d.report(h.index, 3, 0).expect("report");
            assert_eq!(r.vms.len(), h.vms.len());
            if h.hot {
                assert!(r.host.cpu_util > 0.88, "{}: {}", h.id, r.host.cpu_util);
            } else {
                assert!(r.host.cpu_util < 0.65, "{}: {}", h.id, r.host.cpu_util);
            }
            assert!(r
                .vms
                .iter()
                .all(|v| v.tx_bytes_per_s > 0.0 && v.rx_bytes_per_s > 0.0));
        }
    }

    /// The controller's own registry accepts every registration and report.
    #[test]
    fn the_controllers_rules_accept_them() {
        let d = dc(64, 1000, 5);
        let mut reg = HostRegistry::new(5);
        for h in &d.hosts {
            let r = d.registration(h.index).expect("registration");
            reg.register(&h.id, r, 0).expect("registration accepted");
            for seq in 1..=3 {
                let rep = d.report(h.index, seq, 1000 * seq).expect("report");
                reg.report(&h.id, rep, 0).expect("report accepted");
            }
        }
        assert_eq!(reg.hosts().len(), 64);
        assert_eq!(reg.vms().len(), 1000);
    }
}
