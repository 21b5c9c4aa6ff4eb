//! Operator control: automation levels, recommendations to approve or
//! reject, and maintenance mode.
//!
//! - `GET`/`PUT /api/v1/automation` `{"level": "auto|recommend|manual",
//!   "vms": {"vm": "level"}}`; `PUT`/`DELETE
//!   /api/v1/automation/vms/{vm}` `{"level": …}` for one VM. Persisted in
//!   the knowledge store (key `control`), announced as
//!   `automation_changed`.
//! - `POST /api/v1/decisions/{id}/approve`: executes a recommendation if it
//!   is still valid on the current state (202), else 409 with the reason
//!   (already decided, its VM moved or is migrating, the destination has
//!   no room, is in maintenance, or would break a placement rule); 404
//!   unknown id. `POST /api/v1/decisions/{id}/reject` records the refusal
//!   (409 when not pending).
//! - `POST`/`GET`/`DELETE /api/v1/hosts/{id}/maintenance` starts (202),
//!   shows and ends maintenance of a host; `GET /api/v1/maintenance` lists
//!   the hosts in maintenance.
//!
//! Every change is recorded in the audit log with the operator's name.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::auth::Principal;
use super::ApiError;
use crate::api::ApiState;
use crate::execute::orchestrator::{Migration, MigrationRequest};
use crate::knowledge::clock::now_unix_ms;
use crate::knowledge::control::{check_name, Automation, Control, Level, MaintenanceEntry};
use crate::knowledge::store::StoreExt;
use crate::mapek::live::DecisionView;
use crate::mapek::maintenance::{self, MaintenanceView};
use crate::mapek::round::{action_key, RECOMMENDED};
use crate::plan::{Action, Decision};

/// Routes of this module.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/api/v1/automation",
            get(get_automation).put(put_automation),
        )
        .route(
            "/api/v1/automation/vms/{vm}",
            put(put_vm_level).delete(delete_vm_level),
        )
        .route("/api/v1/decisions/{id}/approve", post(approve))
        .route("/api/v1/decisions/{id}/reject", post(reject))
        .route(
            "/api/v1/hosts/{id}/maintenance",
            get(get_maintenance)
                .post(start_maintenance)
                .delete(end_maintenance),
        )
        .route("/api/v1/maintenance", get(list_maintenance))
}

/// The store key the control state is kept under.
pub const STORE_KEY: &str = "control";

/// The credential's name (`?` for a host daemon, which cannot get here).
fn actor(who: &Principal) -> String {
    match who {
        Principal::Operator { name, .. } => name.clone(),
        Principal::Host(h) => format!("host:{h}"),
    }
}

/// Persists the control state (a failure is reported: the change holds in
/// memory but would not survive a restart).
fn persist(s: &ApiState, c: &Control) -> Result<(), ApiError> {
    if let Some(store) = &s.knowledge.store {
        store
            .set_config(STORE_KEY, c)
            .map_err(|e| ApiError::Internal(format!("cannot store the control state: {e}")))?;
    }
    Ok(())
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn get_automation(State(s): State<Arc<ApiState>>) -> Json<Automation> {
    Json(s.knowledge.control().automation.clone())
}

async fn put_automation(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    body: Result<Json<Automation>, JsonRejection>,
) -> Result<Json<Automation>, ApiError> {
    let Json(a) = body?;
    a.validate()
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let c = s.knowledge.update_control(|c| c.automation = a.clone());
    persist(&s, &c)?;
    announce_automation(&s, &who, "automation.set", "*", &c.automation);
    Ok(Json(c.automation.clone()))
}

/// Body of `PUT /api/v1/automation/vms/{vm}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmLevel {
    level: Level,
}

async fn put_vm_level(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    vm: Result<Path<String>, PathRejection>,
    body: Result<Json<VmLevel>, JsonRejection>,
) -> Result<Json<Automation>, ApiError> {
    let Path(vm) = vm?;
    let Json(b) = body?;
    check_name("VM", &vm).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let mut a = s.knowledge.control().automation.clone();
    a.vms.insert(vm.clone(), b.level);
    a.validate()
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let c = s.knowledge.update_control(|c| c.automation = a);
    persist(&s, &c)?;
    announce_automation(&s, &who, "automation.vm.set", &vm, &c.automation);
    Ok(Json(c.automation.clone()))
}

async fn delete_vm_level(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    vm: Result<Path<String>, PathRejection>,
) -> Result<Json<Automation>, ApiError> {
    let Path(vm) = vm?;
    if !s.knowledge.control().automation.vms.contains_key(&vm) {
        return Err(ApiError::NotFound(format!(
            "{vm:?} has no level of its own (it follows the global one)"
        )));
    }
    let c = s.knowledge.update_control(|c| {
        c.automation.vms.remove(&vm);
    });
    persist(&s, &c)?;
    announce_automation(&s, &who, "automation.vm.clear", &vm, &c.automation);
    Ok(Json(c.automation.clone()))
}

