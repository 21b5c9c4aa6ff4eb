//! The daemon: starts the VMs, the sensor loop, the dirty-rate sampler, the
//! reporter (registration + reports with retries) and the effector API.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use shoal_common::proto::{self, BridgeAttachment, Registration, Report, VmState};
use shoal_common::secret::Secret;
use tokio::sync::watch;

use crate::config::Config;
use crate::http::Backoff;
use crate::qemu::QemuRuntime;
use crate::sensor::{host_net_dev, remember, HostSensor, VmSensor};
use crate::state::{lock, Hostd, Vm};

/// The daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The token file is unusable.
    #[error("token: {0}")]
    Token(String),
    /// A TLS file is unusable.
    #[error(transparent)]
    Tls(#[from] shoal_common::tls::TlsError),
    /// A VM could not be set up.
    #[error("VM {0}: {1}")]
    Vm(String, String),
    /// The API cannot listen.
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    /// Signal handling could not be set up.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    /// The host sensor does not work here.
    #[error(transparent)]
    Sensor(#[from] crate::sensor::SensorError),
}

/// Reads a token file (first line; mode 0600 or stricter).
pub fn read_token(path: &std::path::Path) -> Result<Secret, DaemonError> {
    Secret::from_file(path).map_err(|e| DaemonError::Token(e.to_string()))
}

/// Starts every configured VM. A QEMU that fails to start is an error.
pub async fn start_vms(h: &Arc<Hostd>) -> Result<(), DaemonError> {
    for vc in &h.cfg.vms {
        let inv = vc.inventory();
        let plan = crate::plan::plan(&h.cfg, &inv)
            .await
            .map_err(|e| DaemonError::Vm(inv.name.clone(), e.to_string()))?;
        let rt = crate::commands::backend(inv.spec.kind())
            .start(&h.cfg, &inv, plan)
            .await
            .map_err(|e| DaemonError::Vm(inv.name.clone(), e))?;
        tracing::info!(vm = %inv.name, backend = ?inv.spec.kind(), "VM ready");
        h.add_vm(Arc::new(Vm::new(inv, rt, VmState::Running)));
    }
    Ok(())
}

/// Datapath id of `bridge` from `ovs-vsctl get bridge B datapath_id`.
pub async fn bridge_dpid(bridge: &str) -> Option<u64> {
    let out = crate::sys::run_cmd(
        "ovs-vsctl",
        &["--timeout=5", "get", "bridge", bridge, "datapath_id"],
        Duration::from_secs(6),
    )
    .await
    .map_err(|e| tracing::warn!(bridge, error = %e, "datapath id"))
    .ok()?;
    u64::from_str_radix(out.stdout.trim().trim_matches('"'), 16).ok()
}

/// The registration body for the current inventory.
pub async fn registration(h: &Hostd, cores: u32, memory_mb: u64) -> Registration {
    let cfg = &h.cfg;
    let nic_bps = cfg.nic_bps.unwrap_or_else(|| {
        cfg.uplink
            .as_ref()
            .and_then(|u| {
                std::fs::read_to_string(cfg.sys_root.join("class/net").join(u).join("speed")).ok()
            })
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|s| *s > 0)
            .map(|mbit| mbit as u64 * 1_000_000)
            .unwrap_or(1_000_000_000)
    });
    let vf_count = cfg.vf_count.unwrap_or_else(|| {
        cfg.sriov_pf
            .as_ref()
            .and_then(|pf| crate::sriov::total_vfs(&cfg.sys_root, pf).ok())
            .unwrap_or(0)
    });
    let bridge = match &cfg.bridge {
        Some(b) => {
            let dpid = match cfg.datapath_id {
                Some(d) => Some(d),
                None => bridge_dpid(b).await,
            };
            dpid.map(|datapath_id| BridgeAttachment {
                name: b.clone(),
                datapath_id,
            })
        }
        None => None,
    };
    let vms = h
        .all_vms()
        .iter()
        .filter(|v| lock(&v.shared).state != VmState::Incoming)
        .map(|v| v.status().inventory)
        .collect();
    Registration {
        host_id: h.host_id.clone(),
        api_url: cfg.effective_api_url(),
        dom0_addr: cfg
            .dom0_addr
            .clone()
            .unwrap_or_else(|| cfg.listen.ip().to_string()),
        cores,
        memory_mb,
        nic: cfg.uplink.clone().unwrap_or_default(),
        nic_bps,
        vf_count,
        bridge,
        interval_s: cfg.interval_s,
        vms,
        hostd_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Testbeds: host CPU and memory as the sum over the VMs (several
/// "hypervisors" share one machine, so procfs says nothing about one).
pub fn vm_sum_metrics(
    host: &mut shoal_common::proto::HostMetrics,
    vms: &[shoal_common::proto::VmMetrics],
    cores: Option<u32>,
    memory_mb: Option<u64>,
) {
    let cores = f64::from(cores.unwrap_or(1).max(1));
    // A VM still arriving does not run here yet (its source counts it).
    let here = || {
        vms.iter()
            .filter(|v| v.state != shoal_common::proto::VmState::Incoming)
    };
    let cpu: f64 = here().map(|v| v.cpu_cores).sum();
    host.cpu_util = (cpu / cores).clamp(0.0, 1.0);
    host.mem_used_mb = here().map(|v| v.used_memory_mb).sum();
    if let Some(m) = memory_mb {
        host.mem_total_mb = m;
    }
}

/// Samples host and VMs every interval and publishes the report.
pub async fn sensor_loop(h: Arc<Hostd>, mut host: HostSensor, tx: watch::Sender<Option<Report>>) {
    let period = Duration::from_secs_f64(h.cfg.interval_s);
    let mut vms = VmSensor::new();
    let mut seq = 0u64;
    let mut last = Instant::now();
    // Prime the counters so that the first report covers a whole interval.
    let prime = match &h.cfg.uplink_netns {
        Some(ns) => crate::sys::read_in_netns(ns, "net/dev").await.ok(),
        None => None,
    };
    if let Err(e) = host.sample_with(prime.as_deref()) {
        tracing::warn!(error = %e, "host sensor");
    }
    for vm in h.all_vms() {
        vms.sample(
            &vm,
            &h.cfg.proc_root,
            host_net_dev(&h.cfg.proc_root).as_ref(),
        )
        .await;
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let net_dev = match &h.cfg.uplink_netns {
            Some(ns) => match crate::sys::read_in_netns(ns, "net/dev").await {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(netns = %ns, error = %e, "cannot read the uplink's counters");
                    None
                }
            },
            None => None,
        };
        let host_m = match host.sample_with(net_dev.as_deref()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "host sensor");
                Default::default()
            }
        };
        let all = h.all_vms();
        let net = host_net_dev(&h.cfg.proc_root);
        let mut ms = Vec::with_capacity(all.len());
        for vm in &all {
            let m = vms.sample(vm, &h.cfg.proc_root, net.as_ref()).await;
            remember(vm, &m);
            if m.state == VmState::Failed {
                let mut s = lock(&vm.shared);
                if s.state == VmState::Running {
                    tracing::warn!(vm = %vm.name, "VM failed");
                    s.state = VmState::Failed;
                }
            }
            ms.push(m);
        }
        vms.retain(&all.iter().map(|v| v.name.clone()).collect::<Vec<_>>());
        let mut host_m = host_m;
        if h.cfg.host_metrics == crate::config::HostMetricsSource::Vms {
            vm_sum_metrics(&mut host_m, &ms, h.cfg.cores, h.cfg.memory_mb);
        }
        seq += 1;
        let report = Report {
            host_id: h.host_id.clone(),
            seq,
            at_unix_ms: crate::sys::unix_ms(),
            interval_s: now.duration_since(last).as_secs_f64(),
            host: host_m,
            vms: ms,
            events: Vec::new(),
        };
        last = now;
        tracing::debug!(
            seq,
            vms = report.vms.len(),
            cpu = report.host.cpu_util,
            "report ready"
        );
        let _ = tx.send(Some(report));
    }
}

