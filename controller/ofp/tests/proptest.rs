//! Property tests: (a) random bytes and (b) mutations of valid messages
//! never make the decoders, the flow-stats iterator or the assembler panic;
//! (c) arbitrary generated messages round-trip (value and bytes).

mod common;

use ofp::*;
use proptest::collection::vec;
use proptest::prelude::*;
use std::net::Ipv4Addr;

// ------------------------------------------------------------ generators

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}
fn ip() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

fn oxm() -> impl Strategy<Value = OxmField> {
    use OxmField as O;
    prop_oneof![
        any::<u32>().prop_map(O::InPort),
        any::<u32>().prop_map(O::InPhyPort),
        (any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(value, mask)| O::Metadata { value, mask }),
        (mac(), proptest::option::of(mac())).prop_map(|(addr, mask)| O::EthDst { addr, mask }),
        (mac(), proptest::option::of(mac())).prop_map(|(addr, mask)| O::EthSrc { addr, mask }),
        any::<u16>().prop_map(O::EthType),
        (any::<u16>(), proptest::option::of(any::<u16>()))
            .prop_map(|(vid, mask)| O::VlanVid { vid, mask }),
        any::<u8>().prop_map(O::VlanPcp),
        any::<u8>().prop_map(O::IpDscp),
        any::<u8>().prop_map(O::IpProto),
        (ip(), proptest::option::of(ip())).prop_map(|(addr, mask)| O::Ipv4Src { addr, mask }),
        (ip(), proptest::option::of(ip())).prop_map(|(addr, mask)| O::Ipv4Dst { addr, mask }),
        any::<u16>().prop_map(O::TcpSrc),
        any::<u16>().prop_map(O::TcpDst),
        any::<u16>().prop_map(O::UdpSrc),
        any::<u16>().prop_map(O::UdpDst),
        any::<u16>().prop_map(O::ArpOp),
        (ip(), proptest::option::of(ip())).prop_map(|(addr, mask)| O::ArpSpa { addr, mask }),
        (ip(), proptest::option::of(ip())).prop_map(|(addr, mask)| O::ArpTpa { addr, mask }),
        (mac(), proptest::option::of(mac())).prop_map(|(addr, mask)| O::ArpSha { addr, mask }),
        (mac(), proptest::option::of(mac())).prop_map(|(addr, mask)| O::ArpTha { addr, mask }),
        // Basic-class fields the codec does not type.
        (26u8..=127, any::<bool>(), bytes(24)).prop_map(|(field, hasmask, payload)| O::Raw {
            class: OXM_CLASS_OPENFLOW_BASIC,
            field,
            hasmask,
            payload
        }),
        // Known field with an unexpected length: stays raw.
        (0u8..=25, any::<bool>(), 17usize..=30).prop_map(|(field, hasmask, n)| O::Raw {
            class: OXM_CLASS_OPENFLOW_BASIC,
            field,
            hasmask,
            payload: vec![7; n]
        }),
        (
            prop_oneof![Just(0u16), Just(1), Just(0x8001), Just(0xffff)],
            0u8..=127,
            any::<bool>(),
            bytes(24)
        )
            .prop_map(|(class, field, hasmask, payload)| O::Raw {
                class,
                field,
                hasmask,
                payload
            }),
    ]
}

fn a_match() -> impl Strategy<Value = Match> {
    vec(oxm(), 0..6).prop_map(|fields| Match { fields })
}

fn payload_4_mod_8() -> impl Strategy<Value = Vec<u8>> {
    (0usize..3).prop_flat_map(|k| vec(any::<u8>(), 8 * k + 4))
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (any::<u32>(), any::<u16>()).prop_map(|(port, max_len)| Action::Output { port, max_len }),
        any::<u32>().prop_map(Action::SetQueue),
        any::<u32>().prop_map(Action::Group),
        oxm().prop_map(Action::SetField),
        any::<u16>().prop_map(Action::PushVlan),
        Just(Action::PopVlan),
        (
            prop_oneof![
                Just(11u16),
                Just(12),
                Just(15),
                Just(16),
                Just(23),
                Just(24),
                26u16..=200,
                Just(0xffff)
            ],
            payload_4_mod_8()
        )
            .prop_map(|(action_type, payload)| Action::Raw {
                action_type,
                payload
            }),
    ]
}

