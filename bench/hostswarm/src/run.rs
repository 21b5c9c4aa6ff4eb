//! The run: register every host, post reports at the target rate for the
//! warm-up and the measurement, then read the loop's round times.
//!
//! Reports are scheduled in one sequence: report `n` belongs to host
//! `n mod H` and is due at `n / R` seconds after the start, so that every
//! host reports every `H / R` seconds (its `interval_s`) and the hosts are
//! spread evenly over the interval. At most `concurrency` requests are in
//! flight; when none is free the schedule waits (the lag is reported).
//! Each host has its own HTTP client and token, as a host daemon does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use shoal_common::http::{HttpClient, HttpError, Method};
use shoal_common::secret::{Secret, SecretError};

use crate::gen::{Dc, DcSpec};
use crate::hist::{Histogram, Percentiles};

/// Why a run fails.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A token file cannot be used.
    #[error(transparent)]
    Token(#[from] SecretError),
    /// A token file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The controller cannot be reached.
    #[error("{what}: {source}")]
    Http {
        /// What was being done.
        what: String,
        /// The failure.
        source: HttpError,
    },
    /// The controller refused a token (401).
    #[error("{what}: the token is refused (401): {message}")]
    TokenRefused {
        /// What was being done.
        what: String,
        /// The controller's message.
        message: String,
    },
    /// The controller answered with an error status.
    #[error("{what}: the controller answered {status}: {message}")]
    Refused {
        /// What was being done.
        what: String,
        /// HTTP status.
        status: u16,
        /// The controller's message.
        message: String,
    },
    /// An answer that is not the JSON expected.
    #[error("{what}: unexpected answer: {message}")]
    Answer {
        /// What was being done.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A bad option.
    #[error("{0}")]
    Usage(String),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The controller's API base URL (`http://127.0.0.1:8080`).
    pub api: String,
    /// An operator's token (reads `/api/v1/loop`).
    pub token: Secret,
    /// Directory of the host tokens, `<host-id>.token` (the controller's
    /// `auth.host_tokens_dir`).
    pub host_tokens_dir: PathBuf,
    /// Hosts.
    pub hosts: usize,
    /// VMs in all.
    pub vms: usize,
    /// Reports per second in all (> 0).
    pub rate: f64,
    /// Seconds measured.
    pub duration: Duration,
    /// Seconds of reports before the measurement (not measured).
    pub warmup: Duration,
    /// Seed of the metrics.
    pub seed: u64,
    /// Requests in flight at most (≥ 1).
    pub concurrency: usize,
    /// Fraction of hot hosts.
    pub hot_fraction: f64,
    /// Timeout of every request.
    pub timeout: Duration,
    /// The controller's process id (same machine): its CPU and memory are
    /// read at the start and the end of the measurement.
    pub cpu_pid: Option<u32>,
}

/// Outcome of the report phase.
#[derive(Debug, Clone, Serialize)]
pub struct ReportStats {
    /// Reports sent during the measurement.
    pub sent: u64,
    /// Of them, accepted (2xx).
    pub accepted: u64,
    /// Non-2xx answers by status.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Requests without an answer (transport errors, timeouts).
    pub transport_errors: u64,
    /// One controller message per status seen (the first).
    pub error_messages: BTreeMap<u16, String>,
    /// Answered reports per second over the measurement.
    pub achieved_per_s: f64,
    /// The target.
    pub target_per_s: f64,
    /// Latency of the accepted reports.
    pub latency: Option<Percentiles>,
    /// Largest delay of a report's start behind its schedule, ms (the
    /// generator itself or the in-flight limit falling behind).
    pub max_schedule_lag_ms: f64,
}

/// The controller's process over the measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStats {
    /// Process id.
    pub pid: u32,
    /// CPU used over the measurement, in cores (1.0 = one core busy).
    pub cpu_cores: Option<f64>,
    /// Resident memory at the end, MiB.
    pub rss_mb: Option<f64>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Hosts registered.
    pub hosts: usize,
    /// VMs registered.
    pub vms: usize,
    /// Hosts generated hot.
    pub hot_hosts: usize,
    /// Each host's report interval, s.
    pub interval_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Seconds to register every host.
    pub registration_s: f64,
    /// Latency of the registrations.
    pub registration_latency: Option<Percentiles>,
    /// The reports.
    pub reports: ReportStats,
    /// `GET /api/v1/loop` at the end (the controller's round times).
    pub round: serde_json::Value,
    /// Hosts of the controller's latest hotspot report.
    pub hotspots: Option<usize>,
    /// Decisions the controller shows (at most 500).
    pub decisions: Option<usize>,
    /// The controller's CPU and memory.
    pub controller: Option<ProcessStats>,
}

