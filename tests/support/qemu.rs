//! Test-bed helpers for hostd's end-to-end tests: the QEMU test guest,
//! `shoal-hostd` processes inside namespaces, a tiny blocking HTTP client
//! and a recording stand-in for the controller's hostd endpoints.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{sh, workspace_root, ChildGuard, Netns, Result, TestbedError};

/// The setup command that installs QEMU and the guest's build tools.
pub const INSTALL_QEMU: &str = "hostd/guest/install-qemu.sh";
/// The setup command that builds the test guest.
pub const BUILD_GUEST: &str = "hostd/guest/build.sh";

/// Kernel and initramfs of the test guest.
#[derive(Debug, Clone)]
pub struct Guest {
    /// `vmlinuz`.
    pub kernel: PathBuf,
    /// `initramfs.gz` (busybox + the dirtier).
    pub initrd: PathBuf,
}

impl Guest {
    /// A machine template (`[templates.NAME] args`, see docs/hostd.md) of a
    /// TCG guest dirtying `dirty_mbps` MiB/s, its `eth0` (if it has a
    /// virtio-net NIC) at `ip` (`A.B.C.D/P`), plus `extra` (more template
    /// arguments). Memory and vCPUs are the placeholders `{memory_mb}` and
    /// `{vcpus}`; hostd adds QMP, serial and `-incoming`.
    pub fn template(&self, dirty_mbps: u32, ip: Option<&str>, extra: &[&str]) -> Vec<String> {
        let mut append = format!("console=ttyS0 quiet panic=-1 shoal.dirty={dirty_mbps}");
        if let Some(ip) = ip {
            append.push_str(&format!(" shoal.ip={ip}"));
        }
        let mut v: Vec<String> = [
            "-accel",
            "tcg,tb-size=16",
            "-m",
            "{memory_mb}",
            "-smp",
            "{vcpus}",
            "-nodefaults",
            "-vga",
            "none",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            &self.kernel.display().to_string(),
            "-initrd",
            &self.initrd.display().to_string(),
            "-append",
            &append,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }
}

/// `[templates.NAME]` with `args` for a hostd configuration (TOML).
pub fn template_toml(name: &str, args: &[String]) -> String {
    format!(
        "[templates.{name}]\nargs = {}\n",
        serde_json::to_string(args).unwrap_or_default()
    )
}

/// Checks that QEMU is installed and the test guest is built; the error
/// names the setup command to run.
pub fn require_qemu_and_guest() -> Result<Guest> {
    let qemu_ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !qemu_ok {
        return Err(TestbedError::Failed {
            cmd: "qemu-system-x86_64 --version".into(),
            status: "missing".into(),
            stderr: format!("QEMU is not installed: run `{INSTALL_QEMU}` then `{BUILD_GUEST}`"),
        });
    }
    let dir = std::env::var_os("SHOAL_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/guest"));
    let g = Guest {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initramfs.gz"),
    };
    if !g.kernel.is_file() || !g.initrd.is_file() {
        return Err(TestbedError::Failed {
            cmd: format!("test guest in {}", dir.display()),
            status: "missing".into(),
            stderr: format!(
                "the test guest is not built: run `{BUILD_GUEST}` (after `{INSTALL_QEMU}`)"
            ),
        });
    }
    Ok(g)
}

/// Sets an OVS bridge to fail-mode standalone (a plain learning switch
/// while no controller is connected).
pub fn set_standalone(bridge: &str) -> Result<()> {
    sh("ovs-vsctl", &["set-fail-mode", bridge, "standalone"]).map(|_| ())
}

/// Puts `iface` (a root-namespace interface) into `ns` as `new_name` with
/// `cidr`, up, TX offload off.
pub fn move_into_ns(
    iface: &str,
    ns: &Netns,
    new_name: &str,
    cidr: Option<&str>,
    mac: Option<&str>,
    up: bool,
) -> Result<()> {
    sh("ip", &["link", "set", iface, "netns", ns.name()])?;
    ns.exec("ip", &["link", "set", iface, "name", new_name])?;
    if let Some(m) = mac {
        ns.exec("ip", &["link", "set", new_name, "address", m])?;
    }
    if let Some(c) = cidr {
        ns.exec("ip", &["addr", "add", c, "dev", new_name])?;
    }
    if up {
        ns.exec("ip", &["link", "set", new_name, "up"])?;
    }
    super::offload_off(Some(ns), new_name)
}

