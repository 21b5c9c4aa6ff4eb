//! Configured groups the live snapshot carries: VIOLIN's domains (groups of
//! hosts) and virtual environments (a tenant's group of VMs, with an
//! optional head node that stays in its domain).
//!
//! The simulator reads the same facts from its scenario file. In live mode
//! they come from three layers, in this order of precedence:
//!
//! 1. the set put with `PUT /api/v1/groups` (kept in the knowledge store,
//!    restored at start), if any: it replaces the configuration's wholesale;
//! 2. else the controller's `[groups]` configuration (reloaded on SIGHUP);
//! 3. the host daemons' registrations ([`EffectiveGroups`]): a host's
//!    `domain` and its VMs' `environment` / `environment_head` fill in the
//!    hosts and VMs the set above does not name. They never fail: a
//!    contradiction is resolved deterministically and reported as a
//!    [`GroupWarning`] (a VM claimed by two hosts: the host first by id
//!    wins; two heads of one environment: the set's head, else the VM first
//!    by name; a registration contradicting the set: the set wins).
//!
//! A host without a domain is in its pod's; a VM without an environment
//! belongs to none.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::monitor::hosts::HostRegistry;

/// Longest group, host or VM name accepted in `[groups]`.
pub const MAX_NAME_LEN: usize = 128;
/// Most names (hosts of every domain plus members of every environment)
/// accepted in `[groups]`.
pub const MAX_ENTRIES: usize = 100_000;

/// One virtual environment as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// Environment (tenant) name.
    pub name: String,
    /// Its VMs, by name.
    pub members: Vec<String>,
    /// Its head node (gateway), one of `members`: VIOLIN keeps it in its
    /// domain when it moves the environment.
    #[serde(default)]
    pub head: Option<String>,
}

/// Domains and environments as a whole: the body of `PUT /api/v1/groups`
/// and the value stored under the configuration key `"groups"` (the same
/// shape as `[groups]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsSpec {
    /// Domain name → its hosts (a host in at most one domain).
    pub domains: BTreeMap<String, Vec<String>>,
    /// Environments (a VM in at most one).
    pub environments: Vec<EnvironmentSpec>,
}

impl GroupsSpec {
    /// Checks the set ([`Groups::new`]) and indexes it.
    pub fn check(&self) -> Result<Groups, GroupsError> {
        Groups::new(&self.domains, &self.environments)
    }
}

/// Why a `[groups]` configuration was refused; `field` names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct GroupsError {
    /// The offending entry, e.g. `groups.environments[1].head`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn err(field: String, message: impl Into<String>) -> GroupsError {
    GroupsError {
        field,
        message: message.into(),
    }
}

fn check_name(field: String, name: &str) -> Result<(), GroupsError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(err(
            field,
            format!("must be 1 to {MAX_NAME_LEN} characters without control characters"),
        ));
    }
    Ok(())
}

/// The groups, checked and indexed for the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    domain_of_host: BTreeMap<String, String>,
    /// VM → (environment, is head).
    env_of_vm: BTreeMap<String, (String, bool)>,
    /// Environment → its head node.
    head_of_env: BTreeMap<String, String>,
}

