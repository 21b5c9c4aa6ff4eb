//! The I/O side: one tokio task per switch (its TCP connection, its frame
//! inbox from peer switches, its timers and its load), and the run's
//! phases: connect → warm-up (hosts announce themselves) → load → report.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ofp::{Message, OfpMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::frames;
use crate::load::{percentile, Answer, Driver, LoadOptions, LoadStats, Mode};
use crate::procstat;
use crate::switch::{Effect, Switch, SwitchCounters};
use crate::topo::Topology;
use crate::traffic::{self, Traffic};

/// Frames queued to one switch at most (more are dropped, like a full NIC
/// ring).
const INBOX: usize = 4096;
/// Hops a frame may take through emulated switches (loop guard).
const MAX_HOPS: u8 = 32;
/// How often flows are expired.
const EXPIRE_EVERY: Duration = Duration::from_millis(250);
/// How often an idle switch sends ECHO_REQUEST (as OVS's inactivity probe).
const ECHO_EVERY: Duration = Duration::from_secs(5);
/// How often hosts send their gratuitous ARP during the warm-up.
const GARP_EVERY: Duration = Duration::from_secs(1);

/// A run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The controller's OpenFlow address.
    pub controller: SocketAddr,
    /// The emulated network.
    pub topology: Topology,
    /// Load mode.
    pub mode: Mode,
    /// PACKET_INs outstanding per switch (throughput).
    pub window: usize,
    /// Seconds of load.
    pub duration: Duration,
    /// Warm-up after every switch is connected (LLDP, hosts' ARPs).
    pub warmup: Duration,
    /// Longest wait for every switch's handshake.
    pub connect_timeout: Duration,
    /// Switch `i` opens its connection `i` times this after the start
    /// (zero: all at once).
    pub connect_stagger: Duration,
    /// Print a line per second.
    pub per_second_lines: bool,
    /// Pair flows per switch (stats).
    pub flows: usize,
    /// Longest wait for every pair flow to be installed (stats).
    pub setup_timeout: Duration,
    /// Stats: every switch adds its pair flows itself at handshake
    /// completion (no PACKET_INs; for a controller that installs none).
    pub preinstall: bool,
    /// Where to read the controller's traffic matrix at the end (stats).
    pub api: Option<ApiCheck>,
    /// The controller's process id: its CPU time and memory over the
    /// measurement are reported.
    pub cpu_pid: Option<u32>,
    /// How load PACKET_INs are made and answered.
    pub load: LoadOptions,
}

/// The controller API to check λ against the truth (stats mode).
#[derive(Debug, Clone)]
pub struct ApiCheck {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Bearer token (a reader's).
    pub token: Option<String>,
    /// Relative error a pair's λ may have and still count as right.
    pub tolerance: f64,
}

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Not every switch completed its handshake in time.
    #[error("only {done} of {total} switches completed the handshake within {secs} s")]
    Handshake {
        /// Switches done.
        done: usize,
        /// Switches emulated.
        total: usize,
        /// The timeout.
        secs: u64,
    },
    /// Not every pair flow was installed in time (stats).
    #[error("only {installed} of {total} pair flows were installed within {secs} s")]
    Setup {
        /// Pairs with a flow.
        installed: usize,
        /// Pairs planned.
        total: usize,
        /// The timeout.
        secs: u64,
    },
}

/// Phases every switch task follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Warmup,
    Load,
    Done,
}

