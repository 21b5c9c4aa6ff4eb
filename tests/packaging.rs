//! The systemd units as shipped: each unit's `ExecStart=` line is run as
//! written (binary and configuration path moved into a throwaway
//! directory; no systemd needed) with the packaged configuration
//! (`controller/packaging/controller.toml`, `hostd/packaging/hostd.toml`),
//! TLS on the REST API, OpenFlow and hostd's API, and the test
//! credentials.
//!
//! Checks: both configurations pass `check-config`; each process serves
//! `/healthz` over HTTPS (and not plain HTTP) and refuses an
//! unauthenticated write with 401 (controller: `PUT /api/v1/policy`;
//! hostd: `PUT /api/v1/commands/x`) while the right token passes; hostd
//! registers with the controller over HTTPS with its own token. The unit
//! files carry the hardening the deployment guide describes and, where
//! `systemd-analyze` exists, pass `systemd-analyze verify`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use shoal_common::http::{HttpClient, Method};
use support::creds::{self, CONTROLLER_TOKEN, OPERATOR_TOKEN, READER_TOKEN};
use support::pki::https_pki;
use support::{cargo_bin, free_port, wait_for, workspace_root, ChildGuard, TempDir};

/// The `Key=value` lines of a unit file (comments and sections left out).
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn value<'a>(d: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    d.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A unit file's `ExecStart=` as argv, with the installed binary replaced
/// by the one just built and the configuration `/etc/shoal/NAME` by
/// `config`.
fn exec_start(unit_path: &str, binary: &str, config: &Path) -> Vec<String> {
    let unit = std::fs::read_to_string(workspace_root().join(unit_path)).expect("unit file");
    let d = directives(&unit);
    let lines = value(&d, "ExecStart");
    assert_eq!(lines.len(), 1, "{unit_path}: one ExecStart= line");
    let mut argv: Vec<String> = lines[0].split_whitespace().map(String::from).collect();
    assert_eq!(
        argv[0],
        format!("/usr/local/bin/{binary}"),
        "{unit_path}: ExecStart= runs the installed binary"
    );
    argv[0] = cargo_bin(binary).display().to_string();
    let conf = argv
        .iter()
        .position(|a| a.starts_with("/etc/shoal/") && a.ends_with(".toml"))
        .unwrap_or_else(|| panic!("{unit_path}: no /etc/shoal/*.toml in ExecStart="));
    argv[conf] = config.display().to_string();
    argv
}

/// The hardening both units must have, and `systemd-analyze verify`.
fn check_unit(unit_path: &str, binary: &str, extra: &[(&str, &str)]) {
    let unit = std::fs::read_to_string(workspace_root().join(unit_path)).expect("unit file");
    let d = directives(&unit);
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("SystemCallArchitectures", "native"),
        ("LockPersonality", "yes"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "2"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ]
    .iter()
    .chain(extra)
    {
        assert!(
            value(&d, k).contains(v),
            "{unit_path}: {k}={v} missing (has {:?})",
            value(&d, k)
        );
    }
    for k in [
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        "RestrictAddressFamilies",
        "ReadWritePaths",
    ] {
        assert!(!value(&d, k).is_empty(), "{unit_path}: no {k}=");
    }
    // Every directive of [Service] is explained: a comment above each
    // group of directives.
    let mut section = "";
    let mut commented = false;
    for l in unit.lines().map(str::trim) {
        if l.starts_with('[') {
            section = l;
            commented = false;
        } else if l.starts_with('#') {
            commented = true;
        } else if l.is_empty() {
            commented = false;
        } else if section == "[Service]" {
            assert!(commented, "{unit_path}: {l:?} has no comment");
        }
    }
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let tmp = TempDir::new("shpkgu").unwrap();
        let name = Path::new(unit_path).file_name().unwrap();
        let copy = tmp.path().join(name);
        std::fs::write(
            &copy,
            unit.replace(
                &format!("/usr/local/bin/{binary}"),
                &cargo_bin(binary).display().to_string(),
            ),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze");
        assert!(
            out.status.success(),
            "systemd-analyze verify {unit_path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("note: no systemd-analyze here; {unit_path} not verified by it");
    }
}

fn https(
    client: &HttpClient,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (code, b) = rt
        .block_on(client.send(method, url, token, body.map(|b| b.as_bytes().to_vec())))
        .map_err(|e| e.to_string())?;
    Ok((code, String::from_utf8_lossy(&b).into_owned()))
}

/// The packaged configuration `path` with `/etc/shoal`, `/var/lib/shoal`
/// and the addresses of `subst` replaced.
fn packaged(path: &str, subst: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(workspace_root().join(path)).expect("packaged config");
    for (from, to) in subst {
        assert!(text.contains(from), "{path} has no {from:?}");
        text = text.replace(from, to);
    }
    text
}

fn check_config(binary: &str, cfg: &Path) {
    let out = Command::new(cargo_bin(binary))
        .arg("check-config")
        .arg(cfg)
        .output()
        .expect("check-config");
    assert!(
        out.status.success(),
        "{binary} check-config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spawn(argv: &[String], log: &Path) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log")),
    )
    .expect("start")
}

