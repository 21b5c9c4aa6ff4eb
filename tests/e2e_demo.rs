//! The demo's dashboard stage (`mininet/demo.py --wait`, what
//! `scripts/demo.sh` runs from a terminal): it prints the dashboard's URL
//! and stays up, over HTTPS, with live traffic, until SIGINT; then it
//! removes everything it made and exits 0.
//!
//! Checked with `curl` against the real controller it started: the URL
//! answers with the sign-in form, the operator token file it names signs
//! in (a session cookie), and the dashboard's snapshot through that
//! session shows the demo's three switches and traffic still flowing
//! after the measured part ended; `shoalctl matrix` over HTTPS sees it
//! too. After Ctrl-C (SIGINT): exit 0, the
//! bridges it made are gone and the API no longer answers.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::world::fresh_bin_dir;
use support::{e2e_lock, ensure_ovs, free_port, is_root, workspace_root};

/// `curl` with the demo's CA: (status, headers, body).
fn curl(ca: &Path, args: &[&str], url: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "--cacert"])
        .arg(ca)
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

fn bridges() -> Vec<String> {
    support::sh("ovs-vsctl", &["list-br"])
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn the_demo_keeps_its_dashboard_up_until_ctrl_c() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    ensure_ovs().unwrap();
    let bins = fresh_bin_dir();
    let before = bridges();
    for b in ["s1", "s2", "s3"] {
        assert!(
            !before.iter().any(|x| x == b),
            "bridge {b} exists already: the demo needs its names"
        );
    }
    let out = std::env::temp_dir().join(format!("shoal-demo-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let api = format!("127.0.0.1:{}", free_port().unwrap());
    let of_port = free_port().unwrap().to_string();
    let mut demo = Command::new("/usr/bin/python3")
        .arg(workspace_root().join("mininet/demo.py"))
        .args([
            "--wait",
            "--seconds",
            "5",
            "--api",
            &api,
            "--of-port",
            &of_port,
        ])
        .arg("--out")
        .arg(&out)
        .env("SHOAL_BIN_DIR", &bins)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(out.join("demo.err")).unwrap())
        .spawn()
        .expect("start the demo");
    let stdout = demo.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Until it says where the dashboard is and that Ctrl-C stops it.
    let mut seen = Vec::new();
    let mut url = None;
    let start = Instant::now();
    loop {
        let left = Duration::from_secs(150).saturating_sub(start.elapsed());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => {
                let _ = demo.kill();
                let _ = demo.wait();
                panic!(
                    "the demo did not reach its dashboard stage:\n{}\n{}",
                    seen.join("\n"),
                    std::fs::read_to_string(out.join("demo.err")).unwrap_or_default()
                );
            }
        };
        if let Some(u) = line.strip_prefix("*** dashboard: ") {
            url = Some(u.trim().to_string());
        }
        let done = line.starts_with("*** Ctrl-C stops it");
        seen.push(line);
        if done {
            break;
        }
    }
    let url = url.unwrap_or_else(|| panic!("no dashboard URL printed:\n{}", seen.join("\n")));
    assert_eq!(url, format!("https://{api}/"), "{}", seen.join("\n"));
    let ca = out.join("tls/ca.pem");
    let token_file = out.join("operator.token");
    assert!(
        seen.iter()
            .any(|l| l.contains(token_file.to_str().unwrap_or("?"))),
        "the token file is named: {}",
        seen.join("\n")
    );

    // The URL: the sign-in form, over HTTPS with the demo's CA.
    let (code, _, body) = curl(&ca, &[], &url);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("<form"), "{body}");
    // The token it names signs in.
    let token = std::fs::read_to_string(&token_file).expect("token file");
    let form = format!("token={}", token.lines().next().unwrap_or(""));
    let (code, head, _) = curl(&ca, &["-d", &form], &format!("{url}api/v1/session"));
    assert_eq!(code, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {head}"))
        .to_string();
    // Its snapshot: the demo's 3 switches, and traffic still flowing.
    let start = Instant::now();
    let snap = loop {
        let (code, _, body) = curl(
            &ca,
            &["-H", &format!("Cookie: {cookie}")],
            &format!("{url}api/v1/dashboard"),
        );
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        let flowing = v["matrix"]["cells"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x["bytes_per_s"].as_f64() > Some(1e5)));
        if v["switches"].as_array().map(Vec::len) == Some(3) && flowing {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no live traffic on the dashboard: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(snap["links"].as_array().map(Vec::len), Some(2), "{snap}");
    // shoalctl over HTTPS with the demo's CA and token file: the same
    // traffic, by the operator's command line.
    let ctl = Command::new(support::cargo_bin("shoalctl"))
        .args(["--url", &url[..url.len() - 1], "--ca-file"])
        .arg(&ca)
        .arg("--token-file")
        .arg(&token_file)
        .args(["-o", "json", "matrix", "--top", "5"])
        .output()
        .expect("shoalctl");
    assert_eq!(
        ctl.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    let m: Value = serde_json::from_slice(&ctl.stdout).expect("JSON");
    assert!(
        m["cells"].as_array().is_some_and(|c| !c.is_empty()),
        "shoalctl matrix: {m}"
    );

    // Ctrl-C: it stops, cleans up, and exits 0.
    assert!(demo.try_wait().expect("wait").is_none(), "still up");
    support::sh("kill", &["-INT", &demo.id().to_string()]).expect("SIGINT");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = demo.try_wait().expect("wait") {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the demo did not stop within 60 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    let after = bridges();
    for b in ["s1", "s2", "s3"] {
        assert!(!after.iter().any(|x| x == b), "bridge {b} left behind");
    }
    assert!(
        std::net::TcpStream::connect(&api).is_err(),
        "the controller still answers at {api}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
