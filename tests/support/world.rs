//! Building blocks of the end-to-end test worlds: a hypervisor namespace
//! (dom0 on an OVS bridge plus a management link to the root namespace), a
//! `shoal-hostd` configuration for it, and the controller process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::qemu::move_into_ns;
use super::{cargo_bin, get_json, sh, wait_for, ChildGuard, Netns, OvsBridge, Result, Veth};

/// A hypervisor: a namespace whose `eth0` (dom0's data interface) is a port
/// of an OVS bridge and whose `mgmt` reaches the root namespace over a
/// point-to-point veth (`10.<mgmt_net>.<n>.2` inside, `.1` outside).
pub struct Hypervisor {
    /// Its namespace (deleted on drop, with everything inside).
    pub ns: Netns,
    /// Data address of dom0.
    pub data_ip: String,
    /// Management address (hostd listens here).
    pub mgmt_ip: String,
    /// Root-namespace end of the management link.
    pub root_ip: String,
    _links: Vec<Veth>,
}

impl Hypervisor {
    /// Creates hypervisor `name` (≤ 8 characters): dom0 `data_cidr` on
    /// `bridge` port `ofport` (none: no data interface), management subnet
    /// `10.<mgmt_net>.<n>.0/30`.
    pub fn new(
        name: &str,
        bridge: Option<(&OvsBridge, u16)>,
        data_cidr: &str,
        mgmt_net: u8,
        n: u8,
    ) -> Result<Hypervisor> {
        let ns = Netns::new(name)?;
        let mut links = Vec::new();
        if let Some((b, port)) = bridge {
            let (p, i) = (format!("{name}-dp"), format!("{name}-di"));
            let v = Veth::new(&p, &i)?;
            b.add_port(&p, port)?;
            move_into_ns(&i, &ns, "eth0", Some(data_cidr), None, true)?;
            links.push(v);
        }
        let (p, i) = (format!("{name}-mp"), format!("{name}-mi"));
        let v = Veth::new(&p, &i)?;
        let root_ip = format!("10.{mgmt_net}.{n}.1");
        let mgmt_ip = format!("10.{mgmt_net}.{n}.2");
        sh("ip", &["addr", "add", &format!("{root_ip}/30"), "dev", &p])?;
        move_into_ns(&i, &ns, "mgmt", Some(&format!("{mgmt_ip}/30")), None, true)?;
        links.push(v);
        Ok(Hypervisor {
            ns,
            data_ip: data_cidr.split('/').next().unwrap_or(data_cidr).to_string(),
            mgmt_ip,
            root_ip,
            _links: links,
        })
    }

    /// A hostd configuration for this hypervisor (netns backend, interval
    /// 1 s, scenario files in `dir`); `extra` is appended (VMs, testbed
    /// options).
    pub fn hostd_config(
        &self,
        id: &str,
        bridge: Option<&str>,
        api_port: u16,
        dir: &Path,
        extra: &str,
    ) -> String {
        let ctl = format!("controller = \"http://{}:{api_port}\"", self.root_ip);
        self.hostd_config_with(id, bridge, &ctl, dir, extra)
    }

    /// [`Hypervisor::hostd_config`] for the controllers listening on
    /// `ports` (a cluster's nodes, on every address: hostd fails over
    /// between them in this order).
    pub fn hostd_config_cluster(
        &self,
        id: &str,
        bridge: Option<&str>,
        ports: &[u16],
        dir: &Path,
        extra: &str,
    ) -> String {
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("\"http://{}:{p}\"", self.root_ip))
            .collect();
        let ctl = format!("controllers = [{}]", urls.join(", "));
        self.hostd_config_with(id, bridge, &ctl, dir, extra)
    }

    fn hostd_config_with(
        &self,
        id: &str,
        bridge: Option<&str>,
        controller_line: &str,
        dir: &Path,
        extra: &str,
    ) -> String {
        let bridge = bridge
            .map(|b| format!("bridge = \"{b}\"\nuplink = \"eth0\"\n"))
            .unwrap_or_default();
        format!(
            r#"host_id = "{id}"
{controller_line}
listen = "{mgmt}:7070"
api_url = "http://{mgmt}:7070"
dom0_addr = "{data}"
{auth}interval_s = 1
run_dir = "{run}"
scenario_dir = "{scenarios}"
http_timeout_s = 3
{bridge}{extra}
"#,
            mgmt = self.mgmt_ip,
            data = self.data_ip,
            auth = super::creds::hostd_auth(dir, id),
            run = dir.join(id).display(),
            scenarios = dir.display(),
        )
    }

    /// `IP:PORT` of this hypervisor's hostd.
    pub fn hostd_api(&self) -> String {
        format!("{}:7070", self.mgmt_ip)
    }
}

