//! Configuration: a TOML file plus command-line overrides (see docs/hostd.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use shoal_common::proto::{VmBackendSpec, VmInventory};

/// The configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed.
    #[error("config {path}: {source}")]
    Toml {
        /// The file.
        path: String,
        /// The parse error.
        source: toml::de::Error,
    },
    /// A value is invalid.
    #[error("config: {0}")]
    Invalid(String),
}

fn default_interval() -> f64 {
    10.0
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}
fn default_run_dir() -> PathBuf {
    PathBuf::from("/run/shoal-hostd")
}
fn default_qemu() -> String {
    "qemu-system-x86_64".into()
}
fn default_dirty_period() -> f64 {
    30.0
}
fn default_dirty_calc() -> u64 {
    1
}
fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}
fn default_sys_root() -> PathBuf {
    PathBuf::from("/sys")
}
fn default_vcpus() -> u32 {
    1
}
fn default_http_timeout() -> f64 {
    5.0
}
fn default_vf_driver() -> String {
    "e1000".into()
}

/// How VF attach/detach is carried out for QEMU VMs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VfMode {
    /// Testbed: hot-plug an emulated PCI NIC over QMP.
    #[default]
    Emulated,
    /// Real SR-IOV: sysfs + `ip link set PF vf N` + QMP `vfio-pci`.
    Sriov,
}

/// One VM as configured.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VmConfig {
    /// Unique VM name.
    pub name: String,
    /// MAC of the primary NIC.
    pub mac: String,
    /// IPv4 address of the primary NIC.
    #[serde(default)]
    pub ip: Option<String>,
    /// vCPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Maximum memory, MiB (default: `memory_mb`).
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// Backend (`backend = "qemu"` or `"netns"`) and its fields.
    #[serde(flatten)]
    pub spec: VmBackendSpec,
}

impl VmConfig {
    /// The inventory entry for this VM.
    pub fn inventory(&self) -> VmInventory {
        VmInventory {
            name: self.name.clone(),
            mac: self.mac.to_ascii_lowercase(),
            ip: self.ip.clone(),
            vcpus: self.vcpus,
            memory_mb: self.memory_mb,
            max_memory_mb: self.max_memory_mb.unwrap_or(self.memory_mb),
            spec: self.spec.clone(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Host id (default: the hostname).
    #[serde(default)]
    pub host_id: Option<String>,
    /// Controller base URL (`http://IP:PORT`); none = run without one.
    #[serde(default)]
    pub controller: Option<String>,
    /// Effector API listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Base URL of the effector API advertised to the controller
    /// (default: `http://<dom0_addr or listen IP>:<listen port>`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// File holding this host's own token, presented to the controller
    /// (the controller binds it to this host id). Mode 0600 or stricter.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// File holding the controller's token: the only credential this
    /// daemon's API accepts (without it every call but `/healthz` is
    /// refused). Mode 0600 or stricter.
    #[serde(default)]
    pub controller_token_file: Option<PathBuf>,
    /// Report interval, seconds.
    #[serde(default = "default_interval")]
    pub interval_s: f64,
    /// dom0 address: migrations leave and arrive here.
    #[serde(default)]
    pub dom0_addr: Option<String>,
    /// Uplink NIC whose bytes/s are reported.
    #[serde(default)]
    pub uplink: Option<String>,
    /// Uplink capacity, bit/s (default: sysfs `speed`, else 1 Gbit/s).
    #[serde(default)]
    pub nic_bps: Option<u64>,
    /// OVS bridge the VMs are plugged into.
    #[serde(default)]
    pub bridge: Option<String>,
    /// Datapath id override (default: asked from `ovs-vsctl`).
    #[serde(default)]
    pub datapath_id: Option<u64>,
    /// SR-IOV VFs available (default: sysfs `sriov_totalvfs` of `sriov_pf`,
    /// else 0; a testbed sets it by hand).
    #[serde(default)]
    pub vf_count: Option<u32>,
    /// VF backend for QEMU VMs.
    #[serde(default)]
    pub vf_mode: VfMode,
    /// SR-IOV physical function (network interface name), `vf_mode = "sriov"`.
    #[serde(default)]
    pub sriov_pf: Option<String>,
    /// Device model hot-plugged as a VF stand-in (`vf_mode = "emulated"`).
    #[serde(default = "default_vf_driver")]
    pub testbed_vf_driver: String,
    /// Directory for QMP sockets, consoles and pid files.
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// QEMU binary.
    #[serde(default = "default_qemu")]
    pub qemu_binary: String,
    /// Period of QMP `calc-dirty-rate` per QEMU VM, seconds (0 = never).
    #[serde(default = "default_dirty_period")]
    pub dirty_rate_period_s: f64,
    /// `calc-time` of one dirty-rate measurement, seconds.
    #[serde(default = "default_dirty_calc")]
    pub dirty_rate_calc_s: u64,
    /// Root of procfs (tests point it elsewhere).
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
    /// Root of sysfs (tests point it at a fake tree).
    #[serde(default = "default_sys_root")]
    pub sys_root: PathBuf,
    /// Timeout of every HTTP call, seconds.
    #[serde(default = "default_http_timeout")]
    pub http_timeout_s: f64,
    /// Network namespace of the uplink NIC when it is not hostd's own: a
    /// name under /run/netns or a path such as `/proc/1/ns/net` (testbeds
    /// where dom0 runs in a namespace and the NIC is a bridge port outside).
    #[serde(default)]
    pub uplink_netns: Option<String>,
    /// Cores to register instead of the machine's (testbeds where several
    /// "hypervisors" share one machine).
    #[serde(default)]
    pub cores: Option<u32>,
    /// Memory (MiB) to register instead of the machine's (testbeds).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Where host CPU and memory come from: `real` (procfs, default) or
    /// `vms` (testbeds: CPU = Σ VM cpu_cores / cores, memory used = Σ VM
    /// used memory; the network numbers stay real either way).
    #[serde(default)]
    pub host_metrics: HostMetricsSource,
    /// VMs of this host.
    #[serde(default, rename = "vm")]
    pub vms: Vec<VmConfig>,
}

/// Source of the host's CPU and memory numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostMetricsSource {
    /// procfs of the machine.
    #[default]
    Real,
    /// The sum over the host's VMs (testbeds).
    Vms,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host_id: None,
            controller: None,
            listen: default_listen(),
            api_url: None,
            token_file: None,
            controller_token_file: None,
            interval_s: default_interval(),
            dom0_addr: None,
            uplink: None,
            nic_bps: None,
            bridge: None,
            datapath_id: None,
            vf_count: None,
            vf_mode: VfMode::Emulated,
            sriov_pf: None,
            testbed_vf_driver: default_vf_driver(),
            run_dir: default_run_dir(),
            qemu_binary: default_qemu(),
            dirty_rate_period_s: default_dirty_period(),
            dirty_rate_calc_s: default_dirty_calc(),
            proc_root: default_proc_root(),
            sys_root: default_sys_root(),
            http_timeout_s: default_http_timeout(),
            uplink_netns: None,
            cores: None,
            memory_mb: None,
            host_metrics: HostMetricsSource::Real,
            vms: Vec::new(),
        }
    }
}

