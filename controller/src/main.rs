//! `shoal-controller` entry point: `run` (the default) starts the controller;
//! other subcommands are offline tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shoal_controller::config::{Config, LogFormat};
use tracing::{error, info};

/// Shoal: OpenFlow 1.3 controller for Open vSwitch data centers.
///
/// Without a subcommand, `run` is assumed: `shoal-controller --of-listen
/// 0.0.0.0:6653` is the same as `shoal-controller run --of-listen 0.0.0.0:6653`.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-controller",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
enum Command {
    /// Run the controller (the default subcommand).
    Run(RunArgs),
    /// Run a policy on a scenario in the data-center simulator.
    Simulate(shoal_controller::sim::SimulateArgs),
}

/// Options of `run`. Flags override the config file.
#[derive(Debug, Args, Clone)]
struct RunArgs {
    /// Address the OpenFlow listener binds; switches connect here
    /// (`ovs-vsctl set-controller BR tcp:ADDR:PORT`). [default: 0.0.0.0:6653]
    #[arg(long, value_name = "ADDR:PORT")]
    of_listen: Option<SocketAddr>,
    /// Address the REST API binds. [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR:PORT")]
    api_listen: Option<SocketAddr>,
    /// TOML configuration file (see docs/configuration.md); flags win over it.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log line format. [default: text]
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Statistics polling interval in seconds (>= 1). [default: 10]
    #[arg(long, value_name = "SECS")]
    poll_interval: Option<f64>,
    /// Policy of the live loop: sandpiper, idc, score, sova, violin, or none
    /// (monitor only). Wins over the config file and over a policy set at
    /// run time before a restart. [default: none]
    #[arg(long, value_name = "NAME")]
    policy: Option<String>,
    /// Record and show the live loop's decisions without executing them.
    #[arg(long)]
    dry_run: bool,
    /// Knowledge database (SQLite file; `:memory:` for none). [default: shoal.db]
    #[arg(long, value_name = "PATH")]
    db: Option<String>,
    /// File whose first line is the bearer token shared with the host
    /// daemons (without one, hostd registrations are refused).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,shoal_controller=debug`).
    /// [default: $RUST_LOG or `info`]
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

fn init_logging(format: LogFormat, filter: Option<&str>) {
    let filter = filter
        .map(tracing_subscriber::EnvFilter::new)
        .or_else(|| tracing_subscriber::EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

fn load_config(args: &RunArgs) -> Result<Config, String> {
    let mut cfg = match &args.config {
        Some(p) => Config::from_file(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(a) = args.of_listen {
        cfg.of_listen = a;
    }
    if let Some(a) = args.api_listen {
        cfg.api_listen = a;
    }
    if let Some(f) = args.log_format {
        cfg.log_format = f;
    }
    if let Some(i) = args.poll_interval {
        cfg.monitor.interval_s = i;
    }
    if let Some(d) = &args.db {
        cfg.db = d.clone();
    }
    if let Some(p) = &args.policy {
        cfg.policy.name = p.clone();
    }
    if args.dry_run {
        cfg.policy.dry_run = true;
    }
    if let Some(t) = &args.token_file {
        cfg.hostd.token_file = Some(t.clone());
    }
    Ok(cfg)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn run(args: RunArgs) -> i32 {
    let settings = match load_config(&args).and_then(|c| c.validate().map_err(|e| e.to_string())) {
        Ok(mut s) => {
            s.policy_pinned = args.policy.is_some() || args.dry_run;
            s
        }
        Err(e) => {
            eprintln!("shoal-controller: {e}");
            return 2;
        }
    };
    init_logging(settings.log_format, args.log.as_deref());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal-controller: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let running = match shoal_controller::app::start(settings).await {
            Ok(r) => r,
            Err(e) => {
                error!("{e}");
                return 1;
            }
        };
        info!(of = %running.of_addr, api = %running.api_addr, "listening");
        wait_for_signal().await;
        info!("shutting down");
        running.shutdown(Duration::from_secs(5)).await;
        0
    })
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Run(args)) => run(args),
        Some(Command::Simulate(args)) => match shoal_controller::sim::run_cli(&args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("shoal-controller simulate: {e}");
                2
            }
        },
        None => run(cli.run),
    };
    std::process::exit(code);
}
