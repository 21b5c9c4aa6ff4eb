//! One behavioural test suite for every [`Store`] backend.
//!
//! Each behaviour is a function of a way to open an empty store; the
//! `suite!` macro makes one `#[test]` of it per backend:
//! `store_suite::sqlite::<behaviour>` ([`SqliteStore::open_in_memory`]) and
//! `store_suite::etcd::<behaviour>` ([`EtcdStore`] on a real etcd started
//! by the tests, each store under a key prefix of its own).

use serde_json::{json, Value};

use super::etcd_store::test_etcd;
use super::etcd_store::EtcdStore;
use super::history::{AuditQuery, DecisionQuery, MigrationQuery, MAX_LIMIT};
use super::store::{DecisionRow, Retention, SqliteStore, Store, StoreExt, TableLimit};

/// Opens an empty store (a fresh one on every call).
type Open<'a> = &'a dyn Fn() -> Box<dyn Store>;

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let open = || -> Box<dyn super::Store> {
                        Box::new(super::SqliteStore::open_in_memory().unwrap())
                    };
                    super::$name(&open);
                }
            )*
        }
        mod etcd {
            $(
                #[test]
                fn $name() {
                    let etcd = super::test_etcd::shared();
                    let open = || -> Box<dyn super::Store> {
                        let s: super::EtcdStore = etcd.store(stringify!($name));
                        Box::new(s)
                    };
                    super::$name(&open);
                }
            )*
        }
    };
}

suite!(
    config_values,
    hosts_registrations_and_reports,
    vms_and_placement_history,
    placements_newest_last_within_the_limit,
    identical_repeated_decisions_are_one_row_with_a_count,
    only_the_last_64_decisions_are_looked_at_for_a_repeat,
    a_round_of_decisions_in_one_call_is_the_same_as_one_at_a_time,
    decision_outcomes_are_updated,
    one_decision_by_id,
    decision_queries_filter_each_field,
    decision_pages_walk_back_without_gaps_or_duplicates,
    migration_queries_filter_and_page,
    audit_entries_recorded_queried_and_paged,
    audit_is_pruned_by_count_and_age,
    migrations_oldest_first_with_filter_and_limit,
    migration_compare_and_set,
    reservations_ids_live_and_removed,
    retention_prunes_history_by_count_and_age,
    retention_rules_per_table,
    concurrent_callers_share_one_store,
    calls_from_inside_tokio_runtimes,
);

fn config_values(open: Open) {
    let s = open();
    assert_eq!(s.config_json("policy").unwrap(), None);
    s.set_config("policy", &json!({"name": "idc"})).unwrap();
    s.set_config("other", &json!([1, 2])).unwrap();
    assert_eq!(
        s.config::<Value>("policy").unwrap(),
        Some(json!({"name": "idc"}))
    );
    s.set_config("policy", &json!({"name": "shoal"})).unwrap();
    assert_eq!(
        s.config::<Value>("policy").unwrap(),
        Some(json!({"name": "shoal"}))
    );
    assert_eq!(s.config::<Value>("other").unwrap(), Some(json!([1, 2])));
    // Stored as given, byte for byte.
    s.set_config_json("raw", "{ \"b\": 1,  \"a\": 2 }").unwrap();
    assert_eq!(
        s.config_json("raw").unwrap().as_deref(),
        Some("{ \"b\": 1,  \"a\": 2 }")
    );
    // Keys with dots and slashes are keys like any other.
    s.set_config("a/b.c", &1).unwrap();
    assert_eq!(s.config::<i64>("a/b.c").unwrap(), Some(1));
    assert_eq!(s.config::<i64>("a").unwrap(), None);
}

fn hosts_registrations_and_reports(open: Open) {
    let s = open();
    assert!(s.hosts_json().unwrap().is_empty());
    s.put_host("hv2", &json!({"cores": 8}), 3).unwrap();
    s.put_host("hv1", &json!({"cores": 4}), 1).unwrap();
    s.put_report("hv1", &json!({"cpu": 0.5}), 2).unwrap();
    // A report of an unregistered host is dropped.
    s.put_report("ghost", &json!({"cpu": 1}), 2).unwrap();
    let h: Vec<(String, Value, Option<Value>)> = s.hosts().unwrap();
    assert_eq!(
        h,
        vec![
            ("hv1".into(), json!({"cores": 4}), Some(json!({"cpu": 0.5}))),
            ("hv2".into(), json!({"cores": 8}), None),
        ]
    );
    // A new registration keeps the latest report.
    s.put_host("hv1", &json!({"cores": 6}), 4).unwrap();
    let h: Vec<(String, Value, Option<Value>)> = s.hosts().unwrap();
    assert_eq!(h[0].1, json!({"cores": 6}));
    assert_eq!(h[0].2, Some(json!({"cpu": 0.5})));
    // Several reports at once: unknown hosts dropped, the last of one
    // host's reports wins.
    s.put_reports_json(&[
        ("hv2".into(), json!({"cpu": 0.1}).to_string(), 5),
        ("ghost".into(), json!({"cpu": 0.2}).to_string(), 5),
        ("hv1".into(), json!({"cpu": 0.3}).to_string(), 5),
        ("hv2".into(), json!({"cpu": 0.4}).to_string(), 6),
    ])
    .unwrap();
    s.put_reports_json(&[]).unwrap();
    let h: Vec<(String, Value, Option<Value>)> = s.hosts().unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0].2, Some(json!({"cpu": 0.3})));
    assert_eq!(h[1].2, Some(json!({"cpu": 0.4})));
    // Many hosts in one call.
    let rows: Vec<(String, String, i64)> = (0..250)
        .map(|i| {
            let id = format!("n{i:03}");
            s.put_host(&id, &json!({}), 7).unwrap();
            (id, json!({"i": i}).to_string(), 8)
        })
        .collect();
    s.put_reports_json(&rows).unwrap();
    let h = s.hosts_json().unwrap();
    assert_eq!(h.len(), 252);
    assert_eq!(h[2 + 249].2.as_deref(), Some("{\"i\":249}"));
}

