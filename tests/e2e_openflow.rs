//! End to end with a real Open vSwitch (userspace datapath) and the real
//! `shoal-controller` binary:
//!
//! ```text
//!             agg (0x11)
//!           /1    |2    \3
//!        10/    10|      \10
//!   hv1 (0x21)--hv2 (0x22) hv3 (0x23)     hv1:11 — hv2:11 is the redundant link
//!    |1   |2      |1        |1
//!    h1   h2      h3        h4
//! ```
//!
//! Checks: every pair pings; `/api/v1/links` is exactly the cabling; two UDP
//! iperf3 flows (20 and 5 Mbit/s) show in `/api/v1/traffic-matrix` within
//! ±10 % after 3 intervals with the right class (h1→h2 IDC, h3→h4 NIC);
//! after the flows stop and their entries expire their bytes are still
//! counted; a killed and restarted `ovs-vswitchd` reconnects and the rates
//! are right again, without double counting.
//!
//! The switches run in a private OVS instance (own namespace), so killing
//! its `ovs-vswitchd` touches nobody else.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    cargo_bin, e2e_lock, free_port, get_json, is_root, wait_for, ChildGuard, NsHost, OvsBridge,
    PrivateOvs,
};

const INTERVAL_S: f64 = 2.0;
/// UDP payload per datagram; a frame adds 8 (UDP) + 20 (IP) + 14 (Ethernet).
const PAYLOAD: f64 = 1400.0;
const FRAME: f64 = PAYLOAD + 42.0;

struct Net {
    _hosts: Vec<NsHost>,
    bridges: Vec<OvsBridge>,
    ovs: PrivateOvs,
}

fn host(net: &Net, i: usize) -> &NsHost {
    &net._hosts[i]
}

fn build() -> Net {
    let ovs = PrivateOvs::start("shof", 11).expect("private OVS");
    let o = ovs.ovs().clone();
    let agg = OvsBridge::new_in(&o, "shof-agg", 0x11).unwrap();
    let hv1 = OvsBridge::new_in(&o, "shof-hv1", 0x21).unwrap();
    let hv2 = OvsBridge::new_in(&o, "shof-hv2", 0x22).unwrap();
    let hv3 = OvsBridge::new_in(&o, "shof-hv3", 0x23).unwrap();
    ovs.cable(&agg, ("shof-a1", 1), &hv1, ("shof-1a", 10))
        .unwrap();
    ovs.cable(&agg, ("shof-a2", 2), &hv2, ("shof-2a", 10))
        .unwrap();
    ovs.cable(&agg, ("shof-a3", 3), &hv3, ("shof-3a", 10))
        .unwrap();
    ovs.cable(&hv1, ("shof-12", 11), &hv2, ("shof-21", 11))
        .unwrap();
    let hosts = vec![
        NsHost::new(
            "shof-h1",
            &hv1,
            "shof-p1",
            1,
            "02:00:00:00:77:01",
            "10.77.0.1",
            24,
        )
        .unwrap(),
        NsHost::new(
            "shof-h2",
            &hv1,
            "shof-p2",
            2,
            "02:00:00:00:77:02",
            "10.77.0.2",
            24,
        )
        .unwrap(),
        NsHost::new(
            "shof-h3",
            &hv2,
            "shof-p3",
            1,
            "02:00:00:00:77:03",
            "10.77.0.3",
            24,
        )
        .unwrap(),
        NsHost::new(
            "shof-h4",
            &hv3,
            "shof-p4",
            1,
            "02:00:00:00:77:04",
            "10.77.0.4",
            24,
        )
        .unwrap(),
    ];
    Net {
        _hosts: hosts,
        bridges: vec![agg, hv1, hv2, hv3],
        ovs,
    }
}

fn expected_links() -> BTreeSet<(String, u32, String, u32)> {
    let d = |x: u64| format!("{x:016x}");
    let cables = [
        (0x11, 1, 0x21, 10),
        (0x11, 2, 0x22, 10),
        (0x11, 3, 0x23, 10),
        (0x21, 11, 0x22, 11),
    ];
    cables
        .iter()
        .flat_map(|&(a, ap, b, bp)| [(d(a), ap, d(b), bp), (d(b), bp, d(a), ap)])
        .collect()
}

