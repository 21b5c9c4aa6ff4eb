//! Browser sessions for the dashboard: an operator signs in once with its
//! token and gets a session cookie.
//!
//! - `POST /api/v1/session` (form `token=…`, public: it is the sign-in
//!   itself) answers `303 See Other` to `/` with the cookie
//!   `shoal_session`: `HttpOnly` (no script reads it), `SameSite=Strict`
//!   (no other site's page sends it), `Path=/`, `Max-Age` of the session's
//!   life, and `Secure` when the API is served over TLS. Only operator
//!   tokens sign in; a host daemon's token is refused.
//! - The cookie then stands for the operator's token on every route, with
//!   the operator's role: a `read` operator sees everything and can change
//!   nothing. A request that changes something (any method but
//!   `GET`/`HEAD`) with a cookie must also carry the session's CSRF token
//!   in `X-Shoal-CSRF` (given by `GET /api/v1/session` to the page's own
//!   scripts only).
//! - `DELETE /api/v1/session` signs out. Sessions live in memory: a
//!   restart signs everyone out, and a configuration reload (SIGHUP) ends
//!   the sessions of operators it removed or whose role it changed.
//!
//! Session ids are 32 random bytes; the table keeps only their SHA-256, is
//! bounded ([`MAX_SESSIONS`], the oldest goes first) and forgets expired
//! entries as it meets them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Extension, Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::auth::{Auth, Principal};
use super::{ApiError, ApiState};
use crate::config::Role;

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

/// Whether a sign-in comes from this host's own page (or from no page: a
/// script or curl): a form posted from another site is refused. A
/// browser's `Sec-Fetch-Site` says it best; otherwise the `Origin`, when
/// there is one, must name the host the request was sent to.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

fn set_cookie(value: &str, max_age: u64, secure: bool) -> Result<HeaderValue, ApiError> {
    let mut c = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}");
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignIn(<redacted>)")
    }
}

/// `POST /api/v1/session`: signs an operator in (see the module).
pub async fn sign_in(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !same_origin(&headers) {
        warn!("sign-in refused: posted from another origin");
        return super::ui::sign_in_page(
            StatusCode::FORBIDDEN,
            Some("sign-in from another site refused"),
        );
    }
    let f = match form {
        Ok(Form(f)) => f,
        // Too large (413), not a form (415), or no token (400).
        Err(rej) => {
            let status = match rej.status() {
                s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
                _ => StatusCode::BAD_REQUEST,
            };
            return super::ui::sign_in_page(status, Some("the form needs a token, and only it"));
        }
    };
    match s.auth.current().identify(f.token.trim()) {
        Some(Principal::Operator { name, role }) => {
            let opened = s.auth.sessions().open(&name, role, Instant::now());
            let cookie =
                opened.and_then(|(id, _)| set_cookie(&id, SESSION_TTL.as_secs(), s.settings.tls));
            match cookie {
                Ok(c) => {
                    info!(operator = %name, ?role, "signed in to the dashboard");
                    (
                        StatusCode::SEE_OTHER,
                        [
                            (header::SET_COOKIE, c),
                            (header::LOCATION, HeaderValue::from_static("/")),
                        ],
                    )
                        .into_response()
                }
                Err(e) => e.into_response(),
            }
        }
        Some(Principal::Host(h)) => {
            warn!(host = %h, "sign-in refused: a host daemon's token");
            super::ui::sign_in_page(
                StatusCode::FORBIDDEN,
                Some("a host daemon's token cannot sign in; use an operator token"),
            )
        }
        None => {
            warn!("sign-in refused: wrong token");
            super::ui::sign_in_page(StatusCode::UNAUTHORIZED, Some("wrong token"))
        }
    }
}

/// `GET /api/v1/session`: who is signed in.
#[derive(Debug, Serialize)]
pub struct WhoView {
    /// Operator name.
    pub name: String,
    /// `read` or `write`.
    pub role: Role,
    /// `session` (cookie) or `token` (bearer).
    pub via: &'static str,
    /// The CSRF token changes must carry in `X-Shoal-CSRF` (sessions only).
    pub csrf: Option<String>,
    /// Seconds the session has left (sessions only).
    pub expires_in_s: Option<u64>,
}

/// `GET /api/v1/session`.
pub async fn who(
    State(s): State<Arc<ApiState>>,
    Extension(p): Extension<Principal>,
    sid: Option<Extension<SessionId>>,
) -> Result<Json<WhoView>, ApiError> {
    let Principal::Operator { name, role } = p else {
        return Err(ApiError::Forbidden("host daemons have no session".into()));
    };
    let found =
        sid.and_then(|Extension(SessionId(id))| s.auth.sessions().find(&id, Instant::now()));
    Ok(Json(WhoView {
        name,
        role,
        via: if found.is_some() { "session" } else { "token" },
        csrf: found.as_ref().map(|f| f.csrf.clone()),
        expires_in_s: found.map(|f| f.expires_in_s),
    }))
}

/// `DELETE /api/v1/session`: signs out (the cookie is cleared).
pub async fn sign_out(
    State(s): State<Arc<ApiState>>,
    sid: Option<Extension<SessionId>>,
) -> Response {
    if let Some(Extension(SessionId(id))) = sid {
        s.auth.sessions().close(&id);
    }
    match set_cookie("", 0, s.settings.tls) {
        Ok(c) => (StatusCode::NO_CONTENT, [(header::SET_COOKIE, c)]).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn origins() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "no Origin: a non-browser client");
        h.insert(header::HOST, HeaderValue::from_static("10.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://10.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h), "the browser's word comes first");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://10.0.0.1:8080"),
        );
        assert!(!same_origin(&h));
    }
}
