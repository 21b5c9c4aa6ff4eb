//! `shoalctl`: the operator's command line for a Shoal controller.
//!
//! It speaks only the controller's public REST API (`/api/v1`, bearer
//! token) and its event stream; every command prints a human table by
//! default or the API's JSON with `--output json`. The pieces here have no
//! I/O of their own except [`Ctl`]: the table renderer and the event-stream
//! parser are pure and unit-tested.
//!
//! Exit codes ([`CtlError::exit_code`]): 0 done; 1 refused for another
//! reason (400, 405, other 4xx); 2 usage (bad arguments, unreadable token
//! or CA file); 3 not found (404); 4 conflict or infeasible (409, 422); 5
//! not allowed (401, 403), and a drain that leaves VMs that cannot move
//! (`maintenance HOST on --wait`); 6 the controller could not be reached,
//! timed out, failed (5xx) or answered something unreadable, or a `--wait`
//! ran out of time.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use shoal_common::http::{HttpClient, HttpError, Method};
use shoal_common::secret::{Secret, SecretError};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The token file cannot be used.
    #[error("token: {0}")]
    Token(#[from] SecretError),
    /// The CA file cannot be used.
    #[error("CA file: {0}")]
    Tls(String),
    /// No answer.
    #[error("{0}")]
    Http(#[from] HttpError),
    /// The controller said no.
    #[error("{code}: {message}")]
    Status {
        /// HTTP status.
        code: u16,
        /// The API's `error` text (or the body).
        message: String,
    },
    /// The answer is not what the API describes.
    #[error("unreadable answer: {0}")]
    BadAnswer(String),
    /// What was waited for cannot happen (a drain left VMs that cannot
    /// move).
    #[error("{0}")]
    Stuck(String),
    /// What was waited for did not happen in time.
    #[error("{0}")]
    WaitTimeout(String),
}

impl CtlError {
    /// The process exit code (see the module).
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Usage(_) | CtlError::Token(_) | CtlError::Tls(_) => 2,
            CtlError::Http(_) | CtlError::BadAnswer(_) | CtlError::WaitTimeout(_) => 6,
            CtlError::Stuck(_) => 4,
            CtlError::Status { code, .. } => match code {
                404 => 3,
                409 | 422 => 4,
                401 | 403 => 5,
                500..=599 => 6,
                _ => 1,
            },
        }
    }
}

/// A connection to one controller.
pub struct Ctl {
    base: String,
    token: Option<Secret>,
    http: HttpClient,
}

