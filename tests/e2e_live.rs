//! End to end: the live MAPE-K loop resolves a CPU hotspot, and the
//! migration it makes is the one `shoal-controller simulate` decides for
//! the same scenario.
//!
//! ```text
//!                    sli-tor (0x6110)
//!          1/             |2             \3
//!   sli-b1 (0x6101)  sli-b2 (0x6102)  sli-b3 (0x6103)
//!   h1: vm1 (1.0 core)   h2: vm3 (0.5)   h3: empty
//!       vm2 (0.8)
//! ```
//!
//! Hypervisors have 2 cores (hostd `cores = 2`, host CPU = Σ VM CPU), so h1
//! runs at 90 %: a hotspot (threshold 85 %). Sandpiper with k = 2 of n = 3
//! moves the VM with the highest volume-to-size ratio (vm1) to the least
//! loaded host with room (h3). A dry run first only records the decision.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::qemu::Hostd;
use support::world::{start_controller, write_controller_config, Hypervisor};
use support::{
    cargo_bin, e2e_lock, ensure_ovs, free_port, get_json, http, is_root, wait_for, NsHost,
    OvsBridge, Veth,
};

/// A netns VM whose scenario is `{name}.json` in the hosts' scenario_dir.
fn vm_toml(name: &str, mac: &str, ip: &str) -> String {
    format!(
        "[[vm]]\nname = \"{name}\"\nmac = \"{mac}\"\nip = \"{ip}\"\nmemory_mb = 64\nbackend = \"netns\"\nnamespace = \"{name}\"\niface = \"eth0\"\nport = \"{name}-p\"\nscenario = \"{name}.json\"\n"
    )
}

fn put_policy(api: &str, body: Value) -> (u16, String) {
    http(
        api,
        "PUT",
        "/api/v1/policy",
        Some(support::creds::OPERATOR_TOKEN),
        Some(&body.to_string()),
    )
    .unwrap()
}

