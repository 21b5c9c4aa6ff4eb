//! `shoal-controller check-config FILE` and `shoal-hostd check-config
//! FILE` as an operator runs them before a (re)start: a valid file → exit
//! 0 and a summary; a bad field → non-zero and the field named; a token
//! file readable by others → non-zero; a token is never printed.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use support::creds::{self, OPERATOR_TOKEN, READER_TOKEN};
use support::{cargo_bin, workspace_root, TempDir};

fn check(bin: &str, file: &Path) -> Output {
    Command::new(cargo_bin(bin))
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The example of docs/configuration.md with its /etc/shoal files in `dir`.
fn controller_example(dir: &Path) -> String {
    let doc = std::fs::read_to_string(workspace_root().join("docs/configuration.md")).unwrap();
    let start = doc.find("```toml\n").expect("example") + 8;
    let len = doc[start..].find("```").expect("end of the example");
    std::fs::create_dir_all(dir.join("hosts")).unwrap();
    for (f, t) in [
        ("controller.token", creds::CONTROLLER_TOKEN),
        ("ops.token", OPERATOR_TOKEN),
        ("noc.token", READER_TOKEN),
        ("hosts/h1.token", "shoal-test-host-h1-check-config"),
    ] {
        creds::write_secret(&dir.join(f), t).unwrap();
    }
    doc[start..start + len]
        .replace("/etc/shoal", &dir.display().to_string())
        .replace(
            "db = \"shoal.db\"",
            &format!("db = \"{}/shoal.db\"", dir.display()),
        )
}

#[test]
fn controller_check_config() {
    let tmp = TempDir::new("shcc").unwrap();
    let dir = tmp.path();
    let cfg = dir.join("controller.toml");
    let good = controller_example(dir);
    std::fs::write(&cfg, &good).unwrap();
    let o = check("shoal-controller", &cfg);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "valid",
        "OpenFlow       0.0.0.0:6653  TLS off",
        "REST API       127.0.0.1:8080  TLS off",
        "operators      2 (1 write, 1 read)",
        "host tokens    1 (h1)",
        "policy         none",
    ] {
        assert!(out.contains(want), "{want:?} missing: {out}");
    }

    // A range error names its field.
    std::fs::write(&cfg, good.replace("interval_s = 10.0", "interval_s = 0.5")).unwrap();
    let o = check("shoal-controller", &cfg);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("monitor.interval_s"), "{}", text(&o));
    // An unknown field is named too.
    std::fs::write(
        &cfg,
        good.replace("[forwarding]", "[forwarding]\nbogus_field = 1"),
    )
    .unwrap();
    let o = check("shoal-controller", &cfg);
    assert!(!o.status.success());
    assert!(text(&o).contains("bogus_field"), "{}", text(&o));
    // The state bounds are checked: a MAC limit of 0, a table smaller
    // than one port's limit, a retention without rows.
    for (from, to, field) in [
        (
            "max_macs_per_port = 64",
            "max_macs_per_port = 0",
            "forwarding.max_macs_per_port",
        ),
        (
            "max_endpoints = 8192",
            "max_endpoints = 10",
            "forwarding.max_endpoints",
        ),
        (
            "decisions = { max_rows = 10000,",
            "decisions = { max_rows = 0,",
            "retention.decisions.max_rows",
        ),
    ] {
        assert!(
            good.contains(from),
            "{from:?} not in the documented example"
        );
        std::fs::write(&cfg, good.replace(from, to)).unwrap();
        let o = check("shoal-controller", &cfg);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(field), "{}", text(&o));
    }
    // A database directory that does not exist.
    std::fs::write(
        &cfg,
        good.replace(
            &format!("{}/shoal.db", dir.display()),
            "/nonexistent/shoal/x.db",
        ),
    )
    .unwrap();
    let o = check("shoal-controller", &cfg);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("db: directory /nonexistent/shoal"),
        "{}",
        text(&o)
    );

    // A token file readable by others.
    std::fs::write(&cfg, &good).unwrap();
    std::fs::set_permissions(
        dir.join("noc.token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let o = check("shoal-controller", &cfg);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("auth.operators[1].token_file") && out.contains("group or others"),
        "{out}"
    );
    for t in [OPERATOR_TOKEN, READER_TOKEN, creds::CONTROLLER_TOKEN] {
        assert!(!out.contains(t), "token printed: {out}");
    }
}

/// examples/hostd.toml with its files (token, disks) in `dir`.
fn hostd_example(dir: &Path) -> String {
    for d in ["images/db", "scenarios"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    for f in ["images/web1.qcow2", "images/db/db1.qcow2"] {
        std::fs::write(dir.join(f), b"").unwrap();
    }
    creds::write_secret(&dir.join("token"), "shoal-test-host-hv1-check-config").unwrap();
    creds::write_secret(&dir.join("controller.token"), creds::CONTROLLER_TOKEN).unwrap();
    let text = std::fs::read_to_string(workspace_root().join("examples/hostd.toml")).unwrap();
    let d = dir.display().to_string();
    text.replace("/etc/shoal", &d)
        .replace("/var/lib/shoal", &d)
        .replace("/run/shoal-hostd", &format!("{d}/run"))
        .replace(
            "token_file = ",
            &format!("controller_token_file = \"{d}/controller.token\"\ntoken_file = "),
        )
}

#[test]
fn hostd_check_config() {
    let tmp = TempDir::new("shcch").unwrap();
    let dir = tmp.path();
    let cfg = dir.join("hostd.toml");
    let good = hostd_example(dir);
    std::fs::write(&cfg, &good).unwrap();
    let o = check("shoal-hostd", &cfg);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "valid",
        "host id        hv1",
        "templates      2 (large, small)",
        "VMs            2 (2 qemu, 0 netns)",
        "API token      the controller's",
    ] {
        assert!(out.contains(want), "{want:?} missing: {out}");
    }

    // A bad value names its setting.
    std::fs::write(&cfg, good.replace("interval_s = 10", "interval_s = 0")).unwrap();
    let o = check("shoal-hostd", &cfg);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("interval_s"), "{}", text(&o));
    // A template with a host-local option names the template.
    std::fs::write(
        &cfg,
        good.replacen("\"-accel\", \"kvm\"", "\"-incoming\", \"tcp:0:1\"", 1),
    )
    .unwrap();
    let o = check("shoal-hostd", &cfg);
    assert!(!o.status.success());
    assert!(text(&o).contains("template small"), "{}", text(&o));
    // A disk that is not there.
    std::fs::remove_file(dir.join("images/web1.qcow2")).unwrap();
    std::fs::write(&cfg, &good).unwrap();
    let o = check("shoal-hostd", &cfg);
    assert!(!o.status.success());
    assert!(text(&o).contains("web1"), "{}", text(&o));
    std::fs::write(dir.join("images/web1.qcow2"), b"").unwrap();

    // A token file readable by others.
    std::fs::set_permissions(
        dir.join("controller.token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let o = check("shoal-hostd", &cfg);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("controller_token_file") && out.contains("group or others"),
        "{out}"
    );
    assert!(
        !out.contains(creds::CONTROLLER_TOKEN),
        "token printed: {out}"
    );
}