impl Ctl {
    /// For the controller at `url` (`http://` or `https://HOST:PORT`),
    /// presenting the token of `token_file` (mode 0600), trusting `ca_file`
    /// for HTTPS; every call is bounded by `timeout`.
    pub fn new(
        url: &str,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Ctl, CtlError> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CtlError::Usage(format!(
                "--url {url}: need http://HOST:PORT or https://HOST:PORT"
            )));
        }
        let token = token_file.map(Secret::from_file).transpose()?;
        let tls = ca_file
            .map(|ca| shoal_common::tls::client_config(ca, None))
            .transpose()
            .map_err(|e| CtlError::Tls(e.to_string()))?;
        if base.starts_with("https://") && tls.is_none() {
            return Err(CtlError::Usage(
                "an https:// URL needs --ca-file (the CA that signed the controller's certificate)"
                    .into(),
            ));
        }
        Ok(Ctl {
            base,
            token,
            http: HttpClient::with_tls(timeout, tls),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `method path` with an optional JSON body: the JSON answer (`null`
    /// for an empty one); a status other than 2xx is an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CtlError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| CtlError::Usage(e.to_string()))?;
        let (code, bytes) = self
            .http
            .send(
                method,
                &self.url(path),
                self.token.as_ref().map(Secret::expose),
                body,
            )
            .await?;
        let parsed: Option<Value> = if bytes.is_empty() {
            Some(Value::Null)
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        if !(200..300).contains(&code) {
            let message = parsed
                .as_ref()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            return Err(CtlError::Status { code, message });
        }
        parsed
            .ok_or_else(|| CtlError::BadAnswer(format!("{path}: not JSON ({} bytes)", bytes.len())))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.call(Method::GET, path, None).await
    }

    /// Follows the event stream from after `last_id`, giving `on_event`
    /// each event until it returns false. Reconnects (with `Last-Event-ID`)
    /// when the stream breaks, after a second; stops on an HTTP error.
    pub async fn follow(
        &self,
        mut last_id: Option<u64>,
        mut on_event: impl FnMut(&SseEvent) -> bool,
    ) -> Result<(), CtlError> {
        use http_body_util::BodyExt;
        loop {
            let headers: Vec<(&str, String)> = last_id
                .map(|id| vec![("last-event-id", id.to_string())])
                .unwrap_or_default();
            let opened = self
                .http
                .open_stream(
                    &self.url("/api/v1/events"),
                    self.token.as_ref().map(Secret::expose),
                    &headers,
                )
                .await;
            let (code, mut body) = match opened {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("shoalctl: event stream: {e}; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if code != 200 {
                let text = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let v: Option<Value> = serde_json::from_slice(&text).ok();
                let message = v
                    .and_then(|v| v["error"].as_str().map(String::from))
                    .unwrap_or_default();
                return Err(CtlError::Status { code, message });
            }
            let mut parser = SseParser::default();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                for ev in parser.feed(&data).map_err(CtlError::BadAnswer)? {
                    if let Some(id) = ev.id {
                        last_id = Some(id);
                    }
                    if !on_event(&ev) {
                        return Ok(());
                    }
                }
            }
            eprintln!("shoalctl: the event stream ended; resuming in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `id:`, when a number.
    pub id: Option<u64>,
    /// `event:` (`message` when absent).
    pub event: String,
    /// `data:` lines joined by newlines.
    pub data: String,
}

/// Longest line (or event) accepted from the stream.
pub const MAX_SSE_LINE: usize = 1 << 20;

/// An incremental Server-Sent Events parser (bounded: a line or an event
/// longer than [`MAX_SSE_LINE`] is an error, not an allocation).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    cur: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; returns the events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() >= MAX_SSE_LINE {
                    return Err(format!("an event-stream line over {MAX_SSE_LINE} bytes"));
                }
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if self.has_data || !self.cur.event.is_empty() {
                    let mut ev = std::mem::take(&mut self.cur);
                    if ev.event.is_empty() {
                        ev.event = "message".into();
                    }
                    out.push(ev);
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.cur.id = value.parse().ok(),
                "event" => self.cur.event = value.to_string(),
                "data" => {
                    if self.cur.data.len() + value.len() > MAX_SSE_LINE {
                        return Err(format!("an event over {MAX_SSE_LINE} bytes"));
                    }
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Longest table cell shown, in characters (longer ones are cut).
pub const MAX_CELL: usize = 160;

/// A table for humans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column names.
    pub headers: Vec<String>,
    /// Rows (each as long as `headers`).
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (cut or padded to the columns).
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Aligned columns, two spaces apart; control characters from the
    /// controller are shown as `?` so that a name cannot move the cursor,
    /// and a cell longer than [`MAX_CELL`] characters is cut (`…`).
    pub fn render(&self) -> String {
        let clean = |s: &str| -> String {
            let mut out: String = s
                .chars()
                .take(MAX_CELL)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            if s.chars().nth(MAX_CELL).is_some() {
                out.pop();
                out.push('…');
            }
            out
        };
        let head: Vec<String> = self.headers.iter().map(|h| clean(h)).collect();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(|c| clean(c)).collect())
            .collect();
        let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    s.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
                }
            }
            s.trim_end().to_string()
        };
        let mut out = line(&head);
        out.push('\n');
        for r in &rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }
}

/// A JSON value as a table cell: strings bare, null as `-`, numbers
/// rounded to 3 decimals.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                let s = format!("{f:.3}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            }
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// bytes/s as Mbit/s.
pub fn mbps(v: &Value) -> String {
    v.as_f64()
        .map(|b| format!("{:.2}", b * 8.0 / 1e6))
        .unwrap_or_else(|| "-".into())
}

/// A fraction as a percentage.
pub fn pct(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{:.0} %", 100.0 * x))
        .unwrap_or_else(|| "-".into())
}

/// Rows of a JSON array (an empty list for anything else).
pub fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Characters a query value or a path segment keeps as they are (RFC 3986
/// unreserved); every other byte is percent-encoded.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// `s` percent-encoded (UTF-8 bytes outside the unreserved set).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A name (host, VM) as one path segment: percent-encoded; empty, `.`,
/// `..` and names over 256 bytes are refused (usage).
pub fn segment(name: &str) -> Result<String, CtlError> {
    if name.is_empty() || name == "." || name == ".." || name.len() > 256 {
        return Err(CtlError::Usage(format!("{name:?} is not a usable name")));
    }
    Ok(encode(name))
}

/// `path` with the query of the given parameters (those with a value, in
/// order, percent-encoded).
pub fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{}={}", encode(k), encode(v))))
        .collect();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC (`-` when not a number).
pub fn utc(v: &Value) -> String {
    let Some(ms) = v.as_i64() else {
        return "-".into();
    };
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A byte count for people (`532 MB`, `1.2 GB`; decimal units).
pub fn bytes_human(v: &Value) -> String {
    let Some(b) = v.as_f64() else {
        return "-".into();
    };
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut x = b;
    let mut i = 0;
    while x >= 1000.0 && i + 1 < units.len() {
        x /= 1000.0;
        i += 1;
    }
    if i == 0 || x >= 100.0 {
        format!("{x:.0} {}", units[i])
    } else {
        format!("{x:.1} {}", units[i])
    }
}

/// A decision's expected effect (`expected` of a decision or a preview) in
/// one cell: time, bytes, bandwidth and path of the migration, the cost
/// change, the hot host it relieves, or why it would be refused now.
pub fn expected_text(e: &Value) -> String {
    if e.is_null() {
        return "-".into();
    }
    let mut parts = Vec::new();
    let m = &e["migration"];
    if m.is_object() {
        let p = &m["predicted"];
        if let Some(t) = p["time_s"].as_f64() {
            parts.push(format!("{t:.1} s"));
        }
        if !p["traffic_bytes"].is_null() {
            parts.push(bytes_human(&p["traffic_bytes"]));
        }
        if !m["bandwidth_bytes_per_s"].is_null() {
            parts.push(format!("{} Mbit/s", mbps(&m["bandwidth_bytes_per_s"])));
        }
        let path: Vec<String> = items(&m["path"]).iter().map(cell).collect();
        if !path.is_empty() {
            parts.push(format!("via {}", path.join(">")));
        }
        if let (Some(a), Some(b)) = (m["cost_before"].as_f64(), m["cost_after"].as_f64()) {
            parts.push(format!("cost {} -> {}", cell(&a.into()), cell(&b.into())));
        }
    }
    if let Some(r) = e["refused"].as_str() {
        parts.push(format!("refused now: {r}"));
    }
    let h = &e["relieves"];
    if let Some(host) = h["host"].as_str() {
        let res: Vec<String> = items(&h["resources"]).iter().map(cell).collect();
        parts.push(format!("relieves {host} ({})", res.join(",")));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// Where a host's drain stands (`maintenance HOST on --wait`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drain {
    /// Every VM left (state `drained`).
    Drained,
    /// Nothing moves any more: these VMs stay, with their state and reason.
    Stuck(Vec<(String, String, String)>),
    /// VMs are still waiting, queued or migrating.
    Going,
}

/// Where the maintenance view `v` stands.
pub fn drain_state(v: &Value) -> Drain {
    if v["state"] == "drained" {
        return Drain::Drained;
    }
    let remaining: Vec<&Value> = items(&v["vms"])
        .iter()
        .filter(|x| x["state"] != "done")
        .collect();
    let stuck = |x: &&Value| x["state"] == "unmovable" || x["state"] == "failed";
    if !remaining.is_empty() && remaining.iter().all(stuck) {
        return Drain::Stuck(
            remaining
                .iter()
                .map(|x| (cell(&x["vm"]), cell(&x["state"]), cell(&x["reason"])))
                .collect(),
        );
    }
    if remaining.is_empty() {
        return Drain::Drained;
    }
    Drain::Going
}

/// One progress line of a drain: the host, its state and its VMs by state
/// (`h1 draining: 2 done, 1 migrating, 1 unmovable`).
pub fn drain_line(v: &Value) -> String {
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    for x in items(&v["vms"]) {
        *by.entry(cell(&x["state"])).or_default() += 1;
    }
    let counts: Vec<String> = by.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let line = format!(
        "{} {}: {}",
        cell(&v["host"]),
        cell(&v["state"]),
        if counts.is_empty() {
            "no VMs".to_string()
        } else {
            counts.join(", ")
        }
    );
    line.chars()
        .take(MAX_CELL * 2)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A JSON argument given inline or as `@FILE`.
pub fn json_arg(what: &str, arg: &str) -> Result<Value, CtlError> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CtlError::Usage(format!("{what}: {path}: {e}")))?,
        None => arg.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| CtlError::Usage(format!("{what} is not JSON: {e}")))
}

/// The body of `POST /api/v1/plan/preview`: only what is given (the
/// controller fills in what is in force).
pub fn preview_body(
    policy: Option<&str>,
    options: Option<Value>,
    hotspot: Option<Value>,
    rules: Option<Value>,
) -> Result<Value, CtlError> {
    let mut body = serde_json::Map::new();
    if let Some(p) = policy {
        body.insert("policy".into(), Value::String(p.to_string()));
    }
    for (k, v) in [("options", options), ("hotspot", hotspot), ("rules", rules)] {
        if let Some(v) = v {
            let ok = if k == "rules" {
                v.is_array()
            } else {
                v.is_object()
            };
            if !ok {
                return Err(CtlError::Usage(format!(
                    "--{k}: must be a JSON {}",
                    if k == "rules" { "array" } else { "object" }
                )));
            }
            body.insert(k.into(), v);
        }
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_across_chunks() {
        let mut p = SseParser::default();
        let mut got = p.feed(b"id: 7\nevent: switch_up\ndata: {\"a\"").unwrap();
        assert!(got.is_empty());
        got.extend(
            p.feed(b":1}\n\n: keep-alive\n\nid:8\r\nevent:gap\r\ndata:x\r\ndata:y\r\n\r\n")
                .unwrap(),
        );
        assert_eq!(
            got,
            vec![
                SseEvent {
                    id: Some(7),
                    event: "switch_up".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    id: Some(8),
                    event: "gap".into(),
                    data: "x\ny".into()
                },
            ]
        );
        let got = p.feed(b"data: plain\n\n").unwrap();
        assert_eq!(got[0].event, "message");
        assert_eq!(got[0].id, None);
    }

    #[test]
    fn an_endless_line_is_refused_not_stored() {
        let mut p = SseParser::default();
        let chunk = vec![b'a'; 64 * 1024];
        let mut err = None;
        for _ in 0..40 {
            if let Err(e) = p.feed(&chunk) {
                err = Some(e);
                break;
            }
        }
        assert!(err.is_some(), "a line over 1 MiB is an error");
        assert!(p.line.len() <= MAX_SSE_LINE);
    }

    #[test]
    fn tables_align_and_neutralise_control_characters() {
        let mut t = Table::new(&["name", "state"]);
        t.row(vec!["vm1".into(), "running".into()]);
        t.row(vec!["a-longer-vm\u{1b}[2J".into(), "done".into()]);
        t.row(vec!["short".into()]);
        assert_eq!(
            t.render(),
            "name             state\nvm1              running\na-longer-vm?[2J  done\nshort\n"
        );
    }

    #[test]
    fn exit_codes() {
        let s = |code| CtlError::Status {
            code,
            message: String::new(),
        };
        assert_eq!(s(404).exit_code(), 3);
        assert_eq!(s(409).exit_code(), 4);
        assert_eq!(s(422).exit_code(), 4);
        assert_eq!(s(401).exit_code(), 5);
        assert_eq!(s(403).exit_code(), 5);
        assert_eq!(s(400).exit_code(), 1);
        assert_eq!(s(503).exit_code(), 6);
        assert_eq!(CtlError::Usage(String::new()).exit_code(), 2);
        assert_eq!(CtlError::Stuck(String::new()).exit_code(), 4);
        assert_eq!(CtlError::WaitTimeout(String::new()).exit_code(), 6);
        assert_eq!(
            CtlError::Http(HttpError::Timeout(Duration::from_secs(1))).exit_code(),
            6
        );
    }

    #[test]
    fn cells() {
        assert_eq!(cell(&serde_json::json!(1.23456)), "1.235");
        assert_eq!(cell(&serde_json::json!(2.0)), "2");
        assert_eq!(cell(&serde_json::json!(12)), "12");
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(mbps(&serde_json::json!(1_250_000.0)), "10.00");
        assert_eq!(pct(&serde_json::json!(0.5)), "50 %");
    }
    #[test]
    fn long_cells_are_cut() {
        let mut t = Table::new(&["x"]);
        t.row(vec!["a".repeat(MAX_CELL + 50)]);
        let out = t.render();
        let line = out.lines().nth(1).expect("row");
        assert_eq!(line.chars().count(), MAX_CELL);
        assert!(line.ends_with('…'));
    }

    #[test]
    fn queries_and_segments_are_encoded() {
        assert_eq!(
            with_query(
                "/api/v1/decisions",
                &[
                    ("pending", Some("true".into())),
                    ("vm", None),
                    ("host", Some("h 1&x=2".into())),
                    ("limit", Some("5".into())),
                ]
            ),
            "/api/v1/decisions?pending=true&host=h%201%26x%3D2&limit=5"
        );
        assert_eq!(with_query("/a", &[("x", None)]), "/a");
        assert_eq!(segment("h1").unwrap(), "h1");
        assert_eq!(segment("a/b?c").unwrap(), "a%2Fb%3Fc");
        assert_eq!(segment("é").unwrap(), "%C3%A9");
        for bad in ["", ".", ".."] {
            assert_eq!(segment(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn times_and_sizes() {
        assert_eq!(utc(&serde_json::json!(0)), "1970-01-01 00:00:00");
        assert_eq!(
            utc(&serde_json::json!(1_796_113_927_321i64)),
            "2026-12-01 08:32:07"
        );
        assert_eq!(
            utc(&serde_json::json!(951_782_400_000i64)),
            "2000-02-29 00:00:00"
        );
        assert_eq!(utc(&Value::Null), "-");
        assert_eq!(bytes_human(&serde_json::json!(532.0)), "532 B");
        assert_eq!(bytes_human(&serde_json::json!(5.3e8)), "530 MB");
        assert_eq!(bytes_human(&serde_json::json!(1.25e9)), "1.2 GB");
    }

    #[test]
    fn expected_effects_in_one_cell() {
        let e = serde_json::json!({
            "migration": {"vm":"v1","from":"h1","to":"h2","deadline_s":30.0,"reserve":true,
                "bandwidth_bytes_per_s":1.25e8,"memory_mb":512.0,
                "predicted":{"time_s":4.26,"traffic_bytes":5.3e8,"rounds":2,"downtime_s":0.01},
                "path":["0000000000000001","0000000000000002"],
                "cost_before":10.0,"cost_after":2.5},
            "relieves": {"host":"h1","resources":["cpu"]}
        });
        assert_eq!(
            expected_text(&e),
            "4.3 s, 530 MB, 1000.00 Mbit/s, via 0000000000000001>0000000000000002, cost 10 -> 2.5, relieves h1 (cpu)"
        );
        let r = serde_json::json!({"refused": "no room: memory"});
        assert_eq!(expected_text(&r), "refused now: no room: memory");
        assert_eq!(expected_text(&Value::Null), "-");
    }

    #[test]
    fn drains_end_drained_or_stuck() {
        let v = |state: &str, vms: Value| serde_json::json!({"host":"h1","state":state,"vms":vms});
        assert_eq!(
            drain_state(&v("drained", serde_json::json!([]))),
            Drain::Drained
        );
        let going = v(
            "draining",
            serde_json::json!([{"vm":"a","state":"done"},{"vm":"b","state":"migrating"},
                {"vm":"c","state":"unmovable","reason":"pinned"}]),
        );
        assert_eq!(drain_state(&going), Drain::Going);
        assert_eq!(
            drain_line(&going),
            "h1 draining: 1 done, 1 migrating, 1 unmovable"
        );
        let stuck = v(
            "draining",
            serde_json::json!([{"vm":"a","state":"done"},
                {"vm":"c","state":"unmovable","reason":"pinned"},
                {"vm":"d","state":"failed","reason":"hostd\u{1b}[2J"}]),
        );
        assert_eq!(
            drain_state(&stuck),
            Drain::Stuck(vec![
                ("c".into(), "unmovable".into(), "pinned".into()),
                ("d".into(), "failed".into(), "hostd\u{1b}[2J".into()),
            ])
        );
        assert_eq!(
            drain_line(&v("draining", serde_json::json!([]))),
            "h1 draining: no VMs"
        );
    }

    #[test]
    fn preview_bodies_carry_only_what_is_given() {
        assert_eq!(
            preview_body(None, None, None, None).unwrap(),
            serde_json::json!({})
        );
        let b = preview_body(
            Some("score"),
            Some(serde_json::json!({"score": {"cm": 0.5}})),
            None,
            Some(serde_json::json!([])),
        )
        .unwrap();
        assert_eq!(
            b,
            serde_json::json!({"policy":"score","options":{"score":{"cm":0.5}},"rules":[]})
        );
        let e = preview_body(None, Some(serde_json::json!([1])), None, None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = preview_body(None, None, None, Some(serde_json::json!({}))).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            json_arg("--options", "{\"a\":1}").unwrap(),
            serde_json::json!({"a":1})
        );
        assert_eq!(json_arg("--options", "nope").unwrap_err().exit_code(), 2);
        assert_eq!(
            json_arg("--options", "@/nonexistent/x")
                .unwrap_err()
                .exit_code(),
            2
        );
    }
}
