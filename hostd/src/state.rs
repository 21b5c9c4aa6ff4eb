//! The daemon's shared state: configuration, VMs, commands and events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use shoal_common::proto::{
    Command, CommandState, CommandStatus, Event, EventKind, VmInventory, VmMetrics, VmState,
    VmStatus,
};
use shoal_common::secret::Secret;

use crate::config::Config;
use crate::http::HttpClient;
use crate::vm_runtime::VmRuntime;

/// Locks a std mutex, recovering the data if another thread panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Mutable facts about a VM.
#[derive(Debug, Clone)]
pub struct VmShared {
    /// Inventory entry (memory after resizes).
    pub inv: VmInventory,
    /// Life-cycle state.
    pub state: VmState,
    /// Device of the attached VF (stand-in), if any.
    pub vf_device: Option<String>,
    /// Command currently holding the VM.
    pub busy: Option<String>,
    /// Metrics of the last interval.
    pub last_metrics: Option<VmMetrics>,
    /// Last dirty-rate measurement, MiB/s.
    pub dirty_rate_mbps: Option<f64>,
    /// Whether the VM arrived by a live migration (else: configured here).
    pub migrated_in: bool,
}

/// A VM on this host.
pub struct Vm {
    /// VM name.
    pub name: String,
    /// Backend runtime.
    pub runtime: Box<dyn VmRuntime>,
    /// Mutable facts.
    pub shared: Mutex<VmShared>,
}

impl Vm {
    /// A VM in state `state`.
    pub fn new(inv: VmInventory, runtime: Box<dyn VmRuntime>, state: VmState) -> Self {
        Vm {
            name: inv.name.clone(),
            runtime,
            shared: Mutex::new(VmShared {
                inv,
                state,
                vf_device: None,
                busy: None,
                last_metrics: None,
                dirty_rate_mbps: None,
                migrated_in: false,
            }),
        }
    }

    /// Snapshot of the mutable facts.
    pub fn snapshot(&self) -> VmShared {
        lock(&self.shared).clone()
    }

    /// The API view of the VM.
    pub fn status(&self) -> VmStatus {
        let s = lock(&self.shared);
        let mut inv = s.inv.clone();
        self.runtime.fill_inventory(&mut inv);
        VmStatus {
            inventory: inv,
            state: s.state,
            vf_attached: s.vf_device.is_some(),
            busy_with: s.busy.clone(),
            last_metrics: s.last_metrics.clone(),
            pid: self.runtime.pid(),
        }
    }
}

/// Why a command cannot be accepted (mapped to HTTP by the API).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AcceptError {
    /// Same id, different body; or the VM is busy.
    #[error("{0}")]
    Conflict(String),
    /// The VM does not exist here.
    #[error("{0}")]
    NotFound(String),
    /// The command is well-formed but cannot be carried out.
    #[error("{0}")]
    Invalid(String),
}

struct CommandEntry {
    status: CommandStatus,
}

/// Commands by id, oldest evicted first once finished.
#[derive(Default)]
pub struct CommandTable {
    entries: HashMap<String, CommandEntry>,
    order: VecDeque<String>,
}

/// Most commands remembered.
const MAX_COMMANDS: usize = 1000;
/// Most undelivered events kept.
const MAX_EVENTS: usize = 1000;

impl CommandTable {
    /// The status of command `id`.
    pub fn get(&self, id: &str) -> Option<CommandStatus> {
        self.entries.get(id).map(|e| e.status.clone())
    }

    /// Every command, oldest first.
    pub fn all(&self) -> Vec<CommandStatus> {
        self.order.iter().filter_map(|id| self.get(id)).collect()
    }

    /// Puts back a command read from the state file (replacing nothing).
    pub fn restore(&mut self, status: CommandStatus) {
        if !self.entries.contains_key(&status.id) {
            self.insert(status);
        }
    }

    fn insert(&mut self, status: CommandStatus) {
        while self.entries.len() >= MAX_COMMANDS {
            let victim = self.order.iter().position(|id| {
                self.entries
                    .get(id)
                    .map(|e| e.status.state.is_final())
                    .unwrap_or(true)
            });
            match victim {
                Some(i) => {
                    if let Some(id) = self.order.remove(i) {
                        self.entries.remove(&id);
                    }
                }
                None => break,
            }
        }
        self.order.push_back(status.id.clone());
        self.entries
            .insert(status.id.clone(), CommandEntry { status });
    }
}

