//! What-if: plan on the live data center without acting, and export it
//! for the simulator.
//!
//! - `POST /api/v1/plan/preview` `{"policy"?, "options"?, "hotspot"?,
//!   "rules"?}` (each defaults to what is in force): Analyze + Plan with a
//!   fresh instance of the policy on the snapshot the live round plans on
//!   (migrations under way applied); nothing is queued, recorded or
//!   changed. Answers the hotspots, the decisions with their expected
//!   effect, the rules broken and the communication cost before and after
//!   the planned migrations. 422 for an unknown policy, invalid options or
//!   a contradictory rule set (naming the rules); 503 when there is no
//!   snapshot yet.
//! - `GET /api/v1/scenario`: the live data center as a simulator scenario
//!   (`docs/scenario.md`), for `shoal-controller simulate --from-live`;
//!   503 while no host has reported.
//!
//! The CPU work (snapshot, Analyze, Plan, serialisation) runs on a
//! blocking thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::{ApiError, ApiState};
use crate::analyze::{self, HotspotConfig, HotspotReport};
use crate::knowledge::rules::RuleSet;
use crate::knowledge::snapshot::Snapshot;
use crate::mapek::live::{build, Expected, PolicySettings};
use crate::plan::rules::Violation;
use crate::plan::{Action, Decision, PolicyOptions};

/// Largest preview request body (a whole rule set fits).
pub const MAX_PREVIEW_BODY: usize = 4 << 20;

/// The routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/api/v1/plan/preview",
            post(preview).layer(DefaultBodyLimit::max(MAX_PREVIEW_BODY)),
        )
        .route("/api/v1/scenario", get(scenario))
}

/// Body of `POST /api/v1/plan/preview`: every field defaults to what is in
/// force.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// Policy name (`none`: Analyze only).
    #[serde(default)]
    pub policy: Option<String>,
    /// Policy options (the whole set; absent: those in force).
    #[serde(default)]
    pub options: Option<PolicyOptions>,
    /// Hotspot detection (absent: the one in force).
    #[serde(default)]
    pub hotspot: Option<HotspotConfig>,
    /// Placement rules (absent: the rules in force).
    #[serde(default)]
    pub rules: Option<RuleSet>,
}

/// One planned decision with what it is expected to bring.
#[derive(Debug, Serialize)]
pub struct PreviewDecision {
    /// The decision (action, reason, score, details), flat.
    #[serde(flatten)]
    pub decision: Decision,
    /// Its expected cost and benefit (migrations), or why the orchestrator
    /// would refuse it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expected>,
}

/// Answer of `POST /api/v1/plan/preview`.
#[derive(Debug, Serialize)]
pub struct PreviewView {
    /// The policy planned with.
    pub policy: String,
    /// What Analyze found.
    pub hotspots: HotspotReport,
    /// The decisions, in the order they would be executed.
    pub decisions: Vec<PreviewDecision>,
    /// Rules the placement breaks now.
    pub violations_before: Vec<Violation>,
    /// Rules the placement would break after the planned migrations.
    pub violations_after: Vec<Violation>,
    /// Communication cost now (the policy options' S-CORE weights).
    pub cost_before: f64,
    /// Communication cost after the planned migrations.
    pub cost_after: f64,
    /// VMs in the snapshot.
    pub vms: usize,
    /// Hosts in the snapshot.
    pub hosts: usize,
}

/// The settings of a preview: those in force, overridden by the request;
/// validated (422 naming the field or the rules).
pub fn preview_settings(
    current: &PolicySettings,
    req: &PreviewRequest,
) -> Result<PolicySettings, ApiError> {
    let mut s = current.clone();
    if let Some(p) = &req.policy {
        s.name = p.clone();
    }
    if let Some(o) = &req.options {
        s.options = o.clone();
    }
    if let Some(h) = &req.hotspot {
        s.hotspot = h.clone();
    }
    build(&s).map_err(ApiError::Unprocessable)?;
    if let Some(r) = &req.rules {
        r.validate()
            .map_err(|e| ApiError::Unprocessable(format!("rules: {e}")))?;
    }
    Ok(s)
}

/// `snap` with the planned migrations (and memory resizes) applied.
pub fn apply_plan(snap: &Snapshot, decisions: &[Decision]) -> Snapshot {
    let mut after = snap.clone();
    for d in decisions {
        match &d.action {
            Action::Migrate { vm, to, .. } => {
                if let Some(v) = after.vms.get_mut(vm) {
                    v.host = to.clone();
                }
            }
            Action::Resize { vm, target_mb, .. } => {
                if let Some(v) = after.vms.get_mut(vm) {
                    v.memory_mb = *target_mb;
                }
            }
            Action::AttachVf { vm, .. } => {
                if let Some(v) = after.vms.get_mut(vm) {
                    v.has_vf = true;
                }
            }
            Action::DetachVf { vm, .. } => {
                if let Some(v) = after.vms.get_mut(vm) {
                    v.has_vf = false;
                }
            }
        }
    }
    after
}

