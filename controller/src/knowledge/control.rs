//! The operator's control over the loop, as plain data: automation levels
//! (global and per VM) and the hosts in maintenance.
//!
//! Both reach planning as placement rules the snapshot adds to the
//! operator's own ([`Control::rules_for`]): a host in maintenance is
//! excluded for every VM (nothing is placed there), and a VM at level
//! `manual` is pinned where it runs (no policy moves it). A VM at level
//! `recommend` is planned for as usual; the loop records its decisions as
//! recommendations instead of executing them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::knowledge::rules::{Rule, RuleSet};

/// Longest VM or host name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Most per-VM levels accepted.
pub const MAX_VM_LEVELS: usize = 100_000;
/// Most hosts in maintenance at once.
pub const MAX_MAINTENANCE: usize = 10_000;

/// How far Shoal may act on a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Never moved by Shoal (an operator may still move it).
    Manual,
    /// Decisions are recorded as recommendations an operator approves.
    Recommend,
    /// Decisions are executed.
    #[default]
    Auto,
}

impl Level {
    /// Its name as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Manual => "manual",
            Level::Recommend => "recommend",
            Level::Auto => "auto",
        }
    }
}

/// Automation levels: the global one and the VMs that differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Automation {
    /// Every VM's level unless listed in `vms`.
    #[serde(default)]
    pub level: Level,
    /// Per-VM levels.
    #[serde(default)]
    pub vms: BTreeMap<String, Level>,
}

/// Why automation levels were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A name is empty, too long or has control characters.
    #[error("{what} {name:?} must be 1 to {MAX_NAME_LEN} characters without control characters")]
    BadName {
        /// `VM` or `host`.
        what: &'static str,
        /// The name (truncated).
        name: String,
    },
    /// Too many entries.
    #[error("too many {what}: at most {max}")]
    TooMany {
        /// What.
        what: &'static str,
        /// The bound.
        max: usize,
    },
}

/// Checks a VM or host name as the rest of the controller does.
pub fn check_name(what: &'static str, name: &str) -> Result<(), ControlError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ControlError::BadName {
            what,
            name: name.chars().take(MAX_NAME_LEN).collect(),
        });
    }
    Ok(())
}

impl Automation {
    /// The level of `vm`.
    pub fn level_of(&self, vm: &str) -> Level {
        self.vms.get(vm).copied().unwrap_or(self.level)
    }

    /// Checks names and size.
    pub fn validate(&self) -> Result<(), ControlError> {
        if self.vms.len() > MAX_VM_LEVELS {
            return Err(ControlError::TooMany {
                what: "per-VM levels",
                max: MAX_VM_LEVELS,
            });
        }
        self.vms.keys().try_for_each(|v| check_name("VM", v))
    }
}

/// A host in maintenance: since when and who asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceEntry {
    /// Unix ms it started.
    pub since_unix_ms: i64,
    /// Who started it (the credential's name).
    pub by: String,
}

/// The operator's control state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// Automation levels.
    pub automation: Automation,
    /// Hosts in maintenance.
    pub maintenance: BTreeMap<String, MaintenanceEntry>,
}

/// Name of the rule that keeps VMs off the hosts in maintenance.
pub const MAINTENANCE_RULE: &str = "maintenance";
/// Prefix of the rules that keep `manual` VMs where they run.
pub const MANUAL_RULE_PREFIX: &str = "manual:";

impl Control {
    /// The rules planning obeys: the operator's `rules`, then one `exclude`
    /// of every host in maintenance, then a `pin` of each `manual` VM to
    /// `host_of` it (VMs whose host is unknown are left out).
    pub fn rules_for<'a>(
        &self,
        rules: &RuleSet,
        vms: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> RuleSet {
        let mut out = rules.clone();
        if !self.maintenance.is_empty() {
            out.rules.push(Rule::Exclude {
                name: MAINTENANCE_RULE.into(),
                hosts: self.maintenance.keys().cloned().collect(),
                vms: None,
            });
        }
        let any_manual = self.automation.level == Level::Manual
            || self.automation.vms.values().any(|l| *l == Level::Manual);
        if any_manual {
            for (vm, host) in vms {
                if self.automation.level_of(vm) == Level::Manual {
                    out.rules.push(Rule::Pin {
                        name: format!("{MANUAL_RULE_PREFIX}{vm}"),
                        vms: vec![vm.to_string()],
                        hosts: vec![host.to_string()],
                    });
                }
            }
        }
        out
    }

    /// Whether nothing is set (the rules are the operator's alone).
    pub fn is_neutral(&self) -> bool {
        self.maintenance.is_empty()
            && self.automation.level != Level::Manual
            && !self.automation.vms.values().any(|l| *l == Level::Manual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_rules() {
        let mut c = Control::default();
        assert!(c.is_neutral());
        let vms = [("a", "h1"), ("b", "h2")];
        assert_eq!(
            c.rules_for(&RuleSet::default(), vms.iter().copied()).len(),
            0
        );
        c.automation.vms.insert("b".into(), Level::Manual);
        c.maintenance.insert(
            "h1".into(),
            MaintenanceEntry {
                since_unix_ms: 1,
                by: "alice".into(),
            },
        );
        assert!(!c.is_neutral());
        let r = c.rules_for(&RuleSet::default(), vms.iter().copied());
        assert_eq!(
            r.rules,
            vec![
                Rule::Exclude {
                    name: "maintenance".into(),
                    hosts: vec!["h1".into()],
                    vms: None
                },
                Rule::Pin {
                    name: "manual:b".into(),
                    vms: vec!["b".into()],
                    hosts: vec!["h2".into()]
                },
            ]
        );
        assert_eq!(c.automation.level_of("a"), Level::Auto);
        assert_eq!(c.automation.level_of("b"), Level::Manual);
        let a: Automation =
            serde_json::from_str(r#"{"level":"recommend","vms":{"x":"manual"}}"#).expect("json");
        assert_eq!(a.level_of("y"), Level::Recommend);
        assert!(serde_json::from_str::<Automation>(r#"{"level":"sometimes"}"#).is_err());
        assert!(serde_json::from_str::<Automation>(r#"{"lvl":"auto"}"#).is_err());
        let bad = Automation {
            level: Level::Auto,
            vms: [("".to_string(), Level::Auto)].into_iter().collect(),
        };
        assert!(bad.validate().is_err());
    }
}
