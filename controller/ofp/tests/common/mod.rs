//! Samples shared by the integration tests: one or more messages of every
//! type the codec models.
#![allow(dead_code)]

use ofp::*;
use std::net::Ipv4Addr;

pub fn mac(s: &str) -> MacAddr {
    s.parse().expect("test MAC")
}

/// A rich match: every basic field the codec types, masked where maskable.
pub fn rich_match() -> Match {
    Match::new()
        .in_port(1)
        .eth_src(mac("02:00:00:00:00:01"))
        .with(OxmField::EthDst {
            addr: mac("02:00:00:00:00:00"),
            mask: Some(mac("ff:ff:ff:00:00:00")),
        })
        .eth_type(0x0800)
        .with(OxmField::VlanVid {
            vid: OFPVID_PRESENT | 10,
            mask: None,
        })
        .with(OxmField::VlanPcp(3))
        .with(OxmField::IpDscp(10))
        .ip_proto(6)
        .with(OxmField::Ipv4Src {
            addr: Ipv4Addr::new(10, 0, 0, 0),
            mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        })
        .ipv4_dst(Ipv4Addr::new(10, 0, 1, 2))
        .tcp_src(1234)
        .tcp_dst(5201)
}

pub fn arp_match() -> Match {
    Match::new()
        .in_port(3)
        .with(OxmField::Metadata {
            value: 0x1234,
            mask: Some(0xffff),
        })
        .eth_type(0x0806)
        .with(OxmField::ArpOp(1))
        .with(OxmField::ArpSpa {
            addr: Ipv4Addr::new(10, 0, 0, 1),
            mask: None,
        })
        .with(OxmField::ArpTpa {
            addr: Ipv4Addr::new(10, 0, 0, 0),
            mask: Some(Ipv4Addr::new(255, 0, 0, 0)),
        })
        .with(OxmField::ArpSha {
            addr: mac("02:00:00:00:00:01"),
            mask: None,
        })
        .with(OxmField::ArpTha {
            addr: mac("00:00:00:00:00:00"),
            mask: Some(mac("ff:ff:ff:00:00:00")),
        })
}

pub fn udp_match() -> Match {
    Match::new()
        .eth_type(0x0800)
        .ip_proto(17)
        .ipv4_src(Ipv4Addr::new(192, 168, 0, 1))
        .udp_src(53)
        .udp_dst(5353)
}

/// FLOW_MOD add with a rich match and every instruction and action kind.
pub fn rich_flow_mod() -> FlowMod {
    FlowMod {
        cookie: 0x00c0_ffee,
        table_id: 0,
        idle_timeout: 30,
        hard_timeout: 300,
        priority: 1000,
        flags: flow_mod_flags::SEND_FLOW_REM | flow_mod_flags::CHECK_OVERLAP,
        match_: rich_match(),
        instructions: vec![
            Instruction::Meter(1),
            Instruction::ApplyActions(vec![
                Action::PushVlan(0x8100),
                Action::SetField(OxmField::VlanVid {
                    vid: OFPVID_PRESENT | 20,
                    mask: None,
                }),
                Action::SetField(OxmField::EthDst {
                    addr: mac("02:00:00:00:00:09"),
                    mask: None,
                }),
                Action::PopVlan,
                Action::SetQueue(1),
                Action::output(2),
                Action::output(port_no::CONTROLLER),
            ]),
            Instruction::ClearActions,
            Instruction::WriteActions(vec![Action::Group(1), Action::output(3)]),
            Instruction::WriteMetadata {
                metadata: 0xab,
                mask: 0xff,
            },
            Instruction::GotoTable(1),
        ],
        ..FlowMod::default()
    }
}

pub fn flow_delete_by_cookie() -> FlowMod {
    FlowMod {
        command: FlowModCommand::Delete,
        table_id: TABLE_ALL,
        cookie: 0x5000_0000_0000_0001,
        cookie_mask: 0xffff_0000_0000_0000,
        ..FlowMod::default()
    }
}

