//! History and audit (`docs/operations.md`, "History and audit"): the
//! decisions, the migrations and the operators' changes, read from the
//! knowledge store with filters and pages, so that they outlive a restart.
//!
//! - `GET /api/v1/decisions?since=&until=&vm=&host=&policy=&outcome=&pending=&before_id=&limit=`;
//! - `GET /api/v1/migrations?state=&vm=&host=&since=&until=&before=&limit=`;
//! - `GET /api/v1/audit?since=&until=&actor=&action=&target=&before_id=&limit=`.
//!
//! Each answers a JSON array, newest last: the newest `limit` (1..=500,
//! default 50) entries matching every filter given; the next page back is
//! asked for with the first entry's id (`before_id`, or `before` for
//! migrations). Times are Unix ms. An unknown parameter, a limit out of
//! range or `since` after `until` is a 400.
//!
//! [`audit`] records an operator's change (actor, action, target, detail)
//! in the store and announces it on the event stream (`audit`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::warn;

use super::auth::Principal;
use super::{ApiError, ApiState};
use crate::execute::orchestrator::{MigState, Migration};
use crate::knowledge::history::{AuditQuery, DecisionQuery, MigrationQuery, MAX_LIMIT};
use crate::knowledge::store::{DecisionRow, StoreExt};

/// Entries a history request returns when it gives no limit.
pub const DEFAULT_LIMIT: usize = 50;

/// The routes of this module (`GET /api/v1/decisions` and
/// `GET /api/v1/migrations` are routed by `ops`, which calls
/// [`decisions`] and [`migrations`]).
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/api/v1/audit", get(audit_list))
}

/// The actor of a change: the credential's name (`host:<id>` for a host
/// daemon).
pub fn actor(who: &Principal) -> String {
    match who {
        Principal::Operator { name, .. } => name.clone(),
        Principal::Host(id) => format!("host:{id}"),
    }
}

/// Records an operator's change: in the knowledge store's audit trail
/// (synchronously, through the store, which runs off the tokio workers)
/// and as an `audit` event on the event stream. Never fails: a store that
/// cannot write is logged (warning) and the change goes on.
///
/// `action` is `<object>.<verb>` (`policy.set`, `migration.create`, …),
/// `target` what it is about (a migration id, a rule name, …); `detail`
/// holds the request's gist and, by convention, `"outcome"`: `"done"`, or
/// `"refused: <reason>"` for an attempt that was refused.
pub fn audit(state: &ApiState, who: &Principal, action: &str, target: &str, detail: Value) {
    let at = crate::knowledge::clock::now_unix_ms();
    let actor = actor(who);
    let mut id = None;
    if let Some(store) = &state.knowledge.store {
        match store.record_audit(at, &actor, action, target, &detail) {
            Ok(i) => id = Some(i),
            Err(e) => {
                warn!(error = %e, %actor, action, target, "cannot record an operator's change in the audit trail")
            }
        }
    }
    state.knowledge.events.publish(
        "audit",
        json!({
            "id": id,
            "at_unix_ms": at,
            "actor": actor,
            "action": action,
            "target": target,
            "detail": detail,
        }),
    );
}

/// `"outcome"` of an audit entry: `done`, or `refused: <why>`.
pub fn outcome_of<T, E: std::fmt::Display>(r: &Result<T, E>) -> Value {
    match r {
        Ok(_) => Value::from("done"),
        Err(e) => Value::from(format!("refused: {e}")),
    }
}

fn limit_of(limit: Option<usize>) -> Result<usize, ApiError> {
    let n = limit.unwrap_or(DEFAULT_LIMIT);
    if n == 0 || n > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be in 1..={MAX_LIMIT}"
        )));
    }
    Ok(n)
}

fn times(since: Option<i64>, until: Option<i64>) -> Result<(), ApiError> {
    match (since, until) {
        (Some(a), Some(b)) if a > b => Err(ApiError::BadRequest(format!(
            "since ({a}) is after until ({b})"
        ))),
        _ => Ok(()),
    }
}

/// An empty filter is no filter.
fn given(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.is_empty())
}

