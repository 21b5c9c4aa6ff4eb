//! Queries of the history the knowledge store keeps: decisions,
//! migrations and the operators' audit trail (issue 18, "History and
//! audit"). Both store backends answer them with the same semantics; the
//! matching rules live here so that they are one.
//!
//! Every query is bounded: at most [`MAX_LIMIT`] rows, the newest matching
//! ones (below a cursor when given), returned oldest first.

use serde::{Deserialize, Serialize};

/// Rows one history query returns at most.
pub const MAX_LIMIT: usize = 500;

/// The class of a decision's outcome text: its first word without
/// punctuation (`queued as mig-…` → `queued`, `rejected: …` → `rejected`),
/// at most 32 characters of `[a-z0-9_]`, `other` when empty.
pub fn outcome_class(outcome: &str) -> String {
    let w: String = outcome
        .split(|c: char| c.is_whitespace() || c == ':' || c == '(')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(32)
        .collect::<String>()
        .to_ascii_lowercase();
    if w.is_empty() {
        "other".into()
    } else {
        w
    }
}

/// Whether a decision (its JSON as the planner produced it) is about VM
/// `vm`: its `vm` field.
pub fn decision_has_vm(decision: &serde_json::Value, vm: &str) -> bool {
    decision.get("vm").and_then(|v| v.as_str()) == Some(vm)
}

/// Whether a decision involves host `host`: its `from`, `to` or `host`
/// field (a migration's source or destination, a VF or resize action's
/// host).
pub fn decision_has_host(decision: &serde_json::Value, host: &str) -> bool {
    ["from", "to", "host"]
        .iter()
        .any(|k| decision.get(*k).and_then(|v| v.as_str()) == Some(host))
}

/// A query of the decisions ([`Store::decisions_query`](super::store::Store::decisions_query)):
/// the newest `limit` rows matching every filter given, with an id below
/// `before_id`, returned oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionQuery {
    /// Rows last seen (`last_ms`) at or after this Unix ms.
    pub since_ms: Option<i64>,
    /// Rows first made (`at_ms`) at or before this Unix ms.
    pub until_ms: Option<i64>,
    /// About this VM (the decision's `vm`).
    pub vm: Option<String>,
    /// Involving this host (the decision's `from`, `to` or `host`).
    pub host: Option<String>,
    /// Made by this policy.
    pub policy: Option<String>,
    /// Whose outcome is of this class ([`outcome_class`]: `recommended`,
    /// `queued`, `skipped`, …).
    pub outcome: Option<String>,
    /// Rows with an id below this one (the previous page's first id).
    pub before_id: Option<i64>,
    /// Rows at most (capped at [`MAX_LIMIT`]).
    pub limit: usize,
}

impl DecisionQuery {
    /// The limit, capped at [`MAX_LIMIT`].
    pub fn capped_limit(&self) -> usize {
        self.limit.min(MAX_LIMIT)
    }

    /// Whether a decision row matches the filters (the cursor aside): first
    /// made at `at_ms`, last seen at `last_ms`.
    pub fn matches(
        &self,
        at_ms: i64,
        last_ms: i64,
        policy: &str,
        decision: &serde_json::Value,
        outcome: &str,
    ) -> bool {
        self.since_ms.is_none_or(|t| last_ms.max(at_ms) >= t)
            && self.until_ms.is_none_or(|t| at_ms <= t)
            && self.policy.as_deref().is_none_or(|p| p == policy)
            && self
                .vm
                .as_deref()
                .is_none_or(|v| decision_has_vm(decision, v))
            && self
                .host
                .as_deref()
                .is_none_or(|h| decision_has_host(decision, h))
            && self
                .outcome
                .as_deref()
                .is_none_or(|o| outcome_class(outcome) == outcome_class(o))
    }

    /// Whether the cursor lets row `id` through.
    pub fn below_cursor(&self, id: i64) -> bool {
        self.before_id.is_none_or(|b| id < b)
    }
}

/// A query of the migration records
/// ([`Store::migrations_query`](super::store::Store::migrations_query)):
/// the newest `limit` (by creation time, then id) matching every filter
/// given, created before the migration `before`, returned oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationQuery {
    /// In this state (`queued`, `running`, `done`, …).
    pub state: Option<String>,
    /// Of this VM.
    pub vm: Option<String>,
    /// From or to this host (the record's `from` or `to`).
    pub host: Option<String>,
    /// Created at or after this Unix ms.
    pub since_ms: Option<i64>,
    /// Created at or before this Unix ms.
    pub until_ms: Option<i64>,
    /// Records before this migration (id; the previous page's first) in
    /// (creation time, id) order. An id the store does not have matches
    /// nothing.
    pub before: Option<String>,
    /// Rows at most (capped at [`MAX_LIMIT`]).
    pub limit: usize,
}

impl MigrationQuery {
    /// The limit, capped at [`MAX_LIMIT`].
    pub fn capped_limit(&self) -> usize {
        self.limit.min(MAX_LIMIT)
    }