/// Undelivered events.
#[derive(Default)]
pub struct EventQueue {
    next_seq: u64,
    pending: VecDeque<Event>,
}

impl EventQueue {
    /// Queues an event.
    pub fn push(&mut self, kind: EventKind) {
        self.next_seq += 1;
        if self.pending.len() >= MAX_EVENTS {
            self.pending.pop_front();
        }
        self.pending.push_back(Event {
            seq: self.next_seq,
            at_unix_ms: crate::sys::unix_ms(),
            kind,
        });
    }

    /// Events not yet acknowledged.
    pub fn pending(&self) -> Vec<Event> {
        self.pending.iter().cloned().collect()
    }

    /// Drops the events up to `seq` (the controller acknowledged them).
    pub fn ack(&mut self, seq: u64) {
        while self.pending.front().map(|e| e.seq <= seq).unwrap_or(false) {
            self.pending.pop_front();
        }
    }
}

/// Everything the daemon's tasks share.
pub struct Hostd {
    /// Configuration (after command-line overrides).
    pub cfg: Config,
    /// Host id.
    pub host_id: String,
    /// This host's own token, presented to the controller (replaced when
    /// the token files are re-read on SIGHUP; see [`Hostd::own_token`]).
    token: RwLock<Secret>,
    /// The controller's token: the only credential the API accepts (None:
    /// every call is refused; see [`Hostd::is_controller`]).
    controller_token: RwLock<Option<Secret>>,
    /// VMs by name.
    pub vms: Mutex<BTreeMap<String, Arc<Vm>>>,
    /// Commands by id.
    pub commands: Mutex<CommandTable>,
    /// Events for the next report.
    pub events: Mutex<EventQueue>,
    /// Bumped whenever the inventory changes (re-registration needed).
    pub inventory_gen: AtomicU64,
    /// Outgoing HTTP.
    pub http: HttpClient,
    /// VM names with a `prepare_incoming` under way.
    pub incoming: Mutex<std::collections::HashSet<String>>,
    /// Configured VMs that migrated away: not started again from the
    /// configuration after a restart.
    pub departed: Mutex<std::collections::BTreeSet<String>>,
    /// The state file ([`crate::persist`]); None: nothing is persisted.
    pub state_path: Option<std::path::PathBuf>,
    /// Serializes writes of the state file.
    persist_lock: Mutex<()>,
    /// What `GET /metrics` counts.
    pub counters: crate::counters::HostdCounters,
}

impl Hostd {
    /// A daemon state without VMs.
    pub fn new(
        cfg: Config,
        host_id: String,
        token: Secret,
        controller_token: Option<Secret>,
    ) -> Self {
        let http = HttpClient::new(std::time::Duration::from_secs_f64(cfg.http_timeout_s));
        Hostd {
            cfg,
            host_id,
            token: RwLock::new(token),
            controller_token: RwLock::new(controller_token),
            vms: Mutex::new(BTreeMap::new()),
            commands: Mutex::new(CommandTable::default()),
            events: Mutex::new(EventQueue::default()),
            inventory_gen: AtomicU64::new(1),
            http,
            incoming: Mutex::new(std::collections::HashSet::new()),
            departed: Mutex::new(std::collections::BTreeSet::new()),
            state_path: None,
            persist_lock: Mutex::new(()),
            counters: crate::counters::HostdCounters::default(),
        }
    }

