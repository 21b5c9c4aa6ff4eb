//! Round trips: encode -> decode gives the same value, decode -> encode
//! gives the same bytes, for every sample message type.

mod common;

use common::*;
use ofp::*;

#[test]
fn every_sample_round_trips() {
    for (name, msg) in all_messages() {
        let bytes = msg
            .to_vec()
            .unwrap_or_else(|e| panic!("{name}: encode: {e}"));
        assert_eq!(check_frame(&bytes), Ok(Some(bytes.len())), "{name}");
        let h = Header::parse(&bytes).expect("header");
        assert_eq!(usize::from(h.length), bytes.len(), "{name}: length field");
        assert_eq!(h.msg_type, msg.body.msg_type(), "{name}");
        assert_eq!(h.xid, msg.xid, "{name}");
        let back = OfpMessage::decode(&bytes).unwrap_or_else(|e| panic!("{name}: decode: {e}"));
        assert_eq!(back, msg, "{name}");
        assert_eq!(
            back.to_vec().expect("re-encode"),
            bytes,
            "{name}: byte-exact"
        );
    }
}

#[test]
fn every_message_variant_is_sampled() {
    let types: std::collections::BTreeSet<u8> = all_messages()
        .iter()
        .map(|(_, m)| m.body.msg_type())
        .collect();
    for t in 0u8..=29 {
        if [
            msg_type::TABLE_MOD,
            msg_type::QUEUE_GET_CONFIG_REQUEST,
            msg_type::QUEUE_GET_CONFIG_REPLY,
        ]
        .contains(&t)
            || (26..=28).contains(&t)
        {
            continue; // kept raw like PORT_MOD, which is sampled
        }
        assert!(types.contains(&t), "no sample of {}", msg_type::name(t));
    }
}

