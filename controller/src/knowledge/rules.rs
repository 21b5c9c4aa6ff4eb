//! Placement rules: the operator's constraints on where VMs may run, as
//! plain data (the snapshot carries them, the store persists them, the
//! scenario format and the configuration spell them in this form).
//!
//! What each kind means, its validation (contradictions are refused) and
//! its enforcement for every policy live in [`crate::plan::rules`] and
//! [`crate::plan::constraints`]; `docs/algorithms.md`, "Placement rules",
//! describes them.
//!
//! JSON form (one object per rule, `kind` first; unknown fields are
//! refused):
//!
//! ```json
//! [
//!   {"kind": "pin", "name": "db-on-ssd", "vms": ["db1", "db2"], "hosts": ["h1", "h2"]},
//!   {"kind": "exclude", "name": "drain-h3", "hosts": ["h3"]},
//!   {"kind": "exclude", "name": "web-not-h4", "hosts": ["h4"], "vms": ["web1"]},
//!   {"kind": "affinity", "name": "app-cache", "vms": ["app", "cache"], "scope": "host"},
//!   {"kind": "anti_affinity", "name": "replicas", "vms": ["db1", "db2"], "scope": "rack"},
//!   {"kind": "host_limit", "name": "at-most-8", "max_vms": 8},
//!   {"kind": "reserve", "name": "headroom", "hosts": ["h1"], "cpu": 0.2, "mem": 0.1}
//! ]
//! ```

use serde::{Deserialize, Serialize};

/// Longest rule name, VM name or host id accepted in a rule.
pub const MAX_NAME_LEN: usize = 128;
/// Most rules in one set.
pub const MAX_RULES: usize = 10_000;
/// Most names (VMs and hosts over all rules) in one set.
pub const MAX_ENTRIES: usize = 100_000;

/// An ordered list of rules; serialises as a JSON array of [`Rule`]s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuleSet {
    /// The rules, in the operator's order (names are unique).
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// A set of these rules (not validated).
    pub fn new(rules: Vec<Rule>) -> Self {
        RuleSet { rules }
    }

    /// No rule at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The rule called `name`.
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name() == name)
    }
}

/// The scope of an affinity rule: the members share one host, one rack
/// (ToR) or one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AffinityScope {
    /// One host.
    Host,
    /// One rack (the hosts of one ToR).
    Rack,
    /// One pod (ToRs sharing an aggregation switch).
    Pod,
}

/// The scope of an anti-affinity rule: no two members on one host, or in
/// one rack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AntiAffinityScope {
    /// Never two on one host.
    Host,
    /// Never two in one rack.
    Rack,
}

/// One placement rule. Every rule has an operator-given `name`, unique in
/// its set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// The VMs run only on these hosts.
    Pin {
        /// Rule name.
        name: String,
        /// The pinned VMs.
        vms: Vec<String>,
        /// The hosts they may run on.
        hosts: Vec<String>,
    },
    /// No VM (or none of `vms`) may be placed on these hosts.
    Exclude {
        /// Rule name.
        name: String,
        /// The excluded hosts.
        hosts: Vec<String>,
        /// The VMs it applies to; absent = every VM.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vms: Option<Vec<String>>,
    },
    /// The VMs stay together on one host, in one rack or in one pod.
    Affinity {
        /// Rule name.
        name: String,
        /// The VMs (at least two).
        vms: Vec<String>,
        /// Host, rack or pod.
        scope: AffinityScope,
    },
    /// No two of the VMs on one host (or in one rack).
    AntiAffinity {
        /// Rule name.
        name: String,
        /// The VMs (at least two).
        vms: Vec<String>,
        /// Host or rack.
        scope: AntiAffinityScope,
    },
    /// At most `max_vms` VMs on each of these hosts.
    HostLimit {
        /// Rule name.
        name: String,
        /// The hosts; absent = every host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hosts: Option<Vec<String>>,
        /// VMs per host, at least 1.
        max_vms: u32,
    },
    /// Fractions of the capacity of these hosts kept free: no migration
    /// may bring a host above `1 − fraction` of a resource.
    Reserve {
        /// Rule name.
        name: String,
        /// The hosts; absent = every host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hosts: Option<Vec<String>>,
        /// CPU kept free, a fraction in (0, 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpu: Option<f64>,
        /// Memory kept free, a fraction in (0, 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mem: Option<f64>,
        /// NIC capacity kept free (the busier direction), a fraction in
        /// (0, 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        net: Option<f64>,
    },
}