/// Builds `shoal-hostd` (same profile as the running test) once per test
/// process, so that the end-to-end tests never run a stale or missing
/// binary; returns its path.
pub fn hostd_bin() -> Result<PathBuf> {
    static BUILT: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = super::cargo_bin("shoal-hostd");
            let release = bin
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n == "release")
                .unwrap_or(false);
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let manifest = workspace_root().join("Cargo.toml");
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "-q",
                "-p",
                "shoal-hostd",
                "--bin",
                "shoal-hostd",
                "--manifest-path",
            ])
            .arg(&manifest);
            if release {
                cmd.arg("--release");
            }
            match cmd.status() {
                Ok(s) if s.success() && bin.is_file() => Ok(bin),
                Ok(s) => Err(format!(
                    "`cargo build -p shoal-hostd` failed ({s}); build it by hand and retry"
                )),
                Err(e) => Err(format!("cannot run cargo to build shoal-hostd: {e}")),
            }
        })
        .clone()
        .map_err(|e| TestbedError::Io(std::io::Error::other(e)))
}

/// Asks the guest (through its serial console socket) to dirty `mbps`
/// MiB/s from now on.
pub fn set_guest_dirty_rate(serial_socket: &Path, mbps: u32) -> Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(serial_socket)?;
    s.write_all(format!("rate {mbps}\n").as_bytes())?;
    s.flush()?;
    // Keep the connection until the guest has read the line.
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// A `shoal-hostd` running inside a namespace, killed on drop; its stderr
/// goes to a log file.
pub struct Hostd {
    /// The process.
    pub child: ChildGuard,
    /// Its log file.
    pub log: PathBuf,
    /// `IP:PORT` of its API.
    pub api: String,
}

impl Hostd {
    /// Writes `config` to `dir/hostd.toml` and starts `shoal-hostd -c` in
    /// `ns` (None: this namespace), logging to `dir/hostd.log`; waits until
    /// `/healthz` answers on `api`.
    pub fn start(ns: Option<&Netns>, dir: &Path, config: &str, api: &str) -> Result<Hostd> {
        let a = api.to_string();
        Self::start_until(ns, dir, config, api, move || {
            http(&a, "GET", "/healthz", None, None)
                .ok()
                .is_some_and(|(c, _)| c == 200)
        })
    }

    /// Like [`Hostd::start`] for a hostd serving HTTPS: waits until
    /// `https://{api}/healthz` answers through `client`.
    pub fn start_tls(
        ns: Option<&Netns>,
        dir: &Path,
        config: &str,
        api: &str,
        client: &shoal_common::http::HttpClient,
    ) -> Result<Hostd> {
        let url = format!("https://{api}/healthz");
        let client = client.clone();
        Self::start_until(ns, dir, config, api, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()
                .and_then(|rt| {
                    rt.block_on(client.send(shoal_common::http::Method::GET, &url, None, None))
                        .ok()
                })
                .is_some_and(|(c, _)| c == 200)
        })
    }

    fn start_until(
        ns: Option<&Netns>,
        dir: &Path,
        config: &str,
        api: &str,
        mut ready: impl FnMut() -> bool,
    ) -> Result<Hostd> {
        std::fs::create_dir_all(dir)?;
        let cfg = dir.join("hostd.toml");
        std::fs::write(&cfg, config)?;
        let log = dir.join("hostd.log");
        let logf = std::fs::File::create(&log)?;
        let bin = hostd_bin()?;
        let cfg_arg = cfg.display().to_string();
        let mut cmd = match ns {
            Some(ns) => ns.command(&bin.display().to_string(), &["-c", &cfg_arg]),
            None => {
                let mut c = Command::new(&bin);
                c.args(["-c", &cfg_arg]);
                c
            }
        };
        cmd.env("RUST_LOG", "info,shoal_hostd=debug")
            .stdout(Stdio::null())
            .stderr(logf);
        let child = ChildGuard::spawn(&mut cmd)?;
        let h = Hostd {
            child,
            log,
            api: api.to_string(),
        };
        let ok = super::wait_for("hostd /healthz", Duration::from_secs(30), || {
            ready().then_some(())
        });
        if let Err(e) = ok {
            let text = std::fs::read_to_string(&h.log).unwrap_or_default();
            return Err(TestbedError::Failed {
                cmd: format!(
                    "shoal-hostd in {}",
                    ns.map(|n| n.name()).unwrap_or("this namespace")
                ),
                status: e.to_string(),
                stderr: text,
            });
        }
        Ok(h)
    }

    /// `method path` with the token; (status, body).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        http(&self.api, method, path, Some(token), body)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A blocking HTTP/1.1 call (`Connection: close`, 10 s timeouts).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| TestbedError::Io(std::io::Error::other(format!("{addr}: {e}"))))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(rest.get(..n).unwrap_or(rest));
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// One request the controller stand-in received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// `Authorization` header value.
    pub auth: String,
    /// Body.
    pub body: String,
}

