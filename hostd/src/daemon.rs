//! The daemon: starts the VMs, the sensor loop, the dirty-rate sampler, the
//! reporter (registration + reports with retries) and the effector API.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use shoal_common::proto::{self, BridgeAttachment, Registration, Report, VmState};
use shoal_common::secret::Secret;
use tokio::sync::watch;

use crate::config::Config;
use crate::http::Backoff;
use crate::qemu::QemuRuntime;
use crate::sensor::{host_net_dev, remember, HostSensor, VmSensor};
use crate::state::{lock, Hostd, Vm};

/// The daemon could not start (or a configuration was refused).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A required setting is missing.
    #[error("config: {0} is required")]
    Missing(&'static str),
    /// A token file is unusable.
    #[error("config: {field}: {source}")]
    Token {
        /// The setting naming the file.
        field: &'static str,
        /// Why.
        source: shoal_common::secret::SecretError,
    },
    /// A TLS file is unusable.
    #[error("config: {field}: {source}")]
    Tls {
        /// The setting naming the file.
        field: &'static str,
        /// Why.
        source: shoal_common::tls::TlsError,
    },
    /// A directory the configuration names is missing.
    #[error("config: {field}: {path} is not a directory")]
    Dir {
        /// The setting.
        field: &'static str,
        /// The path.
        path: String,
    },
    /// A VM could not be set up.
    #[error("VM {0}: {1}")]
    Vm(String, String),
    /// The API cannot listen.
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    /// Signal handling could not be set up.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    /// The host sensor does not work here.
    #[error(transparent)]
    Sensor(#[from] crate::sensor::SensorError),
    /// The state file exists but cannot be read.
    #[error(transparent)]
    State(crate::persist::PersistError),
}

/// Reads the token file of setting `field` (first line; mode 0600 or
/// stricter).
pub fn read_token(field: &'static str, path: &std::path::Path) -> Result<Secret, DaemonError> {
    Secret::from_file(path).map_err(|source| DaemonError::Token { field, source })
}

/// A configuration with everything it names loaded and checked: what
/// [`run`], `check-config` and a reload on SIGHUP all go through.
pub struct Loaded {
    /// The configuration (after command-line overrides), validated.
    pub cfg: Config,
    /// The host id (`host_id`, else the hostname).
    pub host_id: String,
    /// This host's own token (`token_file`).
    pub token: Secret,
    /// The controller's token (`controller_token_file`).
    pub controller_token: Option<Secret>,
    /// The API's TLS configuration (`tls_cert_file` + `tls_key_file`).
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
    /// The CA for `https://` peers (`ca_file`).
    pub client_tls: Option<rustls::ClientConfig>,
}

/// Validates `cfg` and loads the token and TLS files it names.
pub fn load(cfg: Config) -> Result<Loaded, DaemonError> {
    cfg.validate()?;
    let token_file = cfg
        .token_file
        .as_deref()
        .ok_or(DaemonError::Missing("token_file (--token-file)"))?;
    let token = read_token("token_file", token_file)?;
    let controller_token = match &cfg.controller_token_file {
        Some(p) => Some(read_token("controller_token_file", p)?),
        None => None,
    };
    let server_tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(c), Some(k)) => Some(shoal_common::tls::server_config(c, k, None).map_err(
            |source| DaemonError::Tls {
                field: "tls_cert_file",
                source,
            },
        )?),
        (None, None) => None,
        _ => {
            return Err(crate::config::ConfigError::Invalid(
                "tls_cert_file and tls_key_file go together".into(),
            )
            .into())
        }
    };
    let client_tls = match &cfg.ca_file {
        Some(ca) => Some(
            shoal_common::tls::client_config(ca, None).map_err(|source| DaemonError::Tls {
                field: "ca_file",
                source,
            })?,
        ),
        None => None,
    };
    let host_id = cfg.host_id.clone().unwrap_or_else(crate::sys::hostname);
    Ok(Loaded {
        cfg,
        host_id,
        token,
        controller_token,
        server_tls,
        client_tls,
    })
}

