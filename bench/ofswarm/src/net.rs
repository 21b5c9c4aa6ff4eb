//! The I/O side: one tokio task per switch (its TCP connection, its frame
//! inbox from peer switches, its timers and its load), and the run's
//! phases: connect → warm-up (hosts announce themselves) → load → report.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ofp::{Message, OfpMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::churn::{self, Churn, TraceRecord, Verdict};
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
    /// Stats with `preinstall`: percent of the pair flows that set a queue
    /// before their output (0..=100).
    pub queued_share: u8,
    /// Stats with `preinstall`: percent of the pair flows that go through
    /// a meter the switch adds itself (0..=100).
    pub metered_share: u8,
    /// The drop band of those meters, in percent of the flow's rate (at
    /// 100 or more nothing is dropped).
    pub meter_band_pct: u32,
    /// Where to read the controller's traffic matrix at the end (stats).
    pub api: Option<ApiCheck>,
    /// The controller's process id: its CPU time and memory over the
    /// measurement are reported.
    pub cpu_pid: Option<u32>,
    /// How load PACKET_INs are made and answered.
    pub load: LoadOptions,
    /// Churn mode's settings.
    pub churn: ChurnOptions,
}

/// Churn mode's settings.
#[derive(Debug, Clone)]
pub struct ChurnOptions {
    /// Events to make (the run also ends after `duration`).
    pub events: usize,
    /// Picks the events.
    pub seed: u64,
    /// Most host pairs traced per round.
    pub trace_pairs: usize,
    /// Longest wait for a round's traces to arrive.
    pub round_timeout: Duration,
    /// Longest wait, after an event, for a round in which every trace is
    /// right (the forwarding has converged).
    pub converge_timeout: Duration,
    /// How long a reconnecting switch stays away.
    pub reconnect_pause: Duration,
}

impl Default for ChurnOptions {
    fn default() -> Self {
        ChurnOptions {
            events: 12,
            seed: 1,
            trace_pairs: 256,
            round_timeout: Duration::from_secs(2),
            converge_timeout: Duration::from_secs(15),
            reconnect_pause: Duration::from_millis(500),
        }
    }
}

/// What churn mode measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChurnReport {
    /// The last trace round before the first event: the first all-right
    /// one (the controller has learnt every host), or the one at the
    /// convergence timeout.
    pub baseline: RoundReport,
    /// Rounds made before the first event.
    pub baseline_rounds: usize,
    /// Every event, in order.
    pub events: Vec<EventReport>,
    /// Events after which the forwarding converged (a round all right).
    pub converged: usize,
    /// Trace frames that a switch saw twice (in any round).
    pub loops: u64,
    /// Trace frames delivered where the destination is not (any round).
    pub misdelivered: u64,
    /// A few looping traces, described (any round).
    pub loop_examples: Vec<String>,
    /// Seconds from an event to its first all-right round: median.
    pub converge_p50_s: Option<f64>,
    /// Seconds from an event to its first all-right round: largest.
    pub converge_max_s: Option<f64>,
}

/// One event and how the forwarding followed it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventReport {
    /// The event.
    pub event: churn::Event,
    /// Seconds until the switch was back (reconnect) and, with `--api`,
    /// the controller listed exactly the directed links that are up
    /// (None: not within the convergence timeout). Tracing starts then.
    pub settled_s: Option<f64>,
    /// Trace rounds made after it.
    pub rounds: usize,
    /// Seconds from the event until a round was all right (None: never
    /// within the convergence timeout).
    pub converged_s: Option<f64>,
    /// The first round after the event.
    pub first: RoundReport,
    /// The last round after the event.
    pub last: RoundReport,
}

/// Verdicts of one round of traces.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RoundReport {
    /// Traces sent.
    pub traces: usize,
    /// Verdict → count.
    pub verdicts: std::collections::BTreeMap<String, usize>,
    /// Up to three wrong traces of each verdict, described.
    pub examples: Vec<String>,
}

impl RoundReport {
    /// Every trace right (or rightly undelivered).
    pub fn all_right(&self) -> bool {
        self.verdicts
            .iter()
            .all(|(v, _)| v == "right" || v == "unreachable")
    }

