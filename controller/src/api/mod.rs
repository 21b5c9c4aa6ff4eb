//! REST API for engineers (axum), versioned under `/api/v1`.
//!
//! Every error is JSON `{"error": "..."}`; [`ApiError::status`] is the one
//! place that maps errors to HTTP status codes. The OpenAPI description is
//! served at `/api/v1/openapi.json` (source: `docs/openapi.json`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ofp::MacAddr;
use serde::{Deserialize, Serialize};

use crate::config::parse_dpid;
use crate::runtime::Shared;
use crate::topology::PortRef;

pub mod hosts;
pub mod ops;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Errors of API requests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed (bad path segment, bad query, bad body).
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but cannot be carried out (state conflict).
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but semantically invalid.
    #[error("{0}")]
    Unprocessable(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// A dependency (switch, host daemon) is not reachable right now.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an internal failure.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error: the single mapping used by every
    /// handler.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Body of every error response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "API request failed");
        } else {
            tracing::debug!(%status, error = %self, "API request rejected");
        }
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The read side of the API. Later stages add their routes to this router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/switches", get(switches))
        .route("/api/v1/switches/{dpid}/ports", get(switch_ports))
        .route("/api/v1/links", get(links))
        .route("/api/v1/endpoints", get(endpoints))
        .route("/api/v1/traffic-matrix", get(traffic_matrix))
        .route("/api/v1/ports/stats", get(port_stats))
        .route("/api/v1/queues/stats", get(queue_stats))
        .route("/api/v1/meters/stats", get(meter_stats))
        .merge(hosts::routes())
        .merge(ops::routes())
        .fallback(not_found)
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see /api/v1/openapi.json".into())
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// Formats a datapath id as 16 hex digits.
pub fn dpid_str(dpid: u64) -> String {
    format!("{dpid:016x}")
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    switches: usize,
    uptime_s: f64,
}

async fn healthz(State(s): State<Arc<Shared>>) -> ApiResult<Health> {
    let n = s.topo_read()?.switches().len();
    Ok(Json(Health {
        status: "ok",
        switches: n,
        uptime_s: s.started.elapsed().as_secs_f64(),
    }))
}

#[derive(Serialize)]
struct SwitchView {
    dpid: String,
    peer: String,
    description: Option<String>,
    hypervisor: Option<String>,
    n_tables: u8,
    ports: usize,
    connected_s: f64,
}

async fn switches(State(s): State<Arc<Shared>>) -> ApiResult<Vec<SwitchView>> {
    let topo = s.topo_read()?;
    Ok(Json(
        topo.switches()
            .values()
            .map(|sw| SwitchView {
                dpid: dpid_str(sw.dpid),
                peer: sw.peer.to_string(),
                description: sw.description.clone(),
                hypervisor: s.hypervisor_of(sw.dpid),
                n_tables: sw.features.n_tables,
                ports: sw.ports.len(),
                connected_s: sw.connected_at.elapsed().as_secs_f64(),
            })
            .collect(),
    ))
}

#[derive(Serialize)]
struct PortView {
    port_no: u32,
    name: String,
    #[serde(with = "crate::macser")]
    hw_addr: MacAddr,
    up: bool,
    /// `edge` (host-facing), `link` (inter-switch) or `pending` (LLDP has
    /// not had the time to tell).
    role: &'static str,
    peer: Option<PortRefView>,
    curr_speed_kbps: u32,
}

#[derive(Serialize, Clone)]
struct PortRefView {
    dpid: String,
    port: u32,
}

impl From<PortRef> for PortRefView {
    fn from(p: PortRef) -> Self {
        PortRefView {
            dpid: dpid_str(p.dpid),
            port: p.port,
        }
    }
}

fn path_dpid(raw: &str) -> Result<u64, ApiError> {
    parse_dpid(raw).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{raw:?} is not a datapath id (16 hex digits, 0x…, or decimal)"
        ))
    })
}