fn store_error(e: crate::knowledge::store::StoreError) -> ApiError {
    ApiError::Unavailable(format!("the history cannot be read: {e}"))
}

// ---- decisions -------------------------------------------------------------

/// Query of `GET /api/v1/decisions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionParams {
    /// Rows last seen at or after (Unix ms).
    pub since: Option<i64>,
    /// Rows first made at or before (Unix ms).
    pub until: Option<i64>,
    /// About this VM.
    pub vm: Option<String>,
    /// Involving this host (source, destination or host).
    pub host: Option<String>,
    /// Made by this policy.
    pub policy: Option<String>,
    /// Outcome class (`recommended`, `queued`, `skipped`, `dry_run`, …).
    pub outcome: Option<String>,
    /// `true`: only recommendations waiting for an operator
    /// (`outcome=recommended`).
    pub pending: Option<bool>,
    /// Rows with an id below this one.
    pub before_id: Option<i64>,
    /// Rows at most (1..=500, default 50).
    pub limit: Option<usize>,
}

impl DecisionParams {
    /// The store's query (validated).
    pub fn query(self) -> Result<DecisionQuery, ApiError> {
        let limit = limit_of(self.limit)?;
        times(self.since, self.until)?;
        let mut outcome = given(self.outcome);
        if self.pending == Some(true) {
            match &outcome {
                Some(o) if crate::knowledge::history::outcome_class(o) != "recommended" => {
                    return Err(ApiError::BadRequest(format!(
                        "pending=true asks for outcome=recommended, not outcome={o}"
                    )))
                }
                _ => outcome = Some("recommended".into()),
            }
        }
        Ok(DecisionQuery {
            since_ms: self.since,
            until_ms: self.until,
            vm: given(self.vm),
            host: given(self.host),
            policy: given(self.policy),
            outcome,
            before_id: self.before_id,
            limit,
        })
    }
}

/// A decision as the API shows it: `id`, `round`, `at_unix_ms`, `policy`,
/// the decision's own fields (`action`, `vm`, …, `reason`, `score`,
/// `details`), `outcome`, `count` (identical repeats) and `last_unix_ms`.
fn decision_view(d: &DecisionRow) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), d.id.into());
    m.insert("round".into(), d.round.into());
    m.insert("at_unix_ms".into(), d.at_ms.into());
    m.insert("policy".into(), d.policy.clone().into());
    match &d.decision {
        Value::Object(fields) => {
            for (k, v) in fields {
                m.insert(k.clone(), v.clone());
            }
        }
        other => {
            m.insert("decision".into(), other.clone());
        }
    }
    m.insert("outcome".into(), d.outcome.clone().into());
    m.insert("count".into(), d.count.into());
    m.insert("last_unix_ms".into(), d.last_ms.into());
    Value::Object(m)
}

/// The loop's recent decisions (`DecisionView`s as JSON, oldest first)
/// that `q` asks for, with `count` 1 and `last_unix_ms`: the answer
/// without a store.
fn filter_live(q: &DecisionQuery, live: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = live
        .into_iter()
        .filter_map(|mut v| {
            let id = v.get("id").and_then(Value::as_i64).unwrap_or(0);
            let at = v.get("at_unix_ms").and_then(Value::as_i64).unwrap_or(0);
            let policy = v.get("policy").and_then(Value::as_str).unwrap_or("");
            let outcome = v.get("outcome").and_then(Value::as_str).unwrap_or("");
            let ok = q.below_cursor(id) && q.matches(at, at, policy, &v, outcome);
            if let (true, Value::Object(m)) = (ok, &mut v) {
                m.insert("count".into(), 1.into());
                m.insert("last_unix_ms".into(), at.into());
            }
            ok.then_some(v)
        })
        .collect();
    let skip = out.len().saturating_sub(q.capped_limit());
    out.split_off(skip)
}

