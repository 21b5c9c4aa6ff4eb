//! `shoal-controller` entry point: `run` (the default) starts the controller
//! (SIGINT/SIGTERM stop it, SIGHUP reloads its configuration);
//! `check-config` checks a configuration file; `simulate` is an offline
//! tool.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shoal_common::confdiff::changed_fields;
use shoal_controller::app::Running;
use shoal_controller::config::{Config, Fingerprints, LogFormat, Settings};
use tracing::{error, info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

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
    /// Check a configuration file as `run --config FILE` reads it (TOML,
    /// ranges, token files and their modes, TLS files, the database
    /// directory), print a summary and exit 0; print the error and exit 2.
    CheckConfig(CheckArgs),
}

/// Options of `check-config`.
#[derive(Debug, Args, Clone)]
struct CheckArgs {
    /// The TOML configuration file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
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
    /// Policy of the live loop: sandpiper, idc, score, sova, violin, shoal, or none
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
    /// Wins over $RUST_LOG and the file's `log_filter`, also on SIGHUP.
    /// [default: $RUST_LOG, else `log_filter`, else `info`]
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Run as a node of a cluster coordinated through these etcd client
    /// URLs (comma-separated; `[cluster] etcd_endpoints`). docs/cluster.md.
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    cluster_etcd: Option<Vec<String>>,
    /// This node's id in the cluster (`[cluster] node_id`).
    #[arg(long, value_name = "NAME")]
    node_id: Option<String>,
}

/// The log filter in force and whether SIGHUP may change it.
struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// `--log` or `RUST_LOG` chose the filter: the file's `log_filter` is
    /// not applied.
    pinned: Option<&'static str>,
}

impl LogControl {
    fn set(&self, filter: Option<&str>) -> Result<(), String> {
        let f = EnvFilter::try_new(filter.unwrap_or("info")).map_err(|e| e.to_string())?;
        self.handle.reload(f).map_err(|e| e.to_string())
    }
}

/// Installs the log subscriber: `--log`, else `RUST_LOG`, else the file's
/// `log_filter`, else `info`.
fn init_logging(format: LogFormat, flag: Option<&str>, file: Option<&str>) -> LogControl {
    let env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok());
    let (filter, pinned) = match (flag.and_then(|f| EnvFilter::try_new(f).ok()), env) {
        (Some(f), _) => (f, Some("--log")),
        (None, Some(f)) => (f, Some("RUST_LOG")),
        (None, None) => (
            file.and_then(|f| EnvFilter::try_new(f).ok())
                .unwrap_or_else(|| EnvFilter::new("info")),
            None,
        ),
    };
    let (layer, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let reg = tracing_subscriber::registry().with(layer);
    match format {
        LogFormat::Json => reg.with(fmt.json()).init(),
        LogFormat::Text => reg.with(fmt).init(),
    }
    LogControl { handle, pinned }
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
    if let Some(e) = &args.cluster_etcd {
        cfg.cluster.etcd_endpoints = e.clone();
    }
    if let Some(n) = &args.node_id {
        cfg.cluster.node_id = Some(n.clone());
    }
    Ok(cfg)
}

/// `check-config FILE`: 0 and a summary when valid, 2 and the error (it
/// names the field) when not. Never prints a token.
fn check_config(file: &Path) -> i32 {
    let checked = Config::from_file(file).and_then(|c| {
        let s = c.validate()?;
        c.check_db_dir()?;
        Ok(s)
    });
    match checked {
        Ok(s) => {
            println!("{}: valid", file.display());
            for line in s.summary() {
                println!("  {line}");
            }
            0
        }
        Err(e) => {
            eprintln!("shoal-controller check-config: {e}");
            2
        }
    }
}

/// What a SIGHUP compares the new configuration with.
struct ReloadState {
    /// The configuration the controller started with (restart-only fields
    /// keep these values until a restart).
    started: Config,
    /// Fingerprints of the restart-only files at start.
    started_files: Fingerprints,
    /// The configuration read last (start or the last accepted reload).
    last: Config,
}