/// The path of host `id`'s token in `dir`.
pub fn host_token_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.token"))
}

/// Writes a fresh random token for each of the first `hosts` hosts into
/// `dir` (created; files mode 0600), for the controller's
/// `auth.host_tokens_dir`.
pub fn write_host_tokens(dir: &Path, hosts: usize) -> Result<(), RunError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(werr(dir))?;
    for i in 0..hosts.max(1) {
        let path = host_token_path(dir, &crate::gen::host_id(i));
        let token = shoal_common::secret::random_token().map_err(RunError::Usage)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(werr(&path))?;
        writeln!(f, "{}", token.expose()).map_err(werr(&path))?;
    }
    Ok(())
}

/// The controller's `{"error": …}` message of an answer body (else the
/// body itself, shortened).
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.chars().take(200).collect())
}

/// A GET with the operator token: the JSON answer.
pub async fn get_json(
    client: &HttpClient,
    api: &str,
    token: &Secret,
    path: &str,
) -> Result<serde_json::Value, RunError> {
    let what = format!("GET {path}");
    let url = format!("{}{path}", api.trim_end_matches('/'));
    let (status, body) = client
        .send(Method::GET, &url, Some(token.expose()), None)
        .await
        .map_err(|source| RunError::Http {
            what: what.clone(),
            source,
        })?;
    match status {
        200 => serde_json::from_slice(&body).map_err(|e| RunError::Answer {
            what,
            message: e.to_string(),
        }),
        401 => Err(RunError::TokenRefused {
            what,
            message: error_message(&body),
        }),
        status => Err(RunError::Refused {
            what,
            status,
            message: error_message(&body),
        }),
    }
}

