//! `shoalctl` against a real `shoal-controller` process (no switches
//! needed): tables and JSON, policy changes, refused calls and their exit
//! codes (404 → 3, 401/403 → 5, unreachable → 6, usage → 2), an unsafe
//! token file, following the event stream, shell completions.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{cargo_bin, creds, free_port, wait_for, ChildGuard};

struct Ctl {
    _child: ChildGuard,
    url: String,
}

fn start(dir: &Path) -> Ctl {
    let auth = creds::controller_auth(dir, &["h1"]).expect("token files");
    let api_port = free_port().expect("port");
    let of_port = free_port().expect("port");
    let cfg = dir.join("controller.toml");
    std::fs::write(
        &cfg,
        format!(
            "of_listen = \"127.0.0.1:{of_port}\"\napi_listen = \"127.0.0.1:{api_port}\"\ndb = \"{db}\"\n{auth}",
            db = dir.join("shoal.db").display()
        ),
    )
    .expect("config");
    let child = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("controller.log")).expect("log")),
    )
    .expect("start controller");
    let api = format!("127.0.0.1:{api_port}");
    wait_for("the controller API", Duration::from_secs(20), || {
        std::net::TcpStream::connect(&api).ok()
    })
    .expect("controller up");
    Ctl {
        _child: child,
        url: format!("http://{api}"),
    }
}

