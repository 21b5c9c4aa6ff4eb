//! `ofswarm`: emulates N OpenFlow 1.3 switches (Open vSwitch-like) against
//! a controller and measures flow setups (see the crate docs and
//! `bench/ofswarm/README.md`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ofswarm::load::{Answer, LoadOptions, Mode};
use ofswarm::net::{run, ApiCheck, ChurnOptions, RunConfig};
use ofswarm::topo::{TopoSpec, Topology};

/// OpenFlow 1.3 switch emulator: N switches connect to a controller,
/// answer it like Open vSwitch, forward LLDP between them along the
/// emulated topology, then load it with PACKET_INs.
#[derive(Debug, Parser)]
#[command(name = "ofswarm", version)]
struct Args {
    /// Controller OpenFlow address.
    #[arg(long, short = 'c', default_value = "127.0.0.1:6653")]
    controller: SocketAddr,
    /// Topology: `linear:N` (N switches in a chain, --hosts host ports
    /// each), `grid:SxH` (S independent switches with H host ports),
    /// `fattree:K` (a k-ary fat tree) or `tree:D,F` (depth D, fanout F,
    /// as Mininet's tree topology).
    #[arg(long, short = 't', default_value = "linear:4")]
    topo: TopoSpec,
    /// Host ports per switch (linear), 1..=254.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=254))]
    hosts: u32,
    /// Load: throughput (cbench-like), latency, stats (pair flows with
    /// known rates, polled by the controller), churn (cables cut and
    /// mended, hosts moving, switches reconnecting; every host pair traced
    /// after each event) or idle (no load).
    #[arg(long, short = 'm', value_enum, default_value = "throughput")]
    mode: Mode,
    /// PACKET_INs outstanding per switch (throughput).
    #[arg(long, short = 'w', default_value_t = 64)]
    window: usize,
    /// Seconds of load.
    #[arg(long, short = 'd', default_value_t = 10)]
    duration: u64,
    /// Seconds between the last handshake and the load (LLDP discovery
    /// and the hosts' gratuitous ARPs; longer than the controller's
    /// port_confirm_s).
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Seconds to wait for every switch's handshake.
    #[arg(long, default_value_t = 30)]
    connect_timeout: u64,
    /// Milliseconds between two switches' connections (switch i connects
    /// after i times this; 0: all at once). A controller with a short
    /// listen backlog may lose connections that all arrive at once.
    #[arg(long, default_value_t = 0)]
    connect_stagger_ms: u64,
    /// Datapath id of the first switch (the others follow).
    #[arg(long, default_value_t = 1)]
    dpid_base: u64,
    /// Which controller messages answer a load PACKET_IN: `pair` (a
    /// FLOW_MOD ADD matching exactly its Ethernet source and destination,
    /// or a PACKET_OUT carrying its sequence number) or `any` (cbench's
    /// rule: every FLOW_MOD or PACKET_OUT answers the switch's oldest
    /// outstanding PACKET_IN) or `src` (a FLOW_MOD ADD matching the
    /// PACKET_IN's source MAC as eth_src or eth_dst: a learning switch's
    /// flows; a PACKET_OUT as in `pair`).
    #[arg(long, value_enum, default_value = "pair")]
    answer: Answer,
    /// Every load PACKET_IN from a never-used source MAC (06:ii:ii:nn:nn:nn)
    /// on a host port, like cbench -M: a learning switch always learns.
    #[arg(long)]
    fresh_src: bool,
    /// Load PACKET_INs as sent by an explicit output-to-controller flow
    /// with this cookie (reason ACTION) instead of a table miss (reason
    /// NO_MATCH, cookie all ones). Decimal or 0x-hex.
    #[arg(long, value_parser = parse_u64)]
    pin_cookie: Option<u64>,
    /// Load frames carry this 802.1Q VLAN (1..=4094), as after a pipeline
    /// that pushed the port's native VLAN.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4094))]
    pin_vlan: Option<u16>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No per-second lines.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Stats mode: pair flows per switch (each with a known byte rate).
    #[arg(long, default_value_t = 100)]
    flows: usize,
    /// Stats mode: seconds to wait for every pair flow to be installed.
    #[arg(long, default_value_t = 120)]
    setup_timeout: u64,
    /// Stats mode: every switch adds its --flows pair flows to its own
    /// table at handshake completion (table 0, priority 200, in_port +
    /// eth_src + eth_dst, output to the destination, cookie 0, no
    /// timeouts), with their traffic, without any PACKET_IN: for a
    /// controller that only polls (Gauge). With --api, λ is not checked
    /// (the flows are not the controller's); ports, queues and meters are.
    #[arg(long)]
    preinstall: bool,
    /// Stats mode with --preinstall: this percent of the pair flows (an
    /// even spread) set queue 1 or 2 (`set_queue` before the output); the
    /// queue carries the flow's traffic (QUEUE stats).
    #[arg(long, default_value_t = 0, requires = "preinstall",
          value_parser = clap::value_parser!(u8).range(0..=100))]
    queued_share: u8,
    /// Stats mode with --preinstall: this percent of the pair flows (an
    /// even spread) go through a meter of their own, which the switch adds
    /// itself (kbit/s, one drop band at --meter-band-pct of the flow's
    /// rate); the meter counts the flow's traffic in, its band the excess
    /// over the band's rate, which is dropped (METER stats).
    #[arg(long, default_value_t = 0, requires = "preinstall",
          value_parser = clap::value_parser!(u8).range(0..=100))]
    metered_share: u8,
    /// Stats mode with --metered-share: the drop band's rate in percent of
    /// the flow's rate (below 100 the excess is dropped: the ports and
    /// queues after the meter carry only the band's rate).
    #[arg(long, default_value_t = 200, requires = "preinstall",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    meter_band_pct: u32,
    /// The controller's API base URL: the time until `/api/v1/links` lists
    /// every cable is measured, and in stats mode λ
    /// (`/api/v1/traffic-matrix`, not with --preinstall) and the port,
    /// queue and meter rates (`/api/v1/ports/stats`, `/queues/stats`,
    /// `/meters/stats`) are read at the end and compared with the truth.
    #[arg(long)]
    api: Option<String>,
    /// File holding a bearer token for --api (a reader's).
    #[arg(long, requires = "api")]
    token_file: Option<PathBuf>,
    /// The controller's process id (same machine): its CPU seconds and
    /// resident memory over the measurement are reported.
    #[arg(long)]
    cpu_pid: Option<u32>,
    /// Stats mode: relative error of λ and of port, queue and meter rates
    /// counted as right.
    #[arg(long, default_value_t = 0.01)]
    tolerance: f64,
    /// Churn mode: events to make (the run also ends after --duration).
    #[arg(long, default_value_t = 12)]
    events: usize,
    /// Churn mode: seed of the event sequence.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Churn mode: most host pairs traced per round.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    trace_pairs: u64,
    /// Churn mode: seconds an event's forwarding may take to converge
    /// (until a round of traces is all right).
    #[arg(long, default_value_t = 15.0)]
    converge_timeout: f64,
    /// Churn mode: seconds a reconnecting switch stays away.
    #[arg(long, default_value_t = 0.5)]
    reconnect_pause: f64,
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Run(#[from] ofswarm::net::RunError),
    #[error("cannot write {path}: {source}")]
    Json {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("--warmup must be a non-negative number of seconds")]
    Warmup,
    #[error("cannot read the token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--tolerance must be a number in (0, 1]")]
    Tolerance,
    #[error("--flows must be at least 1")]
    Flows,
    #[error("--preinstall needs --mode stats")]
    Preinstall,
    #[error("{0} must be a non-negative number of seconds")]
    Seconds(&'static str),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ofswarm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> Result<(), MainError> {
    let warmup = Duration::try_from_secs_f64(args.warmup).map_err(|_| MainError::Warmup)?;
    let mut topology = Topology::build(args.topo, args.hosts, args.dpid_base);
    if args.mode == Mode::Churn {
        topology = topology.with_spare_ports();
    }
    let secs = |v: f64, what| Duration::try_from_secs_f64(v).map_err(|_| MainError::Seconds(what));
    let churn = ChurnOptions {
        events: args.events,
        seed: args.seed,
        trace_pairs: usize::try_from(args.trace_pairs).unwrap_or(usize::MAX),
        converge_timeout: secs(args.converge_timeout, "--converge-timeout")?,
        reconnect_pause: secs(args.reconnect_pause, "--reconnect-pause")?,
        ..ChurnOptions::default()
    };
    if !(args.tolerance > 0.0 && args.tolerance <= 1.0) {
        return Err(MainError::Tolerance);
    }
    if args.flows == 0 {
        return Err(MainError::Flows);
    }
    if args.preinstall && args.mode != Mode::Stats {
        return Err(MainError::Preinstall);
    }
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| MainError::Token {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let api = args.api.clone().map(|url| ApiCheck {
        url,
        token,
        tolerance: args.tolerance,
    });
    let cfg = RunConfig {
        controller: args.controller,
        topology,
        mode: args.mode,
        window: args.window,
        duration: Duration::from_secs(args.duration),
        warmup,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        connect_stagger: Duration::from_millis(args.connect_stagger_ms),
        per_second_lines: !args.quiet,
        flows: args.flows,
        setup_timeout: Duration::from_secs(args.setup_timeout),
        preinstall: args.preinstall,
        queued_share: args.queued_share,
        metered_share: args.metered_share,
        meter_band_pct: args.meter_band_pct,
        api,
        cpu_pid: args.cpu_pid,
        load: LoadOptions {
            answer: args.answer,
            fresh_src: args.fresh_src,
            pin_cookie: args.pin_cookie,
            pin_vlan: args.pin_vlan,
        },
        churn,
    };
    let rt = tokio::runtime::Runtime::new().map_err(MainError::Runtime)?;
    println!(
        "ofswarm: {} switches, {} hosts, {:?} mode, answer {:?}{}, controller {}",
        cfg.topology.switches.len(),
        cfg.topology.hosts.len(),
        cfg.mode,
        cfg.load.answer,
        if cfg.load.fresh_src {
            ", fresh sources"
        } else {
            ""
        },
        cfg.controller
    );
    let report = rt.block_on(run(cfg))?;
    println!(
        "handshakes {}/{}; {} PACKET_INs, {} responses ({} FLOW_MOD, {} PACKET_OUT), {} timeouts",
        report.handshakes,
        report.switches,
        report.packet_ins,
        report.responses,
        report.responses_by_flow_mod,
        report.responses_by_packet_out,
        report.timeouts
    );
    match report.mode {
        Mode::Throughput => println!(
            "throughput: {:.0} responses/s over {:.1} s (window {})",
            report.responses_per_s, report.duration_s, report.window
        ),
        Mode::Latency => println!(
            "latency PACKET_IN -> FLOW_MOD: p50 {} us, p99 {} us, p99.9 {} us ({} samples)",
            fmt_opt(report.latency_p50_us),
            fmt_opt(report.latency_p99_us),
            fmt_opt(report.latency_p999_us),
            report.latency_samples
        ),
        Mode::Idle => {}
        Mode::Churn => {
            if let Some(c) = &report.churn {
                println!(
                    "churn: {} events, {} converged (median {}, max {}); baseline {:?}; {} looping and {} misdelivered traces in all; {} reconnections",
                    c.events.len(),
                    c.converged,
                    c.converge_p50_s.map_or_else(|| "-".into(), |s| format!("{s:.2} s")),
                    c.converge_max_s.map_or_else(|| "-".into(), |s| format!("{s:.2} s")),
                    c.baseline.verdicts,
                    c.loops,
                    c.misdelivered,
                    report.rehandshakes
                );
                for e in c.events.iter().filter(|e| e.converged_s.is_none()) {
                    println!(
                        "not converged after {:?}: {:?} {:?}",
                        e.event, e.last.verdicts, e.last.examples
                    );
                }
            }
        }
        Mode::Stats => {
            if let Some(st) = &report.stats {
                println!(
                    "stats: {} pair flows installed in {:.1} s; {} FLOW stats requests, {} entries served ({:.0}/s, {:.2} polls per switch per s); truth {} bytes/s",
                    st.pairs,
                    st.setup_s,
                    st.flow_stats_requests,
                    st.flow_entries_served,
                    st.flow_entries_per_s,
                    st.polls_per_switch_per_s,
                    st.truth_bytes_per_s
                );
                if let Some(p) = &st.ports {
                    match &p.error {
                        Some(e) => println!("port rate check failed: {e}"),
                        None => println!(
                            "port rates: {}/{} port directions within tolerance, {} missing, max error {:.3}%",
                            p.within_tolerance,
                            p.directions,
                            p.missing,
                            p.max_rel_err * 100.0
                        ),
                    }
                }
                for (what, c) in [("queue", &st.queues), ("meter", &st.meters)] {
                    let Some(c) = c else { continue };
                    match &c.error {
                        Some(e) => println!("{what} rate check failed: {e}"),
                        None => println!(
                            "{what} rates: {}/{} {what}s within tolerance, {} missing, max error {:.3}%{}",
                            c.within_tolerance,
                            c.entries,
                            c.missing,
                            c.max_rel_err * 100.0,
                            match (c.flow_count_right, c.band_right) {
                                (Some(f), Some(b)) => format!(", flow_count right for {f}, band rate right for {b}"),
                                _ => String::new(),
                            }
                        ),
                    }
                }
                if let Some(l) = &st.lambda {
                    match &l.error {
                        Some(e) => println!("lambda check failed: {e}"),
                        None => println!(
                            "lambda: {}/{} pairs within {:.1}%, {} missing, max error {:.3}%, median {:.4}%, total ratio {:.5}",
                            l.within_tolerance,
                            l.pairs,
                            l.tolerance * 100.0,
                            l.missing,
                            l.max_rel_err * 100.0,
                            l.median_rel_err * 100.0,
                            l.total_ratio
                        ),
                    }
                }
            }
        }
    }
    println!(
        "controller sent {} FLOW_MODs, {} PACKET_OUTs; switches sent {} pipeline PACKET_INs, {} FLOW_REMOVED, {} ERRORs; {} flows at the end",
        report.flow_mods,
        report.packet_outs,
        report.pipeline_packet_ins,
        report.flow_removed,
        report.errors_sent,
        report.flows_at_end
    );
    if report.links_expected > 0 {
        match report.discovery_s {
            Some(d) => println!(
                "discovery: the controller listed all {} directed links {:.2} s after the last handshake",
                report.links_expected, d
            ),
            None if args.api.is_some() => println!(
                "discovery: the controller never listed all {} directed links during the run",
                report.links_expected
            ),
            None => {}
        }
    }
    if let Some(c) = &report.controller {
        println!(
            "controller pid {}: {:.2} CPU-s over the measurement ({:.3} cores), RSS {} kB",
            c.pid, c.cpu_s, c.cores, c.rss_kb
        );
    }
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(&path, text + "\n").map_err(|source| MainError::Json { path, source })?;
    }
    Ok(())
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse::<u64>(),
    };
    r.map_err(|e| format!("not a 64-bit number: {e}"))
}

fn fmt_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| x.to_string())
}
