//! Test-bed support for Shoal's end-to-end tests (`mod support;` in each
//! `tests/*.rs`): network namespaces, Open vSwitch userspace bridges, veth
//! links and child processes, each removed again when its guard is dropped;
//! [`qemu`] has the QEMU and hostd helpers, [`world`] the data-center world
//! (controller, hypervisors, config files).
//!
//! Everything here creates its own objects with caller-chosen names and
//! deletes only what it created: never bridges, namespaces or processes of
//! somebody else. See `docs/testbed.md` for the facts these helpers rely on
//! (userspace datapath, TX checksum offload off for TCP).

// Each test uses only part of the support code.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod creds;
pub mod etcd;
pub mod migration;
pub mod ofpeer;
pub mod pki;
pub mod qemu;
pub mod sse;
pub mod world;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Errors of the test-bed helpers.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// A command could not be started at all.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Waiting for something timed out.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// Any other I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result type of the test-bed helpers.
pub type Result<T> = std::result::Result<T, TestbedError>;

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; fails when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    let out = cmd.output().map_err(|source| TestbedError::Spawn {
        cmd: line.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(TestbedError::Failed {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// Runs `program args...` and returns its stdout as a string.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = run(Command::new(program).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when the current process runs as root (the end-to-end tests need it).
pub fn is_root() -> bool {
    sh("id", &["-u"]).map(|s| s.trim() == "0").unwrap_or(false)
}

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts Open vSwitch with `ovs-scripts/start-ovs.sh` (idempotent).
pub fn ensure_ovs() -> Result<()> {
    let script = workspace_root().join("ovs-scripts/start-ovs.sh");
    run(&mut Command::new(script)).map(|_| ())
}

/// A process-wide lock held by one end-to-end test at a time across all
/// test binaries, so that tests sharing Open vSwitch and two cores do not
/// disturb each other's rates. Dropping it releases the lock.
pub struct E2eLock {
    _file: File,
}

/// Takes the end-to-end lock (blocks until it is free).
pub fn e2e_lock() -> Result<E2eLock> {
    let path = std::env::temp_dir().join("shoal-e2e.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.lock()?;
    Ok(E2eLock { _file: file })
}

/// Returns a TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Polls `f` every 100 ms until it returns `Some`, or times out.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(TestbedError::Timeout(timeout, what.to_string()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A network namespace, deleted (with everything inside) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (deleting a stale one of the same name that
    /// an earlier run of the same test left behind) and brings up its `lo`.
    pub fn new(name: &str) -> Result<Self> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        sh("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program args...` inside the namespace.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c
    }

    /// Runs `program args...` inside the namespace to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = run(&mut self.command(program, args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `program args...` inside the namespace; killed on drop.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<ChildGuard> {
        ChildGuard::spawn(self.command(program, args).stdout(Stdio::null()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside, then delete the namespace.
        if let Ok(pids) = sh("ip", &["netns", "pids", &self.name]) {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Which Open vSwitch instance commands talk to: the system one, or a
/// [`PrivateOvs`] (its run directory and network namespace).
#[derive(Debug, Clone, Default)]
pub struct Ovs {
    rundir: Option<PathBuf>,
    netns: Option<String>,
}

impl Ovs {
    /// The system instance (`/var/run/openvswitch`).
    pub fn system() -> Self {
        Ovs::default()
    }

    /// A `Command` running an OVS tool (or anything) against this instance
    /// (inside its namespace, with its `OVS_RUNDIR`).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        c.args(args);
        if let Some(d) = &self.rundir {
            c.env("OVS_RUNDIR", d)
                .env("OVS_DBDIR", d)
                .env("OVS_LOGDIR", d)
                .env("OVS_SYSCONFDIR", d);
        }
        c
    }

    /// Runs a command against this instance; stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = run(&mut self.command(program, args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The namespace the instance's datapath lives in (None: root).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }
}

/// An Open vSwitch bridge on the userspace datapath, deleted on drop.
pub struct OvsBridge {
    name: String,
    ovs: Ovs,
}

impl OvsBridge {
    /// Creates bridge `name` with `datapath_type=netdev`, OpenFlow 1.3 only,
    /// fail-mode secure and the given datapath id (a stale bridge of the same
    /// name from an earlier run of the same test is replaced).
    pub fn new(name: &str, dpid: u64) -> Result<Self> {
        Self::new_in(&Ovs::system(), name, dpid)
    }

    /// Like [`OvsBridge::new`], in the given OVS instance.
    pub fn new_in(ovs: &Ovs, name: &str, dpid: u64) -> Result<Self> {
        let dpid_s = format!("other-config:datapath-id={dpid:016x}");
        ovs.run(
            "ovs-vsctl",
            &[
                "--may-exist",
                "add-br",
                name,
                "--",
                "set",
                "bridge",
                name,
                "datapath_type=netdev",
                "protocols=OpenFlow13",
                "fail-mode=secure",
                &dpid_s,
            ],
        )?;
        Ok(OvsBridge {
            name: name.to_string(),
            ovs: ovs.clone(),
        })
    }

    /// The OVS instance the bridge lives in.
    pub fn ovs(&self) -> &Ovs {
        &self.ovs
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds interface `port` with an explicit OpenFlow port number.
    pub fn add_port(&self, port: &str, ofport: u16) -> Result<()> {
        let req = format!("ofport_request={ofport}");
        self.ovs
            .run(
                "ovs-vsctl",
                &[
                    "--may-exist",
                    "add-port",
                    &self.name,
                    port,
                    "--",
                    "set",
                    "interface",
                    port,
                    &req,
                ],
            )
            .map(|_| ())
    }

    /// Points the bridge at a controller, e.g. `tcp:127.0.0.1:6653`.
    pub fn set_controller(&self, target: &str) -> Result<()> {
        self.ovs
            .run("ovs-vsctl", &["set-controller", &self.name, target])
            .map(|_| ())
    }

    /// `ovs-ofctl -O OpenFlow13 SUBCOMMAND BRIDGE args...`, stdout.
    pub fn ofctl(&self, sub: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["-O", "OpenFlow13", sub, self.name.as_str()];
        all.extend_from_slice(args);
        self.ovs.run("ovs-ofctl", &all)
    }

    /// True when the bridge reports a connected controller.
    pub fn is_connected(&self) -> bool {
        let Ok(ids) = self
            .ovs
            .run("ovs-vsctl", &["get", "bridge", &self.name, "controller"])
        else {
            return false;
        };
        ids.trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace())
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .any(|id| {
                self.ovs
                    .run("ovs-vsctl", &["get", "controller", id, "is_connected"])
                    .map(|s| s.trim() == "true")
                    .unwrap_or(false)
            })
    }
}

impl Drop for OvsBridge {
    fn drop(&mut self) {
        let _ = self
            .ovs
            .command("ovs-vsctl", &["--if-exists", "del-br", &self.name])
            .status();
    }
}

/// Turns TX checksum offload off on `iface` (optionally inside `ns`):
/// TCP through a userspace bridge needs it (docs/testbed.md).
pub fn offload_off(ns: Option<&Netns>, iface: &str) -> Result<()> {
    match ns {
        Some(ns) => ns.exec("ethtool", &["-K", iface, "tx", "off"]).map(|_| ()),
        None => sh("ethtool", &["-K", iface, "tx", "off"]).map(|_| ()),
    }
}

/// A veth pair whose root-namespace end is deleted on drop (which removes
/// the peer too).
pub struct Veth {
    root_end: String,
}

impl Veth {
    /// Creates `a`–`b`, both up, TX offload off, in the root namespace.
    pub fn new(a: &str, b: &str) -> Result<Self> {
        let _ = Command::new("ip")
            .args(["link", "del", a])
            .stderr(Stdio::null())
            .status();
        sh("ip", &["link", "add", a, "type", "veth", "peer", "name", b])?;
        let v = Veth {
            root_end: a.to_string(),
        };
        for i in [a, b] {
            sh("ip", &["link", "set", i, "up"])?;
            offload_off(None, i)?;
        }
        Ok(v)
    }

    /// Name of the end that stays in the root namespace.
    pub fn root_end(&self) -> &str {
        &self.root_end
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // (When the root end was moved into a namespace, deleting that
        // namespace removes the pair; this then fails quietly.)
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_end])
            .stderr(Stdio::null())
            .status();
    }
}

/// A private Open vSwitch instance (ovsdb-server + ovs-vswitchd) in its own
/// network namespace and run directory, so that a test may kill and restart
/// `ovs-vswitchd` without touching anybody else's switches. (Two userspace
/// datapaths cannot share a namespace: each creates the `ovs-netdev` tap.)
///
/// The namespace reaches the root namespace over a veth pair
/// (`10.254.N.1` root side, `10.254.N.2` inside), so switches connect to a
/// controller listening in the root namespace at [`PrivateOvs::controller_ip`].
pub struct PrivateOvs {
    ovs: Ovs,
    ns: Netns,
    dir: PathBuf,
    _uplink: Veth,
    n: u8,
}

impl PrivateOvs {
    /// Starts instance `name` (namespace and directory names derive from it;
    /// `n` picks the 10.254.n.0/30 uplink subnet and must be unique among
    /// concurrently running instances).
    pub fn start(name: &str, n: u8) -> Result<Self> {
        let ns = Netns::new(name)?;
        let dir = std::env::temp_dir().join(format!("shoal-ovs-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let root_end = format!("{name}-u");
        let inner = format!("{name}-v");
        let uplink = Veth::new(&root_end, &inner)?;
        sh(
            "ip",
            &["addr", "add", &format!("10.254.{n}.1/30"), "dev", &root_end],
        )?;
        sh("ip", &["link", "set", &inner, "netns", ns.name()])?;
        ns.exec(
            "ip",
            &["addr", "add", &format!("10.254.{n}.2/30"), "dev", &inner],
        )?;
        ns.exec("ip", &["link", "set", &inner, "up"])?;
        let ovs = Ovs {
            rundir: Some(dir.clone()),
            netns: Some(ns.name().to_string()),
        };
        let db = dir.join("conf.db");
        let db_s = db.to_string_lossy().into_owned();
        ovs.run(
            "ovsdb-tool",
            &["create", &db_s, "/usr/share/openvswitch/vswitch.ovsschema"],
        )?;
        let sock = format!("punix:{}", dir.join("db.sock").display());
        let pid = format!("--pidfile={}", dir.join("ovsdb-server.pid").display());
        let log = format!("--log-file={}", dir.join("ovsdb-server.log").display());
        ovs.run(
            "ovsdb-server",
            &[&db_s, &format!("--remote={sock}"), &pid, "--detach", &log],
        )?;
        ovs.run("ovs-vsctl", &["--no-wait", "init"])?;
        let me = PrivateOvs {
            ovs,
            ns,
            dir,
            _uplink: uplink,
            n,
        };
        me.start_vswitchd()?;
        Ok(me)
    }

    /// The instance, for [`OvsBridge::new_in`].
    pub fn ovs(&self) -> &Ovs {
        &self.ovs
    }

    /// The namespace of the datapath.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The `ovs-vswitchd` log of this instance.
    pub fn vswitchd_log(&self) -> PathBuf {
        self.dir.join("ovs-vswitchd.log")
    }

    /// The root-namespace address switches of this instance can reach.
    pub fn controller_ip(&self) -> String {
        format!("10.254.{}.1", self.n)
    }

    /// Starts (or restarts) `ovs-vswitchd` and waits until it answers.
    pub fn start_vswitchd(&self) -> Result<()> {
        let db = format!("unix:{}", self.dir.join("db.sock").display());
        let pid = format!("--pidfile={}", self.dir.join("ovs-vswitchd.pid").display());
        let log = format!("--log-file={}", self.dir.join("ovs-vswitchd.log").display());
        self.ovs
            .run("ovs-vswitchd", &[&db, &pid, "--detach", &log])?;
        wait_for("ovs-vswitchd to answer", Duration::from_secs(10), || {
            self.ovs
                .run("ovs-appctl", &["-t", "ovs-vswitchd", "version"])
                .ok()
        })
        .map(|_| ())
    }

    /// Kills `ovs-vswitchd` with SIGKILL (the database and its bridges stay).
    pub fn kill_vswitchd(&self) -> Result<()> {
        let pid = std::fs::read_to_string(self.dir.join("ovs-vswitchd.pid"))?;
        sh("kill", &["-9", pid.trim()])?;
        let pid = pid.trim().to_string();
        wait_for("ovs-vswitchd to die", Duration::from_secs(5), || {
            (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        })
    }

    /// Adds a veth "cable" between two bridges of this instance.
    pub fn cable(
        &self,
        a: &OvsBridge,
        a_port: (&str, u16),
        b: &OvsBridge,
        b_port: (&str, u16),
    ) -> Result<()> {
        // The pair moves into the namespace and goes with it: no guard.
        Veth::new(a_port.0, b_port.0).map(std::mem::forget)?;
        for p in [a_port.0, b_port.0] {
            sh("ip", &["link", "set", p, "netns", self.ns.name()])?;
            self.ns.exec("ip", &["link", "set", p, "up"])?;
            self.ns.exec("ethtool", &["-K", p, "tx", "off"])?;
        }
        a.add_port(a_port.0, a_port.1)?;
        b.add_port(b_port.0, b_port.1)
    }
}

impl Drop for PrivateOvs {
    fn drop(&mut self) {
        for f in ["ovs-vswitchd.pid", "ovsdb-server.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(f)) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The namespace (and every veth end inside it) goes with self.ns.
    }
}

/// A "VM" standing in a namespace with one interface `eth0` plugged into an
/// OVS bridge through a veth pair.
pub struct NsHost {
    /// The namespace (deleted on drop).
    pub ns: Netns,
    /// The veth whose root end is the bridge port.
    pub link: Veth,
    /// MAC address of `eth0`.
    pub mac: String,
    /// IPv4 address of `eth0` (without prefix length).
    pub ip: String,
}

impl NsHost {
    /// Creates namespace `name` with `eth0` (MAC `mac`, address `ip/prefix`)
    /// and plugs the peer `port` into `bridge` as OpenFlow port `ofport`.
    pub fn new(
        name: &str,
        bridge: &OvsBridge,
        port: &str,
        ofport: u16,
        mac: &str,
        ip: &str,
        prefix: u8,
    ) -> Result<Self> {
        let ns = Netns::new(name)?;
        let inner = format!("{port}i");
        let link = Veth::new(port, &inner)?;
        sh("ip", &["link", "set", &inner, "netns", ns.name()])?;
        if let Some(ovs_ns) = bridge.ovs().netns() {
            sh("ip", &["link", "set", port, "netns", ovs_ns])?;
            bridge.ovs().run("ip", &["link", "set", port, "up"])?;
            bridge.ovs().run("ethtool", &["-K", port, "tx", "off"])?;
        }
        ns.exec("ip", &["link", "set", &inner, "name", "eth0"])?;
        ns.exec("ip", &["link", "set", "eth0", "address", mac])?;
        let cidr = format!("{ip}/{prefix}");
        ns.exec("ip", &["addr", "add", &cidr, "dev", "eth0"])?;
        ns.exec("ip", &["link", "set", "eth0", "up"])?;
        offload_off(Some(&ns), "eth0")?;
        bridge.add_port(port, ofport)?;
        Ok(NsHost {
            ns,
            link,
            mac: mac.to_string(),
            ip: ip.to_string(),
        })
    }

    /// Pings `dst` `count` times (0.2 s apart, 1 s deadline each); true when
    /// at least one reply came back.
    pub fn ping(&self, dst: &str, count: u32) -> bool {
        let c = count.to_string();
        self.ns
            .command("ping", &["-c", &c, "-i", "0.2", "-W", "1", "-q", dst])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns the command.
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        let line = describe(cmd);
        let child = cmd
            .spawn()
            .map_err(|source| TestbedError::Spawn { cmd: line, source })?;
        Ok(ChildGuard { child: Some(child) })
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits up to `grace` before killing.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// The child's exit status if it has ended (None: still running).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Sends `signal` (a `kill` name such as `HUP`) to the child.
    pub fn signal(&self, signal: &str) -> Result<()> {
        run(Command::new("kill").args([format!("-{signal}"), self.id().to_string()])).map(|_| ())
    }

    /// Waits for the child to exit (no timeout).
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.take()?.wait().ok()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Path of a binary built by Cargo for this workspace (`target/<profile>/`),
/// found from the test executable's own location.
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("."));
    // target/<profile>/deps/<test-exe>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target/debug"));
    dir.join(name)
}

pub use qemu::http;

/// GET `path` from `addr` as the read-only operator of [`creds`] and parse
/// the JSON body (errors on non-2xx).
pub fn get_json(addr: &str, path: &str) -> Result<serde_json::Value> {
    let (code, body) = qemu::http(addr, "GET", path, Some(creds::READER_TOKEN), None)?;
    if !(200..300).contains(&code) {
        return Err(TestbedError::Failed {
            cmd: format!("GET {path}"),
            status: code.to_string(),
            stderr: body,
        });
    }
    serde_json::from_str(&body).map_err(|e| TestbedError::Failed {
        cmd: format!("GET {path}"),
        status: "bad JSON".into(),
        stderr: e.to_string(),
    })
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> Result<TempDir> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
