//! Operations API: migrations, decisions, hotspots, the policy, VF
//! assignments.
//!
//! - `POST /api/v1/migrations` `{vm, destination: HOST|"auto", deadline_s,
//!   reserve}` → 202 with the record; 404 unknown VM/host, 409 no room or
//!   conflict, 422 infeasible deadline; nothing changes on an error;
//! - `GET /api/v1/migrations` (filters and pages: [`super::history`]),
//!   `GET /api/v1/migrations/{id}`,
//!   `DELETE /api/v1/migrations/{id}` (queued ones only; 409 otherwise);
//! - `GET /api/v1/decisions` (filters and pages: [`super::history`]),
//!   `GET /api/v1/hotspots`;
//! - `GET`/`PUT /api/v1/policy` (validated; the new policy starts afresh);
//! - `GET /api/v1/vf-assignments`;
//! - `GET /api/v1/loop`: the live loop's round times (last, p50, p99, max
//!   over the recent rounds) and the last rounds.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use tracing::info;

use super::auth::Principal;
use super::history::{self, audit, outcome_of};
use super::ApiError;
use crate::api::ApiState;
use crate::execute::orchestrator::{Migration, MigrationRequest, Orchestrator};
use crate::knowledge::store::StoreExt;
use crate::mapek::live::{PolicySettings, RoundTimesView, RoundTiming, VfAssignment};

/// Routes of this module.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/migrations", get(history::migrations).post(create))
        .route("/api/v1/migrations/{id}", get(one).delete(cancel))
        .route("/api/v1/decisions", get(history::decisions))
        .route("/api/v1/hotspots", get(hotspots))
        .route("/api/v1/policy", get(get_policy).put(put_policy))
        .route("/api/v1/vf-assignments", get(vf_assignments))
        .route("/api/v1/loop", get(loop_times))
}

fn orch(s: &ApiState) -> Result<&Arc<Orchestrator>, ApiError> {
    Ok(&s.orchestrator)
}

async fn one(
    State(s): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Migration>, ApiError> {
    let Path(id) = id?;
    orch(&s)?
        .get_for_api(&id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no migration {id:?}")))
}

async fn create(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    body: Result<Json<MigrationRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let vm = req.vm.clone();
    let asked = serde_json::json!({
        "vm": req.vm,
        "destination": req.destination,
        "deadline_s": req.deadline_s,
        "reserve": req.reserve,
    });
    let r = orch(&s)?.submit(req, "requested through the API".into(), None);
    let target = r.as_ref().map_or(vm.as_str(), |m| m.id.as_str());
    let mut detail = asked;
    detail["outcome"] = outcome_of(&r);
    audit(&s, &who, "migration.create", target, detail);
    let m = r?;
    info!(id = %m.id, %vm, "migration requested through the API");
    Ok((StatusCode::ACCEPTED, Json(m)).into_response())
}

async fn cancel(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Migration>, ApiError> {
    let Path(id) = id?;
    let r = orch(&s)?.cancel(&id);
    audit(
        &s,
        &who,
        "migration.cancel",
        &id,
        serde_json::json!({"outcome": outcome_of(&r)}),
    );
    Ok(Json(r?))
}

#[derive(Serialize)]
struct Hotspots {
    round: u64,
    report: Option<crate::analyze::HotspotReport>,
    history: Vec<crate::knowledge::snapshot::HotspotEvent>,
}

async fn hotspots(State(s): State<Arc<ApiState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let l = s
        .live
        .lock()
        .map_err(|_| ApiError::Internal("live state lock poisoned".into()))?;
    let h = Hotspots {
        round: l.round,
        report: l.hotspots.clone(),
        history: l.hotspot_history.iter().cloned().collect(),
    };
    serde_json::to_value(h)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

async fn get_policy(State(s): State<Arc<ApiState>>) -> Result<Json<PolicySettings>, ApiError> {
    let l = s
        .live
        .lock()
        .map_err(|_| ApiError::Internal("live state lock poisoned".into()))?;
    Ok(Json(l.settings.clone()))
}

async fn put_policy(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    body: Result<Json<PolicySettings>, JsonRejection>,
) -> Result<Json<PolicySettings>, ApiError> {
    let Json(new) = body?;
    let set = {
        let mut l = s
            .live
            .lock()
            .map_err(|_| ApiError::Internal("live state lock poisoned".into()))?;
        l.set(new.clone())
    };
    let mut detail = serde_json::to_value(&new).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut detail {
        m.insert("outcome".into(), outcome_of(&set));
    }
    audit(&s, &who, "policy.set", &new.name, detail);
    set.map_err(ApiError::Unprocessable)?;
    if let Some(store) = &s.knowledge.store {
        let _ = store.set_config("policy", &new);
    }
    info!(policy = %new.name, dry_run = new.dry_run, "policy changed");
    s.knowledge.events.publish(
        "policy_changed",
        serde_json::json!({"policy": new.name, "dry_run": new.dry_run, "by": "api"}),
    );
    Ok(Json(new))
}

async fn vf_assignments(
    State(s): State<Arc<ApiState>>,
) -> Result<Json<Vec<VfAssignment>>, ApiError> {
    let changes = s
        .live
        .lock()
        .map_err(|_| ApiError::Internal("live state lock poisoned".into()))?
        .vf_changes
        .clone();
    let hosts = s.knowledge.hosts_read()?;
    Ok(Json(
        hosts
            .hosts()
            .iter()
            .map(|(id, e)| VfAssignment {
                host: id.clone(),
                vf_count: e.registration.vf_count,
                attached: e
                    .latest()
                    .map(|r| {
                        r.vms
                            .iter()
                            .filter(|v| v.vf_attached)
                            .map(|v| v.name.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                last_changes: changes
                    .get(id)
                    .map(|q| q.iter().cloned().collect())
                    .unwrap_or_default(),
            })
            .collect(),
    ))
}

/// `GET /api/v1/loop`: the live loop's recent round times.
#[derive(Debug, Serialize)]
pub struct LoopView {
    /// Rounds evaluated so far.
    pub round: u64,
    /// Seconds between two rounds (the monitoring interval).
    pub interval_s: f64,
    /// The policy in force.
    pub policy: String,
    /// Whether decisions are only recorded.
    pub dry_run: bool,
    /// Statistics over the recent rounds.
    #[serde(flatten)]
    pub times: RoundTimesView,
    /// The recent rounds, oldest first.
    pub rounds: Vec<RoundTiming>,
}

async fn loop_times(State(s): State<Arc<ApiState>>) -> Result<Json<LoopView>, ApiError> {
    let l = s
        .live
        .lock()
        .map_err(|_| ApiError::Internal("live state lock poisoned".into()))?;
    Ok(Json(LoopView {
        round: l.round,
        interval_s: s.settings.poll_interval.as_secs_f64(),
        policy: l.settings.name.clone(),
        dry_run: l.settings.dry_run,
        times: l.round_times.view(),
        rounds: l.round_times.rounds().copied().collect(),
    }))
}
