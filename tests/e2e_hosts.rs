//! End to end: real `shoal-controller`, real Open vSwitch bridges it
//! controls, and two real `shoal-hostd`s (netns backend) that register and
//! report to it.
//!
//! ```text
//!   root ns: controller (OpenFlow 127.0.0.1, API 0.0.0.0)
//!      | mgmt veth 10.216.1.0/30      | mgmt veth 10.216.2.0/30
//!   [h1 ns: hostd, dom0 10.217.0.1]  [h2 ns: hostd, dom0 10.217.0.2]
//!      | port 2                        | port 2
//!   she-b1 (0x5e01) --- port 1 ---- she-b2 (0x5e02)
//!      | port 10                       | port 10
//!   vm1 10.217.1.1                    vm2 10.217.1.2
//! ```
//!
//! Checks the controller side of the host daemons: hosts and VMs listed with
//! metrics refreshed every interval; registrations and reports with a wrong
//! token rejected with 401 and logged; the bridges registered by hostd drive
//! the IDC/NIC class; after a netns migration through hostd's API the VM
//! keeps its MAC/IP, ping from the other VM resumes, and
//! `/api/v1/endpoints` shows it at its new switch and port.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::qemu::{move_into_ns, Hostd};
use support::sse::{SseEvent, SseReader};
use support::world::write_controller_config;
use support::{
    cargo_bin, e2e_lock, ensure_ovs, free_port, get_json, is_root, sh, wait_for, ChildGuard, Netns,
    NsHost, OvsBridge, Veth,
};

/// What the controller (and so the test, commanding hostd) presents.
const TOKEN: &str = support::creds::CONTROLLER_TOKEN;
const VM1_MAC: &str = "02:5e:00:00:00:01";
const VM2_MAC: &str = "02:5e:00:00:00:02";