/// Measures each running QEMU VM's dirty rate every `dirty_rate_period_s`.
pub async fn dirty_rate_loop(h: Arc<Hostd>) {
    let period = h.cfg.dirty_rate_period_s;
    if period <= 0.0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(period));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for vm in h.all_vms() {
            let Some(rt) = vm.runtime.downcast::<QemuRuntime>() else {
                continue;
            };
            {
                let s = lock(&vm.shared);
                if s.state != VmState::Running || s.busy.is_some() {
                    continue;
                }
            }
            match crate::qemu::measure_dirty_rate(&rt.qmp, h.cfg.dirty_rate_calc_s).await {
                Ok(r) => lock(&vm.shared).dirty_rate_mbps = Some(r),
                Err(e) => tracing::debug!(vm = %vm.name, error = %e, "dirty rate"),
            }
        }
    }
}

/// Registers with the controller and sends every report, retrying with
/// backoff and jitter; never gives up, never crashes.
pub async fn reporter_loop(
    h: Arc<Hostd>,
    controller: String,
    mut rx: watch::Receiver<Option<Report>>,
    cores: u32,
    memory_mb: u64,
) {
    let base = controller.trim_end_matches('/').to_string();
    let reg_url = format!("{base}{}", proto::host_path(&h.host_id));
    let rep_url = format!("{base}{}", proto::report_path(&h.host_id));
    let mut registered_gen = 0u64;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut pending_register = true;
    loop {
        let gen = h.inventory_gen.load(Ordering::SeqCst);
        if pending_register || gen != registered_gen {
            let body = registration(&h, cores, memory_mb).await;
            let json = serde_json::to_vec(&body).unwrap_or_default();
            match h
                .http
                .send(Method::PUT, &reg_url, Some(h.token.expose()), Some(json))
                .await
            {
                Ok((code, _)) if (200..300).contains(&code) => {
                    tracing::info!(url = %reg_url, vms = body.vms.len(), "registered with the controller");
                    registered_gen = gen;
                    pending_register = false;
                    backoff.reset();
                }
                Ok((code, b)) => {
                    let d = backoff.next_delay();
                    tracing::warn!(url = %reg_url, code, body = %String::from_utf8_lossy(&b), retry_in = ?d, "registration refused");
                    tokio::time::sleep(d).await;
                    continue;
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(url = %reg_url, error = %e, retry_in = ?d, "controller unreachable");
                    tokio::time::sleep(d).await;
                    continue;
                }
            }
        }
        // The latest report (wait for a new one if it was sent already).
        let report = {
            let cur = rx.borrow_and_update().clone();
            match cur {
                Some(r) => r,
                None => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
            }
        };
        let mut report = report;
        report.events = lock(&h.events).pending();
        let max_seq = report.events.iter().map(|e| e.seq).max();
        let json = serde_json::to_vec(&report).unwrap_or_default();
        match h
            .http
            .send(Method::POST, &rep_url, Some(h.token.expose()), Some(json))
            .await
        {
            Ok((code, _)) if (200..300).contains(&code) => {
                if let Some(s) = max_seq {
                    lock(&h.events).ack(s);
                }
                backoff.reset();
                tracing::debug!(seq = report.seq, "report sent");
                // Mark as sent; wait for the next one.
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Ok((404, _)) => {
                tracing::info!("controller does not know this host: registering again");
                pending_register = true;
            }
            Ok((code, b)) => {
                let d = backoff.next_delay();
                tracing::warn!(url = %rep_url, code, body = %String::from_utf8_lossy(&b), retry_in = ?d, "report refused");
                tokio::time::sleep(d).await;
            }
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!(url = %rep_url, error = %e, retry_in = ?d, "report not delivered");
                tokio::time::sleep(d).await;
            }
        }
    }
}

