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

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Extension, Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::auth::{Principal, SessionId, COOKIE, SESSION_TTL};
use super::{ApiError, ApiState};
use crate::config::Role;

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
