//! One emulated switch as a pure state machine: controller messages and
//! frames in, messages to the controller and frames out of ports out. No
//! I/O; the clock is passed in.
//!
//! On the wire it behaves like Open vSwitch 2.x speaking OpenFlow 1.3:
//! unbuffered packet-ins (`n_buffers` 0, `OFP_NO_BUFFER`), 254 tables, a
//! table-miss (priority 0, empty match) `output:CONTROLLER` gives reason
//! `NO_MATCH`, any other flow's `output:CONTROLLER` gives `ACTION`, a miss
//! without a table-miss entry drops the packet, unsupported requests get
//! `OFPET_BAD_REQUEST`/`OFPBRC_BAD_TYPE` (group mods included: groups are
//! not emulated).

use std::collections::BTreeMap;
use std::time::Instant;

use ofp::{
    capabilities, port_no, port_state, Action, AggregateStats, BadRequestCode, BandStats,
    ControllerRole, DescStats, ErrorKind, ErrorMsg, FlowMod, Hello, HelloFailedCode, Instruction,
    Message, MeterConfig, MeterMod, MeterModCommand, MeterModFailedCode, MeterStats,
    MultipartReply, MultipartReplyBody, MultipartRequestBody, OfpMessage, PacketIn, PacketInReason,
    PacketOut, PortDesc, PortStats, QueueStats, RoleMsg, SwitchConfig, SwitchFeatures, NO_BUFFER,
    OFP_VERSION, QUEUE_ALL,
};

use crate::frames;
use crate::table::{FlowTable, MeterSpec, N_TABLES, TRAFFIC_PACKET_BYTES};
use crate::topo::{port_mac, SwitchSpec};

/// Bytes of an offending request copied into an ERROR (as OVS: at least 64).
const ERROR_DATA_LEN: usize = 64;
/// Flow stats entries per multipart reply part.
pub const FLOW_STATS_PER_PART: usize = 200;

/// What handling a message or frame asks the I/O layer to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a message to the controller.
    Send(OfpMessage),
    /// Send messages already encoded (a FLOW stats reply, all its parts).
    SendRaw(Vec<u8>),
    /// Send a frame out of a port.
    Emit {
        /// Port number.
        port: u32,
        /// The frame.
        frame: Vec<u8>,
    },
}

/// Appends the messages of `effects` to `out` as they go on the wire
/// (frames out of ports are left out); what the I/O layer writes for them.
pub fn write_messages(effects: &[Effect], out: &mut Vec<u8>) {
    for e in effects {
        match e {
            Effect::Send(m) => {
                if let Err(err) = m.encode(out) {
                    tracing::warn!(error = %err, msg = m.body.name(), "cannot encode");
                }
            }
            Effect::SendRaw(b) => out.extend_from_slice(b),
            Effect::Emit { .. } => {}
        }
    }
}

/// The FLOW stats reply to request `xid` carrying `stats` as messages:
/// parts of at most [`FLOW_STATS_PER_PART`] entries, `OFPMPF_REPLY_MORE`
/// on all but the last, one empty part when there is nothing. (The switch
/// writes the same bytes directly, see [`FlowTable::flow_stats_reply`];
/// this is the codec's path, taken when that one cannot be.)
pub fn flow_stats_messages(xid: u32, stats: &[ofp::FlowStats]) -> Vec<OfpMessage> {
    let part = |flags: u16, body: Vec<ofp::FlowStats>| {
        OfpMessage::new(
            xid,
            Message::MultipartReply(MultipartReply {
                flags,
                body: MultipartReplyBody::Flow(body),
            }),
        )
    };
    if stats.is_empty() {
        return vec![part(0, Vec::new())];
    }
    let n = stats.len().div_ceil(FLOW_STATS_PER_PART);
    stats
        .chunks(FLOW_STATS_PER_PART)
        .enumerate()
        .map(|(i, p)| part(u16::from(i + 1 < n), p.to_vec()))
        .collect()
}

/// Counters of one switch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchCounters {
    /// PACKET_INs sent by the pipeline (not load).
    pub pipeline_packet_ins: u64,
    /// FLOW_MODs received.
    pub flow_mods: u64,
    /// PACKET_OUTs received.
    pub packet_outs: u64,
    /// FLOW_REMOVEDs sent.
    pub flow_removed: u64,
    /// ERRORs sent.
    pub errors_sent: u64,
    /// ERRORs received from the controller.
    pub errors_received: u64,
    /// Frames dropped by the pipeline (no matching entry).
    pub dropped: u64,
    /// FLOW stats requests answered.
    pub flow_stats_requests: u64,
    /// Flow entries sent in FLOW stats replies.
    pub flow_entries_served: u64,
}

/// Per-port counters (for PORT_STATS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PortCount {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
}

/// One emulated switch.
#[derive(Debug)]
pub struct Switch {
    /// Datapath id.
    pub dpid: u64,
    /// Its flow tables.
    pub table: FlowTable,
    /// Meters installed (METER_MOD).
    pub meters: BTreeMap<u32, MeterMod>,
    /// When each meter was added (its stats' duration).
    meter_added: BTreeMap<u32, Instant>,
    /// Current SET_CONFIG.
    pub config: SwitchConfig,
    /// Current role.
    pub role: ControllerRole,
    /// Current SET_ASYNC body (packet-in, port-status, flow-removed masks
    /// for master/equal and slave; not applied to what the switch sends).
    pub async_config: Vec<u8>,
    /// FEATURES_REPLY sent.
    pub features_sent: bool,
    /// PORT_DESC reply sent (the controller's handshake is complete then).
    pub port_desc_sent: bool,
    /// Counters.
    pub counters: SwitchCounters,
    ports: Vec<PortDesc>,
    port_counts: BTreeMap<u32, PortCount>,
    started: Instant,
    next_xid: u32,
}

/// Open vSwitch's default asynchronous configuration (OpenFlow 1.3
/// `ofp_async_config` body): packet-in NO_MATCH|ACTION, every port-status
/// reason and every flow-removed reason for master/equal; port-status only
/// for slave.
const OVS_ASYNC_DEFAULT: [[u8; 8]; 3] = [
    [0, 0, 0, 3, 0, 0, 0, 0],
    [0, 0, 0, 7, 0, 0, 0, 7],
    [0, 0, 0, 0xf, 0, 0, 0, 0],
];

fn error(xid: u32, kind: ErrorKind, raw: &[u8]) -> Effect {
    let data = raw
        .get(..raw.len().min(ERROR_DATA_LEN))
        .unwrap_or_default()
        .to_vec();
    Effect::Send(OfpMessage::new(
        xid,
        Message::Error(ErrorMsg::new(kind, data)),
    ))
}