fn links(api: &str) -> BTreeSet<(String, u32, String, u32)> {
    get_json(api, "/api/v1/links")
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|l| {
            Some((
                l["src"]["dpid"].as_str()?.to_string(),
                l["src"]["port"].as_u64()? as u32,
                l["dst"]["dpid"].as_str()?.to_string(),
                l["dst"]["port"].as_u64()? as u32,
            ))
        })
        .collect()
}

fn wait_topology(api: &str) {
    let want = expected_links();
    wait_for(
        "4 switches and exactly the cabled links",
        Duration::from_secs(30),
        || {
            let n = get_json(api, "/api/v1/switches").ok()?.as_array()?.len();
            (n == 4 && links(api) == want).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: links now {:?}", links(api)));
}

fn pair<'a>(m: &'a Value, src: &str, dst: &str) -> Option<&'a Value> {
    m["pairs"]
        .as_array()?
        .iter()
        .find(|p| p["src"] == src && p["dst"] == dst)
}

/// Runs a UDP iperf3 client in `from` towards `to_ip` for `secs` at `mbit`;
/// returns the child (JSON on stdout).
fn iperf_udp(from: &NsHost, to_ip: &str, port: u16, mbit: u32, secs: u32) -> std::process::Child {
    from.ns
        .command(
            "iperf3",
            &[
                "-c",
                to_ip,
                "-p",
                &port.to_string(),
                "-u",
                "-b",
                &format!("{mbit}M"),
                "-l",
                &(PAYLOAD as u32).to_string(),
                "-t",
                &secs.to_string(),
                "-J",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 client")
}

/// The client's JSON report.
fn iperf_json(out: std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("iperf3 JSON")
}

/// Frame bytes/s the client sent over `[from_s, to_s]` (seconds since it
/// started), from its per-second intervals (an interval partly inside
/// counts pro rata): what the switch saw, however fast the sender managed
/// to send on a busy machine.
fn sent_rate(v: &Value, from_s: f64, to_s: f64) -> f64 {
    let mut bytes = 0.0;
    for i in v["intervals"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let s = &i["sum"];
        let (Some(a), Some(b), Some(n)) =
            (s["start"].as_f64(), s["end"].as_f64(), s["bytes"].as_f64())
        else {
            continue;
        };
        let inside = (b.min(to_s) - a.max(from_s)).max(0.0);
        if b > a {
            bytes += n * inside / (b - a);
        }
    }
    bytes / (to_s - from_s) / PAYLOAD * FRAME
}

/// Bytes the receiver got (sent minus lost), from the client's JSON.
fn received_payload_bytes(v: &Value) -> f64 {
    let sum = &v["end"]["sum"];
    let bytes = sum["bytes"].as_f64().expect("bytes");
    let lost = sum["lost_percent"].as_f64().unwrap_or(0.0);
    bytes * (1.0 - lost / 100.0)
}

/// λ (bytes/s) of each `(src, dst)` pair, read `n` times one poll interval
/// apart: the median of each pair's readings, and the last matrix. One
/// reading whose window a late poll or a catch-up burst of iperf3 skewed
/// does not decide a check; a pair missing from a reading counts as 0.
fn median_rates(api: &str, pairs: &[(&str, &str)], n: usize) -> (Vec<f64>, Value) {
    let mut seen: Vec<Vec<f64>> = vec![Vec::new(); pairs.len()];
    let mut last = Value::Null;
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(Duration::from_secs_f64(INTERVAL_S));
        }
        last = get_json(api, "/api/v1/traffic-matrix").unwrap();
        for (k, (src, dst)) in pairs.iter().enumerate() {
            let r = pair(&last, src, dst)
                .and_then(|p| p["bytes_per_s"].as_f64())
                .unwrap_or(0.0);
            seen[k].push(r);
        }
    }
    let medians = seen
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    (medians, last)
}

fn within(actual: f64, expected: f64, tol: f64) -> bool {
    (actual - expected).abs() <= tol * expected
}

