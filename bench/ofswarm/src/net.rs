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
use crate::switch::{Effect, Switch, SwitchCounters};
use crate::topo::Topology;

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
    /// How load PACKET_INs are made and answered.
    pub load: LoadOptions,
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
}

struct Shared {
    handshakes: AtomicUsize,
    responses: AtomicU64,
    inboxes: Vec<mpsc::Sender<(u32, Vec<u8>, u8)>>,
    topology: Topology,
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
        inboxes,
        topology: cfg.topology.clone(),
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
    tokio::time::sleep(cfg.warmup).await;

    // Load, sampled every second.
    let _ = phase_tx.send(Phase::Load);
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
        let now_total = shared.responses.load(Ordering::Relaxed);
        let d = now_total - last;
        last = now_total;
        per_second.push(d);
        if cfg.per_second_lines && cfg.mode != Mode::Idle {
            println!("{s:>4} s  {d:>9} responses/s");
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = phase_tx.send(Phase::Done);

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
    })
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
                if let Some((j, peer_port)) = shared.topology.peer(i, port) {
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
                    let effects = sw.handle(msg, raw, now);
                    dispatch(i, effects, 0, &shared, &mut wbuf);
                    if !handshaken && sw.features_sent && sw.port_desc_sent {
                        handshaken = true;
                        shared.handshakes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                rbuf.drain(..off);
                if cur == Phase::Load {
                    for m in driver.fill(&mut sw, now) {
                        encode(&m, &mut wbuf);
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
            _ = refill.tick(), if cur == Phase::Load => {
                for m in driver.fill(&mut sw, Instant::now()) {
                    encode(&m, &mut wbuf);
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