async fn switch_ports(
    State(s): State<Arc<Shared>>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Vec<PortView>> {
    let Path(raw) = p?;
    let dpid = path_dpid(&raw)?;
    let topo = s.topo_read()?;
    let sw = topo
        .switch(dpid)
        .ok_or_else(|| ApiError::NotFound(format!("switch {} is not connected", dpid_str(dpid))))?;
    let now = std::time::Instant::now();
    let peers: BTreeMap<PortRef, PortRef> = topo
        .links()
        .flat_map(|l| [(l.src, l.dst), (l.dst, l.src)])
        .collect();
    Ok(Json(
        sw.ports
            .values()
            .map(|p| {
                let at = PortRef {
                    dpid,
                    port: p.desc.port_no,
                };
                let role = if topo.is_link_port(at) {
                    "link"
                } else if topo.is_edge_port(at, now, s.settings.port_confirm) {
                    "edge"
                } else {
                    "pending"
                };
                PortView {
                    port_no: p.desc.port_no,
                    name: p.desc.name.clone(),
                    hw_addr: p.desc.hw_addr,
                    up: p.desc.is_up(),
                    role,
                    peer: peers.get(&at).map(|p| PortRefView::from(*p)),
                    curr_speed_kbps: p.desc.curr_speed,
                }
            })
            .collect(),
    ))
}

#[derive(Serialize)]
struct LinkView {
    src: PortRefView,
    dst: PortRefView,
    age_s: f64,
    last_seen_s: f64,
}

async fn links(State(s): State<Arc<Shared>>) -> ApiResult<Vec<LinkView>> {
    let topo = s.topo_read()?;
    Ok(Json(
        topo.links()
            .map(|l| LinkView {
                src: l.src.into(),
                dst: l.dst.into(),
                age_s: l.since.elapsed().as_secs_f64(),
                last_seen_s: l.last_seen.elapsed().as_secs_f64(),
            })
            .collect(),
    ))
}

#[derive(Serialize)]
struct EndpointView {
    #[serde(with = "crate::macser")]
    mac: MacAddr,
    ip: Option<Ipv4Addr>,
    dpid: String,
    port: u32,
    hypervisor: Option<String>,
    last_seen_s: f64,
    moves: u32,
}

async fn endpoints(State(s): State<Arc<Shared>>) -> ApiResult<Vec<EndpointView>> {
    let topo = s.topo_read()?;
    let mut v: Vec<EndpointView> = topo
        .endpoints()
        .map(|e| EndpointView {
            mac: e.mac,
            ip: e.ip,
            dpid: dpid_str(e.location.dpid),
            port: e.location.port,
            hypervisor: s.hypervisor_of(e.location.dpid),
            last_seen_s: e.last_seen.elapsed().as_secs_f64(),
            moves: e.moves,
        })
        .collect();
    v.sort_by_key(|e| e.mac);
    Ok(Json(v))
}

/// Traffic class of a pair.
#[derive(Debug, Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrafficClass {
    /// Both VMs behind the same hypervisor: never crosses a physical NIC.
    Idc,
    /// Everything else.
    Nic,
}

/// Query of `/api/v1/traffic-matrix`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixQuery {
    /// Only pairs of this class.
    pub class: Option<TrafficClass>,
    /// Only pairs with at least this rate.
    pub min_bytes_per_s: Option<f64>,
}

/// One λ(u,v) entry.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct PairView {
    /// Source VM MAC.
    #[serde(with = "crate::macser")]
    pub src: MacAddr,
    /// Destination VM MAC.
    #[serde(with = "crate::macser")]
    pub dst: MacAddr,
    /// Source IP, when known.
    pub src_ip: Option<Ipv4Addr>,
    /// Destination IP, when known.
    pub dst_ip: Option<Ipv4Addr>,
    /// λ(u,v), bytes/s averaged over the window.
    pub bytes_per_s: f64,
    /// All bytes counted for the pair.
    pub total_bytes: u64,
    /// IDC or NIC.
    pub class: TrafficClass,
    /// Switch of the first-hop flow.
    pub dpid: String,
}