/// Runs the daemon until SIGINT/SIGTERM. VMs keep running after it exits.
pub async fn run(
    cfg: Config,
    token: Secret,
    controller_token: Option<Secret>,
) -> Result<(), DaemonError> {
    cfg.validate()?;
    let host_id = cfg.host_id.clone().unwrap_or_else(crate::sys::hostname);
    if controller_token.is_none() {
        tracing::warn!("no controller_token_file: the API refuses every call but /healthz");
    }
    let server_tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(c), Some(k)) => Some(shoal_common::tls::server_config(c, k, None)?),
        (None, None) => None,
        _ => {
            return Err(DaemonError::Token(
                "tls_cert_file and tls_key_file go together".into(),
            ))
        }
    };
    let client_tls = match &cfg.ca_file {
        Some(ca) => Some(shoal_common::tls::client_config(ca, None)?),
        None => None,
    };
    let mut hostd = Hostd::new(cfg, host_id, token, controller_token);
    if let Some(t) = client_tls {
        hostd.http = shoal_common::http::HttpClient::with_tls(
            std::time::Duration::from_secs_f64(hostd.cfg.http_timeout_s),
            Some(t),
        );
    }
    let h = Arc::new(hostd);
    let host = HostSensor::new(h.cfg.proc_root.clone(), h.cfg.uplink.clone());
    let (cores, memory_mb) = host.capacity()?;
    let cores = h.cfg.cores.unwrap_or(cores);
    let memory_mb = h.cfg.memory_mb.unwrap_or(memory_mb);
    let listener = tokio::net::TcpListener::bind(h.cfg.listen)
        .await
        .map_err(|e| DaemonError::Listen(h.cfg.listen.to_string(), e))?;
    start_vms(&h).await?;
    tracing::info!(host = %h.host_id, listen = %h.cfg.listen, vms = h.all_vms().len(), "shoal-hostd running");
    let api = match server_tls {
        Some(tls) => tokio::spawn(crate::api::serve_tls(h.clone(), listener, tls)),
        None => tokio::spawn(crate::api::serve(h.clone(), listener)),
    };
    let (tx, rx) = watch::channel(None);
    tokio::spawn(sensor_loop(h.clone(), host, tx));
    tokio::spawn(dirty_rate_loop(h.clone()));
    match h.cfg.controller.clone() {
        Some(c) => {
            tokio::spawn(reporter_loop(h.clone(), c, rx, cores, memory_mb));
        }
        None => tracing::warn!("no controller configured: not registering or reporting"),
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DaemonError::Signal)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
        _ = term.recv() => tracing::info!("terminated"),
        r = api => tracing::error!(result = ?r, "API server stopped"),
    }
    Ok(())
}

