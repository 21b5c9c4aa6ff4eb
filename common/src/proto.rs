//! hostd <-> controller wire types (JSON over HTTP, bearer token).
//!
//! Two directions, both `Authorization: Bearer <token>`:
//!
//! - hostd → controller: [`Registration`] with `PUT` [`CONTROLLER_HOST_PATH`]
//!   (on start and whenever the host's set of VMs changes; idempotent: the
//!   latest registration replaces the previous one), and a [`Report`] every
//!   interval with `POST` [`CONTROLLER_REPORT_PATH`]. A `404` answer to a
//!   report means "register first": hostd then registers again.
//! - controller → hostd (the effector): `PUT` [`HOSTD_COMMAND_PATH`] with a
//!   [`Command`] body, idempotent by the client-chosen id in the path;
//!   `GET` the same path for its [`CommandStatus`] (progress, result, error);
//!   `GET` [`HOSTD_VMS_PATH`] / [`HOSTD_VM_PATH`] for [`VmStatus`];
//!   `GET` [`HOSTD_HEALTH_PATH`] (no token) for liveness.
//!
//! Errors from either side are `{"error": "..."}` ([`ErrorBody`]) with a 4xx/5xx
//! status: 400 malformed JSON or id, 401 missing/wrong token, 404 unknown
//! command/VM, 409 conflicting command (same id with another body, or the VM
//! is migrating), 422 well-formed but invalid command.
//!
//! Units are in the field names where possible (`_mb` = MiB = 2^20 bytes,
//! `_bytes`, `_per_s`, `_ms`, `_s`); utilisations are fractions in `[0, 1]`.
//! Timestamps are Unix milliseconds (`_unix_ms`). Unknown fields are ignored
//! on input, so either side may add optional fields later, except in a VM's
//! definition ([`VmInventory`], [`VmBackendSpec`]): that is what a
//! destination starts a VM from, so anything unknown there is refused.

use serde::{Deserialize, Serialize};

/// Controller endpoint for registration: `PUT`, body [`Registration`].
/// `{id}` is the host id ([`host_path`] fills it in).
pub const CONTROLLER_HOST_PATH: &str = "/api/v1/hosts/{id}";
/// Controller endpoint for reports: `POST`, body [`Report`].
pub const CONTROLLER_REPORT_PATH: &str = "/api/v1/hosts/{id}/reports";
/// hostd effector endpoint: `PUT` a [`Command`] (answer: [`CommandStatus`],
/// 202 when created, 200 when the same command already exists), `GET` its
/// [`CommandStatus`]. `{id}` is the client-chosen command id (see
/// [`valid_command_id`]).
pub const HOSTD_COMMAND_PATH: &str = "/api/v1/commands/{id}";
/// hostd: `GET` every command it knows, newest last (`Vec<CommandStatus>`).
pub const HOSTD_COMMANDS_PATH: &str = "/api/v1/commands";
/// hostd: `GET` the VMs it runs (`Vec<VmStatus>`).
pub const HOSTD_VMS_PATH: &str = "/api/v1/vms";
/// hostd: `GET` one VM ([`VmStatus`]).
pub const HOSTD_VM_PATH: &str = "/api/v1/vms/{name}";
/// hostd: `GET`, no token, answers `ok` while the daemon runs.
pub const HOSTD_HEALTH_PATH: &str = "/healthz";

/// [`CONTROLLER_HOST_PATH`] for host `id`.
pub fn host_path(id: &str) -> String {
    CONTROLLER_HOST_PATH.replace("{id}", id)
}

/// [`CONTROLLER_REPORT_PATH`] for host `id`.
pub fn report_path(id: &str) -> String {
    CONTROLLER_REPORT_PATH.replace("{id}", id)
}

/// [`HOSTD_COMMAND_PATH`] for command `id`.
pub fn command_path(id: &str) -> String {
    HOSTD_COMMAND_PATH.replace("{id}", id)
}

/// A valid command or host id: 1 to 128 characters of `[A-Za-z0-9._-]`.
pub fn valid_command_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

// ---------------------------------------------------------------------------
// Registration (inventory)
// ---------------------------------------------------------------------------

/// How a VM is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// A real QEMU process driven over QMP.
    Qemu,
    /// Testbed: a network namespace standing for a VM.
    Netns,
}

