//! Monitor hot path: decode FLOW multipart replies (as OVS sends them) and
//! aggregate the pair flows into the traffic matrix λ(u,v).
//!
//! Reports entries/s on one core (criterion throughput) and, before the
//! timed runs, the heap bytes per tracked pair measured with a counting
//! allocator at several matrix sizes.
//!
//! Run: `cargo bench -p shoal-controller --bench traffic_matrix`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ofp::{
    Action, FlowStats, Instruction, MacAddr, Match, Message, MultipartReply, MultipartReplyBody,
    OfpMessage,
};
use shoal_controller::monitor::cookie;
use shoal_controller::monitor::stats::Monitor;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn mac(i: u32, tag: u8) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, tag, b[0], b[1], b[2], b[3]])
}

/// The FLOW multipart reply parts a switch with `n` pair flows sends, each
/// part at most ~64 KB (OVS splits the same way), with byte counters `k`.
fn reply_parts(n: u32, k: u64) -> Vec<Vec<u8>> {
    let per_part = 500u32; // 500 × 128 B entries ≈ 64 KB
    let mut parts = Vec::new();
    let mut i = 0;
    while i < n {
        let end = (i + per_part).min(n);
        let entries = (i..end)
            .map(|j| FlowStats {
                table_id: 0,
                duration_sec: 10,
                duration_nsec: 0,
                priority: 200,
                idle_timeout: 10,
                hard_timeout: 0,
                flags: 1,
                cookie: cookie::make(cookie::KIND_PAIR, u64::from(j) + 1),
                packet_count: k,
                byte_count: k * 1000 + u64::from(j),
                match_: Match::new()
                    .in_port(1 + j % 48)
                    .eth_src(mac(j, 1))
                    .eth_dst(mac(j, 2)),
                instructions: vec![Instruction::ApplyActions(vec![Action::output(49)])],
            })
            .collect();
        let msg = OfpMessage::new(
            7,
            Message::MultipartReply(MultipartReply {
                flags: if end < n { 1 } else { 0 },
                body: MultipartReplyBody::Flow(entries),
            }),
        );
        parts.push(msg.to_vec().expect("encode"));
        i = end;
    }
    parts
}

fn memory_per_pair() {
    for n in [10_000u32, 100_000, 1_000_000] {
        let parts = reply_parts(n, 1);
        let before = LIVE.load(Ordering::Relaxed);
        let mut m = Monitor::new(3, cookie::MIGRATION_VALUE, cookie::MIGRATION_MASK);
        let t = Instant::now();
        m.ingest_flow_stats(1, Instant::now(), &parts)
            .expect("ingest");
        let first = t.elapsed();
        let after = LIVE.load(Ordering::Relaxed);
        assert_eq!(m.matrix.len(), n as usize);
        let per = (after - before) as f64 / f64::from(n);
        println!(
            "traffic_matrix memory: {n} pairs -> {per:.1} bytes/pair (heap, incl. hash table); first ingest {:.1} ns/entry",
            first.as_nanos() as f64 / f64::from(n)
        );
    }
}

fn bench(c: &mut Criterion) {
    memory_per_pair();
    let n = 10_000u32;
    let mut g = c.benchmark_group("traffic_matrix");
    g.throughput(Throughput::Elements(u64::from(n)));
    let mut m = Monitor::new(3, cookie::MIGRATION_VALUE, cookie::MIGRATION_MASK);
    let mut k = 1;
    // Steady state: the same pairs polled again with growing counters.
    let replies: Vec<Vec<Vec<u8>>> = (1..=8).map(|k| reply_parts(n, k)).collect();
    g.bench_function("decode_and_aggregate_10k_pair_flows", |b| {
        b.iter(|| {
            k = (k + 1) % replies.len();
            m.ingest_flow_stats(1, Instant::now(), &replies[k])
                .expect("ingest")
        })
    });
    g.bench_function("rates_10k_pairs", |b| b.iter(|| m.matrix.rates().len()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