fn instruction() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        any::<u8>().prop_map(Instruction::GotoTable),
        (any::<u64>(), any::<u64>())
            .prop_map(|(metadata, mask)| Instruction::WriteMetadata { metadata, mask }),
        vec(action(), 0..4).prop_map(Instruction::WriteActions),
        vec(action(), 0..4).prop_map(Instruction::ApplyActions),
        Just(Instruction::ClearActions),
        any::<u32>().prop_map(Instruction::Meter),
        (prop_oneof![7u16..=300, Just(0xffff)], payload_4_mod_8()).prop_map(
            |(instr_type, payload)| Instruction::Raw {
                instr_type,
                payload
            }
        ),
    ]
}

fn band() -> impl Strategy<Value = MeterBand> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(rate, burst_size)| MeterBand::Drop { rate, burst_size }),
        (any::<u32>(), any::<u32>(), any::<u8>()).prop_map(|(rate, burst_size, prec_level)| {
            MeterBand::DscpRemark {
                rate,
                burst_size,
                prec_level,
            }
        }),
        (
            prop_oneof![3u16..=100, Just(0xffff)],
            any::<u32>(),
            any::<u32>(),
            vec(any::<u8>(), 4..20)
        )
            .prop_map(|(band_type, rate, burst_size, payload)| MeterBand::Raw {
                band_type,
                rate,
                burst_size,
                payload
            }),
    ]
}

fn bucket() -> impl Strategy<Value = Bucket> {
    (
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        vec(action(), 0..3),
    )
        .prop_map(|(weight, watch_port, watch_group, actions)| Bucket {
            weight,
            watch_port,
            watch_group,
            actions,
        })
}

fn port_desc() -> impl Strategy<Value = PortDesc> {
    (any::<u32>(), mac(), "[a-z0-9-]{0,16}", any::<[u32; 8]>()).prop_map(
        |(port_no, hw_addr, name, v)| PortDesc {
            port_no,
            hw_addr,
            name,
            config: v[0],
            state: v[1],
            curr: v[2],
            advertised: v[3],
            supported: v[4],
            peer: v[5],
            curr_speed: v[6],
            max_speed: v[7],
        },
    )
}

fn flow_mod() -> impl Strategy<Value = FlowMod> {
    (
        any::<[u64; 2]>(),
        any::<[u8; 2]>(),
        any::<[u16; 4]>(),
        any::<[u32; 3]>(),
        a_match(),
        vec(instruction(), 0..4),
    )
        .prop_map(|(c, tc, t, p, match_, instructions)| FlowMod {
            cookie: c[0],
            cookie_mask: c[1],
            table_id: tc[0],
            command: tc[1].into(),
            idle_timeout: t[0],
            hard_timeout: t[1],
            priority: t[2],
            buffer_id: p[0],
            out_port: p[1],
            out_group: p[2],
            flags: t[3],
            match_,
            instructions,
        })
}

fn flow_stats() -> impl Strategy<Value = FlowStats> {
    (
        any::<u8>(),
        any::<[u32; 2]>(),
        any::<[u16; 4]>(),
        any::<[u64; 3]>(),
        a_match(),
        vec(instruction(), 0..3),
    )
        .prop_map(|(table_id, d, t, c, match_, instructions)| FlowStats {
            table_id,
            duration_sec: d[0],
            duration_nsec: d[1],
            priority: t[0],
            idle_timeout: t[1],
            hard_timeout: t[2],
            flags: t[3],
            cookie: c[0],
            packet_count: c[1],
            byte_count: c[2],
            match_,
            instructions,
        })
}

fn fsr() -> impl Strategy<Value = FlowStatsRequest> {
    (any::<u8>(), any::<[u32; 2]>(), any::<[u64; 2]>(), a_match()).prop_map(
        |(table_id, p, c, match_)| FlowStatsRequest {
            table_id,
            out_port: p[0],
            out_group: p[1],
            cookie: c[0],
            cookie_mask: c[1],
            match_,
        },
    )
}

