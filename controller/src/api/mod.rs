//! REST API for engineers (axum), versioned under `/api/v1`.
//!
//! - **Owns**: routes, request validation, JSON views, and the one mapping
//!   of the lower layers' typed errors to HTTP statuses ([`map_error`]).
//! - **Reads**: its [`ApiState`]: the knowledge, the loop's live state,
//!   the orchestrator, the few settings it reports.
//! - **May not touch**: nothing below may import it; it holds no state of
//!   its own.
//!
//! Every error is JSON `{"error": "..."}`; [`ApiError::status`] is the one
//! place that maps errors to HTTP status codes. The OpenAPI description is
//! served at `/api/v1/openapi.json` (source: `docs/openapi.json`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ofp::MacAddr;
use serde::{Deserialize, Serialize};

use tokio::sync::mpsc;

use crate::execute::orchestrator::{OrchError, Orchestrator};
use crate::knowledge::cluster::NotLeader;
use crate::knowledge::state::{Knowledge, Poisoned};
use crate::mapek::live::LiveState;
use crate::mapek::state::HostEvent;
use crate::monitor::dpid::dpid_str;
use crate::monitor::dpid::parse_dpid;
use crate::monitor::hosts::HostError;
use crate::monitor::lldp::{LldpCounts, SecretSource, MAX_FUTURE_SKEW};
use crate::monitor::topology::PortRef;
use crate::monitor::topology::{FLAP_MAX_CHANGES, FLAP_WINDOW};

pub mod auth;
pub mod control;
pub mod dashboard;
pub mod events;
pub mod groups;
pub mod history;
pub mod hosts;
pub mod metrics;
pub mod ops;
pub mod preview;
pub mod rules;
pub mod session;
pub mod ui;

/// What the API serves and changes: the handles it is given at start.
#[derive(Debug)]
pub struct ApiState {
    /// The live knowledge (topology, statistics, hosts, store).
    pub knowledge: Arc<Knowledge>,
    /// The loop's live state (policy, hotspots, decisions).
    pub live: Arc<Mutex<LiveState>>,
    /// The migration orchestrator.
    pub orchestrator: Arc<Orchestrator>,
    /// The settings the API reports.
    pub settings: ApiSettings,
    /// The credentials it accepts (replaced on reload).
    pub auth: auth::SharedAuth,
    /// Where new host events (deduplicated) go.
    pub host_events: Option<mpsc::UnboundedSender<HostEvent>>,
    /// The live loop's context (None: no loop, e.g. in unit tests): approved
    /// recommendations and the what-if preview use it.
    pub round: Option<crate::mapek::round::RoundCtx>,
}

/// The settings the API reports or uses to classify.
#[derive(Debug, Clone, Copy)]
pub struct ApiSettings {
    /// How long a port must stay free of LLDP to be an edge port.
    pub port_confirm: Duration,
    /// The statistics interval.
    pub poll_interval: Duration,
    /// Intervals in the rate window.
    pub window_intervals: u32,
    /// A link unseen this long expires; also the oldest LLDP probe accepted.
    pub link_timeout: Duration,
    /// Where the LLDP key comes from.
    pub lldp_secret_source: SecretSource,
    /// Pair flows installed at most.
    pub max_pair_flows: usize,
    /// Endpoint idle timeout.
    pub endpoint_idle: Duration,
    /// Pairs `GET /metrics` exports one series each for.
    pub metrics_top_pairs: usize,
    /// Whether the API is served over TLS (session cookies are `Secure`).
    pub tls: bool,
    /// `[topology] link_capacity_bps`: every link's capacity when set.
    pub link_capacity_bps: Option<f64>,
}

