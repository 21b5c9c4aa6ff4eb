//! `/api/v1/groups` against a real `shoal-controller` process with a file
//! database (no switches needed): the configuration's `[groups]`, a host
//! daemon's registration filling in, `PUT` replacing the configuration's
//! set wholesale (422 naming the field of a contradiction, 403 for a
//! read-only operator), the `groups_changed` event, the set outliving a
//! restart (the store wins over the file), and `DELETE` bringing the
//! configuration's back.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::creds::{self, host_token, OPERATOR_TOKEN, READER_TOKEN};
use support::qemu::http;
use support::sse::SseReader;
use support::{cargo_bin, free_port, wait_for, ChildGuard};

struct Ctl {
    child: ChildGuard,
    api: String,
}

/// Starts the controller on the database and configuration of `dir` (the
/// same ones on a restart).
fn start(dir: &Path) -> Ctl {
    let cfg = dir.join("controller.toml");
    if !cfg.exists() {
        let auth = creds::controller_auth(dir, &["h1"]).expect("token files");
        let (api_port, of_port) = (free_port().expect("port"), free_port().expect("port"));
        std::fs::write(
            &cfg,
            format!(
                "of_listen = \"127.0.0.1:{of_port}\"\napi_listen = \"127.0.0.1:{api_port}\"\ndb = \"{db}\"\n{auth}\n\
                 [groups]\ndomains = {{ cfg = [\"h9\"] }}\n\
                 [[groups.environments]]\nname = \"cfg-env\"\nmembers = [\"v9\"]\n",
                db = dir.join("shoal.db").display()
            ),
        )
        .expect("config");
    }
    let text = std::fs::read_to_string(&cfg).expect("config");
    let api = text
        .lines()
        .find_map(|l| l.strip_prefix("api_listen = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("api_listen")
        .to_string();
    let child = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("controller.log"))
                    .expect("log"),
            ),
    )
    .expect("start controller");
    wait_for("the controller API", Duration::from_secs(20), || {
        http(&api, "GET", "/healthz", None, None)
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .expect("controller up");
    Ctl { child, api }
}

fn call(c: &Ctl, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, Value) {
    let (code, text) = http(&c.api, method, path, Some(token), body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: {code} not JSON ({e}): {text}"));
    (code, v)
}

fn groups(c: &Ctl) -> Value {
    let (code, v) = call(c, "GET", "/api/v1/groups", READER_TOKEN, None);
    assert_eq!(code, 200, "{v}");
    v
}

/// A registration of h1 (domain `reg-dom`) with VMs r1 (head of
/// `reg-env`), r2 (in it) and v9 (claiming `reg-env`, but the set in
/// force names it).
fn registration() -> Value {
    let vm = |name: &str, mac: &str, env: &str, head: bool| {
        json!({"name": name, "mac": mac, "vcpus": 1, "memory_mb": 64, "max_memory_mb": 64,
               "spec": {"backend": "netns", "namespace": name, "iface": "eth0", "port": format!("p-{name}")},
               "environment": env, "environment_head": head})
    };
    json!({"host_id": "h1", "api_url": "http://127.0.0.1:1", "dom0_addr": "127.0.0.1",
           "cores": 4, "memory_mb": 4096, "nic": "eth0", "nic_bps": 1_000_000_000u64,
           "vf_count": 0, "interval_s": 10.0, "hostd_version": "test", "domain": "reg-dom",
           "vms": [vm("r1", "02:00:00:00:00:01", "reg-env", true),
                   vm("r2", "02:00:00:00:00:02", "reg-env", false),
                   vm("v9", "02:00:00:00:00:09", "reg-env", false)]})
}

#[test]
fn groups_are_read_replaced_stored_and_announced() {
    let dir = support::TempDir::new("sgr").expect("tempdir");
    let c = start(dir.path());

    // The configuration's set, nothing registered yet.
    let v = groups(&c);
    assert_eq!(v["domains"], json!({"cfg": ["h9"]}), "{v}");
    assert_eq!(
        v["environments"],
        json!([{"name": "cfg-env", "members": ["v9"], "head": null}]),
        "{v}"
    );
    assert_eq!(v["source"]["base"], "config", "{v}");
    assert_eq!(v["idc"], json!([]), "{v}");

    // A registration fills in what the set does not name; a contradiction
    // with the set is a warning, never a refusal.
    let h1 = host_token("h1");
    let reg = registration().to_string();
    let (code, body) = call(&c, "PUT", "/api/v1/hosts/h1", &h1, Some(&reg));
    assert!(code == 200 || code == 201, "{code} {body}");
    let v = groups(&c);
    assert_eq!(
        v["domains"],
        json!({"cfg": ["h9"], "reg-dom": ["h1"]}),
        "{v}"
    );
    assert_eq!(
        v["environments"],
        json!([{"name": "cfg-env", "members": ["v9"], "head": null},
               {"name": "reg-env", "members": ["r1", "r2"], "head": "r1"}]),
        "{v}"
    );
    assert_eq!(v["source"]["domains"]["reg-dom"], json!(["registration"]));
    assert_eq!(v["source"]["environments"]["cfg-env"], json!(["config"]));
    assert_eq!(v["warnings"][0]["subject"], "vm v9", "{v}");

    // An invalid registration is refused naming the field.
    let mut bad = registration();
    bad["vms"][1]["environment"] = json!("x".repeat(129));
    let (code, body) = call(&c, "PUT", "/api/v1/hosts/h1", &h1, Some(&bad.to_string()));
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("vms[r2].environment")),
        "{body}"
    );

    // A read-only operator may not change them.
    let set = json!({"domains": {"east": ["h1", "h2"]},
                     "environments": [{"name": "web", "members": ["r2", "w2"], "head": "w2"}]});
    let (code, body) = call(
        &c,
        "PUT",
        "/api/v1/groups",
        READER_TOKEN,
        Some(&set.to_string()),
    );
    assert_eq!(code, 403, "{body}");
    // A contradictory set is refused naming the field; nothing changes.
    let contra = json!({"domains": {"east": ["h1"], "west": ["h1"]}});
    let (code, body) = call(
        &c,
        "PUT",
        "/api/v1/groups",
        OPERATOR_TOKEN,
        Some(&contra.to_string()),
    );
    assert_eq!(code, 422, "{body}");
    let err = body["error"].as_str().unwrap_or_default();
    assert!(err.contains("groups.domains.west[0]"), "{err}");
    let head_out = json!({"environments": [{"name": "e", "members": ["a"], "head": "b"}]});
    let (code, body) = call(
        &c,
        "PUT",
        "/api/v1/groups",
        OPERATOR_TOKEN,
        Some(&head_out.to_string()),
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("groups.environments[0].head")),
        "{body}"
    );
    let (code, body) = call(
        &c,
        "PUT",
        "/api/v1/groups",
        OPERATOR_TOKEN,
        Some(r#"{"domain": {}}"#),
    );
    assert_eq!(code, 422, "unknown field: {body}");
    assert_eq!(groups(&c)["source"]["base"], "config");

    // A valid set replaces the configuration's wholesale; registrations
    // still fill in (h1's domain is now the set's; r1 keeps reg-env).
    let (code, v) = call(
        &c,
        "PUT",
        "/api/v1/groups",
        OPERATOR_TOKEN,
        Some(&set.to_string()),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["source"]["base"], "api", "{v}");
    assert_eq!(v["domains"], json!({"east": ["h1", "h2"]}), "{v}");
    assert_eq!(
        v["environments"],
        json!([{"name": "reg-env", "members": ["r1", "v9"], "head": "r1"},
               {"name": "web", "members": ["r2", "w2"], "head": "w2"}]),
        "{v}"
    );
    assert_eq!(v["source"]["domains"]["east"], json!(["api"]));
    let subjects: Vec<&str> = v["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(|x| x["subject"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(subjects, vec!["host h1", "vm r2"], "{v}");

    // The change was announced (the stream replays the ring after id 0).
    let sse = SseReader::connect(&c.api, READER_TOKEN, Some(0));
    let ev = wait_for("groups_changed", Duration::from_secs(10), || {
        sse.events()
            .into_iter()
            .find(|e| e.kind == "groups_changed")
    })
    .expect("a groups_changed event");
    let d = &ev.data["data"];
    assert_eq!(d["change"], "replaced", "{:?}", ev.data);
    assert_eq!(d["domains"], 1, "{:?}", ev.data);
    assert_eq!(d["environments"], 1, "{:?}", ev.data);
    assert_eq!(d["by"], "api", "{:?}", ev.data);
    sse.close();
    // Only the accepted change was announced.
    assert_eq!(
        sse.events()
            .iter()
            .filter(|e| e.kind == "groups_changed")
            .count(),
        1
    );

    // A restart keeps the set: the store wins over the file.
    let mut c = c;
    c.child.terminate(Duration::from_secs(10)).expect("stopped");
    let c = start(dir.path());
    let v = groups(&c);
    assert_eq!(v["source"]["base"], "api", "{v}");
    assert_eq!(v["domains"]["east"], json!(["h1", "h2"]), "{v}");
    assert!(v["domains"].get("cfg").is_none(), "{v}");

    // DELETE brings the configuration's back, and that too is kept.
    let (code, v) = call(&c, "DELETE", "/api/v1/groups", OPERATOR_TOKEN, None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["source"]["base"], "config", "{v}");
    assert_eq!(v["domains"]["cfg"], json!(["h9"]), "{v}");
    let mut c = c;
    c.child.terminate(Duration::from_secs(10)).expect("stopped");
    let c = start(dir.path());
    assert_eq!(groups(&c)["source"]["base"], "config");
}
