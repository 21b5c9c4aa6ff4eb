//! QEMU backend: launching VMs, live migration over QMP (both ends), VF
//! stand-ins (hot-plugged emulated NICs) and ballooning.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};
use shoal_common::proto::{
    self, BackendKind, CommandState, CommandStatus, MigrationProgress, MigrationResult,
    MigrationSpec, VmInventory, VmState,
};
use tokio::sync::watch;

use crate::backend::{Backend, BoxFuture};
use crate::config::Config;
use crate::config::VfMode;
use crate::persist::{self, ProcessId};
use crate::plan::VmPlan;
use crate::qmp::{Qmp, QmpError};
use crate::state::{lock, Hostd, Vm};
use crate::vm_runtime::VmRuntime;

/// How long QEMU may take to open its QMP socket.
const QMP_START_WAIT: Duration = Duration::from_secs(15);
/// Timeout of one QMP command.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll period of `query-migrate` / `query-status`.
const POLL: Duration = Duration::from_millis(200);

/// Host-local files of one QEMU VM (under `run_dir`).
#[derive(Debug, Clone)]
pub struct QemuPaths {
    /// QMP socket.
    pub qmp: PathBuf,
    /// Serial console socket (write lines here to talk to the guest).
    pub serial: PathBuf,
    /// Everything the guest printed on its serial console.
    pub console_log: PathBuf,
    /// QEMU's stderr.
    pub stderr_log: PathBuf,
    /// QEMU's pid file.
    pub pidfile: PathBuf,
}

impl QemuPaths {
    /// The files of VM `name` under `run_dir`.
    pub fn new(run_dir: &std::path::Path, name: &str) -> Self {
        QemuPaths {
            qmp: run_dir.join(format!("{name}.qmp")),
            serial: run_dir.join(format!("{name}.serial")),
            console_log: run_dir.join(format!("{name}.console.log")),
            stderr_log: run_dir.join(format!("{name}.stderr.log")),
            pidfile: run_dir.join(format!("{name}.pid")),
        }
    }
}

/// A running QEMU process and its QMP connection.
pub struct QemuRuntime {
    /// Process id.
    pub pid: u32,
    /// Pid and start time (None when procfs did not say).
    pub process: Option<ProcessId>,
    /// QMP connection.
    pub qmp: Arc<Qmp>,
    /// Its files.
    pub paths: QemuPaths,
    proc_root: PathBuf,
    exited: watch::Receiver<Option<String>>,
}

impl VmRuntime for QemuRuntime {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn process(&self) -> Option<ProcessId> {
        self.process
    }

    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }
}

/// The machine arguments of a QEMU plan.
fn machine_args(plan: VmPlan) -> Result<Vec<String>, String> {
    match plan {
        VmPlan::Qemu { machine_args } => Ok(machine_args),
        VmPlan::Netns { .. } => Err("internal: not a QEMU plan".into()),
    }
}

fn qemu_of(vm: &Vm) -> Result<&QemuRuntime, String> {
    vm.runtime
        .downcast::<QemuRuntime>()
        .ok_or_else(|| "internal: not a QEMU runtime".to_string())
}

/// The QEMU backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct QemuBackend;

impl Backend for QemuBackend {
    fn start<'a>(
        &'a self,
        cfg: &'a Config,
        inv: &'a VmInventory,
        plan: VmPlan,
    ) -> BoxFuture<'a, Result<Box<dyn VmRuntime>, String>> {
        Box::pin(async move {
            launch(cfg, inv, &machine_args(plan)?, None)
                .await
                .map(|r| Box::new(r) as Box<dyn VmRuntime>)
        })
    }

    fn prepare_incoming<'a>(
        &'a self,
        hostd: &'a Arc<Hostd>,
        inv: &'a VmInventory,
        plan: VmPlan,
        spec: &'a MigrationSpec,
        cmd_id: &'a str,
    ) -> BoxFuture<'a, Result<MigrationResult, String>> {
        Box::pin(
            async move { prepare_incoming(hostd, inv, &machine_args(plan)?, spec, cmd_id).await },
        )
    }

    fn migrate_out<'a>(
        &'a self,
        hostd: &'a Arc<Hostd>,
        vm: &'a Arc<Vm>,
        spec: &'a MigrationSpec,
        cmd_id: &'a str,
    ) -> BoxFuture<'a, Result<MigrationResult, String>> {
        Box::pin(async move { migrate_out(hostd, vm, qemu_of(vm)?, spec, cmd_id).await })
    }

    fn resize_memory<'a>(
        &'a self,
        vm: &'a Vm,
        target_mb: u64,
    ) -> BoxFuture<'a, Result<u64, String>> {
        Box::pin(async move { balloon(&qemu_of(vm)?.qmp, target_mb).await })
    }

    fn vf_attach<'a>(
        &'a self,
        hostd: &'a Hostd,
        vm: &'a Vm,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let rt = qemu_of(vm)?;
            match hostd.cfg.vf_mode {
                VfMode::Emulated => {
                    vf_attach_emulated(&rt.qmp, &vm.name, &hostd.cfg.testbed_vf_driver).await
                }
                VfMode::Sriov => {
                    let pf = hostd
                        .cfg
                        .sriov_pf
                        .as_deref()
                        .ok_or_else(|| "no sriov_pf configured".to_string())?;
                    let used: Vec<u32> = hostd
                        .all_vms()
                        .iter()
                        .filter_map(|v| v.snapshot().vf_device)
                        .filter_map(|d| crate::sriov::vf_index(&d))
                        .collect();
                    let total = crate::sriov::total_vfs(&hostd.cfg.sys_root, pf)?;
                    let idx = (0..total)
                        .find(|i| !used.contains(i))
                        .ok_or_else(|| format!("all {total} VFs of {pf} are in use"))?;
                    let mac = vm.snapshot().inv.mac;
                    crate::sriov::attach(&rt.qmp, &hostd.cfg.sys_root, pf, idx, &vm.name, &mac)
                        .await
                }
            }
        })
    }

    fn vf_detach<'a>(&'a self, vm: &'a Vm, _device: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let qom_id = format!("shdvf-{}", vm.name);
            device_del(&qemu_of(vm)?.qmp, &qom_id, Duration::from_secs(10)).await
        })
    }
}