fn mp_request() -> impl Strategy<Value = MultipartRequestBody> {
    use MultipartRequestBody as R;
    prop_oneof![
        Just(R::Desc),
        fsr().prop_map(R::Flow),
        fsr().prop_map(R::Aggregate),
        Just(R::Table),
        any::<u32>().prop_map(|port_no| R::PortStats { port_no }),
        (any::<u32>(), any::<u32>()).prop_map(|(port_no, queue_id)| R::Queue { port_no, queue_id }),
        any::<u32>().prop_map(|group_id| R::Group { group_id }),
        Just(R::GroupDesc),
        any::<u32>().prop_map(|meter_id| R::Meter { meter_id }),
        any::<u32>().prop_map(|meter_id| R::MeterConfig { meter_id }),
        Just(R::MeterFeatures),
        bytes(64).prop_map(R::TableFeatures),
        Just(R::PortDesc),
        (prop_oneof![Just(8u16), 14u16..=0xffff], bytes(32))
            .prop_map(|(mp_type, body)| R::Other { mp_type, body }),
    ]
}

fn mp_reply() -> impl Strategy<Value = MultipartReplyBody> {
    use MultipartReplyBody as B;
    let s = "[ -~]{0,40}";
    prop_oneof![
        (s, s, s, "[ -~]{0,32}", s).prop_map(
            |(mfr_desc, hw_desc, sw_desc, serial_num, dp_desc)| B::Desc(DescStats {
                mfr_desc,
                hw_desc,
                sw_desc,
                serial_num,
                dp_desc
            })
        ),
        vec(flow_stats(), 0..4).prop_map(B::Flow),
        any::<(u64, u64, u32)>().prop_map(|(packet_count, byte_count, flow_count)| B::Aggregate(
            AggregateStats {
                packet_count,
                byte_count,
                flow_count
            }
        )),
        vec((any::<u32>(), any::<[u64; 12]>(), any::<[u32; 2]>()), 0..3).prop_map(
            |v| B::PortStats(
                v.into_iter()
                    .map(|(port_no, c, d)| PortStats {
                        port_no,
                        rx_packets: c[0],
                        tx_packets: c[1],
                        rx_bytes: c[2],
                        tx_bytes: c[3],
                        rx_dropped: c[4],
                        tx_dropped: c[5],
                        rx_errors: c[6],
                        tx_errors: c[7],
                        rx_frame_err: c[8],
                        rx_over_err: c[9],
                        rx_crc_err: c[10],
                        collisions: c[11],
                        duration_sec: d[0],
                        duration_nsec: d[1],
                    })
                    .collect()
            )
        ),
        vec(any::<([u32; 4], [u64; 3])>(), 0..3).prop_map(|v| B::Queue(
            v.into_iter()
                .map(|(a, b)| QueueStats {
                    port_no: a[0],
                    queue_id: a[1],
                    tx_bytes: b[0],
                    tx_packets: b[1],
                    tx_errors: b[2],
                    duration_sec: a[2],
                    duration_nsec: a[3],
                })
                .collect()
        )),
        vec(
            (
                any::<([u32; 4], [u64; 2])>(),
                vec(any::<(u64, u64)>(), 0..3)
            ),
            0..3
        )
        .prop_map(|v| B::Meter(
            v.into_iter()
                .map(|((a, b), bands)| MeterStats {
                    meter_id: a[0],
                    flow_count: a[1],
                    packet_in_count: b[0],
                    byte_in_count: b[1],
                    duration_sec: a[2],
                    duration_nsec: a[3],
                    band_stats: bands
                        .into_iter()
                        .map(|(p, b)| BandStats {
                            packet_band_count: p,
                            byte_band_count: b
                        })
                        .collect(),
                })
                .collect()
        )),
        vec((any::<u16>(), any::<u32>(), vec(band(), 0..3)), 0..3).prop_map(|v| B::MeterConfig(
            v.into_iter()
                .map(|(flags, meter_id, bands)| MeterConfig {
                    flags,
                    meter_id,
                    bands
                })
                .collect()
        )),
        vec(port_desc(), 0..4).prop_map(B::PortDesc),
        bytes(64).prop_map(B::TableFeatures),
        vec(any::<(u8, u32, u64, u64)>(), 0..4).prop_map(|v| B::Table(
            v.into_iter()
                .map(
                    |(table_id, active_count, lookup_count, matched_count)| TableStats {
                        table_id,
                        active_count,
                        lookup_count,
                        matched_count
                    }
                )
                .collect()
        )),
        vec(
            (
                any::<([u32; 4], [u64; 2])>(),
                vec(any::<(u64, u64)>(), 0..3)
            ),
            0..3
        )
        .prop_map(|v| B::Group(
            v.into_iter()
                .map(|((a, b), bs)| GroupStats {
                    group_id: a[0],
                    ref_count: a[1],
                    packet_count: b[0],
                    byte_count: b[1],
                    duration_sec: a[2],
                    duration_nsec: a[3],
                    bucket_stats: bs
                        .into_iter()
                        .map(|(packet_count, byte_count)| BucketCounter {
                            packet_count,
                            byte_count
                        })
                        .collect(),
                })
                .collect()
        )),
        vec((any::<u8>(), any::<u32>(), vec(bucket(), 0..3)), 0..3).prop_map(|v| B::GroupDesc(
            v.into_iter()
                .map(|(t, group_id, buckets)| GroupDesc {
                    group_type: t.into(),
                    group_id,
                    buckets
                })
                .collect()
        )),
        any::<([u32; 3], u8, u8)>().prop_map(|(a, max_bands, max_color)| B::MeterFeatures(
            MeterFeatures {
                max_meter: a[0],
                band_types: a[1],
                capabilities: a[2],
                max_bands,
                max_color
            }
        )),
        (prop_oneof![Just(8u16), 14u16..=0xffff], bytes(32))
            .prop_map(|(mp_type, body)| B::Other { mp_type, body }),
    ]
}