impl Switch {
    /// A switch with the ports of `spec` (1 Gb/s copper, up).
    pub fn new(index: usize, spec: &SwitchSpec, now: Instant) -> Switch {
        let ports = spec
            .ports
            .iter()
            .map(|&p| PortDesc {
                port_no: p,
                hw_addr: port_mac(index, p),
                name: format!("s{}-eth{p}", spec.dpid),
                config: 0,
                state: port_state::LIVE,
                curr: 0x820, // 1GB_FD | COPPER
                advertised: 0,
                supported: 0,
                peer: 0,
                curr_speed: 1_000_000,
                max_speed: 1_000_000,
            })
            .collect();
        Switch {
            dpid: spec.dpid,
            table: FlowTable::new(),
            meters: BTreeMap::new(),
            meter_added: BTreeMap::new(),
            config: SwitchConfig {
                flags: 0,
                miss_send_len: 128,
            },
            role: ControllerRole::Equal,
            async_config: OVS_ASYNC_DEFAULT.concat(),
            features_sent: false,
            port_desc_sent: false,
            counters: SwitchCounters::default(),
            ports,
            port_counts: BTreeMap::new(),
            started: now,
            next_xid: 1,
        }
    }

    /// The HELLO the switch opens with.
    pub fn hello() -> OfpMessage {
        OfpMessage::new(0, Message::Hello(Hello::of13()))
    }

    /// A fresh xid for switch-initiated messages.
    pub fn xid(&mut self) -> u32 {
        self.next_xid = self.next_xid.wrapping_add(1);
        self.next_xid
    }

    /// Links a port up or down (a cable plugged or cut); the PORT_STATUS
    /// (MODIFY) Open vSwitch sends then, if the state changed. A down port
    /// neither receives nor sends frames.
    pub fn set_port_up(&mut self, port: u32, up: bool) -> Option<OfpMessage> {
        let p = self.ports.iter_mut().find(|p| p.port_no == port)?;
        let state = if up {
            port_state::LIVE
        } else {
            port_state::LINK_DOWN
        };
        if p.state == state {
            return None;
        }
        p.state = state;
        let desc = p.clone();
        let xid = self.xid();
        Some(OfpMessage::new(
            xid,
            Message::PortStatus(ofp::PortStatus {
                reason: ofp::PortReason::Modify,
                desc,
            }),
        ))
    }

    /// Whether a port exists and is up.
    pub fn port_up(&self, port: u32) -> bool {
        self.ports.iter().any(|p| p.port_no == port && p.is_up())
    }

    /// Forgets the controller connection's state (a new connection starts
    /// with a new handshake); flows and meters stay, as in Open vSwitch's
    /// `fail_mode=secure`.
    pub fn reset_connection(&mut self) {
        self.features_sent = false;
        self.port_desc_sent = false;
        self.role = ControllerRole::Equal;
        self.async_config = OVS_ASYNC_DEFAULT.concat();
        self.config = SwitchConfig {
            flags: 0,
            miss_send_len: 128,
        };
    }

    /// Port numbers.
    pub fn port_numbers(&self) -> Vec<u32> {
        self.ports.iter().map(|p| p.port_no).collect()
    }

    /// Handles one message from the controller (`raw`: its bytes, for
    /// ERROR data).
    pub fn handle(&mut self, msg: OfpMessage, raw: &[u8], now: Instant) -> Vec<Effect> {
        let xid = msg.xid;
        let reply = |m: Message| vec![Effect::Send(OfpMessage::new(xid, m))];
        match msg.body {
            Message::Hello(h) => {
                if h.supports(OFP_VERSION) {
                    Vec::new()
                } else {
                    self.counters.errors_sent += 1;
                    vec![error(
                        xid,
                        ErrorKind::HelloFailed(HelloFailedCode::Incompatible),
                        raw,
                    )]
                }
            }
            Message::EchoRequest(d) => reply(Message::EchoReply(d)),
            Message::EchoReply(_) => Vec::new(),
            Message::Error(_) => {
                self.counters.errors_received += 1;
                Vec::new()
            }
            Message::FeaturesRequest => {
                self.features_sent = true;
                reply(Message::FeaturesReply(SwitchFeatures {
                    datapath_id: self.dpid,
                    n_buffers: 0,
                    n_tables: N_TABLES,
                    auxiliary_id: 0,
                    capabilities: capabilities::FLOW_STATS
                        | capabilities::TABLE_STATS
                        | capabilities::PORT_STATS
                        | capabilities::GROUP_STATS
                        | capabilities::QUEUE_STATS,
                }))
            }
            Message::GetConfigRequest => reply(Message::GetConfigReply(self.config)),
            Message::SetConfig(c) => {
                self.config = c;
                Vec::new()
            }
            Message::BarrierRequest => reply(Message::BarrierReply),
            Message::RoleRequest(r) => {
                if r.role != ControllerRole::NoChange {
                    self.role = r.role;
                }
                reply(Message::RoleReply(RoleMsg {
                    role: self.role,
                    generation_id: r.generation_id,
                }))
            }
            Message::FlowMod(fm) => self.flow_mod(xid, &fm, raw, now),
            Message::PacketOut(po) => self.packet_out(xid, po, raw, now),
            Message::MeterMod(mm) => match self.apply_meter_mod(mm, now) {
                Some(c) => {
                    self.counters.errors_sent += 1;
                    vec![error(xid, ErrorKind::MeterModFailed(c), raw)]
                }
                None => Vec::new(),
            },
            Message::MultipartRequest(req) => self.multipart(xid, req.body, raw, now),
            Message::Other { msg_type, body } if msg_type == ofp::msg_type::SET_ASYNC => {
                if body.len() == 24 {
                    self.async_config = body;
                    Vec::new()
                } else {
                    self.counters.errors_sent += 1;
                    vec![error(
                        xid,
                        ErrorKind::BadRequest(BadRequestCode::BadLen),
                        raw,
                    )]
                }
            }
            Message::Other { msg_type, body }
                if msg_type == ofp::msg_type::GET_ASYNC_REQUEST && body.is_empty() =>
            {
                reply(Message::Other {
                    msg_type: ofp::msg_type::GET_ASYNC_REPLY,
                    body: self.async_config.clone(),
                })
            }
            Message::Experimenter(_) => {
                self.counters.errors_sent += 1;
                vec![error(
                    xid,
                    ErrorKind::BadRequest(BadRequestCode::BadExperimenter),
                    raw,
                )]
            }
            _ => {
                self.counters.errors_sent += 1;
                vec![error(
                    xid,
                    ErrorKind::BadRequest(BadRequestCode::BadType),
                    raw,
                )]
            }
        }
    }

    fn flow_mod(&mut self, xid: u32, fm: &FlowMod, raw: &[u8], now: Instant) -> Vec<Effect> {
        self.counters.flow_mods += 1;
        match self.table.apply(fm, now) {
            Ok(removed) => {
                let mut v: Vec<Effect> = removed
                    .into_iter()
                    .map(|r| {
                        self.counters.flow_removed += 1;
                        Effect::Send(OfpMessage::new(0, Message::FlowRemoved(r)))
                    })
                    .collect();
                if fm.buffer_id != NO_BUFFER {
                    // No packet is ever buffered (n_buffers = 0).
                    self.counters.errors_sent += 1;
                    v.push(error(
                        xid,
                        ErrorKind::BadRequest(BadRequestCode::BufferUnknown),
                        raw,
                    ));
                }
                v
            }
            Err(e) => {
                self.counters.errors_sent += 1;
                vec![error(xid, ErrorKind::FlowModFailed(e.code()), raw)]
            }
        }
    }

