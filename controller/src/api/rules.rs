//! `/api/v1/rules`: the placement rules every policy obeys
//! (`docs/algorithms.md`, "Placement rules").
//!
//! - `GET`: the rules in force, the rules the current placement breaks
//!   (e.g. after an operator's manual move) and warnings about names the
//!   inventory does not know;
//! - `PUT` (a JSON array of rules): replaces the whole set;
//! - `POST` (one rule): adds it (409 if its name is taken);
//! - `DELETE /api/v1/rules/{name}`: removes one (404 if unknown).
//!
//! Every change is validated as a whole set first: a contradictory set is
//! refused with 422 and the reason naming the rules. An accepted set is in
//! force from the next planning round, kept in the knowledge store (it
//! outlives a restart) and announced on the event stream
//! (`rules_changed`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use super::auth::Principal;
use super::history::{audit, outcome_of};
use super::{ApiError, ApiState};
use crate::knowledge::rules::{Rule, RuleSet};
use crate::knowledge::store::StoreExt;
use crate::plan::rules::{RuleWarning, Violation};

/// The routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/rules", get(list).put(replace).post(add))
        .route("/api/v1/rules/{name}", delete(remove))
}

/// `GET /api/v1/rules`.
#[derive(Debug, Serialize)]
pub struct RulesView {
    /// The rules in force.
    pub rules: RuleSet,
    /// The rules the current placement breaks.
    pub violations: Vec<Violation>,
    /// Names the inventory does not know, and the like.
    pub warnings: Vec<RuleWarning>,
}

fn view(s: &ApiState) -> RulesView {
    let rules = s.knowledge.rules();
    let snap = s
        .knowledge
        .snapshot(0, 2, Vec::new(), Vec::new(), BTreeMap::new());
    let (violations, warnings) = match &snap {
        Some(snap) => (
            crate::plan::constraints::violations(snap),
            rules.inventory_warnings(snap),
        ),
        None => (Vec::new(), Vec::new()),
    };
    RulesView {
        rules: (*rules).clone(),
        violations,
        warnings,
    }
}

async fn list(State(s): State<Arc<ApiState>>) -> Json<RulesView> {
    Json(view(&s))
}

/// Validates `set`, puts it in force, stores and announces it.
fn apply(s: &ApiState, set: RuleSet, what: &str) -> Result<Json<RulesView>, ApiError> {
    set.validate()
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let n = set.len();
    if let Some(store) = &s.knowledge.store {
        store
            .set_config("rules", &set)
            .map_err(|e| ApiError::Unavailable(format!("the rules cannot be stored: {e}")))?;
    }
    s.knowledge.set_rules(set);
    info!(rules = n, change = what, "placement rules changed");
    s.knowledge.events.publish(
        "rules_changed",
        serde_json::json!({"change": what, "rules": n, "by": "api"}),
    );
    Ok(Json(view(s)))
}

async fn replace(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    body: Result<Json<RuleSet>, JsonRejection>,
) -> Result<Json<RulesView>, ApiError> {
    let Json(set) = body?;
    let asked = serde_json::to_value(&set).unwrap_or_default();
    let r = apply(&s, set, "replaced");
    let detail = json!({"rules": asked, "outcome": outcome_of(&r)});
    audit(&s, &who, "rules.set", "", detail);
    r
}

async fn add(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    body: Result<Json<Rule>, JsonRejection>,
) -> Result<(StatusCode, Json<RulesView>), ApiError> {
    let Json(rule) = body?;
    let name = rule.name().to_string();
    let asked = serde_json::to_value(&rule).unwrap_or_default();
    let r = add_rule(&s, rule);
    let detail = json!({"rule": asked, "outcome": outcome_of(&r)});
    audit(&s, &who, "rules.add", &name, detail);
    r.map(|v| (StatusCode::CREATED, v))
}

fn add_rule(s: &ApiState, rule: Rule) -> Result<Json<RulesView>, ApiError> {
    let mut set = (*s.knowledge.rules()).clone();
    if set.get(rule.name()).is_some() {
        return Err(ApiError::Conflict(format!(
            "a rule named {:?} exists; remove it first or PUT the whole set",
            rule.name()
        )));
    }
    let name = rule.name().to_string();
    set.rules.push(rule);
    apply(s, set, &format!("added {name}"))
}

async fn remove(
    State(s): State<Arc<ApiState>>,
    Extension(who): Extension<Principal>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RulesView>, ApiError> {
    let Path(name) = name?;
    let r = remove_rule(&s, &name);
    let detail = json!({"outcome": outcome_of(&r)});
    audit(&s, &who, "rules.remove", &name, detail);
    r
}

fn remove_rule(s: &ApiState, name: &str) -> Result<Json<RulesView>, ApiError> {
    let mut set = (*s.knowledge.rules()).clone();
    let before = set.len();
    set.rules.retain(|r| r.name() != name);
    if set.len() == before {
        warn!(rule = %name, "no such placement rule");
        return Err(ApiError::NotFound(format!(
            "no placement rule named {name:?}"
        )));
    }
    apply(s, set, &format!("removed {name}"))
}