    /// What the state file should say now.
    pub fn state_snapshot(&self) -> crate::persist::StateFile {
        let vms = self
            .all_vms()
            .iter()
            .map(|v| {
                let s = v.snapshot();
                crate::persist::VmRecord {
                    inventory: s.inv,
                    state: s.state,
                    origin: if s.migrated_in {
                        crate::persist::Origin::MigratedIn
                    } else {
                        crate::persist::Origin::Configured
                    },
                    process: v.runtime.process(),
                    vf_device: s.vf_device,
                }
            })
            .collect();
        let departed = lock(&self.departed).clone();
        let mut commands = lock(&self.commands).all();
        let n = commands.len();
        if n > crate::persist::MAX_PERSISTED_COMMANDS {
            // The oldest finished ones go first.
            let mut drop = n - crate::persist::MAX_PERSISTED_COMMANDS;
            commands.retain(|c| {
                if drop > 0 && c.state.is_final() {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
        crate::persist::StateFile {
            version: crate::persist::FORMAT_VERSION,
            host_id: self.host_id.clone(),
            vms,
            departed,
            commands,
        }
    }

    /// Writes the state file (when one is configured); a failure is logged,
    /// the daemon goes on. Never call it holding a lock of the state.
    pub fn persist(&self) {
        let Some(path) = &self.state_path else {
            return;
        };
        let _guard = lock(&self.persist_lock);
        let sf = self.state_snapshot();
        if let Err(e) = crate::persist::save(path, &sf) {
            tracing::error!(error = %e, "cannot write the state file: a restart would forget the latest changes");
        }
    }

    /// This host's own token now (what it presents to the controller).
    pub fn own_token(&self) -> Secret {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `presented` is the controller's token now.
    pub fn is_controller(&self, presented: &str) -> bool {
        self.controller_token
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| t.matches(presented))
    }

    /// Puts new tokens in force (token files re-read on SIGHUP): `own` for
    /// the next registration or report, `controller` for the next request
    /// to the API.
    pub fn set_tokens(&self, own: Secret, controller: Option<Secret>) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = own;
        *self
            .controller_token
            .write()
            .unwrap_or_else(|p| p.into_inner()) = controller;
    }

    /// The VM called `name`.
    pub fn vm(&self, name: &str) -> Option<Arc<Vm>> {
        lock(&self.vms).get(name).cloned()
    }

    /// Every VM.
    pub fn all_vms(&self) -> Vec<Arc<Vm>> {
        lock(&self.vms).values().cloned().collect()
    }

    /// Adds a VM (replacing nothing: the caller checked the name is free).
    pub fn add_vm(&self, vm: Arc<Vm>) {
        lock(&self.vms).insert(vm.name.clone(), vm);
        self.inventory_changed();
    }

    /// Removes a VM.
    pub fn remove_vm(&self, name: &str) -> Option<Arc<Vm>> {
        let r = lock(&self.vms).remove(name);
        self.inventory_changed();
        r
    }

    /// Marks the inventory as changed (and writes the state file).
    pub fn inventory_changed(&self) {
        self.inventory_gen.fetch_add(1, Ordering::SeqCst);
        self.persist();
    }

    /// Queues an event.
    pub fn event(&self, kind: EventKind) {
        lock(&self.events).push(kind);
    }

    /// Registers command `id`, or returns the existing one (`Ok(false)`)
    /// when the same command was already accepted under this id. On
    /// success the VM concerned is marked busy with the command.
    pub fn accept(&self, id: &str, cmd: &Command) -> Result<(CommandStatus, bool), AcceptError> {
        let mut table = lock(&self.commands);
        if let Some(existing) = table.get(id) {
            if &existing.command == cmd {
                return Ok((existing, false));
            }
            return Err(AcceptError::Conflict(format!(
                "command {id} exists with a different body ({})",
                existing.command.kind_name()
            )));
        }
        let vm_name = cmd.vm();
        match cmd {
            Command::PrepareIncoming(_) => {
                if lock(&self.incoming).contains(vm_name) {
                    return Err(AcceptError::Conflict(format!(
                        "VM {vm_name} is already migrating in"
                    )));
                }
                if let Some(vm) = self.vm(vm_name) {
                    let s = lock(&vm.shared);
                    return Err(AcceptError::Conflict(format!(
                        "VM {vm_name} is already on this host ({:?}{})",
                        s.state,
                        s.busy
                            .as_ref()
                            .map(|b| format!(", busy with {b}"))
                            .unwrap_or_default()
                    )));
                }
            }
            _ => {
                let vm = self.vm(vm_name).ok_or_else(|| {
                    AcceptError::NotFound(format!("no VM {vm_name} on this host"))
                })?;
                let mut s = lock(&vm.shared);
                if let Some(b) = &s.busy {
                    let what = if matches!(s.state, VmState::MigratingOut | VmState::Incoming) {
                        "migrating"
                    } else {
                        "busy"
                    };
                    return Err(AcceptError::Conflict(format!(
                        "VM {vm_name} is {what} (command {b})"
                    )));
                }
                if !matches!(s.state, VmState::Running | VmState::Paused) {
                    return Err(AcceptError::Conflict(format!(
                        "VM {vm_name} is {:?}",
                        s.state
                    )));
                }
                s.busy = Some(id.to_string());
            }
        }
        if matches!(cmd, Command::PrepareIncoming(_)) {
            lock(&self.incoming).insert(vm_name.to_string());
        }
        let now = crate::sys::unix_ms();
        let status = CommandStatus {
            id: id.to_string(),
            command: cmd.clone(),
            state: CommandState::Accepted,
            progress: None,
            result: None,
            error: None,
            created_unix_ms: now,
            updated_unix_ms: now,
        };
        table.insert(status.clone());
        drop(table);
        self.persist();
        Ok((status, true))
    }

    /// Changes command `id`'s status with `f`; a change of state is
    /// written to the state file (progress alone is not).
    pub fn update_command(&self, id: &str, f: impl FnOnce(&mut CommandStatus)) {
        let mut t = lock(&self.commands);
        let mut changed = false;
        if let Some(e) = t.entries.get_mut(id) {
            let before = e.status.state;
            f(&mut e.status);
            e.status.updated_unix_ms = crate::sys::unix_ms();
            changed = e.status.state != before;
        }
        drop(t);
        if changed {
            self.persist();
        }
    }

    /// The status of command `id`.
    pub fn command(&self, id: &str) -> Option<CommandStatus> {
        lock(&self.commands).get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_common::proto::{BackendKind, VmBackendSpec};

    /// A runtime that does nothing (the state never looks inside).
    struct Idle;
    impl VmRuntime for Idle {
        fn kind(&self) -> BackendKind {
            BackendKind::Netns
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    fn hostd_with_vm() -> Hostd {
        let h = Hostd::new(
            Config::default(),
            "h".into(),
            Secret::new("host-token-0123456789").unwrap(),
            None,
        );
        let inv = VmInventory {
            environment: None,
            environment_head: false,
            name: "v".into(),
            mac: "52:54:00:00:00:01".into(),
            ip: None,
            vcpus: 1,
            memory_mb: 64,
            max_memory_mb: 64,
            spec: VmBackendSpec::Netns {
                namespace: "ns".into(),
                iface: "eth0".into(),
                port: "p".into(),
                vf_iface: None,
                vf_port: None,
                scenario: None,
                scenario_epoch_unix_ms: None,
            },
        };
        h.add_vm(Arc::new(Vm::new(inv, Box::new(Idle), VmState::Running)));
        h
    }

    #[test]
    fn idempotent_by_id() {
        let h = hostd_with_vm();
        let c = Command::MemoryResize {
            vm: "v".into(),
            target_mb: 32,
        };
        let (_, created) = h.accept("c1", &c).unwrap();
        assert!(created);
        let (_, created) = h.accept("c1", &c).unwrap();
        assert!(!created);
        let other = Command::MemoryResize {
            vm: "v".into(),
            target_mb: 16,
        };
        assert!(matches!(
            h.accept("c1", &other),
            Err(AcceptError::Conflict(_))
        ));
        // The VM is held by c1: another command conflicts.
        assert!(matches!(
            h.accept("c2", &other),
            Err(AcceptError::Conflict(_))
        ));
        assert!(matches!(
            h.accept("c3", &Command::VfAttach { vm: "nope".into() }),
            Err(AcceptError::NotFound(_))
        ));
    }

    #[test]
    fn events_ack() {
        let mut q = EventQueue::default();
        q.push(EventKind::VmLeft { vm: "a".into() });
        q.push(EventKind::VmArrived { vm: "b".into() });
        assert_eq!(q.pending().len(), 2);
        q.ack(1);
        assert_eq!(q.pending().len(), 1);
        assert_eq!(q.pending()[0].seq, 2);
    }
}
