//! Placement rules in the simulator, for every policy: on generated data
//! centers with CPU and NIC hotspots and generated valid rule sets, no
//! policy ever plans a migration that breaks a rule. The simulator audits
//! every round's plan against the snapshot the policy saw
//! ([`crate::plan::constraints::audit`]: the decisions are replayed on a
//! ledger, and no migration may add a violation) and fails the run with
//! [`SimError::InvalidDecision`] otherwise.

use super::engine::{simulate, SimConfig};
use super::generate::{generate_dc, GenerateOptions, Mix};
use super::rng::Rng;
use super::scenario::Scenario;
use super::SimError;
use crate::analyze::HotspotConfig;
use crate::knowledge::rules::{AffinityScope, AntiAffinityScope, Rule, RuleSet};
use crate::plan::{PolicyOptions, POLICY_NAMES};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A small generated data center with hotspots.
fn data_center(seed: u64, hosts: usize, vms_per_host: usize) -> Scenario {
    generate_dc(&GenerateOptions {
        hosts,
        rack_size: 4,
        vms_per_host,
        max_vms_per_host: None,
        racks_per_pod: 2,
        seed,
        mix: Mix::Mixed,
    })
    .unwrap()
}

/// Up to `n` rules drawn from the scenario's placement (mostly rules the
/// initial placement keeps, some it breaks); a rule that would make the
/// set invalid is dropped, so the set always validates.
fn rules_for(scn: &Scenario, seed: u64, n: usize) -> RuleSet {
    let mut rng = Rng::new(seed);
    let snap = scn.initial_snapshot();
    let hosts: Vec<&str> = snap.hosts.keys().map(String::as_str).collect();
    let vms: Vec<(&str, &str)> = snap
        .vms
        .iter()
        .map(|(n, v)| (n.as_str(), v.host.as_str()))
        .collect();
    let rack = |h: &str| snap.hosts.get(h).map_or("", |x| x.location.rack.as_str());
    let pod = |h: &str| snap.hosts.get(h).map_or("", |x| x.location.pod.as_str());
    let mut by_unit: [BTreeMap<&str, Vec<&str>>; 3] = Default::default();
    for &(v, h) in &vms {
        by_unit[0].entry(h).or_default().push(v);
        by_unit[1].entry(rack(h)).or_default().push(v);
        by_unit[2].entry(pod(h)).or_default().push(v);
    }
    let some_hosts = |rng: &mut Rng, k: usize| -> Vec<String> {
        let mut hs = hosts.clone();
        rng.shuffle(&mut hs);
        hs.into_iter().take(k.max(1)).map(str::to_string).collect()
    };
    // `k` VMs of one unit (host, rack, pod) of level `l`, or anywhere.
    let together = |rng: &mut Rng, l: usize, k: usize| -> Vec<String> {
        let units: Vec<&Vec<&str>> = by_unit[l].values().filter(|m| m.len() >= 2).collect();
        let mut m = match units.get(rng.below(units.len())) {
            Some(m) if rng.f64() < 0.8 => (*m).clone(),
            _ => vms.iter().map(|x| x.0).collect(),
        };
        rng.shuffle(&mut m);
        m.into_iter().take(k).map(str::to_string).collect()
    };
    // `k` VMs of distinct units of level `l` (mostly), or anywhere.
    let apart = |rng: &mut Rng, l: usize, k: usize| -> Vec<String> {
        let mut units: Vec<&Vec<&str>> = by_unit[l].values().collect();
        rng.shuffle(&mut units);
        let spread = rng.f64() < 0.8;
        let mut out: Vec<String> = Vec::new();
        for u in units.iter().take(k) {
            out.push(u.get(rng.below(u.len())).copied().unwrap_or("").to_string());
        }
        if !spread {
            out = vms.iter().take(k).map(|x| x.0.to_string()).collect();
        }
        out.sort();
        out.dedup();
        out
    };
    let fullest = by_unit[0].values().map(Vec::len).max().unwrap_or(1);
    let mut set = RuleSet::default();
    for i in 0..n {
        let name = format!("r{i}");
        let rule = match rng.below(9) {
            0 => {
                let (v, h) = vms.get(rng.below(vms.len())).copied().unwrap_or(("", ""));
                let k = 1 + rng.below(3);
                let mut hs = some_hosts(&mut rng, k);
                if rng.f64() < 0.85 && !hs.iter().any(|x| x == h) {
                    hs.push(h.to_string());
                }
                Rule::Pin {
                    name,
                    vms: vec![v.to_string()],
                    hosts: hs,
                }
            }
            1 => Rule::Exclude {
                name,
                hosts: some_hosts(&mut rng, 1),
                vms: None,
            },
            2 => {
                let k = 1 + rng.below(2);
                let mut vs: Vec<String> = (0..1 + rng.below(3))
                    .map(|_| {
                        vms.get(rng.below(vms.len()))
                            .map_or("", |x| x.0)
                            .to_string()
                    })
                    .collect();
                vs.sort();
                vs.dedup();
                Rule::Exclude {
                    name,
                    hosts: some_hosts(&mut rng, k),
                    vms: Some(vs),
                }
            }
            3..=5 => {
                let (l, scope) = match rng.below(3) {
                    0 => (0, AffinityScope::Host),
                    1 => (1, AffinityScope::Rack),
                    _ => (2, AffinityScope::Pod),
                };
                let k = 2 + rng.below(2);
                Rule::Affinity {
                    name,
                    vms: together(&mut rng, l, k),
                    scope,
                }
            }
            6 => {
                let (l, scope) = if rng.f64() < 0.5 {
                    (0, AntiAffinityScope::Host)
                } else {
                    (1, AntiAffinityScope::Rack)
                };
                let k = 2 + rng.below(3);
                Rule::AntiAffinity {
                    name,
                    vms: apart(&mut rng, l, k),
                    scope,
                }
            }
            7 => {
                // Mostly above the fullest host's count; sometimes tight
                // on a few hosts.
                let tight = rng.f64() < 0.3;
                let (some, k) = (tight || rng.f64() < 0.5, 1 + rng.below(4));
                let max_vms = if tight {
                    1 + rng.below(fullest) as u32
                } else {
                    (fullest + 1 + rng.below(3)) as u32
                };
                Rule::HostLimit {
                    name,
                    hosts: some.then(|| some_hosts(&mut rng, k)),
                    max_vms,
                }
            }
            _ => {
                let f = |rng: &mut Rng, hi: f64| {
                    let x = rng.range(0.02, hi);
                    (rng.f64() < 0.5).then_some(x)
                };
                let (cpu, mem, net) = (f(&mut rng, 0.3), f(&mut rng, 0.2), f(&mut rng, 0.3));
                let (some, k) = (rng.f64() < 0.5, 1 + rng.below(4));
                Rule::Reserve {
                    name,
                    hosts: some.then(|| some_hosts(&mut rng, k)),
                    cpu: cpu.or(Some(0.1)),
                    mem,
                    net,
                }
            }
        };
        set.rules.push(rule);
        if set.validate().is_err() {
            set.rules.pop();
        }
    }
    set
}

