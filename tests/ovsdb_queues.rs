//! The project's own OVSDB client and the migration-queue reservations
//! against the system Open vSwitch (real `ovsdb-server`, real
//! `ovs-vswitchd`, real htb classes and u32 filters):
//!
//! ```text
//!   sdb-h1 (10.93.0.1) --sdb-p1-- [sdb-br0, NORMAL] --sdb-p2-- sdb-h2 (10.93.0.2)
//!                                                   20 Mbit/s reserved on sdb-p2
//!                                                   for tcp 10.93.0.1 -> 10.93.0.2:5201
//! ```
//!
//! Checks: the client's RPCs and typed errors on the real server; the
//! reservation is exactly the intended QoS/Queue rows, htb classes and
//! filter; an iperf3 flow on the classified port is held near 20 Mbit/s
//! while one on another port is not; a busy or missing port is refused
//! without leaving anything; release removes every row, class and filter;
//! `cleanup_all` removes leftovers of a "crashed" controller (by marker
//! prefix only) and marked orphan queues; a failing classifier or an
//! `ovs-vswitchd` that never applies the change (a private instance whose
//! daemon is killed) roll the reservation back within the deadline.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use shoal_controller::execute::ovsdb::{op, OvsdbClient, OvsdbError, DEFAULT_TARGET};
use shoal_controller::execute::queues::{
    QueueConfig, QueueError, QueueManager, QueueReservation, SystemTc, TcFuture, TcRunner,
    TcpMatch, MARKER_KEY,
};
use support::{e2e_lock, ensure_ovs, is_root, sh, wait_for, NsHost, OvsBridge, PrivateOvs};

const LINK: u64 = 100_000_000;
const RATE: u64 = 20_000_000;
const PORTS: [&str; 2] = ["sdb-p1", "sdb-p2"];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn vsctl(args: &[&str]) -> String {
    sh("ovs-vsctl", args)
        .unwrap_or_else(|e| panic!("ovs-vsctl {args:?}: {e}"))
        .trim()
        .to_string()
}

fn tc(args: &[&str]) -> String {
    sh("tc", args).unwrap_or_else(|e| panic!("tc {args:?}: {e}"))
}

