//! History and audit against a real `shoal-controller` process with a
//! database file (no switches needed): `GET /api/v1/decisions`,
//! `GET /api/v1/migrations` and `GET /api/v1/audit` read the knowledge
//! store with filters and pages; every operator change (allowed or refused
//! for its content) is in the audit trail with the credential's name and
//! its time; bad parameters are 400s; and all of it survives a restart of
//! the controller on the same database.
//!
//! Decisions and finished migrations of an "earlier run" are seeded through
//! the controller's own store API before it starts (the loop makes no
//! decisions without hosts).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use shoal_controller::execute::orchestrator::Migration;
use shoal_controller::knowledge::store::{SqliteStore, StoreExt};
use support::creds::{self, READER_TOKEN};
use support::qemu::http;
use support::sse::SseReader;
use support::{cargo_bin, free_port, wait_for, ChildGuard};

const ALICE: &str = "shoal-test-alice-write-0c5e81d2";
const BOB: &str = "shoal-test-bob-write-7f3a90b4";

struct Ctl {
    child: ChildGuard,
    api: String,
}

/// A controller on `dir/shoal.db` accepting alice and bob (write) and noc
/// (read).
fn start(dir: &Path) -> Ctl {
    creds::write_secret(&dir.join("alice.token"), ALICE).expect("token");
    creds::write_secret(&dir.join("bob.token"), BOB).expect("token");
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
  {{ name = "bob", role = "write", token_file = "{b}" }},
  {{ name = "noc", role = "read", token_file = "{r}" }},
]
"#,
            db = dir.join("shoal.db").display(),
            a = dir.join("alice.token").display(),
            b = dir.join("bob.token").display(),
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
    Ctl { child, api }
}

fn call(c: &Ctl, token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (code, text) = http(&c.api, method, path, Some(token), body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, v)
}

/// A GET that must succeed; its JSON array.
fn list(c: &Ctl, path: &str) -> Vec<Value> {
    let (code, v) = call(c, READER_TOKEN, "GET", path, None);
    assert_eq!(code, 200, "GET {path}: {v}");
    v.as_array()
        .unwrap_or_else(|| panic!("GET {path}: not an array: {v}"))
        .clone()
}

fn ids(v: &[Value]) -> Vec<i64> {
    v.iter().map(|x| x["id"].as_i64().expect("id")).collect()
}

fn strs<'a>(v: &'a [Value], k: &str) -> Vec<&'a str> {
    v.iter().map(|x| x[k].as_str().unwrap_or("")).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A finished migration record as the orchestrator stores it.
fn migration(id: &str, vm: &str, from: &str, to: &str, state: &str, created: i64) -> Migration {
    serde_json::from_value(json!({
        "id": id, "vm": vm, "from": from, "to": to, "state": state,
        "reason": "seeded", "deadline_s": 30.0, "reserve": false,
        "bandwidth_bytes_per_s": 1e8, "memory_mb": 512.0, "dirty_rate_mbps": 1.0,
        "path": [], "hops": [], "reservations": [],
        "src_addr": "10.0.0.1", "dst_addr": "10.0.0.2:4444",
        "created_unix_ms": created, "ended_unix_ms": created + 1000, "seq": 1
    }))
    .expect("a migration record")
}

/// Seeds decisions and finished migrations of an earlier run; returns the
/// decisions' ids in order and the time they were made around.
fn seed(db: &Path) -> (Vec<i64>, i64) {
    let s = SqliteStore::open(db).expect("open the database");
    let t = now_ms() - 60_000;
    let mig = |vm: &str, from: &str, to: &str| json!({"action": "migrate", "vm": vm, "from": from, "to": to, "reason": "hot", "score": 1.0, "details": {}});
    let vf = |vm: &str, host: &str| json!({"action": "attach_vf", "vm": vm, "host": host, "reason": "net", "score": 0.5, "details": {}});
    let rows = [
        (1, t, "sandpiper", mig("web1", "h1", "h2"), "recommended"),
        (
            2,
            t + 1000,
            "sandpiper",
            mig("db1", "h2", "h3"),
            "queued as mig-x",
        ),
        (3, t + 2000, "idc", vf("web1", "h3"), "skipped: busy"),
        (4, t + 3000, "idc", mig("db1", "h3", "h1"), "recommended"),
    ];
    let mut d: Vec<i64> = rows
        .iter()
        .map(|(round, at, policy, dec, outcome)| {
            s.record_decision(*round, *at, policy, dec, outcome)
                .unwrap()
        })
        .collect();
    // Made twice: one row, counted.
    for k in 0..2 {
        let id = s
            .record_decision(
                5 + k,
                t + 4000 + k,
                "sandpiper",
                &vf("app1", "h4"),
                "dry_run",
            )
            .unwrap();
        if k == 0 {
            d.push(id);
        }
    }
    for (i, (vm, from, to, state)) in [
        ("web1", "h1", "h2", "done"),
        ("db1", "h2", "h3", "failed"),
        ("web1", "h2", "h3", "done"),
    ]
    .iter()
    .enumerate()
    {
        let id = format!("mig-seed-{i}");
        let m = migration(&id, vm, from, to, state, t + 100 * i as i64);
        s.put_migration(&id, vm, state, &m, t + 100 * i as i64)
            .unwrap();
    }
    (d, t)
}