    fn packet_out(&mut self, xid: u32, po: PacketOut, raw: &[u8], now: Instant) -> Vec<Effect> {
        self.counters.packet_outs += 1;
        if po.buffer_id != NO_BUFFER {
            self.counters.errors_sent += 1;
            return vec![error(
                xid,
                ErrorKind::BadRequest(BadRequestCode::BufferUnknown),
                raw,
            )];
        }
        if frames::load_seq(&po.data).is_some() {
            // Load frames end here: they were made up by the load
            // generator and only count as answers.
            return Vec::new();
        }
        let mut out = Vec::new();
        self.run_actions(&po.actions, po.in_port, &po.data, None, now, &mut out);
        out
    }

    /// Applies a METER_MOD at `now`; the error code when refused. A meter
    /// added (again) counts the configured traffic of the entries using it
    /// from `now`; its bands take the excess of that traffic over their
    /// rates (see [`crate::table::MeterSpec`]).
    pub fn apply_meter_mod(&mut self, mm: MeterMod, now: Instant) -> Option<MeterModFailedCode> {
        match mm.command {
            MeterModCommand::Add if self.meters.contains_key(&mm.meter_id) => {
                Some(MeterModFailedCode::MeterExists)
            }
            MeterModCommand::Modify if !self.meters.contains_key(&mm.meter_id) => {
                Some(MeterModFailedCode::UnknownMeter)
            }
            MeterModCommand::Add => {
                self.table
                    .set_meter(mm.meter_id, Some(MeterSpec::of(&mm)), true, now);
                self.meter_added.insert(mm.meter_id, now);
                self.meters.insert(mm.meter_id, mm);
                None
            }
            MeterModCommand::Modify => {
                self.table
                    .set_meter(mm.meter_id, Some(MeterSpec::of(&mm)), false, now);
                self.meters.insert(mm.meter_id, mm);
                None
            }
            MeterModCommand::Delete => {
                if mm.meter_id == ofp::METER_ALL {
                    self.table.clear_meters(now);
                    self.meters.clear();
                    self.meter_added.clear();
                } else {
                    self.table.set_meter(mm.meter_id, None, true, now);
                    self.meters.remove(&mm.meter_id);
                    self.meter_added.remove(&mm.meter_id);
                }
                None
            }
            MeterModCommand::Other(_) => Some(MeterModFailedCode::BadCommand),
        }
    }

    fn multipart(
        &mut self,
        xid: u32,
        body: MultipartRequestBody,
        raw: &[u8],
        now: Instant,
    ) -> Vec<Effect> {
        let one = |b: MultipartReplyBody| {
            vec![Effect::Send(OfpMessage::new(
                xid,
                Message::MultipartReply(MultipartReply { flags: 0, body: b }),
            ))]
        };
        let up = now.saturating_duration_since(self.started);
        match body {
            MultipartRequestBody::Desc => one(MultipartReplyBody::Desc(DescStats {
                mfr_desc: "Nicira, Inc.".into(),
                hw_desc: "Open vSwitch".into(),
                sw_desc: format!("ofswarm {}", env!("CARGO_PKG_VERSION")),
                serial_num: "None".into(),
                dp_desc: format!("ofswarm dpid {:016x}", self.dpid),
            })),
            MultipartRequestBody::PortDesc => {
                self.port_desc_sent = true;
                one(MultipartReplyBody::PortDesc(self.ports.clone()))
            }
            MultipartRequestBody::Flow(req) => {
                // The entries' records copied, their counters patched.
                let mut bytes = Vec::new();
                let fast =
                    self.table
                        .flow_stats_reply(xid, &req, now, FLOW_STATS_PER_PART, &mut bytes);
                let bad = || {
                    vec![error(
                        xid,
                        ErrorKind::BadRequest(BadRequestCode::BadLen),
                        raw,
                    )]
                };
                let (n, effects) = match fast {
                    Ok(Some(n)) => (n, vec![Effect::SendRaw(bytes)]),
                    // An entry without its record, a part over 64 KiB:
                    // the codec's path.
                    Ok(None) => match self.table.stats(&req, now) {
                        Ok(stats) => (
                            stats.len(),
                            flow_stats_messages(xid, &stats)
                                .into_iter()
                                .map(Effect::Send)
                                .collect(),
                        ),
                        Err(_) => return bad(),
                    },
                    Err(_) => return bad(),
                };
                self.counters.flow_stats_requests += 1;
                self.counters.flow_entries_served += n as u64;
                effects
            }
            MultipartRequestBody::Aggregate(req) => match self.table.stats(&req, now) {
                Ok(stats) => one(MultipartReplyBody::Aggregate(AggregateStats {
                    packet_count: stats.iter().map(|s| s.packet_count).sum(),
                    byte_count: stats.iter().map(|s| s.byte_count).sum(),
                    flow_count: u32::try_from(stats.len()).unwrap_or(u32::MAX),
                })),
                Err(_) => vec![error(
                    xid,
                    ErrorKind::BadRequest(BadRequestCode::BadLen),
                    raw,
                )],
            },
            MultipartRequestBody::PortStats { port_no: want } => {
                // Frames the switch really carried, plus the configured
                // traffic of its flows.
                let traffic = self.table.port_traffic(now);
                let stats = self
                    .ports
                    .iter()
                    .filter(|p| want == port_no::ANY || p.port_no == want)
                    .map(|p| {
                        let c = self
                            .port_counts
                            .get(&p.port_no)
                            .copied()
                            .unwrap_or_default();
                        let t = traffic.get(&p.port_no).copied().unwrap_or_default();
                        PortStats {
                            port_no: p.port_no,
                            rx_packets: c.rx_packets + t.rx_bytes / TRAFFIC_PACKET_BYTES,
                            tx_packets: c.tx_packets + t.tx_bytes / TRAFFIC_PACKET_BYTES,
                            rx_bytes: c.rx_bytes + t.rx_bytes,
                            tx_bytes: c.tx_bytes + t.tx_bytes,
                            rx_dropped: 0,
                            tx_dropped: 0,
                            rx_errors: 0,
                            tx_errors: 0,
                            rx_frame_err: 0,
                            rx_over_err: 0,
                            rx_crc_err: 0,
                            collisions: 0,
                            duration_sec: u32::try_from(up.as_secs()).unwrap_or(u32::MAX),
                            duration_nsec: up.subsec_nanos(),
                        }
                    })
                    .collect();
                one(MultipartReplyBody::PortStats(stats))
            }
            MultipartRequestBody::Queue {
                port_no: want_port,
                queue_id: want_queue,
            } => {
                // The queues of the switch's ports that carried configured
                // traffic (outputs after a set_queue).
                let queues = self.table.queue_traffic(now);
                let any_port = want_port == port_no::ANY || want_port == port_no::ALL;
                let stats = queues
                    .iter()
                    .filter(|((p, q), _)| {
                        (any_port || *p == want_port)
                            && (want_queue == QUEUE_ALL || *q == want_queue)
                            && self.ports.iter().any(|d| d.port_no == *p)
                    })
                    .map(|(&(p, q), &bytes)| QueueStats {
                        port_no: p,
                        queue_id: q,
                        tx_bytes: bytes,
                        tx_packets: bytes / TRAFFIC_PACKET_BYTES,
                        tx_errors: 0,
                        duration_sec: u32::try_from(up.as_secs()).unwrap_or(u32::MAX),
                        duration_nsec: up.subsec_nanos(),
                    })
                    .collect();
                one(MultipartReplyBody::Queue(stats))
            }
            MultipartRequestBody::Meter { meter_id } => {
                // The configured traffic of the entries using each meter
                // since it was added, and what its bands took.
                if self.meters.is_empty() {
                    return one(MultipartReplyBody::Meter(Vec::new()));
                }
                let traffic = self.table.meter_traffic(now);
                let flow_counts = self.table.meter_flow_counts();
                let stats = self
                    .meters
                    .values()
                    .filter(|m| meter_id == ofp::METER_ALL || m.meter_id == meter_id)
                    .map(|m| {
                        let bytes = traffic.meters.get(&m.meter_id).copied().unwrap_or(0);
                        let alive = self
                            .meter_added
                            .get(&m.meter_id)
                            .map_or(up, |t| now.saturating_duration_since(*t));
                        MeterStats {
                            meter_id: m.meter_id,
                            flow_count: u32::try_from(
                                flow_counts.get(&m.meter_id).copied().unwrap_or(0),
                            )
                            .unwrap_or(u32::MAX),
                            packet_in_count: bytes / TRAFFIC_PACKET_BYTES,
                            byte_in_count: bytes,
                            duration_sec: u32::try_from(alive.as_secs()).unwrap_or(u32::MAX),
                            duration_nsec: alive.subsec_nanos(),
                            band_stats: (0..m.bands.len())
                                .map(|i| {
                                    let b = traffic
                                        .bands
                                        .get(&m.meter_id)
                                        .and_then(|v| v.get(i))
                                        .copied()
                                        .unwrap_or(0);
                                    BandStats {
                                        packet_band_count: b / TRAFFIC_PACKET_BYTES,
                                        byte_band_count: b,
                                    }
                                })
                                .collect(),
                        }
                    })
                    .collect();
                one(MultipartReplyBody::Meter(stats))
            }
            MultipartRequestBody::MeterConfig { meter_id } => {
                let cfg = self
                    .meters
                    .values()
                    .filter(|m| meter_id == ofp::METER_ALL || m.meter_id == meter_id)
                    .map(|m| MeterConfig {
                        flags: m.flags,
                        meter_id: m.meter_id,
                        bands: m.bands.clone(),
                    })
                    .collect();
                one(MultipartReplyBody::MeterConfig(cfg))
            }
            _ => {
                self.counters.errors_sent += 1;
                vec![error(
                    xid,
                    ErrorKind::BadRequest(BadRequestCode::BadMultipart),
                    raw,
                )]
            }
        }
    }