pub fn port_desc(no: u32, name: &str) -> PortDesc {
    PortDesc {
        port_no: no,
        hw_addr: mac("02:aa:bb:cc:dd:ee"),
        name: name.to_string(),
        config: 0,
        state: port_state::LIVE,
        curr: 0x2808,
        advertised: 0,
        supported: 0,
        peer: 0,
        curr_speed: 10_000_000,
        max_speed: 0,
    }
}

pub fn flow_stats(i: u32) -> FlowStats {
    FlowStats {
        table_id: 0,
        duration_sec: 10 + i,
        duration_nsec: 500,
        priority: 100,
        idle_timeout: 0,
        hard_timeout: 0,
        flags: 0,
        cookie: u64::from(i),
        packet_count: 1000 * u64::from(i),
        byte_count: 1_500_000 * u64::from(i),
        match_: Match::new()
            .in_port(i % 48 + 1)
            .eth_src(MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]))
            .eth_dst(MacAddr([2, 0, 0, 1, (i >> 8) as u8, i as u8])),
        instructions: vec![Instruction::ApplyActions(vec![Action::output(i % 48 + 2)])],
    }
}

pub fn meter_mod(command: MeterModCommand) -> MeterMod {
    MeterMod {
        command,
        flags: meter_flags::KBPS | meter_flags::BURST | meter_flags::STATS,
        meter_id: 7,
        bands: if command == MeterModCommand::Delete {
            vec![]
        } else {
            vec![
                MeterBand::Drop {
                    rate: 30_000,
                    burst_size: 3_000,
                },
                MeterBand::DscpRemark {
                    rate: 20_000,
                    burst_size: 2_000,
                    prec_level: 1,
                },
            ]
        },
    }
}

pub fn group_mod() -> GroupMod {
    GroupMod {
        command: GroupModCommand::Add,
        group_type: GroupType::Select,
        group_id: 5,
        buckets: vec![
            Bucket {
                weight: 10,
                ..Bucket::new(vec![Action::output(1)])
            },
            Bucket {
                weight: 20,
                ..Bucket::new(vec![Action::SetQueue(2), Action::output(2)])
            },
        ],
    }
}

/// A tiny Ethernet/IPv4/UDP frame.
pub fn frame() -> Vec<u8> {
    let mut f = vec![
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x00,
    ];
    f.extend_from_slice(&[
        0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0, 53, 0, 53, 0, 8, 0,
        0,
    ]);
    f
}

pub fn mpreq(body: MultipartRequestBody) -> Message {
    Message::MultipartRequest(MultipartRequest::new(body))
}

