//! Shoal as a cluster on etcd, end to end: a real 3-member etcd cluster on
//! loopback ports, three `shoal-controller` nodes, and five Open vSwitch
//! bridges (private instance) connected to all three:
//!
//! ```text
//!                   agg (0x11)
//!        /1       |2       |3       \4
//!      10/      10|      10|       10\
//!   hv1 (0x21) hv2 (0x22) hv3 (0x23) hv4 (0x24)
//!     |1         |1         |1         |1
//!     h1         h2         h3         h4
//! ```
//!
//! Checks, in order:
//! 1. masterships balanced (each node masters 1 or 2 of the 5 switches),
//!    every node sees the same assignment and the whole topology, and the
//!    switches themselves report one MASTER (the assigned node) each;
//! 2. all hosts ping; λ of a UDP flow whose path crosses switches mastered
//!    by different nodes is right within ±10 %;
//! 3. `kill -9` of the leader: a new leader and a master for every switch
//!    (granted by the switches) within 3 s; an established ping loses no
//!    packet, a new pair's ping at most 3 s worth;
//! 4. SIGSTOP of the (new) leader past its lease, traffic meanwhile,
//!    SIGCONT: it withholds every write it had queued (none reaches a
//!    switch: no `IS_SLAVE` error in its log), then rejoins as follower;
//! 5. one etcd member killed: nothing changes; a second one killed (no
//!    quorum): every node says it is not acting (`/healthz` 503), while an
//!    established ping keeps flowing.
//!
//! `reserved_migration_survives_the_leaders_kill`: the leader killed during
//! a reserved migration whose path crosses switches of all three nodes
//! (see its comment).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::cluster::*;
use support::etcd::EtcdCluster;
use support::{e2e_lock, free_port, get_json, is_root, wait_for, ChildGuard, TempDir};