fn announce_automation(s: &ApiState, who: &Principal, action: &str, target: &str, a: &Automation) {
    info!(by = %actor(who), level = a.level.as_str(), vms = a.vms.len(), "automation levels changed");
    s.knowledge.events.publish(
        "automation_changed",
        serde_json::json!({"level": a.level, "vms": a.vms.len(), "by": actor(who)}),
    );
    super::history::audit(
        s,
        who,
        action,
        target,
        serde_json::json!({"level": a.level, "vms": a.vms}),
    );
}

/// A decision found by id: where it came from and what it says.
struct Found {
    view: DecisionView,
}

/// The decision `id`: from the loop's recent ones, else from the store.
fn find_decision(s: &ApiState, id: i64) -> Result<Option<Found>, ApiError> {
    if id > 0 {
        if let Some(v) = lock(&s.live).decisions.iter().rev().find(|v| v.id == id) {
            return Ok(Some(Found { view: v.clone() }));
        }
    }
    let Some(store) = &s.knowledge.store else {
        return Ok(None);
    };
    let Some(row) = store
        .decision_json(id)
        .map_err(|e| ApiError::Internal(e.to_string()))?
    else {
        return Ok(None);
    };
    let decision: Decision = serde_json::from_value(row.decision.clone())
        .map_err(|e| ApiError::Internal(format!("stored decision {id} unreadable: {e}")))?;
    let expected = row
        .decision
        .get("expected")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok());
    Ok(Some(Found {
        view: DecisionView {
            id: row.id,
            round: u64::try_from(row.round).unwrap_or(0),
            at_unix_ms: row.at_ms,
            policy: row.policy,
            decision,
            outcome: row.outcome,
            expected,
        },
    }))
}

/// Sets decision `id`'s outcome in the store and the loop's recent
/// decisions, and forgets it as pending.
fn settle(s: &ApiState, view: &DecisionView, outcome: &str) -> Result<(), ApiError> {
    if let Some(store) = &s.knowledge.store {
        store
            .set_decision_outcome(view.id, outcome)
            .map_err(|e| ApiError::Internal(format!("cannot record the outcome: {e}")))?;
    }
    let mut l = lock(&s.live);
    let key = action_key(&view.decision);
    if l.pending.get(&key) == Some(&view.id) {
        l.pending.remove(&key);
    }
    for v in l.decisions.iter_mut().filter(|v| v.id == view.id) {
        v.outcome = outcome.to_string();
    }
    Ok(())
}

/// Answer of approve and reject.
#[derive(Debug, Serialize)]
struct Settled {
    /// The decision with its new outcome.
    decision: DecisionView,
    /// The migration approval queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    migration: Option<Migration>,
    /// The new outcome.
    outcome: String,
}

fn pending(s: &ApiState, id: i64) -> Result<DecisionView, ApiError> {
    let found =
        find_decision(s, id)?.ok_or_else(|| ApiError::NotFound(format!("no decision {id}")))?;
    let view = found.view;
    if view.outcome != RECOMMENDED {
        return Err(ApiError::Conflict(format!(
            "decision {id} is not a pending recommendation: its outcome is {:?}",
            view.outcome
        )));
    }
    Ok(view)
}

/// Why a recommendation cannot be carried out now.
struct Invalid {
    why: String,
    /// It never will be (its VM left the host it was made for): the
    /// recommendation expires.
    expired: bool,
}

