//! Placement rules with every policy: for each policy, the move it plans
//! on a small data center is forbidden by one rule of each kind in turn;
//! the policy must then plan neither that move nor any other that breaks
//! the rule ([`super::constraints::audit`]).

use super::constraints::audit;
use super::rules::{Rule, RuleSet};
use super::testutil::{migrations, Dc};
use super::{build_policy, PolicyOptions, POLICY_NAMES};
use crate::analyze::HotspotReport;
use crate::knowledge::snapshot::Snapshot;

/// h1, h2 in rack r1 and h3 in rack r2 (pod p1), h4 in rack r3 (pod p2);
/// 8 cores, 16 GB each. h1 is CPU-hot (four VMs of 1.8 cores: 0.9), the
/// other hosts run one small VM each; `a` on h1 talks with `f` on h3.
/// Every policy migrates something here.
fn base() -> (Snapshot, HotspotReport) {
    Dc::new()
        .host("h1", "r1", "p1", 8.0, 16384.0)
        .host("h2", "r1", "p1", 8.0, 16384.0)
        .host("h3", "r2", "p1", 8.0, 16384.0)
        .host("h4", "r3", "p2", 8.0, 16384.0)
        .vm("a", "h1", 1.8, 1024.0)
        .vm("b", "h1", 1.8, 1024.0)
        .vm("c", "h1", 1.8, 2048.0)
        .vm("d", "h1", 1.8, 512.0)
        .vm("e", "h2", 0.2, 1024.0)
        .vm("f", "h3", 0.2, 1024.0)
        .vm("g", "h4", 0.2, 1024.0)
        .talk("a", "f", 20e6)
        .build(5)
}

fn plan(policy: &str, snap: &Snapshot, hot: &HotspotReport) -> Vec<super::Decision> {
    build_policy(policy, &PolicyOptions::default())
        .unwrap()
        .plan(snap, hot)
}

/// The first migration `policy` plans on [`base`].
fn first_move(policy: &str) -> (String, String, String) {
    let (snap, hot) = base();
    let m = migrations(&plan(policy, &snap, &hot));
    m.first()
        .cloned()
        .unwrap_or_else(|| panic!("{policy} plans no migration on the base data center"))
}

/// For every policy: the rule `make(snapshot, vm, from, to)` returns must
/// keep the policy from moving `vm` to `to`, and the plan must break no
/// rule. Returns how many policies still migrated something.
fn forbid(kind: &str, make: impl Fn(&Snapshot, &str, &str, &str) -> Option<Rule>) -> usize {
    let mut still_moving = 0;
    for policy in POLICY_NAMES {
        let (vm, from, to) = first_move(policy);
        let (mut snap, hot) = base();
        let Some(rule) = make(&snap, &vm, &from, &to) else {
            continue;
        };
        let name = rule.name().to_string();
        snap.rules = RuleSet::new(vec![rule]);
        snap.rules
            .validate()
            .unwrap_or_else(|e| panic!("{policy}/{kind}: {e}"));
        let d = plan(policy, &snap, &hot);
        let m = migrations(&d);
        assert!(
            !m.iter().any(|(v, _, t)| *v == vm && *t == to),
            "{policy}: rule {name} ({kind}) forbids {vm} {from} -> {to}, planned anyway: {m:?}"
        );
        if let Err(e) = audit(&snap, &d) {
            panic!("{policy}/{kind}: {e}");
        }
        still_moving += usize::from(!m.is_empty());
    }
    still_moving
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The VMs of `snap` other than `vm` on hosts `pick` accepts, by name.
fn others(snap: &Snapshot, vm: &str, pick: impl Fn(&str) -> bool) -> Option<String> {
    snap.vms
        .iter()
        .find(|(n, v)| n.as_str() != vm && pick(&v.host))
        .map(|(n, _)| n.clone())
}

fn rack<'a>(snap: &'a Snapshot, h: &str) -> &'a str {
    snap.hosts.get(h).map_or("", |x| x.location.rack.as_str())
}

fn pod<'a>(snap: &'a Snapshot, h: &str) -> &'a str {
    snap.hosts.get(h).map_or("", |x| x.location.pod.as_str())
}

#[test]
fn base_data_center_makes_every_policy_migrate() {
    for p in POLICY_NAMES {
        let (vm, from, to) = first_move(p);
        assert_ne!(from, to, "{p}: {vm}");
    }
}