fn vms_and_placement_history(open: Open) {
    let s = open();
    assert_eq!(
        s.put_vm("vm1", "hv1", &json!({}), 4, "registration")
            .unwrap(),
        None
    );
    assert_eq!(
        s.put_vm("vm1", "hv1", &json!({"x": 1}), 5, "registration")
            .unwrap(),
        Some("hv1".into())
    );
    assert_eq!(
        s.put_vm("vm1", "hv2", &json!({}), 6, "migration m1")
            .unwrap(),
        Some("hv1".into())
    );
    s.put_vm("vm0", "hv3", &json!({"y": 2}), 7, "registration")
        .unwrap();
    let p = s.placements(Some("vm1"), 10).unwrap();
    assert_eq!(p.len(), 2, "only changes are history");
    assert_eq!(p[0].from_host, None);
    assert_eq!((p[0].to_host.as_str(), p[0].at_ms), ("hv1", 4));
    assert_eq!(p[1].from_host.as_deref(), Some("hv1"));
    assert_eq!(p[1].to_host, "hv2");
    assert_eq!(p[1].reason, "migration m1");
    assert_eq!(p[1].at_ms, 6);
    let v: Vec<(String, String, Value)> = s.vms().unwrap();
    assert_eq!(
        v,
        vec![
            ("vm0".into(), "hv3".into(), json!({"y": 2})),
            ("vm1".into(), "hv2".into(), json!({})),
        ]
    );
    let all = s.placements(None, 10).unwrap();
    assert_eq!(
        all.iter().map(|p| p.vm.as_str()).collect::<Vec<_>>(),
        ["vm1", "vm1", "vm0"]
    );
    // VM names that are prefixes of one another, or hold a slash, keep
    // their histories apart.
    s.put_vm("a", "h1", &json!({}), 8, "r").unwrap();
    s.put_vm("a/b", "h2", &json!({}), 9, "r").unwrap();
    s.put_vm("a%2Fb", "h3", &json!({}), 10, "r").unwrap();
    assert_eq!(s.placements(Some("a"), 10).unwrap().len(), 1);
    assert_eq!(s.placements(Some("a/b"), 10).unwrap()[0].to_host, "h2");
    assert_eq!(s.placements(Some("a%2Fb"), 10).unwrap()[0].to_host, "h3");
    assert!(s.placements(Some("nobody"), 10).unwrap().is_empty());
}

fn placements_newest_last_within_the_limit(open: Open) {
    let s = open();
    for i in 0..30 {
        let vm = format!("v{}", i % 2);
        s.put_vm(&vm, &format!("h{i}"), &json!({}), i, "r").unwrap();
    }
    assert!(s.placements(None, 0).unwrap().is_empty());
    let p = s.placements(None, 5).unwrap();
    assert_eq!(
        p.iter().map(|p| p.at_ms).collect::<Vec<_>>(),
        [25, 26, 27, 28, 29]
    );
    let p = s.placements(Some("v1"), 3).unwrap();
    assert_eq!(p.iter().map(|p| p.at_ms).collect::<Vec<_>>(), [25, 27, 29]);
    assert_eq!(p[0].from_host.as_deref(), Some("h23"));
    assert_eq!(s.placements(None, 1000).unwrap().len(), 30);
    // With a gap among the newest (an old-dated change pruned by age).
    s.put_vm("v2", "x", &json!({}), -1_000, "r").unwrap();
    s.put_vm("v3", "y", &json!({}), 31, "r").unwrap();
    let lim = TableLimit {
        max_rows: 1000,
        max_age_ms: 100,
    };
    let r = Retention {
        decisions: lim,
        migrations: lim,
        placements: lim,
        reservations: lim,
        audit: lim,
    };
    assert_eq!(s.prune(&r, 50).unwrap().placements, 1);
    let p = s.placements(None, 3).unwrap();
    assert_eq!(p.iter().map(|p| p.at_ms).collect::<Vec<_>>(), [28, 29, 31]);
}

fn identical_repeated_decisions_are_one_row_with_a_count(open: Open) {
    let s = open();
    let hold = json!({"action": "none", "reason": "no hotspot"});
    let mut ids = Vec::new();
    for round in 0..200 {
        ids.push(
            s.record_decision(round, 1000 + round, "sandpiper", &hold, "dry_run")
                .unwrap(),
        );
    }
    // Interleaved with another repeated decision: still two rows.
    let other = json!({"action": "migrate", "vm": "v1"});
    for round in 0..10 {
        s.record_decision(
            2000 + round,
            5000 + round,
            "sandpiper",
            &other,
            "skipped: busy",
        )
        .unwrap();
        s.record_decision(2000 + round, 5000 + round, "sandpiper", &hold, "dry_run")
            .unwrap();
    }
    let rows = s.decisions(100).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(ids.iter().all(|i| *i == ids[0]));
    assert_eq!(
        (rows[0].count, rows[0].at_ms, rows[0].last_ms, rows[0].round),
        (210, 1000, 5009, 0)
    );
    assert_eq!(rows[1].count, 10);
    assert_eq!(rows[1].decision, other);
    // A different outcome or policy is a new row.
    s.record_decision(3000, 6000, "sandpiper", &hold, "executed")
        .unwrap();
    s.record_decision(3000, 6000, "idc", &hold, "dry_run")
        .unwrap();
    assert_eq!(s.decisions(100).unwrap().len(), 4);
    // Identical means the same JSON text.
    s.record_decision_json(3001, 6001, "idc", "{\"a\":1,\"b\":2}", "x")
        .unwrap();
    s.record_decision_json(3002, 6002, "idc", "{\"b\":2,\"a\":1}", "x")
        .unwrap();
    assert_eq!(s.decisions(100).unwrap().len(), 6);
}