/// Runs `policy` on `scn` for a few rounds (the hotspots already lasting);
/// returns the migrations applied.
fn run(scn: &Scenario, policy: &str) -> Result<u64, SimError> {
    let cfg = SimConfig {
        policy: policy.to_string(),
        options: PolicyOptions::default(),
        hotspot: HotspotConfig::default(),
        rounds: 4,
        reference: false,
        seed: 1,
        warmup: 4,
    };
    let mut out = Vec::new();
    simulate(scn, &cfg, &mut out).map(|s| s.migrations)
}

/// A generated data center with rules of every kind, checked.
fn with_rules(seed: u64, hosts: usize, vms_per_host: usize, rules: usize) -> Scenario {
    let mut scn = data_center(seed, hosts, vms_per_host);
    scn.rules = rules_for(&scn, seed ^ 0x5a5a, rules);
    scn.validate().unwrap();
    scn
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// No policy ever plans a migration that breaks a placement rule (the
    /// simulator's audit of every plan passes), whatever the rules.
    #[test]
    fn no_policy_ever_breaks_a_placement_rule(
        seed in 0u64..1_000_000,
        racks in 2usize..5,
        vms_per_host in 3usize..7,
        rules in 1usize..14,
    ) {
        let scn = with_rules(seed, 4 * racks, vms_per_host, rules);
        for policy in POLICY_NAMES {
            let r = run(&scn, policy);
            prop_assert!(r.is_ok(), "{policy}, rules {}: {:?}",
                serde_json::to_string(&scn.rules).unwrap_or_default(), r);
        }
    }
}

/// The property is not vacuous: on these data centers every policy keeps
/// migrating under rules of every kind.
#[test]
fn policies_still_migrate_under_rules() {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut moved: BTreeMap<&str, u64> = BTreeMap::new();
    for seed in 1..=6u64 {
        let scn = with_rules(seed, 12, 5, 12);
        for r in &scn.rules.rules {
            *kinds.entry(r.kind()).or_default() += 1;
        }
        for policy in POLICY_NAMES {
            *moved.entry(policy).or_default() += run(&scn, policy).unwrap();
        }
    }
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    for policy in POLICY_NAMES {
        assert!(moved.get(policy).copied().unwrap_or(0) > 0, "{moved:?}");
    }
}

/// A scenario's rules are validated with the scenario: contradictions and
/// unknown names are refused with the field.
#[test]
fn scenario_rules_are_validated() {
    let mut scn = data_center(1, 8, 3);
    let vm = scn.vms[0].name.clone();
    let host = scn.hosts[0].id.clone();
    scn.rules = serde_json::from_str(&format!(
        r#"[{{"kind":"pin","name":"p","vms":["{vm}"],"hosts":["{host}"]}},
            {{"kind":"exclude","name":"e","hosts":["{host}"]}}]"#
    ))
    .unwrap();
    let e = scn.validate().unwrap_err().to_string();
    assert!(e.starts_with("rules: rules \"p\", \"e\" contradict"), "{e}");
    scn.rules =
        serde_json::from_str(r#"[{"kind":"exclude","name":"e","hosts":["nowhere"]}]"#).unwrap();
    let e = scn.validate().unwrap_err().to_string();
    assert_eq!(e, "rules[0].hosts[0]: unknown host \"nowhere\"");
    // The JSON form of the scenario carries them.
    let text = serde_json::to_string(&with_rules(3, 8, 4, 6)).unwrap();
    let back = Scenario::load(&text).unwrap();
    assert!(!back.rules.is_empty());
}
