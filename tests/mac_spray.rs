//! Bounded state under a MAC spray, with a real Open vSwitch (userspace
//! datapath) and the real `shoal-controller` binary:
//!
//! ```text
//!          shms-br (0x31)
//!        |1      |2      |3
//!        h1      h2      spray
//! ```
//!
//! `spray` sends 100,000 frames with distinct random (unicast, locally
//! administered) source MACs, half of them to h1's MAC (each would get a
//! pair flow) and half broadcast. With the default limits (64 MACs per edge
//! port) the controller's endpoint table, the switch's flow table and the
//! traffic matrix stay small, the API keeps answering during the spray, the
//! controller's memory stays bounded, the refused MACs are counted in
//! `/api/v1/limits`, and h1 and h2 still ping each other.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{
    cargo_bin, e2e_lock, free_port, get_json, is_root, wait_for, ChildGuard, NsHost, OvsBridge,
    PrivateOvs,
};

/// Frames (and distinct source MACs) sent by the spraying namespace.
const SPRAY: u32 = 100_000;
/// The default per-edge-port MAC limit.
const MAX_MACS_PER_PORT: usize = 64;

/// Sends `n` Ethernet frames with random source MACs out of `eth0`
/// (AF_PACKET raw socket): even ones to the MAC in argv[2], odd ones
/// broadcast. Prints the number sent.
const SENDER: &str = r#"
import os, socket, sys, time
n = int(sys.argv[1])
uni = bytes.fromhex(sys.argv[2].replace(':', ''))
bcast = b'\xff' * 6
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
rnd = os.urandom(6 * n)
tail = b'\x88\xb5' + bytes(46)
sent = 0
for i in range(n):
    src = bytearray(rnd[6 * i:6 * i + 6])
    src[0] = (src[0] & 0xfc) | 0x02
    frame = (uni if i % 2 == 0 else bcast) + bytes(src) + tail
    for _ in range(50):
        try:
            s.send(frame)
            sent += 1
            break
        except OSError:
            time.sleep(0.0005)
print(sent)
"#;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn count(api: &str, path: &str) -> usize {
    get_json(api, path)
        .ok()
        .and_then(|v| v.as_array().map(|a| a.len()))
        .unwrap_or(usize::MAX)
}

fn matrix_pairs(api: &str) -> usize {
    get_json(api, "/api/v1/traffic-matrix")
        .ok()
        .and_then(|v| v["pairs"].as_array().map(|a| a.len()))
        .unwrap_or(usize::MAX)
}

fn flows(br: &OvsBridge) -> usize {
    br.ofctl("dump-flows", &[])
        .map(|s| s.lines().filter(|l| l.contains("cookie=")).count())
        .unwrap_or(usize::MAX)
}