    /// Whether a stored migration matches the filters (the cursor aside);
    /// `record` is its JSON text (read only for a host filter).
    pub fn matches(&self, vm: &str, state: &str, created_ms: i64, record: &str) -> bool {
        self.state.as_deref().is_none_or(|s| s == state)
            && self.vm.as_deref().is_none_or(|v| v == vm)
            && self.since_ms.is_none_or(|t| created_ms >= t)
            && self.until_ms.is_none_or(|t| created_ms <= t)
            && self.host.as_deref().is_none_or(|h| {
                serde_json::from_str::<serde_json::Value>(record).is_ok_and(|r| {
                    ["from", "to"]
                        .iter()
                        .any(|k| r.get(*k).and_then(|v| v.as_str()) == Some(h))
                })
            })
    }
}

/// One entry of the audit trail: an operator's change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Row id (increasing).
    pub id: i64,
    /// Unix ms.
    pub at_ms: i64,
    /// Who: the credential's name.
    pub actor: String,
    /// What: `policy.set`, `migration.create`, `rules.add`, …
    pub action: String,
    /// On what: a migration id, a rule name, a policy name, …
    pub target: String,
    /// The details (JSON), e.g. the request and its outcome.
    pub detail: serde_json::Value,
}

/// A query of the audit trail
/// ([`Store::audit`](super::store::Store::audit)): the newest `limit`
/// entries matching every filter given, with an id below `before_id`,
/// returned oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// At or after this Unix ms.
    pub since_ms: Option<i64>,
    /// At or before this Unix ms.
    pub until_ms: Option<i64>,
    /// By this actor.
    pub actor: Option<String>,
    /// This action (exactly), or every action under a prefix ending in
    /// `.` (`migration.` matches `migration.create` and
    /// `migration.cancel`).
    pub action: Option<String>,
    /// On this target.
    pub target: Option<String>,
    /// Entries with an id below this one (the previous page's first id).
    pub before_id: Option<i64>,
    /// Entries at most (capped at [`MAX_LIMIT`]).
    pub limit: usize,
}

impl AuditQuery {
    /// The limit, capped at [`MAX_LIMIT`].
    pub fn capped_limit(&self) -> usize {
        self.limit.min(MAX_LIMIT)
    }

    /// Whether an entry matches the filters (the cursor aside).
    pub fn matches(&self, at_ms: i64, actor: &str, action: &str, target: &str) -> bool {
        self.since_ms.is_none_or(|t| at_ms >= t)
            && self.until_ms.is_none_or(|t| at_ms <= t)
            && self.actor.as_deref().is_none_or(|a| a == actor)
            && self.target.as_deref().is_none_or(|t| t == target)
            && self.action.as_deref().is_none_or(|a| {
                if a.ends_with('.') {
                    action.starts_with(a)
                } else {
                    a == action
                }
            })
    }

    /// Whether the cursor lets entry `id` through.
    pub fn below_cursor(&self, id: i64) -> bool {
        self.before_id.is_none_or(|b| id < b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcome_classes() {
        assert_eq!(outcome_class("queued as mig-1"), "queued");
        assert_eq!(outcome_class("rejected: no room"), "rejected");
        assert_eq!(outcome_class("Dry_Run"), "dry_run");
        assert_eq!(outcome_class(""), "other");
        assert_eq!(outcome_class("skipped(busy)"), "skipped");
    }

    #[test]
    fn decision_filters() {
        let d = json!({"action": "migrate", "vm": "v1", "from": "h1", "to": "h2"});
        let q = |f: &dyn Fn(&mut DecisionQuery)| {
            let mut q = DecisionQuery::default();
            f(&mut q);
            q.matches(10, 20, "sandpiper", &d, "queued as mig-1")
        };
        assert!(q(&|_| {}));
        assert!(q(&|q| q.vm = Some("v1".into())));
        assert!(!q(&|q| q.vm = Some("v2".into())));
        assert!(q(&|q| q.host = Some("h2".into())));
        assert!(!q(&|q| q.host = Some("h3".into())));
        assert!(q(&|q| q.outcome = Some("queued".into())));
        assert!(!q(&|q| q.outcome = Some("recommended".into())));
        assert!(q(&|q| q.since_ms = Some(20)));
        assert!(!q(&|q| q.since_ms = Some(21)));
        assert!(q(&|q| q.until_ms = Some(10)));
        assert!(!q(&|q| q.until_ms = Some(9)));
        assert!(!q(&|q| q.policy = Some("idc".into())));
    }

    #[test]
    fn audit_action_prefixes() {
        let q = AuditQuery {
            action: Some("migration.".into()),
            ..Default::default()
        };
        assert!(q.matches(1, "a", "migration.create", "m"));
        assert!(!q.matches(1, "a", "policy.set", "m"));
        let q = AuditQuery {
            action: Some("migration".into()),
            ..Default::default()
        };
        assert!(!q.matches(1, "a", "migration.create", "m"));
    }
}