/// Why a recommended migration of `vm` from `from` to `to` is no longer
/// valid: its VM moved or is gone (expired), is migrating, or moving it
/// would break a placement rule that holds now.
fn stale(s: &ApiState, vm: &str, from: &str, to: &str) -> Result<Option<Invalid>, ApiError> {
    let expired = |why: String| Ok(Some(Invalid { why, expired: true }));
    {
        let hosts = s.knowledge.hosts_read()?;
        match hosts.vms().get(vm) {
            None => return expired(format!("stale: VM {vm} is no longer registered")),
            Some(p) if p.host != from => {
                return expired(format!(
                "stale: VM {vm} now runs on {}, not on {from} where the recommendation found it",
                p.host
            ))
            }
            Some(_) => {}
        }
    }
    if let Some(m) = s.orchestrator.active().iter().find(|m| m.vm == vm) {
        return Ok(Some(Invalid {
            why: format!(
                "stale: VM {vm} is already migrating ({}, to {})",
                m.id, m.to
            ),
            expired: false,
        }));
    }
    let snap = match &s.round {
        Some(ctx) => crate::mapek::round::planning_snapshot(ctx, &s.orchestrator),
        None => None,
    };
    if let Some(snap) = snap.filter(|sn| !sn.rules.is_empty()) {
        let broken = |sn: &crate::knowledge::snapshot::Snapshot| {
            crate::plan::constraints::violations(sn)
                .into_iter()
                .map(|v| v.rule)
                .collect::<std::collections::BTreeSet<String>>()
        };
        let before = broken(&snap);
        let mut moved = snap;
        if let Some(v) = moved.vms.get_mut(vm) {
            v.host = to.to_string();
        }
        let new: Vec<String> = broken(&moved).difference(&before).cloned().collect();
        if !new.is_empty() {
            return Ok(Some(Invalid {
                why: format!(
                    "moving {vm} to {to} now would break placement rule(s) {}",
                    new.join(", ")
                ),
                expired: false,
            }));
        }
    }
    Ok(None)
}

async fn approve(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let view = pending(&s, id)?;
    let by = actor(&who);
    let refused = |why: String| {
        super::history::audit(
            &s,
            &who,
            "decision.approve",
            &id.to_string(),
            serde_json::json!({"outcome": format!("refused: {why}")}),
        );
        ApiError::Conflict(why)
    };
    let (outcome, migration) = match &view.decision.action {
        Action::Migrate { vm, from, to } => {
            if let Some(inv) = stale(&s, vm, from, to)? {
                if inv.expired {
                    // It will never be valid again: no longer pending.
                    settle(&s, &view, &format!("expired: {}", inv.why))?;
                }
                return Err(refused(inv.why));
            }
            let req = MigrationRequest {
                vm: vm.clone(),
                destination: to.clone(),
                deadline_s: None,
                reserve: None,
            };
            let reason = format!("decision {id} approved by {by}: {}", view.decision.reason);
            match s.orchestrator.submit(req, reason, Some(id)) {
                Ok(m) => (format!("approved by {by}: queued as {}", m.id), Some(m)),
                Err(e) => return Err(refused(format!("cannot be carried out now: {e}"))),
            }
        }
        Action::AttachVf { vm, host }
        | Action::DetachVf { vm, host }
        | Action::Resize { vm, host, .. } => {
            let placed = s
                .knowledge
                .hosts_read()?
                .vms()
                .get(vm)
                .map(|p| p.host.clone());
            if placed.as_deref() != Some(host.as_str()) {
                let why = format!(
                    "stale: VM {vm} runs on {}, not on {host}",
                    placed.as_deref().unwrap_or("no host")
                );
                settle(&s, &view, &format!("expired: {why}"))?;
                return Err(refused(why));
            }
            let Some(ctx) = &s.round else {
                return Err(ApiError::Unavailable(
                    "this controller runs no loop to carry the decision out".into(),
                ));
            };
            let round = lock(&s.live).round;
            let out = crate::mapek::round::execute_decision(
                ctx,
                &s.orchestrator,
                &view.decision,
                &s.orchestrator.list(),
                0.0,
                round,
            )
            .await;
            (format!("approved by {by}: {out}"), None)
        }
    };
    settle(&s, &view, &outcome)?;
    info!(id, %by, %outcome, "recommendation approved");
    s.knowledge.events.publish(
        "decision_approved",
        serde_json::json!({"id": id, "by": by, "outcome": outcome}),
    );
    super::history::audit(
        &s,
        &who,
        "decision.approve",
        &id.to_string(),
        serde_json::json!({"outcome": outcome, "action": view.decision.action}),
    );
    let mut decision = view;
    decision.outcome = outcome.clone();
    Ok((
        StatusCode::ACCEPTED,
        Json(Settled {
            decision,
            migration,
            outcome,
        }),
    )
        .into_response())
}

/// Body of `POST /api/v1/decisions/{id}/reject` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    /// Why (kept in the outcome and the audit log; at most 500 characters).
    #[serde(default)]
    reason: Option<String>,
}

