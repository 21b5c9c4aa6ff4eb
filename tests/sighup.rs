//! SIGHUP reloads what can be reloaded, without a restart (real processes;
//! no switches needed).
//!
//! - the controller: a new operator and a new host token (a file dropped
//!   into `host_tokens_dir`) work after SIGHUP, the `[policy]` section is
//!   applied, a changed listen address is reported as needing a restart;
//!   an invalid new file (a range error, a token file readable by others)
//!   is refused with a log line naming the field, and the credentials in
//!   force keep working; nothing stops the process and no token reaches
//!   the log;
//! - hostd: the controller's token is rotated (the new one works, the old
//!   one no longer does), its own token is rotated together with the
//!   controller's copy (reports go on), a changed `interval_s` is reported
//!   as needing a restart, an invalid token file is refused.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::creds::{self, host_token, CONTROLLER_TOKEN, OPERATOR_TOKEN, READER_TOKEN};
use support::qemu::{http, Hostd};
use support::{cargo_bin, free_port, wait_for, ChildGuard, TempDir};

const NEW_OPERATOR: &str = "shoal-test-operator-added-on-sighup-1";
const ROTATED_CONTROLLER: &str = "shoal-test-controller-rotated-2f9a61";
const ROTATED_HOST: &str = "shoal-test-host-h1-rotated-8c03d7e5";

/// How often `needle` occurs in the file at `log`.
fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// Sends SIGHUP to `child` and waits until `log` holds one more `needle`.
fn hup_and_wait(child: &ChildGuard, log: &Path, needle: &str) {
    let before = count(log, needle);
    child.signal("HUP").expect("kill -HUP");
    wait_for(needle, Duration::from_secs(10), || {
        (count(log, needle) > before).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(log).unwrap_or_default()));
}

