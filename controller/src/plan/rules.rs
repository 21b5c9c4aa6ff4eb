//! Placement rules: their validation, the index every destination check
//! goes through, and the violations of a placement.
//!
//! The rule types ([`Rule`], [`RuleSet`]) are plain data in
//! [`crate::knowledge::rules`] (the snapshot carries them and the store
//! persists them; the knowledge layer may not name the plan) and are
//! re-exported here. This module adds:
//!
//! - [`RuleSet::validate`]: a set is refused, with a typed [`RuleError`]
//!   naming the rules and the reason, when a rule is malformed (empty
//!   lists, duplicates, a bad fraction) or when rules contradict each other
//!   in a way that can be seen without the inventory;
//! - [`RuleSet::inventory_warnings`]: what needs the inventory (unknown
//!   VMs or hosts, hosts whose rack is unknown, anti-affinity groups larger
//!   than the hosts or racks allowed to them) is reported as warnings, not
//!   refused: VMs and hosts come and go;
//! - [`RuleIndex`]: the rules compiled against a [`super::view::View`]'s
//!   indices, with the checks [`super::constraints::Ledger`] applies to
//!   every migration destination ([`RuleIndex::placement_check`],
//!   [`RuleIndex::reserve`], [`RuleIndex::blocked`]) and the
//!   [`Violation`]s of a placement ([`RuleIndex::violations`]).
//!
//! Racks and pods are the hosts' [`crate::knowledge::snapshot::HostLocation`]
//! (the ToR and aggregation switches of the topology, in the simulator and
//! live alike; VIOLIN's domains play no part). A host whose ToR is not
//! known (`HostLocation::unknown`) is treated conservatively: for affinity
//! it shares a rack or pod with no other host (only the same host keeps a
//! group together), for anti-affinity it may share a rack with any host (a
//! member may not go there while another member runs anywhere, and no
//! member may join a host of a rack when another member runs on a host of
//! unknown rack).

pub use crate::knowledge::rules::{
    AffinityScope, AntiAffinityScope, Rule, RuleSet, MAX_ENTRIES, MAX_NAME_LEN, MAX_RULES,
};
use crate::knowledge::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Why a rule set was refused. Every variant names the rules involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A rule's name is empty, too long or has control characters.
    #[error("rules[{index}].name: must be 1 to {max} characters without control characters", max = MAX_NAME_LEN)]
    BadName {
        /// Position of the rule in the set.
        index: usize,
    },
    /// Two rules have the same name.
    #[error("rule {name:?}: the name is used by more than one rule")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// More rules or names than accepted.
    #[error("too many rules: at most {max_rules} rules naming at most {max_entries} VMs and hosts in all", max_rules = MAX_RULES, max_entries = MAX_ENTRIES)]
    TooLarge,
    /// One rule is malformed.
    #[error("rule {rule:?} ({kind}): {why}")]
    Invalid {
        /// The rule.
        rule: String,
        /// Its kind.
        kind: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Rules that cannot all hold at once.
    #[error("rules {} contradict: {why}", quoted(.rules))]
    Contradiction {
        /// The rules involved.
        rules: Vec<String>,
        /// Why they cannot all hold.
        why: String,
    },
}

impl RuleError {
    /// The names of the rules involved (none for [`RuleError::BadName`]
    /// and [`RuleError::TooLarge`]).
    pub fn rules(&self) -> Vec<&str> {
        match self {
            RuleError::BadName { .. } | RuleError::TooLarge => Vec::new(),
            RuleError::DuplicateName { name } => vec![name.as_str()],
            RuleError::Invalid { rule, .. } => vec![rule.as_str()],
            RuleError::Contradiction { rules, .. } => rules.iter().map(String::as_str).collect(),
        }
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(names: &[&str]) -> String {
    names.join(", ")
}

/// What the inventory check found: a rule that names something the data
/// center does not have (now), or that cannot be satisfied by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleWarning {
    /// The rule.
    pub rule: String,
    /// What was found.
    pub message: String,
}

/// A rule the placement breaks, for reporting (e.g. after an operator's
/// manual move, or a rule added over an existing placement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// The rule's name.
    pub rule: String,
    /// Its kind (`pin`, `exclude`, …).
    pub kind: String,
    /// The VMs involved (none for a host's limit or reserve).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<String>,
    /// The hosts involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The resource of a reserve (`cpu`, `mem`, `net`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Human-readable reason.
    pub reason: String,
}

/// What identifies a violation whatever its numbers ([`Violation::key`]):
/// rule, VMs, hosts, resource.
pub type ViolationKey = (String, Vec<String>, Vec<String>, Option<String>);

impl Violation {
    /// What identifies the violation whatever its numbers (everything but
    /// the reason): the same rule broken by the same VMs on the same hosts.
    pub fn key(&self) -> ViolationKey {
        (
            self.rule.clone(),
            self.vms.clone(),
            self.hosts.clone(),
            self.resource.clone(),
        )
    }
}

/// How far apart a group may be: one host, one rack, one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Host,
    Rack,
    Pod,
}

impl Level {
    fn of_affinity(s: AffinityScope) -> Self {
        match s {
            AffinityScope::Host => Level::Host,
            AffinityScope::Rack => Level::Rack,
            AffinityScope::Pod => Level::Pod,
        }
    }

    fn of_anti(s: AntiAffinityScope) -> Self {
        match s {
            AntiAffinityScope::Host => Level::Host,
            AntiAffinityScope::Rack => Level::Rack,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Host => "host",
            Level::Rack => "rack",
            Level::Pod => "pod",
        }
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control)
}

fn invalid(rule: &Rule, why: impl Into<String>) -> RuleError {
    RuleError::Invalid {
        rule: rule.name().to_string(),
        kind: rule.kind(),
        why: why.into(),
    }
}

/// Checks one list of names: not empty (when `min` > 0), at least `min`
/// entries, each a valid name, none twice.
fn check_list(rule: &Rule, field: &str, items: &[String], min: usize) -> Result<(), RuleError> {
    if items.is_empty() {
        return Err(invalid(rule, format!("{field} must not be empty")));
    }
    if items.len() < min {
        return Err(invalid(
            rule,
            format!("{field} needs at least {min} entries, got {}", items.len()),
        ));
    }
    let mut seen = BTreeSet::new();
    for it in items {
        if !name_ok(it) {
            return Err(invalid(
                rule,
                format!(
                    "{field}: {it:?} must be 1 to {MAX_NAME_LEN} characters without control characters"
                ),
            ));
        }
        if !seen.insert(it.as_str()) {
            return Err(invalid(
                rule,
                format!("{field} lists {it:?} more than once"),
            ));
        }
    }
    Ok(())
}

fn check_fraction(rule: &Rule, field: &str, f: Option<f64>) -> Result<(), RuleError> {
    match f {
        Some(x) if !(x.is_finite() && x > 0.0 && x < 1.0) => Err(invalid(
            rule,
            format!("{field} must be a fraction in (0, 1), got {x}"),
        )),
        _ => Ok(()),
    }
}

/// One rule on its own.
fn check_rule(rule: &Rule) -> Result<(), RuleError> {
    match rule {
        Rule::Pin { vms, hosts, .. } => {
            check_list(rule, "vms", vms, 1)?;
            check_list(rule, "hosts", hosts, 1)
        }
        Rule::Exclude { vms, hosts, .. } => {
            check_list(rule, "hosts", hosts, 1)?;
            match vms {
                Some(v) if v.is_empty() => Err(invalid(
                    rule,
                    "vms must not be empty (leave it out to exclude the hosts for every VM)",
                )),
                Some(v) => check_list(rule, "vms", v, 1),
                None => Ok(()),
            }
        }
        Rule::Affinity { vms, .. } | Rule::AntiAffinity { vms, .. } => {
            check_list(rule, "vms", vms, 2)
        }
        Rule::HostLimit { hosts, max_vms, .. } => {
            if *max_vms == 0 {
                return Err(invalid(rule, "max_vms must be >= 1"));
            }
            match hosts {
                Some(h) if h.is_empty() => Err(invalid(
                    rule,
                    "hosts must not be empty (leave it out to limit every host)",
                )),
                Some(h) => check_list(rule, "hosts", h, 1),
                None => Ok(()),
            }
        }
        Rule::Reserve {
            hosts,
            cpu,
            mem,
            net,
            ..
        } => {
            if cpu.is_none() && mem.is_none() && net.is_none() {
                return Err(invalid(rule, "reserves nothing: give cpu, mem or net"));
            }
            check_fraction(rule, "cpu", *cpu)?;
            check_fraction(rule, "mem", *mem)?;
            check_fraction(rule, "net", *net)?;
            match hosts {
                Some(h) if h.is_empty() => Err(invalid(
                    rule,
                    "hosts must not be empty (leave it out to reserve on every host)",
                )),
                Some(h) => check_list(rule, "hosts", h, 1),
                None => Ok(()),
            }
        }
    }
}