/// Results of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Mode.
    pub mode: Mode,
    /// The matching rule.
    pub answer: Answer,
    /// Load PACKET_INs from fresh source MACs.
    pub fresh_src: bool,
    /// Switches emulated.
    pub switches: usize,
    /// Hosts emulated.
    pub hosts: usize,
    /// Window (throughput).
    pub window: usize,
    /// Switches whose handshake completed (FEATURES and PORT_DESC answered).
    pub handshakes: usize,
    /// Seconds of load measured.
    pub duration_s: f64,
    /// Answers per second, second by second.
    pub per_second: Vec<u64>,
    /// Load PACKET_INs sent.
    pub packet_ins: u64,
    /// PACKET_INs answered.
    pub responses: u64,
    /// Answered by a FLOW_MOD.
    pub responses_by_flow_mod: u64,
    /// Answered by a PACKET_OUT only.
    pub responses_by_packet_out: u64,
    /// Given up after 2 s.
    pub timeouts: u64,
    /// Answers per second over the whole load.
    pub responses_per_s: f64,
    /// PACKET_IN → FLOW_MOD latency samples.
    pub latency_samples: usize,
    /// Median latency, µs.
    pub latency_p50_us: Option<u64>,
    /// 99th percentile, µs.
    pub latency_p99_us: Option<u64>,
    /// 99.9th percentile, µs.
    pub latency_p999_us: Option<u64>,
    /// FLOW_MODs received (all switches).
    pub flow_mods: u64,
    /// PACKET_OUTs received.
    pub packet_outs: u64,
    /// Pipeline PACKET_INs (LLDP, ARP) sent.
    pub pipeline_packet_ins: u64,
    /// FLOW_REMOVEDs sent.
    pub flow_removed: u64,
    /// ERRORs sent to the controller.
    pub errors_sent: u64,
    /// ERRORs received from the controller.
    pub errors_received: u64,
    /// Flow entries in all switches at the end.
    pub flows_at_end: usize,
    /// Directed inter-switch links of the emulated topology.
    pub links_expected: usize,
    /// Seconds from the last handshake until the controller's
    /// `GET /api/v1/links` listed every one of them (with `--api`; None
    /// when it never did during the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_s: Option<f64>,
    /// Statistics load results (stats mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsReport>,
    /// The controller process over the measurement (with `cpu_pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<ProcessReport>,
}

/// CPU and memory of the controller's process over the measurement.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProcessReport {
    /// Its process id.
    pub pid: u32,
    /// CPU seconds (user + system, all threads) used during the
    /// measurement.
    pub cpu_s: f64,
    /// CPU seconds per second of measurement (1.0 = one core busy).
    pub cores: f64,
    /// Resident memory at the end, kB.
    pub rss_kb: u64,
}

/// What the statistics load measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatsReport {
    /// Pair flows planned (all switches).
    pub pairs: usize,
    /// The switches added the pair flows themselves (`--preinstall`).
    pub preinstall: bool,
    /// Seconds from the start of the load until every pair had its flow.
    pub setup_s: f64,
    /// FLOW stats requests answered during the measurement.
    pub flow_stats_requests: u64,
    /// Flow entries served in them.
    pub flow_entries_served: u64,
    /// Flow entries served per second.
    pub flow_entries_per_s: f64,
    /// FLOW stats requests per switch per second (the achieved poll rate).
    pub polls_per_switch_per_s: f64,
    /// Total configured traffic, bytes/s (the truth's sum).
    pub truth_bytes_per_s: u64,
    /// The λ check against the controller's API, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda: Option<LambdaCheck>,
}

/// The controller's λ compared with the emulator's truth.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LambdaCheck {
    /// Pairs compared.
    pub pairs: usize,
    /// Pairs of the truth missing from the controller's matrix.
    pub missing: usize,
    /// Pairs whose λ is within the tolerance of the truth.
    pub within_tolerance: usize,
    /// The tolerance (relative).
    pub tolerance: f64,
    /// Largest relative error.
    pub max_rel_err: f64,
    /// Median relative error.
    pub median_rel_err: f64,
    /// Sum of λ over the truth's pairs ÷ the truth's sum.
    pub total_ratio: f64,
    /// Seconds the GET took.
    pub fetch_s: f64,
    /// Why the check could not be made, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Shared {
    handshakes: AtomicUsize,
    responses: AtomicU64,
    installed: AtomicUsize,
    stats_requests: AtomicU64,
    entries_served: AtomicU64,
    inboxes: Vec<mpsc::Sender<(u32, Vec<u8>, u8)>>,
    topology: Topology,
    /// The far end of every cable end (see [`Topology::peer`]), indexed.
    peers: std::collections::HashMap<(usize, u32), (usize, u32)>,
}

struct TaskResult {
    handshaken: bool,
    load: LoadStats,
    counters: SwitchCounters,
    flows: usize,
}