/// Messages a controller sends (the ovs-ofctl oracle decodes each).
pub fn controller_messages() -> Vec<(&'static str, OfpMessage)> {
    use MultipartRequestBody as R;
    let m = |xid: u32, body| OfpMessage::new(xid, body);
    vec![
        ("hello", m(1, Message::Hello(Hello::of13()))),
        ("echo_request", m(2, Message::EchoRequest(b"ping".to_vec()))),
        ("echo_reply", m(3, Message::EchoReply(b"pong".to_vec()))),
        ("features_request", m(4, Message::FeaturesRequest)),
        ("get_config_request", m(5, Message::GetConfigRequest)),
        (
            "set_config",
            m(
                6,
                Message::SetConfig(SwitchConfig {
                    flags: 0,
                    miss_send_len: 0xffff,
                }),
            ),
        ),
        ("barrier_request", m(7, Message::BarrierRequest)),
        (
            "role_request",
            m(
                8,
                Message::RoleRequest(RoleMsg {
                    role: ControllerRole::Master,
                    generation_id: 42,
                }),
            ),
        ),
        ("flow_mod_add", m(9, Message::FlowMod(rich_flow_mod()))),
        (
            "flow_mod_arp",
            m(
                10,
                Message::FlowMod(FlowMod {
                    match_: arp_match(),
                    instructions: vec![Instruction::ApplyActions(vec![Action::output(
                        port_no::NORMAL,
                    )])],
                    ..FlowMod::default()
                }),
            ),
        ),
        (
            "flow_mod_udp",
            m(
                11,
                Message::FlowMod(FlowMod {
                    command: FlowModCommand::ModifyStrict,
                    match_: udp_match(),
                    instructions: vec![],
                    ..FlowMod::default()
                }),
            ),
        ),
        (
            "flow_mod_delete_cookie",
            m(12, Message::FlowMod(flow_delete_by_cookie())),
        ),
        (
            "meter_mod_add",
            m(13, Message::MeterMod(meter_mod(MeterModCommand::Add))),
        ),
        (
            "meter_mod_modify",
            m(14, Message::MeterMod(meter_mod(MeterModCommand::Modify))),
        ),
        (
            "meter_mod_delete",
            m(15, Message::MeterMod(meter_mod(MeterModCommand::Delete))),
        ),
        ("group_mod", m(16, Message::GroupMod(group_mod()))),
        (
            "packet_out",
            m(
                17,
                Message::PacketOut(PacketOut {
                    buffer_id: NO_BUFFER,
                    in_port: port_no::CONTROLLER,
                    actions: vec![Action::output(port_no::FLOOD)],
                    data: frame(),
                }),
            ),
        ),
        ("mp_desc", m(18, mpreq(R::Desc))),
        (
            "mp_flow",
            m(19, mpreq(R::Flow(FlowStatsRequest::default()))),
        ),
        (
            "mp_flow_filtered",
            m(
                20,
                mpreq(R::Flow(FlowStatsRequest {
                    table_id: 0,
                    out_port: 2,
                    cookie: 0x10,
                    cookie_mask: 0xff,
                    match_: Match::new().in_port(1),
                    ..FlowStatsRequest::default()
                })),
            ),
        ),
        (
            "mp_aggregate",
            m(21, mpreq(R::Aggregate(FlowStatsRequest::default()))),
        ),
        (
            "mp_port_stats",
            m(
                22,
                mpreq(R::PortStats {
                    port_no: port_no::ANY,
                }),
            ),
        ),
        (
            "mp_queue",
            m(
                23,
                mpreq(R::Queue {
                    port_no: port_no::ANY,
                    queue_id: QUEUE_ALL,
                }),
            ),
        ),
        (
            "mp_meter",
            m(
                24,
                mpreq(R::Meter {
                    meter_id: METER_ALL,
                }),
            ),
        ),
        (
            "mp_meter_config",
            m(
                25,
                mpreq(R::MeterConfig {
                    meter_id: METER_ALL,
                }),
            ),
        ),
        ("mp_port_desc", m(26, mpreq(R::PortDesc))),
        ("mp_table_features", m(27, mpreq(R::TableFeatures(vec![])))),
        ("mp_table", m(28, mpreq(R::Table))),
        (
            "mp_group",
            m(
                29,
                mpreq(R::Group {
                    group_id: GROUP_ALL,
                }),
            ),
        ),
        ("mp_group_desc", m(30, mpreq(R::GroupDesc))),
        ("mp_meter_features", m(31, mpreq(R::MeterFeatures))),
        (
            "error_hello_failed",
            m(
                32,
                Message::Error(ErrorMsg::new(
                    ErrorKind::HelloFailed(HelloFailedCode::Incompatible),
                    b"only OpenFlow 1.3 is supported".to_vec(),
                )),
            ),
        ),
    ]
}

