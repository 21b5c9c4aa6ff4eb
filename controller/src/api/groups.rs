//! `/api/v1/groups`: VIOLIN's domains (groups of hosts) and virtual
//! environments (a tenant's VMs, with an optional head node) in force, and
//! the traffic-derived IDC groups (`docs/operations.md`, "Environments and
//! domains").
//!
//! - `GET`: the effective domains and environments, which layer each came
//!   from, the warnings of the merge and the IDC groups of the latest
//!   snapshot;
//! - `PUT` (`{"domains": {...}, "environments": [...]}`): replaces the
//!   configuration's `[groups]` wholesale (validated as a set: 422 naming
//!   the field of a contradiction);
//! - `DELETE`: drops the API's set; the configuration's applies again.
//!
//! Precedence ([`crate::knowledge::groups`]): the API's set if any, else
//! `[groups]`; the host daemons' registrations fill in the hosts and VMs
//! the set does not name, contradictions resolved and reported as warnings
//! (never refused). A change is in force from the next planning round, kept
//! in the knowledge store under the configuration key `"groups"` (it
//! outlives a restart) and announced on the event stream (`groups_changed`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tracing::info;

use super::{ApiError, ApiState};
use crate::knowledge::groups::{EffectiveGroups, EnvironmentSpec, GroupWarning, GroupsSpec};
use crate::knowledge::store::StoreExt;
use crate::plan::idc::{idc_groups, MAX_IDC_GROUPS};

/// The configuration key the API's set is stored under (JSON `null`: none).
pub const STORE_KEY: &str = "groups";

/// The routes.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/api/v1/groups", get(list).put(replace).delete(clear))
}

/// Which layer the groups came from.
#[derive(Debug, Serialize)]
pub struct GroupsSource {
    /// The set the registrations fill in: `api` (put with `PUT
    /// /api/v1/groups`) or `config` (`[groups]`, possibly empty).
    pub base: &'static str,
    /// Domain → the layers its hosts come from (`api` or `config`, and/or
    /// `registration`).
    pub domains: BTreeMap<String, Vec<&'static str>>,
    /// Environment → the layers its members come from.
    pub environments: BTreeMap<String, Vec<&'static str>>,
}

/// `GET /api/v1/groups`.
#[derive(Debug, Serialize)]
pub struct GroupsView {
    /// Domain → its hosts (by name), every layer merged.
    pub domains: BTreeMap<String, Vec<String>>,
    /// Environments by name, members by name, every layer merged.
    pub environments: Vec<EnvironmentSpec>,
    /// Where each came from.
    pub source: GroupsSource,
    /// Contradictions between the layers and how they were resolved (at
    /// most [`crate::knowledge::groups::MAX_WARNINGS`]).
    pub warnings: Vec<GroupWarning>,
    /// Warnings left out beyond those.
    #[serde(skip_serializing_if = "is_zero")]
    pub warnings_omitted: usize,
    /// The IDC groups of the latest snapshot: VMs linked by traffic, each
    /// sorted by name, heaviest group first, at most
    /// [`crate::plan::idc::MAX_IDC_GROUPS`].
    pub idc: Vec<Vec<String>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn view(s: &ApiState) -> Result<GroupsView, ApiError> {
    let base_label = if s.knowledge.api_groups().is_some() {
        "api"
    } else {
        "config"
    };
    let base = s.knowledge.groups();
    let (domains, environments, source, warnings, warnings_omitted) = {
        let hosts = s.knowledge.hosts_read()?;
        let g = EffectiveGroups::new(&base, &hosts);
        (
            g.domains(),
            g.environments(),
            GroupsSource {
                base: base_label,
                domains: g.domain_sources(base_label),
                environments: g.environment_sources(base_label),
            },
            g.warnings.clone(),
            g.warnings_omitted,
        )
    };
    let idc = s
        .knowledge
        .snapshot(0, 1, Vec::new(), Vec::new(), BTreeMap::new())
        .map(|snap| idc_groups(&snap, MAX_IDC_GROUPS))
        .unwrap_or_default();
    Ok(GroupsView {
        domains,
        environments,
        source,
        warnings,
        warnings_omitted,
        idc,
    })
}

async fn list(State(s): State<Arc<ApiState>>) -> Result<Json<GroupsView>, ApiError> {
    view(&s).map(Json)
}

/// Stores `spec` (None: the configuration's apply), puts it in force and
/// announces it.
fn apply(s: &ApiState, spec: Option<GroupsSpec>) -> Result<Json<GroupsView>, ApiError> {
    let groups = spec
        .as_ref()
        .map(GroupsSpec::check)
        .transpose()
        .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    if let Some(store) = &s.knowledge.store {
        store
            .set_config(STORE_KEY, &spec)
            .map_err(|e| ApiError::Unavailable(format!("the groups cannot be stored: {e}")))?;
    }
    let (change, domains, environments) = match &spec {
        Some(sp) => ("replaced", sp.domains.len(), sp.environments.len()),
        None => ("cleared", 0, 0),
    };
    s.knowledge.set_api_groups(groups);
    info!(
        change,
        domains, environments, "domains and environments changed"
    );
    s.knowledge.events.publish(
        "groups_changed",
        serde_json::json!({
            "change": change,
            "domains": domains,
            "environments": environments,
            "by": "api",
        }),
    );
    view(s).map(Json)
}

async fn replace(
    State(s): State<Arc<ApiState>>,
    body: Result<Json<GroupsSpec>, JsonRejection>,
) -> Result<Json<GroupsView>, ApiError> {
    let Json(spec) = body?;
    apply(&s, Some(spec))
}

async fn clear(State(s): State<Arc<ApiState>>) -> Result<Json<GroupsView>, ApiError> {
    apply(&s, None)
}
