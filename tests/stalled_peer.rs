//! No peer can stall the controller: a scripted OpenFlow peer completes the
//! bring-up as a switch with many ports, then stops reading its socket while
//! it keeps writing broadcast PACKET_INs (which the controller floods back to
//! it) and the controller keeps owing it LLDP probes out of every port. So
//! the controller owes it far more than its queues and socket buffers hold.
//!
//! Meanwhile a real topology (a private Open vSwitch instance, two bridges,
//! four hosts) must keep setting up flows for host pairs that never talked
//! before, and the REST API must keep answering within a short time. The
//! stalled peer must be disconnected with the log line
//! `switch … not reading: disconnected`.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ofp::{Hello, Message, MultipartReply, OfpMessage};
use support::{e2e_lock, free_port, get_json, is_root, wait_for, NsHost, OvsBridge, PrivateOvs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Ports of the scripted switch.
const N_PORTS: u32 = 800;
/// Its datapath id.
const PEER_DPID: u64 = 0x5757;
/// Longest acceptable API answer while the peer is stalled.
const API_DEADLINE: Duration = Duration::from_secs(2);

/// What the peer thread reports.
#[derive(Default)]
struct PeerState {
    /// The bring-up is done and the peer answered requests for a while.
    ready: AtomicBool,
    /// The peer stopped reading.
    stalled: AtomicBool,
    /// PACKET_INs written after the stall.
    written: AtomicU64,
    /// Writes that could not complete within 100 ms (the controller did not
    /// read either).
    blocked_writes: AtomicU64,
    /// The controller closed or reset the connection.
    closed: AtomicBool,
    /// Tells the peer to stop.
    stop: AtomicBool,
}

async fn send(s: &mut TcpStream, xid: u32, body: Message) -> std::io::Result<()> {
    let bytes = OfpMessage::new(xid, body)
        .to_vec()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    s.write_all(&bytes).await
}

/// Reads one message (None on EOF, error, or 5 s of silence).
async fn read_msg(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<OfpMessage> {
    loop {
        if let Ok(Some(n)) = ofp::check_frame(buf) {
            let raw: Vec<u8> = buf.drain(..n).collect();
            return OfpMessage::decode(&raw).ok();
        }
        let mut chunk = [0u8; 65536];
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

/// Answers what a switch must answer; true once a FLOW_MOD came (the
/// controller's base pipeline: the bring-up is complete).
async fn answer(s: &mut TcpStream, m: OfpMessage) -> std::io::Result<bool> {
    answer_as(s, m, PEER_DPID, N_PORTS, 0x57).await
}

/// [`answer`] for a switch `dpid` with ports 1..=`n_ports` (MACs tagged
/// `tag`).
async fn answer_as<W: AsyncWriteExt + Unpin>(
    s: &mut W,
    m: OfpMessage,
    dpid: u64,
    n_ports: u32,
    tag: u8,
) -> std::io::Result<bool> {
    let reply = |xid: u32, body: Message| {
        OfpMessage::new(xid, body)
            .to_vec()
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    let bytes = match m.body {
        Message::FeaturesRequest => reply(
            m.xid,
            Message::FeaturesReply(ofp::SwitchFeatures {
                datapath_id: dpid,
                n_buffers: 0,
                n_tables: 254,
                auxiliary_id: 0,
                capabilities: 0,
            }),
        )?,
        Message::RoleRequest(r) => reply(m.xid, Message::RoleReply(r))?,
        Message::MultipartRequest(req) => {
            let Some(body) = support::ofpeer::multipart_reply(
                &req.body,
                || {
                    (1..=n_ports)
                        .map(|n| support::ofpeer::port(n, tag))
                        .collect()
                },
                "scripted switch",
            ) else {
                return Ok(false);
            };
            reply(
                m.xid,
                Message::MultipartReply(MultipartReply { flags: 0, body }),
            )?
        }
        Message::BarrierRequest => reply(m.xid, Message::BarrierReply)?,
        Message::EchoRequest(d) => reply(m.xid, Message::EchoReply(d))?,
        Message::FlowMod(_) => return Ok(true),
        _ => return Ok(false),
    };
    s.write_all(&bytes).await?;
    Ok(false)
}

/// A broadcast frame (local experimental ethertype, so no host answers it)
/// entering at `in_port`, from a sender that stays at that port.
fn broadcast_packet_in(in_port: u32) -> Vec<u8> {
    broadcast_packet_in_from(0x57, in_port, 0)
}

/// A broadcast frame entering at `in_port` of the switch whose MACs are
/// tagged `tag`, from a sender that stays at that port, carrying `seq`
/// (so that its PACKET_OUT can be told apart).
fn broadcast_packet_in_from(tag: u8, in_port: u32, seq: u32) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, tag, tag, 0, (in_port >> 8) as u8, in_port as u8]);
    frame.extend_from_slice(&[0x88, 0xb5]);
    frame.extend_from_slice(&seq.to_be_bytes());
    frame.resize(64, 0xab);
    let pin = ofp::PacketIn {
        buffer_id: ofp::NO_BUFFER,
        total_len: frame.len() as u16,
        reason: ofp::PacketInReason::NoMatch,
        table_id: 0,
        cookie: 0,
        match_: ofp::Match::new().in_port(in_port),
        data: frame,
    };
    OfpMessage::new(0, Message::PacketIn(pin))
        .to_vec()
        .expect("PACKET_IN encodes")
}

/// The stalling switch: handshake, answer everything for `answer_for`
/// (edge ports get confirmed), then never read again and write PACKET_INs
/// until told to stop or the connection breaks.
async fn stalling_peer(addr: std::net::SocketAddr, answer_for: Duration, st: Arc<PeerState>) {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    // A small receive buffer: the controller's messages pile up at its end.
    let _ = sock.set_recv_buffer_size(4096);
    let mut s = sock.connect(addr).await.expect("connect to the controller");
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    send(&mut s, 1, Message::Hello(Hello::of13()))
        .await
        .expect("HELLO");
    let mut brought_up: Option<Instant> = None;
    loop {
        let Some(m) = read_msg(&mut s, &mut buf).await else {
            panic!("controller closed during the peer's bring-up");
        };
        if answer(&mut s, m).await.expect("answer") && brought_up.is_none() {
            brought_up = Some(Instant::now());
            st.ready.store(true, Ordering::SeqCst);
        }
        if brought_up.is_some_and(|t| t.elapsed() >= answer_for) {
            break;
        }
    }
    // Stop reading; keep writing.
    st.stalled.store(true, Ordering::SeqCst);
    let mut i = 0u32;
    while !st.stop.load(Ordering::SeqCst) {
        let mut burst = Vec::new();
        for _ in 0..5 {
            burst.extend(broadcast_packet_in(i % N_PORTS + 1));
            i = i.wrapping_add(1);
        }
        match tokio::time::timeout(Duration::from_millis(100), s.write_all(&burst)).await {
            Ok(Ok(())) => {
                st.written.fetch_add(5, Ordering::SeqCst);
            }
            Ok(Err(_)) => {
                st.closed.store(true, Ordering::SeqCst);
                break;
            }
            Err(_) => {
                st.blocked_writes.fetch_add(1, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// GETs `path`; Err when it fails or takes longer than [`API_DEADLINE`].
fn api_quick(api: &str, path: &str) -> Result<serde_json::Value, String> {
    let t = Instant::now();
    let r = get_json(api, path).map_err(|e| format!("GET {path}: {e}"))?;
    let took = t.elapsed();
    if took > API_DEADLINE {
        return Err(format!("GET {path} took {took:?}"));
    }
    Ok(r)
}

fn switch_count(api: &str) -> Option<usize> {
    Some(get_json(api, "/api/v1/switches").ok()?.as_array()?.len())
}

/// Writes `dir/controller.toml` for these tests (with the credentials of
/// `support::creds`): OpenFlow on `of_listen`, the API on `api`, fast
/// ECHO and LLDP timers, ports confirmed after `port_confirm_s`; `extra`
/// is appended (more sections).
fn write_config(
    dir: &std::path::Path,
    of_listen: &str,
    api: &str,
    port_confirm_s: f64,
    extra: &str,
) -> std::path::PathBuf {
    let auth = support::creds::controller_auth(dir, &[]).unwrap();
    let cfg = dir.join("controller.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
of_listen = "{of_listen}"
api_listen = "{api}"
db = ":memory:"
{auth}
[openflow]
echo_interval_s = 1.0
request_timeout_s = 2.0
[topology]
lldp_interval_s = 0.2
link_timeout_s = 3.0
port_confirm_s = {port_confirm_s:?}
[monitor]
interval_s = 2.0
{extra}"#
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn a_peer_that_stops_reading_cannot_stall_the_controller() {
    assert!(
        is_root(),
        "end-to-end tests need root (run the README's test command)"
    );
    let _lock = e2e_lock().unwrap();
    for tool in ["ovs-vswitchd", "ethtool", "ping"] {
        assert!(
            Command::new("which")
                .arg(tool)
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false),
            "{tool} is missing"
        );
    }

    // Two bridges, one cable, two hosts on each.
    let ovs = PrivateOvs::start("shst", 17).expect("private OVS");
    let o = ovs.ovs().clone();
    let b1 = OvsBridge::new_in(&o, "shst-b1", 0x31).unwrap();
    let b2 = OvsBridge::new_in(&o, "shst-b2", 0x32).unwrap();
    ovs.cable(&b1, ("shst-12", 10), &b2, ("shst-21", 10))
        .unwrap();
    let mk = |name: &str, br: &OvsBridge, p: &str, ofport: u16, i: u8| {
        NsHost::new(
            name,
            br,
            p,
            ofport,
            &format!("02:00:00:00:78:0{i}"),
            &format!("10.78.0.{i}"),
            24,
        )
        .unwrap()
    };
    let h1 = mk("shst-h1", &b1, "shst-p1", 1, 1);
    let h2 = mk("shst-h2", &b1, "shst-p2", 2, 2);
    let h3 = mk("shst-h3", &b2, "shst-p3", 1, 3);
    let h4 = mk("shst-h4", &b2, "shst-p4", 2, 4);

    // The controller (the real binary), with the default queue sizes.
    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let dir = std::env::temp_dir().join("shoal-e2e-stalled-peer");
    let _ = std::fs::create_dir_all(&dir);
    let ip = ovs.controller_ip();
    let cfg = write_config(
        &dir,
        &format!("{ip}:{of_port}"),
        &api,
        1.0,
        "[forwarding]\npair_idle_timeout_s = 60\ndest_idle_timeout_s = 60\n",
    );
    let log_path = dir.join("controller.log");
    let _ctl = support::world::start_controller(&dir, &cfg, "controller.log", &api).unwrap();
    let target = format!("tcp:{ip}:{of_port}");
    b1.set_controller(&target).unwrap();
    b2.set_controller(&target).unwrap();
    wait_for("2 switches and their link", Duration::from_secs(30), || {
        let n = switch_count(&api)?;
        let links = get_json(&api, "/api/v1/links").ok()?.as_array()?.len();
        (n == 2 && links == 2).then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(h1.ping(&h3.ip, 3), "h1 cannot ping h3 before the stall");

    // The stalling peer.
    let st = Arc::new(PeerState::default());
    let peer = {
        let st = st.clone();
        let addr: std::net::SocketAddr = format!("{ip}:{of_port}").parse().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(stalling_peer(addr, Duration::from_secs(2), st));
        })
    };
    wait_for("the peer's bring-up", Duration::from_secs(20), || {
        (st.ready.load(Ordering::SeqCst) && switch_count(&api) == Some(3)).then_some(())
    })
    .unwrap();
    wait_for("the peer to stop reading", Duration::from_secs(10), || {
        st.stalled.load(Ordering::SeqCst).then_some(())
    })
    .unwrap();
    let stalled_at = Instant::now();

    // The API is asked every 100 ms from now on.
    let api_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let probe_stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (api, fails, stop) = (api.clone(), api_failures.clone(), probe_stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                for path in ["/healthz", "/api/v1/switches"] {
                    if let Err(e) = api_quick(&api, path) {
                        if let Ok(mut f) = fails.lock() {
                            f.push(format!("{:?} after the stall: {e}", stalled_at.elapsed()));
                        }
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            n
        })
    };

    // New host pairs need the forwarding core: each first packet of a
    // pair is a PACKET_IN it must answer with flows.
    let mut failures: Vec<String> = Vec::new();
    for (at_s, a, b) in [
        (4, &h2, &h4),
        (8, &h4, &h1),
        (12, &h2, &h3),
        (16, &h1, &h2),
        (20, &h3, &h4),
    ] {
        let at = Duration::from_secs(at_s);
        if let Some(rest) = at.checked_sub(stalled_at.elapsed()) {
            std::thread::sleep(rest);
        }
        if !a.ping(&b.ip, 3) {
            failures.push(format!(
                "{} cannot ping {} (a new pair) {:?} after the stall",
                a.ip,
                b.ip,
                stalled_at.elapsed()
            ));
        }
    }
    if !h1.ping(&h3.ip, 3) {
        failures.push("h1 cannot ping h3 (an existing pair) during the stall".into());
    }

    // The stalled peer is disconnected, with the log line.
    let logged = wait_for(
        "the 'not reading: disconnected' log line",
        Duration::from_secs(20),
        || {
            let log = std::fs::read_to_string(&log_path).ok()?;
            log.lines()
                .find(|l| {
                    l.contains(&format!(
                        "switch {PEER_DPID:016x} not reading: disconnected"
                    ))
                })
                .map(str::to_string)
        },
    );
    match &logged {
        Ok(line) => eprintln!("logged: {line}"),
        Err(e) => failures.push(e.to_string()),
    }
    let gone = wait_for(
        "the peer to leave /api/v1/switches",
        Duration::from_secs(10),
        || (switch_count(&api) == Some(2)).then_some(()),
    );
    if let Err(e) = gone {
        failures.push(e.to_string());
    }
    // The operator sees it counted.
    match get_json(&api, "/api/v1/limits") {
        Ok(v) if v["not_reading_disconnects"].as_u64().unwrap_or(0) >= 1 => {}
        Ok(v) => failures.push(format!(
            "/api/v1/limits does not count the disconnect: {}",
            v["not_reading_disconnects"]
        )),
        Err(e) => failures.push(format!("GET /api/v1/limits: {e}")),
    }
    st.stop.store(true, Ordering::SeqCst);
    let _ = peer.join();
    probe_stop.store(true, Ordering::SeqCst);
    let probes = prober.join().unwrap_or(0);
    let api_fails = api_failures.lock().map(|f| f.clone()).unwrap_or_default();
    eprintln!(
        "peer: {} PACKET_INs written after the stall, {} writes blocked, closed by the controller: {}; {probes} API probe rounds",
        st.written.load(Ordering::SeqCst),
        st.blocked_writes.load(Ordering::SeqCst),
        st.closed.load(Ordering::SeqCst),
    );
    failures.extend(api_fails);

    // And the fabric still works after the peer has gone.
    if !h3.ping(&h2.ip, 3) {
        failures.push("h3 cannot ping h2 after the peer was disconnected".into());
    }
    if !failures.is_empty() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "{} failure(s):\n{}\ncontroller log (last lines, newest first):\n{}",
            failures.len(),
            failures.join("\n"),
            tail.join("\n")
        );
    }
}

/// Ports of the flooding switch of the fairness test.
const FLOOD_PORTS: u32 = 200;
/// Its datapath id (MACs tagged 0x58).
const FLOOD_DPID: u64 = 0x5758;
/// Ports of the quiet switch.
const QUIET_PORTS: u32 = 4;
/// Its datapath id (MACs tagged 0x59).
const QUIET_DPID: u64 = 0x5759;
/// Frames the quiet switch sends during the flood.
const QUIET_FRAMES: u32 = 50;

/// What a scripted switch of the fairness test saw and did.
#[derive(Default)]
struct Seen {
    /// The controller installed its base pipeline.
    ready: AtomicBool,
    /// Sequence numbers of its own frames that came back in PACKET_OUTs.
    answered: Mutex<std::collections::BTreeSet<u32>>,
    /// LLDP probes the controller sent it.
    lldp_probes: AtomicU64,
    /// The connection ended.
    closed: AtomicBool,
}

/// Whether `frame` is an LLDP frame (untagged or behind one VLAN tag).
fn is_lldp(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x88, 0xcc]) => true,
        Some([0x81, 0x00]) => frame.get(16..18) == Some(&[0x88, 0xcc][..]),
        _ => false,
    }
}

/// Reads everything the controller sends a scripted switch, answers its
/// requests through `wr`, and records into `seen` (frames of `tag` that
/// come back, LLDP probes), until the connection ends.
async fn keep_answering(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    wr: Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>,
    (dpid, n_ports, tag): (u64, u32, u8),
    seen: Arc<Seen>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        while let Ok(Some(n)) = ofp::check_frame(&buf) {
            let raw: Vec<u8> = buf.drain(..n).collect();
            // A PACKET_OUT (type 13) is only looked into for its frame,
            // which follows its actions (cheaply: the flooding switch gets
            // one for each frame the controller handles).
            if raw.get(1) == Some(&13) {
                let actions_len = raw
                    .get(16..18)
                    .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
                let data = raw.get(24 + actions_len..).unwrap_or_default();
                if is_lldp(data) {
                    seen.lldp_probes.fetch_add(1, Ordering::SeqCst);
                } else if data.get(6..8) == Some(&[0x02, tag][..]) {
                    if let Some(b) = data.get(14..18) {
                        let seq = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        if let Ok(mut a) = seen.answered.lock() {
                            a.insert(seq);
                        }
                    }
                }
                continue;
            }
            let Ok(m) = OfpMessage::decode(&raw) else {
                continue;
            };
            let mut w = wr.lock().await;
            match answer_as(&mut *w, m, dpid, n_ports, tag).await {
                Ok(true) => seen.ready.store(true, Ordering::SeqCst),
                Ok(false) => {}
                Err(_) => {
                    seen.closed.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                seen.closed.store(true, Ordering::SeqCst);
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Connects a scripted switch that answers the controller for as long as
/// the connection lasts; returns its writing half.
async fn scripted_switch(
    addr: std::net::SocketAddr,
    who: (u64, u32, u8),
    seen: Arc<Seen>,
) -> Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>> {
    let s = TcpStream::connect(addr)
        .await
        .expect("connect to the controller");
    let _ = s.set_nodelay(true);
    let (rd, mut wr) = s.into_split();
    let hello = OfpMessage::new(1, Message::Hello(Hello::of13()))
        .to_vec()
        .expect("HELLO encodes");
    wr.write_all(&hello).await.expect("HELLO");
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    tokio::spawn(keep_answering(rd, wr.clone(), who, seen));
    wr
}

/// One switch floods the controller with PACKET_INs, far more than it can
/// handle, while reading everything it is sent (so it is never
/// disconnected). Another switch's frames must still all be handled, and
/// the controller must keep probing its ports with LLDP: the flood may
/// only cost the flooding switch its own frames.
///
/// Seen failing before the events of each connection were queued apart
/// and served in turn: the flood filled the one queue every switch shared
/// (the quiet switch's frames were dropped as "saturated"), and the core
/// took queued events before its LLDP timer, so no probe went out while
/// the flood lasted (links of real bridges timed out and flapped, as
/// seen in `a_peer_that_stops_reading_cannot_stall_the_controller` on a
/// loaded machine).
#[test]
fn a_flooding_switch_cannot_starve_another() {
    let _lock = e2e_lock().unwrap();
    let of_port = free_port().unwrap();
    let api_port = free_port().unwrap();
    let api = format!("127.0.0.1:{api_port}");
    let dir = std::env::temp_dir().join("shoal-e2e-flooding-peer");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let cfg = write_config(&dir, &format!("127.0.0.1:{of_port}"), &api, 0.5, "");
    let _ctl = support::world::start_controller(&dir, &cfg, "controller.log", &api).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{of_port}").parse().unwrap();

    // Each switch has its own runtime (threads), so that the flood's
    // tasks cannot keep the quiet switch from reading and answering.
    let runtime = |name: &str, threads: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime")
    };
    // The flooding switch writes on one thread and reads what it is sent
    // on the other (it must keep up, or it is disconnected as not reading).
    let rt = runtime("flooding-switch", 2);
    let quiet_rt = runtime("quiet-switch", 1);
    let flood_seen = Arc::new(Seen::default());
    let quiet_seen = Arc::new(Seen::default());
    let flood_wr = rt.block_on(scripted_switch(
        addr,
        (FLOOD_DPID, FLOOD_PORTS, 0x58),
        flood_seen.clone(),
    ));
    let quiet_wr = quiet_rt.block_on(scripted_switch(
        addr,
        (QUIET_DPID, QUIET_PORTS, 0x59),
        quiet_seen.clone(),
    ));
    wait_for("both switches brought up", Duration::from_secs(20), || {
        (flood_seen.ready.load(Ordering::SeqCst)
            && quiet_seen.ready.load(Ordering::SeqCst)
            && switch_count(&api) == Some(2))
        .then_some(())
    })
    .unwrap();
    let send_quiet = |seq: u32| {
        let pin = broadcast_packet_in_from(0x59, 1, seq);
        quiet_rt.block_on(async {
            let mut w = quiet_wr.lock().await;
            w.write_all(&pin).await.expect("quiet switch writes");
        });
    };
    // The quiet switch's ports are confirmed edge ports once a broadcast
    // of its own comes back flooded (out of its other ports).
    let mut warm = 1_000_000u32;
    wait_for(
        "the quiet switch's broadcast flooded back",
        Duration::from_secs(20),
        || {
            warm += 1;
            send_quiet(warm);
            std::thread::sleep(Duration::from_millis(200));
            (!quiet_seen.answered.lock().ok()?.is_empty()).then_some(())
        },
    )
    .unwrap();
    // The flooding switch's ports are confirmed by now too (same age).
    std::thread::sleep(Duration::from_millis(500));

    // The flood: bursts of broadcasts from every port, as fast as the
    // controller reads them.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, written, wr) = (stop.clone(), written.clone(), flood_wr.clone());
        rt.spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let mut burst = Vec::with_capacity(64 * 100);
                for _ in 0..64 {
                    burst.extend(broadcast_packet_in_from(0x58, i % FLOOD_PORTS + 1, i));
                    i = i.wrapping_add(1);
                }
                if wr.lock().await.write_all(&burst).await.is_err() {
                    break;
                }
                written.fetch_add(64, Ordering::SeqCst);
            }
        })
    };
    let drops_at = |api: &str| {
        get_json(api, "/api/v1/limits")
            .ok()
            .and_then(|v| v["packet_in_drops"].as_u64())
    };
    let drops_before = drops_at(&api).unwrap_or(0);
    // The flood saturates the controller: it drops PACKET_INs (of the
    // flooding switch).
    wait_for(
        "the flood to saturate the controller",
        Duration::from_secs(20),
        || (drops_at(&api)? > drops_before + 10_000).then_some(()),
    )
    .unwrap();
    let flood_from = Instant::now();
    let probes_before = quiet_seen.lldp_probes.load(Ordering::SeqCst);
    if let Ok(mut a) = quiet_seen.answered.lock() {
        a.clear();
    }
    for seq in 0..QUIET_FRAMES {
        send_quiet(seq);
        std::thread::sleep(Duration::from_millis(40));
    }
    let all = wait_for(
        "every frame of the quiet switch handled",
        Duration::from_secs(5),
        || {
            let a = quiet_seen.answered.lock().ok()?;
            (a.len() as u32 >= QUIET_FRAMES).then_some(())
        },
    );
    let window = flood_from.elapsed();
    let probes = quiet_seen.lldp_probes.load(Ordering::SeqCst) - probes_before;
    let answered = quiet_seen.answered.lock().map(|a| a.len()).unwrap_or(0);
    let drops = drops_at(&api).unwrap_or(0) - drops_before;
    stop.store(true, Ordering::SeqCst);
    let _ = rt.block_on(flooder);
    eprintln!(
        "flood: {} PACKET_INs written, {drops} dropped by the controller; quiet switch: {answered} of {QUIET_FRAMES} frames handled, {probes} LLDP probes in {window:?}",
        written.load(Ordering::SeqCst)
    );
    let mut failures = Vec::new();
    if all.is_err() {
        failures.push(format!(
            "only {answered} of the quiet switch's {QUIET_FRAMES} frames were handled during the flood"
        ));
    }
    // Probes every 0.2 s to each of its 4 ports: 20 a second. A third of
    // that is far from the none a starved timer sends.
    let expected = (window.as_secs_f64() / 0.2) as u64 * u64::from(QUIET_PORTS);
    if probes < expected / 3 {
        failures.push(format!(
            "{probes} LLDP probes reached the quiet switch in {window:?} of flood (expected about {expected})"
        ));
    }
    if flood_seen.closed.load(Ordering::SeqCst) || quiet_seen.closed.load(Ordering::SeqCst) {
        failures.push("the controller closed a switch's connection during the flood".into());
    }
    if !failures.is_empty() {
        let log = std::fs::read_to_string(dir.join("controller.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "{}\ncontroller log (last lines, newest first):\n{}",
            failures.join("\n"),
            tail.join("\n")
        );
    }
}