/// Is `s` a MAC address `xx:xx:xx:xx:xx:xx`?
pub fn valid_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Is `s` a safe name for VMs, namespaces, interfaces (no path or shell
/// characters)? 1–64 of `[A-Za-z0-9._-]`, not starting with `-`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Checks a VM inventory entry (from the config or from a
/// `prepare_incoming` body).
pub fn validate_vm(inv: &VmInventory) -> Result<(), String> {
    if !valid_name(&inv.name) {
        return Err(format!("invalid VM name {:?}", inv.name));
    }
    if !valid_mac(&inv.mac) {
        return Err(format!("VM {}: invalid MAC {:?}", inv.name, inv.mac));
    }
    if let Some(ip) = &inv.ip {
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(format!("VM {}: invalid IPv4 address {ip:?}", inv.name));
        }
    }
    if inv.vcpus == 0 || inv.memory_mb == 0 || inv.memory_mb > inv.max_memory_mb {
        return Err(format!(
            "VM {}: need vcpus > 0 and 0 < memory_mb <= max_memory_mb",
            inv.name
        ));
    }
    match &inv.spec {
        VmBackendSpec::Qemu { args, tap } => {
            const LOCAL: [&str; 7] = [
                "-incoming",
                "-qmp",
                "-name",
                "-serial",
                "-pidfile",
                "-daemonize",
                "-monitor",
            ];
            if let Some(a) = args.iter().find(|a| LOCAL.contains(&a.as_str())) {
                return Err(format!(
                    "VM {}: args must not contain {a} (hostd adds host-local arguments)",
                    inv.name
                ));
            }
            if let Some(t) = tap {
                if !valid_name(t) {
                    return Err(format!("VM {}: invalid tap name {t:?}", inv.name));
                }
            }
        }
        VmBackendSpec::Netns {
            namespace,
            iface,
            port,
            vf_iface,
            vf_port,
            ..
        } => {
            for n in [
                Some(namespace),
                Some(iface),
                Some(port),
                vf_iface.as_ref(),
                vf_port.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                if !valid_name(n) {
                    return Err(format!("VM {}: invalid name {n:?}", inv.name));
                }
            }
        }
    }
    Ok(())
}

