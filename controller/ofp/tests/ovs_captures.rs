//! Decodes replies captured from the real Open vSwitch 3.1 of the test bed
//! (`examples/capture.rs` wrote `tests/data/ovs31/*.hex`) and checks the
//! values the capture set up, plus decode -> encode byte-exactness.

use ofp::*;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/ovs31")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex line");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Raw messages of one capture file.
fn raw(kind: &str) -> Vec<Vec<u8>> {
    let path = dir().join(format!("{kind}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(unhex)
        .collect()
}

fn msgs(kind: &str) -> Vec<OfpMessage> {
    raw(kind)
        .iter()
        .map(|b| OfpMessage::decode(b).unwrap_or_else(|e| panic!("{kind}: {e}")))
        .collect()
}

fn one(kind: &str) -> Message {
    let mut v = msgs(kind);
    assert_eq!(v.len(), 1, "{kind}");
    v.remove(0).body
}

fn reply(kind: &str) -> MultipartReplyBody {
    match one(kind) {
        Message::MultipartReply(r) => {
            assert!(!r.more(), "{kind}");
            r.body
        }
        other => panic!("{kind}: {other:?}"),
    }
}

#[test]
fn every_capture_decodes_and_reencodes_byte_exact() {
    let mut files = 0;
    let mut n = 0;
    for entry in std::fs::read_dir(dir()).expect("capture dir") {
        let path = entry.expect("entry").path();
        let kind = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        files += 1;
        for b in raw(&kind) {
            assert_eq!(check_frame(&b), Ok(Some(b.len())), "{kind}");
            let m = OfpMessage::decode(&b).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(
                m.to_vec().expect("encode"),
                b,
                "{kind}: {} not byte-exact",
                m.body.name()
            );
            n += 1;
        }
    }
    assert!(files >= 20 && n >= 30, "only {files} files / {n} messages");
}

#[test]
fn handshake() {
    match one("hello") {
        Message::Hello(h) => {
            assert_eq!(h.version, 4);
            assert_eq!(h.bitmap, Some(vec![0x10]));
            assert!(h.supports(4) && !h.supports(1));
        }
        m => panic!("{m:?}"),
    }
    match one("features_reply") {
        Message::FeaturesReply(f) => {
            assert_eq!(f.datapath_id, 0x0000_5f0f_ca00_0001);
            assert_eq!(f.n_tables, 254);
            assert_eq!(f.auxiliary_id, 0);
            let want =
                capabilities::FLOW_STATS | capabilities::PORT_STATS | capabilities::QUEUE_STATS;
            assert_eq!(f.capabilities & want, want);
        }
        m => panic!("{m:?}"),
    }
    assert_eq!(
        one("get_config_reply"),
        Message::GetConfigReply(SwitchConfig {
            flags: 0,
            miss_send_len: 0xffff
        })
    );
    assert_eq!(
        one("role_reply"),
        Message::RoleReply(RoleMsg {
            role: ControllerRole::Master,
            generation_id: 1
        })
    );
    assert_eq!(
        one("echo_reply"),
        Message::EchoReply(b"shoal-echo".to_vec())
    );
    let barriers = msgs("barrier_reply");
    assert_eq!(barriers.len(), 2);
    assert!(barriers.iter().all(|m| m.body == Message::BarrierReply));
}

#[test]
fn desc() {
    match reply("mp_desc") {
        MultipartReplyBody::Desc(d) => {
            assert_eq!(d.mfr_desc, "Nicira, Inc.");
            assert_eq!(d.hw_desc, "Open vSwitch");
            assert!(d.sw_desc.starts_with("3.1"), "{}", d.sw_desc);
            assert_eq!(d.serial_num, "None");
            assert_eq!(d.dp_desc, "shoal capture bridge");
        }
        b => panic!("{b:?}"),
    }
}

#[test]
fn flows_both_ways() {
    let MultipartReplyBody::Flow(flows) = reply("mp_flow") else {
        panic!("not FLOW")
    };
    let cookies: Vec<u64> = flows.iter().map(|f| f.cookie).collect();
    assert_eq!(cookies, vec![0x11, 0x12, 0x13, 0x99]);
    let f11 = &flows[0];
    assert_eq!(f11.priority, 100);
    assert_eq!(f11.match_.get_in_port(), Some(1));
    assert_eq!(
        f11.match_.get_eth_src(),
        Some("02:00:00:00:00:01".parse().expect("mac"))
    );
    assert_eq!(
        f11.match_.get_eth_dst(),
        Some("02:00:00:00:00:02".parse().expect("mac"))
    );
    assert_eq!(
        f11.instructions,
        vec![Instruction::ApplyActions(vec![Action::Output {
            port: 2,
            max_len: 0
        }])]
    );
    assert_eq!(
        flows[1].instructions,
        vec![Instruction::ApplyActions(vec![
            Action::SetQueue(1),
            Action::Output {
                port: 1,
                max_len: 0
            }
        ])]
    );
    assert_eq!(
        flows[2].match_.fields,
        vec![
            OxmField::EthType(0x0800),
            OxmField::Ipv4Dst {
                addr: [10, 0, 0, 0].into(),
                mask: Some([255, 255, 255, 0].into())
            }
        ]
    );
    assert_eq!(
        flows[2].instructions,
        vec![
            Instruction::Meter(1),
            Instruction::ApplyActions(vec![Action::Output {
                port: 2,
                max_len: 0
            }])
        ]
    );
    assert_eq!(
        flows[3].instructions,
        vec![Instruction::ApplyActions(vec![Action::output(
            port_no::CONTROLLER
        )])]
    );
    assert!(flows[3].match_.fields.is_empty());
    // The zero-copy iterator sees the same entries.
    let bytes = &raw("mp_flow")[0];
    let it = flow_stats_entries(bytes).expect("flow reply");
    assert!(!it.more());
    let refs: Vec<FlowStatsRef<'_>> = it.map(|e| e.expect("entry")).collect();
    assert_eq!(refs.len(), 4);
    for (r, f) in refs.iter().zip(&flows) {
        assert_eq!(r.to_owned().expect("owned"), *f);
        assert_eq!(
            (r.cookie(), r.packet_count(), r.byte_count()),
            (f.cookie, f.packet_count, f.byte_count)
        );
        assert_eq!(
            (r.in_port(), r.eth_src(), r.eth_dst()),
            (
                f.match_.get_in_port(),
                f.match_.get_eth_src(),
                f.match_.get_eth_dst()
            )
        );
    }
    assert_eq!(refs[0].in_port(), Some(1));
    assert_eq!(refs[3].in_port(), None);
    match reply("mp_aggregate") {
        MultipartReplyBody::Aggregate(a) => assert_eq!(a.flow_count, 4),
        b => panic!("{b:?}"),
    }
    match reply("mp_table") {
        MultipartReplyBody::Table(t) => {
            assert_eq!(t.len(), 254);
            assert_eq!(t[0].table_id, 0);
            assert_eq!(t[0].active_count, 4);
            assert_eq!(t[253].table_id, 253);
        }
        b => panic!("{b:?}"),
    }
}

#[test]
fn ports_and_queues() {
    let MultipartReplyBody::PortDesc(ports) = reply("mp_port_desc") else {
        panic!("not PORT_DESC")
    };
    let mut names: Vec<(u32, String)> = ports.iter().map(|p| (p.port_no, p.name.clone())).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            (1, "sofcap0-p1".into()),
            (2, "sofcap0-p2".into()),
            (port_no::LOCAL, "sofcap0".into())
        ]
    );
    // Internal ports that were never set up are down.
    assert!(ports.iter().all(|p| !p.is_up()));
    let MultipartReplyBody::PortStats(stats) = reply("mp_port_stats") else {
        panic!("not PORT_STATS")
    };
    let mut nos: Vec<u32> = stats.iter().map(|s| s.port_no).collect();
    nos.sort();
    assert_eq!(nos, vec![1, 2, port_no::LOCAL]);
    let MultipartReplyBody::Queue(queues) = reply("mp_queue") else {
        panic!("not QUEUE")
    };
    let q: Vec<(u32, u32)> = queues.iter().map(|q| (q.port_no, q.queue_id)).collect();
    assert_eq!(q, vec![(1, 0), (1, 1), (1, 2)]);
    let ps = msgs("port_status");
    assert_eq!(ps.len(), 2);
    for (m, reason) in ps.iter().zip([PortReason::Add, PortReason::Delete]) {
        let Message::PortStatus(s) = &m.body else {
            panic!("{m:?}")
        };
        assert_eq!(s.reason, reason);
        assert_eq!((s.desc.port_no, s.desc.name.as_str()), (3, "sofcap0-p3"));
    }
}

