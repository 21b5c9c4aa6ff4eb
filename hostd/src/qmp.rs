//! A small QMP (QEMU Machine Protocol) client: tokio, unix socket, JSON lines.
//!
//! [`Qmp::connect`] reads the greeting and negotiates `qmp_capabilities`.
//! [`Qmp::execute`] sends `{"execute", "arguments", "id"}` and waits for the
//! `return`/`error` carrying the same `id`; asynchronous events (`RESUME`,
//! `STOP`, `MIGRATION`, ...) go to every [`Qmp::subscribe`]r instead. A
//! malformed line or an unexpected reply is logged and skipped (or returned
//! as an error to the command it concerns); a QEMU that dies fails every
//! pending and later command with [`QmpError::Closed`], never a hang.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// Longest QMP line accepted (a `query-*` answer is far below this).
const MAX_LINE: u64 = 4 << 20;

/// QMP failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QmpError {
    /// Socket I/O failed (connect, read, write).
    #[error("QMP I/O: {0}")]
    Io(String),
    /// The connection is closed (QEMU exited); the reason.
    #[error("QMP connection closed: {0}")]
    Closed(String),
    /// No answer in time.
    #[error("QMP command {0} timed out after {1:?}")]
    Timeout(String, Duration),
    /// The peer does not speak QMP as expected.
    #[error("QMP protocol: {0}")]
    Protocol(String),
    /// QEMU answered with an error.
    #[error("QMP {command} failed: {class}: {desc}")]
    Command {
        /// The command that failed.
        command: String,
        /// QEMU's error class (`GenericError`, `DeviceNotActive`, ...).
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// Event name (`RESUME`, `STOP`, `MIGRATION`, `DEVICE_DELETED`, ...).
    pub name: String,
    /// The event's `data` (Null when absent).
    pub data: Value,
}

/// One line received from QEMU, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The greeting `{"QMP": {...}}`.
    Greeting(Value),
    /// `{"return": ..., "id": N}`.
    Return {
        /// The id echoed (None when absent or not a number).
        id: Option<u64>,
        /// The returned value.
        value: Value,
    },
    /// `{"error": {"class", "desc"}, "id": N}`.
    Error {
        /// The id echoed.
        id: Option<u64>,
        /// Error class.
        class: String,
        /// Description.
        desc: String,
    },
    /// `{"event": NAME, "data": ...}`.
    Event(QmpEvent),
}

/// Classifies one line of QMP output (pure; malformed → `Protocol` error).
pub fn classify(line: &str) -> Result<Incoming, QmpError> {
    let v: Value = serde_json::from_str(line)
        .map_err(|e| QmpError::Protocol(format!("malformed JSON ({e}): {}", clip(line))))?;
    let obj = v
        .as_object()
        .ok_or_else(|| QmpError::Protocol(format!("not an object: {}", clip(line))))?;
    let id = obj.get("id").and_then(Value::as_u64);
    if let Some(g) = obj.get("QMP") {
        return Ok(Incoming::Greeting(g.clone()));
    }
    if let Some(r) = obj.get("return") {
        return Ok(Incoming::Return {
            id,
            value: r.clone(),
        });
    }
    if let Some(e) = obj.get("error") {
        let s = |k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .unwrap_or("(none)")
                .to_string()
        };
        return Ok(Incoming::Error {
            id,
            class: s("class"),
            desc: s("desc"),
        });
    }
    if let Some(name) = obj.get("event").and_then(Value::as_str) {
        return Ok(Incoming::Event(QmpEvent {
            name: name.to_string(),
            data: obj.get("data").cloned().unwrap_or(Value::Null),
        }));
    }
    Err(QmpError::Protocol(format!(
        "unexpected message: {}",
        clip(line)
    )))
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("").to_string()
}

type Reply = Result<Value, QmpError>;

struct Pending {
    closed: Option<String>,
    waiting: HashMap<u64, (String, oneshot::Sender<Reply>)>,
}

struct Shared {
    pending: Mutex<Pending>,
    events: broadcast::Sender<QmpEvent>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A poisoned lock only means a panic elsewhere; the data is still usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self, why: String) {
        let mut p = self.lock();
        if p.closed.is_none() {
            p.closed = Some(why.clone());
        }
        for (_, (cmd, tx)) in p.waiting.drain() {
            let _ = tx.send(Err(QmpError::Closed(format!(
                "{why} (while waiting for {cmd})"
            ))));
        }
    }
}