/// SIGHUP: re-reads and fully validates the configuration; applies the
/// credentials, the controller's token, the groups, the placement rules and
/// automation levels (unless set through the API), the log filter and the policy
/// (unless pinned); names every other changed field as needing a restart.
/// An invalid file is refused and the running configuration stays.
fn reload(args: &RunArgs, running: &Running, st: &mut ReloadState, log: &LogControl) {
    let Some(path) = &args.config else {
        warn!("SIGHUP: started without --config: nothing to reload");
        return;
    };
    info!(config = %path.display(), "SIGHUP: re-reading the configuration");
    let loaded = load_config(args).and_then(|c| match c.validate() {
        Ok(s) => Ok((c, s)),
        Err(e) => Err(e.to_string()),
    });
    let (cfg, settings): (Config, Settings) = match loaded {
        Ok(x) => x,
        Err(e) => {
            error!("SIGHUP: configuration refused, the running one stays: {e}");
            return;
        }
    };
    let restart = st.started.restart_only_changes(&cfg, &st.started_files);
    for f in &restart {
        warn!("SIGHUP: {f} changed; restart to apply");
    }
    let pinned = args.policy.is_some() || args.dry_run;
    let policy_changed = changed_fields(&st.last.policy, &cfg.policy)
        .map(|v| !v.is_empty())
        .unwrap_or(true);
    if policy_changed && pinned {
        warn!("SIGHUP: policy changed; not applied: --policy/--dry-run on the command line pin it");
    }
    let r = match running.reload(&settings, policy_changed && !pinned) {
        Ok(r) => r,
        Err(e) => {
            error!("SIGHUP: configuration refused, the running one stays: {e}");
            return;
        }
    };
    let log_note = if cfg.log_filter == st.last.log_filter {
        "unchanged".to_string()
    } else if let Some(by) = log.pinned {
        warn!("SIGHUP: log_filter changed; not applied: {by} chooses the filter");
        format!("pinned by {by}")
    } else {
        match log.set(cfg.log_filter.as_deref()) {
            Ok(()) => format!("{:?}", cfg.log_filter.as_deref().unwrap_or("info")),
            Err(e) => {
                warn!(error = %e, "SIGHUP: log filter not changed");
                "not changed".to_string()
            }
        }
    };
    let policy_note = match &r.policy {
        Some(p) => format!("{p} (applied)"),
        None if policy_changed => "pinned".to_string(),
        None => "unchanged".to_string(),
    };
    info!(
        "configuration reloaded (operators: {}, host tokens: {}, controller token: {}, groups: {}, policy: {}, log filter: {}, restart needed for: {})",
        r.operators,
        r.hosts,
        if r.controller_token { "set" } else { "none" },
        if r.groups { "configured" } else { "none" },
        policy_note,
        log_note,
        if restart.is_empty() {
            "nothing".to_string()
        } else {
            restart.join(", ")
        }
    );
    st.last = cfg;
}

fn run(args: RunArgs) -> i32 {
    let cfg = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal-controller: {e}");
            return 2;
        }
    };
    let settings = match cfg.validate() {
        Ok(mut s) => {
            s.policy_pinned = args.policy.is_some() || args.dry_run;
            s
        }
        Err(e) => {
            eprintln!("shoal-controller: {e}");
            return 2;
        }
    };
    let log = init_logging(
        settings.log_format,
        args.log.as_deref(),
        settings.log_filter.as_deref(),
    );
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
    let mut st = ReloadState {
        started_files: cfg.file_fingerprints(),
        started: cfg.clone(),
        last: cfg,
    };
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Before anything else: SIGHUP's default action ends the process.
        let signals = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let (mut hup, mut term, mut int) = match signals {
            (Ok(h), Ok(t), Ok(i)) => (h, t, i),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                error!("cannot install signal handlers: {e}");
                return 1;
            }
        };
        let running = match shoal_controller::app::start(settings).await {
            Ok(r) => r,
            Err(e) => {
                error!("{e}");
                return 1;
            }
        };
        info!(of = %running.of_addr, api = %running.api_addr, "listening");
        loop {
            tokio::select! {
                _ = hup.recv() => reload(&args, &running, &mut st, &log),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        info!("shutting down");
        running.shutdown(Duration::from_secs(5)).await;
        0
    })
}

