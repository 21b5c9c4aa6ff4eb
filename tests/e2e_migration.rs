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
//!
//! `hostd_restart_during_a_controller_migration` (issue 12, point 4): a
//! real QEMU guest migrated through the controller with reserved bandwidth
//! while a host daemon is killed (SIGKILL) and restarted — the source's,
//! the destination's, and the source's again kept down until the
//! destination runs the VM. The controller's record ends where the VM
//! runs, in the QEMU its hostd reports; see the test's comment.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::migration::{consistent, post, reservations_on, running_at, wait_state};
use support::qemu::Hostd;
use support::world::{start_controller, write_controller_config, Hypervisor};
use support::{
    e2e_lock, ensure_ovs, free_port, get_json, http, is_root, sh, wait_for, NsHost, OvsBridge, Veth,
};

const VM1_MAC: &str = "02:6a:00:00:00:01";

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

/// Live (not zombie) QEMU processes of VM `vm` whose command line names a
/// path under `dir`.
fn live_qemus(vm: &str, dir: &std::path::Path) -> Vec<u32> {
    let dir = dir.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let args: Vec<String> = std::fs::read(e.path().join("cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.first().is_some_and(|a| a.contains("qemu"))
            || !args.windows(2).any(|w| w[0] == "-name" && w[1] == vm)
            || !args.iter().any(|a| a.contains(&dir))
        {
            continue;
        }
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim().starts_with('Z')))
            .unwrap_or(true);
        if !zombie {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// The QEMU pid hostd reports for `vm` (None: it does not run it).
fn reported_pid(hd: &Hostd, vm: &str) -> Option<u64> {
    let (code, body) = hd
        .call(
            "GET",
            &format!("/api/v1/vms/{vm}"),
            support::creds::CONTROLLER_TOKEN,
            None,
        )
        .ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    (code == 200).then(|| v["pid"].as_u64()).flatten()
}

/// One hostd of the QEMU test: its hypervisor, configuration and process.
struct QemuHost<'a> {
    id: &'static str,
    hv: &'a Hypervisor,
    dir: std::path::PathBuf,
    cfg: String,
    hd: Option<Hostd>,
}

impl QemuHost<'_> {
    fn hostd(&self) -> &Hostd {
        self.hd.as_ref().expect("hostd running")
    }

    /// SIGKILL; returns the log of the killed daemon.
    fn kill(&mut self) -> String {
        let mut old = self.hd.take().expect("hostd running");
        old.child.signal("KILL").unwrap();
        old.child.wait();
        old.log_text()
    }

    /// Starts hostd again on the same configuration and state directory.
    fn restart(&mut self, log: &str) {
        self.hd = Some(
            Hostd::start(
                Some(&self.hv.ns),
                &self.dir,
                &self.cfg,
                &self.hv.hostd_api(),
            )
            .unwrap_or_else(|e| panic!("hostd {} again: {e}\n{log}", self.id)),
        );
    }
}

