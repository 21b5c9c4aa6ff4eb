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
//! not allowed (401, 403); 6 the controller could not be reached, timed
//! out, failed (5xx) or answered something unreadable.

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
}

impl CtlError {
    /// The process exit code (see the module).
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Usage(_) | CtlError::Token(_) | CtlError::Tls(_) => 2,
            CtlError::Http(_) | CtlError::BadAnswer(_) => 6,
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
    /// controller are shown as `?` so that a name cannot move the cursor.
    pub fn render(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
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
}