impl ApiSettings {
    /// The API's part of `settings`.
    pub fn of(settings: &crate::config::Settings) -> Self {
        ApiSettings {
            port_confirm: settings.port_confirm,
            poll_interval: settings.poll_interval,
            window_intervals: settings.window_intervals,
            link_timeout: settings.link_timeout,
            max_pair_flows: settings.max_pair_flows,
            endpoint_idle: settings.endpoint_idle,
            metrics_top_pairs: settings.metrics_top_pairs,
            tls: settings.tls.api.is_some(),
            link_capacity_bps: settings.link_capacity_bps,
            lldp_secret_source: if settings.lldp_secret.is_some() {
                SecretSource::File
            } else {
                SecretSource::Random
            },
        }
    }
}

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
    /// Known credentials without the right to do this.
    #[error("{0}")]
    Forbidden(String),
    /// The route exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
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
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
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

/// An error of a layer below the API, as the API sees it.
#[derive(Debug)]
pub enum LayerError {
    /// The orchestrator refused or could not find a migration.
    Orch(OrchError),
    /// The host registry refused a registration or report.
    Host(HostError),
    /// A knowledge lock is poisoned.
    Poisoned(Poisoned),
}

/// The one mapping of the lower layers' errors to API errors (and so, with
/// [`ApiError::status`], to HTTP status codes).
pub fn map_error(e: LayerError) -> ApiError {
    match e {
        LayerError::Orch(e) => match e {
            OrchError::UnknownVm(_) | OrchError::UnknownHost(_) | OrchError::NotFound(_) => {
                ApiError::NotFound(e.to_string())
            }
            OrchError::NoRoom(_) | OrchError::Conflict(_) => ApiError::Conflict(e.to_string()),
            OrchError::Infeasible(_) | OrchError::Invalid(_) => {
                ApiError::Unprocessable(e.to_string())
            }
            OrchError::NotLeader(_) => ApiError::Unavailable(e.to_string()),
        },
        LayerError::Host(e) => match e {
            HostError::Unknown(id) => {
                ApiError::NotFound(format!("host {id} is not registered: register first"))
            }
            HostError::Invalid(m) => ApiError::Unprocessable(m),
        },
        LayerError::Poisoned(p) => ApiError::Internal(p.to_string()),
    }
}

impl From<OrchError> for ApiError {
    fn from(e: OrchError) -> Self {
        map_error(LayerError::Orch(e))
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        map_error(LayerError::Host(e))
    }
}

impl From<Poisoned> for ApiError {
    fn from(e: Poisoned) -> Self {
        map_error(LayerError::Poisoned(e))
    }
}

/// The read side of the API. Later stages add their routes to this router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/switches", get(switches))
        .route("/api/v1/switches/{dpid}/ports", get(switch_ports))
        .route("/api/v1/links", get(links))
        .route("/api/v1/topology/lldp", get(lldp_view))
        .route("/api/v1/endpoints", get(endpoints))
        .route("/api/v1/limits", get(limits))
        .route("/api/v1/traffic-matrix", get(traffic_matrix))
        .route("/api/v1/ports/stats", get(port_stats))
        .route("/api/v1/queues/stats", get(queue_stats))
        .route("/api/v1/meters/stats", get(meter_stats))
        .route("/api/v1/cluster", get(cluster))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/events", get(events::events))
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .route("/api/v1/dashboard", get(dashboard::dashboard))
        .route(
            "/api/v1/session",
            get(session::who)
                .post(session::sign_in)
                .delete(session::sign_out)
                .layer(axum::extract::DefaultBodyLimit::max(4096)),
        )
        .merge(hosts::routes())
        .merge(ops::routes())
        .merge(rules::routes())
        .merge(preview::routes())
        .merge(history::routes())
        .merge(control::routes())
        .merge(groups::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            leader_redirect,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .with_state(state)
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{method} is not allowed here; see /api/v1/openapi.json"
    ))
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

#[derive(Serialize)]
struct Health {
    status: &'static str,
    switches: usize,
    uptime_s: f64,
    /// A cluster node's part: its id, role, and why it does not act.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<HealthCluster>,
}

