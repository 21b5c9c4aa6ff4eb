//! The cluster test bed: five OVS bridges (aggregation + four edges, one
//! host each) in a private OVS instance, a real etcd cluster, and
//! `shoal-controller` nodes each reaching etcd through its own proxy (so a
//! test can cut one node off). Used by `tests/cluster.rs` and the failover
//! benchmark (`tests/cluster_failover.rs`, `bench/failover.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::etcd::{EtcdCluster, EtcdProxy};
use super::{cargo_bin, free_port, get_json, http, ChildGuard, NsHost, OvsBridge, PrivateOvs};

pub const INTERVAL_S: f64 = 2.0;
pub const PAYLOAD: f64 = 1400.0;
pub const FRAME: f64 = PAYLOAD + 42.0;
pub const EDGES: [u64; 4] = [0x21, 0x22, 0x23, 0x24];

pub struct Net {
    /// The hosts h1..h4.
    pub hosts: Vec<NsHost>,
    /// The bridges, aggregation first.
    pub bridges: Vec<OvsBridge>,
    /// The private OVS instance.
    pub ovs: PrivateOvs,
    /// Bridge name prefix.
    pub tag: String,
}

/// The five bridges and four hosts, names starting with `tag` (unique per
/// test binary; `n` picks the private OVS uplink subnet).
pub fn build(tag: &str, n: u8) -> Net {
    let ovs = PrivateOvs::start(tag, n).expect("private OVS");
    let o = ovs.ovs().clone();
    let agg = OvsBridge::new_in(&o, &format!("{tag}-agg"), 0x11).unwrap();
    let mut bridges = vec![];
    let mut hosts = vec![];
    for (i, &d) in EDGES.iter().enumerate() {
        let n = i + 1;
        let hv = OvsBridge::new_in(&o, &format!("{tag}-hv{n}"), d).unwrap();
        ovs.cable(
            &agg,
            (&format!("{tag}-a{n}"), n as u16),
            &hv,
            (&format!("{tag}-{n}a"), 10),
        )
        .unwrap();
        hosts.push(
            NsHost::new(
                &format!("{tag}-h{n}"),
                &hv,
                &format!("{tag}-p{n}"),
                1,
                &format!("02:00:00:00:78:0{n}"),
                &format!("10.78.0.{n}"),
                24,
            )
            .unwrap(),
        );
        bridges.push(hv);
    }
    bridges.insert(0, agg);
    Net {
        hosts,
        bridges,
        ovs,
        tag: tag.to_string(),
    }
}

pub struct Node {
    /// This node's way to etcd (freeze it to cut the node off).
    pub proxy: EtcdProxy,
    /// Node id (n1, n2, ...).
    pub id: String,
    /// REST API address.
    pub api: String,
    /// OpenFlow port.
    pub of_port: u16,
    /// Its log file.
    pub log: std::path::PathBuf,
    /// Its configuration file.
    pub cfg: std::path::PathBuf,
    /// The process (None once killed).
    pub child: Option<ChildGuard>,
}

/// Where a node listens and what its configuration adds.
#[derive(Debug, Clone, Default)]
pub struct NodeOpts {
    /// Address of the OpenFlow listener.
    pub of_ip: String,
    /// The API on 0.0.0.0 (hypervisor namespaces reach it over their
    /// management links), advertised as 127.0.0.1; else on 127.0.0.1.
    pub api_all: bool,
    /// Lines added to `[topology]`.
    pub topology: String,
    /// Sections appended to the file.
    pub extra: String,
}

/// Writes node `i`'s configuration (etcd through its own proxy) and starts it.
pub fn start_node(
    dir: &std::path::Path,
    net: &Net,
    etcd: &EtcdCluster,
    auth: &str,
    i: usize,
) -> Node {
    let opts = NodeOpts {
        of_ip: net.ovs.controller_ip(),
        ..NodeOpts::default()
    };
    start_node_with(dir, etcd, auth, i, &opts)
}

