//! What survives a restart of hostd: its VM table (with each QEMU's pid and
//! start time), the configured VMs that migrated away, and a bounded
//! history of its commands, kept in one small JSON file
//! (`<state_dir>/hostd-state.json`) written atomically (temporary file,
//! fsync, rename, fsync of the directory).
//!
//! The file is outside input when it is read back: its size is bounded,
//! every entry is checked (names, command ids, inventories against this
//! host's configuration, pids) and an entry that does not pass is dropped
//! with a log line; a file that does not parse is set aside
//! (`hostd-state.json.corrupt`) and hostd starts as if it had none. Paths
//! are never read from it: a VM's files are always `run_dir/<name>.*`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shoal_common::proto::{CommandStatus, VmInventory, VmState};

use crate::config::{valid_name, validate_vm, Config};

/// Name of the state file inside `state_dir`.
pub const STATE_FILE: &str = "hostd-state.json";
/// Version of the file's format.
pub const FORMAT_VERSION: u32 = 1;
/// Largest state file read, bytes.
pub const MAX_STATE_BYTES: u64 = 4 << 20;
/// Most commands kept in the file (the newest).
pub const MAX_PERSISTED_COMMANDS: usize = 256;
/// Most VMs kept in the file.
pub const MAX_PERSISTED_VMS: usize = 1024;

/// The state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A file operation failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_STATE_BYTES`].
    #[error("state file {path}: {size} bytes, more than {MAX_STATE_BYTES}")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The file does not parse.
    #[error("state file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The file is of another format version or host.
    #[error("state file {path}: {why}")]
    Foreign {
        /// The file.
        path: String,
        /// Why it is not this hostd's.
        why: String,
    },
}

/// Where a VM came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A `[[vm]]` of the configuration.
    #[default]
    Configured,
    /// Arrived by a live migration.
    MigratedIn,
}

/// A process, robust against pid reuse: its pid and its start time
/// (`/proc/PID/stat` field 22, clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessId {
    /// Process id.
    pub pid: u32,
    /// Start time, clock ticks after boot.
    pub start_ticks: u64,
}

/// One VM of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    /// Its inventory entry.
    pub inventory: VmInventory,
    /// Its state when written.
    pub state: VmState,
    /// Configured here or migrated in.
    #[serde(default)]
    pub origin: Origin,
    /// Its QEMU process (QEMU VMs).
    #[serde(default)]
    pub process: Option<ProcessId>,
    /// Device of the attached VF (stand-in), if any.
    #[serde(default)]
    pub vf_device: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The host id of the hostd that wrote it.
    pub host_id: String,
    /// The VMs on this host.
    pub vms: Vec<VmRecord>,
    /// Configured VMs that migrated away (not started again from the
    /// configuration).
    #[serde(default)]
    pub departed: BTreeSet<String>,
    /// The newest commands, oldest first.
    #[serde(default)]
    pub commands: Vec<CommandStatus>,
}

/// `<state_dir>/hostd-state.json` (`state_dir` defaults to `run_dir`).
pub fn state_path(cfg: &Config) -> PathBuf {
    cfg.state_dir
        .as_deref()
        .unwrap_or(&cfg.run_dir)
        .join(STATE_FILE)
}

