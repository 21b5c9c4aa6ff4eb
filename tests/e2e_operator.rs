//! End to end on the Mininet testbed: an operator's day, driven with
//! `shoalctl` only.
//!
//! `mininet/testbed.py --hold` builds the data center of
//! `mininet/scenarios/operator.json` (Open vSwitch bridges built by
//! Mininet, a real `shoal-hostd` per hypervisor in its dom0 namespace, VMs
//! as Mininet hosts whose memory really streams when they migrate, the real
//! controller with a SQLite database) and keeps it up while this test acts
//! as the operator; it restarts the controller on the same database when
//! asked, and removes everything it made at the end.
//!
//! ```text
//!                       tc1 ─ ta1 ─ tt1
//!        /            /             |             \             \
//!  th1: tv1 (0.3)  th2: tv3 (0.1)  th3: tv5 (1.0)  th4: tv7 (1.0)  th5: tv9 (0.4)
//!       tv2 (0.3)       tv4 (0)         tv6 (0.8)       tv8 (0.8)       tv10 (0)
//! ```
//!
//! Hypervisors have 2 cores (host CPU = Σ VM CPU): th3 and th4 run at 90 %,
//! hot under Sandpiper (threshold 85 %). The controller starts with
//! Sandpiper at automation level `recommend` (the scenario's configuration);
//! the operator adds two rules with `shoalctl rules add`: tv1 and tv3 never
//! on one host (anti-affinity), tv2 pinned to th1.
//!
//! 1. Maintenance on th1 (`shoalctl maintenance th1 on --wait`): tv1 leaves
//!    with a reservation on its path — to th5, not to the least loaded th2
//!    (anti-affinity; th3 and th4 have no room) — and tv2 is reported
//!    unmovable, naming its pin rule; th1 receives nothing.
//! 2. Recommend: the hotspots produce recommendations and nothing moves
//!    for several rounds; `shoalctl approve` of one runs its migration.
//! 3. A recommendation whose VM the operator moved meanwhile is refused
//!    with 409 (shoalctl exit 4), saying it is stale.
//! 4. After a controller restart (same database) the decisions, their
//!    outcomes, the maintenance and the audit log are still there.
//! 5. A manual move that breaks the anti-affinity is reported, a repair is
//!    recommended, and once approved the rule holds again.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::world::fresh_bin_dir;
use support::{cargo_bin, e2e_lock, ensure_ovs, is_root, wait_for, workspace_root, ChildGuard};

const PYTHON: &str = "/usr/bin/python3";

struct Ctl {
    url: String,
    token: PathBuf,
}