/// Runs the emulation and the load; returns the report.
pub async fn run(cfg: RunConfig) -> Result<Report, RunError> {
    let n = cfg.topology.switches.len();
    let mut receivers = Vec::with_capacity(n);
    let mut inboxes = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::channel(INBOX);
        inboxes.push(tx);
        receivers.push(rx);
    }
    let shared = Arc::new(Shared {
        handshakes: AtomicUsize::new(0),
        responses: AtomicU64::new(0),
        installed: AtomicUsize::new(0),
        stats_requests: AtomicU64::new(0),
        entries_served: AtomicU64::new(0),
        inboxes,
        topology: cfg.topology.clone(),
        peers: cfg
            .topology
            .links
            .iter()
            .flat_map(|&(a, b)| [(a, b), (b, a)])
            .collect(),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let mut tasks = Vec::with_capacity(n);
    for (i, rx) in receivers.into_iter().enumerate() {
        let shared = shared.clone();
        let phase = phase_rx.clone();
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            switch_task(i, cfg, shared, rx, phase).await
        }));
    }

    // Every handshake, then the warm-up.
    let deadline = Instant::now() + cfg.connect_timeout;
    while shared.handshakes.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let handshakes = shared.handshakes.load(Ordering::Relaxed);
    if handshakes < n {
        let _ = phase_tx.send(Phase::Done);
        for t in tasks {
            let _ = t.await;
        }
        return Err(RunError::Handshake {
            done: handshakes,
            total: n,
            secs: cfg.connect_timeout.as_secs(),
        });
    }
    let _ = phase_tx.send(Phase::Warmup);
    // With the API: how long the controller takes to know every cable.
    let links_expected = 2 * cfg.topology.links.len();
    let discovery = match (&cfg.api, links_expected) {
        (Some(api), n) if n > 0 => Some(tokio::spawn(discover(
            api.clone(),
            n,
            Instant::now(),
            phase_rx.clone(),
        ))),
        _ => None,
    };
    tokio::time::sleep(cfg.warmup).await;

    // Load, sampled every second.
    let _ = phase_tx.send(Phase::Load);
    let mut stats = None;
    if cfg.mode == Mode::Stats {
        // First every pair flow, then the measurement.
        let truth: Vec<(ofp::MacAddr, ofp::MacAddr, u64)> = (0..n)
            .flat_map(|i| {
                let local = cfg.topology.hosts_of(i);
                let all = cfg.topology.reachable_hosts(i);
                traffic::plan(&local, &all, cfg.flows)
            })
            .map(|(a, b)| (a.mac, b.mac, traffic::pair_rate(a.mac, b.mac)))
            .collect();
        let t0 = Instant::now();
        let deadline = t0 + cfg.setup_timeout;
        let mut last_print = t0;
        while shared.installed.load(Ordering::Relaxed) < truth.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if cfg.per_second_lines && last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                println!(
                    "setup: {}/{} pair flows installed",
                    shared.installed.load(Ordering::Relaxed),
                    truth.len()
                );
            }
        }
        let installed = shared.installed.load(Ordering::Relaxed);
        if installed < truth.len() {
            let _ = phase_tx.send(Phase::Done);
            for t in tasks {
                let _ = t.await;
            }
            return Err(RunError::Setup {
                installed,
                total: truth.len(),
                secs: cfg.setup_timeout.as_secs(),
            });
        }
        stats = Some((t0.elapsed().as_secs_f64(), truth));
    }
    let served_at_start = (
        shared.stats_requests.load(Ordering::Relaxed),
        shared.entries_served.load(Ordering::Relaxed),
    );
    let cpu_at_start = cfg.cpu_pid.and_then(procstat::cpu_seconds);
    let start = Instant::now();
    let mut per_second = Vec::new();
    let mut last = 0u64;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let secs = cfg.duration.as_secs().max(1);
    for s in 1..=secs {
        tick.tick().await;
        let counter = if cfg.mode == Mode::Stats {
            &shared.entries_served
        } else {
            &shared.responses
        };
        let now_total = counter.load(Ordering::Relaxed);
        let d = now_total - last;
        last = now_total;
        per_second.push(d);
        if cfg.per_second_lines && cfg.mode == Mode::Stats {
            println!("{s:>4} s  {d:>9} flow entries served/s");
        } else if cfg.per_second_lines && cfg.mode != Mode::Idle {
            println!("{s:>4} s  {d:>9} responses/s");
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let controller = match (cfg.cpu_pid, cpu_at_start) {
        (Some(pid), Some(c0)) => procstat::cpu_seconds(pid).map(|c1| ProcessReport {
            pid,
            cpu_s: c1 - c0,
            cores: (c1 - c0) / elapsed.max(1e-9),
            rss_kb: procstat::rss_kb(pid).unwrap_or(0),
        }),
        _ => None,
    };
    let stats = match stats {
        Some((setup_s, truth)) => {
            let requests = shared.stats_requests.load(Ordering::Relaxed) - served_at_start.0;
            let entries = shared.entries_served.load(Ordering::Relaxed) - served_at_start.1;
            let lambda = match &cfg.api {
                Some(api) => Some(check_lambda(api, &truth).await),
                None => None,
            };
            Some(StatsReport {
                pairs: truth.len(),
                preinstall: cfg.preinstall,
                setup_s,
                flow_stats_requests: requests,
                flow_entries_served: entries,
                flow_entries_per_s: entries as f64 / elapsed.max(1e-9),
                polls_per_switch_per_s: requests as f64 / elapsed.max(1e-9) / n.max(1) as f64,
                truth_bytes_per_s: truth.iter().map(|t| t.2).sum(),
                lambda,
            })
        }
        None => None,
    };
    let _ = phase_tx.send(Phase::Done);

    let discovery_s = match discovery {
        Some(t) => t.await.ok().flatten(),
        None => None,
    };
    let mut load = LoadStats::default();
    let mut counters = SwitchCounters::default();
    let mut flows = 0;
    let mut done = 0;
    for t in tasks {
        let Ok(r) = t.await else { continue };
        done += usize::from(r.handshaken);
        flows += r.flows;
        load.packet_ins += r.load.packet_ins;
        load.responses += r.load.responses;
        load.by_flow_mod += r.load.by_flow_mod;
        load.by_packet_out += r.load.by_packet_out;
        load.timeouts += r.load.timeouts;
        load.latencies_us.extend(r.load.latencies_us);
        counters.flow_mods += r.counters.flow_mods;
        counters.packet_outs += r.counters.packet_outs;
        counters.pipeline_packet_ins += r.counters.pipeline_packet_ins;
        counters.flow_removed += r.counters.flow_removed;
        counters.errors_sent += r.counters.errors_sent;
        counters.errors_received += r.counters.errors_received;
    }
    load.latencies_us.sort_unstable();
    let lat = &load.latencies_us;
    Ok(Report {
        mode: cfg.mode,
        answer: cfg.load.answer,
        fresh_src: cfg.load.fresh_src,
        switches: n,
        hosts: cfg.topology.hosts.len(),
        window: if cfg.mode == Mode::Latency {
            1
        } else {
            cfg.window
        },
        handshakes: done,
        duration_s: elapsed,
        per_second,
        packet_ins: load.packet_ins,
        responses: load.responses,
        responses_by_flow_mod: load.by_flow_mod,
        responses_by_packet_out: load.by_packet_out,
        timeouts: load.timeouts,
        responses_per_s: load.responses as f64 / elapsed.max(1e-9),
        latency_samples: lat.len(),
        latency_p50_us: percentile(lat, 0.5),
        latency_p99_us: percentile(lat, 0.99),
        latency_p999_us: percentile(lat, 0.999),
        flow_mods: counters.flow_mods,
        packet_outs: counters.packet_outs,
        pipeline_packet_ins: counters.pipeline_packet_ins,
        flow_removed: counters.flow_removed,
        errors_sent: counters.errors_sent,
        errors_received: counters.errors_received,
        flows_at_end: flows,
        links_expected,
        discovery_s,
        stats,
        controller,
    })
}

/// Polls `GET /api/v1/links` every 100 ms until it lists `want` links (the
/// seconds since `t0`) or the run ends (None).
async fn discover(
    api: ApiCheck,
    want: usize,
    t0: Instant,
    mut phase: watch::Receiver<Phase>,
) -> Option<f64> {
    let client = shoal_common::http::HttpClient::new(Duration::from_secs(10))
        .with_max_body(want.saturating_mul(512).max(1 << 20));
    let url = format!("{}/api/v1/links", api.url.trim_end_matches('/'));
    loop {
        if *phase.borrow() == Phase::Done {
            return None;
        }
        if let Ok((200, body)) = client
            .send(
                shoal_common::http::Method::GET,
                &url,
                api.token.as_deref(),
                None,
            )
            .await
        {
            let n = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
                .map(|v| v.len())
                .unwrap_or(0);
            if n >= want {
                return Some(t0.elapsed().as_secs_f64());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = phase.changed() => {}
        }
    }
}

/// Reads `GET /api/v1/traffic-matrix` and compares each pair of the truth
/// (source, destination, bytes/s) with the controller's λ.
async fn check_lambda(api: &ApiCheck, truth: &[(ofp::MacAddr, ofp::MacAddr, u64)]) -> LambdaCheck {
    let mut out = LambdaCheck {
        pairs: truth.len(),
        tolerance: api.tolerance,
        ..LambdaCheck::default()
    };
    // About 250 bytes of JSON per pair.
    let client = shoal_common::http::HttpClient::new(Duration::from_secs(120))
        .with_max_body(truth.len().saturating_mul(512).max(1 << 20));
    let url = format!("{}/api/v1/traffic-matrix", api.url.trim_end_matches('/'));
    let t0 = Instant::now();
    let got = client
        .send(
            shoal_common::http::Method::GET,
            &url,
            api.token.as_deref(),
            None,
        )
        .await;
    out.fetch_s = t0.elapsed().as_secs_f64();
    let body = match got {
        Ok((200, body)) => body,
        Ok((status, body)) => {
            let text = String::from_utf8_lossy(body.get(..body.len().min(200)).unwrap_or_default());
            out.error = Some(format!("GET {url}: HTTP {status}: {text}"));
            return out;
        }
        Err(e) => {
            out.error = Some(format!("GET {url}: {e}"));
            return out;
        }
    };
    #[derive(serde::Deserialize)]
    struct Pair {
        src: String,
        dst: String,
        bytes_per_s: f64,
    }
    #[derive(serde::Deserialize)]
    struct Matrix {
        pairs: Vec<Pair>,
    }
    let m: Matrix = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            out.error = Some(format!("GET {url}: not a traffic matrix: {e}"));
            return out;
        }
    };
    let lambda: std::collections::HashMap<(String, String), f64> = m
        .pairs
        .into_iter()
        .map(|p| {
            (
                (p.src.to_ascii_lowercase(), p.dst.to_ascii_lowercase()),
                p.bytes_per_s,
            )
        })
        .collect();
    let mut errs = Vec::with_capacity(truth.len());
    let mut sum_lambda = 0.0;
    let mut sum_truth = 0.0;
    for (src, dst, rate) in truth {
        let key = (
            src.to_string().to_ascii_lowercase(),
            dst.to_string().to_ascii_lowercase(),
        );
        let truth = *rate as f64;
        sum_truth += truth;
        match lambda.get(&key) {
            Some(l) => {
                sum_lambda += l;
                let e = (l - truth).abs() / truth;
                if e <= api.tolerance {
                    out.within_tolerance += 1;
                }
                errs.push(e);
            }
            None => {
                out.missing += 1;
                errs.push(1.0);
            }
        }
    }
    errs.sort_by(f64::total_cmp);
    out.max_rel_err = errs.last().copied().unwrap_or(0.0);
    out.median_rel_err = errs.get(errs.len() / 2).copied().unwrap_or(0.0);
    out.total_ratio = if sum_truth > 0.0 {
        sum_lambda / sum_truth
    } else {
        0.0
    };
    out
}