/// Well-formed HELLO elements other than VERSIONBITMAP.
fn hello_elements() -> impl Strategy<Value = Vec<u8>> {
    vec((2u16..=0xffff, bytes(12)), 0..3).prop_map(|els| {
        let mut out = Vec::new();
        for (t, data) in els {
            let len = 4 + data.len();
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&data);
            out.resize(out.len() + (8 - len % 8) % 8, 0);
        }
        out
    })
}

fn message() -> impl Strategy<Value = Message> {
    let role = (any::<u32>(), any::<u64>()).prop_map(|(r, generation_id)| RoleMsg {
        role: r.into(),
        generation_id,
    });
    let config = any::<(u16, u16)>().prop_map(|(flags, miss_send_len)| SwitchConfig {
        flags,
        miss_send_len,
    });
    prop_oneof![
        (
            any::<u8>(),
            proptest::option::of(vec(any::<u32>(), 0..3)),
            hello_elements()
        )
            .prop_map(|(version, bitmap, other_elements)| Message::Hello(Hello {
                version,
                bitmap,
                other_elements
            })),
        (any::<u16>(), any::<u16>(), any::<u32>(), bytes(40)).prop_map(|(t, c, x, data)| {
            let mut kind = ErrorKind::from_type_code(t, c);
            if let ErrorKind::Experimenter { experimenter, .. } = &mut kind {
                *experimenter = x;
            }
            Message::Error(ErrorMsg { kind, data })
        }),
        bytes(40).prop_map(Message::EchoRequest),
        bytes(40).prop_map(Message::EchoReply),
        (any::<u32>(), any::<u32>(), bytes(40)).prop_map(|(experimenter, exp_type, data)| {
            Message::Experimenter(Experimenter {
                experimenter,
                exp_type,
                data,
            })
        }),
        Just(Message::FeaturesRequest),
        any::<(u64, u32, u8, u8, u32)>().prop_map(|(d, n, t, a, c)| Message::FeaturesReply(
            SwitchFeatures {
                datapath_id: d,
                n_buffers: n,
                n_tables: t,
                auxiliary_id: a,
                capabilities: c
            }
        )),
        Just(Message::GetConfigRequest),
        config.clone().prop_map(Message::GetConfigReply),
        config.prop_map(Message::SetConfig),
        (any::<(u32, u16, u8, u8, u64)>(), a_match(), bytes(80)).prop_map(|(h, match_, data)| {
            Message::PacketIn(PacketIn {
                buffer_id: h.0,
                total_len: h.1,
                reason: h.2.into(),
                table_id: h.3,
                cookie: h.4,
                match_,
                data,
            })
        }),
        (
            any::<(u64, u16, u8, u8)>(),
            any::<[u32; 2]>(),
            any::<[u16; 2]>(),
            any::<[u64; 2]>(),
            a_match()
        )
            .prop_map(|(h, d, t, c, match_)| Message::FlowRemoved(FlowRemoved {
                cookie: h.0,
                priority: h.1,
                reason: h.2.into(),
                table_id: h.3,
                duration_sec: d[0],
                duration_nsec: d[1],
                idle_timeout: t[0],
                hard_timeout: t[1],
                packet_count: c[0],
                byte_count: c[1],
                match_,
            })),
        (any::<u8>(), port_desc()).prop_map(|(r, desc)| Message::PortStatus(PortStatus {
            reason: r.into(),
            desc
        })),
        (any::<u32>(), any::<u32>(), vec(action(), 0..4), bytes(80)).prop_map(
            |(buffer_id, in_port, actions, data)| Message::PacketOut(PacketOut {
                buffer_id,
                in_port,
                actions,
                data
            })
        ),
        flow_mod().prop_map(Message::FlowMod),
        (any::<u16>(), any::<u8>(), any::<u32>(), vec(bucket(), 0..3)).prop_map(
            |(c, t, group_id, buckets)| {
                Message::GroupMod(GroupMod {
                    command: c.into(),
                    group_type: t.into(),
                    group_id,
                    buckets,
                })
            }
        ),
        (any::<u16>(), any::<u16>(), any::<u32>(), vec(band(), 0..3)).prop_map(
            |(c, flags, meter_id, bands)| {
                Message::MeterMod(MeterMod {
                    command: c.into(),
                    flags,
                    meter_id,
                    bands,
                })
            }
        ),
        (any::<u16>(), mp_request())
            .prop_map(|(flags, body)| Message::MultipartRequest(MultipartRequest { flags, body })),
        (any::<u16>(), mp_reply())
            .prop_map(|(flags, body)| Message::MultipartReply(MultipartReply { flags, body })),
        Just(Message::BarrierRequest),
        Just(Message::BarrierReply),
        role.clone().prop_map(Message::RoleRequest),
        role.prop_map(Message::RoleReply),
        Just(Message::GetAsyncRequest),
        (any::<[u32; 2]>(), any::<[u32; 2]>(), any::<[u32; 2]>()).prop_map(|(p, s, f)| {
            let a = ofp::AsyncConfig {
                packet_in_mask: p,
                port_status_mask: s,
                flow_removed_mask: f,
            };
            Message::SetAsync(a)
        }),
        (any::<[u32; 2]>(), any::<[u32; 2]>(), any::<[u32; 2]>()).prop_map(|(p, s, f)| {
            Message::GetAsyncReply(ofp::AsyncConfig {
                packet_in_mask: p,
                port_status_mask: s,
                flow_removed_mask: f,
            })
        }),
        (
            prop_oneof![Just(16u8), Just(17), Just(22), Just(23), 30u8..=255],
            bytes(40)
        )
            .prop_map(|(msg_type, body)| Message::Other { msg_type, body }),
    ]
}

