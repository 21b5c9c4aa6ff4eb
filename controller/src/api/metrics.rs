//! `GET /metrics`: the controller in the Prometheus (OpenMetrics) text
//! format, authenticated like every other read.
//!
//! Every scrape builds a fresh registry from what the controller knows at
//! that moment (the knowledge, the loop's state, the orchestrator), so a
//! switch, host or pair that is gone has no stale series. Counters come
//! from counts kept since the start (OpenFlow messages, drops, decisions,
//! finished migrations) or since a switch connected (its statistics polls,
//! counted by the monitor); gauges from the current state. Cardinality is bounded: per switch, port,
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
use crate::monitor::stats::PollStats;

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

    /// A counter family `name` of fractional values (seconds), exported as
    /// `name_total`.
    fn counter_f64(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let f = Family::<Labels, Counter<f64, AtomicU64>>::default();
        for (labels, v) in rows {
            let c = f.get_or_create(&labels);
            if v.is_finite() && v > 0.0 {
                c.inc_by(v);
            }
        }
        self.reg.register(name, help, f);
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
    let (connected, links, endpoints) = {
        let t = k.topo_read()?;
        let connected: Vec<u64> = t.switches().keys().copied().collect();
        (connected, t.links().count(), t.endpoint_count())
    };
    let switches = connected.len();
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

    // Ports, meters and the polls that read them.
    let (ports, meters, polls) = {
        let mon = k.monitor_lock()?;
        (mon.port_rates(), mon.meter_rates(), mon.poll_stats())
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

    // Statistics polls: every connected switch (0 before its first poll
    // ends), none of a switch gone.
    let polls: Vec<(String, PollStats)> = connected
        .iter()
        .map(|d| {
            let p = polls
                .iter()
                .find(|(x, _)| x == d)
                .map(|(_, p)| *p)
                .unwrap_or_default();
            (dpid_str(*d), p)
        })
        .collect();
    m.gauge(
        "shoal_switch_poll_duration_seconds",
        "Duration of the last complete statistics poll of a switch (flow, port, queue and meter requests in turn)",
        polls
            .iter()
            .filter_map(|(d, p)| Some((l(&[("dpid", d)]), p.last_seconds?))),
    );
    m.counter_f64(
        "shoal_switch_poll_seconds",
        "Seconds the complete statistics polls of a switch took, in all (÷ shoal_switch_polls_total: the mean)",
        polls
            .iter()
            .map(|(d, p)| (l(&[("dpid", d)]), p.seconds_total)),
    );
    m.counter(
        "shoal_switch_polls",
        "Complete statistics polls of a switch (every reply received)",
        polls.iter().map(|(d, p)| (l(&[("dpid", d)]), p.polls)),
    );
    m.counter(
        "shoal_switch_poll_failures",
        "Statistics polls of a switch that failed: a request timed out (reason=timeout) or was refused or answered badly (error)",
        polls.iter().flat_map(|(d, p)| {
            [
                (l(&[("dpid", d), ("reason", "timeout")]), p.timeouts),
                (l(&[("dpid", d), ("reason", "error")]), p.errors),
            ]
        }),
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
        let took = x.actual_s();
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
    // Every migration finished since the start (the gauges above only see
    // those kept in memory, the one above only the last).
    let f = s.orchestrator.finished_totals();
    m.counter(
        "shoal_migrations_finished",
        "Migrations this controller finished since it started, by final state",
        [
            (MigState::Done, f.done),
            (MigState::Failed, f.failed),
            (MigState::Cancelled, f.cancelled),
        ]
        .map(|(st, n)| (l(&[("state", st.as_str())]), n)),
    );
    m.counter1(
        "shoal_migrations_compared",
        "Done migrations with both a measured duration and a prediction (the count behind the actual and predicted sums)",
        f.compared,
    );
    m.counter_f64(
        "shoal_migration_actual_seconds",
        "Measured durations of the compared migrations, in all",
        [(Labels::new(), f.actual_s)],
    );
    m.counter_f64(
        "shoal_migration_predicted_seconds",
        "The model's predicted durations of the compared migrations, in all",
        [(Labels::new(), f.predicted_s)],
    );
    m.counter1(
        "shoal_migration_deadlines_missed",
        "Done migrations whose measured duration exceeded their deadline",
        f.deadlines_missed,
    );
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use ofp::{BandStats, MacAddr, MeterStats, PortStats};

    use super::*;
    use crate::analyze::{Evidence, HostHotspot, HotspotReport, Indicator, Resource};
    use crate::api::{auth, ApiSettings};
    use crate::execute::handles::{Handles, HttpHostd};
    use crate::execute::orchestrator::{
        Hop, Migration, MigrationRequest, OrchConfig, Orchestrator, Predicted, Reservation,
    };
    use crate::knowledge::state::Knowledge;
    use crate::knowledge::store::{SqliteStore, Store, StoreExt};
    use crate::monitor::cookie;
    use crate::monitor::hosts::tests::{reg, report, vm};
    use crate::monitor::stats::PollOutcome;
    use crate::monitor::topology::tests::{features, port};

    /// A migration record of VM `vm` in state `st`, 40 s predicted
    /// against a 60 s deadline.
    fn migration(id: &str, vm: &str, st: MigState) -> Migration {
        Migration {
            id: id.into(),
            vm: vm.into(),
            from: "h1".into(),
            to: "h2".into(),
            state: st,
            reason: "test".into(),
            deadline_s: 60.0,
            reserve: true,
            bandwidth_bytes_per_s: 1e6,
            memory_mb: 128.0,
            dirty_rate_mbps: 1.0,
            predicted: Some(Predicted {
                time_s: 40.0,
                traffic_bytes: 1e8,
                rounds: 3,
                downtime_s: 0.1,
            }),
            path: vec![dpid_str(1), dpid_str(2)],
            hops: [1, 2]
                .map(|d| Hop {
                    dpid: dpid_str(d),
                    out_port: Some(1),
                    capacity_bps: Some(1e9),
                    available_bps: Some(5e8),
                })
                .to_vec(),
            reservations: Vec::new(),
            queued_reason: None,
            progress: None,
            result: None,
            error: None,
            src_addr: "10.0.0.1".into(),
            dst_addr: "10.0.0.2:4444".into(),
            created_unix_ms: 1,
            started_unix_ms: Some(2),
            ended_unix_ms: None,
            cost_before: None,
            cost_after: None,
            decision_id: None,
            seq: 1,
        }
    }

    /// A controller that has seen a bit of everything: switches 1 and 2
    /// connected (1 polled: once complete, once timed out, once refused;
    /// 2 not yet), a port and a meter polled twice, a pair with traffic,
    /// two hosts (one reporting), a hot resource, decisions, a running
    /// migration with a reservation and a done one (restored from the
    /// store), and a migration cancelled here. Its knowledge is kept
    /// alive with it (the orchestrator holds it weakly).
    async fn populated() -> (ApiState, Arc<Knowledge>) {
        let settings = crate::config::Config::from_toml("")
            .and_then(|c| c.validate())
            .expect("settings");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().expect("store"));
        let mut done = migration("mig-1", "v7", MigState::Done);
        done.result = Some(shoal_common::proto::MigrationResult {
            total_time_ms: 45_000,
            downtime_ms: 90,
            transferred_bytes: 1,
            memory_bytes: 1,
            max_dirty_rate_bytes_per_s: 0.0,
            achieved_bandwidth_bytes_per_s: 1.0,
            iterations: 3,
        });
        done.ended_unix_ms = Some(3);
        let mut running = migration("mig-2", "v8", MigState::Running);
        running.seq = 2;
        running.reservations = vec![Reservation {
            kind: "meter".into(),
            target: dpid_str(1),
            meter_id: Some(1001),
            cookie: None,
            queue: None,
            store_id: 1,
        }];
        for m in [&done, &running] {
            store
                .put_migration(&m.id, &m.vm, m.state.as_str(), m, 1)
                .expect("record");
        }
        let k = Arc::new(crate::mapek::state::knowledge(&settings, Some(store)));
        let now = Instant::now();
        k.of_messages.received(ofp::msg_type::PACKET_IN);
        {
            let mut t = k.topo.write().expect("topology");
            let peer = "127.0.0.1:1".parse().expect("addr");
            for d in [1, 2] {
                t.switch_connected(d, d, peer, features(d), vec![port(1), port(2)], now);
            }
        }
        {
            let mut mon = k.monitor.lock().expect("monitor");
            let ms = Duration::from_millis;
            mon.poll_finished(1, ms(20), PollOutcome::Done);
            mon.poll_finished(1, ms(5000), PollOutcome::TimedOut);
            mon.poll_finished(1, ms(3), PollOutcome::Failed);
            // A switch gone since (its poller ended late): not exported.
            mon.poll_finished(9, ms(20), PollOutcome::Done);
            for (i, at) in [now, now + Duration::from_secs(1)].into_iter().enumerate() {
                let n = i as u64 + 1;
                let ps = PortStats {
                    port_no: 1,
                    rx_bytes: 1000 * n,
                    tx_bytes: 2000 * n,
                    rx_dropped: n,
                    tx_dropped: 0,
                    duration_sec: n as u32,
                    ..PortStats::default()
                };
                mon.ingest_port_stats(1, at, &[ps]);
                let meter = MeterStats {
                    meter_id: 1001,
                    flow_count: 1,
                    byte_in_count: 5000 * n,
                    duration_sec: n as u32,
                    band_stats: vec![BandStats {
                        packet_band_count: n,
                        byte_band_count: 100 * n,
                    }],
                    ..MeterStats::default()
                };
                mon.ingest_meter_stats(1, at, &[meter]);
                let tok = mon.matrix.begin_poll(1, at);
                let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
                let c = cookie::make(cookie::KIND_PAIR, 1);
                mon.matrix.record(tok, a, b, c, 64_000 * n);
                mon.matrix.end_poll(tok);
            }
        }
        {
            let mut h = k.hosts_write().expect("hosts");
            h.register("h1", reg("h1", 1, vec![vm("v1", "02:00:00:00:00:01")]), 0)
                .expect("h1");
            h.register("h2", reg("h2", 2, vec![]), 0).expect("h2");
            h.report("h1", report("h1", 1, vec![]), 1).expect("report");
        }
        let mut live = crate::mapek::state::live_state(&settings);
        live.round = 3;
        live.hotspots = Some(HotspotReport {
            hot: BTreeMap::from([(
                "h1".to_string(),
                HostHotspot {
                    evidence: vec![Evidence {
                        resource: Resource::Cpu,
                        indicator: Indicator::CpuUtil,
                        exceeded: 3,
                        window: 3,
                        predicted: 0.95,
                        latest: 0.97,
                        threshold: 0.9,
                    }],
                },
            )]),
            ..HotspotReport::default()
        });
        live.decision_counts
            .insert(("shoal".into(), "migrate", "queued".into()), 2);
        let orch = Orchestrator::with_handles(
            OrchConfig::from_settings(&settings),
            Handles::of(&k, Arc::new(HttpHostd::new(Duration::from_secs(1), None))),
        )
        .await;
        orch.restore();
        let c = orch
            .submit(
                MigrationRequest {
                    vm: "v1".into(),
                    destination: "h2".into(),
                    deadline_s: None,
                    reserve: Some(false),
                },
                "test".into(),
                None,
            )
            .expect("queued");
        orch.cancel(&c.id).expect("cancelled");
        let state = ApiState {
            knowledge: k.clone(),
            live: Arc::new(Mutex::new(live)),
            orchestrator: orch,
            settings: ApiSettings::of(&settings),
            auth: auth::SharedAuth::new(auth::Auth::new(&settings.auth)),
            host_events: None,
            round: None,
        };
        (state, k)
    }

    /// The families of an exposition (`# TYPE` lines), and every sample's
    /// name with its labels and value.
    type Sample = (String, BTreeMap<String, String>, f64);

    fn parse(text: &str) -> (BTreeSet<String>, Vec<Sample>) {
        let mut families = BTreeSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families.extend(rest.split_whitespace().next().map(str::to_string));
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (head, value) = line.rsplit_once(' ').expect("name and value");
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), BTreeMap::new()),
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").expect("label");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (n.to_string(), labels)
                }
            };
            samples.push((name, labels, value.parse().expect("value")));
        }
        (families, samples)
    }

    /// The value of the one sample `name` with labels `want` (exactly).
    fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = want
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let mut it = samples.iter().filter(|(n, l, _)| n == name && *l == want);
        let v = it.next().map(|s| s.2);
        assert!(it.next().is_none(), "{name} {want:?} twice");
        v
    }

    /// Every family `render` can register (the names it passes, read from
    /// this file's code above the tests).
    fn registered() -> BTreeSet<String> {
        let src = include_str!("metrics.rs");
        let code = &src[..src.find("#[cfg(test)]").expect("tests")];
        code.split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| {
                s.starts_with("shoal_")
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
            .map(str::to_string)
            .collect()
    }

    /// A populated controller writes every family it can (so that the
    /// dashboards' check below covers them all), and the new ones say
    /// what happened: per connected switch its polls, their time and
    /// failures by reason (0 for a switch not polled yet, nothing for one
    /// gone); the migrations finished here, by state.
    #[tokio::test]
    async fn a_populated_controller_writes_every_family() {
        let (s, _k) = populated().await;
        let text = render(&s).expect("render");
        let (families, samples) = parse(&text);
        let reg = registered();
        assert!(reg.len() > 40, "{reg:?}");
        let missing: Vec<_> = reg.difference(&families).collect();
        assert!(missing.is_empty(), "not written: {missing:?}\n{text}");
        let d1 = dpid_str(1);
        let d2 = dpid_str(2);
        let v = |n: &str, l: &[(&str, &str)]| value(&samples, n, l);
        assert_eq!(
            v("shoal_switch_poll_duration_seconds", &[("dpid", &d1)]),
            Some(0.02)
        );
        assert_eq!(v("shoal_switch_polls_total", &[("dpid", &d1)]), Some(1.0));
        assert_eq!(
            v("shoal_switch_poll_seconds_total", &[("dpid", &d1)]),
            Some(0.02)
        );
        for (reason, n) in [("timeout", 1.0), ("error", 1.0)] {
            assert_eq!(
                v(
                    "shoal_switch_poll_failures_total",
                    &[("dpid", &d1), ("reason", reason)]
                ),
                Some(n),
                "{reason}"
            );
            assert_eq!(
                v(
                    "shoal_switch_poll_failures_total",
                    &[("dpid", &d2), ("reason", reason)]
                ),
                Some(0.0)
            );
        }
        assert_eq!(v("shoal_switch_polls_total", &[("dpid", &d2)]), Some(0.0));
        assert_eq!(
            v("shoal_switch_poll_duration_seconds", &[("dpid", &d2)]),
            None
        );
        assert!(
            !text.contains(&dpid_str(9)),
            "a switch gone is exported:\n{text}"
        );
        for (st, n) in [("done", 0.0), ("failed", 0.0), ("cancelled", 1.0)] {
            assert_eq!(
                v("shoal_migrations_finished_total", &[("state", st)]),
                Some(n),
                "{st}"
            );
        }
        assert_eq!(v("shoal_migrations_compared_total", &[]), Some(0.0));
        assert_eq!(v("shoal_migration_actual_seconds_total", &[]), Some(0.0));
        assert_eq!(v("shoal_migration_deadlines_missed_total", &[]), Some(0.0));
        // The last migration done (restored): as before.
        assert_eq!(
            v("shoal_migration_last_seconds", &[("kind", "actual")]),
            Some(45.0)
        );
        assert_eq!(
            v("shoal_reserved_bytes_per_second", &[("dpid", &d2)]),
            Some(1e6)
        );
    }

    /// The dashboards under `docs/grafana/`.
    fn dashboards() -> Vec<(String, serde_json::Value)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana");
        let mut v: Vec<(String, serde_json::Value)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("read");
                let json = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
                (
                    p.file_name().expect("name").to_string_lossy().into_owned(),
                    json,
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every `shoal_…` metric name in a query of `v` (`expr` of targets,
    /// `definition` and `query` of variables).
    fn names_in(v: &serde_json::Value, out: &mut BTreeSet<String>) {
        use serde_json::Value;
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    match (k.as_str(), x) {
                        ("expr" | "definition" | "query", Value::String(s)) => {
                            let mut rest = s.as_str();
                            while let Some(i) = rest.find("shoal_") {
                                let name: String = rest[i..]
                                    .chars()
                                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                                    .collect();
                                rest = &rest[i + name.len()..];
                                out.insert(name);
                            }
                        }
                        _ => names_in(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| names_in(x, out)),
            _ => {}
        }
    }

    /// Every panel of a dashboard, those in collapsed rows included.
    fn panels(d: &serde_json::Value) -> Vec<&serde_json::Value> {
        let mut out = Vec::new();
        for p in d["panels"].as_array().expect("panels") {
            out.push(p);
            if let Some(inner) = p["panels"].as_array() {
                out.extend(inner);
            }
        }
        out
    }

    /// The Grafana dashboards import as they are (the Prometheus data
    /// source asked for on import, used by every panel, query and
    /// variable; unique dashboard uids and panel ids; panels placed on
    /// the 24-column grid without overlapping) and query only metrics the
    /// controller writes (the host daemon's, `shoal_hostd_…`, are checked
    /// against real daemons in `tests/e2e_hosts.rs`).
    #[tokio::test]
    async fn the_dashboards_import_and_query_only_what_is_exported() {
        let (s, _k) = populated().await;
        let (families, samples) = parse(&render(&s).expect("render"));
        let exported: BTreeSet<String> = families
            .into_iter()
            .chain(samples.into_iter().map(|s| s.0))
            .collect();
        let boards = dashboards();
        let names: BTreeSet<&str> = boards.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from(["fabric.json", "hosts.json", "migrations.json"])
        );
        let mut uids = BTreeSet::new();
        for (file, d) in &boards {
            assert!(uids.insert(d["uid"].as_str().expect("uid")), "{file}: uid");
            assert!(d["title"].is_string(), "{file}");
            assert!(
                d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
                "{file}"
            );
            let inputs = d["__inputs"].as_array().expect("__inputs");
            assert!(
                inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
                    && i["type"] == "datasource"
                    && i["pluginId"] == "prometheus"),
                "{file}: no DS_PROMETHEUS input"
            );
            let ds = |v: &serde_json::Value, what: &str| {
                assert_eq!(v["type"], "prometheus", "{file}: {what}");
                assert_eq!(v["uid"], "${DS_PROMETHEUS}", "{file}: {what}");
            };
            let mut ids = BTreeSet::new();
            let mut boxes: Vec<(u64, u64, u64, u64, String)> = Vec::new();
            for p in panels(d) {
                let title = p["title"].as_str().unwrap_or("").to_string();
                let id = p["id"].as_u64().expect("panel id");
                assert!(ids.insert(id), "{file}: panel id {id} twice");
                let g = &p["gridPos"];
                let n = |k: &str| {
                    g[k].as_u64()
                        .unwrap_or_else(|| panic!("{file}: {title}: gridPos.{k}"))
                };
                let (x, y, w, h) = (n("x"), n("y"), n("w"), n("h"));
                assert!(x + w <= 24 && w > 0 && h > 0, "{file}: {title}");
                for (bx, by, bw, bh, other) in &boxes {
                    let apart = x >= bx + bw || bx >= &(x + w) || y >= by + bh || by >= &(y + h);
                    assert!(apart, "{file}: {title} overlaps {other}");
                }
                boxes.push((x, y, w, h, title.clone()));
                let kind = p["type"].as_str().expect("type");
                if kind == "row" {
                    continue;
                }
                assert!(
                    ["timeseries", "stat", "table"].contains(&kind),
                    "{file}: {title}: {kind}"
                );
                ds(&p["datasource"], &title);
                let targets = p["targets"].as_array().expect("targets");
                assert!(!targets.is_empty(), "{file}: {title}");
                for t in targets {
                    ds(&t["datasource"], &title);
                    assert!(
                        t["expr"].as_str().is_some_and(|e| e.contains("shoal_")),
                        "{file}: {title}"
                    );
                }
            }
            for v in d["templating"]["list"].as_array().expect("templating") {
                if v["type"] == "query" {
                    ds(&v["datasource"], v["name"].as_str().unwrap_or(""));
                }
            }
            let mut used = BTreeSet::new();
            names_in(d, &mut used);
            assert!(!used.is_empty(), "{file}");
            let unknown: Vec<_> = used
                .iter()
                .filter(|n| !n.starts_with("shoal_hostd_") && !exported.contains(*n))
                .collect();
            assert!(
                unknown.is_empty(),
                "{file} queries metrics the controller does not write: {unknown:?}"
            );
        }
    }
}