impl Config {
    /// Parses TOML text; `path` is only for messages.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Toml {
            path: path.to_string(),
            source,
        })
    }

    /// Reads a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Checks the values; call after applying command-line overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if !(self.interval_s.is_finite() && self.interval_s >= 0.1) {
            return bad(format!(
                "interval_s must be >= 0.1, got {}",
                self.interval_s
            ));
        }
        if !(self.http_timeout_s.is_finite() && self.http_timeout_s > 0.0) {
            return bad("http_timeout_s must be > 0".into());
        }
        if !(self.dirty_rate_period_s.is_finite() && self.dirty_rate_period_s >= 0.0) {
            return bad("dirty_rate_period_s must be >= 0".into());
        }
        if let Some(id) = &self.host_id {
            if !shoal_common::proto::valid_command_id(id) {
                return bad(format!("invalid host id {id:?}"));
            }
        }
        if let Some(c) = &self.controller {
            if !(c.starts_with("http://")) {
                return bad(format!("controller URL must start with http://, got {c:?}"));
            }
        }
        for n in [&self.bridge, &self.uplink, &self.sriov_pf]
            .into_iter()
            .flatten()
        {
            if !valid_name(n) {
                return bad(format!("invalid interface/bridge name {n:?}"));
            }
        }
        if self.vf_mode == VfMode::Sriov && self.sriov_pf.is_none() {
            return bad("vf_mode = \"sriov\" needs sriov_pf".into());
        }
        let mut seen = std::collections::HashSet::new();
        for vm in &self.vms {
            validate_vm(&vm.inventory()).map_err(ConfigError::Invalid)?;
            if !seen.insert(vm.name.clone()) {
                return bad(format!("VM {} configured twice", vm.name));
            }
        }
        Ok(())
    }

    /// The advertised effector URL.
    pub fn effective_api_url(&self) -> String {
        if let Some(u) = &self.api_url {
            return u.clone();
        }
        let ip = if self.listen.ip().is_unspecified() {
            self.dom0_addr
                .clone()
                .unwrap_or_else(|| "127.0.0.1".to_string())
        } else {
            self.listen.ip().to_string()
        };
        format!("http://{ip}:{}", self.listen.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.listen, Config::default().listen);
        assert_eq!(c.interval_s, 10.0);
        assert!(c.vms.is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn full_config() {
        let text = r#"
            host_id = "h1"
            controller = "http://127.0.0.1:8080"
            listen = "0.0.0.0:7070"
            dom0_addr = "10.0.0.1"
            interval_s = 5
            bridge = "br0"

            [[vm]]
            name = "q1"
            mac = "52:54:00:00:00:01"
            memory_mb = 128
            backend = "qemu"
            args = ["-m", "128"]
            tap = "tap0"

            [[vm]]
            name = "n1"
            mac = "52:54:00:00:00:02"
            ip = "10.0.1.2"
            memory_mb = 256
            max_memory_mb = 512
            backend = "netns"
            namespace = "ns1"
            iface = "eth0"
            port = "p1"
            scenario = "/tmp/s.json"
        "#;
        let c = Config::parse(text, "t").unwrap();
        c.validate().unwrap();
        assert_eq!(c.vms.len(), 2);
        assert_eq!(c.effective_api_url(), "http://10.0.0.1:7070");
        let n1 = c.vms[1].inventory();
        assert_eq!(n1.max_memory_mb, 512);
        assert!(matches!(n1.spec, VmBackendSpec::Netns { .. }));
    }

    #[test]
    fn bad_values_rejected() {
        let base = |vm: &str| format!("[[vm]]\n{vm}\n");
        for (text, why) in [
            (
                base("name=\"a\"\nmac=\"zz\"\nmemory_mb=1\nbackend=\"qemu\"\nargs=[]"),
                "mac",
            ),
            (
                base("name=\"a/b\"\nmac=\"52:54:00:00:00:01\"\nmemory_mb=1\nbackend=\"qemu\"\nargs=[]"),
                "name",
            ),
            (
                base("name=\"a\"\nmac=\"52:54:00:00:00:01\"\nmemory_mb=1\nbackend=\"qemu\"\nargs=[\"-incoming\",\"x\"]"),
                "local arg",
            ),
            ("interval_s = 0".to_string(), "interval"),
            ("controller = \"ftp://x\"".to_string(), "url"),
        ] {
            let r = Config::parse(&text, "t").and_then(|c| c.validate());
            assert!(r.is_err(), "{why}: accepted");
        }
        assert!(Config::parse("bogus = 1", "t").is_err());
    }
}