#[test]
fn meters_and_groups() {
    let MultipartReplyBody::Meter(m) = reply("mp_meter") else {
        panic!("not METER")
    };
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].meter_id, 1);
    assert_eq!(m[0].flow_count, 1);
    assert_eq!(m[0].band_stats.len(), 1);
    let MultipartReplyBody::MeterConfig(c) = reply("mp_meter_config") else {
        panic!("not METER_CONFIG")
    };
    assert_eq!(
        c,
        vec![MeterConfig {
            flags: meter_flags::KBPS | meter_flags::BURST | meter_flags::STATS,
            meter_id: 1,
            bands: vec![MeterBand::Drop {
                rate: 30000,
                burst_size: 3000
            }],
        }]
    );
    match reply("mp_meter_features") {
        MultipartReplyBody::MeterFeatures(f) => {
            assert!(f.max_meter > 0);
            assert_eq!(f.band_types, 1 << band_type::DROP);
            assert!(f.max_bands >= 1);
        }
        b => panic!("{b:?}"),
    }
    assert_eq!(reply("mp_group"), MultipartReplyBody::Group(vec![]));
    assert_eq!(
        reply("mp_group_desc"),
        MultipartReplyBody::GroupDesc(vec![])
    );
}

#[test]
fn errors() {
    let e = msgs("error");
    assert_eq!(e.len(), 2);
    let Message::Error(meter) = &e[0].body else {
        panic!("{:?}", e[0])
    };
    assert_eq!(
        meter.kind,
        ErrorKind::MeterModFailed(MeterModFailedCode::MeterExists)
    );
    // The data is the offending METER_MOD.
    match OfpMessage::decode(&meter.data)
        .expect("request in error data")
        .body
    {
        Message::MeterMod(mm) => assert_eq!((mm.command, mm.meter_id), (MeterModCommand::Add, 1)),
        m => panic!("{m:?}"),
    }
    let Message::Error(bad) = &e[1].body else {
        panic!("{:?}", e[1])
    };
    assert_eq!(e[1].xid, 0x42);
    assert_eq!(bad.kind, ErrorKind::BadRequest(BadRequestCode::BadType));
    assert_eq!(bad.data, vec![4, 99, 0, 8, 0, 0, 0, 0x42]);
}