    /// A PACKET_IN for `data` received at `in_port`.
    pub fn packet_in(
        &mut self,
        reason: PacketInReason,
        table_id: u8,
        cookie: u64,
        in_port: u32,
        data: &[u8],
        max_len: u16,
    ) -> OfpMessage {
        let keep = if max_len == ofp::CONTROLLER_MAX_LEN_NO_BUFFER {
            data.len()
        } else {
            data.len().min(usize::from(max_len))
        };
        let xid = self.xid();
        OfpMessage::new(
            xid,
            Message::PacketIn(PacketIn {
                buffer_id: NO_BUFFER,
                total_len: u16::try_from(data.len()).unwrap_or(u16::MAX),
                reason,
                table_id,
                cookie,
                match_: ofp::Match::new().in_port(in_port),
                data: data.get(..keep).unwrap_or_default().to_vec(),
            }),
        )
    }

    /// A frame arrives at `in_port` (from a host or a peer switch): runs
    /// the pipeline from table 0.
    pub fn receive_frame(&mut self, in_port: u32, data: &[u8], now: Instant) -> Vec<Effect> {
        if !self.port_up(in_port) {
            self.counters.dropped += 1;
            return Vec::new();
        }
        let c = self.port_counts.entry(in_port).or_default();
        c.rx_packets += 1;
        c.rx_bytes += data.len() as u64;
        let mut out = Vec::new();
        self.pipeline(in_port, data, 0, now, &mut out);
        out
    }

    fn pipeline(
        &mut self,
        in_port: u32,
        data: &[u8],
        first: u8,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        let fields = frames::packet_fields(in_port, data);
        let mut table = first;
        let mut action_set: Vec<Action> = Vec::new();
        loop {
            let Some(e) = self.table.lookup(table, &fields, data.len(), now) else {
                self.counters.dropped += 1;
                break;
            };
            let miss = e.is_table_miss();
            let cookie = e.cookie;
            let instructions = e.instructions.clone();
            let mut goto = None;
            for i in &instructions {
                match i {
                    Instruction::ApplyActions(a) => {
                        let ctx = Some((table, cookie, miss));
                        self.run_actions(a, in_port, data, ctx, now, out);
                    }
                    Instruction::WriteActions(a) => action_set.extend(a.iter().cloned()),
                    Instruction::ClearActions => action_set.clear(),
                    Instruction::GotoTable(t) if *t > table => goto = Some(*t),
                    _ => {}
                }
            }
            match goto {
                Some(t) => table = t,
                None => {
                    let ctx = Some((table, cookie, miss));
                    self.run_actions(&action_set, in_port, data, ctx, now, out);
                    break;
                }
            }
        }
    }

    /// Executes output actions (others are ignored). `ctx`: the table,
    /// cookie and table-miss-ness of the flow that runs them (None for a
    /// PACKET_OUT).
    fn run_actions(
        &mut self,
        actions: &[Action],
        in_port: u32,
        data: &[u8],
        ctx: Option<(u8, u64, bool)>,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        for a in actions {
            let Action::Output { port, max_len } = a else {
                continue;
            };
            match *port {
                port_no::CONTROLLER => {
                    let (table, cookie, miss) = ctx.unwrap_or((0, u64::MAX, false));
                    let reason = if miss {
                        PacketInReason::NoMatch
                    } else {
                        PacketInReason::Action
                    };
                    self.counters.pipeline_packet_ins += 1;
                    let pin = self.packet_in(reason, table, cookie, in_port, data, *max_len);
                    out.push(Effect::Send(pin));
                }
                port_no::TABLE if ctx.is_none() => self.pipeline(in_port, data, 0, now, out),
                port_no::FLOOD | port_no::ALL => {
                    for p in self.port_numbers() {
                        if p != in_port {
                            self.emit(p, data, out);
                        }
                    }
                }
                port_no::IN_PORT => self.emit(in_port, data, out),
                // OpenFlow never sends a frame back out of its input
                // port unless asked with OFPP_IN_PORT.
                p if p <= port_no::MAX && p != in_port => self.emit(p, data, out),
                _ => {}
            }
        }
    }