/// Counters shared by the report tasks.
#[derive(Debug, Default)]
struct Shared {
    hist: Histogram,
    sent: u64,
    accepted: u64,
    errors: BTreeMap<u16, u64>,
    messages: BTreeMap<u16, String>,
    transport: u64,
    first_transport: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One emulated host daemon: its client and token.
struct HostClient {
    client: HttpClient,
    token: Secret,
    url_register: String,
    url_report: String,
}

/// Runs the whole benchmark; progress goes to stderr.
pub async fn run(cfg: RunConfig) -> Result<Summary, RunError> {
    if !(cfg.rate.is_finite() && cfg.rate > 0.0) {
        return Err(RunError::Usage(format!(
            "--rate must be > 0, got {}",
            cfg.rate
        )));
    }
    if cfg.hosts == 0 || cfg.concurrency == 0 {
        return Err(RunError::Usage(
            "--hosts and --concurrency must be ≥ 1".into(),
        ));
    }
    let api = cfg.api.trim_end_matches('/').to_string();
    let interval_s = cfg.hosts as f64 / cfg.rate;
    let dc = Arc::new(Dc::new(DcSpec {
        hosts: cfg.hosts,
        vms: cfg.vms,
        seed: cfg.seed,
        interval_s,
        hot_fraction: cfg.hot_fraction,
    }));
    let ops = HttpClient::new(cfg.timeout).with_max_body(64 << 20);
    // The operator token first: a refused one fails before any load.
    get_json(&ops, &api, &cfg.token, "/api/v1/loop").await?;

    let mut clients = Vec::with_capacity(cfg.hosts);
    for h in &dc.hosts {
        clients.push(Arc::new(HostClient {
            client: HttpClient::new(cfg.timeout),
            token: Secret::from_file(&host_token_path(&cfg.host_tokens_dir, &h.id))?,
            url_register: format!("{api}/api/v1/hosts/{}", h.id),
            url_report: format!("{api}/api/v1/hosts/{}/reports", h.id),
        }));
    }

    eprintln!(
        "hostswarm: registering {} hosts with {} VMs ({} hot hosts) at {api}",
        cfg.hosts,
        cfg.vms,
        dc.hot_hosts()
    );
    let reg_started = Instant::now();
    let reg_hist = register_all(&dc, &clients, cfg.concurrency).await?;
    let registration_s = reg_started.elapsed().as_secs_f64();
    eprintln!(
        "hostswarm: registered in {registration_s:.2} s; reporting at {} /s (every host every {interval_s:.3} s) for {:.0} s warm-up + {:.0} s",
        cfg.rate,
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64()
    );

    let (reports, controller) = report_phase(&cfg, &dc, &clients).await?;

    let round = get_json(&ops, &api, &cfg.token, "/api/v1/loop").await?;
    let hotspots = get_json(&ops, &api, &cfg.token, "/api/v1/hotspots")
        .await
        .ok()
        .and_then(|v| v["report"]["hot"].as_object().map(|o| o.len()));
    let decisions = get_json(&ops, &api, &cfg.token, "/api/v1/decisions?limit=500")
        .await
        .ok()
        .and_then(|v| v.as_array().map(Vec::len));
    Ok(Summary {
        hosts: cfg.hosts,
        vms: cfg.vms,
        hot_hosts: dc.hot_hosts(),
        interval_s,
        duration_s: cfg.duration.as_secs_f64(),
        registration_s,
        registration_latency: reg_hist.percentiles(),
        reports,
        round,
        hotspots,
        decisions,
        controller,
    })
}

/// Registers every host, `concurrency` at a time; the first refusal ends
/// the run with the controller's message.
async fn register_all(
    dc: &Arc<Dc>,
    clients: &[Arc<HostClient>],
    concurrency: usize,
) -> Result<Histogram, RunError> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in clients.iter().enumerate() {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| RunError::Usage(e.to_string()))?;
        let dc = dc.clone();
        let c = c.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let what = format!("PUT /api/v1/hosts/{}", dc.hosts[i].id);
            let reg = dc
                .registration(i)
                .ok_or_else(|| RunError::Usage(what.clone()))?;
            let body = serde_json::to_vec(&reg).map_err(|e| RunError::Answer {
                what: what.clone(),
                message: e.to_string(),
            })?;
            let t = Instant::now();
            let (status, answer) = c
                .client
                .send(
                    Method::PUT,
                    &c.url_register,
                    Some(c.token.expose()),
                    Some(body),
                )
                .await
                .map_err(|source| RunError::Http {
                    what: what.clone(),
                    source,
                })?;
            let took = t.elapsed();
            match status {
                200..=299 => Ok(took),
                401 => Err(RunError::TokenRefused {
                    what: format!("{what} (host token)"),
                    message: error_message(&answer),
                }),
                status => Err(RunError::Refused {
                    what,
                    status,
                    message: error_message(&answer),
                }),
            }
        });
        // Fail early: collect what has finished.
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| RunError::Usage(e.to_string()))??;
        }
    }
    let mut hist = Histogram::default();
    while let Some(done) = tasks.join_next().await {
        hist.record(done.map_err(|e| RunError::Usage(e.to_string()))??);
    }
    Ok(hist)
}