/// Backend-specific definition of a VM: what a destination hostd needs to
/// run the same VM (`prepare_incoming` carries it).
///
/// Only data travels here, never a command line: a QEMU VM names a machine
/// template that the host running it defines in its own configuration, and
/// paths are relative to directories that host configures. Unknown fields
/// are refused (so an old-style `args` list is an error, not ignored); the
/// receiving hostd checks every value before it uses one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum VmBackendSpec {
    /// A QEMU process.
    Qemu {
        /// Name of the machine template (`[templates.NAME]` in the
        /// configuration of the hostd that runs the VM): the QEMU arguments
        /// come from there, never from the wire.
        template: String,
        /// Disk image, a path relative to the host's `image_dir` (plain
        /// components of `[A-Za-z0-9._-]`, no `..`); substituted for
        /// `{disk}` in the template as the resolved absolute path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disk: Option<String>,
        /// Name of the tap interface the VM's NIC uses in the hypervisor's
        /// namespace (an interface name: ≤ 15 of `[A-Za-z0-9._-]`, not
        /// starting with `-`): `{tap}` in the template and the source of the
        /// tx/rx counters (none: no network counters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tap: Option<String>,
    },
    /// A network namespace (testbed VM).
    Netns {
        /// The namespace name (`ip netns` name).
        namespace: String,
        /// The VM's interface inside the namespace (e.g. `eth0`).
        iface: String,
        /// The root-namespace end of the VM's veth: its port on the OVS
        /// bridge; moved to the destination bridge on migration.
        port: String,
        /// Second interface inside the namespace that stands for an SR-IOV
        /// VF (VF attach = link up, detach = link down).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vf_iface: Option<String>,
        /// Bridge port of the VF stand-in, moved along on migration.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vf_port: Option<String>,
        /// Scenario time-series file (CPU/memory/dirty rate; see
        /// docs/hostd.md), a path relative to the host's `scenario_dir`
        /// (plain components of `[A-Za-z0-9._-]`, no `..`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scenario: Option<String>,
        /// Unix ms at which the scenario's `t = 0` lies; kept across
        /// migrations so that the series continues.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scenario_epoch_unix_ms: Option<u64>,
    },
}

impl VmBackendSpec {
    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            VmBackendSpec::Qemu { .. } => BackendKind::Qemu,
            VmBackendSpec::Netns { .. } => BackendKind::Netns,
        }
    }
}

/// One VM in a host's inventory. Unknown fields are refused (it is what a
/// destination starts a VM from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmInventory {
    /// Unique VM name (data-center wide).
    pub name: String,
    /// MAC address of the VM's primary NIC, `aa:bb:cc:dd:ee:ff` lower case.
    pub mac: String,
    /// IPv4 address of the primary NIC, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Number of virtual CPUs.
    pub vcpus: u32,
    /// Memory currently allocated to the VM (after ballooning), MiB.
    pub memory_mb: u64,
    /// Maximum memory of the VM (its boot size), MiB.
    pub max_memory_mb: u64,
    /// Backend and what it needs to run this VM elsewhere.
    pub spec: VmBackendSpec,
    /// The virtual environment (a tenant's group of VMs) this VM belongs
    /// to, as configured on its host ([`valid_group_name`]); the
    /// controller uses it for VIOLIN when its own groups do not name the
    /// VM. Absent from the JSON when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Whether this VM is its environment's head node (gateway); only with
    /// `environment`. Absent from the JSON when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub environment_head: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Longest domain or environment name on the wire, bytes.
pub const MAX_GROUP_NAME_LEN: usize = 128;

/// A valid domain or environment name: 1 to [`MAX_GROUP_NAME_LEN`] bytes
/// without control characters.
pub fn valid_group_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_GROUP_NAME_LEN && !s.chars().any(char::is_control)
}

/// Checks the group facts of a registration: the host's `domain` and every
/// VM's `environment` are [`valid_group_name`]s, and `environment_head`
/// comes with an `environment`. The error names the field, e.g.
/// `vms[web1].environment`.
pub fn check_registration_groups(reg: &Registration) -> Result<(), String> {
    const RULE: &str = "must be 1 to 128 bytes without control characters";
    if let Some(d) = &reg.domain {
        if !valid_group_name(d) {
            return Err(format!("domain {RULE}"));
        }
    }
    for v in &reg.vms {
        check_vm_groups(v).map_err(|e| format!("vms[{}].{e}", v.name))?;
    }
    Ok(())
}

