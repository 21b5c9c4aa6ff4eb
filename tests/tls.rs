//! End to end over TLS: OpenFlow with Open vSwitch's own PKI (`ovs-pki`,
//! `ssl:` controller targets), the REST API over HTTPS, and a host daemon
//! that registers over HTTPS and serves its API over HTTPS.
//!
//! ```text
//!   root ns: controller (OpenFlow TLS 10.254.13.1, HTTPS API 127.0.0.1)
//!            shoal-hostd (HTTPS API 127.0.0.1, registers over HTTPS)
//!      | veth 10.254.13.0/30
//!   private OVS (ns shtl): shtl-b1 (0x7101) --- shtl-b2 (0x7102)  [ssl:]
//!                            | port 10              | port 10
//!                          h1 10.78.0.1           h2 10.78.0.2
//!                          shtl-b3 (0x7103)  [tcp: to the TLS port]
//! ```
//!
//! Checks: both `ssl:` bridges connect (their certificates signed by the
//! switch CA), the plain-TCP bridge is never admitted, flows set up over TLS
//! carry pings, LLDP finds the cable; the API answers over HTTPS only and
//! still demands a token; hostd registers over HTTPS with its own token and
//! serves its API over HTTPS to the controller's token only.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use shoal_common::http::{HttpClient, Method};
use support::creds::{self, CONTROLLER_TOKEN, READER_TOKEN};
use support::pki::{https_pki, run_in as run};
use support::qemu::Hostd;
use support::{
    cargo_bin, e2e_lock, free_port, is_root, wait_for, ChildGuard, NsHost, OvsBridge, PrivateOvs,
    TempDir,
};

/// Open vSwitch's PKI in `dir/pki`: a controller certificate (`ctl-*`)
/// and a switch certificate (`sc-*`).
fn ovs_pki(dir: &Path) {
    let pki = dir.join("pki").display().to_string();
    let log = dir.join("ovs-pki.log").display().to_string();
    run(
        dir,
        "ovs-pki",
        &["init", &format!("--dir={pki}"), "-l", &log],
    );
    for (name, kind) in [("ctl", "controller"), ("sc", "switch")] {
        run(
            dir,
            "ovs-pki",
            &["req+sign", name, kind, &format!("--dir={pki}"), "-l", &log],
        );
    }
}

