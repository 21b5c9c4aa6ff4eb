//! End-to-end, qemu backend: two hypervisor namespaces joined through an OVS
//! userspace bridge (standalone learning switch), one `shoal-hostd` in
//! each, a 128 MB TCG guest dirtying ~5 MiB/s migrated through hostd's API
//! with a 20 MiB/s cap. Checks that the migration completes, the guest's
//! uptime counter keeps increasing on the destination, the result agrees
//! with the VMPatrol model within ±10 %, reports and registrations reach
//! the controller, a migrating VM refuses other commands (409) and a wrong
//! token gets 401 (logged).
//!
//! Needs root, Open vSwitch, QEMU and the test guest
//! (`hostd/guest/install-qemu.sh`, `hostd/guest/build.sh`).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shoal_common::vmpatrol::{predict, ModelParams};
use support::qemu::{
    last_uptime, move_into_ns, require_qemu_and_guest, set_standalone, template_toml,
    ControllerSink, Hostd,
};
use support::{e2e_lock, ensure_ovs, is_root, wait_for, Netns, OvsBridge, Veth};

/// The controller's token: what commands hostd.
const TOKEN: &str = support::creds::CONTROLLER_TOKEN;
/// One-time peer tokens of the two migrations (the controller makes them).
const PEER0: &str = "peer-token-shdq-0-8a1f3c5e";
const PEER1: &str = "peer-token-shdq-1-2b7d9e04";
const MIB: f64 = 1048576.0;

fn hostd_config(id: &str, ip: &str, controller: &str, dir: &std::path::Path, vm: &str) -> String {
    format!(
        r#"host_id = "{id}"
controller = "http://{controller}"
listen = "{ip}:7070"
dom0_addr = "{ip}"
{auth}interval_s = 1
uplink = "eth0"
bridge = "shdq-br"
run_dir = "{run}"
dirty_rate_period_s = 2
http_timeout_s = 3
{vm}
"#,
        auth = support::creds::hostd_auth(dir, id),
        run = dir.join(id).display(),
    )
}