/// Checks one inventory entry's `environment` and `environment_head`; the
/// error starts with the field's name.
pub fn check_vm_groups(v: &VmInventory) -> Result<(), String> {
    match &v.environment {
        Some(e) if !valid_group_name(e) => {
            Err("environment must be 1 to 128 bytes without control characters".into())
        }
        None if v.environment_head => Err("environment_head needs an environment".into()),
        _ => Ok(()),
    }
}

/// The OVS bridge a hypervisor's VMs are attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeAttachment {
    /// Bridge name (`ovs-vsctl list-br`).
    pub name: String,
    /// OpenFlow datapath id of the bridge, as a number.
    pub datapath_id: u64,
}

/// Host inventory: `PUT` [`CONTROLLER_HOST_PATH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Host id (hypervisor name), same as in the path.
    pub host_id: String,
    /// Base URL of this host's effector API, e.g. `http://10.0.0.1:7070`.
    pub api_url: String,
    /// Address of the host's management domain (dom0): migrations are
    /// sent to/from it.
    pub dom0_addr: String,
    /// Logical CPU cores of the host.
    pub cores: u32,
    /// Physical memory, MiB (`MemTotal`).
    pub memory_mb: u64,
    /// Uplink NIC name.
    pub nic: String,
    /// Uplink NIC capacity, bit/s.
    pub nic_bps: u64,
    /// SR-IOV virtual functions available for VMs.
    pub vf_count: u32,
    /// The OVS bridge the VMs are plugged into (None: unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<BridgeAttachment>,
    /// Report interval Δ, seconds.
    pub interval_s: f64,
    /// VMs running on this host now.
    pub vms: Vec<VmInventory>,
    /// hostd version.
    pub hostd_version: String,
    /// The administrative domain (group of hosts) this host is in, as
    /// configured on it ([`valid_group_name`]); the controller uses it for
    /// VIOLIN when its own groups do not name the host. Absent from the
    /// JSON when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

// ---------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------

/// Host-level metrics over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HostMetrics {
    /// CPU utilisation of the whole host, fraction of all cores in [0, 1]
    /// (`/proc/stat`: 1 − idle+iowait delta / total delta).
    pub cpu_util: f64,
    /// Memory in use, MiB (`MemTotal − MemAvailable`).
    pub mem_used_mb: u64,
    /// Physical memory, MiB (`MemTotal`).
    pub mem_total_mb: u64,
    /// Pages swapped out per second (`/proc/vmstat` `pswpout` delta / s).
    pub swap_out_pages_per_s: f64,
    /// Pages swapped in (read back from swap) per second (`/proc/vmstat`
    /// `pswpin` delta / s); 0 from daemons that do not report it.
    #[serde(default)]
    pub swap_in_pages_per_s: f64,
    /// Uplink NIC transmit rate, bytes/s.
    pub nic_tx_bytes_per_s: f64,
    /// Uplink NIC receive rate, bytes/s.
    pub nic_rx_bytes_per_s: f64,
}

/// Where a VM is in its life on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Running here.
    Running,
    /// Paused or stopped (QEMU status other than running).
    Paused,
    /// Being migrated away from this host (still runs here).
    MigratingOut,
    /// Arriving here (`prepare_incoming`), not yet running.
    Incoming,
    /// The VM's process is gone or unreachable.
    Failed,
}

