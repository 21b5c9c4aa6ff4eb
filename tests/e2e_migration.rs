//! End to end: the migration orchestrator with real Open vSwitch, real
//! `shoal-hostd`s (netns backend) and the real controller binary.
//!
//! ```text
//!            smg-agg (0x6010)
//!          1/            \2
//!        10/              \10
//!   smg-b1 (0x6001)      smg-b2 (0x6002)        h3: a host without room
//!    |2 dom0 h1  |20 vm1  |2 dom0 h2  |20 vm2
//! ```
//!
//! 1. `POST /api/v1/migrations` with an unknown VM (404), an infeasible
//!    deadline (422) and a destination without room (409) changes nothing.
//! 2. vm1 migrates h1 → h2 with a deadline: while it runs, a meter and a
//!    flow with a migration cookie are present on every hop of its path
//!    (`ovs-ofctl dump-meters` / `dump-flows`); afterwards they are gone,
//!    the deadline was met, the VM answers at its destination and
//!    `/api/v1/endpoints` shows it there.
//! 3. During the way back the controller is killed with SIGKILL and
//!    restarted on the same database: no reservation or migration flow is
//!    left behind and the migration's final state is recorded — and it is
//!    where the VM actually runs (asked of both host daemons: `done` =
//!    running at the destination only, `failed` = at the source only).
//! 4. A crash between "reserving" and "commanding hosts": a controller
//!    configured with the fault-injection hold
//!    (`execute.fault_hold_after_reserve_s`) installs and records the
//!    reservations of a migration, then waits before commanding the hosts;
//!    it is killed with SIGKILL exactly there (the API shows the migration
//!    `reserving` with its 6 reservations, the log the hold). Restarted
//!    without the hold: no host was commanded in between, nothing of the
//!    first attempt is left on the switches, the migration is queued
//!    again and ends in a state that matches where the VM runs, and the VM
//!    runs on exactly one host.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::qemu::Hostd;
use support::world::{start_controller, write_controller_config, Hypervisor};
use support::{
    e2e_lock, ensure_ovs, free_port, get_json, http, is_root, sh, wait_for, NsHost, OvsBridge, Veth,
};

const VM1_MAC: &str = "02:6a:00:00:00:01";

