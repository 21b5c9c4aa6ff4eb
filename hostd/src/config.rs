//! Configuration: a TOML file plus command-line overrides (see docs/hostd.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shoal_common::proto::{VmBackendSpec, VmInventory};

use crate::confine::{check_relative, ConfineError};
use crate::template::{MachineTemplate, Placeholder, TemplateError};

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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VfMode {
    /// Testbed: hot-plug an emulated PCI NIC over QMP.
    #[default]
    Emulated,
    /// Real SR-IOV: sysfs + `ip link set PF vf N` + QMP `vfio-pci`.
    Sriov,
}

/// One VM as configured.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// Backend (`backend = "qemu"` with `template`, `disk`, `tap`, or
    /// `"netns"` with its namespace fields); unknown fields are refused.
    #[serde(flatten)]
    pub spec: VmBackendSpec,
    /// The virtual environment (tenant group) of this VM, registered with
    /// the controller for VIOLIN (1 to 128 bytes, no control characters).
    #[serde(default)]
    pub environment: Option<String>,
    /// Whether this VM is its environment's head node (gateway); needs
    /// `environment`.
    #[serde(default)]
    pub environment_head: bool,
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
            environment: self.environment.clone(),
            environment_head: self.environment_head,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Host id (default: the hostname).
    #[serde(default)]
    pub host_id: Option<String>,
    /// Controller base URL (`http://IP:PORT`); none = run without one.
    #[serde(default)]
    pub controller: Option<String>,
    /// The nodes of a controller cluster (docs/cluster.md), in order of
    /// preference: registration and reports go to the first that answers;
    /// when it stops answering (or says it is not acting) the daemon fails
    /// over to the next and registers there. Instead of `controller`.
    #[serde(default)]
    pub controllers: Vec<String>,
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
    /// Certificate (PEM chain) of the effector API; with `tls_key_file` it
    /// serves HTTPS (and the advertised URL is `https://`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of the effector API (mode 0600 or stricter).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// CA that `https://` peers must be signed by: the controller and the
    /// other host daemons (nothing else is trusted).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
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
    /// Directory of the state file `hostd-state.json` (the VMs, with each
    /// QEMU's pid, and the command history that survive a restart of
    /// hostd; see [`crate::persist`]). Default: `run_dir`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// QEMU binary.
    #[serde(default = "default_qemu")]
    pub qemu_binary: String,
    /// Machine templates by name (`[templates.NAME]`): the only source of
    /// QEMU arguments. A QEMU VM (configured here or arriving by migration)
    /// names one; see [`crate::template`].
    #[serde(default)]
    pub templates: BTreeMap<String, MachineTemplate>,
    /// Directory of the QEMU VMs' disk images: a VM's `disk` is a path
    /// relative to it and must resolve inside it (none: no VM may have a
    /// disk).
    #[serde(default)]
    pub image_dir: Option<PathBuf>,
    /// Directory of the netns VMs' scenario files: a VM's `scenario` is a
    /// path relative to it and must resolve inside it (none: no VM may have
    /// a scenario).
    #[serde(default)]
    pub scenario_dir: Option<PathBuf>,
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
    /// The administrative domain (group of hosts) this host is in,
    /// registered with the controller for VIOLIN (1 to 128 bytes, no
    /// control characters; none: the controller's groups, else its pod).
    #[serde(default)]
    pub domain: Option<String>,
    /// VMs of this host.
    #[serde(default, rename = "vm")]
    pub vms: Vec<VmConfig>,
}

/// Source of the host's CPU and memory numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
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
            controllers: Vec::new(),
            listen: default_listen(),
            api_url: None,
            token_file: None,
            controller_token_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            ca_file: None,
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
            state_dir: None,
            qemu_binary: default_qemu(),
            templates: BTreeMap::new(),
            image_dir: None,
            scenario_dir: None,
            dirty_rate_period_s: default_dirty_period(),
            dirty_rate_calc_s: default_dirty_calc(),
            proc_root: default_proc_root(),
            sys_root: default_sys_root(),
            http_timeout_s: default_http_timeout(),
            uplink_netns: None,
            cores: None,
            memory_mb: None,
            host_metrics: HostMetricsSource::Real,
            domain: None,
            vms: Vec::new(),
        }
    }
}