fn shoalctl(url: &str, token: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(cargo_bin("shoalctl"));
    c.env_remove("SHOAL_URL")
        .env_remove("SHOAL_TOKEN_FILE")
        .env_remove("SHOAL_CA_FILE")
        .args(["--url", url]);
    if let Some(t) = token {
        c.arg("--token-file").arg(t);
    }
    c.args(args).output().expect("run shoalctl")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: Output) -> Value {
    let out = ok(o);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn shoalctl_reads_changes_and_fails_clearly() {
    let dir = support::TempDir::new("ctl").expect("tempdir");
    let c = start(dir.path());
    let op = dir.path().join("operator.token");
    let reader = dir.path().join("reader.token");
    let url = c.url.as_str();

    // Tables for people, JSON for scripts.
    let status = ok(shoalctl(url, Some(&op), &["status"]));
    assert!(
        status.contains("policy") && status.contains("switches"),
        "{status}"
    );
    assert_eq!(
        json(shoalctl(url, Some(&op), &["-o", "json", "switches"])),
        serde_json::json!([])
    );
    let hosts = ok(shoalctl(url, Some(&reader), &["hosts"]));
    assert!(
        hosts.starts_with("host"),
        "a table with its header: {hosts}"
    );
    for cmd in [
        &["links"][..],
        &["vms"],
        &["hotspots"],
        &["decisions"],
        &["migrations"],
        &["matrix", "--top", "5"],
    ] {
        ok(shoalctl(url, Some(&reader), cmd));
    }

    // The policy, changed and read back.
    let set = json(shoalctl(
        url,
        Some(&op),
        &[
            "-o",
            "json",
            "policy",
            "set",
            "sandpiper",
            "--dry-run",
            "true",
        ],
    ));
    assert_eq!(set["name"], "sandpiper", "{set}");
    let got = json(shoalctl(
        url,
        Some(&reader),
        &["-o", "json", "policy", "get"],
    ));
    assert_eq!(
        (got["name"].as_str(), got["dry_run"].as_bool()),
        (Some("sandpiper"), Some(true))
    );

    // Refusals, each with its exit code and the controller's reason.
    let o = shoalctl(url, Some(&op), &["migrate", "no-such-vm", "--to", "h1"]);
    assert_eq!(o.status.code(), Some(3), "unknown VM: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no-such-vm"),
        "{}",
        text(&o)
    );
    let o = shoalctl(url, Some(&reader), &["policy", "set", "none"]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "a reader changes nothing: {}",
        text(&o)
    );
    let o = shoalctl(url, None, &["hosts"]);
    assert_eq!(o.status.code(), Some(5), "no token: {}", text(&o));
    let o = shoalctl(url, Some(&op), &["cancel", "../../healthz"]);
    assert_eq!(o.status.code(), Some(2), "not an id: {}", text(&o));
    let o = shoalctl(url, Some(&op), &["matrix", "--top", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = shoalctl("ftp://x", Some(&op), &["status"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = shoalctl("https://127.0.0.1:1", Some(&op), &["status"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "https needs --ca-file: {}",
        text(&o)
    );
    let closed = format!("http://127.0.0.1:{}", free_port().expect("port"));
    let o = shoalctl(&closed, Some(&op), &["--timeout", "2", "status"]);
    assert_eq!(o.status.code(), Some(6), "unreachable: {}", text(&o));
    let open = dir.path().join("open.token");
    std::fs::write(&open, creds::OPERATOR_TOKEN).expect("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = shoalctl(url, Some(&open), &["status"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a token file others may read: {}",
        text(&o)
    );

    // Following the event stream. From the start of what the controller
    // keeps: the change to sandpiper above is there, with its id.
    let first = json(shoalctl(
        url,
        Some(&op),
        &[
            "-o",
            "json",
            "watch",
            "--after",
            "0",
            "--kinds",
            "policy_changed",
            "--count",
            "1",
        ],
    ));
    assert_eq!(first["data"]["data"]["policy"], "sandpiper", "{first}");
    let after = first["id"].as_u64().expect("an event id").to_string();
    // Then two changes, whenever the watcher connects: it resumes after
    // that id, so it misses neither.
    let mut watch = Command::new(cargo_bin("shoalctl"))
        .args(["--url", url, "--token-file"])
        .arg(&op)
        .args([
            "-o",
            "json",
            "watch",
            "--after",
            &after,
            "--kinds",
            "policy_changed",
            "--count",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch");
    for name in ["idc", "score"] {
        ok(shoalctl(url, Some(&op), &["policy", "set", name]));
    }
    let start = std::time::Instant::now();
    let out = loop {
        if watch.try_wait().expect("wait").is_some() {
            break watch.wait_with_output().expect("output");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "watch did not end after 2 events"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", text(&out));
    let policies: Vec<&str> = lines
        .iter()
        .map(|l| l["data"]["data"]["policy"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(policies, ["idc", "score"], "{lines:?}");
    assert!(lines[0]["id"].as_u64() < lines[1]["id"].as_u64());

    // Completions.
    let bash = ok(shoalctl(url, None, &["completions", "bash"]));
    assert!(
        bash.contains("shoalctl") && bash.contains("migrate"),
        "{bash}"
    );
}

/// Placement rules through `shoalctl rules`: added, listed with warnings
/// about names nobody registered, refused when contradictory (with both
/// rules named), when taken or by a reader; kept across a restart;
/// removed.
#[test]
fn shoalctl_manages_placement_rules() {
    let dir = support::TempDir::new("ctlr").expect("tempdir");
    let op = dir.path().join("operator.token");
    let reader = dir.path().join("reader.token");
    let pin = r#"{"kind":"pin","name":"db-on-h1","vms":["db1"],"hosts":["h1"]}"#;
    {
        let c = start(dir.path());
        let url = c.url.as_str();
        let v = json(shoalctl(
            url,
            Some(&reader),
            &["-o", "json", "rules", "list"],
        ));
        assert_eq!(v["rules"], serde_json::json!([]), "{v}");
        let v = json(shoalctl(
            url,
            Some(&op),
            &["-o", "json", "rules", "add", pin],
        ));
        assert_eq!(v["rules"][0]["name"], "db-on-h1", "{v}");
        assert!(
            !v["warnings"].as_array().is_none_or(Vec::is_empty),
            "db1 and h1 are unknown: {v}"
        );
        let o = shoalctl(url, Some(&op), &["rules", "add", pin]);
        assert_eq!(o.status.code(), Some(4), "a taken name: {}", text(&o));
        let contra = r#"{"kind":"exclude","name":"no-h1","hosts":["h1"],"vms":["db1"]}"#;
        let o = shoalctl(url, Some(&op), &["rules", "add", contra]);
        assert_eq!(o.status.code(), Some(4), "a contradiction: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("db-on-h1") && err.contains("no-h1"),
            "both named: {err}"
        );
        let o = shoalctl(
            url,
            Some(&op),
            &["rules", "add", r#"{"kind":"pin","name":"x"}"#],
        );
        assert_eq!(o.status.code(), Some(4), "not a rule (422): {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("vms"),
            "{}",
            text(&o)
        );
        let o = shoalctl(url, Some(&reader), &["rules", "rm", "db-on-h1"]);
        assert_eq!(o.status.code(), Some(5), "a reader: {}", text(&o));
        let o = shoalctl(url, Some(&op), &["rules", "rm", "nothing"]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        let table = ok(shoalctl(url, Some(&reader), &["rules", "list"]));
        assert!(
            table.contains("db-on-h1") && table.contains("pin"),
            "{table}"
        );
    }
    // A restart keeps them (the knowledge store).
    let c = start(dir.path());
    let url = c.url.as_str();
    let v = json(shoalctl(
        url,
        Some(&reader),
        &["-o", "json", "rules", "list"],
    ));
    assert_eq!(v["rules"][0]["name"], "db-on-h1", "kept: {v}");
    let v = json(shoalctl(
        url,
        Some(&op),
        &["-o", "json", "rules", "rm", "db-on-h1"],
    ));
    assert_eq!(v["rules"], serde_json::json!([]), "{v}");
}