/// Analyze + Plan with a fresh policy of `settings` on `snap` (rules
/// replaced by `rules` when given); `expected` gives each decision its
/// expected effect. Pure but for `expected`.
pub fn plan_preview(
    settings: &PolicySettings,
    mut snap: Snapshot,
    rules: Option<RuleSet>,
    expected: &dyn Fn(&Decision, &HotspotReport, &Snapshot) -> Option<Expected>,
) -> Result<PreviewView, ApiError> {
    if let Some(r) = rules {
        snap.rules = r;
    }
    let mut policy = build(settings).map_err(ApiError::Unprocessable)?;
    let hotspot = match policy.as_ref() {
        Some(p) => settings.hotspot.for_policy(p.detector_defaults()),
        None => settings.hotspot.clone(),
    };
    let report = analyze::detect(&snap, &hotspot);
    let decisions = match policy.as_mut() {
        Some(p) => p.plan(&snap, &report),
        None => Vec::new(),
    };
    let after = apply_plan(&snap, &decisions);
    let weights = &settings.options.score.weights;
    let view = PreviewView {
        policy: settings.name.clone(),
        violations_before: crate::plan::constraints::violations(&snap),
        violations_after: crate::plan::constraints::violations(&after),
        cost_before: crate::plan::physics::communication_cost(&snap, weights),
        cost_after: crate::plan::physics::communication_cost(&after, weights),
        vms: snap.vms.len(),
        hosts: snap.hosts.len(),
        decisions: decisions
            .into_iter()
            .map(|d| PreviewDecision {
                expected: expected(&d, &report, &snap),
                decision: d,
            })
            .collect(),
        hotspots: report,
    };
    Ok(view)
}

/// The snapshot the live round plans on (migrations under way applied),
/// or, when the API runs without a loop, the knowledge's own with
/// `history` samples per host.
fn live_snapshot(s: &ApiState, history: usize) -> Option<Snapshot> {
    match &s.round {
        Some(ctx) => crate::mapek::round::planning_snapshot(ctx, &s.orchestrator),
        None => s
            .knowledge
            .snapshot(0, history.max(2), Vec::new(), Vec::new(), BTreeMap::new()),
    }
}

fn no_snapshot() -> ApiError {
    ApiError::Unavailable("no snapshot of the data center yet (no host has reported)".into())
}