#[test]
fn history_and_audit_filter_page_and_survive_a_restart() {
    let dir = support::TempDir::new("history").expect("tempdir");
    let (d, t) = seed(&dir.path().join("shoal.db"));
    let c = start(dir.path());

    // ---- decisions of the earlier run, from the store --------------------
    let all = list(&c, "/api/v1/decisions");
    let seeded: Vec<Value> = all
        .iter()
        .filter(|x| d.contains(&x["id"].as_i64().unwrap_or(0)))
        .cloned()
        .collect();
    assert_eq!(ids(&seeded), d, "newest last: {all:?}");
    let first = &seeded[0];
    for k in [
        "id",
        "round",
        "at_unix_ms",
        "policy",
        "action",
        "vm",
        "reason",
        "score",
        "details",
        "outcome",
        "count",
        "last_unix_ms",
    ] {
        assert!(first.get(k).is_some(), "{k} missing: {first}");
    }
    assert_eq!(
        (first["at_unix_ms"].as_i64(), first["policy"].as_str()),
        (Some(t), Some("sandpiper"))
    );
    let last = &seeded[4];
    assert_eq!(
        (last["count"].as_i64(), last["last_unix_ms"].as_i64()),
        (Some(2), Some(t + 4001))
    );
    // Each filter.
    let q = |p: &str| ids(&list(&c, &format!("/api/v1/decisions?{p}")));
    assert_eq!(q("vm=web1"), [d[0], d[2]]);
    assert_eq!(q("host=h3"), [d[1], d[2], d[3]]);
    assert_eq!(q("policy=idc"), [d[2], d[3]]);
    assert_eq!(q("outcome=recommended"), [d[0], d[3]]);
    assert_eq!(q("pending=true"), [d[0], d[3]]);
    assert_eq!(q("outcome=queued"), [d[1]]);
    assert_eq!(
        q(&format!("since={}&until={}", t + 1000, t + 3000)),
        [d[1], d[2], d[3]]
    );
    assert_eq!(q(&format!("until={}", t - 1)), Vec::<i64>::new());
    assert_eq!(q(&format!("before_id={}&limit=2", d[3])), [d[1], d[2]]);
    assert_eq!(q("vm=db1&pending=true"), [d[3]]);
    assert_eq!(q(&format!("limit=1&until={}", t + 4000)), [d[4]]);

    // ---- migrations of the earlier run ----------------------------------
    let m = list(&c, "/api/v1/migrations");
    assert_eq!(
        strs(&m, "id"),
        ["mig-seed-0", "mig-seed-1", "mig-seed-2"],
        "{m:?}"
    );
    let mq = |p: &str| -> Vec<String> {
        strs(&list(&c, &format!("/api/v1/migrations?{p}")), "id")
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    assert_eq!(mq("state=done"), ["mig-seed-0", "mig-seed-2"]);
    assert_eq!(mq("vm=db1"), ["mig-seed-1"]);
    assert_eq!(mq("host=h1"), ["mig-seed-0"]);
    assert_eq!(mq("host=h3"), ["mig-seed-1", "mig-seed-2"]);
    assert_eq!(
        mq(&format!("since={}", t + 100)),
        ["mig-seed-1", "mig-seed-2"]
    );
    assert_eq!(
        mq(&format!("until={}", t + 100)),
        ["mig-seed-0", "mig-seed-1"]
    );
    assert_eq!(mq("before=mig-seed-2&limit=1"), ["mig-seed-1"]);
    assert_eq!(mq("limit=2"), ["mig-seed-1", "mig-seed-2"]);

    // ---- bad parameters --------------------------------------------------
    for p in [
        "/api/v1/decisions?limit=0",
        "/api/v1/decisions?limit=501",
        "/api/v1/decisions?bogus=1",
        "/api/v1/decisions?since=10&until=5",
        "/api/v1/decisions?since=yesterday",
        "/api/v1/decisions?pending=true&outcome=queued",
        "/api/v1/migrations?state=bogus",
        "/api/v1/migrations?limit=501",
        "/api/v1/migrations?before=mig-nope",
        "/api/v1/migrations?since=10&until=5",
        "/api/v1/audit?limit=0",
        "/api/v1/audit?who=alice",
        "/api/v1/audit?since=10&until=5",
    ] {
        let (code, v) = call(&c, READER_TOKEN, "GET", p, None);
        assert_eq!(code, 400, "{p}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{p}: {v}"
        );
    }

    // ---- operator changes, by two operators ------------------------------
    let before = now_ms();
    let changes: [(&str, &str, &str, Option<&str>, u16); 8] = [
        (
            ALICE,
            "PUT",
            "/api/v1/policy",
            Some(r#"{"name":"sandpiper","dry_run":true}"#),
            200,
        ),
        (
            BOB,
            "POST",
            "/api/v1/rules",
            Some(r#"{"kind":"pin","name":"db-on-h1","vms":["db1"],"hosts":["h1"]}"#),
            201,
        ),
        (
            ALICE,
            "POST",
            "/api/v1/migrations",
            Some(r#"{"vm":"ghost","destination":"auto"}"#),
            404,
        ),
        (
            BOB,
            "PUT",
            "/api/v1/policy",
            Some(r#"{"name":"no-such-policy"}"#),
            422,
        ),
        (ALICE, "DELETE", "/api/v1/rules/db-on-h1", None, 200),
        (BOB, "DELETE", "/api/v1/migrations/mig-nope", None, 404),
        (BOB, "PUT", "/api/v1/rules", Some("[]"), 200),
        (ALICE, "DELETE", "/api/v1/rules/db-on-h1", None, 404),
    ];
    for (tok, method, path, body, want) in changes {
        let (code, v) = call(&c, tok, method, path, body);
        assert_eq!(code, want, "{method} {path}: {v}");
    }
    // A reader's attempt is refused before any handler: not a change.
    let (code, _) = call(
        &c,
        READER_TOKEN,
        "PUT",
        "/api/v1/policy",
        Some(r#"{"name":"none"}"#),
    );
    assert_eq!(code, 403);
    // A refused migration is not a migration.
    assert!(list(&c, "/api/v1/migrations?vm=ghost").is_empty());
    let after = now_ms();

    let audit = list(&c, "/api/v1/audit");
    let got: Vec<(&str, &str, &str, &str)> = audit
        .iter()
        .map(|a| {
            (
                a["actor"].as_str().unwrap_or(""),
                a["action"].as_str().unwrap_or(""),
                a["target"].as_str().unwrap_or(""),
                a["detail"]["outcome"]
                    .as_str()
                    .map_or("", |o| o.split(':').next().unwrap_or("")),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("alice", "policy.set", "sandpiper", "done"),
            ("bob", "rules.add", "db-on-h1", "done"),
            ("alice", "migration.create", "ghost", "refused"),
            ("bob", "policy.set", "no-such-policy", "refused"),
            ("alice", "rules.remove", "db-on-h1", "done"),
            ("bob", "migration.cancel", "mig-nope", "refused"),
            ("bob", "rules.set", "", "done"),
            ("alice", "rules.remove", "db-on-h1", "refused"),
        ],
        "{audit:?}"
    );
    let times: Vec<i64> = audit
        .iter()
        .map(|a| a["at_unix_ms"].as_i64().unwrap_or(0))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "time order: {times:?}"
    );
    assert!(
        times.iter().all(|x| (before..=after).contains(x)),
        "{times:?} in {before}..={after}"
    );
    let aid = ids(&audit);
    assert!(aid.windows(2).all(|w| w[0] < w[1]), "{aid:?}");
    assert_eq!(audit[2]["detail"]["vm"], "ghost", "{}", audit[2]);
    assert!(
        audit[2]["detail"]["outcome"]
            .as_str()
            .unwrap_or("")
            .contains("ghost"),
        "{}",
        audit[2]
    );
    assert_eq!(audit[1]["detail"]["rule"]["kind"], "pin", "{}", audit[1]);
    // Filters and pages.
    let aq = |p: &str| ids(&list(&c, &format!("/api/v1/audit?{p}")));
    assert_eq!(aq("actor=alice"), [aid[0], aid[2], aid[4], aid[7]]);
    assert_eq!(aq("actor=bob&action=policy.set"), [aid[3]]);
    assert_eq!(aq("action=rules."), [aid[1], aid[4], aid[6], aid[7]]);
    assert_eq!(aq("target=db-on-h1"), [aid[1], aid[4], aid[7]]);
    assert_eq!(
        aq(&format!("since={}&until={}", times[3], times[3])).len(),
        times.iter().filter(|x| **x == times[3]).count()
    );
    assert_eq!(aq(&format!("since={}", after + 1)), Vec::<i64>::new());
    assert_eq!(aq("limit=3"), aid[5..]);
    assert_eq!(aq(&format!("limit=3&before_id={}", aid[5])), aid[2..5]);
    let mut walked: Vec<i64> = Vec::new();
    let mut cursor = String::new();
    for _ in 0..=10 {
        let page = aq(&format!("limit=3{cursor}"));
        let Some(first) = page.first() else { break };
        cursor = format!("&before_id={first}");
        walked.splice(0..0, page);
    }
    assert_eq!(walked, aid, "pages walk back without gaps or duplicates");

    // Each entry was announced on the event stream too.
    let sse = SseReader::connect(&c.api, READER_TOKEN, Some(0));
    let announced = wait_for("8 audit events", Duration::from_secs(10), || {
        let ev: Vec<Value> = sse
            .events()
            .into_iter()
            .filter(|e| e.kind == "audit")
            .map(|e| e.data["data"].clone())
            .collect();
        (ev.len() >= 8).then_some(ev)
    })
    .expect("audit events");
    sse.close();
    assert_eq!(ids(&announced), aid, "{announced:?}");
    assert_eq!(strs(&announced, "actor"), strs(&audit, "actor"));
    assert_eq!(announced[3]["detail"], audit[3]["detail"]);

    // ---- a restart on the same database ----------------------------------
    let decisions_before = list(&c, "/api/v1/decisions?limit=500");
    let migrations_before = list(&c, "/api/v1/migrations?limit=500");
    let mut c = c;
    c.child.terminate(Duration::from_secs(10));
    let c2 = start(dir.path());
    assert_eq!(
        list(&c2, "/api/v1/audit"),
        audit,
        "the audit trail survives a restart"
    );
    let decisions_after = list(&c2, "/api/v1/decisions?limit=500");
    let keep = |v: &[Value]| -> Vec<Value> {
        v.iter()
            .filter(|x| d.contains(&x["id"].as_i64().unwrap_or(0)))
            .cloned()
            .collect()
    };
    assert_eq!(
        keep(&decisions_after),
        keep(&decisions_before),
        "decisions survive a restart"
    );
    assert_eq!(ids(&keep(&decisions_after)), d);
    assert_eq!(
        strs(&list(&c2, "/api/v1/migrations?limit=500"), "id"),
        strs(&migrations_before, "id"),
        "migrations survive a restart"
    );
    assert_eq!(
        ids(&list(&c2, "/api/v1/decisions?pending=true")),
        [d[0], d[3]]
    );
    // New changes go on after the old ones.
    let (code, v) = call(
        &c2,
        BOB,
        "PUT",
        "/api/v1/policy",
        Some(r#"{"name":"sandpiper","dry_run":false}"#),
    );
    assert_eq!(code, 200, "{v}");
    let a2 = list(&c2, "/api/v1/audit?actor=bob&limit=1");
    assert_eq!(a2.len(), 1);
    assert!(a2[0]["id"].as_i64() > aid.last().copied(), "{a2:?}");
    assert_eq!(a2[0]["action"], "policy.set");
}