/// What `check-config` checks beyond [`load`], as the start would: the
/// configured directories exist, and every configured VM has a plan (its
/// disk or scenario resolved inside its directory). Returns notes for
/// people (e.g. a QEMU binary not on the PATH).
pub async fn check_start(cfg: &Config) -> Result<Vec<String>, DaemonError> {
    let mut notes_early = Vec::new();
    for (field, dir) in [
        ("image_dir", &cfg.image_dir),
        ("scenario_dir", &cfg.scenario_dir),
    ] {
        if let Some(d) = dir {
            if !d.is_dir() {
                return Err(DaemonError::Dir {
                    field,
                    path: d.display().to_string(),
                });
            }
        }
    }
    for (field, d) in [
        ("run_dir", Some(&cfg.run_dir)),
        ("state_dir", cfg.state_dir.as_ref()),
    ] {
        if let Some(d) = d {
            if d.exists() && !d.is_dir() {
                return Err(DaemonError::Dir {
                    field,
                    path: d.display().to_string(),
                });
            }
        }
    }
    let state = crate::persist::state_path(cfg);
    match crate::persist::load(&state) {
        Ok(_) => {}
        Err(e @ crate::persist::PersistError::Io { .. }) => return Err(DaemonError::State(e)),
        Err(e) => notes_early.push(format!(
            "note: {e}: hostd will set it aside and start without it"
        )),
    }
    for vc in &cfg.vms {
        let inv = vc.inventory();
        crate::plan::plan(cfg, &inv)
            .await
            .map_err(|e| DaemonError::Vm(inv.name.clone(), e.to_string()))?;
    }
    let mut notes = notes_early;
    let qemu_vms = cfg
        .vms
        .iter()
        .any(|v| matches!(v.spec, proto::VmBackendSpec::Qemu { .. }));
    if (qemu_vms || !cfg.templates.is_empty()) && !on_path(&cfg.qemu_binary) {
        notes.push(format!(
            "note: qemu_binary {:?} is not on the PATH: QEMU VMs cannot start",
            cfg.qemu_binary
        ));
    }
    if !cfg.run_dir.exists() {
        notes.push(format!(
            "note: run_dir {} does not exist yet (created when a QEMU VM starts)",
            cfg.run_dir.display()
        ));
    }
    Ok(notes)
}

fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// A short description for people (`check-config`). Never a token.
pub fn summary(l: &Loaded) -> Vec<String> {
    let c = &l.cfg;
    let on_off = |b: bool| if b { "on" } else { "off" };
    let qemu = c
        .vms
        .iter()
        .filter(|v| matches!(v.spec, proto::VmBackendSpec::Qemu { .. }))
        .count();
    let mut v = vec![
        format!("host id        {}", l.host_id),
        format!(
            "API            {}  TLS {}  (advertised as {})",
            c.listen,
            on_off(l.server_tls.is_some()),
            c.effective_api_url()
        ),
        format!(
            "controller     {}{}",
            match c.controller_urls() {
                u if u.is_empty() => "none (no registration, no reports)".to_string(),
                u if u.len() == 1 => u[0].clone(),
                u => format!("{} (fail over in this order)", u.join(", ")),
            },
            if l.client_tls.is_some() {
                "  (https:// peers verified against ca_file)"
            } else {
                ""
            }
        ),
        "own token      set (presented to the controller)".to_string(),
        format!(
            "API token      {}",
            if l.controller_token.is_some() {
                "the controller's (controller_token_file)"
            } else {
                "none: the API refuses every call but /healthz"
            }
        ),
        format!(
            "templates      {}{}",
            c.templates.len(),
            if c.templates.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    c.templates.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        ),
        format!(
            "VMs            {} ({qemu} qemu, {} netns)",
            c.vms.len(),
            c.vms.len() - qemu
        ),
        format!(
            "directories    run_dir {}, image_dir {}, scenario_dir {}",
            c.run_dir.display(),
            c.image_dir
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into()),
            c.scenario_dir
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into())
        ),
        format!("reports        every {} s", c.interval_s),
        format!(
            "state file     {} (VMs and commands survive a restart)",
            crate::persist::state_path(c).display()
        ),
    ];
    if l.server_tls.is_none() && !c.listen.ip().is_loopback() {
        v.push("warning: the API listens beyond loopback without TLS: the controller's token crosses the network in clear".into());
    }
    if c.controller_urls()
        .iter()
        .any(|u| u.starts_with("https://"))
        && l.client_tls.is_none()
    {
        v.push("warning: an https:// controller needs ca_file".into());
    }
    v
}

/// Re-reads the configuration on SIGHUP.
pub type Reloader = Box<dyn Fn() -> Result<Config, DaemonError> + Send + Sync>;

/// Settings a running hostd applies on SIGHUP: its token files (both
/// re-read, also when only their contents changed). Everything else needs
/// a restart.
pub const RELOADABLE: &[&str] = &["token_file", "controller_token_file"];

/// The restart-only files a configuration names (their contents count).
fn file_fingerprints(cfg: &Config) -> shoal_common::confdiff::Fingerprints {
    shoal_common::confdiff::fingerprints([
        ("tls_cert_file", cfg.tls_cert_file.as_deref()),
        ("tls_key_file", cfg.tls_key_file.as_deref()),
        ("ca_file", cfg.ca_file.as_deref()),
    ])
}