async fn preview(
    State(s): State<Arc<ApiState>>,
    body: Result<Json<PreviewRequest>, JsonRejection>,
) -> Result<Json<PreviewView>, ApiError> {
    let Json(req) = body?;
    let current = s
        .live
        .lock()
        .map_err(|_| ApiError::Internal("live state lock poisoned".into()))?
        .settings
        .clone();
    let settings = preview_settings(&current, &req)?;
    let rules = req.rules;
    let state = s.clone();
    let view = tokio::task::spawn_blocking(move || {
        let history = settings.hotspot.n.max(settings.options.sova.num);
        let snap = live_snapshot(&state, history).ok_or_else(no_snapshot)?;
        let orch = state.orchestrator.clone();
        let expected = move |d: &Decision, r: &HotspotReport, snap: &Snapshot| {
            crate::mapek::round::expected_of(&orch, d, r, Some(snap))
        };
        plan_preview(&settings, snap, rules, &expected)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the preview failed: {e}")))??;
    info!(
        policy = %view.policy,
        decisions = view.decisions.len(),
        cost_before = view.cost_before,
        cost_after = view.cost_after,
        "plan previewed"
    );
    Ok(Json(view))
}

async fn scenario(State(s): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let state = s.clone();
    let (bytes, notes) = tokio::task::spawn_blocking(move || {
        // A scenario needs a host: none reported yet is "not yet".
        let snap = live_snapshot(&state, 2)
            .filter(|s| !s.hosts.is_empty())
            .ok_or_else(no_snapshot)?;
        let name = format!(
            "live export at {} ms (round {})",
            crate::knowledge::clock::now_unix_ms(),
            snap.round
        );
        let (scn, notes) = crate::sim::export::from_snapshot(&snap, &name);
        let mut bytes = serde_json::to_vec(&scn)
            .map_err(|e| ApiError::Internal(format!("the scenario cannot be written: {e}")))?;
        bytes.push(b'\n');
        Ok::<_, ApiError>((bytes, notes))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the export failed: {e}")))??;
    for n in &notes {
        debug!(note = %n, "scenario export");
    }
    info!(
        bytes = bytes.len(),
        notes = notes.len(),
        "live data center exported as a scenario"
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::HeaderName::from_static("x-shoal-export-notes"),
                notes.len().to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::Dc;

    fn settings(name: &str) -> PolicySettings {
        serde_json::from_value(serde_json::json!({"name": name})).expect("settings")
    }

    #[test]
    fn settings_default_to_those_in_force_and_are_validated() {
        let cur = settings("none");
        let s = preview_settings(&cur, &PreviewRequest::default()).expect("defaults");
        assert_eq!(s, cur);
        let req: PreviewRequest =
            serde_json::from_value(serde_json::json!({"policy": "score"})).expect("req");
        assert_eq!(preview_settings(&cur, &req).expect("score").name, "score");
        let req: PreviewRequest =
            serde_json::from_value(serde_json::json!({"policy": "nope"})).expect("req");
        let e = preview_settings(&cur, &req).expect_err("unknown");
        assert_eq!(e.status().as_u16(), 422, "{e}");
        let req: PreviewRequest = serde_json::from_value(serde_json::json!({
            "rules": [
                {"kind":"pin","name":"on-h1","vms":["v1"],"hosts":["h1"]},
                {"kind":"exclude","name":"not-h1","vms":["v1"],"hosts":["h1"]}
            ]
        }))
        .expect("req");
        let e = preview_settings(&cur, &req).expect_err("contradiction");
        assert_eq!(e.status().as_u16(), 422);
        assert!(
            e.to_string().contains("on-h1") && e.to_string().contains("not-h1"),
            "{e}"
        );
        assert!(serde_json::from_value::<PreviewRequest>(serde_json::json!({"x": 1})).is_err());
    }

    /// A hot host: Sandpiper plans a migration; the preview reports it
    /// with the cost before and after, and the live placement is untouched.
    #[test]
    fn a_preview_plans_without_acting() {
        let (snap, _) = Dc::new()
            .host("h1", "r1", "p1", 2.0, 4096.0)
            .host("h2", "r2", "p1", 2.0, 4096.0)
            .vm("v1", "h1", 1.0, 512.0)
            .vm("v2", "h1", 0.9, 512.0)
            .vm("v3", "h2", 0.1, 512.0)
            .talk("v1", "v3", 1e6)
            .build(5);
        let before = snap.clone();
        let s = settings("sandpiper");
        let view = plan_preview(&s, snap.clone(), None, &|_, _, _| None).expect("preview");
        assert_eq!(snap, before, "the snapshot is not changed");
        assert_eq!((view.vms, view.hosts), (3, 2));
        assert!(view.hotspots.is_hotspot("h1"), "{:?}", view.hotspots);
        let moves: Vec<&Decision> = view
            .decisions
            .iter()
            .map(|d| &d.decision)
            .filter(|d| d.action.kind() == "migrate")
            .collect();
        assert!(!moves.is_empty(), "a migration is planned");
        let after = apply_plan(
            &snap,
            &view
                .decisions
                .iter()
                .map(|d| d.decision.clone())
                .collect::<Vec<_>>(),
        );
        let w = &s.options.score.weights;
        assert_eq!(
            view.cost_after,
            crate::plan::physics::communication_cost(&after, w)
        );
        assert_eq!(
            view.cost_before,
            crate::plan::physics::communication_cost(&snap, w)
        );
        // Serialised flat, as the decisions of `GET /api/v1/decisions`.
        let v = serde_json::to_value(&view).expect("json");
        assert_eq!(v["decisions"][0]["action"], "migrate", "{v}");
        assert!(v["decisions"][0].get("expected").is_none());
        // A rule forbidding every destination: no migration, and the
        // rules broken are reported before and after.
        let rules: RuleSet = serde_json::from_value(serde_json::json!([
            {"kind":"exclude","name":"keep-off-h2","hosts":["h2"]}
        ]))
        .expect("rules");
        let view = plan_preview(&s, snap.clone(), Some(rules), &|_, _, _| None).expect("preview");
        assert!(view
            .decisions
            .iter()
            .all(|d| d.decision.action.kind() != "migrate"));
        assert_eq!(view.violations_before.len(), 1, "v3 is on h2");
        assert_eq!(view.violations_after.len(), 1);
        assert_eq!(view.cost_before, view.cost_after);
        // `none`: Analyze only.
        let view = plan_preview(&settings("none"), snap, None, &|_, _, _| None).expect("none");
        assert!(view.decisions.is_empty());
        assert!(view.hotspots.is_hotspot("h1"));
    }
}