impl Groups {
    /// Checks `domains` (domain → hosts) and `environments`: names are
    /// non-empty and bounded, a host is in at most one domain, a VM in at
    /// most one environment, environment names are unique, a head is one
    /// of its environment's members, and the total is bounded.
    pub fn new(
        domains: &BTreeMap<String, Vec<String>>,
        environments: &[EnvironmentSpec],
    ) -> Result<Groups, GroupsError> {
        let total = domains.values().map(Vec::len).sum::<usize>()
            + environments.iter().map(|e| e.members.len()).sum::<usize>();
        if total > MAX_ENTRIES {
            return Err(err(
                "groups".into(),
                format!("{total} names, more than the {MAX_ENTRIES} accepted"),
            ));
        }
        let mut g = Groups::default();
        for (d, hosts) in domains {
            check_name(format!("groups.domains.{d}"), d)?;
            for (i, h) in hosts.iter().enumerate() {
                let f = format!("groups.domains.{d}[{i}]");
                check_name(f.clone(), h)?;
                if let Some(other) = g.domain_of_host.insert(h.clone(), d.clone()) {
                    return Err(err(f, format!("host {h:?} is already in domain {other:?}")));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in environments.iter().enumerate() {
            let f = format!("groups.environments[{i}]");
            check_name(format!("{f}.name"), &e.name)?;
            if !names.insert(e.name.as_str()) {
                return Err(err(
                    format!("{f}.name"),
                    format!("environment {:?} is defined twice", e.name),
                ));
            }
            if e.members.is_empty() {
                return Err(err(format!("{f}.members"), "must name at least one VM"));
            }
            if let Some(h) = &e.head {
                if !e.members.contains(h) {
                    return Err(err(
                        format!("{f}.head"),
                        format!("{h:?} is not a member of {:?}", e.name),
                    ));
                }
            }
            for (j, v) in e.members.iter().enumerate() {
                let fm = format!("{f}.members[{j}]");
                check_name(fm.clone(), v)?;
                let head = e.head.as_deref() == Some(v.as_str());
                if let Some((other, _)) = g.env_of_vm.insert(v.clone(), (e.name.clone(), head)) {
                    return Err(err(
                        fm,
                        format!("VM {v:?} is already in environment {other:?}"),
                    ));
                }
            }
            if let Some(h) = &e.head {
                g.head_of_env.insert(e.name.clone(), h.clone());
            }
        }
        Ok(g)
    }

    /// The head node of environment `env`.
    pub fn head_of(&self, env: &str) -> Option<&str> {
        self.head_of_env.get(env).map(String::as_str)
    }

    /// Domain → its hosts (by name).
    pub fn domains(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (h, d) in &self.domain_of_host {
            out.entry(d.clone()).or_default().push(h.clone());
        }
        out
    }

    /// The environments, by name, members by name.
    pub fn environments(&self) -> Vec<EnvironmentSpec> {
        let mut out: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (v, (e, _)) in &self.env_of_vm {
            out.entry(e.as_str()).or_default().push(v.clone());
        }
        out.into_iter()
            .map(|(name, members)| EnvironmentSpec {
                name: name.to_string(),
                members,
                head: self.head_of(name).map(str::to_string),
            })
            .collect()
    }

    /// The configured domain of host `id`.
    pub fn domain_of(&self, id: &str) -> Option<&str> {
        self.domain_of_host.get(id).map(String::as_str)
    }

    /// The environment of VM `name` and whether it is its head node.
    pub fn environment_of(&self, name: &str) -> Option<(&str, bool)> {
        self.env_of_vm.get(name).map(|(e, h)| (e.as_str(), *h))
    }

    /// Whether no group is configured.
    pub fn is_empty(&self) -> bool {
        self.domain_of_host.is_empty() && self.env_of_vm.is_empty()
    }
}

/// Warnings kept per merge at most (the rest are counted).
pub const MAX_WARNINGS: usize = 100;

/// A contradiction between the layers of groups, resolved (see the module
/// doc) and reported by `GET /api/v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupWarning {
    /// The host (`host <id>`) or VM (`vm <name>`) concerned.
    pub subject: String,
    /// What contradicts what, and what applies.
    pub message: String,
}

/// The groups in force: `base` (the API's set, else the configuration's)
/// and, for the hosts and VMs it does not name, the registrations' facts
/// (see the module doc for the precedence and how contradictions are
/// resolved). Building it never fails.
#[derive(Debug, Clone)]
pub struct EffectiveGroups<'a> {
    base: &'a Groups,
    registered: Groups,
    /// Contradictions resolved, at most [`MAX_WARNINGS`].
    pub warnings: Vec<GroupWarning>,
    /// Warnings left out beyond [`MAX_WARNINGS`].
    pub warnings_omitted: usize,
}

impl<'a> EffectiveGroups<'a> {
    /// Merges `base` with the registrations of `hosts` (hosts and their
    /// inventories read in id order, so the result does not depend on the
    /// order they registered in).
    pub fn new(base: &'a Groups, hosts: &HostRegistry) -> Self {
        let mut m = EffectiveGroups {
            base,
            registered: Groups::default(),
            warnings: Vec::new(),
            warnings_omitted: 0,
        };
        // VM → (host, environment, head) of the first host (by id) that
        // registers it with an environment.
        let mut claims: BTreeMap<&str, (&str, &str, bool)> = BTreeMap::new();
        for (id, e) in hosts.hosts() {
            let reg = &e.registration;
            if let Some(d) = &reg.domain {
                match base.domain_of(id) {
                    Some(b) if b != d => m.warn(
                        format!("host {id}"),
                        format!(
                            "registers domain {d:?} but the groups set by the API or [groups] put it in {b:?}, which applies"
                        ),
                    ),
                    Some(_) => {}
                    None => {
                        m.registered.domain_of_host.insert(id.clone(), d.clone());
                    }
                }
            }
            for v in &reg.vms {
                let Some(env) = v.environment.as_deref() else {
                    continue;
                };
                let head = v.environment_head;
                if let Some((be, bh)) = base.environment_of(&v.name) {
                    if be != env || head != bh {
                        m.warn(
                            format!("vm {}", v.name),
                            format!(
                                "host {id} registers it in environment {env:?}{} but the groups set by the API or [groups] put it in {be:?}{}, which applies",
                                if head { " as head" } else { "" },
                                if bh { " as head" } else { "" },
                            ),
                        );
                    }
                    continue;
                }
                match claims.entry(v.name.as_str()) {
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert((id.as_str(), env, head));
                    }
                    std::collections::btree_map::Entry::Occupied(first) => {
                        let (h0, e0, head0) = *first.get();
                        if e0 != env || head0 != head {
                            m.warn(
                                format!("vm {}", v.name),
                                format!(
                                    "hosts {h0} and {id} register it differently (environment {e0:?}{} and {env:?}{}); {h0}'s applies (first host by id)",
                                    if head0 { " as head" } else { "" },
                                    if head { " as head" } else { "" },
                                ),
                            );
                        }
                    }
                }
            }
        }
        // Heads: the set's head of that environment, else the first VM by
        // name that claims it.
        for (vm, (_, env, head)) in claims {
            let head = head
                && {
                    if let Some(h) = base.head_of(env) {
                        m.warn(
                        format!("vm {vm}"),
                        format!("registered as head of {env:?}, whose head in the groups set by the API or [groups] is {h:?}; it is a plain member"),
                    );
                        false
                    } else if let Some(h) = m.registered.head_of(env).map(str::to_string) {
                        m.warn(
                        format!("vm {vm}"),
                        format!("registered as head of {env:?}, as is {h:?} (first by name), which is the head; it is a plain member"),
                    );
                        false
                    } else {
                        m.registered
                            .head_of_env
                            .insert(env.to_string(), vm.to_string());
                        true
                    }
                };
            m.registered
                .env_of_vm
                .insert(vm.to_string(), (env.to_string(), head));
        }
        m
    }

