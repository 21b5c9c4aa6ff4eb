//! `GET /metrics` of `shoal-hostd`: the daemon in the Prometheus
//! (OpenMetrics) text format, behind the same token as the rest of its API
//! (the controller's).
//!
//! Counters kept since the start ([`crate::counters::HostdCounters`], and
//! QMP's process-wide counts in [`crate::qmp`]) plus gauges read at scrape time from the
//! daemon's state (VMs by state, commands by kind and state).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::Hostd;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

fn counter(reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
    let f = Family::<Labels, Counter>::default();
    for (l, v) in rows {
        f.get_or_create(&l).inc_by(v);
    }
    reg.register(name, help, f);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, f64)>) {
    let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (l, v) in rows {
        f.get_or_create(&l).set(v);
    }
    reg.register(name, help, f);
}

fn one(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

/// The exposition text of daemon `h` now.
pub fn render(h: &Hostd) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    let c = &h.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    gauge(
        &mut reg,
        "shoal_hostd_info",
        "The host daemon: version and host id",
        vec![(
            vec![
                ("version".into(), env!("CARGO_PKG_VERSION").into()),
                ("host".into(), h.host_id.clone()),
            ],
            1.0,
        )],
    );
    counter(
        &mut reg,
        "shoal_hostd_sensor_passes",
        "Sensor passes (host and VM metrics sampled)",
        vec![(Labels::new(), get(&c.sensor_passes))],
    );
    gauge(
        &mut reg,
        "shoal_hostd_sensor_seconds",
        "Time of the sensor passes: all of them (kind=total) and the last (last)",
        vec![
            (one("kind", "total"), get(&c.sensor_micros) as f64 / 1e6),
            (one("kind", "last"), get(&c.sensor_last_micros) as f64 / 1e6),
        ],
    );
    counter(
        &mut reg,
        "shoal_hostd_reports",
        "Reports to the controller, by outcome (sent: accepted)",
        vec![
            (one("outcome", "sent"), get(&c.reports_sent)),
            (one("outcome", "failed"), get(&c.reports_failed)),
        ],
    );
    counter(
        &mut reg,
        "shoal_hostd_registrations",
        "Registrations the controller accepted",
        vec![(Labels::new(), get(&c.registrations))],
    );
    counter(
        &mut reg,
        "shoal_hostd_controller_failovers",
        "Switches to the next controller of `controllers`",
        vec![(Labels::new(), get(&c.failovers))],
    );
    let (cmds, errs) = crate::qmp::counts();
    counter(
        &mut reg,
        "shoal_hostd_qmp_commands",
        "QMP commands sent to QEMU",
        vec![(Labels::new(), cmds)],
    );
    counter(
        &mut reg,
        "shoal_hostd_qmp_errors",
        "QMP commands that failed, by kind (io, closed, timeout, protocol, command: QEMU's error answer)",
        errs.iter().map(|(k, v)| (one("kind", k), *v)).collect(),
    );
    // VMs by state and commands by kind and state, now.
    // Every state, 0 included: a series per state that never disappears.
    let mut vms: std::collections::BTreeMap<String, f64> =
        ["running", "paused", "migrating_out", "incoming", "failed"]
            .into_iter()
            .map(|s| (s.to_string(), 0.0))
            .collect();
    for vm in h.all_vms() {
        let st = vm.status().state;
        let name = serde_json::to_value(st)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        *vms.entry(name).or_default() += 1.0;
    }
    gauge(
        &mut reg,
        "shoal_hostd_vms",
        "VMs on this host by state",
        vms.into_iter()
            .map(|(s, n)| (one("state", &s), n))
            .collect(),
    );
    let mut cmds: std::collections::BTreeMap<(String, String), f64> =
        std::collections::BTreeMap::new();
    for st in crate::state::lock(&h.commands).all() {
        let kind = serde_json::to_value(&st.command)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        let state = serde_json::to_value(st.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        *cmds.entry((kind, state)).or_default() += 1.0;
    }
    gauge(
        &mut reg,
        "shoal_hostd_commands",
        "Commands this daemon holds (kept across restarts), by kind and state",
        cmds.into_iter()
            .map(|((k, s), n)| (vec![("kind".to_string(), k), ("state".to_string(), s)], n))
            .collect(),
    );
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}
