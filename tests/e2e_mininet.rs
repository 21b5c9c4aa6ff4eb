//! End to end through the Mininet testbed (`mininet/testbed.py`): the real
//! controller, a 3-tier data center on Open vSwitch (userspace datapath)
//! built by Mininet, one real `shoal-hostd` per hypervisor in its dom0
//! namespace, VMs as Mininet hosts.
//!
//! Runs `mininet/scenarios/smoke.json` (1 core, 2 pods, 2 hypervisors, 4
//! VMs, ~30 s) and checks its `summary.json`: every switch connected and
//! every link found, both host daemons registered with their VMs, VMs
//! answering pings across pods, the UDP flow across the core in the
//! controller's traffic matrix at its rate, and a reserved migration across
//! the core that finishes within its deadline with its reservation seen on
//! every hop of its path and nothing left afterwards; then that the testbed
//! removed every bridge, namespace and veth it made.
//!
//! `testbed_unit_tests` runs the Python unit tests of the testbed's pure
//! parts (scenario validation, VMPatrol model, simulator translation).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::world::{fresh_bin_dir, run_with_limit};
use support::{e2e_lock, ensure_ovs, is_root, workspace_root};

const PYTHON: &str = "/usr/bin/python3";

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn f64_at(v: &Value, ptr: &str) -> f64 {
    v.pointer(ptr)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{ptr} missing or not a number in {v}"))
}

#[test]
fn testbed_smoke_scenario() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    ensure_ovs().unwrap();
    let bins = fresh_bin_dir();
    let out = std::env::temp_dir().join(format!("shoal-tb-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let log = out.join("testbed.log");
    let root = workspace_root();
    let (code, timed_out) = run_with_limit(
        Command::new(PYTHON)
            .arg(root.join("mininet/testbed.py"))
            .arg("--scenario")
            .arg(root.join("mininet/scenarios/smoke.json"))
            .arg("--out")
            .arg(&out)
            .arg("--bin-dir")
            .arg(&bins)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(out.join("testbed.err")).unwrap()),
        Duration::from_secs(110),
    );
    assert!(
        !timed_out && code == Some(0),
        "testbed exit {code:?} (timed out: {timed_out})\n{}\n{}",
        tail(&log, 30),
        tail(&out.join("testbed.err"), 30)
    );
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
            .expect("summary.json");

    // Topology up: 7 switches (core, 2 aggregation, 2 ToR, 2 hypervisor
    // bridges), 6 links = 12 directed LLDP links.
    let c = &s["checks"];
    assert_eq!(c["switches_connected"], 7, "{c}");
    assert_eq!(c["directed_links"], 12, "{c}");
    assert_eq!(c["directed_links_expected"], 12, "{c}");
    // Host daemons registered with their VMs.
    assert_eq!(
        c["hosts_registered"],
        serde_json::json!(["th1", "th2"]),
        "{c}"
    );
    assert_eq!(c["vms_registered"], 4, "{c}");
    // VMs answer pings across pods.
    assert!(f64_at(c, "/cross_pod_pings_sent") >= 10.0, "{c}");
    assert_eq!(f64_at(c, "/cross_pod_ping_loss"), 0.0, "{c}");
    // The UDP flow tv1 -> tv3 (10 Mbit/s of payload, 1400-byte datagrams:
    // ~1.29 MB/s of frames) in the controller's matrix, and at the receiver.
    // λ: the median of the samples whose λ window lies wholly inside the
    // flow (a sample whose window holds a catch-up burst of iperf3, or only
    // part of the flow, is not the flow's rate). Receiver: the totals of the whole flow (bytes received
    // of bytes sent), never the per-second samples, which iperf3 fills in
    // bursts after it was held back.
    let lambda = f64_at(&s, "/matrix_pairs_median/tv1>tv3");
    assert!(
        (1.1e6..1.5e6).contains(&lambda),
        "median λ(tv1, tv3) = {lambda} B/s; largest sample: {}",
        s["matrix_pairs"]
    );
    let flow = &s["flows"]["tv1>tv3"];
    let sent = f64_at(flow, "/totals/sent_bytes");
    let received = f64_at(flow, "/totals/received_bytes");
    let secs = f64_at(flow, "/duration_s");
    let offered = f64_at(flow, "/offered_mbps") * 1e6 / 8.0 * secs;
    assert!(
        (0.95 * offered..=1.02 * offered).contains(&sent),
        "iperf3 sent {sent} bytes, offered {offered}: {flow}"
    );
    assert!(
        received >= 0.95 * sent && received <= sent,
        "iperf3 received {received} of {sent} bytes: {flow}"
    );
    assert!(
        f64_at(&s, "/pings/tv4>tv2/replies") > 40.0,
        "{}",
        s["pings"]
    );

    // The reserved migration across the core.
    let m = &s["migrations"][0];
    assert_eq!(m["state"], "done", "{m}");
    assert_eq!(m["mode"], "controller", "{m}");
    assert_eq!(
        m["path_bridges"],
        serde_json::json!(["th1", "tt1", "ta1", "tc1", "ta2", "tt2", "th2"]),
        "{m}"
    );
    assert_eq!(
        m["reservation_hops_seen"], 7,
        "a meter and a flow on every hop: {m}"
    );
    let took = f64_at(m, "/total_time_s");
    assert!(took <= f64_at(m, "/deadline_s"), "deadline missed: {m}");
    assert_eq!(
        s["reservations_left"],
        serde_json::json!({}),
        "reservations left after the migration"
    );
    for f in [
        "throughput.csv",
        "lambda.csv",
        "hosts.csv",
        "throughput.png",
        "ping.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }

    // Nothing of the testbed is left.
    let bridges = support::sh("ovs-vsctl", &["list-br"]).unwrap();
    for b in ["tc1", "ta1", "ta2", "tt1", "tt2", "th1", "th2"] {
        assert!(
            !bridges.split_whitespace().any(|x| x == b),
            "bridge {b} left behind"
        );
    }
    for ns in ["tv1", "tv2", "td1", "td2"] {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} left behind"
        );
    }
    for link in ["tm1", "tm2", "tv1-p", "th1-up", "tc1-eth1"] {
        assert!(
            !Path::new("/sys/class/net").join(link).exists(),
            "interface {link} left behind"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn testbed_unit_tests() {
    let root = workspace_root();
    let out = Command::new(PYTHON)
        .args(["-m", "unittest", "discover", "-s"])
        .arg(root.join("mininet"))
        .args(["-p", "test_*.py"])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