#[test]
fn cluster_on_etcd() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    for tool in ["ovs-vswitchd", "iperf3", "ping", "etcd", "etcdctl"] {
        assert!(
            Command::new("which")
                .arg(tool)
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false),
            "{tool} is missing: run the README's test command, which installs it"
        );
    }
    let net = build("shcl", 31);
    let mut etcd = EtcdCluster::start(3).expect("etcd cluster");
    let dir = TempDir::new("shoal-cluster").unwrap();
    support::creds::write_secret(
        &dir.path().join("lldp.key"),
        "cluster-lldp-secret-0123456789abcdef",
    )
    .unwrap();
    let auth = support::creds::controller_auth(dir.path(), &["shcl-hd"]).unwrap();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| start_node(dir.path(), &net, &etcd, &auth, i))
        .collect();
    for n in &nodes {
        wait_for("the API", Duration::from_secs(20), || {
            get_json(&n.api, "/api/v1/cluster").ok()
        })
        .unwrap();
    }
    connect_all(&net, &nodes);

    // 1. Balanced masterships, the same on every node, granted by OVS.
    let live: BTreeSet<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let v = wait_for(
        "every switch mastered by a node, as the switches say",
        Duration::from_secs(30),
        || {
            let v = view(&nodes[0])?;
            (all_granted(&nodes, &v, &live) && all_mastered(&net, &nodes, &v, &live)).then_some(v)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?} / {:?}", view(&nodes[0]), ovs_masters(&net)));
    let m = masters(&v);
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for n in m.values() {
        *load.entry(n.as_str()).or_default() += 1;
    }
    assert_eq!(load.len(), 3, "every node masters a switch: {m:?}");
    assert!(load.values().all(|&c| c == 1 || c == 2), "{load:?}");
    for n in &nodes[1..] {
        let w = wait_for(
            "the same assignment everywhere",
            Duration::from_secs(5),
            || view(n).filter(|w| masters(w) == m),
        )
        .unwrap();
        assert_eq!(leader_of(&w), leader_of(&v));
    }
    // A host daemon talks to the first node that answers; every node
    // learns the host and its reports through the shared store (etcd).
    let hd_api = format!("127.0.0.1:{}", free_port().unwrap());
    let hcfg = format!(
        "host_id = \"shcl-hd\"\ncontrollers = [{}]\nlisten = \"{hd_api}\"\n{}interval_s = 0.5\nrun_dir = \"{}\"\nhttp_timeout_s = 1\n",
        nodes
            .iter()
            .map(|n| format!("\"http://{}\"", n.api))
            .collect::<Vec<_>>()
            .join(", "),
        support::creds::hostd_auth(dir.path(), "shcl-hd"),
        dir.path().join("hd-run").display()
    );
    let _hd =
        support::qemu::Hostd::start(None, &dir.path().join("hd"), &hcfg, &hd_api).expect("hostd");
    let host_seen = |n: &Node, max_age: f64| {
        let h = get_json(&n.api, "/api/v1/hosts").ok()?;
        h.as_array()?
            .iter()
            .find(|x| {
                x["id"] == "shcl-hd"
                    && x["history_len"].as_u64().unwrap_or(0) >= 2
                    && x["last_report_age_s"].as_f64().is_some_and(|a| a < max_age)
            })
            .map(|_| ())
    };
    for n in &nodes {
        wait_for(
            "the host and its reports on every node",
            Duration::from_secs(15),
            || host_seen(n, 3.0),
        )
        .unwrap_or_else(|e| panic!("{e} ({}): {:?}", n.id, get_json(&n.api, "/api/v1/hosts")));
    }
    relay_checks(&net, &nodes, &etcd, &v);
    // A follower sends leader-only writes to the leader (307), serves reads.
    let leader0 = leader_of(&v).expect("a leader");
    let lapi = &nodes.iter().find(|n| n.id == leader0).unwrap().api;
    let follower = nodes.iter().find(|n| n.id != leader0).unwrap();
    let (code, body) = support::http(
        &follower.api,
        "PUT",
        "/api/v1/policy",
        Some(support::creds::OPERATOR_TOKEN),
        Some(r#"{"name":"none"}"#),
    )
    .unwrap();
    assert_eq!(code, 307, "{body}");
    assert!(
        body.contains(&format!("http://{lapi}/api/v1/policy")),
        "{body}"
    );
    // Every node sees the whole fabric (its slaves report to it too).
    for n in &nodes {
        wait_for(
            "8 link directions on every node",
            Duration::from_secs(30),
            || {
                let l = get_json(&n.api, "/api/v1/links").ok()?;
                (l.as_array()?.len() == 8).then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e} ({})", n.id));
    }
    std::thread::sleep(Duration::from_secs(2));

    // 2. All hosts ping; λ across switches of different masters.
    for i in 0..4 {
        for j in 0..4 {
            if i != j {
                assert!(
                    net.hosts[i].ping(&net.hosts[j].ip, 3),
                    "h{} cannot ping h{}",
                    i + 1,
                    j + 1
                );
            }
        }
    }
    let (si, di) = (0..4)
        .flat_map(|i| (0..4).map(move |j| (i, j)))
        .find(|&(i, j)| i != j && m[&EDGES[i]] != m[&EDGES[j]])
        .expect("two edges with different masters");
    let leader = leader_of(&v).expect("a leader");
    let lnode = nodes.iter().find(|n| n.id == leader).unwrap();
    let port = free_port().unwrap();
    let _srv = ChildGuard::spawn(
        net.hosts[di]
            .ns
            .command("iperf3", &["-s", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mbit = 8.0;
    let client = net.hosts[si]
        .ns
        .command(
            "iperf3",
            &[
                "-c",
                &net.hosts[di].ip,
                "-p",
                &port.to_string(),
                "-u",
                "-b",
                &format!("{mbit}M"),
                "-l",
                &(PAYLOAD as u32).to_string(),
                "-t",
                "16",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs_f64(INTERVAL_S * 4.0));
    let want = mbit * 1e6 / 8.0 / PAYLOAD * FRAME;
    let (src, dst) = (&net.hosts[si].mac, &net.hosts[di].mac);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let tm = get_json(&lnode.api, "/api/v1/traffic-matrix").unwrap();
        let r = tm["pairs"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["src"] == *src && p["dst"] == *dst))
            .and_then(|p| p["bytes_per_s"].as_f64())
            .unwrap_or(0.0);
        seen.push(r);
        std::thread::sleep(Duration::from_secs_f64(INTERVAL_S));
    }
    let mut _c = client;
    let _ = _c.wait();
    seen.sort_by(f64::total_cmp);
    let lambda = seen[seen.len() / 2];
    assert!(
        (lambda - want).abs() <= 0.10 * want,
        "λ(h{}→h{}) = {lambda:.0} B/s, want {want:.0} ±10 % (readings {seen:?}; masters {} and {})",
        si + 1,
        di + 1,
        m[&EDGES[si]],
        m[&EDGES[di]]
    );
    eprintln!(
        "λ across masters {} → {}: {lambda:.0} B/s (want {want:.0}; readings {seen:?})",
        m[&EDGES[si]], m[&EDGES[di]]
    );

    // 3. kill -9 of the leader while idle (an established ping running).
    let established = ping_bg(&net.hosts[0], &net.hosts[3].ip.clone(), "0.1", 60);
    std::thread::sleep(Duration::from_millis(600));
    let li = nodes.iter().position(|n| n.id == leader).unwrap();
    let newflow = ping_bg(&net.hosts[1], &net.hosts[2].ip.clone(), "0.1", 50);
    let t0 = Instant::now();
    if let Some(mut c) = nodes[li].child.take() {
        c.signal("KILL").unwrap();
        c.wait();
    }
    let survivors: BTreeSet<String> = live.iter().filter(|n| **n != leader).cloned().collect();
    let other = nodes.iter().find(|n| n.id != leader).unwrap();
    let mut t_leader = None;
    let failover = loop {
        let el = t0.elapsed();
        if let Some(v) = view(other) {
            if t_leader.is_none() && leader_of(&v).is_some_and(|l| survivors.contains(&l)) {
                t_leader = Some(el);
            }
            if t_leader.is_some() && all_granted(&nodes, &v, &survivors) {
                break el;
            }
        }
        assert!(
            el < Duration::from_secs(10),
            "no failover within 10 s: {:?}",
            view(other)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "failover after kill -9: leader in {:?}, every switch mastered in {failover:?}",
        t_leader
    );
    assert!(
        failover <= Duration::from_secs(3),
        "new leader {:?}, all switches mastered {failover:?} after the kill (bound 3 s)",
        t_leader
    );
    wait_for(
        "OVSDB to show the survivors as the masters",
        Duration::from_secs(15),
        || {
            let v = view(other)?;
            all_mastered(&net, &nodes, &v, &survivors).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", ovs_masters(&net)));
    let (sent, rcvd) = ping_stats(&established.wait_with_output().unwrap());
    assert!(sent >= 50, "ping ran: {sent}");
    assert_eq!(
        sent, rcvd,
        "established flow lost packets across the failover"
    );
    let (sent2, rcvd2) = ping_stats(&newflow.wait_with_output().unwrap());
    assert!(
        sent2 - rcvd2 <= 30,
        "new-flow ping lost {} of {sent2} (at most 3 s worth at 10/s)",
        sent2 - rcvd2
    );
    // The host daemon's reports keep reaching every survivor (it fails
    // over when its node was the one killed).
    for n in nodes.iter().filter(|n| n.child.is_some()) {
        wait_for(
            "fresh reports on every survivor",
            Duration::from_secs(15),
            || host_seen(n, 2.0),
        )
        .unwrap_or_else(|e| panic!("{e} ({}): {:?}", n.id, get_json(&n.api, "/api/v1/hosts")));
    }
    let v2 = view(other).unwrap();
    let leader2 = leader_of(&v2).unwrap();
    let masters2 = masters(&v2);
    let load2: BTreeMap<&String, usize> = masters2.values().fold(BTreeMap::new(), |mut a, n| {
        *a.entry(n).or_default() += 1;
        a
    });
    assert!(load2.values().all(|&c| c == 2 || c == 3), "{load2:?}");

    // 4. SIGSTOP of the new leader past its lease, traffic, SIGCONT.
    let l2 = nodes.iter().position(|n| n.id == leader2).unwrap();
    let log_before = std::fs::read_to_string(&nodes[l2].log)
        .unwrap_or_default()
        .len();
    let vs_before = vswitchd_log_len(&net);
    nodes[l2].child.as_ref().unwrap().signal("STOP").unwrap();
    let t1 = Instant::now();
    let rest: BTreeSet<String> = survivors
        .iter()
        .filter(|n| **n != leader2)
        .cloned()
        .collect();
    let third = nodes.iter().find(|n| rest.contains(&n.id)).unwrap();
    wait_for(
        "the last node to lead and master everything",
        Duration::from_secs(10),
        || {
            let v = view(third)?;
            (leader_of(&v).is_some_and(|l| rest.contains(&l)) && all_granted(&nodes, &v, &rest))
                .then_some(())
        },
    )
    .unwrap();
    eprintln!("paused leader replaced after {:?}", t1.elapsed());
    // New flows while it sleeps: their PACKET_INs queue on its sockets.
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..4 {
        let j = (i + 1) % 4;
        let _ = net.hosts[i].ping(&net.hosts[j].ip, 1);
    }
    assert!(
        t1.elapsed() > Duration::from_secs(4),
        "paused past the lease"
    );
    nodes[l2].child.as_ref().unwrap().signal("CONT").unwrap();
    let back = wait_for(
        "the paused node to rejoin as follower",
        Duration::from_secs(15),
        || {
            let v = view(&nodes[l2])?;
            let me_listed = v["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["id"] == nodes[l2].id.as_str());
            (v["acting"] == true && v["is_leader"] == false && me_listed).then_some(v)
        },
    )
    .unwrap();
    assert_ne!(leader_of(&back).as_deref(), Some(leader2.as_str()));
    eprintln!(
        "paused node back as follower; withheld {} OpenFlow messages",
        back["writes_withheld"]
    );
    std::thread::sleep(Duration::from_secs(2));
    let log = std::fs::read_to_string(&nodes[l2].log).unwrap_or_default();
    let after = &log[log_before.min(log.len())..];
    let refused: Vec<&str> = after
        .lines()
        .filter(|l| l.contains("switch error") || l.contains("IsSlave") || l.contains("IS_SLAVE"))
        .collect();
    assert!(
        refused.is_empty(),
        "a switch refused writes of the resumed node (so it sent some):\n{}",
        refused.join("\n")
    );
    // The switches' own account: ovs-vswitchd logs the error replies it
    // sends (`sending OFPBRC_IS_SECONDARY error reply to OFPT_FLOW_MOD
    // message`).
    let refused = refused_by_switches(&net, &nodes[l2], vs_before);
    assert!(
        refused.is_empty(),
        "ovs-vswitchd refused writes of the resumed node:\n{}",
        refused.join("\n")
    );

    // 4b. The leader cut off from etcd (a partition; it keeps running and
    // keeps its switch connections): its lease runs out, it stops acting
    // and says so, the other node takes every switch, and not one write of
    // the cut-off node reaches a switch. Healed, it acts again.
    let v = view(&nodes[l2]).unwrap();
    let leader3 = leader_of(&v).unwrap();
    let cut = nodes.iter().position(|n| n.id == leader3).unwrap();
    let other2: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.child.is_some() && n.id != leader3)
        .map(|n| n.id.clone())
        .collect();
    let log_before = std::fs::read_to_string(&nodes[cut].log)
        .unwrap_or_default()
        .len();
    let vs_before = vswitchd_log_len(&net);
    nodes[cut].proxy.freeze();
    let t2 = Instant::now();
    let survivor = nodes.iter().find(|n| other2.contains(&n.id)).unwrap();
    wait_for(
        "the other node to take over from the cut-off leader",
        Duration::from_secs(10),
        || {
            let v = view(survivor)?;
            (leader_of(&v).is_some_and(|l| other2.contains(&l)) && all_granted(&nodes, &v, &other2))
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", view(survivor)));
    eprintln!("cut-off leader replaced after {:?}", t2.elapsed());
    let (code, body) = healthz(&nodes[cut]);
    assert_eq!(code, 503, "the cut-off node still claims to act: {body}");
    // New flows and LLDP rounds while it is cut off.
    for i in 0..4 {
        let j = (i + 2) % 4;
        let _ = net.hosts[i].ping(&net.hosts[j].ip, 1);
    }
    std::thread::sleep(Duration::from_secs(3));
    let log = std::fs::read_to_string(&nodes[cut].log).unwrap_or_default();
    let after = &log[log_before.min(log.len())..];
    let refused: Vec<&str> = after
        .lines()
        .filter(|l| l.contains("switch error"))
        .collect();
    assert!(
        refused.is_empty(),
        "a switch refused writes of the cut-off node (so it sent some):\n{}",
        refused.join("\n")
    );
    let refused = refused_by_switches(&net, &nodes[cut], vs_before);
    assert!(
        refused.is_empty(),
        "ovs-vswitchd refused writes of the cut-off node:\n{}",
        refused.join("\n")
    );
    assert!(
        after.contains("is not acting"),
        "the cut-off node did not log it"
    );
    nodes[cut].proxy.thaw();
    wait_for(
        "the healed node to act again",
        Duration::from_secs(15),
        || {
            let (code, _) = healthz(&nodes[cut]);
            let v = view(&nodes[cut])?;
            (code == 200 && v["acting"] == true).then_some(())
        },
    )
    .unwrap();
    let both: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.child.is_some())
        .map(|n| n.id.clone())
        .collect();
    wait_for(
        "masterships balanced over both nodes again",
        Duration::from_secs(15),
        || {
            let v = view(survivor)?;
            let m = masters(&v);
            let ok = both
                .iter()
                .all(|b| (2..=3).contains(&m.values().filter(|n| *n == b).count()));
            (ok && all_granted(&nodes, &v, &both)).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", view(survivor)));

    // 5. One etcd member lost: nothing changes.
    let before = view(third).unwrap();
    etcd.kill(2);
    std::thread::sleep(Duration::from_secs(4));
    for n in nodes.iter().filter(|n| n.child.is_some()) {
        let (code, body) = healthz(n);
        assert_eq!(code, 200, "{} after losing one etcd member: {body}", n.id);
    }
    let after1 = view(third).unwrap();
    assert_eq!(leader_of(&after1), leader_of(&before));
    assert_eq!(after1["masters"], before["masters"], "masterships moved");
    assert!(net.hosts[0].ping(&net.hosts[3].ip, 2));

    // Quorum lost: every node stops acting and says so; established
    // traffic keeps flowing.
    let established = ping_bg(&net.hosts[0], &net.hosts[3].ip.clone(), "0.1", 60);
    std::thread::sleep(Duration::from_millis(300));
    etcd.kill(1);
    let live_nodes: Vec<&Node> = nodes.iter().filter(|n| n.child.is_some()).collect();
    wait_for("every node to stop acting", Duration::from_secs(8), || {
        live_nodes
            .iter()
            .all(|n| {
                let (code, body) = healthz(n);
                code == 503 && body.contains("not acting")
            })
            .then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}",
            live_nodes.iter().map(|n| healthz(n)).collect::<Vec<_>>()
        )
    });
    let (sent, rcvd) = ping_stats(&established.wait_with_output().unwrap());
    assert_eq!(
        sent, rcvd,
        "established flow lost packets when etcd lost its quorum"
    );
    for n in &live_nodes {
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        assert!(
            log.contains("is not acting"),
            "{} did not log that it stopped acting",
            n.id
        );
    }
    if let Ok(keep) = std::env::var("SHOAL_CLUSTER_TEST_LOGS") {
        for n in &nodes {
            let _ = std::fs::copy(
                &n.log,
                std::path::Path::new(&keep).join(format!("{}.log", n.id)),
            );
        }
    }
    drop(nodes);
}

/// The leader's reservation writes for a switch another node masters go
/// through that master (`controller/src/cluster/relay.rs`): driven here by
/// the leader's relay client, in this process, with the leader's key; and
/// hostile or stale requests written straight into etcd are refused by the
/// master without touching the switch.
fn relay_checks(net: &Net, _nodes: &[Node], etcd: &EtcdCluster, v: &serde_json::Value) {
    use ofp::{FlowMod, FlowModCommand, Message, MeterBand, MeterMod, MeterModCommand, OfpMessage};
    use shoal_controller::cluster::relay::Relay;
    use shoal_controller::knowledge::cluster::{ClusterView, Fence};
    let leader = leader_of(v).expect("a leader");
    let key = v["leader_key"]["key"]
        .as_str()
        .expect("leader key")
        .to_string();
    let rev = v["leader_key"]["revision"]
        .as_i64()
        .expect("leader revision");
    let (&dpid, master) = masters(v)
        .iter()
        .find(|(_, n)| **n != leader)
        .map(|(d, n)| (d, n.clone()))
        .expect("a switch another node masters");
    let bridge = net
        .bridges
        .iter()
        .find(|b| b.name() == bridge_name(net, dpid))
        .expect("its bridge");
    let view = ClusterView {
        node_id: leader.clone(),
        is_leader: true,
        leader: Some(leader.clone()),
        leader_key: Some((key, rev)),
        lease_valid_until: Some(Instant::now() + Duration::from_secs(600)),
        ..ClusterView::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(view);
    let cfg = shoal_controller::config::ClusterSettings {
        endpoints: etcd.endpoints().split(',').map(str::to_string).collect(),
        node_id: leader.clone(),
        lease_ttl: Duration::from_secs(2),
        prefix: "/shoal-test".into(),
        advertise_api: "http://127.0.0.1:1".into(),
        tls: None,
    };
    let relay = Relay::new(cfg, Fence::cluster(rx));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let meter = |command| {
        Message::MeterMod(MeterMod {
            command,
            flags: ofp::meter_flags::KBPS,
            meter_id: 4242,
            bands: vec![MeterBand::Drop {
                rate: 10_000,
                burst_size: 0,
            }],
        })
    };
    let meters = || bridge.ofctl("dump-meters", &[]).unwrap_or_default();
    rt.block_on(relay.call(dpid, vec![meter(MeterModCommand::Add)]))
        .unwrap_or_else(|e| panic!("relayed meter through {master}: {e}"));
    assert!(meters().contains("meter=4242"), "{}", meters());
    // Hostile: a flow outside the migration range, written into etcd.
    let hexed = |m: Message| {
        let mut b = Vec::new();
        OfpMessage::new(1, m).encode(&mut b).unwrap();
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    let foreign = hexed(Message::FlowMod(FlowMod {
        command: FlowModCommand::Add,
        cookie: 0x1234,
        priority: 7,
        ..FlowMod::default()
    }));
    let raw = |id: &str, lrev: i64, msg: &str| {
        let k = format!("/shoal-test/relay/req/{dpid:016x}/{id}");
        let body = format!(r#"{{"leader":"{leader}","leader_rev":{lrev},"msgs":["{msg}"]}}"#);
        let ep = &etcd.members[0].client;
        let st = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", ep, "put", &k, &body])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        wait_for("the master's answer", Duration::from_secs(5), || {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", ep, "get", "--print-value-only"])
                .arg(format!("/shoal-test/relay/ack/{dpid:016x}/{id}"))
                .output()
                .ok()?;
            let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!t.is_empty()).then_some(t)
        })
        .unwrap()
    };
    let a = raw("t-foreign", rev, &foreign);
    assert!(a.contains("outside the migration range"), "{a}");
    let stale = raw("t-stale", rev - 1, &hexed(meter(MeterModCommand::Delete)));
    assert!(stale.contains("stale"), "{stale}");
    let flows = bridge.ofctl("dump-flows", &[]).unwrap_or_default();
    assert!(!flows.contains("cookie=0x1234"), "{flows}");
    assert!(
        meters().contains("meter=4242"),
        "the stale request deleted the meter"
    );
    rt.block_on(relay.call(dpid, vec![meter(MeterModCommand::Delete)]))
        .unwrap_or_else(|e| panic!("relayed meter delete: {e}"));
    assert!(!meters().contains("meter=4242"), "{}", meters());
}

/// Bytes in the private ovs-vswitchd's log now.
fn vswitchd_log_len(net: &Net) -> usize {
    std::fs::read(net.ovs.vswitchd_log())
        .map(|b| b.len())
        .unwrap_or(0)
}

/// Lines ovs-vswitchd logged since byte `from` about a write of node `n`
/// (its OpenFlow target) it refused: an `OFPBRC_IS_SECONDARY` error reply
/// (`OFPBRC_IS_SLAVE` before OVS 2.16). (A role request refused as stale is
/// the fence working, not a write.)
fn refused_by_switches(net: &Net, n: &Node, from: usize) -> Vec<String> {
    let log = std::fs::read(net.ovs.vswitchd_log()).unwrap_or_default();
    let after = String::from_utf8_lossy(&log[from.min(log.len())..]).into_owned();
    let target = format!("{}:{}", net.ovs.controller_ip(), n.of_port);
    after
        .lines()
        .filter(|l| l.contains(&target) && (l.contains("IS_SECONDARY") || l.contains("IS_SLAVE")))
        .map(str::to_string)
        .collect()
}

/// Issue 16, failover during a reserved migration ([`MigBed`]: three
/// nodes, three switches, each node the master of one switch of the path).
///
/// vm1 migrates h1 → h2 with reserved bandwidth (a meter and a flow on
/// each hop, written by the hop's master: the leader's own, the others
/// relayed). The leader is killed (`kill -9`) while the migration runs.
/// Checked: a new leader resumes following the migration (its record
/// advances), the reservations stay on every hop while it runs (kept until
/// done), it ends once, in the state that matches where the VM runs (asked
/// of both host daemons), each host daemon got exactly one command of it
/// (never sent again under a new id), and afterwards no meter or migration
/// flow is left. The killed node then rejoins as a follower and changes
/// nothing.
#[test]
fn reserved_migration_survives_the_leaders_kill() {
    use serde_json::{json, Value};
    use support::migration::{consistent, running_at, wait_state};

    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    let mut bed = mig_bed();
    let k = kill_leader_mid_migration(&mut bed, "h2");
    let (id, (new_leader, napi)) = (k.id.clone(), k.new_leader.clone());
    eprintln!(
        "leader {} killed: new leader {new_leader} after {:?}, migration followed on after {:?}: {}",
        bed.nodes[k.killed].id, k.t_leader, k.t_resumed, k.resumed["progress"]
    );
    // Reservations are kept until the migration ends: the new leader took
    // them over with the migration.
    assert_eq!(
        k.resumed["state"], "running",
        "the 20 s migration ended within {:?} of the kill: {}",
        k.t_resumed, k.resumed
    );
    assert_eq!(
        k.resumed["reservations"].as_array().map(Vec::len),
        Some(6),
        "the new leader holds the reservations: {}",
        k.resumed
    );
    std::thread::sleep(Duration::from_secs(2));
    let mid = get_json(&napi, &format!("/api/v1/migrations/{id}")).unwrap();
    assert_eq!(mid["state"], "running", "{mid}");
    assert!(
        all_hold(&bed.bridges),
        "reservations removed while the migration runs: {:?}",
        installed(&bed.bridges)
    );

    // It ends once, where the VM runs; nothing is left on the switches.
    let fin = wait_state(&napi, &id, &["done", "failed"], Duration::from_secs(60));
    eprintln!("the migration ended {}: {}", fin["state"], fin["error"]);
    let hostds = [("h1", &bed.hostds[0]), ("h2", &bed.hostds[1])];
    let at = consistent(&fin, MIG_VM, "h1", "h2", &hostds);
    assert_eq!(running_at(MIG_VM, &hostds), vec![at.clone()]);
    wait_for("no reservation left", Duration::from_secs(30), || {
        bed.bridges
            .iter()
            .all(|b| support::migration::reservations_on(b) == (0, 0))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", installed(&bed.bridges)));
    assert_eq!(fin["reservations"], json!([]), "{fin}");
    let commands = |hd: &support::qemu::Hostd| -> Vec<String> {
        let (code, body) = hd
            .call(
                "GET",
                "/api/v1/commands",
                support::creds::CONTROLLER_TOKEN,
                None,
            )
            .unwrap();
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| Some(c["id"].as_str()?.to_string()))
            .collect();
        ids.sort();
        ids
    };
    let once = (vec![format!("{id}-out")], vec![format!("{id}-in")]);
    assert_eq!(
        (commands(&bed.hostds[0]), commands(&bed.hostds[1])),
        once,
        "h1's and h2's commands"
    );
    for n in bed.nodes.iter().filter(|n| n.child.is_some()) {
        let m = get_json(&n.api, &format!("/api/v1/migrations/{id}")).unwrap();
        assert_eq!(m["state"], fin["state"], "{} says {m}", n.id);
    }
    let log = std::fs::read_to_string(&bed.nodes.iter().find(|n| n.id == new_leader).unwrap().log)
        .unwrap_or_default();
    assert!(
        log.contains("migrations taken over from the knowledge store"),
        "{log}"
    );

    // The killed node comes back as a follower and changes nothing.
    let li = k.killed;
    spawn_node(&mut bed.nodes[li]);
    let back = wait_for(
        "the old leader back as follower",
        Duration::from_secs(20),
        || {
            let w = view(&bed.nodes[li])?;
            (w["leader"] == new_leader.as_str() && w["nodes"].as_array()?.len() == 3).then_some(w)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", view(&bed.nodes[li])));
    assert_eq!(leader_of(&back).as_deref(), Some(new_leader.as_str()));
    std::thread::sleep(Duration::from_secs(3));
    let again = get_json(&napi, &format!("/api/v1/migrations/{id}")).unwrap();
    assert_eq!(
        (&again["state"], &again["ended_unix_ms"]),
        (&fin["state"], &fin["ended_unix_ms"]),
        "the final record changed: {again}"
    );
    assert_eq!((commands(&bed.hostds[0]), commands(&bed.hostds[1])), once);
    assert!(bed
        .bridges
        .iter()
        .all(|b| support::migration::reservations_on(b) == (0, 0)));
}
