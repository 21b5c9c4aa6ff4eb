//! Captures real Open vSwitch replies for the codec's tests.
//!
//! Blocking, std::net only. Creates bridge `sofcap0` (userspace datapath,
//! OpenFlow13 only, fixed datapath id, two internal ports, a few flows, a
//! meter and a linux-htb QoS with two queues on port 1), listens on a free
//! local port, points the bridge at it, and plays the controller:
//! HELLO/FEATURES, every multipart request, BARRIER, ECHO, two bad requests,
//! a flow that idles out (FLOW_REMOVED), packet-outs that come back as
//! PACKET_IN, and a port add/delete (PORT_STATUS). Every message received is
//! written as one hex line to `<dir>/<kind>.hex` (lines starting with `#`
//! are comments; the huge TABLE_FEATURES reply is trimmed) (default
//! `controller/ofp/tests/data/ovs31`). Everything it created is removed at
//! the end, also on failure.
//!
//! Run as root on a machine with OVS started (`ovs-scripts/start-ovs.sh`):
//! `cargo run -p ofp --example capture [-- OUT_DIR]`

use ofp::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const BR: &str = "sofcap0";
const P1: &str = "sofcap0-p1";
const P2: &str = "sofcap0-p2";
const P3: &str = "sofcap0-p3";
/// Datapath id the bridge is given (checked by tests/ovs_captures.rs).
const DPID: &str = "00005f0fca000001";

type Res<T> = Result<T, String>;

fn run(prog: &str, args: &[&str]) -> Res<String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn vsctl(args: &[&str]) -> Res<String> {
    let mut a = vec!["--timeout=10"];
    a.extend_from_slice(args);
    run("ovs-vsctl", &a)
}

fn ofctl(args: &[&str]) -> Res<String> {
    let mut a = vec!["-O", "OpenFlow13"];
    a.extend_from_slice(args);
    run("ovs-ofctl", &a)
}

/// Removes the bridge and the QoS/Queue rows this tool created.
struct Cleanup {
    rows: Vec<(String, String)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = vsctl(&["--if-exists", "del-br", BR]);
        for (table, uuid) in &self.rows {
            let _ = vsctl(&["--if-exists", "destroy", table, uuid]);
        }
    }
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    xid: u32,
    /// kind -> hex lines
    log: BTreeMap<String, Vec<String>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// File name for a received message.
fn kind(raw: &[u8]) -> String {
    match OfpMessage::decode(raw) {
        Ok(m) => match &m.body {
            Message::MultipartReply(r) => format!("mp_{}", mp_name(r.body.mp_type())),
            Message::Error(_) => "error".into(),
            other => other
                .name()
                .trim_start_matches("OFPT_")
                .to_ascii_lowercase(),
        },
        Err(_) => format!("undecodable_type{}", raw.get(1).copied().unwrap_or(0)),
    }
}

fn mp_name(t: u16) -> &'static str {
    match t {
        multipart_type::DESC => "desc",
        multipart_type::FLOW => "flow",
        multipart_type::AGGREGATE => "aggregate",
        multipart_type::TABLE => "table",
        multipart_type::PORT_STATS => "port_stats",
        multipart_type::QUEUE => "queue",
        multipart_type::GROUP => "group",
        multipart_type::GROUP_DESC => "group_desc",
        multipart_type::GROUP_FEATURES => "group_features",
        multipart_type::METER => "meter",
        multipart_type::METER_CONFIG => "meter_config",
        multipart_type::METER_FEATURES => "meter_features",
        multipart_type::TABLE_FEATURES => "table_features",
        multipart_type::PORT_DESC => "port_desc",
        _ => "other",
    }
}

impl Conn {
    fn send(&mut self, body: Message) -> Res<u32> {
        self.xid += 1;
        let bytes = OfpMessage::new(self.xid, body)
            .to_vec()
            .map_err(|e| e.to_string())?;
        self.send_raw(&bytes)?;
        Ok(self.xid)
    }

    fn send_raw(&mut self, bytes: &[u8]) -> Res<()> {
        self.s.write_all(bytes).map_err(|e| format!("send: {e}"))
    }