/// Largest boot memory of a VM, MiB (1 TiB).
pub const MAX_VM_MEMORY_MB: u64 = 1 << 20;
/// Largest vCPU count of a VM.
pub const MAX_VCPUS: u32 = 256;
/// Longest network interface name (`IFNAMSIZ` − 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Longest VM or namespace name.
pub const MAX_NAME_LEN: usize = 64;

/// Is `s` a MAC address `xx:xx:xx:xx:xx:xx` (two hex digits a group)?
pub fn valid_mac(s: &str) -> bool {
    crate::sys::parse_mac(s).is_some()
}

/// Is `s` a safe name for VMs, namespaces, bridges (no path, shell or
/// option characters)? 1–64 of `[A-Za-z0-9._-]`, not starting with `-` or
/// `.`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && !s.starts_with('-')
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Is `s` a network interface name that `ip` and OVS take as a name and
/// never as an option or keyword position? A [`valid_name`] of at most 15
/// bytes.
pub fn valid_ifname(s: &str) -> bool {
    valid_name(s) && s.len() <= MAX_IFNAME_LEN
}

/// A VM definition (configured here or from the wire) does not fit this
/// host.
#[derive(Debug, thiserror::Error)]
pub enum VmSpecError {
    /// The VM's name is not a [`valid_name`].
    #[error("invalid VM name {0:?} (1-64 of [A-Za-z0-9._-], not starting with '-' or '.')")]
    Name(String),
    /// The MAC does not parse.
    #[error("VM {vm}: invalid MAC {mac:?} (want xx:xx:xx:xx:xx:xx)")]
    Mac {
        /// VM name.
        vm: String,
        /// The MAC as given.
        mac: String,
    },
    /// The IP does not parse.
    #[error("VM {vm}: invalid IPv4 address {ip:?}")]
    Ip {
        /// VM name.
        vm: String,
        /// The address as given.
        ip: String,
    },
    /// vCPUs or memory out of bounds.
    #[error("VM {vm}: {why}")]
    Size {
        /// VM name.
        vm: String,
        /// Which bound.
        why: String,
    },
    /// `environment` or `environment_head` is invalid.
    #[error("VM {vm}: {why}")]
    Group {
        /// VM name.
        vm: String,
        /// Which field and why.
        why: String,
    },
    /// The template is not defined here.
    #[error("VM {vm}: unknown template {template:?} (this host has: {known})")]
    UnknownTemplate {
        /// VM name.
        vm: String,
        /// The template asked for.
        template: String,
        /// The templates this host defines.
        known: String,
    },
    /// The template and the VM do not fit together.
    #[error("VM {vm}: template {template}: {source}")]
    Template {
        /// VM name.
        vm: String,
        /// Template name.
        template: String,
        /// What does not fit.
        source: TemplateError,
    },
    /// The VM has a disk the template does not use.
    #[error("VM {vm}: has a disk but template {template} has no {{disk}}")]
    UnusedDisk {
        /// VM name.
        vm: String,
        /// Template name.
        template: String,
    },
    /// An interface or namespace name is not safe.
    #[error("VM {vm}: invalid {what} {name:?} ({rule})")]
    BadName {
        /// VM name.
        vm: String,
        /// Which name (`tap`, `iface`, ...).
        what: &'static str,
        /// The name as given.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A port of the VM is one of this host's own interfaces.
    #[error("VM {vm}: {what} {name:?} is this host's {role}")]
    HostInterface {
        /// VM name.
        vm: String,
        /// Which port.
        what: &'static str,
        /// Its name.
        name: String,
        /// What it is here (`uplink`, `bridge`).
        role: &'static str,
    },
    /// A path is given but the directory it is relative to is not
    /// configured here.
    #[error("VM {vm}: has a {what} but this host has no {key} configured")]
    NoDir {
        /// VM name.
        vm: String,
        /// `disk` or `scenario`.
        what: &'static str,
        /// `image_dir` or `scenario_dir`.
        key: &'static str,
    },
    /// A path is refused.
    #[error("VM {vm}: {what}: {source}")]
    Path {
        /// VM name.
        vm: String,
        /// `disk` or `scenario`.
        what: &'static str,
        /// Why.
        source: ConfineError,
    },
}

const IFNAME_RULE: &str = "1-15 of [A-Za-z0-9._-], not starting with '-' or '.'";
const NAME_RULE: &str = "1-64 of [A-Za-z0-9._-], not starting with '-' or '.'";

/// Checks a VM definition (from the config or from a `prepare_incoming`
/// body) against this host's configuration `host`, without touching the
/// file system: name, MAC, IP, vCPU and memory bounds, the template (it
/// must exist here and every placeholder it uses must have a value), the
/// disk and scenario paths (plain relative paths under a configured
/// directory; [`crate::plan`] resolves them), and every interface and
/// namespace name.
pub fn validate_vm(inv: &VmInventory, host: &Config) -> Result<(), VmSpecError> {
    let vm = || inv.name.clone();
    if !valid_name(&inv.name) {
        return Err(VmSpecError::Name(inv.name.clone()));
    }
    if !valid_mac(&inv.mac) {
        return Err(VmSpecError::Mac {
            vm: vm(),
            mac: inv.mac.clone(),
        });
    }
    if let Some(ip) = &inv.ip {
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(VmSpecError::Ip {
                vm: vm(),
                ip: ip.clone(),
            });
        }
    }
    let size = |why: String| Err(VmSpecError::Size { vm: vm(), why });
    if inv.vcpus == 0 || inv.vcpus > MAX_VCPUS {
        return size(format!("vcpus must be in 1..={MAX_VCPUS}"));
    }
    if inv.memory_mb == 0 || inv.memory_mb > inv.max_memory_mb {
        return size("need 0 < memory_mb <= max_memory_mb".into());
    }
    if inv.max_memory_mb > MAX_VM_MEMORY_MB {
        return size(format!("max_memory_mb must be <= {MAX_VM_MEMORY_MB}"));
    }
    shoal_common::proto::check_vm_groups(inv)
        .map_err(|why| VmSpecError::Group { vm: vm(), why })?;
    let bad_name = |what: &'static str, name: &str, rule: &'static str| {
        Err(VmSpecError::BadName {
            vm: vm(),
            what,
            name: name.to_string(),
            rule,
        })
    };
    let path = |what: &'static str, key: &'static str, dir: &Option<PathBuf>, rel: &str| {
        if dir.is_none() {
            return Err(VmSpecError::NoDir {
                vm: vm(),
                what,
                key,
            });
        }
        check_relative(rel).map_err(|source| VmSpecError::Path {
            vm: vm(),
            what,
            source,
        })
    };
    match &inv.spec {
        VmBackendSpec::Qemu {
            template,
            disk,
            tap,
        } => {
            let tpl = host.template(&inv.name, template)?;
            let tpl_err = |source| VmSpecError::Template {
                vm: vm(),
                template: template.clone(),
                source,
            };
            if let Some(max) = tpl.max_vcpus {
                if inv.vcpus > max {
                    return size(format!("template {template} allows at most {max} vcpus"));
                }
            }
            if let Some(max) = tpl.max_memory_mb {
                if inv.max_memory_mb > max {
                    return size(format!(
                        "template {template} allows at most {max} MiB (max_memory_mb)"
                    ));
                }
            }
            if let Some(t) = tap {
                if !valid_ifname(t) {
                    return bad_name("tap", t, IFNAME_RULE);
                }
            } else if tpl.uses(Placeholder::Tap) {
                return Err(tpl_err(TemplateError::Missing("tap")));
            }
            match disk {
                Some(d) => {
                    if !tpl.uses(Placeholder::Disk) {
                        return Err(VmSpecError::UnusedDisk {
                            vm: vm(),
                            template: template.clone(),
                        });
                    }
                    path("disk", "image_dir", &host.image_dir, d)?;
                }
                None if tpl.uses(Placeholder::Disk) => {
                    return Err(tpl_err(TemplateError::Missing("disk")))
                }
                None => {}
            }
        }
        VmBackendSpec::Netns {
            namespace,
            iface,
            port,
            vf_iface,
            vf_port,
            scenario,
            ..
        } => {
            if !valid_name(namespace) {
                return bad_name("namespace", namespace, NAME_RULE);
            }
            for (what, n) in [
                ("iface", Some(iface)),
                ("port", Some(port)),
                ("vf_iface", vf_iface.as_ref()),
                ("vf_port", vf_port.as_ref()),
            ] {
                let Some(n) = n else { continue };
                if !valid_ifname(n) {
                    return bad_name(what, n, IFNAME_RULE);
                }
            }
            // The ports move onto this host's bridge: never the host's own.
            for (what, n) in [("port", Some(port)), ("vf_port", vf_port.as_ref())] {
                let Some(n) = n else { continue };
                for (role, own) in [("uplink", &host.uplink), ("bridge", &host.bridge)] {
                    if own.as_deref() == Some(n.as_str()) {
                        return Err(VmSpecError::HostInterface {
                            vm: vm(),
                            what,
                            name: n.clone(),
                            role,
                        });
                    }
                }
            }
            if let Some(sc) = scenario {
                path("scenario", "scenario_dir", &host.scenario_dir, sc)?;
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
        if self.controller.is_some() && !self.controllers.is_empty() {
            return bad("set controller or controllers, not both".into());
        }
        if self.controllers.len() > 16 {
            return bad(format!(
                "controllers lists {} URLs; at most 16",
                self.controllers.len()
            ));
        }
        for c in self.controller.iter().chain(&self.controllers) {
            if !(c.starts_with("http://") || c.starts_with("https://")) {
                return bad(format!(
                    "controller URL must start with http:// or https://, got {c:?}"
                ));
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
        for (field, dir) in [
            ("run_dir", Some(&self.run_dir)),
            ("state_dir", self.state_dir.as_ref()),
        ] {
            if let Some(d) = dir {
                if !d.is_absolute() {
                    return bad(format!(
                        "{field} must be an absolute path, got {}",
                        d.display()
                    ));
                }
            }
        }
        if self.vf_mode == VfMode::Sriov && self.sriov_pf.is_none() {
            return bad("vf_mode = \"sriov\" needs sriov_pf".into());
        }
        for (name, tpl) in &self.templates {
            if !valid_name(name) {
                return bad(format!("invalid template name {name:?}"));
            }
            tpl.check()
                .map_err(|e| ConfigError::Invalid(format!("template {name}: {e}")))?;
        }
        if let Some(d) = &self.domain {
            if !shoal_common::proto::valid_group_name(d) {
                return bad(format!(
                    "domain {d:?} must be 1 to 128 bytes without control characters"
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for vm in &self.vms {
            validate_vm(&vm.inventory(), self).map_err(|e| ConfigError::Invalid(e.to_string()))?;
            if !seen.insert(vm.name.clone()) {
                return bad(format!("VM {} configured twice", vm.name));
            }
        }
        Ok(())
    }

    /// The machine template `name` that VM `vm` asks for, if this host
    /// defines it.
    pub fn template(&self, vm: &str, name: &str) -> Result<&MachineTemplate, VmSpecError> {
        self.templates
            .get(name)
            .ok_or_else(|| VmSpecError::UnknownTemplate {
                vm: vm.to_string(),
                template: name.to_string(),
                known: if self.templates.is_empty() {
                    "none".into()
                } else {
                    self.templates
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }

    /// The controller URLs to register and report to, in order of
    /// preference (`controller`, or `controllers`).
    pub fn controller_urls(&self) -> Vec<String> {
        self.controller
            .iter()
            .chain(&self.controllers)
            .map(|u| u.trim_end_matches('/').to_string())
            .collect()
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
        let scheme = if self.tls_cert_file.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{ip}:{}", self.listen.port())
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
        assert!(c.templates.is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn run_and_state_dirs_must_be_absolute() {
        Config::parse("state_dir = \"/var/lib/s\"", "t")
            .unwrap()
            .validate()
            .unwrap();
        for text in ["state_dir = \"rel\"", "run_dir = \"run\""] {
            let e = Config::parse(text, "t").unwrap().validate().unwrap_err();
            assert!(e.to_string().contains("absolute"), "{e}");
        }
    }

    const FULL: &str = r#"
        host_id = "h1"
        controller = "http://127.0.0.1:8080"
        listen = "0.0.0.0:7070"
        dom0_addr = "10.0.0.1"
        interval_s = 5
        bridge = "br0"
        uplink = "eth0"
        image_dir = "/var/lib/shoal/images"
        scenario_dir = "/var/lib/shoal/scenarios"

        [templates.small]
        args = ["-accel", "kvm", "-m", "{memory_mb}", "-smp", "{vcpus}",
                "-drive", "file={disk},format=qcow2,if=virtio",
                "-netdev", "tap,id=n0,ifname={tap},script=no,downscript=no",
                "-device", "virtio-net-pci,netdev=n0,mac={mac}"]
        max_memory_mb = 4096
        max_vcpus = 4

        [templates.diskless]
        args = ["-m", "{memory_mb}", "-kernel", "/boot/vmlinuz"]

        [[vm]]
        name = "q1"
        mac = "52:54:00:00:00:01"
        memory_mb = 128
        backend = "qemu"
        template = "small"
        disk = "q1.qcow2"
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
        scenario = "n1.json"
    "#;

    /// The host's `domain` and a VM's `environment` / `environment_head`
    /// reach the registration's inventory; bad values are refused naming
    /// the field.
    #[test]
    fn domain_and_environment_parse_and_are_checked() {
        let vm = |extra: &str| {
            format!(
                "domain = \"dc-east\"\n[[vm]]\nname = \"n1\"\nmac = \"52:54:00:00:00:02\"\n\
                 memory_mb = 64\nbackend = \"netns\"\nnamespace = \"ns1\"\niface = \"eth0\"\n\
                 port = \"p1\"\n{extra}"
            )
        };
        let c = Config::parse(
            &vm("environment = \"tenant1\"\nenvironment_head = true"),
            "t",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.domain.as_deref(), Some("dc-east"));
        let inv = c.vms[0].inventory();
        assert_eq!(inv.environment.as_deref(), Some("tenant1"));
        assert!(inv.environment_head);
        // Without them: none, as before.
        let c = Config::parse(&vm(""), "t").unwrap();
        c.validate().unwrap();
        assert_eq!(c.vms[0].inventory().environment, None);
        assert!(!c.vms[0].inventory().environment_head);
        assert_eq!(Config::parse("", "t").unwrap().domain, None);
        // Refused, naming the field.
        let long = "x".repeat(129);
        for (extra, field) in [
            (format!("environment = \"{long}\""), "environment"),
            ("environment = \"\"".to_string(), "environment"),
            ("environment = \"a\\u0007b\"".to_string(), "environment"),
            ("environment_head = true".to_string(), "environment_head"),
        ] {
            let e = Config::parse(&vm(&extra), "t")
                .unwrap()
                .validate()
                .unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("VM n1") && text.contains(field),
                "{extra}: {text}"
            );
        }
        for text in [
            format!("domain = \"{long}\""),
            "domain = \"\"".to_string(),
            "domain = \"a\\tb\"".to_string(),
        ] {
            let e = Config::parse(&text, "t").unwrap().validate().unwrap_err();
            assert!(e.to_string().contains("domain"), "{text}: {e}");
        }
        // A wrong type is a parse error naming the key.
        let e = Config::parse(&vm("environment_head = \"yes\""), "t").unwrap_err();
        assert!(e.to_string().contains("environment_head"), "{e}");
    }

    #[test]
    fn full_config() {
        let c = Config::parse(FULL, "t").unwrap();
        c.validate().unwrap();
        assert_eq!(c.vms.len(), 2);
        assert_eq!(c.templates.len(), 2);
        assert_eq!(c.templates["small"].max_vcpus, Some(4));
        assert_eq!(c.effective_api_url(), "http://10.0.0.1:7070");
        let n1 = c.vms[1].inventory();
        assert_eq!(n1.max_memory_mb, 512);
        assert!(matches!(n1.spec, VmBackendSpec::Netns { .. }));
        let q1 = c.vms[0].inventory();
        assert_eq!(
            q1.spec,
            VmBackendSpec::Qemu {
                template: "small".into(),
                disk: Some("q1.qcow2".into()),
                tap: Some("tap0".into())
            }
        );
    }

    /// The example in the repository stays a valid configuration.
    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../examples/hostd.toml");
        let c = Config::parse(text, "examples/hostd.toml").unwrap();
        c.validate().unwrap();
        assert_eq!(c.vms.len(), 2);
        assert!(c.templates.contains_key("small") && c.templates.contains_key("large"));
    }

    #[test]
    fn bad_values_rejected() {
        let base =
            |vm: &str| format!("[templates.t]\nargs=[\"-m\",\"{{memory_mb}}\"]\n[[vm]]\n{vm}\n");
        for (text, why) in [
            (
                base("name=\"a\"\nmac=\"zz\"\nmemory_mb=1\nbackend=\"qemu\"\ntemplate=\"t\""),
                "mac",
            ),
            (
                base("name=\"a/b\"\nmac=\"52:54:00:00:00:01\"\nmemory_mb=1\nbackend=\"qemu\"\ntemplate=\"t\""),
                "name",
            ),
            (
                base("name=\"a\"\nmac=\"52:54:00:00:00:01\"\nmemory_mb=1\nbackend=\"qemu\"\ntemplate=\"u\""),
                "unknown template",
            ),
            (
                base("name=\"a\"\nmac=\"52:54:00:00:00:01\"\nmemory_mb=1\nbackend=\"qemu\"\nargs=[\"-m\",\"1\"]"),
                "old-style args",
            ),
            (
                base("name=\"a\"\nmac=\"52:54:00:00:00:01\"\nmemory_mb=1\nbackend=\"qemu\"\ntemplate=\"t\"\nargs=[\"-virtfs\",\"x\"]"),
                "args next to a template",
            ),
            (
                base("name=\"a\"\nmac=\"52:54:00:00:00:01\"\nmemory_mb=1\nbackend=\"qemu\"\ntemplate=\"t\"\ndisk=\"a.img\""),
                "disk without image_dir / {disk}",
            ),
            (
                base("name=\"a\"\nmac=\"52:54:00:00:00:01\"\nmemory_mb=1\nbackend=\"netns\"\nnamespace=\"n\"\niface=\"e\"\nport=\"p\"\nscenario=\"s.json\""),
                "scenario without scenario_dir",
            ),
            (
                "[templates.t]\nargs=[\"-incoming\",\"tcp:0:1\"]".to_string(),
                "host-local option in a template",
            ),
            (
                "[templates.t]\nargs=[\"-m\",\"{mem}\"]".to_string(),
                "unknown placeholder",
            ),
            (
                "[templates.t]\nargs=[\"-m\",\"1\"]\nextra=1".to_string(),
                "unknown template key",
            ),
            (
                "[templates.\"-t\"]\nargs=[\"-m\",\"1\"]".to_string(),
                "template name",
            ),
            ("interval_s = 0".to_string(), "interval"),
            ("controller = \"ftp://x\"".to_string(), "url"),
            ("controllers = [\"http://a:1\", \"ftp://x\"]".to_string(), "url in list"),
            (
                "controller = \"http://a:1\"\ncontrollers = [\"http://b:1\"]".to_string(),
                "controller and controllers",
            ),
        ] {
            let r = Config::parse(&text, "t").and_then(|c| c.validate());
            assert!(r.is_err(), "{why}: accepted");
        }
        assert!(Config::parse("bogus = 1", "t").is_err());
        let c = Config::parse("controllers = [\"http://a:1/\", \"https://b:2\"]", "t").unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.controller_urls(), vec!["http://a:1", "https://b:2"]);
    }

    /// One QEMU VM of template `small` of [`FULL`], changed by `f`.
    fn check_qemu(f: impl FnOnce(&mut VmInventory)) -> Result<(), VmSpecError> {
        let c = Config::parse(FULL, "t").unwrap();
        let mut inv = c.vms[0].inventory();
        f(&mut inv);
        validate_vm(&inv, &c)
    }

    /// One netns VM of [`FULL`], changed by `f`.
    fn check_netns(f: impl FnOnce(&mut VmInventory)) -> Result<(), VmSpecError> {
        let c = Config::parse(FULL, "t").unwrap();
        let mut inv = c.vms[1].inventory();
        f(&mut inv);
        validate_vm(&inv, &c)
    }

    fn set_qemu(inv: &mut VmInventory, template: &str, disk: Option<&str>, tap: Option<&str>) {
        inv.spec = VmBackendSpec::Qemu {
            template: template.into(),
            disk: disk.map(String::from),
            tap: tap.map(String::from),
        };
    }

    #[test]
    fn vm_names_are_checked() {
        check_qemu(|_| {}).unwrap();
        for bad in [
            "",
            "-x",
            ".x",
            "a/b",
            "a b",
            "a,b",
            "a\nb",
            "..",
            &"x".repeat(65),
        ] {
            let e = check_qemu(|i| i.name = bad.into()).unwrap_err();
            assert!(matches!(e, VmSpecError::Name(_)), "{bad:?}: {e}");
        }
        check_qemu(|i| i.name = "x".repeat(64)).unwrap();
        check_qemu(|i| i.name = "web-1.a_b".into()).unwrap();
    }

    #[test]
    fn macs_are_parsed() {
        for bad in [
            "",
            "zz:00:00:00:00:00",
            "52:54:00:00:00",
            "52:54:00:00:00:01:02",
            "52-54-00-00-00-01",
            "+2:54:00:00:00:01",
            "2:54:00:00:00:01",
            "52:54:00:00:00:01,x",
        ] {
            let e = check_qemu(|i| i.mac = bad.into()).unwrap_err();
            assert!(matches!(e, VmSpecError::Mac { .. }), "{bad:?}: {e}");
        }
        check_qemu(|i| i.mac = "52:54:00:AB:cd:01".into()).unwrap();
    }

    #[test]
    fn memory_and_vcpus_are_bounded() {
        let size = |r: Result<(), VmSpecError>| matches!(r, Err(VmSpecError::Size { .. }));
        assert!(size(check_qemu(|i| i.vcpus = 0)));
        assert!(size(check_qemu(|i| i.vcpus = 5)), "template max_vcpus");
        check_qemu(|i| i.vcpus = 4).unwrap();
        assert!(size(check_qemu(|i| i.memory_mb = 0)));
        assert!(size(check_qemu(|i| i.memory_mb = 129)), "above max");
        assert!(size(check_qemu(|i| {
            i.memory_mb = 4097;
            i.max_memory_mb = 4097
        })));
        check_qemu(|i| {
            i.memory_mb = 4096;
            i.max_memory_mb = 4096
        })
        .unwrap();
        // The global bound holds for templates without their own.
        assert!(size(check_qemu(|i| {
            set_qemu(i, "diskless", None, None);
            i.max_memory_mb = MAX_VM_MEMORY_MB + 1;
        })));
        assert!(size(check_netns(|i| i.vcpus = MAX_VCPUS + 1)));
        assert!(size(check_netns(|i| i.max_memory_mb = u64::MAX)));
    }

    #[test]
    fn templates_are_looked_up_and_must_fit() {
        let e = check_qemu(|i| set_qemu(i, "huge", Some("q1.qcow2"), Some("tap0"))).unwrap_err();
        assert!(matches!(e, VmSpecError::UnknownTemplate { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("unknown template \"huge\"") && msg.contains("diskless, small"),
            "{msg}"
        );
        // small uses {disk} and {tap}: both are needed.
        let e = check_qemu(|i| set_qemu(i, "small", None, Some("tap0"))).unwrap_err();
        assert!(e.to_string().contains("{disk}"), "{e}");
        let e = check_qemu(|i| set_qemu(i, "small", Some("q1.qcow2"), None)).unwrap_err();
        assert!(e.to_string().contains("{tap}"), "{e}");
        // diskless has no {disk}: a disk is an error, a tap is fine.
        let e = check_qemu(|i| set_qemu(i, "diskless", Some("q1.qcow2"), None)).unwrap_err();
        assert!(matches!(e, VmSpecError::UnusedDisk { .. }), "{e}");
        check_qemu(|i| set_qemu(i, "diskless", None, Some("tap9"))).unwrap();
        // No templates at all.
        let c = Config::default();
        let mut inv = Config::parse(FULL, "t").unwrap().vms[0].inventory();
        set_qemu(&mut inv, "small", None, None);
        let e = validate_vm(&inv, &c).unwrap_err();
        assert!(e.to_string().contains("this host has: none"), "{e}");
    }

    #[test]
    fn disks_and_taps_are_checked() {
        for bad in [
            "/etc/shadow",
            "../../etc/shadow",
            "a/../../b",
            "a,file.driver=x",
            "-x",
            "",
        ] {
            let e = check_qemu(|i| set_qemu(i, "small", Some(bad), Some("tap0"))).unwrap_err();
            assert!(matches!(e, VmSpecError::Path { .. }), "{bad:?}: {e}");
        }
        check_qemu(|i| set_qemu(i, "small", Some("tenant/q1.qcow2"), Some("tap0"))).unwrap();
        for bad in [
            "-tap",
            "tap0,script=/x",
            "tap-much-too-long",
            "t/0",
            "",
            "t 0",
        ] {
            let e = check_qemu(|i| set_qemu(i, "small", Some("q1.qcow2"), Some(bad))).unwrap_err();
            assert!(matches!(e, VmSpecError::BadName { .. }), "{bad:?}: {e}");
        }
        // No image_dir: no disk.
        let mut c = Config::parse(FULL, "t").unwrap();
        c.image_dir = None;
        let e = validate_vm(&c.vms[0].inventory(), &c).unwrap_err();
        assert!(
            matches!(
                e,
                VmSpecError::NoDir {
                    key: "image_dir",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn netns_names_and_scenarios_are_checked() {
        check_netns(|_| {}).unwrap();
        let set = |i: &mut VmInventory, field: &str, v: &str| {
            if let VmBackendSpec::Netns {
                namespace,
                iface,
                port,
                vf_iface,
                scenario,
                ..
            } = &mut i.spec
            {
                match field {
                    "namespace" => *namespace = v.into(),
                    "iface" => *iface = v.into(),
                    "port" => *port = v.into(),
                    "vf_iface" => *vf_iface = Some(v.into()),
                    _ => *scenario = Some(v.into()),
                }
            }
        };
        for (field, bad) in [
            ("namespace", "-n"),
            ("namespace", "a/b"),
            ("namespace", "/proc/1/ns/net"),
            ("iface", "eth0-much-too-long"),
            ("iface", "-eth0"),
            ("iface", "dev eth0"),
            ("port", "p1234567890123456"),
            ("port", "--help"),
            ("port", "eth0"),
            ("port", "br0"),
            ("vf_iface", "-vf"),
            ("scenario", "/etc/shadow"),
            ("scenario", "../x.json"),
            ("scenario", "a//b.json"),
        ] {
            let r = check_netns(|i| set(i, field, bad));
            assert!(r.is_err(), "{field} = {bad:?} accepted");
        }
        check_netns(|i| set(i, "iface", "eth0-15-bytes-x")).unwrap();
        check_netns(|i| set(i, "scenario", "pod1/n1.json")).unwrap();
    }
}