#[test]
fn pin_every_policy() {
    forbid("pin", |snap, vm, _, to| {
        let hosts: Vec<String> = snap.hosts.keys().filter(|h| *h != to).cloned().collect();
        Some(Rule::Pin {
            name: "pin".into(),
            vms: names(&[vm]),
            hosts,
        })
    });
    // Pinned to its own host: it never moves.
    forbid("pin to its host", |_, vm, from, _| {
        Some(Rule::Pin {
            name: "stay".into(),
            vms: names(&[vm]),
            hosts: names(&[from]),
        })
    });
}

#[test]
fn exclude_every_policy() {
    forbid("exclude", |_, _, _, to| {
        Some(Rule::Exclude {
            name: "drain".into(),
            hosts: names(&[to]),
            vms: None,
        })
    });
    forbid("exclude for a VM", |_, vm, _, to| {
        Some(Rule::Exclude {
            name: "not-there".into(),
            hosts: names(&[to]),
            vms: Some(names(&[vm])),
        })
    });
}

#[test]
fn affinity_every_policy() {
    use crate::knowledge::rules::AffinityScope;
    // Host: with a VM of its host (it cannot leave alone), else with one
    // that is not at the destination.
    forbid("affinity host", |snap, vm, from, to| {
        let w = others(snap, vm, |h| h == from).or_else(|| others(snap, vm, |h| h != to))?;
        Some(Rule::Affinity {
            name: "together".into(),
            vms: vec![vm.to_string(), w],
            scope: AffinityScope::Host,
        })
    });
    forbid("affinity rack", |snap, vm, _, to| {
        let r = rack(snap, to).to_string();
        let w = others(snap, vm, |h| rack(snap, h) != r)?;
        Some(Rule::Affinity {
            name: "same-rack".into(),
            vms: vec![vm.to_string(), w],
            scope: AffinityScope::Rack,
        })
    });
    forbid("affinity pod", |snap, vm, _, to| {
        let p = pod(snap, to).to_string();
        let w = others(snap, vm, |h| pod(snap, h) != p)?;
        Some(Rule::Affinity {
            name: "same-pod".into(),
            vms: vec![vm.to_string(), w],
            scope: AffinityScope::Pod,
        })
    });
}

#[test]
fn anti_affinity_every_policy() {
    use crate::knowledge::rules::AntiAffinityScope;
    forbid("anti-affinity host", |snap, vm, _, to| {
        let w = others(snap, vm, |h| h == to)?;
        Some(Rule::AntiAffinity {
            name: "apart".into(),
            vms: vec![vm.to_string(), w],
            scope: AntiAffinityScope::Host,
        })
    });
    forbid("anti-affinity rack", |snap, vm, from, to| {
        let r = rack(snap, to).to_string();
        // A VM of the destination's rack, not on the VM's own host.
        let w = others(snap, vm, |h| rack(snap, h) == r && h != from)?;
        Some(Rule::AntiAffinity {
            name: "other-racks".into(),
            vms: vec![vm.to_string(), w],
            scope: AntiAffinityScope::Rack,
        })
    });
}

#[test]
fn host_limit_every_policy() {
    let moving = forbid("host limit", |snap, _, _, to| {
        let n = snap.vms.values().filter(|v| v.host == to).count() as u32;
        Some(Rule::HostLimit {
            name: "full".into(),
            hosts: Some(names(&[to])),
            max_vms: n.max(1),
        })
    });
    // The hotspot policies find another destination.
    assert!(moving >= 4, "{moving}");
}

#[test]
fn reserve_every_policy() {
    let util = |snap: &Snapshot, to: &str| {
        let h = &snap.hosts[to];
        let s = h.latest();
        (s.cpu_util, s.mem_util(h))
    };
    forbid("reserve cpu", |snap, _, _, to| {
        let (cpu, _) = util(snap, to);
        Some(Rule::Reserve {
            name: "cpu-headroom".into(),
            hosts: Some(names(&[to])),
            cpu: Some(1.0 - cpu),
            mem: None,
            net: None,
        })
    });
    forbid("reserve mem", |snap, _, _, to| {
        let (_, mem) = util(snap, to);
        Some(Rule::Reserve {
            name: "mem-headroom".into(),
            hosts: Some(names(&[to])),
            cpu: None,
            mem: Some(1.0 - mem),
            net: None,
        })
    });
}