/// [`start_node`] with the listeners and additions of `opts`.
pub fn start_node_with(
    dir: &std::path::Path,
    etcd: &EtcdCluster,
    auth: &str,
    i: usize,
    opts: &NodeOpts,
) -> Node {
    let id = format!("n{}", i + 1);
    let proxy = EtcdProxy::start(etcd).unwrap();
    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let (listen, advertise) = if opts.api_all {
        (
            format!("0.0.0.0:{api_port}"),
            format!("advertise_api = \"http://{api}\"\n"),
        )
    } else {
        (api.clone(), String::new())
    };
    let cfg = dir.join(format!("{id}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"
of_listen = "{ip}:{of_port}"
api_listen = "{listen}"
db = ":memory:"
{auth}
[openflow]
echo_interval_s = 1.0
[topology]
lldp_interval_s = 1.0
link_timeout_s = 3.5
port_confirm_s = 1.5
lldp_secret_file = "{secret}"
{topology}
[forwarding]
pair_idle_timeout_s = 3
dest_idle_timeout_s = 10
[monitor]
interval_s = {INTERVAL_S}
window_intervals = 3
[cluster]
etcd_endpoints = [{eps:?}]
node_id = "{id}"
lease_ttl_s = 2
key_prefix = "/shoal-test"
{advertise}
{extra}
"#,
            ip = opts.of_ip,
            secret = dir.join("lldp.key").display(),
            eps = proxy.url,
            topology = opts.topology,
            extra = opts.extra,
        ),
    )
    .unwrap();
    let log = dir.join(format!("{id}.log"));
    let mut n = Node {
        proxy,
        id,
        api,
        of_port,
        log,
        cfg,
        child: None,
    };
    spawn_node(&mut n);
    n
}

/// (Re)starts node `n`'s process (its log is appended to).
pub fn spawn_node(n: &mut Node) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&n.log)
        .unwrap();
    n.child = Some(
        ChildGuard::spawn(
            Command::new(cargo_bin("shoal-controller"))
                .args(["run", "--config"])
                .arg(&n.cfg)
                .args(["--log", "info,shoal_controller=debug"])
                .stdout(Stdio::null())
                .stderr(log),
        )
        .unwrap(),
    );
}

/// `/api/v1/cluster` of a node.
pub fn view(n: &Node) -> Option<Value> {
    get_json(&n.api, "/api/v1/cluster").ok()
}

/// dpid → master node, from a view.
pub fn masters(v: &Value) -> BTreeMap<u64, String> {
    v["masters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    Some((
                        u64::from_str_radix(m["dpid"].as_str()?, 16).ok()?,
                        m["node"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// bridge → the OpenFlow target OVS reports as MASTER (at most one).
pub fn ovs_masters(net: &Net) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for b in &net.bridges {
        let Ok(ids) = b
            .ovs()
            .run("ovs-vsctl", &["get", "bridge", b.name(), "controller"])
        else {
            continue;
        };
        let mut m = Vec::new();
        for uuid in ids
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let role = b
                .ovs()
                .run("ovs-vsctl", &["get", "controller", uuid, "role"])
                .unwrap_or_default();
            if role.trim() == "master" {
                let t = b
                    .ovs()
                    .run("ovs-vsctl", &["get", "controller", uuid, "target"])
                    .unwrap_or_default();
                m.push(t.trim().trim_matches('"').to_string());
            }
        }
        out.insert(b.name().to_string(), m);
    }
    out
}

/// The bridge of datapath `dpid`.
pub fn bridge_name(net: &Net, dpid: u64) -> String {
    match dpid {
        0x11 => format!("{}-agg", net.tag),
        d => format!("{}-hv{}", net.tag, d - 0x20),
    }
}

/// Every switch has a live master in `v`, and that node says the switch
/// granted it MASTER (the switch's ROLE_REPLY to the assigned generation).
pub fn all_granted(nodes: &[Node], v: &Value, live: &BTreeSet<String>) -> bool {
    all_granted_of(nodes, v, live, 5)
}

/// [`all_granted`] for a fabric of `switches` switches.
pub fn all_granted_of(nodes: &[Node], v: &Value, live: &BTreeSet<String>, switches: usize) -> bool {
    let m = masters(v);
    if m.len() != switches || !m.values().all(|n| live.contains(n)) {
        return false;
    }
    let mut granted: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for n in nodes.iter().filter(|n| live.contains(&n.id)) {
        let Some(w) = view(n) else { return false };
        let set = w["granted_here"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| u64::from_str_radix(d.as_str()?, 16).ok())
                    .collect()
            })
            .unwrap_or_default();
        granted.insert(n.id.as_str(), set);
    }
    m.iter()
        .all(|(d, n)| granted.get(n.as_str()).is_some_and(|g| g.contains(d)))
}

