//! The effector API (axum): commands, VMs, health. Bearer token on
//! everything but `/healthz`; errors are `{"error": "..."}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use shoal_common::proto::{self, Command, ErrorBody};
use shoal_common::secret::{bearer, Secret};

use crate::state::{AcceptError, Hostd};

/// Largest command body accepted, bytes.
const MAX_BODY: usize = 256 * 1024;

/// Every way an API call can fail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// No or wrong bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// Malformed request (bad JSON, bad id).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but invalid command.
    #[error("{0}")]
    Unprocessable(String),
    /// Unknown command or VM.
    #[error("{0}")]
    NotFound(String),
    /// Conflicting command (same id, other body; VM busy or migrating).
    #[error("{0}")]
    Conflict(String),
    /// Body too large.
    #[error("body larger than {MAX_BODY} bytes")]
    TooLarge,
    /// The path exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
}

impl ApiError {
    /// The HTTP status of each error (the one place that decides it).
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> Self {
        match e {
            AcceptError::Conflict(m) => ApiError::Conflict(m),
            AcceptError::NotFound(m) => ApiError::NotFound(m),
            AcceptError::Invalid(m) => ApiError::Unprocessable(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.to_string(),
        };
        (self.status(), Json(body)).into_response()
    }
}

/// The bearer token of a request, if any.
fn presented(headers: &HeaderMap) -> Option<&str> {
    bearer(
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Whether `token` may make this request: the controller's token may do
/// anything; a migration's one-time peer token may only read the status
/// of the `prepare_incoming` command that carries it.
fn allowed(h: &Hostd, method: &Method, path: &str, token: &str) -> bool {
    if h.is_controller(token) {
        return true;
    }
    if method != Method::GET {
        return false;
    }
    let Some(id) = path
        .strip_prefix(proto::HOSTD_COMMANDS_PATH)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    match h.command(id).map(|s| s.command) {
        Some(proto::Command::PrepareIncoming(spec)) => spec
            .peer_token
            .as_deref()
            .and_then(|p| Secret::new(p).ok())
            .is_some_and(|p| p.matches(token)),
        _ => false,
    }
}

async fn auth(State(h): State<Arc<Hostd>>, req: Request, next: Next) -> Response {
    if let Some(t) = presented(req.headers()) {
        if allowed(&h, req.method(), req.uri().path(), t) {
            return next.run(req).await;
        }
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "?".into());
    tracing::warn!(%peer, method = %req.method(), path = %req.uri().path(), "rejected: missing or wrong bearer token");
    ApiError::Unauthorized.into_response()
}

async fn put_command(
    State(h): State<Arc<Hostd>>,
    Path(id): Path<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    if !proto::valid_command_id(&id) {
        return Err(ApiError::BadRequest(format!(
            "invalid command id {id:?} (1-128 of [A-Za-z0-9._-])"
        )));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest(format!("cannot read the body: {e}"))
        }
    })?;
    if body.len() > MAX_BODY {
        return Err(ApiError::TooLarge);
    }
    let cmd: Command = serde_json::from_slice(&body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::BadRequest(format!("malformed JSON: {e}"))
        } else {
            ApiError::Unprocessable(format!("invalid command: {e}"))
        }
    })?;
    if let Some(existing) = h.command(&id) {
        // Idempotent replay or conflict; decided before validation so that a
        // replay gets the same answer even after the VM left.
        if existing.command == cmd {
            return Ok((StatusCode::OK, Json(existing)).into_response());
        }
        return Err(ApiError::Conflict(format!(
            "command {id} exists with a different body"
        )));
    }
    // Everything from the wire is checked (and a VM definition resolved
    // against this host's own configuration) before the command exists.
    let plan = crate::commands::check(&h, &cmd).await.map_err(|e| {
        tracing::warn!(command = %id, kind = cmd.kind_name(), error = %e, "command refused");
        ApiError::Unprocessable(e)
    })?;
    let (status, created) = h.accept(&id, &cmd)?;
    if created {
        crate::commands::spawn(h.clone(), id.clone(), cmd, plan);
        tracing::info!(command = %id, kind = status.command.kind_name(), "command accepted");
        Ok((StatusCode::ACCEPTED, Json(status)).into_response())
    } else {
        Ok((StatusCode::OK, Json(status)).into_response())
    }
}