    fn count(&self, v: Verdict) -> u64 {
        self.verdicts.get(verdict_name(v)).copied().unwrap_or(0) as u64
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Right => "right",
        Verdict::Unreachable => "unreachable",
        Verdict::Lost => "lost",
        Verdict::Loop => "loop",
        Verdict::Misdelivered => "misdelivered",
        Verdict::Longer => "longer",
        Verdict::Leaked => "leaked",
    }
}

/// A command to one switch task (churn mode).
#[derive(Debug, Clone, Copy)]
enum Ctl {
    /// Bring a port up or down.
    Port { port: u32, up: bool },
    /// Drop the controller connection, stay away this long, reconnect.
    Reconnect(Duration),
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
    /// Churn results (churn mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnReport>,
    /// Handshakes after a reconnection (churn mode).
    pub rehandshakes: usize,
    /// Hosts the controller's `GET /api/v1/endpoints` listed at the end of
    /// the run (idle mode with `--api`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints_listed: Option<usize>,
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
    /// The controller's port rates against the configured traffic, when
    /// asked for (`--api`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortCheck>,
    /// The controller's queue rates against the configured traffic through
    /// each queue, when asked for (`--api`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queues: Option<RateCheck>,
    /// The controller's meter input rates against the configured traffic
    /// into each meter, when asked for (`--api`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meters: Option<RateCheck>,
}

/// The controller's queue (`GET /api/v1/queues/stats`, `tx_bytes_per_s`)
/// or meter (`GET /api/v1/meters/stats`, `in_bytes_per_s`) rates compared
/// with the configured traffic through each queue or into each meter.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RateCheck {
    /// Queues (meters) with configured traffic.
    pub entries: usize,
    /// Of those, the controller had no rate for.
    pub missing: usize,
    /// Within the tolerance of the truth.
    pub within_tolerance: usize,
    /// Largest relative error.
    pub max_rel_err: f64,
    /// Meters only: of `entries`, those whose `flow_count` is the number
    /// of flow entries using the meter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_count_right: Option<usize>,
    /// Meters only: of `entries`, those whose band rate
    /// (`band_bytes_per_s`: what the bands took) is within the tolerance of
    /// the truth, relative to the input rate (a band taking nothing must
    /// show about 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub band_right: Option<usize>,
    /// Why the check could not be made, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The controller's port rates (`GET /api/v1/ports/stats`) compared with
/// the configured traffic through each port.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PortCheck {
    /// Port directions (rx or tx of a port) with configured traffic.
    pub directions: usize,
    /// Of those, the controller had no rate for.
    pub missing: usize,
    /// Within the tolerance of the truth.
    pub within_tolerance: usize,
    /// Largest relative error.
    pub max_rel_err: f64,
    /// Why the check could not be made, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// Commands to the switch tasks (churn mode).
    ctls: Vec<mpsc::UnboundedSender<Ctl>>,
    /// Handshakes after a reconnection.
    rehandshakes: AtomicUsize,
    /// Trace frames followed (churn mode; None otherwise).
    traces: Option<Mutex<HashMap<u64, TraceRecord>>>,
}

impl Shared {
    /// A trace frame entered switch `i`.
    fn trace_visit(&self, frame: &[u8], i: usize) {
        let Some(t) = &self.traces else { return };
        let Some(id) = frames::trace_id(frame) else {
            return;
        };
        if let Ok(mut t) = t.lock() {
            if let Some(r) = t.get_mut(&id) {
                if r.visits.len() < churn::MAX_VISITS {
                    r.visits.push(i);
                }
            }
        }
    }

    /// A trace frame left switch `i` by host port `port`.
    fn trace_delivered(&self, frame: &[u8], i: usize, port: u32) {
        let Some(t) = &self.traces else { return };
        let Some(id) = frames::trace_id(frame) else {
            return;
        };
        if let Ok(mut t) = t.lock() {
            if let Some(r) = t.get_mut(&id) {
                if r.delivered.len() < churn::MAX_VISITS {
                    r.delivered.push((i, port));
                }
            }
        }
    }
}

struct TaskResult {
    handshaken: bool,
    load: LoadStats,
    counters: SwitchCounters,
    flows: usize,
    /// Configured traffic by port: (port, rx bytes/s, tx bytes/s).
    port_rates: Vec<(u32, u64, u64)>,
    /// Configured traffic by (port, queue), bytes/s.
    queue_rates: std::collections::BTreeMap<(u32, u32), u64>,
    /// Configured traffic into each installed meter: (input bytes/s,
    /// bytes/s its bands take, flow entries using it).
    meter_rates: std::collections::BTreeMap<u32, (u64, u64, usize)>,
}