#[test]
fn units_start_with_tls_and_refuse_unauthenticated_writes() {
    check_unit(
        "controller/packaging/shoal-controller.service",
        "shoal-controller",
        &[
            ("User", "shoal"),
            ("CapabilityBoundingSet", ""),
            ("ReadWritePaths", "/var/lib/shoal"),
        ],
    );
    check_unit(
        "hostd/packaging/shoal-hostd.service",
        "shoal-hostd",
        &[("KillMode", "process"), ("StateDirectory", "shoal/hostd")],
    );

    let tmp = TempDir::new("shpkg").unwrap();
    let dir = tmp.path();
    let etc = dir.join("etc");
    let state = dir.join("state");
    for d in [&etc, &state, &state.join("images"), &dir.join("run")] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (ca, cert, key) = https_pki(dir, &["127.0.0.1"]);
    // The file names the packaged configurations use.
    for (from, to) in [
        (&ca, "ca.pem"),
        (&ca, "switchca-cacert.pem"),
        (&cert, "api-cert.pem"),
        (&cert, "ctl-cert.pem"),
        (&cert, "hostd-cert.pem"),
    ] {
        std::fs::copy(from, etc.join(to)).unwrap();
    }
    for to in ["api-key.pem", "ctl-privkey.pem", "hostd-key.pem"] {
        let pem = std::fs::read_to_string(&key).unwrap();
        creds::write_secret(&etc.join(to), pem.trim_end()).unwrap_or_else(|e| panic!("{to}: {e}"));
    }
    creds::controller_auth(&etc, &["hv1"]).unwrap();
    creds::write_secret(&etc.join("ops.token"), OPERATOR_TOKEN).unwrap();
    creds::write_secret(&etc.join("noc.token"), READER_TOKEN).unwrap();
    creds::write_secret(&etc.join("hostd.token"), &creds::host_token("hv1")).unwrap();

    // The controller, as its unit starts it.
    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let ccfg = dir.join("controller.toml");
    let etc_s = etc.display().to_string();
    let state_s = state.display().to_string();
    std::fs::write(
        &ccfg,
        packaged(
            "controller/packaging/controller.toml",
            &[
                ("/etc/shoal", etc_s.clone()),
                ("/var/lib/shoal", state_s.clone()),
                ("\"0.0.0.0:6653\"", format!("\"127.0.0.1:{of_port}\"")),
                ("\"0.0.0.0:8080\"", format!("\"127.0.0.1:{api_port}\"")),
            ],
        ),
    )
    .unwrap();
    check_config("shoal-controller", &ccfg);
    let argv = exec_start(
        "controller/packaging/shoal-controller.service",
        "shoal-controller",
        &ccfg,
    );
    let clog = dir.join("controller.log");
    let _ctl = spawn(&argv, &clog);
    let client = HttpClient::with_tls(
        Duration::from_secs(5),
        Some(shoal_common::tls::client_config(&ca, None).expect("client TLS")),
    );
    let api = format!("https://127.0.0.1:{api_port}");
    let clog_text = || std::fs::read_to_string(&clog).unwrap_or_default();
    wait_for("the controller over HTTPS", Duration::from_secs(20), || {
        https(&client, Method::GET, &format!("{api}/healthz"), None, None)
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", clog_text()));
    let plain = support::http(
        &format!("127.0.0.1:{api_port}"),
        "GET",
        "/healthz",
        None,
        None,
    );
    assert!(
        plain.map(|(c, _)| c != 200).unwrap_or(true),
        "plain HTTP answered on the controller's HTTPS port"
    );
    let policy = r#"{"name":"none","dry_run":true}"#;
    let (code, body) = https(
        &client,
        Method::PUT,
        &format!("{api}/api/v1/policy"),
        None,
        Some(policy),
    )
    .unwrap();
    assert_eq!(code, 401, "unauthenticated PUT /api/v1/policy: {body}");
    let (code, _) = https(
        &client,
        Method::PUT,
        &format!("{api}/api/v1/policy"),
        Some(READER_TOKEN),
        Some(policy),
    )
    .unwrap();
    assert_eq!(code, 403, "a reader may not change the policy");
    let (code, body) = https(
        &client,
        Method::PUT,
        &format!("{api}/api/v1/policy"),
        Some(OPERATOR_TOKEN),
        Some(policy),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");

    // hostd, as its unit starts it, registering with that controller.
    let hd_port = free_port().unwrap();
    let hcfg = dir.join("hostd.toml");
    let text = packaged(
        "hostd/packaging/hostd.toml",
        &[
            ("/etc/shoal", etc_s),
            ("/var/lib/shoal", state_s),
            ("/run/shoal-hostd", dir.join("run").display().to_string()),
            ("https://10.0.0.254:8080", api.clone()),
            ("\"10.0.0.1:7070\"", format!("\"127.0.0.1:{hd_port}\"")),
            (
                "dom0_addr = \"10.0.0.1\"",
                "dom0_addr = \"127.0.0.1\"".into(),
            ),
            // No NIC or OVS bridge of that name on a test machine.
            ("uplink = \"eth0\"", "# uplink".into()),
            ("bridge = \"br-vms\"", "# bridge".into()),
        ],
    );
    std::fs::write(&hcfg, text).unwrap();
    check_config("shoal-hostd", &hcfg);
    let argv = exec_start("hostd/packaging/shoal-hostd.service", "shoal-hostd", &hcfg);
    let hlog = dir.join("hostd.log");
    let _hd = spawn(&argv, &hlog);
    let hlog_text = || std::fs::read_to_string(&hlog).unwrap_or_default();
    let hd = format!("https://127.0.0.1:{hd_port}");
    wait_for("hostd over HTTPS", Duration::from_secs(20), || {
        https(&client, Method::GET, &format!("{hd}/healthz"), None, None)
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", hlog_text()));
    let plain = support::http(
        &format!("127.0.0.1:{hd_port}"),
        "GET",
        "/healthz",
        None,
        None,
    );
    assert!(
        plain.map(|(c, _)| c != 200).unwrap_or(true),
        "plain HTTP answered on hostd's HTTPS port"
    );
    let cmd = r#"{"kind":"vf_attach","vm":"nope"}"#;
    let (code, body) = https(
        &client,
        Method::PUT,
        &format!("{hd}/api/v1/commands/x"),
        None,
        Some(cmd),
    )
    .unwrap();
    assert_eq!(code, 401, "unauthenticated PUT /api/v1/commands/x: {body}");
    let (code, body) = https(
        &client,
        Method::PUT,
        &format!("{hd}/api/v1/commands/x"),
        Some(OPERATOR_TOKEN),
        Some(cmd),
    )
    .unwrap();
    assert_eq!(code, 401, "an operator's token on hostd: {body}");
    let (code, body) = https(
        &client,
        Method::GET,
        &format!("{hd}/api/v1/vms"),
        Some(CONTROLLER_TOKEN),
        None,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let host = wait_for("hv1 registered over HTTPS", Duration::from_secs(20), || {
        let (_, b) = https(
            &client,
            Method::GET,
            &format!("{api}/api/v1/hosts"),
            Some(READER_TOKEN),
            None,
        )
        .ok()?;
        let v: Value = serde_json::from_str(&b).ok()?;
        v.as_array()?.iter().find(|h| h["id"] == "hv1").cloned()
    })
    .unwrap_or_else(|e| panic!("{e}: {}", hlog_text()));
    assert_eq!(host["api_url"], hd, "{host}");
    for t in [OPERATOR_TOKEN, READER_TOKEN, CONTROLLER_TOKEN] {
        assert!(
            !clog_text().contains(t) && !hlog_text().contains(t),
            "token {t} in a log"
        );
    }
}