impl QemuRuntime {
    /// Why the process ended, if it did.
    pub fn exited(&self) -> Option<String> {
        self.exited.borrow().clone()
    }

    /// Waits up to `timeout` for the process to end; true if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        let mut rx = self.exited.clone();
        tokio::time::timeout(timeout, rx.wait_for(|v| v.is_some()))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
    }

    /// Asks QEMU to quit, then kills it if it does not exit within 5 s.
    pub async fn quit(&self) {
        if self.exited().is_some() {
            return;
        }
        if let Err(e) = self.qmp.execute("quit", None).await {
            tracing::debug!(error = %e, "quit");
        }
        if !self.wait_exit(Duration::from_secs(5)).await {
            if self
                .process
                .is_some_and(|p| !persist::alive(&self.proc_root, p))
            {
                return;
            }
            tracing::warn!(pid = self.pid, "QEMU ignored quit, killing it");
            // SAFETY: kill(2) on the pid of our QEMU (its start time was
            // just checked: not a reused pid).
            unsafe {
                libc::kill(self.pid as i32, libc::SIGKILL);
            }
            self.wait_exit(Duration::from_secs(2)).await;
        }
    }
}

fn chardev_path(p: &std::path::Path) -> String {
    // QEMU option values escape ',' as ',,'.
    p.display().to_string().replace(',', ",,")
}

/// The full QEMU argument list for VM `name` on this host: the machine
/// arguments (from this host's template, see [`crate::plan`]) + the
/// host-local ones.
pub fn qemu_args(
    name: &str,
    machine_args: &[String],
    paths: &QemuPaths,
    incoming: Option<&str>,
) -> Vec<String> {
    let mut v = machine_args.to_vec();
    v.extend([
        "-name".to_string(),
        name.to_string(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", chardev_path(&paths.qmp)),
        "-chardev".into(),
        format!(
            "socket,id=shdser0,path={},server=on,wait=off,logfile={},logappend=on",
            chardev_path(&paths.serial),
            chardev_path(&paths.console_log)
        ),
        "-serial".into(),
        "chardev:shdser0".into(),
        "-monitor".into(),
        "none".into(),
        "-pidfile".into(),
        paths.pidfile.display().to_string(),
    ]);
    if let Some(addr) = incoming {
        v.push("-incoming".into());
        v.push(format!("tcp:{addr}"));
    }
    v
}

fn tail(path: &std::path::Path, n: usize) -> String {
    std::fs::read_to_string(path)
        .map(|s| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join(" | ")
        })
        .unwrap_or_default()
}