/// The fields of `new` that differ from the running `old` and need a
/// restart (changed values; TLS files with other contents).
pub fn restart_only_changes(
    old: &Config,
    running_files: &shoal_common::confdiff::Fingerprints,
    new: &Config,
) -> Vec<String> {
    let mut out =
        shoal_common::confdiff::changed_fields(old, new).unwrap_or_else(|e| vec![e.to_string()]);
    for f in shoal_common::confdiff::changed_files(running_files, &file_fingerprints(new)) {
        out.push(format!("{f} (file contents)"));
    }
    out.retain(|f| !RELOADABLE.contains(&f.as_str()));
    out.sort();
    out.dedup();
    out
}

/// SIGHUP: re-reads and checks the configuration and its files; puts the
/// re-read tokens in force and names every other changed field as needing
/// a restart. An invalid configuration (or token file) is refused and the
/// running one stays.
fn reload(h: &Hostd, reloader: &Reloader, running_files: &shoal_common::confdiff::Fingerprints) {
    tracing::info!("SIGHUP: re-reading the configuration and token files");
    let loaded = match reloader().and_then(load) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("SIGHUP: configuration refused, the running one stays: {e}");
            return;
        }
    };
    let mut restart = restart_only_changes(&h.cfg, running_files, &loaded.cfg);
    if loaded.host_id != h.host_id && !restart.iter().any(|f| f == "host_id") {
        restart.push("host_id".into());
    }
    for f in &restart {
        tracing::warn!("SIGHUP: {f} changed; restart to apply");
    }
    let controller = loaded.controller_token.is_some();
    h.set_tokens(loaded.token, loaded.controller_token);
    tracing::info!(
        "configuration reloaded (own token re-read, controller token: {}, restart needed for: {})",
        if controller { "set" } else { "none" },
        if restart.is_empty() {
            "nothing".to_string()
        } else {
            restart.join(", ")
        }
    );
}

/// Reads the state file back ([`crate::persist`]): `Ok(None)` when there
/// is none or it is not usable (set aside, logged); an error when it
/// exists but cannot be read.
fn read_state(h: &Hostd) -> Result<Option<crate::persist::StateFile>, DaemonError> {
    use crate::persist::{self, PersistError};
    let Some(path) = &h.state_path else {
        return Ok(None);
    };
    match persist::load(path) {
        Ok(None) => Ok(None),
        Ok(Some(sf)) => {
            let (sf, notes) = persist::sanitize(sf, &h.cfg, &h.host_id);
            for n in notes {
                tracing::warn!("{n}");
            }
            Ok(Some(sf))
        }
        Err(e @ PersistError::Io { .. }) => Err(DaemonError::State(e)),
        Err(e) => {
            let aside = persist::set_aside(path);
            tracing::error!(error = %e, set_aside = ?aside, "state file unusable: starting without it (live QEMUs are still found by their pid files)");
            Ok(None)
        }
    }
}