#[test]
fn live_loop_resolves_a_hotspot_like_the_simulator() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    ensure_ovs().unwrap();
    let dir = std::env::temp_dir().join(format!("sli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let cfg = write_controller_config(
        &dir,
        of_port,
        api_port,
        ":memory:",
        &["h1", "h2", "h3"],
        "[execute]\ndefault_deadline_s = 15\n",
    )
    .unwrap();
    let _ctl = start_controller(&dir, &cfg, "controller.log", &api).unwrap();

    let tor = OvsBridge::new("sli-tor", 0x6110).unwrap();
    let bridges: Vec<OvsBridge> = (1..=3)
        .map(|i| OvsBridge::new(&format!("sli-b{i}"), 0x6100 + i).unwrap())
        .collect();
    let mut cables = Vec::new();
    for (i, b) in bridges.iter().enumerate() {
        let n = i + 1;
        let v = Veth::new(&format!("sli-u{n}a"), &format!("sli-u{n}b")).unwrap();
        tor.add_port(v.root_end(), n as u16).unwrap();
        b.add_port(&format!("sli-u{n}b"), 10).unwrap();
        cables.push(v);
    }
    let hvs: Vec<Hypervisor> = bridges
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let n = (i + 1) as u8;
            Hypervisor::new(
                &format!("sli-h{n}"),
                Some((b, 2)),
                &format!("10.220.0.{n}/16"),
                221,
                n,
            )
            .unwrap()
        })
        .collect();
    let vm1 = NsHost::new(
        "sli-vm1",
        &bridges[0],
        "sli-vm1-p",
        20,
        "02:6b:00:00:00:01",
        "10.220.1.1",
        16,
    )
    .unwrap();
    let vm2 = NsHost::new(
        "sli-vm2",
        &bridges[0],
        "sli-vm2-p",
        21,
        "02:6b:00:00:00:02",
        "10.220.1.2",
        16,
    )
    .unwrap();
    let vm3 = NsHost::new(
        "sli-vm3",
        &bridges[1],
        "sli-vm3-p",
        20,
        "02:6b:00:00:00:03",
        "10.220.1.3",
        16,
    )
    .unwrap();
    for b in bridges.iter().chain([&tor]) {
        b.set_controller(&format!("tcp:127.0.0.1:{of_port}"))
            .unwrap();
    }
    wait_for("3 links", Duration::from_secs(20), || {
        (get_json(&api, "/api/v1/links").ok()?.as_array()?.len() == 6).then_some(())
    })
    .unwrap();

    let series = |cpu: f64| {
        format!(
            r#"{{"interpolation": "hold", "points": [{{"t": 0, "cpu": {cpu}, "mem_mb": 32, "dirty_mbps": 1}}]}}"#
        )
    };
    for (n, cpu) in [("sli-vm1", 1.0), ("sli-vm2", 0.8), ("sli-vm3", 0.5)] {
        std::fs::write(dir.join(format!("{n}.json")), series(cpu)).unwrap();
    }
    let testbed = "cores = 2\nmemory_mb = 1024\nhost_metrics = \"vms\"\n";
    let cfg1 = format!(
        "{testbed}{}{}",
        vm_toml("sli-vm1", "02:6b:00:00:00:01", "10.220.1.1"),
        vm_toml("sli-vm2", "02:6b:00:00:00:02", "10.220.1.2")
    );
    let cfg2 = format!(
        "{testbed}{}",
        vm_toml("sli-vm3", "02:6b:00:00:00:03", "10.220.1.3")
    );
    let mut hostds = Vec::new();
    for (i, extra) in [cfg1, cfg2, testbed.to_string()].iter().enumerate() {
        let id = format!("h{}", i + 1);
        let h = &hvs[i];
        let c = h.hostd_config(&id, Some(&format!("sli-b{}", i + 1)), api_port, &dir, extra);
        hostds.push(Hostd::start(Some(&h.ns), &dir.join(&id), &c, &h.hostd_api()).expect("hostd"));
    }
    wait_for("3 hosts reporting", Duration::from_secs(20), || {
        let v = get_json(&api, "/api/v1/hosts").ok()?;
        let a = v.as_array()?;
        (a.len() == 3
            && a.iter()
                .all(|h| h["history_len"].as_u64().unwrap_or(0) >= 2))
        .then_some(())
    })
    .unwrap();
    let h1 = get_json(&api, "/api/v1/hosts/h1").unwrap();
    assert!(
        (h1["metrics"]["cpu_util"].as_f64().unwrap() - 0.9).abs() < 1e-6,
        "{h1}"
    );

    // Bad policies are refused with the field named; nothing changes.
    let (code, body) = put_policy(&api, json!({"name": "nope"}));
    assert_eq!(code, 422, "{body}");
    let (code, body) = put_policy(
        &api,
        json!({"name": "sandpiper", "hotspot": {"k": 1, "n": 3}}),
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("k"), "{body}");
    assert_eq!(get_json(&api, "/api/v1/policy").unwrap()["name"], "none");

    // Dry run: the decision is recorded, nothing is executed.
    let (code, body) = put_policy(
        &api,
        json!({"name": "sandpiper", "dry_run": true, "hotspot": {"k": 2, "n": 3}}),
    );
    assert_eq!(code, 200, "{body}");
    let dry = wait_for("a dry-run decision", Duration::from_secs(20), || {
        let d = get_json(&api, "/api/v1/decisions").ok()?;
        d.as_array()?
            .iter()
            .find(|x| x["action"] == "migrate")
            .cloned()
    })
    .unwrap();
    assert_eq!(dry["outcome"], "dry_run", "{dry}");
    assert_eq!(get_json(&api, "/api/v1/migrations").unwrap(), json!([]));
    let hot = get_json(&api, "/api/v1/hotspots").unwrap();
    assert!(hot["report"]["hot"]["h1"].is_object(), "{hot}");

    // For real.
    let (code, body) = put_policy(
        &api,
        json!({"name": "sandpiper", "hotspot": {"k": 2, "n": 3}}),
    );
    assert_eq!(code, 200, "{body}");
    let mig = wait_for(
        "the live loop's migration to finish",
        Duration::from_secs(60),
        || {
            let all = get_json(&api, "/api/v1/migrations").ok()?;
            all.as_array()?
                .iter()
                .find(|m| m["state"] == "done" || m["state"] == "failed")
                .cloned()
        },
    )
    .unwrap();
    assert_eq!(mig["state"], "done", "{mig}");
    let live = (mig["vm"].clone(), mig["from"].clone(), mig["to"].clone());
    eprintln!(
        "live loop migrated {} from {} to {}: {}",
        live.0, live.1, live.2, mig["reason"]
    );
    assert_eq!(live, (json!("sli-vm1"), json!("h1"), json!("h3")));
    let decisions = get_json(&api, "/api/v1/decisions").unwrap();
    assert!(
        decisions
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["action"] == "migrate"
                // `queued as mig-…`, then `done (mig-…)` once it ended.
                && d["outcome"].as_str().unwrap_or("").contains("(mig-")
                || d["outcome"].as_str().unwrap_or("").starts_with("queued as")),
        "{decisions}"
    );
    wait_for("vm1 registered on h3", Duration::from_secs(15), || {
        (get_json(&api, "/api/v1/vms/sli-vm1").ok()?["host"] == "h3").then_some(())
    })
    .unwrap();
    assert!(vm3.ping("10.220.1.1", 3), "vm1 does not answer at h3");

    // The simulator, on the same scenario, decides the same migration.
    let scenario = json!({
        "name": "e2e_live: h1 at 90 % CPU",
        "interval_s": 1,
        "rounds": 4,
        "topology": {"switches": [{"id": "tor", "level": "tor"}]},
        "hosts": [
            {"id": "h1", "tor": "tor", "cores": 2, "memory_mb": 1024, "nic_bps": 1e9},
            {"id": "h2", "tor": "tor", "cores": 2, "memory_mb": 1024, "nic_bps": 1e9},
            {"id": "h3", "tor": "tor", "cores": 2, "memory_mb": 1024, "nic_bps": 1e9}
        ],
        "vms": [
            {"name": "sli-vm1", "host": "h1", "memory_mb": 64, "dirty_rate_mbps": 1, "cpu": 1.0, "mem_used_mb": 32},
            {"name": "sli-vm2", "host": "h1", "memory_mb": 64, "dirty_rate_mbps": 1, "cpu": 0.8, "mem_used_mb": 32},
            {"name": "sli-vm3", "host": "h2", "memory_mb": 64, "dirty_rate_mbps": 1, "cpu": 0.5, "mem_used_mb": 32}
        ]
    });
    let sfile = dir.join("scenario.json");
    std::fs::write(&sfile, scenario.to_string()).unwrap();
    let out = std::process::Command::new(cargo_bin("shoal-controller"))
        .args([
            "simulate",
            "--policy",
            "sandpiper",
            "--option",
            "hotspot.k=2",
            "--option",
            "hotspot.n=3",
            "--scenario",
        ])
        .arg(&sfile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["action"] == "migrate")
        .expect("the simulator migrates");
    assert_eq!(
        (
            first["vm"].clone(),
            first["from"].clone(),
            first["to"].clone()
        ),
        live,
        "simulator: {first}"
    );
    drop((hostds, vm1, vm2, vm3, cables, hvs));
    let _ = std::fs::remove_dir_all(&dir);
}