/// Starts QEMU for `inv` with `machine_args` (from its checked plan) and
/// the host-local arguments (with `-incoming tcp:ADDR` when `incoming` is
/// set), and connects to its QMP socket.
pub async fn launch(
    cfg: &Config,
    inv: &VmInventory,
    machine_args: &[String],
    incoming: Option<&str>,
) -> Result<QemuRuntime, String> {
    std::fs::create_dir_all(&cfg.run_dir)
        .map_err(|e| format!("cannot create {}: {e}", cfg.run_dir.display()))?;
    let paths = QemuPaths::new(&cfg.run_dir, &inv.name);
    // Never a second QEMU of a VM, never the sockets of a live one.
    if let Some(p) = live_qemu(cfg, &inv.name, None) {
        return Err(format!(
            "a QEMU of VM {} already runs (pid {}): not starting another one, not touching its sockets",
            inv.name, p.pid
        ));
    }
    for p in [&paths.qmp, &paths.serial] {
        let _ = std::fs::remove_file(p);
    }
    let args = qemu_args(&inv.name, machine_args, &paths, incoming);
    let stderr = std::fs::File::create(&paths.stderr_log)
        .map_err(|e| format!("cannot create {}: {e}", paths.stderr_log.display()))?;
    // A process group of its own: a signal to hostd's group (Ctrl-C in a
    // terminal, a group kill) never reaches the VMs, which outlive hostd.
    let mut child = tokio::process::Command::new(&cfg.qemu_binary)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cfg.qemu_binary))?;
    let pid = child.id().unwrap_or(0);
    let process = persist::process_start(&cfg.proc_root, pid)
        .map(|(start_ticks, _)| ProcessId { pid, start_ticks });
    let (tx, exited) = watch::channel(None);
    let name = inv.name.clone();
    tokio::spawn(async move {
        let why = match child.wait().await {
            Ok(st) => format!("QEMU exited: {st}"),
            Err(e) => format!("QEMU wait failed: {e}"),
        };
        tracing::info!(vm = %name, pid, %why, "QEMU process ended");
        let _ = tx.send(Some(why));
    });
    let mut ex = exited.clone();
    let qmp = tokio::select! {
        r = Qmp::connect_retry(&paths.qmp, QMP_START_WAIT, QMP_TIMEOUT) => r.map_err(|e| e.to_string()),
        _ = ex.wait_for(|v| v.is_some()) => Err(format!(
            "QEMU for {} exited at start: {}", inv.name, tail(&paths.stderr_log, 5)
        )),
    };
    let rt_paths = paths.clone();
    match qmp {
        Ok(q) => {
            tracing::info!(vm = %inv.name, pid, incoming = ?incoming, "QEMU started");
            Ok(QemuRuntime {
                pid,
                process,
                qmp: Arc::new(q),
                paths: rt_paths,
                proc_root: cfg.proc_root.clone(),
                exited,
            })
        }
        Err(e) => {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            Err(e)
        }
    }
}

/// The live QEMU of VM `name` under this `run_dir`, if one runs: the
/// process `known` (pid and start time from the state file) if it is still
/// the same process, else the pid in QEMU's pid file; either way only a
/// process whose command line is QEMU's for this VM (`-name NAME` and its
/// QMP socket).
pub fn live_qemu(cfg: &Config, name: &str, known: Option<ProcessId>) -> Option<ProcessId> {
    let paths = QemuPaths::new(&cfg.run_dir, name);
    let root = &cfg.proc_root;
    let candidates = known
        .into_iter()
        .chain(persist::read_pidfile(&paths.pidfile).and_then(|pid| {
            persist::process_start(root, pid).map(|(start_ticks, _)| ProcessId { pid, start_ticks })
        }));
    let mut candidates = candidates;
    candidates
        .find(|&p| persist::alive(root, p) && persist::is_qemu_of(root, p.pid, name, &paths.qmp))
}

/// Re-adopts the QEMU of VM `name` that a previous hostd started
/// ([`live_qemu`]) by connecting to its QMP socket. `Ok(None)`: no QEMU of
/// the VM runs. An error: one runs but does not answer on QMP (the caller
/// must not start another one).
pub async fn adopt(
    cfg: &Config,
    name: &str,
    known: Option<ProcessId>,
) -> Result<Option<QemuRuntime>, String> {
    let Some(p) = live_qemu(cfg, name, known) else {
        return Ok(None);
    };
    let paths = QemuPaths::new(&cfg.run_dir, name);
    let qmp = Qmp::connect(&paths.qmp, QMP_TIMEOUT).await.map_err(|e| {
        format!(
            "QEMU {} of VM {name} runs but its QMP socket {} does not answer: {e}",
            p.pid,
            paths.qmp.display()
        )
    })?;
    let (tx, exited) = watch::channel(None);
    let root = cfg.proc_root.clone();
    let vm = name.to_string();
    // Not our child: watch the process through procfs.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if tx.is_closed() {
                return;
            }
            if !persist::alive(&root, p) {
                let why = format!("QEMU {} ended", p.pid);
                tracing::info!(vm = %vm, pid = p.pid, "adopted QEMU process ended");
                let _ = tx.send(Some(why));
                return;
            }
        }
    });
    tracing::info!(vm = %name, pid = p.pid, "QEMU re-adopted");
    Ok(Some(QemuRuntime {
        pid: p.pid,
        process: Some(p),
        qmp: Arc::new(qmp),
        paths,
        proc_root: cfg.proc_root.clone(),
        exited,
    }))
}

/// What QEMU says of its run state (`query-status`).
pub async fn run_status(q: &Qmp) -> Result<String, String> {
    let v = q
        .execute("query-status", None)
        .await
        .map_err(|e| format!("query-status: {e}"))?;
    Ok(v.get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string())
}

/// What `query-migrate` says, in numbers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MigrateInfo {
    /// `status`.
    pub status: String,
    /// `ram.transferred`, bytes.
    pub transferred: u64,
    /// `ram.remaining`, bytes.
    pub remaining: u64,
    /// `ram.total`, bytes.
    pub total: u64,
    /// `ram.dirty-pages-rate × ram.page-size`, bytes/s.
    pub dirty_rate_bps: f64,
    /// `ram.dirty-sync-count`.
    pub iterations: u64,
    /// `total-time`, ms.
    pub total_time_ms: u64,
    /// `downtime`, ms (once completed).
    pub downtime_ms: u64,
    /// `setup-time`, ms.
    pub setup_time_ms: u64,
    /// Zero pages found (`ram.duplicate`, newer QEMUs `ram.zero-pages`).
    pub zero_pages: u64,
    /// `ram.page-size`, bytes.
    pub page_size: u64,
    /// `error-desc` of a failed migration.
    pub error: Option<String>,
}

