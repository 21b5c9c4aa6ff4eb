//! `shoalctl` against a real `shoal-controller` process (no switches
//! needed): tables and JSON, policy changes, refused calls and their exit
//! codes (404 → 3, 401/403 → 5, unreachable → 6, usage → 2), an unsafe
//! token file, following the event stream, shell completions; the what-if
//! preview and `shoal-controller simulate --from-live` on hosts registered
//! through the API as host daemons would.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{cargo_bin, creds, free_port, wait_for, ChildGuard};

struct Ctl {
    _child: ChildGuard,
    url: String,
}

fn start(dir: &Path) -> Ctl {
    start_hosts(dir, &["h1"], "")
}

/// A controller that accepts the host daemons `hosts` (their tokens), with
/// `extra` at the end of its configuration.
fn start_hosts(dir: &Path, hosts: &[&str], extra: &str) -> Ctl {
    let auth = creds::controller_auth(dir, hosts).expect("token files");
    let api_port = free_port().expect("port");
    let of_port = free_port().expect("port");
    let cfg = dir.join("controller.toml");
    std::fs::write(
        &cfg,
        format!(
            "of_listen = \"127.0.0.1:{of_port}\"\napi_listen = \"127.0.0.1:{api_port}\"\ndb = \"{db}\"\n{auth}\n{extra}",
            db = dir.join("shoal.db").display()
        ),
    )
    .expect("config");
    let child = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("controller.log")).expect("log")),
    )
    .expect("start controller");
    let api = format!("127.0.0.1:{api_port}");
    wait_for("the controller API", Duration::from_secs(20), || {
        std::net::TcpStream::connect(&api).ok()
    })
    .expect("controller up");
    Ctl {
        _child: child,
        url: format!("http://{api}"),
    }
}