/// Per-VM metrics over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmMetrics {
    /// VM name.
    pub name: String,
    /// Backend of the VM.
    pub backend: BackendKind,
    /// State at the end of the interval.
    pub state: VmState,
    /// CPU used, in cores (1.0 = one core busy for the whole interval);
    /// QEMU: the process's utime+stime; netns: scenario `cpu` × vcpus.
    pub cpu_cores: f64,
    /// CPU utilisation of the VM, fraction of its vCPUs in [0, 1]
    /// (`cpu_cores / vcpus`, clamped).
    pub cpu_util: f64,
    /// CPU time the vCPUs received ("gotten") in the interval, ms
    /// (schedstat run time summed over vCPU threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gotten_ms: Option<f64>,
    /// Time the vCPUs waited on a run queue in the interval, ms
    /// (schedstat wait time summed over vCPU threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<f64>,
    /// Time the vCPUs were blocked in the interval, ms:
    /// `vcpus × wall − gotten − wait`, floored at 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_ms: Option<f64>,
    /// Memory allocated to the VM now (balloon actual, else boot size), MiB.
    pub memory_mb: u64,
    /// Maximum memory (boot size), MiB.
    pub max_memory_mb: u64,
    /// Memory in use, MiB (QEMU: resident set of the process; netns:
    /// scenario `mem_mb`).
    pub used_memory_mb: u64,
    /// Bytes/s the VM sent (from the VM's point of view).
    pub tx_bytes_per_s: f64,
    /// Bytes/s the VM received.
    pub rx_bytes_per_s: f64,
    /// Packets/s the VM sent.
    pub tx_packets_per_s: f64,
    /// Packets/s the VM received.
    pub rx_packets_per_s: f64,
    /// Page dirty rate, MiB/s, where known (QEMU `calc-dirty-rate`, last
    /// measurement; netns: scenario `dirty_mbps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_rate_mbps: Option<f64>,
    /// Whether a VF (or its testbed stand-in) is attached.
    pub vf_attached: bool,
}

/// Something that happened on the host, carried by the next report
/// (at-least-once: the controller dedups by `seq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per-hostd-process increasing sequence number.
    pub seq: u64,
    /// When, Unix ms.
    pub at_unix_ms: u64,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Event payloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A command reached a final state.
    CommandFinished {
        /// Command id.
        command_id: String,
        /// The VM concerned.
        vm: String,
        /// Final state.
        state: CommandState,
        /// Why it failed, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A VM started running here (migrated in).
    VmArrived {
        /// VM name.
        vm: String,
    },
    /// A VM left this host (migrated away).
    VmLeft {
        /// VM name.
        vm: String,
    },
}

/// A report: `POST` [`CONTROLLER_REPORT_PATH`] every interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Host id.
    pub host_id: String,
    /// Per-hostd-process increasing report number (starts at 1).
    pub seq: u64,
    /// End of the interval, Unix ms.
    pub at_unix_ms: u64,
    /// Length of the interval actually measured, seconds (monotonic clock).
    pub interval_s: f64,
    /// Host metrics.
    pub host: HostMetrics,
    /// One entry per VM on the host.
    pub vms: Vec<VmMetrics>,
    /// Events since the last acknowledged report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

// ---------------------------------------------------------------------------
// Commands (controller -> hostd)
// ---------------------------------------------------------------------------

/// Parameters of a live migration, for both ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationSpec {
    /// The VM to move.
    pub vm: String,
    /// Host id of the destination.
    pub destination_host: String,
    /// `IP:PORT` of the incoming migration on the destination dom0: where
    /// `prepare_incoming` listens and `migrate` connects.
    pub destination_addr: String,
    /// Bandwidth cap `L` of the pre-copy, bytes/s (> 0).
    pub max_bandwidth_bytes_per_s: u64,
    /// Allowed downtime (switch-over goal `T`), ms (> 0).
    pub downtime_limit_ms: u64,
    /// The whole migration must finish within this many seconds (> 0);
    /// after it, the migration is cancelled and the VM keeps running on
    /// the source (`prepare_incoming`: how long to wait for it).
    pub deadline_s: f64,
    /// `migrate` only: base URL of the destination hostd's effector API, to
    /// wait for the VM to run there before the source lets it go (qemu).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_api: Option<String>,
    /// `migrate` only: id of the `prepare_incoming` command on the
    /// destination (qemu).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming_command_id: Option<String>,
    /// A one-time token the controller gives both ends of a migration: the
    /// source presents it to the destination hostd to read the status of
    /// the `prepare_incoming` command (and nothing else); never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_token: Option<String>,
    /// `prepare_incoming` only: the VM's inventory entry on the source
    /// (what the destination needs to run it: the machine template's name,
    /// disk and tap of a QEMU VM; the namespace and ports of a netns VM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_spec: Option<VmInventory>,
}