impl Ctl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(cargo_bin("shoalctl"))
            .env_remove("SHOAL_URL")
            .env_remove("SHOAL_TOKEN_FILE")
            .env_remove("SHOAL_CA_FILE")
            .args(["--url", &self.url, "--token-file"])
            .arg(&self.token)
            .args(args)
            .output()
            .expect("run shoalctl")
    }

    /// Runs `args --output json`; expects exit `code`; the JSON printed.
    fn json(&self, code: i32, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let o = self.run(&a);
        assert_eq!(
            o.status.code(),
            Some(code),
            "shoalctl {args:?}: {}",
            text(&o)
        );
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The testbed controller's API, read with the operator's token (the
/// testbed makes its own credentials).
struct Api {
    addr: String,
    token: String,
}

impl Api {
    /// GET `path`: the JSON of a 2xx answer.
    fn get(&self, path: &str) -> Option<Value> {
        let (code, body) =
            support::qemu::http(&self.addr, "GET", path, Some(&self.token), None).ok()?;
        if !(200..300).contains(&code) {
            return None;
        }
        serde_json::from_str(&body).ok()
    }
}

fn vm_host(api: &Api, vm: &str) -> Option<String> {
    api.get(&format!("/api/v1/vms/{vm}"))?["host"]
        .as_str()
        .map(str::to_string)
}

fn round(api: &Api) -> u64 {
    api.get("/api/v1/loop")
        .map_or(0, |l| l["round"].as_u64().unwrap_or(0))
}

fn pending(ctl: &Ctl) -> Vec<Value> {
    ctl.json(0, &["decisions", "--pending", "--limit", "500"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `testbed.py --hold` running a scenario: ended with OUT/stop (or SIGTERM
/// when dropped early), after which the testbed removes what it made.
struct HeldTestbed {
    child: ChildGuard,
    out: PathBuf,
    ready: Value,
    /// Directed links of the data center.
    links: usize,
}

impl HeldTestbed {
    fn start(scenario: &str, out: &Path) -> HeldTestbed {
        let _ = std::fs::remove_dir_all(out);
        std::fs::create_dir_all(out).unwrap();
        let root = workspace_root();
        let mut child = ChildGuard::spawn(
            Command::new(PYTHON)
                .arg(root.join("mininet/testbed.py"))
                .arg("--scenario")
                .arg(root.join(scenario))
                .arg("--out")
                .arg(out)
                .arg("--bin-dir")
                .arg(fresh_bin_dir())
                .arg("--hold")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(out.join("testbed.log")).unwrap())
                .stderr(std::fs::File::create(out.join("testbed.err")).unwrap()),
        )
        .expect("start the testbed");
        let ready = wait_for("the testbed up", Duration::from_secs(240), || {
            if let Some(st) = child.try_wait() {
                panic!(
                    "the testbed ended ({st}) before it was up:\n{}\n{}",
                    tail(&out.join("testbed.log"), 30),
                    tail(&out.join("testbed.err"), 30)
                );
            }
            let text = std::fs::read_to_string(out.join("ready.json")).ok()?;
            serde_json::from_str::<Value>(&text).ok()
        })
        .unwrap();
        let links = ready["directed_links"].as_u64().unwrap_or(0) as usize;
        HeldTestbed {
            child,
            out: out.to_path_buf(),
            ready,
            links,
        }
    }

    /// Restarts the controller on the same database; returns once its API
    /// answers again.
    fn restart_controller(&mut self) {
        let done = self.out.join("controller-restarts");
        let before = std::fs::read_to_string(&done).unwrap_or_default();
        std::fs::write(self.out.join("restart-controller"), "").unwrap();
        wait_for("the controller restarted", Duration::from_secs(60), || {
            let now = std::fs::read_to_string(&done).ok()?;
            (now != before && !self.out.join("restart-controller").exists()).then_some(())
        })
        .unwrap();
    }

    /// Ends the run; panics unless the testbed exits 0.
    fn stop(mut self) {
        std::fs::write(self.out.join("stop"), "").unwrap();
        let st = wait_for("the testbed to clean up", Duration::from_secs(120), || {
            self.child.try_wait()
        })
        .unwrap();
        assert!(
            st.success(),
            "testbed exit {st}:\n{}\n{}",
            tail(&self.out.join("testbed.log"), 30),
            tail(&self.out.join("testbed.err"), 30)
        );
    }
}

impl Drop for HeldTestbed {
    fn drop(&mut self) {
        // SIGTERM: the testbed cleans up in its `finally`.
        if self.child.try_wait().is_none() {
            self.child.terminate(Duration::from_secs(90));
        }
    }
}

#[test]
fn an_operators_day_with_shoalctl() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    ensure_ovs().unwrap();
    let out = std::env::temp_dir().join(format!("shoal-tb-operator-{}", std::process::id()));
    let mut bed = HeldTestbed::start("mininet/scenarios/operator.json", &out);
    let addr = bed.ready["api"].as_str().unwrap().to_string();
    let token_file = PathBuf::from(bed.ready["operator_token_file"].as_str().unwrap());
    let api = Api {
        addr: addr.clone(),
        token: std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_string(),
    };
    let ctl = Ctl {
        url: format!("http://{addr}"),
        token: token_file,
    };
    // The name of the testbed's operator credential: the actor of every
    // change below.
    let ops = bed.ready["operator"].as_str().unwrap().to_string();
    wait_for("5 hosts reporting", Duration::from_secs(30), || {
        let v = api.get("/api/v1/hosts")?;
        let a = v.as_array()?;
        (a.len() == 5
            && a.iter()
                .all(|h| h["history_len"].as_u64().unwrap_or(0) >= 2))
        .then_some(())
    })
    .unwrap();
    // The operator's rules.
    for rule in [
        r#"{"kind":"anti_affinity","name":"apart","vms":["tv1","tv3"],"scope":"host"}"#,
        r#"{"kind":"pin","name":"vm2-stays","vms":["tv2"],"hosts":["th1"]}"#,
    ] {
        ctl.json(0, &["rules", "add", rule]);
    }

    // Look: shoalctl sees the data center.
    let hosts_seen = ctl.json(0, &["hosts"]);
    assert_eq!(hosts_seen.as_array().map(Vec::len), Some(5), "{hosts_seen}");
    assert_eq!(ctl.json(0, &["automation", "get"])["level"], "recommend");

    // 1. Maintenance on th1.
    let o = ctl.run(&["maintenance", "th1", "on", "--wait", "--timeout-s", "90"]);
    assert_eq!(o.status.code(), Some(4), "vm2 stays: {}", text(&o));
    let m = ctl.json(0, &["maintenance", "th1", "status"]);
    let vm_state = |vm: &str| -> Value {
        m["vms"]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["vm"] == vm).cloned())
            .unwrap_or(Value::Null)
    };
    let vm1 = vm_state("tv1");
    assert_eq!(vm1["state"], "done", "{m}");
    assert_eq!(vm1["to"], "th5", "anti-affinity keeps vm1 off h2: {m}");
    let vm2 = vm_state("tv2");
    assert_eq!(vm2["state"], "unmovable", "{m}");
    assert!(
        vm2["reason"].as_str().unwrap_or("").contains("vm2-stays"),
        "the pin rule is named: {m}"
    );
    let mig_id = vm1["migration"]
        .as_str()
        .expect("vm1's migration")
        .to_string();
    let mig = ctl.json(0, &["migrations", &mig_id]);
    assert_eq!(mig["state"], "done", "{mig}");
    assert!(
        mig["reserve"] == true && !mig["path"].as_array().unwrap().is_empty(),
        "{mig}"
    );
    wait_for("tv1 registered on th5", Duration::from_secs(15), || {
        (vm_host(&api, "tv1")? == "th5").then_some(())
    })
    .unwrap();
    assert_eq!(vm_host(&api, "tv2").as_deref(), Some("th1"));
    // A named destination in maintenance is refused.
    let o = ctl.run(&["migrate", "tv9", "--to", "th1", "--deadline", "15"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("maintenance"),
        "{}",
        text(&o)
    );

    // 2. Recommendations: one per hot host; nothing moves.
    let recs = wait_for("two recommendations", Duration::from_secs(40), || {
        let p = pending(&ctl);
        let mut vms: Vec<String> = p
            .iter()
            .filter(|d| d["action"] == "migrate")
            .filter_map(|d| d["vm"].as_str().map(str::to_string))
            .collect();
        vms.sort();
        vms.dedup();
        (vms.len() >= 2).then_some(p)
    })
    .unwrap();
    for r in &recs {
        assert!(r["id"].as_i64().unwrap_or(0) > 0, "{r}");
        let e = &r["expected"];
        assert!(
            e["migration"]["predicted"]["time_s"]
                .as_f64()
                .unwrap_or(0.0)
                > 0.0,
            "{r}"
        );
        assert!(e["relieves"]["host"] == r["from"], "{r}");
        assert_ne!(r["to"], "th1", "th1 is in maintenance: {r}");
    }
    let before = ctl.json(0, &["migrations"]).as_array().map_or(0, Vec::len);
    let r0 = round(&api);
    wait_for("three more rounds", Duration::from_secs(20), || {
        (round(&api) >= r0 + 3).then_some(())
    })
    .unwrap();
    assert_eq!(
        ctl.json(0, &["migrations"]).as_array().map_or(0, Vec::len),
        before,
        "nothing moves before an approval"
    );
    // The one to approve goes to th2 if one does (so that the manual move
    // below leaves its destination alone).
    let first = recs
        .iter()
        .find(|r| r["to"] == "th2")
        .unwrap_or(&recs[0])
        .clone();
    let second = recs
        .iter()
        .find(|r| r["vm"] != first["vm"])
        .cloned()
        .expect("a second VM");
    for r in [&first, &second] {
        assert_eq!(
            vm_host(&api, r["vm"].as_str().unwrap()).as_deref(),
            r["from"].as_str()
        );
    }

    // 3. The operator moves the second one's VM by hand: its recommendation
    // is stale.
    let vm_b = second["vm"].as_str().unwrap().to_string();
    let by_hand = ["th5", "th2"]
        .into_iter()
        .find(|h| first["to"] != *h && second["from"] != *h)
        .expect("a host for the manual move");
    let moved = ctl.json(0, &["migrate", &vm_b, "--to", by_hand, "--deadline", "15"]);
    let moved_id = moved["id"].as_str().unwrap().to_string();
    wait_for("the manual move", Duration::from_secs(60), || {
        let m = ctl.json(0, &["migrations", &moved_id]);
        (m["state"] == "done").then_some(())
    })
    .unwrap();
    wait_for(
        "the VM registered where it was moved",
        Duration::from_secs(15),
        || (vm_host(&api, &vm_b)? == by_hand).then_some(()),
    )
    .unwrap();
    let id_b = second["id"].as_i64().unwrap().to_string();
    let o = ctl.run(&["approve", &id_b]);
    assert_eq!(o.status.code(), Some(4), "stale → 409: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("stale"),
        "{}",
        text(&o)
    );

    // 2 (cont.). Approving the first runs its migration.
    let id_a = first["id"].as_i64().unwrap().to_string();
    let approved = ctl.json(0, &["approve", &id_a]);
    let mig_a = approved["migration"]["id"]
        .as_str()
        .expect("queued")
        .to_string();
    let done = wait_for("the approved migration", Duration::from_secs(60), || {
        let m = ctl.json(0, &["migrations", &mig_a]);
        m["state"]
            .as_str()
            .filter(|s| *s == "done" || *s == "failed")?;
        Some(m)
    })
    .unwrap();
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["vm"], first["vm"]);
    assert_eq!(done["to"], first["to"]);
    assert_eq!(done["decision_id"], first["id"]);
    let o = ctl.run(&["approve", &id_a]);
    assert_eq!(o.status.code(), Some(4), "approved once: {}", text(&o));

    // 4. Restart: decisions, maintenance and the audit log survive.
    let start = Instant::now();
    bed.restart_controller();
    eprintln!("controller restarted in {:?}", start.elapsed());
    wait_for("the switches back", Duration::from_secs(60), || {
        (api.get("/api/v1/links")?.as_array()?.len() == bed.links).then_some(())
    })
    .unwrap();
    let log2 = std::fs::read_to_string(bed.out.join("controller-2.log")).unwrap_or_default();
    assert!(
        !log2.contains("ROLE master refused"),
        "a restarted controller is MASTER again"
    );
    let all = ctl.json(0, &["decisions", "--limit", "500"]);
    let find = |id: &str| -> Value {
        all.as_array()
            .and_then(|a| {
                a.iter()
                    .find(|d| d["id"] == id.parse::<i64>().unwrap_or(-1))
                    .cloned()
            })
            .unwrap_or(Value::Null)
    };
    let a = find(&id_a);
    assert!(
        a["outcome"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("approved by {ops}")),
        "{all}"
    );
    let b = find(&id_b);
    assert!(
        b["outcome"].as_str().unwrap_or("").starts_with("expired"),
        "{all}"
    );
    let m = ctl.json(0, &["maintenance", "list"]);
    assert!(
        m.as_array()
            .is_some_and(|a| a.iter().any(|x| x["host"] == "th1")),
        "{m}"
    );
    let audit = ctl.json(0, &["audit", "--limit", "500"]);
    let actions: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_string(),
                e["actor"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for want in ["maintenance.start", "migration.create", "decision.approve"] {
        assert!(
            actions.iter().any(|(a, who)| a == want && *who == ops),
            "{want} by {ops}: {audit}"
        );
    }
    // 5. An operator's manual move breaks the anti-affinity (a named
    // destination is taken as asked): a repair is recommended, and once
    // approved the rule holds again.
    let broke = ctl.json(0, &["migrate", "tv1", "--to", "th2", "--deadline", "15"]);
    let broke_id = broke["id"].as_str().unwrap().to_string();
    wait_for("the rule-breaking move", Duration::from_secs(60), || {
        let m = ctl.json(0, &["migrations", &broke_id]);
        (m["state"] == "done").then_some(())
    })
    .unwrap();
    let apart_broken = |v: &Value| {
        v["violations"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["rule"] == "apart"))
    };
    wait_for("the violation reported", Duration::from_secs(15), || {
        apart_broken(&ctl.json(0, &["rules", "list"])).then_some(())
    })
    .unwrap();
    let repair = wait_for("a repair recommended", Duration::from_secs(30), || {
        pending(&ctl).into_iter().find(|d| {
            d["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("repair placement rule \"apart\""))
        })
    })
    .unwrap();
    assert_ne!(repair["to"], "th1", "{repair}");
    let approved = ctl.json(0, &["approve", &repair["id"].to_string()]);
    let rid = approved["migration"]["id"]
        .as_str()
        .expect("queued")
        .to_string();
    wait_for("the repair", Duration::from_secs(60), || {
        let m = ctl.json(0, &["migrations", &rid]);
        (m["state"] == "done").then_some(())
    })
    .unwrap();
    wait_for("the rule holding again", Duration::from_secs(15), || {
        (!apart_broken(&ctl.json(0, &["rules", "list"]))).then_some(())
    })
    .unwrap();

    // Ending maintenance: th1 may receive VMs again.
    let end = ctl.json(0, &["maintenance", "th1", "off"]);
    assert_eq!(end["host"], "th1", "{end}");
    assert_eq!(ctl.json(0, &["maintenance", "list"]), Value::Array(vec![]));

    bed.stop();
    // Nothing of the testbed is left.
    let bridges = support::sh("ovs-vsctl", &["list-br"]).unwrap();
    for b in ["tc1", "ta1", "tt1", "th1", "th5"] {
        assert!(
            !bridges.split_whitespace().any(|x| x == b),
            "bridge {b} left behind"
        );
    }
    for ns in ["tv1", "tv10", "td1", "td5"] {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} left behind"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