/// Restores what the previous hostd knew and starts the rest, returning
/// the commands that were not finished (to resolve with
/// [`crate::commands::resume`] once the API serves):
///
/// - commands and the configured VMs that migrated away come back from the
///   state file;
/// - each QEMU VM of the state file whose QEMU still runs (same pid and
///   start time, QEMU's command line for this VM) is re-adopted over QMP;
///   one whose QEMU ended is dropped (logged);
/// - namespace VMs that migrated in are loaded again;
/// - configured VMs not on the table and not departed are started, after
///   looking for a live QEMU of theirs by pid file (never a second QEMU of a
///   VM, never the sockets of a live one).
pub async fn restore_and_start(h: &Arc<Hostd>) -> Result<Vec<proto::CommandStatus>, DaemonError> {
    use crate::persist::Origin;
    let saved = read_state(h)?;
    let mut pending = Vec::new();
    let mut hold = std::collections::BTreeSet::new();
    if let Some(sf) = saved {
        {
            let mut t = lock(&h.commands);
            for c in sf.commands {
                if !c.state.is_final() {
                    pending.push(c.clone());
                }
                t.restore(c);
            }
        }
        *lock(&h.departed) = sf.departed;
        for rec in sf.vms {
            let name = rec.inventory.name.clone();
            let busy = pending
                .iter()
                .find(|c| c.command.vm() == name)
                .map(|c| c.id.clone());
            let runtime = match rec.inventory.spec.kind() {
                proto::BackendKind::Qemu => {
                    match crate::qemu::adopt(&h.cfg, &name, rec.process).await {
                        Ok(Some(rt)) => Some(Box::new(rt) as Box<dyn crate::vm_runtime::VmRuntime>),
                        Ok(None) => {
                            tracing::warn!(vm = %name, pid = ?rec.process.map(|p| p.pid), "the VM's QEMU ended while hostd was down: dropped");
                            if busy.is_some() {
                                hold.insert(name.clone());
                            }
                            None
                        }
                        Err(e) => return Err(DaemonError::Vm(name, e)),
                    }
                }
                proto::BackendKind::Netns if rec.origin == Origin::MigratedIn => {
                    let loaded = match crate::plan::plan(&h.cfg, &rec.inventory).await {
                        Ok(plan) => {
                            crate::commands::backend(proto::BackendKind::Netns)
                                .start(&h.cfg, &rec.inventory, plan)
                                .await
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    match loaded {
                        Ok(rt) => Some(rt),
                        Err(e) => {
                            tracing::warn!(vm = %name, error = %e, "a VM that migrated in cannot be loaded again: dropped");
                            None
                        }
                    }
                }
                // A configured namespace VM is loaded from the configuration.
                proto::BackendKind::Netns => None,
            };
            let Some(runtime) = runtime else { continue };
            // A migration state without its command (written just before
            // the command finished) is not left hanging.
            let state = match (rec.state, &busy) {
                (VmState::MigratingOut, None) => VmState::Running,
                (VmState::Incoming, None) => {
                    tracing::warn!(vm = %name, "an incoming VM without its command: reported failed");
                    VmState::Failed
                }
                (s, _) => s,
            };
            let vm = Vm::new(rec.inventory, runtime, state);
            {
                let mut s = lock(&vm.shared);
                s.migrated_in = rec.origin == Origin::MigratedIn;
                s.vf_device = rec.vf_device;
                s.busy = busy;
            }
            tracing::info!(vm = %name, ?state, "VM restored from the state file");
            lock(&h.vms).insert(name, Arc::new(vm));
        }
    }
    for vc in &h.cfg.vms {
        if h.vm(&vc.name).is_some() {
            continue;
        }
        if hold.contains(&vc.name) {
            tracing::warn!(vm = %vc.name, "not started: its QEMU ended during a migration that hostd resolves now");
            continue;
        }
        if lock(&h.departed).contains(&vc.name) {
            tracing::info!(vm = %vc.name, "not started: it migrated away");
            continue;
        }
        let inv = vc.inventory();
        if matches!(inv.spec, proto::VmBackendSpec::Qemu { .. }) {
            match crate::qemu::adopt(&h.cfg, &inv.name, None).await {
                Ok(Some(rt)) => {
                    h.add_vm(Arc::new(Vm::new(inv, Box::new(rt), VmState::Running)));
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(DaemonError::Vm(inv.name, e)),
            }
        }
        start_vm(h, inv).await?;
    }
    h.inventory_changed();
    Ok(pending)
}

/// Starts every configured VM. A QEMU that fails to start is an error.
pub async fn start_vms(h: &Arc<Hostd>) -> Result<(), DaemonError> {
    for vc in &h.cfg.vms {
        start_vm(h, vc.inventory()).await?;
    }
    Ok(())
}

/// Starts configured VM `inv`.
async fn start_vm(h: &Arc<Hostd>, inv: proto::VmInventory) -> Result<(), DaemonError> {
    {
        let plan = crate::plan::plan(&h.cfg, &inv)
            .await
            .map_err(|e| DaemonError::Vm(inv.name.clone(), e.to_string()))?;
        let rt = crate::commands::backend(inv.spec.kind())
            .start(&h.cfg, &inv, plan)
            .await
            .map_err(|e| DaemonError::Vm(inv.name.clone(), e))?;
        tracing::info!(vm = %inv.name, backend = ?inv.spec.kind(), "VM ready");
        h.add_vm(Arc::new(Vm::new(inv, rt, VmState::Running)));
    }
    Ok(())
}

/// Datapath id of `bridge` from `ovs-vsctl get bridge B datapath_id`.
pub async fn bridge_dpid(bridge: &str) -> Option<u64> {
    let out = crate::sys::run_cmd(
        "ovs-vsctl",
        &["--timeout=5", "get", "bridge", bridge, "datapath_id"],
        Duration::from_secs(6),
    )
    .await
    .map_err(|e| tracing::warn!(bridge, error = %e, "datapath id"))
    .ok()?;
    u64::from_str_radix(out.stdout.trim().trim_matches('"'), 16).ok()
}

/// The registration body for the current inventory.
pub async fn registration(h: &Hostd, cores: u32, memory_mb: u64) -> Registration {
    let cfg = &h.cfg;
    let nic_bps = cfg.nic_bps.unwrap_or_else(|| {
        cfg.uplink
            .as_ref()
            .and_then(|u| {
                std::fs::read_to_string(cfg.sys_root.join("class/net").join(u).join("speed")).ok()
            })
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|s| *s > 0)
            .map(|mbit| mbit as u64 * 1_000_000)
            .unwrap_or(1_000_000_000)
    });
    let vf_count = cfg.vf_count.unwrap_or_else(|| {
        cfg.sriov_pf
            .as_ref()
            .and_then(|pf| crate::sriov::total_vfs(&cfg.sys_root, pf).ok())
            .unwrap_or(0)
    });
    let bridge = match &cfg.bridge {
        Some(b) => {
            let dpid = match cfg.datapath_id {
                Some(d) => Some(d),
                None => bridge_dpid(b).await,
            };
            dpid.map(|datapath_id| BridgeAttachment {
                name: b.clone(),
                datapath_id,
            })
        }
        None => None,
    };
    let vms = h
        .all_vms()
        .iter()
        .filter(|v| lock(&v.shared).state != VmState::Incoming)
        .map(|v| v.status().inventory)
        .collect();
    Registration {
        host_id: h.host_id.clone(),
        api_url: cfg.effective_api_url(),
        dom0_addr: cfg
            .dom0_addr
            .clone()
            .unwrap_or_else(|| cfg.listen.ip().to_string()),
        cores,
        memory_mb,
        nic: cfg.uplink.clone().unwrap_or_default(),
        nic_bps,
        vf_count,
        bridge,
        interval_s: cfg.interval_s,
        vms,
        hostd_version: env!("CARGO_PKG_VERSION").to_string(),
        domain: cfg.domain.clone(),
    }
}

/// Testbeds: host CPU and memory as the sum over the VMs (several
/// "hypervisors" share one machine, so procfs says nothing about one).
pub fn vm_sum_metrics(
    host: &mut shoal_common::proto::HostMetrics,
    vms: &[shoal_common::proto::VmMetrics],
    cores: Option<u32>,
    memory_mb: Option<u64>,
) {
    let cores = f64::from(cores.unwrap_or(1).max(1));
    // A VM still arriving does not run here yet (its source counts it).
    let here = || {
        vms.iter()
            .filter(|v| v.state != shoal_common::proto::VmState::Incoming)
    };
    let cpu: f64 = here().map(|v| v.cpu_cores).sum();
    host.cpu_util = (cpu / cores).clamp(0.0, 1.0);
    host.mem_used_mb = here().map(|v| v.used_memory_mb).sum();
    if let Some(m) = memory_mb {
        host.mem_total_mb = m;
    }
}

/// Samples host and VMs every interval and publishes the report.
pub async fn sensor_loop(h: Arc<Hostd>, mut host: HostSensor, tx: watch::Sender<Option<Report>>) {
    let period = Duration::from_secs_f64(h.cfg.interval_s);
    let mut vms = VmSensor::new();
    let mut seq = 0u64;
    let mut last = Instant::now();
    // Prime the counters so that the first report covers a whole interval.
    let prime = match &h.cfg.uplink_netns {
        Some(ns) => crate::sys::read_in_netns(ns, "net/dev").await.ok(),
        None => None,
    };
    if let Err(e) = host.sample_with(prime.as_deref()) {
        tracing::warn!(error = %e, "host sensor");
    }
    for vm in h.all_vms() {
        vms.sample(
            &vm,
            &h.cfg.proc_root,
            host_net_dev(&h.cfg.proc_root).as_ref(),
        )
        .await;
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let net_dev = match &h.cfg.uplink_netns {
            Some(ns) => match crate::sys::read_in_netns(ns, "net/dev").await {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(netns = %ns, error = %e, "cannot read the uplink's counters");
                    None
                }
            },
            None => None,
        };
        let host_m = match host.sample_with(net_dev.as_deref()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "host sensor");
                Default::default()
            }
        };
        let all = h.all_vms();
        let net = host_net_dev(&h.cfg.proc_root);
        let mut ms = Vec::with_capacity(all.len());
        for vm in &all {
            let m = vms.sample(vm, &h.cfg.proc_root, net.as_ref()).await;
            remember(vm, &m);
            if m.state == VmState::Failed {
                let mut s = lock(&vm.shared);
                if s.state == VmState::Running {
                    tracing::warn!(vm = %vm.name, "VM failed");
                    s.state = VmState::Failed;
                }
            }
            ms.push(m);
        }
        vms.retain(&all.iter().map(|v| v.name.clone()).collect::<Vec<_>>());
        let mut host_m = host_m;
        if h.cfg.host_metrics == crate::config::HostMetricsSource::Vms {
            vm_sum_metrics(&mut host_m, &ms, h.cfg.cores, h.cfg.memory_mb);
        }
        seq += 1;
        let report = Report {
            host_id: h.host_id.clone(),
            seq,
            at_unix_ms: crate::sys::unix_ms(),
            interval_s: now.duration_since(last).as_secs_f64(),
            host: host_m,
            vms: ms,
            events: Vec::new(),
        };
        last = now;
        h.counters.sensed(now.elapsed());
        tracing::debug!(
            seq,
            vms = report.vms.len(),
            cpu = report.host.cpu_util,
            "report ready"
        );
        let _ = tx.send(Some(report));
    }
}