/// Reads the state file; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<StateFile>, PersistError> {
    let io = |source| PersistError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if meta.len() > MAX_STATE_BYTES {
        return Err(PersistError::TooLarge {
            path: path.display().to_string(),
            size: meta.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let sf: StateFile = serde_json::from_slice(&bytes).map_err(|source| PersistError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    if sf.version != FORMAT_VERSION {
        return Err(PersistError::Foreign {
            path: path.display().to_string(),
            why: format!("format version {}, want {FORMAT_VERSION}", sf.version),
        });
    }
    Ok(Some(sf))
}

/// Writes `sf` to `path` atomically: a temporary file beside it (mode
/// 0600, named after this process), fsync, rename over `path`, fsync of the
/// directory.
pub fn save(path: &Path, sf: &StateFile) -> Result<(), PersistError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PersistError::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
    let json = serde_json::to_vec_pretty(sf).map_err(|e| io(std::io::Error::other(e)))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&json).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Sets an unreadable state file aside (`<file>.corrupt`) so that the next
/// write does not lose it; returns where it went.
pub fn set_aside(path: &Path) -> Option<PathBuf> {
    let to = path.with_extension("json.corrupt");
    std::fs::rename(path, &to).ok().map(|_| to)
}

/// Keeps what can be trusted of a state file read back, for this host's
/// configuration `cfg` and id `host_id`; every entry dropped is named in
/// the returned notes. A file of another host id is dropped whole.
pub fn sanitize(mut sf: StateFile, cfg: &Config, host_id: &str) -> (StateFile, Vec<String>) {
    let mut notes = Vec::new();
    if sf.host_id != host_id {
        notes.push(format!(
            "state file of host {:?}, this is {host_id:?}: ignored",
            sf.host_id
        ));
        return (empty(host_id), notes);
    }
    if sf.vms.len() > MAX_PERSISTED_VMS {
        notes.push(format!(
            "{} VMs in the state file, keeping the first {MAX_PERSISTED_VMS}",
            sf.vms.len()
        ));
        sf.vms.truncate(MAX_PERSISTED_VMS);
    }
    let mut seen = BTreeSet::new();
    sf.vms.retain(|r| {
        let name = &r.inventory.name;
        let why = if let Err(e) = validate_vm(&r.inventory, cfg) {
            Some(e.to_string())
        } else if !seen.insert(name.clone()) {
            Some("listed twice".to_string())
        } else if r.process.is_some_and(|p| p.pid <= 1) {
            Some("invalid pid".to_string())
        } else if r.vf_device.as_deref().is_some_and(|d| d.len() > 256) {
            Some("invalid VF device".to_string())
        } else {
            None
        };
        if let Some(w) = &why {
            notes.push(format!("state file: VM {name:?} dropped: {w}"));
        }
        why.is_none()
    });
    let before = sf.departed.len();
    sf.departed
        .retain(|n| valid_name(n) && cfg.vms.iter().any(|v| &v.name == n));
    if sf.departed.len() != before {
        notes.push("state file: departed VMs that are not configured here dropped".into());
    }
    let n = sf.commands.len();
    if n > MAX_PERSISTED_COMMANDS {
        sf.commands.drain(..n - MAX_PERSISTED_COMMANDS);
    }
    let mut ids = BTreeSet::new();
    sf.commands.retain(|c| {
        let ok = shoal_common::proto::valid_command_id(&c.id) && ids.insert(c.id.clone());
        if !ok {
            notes.push(format!("state file: command {:?} dropped", c.id));
        }
        ok
    });
    (sf, notes)
}

/// An empty state for `host_id`.
pub fn empty(host_id: &str) -> StateFile {
    StateFile {
        version: FORMAT_VERSION,
        host_id: host_id.to_string(),
        vms: Vec::new(),
        departed: BTreeSet::new(),
        commands: Vec::new(),
    }
}

/// The start time of process `pid` (`/proc/PID/stat` field 22) and whether
/// it is a zombie; None when there is no such process.
pub fn process_start(proc_root: &Path, pid: u32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    // Field 3 (state) is fields[0]: field 22 is fields[19].
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

/// Whether `p` is still the same live process.
pub fn alive(proc_root: &Path, p: ProcessId) -> bool {
    matches!(process_start(proc_root, p.pid), Some((s, false)) if s == p.start_ticks)
}

/// Whether process `pid` is a QEMU of VM `vm` using QMP socket `qmp`: its
/// command line has `-name VM` and names the socket.
pub fn is_qemu_of(proc_root: &Path, pid: u32, vm: &str, qmp: &Path) -> bool {
    let Ok(raw) = std::fs::read(proc_root.join(pid.to_string()).join("cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    let named = args
        .windows(2)
        .any(|w| w[0] == b"-name" && w[1] == vm.as_bytes());
    let sock = qmp.display().to_string();
    let with_qmp = args
        .iter()
        .any(|a| String::from_utf8_lossy(a).contains(sock.as_str()));
    named && with_qmp
}

/// The pid in QEMU's pid file, if it holds one.
pub fn read_pidfile(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    if text.len() > 32 {
        return None;
    }
    text.trim().parse().ok().filter(|p| *p > 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_common::proto::{Command, CommandState, VmBackendSpec};

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shoal-persist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn netns_vm(name: &str) -> VmInventory {
        VmInventory {
            environment: None,
            environment_head: false,
            name: name.into(),
            mac: "52:54:00:00:00:01".into(),
            ip: None,
            vcpus: 1,
            memory_mb: 64,
            max_memory_mb: 64,
            spec: VmBackendSpec::Netns {
                namespace: "ns".into(),
                iface: "eth0".into(),
                port: "p0".into(),
                vf_iface: None,
                vf_port: None,
                scenario: None,
                scenario_epoch_unix_ms: None,
            },
        }
    }

    fn cmd(id: &str) -> CommandStatus {
        CommandStatus {
            id: id.into(),
            command: Command::VfAttach { vm: "v".into() },
            state: CommandState::Succeeded,
            progress: None,
            result: None,
            error: None,
            created_unix_ms: 1,
            updated_unix_ms: 2,
        }
    }

    #[test]
    fn state_file_in_state_dir_else_run_dir() {
        let c = Config::parse("run_dir = \"/r\"", "t").unwrap();
        assert_eq!(state_path(&c), PathBuf::from("/r/hostd-state.json"));
        let c = Config::parse("run_dir = \"/r\"\nstate_dir = \"/s\"", "t").unwrap();
        assert_eq!(state_path(&c), PathBuf::from("/s/hostd-state.json"));
    }

    #[test]
    fn round_trip_atomic_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("rt");
        let p = d.join(STATE_FILE);
        assert!(load(&p).unwrap().is_none());
        let mut sf = empty("h1");
        sf.vms.push(VmRecord {
            inventory: netns_vm("v"),
            state: VmState::Running,
            origin: Origin::MigratedIn,
            process: Some(ProcessId {
                pid: 42,
                start_ticks: 7,
            }),
            vf_device: None,
        });
        sf.departed.insert("gone".into());
        sf.commands.push(cmd("c1"));
        save(&p, &sf).unwrap();
        assert_eq!(load(&p).unwrap(), Some(sf));
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "a temporary file left"
        );
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let d = dir("bad");
        let p = d.join(STATE_FILE);
        for text in ["", "{", "[]", "{\"version\":1}", "null", "\u{0}\u{1}"] {
            std::fs::write(&p, text).unwrap();
            assert!(
                matches!(load(&p), Err(PersistError::Parse { .. })),
                "{text:?}"
            );
        }
        let mut sf = empty("h1");
        sf.version = 99;
        std::fs::write(&p, serde_json::to_vec(&sf).unwrap()).unwrap();
        assert!(matches!(load(&p), Err(PersistError::Foreign { .. })));
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_STATE_BYTES + 1).unwrap();
        assert!(matches!(load(&p), Err(PersistError::TooLarge { .. })));
        let aside = set_aside(&p).unwrap();
        assert!(aside.exists() && !p.exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn sanitize_drops_what_does_not_fit() {
        let cfg = Config::parse(
            "bridge = \"br0\"\n[[vm]]\nname = \"x\"\nmac = \"52:54:00:00:00:09\"\nmemory_mb = 64\nbackend = \"netns\"\nnamespace = \"nsx\"\niface = \"eth0\"\nport = \"px\"\n",
            "t",
        )
        .unwrap();
        let mut sf = empty("h1");
        let ok = VmRecord {
            inventory: netns_vm("v"),
            state: VmState::Running,
            origin: Origin::Configured,
            process: None,
            vf_device: None,
        };
        let mut evil = ok.clone();
        evil.inventory.name = "../../etc".into();
        let mut twice = ok.clone();
        twice.state = VmState::Paused;
        let mut pid1 = ok.clone();
        pid1.inventory.name = "w".into();
        pid1.process = Some(ProcessId {
            pid: 1,
            start_ticks: 0,
        });
        let mut qemu = ok.clone();
        qemu.inventory.name = "q".into();
        qemu.inventory.spec = VmBackendSpec::Qemu {
            template: "nope".into(),
            disk: None,
            tap: None,
        };
        sf.vms = vec![ok.clone(), evil, twice, pid1, qemu];
        sf.departed = ["x".to_string(), "-rf".to_string(), "elsewhere".to_string()].into();
        sf.commands = (0..MAX_PERSISTED_COMMANDS + 5)
            .map(|i| cmd(&format!("c{i}")))
            .collect();
        sf.commands.push(cmd("bad id with spaces"));
        let (clean, notes) = sanitize(sf, &cfg, "h1");
        assert_eq!(clean.vms, vec![ok]);
        assert_eq!(clean.departed, ["x".to_string()].into());
        assert_eq!(clean.commands.len(), MAX_PERSISTED_COMMANDS - 1);
        assert!(notes.len() >= 5, "{notes:?}");
        let (other, notes) = sanitize(clean, &cfg, "h2");
        assert!(
            other.vms.is_empty() && other.commands.is_empty(),
            "{notes:?}"
        );
    }

    #[test]
    fn own_process_is_alive_and_not_qemu() {
        let me = std::process::id();
        let (start, zombie) = process_start(Path::new("/proc"), me).unwrap();
        assert!(!zombie);
        let p = ProcessId {
            pid: me,
            start_ticks: start,
        };
        assert!(alive(Path::new("/proc"), p));
        assert!(!alive(
            Path::new("/proc"),
            ProcessId {
                start_ticks: start + 1,
                ..p
            }
        ));
        assert!(!is_qemu_of(
            Path::new("/proc"),
            me,
            "v",
            Path::new("/x.qmp")
        ));
        let d = dir("pidfile");
        std::fs::write(d.join("p"), "1234\n").unwrap();
        assert_eq!(read_pidfile(&d.join("p")), Some(1234));
        std::fs::write(d.join("p"), "1\n").unwrap();
        assert_eq!(read_pidfile(&d.join("p")), None);
        std::fs::write(d.join("p"), "x").unwrap();
        assert_eq!(read_pidfile(&d.join("p")), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