/// A QMP connection. Dropping it closes the socket.
pub struct Qmp {
    shared: Arc<Shared>,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    next_id: AtomicU64,
    timeout: Duration,
    reader: JoinHandle<()>,
    label: String,
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_line(r: &mut BufReader<OwnedReadHalf>, buf: &mut Vec<u8>) -> Result<bool, QmpError> {
    buf.clear();
    let n = r
        .take(MAX_LINE + 1)
        .read_until(b'\n', buf)
        .await
        .map_err(|e| QmpError::Io(e.to_string()))?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() != Some(&b'\n') && n as u64 > MAX_LINE {
        return Err(QmpError::Protocol(format!(
            "line longer than {MAX_LINE} bytes"
        )));
    }
    Ok(true)
}

impl Qmp {
    /// Connects to the QMP socket at `path`, reads the greeting and enters
    /// command mode. `timeout` bounds the handshake and every later command.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let label = path.display().to_string();
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::Timeout("connect".into(), timeout))?
            .map_err(|e| QmpError::Io(format!("connect {label}: {e}")))?;
        let (rd, wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let mut buf = Vec::new();
        let greeting = tokio::time::timeout(timeout, read_line(&mut rd, &mut buf))
            .await
            .map_err(|_| QmpError::Timeout("greeting".into(), timeout))??;
        if !greeting {
            return Err(QmpError::Closed(format!(
                "{label}: closed before the greeting"
            )));
        }
        match classify(&String::from_utf8_lossy(&buf))? {
            Incoming::Greeting(_) => {}
            other => {
                return Err(QmpError::Protocol(format!(
                    "{label}: expected the QMP greeting, got {other:?}"
                )))
            }
        }
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                closed: None,
                waiting: HashMap::new(),
            }),
            events,
        });
        let reader = tokio::spawn(reader_loop(rd, shared.clone(), label.clone()));
        let qmp = Qmp {
            shared,
            writer: tokio::sync::Mutex::new(wr),
            next_id: AtomicU64::new(1),
            timeout,
            reader,
            label,
        };
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// [`Qmp::connect`], retried every 100 ms for up to `wait` while the
    /// socket does not accept yet (QEMU starting).
    pub async fn connect_retry(
        path: &Path,
        wait: Duration,
        timeout: Duration,
    ) -> Result<Qmp, QmpError> {
        let start = tokio::time::Instant::now();
        loop {
            match Qmp::connect(path, timeout).await {
                Ok(q) => return Ok(q),
                Err(e @ QmpError::Io(_)) if start.elapsed() < wait => {
                    tracing::trace!(error = %e, "QMP not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Receives every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.shared.events.subscribe()
    }

    /// Why the connection is closed, if it is.
    pub fn closed(&self) -> Option<String> {
        self.shared.lock().closed.clone()
    }

    /// Runs `command` with optional `arguments`, returns its `return` value
    /// (counted for `GET /metrics`: [`counts`]).
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.shared.lock();
            if let Some(why) = &p.closed {
                return Err(QmpError::Closed(why.clone()));
            }
            p.waiting.insert(id, (command.to_string(), tx));
        }
        let mut msg = json!({"execute": command, "id": id});
        if let (Some(args), Some(obj)) = (arguments, msg.as_object_mut()) {
            obj.insert("arguments".into(), args);
        }
        let mut line = msg.to_string();
        line.push('\n');
        let write = async {
            let mut w = self.writer.lock().await;
            w.write_all(line.as_bytes()).await?;
            w.flush().await
        };
        let result = match tokio::time::timeout(self.timeout, write).await {
            Err(_) => Err(QmpError::Timeout(command.into(), self.timeout)),
            Ok(Err(e)) => Err(QmpError::Io(format!(
                "{}: write {command}: {e}",
                self.label
            ))),
            Ok(Ok(())) => match tokio::time::timeout(self.timeout, rx).await {
                Err(_) => Err(QmpError::Timeout(command.into(), self.timeout)),
                Ok(Err(_)) => Err(QmpError::Closed(format!("{}: reader ended", self.label))),
                Ok(Ok(reply)) => reply,
            },
        };
        if result.is_err() {
            self.shared.lock().waiting.remove(&id);
        }
        count(&result);
        result
    }
}

/// QMP commands sent by this process, and those that failed by kind.
static COMMANDS: AtomicU64 = AtomicU64::new(0);
static ERRORS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
const ERROR_KINDS: [&str; 5] = ["io", "closed", "timeout", "protocol", "command"];

fn count(r: &Result<Value, QmpError>) {
    COMMANDS.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = r {
        let i = match e {
            QmpError::Io(_) => 0,
            QmpError::Closed(_) => 1,
            QmpError::Timeout(..) => 2,
            QmpError::Protocol(_) => 3,
            QmpError::Command { .. } => 4,
        };
        ERRORS[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// QMP commands sent by this process so far, and the failed ones by kind
/// (`io`, `closed`, `timeout`, `protocol`, `command`).
pub fn counts() -> (u64, Vec<(&'static str, u64)>) {
    (
        COMMANDS.load(Ordering::Relaxed),
        ERROR_KINDS
            .iter()
            .zip(&ERRORS)
            .map(|(k, v)| (*k, v.load(Ordering::Relaxed)))
            .collect(),
    )
}

async fn reader_loop(mut rd: BufReader<OwnedReadHalf>, shared: Arc<Shared>, label: String) {
    let mut buf = Vec::new();
    let why = loop {
        match read_line(&mut rd, &mut buf).await {
            Ok(false) => break "end of stream".to_string(),
            Err(e) => break e.to_string(),
            Ok(true) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match classify(line) {
            Ok(Incoming::Event(ev)) => {
                tracing::debug!(qmp = %label, event = %ev.name, data = %ev.data, "QMP event");
                let _ = shared.events.send(ev);
            }
            Ok(Incoming::Return { id, value }) => deliver(&shared, &label, id, Ok(value)),
            Ok(Incoming::Error { id, class, desc }) => {
                let cmd = id
                    .and_then(|i| shared.lock().waiting.get(&i).map(|(c, _)| c.clone()))
                    .unwrap_or_default();
                deliver(
                    &shared,
                    &label,
                    id,
                    Err(QmpError::Command {
                        command: cmd,
                        class,
                        desc,
                    }),
                )
            }
            Ok(Incoming::Greeting(_)) => {
                tracing::warn!(qmp = %label, "unexpected second QMP greeting, ignored")
            }
            Err(e) => tracing::warn!(qmp = %label, error = %e, "bad QMP line, skipped"),
        }
    };
    tracing::debug!(qmp = %label, why = %why, "QMP connection closed");
    shared.close(why);
}

fn deliver(shared: &Shared, label: &str, id: Option<u64>, reply: Reply) {
    let Some(id) = id else {
        tracing::warn!(qmp = %label, ?reply, "QMP reply without a numeric id, skipped");
        return;
    };
    let waiter = shared.lock().waiting.remove(&id);
    match waiter {
        Some((_, tx)) => {
            let _ = tx.send(reply);
        }
        None => tracing::warn!(qmp = %label, id, "QMP reply to no pending command, skipped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    #[test]
    fn classify_lines() {
        assert!(matches!(
            classify(r#"{"QMP": {"version": {}}}"#),
            Ok(Incoming::Greeting(_))
        ));
        assert_eq!(
            classify(r#"{"return": {"a": 1}, "id": 7}"#).unwrap(),
            Incoming::Return {
                id: Some(7),
                value: json!({"a": 1})
            }
        );
        assert_eq!(
            classify(r#"{"error": {"class": "GenericError", "desc": "no"}, "id": 2}"#).unwrap(),
            Incoming::Error {
                id: Some(2),
                class: "GenericError".into(),
                desc: "no".into()
            }
        );
        assert_eq!(
            classify(r#"{"event": "RESUME", "timestamp": {}}"#).unwrap(),
            Incoming::Event(QmpEvent {
                name: "RESUME".into(),
                data: Value::Null
            })
        );
        assert!(matches!(classify("{oops"), Err(QmpError::Protocol(_))));
        assert!(matches!(classify("[1]"), Err(QmpError::Protocol(_))));
        assert!(matches!(
            classify(r#"{"x": 1}"#),
            Err(QmpError::Protocol(_))
        ));
    }

    /// A scripted QMP peer: greets, answers capabilities, then runs `script`.
    async fn fake_qemu<F, Fut>(script: F) -> (tempdir::Dir, JoinHandle<()>)
    where
        F: FnOnce(BufReader<OwnedReadHalf>, OwnedWriteHalf) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = s.into_split();
            let mut rd = BufReader::new(rd);
            wr.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .unwrap();
            let mut line = String::new();
            rd.read_line(&mut line).await.unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["execute"], "qmp_capabilities");
            wr.write_all(format!("{{\"return\": {{}}, \"id\": {}}}\n", v["id"]).as_bytes())
                .await
                .unwrap();
            script(rd, wr).await;
        });
        (dir, h)
    }

    mod tempdir {
        /// A private temporary directory, removed on drop.
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "shd-qmp-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[tokio::test]
    async fn command_reply_events_and_garbage() {
        let (dir, h) = fake_qemu(|mut rd, mut wr| async move {
            let mut line = String::new();
            rd.read_line(&mut line).await.unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["execute"], "query-status");
            // Garbage, an event and a reply to nobody come first.
            wr.write_all(b"this is not json\n").await.unwrap();
            wr.write_all(b"{\"event\": \"STOP\", \"timestamp\": {}}\n")
                .await
                .unwrap();
            wr.write_all(b"{\"return\": {}, \"id\": 999}\n").await.unwrap();
            wr.write_all(
                format!(
                    "{{\"return\": {{\"status\": \"running\"}}, \"id\": {}}}\n",
                    v["id"]
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            line.clear();
            rd.read_line(&mut line).await.unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            wr.write_all(
                format!(
                    "{{\"error\": {{\"class\": \"DeviceNotActive\", \"desc\": \"no balloon\"}}, \"id\": {}}}\n",
                    v["id"]
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            // Then QEMU dies.
        })
        .await;
        let q = Qmp::connect(&dir.path().join("qmp.sock"), Duration::from_secs(2))
            .await
            .unwrap();
        let mut ev = q.subscribe();
        let st = q.execute("query-status", None).await.unwrap();
        assert_eq!(st["status"], "running");
        let e = ev.recv().await.unwrap();
        assert_eq!(e.name, "STOP");
        match q.execute("query-balloon", None).await {
            Err(QmpError::Command { command, class, .. }) => {
                assert_eq!(command, "query-balloon");
                assert_eq!(class, "DeviceNotActive");
            }
            other => panic!("{other:?}"),
        }
        h.await.unwrap();
        // The peer is gone: an error, quickly, not a hang.
        let t0 = std::time::Instant::now();
        let r = q.execute("query-status", None).await;
        assert!(
            matches!(r, Err(QmpError::Closed(_)) | Err(QmpError::Io(_))),
            "{r:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn pending_command_fails_when_qemu_dies() {
        let (dir, h) = fake_qemu(|mut rd, wr| async move {
            let mut line = String::new();
            rd.read_line(&mut line).await.unwrap();
            drop(wr);
            drop(rd);
        })
        .await;
        let q = Qmp::connect(&dir.path().join("qmp.sock"), Duration::from_secs(5))
            .await
            .unwrap();
        let t0 = std::time::Instant::now();
        let r = q.execute("migrate", Some(json!({"uri": "tcp:x:1"}))).await;
        assert!(matches!(r, Err(QmpError::Closed(_))), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        h.await.unwrap();
        assert!(q.closed().is_some());
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let (dir, h) = fake_qemu(|mut rd, wr| async move {
            let mut line = String::new();
            rd.read_line(&mut line).await.unwrap();
            tokio::time::sleep(Duration::from_millis(800)).await;
            drop(wr);
        })
        .await;
        let q = Qmp::connect(&dir.path().join("qmp.sock"), Duration::from_millis(300))
            .await
            .unwrap();
        let r = q.execute("query-status", None).await;
        assert!(matches!(r, Err(QmpError::Timeout(..))), "{r:?}");
        h.await.unwrap();
    }

    #[tokio::test]
    async fn wrong_greeting_is_an_error() {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"{\"hello\": 1}\n").await.unwrap();
        });
        let r = Qmp::connect(&path, Duration::from_secs(2)).await;
        assert!(matches!(r, Err(QmpError::Protocol(_))), "{:?}", r.err());
        h.await.unwrap();
    }
}