/// Posts the reports on schedule; the statistics of the measured part and
/// the controller's CPU and memory over it.
async fn report_phase(
    cfg: &RunConfig,
    dc: &Arc<Dc>,
    clients: &[Arc<HostClient>],
) -> Result<(ReportStats, Option<ProcessStats>), RunError> {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let sem = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency));
    let h = clients.len() as u64;
    let start = tokio::time::Instant::now();
    let measure_from = start + cfg.warmup;
    let end = measure_from + cfg.duration;
    let period = Duration::from_secs_f64(1.0 / cfg.rate);
    let mut cpu_start = None;
    let mut measuring = false;
    let mut max_lag = Duration::ZERO;
    let mut last_progress = start;
    let mut n: u64 = 0;
    loop {
        let due = start + period.mul_f64(n as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        if !measuring && due >= measure_from {
            measuring = true;
            cpu_start = cfg.cpu_pid.and_then(ofswarm::procstat::cpu_seconds);
        }
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| RunError::Usage(e.to_string()))?;
        let now = tokio::time::Instant::now();
        if measuring {
            max_lag = max_lag.max(now.saturating_duration_since(due));
        }
        let host = (n % h) as usize;
        let seq = n / h + 1;
        let c = clients[host].clone();
        let dc = dc.clone();
        let counters = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Some(rep) = dc.report(host, seq, unix_ms()) else {
                return;
            };
            let Ok(body) = serde_json::to_vec(&rep) else {
                return;
            };
            let t = Instant::now();
            let r = c
                .client
                .send(
                    Method::POST,
                    &c.url_report,
                    Some(c.token.expose()),
                    Some(body),
                )
                .await;
            let took = t.elapsed();
            if !measuring {
                return;
            }
            let mut s = lock(&counters);
            s.sent += 1;
            match r {
                Ok((200..=299, _)) => {
                    s.accepted += 1;
                    s.hist.record(took);
                }
                Ok((status, answer)) => {
                    *s.errors.entry(status).or_insert(0) += 1;
                    s.messages
                        .entry(status)
                        .or_insert_with(|| error_message(&answer));
                }
                Err(e) => {
                    s.transport += 1;
                    s.first_transport.get_or_insert_with(|| e.to_string());
                }
            }
        });
        n += 1;
        if now.duration_since(last_progress) >= Duration::from_secs(10) {
            last_progress = now;
            let s = lock(&shared);
            eprintln!(
                "hostswarm: t={:.0} s, {} reports measured, {} accepted, {} errors",
                now.duration_since(start).as_secs_f64(),
                s.sent,
                s.accepted,
                s.sent - s.accepted
            );
        }
    }
    // Wait for the requests in flight.
    let _all = sem
        .acquire_many(cfg.concurrency as u32)
        .await
        .map_err(|e| RunError::Usage(e.to_string()))?;
    let elapsed = cfg.duration.as_secs_f64();
    let controller = cfg.cpu_pid.map(|pid| ProcessStats {
        pid,
        cpu_cores: cpu_start
            .zip(ofswarm::procstat::cpu_seconds(pid))
            .map(|(a, b)| (b - a) / elapsed),
        rss_mb: ofswarm::procstat::rss_kb(pid).map(|kb| kb as f64 / 1024.0),
    });
    let s = lock(&shared);
    if let Some(e) = &s.first_transport {
        eprintln!(
            "hostswarm: {} reports unanswered, the first: {e}",
            s.transport
        );
    }
    let stats = ReportStats {
        sent: s.sent,
        accepted: s.accepted,
        errors_by_status: s.errors.clone(),
        transport_errors: s.transport,
        error_messages: s.messages.clone(),
        achieved_per_s: (s.sent - s.transport) as f64 / elapsed,
        target_per_s: cfg.rate,
        latency: s.hist.percentiles(),
        max_schedule_lag_ms: max_lag.as_secs_f64() * 1000.0,
    };
    Ok((stats, controller))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controllers_error_message_is_extracted() {
        assert_eq!(
            error_message(br#"{"error":"host hs0001 is not registered"}"#),
            "host hs0001 is not registered"
        );
        assert_eq!(error_message(b"plain text"), "plain text");
        assert_eq!(error_message(&[b'x'; 500]).len(), 200);
    }

    #[test]
    fn host_tokens_are_written_owner_only_and_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hostswarm-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_host_tokens(&dir, 3).expect("written");
        for i in 0..3 {
            let p = host_token_path(&dir, &crate::gen::host_id(i));
            let mode = std::fs::metadata(&p).expect("file").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            assert!(Secret::from_file(&p).is_ok());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