    fn warn(&mut self, subject: String, message: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(GroupWarning { subject, message });
        } else {
            self.warnings_omitted += 1;
        }
    }

    /// The domain of host `id`: the set's, else its registration's.
    pub fn domain_of(&self, id: &str) -> Option<&str> {
        self.base
            .domain_of(id)
            .or_else(|| self.registered.domain_of(id))
    }

    /// The environment of VM `name` and whether it is its head node: the
    /// set's, else its registration's.
    pub fn environment_of(&self, name: &str) -> Option<(&str, bool)> {
        self.base
            .environment_of(name)
            .or_else(|| self.registered.environment_of(name))
    }

    /// The set the registrations fill in (the API's or the configuration's).
    pub fn base(&self) -> &Groups {
        self.base
    }

    /// What the registrations added (hosts and VMs the set does not name).
    pub fn registered(&self) -> &Groups {
        &self.registered
    }

    /// Every domain in force → its hosts (by name).
    pub fn domains(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = self.base.domains();
        for (d, hosts) in self.registered.domains() {
            let list = out.entry(d).or_default();
            list.extend(hosts);
            list.sort();
        }
        out
    }

    /// Every environment in force, by name, members by name: a set's
    /// environment with the registered VMs that join it.
    pub fn environments(&self) -> Vec<EnvironmentSpec> {
        let mut out: BTreeMap<String, EnvironmentSpec> = self
            .base
            .environments()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        for e in self.registered.environments() {
            match out.get_mut(&e.name) {
                Some(have) => {
                    have.members.extend(e.members);
                    have.members.sort();
                    if have.head.is_none() {
                        have.head = e.head;
                    }
                }
                None => {
                    out.insert(e.name.clone(), e);
                }
            }
        }
        out.into_values().collect()
    }

    /// The layers each domain's hosts come from: `base` (the caller's name
    /// for the set: `api` or `config`) and/or `registration`.
    pub fn domain_sources(&self, base: &'static str) -> BTreeMap<String, Vec<&'static str>> {
        sources(
            base,
            self.base.domain_of_host.values(),
            self.registered.domain_of_host.values(),
        )
    }

    /// The layers each environment's members come from (as
    /// [`EffectiveGroups::domain_sources`]).
    pub fn environment_sources(&self, base: &'static str) -> BTreeMap<String, Vec<&'static str>> {
        sources(
            base,
            self.base.env_of_vm.values().map(|(e, _)| e),
            self.registered.env_of_vm.values().map(|(e, _)| e),
        )
    }
}

fn sources<'s>(
    base: &'static str,
    from_base: impl Iterator<Item = &'s String>,
    registered: impl Iterator<Item = &'s String>,
) -> BTreeMap<String, Vec<&'static str>> {
    let mut out: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    let a: BTreeSet<&String> = from_base.collect();
    let b: BTreeSet<&String> = registered.collect();
    for n in &a {
        out.entry((*n).clone()).or_default().push(base);
    }
    for n in &b {
        out.entry((*n).clone()).or_default().push("registration");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, members: &[&str], head: Option<&str>) -> EnvironmentSpec {
        EnvironmentSpec {
            name: name.into(),
            members: members.iter().map(|s| s.to_string()).collect(),
            head: head.map(str::to_string),
        }
    }

    fn domains(d: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        d.iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn groups_index_domains_environments_and_heads() {
        let g = Groups::new(
            &domains(&[("d0", &["th1", "th2"]), ("d1", &["th3"])]),
            &[
                env("tenant1", &["tv1", "tv2"], Some("tv1")),
                env("t2", &["tv5"], None),
            ],
        )
        .unwrap();
        assert_eq!(g.domain_of("th2"), Some("d0"));
        assert_eq!(g.domain_of("th3"), Some("d1"));
        assert_eq!(g.domain_of("th9"), None);
        assert_eq!(g.environment_of("tv1"), Some(("tenant1", true)));
        assert_eq!(g.environment_of("tv2"), Some(("tenant1", false)));
        assert_eq!(g.environment_of("tv5"), Some(("t2", false)));
        assert_eq!(g.environment_of("tv9"), None);
        assert!(!g.is_empty());
        assert!(Groups::new(&BTreeMap::new(), &[]).unwrap().is_empty());
    }

    #[test]
    fn contradictory_groups_are_refused_with_the_field() {
        let e = Groups::new(&domains(&[("d0", &["th1"]), ("d1", &["th1"])]), &[]).unwrap_err();
        assert_eq!(e.field, "groups.domains.d1[0]");
        assert!(e.message.contains("already in domain \"d0\""), "{e}");
        let e = Groups::new(
            &BTreeMap::new(),
            &[env("a", &["tv1"], None), env("b", &["tv2", "tv1"], None)],
        )
        .unwrap_err();
        assert_eq!(e.field, "groups.environments[1].members[1]");
        let e = Groups::new(&BTreeMap::new(), &[env("a", &["tv1"], Some("tv2"))]).unwrap_err();
        assert_eq!(e.field, "groups.environments[0].head");
        let e = Groups::new(
            &BTreeMap::new(),
            &[env("a", &["tv1"], None), env("a", &["x"], None)],
        )
        .unwrap_err();
        assert!(e.message.contains("defined twice"), "{e}");
        let e = Groups::new(&BTreeMap::new(), &[env("a", &[], None)]).unwrap_err();
        assert_eq!(e.field, "groups.environments[0].members");
        let e = Groups::new(&domains(&[("", &["th1"])]), &[]).unwrap_err();
        assert_eq!(e.field, "groups.domains.");
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(Groups::new(&BTreeMap::new(), &[env("a", &[long.as_str()], None)]).is_err());
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("v{i}")).collect();
        let e = Groups::new(
            &BTreeMap::new(),
            &[EnvironmentSpec {
                name: "big".into(),
                members: many,
                head: None,
            }],
        )
        .unwrap_err();
        assert_eq!(e.field, "groups");
    }

    /// A VM of a test registration: name, environment, head.
    type TestVm<'a> = (&'a str, Option<&'a str>, bool);
    /// A test registration: host id, domain, VMs.
    type TestHost<'a> = (&'a str, Option<&'a str>, &'a [TestVm<'a>]);

    fn registry(hosts: &[TestHost<'_>]) -> HostRegistry {
        use crate::monitor::hosts::tests::{reg, vm};
        let mut r = HostRegistry::default();
        for (i, (id, domain, vms)) in hosts.iter().enumerate() {
            let inv = vms
                .iter()
                .enumerate()
                .map(|(j, (name, env, head))| {
                    let mut v = vm(name, &format!("02:00:00:00:{i:02x}:{j:02x}"));
                    v.environment = env.map(str::to_string);
                    v.environment_head = *head;
                    v
                })
                .collect();
            let mut g = reg(id, 0x40 + i as u64, inv);
            g.domain = domain.map(str::to_string);
            r.register(id, g, 0).unwrap();
        }
        r
    }

    /// With no set, the registrations are the groups.
    #[test]
    fn registrations_alone_make_the_groups() {
        let r = registry(&[
            (
                "h1",
                Some("d0"),
                &[("a", Some("t1"), true), ("b", Some("t1"), false)],
            ),
            (
                "h2",
                Some("d1"),
                &[("c", Some("t2"), false), ("x", None, false)],
            ),
            ("h3", None, &[]),
        ]);
        let base = Groups::default();
        let g = EffectiveGroups::new(&base, &r);
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
        assert_eq!(g.domain_of("h1"), Some("d0"));
        assert_eq!(g.domain_of("h2"), Some("d1"));
        assert_eq!(g.domain_of("h3"), None);
        assert_eq!(g.environment_of("a"), Some(("t1", true)));
        assert_eq!(g.environment_of("b"), Some(("t1", false)));
        assert_eq!(g.environment_of("c"), Some(("t2", false)));
        assert_eq!(g.environment_of("x"), None);
        assert_eq!(g.domains(), domains(&[("d0", &["h1"]), ("d1", &["h2"])]));
        assert_eq!(
            g.environments(),
            vec![env("t1", &["a", "b"], Some("a")), env("t2", &["c"], None)]
        );
        assert_eq!(g.domain_sources("config")["d0"], vec!["registration"]);
    }

    /// The set (API or configuration) wins for what it names; the
    /// registrations fill in the rest; contradictions are resolved
    /// deterministically and reported, never refused.
    #[test]
    fn the_set_wins_registrations_fill_in_and_conflicts_are_warnings() {
        let base = Groups::new(
            &domains(&[("d0", &["h1"])]),
            &[env("t1", &["a", "b"], Some("a"))],
        )
        .unwrap();
        let hosts: &[TestHost<'_>] = &[
            // h1: domain contradicts the set; b's head claim too; c joins
            // t1 (named by no set entry) but t1 has a head already.
            (
                "h1",
                Some("d9"),
                &[("b", Some("t1"), true), ("c", Some("t1"), true)],
            ),
            // h2 fills in; v claimed as t3's head here and as t4 on h3.
            (
                "h2",
                Some("d1"),
                &[("v", Some("t3"), true), ("w", Some("t3"), true)],
            ),
            (
                "h3",
                Some("d1"),
                &[("v", Some("t4"), false), ("a", None, false)],
            ),
        ];
        let r = registry(hosts);
        let g = EffectiveGroups::new(&base, &r);
        assert_eq!(g.domain_of("h1"), Some("d0"), "the set wins");
        assert_eq!(g.domain_of("h2"), Some("d1"));
        assert_eq!(g.domain_of("h3"), Some("d1"));
        assert_eq!(g.environment_of("a"), Some(("t1", true)));
        assert_eq!(g.environment_of("b"), Some(("t1", false)), "the set wins");
        assert_eq!(g.environment_of("c"), Some(("t1", false)), "t1 has a head");
        // v: h2 is first by id; head of t3 (first by name), w a member.
        assert_eq!(g.environment_of("v"), Some(("t3", true)));
        assert_eq!(g.environment_of("w"), Some(("t3", false)));
        let subjects: Vec<&str> = g.warnings.iter().map(|w| w.subject.as_str()).collect();
        assert_eq!(
            subjects,
            vec!["host h1", "vm b", "vm v", "vm c", "vm w"],
            "{:#?}",
            g.warnings
        );
        assert!(
            g.warnings[0].message.contains("\"d0\", which applies"),
            "{:?}",
            g.warnings[0]
        );
        assert!(
            g.warnings[2].message.contains("h2's applies"),
            "{:?}",
            g.warnings[2]
        );
        assert_eq!(
            g.domains(),
            domains(&[("d0", &["h1"]), ("d1", &["h2", "h3"])])
        );
        assert_eq!(
            g.environments(),
            vec![
                env("t1", &["a", "b", "c"], Some("a")),
                env("t3", &["v", "w"], Some("v")),
            ]
        );
        let src = g.environment_sources("api");
        assert_eq!(src["t1"], vec!["api", "registration"]);
        assert_eq!(src["t3"], vec!["registration"]);
        assert_eq!(g.domain_sources("api")["d0"], vec!["api"]);
        // The same whatever order the hosts registered in.
        let mut rev = hosts.to_vec();
        rev.reverse();
        let r2 = registry(&rev);
        let g2 = EffectiveGroups::new(&base, &r2);
        assert_eq!(g2.warnings, g.warnings);
        assert_eq!(g2.environments(), g.environments());
        // Warnings are bounded.
        let many: Vec<(String, Option<&str>, bool)> = (0..MAX_WARNINGS + 5)
            .map(|i| (format!("m{i:03}"), Some("t1"), true))
            .collect();
        let many: Vec<(&str, Option<&str>, bool)> =
            many.iter().map(|(n, e, h)| (n.as_str(), *e, *h)).collect();
        let r3 = registry(&[("h1", None, &many)]);
        let g3 = EffectiveGroups::new(&base, &r3);
        assert_eq!(g3.warnings.len(), MAX_WARNINGS);
        assert_eq!(g3.warnings_omitted, 5);
    }
}
