//! Repairing broken placement rules.
//!
//! A rule can be broken by something no policy did: an operator's manual
//! move, a rule added while VMs already break it, a host that reported late.
//! [`repairs`] proposes, for each broken rule (at most
//! [`MAX_REPAIRS`] a round), one migration of one of its VMs to a host
//! where that rule holds and no other rule breaks, least loaded (CPU)
//! first. The live loop treats them as decisions: executed, recommended or
//! skipped by the VM's automation level.
//!
//! The rules the controller adds itself are left alone: maintenance
//! (drained by [`crate::mapek::maintenance`]) and the pins of `manual` VMs
//! (which hold by construction). Like the policies this is pure: the same
//! snapshot gives the same proposals.

use std::collections::BTreeSet;

use crate::knowledge::control::{MAINTENANCE_RULE, MANUAL_RULE_PREFIX};
use crate::knowledge::snapshot::Snapshot;
use crate::plan::constraints::violations;
use crate::plan::{Action, Decision, Details};

/// Repairs proposed per round at most.
pub const MAX_REPAIRS: usize = 4;
/// Destinations tried per broken rule at most (each try re-checks every
/// rule on a copy of the snapshot).
pub const MAX_TRIES: usize = 8;

/// The hosts of `snap` with their CPU utilisation (the latest CPU of their
/// VMs over their cores), least loaded first (then by id).
pub fn hosts_by_cpu(snap: &Snapshot) -> Vec<(&String, f64)> {
    let mut used: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for v in snap.vms.values() {
        *used.entry(v.host.as_str()).or_default() += v.latest().cpu_cores;
    }
    let mut hosts: Vec<(&String, f64)> = snap
        .hosts
        .iter()
        .map(|(id, h)| {
            let u = used.get(id.as_str()).copied().unwrap_or(0.0);
            (id, u / h.cores.max(1.0))
        })
        .collect();
    hosts.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
    hosts
}

