//! Operator control against a real `shoal-controller` process with a
//! database file (no switches needed): automation levels (validated,
//! write-only for `write` operators, persisted), and the approval and
//! rejection of recommendations — an unknown id is 404, a decision that is
//! not a pending recommendation 409, a recommendation whose VM is gone
//! expires with 409, a rejection keeps its reason; every change is audited
//! with the operator's name; all of it survives a restart.
//!
//! The migration an approval runs, and stale recommendations of VMs that
//! moved, are tested on real switches and hosts in `tests/e2e_operator.rs`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use shoal_controller::knowledge::store::{SqliteStore, StoreExt};
use support::creds::{self, READER_TOKEN};
use support::qemu::http;
use support::{cargo_bin, free_port, wait_for, ChildGuard};

const ALICE: &str = "shoal-test-alice-write-5d1e0c77";

struct Ctl {
    _child: ChildGuard,
    api: String,
}

fn start(dir: &Path, extra: &str) -> Ctl {
    creds::write_secret(&dir.join("alice.token"), ALICE).expect("token");
    creds::write_secret(&dir.join("reader.token"), READER_TOKEN).expect("token");
    let api_port = free_port().expect("port");
    let of_port = free_port().expect("port");
    let cfg = dir.join("controller.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"of_listen = "127.0.0.1:{of_port}"
api_listen = "127.0.0.1:{api_port}"
db = "{db}"
[auth]
operators = [
  {{ name = "alice", role = "write", token_file = "{a}" }},
  {{ name = "noc", role = "read", token_file = "{r}" }},
]
{extra}
"#,
            db = dir.join("shoal.db").display(),
            a = dir.join("alice.token").display(),
            r = dir.join("reader.token").display(),
        ),
    )
    .expect("config");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("controller.log"))
        .expect("log");
    let child = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log),
    )
    .expect("start controller");
    let api = format!("127.0.0.1:{api_port}");
    wait_for("the controller API", Duration::from_secs(20), || {
        std::net::TcpStream::connect(&api).ok()
    })
    .expect("controller up");
    Ctl { _child: child, api }
}

fn call(c: &Ctl, token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (code, text) = http(&c.api, method, path, Some(token), body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, v)
}

fn decision(c: &Ctl, id: i64) -> Value {
    let (code, v) = call(c, READER_TOKEN, "GET", "/api/v1/decisions?limit=500", None);
    assert_eq!(code, 200, "{v}");
    v.as_array()
        .and_then(|a| a.iter().find(|d| d["id"] == id).cloned())
        .unwrap_or_else(|| panic!("decision {id} not listed: {v}"))
}