fn https_get(client: &HttpClient, url: &str, token: Option<&str>) -> Result<(u16, Value), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (code, body) = rt
        .block_on(client.send(Method::GET, url, token, None))
        .map_err(|e| e.to_string())?;
    Ok((code, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

#[test]
fn openflow_rest_and_hostd_over_tls() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    support::ensure_ovs().unwrap();
    let tmp = TempDir::new("shtl").unwrap();
    let dir = tmp.path();
    ovs_pki(dir);
    let ovs = PrivateOvs::start("shtl", 13).expect("private OVS");
    let (ca, cert, key) = https_pki(dir, &["127.0.0.1", &ovs.controller_ip()]);
    let auth = creds::controller_auth(dir, &["tlh1"]).unwrap();

    // Controller: OpenFlow over TLS (switch CA), HTTPS API, hostd CA.
    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let cfg = dir.join("controller.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"of_listen = "{ip}:{of_port}"
api_listen = "127.0.0.1:{api_port}"
db = ":memory:"
{auth}
[tls]
api_cert_file = "{cert}"
api_key_file = "{key}"
hostd_ca_file = "{ca}"
openflow_cert_file = "{d}/ctl-cert.pem"
openflow_key_file = "{d}/ctl-privkey.pem"
openflow_ca_file = "{d}/pki/switchca/cacert.pem"
[topology]
lldp_interval_s = 1.0
port_confirm_s = 1.5
[monitor]
interval_s = 1.0
"#,
            ip = ovs.controller_ip(),
            cert = cert.display(),
            key = key.display(),
            ca = ca.display(),
            d = dir.display(),
        ),
    )
    .unwrap();
    let log = dir.join("controller.log");
    let _ctl = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    )
    .unwrap();
    let tls = shoal_common::tls::client_config(&ca, None).expect("client TLS");
    let client = HttpClient::with_tls(Duration::from_secs(5), Some(tls));
    let api = format!("https://127.0.0.1:{api_port}");
    wait_for("the HTTPS API", Duration::from_secs(20), || {
        https_get(&client, &format!("{api}/healthz"), None)
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()));
    // Plain HTTP to the HTTPS port gets nowhere; HTTPS still needs a token.
    let plain = support::http(
        &format!("127.0.0.1:{api_port}"),
        "GET",
        "/healthz",
        None,
        None,
    );
    assert!(
        plain.map(|(c, _)| c != 200).unwrap_or(true),
        "plain HTTP answered on the HTTPS port"
    );
    let (code, _) = https_get(&client, &format!("{api}/api/v1/switches"), None).unwrap();
    assert_eq!(code, 401);
    // A client that does not trust the CA refuses the API's certificate.
    let untrusting = HttpClient::new(Duration::from_secs(5));
    assert!(https_get(&untrusting, &format!("{api}/healthz"), None).is_err());

    // Switches: two with the switch certificate over ssl:, one over tcp:.
    ovs.ovs()
        .run(
            "ovs-vsctl",
            &[
                "set-ssl",
                &dir.join("sc-privkey.pem").display().to_string(),
                &dir.join("sc-cert.pem").display().to_string(),
                &dir.join("pki/controllerca/cacert.pem")
                    .display()
                    .to_string(),
            ],
        )
        .unwrap();
    let o = ovs.ovs().clone();
    let b1 = OvsBridge::new_in(&o, "shtl-b1", 0x7101).unwrap();
    let b2 = OvsBridge::new_in(&o, "shtl-b2", 0x7102).unwrap();
    let b3 = OvsBridge::new_in(&o, "shtl-b3", 0x7103).unwrap();
    ovs.cable(&b1, ("shtl-c1", 1), &b2, ("shtl-c2", 1)).unwrap();
    let h1 = NsHost::new(
        "shtl-h1",
        &b1,
        "shtl-p1",
        10,
        "02:00:00:00:78:01",
        "10.78.0.1",
        24,
    )
    .unwrap();
    let h2 = NsHost::new(
        "shtl-h2",
        &b2,
        "shtl-p2",
        10,
        "02:00:00:00:78:02",
        "10.78.0.2",
        24,
    )
    .unwrap();
    let ssl = format!("ssl:{}:{of_port}", ovs.controller_ip());
    b1.set_controller(&ssl).unwrap();
    b2.set_controller(&ssl).unwrap();
    b3.set_controller(&format!("tcp:{}:{of_port}", ovs.controller_ip()))
        .unwrap();
    let dpids = |c: &HttpClient| -> Option<Vec<String>> {
        let (_, v) = https_get(c, &format!("{api}/api/v1/switches"), Some(READER_TOKEN)).ok()?;
        let mut d: Vec<String> = v
            .as_array()?
            .iter()
            .filter_map(|s| s["dpid"].as_str().map(str::to_string))
            .collect();
        d.sort();
        Some(d)
    };
    let links = wait_for(
        "two TLS switches and their cable",
        Duration::from_secs(30),
        || {
            let d = dpids(&client)?;
            let (_, l) =
                https_get(&client, &format!("{api}/api/v1/links"), Some(READER_TOKEN)).ok()?;
            (d.len() == 2 && l.as_array()?.len() == 2).then_some(l)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()));
    assert_eq!(links.as_array().map(Vec::len), Some(2));
    // Edge ports are confirmed after port_confirm_s without LLDP; then
    // the flows set up over TLS carry the pings.
    wait_for(
        "ping over flows set up through TLS",
        Duration::from_secs(15),
        || h1.ping(&h2.ip, 2).then_some(()),
    )
    .unwrap();
    let flows = b1.ofctl("dump-flows", &[]).unwrap();
    assert!(
        flows.contains("cookie=0x5348"),
        "no Shoal flows on b1: {flows}"
    );
    // The plain-TCP switch never gets in, however long it tries.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        dpids(&client).unwrap(),
        vec![
            "0000000000007101".to_string(),
            "0000000000007102".to_string()
        ]
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("TLS handshake failed"), "{text}");

    // hostd: registers over HTTPS, serves HTTPS.
    let hd_port = free_port().unwrap();
    let hd_api = format!("127.0.0.1:{hd_port}");
    let hcfg = format!(
        "host_id = \"tlh1\"\ncontroller = \"{api}\"\nlisten = \"{hd_api}\"\n{}interval_s = 1\nrun_dir = \"{}\"\nhttp_timeout_s = 3\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nca_file = \"{}\"\n",
        creds::hostd_auth(dir, "tlh1"),
        dir.join("hostd-run").display(),
        cert.display(),
        key.display(),
        ca.display()
    );
    let _hd = Hostd::start_tls(None, &dir.join("tlh1"), &hcfg, &hd_api, &client).expect("hostd");
    let host = wait_for(
        "hostd registered over HTTPS",
        Duration::from_secs(20),
        || {
            let (_, v) =
                https_get(&client, &format!("{api}/api/v1/hosts"), Some(READER_TOKEN)).ok()?;
            v.as_array()?.iter().find(|h| h["id"] == "tlh1").cloned()
        },
    )
    .unwrap();
    assert_eq!(host["api_url"], format!("https://{hd_api}"), "{host}");
    let hurl = format!("https://{hd_api}/api/v1/vms");
    let (code, _) = https_get(&client, &hurl, Some(CONTROLLER_TOKEN)).unwrap();
    assert_eq!(code, 200);
    let (code, _) = https_get(&client, &hurl, None).unwrap();
    assert_eq!(code, 401);
    let plain = support::http(&hd_api, "GET", "/healthz", None, None);
    assert!(
        plain.map(|(c, _)| c != 200).unwrap_or(true),
        "plain HTTP answered on hostd's HTTPS port"
    );
    drop((h1, h2, b1, b2, b3));
}
