//! Carrying out effector commands: validation, the task that runs each
//! command, and its bookkeeping (status, VM hold, events).

use std::net::SocketAddr;
use std::sync::Arc;

use shoal_common::proto::{
    BackendKind, Command, CommandResult, CommandState, CommandStatus, EventKind, MigrationSpec,
    VmBackendSpec, VmState,
};

use crate::backend::Backend;
use crate::config::validate_vm;
use crate::netns::NetnsBackend;
use crate::plan::{plan, VmPlan};
use crate::qemu::QemuBackend;
use crate::state::{lock, Hostd, Vm};

/// Longest deadline accepted, seconds.
const MAX_DEADLINE_S: f64 = 86_400.0;

fn validate_migration(spec: &MigrationSpec) -> Result<(), String> {
    if let Some(t) = &spec.peer_token {
        shoal_common::secret::Secret::new(t).map_err(|e| format!("peer_token: {e}"))?;
    }
    spec.destination_addr.parse::<SocketAddr>().map_err(|e| {
        format!(
            "destination_addr {:?}: {e} (want IP:PORT)",
            spec.destination_addr
        )
    })?;
    if spec.max_bandwidth_bytes_per_s == 0 {
        return Err("max_bandwidth_bytes_per_s must be > 0".into());
    }
    if spec.downtime_limit_ms == 0 {
        return Err("downtime_limit_ms must be > 0".into());
    }
    if !(spec.deadline_s.is_finite() && spec.deadline_s > 0.0 && spec.deadline_s <= MAX_DEADLINE_S)
    {
        return Err(format!("deadline_s must be in (0, {MAX_DEADLINE_S}]"));
    }
    if spec.destination_host.is_empty() {
        return Err("destination_host must not be empty".into());
    }
    Ok(())
}

/// Checks that `cmd` can be carried out on this host (422 when not) and,
/// for `prepare_incoming`, builds the incoming VM's plan from this host's
/// configuration ([`crate::plan`]: template, disk, scenario): a VM
/// definition that does not fit is refused here, before anything starts.
/// Whether the VM exists and is free is decided by [`Hostd::accept`].
pub async fn check(hostd: &Hostd, cmd: &Command) -> Result<Option<VmPlan>, String> {
    validate(hostd, cmd)?;
    match cmd {
        Command::PrepareIncoming(MigrationSpec {
            vm_spec: Some(inv), ..
        }) => plan(&hostd.cfg, inv)
            .await
            .map(Some)
            .map_err(|e| e.to_string()),
        _ => Ok(None),
    }
}

