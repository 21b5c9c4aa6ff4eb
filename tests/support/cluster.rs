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

/// Writes node `i`'s configuration (etcd through its own proxy) and starts it.
pub fn start_node(
    dir: &std::path::Path,
    net: &Net,
    etcd: &EtcdCluster,
    auth: &str,
    i: usize,
) -> Node {
    let id = format!("n{}", i + 1);
    let proxy = EtcdProxy::start(etcd).unwrap();
    let of_port = free_port().unwrap();
    let api = format!("127.0.0.1:{}", free_port().unwrap());
    let cfg = dir.join(format!("{id}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"
of_listen = "{ip}:{of_port}"
api_listen = "{api}"
db = ":memory:"
{auth}
[openflow]
echo_interval_s = 1.0
[topology]
lldp_interval_s = 1.0
link_timeout_s = 3.5
port_confirm_s = 1.5
lldp_secret_file = "{secret}"
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
"#,
            ip = net.ovs.controller_ip(),
            secret = dir.join("lldp.key").display(),
            eps = proxy.url,
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
    let m = masters(v);
    if m.len() != 5 || !m.values().all(|n| live.contains(n)) {
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