/// Measures each running QEMU VM's dirty rate every `dirty_rate_period_s`.
pub async fn dirty_rate_loop(h: Arc<Hostd>) {
    let period = h.cfg.dirty_rate_period_s;
    if period <= 0.0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(period));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for vm in h.all_vms() {
            let Some(rt) = vm.runtime.downcast::<QemuRuntime>() else {
                continue;
            };
            {
                let s = lock(&vm.shared);
                if s.state != VmState::Running || s.busy.is_some() {
                    continue;
                }
            }
            match crate::qemu::measure_dirty_rate(&rt.qmp, h.cfg.dirty_rate_calc_s).await {
                Ok(r) => lock(&vm.shared).dirty_rate_mbps = Some(r),
                Err(e) => tracing::debug!(vm = %vm.name, error = %e, "dirty rate"),
            }
        }
    }
}

/// Registers with the controller and sends every report, retrying with
/// backoff and jitter; never gives up, never crashes. With several
/// controller URLs (the nodes of a cluster), a controller that does not
/// answer or answers `5xx` (a cluster node that is not acting says `503`)
/// is left for the next one at once, where the daemon registers again;
/// only when every URL failed in a row does it back off.
pub async fn reporter_loop(
    h: Arc<Hostd>,
    controllers: Vec<String>,
    mut rx: watch::Receiver<Option<Report>>,
    cores: u32,
    memory_mb: u64,
) {
    if controllers.is_empty() {
        return;
    }
    let n = controllers.len();
    let mut cur = 0usize;
    let mut failures = 0usize;
    let urls = |i: usize| {
        let base = controllers[i].trim_end_matches('/');
        (
            format!("{base}{}", proto::host_path(&h.host_id)),
            format!("{base}{}", proto::report_path(&h.host_id)),
        )
    };
    let (mut reg_url, mut rep_url) = urls(cur);
    let mut registered_gen = 0u64;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut pending_register = true;
    // After a failure: the next controller at once while some are left
    // untried, else a backoff pause.
    macro_rules! failed {
        ($what:expr, $detail:expr) => {{
            failures += 1;
            if n > 1 {
                h.counters.failovers.fetch_add(1, Ordering::Relaxed);
                let next = (cur + 1) % n;
                tracing::warn!(from = %controllers[cur], to = %controllers[next], reason = %$detail, "{}: failing over to the next controller", $what);
                cur = next;
                (reg_url, rep_url) = urls(cur);
                pending_register = true;
            }
            if failures % n == 0 {
                let d = backoff.next_delay();
                tracing::warn!(url = %controllers[cur], reason = %$detail, retry_in = ?d, "{}", $what);
                tokio::time::sleep(d).await;
            }
        }};
    }
    loop {
        let gen = h.inventory_gen.load(Ordering::SeqCst);
        if pending_register || gen != registered_gen {
            let body = registration(&h, cores, memory_mb).await;
            let json = serde_json::to_vec(&body).unwrap_or_default();
            let token = h.own_token();
            match h
                .http
                .send(Method::PUT, &reg_url, Some(token.expose()), Some(json))
                .await
            {
                Ok((code, _)) if (200..300).contains(&code) => {
                    tracing::info!(url = %reg_url, vms = body.vms.len(), "registered with the controller");
                    h.counters.registrations.fetch_add(1, Ordering::Relaxed);
                    registered_gen = gen;
                    pending_register = false;
                    failures = 0;
                    backoff.reset();
                }
                Ok((code, b)) if code >= 500 => {
                    failed!(
                        "registration refused",
                        format!("{code} {}", String::from_utf8_lossy(&b))
                    );
                    continue;
                }
                Ok((code, b)) => {
                    let d = backoff.next_delay();
                    tracing::warn!(url = %reg_url, code, body = %String::from_utf8_lossy(&b), retry_in = ?d, "registration refused");
                    tokio::time::sleep(d).await;
                    continue;
                }
                Err(e) => {
                    failed!("controller unreachable", e);
                    continue;
                }
            }
        }
        // The latest report (wait for a new one if it was sent already).
        let report = {
            let cur = rx.borrow_and_update().clone();
            match cur {
                Some(r) => r,
                None => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
            }
        };
        let mut report = report;
        report.events = lock(&h.events).pending();
        let max_seq = report.events.iter().map(|e| e.seq).max();
        let json = serde_json::to_vec(&report).unwrap_or_default();
        let token = h.own_token();
        match h
            .http
            .send(Method::POST, &rep_url, Some(token.expose()), Some(json))
            .await
        {
            Ok((code, _)) if (200..300).contains(&code) => {
                if let Some(s) = max_seq {
                    lock(&h.events).ack(s);
                }
                failures = 0;
                backoff.reset();
                h.counters.reports_sent.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(seq = report.seq, "report sent");
                // Mark as sent; wait for the next one.
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Ok((404, _)) => {
                tracing::info!("controller does not know this host: registering again");
                pending_register = true;
            }
            Ok((code, b)) if code >= 500 => {
                h.counters.reports_failed.fetch_add(1, Ordering::Relaxed);
                failed!(
                    "report refused",
                    format!("{code} {}", String::from_utf8_lossy(&b))
                );
            }
            Ok((code, b)) => {
                let d = backoff.next_delay();
                h.counters.reports_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %rep_url, code, body = %String::from_utf8_lossy(&b), retry_in = ?d, "report refused");
                tokio::time::sleep(d).await;
            }
            Err(e) => {
                h.counters.reports_failed.fetch_add(1, Ordering::Relaxed);
                failed!("report not delivered", e);
            }
        }
    }
}