async fn connect(addr: SocketAddr, phase: &mut watch::Receiver<Phase>) -> Option<TcpStream> {
    let mut backoff = Duration::from_millis(50);
    loop {
        if *phase.borrow() == Phase::Done {
            return None;
        }
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Some(s);
            }
            Err(e) => {
                debug!(%addr, error = %e, "connect failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn encode(m: &OfpMessage, out: &mut Vec<u8>) {
    if let Err(e) = m.encode(out) {
        warn!(error = %e, msg = m.body.name(), "cannot encode");
    }
}

/// Sends the effects: messages into `wbuf`, frames to peers.
fn dispatch(i: usize, effects: Vec<Effect>, hops: u8, shared: &Shared, wbuf: &mut Vec<u8>) {
    for e in effects {
        match e {
            Effect::Send(m) => encode(&m, wbuf),
            Effect::Emit { port, frame } => {
                if hops >= MAX_HOPS {
                    continue;
                }
                if let Some(&(j, peer_port)) = shared.peers.get(&(i, port)) {
                    if let Some(tx) = shared.inboxes.get(j) {
                        // A full inbox drops the frame, like a full ring.
                        let _ = tx.try_send((peer_port, frame, hops + 1));
                    }
                }
                // Frames out of host ports are delivered to the host
                // (nothing more happens).
            }
        }
    }
}

/// The port of switch `i` a frame to `dst` leaves by: the host's own port
/// on its switch, else the cable towards the host's switch (a linear
/// chain: the lower or the higher neighbour).
fn egress(topo: &Topology, i: usize, dst: &crate::topo::Host) -> u32 {
    if dst.switch == i {
        return dst.port;
    }
    let toward = if dst.switch < i { i - 1 } else { i + 1 };
    topo.links
        .iter()
        .find_map(|&((a, pa), (b, pb))| {
            if a == i && b == toward {
                Some(pa)
            } else if b == i && a == toward {
                Some(pb)
            } else {
                None
            }
        })
        .unwrap_or(dst.port)
}

async fn switch_task(
    i: usize,
    cfg: RunConfig,
    shared: Arc<Shared>,
    mut inbox: mpsc::Receiver<(u32, Vec<u8>, u8)>,
    mut phase: watch::Receiver<Phase>,
) -> TaskResult {
    let topo = &shared.topology;
    let now = Instant::now();
    let Some(spec) = topo.switches.get(i) else {
        return TaskResult {
            handshaken: false,
            load: LoadStats::default(),
            counters: SwitchCounters::default(),
            flows: 0,
        };
    };
    let mut sw = Switch::new(i, spec, now);
    let local = topo.hosts_of(i);
    let mut driver = Driver::new(
        cfg.mode,
        cfg.window,
        local.clone(),
        topo.reachable_hosts(i),
        (i as u64) << 40,
    )
    .with_options(cfg.load);
    let mut traffic = (cfg.mode == Mode::Stats).then(|| {
        Traffic::new(
            &local,
            &topo.reachable_hosts(i),
            cfg.flows,
            cfg.window,
            (i as u64) << 40,
        )
    });
    let result = |sw: &Switch, driver: Driver, handshaken: bool| TaskResult {
        handshaken,
        load: driver.stats,
        counters: sw.counters.clone(),
        flows: sw.table.len(),
    };
    if !cfg.connect_stagger.is_zero() {
        let delay = cfg
            .connect_stagger
            .saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
        tokio::time::sleep(delay).await;
    }
    let Some(stream) = connect(cfg.controller, &mut phase).await else {
        return result(&sw, driver, false);
    };
    let (mut rd, mut wr) = stream.into_split();
    let mut wbuf = Vec::with_capacity(64 * 1024);
    encode(&Switch::hello(), &mut wbuf);
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut handshaken = false;
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    let mut echo = tokio::time::interval(ECHO_EVERY);
    let mut garp = tokio::time::interval(GARP_EVERY);
    let mut refill = tokio::time::interval(Duration::from_millis(5));
    refill.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut cur = *phase.borrow();
    loop {
        if !wbuf.is_empty() {
            if let Err(e) = wr.write_all(&wbuf).await {
                warn!(dpid = sw.dpid, error = %e, "write failed");
                break;
            }
            wbuf.clear();
        }
        if cur == Phase::Done {
            break;
        }
        // Nothing to refill once every pair flow of the statistics load
        // is in (no wake-ups per switch then).
        let refilling = cur == Phase::Load && traffic.as_ref().is_none_or(|t| !t.done());
        tokio::select! {
            r = rd.read(&mut chunk) => {
                let n = match r {
                    Ok(0) | Err(_) => {
                        warn!(dpid = sw.dpid, "controller closed the connection");
                        break;
                    }
                    Ok(n) => n,
                };
                rbuf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                let now = Instant::now();
                let mut off = 0;
                loop {
                    let rest = rbuf.get(off..).unwrap_or_default();
                    let len = match ofp::check_frame(rest) {
                        Ok(Some(len)) => len,
                        Ok(None) => break,
                        Err(e) => {
                            warn!(dpid = sw.dpid, error = %e, "bad framing from controller");
                            return result(&sw, driver, handshaken);
                        }
                    };
                    let raw = rest.get(..len).unwrap_or_default();
                    off += len;
                    let msg = match OfpMessage::decode(raw) {
                        Ok(m) => m,
                        Err(e) => {
                            warn!(dpid = sw.dpid, error = %e, "undecodable message");
                            let kind = ofp::ErrorKind::BadRequest(ofp::BadRequestCode::BadLen);
                            let data = raw.get(..raw.len().min(64)).unwrap_or_default().to_vec();
                            let xid = ofp::Header::parse(raw).map(|h| h.xid).unwrap_or(0);
                            encode(&OfpMessage::new(xid, Message::Error(ofp::ErrorMsg::new(kind, data))), &mut wbuf);
                            continue;
                        }
                    };
                    if cur == Phase::Load {
                        let answered = match &msg.body {
                            Message::FlowMod(fm) => driver.on_flow_mod(fm, now),
                            Message::PacketOut(po) => driver.on_packet_out(po),
                            _ => false,
                        };
                        if answered {
                            shared.responses.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // A pair flow of the statistics load starts its
                    // traffic once applied.
                    let pair_add = match (&traffic, &msg.body) {
                        (Some(_), Message::FlowMod(fm)) if fm.command == ofp::FlowModCommand::Add => {
                            Some((fm.table_id, fm.priority, fm.match_.clone()))
                        }
                        _ => None,
                    };
                    let served = (sw.counters.flow_stats_requests, sw.counters.flow_entries_served);
                    let effects = sw.handle(msg, raw, now);
                    dispatch(i, effects, 0, &shared, &mut wbuf);
                    if let (Some(tr), Some((table, prio, m))) = (traffic.as_mut(), pair_add) {
                        if tr.on_flow_add(&mut sw, table, prio, &m, now) {
                            shared.installed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if sw.counters.flow_stats_requests != served.0 {
                        shared.stats_requests.fetch_add(sw.counters.flow_stats_requests - served.0, Ordering::Relaxed);
                        shared.entries_served.fetch_add(sw.counters.flow_entries_served - served.1, Ordering::Relaxed);
                    }
                    if !handshaken && sw.features_sent && sw.port_desc_sent {
                        handshaken = true;
                        shared.handshakes.fetch_add(1, Ordering::Relaxed);
                        if cfg.preinstall {
                            if let Some(tr) = traffic.as_mut() {
                                let added = tr.preinstall(&mut sw, |dst| egress(topo, i, dst), now);
                                shared.installed.fetch_add(added, Ordering::Relaxed);
                            }
                        }
                    }
                }
                rbuf.drain(..off);
                if cur == Phase::Load {
                    for m in driver.fill(&mut sw, now) {
                        encode(&m, &mut wbuf);
                    }
                    if let Some(tr) = traffic.as_mut() {
                        for m in tr.fill(&mut sw, now) {
                            encode(&m, &mut wbuf);
                        }
                    }
                }
            }
            Some((port, frame, hops)) = inbox.recv() => {
                let effects = sw.receive_frame(port, &frame, Instant::now());
                dispatch(i, effects, hops, &shared, &mut wbuf);
            }
            _ = expire.tick() => {
                let effects = sw.expire(Instant::now());
                dispatch(i, effects, 0, &shared, &mut wbuf);
            }
            _ = echo.tick() => {
                let xid = sw.xid();
                encode(&OfpMessage::new(xid, Message::EchoRequest(Vec::new())), &mut wbuf);
            }
            _ = garp.tick(), if cur == Phase::Warmup => {
                let now = Instant::now();
                for h in &local {
                    let f = frames::gratuitous_arp(h.mac, h.ip);
                    let effects = sw.receive_frame(h.port, &f, now);
                    dispatch(i, effects, 0, &shared, &mut wbuf);
                }
            }
            _ = refill.tick(), if refilling => {
                let now = Instant::now();
                for m in driver.fill(&mut sw, now) {
                    encode(&m, &mut wbuf);
                }
                if let Some(tr) = traffic.as_mut() {
                    for m in tr.fill(&mut sw, now) {
                        encode(&m, &mut wbuf);
                    }
                }
            }
            r = phase.changed() => {
                if r.is_err() {
                    cur = Phase::Done;
                } else {
                    cur = *phase.borrow();
                }
                if cur == Phase::Load {
                    for m in driver.fill(&mut sw, Instant::now()) {
                        encode(&m, &mut wbuf);
                    }
                }
            }
        }
    }
    result(&sw, driver, handshaken)
}