fn poll_command(h: &Hostd, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let (code, body) = h
            .call("GET", &format!("/api/v1/commands/{id}"), TOKEN, None)
            .expect("GET command");
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("status JSON");
        if v["state"] == "succeeded" || v["state"] == "failed" {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "command {id}: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn hostd_config(
    id: &str,
    mgmt: &str,
    data: &str,
    bridge: &str,
    api: &str,
    dir: &std::path::Path,
    vm: &str,
) -> String {
    format!(
        r#"host_id = "{id}"
controller = "http://{api}"
listen = "{mgmt}:7070"
api_url = "http://{mgmt}:7070"
dom0_addr = "{data}"
{auth}interval_s = 1
uplink = "eth0"
bridge = "{bridge}"
vf_count = 1
run_dir = "{run}"
scenario_dir = "{scenarios}"
http_timeout_s = 3
{vm}
"#,
        auth = support::creds::hostd_auth(dir, id),
        run = dir.join(id).display(),
        scenarios = dir.display(),
    )
}

fn endpoint(api: &str, mac: &str) -> Option<(String, u64)> {
    get_json(api, "/api/v1/endpoints")
        .ok()?
        .as_array()?
        .iter()
        .find(|e| e["mac"] == mac)
        .map(|e| {
            (
                e["dpid"].as_str().unwrap_or("").to_string(),
                e["port"].as_u64().unwrap_or(0),
            )
        })
}

#[test]
fn controller_tracks_hosts_vms_and_a_migrated_vm() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    ensure_ovs().unwrap();
    let dir = std::env::temp_dir().join(format!("she-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // Controller.
    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let cfg = write_controller_config(&dir, of_port, api_port, ":memory:", &["h1", "h2", "h9"], "")
        .unwrap();
    let log_path = dir.join("controller.log");
    let _ctl = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap()),
    )
    .unwrap();
    wait_for("the API", Duration::from_secs(20), || {
        get_json(&api, "/healthz").ok()
    })
    .unwrap();

    // The event stream, from before any switch connects.
    let sse_a = SseReader::connect(&api, READER, None);

    // Data plane.
    let b1 = OvsBridge::new("she-b1", 0x5e01).unwrap();
    let b2 = OvsBridge::new("she-b2", 0x5e02).unwrap();
    let link = Veth::new("she-l1", "she-l2").unwrap();
    b1.add_port(link.root_end(), 1).unwrap();
    b2.add_port("she-l2", 1).unwrap();
    let h1 = Netns::new("she-h1").unwrap();
    let h2 = Netns::new("she-h2").unwrap();
    let d1 = Veth::new("she-d1p", "she-d1i").unwrap();
    let d2 = Veth::new("she-d2p", "she-d2i").unwrap();
    b1.add_port(d1.root_end(), 2).unwrap();
    b2.add_port(d2.root_end(), 2).unwrap();
    move_into_ns("she-d1i", &h1, "eth0", Some("10.217.0.1/16"), None, true).unwrap();
    move_into_ns("she-d2i", &h2, "eth0", Some("10.217.0.2/16"), None, true).unwrap();
    // Management: a veth from each hypervisor namespace to the root.
    let m1 = Veth::new("she-m1p", "she-m1i").unwrap();
    let m2 = Veth::new("she-m2p", "she-m2i").unwrap();
    sh(
        "ip",
        &["addr", "add", "10.216.1.1/30", "dev", m1.root_end()],
    )
    .unwrap();
    sh(
        "ip",
        &["addr", "add", "10.216.2.1/30", "dev", m2.root_end()],
    )
    .unwrap();
    move_into_ns("she-m1i", &h1, "mgmt", Some("10.216.1.2/30"), None, true).unwrap();
    move_into_ns("she-m2i", &h2, "mgmt", Some("10.216.2.2/30"), None, true).unwrap();
    let vm1 = NsHost::new("she-vm1", &b1, "she-v1", 10, VM1_MAC, "10.217.1.1", 16).unwrap();
    let vm2 = NsHost::new("she-vm2", &b2, "she-v2", 10, VM2_MAC, "10.217.1.2", 16).unwrap();
    for b in [&b1, &b2] {
        b.set_controller(&format!("tcp:127.0.0.1:{of_port}"))
            .unwrap();
    }
    wait_for("2 switches and their link", Duration::from_secs(20), || {
        let n = get_json(&api, "/api/v1/links").ok()?.as_array()?.len();
        (n == 2).then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        vm2.ping("10.217.1.1", 3),
        "no connectivity before the migration"
    );
    // The stream told both switches and both link directions, in order.
    let seen = wait_for("switch and link events", Duration::from_secs(10), || {
        let ev = sse_a.events();
        let has = |kind: &str, f: &dyn Fn(&Value) -> bool| {
            ev.iter()
                .filter(|e| e.kind == kind && f(&e.data["data"]))
                .count()
        };
        (has("switch_up", &|d| d["dpid"] == "0000000000005e01") == 1
            && has("switch_up", &|d| d["dpid"] == "0000000000005e02") == 1
            && has("link_up", &|_| true) == 2)
            .then_some(ev)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", sse_a.events()));
    assert_eq!(sse_a.status(), Some(200));
    consecutive(&seen, None);
    // The client goes away before the migration.
    sse_a.close();
    let last_a = seen.last().and_then(|e| e.id).expect("an id");

    // Host daemons.
    let scenario = dir.join("vm1.json");
    std::fs::write(
        &scenario,
        r#"{"interpolation": "hold", "points": [{"t": 0, "cpu": 0.3, "mem_mb": 40, "dirty_mbps": 2}]}"#,
    )
    .unwrap();
    let vm_toml = format!(
        r#"[[vm]]
name = "she-vm1"
mac = "{VM1_MAC}"
ip = "10.217.1.1"
memory_mb = 32
backend = "netns"
namespace = "she-vm1"
iface = "eth0"
port = "she-v1"
scenario = "vm1.json"
"#
    );
    let ctl_api_1 = format!("10.216.1.1:{api_port}");
    let ctl_api_2 = format!("10.216.2.1:{api_port}");
    let hd1 = Hostd::start(
        Some(&h1),
        &dir.join("h1"),
        &hostd_config(
            "h1",
            "10.216.1.2",
            "10.217.0.1",
            "she-b1",
            &ctl_api_1,
            &dir,
            &vm_toml,
        ),
        "10.216.1.2:7070",
    )
    .expect("hostd h1");
    let hd2 = Hostd::start(
        Some(&h2),
        &dir.join("h2"),
        &hostd_config(
            "h2",
            "10.216.2.2",
            "10.217.0.2",
            "she-b2",
            &ctl_api_2,
            &dir,
            "",
        ),
        "10.216.2.2:7070",
    )
    .expect("hostd h2");

    // Hosts listed, with metrics refreshed every interval.
    let hosts = wait_for("both hosts with a report", Duration::from_secs(15), || {
        let v = get_json(&api, "/api/v1/hosts").ok()?;
        let a = v.as_array()?;
        (a.len() == 2 && a.iter().all(|h| h["metrics"].is_object())).then(|| v.clone())
    })
    .unwrap();
    let h1v = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "h1")
        .unwrap()
        .clone();
    assert_eq!(h1v["bridge"][1], "0000000000005e01");
    assert_eq!(h1v["vms"], json!(["she-vm1"]));
    let len0 = h1v["history_len"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let h1v = get_json(&api, "/api/v1/hosts/h1").unwrap();
    let len1 = h1v["history_len"].as_u64().unwrap();
    assert!(len1 >= len0 + 2, "reports every second: {len0} -> {len1}");
    assert!(h1v["last_report_age_s"].as_f64().unwrap() < 2.5, "{h1v}");
    assert!(h1v["history"].as_array().unwrap().len() as u64 == len1);
    let vm = get_json(&api, "/api/v1/vms/she-vm1").unwrap();
    assert_eq!(vm["host"], "h1");
    assert_eq!(vm["inventory"]["mac"], VM1_MAC);
    assert!(
        (vm["metrics"]["cpu_util"].as_f64().unwrap() - 0.3).abs() < 1e-9,
        "{vm}"
    );
    assert_eq!(vm["metrics"]["dirty_rate_mbps"], 2.0);
    assert_eq!(
        get_json(&api, "/api/v1/vms")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Wrong or missing token: 401, logged, nothing stored.
    let bad_reg = serde_json::to_string(&json!({"host_id": "h9"})).unwrap();
    let (code, body) = support::http(
        &api,
        "PUT",
        "/api/v1/hosts/h9",
        Some("wrong"),
        Some(&bad_reg),
    )
    .unwrap();
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("error"));
    let (code, _) =
        support::http(&api, "POST", "/api/v1/hosts/h1/reports", None, Some("{}")).unwrap();
    assert_eq!(code, 401);
    let (code, _) = support::http(
        &api,
        "POST",
        "/api/v1/hosts/h9/reports",
        Some(&support::creds::host_token("h9")),
        Some("{}"),
    )
    .unwrap();
    assert!(code == 422 || code == 400, "malformed report: {code}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("wrong bearer token") && log.contains("no bearer token"),
        "{log}"
    );
    assert_eq!(
        get_json(&api, "/api/v1/hosts")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Classes from the registered bridges: vm1 (h1) -> vm2 (h2) is NIC.
    let pinger = vm1.ns.spawn("ping", &["-i", "0.2", "10.217.1.2"]).unwrap();
    let class = wait_for("vm1->vm2 in the matrix", Duration::from_secs(10), || {
        let m = get_json(&api, "/api/v1/traffic-matrix").ok()?;
        m["pairs"]
            .as_array()?
            .iter()
            .find(|p| p["src"] == VM1_MAC && p["dst"] == VM2_MAC)
            .map(|p| p["class"].clone())
    })
    .unwrap();
    assert_eq!(class, "nic");
    drop(pinger);
    assert_eq!(
        endpoint(&api, VM1_MAC),
        Some(("0000000000005e01".into(), 10))
    );

    // Migrate vm1 to h2 through hostd's API (netns backend: the pre-copy
    // stream crosses both bridges, forwarded by the controller).
    let (_, vms) = hd1.call("GET", "/api/v1/vms", TOKEN, None).unwrap();
    let inventory = serde_json::from_str::<Value>(&vms).unwrap()[0]["inventory"].clone();
    let spec = |kind: &str| {
        let mut v = json!({
            "kind": kind, "vm": "she-vm1", "destination_host": "h2",
            "destination_addr": "10.217.0.2:4446", "max_bandwidth_bytes_per_s": 16u64 << 20,
            "downtime_limit_ms": 300, "deadline_s": 30.0,
        });
        if kind == "prepare_incoming" {
            v["vm_spec"] = inventory.clone();
        }
        v.to_string()
    };
    let (code, body) = hd2
        .call(
            "PUT",
            "/api/v1/commands/she-in-1",
            TOKEN,
            Some(&spec("prepare_incoming")),
        )
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let (code, body) = hd1
        .call(
            "PUT",
            "/api/v1/commands/she-mig-1",
            TOKEN,
            Some(&spec("migrate")),
        )
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let st = poll_command(&hd1, "she-mig-1");
    assert_eq!(st["state"], "succeeded", "{st}\n{}", hd1.log_text());

    // The controller relearns vm1 at b2 from its gratuitous ARP.
    let ofport: u64 = sh("ovs-vsctl", &["get", "interface", "she-v1", "ofport"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let at = wait_for(
        "vm1 at its new switch and port",
        Duration::from_secs(10),
        || endpoint(&api, VM1_MAC).filter(|(d, p)| d == "0000000000005e02" && *p == ofport),
    );
    assert!(
        at.is_ok(),
        "endpoint now {:?} (want 5e02:{ofport})",
        endpoint(&api, VM1_MAC)
    );
    // Back after the migration with its Last-Event-ID: every event since,
    // vm1 found at its new port among them (learnt anew when its old port
    // went away with the move), none lost or repeated.
    let sse_b = SseReader::connect(&api, READER, Some(last_a));
    let resumed = wait_for(
        "vm1's move on the resumed stream",
        Duration::from_secs(10),
        || {
            let ev = sse_b.events();
            ev.iter()
                .any(|e| {
                    (e.kind == "endpoint_moved" || e.kind == "endpoint_learned")
                        && e.data["data"]["mac"] == VM1_MAC
                        && e.data["data"]["to"]["dpid"] == "0000000000005e02"
                })
                .then_some(ev)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?} (status {:?}, ended {})",
            sse_b.events(),
            sse_b.status(),
            sse_b.ended()
        )
    });
    consecutive(&resumed, Some(last_a));
    let addr = vm1.ns.exec("ip", &["-o", "addr", "show", "eth0"]).unwrap();
    assert!(addr.contains("10.217.1.1/16"), "{addr}");
    let link = vm1.ns.exec("ip", &["-o", "link", "show", "eth0"]).unwrap();
    assert!(link.contains(VM1_MAC), "{link}");
    assert!(
        vm2.ping("10.217.1.1", 5),
        "ping does not resume after the move"
    );

    // The controller knows vm1 is on h2 now, and their traffic is IDC.
    wait_for("vm1 registered on h2", Duration::from_secs(10), || {
        (get_json(&api, "/api/v1/vms/she-vm1").ok()?["host"] == "h2").then_some(())
    })
    .unwrap();
    let _pinger = vm1.ns.spawn("ping", &["-i", "0.2", "10.217.1.2"]).unwrap();
    wait_for("vm1->vm2 classed IDC", Duration::from_secs(10), || {
        let m = get_json(&api, "/api/v1/traffic-matrix").ok()?;
        m["pairs"]
            .as_array()?
            .iter()
            .any(|p| p["src"] == VM1_MAC && p["dst"] == VM2_MAC && p["class"] == "idc")
            .then_some(())
    })
    .unwrap();

    // /metrics of the controller and of both host daemons: names, types
    // and values against what the APIs say now.
    wait_for(
        "h2's incoming command done",
        Duration::from_secs(10),
        || (poll_command(&hd2, "she-in-1")["state"] == "succeeded").then_some(()),
    )
    .unwrap();
    // (λ of the pair the ping drives: counted once its flow was polled.)
    wait_for("λ(vm1, vm2) > 0", Duration::from_secs(15), || {
        let m = get_json(&api, "/api/v1/traffic-matrix").ok()?;
        m["pairs"]
            .as_array()?
            .iter()
            .any(|p| {
                p["src"] == VM1_MAC
                    && p["dst"] == VM2_MAC
                    && p["bytes_per_s"].as_f64().is_some_and(|r| r > 0.0)
            })
            .then_some(())
    })
    .unwrap();
    let ctl = check_controller_metrics(&api);
    let m1 = check_hostd_metrics(&hd1, "h1", &[("migrate", "succeeded")]);
    let m2 = check_hostd_metrics(&hd2, "h2", &[("prepare_incoming", "succeeded")]);
    // The Grafana dashboards query what these scrapes hold.
    check_dashboards(&[&ctl, &m1, &m2]);

    // A client that does not read slows nobody down.
    a_client_that_does_not_read_slows_nobody(&api, &sse_b);
    drop((hd1, hd2));
    let _ = std::fs::remove_dir_all(&dir);
}

const READER: &str = support::creds::READER_TOKEN;

/// Event ids of `ev` go up by one (from `after + 1` when given), none a
/// `gap` notice.
#[track_caller]
fn consecutive(ev: &[SseEvent], after: Option<u64>) {
    let ids: Vec<u64> = ev
        .iter()
        .map(|e| e.id.unwrap_or_else(|| panic!("an event without id: {e:?}")))
        .collect();
    assert!(!ids.is_empty());
    if let Some(a) = after {
        assert_eq!(ids[0], a + 1, "resumed at {} after {a}", ids[0]);
    }
    for w in ids.windows(2) {
        assert_eq!(w[1], w[0] + 1, "ids {ids:?}");
    }
}

/// A client on a socket with a tiny receive buffer asks for the stream and
/// reads nothing while 500 policy changes are published: every change is
/// answered at once, and the reading client `others` receives every event,
/// in order. The burst stays below a client's buffer (`[events]
/// client_buffer`, 1024), so the reading client cannot be dropped however
/// late it is scheduled. (That a client whose buffer overflows is dropped
/// is tested on the stream itself: `api::events::tests`.)
fn a_client_that_does_not_read_slows_nobody(api: &str, others: &SseReader) {
    const BURST: usize = 500;
    let slow = SseReader::start(support::sse::tiny_socket(api), READER, None, false);
    std::thread::sleep(Duration::from_millis(500));
    let before = others.events().len();
    let t = Instant::now();
    for _ in 0..BURST {
        let (code, body) = support::http(
            api,
            "PUT",
            "/api/v1/policy",
            Some(support::creds::OPERATOR_TOKEN),
            Some(r#"{"name":"none"}"#),
        )
        .unwrap();
        assert_eq!(code, 200, "{body}");
    }
    eprintln!(
        "{BURST} policy changes in {:?} beside a client that does not read",
        t.elapsed()
    );
    let all = wait_for(
        "every change on the reading client",
        Duration::from_secs(30),
        || {
            let ev = others.events();
            (ev[before..]
                .iter()
                .filter(|e| e.kind == "policy_changed")
                .count()
                == BURST)
                .then_some(ev)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {} events", others.events().len()));
    consecutive(&all, None);
    assert!(!others.ended(), "the reading client was dropped");
    slow.close();
}

/// A scrape in the Prometheus text format: the declared type of each
/// family (a family without series is not written at all), and every
/// sample (name, labels, value).
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    text: String,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                if let (Some(n), Some(t)) = (it.next(), it.next()) {
                    types.insert(n.to_string(), t.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (head, value) = line.rsplit_once(' ').expect("name and value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), BTreeMap::new()),
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").expect("label");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (n.to_string(), labels)
                }
            };
            samples.push((name, labels, value));
        }
        Scrape {
            types,
            samples,
            text: text.to_string(),
        }
    }

    /// The value of the one sample `name` whose labels include `want`.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.samples.iter().filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        });
        let first = found.next().map(|s| s.2);
        assert!(
            found.next().is_none(),
            "{name} {want:?}: more than one sample"
        );
        first
    }

    #[track_caller]
    fn kind(&self, family: &str, t: &str) {
        assert_eq!(
            self.types.get(family).map(String::as_str),
            Some(t),
            "type of {family}:\n{}",
            self.text
        );
    }
}

fn scrape(addr: &str, token: Option<&str>) -> (u16, String) {
    support::http(addr, "GET", "/metrics", token, None).unwrap()
}

fn check_controller_metrics(api: &str) -> Scrape {
    let (code, _) = scrape(api, None);
    assert_eq!(code, 401, "/metrics without a token");
    let (code, text) = scrape(api, Some(support::creds::READER_TOKEN));
    assert_eq!(code, 200, "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "not OpenMetrics text");
    let m = Scrape::parse(&text);
    for (f, t) in [
        ("shoal_info", "gauge"),
        ("shoal_switches_connected", "gauge"),
        ("shoal_links", "gauge"),
        ("shoal_openflow_messages", "counter"),
        ("shoal_packet_in_dropped", "counter"),
        ("shoal_port_bytes", "counter"),
        ("shoal_traffic_bytes_per_second", "gauge"),
        ("shoal_pair_bytes_per_second", "gauge"),
        ("shoal_host_cpu_utilization", "gauge"),
        ("shoal_host_memory_bytes", "gauge"),
        ("shoal_rounds", "counter"),
        ("shoal_migrations", "gauge"),
        ("shoal_vfs", "gauge"),
        ("shoal_switch_poll_duration_seconds", "gauge"),
        ("shoal_switch_poll_seconds", "counter"),
        ("shoal_switch_polls", "counter"),
        ("shoal_switch_poll_failures", "counter"),
        ("shoal_migrations_finished", "counter"),
        ("shoal_migrations_compared", "counter"),
        ("shoal_migration_actual_seconds", "counter"),
        ("shoal_migration_predicted_seconds", "counter"),
        ("shoal_migration_deadlines_missed", "counter"),
    ] {
        m.kind(f, t);
    }
    assert_eq!(m.value("shoal_info", &[("mode", "single")]), Some(1.0));
    let switches = get_json(api, "/api/v1/switches").unwrap();
    assert_eq!(
        m.value("shoal_switches_connected", &[]),
        Some(switches.as_array().unwrap().len() as f64)
    );
    let links = get_json(api, "/api/v1/links").unwrap();
    assert_eq!(
        m.value("shoal_links", &[]),
        Some(links.as_array().unwrap().len() as f64)
    );
    let pin = |m: &Scrape| {
        m.value(
            "shoal_openflow_messages_total",
            &[("type", "OFPT_PACKET_IN"), ("direction", "rx")],
        )
        .unwrap_or(0.0)
    };
    let fmod = m
        .value(
            "shoal_openflow_messages_total",
            &[("type", "OFPT_FLOW_MOD"), ("direction", "tx")],
        )
        .unwrap_or(0.0);
    assert!(pin(&m) > 0.0 && fmod > 0.0, "{text}");
    // Every host's memory, as registered.
    let hosts = get_json(api, "/api/v1/hosts").unwrap();
    for h in hosts.as_array().unwrap() {
        let id = h["id"].as_str().unwrap();
        if let Some(total) = h["metrics"]["mem_total_mb"].as_f64() {
            assert_eq!(
                m.value("shoal_host_memory_bytes", &[("host", id)]),
                Some(total * 1048576.0),
                "{id}"
            );
        }
    }
    // The pair the test drives (vm1 → vm2, one hypervisor now): exported,
    // and within its class's total.
    let pair = m
        .value(
            "shoal_pair_bytes_per_second",
            &[("src", VM1_MAC), ("dst", VM2_MAC), ("class", "idc")],
        )
        .unwrap_or_else(|| panic!("vm1→vm2 not exported:\n{text}"));
    assert!(pair > 0.0);
    assert!(
        m.value("shoal_traffic_bytes_per_second", &[("class", "idc")])
            .unwrap()
            >= pair
    );
    // No migration through the controller here: every state is 0, none
    // finished, nothing compared with the model.
    for st in ["queued", "running", "done", "failed"] {
        assert_eq!(
            m.value("shoal_migrations", &[("state", st)]),
            Some(0.0),
            "{st}"
        );
    }
    for st in ["done", "failed", "cancelled"] {
        assert_eq!(
            m.value("shoal_migrations_finished_total", &[("state", st)]),
            Some(0.0),
            "{st}"
        );
    }
    for n in [
        "shoal_migrations_compared_total",
        "shoal_migration_actual_seconds_total",
        "shoal_migration_predicted_seconds_total",
        "shoal_migration_deadlines_missed_total",
    ] {
        assert_eq!(m.value(n, &[]), Some(0.0), "{n}");
    }
    // Statistics polls (every second here) of each switch the API lists:
    // complete ones, timed within the request timeout (5 s), failures
    // counted by reason (a series each, whatever their number).
    let dpids: Vec<String> = switches
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["dpid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dpids.len(), 2, "{switches}");
    let polls = |m: &Scrape, d: &str| {
        m.value("shoal_switch_polls_total", &[("dpid", d)])
            .unwrap_or_else(|| panic!("no polls of {d}:\n{}", m.text))
    };
    for d in &dpids {
        let n = polls(&m, d);
        assert!(n >= 1.0, "{d}: {n} polls");
        let last = m
            .value("shoal_switch_poll_duration_seconds", &[("dpid", d)])
            .unwrap();
        assert!(last > 0.0 && last <= 5.0, "{d}: last poll {last} s");
        let total = m
            .value("shoal_switch_poll_seconds_total", &[("dpid", d)])
            .unwrap();
        assert!(total >= last && total / n <= 5.0, "{d}: {total} s in {n}");
        for reason in ["timeout", "error"] {
            assert!(
                m.value(
                    "shoal_switch_poll_failures_total",
                    &[("dpid", d), ("reason", reason)]
                )
                .is_some(),
                "{d} {reason}"
            );
        }
    }
    assert_eq!(
        m.samples
            .iter()
            .filter(|(n, _, _)| n == "shoal_switch_polls_total")
            .count(),
        2,
        "one series per connected switch"
    );
    // Counters only grow; the switches are polled on.
    let again = wait_for(
        "more polls of both switches",
        Duration::from_secs(10),
        || {
            let (_, t) = scrape(api, Some(support::creds::READER_TOKEN));
            let a = Scrape::parse(&t);
            dpids
                .iter()
                .all(|d| polls(&a, d) > polls(&m, d))
                .then_some(a)
        },
    )
    .unwrap();
    assert!(pin(&again) >= pin(&m));
    m
}

fn check_hostd_metrics(hd: &Hostd, id: &str, commands: &[(&str, &str)]) -> Scrape {
    let (code, _) = scrape(&hd.api, None);
    assert_eq!(code, 401, "hostd {id}: /metrics without a token");
    let (code, text) = scrape(&hd.api, Some(TOKEN));
    assert_eq!(code, 200, "hostd {id}: {text}");
    let m = Scrape::parse(&text);
    m.kind("shoal_hostd_reports", "counter");
    m.kind("shoal_hostd_sensor_passes", "counter");
    m.kind("shoal_hostd_commands", "gauge");
    m.kind("shoal_hostd_vms", "gauge");
    m.kind("shoal_hostd_qmp_commands", "counter");
    assert_eq!(m.value("shoal_hostd_info", &[("host", id)]), Some(1.0));
    assert!(
        m.value("shoal_hostd_reports_total", &[("outcome", "sent")])
            .unwrap_or(0.0)
            > 0.0,
        "{text}"
    );
    assert!(
        m.value("shoal_hostd_sensor_passes_total", &[])
            .unwrap_or(0.0)
            > 0.0
    );
    // Network-namespace VMs only: QEMU was never asked anything.
    assert_eq!(m.value("shoal_hostd_qmp_commands_total", &[]), Some(0.0));
    for (kind, state) in commands {
        assert_eq!(
            m.value("shoal_hostd_commands", &[("kind", kind), ("state", state)]),
            Some(1.0),
            "{id}: {kind} {state}\n{text}"
        );
    }
    // VMs by state, as the daemon lists them.
    let (_, vms) = hd.call("GET", "/api/v1/vms", TOKEN, None).unwrap();
    let vms: Value = serde_json::from_str(&vms).unwrap();
    let running = vms
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["state"] == "running")
        .count();
    assert_eq!(
        m.value("shoal_hostd_vms", &[("state", "running")])
            .unwrap_or(0.0),
        running as f64,
        "{id}\n{text}"
    );
    m
}

/// Families the dashboards query that are written only once they have a
/// series, which this test bed never gives them (no meter, no
/// reservation, no migration through the controller, no hotspot or
/// decision for sure). Each must be queried by a dashboard (no stale
/// entry); that the controller writes them is checked on a populated
/// controller (`api::metrics::tests` in shoal-controller).
const NOT_IN_THIS_BED: [&str; 6] = [
    "shoal_meter_bytes_per_second",
    "shoal_meter_band_bytes_per_second",
    "shoal_reserved_bytes_per_second",
    "shoal_migration_last_seconds",
    "shoal_hotspot",
    "shoal_decisions_total",
];

/// Every `shoal_…` metric name in the queries of dashboard `v`: targets'
/// `expr`, variables' `definition` and `query`.
fn queried_names(v: &Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("expr" | "definition" | "query", Value::String(s)) => {
                        let mut rest = s.as_str();
                        while let Some(i) = rest.find("shoal_") {
                            let name: String = rest[i..]
                                .chars()
                                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                                .collect();
                            rest = &rest[i + name.len()..];
                            out.insert(name);
                        }
                    }
                    _ => queried_names(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| queried_names(x, out)),
        _ => {}
    }
}

/// The Grafana dashboards of `docs/grafana/` parse, carry the import
/// input for the Prometheus data source and use it in every panel and
/// query, have unique uids and panel ids, and query only metric names
/// these scrapes (of the controller and the host daemons) hold: a
/// family's name (`# TYPE`) or a sample's (`_total`, …), apart from
/// [`NOT_IN_THIS_BED`].
fn check_dashboards(scrapes: &[&Scrape]) {
    use std::collections::BTreeSet;
    let exported: BTreeSet<&str> = scrapes
        .iter()
        .flat_map(|s| {
            s.types
                .keys()
                .map(String::as_str)
                .chain(s.samples.iter().map(|x| x.0.as_str()))
        })
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["fabric.json", "hosts.json", "migrations.json"]);
    let mut uids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for p in &files {
        let file = p.display();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap())
            .unwrap_or_else(|e| panic!("{file}: not JSON: {e}"));
        assert!(
            d["__inputs"].as_array().is_some_and(|a| a
                .iter()
                .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus")),
            "{file}: no DS_PROMETHEUS import input"
        );
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_string()),
            "{file}: uid"
        );
        let mut ids = BTreeSet::new();
        for panel in d["panels"].as_array().unwrap() {
            let title = &panel["title"];
            assert!(
                ids.insert(panel["id"].as_u64().unwrap()),
                "{file}: panel id of {title} twice"
            );
            assert!(panel["gridPos"]["w"].as_u64().is_some(), "{file}: {title}");
            if panel["type"] == "row" {
                continue;
            }
            let uses_input = |v: &Value| v["uid"] == "${DS_PROMETHEUS}";
            assert!(uses_input(&panel["datasource"]), "{file}: {title}");
            for t in panel["targets"].as_array().unwrap() {
                assert!(uses_input(&t["datasource"]), "{file}: {title}");
            }
        }
        let mut used = BTreeSet::new();
        queried_names(&d, &mut used);
        let unknown: Vec<_> = used
            .iter()
            .filter(|n| !exported.contains(n.as_str()) && !NOT_IN_THIS_BED.contains(&n.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} queries metrics neither the controller nor a host daemon writes: {unknown:?}"
        );
        queried.extend(used);
    }
    for n in NOT_IN_THIS_BED {
        assert!(queried.contains(n), "{n}: no dashboard queries it");
    }
    // Both sides are in the dashboards: the controller's and the daemons'.
    assert!(queried.iter().any(|n| n.starts_with("shoal_hostd_")));
    assert!(queried.iter().any(|n| n.starts_with("shoal_switch_poll")));
}