#[test]
fn a_mac_spray_cannot_grow_the_controller_state() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    for tool in ["ovs-vswitchd", "python3", "ethtool", "ping"] {
        assert!(
            Command::new("which")
                .arg(tool)
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false),
            "{tool} is missing: run the README's test command, which installs it"
        );
    }
    let ovs = PrivateOvs::start("shms", 29).expect("private OVS");
    let br = OvsBridge::new_in(ovs.ovs(), "shms-br", 0x31).unwrap();
    let h1 = NsHost::new(
        "shms-h1",
        &br,
        "shms-p1",
        1,
        "02:00:00:00:88:01",
        "10.88.0.1",
        24,
    )
    .unwrap();
    let h2 = NsHost::new(
        "shms-h2",
        &br,
        "shms-p2",
        2,
        "02:00:00:00:88:02",
        "10.88.0.2",
        24,
    )
    .unwrap();
    let spray = NsHost::new(
        "shms-sp",
        &br,
        "shms-p3",
        3,
        "02:00:00:00:88:03",
        "10.88.0.3",
        24,
    )
    .unwrap();

    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let dir = std::env::temp_dir().join("shoal-e2e-mac-spray");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("controller.toml");
    let auth = support::creds::controller_auth(&dir, &[]).unwrap();
    // Only settings the controller had before the limits: the limits are
    // their defaults.
    std::fs::write(
        &cfg,
        format!(
            r#"
of_listen = "{ip}:{of_port}"
api_listen = "{api}"
db = ":memory:"
{auth}
[openflow]
echo_interval_s = 1.0
[topology]
lldp_interval_s = 1.0
link_timeout_s = 3.5
port_confirm_s = 1.0
[forwarding]
pair_idle_timeout_s = 10
dest_idle_timeout_s = 30
[monitor]
interval_s = 1.0
window_intervals = 2
"#,
            ip = ovs.controller_ip()
        ),
    )
    .unwrap();
    let log = dir.join("controller.log");
    let ctl = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--log", "info"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    )
    .unwrap();
    wait_for("the API", Duration::from_secs(20), || {
        get_json(&api, "/healthz").ok()
    })
    .unwrap();
    br.set_controller(&format!("tcp:{}:{of_port}", ovs.controller_ip()))
        .unwrap();
    wait_for("the switch", Duration::from_secs(20), || {
        (count(&api, "/api/v1/switches") == 1).then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(h1.ping(&h2.ip, 3), "h1 cannot ping h2 before the spray");
    assert!(h2.ping(&h1.ip, 3), "h2 cannot ping h1 before the spray");
    let rss_before = rss_kib(ctl.id());
    let endpoints_before = count(&api, "/api/v1/endpoints");
    eprintln!(
        "before the spray: {endpoints_before} endpoints, {} flows, RSS {rss_before} KiB",
        flows(&br)
    );

    // The API must keep answering while the spray runs.
    let stop = Arc::new(AtomicBool::new(false));
    let worst_ms = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let prober = {
        let (stop, worst_ms, failures, api) = (
            stop.clone(),
            worst_ms.clone(),
            failures.clone(),
            api.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                if get_json(&api, "/healthz").is_err() {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                worst_ms.fetch_max(t.elapsed().as_millis() as u64, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let t = Instant::now();
    let out = spray
        .ns
        .command("python3", &["-c", SENDER, &SPRAY.to_string(), &h1.mac])
        .output()
        .expect("sender");
    let sent: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    eprintln!(
        "sent {sent} frames with random source MACs in {:.1} s ({})",
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(sent >= SPRAY * 9 / 10, "only {sent} frames sent");
    // Let the controller work through what reached it, and a few polls.
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::SeqCst);
    let _ = prober.join();

    let endpoints = count(&api, "/api/v1/endpoints");
    let n_flows = flows(&br);
    let pairs = matrix_pairs(&api);
    let rss_after = rss_kib(ctl.id());
    let limits = get_json(&api, "/api/v1/limits").unwrap_or_default();
    eprintln!(
        "after the spray: {endpoints} endpoints, {n_flows} flows, {pairs} matrix pairs, RSS {rss_after} KiB, API worst {} ms, {} failed probes; limits {limits}",
        worst_ms.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst)
    );
    assert!(
        endpoints <= MAX_MACS_PER_PORT + 2,
        "the endpoint table grew to {endpoints} (limit: {MAX_MACS_PER_PORT} per port + h1 + h2)"
    );
    assert!(
        n_flows <= 2 * MAX_MACS_PER_PORT + 50,
        "the flow table grew to {n_flows} flows"
    );
    assert!(
        pairs <= 2 * MAX_MACS_PER_PORT + 10,
        "the traffic matrix grew to {pairs} pairs"
    );
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "the API failed to answer during the spray"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "controller RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let refused = limits["forwarding"]["macs_refused"].as_u64().unwrap_or(0);
    assert!(
        refused > 0,
        "refused MACs are not counted in /api/v1/limits: {limits}"
    );
    assert!(h1.ping(&h2.ip, 3), "h1 cannot ping h2 after the spray");
    assert!(h2.ping(&h1.ip, 3), "h2 cannot ping h1 after the spray");
    drop(ctl);
}