fn code(api: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> u16 {
    http(api, method, path, token, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        .0
}

struct Ctl {
    child: ChildGuard,
    api: String,
    cfg: std::path::PathBuf,
    log: std::path::PathBuf,
    base: String,
}

/// A controller with the test credentials (hosts `hosts`), `extra` appended
/// to its configuration.
fn start_controller(dir: &Path, hosts: &[&str], extra: &str) -> Ctl {
    let auth = creds::controller_auth(dir, hosts).expect("token files");
    let api_port = free_port().expect("port");
    let of_port = free_port().expect("port");
    let base = format!(
        "of_listen = \"127.0.0.1:{of_port}\"\napi_listen = \"127.0.0.1:{api_port}\"\ndb = \":memory:\"\n"
    );
    let cfg = dir.join("controller.toml");
    std::fs::write(&cfg, format!("{base}{auth}{extra}")).expect("config");
    let log = dir.join("controller.log");
    let child = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log")),
    )
    .expect("start controller");
    let api = format!("127.0.0.1:{api_port}");
    wait_for("the controller API", Duration::from_secs(20), || {
        http(&api, "GET", "/healthz", None, None)
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()));
    Ctl {
        child,
        api,
        cfg,
        log,
        base,
    }
}

#[test]
fn controller_reloads_credentials_and_policy_on_sighup() {
    let tmp = TempDir::new("shup").expect("tempdir");
    let dir = tmp.path();
    let mut c = start_controller(dir, &["h1"], "");
    let ops2 = dir.join("ops2.token");
    // Before: neither the new operator nor a second host is known.
    assert_eq!(
        code(&c.api, "GET", "/api/v1/links", Some(NEW_OPERATOR), None),
        401
    );
    let h2 = host_token("h2");
    assert_eq!(
        code(&c.api, "PUT", "/api/v1/hosts/h2", Some(&h2), Some("{}")),
        401
    );

    // A new operator, a new host's token file, another policy, another
    // OpenFlow port (restart only).
    creds::write_secret(&ops2, NEW_OPERATOR).expect("token");
    creds::write_secret(&creds::host_token_file(dir, "h2"), &h2).expect("token");
    let auth = creds::controller_auth(dir, &["h1", "h2"]).expect("token files");
    let auth = auth.replace(
        "operators = [\n",
        &format!(
            "operators = [\n  {{ name = \"ops2\", role = \"write\", token_file = \"{}\" }},\n",
            ops2.display()
        ),
    );
    let moved = c
        .base
        .replacen("of_listen = \"127.0.0.1:", "of_listen = \"127.0.0.2:", 1);
    let good = format!(
        "{moved}{auth}[policy]\nname = \"idc\"\ndry_run = true\n\
         [automation]\nlevel = \"recommend\"\n\
         [[rules]]\nkind = \"exclude\"\nname = \"not-h9\"\nhosts = [\"h9\"]\n"
    );
    std::fs::write(&c.cfg, &good).expect("config");
    hup_and_wait(&c.child, &c.log, "configuration reloaded");
    assert!(c.child.try_wait().is_none(), "SIGHUP ended the controller");
    assert_eq!(
        code(&c.api, "GET", "/api/v1/links", Some(NEW_OPERATOR), None),
        200
    );
    let put = code(&c.api, "PUT", "/api/v1/hosts/h2", Some(&h2), Some("{}"));
    assert!(put != 401 && put != 403, "h2's token after SIGHUP: {put}");
    assert_eq!(
        code(&c.api, "GET", "/api/v1/links", Some(OPERATOR_TOKEN), None),
        200
    );
    let (_, policy) = http(&c.api, "GET", "/api/v1/policy", Some(READER_TOKEN), None).unwrap();
    let policy: Value = serde_json::from_str(&policy).expect("policy JSON");
    assert_eq!(policy["name"], "idc", "{policy}");
    assert_eq!(policy["dry_run"], true, "{policy}");
    // Placement rules and automation levels apply too (none was set
    // through the API, which would take precedence).
    let (_, rules) = http(&c.api, "GET", "/api/v1/rules", Some(READER_TOKEN), None).unwrap();
    let rules: Value = serde_json::from_str(&rules).expect("rules JSON");
    assert_eq!(rules["rules"][0]["name"], "not-h9", "{rules}");
    let (_, auto) = http(
        &c.api,
        "GET",
        "/api/v1/automation",
        Some(READER_TOKEN),
        None,
    )
    .unwrap();
    let auto: Value = serde_json::from_str(&auto).expect("automation JSON");
    assert_eq!(auto["level"], "recommend", "{auto}");
    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    assert!(
        !log.contains("SIGHUP: rules") && !log.contains("SIGHUP: automation"),
        "reloaded fields reported as restart-only: {log}"
    );
    assert!(
        log.contains("SIGHUP: of_listen changed; restart to apply"),
        "{log}"
    );
    assert!(
        !log.contains("SIGHUP: auth") && !log.contains("SIGHUP: policy"),
        "reloaded fields reported as restart-only: {log}"
    );

    // Invalid files are refused; the credentials in force stay.
    for (bad, field) in [
        (
            format!(
                "{moved}{}[monitor]\ninterval_s = 0.5\n",
                creds::controller_auth(dir, &["h1"]).unwrap()
            ),
            "monitor.interval_s",
        ),
        (good.clone(), "auth.operators[0].token_file"),
    ] {
        if field.starts_with("auth") {
            std::fs::set_permissions(&ops2, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::write(&c.cfg, &bad).expect("config");
        hup_and_wait(&c.child, &c.log, "configuration refused");
        let log = std::fs::read_to_string(&c.log).unwrap_or_default();
        let line = log
            .lines()
            .rfind(|l| l.contains("configuration refused"))
            .unwrap_or_default();
        assert!(line.contains(field), "{field} not named: {line}");
        assert!(
            c.child.try_wait().is_none(),
            "an invalid file ended the controller"
        );
        assert_eq!(
            code(&c.api, "GET", "/api/v1/links", Some(NEW_OPERATOR), None),
            200,
            "the running credentials were dropped ({field})"
        );
        let put = code(&c.api, "PUT", "/api/v1/hosts/h2", Some(&h2), Some("{}"));
        assert!(put != 401 && put != 403, "h2 dropped ({field}): {put}");
    }

    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    for t in [
        NEW_OPERATOR,
        OPERATOR_TOKEN,
        READER_TOKEN,
        CONTROLLER_TOKEN,
        h2.as_str(),
    ] {
        assert!(!log.contains(t), "token {t} in the log");
    }
    let status = c.child.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
}

#[test]
fn hostd_rotates_its_tokens_on_sighup() {
    let tmp = TempDir::new("shuph").expect("tempdir");
    let dir = tmp.path();
    let c = start_controller(dir, &["h1"], "");
    let port = free_port().expect("port");
    let hd_api = format!("127.0.0.1:{port}");
    let config = |interval: u32| {
        format!(
            "host_id = \"h1\"\ncontroller = \"http://{}\"\nlisten = \"{hd_api}\"\n{}interval_s = {interval}\nrun_dir = \"{}\"\nhttp_timeout_s = 3\n",
            c.api,
            creds::hostd_auth(dir, "h1"),
            dir.join("run").display()
        )
    };
    let hd = Hostd::start(None, &dir.join("h1"), &config(1), &hd_api).expect("hostd");
    let hlog = hd.log.clone();
    let history = || -> Option<u64> {
        let (code, body) =
            http(&c.api, "GET", "/api/v1/hosts/h1", Some(READER_TOKEN), None).ok()?;
        if code != 200 {
            return None;
        }
        serde_json::from_str::<Value>(&body).ok()?["history_len"].as_u64()
    };
    wait_for("reports of h1", Duration::from_secs(20), || {
        history().filter(|n| *n >= 2)
    })
    .unwrap();
    assert_eq!(
        code(&hd_api, "GET", "/api/v1/vms", Some(CONTROLLER_TOKEN), None),
        200
    );

    // The controller's token: the new one works, the old one no longer;
    // a changed interval needs a restart.
    creds::write_secret(&creds::controller_token_file(dir), ROTATED_CONTROLLER).unwrap();
    std::fs::write(dir.join("h1/hostd.toml"), config(2)).unwrap();
    hup_and_wait(&hd.child, &hlog, "configuration reloaded");
    assert_eq!(
        code(
            &hd_api,
            "GET",
            "/api/v1/vms",
            Some(ROTATED_CONTROLLER),
            None
        ),
        200
    );
    assert_eq!(
        code(&hd_api, "GET", "/api/v1/vms", Some(CONTROLLER_TOKEN), None),
        401
    );
    let text = std::fs::read_to_string(&hlog).unwrap_or_default();
    assert!(
        text.contains("SIGHUP: interval_s changed; restart to apply"),
        "{text}"
    );

    // Its own token, rotated on both sides (the same file here): the
    // controller first, then hostd; reports go on.
    creds::write_secret(&creds::host_token_file(dir, "h1"), ROTATED_HOST).unwrap();
    hup_and_wait(&c.child, &c.log, "configuration reloaded");
    hup_and_wait(&hd.child, &hlog, "configuration reloaded");
    let after = history().expect("history");
    wait_for(
        "reports with the rotated token",
        Duration::from_secs(20),
        || history().filter(|n| *n >= after + 3),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            std::fs::read_to_string(&hlog).unwrap_or_default()
        )
    });
    assert_eq!(
        code(
            &c.api,
            "PUT",
            "/api/v1/hosts/h1",
            Some(&host_token("h1")),
            Some("{}")
        ),
        401,
        "the old host token still works"
    );

    // A token file readable by others is refused; the rotated token stays.
    let ctl_file = creds::controller_token_file(dir);
    std::fs::set_permissions(&ctl_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    hup_and_wait(&hd.child, &hlog, "configuration refused");
    let text = std::fs::read_to_string(&hlog).unwrap_or_default();
    assert!(
        text.lines()
            .filter(|l| l.contains("configuration refused"))
            .all(|l| l.contains("controller_token_file")),
        "{text}"
    );
    assert_eq!(
        code(
            &hd_api,
            "GET",
            "/api/v1/vms",
            Some(ROTATED_CONTROLLER),
            None
        ),
        200
    );
    for t in [ROTATED_CONTROLLER, ROTATED_HOST, CONTROLLER_TOKEN] {
        assert!(!text.contains(t), "token {t} in hostd's log");
    }
}