// ------------------------------------------------------- never-panic checks

/// Runs every decoder on `buf`; re-encodes what decodes.
fn exercise(buf: &[u8]) {
    let _ = check_frame(buf);
    let _ = Header::parse(buf);
    if let Ok(m) = OfpMessage::decode(buf) {
        if let Ok(bytes) = m.to_vec() {
            // What decodes and re-encodes decodes to the same value again.
            assert_eq!(
                OfpMessage::decode(&bytes).as_ref(),
                Ok(&m),
                "{}",
                m.body.name()
            );
        }
        let _ = m.body.name();
        if let Message::MultipartReply(r) = m.body {
            let mut asm = MultipartAssembler::new(1 << 16);
            let more = MultipartReply {
                flags: 1,
                ..r.clone()
            };
            let _ = asm.push(more.clone(), buf.len());
            let _ = asm.push(more, buf.len());
            let _ = asm.push(r, buf.len());
        }
    }
    if let Ok(it) = flow_stats_entries(buf) {
        for e in it {
            let Ok(e) = e else { continue };
            let _ = (
                e.cookie(),
                e.packet_count(),
                e.byte_count(),
                e.table_id(),
                e.priority(),
            );
            let _ = (
                e.duration_sec(),
                e.duration_nsec(),
                e.idle_timeout(),
                e.hard_timeout(),
                e.flags(),
            );
            let _ = (e.in_port(), e.eth_src(), e.eth_dst());
            if let Ok(f) = e.to_owned() {
                let _ = f.encode(&mut Vec::new());
            }
        }
    }
}

