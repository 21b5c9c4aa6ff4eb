//! The failover benchmark (not part of the test suite: `#[ignore]`; run by
//! `bench/failover.sh`): a 3-member etcd cluster, three Shoal nodes and five
//! switches (`tests/support/cluster.rs`); the leader is killed with SIGKILL
//! `SHOAL_FAILOVER_ROUNDS` times (default 10), each time restarted once the
//! survivors took over and waited for until it rejoined. For every kill it
//! measures, from the kill:
//!
//! - **leader**: a survivor reports a new leader (`GET /api/v1/cluster`);
//! - **mastered**: every switch has a live master that the switch granted
//!   MASTER under the assigned generation (the nodes' `granted_here`).
//!
//! `failover_during_migration_benchmark` kills the leader as often during
//! a reserved migration and measures the time to the migration resumed by
//! the new leader.
//!
//! Both print one line per kill and a summary (median, max) as Markdown on
//! stdout, which `bench/failover.sh` writes to `bench/results/failover.md`.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::cluster::*;
use support::etcd::EtcdCluster;
use support::{e2e_lock, is_root, wait_for, TempDir};

/// Kills per benchmark: `SHOAL_FAILOVER_ROUNDS`, default 10.
fn rounds() -> usize {
    std::env::var("SHOAL_FAILOVER_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: run bench/failover.sh"]
fn failover_benchmark() {
    assert!(is_root(), "needs root");
    let _lock = e2e_lock().unwrap();
    let rounds = rounds();
    let net = build("shfo", 33);
    let etcd = EtcdCluster::start(3).expect("etcd cluster");
    let dir = TempDir::new("shoal-failover").unwrap();
    support::creds::write_secret(
        &dir.path().join("lldp.key"),
        "failover-lldp-secret-0123456789abcdef",
    )
    .unwrap();
    let auth = support::creds::controller_auth(dir.path(), &[]).unwrap();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| start_node(dir.path(), &net, &etcd, &auth, i))
        .collect();
    connect_all(&net, &nodes);
    let all: BTreeSet<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let settled = |nodes: &[Node]| {
        wait_for(
            "all three nodes masters, balanced",
            Duration::from_secs(30),
            || {
                let v = view(&nodes[0])?;
                let m = masters(&v);
                let balanced = all
                    .iter()
                    .all(|id| (1..=2).contains(&m.values().filter(|n| *n == id).count()));
                (balanced && all_granted(nodes, &v, &all)).then_some(v)
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", view(&nodes[0])))
    };
    let mut v = settled(&nodes);
    let (mut t_leader, mut t_mastered) = (Vec::new(), Vec::new());
    // (libtest prints "test NAME ... " without a newline before this.)
    println!();
    println!("| kill | node | new leader (s) | every switch mastered (s) |");
    println!("|---|---|---|---|");
    for round in 1..=rounds {
        let leader = leader_of(&v).expect("a leader");
        let li = nodes.iter().position(|n| n.id == leader).unwrap();
        let survivors: BTreeSet<String> = all.iter().filter(|n| **n != leader).cloned().collect();
        let other = nodes.iter().position(|n| n.id != leader).unwrap();
        let t0 = Instant::now();
        if let Some(mut c) = nodes[li].child.take() {
            c.signal("KILL").unwrap();
            c.wait();
        }
        let mut tl = None;
        let tm = loop {
            let el = t0.elapsed();
            if let Some(w) = view(&nodes[other]) {
                if tl.is_none() && leader_of(&w).is_some_and(|l| survivors.contains(&l)) {
                    tl = Some(el);
                }
                if tl.is_some() && all_granted(&nodes, &w, &survivors) {
                    break el;
                }
            }
            assert!(el < Duration::from_secs(20), "no failover within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        let tl = tl.unwrap_or(tm).as_secs_f64();
        let tm = tm.as_secs_f64();
        println!("| {round} | {leader} | {tl:.2} | {tm:.2} |");
        t_leader.push(tl);
        t_mastered.push(tm);
        spawn_node(&mut nodes[li]);
        v = settled(&nodes);
    }
    let (ml, mm) = (median(&mut t_leader), median(&mut t_mastered));
    let xl = t_leader.iter().copied().fold(0.0, f64::max);
    let xm = t_mastered.iter().copied().fold(0.0, f64::max);
    println!();
    println!("| {rounds} leader kills (lease TTL 2 s) | median | max |");
    println!("|---|---|---|");
    println!("| to a new leader | {ml:.2} s | {xl:.2} s |");
    println!("| to every switch mastered | {mm:.2} s | {xm:.2} s |");
    drop(nodes);
}

/// The same kills during a reserved migration ([`MigBed`]: three nodes,
/// three switches): vm1 moves back and forth with reserved bandwidth and
/// the leader is killed one second into each transfer. Measured from the
/// kill: a new leader, and the migration resumed (the new leader's record
/// of it advances). Each migration must end where the VM runs, with no
/// reservation left; the killed node is restarted before the next round.
#[test]
#[ignore = "benchmark: run bench/failover.sh"]
fn failover_during_migration_benchmark() {
    use support::migration::{consistent, reservations_on, running_at, wait_state};
    assert!(is_root(), "needs root");
    let _lock = e2e_lock().unwrap();
    let rounds = rounds();
    let mut bed = mig_bed();
    let (mut t_leader, mut t_resumed) = (Vec::new(), Vec::new());
    println!();
    println!("| kill during a migration | node | new leader (s) | migration resumed (s) | ended |");
    println!("|---|---|---|---|---|");
    for round in 1..=rounds {
        let at = {
            let hostds = [("h1", &bed.hostds[0]), ("h2", &bed.hostds[1])];
            running_at(MIG_VM, &hostds)
        };
        assert_eq!(at.len(), 1, "vm1 runs at {at:?}");
        let (from, to) = if at[0] == "h1" {
            ("h1", "h2")
        } else {
            ("h2", "h1")
        };
        let k = kill_leader_mid_migration(&mut bed, to);
        let fin = wait_state(
            &k.new_leader.1,
            &k.id,
            &["done", "failed"],
            Duration::from_secs(60),
        );
        {
            let hostds = [("h1", &bed.hostds[0]), ("h2", &bed.hostds[1])];
            consistent(&fin, MIG_VM, from, to, &hostds);
        }
        wait_for("no reservation left", Duration::from_secs(30), || {
            bed.bridges
                .iter()
                .all(|b| reservations_on(b) == (0, 0))
                .then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}: {:?}", installed(&bed.bridges)));
        let (tl, tr) = (k.t_leader.as_secs_f64(), k.t_resumed.as_secs_f64());
        println!(
            "| {round} | {} | {tl:.2} | {tr:.2} | {} |",
            bed.nodes[k.killed].id,
            fin["state"].as_str().unwrap_or("?")
        );
        t_leader.push(tl);
        t_resumed.push(tr);
        spawn_node(&mut bed.nodes[k.killed]);
        let all: BTreeSet<String> = bed.nodes.iter().map(|n| n.id.clone()).collect();
        mig_settled(&bed.nodes, &all);
    }
    let (ml, mr) = (median(&mut t_leader), median(&mut t_resumed));
    let xl = t_leader.iter().copied().fold(0.0, f64::max);
    let xr = t_resumed.iter().copied().fold(0.0, f64::max);
    println!();
    println!("| {rounds} leader kills during a reserved migration | median | max |");
    println!("|---|---|---|");
    println!("| to a new leader | {ml:.2} s | {xl:.2} s |");
    println!("| to the migration resumed by the new leader | {mr:.2} s | {xr:.2} s |");
}
