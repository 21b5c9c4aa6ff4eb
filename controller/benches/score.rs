//! S-CORE at full scale: one complete token iteration (every one of the
//! 40,960 VMs holds the token once) on S-CORE's published setting
//! (2,560 hosts, 128 racks of 20, 16 VMs per host), per token policy.
//! Target: ≤ 1 s per iteration on one core.
//!
//! `cargo bench -p shoal-controller --bench score`
//! (`SHOAL_BENCH_HOSTS=256` for a quick run at reduced scale).

use criterion::{criterion_group, criterion_main, Criterion};
use shoal_controller::analyze::{detect, HotspotConfig};
use shoal_controller::plan::score::{Score, ScoreOptions, TokenPolicy};
use shoal_controller::plan::Policy;
use shoal_controller::sim::engine::first_snapshot;
use shoal_controller::sim::generate::{generate_dc, GenerateOptions};
use std::hint::black_box;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let hosts = std::env::var("SHOAL_BENCH_HOSTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2560);
    let scn = match generate_dc(&GenerateOptions {
        hosts,
        ..Default::default()
    }) {
        Ok(s) => s,
        Err(e) => panic!("generator: {e}"),
    };
    let snap = first_snapshot(&scn);
    let report = detect(&snap, &HotspotConfig::default());
    let mut group = c.benchmark_group(format!("score_iteration_{}vms", scn.vms.len()));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for token in TokenPolicy::ALL {
        let mut policy = Score::new(
            Default::default(),
            ScoreOptions {
                token,
                ..Default::default()
            },
        );
        let moves = policy.plan(&snap, &report).len();
        eprintln!(
            "{}: {moves} migrations in the first iteration",
            token.as_str()
        );
        group.bench_function(token.as_str(), |b| {
            b.iter(|| black_box(policy.plan(black_box(&snap), black_box(&report))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