/// A command body: `PUT` [`HOSTD_COMMAND_PATH`]. Tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// On the destination: get ready to receive `vm` (qemu: start QEMU from
    /// the named template and `-incoming tcp:destination_addr`; netns:
    /// listen for the pre-copy stream). Succeeds once the VM runs here.
    PrepareIncoming(MigrationSpec),
    /// On the source: migrate `vm` to `destination_addr`.
    Migrate(MigrationSpec),
    /// Give the VM an SR-IOV VF (or its testbed stand-in).
    VfAttach {
        /// VM name.
        vm: String,
    },
    /// Take the VM's VF away.
    VfDetach {
        /// VM name.
        vm: String,
    },
    /// Resize the VM's memory (QEMU balloon; netns: the scenario).
    MemoryResize {
        /// VM name.
        vm: String,
        /// New allocation, MiB (> 0, ≤ the VM's maximum).
        target_mb: u64,
    },
}

impl Command {
    /// The VM the command is about.
    pub fn vm(&self) -> &str {
        match self {
            Command::PrepareIncoming(s) | Command::Migrate(s) => &s.vm,
            Command::VfAttach { vm } | Command::VfDetach { vm } => vm,
            Command::MemoryResize { vm, .. } => vm,
        }
    }

    /// Short name of the command kind (`migrate`, `vf_attach`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Command::PrepareIncoming(_) => "prepare_incoming",
            Command::Migrate(_) => "migrate",
            Command::VfAttach { .. } => "vf_attach",
            Command::VfDetach { .. } => "vf_detach",
            Command::MemoryResize { .. } => "memory_resize",
        }
    }
}

/// Life cycle of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Accepted, not started.
    Accepted,
    /// Under way.
    Running,
    /// Done.
    Succeeded,
    /// Failed; `error` says why. A failed migration leaves the VM running
    /// on the source.
    Failed,
}

impl CommandState {
    /// True for `Succeeded` and `Failed`.
    pub fn is_final(self) -> bool {
        matches!(self, CommandState::Succeeded | CommandState::Failed)
    }
}

/// Progress of a running migration (either end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MigrationProgress {
    /// Backend phase: QEMU's `query-migrate` status (`setup`, `active`,
    /// `device`, `completed`, ...) or the netns backend's (`precopy`,
    /// `stop_and_copy`, `switchover`, `completed`); destination:
    /// `waiting`, `receiving`.
    pub phase: String,
    /// Bytes sent (source) or received (destination) so far.
    pub transferred_bytes: u64,
    /// Bytes still to send in the current round (source).
    pub remaining_bytes: u64,
    /// VM memory to migrate, bytes.
    pub total_bytes: u64,
    /// Current page dirty rate, bytes/s (QEMU `dirty-pages-rate` × page size).
    pub dirty_rate_bytes_per_s: f64,
    /// Pre-copy iterations so far (QEMU `dirty-sync-count`; netns: rounds
    /// started).
    pub iterations: u64,
    /// Time since the migration started, ms.
    pub elapsed_ms: u64,
}

/// Outcome of a completed migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MigrationResult {
    /// Total migration time, ms (QEMU `total-time`; netns: first byte to
    /// gratuitous ARP).
    pub total_time_ms: u64,
    /// Downtime, ms (QEMU `downtime`; netns: stop-and-copy round + switch-over).
    pub downtime_ms: u64,
    /// Bytes moved over the migration connection.
    pub transferred_bytes: u64,
    /// Non-zero memory of the VM, bytes (QEMU: `ram.total − zero pages`;
    /// netns: the VM's memory): the model's `M`.
    pub memory_bytes: u64,
    /// Largest dirty rate observed during the migration, bytes/s: the
    /// model's `R`.
    pub max_dirty_rate_bytes_per_s: f64,
    /// Bandwidth achieved, bytes/s (`transferred / (total − downtime)` for
    /// QEMU; the pacing rate actually reached for netns): the model's `L`.
    pub achieved_bandwidth_bytes_per_s: f64,
    /// Pre-copy iterations (QEMU `dirty-sync-count`; netns rounds incl. the
    /// stop-and-copy).
    pub iterations: u64,
}

