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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use shoal_common::secret::{bearer, Presented, Secret};
use tracing::warn;

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

// ---------------------------------------------------------------- sessions
//
// The dashboard's sessions (the sign-in and sign-out handlers are in
// `super::session`): here because the middleware and the credentials'
// reload use them.

/// The session cookie's name.
pub const COOKIE: &str = "shoal_session";
/// The header a cookie-authenticated change must carry.
pub const CSRF_HEADER: &str = "x-shoal-csrf";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most (the oldest is ended to make room).
pub const MAX_SESSIONS: usize = 1024;

struct Entry {
    name: String,
    role: Role,
    csrf: String,
    created: Instant,
    expires: Instant,
}

/// The open sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sessions({})", self.len())
    }
}

/// A session found for a request.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its operator.
    pub who: Principal,
    /// Its CSRF token.
    pub csrf: String,
    /// Seconds left.
    pub expires_in_s: u64,
}

/// The id of the session a request came with (in the request's
/// extensions when the cookie authenticated it).
#[derive(Debug, Clone)]
pub struct SessionId(pub String);

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn random_hex() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| ApiError::Internal(format!("no randomness from the OS: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A poisoned table still holds whole entries.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open sessions (expired ones not yet forgotten included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens a session for operator `name`: returns its id and CSRF token.
    pub fn open(&self, name: &str, role: Role, now: Instant) -> Result<(String, String), ApiError> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        let mut m = self.lock();
        m.retain(|_, e| e.expires > now);
        while m.len() >= MAX_SESSIONS {
            let oldest = m.iter().min_by_key(|(_, e)| e.created).map(|(k, _)| *k);
            match oldest {
                Some(k) => {
                    m.remove(&k);
                }
                None => break,
            }
        }
        m.insert(
            key(&id),
            Entry {
                name: name.to_string(),
                role,
                csrf: csrf.clone(),
                created: now,
                expires: now + SESSION_TTL,
            },
        );
        Ok((id, csrf))
    }

    /// The live session `id`, if any (an expired one is forgotten).
    pub fn find(&self, id: &str, now: Instant) -> Option<Found> {
        let k = key(id);
        let mut m = self.lock();
        let e = m.get(&k)?;
        if e.expires <= now {
            m.remove(&k);
            return None;
        }
        Some(Found {
            who: Principal::Operator {
                name: e.name.clone(),
                role: e.role,
            },
            csrf: e.csrf.clone(),
            expires_in_s: e.expires.saturating_duration_since(now).as_secs(),
        })
    }

    /// Ends session `id`.
    pub fn close(&self, id: &str) -> bool {
        self.lock().remove(&key(id)).is_some()
    }

    /// Ends the sessions whose operator `auth` no longer knows with the
    /// same role (after a reload).
    pub fn retain_known(&self, auth: &Auth) -> usize {
        let mut m = self.lock();
        let before = m.len();
        m.retain(|_, e| auth.has_operator(&e.name, e.role));
        before - m.len()
    }
}

/// The session id a request's `Cookie` headers carry, if well formed (64
/// lower-case hex digits; anything else is ignored).
pub fn cookie_id(headers: &HeaderMap) -> Option<String> {
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(';') {
            let Some((k, val)) = part.trim().split_once('=') else {
                continue;
            };
            if k.trim() == COOKIE {
                let val = val.trim();
                if val.len() == 64 && val.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Some(val.to_string());
                }
            }
        }
    }
    None
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
    use axum::http::HeaderValue;

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
    fn sessions_open_find_expire_and_close() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, csrf) = s.open("ops", Role::Read, t0).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        let f = s.find(&id, t0).unwrap();
        assert_eq!(
            f.who,
            Principal::Operator {
                name: "ops".into(),
                role: Role::Read
            }
        );
        assert_eq!(f.csrf, csrf);
        assert!(
            s.find(&csrf, t0).is_none(),
            "the CSRF token is no session id"
        );
        assert!(s.find(&id, t0 + SESSION_TTL).is_none(), "expired");
        assert!(s.is_empty(), "an expired session is forgotten");
        let (id2, _) = s.open("ops", Role::Write, t0).unwrap();
        assert!(s.close(&id2));
        assert!(s.find(&id2, t0).is_none());
    }

    #[test]
    fn the_table_is_bounded_and_the_oldest_goes() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (first, _) = s.open("a", Role::Read, t0).unwrap();
        for i in 1..=MAX_SESSIONS {
            s.open("a", Role::Read, t0 + Duration::from_millis(i as u64))
                .unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.find(&first, t0).is_none());
    }

    #[test]
    fn cookies_are_parsed_strictly() {
        let id = "a".repeat(64);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={id}; y=2")).unwrap(),
        );
        assert_eq!(cookie_id(&h), Some(id));
        for bad in [
            "A".repeat(64),
            "a".repeat(63),
            "g".repeat(64),
            String::new(),
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("{COOKIE}={bad}")).unwrap(),
            );
            assert_eq!(cookie_id(&h), None, "{bad}");
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