#[test]
fn automation_levels_and_approvals() {
    let dir = std::env::temp_dir().join(format!("shoal-api-control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // Recommendations of an earlier run, and one executed decision.
    let (pending, other, executed) = {
        let s = SqliteStore::open(&dir.join("shoal.db")).expect("db");
        let mig = |vm: &str| json!({"action": "migrate", "vm": vm, "from": "h1", "to": "h2", "reason": "hot", "score": 1.0, "details": {"metrics": {}, "alternatives": []}});
        let t = 1_796_000_000_000;
        (
            s.record_decision(1, t, "sandpiper", &mig("web1"), "recommended")
                .expect("seed"),
            s.record_decision(1, t, "sandpiper", &mig("web2"), "recommended")
                .expect("seed"),
            s.record_decision(1, t, "sandpiper", &mig("db1"), "queued as mig-1")
                .expect("seed"),
        )
    };
    let c = start(&dir, "[automation]\nlevel = \"recommend\"\n");

    // Automation levels: the configuration's, then changed and checked.
    let (code, v) = call(&c, READER_TOKEN, "GET", "/api/v1/automation", None);
    assert_eq!(
        (code, v.clone()),
        (200, json!({"level": "recommend", "vms": {}})),
        "{v}"
    );
    let put = |token: &str, body: &str| call(&c, token, "PUT", "/api/v1/automation", Some(body));
    assert_eq!(put(READER_TOKEN, r#"{"level":"auto"}"#).0, 403);
    assert_eq!(put(ALICE, r#"{"level":"sometimes"}"#).0, 422);
    assert_eq!(put(ALICE, r#"{"level":"auto","extra":1}"#).0, 422);
    let (code, v) = put(ALICE, r#"{"level":"auto","vms":{"":"manual"}}"#);
    assert_eq!(code, 422, "{v}");
    let (code, v) = put(ALICE, r#"{"level":"auto","vms":{"db1":"manual"}}"#);
    assert_eq!(code, 200, "{v}");
    let (code, v) = call(
        &c,
        ALICE,
        "PUT",
        "/api/v1/automation/vms/web1",
        Some(r#"{"level":"recommend"}"#),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["vms"], json!({"db1": "manual", "web1": "recommend"}));
    let (code, _) = call(&c, ALICE, "DELETE", "/api/v1/automation/vms/nobody", None);
    assert_eq!(code, 404);
    let (code, v) = call(&c, ALICE, "DELETE", "/api/v1/automation/vms/web1", None);
    assert_eq!((code, v["vms"].clone()), (200, json!({"db1": "manual"})));

    // Approvals and rejections.
    let post = |token: &str, path: String, body: Option<&str>| call(&c, token, "POST", &path, body);
    assert_eq!(
        post(ALICE, "/api/v1/decisions/999999/approve".into(), None).0,
        404
    );
    assert_eq!(
        post(ALICE, "/api/v1/decisions/abc/approve".into(), None).0,
        400
    );
    assert_eq!(
        post(
            READER_TOKEN,
            format!("/api/v1/decisions/{pending}/approve"),
            None
        )
        .0,
        403
    );
    let (code, v) = post(ALICE, format!("/api/v1/decisions/{executed}/approve"), None);
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("not a pending"),
        "{v}"
    );
    // Its VM is not registered here (any more): the recommendation expires.
    let (code, v) = post(ALICE, format!("/api/v1/decisions/{pending}/approve"), None);
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("stale"), "{v}");
    let d = decision(&c, pending);
    assert!(
        d["outcome"]
            .as_str()
            .unwrap_or("")
            .starts_with("expired: stale"),
        "{d}"
    );
    let (code, v) = post(ALICE, format!("/api/v1/decisions/{pending}/approve"), None);
    assert_eq!(code, 409, "expired once and for all: {v}");
    // A rejection with its reason (bounded), once.
    let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(501));
    assert_eq!(
        post(
            ALICE,
            format!("/api/v1/decisions/{other}/reject"),
            Some(&long)
        )
        .0,
        422
    );
    let (code, v) = post(
        ALICE,
        format!("/api/v1/decisions/{other}/reject"),
        Some(r#"{"reason":"not during the sale"}"#),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["outcome"], "rejected by alice: not during the sale");
    assert_eq!(
        post(ALICE, format!("/api/v1/decisions/{other}/reject"), None).0,
        409
    );

    // A restart keeps the levels, the outcomes and the audit trail.
    drop(c);
    let c = start(&dir, "[automation]\nlevel = \"recommend\"\n");
    let (_, v) = call(&c, READER_TOKEN, "GET", "/api/v1/automation", None);
    assert_eq!(
        v,
        json!({"level": "auto", "vms": {"db1": "manual"}}),
        "the store's levels win"
    );
    assert_eq!(
        decision(&c, other)["outcome"],
        "rejected by alice: not during the sale"
    );
    assert!(decision(&c, pending)["outcome"]
        .as_str()
        .unwrap_or("")
        .starts_with("expired"));
    let (code, audit) = call(&c, READER_TOKEN, "GET", "/api/v1/audit?limit=500", None);
    assert_eq!(code, 200, "{audit}");
    let seen: Vec<(String, String, String)> = audit
        .as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or("").into(),
                e["action"].as_str().unwrap_or("").into(),
                e["target"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    for want in [
        ("alice", "automation.set", "*".to_string()),
        ("alice", "automation.vm.set", "web1".into()),
        ("alice", "automation.vm.clear", "web1".into()),
        ("alice", "decision.approve", pending.to_string()),
        ("alice", "decision.reject", other.to_string()),
    ] {
        assert!(
            seen.iter()
                .any(|(a, b, t)| a == want.0 && b == want.1 && *t == want.2),
            "{want:?} in {audit}"
        );
    }
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
