//! Host daemons' side of the API (each host daemon with its own token, see
//! [`crate::api::auth`]) and the engineers' view of hosts and VMs.
//!
//! - `PUT /api/v1/hosts/{id}` — registration (inventory), from hostd;
//! - `POST /api/v1/hosts/{id}/reports` — a report every interval, from hostd
//!   (404 "register first" for an unknown host);
//! - `GET /api/v1/hosts`, `/api/v1/hosts/{id}`, `/api/v1/vms`,
//!   `/api/v1/vms/{name}` — latest metrics and history length.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Serialize;
use shoal_common::proto::{HostMetrics, Registration, Report, VmInventory, VmMetrics};
use tracing::{info, warn};

use super::ApiError;
use crate::api::ApiState;
use crate::knowledge::clock::now_unix_ms;
use crate::knowledge::store::StoreExt;
use crate::mapek::state::HostEvent;
use crate::monitor::dpid::dpid_str;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Routes of this module.
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/hosts", get(list_hosts))
        .route("/api/v1/hosts/{id}", put(register).get(get_host))
        .route("/api/v1/hosts/{id}/reports", post(report))
        .route("/api/v1/vms", get(list_vms))
        .route("/api/v1/vms/{name}", get(get_vm))
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::Unprocessable(e.body_text()),
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

#[derive(Serialize)]
struct Registered {
    host_id: String,
    vms: usize,
    new_host: bool,
}

async fn register(
    State(s): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<Registration>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let Json(reg) = body?;
    let now = now_unix_ms();
    let (out, n) = {
        let mut hosts = s.knowledge.hosts_write()?;
        let n = reg.vms.len();
        (hosts.register(&id, reg.clone(), now)?, n)
    };
    if let Some(store) = &s.knowledge.store {
        let r = store.put_host(&id, &reg, now).and_then(|_| {
            reg.vms.iter().try_for_each(|v| {
                store
                    .put_vm(&v.name, &id, v, now, "registration")
                    .map(|_| ())
            })
        });
        if let Err(e) = r {
            warn!(host = %id, error = %e, "cannot persist registration");
        }
    }
    info!(host = %id, vms = n, new = out.new_host, bridge = ?reg.bridge.as_ref().map(|b| dpid_str(b.datapath_id)), "host registered");
    for (vm, from) in &out.placed {
        if from.is_some() {
            info!(%vm, from = ?from, to = %id, "VM placement changed");
        }
    }
    let code = if out.new_host {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        code,
        Json(Registered {
            host_id: id,
            vms: n,
            new_host: out.new_host,
        }),
    )
        .into_response())
}

#[derive(Serialize)]
struct Accepted {
    seq: u64,
    new_events: usize,
}

async fn report(
    State(s): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<Report>, JsonRejection>,
) -> ApiResult<Accepted> {
    let Path(id) = id?;
    let Json(rep) = body?;
    let now = now_unix_ms();
    let seq = rep.seq;
    let fresh = s.knowledge.hosts_write()?.report(&id, rep.clone(), now)?;
    if s.knowledge.store.is_some() {
        // Written by the report writer, off the request path.
        s.knowledge.report_queue.push(&id, rep, now);
    }
    for ev in &fresh {
        info!(host = %id, seq = ev.seq, event = ?ev.kind, "host event");
        if let Some(tx) = &s.host_events {
            let _ = tx.send(HostEvent {
                host: id.clone(),
                event: ev.clone(),
            });
        }
    }
    Ok(Json(Accepted {
        seq,
        new_events: fresh.len(),
    }))
}

/// A host as engineers see it.
#[derive(Debug, Serialize)]
pub struct HostView {
    /// Host id.
    pub id: String,
    /// hostd's effector API.
    pub api_url: String,
    /// dom0 address.
    pub dom0_addr: String,
    /// Cores.
    pub cores: u32,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Uplink NIC capacity, bit/s.
    pub nic_bps: u64,
    /// SR-IOV VFs.
    pub vf_count: u32,
    /// Bridge name and datapath id.
    pub bridge: Option<(String, String)>,
    /// VM names.
    pub vms: Vec<String>,
    /// Report interval, s.
    pub interval_s: f64,
    /// Reports kept.
    pub history_len: usize,
    /// Seconds since the last report (None: none yet).
    pub last_report_age_s: Option<f64>,
    /// Latest host metrics.
    pub metrics: Option<HostMetrics>,
}

