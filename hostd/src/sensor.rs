//! The sensor: host and per-VM metrics over one interval, from procfs,
//! schedstat, QMP and namespace interface counters.
//! Rates use the monotonic clock; counters that go backwards count as reset.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;
use shoal_common::proto::{BackendKind, HostMetrics, VmBackendSpec, VmMetrics, VmState};

use crate::netns::NetnsRuntime;
use crate::procfs::{self, counter_delta, CpuTimes, NetCounters, ProcCpu, SchedStat};
use crate::qemu::QemuRuntime;
use crate::scenario::Sample;
use crate::state::{lock, Vm};

/// A sensor read failed.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file could not be parsed.
    #[error(transparent)]
    Parse(#[from] procfs::ParseError),
}

fn read(path: &Path) -> Result<String, SensorError> {
    std::fs::read_to_string(path).map_err(|source| SensorError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Per-second rate of a counter increase over `dt` seconds.
pub fn rate(prev: u64, cur: u64, dt: f64) -> f64 {
    if dt <= 0.0 {
        return 0.0;
    }
    counter_delta(prev, cur) as f64 / dt
}

/// Network rates from two counter samples.
pub fn net_rates(prev: &NetCounters, cur: &NetCounters, dt: f64) -> [f64; 4] {
    [
        rate(prev.tx_bytes, cur.tx_bytes, dt),
        rate(prev.rx_bytes, cur.rx_bytes, dt),
        rate(prev.tx_packets, cur.tx_packets, dt),
        rate(prev.rx_packets, cur.rx_packets, dt),
    ]
}

struct HostPrev {
    at: Instant,
    cpu: CpuTimes,
    pswpout: u64,
    pswpin: u64,
    nic: Option<NetCounters>,
}

/// Host-level sensor.
pub struct HostSensor {
    proc_root: PathBuf,
    uplink: Option<String>,
    prev: Option<HostPrev>,
}

impl HostSensor {
    /// A sensor reading `proc_root` (normally `/proc`).
    pub fn new(proc_root: PathBuf, uplink: Option<String>) -> Self {
        HostSensor {
            proc_root,
            uplink,
            prev: None,
        }
    }

    /// Cores and memory (MiB) of the host.
    pub fn capacity(&self) -> Result<(u32, u64), SensorError> {
        let (_, cores) = procfs::parse_stat(&read(&self.proc_root.join("stat"))?)?;
        let mem = procfs::parse_meminfo(&read(&self.proc_root.join("meminfo"))?)?;
        Ok((cores.max(1), mem.total_kb / 1024))
    }

    /// Metrics since the previous call (the first call: CPU since boot,
    /// rates 0).
    pub fn sample(&mut self) -> Result<HostMetrics, SensorError> {
        self.sample_with(None)
    }

    /// Like [`HostSensor::sample`], with `/proc/net/dev` given as text (read
    /// in the uplink's namespace) instead of read from `proc_root`.
    pub fn sample_with(&mut self, net_dev: Option<&str>) -> Result<HostMetrics, SensorError> {
        let now = Instant::now();
        let (cpu, _) = procfs::parse_stat(&read(&self.proc_root.join("stat"))?)?;
        let mem = procfs::parse_meminfo(&read(&self.proc_root.join("meminfo"))?)?;
        let vmstat = read(&self.proc_root.join("vmstat"))?;
        let pswpout = procfs::parse_vmstat_pswpout(&vmstat)?;
        let pswpin = procfs::parse_vmstat_pswpin(&vmstat)?;
        let nic = match &self.uplink {
            Some(ifname) => {
                let text = match net_dev {
                    Some(t) => t.to_string(),
                    None => read(&self.proc_root.join("net/dev"))?,
                };
                let all = procfs::parse_net_dev(&text)?;
                let c = all.get(ifname).copied();
                if c.is_none() {
                    tracing::warn!(uplink = %ifname, "uplink interface not found in /proc/net/dev");
                }
                c
            }
            None => None,
        };
        let mut m = HostMetrics {
            cpu_util: procfs::cpu_util(CpuTimes::default(), cpu).unwrap_or(0.0),
            mem_used_mb: (mem.total_kb - mem.available_kb) / 1024,
            mem_total_mb: mem.total_kb / 1024,
            ..Default::default()
        };
        if let Some(p) = &self.prev {
            let dt = now.duration_since(p.at).as_secs_f64();
            m.cpu_util = procfs::cpu_util(p.cpu, cpu).unwrap_or(0.0);
            m.swap_out_pages_per_s = rate(p.pswpout, pswpout, dt);
            m.swap_in_pages_per_s = rate(p.pswpin, pswpin, dt);
            if let (Some(a), Some(b)) = (&p.nic, &nic) {
                let [tx, rx, _, _] = net_rates(a, b, dt);
                m.nic_tx_bytes_per_s = tx;
                m.nic_rx_bytes_per_s = rx;
            }
        }
        self.prev = Some(HostPrev {
            at: now,
            cpu,
            pswpout,
            pswpin,
            nic,
        });
        Ok(m)
    }
}

/// Previous per-VM counters.
#[derive(Default)]
struct VmPrev {
    at: Option<Instant>,
    cpu: Option<ProcCpu>,
    sched: HashMap<u32, SchedStat>,
    net: Option<NetCounters>,
}

/// Per-VM sensor state (one per VM name).
#[derive(Default)]
pub struct VmSensor {
    prev: HashMap<String, VmPrev>,
    tick: f64,
}

impl VmSensor {
    /// A sensor with no history.
    pub fn new() -> Self {
        VmSensor {
            prev: HashMap::new(),
            tick: crate::sys::clk_tck(),
        }
    }

    /// Forgets VMs that are gone.
    pub fn retain(&mut self, names: &[String]) {
        self.prev.retain(|k, _| names.contains(k));
    }

    /// Metrics of `vm` since the previous call for it.
    pub async fn sample(
        &mut self,
        vm: &Vm,
        proc_root: &Path,
        host_net: Option<&HashMap<String, NetCounters>>,
    ) -> VmMetrics {
        let now = Instant::now();
        let snap = vm.snapshot();
        let prev = self.prev.entry(vm.name.clone()).or_default();
        let dt = prev.at.map(|a| now.duration_since(a).as_secs_f64());
        let vcpus = snap.inv.vcpus.max(1) as f64;
        let mut m = VmMetrics {
            name: vm.name.clone(),
            backend: snap.inv.spec.kind(),
            state: snap.state,
            cpu_cores: 0.0,
            cpu_util: 0.0,
            gotten_ms: None,
            wait_ms: None,
            blocked_ms: None,
            memory_mb: snap.inv.memory_mb,
            max_memory_mb: snap.inv.max_memory_mb,
            used_memory_mb: 0,
            tx_bytes_per_s: 0.0,
            rx_bytes_per_s: 0.0,
            tx_packets_per_s: 0.0,
            rx_packets_per_s: 0.0,
            dirty_rate_mbps: snap.dirty_rate_mbps,
            vf_attached: snap.vf_device.is_some(),
        };
        let qemu = vm.runtime.downcast::<QemuRuntime>();
        let netns = vm.runtime.downcast::<NetnsRuntime>();
        match (qemu, netns) {
            (Some(rt), _) => {
                if rt.exited().is_some() {
                    m.state = VmState::Failed;
                    prev.at = Some(now);
                    return m;
                }
                let pid_dir = proc_root.join(rt.pid.to_string());
                process_cpu_and_rss(self.tick, &vm.name, &pid_dir, prev, dt, &mut m);
                vcpu_times(rt, &vm.name, &pid_dir, prev, dt, &mut m).await;
                qemu_memory_and_state(rt, &mut m).await;
                // Tap counters: the host side of the tap, so rx = VM tx.
                if let VmBackendSpec::Qemu { tap: Some(tap), .. } = &snap.inv.spec {
                    if let Some(c) = host_net.and_then(|n| n.get(tap)).copied() {
                        if let (Some(p), Some(dt)) = (prev.net, dt) {
                            let [tx, rx, txp, rxp] = net_rates(&p, &c, dt);
                            m.tx_bytes_per_s = rx;
                            m.rx_bytes_per_s = tx;
                            m.tx_packets_per_s = rxp;
                            m.rx_packets_per_s = txp;
                        }
                        prev.net = Some(c);
                    }
                }
            }
            (None, Some(rt)) => {
                if let VmBackendSpec::Netns {
                    namespace, iface, ..
                } = &snap.inv.spec
                {
                    netns_counters(&vm.name, namespace, iface, prev, dt, &mut m).await;
                }
                if let Some(s) = rt.sample_now() {
                    scenario_values(&s, vcpus, snap.inv.memory_mb, dt, &mut m);
                }
            }
            (None, None) => {}
        }
        if m.backend == BackendKind::Qemu {
            m.cpu_util = (m.cpu_cores / vcpus).clamp(0.0, 1.0);
        }
        if snap.state == VmState::MigratingOut || snap.state == VmState::Incoming {
            m.state = snap.state;
        }
        prev.at = Some(now);
        m
    }
}

/// Process CPU (cores, from utime + stime) and resident memory of a QEMU.
fn process_cpu_and_rss(
    tick: f64,
    name: &str,
    pid_dir: &Path,
    prev: &mut VmPrev,
    dt: Option<f64>,
    m: &mut VmMetrics,
) {
    match read(&pid_dir.join("stat")).and_then(|t| Ok(procfs::parse_pid_stat(&t)?)) {
        Ok(cpu) => {
            if let (Some(p), Some(dt)) = (prev.cpu, dt) {
                let ticks = counter_delta(p.utime + p.stime, cpu.utime + cpu.stime);
                if dt > 0.0 {
                    m.cpu_cores = ticks as f64 / tick / dt;
                }
            }
            prev.cpu = Some(cpu);
        }
        Err(e) => tracing::debug!(vm = %name, error = %e, "process stat"),
    }
    if let Ok(rss) =
        read(&pid_dir.join("status")).and_then(|t| Ok(procfs::parse_status_rss_kb(&t)?))
    {
        m.used_memory_mb = rss / 1024;
    }
}

/// vCPU threads (from QMP) and their schedstat: time gotten, waited and
/// blocked (only when every thread has an earlier sample).
async fn vcpu_times(
    rt: &QemuRuntime,
    name: &str,
    pid_dir: &Path,
    prev: &mut VmPrev,
    dt: Option<f64>,
    m: &mut VmMetrics,
) {
    let tids: Vec<u32> = match rt.qmp.execute("query-cpus-fast", None).await {
        Ok(Value::Array(cpus)) => cpus
            .iter()
            .filter_map(|c| c.get("thread-id").and_then(Value::as_u64))
            .map(|t| t as u32)
            .collect(),
        Ok(other) => {
            tracing::warn!(vm = %name, answer = %other, "odd query-cpus-fast answer");
            Vec::new()
        }
        Err(e) => {
            tracing::debug!(vm = %name, error = %e, "query-cpus-fast");
            Vec::new()
        }
    };
    let mut run = 0u64;
    let mut wait = 0u64;
    let mut complete = !tids.is_empty();
    let mut new_sched = HashMap::new();
    for tid in &tids {
        let p = pid_dir.join("task").join(tid.to_string()).join("schedstat");
        match read(&p).and_then(|t| Ok(procfs::parse_schedstat(&t)?)) {
            Ok(s) => {
                match prev.sched.get(tid) {
                    Some(old) => {
                        run += counter_delta(old.run_ns, s.run_ns);
                        wait += counter_delta(old.wait_ns, s.wait_ns);
                    }
                    None => complete = false,
                }
                new_sched.insert(*tid, s);
            }
            Err(e) => {
                complete = false;
                tracing::debug!(vm = %name, tid, error = %e, "schedstat");
            }
        }
    }
    prev.sched = new_sched;
    if let (true, Some(dt)) = (complete, dt) {
        let gotten = run as f64 / 1e6;
        let waited = wait as f64 / 1e6;
        let wall = dt * 1000.0 * tids.len() as f64;
        m.gotten_ms = Some(gotten);
        m.wait_ms = Some(waited);
        m.blocked_ms = Some((wall - gotten - waited).max(0.0));
    }
}

/// Memory size, balloon and run state of a QEMU (over QMP).
async fn qemu_memory_and_state(rt: &QemuRuntime, m: &mut VmMetrics) {
    if let Ok(v) = rt.qmp.execute("query-memory-size-summary", None).await {
        if let Some(b) = v.get("base-memory").and_then(Value::as_u64) {
            let plugged = v.get("plugged-memory").and_then(Value::as_u64).unwrap_or(0);
            m.max_memory_mb = (b + plugged) >> 20;
            m.memory_mb = m.max_memory_mb;
        }
    }
    if let Ok(v) = rt.qmp.execute("query-balloon", None).await {
        if let Some(a) = v.get("actual").and_then(Value::as_u64) {
            m.memory_mb = a >> 20;
        }
    }
    if m.state == VmState::Running || m.state == VmState::Paused {
        if let Ok(v) = rt.qmp.execute("query-status", None).await {
            m.state = match v.get("status").and_then(Value::as_str) {
                Some("running") => VmState::Running,
                _ => VmState::Paused,
            };
        }
    }
}

/// Interface counters of a namespace VM (read inside its namespace); an
/// unreadable namespace marks the VM failed.
async fn netns_counters(
    name: &str,
    namespace: &str,
    iface: &str,
    prev: &mut VmPrev,
    dt: Option<f64>,
    m: &mut VmMetrics,
) {
    match crate::sys::read_in_netns(namespace, "net/dev").await {
        Ok(text) => match procfs::parse_net_dev(&text) {
            Ok(all) => {
                if let Some(c) = all.get(iface).copied() {
                    if let (Some(p), Some(dt)) = (prev.net, dt) {
                        let [tx, rx, txp, rxp] = net_rates(&p, &c, dt);
                        m.tx_bytes_per_s = tx;
                        m.rx_bytes_per_s = rx;
                        m.tx_packets_per_s = txp;
                        m.rx_packets_per_s = rxp;
                    }
                    prev.net = Some(c);
                }
            }
            Err(e) => {
                tracing::warn!(vm = %name, error = %e, "namespace counters")
            }
        },
        Err(e) => {
            tracing::warn!(vm = %name, error = %e, "namespace counters");
            m.state = VmState::Failed;
        }
    }
}

/// CPU, memory, dirty rate and scheduling times of a namespace VM from its
/// scenario.
fn scenario_values(s: &Sample, vcpus: f64, memory_mb: u64, dt: Option<f64>, m: &mut VmMetrics) {
    m.cpu_util = s.cpu;
    m.cpu_cores = s.cpu * vcpus;
    m.used_memory_mb = (s.mem_mb.round() as u64).min(memory_mb);
    m.dirty_rate_mbps = Some(s.dirty_mbps);
    if let Some(dt) = dt {
        let wall = dt * 1000.0 * vcpus;
        let gotten = s.cpu * wall;
        let wait = s.wait * wall;
        m.gotten_ms = Some(gotten);
        m.wait_ms = Some(wait);
        m.blocked_ms = Some((wall - gotten - wait).max(0.0));
    }
}

/// `/proc/net/dev` of hostd's own namespace (for tap counters).
pub fn host_net_dev(proc_root: &Path) -> Option<HashMap<String, NetCounters>> {
    read(&proc_root.join("net/dev"))
        .ok()
        .and_then(|t| procfs::parse_net_dev(&t).ok())
}

/// Stores `m` as the VM's latest metrics.
pub fn remember(vm: &Vm, m: &VmMetrics) {
    lock(&vm.shared).last_metrics = Some(m.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_never_negative() {
        assert_eq!(rate(100, 300, 2.0), 100.0);
        assert_eq!(rate(300, 100, 2.0), 50.0);
        assert_eq!(rate(1, 2, 0.0), 0.0);
    }

    /// A fake /proc with two samples: the host sensor computes utilisation,
    /// swap-out and NIC rates from the deltas.
    #[test]
    fn host_sensor_on_fake_proc() {
        let root = std::env::temp_dir().join(format!("shd-proc-{}", std::process::id()));
        std::fs::create_dir_all(root.join("net")).unwrap();
        let write = |cpu: &str, swp: u64, tx: u64| {
            std::fs::write(root.join("stat"), format!("cpu  {cpu}\ncpu0 0 0 0 0\n")).unwrap();
            std::fs::write(
                root.join("meminfo"),
                "MemTotal: 2048000 kB\nMemAvailable: 1024000 kB\n",
            )
            .unwrap();
            std::fs::write(
                root.join("vmstat"),
                format!("pswpin {}\npswpout {swp}\n", swp / 2),
            )
            .unwrap();
            std::fs::write(
                root.join("net/dev"),
                format!("h\nh\n  up0: 0 0 0 0 0 0 0 0 {tx} 10 0 0 0 0 0 0\n"),
            )
            .unwrap();
        };
        write("100 0 100 800 0 0 0 0", 0, 1000);
        let mut s = HostSensor::new(root.clone(), Some("up0".into()));
        let first = s.sample().unwrap();
        assert!((first.cpu_util - 0.2).abs() < 1e-9);
        assert_eq!(first.mem_total_mb, 2000);
        assert_eq!(first.mem_used_mb, 1000);
        std::thread::sleep(std::time::Duration::from_millis(100));
        write("150 0 150 900 0 0 0 0", 50, 2000);
        let m = s.sample().unwrap();
        assert!((m.cpu_util - 0.5).abs() < 1e-9, "{m:?}");
        assert!(m.swap_out_pages_per_s > 0.0);
        assert!(m.swap_in_pages_per_s > 0.0);
        assert!(m.swap_in_pages_per_s < m.swap_out_pages_per_s);
        assert!(m.nic_tx_bytes_per_s > 0.0 && m.nic_tx_bytes_per_s < 1000.0 / 0.09);
        assert_eq!(s.capacity().unwrap(), (1, 2000));
        let _ = std::fs::remove_dir_all(&root);
    }
}