/// Rule indices of a set, by what they say about VMs and hosts (names).
struct ByName<'r> {
    rules: &'r [Rule],
    /// VM → its pin rules.
    pins: BTreeMap<&'r str, Vec<usize>>,
    /// VM → exclude rules naming it.
    excludes: BTreeMap<&'r str, Vec<usize>>,
    /// Exclude rules for every VM.
    excludes_all: Vec<usize>,
    /// Host-limit rules.
    limits: Vec<usize>,
}

impl<'r> ByName<'r> {
    fn new(set: &'r RuleSet) -> Self {
        let mut b = ByName {
            rules: &set.rules,
            pins: BTreeMap::new(),
            excludes: BTreeMap::new(),
            excludes_all: Vec::new(),
            limits: Vec::new(),
        };
        for (i, r) in set.rules.iter().enumerate() {
            match r {
                Rule::Pin { vms, .. } => {
                    for v in vms {
                        b.pins.entry(v).or_default().push(i);
                    }
                }
                Rule::Exclude { vms: Some(vms), .. } => {
                    for v in vms {
                        b.excludes.entry(v).or_default().push(i);
                    }
                }
                Rule::Exclude { vms: None, .. } => b.excludes_all.push(i),
                Rule::HostLimit { .. } => b.limits.push(i),
                _ => {}
            }
        }
        b
    }

    fn name(&self, i: usize) -> String {
        self.rules.get(i).map_or(String::new(), |r| r.name().into())
    }

    fn hosts(&self, i: usize) -> BTreeSet<&'r str> {
        self.rules
            .get(i)
            .and_then(Rule::hosts)
            .map(|h| h.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Exclude rules that apply to `vm`.
    fn excludes_of(&self, vm: &str) -> Vec<usize> {
        let mut out = self.excludes_all.clone();
        out.extend(self.excludes.get(vm).into_iter().flatten().copied());
        out.sort_unstable();
        out
    }

    /// The hosts `vm` is pinned to (intersection of its pins; `None` when
    /// it has none).
    fn pinned(&self, vm: &str) -> Option<BTreeSet<&'r str>> {
        let pins = self.pins.get(vm)?;
        let mut it = pins.iter();
        let first = self.hosts(*it.next()?);
        Some(it.fold(first, |acc, &p| {
            let h = self.hosts(p);
            acc.intersection(&h).copied().collect()
        }))
    }

    /// The limit of host `h` (the smallest of the rules covering it) and
    /// the rules that set it.
    fn limit(&self, h: &str) -> Option<(u32, Vec<usize>)> {
        let mut best: Option<(u32, Vec<usize>)> = None;
        for &i in &self.limits {
            let Some(Rule::HostLimit { hosts, max_vms, .. }) = self.rules.get(i) else {
                continue;
            };
            if hosts.as_ref().is_some_and(|l| !l.iter().any(|x| x == h)) {
                continue;
            }
            match &mut best {
                Some((m, rs)) if *max_vms == *m => rs.push(i),
                Some((m, _)) if *max_vms > *m => {}
                _ => best = Some((*max_vms, vec![i])),
            }
        }
        best
    }

    /// The smallest limit that covers every host.
    fn global_limit(&self) -> Option<(u32, usize)> {
        self.limits
            .iter()
            .filter_map(|&i| match self.rules.get(i) {
                Some(Rule::HostLimit {
                    hosts: None,
                    max_vms,
                    ..
                }) => Some((*max_vms, i)),
                _ => None,
            })
            .min()
    }
}

/// VMs linked by affinity rules of scope at most `level`: the components,
/// each a sorted list of VM names, and the affinity rules of each.
struct Components<'r> {
    of: BTreeMap<&'r str, usize>,
    members: Vec<Vec<&'r str>>,
    /// VM → (neighbour, rule) edges, for naming the rules between two VMs.
    adj: BTreeMap<&'r str, Vec<(&'r str, usize)>>,
}

impl<'r> Components<'r> {
    fn new(rules: &'r [Rule], level: Level) -> Self {
        let mut adj: BTreeMap<&str, Vec<(&str, usize)>> = BTreeMap::new();
        for (i, r) in rules.iter().enumerate() {
            if let Rule::Affinity { vms, scope, .. } = r {
                if Level::of_affinity(*scope) > level {
                    continue;
                }
                // A star is enough for connectivity.
                let Some(first) = vms.first() else { continue };
                for v in vms.iter().skip(1) {
                    adj.entry(first).or_default().push((v, i));
                    adj.entry(v).or_default().push((first, i));
                }
            }
        }
        let mut of: BTreeMap<&str, usize> = BTreeMap::new();
        let mut members: Vec<Vec<&str>> = Vec::new();
        for &start in adj.keys() {
            if of.contains_key(start) {
                continue;
            }
            let c = members.len();
            let mut comp = vec![start];
            of.insert(start, c);
            let mut q = VecDeque::from([start]);
            while let Some(u) = q.pop_front() {
                for &(w, _) in adj.get(u).map(Vec::as_slice).unwrap_or_default() {
                    if let std::collections::btree_map::Entry::Vacant(e) = of.entry(w) {
                        e.insert(c);
                        comp.push(w);
                        q.push_back(w);
                    }
                }
            }
            comp.sort_unstable();
            members.push(comp);
        }
        Components { of, members, adj }
    }

    fn same(&self, a: &str, b: &str) -> bool {
        matches!((self.of.get(a), self.of.get(b)), (Some(x), Some(y)) if x == y)
    }

    /// The affinity rules on a shortest path from `a` to `b`.
    fn path_rules(&self, a: &'r str, b: &str) -> Vec<usize> {
        let mut prev: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
        let mut q = VecDeque::from([a]);
        let mut seen = BTreeSet::from([a]);
        while let Some(u) = q.pop_front() {
            if u == b {
                break;
            }
            for &(w, r) in self.adj.get(u).map(Vec::as_slice).unwrap_or_default() {
                if seen.insert(w) {
                    prev.insert(w, (u, r));
                    q.push_back(w);
                }
            }
        }
        let mut out = BTreeSet::new();
        let mut cur = b;
        while let Some(&(p, r)) = prev.get(cur) {
            out.insert(r);
            cur = p;
        }
        out.into_iter().collect()
    }

    /// Affinity rules of component `c`.
    fn rules_of(&self, c: usize) -> Vec<usize> {
        let mut out = BTreeSet::new();
        for v in self.members.get(c).into_iter().flatten() {
            for &(_, r) in self.adj.get(v).map(Vec::as_slice).unwrap_or_default() {
                out.insert(r);
            }
        }
        out.into_iter().collect()
    }
}

/// Largest matching of items to distinct slots (`allowed[i]` = the slots
/// item `i` may take): Kuhn's augmenting paths. Returns the matched count.
fn matching<S: Ord + Clone>(allowed: &[Vec<S>]) -> usize {
    let mut owner: BTreeMap<S, usize> = BTreeMap::new();
    fn augment<S: Ord + Clone>(
        i: usize,
        allowed: &[Vec<S>],
        owner: &mut BTreeMap<S, usize>,
        seen: &mut BTreeSet<S>,
    ) -> bool {
        for s in allowed.get(i).into_iter().flatten() {
            if !seen.insert(s.clone()) {
                continue;
            }
            let free = match owner.get(s).copied() {
                None => true,
                Some(j) => augment(j, allowed, owner, seen),
            };
            if free {
                owner.insert(s.clone(), i);
                return true;
            }
        }
        false
    }
    (0..allowed.len())
        .filter(|&i| augment(i, allowed, &mut owner, &mut BTreeSet::new()))
        .count()
}

/// Hosts a VM (or a group) may run on, and the rules that decide it.
type Allowed<'r> = (BTreeSet<&'r str>, Vec<usize>);

fn contradiction(b: &ByName, rules: impl IntoIterator<Item = usize>, why: String) -> RuleError {
    let set: BTreeSet<usize> = rules.into_iter().collect();
    RuleError::Contradiction {
        rules: set.into_iter().map(|i| b.name(i)).collect(),
        why,
    }
}