/// UUIDs of the QoS or Queue rows whose Shoal marker starts with `prefix`.
fn marked(table: &str, prefix: &str) -> Vec<String> {
    let out = vsctl(&[
        "--format=json",
        "--columns=_uuid,external_ids",
        "list",
        table,
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut found = Vec::new();
    for row in v["data"].as_array().unwrap() {
        let uuid = row[0][1].as_str().unwrap().to_string();
        let pairs = row[1][1].as_array().unwrap();
        if pairs
            .iter()
            .any(|p| p[0] == MARKER_KEY && p[1].as_str().is_some_and(|m| m.starts_with(prefix)))
        {
            found.push(uuid);
        }
    }
    found
}

/// Removes every row this test may have left (runs even on failure).
struct RowsGuard;

impl Drop for RowsGuard {
    fn drop(&mut self) {
        for p in ["sdb-p1", "sdb-p2", "sdb-p3"] {
            let _ = sh("ovs-vsctl", &["--if-exists", "clear", "port", p, "qos"]);
        }
        for table in ["qos", "queue"] {
            for u in marked(table, "sdb-") {
                let _ = sh("ovs-vsctl", &["--if-exists", "destroy", table, &u]);
            }
        }
    }
}

/// Receiver-side throughput of a 3 s iperf3 TCP flow (first second
/// omitted), bits/s.
fn iperf(from: &NsHost, to: &NsHost, port: u16) -> f64 {
    let p = port.to_string();
    let out = from
        .ns
        .exec(
            "iperf3",
            &["-c", &to.ip, "-p", &p, "-t", "3", "-O", "1", "-J"],
        )
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in {out}"))
}

#[test]
fn own_client_against_the_real_ovsdb() {
    assert!(is_root(), "needs root (OVS)");
    ensure_ovs().unwrap();
    rt().block_on(async {
        let c = OvsdbClient::connect(DEFAULT_TARGET).await.unwrap();
        let dbs = c.list_dbs().await.unwrap();
        assert!(dbs.contains(&"Open_vSwitch".to_string()), "{dbs:?}");
        c.echo().await.unwrap();
        let schema = c.get_schema("Open_vSwitch").await.unwrap();
        assert!(schema["tables"]["QoS"]["columns"]["queues"].is_object());

        let res = c
            .transact(
                "Open_vSwitch",
                vec![
                    op::select("Open_vSwitch", vec![], Some(&["cur_cfg"])),
                    op::comment("shoal test: read only"),
                ],
            )
            .await
            .unwrap();
        assert!(res[0]["rows"][0]["cur_cfg"].is_i64(), "{res:?}");

        // Unknown database: the JSON-RPC request itself fails.
        match c.transact("NoSuchDb", vec![op::comment("x")]).await {
            Err(OvsdbError::Transaction {
                index: None, error, ..
            }) => assert_eq!(error, "unknown database"),
            other => panic!("{other:?}"),
        }
        // Operation 1 fails: nothing of operation 0 is committed.
        let before = marked("queue", "sdb-client");
        match c
            .transact(
                "Open_vSwitch",
                vec![
                    op::insert(
                        "Queue",
                        json!({"external_ids": op::str_map([(MARKER_KEY, "sdb-client")])}),
                        None,
                    ),
                    op::delete(
                        "QoS",
                        vec![op::cond("_uuid", op::Function::Eq, json!(["uuid", "bad"]))],
                    ),
                ],
            )
            .await
        {
            Err(OvsdbError::Transaction {
                index: Some(1),
                error,
                details,
            }) => {
                assert_eq!(error, "syntax error");
                assert!(details.unwrap().contains("not a valid UUID"));
            }
            other => panic!("{other:?}"),
        }
        // A commit-time error sits after the last operation.
        match c
            .transact(
                "Open_vSwitch",
                vec![op::insert(
                    "QoS",
                    json!({"type": "linux-htb", "external_ids": op::str_map([(MARKER_KEY, "sdb-client")]),
                           "queues": op::map(vec![(json!(0), op::uuid("00000000-0000-0000-0000-000000000000"))])}),
                    None,
                )],
            )
            .await
        {
            Err(OvsdbError::Transaction {
                index: Some(1),
                error,
                ..
            }) => assert_eq!(error, "referential integrity violation"),
            other => panic!("{other:?}"),
        }
        assert_eq!(marked("queue", "sdb-client"), before);
        assert!(marked("qos", "sdb-client").is_empty());
        // A wait that fails at once.
        match c
            .transact(
                "Open_vSwitch",
                vec![op::wait(
                    "Port",
                    vec![op::cond("name", op::Function::Eq, json!("sdb-no-such-port"))],
                    &["qos"],
                    op::Until::Eq,
                    vec![json!({"qos": op::set(vec![])})],
                    Some(0),
                )],
            )
            .await
        {
            Err(OvsdbError::Transaction {
                index: Some(0),
                error,
                ..
            }) => assert_eq!(error, "timed out"),
            other => panic!("{other:?}"),
        }
        c.close().await;
        assert!(matches!(
            c.list_dbs().await,
            Err(OvsdbError::Disconnected { .. })
        ));
    });
}

#[test]
fn queue_reservations_on_real_ovs() {
    assert!(is_root(), "needs root (OVS, namespaces)");
    ensure_ovs().unwrap();
    let _lock = e2e_lock().unwrap();
    let br = OvsBridge::new("sdb-br0", 0x5db0).unwrap();
    br.ofctl("add-flow", &["priority=0,actions=NORMAL"])
        .unwrap();
    let h1 = NsHost::new(
        "sdb-h1",
        &br,
        "sdb-p1",
        1,
        "02:00:00:5d:b0:01",
        "10.93.0.1",
        24,
    )
    .unwrap();
    let h2 = NsHost::new(
        "sdb-h2",
        &br,
        "sdb-p2",
        2,
        "02:00:00:5d:b0:02",
        "10.93.0.2",
        24,
    )
    .unwrap();
    let _rows = RowsGuard;
    assert!(h1.ping(&h2.ip, 3), "no connectivity through sdb-br0");
    let _s1 = h2.ns.spawn("iperf3", &["-s", "-p", "5201"]).unwrap();
    let _s2 = h2.ns.spawn("iperf3", &["-s", "-p", "5202"]).unwrap();
    wait_for("iperf3 servers", Duration::from_secs(5), || {
        let ss = h2.ns.exec("ss", &["-ltn"]).ok()?;
        (ss.contains(":5201") && ss.contains(":5202")).then_some(())
    })
    .unwrap();

    let rt = rt();
    let client = rt.block_on(OvsdbClient::connect(DEFAULT_TARGET)).unwrap();
    let qm = QueueManager::new(client.clone(), Arc::new(SystemTc::new()));
    // A previous run that died may have left rows behind.
    rt.block_on(qm.cleanup_all("sdb-")).unwrap();
    let classifier = TcpMatch {
        src: h1.ip.parse().unwrap(),
        dst: h2.ip.parse().unwrap(),
        dst_port: 5201,
    };

    // --- reserve --------------------------------------------------------
    let r = rt
        .block_on(qm.reserve("sdb-mig-1", "sdb-p2", LINK, RATE, Some(classifier)))
        .unwrap();
    assert_eq!(r.port, "sdb-p2");
    assert_eq!(r.queue_uuids.len(), 2);
    assert!(r.attached);
    assert_eq!(marked("qos", "sdb-mig-1"), vec![r.qos_uuid.clone()]);
    let mut queues = marked("queue", "sdb-mig-1");
    queues.sort();
    let mut expected_queues = r.queue_uuids.clone();
    expected_queues.sort();
    assert_eq!(queues, expected_queues);
    assert_eq!(vsctl(&["get", "port", "sdb-p2", "qos"]), r.qos_uuid);
    assert_eq!(vsctl(&["get", "port", "sdb-p1", "qos"]), "[]");
    assert_eq!(vsctl(&["get", "qos", &r.qos_uuid, "type"]), "linux-htb");
    assert_eq!(
        vsctl(&["get", "qos", &r.qos_uuid, "other_config"]),
        "{max-rate=\"100000000\"}"
    );
    assert_eq!(
        vsctl(&["get", "qos", &r.qos_uuid, "queues"]),
        format!("{{0={}, 1={}}}", r.queue_uuids[0], r.queue_uuids[1])
    );
    assert_eq!(
        vsctl(&["get", "queue", &r.queue_uuids[0], "other_config"]),
        "{max-rate=\"100000000\", min-rate=\"80000000\"}"
    );
    assert_eq!(
        vsctl(&["get", "queue", &r.queue_uuids[1], "other_config"]),
        "{max-rate=\"20000000\", min-rate=\"20000000\"}"
    );
    let ext = vsctl(&["get", "qos", &r.qos_uuid, "external_ids"]);
    for kv in [
        "shoal-migration=sdb-mig-1",
        "shoal-port=sdb-p2",
        "shoal-rate-bps=\"20000000\"",
        "shoal-classifier=\"10.93.0.1>10.93.0.2:5201\"",
    ] {
        assert!(ext.contains(kv), "{kv} not in {ext}");
    }

    let classes = tc(&["class", "show", "dev", "sdb-p2"]);
    let class = |id: &str| {
        classes
            .lines()
            .find(|l| l.starts_with(&format!("class htb {id} ")))
            .unwrap_or_else(|| panic!("no class {id} in\n{classes}"))
            .to_string()
    };
    assert!(class("1:2").contains("parent 1:fffe"), "{classes}");
    assert!(
        class("1:2").contains("rate 20Mbit ceil 20Mbit"),
        "{classes}"
    );
    assert!(
        class("1:1").contains("rate 80Mbit ceil 100Mbit"),
        "{classes}"
    );
    assert!(class("1:fffe").contains("rate 100Mbit"), "{classes}");
    assert_eq!(classes.lines().count(), 3, "{classes}");
    let filters = tc(&["filter", "show", "dev", "sdb-p2"]);
    for want in [
        "flowid 1:2",
        "match 00060000/00ff0000 at 8",  // protocol tcp
        "match 0a5d0001/ffffffff at 12", // src 10.93.0.1
        "match 0a5d0002/ffffffff at 16", // dst 10.93.0.2
        "match 00001451/0000ffff at 20", // dport 5201
    ] {
        assert!(filters.contains(want), "{want} not in\n{filters}");
    }
    assert_eq!(filters.matches("flowid").count(), 1, "{filters}");
    assert!(tc(&["filter", "show", "dev", "sdb-p1"]).trim().is_empty());

    // list / find see it.
    let listed: Vec<QueueReservation> = rt
        .block_on(qm.list())
        .unwrap()
        .into_iter()
        .filter(|x| x.migration_id.starts_with("sdb-"))
        .collect();
    assert_eq!(listed, vec![r.clone()]);
    assert_eq!(rt.block_on(qm.find("sdb-mig-1")).unwrap(), vec![r.clone()]);

    // --- refusals leave nothing behind ----------------------------------
    match rt.block_on(qm.reserve("sdb-mig-2", "sdb-p2", LINK, RATE, None)) {
        Err(QueueError::PortBusy { port, qos, owner }) => {
            assert_eq!(port, "sdb-p2");
            assert_eq!(qos, r.qos_uuid);
            assert_eq!(owner.as_deref(), Some("sdb-mig-1"));
        }
        other => panic!("{other:?}"),
    }
    match rt.block_on(qm.reserve("sdb-mig-2", "sdb-nope", LINK, RATE, None)) {
        Err(QueueError::PortNotFound { port }) => assert_eq!(port, "sdb-nope"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rt.block_on(qm.reserve("sdb-mig-2", "sdb-p1", RATE, LINK, None)),
        Err(QueueError::Invalid(_))
    ));
    assert!(marked("qos", "sdb-mig-2").is_empty());
    assert!(marked("queue", "sdb-mig-2").is_empty());
    assert_eq!(vsctl(&["get", "port", "sdb-p1", "qos"]), "[]");

    // --- the reservation shapes traffic ---------------------------------
    let held = iperf(&h1, &h2, 5201);
    let free = iperf(&h1, &h2, 5202);
    eprintln!(
        "classified flow: {:.1} Mbit/s, unclassified: {:.1} Mbit/s",
        held / 1e6,
        free / 1e6
    );
    assert!(
        (16e6..=24e6).contains(&held),
        "classified flow at {held} bit/s, want 20 Mbit/s ± 20 %"
    );
    assert!(
        free > 30e6,
        "unclassified flow at {free} bit/s should not be held to 20 Mbit/s"
    );

    // --- release ----------------------------------------------------------
    assert!(rt.block_on(qm.release(&r)).unwrap());
    assert!(marked("qos", "sdb-").is_empty());
    assert!(marked("queue", "sdb-").is_empty());
    assert!(sh("ovs-vsctl", &["list", "qos", &r.qos_uuid]).is_err());
    for q in &r.queue_uuids {
        assert!(sh("ovs-vsctl", &["list", "queue", q]).is_err());
    }
    assert_eq!(vsctl(&["get", "port", "sdb-p2", "qos"]), "[]");
    assert!(tc(&["class", "show", "dev", "sdb-p2"]).trim().is_empty());
    assert!(tc(&["filter", "show", "dev", "sdb-p2"]).trim().is_empty());
    assert!(!tc(&["qdisc", "show", "dev", "sdb-p2"]).contains("htb"));
    // Idempotent.
    assert!(!rt.block_on(qm.release(&r)).unwrap());

    // --- leftovers of a crashed controller --------------------------------
    let other = rt.block_on(OvsdbClient::connect(DEFAULT_TARGET)).unwrap();
    let crashed = QueueManager::new(other.clone(), Arc::new(SystemTc::new()));
    let left1 = rt
        .block_on(crashed.reserve("sdb-left-1", "sdb-p2", LINK, RATE, Some(classifier)))
        .unwrap();
    let left2 = rt
        .block_on(crashed.reserve("sdb-left-2", "sdb-p1", LINK, 5_000_000, None))
        .unwrap();
    let keep = rt
        .block_on(crashed.reserve("sdb-keep-1", "sdb-p1", LINK, RATE, None))
        .unwrap_err();
    assert!(matches!(keep, QueueError::PortBusy { .. }));
    // A marked queue nobody references, and a reservation of another prefix.
    let orphan = vsctl(&[
        "create",
        "queue",
        "external_ids:shoal-migration=sdb-left-orphan",
    ]);
    let keep = vsctl(&[
        "create",
        "qos",
        "type=linux-htb",
        "external_ids:shoal-migration=sdb-keep-1",
    ]);
    rt.block_on(other.close());
    drop(crashed);

    let found = rt.block_on(qm.list()).unwrap();
    let mut mine: Vec<&QueueReservation> = found
        .iter()
        .filter(|x| x.migration_id.starts_with("sdb-left-"))
        .collect();
    mine.sort_by(|a, b| a.migration_id.cmp(&b.migration_id));
    assert_eq!(mine, vec![&left1, &left2]);
    assert!(found
        .iter()
        .any(|x| x.migration_id == "sdb-keep-1" && !x.attached));

    let report = rt.block_on(qm.cleanup_all("sdb-left-")).unwrap();
    let mut ids: Vec<&str> = report
        .released
        .iter()
        .map(|x| x.migration_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["sdb-left-1", "sdb-left-2"]);
    assert_eq!(report.orphan_queues, 1);
    assert!(marked("qos", "sdb-left-").is_empty());
    assert!(marked("queue", "sdb-left-").is_empty());
    assert!(sh("ovs-vsctl", &["list", "queue", &orphan]).is_err());
    assert_eq!(marked("qos", "sdb-keep-"), vec![keep.clone()]);
    for p in PORTS {
        assert_eq!(vsctl(&["get", "port", p, "qos"]), "[]");
        assert!(tc(&["class", "show", "dev", p]).trim().is_empty());
        assert!(tc(&["filter", "show", "dev", p]).trim().is_empty());
    }
    let report = rt.block_on(qm.cleanup_all("sdb-keep-")).unwrap();
    assert_eq!(report.released.len(), 1);
    assert!(marked("qos", "sdb-").is_empty());
    rt.block_on(client.close());
}

/// `tc` that fails `filter add` (everything else runs for real).
struct FailingFilterAdd(SystemTc);

impl TcRunner for FailingFilterAdd {
    fn tc<'a>(&'a self, args: &'a [String]) -> TcFuture<'a> {
        if args.first().map(String::as_str) == Some("filter")
            && args.get(1).map(String::as_str) == Some("add")
        {
            return Box::pin(async { Err("injected failure".to_string()) });
        }
        self.0.tc(args)
    }
}

#[test]
fn failed_classifier_rolls_the_reservation_back() {
    assert!(is_root(), "needs root (OVS)");
    ensure_ovs().unwrap();
    let _lock = e2e_lock().unwrap();
    let br = OvsBridge::new("sdb-br1", 0x5db1).unwrap();
    let _link = support::Veth::new("sdb-p3", "sdb-p3i").unwrap();
    br.add_port("sdb-p3", 3).unwrap();
    let _rows = RowsGuard;
    let rt = rt();
    let client = rt.block_on(OvsdbClient::connect(DEFAULT_TARGET)).unwrap();
    let qm = QueueManager::new(client, Arc::new(FailingFilterAdd(SystemTc::new())));
    let m = TcpMatch {
        src: "10.93.1.1".parse().unwrap(),
        dst: "10.93.1.2".parse().unwrap(),
        dst_port: 7000,
    };
    match rt.block_on(qm.reserve("sdb-fail-1", "sdb-p3", LINK, RATE, Some(m))) {
        Err(QueueError::Tc { command, why }) => {
            assert!(command.starts_with("filter add dev sdb-p3"), "{command}");
            assert_eq!(why, "injected failure");
        }
        other => panic!("{other:?}"),
    }
    assert!(marked("qos", "sdb-fail-").is_empty());
    assert!(marked("queue", "sdb-fail-").is_empty());
    assert_eq!(vsctl(&["get", "port", "sdb-p3", "qos"]), "[]");
    assert!(tc(&["class", "show", "dev", "sdb-p3"]).trim().is_empty());
}

#[test]
fn vswitchd_that_never_applies_is_an_error_not_a_hang() {
    assert!(is_root(), "needs root (namespaces, OVS)");
    let _lock = e2e_lock().unwrap();
    // A private instance, so that its ovs-vswitchd may be killed.
    let ovs = PrivateOvs::start("sdb-ovs", 93).unwrap();
    let o = ovs.ovs();
    o.run(
        "ovs-vsctl",
        &[
            "add-br",
            "sdb-pbr",
            "--",
            "set",
            "bridge",
            "sdb-pbr",
            "datapath_type=netdev",
            "--",
            "add-port",
            "sdb-pbr",
            "sdb-px",
            "--",
            "set",
            "interface",
            "sdb-px",
            "type=internal",
        ],
    )
    .unwrap();
    ovs.kill_vswitchd().unwrap();
    let rundir = std::env::temp_dir().join("shoal-ovs-sdb-ovs");
    let target = format!("unix:{}", rundir.join("db.sock").display());
    let rt = rt();
    let client = rt.block_on(OvsdbClient::connect(&target)).unwrap();
    let qm = QueueManager::with_config(
        client,
        Arc::new(SystemTc::in_netns("sdb-ovs")),
        QueueConfig {
            apply_timeout: Duration::from_millis(500),
            ..QueueConfig::default()
        },
    );
    let started = std::time::Instant::now();
    match rt.block_on(qm.reserve("sdb-na-1", "sdb-px", LINK, RATE, None)) {
        Err(QueueError::NotApplied { after, .. }) => {
            assert_eq!(after, Duration::from_millis(500))
        }
        other => panic!("{other:?}"),
    }
    // Rolled back (the rollback's own wait times out too: only logged).
    assert!(started.elapsed() < Duration::from_secs(5));
    let qos = o
        .run(
            "ovs-vsctl",
            &["--no-wait", "--bare", "--columns=_uuid", "list", "qos"],
        )
        .unwrap();
    let queues = o
        .run(
            "ovs-vsctl",
            &["--no-wait", "--bare", "--columns=_uuid", "list", "queue"],
        )
        .unwrap();
    assert!(
        qos.trim().is_empty() && queues.trim().is_empty(),
        "{qos} {queues}"
    );
    assert!(rt.block_on(qm.list()).unwrap().is_empty());
}