/// Every switch has a live master in `v`, as the switches themselves tell
/// OVSDB (that node's target is the one MASTER; ovs-vswitchd refreshes the
/// Controller table's `role` column every few seconds).
pub fn all_mastered(net: &Net, nodes: &[Node], v: &Value, live: &BTreeSet<String>) -> bool {
    let m = masters(v);
    if m.len() != 5 || !m.values().all(|n| live.contains(n)) {
        return false;
    }
    let om = ovs_masters(net);
    let ip = net.ovs.controller_ip();
    m.iter().all(|(d, n)| {
        let node = nodes.iter().find(|x| &x.id == n).expect("known node");
        let target = format!("tcp:{ip}:{}", node.of_port);
        om.get(&bridge_name(net, *d)) == Some(&vec![target])
    })
}

pub fn leader_of(v: &Value) -> Option<String> {
    v["leader"].as_str().map(str::to_string)
}

pub fn ping_stats(out: &std::process::Output) -> (u32, u32) {
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        if let Some((sent, rest)) = line.split_once(" packets transmitted, ") {
            let rcvd = rest.split_whitespace().next().unwrap_or("0");
            return (sent.trim().parse().unwrap_or(0), rcvd.parse().unwrap_or(0));
        }
    }
    (0, 0)
}

pub fn ping_bg(from: &NsHost, to: &str, interval: &str, count: u32) -> std::process::Child {
    from.ns
        .command(
            "ping",
            &[
                "-i",
                interval,
                "-c",
                &count.to_string(),
                "-W",
                "1",
                "-q",
                to,
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ping")
}

pub fn healthz(n: &Node) -> (u16, String) {
    http(&n.api, "GET", "/healthz", None, None).unwrap_or((0, String::new()))
}

/// Points every bridge of `net` at every node (`ovs-vsctl set-controller
/// BR tcp:A tcp:B tcp:C`).
pub fn connect_all(net: &Net, nodes: &[Node]) {
    let ip = net.ovs.controller_ip();
    let targets: Vec<String> = nodes
        .iter()
        .map(|n| format!("tcp:{ip}:{}", n.of_port))
        .collect();
    for b in &net.bridges {
        let mut args = vec!["set-controller", b.name()];
        args.extend(targets.iter().map(String::as_str));
        b.ovs().run("ovs-vsctl", &args).unwrap();
    }
}

/// The migration bed of the cluster (issue 16): three nodes on a 3-member
/// etcd cluster and three switches on the system Open vSwitch, so that
/// each node masters exactly one switch of the migration's path:
///
/// ```text
///            scm-agg (0x6310)
///          1/            \2
///        10/              \10
///   scm-b1 (0x6301)      scm-b2 (0x6302)
///    |2 dom0 h1  |20 vm1  |2 dom0 h2  |20 vm2
/// ```
///
/// Two host daemons (netns backend) know every node and fail over between
/// them. Fields drop in order: daemons first, the directory last.
pub struct MigBed {
    /// Host daemons of h1 and h2.
    pub hostds: Vec<super::qemu::Hostd>,
    /// vm1 (migrated) and vm2 (its peer on b2).
    pub vms: Vec<NsHost>,
    /// Hypervisors h1 and h2.
    pub hvs: Vec<super::world::Hypervisor>,
    /// The two cables.
    pub cables: Vec<super::Veth>,
    /// b1, agg, b2.
    pub bridges: Vec<OvsBridge>,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// etcd.
    pub etcd: EtcdCluster,
    /// Configuration, logs, tokens.
    pub dir: super::TempDir,
}

/// vm1's name and MAC.
pub const MIG_VM: &str = "scm-vm1";
const MIG_VM_MAC: &str = "02:6b:00:00:00:01";

/// Builds [`MigBed`] and waits until every switch is mastered (one per
/// node), the leader sees both links, both hosts report and vm1 is on h1,
/// and vm2 reaches vm1.
pub fn mig_bed() -> MigBed {
    use super::world::Hypervisor;
    use super::{ensure_ovs, sh, wait_for, Veth};
    use std::time::Duration;
    ensure_ovs().unwrap();
    let dir = super::TempDir::new("shoal-clmig").unwrap();
    let d = dir.path();
    super::creds::write_secret(&d.join("lldp.key"), "cluster-lldp-secret-0123456789abcdef")
        .unwrap();
    let auth = super::creds::controller_auth(d, &["h1", "h2"]).unwrap();
    let etcd = EtcdCluster::start(3).expect("etcd cluster");
    let opts = NodeOpts {
        of_ip: "127.0.0.1".into(),
        api_all: true,
        topology: "link_capacity_bps = 100000000".into(),
        extra: String::new(),
    };
    let nodes: Vec<Node> = (0..3)
        .map(|i| start_node_with(d, &etcd, &auth, i, &opts))
        .collect();
    for n in &nodes {
        wait_for("the API", Duration::from_secs(20), || view(n)).unwrap();
    }
    let b1 = OvsBridge::new("scm-b1", 0x6301).unwrap();
    let agg = OvsBridge::new("scm-agg", 0x6310).unwrap();
    let b2 = OvsBridge::new("scm-b2", 0x6302).unwrap();
    let l1 = Veth::new("scm-l1a", "scm-l1b").unwrap();
    let l2 = Veth::new("scm-l2a", "scm-l2b").unwrap();
    agg.add_port(l1.root_end(), 1).unwrap();
    b1.add_port("scm-l1b", 10).unwrap();
    agg.add_port(l2.root_end(), 2).unwrap();
    b2.add_port("scm-l2b", 10).unwrap();
    let h1 = Hypervisor::new("scm-h1", Some((&b1, 2)), "10.226.0.1/16", 227, 1).unwrap();
    let h2 = Hypervisor::new("scm-h2", Some((&b2, 2)), "10.226.0.2/16", 227, 2).unwrap();
    let vm1 = NsHost::new(MIG_VM, &b1, "scm-v1", 20, MIG_VM_MAC, "10.226.1.1", 16).unwrap();
    let vm2 = NsHost::new(
        "scm-vm2",
        &b2,
        "scm-v2",
        20,
        "02:6b:00:00:00:02",
        "10.226.1.2",
        16,
    )
    .unwrap();
    let targets: Vec<String> = nodes
        .iter()
        .map(|n| format!("tcp:127.0.0.1:{}", n.of_port))
        .collect();
    for b in [&b1, &agg, &b2] {
        let mut args = vec!["set-controller", b.name()];
        args.extend(targets.iter().map(String::as_str));
        sh("ovs-vsctl", &args).unwrap();
    }
    let live: BTreeSet<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let v = mig_settled(&nodes, &live);
    let lapi = leader_api(&nodes, &v);
    let ports: Vec<u16> = nodes
        .iter()
        .map(|n| n.api.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    std::fs::write(
        d.join("vm1.json"),
        r#"{"interpolation": "hold", "points": [{"t": 0, "cpu": 0.2, "mem_mb": 20, "dirty_mbps": 1}]}"#,
    )
    .unwrap();
    let testbed = "cores = 2\nhost_metrics = \"vms\"\n";
    let vm_toml = format!(
        "[[vm]]\nname = \"{MIG_VM}\"\nmac = \"{MIG_VM_MAC}\"\nip = \"10.226.1.1\"\nmemory_mb = 24\nbackend = \"netns\"\nnamespace = \"{MIG_VM}\"\niface = \"eth0\"\nport = \"scm-v1\"\nscenario = \"vm1.json\"\n"
    );
    let hd1 = super::qemu::Hostd::start(
        Some(&h1.ns),
        &d.join("h1"),
        &h1.hostd_config_cluster(
            "h1",
            Some("scm-b1"),
            &ports,
            d,
            &format!("{testbed}{vm_toml}"),
        ),
        &h1.hostd_api(),
    )
    .expect("hostd h1");
    let hd2 = super::qemu::Hostd::start(
        Some(&h2.ns),
        &d.join("h2"),
        &h2.hostd_config_cluster("h2", Some("scm-b2"), &ports, d, testbed),
        &h2.hostd_api(),
    )
    .expect("hostd h2");
    wait_for(
        "the links, both hosts reporting and vm1 on h1, at the leader",
        Duration::from_secs(30),
        || {
            let links = get_json(&lapi, "/api/v1/links").ok()?.as_array()?.len();
            let hosts = get_json(&lapi, "/api/v1/hosts").ok()?;
            let up = hosts
                .as_array()?
                .iter()
                .filter(|h| h["metrics"].is_object())
                .count();
            let at = get_json(&lapi, &format!("/api/v1/vms/{MIG_VM}")).ok()?;
            (links == 4 && up == 2 && at["host"] == "h1").then_some(())
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(vm2.ping("10.226.1.1", 3), "no connectivity");
    MigBed {
        hostds: vec![hd1, hd2],
        vms: vec![vm1, vm2],
        hvs: vec![h1, h2],
        cables: vec![l1, l2],
        bridges: vec![b1, agg, b2],
        nodes,
        etcd,
        dir,
    }
}

/// Waits until the live nodes master the three switches, one each (or as
/// balanced as `live` allows), granted by the switches; returns the view.
pub fn mig_settled(nodes: &[Node], live: &BTreeSet<String>) -> Value {
    use std::time::Duration;
    let first = nodes
        .iter()
        .find(|n| live.contains(&n.id))
        .expect("a live node");
    super::wait_for(
        "every switch mastered, balanced over the live nodes",
        Duration::from_secs(30),
        || {
            let v = view(first)?;
            let spread: BTreeSet<String> = masters(&v).into_values().collect();
            (all_granted_of(nodes, &v, live, 3) && spread.len() == live.len().min(3)).then_some(v)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", view(first)))
}

/// The API address of the leader in `v`.
pub fn leader_api(nodes: &[Node], v: &Value) -> String {
    let l = leader_of(v).expect("a leader");
    nodes
        .iter()
        .find(|n| n.id == l)
        .expect("the leader is a node")
        .api
        .clone()
}

/// Migration meters and flows on each bridge.
pub fn installed(bs: &[OvsBridge]) -> Vec<(String, (usize, usize))> {
    bs.iter()
        .map(|b| (b.name().to_string(), super::migration::reservations_on(b)))
        .collect()
}

/// Every bridge holds one reservation (a meter and one migration flow).
pub fn all_hold(bs: &[OvsBridge]) -> bool {
    bs.iter().all(|b| {
        let (meters, flows) = super::migration::reservations_on(b);
        meters >= 1 && flows == 1
    })
}

/// What [`kill_leader_mid_migration`] saw.
pub struct MidKill {
    /// The migration id.
    pub id: String,
    /// The node killed.
    pub killed: usize,
    /// The new leader's id and API.
    pub new_leader: (String, String),
    /// From the kill to a survivor reporting a new leader.
    pub t_leader: std::time::Duration,
    /// From the kill to the new leader's record of the migration advancing
    /// (only the leader follows a migration and writes its record).
    pub t_resumed: std::time::Duration,
    /// The record at that moment.
    pub resumed: Value,
}

/// Starts a reserved migration of vm1 to `to` through the leader, checks
/// its reservations on every hop, and kills the leader (`kill -9`) one
/// second into the transfer; returns once the new leader follows it on.
pub fn kill_leader_mid_migration(bed: &mut MigBed, to: &str) -> MidKill {
    use super::migration::{post, wait_state};
    use super::wait_for;
    use serde_json::json;
    use std::time::{Duration, Instant};
    let live: BTreeSet<String> = bed
        .nodes
        .iter()
        .filter(|n| n.child.is_some())
        .map(|n| n.id.clone())
        .collect();
    let v = mig_settled(&bed.nodes, &live);
    let leader = leader_of(&v).expect("a leader");
    let lapi = leader_api(&bed.nodes, &v);
    wait_for(
        "vm1 where the leader can move it",
        Duration::from_secs(20),
        || {
            let at = get_json(&lapi, &format!("/api/v1/vms/{MIG_VM}")).ok()?;
            (at["host"].as_str()? != to).then_some(())
        },
    )
    .unwrap();
    let (code, m) = post(
        &lapi,
        json!({"vm": MIG_VM, "destination": to, "deadline_s": 20, "reserve": true}),
    );
    assert_eq!(code, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let run = wait_state(
        &lapi,
        &id,
        &["running", "verifying", "done", "failed"],
        Duration::from_secs(15),
    );
    assert_eq!(run["state"], "running", "{run}");
    assert_eq!(run["reservations"].as_array().unwrap().len(), 6, "{run}");
    assert!(all_hold(&bed.bridges), "{:?}", installed(&bed.bridges));
    std::thread::sleep(Duration::from_secs(1));
    let before = get_json(&lapi, &format!("/api/v1/migrations/{id}")).unwrap();
    let sent_before = before["progress"]["transferred_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(before["state"], "running", "{before}");
    let li = bed.nodes.iter().position(|n| n.id == leader).unwrap();
    let t0 = Instant::now();
    if let Some(mut c) = bed.nodes[li].child.take() {
        c.signal("KILL").unwrap();
        c.wait();
    }
    let survivors: BTreeSet<String> = live.iter().filter(|n| **n != leader).cloned().collect();
    let other = bed.nodes.iter().position(|n| n.id != leader).unwrap();
    let new_leader = wait_for("a new leader", Duration::from_secs(10), || {
        leader_of(&view(&bed.nodes[other])?).filter(|l| survivors.contains(l))
    })
    .unwrap();
    let t_leader = t0.elapsed();
    let napi = bed
        .nodes
        .iter()
        .find(|n| n.id == new_leader)
        .unwrap()
        .api
        .clone();
    let resumed = wait_for(
        "the new leader following the migration",
        Duration::from_secs(15),
        || {
            let m = get_json(&napi, &format!("/api/v1/migrations/{id}")).ok()?;
            let sent = m["progress"]["transferred_bytes"].as_u64().unwrap_or(0);
            (sent > sent_before || m["state"] != "running").then_some(m)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}",
            get_json(&napi, &format!("/api/v1/migrations/{id}"))
        )
    });
    let t_resumed = t0.elapsed();
    MidKill {
        id,
        killed: li,
        new_leader: (new_leader, napi),
        t_leader,
        t_resumed,
        resumed,
    }
}
