//! The controller's wire side against a scripted peer on a real TCP socket:
//! version refusal, handshake, echo, malformed input, dead peers, the API's
//! error responses and graceful shutdown. (Real Open vSwitch is exercised by
//! the end-to-end tests in the workspace's `tests/`.)

mod support;

use std::time::Duration;

use ofp::{
    ErrorKind, Hello, Message, MultipartReply, MultipartReplyBody, OfpMessage, PortDesc,
    SwitchFeatures,
};
use shoal_controller::app::{self, Running};
use shoal_controller::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start() -> Running {
    // A directory of its own per controller: the tests of this file run
    // in parallel. The token files are read once, at validation.
    let dir = support::TempDir::new("shoal-wire").unwrap();
    let auth = support::creds::controller_auth(dir.path(), &[]).unwrap();
    let cfg = Config::from_toml(&format!(
        r#"
of_listen = "127.0.0.1:0"
api_listen = "127.0.0.1:0"
db = ":memory:"
{auth}
[openflow]
echo_interval_s = 0.3
request_timeout_s = 2.0
[topology]
lldp_interval_s = 0.5
[monitor]
interval_s = 1.0
"#
    ))
    .unwrap();
    app::start(cfg.validate().unwrap()).await.unwrap()
}

/// Reads one whole OpenFlow message (raw bytes) or None on EOF/timeout.
async fn read_msg(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Ok(Some(n)) = ofp::check_frame(buf) {
            let m = buf[..n].to_vec();
            buf.drain(..n);
            return Some(m);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn read_decoded(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<OfpMessage> {
    let raw = read_msg(s, buf).await?;
    Some(OfpMessage::decode(&raw).expect("controller sent an undecodable message"))
}

async fn send(s: &mut TcpStream, xid: u32, body: Message) {
    s.write_all(&OfpMessage::new(xid, body).to_vec().unwrap())
        .await
        .unwrap();
}

fn port(n: u32) -> PortDesc {
    support::ofpeer::port(n, 0)
}

/// Plays a 1.3 switch through the handshake: answers FEATURES, ROLE,
/// PORT_DESC, DESC and BARRIERs; returns once the controller has installed
/// its base pipeline (a FLOW_MOD arrived).
async fn handshake(s: &mut TcpStream, buf: &mut Vec<u8>, dpid: u64) {
    send(s, 1, Message::Hello(Hello::of13())).await;
    let mut saw_flow_mod = false;
    while !saw_flow_mod {
        let m = read_decoded(s, buf)
            .await
            .expect("controller closed during handshake");
        match m.body {
            Message::Hello(h) => assert!(h.supports(4)),
            Message::FeaturesRequest => {
                send(
                    s,
                    m.xid,
                    Message::FeaturesReply(SwitchFeatures {
                        datapath_id: dpid,
                        n_buffers: 0,
                        n_tables: 254,
                        auxiliary_id: 0,
                        capabilities: 0,
                    }),
                )
                .await
            }
            Message::RoleRequest(r) => send(s, m.xid, Message::RoleReply(r)).await,
            Message::MultipartRequest(req) => {
                let Some(body) = support::ofpeer::multipart_reply(
                    &req.body,
                    || vec![port(1), port(2)],
                    "scripted peer",
                ) else {
                    continue;
                };
                send(
                    s,
                    m.xid,
                    Message::MultipartReply(MultipartReply { flags: 0, body }),
                )
                .await
            }
            Message::BarrierRequest => send(s, m.xid, Message::BarrierReply).await,
            Message::EchoRequest(d) => send(s, m.xid, Message::EchoReply(d)).await,
            Message::FlowMod(_) => saw_flow_mod = true,
            _ => {}
        }
    }
}

async fn api(r: &Running, path: &str) -> (u16, serde_json::Value) {
    let addr = r.api_addr.to_string();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let (code, body) = support::http(
            &addr,
            "GET",
            &path,
            Some(support::creds::READER_TOKEN),
            None,
        )
        .expect("API reachable");
        (code, serde_json::from_str(&body).expect("JSON body"))
    })
    .await
    .unwrap()
}

async fn switches(r: &Running) -> usize {
    api(r, "/api/v1/switches").await.1.as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_versions_are_refused_with_hello_failed() {
    let r = start().await;
    let mut s = TcpStream::connect(r.of_addr).await.unwrap();
    // An OpenFlow 1.0 HELLO (no version bitmap).
    s.write_all(&[0x01, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x07])
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut got_error = false;
    while let Some(raw) = read_msg(&mut s, &mut buf).await {
        if let Ok(OfpMessage {
            body: Message::Error(e),
            xid,
        }) = OfpMessage::decode(&raw)
        {
            assert_eq!(e.kind.type_code(), (0, 0), "HELLO_FAILED/INCOMPATIBLE");
            assert_eq!(xid, 7);
            got_error = true;
        }
    }
    assert!(got_error, "no HELLO_FAILED error before the close");
    assert_eq!(switches(&r).await, 0);
    r.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_echo_and_malformed_input() {
    let r = start().await;
    let mut s = TcpStream::connect(r.of_addr).await.unwrap();
    let mut buf = Vec::new();
    handshake(&mut s, &mut buf, 0xabc).await;
    assert_eq!(switches(&r).await, 1);
    let (code, sw) = api(&r, "/api/v1/switches").await;
    assert_eq!(code, 200);
    assert_eq!(sw[0]["dpid"], "0000000000000abc");

    // Our ECHO_REQUEST is answered with the same payload and xid.
    send(&mut s, 4242, Message::EchoRequest(b"ping".to_vec())).await;
    // A message whose body does not decode (a FLOW_REMOVED cut short, with
    // a consistent header): the controller answers with an ERROR and keeps
    // the connection.
    s.write_all(&[0x04, 11, 0x00, 0x0c, 0, 0, 0x11, 0x11, 1, 2, 3, 4])
        .await
        .unwrap();
    let (mut echoed, mut errored) = (false, false);
    for _ in 0..200 {
        let Some(m) = read_decoded(&mut s, &mut buf).await else {
            break;
        };
        match m.body {
            Message::EchoReply(d) if m.xid == 4242 => {
                assert_eq!(d, b"ping");
                echoed = true
            }
            Message::Error(e) if m.xid == 0x1111 => {
                assert!(matches!(e.kind, ErrorKind::BadRequest(_)), "{e:?}");
                errored = true
            }
            Message::EchoRequest(d) => send(&mut s, m.xid, Message::EchoReply(d)).await,
            Message::BarrierRequest => send(&mut s, m.xid, Message::BarrierReply).await,
            Message::MultipartRequest(_) => {
                send(
                    &mut s,
                    m.xid,
                    Message::MultipartReply(MultipartReply {
                        flags: 0,
                        body: MultipartReplyBody::Flow(vec![]),
                    }),
                )
                .await
            }
            _ => {}
        }
        if echoed && errored {
            break;
        }
    }
    assert!(echoed && errored, "echoed={echoed} errored={errored}");
    assert_eq!(switches(&r).await, 1, "connection survived the bad message");

    // A frame whose length field is impossible (< 8) ends this connection
    // only: the controller stays up and accepts the next switch.
    s.write_all(&[0x04, 0, 0x00, 0x04, 0, 0, 0, 0])
        .await
        .unwrap();
    let closed = async { while read_msg(&mut s, &mut buf).await.is_some() {} };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("connection closed after a framing error");
    for _ in 0..50 {
        if switches(&r).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(switches(&r).await, 0);
    let mut s2 = TcpStream::connect(r.of_addr).await.unwrap();
    let mut buf2 = Vec::new();
    handshake(&mut s2, &mut buf2, 0xabd).await;
    assert_eq!(switches(&r).await, 1);
    r.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_declared_dead() {
    let r = start().await;
    let mut s = TcpStream::connect(r.of_addr).await.unwrap();
    let mut buf = Vec::new();
    handshake(&mut s, &mut buf, 0xdead).await;
    assert_eq!(switches(&r).await, 1);
    // Stop answering anything (echo interval 0.3 s: dead after ~0.9 s).
    let closed = async { while read_msg(&mut s, &mut buf).await.is_some() {} };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("silent peer disconnected");
    for _ in 0..50 {
        if switches(&r).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(switches(&r).await, 0);
    r.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_json_with_status() {
    let r = start().await;
    let addr = r.api_addr.to_string();
    let rr = tokio::task::spawn_blocking(move || {
        let r = |p: &str| {
            support::http(&addr, "GET", p, Some(support::creds::READER_TOKEN), None).unwrap()
        };
        (
            r("/api/v1/switches/zz/ports"),
            r("/api/v1/switches/0000000000000001/ports"),
            r("/api/v1/nope"),
            r("/api/v1/traffic-matrix?class=bogus"),
            r("/api/v1/traffic-matrix?min_bytes_per_s=-1"),
            r("/api/v1/traffic-matrix?class=nic"),
            r("/api/v1/openapi.json"),
        )
    })
    .await
    .unwrap();
    let json = |b: &str| serde_json::from_str::<serde_json::Value>(b).unwrap();
    assert_eq!(rr.0 .0, 400);
    assert!(json(&rr.0 .1)["error"].as_str().unwrap().contains("zz"));
    assert_eq!(rr.1 .0, 404);
    assert!(json(&rr.1 .1)["error"].is_string());
    assert_eq!(rr.2 .0, 404);
    assert!(json(&rr.2 .1)["error"].is_string());
    assert_eq!(rr.3 .0, 400);
    assert!(json(&rr.3 .1)["error"].is_string());
    assert_eq!(rr.4 .0, 400);
    assert_eq!(rr.5 .0, 200);
    assert_eq!(json(&rr.5 .1)["pairs"], serde_json::json!([]));
    assert_eq!(rr.6 .0, 200);
    assert!(json(&rr.6 .1)["paths"].is_object());
    r.shutdown(Duration::from_secs(2)).await;
}

/// SIGTERM stops the real binary cleanly (exit status 0) within seconds,
/// with a switch connected.
#[test]
fn sigterm_shuts_down_gracefully() {
    use std::process::{Command, Stdio};
    let of_port = support::free_port().unwrap();
    let api = format!("127.0.0.1:{}", support::free_port().unwrap());
    let mut child = support::ChildGuard::spawn(
        Command::new(support::cargo_bin("shoal-controller"))
            .args([
                "--db",
                ":memory:",
                "--of-listen",
                &format!("127.0.0.1:{of_port}"),
                "--api-listen",
                &api,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    support::wait_for("the API", Duration::from_secs(20), || {
        support::http(&api, "GET", "/healthz", None, None).ok()
    })
    .unwrap();
    let _switch = std::net::TcpStream::connect(("127.0.0.1", of_port)).unwrap();
    let status = child.terminate(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "exit status {status}");
}