/// Valid messages to mutate: every sample plus every OVS capture.
fn corpus() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = common::all_messages()
        .iter()
        .map(|(_, m)| m.to_vec().expect("sample"))
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ovs31");
    for e in std::fs::read_dir(dir).expect("captures") {
        let text = std::fs::read_to_string(e.expect("entry").path()).expect("read");
        for l in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let b: Vec<u8> = (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).expect("hex"))
                .collect();
            // The 60 KB TABLE_FEATURES parts would dominate the run time.
            if b.len() < 16 * 1024 {
                v.push(b);
            }
        }
    }
    v
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    /// Overwrites a 16-bit big-endian value (hits nested length fields).
    SetU16(usize, u16),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, v)| Mutation::SetByte(p, v)),
        (any::<usize>(), prop_oneof![0u16..=80, any::<u16>()])
            .prop_map(|(p, v)| Mutation::SetU16(p, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), bytes(16)).prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..16).prop_map(|(p, n)| Mutation::Remove(p, n)),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    if buf.is_empty() {
        return;
    }
    let n = buf.len();
    match m {
        Mutation::FlipBit(p, b) => buf[p % n] ^= 1 << b,
        Mutation::SetByte(p, v) => buf[p % n] = *v,
        Mutation::SetU16(p, v) => {
            let p = p % n;
            if p + 2 <= n {
                buf[p..p + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
        Mutation::Truncate(p) => buf.truncate(p % n),
        Mutation::Insert(p, b) => {
            let p = p % n;
            buf.splice(p..p, b.iter().copied());
        }
        Mutation::Remove(p, k) => {
            let p = p % n;
            let e = (p + k).min(n);
            buf.drain(p..e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// (a) Random bytes.
    #[test]
    fn random_bytes_never_panic(b in bytes(600)) {
        exercise(&b);
    }

    /// (a') Random bodies behind a plausible header, to get past the
    /// header checks into every body decoder.
    #[test]
    fn random_bodies_never_panic(t in 0u8..=30, xid in any::<u32>(), body in bytes(400), mp in 0u16..=14) {
        let mut b = vec![OFP_VERSION, t, 0, 0];
        b.extend_from_slice(&xid.to_be_bytes());
        if t == msg_type::MULTIPART_REPLY || t == msg_type::MULTIPART_REQUEST {
            b.extend_from_slice(&mp.to_be_bytes());
        }
        b.extend_from_slice(&body);
        let len = b.len().min(65535) as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        exercise(&b);
    }

    /// (b) Mutations of valid messages, with or without repairing the
    /// header length afterwards.
    #[test]
    fn mutations_never_panic(
        pick in any::<prop::sample::Index>(),
        muts in vec(mutation(), 1..4),
        fix_len in any::<bool>(),
    ) {
        let corpus = corpus_cached();
        let mut b = pick.get(corpus).clone();
        for m in &muts {
            apply(&mut b, m);
        }
        if fix_len && b.len() >= 4 && b.len() <= 65535 {
            let len = b.len() as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
        }
        exercise(&b);
    }

    /// (c) Generated messages round-trip: value and bytes.
    #[test]
    fn generated_messages_round_trip(xid in any::<u32>(), body in message()) {
        let msg = OfpMessage::new(xid, body);
        let bytes = msg.to_vec().expect("generated messages fit");
        prop_assert_eq!(check_frame(&bytes), Ok(Some(bytes.len())));
        let back = OfpMessage::decode(&bytes);
        prop_assert_eq!(back.as_ref(), Ok(&msg));
        prop_assert_eq!(back.expect("decoded").to_vec().expect("re-encode"), bytes.clone());
        if let Message::MultipartReply(MultipartReply { body: MultipartReplyBody::Flow(flows), .. }) = &msg.body {
            let via_iter: Vec<FlowStats> = flow_stats_entries(&bytes)
                .expect("flow reply")
                .map(|e| e.and_then(|e| e.to_owned()))
                .collect::<Result<_, _>>()
                .expect("entries");
            prop_assert_eq!(&via_iter, flows);
        }
    }
}

fn corpus_cached() -> &'static Vec<Vec<u8>> {
    static C: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    C.get_or_init(corpus)
}
