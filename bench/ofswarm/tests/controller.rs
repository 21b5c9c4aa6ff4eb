//! ofswarm against the real Shoal controller (started in this process on
//! free ports, as the workspace's wire tests do): every switch completes
//! the handshake, LLDP finds the linear topology's links (read from
//! `GET /api/v1/links`), and both load modes get answers matched to their
//! PACKET_INs; in stats mode every pair's λ from
//! `GET /api/v1/traffic-matrix` matches the emulator's known rate, and with
//! preinstalled pair flows partly queued and metered the rates of
//! `GET /api/v1/queues/stats` and `GET /api/v1/meters/stats` match the
//! traffic through the queues and meters; every link of a k = 4 fat tree
//! is found. No speed threshold.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoal_controller::app;
use shoal_controller::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const READER_TOKEN: &str = "ofswarm-test-reader-token-4f2a9c";

/// A directory of its own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("ofswarm-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(p.join("hosts")).expect("temp dir");
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_controller(dir: &Path) -> app::Running {
    let token = dir.join("reader.token");
    std::fs::write(&token, format!("{READER_TOKEN}\n")).expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let cfg = Config::from_toml(&format!(
        r#"
of_listen = "127.0.0.1:0"
api_listen = "127.0.0.1:0"
db = ":memory:"
[topology]
lldp_interval_s = 0.5
port_confirm_s = 1.0
[monitor]
interval_s = 2.0
[auth]
host_tokens_dir = "{hosts}"
operators = [ {{ name = "noc", role = "read", token_file = "{token}" }} ]
"#,
        hosts = dir.join("hosts").display(),
        token = token.display(),
    ))
    .expect("config");
    app::start(cfg.validate().expect("valid config"))
        .await
        .expect("controller starts")
}