impl RuleSet {
    /// Checks every rule and refuses contradictions that can be seen
    /// without the inventory (see the module docs); the first problem
    /// found is returned.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.rules.len() > MAX_RULES {
            return Err(RuleError::TooLarge);
        }
        let entries: usize = self
            .rules
            .iter()
            .map(|r| r.vms().map_or(0, <[String]>::len) + r.hosts().map_or(0, <[String]>::len))
            .sum();
        if entries > MAX_ENTRIES {
            return Err(RuleError::TooLarge);
        }
        let mut names = BTreeSet::new();
        for (index, r) in self.rules.iter().enumerate() {
            if !name_ok(r.name()) {
                return Err(RuleError::BadName { index });
            }
            if !names.insert(r.name()) {
                return Err(RuleError::DuplicateName {
                    name: r.name().to_string(),
                });
            }
            check_rule(r)?;
        }
        let b = ByName::new(self);
        let allowed = self.check_pins(&b)?;
        let host_comps = Components::new(&self.rules, Level::Host);
        let together = self.check_affinity(&b, &allowed, &host_comps)?;
        self.check_anti_affinity(&b, &allowed, &host_comps, &together)?;
        self.check_limits_against_pins(&b, &allowed, &host_comps, &together)
    }

    /// Every pinned VM keeps at least one host: its pins intersect and not
    /// every host of the intersection is excluded for it. Returns the hosts
    /// each pinned VM may run on, with the rules that decide it.
    fn check_pins<'r>(
        &'r self,
        b: &ByName<'r>,
    ) -> Result<BTreeMap<&'r str, Allowed<'r>>, RuleError> {
        let mut allowed = BTreeMap::new();
        for (&vm, pins) in &b.pins {
            let inter = b.pinned(vm).unwrap_or_default();
            if inter.is_empty() {
                return Err(contradiction(
                    b,
                    pins.iter().copied(),
                    format!("VM {vm:?} is pinned to host sets with no host in common"),
                ));
            }
            let mut rules = pins.clone();
            let mut left = inter.clone();
            for e in b.excludes_of(vm) {
                let ex = b.hosts(e);
                if left.iter().any(|h| ex.contains(h)) {
                    rules.push(e);
                    left.retain(|h| !ex.contains(h));
                }
            }
            if left.is_empty() {
                return Err(contradiction(
                    b,
                    rules,
                    format!(
                        "every host VM {vm:?} is pinned to ({}) is excluded for it",
                        list(&inter.into_iter().collect::<Vec<_>>())
                    ),
                ));
            }
            allowed.insert(vm, (left, rules));
        }
        Ok(allowed)
    }

    /// Host-scoped affinity groups (linked through shared VMs) keep a host
    /// allowed to all their pinned members and not excluded for any of
    /// them, and a host limit that lets them share it. Returns, per
    /// component with a pinned member, the hosts it may run on and the
    /// rules that decide it.
    fn check_affinity<'r>(
        &'r self,
        b: &ByName<'r>,
        allowed: &BTreeMap<&'r str, Allowed<'r>>,
        comps: &Components<'r>,
    ) -> Result<BTreeMap<usize, Allowed<'r>>, RuleError> {
        let mut together = BTreeMap::new();
        for (c, members) in comps.members.iter().enumerate() {
            let mut rules = comps.rules_of(c);
            let mut hosts: Option<BTreeSet<&str>> = None;
            for vm in members {
                if let Some((a, r)) = allowed.get(vm) {
                    rules.extend(r.iter().copied());
                    hosts = Some(match hosts {
                        None => a.clone(),
                        Some(h) => h.intersection(a).copied().collect(),
                    });
                }
            }
            let names = members.clone();
            if let Some(mut h) = hosts {
                for vm in members {
                    for e in b.excludes_of(vm) {
                        let ex = b.hosts(e);
                        if h.iter().any(|x| ex.contains(x)) {
                            rules.push(e);
                            h.retain(|x| !ex.contains(x));
                        }
                    }
                }
                if h.is_empty() {
                    return Err(contradiction(
                        b,
                        rules,
                        format!(
                            "VMs {} must share one host (affinity), but no host is allowed to all of them",
                            list(&names)
                        ),
                    ));
                }
                // A host limit below the group's size on every host it may use.
                let n = members.len() as u32;
                let mut limit_rules = Vec::new();
                let all_limited = h.iter().all(|x| match b.limit(x) {
                    Some((m, rs)) if m < n => {
                        limit_rules.extend(rs);
                        true
                    }
                    _ => false,
                });
                if all_limited {
                    return Err(contradiction(
                        b,
                        rules.iter().copied().chain(limit_rules),
                        format!(
                            "the {n} VMs {} must share one host, but host_limit allows fewer on every host they may use ({})",
                            list(&names),
                            list(&h.iter().copied().collect::<Vec<_>>())
                        ),
                    ));
                }
                together.insert(c, (h, rules));
            } else if let Some((m, r)) = b.global_limit() {
                let n = members.len() as u32;
                if m < n {
                    return Err(contradiction(
                        b,
                        rules.into_iter().chain([r]),
                        format!(
                            "the {n} VMs {} must share one host, but host_limit allows at most {m} on any host",
                            list(&names)
                        ),
                    ));
                }
            }
        }
        Ok(together)
    }

    /// The hosts a VM may run on as far as the rules tell (its host-scoped
    /// affinity group's, else its own pins'), with the deciding rules.
    fn effective<'a, 'r>(
        vm: &str,
        allowed: &'a BTreeMap<&'r str, Allowed<'r>>,
        comps: &Components<'r>,
        together: &'a BTreeMap<usize, Allowed<'r>>,
    ) -> Option<&'a Allowed<'r>> {
        comps
            .of
            .get(vm)
            .and_then(|c| together.get(c))
            .or_else(|| allowed.get(vm))
    }

    /// Anti-affinity: no two members linked by affinity at a scope at most
    /// its own, and (for pinned members) enough distinct hosts.
    fn check_anti_affinity<'r>(
        &'r self,
        b: &ByName<'r>,
        allowed: &BTreeMap<&'r str, Allowed<'r>>,
        host_comps: &Components<'r>,
        together: &BTreeMap<usize, Allowed<'r>>,
    ) -> Result<(), RuleError> {
        let rack_comps = Components::new(&self.rules, Level::Rack);
        for (i, r) in self.rules.iter().enumerate() {
            let Rule::AntiAffinity { vms, scope, .. } = r else {
                continue;
            };
            let level = Level::of_anti(*scope);
            let comps = if level == Level::Host {
                host_comps
            } else {
                &rack_comps
            };
            for (x, a) in vms.iter().enumerate() {
                for bb in vms.iter().skip(x + 1) {
                    if comps.same(a, bb) {
                        return Err(contradiction(
                            b,
                            std::iter::once(i).chain(comps.path_rules(a, bb)),
                            format!(
                                "VMs {a:?} and {bb:?} must be together (affinity within one {0} or closer) and apart (anti-affinity per {0})",
                                level.as_str()
                            ),
                        ));
                    }
                }
            }
            // Members whose hosts are known must fit on distinct hosts
            // (distinct racks need distinct hosts too).
            let mut sets: Vec<Vec<&str>> = Vec::new();
            let mut rules = vec![i];
            let mut pinned = Vec::new();
            for vm in vms {
                if let Some((h, rs)) = Self::effective(vm, allowed, host_comps, together) {
                    sets.push(h.iter().copied().collect());
                    rules.extend(rs.iter().copied());
                    pinned.push(vm.as_str());
                }
            }
            if sets.len() >= 2 && matching(&sets) < sets.len() {
                let hosts: BTreeSet<&str> = sets.iter().flatten().copied().collect();
                return Err(contradiction(
                    b,
                    rules,
                    format!(
                        "VMs {} must run on distinct {}s but may only run on {} ({} host(s) for {} VMs that must be apart)",
                        list(&pinned),
                        level.as_str(),
                        list(&hosts.iter().copied().collect::<Vec<_>>()),
                        hosts.len(),
                        pinned.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A host limit leaves room for the VMs (and host-scoped affinity
    /// groups) that may run on that host alone.
    fn check_limits_against_pins<'r>(
        &'r self,
        b: &ByName<'r>,
        allowed: &BTreeMap<&'r str, Allowed<'r>>,
        comps: &Components<'r>,
        together: &BTreeMap<usize, Allowed<'r>>,
    ) -> Result<(), RuleError> {
        let mut only_on: BTreeMap<&str, (BTreeSet<&str>, Vec<usize>)> = BTreeMap::new();
        for &vm in b.pins.keys() {
            if let Some((h, rs)) = Self::effective(vm, allowed, comps, together) {
                if h.len() == 1 {
                    if let Some(&host) = h.iter().next() {
                        let e = only_on.entry(host).or_default();
                        e.0.insert(vm);
                        e.1.extend(rs.iter().copied());
                    }
                }
            }
        }
        // Members of a pinned group count too.
        for (c, (h, rs)) in together {
            if h.len() == 1 {
                if let Some(&host) = h.iter().next() {
                    let e = only_on.entry(host).or_default();
                    e.0.extend(comps.members.get(*c).into_iter().flatten().copied());
                    e.1.extend(rs.iter().copied());
                }
            }
        }
        for (host, (vms, rules)) in only_on {
            if let Some((m, limit_rules)) = b.limit(host) {
                if vms.len() > m as usize {
                    return Err(contradiction(
                        b,
                        rules.into_iter().chain(limit_rules),
                        format!(
                            "{} VMs ({}) may only run on host {host:?}, where host_limit allows {m}",
                            vms.len(),
                            list(&vms.into_iter().collect::<Vec<_>>())
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// What needs the inventory, as warnings: VMs and hosts the snapshot
    /// does not know, rack- or pod-scoped rules over hosts whose rack is
    /// unknown, anti-affinity groups with more members than the hosts (or
    /// racks) allowed to them, affinity groups pinned to hosts of different
    /// racks or pods. Call on a validated set.
    pub fn inventory_warnings(&self, snap: &Snapshot) -> Vec<RuleWarning> {
        let mut out = Vec::new();
        let warn = |out: &mut Vec<RuleWarning>, r: &Rule, m: String| {
            out.push(RuleWarning {
                rule: r.name().to_string(),
                message: m,
            })
        };
        let b = ByName::new(self);
        for r in &self.rules {
            for v in r.vms().unwrap_or_default() {
                if !snap.vms.contains_key(v) {
                    warn(&mut out, r, format!("unknown VM {v:?} (not running now)"));
                }
            }
            for h in r.hosts().unwrap_or_default() {
                if !snap.hosts.contains_key(h) {
                    warn(&mut out, r, format!("unknown host {h:?}"));
                }
            }
            let level = match r {
                Rule::Affinity { scope, .. } => Level::of_affinity(*scope),
                Rule::AntiAffinity { scope, .. } => Level::of_anti(*scope),
                _ => Level::Host,
            };
            if level != Level::Host {
                let unknown: BTreeSet<&str> = r
                    .vms()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|v| snap.vms.get(v))
                    .filter(|vm| snap.hosts.get(&vm.host).is_some_and(|h| h.location.unknown))
                    .map(|vm| vm.host.as_str())
                    .collect();
                for h in unknown {
                    warn(
                        &mut out,
                        r,
                        format!(
                            "the {} of host {h:?} is unknown: the rule treats it conservatively (affinity: alone in its {0}; anti-affinity: possibly sharing one with any host)",
                            level.as_str()
                        ),
                    );
                }
            }
            match r {
                Rule::AntiAffinity { vms, scope, .. } => {
                    self.warn_anti_capacity(&b, snap, r, vms, Level::of_anti(*scope), &mut out);
                }
                Rule::Affinity {
                    vms,
                    scope: scope @ (AffinityScope::Rack | AffinityScope::Pod),
                    ..
                } => {
                    let level = Level::of_affinity(*scope);
                    let units: Option<BTreeSet<String>> = vms
                        .iter()
                        .filter_map(|v| b.pinned(v))
                        .map(|hs| {
                            hs.iter()
                                .filter_map(|h| snap.hosts.get(*h))
                                .filter(|h| !h.location.unknown)
                                .map(|h| match level {
                                    Level::Pod => h.location.pod.clone(),
                                    _ => h.location.rack.clone(),
                                })
                                .collect::<BTreeSet<String>>()
                        })
                        .reduce(|a, c| a.intersection(&c).cloned().collect());
                    if units.is_some_and(|u| u.is_empty()) {
                        warn(
                            &mut out,
                            r,
                            format!(
                                "its pinned VMs have no {} in common among the known hosts",
                                level.as_str()
                            ),
                        );
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Warns when an anti-affinity group has more members than the hosts
    /// (or racks of known hosts) allowed to them in the snapshot.
    fn warn_anti_capacity(
        &self,
        b: &ByName,
        snap: &Snapshot,
        r: &Rule,
        vms: &[String],
        level: Level,
        out: &mut Vec<RuleWarning>,
    ) {
        let sets: Vec<Vec<String>> = vms
            .iter()
            .map(|v| {
                let pinned = b.pinned(v);
                let excluded: BTreeSet<&str> = b
                    .excludes_of(v)
                    .into_iter()
                    .flat_map(|e| b.hosts(e))
                    .collect();
                let hosts = snap.hosts.iter().filter(|(id, _)| {
                    !excluded.contains(id.as_str())
                        && pinned.as_ref().is_none_or(|p| p.contains(id.as_str()))
                });
                let units: BTreeSet<String> = match level {
                    Level::Host => hosts.map(|(id, _)| id.clone()).collect(),
                    _ => hosts
                        .filter(|(_, h)| !h.location.unknown)
                        .map(|(_, h)| h.location.rack.clone())
                        .collect(),
                };
                units.into_iter().collect()
            })
            .collect();
        let fit = matching(&sets);
        if fit < sets.len() {
            out.push(RuleWarning {
                rule: r.name().to_string(),
                message: format!(
                    "its {} VMs must be on distinct {}s, but the data center has only {fit} allowed to them",
                    sets.len(),
                    level.as_str()
                ),
            });
        }
    }
}

/// Index of a rule in its set.
pub type RuleId = usize;

/// A reserve of one host: per resource (CPU, memory, NIC) the fraction kept
/// free and the rule that sets it (the largest of the rules covering the
/// host).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reserve {
    /// CPU.
    pub cpu: Option<(f64, RuleId)>,
    /// Memory.
    pub mem: Option<(f64, RuleId)>,
    /// NIC (the busier direction).
    pub net: Option<(f64, RuleId)>,
}

impl Reserve {
    /// Nothing reserved.
    pub fn is_none(&self) -> bool {
        self.cpu.is_none() && self.mem.is_none() && self.net.is_none()
    }
}

/// Why a VM cannot move at all because of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleBlock {
    /// Pinned to its current host only.
    Pinned(RuleId),
    /// A host-scoped affinity group keeps it where another member runs.
    Together(RuleId),
}

/// Per-VM rules (view indices).
#[derive(Debug, Clone, Default)]
struct VmRules {
    /// Pin rules and their hosts (sorted).
    pins: Vec<(RuleId, Vec<usize>)>,
    /// Exclude rules naming the VM and their hosts (sorted).
    excludes: Vec<(RuleId, Vec<usize>)>,
    /// Groups (affinity and anti-affinity) it belongs to.
    groups: Vec<usize>,
    /// The hosts it may run on (pins minus excludes, sorted), when pinned.
    allowed: Option<Vec<usize>>,
}

/// An affinity or anti-affinity group.
#[derive(Debug, Clone)]
struct Group {
    rule: RuleId,
    anti: bool,
    level: Level,
    /// Member VMs known to the view.
    members: Vec<usize>,
}

/// The rules compiled against a view's indices: what
/// [`super::constraints::Ledger`] checks every destination against.
#[derive(Debug, Clone, Default)]
pub struct RuleIndex {
    names: Vec<String>,
    kinds: Vec<&'static str>,
    active: bool,
    /// Per VM (empty when no rule names a VM).
    vm: Vec<VmRules>,
    /// Per host: excluded for every VM by this rule.
    excluded_all: Vec<Option<RuleId>>,
    /// Per host: the smallest VM limit and its rule.
    host_limit: Vec<Option<(u32, RuleId)>>,
    /// Per host: what is reserved.
    reserve: Vec<Reserve>,
    groups: Vec<Group>,
    rack: Vec<u32>,
    pod: Vec<u32>,
    /// Per host: its rack and pod are known.
    located: Vec<bool>,
}

fn sorted_ids(names: &[String], index: &HashMap<&str, usize>) -> Vec<usize> {
    let mut out: Vec<usize> = names
        .iter()
        .filter_map(|n| index.get(n.as_str()).copied())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl RuleIndex {
    /// Compiles `rules` for VMs and hosts known by these names (indices =
    /// positions), with each host's rack and pod id and whether they are
    /// known. Names the view does not know are left out (a pin to unknown
    /// hosts only leaves its VMs nowhere to go).
    pub fn compile(
        rules: &RuleSet,
        vm_names: &[&str],
        host_names: &[&str],
        host_rack: &[u32],
        host_pod: &[u32],
        located: &[bool],
    ) -> Self {
        if rules.is_empty() {
            return RuleIndex::default();
        }
        let vm_index: HashMap<&str, usize> =
            vm_names.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        let host_index: HashMap<&str, usize> = host_names
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, i))
            .collect();
        let hn = host_names.len();
        let mut ix = RuleIndex {
            names: rules.rules.iter().map(|r| r.name().to_string()).collect(),
            kinds: rules.rules.iter().map(Rule::kind).collect(),
            active: true,
            vm: Vec::new(),
            excluded_all: Vec::new(),
            host_limit: Vec::new(),
            reserve: Vec::new(),
            groups: Vec::new(),
            rack: host_rack.to_vec(),
            pod: host_pod.to_vec(),
            located: located.to_vec(),
        };
        let hosts_of = |h: &Option<Vec<String>>| -> Vec<usize> {
            match h {
                None => (0..hn).collect(),
                Some(l) => sorted_ids(l, &host_index),
            }
        };
        let mut vm_rules: Vec<VmRules> = if rules.rules.iter().any(|r| r.vms().is_some()) {
            vec![VmRules::default(); vm_names.len()]
        } else {
            Vec::new()
        };
        for (i, r) in rules.rules.iter().enumerate() {
            // Affinity and anti-affinity: a group of VMs with a level.
            let group = match r {
                Rule::Affinity { vms, scope, .. } => Some((vms, false, Level::of_affinity(*scope))),
                Rule::AntiAffinity { vms, scope, .. } => Some((vms, true, Level::of_anti(*scope))),
                _ => None,
            };
            if let Some((vms, anti, level)) = group {
                let g = ix.groups.len();
                let members = sorted_ids(vms, &vm_index);
                for &v in &members {
                    if let Some(x) = vm_rules.get_mut(v) {
                        x.groups.push(g);
                    }
                }
                ix.groups.push(Group {
                    rule: i,
                    anti,
                    level,
                    members,
                });
            }
            match r {
                Rule::Pin { vms, hosts, .. } => {
                    let hs = sorted_ids(hosts, &host_index);
                    for v in sorted_ids(vms, &vm_index) {
                        if let Some(x) = vm_rules.get_mut(v) {
                            x.pins.push((i, hs.clone()));
                        }
                    }
                }
                Rule::Exclude {
                    hosts,
                    vms: Some(vms),
                    ..
                } => {
                    let hs = sorted_ids(hosts, &host_index);
                    for v in sorted_ids(vms, &vm_index) {
                        if let Some(x) = vm_rules.get_mut(v) {
                            x.excludes.push((i, hs.clone()));
                        }
                    }
                }
                Rule::Exclude {
                    hosts, vms: None, ..
                } => {
                    if ix.excluded_all.is_empty() {
                        ix.excluded_all = vec![None; hn];
                    }
                    for h in sorted_ids(hosts, &host_index) {
                        if let Some(slot) = ix.excluded_all.get_mut(h) {
                            slot.get_or_insert(i);
                        }
                    }
                }
                // Indexed above.
                Rule::Affinity { .. } | Rule::AntiAffinity { .. } => {}
                Rule::HostLimit { hosts, max_vms, .. } => {
                    if ix.host_limit.is_empty() {
                        ix.host_limit = vec![None; hn];
                    }
                    for h in hosts_of(hosts) {
                        if let Some(slot) = ix.host_limit.get_mut(h) {
                            if slot.is_none_or(|(m, _)| *max_vms < m) {
                                *slot = Some((*max_vms, i));
                            }
                        }
                    }
                }
                Rule::Reserve {
                    hosts,
                    cpu,
                    mem,
                    net,
                    ..
                } => {
                    if ix.reserve.is_empty() {
                        ix.reserve = vec![Reserve::default(); hn];
                    }
                    for h in hosts_of(hosts) {
                        let Some(slot) = ix.reserve.get_mut(h) else {
                            continue;
                        };
                        for (cur, new) in [
                            (&mut slot.cpu, cpu),
                            (&mut slot.mem, mem),
                            (&mut slot.net, net),
                        ] {
                            if let Some(f) = new {
                                if cur.is_none_or(|(g, _)| *f > g) {
                                    *cur = Some((*f, i));
                                }
                            }
                        }
                    }
                }
            }
        }
        for x in &mut vm_rules {
            if x.pins.is_empty() {
                continue;
            }
            let mut allowed: Vec<usize> = x.pins.first().map(|p| p.1.clone()).unwrap_or_default();
            for (_, hs) in x.pins.iter().skip(1) {
                allowed.retain(|h| hs.binary_search(h).is_ok());
            }
            allowed.retain(|h| !x.excludes.iter().any(|(_, e)| e.binary_search(h).is_ok()));
            if !ix.excluded_all.is_empty() {
                allowed.retain(|&h| ix.excluded_all.get(h).is_none_or(Option::is_none));
            }
            x.allowed = Some(allowed);
        }
        ix.vm = vm_rules;
        ix
    }

    /// No rule at all (every check passes at once).
    pub fn is_empty(&self) -> bool {
        !self.active
    }

    /// The name of rule `r`.
    pub fn name(&self, r: RuleId) -> &str {
        self.names.get(r).map_or("", String::as_str)
    }

    /// The kind of rule `r`.
    pub fn kind(&self, r: RuleId) -> &'static str {
        self.kinds.get(r).copied().unwrap_or("")
    }

    /// Whether hosts `a` and `b` are certainly in one unit of `level`
    /// (a host of unknown location shares a rack or pod with none other).
    fn same_unit(&self, level: Level, a: usize, b: usize) -> bool {
        if a == b {
            return true;
        }
        let known = |h: usize| self.located.get(h).copied().unwrap_or(false);
        let of = match level {
            Level::Host => return false,
            Level::Rack => &self.rack,
            Level::Pod => &self.pod,
        };
        known(a) && known(b) && of.get(a).is_some() && of.get(a) == of.get(b)
    }

    /// Whether hosts `a` and `b` may be in one unit of `level` (a host of
    /// unknown location may share a rack with any host).
    fn may_share(&self, level: Level, a: usize, b: usize) -> bool {
        if a == b {
            return true;
        }
        let known = |h: usize| self.located.get(h).copied().unwrap_or(false);
        match level {
            Level::Host => false,
            _ => !known(a) || !known(b) || self.same_unit(level, a, b),
        }
    }

    /// Whether VM `v` may be placed on host `k` as far as pins, excludes,
    /// host limits and (anti-)affinity with the other VMs' current
    /// `placement` go; `vm_count` = VMs per host now. `Err` names the first
    /// rule it would break. Reserves are checked by the caller, who knows
    /// the loads ([`RuleIndex::reserve`]).
    pub fn placement_check(
        &self,
        v: usize,
        k: usize,
        placement: &[usize],
        vm_count: &[u32],
    ) -> Result<(), RuleId> {
        if !self.active {
            return Ok(());
        }
        if let Some(Some(r)) = self.excluded_all.get(k) {
            return Err(*r);
        }
        if let Some(x) = self.vm.get(v) {
            for (r, hs) in &x.pins {
                if hs.binary_search(&k).is_err() {
                    return Err(*r);
                }
            }
            for (r, hs) in &x.excludes {
                if hs.binary_search(&k).is_ok() {
                    return Err(*r);
                }
            }
        }
        if let Some(Some((max, r))) = self.host_limit.get(k) {
            if vm_count.get(k).copied().unwrap_or(0) >= *max {
                return Err(*r);
            }
        }
        if let Some(x) = self.vm.get(v) {
            for g in x.groups.iter().filter_map(|&g| self.groups.get(g)) {
                for &w in &g.members {
                    if w == v {
                        continue;
                    }
                    let Some(&hw) = placement.get(w) else {
                        continue;
                    };
                    let ok = if g.anti {
                        !self.may_share(g.level, k, hw)
                    } else {
                        self.same_unit(g.level, k, hw)
                    };
                    if !ok {
                        return Err(g.rule);
                    }
                }
            }
        }
        Ok(())
    }

    /// What host `h` keeps free.
    pub fn reserve(&self, h: usize) -> Reserve {
        self.reserve.get(h).copied().unwrap_or_default()
    }

    /// Whether any host has a reserve.
    pub fn has_reserves(&self) -> bool {
        !self.reserve.is_empty()
    }

    /// Why `v`, on host `placement[v]`, may not move anywhere: pinned to
    /// its host alone, or held there by a host-scoped affinity group with
    /// another member on the same host.
    pub fn blocked(&self, v: usize, placement: &[usize]) -> Option<RuleBlock> {
        let x = self.vm.get(v)?;
        let h = placement.get(v).copied()?;
        if let Some(allowed) = &x.allowed {
            if allowed.iter().all(|&a| a == h) {
                let r = x.pins.first().map_or(0, |p| p.0);
                return Some(RuleBlock::Pinned(r));
            }
        }
        for g in x.groups.iter().filter_map(|&g| self.groups.get(g)) {
            if !g.anti
                && g.level == Level::Host
                && g.members
                    .iter()
                    .any(|&w| w != v && placement.get(w) == Some(&h))
            {
                return Some(RuleBlock::Together(g.rule));
            }
        }
        None
    }

    /// The rules `placement` breaks. `util(h)` gives host `h`'s (CPU,
    /// memory, NIC) utilisation for the reserves (`None`: reserves are not
    /// checked). Sorted by rule, then VMs and hosts.
    pub fn violations(
        &self,
        vm_names: &[&str],
        host_names: &[&str],
        placement: &[usize],
        vm_count: &[u32],
        util: Option<&dyn Fn(usize) -> [f64; 3]>,
    ) -> Vec<(RuleId, Violation)> {
        let mut out: Vec<(RuleId, Violation)> = Vec::new();
        if !self.active {
            return out;
        }
        let vname = |v: usize| vm_names.get(v).copied().unwrap_or("").to_string();
        let hname = |h: usize| host_names.get(h).copied().unwrap_or("").to_string();
        let mut push = |r: RuleId, vms: Vec<String>, hosts: Vec<String>, res: Option<&str>, why| {
            out.push((
                r,
                Violation {
                    rule: self.name(r).to_string(),
                    kind: self.kind(r).to_string(),
                    vms,
                    hosts,
                    resource: res.map(str::to_string),
                    reason: why,
                },
            ))
        };
        for (v, x) in self.vm.iter().enumerate() {
            let Some(&h) = placement.get(v) else { continue };
            for (r, hs) in &x.pins {
                if hs.binary_search(&h).is_err() {
                    push(
                        *r,
                        vec![vname(v)],
                        vec![hname(h)],
                        None,
                        format!(
                            "VM {:?} runs on {:?}, not on a host it is pinned to",
                            vname(v),
                            hname(h)
                        ),
                    );
                }
            }
            for (r, hs) in &x.excludes {
                if hs.binary_search(&h).is_ok() {
                    push(
                        *r,
                        vec![vname(v)],
                        vec![hname(h)],
                        None,
                        format!(
                            "VM {:?} runs on {:?}, a host excluded for it",
                            vname(v),
                            hname(h)
                        ),
                    );
                }
            }
        }
        if !self.excluded_all.is_empty() {
            for (v, &h) in placement.iter().enumerate() {
                if let Some(Some(r)) = self.excluded_all.get(h) {
                    push(
                        *r,
                        vec![vname(v)],
                        vec![hname(h)],
                        None,
                        format!(
                            "VM {:?} runs on {:?}, a host excluded for every VM",
                            vname(v),
                            hname(h)
                        ),
                    );
                }
            }
        }
        for g in &self.groups {
            let placed: Vec<(usize, usize)> = g
                .members
                .iter()
                .filter_map(|&w| placement.get(w).map(|&h| (w, h)))
                .collect();
            if g.anti {
                for (i, &(a, ha)) in placed.iter().enumerate() {
                    for &(b, hb) in placed.iter().skip(i + 1) {
                        if !self.may_share(g.level, ha, hb) {
                            continue;
                        }
                        let why = if ha == hb {
                            format!(
                                "VMs {:?} and {:?} share host {:?}",
                                vname(a),
                                vname(b),
                                hname(ha)
                            )
                        } else if self.same_unit(g.level, ha, hb) {
                            format!(
                                "VMs {:?} and {:?} share a rack (hosts {:?}, {:?})",
                                vname(a),
                                vname(b),
                                hname(ha),
                                hname(hb)
                            )
                        } else {
                            format!(
                                "VMs {:?} and {:?} may share a rack: the rack of {:?} or {:?} is unknown",
                                vname(a),
                                vname(b),
                                hname(ha),
                                hname(hb)
                            )
                        };
                        let mut hosts = vec![hname(ha), hname(hb)];
                        hosts.sort();
                        hosts.dedup();
                        let mut vms = vec![vname(a), vname(b)];
                        vms.sort();
                        push(g.rule, vms, hosts, None, why);
                    }
                }
            } else if let Some(&(_, h0)) = placed.first() {
                if placed.iter().any(|&(_, h)| !self.same_unit(g.level, h0, h)) {
                    let mut vms: Vec<String> = placed.iter().map(|&(w, _)| vname(w)).collect();
                    vms.sort();
                    let hs: BTreeSet<String> = placed.iter().map(|&(_, h)| hname(h)).collect();
                    let unknown = placed
                        .iter()
                        .any(|&(_, h)| !self.located.get(h).copied().unwrap_or(false));
                    let why = format!(
                        "the VMs are not within one {} (hosts {}){}",
                        g.level.as_str(),
                        hs.iter().cloned().collect::<Vec<_>>().join(", "),
                        if unknown && g.level != Level::Host {
                            "; a host's rack is unknown, so only one host counts as together"
                        } else {
                            ""
                        }
                    );
                    push(g.rule, vms, hs.into_iter().collect(), None, why);
                }
            }
        }
        for (h, lim) in self.host_limit.iter().enumerate() {
            if let Some((max, r)) = lim {
                let n = vm_count.get(h).copied().unwrap_or(0);
                if n > *max {
                    push(
                        *r,
                        Vec::new(),
                        vec![hname(h)],
                        None,
                        format!("{n} VMs on {:?}, at most {max}", hname(h)),
                    );
                }
            }
        }
        if let Some(util) = util {
            for (h, res) in self.reserve.iter().enumerate() {
                let u = util(h);
                for (i, (what, x)) in [("cpu", res.cpu), ("mem", res.mem), ("net", res.net)]
                    .into_iter()
                    .enumerate()
                {
                    let Some((f, r)) = x else { continue };
                    let used = u.get(i).copied().unwrap_or(0.0);
                    if used > 1.0 - f {
                        push(
                            r,
                            Vec::new(),
                            vec![hname(h)],
                            Some(what),
                            format!(
                                "{what} of {:?} at {used:.3} of its capacity; {f} is to be kept free",
                                hname(h)
                            ),
                        );
                    }
                }
            }
        }
        out.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| a.1.vms.cmp(&b.1.vms))
                .then_with(|| a.1.hosts.cmp(&b.1.hosts))
                .then_with(|| a.1.resource.cmp(&b.1.resource))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::snapshot::{HostLocation, HostState, VmState};

    fn set(json: &str) -> RuleSet {
        serde_json::from_str(json).unwrap()
    }

    fn refused(json: &str) -> RuleError {
        set(json).validate().expect_err(json)
    }

    fn contradiction_rules(json: &str) -> (Vec<String>, String) {
        match refused(json) {
            RuleError::Contradiction { rules, why } => (rules, why),
            e => panic!("not a contradiction: {e}"),
        }
    }

    /// One valid rule of every kind.
    const ALL_KINDS: &str = r#"[
        {"kind":"pin","name":"p","vms":["a"],"hosts":["h1","h2"]},
        {"kind":"exclude","name":"e","hosts":["h9"]},
        {"kind":"exclude","name":"e2","hosts":["h3"],"vms":["b"]},
        {"kind":"affinity","name":"f","vms":["a","b"],"scope":"host"},
        {"kind":"anti_affinity","name":"n","vms":["a","c"],"scope":"rack"},
        {"kind":"host_limit","name":"l","max_vms":4},
        {"kind":"reserve","name":"r","hosts":["h1"],"cpu":0.2,"net":0.5}
    ]"#;

    #[test]
    fn a_valid_set_of_every_kind_passes() {
        set(ALL_KINDS).validate().unwrap();
        RuleSet::default().validate().unwrap();
    }

    /// Malformed rules of every kind are refused with the rule's name, kind
    /// and the field.
    #[test]
    fn malformed_rules_are_refused_per_kind() {
        for (json, want) in [
            (
                r#"[{"kind":"pin","name":"p","vms":[],"hosts":["h1"]}]"#,
                "vms must not be empty",
            ),
            (
                r#"[{"kind":"pin","name":"p","vms":["a"],"hosts":[]}]"#,
                "hosts must not be empty",
            ),
            (
                r#"[{"kind":"pin","name":"p","vms":["a","a"],"hosts":["h1"]}]"#,
                "lists \"a\" more than once",
            ),
            (
                r#"[{"kind":"pin","name":"p","vms":[""],"hosts":["h1"]}]"#,
                "must be 1 to 128",
            ),
            (
                r#"[{"kind":"exclude","name":"e","hosts":[]}]"#,
                "hosts must not be empty",
            ),
            (
                r#"[{"kind":"exclude","name":"e","hosts":["h1"],"vms":[]}]"#,
                "leave it out",
            ),
            (
                r#"[{"kind":"affinity","name":"f","vms":["a"],"scope":"host"}]"#,
                "at least 2",
            ),
            (
                r#"[{"kind":"anti_affinity","name":"n","vms":["a"],"scope":"rack"}]"#,
                "at least 2",
            ),
            (
                r#"[{"kind":"anti_affinity","name":"n","vms":["a","b","a"],"scope":"host"}]"#,
                "more than once",
            ),
            (
                r#"[{"kind":"host_limit","name":"l","max_vms":0}]"#,
                "max_vms must be >= 1",
            ),
            (
                r#"[{"kind":"host_limit","name":"l","hosts":[],"max_vms":2}]"#,
                "hosts must not be empty",
            ),
            (r#"[{"kind":"reserve","name":"r"}]"#, "reserves nothing"),
            (
                r#"[{"kind":"reserve","name":"r","cpu":1.0}]"#,
                "cpu must be a fraction in (0, 1)",
            ),
            (
                r#"[{"kind":"reserve","name":"r","mem":0.0}]"#,
                "mem must be a fraction",
            ),
            (
                r#"[{"kind":"reserve","name":"r","net":-0.1}]"#,
                "net must be a fraction",
            ),
            (
                r#"[{"kind":"reserve","name":"r","hosts":[],"cpu":0.1}]"#,
                "hosts must not be empty",
            ),
        ] {
            let e = refused(json);
            let text = e.to_string();
            assert!(matches!(e, RuleError::Invalid { .. }), "{json}: {e:?}");
            assert!(text.contains(want), "{json}: {text}");
            assert_eq!(e.rules().len(), 1, "{text}");
            assert!(text.starts_with("rule \""), "{text}");
        }
        let e = refused(
            r#"[{"kind":"host_limit","name":"x","max_vms":2},{"kind":"exclude","name":"x","hosts":["h"]}]"#,
        );
        assert_eq!(e, RuleError::DuplicateName { name: "x".into() });
        let e = refused(r#"[{"kind":"host_limit","name":"","max_vms":2}]"#);
        assert_eq!(e, RuleError::BadName { index: 0 });
    }

    #[test]
    fn two_pins_without_a_common_host_contradict() {
        let (rules, why) = contradiction_rules(
            r#"[{"kind":"pin","name":"p1","vms":["a"],"hosts":["h1"]},
                {"kind":"pin","name":"p2","vms":["a","b"],"hosts":["h2","h3"]}]"#,
        );
        assert_eq!(rules, ["p1", "p2"]);
        assert!(why.contains("no host in common"), "{why}");
        // A common host is fine.
        set(
            r#"[{"kind":"pin","name":"p1","vms":["a"],"hosts":["h1","h2"]},
                {"kind":"pin","name":"p2","vms":["a"],"hosts":["h2","h3"]}]"#,
        )
        .validate()
        .unwrap();
    }

    #[test]
    fn a_vm_pinned_only_to_excluded_hosts_is_refused() {
        let (rules, why) = contradiction_rules(
            r#"[{"kind":"pin","name":"p","vms":["a"],"hosts":["h1","h2"]},
                {"kind":"exclude","name":"drain1","hosts":["h1"]},
                {"kind":"exclude","name":"not-a","hosts":["h2"],"vms":["a"]}]"#,
        );
        assert_eq!(rules, ["p", "drain1", "not-a"]);
        assert!(why.contains("excluded"), "{why}");
        // An exclusion for another VM does not count.
        set(r#"[{"kind":"pin","name":"p","vms":["a"],"hosts":["h1"]},
                {"kind":"exclude","name":"e","hosts":["h1"],"vms":["b"]}]"#)
        .validate()
        .unwrap();
    }

    #[test]
    fn host_affinity_between_vms_pinned_apart_is_refused() {
        let (rules, why) = contradiction_rules(
            r#"[{"kind":"pin","name":"pa","vms":["a"],"hosts":["h1"]},
                {"kind":"pin","name":"pb","vms":["b"],"hosts":["h2"]},
                {"kind":"affinity","name":"ab","vms":["a","b"],"scope":"host"}]"#,
        );
        assert_eq!(rules, ["pa", "pb", "ab"]);
        assert!(why.contains("share one host"), "{why}");
        // Through a chain of affinities, and with an exclusion of a member.
        let (rules, _) = contradiction_rules(
            r#"[{"kind":"pin","name":"pa","vms":["a"],"hosts":["h1","h2"]},
                {"kind":"affinity","name":"ab","vms":["a","b"],"scope":"host"},
                {"kind":"affinity","name":"bc","vms":["b","c"],"scope":"host"},
                {"kind":"exclude","name":"ec","hosts":["h1","h2"],"vms":["c"]}]"#,
        );
        assert_eq!(rules, ["pa", "ab", "bc", "ec"]);
        // Rack affinity between VMs pinned to different hosts: not knowable
        // without the inventory.
        set(r#"[{"kind":"pin","name":"pa","vms":["a"],"hosts":["h1"]},
                {"kind":"pin","name":"pb","vms":["b"],"hosts":["h2"]},
                {"kind":"affinity","name":"ab","vms":["a","b"],"scope":"rack"}]"#)
        .validate()
        .unwrap();
    }

    #[test]
    fn affinity_and_anti_affinity_with_overlapping_scope_are_refused() {
        // (affinity scope, anti scope, contradicts)
        for (aff, anti, bad) in [
            ("host", "host", true),
            ("host", "rack", true),
            ("rack", "rack", true),
            ("rack", "host", false),
            ("pod", "host", false),
            ("pod", "rack", false),
        ] {
            let json = format!(
                r#"[{{"kind":"affinity","name":"together","vms":["a","b"],"scope":"{aff}"}},
                    {{"kind":"anti_affinity","name":"apart","vms":["b","a"],"scope":"{anti}"}}]"#
            );
            let r = set(&json).validate();
            assert_eq!(r.is_err(), bad, "{aff}/{anti}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.rules(), ["together", "apart"], "{e}");
                assert!(e.to_string().contains("together") && e.to_string().contains("apart"));
            }
        }
        // Linked through a third VM: the path's rules are named.
        let (rules, why) = contradiction_rules(
            r#"[{"kind":"affinity","name":"ab","vms":["a","b"],"scope":"host"},
                {"kind":"affinity","name":"bc","vms":["b","c"],"scope":"rack"},
                {"kind":"affinity","name":"xy","vms":["x","y"],"scope":"host"},
                {"kind":"anti_affinity","name":"ac","vms":["a","c"],"scope":"rack"}]"#,
        );
        assert_eq!(rules, ["ab", "bc", "ac"]);
        assert!(why.contains("\"a\"") && why.contains("\"c\""), "{why}");
    }

    #[test]
    fn anti_affinity_larger_than_its_pinned_hosts_is_refused() {
        let (rules, why) = contradiction_rules(
            r#"[{"kind":"pin","name":"p","vms":["a","b"],"hosts":["h1"]},
                {"kind":"anti_affinity","name":"n","vms":["a","b"],"scope":"host"}]"#,
        );
        assert_eq!(rules, ["p", "n"]);
        assert!(why.contains("distinct host"), "{why}");
        // Rack scope too (one host is one rack).
        assert!(set(
            r#"[{"kind":"pin","name":"p","vms":["a","b"],"hosts":["h1"]},
                {"kind":"anti_affinity","name":"n","vms":["a","b"],"scope":"rack"}]"#
        )
        .validate()
        .is_err());
        // Three VMs on two hosts.
        let (rules, _) = contradiction_rules(
            r#"[{"kind":"pin","name":"p","vms":["a","b"],"hosts":["h1","h2"]},
                {"kind":"pin","name":"q","vms":["c"],"hosts":["h2","h1"]},
                {"kind":"anti_affinity","name":"n","vms":["a","b","c"],"scope":"host"}]"#,
        );
        assert_eq!(rules, ["p", "q", "n"]);
        // Two hosts for two pinned VMs and an unpinned third: fine.
        set(
            r#"[{"kind":"pin","name":"p","vms":["a","b"],"hosts":["h1","h2"]},
                {"kind":"anti_affinity","name":"n","vms":["a","b","c"],"scope":"host"}]"#,
        )
        .validate()
        .unwrap();
    }

    #[test]
    fn host_limits_too_small_for_pinned_or_grouped_vms_are_refused() {
        let (rules, why) = contradiction_rules(
            r#"[{"kind":"host_limit","name":"one","max_vms":1},
                {"kind":"affinity","name":"ab","vms":["a","b"],"scope":"host"}]"#,
        );
        assert_eq!(rules, ["one", "ab"]);
        assert!(why.contains("host_limit"), "{why}");
        let (rules, _) = contradiction_rules(
            r#"[{"kind":"pin","name":"p","vms":["a","b","c"],"hosts":["h1"]},
                {"kind":"host_limit","name":"two","hosts":["h1"],"max_vms":2}]"#,
        );
        assert_eq!(rules, ["p", "two"]);
        // A limit on other hosts only, or one a group fits under: fine.
        set(
            r#"[{"kind":"pin","name":"p","vms":["a","b","c"],"hosts":["h1"]},
                {"kind":"host_limit","name":"two","hosts":["h2"],"max_vms":2},
                {"kind":"host_limit","name":"three","max_vms":3},
                {"kind":"affinity","name":"ab","vms":["a","b"],"scope":"host"}]"#,
        )
        .validate()
        .unwrap();
    }

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        for (id, rack, unknown) in [
            ("h1", "r1", false),
            ("h2", "r1", false),
            ("h3", "r2", false),
            ("h4", "host:h4", true),
        ] {
            s.hosts.insert(
                id.into(),
                HostState {
                    cores: 8.0,
                    memory_mb: 8192.0,
                    nic_bps: 1e10,
                    location: HostLocation {
                        rack: rack.into(),
                        pod: if unknown { rack.into() } else { "p1".into() },
                        cluster: "c".into(),
                        unknown,
                    },
                    ..Default::default()
                },
            );
        }
        for (vm, host) in [("a", "h1"), ("b", "h2"), ("c", "h3"), ("d", "h4")] {
            s.vms.insert(
                vm.into(),
                VmState {
                    host: host.into(),
                    memory_mb: 1024.0,
                    ..Default::default()
                },
            );
        }
        s
    }

    #[test]
    fn the_inventory_check_warns_instead_of_refusing() {
        let snap = snapshot();
        let rules = set(r#"[
            {"kind":"pin","name":"p","vms":["a","ghost"],"hosts":["h1","h9"]},
            {"kind":"anti_affinity","name":"racks","vms":["a","b","c"],"scope":"rack"},
            {"kind":"anti_affinity","name":"hosts","vms":["a","b","c"],"scope":"host"},
            {"kind":"affinity","name":"pod","vms":["c","d"],"scope":"pod"},
            {"kind":"exclude","name":"e","hosts":["h2","h3","h4"]},
            {"kind":"anti_affinity","name":"few","vms":["b","c"],"scope":"host"}
        ]"#);
        rules.validate().unwrap();
        let w = rules.inventory_warnings(&snap);
        let has =
            |rule: &str, text: &str| w.iter().any(|x| x.rule == rule && x.message.contains(text));
        assert!(has("p", "unknown VM \"ghost\""), "{w:?}");
        assert!(has("p", "unknown host \"h9\""), "{w:?}");
        // h2, h3, h4 excluded for everyone: one rack (r1) left for three
        // VMs, one host for two.
        assert!(
            has(
                "racks",
                "its 3 VMs must be on distinct racks, but the data center has only 1"
            ),
            "{w:?}"
        );
        assert!(
            has(
                "hosts",
                "its 3 VMs must be on distinct hosts, but the data center has only 1"
            ),
            "{w:?}"
        );
        assert!(has("pod", "pod of host \"h4\" is unknown"), "{w:?}");
        assert!(has("few", "its 2 VMs must be on distinct hosts"), "{w:?}");
        assert!(!w.iter().any(|x| x.rule == "e"), "{w:?}");
    }

    /// Hosts h0..h3: h0, h1 in rack 0, h2 in rack 1, h3 of unknown rack
    /// (pods: 0, 0, 0, 3).
    fn index(json: &str) -> RuleIndex {
        let r = set(json);
        r.validate().unwrap();
        RuleIndex::compile(
            &r,
            &["a", "b", "c", "d"],
            &["h0", "h1", "h2", "h3"],
            &[0, 0, 1, 3],
            &[0, 0, 0, 3],
            &[true, true, true, false],
        )
    }

    #[test]
    fn the_index_checks_each_kind() {
        // a on h0, b on h1, c on h2, d on h3.
        let place = [0, 1, 2, 3];
        let count = [1, 1, 1, 1];
        let ix = index(r#"[{"kind":"pin","name":"p","vms":["a"],"hosts":["h0","h2"]}]"#);
        assert_eq!(ix.placement_check(0, 1, &place, &count), Err(0));
        assert_eq!(ix.placement_check(0, 2, &place, &count), Ok(()));
        assert_eq!(ix.placement_check(1, 3, &place, &count), Ok(()));
        let ix = index(
            r#"[{"kind":"exclude","name":"e","hosts":["h2"]},{"kind":"exclude","name":"f","hosts":["h1"],"vms":["a"]}]"#,
        );
        assert_eq!(ix.placement_check(0, 2, &place, &count), Err(0));
        assert_eq!(ix.placement_check(3, 2, &place, &count), Err(0));
        assert_eq!(ix.placement_check(0, 1, &place, &count), Err(1));
        assert_eq!(ix.placement_check(3, 1, &place, &count), Ok(()));
        let ix = index(r#"[{"kind":"host_limit","name":"l","hosts":["h2"],"max_vms":1}]"#);
        assert_eq!(ix.placement_check(0, 2, &place, &count), Err(0));
        assert_eq!(ix.placement_check(0, 1, &place, &count), Ok(()));
        // Affinity: a may join b's host (host scope), b's rack (rack scope);
        // never a host of unknown rack, even for pod scope.
        let ix = index(r#"[{"kind":"affinity","name":"f","vms":["a","b"],"scope":"host"}]"#);
        assert_eq!(ix.placement_check(0, 1, &place, &count), Ok(()));
        assert_eq!(ix.placement_check(0, 2, &place, &count), Err(0));
        let ix = index(r#"[{"kind":"affinity","name":"f","vms":["a","c"],"scope":"rack"}]"#);
        assert_eq!(ix.placement_check(0, 2, &place, &count), Ok(()));
        assert_eq!(ix.placement_check(2, 1, &place, &count), Ok(()), "a's rack");
        assert_eq!(ix.placement_check(0, 3, &place, &count), Err(0));
        let ix = index(r#"[{"kind":"affinity","name":"f","vms":["a","b"],"scope":"rack"}]"#);
        assert_eq!(
            ix.placement_check(0, 2, &place, &count),
            Err(0),
            "another rack"
        );
        let ix = index(r#"[{"kind":"affinity","name":"f","vms":["a","c"],"scope":"pod"}]"#);
        assert_eq!(ix.placement_check(2, 1, &place, &count), Ok(()));
        assert_eq!(ix.placement_check(2, 3, &place, &count), Err(0));
        // Anti-affinity: host scope keeps off b's host only; rack scope off
        // b's rack and off the host of unknown rack.
        let ix = index(r#"[{"kind":"anti_affinity","name":"n","vms":["a","b"],"scope":"host"}]"#);
        assert_eq!(ix.placement_check(0, 1, &place, &count), Err(0));
        assert_eq!(ix.placement_check(0, 3, &place, &count), Ok(()));
        let ix = index(r#"[{"kind":"anti_affinity","name":"n","vms":["a","c"],"scope":"rack"}]"#);
        assert_eq!(ix.placement_check(0, 2, &place, &count), Err(0));
        assert_eq!(
            ix.placement_check(0, 3, &place, &count),
            Err(0),
            "unknown rack"
        );
        assert_eq!(ix.placement_check(0, 1, &place, &count), Ok(()));
        let ix = index(r#"[{"kind":"anti_affinity","name":"n","vms":["a","d"],"scope":"rack"}]"#);
        assert_eq!(
            ix.placement_check(0, 2, &place, &count),
            Err(0),
            "d's rack is unknown"
        );
        // Reserve: the largest fraction per resource wins.
        let ix = index(
            r#"[{"kind":"reserve","name":"r","cpu":0.1},{"kind":"reserve","name":"s","hosts":["h1"],"cpu":0.3,"mem":0.2}]"#,
        );
        assert_eq!(ix.reserve(0).cpu, Some((0.1, 0)));
        assert_eq!(ix.reserve(1).cpu, Some((0.3, 1)));
        assert_eq!(ix.reserve(1).mem, Some((0.2, 1)));
        assert_eq!(ix.reserve(0).mem, None);
        assert!(index("[]").is_empty());
        assert_eq!(index("[]").placement_check(0, 1, &place, &count), Ok(()));
    }

    #[test]
    fn pinned_and_grouped_vms_are_blocked() {
        let ix = index(
            r#"[{"kind":"pin","name":"p","vms":["a"],"hosts":["h0","h1"]},
                {"kind":"exclude","name":"e","hosts":["h1"],"vms":["a"]},
                {"kind":"affinity","name":"f","vms":["b","c"],"scope":"host"}]"#,
        );
        // a may only run on h0, where it is.
        assert_eq!(ix.blocked(0, &[0, 1, 2, 3]), Some(RuleBlock::Pinned(0)));
        // Elsewhere (after a manual move) it may go back.
        assert_eq!(ix.blocked(0, &[2, 1, 2, 3]), None);
        // b and c apart: each may join the other; together: both stay.
        assert_eq!(ix.blocked(1, &[0, 1, 2, 3]), None);
        assert_eq!(ix.blocked(1, &[0, 2, 2, 3]), Some(RuleBlock::Together(2)));
        assert_eq!(ix.blocked(2, &[0, 2, 2, 3]), Some(RuleBlock::Together(2)));
    }

    #[test]
    fn violations_of_each_kind_are_reported() {
        let ix = index(
            r#"[{"kind":"pin","name":"p","vms":["a"],"hosts":["h0"]},
                {"kind":"exclude","name":"e","hosts":["h2"]},
                {"kind":"affinity","name":"f","vms":["a","b"],"scope":"rack"},
                {"kind":"anti_affinity","name":"n","vms":["c","d"],"scope":"rack"},
                {"kind":"host_limit","name":"l","max_vms":1},
                {"kind":"reserve","name":"r","hosts":["h1"],"cpu":0.25}]"#,
        );
        let vms = ["a", "b", "c", "d"];
        let hosts = ["h0", "h1", "h2", "h3"];
        // a on h2 (manually moved), b on h1, c on h2, d on h3.
        let place = [2, 1, 2, 3];
        let count = [0, 1, 2, 1];
        let util = |h: usize| if h == 1 { [0.8, 0.1, 0.1] } else { [0.1; 3] };
        let v = ix.violations(&vms, &hosts, &place, &count, Some(&util));
        let got: Vec<(&str, Vec<&str>, Vec<&str>)> = v
            .iter()
            .map(|(_, x)| {
                (
                    x.rule.as_str(),
                    x.vms.iter().map(String::as_str).collect(),
                    x.hosts.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("p", vec!["a"], vec!["h2"]),
                ("e", vec!["a"], vec!["h2"]),
                ("e", vec!["c"], vec!["h2"]),
                ("f", vec!["a", "b"], vec!["h1", "h2"]),
                ("n", vec!["c", "d"], vec!["h2", "h3"]),
                ("l", vec![], vec!["h2"]),
                ("r", vec![], vec!["h1"]),
            ],
            "{v:#?}"
        );
        let reserve = &v.last().unwrap().1;
        assert_eq!(reserve.resource.as_deref(), Some("cpu"));
        assert!(reserve.reason.contains("0.25"), "{}", reserve.reason);
        let unknown = &v.iter().find(|(_, x)| x.rule == "n").unwrap().1;
        assert!(unknown.reason.contains("unknown"), "{}", unknown.reason);
        // Repaired: nothing left (reserves unchecked without loads).
        let place = [0, 1, 2, 1];
        let count = [1, 2, 1, 0];
        let v = ix.violations(&vms, &hosts, &place, &count, None);
        let rules: Vec<&str> = v.iter().map(|(_, x)| x.rule.as_str()).collect();
        // b and d share h1 (limit 1): only the limit is broken; a is back
        // on h0 in b's rack, c and d in different known racks.
        assert_eq!(rules, ["e", "l"], "{v:#?}");
    }
}