/// The migrations that would repair the broken rules of `snap`, at most
/// [`MAX_REPAIRS`]. `busy`: VMs not to move (migrating, or moved by this
/// round's plan already). `fits(vm, host)`: whether `host` has room for
/// `vm` (the orchestrator's checks).
pub fn repairs(
    snap: &Snapshot,
    busy: &BTreeSet<String>,
    fits: &mut dyn FnMut(&str, &str) -> bool,
) -> Vec<Decision> {
    let before = violations(snap);
    if before.is_empty() {
        return Vec::new();
    }
    let keys: BTreeSet<_> = before.iter().map(|v| v.key()).collect();
    let hosts = hosts_by_cpu(snap);
    let mut out = Vec::new();
    let mut moved: BTreeSet<String> = BTreeSet::new();
    let mut done_rules: BTreeSet<String> = BTreeSet::new();
    for v in &before {
        if out.len() >= MAX_REPAIRS {
            break;
        }
        if v.rule == MAINTENANCE_RULE
            || v.rule.starts_with(MANUAL_RULE_PREFIX)
            || done_rules.contains(&v.rule)
        {
            continue;
        }
        // The VMs that could go: those of the violation, or those on its
        // hosts (a host's limit); the last listed first (an anti-affinity
        // group keeps its first member where it is).
        let mut candidates: Vec<&str> = if v.vms.is_empty() {
            snap.vms
                .iter()
                .filter(|(_, s)| v.hosts.contains(&s.host))
                .map(|(n, _)| n.as_str())
                .collect()
        } else {
            v.vms.iter().map(String::as_str).collect()
        };
        candidates.reverse();
        let mut tries = 0usize;
        'vms: for vm in candidates {
            if busy.contains(vm) || moved.contains(vm) {
                continue;
            }
            let Some(state) = snap.vms.get(vm) else {
                continue;
            };
            for (host, _) in &hosts {
                if **host == state.host {
                    continue;
                }
                if tries >= MAX_TRIES {
                    break 'vms;
                }
                tries += 1;
                let mut after = snap.clone();
                if let Some(s) = after.vms.get_mut(vm) {
                    s.host = (*host).clone();
                }
                let now = violations(&after);
                let fixed = !now.iter().any(|x| x.rule == v.rule);
                let adds = now.iter().any(|x| !keys.contains(&x.key()));
                if fixed && !adds && fits(vm, host) {
                    out.push(Decision {
                        action: Action::Migrate {
                            vm: vm.to_string(),
                            from: state.host.clone(),
                            to: (*host).clone(),
                        },
                        reason: format!("repair placement rule {:?}: {}", v.rule, v.reason),
                        score: 1.0,
                        details: Details::default(),
                    });
                    moved.insert(vm.to_string());
                    done_rules.insert(v.rule.clone());
                    break 'vms;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::rules::{AntiAffinityScope, Rule, RuleSet};
    use crate::plan::testutil::{migrations, Dc};

    fn dc() -> Snapshot {
        Dc::new()
            .host("h1", "r1", "p1", 8.0, 16384.0)
            .host("h2", "r1", "p1", 8.0, 16384.0)
            .host("h3", "r2", "p1", 8.0, 16384.0)
            .vm("a", "h1", 1.0, 1024.0)
            .vm("b", "h1", 1.0, 1024.0)
            .vm("c", "h2", 4.0, 1024.0)
            .vm("d", "h3", 0.5, 1024.0)
            .build(3)
            .0
    }

    /// An anti-affinity pair on one host: one of them moves to the least
    /// loaded host where the rule holds; the result breaks nothing.
    #[test]
    fn a_broken_anti_affinity_is_repaired() {
        let mut snap = dc();
        snap.rules = RuleSet::new(vec![Rule::AntiAffinity {
            name: "apart".into(),
            vms: vec!["a".into(), "b".into()],
            scope: AntiAffinityScope::Host,
        }]);
        assert_eq!(violations(&snap).len(), 1);
        let d = repairs(&snap, &BTreeSet::new(), &mut |_, _| true);
        let m = migrations(&d);
        assert_eq!(m, vec![("b".into(), "h1".into(), "h3".into())], "{d:?}");
        assert!(d[0].reason.contains("apart"));
        let mut after = snap.clone();
        if let Some(v) = after.vms.get_mut("b") {
            v.host = "h3".into();
        }
        assert!(violations(&after).is_empty());
        // No room on h3: the next host where it holds.
        let d = repairs(&snap, &BTreeSet::new(), &mut |_, h| h != "h3");
        assert_eq!(migrations(&d), vec![("b".into(), "h1".into(), "h2".into())]);
        // b busy: a goes instead.
        let busy: BTreeSet<String> = ["b".to_string()].into();
        let d = repairs(&snap, &busy, &mut |_, _| true);
        assert_eq!(migrations(&d), vec![("a".into(), "h1".into(), "h3".into())]);
        // Nowhere with room: nothing proposed.
        assert!(repairs(&snap, &BTreeSet::new(), &mut |_, _| false).is_empty());
    }

    /// A pinned VM elsewhere goes back to its hosts; a repair never breaks
    /// another rule; the controller's own rules are left alone.
    #[test]
    fn pins_are_repaired_without_breaking_other_rules() {
        let mut snap = dc();
        snap.rules = RuleSet::new(vec![
            Rule::Pin {
                name: "d-on-h1-or-h2".into(),
                vms: vec!["d".into()],
                hosts: vec!["h1".into(), "h2".into()],
            },
            Rule::Exclude {
                name: "not-h1".into(),
                hosts: vec!["h1".into()],
                vms: Some(vec!["d".into()]),
            },
        ]);
        let d = repairs(&snap, &BTreeSet::new(), &mut |_, _| true);
        assert_eq!(migrations(&d), vec![("d".into(), "h3".into(), "h2".into())]);
        snap.rules = RuleSet::new(vec![
            Rule::Exclude {
                name: MAINTENANCE_RULE.into(),
                hosts: vec!["h1".into()],
                vms: None,
            },
            Rule::Pin {
                name: format!("{MANUAL_RULE_PREFIX}d"),
                vms: vec!["d".into()],
                hosts: vec!["h1".into()],
            },
        ]);
        assert!(!violations(&snap).is_empty());
        assert!(repairs(&snap, &BTreeSet::new(), &mut |_, _| true).is_empty());
    }
}