/// Records the registrations and reports hostds send (answers 200 `{}`,
/// or 401 unless the request carries the token of the host it names,
/// [`super::creds::host_token`]). Stops on drop.
pub struct ControllerSink {
    /// `IP:PORT` it listens on.
    pub addr: String,
    /// Everything received.
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

impl ControllerSink {
    /// Listens on `bind` (`IP:0` for any port).
    pub fn start(bind: &str) -> Result<ControllerSink> {
        let l = TcpListener::bind(bind)?;
        l.set_nonblocking(true)?;
        let addr = l.local_addr()?.to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (r, st) = (r.clone(), st.clone());
                        std::thread::spawn(move || serve_one(s, &r, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(ControllerSink {
            addr,
            requests,
            stop,
        })
    }

    /// Bodies of requests whose method and path match, in order.
    pub fn bodies(&self, method: &str, path: &str) -> Vec<serde_json::Value> {
        self.requests
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|r| r.method == method && r.path == path)
                    .filter_map(|r| serde_json::from_str(&r.body).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for ControllerSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves one connection's requests until EOF, or until the sink stops
/// (then the connection is closed without an answer, as by a process that
/// died).
fn serve_one(s: TcpStream, log: &Mutex<Vec<Recorded>>, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut rd = BufReader::new(s);
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).unwrap_or(0) == 0 || stop.load(Ordering::Relaxed) {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if rd.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if rd.read_exact(&mut body).is_err() {
            return;
        }
        let auth = headers.get("authorization").cloned().unwrap_or_default();
        let host = path
            .strip_prefix("/api/v1/hosts/")
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        let ok = !host.is_empty() && auth == format!("Bearer {}", super::creds::host_token(host));
        if let Ok(mut l) = log.lock() {
            l.push(Recorded {
                method,
                path,
                auth,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        let (code, text) = if ok {
            ("200 OK", "{}")
        } else {
            ("401 Unauthorized", "{\"error\":\"bad token\"}")
        };
        let resp = format!(
            "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// The last `shoal-uptime N` counter the guest printed in `console_log`.
pub fn last_uptime(console_log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(console_log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| l.trim().strip_prefix("shoal-uptime "))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .next()
}

/// The QEMU processes whose parent is `parent` (a hostd): (pid, command
/// line with spaces between the arguments).
pub fn qemu_children(parent: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // `/proc/PID/stat`: "pid (comm) state ppid ..."; comm may hold spaces.
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.contains("qemu")) {
            out.push((pid, args.join(" ")));
        }
    }
    out
}

/// Kills the given processes (SIGKILL, by pid).
pub fn kill_pids(pids: &[(u32, String)]) {
    for (pid, _) in pids {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}