#[cfg(test)]
mod vm_sum_tests {
    use super::vm_sum_metrics;
    use shoal_common::proto::{BackendKind, HostMetrics, VmMetrics, VmState};

    fn vm(cpu_cores: f64, used: u64) -> VmMetrics {
        VmMetrics {
            name: "v".into(),
            backend: BackendKind::Netns,
            state: VmState::Running,
            cpu_cores,
            cpu_util: cpu_cores,
            gotten_ms: None,
            wait_ms: None,
            blocked_ms: None,
            memory_mb: 512,
            max_memory_mb: 512,
            used_memory_mb: used,
            tx_bytes_per_s: 0.0,
            rx_bytes_per_s: 0.0,
            tx_packets_per_s: 0.0,
            rx_packets_per_s: 0.0,
            dirty_rate_mbps: None,
            vf_attached: false,
        }
    }

    #[test]
    fn host_numbers_from_the_vms() {
        let mut h = HostMetrics {
            cpu_util: 0.05,
            mem_used_mb: 9000,
            mem_total_mb: 24000,
            nic_tx_bytes_per_s: 7.0,
            ..Default::default()
        };
        vm_sum_metrics(&mut h, &[vm(1.5, 300), vm(1.0, 200)], Some(4), Some(2048));
        assert!((h.cpu_util - 0.625).abs() < 1e-12);
        assert_eq!(h.mem_used_mb, 500);
        assert_eq!(h.mem_total_mb, 2048);
        assert_eq!(h.nic_tx_bytes_per_s, 7.0, "network stays real");
        vm_sum_metrics(&mut h, &[vm(9.0, 0)], Some(4), None);
        assert_eq!(h.cpu_util, 1.0);
        let mut incoming = vm(2.0, 100);
        incoming.state = VmState::Incoming;
        vm_sum_metrics(&mut h, &[vm(1.0, 50), incoming], Some(4), None);
        assert!(
            (h.cpu_util - 0.25).abs() < 1e-12,
            "an arriving VM is not counted"
        );
        assert_eq!(h.mem_used_mb, 50);
    }
}