/// Runs the daemon until SIGINT/SIGTERM; SIGHUP re-reads the token files
/// (and names what else changed as needing a restart). VMs keep running
/// after it exits.
pub async fn run(loaded: Loaded, reloader: Reloader) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    // First: SIGHUP's default action would end the daemon.
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let Loaded {
        cfg,
        host_id,
        token,
        controller_token,
        server_tls,
        client_tls,
    } = loaded;
    if controller_token.is_none() {
        tracing::warn!("no controller_token_file: the API refuses every call but /healthz");
    }
    let running_files = file_fingerprints(&cfg);
    let mut hostd = Hostd::new(cfg, host_id, token, controller_token);
    hostd.state_path = Some(crate::persist::state_path(&hostd.cfg));
    if let Some(t) = client_tls {
        hostd.http = shoal_common::http::HttpClient::with_tls(
            std::time::Duration::from_secs_f64(hostd.cfg.http_timeout_s),
            Some(t),
        );
    }
    let h = Arc::new(hostd);
    let host = HostSensor::new(h.cfg.proc_root.clone(), h.cfg.uplink.clone());
    let (cores, memory_mb) = host.capacity()?;
    let cores = h.cfg.cores.unwrap_or(cores);
    let memory_mb = h.cfg.memory_mb.unwrap_or(memory_mb);
    let listener = tokio::net::TcpListener::bind(h.cfg.listen)
        .await
        .map_err(|e| DaemonError::Listen(h.cfg.listen.to_string(), e))?;
    let pending = restore_and_start(&h).await?;
    tracing::info!(host = %h.host_id, listen = %h.cfg.listen, vms = h.all_vms().len(), "shoal-hostd running");
    let mut api = match server_tls {
        Some(tls) => tokio::spawn(crate::api::serve_tls(h.clone(), listener, tls)),
        None => tokio::spawn(crate::api::serve(h.clone(), listener)),
    };
    for c in pending {
        crate::commands::resume(h.clone(), c);
    }
    let (tx, rx) = watch::channel(None);
    tokio::spawn(sensor_loop(h.clone(), host, tx));
    tokio::spawn(dirty_rate_loop(h.clone()));
    let controllers = h.cfg.controller_urls();
    if controllers.is_empty() {
        tracing::warn!("no controller configured: not registering or reporting");
    } else {
        tokio::spawn(reporter_loop(h.clone(), controllers, rx, cores, memory_mb));
    }
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&h, &reloader, &running_files),
            _ = int.recv() => { tracing::info!("interrupted"); break }
            _ = term.recv() => { tracing::info!("terminated"); break }
            r = &mut api => { tracing::error!(result = ?r, "API server stopped"); break }
        }
    }
    Ok(())
}

