//! `shoal-hostd` entry point: command line, configuration, logging;
//! `check-config FILE` checks a configuration without starting anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use shoal_hostd::config::Config;
use shoal_hostd::daemon::{self, DaemonError};

/// Shoal host daemon: senses a hypervisor, reports to the controller and
/// carries out its commands (live migration, VF attach/detach, memory).
///
/// SIGINT/SIGTERM stop it (its VMs keep running); SIGHUP re-reads the
/// configuration's token files and logs what else needs a restart.
#[derive(Debug, Parser)]
#[command(name = "shoal-hostd", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    args: Args,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Check a configuration file as `shoal-hostd -c FILE` reads it (TOML,
    /// templates, VMs and their disks and scenarios, directories, token
    /// files and their modes, TLS files), print a summary and exit 0; print
    /// the error and exit 2.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Options of the daemon. Flags override the file.
#[derive(Debug, Clone, clap::Args)]
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
    let cli = Cli::parse();
    if let Some(Cmd::CheckConfig { file }) = cli.command {
        std::process::exit(check_config(&file));
    }
    let args = cli.args;
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
    // An unusable configuration exits 2 (systemd does not restart it), a
    // failure at run time 1.
    let loaded = match load_config(&args).and_then(daemon::load) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("shoal-hostd: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = real_main(args, loaded) {
        eprintln!("shoal-hostd: {e}");
        std::process::exit(1);
    }
}

/// `check-config FILE`: 0 and a summary when valid, 2 and the error (it
/// names the setting) when not. Never prints a token.
fn check_config(file: &Path) -> i32 {
    let checked = Config::load(file)
        .map_err(DaemonError::from)
        .and_then(daemon::load)
        .and_then(|l| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(DaemonError::Signal)?;
            let notes = rt.block_on(daemon::check_start(&l.cfg))?;
            Ok((l, notes))
        });
    match checked {
        Ok((l, notes)) => {
            println!("{}: valid", file.display());
            for line in daemon::summary(&l).into_iter().chain(notes) {
                println!("  {line}");
            }
            0
        }
        Err(e) => {
            eprintln!("shoal-hostd check-config: {e}");
            2
        }
    }
}

/// The configuration file with the command line's overrides applied.
fn load_config(args: &Args) -> Result<Config, DaemonError> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(c) = &args.controller {
        cfg.controllers.clear();
        cfg.controller = Some(c.clone());
    }
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(t) = &args.token_file {
        cfg.token_file = Some(t.clone());
    }
    if let Some(h) = &args.host_id {
        cfg.host_id = Some(h.clone());
    }
    if let Some(i) = args.interval {
        cfg.interval_s = i;
    }
    Ok(cfg)
}

fn real_main(args: Args, loaded: daemon::Loaded) -> Result<(), Box<dyn std::error::Error>> {
    // Two worker threads are plenty; keeps the daemon small.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let reloader: daemon::Reloader = Box::new(move || load_config(&args));
    rt.block_on(daemon::run(loaded, reloader))?;
    Ok(())
}
