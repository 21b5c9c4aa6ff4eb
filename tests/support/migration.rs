//! Helpers of the migration tests (single controller and cluster): the
//! API calls, the reservations a bridge holds, and where a VM really runs
//! (asked of the host daemons, not of the controller).

use std::time::Duration;

use serde_json::Value;

use super::qemu::Hostd;
use super::{get_json, http, wait_for, OvsBridge};

/// `POST /api/v1/migrations` with the operator's token: status and body.
pub fn post(api: &str, body: Value) -> (u16, Value) {
    let (code, text) = http(
        api,
        "POST",
        "/api/v1/migrations",
        Some(super::creds::OPERATOR_TOKEN),
        Some(&body.to_string()),
    )
    .unwrap();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Migration meters and flows (cookie 0x53481…) on a bridge.
pub fn reservations_on(b: &OvsBridge) -> (usize, usize) {
    let meters = b
        .ofctl("dump-meters", &[])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim_start().starts_with("meter="))
        .count();
    let flows = b
        .ofctl("dump-flows", &["table=0"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("cookie=0x53481"))
        .count();
    (meters, flows)
}

/// The hosts whose daemon reports VM `vm` running (asked of each daemon,
/// not of the controller).
pub fn running_at(vm: &str, hostds: &[(&str, &Hostd)]) -> Vec<String> {
    let mut at = Vec::new();
    for (id, hd) in hostds {
        let (code, body) = hd
            .call("GET", "/api/v1/vms", super::creds::CONTROLLER_TOKEN, None)
            .unwrap_or_else(|e| panic!("hostd {id}: {e}"));
        assert_eq!(code, 200, "hostd {id}: {body}");
        let vms: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let runs = vms.as_array().into_iter().flatten().any(|v| {
            v["inventory"]["name"] == vm
                && matches!(v["state"].as_str(), Some("running" | "migrating_out"))
        });
        if runs {
            at.push(id.to_string());
        }
    }
    at
}

/// Waits until the recorded final state `fin` of a migration `from` →
/// `to` matches where the VM runs: `done` at `to` only, `failed` at `from`
/// only. Returns the host it runs on.
pub fn consistent(
    fin: &Value,
    vm: &str,
    from: &str,
    to: &str,
    hostds: &[(&str, &Hostd)],
) -> String {
    let want = match fin["state"].as_str() {
        Some("done") => to,
        Some("failed") => from,
        other => panic!("not a final state: {other:?}: {fin}"),
    };
    wait_for(
        "the VM where the record says",
        Duration::from_secs(15),
        || (running_at(vm, hostds) == [want.to_string()]).then_some(()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: recorded {} but the VM runs at {:?}: {fin}",
            fin["state"],
            running_at(vm, hostds)
        )
    });
    want.to_string()
}

/// Waits until migration `id` is in one of `states` (read at `api`).
pub fn wait_state(api: &str, id: &str, states: &[&str], timeout: Duration) -> Value {
    wait_for("migration state", timeout, || {
        let m = get_json(api, &format!("/api/v1/migrations/{id}")).ok()?;
        states.contains(&m["state"].as_str()?).then_some(m)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            get_json(api, &format!("/api/v1/migrations/{id}")).unwrap_or_default()
        )
    })
}