fn only_the_last_64_decisions_are_looked_at_for_a_repeat(open: Open) {
    let s = open();
    let first = s
        .record_decision(0, 0, "p", &json!({"n": -1}), "x")
        .unwrap();
    for i in 0..62 {
        s.record_decision(i, i, "p", &json!({"n": i}), "x").unwrap();
    }
    // 63 rows: the first is 62 rows back, inside the window.
    assert_eq!(
        s.record_decision(99, 99, "p", &json!({"n": -1}), "x")
            .unwrap(),
        first
    );
    s.record_decision(100, 100, "p", &json!({"n": 100}), "x")
        .unwrap();
    s.record_decision(101, 101, "p", &json!({"n": 101}), "x")
        .unwrap();
    // 65 rows: the first is 64 rows back, outside the window.
    let again = s
        .record_decision(102, 102, "p", &json!({"n": -1}), "x")
        .unwrap();
    assert!(again > first);
    let rows = s.decisions(1000).unwrap();
    assert_eq!(rows.len(), 66);
    assert_eq!(rows[0].count, 2);
    assert_eq!(rows[65].count, 1);
    // Ids only grow, even when the newest rows were pruned.
    let lim = TableLimit {
        max_rows: 1000,
        max_age_ms: 10,
    };
    let r = Retention {
        decisions: lim,
        migrations: lim,
        placements: lim,
        reservations: lim,
        audit: lim,
    };
    assert_eq!(s.prune(&r, 100).unwrap().decisions, 62);
    let left = s.decisions(1000).unwrap();
    assert_eq!(
        left.iter().map(|d| d.last_ms).collect::<Vec<_>>(),
        [99, 100, 101, 102]
    );
    let next = s
        .record_decision(103, 103, "p", &json!({"n": 103}), "x")
        .unwrap();
    assert!(next > again);
    // The newest row pruned (it was dated long ago): ids still only grow,
    // and the window is the 64 ids below the newest row that is left.
    let late = s.record_decision(104, 5, "p", &json!("late"), "x").unwrap();
    assert!(late > next);
    assert_eq!(s.prune(&r, 100).unwrap().decisions, 1);
    assert_eq!(
        s.record_decision(105, 105, "p", &json!({"n": -1}), "x")
            .unwrap(),
        again
    );
    assert!(
        s.record_decision(106, 106, "p", &json!("new"), "x")
            .unwrap()
            > late
    );
}

fn a_round_of_decisions_in_one_call_is_the_same_as_one_at_a_time(open: Open) {
    let rows = |round: i64| -> Vec<(i64, String, String)> {
        (0..5)
            .map(|i| {
                let j = json!({"action": "migrate", "vm": format!("v{}", i % 3)}).to_string();
                (
                    round * 10 + i,
                    j,
                    if i == 4 { "queued as m1" } else { "dry_run" }.to_string(),
                )
            })
            .collect()
    };
    let one = open();
    let batch = open();
    for round in 0..3 {
        let singles: Vec<i64> = rows(round)
            .iter()
            .map(|(at, j, o)| one.record_decision_json(round, *at, "sova", j, o).unwrap())
            .collect();
        let batched = batch
            .record_decisions_json(round, "sova", &rows(round))
            .unwrap();
        assert_eq!(singles, batched, "round {round}");
    }
    assert!(batch
        .record_decisions_json(9, "sova", &[])
        .unwrap()
        .is_empty());
    let key = |r: &DecisionRow| {
        (
            r.id,
            r.round,
            r.at_ms,
            r.count,
            r.last_ms,
            r.outcome.clone(),
        )
    };
    let a: Vec<_> = one.decisions(100).unwrap().iter().map(key).collect();
    let b: Vec<_> = batch.decisions(100).unwrap().iter().map(key).collect();
    assert_eq!(a, b);
    // v0 and v3 % 3 = v0 coalesce within a round and across rounds.
    assert_eq!(a.len(), 4, "{a:?}");
    // A round of many distinct decisions at once.
    let big: Vec<(i64, String, String)> = (0..300)
        .map(|i| (100 + i, json!({"n": i}).to_string(), "dry_run".to_string()))
        .collect();
    let ids = batch.record_decisions_json(10, "sova", &big).unwrap();
    assert_eq!(ids.len(), 300);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(batch.decisions(1000).unwrap().len(), 304);
}

fn decision_outcomes_are_updated(open: Open) {
    let s = open();
    let d = json!({"action": "migrate", "vm": "v1"});
    let id = s.record_decision(3, 10, "sandpiper", &d, "queued").unwrap();
    s.set_decision_outcome(id, "executed").unwrap();
    let rows = s.decisions(10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, "executed");
    assert_eq!(
        (rows[0].id, rows[0].round, rows[0].policy.as_str()),
        (id, 3, "sandpiper")
    );
    assert_eq!(rows[0].decision, d);
    // The same decision now repeats the row with its new outcome.
    assert_eq!(
        s.record_decision(4, 11, "sandpiper", &d, "executed")
            .unwrap(),
        id
    );
    assert_ne!(
        s.record_decision(5, 12, "sandpiper", &d, "queued").unwrap(),
        id
    );
    // Unknown ids change nothing.
    s.set_decision_outcome(id + 100, "x").unwrap();
    s.set_decision_outcome(-1, "x").unwrap();
    let rows = s.decisions(10).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].count, rows[0].last_ms), (2, 11));
    // Limits: the newest, newest last.
    assert!(s.decisions(0).unwrap().is_empty());
    assert_eq!(s.decisions(1).unwrap()[0].outcome, "queued");
}

fn one_decision_by_id(open: Open) {
    let s = open();
    assert_eq!(s.decision_json(1).unwrap(), None);
    let d = json!({"action": "migrate", "vm": "v1", "from": "h1", "to": "h2"});
    let a = s
        .record_decision(3, 10, "sandpiper", &d, "recommended")
        .unwrap();
    let b = s.record_decision(4, 11, "idc", &d, "executed").unwrap();
    s.record_decision(5, 12, "idc", &d, "executed").unwrap();
    let row = s.decision_json(a).unwrap().unwrap();
    assert_eq!(
        (
            row.id,
            row.round,
            row.at_ms,
            row.policy.as_str(),
            row.outcome.as_str()
        ),
        (a, 3, 10, "sandpiper", "recommended")
    );
    assert_eq!(row.decision, d);
    let row = s.decision_json(b).unwrap().unwrap();
    assert_eq!((row.count, row.last_ms), (2, 12));
    s.set_decision_outcome(a, "approved").unwrap();
    assert_eq!(s.decision_json(a).unwrap().unwrap().outcome, "approved");
    assert_eq!(s.decision_json(b + 1).unwrap(), None);
    assert_eq!(s.decision_json(-1).unwrap(), None);
    assert_eq!(s.decision_json(0).unwrap(), None);
}