#[cfg(test)]
mod vm_sum_tests {
    use super::vm_sum_metrics;
    use shoal_common::proto::{BackendKind, HostMetrics, VmMetrics, VmState};

    fn vm(cpu_cores: f64, used: u64) -> VmMetrics {
        VmMetrics {
            name: "v".into(),
            backend: BackendKind::Netns,
            state: VmState::Running,
            cpu_cores,
            cpu_util: cpu_cores,
            gotten_ms: None,
            wait_ms: None,
            blocked_ms: None,
            memory_mb: 512,
            max_memory_mb: 512,
            used_memory_mb: used,
            tx_bytes_per_s: 0.0,
            rx_bytes_per_s: 0.0,
            tx_packets_per_s: 0.0,
            rx_packets_per_s: 0.0,
            dirty_rate_mbps: None,
            vf_attached: false,
        }
    }

    #[test]
    fn host_numbers_from_the_vms() {
        let mut h = HostMetrics {
            cpu_util: 0.05,
            mem_used_mb: 9000,
            mem_total_mb: 24000,
            nic_tx_bytes_per_s: 7.0,
            ..Default::default()
        };
        vm_sum_metrics(&mut h, &[vm(1.5, 300), vm(1.0, 200)], Some(4), Some(2048));
        assert!((h.cpu_util - 0.625).abs() < 1e-12);
        assert_eq!(h.mem_used_mb, 500);
        assert_eq!(h.mem_total_mb, 2048);
        assert_eq!(h.nic_tx_bytes_per_s, 7.0, "network stays real");
        vm_sum_metrics(&mut h, &[vm(9.0, 0)], Some(4), None);
        assert_eq!(h.cpu_util, 1.0);
        let mut incoming = vm(2.0, 100);
        incoming.state = VmState::Incoming;
        vm_sum_metrics(&mut h, &[vm(1.0, 50), incoming], Some(4), None);
        assert!(
            (h.cpu_util - 0.25).abs() < 1e-12,
            "an arriving VM is not counted"
        );
        assert_eq!(h.mem_used_mb, 50);
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private(path: &std::path::Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// The configuration shipped for /etc/shoal parses and validates (its
    /// files are the packaging test's business).
    #[test]
    fn packaged_config_is_valid() {
        let c = Config::parse(include_str!("../packaging/hostd.toml"), "hostd.toml").unwrap();
        c.validate().unwrap();
        assert!(c.tls_cert_file.is_some() && c.ca_file.is_some());
        assert!(c.controller_token_file.is_some());
        assert!(c
            .controller
            .as_deref()
            .is_some_and(|u| u.starts_with("https://")));
        assert_eq!(c.effective_api_url(), "https://10.0.0.1:7070");
    }

    #[test]
    fn load_names_the_setting_and_summary_shows_no_token() {
        let dir = std::env::temp_dir().join(format!("shoal-hostd-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let own = dir.join("own.token");
        let ctl = dir.join("ctl.token");
        private(&own, "own-token-0123456789");
        private(&ctl, "controller-token-0123456789");
        let mut c = Config {
            host_id: Some("h1".into()),
            ..Config::default()
        };
        let e = load(c.clone()).err().expect("no token_file").to_string();
        assert!(e.contains("token_file"), "{e}");
        c.token_file = Some(own.clone());
        c.controller_token_file = Some(ctl.clone());
        let l = load(c.clone()).unwrap();
        let text = summary(&l).join("\n");
        assert!(text.contains("host id        h1"), "{text}");
        assert!(text.contains("API token      the controller's"), "{text}");
        assert!(!text.contains("0123456789"), "a token in the summary");
        std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load(c.clone()).err().expect("0640").to_string();
        assert!(
            e.contains("controller_token_file") && e.contains("group or others"),
            "{e}"
        );
        std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o600)).unwrap();
        c.tls_cert_file = Some(dir.join("missing.pem"));
        let e = load(c.clone()).err().expect("lone cert").to_string();
        assert!(e.contains("tls_key_file"), "{e}");
        c.tls_key_file = Some(dir.join("missing.key"));
        let e = load(c).err().expect("missing cert").to_string();
        assert!(e.contains("tls_cert_file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reload_names_restart_only_settings() {
        let dir = std::env::temp_dir().join(format!("shoal-hostd-rel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "one").unwrap();
        let old = Config {
            ca_file: Some(ca.clone()),
            ..Config::default()
        };
        let files = file_fingerprints(&old);
        let mut new = old.clone();
        assert!(restart_only_changes(&old, &files, &new).is_empty());
        new.token_file = Some(dir.join("t"));
        new.controller_token_file = Some(dir.join("c"));
        assert!(restart_only_changes(&old, &files, &new).is_empty());
        new.interval_s = 3.0;
        new.listen = "127.0.0.1:1".parse().unwrap();
        std::fs::write(&ca, "two").unwrap();
        assert_eq!(
            restart_only_changes(&old, &files, &new),
            vec!["ca_file (file contents)", "interval_s", "listen"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