/// Starts `shoal-controller run --config CFG`, logging to `dir/log`, and
/// waits until its API answers at `api`.
pub fn start_controller(dir: &Path, cfg: &Path, log: &str, api: &str) -> Result<ChildGuard> {
    let logf = std::fs::File::create(dir.join(log))?;
    let c = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(logf),
    )?;
    wait_for("the controller API", Duration::from_secs(20), || {
        get_json(api, "/healthz").ok()
    })?;
    Ok(c)
}

/// Writes `dir/controller.toml` for the end-to-end tests: OpenFlow on
/// 127.0.0.1:`of_port`, the API on 0.0.0.0:`api_port` (hypervisor
/// namespaces reach it over their management links), the knowledge store at
/// `db`, the credentials of [`super::creds`] (token files in `dir`, one per
/// host of `hosts`), fast timers (Δ = 1 s), 100 Mbit/s links; `extra` is
/// appended (more sections).
pub fn write_controller_config(
    dir: &Path,
    of_port: u16,
    api_port: u16,
    db: &str,
    hosts: &[&str],
    extra: &str,
) -> Result<std::path::PathBuf> {
    let cfg = dir.join("controller.toml");
    let auth = super::creds::controller_auth(dir, hosts)?;
    std::fs::write(
        &cfg,
        format!(
            r#"of_listen = "127.0.0.1:{of_port}"
api_listen = "0.0.0.0:{api_port}"
db = "{db}"
{auth}[topology]
lldp_interval_s = 1.0
port_confirm_s = 1.5
link_capacity_bps = 100000000
[monitor]
interval_s = 1.0
{extra}
"#
        ),
    )?;
    Ok(cfg)
}

/// The directory of freshly built `shoal-controller` and `shoal-hostd`
/// (`cargo test` does not rebuild the binaries of other packages: build
/// them here so the testbed never runs stale ones).
pub fn fresh_bin_dir() -> std::path::PathBuf {
    let ctl = super::cargo_bin("shoal-controller");
    let release = ctl
        .parent()
        .and_then(std::path::Path::file_name)
        .is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-q",
        "-p",
        "shoal-controller",
        "--bin",
        "shoal-controller",
        "--manifest-path",
    ])
    .arg(super::workspace_root().join("Cargo.toml"));
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo");
    assert!(
        st.success() && ctl.is_file(),
        "cargo build -p shoal-controller failed"
    );
    let hostd = super::qemu::hostd_bin().expect("shoal-hostd");
    assert_eq!(
        hostd.parent(),
        ctl.parent(),
        "controller and hostd must come from the same target directory"
    );
    ctl.parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs `cmd` with a time limit; on timeout sends SIGTERM (the testbed
/// cleans up on it), then SIGKILL.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> (Option<i32>, bool) {
    let mut child = cmd.spawn().expect("spawn the testbed");
    let start = std::time::Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return (st.code(), false);
        }
        if start.elapsed() > limit {
            // SIGUSR1 first: the testbed prints every thread's stack to its
            // stderr, so that an overrun says where it was stuck.
            let _ = Command::new("kill")
                .args(["-USR1", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(1));
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = std::time::Instant::now();
            while grace.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(st)) = child.try_wait() {
                    return (st.code(), true);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = child.kill();
            let _ = child.wait();
            return (None, true);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