async fn get_command(
    State(h): State<Arc<Hostd>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    h.command(&id)
        .map(|s| Json(s).into_response())
        .ok_or_else(|| ApiError::NotFound(format!("no command {id}")))
}

async fn list_commands(State(h): State<Arc<Hostd>>) -> Response {
    Json(crate::state::lock(&h.commands).all()).into_response()
}

async fn list_vms(State(h): State<Arc<Hostd>>) -> Response {
    let v: Vec<_> = h.all_vms().iter().map(|vm| vm.status()).collect();
    Json(v).into_response()
}

async fn get_vm(
    State(h): State<Arc<Hostd>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    h.vm(&name)
        .map(|vm| Json(vm.status()).into_response())
        .ok_or_else(|| ApiError::NotFound(format!("no VM {name} on this host")))
}

async fn metrics(State(h): State<Arc<Hostd>>) -> Response {
    match crate::metrics::render(&h) {
        Ok(body) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::metrics::CONTENT_TYPE,
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}"),
        )
            .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed here"))
}

/// The effector router.
pub fn router(h: Arc<Hostd>) -> Router {
    let authed = Router::new()
        .route(proto::HOSTD_COMMAND_PATH, get(get_command).put(put_command))
        .route(proto::HOSTD_COMMANDS_PATH, get(list_commands))
        .route(proto::HOSTD_VMS_PATH, get(list_vms))
        .route(proto::HOSTD_VM_PATH, get(get_vm))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(h.clone(), auth));
    Router::new()
        .route(proto::HOSTD_HEALTH_PATH, get(|| async { "ok" }))
        .merge(authed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(h)
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(h: Arc<Hostd>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(h).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// Serves the API over TLS on `listener` until the process ends.
pub async fn serve_tls(
    h: Arc<Hostd>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let l = shoal_common::tls::TlsListener::new(listener, tls)?;
    // `tap_io`: axum then gives the peer address to ConnectInfo.
    axum::serve(
        l.tap_io(|_| {}),
        router(h).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const CTL: &str = "controller-token-0123456789";
    const HOST: &str = "host-token-h-0123456789";

    #[test]
    fn error_statuses() {
        assert_eq!(ApiError::Unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            ApiError::BadRequest("x".into()).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::Unprocessable("x".into()).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            ApiError::NotFound("x".into()).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::Conflict("x".into()).status(),
            StatusCode::CONFLICT
        );
        assert_eq!(ApiError::TooLarge.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            ApiError::from(AcceptError::Invalid("x".into())).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn only_the_controller_token_passes() {
        let h = hostd();
        let get = Method::GET;
        assert!(allowed(&h, &get, "/api/v1/vms", CTL));
        assert!(allowed(&h, &Method::PUT, "/api/v1/commands/c1", CTL));
        assert!(!allowed(&h, &get, "/api/v1/vms", HOST));
        assert!(!allowed(&h, &get, "/api/v1/vms", &CTL[1..]));
        assert!(!allowed(
            &h,
            &get,
            "/api/v1/commands/c1",
            "peer-token-0123456789"
        ));
        let mut m = HeaderMap::new();
        assert_eq!(presented(&m), None);
        m.insert("authorization", "Basic x".parse().unwrap());
        assert_eq!(presented(&m), None);
    }

    fn hostd() -> Arc<Hostd> {
        let h = Arc::new(Hostd::new(
            crate::config::Config::default(),
            "h".into(),
            Secret::new(HOST).unwrap(),
            Some(Secret::new(CTL).unwrap()),
        ));
        let inv = shoal_common::proto::VmInventory {
            environment: None,
            environment_head: false,
            name: "v".into(),
            mac: "52:54:00:00:00:01".into(),
            ip: None,
            vcpus: 1,
            memory_mb: 64,
            max_memory_mb: 64,
            spec: shoal_common::proto::VmBackendSpec::Netns {
                namespace: "shd-nonexistent".into(),
                iface: "eth0".into(),
                port: "p".into(),
                vf_iface: None,
                vf_port: None,
                scenario: None,
                scenario_epoch_unix_ms: None,
            },
        };
        h.add_vm(Arc::new(crate::state::Vm::new(
            inv,
            Box::new(crate::netns::NetnsRuntime::new(None, 0)),
            shoal_common::proto::VmState::Running,
        )));
        h
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = HttpRequest::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, v)
    }

    #[tokio::test]
    async fn statuses_of_the_api() {
        let app = router(hostd());
        let (s, _) = call(&app, "GET", "/healthz", None, "").await;
        assert_eq!(s, StatusCode::OK);
        // A wrong method is JSON too (after authentication).
        let (s, v) = call(&app, "PATCH", "/api/v1/vms", Some(CTL), "").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert!(v["error"].is_string(), "{v}");
        let (s, _) = call(&app, "PATCH", "/api/v1/vms", None, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, v) = call(&app, "GET", "/api/v1/vms", None, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(v["error"].is_string());
        let (s, _) = call(&app, "GET", "/api/v1/vms", Some("wrong"), "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, v) = call(&app, "GET", "/api/v1/vms", Some(CTL), "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v[0]["inventory"]["name"], "v");
        let (s, _) = call(&app, "GET", "/api/v1/vms/nope", Some(CTL), "").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, v) = call(&app, "PUT", "/api/v1/commands/c1", Some(CTL), "{bad").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let (s, _) = call(
            &app,
            "PUT",
            "/api/v1/commands/c1",
            Some(CTL),
            r#"{"kind":"nope"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        let (s, _) = call(
            &app,
            "PUT",
            "/api/v1/commands/c1",
            Some(CTL),
            r#"{"kind":"memory_resize","vm":"v","target_mb":0}"#,
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        let (s, _) = call(
            &app,
            "PUT",
            "/api/v1/commands/c1",
            Some(CTL),
            r#"{"kind":"memory_resize","vm":"ghost","target_mb":8}"#,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let mig = r#"{"kind":"migrate","vm":"v","destination_host":"h2","destination_addr":"not-an-addr","max_bandwidth_bytes_per_s":1000,"downtime_limit_ms":300,"deadline_s":10}"#;
        let (s, v) = call(&app, "PUT", "/api/v1/commands/m1", Some(CTL), mig).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let (s, _) = call(&app, "PUT", "/api/v1/commands/bad%2Fid", Some(CTL), "{}").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        // A netns resize succeeds; replay → 200 same; other body → 409.
        let body = r#"{"kind":"memory_resize","vm":"v","target_mb":32}"#;
        let (s, v) = call(&app, "PUT", "/api/v1/commands/r1", Some(CTL), body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let (s, v) = call(&app, "PUT", "/api/v1/commands/r1", Some(CTL), body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["id"], "r1");
        let other = r#"{"kind":"memory_resize","vm":"v","target_mb":16}"#;
        let (s, _) = call(&app, "PUT", "/api/v1/commands/r1", Some(CTL), other).await;
        assert_eq!(s, StatusCode::CONFLICT);
        let mut done = serde_json::Value::Null;
        for _ in 0..50 {
            let (_, v) = call(&app, "GET", "/api/v1/commands/r1", Some(CTL), "").await;
            if v["state"] == "succeeded" {
                done = v;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(done["result"]["actual_mb"], 32, "{done}");
        let (s, _) = call(&app, "GET", "/api/v1/commands/zzz", Some(CTL), "").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let big = format!(
            "{{\"kind\":\"vf_attach\",\"vm\":\"{}\"}}",
            "x".repeat(MAX_BODY)
        );
        let (s, v) = call(&app, "PUT", "/api/v1/commands/big", Some(CTL), &big).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(v["error"].is_string(), "{v}");
    }

    /// A scratch directory for one test, empty.
    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("shd-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A `prepare_incoming` body for VM `vm` with inventory spec `spec`.
    fn incoming(vm: &str, spec: serde_json::Value) -> String {
        serde_json::json!({
            "kind": "prepare_incoming", "vm": vm, "destination_host": "h",
            "destination_addr": "127.0.0.1:1", "max_bandwidth_bytes_per_s": 1000,
            "downtime_limit_ms": 300, "deadline_s": 2.0,
            "vm_spec": {"name": vm, "mac": "52:54:00:00:00:09", "vcpus": 1,
                        "memory_mb": 64, "max_memory_mb": 64, "spec": spec},
        })
        .to_string()
    }

    /// A QEMU command line on the wire is refused with a 4xx and starts no
    /// process: the "QEMU" here is a script that leaves a marker file when
    /// it runs.
    #[tokio::test]
    async fn prepare_incoming_refuses_a_command_line_from_the_wire() {
        let dir = scratch("cmdline");
        let marker = dir.join("qemu-ran");
        let fake = dir.join("fake-qemu.sh");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho \"$@\" >> {}\n", marker.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let images = dir.join("images");
        std::fs::create_dir_all(&images).unwrap();
        std::fs::write(images.join("ok.img"), "").unwrap();
        std::fs::write(dir.join("outside.img"), "").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", images.join("shadow")).unwrap();
        std::os::unix::fs::symlink("../outside.img", images.join("up")).unwrap();
        let mut cfg = crate::config::Config {
            qemu_binary: fake.display().to_string(),
            run_dir: dir.join("run"),
            image_dir: Some(images),
            ..Default::default()
        };
        cfg.templates.insert(
            "small".into(),
            crate::template::MachineTemplate {
                args: ["-m", "{memory_mb}", "-drive", "file={disk},if=virtio"]
                    .map(String::from)
                    .to_vec(),
                max_memory_mb: Some(256),
                max_vcpus: None,
            },
        );
        let app = router(Arc::new(Hostd::new(
            cfg,
            "h".into(),
            Secret::new(HOST).unwrap(),
            Some(Secret::new(CTL).unwrap()),
        )));
        let qemu = |extra: serde_json::Value| {
            let mut s =
                serde_json::json!({"backend": "qemu", "template": "small", "disk": "ok.img"});
            if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            s
        };
        let old_args = |extra: &[&str]| {
            let mut a = vec!["-m", "64"];
            a.extend(extra);
            serde_json::json!({"backend": "qemu", "args": a})
        };
        let cases = [
            // The old scheme: a command line on the wire.
            old_args(&[
                "-virtfs",
                "local,path=/,mount_tag=r,security_model=passthrough",
            ]),
            old_args(&["-drive", "file=/etc/shadow,format=raw"]),
            old_args(&["--monitor", "tcp:127.0.0.1:4555,server=on,wait=off"]),
            old_args(&["-netdev", "tap,id=n0,script=/tmp/evil.sh"]),
            // Extra arguments smuggled next to a valid template.
            qemu(serde_json::json!({"args": ["-virtfs", "local,path=/"]})),
            qemu(serde_json::json!({"extra_args": ["-S"]})),
            // Templates this host does not have; disks outside image_dir.
            qemu(serde_json::json!({"template": "huge"})),
            qemu(serde_json::json!({"disk": "/etc/shadow"})),
            qemu(serde_json::json!({"disk": "../outside.img"})),
            qemu(serde_json::json!({"disk": "shadow"})),
            qemu(serde_json::json!({"disk": "up"})),
            qemu(serde_json::json!({"disk": "ok.img,file.driver=ssh"})),
            qemu(serde_json::json!({"tap": "t0,script=/tmp/evil.sh"})),
        ];
        for (i, spec) in cases.into_iter().enumerate() {
            let body = incoming("evil", spec.clone());
            let (s, v) = call(
                &app,
                "PUT",
                &format!("/api/v1/commands/e{i}"),
                Some(CTL),
                &body,
            )
            .await;
            assert!(s.is_client_error(), "{spec}: accepted with {s}: {v}");
            assert!(v["error"].is_string(), "{v}");
            let (s, _) = call(
                &app,
                "GET",
                &format!("/api/v1/commands/e{i}"),
                Some(CTL),
                "",
            )
            .await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{spec}: the command exists");
        }
        // Bad values of the VM itself.
        let bad_vm = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value =
                serde_json::from_str(&incoming("evil", qemu(serde_json::json!({})))).unwrap();
            f(&mut v);
            v.to_string()
        };
        for (i, body) in [
            bad_vm(&|v| v["vm_spec"]["mac"] = "52:54:00:00:00:01,x".into()),
            bad_vm(&|v| {
                v["vm"] = "-evil".into();
                v["vm_spec"]["name"] = "-evil".into()
            }),
            bad_vm(&|v| {
                v["vm_spec"]["memory_mb"] = 512.into();
                v["vm_spec"]["max_memory_mb"] = 512.into()
            }),
        ]
        .into_iter()
        .enumerate()
        {
            let (s, v) = call(
                &app,
                "PUT",
                &format!("/api/v1/commands/b{i}"),
                Some(CTL),
                &body,
            )
            .await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(
            !marker.exists(),
            "a process was started: {}",
            std::fs::read_to_string(&marker).unwrap_or_default()
        );
        // Control: a valid definition does start "QEMU", with the
        // template's arguments and the real path of the disk.
        let body = incoming("good", qemu(serde_json::json!({})));
        let (s, v) = call(&app, "PUT", "/api/v1/commands/g1", Some(CTL), &body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let mut ran = String::new();
        for _ in 0..100 {
            ran = std::fs::read_to_string(&marker).unwrap_or_default();
            if !ran.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let disk = dir.join("images/ok.img").canonicalize().unwrap();
        assert!(
            ran.starts_with(&format!(
                "-m 64 -drive file={},if=virtio -name good ",
                disk.display()
            )),
            "{ran}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Paths and names of a netns VM from the wire: a scenario file outside
    /// the host's scenario directory and an interface name `ip` would not
    /// take (longer than 15 bytes) are refused with a 4xx.
    #[tokio::test]
    async fn prepare_incoming_refuses_foreign_paths_and_bad_names() {
        let dir = scratch("netns");
        let scenarios = dir.join("scenarios");
        std::fs::create_dir_all(&scenarios).unwrap();
        let mut big = String::from(r#"{"points": [{"t": 0, "cpu": 0.5, "mem_mb": 1}]}"#);
        big.push_str(&" ".repeat(crate::plan::MAX_SCENARIO_BYTES as usize));
        std::fs::write(scenarios.join("big.json"), big).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", scenarios.join("shadow.json")).unwrap();
        let cfg = crate::config::Config {
            bridge: Some("br0".into()),
            uplink: Some("eth9".into()),
            scenario_dir: Some(scenarios),
            ..Default::default()
        };
        let app = router(Arc::new(Hostd::new(
            cfg,
            "h".into(),
            Secret::new(HOST).unwrap(),
            Some(Secret::new(CTL).unwrap()),
        )));
        let netns = |scenario: Option<&str>, iface: &str, port: &str| {
            let mut s = serde_json::json!({"backend": "netns", "namespace": "nsx",
                                           "iface": iface, "port": port});
            if let Some(p) = scenario {
                s["scenario"] = serde_json::json!(p);
            }
            s
        };
        for (i, spec) in [
            netns(Some("/etc/shadow"), "eth0", "p0"),
            netns(Some("../../../../etc/shadow"), "eth0", "p0"),
            netns(None, "eth0-far-too-long", "p0"),
            netns(None, "eth0", "-p0"),
            netns(None, "eth0", "port-far-too-long"),
            netns(Some("shadow.json"), "eth0", "p0"),
            netns(Some("big.json"), "eth0", "p0"),
            netns(None, "eth0", "eth9"),
            netns(None, "eth0", "br0"),
        ]
        .into_iter()
        .enumerate()
        {
            let body = incoming("nvm", spec.clone());
            let (s, v) = call(
                &app,
                "PUT",
                &format!("/api/v1/commands/n{i}"),
                Some(CTL),
                &body,
            )
            .await;
            assert!(s.is_client_error(), "{spec}: accepted with {s}: {v}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A command on a VM that is migrating is refused with 409.
    #[tokio::test]
    async fn busy_vm_conflicts() {
        let h = hostd();
        {
            let vm = h.vm("v").unwrap();
            let mut s = crate::state::lock(&vm.shared);
            s.state = shoal_common::proto::VmState::MigratingOut;
            s.busy = Some("m0".into());
        }
        let app = router(h);
        let (s, v) = call(
            &app,
            "PUT",
            "/api/v1/commands/r2",
            Some(CTL),
            r#"{"kind":"memory_resize","vm":"v","target_mb":8}"#,
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert!(v["error"].as_str().unwrap().contains("migrating"), "{v}");
    }
}