/// Ids of decision rows.
fn ids_of(rows: &[DecisionRow]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

fn decision_queries_filter_each_field(open: Open) {
    let s = open();
    let mig = |vm: &str, from: &str, to: &str| json!({"action": "migrate", "vm": vm, "from": from, "to": to, "reason": "r"});
    let vf = |vm: &str, host: &str| json!({"action": "attach_vf", "vm": vm, "host": host});
    // id 1..=6
    let a = s
        .record_decision(1, 100, "sandpiper", &mig("v1", "h1", "h2"), "recommended")
        .unwrap();
    let b = s
        .record_decision(2, 200, "idc", &mig("v2", "h2", "h3"), "queued as mig-1")
        .unwrap();
    let c = s
        .record_decision(3, 300, "idc", &vf("v1", "h3"), "skipped: busy")
        .unwrap();
    let d = s
        .record_decision(4, 400, "sandpiper", &json!({"action": "none"}), "dry_run")
        .unwrap();
    let e = s
        .record_decision(
            5,
            500,
            "sandpiper",
            &mig("v3", "h4", "h1"),
            "Recommended (waiting)",
        )
        .unwrap();
    // Repeated until 900: one row, last seen at 900.
    for t in [600, 900] {
        s.record_decision(6, t, "idc", &vf("v4", "h4"), "executed")
            .unwrap();
    }
    let f = s.decisions(1).unwrap()[0].id;
    let q = |f: &dyn Fn(&mut DecisionQuery)| {
        let mut q = DecisionQuery {
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        ids_of(&s.decisions_query(&q).unwrap())
    };
    assert_eq!(q(&|_| {}), [a, b, c, d, e, f], "all, oldest first");
    assert_eq!(q(&|q| q.vm = Some("v1".into())), [a, c]);
    assert_eq!(q(&|q| q.vm = Some("nope".into())), Vec::<i64>::new());
    assert_eq!(q(&|q| q.host = Some("h1".into())), [a, e], "from or to");
    assert_eq!(q(&|q| q.host = Some("h3".into())), [b, c], "to or host");
    assert_eq!(q(&|q| q.host = Some("h4".into())), [e, f]);
    assert_eq!(q(&|q| q.policy = Some("idc".into())), [b, c, f]);
    assert_eq!(
        q(&|q| q.outcome = Some("recommended".into())),
        [a, e],
        "class"
    );
    assert_eq!(q(&|q| q.outcome = Some("queued".into())), [b]);
    assert_eq!(q(&|q| q.outcome = Some("skipped".into())), [c]);
    assert_eq!(q(&|q| q.since_ms = Some(400)), [d, e, f]);
    assert_eq!(q(&|q| q.since_ms = Some(700)), [f], "by the time last seen");
    assert_eq!(q(&|q| q.until_ms = Some(300)), [a, b, c]);
    assert_eq!(q(&|q| q.until_ms = Some(99)), Vec::<i64>::new());
    assert_eq!(
        q(&|q| {
            q.since_ms = Some(200);
            q.until_ms = Some(500);
            q.policy = Some("sandpiper".into());
        }),
        [d, e]
    );
    assert_eq!(
        q(&|q| {
            q.host = Some("h4".into());
            q.outcome = Some("executed".into());
        }),
        [f]
    );
    assert_eq!(q(&|q| q.before_id = Some(c)), [a, b]);
    assert_eq!(q(&|q| q.before_id = Some(a)), Vec::<i64>::new());
    assert_eq!(q(&|q| q.before_id = Some(0)), Vec::<i64>::new());
    assert_eq!(q(&|q| q.before_id = Some(i64::MAX)), [a, b, c, d, e, f]);
    // The newest matching within the limit, oldest first.
    assert_eq!(q(&|q| q.limit = 2), [e, f]);
    assert_eq!(
        q(&|q| {
            q.limit = 1;
            q.vm = Some("v1".into());
        }),
        [c]
    );
    assert_eq!(q(&|q| q.limit = 0), Vec::<i64>::new());
    // Rows are the stored ones.
    let rows = s
        .decisions_query(&DecisionQuery {
            limit: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (rows[0].count, rows[0].at_ms, rows[0].last_ms),
        (2, 600, 900)
    );
    assert_eq!(rows[0].decision, vf("v4", "h4"));
    // Outcome updates are seen.
    s.set_decision_outcome(a, "approved by ops").unwrap();
    assert_eq!(q(&|q| q.outcome = Some("recommended".into())), [e]);
}

fn decision_pages_walk_back_without_gaps_or_duplicates(open: Open) {
    let s = open();
    let n = 40i64;
    let mut all = Vec::new();
    for i in 0..n {
        let d = json!({"action": "migrate", "vm": format!("v{}", i % 3), "from": "h1", "to": "h2", "i": i});
        all.push(s.record_decision(i, 1000 + i, "p", &d, "dry_run").unwrap());
    }
    // Every page, walking back from the newest, for several page sizes.
    for size in [1usize, 3, 7, 40, 100] {
        let mut seen: Vec<i64> = Vec::new();
        let mut before = None;
        for _ in 0..=100 {
            let page = s
                .decisions_query(&DecisionQuery {
                    before_id: before,
                    limit: size,
                    ..Default::default()
                })
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= size);
            assert!(page.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
            before = Some(page[0].id);
            let mut ids = ids_of(&page);
            ids.extend(seen);
            seen = ids;
        }
        assert_eq!(seen, all, "page size {size}");
    }
    // With a filter: only v1's, in order.
    let v1: Vec<i64> = all
        .iter()
        .copied()
        .enumerate()
        .filter(|(i, _)| i % 3 == 1)
        .map(|(_, id)| id)
        .collect();
    let mut seen: Vec<i64> = Vec::new();
    let mut before = None;
    for _ in 0..=100 {
        let page = s
            .decisions_query(&DecisionQuery {
                vm: Some("v1".into()),
                before_id: before,
                limit: 4,
                ..Default::default()
            })
            .unwrap();
        let Some(first) = page.first() else { break };
        before = Some(first.id);
        let mut ids = ids_of(&page);
        ids.extend(seen);
        seen = ids;
    }
    assert_eq!(seen, v1);
    // The limit is capped.
    for i in 0..(MAX_LIMIT as i64 + 10) {
        s.record_decision_json(100 + i, 5000 + i, "p", &format!("{{\"n\":{i}}}"), "x")
            .unwrap();
    }
    let rows = s
        .decisions_query(&DecisionQuery {
            limit: usize::MAX,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), MAX_LIMIT);
}

fn migration_queries_filter_and_page(open: Open) {
    let s = open();
    let rec = |id: &str, vm: &str, from: &str, to: &str, state: &str| json!({"id": id, "vm": vm, "from": from, "to": to, "state": state});
    let put = |id: &str, vm: &str, from: &str, to: &str, state: &str, at: i64| {
        s.put_migration(id, vm, state, &rec(id, vm, from, to, state), at)
            .unwrap();
    };
    put("m1", "v1", "h1", "h2", "queued", 10);
    put("m2", "v2", "h2", "h3", "queued", 20);
    put("m3", "v1", "h3", "h1", "queued", 20);
    put("m4", "v3", "h4", "h5", "running", 30);
    put("m5", "v2", "h5", "h4", "failed", 40);
    put("m1", "v1", "h1", "h2", "done", 50); // updated: keeps its creation time
    let q = |f: &dyn Fn(&mut MigrationQuery)| -> Vec<String> {
        let mut q = MigrationQuery {
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        let v: Vec<Value> = s.migrations_matching(&q).unwrap();
        v.iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(q(&|_| {}), ["m1", "m2", "m3", "m4", "m5"]);
    assert_eq!(q(&|q| q.state = Some("done".into())), ["m1"]);
    assert_eq!(q(&|q| q.state = Some("queued".into())), ["m2", "m3"]);
    assert_eq!(q(&|q| q.vm = Some("v1".into())), ["m1", "m3"]);
    assert_eq!(
        q(&|q| q.host = Some("h1".into())),
        ["m1", "m3"],
        "from or to"
    );
    assert_eq!(q(&|q| q.host = Some("h4".into())), ["m4", "m5"]);
    assert_eq!(q(&|q| q.host = Some("h9".into())), Vec::<String>::new());
    assert_eq!(
        q(&|q| q.since_ms = Some(20)),
        ["m2", "m3", "m4", "m5"],
        "by creation"
    );
    assert_eq!(q(&|q| q.until_ms = Some(20)), ["m1", "m2", "m3"]);
    assert_eq!(q(&|q| q.limit = 2), ["m4", "m5"]);
    assert_eq!(q(&|q| q.limit = 0), Vec::<String>::new());
    assert_eq!(q(&|q| q.before = Some("m4".into())), ["m1", "m2", "m3"]);
    assert_eq!(
        q(&|q| q.before = Some("m3".into())),
        ["m1", "m2"],
        "same time: by id"
    );
    assert_eq!(q(&|q| q.before = Some("m1".into())), Vec::<String>::new());
    assert_eq!(
        q(&|q| q.before = Some("unknown".into())),
        Vec::<String>::new()
    );
    assert_eq!(
        q(&|q| {
            q.vm = Some("v2".into());
            q.before = Some("m5".into());
        }),
        ["m2"]
    );
    // Walking back page by page.
    let mut seen: Vec<String> = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..=100 {
        let page = q(&|q| {
            q.limit = 2;
            q.before = before.clone();
        });
        let Some(first) = page.first() else { break };
        before = Some(first.clone());
        let mut p = page.clone();
        p.extend(seen);
        seen = p;
    }
    assert_eq!(seen, ["m1", "m2", "m3", "m4", "m5"]);
}

fn audit_entries_recorded_queried_and_paged(open: Open) {
    let s = open();
    assert!(s
        .audit(&AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .is_empty());
    let a = s
        .record_audit(100, "alice", "policy.set", "idc", &json!({"dry_run": true}))
        .unwrap();
    let b = s
        .record_audit(
            200,
            "bob",
            "migration.create",
            "mig-1",
            &json!({"vm": "v1"}),
        )
        .unwrap();
    let c = s
        .record_audit(300, "alice", "migration.cancel", "mig-1", &json!({}))
        .unwrap();
    let d = s
        .record_audit(
            300,
            "bob",
            "rules.add",
            "r1",
            &json!({"outcome": "refused: 422"}),
        )
        .unwrap();
    assert!(a < b && b < c && c < d);
    let q = |f: &dyn Fn(&mut AuditQuery)| -> Vec<i64> {
        let mut q = AuditQuery {
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        s.audit(&q).unwrap().iter().map(|r| r.id).collect()
    };
    assert_eq!(q(&|_| {}), [a, b, c, d]);
    let rows = s
        .audit(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (
            rows[1].at_ms,
            rows[1].actor.as_str(),
            rows[1].action.as_str(),
            rows[1].target.as_str()
        ),
        (200, "bob", "migration.create", "mig-1")
    );
    assert_eq!(rows[1].detail, json!({"vm": "v1"}));
    assert_eq!(rows[3].detail, json!({"outcome": "refused: 422"}));
    assert_eq!(q(&|q| q.actor = Some("alice".into())), [a, c]);
    assert_eq!(q(&|q| q.action = Some("migration.create".into())), [b]);
    assert_eq!(
        q(&|q| q.action = Some("migration.".into())),
        [b, c],
        "prefix"
    );
    assert_eq!(
        q(&|q| q.action = Some("migration".into())),
        Vec::<i64>::new()
    );
    assert_eq!(q(&|q| q.target = Some("mig-1".into())), [b, c]);
    assert_eq!(q(&|q| q.since_ms = Some(300)), [c, d]);
    assert_eq!(q(&|q| q.until_ms = Some(200)), [a, b]);
    assert_eq!(q(&|q| q.before_id = Some(c)), [a, b]);
    assert_eq!(q(&|q| q.before_id = Some(0)), Vec::<i64>::new());
    assert_eq!(q(&|q| q.limit = 3), [b, c, d]);
    assert_eq!(q(&|q| q.limit = 0), Vec::<i64>::new());
    // Pages over many entries.
    let mut all = vec![a, b, c, d];
    for i in 0..30 {
        all.push(
            s.record_audit(400 + i, "carol", "rules.set", "", &json!({"i": i}))
                .unwrap(),
        );
    }
    for size in [1usize, 4, 9, 50] {
        let mut seen: Vec<i64> = Vec::new();
        let mut before = None;
        for _ in 0..=100 {
            let page = q(&|q| {
                q.limit = size;
                q.before_id = before;
            });
            let Some(first) = page.first() else { break };
            before = Some(*first);
            let mut p = page.clone();
            p.extend(seen);
            seen = p;
        }
        assert_eq!(seen, all, "page size {size}");
    }
}

fn audit_is_pruned_by_count_and_age(open: Open) {
    let s = open();
    for i in 0..20 {
        s.record_audit(1000 + i * 10, "ops", "policy.set", "idc", &json!({"i": i}))
            .unwrap();
    }
    let keep_all = TableLimit {
        max_rows: u64::MAX >> 1,
        max_age_ms: i64::MAX,
    };
    let r = |audit: TableLimit| Retention {
        decisions: keep_all,
        migrations: keep_all,
        placements: keep_all,
        reservations: keep_all,
        audit,
    };
    // By age: older than 1050 go (1000..=1040: 5 rows).
    let p = s
        .prune(
            &r(TableLimit {
                max_rows: 1000,
                max_age_ms: 100,
            }),
            1150,
        )
        .unwrap();
    assert_eq!((p.audit, p.decisions, p.total()), (5, 0, 5));
    let left = s
        .audit(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(left.len(), 15);
    assert_eq!(left[0].at_ms, 1050);
    // By count: the newest 4 stay.
    let p = s
        .prune(
            &r(TableLimit {
                max_rows: 4,
                max_age_ms: i64::MAX,
            }),
            1150,
        )
        .unwrap();
    assert_eq!(p.audit, 11);
    let left = s
        .audit(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        left.iter().map(|a| a.at_ms).collect::<Vec<_>>(),
        [1160, 1170, 1180, 1190]
    );
    // Ids keep growing after a prune.
    let id = s
        .record_audit(2000, "ops", "policy.set", "idc", &json!({}))
        .unwrap();
    assert!(id > left[3].id);
}

fn migrations_oldest_first_with_filter_and_limit(open: Open) {
    let s = open();
    assert_eq!(s.migration_json("m1").unwrap(), None);
    assert!(s.migrations_json(None, 10).unwrap().is_empty());
    let rec = |id: &str, state: &str| json!({"id": id, "state": state});
    s.put_migration("m2", "vm2", "queued", &rec("m2", "queued"), 20)
        .unwrap();
    s.put_migration("m1", "vm1", "queued", &rec("m1", "queued"), 10)
        .unwrap();
    s.put_migration("m3", "vm3", "queued", &rec("m3", "queued"), 20)
        .unwrap();
    s.put_migration("m0", "vm0", "running", &rec("m0", "running"), 30)
        .unwrap();
    // Updates keep the creation order (and the VM).
    s.put_migration("m1", "other", "done", &rec("m1", "done"), 40)
        .unwrap();
    s.put_migration("m2", "vm2", "running", &rec("m2", "running"), 41)
        .unwrap();
    let all: Vec<Value> = s.migrations(None, 100).unwrap();
    let ids: Vec<&str> = all.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m1", "m2", "m3", "m0"], "created, then id");
    assert_eq!(s.migration::<Value>("m1").unwrap(), Some(rec("m1", "done")));
    let running: Vec<Value> = s.migrations(Some(&["running"]), 100).unwrap();
    assert_eq!(running, vec![rec("m2", "running"), rec("m0", "running")]);
    let some: Vec<Value> = s.migrations(Some(&["done", "queued"]), 100).unwrap();
    assert_eq!(some, vec![rec("m1", "done"), rec("m3", "queued")]);
    assert!(s
        .migrations::<Value>(Some(&["failed"]), 100)
        .unwrap()
        .is_empty());
    // The limit keeps the newest (by creation); the state filter applies
    // to those.
    let two: Vec<Value> = s.migrations(None, 2).unwrap();
    assert_eq!(two, vec![rec("m3", "queued"), rec("m0", "running")]);
    let two_running: Vec<Value> = s.migrations(Some(&["running"]), 2).unwrap();
    assert_eq!(two_running, vec![rec("m0", "running")]);
    assert!(s.migrations_json(None, 0).unwrap().is_empty());
    // Stored as given.
    s.put_migration_json("m9", "vm", "queued", "{ \"x\" : 1 }", 50)
        .unwrap();
    assert_eq!(
        s.migration_json("m9").unwrap().as_deref(),
        Some("{ \"x\" : 1 }")
    );
}

fn migration_compare_and_set(open: Open) {
    let s = open();
    let rec = |state: &str| json!({"state": state});
    // None: only when there is no record.
    assert!(!s
        .put_migration_if("m1", "vm1", Some("queued"), "running", &rec("running"), 1)
        .unwrap());
    assert_eq!(s.migration::<Value>("m1").unwrap(), None);
    assert!(s
        .put_migration_if("m1", "vm1", None, "queued", &rec("queued"), 2)
        .unwrap());
    assert!(!s
        .put_migration_if("m1", "vm1", None, "queued", &rec("again"), 3)
        .unwrap());
    assert_eq!(s.migration::<Value>("m1").unwrap(), Some(rec("queued")));
    // Some(state): only from that state.
    assert!(!s
        .put_migration_if("m1", "vm1", Some("running"), "done", &rec("done"), 4)
        .unwrap());
    assert!(s
        .put_migration_if("m1", "vm9", Some("queued"), "running", &rec("running"), 5)
        .unwrap());
    assert!(s
        .put_migration_if("m1", "vm1", Some("running"), "done", &rec("done"), 6)
        .unwrap());
    assert_eq!(s.migration::<Value>("m1").unwrap(), Some(rec("done")));
    let done: Vec<Value> = s.migrations(Some(&["done"]), 10).unwrap();
    assert_eq!(done, vec![rec("done")]);
    // A compare-and-set write is a write like any other (creation kept,
    // finished ones pruned by their update time).
    s.put_migration("m0", "vm0", "queued", &rec("queued"), 3)
        .unwrap();
    let all: Vec<Value> = s.migrations(None, 10).unwrap();
    assert_eq!(all, vec![rec("done"), rec("queued")]);
    let lim = TableLimit {
        max_rows: 10,
        max_age_ms: 10,
    };
    let r = Retention {
        decisions: lim,
        migrations: lim,
        placements: lim,
        reservations: lim,
        audit: lim,
    };
    assert_eq!(s.prune(&r, 15).unwrap().migrations, 0);
    assert_eq!(s.prune(&r, 17).unwrap().migrations, 1);
    assert_eq!(s.migration_json("m1").unwrap(), None);
    // Concurrent compare-and-set: exactly one caller wins each step.
    let s: &dyn Store = &*s;
    s.put_migration("race", "vm", "queued", &rec("queued"), 20)
        .unwrap();
    let wins: usize = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                sc.spawn(move || {
                    s.put_migration_if(
                        "race",
                        "vm",
                        Some("queued"),
                        "running",
                        &json!({"t": t}),
                        21,
                    )
                    .unwrap() as usize
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 1);
}

fn reservations_ids_live_and_removed(open: Open) {
    let s = open();
    assert!(s.live_reservations(None).unwrap().is_empty());
    let a = s
        .add_reservation(
            "m1",
            "meter",
            "0000000000000001",
            &json!({"meter_id": 7}),
            13,
        )
        .unwrap();
    let b = s
        .add_reservation("m1", "flow", "0000000000000002", &json!({}), 14)
        .unwrap();
    let c = s
        .add_reservation("m2", "queue", "eth0", &json!({"q": 1}), 15)
        .unwrap();
    assert!(a < b && b < c, "{a} {b} {c}");
    let live = s.live_reservations(Some("m1")).unwrap();
    assert_eq!(live.len(), 2);
    assert_eq!(live[0].id, a);
    assert_eq!(
        (live[0].kind.as_str(), live[0].target.as_str()),
        ("meter", "0000000000000001")
    );
    assert_eq!(live[0].detail, json!({"meter_id": 7}));
    assert_eq!((live[0].created_ms, live[0].removed_ms), (13, None));
    s.remove_reservation(a, 16).unwrap();
    // Removing again, or an unknown id, changes nothing.
    s.remove_reservation(a, 17).unwrap();
    s.remove_reservation(c + 100, 17).unwrap();
    let live = s.live_reservations(Some("m1")).unwrap();
    assert_eq!(live.iter().map(|r| r.id).collect::<Vec<_>>(), [b]);
    let all = s.live_reservations(None).unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), [b, c]);
    assert!(s.live_reservations(Some("m3")).unwrap().is_empty());
    // Ids never come back, even after the rows are pruned.
    let lim = TableLimit {
        max_rows: 0,
        max_age_ms: 0,
    };
    let r = Retention {
        decisions: lim,
        migrations: lim,
        placements: lim,
        reservations: lim,
        audit: lim,
    };
    assert_eq!(s.prune(&r, 100).unwrap().reservations, 1);
    s.remove_reservation(c, 18).unwrap();
    assert_eq!(s.prune(&r, 100).unwrap().reservations, 1);
    let d = s
        .add_reservation("m3", "meter", "x", &json!({}), 19)
        .unwrap();
    assert!(d > c);
}

fn retention_prunes_history_by_count_and_age(open: Open) {
    let s = open();
    let day = 86_400_000i64;
    let now = 100 * day;
    // 300 distinct decisions, one a day-third apart, the oldest 100 days old.
    let rows: Vec<(i64, String, String)> = (0..300)
        .map(|i| (i * day / 3, json!({"n": i}).to_string(), "dry_run".into()))
        .collect();
    s.record_decisions_json(1, "p", &rows).unwrap();
    // Placements: 50 changes of one VM, one a day.
    for i in 0..50 {
        let host = if i % 2 == 0 { "a" } else { "b" };
        s.put_vm("vm", host, &json!({}), 50 * day + i * day, "test")
            .unwrap();
    }
    // Migrations: 40 finished, 5 running (never pruned however old).
    for i in 0..45 {
        let state = if i < 40 { "done" } else { "running" };
        s.put_migration(&format!("m{i:02}"), "vm", state, &json!({"i": i}), i * day)
            .unwrap();
    }
    // Reservations: 30 removed, 3 in place (never pruned).
    for i in 0..33 {
        let id = s
            .add_reservation(&format!("m{i}"), "meter", "x", &json!({}), i * day)
            .unwrap();
        if i < 30 {
            s.remove_reservation(id, 60 * day + i * day).unwrap();
        }
    }
    let lim = |max_rows, days: i64| TableLimit {
        max_rows,
        max_age_ms: days * day,
    };
    let r = Retention {
        decisions: lim(50, 30),
        migrations: lim(10, 90),
        placements: lim(1000, 20),
        reservations: lim(1000, 30),
        audit: lim(1000, 30),
    };
    let p = s.prune(&r, now).unwrap();
    let d = s.decisions(1000).unwrap();
    assert_eq!(d.len(), 50, "count limit");
    assert!(d.iter().all(|x| x.at_ms >= now - 30 * day), "age limit");
    assert_eq!(p.decisions, 250);
    // Placements of the last 20 days only.
    let pl = s.placements(None, 1000).unwrap();
    assert!(pl.iter().all(|x| x.at_ms >= now - 20 * day));
    assert_eq!(pl.len(), 20);
    assert_eq!(p.placements, 30);
    assert_eq!(s.placements(Some("vm"), 1000).unwrap(), pl);
    // Finished migrations: the newest 10 of those younger than 90
    // days; the running ones stay.
    let m: Vec<Value> = s.migrations(None, 1000).unwrap();
    assert_eq!(m.len(), 15, "{m:?}");
    assert_eq!(p.migrations, 30);
    assert_eq!(
        s.migrations::<Value>(Some(&["running"]), 1000)
            .unwrap()
            .len(),
        5
    );
    // Reservations: live ones stay; removed ones older than 30 days go.
    assert_eq!(s.live_reservations(None).unwrap().len(), 3);
    assert_eq!(p.reservations, 10);
    assert_eq!(p.total(), 320);
    // Pruning again deletes nothing.
    assert_eq!(s.prune(&r, now).unwrap().total(), 0);
}

fn retention_rules_per_table(open: Open) {
    let s = open();
    let lim = |max_rows, max_age_ms| TableLimit {
        max_rows,
        max_age_ms,
    };
    let keep_all = lim(u64::MAX, i64::MAX);
    // Decisions: the age is that of the latest repetition.
    let old = s.record_decision(1, 0, "p", &json!("old"), "x").unwrap();
    for i in 1..5 {
        s.record_decision(1, i, "p", &json!(i), "x").unwrap();
    }
    s.record_decision(2, 1000, "p", &json!("old"), "x").unwrap();
    let r = Retention {
        decisions: lim(100, 500),
        migrations: keep_all,
        placements: keep_all,
        reservations: keep_all,
        audit: keep_all,
    };
    let p = s.prune(&r, 1000).unwrap();
    assert_eq!(p.decisions, 4);
    let d = s.decisions(10).unwrap();
    assert_eq!(d.iter().map(|d| d.id).collect::<Vec<_>>(), [old]);
    // Finished migrations: newest by update time, not by creation.
    s.put_migration("a", "v", "running", &json!("a"), 10)
        .unwrap();
    s.put_migration("b", "v", "running", &json!("b"), 20)
        .unwrap();
    s.put_migration("c", "v", "failed", &json!("c"), 25)
        .unwrap();
    s.put_migration("b", "v", "cancelled", &json!("b"), 30)
        .unwrap();
    s.put_migration("a", "v", "done", &json!("a"), 40).unwrap();
    // A finished migration that runs again is not finished any more.
    s.put_migration("d", "v", "done", &json!("d"), 1).unwrap();
    s.put_migration("d", "v", "running", &json!("d"), 2)
        .unwrap();
    let r = Retention {
        decisions: keep_all,
        migrations: lim(2, i64::MAX),
        placements: keep_all,
        reservations: keep_all,
        audit: keep_all,
    };
    assert_eq!(s.prune(&r, 1000).unwrap().migrations, 1);
    let m: Vec<Value> = s.migrations(None, 10).unwrap();
    assert_eq!(m, vec![json!("d"), json!("a"), json!("b")]);
    // Same update time: the higher id is newer.
    s.put_migration("e", "v", "done", &json!("e"), 40).unwrap();
    assert_eq!(s.prune(&r, 1000).unwrap().migrations, 1);
    let m: Vec<Value> = s.migrations(None, 10).unwrap();
    assert_eq!(m, vec![json!("d"), json!("a"), json!("e")]);
    // Zero rows kept: all history goes, but never what is in progress.
    s.put_vm("v", "h1", &json!({}), 1, "r").unwrap();
    s.put_vm("v", "h2", &json!({}), 2, "r").unwrap();
    let live = s.add_reservation("m", "meter", "x", &json!({}), 1).unwrap();
    let gone = s.add_reservation("m", "meter", "y", &json!({}), 1).unwrap();
    s.remove_reservation(gone, 2).unwrap();
    let none = lim(0, i64::MAX);
    let r = Retention {
        decisions: none,
        migrations: none,
        placements: none,
        reservations: none,
        audit: none,
    };
    let p = s.prune(&r, 1000).unwrap();
    assert_eq!(
        (p.decisions, p.migrations, p.placements, p.reservations),
        (1, 2, 2, 1)
    );
    assert!(s.decisions(10).unwrap().is_empty());
    assert!(s.placements(None, 10).unwrap().is_empty());
    assert!(s.placements(Some("v"), 10).unwrap().is_empty());
    assert_eq!(s.migrations::<Value>(None, 10).unwrap(), vec![json!("d")]);
    assert_eq!(
        s.live_reservations(None)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [live]
    );
    // The VMs themselves are not history.
    assert_eq!(s.vms_json().unwrap().len(), 1);
    assert_eq!(s.prune(&r, 1000).unwrap().total(), 0);
}

fn concurrent_callers_share_one_store(open: Open) {
    let s = open();
    let s: &dyn Store = &*s;
    let per = 15;
    let got: Vec<Vec<(i64, i64)>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                sc.spawn(move || {
                    (0..per)
                        .map(|i| {
                            let r = s
                                .add_reservation("m", "meter", "x", &json!({"t": t}), i)
                                .unwrap();
                            let d = s
                                .record_decision(i, i, "p", &json!({"hold": true}), "dry_run")
                                .unwrap();
                            (r, d)
                        })
                        .collect()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ids in &got {
        assert!(ids.windows(2).all(|w| w[0].0 < w[1].0), "{ids:?}");
    }
    let mut all: Vec<i64> = got.iter().flatten().map(|x| x.0).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4 * per as usize);
    let d = s.decisions(10).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].count, 4 * per);
}

fn calls_from_inside_tokio_runtimes(open: Open) {
    let s: std::sync::Arc<dyn Store> = std::sync::Arc::from(open());
    // On a multi-threaded runtime's worker, next to a task that must keep
    // running.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let st = s.clone();
    let n = rt.block_on(async move {
        let ticker = tokio::spawn(async {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        });
        let writer = tokio::spawn(async move {
            st.put_host("h1", &json!({}), 1).unwrap();
            st.put_vm("v", "h1", &json!({}), 2, "r").unwrap();
            st.hosts_json().unwrap().len()
        });
        ticker.await.unwrap();
        writer.await.unwrap()
    });
    assert_eq!(n, 1);
    // On a current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let st = s.clone();
    let v = rt.block_on(async move {
        st.record_decision(1, 1, "p", &json!({}), "x").unwrap();
        st.vms_json().unwrap()
    });
    assert_eq!(v.len(), 1);
    assert_eq!(s.decisions(10).unwrap().len(), 1);
}
