//! The web dashboard's pages and assets, embedded in the binary at build
//! time (`controller/assets/dashboard/`; plain HTML, CSS and JavaScript, no
//! library, nothing fetched from elsewhere).
//!
//! - `GET /`: the dashboard for a browser with a session
//!   ([`super::session`]), the sign-in form otherwise (the form holds no
//!   data of the fabric).
//! - `GET /ui/{file}`: its script and style sheet, authenticated like every
//!   read.
//!
//! Every page is sent with a Content-Security-Policy that allows scripts,
//! styles and connections to this origin only and no framing.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::cookie_id;
use super::{ApiError, ApiState};

const INDEX: &str = include_str!("../../assets/dashboard/index.html");
const SIGN_IN: &str = include_str!("../../assets/dashboard/signin.html");
const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../assets/dashboard/style.css");

/// The dashboard's policy: its own scripts, styles and API only.
const CSP_APP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";
/// The sign-in form's: no script at all, its own inline style.
const CSP_SIGN_IN: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

fn page(status: StatusCode, csp: &'static str, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// The sign-in form, with `error` said above it.
pub fn sign_in_page(status: StatusCode, error: Option<&str>) -> Response {
    let msg = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(status, CSP_SIGN_IN, SIGN_IN.replace("<!--ERROR-->", &msg))
}

/// HTML-escapes `s`.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `GET /`.
pub async fn index(State(s): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let signed_in =
        cookie_id(&headers).is_some_and(|id| s.auth.sessions().find(&id, Instant::now()).is_some());
    if signed_in {
        page(StatusCode::OK, CSP_APP, INDEX.to_string())
    } else {
        sign_in_page(StatusCode::OK, None)
    }
}

/// `GET /ui/{file}`.
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (ctype, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE),
        _ => return Err(ApiError::NotFound(format!("no asset {file}"))),
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(ctype)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn pages_name_only_their_own_assets() {
        // Nothing fetched from elsewhere: no absolute URL in a page or asset.
        for (name, text) in [
            ("index.html", INDEX),
            ("signin.html", SIGN_IN),
            ("app.js", APP_JS),
            ("style.css", STYLE),
        ] {
            // The SVG namespace is a name, not a URL fetched.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for bad in ["http://", "https://", "//cdn", "<script>"] {
                assert!(!text.contains(bad), "{name} contains {bad}");
            }
        }
        assert!(SIGN_IN.contains("<!--ERROR-->"));
        assert!(
            !SIGN_IN.contains("<script"),
            "the sign-in page has no script"
        );
    }
}