impl Rule {
    /// The rule's name.
    pub fn name(&self) -> &str {
        match self {
            Rule::Pin { name, .. }
            | Rule::Exclude { name, .. }
            | Rule::Affinity { name, .. }
            | Rule::AntiAffinity { name, .. }
            | Rule::HostLimit { name, .. }
            | Rule::Reserve { name, .. } => name,
        }
    }

    /// The kind as written in JSON: `pin`, `exclude`, `affinity`,
    /// `anti_affinity`, `host_limit`, `reserve`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Pin { .. } => "pin",
            Rule::Exclude { .. } => "exclude",
            Rule::Affinity { .. } => "affinity",
            Rule::AntiAffinity { .. } => "anti_affinity",
            Rule::HostLimit { .. } => "host_limit",
            Rule::Reserve { .. } => "reserve",
        }
    }

    /// The VMs it names (`None`: it applies to every VM, or to hosts only).
    pub fn vms(&self) -> Option<&[String]> {
        match self {
            Rule::Pin { vms, .. } | Rule::Affinity { vms, .. } | Rule::AntiAffinity { vms, .. } => {
                Some(vms)
            }
            Rule::Exclude { vms, .. } => vms.as_deref(),
            Rule::HostLimit { .. } | Rule::Reserve { .. } => None,
        }
    }

    /// The hosts it names (`None`: every host, or none).
    pub fn hosts(&self) -> Option<&[String]> {
        match self {
            Rule::Pin { hosts, .. } | Rule::Exclude { hosts, .. } => Some(hosts),
            Rule::HostLimit { hosts, .. } | Rule::Reserve { hosts, .. } => hosts.as_deref(),
            Rule::Affinity { .. } | Rule::AntiAffinity { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_round_trips() {
        let text = r#"[
            {"kind":"pin","name":"p","vms":["a"],"hosts":["h1","h2"]},
            {"kind":"exclude","name":"e","hosts":["h3"]},
            {"kind":"exclude","name":"e2","hosts":["h4"],"vms":["b"]},
            {"kind":"affinity","name":"f","vms":["a","b"],"scope":"pod"},
            {"kind":"anti_affinity","name":"n","vms":["a","c"],"scope":"rack"},
            {"kind":"host_limit","name":"l","max_vms":4},
            {"kind":"reserve","name":"r","hosts":["h1"],"cpu":0.2,"net":0.5}
        ]"#;
        let set: RuleSet = serde_json::from_str(text).unwrap();
        assert_eq!(set.len(), 7);
        assert_eq!(set.rules[4].kind(), "anti_affinity");
        assert_eq!(set.get("l").map(Rule::hosts), Some(None));
        let back: RuleSet = serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
        assert_eq!(back, set);
        let one = serde_json::to_string(&set.rules[1]).unwrap();
        assert_eq!(one, r#"{"kind":"exclude","name":"e","hosts":["h3"]}"#);
    }

    #[test]
    fn unknown_fields_kinds_and_scopes_are_refused() {
        for bad in [
            r#"{"kind":"pin","name":"p","vms":["a"],"hosts":["h"],"extra":1}"#,
            r#"{"kind":"pinned","name":"p","vms":["a"],"hosts":["h"]}"#,
            r#"{"kind":"anti_affinity","name":"n","vms":["a","b"],"scope":"pod"}"#,
            r#"{"kind":"affinity","name":"f","vms":["a","b"]}"#,
            r#"{"name":"p","vms":["a"],"hosts":["h"]}"#,
        ] {
            assert!(serde_json::from_str::<Rule>(bad).is_err(), "{bad}");
        }
    }
}