/// Starts the controller with `cfg` (log filter `filter`, log in `log`),
/// points every bridge of `net` at it over `tcp:`, waits for the topology,
/// then checks that every pair of hosts pings (`count` pings each; edge
/// ports are confirmed after 1.5 s).
fn start_and_ping_all(
    net: &Net,
    cfg: &std::path::Path,
    log: &std::path::Path,
    filter: &str,
    api: &str,
    of_port: u16,
    count: u32,
) -> ChildGuard {
    let ctl = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(cfg)
            .args(["--log", filter])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap()),
    )
    .unwrap();
    wait_for("the API", Duration::from_secs(20), || {
        get_json(api, "/healthz").ok()
    })
    .unwrap();
    let target = format!("tcp:{}:{of_port}", net.ovs.controller_ip());
    for b in &net.bridges {
        b.set_controller(&target).unwrap();
    }
    wait_topology(api);
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..4 {
        for j in 0..4 {
            if i != j {
                let (a, b) = (host(net, i), host(net, j));
                assert!(a.ping(&b.ip, count), "h{} cannot ping h{}", i + 1, j + 1);
            }
        }
    }
    ctl
}

#[test]
fn openflow_core_on_real_ovs() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    for tool in ["ovs-vswitchd", "iperf3", "ethtool", "ping"] {
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
    let net = build();
    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let dir = std::env::temp_dir().join("shoal-e2e-openflow");
    let _ = std::fs::create_dir_all(&dir);
    let cfg = dir.join("controller.toml");
    let auth = support::creds::controller_auth(&dir, &[]).unwrap();
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
port_confirm_s = 1.5
[forwarding]
pair_idle_timeout_s = 3
dest_idle_timeout_s = 10
[monitor]
interval_s = {INTERVAL_S}
window_intervals = 3
[hypervisors]
"0000000000000021" = "hv1"
"0000000000000022" = "hv2"
"0000000000000023" = "hv3"
"#,
            ip = net.ovs.controller_ip()
        ),
    )
    .unwrap();
    let _ctl = start_and_ping_all(
        &net,
        &cfg,
        &dir.join("controller.log"),
        "info,shoal_controller=debug",
        &api,
        of_port,
        3,
    );
    // Endpoints learnt at their edge ports only.
    let eps = get_json(&api, "/api/v1/endpoints").unwrap();
    let loc = |mac: &str| {
        eps.as_array()
            .unwrap()
            .iter()
            .find(|e| e["mac"] == mac)
            .map(|e| {
                (
                    e["dpid"].as_str().unwrap().to_string(),
                    e["port"].as_u64().unwrap(),
                )
            })
    };
    assert_eq!(
        loc("02:00:00:00:77:01"),
        Some(("0000000000000021".into(), 1))
    );
    assert_eq!(
        loc("02:00:00:00:77:02"),
        Some(("0000000000000021".into(), 2))
    );
    assert_eq!(
        loc("02:00:00:00:77:03"),
        Some(("0000000000000022".into(), 1))
    );
    assert_eq!(
        loc("02:00:00:00:77:04"),
        Some(("0000000000000023".into(), 1))
    );
    assert_eq!(eps.as_array().unwrap().len(), 4, "{eps}");

    // Two UDP flows at known rates.
    let _s2 = host(&net, 1)
        .ns
        .spawn("iperf3", &["-s", "-p", "5201"])
        .unwrap();
    let _s4 = host(&net, 3)
        .ns
        .spawn("iperf3", &["-s", "-p", "5202"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let flow_s = 14;
    let started = Instant::now();
    let c1 = iperf_udp(host(&net, 0), "10.77.0.2", 5201, 20, flow_s);
    let c2 = iperf_udp(host(&net, 2), "10.77.0.4", 5202, 5, flow_s);
    // 3 intervals of steady traffic (plus one for the first poll to land),
    // then three readings one interval apart, all inside the flows.
    std::thread::sleep(Duration::from_secs_f64(INTERVAL_S * 4.5));
    let read_from = started.elapsed().as_secs_f64();
    let (r, m) = median_rates(
        &api,
        &[
            ("02:00:00:00:77:01", "02:00:00:00:77:02"),
            ("02:00:00:00:77:03", "02:00:00:00:77:04"),
        ],
        3,
    );
    let read_to = started.elapsed().as_secs_f64();
    assert_eq!(m["window_s"].as_f64(), Some(3.0 * INTERVAL_S));
    let p12 = pair(&m, "02:00:00:00:77:01", "02:00:00:00:77:02").expect("h1->h2 in matrix");
    let p34 = pair(&m, "02:00:00:00:77:03", "02:00:00:00:77:04").expect("h3->h4 in matrix");
    assert_eq!(p12["class"], "idc");
    assert_eq!(p34["class"], "nic");
    assert_eq!(p12["src_ip"], "10.77.0.1");
    assert_eq!(p34["dst_ip"], "10.77.0.4");
    let (j1, j2) = (
        iperf_json(c1.wait_with_output().unwrap()),
        iperf_json(c2.wait_with_output().unwrap()),
    );
    // λ against what the senders sent over the readings' windows (each
    // reading averages the window before its last poll, up to an interval
    // old): the offered rate on an idle machine, less when the machine is
    // too busy for iperf3 to keep up (it then sends less, and λ must follow).
    let (from, to) = (
        read_from - 3.0 * INTERVAL_S - INTERVAL_S / 2.0,
        read_to - INTERVAL_S / 2.0,
    );
    let want12 = sent_rate(&j1, from, to);
    let want34 = sent_rate(&j2, from, to);
    let (r12, r34) = (r[0], r[1]);
    eprintln!(
        "λ(h1,h2) = {r12:.0} B/s (sent {want12:.0}, offered {:.0}), λ(h3,h4) = {r34:.0} B/s (sent {want34:.0}, offered {:.0})",
        20e6 / 8.0 * FRAME / PAYLOAD,
        5e6 / 8.0 * FRAME / PAYLOAD
    );
    assert!(
        within(r12, want12, 0.10),
        "h1->h2 {r12} vs {want12} sent: {m}"
    );
    assert!(
        within(r34, want34, 0.10),
        "h3->h4 {r34} vs {want34} sent: {m}"
    );

    // The flows end; their entries expire (idle 3 s) and are removed; the
    // bytes must still all be counted (FLOW_REMOVED final counters).
    let got12 = received_payload_bytes(&j1) / PAYLOAD * FRAME;
    let got34 = received_payload_bytes(&j2) / PAYLOAD * FRAME;
    let hv1 = &net.bridges[1];
    wait_for(
        "h1->h2 pair flow to expire",
        Duration::from_secs(20),
        || {
            let flows = hv1.ofctl("dump-flows", &["table=1"]).ok()?;
            (!flows.contains("dl_src=02:00:00:00:77:01,dl_dst=02:00:00:00:77:02")).then_some(())
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs_f64(INTERVAL_S * 1.5));
    let m = get_json(&api, "/api/v1/traffic-matrix").unwrap();
    let t12 = pair(&m, "02:00:00:00:77:01", "02:00:00:00:77:02").unwrap()["total_bytes"]
        .as_f64()
        .unwrap();
    let t34_before = pair(&m, "02:00:00:00:77:03", "02:00:00:00:77:04").unwrap()["total_bytes"]
        .as_f64()
        .unwrap();
    eprintln!(
        "total h1->h2 {t12} (receiver got {got12:.0}), h3->h4 {t34_before} (got {got34:.0}); flows ran {:?}",
        started.elapsed()
    );
    // Counted at the sender's switch: at least what arrived, at most 3 %
    // more (iperf3's control traffic, packets lost after the first hop).
    assert!(
        t12 >= got12 * 0.99 && t12 <= got12 * 1.03,
        "{t12} vs {got12}"
    );
    assert!(
        t34_before >= got34 * 0.99 && t34_before <= got34 * 1.03,
        "{t34_before} vs {got34}"
    );

    // Kill and restart ovs-vswitchd: the switches reconnect, the topology is
    // rediscovered and rates are right again, with nothing counted twice.
    net.ovs.kill_vswitchd().unwrap();
    wait_for("the controller to notice", Duration::from_secs(15), || {
        let n = get_json(&api, "/api/v1/switches").ok()?.as_array()?.len();
        (n == 0).then_some(())
    })
    .unwrap();
    net.ovs.start_vswitchd().unwrap();
    wait_topology(&api);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        host(&net, 2).ping("10.77.0.4", 3),
        "h3 cannot ping h4 after the restart"
    );
    let c3 = iperf_udp(host(&net, 2), "10.77.0.4", 5202, 5, flow_s);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(INTERVAL_S * 4.5));
    let read_from = started.elapsed().as_secs_f64();
    let (r, m) = median_rates(&api, &[("02:00:00:00:77:03", "02:00:00:00:77:04")], 3);
    let read_to = started.elapsed().as_secs_f64();
    let j3 = iperf_json(c3.wait_with_output().unwrap());
    let want34 = sent_rate(
        &j3,
        read_from - 3.0 * INTERVAL_S - INTERVAL_S / 2.0,
        read_to - INTERVAL_S / 2.0,
    );
    let r34 = r[0];
    eprintln!("after restart: λ(h3,h4) = {r34:.0} B/s (sent {want34:.0})");
    assert!(
        within(r34, want34, 0.10),
        "after restart {r34} vs {want34} sent: {m}"
    );
    let got34b = received_payload_bytes(&j3) / PAYLOAD * FRAME;
    std::thread::sleep(Duration::from_secs_f64(3.0 + INTERVAL_S * 2.5));
    let m = get_json(&api, "/api/v1/traffic-matrix").unwrap();
    let t34_after = pair(&m, "02:00:00:00:77:03", "02:00:00:00:77:04").unwrap()["total_bytes"]
        .as_f64()
        .unwrap();
    let added = t34_after - t34_before;
    eprintln!("h3->h4 counted {added} more bytes after the restart (receiver got {got34b:.0})");
    assert!(
        added >= got34b * 0.97 && added <= got34b * 1.03,
        "{added} vs {got34b}"
    );
}

