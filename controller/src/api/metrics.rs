//! `GET /metrics`: the controller in the Prometheus (OpenMetrics) text
//! format, authenticated like every other read.
//!
//! Every scrape builds a fresh registry from what the controller knows at
//! that moment (the knowledge, the loop's state, the orchestrator), so a
//! switch, host or pair that is gone has no stale series. Counters come
//! from counts kept since the start (OpenFlow messages, drops, decisions);
//! gauges from the current state. Cardinality is bounded: per switch, port,
//! meter, host and link, plus the `[monitor] metrics_top_pairs` heaviest
//! pairs of the traffic matrix (the totals by class cover every pair). The
//! names and what they mean are listed in `docs/observability.md`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{matrix_view, ApiError, ApiState, TrafficClass};
use crate::execute::orchestrator::MigState;
use crate::monitor::dpid::dpid_str;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// A registry filled family by family.
struct Metrics {
    reg: Registry,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            reg: Registry::default(),
        }
    }

    /// A gauge family `name` with one series per row.
    fn gauge(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, f64)>) {
        let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (labels, v) in rows {
            if v.is_finite() {
                f.get_or_create(&labels).set(v);
            }
        }
        self.reg.register(name, help, f);
    }

    /// One unlabelled gauge.
    fn gauge1(&mut self, name: &str, help: &str, v: f64) {
        self.gauge(name, help, [(Labels::new(), v)]);
    }

    /// A counter family `name` (exported as `name_total`).
    fn counter(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, u64)>) {
        let f = Family::<Labels, Counter>::default();
        for (labels, v) in rows {
            f.get_or_create(&labels).inc_by(v);
        }
        self.reg.register(name, help, f);
    }

    /// One unlabelled counter.
    fn counter1(&mut self, name: &str, help: &str, v: u64) {
        self.counter(name, help, [(Labels::new(), v)]);
    }

    fn text(&self) -> Result<String, ApiError> {
        let mut out = String::new();
        encode(&mut out, &self.reg).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(out)
    }
}

/// `GET /metrics`.
pub async fn metrics(State(s): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let body = render(&s)?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}