/// The traffic matrix.
#[derive(Debug, Serialize, Deserialize)]
pub struct MatrixView {
    /// Nominal averaging window, seconds.
    pub window_s: f64,
    /// Polling interval, seconds.
    pub interval_s: f64,
    /// Pairs, sorted by (src, dst).
    pub pairs: Vec<PairView>,
}

async fn traffic_matrix(
    State(s): State<Arc<Shared>>,
    q: Result<Query<MatrixQuery>, QueryRejection>,
) -> ApiResult<MatrixView> {
    let Query(q) = q?;
    if let Some(m) = q.min_bytes_per_s {
        if !m.is_finite() || m < 0.0 {
            return Err(ApiError::BadRequest(
                "min_bytes_per_s must be a finite number >= 0".into(),
            ));
        }
    }
    Ok(Json(s.traffic_matrix(
        q.class,
        q.min_bytes_per_s.unwrap_or(0.0),
    )?))
}

/// Query selecting one switch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpidQuery {
    /// Datapath id filter.
    pub dpid: Option<String>,
}

fn dpid_filter(q: &DpidQuery) -> Result<Option<u64>, ApiError> {
    q.dpid.as_deref().map(path_dpid).transpose()
}

async fn port_stats(
    State(s): State<Arc<Shared>>,
    q: Result<Query<DpidQuery>, QueryRejection>,
) -> ApiResult<Vec<serde_json::Value>> {
    let Query(q) = q?;
    let f = dpid_filter(&q)?;
    let m = s.monitor_lock()?;
    Ok(Json(
        m.port_rates()
            .into_iter()
            .filter(|r| f.is_none_or(|d| d == r.dpid))
            .map(|r| {
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                v["dpid"] = serde_json::Value::String(dpid_str(r.dpid));
                v
            })
            .collect(),
    ))
}

async fn queue_stats(
    State(s): State<Arc<Shared>>,
    q: Result<Query<DpidQuery>, QueryRejection>,
) -> ApiResult<Vec<serde_json::Value>> {
    let Query(q) = q?;
    let f = dpid_filter(&q)?;
    let m = s.monitor_lock()?;
    Ok(Json(
        m.queue_rates()
            .into_iter()
            .filter(|r| f.is_none_or(|d| d == r.dpid))
            .map(|r| {
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                v["dpid"] = serde_json::Value::String(dpid_str(r.dpid));
                v
            })
            .collect(),
    ))
}

async fn meter_stats(
    State(s): State<Arc<Shared>>,
    q: Result<Query<DpidQuery>, QueryRejection>,
) -> ApiResult<Vec<serde_json::Value>> {
    let Query(q) = q?;
    let f = dpid_filter(&q)?;
    let m = s.monitor_lock()?;
    Ok(Json(
        m.meter_rates()
            .into_iter()
            .filter(|r| f.is_none_or(|d| d == r.dpid))
            .map(|r| {
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                v["dpid"] = serde_json::Value::String(dpid_str(r.dpid));
                v
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_status() {
        let cases = [
            (ApiError::NotFound("x".into()), 404),
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::Conflict("x".into()), 409),
            (ApiError::Unprocessable("x".into()), 422),
            (ApiError::Unauthorized("x".into()), 401),
            (ApiError::Unavailable("x".into()), 503),
            (ApiError::Internal("x".into()), 500),
        ];
        for (e, code) in cases {
            assert_eq!(e.status().as_u16(), code, "{e:?}");
        }
    }

    #[test]
    fn openapi_is_json_and_lists_the_read_side() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = v["paths"].as_object().unwrap();
        for p in [
            "/healthz",
            "/api/v1/switches",
            "/api/v1/switches/{dpid}/ports",
            "/api/v1/links",
            "/api/v1/endpoints",
            "/api/v1/traffic-matrix",
            "/api/v1/ports/stats",
        ] {
            assert!(paths.contains_key(p), "{p} missing from openapi.json");
        }
    }
}
