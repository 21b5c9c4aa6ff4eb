//! Who may call what: every route except `/healthz` needs a bearer token.
//!
//! Two kinds of credentials ([`crate::config::AuthSettings`]):
//! - **operators**, `read` (every `GET`) or `write` (also migrations and
//!   the policy);
//! - **host daemons**, each with its own token bound to its host id: it may
//!   `PUT /api/v1/hosts/{its id}` and `POST /api/v1/hosts/{its
//!   id}/reports`, and nothing else (not even reads).
//!
//! The rule is one function ([`need`]) applied by one middleware
//! ([`require`]) in front of every route, the fallback (404) and the 405
//! answers: a request is authenticated before the router says anything
//! about it. A missing or unknown token is 401, a known one without the
//! right is 403; both are logged with the peer, never with the token.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shoal_common::secret::{bearer, Presented, Secret};
use tracing::warn;

use super::session::{cookie_id, SessionId, Sessions, CSRF_HEADER};
use crate::api::{ApiError, ApiState};
use crate::config::{AuthSettings, Role};

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An operator.
    Operator {
        /// Its configured name.
        name: String,
        /// What it may do.
        role: Role,
    },
    /// A host daemon (its host id).
    Host(String),
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing (`/healthz`).
    Public,
    /// Any operator.
    Read,
    /// A `write` operator.
    Write,
    /// The host daemon of this host id.
    Host(String),
}

/// The credentials the API accepts.
#[derive(Debug, Default)]
pub struct Auth {
    operators: Vec<(Secret, String, Role)>,
    hosts: Vec<(Secret, String)>,
}

impl Auth {
    /// From the loaded settings.
    pub fn new(s: &AuthSettings) -> Self {
        Auth {
            operators: s
                .operators
                .iter()
                .map(|o| (o.token.clone(), o.name.clone(), o.role))
                .collect(),
            hosts: s
                .hosts
                .iter()
                .map(|(h, t)| (t.clone(), h.clone()))
                .collect(),
        }
    }

    /// Whether operator `name` is known with `role`.
    pub fn has_operator(&self, name: &str, role: Role) -> bool {
        self.operators
            .iter()
            .any(|(_, n, r)| n == name && *r == role)
    }

    /// How many operators and host daemons it knows.
    pub fn counts(&self) -> (usize, usize) {
        (self.operators.len(), self.hosts.len())
    }