/// The checks of [`check`] that need no file system.
pub fn validate(hostd: &Hostd, cmd: &Command) -> Result<(), String> {
    let vm = hostd.vm(cmd.vm());
    let backend = vm.as_ref().map(|v| v.snapshot().inv.spec.kind());
    match cmd {
        Command::Migrate(spec) => {
            validate_migration(spec)?;
            if backend == Some(BackendKind::Qemu)
                && (spec.destination_api.is_none()
                    || spec.incoming_command_id.is_none()
                    || spec.peer_token.is_none())
            {
                return Err(
                    "migrating a QEMU VM needs destination_api, incoming_command_id and peer_token"
                        .into(),
                );
            }
            if let Some(api) = &spec.destination_api {
                if !(api.starts_with("http://") || api.starts_with("https://")) {
                    return Err("destination_api must be an http:// or https:// URL".into());
                }
            }
        }
        Command::PrepareIncoming(spec) => {
            validate_migration(spec)?;
            let inv = spec.vm_spec.as_ref().ok_or_else(|| {
                "prepare_incoming needs vm_spec (the VM's inventory entry)".to_string()
            })?;
            if inv.name != spec.vm {
                return Err(format!("vm_spec is for {}, not {}", inv.name, spec.vm));
            }
            validate_vm(inv, &hostd.cfg).map_err(|e| e.to_string())?;
            if inv.spec.kind() == BackendKind::Netns && hostd.cfg.bridge.is_none() {
                return Err("this host has no bridge configured for netns VMs".into());
            }
        }
        Command::MemoryResize { target_mb, .. } => {
            if *target_mb == 0 {
                return Err("target_mb must be > 0".into());
            }
            if let Some(v) = &vm {
                let max = v.snapshot().inv.max_memory_mb;
                if *target_mb > max {
                    return Err(format!(
                        "target_mb {target_mb} exceeds the VM's maximum {max} MiB"
                    ));
                }
            }
        }
        Command::VfAttach { .. } | Command::VfDetach { .. } => {
            if let Some(v) = &vm {
                let s = v.snapshot();
                if let VmBackendSpec::Netns { vf_iface: None, .. } = s.inv.spec {
                    return Err(format!("VM {} has no vf_iface configured", s.inv.name));
                }
                match (cmd, &s.vf_device) {
                    (Command::VfAttach { .. }, Some(d)) => {
                        return Err(format!("VM {} already has VF {d}", s.inv.name))
                    }
                    (Command::VfDetach { .. }, None) => {
                        return Err(format!("VM {} has no VF attached", s.inv.name))
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Starts carrying out an accepted command in its own task; `plan` is what
/// [`check`] returned for it.
pub fn spawn(hostd: Arc<Hostd>, id: String, cmd: Command, plan: Option<VmPlan>) {
    tokio::spawn(async move {
        hostd.update_command(&id, |s| s.state = CommandState::Running);
        tracing::info!(command = %id, kind = cmd.kind_name(), vm = cmd.vm(), "command started");
        let outcome = execute(&hostd, &id, &cmd, plan).await;
        finish(&hostd, &id, &cmd, outcome);
    });
}

/// Resolves, in its own task, a command that was not finished when the
/// previous hostd ended (read back from the state file; the VMs were
/// re-adopted first): a migration is followed to its end or failed with the
/// reason QEMU gives ([`crate::qemu::resume_out`],
/// [`crate::qemu::resume_incoming`]); any other command fails (its outcome
/// is unknown).
pub fn resume(hostd: Arc<Hostd>, status: CommandStatus) {
    tokio::spawn(async move {
        let (id, cmd) = (status.id.clone(), status.command.clone());
        tracing::info!(command = %id, kind = cmd.kind_name(), vm = cmd.vm(), "resolving a command from before the restart");
        let outcome = resume_outcome(&hostd, &status).await;
        finish(&hostd, &id, &cmd, outcome);
    });
}

async fn resume_outcome(hostd: &Arc<Hostd>, st: &CommandStatus) -> Result<CommandResult, String> {
    let vm = hostd.vm(st.command.vm());
    let qemu = vm
        .as_ref()
        .filter(|v| v.runtime.kind() == BackendKind::Qemu);
    match (&st.command, qemu) {
        (Command::Migrate(spec), Some(vm)) => {
            crate::qemu::resume_out(hostd, vm, spec, &st.id, st.created_unix_ms)
                .await
                .map(CommandResult::Migration)
        }
        (Command::Migrate(spec), None) if vm.is_none() => {
            // The source QEMU ended while hostd was down: did the
            // destination take the VM over?
            crate::qemu::destination_took_over(hostd, spec)
                .await
                .map(|()| CommandResult::Migration(Default::default()))
        }
        (Command::PrepareIncoming(spec), Some(vm)) => {
            lock(&hostd.incoming).insert(spec.vm.clone());
            let state = lock(&vm.shared).state;
            if state == VmState::Running {
                return Ok(CommandResult::Migration(Default::default()));
            }
            crate::qemu::resume_incoming(hostd, vm, spec, &st.id, st.created_unix_ms)
                .await
                .map(CommandResult::Migration)
        }
        (Command::PrepareIncoming(_), None) if vm.is_none() => {
            Err("hostd restarted and the incoming QEMU had ended: no VM arrived".into())
        }
        (Command::PrepareIncoming(spec), None) => {
            // A namespace VM's incoming stream ended with the previous hostd.
            hostd.remove_vm(&spec.vm);
            Err("interrupted by a restart of hostd: the incoming stream ended".into())
        }
        _ => Err("interrupted by a restart of hostd: its outcome is unknown".into()),
    }
}

fn finish(hostd: &Hostd, id: &str, cmd: &Command, outcome: Result<CommandResult, String>) {
    let vm_name = cmd.vm().to_string();
    if let Some(vm) = hostd.vm(&vm_name) {
        let mut s = lock(&vm.shared);
        if s.busy.as_deref() == Some(id) {
            s.busy = None;
        }
        if s.state == VmState::MigratingOut {
            s.state = VmState::Running;
        }
    }
    match (&outcome, cmd) {
        (Ok(_), Command::Migrate(_)) => {
            // A configured VM that left is not started again after a restart.
            if hostd.cfg.vms.iter().any(|v| v.name == vm_name) {
                lock(&hostd.departed).insert(vm_name.clone());
            }
            hostd.remove_vm(&vm_name);
            hostd.event(EventKind::VmLeft {
                vm: vm_name.clone(),
            });
        }
        (Ok(_), Command::PrepareIncoming(_)) => {
            lock(&hostd.departed).remove(&vm_name);
            hostd.event(EventKind::VmArrived {
                vm: vm_name.clone(),
            });
        }
        _ => {}
    }
    if matches!(cmd, Command::PrepareIncoming(_)) {
        lock(&hostd.incoming).remove(&vm_name);
    }
    let (state, error) = match &outcome {
        Ok(_) => (CommandState::Succeeded, None),
        Err(e) => (CommandState::Failed, Some(e.clone())),
    };
    match &error {
        None => tracing::info!(command = %id, vm = %vm_name, "command succeeded"),
        Some(e) => tracing::warn!(command = %id, vm = %vm_name, error = %e, "command failed"),
    }
    hostd.update_command(id, |s| {
        s.state = state;
        s.error = error.clone();
        s.result = outcome.ok();
    });
    hostd.event(EventKind::CommandFinished {
        command_id: id.to_string(),
        vm: vm_name,
        state,
        error,
    });
}

/// The backend of a VM kind.
pub fn backend(kind: BackendKind) -> &'static dyn Backend {
    match kind {
        BackendKind::Qemu => &QemuBackend,
        BackendKind::Netns => &NetnsBackend,
    }
}

async fn execute(
    hostd: &Arc<Hostd>,
    id: &str,
    cmd: &Command,
    plan: Option<VmPlan>,
) -> Result<CommandResult, String> {
    match cmd {
        Command::PrepareIncoming(spec) => {
            let inv = spec
                .vm_spec
                .as_ref()
                .ok_or_else(|| "prepare_incoming needs vm_spec".to_string())?;
            let plan =
                plan.ok_or_else(|| "internal: prepare_incoming without a plan".to_string())?;
            let r = backend(inv.spec.kind())
                .prepare_incoming(hostd, inv, plan, spec, id)
                .await?;
            Ok(CommandResult::Migration(r))
        }
        Command::Migrate(spec) => {
            let vm = get_vm(hostd, &spec.vm)?;
            lock(&vm.shared).state = VmState::MigratingOut;
            let r = backend(vm.runtime.kind())
                .migrate_out(hostd, &vm, spec, id)
                .await?;
            Ok(CommandResult::Migration(r))
        }
        Command::VfAttach { vm } => {
            let vm = get_vm(hostd, vm)?;
            let device = backend(vm.runtime.kind()).vf_attach(hostd, &vm).await?;
            lock(&vm.shared).vf_device = Some(device.clone());
            Ok(CommandResult::VfAttached { device })
        }
        Command::VfDetach { vm } => {
            let vm = get_vm(hostd, vm)?;
            let device = lock(&vm.shared)
                .vf_device
                .clone()
                .ok_or_else(|| "no VF attached".to_string())?;
            backend(vm.runtime.kind()).vf_detach(&vm, &device).await?;
            lock(&vm.shared).vf_device = None;
            Ok(CommandResult::VfDetached { device })
        }
        Command::MemoryResize { vm, target_mb } => {
            let vm = get_vm(hostd, vm)?;
            let actual = backend(vm.runtime.kind())
                .resize_memory(&vm, *target_mb)
                .await?;
            lock(&vm.shared).inv.memory_mb = actual.max(1);
            hostd.inventory_changed();
            Ok(CommandResult::MemoryResized { actual_mb: actual })
        }
    }
}

fn get_vm(hostd: &Hostd, name: &str) -> Result<Arc<Vm>, String> {
    hostd.vm(name).ok_or_else(|| format!("VM {name} is gone"))
}