/// A real Open vSwitch bridge that speaks only OpenFlow 1.0 is refused with
/// HELLO_FAILED and a log line, and never shows up as a switch.
#[test]
fn openflow10_bridge_is_refused() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    support::ensure_ovs().unwrap();
    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let dir = std::env::temp_dir().join("shoal-e2e-of10");
    let _ = std::fs::create_dir_all(&dir);
    let log_path = dir.join("controller.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let cfg = dir.join("controller.toml");
    std::fs::write(&cfg, support::creds::controller_auth(&dir, &[]).unwrap()).unwrap();
    let _ctl = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .args([
                "--db",
                ":memory:",
                "--of-listen",
                &format!("127.0.0.1:{of_port}"),
                "--api-listen",
                &api,
            ])
            .stdout(Stdio::null())
            .stderr(log),
    )
    .unwrap();
    wait_for("the API", Duration::from_secs(20), || {
        get_json(&api, "/healthz").ok()
    })
    .unwrap();
    let br = OvsBridge::new("shof-v10", 0x10).unwrap();
    support::sh(
        "ovs-vsctl",
        &["set", "bridge", "shof-v10", "protocols=OpenFlow10"],
    )
    .unwrap();
    br.set_controller(&format!("tcp:127.0.0.1:{of_port}"))
        .unwrap();
    wait_for("the refusal in the log", Duration::from_secs(15), || {
        let text = std::fs::read_to_string(&log_path).ok()?;
        text.contains("refusing switch").then_some(())
    })
    .unwrap();
    let n = get_json(&api, "/api/v1/switches")
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    assert_eq!(n, 0);
}

