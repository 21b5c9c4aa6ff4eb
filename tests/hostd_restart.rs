//! Fault tests: `shoal-hostd` restarts harmlessly (issue 12, point 4).
//!
//! - `hostd_restart_while_vm_idles`: a hostd runs a QEMU VM; hostd is
//!   stopped (SIGTERM, then SIGKILL) and started again with the same
//!   configuration and run directory. The same QEMU process keeps running
//!   and is the only one of the VM, its QMP socket is the same file, hostd
//!   reports the VM with that pid (API and registration), answers a command
//!   from before the restart and commands the adopted QEMU again. QEMU
//!   leads a process group of its own. A QEMU that dies while hostd is
//!   down is reported and its configured VM gets one new QEMU.
//! - `hostd_restart_mid_migration`: a live migration between two hostds
//!   (loopback, no namespaces) whose source hostd is killed (SIGKILL) while
//!   QEMU migrates, then started again. The migration ends cleanly: the
//!   source's command gets a final state that matches where the VM runs,
//!   exactly one QEMU runs the VM, and both hostds report it where it is.
//!   Then the way back with the destination's hostd killed, and a restart
//!   of the hostd that holds the migrated-in VM.
//! - `hostd_restart_mid_migration_that_fails`: the source hostd is killed
//!   mid-migration and the destination QEMU dies while it is down: the
//!   restarted source asks QEMU, fails the command with the reason and
//!   keeps the VM running (the same QEMU), the destination has none.
//!
//! Needs root, QEMU and the test guest (`hostd/guest/install-qemu.sh`,
//! `hostd/guest/build.sh`).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::qemu::{last_uptime, require_qemu_and_guest, template_toml, ControllerSink, Hostd};
use support::{e2e_lock, free_port, is_root, wait_for};

/// The controller's token: what commands hostd.
const TOKEN: &str = support::creds::CONTROLLER_TOKEN;
/// The migration's one-time peer token.
const PEER: &str = "peer-token-shdr-0-5e2c7a91";

/// A QEMU process of VM `vm` whose command line names `run_dir`: (pid,
/// state letter from /proc/PID/stat).
fn qemus_of(vm: &str, run_dir: &Path) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    let dir = run_dir.display().to_string();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.first().is_some_and(|a| a.contains("qemu")) {
            continue;
        }
        let named = args.windows(2).any(|w| w[0] == "-name" && w[1] == vm);
        if !named || !args.iter().any(|a| a.contains(&dir)) {
            continue;
        }
        let state = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim().chars().next()))
            .flatten()
            .unwrap_or('?');
        out.push((pid, state));
    }
    out.sort();
    out
}

/// Live (not zombie) QEMU pids of `vm` under `run_dir`.
fn live_qemus(vm: &str, run_dir: &Path) -> Vec<u32> {
    qemus_of(vm, run_dir)
        .into_iter()
        .filter(|(_, s)| *s != 'Z')
        .map(|(p, _)| p)
        .collect()
}

/// Kills (on drop) every QEMU whose command line names one of `dirs`: the
/// QEMU processes outlive hostd by design, the test's must not outlive it.
struct QemuReaper(Vec<PathBuf>);

impl Drop for QemuReaper {
    fn drop(&mut self) {
        for d in &self.0 {
            for vm in ["shdr-vm", "shdr-mvm", "shdr-fvm"] {
                for (pid, _) in qemus_of(vm, d) {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                }
            }
        }
    }
}