    /// Next whole message, or None at the deadline.
    fn recv(&mut self, deadline: Instant) -> Res<Option<Vec<u8>>> {
        loop {
            if let Some(n) = check_frame(&self.buf).map_err(|e| e.to_string())? {
                let msg: Vec<u8> = self.buf.drain(..n).collect();
                let k = kind(&msg);
                self.log.entry(k).or_default().push(hex(&msg));
                // Keep the connection alive.
                if msg.get(1) == Some(&msg_type::ECHO_REQUEST) {
                    if let Ok(OfpMessage {
                        xid,
                        body: Message::EchoRequest(d),
                    }) = OfpMessage::decode(&msg)
                    {
                        let r = OfpMessage::new(xid, Message::EchoReply(d))
                            .to_vec()
                            .map_err(|e| e.to_string())?;
                        self.send_raw(&r)?;
                    }
                }
                return Ok(Some(msg));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.s
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return Err("switch closed the connection".into()),
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
    }

    /// Reads until a message satisfies `pred` (returned) or the timeout.
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&OfpMessage) -> bool,
    ) -> Res<OfpMessage> {
        let deadline = Instant::now() + timeout;
        while let Some(raw) = self.recv(deadline)? {
            match OfpMessage::decode(&raw) {
                Ok(m) if pred(&m) => return Ok(m),
                Ok(m) => eprintln!(
                    "  (while waiting for {what}: {} xid={:#x})",
                    m.body.name(),
                    m.xid
                ),
                Err(e) => eprintln!("cannot decode {}: {e}", hex(&raw)),
            }
        }
        Err(format!("timed out waiting for {what}"))
    }

    /// Sends a request and waits for the reply with the same xid (all
    /// parts of a multipart reply).
    fn request(&mut self, body: Message) -> Res<Vec<OfpMessage>> {
        let name = body.name();
        let xid = self.send(body)?;
        let mut parts = Vec::new();
        loop {
            let m = self.wait(name, Duration::from_secs(5), |m| m.xid == xid)?;
            let more = matches!(&m.body, Message::MultipartReply(r) if r.more());
            parts.push(m);
            if !more {
                return Ok(parts);
            }
        }
    }
}

/// A UDP frame from 02:00:00:00:00:<src_last> to 10.0.0.2 (or 192.168.0.2
/// when `off_subnet`, so that only the table-miss entry matches it).
fn frame(src_last: u8, off_subnet: bool) -> Vec<u8> {
    let mut f = vec![
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, src_last, 0x08, 0x00,
    ];
    f.extend_from_slice(&[
        0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x13, 0x88, 0x13, 0x89,
        0, 8, 0, 0,
    ]);
    if off_subnet {
        if let Some(b) = f.get_mut(30..32) {
            b.copy_from_slice(&[192, 168]);
        }
    }
    f
}

fn main() {
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ovs31"));
    if let Err(e) = capture(&out_dir) {
        eprintln!("capture failed: {e}");
        std::process::exit(1);
    }
}

