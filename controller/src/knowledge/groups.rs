//! Configured groups the live snapshot carries: VIOLIN's domains (groups of
//! hosts) and virtual environments (a tenant's group of VMs, with an
//! optional head node that stays in its domain).
//!
//! The simulator reads the same facts from its scenario file; in live mode
//! they come from the controller's `[groups]` configuration (reloaded on
//! SIGHUP). A host without a domain is in its pod's; a VM without an
//! environment belongs to none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
        }
        Ok(g)
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
}
