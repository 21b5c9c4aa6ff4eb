//! Adversarial: the controller's REST API as an outsider, a read-only
//! operator and a host daemon would try it (a real `shoal-controller`
//! process; no switches needed).
//!
//! Every route of `docs/openapi.json` except `/healthz` answers 401
//! without a token or with a wrong one; a read-only operator gets 403 on
//! every write; a host daemon's token reads nothing and registers or
//! reports only as its own host; a write operator passes. Errors (401, 403,
//! 404, 405) are JSON. Token files readable by group/others are refused at
//! start, and no token ever appears in the log.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::creds::{self, host_token, OPERATOR_TOKEN, READER_TOKEN};
use support::qemu::http;
use support::{cargo_bin, free_port, wait_for, ChildGuard};

/// Every (method, concrete path) of the OpenAPI description.
fn routes() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(support::workspace_root().join("docs/openapi.json"))
        .expect("docs/openapi.json");
    let doc: Value = serde_json::from_str(&text).expect("OpenAPI JSON");
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        let concrete = path
            .replace("{dpid}", "0000000000000001")
            .replace("{id}", "h1")
            .replace("{name}", "vm1")
            .replace("{file}", "app.js");
        for m in ["get", "put", "post", "delete", "patch"] {
            if ops.get(m).is_some() {
                out.push((m.to_uppercase(), concrete.clone()));
            }
        }
    }
    assert!(out.len() >= 20, "too few routes: {out:?}");
    out
}

/// A call to a streaming route (the event stream never ends when it is
/// granted): the status, and the body when it is not 200 (an error, which
/// the server ends).
fn stream_status(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: shoal\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut buf).expect("read the answer");
        assert!(n > 0, "{method} {path}: closed before the headers");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    if code == 200 {
        return (code, String::new());
    }
    let _ = s.read_to_end(&mut got);
    (code, String::from_utf8_lossy(&got[head_end..]).into_owned())
}

fn is_write(method: &str, path: &str) -> bool {
    // Signing out needs only a session or an operator's token.
    method != "GET" && !(method == "DELETE" && path == "/api/v1/session")
}

/// The routes open to anyone: `/healthz`, the dashboard's page (the
/// sign-in form until a session exists) and the sign-in itself
/// (`dashboard_sessions` tests those two).
fn public(method: &str, path: &str) -> bool {
    path == "/healthz"
        || (method == "GET" && path == "/")
        || (method == "POST" && path == "/api/v1/session")
}