#[test]
fn async_messages() {
    let fr = msgs("flow_removed");
    assert_eq!(fr.len(), 2);
    let Message::FlowRemoved(idle) = &fr[0].body else {
        panic!()
    };
    assert_eq!(
        (idle.cookie, idle.reason, idle.idle_timeout, idle.priority),
        (0xf10e, FlowRemovedReason::IdleTimeout, 1, 10)
    );
    assert_eq!(idle.match_.get_in_port(), Some(2));
    assert!(idle.match_.fields.contains(&OxmField::UdpDst(5353)));
    let Message::FlowRemoved(del) = &fr[1].body else {
        panic!()
    };
    assert_eq!(
        (del.cookie, del.reason),
        (0xde1e, FlowRemovedReason::Delete)
    );

    let pi = msgs("packet_in");
    assert_eq!(pi.len(), 2);
    let Message::PacketIn(a) = &pi[0].body else {
        panic!()
    };
    assert_eq!(a.reason, PacketInReason::Action);
    assert_eq!(a.in_port(), Some(port_no::CONTROLLER));
    assert_eq!(a.buffer_id, NO_BUFFER);
    assert_eq!((a.total_len, a.data.len()), (42, 42));
    assert_eq!(&a.data[..12], &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    let Message::PacketIn(b) = &pi[1].body else {
        panic!()
    };
    assert_eq!(b.cookie, 0x99, "sent by the table-miss entry");
    assert_eq!(b.in_port(), Some(port_no::LOCAL));
    assert_eq!(b.data.get(11), Some(&3));
}

#[test]
fn table_features_reassembly() {
    let parts = raw("mp_table_features");
    assert_eq!(parts.len(), 3);
    let mut asm = MultipartAssembler::new(DEFAULT_MULTIPART_CAP);
    let mut done = None;
    for (i, b) in parts.iter().enumerate() {
        let Message::MultipartReply(r) = OfpMessage::decode(b).expect("decode").body else {
            panic!()
        };
        assert_eq!(r.more(), i < 2, "part {i}");
        let out = asm.push(r, b.len()).expect("push");
        assert_eq!(out.is_some(), i == 2);
        done = out;
    }
    let done = done.expect("complete");
    assert!(!done.more());
    let MultipartReplyBody::TableFeatures(body) = done.body else {
        panic!()
    };
    assert_eq!(
        body.len(),
        parts.iter().map(|p| p.len() - 16).sum::<usize>()
    );
    // Walk the ofp_table_features entries: length u16 at 0, table_id at 2.
    let mut ids = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        assert!(len >= 64 && len <= rest.len(), "entry length {len}");
        ids.push(rest[2]);
        rest = &rest[len..];
    }
    assert_eq!(ids.first(), Some(&0));
    assert_eq!(ids.last(), Some(&253));
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // A cap below the total refuses the stream.
    let mut small = MultipartAssembler::new(parts[0].len() + 10);
    let first = match OfpMessage::decode(&parts[0]).expect("decode").body {
        Message::MultipartReply(r) => r,
        _ => panic!(),
    };
    let second = match OfpMessage::decode(&parts[1]).expect("decode").body {
        Message::MultipartReply(r) => r,
        _ => panic!(),
    };
    assert_eq!(small.push(first, parts[0].len()), Ok(None));
    assert!(matches!(
        small.push(second, parts[1].len()),
        Err(ReassemblyError::TooLarge { .. })
    ));
}