fn shoalctl(url: &str, token: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(cargo_bin("shoalctl"));
    c.env_remove("SHOAL_URL")
        .env_remove("SHOAL_TOKEN_FILE")
        .env_remove("SHOAL_CA_FILE")
        .args(["--url", url]);
    if let Some(t) = token {
        c.arg("--token-file").arg(t);
    }
    c.args(args).output().expect("run shoalctl")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: Output) -> Value {
    let out = ok(o);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn shoalctl_reads_changes_and_fails_clearly() {
    let dir = support::TempDir::new("ctl").expect("tempdir");
    let c = start(dir.path());
    let op = dir.path().join("operator.token");
    let reader = dir.path().join("reader.token");
    let url = c.url.as_str();

    // Tables for people, JSON for scripts.
    let status = ok(shoalctl(url, Some(&op), &["status"]));
    assert!(
        status.contains("policy") && status.contains("switches"),
        "{status}"
    );
    assert_eq!(
        json(shoalctl(url, Some(&op), &["-o", "json", "switches"])),
        serde_json::json!([])
    );
    let hosts = ok(shoalctl(url, Some(&reader), &["hosts"]));
    assert!(
        hosts.starts_with("host"),
        "a table with its header: {hosts}"
    );
    for cmd in [
        &["links"][..],
        &["vms"],
        &["hotspots"],
        &["decisions"],
        &["migrations"],
        &["matrix", "--top", "5"],
    ] {
        ok(shoalctl(url, Some(&reader), cmd));
    }

    // The policy, changed and read back.
    let set = json(shoalctl(
        url,
        Some(&op),
        &[
            "-o",
            "json",
            "policy",
            "set",
            "sandpiper",
            "--dry-run",
            "true",
        ],
    ));
    assert_eq!(set["name"], "sandpiper", "{set}");
    let got = json(shoalctl(
        url,
        Some(&reader),
        &["-o", "json", "policy", "get"],
    ));
    assert_eq!(
        (got["name"].as_str(), got["dry_run"].as_bool()),
        (Some("sandpiper"), Some(true))
    );

    // Refusals, each with its exit code and the controller's reason.
    let o = shoalctl(url, Some(&op), &["migrate", "no-such-vm", "--to", "h1"]);
    assert_eq!(o.status.code(), Some(3), "unknown VM: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no-such-vm"),
        "{}",
        text(&o)
    );
    let o = shoalctl(url, Some(&reader), &["policy", "set", "none"]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "a reader changes nothing: {}",
        text(&o)
    );
    let o = shoalctl(url, None, &["hosts"]);
    assert_eq!(o.status.code(), Some(5), "no token: {}", text(&o));
    let o = shoalctl(url, Some(&op), &["cancel", "../../healthz"]);
    assert_eq!(o.status.code(), Some(2), "not an id: {}", text(&o));
    let o = shoalctl(url, Some(&op), &["matrix", "--top", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = shoalctl("ftp://x", Some(&op), &["status"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = shoalctl("https://127.0.0.1:1", Some(&op), &["status"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "https needs --ca-file: {}",
        text(&o)
    );
    let closed = format!("http://127.0.0.1:{}", free_port().expect("port"));
    let o = shoalctl(&closed, Some(&op), &["--timeout", "2", "status"]);
    assert_eq!(o.status.code(), Some(6), "unreachable: {}", text(&o));
    let open = dir.path().join("open.token");
    std::fs::write(&open, creds::OPERATOR_TOKEN).expect("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = shoalctl(url, Some(&open), &["status"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a token file others may read: {}",
        text(&o)
    );

    // Following the event stream. From the start of what the controller
    // keeps: the change to sandpiper above is there, with its id.
    let first = json(shoalctl(
        url,
        Some(&op),
        &[
            "-o",
            "json",
            "watch",
            "--after",
            "0",
            "--kinds",
            "policy_changed",
            "--count",
            "1",
        ],
    ));
    assert_eq!(first["data"]["data"]["policy"], "sandpiper", "{first}");
    let after = first["id"].as_u64().expect("an event id").to_string();
    // Then two changes, whenever the watcher connects: it resumes after
    // that id, so it misses neither.
    let mut watch = Command::new(cargo_bin("shoalctl"))
        .args(["--url", url, "--token-file"])
        .arg(&op)
        .args([
            "-o",
            "json",
            "watch",
            "--after",
            &after,
            "--kinds",
            "policy_changed",
            "--count",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch");
    for name in ["idc", "score"] {
        ok(shoalctl(url, Some(&op), &["policy", "set", name]));
    }
    let start = std::time::Instant::now();
    let out = loop {
        if watch.try_wait().expect("wait").is_some() {
            break watch.wait_with_output().expect("output");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "watch did not end after 2 events"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", text(&out));
    let policies: Vec<&str> = lines
        .iter()
        .map(|l| l["data"]["data"]["policy"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(policies, ["idc", "score"], "{lines:?}");
    assert!(lines[0]["id"].as_u64() < lines[1]["id"].as_u64());

    // Completions.
    let bash = ok(shoalctl(url, None, &["completions", "bash"]));
    assert!(
        bash.contains("shoalctl") && bash.contains("migrate"),
        "{bash}"
    );
}

/// Placement rules through `shoalctl rules`: added, listed with warnings
/// about names nobody registered, refused when contradictory (with both
/// rules named), when taken or by a reader; kept across a restart;
/// removed.
#[test]
fn shoalctl_manages_placement_rules() {
    let dir = support::TempDir::new("ctlr").expect("tempdir");
    let op = dir.path().join("operator.token");
    let reader = dir.path().join("reader.token");
    let pin = r#"{"kind":"pin","name":"db-on-h1","vms":["db1"],"hosts":["h1"]}"#;
    {
        let c = start(dir.path());
        let url = c.url.as_str();
        let v = json(shoalctl(
            url,
            Some(&reader),
            &["-o", "json", "rules", "list"],
        ));
        assert_eq!(v["rules"], serde_json::json!([]), "{v}");
        let v = json(shoalctl(
            url,
            Some(&op),
            &["-o", "json", "rules", "add", pin],
        ));
        assert_eq!(v["rules"][0]["name"], "db-on-h1", "{v}");
        assert!(
            !v["warnings"].as_array().is_none_or(Vec::is_empty),
            "db1 and h1 are unknown: {v}"
        );
        let o = shoalctl(url, Some(&op), &["rules", "add", pin]);
        assert_eq!(o.status.code(), Some(4), "a taken name: {}", text(&o));
        let contra = r#"{"kind":"exclude","name":"no-h1","hosts":["h1"],"vms":["db1"]}"#;
        let o = shoalctl(url, Some(&op), &["rules", "add", contra]);
        assert_eq!(o.status.code(), Some(4), "a contradiction: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("db-on-h1") && err.contains("no-h1"),
            "both named: {err}"
        );
        let o = shoalctl(
            url,
            Some(&op),
            &["rules", "add", r#"{"kind":"pin","name":"x"}"#],
        );
        assert_eq!(o.status.code(), Some(4), "not a rule (422): {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("vms"),
            "{}",
            text(&o)
        );
        let o = shoalctl(url, Some(&reader), &["rules", "rm", "db-on-h1"]);
        assert_eq!(o.status.code(), Some(5), "a reader: {}", text(&o));
        let o = shoalctl(url, Some(&op), &["rules", "rm", "nothing"]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        let table = ok(shoalctl(url, Some(&reader), &["rules", "list"]));
        assert!(
            table.contains("db-on-h1") && table.contains("pin"),
            "{table}"
        );
    }
    // A restart keeps them (the knowledge store).
    let c = start(dir.path());
    let url = c.url.as_str();
    let v = json(shoalctl(
        url,
        Some(&reader),
        &["-o", "json", "rules", "list"],
    ));
    assert_eq!(v["rules"][0]["name"], "db-on-h1", "kept: {v}");
    let v = json(shoalctl(
        url,
        Some(&op),
        &["-o", "json", "rules", "rm", "db-on-h1"],
    ));
    assert_eq!(v["rules"], serde_json::json!([]), "{v}");
}

/// Registers `host` through the API as its host daemon would, with `vms`
/// (name, CPU cores used, memory MB), and posts `reports` reports.
fn register_host(api: &str, host: &str, cores: u32, vms: &[(&str, f64, u64)], reports: u64) {
    use support::qemu::http;
    let token = creds::host_token(host);
    let inventory: Vec<Value> = vms
        .iter()
        .enumerate()
        .map(|(i, (name, _, mem))| {
            serde_json::json!({
                "name": name, "mac": format!("02:00:00:00:{:02x}:{:02x}", host.len(), i + 1),
                "vcpus": 2, "memory_mb": mem, "max_memory_mb": mem,
                "spec": {"backend": "netns", "namespace": name, "iface": "eth0", "port": format!("{name}-p")}
            })
        })
        .collect();
    let reg = serde_json::json!({
        "host_id": host, "api_url": "http://127.0.0.1:9", "dom0_addr": "127.0.0.1",
        "cores": cores, "memory_mb": 8192, "nic": "eth0", "nic_bps": 1_000_000_000u64,
        "vf_count": 0, "interval_s": 1.0, "vms": inventory, "hostd_version": "test"
    });
    let (code, body) = http(
        api,
        "PUT",
        &format!("/api/v1/hosts/{host}"),
        Some(&token),
        Some(&reg.to_string()),
    )
    .expect("register");
    assert!((200..300).contains(&code), "register {host}: {code} {body}");
    for seq in 1..=reports {
        report_host(api, host, cores, vms, seq);
    }
}

/// Posts report `seq` of `host` as its host daemon would.
fn report_host(api: &str, host: &str, cores: u32, vms: &[(&str, f64, u64)], seq: u64) {
    use support::qemu::http;
    let token = creds::host_token(host);
    let used: f64 = vms.iter().map(|(_, c, _)| c).sum();
    {
        let metrics: Vec<Value> = vms
            .iter()
            .map(|(name, cpu, mem)| {
                serde_json::json!({
                    "name": name, "backend": "netns", "state": "running",
                    "cpu_cores": cpu, "cpu_util": cpu / 2.0, "memory_mb": mem,
                    "max_memory_mb": mem, "used_memory_mb": mem / 2,
                    "tx_bytes_per_s": 0.0, "rx_bytes_per_s": 0.0,
                    "tx_packets_per_s": 0.0, "rx_packets_per_s": 0.0, "vf_attached": false
                })
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let rep = serde_json::json!({
            "host_id": host, "seq": seq, "at_unix_ms": now, "interval_s": 1.0,
            "host": {"cpu_util": used / f64::from(cores), "mem_used_mb": 2048, "mem_total_mb": 8192,
                "swap_out_pages_per_s": 0.0, "nic_tx_bytes_per_s": 0.0, "nic_rx_bytes_per_s": 0.0},
            "vms": metrics
        });
        let (code, body) = http(
            api,
            "POST",
            &format!("/api/v1/hosts/{host}/reports"),
            Some(&token),
            Some(&rep.to_string()),
        )
        .expect("report");
        assert!((200..300).contains(&code), "report {host}: {code} {body}");
    }
}

/// The what-if preview through `shoalctl preview` (JSON and table, another
/// policy, rules of the preview only, refusals), and `shoal-controller
/// simulate --from-live` on the same live data center: its export parses
/// as a scenario, is saved, and is simulated.
#[test]
fn shoalctl_previews_and_simulate_reads_the_live_data_center() {
    let dir = support::TempDir::new("ctlp").expect("tempdir");
    let c = start_hosts(dir.path(), &["h1", "h2"], "");
    let url = c.url.as_str();
    let api = url.trim_start_matches("http://");
    let op = dir.path().join("operator.token");
    let reader = dir.path().join("reader.token");
    // No host has reported yet: nothing to simulate (503, exit 1).
    let out = std::process::Command::new(cargo_bin("shoal-controller"))
        .args(["simulate", "--from-live", url, "--token-file"])
        .arg(&reader)
        .args(["--policy", "sandpiper"])
        .output()
        .expect("simulate");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{}",
        text(&out)
    );
    // h1 runs at 95 % of its 2 cores, h2 is nearly idle.
    register_host(api, "h1", 2, &[("v1", 1.0, 512), ("v2", 0.9, 512)], 6);
    register_host(api, "h2", 2, &[("v3", 0.1, 512)], 6);

    let v = json(shoalctl(
        url,
        Some(&op),
        &["-o", "json", "preview", "--policy", "sandpiper"],
    ));
    assert_eq!(v["policy"], "sandpiper", "{v}");
    assert_eq!(
        (v["hosts"].as_u64(), v["vms"].as_u64()),
        (Some(2), Some(3)),
        "{v}"
    );
    assert!(v["hotspots"]["hot"]["h1"].is_object(), "h1 is hot: {v}");
    let moves: Vec<&Value> = v["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter(|d| d["action"] == "migrate")
        .collect();
    assert_eq!(moves.len(), 1, "{v}");
    assert_eq!(moves[0]["from"], "h1");
    assert_eq!(moves[0]["to"], "h2");
    assert!(moves[0]["expected"].is_object(), "its expected effect: {v}");
    assert!(v["cost_before"].is_number() && v["cost_after"].is_number());
    // The preview acts on nothing.
    assert_eq!(
        json(shoalctl(url, Some(&op), &["-o", "json", "migrations"])),
        serde_json::json!([])
    );
    let policy = json(shoalctl(url, Some(&op), &["-o", "json", "policy", "get"]));
    assert_eq!(policy["name"], "none", "the policy in force is unchanged");
    let table = ok(shoalctl(
        url,
        Some(&op),
        &["preview", "--policy", "sandpiper"],
    ));
    assert!(
        table.contains("\nhot: h1 (cpu)\n")
            && table.contains("migrate")
            && table.contains("relieves h1 (cpu)")
            && table.contains("communication cost"),
        "{table}"
    );
    // Rules of the preview only: h2 excluded, nothing moves.
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"[{"kind":"exclude","name":"not-h2","hosts":["h2"]}]"#,
    )
    .expect("rules");
    let rules_arg = rules.to_string_lossy().into_owned();
    let v = json(shoalctl(
        url,
        Some(&op),
        &[
            "-o",
            "json",
            "preview",
            "--policy",
            "sandpiper",
            "--rules",
            &rules_arg,
        ],
    ));
    assert!(
        v["decisions"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["action"] != "migrate")),
        "{v}"
    );
    assert_eq!(
        v["violations_before"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );
    let rules_in_force = json(shoalctl(url, Some(&op), &["-o", "json", "rules", "list"]));
    assert_eq!(rules_in_force["rules"], serde_json::json!([]), "not stored");
    // Refusals.
    let o = shoalctl(url, Some(&op), &["preview", "--policy", "nope"]);
    assert_eq!(o.status.code(), Some(4), "unknown policy: {}", text(&o));
    std::fs::write(
        &rules,
        r#"[{"kind":"pin","name":"on-h1","vms":["v1"],"hosts":["h1"]},
            {"kind":"exclude","name":"off-h1","vms":["v1"],"hosts":["h1"]}]"#,
    )
    .expect("rules");
    let o = shoalctl(url, Some(&op), &["preview", "--rules", &rules_arg]);
    assert_eq!(o.status.code(), Some(4), "contradiction: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("on-h1") && err.contains("off-h1"), "{err}");
    let o = shoalctl(url, Some(&op), &["preview", "--options", "{not json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = shoalctl(url, Some(&reader), &["preview"]);
    assert_eq!(o.status.code(), Some(5), "a reader: {}", text(&o));

    // simulate --from-live: the export, saved and simulated.
    let saved = dir.path().join("live.json");
    let out = std::process::Command::new(cargo_bin("shoal-controller"))
        .args(["simulate", "--from-live", url, "--token-file"])
        .arg(&reader)
        .args([
            "--policy",
            "sandpiper",
            "--warmup",
            "5",
            "--rounds",
            "2",
            "--save",
        ])
        .arg(&saved)
        .output()
        .expect("simulate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert!(
        lines
            .last()
            .is_some_and(|l| l["summary"]["policy"] == "sandpiper"),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "migrate" && l["vm"].is_string() && l["from"] == "h1"),
        "the simulator moves a VM off h1 as the preview did: {stdout}"
    );
    let scn =
        shoal_controller::sim::Scenario::load(&std::fs::read_to_string(&saved).expect("saved"))
            .expect("the saved export is a valid scenario");
    let placed: Vec<(String, String)> = scn
        .vms
        .iter()
        .map(|v| (v.name.clone(), v.host.clone()))
        .collect();
    assert_eq!(
        placed,
        [("v1", "h1"), ("v2", "h1"), ("v3", "h2")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .to_vec()
    );
    assert_eq!(scn.hosts.len(), 2);
    // Without a token: the controller's refusal, exit 1.
    let out = std::process::Command::new(cargo_bin("shoal-controller"))
        .args(["simulate", "--from-live", url, "--policy", "sandpiper"])
        .output()
        .expect("simulate");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        text(&out)
    );
}

/// Polls `f` every 200 ms for up to `secs` seconds.
fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The operator's controls through `shoalctl`: automation levels (data
/// center and per VM), a recommendation rejected and one approved (or
/// refused with its reason), filtered decisions and migrations, the audit
/// log, maintenance that cannot drain a VM kept by its level (`--wait`:
/// exit 4 with the reason), groups replaced and cleared.
#[test]
fn shoalctl_steers_automation_recommendations_maintenance_and_groups() {
    let dir = support::TempDir::new("ctlc").expect("tempdir");
    let c = start_hosts(dir.path(), &["h1", "h2"], "[monitor]\ninterval_s = 1\n");
    let url = c.url.as_str();
    let api = url.trim_start_matches("http://").to_string();
    let op = dir.path().join("operator.token");
    let reader = dir.path().join("reader.token");
    let h1: &[(&str, f64, u64)] = &[("v1", 1.0, 512), ("v2", 0.9, 512)];
    let h2: &[(&str, f64, u64)] = &[("v3", 0.1, 512)];
    register_host(&api, "h1", 2, h1, 1);
    register_host(&api, "h2", 2, h2, 1);
    // The host daemons keep reporting while the test runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reporter = {
        let (stop, api) = (stop.clone(), api.clone());
        std::thread::spawn(move || {
            let mut seq = 2;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                report_host(&api, "h1", 2, h1, seq);
                report_host(&api, "h2", 2, h2, seq);
                seq += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let run = |args: &[&str]| shoalctl(url, Some(&op), args);

    // Automation levels.
    let a = json(run(&["-o", "json", "automation", "set", "recommend"]));
    assert_eq!(a["level"], "recommend", "{a}");
    let a = json(run(&[
        "-o",
        "json",
        "automation",
        "set",
        "manual",
        "--vm",
        "v3",
    ]));
    assert_eq!(a["vms"]["v3"], "manual", "{a}");
    let table = ok(shoalctl(url, Some(&reader), &["automation", "get"]));
    assert!(
        table.contains("recommend") && table.contains("vm v3"),
        "{table}"
    );
    let o = shoalctl(url, Some(&reader), &["automation", "set", "auto"]);
    assert_eq!(o.status.code(), Some(5), "a reader: {}", text(&o));

    // Recommendations: the loop records them pending; one rejected, the
    // next approved (or refused with the controller's reason).
    ok(run(&["policy", "set", "sandpiper"]));
    let pending = |not: i64| {
        eventually("a pending recommendation", 30, || {
            let v = json(run(&["-o", "json", "decisions", "--pending", "--vm", "v1"]));
            v.as_array()?
                .iter()
                .filter_map(|d| d["id"].as_i64())
                .find(|id| *id != not)
        })
    };
    let first = pending(0);
    let table = ok(run(&["decisions", "--pending"]));
    assert!(table.contains("migrate") && table.contains("v1"), "{table}");
    let r = json(run(&["-o", "json", "reject", &first.to_string()]));
    assert_eq!(r["decision"]["id"].as_i64(), Some(first), "{r}");
    let o = run(&["reject", &first.to_string()]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "not pending any more: {}",
        text(&o)
    );
    let second = pending(first);
    let o = run(&["-o", "json", "approve", &second.to_string()]);
    match o.status.code() {
        Some(0) => {
            let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
            assert_eq!(v["decision"]["id"].as_i64(), Some(second), "{v}");
        }
        Some(4) => assert!(!o.stderr.is_empty(), "the reason: {}", text(&o)),
        _ => panic!("approve: {}", text(&o)),
    }
    let o = run(&["approve", "999999999"]);
    assert_eq!(o.status.code(), Some(3), "unknown id: {}", text(&o));
    ok(run(&["policy", "set", "none"]));
    let v = json(run(&[
        "-o",
        "json",
        "decisions",
        "--policy",
        "sandpiper",
        "--vm",
        "v1",
        "--limit",
        "5",
    ]));
    let list = v.as_array().expect("decisions");
    assert!(!list.is_empty() && list.len() <= 5, "{v}");
    assert!(
        list.iter()
            .all(|d| d["vm"] == "v1" && d["policy"] == "sandpiper"),
        "{v}"
    );
    json(run(&[
        "-o",
        "json",
        "migrations",
        "--state",
        "queued",
        "--vm",
        "v1",
        "--limit",
        "3",
    ]));

    // Maintenance: v3 is manual, so h2 cannot be drained.
    let o = run(&["maintenance", "h2", "on", "--wait", "--timeout-s", "30"]);
    assert_eq!(o.status.code(), Some(4), "v3 cannot move: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("h2 draining"), "progress lines: {}", text(&o));
    assert!(
        err.contains("v3") && err.contains("manual"),
        "the reason: {}",
        text(&o)
    );
    let list = ok(shoalctl(url, Some(&reader), &["maintenance", "list"]));
    assert!(
        list.contains("h2 draining") && list.contains("unmovable"),
        "{list}"
    );
    let v = json(run(&["-o", "json", "maintenance", "h2", "status"]));
    assert_eq!(v["host"], "h2", "{v}");
    ok(run(&["maintenance", "h2", "off"]));
    let o = run(&["maintenance", "h2", "status"]);
    assert_eq!(o.status.code(), Some(3), "not in maintenance: {}", text(&o));
    let o = run(&["maintenance", "h2"]);
    assert_eq!(o.status.code(), Some(2), "no action: {}", text(&o));
    ok(run(&["automation", "clear", "--vm", "v3"]));
    let o = run(&["automation", "clear", "--vm", "v3"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));

    // The audit log has the changes, filtered by action.
    let v = json(run(&[
        "-o",
        "json",
        "audit",
        "--action",
        "automation.set",
        "--limit",
        "10",
    ]));
    let list = v.as_array().expect("audit");
    assert!(!list.is_empty(), "{v}");
    assert!(list.iter().all(|a| a["action"] == "automation.set"), "{v}");
    let table = ok(shoalctl(url, Some(&reader), &["audit", "--limit", "50"]));
    assert!(
        table.starts_with("id") && table.contains("automation"),
        "{table}"
    );

    // Groups, replaced and cleared.
    let groups = dir.path().join("groups.json");
    std::fs::write(
        &groups,
        r#"{"domains":{"d1":["h1","h2"]},"environments":[{"name":"t1","members":["v1","v2"],"head":"v1"}]}"#,
    )
    .expect("groups");
    let g = json(run(&[
        "-o",
        "json",
        "groups",
        "set",
        &groups.to_string_lossy(),
    ]));
    assert_eq!(g["domains"]["d1"], serde_json::json!(["h1", "h2"]), "{g}");
    let table = ok(shoalctl(url, Some(&reader), &["groups"]));
    assert!(table.contains("domain") && table.contains("t1"), "{table}");
    ok(run(&["groups", "clear"]));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reporter.join().expect("reporter");
}