/// Interprets a `query-migrate` answer (pure).
pub fn parse_query_migrate(v: &Value) -> MigrateInfo {
    let u = |o: &Value, k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
    let ram = v.get("ram").cloned().unwrap_or(Value::Null);
    let page_size = match u(&ram, "page-size") {
        0 => 4096,
        p => p,
    };
    let zero = ram
        .get("zero-pages")
        .or_else(|| ram.get("duplicate"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    MigrateInfo {
        status: v
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_string(),
        transferred: u(&ram, "transferred"),
        remaining: u(&ram, "remaining"),
        total: u(&ram, "total"),
        dirty_rate_bps: u(&ram, "dirty-pages-rate") as f64 * page_size as f64,
        iterations: u(&ram, "dirty-sync-count"),
        total_time_ms: u(v, "total-time"),
        downtime_ms: u(v, "downtime"),
        setup_time_ms: u(v, "setup-time"),
        zero_pages: zero,
        page_size,
        error: v
            .get("error-desc")
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

/// The migration result from the final `query-migrate` (pure).
pub fn migration_result(info: &MigrateInfo, max_dirty_bps: f64) -> MigrationResult {
    let busy_ms = info.total_time_ms.saturating_sub(info.setup_time_ms).max(1);
    MigrationResult {
        total_time_ms: info.total_time_ms,
        downtime_ms: info.downtime_ms,
        transferred_bytes: info.transferred,
        memory_bytes: info
            .total
            .saturating_sub(info.zero_pages.saturating_mul(info.page_size)),
        max_dirty_rate_bytes_per_s: max_dirty_bps,
        achieved_bandwidth_bytes_per_s: info.transferred as f64 / (busy_ms as f64 / 1000.0),
        iterations: info.iterations,
    }
}

/// Makes sure the VM runs (after a cancelled or failed migration).
async fn ensure_running(q: &Qmp) -> Result<(), String> {
    let st = q
        .execute("query-status", None)
        .await
        .map_err(|e| format!("query-status: {e}"))?;
    let status = st.get("status").and_then(Value::as_str).unwrap_or("");
    if status != "running" {
        q.execute("cont", None)
            .await
            .map_err(|e| format!("cont from {status}: {e}"))?;
        tracing::info!(from = status, "VM resumed on the source");
    }
    Ok(())
}

fn progress_of(info: &MigrateInfo, start: Instant) -> MigrationProgress {
    MigrationProgress {
        phase: info.status.clone(),
        transferred_bytes: info.transferred,
        remaining_bytes: info.remaining,
        total_bytes: info.total,
        dirty_rate_bytes_per_s: info.dirty_rate_bps,
        iterations: info.iterations,
        elapsed_ms: start.elapsed().as_millis() as u64,
    }
}

/// Cancels the running migration and waits until QEMU says it stopped.
async fn cancel(q: &Qmp) -> Option<MigrateInfo> {
    if let Err(e) = q.execute("migrate_cancel", None).await {
        tracing::warn!(error = %e, "migrate_cancel");
    }
    for _ in 0..50 {
        if let Ok(v) = q.execute("query-migrate", None).await {
            let info = parse_query_migrate(&v);
            if matches!(
                info.status.as_str(),
                "cancelled" | "failed" | "completed" | "none"
            ) {
                return Some(info);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Source side of a QEMU live migration (see the crate docs for the steps).
/// On error the VM keeps running here and the error says why.
pub async fn migrate_out(
    hostd: &Arc<Hostd>,
    vm: &Arc<Vm>,
    rt: &QemuRuntime,
    spec: &MigrationSpec,
    cmd_id: &str,
) -> Result<MigrationResult, String> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(spec.deadline_s);
    let q = &rt.qmp;
    let (Some(api), Some(incoming_id), Some(token)) = (
        &spec.destination_api,
        &spec.incoming_command_id,
        &spec.peer_token,
    ) else {
        return Err(
            "qemu migration needs destination_api, incoming_command_id and peer_token".into(),
        );
    };
    // The destination QEMU must listen before the source connects.
    wait_destination_ready(hostd, api, incoming_id, token, deadline).await?;
    if let Err(e) = q
        .execute(
            "migrate-set-capabilities",
            Some(json!({"capabilities": [{"capability": "events", "state": true}]})),
        )
        .await
    {
        tracing::debug!(error = %e, "migration events capability");
    }
    q.execute(
        "migrate-set-parameters",
        Some(json!({
            "max-bandwidth": spec.max_bandwidth_bytes_per_s,
            "downtime-limit": spec.downtime_limit_ms,
        })),
    )
    .await
    .map_err(|e| format!("migrate-set-parameters: {e}"))?;
    q.execute(
        "migrate",
        Some(json!({"uri": format!("tcp:{}", spec.destination_addr)})),
    )
    .await
    .map_err(|e| format!("migrate: {e}"))?;
    tracing::info!(vm = %vm.name, dest = %spec.destination_addr, bw = spec.max_bandwidth_bytes_per_s, "migration started");
    follow_out(hostd, vm, rt, spec, cmd_id, start, deadline).await
}

/// The deadline of a command created at `created_unix_ms` with
/// `deadline_s`, as an [`Instant`] (now if it has passed).
pub fn deadline_of(created_unix_ms: u64, deadline_s: f64) -> Instant {
    let end_ms = created_unix_ms.saturating_add((deadline_s.max(0.0) * 1000.0) as u64);
    let left = end_ms.saturating_sub(crate::sys::unix_ms());
    Instant::now() + Duration::from_millis(left)
}

/// Source side after a restart of hostd: the migration of command
/// `cmd_id` (created at `created_unix_ms`) was under way when the previous
/// hostd ended. QEMU is asked where it stands (`query-migrate`): a
/// migration still running is followed to its end as usual (destination
/// check, QEMU quits); one that completed is finished (the destination must
/// say it runs the VM); one that never started, failed or was cancelled
/// fails with the reason, the VM running on here.
pub async fn resume_out(
    hostd: &Arc<Hostd>,
    vm: &Arc<Vm>,
    spec: &MigrationSpec,
    cmd_id: &str,
    created_unix_ms: u64,
) -> Result<MigrationResult, String> {
    let rt = qemu_of(vm)?;
    let deadline = deadline_of(created_unix_ms, spec.deadline_s);
    let mut tries = 0;
    let v = loop {
        match rt.qmp.execute("query-migrate", None).await {
            Ok(v) => break v,
            Err(e @ QmpError::Closed(_)) => return Err(format!("source QEMU gone: {e}")),
            Err(e) if tries >= 5 => return Err(format!("hostd restarted; query-migrate: {e}")),
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %e, "query-migrate after a restart");
                tries += 1;
                tokio::time::sleep(POLL).await;
            }
        }
    };
    let info = parse_query_migrate(&v);
    tracing::info!(vm = %vm.name, command = cmd_id, status = %info.status, "resuming a migration after a restart");
    if info.status == "none" {
        let resumed = ensure_running(&rt.qmp).await;
        return Err(format!(
            "hostd restarted before the migration started; {}",
            match resumed {
                Ok(()) => "VM keeps running on the source".to_string(),
                Err(e) => format!("resuming the source failed: {e}"),
            }
        ));
    }
    follow_out(hostd, vm, rt, spec, cmd_id, Instant::now(), deadline).await
}

/// Follows a started outgoing migration to its end (see [`migrate_out`]).
async fn follow_out(
    hostd: &Arc<Hostd>,
    vm: &Arc<Vm>,
    rt: &QemuRuntime,
    spec: &MigrationSpec,
    cmd_id: &str,
    start: Instant,
    deadline: Instant,
) -> Result<MigrationResult, String> {
    let q = &rt.qmp;
    let (Some(api), Some(incoming_id), Some(token)) = (
        &spec.destination_api,
        &spec.incoming_command_id,
        &spec.peer_token,
    ) else {
        return Err(
            "qemu migration needs destination_api, incoming_command_id and peer_token".into(),
        );
    };
    let mut max_dirty = 0.0f64;
    let mut last_sent = 0u64;
    let info = loop {
        tokio::time::sleep(POLL).await;
        if Instant::now() > deadline {
            let at = cancel(q).await;
            if let Some(i) = at.as_ref().filter(|i| i.status == "completed") {
                tracing::warn!(vm = %vm.name, "migration completed while being cancelled");
                break i.clone();
            }
            ensure_running(q).await.map_err(|e| {
                format!("deadline exceeded, migration cancelled, but the VM did not resume: {e}")
            })?;
            return Err(format!(
                "deadline of {} s exceeded ({} bytes sent); migration cancelled, VM keeps running on the source",
                spec.deadline_s,
                at.map(|i| i.transferred).unwrap_or(0).max(last_sent)
            ));
        }
        let v = match q.execute("query-migrate", None).await {
            Ok(v) => v,
            Err(e @ QmpError::Closed(_)) => return Err(format!("source QEMU gone: {e}")),
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %e, "query-migrate");
                continue;
            }
        };
        let info = parse_query_migrate(&v);
        max_dirty = max_dirty.max(info.dirty_rate_bps);
        last_sent = last_sent.max(info.transferred);
        let p = progress_of(&info, start);
        hostd.update_command(cmd_id, |s| s.progress = Some(p));
        match info.status.as_str() {
            "completed" => break info,
            "failed" | "cancelled" => {
                let why = info.error.clone().unwrap_or_else(|| info.status.clone());
                let resumed = ensure_running(q).await;
                return Err(match resumed {
                    Ok(()) => format!(
                        "migration {}: {why}; VM keeps running on the source",
                        info.status
                    ),
                    Err(e) => format!(
                        "migration {}: {why}; resuming the source failed: {e}",
                        info.status
                    ),
                });
            }
            _ => {}
        }
    };
    tracing::info!(vm = %vm.name, transferred = info.transferred, total_ms = info.total_time_ms,
        downtime_ms = info.downtime_ms, "source says migration completed; waiting for the destination");

    // The source can say completed while the destination is still inmigrate:
    // wait for the destination hostd to see the VM running.
    if let Err(e) = wait_destination(hostd, api, incoming_id, token, deadline).await {
        let resumed = ensure_running(q).await;
        return Err(format!(
            "destination did not take over: {e}; {}",
            match resumed {
                Ok(()) => "VM keeps running on the source".to_string(),
                Err(r) => format!("resuming the source failed: {r}"),
            }
        ));
    }
    rt.quit().await;
    let mut result = migration_result(&info, max_dirty);
    if result.max_dirty_rate_bytes_per_s == 0.0 {
        if let Some(d) = lock(&vm.shared).dirty_rate_mbps {
            result.max_dirty_rate_bytes_per_s = d * 1048576.0;
        }
    }
    Ok(result)
}

/// The destination hostd's view of its `prepare_incoming` command.
/// `token` is the migration's one-time peer token.
async fn destination_status(
    hostd: &Hostd,
    url: &str,
    token: &str,
) -> Result<CommandStatus, String> {
    match hostd.http.send(Method::GET, url, Some(token), None).await {
        Ok((200, body)) => serde_json::from_slice::<CommandStatus>(&body)
            .map_err(|e| format!("bad answer from {url}: {e}")),
        Ok((code, body)) => Err(format!(
            "{url}: HTTP {code}: {}",
            String::from_utf8_lossy(&body)
        )),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

/// Whether the destination of migration `spec` says its `prepare_incoming`
/// succeeded (the VM runs there): asked (for up to 10 s, until its answer
/// is final) after a restart of the source's hostd found the source QEMU
/// gone.
pub async fn destination_took_over(hostd: &Hostd, spec: &MigrationSpec) -> Result<(), String> {
    let (Some(api), Some(id), Some(token)) = (
        &spec.destination_api,
        &spec.incoming_command_id,
        &spec.peer_token,
    ) else {
        return Err("hostd restarted and the source QEMU had ended; no destination to ask".into());
    };
    let url = format!("{}{}", api.trim_end_matches('/'), proto::command_path(id));
    // The destination may be restarting too, or still finishing: ask for
    // up to 10 s while it has no final answer.
    let until = Instant::now() + Duration::from_secs(10);
    let mut answer = destination_status(hostd, &url, token).await;
    while Instant::now() < until && !matches!(&answer, Ok(st) if st.state.is_final()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        answer = destination_status(hostd, &url, token).await;
    }
    match answer {
        Ok(st) if st.state == CommandState::Succeeded => Ok(()),
        Ok(st) => Err(format!(
            "hostd restarted and the source QEMU had ended; the destination's command {id} is {:?}: the VM is lost",
            st.state
        )),
        Err(e) => Err(format!(
            "hostd restarted and the source QEMU had ended; the destination does not say it runs the VM: {e}"
        )),
    }
}

/// Waits until the destination's QEMU listens (its command is running and
/// reports progress), or it failed.
async fn wait_destination_ready(
    hostd: &Hostd,
    api: &str,
    id: &str,
    token: &str,
    deadline: Instant,
) -> Result<(), String> {
    let url = format!("{}{}", api.trim_end_matches('/'), proto::command_path(id));
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match destination_status(hostd, &url, token).await {
            Ok(st) if st.state == CommandState::Failed => {
                return Err(format!(
                    "destination command {id} failed: {}",
                    st.error.unwrap_or_default()
                ))
            }
            Ok(st) if st.state == CommandState::Running && st.progress.is_some() => return Ok(()),
            Ok(st) => last = format!("destination command {id} is {:?}", st.state),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "destination not ready before the deadline: {last}; VM keeps running on the source"
    ))
}

/// Polls the destination hostd's `prepare_incoming` command until it
/// succeeded (the VM runs there).
async fn wait_destination(
    hostd: &Hostd,
    api: &str,
    id: &str,
    token: &str,
    deadline: Instant,
) -> Result<(), String> {
    let url = format!("{}{}", api.trim_end_matches('/'), proto::command_path(id));
    let mut last = String::from("no answer yet");
    // The destination needs a moment after the source's completion.
    let deadline = deadline.max(Instant::now() + Duration::from_secs(10));
    while Instant::now() < deadline {
        match destination_status(hostd, &url, token).await {
            Ok(st) if st.state == CommandState::Succeeded => return Ok(()),
            Ok(st) if st.state == CommandState::Failed => {
                return Err(format!(
                    "destination command {id} failed: {}",
                    st.error.unwrap_or_default()
                ))
            }
            Ok(st) => last = format!("destination command {id} is {:?}", st.state),
            Err(e) => last = e,
        }
        tokio::time::sleep(POLL).await;
    }
    Err(format!("timed out: {last}"))
}

/// Destination side: start QEMU with the machine arguments of this host's
/// template and `-incoming`, wait until the VM runs. The VM is registered
/// here as `Incoming` at once.
pub async fn prepare_incoming(
    hostd: &Arc<Hostd>,
    inv: &VmInventory,
    machine_args: &[String],
    spec: &MigrationSpec,
    cmd_id: &str,
) -> Result<MigrationResult, String> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(spec.deadline_s);
    let rt = launch(&hostd.cfg, inv, machine_args, Some(&spec.destination_addr)).await?;
    let vm = Arc::new(Vm::new(inv.clone(), Box::new(rt), VmState::Incoming));
    {
        let mut s = lock(&vm.shared);
        s.busy = Some(cmd_id.to_string());
        s.migrated_in = true;
    }
    hostd.add_vm(vm.clone());
    await_incoming(hostd, &vm, spec, cmd_id, start, deadline).await
}

/// Destination side after a restart of hostd: the incoming QEMU of command
/// `cmd_id` was re-adopted (in state `Incoming`); waits as usual until it
/// runs (or the deadline passes, or it ends).
pub async fn resume_incoming(
    hostd: &Arc<Hostd>,
    vm: &Arc<Vm>,
    spec: &MigrationSpec,
    cmd_id: &str,
    created_unix_ms: u64,
) -> Result<MigrationResult, String> {
    let deadline = deadline_of(created_unix_ms, spec.deadline_s);
    let age = Duration::from_millis(crate::sys::unix_ms().saturating_sub(created_unix_ms));
    let start = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
    await_incoming(hostd, vm, spec, cmd_id, start, deadline).await
}

/// Waits until the incoming VM runs here; on failure its QEMU quits and the
/// VM is removed.
async fn await_incoming(
    hostd: &Arc<Hostd>,
    vm: &Arc<Vm>,
    spec: &MigrationSpec,
    cmd_id: &str,
    start: Instant,
    deadline: Instant,
) -> Result<MigrationResult, String> {
    let inv = lock(&vm.shared).inv.clone();
    let Some(rt) = vm.runtime.downcast::<QemuRuntime>() else {
        return Err("internal: not a QEMU runtime".into());
    };
    let qmp = rt.qmp.clone();
    let mut events = qmp.subscribe();
    let outcome: Result<(), String> = async {
        let mut tick = tokio::time::interval(POLL);
        loop {
            if Instant::now() > deadline {
                return Err(format!(
                    "no complete incoming migration within {} s",
                    spec.deadline_s
                ));
            }
            if let Some(why) = rt.exited() {
                return Err(format!(
                    "destination QEMU ended: {why}; {}",
                    tail(&rt.paths.stderr_log, 3)
                ));
            }
            tokio::select! {
                ev = events.recv() => {
                    if let Ok(ev) = ev {
                        if ev.name == "RESUME" {
                            tracing::info!(vm = %inv.name, "destination RESUME event");
                        }
                    }
                }
                _ = tick.tick() => {}
            }
            match qmp.execute("query-status", None).await {
                Ok(v) => {
                    let st = v
                        .get("status")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    if st == "running" {
                        return Ok(());
                    }
                    hostd.update_command(cmd_id, |s| {
                        s.progress = Some(MigrationProgress {
                            phase: if st == "inmigrate" {
                                "waiting".into()
                            } else {
                                st.clone()
                            },
                            elapsed_ms: start.elapsed().as_millis() as u64,
                            ..Default::default()
                        })
                    });
                }
                Err(QmpError::Closed(e)) => return Err(format!("destination QEMU gone: {e}")),
                Err(e) => tracing::debug!(error = %e, "query-status on destination"),
            }
        }
    }
    .await;
    match outcome {
        Ok(()) => {
            {
                let mut s = lock(&vm.shared);
                s.state = VmState::Running;
            }
            hostd.inventory_changed();
            tracing::info!(vm = %inv.name, ms = start.elapsed().as_millis() as u64, "VM runs on this host");
            Ok(MigrationResult {
                total_time_ms: start.elapsed().as_millis() as u64,
                ..Default::default()
            })
        }
        Err(e) => {
            rt.quit().await;
            hostd.remove_vm(&inv.name);
            Err(e)
        }
    }
}

/// Testbed VF: hot-plugs an emulated NIC (`driver`) with QOM id
/// `shdvf-<vm>`; returns the id.
pub async fn vf_attach_emulated(q: &Qmp, vm: &str, driver: &str) -> Result<String, String> {
    let id = format!("shdvf-{vm}");
    q.execute("device_add", Some(json!({"driver": driver, "id": id})))
        .await
        .map_err(|e| format!("device_add {driver}: {e}"))?;
    Ok(id)
}

/// Removes a hot-plugged device and waits for `DEVICE_DELETED` (the guest
/// must release it).
pub async fn device_del(q: &Qmp, id: &str, wait: Duration) -> Result<(), String> {
    let mut ev = q.subscribe();
    q.execute("device_del", Some(json!({"id": id})))
        .await
        .map_err(|e| format!("device_del {id}: {e}"))?;
    let done = async {
        loop {
            match ev.recv().await {
                Ok(e)
                    if e.name == "DEVICE_DELETED"
                        && e.data.get("device").and_then(Value::as_str) == Some(id) =>
                {
                    return true
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return false,
            }
        }
    };
    match tokio::time::timeout(wait, done).await {
        Ok(true) => Ok(()),
        _ => Err(format!(
            "device {id}: the guest did not release it within {wait:?}"
        )),
    }
}

/// QMP `balloon` to `target_mb`; waits up to 10 s for the guest to get
/// there and returns the balloon's `actual` (MiB) at that point.
pub async fn balloon(q: &Qmp, target_mb: u64) -> Result<u64, String> {
    q.execute("balloon", Some(json!({"value": target_mb << 20})))
        .await
        .map_err(|e| format!("balloon: {e}"))?;
    let start = Instant::now();
    loop {
        let v = q
            .execute("query-balloon", None)
            .await
            .map_err(|e| format!("query-balloon: {e}"))?;
        let actual = v.get("actual").and_then(Value::as_u64).unwrap_or(0) >> 20;
        if actual.abs_diff(target_mb) <= 1 || start.elapsed() > Duration::from_secs(10) {
            return Ok(actual);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One dirty-rate measurement (`calc-dirty-rate` + `query-dirty-rate`), MiB/s.
pub async fn measure_dirty_rate(q: &Qmp, calc_s: u64) -> Result<f64, String> {
    q.execute("calc-dirty-rate", Some(json!({"calc-time": calc_s})))
        .await
        .map_err(|e| format!("calc-dirty-rate: {e}"))?;
    tokio::time::sleep(Duration::from_millis(calc_s * 1000 + 200)).await;
    for _ in 0..20 {
        let v = q
            .execute("query-dirty-rate", None)
            .await
            .map_err(|e| format!("query-dirty-rate: {e}"))?;
        match v.get("status").and_then(Value::as_str) {
            Some("measured") => {
                return v
                    .get("dirty-rate")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| "query-dirty-rate without dirty-rate".to_string())
            }
            Some("measuring") => tokio::time::sleep(Duration::from_millis(200)).await,
            other => return Err(format!("query-dirty-rate status {other:?}")),
        }
    }
    Err("dirty rate not measured in time".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `query-migrate` answer captured from QEMU 10.0.2 at the end of a
    /// 128 MB TCG guest's migration capped at 20 MiB/s.
    const COMPLETED: &str = r#"{"status": "completed", "setup-time": 1, "downtime": 2, "total-time": 5803, "ram": {"total": 134750208, "postcopy-requests": 0, "dirty-sync-count": 6, "multifd-bytes": 0, "pages-per-second": 5120, "downtime-bytes": 4937121, "page-size": 4096, "remaining": 0, "postcopy-bytes": 0, "mbps": 175.12426197862806, "transferred": 127008871, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 121957260, "duplicate": 9370, "dirty-pages-rate": 0, "normal-bytes": 126562304, "normal": 30899}}"#;
    const ACTIVE: &str = r#"{"expected-downtime": 1283, "status": "active", "setup-time": 1, "total-time": 4632, "ram": {"total": 134750208, "dirty-sync-count": 2, "page-size": 4096, "remaining": 20008960, "transferred": 98844088, "duplicate": 9367, "dirty-pages-rate": 1231}}"#;

    #[test]
    fn query_migrate_parsed() {
        let a = parse_query_migrate(&serde_json::from_str(ACTIVE).unwrap());
        assert_eq!(a.status, "active");
        assert_eq!(a.dirty_rate_bps, 1231.0 * 4096.0);
        assert_eq!(a.iterations, 2);
        assert_eq!(a.remaining, 20008960);
        let c = parse_query_migrate(&serde_json::from_str(COMPLETED).unwrap());
        assert_eq!(c.status, "completed");
        assert_eq!(c.downtime_ms, 2);
        let r = migration_result(&c, a.dirty_rate_bps);
        assert_eq!(r.transferred_bytes, 127008871);
        assert_eq!(r.memory_bytes, 134750208 - 9370 * 4096);
        assert!((r.achieved_bandwidth_bytes_per_s - 127008871.0 / 5.802).abs() < 1.0);
        let f = parse_query_migrate(&json!({"status": "failed", "error-desc": "boom"}));
        assert_eq!(f.error.as_deref(), Some("boom"));
        assert_eq!(parse_query_migrate(&json!(null)).status, "none");
    }

    #[test]
    fn args_are_the_machine_plus_local() {
        let machine = vec!["-m".to_string(), "128".to_string()];
        let p = QemuPaths::new(std::path::Path::new("/r,x"), "v");
        let a = qemu_args("v", &machine, &p, Some("10.0.0.2:4444"));
        assert_eq!(&a[..2], &["-m", "128"]);
        assert!(a.contains(&"unix:/r,,x/v.qmp,server=on,wait=off".to_string()));
        assert_eq!(&a[a.len() - 2..], &["-incoming", "tcp:10.0.0.2:4444"]);
        let b = qemu_args("v", &machine, &p, None);
        assert!(!b.contains(&"-incoming".to_string()));
        assert!(machine_args(VmPlan::Netns { scenario: None }).is_err());
    }
}