fn inode(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

fn get(h: &Hostd, path: &str) -> (u16, Value) {
    let (code, body) = h.call("GET", path, TOKEN, None).expect("GET");
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn put(h: &Hostd, id: &str, body: &Value) -> (u16, String) {
    h.call(
        "PUT",
        &format!("/api/v1/commands/{id}"),
        TOKEN,
        Some(&body.to_string()),
    )
    .expect("PUT command")
}

/// Polls command `id` until it is final (or `timeout`); the last answer.
fn poll_final(h: &Hostd, id: &str, timeout: Duration) -> (u16, Value) {
    let start = Instant::now();
    loop {
        let (code, v) = get(h, &format!("/api/v1/commands/{id}"));
        if (code == 200 && (v["state"] == "succeeded" || v["state"] == "failed"))
            || start.elapsed() > timeout
        {
            return (code, v);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn hostd_toml(id: &str, api: &str, sink: &str, dir: &Path, run: &Path, extra: &str) -> String {
    format!(
        "host_id = \"{id}\"\ncontroller = \"http://{sink}\"\nlisten = \"{api}\"\n{auth}interval_s = 1\nrun_dir = \"{run}\"\ndirty_rate_period_s = 0\nhttp_timeout_s = 3\n{extra}",
        auth = support::creds::hostd_auth(dir, id),
        run = run.display(),
    )
}

#[test]
fn hostd_restart_while_vm_idles() {
    assert!(is_root(), "the end-to-end tests need root");
    let _lock = e2e_lock().expect("e2e lock");
    let guest = require_qemu_and_guest().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("shd-restart-idle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    support::creds::controller_auth(&dir, &["hr"]).unwrap();
    let run = dir.join("run");
    let _reaper = QemuReaper(vec![run.clone()]);
    let sink = ControllerSink::start("127.0.0.1:0").unwrap();
    let api = format!("127.0.0.1:{}", free_port().unwrap());
    let template = template_toml(
        "shdr-tiny",
        &guest.template(0, None, &["-device", "virtio-balloon-pci,id=balloon0"]),
    );
    let cfg = hostd_toml(
        "hr",
        &api,
        &sink.addr,
        &dir,
        &run,
        &format!("{template}[[vm]]\nname = \"shdr-vm\"\nmac = \"52:54:00:5e:00:01\"\nmemory_mb = 128\nbackend = \"qemu\"\ntemplate = \"shdr-tiny\"\n"),
    );
    let hdir = dir.join("hr");
    let mut hd = Hostd::start(None, &hdir, &cfg, &api).expect("hostd");
    let console = run.join("shdr-vm.console.log");
    let qmp = run.join("shdr-vm.qmp");
    wait_for("guest uptime counter", Duration::from_secs(40), || {
        last_uptime(&console).filter(|u| *u >= 2)
    })
    .unwrap_or_else(|e| panic!("{e}: guest did not boot: {}", hd.log_text()));
    let pids = live_qemus("shdr-vm", &run);
    assert_eq!(pids.len(), 1, "one QEMU for the VM: {pids:?}");
    let pid = pids[0];
    let qmp_ino = inode(&qmp).expect("QMP socket");
    // QEMU leads a process group of its own: a signal to hostd's group
    // (Ctrl-C in a terminal) does not reach it.
    let pgrp = |p: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(2)?
            .parse()
            .ok()
    };
    assert_eq!(
        pgrp(pid),
        Some(pid),
        "QEMU is not in a process group of its own"
    );
    assert_ne!(pgrp(pid), pgrp(hd.child.id()));

    // A command before the restart.
    let (code, body) = put(
        &hd,
        "shdr-mem-1",
        &json!({"kind": "memory_resize", "vm": "shdr-vm", "target_mb": 112}),
    );
    assert_eq!(code, 202, "{body}");
    let (_, mem1) = poll_final(&hd, "shdr-mem-1", Duration::from_secs(20));
    assert_eq!(mem1["state"], "succeeded", "{mem1}");

    let mut logs = String::new();
    for (round, signal) in [(1, "TERM"), (2, "KILL")] {
        // Stop hostd; its QEMU keeps running.
        if signal == "TERM" {
            hd.child.terminate(Duration::from_secs(10));
        } else {
            hd.child.signal("KILL").unwrap();
            hd.child.wait();
        }
        logs.push_str(&format!(
            "--- hostd before restart {round} ---\n{}",
            hd.log_text()
        ));
        drop(hd);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            live_qemus("shdr-vm", &run),
            vec![pid],
            "round {round} (SIG{signal}): QEMU ended with hostd"
        );
        let regs_before = sink.bodies("PUT", "/api/v1/hosts/hr").len();

        hd = Hostd::start(None, &hdir, &cfg, &api).expect("hostd again");
        // Give a wrong start (a second QEMU) the time to show.
        std::thread::sleep(Duration::from_secs(2));
        let all = || format!("{logs}--- hostd now ---\n{}", hd.log_text());
        assert_eq!(
            live_qemus("shdr-vm", &run),
            vec![pid],
            "round {round} (SIG{signal}): after the restart the VM's QEMU must be the same single process\n{}",
            all()
        );
        assert_eq!(
            inode(&qmp),
            Some(qmp_ino),
            "round {round}: the QMP socket of the live QEMU was replaced\n{}",
            all()
        );
        let (code, vm) = get(&hd, "/api/v1/vms/shdr-vm");
        assert_eq!(code, 200, "round {round}: VM not reported: {vm}\n{}", all());
        assert_eq!(vm["state"], "running", "{vm}");
        assert_eq!(vm["pid"], pid, "round {round}: hostd reports pid {vm}");
        // The command from before the restart is answered.
        let (code, c) = get(&hd, "/api/v1/commands/shdr-mem-1");
        assert_eq!(
            code,
            200,
            "round {round}: command from before the restart unknown: {c}\n{}",
            all()
        );
        assert_eq!(c["state"], "succeeded", "{c}");
        assert_eq!(c["result"], mem1["result"], "{c}");
        // hostd commands the adopted QEMU over QMP.
        let id = format!("shdr-mem-r{round}");
        let target = if round == 1 { 96 } else { 112 };
        let (code, body) = put(
            &hd,
            &id,
            &json!({"kind": "memory_resize", "vm": "shdr-vm", "target_mb": target}),
        );
        assert_eq!(code, 202, "{body}");
        let (_, m) = poll_final(&hd, &id, Duration::from_secs(20));
        assert_eq!(m["state"], "succeeded", "round {round}: {m}\n{}", all());
        // The controller learns the VM (registration after the restart).
        let reg = wait_for("registration with the VM", Duration::from_secs(10), || {
            let regs = sink.bodies("PUT", "/api/v1/hosts/hr");
            regs.get(regs_before..)
                .and_then(|r| r.iter().rev().find(|r| r["vms"][0]["name"] == "shdr-vm"))
                .cloned()
        });
        assert!(reg.is_ok(), "round {round}: no registration with the VM");
        // The guest runs on: its counter goes on.
        let u0 = last_uptime(&console).unwrap_or(0);
        let on = wait_for("guest keeps counting", Duration::from_secs(10), || {
            last_uptime(&console).filter(|u| *u > u0)
        });
        assert!(on.is_ok(), "round {round}: guest stopped counting");
        eprintln!("round {round} (SIG{signal}): QEMU {pid} adopted");
    }

    // The VM's QEMU dies while hostd is down: hostd says so and, the VM
    // being configured here, starts one new QEMU (never two).
    hd.child.terminate(Duration::from_secs(10));
    drop(hd);
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    wait_for("old QEMU gone", Duration::from_secs(10), || {
        live_qemus("shdr-vm", &run).is_empty().then_some(())
    })
    .expect("QEMU killed");
    let hd = Hostd::start(None, &hdir, &cfg, &api).expect("hostd after the QEMU died");
    let (code, vm) = get(&hd, "/api/v1/vms/shdr-vm");
    let now = live_qemus("shdr-vm", &run);
    assert_eq!(code, 200, "{vm}\n{}", hd.log_text());
    assert_eq!(now.len(), 1, "{now:?}\n{}", hd.log_text());
    assert_ne!(now[0], pid);
    assert_eq!(vm["pid"], now[0], "{vm}");
    assert!(
        hd.log_text().contains("ended while hostd was down"),
        "the dead QEMU is not reported: {}",
        hd.log_text()
    );
    let (code, c) = get(&hd, "/api/v1/commands/shdr-mem-1");
    assert_eq!(code, 200, "{c}");
    drop(hd);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostd_restart_mid_migration() {
    assert!(is_root(), "the end-to-end tests need root");
    let _lock = e2e_lock().expect("e2e lock");
    let guest = require_qemu_and_guest().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("shd-restart-mig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    support::creds::controller_auth(&dir, &["hs", "hd"]).unwrap();
    let (run_s, run_d) = (dir.join("run-s"), dir.join("run-d"));
    let _reaper = QemuReaper(vec![run_s.clone(), run_d.clone()]);
    let sink = ControllerSink::start("127.0.0.1:0").unwrap();
    let (api_s, api_d) = (
        format!("127.0.0.1:{}", free_port().unwrap()),
        format!("127.0.0.1:{}", free_port().unwrap()),
    );
    let template = template_toml("shdr-mig", &guest.template(2, None, &[]));
    let cfg_s = hostd_toml(
        "hs",
        &api_s,
        &sink.addr,
        &dir,
        &run_s,
        &format!("{template}[[vm]]\nname = \"shdr-mvm\"\nmac = \"52:54:00:5e:00:02\"\nmemory_mb = 128\nbackend = \"qemu\"\ntemplate = \"shdr-mig\"\n"),
    );
    let cfg_d = hostd_toml("hd", &api_d, &sink.addr, &dir, &run_d, &template);
    let mut hs = Hostd::start(None, &dir.join("hs"), &cfg_s, &api_s).expect("hostd hs");
    let mut hd = Hostd::start(None, &dir.join("hd"), &cfg_d, &api_d).expect("hostd hd");
    let console_s = run_s.join("shdr-mvm.console.log");
    let console_d = run_d.join("shdr-mvm.console.log");
    wait_for("guest uptime counter", Duration::from_secs(40), || {
        last_uptime(&console_s).filter(|u| *u >= 3)
    })
    .unwrap_or_else(|e| panic!("{e}: guest did not boot: {}", hs.log_text()));
    let src_pid = live_qemus("shdr-mvm", &run_s);
    assert_eq!(src_pid.len(), 1, "{src_pid:?}");

    let (_, vm) = get(&hs, "/api/v1/vms/shdr-mvm");
    let inventory = vm["inventory"].clone();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    // 128 MB at 8 MiB/s: the migration takes well over ten seconds.
    let bw: u64 = 8 << 20;
    let incoming = json!({
        "kind": "prepare_incoming", "vm": "shdr-mvm", "destination_host": "hd",
        "destination_addr": addr, "max_bandwidth_bytes_per_s": bw,
        "downtime_limit_ms": 300, "deadline_s": 90.0, "vm_spec": inventory,
        "peer_token": PEER,
    });
    let (code, body) = put(&hd, "shdr-in-1", &incoming);
    assert_eq!(code, 202, "{body}");
    let migrate = json!({
        "kind": "migrate", "vm": "shdr-mvm", "destination_host": "hd",
        "destination_addr": addr, "max_bandwidth_bytes_per_s": bw,
        "downtime_limit_ms": 300, "deadline_s": 90.0,
        "destination_api": format!("http://{api_d}"), "incoming_command_id": "shdr-in-1",
        "peer_token": PEER,
    });
    let (code, body) = put(&hs, "shdr-mig-1", &migrate);
    assert_eq!(code, 202, "{body}");
    // Kill the source hostd while QEMU migrates.
    let migrating = wait_for("migration under way", Duration::from_secs(20), || {
        let (_, c) = get(&hs, "/api/v1/commands/shdr-mig-1");
        (c["progress"]["phase"] == "active"
            && c["progress"]["transferred_bytes"].as_u64().unwrap_or(0) > (4 << 20))
            .then_some(c)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", hs.log_text()));
    eprintln!("killing the source hostd at {}", migrating["progress"]);
    hs.child.signal("KILL").unwrap();
    hs.child.wait();
    let log_before = hs.log_text();
    drop(hs);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        live_qemus("shdr-mvm", &run_s),
        src_pid,
        "the source QEMU ended with its hostd"
    );
    let t_restart = Instant::now();
    hs = Hostd::start(None, &dir.join("hs"), &cfg_s, &api_s).expect("hostd hs again");
    let all = |hs: &Hostd| {
        format!(
            "--- hs before ---\n{log_before}--- hs after ---\n{}--- hd ---\n{}",
            hs.log_text(),
            hd.log_text()
        )
    };

    // The migration ends; both commands get a final state.
    let (code_s, st_s) = poll_final(&hs, "shdr-mig-1", Duration::from_secs(90));
    let (_, st_d) = poll_final(&hd, "shdr-in-1", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let (q_s, q_d) = (
        live_qemus("shdr-mvm", &run_s),
        live_qemus("shdr-mvm", &run_d),
    );
    let (_, vms_s) = get(&hs, "/api/v1/vms");
    let (_, vms_d) = get(&hd, "/api/v1/vms");
    let facts = format!(
        "source command {code_s} {st_s}\ndestination command {st_d}\nQEMU on the source {q_s:?}, on the destination {q_d:?}\nsource VMs {vms_s}\ndestination VMs {vms_d}"
    );
    eprintln!("after the restart ({:?}):\n{facts}", t_restart.elapsed());
    assert_eq!(
        q_s.len() + q_d.len(),
        1,
        "exactly one QEMU must run the VM\n{facts}\n{}",
        all(&hs)
    );
    assert_eq!(
        code_s,
        200,
        "the source hostd forgot the migration command\n{facts}\n{}",
        all(&hs)
    );
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["inventory"]["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    if st_s["state"] == "succeeded" {
        assert_eq!(st_d["state"], "succeeded", "{facts}");
        assert_eq!(q_d.len(), 1, "{facts}");
        assert!(names(&vms_s).is_empty(), "{facts}");
        assert_eq!(names(&vms_d), vec!["shdr-mvm"], "{facts}");
        let u0 = last_uptime(&console_d).unwrap_or(0);
        let on = wait_for(
            "guest counts on the destination",
            Duration::from_secs(10),
            || last_uptime(&console_d).filter(|u| *u > u0),
        );
        assert!(on.is_ok(), "{facts}");
    } else {
        assert_eq!(st_s["state"], "failed", "{facts}");
        assert!(
            st_s["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{facts}"
        );
        assert_eq!(q_s, src_pid, "{facts}");
        assert_eq!(names(&vms_s), vec!["shdr-mvm"], "{facts}");
        assert!(names(&vms_d).is_empty(), "{facts}");
        let u0 = last_uptime(&console_s).unwrap_or(0);
        let on = wait_for(
            "guest counts on the source",
            Duration::from_secs(10),
            || last_uptime(&console_s).filter(|u| *u > u0),
        );
        assert!(on.is_ok(), "{facts}");
    }
    // A second restart of the source: what it knows stays true (a VM that
    // migrated away is not started again from the configuration).
    drop(hs);
    let mut hs = Hostd::start(None, &dir.join("hs"), &cfg_s, &api_s).expect("hostd hs third");
    std::thread::sleep(Duration::from_secs(2));
    let (code, st2) = get(&hs, "/api/v1/commands/shdr-mig-1");
    assert_eq!(code, 200, "{st2}");
    assert_eq!(st2["state"], st_s["state"], "{st2}");
    let (_, vms_s2) = get(&hs, "/api/v1/vms");
    assert_eq!(names(&vms_s2), names(&vms_s), "{}", hs.log_text());
    assert_eq!(
        live_qemus("shdr-mvm", &run_s).len() + live_qemus("shdr-mvm", &run_d).len(),
        1,
        "{}",
        hs.log_text()
    );
    if st_s["state"] != "succeeded" {
        eprintln!("the migration failed cleanly: the way back is not tried");
        return;
    }

    // The destination remembers the VM that migrated in: a restart of hd
    // keeps the same QEMU and reports it.
    let dst_pid = live_qemus("shdr-mvm", &run_d);
    hd.child.signal("KILL").unwrap();
    hd.child.wait();
    drop(hd);
    let hd = Hostd::start(None, &dir.join("hd"), &cfg_d, &api_d).expect("hostd hd again");
    std::thread::sleep(Duration::from_secs(2));
    let (code, vm) = get(&hd, "/api/v1/vms/shdr-mvm");
    assert_eq!(
        code,
        200,
        "the migrated-in VM was forgotten: {vm}\n{}",
        hd.log_text()
    );
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(json!([vm["pid"]]), json!(dst_pid), "{vm}");
    assert_eq!(live_qemus("shdr-mvm", &run_d), dst_pid);

    // The way back, hd -> hs, with the destination's hostd (hs) killed and
    // started again while QEMU migrates.
    let inventory = vm["inventory"].clone();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let mut incoming2 = incoming.clone();
    incoming2["destination_host"] = json!("hs");
    incoming2["destination_addr"] = json!(addr);
    incoming2["vm_spec"] = inventory;
    let (code, body) = put(&hs, "shdr-in-2", &incoming2);
    assert_eq!(code, 202, "{body}");
    let mut migrate2 = migrate.clone();
    migrate2["destination_host"] = json!("hs");
    migrate2["destination_addr"] = json!(addr);
    migrate2["destination_api"] = json!(format!("http://{api_s}"));
    migrate2["incoming_command_id"] = json!("shdr-in-2");
    let (code, body) = put(&hd, "shdr-mig-2", &migrate2);
    assert_eq!(code, 202, "{body}");
    wait_for("migration back under way", Duration::from_secs(20), || {
        let (_, c) = get(&hd, "/api/v1/commands/shdr-mig-2");
        (c["progress"]["phase"] == "active"
            && c["progress"]["transferred_bytes"].as_u64().unwrap_or(0) > (4 << 20))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", hd.log_text()));
    hs.child.signal("KILL").unwrap();
    hs.child.wait();
    let log_hs = hs.log_text();
    drop(hs);
    std::thread::sleep(Duration::from_secs(1));
    let hs = Hostd::start(None, &dir.join("hs"), &cfg_s, &api_s).expect("hostd hs fourth");
    let (code_src, src) = poll_final(&hd, "shdr-mig-2", Duration::from_secs(90));
    let (code_dst, dst) = poll_final(&hs, "shdr-in-2", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let (q_s, q_d) = (
        live_qemus("shdr-mvm", &run_s),
        live_qemus("shdr-mvm", &run_d),
    );
    let (_, vms_s) = get(&hs, "/api/v1/vms");
    let (_, vms_d) = get(&hd, "/api/v1/vms");
    let facts = format!(
        "back: source (hd) command {code_src} {src}\ndestination (hs) command {code_dst} {dst}\nQEMU on hs {q_s:?}, on hd {q_d:?}\nhs VMs {vms_s}\nhd VMs {vms_d}\n--- hs before ---\n{log_hs}--- hs after ---\n{}",
        hs.log_text()
    );
    eprintln!("{}", facts.lines().take(5).collect::<Vec<_>>().join("\n"));
    assert_eq!(q_s.len() + q_d.len(), 1, "exactly one QEMU\n{facts}");
    assert_eq!(code_dst, 200, "{facts}");
    if src["state"] == "succeeded" {
        assert_eq!(dst["state"], "succeeded", "{facts}");
        assert_eq!(q_s.len(), 1, "{facts}");
        assert_eq!(names(&vms_s), vec!["shdr-mvm"], "{facts}");
        assert!(names(&vms_d).is_empty(), "{facts}");
        let u0 = last_uptime(&console_s).unwrap_or(0);
        let on = wait_for("guest counts on hs", Duration::from_secs(10), || {
            last_uptime(&console_s).filter(|u| *u > u0)
        });
        assert!(on.is_ok(), "{facts}");
    } else {
        assert_eq!(src["state"], "failed", "{facts}");
        assert_eq!(dst["state"], "failed", "{facts}");
        assert_eq!(q_d, dst_pid, "{facts}");
        assert_eq!(names(&vms_d), vec!["shdr-mvm"], "{facts}");
        assert!(names(&vms_s).is_empty(), "{facts}");
    }
    drop(hs);
    drop(hd);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostd_restart_mid_migration_that_fails() {
    assert!(is_root(), "the end-to-end tests need root");
    let _lock = e2e_lock().expect("e2e lock");
    let guest = require_qemu_and_guest().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("shd-restart-fail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    support::creds::controller_auth(&dir, &["fs", "fd"]).unwrap();
    let (run_s, run_d) = (dir.join("run-s"), dir.join("run-d"));
    let _reaper = QemuReaper(vec![run_s.clone(), run_d.clone()]);
    let sink = ControllerSink::start("127.0.0.1:0").unwrap();
    let (api_s, api_d) = (
        format!("127.0.0.1:{}", free_port().unwrap()),
        format!("127.0.0.1:{}", free_port().unwrap()),
    );
    let template = template_toml("shdr-fail", &guest.template(2, None, &[]));
    let cfg_s = hostd_toml(
        "fs",
        &api_s,
        &sink.addr,
        &dir,
        &run_s,
        &format!("{template}[[vm]]\nname = \"shdr-fvm\"\nmac = \"52:54:00:5e:00:03\"\nmemory_mb = 128\nbackend = \"qemu\"\ntemplate = \"shdr-fail\"\n"),
    );
    let cfg_d = hostd_toml("fd", &api_d, &sink.addr, &dir, &run_d, &template);
    let mut hs = Hostd::start(None, &dir.join("fs"), &cfg_s, &api_s).expect("hostd fs");
    let hd = Hostd::start(None, &dir.join("fd"), &cfg_d, &api_d).expect("hostd fd");
    let console_s = run_s.join("shdr-fvm.console.log");
    wait_for("guest uptime counter", Duration::from_secs(40), || {
        last_uptime(&console_s).filter(|u| *u >= 3)
    })
    .unwrap_or_else(|e| panic!("{e}: guest did not boot: {}", hs.log_text()));
    let src_pid = live_qemus("shdr-fvm", &run_s);
    assert_eq!(src_pid.len(), 1, "{src_pid:?}");
    let (_, vm) = get(&hs, "/api/v1/vms/shdr-fvm");
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let bw: u64 = 8 << 20;
    let incoming = json!({
        "kind": "prepare_incoming", "vm": "shdr-fvm", "destination_host": "fd",
        "destination_addr": addr, "max_bandwidth_bytes_per_s": bw,
        "downtime_limit_ms": 300, "deadline_s": 90.0, "vm_spec": vm["inventory"],
        "peer_token": PEER,
    });
    let (code, body) = put(&hd, "shdr-fin-1", &incoming);
    assert_eq!(code, 202, "{body}");
    let migrate = json!({
        "kind": "migrate", "vm": "shdr-fvm", "destination_host": "fd",
        "destination_addr": addr, "max_bandwidth_bytes_per_s": bw,
        "downtime_limit_ms": 300, "deadline_s": 90.0,
        "destination_api": format!("http://{api_d}"), "incoming_command_id": "shdr-fin-1",
        "peer_token": PEER,
    });
    let (code, body) = put(&hs, "shdr-fmig-1", &migrate);
    assert_eq!(code, 202, "{body}");
    wait_for("migration under way", Duration::from_secs(20), || {
        let (_, c) = get(&hs, "/api/v1/commands/shdr-fmig-1");
        (c["progress"]["phase"] == "active"
            && c["progress"]["transferred_bytes"].as_u64().unwrap_or(0) > (4 << 20))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", hs.log_text()));
    // The source hostd dies; then the destination QEMU.
    hs.child.signal("KILL").unwrap();
    hs.child.wait();
    let log_before = hs.log_text();
    drop(hs);
    let dst = live_qemus("shdr-fvm", &run_d);
    assert_eq!(dst.len(), 1, "{dst:?}");
    let _ = std::process::Command::new("kill")
        .args(["-9", &dst[0].to_string()])
        .status();
    std::thread::sleep(Duration::from_secs(2));
    let hs = Hostd::start(None, &dir.join("fs"), &cfg_s, &api_s).expect("hostd fs again");
    let (code_s, st_s) = poll_final(&hs, "shdr-fmig-1", Duration::from_secs(60));
    let (_, st_d) = poll_final(&hd, "shdr-fin-1", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let (q_s, q_d) = (
        live_qemus("shdr-fvm", &run_s),
        live_qemus("shdr-fvm", &run_d),
    );
    let (_, vm_s) = get(&hs, "/api/v1/vms/shdr-fvm");
    let (_, vms_d) = get(&hd, "/api/v1/vms");
    let facts = format!(
        "source command {code_s} {st_s}\ndestination command {st_d}\nQEMU on the source {q_s:?}, on the destination {q_d:?}\nsource VM {vm_s}\ndestination VMs {vms_d}\n--- source before ---\n{log_before}--- source after ---\n{}",
        hs.log_text()
    );
    eprintln!("{}", facts.lines().take(2).collect::<Vec<_>>().join("\n"));
    assert_eq!(code_s, 200, "{facts}");
    assert_eq!(st_s["state"], "failed", "{facts}");
    let why = st_s["error"].as_str().unwrap_or("");
    assert!(why.contains("keeps running on the source"), "{facts}");
    assert_eq!(st_d["state"], "failed", "{facts}");
    assert_eq!(q_s, src_pid, "the VM runs on in the same QEMU\n{facts}");
    assert!(q_d.is_empty(), "{facts}");
    assert_eq!(vm_s["state"], "running", "{facts}");
    assert!(vm_s["busy_with"].is_null(), "{facts}");
    assert_eq!(json!([vm_s["pid"]]), json!(src_pid), "{facts}");
    assert_eq!(vms_d, json!([]), "{facts}");
    let u0 = last_uptime(&console_s).unwrap_or(0);
    let on = wait_for(
        "guest counts on the source",
        Duration::from_secs(10),
        || last_uptime(&console_s).filter(|u| *u > u0),
    );
    assert!(on.is_ok(), "{facts}");
    drop(hs);
    drop(hd);
    let _ = std::fs::remove_dir_all(&dir);
}