#[derive(Serialize)]
struct HealthCluster {
    node: String,
    role: &'static str,
    leader: Option<String>,
    acting: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `200` with `"status": "ok"`; a cluster node without a valid etcd lease
/// (etcd lost its quorum, or the node is cut off from it) answers `503`
/// with `"status": "not acting"` and the reason: it sends no command and
/// changes no flow until it holds a lease again.
async fn healthz(State(s): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let n = s.knowledge.topo_read()?.switches().len();
    let fence = &s.knowledge.fence;
    let cluster = fence.view().map(|v| {
        let acting = fence.acting();
        HealthCluster {
            node: v.node_id.clone(),
            role: if v.is_leader && acting.is_ok() {
                "leader"
            } else {
                "follower"
            },
            leader: v.leader.clone(),
            acting: acting.is_ok(),
            reason: acting.err(),
        }
    });
    let acting = cluster.as_ref().is_none_or(|c| c.acting);
    let body = Json(Health {
        status: if acting { "ok" } else { "not acting" },
        switches: n,
        uptime_s: s.knowledge.started.elapsed().as_secs_f64(),
        cluster,
    });
    let code = if acting {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((code, body).into_response())
}

/// A cluster node's view of the cluster (`GET /api/v1/cluster`).
#[derive(Serialize)]
struct ClusterJson {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<String>,
    /// The leader's election key and its create revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    leader_key: Option<ClusterLeaderKey>,
    is_leader: bool,
    acting: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<ClusterLease>,
    nodes: Vec<crate::knowledge::cluster::NodeInfo>,
    masters: Vec<ClusterMaster>,
    revision: i64,
    /// OpenFlow messages withheld from switches this node still held as
    /// master because its lease had run out.
    writes_withheld: u64,
    /// Switches that granted this node MASTER (their ROLE_REPLY) under the
    /// generation the cluster assigns.
    granted_here: Vec<String>,
}

#[derive(Serialize)]
struct ClusterLeaderKey {
    key: String,
    revision: i64,
}

#[derive(Serialize)]
struct ClusterLease {
    id: String,
    ttl_s: u64,
    remaining_s: f64,
}

#[derive(Serialize)]
struct ClusterMaster {
    dpid: String,
    node: String,
    generation: u64,
    connected_to: Vec<String>,
}

async fn cluster(State(s): State<Arc<ApiState>>) -> ApiResult<ClusterJson> {
    let fence = &s.knowledge.fence;
    let Some(v) = fence.view() else {
        return Ok(Json(ClusterJson {
            mode: "single",
            node: None,
            leader: None,
            leader_key: None,
            is_leader: true,
            acting: true,
            reason: None,
            lease: None,
            nodes: Vec::new(),
            masters: Vec::new(),
            revision: 0,
            writes_withheld: 0,
            granted_here: Vec::new(),
        }));
    };
    let now = std::time::Instant::now();
    let acting = fence.acting();
    Ok(Json(ClusterJson {
        mode: "cluster",
        node: Some(v.node_id.clone()),
        leader: v.leader.clone(),
        leader_key: v
            .leader_key
            .clone()
            .map(|(key, revision)| ClusterLeaderKey { key, revision }),
        is_leader: v.is_leader && fence.may_lead().is_ok(),
        acting: acting.is_ok(),
        reason: acting.err(),
        lease: v.lease_valid_until.map(|t| ClusterLease {
            id: format!("{:x}", v.lease_id),
            ttl_s: v.lease_ttl_s,
            remaining_s: t.saturating_duration_since(now).as_secs_f64(),
        }),
        nodes: v.nodes.values().cloned().collect(),
        masters: v
            .masters
            .iter()
            .map(|(d, (n, g))| ClusterMaster {
                dpid: dpid_str(*d),
                node: n.clone(),
                generation: *g,
                connected_to: v.connected.get(d).cloned().unwrap_or_default(),
            })
            .collect(),
        revision: v.revision,
        writes_withheld: s
            .knowledge
            .fenced_writes
            .load(std::sync::atomic::Ordering::Relaxed),
        granted_here: s
            .knowledge
            .granted_masters
            .lock()
            .map(|g| {
                g.iter()
                    .filter(|d| fence.master_generation(**d).is_some())
                    .map(|d| dpid_str(*d))
                    .collect()
            })
            .unwrap_or_default(),
    }))
}

/// Whether a request changes what the leader decides (it must reach the
/// leader): every write except the host daemons' own registrations,
/// reports and events, which any node accepts.
fn leader_only(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    let write = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    // Host daemons' writes go to any node; sessions are each node's own.
    write && !path.starts_with("/api/v1/hosts") && path != "/api/v1/session"
}

/// A cluster follower answers a leader-only request with `307 Temporary
/// Redirect` to the same path at the leader's advertised API (a client
/// repeats the request there with its method and body); `503` when no
/// leader is known or this node's lease is not valid.
async fn leader_redirect(
    State(s): State<Arc<ApiState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let fence = &s.knowledge.fence;
    if !fence.is_cluster() || !leader_only(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    match fence.may_lead() {
        Ok(()) => next.run(req).await,
        Err(NotLeader::Follower { api: Some(api), .. }) => {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let location = format!("{api}{pq}");
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location.clone())],
                Json(ErrorBody {
                    error: format!(
                        "this node does not lead the cluster: repeat the request at {location}"
                    ),
                }),
            )
                .into_response()
        }
        Err(e) => ApiError::Unavailable(e.to_string()).into_response(),
    }
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

async fn switches(State(s): State<Arc<ApiState>>) -> ApiResult<Vec<SwitchView>> {
    // Lock order: hosts (in hypervisor_map) before topo.
    let hv = s.knowledge.hypervisor_map();
    let topo = s.knowledge.topo_read()?;
    Ok(Json(
        topo.switches()
            .values()
            .map(|sw| SwitchView {
                dpid: dpid_str(sw.dpid),
                peer: sw.peer.to_string(),
                description: sw.description.clone(),
                hypervisor: hv.get(&sw.dpid).cloned(),
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
    #[serde(with = "crate::monitor::macser")]
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
    State(s): State<Arc<ApiState>>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Vec<PortView>> {
    let Path(raw) = p?;
    let dpid = path_dpid(&raw)?;
    let topo = s.knowledge.topo_read()?;
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

async fn links(State(s): State<Arc<ApiState>>) -> ApiResult<Vec<LinkView>> {
    let topo = s.knowledge.topo_read()?;
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

/// `GET /api/v1/topology/lldp`: how LLDP is authenticated, what was
/// accepted and ignored, and cable damping.
#[derive(Serialize)]
struct LldpView {
    secret_source: SecretSource,
    max_age_s: f64,
    max_future_skew_s: f64,
    #[serde(flatten)]
    counts: LldpCounts,
    damping: DampingView,
}

#[derive(Serialize)]
struct DampingView {
    window_s: f64,
    max_changes: usize,
    link_ups_damped: u64,
}

async fn lldp_view(State(s): State<Arc<ApiState>>) -> ApiResult<LldpView> {
    let damped = s.knowledge.topo_read()?.damped_link_ups();
    Ok(Json(LldpView {
        secret_source: s.settings.lldp_secret_source,
        max_age_s: s.settings.link_timeout.as_secs_f64(),
        max_future_skew_s: MAX_FUTURE_SKEW.as_secs_f64(),
        counts: s.knowledge.lldp.read(),
        damping: DampingView {
            window_s: FLAP_WINDOW.as_secs_f64(),
            max_changes: FLAP_MAX_CHANGES,
            link_ups_damped: damped,
        },
    }))
}

#[derive(Serialize)]
struct EndpointView {
    #[serde(with = "crate::monitor::macser")]
    mac: MacAddr,
    ip: Option<Ipv4Addr>,
    dpid: String,
    port: u32,
    hypervisor: Option<String>,
    last_seen_s: f64,
    moves: u32,
}

async fn endpoints(State(s): State<Arc<ApiState>>) -> ApiResult<Vec<EndpointView>> {
    // Lock order: hosts (in hypervisor_map) before topo.
    let hv = s.knowledge.hypervisor_map();
    let topo = s.knowledge.topo_read()?;
    let mut v: Vec<EndpointView> = topo
        .endpoints()
        .map(|e| EndpointView {
            mac: e.mac,
            ip: e.ip,
            dpid: dpid_str(e.location.dpid),
            port: e.location.port,
            hypervisor: hv.get(&e.location.dpid).cloned(),
            last_seen_s: e.last_seen.elapsed().as_secs_f64(),
            moves: e.moves,
        })
        .collect();
    v.sort_by_key(|e| e.mac);
    Ok(Json(v))
}

/// The bounds of the forwarding state, how full each is, and what was
/// refused at them (`GET /api/v1/limits`).
#[derive(Debug, Serialize, Deserialize)]
pub struct LimitsView {
    /// Endpoint table and pair flows.
    pub forwarding: ForwardingLimits,
    /// Traffic matrix.
    pub traffic_matrix: MatrixLimits,
    /// PACKET_INs dropped because the core was saturated.
    pub packet_in_drops: u64,
    /// Other switch events (PORT_STATUS, FLOW_REMOVED, ERROR) dropped
    /// because the core was saturated.
    pub event_drops: u64,
    /// Switch connections closed because the peer stopped reading.
    pub not_reading_disconnects: u64,
}

/// The forwarding part of [`LimitsView`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardingLimits {
    /// Source MACs per edge port at most.
    pub max_macs_per_port: usize,
    /// Endpoints at most.
    pub max_endpoints: usize,
    /// Endpoints now.
    pub endpoints: usize,
    /// Endpoint idle timeout, seconds.
    pub endpoint_idle_timeout_s: f64,
    /// MACs refused in all (port full + table full), since start.
    pub macs_refused: u64,
    /// MACs refused because their edge port was full.
    pub macs_refused_port_full: u64,
    /// MACs refused because the endpoint table was full.
    pub macs_refused_table_full: u64,
    /// Endpoints forgotten after their idle timeout, since start.
    pub endpoints_expired: u64,
    /// Pair flows installed at most.
    pub max_pair_flows: usize,
    /// Pair flows installed now.
    pub pair_flows: u64,
    /// New pairs forwarded without a flow because the bound was reached.
    pub pair_flows_refused: u64,
}

/// The traffic-matrix part of [`LimitsView`].
#[derive(Debug, Serialize, Deserialize)]
pub struct MatrixLimits {
    /// Pairs tracked at most.
    pub max_pairs: usize,
    /// Pairs tracked now.
    pub pairs: usize,
    /// Readings of new pairs not tracked because the matrix was full.
    pub pairs_refused: u64,
}

async fn limits(State(s): State<Arc<ApiState>>) -> ApiResult<LimitsView> {
    use std::sync::atomic::Ordering;
    let (max_pairs, pairs, pairs_refused) = {
        let m = s.knowledge.monitor_lock()?;
        (m.matrix.max_pairs(), m.matrix.len(), m.matrix.refused())
    };
    let (lim, counters, endpoints) = {
        let t = s.knowledge.topo_read()?;
        (t.limits(), t.endpoint_counters(), t.endpoint_count())
    };
    let l = &s.knowledge.limits;
    Ok(Json(LimitsView {
        forwarding: ForwardingLimits {
            max_macs_per_port: lim.max_per_port,
            max_endpoints: lim.max_total,
            endpoints,
            endpoint_idle_timeout_s: s.settings.endpoint_idle.as_secs_f64(),
            macs_refused: counters.refused_port_full + counters.refused_table_full,
            macs_refused_port_full: counters.refused_port_full,
            macs_refused_table_full: counters.refused_table_full,
            endpoints_expired: counters.expired,
            max_pair_flows: s.settings.max_pair_flows,
            pair_flows: l.pair_flows.load(Ordering::Relaxed),
            pair_flows_refused: l.pair_flows_refused.load(Ordering::Relaxed),
        },
        traffic_matrix: MatrixLimits {
            max_pairs,
            pairs,
            pairs_refused,
        },
        packet_in_drops: s.knowledge.packet_in_drops.load(Ordering::Relaxed),
        event_drops: s.knowledge.event_drops.load(Ordering::Relaxed),
        not_reading_disconnects: s.knowledge.not_reading_disconnects.load(Ordering::Relaxed),
    }))
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
    #[serde(with = "crate::monitor::macser")]
    pub src: MacAddr,
    /// Destination VM MAC.
    #[serde(with = "crate::monitor::macser")]
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
    State(s): State<Arc<ApiState>>,
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
    Ok(Json(matrix_view(
        &s,
        q.class,
        q.min_bytes_per_s.unwrap_or(0.0),
    )?))
}

/// The class of traffic between endpoints attached to `a` and `b`:
/// IDC when both bridges belong to the same hypervisor (or are the same
/// bridge), NIC otherwise. `hv`: [`crate::knowledge::state::Knowledge::hypervisor_map`].
pub fn class_of(hv: &BTreeMap<u64, String>, a: Option<u64>, b: Option<u64>) -> TrafficClass {
    match (a, b) {
        (Some(a), Some(b)) if a == b => TrafficClass::Idc,
        (Some(a), Some(b)) => match (hv.get(&a), hv.get(&b)) {
            (Some(x), Some(y)) if x == y => TrafficClass::Idc,
            _ => TrafficClass::Nic,
        },
        _ => TrafficClass::Nic,
    }
}

/// The traffic matrix λ(u,v), optionally filtered.
pub fn matrix_view(
    s: &ApiState,
    class: Option<TrafficClass>,
    min_bytes_per_s: f64,
) -> Result<MatrixView, ApiError> {
    let rates = s.knowledge.monitor_lock()?.matrix.rates();
    // Lock order: hosts (in hypervisor_map) before topo.
    let hv = s.knowledge.hypervisor_map();
    let topo = s.knowledge.topo_read()?;
    let interval = s.settings.poll_interval.as_secs_f64();
    let mut pairs = Vec::with_capacity(rates.len());
    for r in rates {
        let (se, de) = (topo.endpoint(&r.src), topo.endpoint(&r.dst));
        let c = class_of(
            &hv,
            se.map(|e| e.location.dpid),
            de.map(|e| e.location.dpid),
        );
        if class.is_some_and(|k| k != c) || r.bytes_per_s < min_bytes_per_s {
            continue;
        }
        pairs.push(PairView {
            src: r.src,
            dst: r.dst,
            src_ip: se.and_then(|e| e.ip),
            dst_ip: de.and_then(|e| e.ip),
            bytes_per_s: r.bytes_per_s,
            total_bytes: r.total_bytes,
            class: c,
            dpid: dpid_str(r.dpid),
        });
    }
    Ok(MatrixView {
        window_s: interval * f64::from(s.settings.window_intervals),
        interval_s: interval,
        pairs,
    })
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

/// Rows of one switch (or all), each with its datapath id as 16 hex digits.
fn stats_rows<T: Serialize>(
    rows: Vec<T>,
    dpid_of: fn(&T) -> u64,
    q: &DpidQuery,
) -> ApiResult<Vec<serde_json::Value>> {
    let f = dpid_filter(q)?;
    Ok(Json(
        rows.into_iter()
            .filter(|r| f.is_none_or(|d| d == dpid_of(r)))
            .map(|r| {
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                v["dpid"] = serde_json::Value::String(dpid_str(dpid_of(&r)));
                v
            })
            .collect(),
    ))
}

async fn port_stats(
    State(s): State<Arc<ApiState>>,
    q: Result<Query<DpidQuery>, QueryRejection>,
) -> ApiResult<Vec<serde_json::Value>> {
    let Query(q) = q?;
    let rows = s.knowledge.monitor_lock()?.port_rates();
    stats_rows(rows, |r| r.dpid, &q)
}

async fn queue_stats(
    State(s): State<Arc<ApiState>>,
    q: Result<Query<DpidQuery>, QueryRejection>,
) -> ApiResult<Vec<serde_json::Value>> {
    let Query(q) = q?;
    let rows = s.knowledge.monitor_lock()?.queue_rates();
    stats_rows(rows, |r| r.dpid, &q)
}

async fn meter_stats(
    State(s): State<Arc<ApiState>>,
    q: Result<Query<DpidQuery>, QueryRejection>,
) -> ApiResult<Vec<serde_json::Value>> {
    let Query(q) = q?;
    let rows = s.knowledge.monitor_lock()?.meter_rates();
    stats_rows(rows, |r| r.dpid, &q)
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
    fn only_writes_other_than_the_host_daemons_go_to_the_leader() {
        use axum::http::Method;
        assert!(leader_only(&Method::POST, "/api/v1/migrations"));
        assert!(leader_only(&Method::PUT, "/api/v1/policy"));
        assert!(leader_only(&Method::DELETE, "/api/v1/migrations/m1"));
        assert!(!leader_only(&Method::GET, "/api/v1/migrations"));
        assert!(!leader_only(&Method::HEAD, "/api/v1/cluster"));
        assert!(!leader_only(&Method::PUT, "/api/v1/hosts/h1"));
        assert!(!leader_only(&Method::POST, "/api/v1/hosts/h1/reports"));
    }

    #[test]
    fn lower_layer_errors_map_to_statuses() {
        let s = |e: LayerError| map_error(e).status().as_u16();
        assert_eq!(s(LayerError::Orch(OrchError::UnknownVm("v".into()))), 404);
        assert_eq!(s(LayerError::Orch(OrchError::UnknownHost("h".into()))), 404);
        assert_eq!(s(LayerError::Orch(OrchError::NotFound("m".into()))), 404);
        assert_eq!(s(LayerError::Orch(OrchError::NoRoom("x".into()))), 409);
        assert_eq!(s(LayerError::Orch(OrchError::Conflict("x".into()))), 409);
        assert_eq!(s(LayerError::Orch(OrchError::Infeasible("x".into()))), 422);
        assert_eq!(s(LayerError::Orch(OrchError::Invalid("x".into()))), 422);
        assert_eq!(
            s(LayerError::Orch(OrchError::NotLeader(NotLeader::LeaseLost))),
            503
        );
        assert_eq!(s(LayerError::Host(HostError::Unknown("h".into()))), 404);
        assert_eq!(s(LayerError::Host(HostError::Invalid("x".into()))), 422);
        assert_eq!(s(LayerError::Poisoned(Poisoned("topology"))), 500);
        assert_eq!(
            map_error(LayerError::Poisoned(Poisoned("topology"))),
            ApiError::Internal("topology lock poisoned".into())
        );
        assert_eq!(
            map_error(LayerError::Host(HostError::Unknown("h1".into()))),
            ApiError::NotFound("host h1 is not registered: register first".into())
        );
    }

    #[test]
    fn openapi_is_json_and_lists_the_read_side() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = v["paths"].as_object().unwrap();
        for p in [
            "/healthz",
            "/metrics",
            "/api/v1/cluster",
            "/api/v1/events",
            "/api/v1/switches",
            "/api/v1/switches/{dpid}/ports",
            "/api/v1/links",
            "/api/v1/topology/lldp",
            "/api/v1/endpoints",
            "/api/v1/limits",
            "/api/v1/traffic-matrix",
            "/api/v1/ports/stats",
            "/api/v1/queues/stats",
            "/api/v1/meters/stats",
            "/api/v1/hosts",
            "/api/v1/hosts/{id}",
            "/api/v1/hosts/{id}/reports",
            "/api/v1/vms",
            "/api/v1/vms/{name}",
            "/api/v1/migrations",
            "/api/v1/migrations/{id}",
            "/api/v1/decisions",
            "/api/v1/hotspots",
            "/api/v1/policy",
            "/api/v1/vf-assignments",
            "/api/v1/loop",
            "/",
            "/ui/{file}",
            "/api/v1/session",
            "/api/v1/dashboard",
            "/api/v1/rules",
            "/api/v1/rules/{name}",
            "/api/v1/audit",
            "/api/v1/groups",
        ] {
            assert!(paths.contains_key(p), "{p} missing from openapi.json");
        }
    }
}
