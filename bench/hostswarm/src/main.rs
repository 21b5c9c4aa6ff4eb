//! `hostswarm`: emulates H host daemons with V VMs against a Shoal
//! controller's REST API and measures the report latency and the live
//! loop's round time (see the crate docs and `bench/hostswarm/README.md`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hostswarm::run::{run, write_host_tokens, RunConfig, RunError, Summary};
use shoal_common::secret::Secret;

/// Host report generator: H emulated host daemons register V VMs in all
/// and post a report each every H/R seconds (R reports/s in all) through
/// the controller's API; the report latency and the live loop's round
/// times (`GET /api/v1/loop`) are reported.
#[derive(Debug, Parser)]
#[command(name = "hostswarm", version)]
struct Args {
    /// The controller's API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// File holding an operator's bearer token (a reader's is enough).
    #[arg(long, required_unless_present = "write_host_tokens")]
    token_file: Option<PathBuf>,
    /// Directory of the host daemons' tokens, `<host-id>.token` (the
    /// controller's `auth.host_tokens_dir`).
    #[arg(long, required_unless_present = "write_host_tokens")]
    host_tokens_dir: Option<PathBuf>,
    /// Only write a fresh token for each host (`hs0000.token`, …, mode
    /// 0600) into this directory, for the controller's
    /// `auth.host_tokens_dir`, and exit.
    #[arg(long)]
    write_host_tokens: Option<PathBuf>,
    /// Hosts.
    #[arg(long, default_value_t = 640)]
    hosts: usize,
    /// VMs in all (spread evenly over the hosts).
    #[arg(long, default_value_t = 10_000)]
    vms: usize,
    /// Reports per second in all (each host reports every hosts/rate s).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Seconds of reports before the measurement.
    #[arg(long, default_value_t = 10.0)]
    warmup: f64,
    /// Seed of the generated metrics.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Fraction of hot hosts (VMs at 90–100 % CPU).
    #[arg(long, default_value_t = 0.1)]
    hot_fraction: f64,
    /// Seconds before a request is given up.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// The controller's process id (same machine): its CPU and resident
    /// memory over the measurement are reported.
    #[arg(long)]
    cpu_pid: Option<u32>,
    /// Print the summary as JSON on stdout (the text goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

fn secs(what: &str, s: f64) -> Result<Duration, MainError> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| MainError::Usage(format!("{what} must be seconds >= 0, got {s}")))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostswarm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Args) -> Result<(), MainError> {
    if let Some(dir) = &args.write_host_tokens {
        write_host_tokens(dir, args.hosts)?;
        eprintln!(
            "hostswarm: {} host tokens written to {}",
            args.hosts,
            dir.display()
        );
        return Ok(());
    }
    let (Some(token_file), Some(host_tokens_dir)) = (args.token_file, args.host_tokens_dir) else {
        return Err(MainError::Usage(
            "--token-file and --host-tokens-dir are required".into(),
        ));
    };
    let cfg = RunConfig {
        api: args.api,
        token: Secret::from_file(&token_file).map_err(RunError::from)?,
        host_tokens_dir,
        hosts: args.hosts,
        vms: args.vms,
        rate: args.rate,
        duration: secs("--duration", args.duration)?,
        warmup: secs("--warmup", args.warmup)?,
        seed: args.seed,
        concurrency: args.concurrency,
        hot_fraction: args.hot_fraction,
        timeout: secs("--timeout", args.timeout)?,
        cpu_pid: args.cpu_pid,
    };
    if cfg.duration.is_zero() {
        return Err(MainError::Usage("--duration must be > 0".into()));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(MainError::Runtime)?;
    let summary = rt.block_on(run(cfg))?;
    eprint!("{}", text(&summary));
    if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(j) => println!("{j}"),
            Err(e) => return Err(MainError::Usage(format!("cannot encode the summary: {e}"))),
        }
    }
    Ok(())
}

/// The summary as text.
fn text(s: &Summary) -> String {
    let mut o = String::new();
    let r = &s.reports;
    o += &format!(
        "hosts {} ({} hot), VMs {}, each host every {:.3} s; registered in {:.2} s\n",
        s.hosts, s.hot_hosts, s.vms, s.interval_s, s.registration_s
    );
    o += &format!(
        "reports: {} sent, {} accepted, {:.1}/s achieved (target {:.0}/s), {} unanswered, errors {:?}\n",
        r.sent, r.accepted, r.achieved_per_s, r.target_per_s, r.transport_errors, r.errors_by_status
    );
    for (status, msg) in &r.error_messages {
        o += &format!("  {status}: {msg}\n");
    }
    if let Some(l) = &r.latency {
        o += &format!(
            "report latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}; schedule lag max {:.1} ms\n",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms, r.max_schedule_lag_ms
        );
    }
    let t = &s.round["total_ms"];
    o += &format!(
        "round ms (last {} rounds, up to round {}): last {}  p50 {}  p99 {}  max {}\n",
        s.round["window"],
        s.round["round"],
        ms(&t["last"]),
        ms(&t["p50"]),
        ms(&t["p99"]),
        ms(&t["max"])
    );
    for part in [
        "snapshot_ms",
        "analyze_plan_ms",
        "execute_ms",
        "cpu_ms",
        "snapshot_cpu_ms",
    ] {
        let p = &s.round[part];
        o += &format!(
            "  {part}: p50 {}  p99 {}  max {}\n",
            ms(&p["p50"]),
            ms(&p["p99"]),
            ms(&p["max"])
        );
    }
    o += &format!(
        "hotspots in the latest round: {:?}; decisions shown: {:?}\n",
        s.hotspots, s.decisions
    );
    if let Some(c) = &s.controller {
        o += &format!(
            "controller pid {}: CPU {:?} cores, RSS {:?} MiB\n",
            c.pid, c.cpu_cores, c.rss_mb
        );
    }
    o
}

/// A number of milliseconds from the API's JSON, to 0.1 ms (`-` if absent).
fn ms(v: &serde_json::Value) -> String {
    v.as_f64()
        .map(|x| format!("{x:.1}"))
        .unwrap_or_else(|| "-".into())
}