/// Sends and sniffs raw Ethernet frames over an `AF_PACKET` socket (run
/// with the system Python inside a namespace):
/// `sniff IFACE NEEDLE_HEX TIMEOUT_S` prints the first LLDP frame holding
/// NEEDLE as hex; `send IFACE COUNT INTERVAL_S HEX...` sends each frame
/// COUNT times, INTERVAL_S apart.
const RAW_FRAMES_PY: &str = r#"
import socket, sys, time
ETH_P_ALL = 3
def sniff(iface, needle, timeout):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    s.settimeout(0.2)
    end = time.time() + timeout
    while time.time() < end:
        try:
            f = s.recv(4096)
        except socket.timeout:
            continue
        if len(f) > 14 and f[12:14] == b"\x88\xcc" and needle in f:
            print(f.hex())
            return 0
    return 1
def send(iface, count, interval, frames):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    for _ in range(count):
        for f in frames:
            s.send(f)
        time.sleep(interval)
    return 0
if sys.argv[1] == "sniff":
    sys.exit(sniff(sys.argv[2], bytes.fromhex(sys.argv[3]), float(sys.argv[4])))
else:
    sys.exit(send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]),
                  [bytes.fromhex(h) for h in sys.argv[5:]]))
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn lldp_tlv(f: &mut Vec<u8>, ty: u16, value: &[u8]) {
    f.extend_from_slice(&((ty << 9) | value.len() as u16).to_be_bytes());
    f.extend_from_slice(value);
}