/// Runs the emulation and the load; returns the report.
pub async fn run(cfg: RunConfig) -> Result<Report, RunError> {
    let n = cfg.topology.switches.len();
    let mut receivers = Vec::with_capacity(n);
    let mut inboxes = Vec::with_capacity(n);
    let mut ctls = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::channel(INBOX);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        inboxes.push(tx);
        ctls.push(ctl_tx);
        receivers.push((rx, ctl_rx));
    }
    let shared = Arc::new(Shared {
        handshakes: AtomicUsize::new(0),
        responses: AtomicU64::new(0),
        installed: AtomicUsize::new(0),
        stats_requests: AtomicU64::new(0),
        entries_served: AtomicU64::new(0),
        inboxes,
        ctls,
        rehandshakes: AtomicUsize::new(0),
        traces: (cfg.mode == Mode::Churn).then(|| Mutex::new(HashMap::new())),
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
    for (i, (rx, ctl)) in receivers.into_iter().enumerate() {
        let shared = shared.clone();
        let phase = phase_rx.clone();
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            switch_task(i, cfg, shared, rx, ctl, phase).await
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
    let mut port_rows: Option<Result<serde_json::Value, String>> = None;
    let mut queue_rows: Option<Result<serde_json::Value, String>> = None;
    let mut meter_rows: Option<Result<serde_json::Value, String>> = None;
    let mut endpoints_listed = None;
    let churn_report = if cfg.mode == Mode::Churn {
        Some(run_churn(&cfg, &shared).await)
    } else {
        None
    };
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
    let secs = if cfg.mode == Mode::Churn {
        0
    } else {
        cfg.duration.as_secs().max(1)
    };
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
    let mut stats = match stats {
        Some((setup_s, truth)) => {
            let requests = shared.stats_requests.load(Ordering::Relaxed) - served_at_start.0;
            let entries = shared.entries_served.load(Ordering::Relaxed) - served_at_start.1;
            // Preinstalled pair flows are not the controller's: no λ.
            let lambda = match &cfg.api {
                Some(api) if !cfg.preinstall => Some(check_lambda(api, &truth).await),
                _ => None,
            };
            if let Some(api) = &cfg.api {
                port_rows = Some(get_json(api, "/api/v1/ports/stats").await);
                queue_rows = Some(get_json(api, "/api/v1/queues/stats").await);
                meter_rows = Some(get_json(api, "/api/v1/meters/stats").await);
            }
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
                ports: None,
                queues: None,
                meters: None,
            })
        }
        None => None,
    };
    if let (Mode::Idle, Some(api)) = (cfg.mode, &cfg.api) {
        endpoints_listed = get_json(api, "/api/v1/endpoints")
            .await
            .ok()
            .and_then(|v| v.as_array().map(Vec::len));
    }
    let _ = phase_tx.send(Phase::Done);

    let discovery_s = match discovery {
        Some(t) => t.await.ok().flatten(),
        None => None,
    };
    let mut load = LoadStats::default();
    let mut counters = SwitchCounters::default();
    let mut flows = 0;
    let mut done = 0;
    let mut port_truth: HashMap<(u64, u32), (u64, u64)> = HashMap::new();
    let mut queue_truth: HashMap<(u64, u32, u32), u64> = HashMap::new();
    let mut meter_truth: HashMap<(u64, u32), (u64, u64, usize)> = HashMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let Ok(r) = t.await else { continue };
        let dpid = cfg.topology.switches.get(i).map_or(0, |s| s.dpid);
        for &(port, rx, tx) in &r.port_rates {
            port_truth.insert((dpid, port), (rx, tx));
        }
        for (&(port, queue), &rate) in &r.queue_rates {
            queue_truth.insert((dpid, port, queue), rate);
        }
        for (&meter, &v) in &r.meter_rates {
            meter_truth.insert((dpid, meter), v);
        }
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
    if let (Some(st), Some(rows), Some(api)) = (stats.as_mut(), port_rows, &cfg.api) {
        st.ports = Some(check_ports(rows, &port_truth, api.tolerance));
    }
    if let (Some(st), Some(rows), Some(api)) = (stats.as_mut(), queue_rows, &cfg.api) {
        st.queues = Some(check_queues(rows, &queue_truth, api.tolerance));
    }
    if let (Some(st), Some(rows), Some(api)) = (stats.as_mut(), meter_rows, &cfg.api) {
        st.meters = Some(check_meters(rows, &meter_truth, api.tolerance));
    }
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
        churn: churn_report,
        endpoints_listed,
        rehandshakes: shared.rehandshakes.load(Ordering::Relaxed),
        controller,
    })
}

