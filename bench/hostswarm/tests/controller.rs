//! hostswarm against the real Shoal controller (started in this process on
//! free ports, as ofswarm's test does): every registration and report is
//! accepted, nothing answers 5xx, and `GET /api/v1/loop` shows the rounds
//! the loop ran over the emulated hosts. No speed threshold.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_controller::app;
use shoal_controller::config::Config;

const READER_TOKEN: &str = "hostswarm-test-reader-token-81d3e7";
const HOSTS: usize = 20;
const VMS: usize = 200;

/// A directory of its own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("hostswarm-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_controller(dir: &Path) -> app::Running {
    let token = dir.join("reader.token");
    std::fs::write(&token, format!("{READER_TOKEN}\n")).expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    hostswarm::run::write_host_tokens(&dir.join("hosts"), HOSTS).expect("host tokens");
    let cfg = Config::from_toml(&format!(
        r#"
of_listen = "127.0.0.1:0"
api_listen = "127.0.0.1:0"
db = ":memory:"
[monitor]
interval_s = 1.0
[policy]
name = "sandpiper"
dry_run = true
[auth]
host_tokens_dir = "{hosts}"
operators = [ {{ name = "noc", role = "read", token_file = "{token}" }} ]
"#,
        hosts = dir.join("hosts").display(),
        token = token.display(),
    ))
    .expect("config");
    app::start(cfg.validate().expect("valid config"))
        .await
        .expect("controller starts")
}

fn n(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_accepted_and_rounds_are_timed() {
    let dir = TempDir::new();
    let ctl = start_controller(dir.path()).await;
    let child = Command::new(env!("CARGO_BIN_EXE_hostswarm"))
        .args(["--api", &format!("http://{}", ctl.api_addr)])
        .arg("--token-file")
        .arg(dir.path().join("reader.token"))
        .arg("--host-tokens-dir")
        .arg(dir.path().join("hosts"))
        .args(["--hosts", &HOSTS.to_string(), "--vms", &VMS.to_string()])
        .args(["--rate", "100", "--duration", "5", "--warmup", "2"])
        .args(["--hot-fraction", "0.25", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("hostswarm starts");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("hostswarm ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hostswarm failed: {stdout}");
    let s: serde_json::Value = serde_json::from_str(&stdout).expect("JSON summary");

    assert_eq!(n(&s, &["hosts"]), HOSTS as f64);
    assert_eq!(n(&s, &["vms"]), VMS as f64);
    assert_eq!(n(&s, &["registration_latency", "count"]), HOSTS as f64);
    let sent = n(&s, &["reports", "sent"]);
    // 5 s at 100/s; allow for a slow test machine, not for losses.
    assert!(sent >= 400.0, "{sent} reports sent: {s}");
    assert_eq!(n(&s, &["reports", "accepted"]), sent, "{s}");
    assert_eq!(n(&s, &["reports", "transport_errors"]), 0.0, "{s}");
    assert_eq!(
        s["reports"]["errors_by_status"],
        serde_json::json!({}),
        "{s}"
    );
    assert!(n(&s, &["reports", "latency", "p99_ms"]) > 0.0);

    // The loop ran over every host and VM, and timed its rounds.
    let round = &s["round"];
    assert!(n(round, &["round"]) >= 3.0, "{round}");
    assert_eq!(round["policy"], "sandpiper");
    assert_eq!(round["dry_run"], true);
    let last = &round["last"];
    assert_eq!(n(last, &["hosts"]), HOSTS as f64, "{round}");
    assert_eq!(n(last, &["vms"]), VMS as f64, "{round}");
    let total = n(round, &["total_ms", "p99"]);
    assert!(
        total > 0.0 && total >= n(round, &["total_ms", "p50"]),
        "{round}"
    );
    assert!(n(round, &["total_ms", "max"]) >= total);
    assert!(n(round, &["snapshot_ms", "max"]) > 0.0);
    // The hot hosts (a quarter of 20) are seen.
    assert!(s["hotspots"].as_u64().is_some_and(|h| h >= 1), "{s}");

    // Controller-side: every host and VM registered.
    {
        let hosts = ctl.knowledge.hosts_read().expect("hosts");
        assert_eq!(hosts.hosts().len(), HOSTS);
        assert_eq!(hosts.vms().len(), VMS);
        assert!(hosts.hosts().values().all(|e| !e.reports.is_empty()));
    }
    ctl.shutdown(Duration::from_secs(2)).await;
}

/// A wrong operator token is refused before any load, with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_said_so() {
    let dir = TempDir::new();
    let ctl = start_controller(dir.path()).await;
    let bad = dir.path().join("bad.token");
    std::fs::write(&bad, "not-the-right-token-at-all\n").expect("token");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostswarm"));
    cmd.args(["--api", &format!("http://{}", ctl.api_addr)])
        .arg("--token-file")
        .arg(&bad)
        .arg("--host-tokens-dir")
        .arg(dir.path().join("hosts"))
        .args(["--hosts", "2", "--vms", "4", "--duration", "1"]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("hostswarm ran");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the token is refused"), "{err}");
    ctl.shutdown(Duration::from_secs(2)).await;
}