/// Messages a switch sends.
pub fn switch_messages() -> Vec<(&'static str, OfpMessage)> {
    use MultipartReplyBody as B;
    let m = |xid: u32, body| OfpMessage::new(xid, body);
    let rep = |flags: u16, body| Message::MultipartReply(MultipartReply { flags, body });
    vec![
        (
            "hello_v5",
            m(
                1,
                Message::Hello(Hello {
                    version: 6,
                    bitmap: Some(vec![0x70]),
                    other_elements: vec![0, 9, 0, 6, 1, 2, 0, 0],
                }),
            ),
        ),
        (
            "hello_no_bitmap",
            m(
                1,
                Message::Hello(Hello {
                    version: 4,
                    bitmap: None,
                    other_elements: vec![],
                }),
            ),
        ),
        (
            "error_bad_request",
            m(
                2,
                Message::Error(ErrorMsg::new(
                    ErrorKind::BadRequest(BadRequestCode::BadType),
                    vec![4, 99, 0, 8, 0, 0, 0, 1],
                )),
            ),
        ),
        (
            "error_experimenter",
            m(
                3,
                Message::Error(ErrorMsg::new(
                    ErrorKind::Experimenter {
                        exp_type: 7,
                        experimenter: 0x2320,
                    },
                    vec![1, 2, 3],
                )),
            ),
        ),
        (
            "experimenter",
            m(
                4,
                Message::Experimenter(Experimenter {
                    experimenter: 0x2320,
                    exp_type: 5,
                    data: vec![1, 2, 3, 4],
                }),
            ),
        ),
        (
            "features_reply",
            m(
                5,
                Message::FeaturesReply(SwitchFeatures {
                    datapath_id: 0x0000_0000_0000_beef,
                    n_buffers: 0,
                    n_tables: 254,
                    auxiliary_id: 0,
                    capabilities: capabilities::FLOW_STATS | capabilities::PORT_STATS,
                }),
            ),
        ),
        (
            "get_config_reply",
            m(
                6,
                Message::GetConfigReply(SwitchConfig {
                    flags: 0,
                    miss_send_len: 128,
                }),
            ),
        ),
        (
            "packet_in",
            m(
                7,
                Message::PacketIn(PacketIn {
                    buffer_id: NO_BUFFER,
                    total_len: frame().len() as u16,
                    reason: PacketInReason::NoMatch,
                    table_id: 0,
                    cookie: u64::MAX,
                    match_: Match::new().in_port(3),
                    data: frame(),
                }),
            ),
        ),
        (
            "flow_removed",
            m(
                8,
                Message::FlowRemoved(FlowRemoved {
                    cookie: 9,
                    priority: 5,
                    reason: FlowRemovedReason::IdleTimeout,
                    table_id: 0,
                    duration_sec: 3,
                    duration_nsec: 4,
                    idle_timeout: 1,
                    hard_timeout: 0,
                    packet_count: 10,
                    byte_count: 1000,
                    match_: udp_match(),
                }),
            ),
        ),
        (
            "port_status",
            m(
                9,
                Message::PortStatus(PortStatus {
                    reason: PortReason::Add,
                    desc: port_desc(4, "sof-p4"),
                }),
            ),
        ),
        ("barrier_reply", m(10, Message::BarrierReply)),
        (
            "role_reply",
            m(
                11,
                Message::RoleReply(RoleMsg {
                    role: ControllerRole::Slave,
                    generation_id: 1,
                }),
            ),
        ),
        (
            "mp_desc_reply",
            m(
                12,
                rep(
                    0,
                    B::Desc(DescStats {
                        mfr_desc: "Nicira, Inc.".into(),
                        hw_desc: "Open vSwitch".into(),
                        sw_desc: "3.1.0".into(),
                        serial_num: "None".into(),
                        dp_desc: "sofcap0".into(),
                    }),
                ),
            ),
        ),
        (
            "mp_flow_reply",
            m(13, rep(0, B::Flow((1..=5).map(flow_stats).collect()))),
        ),
        (
            "mp_flow_reply_rich",
            m(
                14,
                rep(
                    multipart_flags::MORE,
                    B::Flow(vec![FlowStats {
                        match_: rich_match(),
                        instructions: rich_flow_mod().instructions,
                        ..flow_stats(9)
                    }]),
                ),
            ),
        ),
        (
            "mp_aggregate_reply",
            m(
                15,
                rep(
                    0,
                    B::Aggregate(AggregateStats {
                        packet_count: 1,
                        byte_count: 2,
                        flow_count: 3,
                    }),
                ),
            ),
        ),
        (
            "mp_port_stats_reply",
            m(
                16,
                rep(
                    0,
                    B::PortStats(vec![
                        PortStats {
                            port_no: 1,
                            rx_packets: 10,
                            tx_bytes: 1000,
                            duration_sec: 5,
                            ..PortStats::default()
                        },
                        PortStats {
                            port_no: port_no::LOCAL,
                            collisions: 1,
                            ..PortStats::default()
                        },
                    ]),
                ),
            ),
        ),
        (
            "mp_queue_reply",
            m(
                17,
                rep(
                    0,
                    B::Queue(vec![QueueStats {
                        port_no: 1,
                        queue_id: 1,
                        tx_bytes: 5,
                        tx_packets: 1,
                        tx_errors: 0,
                        duration_sec: 2,
                        duration_nsec: 3,
                    }]),
                ),
            ),
        ),
        (
            "mp_meter_reply",
            m(
                18,
                rep(
                    0,
                    B::Meter(vec![MeterStats {
                        meter_id: 7,
                        flow_count: 1,
                        packet_in_count: 100,
                        byte_in_count: 10000,
                        duration_sec: 1,
                        duration_nsec: 2,
                        band_stats: vec![BandStats {
                            packet_band_count: 3,
                            byte_band_count: 300,
                        }],
                    }]),
                ),
            ),
        ),
        (
            "mp_meter_config_reply",
            m(
                19,
                rep(
                    0,
                    B::MeterConfig(vec![MeterConfig {
                        flags: meter_flags::KBPS,
                        meter_id: 7,
                        bands: meter_mod(MeterModCommand::Add).bands,
                    }]),
                ),
            ),
        ),
        (
            "mp_port_desc_reply",
            m(
                20,
                rep(
                    0,
                    B::PortDesc(vec![
                        port_desc(1, "sof-p1"),
                        port_desc(port_no::LOCAL, "sofcap0"),
                    ]),
                ),
            ),
        ),
        (
            "mp_table_features_reply",
            m(
                21,
                rep(multipart_flags::MORE, B::TableFeatures(vec![0; 64])),
            ),
        ),
        (
            "mp_table_reply",
            m(
                22,
                rep(
                    0,
                    B::Table(vec![TableStats {
                        table_id: 0,
                        active_count: 3,
                        lookup_count: 100,
                        matched_count: 90,
                    }]),
                ),
            ),
        ),
        (
            "mp_group_reply",
            m(
                23,
                rep(
                    0,
                    B::Group(vec![GroupStats {
                        group_id: 5,
                        ref_count: 1,
                        packet_count: 2,
                        byte_count: 3,
                        duration_sec: 4,
                        duration_nsec: 5,
                        bucket_stats: vec![BucketCounter {
                            packet_count: 1,
                            byte_count: 2,
                        }],
                    }]),
                ),
            ),
        ),
        (
            "mp_group_desc_reply",
            m(
                24,
                rep(
                    0,
                    B::GroupDesc(vec![GroupDesc {
                        group_type: GroupType::Select,
                        group_id: 5,
                        buckets: group_mod().buckets,
                    }]),
                ),
            ),
        ),
        (
            "mp_meter_features_reply",
            m(
                25,
                rep(
                    0,
                    B::MeterFeatures(MeterFeatures {
                        max_meter: 1024,
                        band_types: 2,
                        capabilities: 15,
                        max_bands: 1,
                        max_color: 0,
                    }),
                ),
            ),
        ),
        (
            "mp_other_reply",
            m(
                26,
                rep(
                    0,
                    B::Other {
                        mp_type: multipart_type::GROUP_FEATURES,
                        body: vec![0; 40],
                    },
                ),
            ),
        ),
        (
            "port_mod_other",
            m(
                27,
                Message::Other {
                    msg_type: msg_type::PORT_MOD,
                    body: vec![0; 32],
                },
            ),
        ),
    ]
}

pub fn all_messages() -> Vec<(&'static str, OfpMessage)> {
    let mut v = controller_messages();
    v.extend(switch_messages());
    v
}
