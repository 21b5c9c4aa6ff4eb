//! `shoal-hostd` entry point: command line, configuration, logging.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use shoal_hostd::config::Config;
use shoal_hostd::daemon;

/// Shoal host daemon: senses a hypervisor, reports to the controller and
/// carries out its commands (live migration, VF attach/detach, memory).
#[derive(Debug, Parser)]
#[command(name = "shoal-hostd", version)]
struct Args {
    /// TOML configuration file (see docs/hostd.md).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Controller base URL, e.g. http://10.0.0.254:8080 (overrides the file).
    #[arg(long)]
    controller: Option<String>,
    /// Effector API listen address (overrides the file).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// File holding the bearer token (overrides the file).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Host id (overrides the file; default: the hostname).
    #[arg(long)]
    host_id: Option<String>,
    /// Report interval in seconds (overrides the file; default 10).
    #[arg(long)]
    interval: Option<f64>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let sub = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        sub.json().init();
    } else {
        sub.init();
    }
    if let Err(e) = real_main(args) {
        eprintln!("shoal-hostd: {e}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(c) = args.controller {
        cfg.controller = Some(c);
    }
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(t) = args.token_file {
        cfg.token_file = Some(t);
    }
    if let Some(h) = args.host_id {
        cfg.host_id = Some(h);
    }
    if let Some(i) = args.interval {
        cfg.interval_s = i;
    }
    cfg.validate()?;
    let token_file = cfg
        .token_file
        .clone()
        .ok_or("a token file is required (--token-file or token_file)")?;
    let token = daemon::read_token(&token_file)?;
    let controller_token = match &cfg.controller_token_file {
        Some(p) => Some(daemon::read_token(p)?),
        None => None,
    };
    // Two worker threads are plenty; keeps the daemon small.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(daemon::run(cfg, token, controller_token))?;
    Ok(())
}