fn post(api: &str, body: Value) -> (u16, Value) {
    let (code, text) = http(
        api,
        "POST",
        "/api/v1/migrations",
        Some(support::creds::OPERATOR_TOKEN),
        Some(&body.to_string()),
    )
    .unwrap();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Migration meters and flows (cookie 0x53481…) on a bridge.
fn reservations_on(b: &OvsBridge) -> (usize, usize) {
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
fn running_at(vm: &str, hostds: &[(&str, &Hostd)]) -> Vec<String> {
    let mut at = Vec::new();
    for (id, hd) in hostds {
        let (code, body) = hd
            .call("GET", "/api/v1/vms", support::creds::CONTROLLER_TOKEN, None)
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
fn consistent(fin: &Value, vm: &str, from: &str, to: &str, hostds: &[(&str, &Hostd)]) -> String {
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

fn wait_state(api: &str, id: &str, states: &[&str], timeout: Duration) -> Value {
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

#[test]
fn reserved_migration_and_controller_crash() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    ensure_ovs().unwrap();
    let dir = std::env::temp_dir().join(format!("smg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let cfg = write_controller_config(
        &dir,
        of_port,
        api_port,
        &dir.join("shoal.db").display().to_string(),
        &["h1", "h2", "h3"],
        "[execute]\nreservation = \"meter\"\n",
    )
    .unwrap();
    let mut ctl = start_controller(&dir, &cfg, "controller.log", &api).unwrap();

    // Data plane: b1 - agg - b2.
    let b1 = OvsBridge::new("smg-b1", 0x6001).unwrap();
    let agg = OvsBridge::new("smg-agg", 0x6010).unwrap();
    let b2 = OvsBridge::new("smg-b2", 0x6002).unwrap();
    let l1 = Veth::new("smg-l1a", "smg-l1b").unwrap();
    let l2 = Veth::new("smg-l2a", "smg-l2b").unwrap();
    agg.add_port(l1.root_end(), 1).unwrap();
    b1.add_port("smg-l1b", 10).unwrap();
    agg.add_port(l2.root_end(), 2).unwrap();
    b2.add_port("smg-l2b", 10).unwrap();
    let h1 = Hypervisor::new("smg-h1", Some((&b1, 2)), "10.218.0.1/16", 219, 1).unwrap();
    let h2 = Hypervisor::new("smg-h2", Some((&b2, 2)), "10.218.0.2/16", 219, 2).unwrap();
    let h3 = Hypervisor::new("smg-h3", None, "10.219.3.2/30", 219, 3).unwrap();
    let vm1 = NsHost::new("smg-vm1", &b1, "smg-v1", 20, VM1_MAC, "10.218.1.1", 16).unwrap();
    let vm2 = NsHost::new(
        "smg-vm2",
        &b2,
        "smg-v2",
        20,
        "02:6a:00:00:00:02",
        "10.218.1.2",
        16,
    )
    .unwrap();
    for b in [&b1, &agg, &b2] {
        b.set_controller(&format!("tcp:127.0.0.1:{of_port}"))
            .unwrap();
    }
    wait_for("the 2 links", Duration::from_secs(20), || {
        (get_json(&api, "/api/v1/links").ok()?.as_array()?.len() == 4).then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(vm2.ping("10.218.1.1", 3), "no connectivity");

    let scenario = dir.join("vm1.json");
    std::fs::write(
        &scenario,
        r#"{"interpolation": "hold", "points": [{"t": 0, "cpu": 0.2, "mem_mb": 20, "dirty_mbps": 1}]}"#,
    )
    .unwrap();
    // Host CPU/memory from the VMs (all hypervisors share this machine).
    let testbed = "cores = 2\nhost_metrics = \"vms\"\n";
    let vm_toml = format!(
        "[[vm]]\nname = \"smg-vm1\"\nmac = \"{VM1_MAC}\"\nip = \"10.218.1.1\"\nmemory_mb = 24\nbackend = \"netns\"\nnamespace = \"smg-vm1\"\niface = \"eth0\"\nport = \"smg-v1\"\nscenario = \"vm1.json\"\n"
    );
    let hd1 = Hostd::start(
        Some(&h1.ns),
        &dir.join("h1"),
        &h1.hostd_config(
            "h1",
            Some("smg-b1"),
            api_port,
            &dir,
            &format!("{testbed}{vm_toml}"),
        ),
        &h1.hostd_api(),
    )
    .expect("hostd h1");
    let hd2 = Hostd::start(
        Some(&h2.ns),
        &dir.join("h2"),
        &h2.hostd_config("h2", Some("smg-b2"), api_port, &dir, testbed),
        &h2.hostd_api(),
    )
    .expect("hostd h2");
    let _hd3 = Hostd::start(
        Some(&h3.ns),
        &dir.join("h3"),
        &h3.hostd_config("h3", None, api_port, &dir, "memory_mb = 16\n"),
        &h3.hostd_api(),
    )
    .expect("hostd h3");
    wait_for("3 hosts reporting", Duration::from_secs(20), || {
        let v = get_json(&api, "/api/v1/hosts").ok()?;
        let a = v.as_array()?;
        (a.len() == 3 && a.iter().all(|h| h["metrics"].is_object())).then_some(())
    })
    .unwrap();

    // 1. Requests that must be refused, changing nothing.
    let (code, body) = post(
        &api,
        json!({"vm": "nope", "destination": "h2", "deadline_s": 10}),
    );
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nope"));
    let (code, body) = post(
        &api,
        json!({"vm": "smg-vm1", "destination": "h2", "deadline_s": 0.05}),
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("deadline"),
        "{body}"
    );
    let (code, body) = post(
        &api,
        json!({"vm": "smg-vm1", "destination": "h3", "deadline_s": 10}),
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no room"),
        "{body}"
    );
    let (code, _) = post(
        &api,
        json!({"vm": "smg-vm1", "destination": "h2", "bogus": 1}),
    );
    assert!(code == 422 || code == 400);
    assert_eq!(get_json(&api, "/api/v1/migrations").unwrap(), json!([]));
    for b in [&b1, &agg, &b2] {
        assert_eq!(reservations_on(b), (0, 0), "nothing installed");
    }

    // 2. A reserved migration h1 -> h2.
    let deadline = 12.0;
    let (code, m) = post(
        &api,
        json!({"vm": "smg-vm1", "destination": "h2", "deadline_s": deadline}),
    );
    assert_eq!(code, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    assert_eq!(
        m["path"],
        json!(["0000000000006001", "0000000000006010", "0000000000006002"])
    );
    let predicted = m["predicted"]["time_s"].as_f64().unwrap();
    assert!(predicted <= deadline, "{m}");
    let run = wait_state(
        &api,
        &id,
        &["running", "verifying", "done", "failed"],
        Duration::from_secs(15),
    );
    assert_eq!(run["state"], "running", "{run}");
    assert_eq!(
        run["reservations"].as_array().unwrap().len(),
        6,
        "a meter and a flow per hop: {run}"
    );
    for b in [&b1, &agg, &b2] {
        let (meters, flows) = reservations_on(b);
        assert!(
            meters >= 1 && flows == 1,
            "{}: meters {meters}, flows {flows}\n{}",
            b.name(),
            b.ofctl("dump-meters", &[]).unwrap_or_default()
        );
    }
    let done = wait_state(&api, &id, &["done", "failed"], Duration::from_secs(60));
    assert_eq!(done["state"], "done", "{done}");
    let took = (done["result"]["total_time_ms"].as_f64().unwrap()) / 1000.0;
    eprintln!(
        "migration took {took:.2} s (deadline {deadline} s, predicted {predicted:.2} s), L = {:.2} MB/s, moved {} bytes",
        done["bandwidth_bytes_per_s"].as_f64().unwrap() / 1048576.0,
        done["result"]["transferred_bytes"]
    );
    assert!(took <= deadline, "deadline missed: {took} s");
    assert!(
        done["cost_before"].is_number() && done["cost_after"].is_number(),
        "{done}"
    );
    for b in [&b1, &agg, &b2] {
        assert_eq!(
            reservations_on(b),
            (0, 0),
            "{} keeps reservations",
            b.name()
        );
    }
    let (code, _) = http(
        &api,
        "DELETE",
        &format!("/api/v1/migrations/{id}"),
        Some(support::creds::OPERATOR_TOKEN),
        None,
    )
    .unwrap();
    assert_eq!(code, 409, "a finished migration cannot be cancelled");
    let ofport: u64 = sh("ovs-vsctl", &["get", "interface", "smg-v1", "ofport"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("vm1 at b2", Duration::from_secs(10), || {
        let eps = get_json(&api, "/api/v1/endpoints").ok()?;
        eps.as_array()?
            .iter()
            .any(|e| {
                e["mac"] == VM1_MAC
                    && e["dpid"] == "0000000000006002"
                    && e["port"].as_u64() == Some(ofport)
            })
            .then_some(())
    })
    .unwrap();
    assert!(
        vm2.ping("10.218.1.1", 3),
        "vm1 does not answer at its destination"
    );
    wait_for("vm1 registered on h2", Duration::from_secs(10), || {
        (get_json(&api, "/api/v1/vms/smg-vm1").ok()?["host"] == "h2").then_some(())
    })
    .unwrap();

    // 3. The way back; the controller dies mid-migration.
    let (code, m) = post(
        &api,
        json!({"vm": "smg-vm1", "destination": "h1", "deadline_s": deadline}),
    );
    assert_eq!(code, 202, "{m}");
    let id2 = m["id"].as_str().unwrap().to_string();
    let run = wait_state(
        &api,
        &id2,
        &["running", "verifying", "done", "failed"],
        Duration::from_secs(15),
    );
    assert_eq!(run["state"], "running", "{run}");
    assert!(
        reservations_on(&agg).1 == 1,
        "reservation in place before the crash"
    );
    let t_kill = Instant::now();
    let _ = Command::new("kill")
        .args(["-9", &ctl.id().to_string()])
        .status();
    let _ = ctl.wait();
    std::thread::sleep(Duration::from_millis(500));
    let mut ctl2 = start_controller(&dir, &cfg, "controller2.log", &api).unwrap();
    let fin = wait_state(&api, &id2, &["done", "failed"], Duration::from_secs(60));
    eprintln!(
        "after the crash the migration ended {} ({:?} after the kill): {}",
        fin["state"],
        t_kill.elapsed(),
        fin["error"]
    );
    wait_for("no reservation left", Duration::from_secs(30), || {
        [&b1, &agg, &b2]
            .iter()
            .all(|b| reservations_on(b) == (0, 0))
            .then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}",
            [&b1, &agg, &b2]
                .iter()
                .map(|b| reservations_on(b))
                .collect::<Vec<_>>()
        )
    });
    let log = std::fs::read_to_string(dir.join("controller2.log")).unwrap_or_default();
    assert!(log.contains("migration restored after a restart"), "{log}");
    let hostds = [("h1", &hd1), ("h2", &hd2)];
    let now_at = consistent(&fin, "smg-vm1", "h2", "h1", &hostds);

    // 4. A crash between "reserving" and "commanding hosts".
    let (from, to) = if now_at == "h1" {
        ("h1", "h2")
    } else {
        ("h2", "h1")
    };
    wait_for(
        "the host registry up to date",
        Duration::from_secs(20),
        || (get_json(&api, "/api/v1/vms/smg-vm1").ok()?["host"] == from).then_some(()),
    )
    .unwrap();
    let _ = Command::new("kill")
        .args(["-9", &ctl2.id().to_string()])
        .status();
    let _ = ctl2.wait();
    let cfg_hold = write_controller_config(
        &dir,
        of_port,
        api_port,
        &dir.join("shoal.db").display().to_string(),
        &["h1", "h2", "h3"],
        "[execute]\nreservation = \"meter\"\nfault_hold_after_reserve_s = 600\n",
    )
    .unwrap();
    let mut ctl3 = start_controller(&dir, &cfg_hold, "controller3.log", &api).unwrap();
    wait_for("links and hosts back", Duration::from_secs(30), || {
        let links = get_json(&api, "/api/v1/links").ok()?.as_array()?.len();
        let hosts = get_json(&api, "/api/v1/hosts").ok()?;
        let up = hosts
            .as_array()?
            .iter()
            .filter(|h| h["metrics"].is_object())
            .count();
        (links == 4 && up == 3).then_some(())
    })
    .unwrap();
    let (code, m) = post(
        &api,
        json!({"vm": "smg-vm1", "destination": to, "deadline_s": deadline}),
    );
    assert_eq!(code, 202, "{m}");
    let id3 = m["id"].as_str().unwrap().to_string();
    // Exactly in the window: reservations installed and recorded, hosts
    // not commanded (the hold is 600 s; the kill comes at once).
    let held = wait_for(
        "reserving with its reservations",
        Duration::from_secs(20),
        || {
            let m = get_json(&api, &format!("/api/v1/migrations/{id3}")).ok()?;
            (m["state"] == "reserving" && m["reservations"].as_array()?.len() == 6).then_some(m)
        },
    )
    .unwrap();
    let log3 = std::fs::read_to_string(dir.join("controller3.log")).unwrap_or_default();
    assert!(
        log3.contains("fault injection: holding after reserve"),
        "{log3}"
    );
    assert_eq!(
        reservations_on(&agg).1,
        1,
        "reservation in place before the crash: {held}"
    );
    let _ = Command::new("kill")
        .args(["-9", &ctl3.id().to_string()])
        .status();
    let _ = ctl3.wait();
    // No host heard of the migration.
    for (id, hd) in [("h1", &hd1), ("h2", &hd2)] {
        for suffix in ["in", "out"] {
            let (code, _) = hd
                .call(
                    "GET",
                    &format!("/api/v1/commands/{id3}-{suffix}"),
                    support::creds::CONTROLLER_TOKEN,
                    None,
                )
                .unwrap();
            assert_eq!(code, 404, "{id} knows {id3}-{suffix} before the restart");
        }
    }
    // Restart without the hold, on the same database.
    let cfg = write_controller_config(
        &dir,
        of_port,
        api_port,
        &dir.join("shoal.db").display().to_string(),
        &["h1", "h2", "h3"],
        "[execute]\nreservation = \"meter\"\n",
    )
    .unwrap();
    let _ctl4 = start_controller(&dir, &cfg, "controller4.log", &api).unwrap();
    let fin = wait_state(&api, &id3, &["done", "failed"], Duration::from_secs(90));
    eprintln!(
        "after the crash between reserving and commanding the hosts the migration ended {}: {}",
        fin["state"], fin["error"]
    );
    let log4 = std::fs::read_to_string(dir.join("controller4.log")).unwrap_or_default();
    assert!(
        log4.contains("migration restored after a restart"),
        "{log4}"
    );
    wait_for("no reservation left", Duration::from_secs(30), || {
        [&b1, &agg, &b2]
            .iter()
            .all(|b| reservations_on(b) == (0, 0))
            .then_some(())
    })
    .unwrap();
    // Recorded state = reality, and the VM runs exactly once.
    let at = consistent(&fin, "smg-vm1", from, to, &hostds);
    assert_eq!(running_at("smg-vm1", &hostds), vec![at]);
    drop((hd1, hd2, vm1, h1, h2, h3));
    let _ = std::fs::remove_dir_all(&dir);
}