fn body_for(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        ("PUT", "/api/v1/policy") => Some(r#"{"name":"none"}"#),
        ("POST", "/api/v1/migrations") => Some(r#"{"vm":"vm1","destination":"h2"}"#),
        ("PUT", p) if p.starts_with("/api/v1/hosts/") => Some("{}"),
        ("POST", _) => Some("{}"),
        _ => None,
    }
}

fn json_error(code: u16, body: &str, what: &str) {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: {code} body is not JSON ({e}): {body:?}"));
    assert!(
        v["error"].is_string(),
        "{what}: {code} without error: {body}"
    );
}

struct Ctl {
    _child: ChildGuard,
    api: String,
    log: std::path::PathBuf,
}

fn start(dir: &Path) -> Ctl {
    let auth = creds::controller_auth(dir, &["h1", "h2"]).expect("token files");
    let api_port = free_port().expect("port");
    let of_port = free_port().expect("port");
    let cfg = dir.join("controller.toml");
    std::fs::write(
        &cfg,
        format!(
            "of_listen = \"127.0.0.1:{of_port}\"\napi_listen = \"127.0.0.1:{api_port}\"\ndb = \":memory:\"\n{auth}"
        ),
    )
    .expect("config");
    let log = dir.join("controller.log");
    let child = ChildGuard::spawn(
        Command::new(cargo_bin("shoal-controller"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log")),
    )
    .expect("start controller");
    let api = format!("127.0.0.1:{api_port}");
    wait_for("the controller API", Duration::from_secs(20), || {
        http(&api, "GET", "/healthz", None, None)
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .expect("controller up");
    Ctl {
        _child: child,
        api,
        log,
    }
}

#[test]
fn every_route_but_healthz_is_authenticated_and_authorized() {
    let dir = support::TempDir::new("sau").expect("tempdir");
    let c = start(dir.path());
    let call = |m: &str, p: &str, t: Option<&str>| {
        if p == "/api/v1/events" {
            return stream_status(&c.api, m, p, t);
        }
        http(&c.api, m, p, t, body_for(m, p)).unwrap_or_else(|e| panic!("{m} {p}: {e}"))
    };
    let (code, _) = call("GET", "/healthz", None);
    assert_eq!(code, 200, "/healthz stays open");
    let h1 = host_token("h1");
    for (m, p) in routes() {
        if public(&m, &p) {
            continue;
        }
        let what = format!("{m} {p}");
        // Outsiders: no token, a wrong token, a token of the wrong scheme.
        for t in [None, Some("not-a-token"), Some("")] {
            let (code, body) = call(&m, &p, t);
            assert_eq!(code, 401, "{what} with {t:?}: {body}");
            json_error(code, &body, &what);
        }
        // A read-only operator reads, never writes.
        let (code, body) = call(&m, &p, Some(READER_TOKEN));
        if is_write(&m, &p) {
            assert_eq!(code, 403, "{what} as reader: {body}");
            json_error(code, &body, &what);
        } else {
            assert!(
                code != 401 && code != 403,
                "{what} as reader: {code} {body}"
            );
        }
        // A host daemon: only its own registration and reports.
        let own =
            p == "/api/v1/hosts/h1" && m == "PUT" || p == "/api/v1/hosts/h1/reports" && m == "POST";
        let (code, body) = call(&m, &p, Some(&h1));
        if own {
            assert!(code != 401 && code != 403, "{what} as h1: {code} {body}");
        } else {
            assert_eq!(code, 403, "{what} as h1: {body}");
            json_error(code, &body, &what);
        }
        // The write operator passes authorization everywhere but on the
        // hosts' own routes (registration and reports; maintenance of a
        // host is an operator's).
        let host_route = (p == "/api/v1/hosts/h1" && m == "PUT")
            || (p == "/api/v1/hosts/h1/reports" && m == "POST");
        let (code, body) = call(&m, &p, Some(OPERATOR_TOKEN));
        if host_route {
            assert_eq!(code, 403, "{what} as operator: {body}");
        } else {
            assert!(
                code != 401 && code != 403,
                "{what} as operator: {code} {body}"
            );
        }
    }
    // Another host's token cannot act as h2.
    for (m, p) in [
        ("PUT", "/api/v1/hosts/h2"),
        ("POST", "/api/v1/hosts/h2/reports"),
    ] {
        let (code, body) = call(m, p, Some(&h1));
        assert_eq!(code, 403, "{m} {p} with h1's token: {body}");
    }
    // Unknown routes and wrong methods: authenticated first, then JSON.
    let (code, body) = call("GET", "/api/v1/nothing-here", None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = call("GET", "/api/v1/nothing-here", Some(READER_TOKEN));
    assert_eq!(code, 404);
    json_error(code, &body, "404");
    let (code, body) = call("PATCH", "/api/v1/links", Some(OPERATOR_TOKEN));
    assert_eq!(code, 405, "{body}");
    json_error(code, &body, "405");
    // No token in the log.
    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    for t in [
        OPERATOR_TOKEN,
        READER_TOKEN,
        creds::CONTROLLER_TOKEN,
        h1.as_str(),
    ] {
        assert!(!log.contains(t), "token {t} in the log");
    }
    assert!(log.contains("rejected"), "refusals are logged: {log}");
}

#[test]
fn token_files_open_to_others_are_refused() {
    let dir = support::TempDir::new("sau").expect("tempdir");
    let auth = creds::controller_auth(dir.path(), &["h1"]).expect("token files");
    let op = dir.path().join("operator.token");
    std::fs::set_permissions(&op, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let cfg = dir.path().join("controller.toml");
    std::fs::write(
        &cfg,
        format!(
            "api_listen = \"127.0.0.1:0\"\nof_listen = \"127.0.0.1:0\"\ndb = \":memory:\"\n{auth}"
        ),
    )
    .expect("config");
    let out = Command::new(cargo_bin("shoal-controller"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success(), "started with a 0644 token file");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("operator.token") && err.contains("group or others"),
        "unclear error: {err}"
    );
    assert!(!err.contains(OPERATOR_TOKEN), "token in the error: {err}");
}

/// One HTTP/1.1 request with `headers`: (status, head, body).
fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (code, head.to_string(), rest.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// Signs in with `token`: the cookie (`shoal_session=…`).
fn sign_in(api: &str, token: &str) -> String {
    let (code, head, body) = raw(
        api,
        "POST",
        "/api/v1/session",
        &[FORM],
        &format!("token={token}"),
    );
    assert_eq!(code, 303, "sign-in: {head}\n{body}");
    assert_eq!(header(&head, "location"), Some("/"), "{head}");
    let set = header(&head, "set-cookie").expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{attr} missing: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag: {set}");
    set.split(';').next().expect("cookie").to_string()
}

/// The dashboard's sessions: the page is the sign-in form without one;
/// only an operator's token signs in, never from another origin; the
/// cookie then reads like the operator's token, with its role; a change
/// made with it needs its CSRF token; signing out ends it.
#[test]
fn dashboard_sessions() {
    let dir = support::TempDir::new("sess").expect("tempdir");
    let c = start(dir.path());
    let api = c.api.as_str();

    // Without a session: the sign-in form, no data, no script.
    let (code, head, body) = raw(api, "GET", "/", &[], "");
    assert_eq!(code, 200, "{head}");
    assert!(
        body.contains("<form") && body.contains("/api/v1/session"),
        "{body}"
    );
    assert!(!body.contains("<script"), "{body}");
    let csp = header(&head, "content-security-policy").expect("a CSP");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    for p in ["/ui/app.js", "/api/v1/dashboard", "/api/v1/session"] {
        assert_eq!(raw(api, "GET", p, &[], "").0, 401, "{p} without a session");
        let bogus = format!("shoal_session={}", "0".repeat(64));
        assert_eq!(
            raw(api, "GET", p, &[("Cookie", &bogus)], "").0,
            401,
            "{p} with an unknown session"
        );
    }

    // Refused sign-ins set no cookie.
    let h1 = host_token("h1");
    for (token, origin, want) in [
        ("not-the-token", None, 401),
        (h1.as_str(), None, 403),
        (OPERATOR_TOKEN, Some("https://evil.example"), 403),
    ] {
        let mut hs = vec![FORM];
        if let Some(o) = origin {
            hs.push(("Origin", o));
        }
        let (code, head, _) = raw(
            api,
            "POST",
            "/api/v1/session",
            &hs,
            &format!("token={token}"),
        );
        assert_eq!(code, want, "{token} from {origin:?}: {head}");
        assert!(header(&head, "set-cookie").is_none(), "{head}");
    }
    let (code, _, _) = raw(api, "POST", "/api/v1/session", &[FORM], "nothing=1");
    assert_eq!(code, 400);
    let huge = format!("token={}", "a".repeat(64 * 1024));
    let (code, _, _) = raw(api, "POST", "/api/v1/session", &[FORM], &huge);
    assert_eq!(code, 413, "a sign-in form is small");

    // A read-only operator's session reads everything, changes nothing.
    let reader = sign_in(api, READER_TOKEN);
    let rc = [("Cookie", reader.as_str())];
    let (code, _, page) = raw(api, "GET", "/", &rc, "");
    assert_eq!(code, 200);
    assert!(page.contains("/ui/app.js"), "the dashboard itself: {page}");
    let (code, head, js) = raw(api, "GET", "/ui/app.js", &rc, "");
    assert_eq!(code, 200, "{head}");
    assert!(header(&head, "content-type").is_some_and(|t| t.starts_with("text/javascript")));
    assert!(js.contains("EventSource"));
    assert_eq!(raw(api, "GET", "/ui/nothing.js", &rc, "").0, 404);
    let (code, _, snap) = raw(api, "GET", "/api/v1/dashboard?top=5", &rc, "");
    assert_eq!(code, 200, "{snap}");
    let snap: Value = serde_json::from_str(&snap).expect("JSON");
    for k in [
        "switches",
        "links",
        "hosts",
        "matrix",
        "migrations",
        "decisions",
        "vfs",
    ] {
        assert!(snap.get(k).is_some(), "{k} missing: {snap}");
    }
    assert_eq!(snap["top"], 5);
    assert_eq!(raw(api, "GET", "/api/v1/dashboard?top=0", &rc, "").0, 400);
    assert_eq!(raw(api, "GET", "/api/v1/dashboard?top=201", &rc, "").0, 400);
    let (code, _, who) = raw(api, "GET", "/api/v1/session", &rc, "");
    assert_eq!(code, 200);
    let who: Value = serde_json::from_str(&who).expect("JSON");
    assert_eq!(who["role"], "read", "{who}");
    assert_eq!(who["via"], "session", "{who}");
    let rcsrf = who["csrf"].as_str().expect("a CSRF token").to_string();
    let policy = r#"{"name":"none"}"#;
    let json = ("Content-Type", "application/json");
    let (code, _, body) = raw(
        api,
        "PUT",
        "/api/v1/policy",
        &[rc[0], json, ("X-Shoal-CSRF", &rcsrf)],
        policy,
    );
    assert_eq!(code, 403, "a reader's session changes nothing: {body}");

    // A write operator's session changes things only with its CSRF token.
    let writer = sign_in(api, OPERATOR_TOKEN);
    let wc = ("Cookie", writer.as_str());
    let (_, _, who) = raw(api, "GET", "/api/v1/session", &[wc], "");
    let who: Value = serde_json::from_str(&who).expect("JSON");
    assert_eq!(who["role"], "write", "{who}");
    let wcsrf = who["csrf"].as_str().expect("a CSRF token").to_string();
    for bad in [None, Some("wrong"), Some(rcsrf.as_str())] {
        let mut hs = vec![wc, json];
        if let Some(b) = bad {
            hs.push(("X-Shoal-CSRF", b));
        }
        let (code, _, body) = raw(api, "PUT", "/api/v1/policy", &hs, policy);
        assert_eq!(code, 403, "CSRF token {bad:?}: {body}");
    }
    let (code, _, body) = raw(
        api,
        "PUT",
        "/api/v1/policy",
        &[wc, json, ("X-Shoal-CSRF", &wcsrf)],
        policy,
    );
    assert_eq!(code, 200, "{body}");
    // A bearer token needs no CSRF token (no browser sends it by itself).
    let (code, _, who) = raw(
        api,
        "GET",
        "/api/v1/session",
        &[("Authorization", &format!("Bearer {OPERATOR_TOKEN}"))],
        "",
    );
    assert_eq!(code, 200);
    assert!(who.contains("\"via\":\"token\""), "{who}");

    // Signing out ends the session (and only that one).
    let (code, head, _) = raw(
        api,
        "DELETE",
        "/api/v1/session",
        &[wc, ("X-Shoal-CSRF", &wcsrf)],
        "",
    );
    assert_eq!(code, 204);
    assert!(
        header(&head, "set-cookie").is_some_and(|c| c.contains("Max-Age=0")),
        "{head}"
    );
    assert_eq!(raw(api, "GET", "/api/v1/dashboard", &[wc], "").0, 401);
    let (code, _, page) = raw(api, "GET", "/", &[wc], "");
    assert_eq!(code, 200);
    assert!(page.contains("<form"), "signed out: the form again");
    assert_eq!(raw(api, "GET", "/api/v1/dashboard", &rc, "").0, 200);

    // No session id or token in the log.
    let log = std::fs::read_to_string(&c.log).unwrap_or_default();
    for secret in [&reader[14..], &writer[14..], OPERATOR_TOKEN, READER_TOKEN] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}