#[test]
fn encoded_lengths_and_padding() {
    // FLOW_MOD: header 8 + fixed 40 + match padded to 8 + instructions.
    let fm = rich_flow_mod();
    let bytes = OfpMessage::new(1, Message::FlowMod(fm.clone()))
        .to_vec()
        .expect("encode");
    assert_eq!(bytes.len() % 8, 0);
    let match_len = u16::from_be_bytes([bytes[50], bytes[51]]) as usize;
    assert_eq!(
        match_len,
        4 + fm
            .match_
            .fields
            .iter()
            .map(OxmField::wire_len)
            .sum::<usize>()
    );
    assert_eq!(fm.match_.wire_len() % 8, 0);
    assert_eq!(
        bytes.len(),
        48 + fm.match_.wire_len()
            + fm.instructions
                .iter()
                .map(Instruction::wire_len)
                .sum::<usize>()
    );
    // Every action and instruction is 8-aligned.
    for i in &fm.instructions {
        assert_eq!(i.wire_len() % 8, 0, "{i:?}");
    }
    // set_field(vlan_vid) = 4 + 6 -> padded to 16.
    let sf = Action::SetField(OxmField::VlanVid {
        vid: 0x1001,
        mask: None,
    });
    let mut out = Vec::new();
    sf.encode(&mut out).expect("encode");
    assert_eq!(
        out,
        vec![0, 25, 0, 16, 0x80, 0, 12, 2, 0x10, 0x01, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn hello_of13_bytes_and_negotiation() {
    let bytes = OfpMessage::new(1, Message::Hello(Hello::of13()))
        .to_vec()
        .expect("encode");
    assert_eq!(
        bytes,
        vec![4, 0, 0, 16, 0, 0, 0, 1, 0, 1, 0, 8, 0, 0, 0, 0x10]
    );
    let h = Hello::of13();
    assert!(h.supports(4));
    assert!(!h.supports(1) && !h.supports(5) && !h.supports(200));
    let old = Hello {
        version: 1,
        bitmap: None,
        other_elements: vec![],
    };
    assert!(old.supports(1) && !old.supports(4));
    let newer = Hello {
        version: 6,
        bitmap: None,
        other_elements: vec![],
    };
    assert!(newer.supports(4));
    // A 1.0 hello is decoded (so the caller can refuse it), anything else
    // of version 1 is refused.
    let of10_hello = [1u8, 0, 0, 8, 0, 0, 0, 9];
    let m = OfpMessage::decode(&of10_hello).expect("hello of any version");
    assert_eq!(
        m.body,
        Message::Hello(Hello {
            version: 1,
            bitmap: None,
            other_elements: vec![]
        })
    );
    let of10_echo = [1u8, 2, 0, 8, 0, 0, 0, 9];
    assert_eq!(
        OfpMessage::decode(&of10_echo),
        Err(DecodeError::BadVersion(1))
    );
}

#[test]
fn check_frame_cases() {
    let bytes = OfpMessage::new(1, Message::EchoRequest(vec![1, 2, 3]))
        .to_vec()
        .expect("encode");
    assert_eq!(check_frame(&[]), Ok(None));
    assert_eq!(check_frame(&bytes[..3]), Ok(None));
    assert_eq!(check_frame(&bytes[..10]), Ok(None));
    assert_eq!(check_frame(&bytes), Ok(Some(11)));
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    assert_eq!(check_frame(&two), Ok(Some(11)));
    assert!(matches!(
        check_frame(&[4, 0, 0, 7]),
        Err(DecodeError::BadLength { len: 7, .. })
    ));
    // decode wants exactly one message.
    assert!(matches!(
        OfpMessage::decode(&two),
        Err(DecodeError::TrailingBytes { .. })
    ));
    assert!(matches!(
        OfpMessage::decode(&bytes[..10]),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn accessors() {
    let pi = PacketIn {
        buffer_id: NO_BUFFER,
        total_len: 0,
        reason: PacketInReason::Action,
        table_id: 0,
        cookie: 0,
        match_: Match::new().in_port(7),
        data: vec![],
    };
    assert_eq!(pi.in_port(), Some(7));
    let m = rich_match();
    assert_eq!(m.get_in_port(), Some(1));
    assert_eq!(m.get_eth_src(), Some(mac("02:00:00:00:00:01")));
    assert_eq!(m.get_eth_dst(), None, "masked eth_dst is not exact");
    assert_eq!(m.get_eth_type(), Some(0x0800));
    assert_eq!(m.get_ipv4_src(), None);
    assert_eq!(m.get_ipv4_dst(), Some(std::net::Ipv4Addr::new(10, 0, 1, 2)));
    assert_eq!(
        Action::output(port_no::CONTROLLER),
        Action::Output {
            port: port_no::CONTROLLER,
            max_len: 0xffff
        }
    );
    assert_eq!(
        Action::output(3),
        Action::Output {
            port: 3,
            max_len: 0
        }
    );
    let mut p = port_desc(1, "x");
    assert!(p.is_up());
    p.config |= port_config::PORT_DOWN;
    assert!(!p.is_up());
    p.config = 0;
    p.state = port_state::LINK_DOWN;
    assert!(!p.is_up());
    assert_eq!(Message::BarrierRequest.name(), "OFPT_BARRIER_REQUEST");
    assert_eq!(
        Message::Other {
            msg_type: 200,
            body: vec![]
        }
        .name(),
        "OFPT_UNKNOWN"
    );
}

#[test]
fn flow_stats_entries_matches_full_decode() {
    let msg = OfpMessage::new(
        3,
        Message::MultipartReply(MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Flow((1..=20).map(flow_stats).collect()),
        }),
    );
    let bytes = msg.to_vec().expect("encode");
    let it = flow_stats_entries(&bytes).expect("header");
    assert!(!it.more());
    let mut n = 0;
    for (i, e) in it.enumerate() {
        let e = e.expect("entry");
        let want = flow_stats(i as u32 + 1);
        assert_eq!(e.cookie(), want.cookie);
        assert_eq!(e.packet_count(), want.packet_count);
        assert_eq!(e.byte_count(), want.byte_count);
        assert_eq!(e.table_id(), want.table_id);
        assert_eq!(e.priority(), want.priority);
        assert_eq!(e.duration_sec(), want.duration_sec);
        assert_eq!(e.duration_nsec(), want.duration_nsec);
        assert_eq!(e.idle_timeout(), want.idle_timeout);
        assert_eq!(e.hard_timeout(), want.hard_timeout);
        assert_eq!(e.flags(), want.flags);
        assert_eq!(e.in_port(), want.match_.get_in_port());
        assert_eq!(e.eth_src(), want.match_.get_eth_src());
        assert_eq!(e.eth_dst(), want.match_.get_eth_dst());
        assert_eq!(e.to_owned().expect("owned"), want);
        n += 1;
    }
    assert_eq!(n, 20);
    // Wrong message or multipart type.
    let port = OfpMessage::new(1, mpreq(MultipartRequestBody::Desc))
        .to_vec()
        .expect("encode");
    assert!(matches!(
        flow_stats_entries(&port),
        Err(DecodeError::BadType { .. })
    ));
    let agg = OfpMessage::new(
        1,
        Message::MultipartReply(MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Aggregate(AggregateStats::default()),
        }),
    )
    .to_vec()
    .expect("encode");
    assert!(matches!(
        flow_stats_entries(&agg),
        Err(DecodeError::BadType { .. })
    ));
    // Masked eth fields are not reported.
    let rich = OfpMessage::new(
        1,
        Message::MultipartReply(MultipartReply {
            flags: 1,
            body: MultipartReplyBody::Flow(vec![FlowStats {
                match_: rich_match(),
                ..flow_stats(1)
            }]),
        }),
    )
    .to_vec()
    .expect("encode");
    let it = flow_stats_entries(&rich).expect("ok");
    assert!(it.more());
    let e = it.into_iter().next().expect("one").expect("ok");
    assert_eq!(e.eth_dst(), None);
    assert_eq!(e.eth_src(), Some(mac("02:00:00:00:00:01")));
    // A corrupt entry length ends the iteration with an error.
    let mut bad = bytes.clone();
    bad[16] = 0;
    bad[17] = 8;
    let mut it = flow_stats_entries(&bad).expect("header ok");
    assert!(matches!(
        it.next(),
        Some(Err(DecodeError::BadLength { .. }))
    ));
    assert!(it.next().is_none());
}

fn reply(flags: u16, body: MultipartReplyBody) -> MultipartReply {
    MultipartReply { flags, body }
}

#[test]
fn assembler_concatenates_and_checks() {
    use MultipartReplyBody as B;
    let mut a = MultipartAssembler::new(1 << 20);
    assert_eq!(
        a.push(reply(1, B::Flow(vec![flow_stats(1)])), 100),
        Ok(None)
    );
    assert!(a.in_progress());
    assert_eq!(
        a.push(reply(1, B::Flow(vec![flow_stats(2), flow_stats(3)])), 100),
        Ok(None)
    );
    let done = a
        .push(reply(0, B::Flow(vec![flow_stats(4)])), 100)
        .expect("ok")
        .expect("complete");
    assert_eq!(done, reply(0, B::Flow((1..=4).map(flow_stats).collect())));
    assert!(!a.in_progress());
    // A single part passes straight through.
    let d = reply(0, B::Desc(DescStats::default()));
    assert_eq!(a.push(d.clone(), 1000), Ok(Some(d.clone())));
    // Type change mid-stream.
    assert_eq!(a.push(reply(1, B::PortDesc(vec![])), 10), Ok(None));
    assert_eq!(
        a.push(reply(0, B::PortStats(vec![])), 10),
        Err(ReassemblyError::TypeMismatch { first: 13, got: 4 })
    );
    assert!(!a.in_progress(), "reset after error");
    // Non-concatenable types.
    assert_eq!(
        a.push(reply(1, B::Desc(DescStats::default())), 10),
        Ok(None)
    );
    assert_eq!(
        a.push(reply(1, B::Desc(DescStats::default())), 10),
        Err(ReassemblyError::NotConcatenable { mp_type: 0 })
    );
    // Cap.
    let mut small = MultipartAssembler::new(250);
    assert_eq!(
        small.push(reply(1, B::TableFeatures(vec![1; 8])), 200),
        Ok(None)
    );
    assert_eq!(
        small.push(reply(0, B::TableFeatures(vec![2; 8])), 100),
        Err(ReassemblyError::TooLarge {
            total: 300,
            cap: 250
        })
    );
    // Raw table features are concatenated byte-wise.
    assert_eq!(
        small.push(reply(1, B::TableFeatures(vec![1; 8])), 100),
        Ok(None)
    );
    assert_eq!(
        small.push(reply(0, B::TableFeatures(vec![2; 8])), 100),
        Ok(Some(reply(
            0,
            B::TableFeatures([vec![1; 8], vec![2; 8]].concat())
        )))
    );
}

#[test]
fn encode_errors() {
    let big = OfpMessage::new(1, Message::EchoRequest(vec![0; 70_000]));
    let mut out = vec![9];
    assert_eq!(
        big.encode(&mut out),
        Err(EncodeError::TooLong { len: 70_008 })
    );
    assert_eq!(out, vec![9], "nothing appended on error");
    let raw = Action::Raw {
        action_type: 99,
        payload: vec![0; 3],
    };
    assert!(matches!(
        raw.encode(&mut Vec::new()),
        Err(EncodeError::Misaligned { .. })
    ));
    let oxm = OxmField::Raw {
        class: 0xffff,
        field: 1,
        hasmask: false,
        payload: vec![0; 300],
    };
    assert!(matches!(
        oxm.encode(&mut Vec::new()),
        Err(EncodeError::FieldTooLong { .. })
    ));
    let mut p = port_desc(1, "a-port-name-that-is-too-long");
    assert!(matches!(
        p.encode(&mut Vec::new()),
        Err(EncodeError::FieldTooLong { .. })
    ));
    p.name = "sixteen-chars-ok".into();
    assert!(p.encode(&mut Vec::new()).is_ok());
}

#[test]
fn unknown_and_odd_structures_are_kept_raw() {
    // Known OXM field with an unexpected mask or length, and an
    // experimenter OXM, survive byte-exact.
    let m = Match::new()
        .with(OxmField::Raw {
            class: 0x8000,
            field: 0,
            hasmask: true,
            payload: vec![0, 0, 0, 1, 0, 0, 0, 0xff],
        })
        .with(OxmField::Raw {
            class: 0x8000,
            field: 5,
            hasmask: false,
            payload: vec![8],
        })
        .with(OxmField::Raw {
            class: 0xffff,
            field: 3,
            hasmask: false,
            payload: vec![0, 0, 0x23, 0x20, 1, 2],
        })
        .with(OxmField::Raw {
            class: 0x0001,
            field: 0,
            hasmask: false,
            payload: vec![0, 0, 0, 5],
        });
    let fm = FlowMod {
        match_: m,
        instructions: vec![
            Instruction::Raw {
                instr_type: 0xffff,
                payload: vec![0, 0, 0x23, 0x20],
            },
            Instruction::ApplyActions(vec![
                Action::Raw {
                    action_type: 0xffff,
                    payload: vec![0, 0, 0x23, 0x20, 0, 1, 0, 0, 0, 0, 0, 0],
                },
                Action::Raw {
                    action_type: 11,
                    payload: vec![0; 4],
                },
            ]),
        ],
        ..FlowMod::default()
    };
    let msg = OfpMessage::new(1, Message::FlowMod(fm));
    let bytes = msg.to_vec().expect("encode");
    let back = OfpMessage::decode(&bytes).expect("decode");
    assert_eq!(back, msg);
    assert_eq!(back.to_vec().expect("encode"), bytes);
    // An OUTPUT action of the wrong length decodes as raw.
    let odd = [0u8, 0, 0, 8, 0, 0, 0, 1];
    let (a, n) = Action::decode(&odd).expect("decode");
    assert_eq!(
        (a, n),
        (
            Action::Raw {
                action_type: 0,
                payload: vec![0, 0, 0, 1]
            },
            8
        )
    );
}

#[test]
fn nested_lengths_are_checked() {
    // Action length past its container.
    assert!(matches!(
        decode_actions(&[0, 0, 0, 16, 0, 0, 0, 1]),
        Err(DecodeError::Truncated { .. })
    ));
    // Action length not a multiple of 8 or below 8.
    assert!(matches!(
        decode_actions(&[0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0]),
        Err(DecodeError::BadLength { .. })
    ));
    assert!(matches!(
        decode_actions(&[0, 0, 0, 0, 0, 0, 0, 0]),
        Err(DecodeError::BadLength { .. })
    ));
    // Instruction whose action list overruns the instruction.
    let i = [
        0u8, 4, 0, 16, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert!(decode_instructions(&i).is_err());
    // OXM whose length overruns the match length.
    let m = [0u8, 1, 0, 8, 0x80, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0];
    assert!(matches!(
        Match::decode(&m),
        Err(DecodeError::Truncated { .. })
    ));
    // Match of non-OXM type.
    assert!(matches!(
        Match::decode(&[0, 0, 0, 4, 0, 0, 0, 0]),
        Err(DecodeError::BadType { .. })
    ));
}

#[test]
fn malformed_hello_elements_still_decode() {
    // Element length 2 (< 4), then garbage: HELLO still decodes (raw) and
    // re-encodes byte-exact; the version is what negotiation needs.
    let b = [
        6u8, 0, 0, 16, 0, 0, 0, 1, 0, 1, 0, 2, 0xde, 0xad, 0xbe, 0xef,
    ];
    let m = OfpMessage::decode(&b).expect("hello");
    let Message::Hello(h) = &m.body else {
        panic!("{m:?}")
    };
    assert_eq!((h.version, h.bitmap.as_ref()), (6, None));
    assert_eq!(h.other_elements, b[8..].to_vec());
    assert_eq!(m.to_vec().expect("encode"), b.to_vec());
    // An element running past the end.
    let b = [4u8, 0, 0, 16, 0, 0, 0, 1, 0, 1, 0, 12, 0, 0, 0, 0x10];
    let m = OfpMessage::decode(&b).expect("hello");
    assert_eq!(m.to_vec().expect("encode"), b.to_vec());
}