async fn reject(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    id: Result<Path<i64>, PathRejection>,
    body: Option<Json<RejectBody>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(id) = id?;
    let reason = body.and_then(|Json(b)| b.reason);
    if let Some(r) = &reason {
        if r.chars().count() > 500 || r.chars().any(char::is_control) {
            return Err(ApiError::Unprocessable(
                "reason must be at most 500 characters without control characters".into(),
            ));
        }
    }
    let view = pending(&s, id)?;
    let by = actor(&who);
    let outcome = match &reason {
        Some(r) => format!("rejected by {by}: {r}"),
        None => format!("rejected by {by}"),
    };
    settle(&s, &view, &outcome)?;
    info!(id, %by, "recommendation rejected");
    s.knowledge
        .events
        .publish("decision_rejected", serde_json::json!({"id": id, "by": by}));
    super::history::audit(
        &s,
        &who,
        "decision.reject",
        &id.to_string(),
        serde_json::json!({"outcome": outcome, "action": view.decision.action}),
    );
    let mut decision = view;
    decision.outcome = outcome.clone();
    serde_json::to_value(Settled {
        decision,
        migration: None,
        outcome,
    })
    .map(Json)
    .map_err(|e| ApiError::Internal(e.to_string()))
}

/// One drain step now, with the views of every host in maintenance.
fn drain_now(s: &ApiState) -> Vec<MaintenanceView> {
    if s.knowledge.fence.may_lead().is_err() {
        return lock(&s.live).drains.values().cloned().collect();
    }
    maintenance::step(&*s.knowledge, &s.orchestrator, &s.live)
}

async fn start_maintenance(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(host) = id?;
    if s.knowledge.hosts_read()?.host(&host).is_none() {
        return Err(ApiError::NotFound(format!("host {host} is not registered")));
    }
    let by = actor(&who);
    let mut started = false;
    let c = s.knowledge.update_control(|c| {
        if !c.maintenance.contains_key(&host) {
            started = true;
            c.maintenance.insert(
                host.clone(),
                MaintenanceEntry {
                    since_unix_ms: now_unix_ms(),
                    by: by.clone(),
                },
            );
        }
    });
    if c.maintenance.len() > crate::knowledge::control::MAX_MAINTENANCE {
        s.knowledge.update_control(|c| {
            c.maintenance.remove(&host);
        });
        return Err(ApiError::Unprocessable(
            "too many hosts in maintenance".into(),
        ));
    }
    persist(&s, &c)?;
    if started {
        info!(%host, %by, "maintenance started");
        s.knowledge.events.publish(
            "maintenance_started",
            serde_json::json!({"host": host, "by": by}),
        );
        super::history::audit(&s, &who, "maintenance.start", &host, serde_json::json!({}));
    }
    let st = s.clone();
    let views = tokio::task::spawn_blocking(move || drain_now(&st))
        .await
        .map_err(|e| ApiError::Internal(format!("maintenance step failed: {e}")))?;
    let view = views
        .into_iter()
        .find(|v| v.host == host)
        .unwrap_or_else(|| fresh_view(&host, c.maintenance.get(&host)));
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

async fn get_maintenance(
    State(s): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<MaintenanceView>, ApiError> {
    let Path(host) = id?;
    lock(&s.live)
        .drains
        .get(&host)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("host {host} is not in maintenance")))
}

async fn end_maintenance(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<MaintenanceView>, ApiError> {
    let Path(host) = id?;
    if !s.knowledge.control().maintenance.contains_key(&host) {
        return Err(ApiError::NotFound(format!(
            "host {host} is not in maintenance"
        )));
    }
    let last = lock(&s.live).drains.get(&host).cloned();
    let entry = s.knowledge.control().maintenance.get(&host).cloned();
    let c = s.knowledge.update_control(|c| {
        c.maintenance.remove(&host);
    });
    persist(&s, &c)?;
    lock(&s.live).drains.remove(&host);
    let by = actor(&who);
    info!(%host, %by, "maintenance ended");
    s.knowledge.events.publish(
        "maintenance_ended",
        serde_json::json!({"host": host, "by": by}),
    );
    super::history::audit(&s, &who, "maintenance.end", &host, serde_json::json!({}));
    Ok(Json(
        last.unwrap_or_else(|| fresh_view(&host, entry.as_ref())),
    ))
}

/// The view of a host in maintenance no drain step has looked at yet.
fn fresh_view(host: &str, e: Option<&MaintenanceEntry>) -> MaintenanceView {
    MaintenanceView {
        host: host.to_string(),
        since_unix_ms: e.map(|e| e.since_unix_ms).unwrap_or(0),
        by: e.map(|e| e.by.clone()).unwrap_or_default(),
        state: "draining",
        vms: Vec::new(),
    }
}

async fn list_maintenance(State(s): State<Arc<ApiState>>) -> Json<Vec<MaintenanceView>> {
    let control = s.knowledge.control();
    let l = lock(&s.live);
    Json(
        control
            .maintenance
            .iter()
            .map(|(h, e)| {
                l.drains
                    .get(h)
                    .cloned()
                    .unwrap_or_else(|| fresh_view(h, Some(e)))
            })
            .collect(),
    )
}