fn poll_command(h: &Hostd, id: &str, timeout: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (code, body) = h
            .call("GET", &format!("/api/v1/commands/{id}"), TOKEN, None)
            .expect("GET command");
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("status JSON");
        if v["state"] == "succeeded" || v["state"] == "failed" {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "command {id} not finished in {timeout:?}: {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn qemu_live_migration_through_hostd() {
    assert!(is_root(), "the end-to-end tests need root");
    let _lock = e2e_lock().expect("e2e lock");
    let guest = require_qemu_and_guest().unwrap_or_else(|e| panic!("{e}"));
    ensure_ovs().expect("Open vSwitch");
    let t0 = Instant::now();

    let dir = std::env::temp_dir().join(format!("shd-qemu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    support::creds::controller_auth(&dir, &["h1", "h2"]).unwrap();

    // Hypervisors h1, h2 and a management port for the test, on one bridge.
    let br = OvsBridge::new("shdq-br", 0x5d_0001).expect("bridge");
    set_standalone(br.name()).unwrap();
    let h1 = Netns::new("shdq-h1").unwrap();
    let h2 = Netns::new("shdq-h2").unwrap();
    let v1 = Veth::new("shdq-h1p", "shdq-h1i").unwrap();
    let v2 = Veth::new("shdq-h2p", "shdq-h2i").unwrap();
    let vm_ = Veth::new("shdq-mp", "shdq-mi").unwrap();
    for (i, p) in [v1.root_end(), v2.root_end(), vm_.root_end()]
        .iter()
        .enumerate()
    {
        br.add_port(p, 1 + i as u16).unwrap();
    }
    move_into_ns("shdq-h1i", &h1, "eth0", Some("10.213.1.1/24"), None, true).unwrap();
    move_into_ns("shdq-h2i", &h2, "eth0", Some("10.213.1.2/24"), None, true).unwrap();
    support::sh("ip", &["addr", "add", "10.213.1.254/24", "dev", "shdq-mi"]).unwrap();

    // The guest's NIC is a tap of the same name in each hypervisor.
    for ns in [&h1, &h2] {
        ns.exec("ip", &["tuntap", "add", "dev", "shdq-tap", "mode", "tap"])
            .unwrap();
        ns.exec("ip", &["link", "set", "shdq-tap", "up"]).unwrap();
    }
    for ns in [&h1, &h2] {
        ns.exec("ip", &["addr", "add", "10.213.9.1/24", "dev", "shdq-tap"])
            .unwrap();
    }

    let sink = ControllerSink::start("10.213.1.254:0").unwrap();
    // Both hypervisors define the machine template (the destination builds
    // QEMU's command line from its own) and share the image directory.
    let template = template_toml(
        "shdq-guest",
        &guest.template(
            5,
            Some("10.213.9.2/24"),
            &[
                "-device",
                "virtio-balloon-pci,id=balloon0",
                "-netdev",
                "tap,id=n0,ifname={tap},script=no,downscript=no",
                "-device",
                "virtio-net-pci,netdev=n0,mac={mac}",
                "-drive",
                "file={disk},format=raw,if=virtio,readonly=on",
            ],
        ),
    );
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("shdq-vm.img"), vec![0u8; 1 << 20]).unwrap();
    let host_toml = format!("image_dir = \"{}\"\n{template}", images.display());
    let vm_toml = format!(
        "{host_toml}[[vm]]\nname = \"shdq-vm\"\nmac = \"52:54:00:5d:00:01\"\nip = \"10.213.2.1\"\nmemory_mb = 128\nbackend = \"qemu\"\ntemplate = \"shdq-guest\"\ndisk = \"shdq-vm.img\"\ntap = \"shdq-tap\"\n"
    );
    let hd1 = Hostd::start(
        Some(&h1),
        &dir.join("h1"),
        &hostd_config("h1", "10.213.1.1", &sink.addr, &dir, &vm_toml),
        "10.213.1.1:7070",
    )
    .expect("hostd h1");
    let hd2 = Hostd::start(
        Some(&h2),
        &dir.join("h2"),
        &hostd_config("h2", "10.213.1.2", &sink.addr, &dir, &host_toml),
        "10.213.1.2:7070",
    )
    .expect("hostd h2");
    let src_console = dir.join("h1/shdq-vm.console.log");
    let dst_console = dir.join("h2/shdq-vm.console.log");

    // The guest boots and counts.
    let booted = wait_for("guest uptime counter", Duration::from_secs(40), || {
        last_uptime(&src_console).filter(|u| *u >= 3)
    });
    assert!(booted.is_ok(), "guest did not boot: {}", hd1.log_text());

    // The dirty rate can be changed at run time over the serial console.
    support::qemu::set_guest_dirty_rate(&dir.join("h1/shdq-vm.serial"), 6).unwrap();
    let changed = wait_for("guest takes the new rate", Duration::from_secs(5), || {
        std::fs::read_to_string(&src_console)
            .ok()
            .filter(|t| t.contains("shoal-dirtier: rate 6 MB/s"))
    });
    assert!(changed.is_ok(), "the guest ignored `rate 6`");

    // Wrong and missing tokens: 401, logged.
    let (code, body) = hd1.call("GET", "/api/v1/vms", "wrong-token", None).unwrap();
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("error"), "{body}");
    let (code, _) = support::qemu::http(&hd1.api, "GET", "/api/v1/vms", None, None).unwrap();
    assert_eq!(code, 401);
    assert!(
        wait_for("401 logged", Duration::from_secs(5), || {
            hd1.log_text()
                .contains("rejected: missing or wrong bearer token")
                .then_some(())
        })
        .is_ok(),
        "401 not logged"
    );

    // Reports with real QEMU metrics reach the controller. The guest answers
    // pings through its tap: the VM's tx/rx bytes come from the tap counters.
    let pong = wait_for("guest answers ping", Duration::from_secs(10), || {
        h1.command("ping", &["-c", "1", "-W", "1", "10.213.9.2"])
            .output()
            .ok()
            .filter(|o| o.status.success())
    });
    assert!(pong.is_ok(), "the guest does not answer on its tap");
    let mut pinger = h1
        .spawn("ping", &["-c", "100", "-i", "0.2", "10.213.9.2"])
        .unwrap();
    let report = wait_for("report with VM metrics", Duration::from_secs(20), || {
        sink.bodies("POST", "/api/v1/hosts/h1/reports")
            .into_iter()
            .rev()
            .find(|r| {
                r["vms"][0]["gotten_ms"].as_f64().unwrap_or(0.0) > 0.0
                    && r["vms"][0]["dirty_rate_mbps"].as_f64().unwrap_or(0.0) > 0.0
                    && r["vms"][0]["rx_bytes_per_s"].as_f64().unwrap_or(0.0) > 0.0
                    && r["vms"][0]["tx_packets_per_s"].as_f64().unwrap_or(0.0) > 0.0
            })
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: last report {:?}\n{}",
            sink.bodies("POST", "/api/v1/hosts/h1/reports").last(),
            hd1.log_text()
        )
    });
    pinger.terminate(Duration::from_millis(100));
    let m = &report["vms"][0];
    assert_eq!(m["name"], "shdq-vm");
    assert_eq!(m["memory_mb"], 128);
    assert!(m["cpu_cores"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["used_memory_mb"].as_u64().unwrap() > 0, "{m}");
    assert!(
        m["wait_ms"].is_number() && m["blocked_ms"].is_number(),
        "{m}"
    );
    assert!(report["host"]["mem_total_mb"].as_u64().unwrap() > 0);
    let regs = sink.bodies("PUT", "/api/v1/hosts/h1");
    let reg = regs.last().expect("h1 registered");
    assert_eq!(reg["vms"][0]["name"], "shdq-vm");
    // The inventory names the template: no command line travels.
    assert_eq!(
        reg["vms"][0]["spec"],
        json!({"backend": "qemu", "template": "shdq-guest", "disk": "shdq-vm.img", "tap": "shdq-tap"})
    );
    assert_eq!(reg["bridge"]["name"], "shdq-br");
    assert_eq!(reg["bridge"]["datapath_id"], 0x5d_0001);

    let (_, vms) = hd1.call("GET", "/api/v1/vms", TOKEN, None).unwrap();
    let vms: Value = serde_json::from_str(&vms).unwrap();
    let inventory = vms[0]["inventory"].clone();

    // A migration that cannot meet its deadline (1 MiB/s for 128 MB in
    // 3 s) is cancelled: the VM keeps running on the source, both ends say
    // why.
    let slow_in = json!({
        "kind": "prepare_incoming", "vm": "shdq-vm", "destination_host": "h2",
        "destination_addr": "10.213.1.2:4443", "max_bandwidth_bytes_per_s": 1u64 << 20,
        "downtime_limit_ms": 300, "deadline_s": 20.0, "vm_spec": inventory,
        "peer_token": PEER0,
    });
    let (code, body) = hd2
        .call(
            "PUT",
            "/api/v1/commands/shdq-in-0",
            TOKEN,
            Some(&slow_in.to_string()),
        )
        .unwrap();
    assert_eq!(code, 202, "{body}");
    // Only the controller's token commands a hostd: a host's own token
    // does not, and the migration's peer token only reads the status of
    // the command that carries it.
    let h1_token = support::creds::host_token("h1");
    let slow_text = slow_in.to_string();
    for (method, path, token) in [
        ("GET", "/api/v1/vms", h1_token.as_str()),
        ("PUT", "/api/v1/commands/shdq-x", h1_token.as_str()),
        ("GET", "/api/v1/vms", PEER0),
        ("GET", "/api/v1/commands", PEER0),
        ("GET", "/api/v1/commands/shdq-in-1", PEER0),
        ("PUT", "/api/v1/commands/shdq-in-0", PEER0),
    ] {
        let (code, body) = hd2
            .call(
                method,
                path,
                token,
                Some(slow_text.as_str()).filter(|_| method == "PUT"),
            )
            .unwrap();
        assert_eq!(code, 401, "{method} {path}: {body}");
    }
    let (code, body) = hd2
        .call("GET", "/api/v1/commands/shdq-in-0", PEER0, None)
        .unwrap();
    assert_eq!(code, 200, "the peer token reads its command: {body}");
    let slow = json!({
        "kind": "migrate", "vm": "shdq-vm", "destination_host": "h2",
        "destination_addr": "10.213.1.2:4443", "max_bandwidth_bytes_per_s": 1u64 << 20,
        "downtime_limit_ms": 300, "deadline_s": 3.0,
        "destination_api": "http://10.213.1.2:7070", "incoming_command_id": "shdq-in-0",
        "peer_token": PEER0,
    });
    let (code, body) = hd1
        .call(
            "PUT",
            "/api/v1/commands/shdq-mig-0",
            TOKEN,
            Some(&slow.to_string()),
        )
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let st0 = poll_command(&hd1, "shdq-mig-0", Duration::from_secs(20));
    assert_eq!(st0["state"], "failed", "{st0}");
    let why = st0["error"].as_str().unwrap_or("");
    assert!(
        why.contains("deadline") && why.contains("keeps running on the source"),
        "{why}"
    );
    let in0 = poll_command(&hd2, "shdq-in-0", Duration::from_secs(20));
    assert_eq!(in0["state"], "failed", "{in0}");
    eprintln!("cancelled: source: {why}; destination: {}", in0["error"]);
    let (_, vm1) = hd1.call("GET", "/api/v1/vms/shdq-vm", TOKEN, None).unwrap();
    let vm1: Value = serde_json::from_str(&vm1).unwrap();
    assert_eq!(vm1["state"], "running", "{vm1}");
    assert!(vm1["busy_with"].is_null(), "{vm1}");
    let u0 = last_uptime(&src_console).unwrap();
    let still = wait_for("source keeps counting", Duration::from_secs(5), || {
        last_uptime(&src_console).filter(|u| *u > u0)
    });
    assert!(
        still.is_ok(),
        "guest stopped on the source after the cancel"
    );
    let (_, vms2) = hd2.call("GET", "/api/v1/vms", TOKEN, None).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&vms2).unwrap(), json!([]));

    // Migration: prepare the destination, then migrate the source.
    let bw: u64 = 20 << 20;
    let incoming = json!({
        "kind": "prepare_incoming", "vm": "shdq-vm", "destination_host": "h2",
        "destination_addr": "10.213.1.2:4444", "max_bandwidth_bytes_per_s": bw,
        "downtime_limit_ms": 300, "deadline_s": 45.0, "vm_spec": inventory,
        "peer_token": PEER1,
    });
    let (code, body) = hd2
        .call(
            "PUT",
            "/api/v1/commands/shdq-in-1",
            TOKEN,
            Some(&incoming.to_string()),
        )
        .unwrap();
    assert_eq!(code, 202, "{body}");
    // The same id and body again: the same command.
    let (code, _) = hd2
        .call(
            "PUT",
            "/api/v1/commands/shdq-in-1",
            TOKEN,
            Some(&incoming.to_string()),
        )
        .unwrap();
    assert_eq!(code, 200);
    let uptime_before = last_uptime(&src_console).unwrap();
    let migrate = json!({
        "kind": "migrate", "vm": "shdq-vm", "destination_host": "h2",
        "destination_addr": "10.213.1.2:4444", "max_bandwidth_bytes_per_s": bw,
        "downtime_limit_ms": 300, "deadline_s": 45.0,
        "destination_api": "http://10.213.1.2:7070", "incoming_command_id": "shdq-in-1",
        "peer_token": PEER1,
    });
    let (code, body) = hd1
        .call(
            "PUT",
            "/api/v1/commands/shdq-mig-1",
            TOKEN,
            Some(&migrate.to_string()),
        )
        .unwrap();
    assert_eq!(code, 202, "{body}");
    // While it migrates, other commands on the VM conflict.
    let (code, body) = hd1
        .call(
            "PUT",
            "/api/v1/commands/shdq-resize-1",
            TOKEN,
            Some(r#"{"kind":"memory_resize","vm":"shdq-vm","target_mb":64}"#),
        )
        .unwrap();
    assert_eq!(code, 409, "{body}");
    // Same id, different body: conflict.
    let mut other = migrate.clone();
    other["deadline_s"] = json!(30.0);
    let (code, _) = hd1
        .call(
            "PUT",
            "/api/v1/commands/shdq-mig-1",
            TOKEN,
            Some(&other.to_string()),
        )
        .unwrap();
    assert_eq!(code, 409);

    let st = poll_command(&hd1, "shdq-mig-1", Duration::from_secs(50));
    assert_eq!(
        st["state"],
        "succeeded",
        "migration failed: {st}\nh1: {}\nh2: {}",
        hd1.log_text(),
        hd2.log_text()
    );
    let dst = poll_command(&hd2, "shdq-in-1", Duration::from_secs(10));
    assert_eq!(dst["state"], "succeeded", "{dst}");

    // The guest runs on the destination: its counter went on from where
    // it was and keeps increasing.
    let u1 = wait_for("uptime on the destination", Duration::from_secs(10), || {
        last_uptime(&dst_console).filter(|u| *u > uptime_before)
    })
    .expect("guest counting on the destination");
    std::thread::sleep(Duration::from_millis(2500));
    let u2 = last_uptime(&dst_console).unwrap();
    assert!(u2 > u1, "uptime stuck on the destination: {u1} -> {u2}");
    let (_, vms1) = hd1.call("GET", "/api/v1/vms", TOKEN, None).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&vms1).unwrap(), json!([]));
    let (_, vm2) = hd2.call("GET", "/api/v1/vms/shdq-vm", TOKEN, None).unwrap();
    let vm2: Value = serde_json::from_str(&vm2).unwrap();
    assert_eq!(vm2["state"], "running", "{vm2}");

    // The guest's network runs on the destination too.
    let out = h2
        .command("ping", &["-c", "3", "-i", "0.2", "-W", "1", "10.213.9.2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "guest unreachable on the destination");

    // Balloon on the destination: the guest gives 16 MiB back.
    let (code, body) = hd2
        .call(
            "PUT",
            "/api/v1/commands/shdq-mem-1",
            TOKEN,
            Some(r#"{"kind":"memory_resize","vm":"shdq-vm","target_mb":112}"#),
        )
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let mem = poll_command(&hd2, "shdq-mem-1", Duration::from_secs(15));
    assert_eq!(mem["state"], "succeeded", "{mem}");
    let actual = mem["result"]["actual_mb"].as_u64().unwrap();
    assert!(actual.abs_diff(112) <= 1, "balloon at {actual} MiB: {mem}");

    // VF stand-in on the destination: an emulated NIC hot-plugged over QMP
    // and removed again (the guest releases it through ACPI).
    let (code, body) = hd2
        .call(
            "PUT",
            "/api/v1/commands/shdq-vf-1",
            TOKEN,
            Some(r#"{"kind":"vf_attach","vm":"shdq-vm"}"#),
        )
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let vf = poll_command(&hd2, "shdq-vf-1", Duration::from_secs(10));
    assert_eq!(vf["state"], "succeeded", "{vf}");
    assert_eq!(vf["result"]["device"], "shdvf-shdq-vm");
    let (_, vm2) = hd2.call("GET", "/api/v1/vms/shdq-vm", TOKEN, None).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&vm2).unwrap()["vf_attached"],
        true
    );
    let (code, body) = hd2
        .call(
            "PUT",
            "/api/v1/commands/shdq-vf-2",
            TOKEN,
            Some(r#"{"kind":"vf_detach","vm":"shdq-vm"}"#),
        )
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let vf = poll_command(&hd2, "shdq-vf-2", Duration::from_secs(15));
    assert_eq!(vf["state"], "succeeded", "{vf}");

    // The result agrees with the VMPatrol model (non-zero memory as M, the
    // largest observed dirty rate as R, the achieved bandwidth as L).
    let r = &st["result"];
    let transferred = r["transferred_bytes"].as_f64().unwrap() / MIB;
    let total_s = r["total_time_ms"].as_f64().unwrap() / 1000.0;
    let params = ModelParams {
        memory_mb: r["memory_bytes"].as_f64().unwrap() / MIB,
        dirty_mbps: r["max_dirty_rate_bytes_per_s"].as_f64().unwrap() / MIB,
        downtime_goal_s: 0.3,
        min_progress_mb: 1.0,
    };
    let l = r["achieved_bandwidth_bytes_per_s"].as_f64().unwrap() / MIB;
    let p = predict(&params, l).expect("model");
    eprintln!(
        "migration: {transferred:.1} MiB in {total_s:.2} s (downtime {} ms, {} iterations), M={:.1} MiB R={:.2} MiB/s L={l:.2} MiB/s; model: {:.1} MiB in {:.2} s, n={}",
        r["downtime_ms"], r["iterations"], params.memory_mb, params.dirty_mbps, p.traffic_mb, p.time_s, p.rounds
    );
    assert!(l < 22.0, "bandwidth cap not applied: {l} MiB/s");
    assert!(
        params.memory_mb > 16.0 && params.memory_mb <= 130.0,
        "{params:?}"
    );
    assert!(
        (p.traffic_mb - transferred).abs() <= 0.10 * transferred,
        "bytes: model {} vs {transferred}",
        p.traffic_mb
    );
    assert!(
        (p.time_s - total_s).abs() <= 0.10 * total_s,
        "time: model {} vs {total_s}",
        p.time_s
    );

    // The controller learns: h2 registers the VM, h1 reports it left.
    let reg2 = wait_for(
        "h2 re-registers with the VM",
        Duration::from_secs(10),
        || {
            sink.bodies("PUT", "/api/v1/hosts/h2")
                .into_iter()
                .rev()
                .find(|r| r["vms"][0]["name"] == "shdq-vm")
        },
    );
    assert!(reg2.is_ok(), "h2 did not register the VM");
    let left = wait_for("vm_left event", Duration::from_secs(10), || {
        sink.bodies("POST", "/api/v1/hosts/h1/reports")
            .into_iter()
            .flat_map(|r| r["events"].as_array().cloned().unwrap_or_default())
            .find(|e| e["event"] == "vm_left" && e["vm"] == "shdq-vm")
    });
    assert!(left.is_ok(), "no vm_left event");
    eprintln!("qemu e2e took {:?}", t0.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `prepare_incoming` body for VM `vm` whose inventory carries `spec`.
fn incoming_body(vm: &str, addr: &str, spec: Value) -> String {
    json!({
        "kind": "prepare_incoming", "vm": vm, "destination_host": "hx",
        "destination_addr": addr, "max_bandwidth_bytes_per_s": 1u64 << 20,
        "downtime_limit_ms": 300, "deadline_s": 4.0,
        "vm_spec": {"name": vm, "mac": "52:54:00:5d:00:09", "vcpus": 1,
                    "memory_mb": 64, "max_memory_mb": 64, "spec": spec},
    })
    .to_string()
}

/// Security: a destination never runs a QEMU command line that came over
/// the wire, nor a template it does not define, nor a disk outside its
/// `image_dir`. A real hostd (with a template and an image directory) is
/// sent `prepare_incoming` commands whose VM spec carries QEMU options of
/// the sender's choosing (the old `args`: `-virtfs` sharing `/`, `-drive
/// file=/etc/shadow`, a TCP `--monitor`, a tap with a `script=`; or `args`
/// next to a valid template), an unknown template, disks outside the image
/// directory (absolute, `..`, symlinks out) and bad names: each is refused
/// with a 4xx JSON error, no command exists afterwards and hostd has no
/// QEMU child. A well-formed command on the same hostd does start QEMU, with
/// the template's arguments and the disk's real path (so the check for a
/// QEMU child is not vacuous).
#[test]
fn prepare_incoming_refuses_foreign_qemu_options() {
    assert!(is_root(), "the end-to-end tests need root");
    let _lock = e2e_lock().expect("e2e lock");
    let guest = require_qemu_and_guest().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("shd-qemu-refuse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    support::creds::controller_auth(&dir, &["hx"]).unwrap();
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("disk.img"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(dir.join("outside.img"), vec![0u8; 1 << 20]).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", images.join("shadow")).unwrap();
    std::os::unix::fs::symlink("../outside.img", images.join("up")).unwrap();
    let template = template_toml(
        "shdx-tiny",
        &guest.template(
            0,
            None,
            &["-drive", "file={disk},format=raw,if=virtio,readonly=on"],
        ),
    );
    let api = format!("127.0.0.1:{}", support::free_port().unwrap());
    let cfg = format!(
        "host_id = \"hx\"\nlisten = \"{api}\"\n{}interval_s = 1\nrun_dir = \"{}\"\ndirty_rate_period_s = 0\nimage_dir = \"{}\"\n{template}max_memory_mb = 256\n",
        support::creds::hostd_auth(&dir, "hx"),
        dir.join("run").display(),
        images.display()
    );
    let hd = Hostd::start(None, &dir.join("hx"), &cfg, &api).expect("hostd");
    let hostd_pid = hd.child.id();
    let migration_addr = format!("127.0.0.1:{}", support::free_port().unwrap());

    // The old scheme: the whole command line on the wire.
    let mut machine = guest.template(0, None, &[]);
    for a in machine.iter_mut() {
        *a = a.replace("{memory_mb}", "64").replace("{vcpus}", "1");
    }
    let with = |extra: &[&str]| {
        let mut a = machine.clone();
        a.extend(extra.iter().map(|s| s.to_string()));
        json!({"backend": "qemu", "args": a})
    };
    // The template scheme, with one field changed or added.
    let tpl = |extra: Value| {
        let mut s = json!({"backend": "qemu", "template": "shdx-tiny", "disk": "disk.img"});
        if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        s
    };
    let mut attacks: Vec<(&str, String)> = [
        (
            "virtfs",
            with(&[
                "-virtfs",
                "local,path=/,mount_tag=root,security_model=passthrough,id=fs0",
            ]),
        ),
        (
            "shadow",
            with(&["-drive", "file=/etc/shadow,format=raw,if=virtio,readonly=on"]),
        ),
        (
            "monitor",
            with(&["--monitor", "tcp:127.0.0.1:45555,server=on,wait=off"]),
        ),
        (
            "tap-script",
            with(&[
                "-netdev",
                "tap,id=n0,ifname=shdx-t0,script=/bin/true,downscript=no",
            ]),
        ),
        (
            "template-plus-args",
            tpl(json!({"args": ["-virtfs", "local,path=/,mount_tag=root,security_model=passthrough"]})),
        ),
        ("unknown-template", tpl(json!({"template": "shdx-huge"}))),
        ("disk-absolute", tpl(json!({"disk": "/etc/shadow"}))),
        ("disk-dotdot", tpl(json!({"disk": "../outside.img"}))),
        ("disk-symlink-shadow", tpl(json!({"disk": "shadow"}))),
        ("disk-symlink-up", tpl(json!({"disk": "up"}))),
        ("disk-options", tpl(json!({"disk": "disk.img,file.locking=off"}))),
        ("tap-options", tpl(json!({"tap": "t0,script=/x"}))),
    ]
    .into_iter()
    .map(|(w, spec)| (w, incoming_body("shdx-evil", &migration_addr, spec)))
    .collect();
    let good_spec = tpl(json!({}));
    let good: Value = serde_json::from_str(&incoming_body(
        "shdx-evil",
        &migration_addr,
        good_spec.clone(),
    ))
    .unwrap();
    let mut variant = |what: &'static str, f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        attacks.push((what, v.to_string()));
    };
    variant("bad-mac", &|v| {
        v["vm_spec"]["mac"] = json!("52:54:00:5d:00:09,x")
    });
    variant("bad-name", &|v| {
        v["vm"] = json!("-shdx");
        v["vm_spec"]["name"] = json!("-shdx");
    });
    variant("too-much-memory", &|v| {
        v["vm_spec"]["memory_mb"] = json!(512);
        v["vm_spec"]["max_memory_mb"] = json!(512);
    });
    variant("unknown-inventory-field", &|v| {
        v["vm_spec"]["qemu_args"] = json!(["-S"]);
    });
    for (what, body) in &attacks {
        let id = format!("shdx-{what}");
        let (code, answer) = hd
            .call("PUT", &format!("/api/v1/commands/{id}"), TOKEN, Some(body))
            .unwrap();
        let refused = (400..500).contains(&code)
            && serde_json::from_str::<Value>(&answer)
                .map(|v| v["error"].is_string())
                .unwrap_or(false);
        // Give an accepted command the time to start its QEMU.
        std::thread::sleep(Duration::from_millis(1500));
        let children = support::qemu::qemu_children(hostd_pid);
        support::qemu::kill_pids(&children);
        assert!(
            refused,
            "{what}: prepare_incoming answered {code} {answer}, want a 4xx JSON error; \
             hostd's QEMU children: {children:?}"
        );
        assert!(
            children.is_empty(),
            "{what}: hostd started QEMU: {children:?}"
        );
        let (code, _) = hd
            .call("GET", &format!("/api/v1/commands/{id}"), TOKEN, None)
            .unwrap();
        assert_eq!(code, 404, "{what}: the refused command exists");
        eprintln!("{what}: refused: {answer}");
    }
    let (_, vms) = hd.call("GET", "/api/v1/vms", TOKEN, None).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&vms).unwrap(), json!([]));
    assert!(
        hd.log_text().contains("command refused"),
        "refusals are not logged"
    );

    // Control: a well-formed command starts a QEMU child, built from the
    // template with the disk's real path (it ends when no migration arrives
    // before the deadline).
    let body = incoming_body("shdx-good", &migration_addr, good_spec);
    let (code, answer) = hd
        .call("PUT", "/api/v1/commands/shdx-good", TOKEN, Some(&body))
        .unwrap();
    assert_eq!(code, 202, "{answer}");
    let started = wait_for("QEMU of the good command", Duration::from_secs(10), || {
        let c = support::qemu::qemu_children(hostd_pid);
        (!c.is_empty()).then_some(c)
    })
    .unwrap_or_else(|e| panic!("{e}: no QEMU for a well-formed command: {}", hd.log_text()));
    let disk = images.join("disk.img").canonicalize().unwrap();
    let line = &started[0].1;
    assert!(
        line.contains(" -m 64 -smp 1 ")
            && line.contains(&format!("file={},format=raw", disk.display()))
            && line.contains("-name shdx-good"),
        "{line}"
    );
    let done = poll_command(&hd, "shdx-good", Duration::from_secs(20));
    assert_eq!(done["state"], "failed", "{done}");
    let gone = wait_for("QEMU stopped", Duration::from_secs(10), || {
        support::qemu::qemu_children(hostd_pid)
            .is_empty()
            .then_some(())
    });
    assert!(gone.is_ok(), "QEMU still runs after the deadline");
    drop(hd);
    let _ = std::fs::remove_dir_all(&dir);
}