    /// Who presents `token` (every credential is compared, in constant
    /// time each; the token is hashed once for all of them, as a
    /// controller may know hundreds of host daemons).
    pub fn identify(&self, token: &str) -> Option<Principal> {
        let token = Presented::new(token);
        let mut found = None;
        for (t, name, role) in &self.operators {
            if t.matches_digest(&token) {
                found = Some(Principal::Operator {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        for (t, host) in &self.hosts {
            if t.matches_digest(&token) {
                found = Some(Principal::Host(host.clone()));
            }
        }
        found
    }
}

/// The credentials in force: replaced as a whole when the configuration
/// is reloaded (SIGHUP), so a request sees either the old set or the new
/// one, never a mixture. It also holds the dashboard's sessions
/// ([`super::session`]), which a reload prunes.
#[derive(Debug, Default)]
pub struct SharedAuth {
    creds: RwLock<Arc<Auth>>,
    sessions: Sessions,
}

impl SharedAuth {
    /// Starts with `auth`.
    pub fn new(auth: Auth) -> Self {
        SharedAuth {
            creds: RwLock::new(Arc::new(auth)),
            sessions: Sessions::default(),
        }
    }

    /// The credentials in force now.
    pub fn current(&self) -> Arc<Auth> {
        // A poisoned lock still holds a whole `Arc`: use it.
        self.creds.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The dashboard's sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Puts `auth` in force for every later request, and ends the
    /// sessions of operators it no longer has (with the same role).
    pub fn replace(&self, auth: Auth) {
        let ended = self.sessions.retain_known(&auth);
        if ended > 0 {
            tracing::info!(ended, "sessions ended by the new credentials");
        }
        *self.creds.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(auth);
    }
}

/// What `method path` needs.
pub fn need(method: &Method, path: &str) -> Need {
    let get = method == Method::GET || method == Method::HEAD;
    // `/healthz`; the dashboard's page, which is the sign-in form until a
    // session exists; and the sign-in itself.
    if (get && (path == "/healthz" || path == "/"))
        || (method == Method::POST && path == "/api/v1/session")
    {
        return Need::Public;
    }
    // Signing out needs only a session (or any operator token).
    if method == Method::DELETE && path == "/api/v1/session" {
        return Need::Read;
    }
    if let Some(rest) = path.strip_prefix("/api/v1/hosts/") {
        let mut parts = rest.split('/');
        let id = parts.next().unwrap_or("");
        let tail: Vec<&str> = parts.collect();
        let host_write = matches!(
            (method, tail.as_slice()),
            (&Method::PUT, []) | (&Method::POST, ["reports"])
        );
        if host_write && !id.is_empty() {
            return Need::Host(id.to_string());
        }
    }
    if method == Method::GET || method == Method::HEAD {
        Need::Read
    } else {
        Need::Write
    }
}

/// Whether `who` may do what `need` asks.
pub fn allowed(who: &Principal, need: &Need) -> bool {
    match (need, who) {
        (Need::Public, _) => true,
        (Need::Read, Principal::Operator { .. }) => true,
        (Need::Write, Principal::Operator { role, .. }) => *role == Role::Write,
        (Need::Host(id), Principal::Host(h)) => id == h,
        _ => false,
    }
}

/// The middleware in front of every route.
pub async fn require(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let need = need(req.method(), req.uri().path());
    if need == Need::Public {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let presented = bearer(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let mut session = None;
    let who = match presented {
        Some(token) => {
            let Some(who) = s.auth.current().identify(token) else {
                warn!(%peer, %method, %path, "rejected: wrong bearer token");
                return unauthorized("wrong bearer token");
            };
            who
        }
        None => {
            let Some(id) = cookie_id(req.headers()) else {
                warn!(%peer, %method, %path, "rejected: no bearer token");
                return unauthorized("missing bearer token");
            };
            let Some(found) = s.auth.sessions().find(&id, Instant::now()) else {
                warn!(%peer, %method, %path, "rejected: unknown or expired session");
                return unauthorized("unknown or expired session; sign in again");
            };
            // A change made with a cookie carries the session's CSRF token
            // (a page of another site can make the browser send the
            // cookie, SameSite aside, but cannot read the token).
            if !(method == Method::GET || method == Method::HEAD) {
                let sent = req
                    .headers()
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(Presented::new);
                let ok = sent
                    .is_some_and(|p| Secret::new(&found.csrf).is_ok_and(|c| c.matches_digest(&p)));
                if !ok {
                    warn!(%peer, %method, %path, "rejected: session change without its CSRF token");
                    return ApiError::Forbidden(format!(
                        "a change made with a session needs its {CSRF_HEADER} header"
                    ))
                    .into_response();
                }
            }
            session = Some(SessionId(id));
            found.who
        }
    };
    if !allowed(&who, &need) {
        warn!(%peer, %method, %path, who = ?who, "rejected: not allowed");
        return ApiError::Forbidden(format!("{} may not {method} {path}", describe(&who)))
            .into_response();
    }
    let mut req = req;
    req.extensions_mut().insert(who);
    if let Some(sid) = session {
        req.extensions_mut().insert(sid);
    }
    next.run(req).await
}

fn describe(who: &Principal) -> String {
    match who {
        Principal::Operator { name, role } => format!("operator {name} ({role:?})"),
        Principal::Host(h) => format!("host {h}"),
    }
}

fn unauthorized(msg: &str) -> Response {
    let mut r = ApiError::Unauthorized(msg.into()).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let s = |t: &str| Secret::new(t).expect("token");
        Auth {
            operators: vec![
                (s("operator-write-token-1"), "ops".into(), Role::Write),
                (s("operator-read-token-22"), "noc".into(), Role::Read),
            ],
            hosts: vec![(s("host-h1-token-333333"), "h1".into())],
        }
    }

    #[test]
    fn needs() {
        assert_eq!(need(&Method::GET, "/healthz"), Need::Public);
        assert_eq!(need(&Method::POST, "/healthz"), Need::Write);
        assert_eq!(need(&Method::GET, "/"), Need::Public);
        assert_eq!(need(&Method::POST, "/"), Need::Write);
        assert_eq!(need(&Method::GET, "/ui/app.js"), Need::Read);
        assert_eq!(need(&Method::POST, "/api/v1/session"), Need::Public);
        assert_eq!(need(&Method::GET, "/api/v1/session"), Need::Read);
        assert_eq!(need(&Method::DELETE, "/api/v1/session"), Need::Read);
        assert_eq!(need(&Method::GET, "/api/v1/dashboard"), Need::Read);
        assert_eq!(need(&Method::GET, "/api/v1/links"), Need::Read);
        assert_eq!(need(&Method::GET, "/api/v1/hosts/h1"), Need::Read);
        assert_eq!(
            need(&Method::PUT, "/api/v1/hosts/h1"),
            Need::Host("h1".into())
        );
        assert_eq!(
            need(&Method::POST, "/api/v1/hosts/h1/reports"),
            Need::Host("h1".into())
        );
        assert_eq!(need(&Method::POST, "/api/v1/hosts/h1/other"), Need::Write);
        assert_eq!(need(&Method::PUT, "/api/v1/hosts/"), Need::Write);
        assert_eq!(need(&Method::DELETE, "/api/v1/migrations/m1"), Need::Write);
        assert_eq!(need(&Method::PUT, "/api/v1/policy"), Need::Write);
    }

    #[test]
    fn shared_credentials_are_replaced_whole() {
        let shared = SharedAuth::new(Auth::default());
        assert_eq!(shared.current().identify("operator-write-token-1"), None);
        let before = shared.current();
        shared.replace(auth());
        assert!(shared
            .current()
            .identify("operator-write-token-1")
            .is_some());
        assert_eq!(shared.current().counts(), (2, 1));
        // A request that took the old set keeps it to its end.
        assert_eq!(before.identify("operator-write-token-1"), None);
    }

    #[test]
    fn a_reload_ends_the_sessions_of_operators_it_removed_or_changed() {
        let shared = SharedAuth::new(auth());
        let now = Instant::now();
        let (ops, _) = shared.sessions().open("ops", Role::Write, now).unwrap();
        let (noc, _) = shared.sessions().open("noc", Role::Read, now).unwrap();
        // "noc" is now a writer, "ops" is gone.
        let s = |t: &str| Secret::new(t).expect("token");
        shared.replace(Auth {
            operators: vec![(s("operator-read-token-22"), "noc".into(), Role::Write)],
            hosts: vec![],
        });
        assert!(shared.sessions().find(&ops, now).is_none());
        assert!(shared.sessions().find(&noc, now).is_none());
        let (noc2, _) = shared.sessions().open("noc", Role::Write, now).unwrap();
        shared.replace(Auth {
            operators: vec![(s("operator-read-token-22"), "noc".into(), Role::Write)],
            hosts: vec![],
        });
        assert!(
            shared.sessions().find(&noc2, now).is_some(),
            "unchanged: kept"
        );
    }

    #[test]
    fn roles() {
        let a = auth();
        let w = a.identify("operator-write-token-1").expect("ops");
        let r = a.identify("operator-read-token-22").expect("noc");
        let h = a.identify("host-h1-token-333333").expect("h1");
        assert_eq!(a.identify("operator-write-token-"), None);
        assert_eq!(a.identify(""), None);
        assert!(allowed(&w, &Need::Write) && allowed(&w, &Need::Read));
        assert!(allowed(&r, &Need::Read) && !allowed(&r, &Need::Write));
        assert!(!allowed(&h, &Need::Read) && !allowed(&h, &Need::Write));
        assert!(allowed(&h, &Need::Host("h1".into())));
        assert!(!allowed(&h, &Need::Host("h2".into())));
        assert!(!allowed(&w, &Need::Host("h1".into())));
    }
}