/// One controller migration of the QEMU VM `from` → `to` during which the
/// hostd of `restart` (the source or the destination) is killed with
/// SIGKILL while QEMU migrates and started again. Checks that the
/// controller's record matches reality; returns where the VM runs.
#[allow(clippy::too_many_arguments)]
fn migrate_with_a_hostd_restart(
    api: &str,
    dir: &std::path::Path,
    bridges: &[&OvsBridge],
    hosts: &mut [QemuHost<'_>; 2],
    from: usize,
    restart: usize,
    until_taken_over: bool,
    vm: &str,
    deadline: f64,
) -> String {
    let to = 1 - from;
    let (from_id, to_id) = (hosts[from].id, hosts[to].id);
    let role = if restart == from {
        "source"
    } else {
        "destination"
    };
    let t0 = Instant::now();
    let src_pid = reported_pid(hosts[from].hostd(), vm).expect("the source runs the VM");
    assert_eq!(live_qemus(vm, dir), vec![src_pid as u32]);
    let (code, m) = post(
        api,
        json!({"vm": vm, "destination": to_id, "deadline_s": deadline}),
    );
    assert_eq!(code, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let run = wait_state(
        api,
        &id,
        &["running", "verifying", "done", "failed"],
        Duration::from_secs(20),
    );
    assert_eq!(run["state"], "running", "{run}");
    assert_eq!(run["reservations"].as_array().unwrap().len(), 6, "{run}");
    // QEMU's migration under way (the source's hostd says, from
    // query-migrate), and the controller still says running.
    let out = format!("/api/v1/commands/{id}-out");
    let progress = wait_for("QEMU migrating", Duration::from_secs(20), || {
        let (_, body) = hosts[from]
            .hostd()
            .call("GET", &out, support::creds::CONTROLLER_TOKEN, None)
            .ok()?;
        let c: Value = serde_json::from_str(&body).ok()?;
        (c["progress"]["phase"] == "active"
            && c["progress"]["transferred_bytes"].as_u64().unwrap_or(0) > (4 << 20))
            .then_some(c)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}\n--- source ---\n{}--- destination ---\n{}",
            hosts[from]
                .hostd()
                .call("GET", &out, support::creds::CONTROLLER_TOKEN, None),
            hosts[from].hostd().log_text(),
            hosts[to].hostd().log_text()
        )
    });
    let before = get_json(api, &format!("/api/v1/migrations/{id}")).unwrap();
    assert_eq!(before["state"], "running", "{before}");
    assert_eq!(
        live_qemus(vm, dir).len(),
        2,
        "source and incoming QEMU while migrating"
    );
    eprintln!(
        "killing the {role} hostd ({}) at {}",
        hosts[restart].id, progress["progress"]
    );
    let t_kill = Instant::now();
    let killed_log = hosts[restart].kill();
    // Down long enough to matter: the source's down, the controller has
    // met a refused status query (its log says); the destination's down,
    // QEMU has moved 8 MB more meanwhile (the source's hostd says).
    let ctl_log = || std::fs::read_to_string(dir.join("controller.log")).unwrap_or_default();
    if restart == from {
        wait_for(
            "the controller meets the dead hostd",
            Duration::from_secs(10),
            || {
                ctl_log()
                    .lines()
                    .any(|l| l.contains("the source hostd does not answer") && l.contains(&id))
                    .then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {}", ctl_log()));
        if until_taken_over {
            // The whole rest of the migration without the source's
            // hostd: QEMU completes, the destination runs the VM (or,
            // should QEMU fail, gives up).
            let inc = format!("/api/v1/commands/{id}-in");
            wait_for(
                "the destination runs the VM",
                Duration::from_secs(40),
                || {
                    let (_, body) = hosts[to]
                        .hostd()
                        .call("GET", &inc, support::creds::CONTROLLER_TOKEN, None)
                        .ok()?;
                    let c: Value = serde_json::from_str(&body).ok()?;
                    (c["state"] == "succeeded" || c["state"] == "failed").then_some(())
                },
            )
            .unwrap_or_else(|e| panic!("{e}: {}", hosts[to].hostd().log_text()));
        }
    } else {
        let sent = |c: &Value| c["progress"]["transferred_bytes"].as_u64().unwrap_or(0);
        let at_kill = sent(&progress);
        wait_for(
            "QEMU migrates on without the destination's hostd",
            Duration::from_secs(20),
            || {
                let (_, body) = hosts[from]
                    .hostd()
                    .call("GET", &out, support::creds::CONTROLLER_TOKEN, None)
                    .ok()?;
                let c: Value = serde_json::from_str(&body).ok()?;
                (sent(&c) > at_kill + (8 << 20)).then_some(())
            },
        )
        .unwrap();
    }
    assert_eq!(
        live_qemus(vm, dir).len(),
        2,
        "both QEMUs are there while the {role} hostd is down"
    );
    hosts[restart].restart(&killed_log);
    eprintln!("{role} hostd back after {:?}", t_kill.elapsed());

    // The controller's record ends, within a bound, where the VM is.
    let fin = wait_state(api, &id, &["done", "failed"], Duration::from_secs(60));
    let ctl_log = ctl_log();
    let facts = |what: &str| {
        format!(
            "{what}\nrecord: {fin}\nQEMUs: {:?}\n--- {role} hostd before the kill ---\n{killed_log}--- {from_id} now ---\n{}--- {to_id} now ---\n{}--- controller (tail) ---\n{}",
            live_qemus(vm, dir),
            hosts[from].hostd().log_text(),
            hosts[to].hostd().log_text(),
            ctl_log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    };
    eprintln!(
        "{vm} {from_id} -> {to_id}, {role} hostd restarted: the controller recorded {} ({:?} after the kill, {:?} in all): {}",
        fin["state"],
        t_kill.elapsed(),
        t0.elapsed(),
        fin["error"]
    );
    let hostds = [
        (hosts[0].id, hosts[0].hostd()),
        (hosts[1].id, hosts[1].hostd()),
    ];
    let at = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        consistent(&fin, vm, from_id, to_id, &hostds)
    }))
    .unwrap_or_else(|_| panic!("{}", facts("record and reality differ")));
    if restart == from {
        assert!(
            ctl_log
                .lines()
                .any(|l| l.contains("the source hostd answers again") && l.contains(&id)),
            "{}",
            facts("the controller did not hear the source again")
        );
    }
    // Exactly one QEMU runs the VM, the one its hostd reports.
    let qemus = live_qemus(vm, dir);
    assert_eq!(qemus.len(), 1, "{}", facts("not exactly one QEMU"));
    let serving = if at == to_id { to } else { from };
    let pid = reported_pid(hosts[serving].hostd(), vm);
    assert_eq!(
        pid,
        Some(u64::from(qemus[0])),
        "{}",
        facts("hostd reports another pid")
    );
    if fin["state"] == "done" {
        assert_ne!(qemus[0] as u64, src_pid, "{}", facts("done, source QEMU"));
        assert!(
            !std::path::Path::new(&format!("/proc/{src_pid}/cmdline")).exists()
                || !live_qemus(vm, dir).contains(&(src_pid as u32)),
            "{}",
            facts("the source QEMU outlived a done migration")
        );
    } else {
        assert_eq!(
            qemus[0] as u64,
            src_pid,
            "{}",
            facts("failed, but not in the source's QEMU")
        );
    }
    // No reservation left on any bridge, none in the record.
    wait_for("no reservation left", Duration::from_secs(20), || {
        bridges
            .iter()
            .all(|b| reservations_on(b) == (0, 0))
            .then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}",
            bridges
                .iter()
                .map(|b| reservations_on(b))
                .collect::<Vec<_>>()
        )
    });
    assert_eq!(fin["reservations"], json!([]), "{fin}");
    // The controller's host registry follows (registrations after the
    // restart): the VM is where it runs.
    wait_for(
        "the controller's VM registry",
        Duration::from_secs(20),
        || (get_json(api, &format!("/api/v1/vms/{vm}")).ok()?["host"] == at.as_str()).then_some(()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            get_json(api, &format!("/api/v1/vms/{vm}")).unwrap_or_default(),
            facts("the controller places the VM elsewhere")
        )
    });
    at
}