/// `GET /api/v1/decisions` (routed by `ops`).
pub async fn decisions(
    State(s): State<Arc<ApiState>>,
    q: Result<Query<DecisionParams>, QueryRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let Query(p) = q?;
    let q = p.query()?;
    // The loop's recent decisions, as it shows them (fields the store does
    // not keep, e.g. `expected`, are taken from there).
    let live: Vec<Value> = {
        let l = s
            .live
            .lock()
            .map_err(|_| ApiError::Internal("live state lock poisoned".into()))?;
        l.decisions
            .iter()
            .filter_map(|d| serde_json::to_value(d).ok())
            .collect()
    };
    let Some(store) = &s.knowledge.store else {
        return Ok(Json(filter_live(&q, live)));
    };
    let rows = store.decisions_query(&q).map_err(store_error)?;
    let by_id: BTreeMap<i64, Value> = live
        .into_iter()
        .filter_map(|v| {
            let id = v.get("id").and_then(Value::as_i64)?;
            (id > 0).then_some((id, v))
        })
        .collect();
    Ok(Json(
        rows.iter()
            .map(|d| {
                let mut v = decision_view(d);
                if let (Value::Object(m), Some(Value::Object(l))) = (&mut v, by_id.get(&d.id)) {
                    for (k, x) in l {
                        m.entry(k.clone()).or_insert_with(|| x.clone());
                    }
                }
                v
            })
            .collect(),
    ))
}

// ---- migrations ------------------------------------------------------------

/// Query of `GET /api/v1/migrations`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationParams {
    /// In this state.
    pub state: Option<MigState>,
    /// Of this VM.
    pub vm: Option<String>,
    /// From or to this host.
    pub host: Option<String>,
    /// Created at or after (Unix ms).
    pub since: Option<i64>,
    /// Created at or before (Unix ms).
    pub until: Option<i64>,
    /// Migrations created before this one (its id).
    pub before: Option<String>,
    /// Records at most (1..=500, default 50).
    pub limit: Option<usize>,
}

impl MigrationParams {
    /// The store's query (validated).
    pub fn query(self) -> Result<MigrationQuery, ApiError> {
        let limit = limit_of(self.limit)?;
        times(self.since, self.until)?;
        Ok(MigrationQuery {
            state: self.state.map(|s| s.as_str().to_string()),
            vm: given(self.vm),
            host: given(self.host),
            since_ms: self.since,
            until_ms: self.until,
            before: given(self.before),
            limit,
        })
    }
}

/// Whether a migration record matches `q` (the cursor aside).
fn migration_matches(q: &MigrationQuery, m: &Migration) -> bool {
    q.state.as_deref().is_none_or(|s| s == m.state.as_str())
        && q.vm.as_deref().is_none_or(|v| v == m.vm)
        && q.host.as_deref().is_none_or(|h| h == m.from || h == m.to)
        && q.since_ms.is_none_or(|t| m.created_unix_ms >= t)
        && q.until_ms.is_none_or(|t| m.created_unix_ms <= t)
}

fn unknown_migration(id: &str) -> ApiError {
    ApiError::BadRequest(format!("before: no migration {id:?}"))
}

/// The page of `mem` (the orchestrator's records, oldest first) that `q`
/// asks for: the answer without a store.
fn page_memory(q: &MigrationQuery, mem: Vec<Migration>) -> Result<Vec<Migration>, ApiError> {
    let end = match &q.before {
        Some(b) => mem
            .iter()
            .position(|m| m.id == *b)
            .ok_or_else(|| unknown_migration(b))?,
        None => mem.len(),
    };
    let mut out: Vec<Migration> = mem
        .into_iter()
        .take(end)
        .filter(|m| migration_matches(q, m))
        .collect();
    let skip = out.len().saturating_sub(q.capped_limit());
    Ok(out.split_off(skip))
}