/// The exposition text of the controller now.
pub fn render(s: &ApiState) -> Result<String, ApiError> {
    let mut m = Metrics::new();
    let k = &s.knowledge;
    let fence = &k.fence;

    // The process and the cluster.
    let (mode, node, leader) = match fence.view() {
        Some(v) => (
            "cluster",
            v.node_id.clone(),
            if v.is_leader && fence.acting().is_ok() {
                1.0
            } else {
                0.0
            },
        ),
        None => ("single", String::new(), 1.0),
    };
    m.gauge(
        "shoal_info",
        "The controller: version, single or cluster, node id",
        [(
            l(&[
                ("version", env!("CARGO_PKG_VERSION")),
                ("mode", mode),
                ("node", &node),
            ]),
            1.0,
        )],
    );
    m.gauge1(
        "shoal_uptime_seconds",
        "Seconds since the controller started",
        k.started.elapsed().as_secs_f64(),
    );
    m.gauge1(
        "shoal_leader",
        "1 when this controller leads (always for a single controller)",
        leader,
    );
    m.gauge1(
        "shoal_acting",
        "1 when this controller may act (a cluster node: valid etcd lease)",
        if fence.acting().is_ok() { 1.0 } else { 0.0 },
    );
    m.counter1(
        "shoal_writes_withheld",
        "OpenFlow messages a cluster node withheld after its lease ran out",
        k.fenced_writes.load(Ordering::Relaxed),
    );

    // OpenFlow.
    let (switches, links, endpoints) = {
        let t = k.topo_read()?;
        (t.switches().len(), t.links().count(), t.endpoint_count())
    };
    m.gauge1(
        "shoal_switches_connected",
        "Switches connected (handshake done)",
        switches as f64,
    );
    m.gauge1(
        "shoal_links",
        "Inter-switch link directions discovered by LLDP",
        links as f64,
    );
    m.gauge1(
        "shoal_endpoints",
        "Hosts (MAC addresses) located on edge ports",
        endpoints as f64,
    );
    let msgs = k.of_messages.snapshot();
    m.counter(
        "shoal_openflow_messages",
        "OpenFlow messages after the handshake, by type and direction (rx: from switches)",
        msgs.iter().flat_map(|(name, rx, tx)| {
            [
                (l(&[("type", name), ("direction", "rx")]), *rx),
                (l(&[("type", name), ("direction", "tx")]), *tx),
            ]
        }),
    );
    m.counter1(
        "shoal_packet_in_dropped",
        "PACKET_INs dropped because the forwarding core was saturated",
        k.packet_in_drops.load(Ordering::Relaxed),
    );
    m.counter1(
        "shoal_switch_events_dropped",
        "PORT_STATUS, FLOW_REMOVED and ERROR messages dropped because the core was saturated",
        k.event_drops.load(Ordering::Relaxed),
    );
    m.counter1(
        "shoal_switch_disconnects_not_reading",
        "Switch connections closed because the switch did not read",
        k.not_reading_disconnects.load(Ordering::Relaxed),
    );
    m.gauge1(
        "shoal_pair_flows",
        "Pair flows installed",
        k.limits.pair_flows.load(Ordering::Relaxed) as f64,
    );

    // Ports and meters.
    let (ports, meters) = {
        let mon = k.monitor_lock()?;
        (mon.port_rates(), mon.meter_rates())
    };
    let port_labels = |dpid: u64, port: u32, dir: &str| {
        l(&[
            ("dpid", &dpid_str(dpid)),
            ("port", &port.to_string()),
            ("direction", dir),
        ])
    };
    // One series per port and direction, from a port's (rx, tx) pair.
    let both_ways = |f: fn(&crate::monitor::stats::PortCounters) -> (u64, u64)| {
        ports
            .iter()
            .flat_map(|p| {
                let (rx, tx) = f(&p.counters);
                [
                    (port_labels(p.dpid, p.port, "rx"), rx),
                    (port_labels(p.dpid, p.port, "tx"), tx),
                ]
            })
            .collect::<Vec<_>>()
    };
    m.counter(
        "shoal_port_bytes",
        "Bytes through a switch port, as last polled (rx: received by the switch)",
        both_ways(|c| (c.rx_bytes, c.tx_bytes)),
    );
    m.counter(
        "shoal_port_dropped_packets",
        "Packets a switch port dropped, as last polled",
        both_ways(|c| (c.rx_dropped, c.tx_dropped)),
    );
    m.gauge(
        "shoal_port_bytes_per_second",
        "Rate through a switch port over the last polling interval",
        ports.iter().flat_map(|p| {
            let mut v = Vec::new();
            if let Some(r) = p.rx_bytes_per_s {
                v.push((port_labels(p.dpid, p.port, "rx"), r));
            }
            if let Some(t) = p.tx_bytes_per_s {
                v.push((port_labels(p.dpid, p.port, "tx"), t));
            }
            v
        }),
    );
    let meter_labels =
        |dpid: u64, id: u32| l(&[("dpid", &dpid_str(dpid)), ("meter", &id.to_string())]);
    m.gauge(
        "shoal_meter_bytes_per_second",
        "Bytes per second entering a meter (migration reservations)",
        meters
            .iter()
            .filter_map(|r| Some((meter_labels(r.dpid, r.meter_id), r.in_bytes_per_s?))),
    );
    m.gauge(
        "shoal_meter_band_bytes_per_second",
        "Bytes per second a meter's band dropped",
        meters
            .iter()
            .filter_map(|r| Some((meter_labels(r.dpid, r.meter_id), r.band_bytes_per_s?))),
    );

    // The traffic matrix.
    let tm = matrix_view(s, None, 0.0)?;
    let class = |c: TrafficClass| match c {
        TrafficClass::Idc => "idc",
        TrafficClass::Nic => "nic",
    };
    let mut totals = [(0.0f64, 0usize); 2];
    for p in &tm.pairs {
        let i = usize::from(matches!(p.class, TrafficClass::Nic));
        totals[i].0 += p.bytes_per_s;
        totals[i].1 += 1;
    }
    m.gauge(
        "shoal_traffic_bytes_per_second",
        "λ summed over every VM pair of a class (idc: same hypervisor; nic: across NICs)",
        [
            (l(&[("class", "idc")]), totals[0].0),
            (l(&[("class", "nic")]), totals[1].0),
        ],
    );
    m.gauge(
        "shoal_traffic_pairs",
        "VM pairs in the traffic matrix, by class",
        [
            (l(&[("class", "idc")]), totals[0].1 as f64),
            (l(&[("class", "nic")]), totals[1].1 as f64),
        ],
    );
    let mut top: Vec<_> = tm.pairs.iter().collect();
    top.sort_by(|a, b| b.bytes_per_s.total_cmp(&a.bytes_per_s));
    top.truncate(s.settings.metrics_top_pairs);
    m.gauge(
        "shoal_pair_bytes_per_second",
        "λ(u,v) of the heaviest pairs ([monitor] metrics_top_pairs)",
        top.iter().map(|p| {
            (
                l(&[
                    ("src", &p.src.to_string()),
                    ("dst", &p.dst.to_string()),
                    ("class", class(p.class)),
                ]),
                p.bytes_per_s,
            )
        }),
    );

    // Hosts.
    let mut host_rows: Vec<(String, proto_metrics::Row)> = Vec::new();
    let mut vfs: Vec<(String, f64, f64)> = Vec::new();
    {
        let hosts = k.hosts_read()?;
        for (id, e) in hosts.hosts() {
            let attached = e
                .latest()
                .map(|r| r.vms.iter().filter(|v| v.vf_attached).count())
                .unwrap_or(0);
            vfs.push((
                id.clone(),
                f64::from(e.registration.vf_count),
                attached as f64,
            ));
            if let Some(r) = e.latest() {
                host_rows.push((id.clone(), proto_metrics::Row::of(&r.host, r.vms.len())));
            }
        }
    }
    let per_host = |f: fn(&proto_metrics::Row) -> f64| {
        host_rows
            .iter()
            .map(move |(id, r)| (l(&[("host", id)]), f(r)))
            .collect::<Vec<_>>()
    };
    m.gauge(
        "shoal_host_cpu_utilization",
        "CPU utilisation of a host, fraction of all cores (latest report)",
        per_host(|r| r.cpu),
    );
    m.gauge(
        "shoal_host_memory_used_bytes",
        "Memory in use on a host (latest report)",
        per_host(|r| r.mem_used),
    );
    m.gauge(
        "shoal_host_memory_bytes",
        "Physical memory of a host",
        per_host(|r| r.mem_total),
    );
    m.gauge(
        "shoal_host_nic_bytes_per_second",
        "Uplink NIC rate of a host (latest report; tx: sent by the host)",
        host_rows.iter().flat_map(|(id, r)| {
            [
                (l(&[("host", id), ("direction", "tx")]), r.nic_tx),
                (l(&[("host", id), ("direction", "rx")]), r.nic_rx),
            ]
        }),
    );
    m.gauge(
        "shoal_host_swap_pages_per_second",
        "Pages swapped per second on a host (latest report)",
        host_rows.iter().flat_map(|(id, r)| {
            [
                (l(&[("host", id), ("direction", "out")]), r.swap_out),
                (l(&[("host", id), ("direction", "in")]), r.swap_in),
            ]
        }),
    );
    m.gauge(
        "shoal_host_vms",
        "VMs a host reported in its latest report",
        per_host(|r| r.vms),
    );
    m.gauge(
        "shoal_vfs",
        "SR-IOV virtual functions of a host",
        vfs.iter().map(|(h, n, _)| (l(&[("host", h)]), *n)),
    );
    m.gauge(
        "shoal_vfs_attached",
        "SR-IOV virtual functions attached to VMs on a host (latest report)",
        vfs.iter().map(|(h, _, a)| (l(&[("host", h)]), *a)),
    );

    // The loop: hotspots, decisions.
    let (hot, decisions, round) = {
        let live = s
            .live
            .lock()
            .map_err(|_| ApiError::Internal("live state lock poisoned".into()))?;
        let hot: Vec<(String, &'static str)> = live
            .hotspots
            .iter()
            .flat_map(|r| {
                r.hot.iter().flat_map(|(h, e)| {
                    e.evidence
                        .iter()
                        .map(move |ev| (h.clone(), ev.resource.as_str()))
                })
            })
            .collect();
        (hot, live.decision_counts.clone(), live.round)
    };
    m.counter1("shoal_rounds", "Rounds of the live loop", round);
    m.gauge(
        "shoal_hotspot",
        "1 for each hot resource of a host in the latest round",
        hot.iter()
            .map(|(h, r)| (l(&[("host", h), ("resource", r)]), 1.0)),
    );
    m.counter(
        "shoal_decisions",
        "Decisions made, by policy, action and outcome (the outcome's first word)",
        decisions.iter().map(|((policy, action, outcome), n)| {
            (
                l(&[("policy", policy), ("action", action), ("outcome", outcome)]),
                *n,
            )
        }),
    );

    // Migrations and their reservations.
    let migs = s.orchestrator.list_for_api();
    let states = [
        MigState::Queued,
        MigState::Reserving,
        MigState::Running,
        MigState::Verifying,
        MigState::Done,
        MigState::Failed,
        MigState::Cancelled,
    ];
    m.gauge(
        "shoal_migrations",
        "Migrations by state (finished ones: those kept in memory, [retention] migrations_in_memory)",
        states.iter().map(|st| {
            (
                l(&[("state", st.as_str())]),
                migs.iter().filter(|x| x.state == *st).count() as f64,
            )
        }),
    );
    let mut reserved: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for x in migs
        .iter()
        .filter(|x| !x.state.is_final() && !x.reservations.is_empty())
    {
        for h in &x.hops {
            *reserved.entry(h.dpid.clone()).or_default() += x.bandwidth_bytes_per_s;
        }
    }
    m.gauge(
        "shoal_reserved_bytes_per_second",
        "Bandwidth reserved for running migrations on each switch of their paths",
        reserved.iter().map(|(d, b)| (l(&[("dpid", d)]), *b)),
    );
    let last = migs
        .iter()
        .filter(|x| x.state == MigState::Done)
        .max_by_key(|x| x.ended_unix_ms);
    if let Some(x) = last {
        let took = x.result.as_ref().map(|r| r.total_time_ms as f64 / 1000.0);
        m.gauge(
            "shoal_migration_last_seconds",
            "The last migration done: its duration (kind=actual), the model's prediction (predicted) and its deadline",
            [
                took.map(|t| (l(&[("kind", "actual")]), t)),
                x.predicted
                    .as_ref()
                    .map(|p| (l(&[("kind", "predicted")]), p.time_s)),
                Some((l(&[("kind", "deadline")]), x.deadline_s)),
            ]
            .into_iter()
            .flatten(),
        );
    }
    m.text()
}

/// Host metrics as exported (bytes, not MiB).
mod proto_metrics {
    use shoal_common::proto::HostMetrics;

    /// One host's latest report, in export units.
    pub struct Row {
        pub cpu: f64,
        pub mem_used: f64,
        pub mem_total: f64,
        pub nic_tx: f64,
        pub nic_rx: f64,
        pub swap_out: f64,
        pub swap_in: f64,
        pub vms: f64,
    }

    impl Row {
        pub fn of(h: &HostMetrics, vms: usize) -> Row {
            const MIB: f64 = 1024.0 * 1024.0;
            Row {
                cpu: h.cpu_util,
                mem_used: h.mem_used_mb as f64 * MIB,
                mem_total: h.mem_total_mb as f64 * MIB,
                nic_tx: h.nic_tx_bytes_per_s,
                nic_rx: h.nic_rx_bytes_per_s,
                swap_out: h.swap_out_pages_per_s,
                swap_in: h.swap_in_pages_per_s,
                vms: vms as f64,
            }
        }
    }
}