/// Issue 12, point 4: hostd restarted while one migrates, with the same
/// QEMU pid still serving and the controller's record matching reality.
/// A real QEMU guest (TCG, dirtying memory, its NIC a tap bridged onto the
/// OVS bridge of its hypervisor) migrates through the controller's API with
/// reserved bandwidth (meters on every hop of smq-b1 – smq-agg – smq-b2),
/// and the migration stream crosses that path. Once the controller says
/// `running` and QEMU's `query-migrate` (via the source hostd) is
/// `active`, the source's hostd is killed with SIGKILL and started again on
/// the same configuration and state directory; then the way back with the
/// destination's hostd killed and restarted. Each time the controller's
/// migration ends `done` or `failed` within a bound, and that is where the
/// VM runs (`done`: the destination only, in the QEMU whose pid its hostd
/// reports, the source's QEMU gone; `failed`: the source only, in the same
/// QEMU as before), exactly one QEMU runs the VM, no reservation is left
/// and the controller's VM registry places the VM where it runs.
#[test]
fn hostd_restart_during_a_controller_migration() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    let guest = support::qemu::require_qemu_and_guest().unwrap_or_else(|e| panic!("{e}"));
    ensure_ovs().unwrap();
    let t0 = Instant::now();
    let dir = std::env::temp_dir().join(format!("smq-{}", std::process::id()));
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
        &["q1", "q2"],
        // The guest's dirty rate is not sampled (below): plan with room.
        "[execute]\nreservation = \"meter\"\ndeadline_margin = 0.4\n",
    )
    .unwrap();
    let _ctl = start_controller(&dir, &cfg, "controller.log", &api).unwrap();

    // Data plane: b1 - agg - b2; each hypervisor's VM network is a Linux
    // bridge (in its namespace) joining the VM's tap to port 20 of its OVS
    // bridge.
    let b1 = OvsBridge::new("smq-b1", 0x6201).unwrap();
    let agg = OvsBridge::new("smq-agg", 0x6210).unwrap();
    let b2 = OvsBridge::new("smq-b2", 0x6202).unwrap();
    let l1 = Veth::new("smq-l1a", "smq-l1b").unwrap();
    let l2 = Veth::new("smq-l2a", "smq-l2b").unwrap();
    agg.add_port(l1.root_end(), 1).unwrap();
    b1.add_port("smq-l1b", 10).unwrap();
    agg.add_port(l2.root_end(), 2).unwrap();
    b2.add_port("smq-l2b", 10).unwrap();
    let h1 = Hypervisor::new("smq-h1", Some((&b1, 2)), "10.222.0.1/16", 223, 1).unwrap();
    let h2 = Hypervisor::new("smq-h2", Some((&b2, 2)), "10.222.0.2/16", 223, 2).unwrap();
    let mut vm_links = Vec::new();
    for (hv, b) in [(&h1, &b1), (&h2, &b2)] {
        let name = hv.ns.name();
        let (p, i) = (format!("{name}-vp"), format!("{name}-vi"));
        vm_links.push(Veth::new(&p, &i).unwrap());
        b.add_port(&p, 20).unwrap();
        support::qemu::move_into_ns(&i, &hv.ns, "vmup", None, None, true).unwrap();
        for args in [
            &["link", "add", "vmbr", "type", "bridge"][..],
            &["link", "set", "vmbr", "up"],
            &["link", "set", "vmup", "master", "vmbr"],
            &["tuntap", "add", "dev", "smq-tap", "mode", "tap"],
            &["link", "set", "smq-tap", "master", "vmbr"],
            &["link", "set", "smq-tap", "up"],
        ] {
            hv.ns.exec("ip", args).unwrap();
        }
    }
    // A QEMU source's hostd asks the destination's hostd (its `api_url`,
    // on the management network) whether the incoming QEMU listens: a
    // management link between the two hypervisors.
    let mgmt_x = Veth::new("smq-x1", "smq-x2").unwrap();
    for (hv, end, cidr, other_mgmt, via) in [
        (&h1, "smq-x1", "10.224.0.1/30", &h2.mgmt_ip, "10.224.0.2"),
        (&h2, "smq-x2", "10.224.0.2/30", &h1.mgmt_ip, "10.224.0.1"),
    ] {
        support::qemu::move_into_ns(end, &hv.ns, "mgmtx", Some(cidr), None, true).unwrap();
        hv.ns
            .exec(
                "ip",
                &["route", "add", &format!("{other_mgmt}/32"), "via", via],
            )
            .unwrap();
    }
    let peer = NsHost::new(
        "smq-peer",
        &b2,
        "smq-pp",
        30,
        "02:6b:00:00:00:02",
        "10.222.1.2",
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

    // The guest: 128 MB, dirtying 1 MB/s, at 10.222.1.1 on its tap. No
    // dirty-rate sampling (the boot dirties tens of MB/s, which would
    // make a 30 s deadline look infeasible): the controller plans with a
    // 40 % margin instead, about 7 MB/s, so the migration takes ~20 s.
    let vm = "smq-vm";
    let template = support::qemu::template_toml(
        "smq-guest",
        &guest.template(
            1,
            Some("10.222.1.1/16"),
            &[
                "-netdev",
                "tap,id=n0,ifname={tap},script=no,downscript=no",
                "-device",
                "virtio-net-pci,netdev=n0,mac={mac}",
            ],
        ),
    );
    let testbed = "cores = 2\nhost_metrics = \"vms\"\ndirty_rate_period_s = 0\n";
    let vm_toml = format!(
        "[[vm]]\nname = \"{vm}\"\nmac = \"52:54:00:6b:00:01\"\nip = \"10.222.1.1\"\nmemory_mb = 128\nbackend = \"qemu\"\ntemplate = \"smq-guest\"\ntap = \"smq-tap\"\n"
    );
    let cfg1 = h1.hostd_config(
        "q1",
        Some("smq-b1"),
        api_port,
        &dir,
        &format!("{testbed}{template}{vm_toml}"),
    );
    let cfg2 = h2.hostd_config(
        "q2",
        Some("smq-b2"),
        api_port,
        &dir,
        &format!("{testbed}{template}"),
    );
    let mut hosts = [
        QemuHost {
            id: "q1",
            hv: &h1,
            dir: dir.join("q1"),
            hd: None,
            cfg: cfg1,
        },
        QemuHost {
            id: "q2",
            hv: &h2,
            dir: dir.join("q2"),
            hd: None,
            cfg: cfg2,
        },
    ];
    for h in hosts.iter_mut() {
        h.hd = Some(
            Hostd::start(Some(&h.hv.ns), &h.dir, &h.cfg, &h.hv.hostd_api())
                .unwrap_or_else(|e| panic!("hostd {}: {e}", h.id)),
        );
    }
    let console = dir.join("q1").join(format!("{vm}.console.log"));
    wait_for("guest uptime counter", Duration::from_secs(40), || {
        support::qemu::last_uptime(&console).filter(|u| *u >= 2)
    })
    .unwrap_or_else(|e| panic!("{e}: guest did not boot: {}", hosts[0].hostd().log_text()));
    assert!(
        peer.ping("10.222.1.1", 10),
        "the guest does not answer across the fabric"
    );
    wait_for("hosts and the VM reported", Duration::from_secs(20), || {
        let v = get_json(&api, "/api/v1/hosts").ok()?;
        let up = v
            .as_array()?
            .iter()
            .filter(|h| h["metrics"].is_object())
            .count();
        let m = get_json(&api, &format!("/api/v1/vms/{vm}")).ok()?;
        (up == 2 && m["host"] == "q1" && m["metrics"].is_object()).then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            get_json(&api, &format!("/api/v1/vms/{vm}")).unwrap_or_default()
        )
    });
    eprintln!("world ready after {:?}", t0.elapsed());

    // The guest answers pings from the far side all along, so that the
    // controller learns its MAC wherever it runs.
    let _pinger = peer
        .ns
        .spawn("ping", &["-i", "0.5", "-W", "1", "10.222.1.1"])
        .unwrap();
    let bridges = [&b1, &agg, &b2];
    // 1. The source's hostd restarts mid-migration.
    let at = migrate_with_a_hostd_restart(&api, &dir, &bridges, &mut hosts, 0, 0, false, vm, 30.0);
    // 2. The destination's hostd restarts mid-migration (the way back if
    //    the VM moved, else the same way again).
    let from = usize::from(at == "q2");
    wait_for(
        "the VM registered where it runs",
        Duration::from_secs(20),
        || {
            (get_json(&api, &format!("/api/v1/vms/{vm}")).ok()?["host"] == hosts[from].id)
                .then_some(())
        },
    )
    .unwrap();
    let at = migrate_with_a_hostd_restart(
        &api,
        &dir,
        &bridges,
        &mut hosts,
        from,
        1 - from,
        false,
        vm,
        30.0,
    );
    // 3. The source's hostd is down from mid-migration until the
    //    destination runs the VM: the restarted source finds QEMU's
    //    migration completed.
    let from = usize::from(at == "q2");
    wait_for(
        "the VM registered where it runs",
        Duration::from_secs(20),
        || {
            (get_json(&api, &format!("/api/v1/vms/{vm}")).ok()?["host"] == hosts[from].id)
                .then_some(())
        },
    )
    .unwrap();
    migrate_with_a_hostd_restart(&api, &dir, &bridges, &mut hosts, from, from, true, vm, 30.0);
    eprintln!("test took {:?}", t0.elapsed());
    drop(hosts);
    drop((peer, vm_links, mgmt_x, h1, h2, l1, l2));
    let _ = std::fs::remove_dir_all(&dir);
}