/// `GET /api/v1/migrations` (routed by `ops`): from the store when there is
/// one (the records of earlier runs included), the orchestrator's own
/// record of a migration winning over the stored one (live progress); a
/// migration the store lacks (its write failed) is on the newest page.
pub async fn migrations(
    State(s): State<Arc<ApiState>>,
    q: Result<Query<MigrationParams>, QueryRejection>,
) -> Result<Json<Vec<Migration>>, ApiError> {
    let Query(p) = q?;
    let q = p.query()?;
    let mut mem = s.orchestrator.list_for_api();
    mem.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
    let Some(store) = &s.knowledge.store else {
        return page_memory(&q, mem).map(Json);
    };
    if let Some(b) = &q.before {
        let stored = store.migration_json(b).map_err(store_error)?.is_some();
        if !stored && !mem.iter().any(|m| m.id == *b) {
            return Err(unknown_migration(b));
        }
    }
    // A record this version cannot read (an older one's) is left out.
    let page: Vec<Migration> = store
        .migrations_query(&q)
        .map_err(store_error)?
        .iter()
        .filter_map(|j| match serde_json::from_str::<Migration>(j) {
            Ok(m) => Some(m),
            Err(e) => {
                warn!(error = %e, "a stored migration record cannot be read; left out");
                None
            }
        })
        .collect();
    let mut by_id: BTreeMap<String, Migration> =
        mem.into_iter().map(|m| (m.id.clone(), m)).collect();
    let full = page.len() >= q.limit;
    let oldest = page.first().map(|m| (m.created_unix_ms, m.id.clone()));
    let mut out: Vec<Migration> = page
        .into_iter()
        .map(|m| by_id.remove(&m.id).unwrap_or(m))
        .filter(|m| migration_matches(&q, m))
        .collect();
    if q.before.is_none() {
        // The orchestrator's records not on the page: newer than its
        // oldest (or any, when it is not full) means the store lacks them
        // or has an older state.
        let extra: Vec<Migration> = by_id
            .into_values()
            .filter(|m| migration_matches(&q, m))
            .filter(|m| {
                !full
                    || oldest
                        .as_ref()
                        .is_some_and(|o| (m.created_unix_ms, m.id.clone()) > *o)
            })
            .collect();
        if !extra.is_empty() {
            out.extend(extra);
            out.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
            let skip = out.len().saturating_sub(q.limit);
            out.drain(..skip);
        }
    }
    Ok(Json(out))
}

// ---- audit -----------------------------------------------------------------

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// At or after (Unix ms).
    pub since: Option<i64>,
    /// At or before (Unix ms).
    pub until: Option<i64>,
    /// By this actor (credential name).
    pub actor: Option<String>,
    /// This action, or every action under a prefix ending in `.`.
    pub action: Option<String>,
    /// On this target.
    pub target: Option<String>,
    /// Entries with an id below this one.
    pub before_id: Option<i64>,
    /// Entries at most (1..=500, default 50).
    pub limit: Option<usize>,
}

impl AuditParams {
    /// The store's query (validated).
    pub fn query(self) -> Result<AuditQuery, ApiError> {
        let limit = limit_of(self.limit)?;
        times(self.since, self.until)?;
        Ok(AuditQuery {
            since_ms: self.since,
            until_ms: self.until,
            actor: given(self.actor),
            action: given(self.action),
            target: given(self.target),
            before_id: self.before_id,
            limit,
        })
    }
}

/// One entry of `GET /api/v1/audit`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditView {
    /// Entry id (increasing).
    pub id: i64,
    /// Unix ms.
    pub at_unix_ms: i64,
    /// Who (credential name).
    pub actor: String,
    /// What (`policy.set`, `migration.create`, …).
    pub action: String,
    /// On what.
    pub target: String,
    /// The request's gist and its `outcome`.
    pub detail: Value,
}

