//! Decoding a realistic FLOW multipart reply of 500 entries (match
//! in_port + eth_src + eth_dst, one apply-actions output), fully with
//! `OfpMessage::decode` and zero-copy with `flow_stats_entries`.
//!
//! `cargo bench -p ofp --bench decode` (entries/s = "thrpt" in elem/s).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ofp::*;

const ENTRIES: u32 = 500;

fn reply() -> Vec<u8> {
    let flows = (0..ENTRIES)
        .map(|i| FlowStats {
            table_id: 0,
            duration_sec: 100 + i,
            duration_nsec: 1234,
            priority: 100,
            idle_timeout: 60,
            hard_timeout: 0,
            flags: flow_mod_flags::SEND_FLOW_REM,
            cookie: 0x5000_0000_0000_0000 | u64::from(i),
            packet_count: 1000 + u64::from(i),
            byte_count: 1_500_000 + u64::from(i),
            match_: Match::new()
                .in_port(i % 48 + 1)
                .eth_src(MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]))
                .eth_dst(MacAddr([2, 0, 0, 1, (i >> 8) as u8, i as u8])),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(
                (i + 1) % 48 + 1,
            )])],
        })
        .collect();
    OfpMessage::new(
        1,
        Message::MultipartReply(MultipartReply {
            flags: 0,
            body: MultipartReplyBody::Flow(flows),
        }),
    )
    .to_vec()
    .expect("500 entries fit one message")
}

fn bench(c: &mut Criterion) {
    let bytes = reply();
    let mut g = c.benchmark_group("flow_reply_500");
    g.throughput(Throughput::Elements(u64::from(ENTRIES)));
    g.bench_function("OfpMessage::decode", |b| {
        b.iter(|| {
            let m = OfpMessage::decode(black_box(&bytes)).expect("decode");
            let Message::MultipartReply(MultipartReply {
                body: MultipartReplyBody::Flow(f),
                ..
            }) = m.body
            else {
                panic!("not a flow reply")
            };
            f.iter().map(|e| e.byte_count).sum::<u64>()
        })
    });
    g.bench_function("flow_stats_entries", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for e in flow_stats_entries(black_box(&bytes)).expect("flow reply") {
                let e = e.expect("entry");
                sum = sum
                    .wrapping_add(e.cookie())
                    .wrapping_add(e.packet_count())
                    .wrapping_add(e.byte_count())
                    .wrapping_add(u64::from(e.in_port().unwrap_or(0)))
                    .wrapping_add(u64::from(e.eth_src().map_or(0, |m| m.0[5])))
                    .wrapping_add(u64::from(e.eth_dst().map_or(0, |m| m.0[5])));
            }
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