/// Largest scenario `simulate --from-live` reads (a full export: 40,000
/// VMs take some 20 MB).
const MAX_LIVE_SCENARIO: usize = 256 << 20;

/// Why `simulate --from-live` could not get the live scenario.
#[derive(Debug, thiserror::Error)]
enum FromLiveError {
    /// Bad URL, token file or CA file.
    #[error("{0}")]
    Usage(String),
    /// No usable answer from the controller.
    #[error("{0}")]
    Fetch(String),
    /// The export is not a valid scenario.
    #[error(transparent)]
    Scenario(#[from] shoal_controller::sim::SimError),
}

/// `GET URL/api/v1/scenario` with the operator token of `--token-file`,
/// trusting `--ca-file`; validated as a scenario file is, and written to
/// `--save` when asked.
fn fetch_live(
    args: &shoal_controller::sim::SimulateArgs,
    url: &str,
) -> Result<shoal_controller::sim::Scenario, FromLiveError> {
    use shoal_common::http::{HttpClient, Method};
    let base = url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(FromLiveError::Usage(format!(
            "--from-live {url}: need http://HOST:PORT or https://HOST:PORT"
        )));
    }
    let token = args
        .token_file
        .as_deref()
        .map(shoal_common::secret::Secret::from_file)
        .transpose()
        .map_err(|e| FromLiveError::Usage(format!("--token-file: {e}")))?;
    let tls = args
        .ca_file
        .as_deref()
        .map(|ca| shoal_common::tls::client_config(ca, None))
        .transpose()
        .map_err(|e| FromLiveError::Usage(format!("--ca-file: {e}")))?;
    if base.starts_with("https://") && tls.is_none() {
        return Err(FromLiveError::Usage(
            "an https:// URL needs --ca-file (the CA that signed the controller's certificate)"
                .into(),
        ));
    }
    let http = HttpClient::with_tls(Duration::from_secs(120), tls).with_max_body(MAX_LIVE_SCENARIO);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FromLiveError::Fetch(format!("cannot start the runtime: {e}")))?;
    let target = format!("{base}/api/v1/scenario");
    let (code, body) = rt
        .block_on(http.send(
            Method::GET,
            &target,
            token.as_ref().map(|t| t.expose()),
            None,
        ))
        .map_err(|e| FromLiveError::Fetch(format!("{target}: {e}")))?;
    if code != 200 {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        return Err(FromLiveError::Fetch(format!("{target}: {code}: {msg}")));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|e| FromLiveError::Fetch(format!("{target}: not UTF-8: {e}")))?;
    let scn = shoal_controller::sim::Scenario::load(text)?;
    info!(
        hosts = scn.hosts.len(),
        vms = scn.vms.len(),
        pairs = scn.traffic.len(),
        "live scenario fetched"
    );
    if let Some(path) = &args.save {
        let mut out =
            serde_json::to_string_pretty(&scn).map_err(|e| FromLiveError::Fetch(e.to_string()))?;
        out.push('\n');
        std::fs::write(path, out)
            .map_err(|e| FromLiveError::Usage(format!("--save {}: {e}", path.display())))?;
    }
    Ok(scn)
}

/// `simulate`: 0 done; 2 bad arguments or scenario; 1 the live scenario
/// could not be fetched.
fn simulate(args: &shoal_controller::sim::SimulateArgs) -> i32 {
    let loaded = match &args.from_live {
        Some(url) => match fetch_live(args, url) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("shoal-controller simulate: {e}");
                return match e {
                    FromLiveError::Fetch(_) => 1,
                    FromLiveError::Usage(_) | FromLiveError::Scenario(_) => 2,
                };
            }
        },
        None => None,
    };
    match shoal_controller::sim::run_cli_with(args, loaded) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shoal-controller simulate: {e}");
            2
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Run(args)) => run(args),
        Some(Command::Simulate(args)) => simulate(&args),
        Some(Command::CheckConfig(a)) => check_config(&a.file),
        None => run(cli.run),
    };
    std::process::exit(code);
}
