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

/// Bytes the receiver got (sent minus lost), from the client's JSON.
fn received_payload_bytes(out: std::process::Output) -> f64 {
    let v: Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
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
    let log = std::fs::File::create(dir.join("controller.log")).unwrap();
    let _ctl = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--log", "info,shoal_controller=debug"])
            .stdout(Stdio::null())
            .stderr(log),
    )
    .unwrap();
    wait_for("the API", Duration::from_secs(20), || {
        get_json(&api, "/healthz").ok()
    })
    .unwrap();
    let target = format!("tcp:{}:{of_port}", net.ovs.controller_ip());
    for b in &net.bridges {
        b.set_controller(&target).unwrap();
    }
    wait_topology(&api);

    // Every pair pings (ports are confirmed edge ports after 1.5 s).
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..4 {
        for j in 0..4 {
            if i != j {
                let (a, b) = (host(&net, i), host(&net, j));
                assert!(a.ping(&b.ip, 3), "h{} cannot ping h{}", i + 1, j + 1);
            }
        }
    }
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
    let (r, m) = median_rates(
        &api,
        &[
            ("02:00:00:00:77:01", "02:00:00:00:77:02"),
            ("02:00:00:00:77:03", "02:00:00:00:77:04"),
        ],
        3,
    );
    assert_eq!(m["window_s"].as_f64(), Some(3.0 * INTERVAL_S));
    let p12 = pair(&m, "02:00:00:00:77:01", "02:00:00:00:77:02").expect("h1->h2 in matrix");
    let p34 = pair(&m, "02:00:00:00:77:03", "02:00:00:00:77:04").expect("h3->h4 in matrix");
    let want12 = 20e6 / 8.0 * FRAME / PAYLOAD;
    let want34 = 5e6 / 8.0 * FRAME / PAYLOAD;
    let (r12, r34) = (r[0], r[1]);
    eprintln!(
        "λ(h1,h2) = {r12:.0} B/s (want {want12:.0}), λ(h3,h4) = {r34:.0} B/s (want {want34:.0})"
    );
    assert!(within(r12, want12, 0.10), "h1->h2 {r12} vs {want12}: {m}");
    assert!(within(r34, want34, 0.10), "h3->h4 {r34} vs {want34}: {m}");
    assert_eq!(p12["class"], "idc");
    assert_eq!(p34["class"], "nic");
    assert_eq!(p12["src_ip"], "10.77.0.1");
    assert_eq!(p34["dst_ip"], "10.77.0.4");

    // The flows end; their entries expire (idle 3 s) and are removed; the
    // bytes must still all be counted (FLOW_REMOVED final counters).
    let got12 = received_payload_bytes(c1.wait_with_output().unwrap()) / PAYLOAD * FRAME;
    let got34 = received_payload_bytes(c2.wait_with_output().unwrap()) / PAYLOAD * FRAME;
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
    std::thread::sleep(Duration::from_secs_f64(INTERVAL_S * 4.5));
    let (r, m) = median_rates(&api, &[("02:00:00:00:77:03", "02:00:00:00:77:04")], 3);
    let r34 = r[0];
    eprintln!("after restart: λ(h3,h4) = {r34:.0} B/s (want {want34:.0})");
    assert!(
        within(r34, want34, 0.10),
        "after restart {r34} vs {want34}: {m}"
    );
    let got34b = received_payload_bytes(c3.wait_with_output().unwrap()) / PAYLOAD * FRAME;
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