async fn audit_list(
    State(s): State<Arc<ApiState>>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let Query(p) = q?;
    let q = p.query()?;
    let Some(store) = &s.knowledge.store else {
        return Err(ApiError::Unavailable(
            "no knowledge store: the audit trail is not kept".into(),
        ));
    };
    let rows = store.audit(&q).map_err(store_error)?;
    Ok(Json(
        rows.into_iter()
            .map(|a| AuditView {
                id: a.id,
                at_unix_ms: a.at_ms,
                actor: a.actor,
                action: a.action,
                target: a.target,
                detail: a.detail,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_store_the_loops_decisions_are_filtered() {
        let live: Vec<Value> = (1..=6)
            .map(|i| {
                json!({
                    "id": i, "round": i, "at_unix_ms": 100 * i, "policy": "sandpiper",
                    "action": "migrate", "vm": format!("v{}", i % 2), "from": "h1", "to": "h2",
                    "outcome": if i % 3 == 0 { "recommended" } else { "dry_run" },
                })
            })
            .collect();
        let ids = |q: DecisionQuery| -> Vec<i64> {
            filter_live(&q, live.clone())
                .iter()
                .map(|v| v["id"].as_i64().unwrap_or(0))
                .collect()
        };
        let q = |p: DecisionParams| p.query().unwrap();
        assert_eq!(ids(q(DecisionParams::default())), [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            ids(q(DecisionParams {
                pending: Some(true),
                ..Default::default()
            })),
            [3, 6]
        );
        assert_eq!(
            ids(q(DecisionParams {
                vm: Some("v1".into()),
                limit: Some(2),
                ..Default::default()
            })),
            [3, 5]
        );
        assert_eq!(
            ids(q(DecisionParams {
                before_id: Some(4),
                since: Some(200),
                ..Default::default()
            })),
            [2, 3]
        );
        let one = filter_live(&q(DecisionParams::default()), live.clone());
        assert_eq!(
            (one[0]["count"].as_i64(), one[0]["last_unix_ms"].as_i64()),
            (Some(1), Some(100))
        );
    }

    #[test]
    fn without_a_store_the_orchestrators_migrations_are_paged() {
        let mem: Vec<Migration> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, id)| {
                serde_json::from_value(json!({
                    "id": id, "vm": if i % 2 == 0 { "v0" } else { "v1" }, "from": "h1", "to": "h2",
                    "state": if i == 3 { "queued" } else { "done" }, "reason": "t",
                    "deadline_s": 1.0, "reserve": false, "bandwidth_bytes_per_s": 1.0,
                    "memory_mb": 1.0, "dirty_rate_mbps": 1.0, "path": [], "hops": [],
                    "reservations": [], "src_addr": "", "dst_addr": "",
                    "created_unix_ms": 10 * i as i64, "seq": i,
                }))
                .unwrap()
            })
            .collect();
        let ids = |p: MigrationParams| -> Vec<String> {
            page_memory(&p.query().unwrap(), mem.clone())
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect()
        };
        assert_eq!(ids(MigrationParams::default()), ["a", "b", "c", "d"]);
        assert_eq!(
            ids(MigrationParams {
                state: Some(MigState::Done),
                limit: Some(2),
                ..Default::default()
            }),
            ["b", "c"]
        );
        assert_eq!(
            ids(MigrationParams {
                before: Some("c".into()),
                vm: Some("v0".into()),
                ..Default::default()
            }),
            ["a"]
        );
        assert_eq!(
            ids(MigrationParams {
                since: Some(10),
                until: Some(20),
                host: Some("h2".into()),
                ..Default::default()
            }),
            ["b", "c"]
        );
        let bad = MigrationParams {
            before: Some("zz".into()),
            ..Default::default()
        };
        assert!(page_memory(&bad.query().unwrap(), mem.clone()).is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let bad = |p: DecisionParams| p.query().unwrap_err().to_string();
        assert!(bad(DecisionParams {
            limit: Some(0),
            ..Default::default()
        })
        .contains("limit"));
        assert!(bad(DecisionParams {
            limit: Some(501),
            ..Default::default()
        })
        .contains("limit"));
        assert!(bad(DecisionParams {
            since: Some(2),
            until: Some(1),
            ..Default::default()
        })
        .contains("after until"));
        assert!(bad(DecisionParams {
            pending: Some(true),
            outcome: Some("queued".into()),
            ..Default::default()
        })
        .contains("pending"));
        let q = DecisionParams {
            pending: Some(true),
            vm: Some(String::new()),
            ..Default::default()
        }
        .query()
        .unwrap();
        assert_eq!(
            (q.outcome.as_deref(), q.vm, q.limit),
            (Some("recommended"), None, DEFAULT_LIMIT)
        );
    }
}
