//! The live round's CPU work at 10,000 VMs without the API or the network:
//! a host registry filled by hostswarm's generator (640 hosts, 10,000 VMs,
//! 60 reports each, as `bench/liveloop.sh` makes them), then
//! - `snapshot`: [`build_snapshot`] from the registry (what each round
//!   reads under the registry's read lock);
//! - `analyze_plan`: hotspot detection and Sandpiper's plan on it;
//! - `report`: one host report applied to the registry (the write a report
//!   request makes).
//!
//! `cargo bench -p hostswarm --bench round`. The end-to-end numbers (round
//! wall time, report latency under 1,000 reports/s) are
//! `bench/liveloop.sh`'s.

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion};
use hostswarm::gen::{Dc, DcSpec};
use shoal_controller::analyze::{detect, HotspotConfig};
use shoal_controller::knowledge::groups::Groups;
use shoal_controller::knowledge::live::{build_snapshot, LiveInputs};
use shoal_controller::monitor::hosts::HostRegistry;
use shoal_controller::monitor::topology::Topology;
use shoal_controller::plan::{build_policy, PolicyOptions};

const HOSTS: usize = 640;
const VMS: usize = 10_000;
const REPORTS: u64 = 60;
const INTERVAL_MS: u64 = 640;

fn registry(dc: &Dc) -> HostRegistry {
    let mut r = HostRegistry::new(REPORTS as usize);
    for i in 0..dc.hosts.len() {
        let (Some(reg), id) = (dc.registration(i), &dc.hosts[i].id) else {
            continue;
        };
        r.register(id, reg, 0).expect("generated registration");
    }
    for seq in 1..=REPORTS {
        for i in 0..dc.hosts.len() {
            let at = 1_000_000 + seq * INTERVAL_MS;
            if let Some(rep) = dc.report(i, seq, at) {
                r.report(&dc.hosts[i].id, rep, at as i64)
                    .expect("generated report");
            }
        }
    }
    r
}

fn bench(c: &mut Criterion) {
    let dc = Dc::new(DcSpec {
        hosts: HOSTS,
        vms: VMS,
        seed: 1,
        interval_s: INTERVAL_MS as f64 / 1000.0,
        hot_fraction: 0.1,
    });
    let mut reg = registry(&dc);
    let topo = Topology::new();
    let groups = Groups::default();
    let hypervisors = BTreeMap::new();
    let inputs = |hosts| LiveInputs {
        start_unix_ms: 1_000_000,
        now_unix_ms: 1_000_000 + (REPORTS + 1) as i64 * INTERVAL_MS as i64,
        ..LiveInputs::new(hosts, &topo, &hypervisors, &[], &groups)
    };
    let mut g = c.benchmark_group("live_round_10k_vms");
    g.sample_size(20);
    g.bench_function("snapshot", |b| {
        b.iter(|| build_snapshot(&inputs(&reg)).vms.len())
    });
    let snap = build_snapshot(&inputs(&reg));
    assert_eq!(snap.vms.len(), VMS, "every VM in the snapshot");
    let cfg = HotspotConfig::default();
    let mut policy = build_policy("sandpiper", &PolicyOptions::default()).expect("sandpiper");
    g.bench_function("analyze_plan", |b| {
        b.iter(|| {
            let report = detect(&snap, &cfg);
            policy.plan(&snap, &report).len()
        })
    });
    let mut seq = REPORTS;
    g.bench_function("report", |b| {
        b.iter(|| {
            seq += 1;
            let at = 1_000_000 + seq * INTERVAL_MS;
            let rep = dc.report(0, seq, at).expect("host 0");
            reg.report(&dc.hosts[0].id, rep, at as i64).map(|e| e.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