    fn emit(&mut self, port: u32, data: &[u8], out: &mut Vec<Effect>) {
        if !self.port_up(port) {
            return;
        }
        let c = self.port_counts.entry(port).or_default();
        c.tx_packets += 1;
        c.tx_bytes += data.len() as u64;
        out.push(Effect::Emit {
            port,
            frame: data.to_vec(),
        });
    }

    /// Expires flows; FLOW_REMOVEDs to send.
    pub fn expire(&mut self, now: Instant) -> Vec<Effect> {
        self.table
            .expire(now)
            .into_iter()
            .map(|r| {
                self.counters.flow_removed += 1;
                Effect::Send(OfpMessage::new(0, Message::FlowRemoved(r)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topo::{TopoSpec, Topology};
    use ofp::{FlowModCommand, Match};

    fn sw() -> Switch {
        let t = Topology::build(TopoSpec::Linear(2), 2, 1);
        Switch::new(0, &t.switches[0], Instant::now())
    }

    fn sent(v: &[Effect]) -> Vec<&Message> {
        v.iter()
            .filter_map(|e| match e {
                Effect::Send(m) => Some(&m.body),
                _ => None,
            })
            .collect()
    }

    /// The messages of `v` as the controller reads them: written as on
    /// the wire, then decoded.
    fn on_the_wire(v: &[Effect]) -> Vec<OfpMessage> {
        let mut b = Vec::new();
        write_messages(v, &mut b);
        split(&b)
    }

    /// Decodes consecutive messages.
    fn split(mut b: &[u8]) -> Vec<OfpMessage> {
        let mut out = Vec::new();
        while let Some(len) = ofp::check_frame(b).expect("framing") {
            out.push(OfpMessage::decode(&b[..len]).expect("decodes"));
            b = &b[len..];
        }
        assert!(b.is_empty(), "no trailing bytes");
        out
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, pct: u64) -> bool {
            self.below(100) < pct
        }
    }

    fn some_mac(r: &mut Rng) -> ofp::MacAddr {
        ofp::MacAddr([2, 0, 0, 0, r.below(4) as u8, r.below(8) as u8])
    }

    /// A match of a few fields, some masked, in any order.
    fn some_match(r: &mut Rng) -> ofp::Match {
        use ofp::OxmField as F;
        use std::net::Ipv4Addr;
        let mut fields = Vec::new();
        if r.chance(60) {
            fields.push(F::InPort(1 + r.below(6) as u32));
        }
        if r.chance(60) {
            fields.push(F::EthSrc {
                addr: some_mac(r),
                mask: None,
            });
        }
        if r.chance(50) {
            let mask = r
                .chance(30)
                .then_some(ofp::MacAddr([0xff, 0xff, 0xff, 0, 0, 0]));
            fields.push(F::EthDst {
                addr: some_mac(r),
                mask,
            });
        }
        if r.chance(30) {
            fields.push(F::EthType(0x0800));
            if r.chance(60) {
                let m = Ipv4Addr::from(0xffff_ff00u32 << r.below(8));
                fields.push(F::Ipv4Dst {
                    addr: Ipv4Addr::new(10, 0, r.below(4) as u8, 0),
                    mask: r.chance(50).then_some(m),
                });
            }
            if r.chance(40) {
                fields.push(F::IpProto(6));
                fields.push(F::TcpDst(80 + r.below(3) as u16));
            }
        }
        if r.chance(20) {
            fields.push(F::VlanVid {
                vid: ofp::OFPVID_PRESENT | r.below(100) as u16,
                mask: r.chance(50).then_some(0x1fff),
            });
        }
        if r.chance(10) {
            fields.push(F::Metadata {
                value: r.next(),
                mask: r.chance(50).then_some(0xffff_0000),
            });
        }
        // Wire order varies.
        if r.chance(50) {
            fields.reverse();
        }
        ofp::Match { fields }
    }

    fn some_actions(r: &mut Rng) -> Vec<Action> {
        let mut v = Vec::new();
        for _ in 0..r.below(4) {
            v.push(match r.below(7) {
                0 => Action::SetQueue(1 + r.below(3) as u32),
                1 => Action::Group(r.below(3) as u32),
                2 => Action::SetField(ofp::OxmField::EthDst {
                    addr: some_mac(r),
                    mask: None,
                }),
                3 => Action::PushVlan(0x8100),
                4 => Action::PopVlan,
                5 => Action::Output {
                    port: port_no::CONTROLLER,
                    max_len: 128,
                },
                _ => Action::output(1 + r.below(6) as u32),
            });
        }
        v.push(Action::output(1 + r.below(6) as u32));
        v
    }

    fn some_instructions(r: &mut Rng) -> Vec<Instruction> {
        let mut v = Vec::new();
        if r.chance(20) {
            v.push(Instruction::Meter(1 + r.below(3) as u32));
        }
        if r.chance(70) {
            v.push(Instruction::ApplyActions(some_actions(r)));
        }
        if r.chance(15) {
            v.push(Instruction::ClearActions);
        }
        if r.chance(25) {
            v.push(Instruction::WriteActions(some_actions(r)));
        }
        if r.chance(10) {
            v.push(Instruction::WriteMetadata {
                metadata: r.next(),
                mask: 0xff,
            });
        }
        if r.chance(30) {
            v.push(Instruction::GotoTable(5 + r.below(3) as u8));
        }
        v
    }

    /// A table of varied entries: ADDs (some replacing), MODIFYs, DELETEs,
    /// configured rates and packets matched, over `ms` milliseconds.
    fn varied_table(seed: u64, n: usize, t0: Instant) -> (FlowTable, Instant) {
        use ofp::flow_mod_flags as ff;
        use std::time::Duration;
        let mut r = Rng(seed | 1);
        let mut t = FlowTable::new();
        let mut now = t0;
        let mut added = Vec::new();
        for _ in 0..n {
            now += Duration::from_micros(r.below(20_000));
            let flags = [0, ff::SEND_FLOW_REM, ff::SEND_FLOW_REM | ff::CHECK_OVERLAP]
                [r.below(3) as usize]
                | if r.chance(10) { ff::RESET_COUNTS } else { 0 };
            let fm = FlowMod {
                table_id: r.below(4) as u8,
                priority: [0, 10, 200, 65000][r.below(4) as usize],
                cookie: r.next() >> r.below(64),
                idle_timeout: [0, 0, 10, 300][r.below(4) as usize],
                hard_timeout: [0, 0, 0, 60][r.below(4) as usize],
                flags,
                match_: some_match(&mut r),
                instructions: some_instructions(&mut r),
                ..FlowMod::default()
            };
            if t.apply(&fm, now).is_ok() {
                added.push(fm);
            }
            if !added.is_empty() && r.chance(25) {
                let fm = &added[r.below(added.len() as u64) as usize];
                t.set_rate(
                    fm.table_id,
                    fm.priority,
                    &fm.match_,
                    1000 + r.below(1_000_000),
                    now,
                );
            }
            if !added.is_empty() && r.chance(5) {
                // MODIFY (strict or not) changes instructions.
                let base = &added[r.below(added.len() as u64) as usize];
                let fm = FlowMod {
                    command: if r.chance(50) {
                        FlowModCommand::ModifyStrict
                    } else {
                        FlowModCommand::Modify
                    },
                    instructions: some_instructions(&mut r),
                    ..base.clone()
                };
                t.apply(&fm, now).expect("modify");
            }
            if r.chance(2) {
                let del = FlowMod {
                    command: FlowModCommand::Delete,
                    table_id: ofp::TABLE_ALL,
                    out_port: 1 + r.below(6) as u32,
                    out_group: ofp::GROUP_ANY,
                    ..FlowMod::default()
                };
                t.apply(&del, now).expect("delete");
            }
            if r.chance(20) {
                let pkt = crate::table::normalise(&some_match(&mut r)).expect("fields");
                t.lookup(r.below(4) as u8, &pkt, 60 + r.below(1400) as usize, now);
            }
        }
        (t, now)
    }

    /// Requests with every filter.
    fn requests(seed: u64) -> Vec<ofp::FlowStatsRequest> {
        let mut r = Rng(seed | 1);
        let all = ofp::FlowStatsRequest::default();
        let mut v = vec![
            all.clone(),
            ofp::FlowStatsRequest {
                table_id: 1,
                ..all.clone()
            },
            ofp::FlowStatsRequest {
                table_id: 9,
                ..all.clone()
            },
            ofp::FlowStatsRequest {
                out_port: 2,
                ..all.clone()
            },
            ofp::FlowStatsRequest {
                out_group: 1,
                ..all.clone()
            },
            ofp::FlowStatsRequest {
                cookie: 1 << 40,
                cookie_mask: 0xffff_ff00_0000_0000,
                ..all.clone()
            },
            ofp::FlowStatsRequest {
                cookie: 0,
                cookie_mask: 1,
                ..all.clone()
            },
            ofp::FlowStatsRequest {
                match_: ofp::Match::new().in_port(3),
                ..all.clone()
            },
            ofp::FlowStatsRequest {
                table_id: 0,
                out_port: 4,
                match_: ofp::Match::new().eth_type(0x0800),
                ..all.clone()
            },
        ];
        for _ in 0..4 {
            v.push(ofp::FlowStatsRequest {
                match_: some_match(&mut r),
                ..all.clone()
            });
        }
        v
    }

    #[test]
    fn the_fast_flow_stats_reply_is_the_codecs_byte_for_byte() {
        let t0 = Instant::now();
        let mut checked = (0, 0);
        for (seed, n) in [
            (1, 0),
            (2, 1),
            (3, 30),
            (4, 200),
            (5, 201),
            (6, 700),
            (7, 1500),
        ] {
            let (t, last) = varied_table(seed, n, t0);
            assert!(t.entries().iter().all(|e| e.derived_is_current()));
            let all = t.traffic(last);
            assert_eq!(t.queue_traffic(last), all.queues);
            let m = t.meter_traffic(last);
            assert_eq!((m.meters, m.bands), (all.meters, all.bands));
            for req in requests(seed) {
                for now in [last, last + std::time::Duration::from_millis(1234)] {
                    let xid = seed as u32 * 1000 + 7;
                    let want = t.stats(&req, now).expect("stats");
                    let mut old = Vec::new();
                    for m in flow_stats_messages(xid, &want) {
                        m.encode(&mut old).expect("encodes");
                    }
                    let mut fast = vec![0xaa; 3];
                    let got = t
                        .flow_stats_reply(xid, &req, now, FLOW_STATS_PER_PART, &mut fast)
                        .expect("request ok");
                    assert_eq!(got, Some(want.len()));
                    assert_eq!(&fast[..3], &[0xaa; 3], "appends");
                    assert!(fast[3..] == old[..], "seed {seed}, {req:?}");
                    // Decoded: the entries of FlowTable::stats, in parts
                    // of at most 200 with MORE on all but the last.
                    let parts = split(&fast[3..]);
                    assert_eq!(parts.len(), want.len().div_ceil(FLOW_STATS_PER_PART).max(1));
                    let mut entries = Vec::new();
                    for (i, p) in parts.into_iter().enumerate() {
                        assert_eq!(p.xid, xid);
                        let Message::MultipartReply(MultipartReply {
                            flags,
                            body: MultipartReplyBody::Flow(f),
                        }) = p.body
                        else {
                            panic!("a FLOW reply");
                        };
                        assert_eq!(
                            flags & ofp::multipart_flags::MORE != 0,
                            (i + 1) * FLOW_STATS_PER_PART < want.len()
                        );
                        assert!(f.len() <= FLOW_STATS_PER_PART);
                        entries.extend(f);
                    }
                    assert_eq!(entries, want);
                    checked.0 += 1;
                    checked.1 += want.len();
                }
            }
        }
        assert!(checked.1 > 2000, "{checked:?}");
    }

    #[test]
    fn a_switch_answers_flow_stats_with_the_codecs_bytes() {
        let t = Topology::build(TopoSpec::Linear(2), 2, 1);
        let t0 = Instant::now();
        let mut s = Switch::new(0, &t.switches[0], t0);
        let (table, last) = varied_table(11, 900, t0);
        s.table = table;
        for (k, req) in requests(11).into_iter().enumerate() {
            let want = s.table.stats(&req, last).expect("stats");
            let mut old = Vec::new();
            for m in flow_stats_messages(k as u32, &want) {
                m.encode(&mut old).expect("encodes");
            }
            let body = MultipartRequestBody::Flow(req);
            let msg = OfpMessage::new(
                k as u32,
                Message::MultipartRequest(ofp::MultipartRequest::new(body)),
            );
            let served = s.counters.flow_entries_served;
            let r = s.handle(msg, &[], last);
            assert!(matches!(r.as_slice(), [Effect::SendRaw(_)]));
            let mut got = Vec::new();
            write_messages(&r, &mut got);
            assert!(got == old);
            assert_eq!(s.counters.flow_entries_served - served, want.len() as u64);
        }
    }

    #[test]
    fn a_flow_stats_part_over_64_kib_takes_the_codecs_path() {
        let t = Topology::build(TopoSpec::Linear(2), 2, 1);
        let now = Instant::now();
        let mut s = Switch::new(0, &t.switches[0], now);
        // Two entries of ~40 kB each: one part would be ~80 kB.
        for port in [1, 2] {
            let fm = FlowMod {
                priority: 3,
                match_: ofp::Match::new().in_port(port),
                instructions: vec![Instruction::ApplyActions(
                    (0..2500).map(Action::output).collect(),
                )],
                ..FlowMod::default()
            };
            s.handle(OfpMessage::new(6, Message::FlowMod(fm)), &[], now);
        }
        let req = ofp::FlowStatsRequest::default();
        let mut b = vec![1];
        let fast = s
            .table
            .flow_stats_reply(9, &req, now, FLOW_STATS_PER_PART, &mut b);
        assert_eq!((fast, b), (Ok(None), vec![1]));
        let body = MultipartRequestBody::Flow(req);
        let msg = OfpMessage::new(
            9,
            Message::MultipartRequest(ofp::MultipartRequest::new(body)),
        );
        let r = s.handle(msg, &[], now);
        assert!(matches!(r.as_slice(), [Effect::Send(_)]));
        assert_eq!(s.counters.flow_entries_served, 2);
    }

    #[test]
    fn a_cut_cable_reports_its_port_and_carries_nothing() {
        let mut s = sw();
        let now = Instant::now();
        let out = |s: &mut Switch| {
            let po = PacketOut {
                buffer_id: NO_BUFFER,
                in_port: port_no::CONTROLLER,
                actions: vec![Action::Output {
                    port: 2,
                    max_len: 0,
                }],
                data: frames::gratuitous_arp(
                    ofp::MacAddr([2, 0, 0, 0, 0, 1]),
                    std::net::Ipv4Addr::new(10, 0, 0, 1),
                ),
            };
            s.handle(OfpMessage::new(3, Message::PacketOut(po)), &[], now)
        };
        assert_eq!(out(&mut s).len(), 1);
        let m = s.set_port_up(2, false).expect("a PORT_STATUS");
        assert!(matches!(
            &m.body,
            Message::PortStatus(p) if p.reason == ofp::PortReason::Modify && p.desc.port_no == 2 && !p.desc.is_up()
        ));
        assert!(s.set_port_up(2, false).is_none(), "no change, no message");
        assert!(out(&mut s).is_empty(), "nothing leaves a down port");
        let f = frames::gratuitous_arp(
            ofp::MacAddr([2, 0, 0, 0, 0, 2]),
            std::net::Ipv4Addr::new(10, 0, 0, 2),
        );
        let dropped = s.counters.dropped;
        assert!(s.receive_frame(2, &f, now).is_empty());
        assert_eq!(s.counters.dropped, dropped + 1);
        assert!(s.set_port_up(2, true).is_some());
        assert_eq!(out(&mut s).len(), 1);
        // The port's state shows in the next PORT_DESC.
        s.set_port_up(1, false);
        s.reset_connection();
        assert!(!s.features_sent && !s.port_desc_sent);
        let r = s.handle(
            OfpMessage::new(
                4,
                Message::MultipartRequest(ofp::MultipartRequest {
                    flags: 0,
                    body: MultipartRequestBody::PortDesc,
                }),
            ),
            &[],
            now,
        );
        assert!(matches!(
            sent(&r)[0],
            Message::MultipartReply(MultipartReply { body: MultipartReplyBody::PortDesc(p), .. })
                if p.iter().any(|d| d.port_no == 1 && !d.is_up())
        ));
    }

    #[test]
    fn handshake_replies() {
        let mut s = sw();
        let now = Instant::now();
        let r = s.handle(OfpMessage::new(5, Message::FeaturesRequest), &[], now);
        assert!(matches!(sent(&r)[0], Message::FeaturesReply(f) if f.datapath_id == 1));
        let r = s.handle(OfpMessage::new(6, Message::BarrierRequest), &[], now);
        assert_eq!(sent(&r), vec![&Message::BarrierReply]);
        let r = s.handle(
            OfpMessage::new(
                7,
                Message::Other {
                    msg_type: 16,
                    body: vec![],
                },
            ),
            &[4, 16, 0, 8, 0, 0, 0, 7],
            now,
        );
        assert!(matches!(
            sent(&r)[0],
            Message::Error(e) if e.kind == ErrorKind::BadRequest(BadRequestCode::BadType)
        ));
    }

    #[test]
    fn lldp_flow_sends_action_packet_in_and_miss_sends_no_match() {
        let mut s = sw();
        let now = Instant::now();
        let lldp = FlowMod {
            priority: 65000,
            cookie: 9,
            match_: Match::new().eth_type(frames::ETH_TYPE_LLDP),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(
                port_no::CONTROLLER,
            )])],
            ..FlowMod::default()
        };
        let miss = FlowMod {
            command: FlowModCommand::Add,
            instructions: vec![Instruction::ApplyActions(vec![Action::output(
                port_no::CONTROLLER,
            )])],
            ..FlowMod::default()
        };
        s.handle(OfpMessage::new(1, Message::FlowMod(lldp)), &[], now);
        let mut f = vec![0x01, 0x80, 0xc2, 0, 0, 0x0e, 2, 0, 0, 0, 0, 1, 0x88, 0xcc];
        f.resize(60, 0);
        // Port 4 faces the next switch.
        let r = s.receive_frame(4, &f, now);
        assert!(matches!(sent(&r)[0], Message::PacketIn(p)
            if p.reason == PacketInReason::Action && p.cookie == 9 && p.in_port() == Some(4)));
        let arp = frames::gratuitous_arp(ofp::MacAddr([2, 0, 0, 0, 0, 1]), [10, 0, 0, 1].into());
        assert!(
            s.receive_frame(1, &arp, now).is_empty(),
            "no table-miss entry: drop"
        );
        s.handle(OfpMessage::new(2, Message::FlowMod(miss)), &[], now);
        let r = s.receive_frame(1, &arp, now);
        assert!(matches!(sent(&r)[0], Message::PacketIn(p) if p.reason == PacketInReason::NoMatch));
    }

    #[test]
    fn set_and_get_async_like_ovs() {
        let mut s = sw();
        let now = Instant::now();
        let get = || {
            OfpMessage::new(
                1,
                Message::Other {
                    msg_type: ofp::msg_type::GET_ASYNC_REQUEST,
                    body: vec![],
                },
            )
        };
        let r = s.handle(get(), &[], now);
        let want = |body: Vec<u8>| Message::Other {
            msg_type: ofp::msg_type::GET_ASYNC_REPLY,
            body,
        };
        assert_eq!(sent(&r), vec![&want(OVS_ASYNC_DEFAULT.concat())]);
        let body: Vec<u8> = (0..24).collect();
        let set = OfpMessage::new(
            2,
            Message::Other {
                msg_type: ofp::msg_type::SET_ASYNC,
                body: body.clone(),
            },
        );
        assert!(s.handle(set, &[], now).is_empty());
        let r = s.handle(get(), &[], now);
        assert_eq!(sent(&r), vec![&want(body)]);
        let bad = OfpMessage::new(
            3,
            Message::Other {
                msg_type: ofp::msg_type::SET_ASYNC,
                body: vec![0; 8],
            },
        );
        let r = s.handle(bad, &[], now);
        assert!(matches!(sent(&r)[0], Message::Error(e)
            if e.kind == ErrorKind::BadRequest(BadRequestCode::BadLen)));
        assert_eq!(s.counters.errors_sent, 1);
    }

    fn multipart(s: &mut Switch, body: MultipartRequestBody, now: Instant) -> MultipartReplyBody {
        let req = ofp::MultipartRequest::new(body);
        let r = s.handle(OfpMessage::new(9, Message::MultipartRequest(req)), &[], now);
        match sent(&r)[0] {
            Message::MultipartReply(m) => m.body.clone(),
            other => panic!("not a multipart reply: {other:?}"),
        }
    }

    fn queues(
        s: &mut Switch,
        port_no: u32,
        queue_id: u32,
        now: Instant,
    ) -> Vec<(u32, u32, u64, u64)> {
        match multipart(s, MultipartRequestBody::Queue { port_no, queue_id }, now) {
            MultipartReplyBody::Queue(q) => q
                .iter()
                .map(|q| (q.port_no, q.queue_id, q.tx_bytes, q.tx_packets))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    fn meter(s: &mut Switch, now: Instant) -> Vec<MeterStats> {
        match multipart(
            s,
            MultipartRequestBody::Meter {
                meter_id: ofp::METER_ALL,
            },
            now,
        ) {
            MultipartReplyBody::Meter(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn queue_and_meter_stats_carry_the_configured_traffic() {
        let mut s = sw();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let mm = MeterMod {
            command: MeterModCommand::Add,
            flags: ofp::meter_flags::KBPS | ofp::meter_flags::STATS,
            meter_id: 9,
            bands: vec![ofp::MeterBand::Drop {
                rate: 100_000,
                burst_size: 0,
            }],
        };
        assert!(s
            .handle(OfpMessage::new(1, Message::MeterMod(mm.clone())), &[], t0)
            .is_empty());
        // (match, meter, queue, output, rate)
        let flows = [
            (Match::new().in_port(1), Some(9), 1, 2, 1_000_000),
            (Match::new().in_port(2), None, 2, 1, 500_000),
            (
                Match::new().in_port(2).eth_type(0x0800),
                Some(9),
                1,
                1,
                250_000,
            ),
        ];
        for (m, meter, q, out, rate) in &flows {
            let mut instructions: Vec<Instruction> =
                meter.iter().map(|&m| Instruction::Meter(m)).collect();
            instructions.push(Instruction::ApplyActions(vec![
                Action::SetQueue(*q),
                Action::output(*out),
            ]));
            let fm = FlowMod {
                priority: 10,
                match_: m.clone(),
                instructions,
                ..FlowMod::default()
            };
            s.handle(OfpMessage::new(2, Message::FlowMod(fm)), &[], t0);
            assert!(s.table.set_rate(0, 10, m, *rate, t0));
        }
        let now = at(2000);
        assert_eq!(
            queues(&mut s, port_no::ANY, QUEUE_ALL, now),
            vec![
                (1, 1, 500_000, 500),
                (1, 2, 1_000_000, 1000),
                (2, 1, 2_000_000, 2000)
            ]
        );
        assert_eq!(queues(&mut s, port_no::ALL, QUEUE_ALL, now).len(), 3);
        assert_eq!(
            queues(&mut s, 2, QUEUE_ALL, now),
            vec![(2, 1, 2_000_000, 2000)]
        );
        assert_eq!(
            queues(&mut s, port_no::ANY, 2, now),
            vec![(1, 2, 1_000_000, 1000)]
        );
        assert_eq!(queues(&mut s, 1, 1, now), vec![(1, 1, 500_000, 500)]);
        assert!(queues(&mut s, 3, QUEUE_ALL, now).is_empty(), "no such port");
        assert!(queues(&mut s, 2, 2, now).is_empty());
        let m = meter(&mut s, now);
        assert_eq!(m.len(), 1);
        assert_eq!(
            (
                m[0].meter_id,
                m[0].flow_count,
                m[0].byte_in_count,
                m[0].packet_in_count
            ),
            (9, 2, 2_500_000, 2500)
        );
        assert_eq!(m[0].duration_sec, 2);
        assert_eq!(m[0].band_stats, vec![ofp::BandStats::default()]);
        // The first flow deleted at 2 s: its queue and meter keep what it
        // carried.
        let del = FlowMod {
            command: FlowModCommand::DeleteStrict,
            priority: 10,
            match_: Match::new().in_port(1),
            ..FlowMod::default()
        };
        s.handle(OfpMessage::new(3, Message::FlowMod(del)), &[], now);
        let now = at(4000);
        assert_eq!(
            queues(&mut s, 2, QUEUE_ALL, now),
            vec![(2, 1, 2_000_000, 2000)]
        );
        let m = meter(&mut s, now);
        assert_eq!((m[0].flow_count, m[0].byte_in_count), (1, 3_000_000));
        // Deleted and added again at 4 s: it counts from then.
        let del = MeterMod {
            command: MeterModCommand::Delete,
            ..mm.clone()
        };
        s.handle(OfpMessage::new(4, Message::MeterMod(del)), &[], now);
        assert!(meter(&mut s, now).is_empty());
        s.handle(OfpMessage::new(5, Message::MeterMod(mm)), &[], now);
        let m = meter(&mut s, at(5000));
        assert_eq!(
            (m[0].flow_count, m[0].byte_in_count, m[0].duration_sec),
            (1, 250_000, 1)
        );
    }

    #[test]
    fn meters_roles_echo_stats_and_unsupported_groups() {
        let mut s = sw();
        let now = Instant::now();
        let mm = MeterMod {
            command: MeterModCommand::Add,
            flags: 0,
            meter_id: 7,
            bands: vec![],
        };
        assert!(s
            .handle(OfpMessage::new(1, Message::MeterMod(mm.clone())), &[], now)
            .is_empty());
        let r = s.handle(OfpMessage::new(2, Message::MeterMod(mm.clone())), &[], now);
        assert!(matches!(sent(&r)[0], Message::Error(e)
            if e.kind == ErrorKind::MeterModFailed(MeterModFailedCode::MeterExists)));
        let del = MeterMod {
            command: MeterModCommand::Delete,
            ..mm
        };
        s.handle(OfpMessage::new(3, Message::MeterMod(del)), &[], now);
        assert!(s.meters.is_empty());

        let role = RoleMsg {
            role: ControllerRole::Master,
            generation_id: 9,
        };
        let r = s.handle(OfpMessage::new(4, Message::RoleRequest(role)), &[], now);
        assert_eq!(sent(&r), vec![&Message::RoleReply(role)]);
        let r = s.handle(
            OfpMessage::new(5, Message::EchoRequest(vec![1, 2])),
            &[],
            now,
        );
        assert_eq!(sent(&r), vec![&Message::EchoReply(vec![1, 2])]);

        let fm = FlowMod {
            priority: 3,
            match_: ofp::Match::new().in_port(1),
            ..FlowMod::default()
        };
        s.handle(OfpMessage::new(6, Message::FlowMod(fm)), &[], now);
        let req = ofp::MultipartRequest::new(MultipartRequestBody::Flow(
            ofp::FlowStatsRequest::default(),
        ));
        let r = s.handle(OfpMessage::new(7, Message::MultipartRequest(req)), &[], now);
        let r = on_the_wire(&r);
        assert!(
            matches!(&r[0].body, Message::MultipartReply(MultipartReply {
            body: MultipartReplyBody::Flow(f), ..
        }) if f.len() == 1 && f[0].priority == 3)
        );

        let gm = ofp::GroupMod {
            command: ofp::GroupModCommand::Add,
            group_type: ofp::GroupType::All,
            group_id: 1,
            buckets: vec![],
        };
        let r = s.handle(OfpMessage::new(8, Message::GroupMod(gm)), &[], now);
        assert!(matches!(sent(&r)[0], Message::Error(e)
            if e.kind == ErrorKind::BadRequest(BadRequestCode::BadType)));
    }
}