/// Outcome of a finished command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandResult {
    /// A migration (source side, or the destination's view).
    Migration(MigrationResult),
    /// A VF was attached.
    VfAttached {
        /// Device: PCI address of the VF (SR-IOV) or the QOM id / interface
        /// name of the stand-in.
        device: String,
    },
    /// The VF was detached.
    VfDetached {
        /// Device that was removed.
        device: String,
    },
    /// Memory resized.
    MemoryResized {
        /// Allocation reported by the backend afterwards, MiB.
        actual_mb: u64,
    },
}

/// Answer of `GET`/`PUT` [`HOSTD_COMMAND_PATH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandStatus {
    /// The command id.
    pub id: String,
    /// The command as accepted.
    pub command: Command,
    /// Where it is.
    pub state: CommandState,
    /// Migration progress (migrations only, once started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<MigrationProgress>,
    /// Outcome once `Succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CommandResult>,
    /// Why it failed (`Failed`), for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Accepted at, Unix ms.
    pub created_unix_ms: u64,
    /// Last change, Unix ms.
    pub updated_unix_ms: u64,
}

/// Answer of `GET` [`HOSTD_VMS_PATH`] (one entry) and [`HOSTD_VM_PATH`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmStatus {
    /// Inventory entry (what `prepare_incoming` needs as `vm_spec`).
    pub inventory: VmInventory,
    /// State now.
    pub state: VmState,
    /// Whether a VF (stand-in) is attached.
    pub vf_attached: bool,
    /// The command currently holding the VM (a migration), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_with: Option<String>,
    /// Metrics of the last completed interval, if one completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_metrics: Option<VmMetrics>,
    /// The VM's process id on its host (QEMU VMs), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fill_ids() {
        assert_eq!(host_path("h1"), "/api/v1/hosts/h1");
        assert_eq!(report_path("h1"), "/api/v1/hosts/h1/reports");
        assert_eq!(command_path("c-1"), "/api/v1/commands/c-1");
    }

    #[test]
    fn command_ids() {
        assert!(valid_command_id("mig-42.a_b"));
        assert!(!valid_command_id(""));
        assert!(!valid_command_id("a/b"));
        assert!(!valid_command_id(&"x".repeat(129)));
    }

    #[test]
    fn command_json_is_tagged() {
        let c = Command::MemoryResize {
            vm: "v1".into(),
            target_mb: 64,
        };
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"kind": "memory_resize", "vm": "v1", "target_mb": 64})
        );
        let m: Command = serde_json::from_value(serde_json::json!({
            "kind": "migrate", "vm": "v1", "destination_host": "h2",
            "destination_addr": "10.0.0.2:4444",
            "max_bandwidth_bytes_per_s": 20971520u64, "downtime_limit_ms": 300,
            "deadline_s": 60.0
        }))
        .unwrap();
        assert_eq!(m.vm(), "v1");
        assert_eq!(m.kind_name(), "migrate");
    }

    #[test]
    fn event_json_is_flat() {
        let e = Event {
            seq: 3,
            at_unix_ms: 10,
            kind: EventKind::VmLeft { vm: "v".into() },
        };
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"seq": 3, "at_unix_ms": 10, "event": "vm_left", "vm": "v"})
        );
        let back: Event = serde_json::from_value(j).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn backend_spec_round_trips() {
        let inv = VmInventory {
            name: "v".into(),
            mac: "52:54:00:00:00:01".into(),
            ip: Some("10.0.0.5".into()),
            vcpus: 1,
            memory_mb: 128,
            max_memory_mb: 128,
            spec: VmBackendSpec::Qemu {
                template: "small".into(),
                disk: Some("web/v.qcow2".into()),
                tap: None,
            },
            environment: None,
            environment_head: false,
        };
        let s = serde_json::to_string(&inv).unwrap();
        assert!(s.contains("\"backend\":\"qemu\""), "{s}");
        let back: VmInventory = serde_json::from_str(&s).unwrap();
        assert_eq!(back, inv);
        assert_eq!(back.spec.kind(), BackendKind::Qemu);
    }

    /// The group fields: set ones round-trip, unset ones are left out of
    /// the JSON (an older controller or hostd reads it), and JSON without
    /// them (an older hostd's) reads as none.
    #[test]
    fn group_fields_round_trip_and_old_json_reads() {
        let old_inv = serde_json::json!({"name": "v", "mac": "52:54:00:00:00:01", "vcpus": 1,
            "memory_mb": 64, "max_memory_mb": 64,
            "spec": {"backend": "qemu", "template": "small"}});
        let inv: VmInventory = serde_json::from_value(old_inv.clone()).unwrap();
        assert_eq!(inv.environment, None);
        assert!(!inv.environment_head);
        assert_eq!(serde_json::to_value(&inv).unwrap(), old_inv);
        let mut inv2 = inv.clone();
        inv2.environment = Some("tenant 1".into());
        inv2.environment_head = true;
        let j = serde_json::to_value(&inv2).unwrap();
        assert_eq!(j["environment"], "tenant 1");
        assert_eq!(j["environment_head"], true);
        assert_eq!(serde_json::from_value::<VmInventory>(j).unwrap(), inv2);
        let old_reg = serde_json::json!({"host_id": "h1", "api_url": "http://h1:7070",
            "dom0_addr": "10.0.0.1", "cores": 4, "memory_mb": 4096, "nic": "eth0",
            "nic_bps": 1000000000u64, "vf_count": 0, "interval_s": 10.0,
            "vms": [old_inv], "hostd_version": "0.1"});
        let reg: Registration = serde_json::from_value(old_reg.clone()).unwrap();
        assert_eq!(reg.domain, None);
        assert_eq!(serde_json::to_value(&reg).unwrap(), old_reg);
        assert_eq!(check_registration_groups(&reg), Ok(()));
        let mut reg2 = reg.clone();
        reg2.domain = Some("dc-east".into());
        reg2.vms[0] = inv2;
        let j = serde_json::to_value(&reg2).unwrap();
        assert_eq!(j["domain"], "dc-east");
        assert_eq!(serde_json::from_value::<Registration>(j).unwrap(), reg2);
        assert_eq!(check_registration_groups(&reg2), Ok(()));
        // Invalid values name their field.
        let mut bad = reg2.clone();
        bad.domain = Some("x".repeat(MAX_GROUP_NAME_LEN + 1));
        assert!(check_registration_groups(&bad)
            .unwrap_err()
            .starts_with("domain "));
        let mut bad = reg2.clone();
        bad.domain = Some(String::new());
        assert!(check_registration_groups(&bad).is_err());
        let mut bad = reg2.clone();
        bad.vms[0].environment = Some("a\nb".into());
        assert!(check_registration_groups(&bad)
            .unwrap_err()
            .starts_with("vms[v].environment "));
        let mut bad = reg2;
        bad.vms[0].environment = None;
        assert!(check_registration_groups(&bad)
            .unwrap_err()
            .starts_with("vms[v].environment_head "));
    }

    /// A command line on the wire (the old `args`), or anything else the
    /// spec does not define, is an error, not ignored.
    #[test]
    fn unknown_fields_in_a_vm_definition_are_refused() {
        let spec = |extra: serde_json::Value| {
            let mut s = serde_json::json!({"backend": "qemu", "template": "small"});
            if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            s
        };
        assert!(serde_json::from_value::<VmBackendSpec>(spec(serde_json::json!({}))).is_ok());
        for extra in [
            serde_json::json!({"args": ["-virtfs", "local,path=/"]}),
            serde_json::json!({"extra_args": []}),
            serde_json::json!({"qemu_binary": "/bin/sh"}),
        ] {
            let e = serde_json::from_value::<VmBackendSpec>(spec(extra.clone())).unwrap_err();
            assert!(e.to_string().contains("unknown field"), "{extra}: {e}");
        }
        // The old shape (args, no template) is refused as well.
        let old = serde_json::json!({"backend": "qemu", "args": ["-m", "64"]});
        assert!(serde_json::from_value::<VmBackendSpec>(old).is_err());
        let netns = serde_json::json!({"backend": "netns", "namespace": "n", "iface": "eth0",
                                       "port": "p", "args": ["x"]});
        assert!(serde_json::from_value::<VmBackendSpec>(netns).is_err());
        // An inventory entry with an unknown field is refused too.
        let inv = serde_json::json!({"name": "v", "mac": "52:54:00:00:00:01", "vcpus": 1,
            "memory_mb": 64, "max_memory_mb": 64, "args": ["-m", "64"],
            "spec": {"backend": "qemu", "template": "small"}});
        assert!(serde_json::from_value::<VmInventory>(inv).is_err());
    }
}