fn host_view(id: &str, e: &crate::monitor::hosts::HostEntry, now: i64) -> HostView {
    let r = &e.registration;
    HostView {
        id: id.to_string(),
        api_url: r.api_url.clone(),
        dom0_addr: r.dom0_addr.clone(),
        cores: r.cores,
        memory_mb: r.memory_mb,
        nic_bps: r.nic_bps,
        vf_count: r.vf_count,
        bridge: r
            .bridge
            .as_ref()
            .map(|b| (b.name.clone(), dpid_str(b.datapath_id))),
        vms: r.vms.iter().map(|v| v.name.clone()).collect(),
        interval_s: r.interval_s,
        history_len: e.reports.len(),
        last_report_age_s: e.last_report_ms.map(|t| (now - t).max(0) as f64 / 1000.0),
        metrics: e.latest().map(|rep| rep.host.clone()),
    }
}

async fn list_hosts(State(s): State<Arc<ApiState>>) -> ApiResult<Vec<HostView>> {
    let now = now_unix_ms();
    let hosts = s.knowledge.hosts_read()?;
    Ok(Json(
        hosts
            .hosts()
            .iter()
            .map(|(id, e)| host_view(id, e, now))
            .collect(),
    ))
}

#[derive(Serialize)]
struct HostDetail {
    #[serde(flatten)]
    view: HostView,
    registration: Registration,
    /// Host metrics of the kept reports, oldest first.
    history: Vec<(u64, HostMetrics)>,
}

async fn get_host(
    State(s): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<HostDetail> {
    let Path(id) = id?;
    let hosts = s.knowledge.hosts_read()?;
    let e = hosts
        .host(&id)
        .ok_or_else(|| ApiError::NotFound(format!("host {id} is not registered")))?;
    Ok(Json(HostDetail {
        view: host_view(&id, e, now_unix_ms()),
        registration: e.registration.clone(),
        history: e
            .reports
            .iter()
            .map(|r| (r.at_unix_ms, r.host.clone()))
            .collect(),
    }))
}

/// A VM as engineers see it.
#[derive(Debug, Serialize)]
pub struct VmView {
    /// Name.
    pub name: String,
    /// Host it runs on.
    pub host: String,
    /// Inventory (MAC, IP, memory, backend...).
    pub inventory: VmInventory,
    /// Latest metrics.
    pub metrics: Option<VmMetrics>,
    /// Reports of its host kept (its metrics history length).
    pub history_len: usize,
}

fn vm_view(hosts: &crate::monitor::hosts::HostRegistry, name: &str) -> Option<VmView> {
    let (host, inv) = hosts.vm_inventory(name)?;
    let e = hosts.host(host)?;
    Some(VmView {
        name: name.to_string(),
        host: host.to_string(),
        inventory: inv.clone(),
        metrics: hosts.vm_metrics(name).cloned(),
        history_len: e
            .reports
            .iter()
            .filter(|r| r.vms.iter().any(|v| v.name == name))
            .count(),
    })
}

async fn list_vms(State(s): State<Arc<ApiState>>) -> ApiResult<Vec<VmView>> {
    let hosts = s.knowledge.hosts_read()?;
    Ok(Json(
        hosts
            .vms()
            .keys()
            .filter_map(|n| vm_view(&hosts, n))
            .collect(),
    ))
}

#[derive(Serialize)]
struct VmDetail {
    #[serde(flatten)]
    view: VmView,
    /// The VM's metrics of the kept reports, oldest first.
    history: Vec<(u64, VmMetrics)>,
}

async fn get_vm(
    State(s): State<Arc<ApiState>>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<VmDetail> {
    let Path(name) = name?;
    let hosts = s.knowledge.hosts_read()?;
    let view = vm_view(&hosts, &name).ok_or_else(|| ApiError::NotFound(format!("no VM {name}")))?;
    let history = hosts
        .host(&view.host)
        .map(|e| {
            e.reports
                .iter()
                .filter_map(|r| {
                    r.vms
                        .iter()
                        .find(|v| v.name == name)
                        .map(|v| (r.at_unix_ms, v.clone()))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(VmDetail { view, history }))
}