/// Churn mode: a converged baseline, then events, each followed by trace
/// rounds until one is all right (or the convergence timeout).
async fn run_churn(cfg: &RunConfig, shared: &Shared) -> ChurnReport {
    let topo = &cfg.topology;
    let opts = &cfg.churn;
    let mut state = Churn::new(topo, opts.seed);
    let pairs = churn::pairs(topo.hosts.len(), opts.trace_pairs);
    let mut next_id = 1u64;
    let mut out = ChurnReport::default();
    let t_end = Instant::now() + cfg.duration;
    let _ = settle(
        cfg,
        shared,
        &state,
        &churn::Event::LinkUp { link: usize::MAX },
        0,
    )
    .await;
    let (_, last, rounds) = converge(cfg, shared, &state, &pairs, &mut next_id, &mut out).await;
    out.baseline = last;
    out.baseline_rounds = rounds;
    let mut times = Vec::new();
    for _ in 0..opts.events {
        if Instant::now() >= t_end {
            break;
        }
        let Some(ev) = state.next_event(topo) else {
            break;
        };
        let rehandshakes = shared.rehandshakes.load(Ordering::Relaxed);
        let t0 = Instant::now();
        apply_event(cfg, shared, &ev);
        let settled_s = settle(cfg, shared, &state, &ev, rehandshakes).await;
        let (first, last, rounds) =
            converge(cfg, shared, &state, &pairs, &mut next_id, &mut out).await;
        let converged_s = last.all_right().then(|| t0.elapsed().as_secs_f64());
        if cfg.per_second_lines {
            println!(
                "churn: {:?}: settled in {}, {} round(s), {}",
                ev,
                settled_s.map_or_else(|| "-".into(), |s| format!("{s:.2} s")),
                rounds,
                match converged_s {
                    Some(s) => format!("converged in {s:.2} s"),
                    None => format!("NOT converged: {:?}", last.verdicts),
                }
            );
            if !first.all_right() {
                println!("  first round: {:?}", first.verdicts);
                for x in &first.examples {
                    println!("    {x}");
                }
            }
        }
        if let (Some(s), Some(_)) = (converged_s, settled_s) {
            out.converged += 1;
            times.push(s);
        }
        out.events.push(EventReport {
            event: ev,
            settled_s,
            rounds,
            converged_s,
            first,
            last,
        });
    }
    times.sort_by(f64::total_cmp);
    out.converge_p50_s = times.get(times.len() / 2).copied();
    out.converge_max_s = times.last().copied();
    out
}