/// An LLDP frame built by hand, as a hostile VM would: chassis id and port
/// id (both subtype 7, "locally assigned") of a real switch port, TTL 120,
/// `extra` TLVs, End.
fn forged_lldp(src: [u8; 6], chassis: &str, port: &str, extra: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut f = vec![0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xcc]);
    let mut v = vec![7u8];
    v.extend_from_slice(chassis.as_bytes());
    lldp_tlv(&mut f, 1, &v);
    let mut v = vec![7u8];
    v.extend_from_slice(port.as_bytes());
    lldp_tlv(&mut f, 2, &v);
    lldp_tlv(&mut f, 3, &120u16.to_be_bytes());
    for (ty, v) in extra {
        lldp_tlv(&mut f, *ty, v);
    }
    lldp_tlv(&mut f, 0, &[]);
    f.resize(f.len().max(60), 0);
    f
}

/// One flow entry of `ovs-ofctl dump-flows`.
#[derive(Debug, Clone)]
struct FlowEntry {
    cookie: u64,
    duration_s: f64,
    n_packets: u64,
}

/// Shoal's pair (kind 03) and destination (kind 04) flows of a bridge,
/// keyed by "table priority,match".
fn forwarding_flows(br: &OvsBridge) -> std::collections::BTreeMap<String, FlowEntry> {
    let text = br.ofctl("dump-flows", &[]).unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let field = |name: &str| {
            line.split([',', ' '])
                .find_map(|t| t.trim().strip_prefix(name))
                .map(str::to_string)
        };
        let (Some(cookie), Some(dur), Some(table), Some(np)) = (
            field("cookie=0x"),
            field("duration="),
            field("table="),
            field("n_packets="),
        ) else {
            continue;
        };
        let Ok(cookie) = u64::from_str_radix(&cookie, 16) else {
            continue;
        };
        if !matches!(cookie >> 40, 0x53_4803 | 0x53_4804) {
            continue;
        }
        let Some(m) = line
            .split_once("priority=")
            .and_then(|(_, rest)| rest.split_once(" actions="))
            .map(|(m, _)| m.to_string())
        else {
            continue;
        };
        out.insert(
            format!("{} {table} {m}", br.name()),
            FlowEntry {
                cookie,
                duration_s: dur.trim_end_matches('s').parse().unwrap_or(0.0),
                n_packets: np.parse().unwrap_or(0),
            },
        );
    }
    out
}