/// GET `path` from the API with the reader token; the JSON body.
async fn api_get(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("api");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {READER_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "GET {path}: {text}");
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    // The API answers with Content-Length (no chunking) for these.
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn ofswarm(of: std::net::SocketAddr, mode: &str, json: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ofswarm"))
        .args([
            "--controller",
            &of.to_string(),
            "--topo",
            "linear:3",
            "--hosts",
            "4",
            "--mode",
            mode,
            "--duration",
            "10",
            "--warmup",
            "3",
            "--json",
        ])
        .arg(json)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ofswarm starts")
}

/// ofswarm with `args` against the controller, reading its API with the
/// reader token.
fn ofswarm_api(ctl: &app::Running, dir: &Path, args: &[&str], json: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ofswarm"))
        .args(["--controller", &ctl.of_addr.to_string()])
        .args(["--api", &format!("http://{}", ctl.api_addr)])
        .arg("--token-file")
        .arg(dir.join("reader.token"))
        .args(args)
        .arg("--json")
        .arg(json)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ofswarm starts")
}

async fn finish(child: std::process::Child, json: &Path) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("ofswarm ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "ofswarm failed: {stdout}");
    let text = std::fs::read_to_string(json).expect("json written");
    serde_json::from_str(&text).expect("json parses")
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn check_answers(r: &serde_json::Value) {
    assert_eq!(
        n(r, "handshakes"),
        3,
        "every switch completed the handshake"
    );
    assert!(n(r, "responses") > 0, "answers: {r}");
    assert_eq!(
        n(r, "responses"),
        n(r, "responses_by_flow_mod") + n(r, "responses_by_packet_out")
    );
    assert!(n(r, "responses") <= n(r, "packet_ins"));
    assert!(n(r, "flow_mods") > 0);
    assert_eq!(
        n(r, "errors_sent"),
        0,
        "the controller sent nothing ofswarm refused"
    );
    assert_eq!(n(r, "errors_received"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_latency_and_lldp_against_shoal() {
    let dir = TempDir::new();
    let ctl = start_controller(dir.path()).await;

    // Throughput; meanwhile LLDP must find the chain s1 - s2 - s3.
    let json = dir.path().join("throughput.json");
    let child = ofswarm(ctl.of_addr, "throughput", &json);
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut links = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let v = api_get(ctl.api_addr, "/api/v1/links").await;
        links = v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| {
                        let end = |e: &str| {
                            (
                                l[e]["dpid"].as_str().unwrap_or_default().to_string(),
                                l[e]["port"].as_u64().unwrap_or_default(),
                            )
                        };
                        (end("src"), end("dst"))
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if links.len() == 4 {
            break;
        }
    }
    links.sort();
    let d = |i: u64| format!("{i:016x}");
    // Hosts on ports 1-4; port 5 faces the previous switch, 6 the next.
    let want = vec![
        ((d(1), 6), (d(2), 5)),
        ((d(2), 5), (d(1), 6)),
        ((d(2), 6), (d(3), 5)),
        ((d(3), 5), (d(2), 6)),
    ];
    assert_eq!(links, want, "links found by LLDP");
    let r = finish(child, &json).await;
    check_answers(&r);
    let eps = api_get(ctl.api_addr, "/api/v1/endpoints").await;
    assert_eq!(
        eps.as_array().map(Vec::len),
        Some(12),
        "every host learnt: {eps}"
    );

    // Latency.
    let json = dir.path().join("latency.json");
    let r = finish(ofswarm(ctl.of_addr, "latency", &json), &json).await;
    check_answers(&r);
    assert!(n(&r, "latency_samples") > 0);
    assert!(n(&r, "latency_p50_us") <= n(&r, "latency_p99_us"));
    assert!(n(&r, "latency_p99_us") <= n(&r, "latency_p999_us"));

    // Statistics: pair flows with known rates on other switches (other
    // hosts: dpids from 0x100); λ read back from the API by ofswarm.
    let json = dir.path().join("stats.json");
    let child = ofswarm_api(
        &ctl,
        dir.path(),
        &[
            "--topo",
            "linear:3",
            "--hosts",
            "4",
            "--dpid-base",
            "256",
            "--mode",
            "stats",
            "--flows",
            "20",
            "--window",
            "8",
            // λ averages 3 polls of 2 s: 12 s leaves 4 polls after the
            // setup.
            "--duration",
            "12",
            "--warmup",
            "3",
            "--setup-timeout",
            "30",
            // Poll timing on a loaded CI machine may be off by tens of
            // milliseconds over the 6 s window: 2 %.
            "--tolerance",
            "0.02",
        ],
        &json,
    );
    let r = finish(child, &json).await;
    assert_eq!(n(&r, "errors_sent"), 0);
    let st = &r["stats"];
    assert_eq!(
        n(st, "pairs"),
        60,
        "20 pair flows on each of 3 switches: {st}"
    );
    assert!(
        n(st, "flow_stats_requests") >= 3 * 4,
        "every switch polled: {st}"
    );
    let l = &st["lambda"];
    assert!(l.get("error").is_none(), "λ read: {l}");
    assert_eq!(n(l, "pairs"), 60);
    assert_eq!(n(l, "missing"), 0, "every pair in the matrix: {l}");
    assert_eq!(n(l, "within_tolerance"), 60, "λ of every pair right: {l}");
    // The ports' counters carry the same traffic: every host port
    // receives its hosts' pair traffic and every output port sends it, and
    // the controller's port rates match (same tolerance).
    let p = &st["ports"];
    assert!(p.get("error").is_none(), "port rates read: {p}");
    assert!(
        n(p, "directions") >= 12 + 3,
        "rx of 12 host ports, tx of some: {p}"
    );
    assert_eq!(n(p, "missing"), 0, "{p}");
    assert_eq!(n(p, "within_tolerance"), n(p, "directions"), "{p}");

    // Statistics of queues and meters: the switches add their pair flows
    // themselves (dpids from 0x180), half of them with a set_queue before
    // the output, a quarter through a meter of their own whose drop band
    // is at half the flow's rate (half its traffic is dropped before the
    // output); the controller's port, queue and meter rates (read by
    // ofswarm from the API) must match the traffic through them.
    let json = dir.path().join("queues.json");
    let child = ofswarm_api(
        &ctl,
        dir.path(),
        &[
            "--topo",
            "linear:3",
            "--hosts",
            "4",
            "--dpid-base",
            "384",
            "--mode",
            "stats",
            "--preinstall",
            "--queued-share",
            "50",
            "--metered-share",
            "25",
            "--meter-band-pct",
            "50",
            "--flows",
            "20",
            "--duration",
            "8",
            "--warmup",
            "2",
            "--tolerance",
            "0.02",
        ],
        &json,
    );
    let r = finish(child, &json).await;
    assert_eq!(n(&r, "errors_sent"), 0);
    let st = &r["stats"];
    assert_eq!(n(st, "pairs"), 60, "{st}");
    assert!(
        st.get("lambda").is_none(),
        "no λ of preinstalled flows: {st}"
    );
    let p = &st["ports"];
    assert!(p.get("error").is_none(), "port rates read: {p}");
    assert_eq!(n(p, "missing"), 0, "{p}");
    assert_eq!(n(p, "within_tolerance"), n(p, "directions"), "{p}");
    // 10 queued pair flows per switch on queues 1 and 2 of their output
    // ports: at least one queue per switch.
    let q = &st["queues"];
    assert!(q.get("error").is_none(), "queue rates read: {q}");
    assert!(n(q, "entries") >= 3, "{q}");
    assert_eq!(n(q, "missing"), 0, "every queue with traffic listed: {q}");
    assert_eq!(n(q, "within_tolerance"), n(q, "entries"), "{q}");
    // 5 metered pair flows per switch, a meter each.
    let m = &st["meters"];
    assert!(m.get("error").is_none(), "meter rates read: {m}");
    assert_eq!(n(m, "entries"), 15, "{m}");
    assert_eq!(n(m, "missing"), 0, "every meter listed: {m}");
    assert_eq!(n(m, "within_tolerance"), 15, "{m}");
    assert_eq!(n(m, "flow_count_right"), 15, "{m}");
    assert_eq!(n(m, "band_right"), 15, "the bands took half: {m}");

    // A k = 4 fat tree (20 more switches, dpids from 0x200): the
    // controller finds all its 64 directed links.
    let json = dir.path().join("fattree.json");
    let child = ofswarm_api(
        &ctl,
        dir.path(),
        &[
            "--topo",
            "fattree:4",
            "--dpid-base",
            "512",
            "--mode",
            "idle",
            "--duration",
            "8",
            "--warmup",
            "2",
        ],
        &json,
    );
    let r = finish(child, &json).await;
    assert_eq!(n(&r, "handshakes"), 20);
    assert_eq!(n(&r, "links_expected"), 64);
    // Its 16 hosts were learnt (the earlier runs' hosts may still be
    // listed too).
    assert!(n(&r, "endpoints_listed") >= 16, "{r}");
    assert!(
        r["discovery_s"].as_f64().is_some(),
        "every link of the fat tree found: {r}"
    );
    assert_eq!(n(&r, "errors_sent"), 0);

    ctl.shutdown(Duration::from_secs(2)).await;
}

/// ofswarm in churn mode (`events` events on `topo`, switches from
/// `dpid_base`) against the controller; its JSON report.
async fn churn_run(
    ctl: &app::Running,
    dir: &Path,
    name: &str,
    topo: &str,
    dpid_base: &str,
    events: &str,
) -> serde_json::Value {
    let json = dir.join(format!("{name}.json"));
    let args = [
        "--topo",
        topo,
        "--dpid-base",
        dpid_base,
        "--mode",
        "churn",
        "--events",
        events,
        "--duration",
        "240",
        "--warmup",
        "2",
        "--converge-timeout",
        "30",
    ];
    let child = ofswarm_api(ctl, dir, &args, &json);
    finish(child, &json).await
}

/// Churn on a k = 4 fat tree: cables cut and mended, hosts moving to
/// other edge switches, switches reconnecting (12 events). After every
/// event, each host pair is traced through the emulated flow tables until
/// a round is all right: delivered once, to the destination's current
/// port, along a loop-free shortest path of the network as it is now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_keeps_forwarding_on_shortest_paths() {
    let dir = TempDir::new();
    let ctl = start_controller(dir.path()).await;
    // 12 events: the 11th reconnects switch 5 a second time within a
    // minute (once damped as cable flaps, cutting its hosts off).
    let r = churn_run(&ctl, dir.path(), "churn", "fattree:4", "1", "12").await;
    let c = &r["churn"];
    assert_eq!(n(&r, "handshakes"), 20);
    let events = c["events"].as_array().expect("events");
    assert_eq!(events.len(), 12, "{c}");
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event"]["kind"].as_str())
        .collect();
    for k in ["link_down", "link_up", "host_move", "reconnect"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    // The start converged, and every event did.
    assert_eq!(
        c["baseline"]["verdicts"]["right"].as_u64(),
        Some(240),
        "{c}"
    );
    for e in events {
        assert!(
            e["settled_s"].as_f64().is_some(),
            "the controller never listed the links that are up: {e}"
        );
        assert!(e["converged_s"].as_f64().is_some(), "did not converge: {e}");
        assert_eq!(e["last"]["verdicts"]["right"].as_u64(), Some(240), "{e}");
    }
    // No trace ever went round in circles.
    assert_eq!(n(c, "loops"), 0, "{c}");
    // The three reconnections were handshaken again.
    assert_eq!(n(&r, "rehandshakes"), 3);
    assert_eq!(n(&r, "errors_sent"), 0);

    // A tree (depth 2, fanout 4; dpids from 0x400) has no second path: the
    // first event cuts a leaf off, so its 4 hosts' 96 pairs with the 12
    // others must go nowhere (no stale flow delivers them, none leaks)
    // while the other 144 stay right; mending the cable brings all back.
    let r = churn_run(&ctl, dir.path(), "tree", "tree:2,4", "1024", "4").await;
    let c = &r["churn"];
    let events = c["events"].as_array().expect("events");
    assert_eq!(events.len(), 4, "{c}");
    assert_eq!(
        c["baseline"]["verdicts"]["right"].as_u64(),
        Some(240),
        "{c}"
    );
    let cut = &events[0];
    assert_eq!(cut["event"]["kind"], "link_down");
    assert_eq!(
        cut["last"]["verdicts"]["unreachable"].as_u64(),
        Some(96),
        "{cut}"
    );
    assert_eq!(
        cut["last"]["verdicts"]["right"].as_u64(),
        Some(144),
        "{cut}"
    );
    for e in events {
        assert!(e["settled_s"].as_f64().is_some(), "did not settle: {e}");
        assert!(e["converged_s"].as_f64().is_some(), "did not converge: {e}");
    }
    assert_eq!(events[3]["event"]["kind"], "link_up");
    assert_eq!(events[3]["last"]["verdicts"]["right"].as_u64(), Some(240));
    assert_eq!(n(c, "loops"), 0, "{c}");
    ctl.shutdown(Duration::from_secs(2)).await;
}