/// Waits until the event has reached the controller: a reconnecting
/// switch has been handshaken again, and (with `--api`) the controller
/// lists exactly the directed links that are up. The seconds it took from
/// the event (None: not within the convergence timeout).
async fn settle(
    cfg: &RunConfig,
    shared: &Shared,
    state: &Churn,
    ev: &churn::Event,
    rehandshakes: usize,
) -> Option<f64> {
    let t0 = Instant::now();
    let deadline = t0 + cfg.churn.converge_timeout;
    if matches!(ev, churn::Event::Reconnect { .. }) {
        while shared.rehandshakes.load(Ordering::Relaxed) <= rehandshakes {
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if let Some(api) = &cfg.api {
        let want = 2 * state.link_up.iter().filter(|u| **u).count();
        loop {
            if links_listed(api).await == Some(want) {
                break;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Some(t0.elapsed().as_secs_f64())
}

/// How many links `GET /api/v1/links` lists now (None: no answer).
async fn links_listed(api: &ApiCheck) -> Option<usize> {
    get_json(api, "/api/v1/links")
        .await
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
}

/// Tells the switch tasks about an event.
fn apply_event(cfg: &RunConfig, shared: &Shared, ev: &churn::Event) {
    let topo = &cfg.topology;
    let ctl = |i: usize, c: Ctl| {
        if let Some(tx) = shared.ctls.get(i) {
            let _ = tx.send(c);
        }
    };
    match *ev {
        churn::Event::LinkDown { link } | churn::Event::LinkUp { link } => {
            let up = matches!(ev, churn::Event::LinkUp { .. });
            if let Some(&((a, pa), (b, pb))) = topo.links.get(link) {
                ctl(a, Ctl::Port { port: pa, up });
                ctl(b, Ctl::Port { port: pb, up });
            }
        }
        churn::Event::HostMove { host, to, .. } => {
            if let Some(h) = topo.hosts.get(host) {
                let f = frames::gratuitous_arp(h.mac, h.ip);
                if let Some(tx) = shared.inboxes.get(to.0) {
                    let _ = tx.try_send((to.1, f, 0));
                }
            }
        }
        churn::Event::Reconnect { switch } => {
            ctl(switch, Ctl::Reconnect(cfg.churn.reconnect_pause));
        }
    }
}

/// Trace rounds until one is all right or the convergence timeout: the
/// first round, the last one and how many were made.
async fn converge(
    cfg: &RunConfig,
    shared: &Shared,
    state: &Churn,
    pairs: &[(usize, usize)],
    next_id: &mut u64,
    out: &mut ChurnReport,
) -> (RoundReport, RoundReport, usize) {
    let deadline = Instant::now() + cfg.churn.converge_timeout;
    let mut first = None;
    let mut rounds = 0;
    loop {
        let r = trace_round(cfg, shared, state, pairs, next_id).await;
        rounds += 1;
        out.loops += r.count(Verdict::Loop);
        for x in r.examples.iter().filter(|x| x.contains(": loop (")) {
            if out.loop_examples.len() < 10 {
                out.loop_examples.push(x.clone());
            }
        }
        out.misdelivered += r.count(Verdict::Misdelivered);
        let done = r.all_right() || Instant::now() >= deadline;
        if first.is_none() {
            first = Some(r.clone());
        }
        if done {
            return (first.unwrap_or_default(), r, rounds);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends one trace frame per pair from the source host's port and judges
/// where each went.
async fn trace_round(
    cfg: &RunConfig,
    shared: &Shared,
    state: &Churn,
    pairs: &[(usize, usize)],
    next_id: &mut u64,
) -> RoundReport {
    let topo = &cfg.topology;
    let Some(traces) = &shared.traces else {
        return RoundReport::default();
    };
    // id → (destination now, shortest path, description)
    let mut sent = Vec::with_capacity(pairs.len());
    if let Ok(mut t) = traces.lock() {
        t.clear();
    }
    for &(a, b) in pairs {
        let (Some(ha), Some(hb), Some(&at_a), Some(&at_b)) = (
            topo.hosts.get(a),
            topo.hosts.get(b),
            state.host_at.get(a),
            state.host_at.get(b),
        ) else {
            continue;
        };
        let id = *next_id;
        *next_id += 1;
        if let Ok(mut t) = traces.lock() {
            t.insert(id, TraceRecord::default());
        }
        let hops = state.hops(topo, at_a.0, at_b.0);
        sent.push((id, at_b, hops, (ha.mac, hb.mac)));
        let f = frames::trace_frame((ha.mac, ha.ip), (hb.mac, hb.ip), id);
        if let Some(tx) = shared.inboxes.get(at_a.0) {
            // Awaited: a trace is never lost to a full inbox.
            let _ = tx.send((at_a.1, f, 0)).await;
        }
    }
    // Until every reachable destination has its frame (or the timeout),
    // then a little longer for stray copies.
    let deadline = Instant::now() + cfg.churn.round_timeout;
    loop {
        let arrived = traces.lock().is_ok_and(|t| {
            sent.iter().all(|(id, dst, hops, _)| {
                hops.is_none() || t.get(id).is_some_and(|r| r.delivered.contains(dst))
            })
        });
        if arrived || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut r = RoundReport {
        traces: sent.len(),
        ..RoundReport::default()
    };
    let Ok(t) = traces.lock() else { return r };
    let empty = TraceRecord::default();
    for (id, dst, hops, (src_mac, dst_mac)) in &sent {
        let rec = t.get(id).unwrap_or(&empty);
        let v = churn::judge(rec, *dst, *hops);
        *r.verdicts.entry(verdict_name(v).to_string()).or_default() += 1;
        let tag = format!(": {} (", verdict_name(v));
        let shown = r.examples.iter().filter(|x| x.contains(&tag)).count();
        if !matches!(v, Verdict::Right | Verdict::Unreachable) && shown < 3 {
            let dpid = |i: usize| topo.switches.get(i).map_or(0, |s| s.dpid);
            r.examples.push(format!(
                "{src_mac} -> {dst_mac}: {} (switches {:?}, delivered at {:?}, destination at dpid {} port {}, shortest {:?} hops)",
                verdict_name(v),
                rec.visits.iter().map(|&i| dpid(i)).collect::<Vec<_>>(),
                rec.delivered.iter().map(|&(i, p)| (dpid(i), p)).collect::<Vec<_>>(),
                dpid(dst.0),
                dst.1,
                hops
            ));
        }
    }
    r
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

/// `GET path` of the controller's API as JSON.
async fn get_json(api: &ApiCheck, path: &str) -> Result<serde_json::Value, String> {
    let client =
        shoal_common::http::HttpClient::new(Duration::from_secs(60)).with_max_body(256 << 20);
    let url = format!("{}{path}", api.url.trim_end_matches('/'));
    match client
        .send(
            shoal_common::http::Method::GET,
            &url,
            api.token.as_deref(),
            None,
        )
        .await
    {
        Ok((200, body)) => serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}")),
        Ok((status, _)) => Err(format!("GET {url}: HTTP {status}")),
        Err(e) => Err(format!("GET {url}: {e}")),
    }
}

/// Compares the controller's port rates with the configured traffic
/// through each port ((dpid, port) → (rx, tx) bytes/s).
fn check_ports(
    rows: Result<serde_json::Value, String>,
    truth: &HashMap<(u64, u32), (u64, u64)>,
    tolerance: f64,
) -> PortCheck {
    let mut out = PortCheck::default();
    let rows = match rows {
        Ok(serde_json::Value::Array(rows)) => rows,
        Ok(_) => {
            out.error = Some("GET /api/v1/ports/stats: not a list".into());
            return out;
        }
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let mut got: HashMap<(u64, u32), (Option<f64>, Option<f64>)> = HashMap::new();
    for r in &rows {
        let dpid = r["dpid"]
            .as_str()
            .and_then(|d| u64::from_str_radix(d.trim_start_matches("0x"), 16).ok());
        let port = r["port"].as_u64().and_then(|p| u32::try_from(p).ok());
        if let (Some(d), Some(p)) = (dpid, port) {
            got.insert(
                (d, p),
                (r["rx_bytes_per_s"].as_f64(), r["tx_bytes_per_s"].as_f64()),
            );
        }
    }
    for (key, &(rx, tx)) in truth {
        let have = got.get(key).copied().unwrap_or((None, None));
        for (want, seen) in [(rx, have.0), (tx, have.1)] {
            if want == 0 {
                continue;
            }
            out.directions += 1;
            match seen {
                Some(v) => {
                    let e = (v - want as f64).abs() / want as f64;
                    out.max_rel_err = out.max_rel_err.max(e);
                    if e <= tolerance {
                        out.within_tolerance += 1;
                    }
                }
                None => out.missing += 1,
            }
        }
    }
    out
}

/// The rows of a stats list from the API, or why there are none.
fn rows_of(
    rows: Result<serde_json::Value, String>,
    path: &str,
) -> Result<Vec<serde_json::Value>, String> {
    match rows {
        Ok(serde_json::Value::Array(rows)) => Ok(rows),
        Ok(_) => Err(format!("GET {path}: not a list")),
        Err(e) => Err(e),
    }
}

/// The dpid of an API row (`"dpid"`: hex string).
fn row_dpid(r: &serde_json::Value) -> Option<u64> {
    r["dpid"]
        .as_str()
        .and_then(|d| u64::from_str_radix(d.trim_start_matches("0x"), 16).ok())
}

fn row_u32(r: &serde_json::Value, k: &str) -> Option<u32> {
    r[k].as_u64().and_then(|v| u32::try_from(v).ok())
}

/// Counts one compared rate into `out`.
fn compare_rate(out: &mut RateCheck, want: u64, seen: Option<f64>, tolerance: f64) {
    out.entries += 1;
    match seen {
        Some(v) => {
            let e = (v - want as f64).abs() / want as f64;
            out.max_rel_err = out.max_rel_err.max(e);
            if e <= tolerance {
                out.within_tolerance += 1;
            }
        }
        None => out.missing += 1,
    }
}

/// Compares the controller's queue rates with the configured traffic
/// through each queue ((dpid, port, queue) → tx bytes/s).
fn check_queues(
    rows: Result<serde_json::Value, String>,
    truth: &HashMap<(u64, u32, u32), u64>,
    tolerance: f64,
) -> RateCheck {
    let mut out = RateCheck::default();
    let rows = match rows_of(rows, "/api/v1/queues/stats") {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let mut got: HashMap<(u64, u32, u32), Option<f64>> = HashMap::new();
    for r in &rows {
        if let (Some(d), Some(p), Some(q)) =
            (row_dpid(r), row_u32(r, "port"), row_u32(r, "queue_id"))
        {
            got.insert((d, p, q), r["tx_bytes_per_s"].as_f64());
        }
    }
    for (key, &want) in truth {
        if want == 0 {
            continue;
        }
        compare_rate(&mut out, want, got.get(key).copied().flatten(), tolerance);
    }
    out
}

/// Compares the controller's meter input and band rates and flow counts
/// with the configured traffic into each meter ((dpid, meter) → (input
/// bytes/s, bytes/s the bands take, flow entries using it)).
fn check_meters(
    rows: Result<serde_json::Value, String>,
    truth: &HashMap<(u64, u32), (u64, u64, usize)>,
    tolerance: f64,
) -> RateCheck {
    let mut out = RateCheck {
        flow_count_right: Some(0),
        band_right: Some(0),
        ..RateCheck::default()
    };
    let rows = match rows_of(rows, "/api/v1/meters/stats") {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    type Row = (Option<f64>, Option<f64>, Option<u64>);
    let mut got: HashMap<(u64, u32), Row> = HashMap::new();
    for r in &rows {
        if let (Some(d), Some(m)) = (row_dpid(r), row_u32(r, "meter_id")) {
            got.insert(
                (d, m),
                (
                    r["in_bytes_per_s"].as_f64(),
                    r["band_bytes_per_s"].as_f64(),
                    r["flow_count"].as_u64(),
                ),
            );
        }
    }
    let (mut flows_right, mut band_right) = (0, 0);
    for (key, &(want, band, flows)) in truth {
        if want == 0 {
            continue;
        }
        let (seen, seen_band, count) = got.get(key).copied().unwrap_or((None, None, None));
        compare_rate(&mut out, want, seen, tolerance);
        if count == u64::try_from(flows).ok() {
            flows_right += 1;
        }
        if seen_band.is_some_and(|b| (b - band as f64).abs() <= tolerance * want as f64) {
            band_right += 1;
        }
    }
    out.flow_count_right = Some(flows_right);
    out.band_right = Some(band_right);
    out
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
            Effect::SendRaw(b) => wbuf.extend_from_slice(&b),
            Effect::Emit { port, frame } => {
                if hops >= MAX_HOPS {
                    continue;
                }
                if let Some(&(j, peer_port)) = shared.peers.get(&(i, port)) {
                    if let Some(tx) = shared.inboxes.get(j) {
                        // A full inbox drops the frame, like a full ring.
                        let _ = tx.try_send((peer_port, frame, hops + 1));
                    }
                } else {
                    // Frames out of host ports are delivered to the host
                    // (nothing more happens; traces are recorded).
                    shared.trace_delivered(&frame, i, port);
                }
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
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
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
            port_rates: Vec::new(),
            queue_rates: Default::default(),
            meter_rates: Default::default(),
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
        .with_shares(cfg.queued_share, cfg.metered_share)
        .with_meter_band(cfg.meter_band_pct)
    });
    let result = |sw: &Switch, driver: Driver, handshaken: bool| {
        let flow_counts = sw.table.meter_flow_counts();
        TaskResult {
            handshaken,
            load: driver.stats,
            counters: sw.counters.clone(),
            flows: sw.table.len(),
            port_rates: sw.table.port_rates(),
            queue_rates: sw.table.queue_rates(),
            meter_rates: sw
                .table
                .meter_rates()
                .into_iter()
                .filter(|(m, _)| sw.meters.contains_key(m))
                .map(|(m, (input, band))| {
                    let flows = flow_counts.get(&m).copied().unwrap_or(0);
                    (m, (input, band, flows))
                })
                .collect(),
        }
    };
    if !cfg.connect_stagger.is_zero() {
        let delay = cfg
            .connect_stagger
            .saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
        tokio::time::sleep(delay).await;
    }
    let mut handshaken = false;
    let mut cur = *phase.borrow();
    let mut wbuf = Vec::with_capacity(64 * 1024);
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    let mut echo = tokio::time::interval(ECHO_EVERY);
    let mut garp = tokio::time::interval(GARP_EVERY);
    let mut refill = tokio::time::interval(Duration::from_millis(5));
    refill.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    'conn: loop {
        let Some(stream) = connect(cfg.controller, &mut phase).await else {
            break 'conn;
        };
        let (mut rd, mut wr) = stream.into_split();
        sw.reset_connection();
        wbuf.clear();
        rbuf.clear();
        encode(&Switch::hello(), &mut wbuf);
        let mut conn_handshaken = false;
        let pause = loop {
            if !wbuf.is_empty() {
                if let Err(e) = wr.write_all(&wbuf).await {
                    warn!(dpid = sw.dpid, error = %e, "write failed");
                    break 'conn;
                }
                wbuf.clear();
            }
            if cur == Phase::Done {
                break 'conn;
            }
            // Nothing to refill once every pair flow of the statistics load
            // is in (no wake-ups per switch then).
            let refilling = cur == Phase::Load
                && !matches!(cfg.mode, Mode::Idle | Mode::Churn)
                && traffic.as_ref().is_none_or(|t| !t.done());
            tokio::select! {
                r = rd.read(&mut chunk) => {
                    let n = match r {
                        Ok(0) | Err(_) => {
                            warn!(dpid = sw.dpid, "controller closed the connection");
                            break 'conn;
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
                        if !conn_handshaken && sw.features_sent && sw.port_desc_sent {
                            conn_handshaken = true;
                            if handshaken {
                                shared.rehandshakes.fetch_add(1, Ordering::Relaxed);
                            } else {
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
                    shared.trace_visit(&frame, i);
                    let effects = sw.receive_frame(port, &frame, Instant::now());
                    dispatch(i, effects, hops, &shared, &mut wbuf);
                }
                Some(c) = ctl.recv() => match c {
                    Ctl::Port { port, up } => {
                        if let Some(m) = sw.set_port_up(port, up) {
                            encode(&m, &mut wbuf);
                        }
                    }
                    Ctl::Reconnect(pause) => break pause,
                },
                _ = expire.tick() => {
                    let effects = sw.expire(Instant::now());
                    dispatch(i, effects, 0, &shared, &mut wbuf);
                }
                _ = echo.tick() => {
                    let xid = sw.xid();
                    encode(&OfpMessage::new(xid, Message::EchoRequest(Vec::new())), &mut wbuf);
                }
                _ = garp.tick(), if cur == Phase::Warmup || (cur == Phase::Load && cfg.mode == Mode::Idle) => {
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
        };
        // Away from the controller: the connection is closed; frames still
        // go through the flow tables (messages to the controller are lost).
        drop((rd, wr));
        let back = tokio::time::Instant::now() + pause;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(back) => break,
                Some((port, frame, hops)) = inbox.recv() => {
                    shared.trace_visit(&frame, i);
                    let effects = sw.receive_frame(port, &frame, Instant::now());
                    let mut lost = Vec::new();
                    dispatch(i, effects, hops, &shared, &mut lost);
                }
                Some(c) = ctl.recv() => {
                    if let Ctl::Port { port, up } = c {
                        let _ = sw.set_port_up(port, up);
                    }
                }
                _ = expire.tick() => {
                    let _ = sw.expire(Instant::now());
                }
                r = phase.changed() => {
                    cur = if r.is_err() { Phase::Done } else { *phase.borrow() };
                    if cur == Phase::Done {
                        break 'conn;
                    }
                }
            }
        }
    }
    result(&sw, driver, handshaken)
}
