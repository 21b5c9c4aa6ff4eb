//! One switch's answer to a FLOW stats request in `-m stats` mode: its
//! table holds 1,000 first-hop pair flows as Shoal installs them (table 1,
//! priority 200, `in_port` + `eth_src` + `eth_dst`, output to the
//! destination's port, idle timeout 10 s, `SEND_FLOW_REM`, a cookie each)
//! with their configured rates; the bench measures the whole path from the
//! request's bytes to the reply's: decode, [`Switch::handle`], the reply
//! written as on the wire (5 parts of at most 200 entries).
//!
//! `cargo bench -p ofswarm --bench flow_stats`; the time per entry is the
//! time per iteration / 1,000 (criterion also prints entries/s).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ofp::{
    flow_mod_flags, Action, FlowMod, FlowStatsRequest, Instruction, Match, Message,
    MultipartRequest, MultipartRequestBody, OfpMessage,
};
use ofswarm::switch::{write_messages, Switch};
use ofswarm::topo::{TopoSpec, Topology};
use ofswarm::traffic::{pair_rate, plan};

const FLOWS: usize = 1000;

/// A switch of `grid:1x33` with `FLOWS` pair flows carrying their rates.
fn switch() -> Switch {
    let t0 = Instant::now();
    let topo = Topology::build(TopoSpec::Grid(1, 33), 33, 1);
    let mut sw = Switch::new(0, &topo.switches[0], t0);
    let local = topo.hosts_of(0);
    let pairs = plan(&local, &local, FLOWS);
    assert_eq!(pairs.len(), FLOWS);
    for (k, (src, dst)) in pairs.iter().enumerate() {
        let fm = FlowMod {
            table_id: 1,
            priority: 200,
            cookie: 0x0001_0000_0000_0000 | k as u64,
            idle_timeout: 10,
            flags: flow_mod_flags::SEND_FLOW_REM,
            match_: Match::new()
                .in_port(src.port)
                .eth_src(src.mac)
                .eth_dst(dst.mac),
            instructions: vec![Instruction::ApplyActions(vec![Action::output(dst.port)])],
            ..FlowMod::default()
        };
        let r = sw.handle(OfpMessage::new(1, Message::FlowMod(fm.clone())), &[], t0);
        assert!(r.is_empty());
        assert!(sw.table.set_rate(
            fm.table_id,
            fm.priority,
            &fm.match_,
            pair_rate(src.mac, dst.mac),
            t0
        ));
    }
    assert_eq!(sw.table.len(), FLOWS);
    sw
}

fn bench(c: &mut Criterion) {
    let mut sw = switch();
    let req = OfpMessage::new(
        7,
        Message::MultipartRequest(MultipartRequest::new(MultipartRequestBody::Flow(
            FlowStatsRequest::default(),
        ))),
    )
    .to_vec()
    .expect("request");
    let mut wbuf = Vec::with_capacity(256 * 1024);
    // The reply: 5 parts of 200 entries.
    let msg = OfpMessage::decode(&req).expect("decodes");
    write_messages(&sw.handle(msg, &req, Instant::now()), &mut wbuf);
    let (mut off, mut entries, mut parts) = (0, 0, 0);
    while let Ok(Some(len)) = ofp::check_frame(&wbuf[off..]) {
        let m = OfpMessage::decode(&wbuf[off..off + len]).expect("reply decodes");
        if let Message::MultipartReply(ofp::MultipartReply {
            body: ofp::MultipartReplyBody::Flow(v),
            ..
        }) = m.body
        {
            entries += v.len();
        }
        parts += 1;
        off += len;
    }
    assert_eq!((parts, entries, off), (5, FLOWS, wbuf.len()));
    let mut g = c.benchmark_group("flow_stats");
    g.throughput(Throughput::Elements(FLOWS as u64));
    g.bench_function("reply_1000_entries", |b| {
        b.iter(|| {
            wbuf.clear();
            let msg = OfpMessage::decode(black_box(&req)).expect("decodes");
            let effects = sw.handle(msg, &req, Instant::now());
            write_messages(&effects, &mut wbuf);
            black_box(wbuf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