/// A "VM" on an edge port forges LLDP frames with the chassis and port ids
/// of real switches (untagged, with a made-up tag, a genuine probe of a real
/// link replayed, a genuine probe relayed from another VM's port, and the
/// same again once stale): the controller must not believe any of them —
/// `/api/v1/links` stays exactly the cabling throughout, no forwarding
/// flow is flushed (same cookies, durations and packet counters running
/// on), every frame is counted as ignored by reason, one warning per port
/// is logged, and a ping between two other hosts keeps working.
#[test]
fn forged_lldp_from_a_vm_is_ignored() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    let py = "/usr/bin/python3";
    assert!(
        std::path::Path::new(py).exists(),
        "{py} is missing (the AF_PACKET helper needs the system Python)"
    );
    let net = build();
    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let dir = std::env::temp_dir().join("shoal-e2e-forged-lldp");
    let _ = std::fs::create_dir_all(&dir);
    let script = dir.join("raw_frames.py");
    std::fs::write(&script, RAW_FRAMES_PY).unwrap();
    let script = script.to_string_lossy().into_owned();
    let cfg = dir.join("controller.toml");
    let link_timeout_s = 6.0;
    let auth = support::creds::controller_auth(&dir, &[]).unwrap();
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
link_timeout_s = {link_timeout_s}
port_confirm_s = 1.5
[forwarding]
pair_idle_timeout_s = 60
dest_idle_timeout_s = 60
[monitor]
interval_s = {INTERVAL_S}
"#,
            ip = net.ovs.controller_ip()
        ),
    )
    .unwrap();
    let log_path = dir.join("controller.log");
    // Every host speaks, so every edge port is known to have a host.
    let _ctl = start_and_ping_all(&net, &cfg, &log_path, "info", &api, of_port, 2);
    let (h1, h2, h4) = (host(&net, 0), host(&net, 1), host(&net, 3));
    let h4_mac = [2, 0, 0, 0, 0x77, 0x04];

    // Genuine probes, captured: agg:3 -> hv3:10 on the cable inside the
    // switches' namespace (a real link's probe), and hv1:2's probe as the
    // VM h2 receives it on its own port.
    let sniff = |cmd: Command| -> std::process::Child {
        let mut cmd = cmd;
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        cmd.spawn().expect("sniffer")
    };
    let agg_chassis = hex(b"dpid:0000000000000011");
    let hv1_chassis = hex(b"dpid:0000000000000021");
    let link_sniffer = sniff(
        net.ovs
            .ovs()
            .command(py, &[&script, "sniff", "shof-3a", &agg_chassis, "5"]),
    );
    let relay_sniffer = sniff(
        h2.ns
            .command(py, &[&script, "sniff", "eth0", &hv1_chassis, "5"]),
    );
    let genuine_link =
        unhex(String::from_utf8_lossy(&link_sniffer.wait_with_output().unwrap().stdout).trim());
    let genuine_relay =
        unhex(String::from_utf8_lossy(&relay_sniffer.wait_with_output().unwrap().stdout).trim());
    let captured = Instant::now();
    assert!(genuine_link.len() >= 60, "no probe of agg:3 captured");
    assert!(genuine_relay.len() >= 60, "no probe of hv1:2 captured");

    // Steady traffic between two other hosts, and its flows.
    assert!(h1.ping("10.77.0.3", 3), "h1 cannot ping h3");
    let ping = h1
        .ns
        .command(
            "ping",
            &["-c", "300", "-i", "0.05", "-W", "1", "-q", "10.77.0.3"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ping");
    std::thread::sleep(Duration::from_millis(500));
    let flows_before: std::collections::BTreeMap<String, FlowEntry> =
        net.bridges.iter().flat_map(forwarding_flows).collect();
    let snap_at = Instant::now();
    assert!(
        flows_before.len() >= 4,
        "expected the h1<->h3 flows at least: {flows_before:?}"
    );
    let counters_before = get_json(&api, "/api/v1/topology/lldp").ok();

    // The attack: untagged, badly tagged, replayed and relayed frames.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut fake_tag = vec![0x02, 0x53, 0x48, 0x01];
    fake_tag.extend_from_slice(&now_ms.to_be_bytes());
    fake_tag.extend_from_slice(&[0xa5; 32]);
    let untagged = forged_lldp(h4_mac, "dpid:0000000000000011", "2", &[]);
    let bad_tag = forged_lldp(h4_mac, "dpid:0000000000000021", "11", &[(127, fake_tag)]);
    let send = |frames: &[&[u8]], count: u32| {
        let mut args: Vec<String> = vec![
            script.clone(),
            "send".into(),
            "eth0".into(),
            count.to_string(),
            "0.1".into(),
        ];
        args.extend(frames.iter().map(|f| hex(f)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        h4.ns
            .command(py, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sender")
    };
    let want = expected_links();
    let mut seen_links = Vec::new();
    let mut watch_links = |until: Instant| {
        while Instant::now() < until {
            let l = links(&api);
            if l != want {
                seen_links.push(l);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Fresh (within the link timeout): replayed and relayed probes.
    let mut s1 = send(&[&untagged, &bad_tag, &genuine_link, &genuine_relay], 15);
    watch_links(Instant::now() + Duration::from_secs(2));
    let _ = s1.wait();
    // Stale: the same captures once older than the link timeout.
    let stale_at = captured + Duration::from_secs_f64(link_timeout_s + 1.0);
    watch_links(stale_at);
    let mut s2 = send(&[&untagged, &bad_tag, &genuine_link, &genuine_relay], 15);
    watch_links(Instant::now() + Duration::from_secs(2));
    let _ = s2.wait();
    watch_links(Instant::now() + Duration::from_secs(2));

    // Every check runs; all failures are reported together.
    let mut problems: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    // No link was invented, not even for a moment.
    check(
        seen_links.is_empty(),
        format!(
            "links differed from the cabling during the attack ({} of the readings), extra/missing: {:?}",
            seen_links.len(),
            seen_links
                .iter()
                .flat_map(|l| l.symmetric_difference(&want).cloned().collect::<Vec<_>>())
                .collect::<BTreeSet<_>>()
        ),
    );
    // No flow was flushed: same cookie, duration and counters running on.
    let elapsed = snap_at.elapsed().as_secs_f64();
    let flows_after: std::collections::BTreeMap<String, FlowEntry> =
        net.bridges.iter().flat_map(forwarding_flows).collect();
    for (k, before) in &flows_before {
        let Some(after) = flows_after.get(k) else {
            check(false, format!("flow {k} was removed during the attack"));
            continue;
        };
        check(
            after.cookie == before.cookie,
            format!(
                "flow {k} was re-installed: cookie {:#x} then {:#x}",
                before.cookie, after.cookie
            ),
        );
        check(
            after.duration_s >= before.duration_s + elapsed - 1.5,
            format!(
                "flow {k} was reset: duration {} s then {} s ({elapsed:.1} s later)",
                before.duration_s, after.duration_s
            ),
        );
        check(
            after.n_packets >= before.n_packets,
            format!(
                "flow {k} counters reset: {} then {} packets",
                before.n_packets, after.n_packets
            ),
        );
    }
    // The ping between two other hosts went on.
    let out = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let loss: f64 = text
        .split(',')
        .find_map(|p| p.trim().strip_suffix("% packet loss"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(100.0);
    check(
        loss <= 2.0,
        format!("h1 -> h3 lost {loss} % during the attack: {text}"),
    );
    // Every kind of frame was counted as ignored.
    match get_json(&api, "/api/v1/topology/lldp") {
        Ok(c) => {
            eprintln!("LLDP counters before {counters_before:?}, after {c}");
            let ign = |r: &str| c["ignored"][r].as_u64().unwrap_or(0);
            check(
                ign("no_tag") >= 25,
                format!("untagged frames not counted: {c}"),
            );
            check(
                ign("bad_tag") >= 25,
                format!("badly tagged frames not counted: {c}"),
            );
            check(
                ign("replayed") >= 1,
                format!("replayed probe not counted: {c}"),
            );
            check(
                ign("edge_port") >= 1,
                format!("relayed probe not counted: {c}"),
            );
            check(ign("stale") >= 2, format!("stale probes not counted: {c}"));
            check(
                c["accepted"].as_u64().unwrap_or(0) > 0,
                format!("no probe accepted: {c}"),
            );
        }
        Err(e) => check(false, format!("no LLDP counters: {e}")),
    }
    // One warning for the VM's port, not one per frame.
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let warns = log
        .lines()
        .filter(|l| l.contains("LLDP frame ignored") && l.contains("0000000000000023"))
        .count();
    check(
        warns == 1,
        format!("{warns} warnings logged for the VM's port hv3:1 (want 1)"),
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