fn capture(out_dir: &std::path::Path) -> Res<()> {
    let mut cleanup = Cleanup { rows: Vec::new() };
    let _ = vsctl(&["--if-exists", "del-br", BR]);
    vsctl(&[
        "add-br",
        BR,
        "--",
        "set",
        "bridge",
        BR,
        "datapath_type=netdev",
        "protocols=OpenFlow13",
        "fail_mode=secure",
        &format!("other-config:datapath-id={DPID}"),
        "other-config:dp-desc=shoal capture bridge",
    ])?;
    for (p, n) in [(P1, "1"), (P2, "2")] {
        vsctl(&[
            "add-port",
            BR,
            p,
            "--",
            "set",
            "interface",
            p,
            "type=internal",
            &format!("ofport_request={n}"),
        ])?;
    }
    // The management socket appears shortly after the bridge.
    let t0 = Instant::now();
    while ofctl(&["show", BR]).is_err() {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!("{BR} did not come up"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    vsctl(&["set-controller", BR, &format!("tcp:127.0.0.1:{port}")])?;
    listener.set_nonblocking(false).map_err(|e| e.to_string())?;
    let (s, _) = accept_with_timeout(&listener, Duration::from_secs(15))?;
    let mut c = Conn {
        s,
        buf: Vec::new(),
        xid: 0x100,
        log: BTreeMap::new(),
    };

    c.wait("HELLO", Duration::from_secs(5), |m| {
        matches!(m.body, Message::Hello(_))
    })?;
    c.send(Message::Hello(Hello::of13()))?;
    c.request(Message::FeaturesRequest)?;
    // OVS flushes flows and meters when a bridge gets its first controller,
    // so the test state is installed only now.
    // Flows: two L2 forwarding entries, one with set_queue, and a table-miss
    // entry sending to the controller.
    for f in [
        "cookie=0x11,priority=100,in_port=1,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02,actions=output:2",
        "cookie=0x12,priority=100,in_port=2,dl_src=02:00:00:00:00:02,dl_dst=02:00:00:00:00:01,actions=set_queue:1,output:1",
        "cookie=0x13,priority=50,ip,nw_dst=10.0.0.0/24,actions=meter:1,output:2",
        "cookie=0x99,priority=0,actions=CONTROLLER:65535",
    ] {
        if f.contains("meter:1") {
            ofctl(&["add-meter", BR, "meter=1,kbps,burst,stats,bands=type=drop,rate=30000,burst_size=3000"])?;
        }
        ofctl(&["add-flow", BR, f])?;
    }
    // linux-htb QoS with two queues on port 1 (queue stats).
    match vsctl(&[
        "set",
        "port",
        P1,
        "qos=@q",
        "--",
        "--id=@q",
        "create",
        "qos",
        "type=linux-htb",
        "other-config:max-rate=100000000",
        "queues:1=@q1",
        "queues:2=@q2",
        "--",
        "--id=@q1",
        "create",
        "queue",
        "other-config:max-rate=20000000",
        "--",
        "--id=@q2",
        "create",
        "queue",
        "other-config:max-rate=50000000",
    ]) {
        Ok(out) => {
            let uuids: Vec<&str> = out
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            for (i, u) in uuids.iter().enumerate() {
                cleanup.rows.push((
                    if i == 0 { "qos" } else { "queue" }.to_string(),
                    u.to_string(),
                ));
            }
        }
        Err(e) => eprintln!("QoS not available: {e}"),
    }

    c.send(Message::SetConfig(SwitchConfig {
        flags: 0,
        miss_send_len: 0xffff,
    }))?;
    c.request(Message::GetConfigRequest)?;
    c.request(Message::RoleRequest(RoleMsg {
        role: ControllerRole::Master,
        generation_id: 1,
    }))?;

    use MultipartRequestBody as R;
    for body in [
        R::Desc,
        R::Flow(FlowStatsRequest::default()),
        R::Aggregate(FlowStatsRequest::default()),
        R::Table,
        R::PortStats {
            port_no: port_no::ANY,
        },
        R::Queue {
            port_no: port_no::ANY,
            queue_id: QUEUE_ALL,
        },
        R::Group {
            group_id: GROUP_ALL,
        },
        R::GroupDesc,
        R::Meter {
            meter_id: METER_ALL,
        },
        R::MeterConfig {
            meter_id: METER_ALL,
        },
        R::MeterFeatures,
        R::PortDesc,
        R::TableFeatures(Vec::new()),
    ] {
        c.request(Message::MultipartRequest(MultipartRequest::new(body)))?;
    }
    c.request(Message::BarrierRequest)?;
    c.request(Message::EchoRequest(b"shoal-echo".to_vec()))?;

    // Errors: an unknown message type, and adding meter 1 again.
    c.request(Message::MeterMod(MeterMod {
        command: MeterModCommand::Add,
        flags: meter_flags::KBPS,
        meter_id: 1,
        bands: vec![MeterBand::Drop {
            rate: 1000,
            burst_size: 0,
        }],
    }))?;
    c.xid += 1;
    let bad = [OFP_VERSION, 99, 0, 8, 0, 0, 0, 0x42];
    c.send_raw(&bad)?;
    c.wait("ERROR (bad type)", Duration::from_secs(5), |m| {
        matches!(m.body, Message::Error(_))
    })?;

    // FLOW_REMOVED: idle timeout 1 s, and an explicit delete.
    for (cookie, idle) in [(0xf10e_u64, 1u16), (0xde1e_u64, 0u16)] {
        c.send(Message::FlowMod(FlowMod {
            cookie,
            priority: 10,
            idle_timeout: idle,
            flags: flow_mod_flags::SEND_FLOW_REM,
            match_: Match::new()
                .in_port(2)
                .eth_type(0x0800)
                .ip_proto(17)
                .udp_dst(5353),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(1)])],
            ..FlowMod::default()
        }))?;
        if idle == 0 {
            c.request(Message::BarrierRequest)?;
            c.send(Message::FlowMod(FlowMod {
                command: FlowModCommand::Delete,
                table_id: TABLE_ALL,
                cookie,
                cookie_mask: u64::MAX,
                ..FlowMod::default()
            }))?;
        }
        c.wait(
            "FLOW_REMOVED",
            Duration::from_secs(10),
            |m| matches!(&m.body, Message::FlowRemoved(r) if r.cookie == cookie),
        )?;
    }

    // PACKET_IN: packet-out to CONTROLLER (reason ACTION) and through the
    // table-miss entry (reason NO_MATCH).
    for (port, last) in [(port_no::CONTROLLER, 1u8), (port_no::TABLE, 3u8)] {
        c.send(Message::PacketOut(PacketOut {
            buffer_id: NO_BUFFER,
            in_port: if port == port_no::TABLE {
                port_no::LOCAL
            } else {
                port_no::CONTROLLER
            },
            actions: vec![Action::output(port)],
            data: frame(last, port == port_no::TABLE),
        }))?;
        c.wait(
            "PACKET_IN",
            Duration::from_secs(5),
            |m| matches!(&m.body, Message::PacketIn(p) if p.data.get(11) == Some(&last)),
        )?;
    }

    // PORT_STATUS: add and delete a port.
    vsctl(&[
        "add-port",
        BR,
        P3,
        "--",
        "set",
        "interface",
        P3,
        "type=internal",
        "ofport_request=3",
    ])?;
    c.wait(
        "PORT_STATUS add",
        Duration::from_secs(5),
        |m| matches!(&m.body, Message::PortStatus(p) if p.reason == PortReason::Add),
    )?;
    vsctl(&["del-port", BR, P3])?;
    c.wait(
        "PORT_STATUS delete",
        Duration::from_secs(5),
        |m| matches!(&m.body, Message::PortStatus(p) if p.reason == PortReason::Delete),
    )?;
    // Pick up stragglers (e.g. a PORT_STATUS modify) briefly.
    let end = Instant::now() + Duration::from_millis(500);
    while c.recv(end)?.is_some() {}

    std::fs::create_dir_all(out_dir).map_err(|e| e.to_string())?;
    for (k, lines) in &c.log {
        let path = out_dir.join(format!("{k}.hex"));
        let mut text = String::new();
        let mut kept: Vec<&String> = lines.iter().collect();
        // TABLE_FEATURES is ~1.2 MB over ~20 parts: keep the first two
        // (MORE set) and the final part so the committed file stays small.
        if k == "mp_table_features" && lines.len() > 3 {
            text.push_str(&format!(
                "# parts 1, 2 and {n} (the last) of the {n}-part OFPMP_TABLE_FEATURES reply\n",
                n = lines.len()
            ));
            kept = vec![&lines[0], &lines[1], &lines[lines.len() - 1]];
        }
        for l in &kept {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{:>3} message(s) -> {}", kept.len(), path.display());
    }
    drop(c);
    drop(cleanup);
    Ok(())
}

fn accept_with_timeout(l: &TcpListener, t: Duration) -> Res<(TcpStream, std::net::SocketAddr)> {
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let end = Instant::now() + t;
    loop {
        match l.accept() {
            Ok((s, a)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok((s, a));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > end {
                    return Err("switch did not connect".into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
